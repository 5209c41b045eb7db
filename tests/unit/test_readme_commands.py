"""The README's command table is what `--help` says: the same commands in the same
order, each with its help line, and every flag its synopsis shows a real one."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from fraud_detection.cli import build_parser

README = Path(__file__).resolve().parents[2] / "README.md"


def _subcommands(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    return next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)),
                None)


def _from_help() -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(command, its help line, its parsers' flags) in `--help`'s order; a command group
    (stack) by its actions."""
    parser, _ = build_parser()
    top = _subcommands(parser)
    helps = {choice.dest: choice.help for choice in top._choices_actions}
    commands = []
    for name, sub in top.choices.items():
        group = _subcommands(sub)
        if name == "stack":
            actions = {choice.dest: choice.help for choice in group._choices_actions}
            commands += [(f"stack {action}", actions[action], [nested])
                         for action, nested in group.choices.items()]
        else:
            parsers = [sub, *(group.choices.values() if group else ())]
            commands.append((name, helps[name], parsers))
    return commands


def _readme_rows() -> list[tuple[str, str]]:
    text = README.read_text()
    table = text[text.index("| command | `--help` says | details |"):]
    table = table[:table.index("\n\n")]
    rows = []
    for line in table.splitlines()[2:]:
        cells = [c.strip() for c in re.split(r"(?<!\\) \| ", line.strip("| "))]
        rows.append((cells[0].strip("`").replace("\\|", "|"), cells[1]))
    return rows


def test_the_command_table_lists_what_help_says() -> None:
    expected = [(name, help_line) for name, help_line, _ in _from_help()]
    found = []
    for synopsis, help_line in _readme_rows():
        words = synopsis.split()
        found.append((" ".join(words[:2]) if words[0] == "stack" else words[0], help_line))
    assert found == expected


def test_every_flag_in_the_table_is_an_option_of_its_command() -> None:
    flags_of = {name: {flag for p in parsers for a in p._actions for flag in a.option_strings}
                for name, _, parsers in _from_help()}
    for synopsis, _ in _readme_rows():
        words = synopsis.split()
        name = " ".join(words[:2]) if words[0] == "stack" else words[0]
        shown = set(re.findall(r"(?<![\w-])--[a-z][a-z-]*", synopsis))
        assert shown <= flags_of[name], (name, shown - flags_of[name])
