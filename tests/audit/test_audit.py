"""The shadow audit without a server: the executor's hook, what a poll showed, the
stream and delivery checks against a real store, the queue, and the evidence book."""

from __future__ import annotations

import json
import time
from types import SimpleNamespace

import pytest
import trio

from contracts import encode_envelope
from gateway.audit import AUDITED_DOMAINS, DeliveryLog, ShadowAudit, _Sample, _Written, extract
from gateway.domain import Domain, Viewer
from gateway.evidence import EvidenceBook, hour_of
from gateway.faults import OmittingStore, parse_faults
from gateway.graphql import PollingExecutor, RequestContext
from gateway.rollout import parse_rollout
from gateway.store import open_store
from parity.differ import Classification

C = Classification
ADMIN = Viewer("ops", scopes=frozenset({"admin"}))
FLAGS = "[parity]\naudit_sample = 1.0\naudit_window_ms = 1000\n[domains.presence]\nstage = 'OFF'\n"
POLL = """query Poll($e: ID!) {
  unreadNotificationCount
  chats: conversations { id unread: unreadCount lastMessage { id } ...Read }
  followRequests { id }
  event(id: $e) { id hostId rsvpCounts { going interested } }
  presence(userIds: ["bob"]) { status }
  hidden: chatUnreadCount @skip(if: true)
}
fragment Read on Conversation { lastReadMessageId }"""


class Rollout:
    def __init__(self, text: str = FLAGS) -> None:
        self.current = parse_rollout(text)


class Capture:
    """Stands in for the audit in the executor: samples every poll, keeps the offers."""

    def __init__(self) -> None:
        self.offers: list[tuple] = []

    def sample(self, user_id, domains) -> bool:
        return True

    def offer(self, *args) -> None:
        self.offers.append(args)


@pytest.fixture
def store(tmp_path):
    store = open_store(f"sqlite:///{tmp_path}/a.db")
    yield store
    store.close()


def scenario(domain: Domain) -> str:
    alice, bob = Viewer("alice"), Viewer("bob")
    conv = domain.create_conversation(bob, ["alice"]).value["id"]
    domain.send_chat_message(bob, conv, "hello")
    domain.create_notification(ADMIN, "alice", "K", "one")
    domain.request_follow(bob, "alice")
    event = domain.create_event(alice, "party", "2030-01-01T00:00:00.000Z").value["id"]
    domain.set_rsvp(bob, event, "GOING")
    return event


def poll(domain: Domain, user: str, event: str) -> tuple:
    capture = Capture()
    executor = PollingExecutor(audit=capture)
    ctx = RequestContext(viewer=Viewer(user), domain=domain, realtime_config=lambda uid: {})
    status, body = executor.execute({"query": POLL, "variables": {"e": event}}, ctx)
    assert status == 200, body
    (offer,) = capture.offers
    return offer


def sample_of(offer, *, at=None, window=1.0) -> _Sample:
    viewer, document, name, variables, data, cursor = offer
    return _Sample(
        viewer.user_id,
        document,
        name,
        variables,
        data,
        cursor["epoch"],
        cursor["seq"],
        time.monotonic() if at is None else at,
        window,
    )


def test_the_executor_hands_a_sampled_poll_and_its_snapshot_cursor(store):
    domain = Domain(store)
    event = scenario(domain)
    viewer, _document, name, _variables, data, cursor = poll(domain, "alice", event)
    assert viewer.user_id == "alice" and name is None
    assert cursor == {"epoch": store.stream_position("alice").epoch, "seq": 7}
    assert "realtimeCursor" not in data  # read for the audit, not returned


def test_what_a_poll_showed_as_the_harness_keys(store):
    domain = Domain(store)
    event = scenario(domain)
    _viewer, document, name, variables, data, _cursor = poll(domain, "alice", event)
    polled = extract(document, name, variables, data)
    (conv,) = data["chats"]
    assert polled.values == {
        "notification.unread": 2,  # the admin's notification and the follow request's
        f"chat.conv:{conv['id']}.unread": 1,
        f"chat.conv:{conv['id']}.lastMessage": conv["lastMessage"]["id"],
        f"chat.conv:{conv['id']}.lastRead": None,
        "follow.pending": (data["followRequests"][0]["id"],),
        f"event:{event}.counts": (1, 0),
    }
    assert polled.conversations_complete and polled.hosts == {event: "alice"}


