"""The legacy polling path: GraphQL over HTTP, executed in a worker thread."""

from gateway.graphql.executor import execute_request
from gateway.graphql.schema import FIELD_DOMAINS, RequestContext, polling_schema

__all__ = ["FIELD_DOMAINS", "RequestContext", "execute_request", "polling_schema"]
