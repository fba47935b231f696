"""Gatherings (the product's "events"): RSVPs, check-ins and saved events.

Named gatherings here so they are not confused with the stream events of
`gateway.events`; the GraphQL type and the topics still say `Event`/`event:`.

Anyone may see an event, RSVP to it and watch its counters, but only inside
its host's tenant: an event of another tenant answers as if it did not exist.
"""

from __future__ import annotations

from typing import Any

from gateway.domain._change import Change, require_text
from gateway.domain.viewer import Viewer, record_id
from gateway.errors import BadRequest, Forbidden, NotFound
from gateway.events import Ephemeral, iso, parse_iso
from gateway.store import Row, Tx

__all__ = [
    "RSVP_STATUSES",
    "check_in",
    "create_gathering",
    "event_visible",
    "gathering_view",
    "get_event",
    "saved_events",
    "set_rsvp",
    "set_saved",
    "upcoming_rsvps",
]

RSVP_STATUSES = ("GOING", "INTERESTED", "NOT_GOING")
PREVIEW_SIZE = 5


def _visible(tx: Tx, viewer: Viewer, event_id: Any) -> Row | None:
    """The gathering, if it exists inside the viewer's tenant."""
    if not isinstance(event_id, str) or not event_id:
        return None
    row = tx.get_gathering(event_id)
    if row is None or not viewer.reaches(row["id"], row["host_id"]):
        return None
    return row


def _gathering(tx: Tx, viewer: Viewer, event_id: Any) -> Row:
    row = _visible(tx, viewer, event_id)
    if row is None:
        raise NotFound(f"event {event_id} not found")
    return row


def event_visible(tx: Tx, viewer: Viewer, event_id: str) -> bool:
    """Whether the viewer may see (and watch) an event: it exists in their tenant."""
    return _visible(tx, viewer, event_id) is not None


def _counts(tx: Tx, event_id: str) -> dict[str, int]:
    counts = tx.count_rsvps(event_id)
    return {"going": counts.get("GOING", 0), "interested": counts.get("INTERESTED", 0)}


def _preview(tx: Tx, event_id: str) -> list[str]:
    return tx.rsvp_user_ids(event_id, "GOING", PREVIEW_SIZE)


def gathering_view(tx: Tx, row: Row, user_id: str) -> dict[str, Any]:
    """A gathering as the GraphQL `Event` type, as `user_id` sees it."""
    event_id = row["id"]
    rsvp = tx.get_rsvp(event_id, user_id)
    return {
        "id": event_id,
        "title": row["title"],
        "hostId": row["host_id"],
        "startsAt": row["starts_at"],
        "rsvpCounts": _counts(tx, event_id),
        "attendeesPreview": _preview(tx, event_id),
        "checkedInCount": tx.count_check_ins(event_id),
        "viewerRsvp": rsvp["status"] if rsvp is not None else None,
        "viewerSaved": tx.is_saved(event_id, user_id),
    }


def _rsvp_shape(tx: Tx, rsvp: Row, gathering: Row, user_id: str) -> dict[str, Any]:
    return {
        "eventId": rsvp["event_id"],
        "userId": rsvp["user_id"],
        "status": rsvp["status"],
        "updatedAt": rsvp["updated_at"],
        "event": gathering_view(tx, gathering, user_id),
    }


def _counters(change: Change, event_id: str) -> None:
    counts = _counts(change.tx, event_id)
    change.announce(
        Ephemeral(
            "event.counters.updated",
            {
                "eventId": event_id,
                "going": counts["going"],
                "interested": counts["interested"],
                "checkedIn": change.tx.count_check_ins(event_id),
            },
            cls="latest",
            topic=f"event:{event_id}",
            key=f"event:{event_id}",
        )
    )


# -- queries -----------------------------------------------------------------


def get_event(tx: Tx, viewer: Viewer, event_id: str) -> dict[str, Any] | None:
    row = _visible(tx, viewer, event_id)
    return gathering_view(tx, row, viewer.user_id) if row is not None else None


