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
root names are remembered (``STORE/state/spool-closed-2.msgpack``, as the importer keeps a table
of closed traces), so such a span is finished at once, its call named after the root. Not
so after a local root whose parent is in another process (``Traces.read`` says why).

A *part* is the rows of one spool file that go one way; the rows of one trace always go
together. A carry file's header says what it holds and which files it replaces: those files'
other rows were stored before it was written, so a settle that finds a carry beside files it
replaces (a crash before they were removed) removes them unread. Every row is thus settled or
carried exactly once.
"""

from __future__ import annotations

import bisect
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
MEMORY = "spool-closed-2.msgpack"
"""``STORE/state/<MEMORY>``: the traces closed lately (``Traces.memory``). Advisory: lost, a
late span waits for ``spool.CARRY_S`` instead, and nothing else changes."""
LEGACY_MEMORY = "spool-closed.msgpack"
"""514d29e's memory ({trace: [closed, name]}), read when there is no ``MEMORY`` yet. Not the
name of the columns: 514d29e's settle failed on a memory of another shape (every read, so no
reader saw new calls), and a reader of that commit may share the store."""


@dataclass
class Part:
    """Rows of one spool file (``path``; its header) going one way, in ``spool.LISTS`` order."""

    path: Path
    header: dict[str, Any]
    lists: tuple[list[Any], list[Any], list[Any], list[Any]]
    seq: int = 0  # the file's place in the settle's reading order (``Traces.local_ready``)
    due: bool = False  # a carry's waiting evaluations: stepped at once (``waiting_apart``)
    # the trace ids of ``lists``, computed once: a settle asks for them several times per part
    # (noting the file, each step's ready set, the split, the root rows), ~100k rows a group
    _traces: set[str] | None = field(default=None, init=False, repr=False, compare=False)

    @classmethod
    def of(cls, batch: spool.SpoolBatch, seq: int = 0) -> Part:
        lists = (batch.calls, batch.tree, batch.roots, batch.evaluations)
        return cls(batch.path, batch.header, lists, seq)

    def traces(self) -> set[str]:
        """The traces of the part's rows (shared: not to be changed by the caller)."""
        if self._traces is None:
            self._traces = {
                row[i] for rows, i in zip(self.lists, _TRACE, strict=True) for row in rows
            }
        return self._traces

    def spans(self) -> int:
        return len(self.lists[1])

    def split(
        self, ready: set[str], also: set[str] | None = None
    ) -> tuple[Part | None, Part | None]:
        """(rows of traces in ``ready`` or ``also``, the other rows); None for an empty side."""
        traces = self.traces()
        if also:
            ready = (traces & ready) | also
        if traces <= ready:
            return self, None
        if not traces & ready:
            return None, self
        sides = tuple(
            ([r for r in rows if r[i] in ready], [r for r in rows if r[i] not in ready])
            for rows, i in zip(self.lists, _TRACE, strict=True)
        )
        now_lists, later_lists = (tuple(side[n] for side in sides) for n in (0, 1))
        now = Part(self.path, self.header, now_lists, self.seq)  # type: ignore[arg-type]
        later = Part(self.path, self.header, later_lists, self.seq)  # type: ignore[arg-type]
        now._traces, later._traces = traces & ready, traces - ready
        return now, later


