//! Incremental decoding for streams: bytes in, PCM out as soon as a frame is decodable.
//!
//! Headerless PCM, G.711 and WAV (also of unknown length) are framed here. Containers (WebM/Matroska,
//! OGG, FLAC, MP3, ADTS) are demuxed by symphonia, whose readers pull bytes: each stream gets one helper
//! thread that reads from what [`StreamDecoder::push`] hands over and reports back when it has used
//! every byte, so `push` returns exactly the PCM the bytes so far allow — the same PCM however the
//! stream was cut into chunks. MP4/M4A cannot stream when its index is at the end: it is buffered (up
//! to the byte limit) and decoded by [`StreamDecoder::finish`].

use std::io::Read;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Mutex;
use std::thread::JoinHandle;

use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::io::{MediaSourceStream, ReadOnlySource};

use crate::{
    alaw_to_linear, decode_with, detect, mulaw_to_linear, open_track, symphonia_error, AudioError, Container,
    DecodeOptions, Encoding, OpenedTrack,
};

/// A piece of decoded audio: planar samples at `sample_rate`.
#[derive(Debug, Clone, PartialEq)]
pub struct Pcm {
    pub sample_rate: u32,
    pub channels: Vec<Vec<f32>>,
}

impl Pcm {
    pub fn n_frames(&self) -> usize {
        self.channels.first().map_or(0, Vec::len)
    }

    fn append(&mut self, other: Pcm) {
        if self.channels.is_empty() {
            *self = other;
            return;
        }
        for (mine, theirs) in self.channels.iter_mut().zip(other.channels) {
            mine.extend(theirs);
        }
    }
}

/// Sample layouts that WAV and headerless streams carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SampleFormat {
    U8,
    S16,
    S24,
    S32,
    F32,
    Mulaw,
    Alaw,
}

impl SampleFormat {
    fn bytes(self) -> usize {
        match self {
            SampleFormat::U8 | SampleFormat::Mulaw | SampleFormat::Alaw => 1,
            SampleFormat::S16 => 2,
            SampleFormat::S24 => 3,
            SampleFormat::S32 | SampleFormat::F32 => 4,
        }
    }

    fn sample(self, b: &[u8]) -> f32 {
        match self {
            SampleFormat::U8 => (f32::from(b[0]) - 128.0) / 128.0,
            SampleFormat::S16 => f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0,
            SampleFormat::S24 => (i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) as f32 / 8_388_608.0,
            SampleFormat::S32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32 / 2_147_483_648.0,
            SampleFormat::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            SampleFormat::Mulaw => f32::from(mulaw_to_linear(b[0])) / 32768.0,
            SampleFormat::Alaw => f32::from(alaw_to_linear(b[0])) / 32768.0,
        }
    }
}

/// Interleaved fixed-size samples, framed across chunk boundaries.
#[derive(Debug)]
pub(crate) struct Framed {
    format: SampleFormat,
    sample_rate: u32,
    n_channels: usize,
    leftover: Vec<u8>,
}

impl Framed {
    pub(crate) fn new(format: SampleFormat, sample_rate: u32, n_channels: u16) -> Framed {
        Framed { format, sample_rate, n_channels: usize::from(n_channels), leftover: Vec::new() }
    }

    pub(crate) fn push(&mut self, bytes: &[u8]) -> Pcm {
        self.leftover.extend_from_slice(bytes);
        let frame_bytes = self.format.bytes() * self.n_channels;
        let n_frames = self.leftover.len() / frame_bytes;
        let mut channels = vec![Vec::with_capacity(n_frames); self.n_channels];
        for frame in self.leftover[..n_frames * frame_bytes].chunks_exact(frame_bytes) {
            for (ch_idx, sample) in frame.chunks_exact(self.format.bytes()).enumerate() {
                channels[ch_idx].push(self.format.sample(sample));
            }
        }
        self.leftover.drain(..n_frames * frame_bytes);
        Pcm { sample_rate: self.sample_rate, channels }
    }
}

