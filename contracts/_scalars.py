"""Scalar types of the contract: times, enums as literals, and key naming."""

from __future__ import annotations

import re
from typing import Literal, NewType

__all__ = [
    "TIMESTAMP_PATTERN",
    "FollowStatus",
    "OrgRole",
    "PresenceStatus",
    "RsvpStatus",
    "Stage",
    "Timestamp",
    "to_camel",
]

Timestamp = NewType("Timestamp", str)
"""An ISO-8601 UTC time with milliseconds and a `Z`: `2026-02-17T00:00:00.000Z`."""

TIMESTAMP_PATTERN = r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$"
TIMESTAMP_RE = re.compile(TIMESTAMP_PATTERN)

Stage = Literal["OFF", "SHADOW", "LIVE", "RAMPDOWN", "COMPLETE"]
FollowStatus = Literal["PENDING", "ACCEPTED", "REJECTED"]
RsvpStatus = Literal["GOING", "INTERESTED", "NOT_GOING"]
OrgRole = Literal["OWNER", "ADMIN", "MEMBER"]
PresenceStatus = Literal["ONLINE", "AWAY", "OFFLINE"]


def to_camel(name: str) -> str:
    """The JSON key of an attribute: `unread_count` -> `unreadCount`."""
    head, *rest = name.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)
