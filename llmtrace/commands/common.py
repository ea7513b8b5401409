"""Options and helpers shared by every command, so each flag means the same thing everywhere."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click
from rich.console import Console

from llmtrace.errors import UsageError
from llmtrace.timespec import parse_when

if TYPE_CHECKING:
    from llmtrace.pricing import PriceBook
    from llmtrace.store import Store

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


def prices_option(func: F) -> F:
    """``--prices FILE``: a price file with overrides (default: ``$LLMTRACE_PRICES``, else the
    config's ``prices``); see ``load_price_book``."""
    return click.option(
        "--prices",
        "prices_file",
        type=click.Path(dir_okay=False, path_type=Path),
        default=None,
        help="Price file with overrides "
        "(default: $LLMTRACE_PRICES, else 'prices' in llmtrace.toml).",
    )(func)


def keep_content_option(func: F) -> F:
    """``--keep-content``: importers store prompts and completions, not only fingerprints."""
    return click.option(
        "--keep-content",
        is_flag=True,
        help="Also store prompts and completions (default: fingerprints only).",
    )(func)


def format_option(choices: Sequence[str]) -> Callable[[F], F]:
    """``--format``: one of ``choices`` (the first is the default), passed as ``fmt``."""
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(list(choices)),
        default=choices[0],
        show_default=True,
        help="Output format.",
    )


def load_price_book(prices_file: str | Path | None) -> PriceBook:
    """The price book of ``--prices`` (``PriceBook.load``); a bad price file or config raises
    ``ConfigError``, which ``llmtrace.cli`` reports in one line naming the file (exit 2)."""
    from llmtrace.price_book import PriceBook

    return PriceBook.load(prices_file)


def print_import_totals(
    added: int, duplicates: int, statuses: Mapping[str, int], total_cost: float | None
) -> None:
    """The lines every import prints after reading: stored, skipped, priced, and why not.

    ``statuses`` counts calls by ``price_status``; ``total_cost`` is the priced calls' sum.
    """
    from llmtrace.record import PRICE_OK

    console.print(f"  imported {added:,} new calls, skipped {duplicates:,} already stored")
    console.print(f"  priced {statuses.get(PRICE_OK, 0):,} calls: ${total_cost or 0.0:,.4f}")
    unpriced = {reason: n for reason, n in statuses.items() if reason != PRICE_OK}
    if unpriced:
        reasons = ", ".join(f"{reason} {n:,}" for reason, n in sorted(unpriced.items()))
        console.print(f"  not priced: {reasons} (see `llmtrace prices MODEL`)")


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
    """The store named by ``--store``, else the default one; a damaged file or stray folder it
    meets is named on stderr once (with how to fix it) and skipped."""
    from llmtrace.store import Store, default_store_path

    store = Store(store_path if store_path else default_store_path(), on_problem=_warn_store)
    _settle_with_bar(store)
    return store


SETTLE_BAR_FILES = 200
"""Spool files (each a batch of up to 512 spans of a live app) from which settling them shows
a progress bar on stderr; fewer settle in a moment, when the store is first read."""


def _settle_with_bar(store: Store) -> None:
    """Settle what live apps spooled (``Store.settle``) now, with a bar when there is a lot."""
    from llmtrace import spool

    waiting = len(spool.pending(store.path))
    if waiting < SETTLE_BAR_FILES:
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(
        TextColumn("settling live calls"),
        BarColumn(),
        MofNCompleteColumn(),
        console=err_console,
        transient=True,
    ) as bar:
        task = bar.add_task("settle", total=waiting)
        store.settle(progress=lambda done, total: bar.update(task, completed=done, total=total))


def open_existing_store(store_path: str | None) -> Store:
    """The store a reading command (costs, prices, reprice, reconcile, store check, audit)
    reads. A store named explicitly - by ``--store`` or ``$LLMTRACE_STORE`` - that does not
    exist is a typo or a missing mount: a usage/config error (exit 2, one line naming the path),
    so a nightly job never reports "no costs" as success. Only the default ``./.llmtrace`` may
    be missing: that is a user's first run, before any import, and the command answers with its
    friendly "run llmtrace demo" hint and exit 0. Commands that write (import, demo) create the
    store and use ``open_store``."""
    from llmtrace.store import STORE_ENV

    named = "--store" if store_path else "$LLMTRACE_STORE" if os.environ.get(STORE_ENV) else None
    store = open_store(store_path)
    if named is not None and not store.path.exists():
        raise UsageError(f"no store at {store.path} (check {named})")
    return store


def _warn_store(problem: object) -> None:
    err_console.print(f"warning: {problem}", highlight=False, markup=False, soft_wrap=True)


def store_range_hint(store: Store) -> str:
    """``which holds calls from 2026-11-06 to 2026-11-19 (UTC). Try --since 2026-11-06 --until
    2026-11-20.``: what an empty window's message says, so the hint is a window that has calls
    (not the same --since again). '' for an empty store."""
    from datetime import timedelta

    days = store.days()
    if not days:
        return ""
    first, last = min(days), max(days)
    held = f"{first}" if first == last else f"{first} to {last}"
    return (
        f"which holds calls from {held} (UTC). "
        f"Try --since {first} --until {last + timedelta(days=1)}."
    )


def check_output_path(
    ctx: click.Context | None, param: click.Parameter | None, value: str | None
) -> str | None:
    """Callback for ``-o/--output FILE``: fail before the work when FILE cannot be written
    (its folder is missing or not writable, or FILE is a folder): exit 2, one line."""
    if value is None or value == "-":
        return value
    path = Path(value).expanduser()
    folder = path.parent if str(path.parent) else Path(".")
    if path.is_dir():
        raise click.BadParameter(f"{value} is a directory", ctx, param)
    if not folder.is_dir():
        raise click.BadParameter(f"folder {str(folder)!r} does not exist", ctx, param)
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise click.BadParameter(f"{value} is not writable", ctx, param)
    return value


def output_option(func: F) -> F:
    """``-o/--output FILE``: write the report to FILE (checked before any work)."""
    return click.option(
        "--output",
        "-o",
        type=click.Path(dir_okay=False),
        callback=check_output_path,
        help="Write the report to FILE.",
    )(func)


def fail(message: str) -> NoReturn:
    """Stop with a usage or configuration error: one line on stderr, exit 2."""
    raise UsageError(message)


def filter_options(func: F) -> F:
    """``--service --model --provider --prompt --action --environment`` (globs; repeat or
    comma-separate for several), passed to the command as one ``filters`` mapping
    (``llmtrace.filters``: one table for every command that filters)."""
    from llmtrace.filters import FILTERS, split_values

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        chosen = {name: split_values(kwargs.pop(f"filter_{name}") or ()) for name in FILTERS}
        return func(*args, filters={k: v for k, v in chosen.items() if v}, **kwargs)

    decorated: Any = wrapper
    for name, (_field, what, example) in reversed(FILTERS.items()):
        decorated = click.option(
            f"--{name}",
            f"filter_{name}",
            multiple=True,
            metavar="GLOB",
            help=f"Only calls whose {what} matches GLOB (e.g. '{example}'; repeatable).",
        )(decorated)
    return decorated
