"""Peak RSS of ``llmtrace import otlp`` on one JSON-lines file, with a good and with a bad first
line (issue 12: a bad first line made the reader hold the whole file). Optionally the same with
an older checkout (``--old DIR``, e.g. ``git archive d007238 llmtrace rules | tar x -C DIR``).

    python bench/bad_first_line.py --spans 200000 --tmp /tmp/bfl --old /tmp/bfl/old
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

import bench_import  # noqa: E402


def peak(code: Path, path: Path, store: Path) -> tuple[float, float]:
    """(peak RSS in GB, seconds) of the command run with the llmtrace found under ``code``."""
    shutil.rmtree(store, ignore_errors=True)
    argv = ["llmtrace", "import", "otlp", str(path), "--store", str(store)]
    prog = (
        f"import sys; sys.path.insert(0, {str(code)!r}); sys.argv = {argv!r}; "
        "from llmtrace.cli import main; main()"
    )
    began = time.perf_counter()
    child = subprocess.Popen([sys.executable, "-c", prog], stdout=subprocess.DEVNULL)
    _, _, usage = os.wait4(child.pid, 0)
    return usage.ru_maxrss / 1024**2, time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--tmp", type=Path, default=Path("/tmp/bfl"))
    parser.add_argument("--old", type=Path, default=None, help="an older checkout to compare")
    args = parser.parse_args()
    data = args.tmp / "data"
    data.mkdir(parents=True, exist_ok=True)
    if not list(data.glob("traces-*.jsonl")):
        bench_import.SPANS_PER_FILE = args.spans
        bench_import.write_dataset(data, args.spans)
    good = next(data.glob("traces-*.jsonl"))
    bad = args.tmp / "bad-first-line.jsonl"
    if not bad.exists():
        bad.write_bytes(b"{not json at all\n" + good.read_bytes())
    print(f"input: {bad.stat().st_size / 1e6:.1f} MB, {args.spans:,} spans")
    for label, code in (("old", args.old), ("this checkout", ROOT)):
        if code is None:
            continue
        for name, path in (("good first line", good), ("bad first line", bad)):
            rss, seconds = peak(code, path, args.tmp / "store")
            print(f"{label:14} {name:16} peak RSS {rss:.2f} GB ({seconds:.0f} s)")


if __name__ == "__main__":
    main()
