"""Custom rules written in YAML, without Python: Polars SQL expressions over the call record.

A team knows waste patterns no built-in rule covers ("failed calls that still cost money").
Such a rule is a filter (``where``), a group key (``group_by``) and an additive saving
(``saving``, USD over the window, scaled to a month at the run-rate of the group's days with
data, ``llmtrace.rules.runrate``), all in the SQL that ``pl.sql_expr``
understands, so it runs inside the same lazy scan as the built-in rules::

    code: X100
    name: expensive-errors
    summary: Failed calls that still cost money
    severity: low
    where: "is_error AND total_cost > 0"
    group_by: [prompt, model, service]
    saving: "SUM(total_cost)"
    min_monthly_savings_usd: 1.0
    message: "{calls} failed calls cost ${saving:.2f} in the window"
    doc: {what: ..., why: ..., fix: ...}

The file is checked when it is loaded, by running the rule on an empty call-record frame: a typo
in a column name, SQL that does not parse, a filter that is not true/false or a saving that is
not one number per group is a ``ConfigError`` naming the file and the field, before any data is
read. ``message`` is a Python format string over ``calls``, ``saving`` (window USD),
``monthly_saving`` and the ``group_by`` columns. ``saving`` must add up across partitions
(``SUM(...)``, not ``AVG(...)``) because partial results of partitions are merged by summing.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from llmtrace.config import ConfigError
from llmtrace.record import CALL_SCHEMA, empty_calls
from llmtrace.rules import runrate
from llmtrace.rules.base import AuditContext, Finding, RuleSpec
from llmtrace.rules.loader import parse_spec, read_yaml

_CUSTOM_FIELDS = frozenset({"where", "group_by", "saving", "min_monthly_savings_usd", "message"})
_FINDING_KEYS = ("prompt", "model", "service")
_GROUPABLE = (pl.String, pl.Boolean, pl.Date, pl.Int64, pl.Float64)


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _sql(data: Mapping[str, Any], name: str, source: str) -> pl.Expr:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{source}: field '{name}' must be a SQL expression string")
    try:
        return pl.sql_expr(value)
    except Exception as exc:  # polars raises several SQL error types
        raise ConfigError(f"{source}: field '{name}': {_first_line(exc)}") from None


def _group_by(data: Mapping[str, Any], source: str) -> tuple[str, ...]:
    value = data.get("group_by", list(_FINDING_KEYS))
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{source}: field 'group_by' must be a list of call-record fields")
    for column in value:
        if column not in CALL_SCHEMA:
            raise ConfigError(f"{source}: field 'group_by': {column!r} is not a call-record field")
        if not isinstance(CALL_SCHEMA[column], _GROUPABLE):
            raise ConfigError(
                f"{source}: field 'group_by': {column!r} is a {CALL_SCHEMA[column]}, "
                "not a value to group by"
            )
    return tuple(value)


@dataclass(frozen=True)
class CustomRule:
    """A YAML rule: filter, group, sum a saving; follows the ``Rule`` protocol."""

    code: str
    name: str
    severity: str
    where: pl.Expr
    group_by: tuple[str, ...]
    saving: pl.Expr
    message: str
    fix: str
    columns: tuple[str, ...]

    def aggregate(self, calls: pl.LazyFrame, ctx: AuditContext) -> pl.LazyFrame:
        """Window saving and call count per group of the calls that match ``where``."""
        return (
            calls.filter(self.where)
            .group_by(list(self.group_by))
            .agg(
                pl.len().cast(pl.Int64).alias("calls"),
                self.saving.cast(pl.Float64).alias("saving"),
                pl.col("start_time").min().alias("first_call"),
                pl.col("start_time").max().alias("last_call"),
            )
        )

    def merge(self, partials: list[pl.DataFrame], ctx: AuditContext) -> pl.DataFrame:
        """Sum partitions' counts and savings per group (savings must be additive)."""
        if len(partials) == 1:
            return partials[0]
        return (
            pl.concat(partials)
            .group_by(list(self.group_by))
            .agg(
                pl.col("calls").sum(),
                pl.col("saving").sum(),
                pl.col("first_call").min(),
                pl.col("last_call").max(),
            )
        )

    def decide(self, aggregates: pl.DataFrame, ctx: AuditContext) -> list[Finding]:
        """One finding per group whose monthly saving reaches ``min_monthly_savings_usd``."""
        floor = float(ctx.params.get("min_monthly_savings_usd", 0.0))
        kept = (
            aggregates.with_columns(
                runrate.basis_days("first_call", "last_call", ctx).alias("basis_days")
            )
            .with_columns(
                runrate.monthly(pl.col("saving").fill_null(0.0), "basis_days").alias("monthly")
            )
            .filter(pl.col("monthly") >= floor, pl.col("calls") > 0)
            .sort("monthly", descending=True)
        )
        return [self._finding(row, ctx) for row in kept.iter_rows(named=True)]

    def _finding(self, row: dict[str, Any], ctx: AuditContext) -> Finding:
        key = {column: _plain(row[column]) for column in self.group_by}
        values = {**key, "calls": row["calls"], "saving": row["saving"] or 0.0}
        values["monthly_saving"] = row["monthly"]
        return Finding(
            rule=self.code,
            name=self.name,
            severity=self.severity,  # type: ignore[arg-type]
            prompt=key.get("prompt"),
            model=key.get("model"),
            service=key.get("service"),
            window_start=ctx.since,
            window_end=ctx.until,
            monthly_savings_usd=float(row["monthly"]),
            message=self.message.format(**values),
            fix=self.fix,
            evidence={
                "calls": row["calls"],
                "window_saving_usd": values["saving"],
                "run_rate_basis": runrate.basis_evidence(
                    row["first_call"], row["last_call"], row["basis_days"], row["calls"]
                ),
            },
            key=key,
        )


