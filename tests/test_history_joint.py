"""LT202 and LT301 of one part from one replay (``history_joint``) give each rule's own cells.

The joint plan takes LT202's turns from LT301's replay; that is exact only for conversations
whose every turn LT202 replays with the same facts as LT301 (or drops whole). A part with any
other conversation must get LT202's own aggregate: these tests plant each kind and compare.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from llmtrace.config import Config
from llmtrace.record import conform
from llmtrace.rules import history_joint
from llmtrace.rules.engine import (
    AggregateJob,
    aggregate_locally,
    audit_window,
    load_catalogue,
    rule_contexts,
)
from llmtrace.rules.history_joint import JointParts, joint_aggregates
from llmtrace.rules.lt202_history import RULE as LT202
from llmtrace.rules.lt301_context import RULE as LT301
from llmtrace.store import Store
from tests.audit_cells import differences, normalise
from tests.test_lt202 import SINCE, UNTIL, context, conversations


def _calls(*extra: pl.DataFrame) -> pl.DataFrame:
    """Uncached and caching Anthropic conversations, OpenAI ones, single calls, and ``extra``."""
    frames = [
        conversations(30, seed=1),
        conversations(20, seed=2, cached=True, prompt="agent@v2", steps=3),
        conversations(20, seed=3, provider="openai", model="gpt-4o", prompt="helper@v1"),
        conversations(40, seed=4, turns=(1, 1), prompt="classify@v1").with_columns(
            pl.lit(None, dtype=pl.String).alias("conversation_id")
        ),
        *extra,
    ]
    return pl.concat(frames, how="vertical_relaxed")


def _own(frame: pl.DataFrame) -> dict[str, pl.DataFrame]:
    calls = conform(frame.lazy())
    ctx = context()
    return {
        "LT202": LT202.aggregate(calls, ctx).collect(),
        "LT301": LT301.aggregate(calls, ctx).collect(),
    }


def _joint(frame: pl.DataFrame) -> tuple[dict[str, pl.DataFrame], int]:
    plans, check = joint_aggregates(conform(frame.lazy()), {"LT202": context(), "LT301": context()})
    *frames, otherwise = pl.collect_all([*plans.values(), check])
    return dict(zip(plans, frames, strict=True)), otherwise.item()


def _same(got: pl.DataFrame, want: pl.DataFrame) -> list[str]:
    return differences(normalise(got), normalise(want))


GEMINI = conversations(10, seed=5, provider="google", model="gemini-2.5-flash", prompt="g@v1")
# a provider no caching rule models: LT202 drops its calls, LT301 replays them uncached
MISTRAL = conversations(10, seed=6, provider="mistral", model="mistral-large", prompt="m@v1")


def _mixed() -> pl.DataFrame:
    """Conversations whose later turns moved to a provider LT202 does not model."""
    frame = conversations(10, seed=7, turns=(4, 8), prompt="mixed@v1")
    late = pl.col("start_time") > pl.col("start_time").min().over("conversation_id")
    return frame.with_columns(
        pl.when(late).then(pl.lit("mistral")).otherwise(pl.col("provider")).alias("provider")
    )


@pytest.mark.parametrize(
    ("extra", "otherwise"),
    [((), False), ((MISTRAL,), False), ((GEMINI,), True), ((_mixed(),), True)],
    ids=["modelled", "wholly unmodelled", "gemini", "mixed providers"],
)
def test_joint_cells_are_each_rules_own_unless_flagged(
    extra: tuple[pl.DataFrame, ...], otherwise: bool
) -> None:
    frame = _calls(*extra)
    own = _own(frame)
    joint, count = _joint(frame)
    assert (count > 0) is otherwise
    assert _same(joint["LT301"], own["LT301"]) == []
    if not otherwise:  # flagged parts take LT202's own aggregate (JointParts)
        assert _same(joint["LT202"], own["LT202"]) == []


def test_a_flagged_part_gets_lt202s_own_aggregate() -> None:
    frame = _calls(GEMINI, _mixed())
    own = _own(frame)
    calls = conform(frame.lazy())
    asked: list[str] = []

    def alone(code: str, part: pl.LazyFrame) -> pl.LazyFrame:
        asked.append(code)
        return {"LT202": LT202, "LT301": LT301}[code].aggregate(part, context())

    parts = JointParts(
        {"LT202": context(), "LT301": context()}, calls.collect_schema().names(), alone
    )
    got = {code: parts.aggregate(code, calls).collect() for code in ("LT202", "LT301")}
    assert asked == ["LT202"]
    for code in ("LT202", "LT301"):
        assert _same(got[code], own[code]) == []


def test_the_engine_builds_both_from_one_replay_per_part(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    frame = _calls(MISTRAL).filter(pl.col("start_time") >= SINCE)
    store = Store(tmp_path / "store")
    store.append(conform(frame.lazy()).collect())
    config = Config(path=None, data={})
    catalogue = load_catalogue(config)
    window = audit_window(None, UNTIL, config)
    chosen = {code: catalogue.entries[code] for code in ("LT202", "LT301")}
    contexts = rule_contexts(catalogue, chosen, window, config)
    built: list[int] = []
    original = history_joint.joint_aggregates

    def spy(calls: pl.LazyFrame, ctxs: dict) -> tuple:
        built.append(1)
        return original(calls, ctxs)

    monkeypatch.setattr(history_joint, "joint_aggregates", spy)
    merged = {}
    for rows_per_part in (frame.height // 3, 10 * frame.height):
        job = AggregateJob(store, window, chosen, contexts, rows_per_part=rows_per_part)
        errors: list = []
        partials, _ = aggregate_locally(job, errors, lambda _: None)
        assert not errors
        merged[rows_per_part] = {
            c: r.rule.merge(partials[c], contexts[c]) for c, r in chosen.items()
        }
    assert len(built) >= 3  # one per part (the one pass runs each rule's own aggregate)
    parts, one_pass = merged.values()
    for code in chosen:
        assert _same(parts[code], one_pass[code]) == []
