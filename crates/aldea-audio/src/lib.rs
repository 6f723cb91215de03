//! Audio input: decodes what users send into the one form the recognizer reads — 16 kHz mono `f32`
//! samples in [-1, 1] — and keeps per-channel access for multichannel requests.
//!
//! Containers and codecs: WAV (PCM 8/16/24/32, float, mu-law, a-law), FLAC, MP3, OGG (Vorbis, Opus),
//! WebM/Matroska (Opus, Vorbis), MP4/M4A (AAC), AAC ADTS — through symphonia, with libopus for Opus —
//! and headerless `linear16`, `mulaw` and `alaw` declared by the caller. The format rule of the Speech
//! API: a declared headerless encoding is authoritative (only a leading RIFF/WAVE header is stripped);
//! otherwise containers are detected by their magic bytes.
//!
//! Invariant: sync — no async runtime, no I/O beyond the bytes it is handed; the one thread it starts
//! is a stream's demuxer, owned by its `StreamDecoder` and joined when it ends or is dropped.
//! Invariant: never panics on bad input; every failure is an [`AudioError`], and limits on bytes and
//! decoded duration are enforced while decoding.
#![forbid(unsafe_code)]

use std::io::Cursor;
use std::str::FromStr;
use std::sync::OnceLock;

use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::codecs::registry::CodecRegistry;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::{Hint, Probe};
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
use symphonia::core::io::MediaSourceStream;
use symphonia::core::meta::MetadataOptions;

mod mono;
mod stream;

pub use mono::{decode_mono_16k, Mono16k};
pub use stream::{Pcm, StreamDecoder, StreamResampler};

/// The sample rate the recognizer works at.
pub const TARGET_RATE: u32 = 16_000;
/// Sample rates accepted, from telephony's lowest to studio's highest; outside them a header is
/// corrupt or hostile (a 4-GHz rate would make the resampler allocate gigabytes).
pub const SAMPLE_RATES: std::ops::RangeInclusive<u32> = 1_000..=384_000;

/// Refuses a sample rate outside [`SAMPLE_RATES`]: `declared` rates (request parameters) are
/// invalid parameters, rates read from the audio make it unsupported.
pub(crate) fn check_rate(rate: u32, declared: bool) -> Result<(), AudioError> {
    if SAMPLE_RATES.contains(&rate) {
        return Ok(());
    }
    let what = format!("a sample rate of {rate} Hz is outside {}..={} Hz", SAMPLE_RATES.start(), SAMPLE_RATES.end());
    Err(if declared { AudioError::InvalidParams(what) } else { AudioError::Unsupported(what) })
}

/// What can go wrong reading audio. Services answer 415 (`Unsupported`, `Corrupt`), 413 (`TooLarge`,
/// `TooLong`) or 400 (`Empty`, `InvalidParams`).
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    #[error("the audio is empty")]
    Empty,
    #[error("unsupported audio format: {0}")]
    Unsupported(String),
    #[error("corrupt or undecodable audio: {0}")]
    Corrupt(String),
    #[error("invalid audio parameters: {0}")]
    InvalidParams(String),
    #[error("the audio is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the audio is longer than the limit of {limit_s} seconds")]
    TooLong { limit_s: f64 },
    #[error("resampling failed: {0}")]
    Resample(String),
    #[error("reading the audio failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A headerless encoding declared by the caller (`encoding=` in the Speech API).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Signed 16-bit little-endian PCM.
    Linear16,
    /// G.711 mu-law.
    Mulaw,
    /// G.711 a-law.
    Alaw,
}

impl FromStr for Encoding {
    type Err = AudioError;

    fn from_str(s: &str) -> Result<Encoding, AudioError> {
        match s.to_ascii_lowercase().as_str() {
            "linear16" | "pcm" | "pcm_s16le" | "s16le" => Ok(Encoding::Linear16),
            "mulaw" | "mu-law" | "ulaw" | "pcm_mulaw" => Ok(Encoding::Mulaw),
            "alaw" | "a-law" | "pcm_alaw" => Ok(Encoding::Alaw),
            other => Err(AudioError::InvalidParams(format!(
                "{other:?} is not a headerless encoding (linear16, mulaw, alaw); containers are detected from their bytes"
            ))),
        }
    }
}

