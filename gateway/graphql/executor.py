"""One GraphQL request, start to end, synchronously (run it in a worker thread)."""

from __future__ import annotations

from functools import lru_cache, partial
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    GraphQLError,
    OperationDefinitionNode,
    OperationType,
    execute,
    parse,
    validate,
)

from gateway.errors import CutoverError
from gateway.graphql.schema import FIELD_DOMAINS, RequestContext, polling_schema
from ops import metrics

__all__ = ["execute_request"]


def _format_error(error: GraphQLError) -> dict[str, Any]:
    formatted = error.formatted
    original = error.original_error
    if isinstance(original, CutoverError):
        formatted["message"] = original.message
        formatted["extensions"] = {"code": original.code}
    elif original is not None:
        formatted["message"] = "internal error"
        formatted["extensions"] = {"code": "INTERNAL"}
    else:
        formatted.setdefault("extensions", {"code": "BAD_REQUEST"})
    return formatted


@lru_cache(maxsize=512)
def _document(query: str) -> tuple[DocumentNode | None, tuple[GraphQLError, ...]]:
    """Parse and validate a query once: clients poll the same few queries over and over."""
    try:
        document = parse(query)
    except GraphQLError as error:
        return None, (error,)
    errors = validate(polling_schema(), document)
    return (None, tuple(errors)) if errors else (document, ())


@lru_cache(maxsize=512)
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


def execute_request(body: Any, ctx: RequestContext) -> tuple[int, dict[str, Any]]:
    """Execute a GraphQL-over-HTTP request body; returns (HTTP status, response body).

    `realtimeCursor` is read before any other field of the request, so the
    data returned may include events after it but never misses one.
    """
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        return 400, {
            "errors": [
                {
                    "message": "expected a JSON object with a 'query' string",
                    "extensions": {"code": "BAD_REQUEST"},
                }
            ]
        }
    variables = body.get("variables")
    if variables is not None and not isinstance(variables, dict):
        return 400, {
            "errors": [
                {"message": "'variables' must be an object", "extensions": {"code": "BAD_REQUEST"}}
            ]
        }
    query = body["query"]
    if "realtimeCursor" in query:
        ctx.cursor = ctx.domain.realtime_cursor(ctx.viewer)
    document, errors = _document(query)
    if document is None:
        return 400, {"errors": [_format_error(error) for error in errors]}
    run = partial(
        execute,
        polling_schema(),
        document,
        variable_values=variables,
        operation_name=body.get("operationName"),
        context_value=ctx,
    )
    for domain in _polled_domains(document):
        metrics.POLL_REQUESTS.labels(domain).inc()
    if _reads_only(document):
        with ctx.domain.consistent_read():
            if ctx.cursor is not None:
                # The same position, read in the snapshot the fields are read from.
                ctx.cursor = ctx.domain.realtime_cursor(ctx.viewer)
            result = run()
    else:
        result = run()
    response: dict[str, Any] = {}
    if result.errors:
        response["errors"] = [_format_error(error) for error in result.errors]
    if result.data is not None or not result.errors:
        response["data"] = result.data
    status = 200 if "data" in response else 400
    return status, response
