"""``llmtrace demo``: fill the store with a realistic, priced demo workload."""

from __future__ import annotations

import shlex
import shutil
from datetime import UTC, datetime, timedelta

import click
import polars as pl
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from llmtrace.commands.common import WHEN, console, err_console, open_store, store_option
from llmtrace.costs import format_usd
from llmtrace.demo import FINDING, PLANTED, generate
from llmtrace.store import Store

_EPILOG = """\b
Examples:
  llmtrace demo                       14 days ending this hour, then:
  llmtrace costs --by model
  llmtrace audit
  llmtrace demo --fresh --days 30 --scale 2 --seed 42
  llmtrace demo --live                live pricing of a real app, offline
"""


def current_hour() -> datetime:
    """Now, rounded down to the hour (UTC): the default end, so reruns within the hour match."""
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


@click.command("demo", epilog=_EPILOG)
@store_option
@click.option(
    "--days", type=click.IntRange(1, 366), default=14, show_default=True, help="Days of traffic."
)
@click.option(
    "--seed", type=click.IntRange(min=0), default=7, show_default=True, help="Random seed."
)
@click.option(
    "--scale",
    type=click.FloatRange(min=0, min_open=True),
    default=1.0,
    show_default=True,
    help="Traffic multiplier (1.0: about 7,700 calls a day).",
)
@click.option(
    "--end",
    type=WHEN,
    default=None,
    help="End of the generated window (exclusive). Default: the current UTC hour.",
)
@click.option("--fresh", is_flag=True, help="Empty the store first (calls and checkpoints).")
@click.option(
    "--live",
    is_flag=True,
    help="Instead: run examples/chat_app.py under `llmtrace run` against a local stand-in for "
    "the OpenAI and Anthropic APIs (no keys, no network) and show its priced calls.",
)
def demo(
    store_path: str | None,
    days: int,
    seed: int,
    scale: float,
    end: datetime | None,
    fresh: bool,
    live: bool,
) -> None:
    """Generate a realistic demo workload, price it and add it to the store.

    Several services, actions, prompts and models (OpenAI, Anthropic, Google; reasoning and
    not) with daily traffic curves, caching, conversations, errors and accuracy labels, plus
    the cases the audit should find. The same --seed and --end give the same calls, so running
    it twice adds nothing.
    """
    from llmtrace.pricing import price_calls

    if live:
        _live(store_path, fresh)
        return
    end = end or current_hour()
    store = open_store(store_path)
    if fresh:
        store.clear()
        shutil.rmtree(store.path / TRANSCRIPTS, ignore_errors=True)
    earlier_demo = 0 if fresh else _demo_calls(store)
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err_console,
        transient=True,
    ) as progress:
        task = progress.add_task("Generating calls", total=None)
        calls = generate(days=days, end=end, seed=seed, scale=scale)
        progress.update(task, description="Pricing calls")
        priced = price_calls(calls)
        parts = priced.partition_by("day", maintain_order=True)
        progress.update(task, description="Writing days", total=len(parts), completed=0)
        added = duplicates = 0
        for part in parts:
            result = store.append(part)
            added += result.added
            duplicates += result.duplicates
            progress.advance(task)
    flag = store_flag(store_path)
    _summary(priced, store, days, end, seed, added, duplicates, flag)
    _agent_workload(store, days, end, seed)
    _next_steps(flag)
    if added and earlier_demo:
        err_console.print(
            f"Note: the store already held {earlier_demo:,} demo calls of another seed or end; "
            f"it now holds both. Run `llmtrace demo --fresh{flag}` to start over.",
            markup=False,
        )


def store_flag(store_path: str | None) -> str:
    """`` --store DIR`` for the hints, when the user named a store (else the default one)."""
    return f" --store {shlex.quote(store_path)}" if store_path else ""


def plural(count: int, word: str, words: str | None = None) -> str:
    """``1 day``, ``14 days``, ``1 near-miss``, ``2 near-misses``."""
    return f"{count:,} {word if count == 1 else (words or word + 's')}"


# Where the demo writes its coding-agent transcripts, inside the store (removed by --fresh).
TRANSCRIPTS = "demo-transcripts"


def _agent_workload(store: Store, days: int, end: datetime, seed: int) -> None:
    """The coding-agent part: Claude Code and Codex transcripts written under the store and
    imported the way a user's own are (``llmtrace.demo_agents``)."""
    from llmtrace.demo_agents import LOOP_SESSION, write_transcripts
    from llmtrace.importers.agent_transcripts import import_transcripts, transcript_files
    from llmtrace.pricing import default_book

    root = store.path / TRANSCRIPTS
    folders = write_transcripts(root, end=end, days=days, seed=seed)
    requests = cost = 0.0
    for source, folder in folders.items():
        files = transcript_files(source, [folder])
        result = import_transcripts(source, files, store, default_book(), settle_seconds=0)
        requests += result.requests
        cost += result.total_cost
    console.print(
        f"Coding agents: {int(requests):,} model requests ({format_usd(cost)} newly added) from "
        f"Claude Code and Codex transcripts in {root}; planted: a stuck loop in session "
        f"{LOOP_SESSION} (LT503) and a near-miss."
    )


