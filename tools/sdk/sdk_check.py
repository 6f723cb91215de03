"""The official SDKs against a running gateway: deepgram-sdk (file and live stream, pointed at the
gateway through its `environment` option), the OpenAI SDK (`base_url`, model whisper-1, all five
response formats), and a raw `websockets` client with the `token, <key>` subprotocol whose every
message is validated strictly against the Deepgram SDK's own message models. With a second
recording (speech with pauses), the Deepgram SDK also reads `utterances` and `paragraphs`, and
every field of theirs the SDK models must hold what the raw JSON holds.

Usage: sdk_check.py BASE_URL KEY WAV_16K_MONO [WAV_WITH_PAUSES]
Prints one JSON line per check on stdout; exits non-zero on the first failure.
"""

import asyncio
import json
import logging
import sys
import threading
import wave

BASE, KEY, WAV = sys.argv[1], sys.argv[2], sys.argv[3]
PAUSED_WAV = sys.argv[4] if len(sys.argv) > 4 else None
WS_BASE = BASE.replace("http://", "ws://").replace("https://", "wss://")


def report(check, **fields):
    print(json.dumps({"check": check, **fields}), flush=True)


def pcm_of(path):
    with wave.open(path, "rb") as w:
        assert w.getframerate() == 16000 and w.getnchannels() == 1 and w.getsampwidth() == 2, "16 kHz mono s16 WAV"
        return w.readframes(w.getnframes())


class Skipped(logging.Handler):
    """Counts the SDK's 'Skipping unknown WebSocket message' warnings: none may happen."""

    def __init__(self):
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record):
        if "Skipping unknown" in record.getMessage():
            self.count += 1


def deepgram_checks(pcm, audio_file):
    from deepgram import DeepgramClient
    from deepgram.core.events import EventType
    from deepgram.environment import DeepgramClientEnvironment

    environment = DeepgramClientEnvironment(base=BASE, production=WS_BASE, agent=WS_BASE, agent_rest=BASE)
    client = DeepgramClient(api_key=KEY, environment=environment)

    response = client.listen.v1.media.transcribe_file(request=audio_file, model="nova-3", smart_format=True)
    alternative = response.results.channels[0].alternatives[0]
    assert response.metadata.duration > 0
    assert alternative.words and all(w.end >= w.start for w in alternative.words)
    report("deepgram_file", transcript=alternative.transcript, duration=response.metadata.duration)

    skipped = Skipped()
    logging.getLogger("deepgram").addHandler(skipped)
    logging.getLogger("deepgram").setLevel(logging.WARNING)
    kinds, finals = [], []
    with client.listen.v1.connect(
        model="nova-3", encoding="linear16", sample_rate=16000, interim_results=True, vad_events=True
    ) as socket:

        def on_message(message):
            kind = getattr(message, "type", None)
            kinds.append(kind)
            if kind == "Results" and message.is_final:
                finals.append(message.channel.alternatives[0].transcript)

        socket.on(EventType.MESSAGE, on_message)
        listener = threading.Thread(target=socket.start_listening, daemon=True)
        listener.start()
        for i in range(0, len(pcm), 6400):  # 200 ms chunks, as fast as they go
            socket.send_media(pcm[i : i + 6400])
        socket.send_close_stream()
        listener.join(timeout=120)
        assert not listener.is_alive(), "the stream never closed"
    assert skipped.count == 0, f"the SDK skipped {skipped.count} messages it could not parse"
    assert kinds[0] == "Metadata" and kinds[-1] == "Metadata", kinds
    assert "Results" in kinds
    report("deepgram_live", transcript=" ".join(t for t in finals if t), kinds=sorted(set(k for k in kinds if k)))


