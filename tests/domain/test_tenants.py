"""Tenants: every id a request names is resolved inside the viewer's tenant.

A record made by a tenant's user has an id naming that tenant; a viewer of
another tenant, or outside any tenant, is answered as if it did not exist
(NOT_FOUND, null, or a refused subscription, like an unknown id), and a
non-participant of the record's own tenant keeps getting FORBIDDEN.
"""

from __future__ import annotations

import pytest

from gateway.domain import Viewer
from gateway.domain.viewer import record_id, tenant_of
from gateway.errors import Forbidden, NotFound

from .conftest import by_user


def tenant_user(tenant: str | None, sub: str, *, admin: bool = False) -> Viewer:
    """The viewer a token with this `sub` and `tenant` claim authenticates as."""
    scopes = frozenset({"admin"}) if admin else frozenset()
    return Viewer(f"{tenant}/{sub}" if tenant else sub, scopes, tenant)


@pytest.fixture
def acme_alice() -> Viewer:
    return tenant_user("acme", "alice")


@pytest.fixture
def acme_bob() -> Viewer:
    return tenant_user("acme", "bob")


@pytest.fixture
def acme_carol() -> Viewer:
    return tenant_user("acme", "carol")


@pytest.fixture
def outsiders() -> list[Viewer]:
    """Users who must never reach acme's records: globex's bob and the tenant-less bob."""
    return [tenant_user("globex", "bob"), tenant_user(None, "bob")]


# -- ids ---------------------------------------------------------------------


def test_tenant_of_and_record_ids():
    assert tenant_of("acme/bob") == "acme" and tenant_of("bob") is None
    assert tenant_of("acme/gth_1") == "acme" and tenant_of(None) is None
    assert record_id("gth", "acme/bob").startswith("acme/gth_")
    assert record_id("gth", "bob").startswith("gth_") and "/" not in record_id("gth", "bob")
    assert Viewer("bob", tenant="").tenant is None  # an empty claim is no tenant


def test_records_made_inside_a_tenant_carry_it_in_their_ids(domain, acme_alice, acme_bob, alice):
    admin = tenant_user("acme", "ops", admin=True)
    made = {
        "event": domain.create_event(acme_alice, "Party", "2026-03-01T18:00:00Z").value,
        "conversation": domain.create_conversation(acme_alice, ["bob"]).value,
        "organization": domain.create_organization(acme_alice, "Club").value,
        "follow request": domain.request_follow(acme_alice, "bob").value,
        "feed item": domain.post_feed_item(acme_alice, "hello").value,
        "notification": domain.create_notification(admin, "bob", "K", "t").value,
    }
    made["message"] = domain.send_chat_message(acme_bob, made["conversation"]["id"], "hi").value
    made["announcement"] = domain.post_announcement(
        acme_alice, made["organization"]["id"], "T", "B"
    ).value
    for kind, record in made.items():
        assert record["id"].startswith("acme/"), kind
    # Outside any tenant, ids stay bare.
    assert "/" not in domain.create_event(alice, "Party", "2026-03-01T18:00:00Z").value["id"]


# -- events ------------------------------------------------------------------


@pytest.fixture
def acme_party(domain, acme_alice):
    return domain.create_event(acme_alice, "Acme party", "2026-03-01T18:00:00Z").value


def test_a_foreign_event_reads_as_missing(domain, acme_bob, acme_party, outsiders):
    assert domain.event(acme_bob, acme_party["id"])["title"] == "Acme party"
    for outsider in outsiders:
        assert domain.event(outsider, acme_party["id"]) is None
        assert domain.event(outsider, "gth_unknown") is None


def test_a_foreign_event_refuses_rsvp_save_and_check_in_as_missing(
    domain, store, acme_alice, acme_party, outsiders
):
    for outsider in outsiders:
        for call, *args in (
            (domain.set_rsvp, "GOING"),
            (domain.set_event_saved, True),
            (domain.check_in, "carol"),
        ):
            with pytest.raises(NotFound):
                call(outsider, acme_party["id"], *args)
        assert store.stream_position(outsider.user_id).seq == 0
    assert domain.event(acme_alice, acme_party["id"])["rsvpCounts"] == {
        "going": 0,
        "interested": 0,
    }
    assert store.stream_position(acme_alice.user_id).seq == 0


