"""``llmtrace import langfuse``: bring a Langfuse project's LLM calls into the store.

Thin on purpose: it reads options, keys and config, shows progress with rich and prints the
summary; ``llmtrace.importers.langfuse.import_langfuse`` does the work. Registered as the
``langfuse`` subcommand of the ``import`` group (``llmtrace.commands.importing``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType

import click
from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

from llmtrace.commands.common import (
    WHEN,
    console,
    err_console,
    keep_content_option,
    load_price_book,
    open_store,
    prices_option,
    print_import_totals,
    store_option,
    window_options,
)
from llmtrace.config import load_config
from llmtrace.errors import EXIT_FINDINGS
from llmtrace.importers.langfuse.stats import ImportReporter, ImportStats


class RichReporter(ImportReporter):
    """Progress bar (pages, calls, new rows) and notices printed above it."""

    def __init__(self) -> None:
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            TextColumn("[cyan]{task.fields[pages]}[/] pages"),
            TextColumn("[cyan]{task.fields[calls]}[/] calls"),
            TextColumn("[green]{task.fields[added]}[/] new"),
            TimeElapsedColumn(),
            console=err_console,
            transient=True,
        )
        self.task = self.progress.add_task("connecting", pages=0, calls=0, added=0, total=None)

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.stop()

    def notice(self, message: str) -> None:
        self.progress.console.print(f"[yellow]note:[/] {message}", highlight=False)

    def stage(self, description: str) -> None:
        self.progress.update(self.task, description=description)

    def _show(self, stats: ImportStats) -> None:
        self.progress.update(
            self.task, pages=stats.pages, calls=f"{stats.calls:,}", added=f"{stats.added:,}"
        )

    def fetched(self, stats: ImportStats) -> None:
        self._show(stats)

    def stored(self, stats: ImportStats) -> None:
        self._show(stats)

    def waiting(self, seconds: float, reason: str) -> None:
        self.progress.console.print(f"[yellow]wait:[/] {reason}", highlight=False)


def _when(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if value else "-"


def _scores_summary(stats: ImportStats) -> None:
    """Where the scores read went: new calls, calls stored by earlier runs, or nowhere."""
    present = f", {stats.scores_present:,} already attached" if stats.scores_present else ""
    present += f", {stats.scores_replaced:,} updated" if stats.scores_replaced else ""
    updated = f" ({stats.calls_rescored:,} calls updated)" if stats.calls_rescored else ""
    console.print(
        f"  scores: {stats.scores_new_calls:,} attached to new calls, "
        f"{stats.scores_stored_calls:,} to stored calls{updated}, "
        f"{stats.scores_unmatched:,} matched no call{present} ({stats.scores:,} read); "
        f"{stats.calls_with_scores:,} calls read with scores, "
        f"{stats.calls_with_accuracy:,} with accuracy",
        highlight=False,
        soft_wrap=True,
    )


def _summary(stats: ImportStats) -> None:
    """The closing lines, in the shape ``import otlp`` prints them: what was read, stored,
    priced and scored, and where the next run starts."""
    windows = ", ".join(f"{_when(a)} .. {_when(b)}" for a, b in stats.windows) or "nothing new"
    resumed = ", continuing an interrupted import" if stats.resumed else ""
    console.print(
        f"Read {stats.observations:,} observations in {stats.pages:,} pages from Langfuse "
        f"{stats.host} ({stats.api} API{resumed}; {windows}) -> {stats.calls:,} calls",
        highlight=False,
        soft_wrap=True,  # one line, for grep and logs
    )
    print_import_totals(stats.added, stats.duplicates, stats.price_status, stats.total_cost)
    if stats.reported_cost:
        console.print(f"  Langfuse's own cost for these calls: ${stats.reported_cost:,.4f}")
    _scores_summary(stats)
    if stats.prompt_versions:
        console.print(
            f"  prompt versions read: {stats.prompt_versions:,} (labels, created time and "
            "template fingerprint kept in the checkpoint)",
            highlight=False,
            soft_wrap=True,
        )
    if stats.watermark:
        console.print(f"  next run continues from {_when(stats.watermark)}")
    if stats.rate_limit_waits:
        console.print(
            f"  rate limited {stats.rate_limit_waits} times, waited {stats.waited_seconds:,.0f} s"
        )
    if stats.usage_mismatch:
        err_console.print(
            f"{stats.usage_mismatch:,} calls report a usage total that differs from the token "
            "buckets llmtrace reads (unknown usage keys, or inclusive counts sent as exclusive)",
            style="yellow",
            highlight=False,
        )
    if stats.rejected or stats.scores_rejected:
        for problem in stats.problems:  # one plain line each: editors and grep read them
            click.echo(problem, err=True)
        more = stats.rejected + stats.scores_rejected - len(stats.problems)
        scores = f" and {stats.scores_rejected:,} scores" if stats.scores_rejected else ""
        err_console.print(
            f"{stats.rejected:,} observations{scores} skipped"
            + (f" ({more:,} more not shown)" if more else "")
            + "; everything else was imported",
            style="yellow",
            highlight=False,
        )


@click.command("langfuse")
@window_options()
@click.option(
    "--host",
    default=None,
    metavar="URL",
    help="Langfuse URL (default: $LANGFUSE_BASE_URL, else $LANGFUSE_HOST, else Langfuse Cloud EU).",
)
@store_option
@keep_content_option
@prices_option
@click.option(
    "--page-size",
    type=click.IntRange(1, 1000),
    default=1000,
    show_default=True,
    help="Observations per request (lower it if large prompts make pages time out).",
)
@click.option(
    "--scores-since",
    type=WHEN,
    default=None,
    metavar="WHEN",
    help="Also re-read scores from WHEN (e.g. 30d), before the window: edits of older scores "
    "in Langfuse (corrected annotations) then replace the stored version.",
)
def langfuse_command(
    since: datetime | None,
    until: datetime | None,
    host: str | None,
    store_path: str | None,
    keep_content: bool,
    prices_file: Path | None,
    page_size: int,
    scores_since: datetime | None,
) -> None:
    """Import generations and embeddings from Langfuse, with their scores and prompt versions.

    Keys come from LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY. Each run continues where the
    last one stopped (the first reads the last 30 days unless --since says otherwise); an
    interrupted run is finished by running the command again. Calls are priced with
    llmtrace's prices; Langfuse's own cost is kept for comparison. Scores added after a call
    was imported (LLM-as-judge, trace scores) are merged into the stored call by the next run.
    Prompt versions' labels and template fingerprints come from Langfuse's prompts. Observations
    that cannot be read are reported one per line, the rest is imported, and the exit code is 1.

    \b
    Example:
      export LANGFUSE_PUBLIC_KEY=pk-lf-... LANGFUSE_SECRET_KEY=sk-lf-...
      llmtrace import langfuse --since 7d && llmtrace costs --by prompt
      llmtrace import langfuse --scores-since 30d   # nightly: also pick up corrected scores
    """
    # Imported here, not at the top: the langfuse SDK and Polars take ~0.5 s to import, which
    # ``--help`` should not pay (issue 14: each command imports only what it uses).
    from llmtrace.accuracy import AccuracyConfig
    from llmtrace.importers.langfuse import LangfuseImportError, LangfuseSettings, import_langfuse

    settings = LangfuseSettings.from_env(host)  # missing keys: exit 2 (llmtrace.cli)
    accuracy = AccuracyConfig.from_config(load_config())
    book = load_price_book(prices_file)
    store = open_store(store_path)
    reporter = RichReporter()
    try:
        with reporter:
            stats = import_langfuse(
                store,
                settings,
                since=since,
                until=until,
                keep_content=keep_content,
                book=book,
                accuracy=accuracy,
                page_size=page_size,
                reporter=reporter,
                scores_since=scores_since,
            )
    except LangfuseImportError as exc:
        err_console.print(f"[red]error:[/] {exc}", highlight=False)
        err_console.print(
            "Everything read before this is stored and checkpointed; run the same command "
            "again to continue."
        )
        raise SystemExit(exc.exit_code) from None
    except KeyboardInterrupt:
        err_console.print(
            "Interrupted. Everything read so far is stored; run the same command again to "
            "continue where it stopped."
        )
        raise SystemExit(130) from None
    _summary(stats)
    if stats.rejected or stats.scores_rejected:
        raise SystemExit(EXIT_FINDINGS)
