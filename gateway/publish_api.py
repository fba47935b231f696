"""The publish API: how any backend pushes its own events (`POST /realtime/events`).

A backend authenticates with a service credential (a JWT carrying the
`publish` scope, or a configured API key) and sends one event or a batch:

    {"type": "goal.activity.created", "payload": {...},
     "to": {"users": ["bob"]} | {"topic": "goal:g42"}, "idempotencyKey": "..."}
    {"events": [<event>, ...]}                      # up to `max_batch`

Every event is checked against the registry before anything is written;
durable events are appended to each recipient's stream in one transaction
(the whole request commits or nothing does), then fanned out; ephemeral
topic events are fanned out only. An idempotency key makes a retry return
the original answer (same `seq`s) without appending or fanning out again.

Tenants: a credential with a `tenant` claim T addresses users and topic ids
inside T only: `"bob"` is the stream of `T/bob` and `goal:g42` is the topic
`goal:T/g42`. Ids containing `/` are refused (403) for every credential, so
no credential can name a tenant-qualified id directly.

The answers (status and body) are documented in the README ("Push from your own backend").
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import attrs

from gateway.errors import CutoverError, Forbidden, Unauthorized
from gateway.events import Ephemeral, StoredEvent
from gateway.ports import BearerVerifier
from gateway.registry import EventType, PayloadInvalid, Registry, UnknownEventType
from gateway.store import Append, Store, run_store

__all__ = [
    "DEFAULT_IDEMPOTENCY_TTL_S",
    "DEFAULT_MAX_BATCH",
    "MAX_KEY_LENGTH",
    "MAX_USERS_PER_EVENT",
    "PUBLISH_SCOPE",
    "PublishApi",
    "PublishCredential",
    "Refusal",
]

log = logging.getLogger(__name__)

PUBLISH_SCOPE = "publish"
DEFAULT_MAX_BATCH = 1000
DEFAULT_IDEMPOTENCY_TTL_S = 86_400.0
MAX_USERS_PER_EVENT = 1000
MAX_KEY_LENGTH = 255

Publish = Callable[[Sequence[StoredEvent], Sequence[Ephemeral]], Awaitable[None]]


@attrs.frozen
class PublishCredential:
    """The backend behind a publish request.

    `subject` is `jwt:<sub>` for a token or `key:<fingerprint>` for an API
    key (never the key itself); `tenant` scopes every id it addresses.
    """

    subject: str
    tenant: str | None = None

    @property
    def idempotency_scope(self) -> str:
        """Idempotency keys of one backend never collide with another's."""
        return f"publish|{self.tenant or ''}|{self.subject}"

    def user_id(self, name: str) -> str:
        """The stream id of a user the credential names."""
        return f"{self.tenant}/{name}" if self.tenant else name

    def topic(self, topic: str) -> str:
        """The topic a credential's `prefix:id` names: `prefix:<tenant>/id` for a tenant."""
        if not self.tenant:
            return topic
        prefix, _, ident = topic.partition(":")
        return f"{prefix}:{self.tenant}/{ident}"


class Refusal(CutoverError):
    """A publish request refused as a whole: an HTTP status and an error body
    (the API's own codes, such as `PAYLOAD_INVALID` with 422)."""

    def __init__(self, status: int, code: str, message: str, path: str | None = None) -> None:
        super().__init__(message, path=path)
        self.status = status
        self.code = code

    def answer(self) -> tuple[int, dict]:
        return self.status, {"error": self.to_payload()}


@attrs.frozen
class _Item:
    """One checked event of a request, ready to commit."""

    index: int
    at: str  # the path prefix of its fields: "" or "events[3]."
    event_type: EventType
    payload: dict[str, Any]
    users: tuple[str, ...]  # as the publisher named them
    topic: str | None  # as the publisher named it
    key: str | None
    fingerprint: str  # what an idempotency key's replay is compared by ("" without a key)

    def result(self) -> dict[str, Any]:
        """The answer's entry, without recipients' `seq`s."""
        entry: dict[str, Any] = {"type": self.event_type.name, "recipients": {}}
        if self.topic is not None:
            entry["topic"] = self.topic
        if self.key is not None:
            entry["idempotencyKey"] = self.key
        return entry