def test_a_clean_store_matches_every_key(store):
    domain = Domain(store)
    event = scenario(domain)
    audit = ShadowAudit(store, Rollout(), EvidenceBook())
    findings = audit.audit(sample_of(poll(domain, "alice", event)), [])
    assert findings and {f.classification for f in findings} == {C.MATCH}
    assert audit.counts["audited"] == 1
    # The next sample reads only the events since (the reduction is cached).
    domain.create_notification(ADMIN, "alice", "K", "two")
    findings = audit.audit(sample_of(poll(domain, "alice", event)), [])
    assert {f.classification for f in findings} == {C.MATCH}


def test_an_event_never_produced_is_missing_push(store):
    domain = Domain(store)
    event = scenario(domain)
    evidence = EvidenceBook()
    audit = ShadowAudit(store, Rollout(), evidence)
    audit.audit(sample_of(poll(domain, "alice", event)), [])
    omitting = Domain(OmittingStore(store, parse_faults("omit_push=notification.new:1")))
    omitting.create_notification(ADMIN, "alice", "K", "lost")
    domain.send_chat_message(Viewer("bob"), domain.conversations(Viewer("alice"))[0]["id"], "hi")
    findings = audit.audit(sample_of(poll(domain, "alice", event)), [])
    shown = {f.key: f for f in findings}
    assert shown["notification.unread"].classification is C.MISSING_PUSH
    assert shown["notification.unread"].poll_value == 3
    assert shown["notification.unread"].push_value == 2
    (row,) = [r for r in evidence.take() if r["domain"] == "notification"]
    assert row["counts"] == {"MATCH": 1, "MISSING_PUSH": 1} and row["stage"] == "SHADOW"
    assert row["samples"][0]["key"] == "notification.unread"


def written(store, user, *, upto, start=0, at=0.0, skip=(), alter=None, closed=None):
    """What a socket wrote: the stored events after `start` up to `upto`, at `at`."""
    lines = []
    for e in store.events_after(user, start):
        if e.seq > upto or e.seq in skip:
            continue
        payload = alter(e) if alter is not None else e.payload
        lines.append(
            (e.seq, at, encode_envelope(e.type, payload, id=e.id, sent_at=e.created_at, seq=e.seq))
        )
    epoch = store.stream_position(user).epoch
    return _Written((epoch, start), 0.0, closed, 0, lines)


def test_the_delivery_check_reads_what_a_socket_wrote(store):
    domain = Domain(store)
    event = scenario(domain)
    audit = ShadowAudit(store, Rollout(), EvidenceBook())
    sample = sample_of(poll(domain, "alice", event), at=10.0, window=1.0)
    in_time = written(store, "alice", upto=sample.seq, at=10.5)
    assert {f.classification for f in audit.audit(sample, [in_time])} == {C.MATCH}

    late = written(store, "alice", upto=sample.seq, at=12.0)  # past the window
    findings = {f.key: f for f in audit.audit(sample, [late])}
    assert {f.classification for f in findings.values()} == {C.MISSING_PUSH}
    assert "within 1000 ms" in findings["notification.unread"].detail

    dropped = written(store, "alice", upto=sample.seq, at=10.5, skip={2})
    assert C.MISSING_PUSH in {f.classification for f in audit.audit(sample, [dropped])}
    gone = written(store, "alice", upto=sample.seq, at=10.5, skip={2}, closed=10.2)
    assert {f.classification for f in audit.audit(sample, [gone])} == {C.MATCH}

    def skew(e):
        payload = json.loads(json.dumps(e.payload))
        if "unreadCount" in payload:
            payload["unreadCount"] += 1
        return payload

    skewed = written(store, "alice", upto=sample.seq, at=10.5, alter=skew)
    findings = {f.key: f.classification for f in audit.audit(sample, [skewed])}
    assert findings["notification.unread"] is C.DIVERGED
    assert findings[f"event:{event}.counts"] is C.MATCH


