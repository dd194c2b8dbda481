// Connection and health: this page's stream connection, and the server's own figures from
// GET /api/v1/behavioral/health and /api/v1/behavioral/monitoring/performance (polled).

import { $, el, ago, DASH, duration, markStale, millis, num, reasonOf, share, short } from './format.js';

const EVERY_MS = 5000;

export class HealthPanel {
  constructor(api, stream, live) {
    this.api = api;
    this.stream = stream;
    this.live = live;
    this.health = null;
    this.perf = null;
    this.lastOk = null;
  }

  start() {
    this.refresh();
    setInterval(() => this.refresh(), EVERY_MS);
    setInterval(() => this.render(), 1000);
  }

  async refresh() {
    const [health, perf] = await Promise.allSettled([
      this.api.get('/api/v1/behavioral/health', {}, { accept: [503] }), // 503 = unhealthy, still a report
      this.api.get('/api/v1/behavioral/monitoring/performance'),
    ]);
    const failed = [health, perf].find((r) => r.status === 'rejected');
    if (health.status === 'fulfilled') this.health = health.value;
    if (perf.status === 'fulfilled') this.perf = perf.value;
    if (!failed) this.lastOk = Date.now();
    markStale($('health-stale'), this.lastOk, failed ? reasonOf(failed.reason) : null);
    this.render();
  }

  render() {
    const h = this.health || {};
    const p = this.perf || {};
    const m = p.metrics || {};
    const c = p.connections || {};
    const a = p.actors || {};
    const q = p.queues || {};
    const ev = p.events || {};
    const lat = m.processingLatency || {};
    const s = this.stream;
    const drops = Object.entries(p.drops || {}).filter(([, n]) => n > 0);
    const page = s.state === 'live' ? `live for ${duration((Date.now() - s.openedAt) / 1000)}` : s.state === 'down' ? 'disconnected' : 'connecting';
    const pairs = [
      ['this page', `${page} · ${num(s.reconnects)} reconnects · last message ${s.lastMessageAt ? ago(s.lastMessageAt) : DASH}`],
      ['events seen here', num(this.live.received)],
      ['server', h.status ? `${h.status} · up ${duration(h.metrics?.uptimeSeconds)} · ${h.details?.storage || DASH}` : DASH],
      ['connections', p.connections ? `${num(c.websockets)} WebSocket, ${num(c.sse)} SSE${c.refused ? `, ${num(c.refused)} refused` : ''}` : DASH],
      ['ingest · HTTP', p.metrics ? `${short(m.eventIngestionRate, 1)} events/s · ${short(m.throughput, 1)} answers/s` : DASH],
      ['processing p50/p95/p99', p.metrics ? `${millis(lat.p50)} / ${millis(lat.p95)} / ${millis(lat.p99)} ms` : DASH],
      ['API mean · 5xx', p.metrics ? `${millis(m.apiResponseTime?.average)} ms · ${share(m.errorRate, 2)}` : DASH],
      ['actors', p.actors ? `${num(a.liveTotal)} live (${Object.entries(a.liveActors || {}).map(([k, v]) => `${num(v)} ${k}`).join(', ') || 'none'}) · mailbox max ${num(a.mailboxDepthMax)}${h.details?.realTimeProcessing ? ` of ${num(h.details.realTimeProcessing.mailboxSize)}` : ''}` : DASH],
      ['queued', p.queues ? `${num(q.subscribers)} for subscribers · ${num(q.storeWriter)} for the store` : DASH],
      ['events', p.events ? `${num(ev.stored)} stored · ${num(ev.duplicates)} duplicate · ${num(ev.rejected)} rejected` : DASH],
      ['drops', p.drops ? (drops.length ? drops.map(([k, n]) => `${k}: ${num(n)}`).join(', ') : 'none') : DASH],
    ];
    $('health-figures').replaceChildren(...pairs.flatMap(([k, v]) => [el('dt', {}, k), el('dd', { dataset: { figure: k } }, v)]));
    const reasons = h.reasons || {};
    $('health-components').replaceChildren(...Object.entries(h.components || {}).map(([name, state]) => el('li', { class: `component ${state}` },
      el('span', { class: 'dot', 'aria-hidden': 'true' }), `${name}: ${state}`, reasons[name] ? ` — ${reasons[name]}` : '')));
  }
}
