// Live sessions: the session ids seen on the stream, newest activity first. Selecting one shows
// its live state and insights (GET /api/v1/behavioral/sessions/{id}) and keeps them current with
// the session's own behavioral stream (engagement_metrics messages).

import { $, el, ago, clock, DASH, isNum, num, reasonOf, share, short } from './format.js';
import { LiveStream } from './stream.js';

const SHOWN = 30;
const REMEMBERED = 1000;

export class SessionsPanel {
  constructor(api) {
    this.api = api;
    this.sessions = new Map(); // id -> {id, userId, seen, lastEvent, lastAt}
    this.selected = null;
    this.detailStream = null;
    this.renderQueued = false;
    $('session-rows').addEventListener('click', (e) => {
      const button = e.target.closest('button[data-session]');
      if (button) this.select(button.dataset.session);
    });
    setInterval(() => this.render(), 5000); // "last seen" ages
  }

  add(event) {
    if (!event.sessionId) return;
    let s = this.sessions.get(event.sessionId);
    if (!s) {
      s = { id: event.sessionId, userId: null, seen: 0, lastEvent: null, lastAt: 0 };
      this.sessions.set(event.sessionId, s);
    }
    s.seen += 1;
    s.userId = event.userId || s.userId;
    if ((event.receivedAt ?? event.timestamp) >= s.lastAt) {
      s.lastAt = event.receivedAt ?? event.timestamp;
      s.lastEvent = event.name;
    }
    if (this.sessions.size > REMEMBERED + 100) { // prune in chunks: one sort per 100 new sessions
      const oldest = [...this.sessions.values()].sort((a, b) => a.lastAt - b.lastAt).slice(0, this.sessions.size - REMEMBERED);
      for (const old of oldest) this.sessions.delete(old.id);
    }
    if (!this.renderQueued) {
      this.renderQueued = true;
      setTimeout(() => {
        this.renderQueued = false;
        this.render();
      }, 500);
    }
  }

  render() {
    const newest = [...this.sessions.values()].sort((a, b) => b.lastAt - a.lastAt).slice(0, SHOWN);
    $('session-rows').replaceChildren(...newest.map((s) => el('tr', { class: s.id === this.selected ? 'selected' : undefined },
      el('td', { class: 'id' }, el('button', { type: 'button', class: 'link', dataset: { session: s.id }, 'aria-pressed': String(s.id === this.selected) }, s.id)),
      el('td', { class: 'id' }, s.userId || DASH),
      el('td', { class: 'num' }, num(s.seen)),
      el('td', {}, s.lastEvent || DASH),
      el('td', { title: clock(s.lastAt) }, ago(s.lastAt)))));
    $('sessions-empty').hidden = newest.length > 0;
  }

  async select(id) {
    this.selected = id;
    this.render();
    this.detailStream?.stop();
    this.detailStream = null;
    const box = $('session-detail');
    box.hidden = false;
    box.replaceChildren(el('p', { class: 'muted' }, `Loading session ${id}…`));
    let view;
    try {
      view = await this.api.get(`/api/v1/behavioral/sessions/${encodeURIComponent(id)}`);
    } catch (err) {
      if (this.selected === id) box.replaceChildren(el('p', { class: 'error' }, `Session ${id}: ${reasonOf(err)}`));
      return;
    }
    if (this.selected !== id) return;
    this.renderDetail(view, 'loaded');
    this.detailStream = new LiveStream({
      url: (lastId) => this.api.streamUrl('/api/v1/behavioral/stream', { sessionId: id, subscriptions: 'engagement_metrics', lastEventId: lastId || undefined }),
      onMessage: (message) => {
        if (message.type === 'session_metrics' && message.sessionId === id && this.selected === id) {
          this.renderDetail(message.metrics, 'live');
        }
      },
      onState: (state) => {
        const live = document.getElementById('session-live');
        if (live) live.textContent = state === 'live' ? 'updating live' : state === 'down' ? 'live updates reconnecting…' : 'connecting…';
      },
    });
    this.detailStream.start();
  }

  renderDetail(s, how) {
    const ins = s.insights || {};
    const eng = ins.engagement || {};
    const intent = ins.intent || {};
    const next = ins.nextAction;
    const conv = ins.conversionProbability;
    const pairs = [
      ['user', s.userId || DASH],
      ['events', num(s.eventCount)],
      ['page views', num(s.pageViews)],
      ['current page', s.currentPage || DASH],
      ['started', clock(s.startedAt)],
      ['last activity', `${clock(s.lastActivity)} (${ago(s.lastActivity)})`],
      ['last event', s.lastEventType || DASH],
      ['max scroll depth', share(s.maxScrollDepth, 0)],
      ['engagement', isNum(eng.score) ? `${short(eng.score, 2)} (${eng.trend || DASH}, confidence ${share(eng.confidence, 0)})` : DASH],
      ['purchase intent', share(intent.purchaseIntent, 0)],
      ['interaction intent', share(intent.interactionIntent, 0)],
      ['exit intent', share(intent.exitIntent, 0)],
      ['pattern', ins.behaviorPattern || DASH],
      ['next action', next ? describeNext(next) : 'no prediction yet (the model needs completed journeys)'],
      ['conversion probability', conv ? describeConversion(conv) : DASH],
      ['recommended action', ins.recommendedAction ? `${ins.recommendedAction} (confidence ${share(ins.recommendationConfidence, 0)})` : DASH],
    ];
    $('session-detail').replaceChildren(
      el('div', { class: 'panel-head' },
        el('h3', {}, `Session ${s.sessionId}`),
        el('span', { id: 'session-live', class: 'muted' }, how === 'live' ? 'updating live' : 'connecting…')),
      el('dl', { class: 'figures compact' }, ...pairs.flatMap(([k, v]) => [el('dt', {}, k), el('dd', {}, v)])));
  }
}

function describeNext(next) {
  if (typeof next !== 'object') return String(next);
  const action = next.action ?? next.eventType ?? next.name;
  const p = next.probability ?? next.confidence;
  return action ? `${action}${isNum(p) ? ` (${share(p, 0)})` : ''}` : JSON.stringify(next);
}

function describeConversion(conv) {
  if (isNum(conv)) return share(conv, 0);
  if (typeof conv === 'object' && isNum(conv.probability)) return `${share(conv.probability, 0)}${conv.source ? ` (${conv.source})` : ''}`;
  return JSON.stringify(conv);
}
