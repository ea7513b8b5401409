"""Start-up cost: ``llmtrace --version`` / ``--help``, each command's ``--help``, and what
``import llmtrace; llmtrace.init()`` adds to an app's start.

    python bench/bench_startup.py [--runs 15] [--json out.json]

Every figure is a fresh interpreter (``subprocess``), measured by ``os.wait4``: wall time, CPU
time (user + system) and peak RSS of that process; the configurations run interleaved, round
by round, so machine noise hits them alike, and the medians are printed. The app start compares
the same script with and without ``import llmtrace; llmtrace.init()`` (store exporter, the
default, into a temporary store), once for an app that imports ``openai`` and once for one that
imports nothing: the difference is what llmtrace adds; and 4 s later, when ``init()``'s
background thread has loaded the price data (genai-prices; no Polars since the
live side prices through ``llmtrace.price_book``). The target (issue 14) is at most 0.5 s
and 40 MB, and 0.3 s for ``llmtrace --version`` / ``--help``. Prints the load average, the
command and the commit, for bench/README.md.

For where import time goes: ``python -X importtime -c "import llmtrace; llmtrace.init()"``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

sys.path.insert(0, str(ROOT / "bench"))
from _measure import git_state  # noqa: E402 - commit and dirty flag, as every bench records them

INIT = "import llmtrace; llmtrace.init()"
CLI = [sys.executable, "-m", "llmtrace.cli"]
# how bench/run_all.py runs this script (read there with ast.literal_eval)
RUN_ALL = {"name": "startup", "order": 70, "full": ["--runs", "5"], "quick": ["--runs", "1"]}


def configurations(store: str) -> dict[str, list[str]]:
    """name -> argv. Pairs named ``X`` / ``X + init`` give what init adds."""
    py = [sys.executable, "-c"]
    return {
        "llmtrace --version": [*CLI, "--version"],
        "llmtrace --help": [*CLI, "--help"],
        "llmtrace prices --help": [*CLI, "prices", "--help"],
        "llmtrace costs --help": [*CLI, "costs", "--help"],
        "llmtrace audit --help": [*CLI, "audit", "--help"],
        "llmtrace import langfuse --help": [*CLI, "import", "langfuse", "--help"],
        "python (empty app)": [*py, "pass"],
        "python (empty app) + init": [*py, INIT],
        "app importing openai": [*py, "import openai"],
        "app importing openai + init": [*py, f"import openai; {INIT}"],
        # the other order: init first, then the SDK (instrumented when imported)
        "init, then import openai": [*py, f"{INIT}; import openai"],
        # steady state: init's background thread has loaded the price data by then
        "app importing openai, 4 s later": [*py, "import openai, time; time.sleep(4)"],
        "app importing openai + init, 4 s later": [
            *py,
            f"import openai, time; {INIT}; time.sleep(4)",
        ],
    }


PAIRS = (
    ("python (empty app)", "python (empty app) + init"),
    ("app importing openai", "app importing openai + init"),
    ("app importing openai, 4 s later", "app importing openai + init, 4 s later"),
)
PAIR_SIZES = (
    "an empty app, at start",
    "an app importing openai, at start",
    "the same, 4 s later (price data loaded)",
)


def measure(argv: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """(wall s, CPU s, peak RSS MB) of one run of ``argv``."""
    start = time.perf_counter()
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        error = process.stderr.read().decode() if process.stderr else ""
        raise SystemExit(f"{argv} failed ({process.returncode}): {error}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as store:
        env = {**os.environ, "LLMTRACE_STORE": store, "OTEL_SERVICE_NAME": "bench"}
        for name in ("OTEL_EXPORTER_OTLP_ENDPOINT", "LLMTRACE_EXPORTERS"):
            env.pop(name, None)
        configs = configurations(store)
        samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in configs}
        for argv in configs.values():  # warm the file cache once
            measure(argv, env)
        loads = []
        started = datetime.now(UTC).isoformat(timespec="seconds")
        for run in range(args.runs):
            names = list(configs)
            names = names[run % len(names) :] + names[: run % len(names)]  # rotate the order
            for name in names:
                samples[name].append(measure(configs[name], env))
            loads.append(os.getloadavg()[0])
    medians = {
        name: tuple(statistics.median(s[i] for s in runs) for i in range(3))
        for name, runs in samples.items()
    }
    print(f"commit {git_state()[0]}, {args.runs} interleaved runs, medians; 1-min load average "
          f"{min(loads):.2f}-{max(loads):.2f}; {os.cpu_count()} CPUs")  # fmt: skip
    print(f"command: python bench/bench_startup.py --runs {args.runs}")
    print(f"{'configuration':34} {'wall s':>8} {'CPU s':>8} {'peak RSS MB':>12}")
    for name, (wall, cpu, rss) in medians.items():
        print(f"{name:34} {wall:8.3f} {cpu:8.3f} {rss:12.1f}")
    added = {}
    for base, with_init in PAIRS:
        a, b = medians[base], medians[with_init]
        added[with_init] = {"wall_s": b[0] - a[0], "cpu_s": b[1] - a[1], "rss_mb": b[2] - a[2]}
        print(
            f"init adds to '{base}': {b[0] - a[0]:+.3f} s wall, {b[1] - a[1]:+.3f} s CPU, "
            f"{b[2] - a[2]:+.1f} MB peak RSS"
        )
    if args.json:
        rows = []
        for name in ("llmtrace --version", "llmtrace --help"):
            wall, cpu, rss = medians[name]
            rows.append(
                {
                    "figure": f"start-up: `{name}` (goal < 0.3 s)",
                    "size": f"fresh interpreter, median of {args.runs}",
                    "result": f"{cpu:.3f} s CPU, {wall:.3f} s wall",
                    "cpu_s": round(cpu, 3),
                    "wall_s": round(wall, 3),
                    "peak_rss_mb": round(rss, 1),
                    "baseline": f"empty Python: {medians['python (empty app)'][1]:.3f} s CPU",
                }
            )
        for (base, with_init), size in zip(PAIRS, PAIR_SIZES, strict=True):
            (wall, cpu, rss), (base_wall, base_cpu, base_rss) = medians[with_init], medians[base]
            rows.append(
                {
                    "figure": "start-up: what `import llmtrace; llmtrace.init()` adds "
                    "(goal ≤ 0.5 s, 40 MB)",
                    "size": size,
                    "result": f"**{cpu - base_cpu:+.2f} s CPU, {rss - base_rss:+.1f} MB** "
                    f"({wall - base_wall:+.2f} s wall)",
                    "cpu_s": round(cpu, 3),
                    "wall_s": round(wall, 3),
                    "peak_rss_mb": round(rss, 1),
                    "baseline": f"the same app without it: {base_cpu:.3f} s CPU, {base_rss:.1f} MB",
                }
            )
        args.json.write_text(
            json.dumps(
                {
                    "schema": "llmtrace-bench/1",  # bench/run_all.py's result shape
                    "bench": "startup",
                    "command": f"python bench/bench_startup.py --runs {args.runs}",
                    "commit": git_state()[0],
                    "dirty": git_state()[1],
                    "started": started,
                    "machine": {
                        "cpus": os.cpu_count(),
                        "python": platform.python_version(),
                        "platform": platform.platform(),
                    },
                    "load_average_1m": [min(loads), max(loads)],
                    "rows": rows,
                    "runs": args.runs,
                    "medians": {
                        n: dict(zip(("wall_s", "cpu_s", "rss_mb"), m, strict=True))
                        for n, m in medians.items()
                    },
                    "init_adds": added,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
