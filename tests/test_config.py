"""One configuration object: every setting of a node is a field of `Settings`,
settable by flag and by `CUTOVER_*` variable, and documented in the README."""

from __future__ import annotations

from pathlib import Path

import attrs

from gateway.cli import build_parser
from gateway.config import Settings, settings_from
from gateway.ws.connection import WsSettings
from gateway.ws.wire import WireSettings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_websocket_setting_is_a_node_setting_of_the_same_type():
    fields = attrs.fields_dict(Settings)
    for field in attrs.fields(WsSettings):
        if field.metadata.get("derived"):
            continue
        assert field.name in fields, field.name
        assert field.type == fields[field.name].type, (field.name, field.type)


def test_the_view_objects_copy_the_settings():
    settings = settings_from(
        {"typing_timeout_s": "2.5", "max_subscriptions": "7", "ws_window_bits": "10"}, {}
    )
    assert WsSettings.from_settings(settings).typing_timeout_s == 2.5
    assert WsSettings.from_settings(settings).max_subscriptions == 7
    assert WireSettings.from_settings(settings).window_bits == 10


def test_every_setting_has_a_flag_an_environment_variable_and_a_readme_line():
    serve = build_parser().parse_args(["serve"])
    for field in attrs.fields(Settings):
        flag = "--" + field.name.replace("_", "-")
        if field.name != "demo":  # set by `cutover demo`, not a flag of `serve`
            assert hasattr(serve, field.name), flag
        assert flag in README, f"{flag} is not documented in the README"
    env = settings_from({}, {"CUTOVER_HEAD_TIMEOUT_S": "3", "CUTOVER_RECONNECT_WINDOW_MS": "5,9"})
    assert env.head_timeout_s == 3.0
    assert env.reconnect_window_ms == (5, 9)
    flagged = settings_from({"head_timeout_s": "4"}, {"CUTOVER_HEAD_TIMEOUT_S": "3"})
    assert flagged.head_timeout_s == 4.0  # a flag wins over the environment
