// Per-service statistics: the server's figures (GET /api/events/services, polled) in a table, and
// two charts over the last 10 minutes (events and mean response time per 10 s, per service) counted
// from the events this page has: the stream's, plus those loaded at start.

import { $, el, ago, DASH, isNum, markStale, millis, num, percent, reasonOf } from './format.js';
import { lineChart, PALETTE, sparkline } from './charts.js';
import { RecentIds } from './ids.js';

export const BUCKET_MS = 10000;
export const WINDOW_MS = 10 * 60000;
const MAX_LINES = PALETTE.length;
const P95_SAMPLE = 500;
const REFRESH_MS = 10000;

/** Per service and 10-second bucket of event time: events, and response times summed. */
export class Series {
  constructor() {
    this.buckets = new Map(); // service -> Map(bucketStart -> {count, rtSum, rtCount})
    this.counted = new RecentIds(50000); // each event counted once
    this.completeFrom = null; // before this time the page may not have every event
    this.incompleteWhy = '';
  }

  /** The page may lack events before `time` (counts before it are unknown, not zero). */
  markIncomplete(time, why) {
    if (this.completeFrom === null || time > this.completeFrom) {
      this.completeFrom = time;
      this.incompleteWhy = why;
    }
  }

  add(event) {
    const t = event.timestamp;
    if (!isNum(t)) return;
    const bucket = Math.floor(t / BUCKET_MS) * BUCKET_MS;
    if (bucket < Date.now() - WINDOW_MS - BUCKET_MS || !this.counted.add(event.id)) return;
    const name = event.serviceName || '(none)';
    let perService = this.buckets.get(name);
    if (!perService) this.buckets.set(name, perService = new Map());
    let b = perService.get(bucket);
    if (!b) perService.set(bucket, b = { count: 0, rtSum: 0, rtCount: 0 });
    b.count += 1;
    const rt = event.payload?.responseTimeMs;
    if (isNum(rt)) {
      b.rtSum += rt;
      b.rtCount += 1;
    }
  }

  prune(now = Date.now()) {
    const oldest = Math.floor((now - WINDOW_MS) / BUCKET_MS) * BUCKET_MS;
    for (const [name, perService] of this.buckets) {
      for (const bucket of perService.keys()) if (bucket < oldest) perService.delete(bucket);
      if (!perService.size) this.buckets.delete(name);
    }
  }

  /** Bucket starts of the window, oldest first (the newest one is still filling). */
  times(now = Date.now()) {
    const last = Math.floor(now / BUCKET_MS) * BUCKET_MS;
    const out = [];
    for (let t = last - WINDOW_MS + BUCKET_MS; t <= last; t += BUCKET_MS) out.push(t);
    return out;
  }

  known(t) {
    return this.completeFrom === null || t >= this.completeFrom;
  }

  counts(name, times) {
    const perService = this.buckets.get(name) || new Map();
    return times.map((t) => (this.known(t) ? perService.get(t)?.count ?? 0 : null));
  }

  meanResponse(name, times) {
    const perService = this.buckets.get(name) || new Map();
    return times.map((t) => {
      const b = perService.get(t);
      return b && b.rtCount ? b.rtSum / b.rtCount : null;
    });
  }

  total(name) {
    let n = 0;
    for (const b of (this.buckets.get(name) || new Map()).values()) n += b.count;
    return n;
  }
}

function percentile(values, q) {
  if (!values.length) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
}

export class ServicesPanel {
  constructor(api, live) {
    this.api = api;
    this.live = live;
    this.series = new Series();
    this.colors = new Map();
    this.stats = [];
    this.lastOk = null;
    this.tbody = $('service-rows');
  }

  colorOf(name) {
    if (!this.colors.has(name)) this.colors.set(name, PALETTE[this.colors.size % PALETTE.length]);
    return this.colors.get(name);
  }

  add(event) {
    this.series.add(event);
  }

  start() {
    this.refresh();
    setInterval(() => this.refresh(), REFRESH_MS);
    setInterval(() => this.draw(), 2000);
  }

  async refresh() {
    try {
      const body = await this.api.get('/api/events/services');
      this.stats = body.services || [];
      this.summary = body.summary || null;
      this.lastOk = Date.now();
      markStale($('services-stale'), this.lastOk, null);
    } catch (err) {
      markStale($('services-stale'), this.lastOk, reasonOf(err));
    }
    this.renderTable();
    this.draw();
  }

