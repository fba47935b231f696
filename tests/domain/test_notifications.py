"""Notifications: admin creation, paging, unread counts, reads and their events."""

from __future__ import annotations

import pytest

from gateway.errors import BadRequest, Forbidden

from .conftest import assert_streams_contiguous


def test_me_and_ensure_user(domain, alice, carol):
    assert domain.me(alice) == {"id": "alice", "name": "Alice"}
    assert domain.me(carol) == {"id": "carol", "name": None}
    assert domain.ensure_user("carol", "Carol") == {"id": "carol", "name": "Carol"}
    assert domain.ensure_user("carol") == {"id": "carol", "name": "Carol"}
    assert domain.me(carol) == {"id": "carol", "name": "Carol"}


def test_realtime_cursor_follows_the_stream(domain, admin, alice):
    start = domain.realtime_cursor(alice)
    assert start["seq"] == 0
    outcome = domain.create_notification(admin, "alice", "K", "hello")
    assert domain.realtime_cursor(alice) == {"epoch": start["epoch"], "seq": 1}
    assert outcome.events[0].epoch == start["epoch"]


def test_create_notification_is_admin_only_and_leaves_nothing(domain, store, alice):
    with pytest.raises(Forbidden):
        domain.create_notification(alice, "bob", "K", "hi")
    assert domain.unread_notification_count(type(alice)("bob")) == 0
    assert store.stream_position("bob").seq == 0


def test_create_notification_appends_notification_new(domain, admin, alice):
    first = domain.create_notification(admin, "alice", "WELCOME", "hi", '{"x":1}')
    second = domain.create_notification(admin, "alice", "OTHER", "again")
    assert first.value["kind"] == "WELCOME" and first.value["data"] == '{"x":1}'
    assert first.value["readAt"] is None
    assert first.value["createdAt"].endswith("Z")
    (event,) = second.events
    assert (event.user_id, event.type, event.seq) == ("alice", "notification.new", 2)
    assert event.payload == {"notification": second.value, "unreadCount": 2}
    assert domain.unread_notification_count(alice) == 2


@pytest.mark.parametrize(("kind", "text"), [("", "x"), ("K", ""), ("K", "   "), ("K", None)])
def test_create_notification_rejects_bad_arguments(domain, admin, kind, text):
    with pytest.raises(BadRequest):
        domain.create_notification(admin, "alice", kind, text)


def test_notifications_page_newest_first_with_cursor(domain, admin, alice):
    ids = [domain.create_notification(admin, "alice", "K", f"n{i}").value["id"] for i in range(5)]
    page = domain.notifications(alice, first=2)
    assert [item["id"] for item in page["items"]] == [ids[4], ids[3]]
    assert page["unreadCount"] == 5
    page2 = domain.notifications(alice, first=2, after=page["nextCursor"])
    assert [item["id"] for item in page2["items"]] == [ids[2], ids[1]]
    page3 = domain.notifications(alice, first=2, after=page2["nextCursor"])
    assert [item["id"] for item in page3["items"]] == [ids[0]]
    assert page3["nextCursor"] is None
    with pytest.raises(BadRequest):
        domain.notifications(alice, after="not-a-cursor")
    assert domain.notifications(type(alice)("bob")) == {
        "items": [],
        "nextCursor": None,
        "unreadCount": 0,
    }


def test_mark_some_then_all_read(domain, store, admin, alice):
    ids = [domain.create_notification(admin, "alice", "K", f"n{i}").value["id"] for i in range(3)]
    some = domain.mark_notifications_read(alice, ids=[ids[0], "unknown"])
    assert some.value == 2
    (event,) = some.events
    assert event.type == "notification.read"
    assert event.payload == {"ids": [ids[0], "unknown"], "all": False, "unreadCount": 2}
    items = domain.notifications(alice)["items"]
    assert [i["readAt"] is not None for i in items] == [False, False, True]

    everything = domain.mark_notifications_read(alice, all=True)
    assert everything.value == 0
    assert everything.events[0].payload == {"ids": None, "all": True, "unreadCount": 0}
    # Nothing left to read: no event.
    again = domain.mark_notifications_read(alice, all=True)
    assert (again.value, again.events) == (0, ())
    with pytest.raises(BadRequest):
        domain.mark_notifications_read(alice)
    assert_streams_contiguous(store, "alice")


def test_others_cannot_mark_my_notifications(domain, admin, alice, bob):
    note = domain.create_notification(admin, "alice", "K", "mine").value
    outcome = domain.mark_notifications_read(bob, ids=[note["id"]])
    assert (outcome.value, outcome.events) == (0, ())
    assert domain.unread_notification_count(alice) == 1
