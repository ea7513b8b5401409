"""Benchmark ``import_otlp``: spans per second on synthetic OTLP JSON lines.

Writes N spans (100 per line, one ExportTraceServiceRequest per line, as the Collector file
exporter does) to a temporary directory and times ``import_otlp`` over it, reporting the median
of several runs. The mix imitates real traces: every trace has an HTTP root and an agent span
(not LLM calls), then LLM spans in the dialects llmtrace reads (OTel GenAI util-genai,
OpenLLMetry, OpenInference, OpenLIT on Anthropic, Logfire, Langfuse), a third of them carrying
message content as the content-on-by-default instrumentations do.

The baseline, measured in the same run (issue 15): an orjson parse-only pass over the same
files (each line parsed, its spans counted, nothing kept). orjson is a benchmark-only extra,
like DuckDB for bench_audit.py (``pip install orjson``); without it the stdlib parser stands in.
Figures are CPU seconds (user + system of every thread), so they hold on a loaded machine.

Run by hand::

    python bench/bench_import.py --spans 200000 --runs 3   # import_otlp in this process

``--command`` measures the whole ``llmtrace import otlp`` instead (streaming read, pricing and
appending to a new store, batch by batch), ``--runs`` interleaved pairs of (parse-only, import)
per size, each in a child process whose CPU time and peak RSS are read from ``wait4``; inputs
and stores go under ``--tmp`` and are deleted after each size::

    python bench/bench_import.py --command --sizes 1000000 --runs 3 --json /tmp/import.json

``--compare-python`` times another checkout in the same interleaved run, e.g. the code before
a change: ``git worktree add /tmp/base COMMIT && python -m venv --system-site-packages
/tmp/base/.venv && /tmp/base/.venv/bin/pip install --no-deps -e /tmp/base``, then
``--compare-python /tmp/base/.venv/bin/python``.
"""

from __future__ import annotations

import argparse
import gzip
import json
import multiprocessing
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _measure import Report, add_json_argument  # noqa: E402

# how run_all.py runs this script (read with ast.literal_eval, never imported by it): the
# import command at 1M spans beside the orjson parse-only baseline and the importer as it was
# before this round (8d3ae20, the eighth session's start), interleaved in the same run
RUN_ALL = {
    "name": "import",
    "order": 20,
    "full": ["--command", "--sizes", "1000000", "--runs", "2", "--compare-commit", "2ae18f3"],
    "quick": ["--command", "--sizes", "20000", "--runs", "1", "--compare-commit", "2ae18f3"],
    "requires": ["orjson"],
}

SPANS_PER_LINE = 100
LINES_PER_FILE = 200
START_NS = 1_764_201_600_000_000_000  # 2025-11-27T00:00:00Z

SYSTEM_PROMPT = (
    "You are a support assistant for an online shop. Answer briefly, cite the order number, "
    "never promise refunds, and escalate to a human when the customer is angry. " * 3
)


def _value(value: Any) -> dict[str, Any]:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, list):
        return {"arrayValue": {"values": [_value(v) for v in value]}}
    return {"stringValue": value}


