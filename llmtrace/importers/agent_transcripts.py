"""Import coding-agent transcripts into the store: read what was appended, price, append.

The driver shared by ``import claude-code`` and ``import codex``: files are read in groups
(``transcript_files.batches``), each group's new lines are parsed by the source's module into
call records, requests already stored for the source are dropped, the rest is priced in one
vectorised ``price_calls`` and appended, and only then are the files' checkpoints moved on --
so an import killed half-way reads the same lines again next time and the store's idempotent
append keeps every call once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from llmtrace.importers import ImportProblem, claude_code, codex
from llmtrace.importers.transcript_files import (
    batches,
    find_files,
    iter_reads,
    stored_keys,
)
from llmtrace.pricing import PriceBook, price_calls
from llmtrace.store import Store

SOURCES = ("claude-code", "codex")
# A file written to within this many seconds may be in the middle of a streamed message:
# its last request is left for the next run (see ``claude_code.hold_back``).
SETTLE_SECONDS = 60.0


@dataclass
class TranscriptResult:
    """What an import did, for the command's summary."""

    files: int = 0
    lines: int = 0
    requests: int = 0  # distinct requests read (streamed entries merged)
    merged_entries: int = 0  # extra entries of streamed messages merged into their request
    known: int = 0  # requests already stored (an earlier run, or a resumed/forked copy)
    added: int = 0
    duplicates: int = 0
    total_cost: float = 0.0
    statuses: Counter[str] = field(default_factory=Counter)
    problems: list[ImportProblem] = field(default_factory=list)


def default_paths(source: str) -> list[Path]:
    module = claude_code if source == "claude-code" else codex
    return [Path(module.DEFAULT_PATH).expanduser()]


def transcript_files(source: str, paths: Sequence[Path]) -> list[Path]:
    """The source's files under ``paths``; Claude Code sessions before their subagents, so a
    subagent's requests find the parent's turns stored in the same run."""
    pattern = claude_code.PATTERN if source == "claude-code" else codex.PATTERN
    files = find_files(paths, pattern)
    return sorted(files, key=lambda p: ("subagents" in p.parts or p.name.startswith("agent-"), p))


def import_transcripts(
    source: str,
    files: Sequence[Path],
    store: Store,
    book: PriceBook,
    *,
    settle_seconds: float = SETTLE_SECONDS,
    progress: Callable[[int], None] | None = None,
    on_problem: Callable[[ImportProblem], None] | None = None,
) -> TranscriptResult:
    """Import the lines of ``files`` appended since the last import of ``source``."""
    if source not in SOURCES:
        raise ValueError(f"unknown transcript source {source!r}")
    module: Any = claude_code if source == "claude-code" else codex
    state = store.read_state(module.STATE)
    known = stored_keys(store.scan(), source)
    result = TranscriptResult()
    for group in batches(files):
        rows: list[dict[str, Any]] = []
        prompts: list[dict[str, Any]] = []
        moves: list[tuple[dict[str, Any], int, int]] = []
        for read, checkpoint in iter_reads(
            group, state, settle_seconds=settle_seconds, progress=progress
        ):
            result.files += 1
            result.lines += len(read.lines)
            problems = list(read.problems)
            if source == "claude-code":
                found, asked, bad = claude_code.parse(read)
                found, offset, line = claude_code.hold_back(read, found)
                prompts += asked
            else:
                found, bad = codex.parse(read, checkpoint.setdefault("carry", {}))
                offset, line = read.end, read.end_line
            problems += bad
            rows += found
            moves.append((checkpoint, offset, line))
            for problem in problems:
                result.problems.append(problem)
                if on_problem is not None:
                    on_problem(problem)
        if source == "claude-code":
            turns = _remember_turns(state, prompts, rows)
            calls, merged = claude_code.to_calls(rows, prompts, turns)
            result.merged_entries += merged
        else:
            calls = codex.to_calls(rows)
        if calls.height:
            result.requests += calls.height
            fresh = calls.filter(~pl.col("span_id").is_in(list(known)))
            result.known += calls.height - fresh.height
            if fresh.height:
                priced = price_calls(fresh, book)
                appended = store.append(priced)
                result.added += appended.added
                result.duplicates += appended.duplicates
                result.statuses.update(dict(priced.group_by("price_status").len().iter_rows()))
                result.total_cost += priced.get_column("total_cost").sum() or 0.0
                known.update(fresh.get_column("span_id").to_list())
        for checkpoint, offset, line in moves:
            checkpoint["offset"], checkpoint["line"] = offset, line
        store.write_state(module.STATE, state)
    return result


def _remember_turns(
    state: dict[str, Any], prompts: list[dict[str, Any]], rows: list[dict[str, Any]]
) -> pl.DataFrame:
    """Every known prompt of the sessions in this batch (earlier runs' from the state), and
    this batch's prompts added to the state: a subagent file or an appended session read in
    a later run still finds the turn its requests belong to."""
    known: dict[str, dict[str, list[str]]] = state.setdefault("turns", {})
    for prompt in prompts:
        if isinstance(prompt["ts"], str):
            known.setdefault(prompt["session"], {})[prompt["turn"]] = [
                prompt["ts"],
                prompt["trace_id"],
            ]
    sessions = {row["session"] for row in rows}
    table = [
        {"session": session, "ts": ts, "turn": turn, "trace_id": trace}
        for session in sessions
        for turn, (ts, trace) in known.get(session, {}).items()
    ]
    return pl.DataFrame(
        table,
        schema={"session": pl.String, "ts": pl.String, "turn": pl.String, "trace_id": pl.String},
    )
