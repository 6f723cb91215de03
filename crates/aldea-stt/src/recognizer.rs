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

use aldea_engine::Word;

const SAMPLE_RATE: f64 = 16_000.0;
/// Samples per VAD window.
const VAD_WINDOW: usize = 512;
const VAD_WINDOW_S: f64 = VAD_WINDOW as f64 / SAMPLE_RATE;
/// Longest duration a committed word keeps.
const MAX_WORD_S: f64 = 1.2;
/// Silence after which the buffer keeps only a short lead-in: a pause this long separates
/// utterances that need no context of each other (another speaker, another topic), and the model
/// tends to skip speech that follows old audio and a long silence.
const CONTEXT_GAP_S: f64 = 0.8;
/// Audio kept before the VAD's speech start (it notices speech a little late).
const LEAD_IN_S: f64 = 0.5;
/// VAD speech after the last word of a decode that should have heard a whole utterance, beyond
/// which the model is taken to have stopped early and the rest is decoded again.
const UNHEARD_SPEECH_S: f64 = 1.0;
/// VAD speech after the commit, beyond which a prefixed decode that says nothing is decoded once
/// more without its prefix.
const SILENT_PREFIX_RETRY_S: f64 = 0.2;
/// A word aligned to less than this (one alignment frame is 20 ms)...
const UNPLACED_WORD_S: f64 = 0.02;
/// ... that ends this close to the end of the decoded audio was placed by nothing in the audio.
const WINDOW_EDGE_S: f64 = 0.06;
/// Prompt tokens kept from committed text (the engine uses the last 223).
const MAX_PROMPT_TOKENS: usize = 224;
/// Most tokens of committed words kept in the buffer as a forced prefix (the runtime decodes at
/// most 224 tokens after the prompt, prefix included).
const MAX_PREFIX_TOKENS: usize = 96;

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
    pub vad_threshold: f32,
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
            vad_threshold: 0.5,
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

/// A committed word whose audio is still in the buffer.
#[derive(Debug, Clone, PartialEq)]
struct CommittedWord {
    start: f64,
    end: f64,
    tokens: Vec<u32>,
    ends_sentence: bool,
}

/// A pending flush: everything up to `until` becomes final once a decode has covered `speech_end`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Flush {
    until: f64,
    speech_end: f64,
    speech_final: bool,
    from_finalize: bool,
    /// Send `UtteranceEnd` after this flush's final.
    utterance_end: bool,
}

