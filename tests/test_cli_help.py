"""Every flag and argument of every ``exchange`` command has a help text, and every command a
one-line summary: the walk goes through every sub-command's parser, however deep."""

from __future__ import annotations

import argparse
from collections.abc import Iterator

from exchange.cli import build_parser


def parsers(parser: argparse.ArgumentParser) -> Iterator[argparse.ArgumentParser]:
    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            summaries = {choice.dest: choice.help for choice in action._choices_actions}
            for name, child in action.choices.items():
                assert summaries.get(name), f"`{child.prog}` has no summary in `{parser.prog} --help`"
                yield from parsers(child)


def test_every_flag_has_a_help_text() -> None:
    missing = [
        f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"
        for parser in parsers(build_parser())
        for action in parser._actions
        if not isinstance(action, argparse._HelpAction | argparse._SubParsersAction)
        and (not action.help or action.help == argparse.SUPPRESS)
    ]
    assert missing == []


def test_the_walk_reaches_every_command() -> None:
    progs = {parser.prog for parser in parsers(build_parser())}
    for expected in ("exchange simulate", "exchange settle", "exchange init", "exchange serve",
                     "exchange registry accounts", "exchange registry allocate"):
        assert expected in progs
