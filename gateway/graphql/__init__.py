"""The legacy polling path: GraphQL over HTTP, executed in a worker thread."""

from gateway.graphql.cache import DocumentCache
from gateway.graphql.executor import PollingExecutor, execute_request
from gateway.graphql.fairshare import FairShare
from gateway.graphql.limits import QueryLimits
from gateway.graphql.schema import FIELD_DOMAINS, RequestContext, polling_schema

__all__ = [
    "FIELD_DOMAINS",
    "DocumentCache",
    "FairShare",
    "PollingExecutor",
    "QueryLimits",
    "RequestContext",
    "execute_request",
    "polling_schema",
]
