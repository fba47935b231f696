"""UserStream: seq order without gaps, gap fill, tailing, resume and reset."""

from __future__ import annotations

import json

import pytest
import trio

from gateway.events import Cursor
from gateway.ws.sendbuffer import SendBuffer
from gateway.ws.stream import UserStream

from .conftest import FakeRollout, FakeStore, inline_runner


class Harness:
    def __init__(self, nursery: trio.Nursery, *, at: int = 0, inbox_size: int = 256) -> None:
        self.nursery = nursery
        self.store = FakeStore()
        self.buffer = SendBuffer()
        self.runner = inline_runner
        self.rollout: FakeRollout | None = None
        self.at = at
        self.inbox_size = inbox_size
        self.stream: UserStream | None = None

    async def start(self) -> UserStream:
        async def runner(fn, *args):
            return await self.runner(fn, *args)

        self.stream = UserStream(
            user_id="u",
            store=self.store,
            buffer=self.buffer,
            cursor=Cursor(self.store.epoch, self.at),
            rollout=self.rollout,
            runner=runner,
            inbox_size=self.inbox_size,
        )
        await self.nursery.start(self.stream.run)
        return self.stream

    async def envelopes(self) -> list[dict]:
        await trio.testing.wait_all_tasks_blocked()
        return [json.loads(text) for text in self.buffer.take_all()]

    async def until(self, type_: str) -> list[dict]:
        """Envelopes up to and including the first of `type_`."""
        got: list[dict] = []
        with trio.fail_after(60):
            while not any(e["type"] == type_ for e in got):
                got.extend(json.loads(text) for text in await self.buffer.get_batch())
        return got

    async def seqs(self) -> list[int]:
        return [e["seq"] for e in await self.envelopes()]


@pytest.fixture
async def h(nursery, autojump_clock):
    return Harness(nursery)


async def test_live_events_in_order(h, autojump_clock):
    stream = await h.start()
    for _ in range(3):
        stream.offer(h.store.append("u"))
    assert await h.seqs() == [1, 2, 3]
    assert stream.last_sent == 3


async def test_duplicates_and_old_events_are_skipped(h, autojump_clock):
    stream = await h.start()
    first = h.store.append("u")
    stream.offer(first)
    stream.offer(first)
    second = h.store.append("u")
    stream.offer(second)
    stream.offer(first)
    assert await h.seqs() == [1, 2]


async def test_gap_is_filled_from_the_store_before_sending_on(h, autojump_clock):
    stream = await h.start()
    events = [h.store.append("u") for _ in range(4)]
    stream.offer(events[0])
    stream.offer(events[3])  # 2 and 3 were lost on the backplane
    stream.offer(events[2])  # late duplicate
    assert await h.seqs() == [1, 2, 3, 4]


async def test_reordered_events_still_go_out_in_order(h, autojump_clock):
    stream = await h.start()
    events = [h.store.append("u") for _ in range(3)]
    for event in reversed(events):
        stream.offer(event)
    assert await h.seqs() == [1, 2, 3]


async def test_a_lost_notification_arrives_within_five_seconds_by_tailing(h, autojump_clock):
    await h.start()
    start = trio.current_time()
    h.store.append("u")  # committed, but its notification never arrives
    batch = await h.buffer.get_batch()
    assert trio.current_time() - start <= 5.0
    assert [json.loads(text)["seq"] for text in batch] == [1]


async def test_inbox_overflow_refills_from_the_store(h, autojump_clock):
    h.inbox_size = 2
    stream = await h.start()
    for _ in range(6):
        stream.offer(h.store.append("u"))
    assert stream.stats["overflowed"] > 0
    assert await h.seqs() == [1, 2, 3, 4, 5, 6]


async def test_stream_starts_after_the_welcome_position(h, autojump_clock):
    for _ in range(3):
        h.store.append("u")
    h.at = 3
    stream = await h.start()
    stream.offer(h.store.streams["u"][1])
    stream.offer(h.store.append("u"))
    assert await h.seqs() == [4]


async def test_resume_replays_exactly_the_missed_events_then_replies(h, autojump_clock):
    for _ in range(5):
        h.store.append("u")
    h.at = 5  # the welcome said 5; the client last saw 2
    stream = await h.start()
    await stream.request_resume(h.store.epoch, 2, "r1")
    envelopes = await h.envelopes()
    assert [e.get("seq") for e in envelopes[:-1]] == [3, 4, 5]
    assert envelopes[-1]["type"] == "session.resumed"
    assert envelopes[-1]["replyTo"] == "r1"
    assert envelopes[-1]["payload"] == {"fromSeq": 3, "toSeq": 5}


