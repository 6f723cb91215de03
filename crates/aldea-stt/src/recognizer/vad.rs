//! Speech tracking: the VAD's windows on the audio timeline (at the live edge, which may run ahead
//! of decoding) make speech spans, endpoints and the utterance-end gap.
//!
//! [`SpeechTracker`] keeps:
//! - Window `k` covers the stream's samples `[k * VAD_WINDOW, (k + 1) * VAD_WINDOW)`; windows are
//!   taken in order, each once ([`SpeechTracker::next_window`]).
//! - Speech starts at a window at or above the threshold and goes on through windows between the
//!   two thresholds; `last_speech_end` is the end of its last such window. While `in_speech`, the
//!   open span starts at `speech_start` and `silence_run_s` is the length of the windows below the
//!   lower threshold since its last speech window; the span closes (into `spans`) once that run
//!   reaches the endpointing silence, or where Finalize cuts it.
//! - `spans` holds the closed spans in the order they closed, until a trim leaves them behind the
//!   buffer ([`SpeechTracker::forget_before`]).
//! - `utterance_end_marked`: the current silence has had its UtteranceEnd decided (at most one per
//!   silence; a new speech start clears it).
//!
//! Audio a resumed stream heard before (`replayed`) updates the speech spans but reports no change:
//! its events were sent and its flushes done.

use super::{round3, Event, Flush, Recognizer, RecognizerConfig, VAD_WINDOW, VAD_WINDOW_S};

#[derive(Debug)]
pub(super) struct SpeechTracker {
    n_windows: u64,
    /// Written only here (a unit test sets it).
    pub(super) in_speech: bool,
    silence_run_s: f64,
    /// Written only here (a unit test sets it).
    pub(super) speech_start: f64,
    last_speech_end: f64,
    /// Closed speech spans not yet behind the buffer.
    spans: Vec<(f64, f64)>,
    /// UtteranceEnd already decided for the current silence.
    utterance_end_marked: bool,
}

/// What a VAD window changed that the recognizer acts on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum VadChange {
    /// Speech started at this time (outside replayed audio).
    SpeechStarted(f64),
    /// The silence after the speech reached the endpoint: the utterance's flush point is `until`.
    Endpoint { until: f64, speech_end: f64, utterance_end: bool },
    /// The silence after the speech reached `utterance_end_ms` with no endpoint flush marking it.
    UtteranceEnd,
}

impl SpeechTracker {
    pub(super) fn new(origin: f64) -> SpeechTracker {
        SpeechTracker {
            n_windows: 0,
            in_speech: false,
            silence_run_s: 0.0,
            speech_start: origin,
            last_speech_end: origin,
            spans: Vec::new(),
            utterance_end_marked: true,
        }
    }

    /// The next VAD window: its first sample and the sample after its last (stream sample counts).
    pub(super) fn next_window(&mut self) -> (u64, u64) {
        let first = self.n_windows * VAD_WINDOW as u64;
        self.n_windows += 1;
        (first, self.n_windows * VAD_WINDOW as u64)
    }

    /// One VAD window's speech probability. `replayed`: the window lies in audio a resumed stream
    /// heard before (its speech is known, its events were sent).
    pub(super) fn on_window(
        &mut self,
        config: &RecognizerConfig,
        window_start: f64,
        window_end: f64,
        prob: f32,
        replayed: bool,
    ) -> Option<VadChange> {
        let neg_threshold = config.vad_neg_threshold;
        if prob >= config.vad_threshold {
            let mut change = None;
            if !self.in_speech {
                self.in_speech = true;
                self.speech_start = window_start;
                self.utterance_end_marked = false;
                if !replayed {
                    change = Some(VadChange::SpeechStarted(window_start));
                }
            }
            self.silence_run_s = 0.0;
            self.last_speech_end = window_end;
            return change;
        }
        if self.in_speech {
            if prob < neg_threshold {
                self.silence_run_s += VAD_WINDOW_S;
            } else {
                // Between the thresholds: still speech, the silence run starts over.
                self.silence_run_s = 0.0;
                self.last_speech_end = window_end;
            }
            if self.silence_run_s >= endpoint_after_s(config) {
                self.in_speech = false;
                self.spans.push((self.speech_start, self.last_speech_end));
                if replayed {
                    self.utterance_end_marked = true;
                    return None;
                }
                let utterance_end = config.endpointing_ms.is_none() && config.utterance_end_ms.is_some();
                self.utterance_end_marked = utterance_end;
                return Some(VadChange::Endpoint {
                    until: window_end,
                    speech_end: self.last_speech_end,
                    utterance_end,
                });
            }
            return None;
        }
        // Silence after an utterance: UtteranceEnd once the gap is long enough.
        if replayed {
            return None;
        }
        if let Some(ms) = config.utterance_end_ms {
            if !self.utterance_end_marked && window_end - self.last_speech_end >= f64::from(ms) / 1000.0 {
                self.utterance_end_marked = true;
                return Some(VadChange::UtteranceEnd);
            }
        }
        None
    }

