"""aldea vs faster-whisper on the same file, weights, threads and beam: whole processes (start, model
load, decode and transcription included), alternating, median of N runs. Prints both medians, the
ratio ours / faster-whisper, both WERs (Whisper's English normalizer on both sides, the Python
package here) and both peak RSS.

usage: compare.py --aldea BIN --model-dir DIR --file WAV --reference TEXT [--threads 2] [--beam 1]
                  [--runs 3] [--no-words]
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

from whisper_normalizer.english import EnglishTextNormalizer

HERE = os.path.dirname(os.path.abspath(__file__))
FW_SCRIPT = os.path.join(HERE, "..", "reference", "fw_transcribe.py")


def wer(reference, hypothesis):
    norm = EnglishTextNormalizer()
    r, h = norm(reference).split(), norm(hypothesis).split()
    d = list(range(len(h) + 1))
    for i in range(1, len(r) + 1):
        prev, d[0] = d[0], i
        for j in range(1, len(h) + 1):
            cur = min(d[j] + 1, d[j - 1] + 1, prev + (r[i - 1] != h[j - 1]))
            prev, d[j] = d[j], cur
    return 100.0 * d[len(h)] / max(1, len(r))


def timed(cmd, env=None):
    """Runs cmd under /usr/bin/time; returns (stdout, wall seconds, peak RSS in MB)."""
    with tempfile.NamedTemporaryFile("r", suffix=".time") as t:
        out = subprocess.run(
            ["/usr/bin/time", "-f", "%e %M", "-o", t.name, *cmd],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        )
        if out.returncode != 0:
            sys.exit(f"failed: {' '.join(cmd)}\n{out.stderr[-2000:]}")
        wall, rss_kb = t.read().split()[-2:]
        return out.stdout, float(wall), int(rss_kb) / 1024.0


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--aldea", required=True)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--file", required=True)
    p.add_argument("--reference", required=True)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--beam", type=int, default=1)
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--no-words", action="store_true", help="run faster-whisper without word timestamps")
    a = p.parse_args()

    ours_cmd = [a.aldea, "transcribe", a.file, "--model", a.model_dir, "--threads", str(a.threads),
                "--beam", str(a.beam), "--format", "text"]
    fw_cmd = [sys.executable, FW_SCRIPT, a.model_dir, str(a.beam), str(a.threads)]
    if not a.no_words:
        fw_cmd.append("--words")
    fw_cmd.append(a.file)
    env = dict(os.environ, ALDEA_LOG="error")

    ours_t, fw_t, ours_rss, fw_rss = [], [], [], []
    ours_text = fw_text = ""
    for run in range(a.runs):
        out, wall, rss = timed(fw_cmd)
        fw_text = json.loads(out.strip().splitlines()[-1])["text"]
        fw_t.append(wall); fw_rss.append(rss)
        out, wall, rss = timed(ours_cmd, env)
        ours_text = out.strip()
        ours_t.append(wall); ours_rss.append(rss)
        print(f"run {run + 1}: aldea {ours_t[-1]:.2f} s ({rss:.0f} MB), faster-whisper {fw_t[-1]:.2f} s ({fw_rss[-1]:.0f} MB)",
              flush=True)
    ours_m, fw_m = statistics.median(ours_t), statistics.median(fw_t)
    print(f"file {os.path.basename(a.file)}, threads {a.threads}, beam {a.beam}, "
          f"faster-whisper word_timestamps={not a.no_words}")
    print(f"aldea          median {ours_m:.2f} s  peak RSS {max(ours_rss):.0f} MB  WER {wer(a.reference, ours_text):.2f}%")
    print(f"faster-whisper median {fw_m:.2f} s  peak RSS {max(fw_rss):.0f} MB  WER {wer(a.reference, fw_text):.2f}%")
    print(f"ratio = ours / faster-whisper = {ours_m / fw_m:.3f}")


if __name__ == "__main__":
    main()
