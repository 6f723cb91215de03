//! Accuracy measurement: Whisper's English text normalizer (a Rust port) and word error rate with
//! its edit operations, as `aldea eval`, the benchmarks and the accuracy tests use them.
//!
//! Invariant: pure functions over strings — no I/O, no engine, no async.
#![forbid(unsafe_code)]

mod normalize;

pub use normalize::normalize_english;

/// Counts of the word-level edit operations that turn a reference into a hypothesis.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WerStats {
    pub reference_words: usize,
    pub substitutions: usize,
    pub deletions: usize,
    pub insertions: usize,
}

impl WerStats {
    pub fn errors(&self) -> usize {
        self.substitutions + self.deletions + self.insertions
    }

    /// Word error rate in percent (0 when both sides are empty; 100 × insertions when the reference
    /// is empty).
    pub fn wer_percent(&self) -> f64 {
        if self.reference_words == 0 {
            return if self.insertions == 0 { 0.0 } else { 100.0 * self.insertions as f64 };
        }
        100.0 * self.errors() as f64 / self.reference_words as f64
    }

    pub fn add(&mut self, other: WerStats) {
        self.reference_words += other.reference_words;
        self.substitutions += other.substitutions;
        self.deletions += other.deletions;
        self.insertions += other.insertions;
    }
}

/// Word-level edit distance between two already-normalized texts (split on whitespace), with the
/// operations of one minimal alignment (ties prefer substitution, then deletion).
pub fn word_errors(reference: &str, hypothesis: &str) -> WerStats {
    let r: Vec<&str> = reference.split_whitespace().collect();
    let h: Vec<&str> = hypothesis.split_whitespace().collect();
    let (n, m) = (r.len(), h.len());
    // cost[i][j]: distance between r[..i] and h[..j].
    let mut cost = vec![vec![0usize; m + 1]; n + 1];
    for (i, row) in cost.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in cost[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=n {
        for j in 1..=m {
            let sub = cost[i - 1][j - 1] + usize::from(r[i - 1] != h[j - 1]);
            cost[i][j] = sub.min(cost[i - 1][j] + 1).min(cost[i][j - 1] + 1);
        }
    }
    let mut stats = WerStats { reference_words: n, ..WerStats::default() };
    let (mut i, mut j) = (n, m);
    while i > 0 || j > 0 {
        if i > 0 && j > 0 && cost[i][j] == cost[i - 1][j - 1] + usize::from(r[i - 1] != h[j - 1]) {
            if r[i - 1] != h[j - 1] {
                stats.substitutions += 1;
            }
            i -= 1;
            j -= 1;
        } else if i > 0 && cost[i][j] == cost[i - 1][j] + 1 {
            stats.deletions += 1;
            i -= 1;
        } else {
            stats.insertions += 1;
            j -= 1;
        }
    }
    stats
}

/// The reference for clips played one after another in a single recording: each clip's reference
/// normalized on its own, then joined. Normalizing the joined text instead lets the number
/// normalizer read numbers of neighbouring clips as one ("five five" then "eight of spades" became
/// "558 of spades": two errors against a transcript normalized to "55 8", three against tiny.en's
/// "5 5 8"). The result is normalized text, which [`english_word_errors`] leaves as it is.
pub fn joined_reference<'a>(clips: impl IntoIterator<Item = &'a str>) -> String {
    clips.into_iter().map(normalize_english).filter(|c| !c.is_empty()).collect::<Vec<_>>().join(" ")
}

/// Normalizes both sides with [`normalize_english`] and counts the errors.
pub fn english_word_errors(reference: &str, hypothesis: &str) -> WerStats {
    word_errors(&normalize_english(reference), &normalize_english(hypothesis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_each_operation() {
        let s = word_errors("a b c d e f", "a x c e f g");
        assert_eq!((s.substitutions, s.deletions, s.insertions), (1, 1, 1));
        assert_eq!(s.reference_words, 6);
        assert!((s.wer_percent() - 50.0).abs() < 1e-9);
    }

    #[test]
    fn empty_sides() {
        assert_eq!(word_errors("", "").wer_percent(), 0.0);
        assert_eq!(word_errors("a b", "").deletions, 2);
        assert_eq!(word_errors("", "a").insertions, 1);
    }

    #[test]
    fn numbers_of_neighbouring_clips_stay_apart() {
        let clips = ["seven of clubs", "five five", "eight of spades", ""];
        assert_eq!(normalize_english(&clips.join(" ")), "7 of clubs 558 of spades");
        let joined = joined_reference(clips);
        assert_eq!(joined, "7 of clubs 55 8 of spades");
        assert_eq!(normalize_english(&joined), joined, "normalizing it again changes nothing");
        // A transcript with the clips' numbers apart: no error against the clips' references, two
        // (558 → 55, + 8) against the joined text's.
        let transcript = "Seven of clubs. 55, 8 of spades.";
        assert_eq!(english_word_errors(&joined, transcript).errors(), 0);
        assert_eq!(english_word_errors(&clips.join(" "), transcript).errors(), 2);
    }

    #[test]
    fn normalization_makes_formatting_free() {
        assert_eq!(english_word_errors("Front Center", "Front center.").errors(), 0);
        assert_eq!(english_word_errors("It was 15% today.", "it was fifteen percent today").errors(), 0);
    }
}