def test_a_host_checks_in_only_users_of_their_tenant(domain, acme_alice, acme_party):
    checked = domain.check_in(acme_alice, acme_party["id"], "bob")  # acme's bob
    assert checked.value["checkedInCount"] == 1
    with pytest.raises(Forbidden):
        domain.check_in(acme_alice, acme_party["id"], "globex/bob")


def test_a_foreign_event_topic_is_refused_like_an_unknown_one(
    domain, acme_bob, acme_party, outsiders
):
    assert domain.can_subscribe(acme_bob, f"event:{acme_party['id']}")
    for outsider in outsiders:
        assert not domain.can_subscribe(outsider, f"event:{acme_party['id']}")
        assert not domain.can_subscribe(outsider, "event:gth_unknown")


def test_an_event_made_before_ids_carried_tenants_belongs_to_its_hosts_tenant(
    domain, store, acme_bob, outsiders
):
    with store.transaction() as tx:
        tx.insert_gathering(
            {
                "id": "gth_legacy",
                "title": "Old acme party",
                "host_id": "acme/alice",
                "starts_at": "2027-01-01T00:00:00.000Z",
                "created_at": "2026-01-01T00:00:00.000Z",
            }
        )
        # RSVPs and saves made across tenants before this rule existed.
        for outsider in outsiders:
            tx.put_rsvp(
                {
                    "event_id": "gth_legacy",
                    "user_id": outsider.user_id,
                    "status": "GOING",
                    "updated_at": "2026-01-01T00:00:00.000Z",
                }
            )
            tx.set_saved("gth_legacy", outsider.user_id, True, "2026-01-01T00:00:00.000Z")
    assert domain.event(acme_bob, "gth_legacy")["hostId"] == "acme/alice"
    assert domain.can_subscribe(acme_bob, "event:gth_legacy")
    for outsider in outsiders:
        assert domain.event(outsider, "gth_legacy") is None
        assert not domain.can_subscribe(outsider, "event:gth_legacy")
        with pytest.raises(NotFound):
            domain.set_rsvp(outsider, "gth_legacy", "INTERESTED")
        assert domain.my_upcoming_rsvps(outsider) == []
        assert domain.saved_events(outsider) == []


def test_a_tenant_less_event_is_not_visible_inside_a_tenant(domain, alice, acme_bob):
    party = domain.create_event(alice, "Open party", "2026-03-01T18:00:00Z").value
    assert domain.event(Viewer("bob"), party["id"])["title"] == "Open party"
    assert domain.event(acme_bob, party["id"]) is None
    assert not domain.can_subscribe(acme_bob, f"event:{party['id']}")
    with pytest.raises(NotFound):
        domain.set_rsvp(acme_bob, party["id"], "GOING")


# -- chat --------------------------------------------------------------------


@pytest.fixture
def acme_chat(domain, acme_alice, acme_bob):
    conversation = domain.create_conversation(acme_alice, ["bob"]).value
    message = domain.send_chat_message(acme_alice, conversation["id"], "secret plans").value
    return conversation, message


def test_create_conversation_qualifies_participants_into_the_tenant(domain, acme_alice):
    conversation = domain.create_conversation(acme_alice, ["bob", "acme/carol"]).value
    assert conversation["participantIds"] == ["acme/alice", "acme/bob", "acme/carol"]
    for foreign in (["globex/bob"], ["acme/bob", "globex/bob"]):
        with pytest.raises(Forbidden):
            domain.create_conversation(acme_alice, foreign)
    with pytest.raises(Forbidden):
        domain.create_conversation(Viewer("bob"), ["acme/alice"])


