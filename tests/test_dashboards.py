"""The shipped dashboards and the Collector stack, checked without Grafana or Docker.

Dashboards load with grafana-foundation-sdk and survive its round trip unchanged (the SDK drops
keys it does not know, so a misspelt or misplaced key shows up); then the rules Grafana's
dashboard linter would apply, and the known bugs of Grafana's GenAI dashboards that must not be
copied (research notes, grafana-stack.md §3): raw cumulative sums without ``rate``/``increase``,
``allValue: "all"`` with ``=~``, a variable matched against the wrong label, a legend naming a
label the query does not keep, hard-coded data-source uids. Every metric name a query selects
must be one llmtrace (or the GenAI instrumentation it builds on) emits, as named after the
Collector's translation. TraceQL queries are syntax-checked. The Collector config uses the
component names of the pinned release, and compose, Prometheus and Grafana provisioning agree.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from prom import dashboards as dash
from prom import servers, traceql
from prom.bridge import metric_name

from llmtrace.otel import audit_metrics as am

REPO = Path(__file__).resolve().parents[1]
COLLECTORS = REPO / "collectors"
DASHBOARDS = dash.all_dashboards()
UIDS = ("llmtrace-cost-overview", "llmtrace-cost-audit", "llmtrace-expensive-calls")
DATASOURCE_VARIABLES = {"prometheus": "prometheus_datasource", "tempo": "tempo_datasource"}
# Which label each filter variable must match, per family of metrics.
LIVE_FILTERS = {
    "service": "service_name",
    "environment": "deployment_environment_name",
    "model": "gen_ai_request_model",
}
AUDIT_FILTERS = {
    "service": "service",
    "environment": "deployment_environment_name",
    "model": "model",
}
MACROS = {"__rate_interval", "__range", "__interval"}
# The foundation SDK warns that its v1 Dashboard model is superseded by dashboardv2; Grafana
# still imports v1 JSON (what the dashboards are), so the warning is noise here.
pytestmark = pytest.mark.filterwarnings("ignore:Prefer using dashboardv2:DeprecationWarning")


def all_queries() -> list[dash.Query]:
    return [q for d in DASHBOARDS.values() for q in dash.queries(d)]


def prom_queries() -> list[dash.Query]:
    found = [q for q in all_queries() if q.kind == "prometheus"]
    found += [q for d in DASHBOARDS.values() for q in dash.variable_queries(d)]
    return found


def test_the_three_dashboards_ship() -> None:
    assert sorted(DASHBOARDS) == sorted(UIDS)
    for uid, dashboard in DASHBOARDS.items():
        assert 8 <= len(uid) <= 40 and re.fullmatch(r"[a-z0-9-]+", uid)
        assert dashboard["title"] and dashboard["description"]
        assert "llmtrace" in dashboard["tags"]
        assert "id" not in dashboard or dashboard["id"] is None  # importable anywhere


# -- grafana-foundation-sdk ------------------------------------------------------------------------


def _sdk() -> None:
    """grafana-foundation-sdk 0.0.21 (a dev dependency; plain ``pip install`` picks the old
    epoch-versioned 10.1 line instead), with its panel and query kinds registered."""
    from grafana_foundation_sdk.cog import plugins

    plugins.register_default_plugins()


def _lost(original: Any, echoed: Any, path: str = "") -> list[str]:
    """Keys of ``original`` that the round trip dropped or changed (additions are defaults)."""
    problems: list[str] = []
    if isinstance(original, dict) and isinstance(echoed, dict):
        for key, value in original.items():
            if key not in echoed:
                problems.append(f"{path}/{key} dropped")
            else:
                problems += _lost(value, echoed[key], f"{path}/{key}")
    elif isinstance(original, list) and isinstance(echoed, list):
        if len(original) != len(echoed):
            problems.append(f"{path} has {len(echoed)} items, not {len(original)}")
        for i, (a, b) in enumerate(zip(original, echoed, strict=False)):
            problems += _lost(a, b, f"{path}[{i}]")
    elif original != echoed:
        problems.append(f"{path} {original!r} became {echoed!r}")
    return problems


@pytest.mark.parametrize("uid", UIDS)
def test_dashboard_loads_with_the_foundation_sdk_unchanged(uid: str) -> None:
    _sdk()
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models import prometheus, tempo
    from grafana_foundation_sdk.models.dashboard import Dashboard

    original = DASHBOARDS[uid]
    model = Dashboard.from_json(original)
    echoed = json.loads(json.dumps(model, cls=JSONEncoder))
    assert _lost(original, echoed) == []
    kinds = {"prometheus": prometheus.Dataquery, "tempo": tempo.Dataquery}
    for panel in model.panels or []:
        for target in getattr(panel, "targets", None) or []:
            assert isinstance(target, tuple(kinds.values())), (panel.title, type(target))


def test_the_round_trip_check_catches_a_misplaced_key() -> None:
    """The check above can fail: a key in the wrong place is dropped by the SDK."""
    _sdk()
    from grafana_foundation_sdk.cog.encoder import JSONEncoder
    from grafana_foundation_sdk.models.dashboard import Dashboard

    broken = json.loads(json.dumps(DASHBOARDS["llmtrace-cost-overview"]))
    broken["panels"][0]["fieldConfig"]["unit"] = "currencyUSD"  # belongs in defaults
    echoed = json.loads(json.dumps(Dashboard.from_json(broken), cls=JSONEncoder))
    assert _lost(broken, echoed) == ["/panels[0]/fieldConfig/unit dropped"]


# -- layout and data sources ------------------------------------------------------------------------


@pytest.mark.parametrize("uid", UIDS)
def test_panels_have_unique_ids_and_fit_the_grid(uid: str) -> None:
    panels = list(dash.panels(DASHBOARDS[uid]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), f"duplicate panel ids {ids}"
    cells: dict[tuple[int, int], int] = {}
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["w"] > 0 and grid["h"] > 0 and grid["x"] >= 0 and grid["y"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps panel {cells[(x, y)]}"
                cells[(x, y)] = panel["id"]


def _datasources(node: Any, path: str = "") -> list[tuple[str, Any]]:
    """Every ``datasource`` value anywhere in the JSON, with where it is."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "datasource":
                found.append((f"{path}/{key}", value))
            found += _datasources(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            found += _datasources(value, f"{path}[{i}]")
    return found


@pytest.mark.parametrize("uid", UIDS)
def test_data_sources_are_bound_to_variables(uid: str) -> None:
    dashboard = DASHBOARDS[uid]
    variables = dash.variables(dashboard)
    for where, source in _datasources(dashboard):
        if "/annotations/" in where:
            assert source == {"type": "grafana", "uid": "-- Grafana --"}, where
            continue
        assert isinstance(source, dict), f"{where}: {source!r}"
        name = DATASOURCE_VARIABLES.get(source.get("type"))
        assert name, f"{where}: unexpected data source type {source}"
        assert source["uid"] == f"${{{name}}}", f"{where}: hard-coded uid {source['uid']!r}"
        assert variables[name]["type"] == "datasource"
        assert variables[name]["query"] == source["type"]
    for panel in dash.panels(dashboard):
        if panel["type"] != "row":
            assert panel.get("datasource"), f"{panel['title']}: no panel data source"
            for target in panel["targets"]:
                assert target["datasource"] == panel["datasource"], panel["title"]


@pytest.mark.parametrize("uid", UIDS)
def test_panels_are_documented_and_have_units(uid: str) -> None:
    for panel in dash.panels(DASHBOARDS[uid]):
        if panel["type"] == "row":
            continue
        assert panel["title"] and len(panel.get("description", "")) > 20, panel["title"]
        if panel["type"] in ("timeseries", "stat"):
            assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]


