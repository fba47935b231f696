"""The contract's one cattrs converter: strict structuring, camelCase keys.

Strict means a value of the wrong JSON type is an error, never coerced
(cattrs' default would turn `5` into `"5"` and `"abc"` into a list of
characters). Unknown keys are ignored: the contract is additive. Structuring
errors become a `ProtocolError` whose `path` names the bad field in wire
terms (`payload.conversationId`, `payload.messageIds[1]`).
"""

from __future__ import annotations

import enum
import re
import types
import typing
from collections.abc import Callable, Mapping
from typing import Any

import attrs
import cattrs
from cattrs.cols import list_structure_factory
from cattrs.gen import (
    make_dict_structure_fn,
    make_dict_unstructure_fn,
    make_mapping_structure_fn,
    override,
)
from cattrs.v import format_exception as _default_format

from ._actions import ACTIONS, TOPIC_PATTERN, ClientAction, Topic
from ._codes import PROTOCOL_VERSION, ErrorCode
from ._errors import ProtocolError
from ._scalars import TIMESTAMP_RE, Timestamp, to_camel

__all__ = ["converter", "protocol_error_from", "structure_action", "structure_as"]


class _Mismatch(TypeError):
    """A value of the wrong JSON type or format; its text is the error message."""


Hook = Callable[[Any, Any], Any]
"""A structure hook: `hook(value, type)`."""


def _strict(expected: type | types.UnionType, label: str) -> Hook:
    def structure(value: Any, _: Any) -> Any:
        if type(value) is bool and expected is not bool:
            raise _Mismatch(f"expected {label}, got a boolean")
        if not isinstance(value, expected):
            raise _Mismatch(f"expected {label}, got {_json_kind(value)}")
        return value

    return structure


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _pattern(label: str, regex: re.Pattern[str]) -> Hook:
    check = _strict(str, "a string")

    def structure(value: Any, _: Any) -> str:
        check(value, _)
        if not regex.match(value):
            raise _Mismatch(f"expected {label}, got {value!r}")
        return value

    return structure


def _enum(cls: type[enum.Enum]) -> Hook:
    values = {member.value: member for member in cls}

    def structure(value: Any, _: Any) -> Any:
        if isinstance(value, bool) or value not in values:
            raise _Mismatch("expected one of " + ", ".join(repr(v) for v in values))
        return values[value]

    return structure


def _is_list(t: Any) -> bool:
    return typing.get_origin(t) is list


def _is_dict(t: Any) -> bool:
    return typing.get_origin(t) is dict


def _is_payload_class(t: Any) -> bool:
    return isinstance(t, type) and attrs.has(t)


def _build() -> cattrs.Converter:
    conv = cattrs.Converter(detailed_validation=True, forbid_extra_keys=False)
    conv.register_structure_hook(str, _strict(str, "a string"))
    conv.register_structure_hook(int, _strict(int, "an integer"))
    conv.register_structure_hook(float, _strict(int | float, "a number"))
    conv.register_structure_hook(bool, _strict(bool, "a boolean"))
    conv.register_structure_hook(
        Timestamp, _pattern("a time like 2026-02-17T00:00:00.000Z", TIMESTAMP_RE)
    )
    conv.register_structure_hook(
        Topic,
        _pattern(
            "a topic such as conversation:<id>, presence:<userId> or event:<id>",
            re.compile(TOPIC_PATTERN),
        ),
    )
    conv.register_structure_hook(ErrorCode, _enum(ErrorCode))
    conv.register_unstructure_hook(Timestamp, str)
    conv.register_unstructure_hook(Topic, str)

    def list_factory(t: Any) -> Any:
        inner = list_structure_factory(t, conv)
        check = _strict(list, "an array")

        def structure(value: Any, _: Any) -> list:
            check(value, _)
            return inner(value, t)

        return structure

    def dict_factory(t: Any) -> Any:
        inner = make_mapping_structure_fn(t, conv)
        check = _strict(dict, "an object")

        def structure(value: Any, _: Any) -> dict:
            check(value, _)
            return inner(value, t)

        return structure

    def camel_renames(cls: type) -> dict[str, Any]:
        # Typed `Any`, not `AttributeOverride`: mypy checks a `**dict` against every
        # keyword parameter (the `_cattrs_*` flags), not only against `**kwargs`.
        return {a.name: override(rename=to_camel(a.name)) for a in attrs.fields(cls)}

    def class_structure_factory(cls: type) -> Any:
        inner: Hook = make_dict_structure_fn(cls, conv, **camel_renames(cls))
        check = _strict(Mapping, "an object")

        def structure(value: Any, _: Any) -> Any:
            check(value, _)
            return inner(value, cls)

        return structure

    def class_unstructure_factory(cls: type) -> Any:
        return make_dict_unstructure_fn(
            cls, conv, _cattrs_omit_if_default=True, **camel_renames(cls)
        )

    conv.register_structure_hook_factory(_is_list, list_factory)
    conv.register_structure_hook_factory(_is_dict, dict_factory)
    conv.register_structure_hook_factory(_is_payload_class, class_structure_factory)
    conv.register_unstructure_hook_factory(_is_payload_class, class_unstructure_factory)
    conv.register_structure_hook(ClientAction, lambda value, _: structure_action(value))
    conv.register_unstructure_hook(ClientAction, _unstructure_action)
    return conv


