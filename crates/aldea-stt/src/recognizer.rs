//! The streaming policy over Whisper: which audio to decode when, which words are final, where
//! utterances end. Synchronous and free of I/O: the session feeds it audio and decode results and
//! sends the events it returns, so unit tests drive it with a scripted decoder.
//!
//! - A growing buffer (at most ~28 s, the model's window) is decoded whole, prompted with the
//!   committed text, after every `step` of new audio while there is speech. Up to `context_s` of
//!   committed speech stays at its start as left context, its words forced as the decode's prefix,
//!   so each utterance is heard after the ones before it (as in the batch path's 30-s windows)
//!   without being transcribed twice.
//! - Local agreement (whisper_streaming's LocalAgreement-2): the words two consecutive hypotheses
//!   agree on, from the last commit on, become a final. The rest is an interim.
//! - A streaming Silero VAD on the audio timeline finds speech starts (`SpeechStarted`) and
//!   endpoints: after `endpointing` ms of silence everything heard becomes final with
//!   `speech_final`. When the speech pauses, a decode starts at once, so the endpoint usually finds a
//!   hypothesis that already covers the speech and the final goes out without another decode.
//! - Words outside speech are dropped, so silence and noise yield nothing.
//! - The buffer is cut at sentence starts to keep at most `context_s` of committed speech, and to
//!   a short lead-in during silence;
//!   finals are contiguous on the timeline (each starts where the previous ended).
//!
//! This module holds the public types and the orchestration (when to decode, what a decode's
//! result does); each job owns its state and invariants in a sub-module:
//! - `vad`: speech tracking from the VAD windows (`SpeechTracker`): speech spans, endpoints,
//!   the utterance-end gap.
//! - `buffer`: the audio buffer, the committed words in it (the next decode's prefix) and the
//!   prompt (`AudioBuffer`); trimming and the left context kept.
//! - `agreement`: local agreement over the hypothesis (`Agreement`): which words are new,
//!   which become final, the interim.
//! - `flush`: the queue of utterance ends and Finalize/CloseStream requests (`FlushQueue`),
//!   and what the finals owe the client at an utterance's end.

mod agreement;
mod buffer;
mod flush;
mod vad;

use aldea_engine::{Word, GUARD_NEG_THRESHOLD, GUARD_THRESHOLD};

use agreement::Agreement;
use buffer::AudioBuffer;
use flush::{Flush, FlushQueue};
use vad::SpeechTracker;

const SAMPLE_RATE: f64 = 16_000.0;
/// Samples per VAD window.
const VAD_WINDOW: usize = 512;
const VAD_WINDOW_S: f64 = VAD_WINDOW as f64 / SAMPLE_RATE;
/// Silence after which the buffer keeps only a short lead-in: a pause this long separates
/// utterances that need no context of each other (another speaker, another topic), and the model
/// tends to skip speech that follows old audio and a long silence.
const CONTEXT_GAP_S: f64 = 0.8;
/// Audio kept before the VAD's speech start (it notices speech a little late).
const LEAD_IN_S: f64 = 0.5;
/// A word aligned to less than this (one alignment frame is 20 ms)...
const UNPLACED_WORD_S: f64 = 0.02;
/// ... that ends this close to the end of the decoded audio was placed by nothing in the audio.
const WINDOW_EDGE_S: f64 = 0.06;
/// Prompt tokens kept from committed text (the engine uses the last 223).
const MAX_PROMPT_TOKENS: usize = 224;