@dataclass
class Traces:
    """What a settle knows of each trace: when it was first spooled, by which processes, and
    whether its root has been (``closed``) or, for a span whose parent is in another process,
    in which file the latest such local root was (``local``); which processes shut down
    (``finals``)."""

    now_ns: int
    first: dict[str, int] = field(default_factory=dict)
    pids: dict[str, frozenset[int]] = field(default_factory=dict)
    closed: set[str] = field(default_factory=set)
    finals: set[int] = field(default_factory=set)
    # traces of a local root whose parent is in another process: the ``Part.seq`` of the
    # latest file that had one
    local: dict[str, int] = field(default_factory=dict)
    # traces whose root this settle read: (when it was settled, the root's name)
    recent: dict[str, tuple[int, str | None]] = field(default_factory=dict)
    # those earlier settles closed (``read_memory``): looked up, not copied into the above
    remembered: Memory = field(default_factory=lambda: Memory([], [], []))

    def read(self, part: Part) -> None:
        """Note a file's traces, roots and, for an app's final word, its process (``part``:
        the whole file)."""
        header = part.header
        carry = header.get("carry")
        if isinstance(carry, dict):
            for trace, (first, pids) in (carry.get("traces") or {}).items():
                self._seen(trace, int(first), frozenset(pids))
            if not isinstance(carry.get("waiting"), int):  # 07b0a0f's: no ``waiting_apart``
                self.closed.update(carry.get("closed") or ())
        else:
            first, pid = spool.batch_origin(part.path.name)
            first = self.now_ns if first is None else first
            pid = spool.process_of(header, pid)  # the writer, not just its pid
            pids = frozenset(() if pid is None else (pid,))
            for trace in part.traces():
                self._seen(trace, first, pids)
            if header.get("final") and pid is not None:
                self.finals.add(pid)
        # A local root whose parent is in another process ends one request of the trace here,
        # not the trace: the caller may send this process another request of it (an agent
        # calling a service in turns). So it finishes the trace's rows of files up to its own
        # (``local_ready``), and is not remembered: a later request's spans wait for their
        # own local root, which the import, holding such a trace to the end, reads with them.
        # Closing the trace for good stored a later request's calls as they came, without
        # their ancestors (an agent span, ending after its calls) in later batches.
        for trace in header.get("local_roots") or ():
            self.local[trace] = part.seq
        for trace, name in part.lists[2]:
            self.closed.add(trace)
            self.recent[trace] = (self.now_ns, name)

    def recall(self, memory: Memory) -> None:
        """Take the traces closed by earlier settles (``read_memory``) as closed."""
        self.remembered = memory

    def is_closed(self, trace: str) -> bool:
        return trace in self.closed or trace in self.remembered.members()

    def local_ready(self, part: Part) -> set[str] | None:
        """The traces of ``part`` whose local root was spooled in its file or a later one
        (its rows of those are finished with the root's request); None when there are none."""
        local = self.local
        if not local:
            return None
        seq = part.seq
        return {t for t in part.traces() if local.get(t, -1) >= seq} or None

    def memory(self) -> Memory | None:
        """The traces closed within ``spool.CARRY_S`` (at most ``RECENT``, the latest; newest
        first, ties by trace id, descending), for ``write_memory``: a span of one that ends
        after its root (a background task, a judge run under the request) is then finished at
        once, with the root's name at hand. None when that is the memory recalled.

        Why not one sort of everything: the memory holds up to ``RECENT`` traces, and this
        settle's (all closed ``now_ns``) go before the recalled ones, already in order. With
        the memory read as a dict, copied into ``recent`` and sorted, reading, merging and
        writing it took ~0.1 CPU s a settle at 100k traces (15 ms at 22k); as columns merged
        so, ~35 ms (7 ms). A file not in that order, or a clock set back, takes the sort."""
        old = self.remembered
        horizon = self.now_ns - spool.CARRY_S * 1e9
        fresh = sorted(
            ((closed, trace, name) for trace, (closed, name) in self.recent.items()),
            reverse=True,
        )
        if not old.ordered or (fresh and old.closed and old.closed[0] >= fresh[-1][0]):
            return self._memory_sorted(horizon)  # a file not in order, a clock set back
        if fresh and not old.members().isdisjoint(self.recent):  # a root seen again: newer
            keep = [i for i, trace in enumerate(old.traces) if trace not in self.recent]
            old = Memory(
                [old.traces[i] for i in keep],
                [old.closed[i] for i in keep],
                [old.names[i] for i in keep],
            )
        room = max(RECENT - len(fresh), 0)
        # newest first: what is past the horizon is a tail (closed descending)
        alive = bisect.bisect_left(old.closed, -horizon, hi=min(room, len(old.closed)), key=_neg)
        fresh = [entry for entry in fresh[:RECENT] if entry[0] > horizon]
        if not fresh and alive == len(self.remembered.traces) and self.remembered.ordered:
            return None
        return Memory(
            [trace for _, trace, _ in fresh] + old.traces[:alive],
            [closed for closed, _, _ in fresh] + old.closed[:alive],
            [name for _, _, name in fresh] + old.names[:alive],
        )

    def _memory_sorted(self, horizon: float) -> Memory:
        """``memory`` by one sort of everything (this settle's closes override the recalled)."""
        old = self.remembered
        entries = {
            trace: (closed, name)
            for trace, closed, name in zip(old.traces, old.closed, old.names, strict=True)
        }
        entries.update(self.recent)
        kept = sorted(
            ((closed, trace, name) for trace, (closed, name) in entries.items()),
            reverse=True,
        )[:RECENT]
        kept = [entry for entry in kept if entry[0] > horizon]
        return Memory(
            [trace for _, trace, _ in kept],
            [closed for closed, _, _ in kept],
            [name for _, _, name in kept],
        )

    def root_rows(self, parts: list[Part]) -> list[Any]:
        """Root rows of earlier settles for the traces of ``parts`` lacking one: a late span's
        call takes its action from the root's name, as the import's closed-trace table does."""
        have = {row[0] for part in parts for row in part.lists[2]}
        traces = set().union(*(part.traces() for part in parts)) - have
        rows = []
        for trace in sorted(traces):
            if trace in self.recent:
                name = self.recent[trace][1]
            elif trace in self.remembered.members():
                name = self.remembered.name(trace)
            else:
                continue
            if name is not None:
                rows.append([trace, name])
        return rows

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
            if self.is_closed(t)
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
    *,
    first: Path | None = None,
) -> Path:
    """One carry file of ``parts`` (open traces) and ``evaluations`` (closed traces' scores
    still waiting for their call), replacing the files ``replaces`` (sorted; the carry takes
    the place in name order of ``first``, by default the first of them). Written atomically
    before those are removed."""
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
        **{
            k: v for k, v in header.items() if k not in ("final", "local_roots", "carry", "process")
        },
        "spans": len(lists[1]),
        "llm_spans": len(lists[0]),
        "rejected": 0,
        "fields": {name: list(fields) for name, fields in spool.FIELDS.items()},
        "carry": {
            "replaces": [path.name for path in replaces],
            "traces": entries,
            "closed": sorted(waiting),  # for 07b0a0f: their evaluations step at once
            "waiting": len(evaluations),  # the last evaluations: ``waiting_apart``
        },
    }
    name = spool.carry_name((first or replaces[0]).name, oldest, uuid.uuid4().hex[:12])
    return spool.write_file(folder / name, carry_header, lists)


