"""The CLI's help per command: the client commands list their own options, not the hub's (which they still
accept, so one set of options can go to every call); `start` and `up` document the hub's."""

from __future__ import annotations

import pytest

from edgehub_emulator.cli import build_parser

HUB_ONLY = ("--bind", "--cert-name", "--max-message-bytes", "--upstream-max-messages", "--module-method-port")


def help_of(command: str) -> str:
    """`edgehub-emulator COMMAND --help`."""
    parser = build_parser()
    sub = next(action for action in parser._actions if action.dest == "command")  # pylint: disable=protected-access
    return str(sub.choices[command].format_help())  # type: ignore[attr-defined]


@pytest.mark.parametrize("command", ["monitor", "send-input", "invoke", "twin", "env", "reset"])
def test_a_client_commands_help_lists_only_its_options(command: str) -> None:
    text = help_of(command)
    assert "--state" in text and "--service-port" in text
    for option in HUB_ONLY:
        assert option not in text, f"{command} --help lists {option}"


@pytest.mark.parametrize("command", ["start", "up"])
def test_the_hub_commands_document_the_hubs_options(command: str) -> None:
    text = help_of(command)
    for option in HUB_ONLY:
        assert option in text


def test_client_commands_still_accept_the_hubs_options() -> None:
    args = build_parser().parse_args(["monitor", "--once", "--module-method-port", "0", "--bind", "127.0.0.1"])
    assert args.once and args.module_method_port == 0 and args.bind == ["127.0.0.1"]


def test_monitor_output_is_readable() -> None:
    from edgehub_emulator.cli import readable_message  # pylint: disable=import-outside-toplevel

    item = {"seq": 3, "enqueuedTime": 1764892800.25, "body": '{"a": 1}', "encoding": "utf-8"}
    out = readable_message(item)
    assert out["body"] == {"a": 1} and out["encoding"] == "json"
    assert out["enqueuedTime"] == "2025-12-05T00:00:00.250Z" and out["enqueuedTimeEpoch"] == 1764892800.25
    text = readable_message({"enqueuedTime": 1.0, "body": "not json", "encoding": "utf-8"})
    assert text["body"] == "not json" and text["encoding"] == "utf-8"
    binary = readable_message({"enqueuedTime": 1.0, "body": "AAE=", "encoding": "base64"})
    assert binary["body"] == "AAE=" and binary["encoding"] == "base64"
