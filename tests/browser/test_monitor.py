"""The embeddable monitor (GET /api/monitor.js) in real Chromium, on a page of another origin.

Every check reads what Pulse stored (GET /api/events), not what the page thinks it sent.
"""

from __future__ import annotations

import json
import pathlib
import socket
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx
import pytest

from tests.e2e.server_process import ServerProcess

DEADLINE_S = 20.0  # generous: the machine is shared; every wait ends as soon as its condition holds
T = TypeVar("T")


def wait_for(check: Callable[[], T | None], what: str, page: Any = None, deadline_s: float = DEADLINE_S) -> T:
    """Poll ``check`` until it returns something truthy; fail naming ``what`` after the deadline.
    With ``page``, the pauses go through Playwright, which runs route handlers only meanwhile."""
    until = time.monotonic() + deadline_s
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > until:
            raise AssertionError(f"timed out after {deadline_s:g} s waiting for {what}")
        if page is None:
            time.sleep(0.1)
        else:
            page.wait_for_timeout(100)


def stored(pulse: ServerProcess, key: str | None = None, **filters: str) -> list[dict[str, Any]]:
    """The events Pulse stored that match ``filters`` (GET /api/events), oldest first."""
    params = {"limit": "1000", **filters}
    if key:
        params["key"] = key
    answer = httpx.get(f"{pulse.url}/api/events", params=params, timeout=10)
    assert answer.status_code == 200, answer.text + "".join(pulse.output[-40:])
    events: list[dict[str, Any]] = answer.json()["events"]
    return sorted(events, key=lambda e: (e["timestamp"], e["seq"]))


def write_page(site: tuple[str, pathlib.Path], name: str, pulse: ServerProcess, body: str = "",
               attrs: str = "", title: str = "Monitored page", head: str = "") -> str:
    """An HTML page on the site's origin that embeds the monitor from Pulse; returns its URL."""
    base, root = site
    (root / name).write_text(
        f"<!doctype html><html><head><meta charset=utf-8><title>{title}</title>{head}"
        f'<script src="{pulse.url}/api/monitor.js" {attrs}></script></head><body>{body}</body></html>'
    )
    return f"{base}/{name}"


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(DEADLINE_S * 1000)
    page.page_errors = []  # errors that reached the page: the monitor must never add one
    page.on("pageerror", lambda error: page.page_errors.append(str(error)))
    try:
        yield page
    finally:
        context.close()


def session_of(page: Any) -> str:
    sid: str = page.evaluate("LiveMonitor.sessionId")
    assert sid
    return sid


