// Aldea playground: a file or the microphone through the public Speech API, with a 30-s token
// the dashboard gets from the platform for this organization (never a long-lived key).
'use strict';

const root = document.getElementById('playground');
const API = root.dataset.api;
const CSRF = document.querySelector('meta[name="csrf-token"]').content;

async function listenToken() {
  const response = await fetch('/playground/token', { method: 'POST', headers: { 'x-csrf-token': CSRF } });
  if (!response.ok) throw new Error(await errorText(response));
  return (await response.json()).access_token;
}

async function errorText(response) {
  try {
    const body = await response.json();
    return body.err_msg || `status ${response.status}`;
  } catch (e) {
    return `status ${response.status}`;
  }
}

function el(tag, text, attrs = {}) {
  const node = document.createElement(tag);
  if (text !== undefined) node.textContent = text;
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  return node;
}

// ---- a file ----------------------------------------------------------------------------------

const form = document.getElementById('upload');
const fileInput = document.getElementById('audio-file');
const uploadStatus = document.getElementById('upload-status');
const transcript = document.getElementById('transcript');
const words = document.getElementById('words');
const downloads = [];

function download(name, type, text) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  downloads.push(url);
  return el('a', name, { href: url, download: name, class: 'button secondary' });
}

async function subtitles(answer, format) {
  const response = await fetch(`/playground/subtitles?format=${format}`, {
    method: 'POST',
    headers: { 'x-csrf-token': CSRF, 'Content-Type': 'application/json' },
    body: JSON.stringify(answer),
  });
  if (!response.ok) throw new Error(await errorText(response));
  return response.text();
}

async function showAnswer(answer, fileName) {
  const alt = answer.results?.channels?.[0]?.alternatives?.[0] ?? { transcript: '', words: [] };
  transcript.textContent = alt.transcript;
  downloads.splice(0).forEach((url) => URL.revokeObjectURL(url));
  words.replaceChildren();
  const base = (fileName || 'audio').replace(/\.[^.]*$/, '');
  const [srt, vtt] = await Promise.all([subtitles(answer, 'srt'), subtitles(answer, 'vtt')]);
  const links = el('p', undefined, { class: 'inline' });
  links.append(
    download(`${base}.srt`, 'application/x-subrip', srt),
    download(`${base}.vtt`, 'text/vtt', vtt),
    download(`${base}.json`, 'application/json', JSON.stringify(answer, null, 2)),
  );
  const table = el('table');
  table.append(el('caption', `${alt.words.length} words, ${answer.metadata?.duration?.toFixed(1) ?? '?'} s of audio`));
  const head = el('tr');
  ['Word', 'Start (s)', 'End (s)', 'Confidence'].forEach((h) => head.append(el('th', h, { scope: 'col' })));
  table.append(el('thead')).append(head);
  const body = el('tbody');
  for (const w of alt.words) {
    const row = el('tr');
    row.append(el('td', w.punctuated_word ?? w.word), el('td', w.start.toFixed(2), { class: 'num' }),
      el('td', w.end.toFixed(2), { class: 'num' }), el('td', (w.confidence ?? 0).toFixed(2), { class: 'num' }));
    body.append(row);
  }
  table.append(body);
  words.append(links, table);
}

form.addEventListener('submit', async (event) => {
  event.preventDefault();
  const file = fileInput.files[0];
  if (!file) {
    uploadStatus.textContent = 'Choose an audio file first.';
    return;
  }
  const button = form.querySelector('button');
  button.disabled = true;
  transcript.textContent = '';
  uploadStatus.textContent = `Transcribing ${file.name}…`;
  try {
    const token = await listenToken();
    const type = /^(audio|video)\//.test(file.type) ? file.type : 'application/octet-stream';
    const started = performance.now();
    const response = await fetch(`${API}/v1/listen?smart_format=true`, {
      method: 'POST',
      headers: { Authorization: `Bearer ${token}`, 'Content-Type': type },
      body: file,
    });
    if (!response.ok) throw new Error(await errorText(response));
    const answer = await response.json();
    await showAnswer(answer, file.name);
    uploadStatus.textContent = `Done in ${((performance.now() - started) / 1000).toFixed(1)} s.`;
  } catch (e) {
    uploadStatus.textContent = `Could not transcribe: ${e.message}`;
  } finally {
    button.disabled = false;
  }
});

