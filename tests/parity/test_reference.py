"""The audit's reference: a stream reduced as push shows it, compared with a poll."""

from __future__ import annotations

from types import SimpleNamespace

from parity.differ import Classification
from parity.model import FeedItem
from parity.reference import ABSENT, UNKNOWN, Polled, Reference, compare_poll, redact

C = Classification
ME = "u1"


def ev(seq, type_, payload):
    return SimpleNamespace(seq=seq, type=type_, payload=payload)


def conv(cid, unread, last="m1", read=None):
    return {
        "conversation": {
            "id": cid,
            "unreadCount": unread,
            "lastMessage": {"id": last},
            "lastReadMessageId": read,
        },
        "totalUnread": unread,
    }


def stream():
    return [
        ev(1, "notification.new", {"unreadCount": 1}),
        ev(2, "chat.conversation.updated", conv("c1", 2)),
        ev(3, "chat.message", {"message": {"id": "m2", "conversationId": "c1"}}),
        ev(
            4,
            "follow.request.created",
            {"request": {"id": "f1", "fromUserId": "u2", "toUserId": ME, "status": "PENDING"}},
        ),
        ev(
            5,
            "event.rsvp.updated",
            {
                "rsvp": {"eventId": "e1", "event": {"hostId": ME}},
                "counts": {"going": 2, "interested": 1},
            },
        ),
        ev(6, "organization.member.updated", {"orgId": "o1", "userId": ME, "role": "MEMBER"}),
        ev(7, "organization.announcement", {"announcement": {"id": "a1", "orgId": "o1"}}),
        ev(
            8,
            "follow.request.updated",
            {
                "request": {
                    "id": "f2",
                    "fromUserId": ME,
                    "toUserId": "u3",
                    "status": "ACCEPTED",
                    "updatedAt": "2026-01-02T00:00:00.000Z",
                }
            },
        ),
        ev(
            9,
            "activity.feed.item",
            {"item": {"id": "i1", "authorId": "u3", "createdAt": "2026-01-03T00:00:00.000Z"}},
        ),
    ]


def reduced(complete=True):
    ref = Reference(ME, "ep", complete=complete)
    ref.apply_all(stream())
    return ref


def test_a_complete_stream_determines_every_audited_key():
    ref = reduced()
    assert ref.seq == 9
    assert ref.value("notification.unread") == 1
    assert ref.value("chat.total") == 2
    assert ref.value("chat.conv:c1.unread") == 2
    assert ref.value("chat.conv:c1.lastMessage") == "m2"
    assert ref.value("chat.conv:c9.unread") is ABSENT
    assert ref.value("follow.pending") == ("f1",)
    assert ref.value("event:e1.counts") == (2, 1)
    assert ref.value("event:e2.counts", host=ME) == (0, 0)  # hosted, no RSVP yet
    assert ref.value("event:e3.counts", host="u9") is UNKNOWN  # not the host
    assert ref.value("organization:o1.role") == "MEMBER"
    assert ref.value("organization:o1.announcement") == "a1"
    assert ref.value("organization:o2.role") is None
    assert ref.value("organization:o1.members") is UNKNOWN
    assert ref.value("presence:u2.status") is UNKNOWN
    assert ref.defaulted("organization:o2.role") and not ref.defaulted("notification.unread")


def test_a_cut_history_determines_only_what_its_events_carried():
    ref = Reference(ME, "ep", seq=3, complete=False)
    ref.apply_all(stream()[3:])
    assert ref.value("notification.unread") is UNKNOWN
    assert ref.value("chat.conv:c1.unread") is UNKNOWN
    assert ref.value("follow.pending") is UNKNOWN
    assert ref.value("event:e1.counts") == (2, 1)
    assert ref.value("organization:o1.announcement") == "a1"
    assert not ref.defaulted("notification.unread")