def _attributes(values: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": k, "value": _value(v)} for k, v in values.items()]


def _messages(rng: random.Random, turns: int) -> list[dict[str, str]]:
    return [
        {
            "role": "user" if i % 2 == 0 else "assistant",
            "content": f"turn {i} " * rng.randint(5, 40),
        }
        for i in range(turns)
    ]


def _llm_attributes(rng: random.Random, dialect: str, content: bool) -> tuple[str, dict]:
    """(scope name, attributes) of one LLM span as ``dialect`` writes it."""
    inp, out = rng.randint(200, 4000), rng.randint(10, 800)
    cached = rng.choice([0, 0, 1024, 2048]) if inp > 2048 else 0
    model = rng.choice(["gpt-4o-mini", "gpt-4o", "claude-sonnet-4-5", "gemini-2.5-flash"])
    common = {"gen_ai.request.model": model, "gen_ai.response.model": model}
    history = _messages(rng, rng.randint(1, 6))
    if dialect == "otel-genai":
        attrs = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": "openai",
            **common,
            "gen_ai.response.id": f"chatcmpl-{rng.getrandbits(64):x}",
            "gen_ai.usage.input_tokens": inp,
            "gen_ai.usage.output_tokens": out,
            "gen_ai.response.finish_reasons": ["stop"],
            "server.address": "api.openai.com",
            "server.port": 443,
        }
        if cached:
            attrs["gen_ai.usage.cache_read.input_tokens"] = cached
        if content:
            attrs["gen_ai.system_instructions"] = json.dumps(
                [{"type": "text", "content": SYSTEM_PROMPT}]
            )
            attrs["gen_ai.input.messages"] = json.dumps(
                [
                    {"role": m["role"], "parts": [{"type": "text", "content": m["content"]}]}
                    for m in history
                ]
            )
        return "opentelemetry.instrumentation.genai.openai", attrs
    if dialect == "openllmetry":
        attrs = {
            "gen_ai.provider.name": "openai",
            "llm.request.type": "chat",
            **common,
            "gen_ai.usage.input_tokens": inp,
            "gen_ai.usage.output_tokens": out,
            "gen_ai.usage.total_tokens": inp + out,
            "gen_ai.usage.cache_read.input_tokens": cached,
        }
        if content:
            attrs["gen_ai.prompt.0.role"] = "system"
            attrs["gen_ai.prompt.0.content"] = SYSTEM_PROMPT
            for i, m in enumerate(history, start=1):
                attrs[f"gen_ai.prompt.{i}.role"] = m["role"]
                attrs[f"gen_ai.prompt.{i}.content"] = m["content"]
            attrs["gen_ai.completion.0.role"] = "assistant"
            attrs["gen_ai.completion.0.content"] = "ok " * 20
        return "opentelemetry.instrumentation.openai.v1", attrs
    if dialect == "openinference":
        attrs = {
            "openinference.span.kind": "LLM",
            "llm.provider": "openai",
            "llm.model_name": model,
            "llm.token_count.prompt": inp,
            "llm.token_count.completion": out,
            "llm.token_count.total": inp + out,
            "llm.token_count.prompt_details.cache_read": cached,
        }
        if content:
            for i, m in enumerate(history):
                attrs[f"llm.input_messages.{i}.message.role"] = m["role"]
                attrs[f"llm.input_messages.{i}.message.content"] = m["content"]
        return "openinference.instrumentation.openai", attrs
    if dialect == "openlit":
        write = rng.choice([0, 1163])
        return "openlit.otel.tracing", {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": "anthropic",
            **common,
            "gen_ai.usage.input_tokens": rng.randint(4, 50),
            "gen_ai.usage.output_tokens": out,
            "gen_ai.usage.cache_read.input_tokens": cached,
            "gen_ai.usage.cache_creation.input_tokens": write,
            "gen_ai.usage.cost": 0.0123,
        }
    if dialect == "logfire":
        return "pydantic-ai", {
            "gen_ai.operation.name": "chat",
            "gen_ai.system": "openai",
            "gen_ai.provider.name": "openai",
            **common,
            "gen_ai.usage.input_tokens": inp,
            "gen_ai.usage.output_tokens": out,
            "gen_ai.usage.details.reasoning_tokens": min(out, 64),
            "operation.cost": 0.0042,
        }
    usage = {"input": inp - cached, "output": out, "input_cached_tokens": cached}
    return "langfuse-sdk", {
        "langfuse.observation.type": "generation",
        "langfuse.observation.model.name": model,
        "langfuse.observation.usage_details": json.dumps(usage),
        "langfuse.observation.cost_details": json.dumps({"total": 0.001}),
        "langfuse.observation.prompt.name": "support-answer",
        "langfuse.observation.prompt.version": 3,
    }


DIALECT_MIX = ("otel-genai", "openllmetry", "openinference", "openlit", "logfire", "langfuse")


