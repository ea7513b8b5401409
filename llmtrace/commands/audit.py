"""``llmtrace audit``: run the rules over the store and report where money is wasted.

Made for nightly jobs and CI, like ruff: stable rule codes, ``--select/--ignore``, text, JSON or
Markdown output, and exit codes a pipeline can act on: 0 ok, 1 when ``--fail-on-savings`` is
exceeded, 2 for usage or configuration errors (including a rule file or a rule that failed; the
other rules' findings are still reported).
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

import click

from llmtrace.commands.common import (
    console,
    err_console,
    open_store,
    store_option,
    window_options,
)
from llmtrace.commands.rules import EXIT_CONFIG, load_config_or_exit
from llmtrace.commands.rules import explain as explain_rule
from llmtrace.config import ConfigError
from llmtrace.report import FORMATS, render
from llmtrace.report.text import money, renderable
from llmtrace.rules.engine import AuditResult, run_audit
from llmtrace.store import Store

EXIT_SAVINGS = 1


def _fail(message: str) -> None:
    err_console.print(f"[red]error:[/red] {message}", markup=True, highlight=False)
    sys.exit(EXIT_CONFIG)


def _price_book(path: str | None):
    """The price book of ``--prices FILE`` (None: the engine loads the default when needed)."""
    if path is None:
        return None
    from llmtrace.pricing import PriceBook

    return PriceBook.load(path)


def _store_size(store: Store, since: datetime | None, until: datetime | None) -> str:
    files = store.files(since, until)
    size = sum(f.stat().st_size for f in files if f.exists())
    return f"{len(files)} file(s), {size / 1e6:,.1f} MB"


def _run(store: Store, **options) -> AuditResult:
    """Run the audit with a spinner on stderr (shown only on a terminal)."""
    with err_console.status("Auditing...", spinner="dots") as status:
        size = _store_size(store, None, options.get("until"))
        return run_audit(
            store, progress=lambda stage: status.update(f"Auditing ({size}): {stage}..."), **options
        )


def _emit(result: AuditResult, fmt: str, output: str | None) -> None:
    if output:
        Path(output).write_text(render(result, fmt), encoding="utf-8")
        err_console.print(
            f"Wrote {len(result.findings)} finding(s), "
            f"{money(result.total_monthly_savings_usd)}/month, to {output}",
            highlight=False,
            markup=False,
        )
    elif fmt == "text":
        console.print(renderable(result, console.width))
    else:
        click.echo(render(result, fmt), nl=False)
    if result.errors and (output or fmt != "text"):
        for error in result.errors:
            err_console.print(
                f"error: {error.rule}: {error.message}", highlight=False, markup=False
            )


@click.command("audit")
@window_options()
@store_option
@click.option("--select", help="Rule codes or prefixes to run, comma-separated (LT1,LT201).")
@click.option("--ignore", help="Rule codes or prefixes to skip, comma-separated.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(FORMATS),
    default="text",
    show_default=True,
    help="Report format.",
)
@click.option("--output", "-o", type=click.Path(dir_okay=False), help="Write the report to FILE.")
@click.option(
    "--fail-on-savings",
    type=click.FloatRange(min=0),
    metavar="USD",
    help="Exit 1 when the findings' total monthly saving exceeds USD.",
)
@click.option("--prices", type=click.Path(dir_okay=False), help="Price file (TOML) to use.")
@click.option("--explain", metavar="CODE", help="Print the documentation of rule CODE and exit.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Config file.")
def audit(
    since: datetime | None,
    until: datetime | None,
    store_path: str | None,
    select: str | None,
    ignore: str | None,
    fmt: str,
    output: str | None,
    fail_on_savings: float | None,
    prices: str | None,
    explain: str | None,
    config_path: str | None,
) -> None:
    """Find where LLM money is wasted, with the evidence and the monthly saving.

    The window defaults to the 7 days up to --until (default: now); rules that compare with a
    baseline use the preceding window of the same length. Exit codes: 0 ok, 1 when
    --fail-on-savings is exceeded, 2 for usage or configuration errors.

    \b
    Examples:
      llmtrace demo && llmtrace audit
      llmtrace audit --since 30d --select LT1 --format markdown -o audit.md
      llmtrace audit --format json --fail-on-savings 100     # nightly CI gate
      llmtrace audit --explain LT101                          # what a rule finds and why
    """
    config = load_config_or_exit(config_path)
    if explain:
        try:
            click.echo(explain_rule(explain, config))
        except ConfigError as exc:
            _fail(str(exc))
        return
    try:
        result = _run(
            open_store(store_path),
            since=since,
            until=until,
            config=config,
            select=select,
            ignore=ignore,
            price_book=_price_book(prices),
        )
    except ConfigError as exc:
        _fail(str(exc))
        return
    _emit(result, fmt, output)
    if result.errors:
        sys.exit(EXIT_CONFIG)
    if fail_on_savings is not None and result.total_monthly_savings_usd > fail_on_savings:
        err_console.print(
            f"Total saving {money(result.total_monthly_savings_usd)}/month exceeds "
            f"--fail-on-savings {money(fail_on_savings)}",
            highlight=False,
            markup=False,
        )
        sys.exit(EXIT_SAVINGS)
