"""The hub keeps an ephemeral event with a tenant inside that tenant."""

from __future__ import annotations

from gateway.events import Ephemeral
from gateway.ws.hub import Hub

from .test_hub import Member


def connected(hub: Hub, *user_ids: str) -> dict[str, Member]:
    members = {user_id: Member(user_id) for user_id in user_ids}
    for member in members.values():
        hub.register(member)
    return members


def received(members: dict[str, Member]) -> set[str]:
    return {user_id for user_id, member in members.items() if member.types()}


USERS = ("acme/alice", "acme/bob", "acme-corp/bob", "globex/bob", "bob")


async def test_a_tenant_broadcast_reaches_only_that_tenants_users():
    hub = Hub()
    members = connected(hub, *USERS)
    hub.deliver_ephemeral(Ephemeral("system.notice", {}, broadcast=True, tenant="acme"))
    assert received(members) == {"acme/alice", "acme/bob"}


async def test_a_broadcast_without_a_tenant_reaches_everyone():
    hub = Hub()
    members = connected(hub, *USERS)
    hub.deliver_ephemeral(Ephemeral("system.notice", {}, broadcast=True))
    assert received(members) == set(USERS)


async def test_a_tenant_also_bounds_topic_and_user_audiences():
    hub = Hub()
    members = connected(hub, *USERS)
    for member in members.values():
        hub.subscribe(member, "event:x")
    hub.deliver_ephemeral(Ephemeral("event.counters.updated", {}, topic="event:x", tenant="acme"))
    assert received(members) == {"acme/alice", "acme/bob"}
    hub.deliver_ephemeral(
        Ephemeral("system.notice", {}, users=("acme/bob", "globex/bob"), tenant="globex")
    )
    assert received(members) == {"globex/bob"}
