"""Follows: requests between users of one tenant, and the accepted follows they become."""

from __future__ import annotations

import json
from typing import Any

from gateway.domain._change import Change, require_text
from gateway.domain.notifications import notify
from gateway.domain.viewer import Viewer, record_id
from gateway.errors import BadRequest, Conflict, Forbidden, NotFound
from gateway.store import Row, Tx

__all__ = [
    "FOLLOW_STATUSES",
    "followers",
    "following",
    "follows_either_way",
    "incoming",
    "outgoing",
    "request_follow",
    "request_shape",
    "respond",
]

FOLLOW_STATUSES = ("PENDING", "ACCEPTED", "REJECTED")


def request_shape(row: Row) -> dict[str, Any]:
    """A stored request as the GraphQL `FollowRequest` type."""
    return {
        "id": row["id"],
        "fromUserId": row["from_user_id"],
        "toUserId": row["to_user_id"],
        "status": row["status"],
        "createdAt": row["created_at"],
        "updatedAt": row["updated_at"],
    }


def _display_name(tx: Tx, viewer: Viewer) -> str:
    user = tx.get_user(viewer.user_id)
    return (user or {}).get("name") or viewer.name or viewer.user_id


def followers(tx: Tx, user_id: str) -> list[str]:
    """Users whose follow of `user_id` was accepted."""
    return sorted(row["from_user_id"] for row in tx.follow_requests_to(user_id, "ACCEPTED"))


def following(tx: Tx, user_id: str) -> list[str]:
    """Users `user_id` follows."""
    return sorted(row["to_user_id"] for row in tx.follow_requests_from(user_id, "ACCEPTED"))


def follows_either_way(tx: Tx, user_a: str, user_b: str) -> bool:
    for source, target in ((user_a, user_b), (user_b, user_a)):
        row = tx.find_follow_request(source, target)
        if row is not None and row["status"] == "ACCEPTED":
            return True
    return False


def incoming(tx: Tx, viewer: Viewer, status: str) -> list[dict[str, Any]]:
    if status not in FOLLOW_STATUSES:
        raise BadRequest(f"unknown follow status {status!r}", path="status")
    return [request_shape(row) for row in tx.follow_requests_to(viewer.user_id, status)]


def outgoing(tx: Tx, viewer: Viewer) -> list[dict[str, Any]]:
    return [request_shape(row) for row in tx.follow_requests_from(viewer.user_id)]


def _tell_both(change: Change, type: str, request: dict[str, Any]) -> None:
    for user_id in dict.fromkeys((request["toUserId"], request["fromUserId"])):
        change.emit(user_id, type, {"request": request})


def request_follow(change: Change, viewer: Viewer, user_id: str) -> dict[str, Any]:
    """Ask to follow a user; asking again while pending or accepted changes nothing."""
    tx = change.tx
    require_text(user_id, "userId", max_length=200)
    user_id = viewer.qualify(user_id)
    if user_id == viewer.user_id:
        raise BadRequest("you cannot follow yourself", path="userId")
    existing = tx.find_follow_request(viewer.user_id, user_id)
    if existing is not None and existing["status"] in ("PENDING", "ACCEPTED"):
        return request_shape(existing)
    if existing is None:
        row = {
            "id": record_id("flw", viewer.user_id),
            "from_user_id": viewer.user_id,
            "to_user_id": user_id,
            "status": "PENDING",
            "created_at": change.stamp,
            "updated_at": change.stamp,
        }
        tx.insert_follow_request(row)
    else:
        tx.update_follow_request(existing["id"], "PENDING", change.stamp)
        row = {**existing, "status": "PENDING", "updated_at": change.stamp}
    request = request_shape(row)
    _tell_both(change, "follow.request.created", request)
    notify(
        change,
        user_id,
        "FOLLOW_REQUEST",
        f"{_display_name(tx, viewer)} wants to follow you",
        json.dumps({"requestId": row["id"], "fromUserId": viewer.user_id}),
    )
    return request


def respond(change: Change, viewer: Viewer, request_id: str, accept: bool) -> dict[str, Any]:
    """Accept or reject a pending request addressed to the viewer (one of another
    tenant is NOT_FOUND, like an unknown id)."""
    tx = change.tx
    row = tx.get_follow_request(request_id) if isinstance(request_id, str) else None
    if row is None or not viewer.reaches(row["id"], row["to_user_id"]):
        raise NotFound(f"follow request {request_id} not found")
    if row["to_user_id"] != viewer.user_id:
        raise Forbidden("only the requested user can respond")
    if not isinstance(accept, bool):
        raise BadRequest("accept must be a boolean", path="accept")
    status = "ACCEPTED" if accept else "REJECTED"
    if row["status"] == status:
        return request_shape(row)
    if row["status"] != "PENDING":
        raise Conflict(f"the request was already {row['status'].lower()}")
    tx.update_follow_request(row["id"], status, change.stamp)
    request = request_shape({**row, "status": status, "updated_at": change.stamp})
    _tell_both(change, "follow.request.updated", request)
    if accept:
        notify(
            change,
            row["from_user_id"],
            "FOLLOW_ACCEPTED",
            f"{_display_name(tx, viewer)} accepted your follow request",
            json.dumps({"requestId": row["id"], "userId": viewer.user_id}),
        )
    return request
