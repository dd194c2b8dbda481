/*
 * Pulse browser monitor, served as GET /api/monitor.js (seed 004 "Embed Monitor on Any Website").
 * This file is what browsers run: no build step. docs/monitor.md describes options and guarantees.
 *
 *   <script src="https://pulse.example.com/api/monitor.js" data-key="pk_..." async></script>
 *
 * Every event is queued in localStorage first (memory when storage is unusable), then sent in
 * batches to POST {origin}/api/events/track/batch; it leaves the queue only once Pulse's answer
 * names it stored, duplicate or rejected. Each carries a client-made eventId, so a resend (after a
 * lost answer, or a beacon whose fate is unknown) is stored once. Nothing here may throw into the
 * host page: every entry point runs inside guard().
 */
(function () {
  "use strict";
  var W = window, D = document, N = navigator;
  if (W.LiveMonitor && W.LiveMonitor.sessionId) return; // embedded twice: the first one runs

  // -- configuration: Pulse's origin from this script's own src, options from its data-* --
  var me = D.currentScript;
  if (!me) {
    var tags = D.querySelectorAll('script[src*="/api/monitor.js"]');
    me = tags[tags.length - 1];
  }
  var opt = (me && me.dataset) || {};
  var ORIGIN = new URL(opt.origin || (me && me.src) || "/", location.href).origin;
  var KEY = opt.key || "";
  if (/^sk_/.test(KEY)) { // anyone can read a page: a secret key there could read all of the project's data
    KEY = "";
    if (W.console) console.warn("Pulse monitor: data-key must be the project's public key (pk_...), not its secret key");
  }
  var SERVICE = opt.service || "web-analytics";
  var RATE = Math.min(1, Math.max(0, num(opt.sampleRate, 1)));
  var AUTO = !/^(false|off|no|0)$/i.test(opt.autocapture || "");
  var FLUSH_MS = num(opt.flushInterval, 1000); // events that come together go in one request
  var MAX_QUEUE = num(opt.maxQueue, 500); // beyond this the oldest queued events are dropped
  var BATCH = 50; // events per request
  var BEACON_BYTES = 60000; // browsers refuse beacons beyond 64 KiB in flight
  var MAX_ERRORS = 50; // js_error events per page: an error in a render loop must not flood Pulse
  var MAX_BACKOFF_MS = 60000;
  var ORPHAN_MS = 10000; // another tab's queued events are this tab's to send once they waited this long
  var KEYQ = KEY ? "?key=" + encodeURIComponent(KEY) : "";
  var BATCH_URL = ORIGIN + "/api/events/track/batch" + KEYQ;
  // query parameters whose values never leave the page (names matched case-insensitively)
  var SENSITIVE = new RegExp("token|secret|passw|pwd|auth|credential|signature|session|cookie|key$|^sig$" +
    (opt.redact ? "|^(" + opt.redact.split(",").map(function (s) {
      return s.trim().replace(/[^\w-]/g, "");
    }).join("|") + ")$" : ""), "i");
  // track() payload fields that are AIEventPayload fields; all others go into metadata
  var LIFT = { userRole: 1, correlationId: 1, statusCode: 1, responseTimeMs: 1, deviceType: 1,
               referrer: 1, userAgent: 1, serviceName: 1, userId: 1 };
  var DEVICE = /iPad|Tablet/i.test(N.userAgent) ? "tablet" : /Mobi|Android/i.test(N.userAgent) ? "mobile" : "desktop";

  var nativeFetch = W.fetch; // the monitor's own requests use this: it never tracks itself
  var listeners = {};
  var stats = { posted: 0, stored: 0, duplicates: 0, rejected: 0, sampledOut: 0, errorsSuppressed: 0,
                failures: 0, internalErrors: 0, lastError: null };

  function num(text, fallback) {
    var n = parseFloat(text);
    return isFinite(n) ? n : fallback;
  }

  function emit(type, detail) {
    (listeners[type] || []).slice().forEach(function (fn) {
      try { fn(detail); } catch (e) { /* a listener's bug is not ours to report to it again */ }
    });
  }

  function guard(fn) {
    return function () {
      try { return fn.apply(this, arguments); } catch (e) {
        stats.internalErrors++;
        emit("error", { message: "monitor: " + (e && e.message), error: e });
      }
    };
  }

  function uid() {
    try { if (W.crypto && crypto.randomUUID) return crypto.randomUUID(); } catch (e) { /* insecure context */ }
    var bytes = new Uint8Array(16), i, out = "";
    try { crypto.getRandomValues(bytes); } catch (e) { for (i = 0; i < 16; i++) bytes[i] = Math.random() * 256; }
    for (i = 0; i < 16; i++) out += (bytes[i] + 256).toString(16).slice(1);
    return out;
  }

  // An absolute URL without user:password@ and with sensitive parameter values replaced.
  function redact(url) {
    if (!url) return url;
    try { url = new URL(url, location.href).href; } catch (e) { url = String(url); }
    return url.replace(/^(\w+:\/\/)[^/?#@]*@/, "$1").replace(/([?&#;])([^=&#;]+)=([^&#;]*)/g,
      function (all, sep, name) {
        var plain = name;
        try { plain = decodeURIComponent(name); } catch (e) { /* keep it encoded */ }
        return SENSITIVE.test(plain) ? sep + name + "=REDACTED" : all;
      });
  }

  // -- storage: the offline queue lives in localStorage, shared by this site's tabs --
  function usable(kind) {
    try {
      var s = W[kind];
      s.setItem("pulse:probe", "1");
      s.removeItem("pulse:probe");
      return s;
    } catch (e) { return null; } // private mode, disabled, or blocked by the host's policy
  }
  var LS = usable("localStorage"), SS = usable("sessionStorage");
  var QKEY = "pulse:queue:" + ORIGIN;
  var memQueue = { e: [], d: 0, u: 0 }; // events, dropped ever, dropped not yet reported to Pulse

  function get(store, key) {
    try { return store ? store.getItem(key) : null; } catch (e) { return null; }
  }
  function set(store, key, value) {
    try { if (store) store.setItem(key, value); return !!store; } catch (e) { return false; }
  }
  // Read, change, write at once: another tab may have changed the queue since this one last looked.
  function readQueue() {
    if (!LS) return memQueue;
    try {
      var q = JSON.parse(get(LS, QKEY));
      if (q && q.e instanceof Array) {
        q.e = q.e.filter(function (ev) { return ev && ev.payload && ev.payload.eventId; }); // not ours: ignored
        q.d = q.d || 0;
        q.u = q.u || 0;
        return q;
      }
    } catch (e) { /* unreadable: start over */ }
    return { e: [], d: 0, u: 0 };
  }
  function writeQueue(q) {
    memQueue = q;
    if (LS && !set(LS, QKEY, JSON.stringify(q))) LS = null; // quota full: memory from now on
  }

  var SID = get(SS, "pulse:sid") || uid();
  set(SS, "pulse:sid", SID); // one session per tab, across reloads and same-site pages
  var sampledText = get(SS, "pulse:sampled");
  if (sampledText === null) {
    sampledText = Math.random() < RATE ? "1" : "0";
    set(SS, "pulse:sampled", sampledText);
  }
  var SAMPLED = sampledText === "1";
  var userId = get(LS, "pulse:uid");

  // -- events --
  function track(name, data) {
    if (typeof name !== "string" || !name || name.length > 200) {
      emit("error", { message: "track: the event name must be a string of 1 to 200 characters" });
      return null;
    }
    if (!SAMPLED) {
      stats.sampledOut++;
      return null;
    }
    var payload = { eventId: uid(), sessionId: SID, serviceName: SERVICE, timestamp: Date.now(), deviceType: DEVICE };
    if (userId) payload.userId = userId;
    var metadata = { url: redact(location.href) };
    for (var k in data) {
      if (Object.prototype.hasOwnProperty.call(data, k) && data[k] !== undefined) {
        (LIFT[k] ? payload : metadata)[k] = data[k];
      }
    }
    payload.metadata = metadata;
    var event;
    try {
      event = JSON.parse(JSON.stringify({ eventName: name, payload: payload })); // what is stored is what is sent
    } catch (e) {
      emit("error", { message: "track: the payload is not JSON (" + e.message + ")" });
      return null;
    }
    var q = readQueue();
    q.e.push(event);
    var over = q.e.length - MAX_QUEUE;
    if (over > 0) {
      q.e.splice(0, over);
      q.d += over;
      q.u += over;
      emit("drop", { reason: "queue_full", count: over });
    }
    writeQueue(q);
    emit("event", event);
    schedule(FLUSH_MS);
    return payload.eventId;
  }

  // -- sending: batches by fetch, kept and retried with backoff until Pulse answers --
  var timer = 0, due = 0, retryAt = 0, failures = 0, batchSize = BATCH, inflight = null;
  var errorsReported = 0; // js_error suppressions already reported to Pulse

  // This tab's events (its session survives reloads), and those another tab left behind: tabs that
  // run at once do not all send each other's events (Pulse would only answer "duplicate").
  function ours(ev) {
    return ev.payload.sessionId === SID || Date.now() - ev.payload.timestamp > ORPHAN_MS;
  }

  function schedule(ms) {
    var at = Math.max(Date.now() + ms, retryAt);
    if (timer && due <= at) return;
    clearTimeout(timer);
    due = at;
    timer = setTimeout(guard(send), at - Date.now());
  }

  function send() {
    clearTimeout(timer);
    timer = 0;
    if (inflight) return inflight.then(send);
    var batch = readQueue().e.filter(ours).slice(0, batchSize);
    if (!batch.length || !nativeFetch) return Promise.resolve(!batch.length);
    inflight = post(batch).then(function (ok) {
      inflight = null;
      if (ok && readQueue().e.some(ours)) return send();
      return ok;
    }, function (e) {
      inflight = null;
      stats.internalErrors++;
      emit("error", { message: "monitor: " + (e && e.message), error: e });
      return false;
    });
    return inflight;
  }

  // A batch as Pulse takes it: a text/plain body (no CORS preflight, and what sendBeacon sends)
  function body(events) {
    return new Blob([JSON.stringify({ batchId: uid(), sentAt: Date.now(), events: events })], { type: "text/plain" });
  }

  function post(events) {
    var blob = body(events);
    stats.posted += events.length; // resends included
    return nativeFetch.call(W, BATCH_URL, {
      method: "POST", body: blob, credentials: "omit",
      keepalive: D.visibilityState === "hidden" && blob.size < BEACON_BYTES // may outlive the page
    }).then(function (res) {
      return res.text().then(function (answer) {
        try { answer = JSON.parse(answer); } catch (e) { answer = null; }
        return settle(events, res.status, answer, res.headers.get("Retry-After"));
      });
    }).then(null, function (e) {
      return retry("Pulse unreachable: " + (e && e.message), 0, null);
    });
  }

  function settle(events, status, answer, retryAfter) {
    var done = {}, rejected = [];
    events.forEach(function (ev) { done[ev.payload.eventId] = 1; });
    if (status >= 200 && status < 300) {
      ((answer && answer.rejected) || []).forEach(function (r) {
        if (events[r.index]) rejected.push({ event: events[r.index], field: r.field, reason: r.reason });
      });
      var duplicates = (answer && answer.duplicateCount) || 0;
      stats.duplicates += duplicates;
      stats.stored += events.length - rejected.length - duplicates;
    } else if (status === 413 && events.length > 1) {
      batchSize = Math.max(1, events.length >> 1); // too big: smaller batches, same events
      return true;
    } else if (status === 400 || status === 413 || status === 422) {
      // Pulse refuses a batch only when no event in it is valid: resending cannot help
      var error = (answer && answer.error) || {};
      events.forEach(function (ev) { rejected.push({ event: ev, field: error.field, reason: error.reason }); });
    } else {
      return retry("Pulse answered " + status + ((answer && answer.error && ": " + answer.error.reason) || ""),
                   status, retryAfter);
    }
    failures = 0;
    retryAt = 0;
    batchSize = BATCH;
    var q = readQueue();
    q.e = q.e.filter(function (ev) { return !done[ev.payload.eventId]; });
    var lostErrors = stats.errorsSuppressed - errorsReported;
    var lost = q.u;
    q.u = 0;
    writeQueue(q);
    if (rejected.length) {
      stats.rejected += rejected.length;
      emit("drop", { reason: "rejected", count: rejected.length, events: rejected });
    }
    emit("flush", { count: events.length, rejected: rejected.length, status: status });
    if (lost || lostErrors) { // Pulse is reachable again: tell it what never reached it
      errorsReported += lostErrors;
      track("monitor_drop", { queueFull: lost, errorLimit: lostErrors });
    }
    return true;
  }

  function retry(message, status, retryAfter) {
    failures++;
    stats.failures++;
    stats.lastError = message;
    var wait = Math.min(MAX_BACKOFF_MS, 1000 * Math.pow(2, failures - 1)) * (0.5 + Math.random() / 2);
    var asked = parseFloat(retryAfter);
    if (asked >= 0) wait = Math.max(wait, asked * 1000);
    retryAt = Date.now() + wait;
    emit("error", { message: message, status: status, retryInMs: Math.round(wait) });
    schedule(0);
    return false;
  }

  // On leaving: whatever this page has not yet handed to sendBeacon. The events stay queued: the
  // beacon's fate is unknown, so the next page sends them again and Pulse answers "duplicate".
  var beaconed = {};
  function beacon() {
    if (!N.sendBeacon) return send();
    var events = readQueue().e.filter(function (ev) { return ours(ev) && !beaconed[ev.payload.eventId]; });
    while (events.length) {
      var n = Math.min(events.length, BATCH), blob = body(events.slice(0, n));
      while (n > 1 && blob.size > BEACON_BYTES) blob = body(events.slice(0, n >>= 1));
      if (!N.sendBeacon(BATCH_URL, blob)) return; // over the browser's quota: the queue keeps them
      events.splice(0, n).forEach(function (ev) { beaconed[ev.payload.eventId] = 1; });
    }
  }

  // -- automatic capture --
  var pageStart = Date.now(), lastUrl = null, viewed = false, leaving = false, errorCount = 0;

  function routeOf(url) { // a hash is a route only for hash routers (#/ or #!); else an anchor
    return /#[/!]/.test(url) ? url : url.split("#")[0];
  }

  function pageView(how) {
    var data = { title: D.title, path: location.pathname, navigation: how, userAgent: N.userAgent,
                 referrer: (redact(how === "load" ? D.referrer : lastUrl) || "").slice(0, 4096) || undefined };
    var nav = how === "load" && W.performance && performance.getEntriesByType &&
              performance.getEntriesByType("navigation")[0];
    if (nav) {
      data.navigationType = nav.type;
      data.ttfbMs = Math.round(nav.responseStart);
      data.domContentLoadedMs = Math.round(nav.domContentLoadedEventEnd) || undefined;
      data.loadTimeMs = Math.round(nav.loadEventEnd) || undefined;
    }
    lastUrl = location.href;
    pageStart = Date.now();
    viewed = true;
    track("page_view", data);
  }
  function firstView() { if (!viewed) pageView("load"); }
  function routeChanged(how) {
    setTimeout(guard(function () { // after the router's own synchronous work (e.g. the title)
      if (viewed && routeOf(location.href) !== routeOf(lastUrl)) pageView(how);
    }), 0);
  }

  function text(el) {
    var tag = el.tagName;
    if (el.isContentEditable || tag === "TEXTAREA" || tag === "SELECT") return undefined; // typed by the user
    var t = tag === "INPUT" ? (/^(button|submit|reset)$/i.test(el.type) ? el.value : "") :
            el.textContent || el.getAttribute("aria-label") || el.getAttribute("title"); // e.g. an icon link
    return (t || "").replace(/\s+/g, " ").trim().slice(0, 100) || undefined;
  }

  function onClick(e) {
    var target = e.target;
    if (!target || !target.closest || (panelHost && panelHost.contains(target))) return;
    var tracked = target.closest("[data-track]");
    var el = target.closest("a,button,[role=button],input[type=button],input[type=submit],input[type=reset]") || tracked;
    if (!el) return;
    track("click", {
      tag: el.tagName.toLowerCase(), id: el.id || undefined, text: text(el),
      track: (tracked && tracked.getAttribute("data-track")) || undefined,
      href: el.tagName === "A" && el.getAttribute("href") ? redact(el.getAttribute("href")) : undefined
    });
  }

  function onSubmit(e) {
    var form = e.target;
    if (!form || form.tagName !== "FORM") return;
    var attr = function (name) { return form.getAttribute(name) || undefined; }; // form.id may be a field named "id"
    track("form_submit", {
      id: attr("id"), name: attr("name"), action: redact(attr("action") || location.href),
      method: (attr("method") || "get").toLowerCase(), fieldCount: form.elements.length, track: attr("data-track")
    });
  }

  function apiCall(method, url, status, started, error) {
    var data = { method: String(method || "GET").toUpperCase(), url: redact(String(url)),
                 responseTimeMs: Math.max(0, Math.round(performance.now() - started)) };
    if (status) data.statusCode = status;
    else data.error = error || "network error";
    track("api_call", data);
  }

  function wrapFetch() {
    if (!nativeFetch) return;
    W.fetch = function (input, init) {
      var started = performance.now(), method, url, result = nativeFetch.apply(this, arguments);
      try {
        method = (init && init.method) || (input && input.method) || "GET";
        url = typeof input === "string" || input instanceof URL ? String(input) : input && input.url;
        result.then(guard(function (res) {
          if (res.type === "opaque") apiCall(method, url, 0, started, "opaque (no-cors)");
          else apiCall(method, url, res.status, started);
        }), guard(function (e) { apiCall(method, url, 0, started, e && e.message); }));
      } catch (e) { /* the page's fetch goes on untouched */ }
      return result;
    };
  }

  function wrapXhr() {
    var proto = W.XMLHttpRequest && XMLHttpRequest.prototype;
    if (!proto) return;
    var open = proto.open, sendXhr = proto.send;
    var ended = guard(function () {
      var info = this._pulse;
      if (info && info.t) apiCall(info.m, info.u, this.status, info.t, this.status ? null : "network error or aborted");
      if (info) info.t = 0;
    });
    proto.open = function (method, url) {
      try {
        if (!this._pulse) this.addEventListener("loadend", ended); // once per object, which may be reused
        this._pulse = { m: method, u: url, t: 0 };
      } catch (e) { /* the page's request goes on untouched */ }
      return open.apply(this, arguments);
    };
    proto.send = function () {
      if (this._pulse) this._pulse.t = performance.now();
      return sendXhr.apply(this, arguments);
    };
  }

  function jsError(kind, message, error, source, line, column) {
    if (++errorCount > MAX_ERRORS) {
      stats.errorsSuppressed++;
      return;
    }
    var urls = function (text) { return text.replace(/\bhttps?:\/\/[^\s)]+/g, redact); }; // e.g. a script's ?token=
    track("js_error", {
      kind: kind, message: urls(String(message || (error && error.message) || error).slice(0, 1000)),
      source: redact(source) || undefined, line: line || undefined, column: column || undefined,
      stack: (error && typeof error.stack === "string" && urls(error.stack.slice(0, 4000))) || undefined
    });
  }

  function autocapture() {
    if (D.readyState === "complete") setTimeout(guard(firstView), 0);
    else W.addEventListener("load", function () { setTimeout(guard(firstView), 0); }); // loadEventEnd is set
    ["pushState", "replaceState"].forEach(function (name) {
      var original = history[name];
      history[name] = function () {
        var result = original.apply(this, arguments);
        routeChanged(name);
        return result;
      };
    });
    W.addEventListener("popstate", function () { routeChanged("popstate"); });
    W.addEventListener("hashchange", function () { routeChanged("hashchange"); });
    D.addEventListener("click", guard(onClick), true);
    D.addEventListener("submit", guard(onSubmit), true);
    wrapFetch();
    wrapXhr();
    W.addEventListener("error", guard(function (e) {
      if (W.ErrorEvent && e instanceof ErrorEvent) jsError("error", e.message, e.error, e.filename, e.lineno, e.colno);
    }), true); // other error events are resources that failed to load
    W.addEventListener("unhandledrejection", guard(function (e) {
      jsError("unhandledrejection", e.reason && e.reason.message, e.reason);
    }));
    W.addEventListener("pageshow", guard(function (e) { if (e.persisted) pageView("back_forward_cache"); }));
  }

  // Leaving: pagehide comes first, then visibilitychange to hidden. A hidden page that is not
  // leaving (another tab) sends by fetch (keepalive); a leaving one hands the rest to sendBeacon.
  function onPageHide(e) {
    leaving = true;
    if (AUTO) {
      firstView();
      track("page_exit", { timeOnPageMs: Date.now() - pageStart, persisted: e.persisted });
    }
    beacon();
  }
  function onVisibility() {
    if (AUTO) track("visibility_change", { state: D.visibilityState, timeOnPageMs: Date.now() - pageStart });
    if (D.visibilityState === "hidden") leaving ? beacon() : send();
  }

  // -- the panel (Ctrl+Shift+M): this session's live stream from Pulse, in a Shadow DOM --
  var panelHost = null, panelRoot = null, source = null;
  var PANEL_CSS =
    ":host{all:initial}[hidden]{display:none!important}.p{position:fixed;right:12px;bottom:12px;z-index:2147483647;width:360px;max-height:50vh;" +
    "display:flex;flex-direction:column;font:12px/1.4 system-ui,sans-serif;color:#e8eaed;background:#202124;" +
    "border-radius:8px;box-shadow:0 4px 16px rgba(0,0,0,.4);overflow:hidden}" +
    "header{display:flex;gap:8px;align-items:center;padding:6px 10px;background:#303134;font-weight:600}" +
    "header span{flex:1}button{all:unset;cursor:pointer;padding:0 4px}.s{padding:4px 10px;color:#9aa0a6}" +
    "ol{list-style:none;margin:0;padding:0 10px 8px;overflow:auto}li{padding:2px 0;border-top:1px solid #3c4043;" +
    "white-space:nowrap;overflow:hidden;text-overflow:ellipsis}b{color:#8ab4f8;font-weight:600}";

  function buildPanel() {
    panelHost = D.createElement("pulse-monitor"); // a tag of its own: host CSS aimed at divs misses it
    panelRoot = panelHost.attachShadow ? panelHost.attachShadow({ mode: "open" }) : panelHost;
    panelRoot.innerHTML = "<style>" + PANEL_CSS + "</style><div class=p hidden role=log aria-label='Pulse live monitor'>" +
      "<header><span></span><button title='Hide (Ctrl+Shift+M)'>\u00d7</button></header><div class=s></div><ol></ol></div>";
    panelRoot.querySelector("header span").textContent = "Pulse live \u00b7 session " + SID.slice(0, 8);
    panelRoot.querySelector("button").addEventListener("click", guard(hide));
    (D.body || D.documentElement).appendChild(panelHost);
  }

  function shown() { return !!panelRoot && !panelRoot.querySelector(".p").hidden; }

  function panelStatus(text) {
    if (!shown()) return;
    var q = readQueue();
    panelRoot.querySelector(".s").textContent = (text ? text + " \u00b7 " : "") + "queued " + q.e.length +
      " \u00b7 stored " + stats.stored + " \u00b7 dropped " + q.d + " \u00b7 rejected " + stats.rejected +
      (SAMPLED ? "" : " \u00b7 not sampled: nothing is sent");
  }

  function panelRow(message) {
    var item = D.createElement("li"), name = D.createElement("b"), event = message.event || {};
    name.textContent = message.eventType;
    item.className = "row";
    item.appendChild(D.createTextNode(new Date(message.timestamp).toLocaleTimeString() + " "));
    item.appendChild(name);
    item.appendChild(D.createTextNode(" " + (event.track || event.text || event.title || event.url || "")));
    var list = panelRoot.querySelector("ol");
    list.insertBefore(item, list.firstChild);
    while (list.children.length > 100) list.removeChild(list.lastChild);
  }

  function show() {
    if (!panelHost) buildPanel();
    panelRoot.querySelector(".p").hidden = false;
    panelStatus("connecting");
    if (!source && W.EventSource) {
      source = new EventSource(ORIGIN + "/api/v1/behavioral/stream?sessionId=" + encodeURIComponent(SID) +
                               (KEY ? "&key=" + encodeURIComponent(KEY) : ""));
      source.onopen = guard(function () { panelStatus("live"); });
      source.onerror = guard(function () { panelStatus("reconnecting"); });
      source.onmessage = guard(function (m) {
        var message = JSON.parse(m.data);
        if (message.type === "behavioral_event") panelRow(message);
        panelStatus("live");
      });
    }
  }

  function hide() {
    if (panelRoot) panelRoot.querySelector(".p").hidden = true;
    if (source) source.close();
    source = null;
  }

  // -- start --
  W.addEventListener("keydown", guard(function (e) {
    if (e.ctrlKey && e.shiftKey && (e.code === "KeyM" || e.key === "M" || e.key === "m")) {
      e.preventDefault();
      if (shown()) hide(); else show();
    }
  }), true);
  ["event", "flush", "drop", "error"].forEach(function (type) {
    (listeners[type] = []).push(function () { panelStatus(source && source.readyState === 1 ? "live" : ""); });
  });
  W.addEventListener("online", guard(function () { retryAt = 0; send(); }));
  W.addEventListener("pagehide", guard(onPageHide));
  W.addEventListener("pageshow", guard(function () { leaving = false; }));
  D.addEventListener("visibilitychange", guard(onVisibility));

  W.LiveMonitor = {
    sessionId: SID,
    origin: ORIGIN,
    track: guard(function (name, payload) { return track(name, payload || {}); }),
    identify: guard(function (id) {
      if (id !== null && id !== undefined && id !== "" && String(id).length > 200) {
        emit("error", { message: "identify: a user id is at most 200 characters" }); // Pulse would refuse every event
        return;
      }
      userId = id === null || id === undefined || id === "" ? null : String(id);
      if (!userId) { try { LS && LS.removeItem("pulse:uid"); } catch (e) { /* nothing to forget */ } }
      else set(LS, "pulse:uid", userId);
    }),
    flush: function () {
      try { retryAt = 0; return send(); } catch (e) { return Promise.resolve(false); }
    },
    show: guard(show),
    hide: guard(hide),
    on: function (type, fn) {
      if (typeof fn !== "function") return function () {};
      (listeners[type] = listeners[type] || []).push(fn);
      return function () { listeners[type] = listeners[type].filter(function (f) { return f !== fn; }); };
    },
    stats: function () {
      var q = readQueue();
      return { queued: q.e.length, dropped: q.d, posted: stats.posted, stored: stats.stored, duplicates: stats.duplicates,
               rejected: stats.rejected, sampledOut: stats.sampledOut, sampled: SAMPLED,
               errorsSuppressed: stats.errorsSuppressed, failures: stats.failures, internalErrors: stats.internalErrors,
               lastError: stats.lastError, storage: LS ? "localStorage" : "memory" };
    }
  };

  guard(function () {
    if (AUTO) autocapture();
    if (readQueue().e.some(ours)) send(); // left by an earlier page of this tab, or a closed tab
  })();
})();
