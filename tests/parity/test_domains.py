"""Every domain has a model: organization, activity and presence keys, what each path's
state shows of them, their invariants, and the differ's reading of a missing update."""

from __future__ import annotations

import pytest

from parity.differ import Classification, Comparator
from parity.invariants import (
    check_domain_invariants,
    check_feed_forward,
    check_org_consistency,
    check_presence_values,
)
from parity.model import (
    DOMAINS,
    FeedItem,
    Observation,
    OrgState,
    UserState,
    domain_of,
    flatten,
    newest_since,
    observe,
)
from parity.state import apply_event, apply_presence, state_from_graphql, state_query
from parity.stats import needed_samples, wilson_upper

C = Classification
ME = "u1"


def test_every_rollout_domain_has_a_model():
    from gateway.rollout import DOMAINS as ROLLOUT_DOMAINS

    assert set(DOMAINS) == set(ROLLOUT_DOMAINS)
    for domain in DOMAINS:
        assert flatten(UserState(ME), domain) == {}


def test_organization_keys_follow_the_contracts_audience():
    state = UserState(
        ME,
        orgs={
            "o1": OrgState("OWNER", (("u1", "OWNER"), ("u2", "MEMBER")), "ann2"),
            "o2": OrgState("MEMBER", None, None),
            "o3": OrgState(None, None, None),
        },
    )
    assert flatten(state, "organization") == {
        "organization:o1.role": "OWNER",
        "organization:o1.announcement": "ann2",
        "organization:o1.members": (("u1", "OWNER"), ("u2", "MEMBER")),
        "organization:o2.role": "MEMBER",
        "organization:o2.announcement": None,
        "organization:o3.role": None,
    }
    assert {domain_of(k) for k in flatten(state, "organization")} == {"organization"}


def test_activity_keys_are_the_newest_item_since_each_follow():
    items = [
        FeedItem("i4", "u3", "2026-01-04T00:00:00.000Z"),
        FeedItem("i3", ME, "2026-01-03T00:00:00.000Z"),
        FeedItem("i2", "u2", "2026-01-02T00:00:00.000Z"),
        FeedItem("i1", "u2", "2026-01-01T00:00:00.000Z"),
        FeedItem("i0", "u3", "2026-01-01T00:00:00.000Z"),
    ]
    since = {"u2": "2026-01-01T12:00:00.000Z", "u3": "2026-01-05T00:00:00.000Z"}
    latest = newest_since(items, since, ME)
    assert latest == {"u2": items[2]}  # u3's items all predate the follow; own items never
    state = UserState(ME, followed_since=since, feed_latest=latest)
    assert flatten(state, "activity") == {"activity.author:u2.latest": "i2"}
    assert domain_of("activity.author:u2.latest") == "activity"
    assert flatten(UserState(ME, feed_latest=latest), "activity") == {}  # the feed not held


def test_presence_keys_carry_no_version():
    state = UserState(ME, presence={"u2": "AWAY"})
    assert flatten(state, "presence") == {"presence:u2.status": "AWAY"}
    rows = observe("push", state, domains=["presence", "notification"], version=9, observed_at=1)
    assert [(o.key, o.version) for o in rows] == [("presence:u2.status", None)]
    assert domain_of("presence:u2.status") == "presence"
    moved = apply_presence(state, {"userId": "u2", "status": "ONLINE"})
    assert moved.presence == {"u2": "ONLINE"}
    assert apply_presence(state, {"userId": "u9", "status": "ONLINE"}) is state


def _org(role="OWNER", members=(("u1", "OWNER"),), announcement=None):
    return UserState(ME, orgs={"o1": OrgState(role, members, announcement)})


def test_member_updates_move_roles_and_members():
    state, _ = apply_event(
        _org(),
        "organization.member.updated",
        {"orgId": "o1", "userId": "u2", "role": "MEMBER"},
        watched_events=(),
    )
    assert state.orgs["o1"].members == (("u1", "OWNER"), ("u2", "MEMBER"))
    state, _ = apply_event(
        state,
        "organization.member.updated",
        {"orgId": "o1", "userId": "u2", "role": None},
        watched_events=(),
    )
    assert state.orgs["o1"].members == (("u1", "OWNER"),)
    # A plain member is not told of every change: its members are unknown.
    member = _org("MEMBER", None)
    state, _ = apply_event(
        member,
        "organization.member.updated",
        {"orgId": "o1", "userId": ME, "role": "ADMIN"},
        watched_events=(),
    )
    assert state.orgs["o1"].role == "ADMIN" and state.orgs["o1"].members is None
    # Unknown organizations change nothing.
    same, _ = apply_event(
        member,
        "organization.member.updated",
        {"orgId": "o9", "userId": ME, "role": "ADMIN"},
        watched_events=(),
    )
    assert same is member


def test_announcements_and_feed_items_reach_the_state():
    state, _ = apply_event(
        _org("MEMBER", None),
        "organization.announcement",
        {"announcement": {"id": "ann1", "orgId": "o1"}},
        watched_events=(),
    )
    assert state.orgs["o1"].announcement == "ann1"
    feed = UserState(ME, followed_since={"u2": "2026-01-01T00:00:00.000Z"})
    item = {"id": "i1", "authorId": "u2", "text": "t", "createdAt": "2026-01-02T00:00:00.000Z"}
    state, _ = apply_event(feed, "activity.feed.item", {"item": item}, watched_events=())
    assert flatten(state, "activity") == {"activity.author:u2.latest": "i1"}
    stranger = {**item, "authorId": "u9"}
    same, _ = apply_event(feed, "activity.feed.item", {"item": stranger}, watched_events=())
    assert same is feed


