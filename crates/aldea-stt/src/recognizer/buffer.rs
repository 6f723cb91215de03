//! The audio buffer: the received audio still to be decoded (and the committed audio kept before
//! it as left context), the committed words in that audio (the next decode's prefix) and the
//! committed text before it (the prompt); trimming, and how much context is kept.
//!
//! [`AudioBuffer`] keeps:
//! - The stream's sample `n` lies at `origin + n / SAMPLE_RATE` on the timeline; `samples` holds
//!   the samples from `n_dropped` to `n_received`, so the buffer's start is derived from the count
//!   dropped and never drifts from the end of the audio or a decode's end.
//! - Audio leaves only from the front ([`AudioBuffer::drop_before`]), never after the time asked.
//! - `in_buffer` holds committed words in the order they were committed; a trim moves those at its
//!   front that start before the cut (less 10 ms; also a word cut in two) to the prompt. Text
//!   committed from audio still in the buffer is not in the prompt (the model hears that audio
//!   again; prompting with it too makes the model skip it and misplace what follows).
//! - Words moving to the prompt leave it at most [`MAX_PROMPT_TOKENS`] long (its last tokens).

use std::collections::VecDeque;

use super::{
    ContextWord, DecodeReason, DecodeRequest, Recognizer, ResumePoint, CONTEXT_GAP_S, LEAD_IN_S, MAX_PROMPT_TOKENS,
    SAMPLE_RATE,
};

/// Most tokens of committed words kept in the buffer as a forced prefix (the runtime decodes at
/// most 224 tokens after the prompt, prefix included).
const MAX_PREFIX_TOKENS: usize = 96;

/// A committed word whose audio is still in the buffer.
#[derive(Debug, Clone, PartialEq)]
struct CommittedWord {
    start: f64,
    end: f64,
    tokens: Vec<u32>,
    ends_sentence: bool,
}

#[derive(Debug)]
pub(super) struct AudioBuffer {
    /// Timeline position of the first sample (a resumed stream starts later than 0).
    origin: f64,
    n_received: u64,
    samples: Vec<f32>,
    /// Samples dropped from the front of the buffer: its start is derived from this count
    /// ([`AudioBuffer::start`]), so it never drifts from `end` and decode ends. Written only here
    /// (a unit test sets it).
    pub(super) n_dropped: u64,
    /// Token ids of committed text whose audio lies before the buffer: the decoding prompt.
    prompt: Vec<u32>,
    /// Committed words whose audio is inside the buffer (the next decode's prefix), moved to
    /// `prompt` by trims.
    in_buffer: VecDeque<CommittedWord>,
}

impl AudioBuffer {
    pub(super) fn new(origin: f64, prompt: Vec<u32>) -> AudioBuffer {
        AudioBuffer { origin, n_received: 0, samples: Vec::new(), n_dropped: 0, prompt, in_buffer: VecDeque::new() }
    }

    /// Appends received audio.
    pub(super) fn push(&mut self, samples: &[f32]) {
        self.n_received += samples.len() as u64;
        self.samples.extend_from_slice(samples);
    }

    /// Timeline position of the stream's `n`th sample.
    pub(super) fn at_sample(&self, n: u64) -> f64 {
        self.origin + n as f64 / SAMPLE_RATE
    }

    /// Timeline position of the end of the audio received.
    pub(super) fn end(&self) -> f64 {
        self.at_sample(self.n_received)
    }

    /// Timeline position of the buffer's first sample.
    pub(super) fn start(&self) -> f64 {
        self.at_sample(self.n_dropped)
    }

    /// Timeline position after the buffer's first `n` samples.
    pub(super) fn after_samples(&self, n: usize) -> f64 {
        self.at_sample(self.n_dropped + n as u64)
    }

    /// Samples in the buffer before `time` (at most all of them).
    pub(super) fn samples_before(&self, time: f64) -> usize {
        (((time - self.start()) * SAMPLE_RATE).round().max(0.0) as usize).min(self.samples.len())
    }

