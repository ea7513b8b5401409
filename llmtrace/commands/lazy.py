"""A click group that imports a command's module only when that command runs.

``llmtrace --help`` and ``--version`` must answer in well under a second, and ``llmtrace prices``
should not pay for langfuse or the rule engine. So a group is a table, command name →
``"module:attribute"`` plus the one-line summary the help lists, and nothing is imported until
click asks for the command (the pattern of click's "lazily loading subcommands" documentation,
as large click CLIs do). Adding a command is one line in the table.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import click


@dataclass(frozen=True)
class Entry:
    """Where a command lives (``"package.module:attribute"``) and its summary for ``--help``."""

    target: str
    summary: str


class LazyGroup(click.Group):
    """A group whose commands are loaded from ``lazy`` on first use.

    The help lists every summary in full (click would cut them at 45 characters with "..."),
    in the table's order, without importing any command module.
    """

    def __init__(self, *args: Any, lazy: Mapping[str, Entry] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy: dict[str, Entry] = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        eager = [name for name in super().list_commands(ctx) if name not in self.lazy]
        return [*self.lazy, *eager]

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = self.lazy.get(cmd_name)
        if entry is None:
            return super().get_command(ctx, cmd_name)
        loaded = self.commands.get(cmd_name)
        if loaded is None:
            loaded = load(entry.target)
            self.commands[cmd_name] = loaded
        return loaded

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows: list[tuple[str, str]] = []
        for name in self.list_commands(ctx):
            entry = self.lazy.get(name)
            if entry is not None:
                rows.append((name, entry.summary))
                continue
            command = self.commands.get(name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=1_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


def load(target: str) -> click.Command:
    """The command object at ``"module:attribute"``."""
    module_name, _, attribute = target.partition(":")
    command = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(command, click.Command):
        raise TypeError(f"{target} is not a click command")
    return command
