// Pulse's public HTTP API, as this page uses it: same origin, an optional secret key, and a
// deadline on every request (a server that does not answer must not freeze a panel).

const KEY_STORAGE = 'pulse.dashboard.secretKey';
export const REQUEST_DEADLINE_MS = 5000;

export class ApiError extends Error {
  constructor(status, reason, body) {
    super(reason);
    this.name = 'ApiError';
    this.status = status;
    this.body = body;
  }
}

/** 401/403: the key is missing, unknown, or a public (write-only) key. */
export class AuthError extends ApiError {
  constructor(status, reason) {
    super(status, reason, null);
    this.name = 'AuthError';
  }
}

function storage() {
  try {
    return window.localStorage;
  } catch {
    return null; // storage disabled: the key lasts as long as the page
  }
}

export class Api {
  constructor() {
    this.memoryKey = '';
    this.authListeners = [];
  }

  get key() {
    return storage()?.getItem(KEY_STORAGE) || this.memoryKey;
  }

  setKey(key) {
    this.memoryKey = key;
    storage()?.setItem(KEY_STORAGE, key);
  }

  clearKey() {
    this.memoryKey = '';
    storage()?.removeItem(KEY_STORAGE);
  }

  /** fn(status, reason) is called on every 401/403 answer. */
  onAuthError(fn) {
    this.authListeners.push(fn);
  }

  url(path, params = {}) {
    const url = new URL(path, window.location.origin);
    for (const [name, value] of Object.entries(params)) {
      if (value !== undefined && value !== null && value !== '') url.searchParams.set(name, String(value));
    }
    return url;
  }

  /** The URL of a stream: EventSource cannot send headers, so the key goes as ?key=. */
  streamUrl(path, params = {}) {
    return this.url(path, { ...params, key: this.key || undefined }).toString();
  }

  /**
   * GET a JSON resource. Resolves with the body; rejects with AuthError (401/403), ApiError
   * (another non-2xx, unless its status is in `accept`), or the fetch's error (network, deadline).
   */
  async get(path, params = {}, { accept = [], deadlineMs = REQUEST_DEADLINE_MS } = {}) {
    const headers = { Accept: 'application/json' };
    if (this.key) headers.Authorization = `Bearer ${this.key}`;
    const signal = AbortSignal.timeout(deadlineMs);
    const response = await fetch(this.url(path, params), { headers, signal, cache: 'no-store' });
    let body = null;
    try {
      body = await response.json();
    } catch {
      body = null;
    }
    if (response.status === 401 || response.status === 403) {
      const reason = body?.error?.reason || `HTTP ${response.status}`;
      for (const fn of this.authListeners) fn(response.status, reason);
      throw new AuthError(response.status, reason);
    }
    if (!response.ok && !accept.includes(response.status)) {
      throw new ApiError(response.status, body?.error?.reason || `HTTP ${response.status}`, body);
    }
    return body;
  }
}
