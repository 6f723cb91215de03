//! The failover replay buffer: the client's audio a stream keeps so that another stt replica can
//! take it over — the input's first bytes (a container header) and every byte since the last resume
//! point stt reported in its checkpoints — and where that replica resumes ([`ResumePoint`]).
//!
//! Invariant: pure (no I/O, no clock); holds at most [`HEAD_KEEP`] header bytes and [`MAX_REPLAY`]
//! bytes of input, and past that bound gives the replay up for good (the stream goes on without
//! failover) rather than keep more; what precedes the resume point is freed at each checkpoint; a
//! replay, when there is one, is exactly the header the point needs followed by the input from the
//! point on.

use std::collections::VecDeque;

use aldea_proto::stream::{Checkpoint, Resume};
use axum::body::Bytes;

/// Leading input bytes kept for a header.
const HEAD_KEEP: usize = 64 * 1024;
/// Most input bytes kept for a replay: the bound of a stream's memory in the gateway. A headerless
/// stream is trimmed at every checkpoint (seconds of audio); a container that cannot restart in
/// the middle keeps its whole input, up to this (about 35 min of 64-kbit/s Opus), and past it goes
/// on without failover.
const MAX_REPLAY: u64 = 16 * 1024 * 1024;

/// Where a stream can restart on another replica: from the input at absolute byte `offset` (after
/// the first `header` bytes of the input), with the timeline at `start` and the prompt `tokens`.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct ResumePoint {
    pub(crate) offset: u64,
    pub(crate) header: u64,
    /// Timeline seconds of the audio at `offset`.
    pub(crate) start: f64,
    /// Where stt said a stream resumed here starts ([`Checkpoint::resume`]); `None`: replay from
    /// the start.
    pub(crate) resume: Option<Resume>,
}

/// The client's audio kept for a failover: the input's first bytes (a container header) and every
/// byte since the last resume point; bounded, and given up (no failover) past the bound.
#[derive(Debug, Default)]
pub(crate) struct Replay {
    head: Vec<u8>,
    chunks: VecDeque<Bytes>,
    /// Absolute offset of the first byte in `chunks`.
    chunks_start: u64,
    received: u64,
    point: ResumePoint,
    /// The current upstream's input: the absolute offset it began at and the header bytes sent
    /// before it (its own offsets map back through these).
    upstream_input: (u64, u64),
    overflowed: bool,
}

impl Replay {
    /// Keeps a piece of the client's input.
    pub(crate) fn push(&mut self, bytes: &Bytes) {
        if self.head.len() < HEAD_KEEP {
            let take = (HEAD_KEEP - self.head.len()).min(bytes.len());
            self.head.extend_from_slice(&bytes[..take]);
        }
        self.received += bytes.len() as u64;
        if self.overflowed {
            return;
        }
        self.chunks.push_back(bytes.clone());
        if self.received - self.chunks_start > MAX_REPLAY {
            self.overflowed = true;
            self.chunks.clear();
        }
    }

    /// A checkpoint from the current upstream moves the resume point (and frees what precedes it).
    pub(crate) fn checkpoint(&mut self, checkpoint: &Checkpoint) {
        let (input_start, input_header) = self.upstream_input;
        match checkpoint.byte_offset {
            Some(offset) => {
                self.point = ResumePoint {
                    offset: input_start + offset.saturating_sub(input_header),
                    header: checkpoint.header_bytes,
                    start: checkpoint.resume_start(),
                    resume: Some(checkpoint.resume()),
                };
                self.trim_to(self.point.offset);
            }
            // The format cannot restart in the middle: the whole input is replayed from the start
            // and what was already final is dropped on the way out.
            None => self.point = ResumePoint::default(),
        }
    }

    /// Where a replica taking the stream over now resumes.
    pub(crate) fn point(&self) -> &ResumePoint {
        &self.point
    }

    /// A replica took the stream over from `point`: the offsets of its checkpoints count from
    /// there, after the header it was sent first.
    pub(crate) fn restarted_at(&mut self, point: &ResumePoint) {
        self.upstream_input = (point.offset, if point.offset > 0 { point.header } else { 0 });
    }

    fn trim_to(&mut self, offset: u64) {
        while let Some(front) = self.chunks.front_mut() {
            let end = self.chunks_start + front.len() as u64;
            if end <= offset {
                self.chunks_start = end;
                self.chunks.pop_front();
            } else {
                if self.chunks_start < offset {
                    let cut = (offset - self.chunks_start) as usize;
                    *front = front.slice(cut..);
                    self.chunks_start = offset;
                }
                break;
            }
        }
    }

