"""Render docs/cost-overview.png: the LLM cost overview dashboard on demo data, without Grafana.

No Grafana server can run here, so this draws what the dashboard would show from the same
queries' results:

1. ``llmtrace.demo.generate`` makes a week of priced calls; Polars turns them into the metrics
   the live side would have exported every ``STEP`` (cumulative, as ``CostMetrics.record`` does
   per call: cost histogram, cost components, token usage by type; and as ``record_action`` does
   per action instance, one demo trace: the sum of its calls' costs, unless one is unpriced),
   named as the Collector names them (``gen_ai_usage_cost_USD_sum``...).
2. ``promtool tsdb create-blocks-from openmetrics`` backfills a Prometheus TSDB with them, and
   Debian's ``prometheus`` serves it on a free loopback port.
3. Every query of ``dashboards/llm-cost-overview.json`` runs through the HTTP API with *All*
   selected, ``$__range`` = the week and ``$__rate_interval`` = ``RATE``.
4. matplotlib draws each panel where its ``gridPos`` puts it, in Grafana's dark theme.

    python docs/render_cost_overview.py            # -> docs/cost-overview.png

Needs ``apt-get install prometheus`` and matplotlib (a docs-only dependency).
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))  # the Prometheus helpers the dashboard tests use

from prom import dashboards as dash  # noqa: E402
from prom.bridge import go_float, metric_name  # noqa: E402
from prom.servers import Prometheus, create_blocks  # noqa: E402

from llmtrace.otel.metrics import COMPONENTS, COST_BUCKETS, TOKEN_TYPES  # noqa: E402

DAYS = 7
STEP = timedelta(minutes=15)  # how often the demo "apps" export their metrics
RATE = "2h"  # $__rate_interval: smooth enough for a week on one screen
OUTPUT = REPO / "docs" / "cost-overview.png"
# Prometheus label -> call-record field (model: the model asked for, as the live side labels it)
LABELS = {
    "gen_ai_request_model": "request_model",
    "gen_ai_provider_name": "provider",
    "gen_ai_operation_name": "operation",
    "service_name": "service",
    "llmtrace_prompt": "prompt",
    "llmtrace_action": "action",
    "deployment_environment_name": "environment",
}
# the action-cost histogram's labels (an action instance has no one model or prompt)
ACTION_LABELS = ("service_name", "llmtrace_action", "deployment_environment_name")
COST = metric_name("gen_ai.usage.cost", "USD")
ACTION_COST = metric_name("llmtrace.action.cost", "USD")
PARTS = metric_name("llmtrace.cost", "USD", counter=True)
TOKENS = metric_name("gen_ai.client.token.usage", "{token}")


# -- 1. demo calls -> cumulative metric samples ------------------------------------------------------


def demo_calls(end: datetime) -> pl.DataFrame:
    from llmtrace import demo, pricing

    calls = demo.generate(days=DAYS + 1, end=end)  # a day more: every series exists at the start
    return pricing.price_calls(calls, pricing.PriceBook())


def _histogram(metric: str, cost: pl.Expr) -> list[tuple[str, str, dict[str, str], pl.Expr]]:
    """Bucket, sum and count increments of a USD histogram with the live side's buckets."""
    specs = []
    for i, bound in enumerate(COST_BUCKETS):
        le = go_float(bound)
        specs.append((f"b{i}", f"{metric}_bucket", {"le": le}, (cost <= bound).sum()))
    specs.append(("binf", f"{metric}_bucket", {"le": "+Inf"}, cost.is_not_null().sum()))
    specs.append(("csum", f"{metric}_sum", {}, cost.sum()))
    specs.append(("ccount", f"{metric}_count", {}, cost.is_not_null().sum()))
    return specs


def _increments() -> list[tuple[str, str, dict[str, str], pl.Expr]]:
    """(column, metric, extra labels, per-interval aggregate) for every per-call series kind."""
    specs = _histogram(COST, pl.col("total_cost"))
    for field, component in COMPONENTS.items():
        specs.append(
            (f"p_{component}", PARTS, {"llmtrace_cost_component": component}, pl.col(field).sum())
        )
    for token_type, field in TOKEN_TYPES.items():
        used = pl.col(field).fill_null(0) > 0
        labels = {"gen_ai_token_type": token_type}
        specs.append(
            (f"ts_{token_type}", f"{TOKENS}_sum", labels, pl.col(field).filter(used).sum())
        )
        specs.append((f"tc_{token_type}", f"{TOKENS}_count", labels, used.sum()))
    return specs


def _escaped(column: str) -> pl.Expr:
    return (
        pl.col(column)
        .str.replace_all("\\", "\\\\", literal=True)
        .str.replace_all('"', '\\"', literal=True)
        .str.replace_all("\n", "\\n", literal=True)
    )