def waiting_apart(part: Part) -> list[Part]:
    """A carry's rows as parts: its waiting evaluations (header ``waiting``: the last ones)
    apart, stepped at once (``Part.due``), so their traces are not taken as finished.

    Why: 07b0a0f's carry named their traces ``closed`` instead, which finished every row of
    those traces from then on: a later request of a called service's trace (local roots,
    ``Traces.read``) held in the same carry, or spooled after it, was stored as it came,
    without its ancestors spooled later (an agent span ending after its call)."""
    carry = part.header.get("carry")
    count = carry.get("waiting") if isinstance(carry, dict) else None
    evaluations = part.lists[3]
    if type(count) is not int or not 0 < count <= len(evaluations):
        return [part]
    calls, tree, roots, _ = part.lists
    rest = Part(part.path, part.header, (calls, tree, roots, evaluations[:-count]), part.seq)
    due = Part(part.path, part.header, ([], [], [], evaluations[-count:]), part.seq, due=True)
    return [rest, due]


def replaced_by_carries(batches: Iterable[spool.SpoolBatch]) -> set[str]:
    """Names of the files the carries among ``batches`` replace (their rows are in the carry
    or stored: a crash came before they were removed)."""
    names: set[str] = set()
    for batch in batches:
        carry = batch.header.get("carry")
        if isinstance(carry, dict):
            names.update(carry.get("replaces") or ())
    return names


