// One live SSE stream that stays up by itself.
//
// EventSource retries on its own after a dropped connection (with Last-Event-ID, so the server
// replays what was missed), but gives up for good on an HTTP error answer (401, 503 while
// draining…) and cannot tell a half-open connection from a quiet one. So: every 'error' reports
// the stream as down at once; a stream the browser closed is reopened here with exponential
// backoff and the last id as ?lastEventId=; and a stream silent for longer than the server's
// keep-alives allow (stats every 5 s, ping every 15 s) is closed and reopened the same way.

const BACKOFF_FIRST_MS = 1000;
const BACKOFF_MAX_MS = 30000;
const SILENCE_LIMIT_MS = 40000;

export class LiveStream {
  /**
   * url(lastEventId) -> the stream URL; onMessage(message, id) for each parsed data message;
   * onState('connecting' | 'live' | 'down', detail); onGap(gap) for a named 'gap' message;
   * beforeReopen() -> a promise, rejected to stop reopening (e.g. the key was refused).
   */
  constructor({ url, onMessage, onState, onGap = () => {}, beforeReopen = async () => {} }) {
    this.urlFor = url;
    this.onMessage = onMessage;
    this.onState = onState;
    this.onGap = onGap;
    this.beforeReopen = beforeReopen;
    this.source = null;
    this.lastId = '';
    this.failures = 0;
    this.reconnects = 0;
    this.lastMessageAt = 0;
    this.openedAt = 0;
    this.state = 'connecting';
    this.retryTimer = null;
    this.watchdog = null;
    this.stopped = true;
  }

  start() {
    this.stopped = false;
    this.open();
    this.watchdog = setInterval(() => this.checkSilence(), 5000);
  }

  stop() {
    this.stopped = true;
    clearInterval(this.watchdog);
    clearTimeout(this.retryTimer);
    this.source?.close();
    this.source = null;
  }

  setState(state, detail = '') {
    this.state = state;
    this.onState(state, detail);
  }

  open() {
    clearTimeout(this.retryTimer);
    this.source?.close();
    const source = new EventSource(this.urlFor(this.lastId));
    this.source = source;
    this.lastMessageAt = Date.now();
    this.setState('connecting');
    source.onopen = () => {
      if (source !== this.source) return;
      if (this.openedAt) this.reconnects += 1;
      this.openedAt = Date.now();
      this.failures = 0;
      this.lastMessageAt = Date.now();
      this.setState('live');
    };
    source.onmessage = (e) => {
      if (source !== this.source) return;
      this.lastMessageAt = Date.now();
      if (e.lastEventId) this.lastId = e.lastEventId;
      let message;
      try {
        message = JSON.parse(e.data);
      } catch {
        console.warn('pulse dashboard: a stream message that is not JSON was ignored');
        return;
      }
      this.onMessage(message, e.lastEventId);
    };
    source.addEventListener('gap', (e) => {
      if (source !== this.source) return;
      this.lastMessageAt = Date.now();
      try {
        this.onGap(JSON.parse(e.data));
      } catch {
        this.onGap({ reason: 'unknown', message: 'a gap message that is not JSON' });
      }
    });
    source.onerror = () => {
      if (source !== this.source || this.stopped) return;
      if (source.readyState === EventSource.CLOSED) {
        this.reopenLater('the server refused or ended the stream');
      } else {
        this.setState('down', 'connection lost; the browser is reconnecting');
      }
    };
  }

  /** Close and reopen after a backoff (1 s, 2 s, 4 s… up to 30 s, with jitter). */
  reopenLater(why) {
    this.source?.close();
    this.source = null;
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_FIRST_MS * 2 ** this.failures) * (0.75 + Math.random() * 0.5);
    this.failures += 1;
    this.setState('down', `${why}; reconnecting in ${Math.ceil(delay / 1000)} s`);
    clearTimeout(this.retryTimer);
    this.retryTimer = setTimeout(async () => {
      if (this.stopped) return;
      try {
        await this.beforeReopen();
      } catch (err) {
        if (err?.name === 'AuthError') return; // the key form is shown; it restarts the stream
        this.reopenLater(`the server is not answering (${err?.message || err})`);
        return;
      }
      if (!this.stopped) this.open();
    }, delay);
  }

  checkSilence() {
    if (this.stopped || !this.source || this.state !== 'live') return;
    if (Date.now() - this.lastMessageAt > SILENCE_LIMIT_MS) {
      this.reopenLater(`nothing received for ${SILENCE_LIMIT_MS / 1000} s`);
    }
  }
}
