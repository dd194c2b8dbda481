// A bounded memory of event ids, to count or show each event once. A resumed stream may repeat
// events (at-least-once), and the events loaded at start overlap the first live ones; both only
// ever concern recent events, so remembering the newest `size` ids is enough.

export class RecentIds {
  constructor(size) {
    this.size = size;
    this.set = new Set();
    this.order = [];
    this.head = 0;
  }

  has(id) {
    return this.set.has(id);
  }

  /** Remembers id; false when it was already known. */
  add(id) {
    if (this.set.has(id)) return false;
    this.set.add(id);
    this.order.push(id);
    if (this.order.length - this.head > this.size) {
      this.set.delete(this.order[this.head]);
      this.head += 1;
      if (this.head > this.size) { // compact now and then, not on every add
        this.order = this.order.slice(this.head);
        this.head = 0;
      }
    }
    return true;
  }
}

/** Events per second over a sliding window, from counts per whole second (O(1) per event). */
export class RateMeter {
  constructor(windowS = 10) {
    this.windowS = windowS;
    this.counts = new Map(); // second -> events
    this.since = Date.now();
  }

  tick(now = Date.now()) {
    const second = Math.floor(now / 1000);
    this.counts.set(second, (this.counts.get(second) || 0) + 1);
  }

  /** Events per second over the last windowS seconds (or since the page opened, if shorter). */
  rate(now = Date.now()) {
    const windowMs = Math.min(this.windowS * 1000, now - this.since);
    if (windowMs < 1000) return null; // too early to say
    const first = Math.floor((now - windowMs) / 1000);
    let n = 0;
    for (const [second, count] of this.counts) {
      if (second < first - 1) this.counts.delete(second);
      else if (second >= first) n += count;
    }
    return n / (windowMs / 1000);
  }
}
