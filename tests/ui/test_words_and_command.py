"""The dashboard's pieces that need no services: the streamlit command line and its
config file, and the pages each role gets."""

from __future__ import annotations

import sys
import tomllib

import pytest

from fraud_detection.dashboard import (
    APP_DIR,
    HOME,
    STREAMLIT_OPTIONS,
    pages_for,
    streamlit_command,
)


def _flags(command: list[str]) -> dict[str, str]:
    pairs = command[5:]
    return {pairs[i].removeprefix("--"): pairs[i + 1] for i in range(0, len(pairs), 2)}


def test_the_command_serves_this_machine_only_without_telemetry_or_developer_menu() -> None:
    command = streamlit_command(8601)
    assert command[:5] == [sys.executable, "-m", "streamlit", "run", str(HOME)]
    assert _flags(command) == {
        "server.port": "8601", "server.address": "127.0.0.1", "server.headless": "true",
        "browser.serverAddress": "127.0.0.1", "browser.gatherUsageStats": "false",
        "client.toolbarMode": "viewer"}


def test_a_wildcard_address_is_not_handed_to_browsers() -> None:
    flags = _flags(streamlit_command(8601, "0.0.0.0"))
    assert flags["server.address"] == "0.0.0.0" and "browser.serverAddress" not in flags


def test_the_config_file_beside_the_app_says_what_the_command_says() -> None:
    config = tomllib.loads((APP_DIR / ".streamlit" / "config.toml").read_text())
    in_file = {f"{section}.{name}": value for section, options in config.items()
               for name, value in options.items()}
    as_flags = {**STREAMLIT_OPTIONS, "server.address": "127.0.0.1",
                "browser.serverAddress": "127.0.0.1"}
    assert {name: str(value).lower() for name, value in in_file.items()} == as_flags


@pytest.mark.parametrize(("role", "pages"), [
    ("customer", ["Customer"]),
    ("bank", ["Bank"]),
    ("analyst", ["Analyst", "Bank", "Customer", "Operations"]),
    ("admin", ["Admin", "Analyst", "Bank", "Customer", "Operations"]),
])
def test_each_role_gets_only_its_pages(role: str, pages: list[str]) -> None:
    found = pages_for(role)
    assert [p.title for p in found] == pages
    assert all((APP_DIR / p.file).is_file() for p in found)
