"""The GraphQL schema of the polling path, bound to the domain services.

The SDL lives beside this module (`schema.graphql`, PROTOCOL.md section 3).
Resolvers are synchronous: the whole request runs in a worker thread under
`execute` (graphql-core's async executor needs asyncio). Query
resolvers return the dicts the domain builds; graphql-core's default
resolver reads their camelCase keys. Mutation resolvers collect each
`Outcome` on the request context so the caller can fan its events out after
the request, outside the worker thread. Every root field's resolver first
checks the request's time limit (`RequestContext.check_deadline`): a
synchronous request cannot be interrupted, so it stops between fields.
"""

from __future__ import annotations

import time
from functools import cache
from importlib import resources
from typing import Any

import attrs
from graphql import FieldNode, GraphQLScalarType, GraphQLSchema, ValueNode, build_schema

from gateway.errors import QueryTimeout
from gateway.events import Outcome, iso, parse_iso

__all__ = ["RequestContext", "polling_schema"]


@attrs.define
class RequestContext:
    """What one GraphQL request carries to its resolvers."""

    viewer: Any  # gateway.domain.Viewer
    domain: Any  # gateway.domain.Domain
    realtime_config: Any  # callable(user_id) -> {"websocketUrl", "domains": [...]}
    cursor: dict | None = None  # read before any other field
    outcomes: list[Outcome] = attrs.Factory(list)
    deadline: float | None = None  # time.monotonic() past which no root field resolves
    time_limit_s: float | None = None

    def start_clock(self, time_limit_s: float | None) -> None:
        """Start the request's time limit (None: no limit)."""
        self.time_limit_s = time_limit_s
        self.deadline = None if time_limit_s is None else time.monotonic() + time_limit_s

    def check_deadline(self) -> None:
        """QueryTimeout once the time limit has passed: each root field checks it first."""
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise QueryTimeout(
                f"the request ran past its time limit of {self.time_limit_s:g} s; "
                "this field was not resolved"
            )


def _ctx(info) -> RequestContext:
    ctx = info.context
    ctx.check_deadline()
    return ctx


# Arguments that name users: qualified into the viewer's tenant at the boundary.
USER_ARGUMENTS = {"userId": "one", "participantIds": "many", "userIds": "many"}


def _arguments(ctx: RequestContext, args: dict) -> dict:
    kwargs = {}
    for key, value in args.items():
        kind = USER_ARGUMENTS.get(key)
        if kind == "one":
            value = ctx.viewer.qualify(value)
        elif kind == "many" and isinstance(value, list):
            value = [ctx.viewer.qualify(item) for item in value]
        kwargs[_snake(key)] = value
    return kwargs


def _mutation(method: str, *names: str):
    """A resolver calling `Domain.<method>(viewer, **args)` and keeping its outcome."""

    def resolve(_root, info, **args):
        ctx = _ctx(info)
        outcome = getattr(ctx.domain, method)(ctx.viewer, **_arguments(ctx, args))
        ctx.outcomes.append(outcome)
        return outcome.value

    resolve.__name__ = method
    return resolve


def _query(method: str):
    def resolve(_root, info, **args):
        ctx = _ctx(info)
        return getattr(ctx.domain, method)(ctx.viewer, **_arguments(ctx, args))

    resolve.__name__ = method
    return resolve


def _snake(name: str) -> str:
    out = []
    for char in name:
        if char.isupper():
            out.append("_")
            out.append(char.lower())
        else:
            out.append(char)
    return "".join(out)


def _selected(info) -> frozenset[str] | None:
    """The fields a field's selection names, `parent.child` one level down.

    None (everything) when a fragment is involved: the selection is then
    not read here, and the domain computes every field.
    """
    names: set[str] = set()
    for node in info.field_nodes:
        if node.selection_set is None:
            return None
        for selection in node.selection_set.selections:
            if not isinstance(selection, FieldNode):
                return None
            name = selection.name.value
            names.add(name)
            if selection.selection_set is not None:
                for inner in selection.selection_set.selections:
                    if not isinstance(inner, FieldNode):
                        return None
                    names.add(f"{name}.{inner.name.value}")
    return frozenset(names)