def upcoming_rsvps(tx: Tx, viewer: Viewer, now: str) -> list[dict[str, Any]]:
    """The viewer's GOING and INTERESTED RSVPs to events not yet started, soonest first."""
    found = []
    for rsvp in tx.rsvps_of(viewer.user_id):
        if rsvp["status"] == "NOT_GOING":
            continue
        gathering = _visible(tx, viewer, rsvp["event_id"])
        if gathering is not None and gathering["starts_at"] >= now:
            found.append((gathering["starts_at"], gathering["id"], rsvp, gathering))
    found.sort(key=lambda item: (item[0], item[1]))
    return [_rsvp_shape(tx, rsvp, gathering, viewer.user_id) for *_, rsvp, gathering in found]


def saved_events(tx: Tx, viewer: Viewer) -> list[dict[str, Any]]:
    views = []
    for event_id in tx.saved_event_ids(viewer.user_id):
        row = _visible(tx, viewer, event_id)
        if row is not None:
            views.append(gathering_view(tx, row, viewer.user_id))
    return views


# -- mutations ---------------------------------------------------------------


def create_gathering(change: Change, viewer: Viewer, title: str, starts_at: Any) -> dict[str, Any]:
    require_text(title, "title", max_length=500)
    try:
        starts = iso(parse_iso(starts_at))
    except (TypeError, ValueError, AttributeError):
        raise BadRequest("startsAt must be an ISO-8601 time", path="startsAt") from None
    row = {
        "id": record_id("gth", viewer.user_id),
        "title": title,
        "host_id": viewer.user_id,
        "starts_at": starts,
        "created_at": change.stamp,
    }
    change.tx.insert_gathering(row)
    return gathering_view(change.tx, row, viewer.user_id)


def set_rsvp(change: Change, viewer: Viewer, event_id: str, status: str) -> dict[str, Any]:
    tx = change.tx
    gathering = _gathering(tx, viewer, event_id)
    if status not in RSVP_STATUSES:
        raise BadRequest(f"unknown RSVP status {status!r}", path="status")
    rsvp = {
        "event_id": gathering["id"],
        "user_id": viewer.user_id,
        "status": status,
        "updated_at": change.stamp,
    }
    tx.put_rsvp(rsvp)
    counts = _counts(tx, gathering["id"])
    preview = _preview(tx, gathering["id"])
    for user_id in dict.fromkeys((viewer.user_id, gathering["host_id"])):
        change.emit(
            user_id,
            "event.rsvp.updated",
            {
                "rsvp": _rsvp_shape(tx, rsvp, gathering, user_id),
                "counts": counts,
                "attendeesPreview": preview,
            },
        )
    _counters(change, gathering["id"])
    return _rsvp_shape(tx, rsvp, gathering, viewer.user_id)


def check_in(change: Change, viewer: Viewer, event_id: str, user_id: str) -> dict[str, Any]:
    """The host records that a user arrived."""
    tx = change.tx
    gathering = _gathering(tx, viewer, event_id)
    if gathering["host_id"] != viewer.user_id:
        raise Forbidden("only the host checks people in")
    require_text(user_id, "userId", max_length=200)
    user_id = viewer.qualify(user_id)
    if tx.insert_check_in(gathering["id"], user_id, change.stamp):
        _counters(change, gathering["id"])
    return gathering_view(tx, gathering, viewer.user_id)


def set_saved(change: Change, viewer: Viewer, event_id: str, saved: bool) -> dict[str, Any]:
    tx = change.tx
    gathering = _gathering(tx, viewer, event_id)
    if not isinstance(saved, bool):
        raise BadRequest("saved must be a boolean", path="saved")
    if tx.set_saved(gathering["id"], viewer.user_id, saved, change.stamp):
        change.emit(
            viewer.user_id, "event.saved.updated", {"eventId": gathering["id"], "saved": saved}
        )
    return gathering_view(tx, gathering, viewer.user_id)