def _span(trace: str, span: str, parent: str | None, name: str, start: int, attrs: dict) -> dict:
    return {
        "traceId": trace,
        "spanId": span,
        "parentSpanId": parent or "",
        "name": name,
        "kind": 3,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start + 900_000_000),
        "attributes": _attributes(attrs),
        "status": {},
    }


def _trace(rng: random.Random, number: int) -> list[tuple[str, dict]]:
    """(scope, span) pairs of one trace: HTTP root, agent span, 2-6 LLM calls."""
    trace = f"{rng.getrandbits(128):032x}"
    root, agent = f"{rng.getrandbits(64):016x}", f"{rng.getrandbits(64):016x}"
    start = START_NS + number * 1_000_000_000
    spans = [
        ("web", _span(trace, root, None, "POST /chat", start, {"http.request.method": "POST"})),
        (
            "agent",
            _span(
                trace,
                agent,
                root,
                "invoke_agent support",
                start + 1000,
                {"gen_ai.operation.name": "invoke_agent", "llmtrace.action": "answer-ticket"},
            ),
        ),
    ]
    for call in range(rng.randint(2, 6)):
        dialect = rng.choice(DIALECT_MIX)
        scope, attrs = _llm_attributes(rng, dialect, content=rng.random() < 1 / 3)
        span_id = f"{rng.getrandbits(64):016x}"
        spans.append((scope, _span(trace, span_id, agent, "chat", start + 2000 + call, attrs)))
    return spans


SPANS_PER_FILE = SPANS_PER_LINE * LINES_PER_FILE


def _request(batch: list[tuple[str, dict]]) -> str:
    """One ExportTraceServiceRequest line holding ``batch`` grouped by scope."""
    by_scope: dict[str, list[dict]] = {}
    for scope, span in batch:
        by_scope.setdefault(scope, []).append(span)
    request = {
        "resourceSpans": [
            {
                "resource": {"attributes": _attributes({"service.name": "support-bot"})},
                "scopeSpans": [{"scope": {"name": s}, "spans": v} for s, v in by_scope.items()],
            }
        ]
    }
    return json.dumps(request, separators=(",", ":")) + "\n"


def _write_file(job: tuple[Path, int, int, int, bool]) -> tuple[int, int]:
    """Write file number ``index`` of a dataset: ``spans`` spans of whole traces, seeded by
    (seed, index) and timed from trace number ``index * SPANS_PER_FILE`` on, so files can be
    written in any order, by any process, and the dataset is the same. (spans, bytes)."""
    directory, index, spans, seed, compress = job
    rng = random.Random(seed * 1_000_003 + index)
    first_trace = index * SPANS_PER_FILE  # a trace has >= 4 spans: numbers never collide
    pending: list[tuple[str, dict]] = []
    trace = 0
    while len(pending) < spans:
        pending.extend(_trace(rng, first_trace + trace))
        trace += 1
    pending = pending[:spans]
    text = "".join(
        _request(pending[at : at + SPANS_PER_LINE]) for at in range(0, spans, SPANS_PER_LINE)
    )
    data = text.encode()
    if compress:  # level 1: ~0.09 of the size at ~400 MB/s; reading it costs the importer little
        path = directory / f"traces-{index:05d}.jsonl.gz"
        path.write_bytes(gzip.compress(data, compresslevel=1, mtime=0))
    else:
        path = directory / f"traces-{index:05d}.jsonl"
        path.write_bytes(data)
    return spans, path.stat().st_size


