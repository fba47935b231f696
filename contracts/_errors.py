"""The one exception of the contract package: a frame that breaks the contract."""

from __future__ import annotations

from gateway.errors import CutoverError

from ._codes import ErrorCode

__all__ = ["ProtocolError"]

_STATUS = {
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.UNKNOWN_ACTION: 400,
    ErrorCode.UNSUPPORTED_VERSION: 400,
}


class ProtocolError(CutoverError):
    """A frame or payload that does not follow the wire contract.

    `code` is `BAD_REQUEST`, `UNKNOWN_ACTION` or `UNSUPPORTED_VERSION`;
    `path` names the offending field (`payload.conversationId`) when there is
    one; `action_id` is the frame's `id` when it could be read, so the error
    reply can carry it as `replyTo`.
    """

    def __init__(
        self,
        code: ErrorCode | str,
        message: str,
        *,
        path: str | None = None,
        action_id: str | None = None,
    ) -> None:
        super().__init__(message, path=path)
        self.code = str(ErrorCode(code))
        self.status = _STATUS.get(ErrorCode(code), 400)
        self.action_id = action_id

    def __repr__(self) -> str:
        return (
            f"ProtocolError(code={self.code!r}, message={self.message!r}, "
            f"path={self.path!r}, action_id={self.action_id!r})"
        )