    /// Finalize or CloseStream at `end`: the utterance is cut here; speech that goes on afterwards
    /// is a new one.
    pub(super) fn cut(&mut self, end: f64) {
        if self.in_speech {
            self.spans.push((self.speech_start, end));
            self.in_speech = false;
            self.silence_run_s = 0.0;
            self.utterance_end_marked = true;
        }
    }

    /// Whether speech is going on at the live edge.
    pub(super) fn in_speech(&self) -> bool {
        self.in_speech
    }

    /// Silence since the last speech window of the open span.
    pub(super) fn silence_run_s(&self) -> f64 {
        self.silence_run_s
    }

    /// End of the last speech window.
    pub(super) fn last_speech_end(&self) -> f64 {
        self.last_speech_end
    }

    /// Seconds of VAD speech within `[from, to)`; the open span reaches `audio_end`.
    pub(super) fn speech_duration(&self, from: f64, to: f64, audio_end: f64) -> f64 {
        let open = self.in_speech.then_some((self.speech_start, audio_end));
        self.spans.iter().copied().chain(open).map(|(start, end)| (end.min(to) - start.max(from)).max(0.0)).sum()
    }

    /// Whether VAD speech overlaps `[from, to)` on the timeline.
    pub(super) fn speech_in(&self, from: f64, to: f64) -> bool {
        let open = self.in_speech.then_some((self.speech_start, f64::INFINITY));
        self.spans.iter().copied().chain(open).any(|(start, end)| start < to && end > from)
    }

    /// Start of the first speech (closed span or the open one) that is not all committed.
    pub(super) fn next_speech_start(&self, committed_until: f64) -> Option<f64> {
        let open = self.in_speech.then_some(self.speech_start);
        self.spans.iter().filter(|s| s.1 > committed_until).map(|s| s.0).chain(open).min_by(f64::total_cmp)
    }

    /// Start of the earliest closed span that starts at `time` or later.
    pub(super) fn closed_start_from(&self, time: f64) -> Option<f64> {
        self.spans.iter().map(|s| s.0).filter(|&start| start >= time).reduce(f64::min)
    }

    /// End of the latest closed span that ends by `committed_until` (all committed).
    pub(super) fn committed_speech_end(&self, committed_until: f64) -> Option<f64> {
        self.spans.iter().map(|s| s.1).filter(|&end| end <= committed_until + 1e-6).max_by(f64::total_cmp)
    }

    /// Forgets the closed spans that end by `time` (behind the buffer).
    pub(super) fn forget_before(&mut self, time: f64) {
        self.spans.retain(|&(_, end)| end > time);
    }
}

/// Silence that ends an utterance: `endpointing`, else `utterance_end_ms`, else one second (the
/// buffer must still be settled at pauses when the client asked for no endpointing).
fn endpoint_after_s(config: &RecognizerConfig) -> f64 {
    match (config.endpointing_ms, config.utterance_end_ms) {
        (Some(ms), _) => f64::from(ms) / 1000.0,
        (None, Some(ms)) => f64::from(ms) / 1000.0,
        (None, None) => 1.0,
    }
}

impl Recognizer {
    /// One VAD window: speech starts are reported, endpoints queue a flush, the utterance-end gap
    /// marks the last flush (or sends UtteranceEnd when none is pending).
    pub(super) fn on_vad_window(&mut self, window_start: f64, window_end: f64, prob: f32, events: &mut Vec<Event>) {
        // Audio a resumed stream heard before: its speech is known, its events were sent.
        let replayed = window_end <= self.replayed_until + 1e-9;
        match self.speech.on_window(&self.config, window_start, window_end, prob, replayed) {
            Some(VadChange::SpeechStarted(timestamp)) if self.config.vad_events => {
                events.push(Event::SpeechStarted { timestamp: round3(timestamp) });
            }
            Some(VadChange::Endpoint { until, speech_end, utterance_end }) => self.flushes.push(Flush {
                until,
                speech_end,
                speech_final: self.config.endpointing_ms.is_some(),
                from_finalize: false,
                utterance_end,
            }),
            Some(VadChange::UtteranceEnd) => {
                // The last flush queued sends it after its final; with none queued it goes out now.
                let marked = self.flushes.mark_utterance_end();
                if !marked {
                    self.emit_utterance_end(events);
                }
            }
            Some(VadChange::SpeechStarted(_)) | None => {}
        }
    }

    /// Seconds of VAD speech within `[from, to)`.
    pub(super) fn speech_duration(&self, from: f64, to: f64) -> f64 {
        self.speech.speech_duration(from, to, self.audio_end())
    }

    /// Whether VAD speech overlaps `[from, to)` on the timeline.
    pub(super) fn speech_in(&self, from: f64, to: f64) -> bool {
        self.speech.speech_in(from, to)
    }

    /// Start of the first speech (closed span or the open one) that is not all committed.
    pub(super) fn next_speech_start(&self) -> Option<f64> {
        self.speech.next_speech_start(self.committed_until)
    }
}