def named(events: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    return [e for e in events if e["name"] == name]


def monitor_stats(page: Any) -> dict[str, Any]:
    stats: dict[str, Any] = page.evaluate("LiveMonitor.stats()")
    return stats


AUTOCAPTURE_BODY = """
<button id="buy" data-track="buy-now">Buy <b>now</b></button>
<form id="signup" name="signup-form" action="/subscribe?plan=pro&password=hunter2" method="post"
      onsubmit="event.preventDefault()">
  <input name="email" value="typed-secret@example.com"><button id="send" type="submit">Send</button>
</form>
<script>
  window.seen = [];
  LiveMonitor.on("event", function (e) { window.seen.push(e.eventName); });
</script>
"""


def test_autocapture_from_another_origin(page: Any, pulse: ServerProcess, site: tuple[str, pathlib.Path]) -> None:
    base, root = site
    (root / "data.json").write_text('{"ok": true}')
    url = write_page(site, "shop.html", pulse, AUTOCAPTURE_BODY, 'data-service="shop-web"', title="Shop front")
    (root / "index.html").write_text(f'<a id="go" href="{url}?utm=mail&access_token=t0k">shop</a>')
    page.goto(f"{base}/index.html")
    page.click("#go")
    page.wait_for_function("window.LiveMonitor && window.seen.indexOf('page_view') >= 0")
    sid = session_of(page)
    assert pulse.url.split("//")[1] != base.split("//")[1]  # two origins

    page.click("#buy b")  # inside the tracked button: the button is what was clicked
    page.click("#send")
    page.evaluate("fetch('/data.json?token=abc&q=x').then(r => r.json())")
    page.evaluate("""new Promise(done => { const x = new XMLHttpRequest();
        x.open('GET', '/missing.json?api_key=k1&page=2'); x.onloadend = done; x.send(); })""")
    page.evaluate("setTimeout(() => { throw new Error('boom from the page') }, 0)")
    page.evaluate("Promise.reject(new Error('rejected by https://api.test/v1?token=abc&q=x')); 0")
    page.evaluate("history.pushState({}, '', '/spa/next?step=2'); document.title = 'Next step'")
    page.wait_for_function("window.seen.filter(name => name === 'page_view').length === 2")
    page.evaluate("location.hash = 'details'")  # an anchor, not a page view
    page.go_back()  # to /spa/next?step=2 (popstate, same route: nothing)
    page.go_back()  # to the shop page (popstate: a page view)
    page.wait_for_function("window.seen.filter(name => name === 'page_view').length === 3")

    def arrived() -> list[dict[str, Any]] | None:
        events = stored(pulse, sessionId=sid)
        names = {e["name"] for e in events}
        wanted = {"page_view", "click", "form_submit", "api_call", "js_error"}
        if wanted <= names and len(named(events, "page_view")) >= 3 and len(named(events, "js_error")) >= 2 \
                and len(named(events, "api_call")) >= 2:
            return events
        return None

    events = wait_for(arrived, "every autocaptured event to be stored")
    assert {e["serviceName"] for e in events} == {"shop-web"}

    load, spa, back = named(events, "page_view")
    meta = load["payload"]["metadata"]
    assert meta["title"] == "Shop front" and meta["navigation"] == "load"
    assert meta["url"] == f"{url}?utm=mail&access_token=REDACTED"
    assert load["payload"]["referrer"] == f"{base}/index.html"
    assert "Chrome" in load["payload"]["userAgent"]
    assert meta["loadTimeMs"] >= meta["domContentLoadedMs"] > 0
    assert spa["payload"]["metadata"]["navigation"] == "pushState"
    assert spa["payload"]["metadata"]["title"] == "Next step"
    assert spa["payload"]["metadata"]["url"] == f"{base}/spa/next?step=2"
    assert spa["payload"]["referrer"] == meta["url"]
    assert back["payload"]["metadata"]["navigation"] == "popstate"
    assert back["payload"]["metadata"]["url"] == meta["url"]

    clicks = [e["payload"]["metadata"] for e in named(events, "click")]
    buy = next(c for c in clicks if c.get("id") == "buy")
    assert (buy["tag"], buy["text"], buy["track"]) == ("button", "Buy now", "buy-now")

    (submit,) = named(events, "form_submit")
    form = submit["payload"]["metadata"]
    assert (form["id"], form["name"], form["method"]) == ("signup", "signup-form", "post")
    assert form["action"] == f"{base}/subscribe?plan=pro&password=REDACTED"
    everything = json.dumps(events)
    assert "typed-secret" not in everything  # field values never leave the page
    for secret in ("token=abc", "t0k", "hunter2", "api_key=k1"):  # nor sensitive parameters, anywhere
        assert secret not in everything

    calls = {e["payload"]["metadata"]["method"] + " " + e["payload"]["metadata"]["url"]: e["payload"]
             for e in named(events, "api_call")}
    fetched = calls[f"GET {base}/data.json?token=REDACTED&q=x"]
    assert fetched["statusCode"] == 200 and fetched["responseTimeMs"] >= 0
    assert calls[f"GET {base}/missing.json?api_key=REDACTED&page=2"]["statusCode"] == 404
    assert not any(pulse.url in call for call in calls)  # the monitor does not track its own requests

    errors = {e["payload"]["metadata"]["kind"]: e["payload"]["metadata"] for e in named(events, "js_error")}
    assert errors["error"]["message"] == "Uncaught Error: boom from the page"
    assert "boom from the page" in errors["error"]["stack"]
    assert errors["unhandledrejection"]["message"] == "rejected by https://api.test/v1?token=REDACTED&q=x"

    ids = [e["payload"]["eventId"] for e in events]
    assert len(set(ids)) == len(ids)  # every event has its own client id
    assert set(page.evaluate("window.seen")) >= {"page_view", "click", "form_submit", "api_call", "js_error"}
    assert sorted(page.page_errors) == ["boom from the page", "rejected by https://api.test/v1?token=abc&q=x"]  # only the page's own


def batch_route(pulse: ServerProcess) -> str:
    return f"{pulse.url}/api/events/track/batch*"


def test_resend_after_a_lost_answer_is_stored_once(
    page: Any, pulse: ServerProcess, site: tuple[str, pathlib.Path]
) -> None:
    """Pulse stores the batch but its answer never reaches the page: the monitor sends the batch
    again, and Pulse answers "duplicate" instead of storing a second copy."""
    attempts: list[str] = []

    def lose_first_answer(route: Any) -> None:
        attempts.append(route.request.post_data)
        if len(attempts) == 1:
            route.fetch()  # Pulse receives and stores it...
            route.abort("connectionreset")  # ...and the answer is lost on the way back
        else:
            route.continue_()

    page.goto(write_page(site, "retry.html", pulse, attrs='data-autocapture="off"'))
    page.route(batch_route(pulse), lose_first_answer)
    event_id = page.evaluate("LiveMonitor.track('retry_probe', {attempt: 'first'})")
    wait_for(lambda: monitor_stats(page)["duplicates"] == 1, "the resend to be answered as a duplicate")
    assert len(attempts) == 2
    assert [json.loads(body)["events"][0]["payload"]["eventId"] for body in attempts] == [event_id, event_id]
    stats = monitor_stats(page)
    assert (stats["queued"], stats["failures"], stats["stored"]) == (0, 1, 0)
    copies = stored(pulse, sessionId=session_of(page), eventName="retry_probe")
    assert [e["payload"]["eventId"] for e in copies] == [event_id]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def test_offline_queue_survives_a_reload(
    page: Any, tmp_path: pathlib.Path, site: tuple[str, pathlib.Path]
) -> None:
    """Pulse goes down (the process stops: fetch and the beacon on reload both fail), the page
    tracks events and is reloaded; Pulse comes back on the same port: each event is stored once."""
    port = free_port()
    data = tmp_path / "pulse-data"
    pulse = ServerProcess(data, extra=["--port", str(port)]).start()
    url = write_page(site, "offline.html", pulse, attrs='data-autocapture="off" data-flush-interval="100"')
    page.goto(url)
    sid = session_of(page)
    assert pulse.stop() == 0
    ids = page.evaluate("[1, 2, 3].map(n => LiveMonitor.track('offline_probe', {n: n}))")
    wait_for(lambda: monitor_stats(page)["failures"] >= 1, "a send to fail while Pulse is down")
    page.reload()  # the monitor comes from the browser's cache (max-age=300): Pulse is down
    assert session_of(page) == sid  # same tab, same session
    stats = monitor_stats(page)
    assert (stats["queued"], stats["storage"]) == (3, "localStorage")  # read back after the reload

    pulse = ServerProcess(data, extra=["--port", str(port)]).start()
    try:
        assert page.evaluate("LiveMonitor.flush()") is True
        events = stored(pulse, sessionId=sid, eventName="offline_probe")
        assert sorted(e["payload"]["eventId"] for e in events) == sorted(ids)  # each exactly once
        assert sorted(e["payload"]["metadata"]["n"] for e in events) == [1, 2, 3]
        assert monitor_stats(page)["queued"] == 0
    finally:
        assert pulse.stop() == 0


COUNT_BEACONS = """
const send = navigator.sendBeacon.bind(navigator);
navigator.sendBeacon = (url, data) => {
  sessionStorage.setItem('beacons', String(Number(sessionStorage.getItem('beacons') || 0) + 1));
  return send(url, data);
};
"""


def test_a_click_right_before_leaving_arrives_by_beacon(
    page: Any, pulse: ServerProcess, site: tuple[str, pathlib.Path]
) -> None:
    base, root = site
    (root / "elsewhere.html").write_text("<title>no monitor here</title><p>elsewhere</p>")
    # a minute between batches: only the beacon on pagehide can carry the click before the page is gone
    url = write_page(site, "leave.html", pulse, '<a id="out" data-track="leave-link" href="elsewhere.html">go</a>',
                     'data-flush-interval="60000"')
    page.add_init_script(COUNT_BEACONS)
    page.goto(url)
    sid = session_of(page)
    page.click("#out")
    page.wait_for_url(f"{base}/elsewhere.html")
    assert int(page.evaluate("sessionStorage.getItem('beacons')")) >= 1

    def click_stored() -> list[dict[str, Any]]:
        return named(stored(pulse, sessionId=sid), "click")

    (click,) = wait_for(click_stored, "the click to be stored")
    assert click["payload"]["metadata"]["track"] == "leave-link"
    assert click["payload"]["metadata"]["href"] == f"{base}/elsewhere.html"
    names = [e["name"] for e in stored(pulse, sessionId=sid)]
    assert names.count("page_view") == 1 and names.count("page_exit") == 1
    # the unloading page turns hidden after pagehide: that event goes by a beacon of its own
    (hidden,) = wait_for(lambda: named(stored(pulse, sessionId=sid), "visibility_change"), "visibility_change")
    assert hidden["payload"]["metadata"]["state"] == "hidden"
    assert int(page.evaluate("sessionStorage.getItem('beacons')")) == 2


def test_a_refused_event_is_dropped_and_counted_not_retried(
    page: Any, pulse: ServerProcess, site: tuple[str, pathlib.Path]
) -> None:
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.post_data) if r.url.startswith(batch_route(pulse)[:-1]) else None)
    page.goto(write_page(site, "refused.html", pulse, attrs='data-autocapture="off" data-flush-interval="60000"'))
    page.evaluate("window.drops = []; LiveMonitor.on('drop', d => window.drops.push(d)); 0")  # a returned function would be called
    # alone in its batch: Pulse refuses the whole request (400)
    page.evaluate("LiveMonitor.track('bad_status', {statusCode: 5000})")
    assert page.evaluate("LiveMonitor.flush()") is True
    # beside a valid event: Pulse stores that one and names the refused one (200)
    good = page.evaluate("LiveMonitor.track('good_one'), LiveMonitor.track('bad_time', {statusCode: -1}), "
                         "LiveMonitor.track('good_two')")
    assert page.evaluate("LiveMonitor.flush()") is True
    stats = monitor_stats(page)
    assert (stats["queued"], stats["rejected"], stats["stored"], stats["failures"]) == (0, 2, 2, 0)
    drops = page.evaluate("window.drops")
    assert [(d["reason"], d["count"]) for d in drops] == [("rejected", 1), ("rejected", 1)]
    assert drops[0]["events"][0]["field"] == "$.events[0].payload.statusCode"
    assert drops[1]["events"][0]["field"] == "$.events[1].payload.statusCode"
    assert drops[1]["events"][0]["event"]["eventName"] == "bad_time"
    assert len(posts) == 2  # each batch sent once: a refusal is not retried
    names = [e["name"] for e in stored(pulse, sessionId=session_of(page))]
    assert names == ["good_one", "good_two"]
    assert good  # track() returns the event's client id


