"""One node's long-lived parts, opened together and closed together.

`run_runtime` opens the store, starts the rollout and registry watchers, the
backplane and the retention sweep in a nursery it owns, and hands the
`Runtime` to its caller through `task_status.started`. The HTTP app and the
WebSocket adapter only ever reach these parts through the runtime.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import attrs
import trio

import contracts
from gateway import ports
from gateway.audit import ShadowAudit, run_audit
from gateway.auth import AuthConfig, Authenticator, Principal, TicketBook
from gateway.config import Settings
from gateway.domain import Domain, Viewer
from gateway.events import Ephemeral, Outcome, StoredEvent, utcnow
from gateway.evidence import EvidenceBook
from gateway.faults import Faults, OmittingStore, parse_faults
from gateway.registry import Registry, RegistryWatcher, TopicAuthorizer
from gateway.rollout import RolloutWatcher
from gateway.store import Store, open_store, run_store
from gateway.ws.backplane import Backplane, LocalBackplane
from gateway.ws.hub import Hub

if TYPE_CHECKING:
    from gateway.publish_api import PublishApi, PublishCredential

__all__ = ["Runtime", "run_runtime"]

log = logging.getLogger("cutover.runtime")


@attrs.define(eq=False)
class Runtime:
    """Everything one node serves with."""

    settings: Settings
    store: Store
    domain: Domain
    authenticator: Authenticator
    tickets: TicketBook
    hub: Hub
    backplane: Backplane
    rollout: RolloutWatcher
    faults: Faults
    registry: RegistryWatcher | None = None  # when the node serves a registry
    topics: ports.TopicAuthorizer | None = None  # the registry's rules for app-declared topics
    publisher: PublishApi | None = None  # with a registry or publish API keys
    draining: bool = False
    evidence: EvidenceBook | None = None  # parity evidence from real traffic
    audit: ShadowAudit | None = None  # sampled polls compared with the push path

    def viewer(self, principal: Principal) -> Viewer:
        return Viewer(
            user_id=principal.user_id,
            scopes=principal.scopes,
            tenant=principal.tenant,
            name=principal.name,
        )

    async def bearer(self, header: str | None) -> Principal:
        """The principal of an `Authorization: Bearer` header, or Unauthorized."""
        return await self.authenticator.bearer_async(header)

    def realtime_config_for(self, host: str) -> Callable[[str], dict]:
        url = self.settings.websocket_url or f"ws://{host}/ws"

        def config(user_id: str) -> dict:
            view = self.rollout.current.view_for(user_id)
            return {
                "websocketUrl": url,
                "domains": [
                    {
                        "domain": name,
                        "stage": item["stage"],
                        "pollIntervalMs": item["pollIntervalMs"],
                    }
                    for name, item in view.items()
                ],
            }

        return config

    def backplane_ready(self) -> bool:
        """False while a Redis backplane is disconnected (`/readyz` answers 503)."""
        return self.backplane.ready

    def advertise(self, urls: list[str]) -> None:
        """The URLs this node serves on, as other nodes and operators see it."""
        if urls:
            self.backplane.advertise(urls[0])

    async def cluster_nodes(self) -> dict[str, Any]:
        """Every live node and its connection count (`cutover ops status`)."""
        nodes = await self.backplane.nodes()
        return {"backplane": self.backplane.kind, "node": self.settings.node_id, "nodes": nodes}

    async def publish(self, outcome: Outcome) -> None:
        """Hand a committed outcome's events to the backplane."""
        events = tuple(event for event in outcome.events if event.seq > 0)
        if events or outcome.ephemeral:
            await self.hub.publish(events, outcome.ephemeral)

    def contract_schema(self) -> dict:
        schema = contracts.json_schema()
        if self.registry is not None:
            schema = {**schema, "registry": self.registry.current.json_schema()}
        return schema

    def _publisher(self) -> PublishApi:
        if self.publisher is None:
            from gateway.errors import NotFound

            raise NotFound("the publish API is not enabled on this node")
        return self.publisher

    async def publisher_credential(
        self, authorization: str | None, api_key: str | None
    ) -> PublishCredential:
        return await self._publisher().credential(authorization, api_key)

    async def publish_api(self, credential: PublishCredential, body: Any) -> tuple[int, dict]:
        return await self._publisher().handle(credential, body)


