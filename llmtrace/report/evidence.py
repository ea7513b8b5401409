"""Evidence for people: labelled rows with units and thousands separators, for every renderer.

A finding's evidence is a flat-ish mapping of snake_case keys to numbers (``prefix_tokens``,
``simulated_hit_rate``, ``q``, ``ttl_s``...). JSON keeps it as is; the Markdown, HTML and text
reports show it through ``evidence_rows``: a label in words, the value formatted for its unit
(tokens, USD, shares as percent, seconds as 5m/1h, p and q values as ``<1e-16`` rather than
``0``, counts as ``16,560`` rather than ``1.656e+04``). Units come from ``FIELDS`` (one line per
known key) and, for keys not listed there (custom rules, new evidence), from the key's suffix.
Also here: fix texts with ``code`` spans, and timestamps without microseconds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

# key -> (label, unit). Units: usd, tokens, calls, count, share, pp (a share difference, shown
# in percentage points), ratio (x), seconds, pvalue, per_hour, multiplier, number, text.
FIELDS: dict[str, tuple[str, str]] = {
    "calls": ("Calls", "calls"),
    "calls_a": ("Calls, arm A", "calls"),
    "calls_b": ("Calls, arm B", "calls"),
    "calls_per_hour": ("Calls per hour", "per_hour"),
    "monthly_calls": ("Calls per month", "calls"),
    "prompts": ("Prompts", "count"),
    "prefix_tokens": ("Shared prefix", "tokens"),
    "prefix_depth": ("Prefix depth (message boundary)", "count"),
    "prefix_hash": ("Prefix hash", "text"),
    "min_cacheable_tokens": ("Smallest cacheable prefix", "tokens"),
    "actual_cached_share": ("Share read from cache now", "share"),
    "cache_mode": ("Cache mode", "text"),
    "ttl_s": ("Cache lifetime", "seconds"),
    "simulated_hit_rate": ("Simulated hit rate (5m cache)", "share"),
    "simulated_hit_rate_1h": ("Simulated hit rate (1h cache)", "share"),
    "write_multiplier": ("Cache write price (5m)", "multiplier"),
    "write_1h_multiplier": ("Cache write price (1h)", "multiplier"),
    "read_multiplier": ("Cache read price", "multiplier"),
    "break_even_hit_rate": ("Break-even hit rate (5m)", "share"),
    "break_even_hit_rate_1h": ("Break-even hit rate (1h)", "share"),
    "inter_arrival": ("Gap between calls", "text"),
    "median": ("Median", "text"),
    "share_within_short_ttl": ("Within the short lifetime", "share"),
    "share_within_1h": ("Within 1h", "share"),
    "histogram": ("Histogram", "calls"),
    "window_input_cost_usd": ("Input cost in the window", "usd"),
    "window_input_cost_cached_usd": ("Input cost in the window, cached (5m)", "usd"),
    "window_input_cost_cached_1h_usd": ("Input cost in the window, cached (1h)", "usd"),
    "monthly_savings_5m_usd": ("Saving per month, 5m cache", "usd"),
    "monthly_savings_1h_usd": ("Saving per month, 1h cache", "usd"),
    "recommended_ttl": ("Recommended cache lifetime", "text"),
    "verdict": ("Verdict", "text"),
    "comparison": ("Comparison", "text"),
    "arm_a": ("Arm A", "text"),
    "arm_b": ("Arm B", "text"),
    "mean_reasoning_a": ("Mean reasoning per call, A", "tokens"),
    "mean_reasoning_b": ("Mean reasoning per call, B", "tokens"),
    "median_reasoning_a": ("Median reasoning per call, A", "tokens"),
    "median_reasoning_b": ("Median reasoning per call, B", "tokens"),
    "ratio_of_means": ("Ratio of means (B/A)", "ratio"),
    "p": ("p-value", "pvalue"),
    "q": ("q-value (false discovery rate)", "pvalue"),
    "prob_b_greater": ("P(a B call reasons more than an A call)", "share"),
    "labelled_a": ("Labelled calls, A", "calls"),
    "labelled_b": ("Labelled calls, B", "calls"),
    "accuracy_a": ("Accuracy, A", "share"),
    "accuracy_b": ("Accuracy, B", "share"),
    "accuracy_gain": ("Accuracy gain (B - A)", "pp"),
    "accuracy_gain_lower": ("Accuracy gain, lower bound", "pp"),
    "accuracy_gain_upper": ("Accuracy gain, upper bound", "pp"),
    "confidence": ("Confidence level", "share"),
    "delta": ("Smallest gain that matters", "pp"),
    "extra_reasoning_tokens_per_call": ("Extra reasoning per call", "tokens"),
    "reasoning_usd_per_million_tokens": ("Reasoning price", "usd_per_mtok"),
    "labelled_needed_per_arm": ("Labelled calls needed per arm", "calls"),
    "check": ("Check", "text"),
    "provider": ("Provider", "text"),
    "input_tokens": ("Input", "tokens"),
    "cached_share_of_input": ("Share of input read from cache", "share"),
    "max_input_tokens": ("Largest input", "tokens"),
    "budget_tokens": ("History budget", "tokens"),
    "tokens_trimmed_budget": ("Input cut by the budget", "tokens"),
    "window_input_cost_budget_usd": ("Input cost in the window, with the budget", "usd"),
    "monthly_savings_budget_usd": ("Saving per month, budget", "usd"),
    "recommended": ("Recommended", "text"),
    "conversations": ("Conversations", "count"),
    "growing_conversations": ("Growing conversations", "count"),
    "mean_turns": ("Mean turns per conversation", "number"),
    "growth_tokens_per_turn": ("Input growth per turn", "tokens"),
    "fit_r2": ("Fit R²", "number"),
    "output_tokens_per_turn": ("Output per turn", "tokens"),
    "growth_to_output_ratio": ("Growth / output", "ratio"),
    "summarize_after_turns": ("Summarise after", "turns"),
    "summary_tokens": ("Summary size", "tokens"),
    "tokens_trimmed_summary": ("Input cut by summaries", "tokens"),
    "summary_calls": ("Summary calls", "calls"),
    "window_input_cost_summary_usd": ("Input cost in the window, with summaries", "usd"),
    "window_summary_calls_cost_usd": ("Cost of the summary calls in the window", "usd"),
    "monthly_savings_summary_usd": ("Saving per month, summaries", "usd"),
}

# unit by key suffix, for keys FIELDS does not list (first match wins)
_SUFFIX_UNITS: tuple[tuple[str, str], ...] = (
    ("_usd", "usd"),
    ("_tokens", "tokens"),
    ("_calls", "calls"),
    ("_share", "share"),
    ("_rate", "share"),
    ("_ratio", "ratio"),
    ("_s", "seconds"),
    ("_ms", "ms"),
)
_UNIT_WORDS = ("usd", "tokens", "s", "ms")


def unit_of(key: str) -> str:
    """The unit of an evidence key (``FIELDS``, else by suffix, else a plain number)."""
    if key in FIELDS:
        return FIELDS[key][1]
    for suffix, unit in _SUFFIX_UNITS:
        if key.endswith(suffix):
            return unit
    return "number"


def label_of(key: str) -> str:
    """``window_input_cost_usd`` -> ``Window input cost`` (``FIELDS`` first)."""
    if key in FIELDS:
        return FIELDS[key][0]
    words = [w for w in str(key).split("_") if w]
    if len(words) > 1 and words[-1].lower() in _UNIT_WORDS:
        words = words[:-1]
    text = " ".join(words) or str(key)
    return text[:1].upper() + text[1:]


def number_text(value: float, decimals: int = 2) -> str:
    """12,345 / 1.5 / 0.0123: thousands separators, never scientific notation for ordinary
    sizes, trailing zeros dropped."""
    if not math.isfinite(value):
        return str(value)
    if float(value).is_integer() and abs(value) < 1e15:
        return f"{int(value):,}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:,.{decimals}f}".rstrip("0").rstrip(".")
    significant = max(decimals, 2 - math.floor(math.log10(abs(value)))) if value else decimals
    return f"{value:.{min(significant, 12)}f}".rstrip("0").rstrip(".")


def usd(value: float) -> str:
    """$1,234.56; below a dollar 4 significant digits ($0.0375)."""
    from llmtrace.costs import format_usd

    return format_usd(value)


def percent(value: float) -> str:
    """0.9993 -> 99.93%, 0.5 -> 50%, 0.0001 -> 0.01%."""
    scaled = value * 100
    text = f"{scaled:.1f}" if scaled == 0 or abs(scaled) >= 10 else f"{scaled:.2f}"
    return text.rstrip("0").rstrip(".") + "%"


def pvalue(value: float) -> str:
    """p and q values: ``<1e-16`` (the precision of a double) instead of ``0``."""
    if value < 1e-16:
        return "<1e-16"
    if value < 1e-3:
        mantissa, exponent = f"{value:.1e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return f"{value:.3f}".rstrip("0").rstrip(".")


def duration(seconds: float) -> str:
    """300 -> 5m, 3600 -> 1h, 45 -> 45s, 90 -> 1.5m."""
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{number_text(seconds / size)}{unit}"
    return f"{number_text(seconds)}s"


def format_value(value: Any, unit: str) -> str:
    """One evidence value as text, in its unit (unescaped: the renderer escapes)."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {format_value(v, unit)}" for k, v in value.items())
    if isinstance(value, list | tuple):
        return ", ".join(format_value(v, unit) for v in value)
    if not isinstance(value, int | float):
        return clean_timestamps(str(value))
    number = float(value)
    if not math.isfinite(number):
        return "-" if math.isnan(number) else ("∞" if number > 0 else "-∞")
    if unit == "usd":
        return usd(number)
    if unit == "usd_per_mtok":
        return f"{usd(number)} per 1M tokens"
    if unit == "tokens":
        return f"{number_text(number, 0 if abs(number) >= 10 else 1)} tokens"
    if unit in ("calls", "count"):
        return number_text(number, 1)
    if unit == "turns":
        return f"{number_text(number)} turns"
    if unit == "share":
        return percent(number)
    if unit == "pp":
        points = number * 100
        return f"{points:+.{2 if 0 < abs(points) < 0.1 else 1}f} pp"
    if unit == "ratio":
        return f"{number_text(number)}x"
    if unit == "multiplier":
        return f"{number_text(number)}x the input price"
    if unit == "seconds":
        return duration(number)
    if unit == "ms":
        return f"{number_text(number)} ms"
    if unit == "per_hour":
        return f"{number_text(number, 1)} per hour"
    if unit == "pvalue":
        return pvalue(number)
    return number_text(number)