/// Containers recognized by their first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Container {
    Wav,
    Flac,
    Mp3,
    Ogg,
    /// WebM and Matroska (EBML).
    Matroska,
    /// MP4 / M4A (ISO base media).
    Mp4,
    /// AAC in ADTS frames.
    Adts,
}

impl Container {
    fn extension(self) -> &'static str {
        match self {
            Container::Wav => "wav",
            Container::Flac => "flac",
            Container::Mp3 => "mp3",
            Container::Ogg => "ogg",
            Container::Matroska => "webm",
            Container::Mp4 => "m4a",
            Container::Adts => "aac",
        }
    }
}

/// Recognizes a container from its magic bytes.
pub fn detect(bytes: &[u8]) -> Option<Container> {
    let starts = |magic: &[u8]| bytes.len() >= magic.len() && &bytes[..magic.len()] == magic;
    if bytes.len() >= 12 && starts(b"RIFF") && &bytes[8..12] == b"WAVE" {
        return Some(Container::Wav);
    }
    if starts(b"fLaC") {
        return Some(Container::Flac);
    }
    if starts(b"OggS") {
        return Some(Container::Ogg);
    }
    if starts(&[0x1A, 0x45, 0xDF, 0xA3]) {
        return Some(Container::Matroska);
    }
    if bytes.len() >= 8 && &bytes[4..8] == b"ftyp" {
        return Some(Container::Mp4);
    }
    if starts(b"ID3") {
        return Some(Container::Mp3);
    }
    if bytes.len() >= 2 && bytes[0] == 0xFF && bytes[1] & 0xE0 == 0xE0 {
        // Frame sync: the layer bits are 00 in ADTS and non-zero in MPEG audio.
        let layer = (bytes[1] >> 1) & 0x03;
        if bytes[1] & 0xF0 == 0xF0 && layer == 0 {
            return Some(Container::Adts);
        }
        if layer != 0 && (bytes[1] >> 3) & 0x03 != 0x01 {
            return Some(Container::Mp3);
        }
    }
    None
}

/// Limits enforced while decoding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    pub max_bytes: usize,
    pub max_duration_s: f64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bytes: 2 * 1024 * 1024 * 1024, max_duration_s: 4.0 * 3600.0 }
    }
}

/// How to read the bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeOptions {
    /// A declared headerless encoding; `None` detects the container.
    pub encoding: Option<Encoding>,
    /// Rate of headerless audio (declared, or the fallback below).
    pub sample_rate: u32,
    /// Channels of headerless audio.
    pub channels: u16,
    /// When nothing is recognized, read the bytes as linear16 (the Speech API's rule) instead of
    /// refusing them.
    pub unknown_as_linear16: bool,
    pub limits: Limits,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            encoding: None,
            sample_rate: TARGET_RATE,
            channels: 1,
            unknown_as_linear16: false,
            limits: Limits::default(),
        }
    }
}

/// Decoded audio: samples per channel at the source rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Decoded {
    pub sample_rate: u32,
    /// One vector per channel, all the same length.
    pub channels: Vec<Vec<f32>>,
    /// The input ended in the middle of the data: what could be decoded is here.
    pub truncated: bool,
}

impl Decoded {
    /// Number of frames (samples per channel).
    pub fn n_frames(&self) -> usize {
        self.channels.first().map_or(0, Vec::len)
    }

    /// Duration in seconds.
    pub fn duration_s(&self) -> f64 {
        self.n_frames() as f64 / f64::from(self.sample_rate)
    }

    /// Average of all channels.
    pub fn to_mono(&self) -> Vec<f32> {
        match self.channels.len() {
            0 => Vec::new(),
            1 => self.channels[0].clone(),
            n_channels => {
                let scale = 1.0 / n_channels as f32;
                (0..self.n_frames())
                    .map(|frame_idx| self.channels.iter().map(|ch| ch[frame_idx]).sum::<f32>() * scale)
                    .collect()
            }
        }
    }

    /// Mono at [`TARGET_RATE`]: what the recognizer reads.
    pub fn to_mono_16k(&self) -> Result<Vec<f32>, AudioError> {
        resample(&self.to_mono(), self.sample_rate, TARGET_RATE)
    }
}

