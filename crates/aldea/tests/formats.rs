//! Every format of the Speech API through `aldea transcribe`: fixtures are made here from the real-dev
//! recordings (joined into one file of about a minute) with Debian's ffmpeg at pinned settings, and
//! each one's WER must stay within 2.0 points of the 16 kHz WAV's (5.0 for 8 kHz telephone audio, whose
//! band itself loses information). A format over that margin still passes when the fault is not our
//! decoding: faster-whisper on the same file does as badly, or our engine does as badly on ffmpeg's
//! decoding of it (issue 3 keeps the strict per-format gate open until the margin holds everywhere). Needs the environment `scripts/test.sh` sets (models, ffmpeg).

use std::path::{Path, PathBuf};
use std::process::Command;

use aldea_eval::english_word_errors;

mod common;
use common::{env_path, real_dev, real_dev_refs};

fn write_wav(path: &Path, samples: &[f32], rate: u32) {
    std::fs::write(path, aldea_testkit::wav::wav_mono16(samples, rate)).unwrap();
}

/// The real-dev recordings in four groups (each at least 10 s), every clip followed by 0.5 s of
/// silence: one fixture file and its joined reference per group. Separate files keep one unstable
/// decision of the model from spreading over the whole set through the previous-text prompt.
fn joined_fixtures(dir: &Path) -> Vec<(PathBuf, String)> {
    let rows = real_dev_refs();
    let groups: [&[&str]; 4] = [
        &["alsa_"],
        &["ps_cards_"],
        &["ps_forever", "ps_goforward", "ps_librivox_087"],
        &["ps_librivox_08", "ps_librivox_09"],
    ];
    let mut used = std::collections::HashSet::new();
    let mut fixtures = Vec::new();
    for (group_idx, prefixes) in groups.iter().enumerate() {
        let mut samples = Vec::new();
        let mut reference = Vec::new();
        for (file, text) in &rows {
            if used.contains(file) || !prefixes.iter().any(|p| file.starts_with(p)) {
                continue;
            }
            used.insert(file.clone());
            samples.extend(aldea_audio::load_mono_16k(&real_dev(file)).unwrap());
            samples.extend(std::iter::repeat_n(0.0, 8_000));
            reference.push(text.as_str());
        }
        assert!(samples.len() >= 16_000 * 10, "group {group_idx} lasts under 10 s");
        let path = dir.join(format!("group{group_idx}.wav"));
        write_wav(&path, &samples, 16_000);
        fixtures.push((path, aldea_eval::joined_reference(reference)));
    }
    assert_eq!(used.len(), rows.len(), "every clip is in a group");
    fixtures
}

fn ffmpeg(input: &Path, args: &[&str], output: &Path) {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-loglevel", "error", "-y", "-i"])
        .arg(input)
        .args(args)
        .arg(output)
        .output()
        .expect("ffmpeg (scripts/test.sh installs it)");
    assert!(out.status.success(), "ffmpeg {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

fn transcribe(path: &Path, extra: &[&str]) -> String {
    transcribe_all(&[path.to_owned()], extra).remove(0)
}

/// Transcribes several files in one run (one model load); transcripts in the order of `paths`.
fn transcribe_all(paths: &[PathBuf], extra: &[&str]) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_aldea"))
        .env("ALDEA_HOME", env_path("ALDEA_TEST_HOME"))
        .args(["transcribe", "--format", "text", "--threads", "2"])
        .args(extra)
        .args(paths)
        .output()
        .unwrap();
    assert!(out.status.success(), "{paths:?}: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if paths.len() == 1 {
        return vec![text.trim().to_owned()];
    }
    paths
        .iter()
        .map(|p| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{}\t", p.display())))
                .unwrap_or_else(|| panic!("no line for {}", p.display()))
                .to_owned()
        })
        .collect()
}

/// faster-whisper's transcripts (ffmpeg decoding, same weights, beam 5), by file.
fn faster_whisper(paths: &[PathBuf]) -> std::collections::HashMap<PathBuf, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/reference/fw_transcribe.py");
    let out = Command::new(env_path("ALDEA_TEST_PYTHON"))
        // Same GEMM backend as ours (oneDNN), also on Intel CPUs where the wheel would pick MKL.
        .env("CT2_USE_MKL", "0")
        .arg(script)
        .arg(env_path("ALDEA_TEST_MODELS").join("tiny.en"))
        .args(["5", "2", "--words"])
        .args(paths)
        .output()
        .expect("running faster-whisper");
    assert!(out.status.success(), "faster-whisper: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (PathBuf::from(v["file"].as_str().unwrap()), v["text"].as_str().unwrap().to_owned())
        })
        .collect()
}

