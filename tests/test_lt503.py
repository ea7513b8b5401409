"""LT503 agent-loop-waste: loops and billed failures inside one session, priced per month."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pytest

from llmtrace.config import ConfigError
from llmtrace.pricing import PriceBook, price_calls
from llmtrace.rules.base import AuditContext
from llmtrace.rules.engine import run_audit
from llmtrace.rules.lt503_agent_loops import RULE

BOOK = PriceBook()
SINCE = datetime(2026, 11, 1, tzinfo=UTC)


def context(**params: Any) -> AuditContext:
    return AuditContext(
        since=SINCE,
        until=SINCE + timedelta(days=1),
        baseline_since=SINCE - timedelta(days=1),
        baseline_until=SINCE,
        params=params,
        accuracy_scores=(),
        price=lambda frame: price_calls(frame, BOOK),
    )


def session(name: str, steps: list[tuple[str | None, str | None, str | None]], **extra) -> list:
    """Calls of one session: (tool, step fingerprint, input fingerprint) per call, a minute
    apart, each with a growing input (as an agent's history grows)."""
    rows = []
    for i, (tool, step, whole) in enumerate(steps):
        rows.append(
            {
                "trace_id": f"{name:0>32}"[-32:],
                "span_id": f"{i:016x}",
                "service": "shop",
                "conversation_id": name,
                "provider": "anthropic",
                "model": "claude-sonnet-4-5",
                "start_time": SINCE + timedelta(hours=1, minutes=i),
                "input_tokens": 20_000 + 1_000 * i,
                "output_tokens": 200,
                "tool": tool,
                "step_fingerprint": step,
                "input_fingerprint": whole,
                **extra,
            }
        )
    return rows


def priced(rows: list[dict]) -> pl.DataFrame:
    return price_calls(pl.DataFrame(rows, infer_schema_length=None), BOOK)


def decide(calls: pl.DataFrame, **params: Any):
    ctx = context(**params)
    return RULE.decide(RULE.merge([RULE.aggregate(calls.lazy(), ctx).collect()], ctx), ctx)


def test_stuck_loop_is_found_and_priced_per_month():
    loop = [("Read", "r1", None), ("Edit", "e1", None)] + [("Bash", "pytest-fails", None)] * 9
    calls = priced(session("stuck", loop))
    (finding,) = decide(calls)
    costs = calls.sort("start_time")["total_cost"].to_list()
    waste = sum(costs[3:])  # the 8 repeats after the first failing run
    assert finding.rule == "LT503" and finding.service == "shop"
    assert finding.evidence["repeated_calls"] == 8
    assert finding.evidence["repeated_cost_usd"] == pytest.approx(waste, abs=1e-6)
    assert finding.monthly_savings_usd == pytest.approx(waste * 30, rel=1e-9)  # 1-day window
    (worst,) = finding.evidence["worst_sessions"]
    assert worst["conversation_id"] == "stuck" and worst["max_repeats"] == 9


def test_clean_and_near_miss_sessions_give_nothing():
    typed_twice = [(None, "p-continue", None)] * 4  # a user typing "continue": not a loop
    rerun_once = [("Bash", "pytest-fails", None)] * 2 + [("Edit", "e1", None)]  # below 3
    varied = [("Bash", f"s{i}", None) for i in range(12)]
    calls = priced(
        session("typed", typed_twice) + session("rerun", rerun_once) + session("ok", varied)
    )
    assert decide(calls) == []


def test_retry_storm_by_whole_input_and_billed_failures():
    storm = priced(session("storm", [(None, None, "same-request")] * 5))
    failed = priced(session("failing", [("Bash", f"x{i}", None) for i in range(3)], is_error=True))
    unbilled = priced(session("unbilled", [("Bash", "y", None)], is_error=True)).with_columns(
        pl.lit(None, dtype=pl.Float64).alias("total_cost")
    )
    (finding,) = decide(pl.concat([storm, failed, unbilled], how="vertical_relaxed"))
    assert finding.evidence["repeated_calls"] == 4
    assert finding.evidence["billed_failures"] == 3
    assert finding.evidence["billed_failure_cost_usd"] == pytest.approx(
        failed["total_cost"].sum(), abs=1e-9
    )
    worst = [s["conversation_id"] for s in finding.evidence["worst_sessions"]]
    assert set(worst) == {"storm", "failing"}


def test_runs_in_the_audit_and_rejects_bad_parameters():
    loop = [("Bash", "pytest-fails", None)] * 6
    calls = priced(session("stuck", loop)).lazy()
    result = run_audit(
        calls, since=SINCE, until=SINCE + timedelta(days=1), select=["LT503"], price_book=BOOK
    )
    assert [f.rule for f in result.findings] == ["LT503"]
    with pytest.raises(ConfigError):
        decide(priced(session("stuck", loop)), min_repeats=1)


def test_demo_transcripts_plant_one_loop_and_a_clean_near_miss(tmp_path):
    """The demo's coding-agent workload, imported as a user's transcripts: LT503 reports the
    planted stuck session and none of the others (the near-miss reran a test once and had a
    user type "continue" three times)."""
    from llmtrace import demo_agents
    from llmtrace.importers.agent_transcripts import import_transcripts, transcript_files
    from llmtrace.store import Store

    end = datetime(2026, 11, 30, tzinfo=UTC)
    folders = demo_agents.write_transcripts(tmp_path / "t", end=end, days=7, seed=3)
    store = Store(tmp_path / "store")
    for source, folder in folders.items():
        result = import_transcripts(
            source, transcript_files(source, [folder]), store, BOOK, settle_seconds=0
        )
        assert result.problems == [] and result.added > 0
    found = run_audit(
        store, since=end - timedelta(days=7), until=end, select=["LT503"], price_book=BOOK
    )
    (finding,) = found.findings
    sessions = [s["conversation_id"] for s in finding.evidence["worst_sessions"]]
    assert sessions == [demo_agents.LOOP_SESSION]
    assert finding.evidence["repeated_calls"] == 8
    calls = store.scan().collect()
    assert demo_agents.NEAR_MISS_SESSION in set(calls["conversation_id"])
    assert (calls.filter(pl.col("agent") == "claude-code:subagent").height) > 0


def test_a_loop_of_exactly_min_repeats_calls_counts_one_fewer_does_not():
    """The edge of ``min_repeats``, in a session of the demo's shape (a trace, no
    conversation), beside sessions sent once each: the first read's sort must find the loop
    however many other requests there are."""
    three = [r | {"conversation_id": None} for r in session("t3", [("Bash", "same", None)] * 3)]
    two = [r | {"conversation_id": None} for r in session("t2", [("Bash", "again", None)] * 2)]
    once = [r for i in range(40) for r in session(f"u{i}", [(None, None, f"req-{i}")])]
    (finding,) = decide(priced(three + two + once))
    assert finding.evidence["loops"] == 1 and finding.evidence["repeated_calls"] == 2
    (worst,) = finding.evidence["worst_sessions"]
    assert worst["conversation_id"] == f"trace:{'t3':0>32}" and worst["max_repeats"] == 3
    (finding,) = decide(priced(three + two + once), min_repeats=2)
    assert finding.evidence["loops"] == 2 and finding.evidence["sessions_affected"] == 2


def test_looping_sessions_spilled_by_session_give_the_same_rows(monkeypatch):
    """The local engine runs LT503 in one pass (``bounded_memory``); when the sessions that loop
    or bill a failure hold more calls than a part should, they are spilled by session and
    aggregated part by part: the same rows, session by session, as without the spill."""
    from llmtrace.rules import lt503_agent_loops
    from llmtrace.rules.partition import aggregate_spilled

    rows = session("typed", [(None, "p-continue", None)] * 4)
    for i in range(12):
        rows += session(f"stuck-{i}", [("Read", "r1", None)] + [("Bash", f"fails-{i}", None)] * 4)
        rows += session(f"storm-{i}", [(None, None, f"same-{i % 3}")] * 3)
        rows += session(f"failing-{i}", [("Bash", f"x{j}", None) for j in range(2)], is_error=True)
        # agent runs without a conversation: the trace is the session
        trace = session(f"run-{i}", [("Bash", "again", None)] * 3, conversation_id=None)
        rows += trace
    calls = priced(rows).lazy()
    ctx = context()
    assert RULE.bounded_memory is True

    def collected() -> pl.DataFrame:
        out = RULE.aggregate(calls, ctx).collect()
        return out.sort("service", "conversation_id")

    whole = collected()
    spilled: list[int] = []

    def spill(*args: object, **kwargs: object) -> list[pl.DataFrame]:
        spilled.append(1)
        return aggregate_spilled(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(lt503_agent_loops, "PARTITION_ROWS", 20)
    monkeypatch.setattr(lt503_agent_loops, "aggregate_spilled", spill)
    parted = collected()
    assert spilled, "the looping sessions' calls should exceed 20"
    assert whole.height == 48  # 12 of each kind: every looping or failing session, once
    assert whole.select(pl.col("loops").sum()).item() == 36
    from polars.testing import assert_frame_equal

    assert_frame_equal(parted, whole)
