//! Whole inputs of any size decoded straight to what the recognizer reads: 16 kHz mono.
//!
//! The input is read through `Read + Seek` (a file, a spooled request body, bytes in memory) in
//! chunks; each decoded piece is averaged to mono and resampled as it comes ([`StreamResampler`]),
//! so memory holds the 16-kHz output (64 kB per second of audio) and one chunk, never the encoded
//! bytes or the source-rate channels. The format rule and the limits are those of
//! [`crate::decode_with`]; WAV data sizes, MP4 encoder priming and the errors for inputs without
//! audio are read the same way, so both paths give the same samples.

use std::io::{Read, Seek, SeekFrom};

use symphonia::core::io::{MediaSource, MediaSourceStream};

use crate::stream::{declared_format, parse_wav_header, Framed, SampleFormat};
use crate::{
    check_rate, demux_packets, detect, mp4_audio_priming_seconds, no_audio_error, open_track, wav_data_span,
    AudioError, Container, DecodeOptions, Encoding, Limits, StreamResampler, TARGET_RATE,
};

/// Bytes read at a time.
const CHUNK: usize = 256 * 1024;
/// WAV headers (with their LIST and other chunks) longer than this are refused.
const MAX_WAV_HEADER: usize = 1 << 20;
/// An MP4 index larger than this is not read for its edit list (the priming is then kept).
const MAX_MOOV: u64 = 64 << 20;

/// Audio at [`TARGET_RATE`], one channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Mono16k {
    pub samples: Vec<f32>,
    /// The rate the input was decoded at.
    pub source_rate: u32,
    /// Channels averaged into `samples`.
    pub n_channels: usize,
    /// The input ended in the middle of the data: what could be decoded is here.
    pub truncated: bool,
}

/// Decodes a whole input to 16 kHz mono following the Speech API's format rule (see the crate
/// docs), reading it in chunks.
pub fn decode_mono_16k<R>(mut input: R, options: &DecodeOptions) -> Result<Mono16k, AudioError>
where
    R: Read + Seek + Send + Sync,
{
    let len = input.seek(SeekFrom::End(0))?;
    if len == 0 {
        return Err(AudioError::Empty);
    }
    if len > options.limits.max_bytes as u64 {
        return Err(AudioError::TooLarge { limit: options.limits.max_bytes });
    }
    let head = read_prefix(&mut input, 12)?;
    let mut sink = Sink::new(options.limits);
    if let Some(encoding) = options.encoding {
        let (start, end) = if detect(&head) == Some(Container::Wav) {
            let header = read_header(&mut input, len, |prefix| wav_data_span(prefix).map(Ok))?;
            let (start, size) =
                header.ok_or_else(|| AudioError::Corrupt("the WAV header has no data chunk".to_owned()))?;
            (start, start.saturating_add(size).min(len))
        } else {
            (0, len)
        };
        return declared(&mut input, start..end, encoding, options, sink);
    }
    match detect(&head) {
        Some(Container::Wav) => {
            let header = read_header(&mut input, len, |prefix| {
                parse_wav_header(prefix).transpose().map(|parsed| {
                    parsed.map(|(format, rate, n_channels, offset)| {
                        let size = &prefix[offset - 4..offset];
                        (format, rate, n_channels, offset, u32::from_le_bytes([size[0], size[1], size[2], size[3]]))
                    })
                })
            })?
            .ok_or_else(|| AudioError::Corrupt("the WAV header is incomplete".to_owned()))?;
            let (format, rate, n_channels, data_offset, declared_size) = header;
            let data_offset = data_offset as u64;
            let available = len.saturating_sub(data_offset);
            let (size, truncated) = match declared_size {
                0 | 0xFFFF_FFFF => (available, false),
                d if u64::from(d) > available => (available, true),
                d => (u64::from(d), false),
            };
            let framed = Framed::new(format, rate, n_channels);
            framed_range(&mut input, data_offset..data_offset + size, framed, &mut sink)?;
            sink.finish(truncated, || {
                if truncated {
                    AudioError::Corrupt("the file ends before any audio".to_owned())
                } else {
                    AudioError::Empty
                }
            })
        }
        // A panic inside a third-party demuxer or codec is an undecodable input, never a crash.
        Some(container) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            decode_container(&mut input, len, container, sink)
        }))
        .unwrap_or_else(|_| Err(AudioError::Corrupt("the decoder failed on this input".to_owned()))),
        None if options.unknown_as_linear16 => declared(&mut input, 0..len, Encoding::Linear16, options, sink),
        None => Err(AudioError::Unsupported(format!(
            "unrecognized container (first bytes {:02x?})",
            &head[..head.len().min(8)]
        ))),
    }
}

