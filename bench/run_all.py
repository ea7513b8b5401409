"""Run the benchmarks and regenerate bench/README.md's results table from what they measured.

    python bench/run_all.py                      # every bench, full sizes (tens of minutes)
    python bench/run_all.py --only pricing       # one bench (repeat --only, or a,b, for more)
    python bench/run_all.py --quick              # smoke sizes; prints the table, README untouched
    python bench/run_all.py --quick --only pricing --readme /tmp/README.md --results /tmp/r
    python bench/run_all.py --list               # the benches it knows and their arguments
    python bench/run_all.py --table-only         # rebuild the table from the stored results

Why: a figure in bench/README.md is only worth keeping if anyone can rerun it and get the same
kind of number. So the table between ``<!-- results:start -->`` and ``<!-- results:end -->`` is
never edited by hand: each bench script writes one JSON result (bench/results/NAME.json, kept in
git), and the table is rebuilt from all of them. A row shows the figure and size, CPU seconds
(user + system of every thread and waited child) beside wall time, peak RSS, the baseline
measured in the same run, the 1-minute load average during the run (min-max), the exact command
and the commit it ran at (``+dirty`` when the tree had uncommitted changes). ``--only NAME``
reruns one bench and keeps the others' stored results, so the table stays whole.

Plugging a new bench in (no edit of this file needed):

1. In the script, measure with ``bench/_measure.py`` and write its JSON result (schema
   ``llmtrace-bench/1``, documented there) to the path given by ``--json PATH``::

       sys.path.insert(0, str(Path(__file__).resolve().parent))
       from _measure import Measure, Report, add_json_argument

       report = Report("NAME")
       with Measure() as m:
           ...                                   # the work being measured
       report.row(figure=..., size=..., result=..., measure=m, baseline=...)
       report.write(args.json)

2. Declare how to run it, as a literal at module level (read with ``ast.literal_eval``; this
   file never imports a bench script)::

       RUN_ALL = {
           "name": "NAME",                       # for --only, and bench/results/NAME.json
           "order": 30,                          # row order in the table
           "full": ["--runs", "3"],              # arguments for the documented full run
           "quick": ["--runs", "1"],             # arguments for a smoke run (seconds)
           "store": {"full": 10_000_000, "quick": 50_000},  # optional: a demo store of N calls,
                                                 # built once by gen_store.py, passed as --store
           "requires": ["duckdb"],               # optional: modules the baseline needs
       }

Exit codes: 0 done, 1 a bench failed (the others still ran; its old result is kept), 2 usage
(unknown bench name, README without the markers).
"""

from __future__ import annotations

import argparse
import ast
import importlib.util
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
START = "<!-- results:start -->"
END = "<!-- results:end -->"
SCHEMA = "llmtrace-bench/1"


def discover(directory: Path = HERE) -> dict[str, dict[str, Any]]:
    """name -> spec (plus ``script``) of every bench script declaring ``RUN_ALL``."""
    benches: dict[str, dict[str, Any]] = {}
    for script in sorted(directory.glob("*.py")):
        if script.name.startswith("_") or script.name == "run_all.py":
            continue
        tree = ast.parse(script.read_text(), filename=str(script))
        for node in tree.body:
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AnnAssign) and node.value is not None
                else []
            )
            if any(isinstance(t, ast.Name) and t.id == "RUN_ALL" for t in targets):
                spec = dict(ast.literal_eval(node.value))  # type: ignore[arg-type]
                spec["script"] = script
                benches[spec["name"]] = spec
    return dict(sorted(benches.items(), key=lambda kv: (kv[1].get("order", 100), kv[0])))


