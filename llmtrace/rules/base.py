"""The contract every audit rule follows: a mergeable ``aggregate`` step and a ``decide`` step.

Why two steps: ``aggregate`` is a lazy Polars query that reduces call records to small partial
aggregates per key and window (counts, sums, sums of squares, histograms). Partials of different
partitions of the store merge with ``merge``, so the same rule runs on one machine or on a cluster
(issue 7: Ray tasks over partitions). ``decide`` then runs once, on the small merged table, and
applies the statistics and thresholds that turn numbers into findings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any, ClassVar, Literal, Protocol, Self, get_origin, get_type_hints

import polars as pl

from llmtrace.accuracy import DEFAULT_CATEGORIES, AccuracyConfig
from llmtrace.config import ConfigError

Severity = Literal["info", "low", "medium", "high"]
SEVERITIES: tuple[Severity, ...] = ("info", "low", "medium", "high")


@dataclass(frozen=True)
class RuleDoc:
    """A rule's documentation, written like a ruff rule page (from rules/<CODE>.yaml)."""

    what: str
    why: str
    fix: str
    example: str = ""


@dataclass(frozen=True)
class RuleSpec:
    """What rules/<CODE>.yaml declares: identity, default parameters and documentation."""

    code: str
    name: str
    summary: str
    params: Mapping[str, Any]
    doc: RuleDoc
    default_severity: Severity = "medium"