def evidence_rows(evidence: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, str]]:
    """(label, value) rows of a finding's evidence, nested mappings flattened into
    ``Parent: child`` rows (a histogram stays one row). Unknown keys keep a readable label."""
    for key, value in evidence.items():
        label = f"{prefix}{label_of(str(key))}"
        unit = unit_of(str(key))
        if isinstance(value, Mapping) and unit == "text" and value:
            yield from evidence_rows(value, prefix=f"{label}: ")
            continue
        yield label, format_value(value, unit)


# -- fix texts and timestamps ------------------------------------------------------------------

_CODE = re.compile(r"`([^`\n]+)`")
_SENTENCE_END = re.compile(r"(?<!e\.g)(?<!i\.e)\.(\s|$)")
_MICROSECONDS = re.compile(r"(\d{2}:\d{2}:\d{2})\.\d+")


def code_spans(text: str) -> list[tuple[str, bool]]:
    """``text`` split into (piece, is_code) by its backtick code spans."""
    parts: list[tuple[str, bool]] = []
    last = 0
    for match in _CODE.finditer(text):
        if match.start() > last:
            parts.append((text[last : match.start()], False))
        parts.append((match.group(1), True))
        last = match.end()
    if last < len(text):
        parts.append((text[last:], False))
    return parts