TIME_BATCHES = """
window.batchTimes = [];
const pageFetch = window.fetch;
window.fetch = function (url) {  // installed before the monitor: it sends through this
  if (String(url).includes('/api/events/track/batch')) window.batchTimes.push(performance.now());
  return pageFetch.apply(this, arguments);
};
"""


def test_an_overloaded_pulse_is_retried_after_its_retry_after(
    page: Any, pulse: ServerProcess, site: tuple[str, pathlib.Path]
) -> None:
    attempts: list[str] = []

    def overloaded_once(route: Any) -> None:
        attempts.append(route.request.url)
        if len(attempts) == 1:
            route.fulfill(status=503, headers={"Retry-After": "2", "Access-Control-Allow-Origin": "*",
                                               "Access-Control-Expose-Headers": "Retry-After"},
                          content_type="application/json",
                          body='{"success":false,"error":{"code":"overloaded","reason":"try later"}}')
        else:
            route.continue_()

    page.add_init_script(TIME_BATCHES)
    page.goto(write_page(site, "busy.html", pulse, attrs='data-autocapture="off" data-flush-interval="0"'))
    page.route(batch_route(pulse), overloaded_once)
    page.evaluate("window.errors = []; LiveMonitor.on('error', e => window.errors.push(e)); 0")
    event_id = page.evaluate("LiveMonitor.track('busy_probe')")
    wait_for(lambda: monitor_stats(page)["stored"] == 1, "the event to be stored after the retry", page)
    assert len(attempts) == 2
    first, second = page.evaluate("window.batchTimes")
    assert second - first >= 2000  # not before Pulse's Retry-After (the page's own clock)
    (error,) = page.evaluate("window.errors")
    assert error["status"] == 503 and error["retryInMs"] >= 2000 and "try later" in error["message"]
    assert [e["payload"]["eventId"] for e in stored(pulse, sessionId=session_of(page))] == [event_id]


