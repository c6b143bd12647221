"""Every option's help says its default and where else it can be set."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from headwater.cli.main import app


def help_of(*command: str) -> str:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    return re.sub(r"\s+", " ", result.output.replace("│", " "))


@pytest.mark.parametrize("command", ["serve", "demo"])
def test_server_options_show_their_defaults_and_variables(command: str) -> None:
    text = help_of(command)
    assert "--host" in text and "default: 127.0.0.1" in text and "HEADWATER_HOST" in text
    assert "default: 8000" in text and "HEADWATER_PORT" in text
    assert "default: ./headwater-data" in text and "HEADWATER_DATA_DIR" in text
    assert "HEADWATER_CONFIG" in text and "--config" in text
    assert not re.search(r" \.\s", text)  # no help text lost to markup, as in "Port ."


def test_keys_create_shows_its_defaults() -> None:
    text = help_of("keys", "create")
    assert "default: ./headwater-data" in text and "HEADWATER_DATA_DIR" in text
    assert "default: default" in text  # the tenant
    assert "(./headwater-data)" not in text and not re.search(r" \.\s", text)


def test_tail_says_what_its_unset_limits_mean() -> None:
    text = help_of("tail")
    assert re.search(r"--max-rows .*default: no limit", text)
    assert re.search(r"--timeout .*default: no limit", text)


@pytest.mark.parametrize(
    "command",
    [
        ["serve"],
        ["demo"],
        ["status"],
        ["send"],
        ["sql"],
        ["tail"],
        ["keys", "create"],
        ["log", "verify"],
        ["log", "repair"],
    ],
)
def test_every_option_of_every_command_says_its_default(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"}, color=False)
    assert result.exit_code == 0, result.output
    options = [
        line for line in result.output.splitlines()
        if re.match(r"^[│|]\s+(-\w, )?--[a-z]", line) and "--help" not in line
    ]  # fmt: skip
    assert options, result.output
    missing = [line.strip("│| ").split()[0] for line in options if "default" not in line]
    assert not missing, f"{' '.join(command)}: options without a default: {missing}"
