"""``llmtrace store``: look after the local store (``check [--repair]``)."""

from __future__ import annotations

import sys

import click

from llmtrace.commands.common import open_existing_store, store_option
from llmtrace.errors import EXIT_FINDINGS, EXIT_OK
from llmtrace.safe_text import escape


@click.group("store")
def store_group() -> None:
    """Check and repair the local store."""


@store_group.command("check")
@click.option(
    "--repair",
    is_flag=True,
    help="Move bad files, stray folders and unreadable spool files to STORE/quarantine/, "
    "remove leftovers of killed writers and apps, finish interrupted compactions.",
)
@store_option
def check(repair: bool, store_path: str | None) -> None:
    """Verify every store file: readable, call records, data pages, checksums.

    Also the live exporter's spool (STORE/spool/, settled first as by every reader): files a
    settle could not read, batches still not settled, half-written files of killed apps.
    Prints one line per problem (PATH: what is wrong). Exit code 0 when the store is sound
    (or every problem was repaired), 1 when problems remain.

    \b
    Examples:
      llmtrace store check                      exit 1 when anything is wrong
      llmtrace store check --repair --store /data/llmtrace
    """
    from llmtrace.store_check import check_store

    store = open_existing_store(store_path)
    report = check_store(store, repair=repair)
    for problem in report.problems:
        click.echo(str(problem))
    for line in report.repairs:
        click.echo(f"repaired: {escape(line)}")
    unverified = (
        report.files
        - report.verified
        - sum(1 for p in report.problems if p.path.suffix == ".parquet")
    )
    summary = (
        f"checked {report.files:,} file(s) in {escape(store.path)}: "
        f"{report.verified:,} match their checksum, {max(unverified, 0):,} have none recorded; "
        f"{len(report.problems):,} problem(s)"
    )
    if repair:
        summary += f", {len(report.repairs):,} repair(s)"
    click.echo(summary, err=True)
    if report.problems and not repair:
        click.echo("Run `llmtrace store check --repair` to fix them.", err=True)
    # with --repair: 1 only when something could not be repaired (a spooled batch of a newer
    # format waits for a newer llmtrace)
    remaining = report.unrepaired if repair else len(report.problems)
    sys.exit(EXIT_FINDINGS if remaining else EXIT_OK)
