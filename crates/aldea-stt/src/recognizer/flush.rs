//! The flush queue: utterance ends (endpoints) and Finalize/CloseStream requests, each making
//! everything up to its point final once a decode has heard its speech whole; and what the finals
//! owe the client at an utterance's end (`speech_final`, UtteranceEnd).
//!
//! [`FlushQueue`] keeps:
//! - The flushes in timeline order, completed only from the front; decodes do not reach past the
//!   front's point unless later flushes join it ([`Recognizer::horizon`]).
//! - `retried_at`: a flush's speech is decoded once more (a decode that stopped early, a prefixed
//!   one that said nothing) at most once per position: each retry lies past the last.
//! - `utterance_open`: words were committed since the last `speech_final`, so the utterance's
//!   endpoint owes the client a `speech_final`, also when no words are left for it.
//! - `utterance_has_words`: words were committed since the last UtteranceEnd (at most one per run
//!   of words, at `last_word_end`).

use std::collections::VecDeque;

use super::{round3, Event, Recognizer, CONTEXT_GAP_S};

/// VAD speech after the last word of a decode that should have heard a whole utterance, beyond
/// which the model is taken to have stopped early and the rest is decoded again.
const UNHEARD_SPEECH_S: f64 = 1.0;
/// VAD speech after the commit, beyond which a prefixed decode that says nothing is decoded once
/// more without its prefix.
const SILENT_PREFIX_RETRY_S: f64 = 0.2;

/// A pending flush: everything up to `until` becomes final once a decode has covered `speech_end`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct Flush {
    pub(super) until: f64,
    pub(super) speech_end: f64,
    pub(super) speech_final: bool,
    pub(super) from_finalize: bool,
    /// Send `UtteranceEnd` after this flush's final.
    pub(super) utterance_end: bool,
}

#[derive(Debug)]
pub(super) struct FlushQueue {
    /// Utterance ends and Finalize/CloseStream requests, in timeline order.
    flushes: VecDeque<Flush>,
    /// Where the last decode that stopped short of its flush's speech ended (decoded once more from
    /// there; a second stop at the same place is accepted).
    retried_at: Option<f64>,
    /// Words were committed since the last `speech_final`: the utterance's endpoint owes the client
    /// a `speech_final`, also when no words are left for it.
    utterance_open: bool,
    /// Words were committed since the last UtteranceEnd.
    utterance_has_words: bool,
    last_word_end: f64,
}

impl FlushQueue {
    pub(super) fn new(origin: f64) -> FlushQueue {
        FlushQueue {
            flushes: VecDeque::new(),
            retried_at: None,
            utterance_open: false,
            utterance_has_words: false,
            last_word_end: origin,
        }
    }

    /// A resumed stream: its last committed word ended at `last_word_end`, and the utterance going
    /// on there already has final words when `utterance_open`.
    pub(super) fn resume(&mut self, last_word_end: f64, utterance_open: bool) {
        self.last_word_end = last_word_end;
        self.utterance_open = utterance_open;
        self.utterance_has_words = utterance_open;
    }

    /// Queues a flush (after those queued: it lies later on the timeline).
    pub(super) fn push(&mut self, flush: Flush) {
        self.flushes.push_back(flush);
    }

    pub(super) fn front(&self) -> Option<&Flush> {
        self.flushes.front()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.flushes.is_empty()
    }

    /// The last flush queued sends UtteranceEnd after its final; `false` when none is queued.
    pub(super) fn mark_utterance_end(&mut self) -> bool {
        match self.flushes.back_mut() {
            Some(flush) => {
                flush.utterance_end = true;
                true
            }
            None => false,
        }
    }

    /// Whether the speech may be decoded once more from `at` (no retry there yet).
    fn may_retry(&self, at: f64) -> bool {
        self.retried_at.is_none_or(|retried| at > retried + 1e-6)
    }

    /// A final went out: its last word ends at `last_word_end` (`None`: it has no words).
    pub(super) fn on_final(&mut self, last_word_end: Option<f64>, speech_final: bool) {
        if let Some(end) = last_word_end {
            self.last_word_end = end;
            self.utterance_has_words = true;
        }
        self.utterance_open = !speech_final && (self.utterance_open || last_word_end.is_some());
    }

    /// The utterance going on at the commit point already has final words.
    pub(super) fn utterance_open(&self) -> bool {
        self.utterance_open
    }

    /// The last word's end when an UtteranceEnd is owed (words were committed since the last one),
    /// which is then no longer owed.
    fn take_utterance_end(&mut self) -> Option<f64> {
        if self.utterance_has_words {
            self.utterance_has_words = false;
            return Some(self.last_word_end);
        }
        None
    }
}

