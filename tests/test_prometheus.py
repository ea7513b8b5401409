"""Every dashboard query against a real Prometheus fed by llmtrace itself.

The stack, all real and on 127.0.0.1: Debian's ``prometheus`` (2.42) and
``prometheus-pushgateway``; the real ``openai`` and ``anthropic`` SDKs calling tests/live's
loopback provider under ``llmtrace.init()``, exporting OTLP/HTTP to ``prom.bridge`` (the
Collector's naming and promotion, scraped by Prometheus); ``llmtrace audit --push-metrics``
both through the Pushgateway and over OTLP. The LLM calls come in two rounds with a scrape in
between, so ``rate``/``increase`` have two samples per series, as in a running system.

Then every PromQL query of every panel and variable of ``dashboards/*.json`` runs through the
HTTP API with Grafana's variables substituted three ways (All, a selection, a selection that
matches nothing) and must parse and return exactly the expected series, with exact values where
extrapolation cancels out (ratios of series sampled together).
"""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from live.clients import anthropic_client, openai_client
from prom import dashboards as dash
from prom import servers
from prom.bridge import PrometheusBridge
from prom.servers import Prometheus, PromQLError, Pushgateway, ScrapeJob

from llmtrace.commands.audit import audit
from llmtrace.otel import audit_metrics as am
from llmtrace.rules.base import Finding
from llmtrace.rules.engine import AuditResult, AuditWindow

pytest_plugins = ["live.fixtures"]
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

END = datetime(2026, 11, 20, tzinfo=UTC)
SERVICE = "checkout-api"
# A system prompt, so each call's prompt label is the template fingerprint.
MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello."},
]
# Per call, from tests/live's loopback usage (inclusive counts as the SDKs report them).
TOKENS = {
    "gpt-4o": {"input": 1149, "cache_read": 1024, "output": 50},
    "o4-mini": {"input": 1000, "output": 228, "reasoning": 192},
    "claude-sonnet-4-5": {
        "input": 4 + 5000 + 1163,
        "cache_read": 5000,
        "cache_write": 1163,
        "output": 500,
        "reasoning": 300,
    },
}
PROVIDER = {"gpt-4o": "openai", "o4-mini": "openai", "claude-sonnet-4-5": "anthropic"}
MODELS = set(TOKENS)
RATE_WINDOW, RANGE = "5m", "10m"
LOOKBACK = "1h"


def _missing_reason() -> str | None:
    missing = servers.missing("prometheus", "pushgateway")
    if missing:
        return f"{', '.join(missing)} not installed (apt-get install prometheus prometheus-pushgateway)"
    return None


@dataclass
class Stack:
    prometheus: Prometheus
    pushgateway: Pushgateway
    bridge: PrometheusBridge
    audit_report: dict[str, Any]
    spans: list[Any] = field(default_factory=list)
    prompts: set[str] = field(default_factory=set)


def _calls(provider: Any, handle: Any) -> None:
    """One call per model: gpt-4o (cache read), o4-mini (reasoning), Sonnet (all five types)."""
    client = openai_client(provider)
    client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    client.chat.completions.create(model="o4-mini", messages=MESSAGES)
    anthropic_client(provider, handle.tracer_provider).messages.create(
        model="claude-sonnet-4-5",
        max_tokens=2048,
        system=MESSAGES[0]["content"],
        messages=MESSAGES[1:],
        thinking={"type": "enabled", "budget_tokens": 1024},
    )
    assert handle.force_flush()


def _count(stack_prom: Prometheus, expected: int) -> None:
    stack_prom.wait_for(
        f'sum(gen_ai_usage_cost_USD_count{{service_name="{SERVICE}"}})',
        lambda r: bool(r) and float(r[0]["value"][1]) == expected,
    )


def _demo_store(path: Path) -> Path:
    from llmtrace import demo, pricing
    from llmtrace.store import Store

    calls = pricing.price_calls(demo.generate(days=14, end=END), pricing.PriceBook())
    Store(path).append(calls)
    return path


CLEAN_ENV = {"OTEL_SERVICE_NAME": None, "OTEL_RESOURCE_ATTRIBUTES": None, "LLMTRACE_CONFIG": None}