@attrs.frozen
class _Committed:
    results: list[dict[str, Any]]
    events: list[StoredEvent]
    ephemeral: list[Ephemeral]


class PublishApi:
    """Authenticates publishers and commits and fans out what they send."""

    def __init__(
        self,
        store: Store,
        publish: Publish,
        registry: Callable[[], Registry],
        authenticator: BearerVerifier,
        api_keys: Sequence[str],
        *,
        max_batch: int = DEFAULT_MAX_BATCH,
        idempotency_ttl_s: float = DEFAULT_IDEMPOTENCY_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self._store = store
        self._publish = publish
        self._registry = registry
        self._authenticator = authenticator
        self._keys = [(key.encode(), _fingerprint(key)) for key in api_keys if key]
        self.max_batch = max_batch
        self.idempotency_ttl_s = idempotency_ttl_s
        self._clock = clock

    # -- credentials ---------------------------------------------------------

    async def credential(self, authorization: str | None, api_key: str | None) -> PublishCredential:
        """The publisher of a request, from its `X-Api-Key` or `Authorization: Bearer` header.

        Raises Unauthorized when neither is usable, Forbidden when a valid
        token lacks the `publish` scope.
        """
        if api_key is not None:
            return self._by_key(api_key)
        if not authorization:
            raise Unauthorized(
                "missing credential: send 'Authorization: Bearer <token with the publish scope>' "
                "or 'X-Api-Key: <key>'"
            )
        principal = await self._authenticator.bearer_async(authorization)
        if PUBLISH_SCOPE not in principal.scopes:
            raise Forbidden(f"token lacks the {PUBLISH_SCOPE!r} scope")
        return PublishCredential(subject=f"jwt:{principal.user_id}", tenant=principal.tenant)

    def _by_key(self, api_key: str) -> PublishCredential:
        given = api_key.encode()
        match: str | None = None
        for key, fingerprint in self._keys:  # every key compared, in constant time each
            if hmac.compare_digest(given, key):
                match = fingerprint
        if match is None:
            raise Unauthorized("unknown API key")
        return PublishCredential(subject=f"key:{match}")

    # -- requests --------------------------------------------------------------

    async def handle(self, credential: PublishCredential, body: Any) -> tuple[int, dict]:
        """Check, commit and fan out one request; (HTTP status, JSON body)."""
        try:
            items = self._check(credential, body)
            now = self._clock()
            committed = await run_store(self._commit, credential, items, now, limiter="store")
        except Refusal as refusal:
            return refusal.answer()
        if committed.events or committed.ephemeral:
            await self._publish(committed.events, committed.ephemeral)
        replayed = all(result["replayed"] for result in committed.results)
        return 202, {"results": committed.results, "replayed": replayed}

    def _check(self, credential: PublishCredential, body: Any) -> list[_Item]:
        """Every event of the request checked (nothing written), or a Refusal."""
        if not isinstance(body, dict):
            raise Refusal(400, "BAD_REQUEST", "body must be a JSON object")
        if "events" in body:
            raw = body["events"]
            if not isinstance(raw, list) or not raw:
                raise Refusal(400, "BAD_REQUEST", "events must be a non-empty array", "events")
            if len(raw) > self.max_batch:
                raise Refusal(
                    413,
                    "BATCH_TOO_LARGE",
                    f"a batch holds at most {self.max_batch} events, got {len(raw)}",
                    "events",
                )
            prefixes = [f"events[{i}]." for i in range(len(raw))]
        else:
            raw, prefixes = [body], [""]
        registry = self._registry()
        items = [
            self._check_item(credential, registry, index, prefix, item)
            for index, (prefix, item) in enumerate(zip(prefixes, raw, strict=True))
        ]
        keys = [item.key for item in items if item.key is not None]
        if len(keys) != len(set(keys)):
            raise Refusal(400, "BAD_REQUEST", "an idempotencyKey appears twice in one batch")
        return items

    def _check_item(
        self,
        credential: PublishCredential,
        registry: Registry,
        index: int,
        at: str,
        item: Any,
    ) -> _Item:
        if not isinstance(item, dict):
            raise Refusal(
                400, "BAD_REQUEST", "an event must be a JSON object", at.rstrip(".") or None
            )
        name = item.get("type")
        if not isinstance(name, str) or not name:
            raise Refusal(400, "BAD_REQUEST", "type must be a non-empty string", f"{at}type")
        if "payload" not in item:
            raise Refusal(400, "BAD_REQUEST", "payload is required", f"{at}payload")
        payload = item["payload"]
        key = item.get("idempotencyKey")
        if key is not None and (not isinstance(key, str) or not key or len(key) > MAX_KEY_LENGTH):
            raise Refusal(
                400,
                "BAD_REQUEST",
                f"idempotencyKey must be a string of 1 to {MAX_KEY_LENGTH} characters",
                f"{at}idempotencyKey",
            )
        try:
            event_type = registry.get(name)
        except UnknownEventType as exc:
            raise Refusal(422, "UNKNOWN_EVENT_TYPE", exc.message, f"{at}type") from None
        if event_type.builtin:
            raise Refusal(
                422,
                "NOT_PUBLISHABLE",
                f"{name} is one of the gateway's own event types; only declared types are published",
                f"{at}type",
            )
        users, topic = self._check_recipients(credential, event_type, item.get("to"), at)
        try:
            registry.validate(name, payload)
        except PayloadInvalid as exc:
            path = at + (exc.path or "$.payload").removeprefix("$.")
            raise Refusal(422, "PAYLOAD_INVALID", f"{path}: {exc.reason}", path) from None
        fingerprint = ""
        if key is not None:
            fingerprint = hashlib.sha256(
                json.dumps(
                    [name, payload, list(users), topic], sort_keys=True, separators=(",", ":")
                ).encode()
            ).hexdigest()
        return _Item(index, at, event_type, payload, users, topic, key, fingerprint)

    def _check_recipients(
        self, credential: PublishCredential, event_type: EventType, to: Any, at: str
    ) -> tuple[tuple[str, ...], str | None]:
        where = f"{at}to"
        if not isinstance(to, dict) or len(to.keys() & {"users", "topic"}) != 1:
            raise Refusal(
                400, "BAD_REQUEST", 'to must be {"users": [...]} or {"topic": "..."}', where
            )
        wants = event_type.recipients
        if "users" in to:
            if wants != "users":
                raise Refusal(
                    422,
                    "WRONG_RECIPIENTS",
                    f"{event_type.name} is sent to a topic: use to.topic",
                    f"{where}.users",
                )
            return self._check_users(to["users"], f"{where}.users"), None
        if wants != "topic":
            raise Refusal(
                422,
                "WRONG_RECIPIENTS",
                f"{event_type.name} is sent to users: use to.users",
                f"{where}.topic",
            )
        topic = to["topic"]
        prefix, sep, ident = topic.partition(":") if isinstance(topic, str) else ("", "", "")
        if not sep or not ident:
            raise Refusal(400, "BAD_REQUEST", "topic must be '<prefix>:<id>'", f"{where}.topic")
        if prefix != event_type.topic:
            raise Refusal(
                422,
                "WRONG_RECIPIENTS",
                f"{event_type.name} is sent to {event_type.topic}:<id> topics, not {prefix}:",
                f"{where}.topic",
            )
        if "/" in ident:
            raise Refusal(
                403,
                "FORBIDDEN",
                "topic ids may not contain '/': name the topic without a tenant; "
                "the credential's tenant is applied",
                f"{where}.topic",
            )
        return (), topic

    def _check_users(self, users: Any, where: str) -> tuple[str, ...]:
        if not isinstance(users, list) or not users:
            raise Refusal(400, "BAD_REQUEST", "users must be a non-empty array of user ids", where)
        if len(users) > MAX_USERS_PER_EVENT:
            raise Refusal(
                413,
                "TOO_MANY_RECIPIENTS",
                f"an event reaches at most {MAX_USERS_PER_EVENT} users, got {len(users)}",
                where,
            )
        seen: dict[str, None] = {}
        for i, user in enumerate(users):
            if not isinstance(user, str) or not user:
                raise Refusal(
                    400, "BAD_REQUEST", "a user id must be a non-empty string", f"{where}[{i}]"
                )
            if "/" in user:
                raise Refusal(
                    403,
                    "FORBIDDEN",
                    "user ids may not contain '/': name users without a tenant; "
                    "the credential's tenant is applied",
                    f"{where}[{i}]",
                )
            seen.setdefault(user, None)
        return tuple(seen)

    # -- the transaction (blocking: runs in a store thread) --------------------

    def _commit(self, credential: PublishCredential, items: list[_Item], now: float) -> _Committed:
        """The request in one transaction: its idempotency keys recalled in one
        read, its durable events appended in one batch (each recipient's in
        request order), its new keys remembered in one write."""
        scope = credential.idempotency_scope
        since = now - self.idempotency_ttl_s
        results: list[dict[str, Any]] = []
        fresh: list[tuple[_Item, dict[str, Any]]] = []
        appends: list[Append] = []
        ephemeral: list[Ephemeral] = []
        with self._store.transaction() as tx:
            keys = [item.key for item in items if item.key is not None]
            earlier = tx.recall_idempotencies(scope, keys, since) if keys else {}
            for item in items:
                if item.key is not None and item.key in earlier:
                    results.append(_replay(item, earlier[item.key], self.idempotency_ttl_s))
                    continue
                result = item.result()
                results.append(result)
                fresh.append((item, result))
                if item.event_type.durable:
                    name = item.event_type.name
                    appends.extend(
                        (credential.user_id(user), name, item.payload) for user in item.users
                    )
                else:
                    ephemeral.append(_ephemeral(credential, item))
            events = tx.append_events(appends) if appends else []
            stored = iter(events)
            records: list[tuple[str, str]] = []
            for item, result in fresh:
                if item.event_type.durable:
                    for user in item.users:
                        result["recipients"][user] = next(stored).seq
                if item.key is not None:
                    records.append((item.key, _record(item, result)))
                result["replayed"] = False
            if records:
                tx.remember_idempotencies(scope, records, now)
        return _Committed(results, events, ephemeral)


def _ephemeral(credential: PublishCredential, item: _Item) -> Ephemeral:
    event_type = item.event_type
    if item.topic is not None:
        topic = credential.topic(item.topic)
        return Ephemeral(
            type=event_type.name,
            payload=item.payload,
            cls=event_type.ephemeral_class or "drop",
            topic=topic,
            key=f"{event_type.name}:{topic}",
        )
    return Ephemeral(
        type=event_type.name,
        payload=item.payload,
        cls=event_type.ephemeral_class or "drop",
        users=tuple(credential.user_id(user) for user in item.users),
    )


def _record(item: _Item, result: dict[str, Any]) -> str:
    """The idempotency record of a committed event: its fingerprint and its answer."""
    return json.dumps({"fingerprint": item.fingerprint, "result": result})


def _replay(item: _Item, record_json: str, ttl_s: float) -> dict[str, Any]:
    record = json.loads(record_json)
    if record.get("fingerprint") != item.fingerprint:
        raise Refusal(
            422,
            "IDEMPOTENCY_KEY_REUSED",
            f"idempotencyKey {item.key!r} was used for a different event "
            f"in the last {ttl_s / 3600:g} h",
            f"{item.at}idempotencyKey",
        )
    return {**record["result"], "replayed": True}


def _fingerprint(api_key: str) -> str:
    return hashlib.sha256(api_key.encode()).hexdigest()[:16]
