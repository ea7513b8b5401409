"""``llmtrace import claude-code`` and ``llmtrace import codex``: what a coding agent cost.

Thin: find the files, run ``importers.agent_transcripts`` with a progress bar, print the
summary. Exit 1 when a line was malformed (it is reported as FILE:LINE: problem and skipped;
everything else is imported).
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

from llmtrace.commands.common import (
    console,
    err_console,
    load_price_book,
    open_store,
    prices_option,
    print_import_totals,
    store_option,
)

# Below this much input a progress bar only flickers.
_PROGRESS_MIN_BYTES = 8 * 1024 * 1024


def _settle_option(func):  # type: ignore[no-untyped-def]
    return click.option(
        "--settle",
        type=click.FloatRange(min=0),
        default=60.0,
        show_default=True,
        metavar="SECONDS",
        help="A file written to this recently may be mid-stream: its last request waits for "
        "the next run.",
    )(func)


def _run(
    source: str, paths: tuple[Path, ...], store_path: str | None, prices: Path | None, settle: float
) -> None:
    from llmtrace.importers.agent_transcripts import (
        default_paths,
        import_transcripts,
        transcript_files,
    )

    roots = list(paths) or default_paths(source)
    missing = [p for p in roots if not p.exists()]
    if missing:
        raise click.UsageError(f"no such file or folder: {', '.join(map(str, missing))}")
    book = load_price_book(prices)
    store = open_store(store_path)
    files = transcript_files(source, roots)
    size = sum(f.stat().st_size for f in files)
    bar = Progress(
        TextColumn(f"reading {source}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=size < _PROGRESS_MIN_BYTES,
    )
    with bar:
        task = bar.add_task(source, total=size)
        result = import_transcripts(
            source,
            files,
            store,
            book,
            settle_seconds=settle,
            progress=lambda done: bar.advance(task, done),
            on_problem=lambda problem: click.echo(str(problem), err=True),
        )
    merged = f", {result.merged_entries:,} streamed entries merged" if result.merged_entries else ""
    console.print(
        f"Read {result.lines:,} new lines from {result.files:,} file(s): "
        f"{result.requests:,} model requests{merged}"
    )
    print_import_totals(
        result.added, result.known + result.duplicates, dict(result.statuses), result.total_cost
    )
    if result.problems:
        err_console.print(
            f"{len(result.problems):,} problem(s) above: those lines were skipped, "
            "everything else was imported",
            style="yellow",
            highlight=False,
        )
        raise SystemExit(1)


@click.command("claude-code")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@store_option
@prices_option
@_settle_option
def claude_code_command(
    paths: tuple[Path, ...], store_path: str | None, prices_file: Path | None, settle: float
) -> None:
    """Import Claude Code sessions (default ~/.claude/projects): one call per model request.

    Streamed entries of one response count once, subagent runs (<session>/subagents/) belong
    to their session, 5-minute and 1-hour cache writes are priced apart, each prompt you typed
    is one turn (action "claude-code turn") and the project is the service. Run it again to
    read only what was appended; malformed lines are reported as FILE:LINE and skipped.

    \b
    Example:
      llmtrace import claude-code && llmtrace costs --by conversation --by model
    """
    _run("claude-code", paths, store_path, prices_file, settle)


@click.command("codex")
@click.argument("paths", nargs=-1, type=click.Path(path_type=Path))
@store_option
@prices_option
@_settle_option
def codex_command(
    paths: tuple[Path, ...], store_path: str | None, prices_file: Path | None, settle: float
) -> None:
    """Import OpenAI Codex CLI rollouts (default ~/.codex/sessions): one call per request.

    Codex writes running token totals; each increase is one request, re-emitted counts and a
    fork's copied history count once. Each user message is one turn (action "codex turn").
    Run it again to read only what was appended.

    \b
    Example:
      llmtrace import codex && llmtrace costs --by conversation
    """
    _run("codex", paths, store_path, prices_file, settle)