/// How the stream is recognized (from the request's parameters and the service's config).
#[derive(Debug, Clone, PartialEq)]
pub struct RecognizerConfig {
    pub interim_results: bool,
    /// Silence that ends an utterance with `speech_final`; `None`: only Finalize/CloseStream do.
    pub endpointing_ms: Option<u32>,
    pub utterance_end_ms: Option<u32>,
    pub vad_events: bool,
    /// New audio between two decodes of the buffer while speech goes on.
    pub step_s: f64,
    /// The step while no words of the current speech have been heard yet: the first interim comes
    /// soon after speech starts.
    pub first_step_s: f64,
    /// Silence after which a decode starts without waiting for the step.
    pub pause_s: f64,
    /// Agreed words become final only this long before the end of the audio decoded: the last
    /// seconds of a buffer lack right context, and two greedy decodes can agree on the same slip.
    pub commit_lag_s: f64,
    /// Agreement finalizes words only once this much audio waits behind the last final: a short
    /// utterance is finalized whole at its endpoint by the better-beam decode, which hears all of it.
    pub agreement_after_s: f64,
    /// Agreed words become final up to the last sentence end among them, so the next decode starts
    /// at a sentence start with whole sentences as its prompt (as Whisper's own long-form loop
    /// seeks); agreed words without a sentence end wait until this much speech is pending.
    pub sentence_wait_s: f64,
    /// A final at a sentence end during speech moves the buffer's start to a sentence start with at
    /// most `context_s` of committed speech after it (as Whisper's long-form loop seeks to a
    /// segment's end); otherwise the committed audio stays in the buffer until it is longer than
    /// `trim_s`.
    pub seek_at_sentence_ends: bool,
    /// Buffer length beyond which its committed speech is cut to `context_s`.
    pub trim_s: f64,
    /// Committed speech kept in the buffer as left context (at most this long, cut at a sentence
    /// start where one fits, else at a word start): the next words are decoded with the audio
    /// before them, as the batch loop hears sentences inside a window (an utterance decoded alone
    /// is read differently, its first words most). The committed words of that audio are forced as
    /// the decode's prefix, so the model goes on after them and nothing is transcribed twice.
    /// Dropped once the silence lasts [`CONTEXT_GAP_S`]. 0 keeps none.
    pub context_s: f64,
    /// Longest buffer sent to the model (its window is 30 s).
    pub max_buffer_s: f64,
    /// Speech starts at a VAD window at or above this probability and goes on through windows at
    /// or above `vad_neg_threshold`. The upload guard's thresholds ([`aldea_engine::VadOptions::guard`]): one
    /// policy for both paths, so quiet, band-limited and whispered speech is heard on streams too
    /// (docs/decisions/20-the-vad-guard-keeps-quiet-speech.md).
    pub vad_threshold: f32,
    pub vad_neg_threshold: f32,
    /// Padding around VAD speech within which words are kept.
    pub speech_pad_s: f64,
}

impl Default for RecognizerConfig {
    fn default() -> Self {
        RecognizerConfig {
            interim_results: true,
            endpointing_ms: Some(300),
            utterance_end_ms: None,
            vad_events: false,
            step_s: 1.0,
            first_step_s: 0.4,
            pause_s: 0.15,
            commit_lag_s: 2.0,
            agreement_after_s: 5.0,
            sentence_wait_s: 12.0,
            seek_at_sentence_ends: true,
            trim_s: 12.0,
            context_s: 8.0,
            max_buffer_s: 28.0,
            vad_threshold: GUARD_THRESHOLD,
            vad_neg_threshold: GUARD_NEG_THRESHOLD,
            speech_pad_s: 0.3,
        }
    }
}

/// What the recognizer has to say to the client.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    SpeechStarted {
        timestamp: f64,
    },
    Results(ResultsEvent),
    UtteranceEnd {
        last_word_end: f64,
    },
    /// Every final so far ends at `committed_until`: where a resumed stream picks up.
    Checkpoint(ResumePoint),
}

/// Where a stream can be resumed ([`Recognizer::resume`]): the audio from `audio_start` is heard
/// again, the `context` words in it fixed (the prefix the next decode would be given), and results
/// go on from `committed_until`.
#[derive(Debug, Clone, PartialEq)]
pub struct ResumePoint {
    pub committed_until: f64,
    /// Timeline seconds of the first sample to replay (at most `committed_until`).
    pub audio_start: f64,
    /// Committed text before `audio_start`: the decoding prompt.
    pub prompt_tokens: Vec<u32>,
    pub context: Vec<ContextWord>,
    /// The utterance going on at `committed_until` already has final words.
    pub utterance_open: bool,
}