def _format(exc: BaseException, t: Any) -> str:
    if isinstance(exc, _Mismatch):
        return str(exc)
    if typing.get_origin(t) is typing.Literal:
        return "expected one of " + ", ".join(repr(v) for v in typing.get_args(t))
    return _default_format(exc, t)


_ATTR_SEGMENT = re.compile(r"\.([A-Za-z0-9_]+)")


def protocol_error_from(
    exc: BaseException, root: str, *, action_id: str | None = None
) -> ProtocolError:
    """A `BAD_REQUEST` naming every bad field of a failed structuring, first one as `path`."""
    problems = []
    for line in cattrs.transform_error(exc, path=root, format_exception=_format):
        description, _, path = line.rpartition(" @ ")
        path = _ATTR_SEGMENT.sub(lambda m: "." + to_camel(m.group(1)), path)
        problems.append((path, description))
    message = "; ".join(f"{path}: {description}" for path, description in problems)
    return ProtocolError(
        ErrorCode.BAD_REQUEST,
        message,
        path=problems[0][0] if problems else root,
        action_id=action_id,
    )


def structure_as(value: Any, cls: type, root: str, *, action_id: str | None = None) -> Any:
    """`value` structured into `cls`, or a `ProtocolError` naming the bad field under `root`."""
    try:
        return converter.structure(value, cls)
    except Exception as exc:
        raise protocol_error_from(exc, root, action_id=action_id) from exc


def structure_action(frame: Any) -> ClientAction:
    """The tagged union of client frames: `action` selects the payload class."""
    if not isinstance(frame, dict):
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"a frame must be a JSON object, got {_json_kind(frame)}"
        )
    action_id = frame.get("id")
    if action_id is not None and not isinstance(action_id, str):
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"id: expected a string, got {_json_kind(action_id)}",
            path="id",
        )
    if "v" not in frame:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, "v: required field missing", path="v", action_id=action_id
        )
    version = frame["v"]
    if type(version) is not int:
        raise ProtocolError(
            ErrorCode.BAD_REQUEST,
            f"v: expected an integer, got {_json_kind(version)}",
            path="v",
            action_id=action_id,
        )
    if version != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.UNSUPPORTED_VERSION,
            f"protocol version {version} is not supported (supported: {PROTOCOL_VERSION})",
            path="v",
            action_id=action_id,
        )
    action = frame.get("action")
    if not isinstance(action, str):
        detail = (
            "required field missing"
            if action is None
            else f"expected a string, got {_json_kind(action)}"
        )
        raise ProtocolError(
            ErrorCode.BAD_REQUEST, f"action: {detail}", path="action", action_id=action_id
        )
    payload_cls = ACTIONS.get(action)
    if payload_cls is None:
        raise ProtocolError(
            ErrorCode.UNKNOWN_ACTION,
            f"unknown action {action!r}",
            path="action",
            action_id=action_id,
        )
    payload = frame.get("payload")
    if payload is None:
        if any(a.default is attrs.NOTHING for a in attrs.fields(payload_cls)):
            raise ProtocolError(
                ErrorCode.BAD_REQUEST,
                "payload: required field missing",
                path="payload",
                action_id=action_id,
            )
        payload = {}
    return ClientAction(
        v=version,
        id=action_id,
        action=action,
        payload=structure_as(payload, payload_cls, "payload", action_id=action_id),
    )


def _unstructure_action(frame: ClientAction) -> dict[str, Any]:
    out: dict[str, Any] = {"v": frame.v}
    if frame.id is not None:
        out["id"] = frame.id
    out["action"] = frame.action
    out["payload"] = converter.unstructure(frame.payload)
    return out


converter = _build()
"""The contract's converter; private to the package."""
