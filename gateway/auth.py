"""Who a request comes from: JWT verification, principals and handshake tickets.

A user is identified by a JWT (`sub` = user id, PROTOCOL.md section 1). The
accepted algorithms are pinned by configuration, never read from the token
header; `none` is refused even when configured, and HMAC and asymmetric
algorithms are never mixed (that mix is what algorithm-confusion attacks
exploit). Every PyJWT failure is mapped here into `TokenExpired` or
`Unauthorized`.

A token that verified is kept (`VerifiedTokens`: bounded, least recently used
first out, keyed by the whole token string) until its `exp` plus the
configured leeway, so the next request with it skips the signature check;
only with a pinned key or secret (with a JWKS, a key taken out of the set must
end its tokens at once). A token that fails is never kept.

A ticket is a short-lived, single-use credential for the WebSocket handshake,
so that browsers never put a long-lived JWT in a URL. Only its sha256 is
stored; redeeming it deletes it.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import jwt
import trio
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from gateway.config import ConfigError
from gateway.errors import TokenExpired, Unauthorized

if TYPE_CHECKING:
    from jwt.types import Options

__all__ = [
    "AuthConfig",
    "Authenticator",
    "Principal",
    "TicketBook",
    "TicketStore",
    "VerifiedTokens",
    "mint_token",
]

HMAC_ALGORITHMS = frozenset({"HS256", "HS384", "HS512"})
ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
ADMIN_SCOPE = "admin"
MAX_TOKEN_CHARS = 16_384
MAX_TICKET_CHARS = 256
VERIFIED_TOKENS = 4_096  # tokens kept verified (`VerifiedTokens`)


def _names(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(values)


@attrs.frozen
class AuthConfig:
    """How this node verifies tokens and issues tickets."""

    secret: str | None = None
    algorithms: tuple[str, ...] = attrs.field(default=("HS256",), converter=_names)
    public_key: str | None = None  # PEM text, for RS*/ES*/PS*/EdDSA
    jwks_url: str | None = None
    audience: str | None = "cutover"
    issuer: str | None = None
    leeway_s: float = 0
    allow_query_token: bool = True
    ticket_ttl_s: float = 30

    def __attrs_post_init__(self) -> None:
        algorithms = set(self.algorithms)
        if not algorithms:
            raise ConfigError("jwt_algorithms is empty: configure at least one algorithm")
        if any(alg.lower() == "none" for alg in algorithms):
            raise ConfigError("jwt_algorithms: 'none' is never accepted")
        unknown = algorithms - HMAC_ALGORITHMS - ASYMMETRIC_ALGORITHMS
        if unknown:
            raise ConfigError(f"jwt_algorithms: unsupported algorithm(s) {sorted(unknown)}")
        hmac = algorithms & HMAC_ALGORITHMS
        asymmetric = algorithms & ASYMMETRIC_ALGORITHMS
        if hmac and asymmetric:
            raise ConfigError(
                f"jwt_algorithms mixes HMAC {sorted(hmac)} with asymmetric {sorted(asymmetric)}: "
                "configure one family only"
            )
        if hmac and not self.secret:
            raise ConfigError(f"jwt_algorithms {sorted(hmac)} need a secret (jwt_secret)")
        if asymmetric and not (self.public_key or self.jwks_url):
            raise ConfigError(
                f"jwt_algorithms {sorted(asymmetric)} need a public key (jwt_public_key) or jwks_url"
            )
        if self.ticket_ttl_s <= 0:
            raise ConfigError("ticket_ttl_s must be positive")

    @property
    def symmetric(self) -> bool:
        return bool(set(self.algorithms) & HMAC_ALGORITHMS)


@attrs.frozen
class Principal:
    """The authenticated user behind a request or a connection."""

    user_id: str
    scopes: frozenset[str] = frozenset()
    tenant: str | None = None
    name: str | None = None
    expires_at: float = 0.0
    token: str | None = attrs.field(default=None, repr=False)

    @property
    def subject(self) -> str:
        """The token's `sub`: the user id without its tenant prefix."""
        if self.tenant and self.user_id.startswith(f"{self.tenant}/"):
            return self.user_id[len(self.tenant) + 1 :]
        return self.user_id

    @property
    def is_admin(self) -> bool:
        return ADMIN_SCOPE in self.scopes

    def expired(self, now: float | None = None) -> bool:
        return (time.time() if now is None else now) >= self.expires_at

    def to_claims(self) -> dict[str, Any]:
        """The principal as JSON-ready claims (without the token)."""
        return {
            "sub": self.subject,
            "scopes": sorted(self.scopes),
            "tenant": self.tenant,
            "name": self.name,
            "exp": self.expires_at,
        }

    @classmethod
    def from_claims(cls, claims: dict[str, Any], token: str | None = None) -> Principal:
        """The principal of verified claims; Unauthorized when `sub` is unusable."""
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise Unauthorized("token has no usable 'sub' claim (the user id)")
        if "/" in sub:
            raise Unauthorized("a 'sub' claim must not contain '/' (it separates tenants)")
        tenant = _optional_str(claims, "tenant")
        if tenant is not None and "/" in tenant:
            raise Unauthorized("a 'tenant' claim must not contain '/'")
        return cls(
            # A tenant's users live in their own namespace: no tenant can reach another's.
            user_id=f"{tenant}/{sub}" if tenant else sub,
            scopes=_scopes_of(claims),
            tenant=tenant,
            name=_optional_str(claims, "name"),
            expires_at=float(claims["exp"]),
            token=token,
        )


