"""HTML report: one self-contained page with charts, for CI artifacts and e-mailed audits.

People who receive the nightly audit would rather look than read, so the page shows the savings
as a bar chart and each finding's evidence as a small picture. Everything is inline (one
``<style>``, hand-written SVG, no JavaScript, no fonts or scripts fetched from anywhere), so the
file opens offline, survives mail gateways and prints.

Every value that comes from the data (prompt names, models, services, messages, evidence keys and
values, custom rule names from user YAML) goes through ``esc`` before it is written, in text and
in attributes alike, SVG ``<text>``/``<title>`` included: a prompt called ``<script>`` is shown,
never run. Charts carry their numbers in ``<title>`` and ``aria-label`` for screen readers and
text-only mail clients.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Mapping
from typing import Any

from llmtrace.report.context import KeySpend, ReportContext, share_text
from llmtrace.report.evidence import clean_timestamps, code_spans, evidence_rows, when
from llmtrace.report.text import money, ordered
from llmtrace.rules.base import Finding
from llmtrace.rules.engine import AuditResult
from llmtrace.rules.lt201_replay import GAP_EDGES_S, GAP_LABELS

SEVERITY_COLOUR = {"high": "#c62828", "medium": "#e08a00", "low": "#00838f", "info": "#9e9e9e"}
OTHER_COLOUR = "#5c6bc0"
# Bars in the savings chart: past this the page would be a wall of slivers; the table lists all.
CHART_MAX_FINDINGS = 30
# Upper edge (seconds) of each of LT201's inter-arrival buckets, by label.
GAP_UPPER_S: dict[str, float] = dict(zip(GAP_LABELS, (*GAP_EDGES_S, math.inf), strict=True))

_STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:62rem;padding:0 1rem;color:#212121;line-height:1.45}
h1{margin-bottom:.2rem}h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.8rem 0}th,td{border:1px solid #ddd;padding:.25rem .5rem;
text-align:left;vertical-align:top}td.num,th.num{text-align:right;white-space:nowrap}
tfoot td{font-weight:bold}.evidence th{font-weight:normal;color:#555}
.sev{display:inline-block;padding:0 .4rem;border-radius:.3rem;color:#fff;font-size:.85em}
.sev-high{background:#c62828}.sev-medium{background:#e08a00}.sev-low{background:#00838f}
.sev-info{background:#9e9e9e}.sev-other{background:#5c6bc0}.info{color:#757575}
.total{font-size:1.15em}.errors{color:#c62828}.fix,.message{white-space:pre-line}
figure{margin:1rem 0}figcaption{color:#555;font-size:.9em}svg{max-width:100%;height:auto}
svg text{font-family:inherit;font-size:12px;fill:#212121}
code{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.9em;background:#f3f3f3;
padding:0 .2rem;border-radius:.2rem}.trend{margin:.3rem 0}svg.spark{vertical-align:middle}
footer{margin-top:2.5rem;border-top:1px solid #ddd;color:#555;font-size:.9em}
footer ul{list-style:none;padding:0}
@media print{body{margin:0;max-width:none}section{break-inside:avoid}}
"""


# -- escaping and numbers ------------------------------------------------------------------------


def esc(value: Any) -> str:
    """Text safe in HTML text and in quoted attributes (None shows as ``-``)."""
    return "-" if value is None else html.escape(str(value), quote=True)


