"""The hub: matching, encode-once fan-out, and eviction of subscribers that cannot keep up."""

from __future__ import annotations

import msgspec
import trio

from actors.hub import KIND_BEHAVIORAL, KIND_EVENT, Attrs, Hub, Subscriber
from actors.metrics import Metrics


def drain(sub: Subscriber) -> list[bytes]:
    frames = []
    while True:
        try:
            frames.append(sub.frames.receive_nowait().data)
        except (trio.WouldBlock, trio.EndOfChannel):
            return frames


async def test_subscribers_get_only_what_matches_their_scope_and_filters() -> None:
    hub = Hub(Metrics())
    everything = Subscriber("p1", [KIND_EVENT])
    one_session = Subscriber("p1", [KIND_BEHAVIORAL], session_id="s1")
    payments = Subscriber("p1", [KIND_EVENT])
    payments.service_name = "payment-service"
    other_project = Subscriber("p2", [KIND_EVENT])
    for sub in (everything, one_session, payments, other_project):
        hub.subscribe(sub)
    hub.publish("p1", KIND_EVENT, Attrs(session_id="s1", service_name="web"), {"n": 1}, seq=1)
    hub.publish("p1", KIND_BEHAVIORAL, Attrs(session_id="s2"), {"n": 2}, seq=2)
    hub.publish("p1", KIND_BEHAVIORAL, Attrs(session_id="s1"), {"n": 3}, seq=3)
    hub.publish("p1", KIND_EVENT, Attrs(service_name="payment-service"), {"n": 4}, seq=4)
    decode = msgspec.json.decode
    assert [decode(f)["n"] for f in drain(everything)] == [1, 4]
    assert [decode(f)["n"] for f in drain(one_session)] == [3]
    assert [decode(f)["n"] for f in drain(payments)] == [4]
    assert drain(other_project) == []


async def test_a_slow_subscriber_is_evicted_and_counted_without_affecting_others() -> None:
    metrics = Metrics()
    hub = Hub(metrics)
    slow = Subscriber("p1", [KIND_EVENT], queue_size=2)
    fast = Subscriber("p1", [KIND_EVENT], queue_size=10)
    hub.subscribe(slow)
    hub.subscribe(fast)
    delivered = [hub.publish("p1", KIND_EVENT, Attrs(), {"n": n}, seq=n) for n in range(1, 5)]
    assert delivered == [2, 2, 1, 1]
    assert slow.evicted
    assert metrics.drops["slow_subscriber"] == 1
    assert len(drain(fast)) == 4
    # the slow one still gets what was queued before eviction, then its stream ends
    assert len(drain(slow)) == 2
    assert hub.subscriber_count() == 1


async def test_msgpack_subscribers_get_the_same_message_as_msgpack() -> None:
    hub = Hub(Metrics())
    as_json = Subscriber("p1", [KIND_EVENT])
    as_msgpack = Subscriber("p1", [KIND_EVENT], msgpack=True)
    hub.subscribe(as_json)
    hub.subscribe(as_msgpack)
    body = {"type": "event", "data": {"payload": msgspec.Raw(b'{"a":[1,2]}')}}
    hub.publish("p1", KIND_EVENT, Attrs(), body, seq=7)
    (json_frame,) = drain(as_json)
    (msgpack_frame,) = drain(as_msgpack)
    assert msgspec.json.decode(json_frame) == msgspec.msgpack.decode(msgpack_frame) == {
        "type": "event", "data": {"payload": {"a": [1, 2]}},
    }


async def test_rescoped_subscribers_move_between_scopes_and_counts_stay_right() -> None:
    hub = Hub(Metrics())
    sub = Subscriber("p1", [KIND_BEHAVIORAL])
    user_only = Subscriber("p1", [KIND_BEHAVIORAL], user_id="u1")
    both = Subscriber("p1", [KIND_BEHAVIORAL], session_id="s1", user_id="u2")
    for s in (sub, user_only, both):
        hub.subscribe(s)
    hub.rescope(sub, "s9", None)  # seed 000's connection message narrows a socket to one session
    hub.publish("p1", KIND_BEHAVIORAL, Attrs(session_id="s1", user_id="u1"), {"n": 1})
    hub.publish("p1", KIND_BEHAVIORAL, Attrs(session_id="s9"), {"n": 2})
    hub.publish("p1", KIND_BEHAVIORAL, Attrs(session_id="s1", user_id="u2"), {"n": 3})
    decode = msgspec.json.decode
    assert [decode(f)["n"] for f in drain(sub)] == [2]
    assert [decode(f)["n"] for f in drain(user_only)] == [1]
    assert [decode(f)["n"] for f in drain(both)] == [3]  # session and user must both match
    assert hub.subscriber_count() == 3
    for s in (sub, user_only, both):
        hub.unsubscribe(s)
    assert hub.subscriber_count() == 0 and not hub.has_subscribers("p1")