# -- variables --------------------------------------------------------------------------------------


@pytest.mark.parametrize("uid", UIDS)
def test_variables_match_everything_with_all_and_are_defined(uid: str) -> None:
    dashboard = DASHBOARDS[uid]
    variables = dash.variables(dashboard)
    assert {"service", "environment", "model"} <= set(variables)
    for var in variables.values():
        if var.get("includeAll"):
            assert var["allValue"] == ".*", f"${var['name']}: 'All' must be the regex .*"
        if var["type"] == "query":
            assert var["datasource"]["uid"] == "${prometheus_datasource}"
    known = set(variables) | MACROS
    for query in all_queries() + dash.variable_queries(dashboard):
        if query.dashboard == uid:
            dash.substitute(query.text, dict.fromkeys(known, "x"))  # KeyError: undefined
    for var in variables.values():
        if var["type"] == "custom":
            values = [o["value"] for o in var["options"]]
            assert var["current"]["value"] in values
            assert values == var["query"].split(",")


def _filters(query: dash.Query) -> dict[str, str]:
    metrics = dash.metric_names(query.text)
    return AUDIT_FILTERS if any(m.startswith("llmtrace_audit_") for m in metrics) else LIVE_FILTERS


def test_every_variable_filters_its_own_label_with_a_regex() -> None:
    """``service_name=~"$environment"`` and ``=`` against a multi-value variable are bugs."""
    for query in prom_queries():
        filters = _filters(query)
        for label, op, value in dash.matchers(query.text):
            names = re.findall(r"\$\{?(\w+)", value)
            for name in names:
                if name in filters:
                    assert op == "=~", f"{query.where}: {label}{op}{value!r} needs =~"
                    assert value == f"${name}", f"{query.where}: {value!r}"
                    assert filters[name] == label, f"{query.where}: ${name} filters {label}"