def _auth_config(settings: Settings) -> AuthConfig:
    return AuthConfig(
        secret=settings.jwt_secret,
        algorithms=settings.jwt_algorithms,
        public_key=settings.public_key_pem(),
        jwks_url=settings.jwks_url,
        audience=settings.jwt_audience,
        issuer=settings.jwt_issuer,
        allow_query_token=settings.allow_query_token,
        ticket_ttl_s=settings.ticket_ttl_s,
    )


def _publish_api(runtime: Runtime) -> PublishApi:
    from gateway.publish_api import PublishApi
    from gateway.registry import build_registry, contract_builtins

    watcher = runtime.registry
    if watcher is not None:

        def registry() -> Registry:
            return watcher.current

    else:
        fallback = build_registry([], builtins=contract_builtins())

        def registry() -> Registry:
            return fallback

    async def publish(events: Sequence[StoredEvent], ephemeral: Sequence[Ephemeral]) -> None:
        await runtime.publish(Outcome(None, tuple(events), tuple(ephemeral)))

    return PublishApi(
        runtime.store,
        publish,
        registry,
        runtime.authenticator,
        runtime.settings.publish_api_keys,
    )


def _backplane(settings: Settings) -> Backplane:
    """Redis pub/sub between nodes with `--redis-url`, in-process without."""
    if not settings.redis_url:
        return LocalBackplane(node_id=settings.node_id)
    from gateway.ws.redis_backplane import RedisBackplane

    return RedisBackplane(
        settings.redis_url,
        node_id=settings.node_id,
        prefix=settings.redis_prefix,
        lease_ttl_s=settings.redis_lease_ttl_s,
    )


async def _retention_sweep(runtime: Runtime, every_s: float = 3600) -> None:
    settings = runtime.settings
    while True:
        removed = await run_store(
            runtime.store.prune,
            utcnow(),
            dt.timedelta(days=settings.retention_days),
            settings.retention_count,
        )
        if removed:
            log.info("retention removed %d events", removed)
        await trio.sleep(every_s)


async def run_runtime(
    settings: Settings, *, task_status: trio.TaskStatus[Runtime] = trio.TASK_STATUS_IGNORED
) -> None:
    """Open a node's parts, report the `Runtime`, and keep them until cancelled."""
    settings.check()
    faults = parse_faults(settings.faults)
    if faults.active:
        log.warning("FAULT INJECTION ACTIVE: %s; this node is for proving the parity gate", faults)
    store: Store = await trio.to_thread.run_sync(open_store, settings.store)
    if faults.omit_push:
        # A pass-through proxy (`__getattr__`), a Store in all but its class.
        store = cast(Store, OmittingStore(store, faults))
    try:
        async with trio.open_nursery() as nursery:
            rollout = RolloutWatcher(settings.flags)
            await nursery.start(rollout.run)
            registry: RegistryWatcher | None = None
            if settings.registry:
                registry = RegistryWatcher([Path(p) for p in settings.registry])
                await nursery.start(registry.run)
            domain = Domain(store)
            backplane = _backplane(settings)
            hub = Hub(
                domain=domain,
                backplane=backplane,
                rollout=rollout,
                store=store,
                tail_interval_s=settings.tail_interval_s,
                reconnect_window_ms=settings.reconnect_window_ms,
            )
            await nursery.start(hub.run)
            authenticator = Authenticator(_auth_config(settings))
            runtime = Runtime(
                settings=settings,
                store=store,
                domain=domain,
                authenticator=authenticator,
                tickets=TicketBook(store, ttl_s=settings.ticket_ttl_s),
                hub=hub,
                backplane=backplane,
                rollout=rollout,
                faults=faults,
                registry=registry,
                topics=TopicAuthorizer(registry) if registry is not None else None,
            )
            if registry is not None or settings.publish_api_keys:
                runtime.publisher = _publish_api(runtime)
            nursery.start_soon(_retention_sweep, runtime)
            runtime.evidence, runtime.audit = await nursery.start(run_audit, runtime)
            task_status.started(runtime)
            await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(store.close)
