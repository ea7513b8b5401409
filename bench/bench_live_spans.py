"""CPU per LLM span that llmtrace's live side adds to an app, without the HTTP noise.

    python bench/bench_live_spans.py [--spans 2000] [--rounds 7] [--json out.json]
                                     [--latency-rounds 10 [--latency-calls 300] [--latency-aa]]

``bench_overhead.py`` measures the whole app (real ``openai`` client, loopback server, official
instrumentation): one call costs ~2 ms of CPU there and a loaded machine moves that by more than
the 50 us being looked for, so its difference needs many rounds. This script measures the same
pipeline minus the client and the network, in one process, so the difference is the signal:

* ``bare``     - a ``TracerProvider`` with a ``BatchSpanProcessor`` and a no-op exporter, and a
                 ``MeterProvider`` with an in-memory reader (what the official instrumentation
                 runs on);
* ``llmtrace`` - the same, with ``llmtrace.init()``'s pipeline: the cost span processor around
                 the same batch processor, the cost, token and action metrics on the same meter
                 provider, and the completion hook fed the call's input (so prompt fingerprints
                 are computed, as they are for a real call); spans priced on its worker thread
                 (``processing="worker"``);
* ``llmtrace-inline`` - the same with ``processing="inline"`` (``LLMTRACE_PROCESSING``): each
                 span priced on the app's thread inside ``end()`` when nothing is queued or
                 being priced. Measured when the llmtrace on the path has that mode
                 (``--modes worker`` leaves it out).
* ``llmtrace-store`` - ``llmtrace``'s set-up as an app gets it by default: the same pipeline
                 plus the ``store`` exporter (what ``LLMTRACE_EXPORTERS`` unset means), writing
                 to a fresh store directory; ``--modes store`` adds it. Its difference from
                 ``llmtrace`` is what the local store costs the app per call; at the end the
                 store is read back and must hold one row per call.

Each span is what the official OpenAI instrumentation emits for bench_overhead.py's call
(start attributes, then usage and response attributes, then the hook, then ``end``). A round is
``--spans`` spans then a flush (llmtrace's worker drains, the batch processor exports); the
figure is process CPU (user + system, all threads) per span. Rounds rotate over the
configurations (each its own provider pair, built once) and the medians are reported, with
each llmtrace configuration's difference from bare: llmtrace's added CPU per call, app thread
and worker together. In llmtrace's
configuration the hook's arguments are built per call by the official instrumentation's own
converters (``_prepare_input_messages``, ``_prepare_output_messages``, as ``init()`` leaves
them when it instruments openai: made lean by llmtrace/otel/lean.py since it exists): the
instrumentation does that work only because a completion hook is configured, so it is
llmtrace's cost.

``--latency-rounds`` adds the app's tail latency end to end: bench_overhead.py's official,
llmtrace and llmtrace-inline configurations (real ``openai`` client, loopback server, one
process each), rounds rotating, and the 99th percentile of the app thread's wall time per call
in each. Wall time on a loaded machine is noisy: the figure is reported with the load average
it ran under, and each ratio with a 95% bootstrap interval over the rounds (one process a
configuration: the interval leaves process placement out). ``--latency-aa`` adds the official
set-up again in a process of its own, ``official-aa``: its ratio to official is the run's noise
floor, and no verdict on the 1.10x bound is given when that floor reaches past it
(bench_overhead.py ``--aa --processes 4`` gives the interval over processes too).
``python bench/run_all.py --only live`` runs both and writes
bench/results/live.json (rows for the worker mode, then for the inline mode).

To compare with an older commit, run this script for both with ``PYTHONPATH`` naming each
tree (``git worktree add /tmp/old COMMIT``; ``PYTHONPATH=/tmp/old python
bench/bench_live_spans.py ...``): the latency rounds' processes take the same tree.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_overhead  # noqa: E402 - the same no-op exporter and messages
from _measure import git_state  # noqa: E402 - commit and dirty flag, as every bench records them

ROOT = Path(__file__).resolve().parents[1]
# how bench/run_all.py runs this script (read there with ast.literal_eval)
RUN_ALL = {
    "name": "live",
    "order": 60,
    "full": [
        "--spans",
        "2000",
        "--rounds",
        "7",
        "--retained",
        "6000",
        "--latency-rounds",
        "10",
        "--latency-calls",
        "1000",
        "--latency-aa",
        "--modes",
        "worker,inline,store",
    ],
    "quick": [
        "--spans",
        "200",
        "--rounds",
        "2",
        "--warmup",
        "50",
        "--latency-rounds",
        "2",
        "--latency-calls",
        "50",
    ],
}
SCOPE = "opentelemetry.instrumentation.genai.openai"
# configuration -> its --modes name; "store" is the worker mode with the default exporter
MODES = {"llmtrace": "worker", "llmtrace-inline": "inline", "llmtrace-store": "store"}
START_ATTRIBUTES = {
    "gen_ai.operation.name": "chat",
    "gen_ai.request.model": "gpt-4o",
    "gen_ai.provider.name": "openai",
    "server.address": "127.0.0.1",
    "server.port": 8000,
}
END_ATTRIBUTES = {
    "gen_ai.response.model": "gpt-4o-2024-08-06",
    "gen_ai.response.finish_reasons": ("stop",),
    "gen_ai.usage.input_tokens": 1200,
    "gen_ai.usage.output_tokens": 48,
    "gen_ai.usage.cache_read.input_tokens": 1024,
    "openai.response.service_tier": "default",
}


def choices() -> list[Any]:
    """The response's choices as the ``openai`` client parses them (bench_overhead.py's reply)."""
    from openai.types.chat import ChatCompletionMessage
    from openai.types.chat.chat_completion import Choice

    message = ChatCompletionMessage(role="assistant", content="Paris is the capital of France.")
    return [Choice(index=0, finish_reason="stop", message=message, logprobs=None)]


class Config:
    """One configuration's providers and its way of emitting one call's span."""

    def __init__(self, name: str) -> None:
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        self.name = name
        self.meter_provider = MeterProvider(metric_readers=[InMemoryMetricReader()])
        self.hook: Any = None
        self.handle: Any = None
        if name == "bare":
            self.tracer_provider = TracerProvider()
            self.tracer_provider.add_span_processor(
                BatchSpanProcessor(bench_overhead.NoopExporter())
            )
        else:
            from llmtrace.otel import setup

            self.tracer_provider = TracerProvider()
            # each configuration its own pipeline: init() returns the one in force, if any
            setup._handle = None
            mode: dict[str, Any] = {"processing": "inline"} if MODES[name] == "inline" else {}
            self.store: str | None = None
            if MODES[name] == "store":
                import tempfile

                self.store = tempfile.mkdtemp(prefix="llmtrace-bench-live-store-")
                mode.update(exporters="store", store=self.store)
            self.handle = setup.init(
                exporters=mode.pop("exporters", "none"),
                span_exporters=[bench_overhead.NoopExporter()],
                tracer_provider=self.tracer_provider,
                meter_provider=self.meter_provider,
                instrument=(),
                set_global=False,
                **mode,
            )
            assert self.handle is not None
            self.handle.processor._pricer.get()  # price data loaded, as init's thread does
            self.hook = self.handle.hook
            try:  # the converters init() makes lean when it instruments openai (since lean.py)
                from llmtrace.otel import lean
            except ImportError:
                pass
            else:
                import opentelemetry.instrumentation.genai.openai.patch  # noqa: F401 - as
                # instrumenting imports it: lean replaces names in that module and utils

                assert lean.install(self.hook) or lean._replaced
        self.tracer = self.tracer_provider.get_tracer(SCOPE)
        self.choices = choices()

    def calls(self, count: int, first: int) -> None:
        from opentelemetry.instrumentation.genai.openai import patch, utils

        # looked up where the instrumentation looks them up (llmtrace may have made them lean)
        _prepare_input_messages = utils._prepare_input_messages
        _prepare_output_messages = patch._prepare_output_messages
        tracer, hook = self.tracer, self.hook
        messages, reply = bench_overhead.MESSAGES, self.choices
        for number in range(first, first + count):
            span = tracer.start_span("chat gpt-4o", attributes=START_ATTRIBUTES)
            span.set_attributes({**END_ATTRIBUTES, "gen_ai.response.id": f"chatcmpl-{number}"})
            if hook is not None:  # built only because a hook is set: llmtrace's cost
                hook.on_completion(
                    inputs=_prepare_input_messages(messages),
                    outputs=_prepare_output_messages(reply),
                    system_instruction=[],
                    span=span,
                )
            span.end()
        if self.handle is not None:
            self.handle.force_flush()
        else:
            self.tracer_provider.force_flush()

    def check(self, spans: int) -> None:
        """Every call priced, none dropped or deferred (a twin found by mistake)."""
        if self.handle is None:
            return
        from llmtrace.otel import error_counts

        processor = self.handle.processor
        assert processor.calls_priced == spans, (processor.calls_priced, spans)
        assert processor.calls_deferred == 0, processor.calls_deferred
        assert error_counts() == {}, error_counts()
        if self.store is not None:  # the default exporter kept every call, once
            from llmtrace.store import Store

            stored = Store(self.store).scan().select("span_id").collect().height
            assert stored == spans, (stored, spans)


def latency(
    rounds: int, calls: int, warmup: int, modes: list[str], aa: bool = False
) -> dict[str, Any]:
    """The app's per-call latency, bare official instrumentation vs llmtrace, end to end.

    bench_overhead.py's set-up: the real ``openai`` client against the loopback server, each
    configuration in its own long-lived process, rounds rotating. The app thread's wall time
    per call is what a user of the app waits; its 99th percentile is where llmtrace's worker,
    competing for the interpreter lock, would show.

    Each ratio to official comes with a 95% bootstrap interval over the rounds (bench/_resample.py;
    one process a configuration, so process placement is not in it), and with ``aa`` an
    ``official-aa`` configuration (the official set-up again, a process of its own) measures the
    run's noise floor: its ratio to official is 1.0 but for noise."""
    from _resample import ratio_interval, verdict

    server, url = bench_overhead.start_server()
    configs = ("official", *(("official-aa",) if aa else ()), *modes)
    workers: list[Any] = []
    times: dict[str, list[float]] = {c: [] for c in configs}
    cpu: dict[str, list[float]] = {c: [] for c in configs}
    rss = dict.fromkeys(configs, 0.0)
    cells: dict[str, list[list[float]]] = {c: [] for c in configs}  # per round, one process
    loads = [os.getloadavg()[0]]
    clock = time.perf_counter()
    try:
        workers = [bench_overhead.Worker(c, sys.executable, url) for c in configs]
        for index in range(rounds):
            shift = index % len(workers)
            for w in workers[shift:] + workers[:shift]:  # rotate the order every round
                result = w.round(calls, warmup)
                times[w.config].extend(result["times"])
                cpu[w.config].append(result["cpu"])
                cells[w.config].append(result["times"])
                rss[w.config] = max(rss[w.config], result["rss"])
            loads.append(os.getloadavg()[0])
        for w in workers:
            w.close()
    finally:
        for w in workers:
            if w.process.poll() is None:
                w.process.kill()
        server.terminate()
        server.wait()
    intervals: dict[str, dict[str, Any]] = {}
    floor = None
    for name in configs[1:]:  # official-aa first when there
        found = ratio_interval(
            [cells[name]], [cells["official"]], cpu_a=[cpu[name]], cpu_b=[cpu["official"]],
            calls=calls, draws=1000,
        )  # fmt: skip
        low, high = found["p99_ratio_ci"]
        found["verdict"] = verdict(low, high, bench_overhead.P99_BOUND, floor)
        if name == "official-aa":
            floor = (low, high)
        intervals[name] = found
    return {
        "intervals": intervals,
        "p99_us": {c: bench_overhead.p99(v) * 1e6 for c, v in times.items()},
        "median_us": {c: statistics.median(v) * 1e6 for c, v in times.items()},
        "cpu_us_per_call": {c: sum(v) / (rounds * calls) * 1e6 for c, v in cpu.items()},
        "cpu_s": sum(cpu["llmtrace"]),
        "cpu_s_by_config": {c: sum(v) for c, v in cpu.items()},
        "peak_rss_mb": rss,
        "wall_s": time.perf_counter() - clock,
        "load": [min(loads), max(loads)],
        "rounds": rounds,
        "calls": calls,
    }


def held_after(config: Config, calls: int, counts: dict[str, int]) -> int:
    """Bytes allocated during ``calls`` more calls and still held after them (0 if none)."""
    if calls <= 0:
        return 0
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    config.calls(calls, counts[config.name])
    counts[config.name] += calls
    gc.collect()
    held, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return held


def thread_cpu() -> dict[str, float]:
    """CPU seconds so far of each live thread, by thread name (Linux: per-thread clocks)."""
    out: dict[str, float] = {}
    for thread in threading.enumerate():
        try:
            clock = time.pthread_getcpuclockid(thread.ident)  # type: ignore[arg-type]
            out[thread.name] = out.get(thread.name, 0.0) + time.clock_gettime(clock)
        except (AttributeError, OSError, TypeError):
            continue
    return out


def peak_rss_mb() -> float:
    """This process's peak RSS in MB (Linux reports ru_maxrss in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spans", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--warmup", type=int, default=500)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--inline",
        action="store_true",
        help="llmtrace's work on the app thread (no worker): what the hand-off between threads costs",
    )
    parser.add_argument("--profile", type=Path, help="write a cProfile of llmtrace's rounds here")
    parser.add_argument(
        "--retained",
        type=int,
        default=0,
        help="then run this many more calls under tracemalloc and print the memory llmtrace's "
        "pipeline still holds after them (the bare pipeline's alongside)",
    )
    parser.add_argument(
        "--latency-rounds",
        type=int,
        default=0,
        help="then this many alternating rounds of bench_overhead.py's end-to-end calls "
        "(official instrumentation vs llmtrace, real openai client, loopback server) for the "
        "app's p99 latency",
    )
    parser.add_argument("--latency-calls", type=int, default=300)
    parser.add_argument(
        "--latency-aa",
        action="store_true",
        help="add official-aa to the latency rounds: the official set-up again in a process of "
        "its own, whose p99 ratio to official is the run's noise floor",
    )
    parser.add_argument(
        "--modes",
        default="worker,inline",
        help="llmtrace's configurations to measure beside bare: worker, inline "
        "(LLMTRACE_PROCESSING) and store (the worker mode with the default store exporter); "
        "inline is left out when the llmtrace on the path lacks it",
    )
    args = parser.parse_args()

    wanted = [m.strip() for m in args.modes.split(",") if m.strip()]
    if "inline" in wanted and not bench_overhead.inline_supported():
        print("this llmtrace has no inline processing mode: llmtrace-inline not measured")
        wanted.remove("inline")
    names = [name for name, mode in MODES.items() if mode in wanted]
    if not names:
        parser.error(f"--modes: choose from {sorted(MODES.values())}")
    configs = [Config("bare"), *(Config(name) for name in names)]
    if args.inline or args.profile:
        for config in configs[1:]:
            if config.name == "llmtrace":
                config.handle.processor._background = False
    counts = dict.fromkeys((c.name for c in configs), 0)
    for config in configs:
        config.calls(args.warmup, 0)
        counts[config.name] += args.warmup
    per_span: dict[str, list[float]] = {c.name: [] for c in configs}
    wall = dict.fromkeys(per_span, 0.0)
    started = datetime.now(UTC).isoformat(timespec="seconds")
    # each llmtrace configuration's rounds: CPU per call of each thread
    by_thread: dict[str, dict[str, list[float]]] = {name: {} for name in names}
    loads = [os.getloadavg()[0]]
    for index in range(args.rounds):
        shift = index % len(configs)
        for config in configs[shift:] + configs[:shift]:  # rotate the order every round
            profile = None
            if args.profile and config.name == "llmtrace":
                import cProfile

                profile = cProfile.Profile()
                profile.enable()
            # every round from an empty collector (not timed): the full collections a round
            # pays are then its own allocations', not wherever the counters of all four
            # configurations' rounds happened to run over (a 45 ms collection is +23 us a
            # call of a 2,000-span round, and landed 4:0 in store:bare rounds in one run)
            gc.collect()
            threads = thread_cpu()
            start, clock = time.process_time(), time.perf_counter()
            config.calls(args.spans, counts[config.name])
            wall[config.name] += time.perf_counter() - clock
            if profile is not None:
                profile.disable()
                profile.dump_stats(args.profile)
            per_span[config.name].append((time.process_time() - start) / args.spans)
            if config.name in by_thread:
                for name, seconds in thread_cpu().items():
                    spent = (seconds - threads.get(name, 0.0)) / args.spans
                    by_thread[config.name].setdefault(name, []).append(spent)
            counts[config.name] += args.spans
        loads.append(os.getloadavg()[0])
    for config in configs:
        config.check(counts[config.name])
    retained = {config.name: held_after(config, args.retained, counts) for config in configs}
    medians = {name: statistics.median(values) for name, values in per_span.items()}
    paired = {
        name: [b - a for a, b in zip(per_span["bare"], per_span[name], strict=True)]
        for name in names
    }
    added = {name: statistics.median(v) for name, v in paired.items()}
    mean_added = {name: statistics.mean(v) for name, v in paired.items()}
    threads = {
        config: {
            name: statistics.median(v)
            for name, v in spent.items()
            if len(v) == len(per_span[config])
        }
        for config, spent in by_thread.items()
    }
    print(
        f"commit {git_state()[0]}; {args.rounds} rotating rounds x {args.spans} spans; "
        f"1-min load average {min(loads):.1f}-{max(loads):.1f} on {os.cpu_count()} CPUs"
    )
    print("command: " + " ".join(["python", "bench/bench_live_spans.py", *sys.argv[1:]]))
    for name, value in medians.items():
        print(f"  {name:15s} process CPU per call (all threads): {value * 1e6:7.1f} us (median)")
    for name in names:
        print(
            f"  {name} - bare: {added[name] * 1e6:+.1f} us CPU per call (median of paired "
            f"rounds; mean {mean_added[name] * 1e6:+.1f} us); by thread (median CPU per call): "
            + ", ".join(f"{k} {v * 1e6:.1f} us" for k, v in threads[name].items())
        )
    if args.retained:
        print(
            f"  memory still held after {args.retained} more calls (tracemalloc, after a "
            "collection): " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in retained.items())
        )
    tail = (
        latency(args.latency_rounds, args.latency_calls, 30, names, args.latency_aa)
        if args.latency_rounds
        else None
    )
    if tail is not None:
        p99s, cpus = tail["p99_us"], tail["cpu_us_per_call"]
        print(
            f"  end to end ({tail['rounds']} rounds x {tail['calls']} calls, load "
            f"{tail['load'][0]:.1f}-{tail['load'][1]:.1f}): app p99 official "
            f"{p99s['official']:.0f} us (median {tail['median_us']['official']:.0f} us, CPU per "
            f"call {cpus['official']:.0f} us)"
        )
        for name in (["official-aa"] if args.latency_aa else []) + names:
            low, high = tail["intervals"][name]["p99_ratio_ci"]
            print(
                f"    {name}: p99 {p99s[name]:.0f} us (ratio {p99s[name] / p99s['official']:.3f} "
                f"[{low:.3f} .. {high:.3f}] over rounds: {tail['intervals'][name]['verdict']}), "
                f"median {tail['median_us'][name]:.0f} us, CPU per call {cpus[name]:.0f} us "
                f"({cpus[name] - cpus['official']:+.0f} us)"
            )
    if args.json:
        command = " ".join(["python", "bench/bench_live_spans.py", *sys.argv[1:]])
        command = command.split(" --json")[0]
        rows = [cpu_row(args, name, added, mean_added, threads, per_span, wall, loads, retained)
                for name in names]  # fmt: skip
        if tail is not None:
            rows += [latency_row(tail, name) for name in names]
        args.json.write_text(
            json.dumps(
                {
                    "schema": "llmtrace-bench/1",  # bench/run_all.py's result shape
                    "bench": "live",
                    "command": command,
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
                },
                indent=2,
            )
        )


def _mode_title(name: str) -> str:
    """How a row names the configuration: the worker mode's rows keep their old titles."""
    return {
        "worker": "",
        "inline": ", inline mode (`LLMTRACE_PROCESSING=inline`)",
        "store": ", default exporter (`store`)",
    }[MODES[name]]


def cpu_row(
    args: Any,
    name: str,
    added: dict[str, float],
    mean_added: dict[str, float],
    threads: dict[str, dict[str, float]],
    per_span: dict[str, list[float]],
    wall: dict[str, float],
    loads: list[float],
    retained: dict[str, int],
) -> dict[str, Any]:
    """bench/results/live.json's CPU row for one llmtrace configuration."""
    main_thread = threads[name].get("MainThread", 0.0)
    worker = threads[name].get("llmtrace-costs")
    split = f"app thread {main_thread * 1e6:.0f} µs" + (
        f", worker {worker * 1e6:.0f} µs" if worker is not None else " (inline)"
    )
    bare = statistics.median(per_span["bare"])
    return {
        "figure": f"**live side{_mode_title(name)}**: CPU per LLM call llmtrace adds to a bare "
        "SDK pipeline (all threads; goal ≤ 50 µs)",
        "size": f"{args.rounds} rotating rounds × {args.spans:,} spans",
        "result": f"**{added[name] * 1e6:+.0f} µs per call** (median of paired rounds; mean "
        f"{mean_added[name] * 1e6:+.0f} µs); llmtrace's rounds by thread: {split}",
        "cpu_s": round(sum(per_span[name]) * args.spans, 3),
        "wall_s": round(wall[name], 3),
        "peak_rss_mb": round(peak_rss_mb(), 1),
        "baseline": f"bare pipeline: {bare * 1e6:.0f} µs CPU per call",
        "load_average_1m": [min(loads), max(loads)],
        "mode": MODES[name],
        "added_cpu_us_per_call": added[name] * 1e6,
        # the mean counts the collector's full collections (tens of ms, one every few
        # thousand calls) at their rate; the median of a few rounds may miss or catch one
        "added_cpu_us_per_call_mean": mean_added[name] * 1e6,
        "cpu_us_per_call": {k: statistics.median(v) * 1e6 for k, v in per_span.items()},
        "llmtrace_cpu_us_per_call_by_thread": {k: v * 1e6 for k, v in threads[name].items()},
        "inline": bool(args.inline),
        "retained_bytes": retained if args.retained else None,
        "rounds_us": {k: [v * 1e6 for v in vs] for k, vs in per_span.items()},
    }