# An action instance can call several models: its cost histogram has no model label. A query of
# it applies the model selection by keeping the actions that called a selected model.
ACTION_METRICS = {f"llmtrace_action_cost_USD_{part}" for part in ("bucket", "sum", "count")}
_BY_MODEL = re.compile(
    r"\band on \(llmtrace_action\) sum by \(llmtrace_action\) \((rate|increase)\("
    r"gen_ai_usage_cost_USD_count\{[^}]*gen_ai_request_model=~\"\$model\"[^}]*\}"
)


def test_every_panel_query_filters_by_every_selection() -> None:
    """A panel that ignores the service, environment or model selection shows wrong numbers."""
    for query in prom_queries():
        if query.panel_type == "variable":
            continue
        filters = _filters(query)
        wanted = set(filters.values())
        if query.dashboard == "llmtrace-cost-audit" and not any(
            m == "llmtrace_audit_savings_USD_per_month" for m in dash.metric_names(query.text)
        ):
            wanted = {filters["environment"]}  # run totals carry no service or model
        for metric, block in re.findall(r"(\w*)\{([^}]*)\}", query.text):
            labels = {label for label, _, _ in dash.matchers("{" + block + "}")}
            need = wanted
            if metric in ACTION_METRICS:
                need = wanted - {filters["model"]}
                assert _BY_MODEL.search(query.text), f"{query.where}: no model selection"
            assert need <= labels, f"{query.where}: selector {{{block}}} lacks {need - labels}"


def test_the_action_model_filter_check_can_fail() -> None:
    query = next(q for q in prom_queries() if "llmtrace_action_cost_USD_bucket" in q.text)
    assert _BY_MODEL.search(query.text)
    assert not _BY_MODEL.search(query.text.split(" and on ")[0])
    assert not _BY_MODEL.search(query.text.replace('gen_ai_request_model=~"$model"', ""))


# -- PromQL ------------------------------------------------------------------------------------------


