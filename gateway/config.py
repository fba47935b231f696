"""Settings of one gateway node, from command-line flags and `CUTOVER_*` variables.

Every setting has a flag of `cutover serve` and an environment variable named
after it (`jwt_secret` -> `--jwt-secret` / `CUTOVER_JWT_SECRET`); a flag wins
over the environment, the environment over the default.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import attrs

__all__ = ["ConfigError", "Settings", "settings_from"]


class ConfigError(ValueError):
    """A setting that cannot be used; the message names it."""


def _csv(value: str | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(part.strip() for part in value.split(",") if part.strip())
    return tuple(value)


def _bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    return value.strip().lower() in {"1", "true", "yes", "on"}


def _window(value: str | tuple[int, int] | list[int]) -> tuple[int, int]:
    """`LOW,HIGH` milliseconds (the spread of `system.reconnect` delays)."""
    parts = [int(part) for part in (value.split(",") if isinstance(value, str) else value)]
    if len(parts) != 2 or not 0 <= parts[0] < parts[1]:
        raise ValueError(f"expected LOW,HIGH milliseconds with LOW < HIGH, got {value!r}")
    return parts[0], parts[1]


def _positive(_instance: object, attribute: attrs.Attribute, value: float) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be greater than 0, got {value}")


def _not_negative(_instance: object, attribute: attrs.Attribute, value: float) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be 0 or more, got {value}")


def _fraction(_instance: object, attribute: attrs.Attribute, value: float) -> None:
    if not 0 <= value <= 1:
        raise ValueError(f"{attribute.name} must be from 0 to 1, got {value}")


@attrs.define
class Settings:
    """Everything a node is configured with."""

    bind: str = "127.0.0.1:8080"
    store: str = "sqlite:///var/cutover.db"
    flags: str | None = None
    jwt_secret: str | None = None
    jwt_public_key: str | None = None  # a PEM file path or the PEM text
    jwks_url: str | None = None
    jwt_algorithms: tuple[str, ...] = attrs.field(default=("HS256",), converter=_csv)
    jwt_audience: str | None = "cutover"
    jwt_issuer: str | None = None
    allow_query_token: bool = attrs.field(default=True, converter=_bool)
    allowed_origins: tuple[str, ...] = attrs.field(default=(), converter=_csv)
    max_connections_per_user: int = attrs.field(default=20, converter=int)
    heartbeat_interval_ms: int = attrs.field(default=30_000, converter=int)
    idle_timeout_ms: int = attrs.field(default=75_000, converter=int)
    max_frame_bytes: int = attrs.field(default=65_536, converter=int)
    actions_per_second: int = attrs.field(default=20, converter=int)
    actions_burst: int = attrs.field(default=40, converter=int)
    send_buffer_items: int = attrs.field(default=1024, converter=int)
    send_buffer_bytes: int = attrs.field(default=1 << 20, converter=int, validator=_positive)
    # The push path's socket (gateway.ws.wire): a write blocked past the
    # slow-consumer timeout resets the connection; compression is per message.
    slow_consumer_timeout_s: float = attrs.field(default=5, converter=float)
    ws_compression: Literal["off", "on"] = attrs.field(
        default="off", validator=attrs.validators.in_(("off", "on"))
    )
    # -- the push path's sessions, sockets and front acceptor (README, "Limits") ----
    ws_window_bits: int = attrs.field(
        default=12, converter=int, validator=attrs.validators.in_(range(9, 16))
    )
    ws_memory_level: int = attrs.field(
        default=5, converter=int, validator=attrs.validators.in_(range(1, 10))
    )
    ws_close_timeout_s: float = attrs.field(default=2.0, converter=float, validator=_positive)
    typing_timeout_s: float = attrs.field(default=6.0, converter=float, validator=_positive)
    max_subscriptions: int = attrs.field(default=256, converter=int, validator=_positive)
    max_typing: int = attrs.field(default=32, converter=int, validator=_positive)
    max_protocol_violations: int = attrs.field(default=10, converter=int, validator=_positive)
    abuse_max_refusals: int = attrs.field(default=100, converter=int, validator=_positive)
    abuse_window_s: float = attrs.field(default=10.0, converter=float, validator=_positive)
    tail_interval_s: float = attrs.field(default=5.0, converter=float, validator=_positive)
    stream_inbox_size: int = attrs.field(default=256, converter=int, validator=_positive)
    max_batch_bytes: int = attrs.field(default=256 * 1024, converter=int, validator=_positive)
    cleanup_timeout_s: float = attrs.field(default=5.0, converter=float, validator=_positive)
    flush_timeout_s: float = attrs.field(default=2.0, converter=float, validator=_positive)
    reconnect_window_ms: tuple[int, int] = attrs.field(default=(1_000, 30_000), converter=_window)
    head_timeout_s: float = attrs.field(default=10.0, converter=float, validator=_positive)
    max_head_bytes: int = attrs.field(default=16_384, converter=int, validator=_positive)
    ticket_ttl_s: float = attrs.field(default=30, converter=float)
    retention_days: float = attrs.field(default=7, converter=float)
    retention_count: int = attrs.field(default=10_000, converter=int)
    grace_s: float = attrs.field(default=10, converter=float)
    node_id: str = attrs.field(factory=lambda: f"node-{os.getpid()}")
    redis_url: str | None = None
    # A node's lease in Redis (presence, connection slots): refreshed every
    # quarter of it; a node that stops refreshing is reaped once it expires.
    redis_lease_ttl_s: float = attrs.field(default=20, converter=float, validator=_positive)
    # Every key and channel of one cluster starts with it (pub/sub ignores the db number).
    redis_prefix: str = "cutover:"
    # `--workers N`: N processes on one port (gateway.workers); each binds it
    # with SO_REUSEPORT (`reuse_port`), so the kernel spreads connections.
    workers: int = attrs.field(default=1, converter=int)
    reuse_port: bool = attrs.field(default=False, converter=_bool)
    registry: tuple[str, ...] = attrs.field(default=(), converter=_csv)
    publish_api_keys: tuple[str, ...] = attrs.field(default=(), converter=_csv)
    websocket_url: str | None = None  # what realtimeConfig tells clients; default from Host
    faults: str | None = None
    allow_faults: bool = attrs.field(default=False, converter=_bool)
    demo: bool = attrs.field(default=False, converter=_bool)
    # Browsers (gateway.browser, gateway.beacons): the demo page at /demo (on in
    # `cutover demo`), and the share of polls the SDK compares with push and
    # reports (`POST /realtime/parity`, at most so many beacons a minute per user).
    demo_page: bool = attrs.field(default=False, converter=_bool)
    parity_sample_rate: float = attrs.field(default=0.05, converter=float, validator=_fraction)
    parity_beacons_per_minute: int = attrs.field(default=6, converter=int, validator=_not_negative)
    # The shadow audit and the beacons gather parity evidence (gateway.evidence);
    # each node writes what it gathered to the store this often.
    evidence_flush_s: float = attrs.field(default=10, converter=float, validator=_positive)

    # -- HTTP bodies and the cost of one GraphQL request (README, "Limits") --------
    graphql_max_body_bytes: int = attrs.field(default=131_072, converter=int, validator=_positive)
    graphql_max_query_bytes: int = attrs.field(default=65_536, converter=int, validator=_positive)
    graphql_max_tokens: int = attrs.field(default=2_000, converter=int, validator=_positive)
    graphql_max_depth: int = attrs.field(default=12, converter=int, validator=_positive)
    graphql_max_aliases: int = attrs.field(default=50, converter=int, validator=_positive)
    graphql_max_cost: int = attrs.field(default=5_000, converter=int, validator=_positive)
    graphql_max_repeats: int = attrs.field(default=20, converter=int, validator=_positive)
    graphql_timeout_s: float = attrs.field(default=5.0, converter=float, validator=_positive)
    graphql_slots_per_user: int = attrs.field(default=2, converter=int, validator=_positive)
    graphql_queue_per_user: int = attrs.field(default=16, converter=int, validator=_not_negative)
    graphql_cache_bytes: int = attrs.field(default=262_144, converter=int, validator=_not_negative)
    publish_max_body_bytes: int = attrs.field(default=8_388_608, converter=int, validator=_positive)
    http_max_body_bytes: int = attrs.field(default=4_096, converter=int, validator=_not_negative)

    def check(self) -> None:
        """Refuse settings a node must not start with."""
        if self.workers < 1:
            raise ConfigError(f"--workers {self.workers}: expected 1 or more")
        if self.workers > 1 and not self.redis_url:
            raise ConfigError(
                f"--workers {self.workers} needs --redis-url (CUTOVER_REDIS_URL): without "
                "Redis, an event committed by one worker never reaches another's connections"
            )
        if self.redis_url and not self.redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError(
                f"--redis-url {self.redis_url!r}: expected redis://HOST:PORT/DB, rediss:// or unix://"
            )
        if not (self.jwt_secret or self.jwt_public_key or self.jwks_url) and not self.demo:
            raise ConfigError(
                "no JWT verification key: set --jwt-secret (CUTOVER_JWT_SECRET), "
                "--jwt-public-key or --jwks-url"
            )
        if self.faults and not self.allow_faults:
            raise ConfigError("CUTOVER_FAULTS is set but --allow-faults is not: refusing to start")
        if not self.store.startswith(
            ("sqlite:///", "postgresql://", "postgres://", "mongodb://", "mongodb+srv://")
        ):
            raise ConfigError(
                f"--store {self.store!r}: expected sqlite:///PATH, postgresql://USER@HOST/DB"
                " or mongodb://..."
            )

    def public_key_pem(self) -> str | None:
        if self.jwt_public_key is None:
            return None
        if "-----BEGIN" in self.jwt_public_key:
            return self.jwt_public_key
        return Path(self.jwt_public_key).read_text()


FIELDS = {field.name for field in attrs.fields(Settings)}


def settings_from(
    flags: Mapping[str, object], environ: Mapping[str, str] | None = None
) -> Settings:
    """Settings from parsed flags (None = not given) over `CUTOVER_*` variables."""
    environ = os.environ if environ is None else environ
    # Raw flags and strings: each field's converter parses and checks its own.
    values: dict[str, Any] = {}
    for name in FIELDS:
        env = environ.get(f"CUTOVER_{name.upper()}")
        if env is not None and env != "":
            values[name] = env
        flag = flags.get(name)
        if flag is not None:
            values[name] = flag
    try:
        return Settings(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid setting: {exc}") from exc