enum State {
    /// Waiting for enough bytes to recognize the container.
    Detecting(Vec<u8>),
    /// A RIFF/WAVE header not yet complete.
    WavHeader(Vec<u8>),
    Framed(Framed),
    /// MP4: decoded whole at the end.
    Buffering(Vec<u8>),
    Worker(Worker),
    Finished,
}

/// Decodes one stream incrementally. Memory stays bounded by the largest chunk pushed, except for
/// MP4, which is buffered up to the byte limit.
pub struct StreamDecoder {
    options: DecodeOptions,
    state: State,
    n_bytes: usize,
    n_frames_out: usize,
}

impl std::fmt::Debug for StreamDecoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamDecoder").field("n_bytes", &self.n_bytes).finish_non_exhaustive()
    }
}

/// Bytes needed to recognize every container by its magic.
const DETECT_BYTES: usize = 12;

impl StreamDecoder {
    pub fn new(options: DecodeOptions) -> StreamDecoder {
        StreamDecoder { options, state: State::Detecting(Vec::new()), n_bytes: 0, n_frames_out: 0 }
    }

    /// Feeds bytes; returns the PCM that became decodable (possibly none).
    pub fn push(&mut self, bytes: &[u8]) -> Result<Option<Pcm>, AudioError> {
        self.n_bytes += bytes.len();
        if self.n_bytes > self.options.limits.max_bytes {
            self.state = State::Finished;
            return Err(AudioError::TooLarge { limit: self.options.limits.max_bytes });
        }
        let pcm = self.advance(bytes, false)?;
        self.check_duration(pcm)
    }

    /// Ends the stream: returns the last PCM (what the end of the input completes).
    pub fn finish(&mut self) -> Result<Option<Pcm>, AudioError> {
        let pcm = self.advance(&[], true)?;
        self.state = State::Finished;
        self.check_duration(pcm)
    }

    fn check_duration(&mut self, pcm: Option<Pcm>) -> Result<Option<Pcm>, AudioError> {
        if let Some(p) = &pcm {
            self.n_frames_out += p.n_frames();
            if self.n_frames_out as f64 / f64::from(p.sample_rate.max(1)) > self.options.limits.max_duration_s {
                self.state = State::Finished;
                return Err(AudioError::TooLong { limit_s: self.options.limits.max_duration_s });
            }
        }
        Ok(pcm.filter(|p| p.n_frames() > 0))
    }

    fn advance(&mut self, bytes: &[u8], end: bool) -> Result<Option<Pcm>, AudioError> {
        match &mut self.state {
            State::Detecting(buffer) => {
                buffer.extend_from_slice(bytes);
                let needed = if self.options.encoding.is_some() { 4 } else { DETECT_BYTES };
                if buffer.len() < needed && !end {
                    return Ok(None);
                }
                let pending = std::mem::take(buffer);
                self.start(pending, end)
            }
            State::WavHeader(buffer) => {
                buffer.extend_from_slice(bytes);
                let Some((format, rate, channels, data_offset)) = parse_wav_header(buffer)? else {
                    return if end {
                        Err(AudioError::Corrupt("the WAV header is incomplete".to_owned()))
                    } else {
                        Ok(None)
                    };
                };
                let pending = buffer.split_off(data_offset);
                // A declared encoding is authoritative over the header's.
                let (format, rate, channels) = match self.options.encoding {
                    Some(encoding) => (declared_format(encoding), self.options.sample_rate, self.options.channels),
                    None => (format, rate, channels),
                };
                self.state = State::Framed(self.framed(format, rate, channels)?);
                self.advance_framed(&pending)
            }
            State::Framed(_) => self.advance_framed(bytes),
            State::Buffering(buffer) => {
                buffer.extend_from_slice(bytes);
                if !end {
                    return Ok(None);
                }
                let all = std::mem::take(buffer);
                let decoded = decode_with(&all, &DecodeOptions { encoding: None, ..self.options.clone() })?;
                Ok(Some(Pcm { sample_rate: decoded.sample_rate, channels: decoded.channels }))
            }
            State::Worker(worker) => {
                if end {
                    worker.finish()
                } else {
                    worker.push(bytes)
                }
            }
            State::Finished if bytes.is_empty() => Ok(None),
            State::Finished => Err(AudioError::InvalidParams("the stream has already ended".to_owned())),
        }
    }

