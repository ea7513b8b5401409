"""What the audit could judge: the census of the window's keys, and each rule's coverage.

Why a module of its own: the census is computed in the aggregate step (beside the rules'
aggregates, often in their shared group-by: ``local_engine``) and read in the decide step
(``decide``), where each rule says which keys it judged and why it could not judge the others.
Neither step owns it, and both import it from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import polars as pl

from llmtrace.rules.base import Finding
from llmtrace.rules.cells import Cells, cells_aggregate

CENSUS = "__census__"
KEY = ["prompt", "model", "service"]
CENSUS_COLUMNS = [
    *KEY,
    "provider",
    "start_time",
    "prefix_hashes",
    "conversation_id",
    "reasoning_tokens",
    "input_tokens",
]


def census_aggregate(calls: pl.LazyFrame) -> pl.LazyFrame:
    """Per (prompt, model, service) of the current window: calls and what the rules need of
    them (fingerprints, conversations, reasoning counts), so each rule can say which keys it
    could not judge and why. Computed in the same scan as the rules' aggregates."""
    return cells_aggregate(calls.select(CENSUS_COLUMNS), census_cells())


def census_cells() -> Cells:
    """The census as cells (``llmtrace.rules.cells``), of every call it is given."""
    return Cells(
        where=pl.lit(True),
        keys={name: pl.col(name) for name in KEY},
        aggs={
            "calls": (pl.len().cast(pl.Int64), "sum"),
            "provider": (pl.col("provider").max(), "max"),
            "fingerprinted": (
                (pl.col("prefix_hashes").list.len() > 0).sum().cast(pl.Int64),
                "sum",
            ),
            "in_conversations": (
                pl.col("conversation_id").is_not_null().sum().cast(pl.Int64),
                "sum",
            ),
            "with_reasoning": (
                (pl.col("reasoning_tokens").fill_null(0) > 0).sum().cast(pl.Int64),
                "sum",
            ),
            "with_input": ((pl.col("input_tokens").fill_null(0) > 0).sum().cast(pl.Int64), "sum"),
            "first_call": (pl.col("start_time").min(), "min"),
            "last_call": (pl.col("start_time").max(), "max"),
        },
    )


@dataclass(frozen=True)
class Coverage:
    """What the audit could judge: per rule and over all rules, by (prompt, model, service).

    ``judged``: keys at least one rule could judge (enough calls, a baseline, labels where the
    verdict needs them); ``flagged``: those of them with a finding; ``not_judged``: keys no rule
    could judge, each with the reasons the rules gave (too few calls, no baseline, no labels,
    no fingerprints...). ``by_rule`` holds the same counts and lists for each rule.
    """

    judged: int = 0
    flagged: int = 0
    not_judged: list[dict[str, Any]] = field(default_factory=list)
    by_rule: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def no_waste(self) -> int:
        """Keys checked with no finding."""
        return self.judged - self.flagged

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompts_judged": self.judged,
            "prompts_with_findings": self.flagged,
            "prompts_checked_no_waste": self.no_waste,
            "prompts_not_judged": len(self.not_judged),
            "not_judged": self.not_judged,
            "by_rule": self.by_rule,
        }


def coverage_of(statuses: dict[str, pl.DataFrame], findings: list[Finding]) -> Coverage:
    """Per rule and overall: keys judged, flagged, and not judged with reasons.

    A rule's ``coverage(merged, ctx, census, findings)`` returns one row per key it applies to
    (``prompt``, ``model``, ``service``, ``reason``: null when judged). A key counts as judged
    overall when any rule judged it, as not judged only when none could.
    """
    flagged_keys = {(f.prompt, f.model, f.service) for f in findings}
    judged: set[tuple[Any, ...]] = set()
    reasons: dict[tuple[Any, ...], set[str]] = {}
    by_rule: dict[str, dict[str, Any]] = {}
    for code, table in statuses.items():
        rule_flagged = {(f.prompt, f.model, f.service) for f in findings if f.rule == code}
        ok = table.filter(pl.col("reason").is_null()).select(KEY).unique().rows()
        missing = table.filter(pl.col("reason").is_not_null()).sort(KEY, nulls_last=True)
        judged.update(ok)
        for *key, reason in missing.select(*KEY, "reason").iter_rows():
            reasons.setdefault(tuple(key), set()).add(reason)
        by_rule[code] = {
            "judged": len(ok),
            "with_findings": len(rule_flagged & set(ok)),
            "no_waste": len(set(ok) - rule_flagged),
            "not_judged": [
                {"prompt": p, "model": m, "service": s, "reason": r}
                for p, m, s, r in missing.select(*KEY, "reason").iter_rows()
            ],
        }
    not_judged = [
        {"prompt": k[0], "model": k[1], "service": k[2], "reasons": sorted(r)}
        for k, r in sorted(reasons.items(), key=lambda item: tuple(str(v) for v in item[0]))
        if k not in judged
    ]
    return Coverage(
        judged=len(judged),
        flagged=len(judged & flagged_keys),
        not_judged=not_judged,
        by_rule=by_rule,
    )
