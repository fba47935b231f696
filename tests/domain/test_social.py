"""Follows, the feed, and presence with topic authorization."""

from __future__ import annotations

import json

import pytest

from gateway.domain import Viewer
from gateway.errors import BadRequest, Conflict, Forbidden, NotFound

from .conftest import assert_streams_contiguous, by_user, types_for


def test_follow_request_notifies_the_target(domain, store, alice, bob):
    outcome = domain.request_follow(alice, "bob")
    request = outcome.value
    assert (request["fromUserId"], request["toUserId"], request["status"]) == (
        "alice",
        "bob",
        "PENDING",
    )
    assert types_for(outcome, "alice") == ["follow.request.created"]
    assert types_for(outcome, "bob") == ["follow.request.created", "notification.new"]
    note = by_user(outcome)["bob"][1][1]
    assert note["notification"]["kind"] == "FOLLOW_REQUEST"
    assert json.loads(note["notification"]["data"])["requestId"] == request["id"]
    assert note["unreadCount"] == 1
    assert domain.follow_requests(bob) == [request]
    assert domain.sent_follow_requests(alice) == [request]
    # Asking again while pending changes nothing.
    again = domain.request_follow(alice, "bob")
    assert again.value == request and again.events == ()
    with pytest.raises(BadRequest):
        domain.request_follow(alice, "alice")
    with pytest.raises(BadRequest):
        domain.follow_requests(bob, status="MAYBE")


def test_accepting_notifies_the_requester(domain, store, alice, bob, carol):
    request = domain.request_follow(alice, "bob").value
    with pytest.raises(Forbidden):
        domain.respond_follow_request(carol, request["id"], True)
    with pytest.raises(NotFound):
        domain.respond_follow_request(bob, "flw_unknown", True)
    outcome = domain.respond_follow_request(bob, request["id"], True)
    assert outcome.value["status"] == "ACCEPTED"
    assert types_for(outcome, "bob") == ["follow.request.updated"]
    assert types_for(outcome, "alice") == ["follow.request.updated", "notification.new"]
    assert by_user(outcome)["alice"][1][1]["notification"]["kind"] == "FOLLOW_ACCEPTED"
    assert domain.follow_requests(bob) == []
    assert domain.follow_requests(bob, status="ACCEPTED") == [outcome.value]
    with pytest.raises(Conflict):
        domain.respond_follow_request(bob, request["id"], False)
    assert_streams_contiguous(store, "alice", "bob")


def test_rejection_then_a_new_request(domain, alice, bob):
    request = domain.request_follow(alice, "bob").value
    rejected = domain.respond_follow_request(bob, request["id"], False)
    assert rejected.value["status"] == "REJECTED"
    assert types_for(rejected, "alice") == ["follow.request.updated"]
    renewed = domain.request_follow(alice, "bob")
    assert renewed.value["status"] == "PENDING"
    assert types_for(renewed, "bob") == ["follow.request.created", "notification.new"]


def test_feed_goes_to_accepted_followers(domain, alice, bob, carol):
    request = domain.request_follow(alice, "bob").value
    domain.request_follow(carol, "bob")  # pending: not a follower yet
    domain.respond_follow_request(bob, request["id"], True)
    outcome = domain.post_feed_item(bob, "shipping")
    item = outcome.value
    assert (item["authorId"], item["text"]) == ("bob", "shipping")
    assert by_user(outcome) == {"alice": [("activity.feed.item", {"item": item})]}
    mine = domain.post_feed_item(alice, "hello").value
    assert [i["id"] for i in domain.feed(alice)] == [mine["id"], item["id"]]
    assert [i["id"] for i in domain.feed(alice, first=1)] == [mine["id"]]
    assert domain.feed(carol) == []
    with pytest.raises(BadRequest):
        domain.post_feed_item(bob, " ")


def test_presence_is_stored_and_announced(domain, alice, bob):
    domain.create_conversation(alice, ["bob"])
    outcome = domain.set_presence("bob", "AWAY")
    assert outcome.events == ()
    (event,) = outcome.ephemeral
    assert event.type == "user.presence.updated"
    assert (event.cls, event.topic, event.key) == ("latest", "presence:bob", "presence:bob")
    assert event.payload == outcome.value
    online = domain.set_presence(bob, "ONLINE").value
    assert online["status"] == "ONLINE" and online["lastSeenAt"] > outcome.value["lastSeenAt"]
    seen = domain.presence(alice, ["bob", "nobody"])
    assert seen[0] == online
    assert seen[1] == {"userId": "nobody", "status": "OFFLINE", "lastSeenAt": None}
    # A stranger sees bob as offline.
    assert domain.presence(Viewer("mallory"), ["bob"])[0]["status"] == "OFFLINE"
    with pytest.raises(BadRequest):
        domain.set_presence("bob", "BUSY")


def test_can_subscribe(domain, alice, bob, carol):
    pair = domain.create_conversation(alice, ["bob"]).value
    party = domain.create_event(carol, "Party", "2030-01-01T00:00:00Z").value
    assert domain.can_subscribe(alice, f"conversation:{pair['id']}")
    assert not domain.can_subscribe(carol, f"conversation:{pair['id']}")
    assert not domain.can_subscribe(alice, "conversation:cnv_unknown")
    assert domain.can_subscribe(alice, "presence:bob")
    assert domain.can_subscribe(alice, "presence:alice")
    assert not domain.can_subscribe(alice, "presence:carol")
    request = domain.request_follow(carol, "alice").value
    assert not domain.can_subscribe(alice, "presence:carol")  # pending is not enough
    domain.respond_follow_request(alice, request["id"], True)
    assert domain.can_subscribe(alice, "presence:carol")
    assert domain.can_subscribe(carol, "presence:alice")
    assert domain.can_subscribe(bob, f"event:{party['id']}")
    assert not domain.can_subscribe(bob, "event:gth_unknown")
    for topic in ("", "conversation:", "weather:today", "nonsense"):
        assert not domain.can_subscribe(alice, topic)


def test_broadcast_notice_is_admin_only(domain, alice, admin):
    with pytest.raises(Forbidden):
        domain.broadcast_notice(alice, "hi")
    outcome = domain.broadcast_notice(admin, "maintenance at noon", "warning")
    assert outcome.value is True and outcome.events == ()
    (notice,) = outcome.ephemeral
    assert notice.broadcast and notice.type == "system.notice"
    assert notice.payload == {"id": notice.id, "text": "maintenance at noon", "severity": "warning"}
    with pytest.raises(BadRequest):
        domain.broadcast_notice(admin, "x", "apocalyptic")