def _conversations(_root, info, **args):
    """`conversations`, reading only what the selection asks for."""
    ctx = _ctx(info)
    return ctx.domain.conversations(ctx.viewer, **_arguments(ctx, args), fields=_selected(info))


def _realtime_cursor(_root, info):
    ctx = _ctx(info)
    if ctx.cursor is None:
        ctx.cursor = ctx.domain.realtime_cursor(ctx.viewer)
    return ctx.cursor


def _realtime_config(_root, info):
    ctx = _ctx(info)
    return ctx.realtime_config(ctx.viewer.user_id)


QUERIES = {
    "me": _query("me"),
    "realtimeCursor": _realtime_cursor,
    "realtimeConfig": _realtime_config,
    "unreadNotificationCount": _query("unread_notification_count"),
    "notifications": _query("notifications"),
    "chatUnreadCount": _query("chat_unread_count"),
    "conversations": _conversations,
    "conversation": _query("conversation"),
    "messages": _query("messages"),
    "followRequests": _query("follow_requests"),
    "sentFollowRequests": _query("sent_follow_requests"),
    "event": _query("event"),
    "myUpcomingRsvps": _query("my_upcoming_rsvps"),
    "savedEvents": _query("saved_events"),
    "organization": _query("organization"),
    "announcements": _query("announcements"),
    "feed": _query("feed"),
    "presence": _query("presence"),
}

MUTATIONS = {
    "createNotification": "create_notification",
    "markNotificationsRead": "mark_notifications_read",
    "createConversation": "create_conversation",
    "sendChatMessage": "send_chat_message",
    "markConversationRead": "mark_conversation_read",
    "leaveConversation": "leave_conversation",
    "requestFollow": "request_follow",
    "respondFollowRequest": "respond_follow_request",
    "createEvent": "create_event",
    "setRsvp": "set_rsvp",
    "checkIn": "check_in",
    "setEventSaved": "set_event_saved",
    "createOrganization": "create_organization",
    "setMemberRole": "set_member_role",
    "postAnnouncement": "post_announcement",
    "postFeedItem": "post_feed_item",
    "broadcastNotice": "broadcast_notice",
}

# The rollout domain a top-level field belongs to (the "polling reduced" metric).
FIELD_DOMAINS = {
    "unreadNotificationCount": "notification",
    "notifications": "notification",
    "markNotificationsRead": "notification",
    "chatUnreadCount": "chat",
    "conversations": "chat",
    "conversation": "chat",
    "messages": "chat",
    "leaveConversation": "chat",
    "followRequests": "follow",
    "sentFollowRequests": "follow",
    "event": "event",
    "myUpcomingRsvps": "event",
    "savedEvents": "event",
    "organization": "organization",
    "announcements": "organization",
    "feed": "activity",
    "presence": "presence",
}


def _serialize_datetime(value: Any) -> str:
    if isinstance(value, str):
        return value
    return iso(value)


def _parse_datetime(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("DateTime must be an ISO-8601 string")
    return iso(parse_iso(value))


def _parse_datetime_literal(node: ValueNode, variables: dict[str, Any] | None = None) -> str:
    return _parse_datetime(getattr(node, "value", None))


@cache
def polling_schema() -> GraphQLSchema:
    """The executable schema, built once per process."""
    sdl = resources.files("gateway.graphql").joinpath("schema.graphql").read_text("utf-8")
    schema = build_schema(sdl)
    scalar = schema.type_map["DateTime"]
    assert isinstance(scalar, GraphQLScalarType)
    assert schema.query_type is not None and schema.mutation_type is not None
    # A scalar of a schema built from SDL gets its functions set on the instance, as
    # GraphQLScalarType.__init__ sets them itself; its stubs declare them as methods.
    scalar.serialize = _serialize_datetime  # type: ignore[method-assign]
    scalar.parse_value = _parse_datetime  # type: ignore[method-assign]
    scalar.parse_literal = _parse_datetime_literal  # type: ignore[method-assign]
    for name, field in schema.query_type.fields.items():
        field.resolve = QUERIES[name]
    for name, field in schema.mutation_type.fields.items():
        field.resolve = _mutation(MUTATIONS[name])
    return schema
