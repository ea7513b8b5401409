"""bench/run_all.py regenerates bench/README.md's results table from the benches' JSON results.

Runs the real harness on the real pricing bench at its smoke size, into a copy of the README and
a temporary results directory: the table between the markers is rebuilt (a stale line planted
there disappears), the row carries the schema's columns, and nothing outside the markers moves.
No timing is asserted: only that the figures are there and well-formed.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "bench"
START, END = "<!-- results:start -->", "<!-- results:end -->"


def _between(text: str) -> str:
    return text.split(START, 1)[1].split(END, 1)[0]


def test_quick_pricing_regenerates_the_table(tmp_path: Path) -> None:
    original = (BENCH / "README.md").read_text()
    head, rest = original.split(START, 1)
    tail = rest.split(END, 1)[1]
    readme = tmp_path / "README.md"
    readme.write_text(f"{head}{START}\n| stale | row |\n{END}{tail}")
    results = tmp_path / "results"

    done = subprocess.run(
        [sys.executable, str(BENCH / "run_all.py"), "--quick", "--only", "pricing",
         "--readme", str(readme), "--results", str(results), "--work", str(tmp_path / "work")],
        capture_output=True, text=True, cwd=ROOT, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]

    text = readme.read_text()
    assert text.startswith(head + START) and text.endswith(END + tail)
    table = _between(text)
    assert "stale" not in table
    lines = [line for line in table.strip().splitlines() if line.startswith("| ")]
    header, rows = lines[0], lines[1:]
    for column in ("CPU s", "wall s", "peak RSS MB", "same-run baseline", "load avg", "commit"):
        assert column in header
    assert len(rows) == 1 and "pricing" in rows[0] and "20,000 rows" in rows[0]
    assert "python bench/bench_pricing.py --rows 20000" in rows[0]

    data = json.loads((results / "pricing.json").read_text())
    assert data["schema"] == "llmtrace-bench/1" and data["bench"] == "pricing"
    assert len(data["commit"]) >= 7 and isinstance(data["dirty"], bool)
    (row,) = data["rows"]
    assert row["cpu_s"] > 0 and row["wall_s"] > 0 and row["peak_rss_mb"] > 0
    low, high = row["load_average_1m"]
    assert 0 <= low <= high
    assert row["n_rows"] == 20_000 and row["max_relative_difference"] < 1e-9
    assert "calc_price" in row["baseline"]


def test_unknown_bench_and_missing_markers_are_usage_errors(tmp_path: Path) -> None:
    run_all = [sys.executable, str(BENCH / "run_all.py")]
    unknown = subprocess.run([*run_all, "--only", "nope"], capture_output=True, text=True)
    assert unknown.returncode == 2 and "unknown bench nope" in unknown.stdout
    readme = tmp_path / "README.md"
    readme.write_text("# no markers\n")
    no_markers = subprocess.run(
        [*run_all, "--table-only", "--readme", str(readme), "--results", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert no_markers.returncode == 2 and "markers" in no_markers.stdout
    assert readme.read_text() == "# no markers\n"


def test_every_bench_spec_is_well_formed() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import run_all
    finally:
        sys.path.remove(str(BENCH))
    benches = run_all.discover()
    assert {"pricing", "prune"} <= set(benches)
    for name, spec in benches.items():
        assert spec["name"] == name
        assert all(isinstance(a, str) for a in spec["full"] + spec["quick"]), name