def _neg(value: int) -> int:
    return -value


@dataclass
class Memory:
    """The traces settles closed lately (``Traces.memory``), as three columns, newest first:
    trace id, when it was closed (ns), its root's name (None: a remote parent's child, as
    514d29e..07b0a0f remembered them)."""

    traces: list[str]
    closed: list[int]
    names: list[str | None]
    ordered: bool = True  # closed descending, as ``Traces.memory`` writes it
    # built when first asked (a set of 100k ids ~5 ms, a dict ~13 ms): a settle whose traces
    # all have their roots in its own files needs only the set, to write the memory
    _members: set[str] | None = field(default=None, init=False, repr=False, compare=False)
    _index: dict[str, int] | None = field(default=None, init=False, repr=False, compare=False)

    def members(self) -> set[str]:
        if self._members is None:
            self._members = set(self.traces)
        return self._members

    def name(self, trace: str) -> str | None:
        """The root name of a remembered trace (None if it is not text: advisory)."""
        if self._index is None:
            self._index = dict(zip(self.traces, range(len(self.traces)), strict=True))
        name = self.names[self._index[trace]]
        return name if isinstance(name, str) else None


MEMORY_FORMAT = "llmtrace-spool-closed"


def read_memory(store: Path) -> Memory:
    """The traces earlier settles closed lately; empty when none, or unreadable, or not of
    the expected shape (advisory: a late span then waits for ``spool.CARRY_S``)."""
    folder = store / "state"
    path = folder / MEMORY if (folder / MEMORY).exists() else folder / LEGACY_MEMORY
    try:
        doc = msgspec.msgpack.decode(path.read_bytes())
    except (OSError, msgspec.DecodeError):
        return Memory([], [], [])
    try:
        if isinstance(doc, dict) and doc.get("format") == MEMORY_FORMAT:
            traces, closed, names = doc["traces"], doc["closed"], doc["names"]
        elif isinstance(doc, dict):  # 514d29e's shape: {trace: [closed, name]}
            traces = list(doc)
            closed = [entry[0] for entry in doc.values()]
            names = [entry[1] for entry in doc.values()]
            if any(len(entry) != 2 for entry in doc.values()):
                raise ValueError("not [closed, name]")
        else:
            raise ValueError("not a memory")
        if not (isinstance(traces, list) and isinstance(closed, list) and isinstance(names, list)):
            raise ValueError("not three lists")
        if not len(traces) == len(closed) == len(names):
            raise ValueError("columns of different lengths")
        if not set(map(type, traces)) <= {str}:  # C loops: ~1 ms for 100k, not ~5
            raise ValueError("a trace id is not text")
        if not set(map(type, closed)) <= {int}:
            raise ValueError("a time is not an integer")
        ordered = closed == sorted(closed, reverse=True) and doc.get("format") == MEMORY_FORMAT
        return Memory(traces, closed, names, ordered)
    except (KeyError, TypeError, ValueError, AttributeError):
        return Memory([], [], [])


def write_memory(store: Path, memory: Memory) -> None:
    """Replace the memory of closed traces atomically (a reader sees the old or the new)."""
    folder = store / "state"
    folder.mkdir(parents=True, exist_ok=True)
    temp = folder / f".{MEMORY}.{uuid.uuid4().hex[:12]}.tmp"
    doc = {
        "format": MEMORY_FORMAT,
        "traces": memory.traces,
        "closed": memory.closed,
        "names": memory.names,
    }
    try:
        temp.write_bytes(msgspec.msgpack.encode(doc))
        os.replace(temp, folder / MEMORY)
    finally:
        temp.unlink(missing_ok=True)