async def test_resume_does_not_interleave_live_traffic_out_of_order(h, autojump_clock):
    for _ in range(4):
        h.store.append("u")
    stream = await h.start()
    live: list[int] = []

    async def runner(fn, *args):
        result = fn(*args)
        if len(live) < 3:
            # live events committed and offered while the replay reads the store
            event = h.store.append("u")
            live.append(event.seq)
            stream.offer(event)
            await trio.sleep(0.01)
        return result

    h.runner = runner
    await stream.request_resume(h.store.epoch, 0, "r1")
    envelopes = await h.until("session.resumed")
    await trio.sleep(1)
    envelopes += await h.envelopes()
    assert len(live) >= 2
    seqs = [e["seq"] for e in envelopes if "seq" in e and e.get("seq") is not None]
    assert seqs == list(range(1, len(seqs) + 1))
    assert seqs[-1] == len(h.store.streams["u"])
    assert [e["type"] for e in envelopes].count("session.resumed") == 1


async def test_resume_after_live_events_replays_only_after_last_seq(h, autojump_clock):
    stream = await h.start()
    for _ in range(3):
        stream.offer(h.store.append("u"))
    assert await h.seqs() == [1, 2, 3]
    await stream.request_resume(h.store.epoch, 2, None)
    envelopes = await h.envelopes()
    assert [e.get("seq") for e in envelopes] == [3, None]
    assert envelopes[-1]["payload"] == {"fromSeq": 3, "toSeq": 3}


async def test_resume_with_another_epoch_resets(h, autojump_clock):
    h.store.append("u")
    stream = await h.start()
    await stream.request_resume("old-epoch", 7, "r")
    [reset] = await h.envelopes()
    assert reset["type"] == "session.reset"
    assert reset["payload"] == {"reason": "EPOCH_CHANGED", "epoch": h.store.epoch, "seq": 1}
    assert reset["replyTo"] == "r"
    stream.offer(h.store.append("u"))
    assert await h.seqs() == [2]


async def test_resume_beyond_history_resets(h, autojump_clock):
    for _ in range(6):
        h.store.append("u")
    h.store.retained_from["u"] = 4
    h.at = 6
    stream = await h.start()
    await stream.request_resume(h.store.epoch, 1, "r")
    [reset] = await h.envelopes()
    assert reset["payload"] == {"reason": "HISTORY_EXPIRED", "epoch": h.store.epoch, "seq": 6}


async def test_withheld_domain_sends_skipped_with_the_same_seq(h, autojump_clock):
    h.rollout = FakeRollout()
    h.rollout.off.add("chat")
    stream = await h.start()
    stream.offer(h.store.append("u", "notification.new"))
    stream.offer(h.store.append("u", "chat.message", {"message": {"body": "secret"}}))
    stream.offer(h.store.append("u", "notification.new"))
    envelopes = await h.envelopes()
    assert [(e["type"], e["seq"]) for e in envelopes] == [
        ("notification.new", 1),
        ("stream.skipped", 2),
        ("notification.new", 3),
    ]
    assert envelopes[1]["payload"] == {"domain": "chat", "type": "chat.message"}


async def test_live_overflow_is_a_slow_consumer_but_a_refill_is_paced(autojump_clock):
    from gateway.ws.sendbuffer import SlowConsumer

    store = FakeStore()
    buffer = SendBuffer(max_items=4)
    stream = UserStream(
        user_id="u",
        store=store,
        buffer=buffer,
        cursor=Cursor(store.epoch, 0),
        runner=inline_runner,
        inbox_size=2,
    )
    cut_off = False
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(stream.run)
            for _ in range(10):  # overflows the inbox: the pump refills from the store
                stream.offer(store.append("u"))
            await trio.testing.wait_all_tasks_blocked()
            assert len(buffer) == 3  # paced: waits at 3/4 of the buffer for the writer
            got: list[int] = []
            while len(got) < 10:
                got += [json.loads(t)["seq"] for t in await buffer.get_batch()]
            assert got == list(range(1, 11))
            for _ in range(5):  # live events overflow a buffer nobody drains
                stream.offer(store.append("u"))
                await trio.testing.wait_all_tasks_blocked()
    except* SlowConsumer:
        cut_off = True
    assert cut_off
    assert len(buffer) == 4