def known_metric_names() -> set[str]:
    """Every Prometheus name llmtrace's instruments get through the Collector, built for real.

    The live instruments (``CostMetrics``) record one call with every field set, the audit
    gauges one run; what the SDK collects is named with the Collector's rules.
    """
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
    from opentelemetry.sdk.metrics.export import Histogram as HistogramData
    from opentelemetry.sdk.metrics.export import Sum as SumData

    from llmtrace.otel.metrics import COMPONENTS, TOKEN_TYPES, CostMetrics
    from llmtrace.otel.settings import LiveSettings
    from llmtrace.rules.base import Finding
    from llmtrace.rules.engine import AuditResult, AuditWindow

    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    metrics = CostMetrics(provider, LiveSettings())
    call: dict[str, Any] = {"request_model": "m", "provider": "p", "total_cost": 1.0}
    call.update(dict.fromkeys(COMPONENTS, 0.2))
    call.update(dict.fromkeys(TOKEN_TYPES.values(), 10))
    metrics.record(call, scope="unknown")
    metrics.record_action({"service": "s", "action": "a", "environment": "e"}, 1.0)
    data = [reader.get_metrics_data()]
    provider.shutdown()
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    finding = Finding("LT101", "n", "low", "p", "m", "s", now, now, 1.0, "message", "fix")
    run = AuditResult([finding], ["LT101"], 1, AuditWindow(now, now, now, now))
    data.append(am.metrics_data(am.audit_samples(run), am.audit_resource({})))
    names: set[str] = set()
    for metrics_data in data:
        for rm in metrics_data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if isinstance(metric.data, HistogramData):
                        base = metric_name(metric.name, metric.unit)
                        names |= {f"{base}_bucket", f"{base}_sum", f"{base}_count"}
                    else:
                        counter = (
                            isinstance(metric.data, SumData)
                            and metric.data.is_monotonic
                            and metric.data.aggregation_temporality
                            == AggregationTemporality.CUMULATIVE
                        )
                        names.add(metric_name(metric.name, metric.unit, counter=counter))
    return names


def test_known_names_are_the_collector_names_of_llmtrace_instruments() -> None:
    names = known_metric_names()
    assert {
        "gen_ai_usage_cost_USD_bucket",
        "gen_ai_usage_cost_USD_sum",
        "gen_ai_usage_cost_USD_count",  # Grafana's GenAI dashboards query these too
        "llmtrace_cost_USD_total",
        "gen_ai_client_token_usage_sum",
        "llmtrace_errors_total",
        "llmtrace_action_cost_USD_bucket",
    } <= names
    assert {m.prometheus for m in am.AUDIT_METRICS} <= names
    for metric in am.AUDIT_METRICS:  # the Pushgateway path uses the same names
        assert metric.prometheus == metric_name(metric.name, metric.unit)


def test_every_metric_a_query_selects_is_known_to_llmtrace() -> None:
    known = known_metric_names()
    used: set[str] = set()
    for query in prom_queries():
        names = dash.metric_names(query.text)
        assert names, f"{query.where}: selects no metric: {query.text!r}"
        assert names <= known, f"{query.where}: unknown metric(s) {names - known}"
        used |= names
    assert "gen_ai_usage_cost_USD_sum" in used and "llmtrace_audit_savings_USD_per_month" in used


