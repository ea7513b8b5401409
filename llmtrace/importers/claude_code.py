"""Claude Code transcripts (``~/.claude/projects/<project>/<session>.jsonl``) as call records.

Every model request Claude Code made becomes one call record, priced like any other. What the
files hold, and what this module does with it (shapes checked against public issues and the
tools that read these files: ccusage issues #313, #797, #806, #866, #901, #938, #976 on
streamed entries, missing request ids and subagent files; claude-code-log PR #80 on the
``<session>/subagents/`` layout; the public fixtures of marot/spotter and OthmanAdi/margin):

* **One request, several entries.** A streamed response is written as one ``assistant`` entry
  per content block, all with the same ``message.id`` and ``requestId``; early entries can carry
  a partial ``output_tokens``. The entries are merged by (message id, request id) -- the
  message id alone when the request id is missing -- keeping the entry with the largest output
  count (the final one), so a request counts once with its full output.
* **Usage is exclusive.** Anthropic's ``input_tokens`` excludes ``cache_read_input_tokens`` and
  ``cache_creation_input_tokens``; the record's ``input_tokens`` is their sum. Cache writes are
  split by lifetime in ``cache_creation`` (``ephemeral_5m_input_tokens``,
  ``ephemeral_1h_input_tokens``): the 1-hour part becomes ``cache_write_1h_tokens`` and is
  priced at the 1-hour rate (2x input, against 1.25x for 5 minutes). ``service_tier`` is kept
  where the record has the field.
* **Subagents belong to their session.** Subagent runs are written to
  ``<session>/subagents/agent-<id>.jsonl`` (older versions: ``agent-<id>.jsonl`` beside the
  session) with ``isSidechain: true`` and the parent's ``sessionId``; their requests are read
  with the session's, get ``agent = "claude-code:subagent"`` and belong to the parent's turn
  that was running when they started. ``progress`` entries (parents' copies of subagent
  entries) and ``toolUseResult.usage`` repeat usage already counted and are ignored, as are
  ``<synthetic>`` entries (Claude Code's own messages, zero usage).
* **Units of work.** The session is the conversation (``conversation_id = sessionId``), each
  prompt the user typed is one turn: the record's trace (``trace_id`` = hash of session and
  the prompt's uuid) of the action ``claude-code turn``, so ``costs --per-action-price`` and
  ``costs --by conversation`` show cost per turn and per session. The project (the ``cwd``'s
  folder name) is the service.
* **Tools and steps.** ``tool`` is the tool whose result the request consumed (the
  ``tool_result`` its entry's ``parentUuid`` points to, named by the matching ``tool_use``);
  ``step_fingerprint`` hashes that tool call with its result (or the prompt): an agent that
  runs the same command and reads the same output again and again repeats it.
* **Priced at the entry's own time** (``timestamp``, UTC): the first entry of a request is its
  start, the last its end.

A resumed session can copy earlier entries into a new file; their keys are the same, so they
are counted once (see ``transcript_files``). Content is never stored: only hashes.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import polars as pl

from llmtrace.dialects import MS_PER_US, normalize_service_tier
from llmtrace.fingerprint import step_fingerprint as fingerprint
from llmtrace.importers import ImportProblem
from llmtrace.importers.transcript_files import FileRead, count, hex_id

SOURCE = "claude-code"
DEFAULT_PATH = "~/.claude/projects"
PATTERN = "*.jsonl"
ACTION = "claude-code turn"
AGENT = "claude-code"
SUBAGENT = "claude-code:subagent"
DIALECT = "claude-code-jsonl"
STATE = "import-claude-code"

_USAGE_FIELDS = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
)

_ROW_SCHEMA = {
    "_file": pl.String,
    "_line": pl.Int64,
    "_start": pl.Int64,
    "_key": pl.String,
    "span_id": pl.String,
    "project": pl.String,
    "session": pl.String,
    "ts": pl.String,
    "response_id": pl.String,
    "model": pl.String,
    "raw_input": pl.Int64,
    "cache_write": pl.Int64,
    "cache_read": pl.Int64,
    "write_1h": pl.Int64,
    "output": pl.Int64,
    "thinking": pl.Int64,
    "service_tier": pl.String,
    "sidechain": pl.Boolean,
    "is_error": pl.Boolean,
    "tool": pl.String,
    "step": pl.String,
    "cwd": pl.String,
}


def normalise_model(model: str) -> str:
    """The model id genai-prices knows: dated ids (``claude-sonnet-4-5-20250929``) match as
    they are; Vertex's ``@`` dates and Claude Code's context-size suffixes (``[1m]``) do not."""
    name = model.strip()
    if name.endswith("]") and "[" in name:
        name = name[: name.rindex("[")]
    return name.replace("@", "-")


def parse(read: FileRead) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[ImportProblem]]:
    """Request entries and prompts of one file's new lines (one Python step per line: the
    decoding; the merging and attribution happen on frames in ``to_calls``)."""
    path = str(read.path)
    rows: list[dict[str, Any]] = []
    prompts: list[dict[str, Any]] = []
    problems: list[ImportProblem] = []
    tool_uses: dict[str, tuple[str, Any]] = {}  # tool_use id -> (name, input)
    consumed: dict[str, tuple[str | None, str]] = {}  # entry uuid -> (tool, step fingerprint)
    latest: tuple[str | None, str] | None = None  # the last user step not yet answered
    fallback_session = _session_from_path(read.path)
    project = _project_of(read.path)
    for line in read.lines:
        obj = line.obj
        kind = obj.get("type")
        if kind not in ("user", "assistant"):
            continue
        message = obj.get("message")
        if not isinstance(message, dict):
            problems.append(ImportProblem(path, line.number, None, "field 'message' missing"))
            continue
        uuid = obj.get("uuid")
        sidechain = bool(obj.get("isSidechain"))
        if kind == "user":
            step = _user_step(message.get("content"), tool_uses)
            if step is None:
                continue
            if isinstance(uuid, str):
                consumed[uuid] = step
            latest = step
            if step[0] is None and not sidechain and not obj.get("isMeta"):
                session = obj.get("sessionId") or fallback_session
                turn = uuid or f"{path}:{line.number}"
                prompts.append(
                    {
                        "session": session,
                        "ts": obj.get("timestamp"),
                        "turn": turn,
                        "trace_id": hex_id(f"{SOURCE}/{session}/{turn}", 32),
                    }
                )
            continue
        model = message.get("model")
        content = message.get("content")
        if isinstance(content, list):
            for block in content:
                if isinstance(block, dict) and block.get("type") == "tool_use":
                    tool_uses[str(block.get("id"))] = (str(block.get("name")), block.get("input"))
        if model == "<synthetic>":
            continue
        usage = message.get("usage")
        if not isinstance(usage, dict):
            problems.append(ImportProblem(path, line.number, None, "field 'message.usage' missing"))
            continue
        try:
            tokens = {name: count(usage.get(name)) for name in _USAGE_FIELDS}
            split = usage.get("cache_creation")
            write_1h = count(split.get("ephemeral_1h_input_tokens")) if split else None
            details = usage.get("output_tokens_details")
            thinking = count(details.get("thinking_tokens")) if details else None
        except (ValueError, AttributeError) as exc:
            problems.append(ImportProblem(path, line.number, None, f"field 'usage': {exc}"))
            continue
        if not isinstance(model, str) or not model.strip():
            problems.append(ImportProblem(path, line.number, None, "field 'message.model' missing"))
            continue
        timestamp = obj.get("timestamp")
        if not isinstance(timestamp, str):
            problems.append(ImportProblem(path, line.number, None, "field 'timestamp' missing"))
            continue
        message_id = message.get("id")
        request_id = obj.get("requestId")
        key = (
            f"{message_id}/{request_id}"
            if message_id and request_id
            else str(message_id or uuid or f"{path}:{line.number}")
        )
        parent = obj.get("parentUuid")
        found = consumed.get(parent) if isinstance(parent, str) else None
        # 2.1.x entries can point at an entry not written to the file: the last user step
        tool, step = found or latest or (None, None)
        latest = None
        if isinstance(uuid, str) and step is not None:
            consumed[uuid] = (tool, step)  # the next entry of this message points here
        tier = usage.get("service_tier")
        rows.append(
            {
                "_file": path,
                "_line": line.number,
                "_start": line.start,
                "_key": key,
                "span_id": hex_id(f"{SOURCE}/{key}", 16),
                "project": project,
                "session": obj.get("sessionId") or fallback_session,
                "ts": timestamp,
                "response_id": message_id,
                "model": normalise_model(model),
                "raw_input": tokens["input_tokens"],
                "cache_write": tokens["cache_creation_input_tokens"],
                "cache_read": tokens["cache_read_input_tokens"],
                "write_1h": write_1h,
                "output": tokens["output_tokens"],
                "thinking": thinking,
                "service_tier": normalize_service_tier(tier),
                "sidechain": sidechain or "subagents" in read.path.parts,
                "is_error": bool(obj.get("isApiErrorMessage")),
                "tool": tool,
                "step": step,
                "cwd": obj.get("cwd") if isinstance(obj.get("cwd"), str) else None,
            }
        )
    return rows, prompts, problems


def _user_step(
    content: Any, tool_uses: dict[str, tuple[str, Any]]
) -> tuple[str | None, str] | None:
    """(tool, fingerprint) of a user entry: a tool result (tool named) or a typed prompt
    (tool None); None for anything else."""
    if isinstance(content, str):
        return None, fingerprint("prompt", content)
    if not isinstance(content, list):
        return None
    results = [b for b in content if isinstance(b, dict) and b.get("type") == "tool_result"]
    if results:
        last = results[-1]
        name, call = tool_uses.get(str(last.get("tool_use_id")), (None, None))
        parts = [
            (tool_uses.get(str(b.get("tool_use_id")), (None, None)), b.get("content"))
            for b in results
        ]
        return name, fingerprint("tool", parts, call)
    texts = [b.get("text") for b in content if isinstance(b, dict) and b.get("type") == "text"]
    if texts:
        return None, fingerprint("prompt", texts)
    return None


def _session_from_path(path: Path) -> str:
    """The session a file belongs to when its entries do not say: ``<session>.jsonl`` or
    ``<session>/subagents/agent-*.jsonl``."""
    if path.parent.name == "subagents":
        return path.parent.parent.name
    return path.stem


def hold_back(read: FileRead, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], int, int]:
    """For a file still being written: leave its last request (whose streamed entries may not
    all be written yet) for the next run. Returns the rows to import and the offset and line
    number to checkpoint."""
    if not read.active or not rows:
        return rows, read.end, read.end_line
    last = rows[-1]["_key"]
    held = [r for r in rows if r["_key"] == last]
    first = min(held, key=lambda r: r["_start"])
    kept = [r for r in rows if r["_key"] != last]
    return kept, first["_start"], first["_line"] - 1


def to_calls(
    rows: Sequence[dict[str, Any]], prompts: Sequence[dict[str, Any]], turns: pl.DataFrame
) -> tuple[pl.DataFrame, int]:
    """Call records (not yet priced) from request entries, one per request; and how many
    entries were merged into them.

    ``turns`` holds every prompt known for the sessions (``session``, ``ts``, ``turn``),
    earlier runs' included: each request belongs to the latest prompt of its session that
    started at or before it (subagent requests too, from their own files).
    """
    entries = pl.DataFrame(list(rows), schema=_ROW_SCHEMA)
    if entries.is_empty():
        return pl.DataFrame(), 0
    time = pl.col("ts").str.to_datetime(time_zone="UTC", time_unit="us", strict=False)
    entries = entries.with_columns(time.alias("at")).filter(pl.col("at").is_not_null())
    # the entry with the most output is the last one written; ties: the later line
    best = (
        entries.sort("_key", "output", "_file", "_line", nulls_last=False)
        .group_by("_key", maintain_order=True)
        .agg(
            pl.all().last(),
            pl.col("at").min().alias("start_time"),
            pl.col("at").max().alias("end_time"),
            pl.col("tool").drop_nulls().first().alias("_tool"),
            pl.col("step").drop_nulls().first().alias("_step"),
        )
    )
    requests = best.sort("start_time")
    turn_table = (
        turns.select(
            pl.col("session"),
            pl.col("ts").str.to_datetime(time_zone="UTC", time_unit="us", strict=False).alias("_t"),
            pl.col("trace_id"),
        )
        .drop_nulls("_t")
        .unique(["session", "trace_id"])
        .sort("_t")
    )
    requests = requests.join_asof(
        turn_table,
        left_on="start_time",
        right_on="_t",
        by="session",
        strategy="backward",
        check_sortedness=False,  # both sorted just above
    )
    # requests before the session's first known prompt share one trace per session
    sessions = requests.get_column("session").unique().to_list()
    before = pl.DataFrame(
        {
            "session": sessions,
            "_session_trace": [hex_id(f"{SOURCE}/{s}/start", 32) for s in sessions],
        },
        schema={"session": pl.String, "_session_trace": pl.String},
    )
    requests = requests.join(before, on="session", how="left")
    cache_write = pl.col("cache_write").fill_null(0)
    cache_read = pl.col("cache_read").fill_null(0)
    raw_input = pl.col("raw_input").fill_null(0)
    project = pl.col("cwd").str.replace(r"[/\\]+$", "").str.extract(r"([^/\\]+)$")
    calls = requests.select(
        pl.coalesce("trace_id", "_session_trace").alias("trace_id"),
        pl.col("span_id"),
        pl.col("response_id"),
        pl.lit(SOURCE).alias("source"),
        pl.lit(DIALECT).alias("dialect"),
        pl.coalesce(project, pl.col("project")).alias("service"),
        pl.lit("anthropic").alias("provider"),
        pl.col("model"),
        pl.col("model").alias("request_model"),
        pl.lit("chat").alias("operation"),
        pl.lit(ACTION).alias("action"),
        pl.col("session").alias("conversation_id"),
        pl.col("start_time"),
        pl.col("end_time"),
        ((pl.col("end_time") - pl.col("start_time")).dt.total_microseconds() * MS_PER_US).alias(
            "duration_ms"
        ),
        pl.col("is_error"),
        (raw_input + cache_write + cache_read).alias("input_tokens"),
        cache_read.alias("cache_read_tokens"),
        cache_write.alias("cache_write_tokens"),
        pl.col("write_1h").fill_null(0).alias("cache_write_1h_tokens"),
        pl.col("output").alias("output_tokens"),
        pl.col("thinking").alias("reasoning_tokens"),
        pl.col("service_tier"),
        pl.when(pl.col("sidechain")).then(pl.lit(SUBAGENT)).otherwise(pl.lit(AGENT)).alias("agent"),
        pl.col("_tool").alias("tool"),
        pl.col("_step").alias("step_fingerprint"),
    )
    return calls, entries.height - calls.height


def _project_of(path: Path) -> str:
    """The project folder a transcript sits in (``~/.claude/projects/<project>/...``)."""
    parent = path.parent.parent.parent if path.parent.name == "subagents" else path.parent
    return parent.name
