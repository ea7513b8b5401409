"""LT503 agent-loop-waste: an agent repeating itself, and failed calls that were still billed.

Two signals, both per session -- the conversation, else the trace (an agent run of a framework
that sets no ``gen_ai.conversation.id``) -- both priced with the calls' own costs
(rules/LT503.yaml documents the rule for users):

* **Repeated requests.** Calls of one conversation with the same input: the same
  ``input_fingerprint`` (the whole request sent again: a retry storm, or a framework re-running
  a step), or -- for agents whose input grows every request, so no two inputs are equal --
  the same ``step_fingerprint`` after the same tool (the agent ran the same tool call and read
  the same result again: a stuck loop). A group of ``min_repeats`` or more such calls is a
  loop; every call after the group's first is waste.
* **Billed failures.** Calls that failed (``is_error``) and still carry usage, so they cost
  money (``total_cost > 0``) and gave nothing. Failures without usage cost nothing and are
  not counted.

This is distinct from LT502 (duplicate requests *across* sessions, which a response cache
would answer): LT503 looks inside one session, where a cache does not help and the fix is in
the agent's loop.

Aggregation: per (conversation, repeat key) the calls, their cost and the first call's cost
need the conversation's calls together, so the rule's ``partition_key`` is the conversation;
``aggregate`` reduces to one row per conversation (exact under that split) and ``merge``
adds rows up. ``decide`` groups the conversations by service and reports a service whose
monthly waste reaches ``min_monthly_savings_usd``, with its worst sessions as evidence. A month
is the run-rate from the service's first wasteful session to the end of the audit's data
(``runrate``): the same loops give the same monthly figure in a 7- or a 30-day window.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import polars as pl

from llmtrace.config import ConfigError
from llmtrace.rules import runrate
from llmtrace.rules.base import AuditContext, Finding, RuleParams, Severity, merge_cells
from llmtrace.rules.partition import PARTITION_ROWS, aggregate_spilled, part_count, spill_dir

CODE = "LT503"
NAME = "agent-loop-waste"

_CELL = ["service", "conversation_id"]
_SUMS = [
    "calls",
    "cost",
    "loops",
    "repeated_calls",
    "repeated_cost",
    "failed_calls",
    "failed_cost",
]
_MAXES = ["max_repeats", "last_seen"]
_MINS = ["first_seen"]


@dataclass(frozen=True)
class Params(RuleParams, code=CODE):
    """LT503's parameters (rules/LT503.yaml), overridable in the config."""

    min_repeats: int = 3
    min_monthly_savings_usd: float = 1.0
    worst_sessions: int = 5
    medium_savings_usd: float = 50.0
    high_savings_usd: float = 500.0

    def __post_init__(self) -> None:
        if self.min_repeats < 2:
            raise ConfigError(f"{CODE}: min_repeats must be at least 2")