/// Decodes a whole file's bytes, detecting the container; unrecognized bytes are refused.
pub fn decode(bytes: &[u8]) -> Result<Decoded, AudioError> {
    decode_with(bytes, &DecodeOptions::default())
}

/// Reads a file and decodes it to 16 kHz mono (in chunks: see [`decode_mono_16k`]).
pub fn load_mono_16k(path: &std::path::Path) -> Result<Vec<f32>, AudioError> {
    Ok(decode_mono_16k(std::fs::File::open(path)?, &DecodeOptions::default())?.samples)
}

/// Decodes whole-file bytes following the Speech API's format rule.
pub fn decode_with(bytes: &[u8], options: &DecodeOptions) -> Result<Decoded, AudioError> {
    if bytes.is_empty() {
        return Err(AudioError::Empty);
    }
    if bytes.len() > options.limits.max_bytes {
        return Err(AudioError::TooLarge { limit: options.limits.max_bytes });
    }
    if let Some(encoding) = options.encoding {
        let payload = if detect(bytes) == Some(Container::Wav) { wav_data(bytes)? } else { bytes };
        return decode_headerless(payload, encoding, options.sample_rate, options.channels, &options.limits);
    }
    match detect(bytes) {
        Some(Container::Wav) => {
            let decoded = stream::decode_wav(bytes)?;
            if decoded.duration_s() > options.limits.max_duration_s {
                return Err(AudioError::TooLong { limit_s: options.limits.max_duration_s });
            }
            Ok(decoded)
        }
        // A panic inside a third-party demuxer or codec is an undecodable input, never a crash.
        Some(container) => std::panic::catch_unwind(|| decode_container(bytes, container, &options.limits))
            .unwrap_or_else(|_| Err(AudioError::Corrupt("the decoder failed on this input".to_owned()))),
        None if options.unknown_as_linear16 => {
            decode_headerless(bytes, Encoding::Linear16, options.sample_rate, options.channels, &options.limits)
        }
        None => Err(AudioError::Unsupported(format!(
            "unrecognized container (first bytes {:02x?})",
            &bytes[..bytes.len().min(8)]
        ))),
    }
}

/// Headerless little-endian signed 16-bit PCM, interleaved.
pub fn decode_linear16(bytes: &[u8], sample_rate: u32, n_channels: u16) -> Result<Decoded, AudioError> {
    decode_headerless(bytes, Encoding::Linear16, sample_rate, n_channels, &Limits::default())
}

/// Headerless audio in a declared encoding, interleaved.
pub fn decode_headerless(
    bytes: &[u8],
    encoding: Encoding,
    sample_rate: u32,
    n_channels: u16,
    limits: &Limits,
) -> Result<Decoded, AudioError> {
    if sample_rate == 0 || n_channels == 0 {
        return Err(AudioError::InvalidParams("sample_rate and channels must be positive".to_owned()));
    }
    check_rate(sample_rate, true)?;
    if bytes.is_empty() {
        return Err(AudioError::Empty);
    }
    let n_channels = usize::from(n_channels);
    let bytes_per_sample = if encoding == Encoding::Linear16 { 2 } else { 1 };
    let n_frames = bytes.len() / (bytes_per_sample * n_channels);
    if n_frames as f64 / f64::from(sample_rate) > limits.max_duration_s {
        return Err(AudioError::TooLong { limit_s: limits.max_duration_s });
    }
    let mut channels = vec![Vec::with_capacity(n_frames); n_channels];
    for frame in bytes.chunks_exact(bytes_per_sample * n_channels) {
        for (ch_idx, sample) in frame.chunks_exact(bytes_per_sample).enumerate() {
            let value = match encoding {
                Encoding::Linear16 => i16::from_le_bytes([sample[0], sample[1]]),
                Encoding::Mulaw => mulaw_to_linear(sample[0]),
                Encoding::Alaw => alaw_to_linear(sample[0]),
            };
            channels[ch_idx].push(f32::from(value) / 32768.0);
        }
    }
    if n_frames == 0 {
        return Err(AudioError::Empty);
    }
    Ok(Decoded { sample_rate, channels, truncated: false })
}