def _demo_calls(store: Store) -> int:
    """Demo calls already in the store (to warn before mixing two demo runs)."""
    return int(store.scan().filter(pl.col("source") == "demo").select(pl.len()).collect().item())


def _summary(
    priced: pl.DataFrame,
    store: Store,
    days: int,
    end: datetime,
    seed: int,
    added: int,
    duplicates: int,
    flag: str = "",
) -> None:
    """Calls, window, spend, what is planted, and what to run next."""
    start = end - timedelta(days=days)
    stamp = "%Y-%m-%d %H:%M"
    console.print(
        f"Demo workload: {plural(priced.height, 'call')} over {plural(days, 'day')} "
        f"({start.astimezone(UTC):{stamp}} to {end.astimezone(UTC):{stamp}} UTC), seed {seed}."
    )
    if added == 0 and duplicates:
        console.print(
            f"Nothing added: {store.path} already holds these calls (same --seed and --end). "
            "Use --fresh to rebuild it."
        )
    else:
        console.print(
            f"Added {plural(added, 'call')} to {store.path} ({duplicates:,} already there)."
        )
    spend = priced["total_cost"].sum()
    unpriced = priced.filter(pl.col("total_cost").is_null())
    line = f"Spend: {format_usd(spend)}"
    if unpriced.height:
        reasons = ", ".join(sorted(set(unpriced["price_status"].drop_nulls().to_list())))
        line += f" ({unpriced.height:,} failed or unpriced calls not counted: {reasons})"
    console.print(line + ".")
    findings = sorted({p.rule for p in PLANTED if p.expected == FINDING})
    near = sum(p.expected != FINDING for p in PLANTED)
    console.print(
        f"Planted for the audit: {', '.join(findings)} findings and "
        f"{plural(near, 'near-miss', 'near-misses')} (llmtrace.demo.PLANTED).",
        markup=False,
    )


def _next_steps(flag: str) -> None:
    console.print(  # never wrapped: the lines are meant to be copied
        f"Next:\n  llmtrace costs --by model{flag}\n"
        f"  llmtrace costs --by conversation --by agent{flag}\n  llmtrace audit{flag}",
        markup=False,
        soft_wrap=True,
    )


def _live(store_path: str | None, fresh: bool) -> None:
    """``demo --live``: the example app's calls, priced live, shown as the store holds them."""
    from llmtrace.demo_live import SERVICE, run_live_demo

    store = open_store(store_path)
    if fresh:
        store.clear()
    err_console.print(
        "Starting a local stand-in for the OpenAI and Anthropic APIs and running\n"
        "  llmtrace run -- python examples/chat_app.py\nagainst it (no keys, no network)...",
        markup=False,
        highlight=False,
    )
    code, started = run_live_demo(store.path)
    if code != 0:
        raise click.ClickException(f"the example app exited with code {code}")
    calls = (
        store.scan(since=started)
        .filter((pl.col("service") == SERVICE) & (pl.col("source") == "live"))
        .sort("start_time")
        .collect()
    )
    if calls.is_empty():
        raise click.ClickException(f"the app ran but no live calls reached {store.path}")
    table = Table(title=f"The app's LLM calls, priced live ({store.path})", title_justify="left")
    for header in ("Provider", "Model", "Input", "Cached", "Output", "Reasoning", "Cost"):
        table.add_column(header, justify="left" if header in ("Provider", "Model") else "right")
    for row in calls.iter_rows(named=True):
        table.add_row(
            row["provider"] or "-",
            row["request_model"] or row["model"] or "-",
            f"{row['input_tokens'] or 0:,}",
            f"{row['cache_read_tokens'] or 0:,}",
            f"{row['output_tokens'] or 0:,}",
            f"{row['reasoning_tokens'] or 0:,}",
            format_usd(row["total_cost"]),
        )
    console.print(table)
    total = calls["total_cost"].sum()
    console.print(
        f"{plural(calls.height, 'call')}, {format_usd(total)} in all; tokens are inclusive "
        "(Input counts Cached, Output counts Reasoning).",
        markup=False,
    )
    flag = store_flag(store_path)
    console.print(
        f"Next:\n  llmtrace costs --service {SERVICE} --since 1h --by model{flag}\n"
        "  llmtrace run -- python your_app.py    # the same, with your app and keys",
        markup=False,
        soft_wrap=True,
    )
