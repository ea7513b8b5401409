"""``llmtrace import otlp``: bring LLM calls from OTLP trace files into the store.

A subcommand of the ``import`` group (``llmtrace.commands.import_group``), thin like every
importer command: read options, call the importer, price, append, print the summary.
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
    TaskID,
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
from llmtrace.record import KEY_FIELDS
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
        # redrawn when the reader reports progress (every few MB), not by rich's refresh
        # thread, which woke 10 times a second and cost ~10% of an import's samples (issue 15)
        auto_refresh=False,
    )


def _advance(bar: Progress, task: TaskID, done: int) -> None:
    bar.advance(task, done)
    bar.refresh()


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
    replaced_scores: int = 0  # scores with a source id whose held version they replaced
    any_scores: bool = False
    # evaluations not written with a call new in their batch, attached in one call at the end
    # (``_place_pending_scores``): one read of the store's keys per import, not per batch
    pending: pl.DataFrame | None = None
    batches: int = 0


def _store_batch(store: Store, book: PriceBook, batch: OtlpImportResult, tally: _Tally) -> None:
    """Report, price, append one batch and set its evaluations aside; only counts stay behind.

    An evaluation matched to a call of this batch that is new to the store was written with the
    call. Every other one (its call was stored before, or is not in this batch) waits for
    ``_place_pending_scores``; ``_mark_late`` notes the candidates that only now reach the
    store, so the end can attach each score where a batch-by-batch attachment would have.
    """
    from llmtrace.pricing import price_calls

    for problem in batch.problems:  # one plain line each, never wrapped: editors and grep read them
        click.echo(str(problem), err=True)
    priced = price_calls(batch.calls, book)
    appended = store.append(priced)
    tally.calls += priced.height
    tally.added += appended.added
    tally.duplicates += appended.duplicates
    if priced.height:
        tally.statuses.update(dict(priced.group_by("price_status").len().iter_rows()))
        tally.total_cost += priced.get_column("total_cost").sum() or 0.0
    tally.batches += 1
    new_keys = appended.keys if appended.keys is not None else priced.select(KEY_FIELDS).clear()
    if tally.pending is None and batch.score_targets.is_empty():
        return  # no evaluation waits for a call: the new calls are not needed (issue 15)
    if appended.added == priced.height:  # every call was new (the usual case): no join
        new_calls = priced
    else:
        new_calls = priced.join(new_keys, on=list(KEY_FIELDS), how="semi")
    if tally.pending is not None:
        tally.pending = _mark_late(tally.pending, new_calls)
    targets = batch.score_targets
    if targets.is_empty():
        return
    tally.any_scores = True
    written = targets.filter(pl.col("matched")).join(new_keys, on=list(KEY_FIELDS), how="semi")
    tally.new_call_scores += written.get_column("score_id").n_unique()
    rest = targets.join(written.select("score_id"), on="score_id", how="anti")
    if rest.height:
        rest = rest.with_columns(
            pl.lit(tally.batches, dtype=pl.Int64).alias("batch"), pl.lit(False).alias("late")
        )
        rest = _mark_late(rest, new_calls)
        pending = [rest] if tally.pending is None else [tally.pending, rest]
        tally.pending = pl.concat(pending, rechunk=False)


def _mark_late(rows: pl.DataFrame, new_calls: pl.DataFrame) -> pl.DataFrame:
    """Flag the evaluation candidates (``rows``) a call of ``new_calls`` (just stored) matches:
    attached batch by batch, a score never saw a call stored after its own batch, so the end
    tries those candidates only for scores no earlier candidate placed. Matched rows are
    skipped: their call was stored before their batch."""
    if new_calls.is_empty() or rows.is_empty():
        return rows
    pair = pl.concat_str("trace_id", "span_id", separator="/")
    spans, responses = new_calls.get_column("span_id"), new_calls.get_column("response_id")
    hit = (
        pl.when(pl.col("span_id").is_not_null() & pl.col("trace_id").is_not_null())
        .then(pair.is_in(new_calls.select(pair).to_series().implode()))
        .when(pl.col("span_id").is_not_null())
        .then(pl.col("span_id").is_in(spans.implode()))
        .when(pl.col("response_id").is_not_null())
        .then(pl.col("response_id").is_in(responses.drop_nulls().implode()))
        .otherwise(pl.col("trace_id").is_in(new_calls.get_column("trace_id").implode()))
    )
    late = pl.col("late") | (~pl.col("matched") & hit.fill_null(False))
    return rows.with_columns(late.alias("late"))


def _place_pending_scores(store: Store, accuracy: AccuracyConfig, tally: _Tally) -> int:
    """Attach the evaluations set aside by ``_store_batch``; returns how many match no call.

    Two store calls, whatever the number of batches: first every candidate a batch-by-batch
    attachment would have seen (a call stored before the score's batch; counted as "stored
    calls"), then, for the scores that matched nothing there, every candidate (their call came
    in a later batch, as when a judge's trace is read before the call's: "new calls").
    """
    if tally.pending is None:
        return 0
    rows = tally.pending
    early = rows.filter(~pl.col("late"))
    first = store.attach_scores(early, accuracy) if early.height else ScoreAttachResult()
    tally.stored_call_scores += first.attached
    tally.present_scores += first.present
    tally.replaced_scores += first.replaced
    placed = set(early.get_column("score_id")) - first.unmatched_ids
    retry = rows.filter(~pl.col("matched") & ~pl.col("score_id").is_in(list(placed)))
    if retry.is_empty():
        return 0
    late = store.attach_scores(retry.drop("batch"), accuracy)
    tally.new_call_scores += late.attached
    tally.present_scores += late.present
    tally.replaced_scores += late.replaced
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
        present += f", {tally.replaced_scores:,} updated" if tally.replaced_scores else ""
        line = (
            f"  scores: {tally.new_call_scores:,} attached to new calls, "
            f"{tally.stored_call_scores:,} to stored calls, {nowhere:,} matched no call{present}"
        )
        console.print(line, highlight=False, soft_wrap=True)
    if result.spans == 0 and not result.problems:
        err_console.print(
            f"warning: no spans in the {result.files:,} file(s) read: are they empty, or not "
            "OTLP traces? (The Collector's file exporter writes JSON lines of "
            "resourceSpans.)",
            style="yellow",
            highlight=False,
            markup=False,
        )
    if result.problems:
        unreadable = len(result.problems) - result.rejected
        err_console.print(
            f"{len(result.problems):,} problem(s) above: {result.rejected:,} spans rejected, "
            f"{unreadable:,} unreadable files or lines; everything else was imported",
            style="yellow",
            highlight=False,
        )


@click.command("otlp")
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
    with _bar(size) as bar:
        task = bar.add_task("otlp", total=size)
        result = stream_otlp(
            files,
            lambda batch: _store_batch(store, book, batch, tally),
            batch_spans=batch_spans,
            keep_content=keep_content,
            progress=lambda done: _advance(bar, task, done),
        )
    nowhere = _place_pending_scores(store, result.accuracy, tally)
    _summary(result, tally, nowhere)
    if result.problems:
        raise SystemExit(1)