    /// Drops buffered audio before `time` (never audio after it); a committed word that starts
    /// before the cut is the prompt's now (the audio of a word cut in two is heard as a fragment,
    /// which the time rules of `fresh_words` handle).
    pub(super) fn drop_before(&mut self, time: f64) {
        let n = self.samples_before(time);
        self.samples.drain(..n);
        self.n_dropped += n as u64;
        let n_cut = self.in_buffer.iter().take_while(|w| w.start < self.start() - 0.01).count();
        self.move_to_prompt(n_cut);
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

    /// Every committed word in the buffer becomes prompt text.
    pub(super) fn move_all_to_prompt(&mut self) {
        self.move_to_prompt(self.in_buffer.len());
    }

    /// A committed word whose audio is in the buffer (after those already there).
    pub(super) fn keep_word(&mut self, start: f64, end: f64, tokens: &[u32], ends_sentence: bool) {
        self.in_buffer.push_back(CommittedWord { start, end, tokens: tokens.to_vec(), ends_sentence });
    }

    /// Committed words are in the buffer: the next decode has a prefix.
    pub(super) fn has_context(&self) -> bool {
        !self.in_buffer.is_empty()
    }

    /// The buffer's first `n_samples` as decode `id`, prompted with the prompt and given the
    /// committed words in the buffer as its prefix.
    pub(super) fn decode_request(&self, id: u64, n_samples: usize, reason: DecodeReason) -> DecodeRequest {
        let prefix: Vec<u32> = self.in_buffer.iter().flat_map(|w| w.tokens.iter().copied()).collect();
        DecodeRequest {
            id,
            samples: self.samples[..n_samples].to_vec(),
            offset: self.start(),
            prompt: self.prompt.clone(),
            reason,
            prefix,
            prefix_end: self.in_buffer.back().map_or(0.0, |w| (w.end - self.start()).max(0.0)),
        }
    }
}

impl Recognizer {
    /// Where a resumed stream picks up now: the committed words [`Recognizer::keep_context`] keeps
    /// as the next decode's prefix are heard again with their audio; the ones before are prompt.
    pub(super) fn resume_point(&self) -> ResumePoint {
        let in_buffer = &self.audio.in_buffer;
        let (mut first, mut audio_start) = match self.context_cut() {
            Some((idx, cut)) => (idx, cut.max(self.buffer_start())),
            None => (in_buffer.len(), self.committed_until),
        };
        if audio_start < self.resume_floor {
            audio_start = self.resume_floor.min(self.committed_until);
            while first < in_buffer.len() && in_buffer[first].start < audio_start - 1e-6 {
                first += 1;
            }
        }
        let mut prompt_tokens = self.audio.prompt.clone();
        for word in in_buffer.iter().take(first) {
            prompt_tokens.extend_from_slice(&word.tokens);
        }
        let excess = prompt_tokens.len().saturating_sub(MAX_PROMPT_TOKENS);
        prompt_tokens.drain(..excess);
        let context = in_buffer
            .iter()
            .skip(first)
            .map(|w| ContextWord { start: w.start, end: w.end, tokens: w.tokens.clone(), text: String::new() })
            .collect();
        ResumePoint {
            committed_until: self.committed_until,
            audio_start,
            prompt_tokens,
            context,
            utterance_open: self.flushes.utterance_open(),
        }
    }

    /// Drops buffered audio before `time` (never audio after it), and the speech spans behind it.
    pub(super) fn trim_to(&mut self, time: f64) {
        self.audio.drop_before(time);
        let horizon = self.buffer_start() - self.config.speech_pad_s;
        self.speech.forget_before(horizon);
    }

    /// Drops every committed word's audio from the buffer: the next decode has no prefix.
    pub(super) fn drop_context(&mut self) {
        self.trim_to(self.committed_until);
        self.audio.move_all_to_prompt();
    }

    /// Keeps at most `context_s` of committed speech in the buffer (and at most
    /// [`MAX_PREFIX_TOKENS`] of its words): the buffer starts at the earliest sentence start that
    /// fits, else at the earliest word start that fits, else at the last commit.
    pub(super) fn keep_context(&mut self) {
        match self.context_cut() {
            Some((0, _)) => {}
            Some((_, cut)) => self.trim_to(cut),
            None => self.trim_to(self.committed_until),
        }
    }

    /// The first committed word [`Recognizer::keep_context`] keeps in the buffer and where the
    /// buffer would start (`None`: none is kept, it starts at the commit).
    fn context_cut(&self) -> Option<(usize, f64)> {
        let words = &self.audio.in_buffer;
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
    pub(super) fn trim_silence(&mut self) {
        if !self.replaying()
            && self.flushes.is_empty()
            && self.in_flight.is_none()
            && self.agreement.hypothesis().is_empty()
            && !self.speech_in(self.committed_until, self.audio_end())
            && self.audio_end() - self.speech.last_speech_end() >= CONTEXT_GAP_S.min(self.config.context_s)
        {
            let keep_from = self.audio_end() - LEAD_IN_S;
            if keep_from > self.buffer_start() + 0.1 {
                self.trim_to(keep_from);
            }
        }
    }

    /// The buffer keeps the previous utterance's audio as context only across a short pause: when
    /// the next speech starts [`CONTEXT_GAP_S`] or more after the last committed speech, the buffer
    /// starts a short lead-in before it (also when the audio came faster than real time). A buffer
    /// without committed speech starts the same lead-in before its speech, whatever silence the
    /// chunking left in it, so the same audio makes the same windows sent at any pace (and resumed).
    pub(super) fn drop_stale_context(&mut self) {
        if self.config.context_s <= 0.0 {
            return;
        }
        // A speech span that reaches past the commit has uncommitted words: it is the next speech,
        // and the lead-in kept before its start keeps all of it.
        let Some(next_start) = self.next_speech_start() else {
            return;
        };
        let no_context = self.buffer_start() >= self.committed_until - 1e-6;
        let previous_end = self.speech.committed_speech_end(self.committed_until);
        if no_context || previous_end.is_none_or(|end| next_start - end >= CONTEXT_GAP_S) {
            let keep_from = next_start - LEAD_IN_S;
            if keep_from > self.buffer_start() + 1e-3 {
                self.trim_to(keep_from);
            }
        }
    }
}
