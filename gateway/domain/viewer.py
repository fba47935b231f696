"""Who is asking: the user behind a request or a WebSocket session."""

from __future__ import annotations

import attrs

__all__ = ["ADMIN_SCOPE", "Viewer"]

ADMIN_SCOPE = "admin"


@attrs.frozen
class Viewer:
    """The authenticated user a domain call acts for."""

    user_id: str
    scopes: frozenset[str] = frozenset()
    tenant: str | None = None
    name: str | None = None

    @property
    def is_admin(self) -> bool:
        return ADMIN_SCOPE in self.scopes