impl ResumePoint {
    /// The same point for input that cannot restart in the middle: no context, every committed
    /// token in the prompt (at most the prompt's length).
    pub fn without_context(mut self) -> ResumePoint {
        for word in self.context.drain(..) {
            self.prompt_tokens.extend(word.tokens);
        }
        let excess = self.prompt_tokens.len().saturating_sub(MAX_PROMPT_TOKENS);
        self.prompt_tokens.drain(..excess);
        self.audio_start = self.committed_until;
        self
    }
}

/// A committed word whose audio a resumed stream hears again.
#[derive(Debug, Clone, PartialEq)]
pub struct ContextWord {
    pub start: f64,
    pub end: f64,
    pub tokens: Vec<u32>,
    /// Its text (whether it ends a sentence, and the repeat check at the commit): given to
    /// [`Recognizer::resume`]; empty in the points the recognizer makes (checkpoints carry tokens).
    pub text: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ResultsEvent {
    pub start: f64,
    pub end: f64,
    pub words: Vec<Word>,
    pub is_final: bool,
    pub speech_final: bool,
    pub from_finalize: bool,
}

/// Audio for the model: 16 kHz samples starting at `offset` seconds on the stream's timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeRequest {
    pub id: u64,
    pub samples: Vec<f32>,
    pub offset: f64,
    pub prompt: Vec<u32>,
    /// Text tokens of the committed words at the start of `samples` (left context), forced as the
    /// start of the transcript: the words the decode returns come after them.
    pub prefix: Vec<u32>,
    /// Seconds into `samples` where the prefix's last word ends.
    pub prefix_end: f64,
    /// Why the decode is due.
    pub reason: DecodeReason,
}

impl DecodeRequest {
    /// This decode is expected to make words final (a flush point is in view, the speech paused, or
    /// agreement in long speech): they will likely be final without another look, so it deserves
    /// the better beam.
    pub fn settles(&self) -> bool {
        self.reason != DecodeReason::Interim
    }
}

/// Why a decode is due (for the scheduler's order and for tracing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeReason {
    /// The end of an utterance (endpointing silence, Finalize, CloseStream) is in view.
    Endpoint,
    /// The speech paused for `pause_s`: the decode may end the utterance early.
    Pause,
    /// Speech long enough for agreement to finalize words.
    LongSpeech,
    /// Only the interim is refreshed.
    Interim,
}

impl DecodeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            DecodeReason::Endpoint => "endpoint",
            DecodeReason::Pause => "pause",
            DecodeReason::LongSpeech => "long_speech",
            DecodeReason::Interim => "interim",
        }
    }
}

/// What [`Recognizer::next_decode_holding`] decided.
#[derive(Debug, Clone, PartialEq)]
pub enum NextDecode {
    Start(DecodeRequest),
    /// A decode for the interim is due but was held back.
    Held,
    /// No decode is due.
    Nothing,
}

#[derive(Debug)]
pub struct Recognizer {
    config: RecognizerConfig,
    /// The audio received, the part of it still buffered, the committed words in the buffer and
    /// the prompt.
    audio: AudioBuffer,
    /// Voice activity on the audio timeline (at the live edge, which may run ahead of decoding).
    speech: SpeechTracker,
    /// The hypothesis not yet final and the committed tail it must not repeat.
    agreement: Agreement,
    /// Utterance ends and Finalize/CloseStream requests, and what the finals owe at them.
    flushes: FlushQueue,
    committed_until: f64,
    /// End of the last final sent: the next final (or interim) starts here, so finals cover the
    /// timeline without gaps even where silence was skipped without one.
    results_until: f64,
    next_id: u64,
    /// The decode running: (id, end of its audio on the timeline, whether it settles). Nothing
    /// commits or trims while it runs, so the buffer still holds the prefix it was given when it
    /// returns.
    in_flight: Option<(u64, f64, bool)>,
    /// End (timeline) of the audio the last finished decode saw.
    decoded_until: f64,
    /// The hypothesis comes from a decode with the settling options (beam 5, temperature
    /// fallback): only such a decode ends an utterance. A greedy interim decode that happened to
    /// reach past the speech's end (it started just before the pause was seen) is decoded again.
    hypothesis_settles: bool,
    /// Events kept for the caller's next send.
    deferred: Vec<Event>,
    /// The step of interim decodes, in `step_s` ([`Recognizer::set_interim_step_scale`]).
    interim_step_scale: f64,
    /// A resumed stream's audio up to here was heard before (context): its speech makes spans but
    /// no events or flushes, and nothing before it is decoded again.
    replayed_until: f64,
    /// Audio start of the last checkpoint: the next never restarts earlier (the gateway frees the
    /// input before it).
    resume_floor: f64,
}