def test_the_panel_shows_this_sessions_live_stream(
    page: Any, pulse: ServerProcess, site: tuple[str, pathlib.Path]
) -> None:
    hostile_css = "<style>div, ol, li, b { display: none !important; color: red !important; }</style>"
    page.goto(write_page(site, "panel.html", pulse, "<p>host page</p>", 'data-autocapture="off"', head=hostile_css))
    panel = page.locator("pulse-monitor [role=log]")
    assert panel.count() == 0  # hidden: not even built until asked for
    page.keyboard.press("Control+Shift+M")
    panel.wait_for(state="visible")
    wait_for(lambda: "live" in panel.locator(".s").inner_text(), "the panel's stream to open", page)
    page.evaluate("LiveMonitor.track('panel_probe', {track: 'from-the-test'})")
    row = panel.locator("li", has_text="panel_probe")
    row.wait_for(state="visible")  # it came back from Pulse on the session's stream
    assert "from-the-test" in row.inner_text()
    httpx.post(f"{pulse.url}/api/events/track/other_session", json={"sessionId": "someone-else"}, timeout=10)
    page.evaluate("LiveMonitor.track('panel_second')")
    panel.locator("li", has_text="panel_second").wait_for(state="visible")
    assert panel.locator("li", has_text="other_session").count() == 0
    wait_for(lambda: "stored 2" in panel.locator(".s").inner_text(), "the panel to count both stored", page)
    page.keyboard.press("Control+Shift+M")
    panel.wait_for(state="hidden")
    assert page.page_errors == []