def test_an_accepted_follow_starts_the_authors_feed():
    feed = UserState(ME, followed_since={})
    request = {
        "id": "f1",
        "fromUserId": ME,
        "toUserId": "u2",
        "status": "ACCEPTED",
        "updatedAt": "2026-01-01T00:00:00.000Z",
    }
    state, _ = apply_event(feed, "follow.request.updated", {"request": request}, watched_events=())
    assert state.followed_since == {"u2": "2026-01-01T00:00:00.000Z"}


def test_the_state_query_reads_the_new_domains():
    query, variables = state_query(
        ["organization", "activity", "presence"], (), orgs=("o1",), presence_of=("u2",)
    )
    assert "o0: organization(id: $o0)" in query and "a0: announcements(orgId: $o0" in query
    assert "feed(first:" in query and "sentFollowRequests" in query
    assert variables == {"o0": "o1", "pu": ["u2"]}
    data = {
        "realtimeCursor": {"epoch": "e", "seq": 4},
        "o0": {"viewerRole": "ADMIN", "members": [{"userId": ME, "role": "ADMIN"}]},
        "a0": [{"id": "ann3"}],
        "feed": [{"id": "i1", "authorId": "u2", "createdAt": "2026-01-02T00:00:00.000Z"}],
        "sentFollowRequests": [
            {"toUserId": "u2", "status": "ACCEPTED", "updatedAt": "2026-01-01T00:00:00.000Z"},
            {"toUserId": "u3", "status": "PENDING", "updatedAt": "2026-01-01T00:00:00.000Z"},
        ],
        "presence": [{"userId": "u2", "status": "ONLINE"}],
    }
    state, epoch, seq = state_from_graphql(
        ME, data, ["organization", "activity", "presence"], (), ("o1",), ("u2",)
    )
    assert (epoch, seq) == ("e", 4)
    assert state.orgs["o1"] == OrgState("ADMIN", ((ME, "ADMIN"),), "ann3")
    assert flatten(state, "activity") == {"activity.author:u2.latest": "i1"}
    assert state.presence == {"u2": "ONLINE"}
    # A response without the new domains' fields leaves them empty.
    bare, _, _ = state_from_graphql(ME, {"realtimeCursor": data["realtimeCursor"]}, DOMAINS[4:], ())
    assert all(flatten(bare, d) == {} for d in DOMAINS[4:])


def ob(path, key, value, version, t, user=ME):
    return Observation(path, user, domain_of(key), key, value, version, t)


def test_org_invariants():
    snap = [
        ob("poll", "organization:o1.role", "ADMIN", 3, 1.0),
        ob("poll", "organization:o1.members", ((ME, "MEMBER"), ("u2", "OWNER")), 3, 1.0),
        ob("push", "organization:o1.role", "ADMIN", 3, 1.0),
        ob("push", "organization:o1.members", ((ME, "ADMIN"),), 3, 1.0),
    ]
    found = {(v.invariant, v.path) for v in check_org_consistency(snap)}
    assert found == {("org-role", "poll"), ("org-owner", "push")}


def test_feed_and_presence_invariants():
    rows = [
        ob("push", "activity.author:u2.latest", "i1", 1, 1.0),
        ob("push", "activity.author:u2.latest", "i2", 2, 2.0),
        ob("push", "activity.author:u2.latest", "i1", 3, 3.0),
        ob("poll", "presence:u2.status", "SLEEPING", None, 1.0),
        ob("poll", "presence:u2.status", "AWAY", None, 2.0),
    ]
    assert [v.invariant for v in check_feed_forward(rows)] == ["feed-regress"]
    assert [v.invariant for v in check_presence_values(rows)] == ["presence-status"]
    assert len(check_domain_invariants(rows)) == 2


def test_a_change_push_never_got_is_missing_push_not_diverged():
    # omit_push: the event is never produced, so push reaches every version with
    # the previous value; a wrong value (skew) stays DIVERGED.
    key = "notification.unread"
    omitted = [
        ob("push", key, 1, 1, 1.0),
        ob("poll", key, 1, 1, 1.5),
        ob("push", key, 1, 2, 2.0),  # another domain's event: push at version 2, still 1
        ob("poll", key, 2, 2, 2.5),
    ]
    result = Comparator(5.0).compare(omitted, end=100.0)
    assert [c.classification for c in result.comparisons] == [C.MATCH, C.MISSING_PUSH]
    skewed = [*omitted[:2], ob("push", key, 3, 2, 2.0), ob("poll", key, 2, 2, 2.5)]
    result = Comparator(5.0).compare(skewed, end=100.0)
    assert [c.classification for c in result.comparisons] == [C.MATCH, C.DIVERGED]


def test_an_unversioned_value_before_the_candidate_started_is_not_compared():
    key = "presence:u2.status"
    rows = [
        ob("poll", key, "OFFLINE", None, 1.0),
        ob("push", key, "ONLINE", None, 1.2),
        ob("poll", key, "ONLINE", None, 1.4),
    ]
    result = Comparator(0.1).compare(rows, end=100.0)
    assert [c.classification for c in result.comparisons] == [C.MATCH]
    assert result.for_domain("presence").unaligned == 1


@pytest.mark.parametrize("threshold", [0.005, 0.01, 0.02])
def test_needed_samples_is_the_least_n_that_can_pass(threshold):
    n = needed_samples(threshold)
    assert wilson_upper(0, n) < threshold <= wilson_upper(0, n - 1)
    assert needed_samples(threshold, min_samples=10_000) == 10_000
