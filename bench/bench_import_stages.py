"""Where ``import otlp`` spends its CPU: each stage of the importer timed alone, per span.

Why (issue 15): the import is measured whole by bench_import.py; this says which stage the
remaining CPU is in, so the next attempt starts from figures rather than a profile's guesses.
Stages, on bench_import's generated JSON lines, in this process (no start-up, no pricing or
storing; the minimum of ``--repeats`` runs of each, the GC off as the importer has it):

* the orjson parse-only baseline (every line parsed, results kept);
* the columnar lane (``otlp_columns``), as ``_read_lines`` drives it: msgspec's typed decode,
  the one Python loop flattening spans and the attributes the dialects read into lists, and
  ``settle`` (typed attribute columns, Langfuse's JSON read per distinct text, content
  fingerprints of the calls carrying content, and the rest: frames and the dialect
  expressions of ``dialect_columns``);
* the batch step in Polars (``_Stream.step``: twin merging, actions, agents, scores).

    python bench/bench_import_stages.py --spans 100000
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import Measure, Report, add_json_argument  # noqa: E402
from bench_import import write_dataset  # noqa: E402

RUN_ALL = {
    "name": "import-stages",
    "order": 21,
    "full": ["--spans", "100000"],
    "quick": ["--spans", "3000", "--repeats", "1"],
    "requires": ["orjson"],
}


def _best(work: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """(minimum CPU seconds over ``repeats`` runs, the last result)."""
    best, result = float("inf"), None
    for _ in range(repeats):
        began = time.process_time()
        result = work()
        best = min(best, time.process_time() - began)
    return best, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    add_json_argument(parser)
    args = parser.parse_args()
    report = Report("import-stages")

    import orjson

    from llmtrace.accuracy import AccuracyConfig
    from llmtrace.importers import otlp_columns
    from llmtrace.importers.otlp import _Collector, _Stream
    from llmtrace.importers.otlp_columns import Pending, decode

    with tempfile.TemporaryDirectory() as tmp:
        count, _ = write_dataset(Path(tmp), args.spans)
        lines = [line for path in sorted(Path(tmp).iterdir()) for line in path.open("rb")]
    gc.disable()
    repeats = args.repeats
    parts = ("_attribute_columns", "_json_columns", "_content")
    spent = dict.fromkeys(parts, 0.0)
    originals = {name: getattr(otlp_columns, name) for name in parts}

    def timed(name: str) -> Callable[..., Any]:
        def run(*args: Any) -> Any:
            began = time.process_time()
            try:
                return originals[name](*args)
            finally:
                spent[name] += time.process_time() - began

        return run

    with Measure() as whole:
        parse, _ = _best(lambda: [orjson.loads(line) for line in lines], repeats)
        decoding, requests = _best(lambda: [decode(line) for line in lines], repeats)

        def flatten() -> Pending:
            pending = Pending(False)
            for number, request in enumerate(requests, start=1):
                pending.add_line(request, "bench", number)
            return pending

        flattening, _ = _best(flatten, repeats)

        def collect() -> _Collector:
            sink = _Collector(False)
            for number, line in enumerate(lines, start=1):
                sink.add_columnar(decode(line), "bench", number)
            sink.settle()
            return sink

        collecting, sink = _best(collect, repeats)
        for name in parts:  # one more run, its settle's parts timed
            setattr(otlp_columns, name, timed(name))
        try:
            collect()
        finally:
            for name, function in originals.items():
                setattr(otlp_columns, name, function)
        accuracy = AccuracyConfig.resolve((), None)
        segments = list(sink.segments)

        def step() -> Any:
            sink.segments = list(segments)
            return _Stream(accuracy, "otlp", 1_000_000).step(sink, final=True)

        stepping, result = _best(step, repeats)
    gc.enable()
    total = collecting + stepping
    columns, json, content = (spent[name] for name in parts)
    settling = collecting - decoding - flattening
    stages = [
        ("msgspec typed decode (`otlp_columns.decode`)", decoding),
        ("flattening spans and read attributes into lists (`Pending.add_line`)", flattening),
        ("settle: typed attribute columns from the lists", columns),
        ("settle: Langfuse JSON usage and cost, per distinct text", json),
        ("settle: content fingerprints (`content_fields`), calls with content", content),
        (
            "settle: the rest (frames, dialect expressions, segment)",
            settling - columns - json - content,
        ),
        ("batch step in Polars (`_Stream.step`)", stepping),
        ("**total** (collecting + batch step)", total),
    ]
    llm = result.calls.height
    baseline = f"orjson parse-only: {parse * 1e6 / count:.1f} µs per span; total ÷ parse = {total / parse:.1f}"
    size = (
        f"{count:,} spans, {llm:,} calls, columnar lane, in one process (peak RSS: the "
        "bench's, every span held)"
    )
    for name, seconds in stages:
        report.row(
            figure=f"import stage: {name}",
            size=size,
            result=f"{seconds * 1e6 / count:.1f} µs per span ({seconds / total:.0%} of total)",
            measure={
                "cpu_s": round(seconds, 3),
                "wall_s": None,
                "peak_rss_mb": round(whole.peak_rss_mb, 1),
                "load_average_1m": whole.load,
            },
            baseline=baseline,
        )
        print(f"{name:70s} {seconds * 1e6 / count:6.1f} µs/span  {seconds / total:4.0%}")
    print(baseline)
    report.write(args.json)


if __name__ == "__main__":
    main()