def plain(text: str) -> str:
    """A fix text for a terminal: code spans without their backticks."""
    return "".join(piece for piece, _ in code_spans(text))


def first_sentence(text: str, at_least: int = 60) -> str:
    """The fix in one line: its first sentence (a period and a space, outside code spans), and
    the next ones while that is shorter than ``at_least`` characters ("Stop resending the
    whole conversation." alone says what, not how)."""
    out: list[str] = []
    length = 0
    for piece, is_code in code_spans(" ".join(text.split())):
        if is_code:
            out.append(f"`{piece}`")
            length += len(piece)
            continue
        rest = piece
        while (cut := _SENTENCE_END.search(rest)) is not None:
            out.append(rest[: cut.end()])
            length += cut.end()
            rest = rest[cut.end() :]
            if length >= at_least:
                return "".join(out).strip()
        out.append(rest)
        length += len(rest)
    return "".join(out).strip()


def when(value: datetime) -> str:
    """A timestamp for people: ``2026-11-20 00:00 UTC`` (no seconds, no microseconds)."""
    from datetime import UTC

    stamp = value.astimezone(UTC) if value.tzinfo else value
    return f"{stamp:%Y-%m-%d %H:%M} UTC"


def clean_timestamps(text: str) -> str:
    """ISO timestamps in free text without their microseconds."""
    return _MICROSECONDS.sub(r"\1", text)
