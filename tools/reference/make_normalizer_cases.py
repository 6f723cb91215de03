"""Builds crates/aldea-eval/tests/normalizer_cases.jsonl: [input, expected] pairs where expected is the
whisper-normalizer package's EnglishTextNormalizer output. Inputs: every reference of fixtures/
(and each sentence of the long one), plus hand-picked strings that exercise each rule.

usage: make_normalizer_cases.py FIXTURES_DIR OUT.jsonl   (FIXTURES_DIR: the repository's fixtures/)
"""
import csv
import json
import re
import sys

from whisper_normalizer.english import EnglishTextNormalizer

EXTRA = [
    "Mr. and Mrs. Smith won't go to St. Louis; they can't.",
    "It's $20 million, or 15 per cent, or twenty-five percent.",
    "one oh one, double seven, triple zero, two point five",
    "The 1960s and the 274th and 32nd, minus five and plus 3",
    "three and a half, one and a half million, and a half",
    "I paid $2 and 7 cents, then £0.50, then €3.",
    "[laughs] (inaudible) hmm um uh, well... ok!",
    "colour, favourite, organise, theatre, travelled",
    "Café naïve façade — œuvre Æsir ß",
    "It was 7:45 a.m. on 2008-03-14; call 555-0123.",
    "one hundred and twenty three thousand four hundred fifty six",
    "ones, twos, sixes, twenties, first, twelfth, ninetieth, millionth",
    "ten thousand dollars and 99 cents",
    "gonna wanna gotta kinda y'all ma'am i'ma",
    "He'd been there; she's gone; they'd done it; it's got to be.",
    "UA 928 leaves from gate B12 at 9 p.m.",
    "1,000,000 and 3,141.59 and 0.5 and .5",
    "twenty one, twenty first, forty-two, nineteen eighty four",
]


def refs(path):
    with open(path, newline="") as f:
        rows = list(csv.reader(f, delimiter="\t"))
    return [r[1] for r in rows[1:] if len(r) > 1]


if __name__ == "__main__":
    base = sys.argv[1]
    inputs = refs(f"{base}/real-dev/refs.tsv") + refs(f"{base}/synth/refs.tsv")
    for long_ref in refs(f"{base}/synth/refs_long.tsv"):
        inputs.append(long_ref)
        inputs.extend(s for s in re.split(r"(?<=[.?!])\s+", long_ref) if s)
    inputs.extend(EXTRA)
    normalizer = EnglishTextNormalizer()
    with open(sys.argv[2], "w") as out:
        for text in inputs:
            out.write(json.dumps([text, normalizer(text)], ensure_ascii=False) + "\n")
    print(len(inputs), "cases")