def _exported_at(column: str) -> pl.Expr:
    """The export after ``column``'s time: cumulative values move once per ``STEP``."""
    return pl.col(column).dt.truncate(f"{int(STEP.total_seconds())}s") + STEP


def actions(calls: pl.DataFrame) -> pl.DataFrame:
    """One row per action instance (a demo trace): its labels, end and cost (null if any call
    is unpriced, which the live side does not record)."""
    return (
        calls.group_by("trace_id")
        .agg(
            pl.col("service").first().fill_null("").alias("service_name"),
            pl.col("action").first().fill_null("").alias("llmtrace_action"),
            pl.col("environment").first().fill_null("").alias("deployment_environment_name"),
            pl.col("start_time").max().alias("at"),
            pl.when(pl.col("total_cost").null_count() == 0)
            .then(pl.col("total_cost").sum())
            .alias("action_cost"),
        )
        .filter(pl.col("action_cost").is_not_null())
    )


def _cumulative(
    frame: pl.DataFrame, keys: list[str], specs: list[Any], end: datetime
) -> pl.DataFrame:
    """Long frame of (metric, labels text, time, cumulative value) for ``specs`` grouped by
    ``keys`` and the export time ``t``, one row per sample on the ``STEP`` grid."""
    per_step = frame.group_by([*keys, "t"]).agg([expr.alias(col) for col, _, _, expr in specs])
    first = per_step.group_by(keys).agg(pl.col("t").min().alias("first"))
    grid = pl.DataFrame(
        {"t": pl.datetime_range(frame["t"].min(), end, STEP, time_unit="us", eager=True)}
    ).with_columns(pl.col("t").dt.replace_time_zone("UTC"))
    full = (
        first.join(grid, how="cross")
        .filter(pl.col("t") >= pl.col("first"))
        .join(per_step, on=[*keys, "t"], how="left")
        .sort([*keys, "t"])
        .with_columns([pl.col(c).fill_null(0).cum_sum().over(keys) for c, _, _, _ in specs])
    )
    rows = []
    for column, metric, extra, _ in specs:
        labels = pl.concat_str(
            [pl.concat_str([pl.lit(f'{k}="'), _escaped(k), pl.lit('"')]) for k in keys]
            + [pl.lit(f'{k}="{v}"') for k, v in extra.items()]
            + [pl.concat_str([pl.lit('job="'), pl.col("service_name"), pl.lit('"')])],
            separator=",",
        )
        rows.append(
            full.select(
                pl.lit(metric).alias("metric"),
                labels.alias("labels"),
                pl.col("t").dt.epoch("s").alias("ts"),
                pl.col(column).cast(pl.Float64).alias("value"),
            )
        )
    return pl.concat(rows)


def samples(calls: pl.DataFrame, end: datetime) -> pl.DataFrame:
    """Long frame of (metric, labels text, time, cumulative value), one row per sample."""
    per_call = calls.select(
        *[pl.col(field).fill_null("").alias(label) for label, field in LABELS.items()],
        _exported_at("start_time").alias("t"),  # exported after the call
        "total_cost",
        *COMPONENTS,
        *TOKEN_TYPES.values(),
    ).filter(pl.col("t") <= end)
    per_action = (
        actions(calls)
        .with_columns(_exported_at("at").alias("t"))  # exported after the action's last call
        .filter(pl.col("t") <= end)
    )
    out = pl.concat(
        [
            _cumulative(per_call, list(LABELS), _increments(), end),
            _cumulative(
                per_action, list(ACTION_LABELS), _histogram(ACTION_COST, pl.col("action_cost")), end
            ),
        ]
    )
    # a series exists from its first non-zero value on, as the SDK creates it on first use
    started = pl.col("value").gt(0).cum_sum().over(["metric", "labels"]) > 0
    return out.sort(["metric", "labels", "ts"]).filter(started)


def write_openmetrics(frame: pl.DataFrame, path: Path) -> int:
    """OpenMetrics text for promtool; every family typed gauge (the TSDB stores no type)."""
    lines = frame.select(
        "metric",
        pl.concat_str(
            [
                pl.col("metric"),
                pl.lit("{"),
                pl.col("labels"),
                pl.lit("} "),
                pl.col("value").cast(pl.String),
                pl.lit(" "),
                pl.col("ts").cast(pl.String),
            ]
        ).alias("line"),
    )
    with path.open("w", encoding="utf-8") as out:
        for (metric,), group in lines.group_by("metric", maintain_order=True):
            out.write(f"# TYPE {metric} gauge\n")
            out.write("\n".join(group["line"].to_list()))
            out.write("\n")
        out.write("# EOF\n")
    return frame.height


# -- 3. the dashboard's queries ------------------------------------------------------------------------


