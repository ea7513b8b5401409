"""The OpenAI Responses API is instrumented when the app first uses it, not at ``init()``.

Each case is a fresh interpreter (which modules are imported is the point) running the real
``openai`` SDK and its official instrumentation against the loopback provider; the priced spans
are read from an in-memory exporter given to ``init()``. Every call must give exactly one
priced span (a part never wrapped gives none).
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

RESPONSES = "openai.resources.responses.responses"

PRELUDE = """
import json, sys
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from llmtrace.loopback import LoopbackProvider

server = LoopbackProvider().start()
memory = InMemorySpanExporter()

def client():
    import openai
    return openai.OpenAI(base_url=server.openai_base_url, api_key="sk-test", max_retries=0)

def chat(c):
    c.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "Hi"}])

def responses(c):
    c.responses.create(model="o4-mini", input="Hello")

def init():
    import llmtrace
    return llmtrace.init(exporters="none", span_exporters=[memory], set_global=False)

def report(handle, **extra):
    handle.force_flush()
    spans = [s for s in memory.get_finished_spans() if "gen_ai.operation.name" in s.attributes]
    print(json.dumps({
        "spans": [
            {"model": s.attributes.get("gen_ai.request.model"),
             "status": s.attributes.get("llmtrace.price.status"),
             "cost": s.attributes.get("llmtrace.cost.total")}
            for s in spans
        ],
        "instrumented": handle.instrumented,
        **extra,
    }))
"""


def run(body: str, tmp_path: Path, lines: int = 1) -> dict[str, Any]:
    """Run ``body`` after ``PRELUDE``; the JSON objects of its last ``lines`` lines, merged."""
    code = PRELUDE + textwrap.dedent(body)
    env = {"LLMTRACE_STORE": str(tmp_path / "store"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    merged: dict[str, Any] = {}
    for line in done.stdout.strip().splitlines()[-lines:]:
        merged.update(json.loads(line))
    return merged


def deferrable() -> bool:
    """Whether the installed instrumentation has the names ``llmtrace.otel.deferred`` needs
    (when not, everything is wrapped at once: the spans must be the same)."""
    import opentelemetry.instrumentation.genai.openai as instrumentation

    return hasattr(instrumentation, "_get_responses_module") and hasattr(
        instrumentation, "wrap_function_wrapper"
    )


def assert_priced(spans: list[dict[str, Any]], models: list[str]) -> None:
    assert [s["model"] for s in spans] == models
    for span in spans:
        assert span["status"] == "ok", span
        assert span["cost"] > 0, span


def test_responses_module_is_imported_only_when_the_app_uses_it(tmp_path: Path) -> None:
    result = run(
        f"""
        handle = init()
        c = client()
        chat(c)
        before = "{RESPONSES}" in sys.modules
        responses(c)
        chat(c)
        responses(c)
        report(handle, before=before)
        """,
        tmp_path,
    )
    assert result["instrumented"] == ["openai"]
    if deferrable():
        assert result["before"] is False, "init() imported the Responses API the app never used"
    assert_priced(result["spans"], ["gpt-4o", "o4-mini", "gpt-4o", "o4-mini"])


def test_an_sdk_imported_before_init_gets_its_responses_wrapped_later(tmp_path: Path) -> None:
    result = run(
        f"""
        import openai
        c = client()
        handle = init()
        before = "{RESPONSES}" in sys.modules
        responses(c)
        chat(c)
        report(handle, before=before)
        """,
        tmp_path,
    )
    if deferrable():
        assert result["before"] is False
    assert_priced(result["spans"], ["o4-mini", "gpt-4o"])


def test_responses_used_before_init_is_wrapped_at_init(tmp_path: Path) -> None:
    result = run(
        """
        c = client()
        responses(c)  # untraced: before init()
        handle = init()
        responses(c)
        chat(c)
        report(handle)
        """,
        tmp_path,
    )
    assert_priced(result["spans"], ["o4-mini", "gpt-4o"])


def test_after_shutdown_nothing_is_wrapped_and_the_part_is_not_imported(tmp_path: Path) -> None:
    """shutdown() unwraps without importing the part just to unwrap nothing, and the part's
    hook, still registered, does not wrap it afterwards."""
    result = run(
        f"""
        handle = init()
        c = client()
        chat(c)
        handle.shutdown()
        after_shutdown = "{RESPONSES}" in sys.modules
        responses(c)
        chat(c)
        report(handle, after_shutdown=after_shutdown)
        """,
        tmp_path,
    )
    if deferrable():
        assert result["after_shutdown"] is False
    assert_priced(result["spans"], ["gpt-4o"])
    assert result["instrumented"] == []


@pytest.mark.parametrize("streamed", [False, True])
def test_a_streamed_responses_call_is_priced_once(tmp_path: Path, streamed: bool) -> None:
    result = run(
        f"""
        handle = init()
        c = client()
        if {streamed}:
            for _ in c.responses.create(model="o4-mini", input="Hello", stream=True):
                pass
        else:
            responses(c)
        report(handle)
        """,
        tmp_path,
    )
    assert_priced(result["spans"], ["o4-mini"])


def test_an_instrumentation_without_the_names_is_instrumented_whole(tmp_path: Path) -> None:
    """Another version of the instrumentation (the looked-up function renamed): nothing is
    deferred, the Responses API is wrapped at init(), every call is priced, shutdown works."""
    result = run(
        f"""
        import dataclasses
        from llmtrace.otel import deferred
        part = deferred.PARTS["openai"]
        deferred.PARTS["openai"] = dataclasses.replace(part, lookup="_renamed_in_a_new_version")
        handle = init()
        c = client()
        chat(c)
        imported = "{RESPONSES}" in sys.modules
        responses(c)
        report(handle, imported=imported)
        handle.shutdown()
        responses(c)
        handle.tracer_provider.force_flush()
        from llmtrace.otel import error_counts
        after = len(memory.get_finished_spans())
        print(json.dumps({{"after": after, "errors": dict(error_counts())}}))
        """,
        tmp_path,
        lines=2,
    )
    assert result["imported"] is True  # wrapped at init(), as the instrumentation does itself
    assert_priced(result["spans"], ["gpt-4o", "o4-mini"])
    assert result["after"] == 2  # nothing traced after shutdown
    assert result["errors"] == {}
