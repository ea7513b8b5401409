"""OpenAI Codex CLI rollouts (``~/.codex/sessions/YYYY/MM/DD/rollout-*.jsonl``) as call records.

What a rollout holds (checked against openai/codex ``codex-rs/protocol`` -- ``TokenUsage`` and
``TokenUsageInfo`` -- and the tools that read these files: ccusage's ``apps/codex`` notes,
ccusage issues #897, #988, #1175, #1349 and CodexBar PR #627 on forked sessions):

* ``session_meta`` (``payload.id``: the session; ``payload.cwd``), ``turn_context`` (the
  ``model`` and reasoning ``effort`` in force from then on), ``response_item`` (messages, and
  the ``function_call`` / ``custom_tool_call`` / ``local_shell_call`` items with their
  outputs), ``event_msg`` (``user_message`` starts a turn; ``token_count`` reports usage).
* ``token_count``'s ``info`` holds ``total_token_usage`` (running totals of the session) and
  ``last_token_usage`` (the request just finished), each with ``input_tokens`` (cached input
  *included*), ``cached_input_tokens``, ``output_tokens`` (reasoning *included*: codex's
  ``blended_total`` is non-cached input + output), ``reasoning_output_tokens`` and
  ``total_tokens``; newer versions add ``cache_write_input_tokens``. The same event is
  re-emitted unchanged (and the first often has ``info: null``), so **a request is an
  increase of the running totals**: an event whose totals equal the previous ones is the
  same request again and is skipped. Its usage is ``last_token_usage``; an event without it
  uses the increase of the totals. These are already the record's inclusive counts.
* A forked or subagent rollout starts with the parent's history copied in (a second
  ``session_meta`` and the parent's ``token_count`` events, timestamped at the fork): each
  request's key is the session whose ``session_meta`` was last seen plus its running totals,
  so a copied event has the key of the original and is counted once, in the original's
  session, whichever file is read first (the earlier start wins within a run).

A turn (``user_message``) is the record's trace, of the action ``codex turn``; the session is
the conversation, the ``cwd``'s folder the service, ``reasoning_effort`` the turn's effort,
``tool`` the tool call whose output the request consumed. Requests are priced at their own
``timestamp``. No content is stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import polars as pl

from llmtrace.fingerprint import step_fingerprint as fingerprint
from llmtrace.importers import ImportProblem
from llmtrace.importers.transcript_files import FileRead, count, hex_id

SOURCE = "codex"
DEFAULT_PATH = "~/.codex/sessions"
PATTERN = "rollout-*.jsonl"
ACTION = "codex turn"
AGENT = "codex"
DIALECT = "codex-rollout"
STATE = "import-codex"

_FIELDS = (
    "input_tokens",
    "cached_input_tokens",
    "cache_write_input_tokens",
    "output_tokens",
    "reasoning_output_tokens",
)
_TOOL_ITEMS = {"function_call", "custom_tool_call", "local_shell_call"}
_TOOL_OUTPUTS = {"function_call_output", "custom_tool_call_output"}

_ROW_SCHEMA = {
    "_line": pl.Int64,
    "span_id": pl.String,
    "trace_id": pl.String,
    "session": pl.String,
    "ts": pl.String,
    "model": pl.String,
    "effort": pl.String,
    "cwd": pl.String,
    "input": pl.Int64,
    "cached": pl.Int64,
    "written": pl.Int64,
    "output": pl.Int64,
    "reasoning": pl.Int64,
    "tool": pl.String,
    "step": pl.String,
}


def parse(
    read: FileRead, carry: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[ImportProblem]]:
    """One row per request in the file's new lines. ``carry`` is the file's state between
    runs (session, model, effort, cwd, turn, running totals, pending tool) and is updated."""
    path = str(read.path)
    rows: list[dict[str, Any]] = []
    problems: list[ImportProblem] = []
    calls: dict[str, tuple[str, Any]] = carry.setdefault("calls", {})
    for line in read.lines:
        obj = line.obj
        kind = obj.get("type")
        payload = obj.get("payload")
        if kind not in ("session_meta", "turn_context", "event_msg", "response_item"):
            continue
        if not isinstance(payload, dict):
            problems.append(ImportProblem(path, line.number, None, "field 'payload' missing"))
            continue
        if kind == "session_meta":
            sid = payload.get("id")
            if isinstance(sid, str):
                carry.setdefault("conversation", sid)
                carry["session"] = sid
            if isinstance(payload.get("cwd"), str):
                carry.setdefault("cwd", payload["cwd"])
            continue
        if kind == "turn_context":
            for name, key in (("model", "model"), ("effort", "effort"), ("cwd", "cwd")):
                if isinstance(payload.get(name), str):
                    carry[key] = payload[name]
            continue
        item = payload.get("type")
        if kind == "response_item":
            if item in _TOOL_ITEMS:
                name = "shell" if item == "local_shell_call" else str(payload.get("name"))
                call_id = str(payload.get("call_id") or payload.get("id"))
                calls[call_id] = (name, payload.get("arguments") or payload.get("input"))
                carry["tool"] = name
            elif item in _TOOL_OUTPUTS:
                name, arguments = calls.pop(str(payload.get("call_id")), (None, None))
                carry["step"] = fingerprint("tool", name, arguments, payload.get("output"))
            continue
        if item == "user_message":
            message = payload.get("message")
            carry["turn"] = hex_id(
                f"{SOURCE}/{carry.get('conversation')}/{obj.get('timestamp')}", 32
            )
            carry["step"] = fingerprint("prompt", message)
            carry.pop("tool", None)
            continue
        if item != "token_count":
            continue
        info = payload.get("info")
        if info is None:
            continue
        try:
            total = _usage(info.get("total_token_usage"))
            last = _usage(info.get("last_token_usage"))
        except (ValueError, AttributeError) as exc:
            problems.append(ImportProblem(path, line.number, None, f"field 'info': {exc}"))
            continue
        previous = carry.get("total")
        if total is not None and total == previous:
            continue  # the same request reported again
        if last is None:
            if total is None:
                problems.append(ImportProblem(path, line.number, None, "token_count without usage"))
                continue
            base = previous or dict.fromkeys(_FIELDS, 0)
            last = {k: (total[k] or 0) - (base.get(k) or 0) for k in _FIELDS}
        carry["total"] = total
        timestamp = obj.get("timestamp")
        if not isinstance(timestamp, str):
            problems.append(ImportProblem(path, line.number, None, "field 'timestamp' missing"))
            continue
        session = carry.get("session") or read.path.stem
        conversation = carry.get("conversation") or session
        identity = f"{session}/{sorted((total or last).items())}"
        rows.append(
            {
                "_line": line.number,
                "span_id": hex_id(f"{SOURCE}/{identity}", 16),
                "trace_id": carry.get("turn") or hex_id(f"{SOURCE}/{conversation}/start", 32),
                "session": conversation,
                "ts": timestamp,
                "model": carry.get("model"),
                "effort": carry.get("effort"),
                "cwd": carry.get("cwd"),
                "input": last["input_tokens"],
                "cached": last["cached_input_tokens"],
                "written": last["cache_write_input_tokens"],
                "output": last["output_tokens"],
                "reasoning": last["reasoning_output_tokens"],
                "tool": carry.pop("tool", None),
                "step": carry.pop("step", None),
            }
        )
    if len(calls) > 256:  # calls whose output never came: keep the state small
        for stale in list(calls)[:-256]:
            del calls[stale]
    return rows, problems


def _usage(value: Any) -> dict[str, int | None] | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ValueError(f"not a usage object: {type(value).__name__}")
    return {name: count(value.get(name)) for name in _FIELDS}


def to_calls(rows: Sequence[dict[str, Any]]) -> pl.DataFrame:
    """Call records (not yet priced), one per request; copies of one request (a forked
    rollout's replayed history) collapse to the earliest."""
    frame = pl.DataFrame(list(rows), schema=_ROW_SCHEMA)
    if frame.is_empty():
        return pl.DataFrame()
    at = pl.col("ts").str.to_datetime(time_zone="UTC", time_unit="us", strict=False)
    frame = (
        frame.with_columns(at.alias("start_time"))
        .filter(pl.col("start_time").is_not_null())
        .sort("start_time")
        .unique("span_id", keep="first", maintain_order=True)
    )
    project = pl.col("cwd").str.replace(r"[/\\]+$", "").str.extract(r"([^/\\]+)$")
    return frame.select(
        "trace_id",
        "span_id",
        pl.lit(SOURCE).alias("source"),
        pl.lit(DIALECT).alias("dialect"),
        project.alias("service"),
        pl.lit("openai").alias("provider"),
        pl.col("model"),
        pl.col("model").alias("request_model"),
        pl.lit("chat").alias("operation"),
        pl.lit(ACTION).alias("action"),
        pl.col("session").alias("conversation_id"),
        pl.col("effort").alias("reasoning_effort"),
        "start_time",
        pl.col("start_time").alias("end_time"),
        pl.lit(False).alias("is_error"),
        pl.col("input").alias("input_tokens"),
        pl.col("cached").alias("cache_read_tokens"),
        pl.col("written").alias("cache_write_tokens"),
        pl.col("output").alias("output_tokens"),
        pl.col("reasoning").alias("reasoning_tokens"),
        pl.lit(AGENT).alias("agent"),
        "tool",
        pl.col("step").alias("step_fingerprint"),
    )