def number(value: Any) -> float | None:
    """A finite float, or None when the evidence has no usable number (null, text, inf)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def fmt(value: Any) -> str:
    """Evidence value as readable, *unescaped* text (the caller escapes it)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {fmt(v)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(fmt(v) for v in value)
    return str(value)


def saving_text(finding: Finding) -> str:
    """The monthly saving, in brackets for an inconclusive (info) finding, as text.py does."""
    amount = money(finding.monthly_savings_usd)
    return f"({amount})" if finding.severity == "info" else amount


def severity_class(severity: str) -> str:
    """A CSS class from a fixed list: the severity text itself never reaches an attribute."""
    return f"sev-{severity}" if severity in SEVERITY_COLOUR else "sev-other"


def _short(text: str, limit: int = 44) -> str:
    """Chart labels do not wrap: cut long names (the full name is in the table and title)."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _ticks(top: float, count: int = 4) -> list[float]:
    """Round axis ticks (1, 2 or 5 times a power of ten) from 0 to at least ``top``."""
    if top <= 0:
        return [0.0]
    raw = top / count
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 5, 10) if m * power >= raw)
    return [i * step for i in range(math.ceil(top / step - 1e-9) + 1)]


# -- SVG building blocks -------------------------------------------------------------------------


def svg(width: int, height: int, label: str, body: list[str]) -> str:
    """An inline SVG image whose numbers are also in ``<title>`` and ``aria-label``."""
    return (
        f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="{esc(label)}"><title>{esc(label)}</title>' + "".join(body) + "</svg>"
    )


def text(x: float, y: float, value: str, *, anchor: str = "start", extra: str = "") -> str:
    """An SVG text element; ``value`` is escaped here."""
    return f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="{anchor}"{extra}>{esc(value)}</text>'


def line(x1: float, y1: float, x2: float, y2: float, style: str = 'stroke="#999"') -> str:
    return f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" {style}/>'


def rect(x: float, y: float, w: float, h: float, colour: str, title: str, cls: str = "") -> str:
    """A bar with its own tooltip/title (``title`` escaped here)."""
    klass = f' class="{cls}"' if cls else ""
    return (
        f'<rect{klass} x="{x:.2f}" y="{y:.2f}" width="{w:.2f}" height="{h:.2f}" '
        f'fill="{colour}"><title>{esc(title)}</title></rect>'
    )


def vbars(
    origin: tuple[float, float],
    height: float,
    top: float,
    bars: list[tuple[str, float, str]],
    show: Callable[[float], str],
) -> list[str]:
    """Vertical bars (label, value, colour) on a y axis from 0 to ``top``; ``show`` formats
    values and ticks. Each value is written under its label, where no whisker can hide it."""
    x0, y0 = origin
    base = y0 + height
    parts = [line(x0, y0, x0, base), line(x0, base, x0 + 70 * len(bars), base)]
    for tick in _ticks(top):
        if tick <= top:
            y = base - height * tick / top
            parts += [line(x0 - 4, y, x0, y), text(x0 - 6, y + 4, show(tick), anchor="end")]
    for i, (label, value, colour) in enumerate(bars):
        h = height * min(max(value, 0.0), top) / top
        x = x0 + 15 + 70 * i
        parts.append(rect(x, base - h, 40, h, colour, f"{label}: {show(value)}"))
        parts.append(text(x + 20, base + 16, label, anchor="middle"))
        parts.append(
            text(x + 20, base + 31, show(value), anchor="middle", extra=' font-weight="bold"')
        )
    return parts


def _tokens(value: float) -> str:
    return f"{value:,.0f}"


def _share(value: float) -> str:
    return f"{value:.0%}" if value in (0.0, 0.25, 0.5, 0.75, 1.0) else f"{value:.1%}"


# -- the savings chart ---------------------------------------------------------------------------


def savings_chart(findings: list[Finding]) -> str:
    """Monthly saving per finding as horizontal bars, largest first, coloured by severity.

    Bar lengths are proportional to the saving (info findings too, with their amount in
    brackets as in the table), so the picture and the numbers tell the same story.
    """
    label_w, bar_w, row_h, top_pad = 300, 340, 26, 10
    height = top_pad + row_h * len(findings) + 40
    top = max((max(f.monthly_savings_usd, 0.0) for f in findings), default=0.0)
    ticks = _ticks(top)
    scale = ticks[-1] or 1.0  # the axis ends on a round tick; bars stay proportional
    parts: list[str] = []
    for i, f in enumerate(findings):
        y = top_pad + row_h * i
        width = bar_w * max(f.monthly_savings_usd, 0.0) / scale
        colour = SEVERITY_COLOUR.get(f.severity, OTHER_COLOUR)
        name = f"{f.rule} {f.prompt or '-'}"
        parts.append(text(label_w - 8, y + 16, _short(name), anchor="end"))
        title = f"{name} ({f.model or '-'}): {saving_text(f)} per month, {f.severity}"
        parts.append(rect(label_w, y + 4, width, row_h - 8, colour, title, "bar"))
        parts.append(text(label_w + width + 6, y + 16, saving_text(f)))
    axis_y = top_pad + row_h * len(findings)
    parts.append(line(label_w, top_pad, label_w, axis_y))
    parts.append(line(label_w, axis_y, label_w + bar_w, axis_y))
    for tick in ticks:
        x = label_w + bar_w * tick / scale
        parts += [
            line(x, axis_y, x, axis_y + 4),
            text(x, axis_y + 16, f"${tick:,.0f}" if top >= 4 else money(tick), anchor="middle"),
        ]
    parts.append(text(label_w + bar_w / 2, axis_y + 34, "Saving (USD/month)", anchor="middle"))
    label = "Monthly saving per finding, largest first: " + "; ".join(
        f"{f.rule} {f.prompt or '-'} {saving_text(f)} ({f.severity})" for f in findings
    )
    return svg(label_w + bar_w + 110, height, label, parts)


# -- evidence charts, one per built-in rule ------------------------------------------------------


def gaps_chart(evidence: Mapping[str, Any]) -> str | None:
    """LT201: the share of gaps between calls per inter-arrival bucket, cache TTLs marked.

    Gaps left of the TTL line would read a cached prefix, so the picture shows at a glance why
    the simulated hit rate is what it is.
    """
    inter = evidence.get("inter_arrival")
    hist = inter.get("histogram") if isinstance(inter, Mapping) else None
    if not isinstance(hist, Mapping) or not hist:
        return None
    numbers = {str(k): number(v) for k, v in hist.items()}
    if any(v is None or v < 0 for v in numbers.values()):
        return None
    counts = {k: float(v or 0.0) for k, v in numbers.items()}
    total = sum(counts.values())
    if total <= 0:
        return None
    x0, y0, plot_h, step = 60, 30, 150, 58
    parts = [
        line(x0, y0 + plot_h, x0 + step * len(counts), y0 + plot_h),
        line(x0, y0, x0, y0 + plot_h),
    ]
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        y = y0 + plot_h * (1 - tick)
        parts += [line(x0 - 4, y, x0, y), text(x0 - 6, y + 4, f"{tick:.0%}", anchor="end")]
    parts.append(text(8, 16, "share of gaps between calls"))
    for i, (label, count) in enumerate(counts.items()):
        share = count / total
        x, h = x0 + step * i + 9, plot_h * share
        title = f"{label}: {count:,.0f} gaps ({share:.1%})"
        parts.append(rect(x, y0 + plot_h - h, 40, h, "#5c6bc0", title, "gap"))
        parts.append(text(x + 20, y0 + plot_h + 16, label, anchor="middle"))
    ttls = evidence.get("ttl_s") if isinstance(evidence.get("ttl_s"), Mapping) else {}
    marks = []
    dashed = 'stroke="#c62828" stroke-width="2" stroke-dasharray="5 3"'
    for name, value in ttls.items():
        seconds = number(value)
        pos = _gap_position(list(counts), seconds)
        if seconds is not None and pos is not None:
            x = x0 + step * pos
            ttl = f"{name} cache TTL {_duration(seconds)}"
            marks.append(ttl)
            parts += [line(x, y0 - 10, x, y0 + plot_h, dashed), text(x + 3, y0 - 12, ttl)]
    parts.append(
        text(x0 + step * len(counts) / 2, y0 + plot_h + 36, "gap between calls", anchor="middle")
    )
    label = "Gaps between calls sharing the prefix: " + "; ".join(
        f"{k} {fmt(v)}" for k, v in hist.items()
    )
    label += (". Marked: " + ", ".join(marks)) if marks else ""
    return svg(x0 + step * len(counts) + 60, y0 + plot_h + 46, label, parts)


def _duration(seconds: float) -> str:
    """300 -> 5m, 3600 -> 1h, 45 -> 45s: how the providers name their cache lifetimes."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"


def _gap_position(labels: list[str], seconds: float | None) -> float | None:
    """Where ``seconds`` falls on the bucket axis (bucket widths; linear inside a bucket)."""
    if seconds is None or any(label not in GAP_UPPER_S for label in labels):
        return None
    lower = 0.0
    for i, label in enumerate(labels):
        upper = GAP_UPPER_S[label]
        if seconds <= upper:
            return i + 1.0 if math.isinf(upper) else i + (seconds - lower) / (upper - lower)
        lower = upper
    return None


def reasoning_chart(evidence: Mapping[str, Any]) -> str | None:
    """LT101: mean reasoning tokens of the two arms, and their accuracy with the gain's interval.

    The error bar sits on arm B at ``accuracy_a + [gain_lower, gain_upper]``: how far B's
    accuracy could be from A's at the stated confidence, which is what the verdict rests on.
    """
    mean_a, mean_b = (
        number(evidence.get("mean_reasoning_a")),
        number(evidence.get("mean_reasoning_b")),
    )
    if mean_a is None or mean_b is None:
        return None
    arm_a, arm_b = str(evidence.get("arm_a") or "A"), str(evidence.get("arm_b") or "B")
    colours = ("#9e9e9e", "#c62828")
    top = _ticks(max(mean_a, mean_b, 1.0))[-1]
    bars = [(arm_a, mean_a, colours[0]), (arm_b, mean_b, colours[1])]
    parts = vbars((70, 30), 150, top, bars, _tokens)
    parts.append(text(8, 16, "mean reasoning tokens per call (tokens)"))
    acc_a, acc_b = number(evidence.get("accuracy_a")), number(evidence.get("accuracy_b"))
    label = (
        f"Mean reasoning tokens per call: {arm_a} {_tokens(mean_a)}, {arm_b} {_tokens(mean_b)}. "
    )
    parts.append(text(310, 16, "accuracy (share correct)"))
    if acc_a is None or acc_b is None:
        parts.append(text(330, 110, "no labels", extra=' font-size="16"'))
        return svg(560, 245, label + "Accuracy: no labels.", parts)
    bars = [(arm_a, acc_a, colours[0]), (arm_b, acc_b, colours[1])]
    parts += vbars((350, 30), 150, 1.0, bars, _share)
    label += f"Accuracy: {arm_a} {acc_a:.1%}, {arm_b} {acc_b:.1%}."
    lower = number(evidence.get("accuracy_gain_lower"))
    upper = number(evidence.get("accuracy_gain_upper"))
    if lower is not None and upper is not None:
        level = number(evidence.get("confidence"))
        ci = f"{level:.0%} " if level is not None else ""
        parts += _error_bar(455, 30, 150, acc_a + lower, acc_a + upper)
        parts.append(text(490, 110, f"{ci}CI of gain", extra=' font-size="11"'))
        span = f"{lower * 100:+.1f} to {upper * 100:+.1f} pp"  # percentage points, not percent
        parts.append(text(490, 124, span, extra=' font-size="11"'))
        label += f" {ci}confidence interval of the gain: {span}."
    return svg(600, 245, label, parts)


def _error_bar(x: float, y0: float, height: float, low: float, high: float) -> list[str]:
    """A vertical interval (whiskers) on a 0..1 axis."""
    ys = [y0 + height * (1 - min(max(v, 0.0), 1.0)) for v in (low, high)]
    style = 'stroke="#212121" stroke-width="2"'
    return [line(x, ys[0], x, ys[1], style)] + [line(x - 6, y, x + 6, y, style) for y in ys]


def growth_chart(evidence: Mapping[str, Any]) -> str | None:
    """LT301: the fitted growth of the input per turn against the token budget.

    The evidence holds the slope of the fit, not the first turn's size nor the measured points,
    so the line is the model ``growth x (turn - 1)`` from turn 1 to the mean conversation
    length, labelled as a model.
    """
    growth = number(evidence.get("growth_tokens_per_turn"))
    turns = number(evidence.get("mean_turns"))
    if growth is None or turns is None or growth <= 0 or turns <= 1:
        return None
    budget = number(evidence.get("budget_tokens"))
    added = growth * (turns - 1)
    x0, y0, w, h = 70, 30, 420, 160
    top = _ticks(max(added, budget or 0.0) * 1.05)[-1]

    def px(turn: float, tokens: float) -> tuple[float, float]:
        return x0 + w * (turn - 1) / (turns - 1), y0 + h - h * tokens / top

    parts = [line(x0, y0, x0, y0 + h), line(x0, y0 + h, x0 + w, y0 + h)]
    for tick in _ticks(top):
        y = px(1, tick)[1]
        parts += [line(x0 - 4, y, x0, y), text(x0 - 6, y + 4, f"{tick:,.0f}", anchor="end")]
    for tick in sorted({1.0, *(t for t in _ticks(turns) if 1 < t <= turns)}):
        x = px(tick, 0)[0]
        parts += [
            line(x, y0 + h, x, y0 + h + 4),
            text(x, y0 + h + 16, f"{tick:g}", anchor="middle"),
        ]
    parts.append(line(*px(1, 0), *px(turns, added), 'stroke="#c62828" stroke-width="2.5"'))
    parts.append(text(x0 + 8, y0 + 12, f"model of the fit: +{growth:,.0f} tokens per turn"))
    label = (
        f"Model of the fit: the input grows by {growth:,.0f} tokens per turn; over the mean "
        f"{turns:g} turns that adds {added:,.0f} tokens"
    )
    if budget is not None:
        y = px(1, budget)[1]
        parts.append(
            line(x0, y, x0 + w, y, 'stroke="#00838f" stroke-width="2" stroke-dasharray="6 4"')
        )
        parts.append(text(x0 + 4, y - 5, f"budget {budget:,.0f} tokens"))
        label += f"; budget {budget:,.0f} tokens"
    every = number(evidence.get("summarize_after_turns"))
    if every is not None and 1 <= every <= turns:
        x = px(every, 0)[0]
        parts.append(line(x, y0, x, y0 + h, 'stroke="#757575" stroke-dasharray="3 3"'))
        parts.append(text(x + 3, y0 + h - 8, f"summarise after {every:g} turns"))
        label += f"; summarise after {every:g} turns"
    parts.append(text(8, 16, "input tokens added since the first turn (tokens)"))
    parts.append(text(x0 + w / 2, y0 + h + 34, "turn", anchor="middle"))
    return svg(x0 + w + 30, y0 + h + 44, label + ". Not measured points.", parts)


def _usd(value: float) -> str:
    return money(value) if value >= 0.01 or value <= 0 else f"${value:.5f}"


def rightsizing_chart(evidence: Mapping[str, Any]) -> str | None:
    """LT401: cost per call and accuracy of the two models on the prompt."""
    cost_e, cost_c = evidence.get("cost_per_call_expensive"), evidence.get("cost_per_call_cheaper")
    if cost_e is None or cost_c is None:
        return None
    e, c = _short(str(evidence["expensive_model"]), 12), _short(str(evidence["cheaper_model"]), 12)
    parts = [text(60, 14, "cost per call (USD)", extra=' font-weight="bold"')]
    parts += vbars(
        (60, 24),
        120,
        max(cost_e, cost_c) * 1.1 or 1.0,
        [(e, cost_e, OTHER_COLOUR), (c, cost_c, "#4c9f70")],
        _usd,
    )
    acc_e, acc_c = evidence.get("accuracy_expensive"), evidence.get("accuracy_cheaper")
    accuracy = "accuracy: " + " vs ".join(
        f"{name} {'no labels' if acc is None else _share(acc)}"
        for name, acc in ((e, acc_e), (c, acc_c))
    )
    parts.append(text(60, 200, accuracy))
    label = f"LT401 cost per call: {e} {_usd(cost_e)}, {c} {_usd(cost_c)}; {accuracy}"
    return svg(260, 215, label, parts)


def batch_chart(evidence: Mapping[str, Any]) -> str | None:
    """LT501: the traffic's cost at standard rates and at the batch rates."""
    cost, saving = evidence.get("cost_in_window_usd"), evidence.get("saving_in_window_usd")
    if cost is None or saving is None:
        return None
    bars = [("standard", cost, OTHER_COLOUR), ("batch", cost - saving, "#4c9f70")]
    parts = [text(60, 14, "cost in the window (USD)", extra=' font-weight="bold"')]
    parts += vbars((60, 24), 120, cost * 1.1 or 1.0, bars, _usd)
    label = f"LT501 cost in the window: standard {_usd(cost)}, batch {_usd(cost - saving)}"
    return svg(260, 190, label, parts)


def duplicates_chart(evidence: Mapping[str, Any]) -> str | None:
    """LT502: repeats of the most repeated requests (by fingerprint, never content)."""
    top = evidence.get("top_repeated_requests") or []
    if not top:
        return None
    bars = [(str(r["fingerprint"])[:8], float(r["repeats"]), OTHER_COLOUR) for r in top]
    parts = [text(60, 14, "repeats per request (fingerprint)", extra=' font-weight="bold"')]
    parts += vbars((60, 24), 120, max(b[1] for b in bars) * 1.1, bars, _tokens)
    label = "LT502 repeats of the top requests: " + ", ".join(f"{n} {v:,.0f}" for n, v, _ in bars)
    return svg(80 + 70 * len(bars), 190, label, parts)


def loop_chart(evidence: Mapping[str, Any]) -> str | None:
    """LT503: the worst sessions' spend, split into waste (repeats, billed failures) and rest."""
    sessions = [s for s in evidence.get("worst_sessions") or [] if isinstance(s, Mapping)]
    costs = [(number(s.get("cost_usd")), number(s.get("waste_usd"))) for s in sessions]
    if not costs or any(c is None or w is None for c, w in costs):
        return None
    top = _ticks(max(max(c for c, _ in costs), 0.01))[-1]  # type: ignore[type-var]
    x0, y0, height = 70, 30, 150
    base = y0 + height
    parts = [line(x0, y0, x0, base), line(x0, base, x0 + 70 * len(costs), base)]
    for tick in _ticks(top):
        if tick <= top:
            y = base - height * tick / top
            parts += [line(x0 - 4, y, x0, y), text(x0 - 6, y + 4, fmt_usd(tick), anchor="end")]
    label = "Spend of the worst sessions (USD), wasted part in red:"
    for i, ((cost, waste), session) in enumerate(zip(costs, sessions, strict=True)):
        assert cost is not None and waste is not None
        x = x0 + 15 + 70 * i
        whole = height * min(cost, top) / top
        lost = height * min(waste, cost, top) / top
        name = _short(str(session.get("conversation_id") or "?"), 10)
        parts.append(rect(x, base - whole, 40, whole - lost, "#9e9e9e", f"{name}: {fmt_usd(cost)}"))
        parts.append(rect(x, base - lost, 40, lost, "#c62828", f"{name}: {fmt_usd(waste)} wasted"))
        parts.append(text(x + 20, base + 16, name, anchor="middle"))
        parts.append(
            text(x + 20, base + 31, fmt_usd(waste), anchor="middle", extra=' font-weight="bold"')
        )
        label += f" {name} {fmt_usd(waste)} of {fmt_usd(cost)};"
    parts.append(text(8, 16, "session spend (USD); red: repeats and billed failures"))
    return svg(max(360, x0 + 70 * len(costs) + 30), 225, label.rstrip(";") + ".", parts)


def fmt_usd(value: float) -> str:
    return f"${value:,.2f}" if value >= 1 else f"${value:,.3f}"


EVIDENCE_CHARTS: dict[str, tuple[Callable[[Mapping[str, Any]], str | None], str]] = {
    "LT101": (reasoning_chart, "Arms compared; error bar: the confidence interval of the gain."),
    "LT201": (gaps_chart, "Gaps between calls that share the prefix; dashed: cache lifetimes."),
    "LT301": (
        growth_chart,
        "A model of the fit, not measured points: the evidence has the growth per turn but not "
        "the first turn's size, so real inputs are larger by that much.",
    ),
    "LT401": (rightsizing_chart, "The two models on this prompt: cost per call and accuracy."),
    "LT501": (batch_chart, "The same calls at standard and at the price data's batch rates."),
    "LT502": (duplicates_chart, "Cross-session repeats of the most repeated requests."),
    "LT503": (loop_chart, "The worst sessions' spend; red: repeated requests and billed failures."),
}


# -- the page ------------------------------------------------------------------------------------


def _figure(finding: Finding) -> str:
    """The rule's evidence chart, when the rule has one and the evidence supports it."""
    chart, caption = EVIDENCE_CHARTS.get(finding.rule, (None, ""))
    picture = chart(finding.evidence) if chart else None
    return f"<figure>{picture}<figcaption>{esc(caption)}</figcaption></figure>" if picture else ""


def _summary_table(result: AuditResult, findings: list[Finding]) -> str:
    columns = ("#", "Rule", "Severity", "Prompt", "Model", "Saving/month", "Message")
    head = "".join(
        '<th class="num">Saving/month</th>' if c == "Saving/month" else f"<th>{c}</th>"
        for c in columns
    )
    rows = "".join(
        f'<tr><td class="num"><a href="#finding-{i}">{i}</a></td>'
        f"<td>{esc(f.rule)} {esc(f.name)}</td>"
        f'<td><span class="sev {severity_class(f.severity)}">{esc(f.severity)}</span></td>'
        f"<td>{esc(f.prompt)}</td><td>{esc(f.model)}</td>"
        f'<td class="num{" info" if f.severity == "info" else ""}">{esc(saving_text(f))}</td>'
        f"<td>{esc(f.message)}</td></tr>"
        for i, f in enumerate(findings, 1)
    )
    total = esc(money(result.total_monthly_savings_usd))
    foot = (
        "<tr><td></td><td>Total</td><td></td><td></td><td></td>"
        f'<td class="num">{total}</td><td></td></tr>'
    )
    note = (
        '<p class="info">In brackets: the potential saving of an inconclusive finding, '
        "not in the total.</p>"
        if any(f.severity == "info" for f in findings)
        else ""
    )
    table = f"<thead><tr>{head}</tr></thead><tbody>{rows}</tbody><tfoot>{foot}</tfoot>"
    return f"<table>{table}</table>{note}"


def with_code(text: str | None) -> str:
    """Escaped text whose backtick spans become ``<code>``: fix texts show code as code."""
    if text is None:
        return "-"
    return "".join(
        f"<code>{esc(piece)}</code>" if is_code else esc(piece)
        for piece, is_code in code_spans(text)
    )


def sparkline(spend: KeySpend, label: str) -> str:
    """The key's spend per day over the baseline and current windows as small bars (the
    current window darker), so a reader sees whether the waste is new, growing or steady."""
    days = spend.days
    if not days:
        return ""
    top = max((v for _, v in days), default=0.0)
    step = max(3.0, min(12.0, 240.0 / len(days)))
    width, height = step * len(days) + 2, 40.0
    parts = [line(1, height - 1, width - 1, height - 1, 'stroke="#bbb"')]
    for i, (day, value) in enumerate(days):
        h = (height - 4) * value / top if top > 0 else 0.0
        colour = "#3949ab" if day >= spend.window_start else "#9fa8da"
        title = f"{day:%Y-%m-%d}: {money(value)}"
        parts.append(rect(1 + i * step, height - 1 - h, step * 0.8, h, colour, title, "spark-bar"))
    first, last = days[0][0], days[-1][0]
    aria = (
        f"{label}: spend per day from {first:%Y-%m-%d} to {last:%Y-%m-%d}, "
        f"up to {money(top)} a day; {money(spend.window_spend)} in the audit window"
    )
    picture = svg(int(width), int(height), aria, parts).replace("<svg ", '<svg class="spark" ', 1)
    return (
        f'<p class="trend">{picture} <span class="info">spend per day of this key, '
        f"{first:%Y-%m-%d} to {last:%Y-%m-%d} (darker: the audit window)</span></p>"
    )


def _section(index: int, f: Finding, context: ReportContext | None = None) -> str:
    key = ", ".join(f"{k}={fmt(v)}" for k, v in f.key.items()) or "-"
    evidence = "".join(
        f'<tr><th scope="row">{esc(label)}</th><td class="num">{esc(value)}</td></tr>'
        for label, value in evidence_rows(f.evidence)
    )
    spend = context.key_spend(f) if context is not None else None
    share = ""
    if spend is not None:
        of_spend = share_text(spend.share(f.monthly_savings_usd))
        share = f" ({esc(of_spend)}, {esc(money(spend.monthly_spend))} per month)"
    trend = sparkline(spend, f"{f.rule} {f.prompt or '-'}") if spend is not None else ""
    return (
        f'<section class="finding" id="finding-{index}">'
        f"<h2>{index}. {esc(f.rule)} {esc(f.name)}: {esc(f.prompt)}</h2>"
        f'<p><span class="sev {severity_class(f.severity)}">{esc(f.severity)}</span> '
        f"service {esc(f.service)}; model {esc(f.model)}; window {esc(when(f.window_start))} "
        f"to {esc(when(f.window_end))}; estimated saving "
        f"<strong>{esc(saving_text(f))} per month</strong>{share}</p>{trend}"
        f'<p class="message">{esc(clean_timestamps(f.message))}</p>'
        f'<p class="fix"><strong>Fix:</strong> {with_code(f.fix)}</p>'
        f"<p><strong>Key:</strong> {esc(key)}. Rule page: "
        f"<code>llmtrace audit --explain {esc(f.rule)}</code></p>{_figure(f)}"
        f'<table class="evidence"><caption>Evidence</caption>{evidence}</table></section>'
    )


def _footer(result: AuditResult, context: ReportContext | None) -> str:
    """Version, generation time, store, window and price data: what produced this page."""
    if context is None:
        return ""
    w = result.window
    items = [
        ("Generated by", f"llmtrace {context.version}"),
        ("Generated at", when(context.generated_at)),
        ("Store", context.store or "-"),
        ("Window", f"{when(w.since)} to {when(w.until)} (baseline from {when(w.baseline_since)})"),
        ("Price data", ", ".join(context.price_sources) or "no priced calls in the window"),
    ]
    if context.filters:
        items.insert(4, ("Filters", context.filters))
    rows = "".join(f"<li>{esc(k)}: {esc(v)}</li>" for k, v in items)
    return f'<footer><ul class="meta">{rows}</ul></footer>'


def _header(result: AuditResult, findings: list[Finding]) -> str:
    w = result.window
    rules = ", ".join(result.rules_run) or "none"
    parts = [
        "<header><h1>llmtrace audit</h1>",
        f"<p>Window {esc(when(w.since))} to {esc(when(w.until))} (baseline from "
        f"{esc(when(w.baseline_since))}); {result.calls_scanned:,} calls scanned; "
        f"rules run: {esc(rules)}.</p>",
    ]
    if findings:
        parts.append(
            f'<p class="total">{len(findings)} finding(s), estimated saving '
            f"<strong>{esc(money(result.total_monthly_savings_usd))} per month</strong>.</p>"
        )
    else:
        parts.append(f'<p class="total none">No findings in {result.calls_scanned:,} calls.</p>')
    if result.errors:
        items = "".join(f"<li>{esc(e.rule)}: {esc(e.message)}</li>" for e in result.errors)
        parts.append(f'<div class="errors"><h2>Errors</h2><ul>{items}</ul></div>')
    return "".join(parts) + "</header>"


def render(result: AuditResult, context: ReportContext | None = None) -> str:
    """The whole report as one HTML5 document (with ``context``: shares of spend, spend
    sparklines and the footer)."""
    findings = ordered(result)
    body = [_header(result, findings)]
    if findings:
        rest = len(findings) - CHART_MAX_FINDINGS
        more = f" The {rest:,} smaller finding(s) are in the table." if rest > 0 else ""
        body.append(
            f"<figure>{savings_chart(findings[:CHART_MAX_FINDINGS])}<figcaption>Monthly saving "
            "per finding, coloured by severity (high red, medium amber, low teal, info grey)."
            f"{more}</figcaption></figure>"
        )
        body.append(_summary_table(result, findings))
        body += [_section(i, f, context) for i, f in enumerate(findings, 1)]
    body.append(_footer(result, context))
    title = f"llmtrace audit {result.window.since:%Y-%m-%d} to {result.window.until:%Y-%m-%d}"
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )
