"""Payloads of the server's replies to client actions and of session control
frames (PROTOCOL.md 2.1, 2.2, 2.6).

A field with a default of None is optional on the wire: it is left out when
None (`retryAfterMs`, `path`, the parts of an `ack`).
"""

from __future__ import annotations

from typing import Literal

import attrs

from ._codes import ErrorCode
from ._objects import Conversation, Message
from ._scalars import Stage, Timestamp

__all__ = [
    "Ack",
    "DomainRollout",
    "ErrorPayload",
    "PingPong",
    "ProtocolRange",
    "SessionLimits",
    "SessionReset",
    "SessionResumed",
    "SessionWelcome",
]


@attrs.frozen(kw_only=True)
class Ack:
    """`ack`: the result of a client action; which part is set depends on the action.

    `auth.refresh` -> `expiresAt`; `subscribe`/`unsubscribe` -> `topic`;
    `chat.send` -> `message`; `chat.read` -> `conversation`; others: empty.
    """

    expires_at: Timestamp | None = None
    topic: str | None = None
    message: Message | None = None
    conversation: Conversation | None = None


@attrs.frozen(kw_only=True)
class ErrorPayload:
    """`error`: why an action (or the connection) was refused."""

    code: ErrorCode
    message: str
    retry_after_ms: int | None = None
    path: str | None = None


@attrs.frozen(kw_only=True)
class PingPong:
    """`ping.pong`: the answer to `ping`, with the server's clock."""

    server_time: Timestamp


@attrs.frozen(kw_only=True)
class ProtocolRange:
    """The protocol versions the server speaks."""

    min: int
    max: int


@attrs.frozen(kw_only=True)
class DomainRollout:
    """A domain's rollout stage for this user, and how often to poll it (null: do not)."""

    stage: Stage
    poll_interval_ms: int | None


@attrs.frozen(kw_only=True)
class SessionLimits:
    """The limits the server enforces on this connection."""

    max_frame_bytes: int
    actions_per_second: int


@attrs.frozen(kw_only=True)
class SessionWelcome:
    """`session.welcome`: the first frame of a connection; `seq` is the stream position now."""

    connection_id: str
    user_id: str
    epoch: str
    seq: int
    heartbeat_interval_ms: int
    idle_timeout_ms: int
    protocol: ProtocolRange
    domains: dict[str, DomainRollout]
    limits: SessionLimits


@attrs.frozen(kw_only=True)
class SessionResumed:
    """`session.resumed`: the replay after `session.resume` is complete."""

    from_seq: int
    to_seq: int


@attrs.frozen(kw_only=True)
class SessionReset:
    """`session.reset`: resuming is impossible; refetch state and continue from `seq`."""

    reason: Literal["EPOCH_CHANGED", "HISTORY_EXPIRED"]
    epoch: str
    seq: int
