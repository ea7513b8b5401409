"""``llmtrace audit``: run the rules over the store and report where money is wasted.

Made for nightly jobs and CI, like ruff: stable rule codes, ``--select/--ignore``, text, JSON,
Markdown or HTML output, and exit codes a pipeline can act on: 0 ok, 1 when ``--fail-on-savings`` is
exceeded, 2 for usage or configuration errors (including a rule file or a rule that failed; the
other rules' findings are still reported) and when ``--push-metrics`` could not publish.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

import click

from llmtrace.commands.common import (
    console,
    err_console,
    filter_options,
    open_existing_store,
    output_option,
    store_option,
    window_options,
)
from llmtrace.commands.rules import EXIT_CONFIG, load_config_or_exit
from llmtrace.commands.rules import explain as explain_rule
from llmtrace.config import ConfigError
from llmtrace.errors import UsageError
from llmtrace.filters import filtered_store
from llmtrace.report import FORMATS, render
from llmtrace.report.text import money, renderable
from llmtrace.rules.engine import AuditResult, run_audit
from llmtrace.store import Store

if TYPE_CHECKING:
    from llmtrace.otel.audit_metrics import PushTarget
    from llmtrace.report.context import ReportContext

EXIT_SAVINGS = 1


def _fail(message: str) -> NoReturn:
    """A usage or configuration error: one line, exit 2 (``llmtrace.cli``)."""
    raise UsageError(message)


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


def _run(store: Store | str, **options) -> AuditResult:
    """Run the audit with a spinner on stderr (shown only on a terminal)."""
    with err_console.status("Auditing...", spinner="dots") as status:
        # an object-store URL (--engine ray) is listed by its workers, not here
        local = isinstance(store, Store)
        size = _store_size(store, None, options.get("until")) if local else store
        return run_audit(
            store, progress=lambda stage: status.update(f"Auditing ({size}): {stage}..."), **options
        )


def _push_target(
    ctx: click.Context, param: click.Parameter, value: str | None
) -> PushTarget | None:
    """Check ``--push-metrics TARGET`` before auditing, so a typo fails fast."""
    if value is None:
        return None
    from llmtrace.otel.audit_metrics import parse_target

    try:
        return parse_target(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc), ctx, param) from None


def _push(result: AuditResult, target: PushTarget) -> bool:
    """Publish the run as metrics (``llmtrace.otel.audit_metrics``); False if that failed."""
    from llmtrace.otel.audit_metrics import PushError, push_audit_metrics

    try:
        samples = push_audit_metrics(result, target)
    except PushError as exc:
        err_console.print(
            f"error: --push-metrics: {exc}", highlight=False, markup=False, soft_wrap=True
        )
        return False
    err_console.print(
        f"Pushed {len(samples)} metric sample(s) to {target.describe()}",
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    return True


def _context(
    store: Store | None, result: AuditResult, filters: dict[str, tuple[str, ...]]
) -> ReportContext:
    """Footer facts and each finding's key spend, for the Markdown and HTML reports."""
    from llmtrace.filters import describe
    from llmtrace.report.context import build_context

    calls = store.scan(result.window.baseline_since, result.window.until) if store else None
    where = str(store.path) if store is not None else None
    return build_context(calls, result, store=where, filters=describe(filters))


def _emit(
    result: AuditResult, fmt: str, output: str | None, context: ReportContext | None = None
) -> None:
    if output:
        Path(output).write_text(render(result, fmt, context), encoding="utf-8")
        err_console.print(
            f"Wrote {len(result.findings)} finding(s), "
            f"{money(result.total_monthly_savings_usd)}/month, to {output}",
            highlight=False,
            markup=False,
        )
    elif fmt == "text":
        console.print(renderable(result, console.width))
    else:
        click.echo(render(result, fmt, context), nl=False)
    if result.errors and (output or fmt != "text"):
        for error in result.errors:
            err_console.print(
                f"error: {error.rule}: {error.message}", highlight=False, markup=False
            )


