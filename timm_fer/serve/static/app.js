// The page of `timm-fer serve`: photos and videos sent to the REST API, and live mode over the /v1/live WebSocket.
// Plain browser JavaScript, no framework, nothing loaded from elsewhere.
'use strict';

const FRAMES_IN_FLIGHT = 2;          // frames sent and not yet answered, at most
const FRAME_TIMEOUT_MS = 5000;       // a frame unanswered for this long no longer holds a slot
const JPEG_QUALITY = 0.8;
const MAX_FRAME_WIDTH = 640;         // wider camera frames are scaled down before they are sent
const TIMELINE_SECONDS = 10;
const FPS_WINDOW_MS = 3000;          // drawn frames counted for the frame rate
const LATENCY_WINDOW = 60;           // latest latencies the shown median is taken over
const EXPRESSION_COLORS = {
  neutral: '#9e9e9e', happiness: '#f5b700', surprise: '#00a6ed', sadness: '#3f51b5',
  anger: '#e53935', disgust: '#43a047', fear: '#8e24aa', contempt: '#6d4c41',
};
const TRACK_COLORS = ['#e6194b', '#3cb44b', '#4363d8', '#f58231', '#911eb4', '#42d4f4', '#f032e6', '#469990'];

const byId = (id) => document.getElementById(id);

function showMessage(text) {
  const message = byId('message');
  message.textContent = text || '';
  message.hidden = !text;
}

function expressionColor(label) {
  return EXPRESSION_COLORS[label] || '#607d8b';
}

function trackColor(track) {
  return TRACK_COLORS[Math.abs(track) % TRACK_COLORS.length];
}

function apiKey() {
  return byId('api-key').value.trim();
}

// The headers of a request to the API: the key, when one is given.
function keyHeaders() {
  return apiKey() ? {'X-API-Key': apiKey()} : {};
}

