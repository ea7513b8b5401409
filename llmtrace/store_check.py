"""``llmtrace store check``: verify every file of the store, and optionally repair it.

Verified per file: it is Parquet with a readable footer, it holds call records (the key
columns with the record's types), every data page decodes, no row lacks its key, and its
SHA-256 equals the digest the writer recorded (``store_files``; files written before digests
were recorded are counted as unverified). Also found: folders that are not days, damaged
compaction journals, unfinished compactions, leftovers of killed writers, and snapshot folders
of readers that are gone. In the live exporter's spool (``llmtrace.spool``; the command settles
it first, as every reader does): files a settle could not read (``spool/rejected/``), batches
still not settled (a newer format, or a settle that failed: its warning says why) and
half-written files of killed apps.

``repair`` moves bad files, folders and journals under ``STORE/quarantine/`` (nothing is
deleted that a person may want to inspect), finishes compactions, and removes leftovers and
stale snapshots, all while holding the writer lock so no import runs meanwhile.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from llmtrace import spool, store_files
from llmtrace.store import Store
from llmtrace.store_files import DamagedJournal, StoreProblem
from llmtrace.store_journal import JOURNAL, day_of, finish_compaction, live_files


@dataclass
class CheckReport:
    """What ``check_store`` found and did."""

    files: int = 0
    verified: int = 0
    problems: list[StoreProblem] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)

    @property
    def unrepaired(self) -> int:
        return len(self.problems) - len(self.repairs)


def check_store(store: Store, *, repair: bool = False) -> CheckReport:
    """Check (and with ``repair``, fix) every file of ``store``."""
    report = CheckReport()
    store.settle()  # as every reader: what live apps spooled first (before the lock is held)
    lock = store._locked() if repair else contextlib.nullcontext()
    with lock:
        if store.calls_dir.is_dir():
            for path in sorted(store.calls_dir.iterdir()):
                if path.is_dir() and day_of(path) is None:
                    _found(report, store, path, "stray folder (not day=YYYY-MM-DD)", repair)
                elif path.is_dir():
                    _check_day(report, store, path, repair)
        for folder in store_files.stale_snapshots(store.path / store_files.SNAPSHOTS):
            if repair:
                shutil.rmtree(folder, ignore_errors=True)
        _check_spool(report, store, repair)
    return report


def _check_spool(report: CheckReport, store: Store, repair: bool) -> None:
    """The live exporter's spool: what a settle set aside or left, and killed apps' halves.

    Rejected files are quarantined by ``repair`` (kept for inspection, like damaged Parquet);
    a batch still pending cannot be repaired here (a newer llmtrace, or a writable store,
    settles it), so it stays a problem; stale half-written files are removed."""
    rejected = spool.spool_dir(store.path) / spool.REJECTED
    if rejected.is_dir():
        for path in sorted(rejected.iterdir()):
            message = "spool file a settle could not read (its live calls are not in the store)"
            _found(report, store, path, message, repair)
    for path in spool.pending(store.path):
        if spool.is_carry(path.name) and spool.carry_due(path.name) > time.time():
            continue  # open traces and scores waiting for their call: settled when due
        report.problems.append(
            StoreProblem(path, "spooled live batch not settled (see the warning about it)")
        )
    for path in spool.stale_temporaries(store.path):
        report.problems.append(StoreProblem(path, "half-written spool file of a killed app"))
    if repair:
        for path in spool.remove_stale_temporaries(store.path):
            report.repairs.append(f"removed {path}")


def _found(report: CheckReport, store: Store, path: Path, message: str, repair: bool) -> None:
    report.problems.append(StoreProblem(path, message))
    if repair:
        moved = store_files.quarantine(store.path, path)
        report.repairs.append(f"moved {path} to {moved}")


def _check_day(report: CheckReport, store: Store, day_dir: Path, repair: bool) -> None:
    journal = day_dir / JOURNAL
    try:
        plan = store_files.read_journal(journal)
    except DamagedJournal as exc:
        _found(report, store, journal, str(exc), repair)
        plan = None
    if plan is not None:
        report.problems.append(StoreProblem(journal, "unfinished compaction"))
        if repair:
            finish_compaction(day_dir)
            report.repairs.append(f"finished the compaction of {day_dir}")
    for path in store_files.leftovers(day_dir):
        report.problems.append(StoreProblem(path, "leftover of a killed writer"))
    if repair and store_files.leftovers(day_dir):
        for path in store_files.remove_leftovers(day_dir):
            report.repairs.append(f"removed {path}")
    sums = store_files.checksums(day_dir)
    for path in live_files(day_dir):
        report.files += 1
        problem = store_files.read_problem(path)
        if problem is None and path.name in sums:
            if store_files.digest(path) != sums[path.name]:
                problem = "checksum mismatch: the file changed after it was written (damaged)"
            else:
                report.verified += 1
        if problem is not None:
            _found(report, store, path, problem, repair)
    if repair:
        store_files.prune_checksums(day_dir)
