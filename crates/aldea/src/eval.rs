//! `aldea eval <dir> [--model M] [--beam N] [--json]`: transcribes the files of `<dir>/refs.tsv` and
//! prints per-file and total word error rate (Whisper's English normalizer on both sides) and the
//! real-time factor.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use aldea_eval::{english_word_errors, WerStats};
use anyhow::Context;
use clap::Args;

use crate::transcribe::{self, ModelArgs};
use crate::{output, Settings};

#[derive(Debug, Args)]
pub(crate) struct EvalArgs {
    /// A folder with `refs.tsv` (header row; file, reference, other columns ignored).
    dir: PathBuf,
    #[command(flatten)]
    model: ModelArgs,
    /// Print one JSON object per file and a final summary object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Reads `refs.tsv`: a header row, then `file<TAB>reference[<TAB>…]`.
pub(crate) fn read_refs(dir: &std::path::Path) -> anyhow::Result<Vec<(String, String)>> {
    let path = dir.join("refs.tsv");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let rows: Vec<(String, String)> = text
        .lines()
        .skip(1)
        .filter(|l| !l.trim().is_empty())
        .filter_map(|l| {
            let mut cols = l.split('\t');
            Some((cols.next()?.trim().to_owned(), cols.next()?.trim().to_owned()))
        })
        .collect();
    if rows.is_empty() {
        anyhow::bail!("{} has no rows", path.display());
    }
    Ok(rows)
}

pub(crate) fn run(settings: &Settings, args: &EvalArgs) -> anyhow::Result<ExitCode> {
    let refs = read_refs(&args.dir)?;
    let loaded = transcribe::load(settings, &args.model, 1)?;
    let options = args.model.options();
    let mut total = WerStats::default();
    let (mut audio_s, mut compute_s) = (0.0, 0.0);
    let mut n_failed = 0;
    for (file, reference) in &refs {
        let path = args.dir.join(file);
        let started = Instant::now();
        let (transcript, _) =
            match transcribe::transcribe_file(&loaded, &path, &aldea_audio::DecodeOptions::default(), &options) {
                Ok(done) => done,
                Err(e) => {
                    n_failed += 1;
                    output::error(&format!("error: {e:#}"));
                    continue;
                }
            };
        let elapsed = started.elapsed().as_secs_f64();
        audio_s += transcript.duration;
        compute_s += elapsed;
        let hypothesis = transcript.text();
        let stats = english_word_errors(reference, &hypothesis);
        total.add(stats);
        if args.json {
            output::result_line(&serde_json::to_string(&serde_json::json!({
                "file": file, "wer": stats.wer_percent(), "errors": stats.errors(),
                "reference_words": stats.reference_words, "hypothesis": hypothesis,
                "duration": transcript.duration, "seconds": elapsed,
            }))?);
        } else {
            output::result_line(&format!(
                "{file}\tWER {:6.2}%\t({}/{})\t{hypothesis}",
                stats.wer_percent(),
                stats.errors(),
                stats.reference_words
            ));
        }
    }
    let rtf = if audio_s > 0.0 { compute_s / audio_s } else { 0.0 };
    if args.json {
        output::result_line(&serde_json::to_string(&serde_json::json!({
            "total": true, "files": refs.len() - n_failed, "failed": n_failed, "wer": total.wer_percent(),
            "errors": total.errors(), "reference_words": total.reference_words,
            "substitutions": total.substitutions, "deletions": total.deletions, "insertions": total.insertions,
            "audio_seconds": audio_s, "compute_seconds": compute_s, "rtf": rtf,
        }))?);
    } else {
        output::result_line(&format!(
            "total\tWER {:.2}% ({}/{} words: {} sub, {} del, {} ins) over {} files; audio {audio_s:.1} s, compute {compute_s:.1} s, RTF {rtf:.3}",
            total.wer_percent(),
            total.errors(),
            total.reference_words,
            total.substitutions,
            total.deletions,
            total.insertions,
            refs.len() - n_failed
        ));
    }
    Ok(if n_failed > 0 { ExitCode::FAILURE } else { ExitCode::SUCCESS })
}
