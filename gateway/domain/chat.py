"""Chat: conversations, messages, read state and deliveries, as each participant sees them.

Participants all live in the tenant of the conversation's creator; a
conversation of another tenant answers as if it did not exist.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from gateway.domain._change import Change, check_limit, require_text
from gateway.domain.viewer import Viewer, record_id
from gateway.errors import BadRequest, Conflict, Forbidden, NotFound
from gateway.events import Ephemeral
from gateway.store import Row, Tx

__all__ = [
    "conversation_view",
    "conversation_views",
    "conversations",
    "create_conversation",
    "leave_conversation",
    "mark_conversation_read",
    "mark_delivered",
    "message_shape",
    "messages",
    "revocation",
    "send_message",
    "total_unread",
    "typing",
]

MAX_PARTICIPANTS = 100
MAX_BODY = 10_000
MAX_CLIENT_ID = 200
TYPING_STATES = ("started", "stopped")


def _conversation_for(tx: Tx, viewer: Viewer, conversation_id: Any) -> Row:
    """The conversation, if the viewer takes part in it.

    One of another tenant is NOT_FOUND, exactly like an unknown id; a
    non-participant of the viewer's own tenant is FORBIDDEN.
    """
    if not isinstance(conversation_id, str) or not conversation_id:
        raise BadRequest("conversationId must be a non-empty string", path="conversationId")
    missing = NotFound(f"conversation {conversation_id} not found")
    conversation = tx.get_conversation(conversation_id)
    if conversation is None:
        raise missing
    if not tx.is_participant(conversation_id, viewer.user_id):
        participants = tx.list_participants(conversation_id)
        if not viewer.reaches(conversation_id, participants[0] if participants else None):
            raise missing
        raise Forbidden("only participants can use this conversation")
    return conversation


def _shape(row: Row, delivered_to: list[str] | None, reads: list[Row] | None) -> dict[str, Any]:
    """A stored message as the GraphQL `Message` type; `reads` are its conversation's.

    None for `delivered_to` or `reads` leaves out `deliveredTo` or `readBy`.
    """
    shape = {
        "id": row["id"],
        "conversationId": row["conversation_id"],
        "senderId": row["sender_id"],
        "body": row["body"],
        "createdAt": row["created_at"],
        "clientMessageId": row["client_message_id"],
    }
    if delivered_to is not None:
        shape["deliveredTo"] = sorted(delivered_to)
    if reads is not None:
        shape["readBy"] = sorted(
            read["user_id"]
            for read in reads
            if read["message_pos"] >= row["pos"] and read["user_id"] != row["sender_id"]
        )
    return shape


def _delivered(tx: Tx, message_ids: Iterable[str]) -> dict[str, list[str]]:
    delivered: dict[str, list[str]] = {}
    for delivery in tx.list_deliveries(message_ids):
        delivered.setdefault(delivery["message_id"], []).append(delivery["user_id"])
    return delivered


def message_shapes(tx: Tx, conversation_id: str, rows: list[Row]) -> list[dict[str, Any]]:
    """Stored messages as the GraphQL `Message` type, with deliveries and readers."""
    if not rows:
        return []
    delivered = _delivered(tx, (row["id"] for row in rows))
    reads = tx.list_read_states(conversation_id)
    return [_shape(row, delivered.get(row["id"], []), reads) for row in rows]


def message_shape(tx: Tx, row: Row) -> dict[str, Any]:
    return message_shapes(tx, row["conversation_id"], [row])[0]


def conversation_views(
    tx: Tx, conversations: list[Row], user_id: str, fields: frozenset[str] | None = None
) -> list[dict[str, Any]]:
    """Conversations as the GraphQL `Conversation` type, as `user_id` sees them.

    A fixed number of store reads whatever the number of conversations (the
    store's batched reads), not a few per conversation. `fields` (the
    `Conversation` fields wanted, `lastMessage.<field>` for the message's; None:
    all) leaves out the reads of what is not wanted: a view then lacks the
    keys of unwanted participants, read states and deliveries.
    """
    if not conversations:
        return []

    def wanted(*names: str) -> bool:
        return fields is None or any(name in fields for name in names)

    ids = [conversation["id"] for conversation in conversations]
    with_last = wanted("lastMessage")
    with_reads = wanted("lastReadMessageId") or (with_last and wanted("lastMessage.readBy"))
    with_deliveries = with_last and wanted("lastMessage.deliveredTo")
    lasts = tx.last_messages(ids) if with_last else {}
    participants = tx.participants_of(ids) if wanted("participantIds") else None
    reads = tx.read_states_of(ids) if with_reads else {}
    unread = tx.unread_counts(user_id, ids) if wanted("unreadCount") else None
    delivered = _delivered(tx, (row["id"] for row in lasts.values())) if with_deliveries else {}
    views = []
    for conversation in conversations:
        conversation_id = conversation["id"]
        states = reads.get(conversation_id, [])
        view: dict[str, Any] = {"id": conversation_id}
        if participants is not None:
            view["participantIds"] = participants.get(conversation_id, [])
        if with_last:
            last = lasts.get(conversation_id)
            view["lastMessage"] = (
                _shape(
                    last,
                    delivered.get(last["id"], []) if with_deliveries else None,
                    states if with_reads else None,
                )
                if last is not None
                else None
            )
        if unread is not None:
            view["unreadCount"] = unread.get(conversation_id, 0)
        if with_reads:
            own = next((read for read in states if read["user_id"] == user_id), None)
            view["lastReadMessageId"] = own["message_id"] if own is not None else None
        view["updatedAt"] = conversation["updated_at"]
        views.append(view)
    return views


def conversation_view(tx: Tx, conversation: Row, user_id: str) -> dict[str, Any]:
    """A conversation as the GraphQL `Conversation` type, as `user_id` sees it."""
    return conversation_views(tx, [conversation], user_id)[0]


def total_unread(tx: Tx, user_id: str) -> int:
    """The chat badge: the sum of the user's per-conversation unread counts."""
    ids = [conversation["id"] for conversation in tx.conversations_of(user_id)]
    return sum(tx.unread_counts(user_id, ids).values()) if ids else 0


