"""Accuracy per input format: real-dev re-encoded as telephone, compressed and whispered speech, each
transcribed by aldea and by faster-whisper on the same files, weights, beam and threads, and scored
the same way (Whisper's English normalizer on both sides, one alignment counting substitutions,
deletions and insertions). Prints one table row per format and engine.

usage: formats.py --aldea BIN --model-dir DIR --real-dev DIR --synth-refs TSV --work DIR
                  [--beam 5] [--threads 2] [--formats wav,mp3_64k,...] [--whispered 20]
                  [--stream] [--stream-speed 1.0] [--stream-clients 2]

The copies are made once into --work (ffmpeg; espeak-ng `-v en+whisper` for the whispered set).
--stream adds a row "aldea-stream": each file streamed to `aldea stt` over its WebSocket in 100-ms
chunks at --stream-speed x real time (--stream-clients at once), then CloseStream; the transcript is
its finals. G.711 files go as 8-kHz mulaw/alaw frames (telephone streams), the rest as 16-kHz linear16
decoded by ffmpeg from the compressed copy.
"""
import argparse
import asyncio
import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

from whisper_normalizer.english import EnglishTextNormalizer

HERE = os.path.dirname(os.path.abspath(__file__))
FW_SCRIPT = os.path.join(HERE, "..", "reference", "fw_transcribe.py")

# name -> (extension, ffmpeg output options)
FORMATS = {
    "wav": ("wav", None),
    "mp3_64k": ("mp3", ["-ac", "1", "-c:a", "libmp3lame", "-b:a", "64k"]),
    "opus_24k": ("ogg", ["-ac", "1", "-c:a", "libopus", "-b:a", "24k"]),
    "aac_64k": ("m4a", ["-ac", "1", "-c:a", "aac", "-b:a", "64k"]),
    "mulaw_8k": ("wav", ["-ac", "1", "-ar", "8000", "-c:a", "pcm_mulaw"]),
    "alaw_8k": ("wav", ["-ac", "1", "-ar", "8000", "-c:a", "pcm_alaw"]),
    "whispered": ("wav", None),
}


def read_refs(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    return [(r[0], r[1]) for r in rows[1:] if len(r) >= 2]


def make_set(name, args):
    """The folder of one format: its audio files and a refs.tsv naming them."""
    out = os.path.join(args.work, name)
    refs_path = os.path.join(out, "refs.tsv")
    if os.path.exists(refs_path):
        return out
    tmp = out + ".part"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    ext, options = FORMATS[name]
    rows = []
    if name == "whispered":
        for i, (_, text) in enumerate(read_refs(args.synth_refs)[: args.whispered]):
            target = f"whispered_{i + 1:02d}.wav"
            subprocess.run(["espeak-ng", "-v", "en+whisper", "-s", "150", "-w", os.path.join(tmp, target), text],
                           check=True, capture_output=True)
            rows.append((target, text))
    else:
        for source, text in read_refs(os.path.join(args.real_dev, "refs.tsv")):
            target = os.path.splitext(source)[0] + "." + ext
            src = os.path.join(args.real_dev, source)
            if options is None:
                shutil.copyfile(src, os.path.join(tmp, target))
            else:
                subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", src, *options,
                                os.path.join(tmp, target)], check=True)
            rows.append((target, text))
    with open(os.path.join(tmp, "refs.tsv"), "w", newline="") as f:
        w = csv.writer(f, delimiter="\t", lineterminator="\n")
        w.writerow(["file", "reference"])
        w.writerows(rows)
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)
    return out


def align(reference, hypothesis):
    """(substitutions, deletions, insertions) of the word alignment with the fewest edits."""
    r, h = reference.split(), hypothesis.split()
    # cost, subs, dels, ins per cell; ties prefer substitutions, then deletions.
    prev = [(j, 0, 0, j) for j in range(len(h) + 1)]
    for i in range(1, len(r) + 1):
        cur = [(i, 0, i, 0)]
        for j in range(1, len(h) + 1):
            same = r[i - 1] == h[j - 1]
            c, s, d, n = prev[j - 1]
            best = (c + (not same), s + (not same), d, n)
            c, s, d, n = prev[j]
            if c + 1 < best[0]:
                best = (c + 1, s, d + 1, n)
            c, s, d, n = cur[j - 1]
            if c + 1 < best[0]:
                best = (c + 1, s, d, n + 1)
            cur.append(best)
        prev = cur
    _, s, d, n = prev[len(h)]
    return s, d, n


def score(refs, hyps, norm):
    total = {"words": 0, "sub": 0, "del": 0, "ins": 0}
    for file, text in refs:
        reference, hypothesis = norm(text), norm(hyps.get(file, ""))
        s, d, n = align(reference, hypothesis)
        total["words"] += len(reference.split())
        total["sub"] += s
        total["del"] += d
        total["ins"] += n
    return total