def _plain(value: Any) -> Any:
    """A group value as JSON can carry it (dates as ISO text)."""
    return value.isoformat() if hasattr(value, "isoformat") else value


def _check_on_empty(rule: CustomRule, source: str) -> None:
    """Run the rule on an empty call-record frame so bad SQL fails now, naming its field."""
    empty = empty_calls().lazy()
    try:
        where_type = empty.select(rule.where.alias("w")).collect_schema()["w"]
    except Exception as exc:
        raise ConfigError(f"{source}: field 'where': {_first_line(exc)}") from None
    if where_type != pl.Boolean:
        raise ConfigError(f"{source}: field 'where' must be true/false per call, not {where_type}")
    try:
        saving = empty.group_by(list(rule.group_by)).agg(rule.saving.alias("s")).collect()
    except Exception as exc:
        raise ConfigError(f"{source}: field 'saving': {_first_line(exc)}") from None
    if not saving.schema["s"].is_numeric():
        raise ConfigError(
            f"{source}: field 'saving' must aggregate to one number per group "
            f"(e.g. SUM(total_cost)), not {saving.schema['s']}"
        )
    sample = dict.fromkeys(rule.group_by, "x") | {"calls": 1, "saving": 1.0, "monthly_saving": 1.0}
    try:
        rule.message.format(**sample)
    except (KeyError, IndexError, ValueError) as exc:
        known = ", ".join(sorted(sample))
        raise ConfigError(
            f"{source}: field 'message': cannot format {exc!s} (fields: {known})"
        ) from None


def load_custom_rule(path: Path) -> tuple[RuleSpec, CustomRule]:
    """Read and check one custom rule file; every problem is a ConfigError naming path and field."""
    source = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{source}: cannot read: {exc.strerror}") from None
    data = read_yaml(text, source)
    if "params" in data:
        raise ConfigError(f"{source}: custom rules take 'min_monthly_savings_usd', not 'params'")
    floor = data.get("min_monthly_savings_usd", 0.0)
    if isinstance(floor, bool) or not isinstance(floor, int | float) or not math.isfinite(floor):
        raise ConfigError(f"{source}: field 'min_monthly_savings_usd' must be a number")
    if floor < 0:
        raise ConfigError(f"{source}: field 'min_monthly_savings_usd' must not be negative")
    spec = parse_spec(
        {**data, "params": {"min_monthly_savings_usd": float(floor)}},
        source,
        extra_fields=_CUSTOM_FIELDS,
    )
    where = _sql(data, "where", source)
    saving = _sql(data, "saving", source)
    group_by = _group_by(data, source)
    message = data.get("message", "{calls} calls, ${saving:.2f} in the window")
    if not isinstance(message, str):
        raise ConfigError(f"{source}: field 'message' must be a string")
    columns = {*group_by, *where.meta.root_names(), *saving.meta.root_names(), "start_time"}
    rule = CustomRule(
        code=spec.code,
        name=spec.name,
        severity=spec.default_severity,
        where=where,
        group_by=group_by,
        saving=saving,
        message=message,
        fix=spec.doc.fix,
        columns=tuple(sorted(c for c in columns if c in CALL_SCHEMA)),
    )
    _check_on_empty(rule, source)
    return spec, rule
