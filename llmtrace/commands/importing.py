"""``llmtrace import``: bring LLM calls from telemetry into the store.

A group so every source is a subcommand of one verb: ``import otlp`` (files here) and
``import langfuse`` (``llmtrace.commands.import_langfuse``). Each subcommand
is thin: read options, call the importer, price, append, print the summary.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import click
import polars as pl
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from llmtrace.commands.common import (
    console,
    err_console,
    keep_content_option,
    load_price_book,
    open_store,
    prices_option,
    print_import_totals,
    store_option,
)
from llmtrace.commands.import_langfuse import langfuse_command
from llmtrace.config import ConfigError
from llmtrace.store import ScoreAttachResult

if TYPE_CHECKING:
    from llmtrace.accuracy import AccuracyConfig
    from llmtrace.importers.otlp import OtlpImportResult
    from llmtrace.pricing import PriceBook
    from llmtrace.store import Store

# Spans per batch: 0.7-0.8 GB peak RSS on OTLP JSON (bench/README.md); the importer's default.
DEFAULT_BATCH_SPANS = 100_000
# Below this much input a progress bar only flickers.
PROGRESS_MIN_BYTES = 8 * 1024 * 1024


@click.group("import")
def import_group() -> None:
    """Import LLM calls from telemetry files or services into the store.

    \b
    Example:
      llmtrace import otlp traces.jsonl && llmtrace costs --by model
    """


def _bar(total: int) -> Progress:
    return Progress(
        TextColumn("reading"),
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=total < PROGRESS_MIN_BYTES,
    )


@dataclass
class _Tally:
    """What the closing summary needs, added up batch by batch (no call rows are kept)."""

    calls: int = 0
    added: int = 0
    duplicates: int = 0
    total_cost: float = 0.0
    statuses: Counter[str] = field(default_factory=Counter)
    new_call_scores: int = 0
    stored_call_scores: int = 0
    present_scores: int = 0
    any_scores: bool = False
    # evaluations that matched nothing when their batch was stored: their call may come later
    unplaced: list[pl.DataFrame] = field(default_factory=list)


def _store_batch(store: Store, book: PriceBook, batch: OtlpImportResult, tally: _Tally) -> None:
    """Report, price, score and append one batch; only counts stay behind."""
    from llmtrace.pricing import price_calls

    for problem in batch.problems:  # one plain line each, never wrapped: editors and grep read them
        click.echo(str(problem), err=True)
    priced = price_calls(batch.calls, book)
    late = _attach_late_scores(store, batch)
    appended = store.append(priced)
    tally.calls += priced.height
    tally.added += appended.added
    tally.duplicates += appended.duplicates
    if priced.height:
        tally.statuses.update(dict(priced.group_by("price_status").len().iter_rows()))
        tally.total_cost += priced.get_column("total_cost").sum() or 0.0
    targets = batch.score_targets
    if targets.is_empty():
        return
    tally.any_scores = True
    here = set(targets.filter(pl.col("matched")).get_column("score_id"))
    elsewhere = (set(targets.get_column("score_id")) - here) & late.unmatched_ids
    tally.new_call_scores += len(here & late.unmatched_ids)
    tally.stored_call_scores += late.attached
    tally.present_scores += late.present
    if elsewhere:
        tally.unplaced.append(targets.filter(pl.col("score_id").is_in(list(elsewhere))))


def _place_leftover_scores(store: Store, accuracy: AccuracyConfig, tally: _Tally) -> int:
    """Try the evaluations that matched nothing once more, after every batch is stored: their
    call may have been in a later batch (a judge's trace read before the call's). Returns how
    many still match no call."""
    if not tally.unplaced:
        return 0
    late = store.attach_scores(pl.concat(tally.unplaced), accuracy)
    tally.new_call_scores += late.attached
    tally.present_scores += late.present
    return len(late.unmatched_ids)


def _summary(result: OtlpImportResult, tally: _Tally, nowhere: int) -> None:
    console.print(
        f"Read {result.spans:,} spans from {result.files:,} file(s): "
        f"{result.llm_spans:,} LLM spans -> {tally.calls:,} calls "
        f"({result.merged:,} duplicate spans merged)"
    )
    total = tally.total_cost if tally.calls else 0.0
    print_import_totals(tally.added, tally.duplicates, dict(tally.statuses), total)
    if tally.any_scores:
        present = f", {tally.present_scores:,} already attached" if tally.present_scores else ""
        line = (
            f"  scores: {tally.new_call_scores:,} attached to new calls, "
            f"{tally.stored_call_scores:,} to stored calls, {nowhere:,} matched no call{present}"
        )
        console.print(line, highlight=False, soft_wrap=True)
    if result.problems:
        unreadable = len(result.problems) - result.rejected
        err_console.print(
            f"{len(result.problems):,} problem(s) above: {result.rejected:,} spans rejected, "
            f"{unreadable:,} unreadable files or lines; everything else was imported",
            style="yellow",
            highlight=False,
        )


def _attach_late_scores(store: Store, result: OtlpImportResult) -> ScoreAttachResult:
    """Give calls stored by earlier imports (or earlier batches) the evaluations this batch
    holds for them.

    Run before the append: a score whose call is in this batch and new to the store comes
    back unmatched and is written with the call; a call already stored gets it here, so an
    evaluation that arrives in a later file than its call is kept, and a rerun adds nothing.
    """
    if result.score_targets.is_empty():
        return ScoreAttachResult()
    return store.attach_scores(result.score_targets, result.accuracy)


@import_group.command("otlp")
@click.argument(
    "paths",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, path_type=Path),
)
@store_option
@keep_content_option
@prices_option
@click.option(
    "--batch-spans",
    type=click.IntRange(min=1),
    default=DEFAULT_BATCH_SPANS,
    show_default=True,
    help="Spans read, priced and stored at a time: bounds memory, whatever the input's size.",
)
def otlp_command(
    paths: tuple[Path, ...],
    store_path: str | None,
    keep_content: bool,
    prices_file: Path | None,
    batch_spans: int,
) -> None:
    """Import LLM calls from OTLP trace files: JSON lines, JSON, protobuf, .gz, directories.

    Every span that records a model call (OpenTelemetry GenAI, OpenLLMetry, OpenInference,
    OpenLIT, Logfire, Langfuse attributes) becomes one call record, priced with llmtrace's
    prices; a cost the instrumentation reported is kept for comparison. Importing the same
    files again adds nothing. Bad files, lines or spans are reported as FILE:LINE: span ID:
    problem, the rest is imported, and the exit code is 1.

    Input of any size is read in batches of --batch-spans spans, each priced and stored before
    the next is read; a trace's calls are stored once its root span has been read (or at the
    end), so actions and merged spans are the same as if everything were read at once.

    \b
    Example (the Collector's file exporter writes JSON lines):
      llmtrace import otlp /var/log/otel/traces.jsonl exports/ && llmtrace costs --by action
    """
    from llmtrace.importers.otlp import find_inputs, stream_otlp

    book = load_price_book(prices_file)
    store = open_store(store_path)
    tally = _Tally()
    files = find_inputs(paths)
    size = sum(f.stat().st_size for f in files if f.is_file())
    try:
        with _bar(size) as bar:
            task = bar.add_task("otlp", total=size)
            result = stream_otlp(
                files,
                lambda batch: _store_batch(store, book, batch, tally),
                batch_spans=batch_spans,
                keep_content=keep_content,
                progress=lambda done: bar.advance(task, done),
            )
    except ConfigError as exc:  # the config's [accuracy] section
        raise click.ClickException(str(exc)) from None
    nowhere = _place_leftover_scores(store, result.accuracy, tally)
    _summary(result, tally, nowhere)
    if result.problems:
        raise SystemExit(1)


import_group.add_command(langfuse_command)