/// Headerless samples in a declared encoding at the declared rate and channels.
fn declared<R: Read + Seek>(
    input: &mut R,
    range: std::ops::Range<u64>,
    encoding: Encoding,
    options: &DecodeOptions,
    mut sink: Sink,
) -> Result<Mono16k, AudioError> {
    if options.sample_rate == 0 || options.channels == 0 {
        return Err(AudioError::InvalidParams("sample_rate and channels must be positive".to_owned()));
    }
    check_rate(options.sample_rate, true)?;
    let format: SampleFormat = declared_format(encoding);
    framed_range(input, range, Framed::new(format, options.sample_rate, options.channels), &mut sink)?;
    sink.finish(false, || AudioError::Empty)
}

/// Frames `range` of the input in chunks into the sink.
fn framed_range<R: Read + Seek>(
    input: &mut R,
    range: std::ops::Range<u64>,
    mut framed: Framed,
    sink: &mut Sink,
) -> Result<(), AudioError> {
    input.seek(SeekFrom::Start(range.start))?;
    let mut left = range.end.saturating_sub(range.start);
    let mut buffer = vec![0u8; CHUNK];
    while left > 0 {
        let want = left.min(CHUNK as u64) as usize;
        let n = input.read(&mut buffer[..want])?;
        if n == 0 {
            break;
        }
        left -= n as u64;
        let pcm = framed.push(&buffer[..n]);
        sink.push(pcm.sample_rate, &pcm.channels)?;
    }
    Ok(())
}

/// A container through symphonia, reading the input where the demuxer seeks.
fn decode_container<R: Read + Seek + Send + Sync>(
    input: &mut R,
    len: u64,
    container: Container,
    mut sink: Sink,
) -> Result<Mono16k, AudioError> {
    if container == Container::Mp4 {
        // symphonia does not apply MP4 edit lists: the encoder's priming frames are dropped here.
        sink.priming_s = mp4_priming_from(input, len)?.unwrap_or(0.0);
    }
    input.seek(SeekFrom::Start(0))?;
    let source = MediaSourceStream::new(Box::new(Source { input, len }), Default::default());
    let opened = open_track(source, container)?;
    let demuxed = demux_packets(opened, container, &mut |rate, planes| sink.push(rate, planes))?;
    let truncated = demuxed.truncated || demuxed.n_bad_packets > 0;
    sink.finish(truncated, || no_audio_error(demuxed.n_bad_packets, demuxed.truncated))
}

/// The input as symphonia reads it: seekable, of known length.
struct Source<'a, R> {
    input: &'a mut R,
    len: u64,
}

impl<R: Read> Read for Source<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.input.read(buf)
    }
}

impl<R: Seek> Seek for Source<'_, R> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.input.seek(pos)
    }
}

impl<R: Read + Seek + Send + Sync> MediaSource for Source<'_, R> {
    fn is_seekable(&self) -> bool {
        true
    }

    fn byte_len(&self) -> Option<u64> {
        Some(self.len)
    }
}

/// Up to `n` bytes from the start.
fn read_prefix<R: Read + Seek>(input: &mut R, n: usize) -> Result<Vec<u8>, AudioError> {
    input.seek(SeekFrom::Start(0))?;
    let mut prefix = Vec::with_capacity(n);
    input.by_ref().take(n as u64).read_to_end(&mut prefix)?;
    Ok(prefix)
}

/// Reads ever longer prefixes (up to [`MAX_WAV_HEADER`]) until `parse` answers; `Ok(None)` when
/// the whole input (or that much) did not suffice.
fn read_header<R, T>(
    input: &mut R,
    len: u64,
    parse: impl Fn(&[u8]) -> Option<Result<T, AudioError>>,
) -> Result<Option<T>, AudioError>
where
    R: Read + Seek,
{
    let mut n = 4096;
    loop {
        let prefix = read_prefix(input, n)?;
        if let Some(parsed) = parse(&prefix) {
            return parsed.map(Some);
        }
        if prefix.len() as u64 >= len || n >= MAX_WAV_HEADER {
            return Ok(None);
        }
        n *= 4;
    }
}