def store_for(rows: int, work: Path) -> Path:
    """A demo store of ``rows`` calls under ``work``, built by gen_store.py once and reused
    (a ``.done`` marker says the build finished)."""
    path = work / f"store-{rows}"
    done = work / f"store-{rows}.done"
    if not done.exists():
        work.mkdir(parents=True, exist_ok=True)
        print(f"building a {rows:,}-call store in {path} (gen_store.py)", file=sys.stderr)
        subprocess.run(
            [sys.executable, str(HERE / "gen_store.py"), "--rows", str(rows), "--store", str(path)],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        done.write_text("")
    return path


def run_bench(spec: dict[str, Any], *, quick: bool, out: Path, work: Path) -> str | None:
    """Run one bench script into ``out``; None when it worked, else why not."""
    missing = [m for m in spec.get("requires", []) if importlib.util.find_spec(m) is None]
    if missing:
        return f"skipped: needs {', '.join(missing)} (pip install {' '.join(missing)})"
    argv = [sys.executable, str(spec["script"]), *spec["quick" if quick else "full"]]
    if "store" in spec:
        argv += ["--store", str(store_for(int(spec["store"]["quick" if quick else "full"]), work))]
    argv += ["--json", str(out)]
    print(f"$ {' '.join(argv[1:])}", file=sys.stderr, flush=True)
    done = subprocess.run(argv, cwd=ROOT, check=False)
    if done.returncode != 0:
        return f"failed with exit code {done.returncode}"
    data = json.loads(out.read_text())
    if data.get("schema") != SCHEMA:
        return f"wrote no {SCHEMA} result"
    return None


def _num(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


def _load(value: list[float] | None) -> str:
    if not value:
        return "—"
    low, high = value
    return f"{low:.1f}" if f"{low:.1f}" == f"{high:.1f}" else f"{low:.1f}–{high:.1f}"


def table(results: list[dict[str, Any]]) -> str:
    """The markdown table of every row of every result, in bench order."""
    lines = [
        "| figure | size | result | CPU s | wall s | peak RSS MB | same-run baseline "
        "| load avg (1 min) | command, commit |",
        "|---|---|---|---:|---:|---:|---|---|---|",
    ]
    for data in results:
        commit = data["commit"] + ("+dirty" if data.get("dirty") else "")
        where = f"`{data['command']}` at {commit}, {data['started'][:10]}"
        for row in data["rows"]:
            cells = [
                row["figure"],
                row["size"],
                row["result"],
                _num(row.get("cpu_s")),
                _num(row.get("wall_s")),
                _num(row.get("peak_rss_mb"), 0),
                row.get("baseline") or "—",
                _load(row.get("load_average_1m") or data.get("load_average_1m")),
                where,
            ]
            lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def regenerate(readme: Path, results: list[dict[str, Any]]) -> None:
    """Replace what lies between the markers with the table (the rest of the file untouched)."""
    text = readme.read_text()
    if START not in text or END not in text or text.index(START) > text.index(END):
        raise SystemExit(2)
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{START}\n{table(results)}\n{END}{tail}")


def load_results(directory: Path, order: list[str]) -> list[dict[str, Any]]:
    found = []
    for path in sorted(directory.glob("*.json")):
        data = json.loads(path.read_text())
        if data.get("schema") == SCHEMA:
            found.append(data)
    rank = {name: i for i, name in enumerate(order)}
    return sorted(found, key=lambda d: (rank.get(d["bench"], len(rank)), d["bench"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke sizes (seconds per bench)")
    parser.add_argument("--only", action="append", default=[], metavar="NAME")
    parser.add_argument("--readme", type=Path, default=None, help="default: bench/README.md")
    parser.add_argument("--results", type=Path, default=None, help="default: bench/results")
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "llmtrace-bench")
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--table-only", action="store_true")
    args = parser.parse_args(argv)

    benches = discover()
    if args.list:
        for name, spec in benches.items():
            print(f"{name:10} {spec['script'].name:22} full: {' '.join(spec['full'])}")
            print(f"{'':33} quick: {' '.join(spec['quick'])}")
        return 0
    only = [n for item in args.only for n in item.split(",") if n]
    unknown = sorted(set(only) - set(benches))
    if unknown:
        print(f"error: unknown bench {', '.join(unknown)} (known: {', '.join(benches)})")
        return 2
    # quick results never overwrite the full ones, nor the README, unless a path is given
    results_dir = args.results or (args.work / "quick-results" if args.quick else HERE / "results")
    readme = args.readme or (None if args.quick else HERE / "README.md")
    if readme is not None:
        text = readme.read_text()
        if START not in text or END not in text:
            print(f"error: {readme} has no {START} ... {END} markers")
            return 2
    results_dir.mkdir(parents=True, exist_ok=True)

    failed = []
    if not args.table_only:
        for name in only or list(benches):
            with tempfile.TemporaryDirectory() as scratch:
                out = Path(scratch) / f"{name}.json"
                problem = run_bench(benches[name], quick=args.quick, out=out, work=args.work)
                if problem is None:
                    (results_dir / f"{name}.json").write_text(out.read_text())
                else:
                    print(f"{name}: {problem}", file=sys.stderr)
                    if problem.startswith("failed") or problem.startswith("wrote"):
                        failed.append(name)
    results = load_results(results_dir, list(benches))
    if readme is None:
        print(table(results))
    else:
        regenerate(readme, results)
        print(f"{readme}: table regenerated from {len(results)} result(s) in {results_dir}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
