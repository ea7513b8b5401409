"""Live side never hurts the app: errors inside llmtrace are swallowed, logged once, counted.

Also: ``import llmtrace`` stays cheap and opens no connection, and bad settings from the
environment fall back to defaults instead of stopping the app.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from live.clients import REPO, openai_client
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from llmtrace.otel import _guard
from llmtrace.otel.processor import CostSpanProcessor

pytest_plugins = ["live.fixtures"]


class ExplodingProcessor(SpanProcessor):
    """A downstream processor that raises in every callback."""

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        raise RuntimeError("boom on start")

    def on_end(self, span: Any) -> None:
        raise RuntimeError("boom on end")


def exploding_pricer(call: Any) -> Any:
    raise RuntimeError("price table on fire")


@pytest.fixture
def instrumented_with(request: pytest.FixtureRequest) -> Any:
    """Instrument openai into a provider holding the given processor; undo afterwards."""
    from opentelemetry.instrumentation.genai.openai import OpenAIInstrumentor

    def install(processor: SpanProcessor) -> None:
        provider = TracerProvider()
        provider.add_span_processor(processor)
        OpenAIInstrumentor().instrument(tracer_provider=provider)
        request.addfinalizer(OpenAIInstrumentor().uninstrument)

    return install


def test_raising_processor_and_pricer_leave_calls_working(
    provider: Any, instrumented_with: Any
) -> None:
    _guard.reset()
    memory = InMemorySpanExporter()
    processor = CostSpanProcessor(
        [ExplodingProcessor(), SimpleSpanProcessor(memory)], pricer=exploding_pricer
    )
    instrumented_with(processor)
    client = openai_client(provider)
    for _ in range(3):
        reply = client.chat.completions.create(
            model="gpt-4o", messages=[{"role": "user", "content": "hi"}]
        )
        assert reply.choices[0].message.content == "Hello from the loopback."
    assert processor.force_flush(10_000)
    # the app's spans still reach the healthy exporter, without cost (pricing failed)
    spans = memory.get_finished_spans()
    assert len(spans) == 3
    assert all("gen_ai.usage.cost" not in s.attributes for s in spans)
    counts = _guard.error_counts()
    assert counts["downstream.on_start"] == 3
    assert counts["downstream.on_end"] == 3
    assert counts["processor.on_end"] == 3


def test_errors_are_logged_once_per_place(caplog: pytest.LogCaptureFixture) -> None:
    _guard.reset()
    with caplog.at_level("WARNING", logger="llmtrace.otel"):
        for _ in range(5):
            _guard.swallow("somewhere", ValueError("bad"))
    assert _guard.error_counts() == {"somewhere": 5}
    assert len([r for r in caplog.records if "somewhere" in r.getMessage()]) == 1


def test_hook_failure_is_swallowed() -> None:
    from llmtrace.otel.hook import FingerprintHook

    class BrokenSpan:
        def is_recording(self) -> bool:
            return True

        def set_attributes(self, attrs: Any) -> None:
            raise RuntimeError("span gone")

    from opentelemetry.util.genai.types import InputMessage, Text

    _guard.reset()
    hook = FingerprintHook()
    message = InputMessage(role="user", parts=[Text(content="hi")])
    hook.on_completion(inputs=[message], outputs=[], system_instruction=[], span=BrokenSpan())
    assert _guard.error_counts() == {"hook.on_completion": 1}


def _run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    import os

    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LLMTRACE_"))}
    environ.update(env, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        env=environ,
        timeout=120,
    )


def test_import_is_cheap_and_init_opens_no_connection(tmp_path: Path) -> None:
    result = _run_python(
        f"""
        import socket, sys
        def refuse(*args, **kwargs):
            raise AssertionError("network used")
        socket.socket.connect = refuse
        socket.create_connection = refuse
        socket.getaddrinfo = refuse
        import llmtrace
        heavy = [m for m in sys.modules
                 if m.split(".")[0] in ("opentelemetry", "genai_prices", "polars", "openai")]
        assert heavy == [], heavy
        handle = llmtrace.init(exporters="store", store={str(tmp_path)!r}, instrument="none")
        assert handle is not None
        handle.processor._pricer.get()  # price data loads from the wheel, not the network
        from llmtrace.otel import error_counts
        assert error_counts() == {{}}, error_counts()
        handle.shutdown()
        print("ok")
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_bad_environment_falls_back_and_bad_keyword_raises() -> None:
    from llmtrace.otel.settings import resolve

    _guard.reset()
    settings = resolve(
        {
            "LLMTRACE_EXPORTERS": "store,carrier-pigeon",
            "LLMTRACE_METRIC_MAX_VALUES": "many",
            "LLMTRACE_BATCH_DELAY_MS": "-5",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
        }
    )
    assert settings.exporters == ("store",)
    assert settings.metric_max_values == 50
    assert settings.batch_delay_ms == 200.0
    assert settings.otlp_protocol == "grpc"
    assert set(_guard.error_counts()) == {
        "settings:LLMTRACE_EXPORTERS",
        "settings:LLMTRACE_METRIC_MAX_VALUES",
        "settings:LLMTRACE_BATCH_DELAY_MS",
    }
    with pytest.raises(ValueError, match="exporters"):
        resolve({}, exporters="store,carrier-pigeon")
    with pytest.raises(ValueError, match="unknown keyword"):
        resolve({}, exporter="store")


def test_settings_from_environment_and_keywords_agree() -> None:
    from llmtrace.otel.settings import resolve

    from_env = resolve(
        {
            "OTEL_SERVICE_NAME": "shop",
            "LLMTRACE_EXPORTERS": "otlp,console",
            "LLMTRACE_METRIC_LABELS": "model,prompt",
            "LLMTRACE_METRIC_ALLOW": "prompt=checkout|search",
            "LLMTRACE_CAPTURE_CONTENT": "true",
            "LLMTRACE_INSTRUMENT": "openai",
            "LLMTRACE_BATCH_DELAY_MS": "20",
        }
    )
    from_kwargs = resolve(
        {},
        service_name="shop",
        exporters=["otlp", "console"],
        metric_labels=["model", "prompt"],
        metric_allow={"prompt": ["checkout", "search"]},
        capture_content=True,
        instrument=["openai"],
        batch_delay_ms=20,
    )
    assert from_env == from_kwargs
    assert from_env.metric_allow == {"prompt": frozenset({"checkout", "search"})}
    # an OTLP endpoint alone turns on the otlp exporter next to the store
    assert resolve({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}).exporters == (
        "store",
        "otlp",
    )


def test_every_setting_is_documented_in_the_readme() -> None:
    """A variable a user cannot find does not exist for them: the README's settings table names
    every ``LLMTRACE_*`` / ``OTEL_*`` variable ``init()`` reads."""
    from llmtrace.otel.settings import ENV_VARS

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    missing = [name for name in ENV_VARS if f"`{name}`" not in readme]
    assert missing == []


def test_batch_delay_reaches_the_pricing_worker(tmp_path: Path) -> None:
    from llmtrace.otel.setup import init

    handle = init(
        exporters="store",
        store=tmp_path,
        instrument="none",
        metrics=False,
        set_global=False,
        batch_delay_ms=50,
    )
    assert handle is not None
    try:
        assert handle.processor._delay == 0.05  # the worker waits this long for a batch
    finally:
        handle.shutdown()