  /** The services drawn: the busiest of the window, at most one per palette colour. */
  drawn() {
    const names = [...this.series.buckets.keys()];
    names.sort((a, b) => this.series.total(b) - this.series.total(a) || a.localeCompare(b));
    return names.slice(0, MAX_LINES);
  }

  draw() {
    const now = Date.now();
    this.series.prune(now);
    const times = this.series.times(now);
    const names = this.drawn();
    for (const name of [...names].sort()) this.colorOf(name);
    const from = times[0], to = times[times.length - 1];
    lineChart($('chart-volume'), {
      label: 'Events per 10 seconds by service',
      from, to,
      lines: names.map((name) => ({ name, color: this.colorOf(name), points: zip(times, this.series.counts(name, times)) })),
    });
    lineChart($('chart-latency'), {
      label: 'Mean response time per 10 seconds by service', unit: ' ms',
      from, to,
      lines: names.map((name) => ({ name, color: this.colorOf(name), points: zip(times, this.series.meanResponse(name, times)) })),
    });
    $('chart-legend').replaceChildren(...names.map((name) => el('li', { dataset: { service: name } },
      el('span', { class: 'swatch', style: `background:${this.colorOf(name)}`, 'aria-hidden': 'true' }), name)));
    const hidden = this.series.buckets.size - names.length;
    const notes = [];
    if (this.series.completeFrom !== null && this.series.completeFrom > from) {
      notes.push(`Event counts before ${new Date(this.series.completeFrom).toLocaleTimeString('en-GB')} are left out: ${this.series.incompleteWhy}.`);
    }
    if (hidden > 0) notes.push(`${hidden} quieter service${hidden > 1 ? 's are' : ' is'} not drawn (see the table).`);
    $('chart-note').hidden = !notes.length;
    $('chart-note').textContent = notes.join(' ');
    this.renderSparks(times);
  }

  /** p95 of the response times of the service's newest events this page holds. */
  p95(name) {
    const times = this.live.newest((e) => e.serviceName === name && isNum(e.payload?.responseTimeMs), P95_SAMPLE)
      .map((e) => e.payload.responseTimeMs);
    return { value: percentile(times, 0.95), sample: times.length };
  }

  renderTable() {
    const rows = this.stats.map((s) => {
      const name = s.serviceName;
      const p95 = this.p95(name);
      return el('tr', { dataset: { service: name ?? '' } },
        el('th', { scope: 'row' }, name ?? '(no service)'),
        el('td', { class: 'num' }, num(s.eventCount)),
        el('td', { class: 'num' }, num(s.uniqueEvents)),
        el('td', { class: 'num' }, millis(s.avgResponseTime)),
        el('td', { class: 'num', title: p95.sample ? `from the last ${p95.sample} response times` : 'no response times seen' }, millis(p95.value)),
        el('td', { class: s.errorRate > 5 ? 'num bad' : 'num' }, percent(s.errorRate)),
        el('td', { title: s.lastSeen || '' }, ago(s.lastSeen)),
        el('td', { class: 'spark-cell', dataset: { spark: name ?? '' } }));
    });
    this.tbody.replaceChildren(...rows);
    $('services-empty').hidden = rows.length > 0 || this.lastOk === null; // said once the server answered
    const sum = this.summary;
    $('services-summary').textContent = sum
      ? `${num(sum.totalServices)} services, ${num(sum.totalEvents)} events; mean response ${millis(sum.avgResponseTime)} ms; error rate ${percent(sum.overallErrorRate)} (statusCode ≥ 400 among events with a status).`
      : '';
    this.renderSparks(this.series.times());
  }

  renderSparks(times) {
    for (const cell of this.tbody.querySelectorAll('td[data-spark]')) {
      const name = cell.dataset.spark || '(none)';
      const counts = this.series.counts(name, times);
      const seen = counts.reduce((a, v) => a + (v ?? 0), 0);
      cell.replaceChildren(seen ? sparkline(counts, this.colorOf(name), `${seen} events of ${name} in the last 10 minutes`) : DASH);
    }
  }
}

function zip(times, values) {
  return times.map((t, i) => [t, values[i]]);
}
