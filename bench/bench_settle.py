"""Settling a live app's spool: CPU seconds of one ``Store.settle()``, old tree against new.

Builds a spool as the store exporter writes it (bench_import.py's spans: HTTP root, agent span,
2-6 LLM calls per trace, turned into the importer's rows and spooled ``--batch`` spans a file),
copies it to a fresh store per run, and settles it in a child process per tree, interleaved
(old, new, old, new ...). The figure is the settle's own CPU (``time.process_time`` around
``settle()`` in the child: every thread; imports excluded, also ``llmtrace.store_spool``'s,
which a reader's first settle pays once, ~0.19 CPU s here), beside its wall and the child's
peak RSS. Every settle is checked: the calls it added (and carried) must be what was spooled.

Scenarios (one row each in bench/results/settle.json):

* ``spool``: the spool of ``--spans`` spans, every trace complete; old and new.
* ``next batch``: a store each tree settled that spool into itself (its Parquet, and the
  tree's memory of closed traces if it keeps one), plus one more batch of other traces: the
  usual settle of a running app, where a reader settles what was spooled since the last
  read; old and new.
* with ``--open-rows N``, ``spool, open traces``: the spans of the first traces, up to N LLM
  calls, lose their root spans (traces still running when the app spooled them): the new tree
  carries their calls (a carry file), the old stored them at once; and ``next batch, carry``:
  the store after that settle (the carry in its spool) plus the same one batch, new tree only
  (the old would settle the carry file as a batch), beside ``next batch``: what the carry costs
  every settle while those traces stay open.

    python bench/bench_settle.py --spans 100000 --runs 3 --old /tmp/old-2ae18f3
    python bench/bench_settle.py --spans 100000 --runs 3 --open-rows 10000 --compare-commit 2ae18f3
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import Report, add_json_argument  # noqa: E402
from bench_import import _export_commit, write_dataset  # noqa: E402

NEW = Path(__file__).resolve().parent.parent

RUN_ALL = {
    "name": "settle",
    "order": 62,
    "full": [
        "--spans",
        "100000",
        "--runs",
        "3",
        "--open-rows",
        "10000",
        "--compare-commit",
        "2ae18f3",
    ],
    "quick": [
        "--spans",
        "5000",
        "--runs",
        "1",
        "--open-rows",
        "500",
        "--compare-commit",
        "2ae18f3",
    ],
}

CHILD = """
import json, resource, sys, time
from llmtrace.store import Store
import llmtrace.store_spool  # imported by the first settle: Polars, pricing (~0.19 CPU s)
store = Store(sys.argv[1])
wall, cpu = time.perf_counter(), time.process_time()
result = store.settle()
cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"settle_cpu": cpu, "settle_wall": wall, "rss_mb": usage.ru_maxrss / 1024,
                  "added": getattr(result, "added", None),
                  "carried": getattr(result, "carried_calls", None)}))
