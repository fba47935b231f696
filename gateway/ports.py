"""The seams between the gateway's parts, as small Protocols.

The WebSocket core (`gateway.ws`), the hub and the per-user stream depend on
these, not on the concrete store, domain, rollout or authenticator, so each
side can be read, replaced and faked on its own:

```
      WebSocketEndpoint ──> Connection ──> SessionDomain   (gateway.domain.Domain)
              │                │  │ └────> TopicAuthorizer (gateway.registry)
              │                │  └──────> TokenVerifier   (gateway.auth.Authenticator)
              │                └─> UserStream ──> StreamStore (gateway.store.Store)
              └──> Hub ──> Backplane (local | Redis) ──> every node's Hub
                      └──> RolloutView (gateway.rollout.RolloutConfig | RolloutWatcher)
```

Blocking ports (the store, the domain) are called from Trio through
`gateway.store.run_store`, in worker threads behind named limiters.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from gateway.auth import Principal
    from gateway.domain.viewer import Viewer
    from gateway.events import Cursor, Outcome, StoredEvent

T = TypeVar("T")

__all__ = [
    "BearerVerifier",
    "RolloutView",
    "Runner",
    "SessionDomain",
    "StreamStore",
    "TokenVerifier",
    "TopicAuthorizer",
    "ViewerFactory",
]


class Runner(Protocol):
    """Runs a blocking call off the event loop: `await runner(fn, *args)`
    (`gateway.store.run_store`, or a test's double)."""

    def __call__(self, fn: Callable[..., T], /, *args: Any) -> Awaitable[T]: ...


ViewerFactory = Callable[["Principal"], "Viewer"]
"""The domain's view of an authenticated principal."""


class StreamStore(Protocol):
    """What the per-user streams read from the store (blocking)."""

    def stream_position(self, user_id: str) -> Cursor: ...

    def stream_heads(self, user_ids: Sequence[str]) -> dict[str, Cursor]: ...

    def events_after(
        self, user_id: str, after_seq: int, limit: int = 1000
    ) -> list[StoredEvent]: ...


class SessionDomain(Protocol):
    """The domain services a WebSocket session calls (blocking)."""

    def send_chat_message(
        self,
        viewer: Viewer,
        conversation_id: str,
        body: str,
        client_message_id: str | None = None,
    ) -> Outcome[Any]: ...

    def mark_conversation_read(
        self, viewer: Viewer, conversation_id: str, up_to_message_id: str | None = None
    ) -> Outcome[Any]: ...

    def mark_delivered(
        self, viewer: Viewer, conversation_id: str, message_ids: list[str]
    ) -> Outcome[Any]: ...

    def typing(self, viewer: Viewer, conversation_id: str, state: str) -> Outcome[None]: ...

    def can_subscribe(self, viewer: Viewer, topic: str) -> bool: ...

    def set_presence(self, viewer_or_user_id: Viewer | str, status: str) -> Outcome[Any]: ...


class RolloutView(Protocol):
    """The rollout as the push path reads it, always the latest file."""

    def push_enabled(self, user_id: str, domain: str) -> bool: ...

    def view_for(self, user_id: str) -> dict[str, dict[str, Any]]: ...


class TokenVerifier(Protocol):
    """Verifies a JWT into a principal (`auth.refresh`, the handshake)."""

    async def verify_async(self, token: str) -> Principal: ...


class BearerVerifier(Protocol):
    """Verifies an `Authorization: Bearer` header into a principal (the publish API)."""

    async def bearer_async(self, header_value: str | None) -> Principal: ...


class TopicAuthorizer(Protocol):
    """The registry's rules for app-declared topics."""

    async def allowed(self, principal_user_id: str, tenant: str | None, topic: str) -> bool | None:
        """True or False for a topic a rule covers; None when no rule does."""
        ...
