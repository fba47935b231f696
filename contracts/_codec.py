"""Frame codec: decode client frames, encode server envelopes, split batched frames.

`encode_envelope` is on the server's hot path: it only dumps dicts. The
converter is used for inbound frames and for tests that check payloads.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from ._actions import ClientAction
from ._codes import PROTOCOL_VERSION, ErrorCode
from ._converter import converter, structure_action, structure_as
from ._errors import ProtocolError
from ._events import EVENT_TYPES

__all__ = [
    "decode_action",
    "encode_action",
    "encode_envelope",
    "join_envelopes",
    "split_frame",
    "unstructure",
    "validate_event",
]

_dumps = json.JSONEncoder(
    ensure_ascii=False, separators=(",", ":"), allow_nan=False, check_circular=False
).encode


def decode_action(text: str | bytes) -> ClientAction:
    """A client frame decoded into a `ClientAction`, or a `ProtocolError`.

    `BAD_REQUEST` for text that is not a JSON object or has a wrong shape
    (`path` names the field), `UNSUPPORTED_VERSION` for a `v` other than 1,
    `UNKNOWN_ACTION` for an action the contract does not define. The error's
    `action_id` is the frame's `id` whenever it could be read.
    """
    if isinstance(text, bytes | bytearray | memoryview):
        try:
            text = bytes(text).decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ProtocolError(ErrorCode.BAD_REQUEST, f"frame is not UTF-8: {exc}") from exc
    try:
        frame = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"frame is not JSON: {exc}") from exc
    return structure_action(frame)


def encode_envelope(
    type: str,
    payload: dict[str, Any],
    *,
    id: str,
    sent_at: str,
    seq: int | None = None,
    reply_to: str | None = None,
) -> str:
    """One server envelope as compact JSON with no raw newline.

    `seq` is written only for durable events, `replyTo` only for replies.
    """
    envelope: dict[str, Any] = {"v": PROTOCOL_VERSION, "id": id, "type": type}
    if seq is not None:
        envelope["seq"] = seq
    envelope["sentAt"] = sent_at
    if reply_to is not None:
        envelope["replyTo"] = reply_to
    envelope["payload"] = payload
    return _dumps(envelope)


def join_envelopes(envelopes: Sequence[str]) -> str:
    """One server frame holding several encoded envelopes, in order."""
    return "\n".join(envelopes)


def split_frame(text: str) -> list[dict[str, Any]]:
    """The envelopes of one server frame, in order (a frame may hold several)."""
    envelopes = []
    for index, line in enumerate(text.split("\n")):
        if not line.strip():
            continue
        try:
            envelope = json.loads(line)
        except ValueError as exc:
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, f"envelope {index} is not JSON: {exc}", path=f"[{index}]"
            ) from exc
        if not isinstance(envelope, dict):
            raise ProtocolError(
                ErrorCode.BAD_REQUEST, f"envelope {index} is not an object", path=f"[{index}]"
            )
        envelopes.append(envelope)
    return envelopes


def encode_action(
    action: str,
    payload: dict[str, Any] | None = None,
    *,
    id: str | None = None,
    v: int = PROTOCOL_VERSION,
) -> str:
    """A client frame as compact JSON (for clients, tests and the parity harness)."""
    frame: dict[str, Any] = {"v": v}
    if id is not None:
        frame["id"] = id
    frame["action"] = action
    frame["payload"] = {} if payload is None else payload
    return _dumps(frame)


def unstructure(obj: Any) -> dict[str, Any]:
    """A contract attrs instance (payload, object or `ClientAction`) as its JSON dict."""
    return converter.unstructure(obj)


def validate_event(type: str, payload: dict[str, Any]) -> object:
    """`payload` structured into the payload class of server frame `type`.

    Raises `ProtocolError` (`BAD_REQUEST`) naming the path of the first bad
    field, or `path="type"` for a type the contract does not define.
    """
    spec = EVENT_TYPES.get(type)
    if spec is None:
        raise ProtocolError(ErrorCode.BAD_REQUEST, f"unknown event type {type!r}", path="type")
    return structure_as(payload, spec.payload_cls, "payload")