def _scopes_of(claims: dict[str, Any]) -> frozenset[str]:
    scopes: set[str] = set()
    scope = claims.get("scope")
    if isinstance(scope, str):
        scopes.update(scope.split())
    elif scope is not None:
        raise Unauthorized("token claim 'scope' must be a space-separated string")
    listed = claims.get("scopes")
    if isinstance(listed, list) and all(isinstance(item, str) for item in listed):
        scopes.update(listed)
    elif listed is not None:
        raise Unauthorized("token claim 'scopes' must be a list of strings")
    return frozenset(scopes)


def _optional_str(claims: dict[str, Any], key: str) -> str | None:
    value = claims.get(key)
    if value is None or isinstance(value, str):
        return value
    raise Unauthorized(f"token claim {key!r} must be a string")


def _load_public_key(text: str) -> Any:
    """A public key object from PEM text, or from a file holding it."""
    if "-----BEGIN" not in text:
        path = Path(text)
        if not path.is_file():
            raise ConfigError("jwt_public_key is neither PEM text nor a readable PEM file")
        text = path.read_text()
    try:
        return load_pem_public_key(text.encode())
    except ValueError as exc:
        raise ConfigError(f"jwt_public_key is not a usable PEM public key: {exc}") from None


class VerifiedTokens:
    """Tokens that verified, each with its principal, until `exp` plus the leeway.

    Bounded to `max_entries` (the least recently used goes first); an entry at
    or past its end is never returned (and is dropped when looked at). Safe to
    use from several threads (`verify` may run in worker threads).
    """

    def __init__(
        self, max_entries: int = VERIFIED_TOKENS, clock: Callable[[], float] = time.time
    ) -> None:
        self.max_entries = max_entries
        self.clock = clock
        self._entries: OrderedDict[str, tuple[Principal, float]] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, token: str) -> Principal | None:
        """The principal of `token` if it verified and is still valid, else None."""
        with self._lock:
            entry = self._entries.get(token)
            if entry is None:
                return None
            principal, until = entry
            if self.clock() >= until:
                del self._entries[token]
                return None
            self._entries.move_to_end(token)
            return principal

    def put(self, token: str, principal: Principal, until: float) -> None:
        """Keep `principal` for `token` until `until` (epoch seconds), excluded."""
        if self.max_entries <= 0:
            return
        with self._lock:
            self._entries[token] = (principal, until)
            self._entries.move_to_end(token)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)


