"""The Store's identity-graph methods on every backend (SQLite, PostgreSQL): links are stored once
per pair, written with compare-and-set on the project's version, removed completely, kept per
project, survive a restart; and the directory each node keeps follows them."""

from __future__ import annotations

import trio

from actors.identity.directory import IdentityDirectory
from storage.base import Store
from storage.identity_records import IdentityLink
from tests.storage.conftest import StoreOpener


def link(linking_id: str, a: str, b: str, *, project: str = "p1", user_a: str | None = "ann",
         created: int = 1) -> IdentityLink:
    return IdentityLink(project=project, linking_id=linking_id, primary_session=a, secondary_session=b,
                        primary_user=user_a, secondary_user=None, primary_device="dev-" + a, secondary_device=b,
                        method="user_login", confidence=0.95, evidence='["same_user_id"]', created_ms=created)


async def test_a_pair_is_linked_once_whichever_way_round(store: Store) -> None:
    assert await store.identity_versions() == {}
    first = await store.add_identity_link(link("link_1", "phone", "laptop"), 0)
    assert first.written and first.version == 1 and first.existing is None
    again = await store.add_identity_link(link("link_2", "laptop", "phone", created=2), 1)
    assert not again.written and again.existing == link("link_1", "phone", "laptop") and again.version == 1
    rows = await store.identity_links("p1")
    assert rows.version == 1 and rows.links == [link("link_1", "phone", "laptop")]  # every field as written
    assert await store.get_identity_link("p1", "link_2") is None


async def test_a_link_is_written_only_at_the_version_its_guards_saw(store: Store) -> None:
    assert (await store.add_identity_link(link("link_1", "a", "b"), 0)).written
    stale = await store.add_identity_link(link("link_2", "a", "c"), 0)  # checked before link_1 existed
    assert stale.conflict and not stale.written and stale.version == 1
    assert (await store.add_identity_link(link("link_2", "a", "c", created=2), 1)).written
    assert (await store.add_identity_link(link("link_3", "x", "y", created=3), 1)).conflict
    rows = await store.identity_links("p1")
    assert rows.version == 2 and [r.linking_id for r in rows.links] == ["link_1", "link_2"]


async def test_concurrent_links_of_one_project_never_both_pass_one_version(store: Store) -> None:
    outcomes = []

    async def attempt(i: int) -> None:
        outcomes.append(await store.add_identity_link(link(f"link_{i}", "anon", f"s{i}"), 0))

    async with trio.open_nursery() as nursery:
        for i in range(5):
            nursery.start_soon(attempt, i)
    assert sum(o.written for o in outcomes) == 1 and sum(o.conflict for o in outcomes) == 4
    assert len((await store.identity_links("p1")).links) == 1


async def test_removing_a_link_deletes_it_and_moves_the_version(store: Store) -> None:
    await store.add_identity_link(link("link_1", "a", "b"), 0)
    await store.add_identity_link(link("link_9", "a", "b", project="p2"), 0)
    assert await store.remove_identity_link("p2", "link_1") is None  # another project's id
    removed = await store.remove_identity_link("p1", "link_1")
    assert removed == link("link_1", "a", "b")
    assert await store.remove_identity_link("p1", "link_1") is None
    rows = await store.identity_links("p1")
    assert rows.links == [] and rows.version == 2
    assert await store.identity_versions() == {"p1": 2, "p2": 1}
    assert (await store.add_identity_link(link("link_3", "b", "a"), 2)).written  # it may be made again
    assert [r.linking_id for r in (await store.identity_links("p2")).links] == ["link_9"]


async def test_links_survive_a_restart(open_store: StoreOpener) -> None:
    async with open_store() as store:
        await store.add_identity_link(link("link_1", "a", "b"), 0)
    async with open_store() as store:
        rows = await store.identity_links("p1")
        assert rows.version == 1 and [r.linking_id for r in rows.links] == ["link_1"]


async def test_the_directory_follows_the_store(store: Store) -> None:
    shared: dict[str, dict[str, str]] = {}
    await store.add_identity_link(link("link_1", "phone", "laptop"), 0)
    directory = IdentityDirectory(store, shared)
    async with trio.open_nursery() as nursery:
        await nursery.start(directory.run)
        assert shared == {"p1": {"phone": "ann", "laptop": "ann"}}  # loaded at start
        # another node's link: reaches this node at its next reload
        await store.add_identity_link(link("link_2", "laptop", "tablet", user_a=None), 1)
        with trio.fail_after(10):
            while True:  # polled: the reload is the node's own timer
                if shared["p1"].get("tablet") == "ann":
                    break
                await trio.sleep(0.05)
        await store.remove_identity_link("p1", "link_1")
        graph = await directory.refresh("p1")  # what a route sees right after a change here
        assert graph.version == 3 and graph.user_of("tablet") is None
        assert "p1" not in shared  # no link has a user any more: the fan-out's lookup finds nothing
        nursery.cancel_scope.cancel()