    /// Chooses how to decode from the first bytes, then decodes them.
    fn start(&mut self, pending: Vec<u8>, end: bool) -> Result<Option<Pcm>, AudioError> {
        if pending.is_empty() {
            return Err(AudioError::Empty);
        }
        if let Some(encoding) = self.options.encoding {
            // A WAV header in front of a declared encoding is stripped, then ignored.
            if pending.starts_with(b"RIFF") {
                self.state = State::WavHeader(pending);
                return self.advance(&[], end);
            }
            self.state = State::Framed(self.framed(
                declared_format(encoding),
                self.options.sample_rate,
                self.options.channels,
            )?);
            return self.advance_framed(&pending);
        }
        self.state = match detect(&pending) {
            Some(Container::Wav) => State::WavHeader(pending),
            Some(Container::Mp4) => State::Buffering(pending),
            Some(container) => State::Worker(Worker::start(container, pending)?),
            None if self.options.unknown_as_linear16 => {
                self.state =
                    State::Framed(self.framed(SampleFormat::S16, self.options.sample_rate, self.options.channels)?);
                return self.advance_framed(&pending);
            }
            None => {
                return Err(AudioError::Unsupported(format!(
                    "unrecognized container (first bytes {:02x?})",
                    &pending[..pending.len().min(8)]
                )))
            }
        };
        self.advance(&[], end)
    }

    fn framed(&self, format: SampleFormat, sample_rate: u32, n_channels: u16) -> Result<Framed, AudioError> {
        if sample_rate == 0 || n_channels == 0 {
            return Err(AudioError::InvalidParams("sample_rate and channels must be positive".to_owned()));
        }
        crate::check_rate(sample_rate, true)?;
        Ok(Framed::new(format, sample_rate, n_channels))
    }

    fn advance_framed(&mut self, bytes: &[u8]) -> Result<Option<Pcm>, AudioError> {
        match &mut self.state {
            State::Framed(framed) => Ok(Some(framed.push(bytes))),
            _ => Ok(None),
        }
    }
}

/// Whole-file WAV decoding by the same framing as streams: the data chunk's declared size bounds the
/// samples when it is real (not the 0 or 0xFFFFFFFF that streaming writers leave), and a file that ends
/// before that size is reported truncated.
pub(crate) fn decode_wav(bytes: &[u8]) -> Result<crate::Decoded, AudioError> {
    let Some((format, sample_rate, channels, data_offset)) = parse_wav_header(bytes)? else {
        return Err(AudioError::Corrupt("the WAV header is incomplete".to_owned()));
    };
    let declared = u32::from_le_bytes([
        bytes[data_offset - 4],
        bytes[data_offset - 3],
        bytes[data_offset - 2],
        bytes[data_offset - 1],
    ]) as usize;
    let available = bytes.len() - data_offset;
    let (len, truncated) = match declared {
        0 | 0xFFFF_FFFF => (available, false),
        d if d > available => (available, true),
        d => (d, false),
    };
    let mut framed = Framed::new(format, sample_rate, channels);
    let pcm = framed.push(&bytes[data_offset..data_offset + len]);
    if pcm.n_frames() == 0 {
        return Err(if truncated {
            AudioError::Corrupt("the file ends before any audio".to_owned())
        } else {
            AudioError::Empty
        });
    }
    Ok(crate::Decoded { sample_rate, channels: pcm.channels, truncated })
}

pub(crate) fn declared_format(encoding: Encoding) -> SampleFormat {
    match encoding {
        Encoding::Linear16 => SampleFormat::S16,
        Encoding::Mulaw => SampleFormat::Mulaw,
        Encoding::Alaw => SampleFormat::Alaw,
    }
}

