"""The shipped dashboards as data: panels, their queries, and Grafana's variables substituted.

Grafana expands ``$__rate_interval``, ``$__range``, ``$var``/``${var}``/``[[var]]`` before a
query reaches Prometheus or Tempo; ``substitute`` does the same with values a test chooses, and
fails if any ``$`` is left (an unknown variable would reach the backend as a syntax error).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
DASHBOARDS = REPO / "dashboards"


def paths() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text(encoding="utf-8"))


def all_dashboards() -> dict[str, dict[str, Any]]:
    """uid -> dashboard JSON, for every file in dashboards/."""
    return {d["uid"]: d for d in (load(p) for p in paths())}


def panels(dashboard: Mapping[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, including those nested in (collapsed) rows."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panel.get("panels", [])


@dataclass(frozen=True)
class Query:
    """One query of one panel (or of a template variable)."""

    dashboard: str
    panel_id: int | None
    panel: str
    panel_type: str
    ref: str
    kind: str  # "prometheus" | "tempo"
    text: str
    instant: bool
    legend: str = ""

    @property
    def where(self) -> str:
        return f"{self.dashboard} / {self.panel!r} / {self.ref}"


def _kind(target: Mapping[str, Any], panel: Mapping[str, Any]) -> str:
    source = target.get("datasource") or panel.get("datasource") or {}
    return str(source.get("type", ""))


def queries(dashboard: Mapping[str, Any]) -> list[Query]:
    """Every PromQL and TraceQL query of every panel."""
    found: list[Query] = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            kind = _kind(target, panel)
            text = target.get("expr") if kind == "prometheus" else target.get("query")
            found.append(
                Query(
                    dashboard=dashboard["uid"],
                    panel_id=panel.get("id"),
                    panel=panel.get("title", ""),
                    panel_type=panel.get("type", ""),
                    ref=target.get("refId", ""),
                    kind=kind,
                    text=str(text or ""),
                    instant=bool(target.get("instant")) and not target.get("range", False),
                    legend=str(target.get("legendFormat", "")),
                )
            )
    return found


def variable_queries(dashboard: Mapping[str, Any]) -> list[Query]:
    """The PromQL of query variables (``label_values(metric{...}, label)``)."""
    found = []
    for var in dashboard.get("templating", {}).get("list", []):
        if var.get("type") != "query":
            continue
        query = var.get("query")
        text = query.get("query") if isinstance(query, Mapping) else query
        found.append(
            Query(
                dashboard["uid"],
                None,
                f"${var['name']}",
                "variable",
                var["name"],
                str((var.get("datasource") or {}).get("type", "")),
                str(text),
                True,
            )
        )
    return found


def variables(dashboard: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in dashboard.get("templating", {}).get("list", [])}


_VARIABLE = re.compile(r"\$\{(\w+)(?::\w+)?\}|\[\[(\w+)\]\]|\$(\w+)")


def substitute(text: str, values: Mapping[str, str]) -> str:
    """Replace Grafana variables and macros; ``KeyError`` naming any variable without a value."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2) or match.group(3)
        if name not in values:
            raise KeyError(f"no value for ${name} in {text!r}")
        return values[name]

    return _VARIABLE.sub(replace, text)


# -- PromQL metric names ---------------------------------------------------------------------------

_KEYWORDS = {
    "by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
    "offset", "inf", "nan", "atan2", "topk", "bottomk", "sum", "avg", "min", "max", "count",
    "stddev", "stdvar", "quantile", "count_values", "group",
}  # fmt: skip
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GROUPING = re.compile(
    r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.IGNORECASE
)
_IDENT = re.compile(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)(\s*\()?")


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects (not functions, keywords, labels or durations).

    Grafana's ``label_values(selector, label)`` counts as its selector.
    """
    text = _STRING.sub('""', expr)
    text = re.sub(r"^\s*label_values\((.*),\s*\w+\s*\)\s*$", r"\1", text)
    text = re.sub(r"^\s*label_values\(\s*\w+\s*\)\s*$", "", text)
    text = re.sub(r"\{[^}]*\}", "{}", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "[]", text)  # ranges and subqueries
    text = _GROUPING.sub("", text)
    names = set()
    for match in _IDENT.finditer(text):
        name, call = match.group(1), match.group(2)
        if call or name.lower() in _KEYWORDS:
            continue
        names.add(name)
    return names


_MATCHER = re.compile(r'([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


def matchers(expr: str) -> list[tuple[str, str, str]]:
    """``(label, operator, value)`` of every label matcher inside ``{...}``."""
    found = []
    for block in re.findall(r"\{([^}]*)\}", expr):
        found.extend(_MATCHER.findall(block))
    return found


def grouping_labels(expr: str) -> set[str]:
    """Labels named in ``by (...)`` clauses."""
    labels: set[str] = set()
    for block in re.findall(r"\bby\s*\(([^)]*)\)", expr):
        labels.update(part.strip() for part in block.split(",") if part.strip())
    return labels
