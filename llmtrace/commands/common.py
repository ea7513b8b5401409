"""Options and helpers shared by every command, so each flag means the same thing everywhere."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import click
from rich.console import Console

from llmtrace.store import Store, default_store_path
from llmtrace.timespec import parse_when

F = TypeVar("F", bound=Callable[..., Any])

# Tables and progress go to stderr-free stdout; errors and summaries that a pipe should not
# swallow go to stderr.
console = Console(highlight=False, soft_wrap=False)
err_console = Console(stderr=True, highlight=False)


class WhenType(click.ParamType):
    """A click type for --since/--until: date, date-time, or a span back from now (7d, 24h)."""

    name = "WHEN"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None):
        if isinstance(value, datetime) or value is None:
            return value
        try:
            return parse_when(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


WHEN = WhenType()


def store_option(func: F) -> F:
    """``--store DIR``: the store directory (default ``$LLMTRACE_STORE``, else ``./.llmtrace``)."""
    return click.option(
        "--store",
        "store_path",
        type=click.Path(file_okay=False),
        default=None,
        help="Store directory (default: $LLMTRACE_STORE, else ./.llmtrace).",
    )(func)


def window_options(default_since: str | None = None) -> Callable[[F], F]:
    """``--since`` and ``--until``, each a date, a date-time or a span such as 7d or 24h."""

    def decorate(func: F) -> F:
        func = click.option(
            "--until",
            type=WHEN,
            default=None,
            help="End of the window (exclusive): date, date-time or span back (24h). Default: now.",
        )(func)
        return click.option(
            "--since",
            type=WHEN,
            default=default_since,
            show_default=default_since is not None,
            help="Start of the window: date (2026-11-01), date-time, or span back (7d, 24h).",
        )(func)

    return decorate


def open_store(store_path: str | None) -> Store:
    """The store named by ``--store``, else the default one."""
    return Store(store_path if store_path else default_store_path())