/// Parses a RIFF/WAVE header up to the `data` chunk: `(format, rate, channels, data offset)`, or
/// `None` when more bytes are needed. The data size is ignored (streams write 0 or 0xFFFFFFFF).
pub(crate) fn parse_wav_header(bytes: &[u8]) -> Result<Option<(SampleFormat, u32, u16, usize)>, AudioError> {
    let mut offset = 12;
    let mut fmt: Option<(SampleFormat, u32, u16)> = None;
    loop {
        if offset + 8 > bytes.len() {
            return Ok(None);
        }
        let id = &bytes[offset..offset + 4];
        let size =
            u32::from_le_bytes([bytes[offset + 4], bytes[offset + 5], bytes[offset + 6], bytes[offset + 7]]) as usize;
        let body = offset + 8;
        if id == b"data" {
            let (format, rate, channels) =
                fmt.ok_or_else(|| AudioError::Corrupt("the WAV data comes before its format".to_owned()))?;
            return Ok(Some((format, rate, channels, body)));
        }
        if id == b"fmt " {
            if body + 16 > bytes.len() {
                return Ok(None);
            }
            let b = &bytes[body..];
            let mut tag = u16::from_le_bytes([b[0], b[1]]);
            let channels = u16::from_le_bytes([b[2], b[3]]);
            let rate = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
            let bits = u16::from_le_bytes([b[14], b[15]]);
            if tag == 0xFFFE {
                // WAVE_FORMAT_EXTENSIBLE: the real tag opens the sub-format GUID.
                if body + 26 > bytes.len() {
                    return Ok(None);
                }
                tag = u16::from_le_bytes([b[24], b[25]]);
            }
            let format = match (tag, bits) {
                (1, 8) => SampleFormat::U8,
                (1, 16) => SampleFormat::S16,
                (1, 24) => SampleFormat::S24,
                (1, 32) => SampleFormat::S32,
                (3, 32) => SampleFormat::F32,
                (6, 8) => SampleFormat::Alaw,
                (7, 8) => SampleFormat::Mulaw,
                (tag, bits) => {
                    return Err(AudioError::Unsupported(format!("WAV format tag {tag:#x} with {bits} bits")))
                }
            };
            if channels == 0 || rate == 0 {
                return Err(AudioError::Corrupt("the WAV header declares zero channels or rate".to_owned()));
            }
            crate::check_rate(rate, false)?;
            fmt = Some((format, rate, channels));
        }
        offset = body.saturating_add(size).saturating_add(size & 1);
    }
}

/// What the demuxing thread reports.
enum Event {
    Pcm(Pcm),
    /// Every byte handed over has been read; the thread waits for more.
    Starved,
    Done(Result<(), AudioError>),
}

/// Bytes for the demuxing thread: `Some(chunk)`, or `None` at the end of the stream.
type Bytes = Option<Vec<u8>>;

struct Worker {
    bytes_tx: Option<SyncSender<Bytes>>,
    events_rx: Receiver<Event>,
    handle: Option<JoinHandle<()>>,
    done: bool,
    started: bool,
}

impl Worker {
    fn start(container: Container, first: Vec<u8>) -> Result<Worker, AudioError> {
        let (bytes_tx, bytes_rx) = sync_channel::<Bytes>(1);
        let (events_tx, events_rx) = sync_channel::<Event>(64);
        let handle = std::thread::Builder::new().name("aldea-demux".to_owned()).spawn(move || {
            let reader = ChannelReader {
                current: first,
                pos: 0,
                bytes_rx: Mutex::new(bytes_rx),
                events_tx: events_tx.clone(),
                ended: false,
            };
            let result = demux(container, reader, &events_tx);
            let _ = events_tx.send(Event::Done(result));
        })?;
        Ok(Worker { bytes_tx: Some(bytes_tx), events_rx, handle: Some(handle), done: false, started: false })
    }

    /// Hands `bytes` over and collects PCM until the thread has read them all.
    fn push(&mut self, bytes: &[u8]) -> Result<Option<Pcm>, AudioError> {
        if self.done {
            return Ok(None);
        }
        if self.started {
            if bytes.is_empty() {
                return Ok(None);
            }
            if let Some(tx) = &self.bytes_tx {
                if tx.send(Some(bytes.to_vec())).is_err() {
                    return self.collect(true);
                }
            }
        } else {
            // The first bytes went to the thread at its start.
            self.started = true;
        }
        self.collect(false)
    }

