"""The MongoDB collections and their indexes: one index for every query the store runs.

Created when a store opens (`create_indexes` is idempotent: an index that
exists with the same keys and options is left as it is). Records with a
natural single key keep it in `_id`; the others get a unique index on their
key. The query each index serves is named beside it.
"""

from __future__ import annotations

from pymongo import ASCENDING as UP
from pymongo import DESCENDING as DOWN
from pymongo import IndexModel

__all__ = ["COLLECTIONS", "INDEXES"]


def _index(name: str, *keys: tuple[str, int], unique: bool = False, **options) -> IndexModel:
    if unique:
        options["unique"] = True
    return IndexModel(list(keys), name=name, **options)


INDEXES: dict[str, list[IndexModel]] = {
    # _id: user id. `retained` (head_seq - retained_from + 1, the events kept): prune by count.
    "streams": [_index("retained", ("retained", UP))],
    "stream_events": [
        # events_after, prune's deletes, reset_stream
        _index("by_stream", ("user_id", UP), ("epoch", UP), ("seq", UP), unique=True),
        _index("age", ("created_ts", UP)),  # prune by age
    ],
    # _id: ticket hash. Expired tickets go with prune (the callers' clock decides expiry).
    "tickets": [_index("expiry", ("expires_at", UP))],
    "idempotency": [
        _index("by_key", ("scope", UP), ("key", UP), unique=True),  # recall, remember
        _index("age", ("created_ts", UP)),  # prune
    ],
    "users": [],  # _id: user id
    "counters": [],  # _id: counter name (the `pos` and order of records in one scope)
    "notifications": [  # _id: notification id
        _index("by_user", ("user_id", UP), ("pos", DOWN)),  # list, paging
        _index("unread", ("user_id", UP), ("read_at", UP)),  # count unread, mark read
    ],
    "conversations": [  # _id: conversation id; participants: sorted user ids
        # conversations_of (newest first), share_conversation
        _index("by_participant", ("participants", UP), ("updated_at", DOWN), ("_id", DOWN)),
    ],
    "messages": [  # _id: message id
        _index("by_conversation", ("conversation_id", UP), ("pos", DOWN)),
        _index(
            "by_client_id",
            ("sender_id", UP),
            ("client_message_id", UP),
            unique=True,
            partialFilterExpression={"client_message_id": {"$type": "string"}},
        ),
    ],
    "read_states": [_index("by_key", ("conversation_id", UP), ("user_id", UP), unique=True)],
    "deliveries": [_index("by_key", ("message_id", UP), ("user_id", UP), unique=True)],
    "follow_requests": [  # _id: request id
        _index("pair", ("from_user_id", UP), ("to_user_id", UP), unique=True),
        _index(
            "to_by_status", ("to_user_id", UP), ("status", UP), ("updated_at", DOWN), ("_id", DOWN)
        ),
        _index("to", ("to_user_id", UP), ("updated_at", DOWN), ("_id", DOWN)),
        _index(
            "from_by_status",
            ("from_user_id", UP),
            ("status", UP),
            ("updated_at", DOWN),
            ("_id", DOWN),
        ),
        _index("from", ("from_user_id", UP), ("updated_at", DOWN), ("_id", DOWN)),
    ],
    "gatherings": [],  # _id: event id
    "rsvps": [
        _index("by_key", ("event_id", UP), ("user_id", UP), unique=True),
        _index("by_status", ("event_id", UP), ("status", UP), ("seq", UP)),  # counts, user ids
        _index("by_user", ("user_id", UP), ("event_id", UP)),  # rsvps_of
    ],
    "check_ins": [_index("by_key", ("event_id", UP), ("user_id", UP), unique=True)],
    "saved_events": [
        _index("by_key", ("user_id", UP), ("event_id", UP), unique=True),
        _index("by_user", ("user_id", UP), ("seq", DOWN)),  # saved_event_ids
    ],
    "organizations": [],  # _id: org id
    "memberships": [
        _index("by_key", ("org_id", UP), ("user_id", UP), unique=True),
        _index("by_org", ("org_id", UP), ("seq", UP)),  # list_memberships
    ],
    "announcements": [_index("by_org", ("org_id", UP), ("pos", DOWN))],  # _id: announcement id
    "feed_items": [_index("by_author", ("author_id", UP), ("pos", DOWN))],  # _id: item id
    "presence": [],  # _id: user id
    # _id: "<hour>|<domain>|<source>|<stage>"; evidence_since reads by hour.
    "parity_evidence": [_index("by_hour", ("hour", UP))],
    # _id: connection id. The server removes a record once its `expire_on` passes.
    "connections": [
        _index("ttl", ("expire_on", UP), expireAfterSeconds=0),
        _index("by_user", ("user_id", UP), ("expire_on", UP)),
    ],
}

COLLECTIONS = tuple(INDEXES)