def write_dataset(
    directory: Path, spans: int, seed: int = 7, *, jobs: int = 1, compress: bool = False
) -> tuple[int, int]:
    """Write ``spans`` spans as OTLP JSON lines (``.jsonl.gz`` with ``compress``) in files of
    ``SPANS_PER_FILE``, using ``jobs`` processes; returns (spans written, bytes written).
    The same arguments give the same files whatever ``jobs`` is."""
    sizes = [SPANS_PER_FILE] * (spans // SPANS_PER_FILE)
    if spans % SPANS_PER_FILE:
        sizes.append(spans % SPANS_PER_FILE)
    work = [(directory, i, n, seed, compress) for i, n in enumerate(sizes)]
    if jobs > 1:
        with multiprocessing.get_context("fork").Pool(jobs) as pool:
            results = pool.imap_unordered(_write_file, work, chunksize=4)
            written = [r for r in results]
    else:
        written = [_write_file(job) for job in work]
    return sum(n for n, _ in written), sum(b for _, b in written)


def _child(args: list[str], source: Path | None = None) -> dict[str, Any]:
    """Run ``args`` as a child: wall and CPU seconds (user + system, every thread), peak RSS
    (GB, from ``wait4``) and what it printed. ``source``: import llmtrace from that tree."""
    began = time.perf_counter()
    env = {**os.environ, "COLUMNS": "240"}  # one summary line each, not wrapped
    cwd = None
    if source is not None:
        env["PYTHONPATH"] = str(source)
        cwd = source  # not the checkout, whose llmtrace would come first as the cwd
    child = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env, cwd=cwd
    )
    out = child.stdout.read().decode() if child.stdout else ""
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - began
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{args[2:4]} failed ({status}): {out}")
    return {
        "wall": wall,
        "cpu": usage.ru_utime + usage.ru_stime,
        "rss_gb": usage.ru_maxrss / 1024**2,  # ru_maxrss is in KiB on Linux
        "out": out,
    }


def run_command(
    directory: Path,
    store: Path,
    batch_spans: int | None,
    python: str = sys.executable,
    source: Path | None = None,
) -> dict[str, Any]:
    """``llmtrace import otlp`` of ``directory`` into a new store, in a child (``python``: the
    interpreter, so a venv holding another checkout can be compared in the same run;
    ``source``: a source tree put first on ``PYTHONPATH``, e.g. an older commit's)."""
    args = [python, "-m", "llmtrace.cli", "import", "otlp", str(directory)]
    args += ["--store", str(store)]
    if batch_spans:
        args += ["--batch-spans", str(batch_spans)]
    shutil.rmtree(store, ignore_errors=True)
    run = _child(args, source)
    run["summary"] = " / ".join(line.strip() for line in run.pop("out").splitlines()[:2])
    return run


def parse_only(directory: Path) -> int:
    """The baseline: parse every line of every file with orjson (the stdlib's json where
    orjson is not installed) and count the spans; nothing is kept."""
    try:
        from orjson import loads
    except ImportError:  # pragma: no cover - orjson is a benchmark-only extra
        from json import loads
    spans = 0
    for path in sorted(directory.iterdir()):
        opener = gzip.open if path.name.endswith(".gz") else open
        with opener(path, "rb") as lines:
            for line in lines:
                for resource in loads(line)["resourceSpans"]:
                    for scope in resource["scopeSpans"]:
                        spans += len(scope["spans"])
    return spans


def run_parse_only(directory: Path) -> dict[str, Any]:
    """``parse_only`` in a child, measured like the import."""
    run = _child([sys.executable, __file__, "--parse-only", str(directory)])
    run["spans"] = int(run.pop("out").split()[0])
    return run