    fn finish(&mut self) -> Result<Option<Pcm>, AudioError> {
        if !self.started {
            self.started = true;
        }
        if let Some(tx) = self.bytes_tx.take() {
            let _ = tx.send(None);
        }
        let pcm = self.collect(true);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
        pcm
    }

    /// Receives PCM until the thread starves (or, `to_end`, until it is done).
    fn collect(&mut self, to_end: bool) -> Result<Option<Pcm>, AudioError> {
        let mut out = Pcm { sample_rate: 0, channels: Vec::new() };
        loop {
            match self.events_rx.recv() {
                Ok(Event::Pcm(pcm)) => {
                    if out.sample_rate != 0 && pcm.sample_rate != out.sample_rate {
                        return Err(AudioError::Corrupt("the sample rate changes inside the stream".to_owned()));
                    }
                    out.sample_rate = pcm.sample_rate;
                    out.append(pcm);
                }
                Ok(Event::Starved) if !to_end => break,
                Ok(Event::Starved) => {}
                Ok(Event::Done(result)) => {
                    self.done = true;
                    result?;
                    break;
                }
                Err(_) => {
                    self.done = true;
                    break;
                }
            }
        }
        Ok((out.n_frames() > 0).then_some(out))
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        // Ending the byte channel lets the thread see the end of the stream and exit.
        self.bytes_tx.take();
        while self.events_rx.try_recv().is_ok() {}
        if let Some(handle) = self.handle.take() {
            // Drain until the thread is gone so it never blocks on a full event channel.
            while !handle.is_finished() {
                let _ = self.events_rx.recv_timeout(std::time::Duration::from_millis(10));
            }
            let _ = handle.join();
        }
    }
}

/// A `Read` over the chunks `push` hands over; it reports starvation before it blocks.
struct ChannelReader {
    current: Vec<u8>,
    pos: usize,
    bytes_rx: Mutex<Receiver<Bytes>>,
    events_tx: SyncSender<Event>,
    ended: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos >= self.current.len() {
            if self.ended {
                return Ok(0);
            }
            let _ = self.events_tx.send(Event::Starved);
            let next = match self.bytes_rx.lock() {
                Ok(rx) => rx.recv().ok().flatten(),
                Err(_) => None,
            };
            match next {
                Some(chunk) => {
                    self.current = chunk;
                    self.pos = 0;
                }
                None => {
                    self.ended = true;
                    return Ok(0);
                }
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

fn demux(container: Container, reader: ChannelReader, events: &SyncSender<Event>) -> Result<(), AudioError> {
    let source = MediaSourceStream::new(Box::new(ReadOnlySource::new(reader)), Default::default());
    let OpenedTrack { mut format, track_id, mut decoder, .. } = open_track(source, container)?;
    let mut planar: Vec<Vec<f32>> = Vec::new();
    loop {
        let packet = match format.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => return Ok(()),
            // A stream that stops mid-packet has simply ended.
            Err(SymphoniaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
            Err(SymphoniaError::ResetRequired) => return Ok(()),
            Err(e) => return Err(symphonia_error(e)),
        };
        if packet.track_id != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(decoded) => decoded,
            Err(SymphoniaError::DecodeError(_)) => continue,
            Err(e) => return Err(symphonia_error(e)),
        };
        let sample_rate = decoded.spec().rate();
        planar.clear();
        decoded.copy_to_vecs_planar::<f32>(&mut planar);
        if events.send(Event::Pcm(Pcm { sample_rate, channels: planar.clone() })).is_err() {
            return Ok(());
        }
    }
}

/// Resamples a live mono stream to a fixed rate with the same FFT resampler as [`crate::resample`]:
/// samples in, samples out as whole input chunks fill, the resampler's delay removed, so the output
/// lines up with the input's timeline. Memory stays at one chunk.
pub struct StreamResampler {
    resampler: Option<rubato::Fft<f32>>,
    pending: Vec<f32>,
    /// Output frames still to drop (the filter delay).
    to_skip: usize,
    n_in: u64,
    n_out: u64,
    ratio: f64,
}

impl std::fmt::Debug for StreamResampler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamResampler").field("ratio", &self.ratio).field("pending", &self.pending.len()).finish()
    }
}