"""


def _spans(otlp: Path) -> Any:
    """The parsed spans of the OTLP JSON files in ``otlp``, in file and line order."""
    from llmtrace.importers.otlp_spans import _json_request_spans, _json_span

    for path in sorted(otlp.iterdir()):
        for line in path.read_text().splitlines():
            for raw, (scope, resource) in _json_request_spans(json.loads(line)):
                yield _json_span(raw, scope, resource)


def build_spool(
    store: Path, spans: int, batch: int, open_rows: int, work: Path, seed: int = 7
) -> dict[str, int]:
    """Spool ``spans`` spans into ``store`` as ``batch``-span files, without the roots of the
    first traces holding ``open_rows`` LLM calls or more; returns the counts spooled."""
    from llmtrace.importers.otlp_rows import CALL_ROW, SpanRows
    from llmtrace.spool import SpoolWriter

    otlp = work / f"otlp-{spans}-{seed}"
    if not otlp.exists():
        otlp.mkdir(parents=True)
        write_dataset(otlp, spans, seed)
    # first pass: each trace's calls, and the traces in the order their roots come
    everything = SpanRows(False)
    for span in _spans(otlp):
        everything.add(span)
    trace_of = CALL_ROW.index("trace_id")
    per_trace = Counter(call[trace_of] for call in everything.calls)
    open_traces: set[str] = set()
    open_calls = 0
    for trace, _ in everything.roots:
        if open_calls >= open_rows:
            break
        open_traces.add(trace)
        open_calls += per_trace[trace]
    writer = SpoolWriter(store, keep_content=False, prices=None, config=None)
    rows, counted, calls, files = SpanRows(False), 0, 0, 0
    for span in _spans(otlp):
        if span["parent_span_id"] is None and span["trace_id"] in open_traces:
            continue  # its root: still running
        rows.spans += 1
        rows.add(span)
        counted += 1
        if rows.spans >= batch:
            writer.write(rows)
            calls += len(rows.calls)
            rows, files = SpanRows(False), files + 1
    if rows.spans:
        writer.write(rows)
        calls += len(rows.calls)
        files += 1
    return {
        "spans": counted,
        "calls": calls,
        "files": files,
        "open_traces": len(open_traces),
        "open_calls": open_calls,
    }


def settle(tree: Path, store: Path) -> dict[str, Any]:
    """Settle ``store`` in a child importing llmtrace from ``tree``; its figures."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run(
        ["/usr/bin/time", "-f", "%U %S %e %M", sys.executable, "-c", CHILD, str(store)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tempfile.gettempdir(),  # not a checkout, whose llmtrace would come first
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"settle of {store} by {tree} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    user, system, wall, _ = done.stderr.strip().splitlines()[-1].split()
    result["process_cpu"] = round(float(user) + float(system), 2)
    result["process_wall"] = float(wall)
    return result


def check(line: dict[str, Any], added: int, carried: int | None) -> None:
    """Stop the bench if a settle did not add (or carry) what was spooled."""
    if line["added"] != added or (carried is not None and line["carried"] != carried):
        raise SystemExit(
            f"{line['scenario']} ({line['tree']}): added {line['added']}, carried "
            f"{line['carried']}; expected {added} added, {carried} carried"
        )


def prepared(
    source: Path, target: Path, batch: Path, *, keep_carry: bool, tree: Path = NEW
) -> Path:
    """``source`` settled by ``tree`` into ``target``, then ``batch``'s spool file added
    (without the carry files unless ``keep_carry``)."""
    shutil.copytree(source, target)
    settle(tree, target)
    folder = target / "spool"
    folder.mkdir(exist_ok=True)
    if not keep_carry:
        for path in folder.glob("*-carry-*"):
            path.unlink()
    for path in (batch / "spool").glob("*.msgpack"):
        shutil.copy2(path, folder / path.name)
    return target


def measure(
    name: str,
    tree: Path,
    store: Path,
    added: int | None,
    carried: int | None,
    run: int,
    scenario: str,
) -> dict[str, Any]:
    """Settle ``store`` with ``tree``, print and check the figures (``added`` None: the
    caller checks), remove the store."""
    line = {"run": run, "tree": name, "scenario": scenario, **settle(tree, store)}
    print(json.dumps(line), flush=True)
    if added is not None:
        check(line, added, carried)
    shutil.rmtree(store)
    return line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=512, help="spans per spool file")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--open-rows", type=int, default=0, help="LLM calls of open traces")
    parser.add_argument("--old", type=Path, help="the old tree (e.g. /tmp/old-2ae18f3)")
    parser.add_argument("--compare-commit", help="the old tree: this commit's llmtrace")
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    add_json_argument(parser)
    args = parser.parse_args()
    report = Report("settle")
    work = Path(tempfile.mkdtemp(prefix="bench-settle-", dir=args.tmp))
    try:
        old = args.old
        old_name = str(args.old) if args.old else None
        if args.compare_commit:
            old, old_name = _export_commit(args.compare_commit, work / "old"), args.compare_commit
        trees = ([("old", old)] if old else []) + [("new", NEW)]
        built = {"spool": build_spool(work / "base", args.spans, args.batch, 0, work)}
        if args.open_rows:
            built["open"] = build_spool(work / "open", args.spans, args.batch, args.open_rows, work)
        built["batch"] = build_spool(work / "batch", args.batch, args.batch, 0, work, seed=8)
        print(json.dumps({"built": built, "load": os.getloadavg()}), flush=True)
        spool, batch = built["spool"], built["batch"]
        lines: list[dict[str, Any]] = []
        for run in range(args.runs):
            for name, tree in trees:
                store = work / f"{name}-{run}"
                shutil.copytree(work / "base", store)
                lines.append(measure(name, tree, store, spool["calls"], None, run, "spool"))
            if args.open_rows:
                opened = built["open"]
                for name, tree in trees:
                    store = work / f"open-{name}-{run}"
                    shutil.copytree(work / "open", store)
                    line = measure(name, tree, store, None, None, run, "spool, open")
                    carries = line["carried"] is not None  # 2ae18f3 stores open traces at once
                    added = opened["calls"] - (opened["open_calls"] if carries else 0)
                    check(line, added, opened["open_calls"] if carries else None)
                    lines.append(line)
            for name, tree in trees:
                store = work / f"next-{name}-{run}"
                prepared(work / "base", store, work / "batch", keep_carry=False, tree=tree)
                lines.append(measure(name, tree, store, batch["calls"], None, run, "next batch"))
            if args.open_rows:
                store = prepared(work / "open", work / "carry", work / "batch", keep_carry=True)
                carried = built["open"]["open_calls"]
                lines.append(
                    measure("new", NEW, store, batch["calls"], carried, run, "next batch, carry")
                )
        print(json.dumps({"load": os.getloadavg()}), flush=True)
        summary = summarise(lines, built, old_name, args.runs)
        for row in summary:
            print(f"{row['figure']}: {row['result']}; {row['baseline']}", flush=True)
            report.row(**row)
        report.write(args.json)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _median(lines: list[dict[str, Any]], scenario: str, tree: str, key: str) -> float | None:
    values = [x[key] for x in lines if x["scenario"] == scenario and x["tree"] == tree]
    return statistics.median(values) if values else None


