"""Who may subscribe to a custom topic, by the registry's topic rules.

A custom topic is `<prefix>:<id>` with a rule declared under `topics/`:

- `public`: every signed-in user may subscribe;
- `tenant`: the id has the form `<tenant>/<rest>` (e.g. `goal:acme/g42`) and
  the subscriber's tenant must equal `<tenant>`; a user without a tenant, or
  an id without a `/`, is refused;
- `callback`: the gateway POSTs `{"userId", "tenant", "topic"}` to the rule's
  `callbackUrl` and allows only on HTTP 200 with `{"allow": true}`. Answers
  (allow or deny) are cached per (user, topic) for the rule's `cacheSeconds`;
  errors, other statuses, malformed bodies and timeouts refuse (fail closed)
  and are not cached.

Topics without a rule (the contract's `conversation:`, `presence:`,
`event:`) get None: the built-in rules decide.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import attrs
import httpx
import trio

from gateway.registry._declarations import TopicRule
from gateway.registry._registry import Registry

__all__ = ["CALLBACK_TIMEOUT_S", "TopicAuthorizer", "tenant_of_topic"]

log = logging.getLogger(__name__)

CALLBACK_TIMEOUT_S = 2.0
# Bound on cached answers; beyond it expired entries go first, then the oldest.
MAX_CACHED_ANSWERS = 10_000


class _HasCurrent(Protocol):
    @property
    def current(self) -> Registry: ...


def tenant_of_topic(topic: str) -> str | None:
    """The tenant named by a tenant-scoped topic `prefix:<tenant>/<id>`, or None."""
    _, sep, ident = topic.partition(":")
    tenant, slash, rest = ident.partition("/")
    if not sep or not slash or not tenant or not rest:
        return None
    return tenant


@attrs.frozen
class _Answer:
    allowed: bool
    expires_at: float


class TopicAuthorizer:
    """Decides subscriptions to custom topics from the (current) registry's rules."""

    def __init__(
        self,
        registry: Registry | _HasCurrent,
        *,
        http_client_factory: Callable[[], httpx.AsyncClient] | None = None,
        callback_timeout_s: float = CALLBACK_TIMEOUT_S,
    ) -> None:
        self._source = registry
        self._client_factory = http_client_factory or (
            lambda: httpx.AsyncClient(timeout=callback_timeout_s)
        )
        self._timeout_s = callback_timeout_s
        self._cache: dict[tuple[str, str], _Answer] = {}

    def _registry(self) -> Registry:
        if isinstance(self._source, Registry):
            return self._source
        return self._source.current

    async def allowed(self, principal_user_id: str, tenant: str | None, topic: str) -> bool | None:
        """True/False for a custom topic; None if no rule covers `topic`."""
        rule = self._registry().topic_rule(topic)
        if rule is None:
            return None
        if rule.auth == "public":
            return True
        if rule.auth == "tenant":
            return tenant is not None and tenant_of_topic(topic) == tenant
        return await self._ask_app(rule, principal_user_id, tenant, topic)

    async def _ask_app(self, rule: TopicRule, user_id: str, tenant: str | None, topic: str) -> bool:
        key = (user_id, topic)
        now = trio.current_time()
        cached = self._cache.get(key)
        if cached is not None and cached.expires_at > now:
            return cached.allowed
        answer = await self._post(rule, user_id, tenant, topic)
        if answer is None:
            self._cache.pop(key, None)
            return False
        if rule.cache_seconds > 0:
            self._remember(key, _Answer(answer, trio.current_time() + rule.cache_seconds))
        return answer

    def _remember(self, key: tuple[str, str], answer: _Answer) -> None:
        if key not in self._cache and len(self._cache) >= MAX_CACHED_ANSWERS:
            now = trio.current_time()
            for stale in [k for k, a in self._cache.items() if a.expires_at <= now]:
                del self._cache[stale]
            if len(self._cache) >= MAX_CACHED_ANSWERS:
                del self._cache[next(iter(self._cache))]
        self._cache[key] = answer

    async def _post(
        self, rule: TopicRule, user_id: str, tenant: str | None, topic: str
    ) -> bool | None:
        """The app's answer, or None when it could not be had (refused, not cached)."""
        assert rule.callback_url is not None
        body = {"userId": user_id, "tenant": tenant, "topic": topic}
        with trio.move_on_after(self._timeout_s) as scope:
            try:
                async with self._client_factory() as client:
                    response = await client.post(rule.callback_url, json=body)
            except httpx.HTTPError as exc:
                log.warning("topic authorization callback for %s failed: %r", topic, exc)
                return None
        if scope.cancelled_caught:
            log.warning("topic authorization callback for %s timed out", topic)
            return None
        if response.status_code != 200:
            log.warning(
                "topic authorization callback for %s answered HTTP %d", topic, response.status_code
            )
            return None
        try:
            decision = response.json()
        except ValueError:
            log.warning("topic authorization callback for %s answered non-JSON", topic)
            return None
        if not isinstance(decision, dict) or not isinstance(decision.get("allow"), bool):
            log.warning("topic authorization callback for %s answered without allow", topic)
            return None
        return decision["allow"]