class AgentLoopRule:
    """Repeated requests within a session, and billed failures (see the module docstring)."""

    code: ClassVar[str] = CODE
    columns: ClassVar[tuple[str, ...]] = (
        "service",
        "conversation_id",
        "trace_id",
        "start_time",
        "model",
        "input_fingerprint",
        "step_fingerprint",
        "tool",
        "is_error",
        "total_cost",
    )
    partition_key: ClassVar[pl.Expr] = pl.coalesce(
        "conversation_id", pl.concat_str(pl.lit("trace:"), "trace_id")
    ).hash(53)
    partition_family: ClassVar[str] = "session"  # partition.SHARED_KEYS, the same key
    # ...which the local engine does not use: ``aggregate`` finds the sessions that loop or
    # bill a failure in a first read of two UInt64 per call and bounds its own memory, so it
    # runs in its one pass (no share of the session spill); the Ray engine still splits by it
    bounded_memory: ClassVar[bool] = True

    def aggregate(self, calls: pl.LazyFrame, ctx: AuditContext) -> pl.LazyFrame:
        """One row per conversation: its calls and cost, loops and their waste, billed
        failures.

        Two reads of the calls instead of one heavy plan: most sessions neither loop nor bill
        a failure, so a first read takes only two UInt64 hashes and a flag per call and finds
        the sessions that do (a sort of the (session, request) hashes, not a group-by); the
        second keeps only those sessions' calls (none in the 10M demo store's window) and
        sums them exactly as before (the 10M store's three session parts: less than half the
        CPU, issue 15). The local engine runs this in one pass over the window
        (``bounded_memory``: the first read holds two UInt64 per call, 1.3 GB peak for LT503
        alone at 50M calls); when the candidate sessions hold more calls than a part should,
        they are spilled by session and summed part by part.
        """
        params = Params.from_mapping(ctx.params)
        candidates, rows = _candidate_sessions(calls, params.min_repeats)
        if not candidates.len():
            return _sessions(calls.clear(), params)
        narrowed = calls.filter(_session_id().is_in(candidates.implode()))
        if rows <= PARTITION_ROWS:
            return _sessions(narrowed, params)
        # more calls in looping sessions than a part should hold: split them by session
        with spill_dir() as directory:
            partials = aggregate_spilled(
                narrowed,
                lambda part: _sessions(part, params),
                self.partition_key,
                part_count(rows, PARTITION_ROWS),
                directory,
            )
        return pl.concat(partials).lazy()

    def merge(self, partials: list[pl.DataFrame], ctx: AuditContext) -> pl.DataFrame:
        """Concatenate and add up (exact: each conversation is in one partition)."""
        return merge_cells(partials, _CELL, sums=_SUMS, maxes=_MAXES, mins=_MINS)

    def decide(self, aggregates: pl.DataFrame, ctx: AuditContext) -> list[Finding]:
        """One finding per service whose loops and billed failures waste enough a month."""
        params = Params.from_mapping(ctx.params)
        if aggregates.is_empty():
            return []
        sessions = aggregates.with_columns(
            (pl.col("repeated_cost") + pl.col("failed_cost")).alias("waste")
        ).filter(pl.col("waste") > 0)
        services = (
            sessions.group_by("service")
            .agg(
                pl.col("waste").sum(),
                pl.col("first_seen").min(),
                pl.col("last_seen").max(),
            )
            .with_columns(runrate.basis_days("first_seen", "last_seen", ctx).alias("basis_days"))
            .with_columns(runrate.monthly("waste", "basis_days").alias("monthly"))
            .filter(pl.col("monthly") >= params.min_monthly_savings_usd)
            .sort("monthly", "service", descending=[True, False], nulls_last=True)
        )
        return [
            _finding(
                sessions.filter(pl.col("service").eq_missing(row["service"])), row, ctx, params
            )
            for row in services.iter_rows(named=True)
        ]


def _session_id() -> pl.Expr:
    """UInt64 of the session (service, conversation; else the trace), without building the
    ``trace:<id>`` string per call: a call without a conversation hashes its trace instead.
    (A conversation id spelled ``trace:<id>`` is thus no longer that trace's session.) The
    columns' own hashes, seeded apart and combined with xor, cost half a struct's hash."""
    trace = pl.when(pl.col("conversation_id").is_null()).then(pl.col("trace_id"))
    return pl.col("service").hash(61) ^ pl.col("conversation_id").hash(62) ^ trace.hash(63)


def _repeat_key() -> pl.Expr:
    """UInt64 of what makes two calls of a session the same request: the whole input, else
    the model and the step after a tool; null when the call has neither."""
    step = pl.col("tool").is_not_null() & pl.col("model").is_not_null()
    return (
        pl.when(pl.col("input_fingerprint").is_not_null())
        .then(pl.col("input_fingerprint").hash(67))
        .when(step & pl.col("step_fingerprint").is_not_null())
        .then(pl.col("model").hash(68) ^ pl.col("step_fingerprint").hash(69))
    )