impl StreamResampler {
    pub fn new(from_rate: u32, to_rate: u32) -> Result<StreamResampler, AudioError> {
        use rubato::Resampler;

        if from_rate == 0 || to_rate == 0 {
            return Err(AudioError::InvalidParams("sample rates must be positive".to_owned()));
        }
        crate::check_rate(from_rate, false)?;
        crate::check_rate(to_rate, false)?;
        let ratio = f64::from(to_rate) / f64::from(from_rate);
        if from_rate == to_rate {
            return Ok(StreamResampler { resampler: None, pending: Vec::new(), to_skip: 0, n_in: 0, n_out: 0, ratio });
        }
        let resampler =
            rubato::Fft::<f32>::new(from_rate as usize, to_rate as usize, 1024, 1, rubato::FixedSync::Input)
                .map_err(|e| AudioError::Resample(e.to_string()))?;
        let to_skip = resampler.output_delay();
        Ok(StreamResampler { resampler: Some(resampler), pending: Vec::new(), to_skip, n_in: 0, n_out: 0, ratio })
    }

    /// Feeds samples; returns the resampled samples that are ready.
    pub fn push(&mut self, samples: &[f32]) -> Result<Vec<f32>, AudioError> {
        self.n_in += samples.len() as u64;
        let Some(resampler) = self.resampler.as_mut() else {
            self.n_out += samples.len() as u64;
            return Ok(samples.to_vec());
        };
        self.pending.extend_from_slice(samples);
        let mut out = Vec::new();
        Self::run(resampler, &mut self.pending, &mut out)?;
        Ok(self.emit(out, None))
    }

    /// Ends the stream: the rest of the input, padded through the filter, cut to the exact length.
    pub fn finish(&mut self) -> Result<Vec<f32>, AudioError> {
        use rubato::Resampler;

        let Some(resampler) = self.resampler.as_mut() else {
            return Ok(Vec::new());
        };
        let expected = (self.n_in as f64 * self.ratio).round() as u64;
        let mut out = Vec::new();
        // Zeros push the last real samples (and the filter delay) out.
        let mut n_zero_chunks = 0;
        while self.n_out + (out.len() as u64).saturating_sub(self.to_skip as u64) < expected && n_zero_chunks < 4 {
            let chunk = resampler.input_frames_next();
            let fill = chunk - self.pending.len() % chunk.max(1);
            self.pending.extend(std::iter::repeat_n(0.0, fill));
            Self::run(resampler, &mut self.pending, &mut out)?;
            n_zero_chunks += 1;
        }
        self.pending.clear();
        Ok(self.emit(out, Some(expected)))
    }

    fn run(resampler: &mut rubato::Fft<f32>, pending: &mut Vec<f32>, out: &mut Vec<f32>) -> Result<(), AudioError> {
        use rubato::Resampler;

        loop {
            let needed = resampler.input_frames_next();
            if pending.len() < needed {
                return Ok(());
            }
            let input = audioadapter_buffers::owned::InterleavedOwned::new_from(pending[..needed].to_vec(), 1, needed)
                .map_err(|e| AudioError::Resample(e.to_string()))?;
            let output = resampler.process(&input, None).map_err(|e| AudioError::Resample(e.to_string()))?;
            out.extend(output.take_data());
            pending.drain(..needed);
        }
    }

    fn emit(&mut self, mut out: Vec<f32>, limit: Option<u64>) -> Vec<f32> {
        let skip = self.to_skip.min(out.len());
        out.drain(..skip);
        self.to_skip -= skip;
        if let Some(limit) = limit {
            out.truncate(limit.saturating_sub(self.n_out) as usize);
        }
        self.n_out += out.len() as u64;
        out
    }
}
