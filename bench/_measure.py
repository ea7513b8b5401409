"""What every bench script measures, and the one JSON shape it reports in (read by run_all.py).

Why one helper: wall time on this shared 2-core machine swings several-fold with other jobs'
load, so a figure is only worth printing beside the CPU seconds it took (user + system of every
thread of the process, and of the child processes it waited for), its peak memory, the load
average while it ran, and a baseline measured in the same run. Every script computing these
its own way is how bench/README.md came to hold figures nobody could reproduce.

Use it like this (bench_pricing.py and bench_prune.py are worked examples)::

    from _measure import Measure, Report, add_json_argument

    report = Report("pricing", argv=sys.argv)           # records command, commit, dirty tree
    with Measure() as m:                                # CPU, wall, peak RSS, load average
        work()
    report.row(figure="pricing rate", size="1M rows", measure=m,
               result="2.3M rows/s", baseline="calc_price loop: 22k rows/s", ratio=104.0)
    report.write(args.json)                             # the JSON result (schema below)

The JSON result (``SCHEMA`` = "llmtrace-bench/1")::

    {
      "schema": "llmtrace-bench/1",
      "bench": "pricing",                    # the name run_all.py --only takes
      "command": "python bench/bench_pricing.py --rows 1000000",
      "commit": "572059f", "dirty": false,   # git HEAD of the measured tree, uncommitted changes?
      "started": "2026-12-07T00:01:02+00:00",
      "machine": {"cpus": 2, "python": "3.11.7", "platform": "..."},
      "load_average_1m": [1.2, 3.4],         # min and max, sampled every second while it ran
      "rows": [
        {
          "figure": "pricing rate (price_calls)",
          "size": "1,000,000 rows",
          "result": "2.3M rows/s",          # the headline, as text
          "cpu_s": 0.41, "wall_s": 0.43,     # the measured section (see Measure)
          "peak_rss_mb": 612.0,              # peak resident memory during that section
          "baseline": "calc_price loop ...", # the same-run comparison, as text (or null)
          "load_average_1m": [1.2, 2.0],     # during this row's section
          ...                                # any further numbers the script wants to keep
        }
      ]
    }

Measurement notes. CPU is ``resource.getrusage`` of ``RUSAGE_SELF`` (all threads) plus
``RUSAGE_CHILDREN`` (children that exited and were waited for during the section). Peak RSS is
the kernel's high-water mark of this process (``VmHWM``), reset at the start of the section
through ``/proc/self/clear_refs`` where Linux allows it, else the process's lifetime peak; the
peak of children is ``ru_maxrss`` of ``RUSAGE_CHILDREN`` (the largest child so far); the row
reports the larger of the two. For a figure measured in a fresh process, ``run_child`` returns
that process's own CPU and peak RSS via ``os.wait4``.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA = "llmtrace-bench/1"
ROOT = Path(__file__).resolve().parent.parent


def _hwm_mb() -> float | None:
    """This process's peak RSS in MB from /proc (Linux), None elsewhere."""
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_hwm() -> bool:
    """Reset the peak-RSS mark so a section's peak is its own (Linux ≥ 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
        return True
    except OSError:
        return False


class LoadSampler:
    """Samples the 1-minute load average every ``interval`` seconds on a daemon thread (an
    ``Event.wait`` loop: its own CPU is negligible) and keeps the min and max seen."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="bench-load", daemon=True)

    def _run(self) -> None:
        while True:
            self.samples.append(os.getloadavg()[0])
            if self._stop.wait(self.interval):
                return

    def start(self) -> LoadSampler:
        self._thread.start()
        return self

    def stop(self) -> list[float]:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])
        return self.range()

    def range(self) -> list[float]:
        values = self.samples or [os.getloadavg()[0]]
        return [round(min(values), 2), round(max(values), 2)]


class Measure:
    """Context manager: CPU seconds (self + waited children), wall seconds, peak RSS and the
    load-average range of the section it wraps. Read ``cpu_s``, ``wall_s``, ``peak_rss_mb``,
    ``load`` after the block."""

    def __init__(self) -> None:
        self.cpu_s = 0.0
        self.wall_s = 0.0
        self.peak_rss_mb = 0.0
        self.load: list[float] = []

    def __enter__(self) -> Measure:
        self._reset = _reset_hwm()
        self._sampler = LoadSampler().start()
        self._self = resource.getrusage(resource.RUSAGE_SELF)
        self._children = resource.getrusage(resource.RUSAGE_CHILDREN)
        self._wall = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_s = time.perf_counter() - self._wall
        own = resource.getrusage(resource.RUSAGE_SELF)
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.cpu_s = (
            own.ru_utime
            - self._self.ru_utime
            + own.ru_stime
            - self._self.ru_stime
            + children.ru_utime
            - self._children.ru_utime
            + children.ru_stime
            - self._children.ru_stime
        )
        own_peak = _hwm_mb() if self._reset else None
        if own_peak is None:
            own_peak = own.ru_maxrss / 1024
        child_peak = (
            children.ru_maxrss / 1024 if children.ru_maxrss != self._children.ru_maxrss else 0
        )
        self.peak_rss_mb = max(own_peak, child_peak)
        self.load = self._sampler.stop()

    def figures(self) -> dict[str, Any]:
        return {
            "cpu_s": round(self.cpu_s, 4),
            "wall_s": round(self.wall_s, 4),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "load_average_1m": self.load,
        }


