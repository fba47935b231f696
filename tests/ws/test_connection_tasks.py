"""A connection's two tasks: the reader keeps the timers, the writer drives the stream."""

from __future__ import annotations

import json
import time

import pytest
import trio
import trio.testing

from gateway.auth import Principal
from gateway.domain import Viewer
from gateway.events import Cursor, Ephemeral
from gateway.ws.connection import Connection
from gateway.ws.sendbuffer import SendBuffer, SlowConsumer
from gateway.ws.stream import RESUME_QUEUE, UserStream
from gateway.ws.transport import MemoryTransport

from .conftest import FakeStore, inline_runner
from .test_connection import ask


async def test_a_connection_is_its_own_task_and_one_writer(world, autojump_clock):
    transport = MemoryTransport()
    conn = Connection(
        transport,
        Principal("alice", expires_at=time.time() + 3600),
        hub=world.hub,
        store=world.store,
        domain=world.domain,
        settings=world.settings,
        runner=inline_runner,
        viewer_factory=lambda p: Viewer(p.user_id),
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.serve)
        assert (await transport.client.receive())["type"] == "session.welcome"
        await trio.testing.wait_all_tasks_blocked()
        [session] = nursery.child_tasks
        [tasks] = session.child_nurseries
        assert [task.name.rsplit(".", 1)[-1] for task in tasks.child_tasks] == ["_writer"]
        transport.client.close()
    assert conn.close_code == 1001


async def test_typing_stops_on_time_while_frames_keep_arriving(world, autojump_clock):
    world.domain.conversations["c"] = {"alice", "bob"}
    _, alice = await world.connect("alice")
    _, bob = await world.connect("bob")
    await ask(bob, "subscribe", {"topic": "conversation:c"}, id="s")
    start = trio.current_time()
    await ask(alice, "chat.typing", {"conversationId": "c", "state": "started"}, id="t")
    stopped_at: list[float] = []

    async def watch() -> None:
        while (await bob.receive())["type"] != "chat.typing.stopped":
            pass
        stopped_at.append(trio.current_time() - start)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(watch)
        # a frame every 0.3 s: the timer interrupts the reader's waits, no frame is lost
        for i in range(30):
            assert (await ask(alice, "ping", id=f"p{i}"))["type"] == "ping.pong"
            await trio.sleep(0.3)
    assert len(stopped_at) == 1 and 6 <= stopped_at[0] < 6.5


async def test_idle_timeout_still_counts_from_the_last_frame_after_a_typing_stop(
    world, autojump_clock
):
    world.domain.conversations["c"] = {"alice"}
    _, alice = await world.connect("alice")
    await ask(alice, "chat.typing", {"conversationId": "c", "state": "started"}, id="t")
    last_frame = trio.current_time()
    with trio.fail_after(200):
        await alice.drain()
    assert alice.close_code == 1001
    assert 74 <= trio.current_time() - last_frame <= 76


async def test_a_live_event_waits_behind_what_the_hub_queued_in_the_same_step(
    world, autojump_clock
):
    """While the writer is idle, a durable event and an ephemeral one delivered
    together reach the client as before: the ephemeral one first."""
    _, alice = await world.connect("alice")
    world.hub.deliver_durable([world.store.append("alice")])
    world.hub.deliver_ephemeral(Ephemeral("system.notice", {"text": "hi"}, broadcast=True))
    with trio.fail_after(5):
        first, second = await alice.receive(), await alice.receive()
    assert (first["type"], second.get("seq")) == ("system.notice", 1)


def _stream(buffer: SendBuffer, store: FakeStore) -> UserStream:
    return UserStream(
        user_id="u",
        store=store,
        buffer=buffer,
        cursor=Cursor(store.epoch, 0),
        runner=inline_runner,
        tail_interval_s=None,
        wake=buffer.wake,
    )


