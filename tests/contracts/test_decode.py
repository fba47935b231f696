"""Decoding client frames: every contract violation becomes a ProtocolError
with the contract code, the path of the bad field and the frame's id."""

from __future__ import annotations

import json

import pytest

from contracts import (
    ChatDeliveredRequest,
    ChatReadRequest,
    ChatSendRequest,
    ErrorCode,
    PingRequest,
    ProtocolError,
    decode_action,
    encode_action,
    unstructure,
)


def refused(text: str | bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        decode_action(text)
    return info.value


def frame(action: str, payload: object = None, **extra: object) -> str:
    body: dict = {"v": 1, "id": "c-9", "action": action, **extra}
    if payload is not None:
        body["payload"] = payload
    return json.dumps(body)


def test_a_valid_chat_send_decodes_into_its_payload_class():
    action = decode_action(
        frame("chat.send", {"conversationId": "cnv_1", "body": "hi", "clientMessageId": "cm-1"})
    )
    assert action.v == 1
    assert action.id == "c-9"
    assert action.payload == ChatSendRequest(
        conversation_id="cnv_1", body="hi", client_message_id="cm-1"
    )


def test_not_json_is_a_bad_request_without_an_id():
    error = refused("{not json")
    assert error.code == ErrorCode.BAD_REQUEST
    assert "not JSON" in error.message
    assert error.action_id is None


def test_invalid_utf8_is_a_bad_request():
    assert refused(b'{"v":1,"action":"ping","id":"\xff"}').code == "BAD_REQUEST"


@pytest.mark.parametrize("text", ["[1, 2]", '"ping"', "42", "null"])
def test_a_frame_that_is_not_an_object_is_a_bad_request(text):
    error = refused(text)
    assert error.code == "BAD_REQUEST"
    assert "object" in error.message


def test_unknown_action_keeps_the_id():
    error = refused(frame("chat.shout", {"text": "hi"}))
    assert error.code == ErrorCode.UNKNOWN_ACTION
    assert error.action_id == "c-9"
    assert "chat.shout" in error.message


@pytest.mark.parametrize("version", [2, 0])
def test_wrong_version_is_unsupported_and_keeps_the_id(version):
    error = refused(json.dumps({"v": version, "id": "c-3", "action": "ping"}))
    assert error.code == ErrorCode.UNSUPPORTED_VERSION
    assert error.action_id == "c-3"
    assert error.path == "v"


def test_version_is_checked_before_the_action():
    error = refused(json.dumps({"v": 2, "id": "c-3", "action": "chat.shout"}))
    assert error.code == "UNSUPPORTED_VERSION"


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"id": "c-1", "action": "ping"}, "v"),
        ({"v": "1", "id": "c-1", "action": "ping"}, "v"),
        ({"v": True, "id": "c-1", "action": "ping"}, "v"),
        ({"v": 1, "id": "c-1"}, "action"),
        ({"v": 1, "id": "c-1", "action": 7}, "action"),
    ],
)
def test_a_bad_envelope_field_is_named(body, path):
    error = refused(json.dumps(body))
    assert error.code == "BAD_REQUEST"
    assert error.path == path
    assert error.action_id == "c-1"
    assert error.message.startswith(f"{path}:")


def test_a_non_string_id_is_a_bad_request_naming_id():
    error = refused(json.dumps({"v": 1, "id": 17, "action": "ping"}))
    assert error.path == "id"
    assert error.action_id is None


def test_missing_field_is_named_in_wire_terms():
    error = refused(frame("chat.send", {"body": "hi", "clientMessageId": "cm-1"}))
    assert error.code == "BAD_REQUEST"
    assert error.path == "payload.conversationId"
    assert "payload.conversationId: required field missing" in error.message
    assert error.action_id == "c-9"


def test_wrong_type_is_named_and_never_coerced():
    error = refused(frame("session.resume", {"epoch": "ep_1", "lastSeq": "12"}))
    assert error.path == "payload.lastSeq"
    assert "expected an integer, got a string" in error.message

    error = refused(frame("chat.send", {"conversationId": 5, "body": "x", "clientMessageId": "m"}))
    assert error.path == "payload.conversationId"
    assert "expected a string, got a number" in error.message


def test_a_boolean_is_not_an_integer():
    error = refused(frame("session.resume", {"epoch": "ep_1", "lastSeq": True}))
    assert error.path == "payload.lastSeq"


def test_nested_list_element_path_is_named():
    error = refused(frame("chat.delivered", {"conversationId": "c", "messageIds": ["m1", 2]}))
    assert error.path == "payload.messageIds[1]"


def test_a_string_is_not_a_list():
    error = refused(frame("chat.delivered", {"conversationId": "c", "messageIds": "m1"}))
    assert error.path == "payload.messageIds"
    assert "expected an array" in error.message


def test_every_bad_field_is_reported_the_first_is_the_path():
    error = refused(frame("chat.send", {"conversationId": None, "body": 3}))
    assert error.path == "payload.conversationId"
    assert "payload.body" in error.message
    assert "payload.clientMessageId" in error.message


@pytest.mark.parametrize(
    ("action", "payload", "path"),
    [
        ("chat.typing", {"conversationId": "c", "state": "typing"}, "payload.state"),
        ("presence.set", {"status": "OFFLINE"}, "payload.status"),
        ("subscribe", {"topic": "everything"}, "payload.topic"),
        ("subscribe", {"topic": "conversation:"}, "payload.topic"),
    ],
)
def test_values_outside_the_contract_are_refused(action, payload, path):
    error = refused(frame(action, payload))
    assert error.path == path


def test_payload_that_is_not_an_object_is_named():
    error = refused(frame("chat.send", [1, 2]))
    assert error.path == "payload"
    assert "expected an object, got an array" in error.message


def test_missing_payload_is_fine_for_empty_payload_actions():
    assert decode_action(frame("ping")).payload == PingRequest()
    assert decode_action(frame("notification.subscribe", None)).action == "notification.subscribe"
    assert decode_action(json.dumps({"v": 1, "action": "ping", "payload": None})).id is None


def test_missing_payload_is_a_bad_request_when_fields_are_required():
    error = refused(frame("chat.send"))
    assert error.path == "payload"


def test_unknown_fields_are_ignored_everywhere():
    action = decode_action(
        frame(
            "chat.read",
            {"conversationId": "c", "upToMessageId": "m", "hint": {"x": 1}},
            trace="abc",
        )
    )
    assert action.payload == ChatReadRequest(conversation_id="c", up_to_message_id="m")


def test_optional_payload_field_may_be_absent_and_stays_absent():
    action = decode_action(frame("chat.read", {"conversationId": "c"}))
    assert action.payload.up_to_message_id is None
    assert unstructure(action)["payload"] == {"conversationId": "c"}


def test_frame_without_id_decodes_with_none():
    action = decode_action(
        encode_action("chat.delivered", {"conversationId": "c", "messageIds": []})
    )
    assert action.id is None
    assert action.payload == ChatDeliveredRequest(conversation_id="c", message_ids=[])


def test_protocol_error_maps_to_an_error_payload():
    error = refused(frame("chat.send", {"body": "hi", "clientMessageId": "cm-1"}))
    assert error.to_payload() == {
        "code": "BAD_REQUEST",
        "message": error.message,
        "path": "payload.conversationId",
    }
    assert error.status == 400
