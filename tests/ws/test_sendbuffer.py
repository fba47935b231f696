"""The send buffer's three backpressure classes and the writer's batches."""

from __future__ import annotations

import pytest
import trio

from gateway.ws.sendbuffer import SendBuffer, SlowConsumer


async def test_batch_returns_everything_pending_in_order():
    buffer = SendBuffer(max_items=10)
    buffer.put_durable("a")
    buffer.put_droppable("b")
    buffer.put_latest("k", "c")
    assert await buffer.get_batch() == ["a", "b", "c"]
    assert len(buffer) == 0 and buffer.pending_bytes == 0


async def test_get_batch_waits_for_a_put():
    buffer = SendBuffer()
    got: list[list[str]] = []

    async def writer():
        got.append(await buffer.get_batch())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        assert got == []
        buffer.put_durable("x")
    assert got == [["x"]]


async def test_durable_overflow_by_count_raises_slow_consumer():
    buffer = SendBuffer(max_items=3, max_bytes=1000)
    for text in ("1", "2", "3"):
        buffer.put_durable(text)
    with pytest.raises(SlowConsumer):
        buffer.put_durable("4")
    assert buffer.stats.overflows == 1
    assert await buffer.get_batch() == ["1", "2", "3"]


async def test_durable_overflow_by_bytes_raises_slow_consumer():
    buffer = SendBuffer(max_items=100, max_bytes=10)
    buffer.put_durable("x" * 8)
    with pytest.raises(SlowConsumer):
        buffer.put_durable("yyy")


async def test_latest_coalesces_in_its_queue_position():
    buffer = SendBuffer()
    buffer.put_latest("presence:u1", "u1-online")
    buffer.put_durable("event")
    buffer.put_latest("presence:u1", "u1-away")
    buffer.put_latest("presence:u2", "u2-online")
    assert await buffer.get_batch() == ["u1-away", "event", "u2-online"]
    assert buffer.stats.coalesced == 1
    buffer.put_latest("presence:u1", "u1-offline")
    assert await buffer.get_batch() == ["u1-offline"]


async def test_droppable_is_dropped_when_full_and_never_raises():
    buffer = SendBuffer(max_items=4, ephemeral_share=0.5)
    assert buffer.put_droppable("t1") and buffer.put_droppable("t2")
    assert not buffer.put_droppable("t3")
    assert not buffer.put_latest("k", "v")
    assert buffer.stats.dropped == 2
    # durable events still fit in the room ephemeral events may not take
    buffer.put_durable("d1")
    buffer.put_durable("d2")
    assert await buffer.get_batch() == ["t1", "t2", "d1", "d2"]


async def test_close_drains_then_ends():
    buffer = SendBuffer()
    buffer.put_durable("last")
    buffer.close()
    buffer.put_durable("ignored")
    assert not buffer.put_droppable("ignored")
    assert await buffer.get_batch() == ["last"]
    with pytest.raises(trio.EndOfChannel):
        await buffer.get_batch()


async def test_close_wakes_a_waiting_writer():
    buffer = SendBuffer()
    with trio.fail_after(1):
        async with trio.open_nursery() as nursery:

            async def writer():
                with pytest.raises(trio.EndOfChannel):
                    await buffer.get_batch()

            nursery.start_soon(writer)
            await trio.testing.wait_all_tasks_blocked()
            buffer.close()


async def test_put_final_ignores_limits():
    buffer = SendBuffer(max_items=1)
    buffer.put_durable("a")
    buffer.put_final("bye")
    assert await buffer.get_batch() == ["a", "bye"]


async def test_batches_are_capped_in_bytes_but_take_at_least_one():
    buffer = SendBuffer()
    buffer.put_durable("a" * 10)
    buffer.put_latest("k", "b" * 10)
    buffer.put_durable("c" * 30)
    buffer.put_durable("d" * 5)
    assert await buffer.get_batch(max_bytes=25) == ["a" * 10, "b" * 10]
    buffer.put_latest("k", "B")  # the taken slot no longer coalesces
    assert await buffer.get_batch(max_bytes=25) == ["c" * 30]
    assert await buffer.get_batch(max_bytes=25) == ["d" * 5, "B"]
    assert buffer.pending_bytes == 0


async def test_paced_put_waits_for_the_writer_and_leaves_room_for_replies(autojump_clock):
    buffer = SendBuffer(max_items=4, paced_share=0.5)
    await buffer.put_durable_paced("e1", stall_timeout_s=5)
    await buffer.put_durable_paced("e2", stall_timeout_s=5)
    buffer.put_durable("reply")  # replies use the room paced events leave
    async with trio.open_nursery() as nursery:
        nursery.start_soon(lambda: buffer.put_durable_paced("e3", stall_timeout_s=5))
        await trio.sleep(4)
        assert await buffer.get_batch() == ["e1", "e2", "reply"]
        await trio.testing.wait_all_tasks_blocked()
    assert await buffer.get_batch() == ["e3"]


async def test_paced_put_gives_up_on_a_stalled_writer(autojump_clock):
    buffer = SendBuffer(max_items=2, paced_share=0.5)
    await buffer.put_durable_paced("e1", stall_timeout_s=5)
    start = trio.current_time()
    with pytest.raises(SlowConsumer):
        await buffer.put_durable_paced("e2", stall_timeout_s=5)
    assert trio.current_time() - start == 5
    assert buffer.stats.overflows == 1
