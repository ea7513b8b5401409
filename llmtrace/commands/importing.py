"""``llmtrace import``: bring LLM calls from telemetry into the store.

A group so every source is a subcommand of one verb: ``import otlp`` (files here) and
``import langfuse`` (``llmtrace.commands.import_langfuse``). Each subcommand
is thin: read options, call the importer, price, append, print the summary.
"""

from __future__ import annotations

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
    from llmtrace.importers.otlp import OtlpImportResult
    from llmtrace.store import Store

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


def _read(paths: tuple[Path, ...], keep_content: bool) -> OtlpImportResult:
    """Run the importer with a progress bar sized by the bytes on disk."""
    from llmtrace.importers.otlp import find_inputs, import_otlp

    files = find_inputs(paths)
    total = sum(f.stat().st_size for f in files if f.is_file())
    with _bar(total) as bar:
        task = bar.add_task("otlp", total=total)

        def advance(done: int) -> None:
            bar.advance(task, done)

        return import_otlp(files, keep_content=keep_content, progress=advance)


def _attach_late_scores(store: Store, result: OtlpImportResult) -> ScoreAttachResult:
    """Give calls stored by earlier imports the evaluations this import holds for them.

    Run before the append: a score whose call is in this import and new to the store comes
    back unmatched and is written with the call; a call already stored gets it here, so an
    evaluation that arrives in a later file than its call is kept, and a rerun adds nothing.
    """
    if result.score_targets.is_empty():
        return ScoreAttachResult()
    return store.attach_scores(result.score_targets, result.accuracy)


def _scores_line(result: OtlpImportResult, late: ScoreAttachResult) -> str | None:
    """``scores: N attached to new calls, M to stored calls, K matched no call``."""
    targets = result.score_targets
    if targets.is_empty():
        return None
    here = set(targets.filter(pl.col("matched")).get_column("score_id"))
    everywhere = set(targets.get_column("score_id"))
    new_calls = len(here & late.unmatched_ids)
    nowhere = len((everywhere - here) & late.unmatched_ids)
    present = f", {late.present:,} already attached" if late.present else ""
    return (
        f"  scores: {new_calls:,} attached to new calls, {late.attached:,} to stored calls, "
        f"{nowhere:,} matched no call{present}"
    )


def _summary(
    result: OtlpImportResult,
    priced: pl.DataFrame,
    added: int,
    duplicates: int,
    late: ScoreAttachResult,
) -> None:
    console.print(
        f"Read {result.spans:,} spans from {result.files:,} file(s): "
        f"{result.llm_spans:,} LLM spans -> {priced.height:,} calls "
        f"({result.merged:,} duplicate spans merged)"
    )
    statuses = dict(priced.group_by("price_status").len().iter_rows()) if priced.height else {}
    total = priced.get_column("total_cost").sum() if priced.height else 0.0
    print_import_totals(added, duplicates, statuses, total)
    line = _scores_line(result, late)
    if line:
        console.print(line, highlight=False, soft_wrap=True)
    if result.problems:
        unreadable = len(result.problems) - result.rejected
        err_console.print(
            f"{len(result.problems):,} problem(s) above: {result.rejected:,} spans rejected, "
            f"{unreadable:,} unreadable files or lines; everything else was imported",
            style="yellow",
            highlight=False,
        )


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
def otlp_command(
    paths: tuple[Path, ...], store_path: str | None, keep_content: bool, prices_file: Path | None
) -> None:
    """Import LLM calls from OTLP trace files: JSON lines, JSON, protobuf, .gz, directories.

    Every span that records a model call (OpenTelemetry GenAI, OpenLLMetry, OpenInference,
    OpenLIT, Logfire, Langfuse attributes) becomes one call record, priced with llmtrace's
    prices; a cost the instrumentation reported is kept for comparison. Importing the same
    files again adds nothing. Bad files, lines or spans are reported as FILE:LINE: span ID:
    problem, the rest is imported, and the exit code is 1.

    \b
    Example (the Collector's file exporter writes JSON lines):
      llmtrace import otlp /var/log/otel/traces.jsonl exports/ && llmtrace costs --by action
    """
    from llmtrace.pricing import price_calls

    book = load_price_book(prices_file)
    try:
        result = _read(paths, keep_content)
    except ConfigError as exc:  # the config's [accuracy] section
        raise click.ClickException(str(exc)) from None
    for (
        problem
    ) in result.problems:  # one plain line each, never wrapped: editors and grep read them
        click.echo(str(problem), err=True)
    priced = price_calls(result.calls, book)
    store = open_store(store_path)
    late = _attach_late_scores(store, result)
    appended = store.append(priced)
    _summary(result, priced, appended.added, appended.duplicates, late)
    if result.problems:
        raise SystemExit(1)


import_group.add_command(langfuse_command)