    /// What a new upstream is sent: the header, then the input from the resume point; `None` when
    /// the input needed is no longer kept.
    pub(crate) fn replay(&self) -> Option<Vec<Bytes>> {
        if self.overflowed || self.chunks_start > self.point.offset {
            return None;
        }
        let header = usize::try_from(self.point.header).ok()?;
        if header > self.head.len() {
            return None;
        }
        let mut out = Vec::new();
        if header > 0 && self.point.offset > 0 {
            out.push(Bytes::copy_from_slice(&self.head[..header]));
        }
        let mut position = self.chunks_start;
        for chunk in &self.chunks {
            let end = position + chunk.len() as u64;
            if end > self.point.offset {
                let skip = self.point.offset.saturating_sub(position) as usize;
                out.push(chunk.slice(skip..));
            }
            position = end;
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use aldea_proto::stream::{ContextWord, CHECKPOINT_TYPE};

    use super::*;

    fn checkpoint(committed_until: f64, byte_offset: Option<u64>) -> Checkpoint {
        Checkpoint {
            kind: CHECKPOINT_TYPE.to_owned(),
            committed_until,
            byte_offset,
            header_bytes: 0,
            prompt: String::new(),
            prompt_tokens: vec![1, 2],
            audio_start: None,
            context: Vec::new(),
            utterance_open: false,
        }
    }

    fn concat(chunks: &[Bytes]) -> Vec<u8> {
        chunks.iter().flat_map(|c| c.iter().copied()).collect()
    }

    fn input(len: u32) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    #[test]
    fn the_replay_starts_at_the_last_checkpoint_whatever_the_chunking() {
        let input = input(10_000);
        let mut replay = Replay::default();
        for chunk in input.chunks(333) {
            replay.push(&Bytes::copy_from_slice(chunk));
        }
        assert_eq!(concat(&replay.replay().unwrap()), input, "before any checkpoint: everything");
        replay.checkpoint(&checkpoint(0.1, Some(3200)));
        assert_eq!(concat(&replay.replay().unwrap()), input[3200..]);
        assert_eq!(replay.chunks_start, 3200, "what precedes the point is freed");
        // A replacement stream's offsets count from where its input began.
        let point = replay.point().clone();
        replay.restarted_at(&point);
        replay.checkpoint(&checkpoint(0.2, Some(1000)));
        assert_eq!(replay.point().offset, 4200);
        assert_eq!(concat(&replay.replay().unwrap()), input[4200..]);
        assert_eq!(replay.point().resume.as_ref().map(Resume::to_header).unwrap(), "start=0.2&prompt_tokens=1,2");
        // A checkpoint that restarts at its context: the replay and the timeline begin there.
        let with_context = Checkpoint {
            audio_start: Some(0.22),
            context: vec![ContextWord { start: 0.23, end: 0.24, tokens: vec![5] }],
            ..checkpoint(0.25, Some(1640))
        };
        replay.checkpoint(&with_context);
        assert_eq!((replay.point().offset, replay.point().start), (4840, 0.22));
        assert_eq!(concat(&replay.replay().unwrap()), input[4840..]);
        let header = replay.point().resume.as_ref().map(Resume::to_header).unwrap();
        assert!(header.starts_with("start=0.22&committed_until=0.25&"), "{header}");
        // A format that cannot restart mid-stream has nothing to replay once trimmed.
        replay.checkpoint(&checkpoint(0.3, None));
        assert!(replay.replay().is_none());
    }

    #[test]
    fn a_replay_past_a_header_sends_the_header_first_and_offsets_count_after_it() {
        // A 44-byte header, then audio; stt restarts at byte 1044 of its input.
        let input = input(5_000);
        let mut replay = Replay::default();
        for chunk in input.chunks(500) {
            replay.push(&Bytes::copy_from_slice(chunk));
        }
        replay.checkpoint(&Checkpoint { header_bytes: 44, ..checkpoint(0.5, Some(1044)) });
        let sent = replay.replay().unwrap();
        assert_eq!(&sent[0][..], &input[..44], "the header first");
        assert_eq!(concat(&sent[1..]), input[1044..]);
        // The replacement was sent 44 header bytes and then the input from 1044: its offset 544 is
        // the input's 1544.
        let point = replay.point().clone();
        replay.restarted_at(&point);
        replay.checkpoint(&Checkpoint { header_bytes: 44, ..checkpoint(0.6, Some(544)) });
        assert_eq!(replay.point().offset, 1544);
        assert_eq!(concat(&replay.replay().unwrap()[1..]), input[1544..]);
    }

    #[test]
    fn past_its_bound_the_replay_is_given_up_and_only_the_head_is_kept() {
        let mut replay = Replay::default();
        let chunk = Bytes::from(vec![7u8; 1024 * 1024]);
        for _ in 0..16 {
            replay.push(&chunk);
        }
        assert!(replay.replay().is_some(), "16 MiB are kept");
        replay.push(&Bytes::from_static(b"x"));
        assert!(replay.replay().is_none(), "one byte more and there is no failover");
        assert!(replay.chunks.is_empty(), "the input is freed");
        assert_eq!(replay.head.len(), HEAD_KEEP);
        // A checkpoint later does not bring it back: the bytes before it are gone.
        replay.checkpoint(&checkpoint(1.0, Some(16 * 1024 * 1024)));
        assert!(replay.replay().is_none());
    }
}
