"""Whisper's reference log-mel spectrogram in numpy (openai/whisper audio.log_mel_spectrogram, without
torch): periodic Hann window, n_fft 400, hop 160, centred frames with reflect padding, power spectrum
with the last frame dropped, librosa Slaney mel filters, log10 clamped at 1e-10, max - 8 floor,
(x + 4) / 4.

usage: whisper_mel.py IN.wav OUT.f32 [n_mels] [padding]
Writes n_mels x n_frames float32 little-endian values (row-major) to OUT.f32.
"""
import sys
import wave

import numpy as np


def mel_filters(sr=16000, n_fft=400, n_mels=80):
    # librosa.filters.mel(sr, n_fft, n_mels, htk=False, norm="slaney"), float64.
    fftfreqs = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    f_sp = 200.0 / 3
    min_log_hz = 1000.0
    min_log_mel = min_log_hz / f_sp
    logstep = np.log(6.4) / 27.0

    def hz_to_mel(f):
        return min_log_mel + np.log(f / min_log_hz) / logstep if f >= min_log_hz else f / f_sp

    mels = np.linspace(0.0, hz_to_mel(sr / 2), n_mels + 2)
    freqs = f_sp * mels
    log_t = mels >= min_log_mel
    freqs[log_t] = min_log_hz * np.exp(logstep * (mels[log_t] - min_log_mel))
    fdiff = np.diff(freqs)
    ramps = freqs.reshape(-1, 1) - fftfreqs.reshape(1, -1)
    lower = -ramps[:-2] / fdiff[:-1, None]
    upper = ramps[2:] / fdiff[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    weights *= (2.0 / (freqs[2 : n_mels + 2] - freqs[:n_mels]))[:, None]
    return weights.astype(np.float32)


def log_mel_spectrogram(audio, n_mels=80, padding=0):
    audio = np.asarray(audio, dtype=np.float32)
    if padding > 0:
        audio = np.pad(audio, (0, padding))
    window = (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(400) / 400)).astype(np.float32)
    padded = np.pad(audio, (200, 200), mode="reflect")
    n_frames = 1 + (len(padded) - 400) // 160
    frames = np.lib.stride_tricks.as_strided(
        padded, (n_frames, 400), (padded.strides[0] * 160, padded.strides[0])
    )
    stft = np.fft.rfft(frames * window, axis=1).T  # (201, n_frames)
    magnitudes = np.abs(stft[:, :-1]) ** 2
    mel_spec = mel_filters(n_mels=n_mels) @ magnitudes.astype(np.float32)
    log_spec = np.log10(np.clip(mel_spec, 1e-10, None))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return ((log_spec + 4.0) / 4.0).astype(np.float32)


def read_wav(path):
    with wave.open(path, "rb") as w:
        assert w.getsampwidth() == 2 and w.getframerate() == 16000, "16 kHz 16-bit WAV expected"
        data = np.frombuffer(w.readframes(w.getnframes()), dtype="<i2").astype(np.float32) / 32768.0
        return data.reshape(-1, w.getnchannels()).mean(axis=1)


if __name__ == "__main__":
    n_mels = int(sys.argv[3]) if len(sys.argv) > 3 else 80
    padding = int(sys.argv[4]) if len(sys.argv) > 4 else 0
    mel = log_mel_spectrogram(read_wav(sys.argv[1]), n_mels=n_mels, padding=padding)
    mel.astype("<f4").tofile(sys.argv[2])
    print(mel.shape[0], mel.shape[1])