/// G.711 mu-law to 16-bit linear.
pub fn mulaw_to_linear(code: u8) -> i16 {
    let code = !code;
    let exponent = (code >> 4) & 0x07;
    let mantissa = i32::from(code & 0x0F);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    (if code & 0x80 != 0 { -magnitude } else { magnitude }) as i16
}

/// G.711 a-law to 16-bit linear.
pub fn alaw_to_linear(code: u8) -> i16 {
    let code = code ^ 0x55;
    let mut magnitude = i32::from(code & 0x0F) << 4;
    let segment = (code & 0x70) >> 4;
    match segment {
        0 => magnitude += 8,
        1 => magnitude += 0x108,
        _ => magnitude = (magnitude + 0x108) << (segment - 1),
    }
    (if code & 0x80 != 0 { magnitude } else { -magnitude }) as i16
}

/// The payload of a RIFF/WAVE file's `data` chunk (to the end of the bytes when the declared size
/// runs past them, as streaming writers leave it).
fn wav_data(bytes: &[u8]) -> Result<&[u8], AudioError> {
    let (start, size) =
        wav_data_span(bytes).ok_or_else(|| AudioError::Corrupt("the WAV header has no data chunk".to_owned()))?;
    let start = start as usize;
    let end = start.saturating_add(size as usize).min(bytes.len());
    Ok(&bytes[start..end])
}

/// Where a RIFF/WAVE file's `data` chunk starts and the size it declares; `None` when `bytes` (the
/// file or its first part) holds no data chunk header.
pub(crate) fn wav_data_span(bytes: &[u8]) -> Option<(u64, u64)> {
    let mut offset = 12;
    while offset + 8 <= bytes.len() {
        let id = &bytes[offset..offset + 4];
        let size = u32::from_le_bytes([bytes[offset + 4], bytes[offset + 5], bytes[offset + 6], bytes[offset + 7]]);
        let body = offset + 8;
        if id == b"data" {
            return Some((body as u64, u64::from(size)));
        }
        offset = body.saturating_add(size as usize).saturating_add(size as usize & 1);
    }
    None
}

fn codecs() -> &'static CodecRegistry {
    static REGISTRY: OnceLock<CodecRegistry> = OnceLock::new();
    REGISTRY.get_or_init(|| {
        let mut registry = CodecRegistry::new();
        symphonia::default::register_enabled_codecs(&mut registry);
        registry.register_audio_decoder::<symphonia_adapter_libopus::OpusDecoder>();
        registry
    })
}

fn probe() -> &'static Probe {
    symphonia::default::get_probe()
}

fn symphonia_error(e: SymphoniaError) -> AudioError {
    match e {
        SymphoniaError::Unsupported(what) => AudioError::Unsupported(what.to_owned()),
        SymphoniaError::LimitError(what) => AudioError::Corrupt(format!("limit exceeded: {what}")),
        other => AudioError::Corrupt(other.to_string()),
    }
}

fn is_end_of_data(e: &SymphoniaError) -> bool {
    matches!(e, SymphoniaError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof)
}

/// A container opened by symphonia: its reader, the audio track's id, a decoder for that track and the
/// rate the track declares.
struct OpenedTrack<'s> {
    format: Box<dyn FormatReader + 's>,
    track_id: u32,
    decoder: Box<dyn AudioDecoder>,
    declared_rate: Option<u32>,
}

fn open_track<'s>(source: MediaSourceStream<'s>, container: Container) -> Result<OpenedTrack<'s>, AudioError> {
    let mut hint = Hint::new();
    hint.with_extension(container.extension());
    let format =
        probe().probe(&hint, source, FormatOptions::default(), MetadataOptions::default()).map_err(symphonia_error)?;
    let track =
        format.default_track(TrackType::Audio).ok_or_else(|| AudioError::Unsupported("no audio track".to_owned()))?;
    let track_id = track.id;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|p| p.audio())
        .ok_or_else(|| AudioError::Unsupported("the track has no audio codec parameters".to_owned()))?
        .clone();
    // Gapless: decoders drop the encoder delay and padding the container signals, as players do.
    let mut decoder_options = AudioDecoderOptions::default();
    decoder_options.gapless = true;
    let decoder = codecs().make_audio_decoder(&params, &decoder_options).map_err(symphonia_error)?;
    Ok(OpenedTrack { format, track_id, decoder, declared_rate: params.sample_rate })
}