def summarise(
    lines: list[dict[str, Any]], built: dict[str, dict[str, int]], old: str | None, runs: int
) -> list[dict[str, Any]]:
    """The JSON result's rows: per scenario, the new tree's medians beside the old tree's
    (or, for the carry, beside the same batch settled without it)."""

    def figures(scenario: str, tree: str) -> dict[str, Any]:
        chosen = [x for x in lines if x["scenario"] == scenario and x["tree"] == tree]
        return {
            "cpu_s": round(statistics.median(x["settle_cpu"] for x in chosen), 4),
            "wall_s": round(statistics.median(x["settle_wall"] for x in chosen), 4),
            "peak_rss_mb": round(max(x["rss_mb"] for x in chosen), 1),
            "cpu_s_runs": [round(x["settle_cpu"], 4) for x in chosen],
        }

    def per_span(cpu: float, spans: int) -> str:
        return f"{cpu / spans * 1e6:.1f} µs CPU per spooled span"

    rows = []
    spec = [("spool", "spool", "every trace complete")]
    if "open" in built:
        spec.append(("spool, open", "open", "first traces open"))
    for scenario, key, what in spec:
        counts = built[key]
        new = figures(scenario, "new")
        size = (
            f"{counts['spans']:,} spans, {counts['calls']:,} calls in {counts['files']} files "
            f"({what}"
            + (f": {counts['open_calls']:,} calls carried" if key == "open" else "")
            + f"), median of {runs}"
        )
        baseline = None
        if old is not None:
            old_cpu = _median(lines, scenario, "old", "settle_cpu")
            assert old_cpu is not None
            baseline = (
                f"{old}: {per_span(old_cpu, counts['spans'])} ({old_cpu:.3f} CPU s); "
                f"new/old {new['cpu_s'] / old_cpu:.3f}"
            )
        rows.append(
            {
                "figure": f"**settle** a spool ({scenario})",
                "size": size,
                "result": per_span(new["cpu_s"], counts["spans"]),
                "measure": new,
                "baseline": baseline,
                "scenario": scenario,
            }
        )
    batch = built["batch"]
    new = figures("next batch", "new")
    size = (
        f"1 file of {batch['spans']} spans ({batch['calls']} calls) after a settle of "
        f"{built['spool']['spans']:,} spans, median of {runs}"
    )
    baseline = None
    if old is not None:
        old_cpu = _median(lines, "next batch", "old", "settle_cpu")
        assert old_cpu is not None
        baseline = f"{old}: {old_cpu:.3f} CPU s; new/old {new['cpu_s'] / old_cpu:.3f}"
    rows.append(
        {
            "figure": "**settle** the next batch",
            "size": size,
            "result": f"{new['cpu_s']:.3f} CPU s",
            "measure": new,
            "baseline": baseline,
            "scenario": "next batch",
        }
    )
    if "open" in built:
        carry = figures("next batch, carry", "new")
        alone = new["cpu_s"]
        opened = built["open"]
        rows.append(
            {
                "figure": "**settle** the next batch with a carry (open traces)",
                "size": (
                    f"1 file of {batch['spans']} spans + a carry of {opened['open_calls']:,} "
                    f"calls ({opened['open_traces']:,} traces), median of {runs}"
                ),
                "result": f"{carry['cpu_s']:.3f} CPU s (+{carry['cpu_s'] - alone:.3f} s)",
                "measure": carry,
                "baseline": f"the same batch without the carry (new): {alone:.3f} CPU s",
                "scenario": "next batch, carry",
            }
        )
    return rows


if __name__ == "__main__":
    main()