def test_a_foreign_conversation_is_not_found_on_every_path(domain, store, acme_chat, outsiders):
    conversation, message = acme_chat
    cid = conversation["id"]
    for outsider in outsiders:
        for call, *args in (
            (domain.conversation,),
            (domain.messages,),
            (domain.send_chat_message, "let me in"),
            (domain.mark_conversation_read,),
            (domain.mark_delivered, [message["id"]]),
            (domain.typing, "started"),
            (domain.leave_conversation,),
        ):
            with pytest.raises(NotFound):
                call(outsider, cid, *args)
        assert not domain.can_subscribe(outsider, f"conversation:{cid}")
        assert domain.conversations(outsider) == []
        assert store.stream_position(outsider.user_id).seq == 0
    assert [m["body"] for m in domain.messages(Viewer("acme/bob", tenant="acme"), cid)] == [
        "secret plans"
    ]


def test_a_non_participant_of_the_same_tenant_is_still_forbidden(domain, acme_chat, acme_carol):
    conversation, _ = acme_chat
    with pytest.raises(Forbidden):
        domain.conversation(acme_carol, conversation["id"])
    with pytest.raises(Forbidden):
        domain.send_chat_message(acme_carol, conversation["id"], "hi")
    assert not domain.can_subscribe(acme_carol, f"conversation:{conversation['id']}")


def test_a_conversation_made_before_ids_carried_tenants_belongs_to_its_participants(
    domain, store, acme_carol, outsiders
):
    with store.transaction() as tx:
        tx.insert_conversation(
            {
                "id": "cnv_legacy",
                "created_at": "2026-01-01T00:00:00.000Z",
                "updated_at": "2026-01-01T00:00:00.000Z",
                "last_message_id": None,
            },
            ["acme/alice", "acme/bob"],
        )
    assert domain.conversation(Viewer("acme/bob", tenant="acme"), "cnv_legacy")["id"]
    with pytest.raises(Forbidden):
        domain.conversation(acme_carol, "cnv_legacy")
    for outsider in outsiders:
        with pytest.raises(NotFound):
            domain.conversation(outsider, "cnv_legacy")


# -- follows -----------------------------------------------------------------


def test_follows_stay_inside_the_tenant(domain, acme_alice, acme_bob, acme_carol, outsiders):
    request = domain.request_follow(acme_alice, "bob").value
    assert (request["fromUserId"], request["toUserId"]) == ("acme/alice", "acme/bob")
    with pytest.raises(Forbidden):
        domain.request_follow(acme_alice, "globex/bob")
    with pytest.raises(Forbidden):
        domain.request_follow(Viewer("bob"), "acme/alice")
    for outsider in outsiders:
        with pytest.raises(NotFound):
            domain.respond_follow_request(outsider, request["id"], True)
        assert domain.follow_requests(outsider) == []
    with pytest.raises(Forbidden):
        domain.respond_follow_request(acme_carol, request["id"], True)
    assert domain.respond_follow_request(acme_bob, request["id"], True).value["status"] == (
        "ACCEPTED"
    )


# -- organizations -------------------------------------------------------------


@pytest.fixture
def acme_club(domain, acme_alice):
    return domain.create_organization(acme_alice, "Acme club").value


def test_a_foreign_organization_is_not_found_on_every_path(domain, store, acme_club, outsiders):
    oid = acme_club["id"]
    for outsider in outsiders:
        for call, *args in (
            (domain.organization,),
            (domain.announcements,),
            (domain.set_member_role, "carol", "MEMBER"),
            (domain.post_announcement, "T", "B"),
        ):
            with pytest.raises(NotFound):
                call(outsider, oid, *args)
        assert store.stream_position(outsider.user_id).seq == 0


def test_organizations_keep_members_inside_the_tenant(domain, acme_alice, acme_carol, acme_club):
    with pytest.raises(Forbidden):
        domain.organization(acme_carol, acme_club["id"])  # same tenant, not a member
    added = domain.set_member_role(acme_alice, acme_club["id"], "carol", "MEMBER").value
    assert {"userId": "acme/carol", "role": "MEMBER"} in added["members"]
    with pytest.raises(Forbidden):
        domain.set_member_role(acme_alice, acme_club["id"], "globex/bob", "MEMBER")