class Authenticator:
    """Verifies bearer JWTs against this node's pinned configuration."""

    def __init__(self, config: AuthConfig, verified: VerifiedTokens | None = None) -> None:
        self.config = config
        self.verified = verified if verified is not None else VerifiedTokens()
        self._key: Any = None
        if config.symmetric:
            self._key = config.secret
        elif config.public_key:
            self._key = _load_public_key(config.public_key)
        self._jwks: jwt.PyJWKClient | None = None
        if config.jwks_url and not config.symmetric:
            self._jwks = jwt.PyJWKClient(
                config.jwks_url, cache_keys=True, cache_jwk_set=True, lifespan=300, timeout=5
            )
        self.jwks_limiter = trio.CapacityLimiter(4)

    @property
    def blocking(self) -> bool:
        """Whether `verify` may block on the network (a JWKS fetch)."""
        return self._jwks is not None

    def verify(self, token: str) -> Principal:
        """The principal of a valid token; TokenExpired or Unauthorized otherwise."""
        if not isinstance(token, str) or not token.strip():
            raise Unauthorized("no token given")
        token = token.strip()
        if len(token) > MAX_TOKEN_CHARS:
            raise Unauthorized("token is too long")
        cacheable = self._jwks is None  # a pinned key or secret: the outcome only ages
        if cacheable and (principal := self.verified.get(token)) is not None:
            return principal
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"malformed token: {exc}") from None
        alg = header.get("alg")
        if alg not in self.config.algorithms:
            raise Unauthorized(
                f"token algorithm {alg!r} is not accepted (accepted: {', '.join(self.config.algorithms)})"
            )
        options: Options = {
            "require": ["exp", "sub"],
            "verify_aud": self.config.audience is not None,
        }
        try:
            key = self._signing_key(token)
            claims = jwt.decode(
                token,
                key,
                algorithms=list(self.config.algorithms),
                options=options,
                audience=self.config.audience,
                issuer=self.config.issuer,
                leeway=self.config.leeway_s,
            )
        except jwt.ExpiredSignatureError:
            raise TokenExpired("token has expired") from None
        except jwt.InvalidSignatureError:
            raise Unauthorized("token signature is invalid") from None
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"token lacks the required {exc.claim!r} claim") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized(f"token audience is not {self.config.audience!r}") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized(f"token issuer is not {self.config.issuer!r}") from None
        except jwt.PyJWKClientConnectionError as exc:
            raise Unauthorized(f"could not fetch signing keys: {exc}") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid token: {exc}") from None
        principal = Principal.from_claims(claims, token=token)
        if cacheable:
            # PyJWT refuses a token once `exp <= now - leeway`.
            self.verified.put(token, principal, principal.expires_at + self.config.leeway_s)
        return principal

    def _signing_key(self, token: str) -> Any:
        """The configured key, or the JWKS key named by the token's `kid`."""
        if self._jwks is not None and (
            self._key is None or "kid" in jwt.get_unverified_header(token)
        ):
            return self._jwks.get_signing_key_from_jwt(token).key
        return self._key

    async def verify_async(self, token: str) -> Principal:
        """`verify` from Trio: in a worker thread only when a JWKS may be fetched."""
        if self._jwks is None:
            return self.verify(token)
        return await trio.to_thread.run_sync(self.verify, token, limiter=self.jwks_limiter)

    def bearer(self, header_value: str | None) -> Principal:
        """The principal of an `Authorization: Bearer <jwt>` header value."""
        return self.verify(_bearer_token(header_value))

    async def bearer_async(self, header_value: str | None) -> Principal:
        """`bearer` from Trio (see `verify_async`)."""
        return await self.verify_async(_bearer_token(header_value))


def _bearer_token(header_value: str | None) -> str:
    if not header_value:
        raise Unauthorized("missing Authorization: Bearer token")
    scheme, _, token = header_value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization header must be 'Bearer <token>'")
    return token.strip()


class TicketStore(Protocol):
    """What the ticket book needs from the store (blocking calls)."""

    def put_ticket(
        self, ticket_hash: str, user_id: str, expires_at: float, claims_json: str
    ) -> None: ...

    def peek_ticket(self, ticket_hash: str, now: float) -> tuple[str, str] | None: ...

    def take_ticket(self, ticket_hash: str, now: float) -> tuple[str, str] | None: ...


