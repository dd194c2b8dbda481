"""The identity graph and its merge guards (actors/identity/graph.py): components, the session ->
user map the streams use, reversibility, and each refusal."""

from __future__ import annotations

import itertools

from actors.identity.graph import MAX_LINKED_DEVICES, MAX_LINKED_SESSIONS, IdentityGraph, Side, check_link
from storage.identity_records import IdentityLink

_ids = itertools.count(1)


def link(a: str, b: str, user_a: str | None = None, user_b: str | None = None, *,
         devices: tuple[str, str] | None = None) -> IdentityLink:
    devices = devices or (a, b)
    return IdentityLink(project="p", linking_id=f"link_{next(_ids)}", primary_session=a, secondary_session=b,
                        primary_user=user_a, secondary_user=user_b, primary_device=devices[0],
                        secondary_device=devices[1], method="user_login", confidence=None, evidence="[]", created_ms=1)


def side(session: str, user: str | None = None, device: str | None = None) -> Side:
    return Side(session_id=session, user_id=user, device_id=device or session)


def test_components_join_sessions_through_links_and_take_their_user() -> None:
    links = [link("phone", "laptop", "ann"), link("laptop", "tablet"), link("x", "y")]
    graph = IdentityGraph(3, links)
    assert graph.linked_users() == {"phone": "ann", "laptop": "ann", "tablet": "ann"}  # x-y: nobody's
    assert graph.user_of("tablet") == "ann" and graph.user_of("x") is None and graph.user_of("nowhere") is None
    component = graph.component("tablet")
    assert component is not None and component.sessions == {"phone", "laptop", "tablet"}
    assert graph.link_between("laptop", "phone") is links[0]  # either way round
    assert [c.sessions for c in graph.components_of("ann", set())] == [{"phone", "laptop", "tablet"}]
    assert [c.sessions for c in graph.components_of("bob", {"y"})] == [{"x", "y"}]  # bob's own session y


def test_removing_a_link_splits_the_component_again() -> None:
    first, second = link("phone", "laptop", "ann"), link("laptop", "tablet")
    assert IdentityGraph(2, [first, second]).user_of("tablet") == "ann"
    after = IdentityGraph(3, [first])
    assert after.user_of("tablet") is None and after.user_of("laptop") == "ann"
    assert IdentityGraph(4, []).linked_users() == {}


def test_two_identified_users_are_never_merged() -> None:
    refusal = check_link(IdentityGraph(0, []), side("a", "ann"), side("b", "bob"))
    assert refusal is not None and refusal.code == "identified_users" and refusal.status == 409
    assert "'ann'" in refusal.reason and "'bob'" in refusal.reason
    assert check_link(IdentityGraph(0, []), side("a", "ann"), side("b", "ann")) is None
    assert check_link(IdentityGraph(0, []), side("a"), side("b")) is None  # two anonymous devices


def test_an_anonymous_device_linked_to_one_user_is_not_linked_to_another() -> None:
    graph = IdentityGraph(1, [link("anon", "ann-phone", None, "ann")])
    refusal = check_link(graph, side("anon"), side("bob-phone", "bob"))
    assert refusal is not None and refusal.code == "identity_conflict" and refusal.field == "$.secondarySessionId"
    assert "'ann'" in refusal.reason and "'bob'" in refusal.reason
    # through a chain of anonymous devices too
    graph = IdentityGraph(2, [link("anon", "ann-phone", None, "ann"), link("anon", "anon-2")])
    refusal = check_link(graph, side("bob-phone", "bob"), side("anon-2"))
    assert refusal is not None and refusal.code == "identity_conflict" and refusal.field == "$.secondarySessionId"
    # joining two components that each have a user
    graph = IdentityGraph(2, [link("a1", "a2", "ann"), link("b1", "b2", "bob")])
    refusal = check_link(graph, side("a2"), side("b2"))
    assert refusal is not None and refusal.code == "identity_conflict"
    assert check_link(graph, side("a2"), side("new")) is None


def test_a_user_links_at_most_the_capped_sessions_and_devices() -> None:
    graph = IdentityGraph(1, [link("main", f"s{i}", "ann", devices=("main-dev", "one-tablet"))
                              for i in range(MAX_LINKED_SESSIONS - 1)])
    refusal = check_link(graph, side("main", "ann", "main-dev"), side("one-more", None, "one-tablet"))
    assert refusal is not None and refusal.code == "too_many_sessions"
    assert f"{MAX_LINKED_SESSIONS + 1} sessions" in refusal.reason
    graph = IdentityGraph(1, [link("main", f"s{i}", "ann") for i in range(MAX_LINKED_DEVICES - 1)])
    assert len(graph.component("main").sessions) == MAX_LINKED_DEVICES  # type: ignore[union-attr]
    refusal = check_link(graph, side("main", "ann"), side("another"))
    assert refusal is not None and refusal.code == "too_many_devices"
    # a session on a device the user has already adds no device
    assert check_link(graph, side("main", "ann"), side("another", None, "s0")) is None