def test_joining_again_forgets_the_newest_announcement():
    ref = reduced()
    ref.apply(10, "organization.member.updated", {"orgId": "o1", "userId": ME, "role": None})
    assert ref.value("organization:o1.role") is None
    assert ref.value("organization:o1.announcement") is UNKNOWN


def classes(findings):
    return {f.key: f.classification for f in findings}


def test_a_poll_agreeing_with_the_stream_matches():
    polled = Polled(
        values={
            "notification.unread": 1,
            "chat.total": 2,
            "chat.conv:c1.unread": 2,
            "follow.pending": ("f1",),
            "event:e1.counts": (2, 1),
            "organization:o1.role": "MEMBER",
            "organization:o1.announcement": "a1",
        }
    )
    findings, unknown = compare_poll(polled, reduced())
    assert set(classes(findings).values()) == {C.MATCH} and unknown == 0


def test_missing_updates_and_wrong_values():
    polled = Polled(
        values={
            "notification.unread": 3,  # the stream shows 1, which the poll showed before
            "chat.total": 5,  # the stream shows 2, never polled
            "chat.conv:c7.unread": 1,  # a conversation the stream never showed
            "organization:o5.role": "ADMIN",  # no event ever carried it
            "presence:u2.status": "ONLINE",  # not determined by a stream
        }
    )
    previous = {"notification.unread": (0, 1), "chat.total": (0,)}
    findings, unknown = compare_poll(polled, reduced(), previous=previous)
    assert classes(findings) == {
        "notification.unread": C.MISSING_PUSH,
        "chat.total": C.DIVERGED,
        "chat.conv:c7.unread": C.MISSING_PUSH,
        "organization:o5.role": C.MISSING_PUSH,
    }
    assert unknown == 1


def test_a_complete_polled_list_lacking_a_conversation_is_missing_poll():
    polled = Polled(values={}, conversations_complete=True)
    findings, _ = compare_poll(polled, reduced())
    assert classes(findings) == {"chat.conv:c1.unread": C.MISSING_POLL}


def test_the_feed_compares_each_followed_authors_newest_item():
    ref = reduced()
    item = FeedItem("i1", "u3", "2026-01-03T00:00:00.000Z")
    newer = FeedItem("i2", "u3", "2026-01-04T00:00:00.000Z")
    older = FeedItem("i0", "u3", "2026-01-01T00:00:00.000Z")  # before the follow
    mine = FeedItem("i9", ME, "2026-01-05T00:00:00.000Z")
    cases = {
        (mine, item): C.MATCH,
        (newer, item): C.MISSING_PUSH,
        (older,): C.MISSING_POLL,
    }
    for page, expected in cases.items():
        findings, _ = compare_poll(Polled(feed=list(page), feed_full=False), ref)
        assert classes(findings) == {"activity.author:u3.latest": expected}, page
    # On a full page the pushed item may lie beyond it: not compared.
    full = [FeedItem(f"x{i}", "u4", "2026-01-09T00:00:00.000Z") for i in range(3)]
    findings, _ = compare_poll(Polled(feed=full, feed_full=True), ref)
    assert findings == []


def test_a_redacted_finding_names_no_id():
    polled = Polled(values={"chat.conv:cnv_secret.lastMessage": "msg_secret"})
    (finding,), _ = compare_poll(polled, reduced())
    shown = redact(finding, check="stream")
    assert "secret" not in repr(shown)
    assert shown["key"] == "chat.conv:*.lastMessage" and shown["poll"] == "<id>"
    assert shown["class"] == "MISSING_PUSH" and shown["check"] == "stream"


def test_a_key_pattern_drops_the_record_id_even_one_with_dots():
    from parity.model import key_pattern

    assert key_pattern("chat.conv:cnv_1.unread") == "chat.conv:*.unread"
    assert key_pattern("presence:ann.lee.status") == "presence:*.status"
    assert key_pattern("notification.unread") == "notification.unread"
