// Suggestions (GET /api/events/suggestions) and anomalies (GET /api/events/anomalies, plus the
// stream's live `anomaly` messages), polled with staleness shown when a refresh fails.

import { $, el, clock, markStale, num, reasonOf, share, short } from './format.js';

const SUGGESTIONS_EVERY_MS = 15000;
const ANOMALIES_EVERY_MS = 30000;
const METRIC_UNITS = { responseTime: 'ms', errorRate: 'share', volume: 'events' };

export class SuggestionsPanel {
  constructor(api) {
    this.api = api;
    this.lastOk = null;
  }

  start() {
    this.refresh();
    setInterval(() => this.refresh(), SUGGESTIONS_EVERY_MS);
  }

  async refresh() {
    let body;
    try {
      body = await this.api.get('/api/events/suggestions', { limit: 10 });
    } catch (err) {
      markStale($('suggestions-stale'), this.lastOk, reasonOf(err));
      return;
    }
    this.lastOk = Date.now();
    markStale($('suggestions-stale'), this.lastOk, null);
    const items = (body.suggestions || []).map((s) => this.card(s));
    $('suggestion-list').replaceChildren(...items);
    $('suggestions-empty').hidden = items.length > 0;
  }

  card(s) {
    const based = s.basedOn || {};
    const href = s.action?.href;
    // only a link into this server: a suggestion's text must never become a javascript: URL
    const action = typeof href === 'string' && /^\/[^/\\]/.test(href)
      ? el('a', { href, target: '_blank', rel: 'noopener' }, s.action.label || 'details')
      : null;
    return el('li', { class: 'card' },
      el('div', { class: 'card-head' },
        el('strong', {}, s.title),
        el('span', { class: 'score', title: 'score 0–1' }, `score ${short(s.score, 2)}`)),
      el('p', {}, s.description),
      el('p', { class: 'muted' },
        `based on ${based.eventPattern || 'events'}: ${num(based.sampleSize)} events, confidence ${share(based.confidence, 0)}`,
        action ? ' · ' : '', action),
      (s.tags || []).length ? el('p', { class: 'tags' }, ...(s.tags || []).map((t) => el('span', { class: 'tag' }, t))) : null);
  }
}

function metricValue(metric, v) {
  return metric === 'errorRate' ? share(v, 1) : metric === 'responseTime' ? `${short(v, 1)} ms` : short(v, 1);
}

export class AnomaliesPanel {
  constructor(api) {
    this.api = api;
    this.lastOk = null;
    this.found = new Map(); // service|metric|minute -> anomaly
  }

  start() {
    this.refresh();
    setInterval(() => this.refresh(), ANOMALIES_EVERY_MS);
  }

  keyOf(a) {
    return `${a.serviceName}|${a.metric}|${a.minute}`;
  }

  /** A live `anomaly` message from the stream. */
  add(anomaly) {
    this.found.set(this.keyOf(anomaly), anomaly);
    this.render();
  }

  async refresh() {
    let body;
    try {
      body = await this.api.get('/api/events/anomalies', { from: '24h' });
    } catch (err) {
      markStale($('anomalies-stale'), this.lastOk, reasonOf(err));
      return;
    }
    this.lastOk = Date.now();
    markStale($('anomalies-stale'), this.lastOk, null);
    this.found = new Map((body.anomalies || []).map((a) => [this.keyOf(a), a]));
    const b = body.basedOn;
    if (b) {
      const judged = b.minutesJudged || {};
      $('anomalies-basis').textContent = `${num(b.services)} services; service-minutes judged: response time ${num(judged.responseTime)}, error rate ${num(judged.errorRate)}, volume ${num(judged.volume)} (a service needs ${num(b.warmupMinutes)} minutes of history before its minutes are judged).`;
    }
    this.render();
  }

  render() {
    const all = [...this.found.values()].sort((a, b) => (b.minute > a.minute ? 1 : b.minute < a.minute ? -1 : 0)).slice(0, 200);
    $('anomaly-rows').replaceChildren(...all.map((a) => el('tr', {},
      el('td', { title: a.minute }, clock(a.minute)),
      el('td', {}, a.serviceName),
      el('td', { title: `unit: ${METRIC_UNITS[a.metric] || ''}` }, a.metric),
      el('td', { class: 'num' }, metricValue(a.metric, a.value)),
      el('td', { class: 'num' }, metricValue(a.metric, a.expected)),
      el('td', { class: 'num' }, short(a.score, 2)))));
    $('anomalies-empty').hidden = all.length > 0;
  }
}
