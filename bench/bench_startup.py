"""Start-up cost: ``llmtrace --version`` / ``--help``, each command's ``--help``, and what
``import llmtrace; llmtrace.init()`` adds to an app's start.

    python bench/bench_startup.py [--runs 15] [--baseline TREE --baseline-commit C] [--json F]

Every figure is a fresh interpreter measured by ``os.wait4`` (``_measure.run_child``): wall
time, CPU time (user + system of all its threads) and peak RSS of that process; the
configurations run interleaved, round by round, in a rotating order, so machine noise hits them
alike, and the medians are printed. The load average is sampled throughout.

"What init() adds" is the difference between the same script with and without
``import llmtrace; llmtrace.init()`` (the default store exporter, into a temporary store), in
three apps, because "adds to an app's start" has two honest readings:

* **at start**: an app that imports nothing, and one that imports ``openai``, each exiting
  right after ``init()`` returns - the time until ``init()`` returns plus whatever runs before
  the process ends (exit handlers, any thread started);
* **with its first LLM call**: an app that imports ``openai`` and makes one chat call to a
  loopback provider (``llmtrace.loopback``, started by this script) and exits: everything llmtrace
  does for that call as well - the official instrumentation's span, pricing on the worker thread
  (which loads genai-prices' data on the first call), and the store exporter spooling the call
  at exit (since 3c80e61 one msgpack file, no Polars; before, a Parquet write through Polars).
  Settling the spool into the store is a reader's work, not the app's, and not in this figure.
  This is the total CPU of a short app, background work included.

The target (issue 14) is at most 0.5 s and 40 MB, and 0.3 s for ``llmtrace --version`` /
``--help``. ``--baseline TREE`` runs the init configurations a second time with ``TREE``
(e.g. ``git worktree add /tmp/old-start <commit>``) first on ``PYTHONPATH``, interleaved with the
current code, for a same-run comparison.

Where the one-call app's CPU goes is measured too, step by step in one process (``STEPS_CODE``:
each step's CPU seconds, medians printed and kept in the JSON as ``steps_cpu_s``). For import
times: ``python -X importtime -c "import openai, llmtrace; llmtrace.init()"``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT))
from _measure import Report, add_json_argument, run_child  # noqa: E402

from llmtrace.loopback import LoopbackProvider  # noqa: E402

INIT = "import llmtrace; llmtrace.init()"
CALL = (
    "c = openai.OpenAI(max_retries=0); "
    "c.chat.completions.create(model='gpt-4o', messages=[{'role': 'user', 'content': 'Hi'}])"
)
# Every configuration runs behind this prelude: its exit handler, registered first and so run
# last, writes the process's own peak RSS (VmHWM) to $BENCH_HWM_FILE. Why not ``os.wait4``'s
# ``ru_maxrss``: subprocess starts the child by vfork, and Linux carries the pre-exec peak into
# it, so every child measured that way is at least as large as this script (~23 MB with the
# loopback server loaded: an empty Python read as 22.7 MB, its own peak is ~13 MB).
PRELUDE = (
    "import atexit\n"
    "def _hwm():\n"
    "    import os\n"
    "    with open('/proc/self/status') as f:\n"
    "        kb = next(line.split()[1] for line in f if line.startswith('VmHWM:'))\n"
    "    with open(os.environ['BENCH_HWM_FILE'], 'w') as out:\n"
    "        out.write(kb)\n"
    "atexit.register(_hwm)\n"
)
CLI = [
    sys.executable,
    "-c",
    PRELUDE + "import runpy; runpy.run_module('llmtrace.cli', run_name='__main__', alter_sys=True)",
]
# how bench/run_all.py runs this script (read there with ast.literal_eval)
RUN_ALL = {"name": "startup", "order": 70, "full": ["--runs", "5"], "quick": ["--runs", "1"]}

APPS = {  # name -> (the app without llmtrace, the same app with init())
    "empty app": ("pass", INIT),
    "app importing openai": ("import openai", f"import openai; {INIT}"),
    "app making one openai call": (f"import openai; {CALL}", f"import openai; {INIT}; {CALL}"),
}
ONE_CALL = "app making one openai call"
NOTHING_EXPORTED = f"{ONE_CALL} + init, exporters=none"
# the table's init rows: (app without llmtrace, the same with init, what the row says it is)
ROWS = (
    ("empty app", "empty app + init", "an empty app, at start"),
    ("app importing openai", "app importing openai + init", "an app importing openai, at start"),
    (ONE_CALL, f"{ONE_CALL} + init", "an app making one openai chat call (loopback), in total"),
    (
        ONE_CALL,
        NOTHING_EXPORTED,
        "the same, nothing exported (LLMTRACE_EXPORTERS=none): no spool file",
    ),
)


# Where the CPU of the one-call app goes, step by step, in one process: each step's own CPU
# seconds (``time.process_time``: all threads) in the order an app meets them, printed as JSON.
STEPS_CODE = """
import json, time
T = time.process_time
steps = {}
def step(name, fn):
    t = T(); fn(); steps[name] = T() - t
