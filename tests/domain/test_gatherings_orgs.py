"""Gatherings (RSVPs, check-ins, saves) and organizations (roles, announcements)."""

from __future__ import annotations

import pytest

from gateway.domain import Viewer
from gateway.errors import BadRequest, Conflict, Forbidden, NotFound

from .conftest import assert_streams_contiguous, by_user, types_for


@pytest.fixture
def party(domain, alice):
    return domain.create_event(alice, "Launch party", "2026-03-01T18:00:00Z").value


def test_create_event_shape(domain, alice, party):
    assert party == {
        "id": party["id"],
        "title": "Launch party",
        "hostId": "alice",
        "startsAt": "2026-03-01T18:00:00.000Z",
        "rsvpCounts": {"going": 0, "interested": 0},
        "attendeesPreview": [],
        "checkedInCount": 0,
        "viewerRsvp": None,
        "viewerSaved": False,
    }
    assert domain.event(alice, party["id"]) == party
    assert domain.event(alice, "gth_unknown") is None
    with pytest.raises(BadRequest):
        domain.create_event(alice, "x", "next tuesday")
    with pytest.raises(BadRequest):
        domain.create_event(alice, "", "2026-03-01T18:00:00Z")


def test_rsvp_tells_user_and_host_and_counters(domain, store, alice, bob, party):
    outcome = domain.set_rsvp(bob, party["id"], "GOING")
    rsvp = outcome.value
    assert (rsvp["eventId"], rsvp["userId"], rsvp["status"]) == (party["id"], "bob", "GOING")
    assert rsvp["event"]["viewerRsvp"] == "GOING"
    events = by_user(outcome)
    assert sorted(events) == ["alice", "bob"]
    host_payload = events["alice"][0][1]
    assert host_payload["counts"] == {"going": 1, "interested": 0}
    assert host_payload["attendeesPreview"] == ["bob"]
    assert host_payload["rsvp"]["event"]["viewerRsvp"] is None  # as the host sees it
    (counter,) = outcome.ephemeral
    assert counter.payload == {"eventId": party["id"], "going": 1, "interested": 0, "checkedIn": 0}
    assert (counter.cls, counter.topic, counter.key) == (
        "latest",
        f"event:{party['id']}",
        f"event:{party['id']}",
    )
    changed = domain.set_rsvp(bob, party["id"], "INTERESTED")
    assert by_user(changed)["bob"][0][1]["counts"] == {"going": 0, "interested": 1}
    # The host's own RSVP is one event to the host.
    own = domain.set_rsvp(alice, party["id"], "GOING")
    assert types_for(own, "alice") == ["event.rsvp.updated"] and len(own.events) == 1
    with pytest.raises(BadRequest):
        domain.set_rsvp(bob, party["id"], "PERHAPS")
    with pytest.raises(NotFound):
        domain.set_rsvp(bob, "gth_unknown", "GOING")
    assert_streams_contiguous(store, "alice", "bob")


def test_attendees_preview_holds_five(domain, alice, party):
    for n in range(7):
        domain.set_rsvp(Viewer(f"u{n}"), party["id"], "GOING")
    assert domain.event(alice, party["id"])["attendeesPreview"] == [f"u{n}" for n in range(5)]
    assert domain.event(alice, party["id"])["rsvpCounts"]["going"] == 7


def test_upcoming_rsvps(domain, alice, bob, party):
    past = domain.create_event(alice, "Old", "2020-01-01T00:00:00Z").value
    later = domain.create_event(alice, "Later", "2027-01-01T00:00:00Z").value
    skipped = domain.create_event(alice, "Skipped", "2026-12-01T00:00:00Z").value
    domain.set_rsvp(bob, later["id"], "INTERESTED")
    domain.set_rsvp(bob, party["id"], "GOING")
    domain.set_rsvp(bob, past["id"], "GOING")
    domain.set_rsvp(bob, skipped["id"], "NOT_GOING")
    upcoming = domain.my_upcoming_rsvps(bob)
    assert [r["eventId"] for r in upcoming] == [party["id"], later["id"]]
    assert upcoming[0]["event"]["title"] == "Launch party"


def test_check_in_is_for_the_host(domain, store, alice, bob, party):
    with pytest.raises(Forbidden):
        domain.check_in(bob, party["id"], "bob")
    outcome = domain.check_in(alice, party["id"], "bob")
    assert outcome.value["checkedInCount"] == 1
    assert outcome.events == ()
    assert outcome.ephemeral[0].payload["checkedIn"] == 1
    assert domain.check_in(alice, party["id"], "bob").ephemeral == ()
    assert store.stream_position("bob").seq == 0


