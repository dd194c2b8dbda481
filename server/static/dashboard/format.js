// Formatting and DOM helpers. Every figure goes through these: a value that is not a finite
// number is shown as "—", never as 0 or NaN. Event data comes from anyone who can ingest, so it is
// only ever put in the page as text (textContent), never as HTML.

export const DASH = '\u2014';

export function isNum(v) {
  return typeof v === 'number' && Number.isFinite(v);
}

export function num(v, digits = 0) {
  if (!isNum(v)) return DASH;
  return v.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** A figure with up to `digits` decimals, trailing zeros dropped (12.5, 3, 0.25). */
export function short(v, digits = 2) {
  if (!isNum(v)) return DASH;
  return v.toLocaleString('en-US', { maximumFractionDigits: digits });
}

/** A share 0..1 as a percentage. */
export function share(v, digits = 1) {
  return isNum(v) ? `${num(v * 100, digits)} %` : DASH;
}

/** A value already in percent (the services API's errorRate). */
export function percent(v, digits = 1) {
  return isNum(v) ? `${num(v, digits)} %` : DASH;
}

export function millis(v) {
  if (!isNum(v)) return DASH;
  return v >= 100 ? num(v, 0) : short(v, 1);
}

export function duration(seconds) {
  if (!isNum(seconds)) return DASH;
  const s = Math.floor(seconds);
  const d = Math.floor(s / 86400), h = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d) return `${d} d ${h} h`;
  if (h) return `${h} h ${m} min`;
  if (m) return `${m} min ${s % 60} s`;
  return `${s} s`;
}

/** Milliseconds since the epoch, or an ISO string, to a Date (null when neither). */
export function toDate(value) {
  if (isNum(value)) return new Date(value);
  if (typeof value === 'string') {
    const d = new Date(value);
    return Number.isNaN(d.getTime()) ? null : d;
  }
  return null;
}

export function clock(value, withMs = false) {
  const d = toDate(value);
  if (!d) return DASH;
  const t = d.toLocaleTimeString('en-GB', { hour12: false });
  return withMs ? `${t}.${String(d.getMilliseconds()).padStart(3, '0')}` : t;
}

export function ago(value, now = Date.now()) {
  const d = toDate(value);
  if (!d) return DASH;
  const s = Math.max(0, (now - d.getTime()) / 1000);
  if (s < 1) return 'just now';
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return d.toISOString().slice(0, 10);
}

/** el('td', {class: 'num', title: 'x'}, 'text', childNode…): children are text or nodes. */
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name === 'class') node.className = value;
    else if (name === 'dataset') Object.assign(node.dataset, value);
    else if (name.startsWith('on')) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value === true ? '' : String(value));
  }
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export function $(id) {
  const node = document.getElementById(id);
  if (!node) throw new Error(`dashboard: no element #${id}`);
  return node;
}

/** Shows when a polled panel's data is old because its last refresh failed. */
export function markStale(node, lastOk, error) {
  if (!error) {
    node.hidden = true;
    node.textContent = '';
    return;
  }
  node.hidden = false;
  const since = lastOk ? `data from ${clock(lastOk)}` : 'no data yet';
  node.textContent = `stale: ${since} (${error})`;
}

/** A short reason for a failed fetch, for staleness notes. */
export function reasonOf(err) {
  if (!err) return 'unknown error';
  if (err.name === 'TimeoutError' || err.name === 'AbortError') return 'no answer within 5 s';
  if (err instanceof TypeError) return 'server unreachable';
  return err.message || String(err);
}