// The model chosen in the selector ('' before the server listed its models: the server's default answers).
function chosenModel() {
  return byId('model').value;
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

// The server's one-line explanation of a refused request ({"detail": ...}), or the HTTP status text.
async function errorText(response) {
  try {
    const body = await response.json();
    if (typeof body.detail === 'string') return body.detail;
    return JSON.stringify(body.detail ?? body);
  } catch (error) {
    return response.statusText || `HTTP ${response.status}`;
  }
}

async function postForm(path, form) {
  const response = await fetch(path, {method: 'POST', body: form, headers: keyHeaders()});
  if (!response.ok) {
    throw new Error(`${response.status}: ${await errorText(response)}`);
  }
  return response.json();
}

let servedModels = new Map();        // name -> the model as GET /v1/models describes it

// The chosen model's name, backend and labels, and the first sentence of its description (all of it on hover).
function showModel() {
  const model = servedModels.get(chosenModel());
  if (!model) return;
  byId('model-info').textContent = `Model ${model.name} (${model.backend}): ${model.labels.join(', ')}`;
  const description = byId('model-description');
  description.textContent = (model.description || '').split(/(?<=\.)\s/)[0];
  description.title = model.description || '';
  description.hidden = !model.description;
}

// The selector filled with the server's models, the default chosen (a model chosen before stays chosen); shown only
// when there is a choice.
async function describeModels() {
  const select = byId('model');
  try {
    const response = await fetch('/v1/models', {headers: keyHeaders()});
    if (!response.ok) throw new Error(await errorText(response));
    const answer = await response.json();
    const previous = chosenModel();
    servedModels = new Map(answer.models.map((model) => [model.name, model]));
    select.replaceChildren(...answer.models.map((model) => element(
      'option', {value: model.name}, model.name === answer.default ? `${model.name} (default)` : model.name)));
    select.value = servedModels.has(previous) ? previous : answer.default;
    byId('model-choice').hidden = servedModels.size < 2;
    showModel();
  } catch (error) {
    byId('model-info').textContent = `The model's description is unavailable: ${error.message}`;
  }
}

// A line naming the model that answered.
function modelLine(model) {
  return element('p', {class: 'model'}, `Model ${model}`);
}

// ---- Photos and videos ------------------------------------------------------------------------------------------

// A table of label probabilities, most likely first, with a bar in each row; `data-expression` names the top one.
function probabilityTable(caption, probabilities, expression) {
  const rows = Object.entries(probabilities).sort((a, b) => b[1] - a[1]).map(([label, p]) => {
    const bar = element('span', {class: 'bar', 'aria-hidden': 'true'});
    bar.style.width = `${(100 * p).toFixed(1)}%`;
    bar.style.backgroundColor = expressionColor(label);
    const row = element('tr', {}, element('th', {scope: 'row'}, label),
                        element('td', {class: 'probability'}, element('span', {class: 'track'}, bar),
                                element('span', {class: 'value'}, p.toFixed(3))));
    if (label === expression) row.classList.add('top');
    return row;
  });
  return element('table', {class: 'probabilities', 'data-expression': expression},
                 element('caption', {}, caption),
                 element('thead', {}, element('tr', {}, element('th', {scope: 'col'}, 'Expression'),
                                              element('th', {scope: 'col'}, 'Probability'))),
                 element('tbody', {}, ...rows));
}

function renderImage(image, model) {
  const article = element('article', {class: 'result', 'data-model': model},
                          element('h3', {}, image.file || 'photo'), modelLine(model));
  if (image.skipped) {
    article.append(element('p', {class: 'skipped'}, `Skipped: ${image.skipped}`));
    return article;
  }
  if (image.annotated) {
    const faces = image.faces.length === 1 ? '1 face' : `${image.faces.length} faces`;
    article.append(element('img', {class: 'annotated', src: image.annotated,
                                   alt: `${image.file}, with boxes around ${faces}`}));
  }
  if (!image.faces.length) {
    article.append(element('p', {}, 'No face found.'));
  }
  const faces = element('div', {class: 'faces'});
  for (const face of image.faces) {
    const top = face.probabilities[face.expression];
    const figure = element('div', {class: 'face'},
                           probabilityTable(`Face ${face.face}: ${face.expression} (${top.toFixed(2)})`,
                                            face.probabilities, face.expression));
    if (face.explanation) {
      figure.append(element('img', {class: 'explanation', src: face.explanation,
                                    alt: `Where the model looked for face ${face.face}`}));
    }
    faces.append(figure);
  }
  article.append(faces);
  return article;
}

function renderVideo(answer) {
  const video = answer.video;
  const duration = typeof video.duration === 'number' ? `${video.duration.toFixed(1)} s, ` : '';
  const article = element('article', {class: 'result', 'data-model': answer.model},
                          element('h3', {}, video.file || 'video'), modelLine(answer.model),
                          element('p', {}, `${duration}${video.frames_sampled} frames sampled, `
                                           + `${answer.tracks.length} face track(s)`));
  if (video.problem) {
    article.append(element('p', {class: 'skipped'}, video.problem));
  }
  const tracks = element('div', {class: 'faces'});
  for (const track of answer.tracks) {
    const caption = `Track ${track.track}: ${track.expression}, ${track.start.toFixed(1)}–${track.end.toFixed(1)} s, `
                    + `${track.frames} frames (share of frames per expression)`;
    tracks.append(element('div', {class: 'face'}, probabilityTable(caption, track.shares, track.expression)));
  }
  article.append(tracks);
  return article;
}

async function predictFiles(files) {
  const results = byId('results');
  const status = byId('photo-status');
  const videos = files.filter((file) => file.type.startsWith('video/'));
  const images = files.filter((file) => !file.type.startsWith('video/'));
  showMessage('');
  results.replaceChildren();
  try {
    if (images.length) {
      status.textContent = `Reading ${images.length} photo(s)…`;
      const form = new FormData();
      images.forEach((file) => form.append('file', file, file.name));
      form.append('annotate', 'true');
      if (byId('explain').checked) form.append('explain', 'true');
      if (chosenModel()) form.append('model', chosenModel());
      const answer = await postForm('/v1/predict', form);
      answer.images.forEach((image) => results.append(renderImage(image, answer.model)));
    }
    for (const file of videos) {
      status.textContent = `Reading the video ${file.name}…`;
      const form = new FormData();
      form.append('file', file, file.name);
      if (chosenModel()) form.append('model', chosenModel());
      results.append(renderVideo(await postForm('/v1/predict/video', form)));
    }
    status.textContent = `Done: ${files.length} file(s).`;
  } catch (error) {
    status.textContent = '';
    showMessage(error.message);
  }
}

function setUpDropZone() {
  const zone = byId('drop-zone');
  const input = byId('file-input');
  input.addEventListener('change', () => {
    if (input.files.length) predictFiles([...input.files]);
  });
  // A file dropped beside the zone must not replace the page.
  for (const name of ['dragover', 'drop']) {
    window.addEventListener(name, (event) => event.preventDefault());
  }
  zone.addEventListener('dragover', (event) => {
    event.preventDefault();
    zone.classList.add('dragging');
  });
  zone.addEventListener('dragleave', () => zone.classList.remove('dragging'));
  zone.addEventListener('drop', (event) => {
    event.preventDefault();
    zone.classList.remove('dragging');
    if (event.dataTransfer.files.length) predictFiles([...event.dataTransfer.files]);
  });
}

// ---- Live mode --------------------------------------------------------------------------------------------------

function median(values) {
  if (!values.length) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const middle = sorted.length >> 1;
  return sorted.length % 2 ? sorted[middle] : (sorted[middle - 1] + sorted[middle]) / 2;
}

function cameraError(error) {
  if (error.name === 'NotAllowedError') return 'The camera was refused: allow it in the site settings, then retry.';
  if (error.name === 'NotFoundError') return 'No camera was found: connect one, then start again.';
  if (error.name === 'NotReadableError') return 'The camera is busy in another program: close it, then start again.';
  return `The camera could not start: ${error.message}`;
}

// One live session: the camera's frames go to /v1/live as JPEG (4-byte big-endian frame id first), at most
// FRAMES_IN_FLIGHT at a time; each answer is drawn over the video, and the time from capture to drawn box is measured.
// The server smooths each track's probabilities over the seconds of the page's smoothing control, sent as a text
// message {"smoothing": seconds} when the connection opens and whenever the control changes. The connection asks for
// the model chosen in the selector; choosing another opens a new connection to it.
class LiveSession {
  constructor() {
    this.video = byId('camera');
    this.overlay = byId('overlay');
    this.timeline = byId('timeline');
    this.capture = document.createElement('canvas');
    this.inFlight = new Map();       // frame id -> performance.now() at capture
    this.nextId = 1;
    this.lastDrawnId = 0;
    this.frameReady = true;
    this.running = false;
    this.drawnTimes = [];            // performance.now() of each drawn answer, all of the session
    this.latencies = [];             // capture to drawn box, ms, all of the session
    this.serverMs = [];              // the server's own time for each drawn frame (decode to answer), ms
    this.skipped = 0;
    this.tracks = new Map();         // track id -> [{t, p, expression}], the last TIMELINE_SECONDS
  }

  async start() {
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      throw new Error('The camera needs a secure page: open it on this computer (127.0.0.1, localhost) or over HTTPS.');
    }
    try {
      this.stream = await navigator.mediaDevices.getUserMedia(
        {video: {width: {ideal: 640}, height: {ideal: 480}}, audio: false});
    } catch (error) {
      throw new Error(cameraError(error));
    }
    this.video.srcObject = this.stream;
    await this.video.play();
    // Frames go out at most MAX_FRAME_WIDTH wide; the stage takes the camera's aspect, so boxes sit on the faces.
    const cameraWidth = this.video.videoWidth || 640;
    const cameraHeight = this.video.videoHeight || 480;
    const scale = Math.min(1, MAX_FRAME_WIDTH / cameraWidth);
    this.capture.width = this.overlay.width = Math.round(cameraWidth * scale);
    this.capture.height = this.overlay.height = Math.round(cameraHeight * scale);
    byId('stage').style.aspectRatio = `${cameraWidth} / ${cameraHeight}`;
    this.running = true;
    this.openSocket();
    this.watchFrames();
    this.timer = setInterval(() => {
      this.pump();
      this.showStats();
    }, this.video.requestVideoFrameCallback ? 250 : 15);
  }

  openSocket() {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    const query = new URLSearchParams();
    if (apiKey()) query.set('key', apiKey());
    if (chosenModel()) query.set('model', chosenModel());
    const search = query.toString() ? `?${query}` : '';
    const socket = new WebSocket(`${scheme}://${location.host}/v1/live${search}`);
    socket.binaryType = 'arraybuffer';
    this.socket = socket;
    // A connection replaced by reconnect() is closed: its late answers and its close event are ignored.
    socket.addEventListener('open', () => {
      if (socket !== this.socket) return;
      this.sendSmoothing();
      this.pump();
    });
    socket.addEventListener('message', (event) => {
      if (socket === this.socket) this.receive(event.data);
    });
    socket.addEventListener('close', (event) => {
      if (this.running && socket === this.socket) {
        showMessage(`The live connection closed (${event.code}${event.reason ? `: ${event.reason}` : ''}).`);
        stopLive();
      }
    });
  }

  // Go on with the model now chosen: a new connection (with its own face tracks), the old one closed.
  reconnect() {
    if (!this.running) return;
    const old = this.socket;
    this.inFlight.clear();
    this.tracks.clear();
    this.openSocket();
    old.close();
  }

  // The smoothing control's seconds, for the server's next frames (a value it refuses comes back as an error).
  sendSmoothing() {
    if (!this.running || this.socket.readyState !== WebSocket.OPEN) return;
    const control = byId('smoothing');
    const seconds = control.valueAsNumber;
    this.socket.send(JSON.stringify({smoothing: Number.isNaN(seconds) ? control.value : seconds}));
  }

  // New camera frames are captured as they come; without requestVideoFrameCallback, the timer captures.
  watchFrames() {
    if (!this.video.requestVideoFrameCallback) return;
    const onFrame = () => {
      if (!this.running) return;
      this.frameReady = true;
      this.pump();
      this.video.requestVideoFrameCallback(onFrame);
    };
    this.video.requestVideoFrameCallback(onFrame);
  }

  pump() {
    if (!this.running || this.socket.readyState !== WebSocket.OPEN) return;
    const now = performance.now();
    for (const [id, captured] of this.inFlight) {
      if (now - captured > FRAME_TIMEOUT_MS) this.inFlight.delete(id);
    }
    if (this.frameReady && this.inFlight.size < FRAMES_IN_FLIGHT) {
      this.frameReady = !this.video.requestVideoFrameCallback;
      this.send();
    }
  }

  send() {
    const id = this.nextId++;
    const context = this.capture.getContext('2d');
    context.drawImage(this.video, 0, 0, this.capture.width, this.capture.height);
    this.inFlight.set(id, performance.now());
    this.capture.toBlob(async (blob) => {
      if (!blob || !this.running) {
        this.inFlight.delete(id);
        return;
      }
      const message = new Uint8Array(4 + blob.size);
      new DataView(message.buffer).setUint32(0, id, false);
      message.set(new Uint8Array(await blob.arrayBuffer()), 4);
      if (this.running && this.socket.readyState === WebSocket.OPEN) {
        this.socket.send(message);
      } else {
        this.inFlight.delete(id);
      }
    }, 'image/jpeg', JPEG_QUALITY);
  }

  receive(data) {
    let reply;
    try {
      reply = JSON.parse(data);
    } catch (error) {
      showMessage('The server sent an answer that is not JSON.');
      return;
    }
    const captured = this.inFlight.get(reply.id);
    this.inFlight.delete(reply.id);
    if (reply.error) {
      showMessage(`Live mode: ${reply.error}`);
    } else if (reply.skipped) {
      this.skipped += 1;
    } else if (captured !== undefined && reply.id > this.lastDrawnId) {
      this.lastDrawnId = reply.id;
      this.draw(reply);
      const drawn = performance.now();
      this.drawnTimes.push(drawn);
      this.latencies.push(drawn - captured);
      this.serverMs.push(reply.server_ms);
    }
    this.pump();
  }

  draw(reply) {
    const context = this.overlay.getContext('2d');
    const scaleX = this.overlay.width / reply.width;
    const scaleY = this.overlay.height / reply.height;
    context.clearRect(0, 0, this.overlay.width, this.overlay.height);
    context.lineWidth = 3;
    context.font = 'bold 16px sans-serif';
    context.textBaseline = 'bottom';
    const labels = [];
    const now = performance.now() / 1000;
    for (const face of reply.faces) {
      const [x0, y0, x1, y1] = face.box;
      const expression = face.smoothed_expression;
      const p = face.smoothed[expression];
      const label = `#${face.track} ${expression} ${p.toFixed(2)}`;
      const color = expressionColor(expression);
      context.strokeStyle = color;
      context.strokeRect(x0 * scaleX, y0 * scaleY, (x1 - x0) * scaleX, (y1 - y0) * scaleY);
      const textWidth = context.measureText(label).width;
      const top = Math.max(20, y0 * scaleY);
      context.fillStyle = color;
      context.fillRect(x0 * scaleX - 1.5, top - 20, textWidth + 8, 20);
      context.fillStyle = '#000';
      context.fillText(label, x0 * scaleX + 2.5, top - 2);
      labels.push(label);
      if (!this.tracks.has(face.track)) this.tracks.set(face.track, []);
      this.tracks.get(face.track).push({t: now, p, expression});
    }
    const output = byId('live-labels');
    output.textContent = labels.length ? labels.join('; ') : 'no face';
    output.dataset.labels = labels.join('|');
    output.dataset.smoothing = reply.smoothing;
    output.dataset.model = reply.model;
    byId('live-model').value = reply.model;
    this.drawTimeline(now);
  }

  // Each track's smoothed top-expression probability over the last TIMELINE_SECONDS, one line per track.
  drawTimeline(now) {
    const canvas = this.timeline;
    const context = canvas.getContext('2d');
    const {width, height} = canvas;
    const pad = 12;
    const left = 28;
    const x = (t) => left + (width - left) * (1 - (now - t) / TIMELINE_SECONDS);
    const y = (p) => pad + (1 - p) * (height - 2 * pad);
    context.clearRect(0, 0, width, height);
    context.font = '12px sans-serif';
    context.textBaseline = 'middle';
    context.lineWidth = 1;
    for (const level of [0, 0.5, 1]) {
      context.strokeStyle = '#ccc';
      context.beginPath();
      context.moveTo(left, y(level));
      context.lineTo(width, y(level));
      context.stroke();
      context.fillStyle = '#888';
      context.fillText(String(level), 2, y(level));
    }
    for (const [track, points] of this.tracks) {
      while (points.length && now - points[0].t > TIMELINE_SECONDS) points.shift();
      if (!points.length) {
        this.tracks.delete(track);
        continue;
      }
      context.strokeStyle = trackColor(track);
      context.lineWidth = 2;
      context.beginPath();
      points.forEach((point, index) => (index ? context.lineTo(x(point.t), y(point.p))
                                               : context.moveTo(x(point.t), y(point.p))));
      context.stroke();
      const last = points[points.length - 1];
      const text = `#${track} ${last.expression}`;
      context.fillStyle = trackColor(track);
      context.fillText(text, x(last.t) - context.measureText(text).width - 4, y(last.p) + (last.p > 0.5 ? 10 : -10));
    }
  }

  showStats() {
    const now = performance.now();
    const recent = this.drawnTimes.filter((t) => now - t <= FPS_WINDOW_MS);
    const fps = recent.length >= 2 ? (recent.length - 1) / ((recent[recent.length - 1] - recent[0]) / 1000) : 0;
    byId('fps').value = fps.toFixed(1);
    const latency = median(this.latencies.slice(-LATENCY_WINDOW));
    byId('latency-ms').value = Number.isNaN(latency) ? '–' : latency.toFixed(0);
  }

  // What the page measured, for benchmarks and tests: frames drawn, their times and latencies (ms) with the
  // server's share, frames the server skipped.
  measurements() {
    return {drawnTimes: [...this.drawnTimes], latencies: [...this.latencies], serverMs: [...this.serverMs],
            skipped: this.skipped, now: performance.now()};
  }

  stop() {
    this.running = false;
    clearInterval(this.timer);
    if (this.socket) this.socket.close();
    if (this.stream) this.stream.getTracks().forEach((track) => track.stop());
    this.video.srcObject = null;
    this.overlay.getContext('2d').clearRect(0, 0, this.overlay.width, this.overlay.height);
  }
}

let liveSession = null;

function stopLive() {
  if (liveSession) liveSession.stop();
  const button = byId('live-toggle');
  button.textContent = 'Start the camera';
  button.setAttribute('aria-pressed', 'false');
}

async function toggleLive() {
  const button = byId('live-toggle');
  if (liveSession && liveSession.running) {
    stopLive();
    return;
  }
  showMessage('');
  liveSession = new LiveSession();
  window.timmFerLive = liveSession;
  button.textContent = 'Stop the camera';
  button.setAttribute('aria-pressed', 'true');
  try {
    await liveSession.start();
  } catch (error) {
    stopLive();
    showMessage(error.message);
  }
}

document.addEventListener('DOMContentLoaded', () => {
  describeModels();
  setUpDropZone();
  byId('live-toggle').addEventListener('click', toggleLive);
  byId('model').addEventListener('change', () => {
    showModel();
    if (liveSession) liveSession.reconnect();
  });
  byId('smoothing').addEventListener('change', () => {
    if (liveSession) liveSession.sendSmoothing();
  });
  byId('api-key').addEventListener('change', describeModels);
});