impl Recognizer {
    /// A recognizer whose timeline starts at `origin` seconds, prompted with `prompt` (resume).
    pub fn new(config: RecognizerConfig, origin: f64, prompt: Vec<u32>) -> Recognizer {
        Recognizer {
            config,
            audio: AudioBuffer::new(origin, prompt),
            speech: SpeechTracker::new(origin),
            agreement: Agreement::new(),
            flushes: FlushQueue::new(origin),
            committed_until: origin,
            results_until: origin,
            next_id: 0,
            in_flight: None,
            hypothesis_settles: false,
            decoded_until: origin,
            deferred: Vec::new(),
            interim_step_scale: 1.0,
            replayed_until: origin,
            resume_floor: origin,
        }
    }

    /// A stream resumed from `point` (the audio from `point.audio_start` on follows).
    pub fn resume(config: RecognizerConfig, point: ResumePoint) -> Recognizer {
        let committed_until = point.committed_until.max(point.audio_start);
        let mut recognizer = Recognizer::new(config, point.audio_start, point.prompt_tokens);
        for word in &point.context {
            recognizer.keep_committed(word.start, word.end, &word.tokens, &word.text);
        }
        recognizer.committed_until = committed_until;
        recognizer.results_until = committed_until;
        recognizer.decoded_until = committed_until;
        recognizer.flushes.resume(point.context.last().map_or(committed_until, |w| w.end), point.utterance_open);
        recognizer.replayed_until = committed_until;
        recognizer
    }

    /// Still receiving the audio of a resumed stream's context.
    fn replaying(&self) -> bool {
        self.audio_end() < self.replayed_until - 1e-6
    }

    /// Timeline position of the end of the audio received.
    pub fn audio_end(&self) -> f64 {
        self.audio.end()
    }

    /// Timeline position of the buffer's first sample.
    fn buffer_start(&self) -> f64 {
        self.audio.start()
    }

    /// Whether a flush or a decode is still to come.
    pub fn is_settled(&self) -> bool {
        self.flushes.is_empty() && self.in_flight.is_none()
    }

    /// Seconds of audio received but not yet decoded (the session stops reading while it is large).
    pub fn backlog_s(&self) -> f64 {
        self.audio_end() - self.decoded_until.max(self.buffer_start())
    }

    /// An endpoint, Finalize or CloseStream waits for its final.
    pub fn flush_pending(&self) -> bool {
        !self.flushes.is_empty()
    }

    /// Appends 16 kHz audio. `vad_probs` are the VAD's probabilities of the 512-sample windows that
    /// this audio completed (from [`aldea_engine::VadStream`]).
    pub fn push_audio(&mut self, samples: &[f32], vad_probs: &[f32]) -> Vec<Event> {
        self.audio.push(samples);
        let mut events = Vec::new();
        for &prob in vad_probs {
            let (first, end) = self.speech.next_window();
            let (window_start, window_end) = (self.audio.at_sample(first), self.audio.at_sample(end));
            self.on_vad_window(window_start, window_end, prob, &mut events);
        }
        self.trim_silence();
        self.try_complete_flush(&mut events);
        events
    }

