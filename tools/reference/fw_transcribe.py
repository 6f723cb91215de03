"""faster-whisper on a list of files, for comparisons with aldea on the same weights.

usage: fw_transcribe.py MODEL_DIR BEAM THREADS [--words] FILE...
Prints one JSON object per file: {"file", "text", "seconds", "words": [[word, start, end], ...]}.
"""
import json
import sys
import time

from faster_whisper import WhisperModel
from faster_whisper.audio import decode_audio

args = [a for a in sys.argv[1:] if a != "--words"]
words = "--words" in sys.argv
model_dir, beam, threads, files = args[0], int(args[1]), int(args[2]), args[3:]
model = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=threads, num_workers=1)
for path in files:
    audio = decode_audio(path)
    started = time.perf_counter()
    segments, _ = model.transcribe(audio, beam_size=beam, language="en", word_timestamps=words)
    segments = list(segments)
    elapsed = time.perf_counter() - started
    out = {"file": path, "text": "".join(s.text for s in segments).strip(), "seconds": elapsed}
    if words:
        out["words"] = [[w.word, w.start, w.end] for s in segments for w in (s.words or [])]
    print(json.dumps(out), flush=True)
