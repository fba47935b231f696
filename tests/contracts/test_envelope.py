"""Server envelopes: compact, newline-free JSON; frames split back in order."""

from __future__ import annotations

import json

import pytest

import contracts
from contracts import ProtocolError, encode_envelope, join_envelopes, split_frame


def test_envelope_keys_and_optional_fields():
    text = encode_envelope(
        "chat.read", {"conversationId": "c"}, id="evt_1", sent_at="2026-02-17T00:00:00.000Z"
    )
    assert json.loads(text) == {
        "v": 1,
        "id": "evt_1",
        "type": "chat.read",
        "sentAt": "2026-02-17T00:00:00.000Z",
        "payload": {"conversationId": "c"},
    }
    with_seq = json.loads(
        encode_envelope("chat.read", {}, id="e", sent_at="t", seq=0, reply_to="c-1")
    )
    assert with_seq["seq"] == 0
    assert with_seq["replyTo"] == "c-1"
    assert list(with_seq) == ["v", "id", "type", "seq", "sentAt", "replyTo", "payload"]


def test_envelope_is_compact():
    text = encode_envelope("ack", {"topic": "event:e1"}, id="e", sent_at="t")
    assert " " not in text


@pytest.mark.parametrize(
    "body", ["line one\nline two", "\r\n", "tab\tand\u2028separator", "ünïcødé 🎉", "\x00"]
)
def test_envelope_never_contains_a_raw_newline(body):
    text = encode_envelope(
        "chat.message", {"message": {"body": body, "nested": [{"deep": body}]}}, id="e", sent_at="t"
    )
    assert "\n" not in text
    assert "\r" not in text
    [envelope] = split_frame(text)
    assert envelope["payload"]["message"]["body"] == body


def test_non_finite_numbers_are_refused():
    with pytest.raises(ValueError):
        encode_envelope("event.counters.updated", {"going": float("nan")}, id="e", sent_at="t")


def test_a_frame_of_several_envelopes_splits_in_order():
    texts = [
        encode_envelope(
            "chat.message", {"message": {"body": f"m{i}\n"}}, id=f"e{i}", sent_at="t", seq=i
        )
        for i in range(1, 4)
    ]
    envelopes = split_frame(join_envelopes(texts))
    assert [e["seq"] for e in envelopes] == [1, 2, 3]
    assert [e["payload"]["message"]["body"] for e in envelopes] == ["m1\n", "m2\n", "m3\n"]


def test_split_frame_ignores_a_trailing_newline():
    text = encode_envelope("ack", {}, id="e", sent_at="t") + "\n"
    assert len(split_frame(text)) == 1


def test_split_frame_refuses_a_broken_envelope():
    good = encode_envelope("ack", {}, id="e", sent_at="t")
    with pytest.raises(ProtocolError) as info:
        split_frame(good + "\n{oops")
    assert info.value.path == "[1]"
    with pytest.raises(ProtocolError):
        split_frame("[1]")


def test_encode_action_defaults():
    assert json.loads(contracts.encode_action("ping")) == {"v": 1, "action": "ping", "payload": {}}
    assert json.loads(contracts.encode_action("ping", id="c-1", v=2))["v"] == 2


def test_validate_event_names_the_bad_path():
    with pytest.raises(ProtocolError) as info:
        contracts.validate_event(
            "chat.conversation.updated",
            {
                "conversation": {
                    "id": "c",
                    "participantIds": ["a"],
                    "lastMessage": None,
                    "unreadCount": 1,
                    "lastReadMessageId": None,
                    "updatedAt": "2026-02-17 00:00:00",
                },
                "totalUnread": 1,
            },
        )
    assert info.value.path == "payload.conversation.updatedAt"


def test_validate_event_requires_nullable_keys_to_be_present():
    payload = {"userId": "u", "status": "ONLINE"}
    with pytest.raises(ProtocolError) as info:
        contracts.validate_event("user.presence.updated", payload)
    assert info.value.path == "payload.lastSeenAt"
    presence = contracts.validate_event("user.presence.updated", {**payload, "lastSeenAt": None})
    assert presence == contracts.Presence(user_id="u", status="ONLINE", last_seen_at=None)


def test_validate_event_refuses_an_unknown_type():
    with pytest.raises(ProtocolError) as info:
        contracts.validate_event("chat.shout", {})
    assert info.value.path == "type"


def test_error_payload_omits_absent_optional_fields():
    payload = contracts.ErrorPayload(code=contracts.ErrorCode.NOT_FOUND, message="no such thing")
    assert contracts.unstructure(payload) == {"code": "NOT_FOUND", "message": "no such thing"}
    with pytest.raises(ProtocolError) as info:
        contracts.validate_event("error", {"code": "OOPS", "message": "x"})
    assert info.value.path == "payload.code"


def test_codes():
    assert len(contracts.ErrorCode) == 10
    assert contracts.CloseCode.SLOW_CONSUMER == 4008
    assert contracts.CloseCode.SERVICE_RESTART == 1012
    assert contracts.PROTOCOL_VERSION == 1
