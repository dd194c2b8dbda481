// The live event list: newest first, bounded, filtered by service, event name, user and session,
// with a pause button and a rate counter.
//
// `recent` holds the newest events of every kind (bounded), whatever the filters. While a filter
// is set, the rows shown are the recent events that match plus the newest matching events the
// server has stored (GET /api/events with the same filters), so a rare service still fills the
// list; live events that match are added on top as they come.

import { $, el, clock, DASH, isNum, short } from './format.js';
import { RateMeter } from './ids.js';

export const MAX_ROWS = 500;
const RECENT_MAX = 2000;

function statusOf(event) {
  const code = event.payload?.statusCode;
  return isNum(code) ? code : null;
}

function responseOf(event) {
  const ms = event.payload?.responseTimeMs;
  return isNum(ms) ? ms : null;
}

/** Newest first: by receive time, then by seq for events received in the same millisecond. */
function newerFirst(a, b) {
  return (b.receivedAt ?? b.timestamp ?? 0) - (a.receivedAt ?? a.timestamp ?? 0) || (b.seq ?? 0) - (a.seq ?? 0);
}

export class LivePanel {
  constructor(api) {
    this.api = api;
    this.recent = [];
    this.recentIds = new Set();
    this.shown = []; // the events in the table, newest first
    this.shownIds = new Set();
    this.pending = []; // arrived since the last paint (or while paused), newest last
    this.paused = false;
    this.missedWhilePaused = 0;
    this.meter = new RateMeter(10);
    this.received = 0; // events that came on the stream since the page opened
    this.filters = { service: '', event: '', user: '', session: '' };
    this.filterRequest = 0;
    this.paintQueued = false;
    this.services = new Set();
    this.onSession = () => {};

    this.tbody = $('live-rows');
    this.empty = $('live-empty');
    this.note = $('live-note');
    this.serviceSelect = $('f-service');
    $('pause').addEventListener('click', () => this.togglePause());
    $('filters').addEventListener('submit', (e) => e.preventDefault());
    for (const [id, name] of [['f-service', 'service'], ['f-event', 'event'], ['f-user', 'user'], ['f-session', 'session']]) {
      const input = $(id);
      input.addEventListener('input', () => this.setFilter(name, input.value.trim()));
    }
    this.tbody.addEventListener('click', (e) => {
      const button = e.target.closest('button[data-session]');
      if (button) this.onSession(button.dataset.session);
    });
  }

  /** Events per second seen on the stream over the last 10 s (every event, filtered or not). */
  rate(now = Date.now()) {
    return this.meter.rate(now);
  }

  matches(event) {
    const f = this.filters;
    const has = (value, needle) => !needle || (typeof value === 'string' && value.toLowerCase().includes(needle.toLowerCase()));
    return (!f.service || event.serviceName === f.service)
      && has(event.name, f.event) && has(event.userId, f.user) && has(event.sessionId, f.session);
  }

  filtering() {
    return Object.values(this.filters).some(Boolean);
  }

  knowService(name) {
    if (!name || this.services.has(name)) return;
    this.services.add(name);
    const options = [...this.serviceSelect.options].slice(1);
    const before = options.find((o) => o.value.localeCompare(name) > 0) || null;
    this.serviceSelect.insertBefore(el('option', { value: name }, name), before);
  }

  /** A live event from the stream. */
  add(event) {
    this.received += 1;
    this.meter.tick();
    this.remember([event]);
    if (!this.matches(event) || this.shownIds.has(event.id)) return;
    this.pending.push(event);
    if (this.pending.length > MAX_ROWS) this.pending.splice(0, this.pending.length - MAX_ROWS);
    if (this.paused) {
      this.missedWhilePaused += 1;
      $('paused-count').textContent = `${this.missedWhilePaused} new while paused`;
      return;
    }
    this.schedulePaint();
  }

  /** The newest `n` recent events that satisfy `keep`, newest first. */
  newest(keep, n) {
    return this.recent.filter(keep).sort(newerFirst).slice(0, n);
  }

  /** Events read from the API (newest first): into the recent set and, when they match, the list. */
  load(events) {
    this.remember(events);
    this.merge(events.filter((e) => this.matches(e)));
    this.empty.hidden = this.shown.length > 0; // "no events yet" is said once the store was asked
  }

  remember(events) {
    for (const event of events) {
      this.knowService(event.serviceName);
      if (this.recentIds.has(event.id)) continue;
      this.recent.push(event);
      this.recentIds.add(event.id);
    }
    if (this.recent.length > RECENT_MAX + 200) {
      this.recent.sort(newerFirst);
      for (const old of this.recent.splice(RECENT_MAX)) this.recentIds.delete(old.id);
    }
  }