class RuleParams:
    """Base of a built-in rule's parameters: a frozen dataclass read with ``from_mapping``.

    Why one reader: every rule gets its parameters as a plain mapping (rules/<CODE>.yaml's
    defaults overlaid by ``[rules.<CODE>]``) and must turn it into typed values with an error
    naming the rule and the parameter, never a traceback deep in ``decide``. The engine has
    already checked each value against the YAML default's type; this is the rule's own, last
    check, and the one place that knows how a field's annotation reads a value:

    * ``int`` / ``float``: a number >= 0 (every rule parameter is a count, share, size, time
      or amount of money), cast to the field's type;
    * ``tuple[str, ...]``: a list of names, or one comma-separated string.

    A rule declares its code in the class statement and checks combinations of values in
    ``__post_init__`` (also run when a test builds the dataclass directly)::

        @dataclass(frozen=True)
        class Params(RuleParams, code=CODE):
            min_calls: int = 20
    """

    code: ClassVar[str]

    def __init_subclass__(cls, *, code: str = "", **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if code:
            cls.code = code

    @classmethod
    def from_mapping(cls, params: Mapping[str, Any] | None) -> Self:
        """The known parameters of ``params``, checked and typed; others are ignored."""
        params = params or {}
        hints = get_type_hints(cls)
        values = {
            f.name: cls._read(f.name, hints[f.name], params[f.name])
            for f in fields(cls)  # type: ignore[arg-type]
            if f.name in params
        }
        return cls(**values)

    @classmethod
    def _read(cls, name: str, kind: Any, raw: Any) -> Any:
        if get_origin(kind) is tuple:
            items = raw.split(",") if isinstance(raw, str) else raw
            if not isinstance(items, list | tuple) or not all(isinstance(i, str) for i in items):
                raise ConfigError(f"{cls.code}: parameter {name} must be a list of names")
            return tuple(i.strip() for i in items if i.strip())
        if isinstance(raw, bool) or not isinstance(raw, int | float) or raw < 0:
            raise ConfigError(f"{cls.code}: parameter {name} must be a number >= 0, not {raw!r}")
        return int(raw) if kind is int else float(raw)


@dataclass(frozen=True)
class AuditContext:
    """Everything a rule needs besides the calls, decided once per audit run.

    ``since``/``until`` bound the current window; ``baseline_since``/``baseline_until`` the
    window it is compared with (by default the preceding window of the same length).
    ``params`` are the rule's defaults overlaid with the user's configuration.
    ``accuracy_scores`` are the score names the config's ``[accuracy] names`` chose (empty:
    use each call's stored ``accuracy``), ``accuracy_categories`` its label values; together
    they are ``accuracy`` (``llmtrace.accuracy``), which recomputes accuracy from ``scores``.
    ``price`` prices counterfactual call records exactly like real ones
    (``llmtrace.pricing.price_calls`` bound to the run's price book), so savings use the same
    rates, tiers and cache prices as the costs the user sees.
    """

    since: datetime
    until: datetime
    baseline_since: datetime
    baseline_until: datetime
    params: Mapping[str, Any]
    accuracy_scores: tuple[str, ...]
    price: Callable[[pl.DataFrame | pl.LazyFrame], pl.DataFrame]
    accuracy_categories: Mapping[str, float] = field(
        default_factory=lambda: dict(DEFAULT_CATEGORIES)
    )
    # the last call of the current window (any key), set before ``decide``: where run-rates
    # end (``llmtrace.rules.runrate``); None: each key's own last call
    data_until: datetime | None = None

    @property
    def accuracy(self) -> AccuracyConfig:
        """The accuracy settings of this run, for ``AccuracyConfig.from_scores``."""
        return AccuracyConfig(frozenset(self.accuracy_scores), self.accuracy_categories)

    @property
    def window_days(self) -> float:
        """The current window's length: the most a run-rate's basis can be. A monthly figure
        is never ``amount * 30 / window_days`` (that dilutes a key that ran part of the window):
        rules scale with ``llmtrace.rules.runrate``."""
        return (self.until - self.since).total_seconds() / 86400.0


@dataclass
class Finding:
    """One finding: what was found, for which key, the numbers behind it, and what it saves."""

    rule: str
    name: str
    severity: Severity
    prompt: str | None
    model: str | None
    service: str | None
    window_start: datetime
    window_end: datetime
    monthly_savings_usd: float
    message: str
    fix: str
    evidence: dict[str, Any] = field(default_factory=dict)
    key: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The JSON shape: stable field names, ISO times, savings rounded to cents' hundredths."""
        return {
            "rule": self.rule,
            "name": self.name,
            "severity": self.severity,
            "prompt": self.prompt,
            "model": self.model,
            "service": self.service,
            "window": {"start": self.window_start.isoformat(), "end": self.window_end.isoformat()},
            "monthly_savings_usd": round(self.monthly_savings_usd, 4),
            "message": self.message,
            "fix": self.fix,
            "evidence": self.evidence,
            "key": self.key,
        }


class Rule(Protocol):
    """A built-in rule module exposes one object following this protocol."""

    code: ClassVar[str]
    # Columns of the call record that aggregate() reads: the engine selects only these, so
    # scans read as little of the store as possible. A rule may instead define
    # ``columns_for(ctx) -> tuple[str, ...]`` when the columns depend on its parameters.
    columns: ClassVar[tuple[str, ...]]
    # Optional ``needs_baseline: ClassVar[bool] = True``: the rule also receives the baseline
    # window's calls (LT101 compares windows); by default a rule sees the current window only.
    # Optional ``partition_key`` (an expression, or ``partition_key(ctx)``): the rule needs the
    # calls of each key together, so big windows run in parts split by it; and optional
    # ``partition_family``: a name in ``partition.SHARED_KEYS`` whose key keeps the rule's
    # groups whole too, so rules of one family share one spill of their calls.
    # Optional ``bounded_memory: ClassVar[bool] = True``: ``aggregate`` bounds its own memory
    # over any number of calls (it narrows to the few calls that need each other first), so
    # the local engine runs it in one pass, without parts, despite its ``partition_key``.
    # Optional ``part_rows`` (an expression) with ``aggregate_unparted(calls, ctx)``: only the
    # calls it marks need their key's part; the others merge under any split, and when the
    # rule's family spills alone they are not spilled but given to ``aggregate_unparted``, a
    # day at a time (``partition.Unparted``: LT202's and LT301's calls outside conversations).
    # Optional ``categorical_columns``: string columns ``aggregate`` only tests, hashes, groups
    # by and names; a spill whose every rule lists one writes it as ``pl.Categorical`` (its
    # Parquet encoding and decoding cost less than a string's), and ``aggregate`` gives such a
    # column back as ``pl.String`` in its result (LT201's and LT203's names, at many parts).

    def aggregate(self, calls: pl.LazyFrame, ctx: AuditContext) -> pl.LazyFrame:
        """Partial aggregates for one partition of the calls (mergeable across partitions)."""
        ...

    def merge(self, partials: list[pl.DataFrame], ctx: AuditContext) -> pl.DataFrame:
        """Combine partial aggregates of several partitions into one table."""
        ...

    def decide(self, aggregates: pl.DataFrame, ctx: AuditContext) -> list[Finding]:
        """Statistics and thresholds on the merged table; returns findings."""
        ...

    # Optional: ``coverage(aggregates, ctx, census, findings) -> pl.DataFrame`` with one row per
    # (prompt, model, service) the rule applies to and a ``reason`` (null: judged; else why not:
    # "too few calls", "no baseline", "no labels", ...). ``census`` has, per key of the window,
    # ``calls``, ``provider``, ``fingerprinted``, ``in_conversations``, ``with_reasoning``,
    # ``with_input``, ``first_call``, ``last_call``. The audit summary tells "checked, no waste"
    # from "not judged" with it.


COVERAGE_SCHEMA: dict[str, pl.DataType] = {
    "prompt": pl.String(),
    "model": pl.String(),
    "service": pl.String(),
    "reason": pl.String(),
}


def coverage_rows(census: pl.DataFrame, applies: pl.Expr, reason: pl.Expr) -> pl.DataFrame:
    """Coverage rows for the census keys where ``applies``, with ``reason`` (null: judged)."""
    if census.height == 0:
        return pl.DataFrame(schema=COVERAGE_SCHEMA)
    return (
        census.filter(applies)
        .select("prompt", "model", "service", reason.cast(pl.String).alias("reason"))
        .cast(COVERAGE_SCHEMA)  # type: ignore[arg-type]
    )


def merge_cells(
    partials: list[pl.DataFrame],
    cell: Sequence[str],
    *,
    sums: Sequence[str] = (),
    maxes: Sequence[str] = (),
    mins: Sequence[str] = (),
) -> pl.DataFrame:
    """Merge partial cell tables of several partitions: sums add, maxima and minima combine.

    The ``merge`` of every rule whose partials are plain per-cell sums, maxima and minima
    (exact when the partitions split the rule's key, approximate at the edges otherwise).
    """
    if not partials:
        return pl.DataFrame()
    return (
        pl.concat(partials, how="vertical_relaxed")
        .group_by(*cell)
        .agg(
            *(pl.col(c).sum() for c in sums),
            *(pl.col(c).max() for c in maxes),
            *(pl.col(c).min() for c in mins),
        )
    )


def worth_reporting(table: pl.DataFrame, min_monthly_savings_usd: float) -> pl.DataFrame:
    """The rows of a rule's evaluated table that become findings: eligible and saving at least
    the floor, largest saving first."""
    if table.height == 0:
        return table
    return table.filter(
        pl.col("eligible") & (pl.col("monthly_savings_usd") >= min_monthly_savings_usd)
    ).sort("monthly_savings_usd", descending=True)
