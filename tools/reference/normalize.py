"""Whisper's EnglishTextNormalizer (the whisper-normalizer package) over stdin: one text per line in,
one normalized text per line out. Used to generate and check the Rust port's fixture."""
import sys

from whisper_normalizer.english import EnglishTextNormalizer

normalizer = EnglishTextNormalizer()
for line in sys.stdin:
    print(normalizer(line.rstrip("\n")))
