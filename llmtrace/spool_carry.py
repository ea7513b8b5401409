"""What a settle carries over to the next one: rows of open traces and evaluations whose call
is not stored yet (the bookkeeping of ``llmtrace.store_spool``; no Polars).

Why: a settle runs whenever a store is read, often while the app is still running. The
importer finishes a trace's calls once its root has been read (``importers.otlp._Stream``),
because the root, which ends and is exported last, names the calls' action; and it attaches an
evaluation to its call at the end of the import, wherever the call was. Between settles the
"end" is later: so the rows of a trace whose local root has not been spooled are *carried*
(written back into the spool as one carry file, in the spool's own format) until the root
arrives, and so are evaluations that matched no call, stored or new, until their call arrives.
Neither waits longer than ``spool.CARRY_S`` after it was first spooled, nor past the shutdown
of every process that spooled it (``SpoolWriter.write_final``): then the trace is finished as
it is and the evaluation dropped as matching no call, as the importer does at the end.

A *part* is the rows of one spool file that go one way; the rows of one trace always go
together. A carry file's header says what it holds and which files it replaces: those files'
other rows were stored before it was written, so a settle that finds a carry beside files it
replaces (a crash before they were removed) removes them unread. Every row is thus settled or
carried exactly once.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmtrace import spool
from llmtrace.importers.otlp_rows import CALL_ROW, EVALUATION_FIELDS

# where each list keeps its trace id (``spool.LISTS`` order: calls, tree, roots, evaluations)
_TRACE = (CALL_ROW.index("trace_id"), 0, 0, EVALUATION_FIELDS.index("trace_id"))


@dataclass
class Part:
    """Rows of one spool file (``path``; its header) going one way, in ``spool.LISTS`` order."""

    path: Path
    header: dict[str, Any]
    lists: tuple[list[Any], list[Any], list[Any], list[Any]]

    @classmethod
    def of(cls, batch: spool.SpoolBatch) -> Part:
        lists = (batch.calls, batch.tree, batch.roots, batch.evaluations)
        return cls(batch.path, batch.header, lists)

    def traces(self) -> set[str]:
        return {row[i] for rows, i in zip(self.lists, _TRACE, strict=True) for row in rows}

    def spans(self) -> int:
        return len(self.lists[1])

    def split(self, ready: set[str]) -> tuple[Part | None, Part | None]:
        """(rows of traces in ``ready``, the other rows); None for an empty side."""
        traces = self.traces()
        if traces <= ready:
            return self, None
        if not traces & ready:
            return None, self
        sides = tuple(
            ([r for r in rows if r[i] in ready], [r for r in rows if r[i] not in ready])
            for rows, i in zip(self.lists, _TRACE, strict=True)
        )
        now = Part(self.path, self.header, tuple(side[0] for side in sides))  # type: ignore[arg-type]
        later = Part(self.path, self.header, tuple(side[1] for side in sides))  # type: ignore[arg-type]
        return now, later


@dataclass
class Traces:
    """What a settle knows of each trace: when it was first spooled, by which processes, and
    whether its local root has been (``closed``); which processes shut down (``finals``)."""

    now_ns: int
    first: dict[str, int] = field(default_factory=dict)
    pids: dict[str, set[int]] = field(default_factory=dict)
    closed: set[str] = field(default_factory=set)
    finals: set[int] = field(default_factory=set)

    def read(self, batch: spool.SpoolBatch) -> None:
        """Note a file's traces, roots and, for an app's final word, its process."""
        header = batch.header
        carry = header.get("carry")
        if isinstance(carry, dict):
            for trace, (first, pids) in (carry.get("traces") or {}).items():
                self._seen(trace, int(first), pids)
            self.closed.update(carry.get("closed") or ())
        else:
            first, pid = spool.batch_origin(batch.path.name)
            first = self.now_ns if first is None else first
            pids = () if pid is None else (pid,)
            for trace in Part.of(batch).traces():
                self._seen(trace, first, pids)
            if header.get("final") and pid is not None:
                self.finals.add(pid)
        self.closed.update(row[0] for row in batch.roots)
        self.closed.update(header.get("local_roots") or ())

    def _seen(self, trace: str, first: int, pids: Iterable[int]) -> None:
        known = self.first.get(trace)
        if known is None or first < known:
            self.first[trace] = first
        self.pids.setdefault(trace, set()).update(pids)

    def expired(self, trace: str) -> bool:
        first = self.first.get(trace, self.now_ns)
        return self.now_ns - first >= spool.CARRY_S * 1e9

    def ready(self, traces: Iterable[str]) -> set[str]:
        """The traces among ``traces`` to finish now: closed, too old, or of processes that
        all shut down."""
        return {
            t
            for t in traces
            if t in self.closed
            or self.expired(t)
            or (self.pids.get(t) and self.pids[t] <= self.finals)
        }

    def entry(self, trace: str) -> list[Any]:
        return [self.first.get(trace, self.now_ns), sorted(self.pids.get(trace, ()))]


def write_carry(
    folder: Path,
    header: dict[str, Any],
    parts: list[Part],
    evaluations: list[Any],
    replaces: list[Path],
    traces: Traces,
) -> Path:
    """One carry file of ``parts`` (open traces) and ``evaluations`` (closed traces' scores
    still waiting for their call), replacing the files ``replaces`` (sorted; the carry takes
    the first one's place in name order). Written atomically before those are removed."""
    lists: tuple[list[Any], ...] = ([], [], [], [])
    for part in parts:
        for mine, rows in zip(lists, part.lists, strict=True):
            mine.extend(rows)
    lists[3].extend(evaluations)
    held = {row[i] for rows, i in zip(lists, _TRACE, strict=True) for row in rows}
    waiting = {row[_TRACE[3]] for row in evaluations}
    entries = {trace: traces.entry(trace) for trace in sorted(held)}
    oldest = min(entry[0] for entry in entries.values())
    carry_header = {
        **{k: v for k, v in header.items() if k not in ("final", "local_roots", "carry")},
        "spans": len(lists[1]),
        "llm_spans": len(lists[0]),
        "rejected": 0,
        "fields": {name: list(fields) for name, fields in spool.FIELDS.items()},
        "carry": {
            "replaces": [path.name for path in replaces],
            "traces": entries,
            "closed": sorted(waiting),  # finished: their evaluations step at once next time
        },
    }
    name = spool.carry_name(replaces[0].name, oldest, uuid.uuid4().hex[:12])
    return spool.write_file(folder / name, carry_header, lists)


def replaced_by_carries(batches: Iterable[spool.SpoolBatch]) -> set[str]:
    """Names of the files the carries among ``batches`` replace (their rows are in the carry
    or stored: a crash came before they were removed)."""
    names: set[str] = set()
    for batch in batches:
        carry = batch.header.get("carry")
        if isinstance(carry, dict):
            names.update(carry.get("replaces") or ())
    return names
