//! The Rust normalizer against the Python `whisper-normalizer` package, on every reference of the
//! eval sets and on strings that exercise each rule. Regenerate the cases with
//! `tools/reference/make_normalizer_cases.py fixtures crates/aldea-eval/tests/normalizer_cases.jsonl`.

#[test]
fn matches_the_python_normalizer() {
    let cases = include_str!("normalizer_cases.jsonl");
    let mut n_cases = 0;
    let mut mismatches = Vec::new();
    for line in cases.lines() {
        let (input, expected): (String, String) = serde_json::from_str(line).expect("a [input, expected] pair");
        n_cases += 1;
        let ours = aldea_eval::normalize_english(&input);
        if ours != expected {
            mismatches.push(format!("input:    {input}\nexpected: {expected:?}\nours:     {ours:?}"));
        }
    }
    assert!(n_cases >= 50, "only {n_cases} cases");
    assert!(mismatches.is_empty(), "{} of {n_cases} differ:\n{}", mismatches.len(), mismatches.join("\n\n"));
}