/// The encoder delay of an MP4's audio track, reading only its top-level box headers and `moov`.
fn mp4_priming_from<R: Read + Seek>(input: &mut R, len: u64) -> Result<Option<f64>, AudioError> {
    let mut offset = 0u64;
    while offset + 8 <= len {
        input.seek(SeekFrom::Start(offset))?;
        let mut header = [0u8; 16];
        input.read_exact(&mut header[..8])?;
        let size32 = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
        let (header_len, size) = match size32 {
            0 => (8, len - offset),
            1 if offset + 16 <= len => {
                input.read_exact(&mut header[8..16])?;
                let mut large = [0u8; 8];
                large.copy_from_slice(&header[8..16]);
                (16, u64::from_be_bytes(large))
            }
            n => (8, u64::from(n)),
        };
        if size < header_len || offset.saturating_add(size) > len {
            return Ok(None);
        }
        if &header[4..8] == b"moov" {
            if size > MAX_MOOV {
                return Ok(None);
            }
            input.seek(SeekFrom::Start(offset))?;
            let mut moov = vec![0u8; size as usize];
            input.read_exact(&mut moov)?;
            return Ok(mp4_audio_priming_seconds(&moov));
        }
        offset += size;
    }
    Ok(None)
}

/// Decoded pieces averaged to mono and resampled as they come.
struct Sink {
    limits: Limits,
    resampler: Option<StreamResampler>,
    source_rate: u32,
    n_channels: usize,
    n_frames: u64,
    /// Source frames still to drop at the start (MP4 priming), known once the rate is.
    to_skip: Option<u64>,
    priming_s: f64,
    mono: Vec<f32>,
    out: Vec<f32>,
}

impl Sink {
    fn new(limits: Limits) -> Sink {
        Sink {
            limits,
            resampler: None,
            source_rate: 0,
            n_channels: 0,
            n_frames: 0,
            to_skip: None,
            priming_s: 0.0,
            mono: Vec::new(),
            out: Vec::new(),
        }
    }

    fn push(&mut self, rate: u32, planes: &[Vec<f32>]) -> Result<(), AudioError> {
        let n = planes.first().map_or(0, Vec::len);
        if n == 0 {
            return Ok(());
        }
        if self.resampler.is_none() {
            if rate == 0 {
                return Err(AudioError::Corrupt("the stream declares no sample rate".to_owned()));
            }
            check_rate(rate, false)?;
            self.resampler = Some(StreamResampler::new(rate, TARGET_RATE)?);
            self.source_rate = rate;
            self.n_channels = planes.len();
        } else if rate != self.source_rate {
            return Err(AudioError::Corrupt("the sample rate changes inside the stream".to_owned()));
        } else if planes.len() != self.n_channels {
            return Err(AudioError::Corrupt("the channel count changes inside the stream".to_owned()));
        }
        self.n_frames += n as u64;
        if self.n_frames as f64 / f64::from(rate) > self.limits.max_duration_s {
            return Err(AudioError::TooLong { limit_s: self.limits.max_duration_s });
        }
        let priming_s = self.priming_s;
        let to_skip = self.to_skip.get_or_insert_with(|| (priming_s * f64::from(rate)).round() as u64);
        let from = (*to_skip).min(n as u64) as usize;
        *to_skip -= from as u64;
        self.mono.clear();
        // The average of the channels, summed in the same order as `Decoded::to_mono`.
        match planes.len() {
            1 => self.mono.extend_from_slice(&planes[0][from..]),
            n_channels => {
                let scale = 1.0 / n_channels as f32;
                self.mono.extend((from..n).map(|i| planes.iter().map(|ch| ch[i]).sum::<f32>() * scale));
            }
        }
        if let Some(resampler) = self.resampler.as_mut() {
            let resampled = resampler.push(&self.mono)?;
            self.out.extend_from_slice(&resampled);
        }
        Ok(())
    }

    /// The samples; `no_audio` is the error when nothing was decoded.
    fn finish(mut self, truncated: bool, no_audio: impl FnOnce() -> AudioError) -> Result<Mono16k, AudioError> {
        let Some(mut resampler) = self.resampler.take() else {
            return Err(no_audio());
        };
        let tail = resampler.finish()?;
        self.out.extend_from_slice(&tail);
        if self.out.is_empty() {
            // Everything decoded was priming: no audio, as the whole-file path says.
            return Err(no_audio());
        }
        Ok(Mono16k { samples: self.out, source_rate: self.source_rate, n_channels: self.n_channels, truncated })
    }
}