def test_metric_name_extraction() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, llmtrace_action) (rate(gen_ai_usage_cost_USD_bucket"
        '{service_name=~"$service", le="0.01"}[$__rate_interval]))) / on (job) group_left '
        "sum(llmtrace_cost_USD_total offset 1h) * 3600 + time() - vector(1)"
    )
    assert dash.metric_names(expr) == {"gen_ai_usage_cost_USD_bucket", "llmtrace_cost_USD_total"}


_COUNTER_SERIES = re.compile(r"\b(\w+(?:_total|_sum|_count|_bucket))\s*\{[^}]*\}\s*(\[[^\]]*\])?")


def test_cumulative_series_are_only_read_through_rate_or_increase() -> None:
    """``sum(gen_ai_usage_cost_USD_sum{...})`` ignores the time range and breaks at restarts."""
    for query in prom_queries():
        if query.panel_type == "variable":
            continue
        for match in _COUNTER_SERIES.finditer(query.text):
            window = match.group(2)
            assert window in ("[$__rate_interval]", "[$__range]"), (
                f"{query.where}: {match.group(1)} read without a $__rate_interval/$__range window"
            )
            before = query.text[: match.start()].rstrip()
            assert re.search(r"\b(rate|increase)\($", before), (
                f"{query.where}: {match.group(1)} must be inside rate() or increase()"
            )


def test_time_series_use_rate_interval_and_stats_use_range() -> None:
    for query in prom_queries():
        windows = set(re.findall(r"\[([^\]]+)\]", query.text))
        if query.panel_type == "variable":
            assert not windows
        elif query.dashboard == "llmtrace-cost-audit":
            assert windows == {"$lookback"}, query.where  # one sample per run: last_over_time
        elif query.instant:
            assert windows == {"$__range"}, query.where
        else:
            assert windows == {"$__rate_interval"}, query.where


def test_legends_name_only_labels_the_query_keeps() -> None:
    """Grafana's GenAI dashboard has ``sum by(model)`` with legend ``{{model}}``: no such label."""
    for query in prom_queries():
        for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", query.legend):
            assert label in dash.grouping_labels(query.text), f"{query.where}: {{{{{label}}}}}"


def test_histogram_quantiles_keep_le() -> None:
    for query in prom_queries():
        if "histogram_quantile" in query.text:
            assert "le" in dash.grouping_labels(query.text), query.where


def test_the_bucket_thresholds_are_bucket_bounds() -> None:
    """``le="$min_cost"`` reads a bucket: every threshold offered must be one of its bounds."""
    from llmtrace.otel.metrics import COST_BUCKETS

    var = dash.variables(DASHBOARDS["llmtrace-expensive-calls"])["min_cost"]
    for option in var["options"]:
        assert float(option["value"]) in COST_BUCKETS
        assert option["value"] == repr(float(option["value"]))  # same text in Go and Python


# -- TraceQL -----------------------------------------------------------------------------------------


def tempo_queries() -> list[dash.Query]:
    return [q for q in all_queries() if q.kind == "tempo"]


def test_traceql_queries_parse_for_every_threshold() -> None:
    queries = tempo_queries()
    assert queries
    dashboard = DASHBOARDS["llmtrace-expensive-calls"]
    thresholds = [o["value"] for o in dash.variables(dashboard)["min_cost"]["options"]]
    for query in queries:
        for threshold in thresholds:
            values = {"service": ".*", "model": ".*", "environment": ".*", "min_cost": threshold}
            traceql.check(dash.substitute(query.text, values))
        attributes = traceql.attributes(dash.substitute(query.text, values))
        assert "span.gen_ai.usage.cost" in attributes
        for needed in ("span.gen_ai.request.model", "span.llmtrace.cost.reasoning"):
            assert needed in attributes, needed


def test_tempo_targets_are_traceql_span_tables() -> None:
    for panel in dash.panels(DASHBOARDS["llmtrace-expensive-calls"]):
        for target in panel.get("targets", []):
            if target["datasource"]["type"] == "tempo":
                assert panel["type"] == "table"
                assert target["queryType"] == "traceql"
                assert target["tableType"] == "spans"  # each row's Span ID links to its trace
                assert 0 < target["limit"] <= 100


@pytest.mark.parametrize(
    "query",
    [
        'traces{gen_ai.operation.name="embeddings"}',
        "{ span.gen_ai.usage.cost > }",
        "{ span.gen_ai.usage.cost > 1 }",  # int vs float: never matches in Tempo
        "{ span.gen_ai.usage.cost > 0.01 } | select(span.gen_ai.request.model",
        "{ span.gen_ai.usage.cost > 0.01 } | frobnicate()",
    ],
)
def test_traceql_checker_rejects_broken_queries(query: str) -> None:
    with pytest.raises(traceql.TraceQLError):
        traceql.check(query)


@pytest.mark.parametrize(
    "query",
    [
        "{ span.gen_ai.usage.cost > 0.01 }",
        '{ resource.service.name = "a" && span.gen_ai.usage.cost >= 0.5 } | select(span.x)',
        '{ span.gen_ai.operation.name = "chat" } | sum(span.gen_ai.usage.cost) > 1.0',
        "{ span.gen_ai.usage.cost != nil } | sum_over_time(span.gen_ai.usage.cost) by (span.m)",
        "{ status = error && duration > 2s } >> { kind = client }",
    ],
)
def test_traceql_checker_accepts_valid_queries(query: str) -> None:
    traceql.check(query)


# -- collectors/ --------------------------------------------------------------------------------------

# Component type names of the pinned otelcol-contrib release, for the components the config may
# use, and the old names it must not use (deprecated aliases that log warnings, then go away):
# otlp -> otlp_grpc and otlphttp -> otlp_http in core v0.144.0; prometheusremotewrite ->
# prometheus_remote_write in contrib v0.154.0; deltatocumulative -> delta_to_cumulative and
# signaltometrics -> signal_to_metrics in later contrib releases.
PINNED_COLLECTOR = "0.159.0"
COMPONENTS = {
    "receivers": {"otlp", "prometheus"},
    "processors": {"memory_limiter", "transform", "batch", "resource", "attributes", "filter"},
    "exporters": {"otlp_grpc", "otlp_http", "prometheus_remote_write", "debug"},
    "connectors": {"spanmetrics", "sum"},
    "extensions": {"health_check"},
}
RENAMED = {
    "exporters": {"otlp": "otlp_grpc", "otlphttp": "otlp_http",
                  "prometheusremotewrite": "prometheus_remote_write"},
    "processors": {"deltatocumulative": "delta_to_cumulative"},
    "connectors": {"signaltometrics": "signal_to_metrics"},
}  # fmt: skip


def _yaml(name: str) -> Any:
    return yaml.safe_load((COLLECTORS / name).read_text(encoding="utf-8"))


def test_collector_config_uses_the_pinned_releases_component_names() -> None:
    config = _yaml("otelcol.yaml")
    compose = _yaml("compose.yaml")
    image = compose["services"]["otel-collector"]["image"]
    assert image == f"otel/opentelemetry-collector-contrib:{PINNED_COLLECTOR}"
    for kind, components in config.items():
        if kind == "service":
            continue
        for component in components:
            type_ = component.split("/")[0]
            assert type_ not in RENAMED.get(kind, {}), (
                f"{kind}.{component}: renamed to {RENAMED[kind][type_]} in {PINNED_COLLECTOR}"
            )
            assert type_ in COMPONENTS[kind], f"{kind}.{component}: not in {PINNED_COLLECTOR}"
    defined = {kind: set(config.get(kind) or {}) for kind in COMPONENTS}
    used: dict[str, set[str]] = {kind: set() for kind in COMPONENTS}
    for name, pipeline in config["service"]["pipelines"].items():
        assert name.split("/")[0] in ("traces", "metrics", "logs")
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in defined[kind], f"pipeline {name}: {component} undefined"
                used[kind].add(component)
    for kind in ("receivers", "processors", "exporters"):
        assert used[kind] == defined[kind], f"{kind} defined but unused"


def test_collector_sends_traces_to_tempo_and_cumulative_metrics_by_remote_write() -> None:
    config = _yaml("otelcol.yaml")
    pipelines = config["service"]["pipelines"]
    assert pipelines["traces"]["exporters"] == ["otlp_grpc/tempo"]
    assert pipelines["metrics"]["exporters"] == ["prometheus_remote_write"]
    assert config["exporters"]["otlp_grpc/tempo"]["endpoint"] == "tempo:4317"
    remote = config["exporters"]["prometheus_remote_write"]
    assert remote["endpoint"] == "http://prometheus:9090/api/v1/write"
    assert remote.get("add_metric_suffixes", True) is not False  # keeps ..._USD_sum names
    assert "delta_to_cumulative" not in str(config)  # apps export cumulative; nothing to convert
    receivers = config["receivers"]["otlp"]["protocols"]
    assert receivers["http"]["endpoint"].endswith(":4318")
    assert receivers["grpc"]["endpoint"].endswith(":4317")


def test_collector_promotes_the_labels_the_dashboards_filter_on() -> None:
    """The dashboards filter on service_name and deployment_environment_name for every metric."""
    from prom.bridge import PROMOTED, label_name

    statements = _yaml("otelcol.yaml")["processors"]["transform/promote"]["metric_statements"]
    text = " ".join(s for block in statements for s in block["statements"])
    for attribute in PROMOTED:  # the test bridge does the same
        assert f'set(datapoint.attributes["{attribute}"], resource.attributes["{attribute}"])' in (
            text
        )
    assert {label_name(a) for a in PROMOTED} == {
        LIVE_FILTERS["service"],
        LIVE_FILTERS["environment"],
    }
    assert "metrics" in _yaml("otelcol.yaml")["service"]["pipelines"]
    metrics = _yaml("otelcol.yaml")["service"]["pipelines"]["metrics"]
    assert "transform/promote" in metrics["processors"]


def test_compose_stack_is_pinned_and_wired() -> None:
    compose = _yaml("compose.yaml")
    services = compose["services"]
    assert {"otel-collector", "tempo", "prometheus", "pushgateway", "grafana"} <= set(services)
    for name, service in services.items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), f"{name}: pin {image}"
    for service in services.values():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (COLLECTORS / source).exists(), f"{volume}: no such file"
    assert "--web.enable-remote-write-receiver" in services["prometheus"]["command"]
    assert any("4318:4318" in p for p in services["otel-collector"]["ports"])
    grafana_volumes = services["grafana"]["volumes"]
    assert "../dashboards:/etc/grafana/dashboards/llmtrace:ro" in grafana_volumes
    provider = _yaml("grafana/provisioning/dashboards/llmtrace.yaml")["providers"][0]
    assert provider["options"]["path"] == "/etc/grafana/dashboards/llmtrace"
    home = services["grafana"]["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (REPO / "dashboards" / Path(home).name).exists()


def test_grafana_data_sources_match_the_dashboards_variables() -> None:
    sources = _yaml("grafana/provisioning/datasources/llmtrace.yaml")["datasources"]
    by_type = {s["type"]: s for s in sources}
    assert set(by_type) == set(DATASOURCE_VARIABLES)
    assert by_type["prometheus"]["url"] == "http://prometheus:9090"
    assert by_type["tempo"]["url"] == "http://tempo:3200"
    # samples arrive once per export interval: $__rate_interval must cover several of them
    assert by_type["prometheus"]["jsonData"]["timeInterval"] == "60s"
    tempo = _yaml("tempo.yaml")
    assert tempo["server"]["http_listen_port"] == 3200
    assert tempo["distributor"]["receivers"]["otlp"]["protocols"]["grpc"]["endpoint"].endswith(
        ":4317"
    )


def test_stack_prometheus_config_passes_promtool() -> None:
    promtool = servers.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (apt-get install prometheus)")
    done = subprocess.run(
        [promtool, "check", "config", str(COLLECTORS / "prometheus.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    scrape = _yaml("prometheus.yml")["scrape_configs"]
    pushgateway = next(s for s in scrape if s["job_name"] == "pushgateway")
    assert pushgateway["honor_labels"] is True  # keep the pushed job and labels


def test_readme_documents_the_one_command_and_the_push() -> None:
    readme = (COLLECTORS / "README.md").read_text(encoding="utf-8")
    assert "docker compose -f collectors/compose.yaml up -d" in readme
    assert "--push-metrics pushgateway=http://localhost:9091" in readme
    for metric in am.AUDIT_METRICS:
        assert metric.prometheus in readme, metric.prometheus