#[derive(Debug)]
pub struct Recognizer {
    config: RecognizerConfig,
    /// Timeline position of the first sample (a resumed stream starts later than 0).
    origin: f64,
    n_received: u64,
    buffer: Vec<f32>,
    /// Samples dropped from the front of the buffer: its start is derived from this count
    /// ([`Recognizer::buffer_start`]), so it never drifts from `audio_end` and decode ends.
    n_dropped: u64,
    committed_until: f64,
    /// End of the last final sent: the next final (or interim) starts here, so finals cover the
    /// timeline without gaps even where silence was skipped without one.
    results_until: f64,
    /// Token ids of committed text whose audio lies before the buffer: the decoding prompt. Text
    /// committed from audio still in the buffer is not in it (the model hears that audio again;
    /// prompting with it too makes the model skip it and misplace what follows).
    prompt: Vec<u32>,
    /// Committed words whose audio is inside the buffer (the next decode's prefix), moved to
    /// `prompt` by trims.
    in_buffer: std::collections::VecDeque<CommittedWord>,
    /// Last committed words, bare, to drop a repeated n-gram at the head of a new hypothesis.
    committed_tail: Vec<String>,
    hypothesis: Vec<Word>,
    /// An interim was sent since the last final (each final needs one before it).
    interim_since_final: bool,
    next_id: u64,
    /// The decode running: (id, end of its audio on the timeline, whether it settles). Nothing
    /// commits or trims while it runs, so `in_buffer` still holds the prefix it was given when it
    /// returns.
    in_flight: Option<(u64, f64, bool)>,
    /// End (timeline) of the audio the last finished decode saw.
    decoded_until: f64,
    /// The hypothesis comes from a decode with the settling options (beam 5, temperature
    /// fallback): only such a decode ends an utterance. A greedy interim decode that happened to
    /// reach past the speech's end (it started just before the pause was seen) is decoded again.
    hypothesis_settles: bool,
    /// Where the last decode that stopped short of its flush's speech ended (decoded once more from
    /// there; a second stop at the same place is accepted).
    retried_at: Option<f64>,
    /// Words were committed since the last `speech_final`: the utterance's endpoint owes the client
    /// a `speech_final`, also when no words are left for it.
    utterance_open: bool,
    /// Utterance ends and Finalize/CloseStream requests, in timeline order.
    flushes: std::collections::VecDeque<Flush>,
    /// Events kept for the caller's next send.
    deferred: Vec<Event>,
    // Voice activity on the audio timeline (at the live edge, which may run ahead of decoding).
    n_vad_windows: u64,
    in_speech: bool,
    /// The step of interim decodes, in `step_s` ([`Recognizer::set_interim_step_scale`]).
    interim_step_scale: f64,
    silence_run_s: f64,
    speech_start: f64,
    last_speech_end: f64,
    /// Closed speech spans not yet behind the buffer.
    spans: Vec<(f64, f64)>,
    /// UtteranceEnd already decided for the current silence.
    utterance_end_marked: bool,
    /// Words were committed since the last UtteranceEnd.
    utterance_has_words: bool,
    last_word_end: f64,
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
            origin,
            n_received: 0,
            buffer: Vec::new(),
            n_dropped: 0,
            committed_until: origin,
            results_until: origin,
            prompt,
            in_buffer: std::collections::VecDeque::new(),
            committed_tail: Vec::new(),
            hypothesis: Vec::new(),
            interim_since_final: false,
            next_id: 0,
            in_flight: None,
            hypothesis_settles: false,
            decoded_until: origin,
            retried_at: None,
            utterance_open: false,
            flushes: std::collections::VecDeque::new(),
            deferred: Vec::new(),
            n_vad_windows: 0,
            in_speech: false,
            interim_step_scale: 1.0,
            silence_run_s: 0.0,
            speech_start: origin,
            last_speech_end: origin,
            spans: Vec::new(),
            utterance_end_marked: true,
            utterance_has_words: false,
            last_word_end: origin,
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
        recognizer.last_word_end = point.context.last().map_or(committed_until, |w| w.end);
        recognizer.utterance_open = point.utterance_open;
        recognizer.utterance_has_words = point.utterance_open;
        recognizer.replayed_until = committed_until;
        recognizer
    }

    /// Still receiving the audio of a resumed stream's context.
    fn replaying(&self) -> bool {
        self.audio_end() < self.replayed_until - 1e-6
    }

    /// Timeline position of the end of the audio received.
    pub fn audio_end(&self) -> f64 {
        self.at_sample(self.n_received)
    }

    /// Timeline position of the buffer's first sample.
    fn buffer_start(&self) -> f64 {
        self.at_sample(self.n_dropped)
    }

    /// Timeline position of the stream's `n`th sample.
    fn at_sample(&self, n: u64) -> f64 {
        self.origin + n as f64 / SAMPLE_RATE
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
        self.n_received += samples.len() as u64;
        self.buffer.extend_from_slice(samples);
        let mut events = Vec::new();
        for &prob in vad_probs {
            let window_start = self.at_sample(self.n_vad_windows * VAD_WINDOW as u64);
            self.n_vad_windows += 1;
            let window_end = self.at_sample(self.n_vad_windows * VAD_WINDOW as u64);
            self.on_vad_window(window_start, window_end, prob, &mut events);
        }
        self.trim_silence();
        self.try_complete_flush(&mut events);
        events
    }

    fn on_vad_window(&mut self, window_start: f64, window_end: f64, prob: f32, events: &mut Vec<Event>) {
        let neg_threshold = (self.config.vad_threshold - 0.15).max(0.01);
        // Audio a resumed stream heard before: its speech is known, its events were sent.
        let replayed = window_end <= self.replayed_until + 1e-9;
        if prob >= self.config.vad_threshold {
            if !self.in_speech {
                self.in_speech = true;
                self.speech_start = window_start;
                self.utterance_end_marked = false;
                if self.config.vad_events && !replayed {
                    events.push(Event::SpeechStarted { timestamp: round3(window_start) });
                }
            }
            self.silence_run_s = 0.0;
            self.last_speech_end = window_end;
            return;
        }
        if self.in_speech {
            if prob < neg_threshold {
                self.silence_run_s += VAD_WINDOW_S;
            } else {
                // Between the thresholds: still speech, the silence run starts over.
                self.silence_run_s = 0.0;
                self.last_speech_end = window_end;
            }
            if self.silence_run_s >= self.endpoint_after_s() {
                self.in_speech = false;
                self.spans.push((self.speech_start, self.last_speech_end));
                if replayed {
                    self.utterance_end_marked = true;
                    return;
                }
                let utterance_end = self.config.endpointing_ms.is_none() && self.config.utterance_end_ms.is_some();
                self.utterance_end_marked = utterance_end;
                self.flushes.push_back(Flush {
                    until: window_end,
                    speech_end: self.last_speech_end,
                    speech_final: self.config.endpointing_ms.is_some(),
                    from_finalize: false,
                    utterance_end,
                });
            }
            return;
        }
        // Silence after an utterance: UtteranceEnd once the gap is long enough.
        if replayed {
            return;
        }
        if let Some(ms) = self.config.utterance_end_ms {
            if !self.utterance_end_marked && window_end - self.last_speech_end >= f64::from(ms) / 1000.0 {
                self.utterance_end_marked = true;
                match self.flushes.back_mut() {
                    Some(flush) => flush.utterance_end = true,
                    None => self.emit_utterance_end(events),
                }
            }
        }
    }

    /// Silence that ends an utterance: `endpointing`, else `utterance_end_ms`, else one second (the
    /// buffer must still be settled at pauses when the client asked for no endpointing).
    fn endpoint_after_s(&self) -> f64 {
        match (self.config.endpointing_ms, self.config.utterance_end_ms) {
            (Some(ms), _) => f64::from(ms) / 1000.0,
            (None, Some(ms)) => f64::from(ms) / 1000.0,
            (None, None) => 1.0,
        }
    }

    fn emit_utterance_end(&mut self, events: &mut Vec<Event>) {
        if self.utterance_has_words {
            self.utterance_has_words = false;
            events.push(Event::UtteranceEnd { last_word_end: round3(self.last_word_end) });
        }
    }

    /// Finalize or CloseStream: everything received becomes final.
    pub fn finalize(&mut self, from_finalize: bool) -> Vec<Event> {
        let end = self.audio_end();
        if self.in_speech {
            // The utterance is cut here; speech that goes on afterwards is a new one.
            self.spans.push((self.speech_start, end));
            self.in_speech = false;
            self.silence_run_s = 0.0;
            self.utterance_end_marked = true;
        }
        self.flushes.push_back(Flush {
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

    /// Seconds of VAD speech within `[from, to)`.
    fn speech_duration(&self, from: f64, to: f64) -> f64 {
        let open = self.in_speech.then_some((self.speech_start, self.audio_end()));
        self.spans.iter().copied().chain(open).map(|(start, end)| (end.min(to) - start.max(from)).max(0.0)).sum()
    }

    /// Whether VAD speech overlaps `[from, to)` on the timeline.
    fn speech_in(&self, from: f64, to: f64) -> bool {
        let open = self.in_speech.then_some((self.speech_start, f64::INFINITY));
        self.spans.iter().copied().chain(open).any(|(start, end)| start < to && end > from)
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
    fn horizon(&self) -> f64 {
        let window_end = self.audio_end().min(self.buffer_start() + self.config.max_buffer_s);
        let Some(front) = self.flushes.front() else {
            return window_end;
        };
        let mut last_in_window = None;
        for (idx, flush) in self.flushes.iter().enumerate() {
            if flush.until > window_end + 1e-9 {
                break;
            }
            last_in_window = Some(flush.until);
            let next_speech =
                self.spans.iter().map(|s| s.0).filter(|&start| start >= flush.speech_end).reduce(f64::min);
            let joined = idx + 1 < self.flushes.len()
                && next_speech.is_some_and(|start| start - flush.speech_end < CONTEXT_GAP_S);
            if !joined {
                break;
            }
        }
        match last_in_window {
            Some(until) => until.max(self.buffer_start()),
            None => window_end.min(front.until.max(self.buffer_start())),
        }
    }

    /// Whether speech is going on at the end of the audio received.
    pub fn in_speech(&self) -> bool {
        self.in_speech
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
        let paused = self.in_speech
            && self.silence_run_s >= self.config.pause_s
            && self.decoded_until < self.last_speech_end
            && horizon >= self.last_speech_end;
        // Speech long enough for agreement to finalize words: those decodes get the better beam,
        // since what they agree on becomes final without a second look.
        let long_pending = self.hypothesis.first().is_some_and(|w| {
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
                Some(onset) if self.hypothesis.is_empty() => {
                    self.decoded_until.max(onset) + self.config.first_step_s.min(self.config.step_s)
                }
                _ if long_pending => self.decoded_until + self.config.step_s,
                _ => self.decoded_until + self.config.step_s * self.interim_step_scale,
            };
            horizon >= due_after - 1e-9 || paused
        };
        let n_samples =
            (((horizon - self.buffer_start()) * SAMPLE_RATE).round().max(0.0) as usize).min(self.buffer.len());
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
        let prefix: Vec<u32> = self.in_buffer.iter().flat_map(|w| w.tokens.iter().copied()).collect();
        let request = DecodeRequest {
            id: self.next_id,
            samples: self.buffer[..n_samples].to_vec(),
            offset: self.buffer_start(),
            prompt: self.prompt.clone(),
            reason,
            prefix,
            prefix_end: self.in_buffer.back().map_or(0.0, |w| (w.end - self.buffer_start()).max(0.0)),
        };
        self.in_flight = Some((self.next_id, self.at_sample(self.n_dropped + n_samples as u64), request.settles()));
        NextDecode::Start(request)
    }

    /// Start of the first speech (closed span or the open one) that is not all committed.
    fn next_speech_start(&self) -> Option<f64> {
        let open = self.in_speech.then_some(self.speech_start);
        self.spans.iter().filter(|s| s.1 > self.committed_until).map(|s| s.0).chain(open).min_by(f64::total_cmp)
    }

    /// The buffer keeps the previous utterance's audio as context only across a short pause: when
    /// the next speech starts [`CONTEXT_GAP_S`] or more after the last committed speech, the buffer
    /// starts a short lead-in before it (also when the audio came faster than real time). A buffer
    /// without committed speech starts the same lead-in before its speech, whatever silence the
    /// chunking left in it, so the same audio makes the same windows sent at any pace (and resumed).
    fn drop_stale_context(&mut self) {
        if self.config.context_s <= 0.0 {
            return;
        }
        // A speech span that reaches past the commit has uncommitted words: it is the next speech,
        // and the lead-in kept before its start keeps all of it.
        let Some(next_start) = self.next_speech_start() else {
            return;
        };
        let no_context = self.buffer_start() >= self.committed_until - 1e-6;
        let previous_end =
            self.spans.iter().map(|s| s.1).filter(|&end| end <= self.committed_until + 1e-6).max_by(f64::total_cmp);
        if no_context || previous_end.is_none_or(|end| next_start - end >= CONTEXT_GAP_S) {
            let keep_from = next_start - LEAD_IN_S;
            if keep_from > self.buffer_start() + 1e-3 {
                self.trim_to(keep_from);
            }
        }
    }

    /// The decode window is as long as the model takes and has been decoded: nothing more can be
    /// seen without moving the buffer.
    fn window_full(&self, horizon: f64) -> bool {
        horizon - self.buffer_start() >= self.config.max_buffer_s - 1e-6 && self.decoded_until >= horizon - 1e-6
    }

    /// Speech that went on for a whole window without agreement: the hypothesis' older words become
    /// final and the buffer moves on (the events go out with the next send).
    fn force_progress(&mut self) {
        let keep_from = self.buffer_start() + self.config.max_buffer_s - self.config.trim_s.min(8.0);
        let (mut old, mut young): (Vec<Word>, Vec<Word>) =
            std::mem::take(&mut self.hypothesis).into_iter().partition(|w| w.end <= keep_from);
        if let Some(idx) = old.iter().rposition(|w| ends_sentence(&w.text)) {
            let unfinished = old.split_off(idx + 1);
            young.splice(0..0, unfinished);
        }
        self.hypothesis = young;
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
        let hypothesis = self.fresh_words(words, !self.in_buffer.is_empty());

        if self
            .flushes
            .front()
            .is_some_and(|f| self.decoded_until >= f.speech_end - 1e-6 && f.until <= audio_end + 1e-9)
        {
            self.hypothesis = hypothesis;
            self.try_complete_flush(&mut events);
            return events;
        }
        // Local agreement: the prefix both hypotheses share is stable.
        let pending_from = hypothesis.first().map_or(self.decoded_until, |w| w.start.max(self.committed_until));
        let settled_before = if self.decoded_until - pending_from >= self.config.agreement_after_s {
            self.decoded_until - self.config.commit_lag_s
        } else {
            f64::NEG_INFINITY
        };
        let n_agreed = self
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
            self.commit(hypothesis, end, false, false, &mut events);
        }
        self.hypothesis = rest;
        self.send_interim(&mut events);
        if (committed && at_sentence_end && self.config.seek_at_sentence_ends)
            || self.decoded_until - self.buffer_start() > self.config.trim_s
        {
            // Whisper's long-form loop: the next window starts at a sentence start, here with the
            // committed sentences in it forced as the prefix.
            self.keep_context();
        }
        self.try_complete_flush(&mut events);
        events
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
    fn fresh_words(&self, words: Vec<Word>, had_prefix: bool) -> Vec<Word> {
        let pad = self.config.speech_pad_s;
        let boundary = self.committed_until;
        let mut words: Vec<Word> = words.into_iter().filter(|w| !w.text.trim().is_empty()).collect();
        if had_prefix {
            words.retain(|w| self.speech_in(w.start - pad, w.end + pad));
            return words;
        }
        let holds_committed_audio = self.buffer_start() < boundary - 0.05;
        let anchor = match (holds_committed_audio, self.committed_tail.last()) {
            (true, Some(last)) => words.iter().rposition(|w| {
                w.start < boundary + 0.25 && w.end > boundary - 1.5 && aldea_proto::bare_word(&w.text) == *last
            }),
            _ => None,
        };
        let mut fresh: Vec<Word> = match anchor {
            Some(idx) => words.into_iter().skip(idx + 1).collect(),
            None => {
                let mut fresh: Vec<Word> = words.into_iter().filter(|w| w.start >= boundary - 0.1).collect();
                let tail = &self.committed_tail;
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

    /// Completes the flushes at the front whose audio has been decoded (or holds no speech).
    fn try_complete_flush(&mut self, events: &mut Vec<Event>) {
        while let Some(&flush) = self.flushes.front() {
            if self.in_flight.is_some() {
                return;
            }
            // The last decode heard this utterance whole: it ended inside the closing silence, or at
            // a later utterance's flush point (words after `until` stay for that one). A flush queued
            // after a decode started lies past its end, so one ending at a queued point chose it.
            let at_flush_point = self.flushes.iter().any(|f| (f.until - self.decoded_until).abs() < 1e-3);
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
            let said_nothing = !self.hypothesis.iter().any(|w| w.start < until);
            if said_nothing
                && !self.in_buffer.is_empty()
                && self.speech_duration(self.committed_until, flush.speech_end) >= SILENT_PREFIX_RETRY_S
                && self.retried_at.is_none_or(|at| self.committed_until > at + 1e-6)
            {
                self.retried_at = Some(self.committed_until);
                self.drop_context();
                self.decoded_until = self.committed_until.max(self.buffer_start());
                return;
            }
            // Whisper sometimes ends its transcript early (a timestamp, then end of text) with speech
            // left in the window; its long-form loop seeks there and decodes the rest. So here: what
            // it said becomes final and the rest is decoded once more, with it as the prefix.
            let heard_until =
                self.hypothesis.iter().filter(|w| w.start < until).map(|w| w.end).fold(self.committed_until, f64::max);
            let unheard = self.speech_duration(heard_until + self.config.speech_pad_s, flush.speech_end);
            if unheard >= UNHEARD_SPEECH_S && self.retried_at.is_none_or(|at| heard_until > at + 1e-6) {
                self.retried_at = Some(heard_until);
                let (words, later): (Vec<Word>, Vec<Word>) =
                    std::mem::take(&mut self.hypothesis).into_iter().partition(|w| w.start < until);
                self.hypothesis = later;
                if !words.is_empty() {
                    self.commit(words, heard_until, false, false, events);
                }
                self.keep_context();
                self.decoded_until = self.committed_until.max(self.buffer_start());
                return;
            }
            self.flushes.pop_front();
            let (words, later): (Vec<Word>, Vec<Word>) =
                std::mem::take(&mut self.hypothesis).into_iter().partition(|w| w.start < until);
            self.hypothesis = later;
            // An utterance whose words all went out in earlier finals (agreement, a continued decode)
            // still ends with a `speech_final`, empty.
            if !words.is_empty() || flush.from_finalize || (flush.speech_final && self.utterance_open) {
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

    fn commit(
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
        if self.config.interim_results && !self.interim_since_final && !words.is_empty() {
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
            self.last_word_end = word.end;
        }
        if !words.is_empty() {
            self.utterance_has_words = true;
        }
        self.utterance_open = !speech_final && (self.utterance_open || !words.is_empty());
        self.committed_until = end;
        self.results_until = end;
        self.interim_since_final = false;
        events.push(Event::Results(ResultsEvent { start, end, words, is_final: true, speech_final, from_finalize }));
        let point = self.resume_point();
        self.resume_floor = point.audio_start;
        events.push(Event::Checkpoint(point));
    }

    fn send_interim(&mut self, events: &mut Vec<Event>) {
        if !self.config.interim_results || self.hypothesis.is_empty() {
            return;
        }
        self.interim_since_final = true;
        events.push(Event::Results(ResultsEvent {
            start: self.results_until,
            end: self.decoded_until.max(self.results_until),
            words: self.hypothesis.clone(),
            is_final: false,
            speech_final: false,
            from_finalize: false,
        }));
    }

    /// A committed word whose audio is in the buffer: the next decode's prefix, and the last of the
    /// committed tail (its last five words, bare) that a new hypothesis must not repeat.
    fn keep_committed(&mut self, start: f64, end: f64, tokens: &[u32], text: &str) {
        self.in_buffer.push_back(CommittedWord {
            start,
            end,
            tokens: tokens.to_vec(),
            ends_sentence: ends_sentence(text),
        });
        self.committed_tail.push(aldea_proto::bare_word(text));
        let excess = self.committed_tail.len().saturating_sub(5);
        self.committed_tail.drain(..excess);
    }

    /// Where a resumed stream picks up now: the committed words [`Recognizer::keep_context`] keeps
    /// as the next decode's prefix are heard again with their audio; the ones before are prompt.
    fn resume_point(&self) -> ResumePoint {
        let (mut first, mut audio_start) = match self.context_cut() {
            Some((idx, cut)) => (idx, cut.max(self.buffer_start())),
            None => (self.in_buffer.len(), self.committed_until),
        };
        if audio_start < self.resume_floor {
            audio_start = self.resume_floor.min(self.committed_until);
            while first < self.in_buffer.len() && self.in_buffer[first].start < audio_start - 1e-6 {
                first += 1;
            }
        }
        let mut prompt_tokens = self.prompt.clone();
        for word in self.in_buffer.iter().take(first) {
            prompt_tokens.extend_from_slice(&word.tokens);
        }
        let excess = prompt_tokens.len().saturating_sub(MAX_PROMPT_TOKENS);
        prompt_tokens.drain(..excess);
        let context = self
            .in_buffer
            .iter()
            .skip(first)
            .map(|w| ContextWord { start: w.start, end: w.end, tokens: w.tokens.clone(), text: String::new() })
            .collect();
        ResumePoint {
            committed_until: self.committed_until,
            audio_start,
            prompt_tokens,
            context,
            utterance_open: self.utterance_open,
        }
    }

    /// Drops buffered audio before `time` (never audio after it).
    fn trim_to(&mut self, time: f64) {
        let n = (((time - self.buffer_start()) * SAMPLE_RATE).round().max(0.0) as usize).min(self.buffer.len());
        self.buffer.drain(..n);
        self.n_dropped += n as u64;
        // A word that starts before the cut is the prompt's now (the audio of a word cut in two is
        // heard as a fragment, which the time rules of `fresh_words` handle).
        let n_cut = self.in_buffer.iter().take_while(|w| w.start < self.buffer_start() - 0.01).count();
        self.move_to_prompt(n_cut);
        let horizon = self.buffer_start() - self.config.speech_pad_s;
        self.spans.retain(|&(_, end)| end > horizon);
    }

    /// Drops every committed word's audio from the buffer: the next decode has no prefix.
    fn drop_context(&mut self) {
        self.trim_to(self.committed_until);
        self.move_to_prompt(self.in_buffer.len());
    }

    /// The first `n` committed words in the buffer become prompt text (at most
    /// [`MAX_PROMPT_TOKENS`] of it are kept).
    fn move_to_prompt(&mut self, n: usize) {
        for word in self.in_buffer.drain(..n) {
            self.prompt.extend(word.tokens);
        }
        let excess = self.prompt.len().saturating_sub(MAX_PROMPT_TOKENS);
        self.prompt.drain(..excess);
    }

    /// Keeps at most `context_s` of committed speech in the buffer (and at most
    /// [`MAX_PREFIX_TOKENS`] of its words): the buffer starts at the earliest sentence start that
    /// fits, else at the earliest word start that fits, else at the last commit.
    fn keep_context(&mut self) {
        match self.context_cut() {
            Some((0, _)) => {}
            Some((_, cut)) => self.trim_to(cut),
            None => self.trim_to(self.committed_until),
        }
    }

    /// The first committed word [`Recognizer::keep_context`] keeps in the buffer and where the
    /// buffer would start (`None`: none is kept, it starts at the commit).
    fn context_cut(&self) -> Option<(usize, f64)> {
        let words = &self.in_buffer;
        let fits = |idx: usize| {
            self.committed_until - words[idx].start <= self.config.context_s
                && words.iter().skip(idx).map(|w| w.tokens.len()).sum::<usize>() <= MAX_PREFIX_TOKENS
        };
        let sentence_start = |idx: usize| idx == 0 || words[idx - 1].ends_sentence;
        let first = (0..words.len())
            .find(|&idx| fits(idx) && sentence_start(idx))
            .or_else(|| (0..words.len()).find(|&idx| fits(idx)));
        match first? {
            0 => Some((0, self.buffer_start())),
            // Between the last word dropped and the first kept.
            idx => Some((idx, (words[idx - 1].end.max(words[idx].start - 0.1)).min(words[idx].start))),
        }
    }

    /// In silence with nothing left to finalize, keep only a short lead-in for the next speech (the
    /// VAD notices speech a little late).
    fn trim_silence(&mut self) {
        if !self.replaying()
            && self.flushes.is_empty()
            && self.in_flight.is_none()
            && self.hypothesis.is_empty()
            && !self.speech_in(self.committed_until, self.audio_end())
            && self.audio_end() - self.last_speech_end >= CONTEXT_GAP_S.min(self.config.context_s)
        {
            let keep_from = self.audio_end() - LEAD_IN_S;
            if keep_from > self.buffer_start() + 0.1 {
                self.trim_to(keep_from);
            }
        }
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