BLOCK_STORAGE = """
for (const name of ['localStorage', 'sessionStorage']) {
  Object.defineProperty(window, name, { get() { throw new DOMException('storage is disabled', 'SecurityError'); } });
}
"""


def test_works_without_storage(page: Any, pulse: ServerProcess, site: tuple[str, pathlib.Path]) -> None:
    page.add_init_script(BLOCK_STORAGE)
    page.goto(write_page(site, "private.html", pulse, '<button id="b">b</button>'))
    page.click("#b")
    assert monitor_stats(page)["storage"] == "memory"
    sid = session_of(page)
    wait_for(lambda: {"page_view", "click"} <= {e["name"] for e in stored(pulse, sessionId=sid)},
             "page_view and click to be stored")
    assert page.page_errors == []


def test_a_session_outside_the_sample_sends_nothing(
    page: Any, pulse: ServerProcess, site: tuple[str, pathlib.Path]
) -> None:
    page.goto(write_page(site, "sampled.html", pulse, '<button id="b">b</button>', 'data-sample-rate="0"'))
    page.click("#b")
    assert page.evaluate("LiveMonitor.track('not_sent')") is None
    assert page.evaluate("LiveMonitor.flush()") is True
    stats = monitor_stats(page)
    assert stats["sampled"] is False and stats["queued"] == 0
    assert stats["sampledOut"] >= 2  # the click and the custom event, counted
    assert stored(pulse, sessionId=session_of(page)) == []


def test_public_key_and_identify_on_a_server_that_needs_keys(
    page: Any, tmp_path: pathlib.Path, site: tuple[str, pathlib.Path]
) -> None:
    pulse = ServerProcess(tmp_path / "keyed", host="0.0.0.0").start()
    try:
        page.goto(write_page(site, "keyed.html", pulse, "",
                             f'data-key="{pulse.public_key}" data-autocapture="off" data-service="checkout"'))
        page.evaluate("LiveMonitor.identify('user-42'); LiveMonitor.track('keyed_probe', {plan: 'pro'})")
        assert page.evaluate("LiveMonitor.flush()") is True
        sid = session_of(page)
        (event,) = stored(pulse, key=pulse.secret_key, sessionId=sid)
        assert (event["name"], event["userId"], event["serviceName"]) == ("keyed_probe", "user-42", "checkout")
        assert event["payload"]["metadata"]["plan"] == "pro"
        # the public key may read its own session's stream: the panel works on this server too
        page.keyboard.press("Control+Shift+M")
        page.evaluate("LiveMonitor.track('keyed_live')")
        page.locator("pulse-monitor li", has_text="keyed_live").wait_for(state="visible")
        assert page.evaluate("LiveMonitor.flush()") is True  # the queue is empty before the next page
        # an unknown key is not the events' fault: they stay queued, to be retried with backoff
        page.goto(write_page(site, "wrong-key.html", pulse, "", 'data-key="pk_unknown" data-autocapture="off"'))
        page.evaluate("LiveMonitor.track('wrong_key_probe')")
        wait_for(lambda: monitor_stats(page)["failures"] >= 1, "the refused send", page)
        stats = monitor_stats(page)
        assert stats["queued"] == 1 and stats["rejected"] == 0
        assert stats["lastError"].startswith("Pulse answered 401")
        assert page.page_errors == []
    finally:
        assert pulse.stop() == 0