def ticket_hash(ticket: str) -> str:
    """The stored form of a ticket: its sha256, hex."""
    return hashlib.sha256(ticket.encode()).hexdigest()


class TicketBook:
    """Issues and redeems single-use WebSocket handshake tickets (blocking: run via the store)."""

    def __init__(self, store: TicketStore, ttl_s: float = 30) -> None:
        if ttl_s <= 0:
            raise ValueError("ticket ttl must be positive")
        self.store = store
        self.ttl_s = ttl_s

    def issue(self, principal: Principal, now: float | None = None) -> tuple[str, float]:
        """A fresh ticket for the principal and its expiry (epoch seconds).

        The ticket never outlives the token it was minted from.
        """
        now = time.time() if now is None else now
        if principal.expired(now):
            raise TokenExpired("token has expired")
        ticket = secrets.token_urlsafe(32)
        expires_at = min(now + self.ttl_s, principal.expires_at)
        claims_json = json.dumps(principal.to_claims(), separators=(",", ":"))
        self.store.put_ticket(ticket_hash(ticket), principal.user_id, expires_at, claims_json)
        return ticket, expires_at

    def inspect(self, ticket: str, now: float | None = None) -> Principal:
        """The principal a valid ticket was issued to, leaving the ticket unused.

        The handshake inspects first and redeems only once the connection is
        admitted, so a handshake refused for another reason (429) keeps it.
        """
        now = time.time() if now is None else now
        self._check_shape(ticket)
        return self._principal(self.store.peek_ticket(ticket_hash(ticket), now), now)

    def redeem(self, ticket: str, now: float | None = None) -> Principal:
        """The principal a ticket was issued to; the ticket is used up."""
        now = time.time() if now is None else now
        self._check_shape(ticket)
        return self._principal(self.store.take_ticket(ticket_hash(ticket), now), now)

    @staticmethod
    def _check_shape(ticket: object) -> None:
        if not isinstance(ticket, str) or not ticket or len(ticket) > MAX_TICKET_CHARS:
            raise Unauthorized("invalid ticket")

    @staticmethod
    def _principal(taken: tuple[str, str] | None, now: float) -> Principal:
        if taken is None:
            raise Unauthorized("ticket is unknown, expired or already used")
        user_id, claims_json = taken
        try:
            claims = json.loads(claims_json)
        except ValueError:
            raise Unauthorized("ticket record is unreadable") from None
        if not isinstance(claims, dict):
            raise Unauthorized("ticket record is unreadable")
        principal = Principal.from_claims(claims)
        if principal.user_id != user_id:
            raise Unauthorized("ticket record does not match its user")
        if principal.expired(now):
            raise TokenExpired("the token behind this ticket has expired")
        return principal


def mint_token(
    secret: str,
    user_id: str,
    *,
    admin: bool = False,
    ttl_s: float = 3600,
    audience: str | None = "cutover",
    issuer: str | None = None,
    name: str | None = None,
    scopes: Iterable[str] = (),
    tenant: str | None = None,
    algorithm: str = "HS256",
    now: float | None = None,
) -> str:
    """A signed JWT for a user (`cutover token`, tests, demos).

    `secret` is the HMAC secret, or the PEM private key for asymmetric algorithms.
    """
    if algorithm.lower() == "none":
        raise ValueError("refusing to mint an unsigned token")
    now = time.time() if now is None else now
    claims: dict[str, Any] = {"sub": user_id, "iat": int(now), "exp": math.ceil(now + ttl_s)}
    granted = set(scopes)
    if admin:
        granted.add(ADMIN_SCOPE)
    if granted:
        claims["scope"] = " ".join(sorted(granted))
    if audience is not None:
        claims["aud"] = audience
    if issuer is not None:
        claims["iss"] = issuer
    if name is not None:
        claims["name"] = name
    if tenant is not None:
        claims["tenant"] = tenant
    return jwt.encode(claims, secret, algorithm=algorithm)