step("import openai (the app's own)", lambda: __import__("openai"))
step("import the OpenTelemetry SDK (trace, metrics, export)", lambda: (
    __import__("opentelemetry.sdk.trace.export"), __import__("opentelemetry.sdk.metrics")))
step("import llmtrace.otel (processor, exporters, metrics, setup)", lambda: (
    __import__("llmtrace.otel.exporters"), __import__("llmtrace.otel.metrics"),
    __import__("llmtrace.otel.setup")))
import llmtrace
step("init() itself (instruments openai: the official instrumentation's imports)", llmtrace.init)
from llmtrace.otel.setup import current
def chat():
    import openai
    c = openai.OpenAI(max_retries=0)
    c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])
step("the first chat call, on the app's thread (with openai's own chat modules)", chat)
step("loading the price data (genai-prices; on the pricing worker in an app)",
     current().processor._pricer.get)
step("flush: pricing the call, the store exporter spooling it", current().force_flush)
print(json.dumps(steps))
"""
STEPS = "steps of an app making one openai call + init"


def configurations(baseline: Path | None) -> dict[str, tuple[list[str], dict[str, str]]]:
    """name -> (argv, extra environment). ``X`` / ``X + init`` pairs give what init adds."""

    def py(code: str) -> list[str]:
        return [sys.executable, "-c", PRELUDE + code]

    configs: dict[str, tuple[list[str], dict[str, str]]] = {
        "llmtrace --version": ([*CLI, "--version"], {}),
        "llmtrace --help": ([*CLI, "--help"], {}),
        "llmtrace prices --help": ([*CLI, "prices", "--help"], {}),
        "llmtrace costs --help": ([*CLI, "costs", "--help"], {}),
        "llmtrace audit --help": ([*CLI, "audit", "--help"], {}),
        "llmtrace import langfuse --help": ([*CLI, "import", "langfuse", "--help"], {}),
    }
    for app, (bare, with_init) in APPS.items():
        configs[app] = (py(bare), {})
        configs[f"{app} + init"] = (py(with_init), {})
        if baseline is not None:
            configs[f"{app} + init [baseline]"] = (py(with_init), {"PYTHONPATH": str(baseline)})
    # the same call with nothing exported: llmtrace's own work without the store exporter's
    configs[NOTHING_EXPORTED] = (
        py(APPS[ONE_CALL][1]),
        {"LLMTRACE_EXPORTERS": "none"},
    )
    # the other order: init first, then the SDK (instrumented when imported)
    configs["init, then import openai"] = (py(f"{INIT}; import openai"), {})
    configs[STEPS] = (py(STEPS_CODE), {})
    return configs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--baseline", type=Path, default=None, help="an older tree to compare")
    parser.add_argument("--baseline-commit", default=None, help="its commit, for the table")
    add_json_argument(parser)
    args = parser.parse_args()
    report = Report("startup")
    provider = LoopbackProvider().start()
    with tempfile.TemporaryDirectory() as scratch:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("OTEL_", "LLMTRACE_", "OPENAI_", "PYTHONPATH"))
        }
        env.update(
            OTEL_SERVICE_NAME="bench",
            OPENAI_BASE_URL=provider.openai_base_url,
            OPENAI_API_KEY="sk-bench",
        )
        configs = configurations(args.baseline)
        samples: dict[str, list[dict[str, float]]] = {name: [] for name in configs}
        steps: list[dict[str, float]] = []

        def measure(name: str, run: int) -> dict[str, float]:
            argv, extra = configs[name]
            store = Path(scratch) / f"store-{run}-{len(samples[name])}"  # a fresh store each
            hwm = Path(scratch) / "hwm"
            hwm.unlink(missing_ok=True)
            extra = {**extra, "LLMTRACE_STORE": str(store), "BENCH_HWM_FILE": str(hwm)}
            # cwd: not the repository, whose llmtrace would shadow the baseline's (sys.path[0])
            out, _, figures = run_child(argv, env={**env, **extra}, cwd=scratch)
            figures["peak_rss_mb"] = int(hwm.read_text()) / 1024  # the child's own peak
            if name == STEPS and run >= 0:
                steps.append(json.loads(out.strip().splitlines()[-1]))
            return figures

        for name in configs:  # warm the file cache once
            measure(name, -1)
        for run in range(args.runs):
            names = list(configs)
            names = names[run % len(names) :] + names[: run % len(names)]  # rotate the order
            for name in names:
                samples[name].append(measure(name, run))
    provider.stop()
    medians = {
        name: {k: statistics.median(s[k] for s in runs) for k in ("wall_s", "cpu_s", "peak_rss_mb")}
        for name, runs in samples.items()
    }
    data = report.finish()
    load = data["load_average_1m"]
    print(f"commit {data['commit']}{'+dirty' if data['dirty'] else ''}, {args.runs} interleaved "
          f"runs, medians; 1-min load average {load[0]:.2f}-{load[1]:.2f}; {os.cpu_count()} CPUs")  # fmt: skip
    print(f"command: {data['command']}")
    print(f"{'configuration':52} {'wall s':>8} {'CPU s':>8} {'peak RSS MB':>12}")
    for name, m in medians.items():
        print(f"{name:52} {m['wall_s']:8.3f} {m['cpu_s']:8.3f} {m['peak_rss_mb']:12.1f}")

    step_medians = {name: statistics.median(s[name] for s in steps) for name in steps[0]}
    print("where the CPU of the one-call app + init goes (median CPU s per step):")
    for name, cpu in step_medians.items():
        print(f"  {cpu:6.3f}  {name}")

    def added(base: str, with_init: str) -> dict[str, float]:
        a, b = medians[base], medians[with_init]
        return {k: b[k] - a[k] for k in ("wall_s", "cpu_s", "peak_rss_mb")}

    def old_tree(with_init: str) -> str | None:
        name = f"{with_init} [baseline]"
        return name if name in medians else None

    for base, with_init, _ in ROWS:
        for name in filter(None, (with_init, old_tree(with_init))):
            d = added(base, name)
            print(
                f"'{name}' adds to '{base}': {d['wall_s']:+.3f} s wall, {d['cpu_s']:+.3f} s CPU, "
                f"{d['peak_rss_mb']:+.1f} MB peak RSS"
            )
    empty = medians["empty app"]
    for name in ("llmtrace --version", "llmtrace --help"):
        m = medians[name]
        report.row(
            figure=f"start-up: `{name}` (goal < 0.3 s)",
            size=f"fresh interpreter, median of {args.runs}",
            result=f"{m['cpu_s']:.3f} s CPU, {m['wall_s']:.3f} s wall",
            measure={k: round(v, 3) for k, v in m.items()},
            baseline=f"empty Python: {empty['cpu_s']:.3f} s CPU, {empty['peak_rss_mb']:.0f} MB",
        )
    for base, with_init, size in ROWS:
        d, before, m = added(base, with_init), medians[base], medians[with_init]
        baseline = (
            f"the same app without it: {before['cpu_s']:.3f} s CPU, {before['peak_rss_mb']:.1f} MB"
        )
        old = old_tree(with_init)
        if old is not None:
            o = added(base, old)
            baseline += (
                f"; init of the baseline tree ({args.baseline_commit or args.baseline}) adds "
                f"{o['cpu_s']:+.2f} s CPU, {o['peak_rss_mb']:+.1f} MB"
            )
        report.row(
            figure="start-up: what `import llmtrace; llmtrace.init()` adds (goal ≤ 0.5 s, 40 MB)",
            size=f"{size}, median of {args.runs}",
            result=f"**{d['cpu_s']:+.2f} s CPU, {d['peak_rss_mb']:+.1f} MB** "
            f"({d['wall_s']:+.2f} s wall)",
            measure={k: round(v, 3) for k, v in m.items()},
            baseline=baseline,
            added={k: round(v, 3) for k, v in d.items()},
        )
    data["runs"] = args.runs
    data["baseline_tree"] = str(args.baseline) if args.baseline else None
    data["medians"] = medians
    data["steps_cpu_s"] = step_medians
    report.write(args.json)


if __name__ == "__main__":
    main()
