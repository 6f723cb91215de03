//! The policy driven by a scripted "model": it hears the words of a script that lie inside the
//! audio it is given, and mishears a word that is cut off at the end of the buffer, as Whisper does.

use super::*;

/// (word, start, end) on the timeline.
type Script = Vec<(&'static str, f64, f64)>;

fn script() -> Script {
    vec![
        ("the", 0.5, 0.7),
        ("quick", 0.75, 1.1),
        ("brown", 1.15, 1.5),
        ("fox", 1.55, 1.9),
        ("jumps", 1.95, 2.4),
        ("over", 2.45, 2.7),
        // Pause 2.7 .. 4.0: an endpoint.
        ("the", 4.0, 4.2),
        ("lazy", 4.25, 4.6),
        ("dog", 4.65, 5.0),
    ]
}

fn speech_at(script: &Script, t: f64) -> bool {
    script.iter().any(|&(_, start, end)| t >= start - 0.05 && t < end + 0.05)
}

/// What the scripted model says about `request`: the words inside its audio after those its prefix
/// forces (one token each here); a word cut off by the end of the buffer comes out wrong ("uh").
fn decode(script: &Script, request: &DecodeRequest) -> Vec<Word> {
    let end = request.offset + request.samples.len() as f64 / SAMPLE_RATE;
    script
        .iter()
        .filter(|&&(_, start, _)| start >= request.offset - 0.01 && start < end)
        .skip(request.prefix.len())
        .enumerate()
        .map(|(idx, &(text, start, word_end))| {
            let text = if word_end > end { "uh" } else { text };
            Word { text: format!(" {text}"), start, end: word_end.min(end), probability: 0.9, tokens: vec![idx as u32] }
        })
        .collect()
}

struct Run {
    events: Vec<Event>,
    n_decodes: usize,
    /// Audio received when the first words (an interim) came out.
    first_words_at: Option<f64>,
    /// Where each decode's audio started, in order.
    decode_offsets: Vec<f64>,
    /// Tokens (here: committed words) each decode was given as its prefix, in order.
    decode_prefixes: Vec<usize>,
}

/// Streams `seconds` of audio in 100-ms chunks; each decode's result arrives with the next chunk.
fn run(config: RecognizerConfig, script: &Script, seconds: f64, finalize_at_end: bool) -> Run {
    run_with(config, script, seconds, finalize_at_end, |request| decode(script, request))
}

/// [`run`] with another model.
fn run_with(
    config: RecognizerConfig,
    script: &Script,
    seconds: f64,
    finalize_at_end: bool,
    decode: impl Fn(&DecodeRequest) -> Vec<Word>,
) -> Run {
    let mut recognizer = Recognizer::new(config, 0.0, Vec::new());
    let mut events = Vec::new();
    let mut pending: Option<DecodeRequest> = None;
    let mut n_decodes = 0;
    let chunk = 1_600;
    let n_chunks = (seconds * 10.0) as usize;
    let mut n_windows_sent = 0usize;
    let mut first_words_at = None;
    let mut decode_offsets = Vec::new();
    let mut decode_prefixes = Vec::new();
    for chunk_idx in 0..n_chunks {
        let samples = vec![0.0f32; chunk];
        let received = (chunk_idx + 1) * chunk;
        let n_windows = received / VAD_WINDOW;
        let probs: Vec<f32> = (n_windows_sent..n_windows)
            .map(|w| if speech_at(script, (w as f64 + 0.5) * VAD_WINDOW_S) { 0.95 } else { 0.02 })
            .collect();
        n_windows_sent = n_windows;
        events.extend(recognizer.push_audio(&samples, &probs));
        if let Some(request) = pending.take() {
            let words = decode(&request);
            events.extend(recognizer.on_decoded(request.id, Some(words)));
        }
        if let Some(request) = recognizer.next_decode() {
            n_decodes += 1;
            decode_offsets.push(request.offset);
            decode_prefixes.push(request.prefix.len());
            events.extend(recognizer.take_forced());
            pending = Some(request);
        }
        if first_words_at.is_none() && results(&events).iter().any(|r| !r.words.is_empty()) {
            first_words_at = Some(received as f64 / SAMPLE_RATE);
        }
    }
    if finalize_at_end {
        events.extend(recognizer.finalize(false));
        for _ in 0..5 {
            if let Some(request) = pending.take().or_else(|| recognizer.next_decode()) {
                n_decodes += 1;
                let words = decode(&request);
                events.extend(recognizer.on_decoded(request.id, Some(words)));
            }
        }
        assert!(recognizer.is_settled(), "the flush completed");
    }
    Run { events, n_decodes, first_words_at, decode_offsets, decode_prefixes }
}

fn results(events: &[Event]) -> Vec<&ResultsEvent> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Results(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn final_words(events: &[Event]) -> Vec<String> {
    results(events)
        .iter()
        .filter(|r| r.is_final)
        .flat_map(|r| r.words.iter().map(|w| w.text.trim().to_owned()))
        .collect()
}

#[test]
fn every_word_is_final_exactly_once_in_order() {
    let script = script();
    let run = run(RecognizerConfig::default(), &script, 7.0, true);
    let expected: Vec<String> = script.iter().map(|w| w.0.to_owned()).collect();
    assert_eq!(final_words(&run.events), expected);
    assert!(run.n_decodes >= 3, "decodes while speech goes on: {}", run.n_decodes);
}

#[test]
fn finals_are_contiguous_and_never_overlap() {
    let script = script();
    let run = run(RecognizerConfig::default(), &script, 7.0, true);
    finals_are_contiguous(&run.events);
}

/// Finals cover the timeline from 0 without gaps or overlaps, each word inside its final.
fn finals_are_contiguous(events: &[Event]) {
    let finals: Vec<&ResultsEvent> = results(events).into_iter().filter(|r| r.is_final).collect();
    assert!(finals.len() >= 2);
    let mut cursor = 0.0;
    for r in finals {
        assert!((r.start - cursor).abs() < 1e-9, "final starts at {} after {cursor}", r.start);
        assert!(r.end >= r.start);
        for w in &r.words {
            assert!(w.start >= r.start - 1e-9 && w.end <= r.end + 1e-9, "word inside its final");
        }
        cursor = r.end;
    }
}

#[test]
fn an_interim_precedes_each_final_and_the_pause_ends_the_utterance() {
    let script = script();
    let run = run(RecognizerConfig::default(), &script, 7.0, false);
    let all = results(&run.events);
    let mut interim_seen = false;
    for r in &all {
        if r.is_final {
            assert!(interim_seen, "an interim before each final");
            interim_seen = false;
        } else {
            interim_seen = true;
        }
    }
    // The endpoint in the pause (2.7 .. 4.0 s) closes the first utterance with speech_final,
    // before the second begins.
    let speech_final = all.iter().find(|r| r.speech_final).expect("a speech_final at the pause");
    assert_eq!(speech_final.words.last().map(|w| w.text.trim()), Some("over"));
    assert!(speech_final.end < 4.0 && speech_final.end >= 2.7);
    let words = final_words(&run.events);
    assert!(words.starts_with(&["the".to_owned(), "quick".to_owned()]));
    assert!(words.contains(&"dog".to_owned()), "the last word becomes final at the second endpoint: {words:?}");
    assert!(!words.contains(&"uh".to_owned()), "a cut-off word is never final");
}

#[test]
fn silence_asks_for_no_decode_and_says_nothing() {
    let run = run(RecognizerConfig::default(), &Vec::new(), 20.0, true);
    assert_eq!(run.n_decodes, 0);
    assert!(results(&run.events).is_empty());
}

#[test]
fn vad_events_and_utterance_end() {
    let config = RecognizerConfig { vad_events: true, utterance_end_ms: Some(1000), ..RecognizerConfig::default() };
    let script = script();
    let run = run(config, &script, 7.0, false);
    let started: Vec<f64> = run
        .events
        .iter()
        .filter_map(|e| match e {
            Event::SpeechStarted { timestamp } => Some(*timestamp),
            _ => None,
        })
        .collect();
    assert_eq!(started.len(), 2, "one SpeechStarted per utterance: {started:?}");
    assert!(started[0] >= 0.4 && started[0] <= 0.5);
    let utterance_end = run.events.iter().position(|e| matches!(e, Event::UtteranceEnd { .. })).expect("UtteranceEnd");
    let last_final_before = run.events[..utterance_end]
        .iter()
        .rev()
        .find_map(|e| match e {
            Event::Results(r) if r.is_final => Some(r),
            _ => None,
        })
        .expect("finals before UtteranceEnd");
    assert_eq!(last_final_before.words.last().map(|w| w.text.trim()), Some("over"));
    match &run.events[utterance_end] {
        Event::UtteranceEnd { last_word_end } => assert!((last_word_end - 2.7).abs() < 1e-9),
        _ => unreachable!(),
    }
}

/// Quiet speech (whispered, 8-kHz G.711) scores 0.25-0.5 on Silero: it starts speech, is decoded
/// and keeps its words, as on uploads; its pauses below 0.10 end it.
#[test]
fn quiet_speech_is_speech_on_streams_as_on_uploads() {
    let config = RecognizerConfig { vad_events: true, ..RecognizerConfig::default() };
    let mut recognizer = Recognizer::new(config, 0.0, Vec::new());
    // 0.5 s silence, 1 s at 0.3 (speech), 0.5 s at 0.15 (still speech), 1 s at 0.05 (silence).
    let probs: Vec<f32> = (0..94)
        .map(|w| match w as f64 * VAD_WINDOW_S {
            t if t < 0.5 => 0.02,
            t if t < 1.5 => 0.3,
            t if t < 2.0 => 0.15,
            _ => 0.05,
        })
        .collect();
    let events = recognizer.push_audio(&vec![0.0; 94 * VAD_WINDOW], &probs);
    let started: Vec<f64> = events
        .iter()
        .filter_map(|e| match e {
            Event::SpeechStarted { timestamp } => Some(*timestamp),
            _ => None,
        })
        .collect();
    assert_eq!(started.len(), 1, "{events:?}");
    assert!((0.45..=0.55).contains(&started[0]), "{started:?}");
    assert!(recognizer.speech_in(1.7, 1.9), "windows between the thresholds go on with the speech");
    assert!(!recognizer.speech_in(2.3, 2.9), "windows below 0.10 are silence");
    let word =
        |t: &str, s: f64, e: f64| Word { text: format!(" {t}"), start: s, end: e, probability: 0.9, tokens: vec![] };
    let kept = recognizer.fresh_words(vec![word("quiet", 0.6, 1.0), word("words", 1.1, 1.6)], false);
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(recognizer.next_decode().is_some(), "quiet speech is decoded");
}

#[test]
fn finalize_flushes_with_from_finalize_even_without_words() {
    let mut recognizer = Recognizer::new(RecognizerConfig::default(), 0.0, Vec::new());
    recognizer.push_audio(&vec![0.0; 16_000], &[0.0; 31]);
    let events = recognizer.finalize(true);
    let finals = results(&events);
    assert_eq!(finals.len(), 1);
    assert!(finals[0].is_final && finals[0].speech_final && finals[0].from_finalize);
    assert!(finals[0].words.is_empty());
    assert!((finals[0].end - 1.0).abs() < 1e-9);
}

#[test]
fn a_resumed_recognizer_continues_the_timeline_and_prompt() {
    let mut recognizer = Recognizer::new(RecognizerConfig::default(), 12.5, vec![7, 8, 9]);
    let probs = vec![0.95f32; 62];
    recognizer.push_audio(&vec![0.0; 32_000], &probs);
    let request = recognizer.next_decode().expect("speech is decoded");
    assert_eq!(request.offset, 12.5);
    assert_eq!(request.prompt, vec![7, 8, 9]);
    assert!((recognizer.audio_end() - 14.5).abs() < 1e-9);
}

#[test]
fn a_repeated_prompt_tail_is_not_committed_twice() {
    let mut recognizer = Recognizer::new(RecognizerConfig::default(), 0.0, Vec::new());
    recognizer.agreement.committed_tail = vec!["jumps".to_owned(), "over".to_owned()];
    recognizer.committed_until = 2.0;
    // The buffer still holds committed audio (it starts before the commit).
    recognizer.audio.n_dropped = 0;
    let word =
        |t: &str, s: f64, e: f64| Word { text: format!(" {t}"), start: s, end: e, probability: 0.9, tokens: vec![] };
    recognizer.speech.in_speech = true;
    recognizer.speech.speech_start = 0.0;
    let fresh =
        recognizer.fresh_words(vec![word("jumps", 1.0, 1.5), word("over", 2.05, 2.3), word("the", 2.4, 2.5)], false);
    let texts: Vec<&str> = fresh.iter().map(|w| w.text.trim()).collect();
    assert_eq!(texts, vec!["the"]);
    // A buffer that starts at the commit holds no committed audio: the same words are a real repeat.
    recognizer.audio.n_dropped = 32_000;
    let fresh = recognizer.fresh_words(vec![word("jumps", 2.0, 2.5), word("over", 2.55, 2.8)], false);
    assert_eq!(fresh.len(), 2);
    // ... except the last word's tail heard again right at the cut: a fragment, not a repeat.
    let fresh = recognizer.fresh_words(vec![word("over", 2.02, 2.1), word("the", 2.4, 2.5)], false);
    let texts: Vec<&str> = fresh.iter().map(|w| w.text.trim()).collect();
    assert_eq!(texts, vec!["the"]);
}

/// Sends `seconds` of audio at once, then decodes until nothing is due; the events in order and
/// the number of decodes.
fn run_full_speed(config: RecognizerConfig, script: &Script, seconds: f64) -> (Vec<Event>, usize) {
    let max_buffer_s = config.max_buffer_s;
    let mut recognizer = Recognizer::new(config, 0.0, Vec::new());
    let n_samples = (seconds * SAMPLE_RATE) as usize;
    let probs: Vec<f32> = (0..n_samples / VAD_WINDOW)
        .map(|w| if speech_at(script, (w as f64 + 0.5) * VAD_WINDOW_S) { 0.95 } else { 0.02 })
        .collect();
    let mut events = recognizer.push_audio(&vec![0.0; n_samples], &probs);
    events.extend(recognizer.finalize(false));
    let mut n_requests = 0;
    while let Some(request) = recognizer.next_decode() {
        events.extend(recognizer.take_forced());
        assert!(
            request.samples.len() as f64 / SAMPLE_RATE <= max_buffer_s + 1e-9,
            "never more than the model's window"
        );
        let words = decode(script, &request);
        n_requests += 1;
        events.extend(recognizer.on_decoded(request.id, Some(words)));
        assert!(n_requests < 20 * seconds as usize, "decoding terminates");
    }
    events.extend(recognizer.take_forced());
    assert!(recognizer.is_settled(), "every flush completed");
    (events, n_requests)
}

#[test]
fn a_decode_that_stops_early_is_continued_before_the_utterance_ends() {
    // 10 s of speech without a pause; the first decode that should end the utterance says only its
    // first 4 s (Whisper ending its transcript early), the next ones all they hear.
    let script: Script = (0..25)
        .map(|idx| {
            let text: &'static str = Box::leak(format!("w{idx}").into_boxed_str());
            let start = 0.5 + idx as f64 * 0.4;
            (text, start, start + 0.35)
        })
        .collect();
    let mut recognizer = Recognizer::new(RecognizerConfig::default(), 0.0, Vec::new());
    let n_samples = (11.5 * SAMPLE_RATE) as usize;
    let probs: Vec<f32> = (0..n_samples / VAD_WINDOW)
        .map(|w| if speech_at(&script, (w as f64 + 0.5) * VAD_WINDOW_S) { 0.95 } else { 0.02 })
        .collect();
    let mut events = recognizer.push_audio(&vec![0.0; n_samples], &probs);
    events.extend(recognizer.finalize(false));
    let mut offsets = Vec::new();
    while let Some(request) = recognizer.next_decode() {
        let mut words = decode(&script, &request);
        if offsets.is_empty() {
            words.retain(|w| w.end <= 4.5);
        }
        offsets.push((request.offset, request.prefix.len()));
        events.extend(recognizer.on_decoded(request.id, Some(words)));
        assert!(offsets.len() < 10, "decoding terminates");
    }
    assert!(recognizer.is_settled());
    let expected: Vec<String> = script.iter().map(|w| w.0.to_owned()).collect();
    assert_eq!(final_words(&events), expected, "nothing lost, nothing twice");
    assert_eq!(offsets.len(), 2, "one more decode: {offsets:?}");
    let speech_finals: Vec<&ResultsEvent> =
        results(&events).into_iter().filter(|r| r.is_final && r.speech_final).collect();
    assert_eq!(speech_finals.len(), 1, "the utterance ends with one speech_final");
    assert!(offsets[1].1 > 0, "the second decode has the words said as its prefix");
    finals_are_contiguous(&events);
    // A decode that stops at the same place again is taken as it is (no endless retry).
    let mut recognizer = Recognizer::new(RecognizerConfig::default(), 0.0, Vec::new());
    recognizer.push_audio(&vec![0.0; n_samples], &probs);
    recognizer.finalize(false);
    let mut n_decodes = 0;
    while let Some(request) = recognizer.next_decode() {
        let words: Vec<Word> = decode(&script, &request).into_iter().filter(|w| w.end <= 4.5).collect();
        recognizer.on_decoded(request.id, Some(words));
        n_decodes += 1;
        assert!(n_decodes < 10, "decoding terminates");
    }
    assert!(recognizer.is_settled());
    assert_eq!(n_decodes, 2);
    // A decode that says nothing more after the words went out still ends the utterance: an empty
    // speech_final (the client learns the utterance is over).
    let mut recognizer = Recognizer::new(RecognizerConfig::default(), 0.0, Vec::new());
    let mut events = recognizer.push_audio(&vec![0.0; n_samples], &probs);
    let mut n_decodes = 0;
    while let Some(request) = recognizer.next_decode() {
        let words: Vec<Word> = decode(&script, &request).into_iter().filter(|w| w.end <= 4.5).collect();
        events.extend(recognizer.on_decoded(request.id, Some(words)));
        n_decodes += 1;
        assert!(n_decodes < 10, "decoding terminates");
    }
    let finals: Vec<&ResultsEvent> = results(&events).into_iter().filter(|r| r.is_final).collect();
    let last = finals.last().expect("finals");
    assert!(last.speech_final && last.words.is_empty(), "{finals:?}");
    assert!(finals[..finals.len() - 1].iter().all(|r| !r.speech_final && !r.words.is_empty()));
    finals_are_contiguous(&events);
}

#[test]
fn a_prefixed_decode_that_says_nothing_is_decoded_again_without_the_prefix() {
    // "Rear", a pause shorter than the context gap, "right". The decode that ends "Rear" writes it
    // twice ("Rear. Rear.", as beam search on tiny.en did); kept as context, both copies are the
    // prefix of the decode of "right", which the model then takes as already said.
    let script: Script = vec![("Rear.", 0.5, 0.9), ("right", 1.6, 1.9)];
    let doubling = |request: &DecodeRequest| {
        let mut words = decode(&script, request);
        let end = request.offset + request.samples.len() as f64 / SAMPLE_RATE;
        if request.prefix.is_empty() && end < 1.5 {
            if let Some(last) = words.last().cloned() {
                words.push(Word { start: 0.9, end: 1.15, tokens: vec![last.tokens[0] + 1], ..last });
            }
        }
        words
    };
    let run = run_with(RecognizerConfig::default(), &script, 3.0, true, doubling);
    let words = final_words(&run.events);
    assert_eq!(words.last().map(String::as_str), Some("right"), "{words:?}");
    assert!(words.iter().filter(|w| *w == "right").count() == 1, "{words:?}");
    assert!(run.decode_prefixes.contains(&2), "the context was given: {:?}", run.decode_prefixes);
    finals_are_contiguous(&run.events);
    let speech_finals = results(&run.events).into_iter().filter(|r| r.is_final && r.speech_final).count();
    assert_eq!(speech_finals, 2, "each utterance ends once");
}

#[test]
fn audio_sent_at_full_speed_is_recognized_utterance_by_utterance() {
    let script = script();
    let (events, n_decodes) = run_full_speed(RecognizerConfig::default(), &script, 7.0);
    let expected: Vec<String> = script.iter().map(|w| w.0.to_owned()).collect();
    assert_eq!(final_words(&events), expected);
    let speech_finals: Vec<&ResultsEvent> =
        results(&events).into_iter().filter(|r| r.is_final && r.speech_final).collect();
    assert_eq!(speech_finals.len(), 2, "each utterance ends with speech_final");
    assert_eq!(speech_finals[0].words.last().map(|w| w.text.trim()), Some("over"), "split at the pause");
    // A 1.3-s pause parts them: each is decoded alone (the model skips speech after long silence).
    assert_eq!(n_decodes, 2);
    // Utterances 0.5 s apart fit in one window: one decode hears them together, as the batch path does.
    let script: Script =
        script.into_iter().map(|(w, s, e)| if s >= 4.0 { (w, s - 0.8, e - 0.8) } else { (w, s, e) }).collect();
    let (events, n_decodes) = run_full_speed(RecognizerConfig::default(), &script, 7.0);
    let expected: Vec<String> = script.iter().map(|w| w.0.to_owned()).collect();
    assert_eq!(final_words(&events), expected);
    assert_eq!(results(&events).iter().filter(|r| r.is_final && r.speech_final).count(), 2);
    assert_eq!(n_decodes, 1);
}

#[test]
fn utterances_longer_than_a_window_at_full_speed_take_several_decodes() {
    // Twelve 3.2-s utterances 0.55 s apart (45 s): windows of at most 28 s, each ending at a pause.
    let mut script: Script = Vec::new();
    for utterance in 0..12 {
        for idx in 0..8 {
            let text: &'static str = Box::leak(format!("u{utterance}w{idx}").into_boxed_str());
            let start = 0.5 + utterance as f64 * 3.7 + idx as f64 * 0.4;
            script.push((text, start, start + 0.35));
        }
    }
    let (events, n_decodes) = run_full_speed(RecognizerConfig::default(), &script, 46.0);
    let expected: Vec<String> = script.iter().map(|w| w.0.to_owned()).collect();
    assert_eq!(final_words(&events), expected);
    assert!((2..=4).contains(&n_decodes), "{n_decodes} decodes");
    finals_are_contiguous(&events);
}

#[test]
fn left_context_at_full_speed_and_at_real_time() {
    // Utterances 0.5 s apart (context kept), a 26-s utterance (buffer at the model's window with the
    // context), then 1.5 s of silence (context dropped) and a last one.
    let mut script: Script = vec![("one", 0.5, 0.9), ("two", 1.0, 1.4)];
    for idx in 0..65 {
        let text: &'static str = Box::leak(format!("w{idx}").into_boxed_str());
        let start = 1.9 + idx as f64 * 0.4;
        script.push((text, start, start + 0.35));
    }
    script.extend([("three", 29.8, 30.2), ("four", 30.3, 30.7)]);
    let config = RecognizerConfig { context_s: 4.0, ..RecognizerConfig::default() };
    let expected: Vec<String> = script.iter().map(|w| w.0.to_owned()).collect();
    let (events, _) = run_full_speed(config.clone(), &script, 32.0);
    assert_eq!(final_words(&events), expected, "full speed");
    let run = run(config, &script, 32.0, true);
    assert_eq!(final_words(&run.events), expected, "real time");
}

#[test]
fn agreement_finalizes_long_speech_at_sentence_ends() {
    // 18 s of speech without a pause; sentences end at words 14 and 29.
    let script: Script = (0..45)
        .map(|idx| {
            let text: &'static str =
                Box::leak(if idx == 14 || idx == 29 { format!("w{idx}.") } else { format!("w{idx}") }.into_boxed_str());
            let start = 0.5 + idx as f64 * 0.4;
            (text, start, start + 0.35)
        })
        .collect();
    let expected: Vec<String> = script.iter().map(|w| w.0.to_owned()).collect();
    // Without left context the next window starts where the sentence ended (the committed sentence
    // is only the prompt); with it (the default), at the start of the committed sentence, whose
    // words are the decode's prefix.
    for context_s in [0.0, RecognizerConfig::default().context_s] {
        let run = run(RecognizerConfig { context_s, ..RecognizerConfig::default() }, &script, 19.5, true);
        assert_eq!(final_words(&run.events), expected, "every word final once, in order (context {context_s})");
        let finals: Vec<&ResultsEvent> = results(&run.events).into_iter().filter(|r| r.is_final).collect();
        let by_agreement: Vec<&&ResultsEvent> = finals.iter().filter(|r| !r.speech_final && !r.from_finalize).collect();
        assert!(!by_agreement.is_empty(), "long speech is finalized before its end");
        for result in &by_agreement {
            let last = result.words.last().map(|w| w.text.trim().to_owned()).unwrap_or_default();
            assert!(last.ends_with('.'), "a final during speech ends a sentence, not at {last}");
        }
        if context_s == 0.0 {
            for result in by_agreement {
                assert!(
                    run.decode_offsets.iter().any(|&offset| (offset - result.end).abs() < 1e-3),
                    "a decode starts at the sentence end {} (offsets {:?})",
                    result.end,
                    run.decode_offsets
                );
            }
            assert!(run.decode_prefixes.iter().all(|&n| n == 0));
        } else {
            // The context is cut between the last word of a sentence and the first of the next.
            let sentence_start = |offset: f64| {
                [14, 29].iter().any(|&idx| offset >= script[idx].2 - 1e-9 && offset <= script[idx + 1].1 + 1e-9)
            };
            let moved: Vec<(f64, usize)> = run
                .decode_offsets
                .iter()
                .zip(&run.decode_prefixes)
                .map(|(&offset, &n)| (offset, n))
                .filter(|&(offset, _)| offset > 0.0)
                .collect();
            assert!(!moved.is_empty(), "the window moved");
            for (offset, n_prefix) in moved {
                assert!(sentence_start(offset), "a window starts at {offset}, not at a sentence start");
                assert!(n_prefix > 0, "the window at {offset} has the committed sentence as its prefix");
            }
        }
    }
}

#[test]
fn abbreviations_do_not_end_sentences() {
    for text in [" end.", " end?", " Go!", " \"done.\"", " 1921."] {
        assert!(ends_sentence(text), "{text}");
    }
    for text in [" Dr.", " St.", " e.g.", " Mrs.", " end,", " end"] {
        assert!(!ends_sentence(text), "{text}");
    }
}

#[test]
fn the_first_words_come_soon_after_speech_starts() {
    // Speech starts at 0.5 s; decodes come every 0.4 s until words are heard, then every second.
    let run = run(RecognizerConfig::default(), &script(), 6.0, false);
    let first = run.first_words_at.expect("words were heard");
    assert!(first <= 0.5 + 0.6 + 1e-9, "first words at {first} s");
    assert!(run.n_decodes <= 8, "{} decodes for 6 s of audio", run.n_decodes);
}

/// Feeds `from..to` s of silent samples with the VAD probabilities of `script`'s speech.
fn feed_script(recognizer: &mut Recognizer, script: &Script, from: f64, to: f64) {
    let (first, last) = ((from * SAMPLE_RATE) as usize / VAD_WINDOW, (to * SAMPLE_RATE) as usize / VAD_WINDOW);
    let probs: Vec<f32> =
        (first..last).map(|w| if speech_at(script, (w as f64 + 0.5) * VAD_WINDOW_S) { 0.95 } else { 0.02 }).collect();
    recognizer.push_audio(&vec![0.0; (last - first) * VAD_WINDOW], &probs);
}

#[test]
fn held_interim_and_pause_decodes_stay_due_and_endpoint_decodes_are_never_held() {
    let script = script();
    let mut recognizer = Recognizer::new(RecognizerConfig::default(), 0.0, Vec::new());
    // Speech from 0.5 s: at 1.2 s the first interim decode is due.
    feed_script(&mut recognizer, &script, 0.0, 1.2);
    assert_eq!(recognizer.next_decode_holding(true), NextDecode::Held);
    assert_eq!(recognizer.next_decode_holding(true), NextDecode::Held, "held, it stays due");
    let NextDecode::Start(request) = recognizer.next_decode_holding(false) else {
        panic!("due once the model is free");
    };
    assert!(!request.settles());
    assert_eq!(request.reason, DecodeReason::Interim);
    recognizer.on_decoded(request.id, Some(decode(&script, &request)));
    // 0.2 s into the silence after "over" (2.75 s): a pause, which may be one between words, so its
    // decode waits while the model is busy.
    feed_script(&mut recognizer, &script, 1.2, 2.95);
    assert_eq!(recognizer.next_decode_holding(true), NextDecode::Held);
    // Once the silence reaches the endpointing window, the decode that ends the utterance is never
    // held.
    feed_script(&mut recognizer, &script, 2.95, 3.2);
    let NextDecode::Start(request) = recognizer.next_decode_holding(true) else {
        panic!("a settling decode starts while the model is busy");
    };
    assert!(request.settles());
    assert_eq!(request.reason, DecodeReason::Endpoint);
    let events = recognizer.on_decoded(request.id, Some(decode(&script, &request)));
    assert!(results(&events).iter().any(|r| r.speech_final), "{events:?}");
}

#[test]
fn a_wider_interim_step_spaces_interims_but_not_the_first_words() {
    let script = script();
    for (scale, second_interim_due) in [(1.0, true), (2.0, false)] {
        let mut recognizer = Recognizer::new(RecognizerConfig::default(), 0.0, Vec::new());
        recognizer.set_interim_step_scale(scale);
        // Speech from 0.5 s: the first words are due after `first_step_s` whatever the scale.
        feed_script(&mut recognizer, &script, 0.0, 1.0);
        assert!(recognizer.in_speech());
        let Some(request) = recognizer.next_decode() else {
            panic!("scale {scale}: the first interim is due");
        };
        recognizer.on_decoded(request.id, Some(decode(&script, &request)));
        // 1.3 s later, still in speech: one step has passed, two have not.
        feed_script(&mut recognizer, &script, 1.0, 2.3);
        assert!(recognizer.in_speech());
        assert_eq!(recognizer.next_decode().is_some(), second_interim_due, "scale {scale}");
    }
}

/// Feeds `recognizer` the audio from its origin to `to` in 100-ms chunks (each decode's result
/// arrives with the next chunk), then finalizes: the events, and each decode's (offset, prefix).
fn drive(recognizer: &mut Recognizer, script: &Script, to: f64) -> (Vec<Event>, Vec<(f64, usize)>) {
    let origin = recognizer.audio_end();
    let total = ((to - origin) * SAMPLE_RATE).round() as usize;
    let (mut events, mut requests) = (Vec::new(), Vec::new());
    let mut pending: Option<DecodeRequest> = None;
    let (mut sent, mut windows_sent) = (0usize, 0usize);
    while sent < total {
        let n = 1_600.min(total - sent);
        sent += n;
        let n_windows = sent / VAD_WINDOW;
        let probs: Vec<f32> = (windows_sent..n_windows)
            .map(|w| if speech_at(script, origin + (w as f64 + 0.5) * VAD_WINDOW_S) { 0.95 } else { 0.02 })
            .collect();
        windows_sent = n_windows;
        events.extend(recognizer.push_audio(&vec![0.0; n], &probs));
        if let Some(request) = pending.take() {
            events.extend(recognizer.on_decoded(request.id, Some(decode(script, &request))));
        }
        if let Some(request) = recognizer.next_decode() {
            requests.push((request.offset, request.prefix.len()));
            events.extend(recognizer.take_forced());
            pending = Some(request);
        }
    }
    events.extend(recognizer.finalize(false));
    for _ in 0..5 {
        if let Some(request) = pending.take().or_else(|| recognizer.next_decode()) {
            requests.push((request.offset, request.prefix.len()));
            events.extend(recognizer.on_decoded(request.id, Some(decode(script, &request))));
        }
    }
    assert!(recognizer.is_settled());
    (events, requests)
}

#[test]
fn a_stream_resumed_from_a_checkpoint_hears_its_context_again() {
    // Three utterances parted by pauses short enough to keep the previous one as context.
    let script: Script = vec![
        ("the", 0.5, 0.7),
        ("quick", 0.75, 1.1),
        ("brown", 1.15, 1.5),
        ("fox.", 1.55, 1.9),
        ("it", 2.5, 2.7),
        ("jumps", 2.75, 3.1),
        ("over.", 3.15, 3.5),
        ("the", 4.1, 4.3),
        ("lazy", 4.35, 4.7),
        ("dog.", 4.75, 5.1),
    ];
    let config = RecognizerConfig { vad_events: true, ..RecognizerConfig::default() };
    let mut unbroken = Recognizer::new(config.clone(), 0.0, Vec::new());
    let (events, requests) = drive(&mut unbroken, &script, 6.5);
    let expected: Vec<String> = script.iter().map(|w| w.0.to_owned()).collect();
    assert_eq!(final_words(&events), expected);
    // The checkpoint after the first utterance's final keeps that utterance as context.
    let point = events
        .iter()
        .find_map(|e| match e {
            Event::Checkpoint(point) if point.committed_until > 1.9 => Some(point.clone()),
            _ => None,
        })
        .expect("a checkpoint after the first final");
    assert!(point.audio_start < 0.6 && point.context.len() == 4, "{point:?}");
    assert_eq!(point.context.iter().map(|w| w.tokens.len()).sum::<usize>(), 4);
    // Input that cannot restart in the middle gets no context: its words join the prompt.
    let flat = point.clone().without_context();
    assert!(flat.context.is_empty() && flat.audio_start == point.committed_until);
    assert_eq!(flat.prompt_tokens.len(), point.prompt_tokens.len() + 4);
    let text = |w: &ContextWord| script.iter().find(|s| (s.1 - w.start).abs() < 1e-9).map_or("", |s| s.0).to_owned();
    let context: Vec<ContextWord> = point.context.iter().map(|w| ContextWord { text: text(w), ..w.clone() }).collect();

    // A new recognizer takes over from the checkpoint, given the audio from its audio start.
    let mut resumed = Recognizer::resume(config, ResumePoint { context, ..point.clone() });
    let (resumed_events, resumed_requests) = drive(&mut resumed, &script, 6.5);
    let after = |events: &[Event]| -> Vec<(String, f64, f64)> {
        results(events)
            .iter()
            .filter(|r| r.is_final && r.end > point.committed_until + 1e-9)
            .flat_map(|r| r.words.iter().map(|w| (w.text.trim().to_owned(), w.start, w.end)))
            .collect()
    };
    assert_eq!(after(&resumed_events), after(&events), "the same finals after the checkpoint");
    let resumed_results = results(&resumed_events);
    assert!(resumed_results.iter().all(|r| r.start >= point.committed_until - 1e-9), "nothing before the commit again");
    assert!(
        resumed_events
            .iter()
            .all(|e| !matches!(e, Event::SpeechStarted { timestamp } if *timestamp < point.committed_until)),
        "no SpeechStarted for the context's speech"
    );
    // Its first decode hears the context with the context's words as the prefix, as the unbroken
    // stream's next decode did.
    let next_unbroken = requests.iter().find(|r| r.1 > 0).expect("the unbroken stream decoded with a prefix");
    let first = resumed_requests.first().expect("the resumed stream decoded");
    assert!((first.0 - next_unbroken.0).abs() < 1e-3 && first.1 == next_unbroken.1, "{first:?} vs {next_unbroken:?}");
}

#[test]
fn the_lead_in_before_speech_does_not_depend_on_the_chunking() {
    // Silence, then speech from 2.0 s: the VAD's first speech window starts at 1.984 s (window 62).
    let script: Script = vec![("hello", 2.05, 2.6), ("world", 2.65, 3.2)];
    let onset = 62.0 * VAD_WINDOW_S;
    for chunk_s in [0.25, 0.3, 0.45] {
        let mut recognizer = Recognizer::new(RecognizerConfig::default(), 0.0, Vec::new());
        let mut from = 0.0;
        let request = loop {
            let to = from + chunk_s;
            feed_script(&mut recognizer, &script, from, to);
            from = to;
            if let Some(request) = recognizer.next_decode() {
                break request;
            }
            assert!(from < 4.0, "speech is decoded");
        };
        assert!(
            (request.offset - (onset - LEAD_IN_S)).abs() < 1e-3,
            "chunks of {chunk_s} s: window from {}",
            request.offset
        );
    }
}

/// Speech that ends just before an interim decode is due: that greedy decode reaches past the
/// speech's end before the pause is seen.
fn script_ending_before_an_interim() -> Script {
    vec![("the", 0.5, 0.7), ("quick", 0.75, 1.1), ("brown", 1.15, 1.5), ("fox", 1.55, 2.0), ("jumps", 2.05, 2.8)]
}

#[test]
fn an_utterance_ends_with_a_settling_decode_never_with_an_interim_one() {
    let script = script_ending_before_an_interim();
    let reasons = std::cell::RefCell::new(Vec::new());
    // The greedy interim decodes mishear the last word; the settling (beam 5) ones hear it.
    let run = run_with(RecognizerConfig::default(), &script, 4.0, false, |request| {
        reasons.borrow_mut().push(request.reason);
        let mut words = decode(&script, request);
        if !request.settles() {
            if let Some(last) = words.last_mut() {
                last.text = " jump".to_owned();
            }
        }
        words
    });
    assert_eq!(final_words(&run.events), ["the", "quick", "brown", "fox", "jumps"], "{:?}", reasons.borrow());
    let last_final = results(&run.events).into_iter().rfind(|r| r.is_final).unwrap();
    assert!(last_final.speech_final);
}

#[test]
fn a_word_the_alignment_gives_no_duration_at_the_window_end_is_not_heard() {
    let script = script();
    // The model repeats the last word it heard at the very end of each window, with no duration
    // (tiny.en's "Rear. Rear." when a short window ends in the pause before the next word).
    let run = run_with(RecognizerConfig::default(), &script, 7.0, true, |request| {
        let mut words = decode(&script, request);
        let end = request.offset + request.samples.len() as f64 / SAMPLE_RATE;
        if let Some(last) = words.last().cloned() {
            words.push(Word { start: end - 0.02, end: end - 0.02, ..last });
        }
        words
    });
    let expected: Vec<String> = script.iter().map(|w| w.0.to_owned()).collect();
    assert_eq!(final_words(&run.events), expected);
}