def test_an_organization_made_before_ids_carried_tenants_belongs_to_its_members(
    domain, store, acme_carol, outsiders
):
    with store.transaction() as tx:
        tx.insert_organization(
            {"id": "org_legacy", "name": "Old club", "created_at": "2026-01-01T00:00:00.000Z"}
        )
        tx.put_membership("org_legacy", "acme/alice", "OWNER", "2026-01-01T00:00:00.000Z")
    assert domain.organization(Viewer("acme/alice", tenant="acme"), "org_legacy")["name"]
    with pytest.raises(Forbidden):
        domain.organization(acme_carol, "org_legacy")
    for outsider in outsiders:
        with pytest.raises(NotFound):
            domain.organization(outsider, "org_legacy")


# -- notifications, feed and presence ------------------------------------------


def test_a_tenant_admin_notifies_only_its_own_tenant(domain, store):
    acme_admin = tenant_user("acme", "ops", admin=True)
    outcome = domain.create_notification(acme_admin, "bob", "K", "hello")
    assert list(by_user(outcome)) == ["acme/bob"]
    with pytest.raises(Forbidden):
        domain.create_notification(acme_admin, "globex/bob", "K", "hello")
    with pytest.raises(Forbidden):
        domain.create_notification(tenant_user(None, "ops", admin=True), "acme/bob", "K", "x")
    assert store.stream_position("bob").seq == 0


def test_foreign_notification_ids_mark_nothing(domain, acme_bob, outsiders):
    admin = tenant_user("acme", "ops", admin=True)
    note = domain.create_notification(admin, "bob", "K", "hello").value
    for outsider in outsiders:
        outcome = domain.mark_notifications_read(outsider, [note["id"]])
        assert outcome.value == 0 and outcome.events == ()
    assert domain.unread_notification_count(acme_bob) == 1


def test_the_feed_never_crosses_tenants(domain, acme_alice, acme_bob, outsiders):
    request = domain.request_follow(acme_bob, "alice").value
    domain.respond_follow_request(acme_alice, request["id"], True)
    posted = domain.post_feed_item(acme_alice, "acme news")
    assert list(by_user(posted)) == ["acme/bob"]
    assert [item["text"] for item in domain.feed(acme_bob)] == ["acme news"]
    for outsider in outsiders:
        assert domain.feed(outsider) == []


def test_presence_never_crosses_tenants(domain, acme_alice, acme_bob, outsiders):
    domain.create_conversation(acme_alice, ["bob"])
    domain.set_presence(acme_bob, "ONLINE")
    domain.set_presence(Viewer("bob"), "ONLINE")
    (seen,) = domain.presence(acme_alice, ["bob"])
    assert (seen["userId"], seen["status"]) == ("acme/bob", "ONLINE")
    assert domain.can_subscribe(acme_alice, "presence:acme/bob")
    # The topic names the qualified id: `presence:bob` is the tenant-less bob.
    assert not domain.can_subscribe(acme_alice, "presence:bob")
    assert not domain.can_subscribe(acme_alice, "presence:globex/bob")
    with pytest.raises(Forbidden):
        domain.presence(acme_alice, ["globex/bob"])
    for outsider in outsiders:
        assert domain.can_subscribe(outsider, f"presence:{outsider.user_id}")  # oneself
        assert not domain.can_subscribe(outsider, "presence:acme/alice")
        assert not domain.can_subscribe(outsider, "presence:acme/bob")


# -- notices -------------------------------------------------------------------


def test_a_tenant_admins_notice_stays_in_its_tenant(domain):
    (notice,) = domain.broadcast_notice(
        tenant_user("acme", "ops", admin=True), "acme only"
    ).ephemeral
    assert notice.broadcast and notice.tenant == "acme"
    with pytest.raises(Forbidden):
        domain.broadcast_notice(tenant_user("acme", "bob"), "not an admin")


def test_a_global_admins_notice_reaches_everyone(domain):
    operator = tenant_user(None, "ops", admin=True)
    (notice,) = domain.broadcast_notice(operator, "maintenance at noon", "warning").ephemeral
    assert notice.broadcast and notice.tenant is None
    assert notice.payload["text"] == "maintenance at noon"