def run_child(argv: list[str], **popen: Any) -> tuple[str, str, dict[str, float]]:
    """Run ``argv`` to its end; return (stdout, stderr, {cpu_s, wall_s, peak_rss_mb}) of that
    process alone (``os.wait4``: its user + system time over all its threads, its peak RSS).
    Raises ``SystemExit`` naming the command if it fails."""
    began = time.perf_counter()
    process = subprocess.Popen(
        argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen
    )
    # read the pipes on threads so a chatty child never blocks on a full pipe
    chunks: dict[str, str] = {}

    def drain(name: str, stream: Any) -> None:
        chunks[name] = stream.read()

    readers = [
        threading.Thread(target=drain, args=("out", process.stdout)),
        threading.Thread(target=drain, args=("err", process.stderr)),
    ]
    for reader in readers:
        reader.start()
    _, status, usage = os.wait4(process.pid, 0)
    for reader in readers:
        reader.join()
    wall = time.perf_counter() - began
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(
            f"{' '.join(argv)} failed ({process.returncode}): {chunks.get('err', '')[-2000:]}"
        )
    return (
        chunks.get("out", ""),
        chunks.get("err", ""),
        {
            "cpu_s": usage.ru_utime + usage.ru_stime,
            "wall_s": wall,
            "peak_rss_mb": usage.ru_maxrss / 1024,
        },
    )


# what run_all.py itself writes: a change there is not a change to the measured code
OUTPUTS = ("bench/README.md", "bench/results")


def git_state(root: Path = ROOT) -> tuple[str, bool]:
    """(short HEAD commit, whether tracked files other than ``OUTPUTS`` differ from it)."""
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                [
                    "git",
                    "-C",
                    str(root),
                    "status",
                    "--porcelain",
                    "--untracked-files=no",
                    "--",
                    ".",
                    *(f":(exclude){path}" for path in OUTPUTS),
                ],  # fmt: skip
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
        return head, dirty
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False


def command_line(argv: list[str]) -> str:
    """The command as a reader would type it from the repository root, without the ``--json``
    destination (where the result went is not part of what was measured)."""
    script = Path(argv[0]).resolve()
    try:
        shown = str(script.relative_to(ROOT))
    except ValueError:
        shown = argv[0]
    rest, skip = [], False
    for arg in argv[1:]:
        if skip:
            skip = False
        elif arg == "--json":
            skip = True
        elif not arg.startswith("--json="):
            rest.append(arg)
    return " ".join(["python", shown, *rest])


class Report:
    """One script run's JSON result: the rows it measured plus where and when (see the module
    docstring for the schema)."""

    def __init__(self, bench: str, argv: list[str] | None = None) -> None:
        commit, dirty = git_state()
        self.data: dict[str, Any] = {
            "schema": SCHEMA,
            "bench": bench,
            "command": command_line(list(argv if argv is not None else sys.argv)),
            "commit": commit,
            "dirty": dirty,
            "started": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(terse=True),
            },
            "load_average_1m": None,
            "rows": [],
        }
        self._sampler = LoadSampler(interval=2.0).start()

    def row(
        self,
        *,
        figure: str,
        size: str,
        result: str,
        measure: Measure | dict[str, Any],
        baseline: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Add one table row; ``measure`` is a finished ``Measure`` or a dict with cpu_s,
        wall_s, peak_rss_mb (e.g. from ``run_child``) and optionally load_average_1m."""
        figures = measure.figures() if isinstance(measure, Measure) else dict(measure)
        row = {"figure": figure, "size": size, "result": result, **figures}
        row["baseline"] = baseline
        row.update(extra)
        self.data["rows"].append(row)
        return row

    def finish(self) -> dict[str, Any]:
        self.data["load_average_1m"] = self._sampler.stop()
        for row in self.data["rows"]:
            row.setdefault("load_average_1m", self.data["load_average_1m"])
        return self.data

    def write(self, path: Path | None) -> dict[str, Any]:
        """Finish, then write the JSON result to ``path`` (if given) and return it."""
        data = self.finish()
        if path is not None:
            Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n")
        return data


def add_json_argument(parser: Any) -> None:
    """The one option run_all.py passes to every script: where to write the JSON result."""
    parser.add_argument(
        "--json", type=Path, default=None, help="write the result (llmtrace-bench/1) here"
    )
