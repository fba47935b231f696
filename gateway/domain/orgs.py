"""Organizations: members with roles, and announcements to every member.

Members all live in the tenant of the organization's creator; an
organization of another tenant answers as if it did not exist.
"""

from __future__ import annotations

import json
from typing import Any

from gateway.domain._change import Change, check_limit, require_text
from gateway.domain.notifications import notify
from gateway.domain.viewer import Viewer, record_id
from gateway.errors import BadRequest, Conflict, Forbidden, NotFound
from gateway.store import Row, Tx

__all__ = [
    "ORG_ROLES",
    "announcement_shape",
    "announcements",
    "create_organization",
    "organization",
    "organization_view",
    "post_announcement",
    "set_member_role",
]

ORG_ROLES = ("OWNER", "ADMIN", "MEMBER")
MANAGERS = ("OWNER", "ADMIN")


def _role(tx: Tx, org_id: str, user_id: str) -> str | None:
    membership = tx.get_membership(org_id, user_id)
    return membership["role"] if membership is not None else None


def _org(tx: Tx, viewer: Viewer, org_id: Any) -> tuple[Row, str | None]:
    """The organization and the viewer's role in it (None: not a member); one of
    another tenant is NOT_FOUND, exactly like an unknown id."""
    row = tx.get_organization(org_id) if isinstance(org_id, str) and org_id else None
    if row is None:
        raise NotFound(f"organization {org_id} not found")
    role = _role(tx, row["id"], viewer.user_id)
    if role is None:
        members = tx.list_memberships(row["id"])
        if not viewer.reaches(row["id"], members[0]["user_id"] if members else None):
            raise NotFound(f"organization {org_id} not found")
    return row, role


def _member_org(tx: Tx, viewer: Viewer, org_id: Any) -> tuple[Row, str]:
    org, role = _org(tx, viewer, org_id)
    if role is None:
        raise Forbidden("only members can see this organization")
    return org, role


def organization_view(tx: Tx, org: Row, user_id: str) -> dict[str, Any]:
    """An organization as the GraphQL `Organization` type, as `user_id` sees it."""
    members = tx.list_memberships(org["id"])
    return {
        "id": org["id"],
        "name": org["name"],
        "members": [{"userId": m["user_id"], "role": m["role"]} for m in members],
        "viewerRole": next((m["role"] for m in members if m["user_id"] == user_id), None),
    }


def announcement_shape(row: Row) -> dict[str, Any]:
    return {
        "id": row["id"],
        "orgId": row["org_id"],
        "authorId": row["author_id"],
        "title": row["title"],
        "body": row["body"],
        "createdAt": row["created_at"],
    }


def _managers(tx: Tx, org_id: str) -> list[str]:
    return [m["user_id"] for m in tx.list_memberships(org_id) if m["role"] in MANAGERS]


# -- queries -----------------------------------------------------------------


def organization(tx: Tx, viewer: Viewer, org_id: str) -> dict[str, Any]:
    org, _ = _member_org(tx, viewer, org_id)
    return organization_view(tx, org, viewer.user_id)


def announcements(tx: Tx, viewer: Viewer, org_id: str, first: int) -> list[dict[str, Any]]:
    org, _ = _member_org(tx, viewer, org_id)
    first = check_limit(first, "first")
    return [announcement_shape(row) for row in tx.list_announcements(org["id"], first)]


# -- mutations ---------------------------------------------------------------


def _member_updated(change: Change, org_id: str, user_id: str, role: str | None) -> None:
    payload = {"orgId": org_id, "userId": user_id, "role": role}
    for recipient in dict.fromkeys([user_id, *_managers(change.tx, org_id)]):
        change.emit(recipient, "organization.member.updated", payload)


def create_organization(change: Change, viewer: Viewer, name: str) -> dict[str, Any]:
    require_text(name, "name", max_length=200)
    org = {"id": record_id("org", viewer.user_id), "name": name, "created_at": change.stamp}
    change.tx.insert_organization(org)
    change.tx.put_membership(org["id"], viewer.user_id, "OWNER", change.stamp)
    _member_updated(change, org["id"], viewer.user_id, "OWNER")
    return organization_view(change.tx, org, viewer.user_id)


def set_member_role(
    change: Change, viewer: Viewer, org_id: str, user_id: str, role: str | None
) -> dict[str, Any]:
    """Add, change or (with role None) remove a member; owners and admins only.

    Admins manage admins and members; only owners grant, change or remove
    an owner, and the last owner stays.
    """
    tx = change.tx
    org, mine = _org(tx, viewer, org_id)
    if mine not in MANAGERS:
        raise Forbidden("only owners and admins manage members")
    require_text(user_id, "userId", max_length=200)
    user_id = viewer.qualify(user_id)
    if role is not None and role not in ORG_ROLES:
        raise BadRequest(f"unknown role {role!r}", path="role")
    current = _role(tx, org["id"], user_id)
    if mine != "OWNER" and "OWNER" in (current, role):
        raise Forbidden("only owners manage owners")
    if current == role:
        return organization_view(tx, org, viewer.user_id)
    if current == "OWNER":
        owners = [m for m in tx.list_memberships(org["id"]) if m["role"] == "OWNER"]
        if len(owners) <= 1:
            raise Conflict("an organization keeps at least one owner")
    if role is None:
        tx.delete_membership(org["id"], user_id)
        text = f"You were removed from {org['name']}"
    else:
        tx.put_membership(org["id"], user_id, role, change.stamp)
        text = f"Your role in {org['name']} is now {role}"
    _member_updated(change, org["id"], user_id, role)
    notify(change, user_id, "ROLE_CHANGED", text, json.dumps({"orgId": org["id"], "role": role}))
    return organization_view(tx, org, viewer.user_id)


def post_announcement(
    change: Change, viewer: Viewer, org_id: str, title: str, body: str
) -> dict[str, Any]:
    tx = change.tx
    org, mine = _org(tx, viewer, org_id)
    if mine not in MANAGERS:
        raise Forbidden("only owners and admins post announcements")
    require_text(title, "title", max_length=500)
    require_text(body, "body")
    row = tx.insert_announcement(
        {
            "id": record_id("ann", viewer.user_id),
            "org_id": org["id"],
            "author_id": viewer.user_id,
            "title": title,
            "body": body,
            "created_at": change.stamp,
        }
    )
    announcement = announcement_shape(row)
    data = json.dumps({"orgId": org["id"], "announcementId": row["id"]})
    for member in tx.list_memberships(org["id"]):
        change.emit(member["user_id"], "organization.announcement", {"announcement": announcement})
        notify(change, member["user_id"], "ANNOUNCEMENT", f"{org['name']}: {title}", data)
    return announcement