def run_aldea(folder, args):
    out = subprocess.run([args.aldea, "eval", folder, "--json", "--beam", str(args.beam), "--threads",
                          str(args.threads)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if out.returncode != 0:
        sys.exit(f"aldea eval {folder} failed:\n{out.stderr[-2000:]}")
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    return {r["file"]: r.get("hypothesis", "") for r in rows if not r.get("total")}


def run_fw(folder, refs, args):
    files = [os.path.join(folder, f) for f, _ in refs]
    out = subprocess.run([sys.executable, FW_SCRIPT, args.model_dir, str(args.beam), str(args.threads), *files],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if out.returncode != 0:
        sys.exit(f"faster-whisper on {folder} failed:\n{out.stderr[-2000:]}")
    rows = [json.loads(line) for line in out.stdout.splitlines() if line.strip()]
    return {os.path.basename(r["file"]): r["text"] for r in rows}


def stream_payload(path, name):
    """(query, bytes per second, payload) of one file as a stream would send it."""
    if name in ("mulaw_8k", "alaw_8k"):
        codec = name.split("_")[0]
        query, rate, options = f"encoding={codec}&sample_rate=8000", 8000, ["-c:a", "copy", "-f", codec]
    else:
        query, rate, options = "encoding=linear16&sample_rate=16000", 32000, ["-ac", "1", "-ar", "16000", "-f", "s16le"]
    out = subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", path, *options, "-"],
                         check=True, capture_output=True)
    return query, rate, out.stdout


async def stream_one(url, path, name, speed):
    import websockets

    query, rate, payload = stream_payload(path, name)
    chunk = rate // 10
    finals = []
    async with websockets.connect(f"{url}?{query}&interim_results=false", max_size=None) as ws:
        async def receive():
            async for message in ws:
                if isinstance(message, str):
                    event = json.loads(message)
                    if event.get("type") == "Results" and event.get("is_final"):
                        finals.append(event["channel"]["alternatives"][0]["transcript"])

        receiver = asyncio.create_task(receive())
        started = time.monotonic()
        for i in range(0, len(payload), chunk):
            await ws.send(payload[i:i + chunk])
            due = started + (i + chunk) / rate / speed
            await asyncio.sleep(max(0.0, due - time.monotonic()))
        await ws.send(json.dumps({"type": "CloseStream"}))
        await receiver
    return " ".join(t for t in finals if t)


async def stream_all(url, folder, refs, name, args):
    gate = asyncio.Semaphore(args.stream_clients)

    async def one(file):
        async with gate:
            return file, await stream_one(url, os.path.join(folder, file), name, args.stream_speed)

    return dict(await asyncio.gather(*(one(f) for f, _ in refs)))


def start_stt(args):
    """`aldea stt` on a free loopback port, once ready: (process, ws URL)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([args.aldea, "stt", "--listen", f"127.0.0.1:{port}", "--model", args.model_dir,
                             "--threads", str(args.threads)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            sys.exit("aldea stt exited before it was ready")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/ready", timeout=2) as r:
                if r.status == 200:
                    return proc, f"ws://127.0.0.1:{port}/v1/listen"
        except OSError:
            pass
        time.sleep(0.2)
    proc.kill()
    sys.exit("aldea stt was not ready within 120 s")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--aldea", required=True)
    p.add_argument("--model-dir", required=True)
    p.add_argument("--real-dev", required=True)
    p.add_argument("--synth-refs", required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--beam", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--formats", default=",".join(FORMATS))
    p.add_argument("--whispered", type=int, default=20)
    p.add_argument("--stream", action="store_true")
    p.add_argument("--stream-speed", type=float, default=1.0)
    p.add_argument("--stream-clients", type=int, default=2)
    p.add_argument("--engines", default="aldea,faster-whisper")
    args = p.parse_args()
    norm = EnglishTextNormalizer()
    stt, url = start_stt(args) if args.stream else (None, None)
    print("format      engine          words   WER %   sub  del  ins   del % of words")
    for name in args.formats.split(","):
        if name not in FORMATS:
            sys.exit(f"unknown format {name!r}; one of {', '.join(FORMATS)}")
        folder = make_set(name, args)
        refs = read_refs(os.path.join(folder, "refs.tsv"))
        engines = {
            "aldea": lambda: run_aldea(folder, args),
            "faster-whisper": lambda: run_fw(folder, refs, args),
            "aldea-stream": lambda: asyncio.run(stream_all(url, folder, refs, name, args)),
        }
        chosen = [e for e in args.engines.split(",") if e] + (["aldea-stream"] if args.stream else [])
        for engine in chosen:
            if engine not in engines:
                sys.exit(f"unknown engine {engine!r}; one of {', '.join(engines)}")
            hyps = engines[engine]()
            t = score(refs, hyps, norm)
            errors = t["sub"] + t["del"] + t["ins"]
            words = max(1, t["words"])
            print(f"{name:<11} {engine:<15} {t['words']:>5} {100 * errors / words:>7.2f} {t['sub']:>5} "
                  f"{t['del']:>4} {t['ins']:>4}   {100 * t['del'] / words:>6.2f}", flush=True)
    if stt is not None:
        stt.terminate()
        stt.wait()


if __name__ == "__main__":
    main()