def _tell_participants(change: Change, conversation: Row, participants: Iterable[str]) -> None:
    """`chat.conversation.updated` to each participant, as each sees the conversation."""
    for user_id in participants:
        change.emit(
            user_id,
            "chat.conversation.updated",
            {
                "conversation": conversation_view(change.tx, conversation, user_id),
                "totalUnread": total_unread(change.tx, user_id),
            },
        )


# -- queries -----------------------------------------------------------------


def conversations(
    tx: Tx, viewer: Viewer, first: int, fields: frozenset[str] | None = None
) -> list[dict[str, Any]]:
    first = check_limit(first, "first")
    rows = tx.conversations_of(viewer.user_id, first)
    return conversation_views(tx, rows, viewer.user_id, fields)


def conversation(tx: Tx, viewer: Viewer, conversation_id: str) -> dict[str, Any]:
    return conversation_view(tx, _conversation_for(tx, viewer, conversation_id), viewer.user_id)


def messages(
    tx: Tx, viewer: Viewer, conversation_id: str, last: int, before: str | None
) -> list[dict[str, Any]]:
    """Up to `last` messages before `before` (a message id), oldest first."""
    _conversation_for(tx, viewer, conversation_id)
    last = check_limit(last, "last")
    before_pos = None
    if before is not None:
        anchor = tx.get_message(before)
        if anchor is None or anchor["conversation_id"] != conversation_id:
            raise BadRequest("before is not a message of this conversation", path="before")
        before_pos = anchor["pos"]
    rows = tx.list_messages(conversation_id, last, before_pos)
    rows.reverse()
    return message_shapes(tx, conversation_id, rows)


# -- mutations ---------------------------------------------------------------


def create_conversation(change: Change, viewer: Viewer, participant_ids: Any) -> dict[str, Any]:
    """A new conversation of the viewer and the given users."""
    if not isinstance(participant_ids, list | tuple) or not all(
        isinstance(uid, str) and uid for uid in participant_ids
    ):
        raise BadRequest("participantIds must be a list of user ids", path="participantIds")
    members = list(dict.fromkeys([viewer.user_id, *map(viewer.qualify, participant_ids)]))
    if len(members) < 2:
        raise BadRequest("a conversation needs someone besides you", path="participantIds")
    if len(members) > MAX_PARTICIPANTS:
        raise BadRequest(f"at most {MAX_PARTICIPANTS} participants", path="participantIds")
    row = {
        "id": record_id("cnv", viewer.user_id),
        "created_at": change.stamp,
        "updated_at": change.stamp,
        "last_message_id": None,
    }
    change.tx.insert_conversation(row, members)
    _tell_participants(change, row, sorted(members))
    return conversation_view(change.tx, row, viewer.user_id)


def leave_conversation(change: Change, viewer: Viewer, conversation_id: str) -> bool:
    """Leave a conversation: the others are told, and the leaver's live
    subscriptions to it are revoked at once (on every node, through the backplane)."""
    tx = change.tx
    conversation = _conversation_for(tx, viewer, conversation_id)
    tx.remove_participant(conversation_id, viewer.user_id)
    _tell_participants(change, conversation, tx.list_participants(conversation_id))
    change.announce(
        revocation(viewer.user_id, f"conversation:{conversation_id}", "LEFT_CONVERSATION")
    )
    return True


def revocation(user_id: str, topic: str, reason: str) -> Ephemeral:
    """The signal that drops a user's subscription to `topic` wherever it is connected."""
    return Ephemeral(
        "subscription.revoked",
        {"topic": topic, "reason": reason},
        cls="notice",
        users=(user_id,),
    )