def _billed_failure() -> pl.Expr:
    return pl.col("is_error").fill_null(False) & (pl.col("total_cost").fill_null(0.0) > 0)


def _candidate_sessions(calls: pl.LazyFrame, min_repeats: int) -> tuple[pl.Series, int]:
    """The sessions with a request sent ``min_repeats`` times or a billed failure, and how many
    calls they hold: a sort of one UInt64 per (session, request) finds the repeated ones (a
    value equal to the one ``min_repeats - 1`` places before it in sorted order repeats that
    often). Memory: two UInt64 per call (the session, the pair; null without a repeat key):
    0.8 GB at 50M calls by arithmetic, LT503 alone peaked at 1.3 GB over 50M calls."""
    sid = _session_id()
    repeat = _repeat_key()
    seen = calls.select(
        sid.alias("_sid"),
        pl.when(repeat.is_not_null())
        .then(pl.struct(sid.alias("_sid"), repeat.alias("_repeat")).hash(71))
        .alias("_pair"),
        _billed_failure().alias("_failed"),
    ).collect()
    pairs = seen.get_column("_pair").drop_nulls().sort()
    looping = pairs.filter((pairs == pairs.shift(min_repeats - 1)).fill_null(False)).unique()
    del pairs
    chosen = seen.filter(pl.col("_failed") | pl.col("_pair").is_in(looping.implode()))
    sessions = chosen.get_column("_sid").unique()
    rows = seen.get_column("_sid").is_in(sessions.implode()).sum() if sessions.len() else 0
    return sessions, int(rows)


def _sessions(calls: pl.LazyFrame, params: Params) -> pl.LazyFrame:
    """The per-session rows of ``calls`` (whole sessions): loops and billed failures."""
    cost = pl.col("total_cost").fill_null(0.0)
    # a call without a conversation belongs to its trace: one agent run is a session too
    session = pl.coalesce("conversation_id", pl.concat_str(pl.lit("trace:"), "trace_id"))
    base = (
        calls.with_columns(
            _session_id().alias("_sid"),
            _repeat_key().alias("_repeat"),
            cost.alias("_cost"),
        )
        .with_columns(session.alias("conversation_id"))
        .cache()  # four branches read it: computed once, not once per branch
    )
    # A loop is a request repeated min_repeats times in a session; the first call's cost
    # (arg_min per group) is the one that was not waste.
    repeats = base.filter(pl.col("_repeat").is_not_null()).select(
        "_sid", pl.struct("_sid", "_repeat").hash(71).alias("_pair"), "start_time", "_cost"
    )
    loops = (
        repeats.group_by("_pair")
        .agg(pl.len().cast(pl.Int64).alias("_n"))
        .filter(pl.col("_n") >= params.min_repeats)
    )
    first_cost = pl.col("_cost").get(pl.col("start_time").arg_min())
    groups = (
        repeats.join(loops, on="_pair", how="inner")
        .group_by("_pair")
        .agg(
            pl.col("_sid").first(),
            pl.col("_n").first(),
            (pl.col("_cost").sum() - first_cost).alias("_waste"),
        )
        .group_by("_sid")
        .agg(
            pl.len().cast(pl.Int64).alias("loops"),
            (pl.col("_n") - 1).sum().cast(pl.Int64).alias("repeated_calls"),
            pl.col("_waste").sum().alias("repeated_cost"),
            pl.col("_n").max().cast(pl.Int64).alias("max_repeats"),
        )
    )
    billed_failure = pl.col("is_error").fill_null(False) & (pl.col("_cost") > 0)
    per_session = base.group_by("_sid").agg(
        pl.len().cast(pl.Int64).alias("calls"),
        pl.col("_cost").sum().alias("cost"),
        billed_failure.sum().cast(pl.Int64).alias("failed_calls"),
        pl.col("_cost").filter(pl.col("is_error").fill_null(False)).sum().alias("failed_cost"),
        pl.col("start_time").min().alias("first_seen"),
        pl.col("start_time").max().alias("last_seen"),
        # a session's strings are the same on each of its calls (its id hashes them)
        pl.col(*_CELL).first(),
    )
    return (
        per_session.join(groups, on="_sid", how="left")
        .with_columns(
            pl.col("loops", "repeated_calls", "max_repeats").fill_null(0),
            pl.col("repeated_cost").fill_null(0.0),
        )
        .filter((pl.col("loops") > 0) | (pl.col("failed_calls") > 0))
        .select(*_CELL, *_SUMS, *_MAXES, *_MINS)
    )