def _audit_cli(store: Path, target: str, environment: str, *extra: str) -> Any:
    return CliRunner().invoke(
        audit,
        ["--store", str(store), "--until", "2026-11-20", "--select", "LT101", "--format",
         "json", "--push-metrics", target, *extra],
        env={**CLEAN_ENV, "LLMTRACE_ENVIRONMENT": environment},
        catch_exceptions=False,
    )  # fmt: skip


def _window() -> AuditWindow:
    return AuditWindow(END - timedelta(days=7), END, END - timedelta(days=14), END)


def _finding(rule: str, saving: float, **key: Any) -> Finding:
    return Finding(
        rule=rule,
        name=key.pop("name", "synthetic"),
        severity=key.pop("severity", "high"),
        prompt=key.get("prompt"),
        model=key.get("model"),
        service=key.get("service"),
        window_start=END - timedelta(days=7),
        window_end=END,
        monthly_savings_usd=saving,
        message="m",
        fix="f",
    )


# Label values a text format must escape; two findings with the same labels (summed); and one
# without prompt and model (labels left out, not empty).
EDGE_FINDINGS = [
    _finding("LT901", 10.0, prompt='say "hi"\\now', model="m-1", service="edge/svc"),
    _finding("LT901", 5.0, prompt='say "hi"\\now', model="m-1", service="edge/svc"),
    _finding("LT902", 2.5, name="two\nlines", severity="low", service="edge/svc"),
]


