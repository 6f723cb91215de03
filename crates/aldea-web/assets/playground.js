// Aldea playground: a file or the microphone through the public Speech API, with a 30-s token
// the dashboard gets from the platform for this organization (never a long-lived key).
'use strict';

const root = document.getElementById('playground');
const API = root.dataset.api;
const CSRF = document.querySelector('meta[name="csrf-token"]').content;

async function listenToken() {
  const response = await fetch('/playground/token', { method: 'POST', headers: { 'x-csrf-token': CSRF }, redirect: 'error' });
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
    redirect: 'error',
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
  const thead = el('thead');
  thead.append(head);
  table.append(thead);
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
  const session = { stream: null, context: null, socket: null, source: null, tap: null, pending: [], pendingLength: 0 };
  mic = session;
  try {
    session.stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false, channelCount: 1 },
    });
    session.context = new AudioContext();
    await session.context.audioWorklet.addModule(root.dataset.worklet);
    await session.context.resume();
    session.source = session.context.createMediaStreamSource(session.stream);
    session.tap = new AudioWorkletNode(session.context, 'aldea-tap');
    // Samples are kept from now on and sent once the socket is open: no word is lost to the
    // handshake.
    const chunk = Math.round(session.context.sampleRate / 10); // 100 ms
    session.tap.port.onmessage = (event) => {
      session.pending.push(event.data);
      session.pendingLength += event.data.length;
      if (session.pendingLength >= chunk) flush(session);
    };
    session.source.connect(session.tap);
    // The 30-s token is asked for last, right before it is used.
    const token = await listenToken();
    const wsBase = API.replace(/^http/, 'ws');
    const query = `encoding=linear16&sample_rate=${session.context.sampleRate}&channels=1&interim_results=true&smart_format=true`;
    const socket = new WebSocket(`${wsBase}/v1/listen?${query}`, ['bearer', token]);
    session.socket = socket;
    session.closed = new Promise((resolve) => socket.addEventListener('close', resolve));
    socket.binaryType = 'arraybuffer';
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
      flush(session);
      micStatus.textContent = 'Listening… speak now.';
      stopButton.disabled = false;
    });
    socket.addEventListener('close', (event) => {
      if (mic !== session) return; // an earlier stream's late close
      micStatus.textContent = event.code === 1000 ? 'Stopped.' : `The stream ended (${event.code}${event.reason ? `: ${event.reason}` : ''}).`;
      release(session);
    });
  } catch (e) {
    micStatus.textContent = `Could not start the microphone: ${e.message}`;
    release(session);
  }
}

/** The samples kept, as 16-bit PCM, to the socket once it is open. */
function flush(session) {
  const socket = session.socket;
  if (!socket || socket.readyState !== WebSocket.OPEN || session.pendingLength === 0) return;
  const pcm = new Int16Array(session.pendingLength);
  let at = 0;
  for (const block of session.pending) {
    for (let i = 0; i < block.length; i += 1) {
      const s = Math.max(-1, Math.min(1, block[i]));
      pcm[at] = s < 0 ? s * 0x8000 : s * 0x7fff;
      at += 1;
    }
  }
  session.pending = [];
  session.pendingLength = 0;
  socket.send(pcm.buffer);
}

/** The microphone off and the audio graph gone (the socket closes on its own). */
function release(session) {
  if (session.tap) session.tap.port.onmessage = null;
  if (session.source) session.source.disconnect();
  if (session.stream) session.stream.getTracks().forEach((t) => t.stop());
  if (session.context) session.context.close().catch(() => {});
  if (mic === session) {
    mic = null;
    startButton.disabled = false;
    stopButton.disabled = true;
  }
}

async function stopMic() {
  const session = mic;
  if (!session || !session.socket) return;
  stopButton.disabled = true;
  micStatus.textContent = 'Finishing…';
  // What was heard goes out, then the stream is closed: the service sends its last finals.
  if (session.source) session.source.disconnect();
  if (session.tap) session.tap.port.onmessage = null;
  session.stream.getTracks().forEach((t) => t.stop());
  flush(session);
  if (session.socket.readyState === WebSocket.OPEN) session.socket.send(JSON.stringify({ type: 'CloseStream' }));
  await Promise.race([session.closed, new Promise((r) => setTimeout(r, 15000))]);
  if (session.socket.readyState !== WebSocket.CLOSED) session.socket.close();
  if (mic === session) micStatus.textContent = 'Stopped.';
  release(session);
}

startButton.addEventListener('click', startMic);
stopButton.addEventListener('click', stopMic);