  /** Merge events into the table in order (a re-render; used for loads and filter changes). */
  merge(events) {
    const fresh = events.filter((e) => !this.shownIds.has(e.id));
    if (!fresh.length) return;
    this.shown = [...fresh, ...this.shown].sort(newerFirst).slice(0, MAX_ROWS);
    this.shownIds = new Set(this.shown.map((e) => e.id));
    this.renderAll();
  }

  schedulePaint() {
    if (this.paintQueued) return;
    this.paintQueued = true;
    // One paint per frame however many events came; a hidden tab paints when shown again.
    requestAnimationFrame(() => {
      this.paintQueued = false;
      this.paint();
    });
  }

  paint() {
    if (this.paused || !this.pending.length) return;
    const batch = [];
    for (const event of this.pending) {
      // a resumed stream may repeat an event (at-least-once): each id is shown once
      if (this.shownIds.has(event.id)) continue;
      this.shownIds.add(event.id);
      batch.push(event);
    }
    this.pending = [];
    const fragment = document.createDocumentFragment();
    for (let i = batch.length - 1; i >= 0; i -= 1) fragment.append(this.row(batch[i]));
    this.tbody.prepend(fragment);
    this.shown = [...batch.reverse(), ...this.shown];
    while (this.shown.length > MAX_ROWS) {
      this.shownIds.delete(this.shown.pop().id);
      this.tbody.lastElementChild?.remove();
    }
    this.empty.hidden = this.shown.length > 0;
  }

  renderAll() {
    this.tbody.replaceChildren(...this.shown.map((e) => this.row(e)));
    this.empty.hidden = this.shown.length > 0;
    this.empty.textContent = this.filtering() ? 'No events match the filters.' : 'No events yet.';
  }

  row(event) {
    const status = statusOf(event);
    const ms = responseOf(event);
    const failed = status !== null && status >= 400;
    return el('tr', { class: failed ? 'failed' : undefined, dataset: { id: event.id, service: event.serviceName || '' } },
      el('td', { class: 'time', title: isNum(event.timestamp) ? new Date(event.timestamp).toISOString() : undefined }, clock(event.timestamp, true)),
      el('td', {}, event.serviceName || DASH),
      el('td', { class: 'name' }, event.name),
      el('td', { class: 'num' }, status ?? DASH),
      el('td', { class: 'num' }, ms === null ? DASH : short(ms, 1)),
      el('td', { class: 'id' }, event.userId || DASH),
      el('td', { class: 'id' }, event.sessionId
        ? el('button', { type: 'button', class: 'link', dataset: { session: event.sessionId }, title: 'show this session' }, event.sessionId)
        : DASH));
  }

  togglePause() {
    this.paused = !this.paused;
    const button = $('pause');
    button.textContent = this.paused ? 'Resume' : 'Pause';
    button.setAttribute('aria-pressed', String(this.paused));
    if (!this.paused) {
      this.missedWhilePaused = 0;
      $('paused-count').textContent = '';
      this.paint();
    }
  }

  setFilter(name, value) {
    if (this.filters[name] === value) return;
    this.filters[name] = value;
    this.pending = [];
    this.shown = this.recent.filter((e) => this.matches(e)).sort(newerFirst).slice(0, MAX_ROWS);
    this.shownIds = new Set(this.shown.map((e) => e.id));
    this.renderAll();
    if (this.filtering()) this.loadMatching();
  }

  /** The newest stored events matching the filters (debounced: typing sends one request). */
  loadMatching() {
    const request = ++this.filterRequest;
    clearTimeout(this.filterTimer);
    this.filterTimer = setTimeout(async () => {
      const f = this.filters;
      const params = { limit: MAX_ROWS, serviceName: f.service, type: f.event };
      // user and session are exact on the server, "contains" here: ask the server for exact ones
      if (f.user) params.userId = f.user;
      if (f.session) params.sessionId = f.session;
      try {
        const body = await this.api.get('/api/events', params);
        if (request !== this.filterRequest) return; // the filters changed meanwhile
        this.note.hidden = true;
        this.load(body.events || []);
      } catch (err) {
        if (request !== this.filterRequest) return;
        this.note.hidden = false;
        this.note.textContent = `Stored events could not be loaded (${err.message || err}); showing only events seen live.`;
      }
    }, 300);
  }

  /** After a stream gap: say so, and read the newest stored events again. */
  showGap(text) {
    this.note.hidden = false;
    this.note.textContent = text;
  }
}
