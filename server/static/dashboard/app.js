// The dashboard's entry point: asks for a key when the server needs one, opens the live stream,
// loads what happened before the page opened, and starts the polled panels.

import { Api, AuthError } from './api.js';
import { $, num, reasonOf, short } from './format.js';
import { LivePanel, MAX_ROWS } from './live.js';
import { LiveStream } from './stream.js';
import { ServicesPanel, WINDOW_MS } from './services.js';
import { AnomaliesPanel, SuggestionsPanel } from './insights.js';
import { SessionsPanel } from './sessions.js';
import { HealthPanel } from './health.js';

const START_RETRY_MAX_MS = 30000;
const SERIES_LOAD_LIMIT = 1000;

const api = new Api();
const live = new LivePanel(api);
const services = new ServicesPanel(api, live);
const sessions = new SessionsPanel(api);
const suggestions = new SuggestionsPanel(api);
const anomalies = new AnomaliesPanel(api);
let stream = null;
let health = null;
let panelsStarted = false;
let startFailures = 0;

live.onSession = (id) => sessions.select(id);

// ---- connection state: the pill in the header, the banner, and body[data-stream] ----

function showState(state, detail) {
  document.body.dataset.stream = state;
  const pill = $('conn-status');
  const banner = $('banner');
  if (state === 'live') {
    pill.textContent = 'Live';
    pill.className = 'pill pill-live';
    banner.hidden = true;
  } else if (state === 'down') {
    pill.textContent = 'Disconnected';
    pill.className = 'pill pill-down';
    banner.hidden = false;
    banner.textContent = `Disconnected from the server \u2014 reconnecting\u2026 (${detail})`;
  } else {
    pill.textContent = 'Connecting\u2026';
    pill.className = 'pill pill-wait';
  }
}

// ---- the key form (servers not on loopback need the project's secret key) ----

let keyRequired = false; // the form is up because the server refused: it cannot be dismissed

function askForKey(status, reason) {
  const dialog = $('key-dialog');
  keyRequired = true;
  $('key-reason').textContent = status === 403
    ? `The server refused the key: ${reason}.`
    : `The server needs a key: ${reason}.`;
  stream?.stop();
  showState('connecting');
  if (!dialog.open) {
    $('key-input').value = '';
    dialog.showModal();
  }
}

api.onAuthError(askForKey);

$('key-form').addEventListener('submit', () => {
  const key = $('key-input').value.trim();
  if (!key) return;
  api.setKey(key);
  keyRequired = false;
  $('key-button').hidden = false;
  start();
});
$('key-dialog').addEventListener('cancel', (e) => {
  if (keyRequired) e.preventDefault(); // nothing can be read without it
});
$('key-button').addEventListener('click', () => {
  $('key-reason').textContent = 'Enter another key (Escape keeps the current one).';
  $('key-input').value = '';
  $('key-dialog').showModal();
});
$('key-button').hidden = !api.key;

// ---- the live stream ----

function onMessage(message) {
  switch (message.type) {
    case 'event': {
      const event = message.data;
      live.add(event);
      services.add(event);
      sessions.add(event);
      break;
    }
    case 'stats': {
      const d = message.data || {};
      $('rate-server').textContent = short(d.eventsPerSecond, 1);
      // the project's stored events: `totalEventCount` (the statistics route's name), `totalEvents` before
      $('total-events').textContent = num(d.totalEventCount ?? d.totalEvents);
      break;
    }
    case 'anomaly':
      anomalies.add(message);
      break;
    default: // ping, and message types newer than this page
  }
}

function onGap(gap) {
  live.showGap(`The stream could not replay everything after event ${gap.from} (${gap.reason}): events up to ${gap.to ?? 'now'} may be missing below; the newest stored events were loaded again.`);
  services.series.markIncomplete(Date.now(), 'the stream could not replay everything the page missed');
  loadRecent().catch(() => {});
}

function openStream() {
  stream?.stop();
  stream = new LiveStream({
    url: (lastId) => api.streamUrl('/api/events/stream', { lastEventId: lastId || undefined }),
    onMessage,
    onState: showState,
    onGap,
    // before reopening a closed stream: is the server there, and is the key still good?
    beforeReopen: () => api.get('/api/events', { limit: 1 }),
  });
  stream.start();
  if (health) health.stream = stream;
}

// ---- what happened before the page opened ----

async function loadRecent() {
  const body = await api.get('/api/events', { limit: MAX_ROWS });
  live.load(body.events || []);
  if ($('total-events').textContent === '\u2014') $('total-events').textContent = num(body.total);
  for (const event of body.events || []) sessions.add(event);
  sessions.render();
}

async function loadSeries() {
  const from = new Date(Date.now() - WINDOW_MS).toISOString();
  const body = await api.get('/api/events', { from, limit: SERIES_LOAD_LIMIT });
  const events = body.events || [];
  for (const event of events) services.add(event);
  // more events in the window than one page: the buckets before the oldest loaded are incomplete
  if (body.nextCursor && events.length) {
    services.series.markIncomplete(Math.min(...events.map((e) => e.timestamp)),
      `the last 10 minutes held more than the ${SERIES_LOAD_LIMIT} events the page loads at start`);
  }
  services.draw();
}

async function start() {
  try {
    await api.get('/api/events', { limit: 1 }); // reachable, and the key (if any) may read
  } catch (err) {
    if (err instanceof AuthError) return; // the key form is up; submitting it calls start() again
    startFailures += 1;
    const delay = Math.min(START_RETRY_MAX_MS, 1000 * 2 ** startFailures);
    showState('down', `${reasonOf(err)}; retrying in ${Math.round(delay / 1000)} s`);
    setTimeout(start, delay);
    return;
  }
  startFailures = 0;
  openStream(); // first, so nothing falls between the loads and the live stream (ids dedupe)
  const loads = await Promise.allSettled([loadRecent(), loadSeries()]);
  const failed = loads.find((r) => r.status === 'rejected');
  if (failed && !(failed.reason instanceof AuthError)) {
    live.showGap(`The events stored before this page opened could not be loaded (${reasonOf(failed.reason)}): only live events are shown.`);
  }
  if (!panelsStarted) {
    panelsStarted = true;
    health = new HealthPanel(api, stream, live);
    services.start();
    suggestions.start();
    anomalies.start();
    health.start();
    setInterval(() => {
      $('rate-seen').textContent = short(live.rate(), 1);
    }, 1000);
  }
}

start();