@click.command("audit")
@window_options()
@store_option
@filter_options
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
@output_option
@click.option(
    "--fail-on-savings",
    type=click.FloatRange(min=0),
    metavar="USD",
    help="Exit 1 when the findings' total monthly saving exceeds USD.",
)
@click.option("--prices", type=click.Path(dir_okay=False), help="Price file (TOML) to use.")
@click.option(
    "--engine",
    type=click.Choice(["local", "ray"]),
    default="local",
    show_default=True,
    help="Where the rules' aggregate step runs: this machine (streaming, in bounded memory), "
    "or Ray tasks over parts of the store (pip install 'llmtrace[ray]'). Same findings.",
)
@click.option(
    "--address",
    metavar="ADDR",
    help="With --engine ray: the Ray cluster to use (auto, HOST:6379 or ray://HOST:10001; "
    "default: $RAY_ADDRESS, else a local Ray). With Ray, --store may be an object-store URL "
    "(s3://bucket/store) the workers read.",
)
@click.option("--explain", metavar="CODE", help="Print the documentation of rule CODE and exit.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), help="Config file.")
@click.option(
    "--push-metrics",
    "push_metrics",
    is_flag=False,
    flag_value="otlp",
    default=None,
    envvar="LLMTRACE_PUSH_METRICS",
    callback=_push_target,
    metavar="[otlp|otlp=URL|pushgateway=URL]",
    help="Also publish each finding's monthly saving and the run's totals as metrics, for the "
    "Cost audit dashboard and alerts: over OTLP (the default; endpoint, protocol and headers "
    "from the standard OTEL_EXPORTER_OTLP_* variables, or otlp=URL) or to a Prometheus "
    "Pushgateway (pushgateway=http://host:9091). Env: LLMTRACE_PUSH_METRICS.",
)
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
    engine: str,
    address: str | None,
    explain: str | None,
    config_path: str | None,
    push_metrics: PushTarget | None,
    filters: dict[str, tuple[str, ...]],
) -> None:
    """Find where LLM money is wasted, with the evidence and the monthly saving.

    The window defaults to the 7 days up to --until (default: now); rules that compare with a
    baseline use the preceding window of the same length. Exit codes: 0 ok, 1 when
    --fail-on-savings is exceeded, 2 for usage or configuration errors or a failed
    --push-metrics.

    \b
    Examples:
      llmtrace demo && llmtrace audit
      llmtrace audit --since 30d --select LT1 --format markdown -o audit.md
      llmtrace audit --service 'chat-*' --environment production
      llmtrace audit --format json --fail-on-savings 100     # nightly CI gate
      llmtrace audit --format html -o audit.html             # a page with charts
      llmtrace audit --explain LT101                          # what a rule finds and why
      llmtrace audit --engine ray --address auto --store s3://bucket/llmtrace
      llmtrace audit --push-metrics pushgateway=http://localhost:9091   # nightly, to Grafana
    """
    config = load_config_or_exit(config_path)
    if explain:
        try:
            click.echo(explain_rule(explain, config))
        except ConfigError as exc:
            _fail(str(exc))
        return
    if address and engine != "ray":
        _fail("--address needs --engine ray")
    if filters and engine == "ray":
        _fail("--service/--model/--provider/--prompt/--action/--environment need --engine local")
    remote = engine == "ray" and store_path is not None and "://" in store_path
    store = None if remote else filtered_store(open_existing_store(store_path), filters)
    try:
        result = _run(
            store_path if remote else store,
            since=since,
            until=until,
            config=config,
            select=select,
            ignore=ignore,
            price_book=_price_book(prices),
            engine=engine,
            address=address,
        )
    except ConfigError as exc:
        _fail(str(exc))
        return
    context = _context(store, result, filters) if fmt in ("markdown", "html") else None
    _emit(result, fmt, output, context)
    pushed = _push(result, push_metrics) if push_metrics is not None else True
    if result.errors or not pushed:
        sys.exit(EXIT_CONFIG)
    if fail_on_savings is not None and result.coverage.judged == 0:
        _fail(
            f"--fail-on-savings: the audit read {result.calls_scanned:,} calls but could judge "
            "none of them (see the report's coverage), so it cannot pass"
        )
    if fail_on_savings is not None and result.total_monthly_savings_usd > fail_on_savings:
        err_console.print(
            f"Total saving {money(result.total_monthly_savings_usd)}/month exceeds "
            f"--fail-on-savings {money(fail_on_savings)}",
            highlight=False,
            markup=False,
        )
        sys.exit(EXIT_SAVINGS)