async def test_an_offer_that_would_overflow_the_buffer_is_a_slow_consumer_at_once():
    """The writer may be blocked in a send: what its next step would put into the
    buffer is checked when it is offered."""
    store = FakeStore()
    buffer = SendBuffer(max_items=4)
    stream = _stream(buffer, store)
    overflows: list[SlowConsumer] = []
    stream.on_overflow = overflows.append
    stream.start()
    for _ in range(3):
        stream.offer(store.append("u"))
    await stream.work()
    assert len(buffer) == 3 and not stream.pending
    stream.offer(store.append("u"))  # fits: waits in the inbox for the writer
    assert len(buffer) == 3 and not overflows
    stream.offer(store.append("u"))  # would be the fifth
    assert len(overflows) == 1 and stream.pending
    with pytest.raises(SlowConsumer):
        await stream.work()
    assert len(buffer) == 3


async def test_a_paced_put_with_flush_sends_instead_of_waiting():
    buffer = SendBuffer(max_items=4)
    sent: list[list[str]] = []

    async def flush() -> None:
        sent.append(buffer.take_batch())

    for i in range(10):
        await buffer.put_durable_paced(str(i), stall_timeout_s=0.0, flush=flush)
    assert [len(batch) for batch in sent] == [3, 3, 3]
    assert buffer.take_all() == ["9"]


async def test_resume_requests_beyond_the_queue_wait_for_the_driver(autojump_clock):
    store = FakeStore()
    buffer = SendBuffer()
    stream = _stream(buffer, store)
    for _ in range(RESUME_QUEUE):
        await stream.request_resume(store.epoch, 0, None)
    queued = trio.Event()

    async def one_more() -> None:
        await stream.request_resume(store.epoch, 0, "last")
        queued.set()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(one_more)
        await trio.testing.wait_all_tasks_blocked()
        assert not queued.is_set()
        stream.start()
        await stream.work()
        await queued.wait()
        await stream.work()
    replies = [json.loads(t) for t in buffer.take_all()]
    assert [r["type"] for r in replies] == ["session.resumed"] * (RESUME_QUEUE + 1)
    assert replies[-1]["replyTo"] == "last"


class _Buffered(MemoryTransport):
    """Frames already read from the socket: returned without waiting, as
    wsproto's buffer returns them."""

    def __init__(self, frames: list[str]) -> None:
        super().__init__()
        self.frames = frames

    async def receive(self) -> str:
        if self.frames:
            return self.frames.pop(0)
        return await super().receive()


async def test_a_token_that_expired_during_a_handler_ends_the_session_before_the_next_frame(
    world, autojump_clock
):
    world.domain.conversations["c"] = {"alice", "bob"}

    async def slow_runner(fn, *args):
        if fn == world.domain.typing:
            await trio.sleep(2)  # the token expires meanwhile
        return await inline_runner(fn, *args)

    typing = {"v": 1, "action": "chat.typing", "id": "t"}
    typing["payload"] = {"conversationId": "c", "state": "started"}
    frames = [json.dumps(typing), json.dumps({"v": 1, "action": "ping", "id": "p"})]
    transport = _Buffered([])
    conn = Connection(
        transport,
        Principal("alice", expires_at=time.time() + 1),
        hub=world.hub,
        store=world.store,
        domain=world.domain,
        settings=world.settings,
        runner=slow_runner,
        viewer_factory=lambda p: Viewer(p.user_id),
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(conn.serve)
        assert (await transport.client.receive())["type"] == "session.welcome"
        transport.frames.extend(frames)
        await transport.client.send("ping", id="wake")  # the reader takes the buffered ones
        seen = []
        while True:
            try:
                envelope = await transport.client.receive()
            except Exception:
                break
            seen.append((envelope["type"], envelope.get("replyTo")))
    assert conn.close_code == 4001
    assert ("ping.pong", "wake") in seen
    assert ("ping.pong", "p") not in seen  # no action ran under the expired token
    assert ("error", None) in seen  # TOKEN_EXPIRED before the close


async def test_nothing_durable_follows_a_last_envelope():
    buffer = SendBuffer(max_items=2)
    sent: list[list[str]] = []

    async def flush() -> None:
        sent.append(buffer.take_batch())

    await buffer.put_durable_paced("e1", stall_timeout_s=0.0, flush=flush)
    buffer.put_final("system.reconnect")
    for i in range(2, 6):
        await buffer.put_durable_paced(f"e{i}", stall_timeout_s=0.0, flush=flush)
    buffer.put_durable("late reply")
    assert [text for batch in sent for text in batch] + buffer.take_all() == [
        "e1",
        "system.reconnect",
    ]
