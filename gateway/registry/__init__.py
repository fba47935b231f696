"""The event-type registry: declared event types and custom topics of the apps.

Apps publishing through the gateway declare each event type (name, major
version, durable or ephemeral, recipients, payload JSON Schema) and each
custom topic's authorization in a directory of JSON files; the contract's
own domain events are declared the same way as built-ins, so the whole
contract is one registry. See `_declarations` for the file format.
"""

from gateway.registry._declarations import (
    BUILTIN_TOPIC_PREFIXES,
    EventType,
    TopicRule,
    parse_event_type,
    parse_topic_rule,
)
from gateway.registry._errors import DeclarationInvalid, PayloadInvalid, UnknownEventType
from gateway.registry._registry import (
    Registry,
    build_registry,
    contract_builtins,
    load_registry,
    read_declarations,
)
from gateway.registry._schema_diff import Breaking, check_compat
from gateway.registry.compat import check_registries, compare_registries, run_check
from gateway.registry.topic_auth import TopicAuthorizer, tenant_of_topic
from gateway.registry.watcher import RegistryWatcher

__all__ = [
    "BUILTIN_TOPIC_PREFIXES",
    "Breaking",
    "DeclarationInvalid",
    "EventType",
    "PayloadInvalid",
    "Registry",
    "RegistryWatcher",
    "TopicAuthorizer",
    "TopicRule",
    "UnknownEventType",
    "build_registry",
    "check_compat",
    "check_registries",
    "compare_registries",
    "contract_builtins",
    "load_registry",
    "parse_event_type",
    "parse_topic_rule",
    "read_declarations",
    "run_check",
    "tenant_of_topic",
]