def test_a_full_queue_drops_the_oldest_and_tells_pulse(
    page: Any, pulse: ServerProcess, site: tuple[str, pathlib.Path]
) -> None:
    page.goto(write_page(site, "full.html", pulse, attrs='data-autocapture="off" data-max-queue="3"'))
    page.route(batch_route(pulse), lambda route: route.abort("internetdisconnected"))
    page.evaluate("window.drops = []; LiveMonitor.on('drop', d => window.drops.push(d)); 0")
    ids = page.evaluate("[1, 2, 3, 4, 5].map(n => LiveMonitor.track('full_probe', {n: n}))")
    stats = monitor_stats(page)
    assert (stats["queued"], stats["dropped"]) == (3, 2)
    assert page.evaluate("window.drops") == [{"reason": "queue_full", "count": 1}] * 2
    page.unroute(batch_route(pulse))
    assert page.evaluate("LiveMonitor.flush()") is True
    events = stored(pulse, sessionId=session_of(page))
    assert [e["payload"]["eventId"] for e in named(events, "full_probe")] == ids[2:]  # the newest three
    (report,) = named(events, "monitor_drop")  # what never reached Pulse is counted there too
    assert report["payload"]["metadata"]["queueFull"] == 2
    assert monitor_stats(page)["dropped"] == 2  # the total stays visible on the page


def test_an_error_loop_is_capped_and_counted(page: Any, pulse: ServerProcess, site: tuple[str, pathlib.Path]) -> None:
    page.goto(write_page(site, "loop.html", pulse))
    page.evaluate("for (let i = 0; i < 60; i++) setTimeout(() => { throw new Error('loop ' + i) }, 0)")
    wait_for(lambda: len(page.page_errors) == 60, "the page's 60 errors", page)
    assert page.evaluate("LiveMonitor.flush()") is True
    assert monitor_stats(page)["errorsSuppressed"] == 10
    assert page.evaluate("LiveMonitor.flush()") is True  # the report itself
    events = stored(pulse, sessionId=session_of(page))
    assert len(named(events, "js_error")) == 50
    (report,) = named(events, "monitor_drop")
    assert report["payload"]["metadata"]["errorLimit"] == 10


def test_tabs_share_the_queue_and_send_their_own_events(
    browser: Any, pulse: ServerProcess, site: tuple[str, pathlib.Path]
) -> None:
    """Two tabs of a site share one queue (localStorage) but each has its session; a tab sends its
    own events, and those another tab could not send once they waited ORPHAN_MS (10 s)."""
    url = write_page(site, "tabs.html", pulse, attrs='data-autocapture="off" data-flush-interval="60000"')
    context = browser.new_context()
    try:
        tab_a, tab_b = context.new_page(), context.new_page()
        tab_a.goto(url)
        tab_b.goto(url)
        assert session_of(tab_a) != session_of(tab_b)
        tab_a.route(batch_route(pulse), lambda route: route.abort("internetdisconnected"))
        a_id = tab_a.evaluate("LiveMonitor.track('tab_a')")
        assert tab_a.evaluate("LiveMonitor.flush()") is False  # tab A cannot reach Pulse
        b_id = tab_b.evaluate("LiveMonitor.track('tab_b')")
        assert tab_b.evaluate("LiveMonitor.flush()") is True
        assert [e["payload"]["eventId"] for e in stored(pulse, sessionId=session_of(tab_b))] == [b_id]
        assert stored(pulse, sessionId=session_of(tab_a)) == []  # tab B left tab A's fresh event alone
        assert monitor_stats(tab_b)["queued"] == 1  # but it sees it in the shared queue

        def sent_by_b() -> list[dict[str, Any]]:
            tab_b.evaluate("LiveMonitor.flush()")
            return stored(pulse, sessionId=session_of(tab_a))

        (event,) = wait_for(sent_by_b, "tab B to send tab A's event once it waited 10 s", tab_b)
        assert event["payload"]["eventId"] == a_id
        assert monitor_stats(tab_a)["queued"] == 0
    finally:
        context.close()