def query_panels(prometheus: Prometheus, end: float) -> list[tuple[dict[str, Any], list[Any]]]:
    """Each panel of the overview with the results of its queries (None for rows)."""
    dashboard = dash.load(dash.DASHBOARDS / "llm-cost-overview.json")
    values = {
        "__rate_interval": RATE,
        "__range": f"{DAYS}d",
        "service": ".*",
        "environment": ".*",
        "model": ".*",
    }
    start = end - DAYS * 86400
    out = []
    for panel in dash.panels(dashboard):
        results = []
        for target in panel.get("targets", []):
            expr = dash.substitute(target["expr"], values)
            if target.get("instant"):
                results.append((target, prometheus.query(expr, end)))
            else:
                results.append((target, prometheus.query_range(expr, start, end, 1800)))
        out.append((panel, results))
    return out


# -- 4. drawing ------------------------------------------------------------------------------------------

BACKGROUND, PANEL, BORDER, TEXT, MUTED = "#111217", "#181b1f", "#2c3235", "#ccccdc", "#8e8e9e"
PALETTE = ["#73bf69", "#f2cc0c", "#8ab8ff", "#ff780a", "#f2495c", "#5794f2", "#b877d9",
           "#705da0", "#37872d", "#fade2a", "#447ebc", "#c15c17", "#890f02", "#0a437c",
           "#6d1f62", "#584477"]  # fmt: skip
ROW_UNIT = 0.3  # inches per gridPos height unit


def fmt(value: float, unit: str, decimals: int | None = None) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    if unit == "currencyUSD":
        places = 2 if decimals is None else decimals
        if abs(value) >= 1000:
            return f"${value:,.0f}"
        return f"${value:,.{places}f}"
    if unit == "percentunit":
        return f"{value * 100:.{1 if decimals is None else decimals}f}%"
    if abs(value) >= 1e6:
        return f"{value / 1e6:.1f}M"
    if abs(value) >= 1e3:
        return f"{value / 1e3:.1f}K"
    return f"{value:,.{0 if decimals is None else decimals}f}"


def legend_name(template: str, labels: dict[str, str]) -> str:
    name = template
    for key, value in labels.items():
        name = name.replace("{{" + key + "}}", value)
    return name if name and name != "__auto" else ",".join(labels.values()) or "value"


def draw_stat(ax: Any, panel: dict[str, Any], results: list[Any]) -> None:
    defaults = panel["fieldConfig"]["defaults"]
    value = float(results[0][1][0]["value"][1]) if results and results[0][1] else float("nan")
    ax.text(0.5, 0.42, fmt(value, defaults.get("unit", ""), defaults.get("decimals")),
            ha="center", va="center", fontsize=22, color="#5794f2", weight="bold",
            transform=ax.transAxes)  # fmt: skip


def draw_timeseries(ax: Any, panel: dict[str, Any], results: list[Any]) -> None:
    defaults = panel["fieldConfig"]["defaults"]
    unit = defaults.get("unit", "")
    stacked = defaults.get("custom", {}).get("stacking", {}).get("mode") == "normal"
    series = []
    for target, result in results:
        for item in result:
            points = [(datetime.fromtimestamp(t, UTC), float(v)) for t, v in item["values"]]
            name = legend_name(target.get("legendFormat", ""), item["metric"])
            series.append((name, points))
    series.sort(key=lambda s: -sum(v for _, v in s[1] if math.isfinite(v)))
    shown = series[:8]
    ax.set_facecolor(PANEL)
    if stacked and shown:
        times = [t for t, _ in shown[0][1]]
        stacks = [[v if math.isfinite(v) else 0 for _, v in s[1]] for s in shown]
        if all(len(s) == len(times) for s in stacks):
            ax.stackplot(times, stacks, colors=PALETTE[: len(shown)], alpha=0.55, linewidth=0.6)
        else:
            stacked = False
    if not stacked:
        for i, (_, points) in enumerate(shown):
            ax.plot([t for t, _ in points], [v for _, v in points], color=PALETTE[i % 16], lw=1)
    ax.legend([n[:30] for n, _ in shown], loc="upper left", bbox_to_anchor=(1.01, 1.0),
              fontsize=6, frameon=False, labelcolor=TEXT)  # fmt: skip
    ax.tick_params(colors=MUTED, labelsize=6)
    ax.yaxis.set_major_formatter(lambda v, _: fmt(v, unit, 2 if unit == "currencyUSD" else 0))
    import matplotlib.dates as mdates

    ax.xaxis.set_major_formatter(mdates.DateFormatter("%a %H:%M"))
    ax.grid(color=BORDER, lw=0.4)
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_ylim(bottom=0)