// ---- the microphone --------------------------------------------------------------------------

const startButton = document.getElementById('mic-start');
const stopButton = document.getElementById('mic-stop');
const micStatus = document.getElementById('mic-status');
const live = document.getElementById('live');
const finalText = el('span', '', { class: 'final' });
const interimText = el('span', '', { class: 'interim' });
let mic = null;

function renderLive(finals, interim) {
  finalText.textContent = finals;
  interimText.textContent = interim ? (finals ? ' ' : '') + interim : '';
  if (!live.contains(finalText)) live.append(finalText, interimText);
}

async function startMic() {
  startButton.disabled = true;
  micStatus.textContent = 'Starting…';
  let finals = '';
  renderLive('', '');
  try {
    const token = await listenToken();
    const stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: 1 },
    });
    const context = new AudioContext();
    await context.audioWorklet.addModule(root.dataset.worklet);
    const source = context.createMediaStreamSource(stream);
    const tap = new AudioWorkletNode(context, 'aldea-tap');
    const wsBase = API.replace(/^http/, 'ws');
    const query = `encoding=linear16&sample_rate=${context.sampleRate}&channels=1&interim_results=true&smart_format=true`;
    const socket = new WebSocket(`${wsBase}/v1/listen?${query}`, ['bearer', token]);
    socket.binaryType = 'arraybuffer';
    const closed = new Promise((resolve) => socket.addEventListener('close', resolve));
    mic = { stream, context, socket, closed };
    let pending = [];
    let pendingLength = 0;
    const chunk = Math.round(context.sampleRate / 10); // 100 ms
    tap.port.onmessage = (event) => {
      pending.push(event.data);
      pendingLength += event.data.length;
      if (pendingLength < chunk || socket.readyState !== WebSocket.OPEN) return;
      const pcm = new Int16Array(pendingLength);
      let at = 0;
      for (const block of pending) {
        for (let i = 0; i < block.length; i += 1) {
          const s = Math.max(-1, Math.min(1, block[i]));
          pcm[at] = s < 0 ? s * 0x8000 : s * 0x7fff;
          at += 1;
        }
      }
      pending = [];
      pendingLength = 0;
      socket.send(pcm.buffer);
    };
    socket.addEventListener('message', (event) => {
      const message = JSON.parse(event.data);
      if (message.type !== 'Results') return;
      const text = message.channel?.alternatives?.[0]?.transcript ?? '';
      if (message.is_final) {
        if (text) finals = finals ? `${finals} ${text}` : text;
        renderLive(finals, '');
      } else {
        renderLive(finals, text);
      }
    });
    socket.addEventListener('open', () => {
      source.connect(tap);
      micStatus.textContent = 'Listening… speak now.';
      stopButton.disabled = false;
    });
    socket.addEventListener('close', (event) => {
      micStatus.textContent = event.code === 1000 ? 'Stopped.' : `The stream ended (${event.code}${event.reason ? `: ${event.reason}` : ''}).`;
      stopMedia();
    });
  } catch (e) {
    micStatus.textContent = `Could not start the microphone: ${e.message}`;
    stopMedia();
  }
}

function stopMedia() {
  if (mic) {
    mic.stream.getTracks().forEach((t) => t.stop());
    mic.context.close().catch(() => {});
  }
  startButton.disabled = false;
  stopButton.disabled = true;
}

async function stopMic() {
  if (!mic) return;
  stopButton.disabled = true;
  micStatus.textContent = 'Finishing…';
  mic.stream.getTracks().forEach((t) => t.stop());
  if (mic.socket.readyState === WebSocket.OPEN) mic.socket.send(JSON.stringify({ type: 'CloseStream' }));
  await Promise.race([mic.closed, new Promise((r) => setTimeout(r, 15000))]);
  if (mic.socket.readyState !== WebSocket.CLOSED) mic.socket.close();
  stopMedia();
  mic = null;
}

startButton.addEventListener('click', startMic);
stopButton.addEventListener('click', stopMic);
