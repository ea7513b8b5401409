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
A span that ends after its trace's root (a judge or a call still running under a request that
answered) comes after a settle stored the trace: the traces closed within ``CARRY_S`` and their
root names are remembered (``STORE/state/spool-closed.msgpack``, as the importer keeps a table
of closed traces), so such a span is finished at once, its call named after the root.

A *part* is the rows of one spool file that go one way; the rows of one trace always go
together. A carry file's header says what it holds and which files it replaces: those files'
other rows were stored before it was written, so a settle that finds a carry beside files it
replaces (a crash before they were removed) removes them unread. Every row is thus settled or
carried exactly once.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from llmtrace import spool
from llmtrace.importers.otlp_rows import CALL_ROW, EVALUATION_FIELDS

# where each list keeps its trace id (``spool.LISTS`` order: calls, tree, roots, evaluations)
_TRACE = (CALL_ROW.index("trace_id"), 0, 0, EVALUATION_FIELDS.index("trace_id"))


RECENT = 100_000
"""Most closed traces remembered (~4 MB of ids and names): bounds the memory's rewrite."""
MEMORY = "spool-closed.msgpack"
"""``STORE/state/<MEMORY>``: the traces closed lately (``Traces.memory``). Advisory: lost, a
late span waits for ``spool.CARRY_S`` instead, and nothing else changes."""


@dataclass
class Part:
    """Rows of one spool file (``path``; its header) going one way, in ``spool.LISTS`` order."""

    path: Path
    header: dict[str, Any]
    lists: tuple[list[Any], list[Any], list[Any], list[Any]]
    # the trace ids of ``lists``, computed once: a settle asks for them several times per part
    # (noting the file, each step's ready set, the split, the root rows), ~100k rows a group
    _traces: set[str] | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def of(cls, batch: spool.SpoolBatch) -> Part:
        lists = (batch.calls, batch.tree, batch.roots, batch.evaluations)
        return cls(batch.path, batch.header, lists)

    def traces(self) -> set[str]:
        """The traces of the part's rows (shared: not to be changed by the caller)."""
        if self._traces is None:
            self._traces = {
                row[i] for rows, i in zip(self.lists, _TRACE, strict=True) for row in rows
            }
        return self._traces

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
        now._traces, later._traces = traces & ready, traces - ready
        return now, later


@dataclass
class Traces:
    """What a settle knows of each trace: when it was first spooled, by which processes, and
    whether its local root has been (``closed``); which processes shut down (``finals``)."""

    now_ns: int
    first: dict[str, int] = field(default_factory=dict)
    pids: dict[str, frozenset[int]] = field(default_factory=dict)
    closed: set[str] = field(default_factory=set)
    finals: set[int] = field(default_factory=set)
    # traces whose local root was spooled lately: (when it was settled, the root's name)
    recent: dict[str, tuple[int, str | None]] = field(default_factory=dict)

    def read(self, part: Part) -> None:
        """Note a file's traces, roots and, for an app's final word, its process (``part``:
        the whole file)."""
        header = part.header
        carry = header.get("carry")
        if isinstance(carry, dict):
            for trace, (first, pids) in (carry.get("traces") or {}).items():
                self._seen(trace, int(first), frozenset(pids))
            self.closed.update(carry.get("closed") or ())
        else:
            first, pid = spool.batch_origin(part.path.name)
            first = self.now_ns if first is None else first
            pids = frozenset(() if pid is None else (pid,))
            for trace in part.traces():
                self._seen(trace, first, pids)
            if header.get("final") and pid is not None:
                self.finals.add(pid)
        for trace in header.get("local_roots") or ():
            self.closed.add(trace)
            self.recent.setdefault(trace, (self.now_ns, None))
        for trace, name in part.lists[2]:
            self.closed.add(trace)
            self.recent[trace] = (self.now_ns, name)

    def recall(self, memory: dict[str, Any]) -> None:
        """Take the traces closed by earlier settles (``read_memory``) as closed."""
        for trace, (closed, name) in memory.items():
            self.recent[trace] = (int(closed), name)
            self.closed.add(trace)

    def memory(self) -> dict[str, list[Any]]:
        """The traces closed within ``spool.CARRY_S`` (at most ``RECENT``, the latest), for
        ``write_memory``: a span of one that ends after its root (a background task, a judge
        run under the request) is then finished at once, with the root's name at hand."""
        horizon = self.now_ns - spool.CARRY_S * 1e9
        kept = sorted(
            ((closed, trace, name) for trace, (closed, name) in self.recent.items()),
            reverse=True,
        )[:RECENT]
        return {trace: [closed, name] for closed, trace, name in kept if closed > horizon}

    def root_rows(self, parts: list[Part]) -> list[Any]:
        """Root rows of earlier settles for the traces of ``parts`` lacking one: a late span's
        call takes its action from the root's name, as the import's closed-trace table does."""
        have = {row[0] for part in parts for row in part.lists[2]}
        traces = set().union(*(part.traces() for part in parts)) - have
        return [
            [trace, self.recent[trace][1]]
            for trace in sorted(traces)
            if trace in self.recent and self.recent[trace][1] is not None
        ]

    def _seen(self, trace: str, first: int, pids: frozenset[int]) -> None:
        known = self.first.get(trace)
        if known is None:  # the usual case: one file, one process per trace (sets shared)
            self.first[trace] = first
            self.pids[trace] = pids
            return
        if first < known:
            self.first[trace] = first
        if not pids <= self.pids[trace]:
            self.pids[trace] = self.pids[trace] | pids

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


def read_memory(store: Path) -> dict[str, Any]:
    """The traces earlier settles closed lately (empty when none, or unreadable)."""
    try:
        memory = msgspec.msgpack.decode((store / "state" / MEMORY).read_bytes())
    except (OSError, msgspec.DecodeError):
        return {}
    return memory if isinstance(memory, dict) else {}


def write_memory(store: Path, memory: dict[str, list[Any]]) -> None:
    """Replace the memory of closed traces atomically (a reader sees the old or the new)."""
    folder = store / "state"
    folder.mkdir(parents=True, exist_ok=True)
    temp = folder / f".{MEMORY}.{uuid.uuid4().hex[:12]}.tmp"
    try:
        temp.write_bytes(msgspec.msgpack.encode(memory))
        os.replace(temp, folder / MEMORY)
    finally:
        temp.unlink(missing_ok=True)