def _tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def command_sizes(
    sizes: list[int],
    tmp: Path,
    batch_spans: int | None,
    *,
    jobs: int,
    compress: bool,
    runs: int,
    compare: str | None = None,
    compare_commit: str | None = None,
) -> list[dict[str, Any]]:
    """Per size: ``runs`` interleaved rounds of (parse-only baseline, the command under the
    ``compare`` interpreter or of the ``compare_commit`` source tree, whole import command)
    on the same fresh input, each in a child; medians reported. Inputs are deleted
    afterwards."""
    kind = "JSON lines, gzip level 1" if compress else "JSON lines"
    results = []
    for size in sizes:
        work = Path(tempfile.mkdtemp(prefix="lt-import-", dir=tmp))
        source = _export_commit(compare_commit, work / "old") if compare_commit else None
        if source is not None:
            compare = f"{sys.executable} + llmtrace at {compare_commit}"
        try:
            began = time.perf_counter()
            (work / "in").mkdir()
            count, nbytes = write_dataset(work / "in", size, jobs=jobs, compress=compress)
            generated = time.perf_counter() - began
            imports, baselines, others, loads = [], [], [], [os.getloadavg()[0]]
            for _ in range(runs):
                baselines.append(run_parse_only(work / "in"))
                if source is not None:
                    others.append(
                        run_command(work / "in", work / "store", batch_spans, source=source)
                    )
                elif compare:
                    others.append(run_command(work / "in", work / "store", batch_spans, compare))
                imports.append(run_command(work / "in", work / "store", batch_spans))
                loads.append(os.getloadavg()[0])
            store_gb = _tree_bytes(work / "store") / 1e9
            cpu = statistics.median(r["cpu"] for r in imports)
            wall = statistics.median(r["wall"] for r in imports)
            base_cpu = statistics.median(r["cpu"] for r in baselines)
            result = {
                "spans": count,
                "input": f"{nbytes / 1e9:.2f} GB {kind}",
                "runs": runs,
                "import_cpu_s": round(cpu, 2),
                "import_wall_s": round(wall, 2),
                "import_spans_per_cpu_s": round(count / cpu),
                "import_peak_rss_gb": round(max(r["rss_gb"] for r in imports), 3),
                "import_rss_gb_runs": [round(r["rss_gb"], 3) for r in imports],
                "import_cpu_s_runs": [round(r["cpu"], 2) for r in imports],
                "parse_only_cpu_s": round(base_cpu, 2),
                "parse_only_spans_per_cpu_s": round(count / base_cpu),
                "ratio": round(base_cpu / cpu, 3),
                "load_average": [round(min(loads), 1), round(max(loads), 1)],
                "store_gb": round(store_gb, 3),
                "summary": imports[-1]["summary"],
                "command": " ".join(["python", *sys.argv]),
            }
            if others:
                other_cpu = statistics.median(r["cpu"] for r in others)
                result["compare"] = {
                    "python": compare,
                    "commit": compare_commit,
                    "cpu_s": round(other_cpu, 2),
                    "cpu_s_runs": [round(r["cpu"], 2) for r in others],
                    "wall_s": round(statistics.median(r["wall"] for r in others), 2),
                    "spans_per_cpu_s": round(count / other_cpu),
                    "ratio": round(base_cpu / other_cpu, 3),
                    "peak_rss_gb": round(max(r["rss_gb"] for r in others), 3),
                }
                print(
                    f"  {compare}: CPU {other_cpu:.1f} s -> {count / other_cpu:,.0f} spans per "
                    f"CPU-second, ratio {base_cpu / other_cpu:.3f}",
                    flush=True,
                )
            results.append(result)
            print(
                f"{count:,} spans ({result['input']}, generated in {generated:.0f} s): import "
                f"CPU {cpu:.1f} s -> {result['import_spans_per_cpu_s']:,} spans per CPU-second "
                f"(wall {wall:.1f} s), peak RSS {result['import_peak_rss_gb']:.2f} GB; parse-only "
                f"CPU {base_cpu:.2f} s -> {result['parse_only_spans_per_cpu_s']:,} per CPU-second; "
                f"ratio {result['ratio']:.3f}; load {loads[0]:.1f}-{max(loads):.1f}; medians of "
                f"{runs} [{result['summary']}]",
                flush=True,
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return results


def _export_commit(commit: str, target: Path) -> Path:
    """The tree of ``commit`` (of this checkout's repository) as plain files under ``target``,
    for timing the code as it was in the same run (``git archive``: no worktree registered)."""
    root = Path(__file__).resolve().parent.parent
    target.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(root), "archive", "--format=tar", commit, "llmtrace"],
        capture_output=True,
        check=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(target)], input=archive, check=True)
    return target