def test_saved_events(domain, bob, party):
    outcome = domain.set_event_saved(bob, party["id"], True)
    assert outcome.value["viewerSaved"] is True
    assert by_user(outcome) == {
        "bob": [("event.saved.updated", {"eventId": party["id"], "saved": True})]
    }
    assert domain.set_event_saved(bob, party["id"], True).events == ()
    assert [e["id"] for e in domain.saved_events(bob)] == [party["id"]]
    unsaved = domain.set_event_saved(bob, party["id"], False)
    assert unsaved.events[0].payload == {"eventId": party["id"], "saved": False}
    assert domain.saved_events(bob) == []


@pytest.fixture
def club(domain, alice):
    return domain.create_organization(alice, "Club").value


def test_create_organization_makes_the_caller_owner(domain, alice, club):
    assert club["members"] == [{"userId": "alice", "role": "OWNER"}]
    assert club["viewerRole"] == "OWNER"
    assert domain.organization(alice, club["id"]) == club
    with pytest.raises(Forbidden):
        domain.organization(Viewer("bob"), club["id"])
    with pytest.raises(NotFound):
        domain.organization(alice, "org_unknown")


def test_role_changes_notify_the_member_and_managers(domain, store, alice, bob, carol, club):
    added = domain.set_member_role(alice, club["id"], "bob", "ADMIN")
    assert {"userId": "bob", "role": "ADMIN"} in added.value["members"]
    assert types_for(added, "bob") == ["organization.member.updated", "notification.new"]
    assert by_user(added)["bob"][1][1]["notification"]["kind"] == "ROLE_CHANGED"
    assert types_for(added, "alice") == ["organization.member.updated"]
    assert by_user(added)["alice"][0][1] == {"orgId": club["id"], "userId": "bob", "role": "ADMIN"}

    member = domain.set_member_role(bob, club["id"], "carol", "MEMBER")
    assert sorted(by_user(member)) == ["alice", "bob", "carol"]
    with pytest.raises(Forbidden):
        domain.set_member_role(carol, club["id"], "dave", "MEMBER")
    with pytest.raises(Forbidden):
        domain.set_member_role(bob, club["id"], "alice", None)  # admins do not manage owners
    with pytest.raises(Conflict):
        domain.set_member_role(alice, club["id"], "alice", "MEMBER")  # the last owner stays
    with pytest.raises(BadRequest):
        domain.set_member_role(alice, club["id"], "carol", "CAPTAIN")

    removed = domain.set_member_role(alice, club["id"], "carol", None)
    assert by_user(removed)["carol"][0][1]["role"] is None
    assert "carol" not in [m["userId"] for m in removed.value["members"]]
    assert domain.set_member_role(alice, club["id"], "bob", "ADMIN").events == ()
    assert_streams_contiguous(store, "alice", "bob", "carol")


def test_announcements_reach_every_member(domain, alice, bob, carol, club):
    domain.set_member_role(alice, club["id"], "bob", "MEMBER")
    with pytest.raises(Forbidden):
        domain.post_announcement(bob, club["id"], "Hi", "from a member")
    outcome = domain.post_announcement(alice, club["id"], "Welcome", "We are live")
    announcement = outcome.value
    assert (announcement["orgId"], announcement["authorId"]) == (club["id"], "alice")
    for user_id in ("alice", "bob"):
        assert types_for(outcome, user_id) == ["organization.announcement", "notification.new"]
        kinds = by_user(outcome)[user_id][1][1]["notification"]["kind"]
        assert kinds == "ANNOUNCEMENT"
    assert "carol" not in by_user(outcome)
    assert domain.announcements(bob, club["id"]) == [announcement]
    with pytest.raises(Forbidden):
        domain.announcements(carol, club["id"])
    with pytest.raises(BadRequest):
        domain.post_announcement(alice, club["id"], "", "x")


def test_a_refused_mutation_leaves_no_state_and_no_events(domain, store, alice, club, monkeypatch):
    """A failure after events were appended rolls back the change and the events."""
    from gateway.domain import notifications

    heads = {u: store.stream_position(u).seq for u in ("alice", "bob")}

    def failing_notify(*args, **kwargs):
        raise Forbidden("refused late")

    monkeypatch.setattr("gateway.domain.orgs.notify", failing_notify)
    with pytest.raises(Forbidden):
        domain.set_member_role(alice, club["id"], "bob", "MEMBER")
    assert notifications.notify is not failing_notify
    assert {u: store.stream_position(u).seq for u in heads} == heads
    assert domain.organization(alice, club["id"])["members"] == [
        {"userId": "alice", "role": "OWNER"}
    ]
