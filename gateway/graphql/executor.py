"""One GraphQL request, start to end, synchronously (run it in a worker thread).

GraphQL over HTTP as clients expect it:

- a request that cannot be executed (not an object with a `query` string, a
  document over a limit, a syntax or validation error, an unknown operation,
  variables of the wrong type or missing) answers HTTP 400 with `errors`
  only, each with `extensions.code` `BAD_REQUEST`; a variable's error names
  it in `extensions.path` (`variables.first`, `variables.ids[2]`);
- an executed request answers 200 with `data` (null when a non-null root
  field failed) and, when fields failed, `errors`, whatever the failed field's
  nullability (Apollo and gql treat a 4xx answer as a network failure).

Before execution a request passes the limits of `gateway.graphql.limits`;
during it, each root field first checks the request's time limit, so a slow
request ends with a `TIMEOUT` error for each field it did not resolve.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable
from functools import partial
from typing import Any, TypeGuard

import attrs
from graphql import (
    DocumentNode,
    ExecutionResult,
    FieldNode,
    GraphQLError,
    OperationDefinitionNode,
    OperationType,
    execute,
    get_operation_ast,
    parse,
    validate,
)
from graphql.execution.values import get_variable_values

from gateway.errors import CutoverError, StoreUnavailable
from gateway.graphql.cache import DocumentCache
from gateway.graphql.limits import QueryLimits, limit_error
from gateway.graphql.schema import FIELD_DOMAINS, RequestContext, polling_schema
from ops import metrics

__all__ = ["CACHE_MAX_QUERY_BYTES", "PollingExecutor", "Prepared", "execute_request"]

CACHE_MAX_QUERY_BYTES = 8_192  # larger queries are parsed for each request, never kept
DEFAULT_CACHE_BYTES = 262_144

_BAD_REQUEST = {"code": "BAD_REQUEST"}


def _format_error(error: GraphQLError) -> dict[str, Any]:
    formatted: dict[str, Any] = dict(error.formatted)
    original = error.original_error
    if isinstance(original, CutoverError):
        formatted["message"] = original.message
        formatted["extensions"] = {"code": original.code}
        if original.path:
            formatted["extensions"]["path"] = original.path
    elif original is not None:
        formatted["message"] = "internal error"
        formatted["extensions"] = {"code": "INTERNAL"}
    else:
        formatted.setdefault("extensions", dict(_BAD_REQUEST))
    return formatted


def _refusal(message: str, **extensions: Any) -> tuple[int, dict[str, Any]]:
    return 400, {"errors": [{"message": message, "extensions": {**_BAD_REQUEST, **extensions}}]}


@attrs.frozen
class Prepared:
    """A parsed query that passed the limits and validation, or the errors refusing it."""

    document: DocumentNode | None
    errors: tuple[dict[str, Any], ...] = ()
    polled_domains: frozenset[str] = frozenset()
    reads_only: bool = True


def _polled_domains(document: DocumentNode) -> frozenset[str]:
    """The rollout domains a read-only request polls, from its top-level fields."""
    return frozenset(
        FIELD_DOMAINS[selection.name.value]
        for definition in document.definitions
        if isinstance(definition, OperationDefinitionNode)
        and definition.operation == OperationType.QUERY
        for selection in definition.selection_set.selections
        if isinstance(selection, FieldNode) and selection.name.value in FIELD_DOMAINS
    )


def _reads_only(document: DocumentNode) -> bool:
    return all(
        definition.operation == OperationType.QUERY
        for definition in document.definitions
        if isinstance(definition, OperationDefinitionNode)
    )


_VARIABLE_MESSAGE = re.compile(r"^Variable '\$(?P<name>[^']+)' has invalid (?:default )?value")
_VARIABLE_AT = re.compile(r"^Variable '\$[^']+' has invalid value at (?P<at>\S+?):")


def _variable_path(error: GraphQLError) -> str | None:
    """`variables.<name>` and the place inside it, from a coercion error."""
    match = _VARIABLE_MESSAGE.match(error.message)
    if match is None:
        return None
    path = f"variables.{match.group('name')}"
    inside = _VARIABLE_AT.match(error.message)
    if inside is not None:
        at = inside.group("at")
        path += at if at.startswith("[") else f".{at.lstrip('.')}"
    return path


def _never_awaitable(_value: Any) -> TypeGuard[Awaitable[Any]]:
    """Every resolver is synchronous: graphql-core need not test each value it completes."""
    return False


class PollingExecutor:
    """Executes GraphQL-over-HTTP request bodies within `limits`, caching prepared queries."""

    def __init__(
        self,
        limits: QueryLimits | None = None,
        *,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        audit: Any = None,
    ) -> None:
        self.limits = limits or QueryLimits()
        # gateway.audit.ShadowAudit: picks polls to compare with the push path and
        # takes each one's result and cursor (its work is done off this thread).
        self.audit = audit
        self.cache: DocumentCache[Prepared] = DocumentCache(cache_bytes, CACHE_MAX_QUERY_BYTES)
        self._rules = self.limits.rules()

    def prepare(self, query: str) -> Prepared:
        """Parse and validate a query within the limits (cached for small queries)."""
        prepared = self.cache.get(query)
        if prepared is None:
            prepared = self._prepare(query)
            self.cache.put(query, prepared)
        return prepared

    def _prepare(self, query: str) -> Prepared:
        limits = self.limits
        size = len(query.encode("utf-8", "surrogatepass"))
        if size > limits.max_query_bytes:
            error = limit_error(
                "bytes", "the query's size", size, limits.max_query_bytes, unit=" bytes"
            )
            return Prepared(None, (dict(error.formatted),))
        try:
            document = parse(query, max_tokens=limits.max_tokens)
        except GraphQLError as error:
            if "more than" in error.message and " tokens" in error.message:
                error = limit_error(
                    "tokens",
                    "the query's number of tokens",
                    limits.max_tokens + 1,
                    limits.max_tokens,
                    at_least=True,
                )
            return Prepared(None, (_format_error(error),))
        schema = polling_schema()
        # The limits first: some standard rules are quadratic in the number of fields.
        errors = validate(schema, document, self._rules) or validate(schema, document)
        if errors:
            return Prepared(None, tuple(_format_error(error) for error in errors))
        return Prepared(document, (), _polled_domains(document), _reads_only(document))

    def execute(self, body: Any, ctx: RequestContext) -> tuple[int, dict[str, Any]]:
        """Execute a GraphQL-over-HTTP request body; returns (HTTP status, response body).

        `realtimeCursor` is read before any other field of the request, so the
        data returned may include events after it but never misses one.
        """
        if not isinstance(body, dict) or not isinstance(body.get("query"), str):
            return _refusal("expected a JSON object with a 'query' string")
        variables = body.get("variables")
        if variables is not None and not isinstance(variables, dict):
            return _refusal("'variables' must be an object or null", path="variables")
        operation_name = body.get("operationName") or None
        if operation_name is not None and not isinstance(operation_name, str):
            return _refusal("'operationName' must be a string or null", path="operationName")
        ctx.start_clock(self.limits.timeout_s)
        query = body["query"]
        prepared = self.prepare(query)
        document = prepared.document
        if document is None:
            return 400, {"errors": list(prepared.errors)}
        schema = polling_schema()
        operation = get_operation_ast(document, operation_name)
        if operation is None:
            message = (
                f"no operation named {operation_name!r} in the query"
                if operation_name
                else "the query has several operations: name one in 'operationName'"
            )
            return _refusal(message, path="operationName")
        coerced = get_variable_values(schema, operation.variable_definitions or (), variables or {})
        if isinstance(coerced, list):
            return 400, {"errors": [self._variable_error(error) for error in coerced]}
        audited = (
            self.audit is not None
            and prepared.reads_only
            and self.audit.sample(ctx.viewer.user_id, prepared.polled_domains)
        )
        if "realtimeCursor" in query or audited:
            ctx.cursor = ctx.domain.realtime_cursor(ctx.viewer)
        run = partial(
            execute,
            schema,
            document,
            variable_values=variables,
            operation_name=operation_name,
            context_value=ctx,
            is_awaitable=_never_awaitable,
        )
        for domain in prepared.polled_domains:
            metrics.POLL_REQUESTS.labels(domain).inc()
        if prepared.reads_only:
            with ctx.domain.consistent_read():
                if ctx.cursor is not None:
                    # The same position, read in the snapshot the fields are read from.
                    ctx.cursor = ctx.domain.realtime_cursor(ctx.viewer)
                result = run()
        else:
            result = run()
        assert isinstance(result, ExecutionResult)  # every resolver is synchronous
        response: dict[str, Any] = {}
        if result.errors:
            response["errors"] = [_format_error(error) for error in result.errors]
        response["data"] = result.data
        if any(isinstance(error.original_error, StoreUnavailable) for error in result.errors or ()):
            return 503, response  # the store, not the request: retrying later may work
        if audited and result.data is not None and ctx.cursor is not None:
            self.audit.offer(ctx.viewer, document, operation_name, coerced, result.data, ctx.cursor)
        return 200, response

    @staticmethod
    def _variable_error(error: GraphQLError) -> dict[str, Any]:
        formatted: dict[str, Any] = dict(error.formatted)
        extensions = dict(_BAD_REQUEST)
        path = _variable_path(error)
        if path is not None:
            extensions["path"] = path
        formatted["extensions"] = extensions
        return formatted


_default: PollingExecutor | None = None


def execute_request(body: Any, ctx: RequestContext) -> tuple[int, dict[str, Any]]:
    """`PollingExecutor.execute` with the default limits (one executor per process)."""
    global _default
    if _default is None:
        _default = PollingExecutor()
    return _default.execute(body, ctx)