RULE = AgentLoopRule()


def _severity(monthly: float, params: Params) -> Severity:
    if monthly >= params.high_savings_usd:
        return "high"
    if monthly >= params.medium_savings_usd:
        return "medium"
    return "low"


def _finding(
    group: pl.DataFrame, service_row: dict[str, Any], ctx: AuditContext, params: Params
) -> Finding:
    """The finding of one service: ``group`` its wasteful sessions, ``service_row`` their
    waste, run-rate basis and monthly figure."""
    service, waste, monthly = service_row["service"], service_row["waste"], service_row["monthly"]
    worst = group.sort("waste", descending=True).head(params.worst_sessions)
    loops = int(group["loops"].sum())
    repeated = int(group["repeated_calls"].sum())
    failed = int(group["failed_calls"].sum())
    total = float(group["cost"].sum())
    parts = []
    if loops:
        parts.append(
            f"{loops:,} loop(s) in {int((group['loops'] > 0).sum()):,} session(s) repeated "
            f"{repeated:,} request(s) with an input already sent "
            f"(${float(group['repeated_cost'].sum()):,.2f})"
        )
    if failed:
        parts.append(
            f"{failed:,} failed call(s) were billed (${float(group['failed_cost'].sum()):,.2f})"
        )
    top = worst.row(0, named=True)
    message = (
        "; ".join(parts)
        + f": {waste / total:.0%} of these sessions' ${total:,.2f} spend in the window. "
        f"Worst session {top['conversation_id']}: ${top['waste']:,.2f} wasted"
        + (f", one step repeated {top['max_repeats']}x" if top["max_repeats"] else "")
        + f". Stopping loops saves ${monthly:,.2f}/month."
    )
    evidence = {
        "sessions_affected": group.height,
        "loops": loops,
        "repeated_calls": repeated,
        "repeated_cost_usd": round(float(group["repeated_cost"].sum()), 6),
        "billed_failures": failed,
        "billed_failure_cost_usd": round(float(group["failed_cost"].sum()), 6),
        "sessions_cost_usd": round(total, 6),
        "min_repeats": params.min_repeats,
        "run_rate_basis": runrate.basis_evidence(
            service_row["first_seen"],
            service_row["last_seen"],
            service_row["basis_days"],
            int(group["calls"].sum()),
        ),
        "worst_sessions": [
            {
                "conversation_id": row["conversation_id"],
                "waste_usd": round(row["waste"], 6),
                "repeated_calls": row["repeated_calls"],
                "max_repeats": row["max_repeats"],
                "billed_failures": row["failed_calls"],
                "cost_usd": round(row["cost"], 6),
            }
            for row in worst.iter_rows(named=True)
        ],
    }
    return Finding(
        rule=CODE,
        name=NAME,
        severity=_severity(monthly, params),
        prompt=None,
        model=None,
        service=service,
        window_start=ctx.since,
        window_end=ctx.until,
        monthly_savings_usd=monthly,
        message=message,
        fix=(
            "Cap repeats in the agent loop: stop (or escalate to the user) when the same tool "
            "call returns the same result twice, bound retries with exponential backoff and a "
            "retry budget per session, and do not retry errors that will fail again "
            "(context too long, invalid request)."
        ),
        evidence=evidence,
        key={"service": service},
    )