def send_message(
    change: Change,
    viewer: Viewer,
    conversation_id: str,
    body: str,
    client_message_id: str | None,
) -> dict[str, Any]:
    """Post a message; a replay of the same `client_message_id` returns the original."""
    tx = change.tx
    conversation = _conversation_for(tx, viewer, conversation_id)
    require_text(body, "body", max_length=MAX_BODY)
    if client_message_id is not None:
        require_text(client_message_id, "clientMessageId", max_length=MAX_CLIENT_ID)
        original = tx.find_message_by_client_id(viewer.user_id, client_message_id)
        if original is not None:
            if original["conversation_id"] != conversation_id:
                raise Conflict("clientMessageId was already used in another conversation")
            return message_shape(tx, original)
    row = tx.insert_message(
        {
            "id": record_id("msg", viewer.user_id),
            "conversation_id": conversation_id,
            "sender_id": viewer.user_id,
            "body": body,
            "created_at": change.stamp,
            "client_message_id": client_message_id,
        }
    )
    tx.touch_conversation(conversation_id, change.stamp, row["id"])
    conversation = {**conversation, "updated_at": change.stamp, "last_message_id": row["id"]}
    message = message_shape(tx, row)
    participants = tx.list_participants(conversation_id)
    for user_id in participants:
        change.emit(user_id, "chat.message", {"message": message})
    _tell_participants(change, conversation, participants)
    return message


def mark_conversation_read(
    change: Change, viewer: Viewer, conversation_id: str, up_to_message_id: str | None
) -> dict[str, Any]:
    """Move the viewer's read position forward (to the latest message by default)."""
    tx = change.tx
    conversation = _conversation_for(tx, viewer, conversation_id)
    if up_to_message_id is None:
        target = tx.last_message(conversation_id)
    else:
        target = tx.get_message(up_to_message_id)
        if target is None or target["conversation_id"] != conversation_id:
            raise BadRequest(
                "upToMessageId is not a message of this conversation", path="upToMessageId"
            )
    current = tx.get_read_state(conversation_id, viewer.user_id)
    if target is None or (current is not None and current["message_pos"] >= target["pos"]):
        return conversation_view(tx, conversation, viewer.user_id)
    tx.put_read_state(conversation_id, viewer.user_id, target["id"], target["pos"], change.stamp)
    read = {
        "conversationId": conversation_id,
        "userId": viewer.user_id,
        "upToMessageId": target["id"],
        "readAt": change.stamp,
    }
    for user_id in tx.list_participants(conversation_id):
        change.emit(user_id, "chat.read", read)
    _tell_participants(change, conversation, [viewer.user_id])
    return conversation_view(tx, conversation, viewer.user_id)


def mark_delivered(change: Change, viewer: Viewer, conversation_id: str, message_ids: Any) -> int:
    """Record that messages reached the viewer's device; tells each sender once."""
    tx = change.tx
    _conversation_for(tx, viewer, conversation_id)
    if not isinstance(message_ids, list | tuple) or not all(
        isinstance(mid, str) for mid in message_ids
    ):
        raise BadRequest("messageIds must be a list of message ids", path="messageIds")
    if len(message_ids) > 500:
        raise BadRequest("at most 500 messageIds at once", path="messageIds")
    recorded = 0
    for message_id in dict.fromkeys(message_ids):
        message = tx.get_message(message_id)
        if message is None or message["conversation_id"] != conversation_id:
            raise BadRequest(
                f"{message_id} is not a message of this conversation", path="messageIds"
            )
        if message["sender_id"] == viewer.user_id:
            continue
        if tx.insert_delivery(message_id, viewer.user_id, change.stamp):
            recorded += 1
            change.emit(
                message["sender_id"],
                "chat.message.delivered",
                {
                    "conversationId": conversation_id,
                    "messageId": message_id,
                    "userId": viewer.user_id,
                    "deliveredAt": change.stamp,
                },
            )
    return recorded


def typing(change: Change, viewer: Viewer, conversation_id: str, state: str) -> None:
    """Tell the conversation's other subscribers that the viewer started or stopped typing."""
    if state not in TYPING_STATES:
        raise BadRequest("state must be started or stopped", path="state")
    _conversation_for(change.tx, viewer, conversation_id)
    change.announce(
        Ephemeral(
            f"chat.typing.{state}",
            {"conversationId": conversation_id, "userId": viewer.user_id},
            cls="drop",
            topic=f"conversation:{conversation_id}",
            exclude_user=viewer.user_id,
        )
    )


def is_participant(tx: Tx, conversation_id: str, user_id: str) -> bool:
    """Participants share the conversation's tenant, so this never crosses tenants."""
    return tx.is_participant(conversation_id, user_id)
