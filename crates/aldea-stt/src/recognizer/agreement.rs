//! Local agreement (whisper_streaming's LocalAgreement-2): which words of a decode are new, which
//! of them two consecutive decodes agree on and become final, and the interim for the rest.
//!
//! [`Agreement`] keeps:
//! - `hypothesis`: the words of the last decode that are not final yet, in order; each decode
//!   replaces it, and a commit takes words only from its front.
//! - `committed_tail`: the last committed words (at most five), bare, oldest first: a new
//!   hypothesis must not repeat them.
//! - `interim_since_final`: an interim was sent since the last final (each final needs one before
//!   it; a commit sends one itself when none was).
//!
//! A commit ([`Recognizer::commit`]) is the one place finals are made: it keeps the words in the
//! buffer as context, moves the commit point and sends the final with a checkpoint.

use aldea_engine::Word;

use super::{ends_sentence, Event, Recognizer, ResultsEvent};

/// Longest duration a committed word keeps.
const MAX_WORD_S: f64 = 1.2;

#[derive(Debug)]
pub(super) struct Agreement {
    /// Last committed words, bare, to drop a repeated n-gram at the head of a new hypothesis.
    /// Written only here (a unit test sets it).
    pub(super) committed_tail: Vec<String>,
    hypothesis: Vec<Word>,
    /// An interim was sent since the last final (each final needs one before it).
    interim_since_final: bool,
}

impl Agreement {
    pub(super) fn new() -> Agreement {
        Agreement { committed_tail: Vec::new(), hypothesis: Vec::new(), interim_since_final: false }
    }

    /// The words of the last decode that are not final yet.
    pub(super) fn hypothesis(&self) -> &[Word] {
        &self.hypothesis
    }

    /// A decode's new words replace the hypothesis.
    pub(super) fn set_hypothesis(&mut self, words: Vec<Word>) {
        self.hypothesis = words;
    }

    /// Takes the hypothesis' words that start before `until` (to be committed); the later ones stay.
    pub(super) fn take_before(&mut self, until: f64) -> Vec<Word> {
        let (words, later): (Vec<Word>, Vec<Word>) =
            std::mem::take(&mut self.hypothesis).into_iter().partition(|w| w.start < until);
        self.hypothesis = later;
        words
    }
}

impl Recognizer {
    /// Local agreement over a decode's new words: the prefix they share with the previous
    /// hypothesis is stable and becomes final (up to its last sentence end, once enough audio waits
    /// behind the last final); the rest is the hypothesis, sent as an interim. Returns whether words
    /// were committed up to a sentence end.
    pub(super) fn agree(&mut self, hypothesis: Vec<Word>, events: &mut Vec<Event>) -> bool {
        // Local agreement: the prefix both hypotheses share is stable.
        let pending_from = hypothesis.first().map_or(self.decoded_until, |w| w.start.max(self.committed_until));
        let settled_before = if self.decoded_until - pending_from >= self.config.agreement_after_s {
            self.decoded_until - self.config.commit_lag_s
        } else {
            f64::NEG_INFINITY
        };
        let n_agreed = self
            .agreement
            .hypothesis
            .iter()
            .zip(&hypothesis)
            .take_while(|(a, b)| {
                aldea_proto::bare_word(&a.text) == aldea_proto::bare_word(&b.text) && b.end <= settled_before
            })
            .count();
        let (n_agreed, at_sentence_end) = match hypothesis[..n_agreed].iter().rposition(|w| ends_sentence(&w.text)) {
            Some(idx) => (idx + 1, true),
            None if self.decoded_until - pending_from >= self.config.sentence_wait_s => (n_agreed, false),
            None => (0, false),
        };
        let mut hypothesis = hypothesis;
        let rest = hypothesis.split_off(n_agreed);
        // The alignment sometimes stretches a word over the next ones (often the first word after a
        // pause): a commit never reaches past the start of the first word left out.
        if let Some(next_start) = rest.first().map(|w| w.start) {
            for word in &mut hypothesis {
                word.end = word.end.min(next_start).max(word.start);
            }
        }
        let committed = !hypothesis.is_empty();
        if committed {
            let end = hypothesis.last().map_or(self.committed_until, |w| w.end).max(self.committed_until);
            self.commit(hypothesis, end, false, false, events);
        }
        self.agreement.hypothesis = rest;
        self.send_interim(events);
        committed && at_sentence_end
    }

    /// Speech that went on for a whole window without agreement: the hypothesis' older words become
    /// final and the buffer moves on (the events go out with the next send).
    pub(super) fn force_progress(&mut self) {
        let keep_from = self.buffer_start() + self.config.max_buffer_s - self.config.trim_s.min(8.0);
        let (mut old, mut young): (Vec<Word>, Vec<Word>) =
            std::mem::take(&mut self.agreement.hypothesis).into_iter().partition(|w| w.end <= keep_from);
        if let Some(idx) = old.iter().rposition(|w| ends_sentence(&w.text)) {
            let unfinished = old.split_off(idx + 1);
            young.splice(0..0, unfinished);
        }
        self.agreement.hypothesis = young;
        let mut events = Vec::new();
        if old.is_empty() {
            self.committed_until = self.committed_until.max(keep_from);
        } else {
            let end = old.last().map_or(keep_from, |w| w.end);
            self.commit(old, end, false, false, &mut events);
        }
        self.trim_to(self.committed_until);
        self.deferred.extend(events);
    }