    /// Finalize or CloseStream: everything received becomes final.
    pub fn finalize(&mut self, from_finalize: bool) -> Vec<Event> {
        let end = self.audio_end();
        // The utterance is cut here; speech that goes on afterwards is a new one.
        self.speech.cut(end);
        self.flushes.push(Flush {
            until: end,
            speech_end: end,
            speech_final: true,
            from_finalize,
            utterance_end: false,
        });
        let mut events = Vec::new();
        self.try_complete_flush(&mut events);
        events
    }

    /// Whether speech is going on at the end of the audio received.
    pub fn in_speech(&self) -> bool {
        self.speech.in_speech()
    }

    /// Interim decodes (those that only refresh the interim) come every `scale` steps, at least
    /// one. The first words of an utterance, the decodes at pauses and endpoints and those for
    /// agreement in long speech keep their pace (spacing the last ones out cost the real-time
    /// long_3min stream 1.8 points of WER).
    pub fn set_interim_step_scale(&mut self, scale: f64) {
        self.interim_step_scale = scale.max(1.0);
    }

    /// The next audio to decode, when a decode is due and none is running.
    pub fn next_decode(&mut self) -> Option<DecodeRequest> {
        match self.next_decode_holding(false) {
            NextDecode::Start(request) => Some(request),
            NextDecode::Held | NextDecode::Nothing => None,
        }
    }

    /// [`Recognizer::next_decode`], where `hold_interims` (the model is busy with other work) holds
    /// back a decode that would only refresh the interim, or that a short pause asked for: nothing
    /// is started and the decode stays due. A decode that settles words (an endpoint, long speech)
    /// is never held.
    pub fn next_decode_holding(&mut self, hold_interims: bool) -> NextDecode {
        if self.in_flight.is_some() || self.replaying() {
            return NextDecode::Nothing;
        }
        self.drop_stale_context();
        let mut horizon = self.horizon();
        if self.window_full(horizon) {
            self.force_progress();
            horizon = self.horizon();
        }
        // Silence in view with more audio beyond (a stream sent faster than real time): move on.
        while !self.speech_in(self.committed_until, horizon)
            && horizon < self.audio_end() - 1e-9
            && horizon - self.buffer_start() > 1.0
        {
            self.trim_to(horizon - LEAD_IN_S);
            horizon = self.horizon();
        }
        if !self.speech_in(self.committed_until, horizon) {
            return NextDecode::Nothing;
        }
        let flush_in_view = self.flushes.front().is_some_and(|f| f.until <= horizon + 1e-9);
        let paused = self.speech.in_speech()
            && self.speech.silence_run_s() >= self.config.pause_s
            && self.decoded_until < self.speech.last_speech_end()
            && horizon >= self.speech.last_speech_end();
        // Speech long enough for agreement to finalize words: those decodes get the better beam,
        // since what they agree on becomes final without a second look.
        let long_pending = self.agreement.hypothesis().first().is_some_and(|w| {
            horizon - w.start.max(self.committed_until) >= self.config.agreement_after_s - self.config.step_s
        });
        let due = if flush_in_view {
            self.flushes.front().is_some_and(|f| self.decoded_until < f.speech_end - 1e-6 || !self.hypothesis_settles)
        } else {
            // Before the first words of the speech in view, decode sooner; the speech counts from
            // its start (which lies before the horizon), not from the live edge's, which may be far
            // ahead when audio came faster than real time.
            let onset = self.next_speech_start().filter(|&start| start < horizon);
            let due_after = match onset {
                Some(onset) if self.agreement.hypothesis().is_empty() => {
                    self.decoded_until.max(onset) + self.config.first_step_s.min(self.config.step_s)
                }
                _ if long_pending => self.decoded_until + self.config.step_s,
                _ => self.decoded_until + self.config.step_s * self.interim_step_scale,
            };
            horizon >= due_after - 1e-9 || paused
        };
        let n_samples = self.audio.samples_before(horizon);
        if !due || n_samples == 0 {
            return NextDecode::Nothing;
        }
        let reason = if flush_in_view {
            DecodeReason::Endpoint
        } else if paused {
            DecodeReason::Pause
        } else if long_pending {
            DecodeReason::LongSpeech
        } else {
            DecodeReason::Interim
        };
        // A pause may be one between words: its decode waits too while the model is busy, and
        // becomes the endpoint's decode (never held) if the silence goes on.
        if hold_interims && matches!(reason, DecodeReason::Interim | DecodeReason::Pause) {
            return NextDecode::Held;
        }
        self.next_id += 1;
        let request = self.audio.decode_request(self.next_id, n_samples, reason);
        self.in_flight = Some((self.next_id, self.audio.after_samples(n_samples), request.settles()));
        NextDecode::Start(request)
    }