def deepgram_structure_check(audio_file):
    """utterances and paragraphs: typed access through the SDK, and the SDK's models hold every
    field the raw answer has (nothing it models is dropped)."""
    import urllib.request

    from deepgram import DeepgramClient
    from deepgram.environment import DeepgramClientEnvironment

    environment = DeepgramClientEnvironment(base=BASE, production=WS_BASE, agent=WS_BASE, agent_rest=BASE)
    client = DeepgramClient(api_key=KEY, environment=environment)
    response = client.listen.v1.media.transcribe_file(
        request=audio_file, model="nova-3", utterances=True, utt_split=0.8, paragraphs=True
    )
    request = urllib.request.Request(
        f"{BASE}/v1/listen?model=nova-3&utterances=true&utt_split=0.8&paragraphs=true",
        data=audio_file,
        headers={"Authorization": f"Token {KEY}", "Content-Type": "audio/wav"},
    )
    with urllib.request.urlopen(request, timeout=120) as answer:
        raw = json.load(answer)
    utterances = response.results.utterances
    alternative = response.results.channels[0].alternatives[0]
    paragraphs = alternative.paragraphs
    # Typed access to every field.
    for utterance in utterances:
        assert utterance.id and utterance.channel == 0 and utterance.end >= utterance.start
        assert 0 <= utterance.confidence <= 1 and utterance.transcript
        assert all(w.punctuated_word and w.end >= w.start for w in utterance.words)
    for paragraph in paragraphs.paragraphs:
        assert paragraph.num_words > 0 and paragraph.end >= paragraph.start
        assert all(s.text and s.end >= s.start for s in paragraph.sentences)
    assert sum(p.num_words for p in paragraphs.paragraphs) == len(alternative.words), "every word in a paragraph"
    # The same fields, the same values, as the raw JSON of the same audio (another request: its
    # utterance ids are its own).
    dumped = [u.model_dump(exclude_none=True) for u in utterances]
    expected = raw["results"]["utterances"]
    assert all(len(u.pop("id")) == 36 for u in dumped + expected), "utterance ids are UUIDs"
    assert dumped == expected, f"the SDK's utterances differ from the answer's: {dumped} vs {expected}"
    dumped = paragraphs.model_dump(exclude_none=True)
    assert dumped == raw["results"]["channels"][0]["alternatives"][0]["paragraphs"], "paragraphs differ"
    words = [w.punctuated_word for u in utterances for w in u.words]
    assert words == [w.punctuated_word for w in alternative.words], "every word in one utterance"
    report(
        "deepgram_structure",
        transcript=" ".join(u.transcript for u in utterances),
        utterances=[[round(u.start, 3), round(u.end, 3)] for u in utterances],
        paragraphs=[len(p.sentences) for p in paragraphs.paragraphs],
        paragraphs_transcript=paragraphs.transcript,
    )


def openai_checks(audio_file):
    import openai

    client = openai.OpenAI(api_key=KEY, base_url=BASE + "/v1")
    json_answer = client.audio.transcriptions.create(file=("a.wav", audio_file), model="whisper-1")
    report("openai_json", transcript=json_answer.text)
    verbose = client.audio.transcriptions.create(
        file=("a.wav", audio_file),
        model="whisper-1",
        response_format="verbose_json",
        timestamp_granularities=["word", "segment"],
    )
    assert verbose.duration > 0 and verbose.language == "english"
    assert verbose.segments and verbose.words
    assert all(s.end >= s.start for s in verbose.segments)
    report("openai_verbose_json", transcript=verbose.text, segments=len(verbose.segments), words=len(verbose.words))
    for fmt in ("text", "srt", "vtt"):
        text = client.audio.transcriptions.create(file=("a.wav", audio_file), model="whisper-1", response_format=fmt)
        assert isinstance(text, str) and text.strip(), fmt
        if fmt == "srt":
            assert text.startswith("1\n") and " --> " in text
        if fmt == "vtt":
            assert text.startswith("WEBVTT") and " --> " in text
        report("openai_" + fmt, transcript=text)


async def raw_websocket_check(pcm):
    import websockets
    from deepgram.listen.v1.types.listen_v1metadata import ListenV1Metadata
    from deepgram.listen.v1.types.listen_v1results import ListenV1Results
    from deepgram.listen.v1.types.listen_v1speech_started import ListenV1SpeechStarted
    from deepgram.listen.v1.types.listen_v1utterance_end import ListenV1UtteranceEnd

    models = {
        "Metadata": ListenV1Metadata,
        "Results": ListenV1Results,
        "SpeechStarted": ListenV1SpeechStarted,
        "UtteranceEnd": ListenV1UtteranceEnd,
    }
    url = WS_BASE + "/v1/listen?encoding=linear16&sample_rate=16000&vad_events=true&utterance_end_ms=1000"
    finals, kinds = [], []
    async with websockets.connect(url, subprotocols=["token", KEY]) as ws:
        assert ws.subprotocol == "token", ws.subprotocol

        async def send():
            for i in range(0, len(pcm), 3200):
                await ws.send(pcm[i : i + 3200])
            await ws.send(json.dumps({"type": "CloseStream"}))

        sender = asyncio.create_task(send())
        async for raw in ws:
            message = json.loads(raw)
            kind = message["type"]
            assert kind in models, f"a message type the SDK does not know: {kind}"
            parsed = models[kind].model_validate(message)
            kinds.append(kind)
            if kind == "Results" and parsed.is_final:
                finals.append(parsed.channel.alternatives[0].transcript)
        await sender
        assert ws.close_code == 1000, ws.close_code
    report("raw_websocket", transcript=" ".join(t for t in finals if t), kinds=sorted(set(kinds)))


def main():
    pcm = pcm_of(WAV)
    with open(WAV, "rb") as f:
        audio_file = f.read()
    deepgram_checks(pcm, audio_file)
    if PAUSED_WAV:
        with open(PAUSED_WAV, "rb") as f:
            deepgram_structure_check(f.read())
    openai_checks(audio_file)
    asyncio.run(raw_websocket_check(pcm))


if __name__ == "__main__":
    main()
