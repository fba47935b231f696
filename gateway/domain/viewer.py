"""Who is asking: the user behind a request or a WebSocket session."""

from __future__ import annotations

import attrs

from gateway.errors import BadRequest, Forbidden

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

    def qualify(self, user_id: object) -> str:
        """Another user's id as this viewer may name it: inside a tenant, a bare id
        means that tenant's user (`bob` -> `acme/bob`); no viewer can name another
        tenant's users, and a viewer outside any tenant cannot name a tenant's."""
        if not isinstance(user_id, str) or not user_id:
            raise BadRequest("a user id must be a non-empty string")
        tenant, slash, _bare = user_id.rpartition("/")
        if self.tenant is None:
            if slash:
                raise Forbidden(f"user {user_id!r} belongs to a tenant")
            return user_id
        if not slash:
            return f"{self.tenant}/{user_id}"
        if tenant != self.tenant:
            raise Forbidden(f"user {user_id!r} belongs to another tenant")
        return user_id
