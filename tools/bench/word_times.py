"""Word start times of aldea against faster-whisper (word_timestamps=True) on the same files, weights
and beam: the words both recognized (matched in order) and the share whose starts differ by <= 0.3 s.

usage: word_times.py --aldea BIN --model-dir DIR [--beam 5] [--threads 2] FILE...
"""
import argparse
import difflib
import json
import os
import re
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
FW_SCRIPT = os.path.join(HERE, "..", "reference", "fw_transcribe.py")


def bare(w):
    return re.sub(r"[^\w']", "", w.lower())


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--aldea", required=True)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("files", nargs="+")
    a = p.parse_args()
    fw = subprocess.run([sys.executable, FW_SCRIPT, a.model_dir, str(a.beam), str(a.threads), "--words", *a.files],
                        check=True, stdout=subprocess.PIPE, text=True).stdout.strip().splitlines()
    matched = close = 0
    deltas = []
    for path, fw_line in zip(a.files, fw):
        theirs = [(bare(w), s) for w, s, _ in json.loads(fw_line)["words"]]
        out = subprocess.run([a.aldea, "transcribe", path, "--model", a.model_dir, "--beam", str(a.beam),
                              "--threads", str(a.threads)], check=True, stdout=subprocess.PIPE, text=True,
                             env=dict(os.environ, ALDEA_LOG="error")).stdout
        words = json.loads(out)["results"]["channels"][0]["alternatives"][0]["words"]
        ours = [(w["word"], w["start"]) for w in words]
        sm = difflib.SequenceMatcher(a=[w for w, _ in ours], b=[w for w, _ in theirs], autojunk=False)
        for block in sm.get_matching_blocks():
            for k in range(block.size):
                d = abs(ours[block.a + k][1] - theirs[block.b + k][1])
                deltas.append(d)
                matched += 1
                close += d <= 0.3
    deltas.sort()
    median = deltas[len(deltas) // 2] if deltas else float("nan")
    print(f"{matched} words matched; {close} ({100.0 * close / max(1, matched):.1f} %) start within 0.3 s "
          f"of faster-whisper; median |delta| {median:.3f} s")


if __name__ == "__main__":
    main()