def _report(results: list[dict[str, Any]], path: Path) -> None:
    """The results as run_all.py's rows (bench/_measure.py's schema): the import of this
    tree, and of the compared code, each beside the same-run parse-only baseline."""
    report = Report("import")
    for r in results:
        size = f"{r['spans']:,} spans ({r['input']}), median of {r['runs']}"
        baseline = (
            f"orjson parse-only of the same files: {r['parse_only_spans_per_cpu_s']:,} spans "
            f"per CPU-s ({r['parse_only_cpu_s']} CPU-s)"
        )
        report.row(
            figure="**import otlp** (`llmtrace import otlp DIR --store S`)",
            size=size,
            result=(
                f"{r['import_spans_per_cpu_s']:,} spans per CPU-s; "
                f"{r['ratio']}x parse-only (goal 0.5x)"
            ),
            measure={
                "cpu_s": r["import_cpu_s"],
                "wall_s": r["import_wall_s"],
                "peak_rss_mb": round(r["import_peak_rss_gb"] * 1024, 1),
                "load_average_1m": r["load_average"],
            },
            baseline=baseline,
            details=r,
        )
        other = r.get("compare")
        if other:
            report.row(
                figure=f"import otlp, code of {other.get('commit') or other['python']} "
                "(same rounds, interleaved)",
                size=size,
                result=(
                    f"{other['spans_per_cpu_s']:,} spans per CPU-s; {other['ratio']}x parse-only"
                ),
                measure={
                    "cpu_s": other["cpu_s"],
                    "wall_s": other.get("wall_s"),
                    "peak_rss_mb": round(other["peak_rss_gb"] * 1024, 1),
                    "load_average_1m": r["load_average"],
                },
                baseline=baseline,
            )
    report.write(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--command", action="store_true", help="time `llmtrace import otlp`")
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--batch-spans", type=int, default=None, help="the command's option")
    parser.add_argument("--jobs", type=int, default=1, help="processes writing the input")
    parser.add_argument("--gzip", action="store_true", help="write .jsonl.gz (level 1) inputs")
    add_json_argument(parser)
    parser.add_argument(
        "--compare-python",
        default=None,
        help="with --command: also time the import under this interpreter (a venv with another "
        "checkout installed), interleaved in the same run",
    )
    parser.add_argument(
        "--compare-commit",
        default=None,
        help="with --command: also time the import of this commit's llmtrace (git archive, "
        "run with this interpreter), interleaved in the same run",
    )
    parser.add_argument("--parse-only", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.parse_only is not None:  # the baseline's child
        print(parse_only(args.parse_only))
        return
    if args.command:
        results = command_sizes(
            args.sizes,
            args.tmp,
            args.batch_spans,
            jobs=args.jobs,
            compress=args.gzip,
            runs=args.runs,
            compare=args.compare_python,
            compare_commit=args.compare_commit,
        )
        if args.json is not None:
            _report(results, args.json)
        return

    from llmtrace.importers import otlp

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        count, size = write_dataset(directory, args.spans, jobs=args.jobs, compress=args.gzip)
        times, cpu_times, base = [], [], []
        calls = 0
        for _ in range(args.runs):
            began_cpu = time.process_time()
            parse_only(directory)
            base.append(time.process_time() - began_cpu)
            began, began_cpu = time.perf_counter(), time.process_time()
            result = otlp.import_otlp([directory], accuracy_names=())
            times.append(time.perf_counter() - began)
            cpu_times.append(time.process_time() - began_cpu)
            calls = result.calls.height
            assert not result.problems, result.problems[:3]
        median, cpu = statistics.median(times), statistics.median(cpu_times)
        base_cpu = statistics.median(base)
        print(
            f"{count:,} spans ({size / 1e6:.0f} MB, {calls:,} calls): import_otlp median CPU "
            f"{cpu:.2f} s -> {count / cpu:,.0f} spans per CPU-second (wall {median:.2f} s); "
            f"parse-only {base_cpu:.2f} s -> {count / base_cpu:,.0f}; ratio {base_cpu / cpu:.3f}"
        )


if __name__ == "__main__":
    main()