impl Recognizer {
    pub(super) fn emit_utterance_end(&mut self, events: &mut Vec<Event>) {
        if let Some(last_word_end) = self.flushes.take_utterance_end() {
            events.push(Event::UtteranceEnd { last_word_end: round3(last_word_end) });
        }
    }

    /// End of the audio the next decode may see: the received audio, at most the model's window past
    /// the buffer start, and not past the next flush point (utterances are decoded in order, also
    /// when the audio arrives faster than real time).
    ///
    /// When several whole utterances fit in the window (audio that came faster than real time, or a
    /// decoder that fell behind) and only short pauses part them, one decode hears them all and ends
    /// at the last of their flush points: each is heard with the ones around it, as the batch path
    /// hears 30-s windows. A pause of [`CONTEXT_GAP_S`] or more ends the window (the model tends to
    /// skip speech that follows a long silence).
    pub(super) fn horizon(&self) -> f64 {
        let window_end = self.audio_end().min(self.buffer_start() + self.config.max_buffer_s);
        let flushes = &self.flushes.flushes;
        let Some(front) = flushes.front() else {
            return window_end;
        };
        let mut last_in_window = None;
        for (idx, flush) in flushes.iter().enumerate() {
            if flush.until > window_end + 1e-9 {
                break;
            }
            last_in_window = Some(flush.until);
            let next_speech = self.speech.closed_start_from(flush.speech_end);
            let joined =
                idx + 1 < flushes.len() && next_speech.is_some_and(|start| start - flush.speech_end < CONTEXT_GAP_S);
            if !joined {
                break;
            }
        }
        match last_in_window {
            Some(until) => until.max(self.buffer_start()),
            None => window_end.min(front.until.max(self.buffer_start())),
        }
    }

    /// Completes the flushes at the front whose audio has been decoded (or holds no speech).
    pub(super) fn try_complete_flush(&mut self, events: &mut Vec<Event>) {
        while let Some(&flush) = self.flushes.front() {
            if self.in_flight.is_some() {
                return;
            }
            // The last decode heard this utterance whole: it ended inside the closing silence, or at
            // a later utterance's flush point (words after `until` stay for that one). A flush queued
            // after a decode started lies past its end, so one ending at a queued point chose it.
            let at_flush_point = self.flushes.flushes.iter().any(|f| (f.until - self.decoded_until).abs() < 1e-3);
            let covered = (self.decoded_until >= flush.speech_end - 1e-6
                && (self.decoded_until <= flush.until + 1e-9 || at_flush_point)
                && self.hypothesis_settles)
                || !self.speech_in(self.committed_until, flush.until);
            if !covered {
                return;
            }
            let until = flush.until.max(self.committed_until);
            // A decode given a prefix may take the prefix for the new speech too (a duplicated word
            // in it, "Rear. Rear." before "right", claims the audio of "right") and say nothing
            // after it: that speech is decoded once more without the context.
            let said_nothing = !self.agreement.hypothesis().iter().any(|w| w.start < until);
            if said_nothing
                && self.audio.has_context()
                && self.speech_duration(self.committed_until, flush.speech_end) >= SILENT_PREFIX_RETRY_S
                && self.flushes.may_retry(self.committed_until)
            {
                self.flushes.retried_at = Some(self.committed_until);
                self.drop_context();
                self.decoded_until = self.committed_until.max(self.buffer_start());
                return;
            }
            // Whisper sometimes ends its transcript early (a timestamp, then end of text) with speech
            // left in the window; its long-form loop seeks there and decodes the rest. So here: what
            // it said becomes final and the rest is decoded once more, with it as the prefix.
            let heard_until = self
                .agreement
                .hypothesis()
                .iter()
                .filter(|w| w.start < until)
                .map(|w| w.end)
                .fold(self.committed_until, f64::max);
            let unheard = self.speech_duration(heard_until + self.config.speech_pad_s, flush.speech_end);
            if unheard >= UNHEARD_SPEECH_S && self.flushes.may_retry(heard_until) {
                self.flushes.retried_at = Some(heard_until);
                let words = self.agreement.take_before(until);
                if !words.is_empty() {
                    self.commit(words, heard_until, false, false, events);
                }
                self.keep_context();
                self.decoded_until = self.committed_until.max(self.buffer_start());
                return;
            }
            self.flushes.flushes.pop_front();
            let words = self.agreement.take_before(until);
            // An utterance whose words all went out in earlier finals (agreement, a continued decode)
            // still ends with a `speech_final`, empty.
            if !words.is_empty() || flush.from_finalize || (flush.speech_final && self.flushes.utterance_open) {
                self.commit(words, until, flush.speech_final, flush.from_finalize, events);
            } else {
                self.committed_until = until;
            }
            self.keep_context();
            if flush.utterance_end {
                self.emit_utterance_end(events);
            }
        }
    }
}