/// WER over all fixtures together.
fn total_wer(fixtures: &[(PathBuf, String)], transcripts: &[String]) -> f64 {
    let mut total = aldea_eval::WerStats::default();
    for ((_, reference), text) in fixtures.iter().zip(transcripts) {
        total.add(english_word_errors(reference, text));
    }
    total.wer_percent()
}

/// Each fixture whose number of errors differs from the 16 kHz WAV's: the file, both counts and
/// the format's normalized transcript, so that a report names the words a codec changed.
fn differences_from_wav(fixtures: &[(PathBuf, String)], wav: &[String], format: &[String]) -> Vec<String> {
    fixtures
        .iter()
        .zip(wav.iter().zip(format))
        .enumerate()
        .filter_map(|(idx, ((_, reference), (w, f)))| {
            let (we, fe) = (english_word_errors(reference, w).errors(), english_word_errors(reference, f).errors());
            (we != fe).then(|| format!("file {idx}: {fe} errors (WAV {we}): {:?}", aldea_eval::normalize_english(f)))
        })
        .collect()
}

/// (name, file, ffmpeg output arguments, extra aldea arguments, allowed WER margin over the WAV's)
type Case = (&'static str, &'static str, &'static [&'static str], &'static [&'static str], f64);

#[test]
fn every_format_transcribes_within_the_wer_margin_of_the_16k_wav() {
    // ALDEA_KEEP_FIXTURES=1 keeps the generated files for inspection.
    let keep = std::env::var_os("ALDEA_KEEP_FIXTURES").is_some();
    let dir = tempfile::Builder::new().prefix("aldea-formats-").disable_cleanup(keep).tempdir().unwrap();
    if keep {
        eprintln!("fixtures in {}", dir.path().display());
    }
    let fixtures = joined_fixtures(dir.path());
    let wavs: Vec<PathBuf> = fixtures.iter().map(|(p, _)| p.clone()).collect();
    let wav_texts = transcribe_all(&wavs, &[]);
    let baseline = total_wer(&fixtures, &wav_texts);
    eprintln!("16 kHz WAV: WER {baseline:.2}% over {} files", wavs.len());

    let cases: &[Case] = &[
        ("mp3 64 kb/s", "x.mp3", &["-c:a", "libmp3lame", "-b:a", "64k"], &[], 2.0),
        ("ogg opus 24 kb/s", "x.opus.ogg", &["-c:a", "libopus", "-b:a", "24k", "-f", "ogg"], &[], 2.0),
        ("webm opus 32 kb/s", "x.webm", &["-c:a", "libopus", "-b:a", "32k"], &[], 2.0),
        ("m4a aac 64 kb/s", "x.m4a", &["-c:a", "aac", "-b:a", "64k"], &[], 2.0),
        ("adts aac 64 kb/s", "x.aac", &["-c:a", "aac", "-b:a", "64k", "-f", "adts"], &[], 2.0),
        ("ogg vorbis q3", "x.vorbis.ogg", &["-c:a", "libvorbis", "-q:a", "3"], &[], 2.0),
        ("flac", "x.flac", &["-c:a", "flac"], &[], 2.0),
        ("wav 44.1 kHz stereo", "x44.wav", &["-ar", "44100", "-ac", "2"], &[], 2.0),
        ("wav float 32", "xf.wav", &["-c:a", "pcm_f32le"], &[], 2.0),
        ("wav 24-bit 48 kHz", "x24.wav", &["-ar", "48000", "-c:a", "pcm_s24le"], &[], 2.0),
        ("wav mu-law 8 kHz", "xu.wav", &["-ar", "8000", "-c:a", "pcm_mulaw"], &[], 5.0),
        ("wav a-law 8 kHz", "xa.wav", &["-ar", "8000", "-c:a", "pcm_alaw"], &[], 5.0),
        (
            "headerless mu-law 8 kHz",
            "x.ulaw",
            &["-ar", "8000", "-f", "mulaw"],
            &["--encoding", "mulaw", "--sample-rate", "8000"],
            5.0,
        ),
        (
            "headerless a-law 8 kHz",
            "x.alaw",
            &["-ar", "8000", "-f", "alaw"],
            &["--encoding", "alaw", "--sample-rate", "8000"],
            5.0,
        ),
        (
            "headerless linear16 stereo 22.05 kHz",
            "x.raw",
            &["-ar", "22050", "-ac", "2", "-f", "s16le"],
            &["--encoding", "linear16", "--sample-rate", "22050", "--channels", "2"],
            2.0,
        ),
    ];
    let mut results = Vec::new();
    for (name, file, ffmpeg_args, aldea_args, margin) in cases {
        let paths: Vec<PathBuf> = wavs
            .iter()
            .enumerate()
            .map(|(idx, wav)| {
                let path = dir.path().join(format!("{idx}-{file}"));
                ffmpeg(wav, ffmpeg_args, &path);
                path
            })
            .collect();
        let texts = transcribe_all(&paths, aldea_args);
        let wer = total_wer(&fixtures, &texts);
        for line in differences_from_wav(&fixtures, &wav_texts, &texts) {
            eprintln!("{name}: {line}");
        }
        results.push((*name, paths, aldea_args.is_empty(), wer, *margin));
    }
    // Where a lossy codec's artefacts change what the model hears, faster-whisper (ffmpeg's decoders)
    // on the very same file is the yardstick for our decoding; headerless files have no container for
    // ffmpeg to detect and are held to the WAV margin alone.
    let containers: Vec<PathBuf> = results.iter().filter(|r| r.2).flat_map(|r| r.1.iter().cloned()).collect();
    let theirs = faster_whisper(&containers);
    let mut failures = Vec::new();
    for (name, paths, in_container, wer, margin) in &results {
        let fw_wer = if *in_container {
            let texts: Vec<String> = paths.iter().map(|p| theirs[p].clone()).collect();
            Some(total_wer(&fixtures, &texts))
        } else {
            None
        };
        let gate = baseline + margin;
        let fw_note = fw_wer.map_or(String::new(), |w| format!(", faster-whisper on the same files {w:.2}%"));
        eprintln!("{name}: WER {wer:.2}% (gate {gate:.2}%{fw_note})");
        let decoder_as_good = fw_wer.is_some_and(|w| *wer <= w + 1.0);
        if *wer > gate && !decoder_as_good {
            // One word is 0.85 points here, and tiny.en's answer to a codec's artefacts differs from
            // machine to machine (CPU kernels). The question this test asks is whether our decoding
            // is at fault: the same engine on ffmpeg's decoding of the very same files answers it.
            let ffmpeg_decoded: Vec<PathBuf> = paths
                .iter()
                .map(|p| {
                    let out = p.with_extension("ffmpeg.wav");
                    ffmpeg(p, &["-ac", "1", "-ar", "16000", "-c:a", "pcm_f32le"], &out);
                    out
                })
                .collect();
            let with_ffmpeg = total_wer(&fixtures, &transcribe_all(&ffmpeg_decoded, &[]));
            eprintln!("{name}: our engine on ffmpeg's decoding of the same files: WER {with_ffmpeg:.2}%");
            if *wer > with_ffmpeg + 1.0 {
                failures
                    .push(format!("{name}: {wer:.2}% > {gate:.2}%{fw_note}, {with_ffmpeg:.2}% on ffmpeg's decoding"));
            }
        }
    }
    assert!(failures.is_empty(), "{failures:?}");
}

#[test]
fn truncated_and_damaged_files_decode_what_they_can() {
    let dir = tempfile::tempdir().unwrap();
    let wav = joined_fixtures(dir.path()).remove(3).0;
    for (file, args) in [("t.mp3", &["-c:a", "libmp3lame", "-b:a", "64k"][..]), ("t.flac", &["-c:a", "flac"][..])] {
        let path = dir.path().join(file);
        ffmpeg(&wav, args, &path);
        let bytes = std::fs::read(&path).unwrap();
        let cut = dir.path().join(format!("cut-{file}"));
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let decoded = aldea_audio::decode(&std::fs::read(&cut).unwrap()).unwrap();
        let whole = aldea_audio::decode(&bytes).unwrap();
        let ratio = decoded.duration_s() / whole.duration_s();
        eprintln!("{file}: half the bytes gave {ratio:.2} of the audio, truncated flag {}", decoded.truncated);
        assert!((0.3..0.7).contains(&ratio), "{file}: {ratio}");
        let text = transcribe(&cut, &[]);
        assert!(text.split_whitespace().count() > 10, "{file}: {text}");
    }
}
