"""Every refusal of the event-type registry, in one place.

A bad declaration file is a configuration error of the operator
(`DeclarationInvalid`, naming the file); a payload that does not match its
declared schema or names no declared type is the publisher's error
(`PayloadInvalid`, `UnknownEventType`, both `BAD_REQUEST` in the contract).
"""

from __future__ import annotations

from gateway.errors import BadRequest, CutoverError

__all__ = ["DeclarationInvalid", "PayloadInvalid", "UnknownEventType"]


class DeclarationInvalid(CutoverError):
    """A declaration file (or a built-in declaration) the registry refuses to load."""

    code = "INTERNAL"
    status = 500

    def __init__(self, source: str, reason: str) -> None:
        super().__init__(f"{source}: {reason}")
        self.source = source
        self.reason = reason


class UnknownEventType(BadRequest):
    """A publish names an event type (or version) that the registry does not declare."""

    def __init__(self, name: str, version: int | None = None) -> None:
        what = name if version is None else f"{name} v{version}"
        super().__init__(f"unknown event type {what}", path="$.type")
        self.name = name
        self.version = version


class PayloadInvalid(BadRequest):
    """A payload that does not match its event type's JSON Schema.

    `path` is the JSON path of the failing value, e.g. `$.payload.goalId`.
    """

    def __init__(self, event_type: str, path: str, reason: str) -> None:
        super().__init__(f"{event_type}: {path}: {reason}", path=path)
        self.event_type = event_type
        self.reason = reason