fn decode_container(bytes: &[u8], container: Container, limits: &Limits) -> Result<Decoded, AudioError> {
    // Borrowed: the upload is not copied a second time.
    let source = MediaSourceStream::new(Box::new(Cursor::new(bytes)), Default::default());
    let opened = open_track(source, container)?;
    let mut channels: Vec<Vec<f32>> = Vec::new();
    let mut sample_rate = opened.declared_rate.unwrap_or(0);
    let demuxed = demux_packets(opened, container, &mut |rate, planes| {
        sample_rate = rate;
        if channels.is_empty() {
            channels = vec![Vec::new(); planes.len()];
        }
        if planes.len() != channels.len() {
            return Err(AudioError::Corrupt("the channel count changes inside the stream".to_owned()));
        }
        for (out, plane) in channels.iter_mut().zip(planes) {
            out.extend_from_slice(plane);
        }
        if sample_rate > 0 && channels[0].len() as f64 / f64::from(sample_rate) > limits.max_duration_s {
            return Err(AudioError::TooLong { limit_s: limits.max_duration_s });
        }
        Ok(())
    })?;
    if container == Container::Mp4 {
        // symphonia does not apply MP4 edit lists: drop the encoder's priming frames as players do.
        if let Some(priming_s) = mp4_audio_priming_seconds(bytes) {
            let skip = (priming_s * f64::from(sample_rate)).round() as usize;
            for channel in &mut channels {
                channel.drain(..skip.min(channel.len()));
            }
        }
    }
    if channels.first().is_none_or(Vec::is_empty) {
        return Err(no_audio_error(demuxed.n_bad_packets, demuxed.truncated));
    }
    if sample_rate == 0 {
        return Err(AudioError::Corrupt("the stream declares no sample rate".to_owned()));
    }
    check_rate(sample_rate, false)?;
    Ok(Decoded { sample_rate, channels, truncated: demuxed.truncated || demuxed.n_bad_packets > 0 })
}

/// How a container's packets ended.
struct Demuxed {
    /// The data stopped before the container said it would.
    truncated: bool,
    /// Packets the codec could not decode (skipped).
    n_bad_packets: usize,
}

/// Takes each decoded piece: its rate and planar channels.
type OnPcm<'a> = dyn FnMut(u32, &[Vec<f32>]) -> Result<(), AudioError> + 'a;

/// Decodes every packet of the opened track, handing each piece (rate, planar channels) to `on_pcm`.
fn demux_packets(opened: OpenedTrack<'_>, container: Container, on_pcm: &mut OnPcm<'_>) -> Result<Demuxed, AudioError> {
    let OpenedTrack { mut format, track_id, mut decoder, .. } = opened;
    let mut truncated = false;
    let mut n_bad_packets = 0usize;
    let mut any = false;
    let mut planar: Vec<Vec<f32>> = Vec::new();
    loop {
        let packet = match format.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => break,
            Err(e) if is_end_of_data(&e) => {
                // Live Matroska (MediaRecorder) has no sizes: its data simply stops at the end.
                truncated = container != Container::Matroska;
                break;
            }
            Err(SymphoniaError::ResetRequired) => break,
            Err(e) if !any => return Err(symphonia_error(e)),
            Err(_) => {
                truncated = true;
                break;
            }
        };
        if packet.track_id != track_id {
            continue;
        }
        let decoded = match decoder.decode(&packet) {
            Ok(decoded) => decoded,
            Err(SymphoniaError::DecodeError(_)) | Err(SymphoniaError::IoError(_)) => {
                n_bad_packets += 1;
                continue;
            }
            Err(e) => return Err(symphonia_error(e)),
        };
        let rate = decoded.spec().rate();
        planar.clear();
        decoded.copy_to_vecs_planar::<f32>(&mut planar);
        if planar.is_empty() {
            planar.push(Vec::new());
        }
        on_pcm(rate, &planar)?;
        any = true;
    }
    Ok(Demuxed { truncated, n_bad_packets })
}

/// The error for a container from which no audio came.
fn no_audio_error(n_bad_packets: usize, truncated: bool) -> AudioError {
    if n_bad_packets > 0 {
        AudioError::Corrupt(format!("none of {n_bad_packets} packets could be decoded"))
    } else if truncated {
        AudioError::Corrupt("the file ends before any audio".to_owned())
    } else {
        AudioError::Empty
    }
}