    /// Words of a new hypothesis that are not yet final: after the last commit, inside speech, and
    /// not a second transcription of committed words.
    ///
    /// A decode given the committed words in its audio as a prefix returns only what comes after
    /// them. Otherwise the buffer may still hold committed audio without its words (a word cut by a
    /// trim), and word times shift by a tenth of a second or two between decodes, so time alone
    /// would drop or repeat a word at the boundary: the new hypothesis' copy of the last committed
    /// word (near the commit time) anchors it. Without an anchor, words that start after the commit
    /// (less a little) are new, and an n-gram repeating the committed tail is dropped
    /// (whisper_streaming's rule).
    pub(super) fn fresh_words(&self, words: Vec<Word>, had_prefix: bool) -> Vec<Word> {
        let pad = self.config.speech_pad_s;
        let boundary = self.committed_until;
        let mut words: Vec<Word> = words.into_iter().filter(|w| !w.text.trim().is_empty()).collect();
        if had_prefix {
            words.retain(|w| self.speech_in(w.start - pad, w.end + pad));
            return words;
        }
        let holds_committed_audio = self.buffer_start() < boundary - 0.05;
        let anchor = match (holds_committed_audio, self.agreement.committed_tail.last()) {
            (true, Some(last)) => words.iter().rposition(|w| {
                w.start < boundary + 0.25 && w.end > boundary - 1.5 && aldea_proto::bare_word(&w.text) == *last
            }),
            _ => None,
        };
        let mut fresh: Vec<Word> = match anchor {
            Some(idx) => words.into_iter().skip(idx + 1).collect(),
            None => {
                let mut fresh: Vec<Word> = words.into_iter().filter(|w| w.start >= boundary - 0.1).collect();
                let tail = &self.agreement.committed_tail;
                // Without committed audio in the buffer (it starts at the commit) only the last
                // word can come back: its tail, when the cut fell a little before its real end.
                let (max_n, within) = if holds_committed_audio { (5, 1.0) } else { (1, 0.25) };
                for n in (1..=max_n.min(tail.len()).min(fresh.len())).rev() {
                    let head: Vec<String> = fresh[..n].iter().map(|w| aldea_proto::bare_word(&w.text)).collect();
                    if head[..] == tail[tail.len() - n..] && fresh[0].start < boundary + within {
                        fresh.drain(..n);
                        break;
                    }
                }
                fresh
            }
        };
        fresh.retain(|w| self.speech_in(w.start - pad, w.end + pad));
        fresh
    }

    pub(super) fn commit(
        &mut self,
        mut words: Vec<Word>,
        end: f64,
        speech_final: bool,
        from_finalize: bool,
        events: &mut Vec<Event>,
    ) {
        let start = self.results_until;
        // A final spans its words: a word that began just before the last commit (it was kept because
        // most of it lies after) starts at the commit, and the final reaches the last word's end.
        let floor = self.committed_until.max(start);
        for word in &mut words {
            word.start = word.start.max(floor);
            // No spoken word lasts this long; a longer one is an alignment stretched over silence or
            // over the words after it, and must not push the commit point past them.
            word.end = word.end.max(word.start).min(word.start + MAX_WORD_S);
        }
        let end = words.last().map_or(end, |w| w.end.max(end));
        if self.config.interim_results && !self.agreement.interim_since_final && !words.is_empty() {
            events.push(Event::Results(ResultsEvent {
                start,
                end,
                words: words.clone(),
                is_final: false,
                speech_final: false,
                from_finalize: false,
            }));
        }
        for word in &words {
            self.keep_committed(word.start, word.end, &word.tokens, &word.text);
        }
        self.flushes.on_final(words.last().map(|w| w.end), speech_final);
        self.committed_until = end;
        self.results_until = end;
        self.agreement.interim_since_final = false;
        events.push(Event::Results(ResultsEvent { start, end, words, is_final: true, speech_final, from_finalize }));
        let point = self.resume_point();
        self.resume_floor = point.audio_start;
        events.push(Event::Checkpoint(point));
    }

    fn send_interim(&mut self, events: &mut Vec<Event>) {
        if !self.config.interim_results || self.agreement.hypothesis.is_empty() {
            return;
        }
        self.agreement.interim_since_final = true;
        events.push(Event::Results(ResultsEvent {
            start: self.results_until,
            end: self.decoded_until.max(self.results_until),
            words: self.agreement.hypothesis.clone(),
            is_final: false,
            speech_final: false,
            from_finalize: false,
        }));
    }

    /// A committed word whose audio is in the buffer: the next decode's prefix, and the last of the
    /// committed tail (its last five words, bare) that a new hypothesis must not repeat.
    pub(super) fn keep_committed(&mut self, start: f64, end: f64, tokens: &[u32], text: &str) {
        self.audio.keep_word(start, end, tokens, ends_sentence(text));
        self.agreement.committed_tail.push(aldea_proto::bare_word(text));
        let excess = self.agreement.committed_tail.len().saturating_sub(5);
        self.agreement.committed_tail.drain(..excess);
    }
}
