"""Who is asking: the user behind a request or a WebSocket session, and the
tenant namespace every id it names is resolved in."""

from __future__ import annotations

import attrs

from gateway.errors import BadRequest, Forbidden
from gateway.events import new_id

__all__ = ["ADMIN_SCOPE", "Viewer", "record_id", "tenant_of"]

ADMIN_SCOPE = "admin"


def tenant_of(identifier: str | None) -> str | None:
    """The tenant an id lives in: `acme` for the user `acme/bob` or the record
    `acme/gth_...`; None for an id outside any tenant."""
    if not identifier:
        return None
    tenant, slash, _rest = identifier.rpartition("/")
    return tenant if slash else None


def record_id(prefix: str, owner: str) -> str:
    """A new record id in the tenant of the user it is made by or for: `acme/gth_...`
    for a user of acme, a bare `gth_...` outside any tenant."""
    tenant = tenant_of(owner)
    fresh = new_id(prefix)
    return f"{tenant}/{fresh}" if tenant else fresh


def _no_blank_tenant(tenant: str | None) -> str | None:
    return tenant or None


@attrs.frozen
class Viewer:
    """The authenticated user a domain call acts for."""

    user_id: str
    scopes: frozenset[str] = frozenset()
    tenant: str | None = attrs.field(default=None, converter=_no_blank_tenant)
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

    def shares_tenant(self, user_id: object) -> bool:
        """Whether a (qualified) user id is in this viewer's tenant, or, for a viewer
        outside any tenant, outside every tenant too."""
        return isinstance(user_id, str) and bool(user_id) and tenant_of(user_id) == self.tenant

    def reaches(self, record: object, owner: str | None = None) -> bool:
        """Whether a record is inside this viewer's tenant.

        A record made inside a tenant has an id naming it (`acme/gth_...`); an id
        without a tenant (made outside any tenant, or before ids carried their
        tenant) belongs to its `owner`'s tenant (the host, a participant, a member).
        Every other viewer must be answered as if the record did not exist.
        """
        if not isinstance(record, str) or not record:
            return False
        if "/" in record:
            return tenant_of(record) == self.tenant
        return tenant_of(owner) == self.tenant