    /// The decode window is as long as the model takes and has been decoded: nothing more can be
    /// seen without moving the buffer.
    fn window_full(&self, horizon: f64) -> bool {
        horizon - self.buffer_start() >= self.config.max_buffer_s - 1e-6 && self.decoded_until >= horizon - 1e-6
    }

    /// The words the model found in a request's audio (on the stream's timeline). A failed decode
    /// passes `None`: the request is dropped and the audio decoded again with the next one.
    pub fn on_decoded(&mut self, id: u64, words: Option<Vec<Word>>) -> Vec<Event> {
        let mut events = Vec::new();
        let Some((expected, audio_end, settles)) = self.in_flight else {
            return events;
        };
        if expected != id {
            return events;
        }
        self.in_flight = None;
        let Some(words) = words else {
            return events;
        };
        self.decoded_until = audio_end;
        self.hypothesis_settles = settles;
        // Words at the window's end that the alignment gave no duration: nothing in the audio
        // carries them (tiny.en repeats the prompt's last word there, "Rear. Rear.", when a short
        // window ends in the pause before the next word). A real word cut by the live edge comes
        // back with the next decode's audio; at an endpoint the window ends in silence.
        let mut words = words;
        while words.last().is_some_and(|w| w.end - w.start < UNPLACED_WORD_S && w.end >= audio_end - WINDOW_EDGE_S) {
            words.pop();
        }
        let hypothesis = self.fresh_words(words, self.audio.has_context());

        if self
            .flushes
            .front()
            .is_some_and(|f| self.decoded_until >= f.speech_end - 1e-6 && f.until <= audio_end + 1e-9)
        {
            self.agreement.set_hypothesis(hypothesis);
            self.try_complete_flush(&mut events);
            return events;
        }
        let at_sentence_end = self.agree(hypothesis, &mut events);
        if (at_sentence_end && self.config.seek_at_sentence_ends)
            || self.decoded_until - self.buffer_start() > self.config.trim_s
        {
            // Whisper's long-form loop: the next window starts at a sentence start, here with the
            // committed sentences in it forced as the prefix.
            self.keep_context();
        }
        self.try_complete_flush(&mut events);
        events
    }

    /// Events produced outside a call that returns events (a forced commit when a decode starts),
    /// and those the caller handed back with [`Recognizer::defer`], in order.
    pub fn take_forced(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.deferred)
    }

    /// Keeps events for the next [`Recognizer::take_forced`].
    pub fn defer(&mut self, events: Vec<Event>) {
        self.deferred.extend(events);
    }
}

/// The word closes a sentence (Whisper writes the punctuation onto the word).
fn ends_sentence(text: &str) -> bool {
    let text = text.trim().trim_end_matches(['"', '\'', ')', ']']);
    if text.ends_with(['?', '!']) {
        return true;
    }
    // A title or a short abbreviation ("Dr.", "St.", "e.g.") ends with a period inside a sentence.
    const ABBREVIATIONS: [&str; 10] = ["mr.", "mrs.", "ms.", "dr.", "st.", "jr.", "sr.", "vs.", "e.g.", "i.e."];
    text.ends_with('.') && !ABBREVIATIONS.contains(&text.to_lowercase().as_str())
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests;