/// Walks ISO-BMFF boxes in `bytes[start..end]`, yielding `(type, body range)`.
fn mp4_boxes(bytes: &[u8], start: usize, end: usize) -> Vec<([u8; 4], std::ops::Range<usize>)> {
    let mut boxes = Vec::new();
    let mut offset = start;
    while offset + 8 <= end {
        let size32 = u32::from_be_bytes([bytes[offset], bytes[offset + 1], bytes[offset + 2], bytes[offset + 3]]);
        let kind = [bytes[offset + 4], bytes[offset + 5], bytes[offset + 6], bytes[offset + 7]];
        let (header, size) = match size32 {
            0 => (8, end - offset),
            1 if offset + 16 <= end => {
                let mut large = [0u8; 8];
                large.copy_from_slice(&bytes[offset + 8..offset + 16]);
                (16, usize::try_from(u64::from_be_bytes(large)).unwrap_or(usize::MAX))
            }
            n => (8, n as usize),
        };
        if size < header || offset.saturating_add(size) > end {
            break;
        }
        boxes.push((kind, offset + header..offset + size));
        offset += size;
    }
    boxes
}

fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    bytes.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

fn be_u64(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at + 8)?;
    Some(u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
}

/// The encoder delay of the first audio track of an MP4, in seconds, from its edit list's media time
/// (`moov/trak/edts/elst`) over the media timescale (`mdia/mdhd`).
fn mp4_audio_priming_seconds(bytes: &[u8]) -> Option<f64> {
    let find = |range: &std::ops::Range<usize>, kind: &[u8; 4]| {
        mp4_boxes(bytes, range.start, range.end).into_iter().find(|(k, _)| k == kind).map(|(_, r)| r)
    };
    let moov = find(&(0..bytes.len()), b"moov")?;
    for (kind, trak) in mp4_boxes(bytes, moov.start, moov.end) {
        if &kind != b"trak" {
            continue;
        }
        let mdia = find(&trak, b"mdia")?;
        let hdlr = find(&mdia, b"hdlr")?;
        if bytes.get(hdlr.start + 8..hdlr.start + 12)? != b"soun" {
            continue;
        }
        let mdhd = find(&mdia, b"mdhd")?;
        let timescale = match bytes.get(mdhd.start)? {
            0 => be_u32(bytes, mdhd.start + 12)?,
            _ => be_u32(bytes, mdhd.start + 20)?,
        };
        let elst = find(&find(&trak, b"edts")?, b"elst")?;
        let version = *bytes.get(elst.start)?;
        if be_u32(bytes, elst.start + 4)? == 0 || timescale == 0 {
            return None;
        }
        let media_time = match version {
            0 => i64::from(be_u32(bytes, elst.start + 12)? as i32),
            _ => be_u64(bytes, elst.start + 16)? as i64,
        };
        return (media_time > 0).then(|| media_time as f64 / f64::from(timescale));
    }
    None
}

/// Resamples mono audio with rubato's FFT resampler (fixed ratio, anti-aliased). A no-op when the
/// rates match.
pub fn resample(samples: &[f32], from_rate: u32, to_rate: u32) -> Result<Vec<f32>, AudioError> {
    use rubato::Resampler;

    if from_rate == to_rate || samples.is_empty() {
        return Ok(samples.to_vec());
    }
    if from_rate == 0 || to_rate == 0 {
        return Err(AudioError::InvalidParams("sample rates must be positive".to_owned()));
    }
    check_rate(from_rate, false)?;
    check_rate(to_rate, false)?;
    let mut resampler =
        rubato::Fft::<f32>::new(from_rate as usize, to_rate as usize, 1024, 1, rubato::FixedSync::Input)
            .map_err(|e| AudioError::Resample(e.to_string()))?;
    let input = audioadapter_buffers::owned::InterleavedOwned::new_from(samples.to_vec(), 1, samples.len())
        .map_err(|e| AudioError::Resample(e.to_string()))?;
    let output = resampler.process_all(&input, samples.len(), None).map_err(|e| AudioError::Resample(e.to_string()))?;
    Ok(output.take_data())
}

#[cfg(test)]
mod tests;