@pytest.fixture(scope="module")
def stack(provider: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    reason = _missing_reason()
    if reason:
        pytest.skip(reason)
    from opentelemetry.sdk.resources import Resource

    from llmtrace.otel import _guard
    from llmtrace.otel.setup import init

    work = tmp_path_factory.mktemp("prom")
    bridge = PrometheusBridge().start()
    gateway = Pushgateway(work / "pushgateway").start()
    prometheus = Prometheus(
        work / "prometheus",
        scrape=[
            ScrapeJob("otel-collector", bridge.scrape_target, honor_labels=True),
            ScrapeJob("pushgateway", gateway.url.removeprefix("http://"), honor_labels=True),
        ],
    ).start()
    _guard.reset()
    handle = init(
        exporters="otlp",
        otlp_endpoint=bridge.otlp_endpoint,
        service_name=SERVICE,
        environment="test",
        set_global=False,
        metric_interval_ms=3_600_000,
    )
    try:
        assert handle is not None
        _calls(provider, handle)
        _count(prometheus, 3)
        _calls(provider, handle)  # second round: every series has two samples
        _count(prometheus, 6)

        store = _demo_store(work / "store")
        pushed = _audit_cli(store, f"pushgateway={gateway.url}", "test")
        assert pushed.exit_code == 0, pushed.output
        by_otlp = _audit_cli(store, f"otlp={bridge.otlp_endpoint}", "staging")
        assert by_otlp.exit_code == 0, by_otlp.output
        edge = AuditResult(EDGE_FINDINGS, ["LT901", "LT902"], 7, _window())
        resource = Resource({"service.name": "edge-audit", "deployment.environment.name": "edge"})
        am.push_audit_metrics(edge, f"pushgateway={gateway.url}", resource=resource)
        prometheus.wait_for(
            "count(count by (deployment_environment_name) "
            "(last_over_time(llmtrace_audit_run_timestamp_seconds[1h])))",
            lambda r: bool(r) and float(r[0]["value"][1]) == 3,
        )
        report = json.loads(pushed.stdout)
        spans = [s for s in bridge.receiver.spans if "gen_ai.usage.cost" in s.attributes]
        prompts = {
            r["metric"]["llmtrace_prompt"]
            for r in prometheus.query("gen_ai_usage_cost_USD_count")
            if "llmtrace_prompt" in r["metric"]
        }
        yield Stack(prometheus, gateway, bridge, report, spans, prompts)
    finally:
        if handle is not None:
            handle.shutdown()
        prometheus.stop()
        gateway.stop()
        bridge.stop()


# -- running dashboard queries ---------------------------------------------------------------------


def _values(stack: Stack, selection: dict[str, str]) -> dict[str, str]:
    return {
        "__rate_interval": RATE_WINDOW,
        "__range": RANGE,
        "__interval": "15s",
        "lookback": LOOKBACK,
        "min_cost": "0.01",
        "prometheus_datasource": "prom",
        "tempo_datasource": "tempo",
        **selection,
    }


ALL = {"service": ".*", "environment": ".*", "model": ".*"}


def run(
    stack: Stack, query: dash.Query, selection: dict[str, str], at: float | None = None
) -> list[dict[str, Any]]:
    """The query as Grafana sends it: instant at ``at`` (now), or a range of the minute before.

    Queries compared with each other need the same ``at``: ``increase`` extrapolates to the end
    of its window, so the same series gives slightly different values a second apart.
    """
    expr = dash.substitute(query.text, _values(stack, selection))
    at = at or time.time()
    try:
        if query.instant:
            return stack.prometheus.query(expr, at)
        return stack.prometheus.query_range(expr, at - 60, at, 2)
    except PromQLError as exc:
        raise AssertionError(f"{query.where}: Prometheus rejected {expr!r}: {exc}") from None


def latest(series: dict[str, Any]) -> float:
    """The value of an instant sample, or the last finite point of a range."""
    if "value" in series:
        return float(series["value"][1])
    finite = [float(v) for _, v in series["values"] if math.isfinite(float(v))]
    assert finite, f"no finite point in {series}"
    return finite[-1]


def by_label(result: list[dict[str, Any]], label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for series in result:
        key = series["metric"].get(label, "")
        assert key not in out, f"two series for {label}={key!r}: {result}"
        out[key] = latest(series)
    return out


def prometheus_queries(uid: str) -> list[dash.Query]:
    return [q for q in dash.queries(dash.all_dashboards()[uid]) if q.kind == "prometheus"]


def _ratio(model_set: set[str], numerator: str, denominator: str) -> float:
    top = sum(TOKENS[m].get(numerator, 0) for m in model_set)
    return top / sum(TOKENS[m].get(denominator, 0) for m in model_set)


# -- LLM cost overview -------------------------------------------------------------------------------


def overview_expectations(stack: Stack, models: set[str]) -> dict[str, Any]:
    """panel title -> (group label, expected values) or a check of the single value."""
    types = {t for m in models for t in TOKENS[m]}  # each model's cost has the same components
    cached = {m for m in models if "cache_read" in TOKENS[m]}
    reasoning = {m for m in models if "reasoning" in TOKENS[m]}
    actions = {f"chat {m}" for m in models}
    return {
        "Spend by model": ("gen_ai_request_model", models),
        "Spend by provider": ("gen_ai_provider_name", {PROVIDER[m] for m in models}),
        "Spend by service": ("service_name", {SERVICE}),
        "Spend by cost component": ("llmtrace_cost_component", types),
        "Spend by action": ("llmtrace_action", actions),
        "Spend by prompt": (
            "llmtrace_prompt",
            None,
        ),  # fingerprints: checked against the raw metric
        "Tokens by type (per minute)": ("gen_ai_token_type", types),
        "Cache-hit ratio by model": (
            "gen_ai_request_model",
            {m: _ratio({m}, "cache_read", "input") for m in cached},
        ),
        "Reasoning share of output by model": (
            "gen_ai_request_model",
            {m: _ratio({m}, "reasoning", "output") for m in reasoning},
        ),
        "Cost per action, p50 and p95": ("llmtrace_action", actions),
        "Cost per action": ("llmtrace_action", actions),
        "Top prompts by spend": ("gen_ai_request_model", models),
        "Cache-hit ratio": _ratio(models, "cache_read", "input"),
        "Reasoning share of output": _ratio(models, "reasoning", "output"),
    }


SELECTED_MODELS = {"gpt-4o", "o4-mini"}
SELECTIONS = {
    "all": (ALL, MODELS),
    "selected": (
        {"service": SERVICE, "environment": "test", "model": "(gpt-4o|o4-mini)"},
        SELECTED_MODELS,
    ),
}


@pytest.mark.parametrize("selection", SELECTIONS)
def test_every_cost_overview_query_returns_the_expected_series(
    stack: Stack, selection: str
) -> None:
    values, models = SELECTIONS[selection]
    expected = overview_expectations(stack, models)
    queries = prometheus_queries("llmtrace-cost-overview")
    assert len(queries) >= 15
    for query in queries:
        result = run(stack, query, values)
        assert result, f"{query.where}: no series for {selection}"
        for series in result:
            assert math.isfinite(latest(series)) and latest(series) >= 0, (query.where, series)
            if "gen_ai_request_model" in series["metric"]:
                assert series["metric"]["gen_ai_request_model"] in models, (query.where, series)
        want = expected.get(query.panel)
        if isinstance(want, float):
            (series,) = result
            assert latest(series) == pytest.approx(want, rel=1e-9), query.where
        elif isinstance(want, tuple):
            label, wanted = want
            keys = {s["metric"].get(label) for s in result}
            if wanted is None:  # prompts are fingerprints: those the raw metric has
                assert keys <= stack.prompts and keys, query.where
                continue
            assert keys == set(wanted), f"{query.where}: {label} {keys} != {set(wanted)}"
            if isinstance(wanted, dict):
                got = by_label(result, label)
                for key, ratio in wanted.items():
                    assert got[key] == pytest.approx(ratio, rel=1e-9), (query.where, key)


def test_cost_overview_totals_agree(stack: Stack) -> None:
    """Stat panels and the breakdowns measure the same spend (each from its own series)."""
    panels = {q.panel: q for q in prometheus_queries("llmtrace-cost-overview") if q.ref == "A"}
    at = time.time()
    spend = latest(run(stack, panels["Spend"], ALL, at)[0])
    calls = latest(run(stack, panels["LLM calls"], ALL, at)[0])
    mean = latest(run(stack, panels["Mean cost per call"], ALL, at)[0])
    assert spend > 0 and calls > 0
    assert mean == pytest.approx(spend / calls, rel=1e-9)
    # raw cumulative values (no extrapolation): components add up to the histogram's sum
    cost = stack.prometheus.query(f'sum(gen_ai_usage_cost_USD_sum{{service_name="{SERVICE}"}})')
    parts = stack.prometheus.query(f'sum(llmtrace_cost_USD_total{{service_name="{SERVICE}"}})')
    assert latest(parts[0]) == pytest.approx(latest(cost[0]), rel=1e-9)
    by_model = run(stack, panels["Spend by model"], ALL, at)
    by_component = run(stack, panels["Spend by cost component"], ALL, at)
    total_rate = sum(latest(s) for s in by_model)
    assert sum(latest(s) for s in by_component) == pytest.approx(total_rate, rel=1e-9)
    # the same spend per action in the table and per model in the time series
    actions = [
        q for q in prometheus_queries("llmtrace-cost-overview") if q.panel == "Cost per action"
    ]
    table_spend = sum(latest(s) for s in run(stack, actions[0], ALL, at))
    assert table_spend == pytest.approx(spend, rel=1e-9)


def test_action_cost_histogram_agrees_with_the_calls(stack: Stack) -> None:
    """Every call of the stack is its own trace, so each action instance is one call: the
    action-cost histogram must hold the same values as the per-call one, and the dashboard's
    per-action percentiles the same numbers as per-call percentiles."""
    service = f'service_name="{SERVICE}"'
    for part in ("sum", "count"):
        actions = stack.prometheus.query(f"sum(llmtrace_action_cost_USD_{part}{{{service}}})")
        calls = stack.prometheus.query(f"sum(gen_ai_usage_cost_USD_{part}{{{service}}})")
        assert latest(actions[0]) == pytest.approx(latest(calls[0]), rel=1e-9), part
    assert (
        latest(stack.prometheus.query(f"sum(llmtrace_action_cost_USD_count{{{service}}})")[0]) == 6
    )
    (p50,) = [
        q for q in prometheus_queries("llmtrace-cost-overview")
        if q.panel == "Cost per action" and "histogram_quantile(0.5," in q.text
    ]  # fmt: skip
    at = time.time()
    per_action = by_label(run(stack, p50, ALL, at), "llmtrace_action")
    per_call = stack.prometheus.query(
        "histogram_quantile(0.5, sum by (le, llmtrace_action) "
        f"(increase(gen_ai_usage_cost_USD_bucket{{{service}}}[{RANGE}])))",
        at,
    )
    assert per_action == pytest.approx(by_label(per_call, "llmtrace_action"), rel=1e-9)
    labels = stack.prometheus.query(f"llmtrace_action_cost_USD_count{{{service}}}")
    assert {r["metric"]["deployment_environment_name"] for r in labels} == {"test"}


def test_cost_overview_filters_exclude_what_is_not_selected(stack: Stack) -> None:
    """A selection that matches nothing empties every panel: the filters are really applied."""
    for selection in (
        {**ALL, "environment": "nope"},
        {**ALL, "service": "other-service"},
        {**ALL, "model": "gpt-nonexistent"},
    ):
        for query in prometheus_queries("llmtrace-cost-overview"):
            assert run(stack, query, selection) == [], (query.where, selection)


# -- LLM cost audit ----------------------------------------------------------------------------------


def test_every_cost_audit_query_returns_the_expected_series(stack: Stack) -> None:
    report = stack.audit_report["findings"]
    assert report, "the demo audit must find something"
    rules = {"LT101", "LT901", "LT902"}
    # info findings (inconclusive) are listed but their saving is not claimed, as in the report
    prompts = {f["prompt"] for f in report if f["severity"] != "info"} | {'say "hi"\\now', ""}
    services = {f["service"] for f in report} | {"edge/svc"}
    for query in prometheus_queries("llmtrace-cost-audit"):
        result = run(stack, query, ALL)
        assert result, f"{query.where}: no series"
        for series in result:
            assert math.isfinite(latest(series)), (query.where, series)
        if query.panel == "Saving found by rule":
            assert set(by_label(result, "rule")) == rules
        elif query.panel == "Saving found by prompt":
            assert set(by_label(result, "prompt")) == prompts
        elif query.panel == "Current top findings":
            assert {s["metric"]["service"] for s in result} == services
        elif query.panel == "Findings":
            assert latest(result[0]) == 2 * len(report) + len(EDGE_FINDINGS)
        elif query.panel == "Since the last audit":
            assert 0 <= latest(result[0]) < 600
        elif query.panel == "Rule errors":
            assert latest(result[0]) == 0


def test_cost_audit_selection_shows_one_runs_findings(stack: Stack) -> None:
    """Environment ``test`` is the Pushgateway run: its findings equal the JSON report's."""
    report = stack.audit_report
    queries = {q.panel: q for q in prometheus_queries("llmtrace-cost-audit")}
    test_env = {**ALL, "environment": "test"}
    rows = run(stack, queries["Current top findings"], test_env)
    got = {
        (r["metric"]["rule"], r["metric"]["prompt"], r["metric"]["model"], r["metric"]["service"],
         r["metric"]["severity"]): round(latest(r), 4)
        for r in rows
    }  # fmt: skip
    want = {
        (f["rule"], f["prompt"], f["model"], f["service"], f["severity"]): f["monthly_savings_usd"]
        for f in report["findings"]
    }
    assert got == pytest.approx(want, abs=1e-4)
    saving = latest(run(stack, queries["Monthly saving found"], test_env)[0])
    assert saving == pytest.approx(report["total_monthly_savings_usd"], abs=1e-3)
    calls = latest(run(stack, queries["Calls audited"], test_env)[0])
    assert calls == report["calls_scanned"]
    one = report["findings"][0]
    only = {"service": one["service"], "model": one["model"], "environment": "test"}
    (row,) = run(stack, queries["Current top findings"], only)
    assert row["metric"]["prompt"] == one["prompt"]


def test_pushed_labels_survive_escaping_and_duplicates_are_summed(stack: Stack) -> None:
    rows = stack.prometheus.query(
        'llmtrace_audit_savings_USD_per_month{deployment_environment_name="edge"}'
    )
    got = {(r["metric"]["rule"], r["metric"].get("prompt"), r["metric"].get("model"),
            r["metric"]["rule_name"]): latest(r) for r in rows}  # fmt: skip
    assert got == {
        ("LT901", 'say "hi"\\now', "m-1", "synthetic"): 15.0,
        ("LT902", None, None, "two\nlines"): 2.5,
    }
    assert all(r["metric"]["job"] == "edge-audit" for r in rows)


def test_otlp_push_arrives_as_gauges_with_the_same_names(stack: Stack) -> None:
    """The OTLP path: OTel gauges named and united so the Collector gives the Pushgateway names."""
    points = stack.bridge.receiver.points("llmtrace.audit.savings")
    assert points and all(p.kind == "gauge" and p.unit == "USD/mo" for p in points)
    names = {r["metric"]["__name__"] for r in stack.prometheus.query(
        '{__name__=~"llmtrace_audit_.+", deployment_environment_name="staging"}')}  # fmt: skip
    assert names == {m.prometheus for m in am.AUDIT_METRICS}
    pushed = {r["metric"]["__name__"] for r in stack.prometheus.query(
        '{__name__=~"llmtrace_audit_.+", deployment_environment_name="test"}')}  # fmt: skip
    assert pushed == names


# -- expensive calls ---------------------------------------------------------------------------------


def test_expensive_calls_metric_panels(stack: Stack) -> None:
    """Calls over the threshold come from the histogram bucket ``le="$min_cost"``."""
    queries = {q.panel: q for q in prometheus_queries("llmtrace-expensive-calls")}
    share = next(q for title, q in queries.items() if title.startswith("Share"))
    over = next(q for title, q in queries.items() if title.startswith("Calls costing"))
    # only the Sonnet call (0.0134 USD) costs more than 0.01 of the three
    assert latest(run(stack, share, ALL)[0]) == pytest.approx(1 / 3, rel=1e-9)
    assert latest(run(stack, over, ALL)[0]) > 0
    sonnet = {**ALL, "model": "claude-sonnet-4-5"}
    assert latest(run(stack, share, sonnet)[0]) == pytest.approx(1.0, rel=1e-9)
    cheap = {**ALL, "model": "gpt-4o"}
    assert latest(run(stack, share, cheap)[0]) == 0.0
    assert run(stack, share, {**ALL, "environment": "nope"}) == []


def test_expensive_calls_traceql_selects_attributes_llmtrace_exports(stack: Stack) -> None:
    """Every span attribute the Tempo table filters on or selects is on the exported spans."""
    from prom import traceql

    (query,) = [
        q for q in dash.queries(dash.all_dashboards()["llmtrace-expensive-calls"])
        if q.kind == "tempo"
    ]  # fmt: skip
    expr = dash.substitute(query.text, _values(stack, ALL))
    traceql.check(expr)
    assert stack.spans, "no priced LLM span reached the OTLP receiver"
    optional = {"gen_ai.prompt.name"}  # set by apps that name their prompts
    for attribute in traceql.attributes(expr):
        scope, _, name = attribute.partition(".")
        if name in optional:
            continue
        holder = "resource" if scope == "resource" else "attributes"
        assert any(name in getattr(s, holder) for s in stack.spans), attribute
    over = [s for s in stack.spans if s.attributes["gen_ai.usage.cost"] > 0.01]
    assert {s.attributes["gen_ai.request.model"] for s in over} == {"claude-sonnet-4-5"}
    assert all(s.types["gen_ai.usage.cost"] == "double_value" for s in stack.spans)


# -- variables ----------------------------------------------------------------------------------------

_LABEL_VALUES = re.compile(r"^label_values\((?:(?P<match>.+),\s*)?(?P<label>\w+)\)$")


def test_every_variable_query_lists_the_expected_values(stack: Stack) -> None:
    expected = {
        ("llmtrace-cost-overview", "service"): {SERVICE},
        ("llmtrace-cost-overview", "environment"): {"test"},
        ("llmtrace-cost-overview", "model"): MODELS,
        ("llmtrace-expensive-calls", "model"): MODELS,
        ("llmtrace-cost-audit", "environment"): {"test", "staging", "edge"},
        ("llmtrace-cost-audit", "model"): {f["model"] for f in stack.audit_report["findings"]}
        | {"m-1"},
    }
    seen = 0
    for uid, dashboard in dash.all_dashboards().items():
        for query in dash.variable_queries(dashboard):
            match = _LABEL_VALUES.match(dash.substitute(query.text, _values(stack, ALL)))
            assert match, f"{query.where}: not label_values(metric, label): {query.text!r}"
            params = {"match[]": match["match"]} if match["match"] else {}
            try:
                values = set(stack.prometheus.api(f"label/{match['label']}/values", params))
            except PromQLError as exc:
                raise AssertionError(f"{query.where}: {exc}") from None
            assert values, f"{query.where}: no values"
            if (uid, query.ref) in expected:
                assert values == expected[(uid, query.ref)], query.where
                seen += 1
    assert seen == len(expected)


# -- --push-metrics without a backend -------------------------------------------------------------


def _small_store(path: Path) -> Path:
    """A store with two calls from an hour ago (an audit of an empty store is an error)."""
    import polars as pl

    from llmtrace.store import Store

    at = datetime.now(UTC) - timedelta(hours=1)
    Store(path).append(
        pl.DataFrame(
            {"trace_id": ["t1", "t2"], "span_id": ["s", "s"], "start_time": [at, at]},
            schema_overrides={"start_time": pl.Datetime("us", "UTC")},
        )
    )
    return path


def test_push_metrics_to_nowhere_fails_with_exit_2(tmp_path: Path) -> None:
    """An unreachable Pushgateway: the report is still written, the run exits 2 and says why."""
    store = _small_store(tmp_path / "small-store")
    port = servers.free_port()
    result = CliRunner().invoke(
        audit,
        ["--store", str(store), "--format", "json", "--push-metrics",
         f"pushgateway=http://127.0.0.1:{port}"],
        env=CLEAN_ENV,
    )  # fmt: skip
    assert result.exit_code == 2, result.output
    assert json.loads(result.stdout)["findings"] == []
    assert f"cannot reach the Pushgateway at http://127.0.0.1:{port}" in result.stderr


def test_push_metrics_over_otlp_to_nowhere_fails_with_exit_2(tmp_path: Path) -> None:
    port = servers.free_port()
    result = CliRunner().invoke(
        audit,
        [
            "--store",
            str(_small_store(tmp_path / "s")),
            "--push-metrics",
            f"otlp=http://127.0.0.1:{port}",
        ],
        env={**CLEAN_ENV, "OTEL_EXPORTER_OTLP_TIMEOUT": "1"},
    )
    assert result.exit_code == 2, result.output
    assert f"OTLP export to http://127.0.0.1:{port} failed" in result.stderr


@pytest.mark.parametrize(
    "target, message",
    [
        ("http://localhost:9091", "expected otlp | otlp=URL | pushgateway=URL"),
        ("pushgateway", "pushgateway= needs a URL"),
        ("pushgateway=localhost:9091", "must start with http:// or https://"),
    ],
)
def test_bad_push_target_is_a_usage_error(tmp_path: Path, target: str, message: str) -> None:
    result = CliRunner().invoke(
        audit, ["--store", str(tmp_path / "s"), "--push-metrics", target], env=CLEAN_ENV
    )
    assert result.exit_code == 2
    assert message in result.output
    assert not (tmp_path / "s").exists()  # failed before auditing


def test_pushgateway_put_replaces_the_group(tmp_path: Path) -> None:
    """Tonight's push replaces last night's: a finding that is gone disappears."""
    reason = _missing_reason()
    if reason:
        pytest.skip(reason)
    from opentelemetry.sdk.resources import Resource

    resource = Resource({"service.name": "llmtrace-audit", "deployment.environment.name": "p/q"})
    with Pushgateway(tmp_path) as gateway:
        first = AuditResult(EDGE_FINDINGS, ["LT901", "LT902"], 7, _window())
        am.push_audit_metrics(first, f"pushgateway={gateway.url}", resource=resource)
        assert 'rule="LT902"' in servers.http_get(f"{gateway.url}/metrics").decode()
        second = AuditResult(EDGE_FINDINGS[:1], ["LT901"], 7, _window())
        am.push_audit_metrics(second, f"pushgateway={gateway.url}", resource=resource)
        text = servers.http_get(f"{gateway.url}/metrics").decode()
        assert 'rule="LT902"' not in text and 'rule="LT901"' in text
        assert 'deployment_environment_name="p/q"' in text  # '/' survives (base64 key)