def draw_table(ax: Any, panel: dict[str, Any], results: list[Any]) -> None:
    rename = {}
    for step in panel.get("transformations", []):
        if step["id"] == "organize":
            rename = step["options"].get("renameByName", {})
    rows: dict[tuple[str, ...], dict[str, float]] = {}
    columns: list[str] = []
    key_names: list[str] = []
    for target, result in results:
        column = rename.get(f"Value #{target['refId']}", rename.get("Value", "Value"))
        columns.append(column)
        for item in result:
            labels = item["metric"]
            key_names = sorted(labels)
            key = tuple(labels[k] for k in key_names)
            rows.setdefault(key, {})[column] = float(item["value"][1])
    header = [rename.get(k, k) for k in key_names] + columns
    sort_column = columns[0]
    ordered = sorted(rows.items(), key=lambda kv: -kv[1].get(sort_column, 0))[:8]
    percentile = {c: c.startswith(("p50 ", "p95 ")) for c in columns}
    unit_of = {c: "currencyUSD" if c == "Spend" or percentile[c] else "short" for c in columns}
    cells = [
        [*(v[:28] for v in key), *(fmt(vals.get(c, float("nan")), unit_of[c],
                                       4 if percentile[c] else None) for c in columns)]
        for key, vals in ordered
    ]  # fmt: skip
    table = ax.table(cellText=cells, colLabels=header, loc="upper center", cellLoc="left")
    table.auto_set_font_size(False)
    table.set_fontsize(6.5)
    table.scale(1, 1.25)
    for (row, _), cell in table.get_celld().items():
        cell.set_edgecolor(BORDER)
        cell.set_facecolor(PANEL if row else "#22252b")
        cell.get_text().set_color(TEXT if row else MUTED)


def render(panels: list[tuple[dict[str, Any], list[Any]]], path: Path, generated: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bottom = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p, _ in panels)
    width, header = 16.0, 0.6
    height = bottom * ROW_UNIT + header
    fig = plt.figure(figsize=(width, height), dpi=110, facecolor=BACKGROUND)
    fig.text(0.008, 1 - 0.25 / height, "LLM cost overview", color=TEXT, fontsize=14,
             weight="bold", va="top")  # fmt: skip
    fig.text(0.992, 1 - 0.25 / height, generated, color=MUTED, fontsize=8, va="top", ha="right")
    for panel, results in panels:
        grid = panel["gridPos"]
        left = grid["x"] / 24 + 0.003
        w = grid["w"] / 24 - 0.006
        top = 1 - (header + grid["y"] * ROW_UNIT) / height
        h = grid["h"] * ROW_UNIT / height
        if panel["type"] == "row":
            fig.text(left, top - h / 2, panel["title"], color=TEXT, fontsize=10, weight="bold",
                     va="center")  # fmt: skip
            continue
        frame = fig.add_axes((left, top - h + 0.004, w, h - 0.008))
        frame.set_facecolor(PANEL)
        frame.set_xticks([])
        frame.set_yticks([])
        for spine in frame.spines.values():
            spine.set_color(BORDER)
        frame.text(0.012, 0.97, panel["title"], color=TEXT, fontsize=8, weight="bold",
                   va="top", transform=frame.transAxes)  # fmt: skip
        if panel["type"] == "stat":
            draw_stat(frame, panel, results)
            continue
        inner = (h - 0.008) * (grid["h"] * ROW_UNIT - 0.3) / (grid["h"] * ROW_UNIT) - 0.012
        if panel["type"] == "timeseries":  # room for the axis labels and the legend on the right
            box = (left + 0.055 * w, top - h + 0.014, w * 0.66, inner - 0.004)
        else:
            box = (left + 0.02 * w, top - h + 0.012, w * 0.96, inner)
        ax = fig.add_axes(box)
        if panel["type"] == "timeseries":
            draw_timeseries(ax, panel, results)
        else:
            ax.axis("off")
            draw_table(ax, panel, results)
    fig.savefig(path, facecolor=BACKGROUND)
    plt.close(fig)
    from PIL import Image  # matplotlib's own dependency

    with Image.open(path) as image:  # a 256-colour palette: a third of the size, same look
        image.convert("RGB").quantize(256, dither=Image.Dither.NONE).save(path, optimize=True)


# -- main ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=OUTPUT)
    args = parser.parse_args()
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    started = time.monotonic()
    calls = demo_calls(end)
    metrics = samples(calls, end)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        count = write_openmetrics(metrics, work / "demo.om")
        print(f"{calls.height:,} calls -> {count:,} samples", file=sys.stderr)
        create_blocks(work / "demo.om", work / "tsdb")
        prometheus = Prometheus(work / "prometheus", tsdb=work / "tsdb", retention="30d")
        with prometheus:
            panels = query_panels(prometheus, end.timestamp())
    generated = f"demo data, {DAYS} days to {end:%Y-%m-%d %H:%M} UTC - all services, models"
    render(panels, args.output, generated)
    print(f"wrote {args.output} in {time.monotonic() - started:.0f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
