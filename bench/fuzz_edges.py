"""Mutation run of the two decode edges: how many hostile inputs are rejected, and that none
crashes or costs a good call (issue 12).

OTLP: each input is a JSON-lines file holding the recorded fixture requests
(tests/fixtures/otlp/collector.jsonl) with 1-3 hostile values planted anywhere in one line
(tests/hostile.py), or a byte-level mutation of the whole file (cut short, bytes flipped,
gzip'ed and then damaged), followed by one untouched good line; ``import_otlp`` reads it.
Langfuse: each input is a page of three observations, the middle one with 1-3 hostile values
planted, mapped by ``observations_to_calls``.

Counted per input: rejected (at least one problem / rejected row), crashed (an exception
escaped), good call lost (the untouched call missing from the result).

    python bench/fuzz_edges.py --inputs 2200 --seed 12
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
import sys
import tempfile
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT))

from hostile import HOSTILE, deep, paths, plant  # noqa: E402

from llmtrace.importers.langfuse import observations_to_calls  # noqa: E402
from llmtrace.importers.otlp import import_otlp  # noqa: E402

FIXTURE = ROOT / "tests" / "fixtures" / "otlp" / "collector.jsonl"
GOOD_SPAN = "00000000000000a1"


def good_line() -> str:
    span = {
        "traceId": "a" * 32,
        "spanId": GOOD_SPAN,
        "name": "chat",
        "startTimeUnixNano": "1764234000000000000",
        "endTimeUnixNano": "1764234001000000000",
        "attributes": [
            {"key": "gen_ai.operation.name", "value": {"stringValue": "chat"}},
            {"key": "gen_ai.request.model", "value": {"stringValue": "gpt-4o-mini"}},
            {"key": "gen_ai.usage.input_tokens", "value": {"intValue": "10"}},
            {"key": "gen_ai.usage.output_tokens", "value": {"intValue": "2"}},
        ],
    }
    scope = {"scope": {"name": "opentelemetry.instrumentation.genai.openai"}, "spans": [span]}
    return json.dumps({"resourceSpans": [{"resource": {}, "scopeSpans": [scope]}]})


def hostile_value(rng: random.Random) -> object:
    value = rng.choice([*HOSTILE, "DEEP"])
    return deep() if value == "DEEP" else value


def planted_doc(doc: object, rng: random.Random) -> object:
    for _ in range(rng.randint(1, 3)):
        spots = paths(doc)
        try:
            doc = plant(doc, rng.choice(spots), hostile_value(rng))
        except (KeyError, IndexError, TypeError):
            continue
    return doc


def dump(doc: object) -> str:
    try:
        return json.dumps(doc)
    except (ValueError, RecursionError):
        return "[" * 100_000 + "]" * 100_000


def otlp_input(lines: list[str], rng: random.Random, folder: Path, n: int) -> Path:
    """One mutated input file (JSON lines, or damaged bytes) ending in the good line."""
    kind = rng.random()
    path = folder / f"in-{n}.jsonl"
    if kind < 0.7:
        index = rng.randrange(len(lines))
        mutated = list(lines)
        mutated[index] = dump(planted_doc(json.loads(lines[index]), rng))
        path.write_text("\n".join([*mutated, good_line()]) + "\n", encoding="utf-8")
        return path
    data = bytearray("\n".join(lines).encode())
    if kind < 0.8:  # cut short inside the data
        data = data[: rng.randrange(1, len(data))]
    else:  # flip a run of bytes
        start = rng.randrange(len(data))
        for i in range(start, min(len(data), start + rng.randint(1, 200))):
            data[i] ^= rng.randrange(1, 256)
    if kind >= 0.9:  # as a gzip member, damaged after compression
        packed = bytearray(gzip.compress(bytes(data)))
        at = rng.randrange(10, len(packed))
        packed[at] ^= 0xFF
        path = folder / f"in-{n}.jsonl.gz"
        path.write_bytes(bytes(packed))
        (folder / f"in-{n}-good.jsonl").write_text(good_line() + "\n")
        return path
    path.write_bytes(bytes(data) + b"\n" + good_line().encode() + b"\n")
    return path


def langfuse_row(obs_id: str) -> dict:
    return {
        "id": obs_id,
        "traceId": "trace-1",
        "type": "GENERATION",
        "startTime": "2026-09-01T10:00:00Z",
        "endTime": "2026-09-01T10:00:02Z",
        "model": "gpt-4o-mini",
        "modelParameters": {"reasoning_effort": "low"},
        "usageDetails": {"input": 100, "output": 10, "input_cached_tokens": 20},
        "costDetails": {"input": 0.001, "total": 0.002},
        "promptName": "qa",
        "promptVersion": 3,
        "traceName": "answer",
        "latency": 2.0,
        "input": [{"role": "user", "content": "hi"}],
        "output": "hello",
    }


def run_otlp(count: int, rng: random.Random) -> dict[str, int]:
    lines = [line for line in FIXTURE.read_text().splitlines() if line.strip()]
    tally = {"tried": 0, "rejected": 0, "crashes": 0, "good_lost": 0}
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(count):
            folder = Path(tmp) / str(n)
            folder.mkdir()
            path = otlp_input(lines, rng, folder, n)
            tally["tried"] += 1
            try:
                result = import_otlp([folder])
            except Exception:  # noqa: BLE001 - what this run counts
                tally["crashes"] += 1
                traceback.print_exc()
                continue
            if result.problems:
                tally["rejected"] += 1
            if GOOD_SPAN not in set(result.calls.get_column("span_id")):
                tally["good_lost"] += 1
                print(f"good call lost: {path}", file=sys.stderr)
    return tally


def run_langfuse(count: int, rng: random.Random) -> dict[str, int]:
    tally = {"tried": 0, "rejected": 0, "crashes": 0, "good_lost": 0}
    for _ in range(count):
        bad = planted_doc(langfuse_row("obs-bad"), rng)
        tally["tried"] += 1
        try:
            calls, rejected = observations_to_calls(
                [langfuse_row("obs-1"), bad, langfuse_row("obs-2")]
            )
        except Exception:  # noqa: BLE001
            tally["crashes"] += 1
            traceback.print_exc()
            continue
        tally["rejected"] += rejected.height > 0
        tally["good_lost"] += not {"obs-1", "obs-2"} <= set(calls.get_column("span_id"))
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=2200, help="inputs per edge")
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()
    for name, run in (("otlp", run_otlp), ("langfuse", run_langfuse)):
        started = time.perf_counter()
        tally = run(args.inputs, random.Random(args.seed))
        seconds = time.perf_counter() - started
        print(
            f"{name}: {tally['tried']:,} inputs tried, {tally['rejected']:,} rejected, "
            f"crashes: {tally['crashes']}, good calls lost: {tally['good_lost']} ({seconds:.0f} s)"
        )


if __name__ == "__main__":
    main()