def test_sockets_opened_after_the_poll_or_past_their_window_are_not_judged(store):
    domain = Domain(store)
    event = scenario(domain)
    audit = ShadowAudit(store, Rollout(), EvidenceBook())
    sample = sample_of(poll(domain, "alice", event), at=10.0)
    after = written(store, "alice", upto=sample.seq, at=12.0)
    after = _Written(after.start, 11.0, None, 0, after.lines)
    caught_up = _Written(after.start, 0.0, None, sample.seq, [])  # its window moved past
    assert {f.classification for f in audit.audit(sample, [after, caught_up])} == {C.MATCH}


def test_only_audited_domains_at_shadow_or_beyond_are_sampled(store):
    audit = ShadowAudit(store, Rollout(), EvidenceBook(), rng=lambda: 0.5)
    assert "presence" not in AUDITED_DOMAINS
    assert audit.sample("alice", {"chat"})
    assert not audit.sample("alice", {"presence"})
    off = ShadowAudit(store, Rollout(FLAGS + "[domains.chat]\nstage = 'OFF'\n"), EvidenceBook())
    assert not off.sample("alice", {"chat"})
    rare = ShadowAudit(
        store, Rollout("[parity]\naudit_sample = 0.1\n"), EvidenceBook(), rng=lambda: 0.5
    )
    assert not rare.sample("alice", {"chat"})
    assert not ShadowAudit(store, Rollout(""), EvidenceBook()).sample("alice", {"chat"})


async def test_a_full_queue_skips_the_sample_and_counts_it(store):
    audit = ShadowAudit(store, Rollout(), EvidenceBook(), queue_size=2)
    sample = SimpleNamespace(user_id="alice")
    for _ in range(5):
        audit._enqueue(sample)
    assert audit.counts["queue_full"] == 3
    await trio.lowlevel.checkpoint()


async def test_offers_reach_a_worker_off_the_request_thread(store):
    domain = Domain(store)
    event = scenario(domain)
    audit = ShadowAudit(store, Rollout(), EvidenceBook())
    async with trio.open_nursery() as nursery:
        await nursery.start(audit.run)
        offer = await trio.to_thread.run_sync(poll, domain, "alice", event)
        audit.offer(*offer)
        with trio.fail_after(10):
            while audit.counts["audited"] == 0:
                await trio.sleep(0.05)
        nursery.cancel_scope.cancel()
    rows = audit.evidence.take()
    assert {r["domain"] for r in rows} >= {"notification", "chat", "follow", "event"}
    assert all(set(r["counts"]) == {"MATCH"} for r in rows)


async def test_a_tap_keeps_what_reached_the_socket():
    class Sink:
        def __init__(self):
            self.sent = []

        async def send(self, text):
            self.sent.append(text)

        async def receive(self):
            return ""

        async def close(self, code, reason=""):
            pass

    log = DeliveryLog()
    log.recording = True
    tap = log.wrap("alice", Sink())
    welcome = encode_envelope(
        "session.welcome", {"epoch": "ep", "seq": 4}, id="w", sent_at="2026-01-01T00:00:00.000Z"
    )
    await tap.send(welcome)
    durable = [
        encode_envelope("notification.new", {"unreadCount": n}, id=f"e{n}", sent_at="t", seq=n)
        for n in range(5, 300)
    ]
    await tap.send("\n".join(durable[:2]))
    for line in durable[2:]:
        await tap.send(line)
    (copy,) = log.written("alice")
    assert copy.start == ("ep", 4)
    assert len(copy.lines) == 256 and copy.lines[-1][0] == 299
    assert copy.evicted_upto == 299 - 256
    await tap.close(1000)
    assert log.written("alice") == []


async def test_the_evidence_book_flushes_and_keeps_what_failed():
    book = EvidenceBook(clock=lambda: 7200.5)
    book.add("audit", "chat", "SHADOW", {"MATCH": 2}, [{"k": 1}])
    book.add("audit", "chat", "SHADOW", {"MATCH": 1, "DIVERGED": 1})
    book.add("beacon", "chat", "LIVE", {})

    class Broken:
        def add_evidence(self, rows):
            raise RuntimeError("down")

    assert await book.flush(Broken()) == 0
    written_rows = []

    class Kept:
        def add_evidence(self, rows):
            written_rows.extend(rows)

    assert await book.flush(Kept()) == 1
    (row,) = written_rows
    assert row["hour"] == hour_of(7200.5) == "1970-01-01T02:00:00.000Z"
    assert row["counts"] == {"MATCH": 3, "DIVERGED": 1} and row["samples"] == [{"k": 1}]
