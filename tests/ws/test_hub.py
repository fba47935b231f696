"""The hub: targeting, topics, exclusion, revocation, presence and shutdown."""

from __future__ import annotations

import json

import trio

from gateway.events import Ephemeral, new_id
from gateway.ws.hub import Hub
from gateway.ws.sendbuffer import SendBuffer

from .conftest import FakeDomain, FakeStore, inline_runner


class RecordingStream:
    def __init__(self) -> None:
        self.offered: list[tuple[object, str | None]] = []

    def offer(self, event, text=None) -> None:
        self.offered.append((event, text))


class Member:
    """A stand-in connection: a real send buffer and a recording stream."""

    def __init__(self, user_id: str) -> None:
        self.id = new_id("conn")
        self.user_id = user_id
        self.presence = "ONLINE"
        self.topics: set[str] = set()
        self.buffer = SendBuffer()
        self.stream = RecordingStream()
        self.closes: list[tuple[int, str, str | None]] = []

    def close_soon(self, code: int, reason: str, final_text: str | None = None) -> None:
        self.closes.append((code, reason, final_text))

    def types(self) -> list[str]:
        return [json.loads(text)["type"] for text in self.buffer.take_all()]


def make_hub() -> tuple[Hub, FakeStore, FakeDomain]:
    store = FakeStore()
    domain = FakeDomain(store)
    return Hub(domain=domain, presence_runner=inline_runner), store, domain


async def test_durable_events_reach_every_connection_of_their_user_encoded_once():
    hub, store, _ = make_hub()
    a1, a2, b = Member("a"), Member("a"), Member("b")
    for member in (a1, a2, b):
        hub.register(member)
    event = store.append("a")
    hub.deliver_durable([event, store.append("nobody-here")])
    assert [e for e, _ in a1.stream.offered] == [event]
    assert a1.stream.offered[0][1] is a2.stream.offered[0][1]  # one encoding, shared
    assert json.loads(a1.stream.offered[0][1])["seq"] == 1
    assert b.stream.offered == []
    assert hub.connection_count("a") == 2 and hub.user_count == 2 and len(hub) == 3


async def test_ephemeral_audiences_and_exclusion():
    hub, _, _ = make_hub()
    a, b, c = Member("a"), Member("b"), Member("c")
    for member in (a, b, c):
        hub.register(member)
    hub.subscribe(a, "conversation:x")
    hub.subscribe(b, "conversation:x")
    hub.deliver_ephemeral(
        Ephemeral("chat.typing.started", {}, cls="drop", topic="conversation:x", exclude_user="a")
    )
    assert (a.types(), b.types(), c.types()) == ([], ["chat.typing.started"], [])
    hub.deliver_ephemeral(Ephemeral("system.notice", {}, users=("a", "c")))
    assert (a.types(), b.types(), c.types()) == (["system.notice"], [], ["system.notice"])
    hub.deliver_ephemeral(Ephemeral("system.notice", {}, broadcast=True, exclude_user="b"))
    assert (a.types(), b.types(), c.types()) == (["system.notice"], [], ["system.notice"])


async def test_latest_events_coalesce_per_key():
    hub, _, _ = make_hub()
    a = Member("a")
    hub.register(a)
    hub.subscribe(a, "event:e1")
    for going in (1, 2, 3):
        hub.deliver_ephemeral(
            Ephemeral(
                "event.counters.updated",
                {"going": going},
                cls="latest",
                topic="event:e1",
                key="counters:e1",
            )
        )
    texts = a.buffer.take_all()
    assert [json.loads(t)["payload"]["going"] for t in texts] == [3]


async def test_revoke_drops_the_subscription_at_once():
    hub, _, _ = make_hub()
    a, b = Member("a"), Member("b")
    hub.register(a)
    hub.register(b)
    hub.subscribe(a, "conversation:x")
    hub.subscribe(b, "conversation:x")
    assert hub.revoke("a", "conversation:x") == 1
    hub.deliver_ephemeral(Ephemeral("chat.typing.started", {}, topic="conversation:x"))
    assert a.types() == [] and b.types() == ["chat.typing.started"]
    assert a.topics == set()


async def test_unregister_leaves_empty_registries():
    hub, _, _ = make_hub()
    a, b = Member("a"), Member("a")
    hub.register(a)
    hub.register(b)
    hub.subscribe(a, "presence:z")
    hub.subscribe(b, "event:1")
    hub.unregister(a)
    hub.unregister(a)  # idempotent
    assert hub.subscribers("presence:z") == [] and hub.topic_count == 1
    hub.unregister(b)
    assert hub.is_empty() and len(hub) == 0 and hub.user_count == 0


async def test_presence_aggregates_over_a_users_connections(nursery):
    hub, _, domain = make_hub()
    await nursery.start(hub.run)
    watcher, tab1, tab2 = Member("w"), Member("u"), Member("u")
    hub.register(watcher)
    hub.subscribe(watcher, "presence:u")
    hub.register(tab1)
    await hub.presence_changed("u")
    hub.register(tab2)
    await hub.presence_changed("u")  # still ONLINE: nothing new
    tab1.presence = "AWAY"
    await hub.presence_changed("u")  # tab2 is ONLINE
    tab2.presence = "AWAY"
    await hub.presence_changed("u")
    hub.unregister(tab1)
    await hub.presence_changed("u")  # tab2 still AWAY
    hub.unregister(tab2)
    await hub.presence_changed("u")
    assert domain.presence_calls == [("u", "ONLINE"), ("u", "AWAY"), ("u", "OFFLINE")]
    statuses = [json.loads(t)["payload"]["status"] for t in watcher.buffer.take_all()]
    # latest-value class: the pending ONLINE/AWAY were coalesced into the newest value
    assert statuses == ["OFFLINE"]
    hub.unregister(watcher)
    await hub.presence_changed("w")
    assert hub.is_empty() and not hub._presence_locks


async def test_publish_goes_through_the_backplane(nursery):
    hub, store, _ = make_hub()
    await nursery.start(hub.run)
    a = Member("a")
    hub.register(a)
    event = store.append("a")
    await hub.publish([event], [Ephemeral("system.notice", {}, broadcast=True)])
    assert [e for e, _ in a.stream.offered] == [event]
    assert a.types() == ["system.notice"]
    hub.unregister(a)


async def test_shutdown_sends_distinct_reconnect_delays_and_waits_for_closes(autojump_clock):
    hub, _, _ = make_hub()
    members = [Member(f"u{i}") for i in range(50)]
    for member in members:
        hub.register(member)
    async with trio.open_nursery() as nursery:

        async def close_all_later():
            await trio.sleep(1)
            for member in members:
                hub.unregister(member)

        nursery.start_soon(close_all_later)
        assert await hub.shutdown(grace_s=10)
    delays = []
    for member in members:
        [(code, _, text)] = member.closes
        assert code == 1012
        envelope = json.loads(text)
        assert envelope["type"] == "system.reconnect"
        assert envelope["payload"]["reason"] == "SERVER_RESTART"
        delays.append(envelope["payload"]["retryAfterMs"])
    assert len(set(delays)) == len(delays)
    assert all(1000 <= d < 30000 for d in delays)


async def test_shutdown_gives_up_after_the_grace(autojump_clock):
    hub, _, _ = make_hub()
    member = Member("stuck")
    hub.register(member)
    start = trio.current_time()
    assert not await hub.shutdown(grace_s=3)
    assert trio.current_time() - start == 3
    hub.unregister(member)