def latency_row(tail: dict[str, Any], name: str) -> dict[str, Any]:
    """bench/results/live.json's end-to-end row for one llmtrace configuration."""
    p99s, cpus = tail["p99_us"], tail["cpu_us_per_call"]
    low, high = tail["intervals"][name]["p99_ratio_ci"]
    floor = ""
    if "official-aa" in tail["intervals"]:
        aa = tail["intervals"]["official-aa"]
        floor = (
            f"; A/A control (official again, its own process): {aa['p99_ratio']:.2f}× "
            f"[{aa['p99_ratio_ci'][0]:.2f}–{aa['p99_ratio_ci'][1]:.2f}]"
        )
    return {
        "figure": f"**live side, end to end{_mode_title(name)}**: the app thread's p99 latency "
        "per LLM call (real `openai` client, loopback server; goal ≤ 1.10× the bare "
        "instrumentation's)",
        "size": f"{tail['rounds']} rotating rounds × {tail['calls']} calls per configuration",
        "result": f"**p99 {p99s[name] / 1000:.2f} ms, "
        f"{p99s[name] / p99s['official']:.2f}× the bare instrumentation's** "
        f"[{low:.2f}–{high:.2f}, 95% over rounds: {tail['intervals'][name]['verdict']}]; "
        f"median {tail['median_us'][name] / 1000:.2f} ms; CPU per call "
        f"{cpus[name] - cpus['official']:+.0f} µs (whole process, HTTP client included)",
        "cpu_s": round(tail["cpu_s_by_config"][name], 3),
        "wall_s": round(tail["wall_s"], 3),
        "peak_rss_mb": round(tail["peak_rss_mb"][name], 1),
        "baseline": f"official GenAI instrumentation, same batch processor and "
        f"exporter: p99 {p99s['official'] / 1000:.2f} ms, median "
        f"{tail['median_us']['official'] / 1000:.2f} ms, "
        f"{cpus['official']:.0f} µs CPU per call, peak RSS "
        f"{tail['peak_rss_mb']['official']:.0f} MB{floor}",
        "load_average_1m": tail["load"],
        "mode": MODES[name],
        **{f"latency_{k}": v for k, v in tail.items() if k not in ("load",)},
    }


if __name__ == "__main__":
    main()
