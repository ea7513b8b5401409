"""CPU per span of the store exporter's per-span step (``exporters.span_rows``) and its export.

    python bench/bench_span_rows.py [--reps 20] [--trees OLD NEW [--pairs 3]]

The default store exporter turns every span an app ends into the importer's rows on its
batch processor's thread (``StoreSpanExporter.export`` -> ``span_rows``); bench_live_spans.py
``--modes store`` measures it inside the whole pipeline, where it is one thread among three.
This script measures it alone, on the spans the exporter receives:

* ``libraries`` - every recorded library (tests/fixtures/libraries) replayed through the live
                  processor (priced LLM spans with llmtrace's attributes, their parents);
* ``bench``     - bench_live_spans.py's call (the official OpenAI instrumentation's span, the
                  completion hook's fingerprints) as llmtrace's processor hands it on;
* ``other``     - an app's other spans: HTTP server and client, database, internal (some with
                  an exception recorded);
* ``mixed``     - one ``bench`` span to three ``other`` spans.

For each: ``span_rows`` of the set, and ``export`` of it with the spool file's write stubbed
(the exporter's own CPU: holding back, twins, trace filtering), in us per span, the median of
5 timings of ``--reps`` runs each, the collector off while timing. ``--trees OLD NEW`` runs
this script in a process per tree (``PYTHONPATH``), alternating, ``--pairs`` times: the
interleaved comparison of two commits (``git worktree add /tmp/old COMMIT``).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def library_spans(root: Path) -> list[Any]:
    sys.path.insert(0, str(root / "tests"))
    from recorded import fixture_paths, replay

    from llmtrace.otel.processor import LazyPriceBook

    book = LazyPriceBook()
    book.get()
    return [span for path in fixture_paths() for span in replay(path, book)]


def bench_spans(root: Path, count: int) -> list[Any]:
    """bench_live_spans.py's calls through llmtrace's pipeline, as its exporters get them."""
    sys.path.insert(0, str(root / "bench"))
    import bench_live_spans
    import bench_overhead
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    memory = InMemorySpanExporter()
    bench_overhead.NoopExporter = lambda: memory  # the span exporter the pipeline is given
    config = bench_live_spans.Config("llmtrace")
    config.calls(count, 0)
    return list(memory.get_finished_spans())


def other_spans(count: int) -> list[Any]:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.trace import Status, StatusCode

    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    http = provider.get_tracer("opentelemetry.instrumentation.fastapi")
    db = provider.get_tracer("opentelemetry.instrumentation.sqlalchemy")
    for number in range(count // 4):
        route = {"http.request.method": "GET", "url.path": f"/items/{number}"}
        route |= {"http.route": "/items/{id}", "server.address": "localhost", "server.port": 8000}
        with http.start_as_current_span("GET /items/{id}", attributes=route) as server:
            query = {"db.system.name": "postgresql", "db.namespace": "app"}
            query |= {"db.query.text": "SELECT * FROM items WHERE id = %s", "server.port": 5432}
            with db.start_as_current_span("SELECT items", attributes=query):
                pass
            with http.start_as_current_span("internal") as internal:
                if number % 5 == 0:
                    try:
                        raise ValueError("boom")
                    except ValueError as exc:
                        internal.record_exception(exc)
                        internal.set_status(Status(StatusCode.ERROR))
            with http.start_as_current_span("http send", attributes={"http.status": 200}):
                pass
            server.set_attribute("http.response.status_code", 200)
    return list(memory.get_finished_spans())


def median_us(function: Any, spans: int, reps: int) -> float:
    timings = []
    for _ in range(5):
        gc.collect()
        gc.disable()
        start = time.process_time()
        for _ in range(reps):
            function()
        timings.append((time.process_time() - start) / reps / spans * 1e6)
        gc.enable()
    return sorted(timings)[2]


def measure(reps: int) -> dict[str, Any]:
    from llmtrace.otel.exporters import StoreSpanExporter, span_rows

    bench = bench_spans(ROOT, 200)
    other = other_spans(400)
    sets = {
        "libraries": library_spans(ROOT),
        "bench": bench,
        "other": other,
        "mixed": bench[:100] + other[:300],
    }
    out: dict[str, Any] = {}
    for name, spans in sets.items():
        exporter = StoreSpanExporter(tempfile.mkdtemp(prefix="llmtrace-bench-rows-"))
        exporter._spool().write = lambda rows, roots=(): None  # the exporter's CPU, no file
        for _ in range(3):
            span_rows(spans)
        out[name] = {
            "spans": len(spans),
            "span_rows_us": round(median_us(lambda s=spans: span_rows(s), len(spans), reps), 2),
            "export_us": round(median_us(lambda s=spans, e=exporter: e.export(s), len(spans), reps), 2),
        }  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--trees", nargs=2, type=Path, metavar=("OLD", "NEW"))
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--json-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if not args.trees:
        result = measure(args.reps)
        import llmtrace

        if args.json_only:
            print(json.dumps({"tree": str(Path(llmtrace.__file__).parent.parent), **result}))
            return
        print(f"{Path(llmtrace.__file__).parent.parent}; load {os.getloadavg()[0]:.1f}")
        for name, row in result.items():
            print(f"  {name:10s} ({row['spans']:4d} spans): span_rows {row['span_rows_us']:6.2f}"
                  f" us, export {row['export_us']:6.2f} us per span")  # fmt: skip
        return
    print(f"{args.pairs} interleaved pairs, us per span (span_rows / export, spool write stubbed)")
    for pair in range(args.pairs):
        for tree in args.trees:
            env = {**os.environ, "PYTHONPATH": str(tree.resolve())}
            load = os.getloadavg()[0]
            found = subprocess.run(
                [sys.executable, __file__, "--reps", str(args.reps), "--json-only"],
                env=env, capture_output=True, text=True, check=True, cwd=tree,
            )  # fmt: skip
            rows = json.loads(found.stdout.strip().splitlines()[-1])
            assert Path(rows.pop("tree")).resolve() == tree.resolve(), "llmtrace of another tree"
            cells = ", ".join(
                f"{name} {row['span_rows_us']:.2f} / {row['export_us']:.2f}"
                for name, row in rows.items()
            )
            print(f"  pair {pair + 1} {str(tree):28s} load {load:.1f}: {cells}")


if __name__ == "__main__":
    main()
