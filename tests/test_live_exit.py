"""A dead or silent collector never holds the app (issue 12, point 4): process exit and
``shutdown()`` are delayed at most ``LLMTRACE_EXIT_TIMEOUT_MS``, and export failures are logged
once with a running count, not per batch. The collector is a loopback server that accepts
connections and never answers, the SDK's real OTLP exporters talk to it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).parent.parent
UNBOUNDED_SECONDS = 41.0  # the exit before LLMTRACE_EXIT_TIMEOUT_MS bounded it


@pytest.fixture
def silent_endpoint() -> Iterator[str]:
    """A TCP server that accepts every connection and never sends a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(256)
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            held.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    server.close()
    for conn in held:
        conn.close()


SCRIPT = """
import atexit, logging, sys, time
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
marks = {}
def report():
    print(f"exit-delay {time.monotonic() - marks['end']:.2f}", file=sys.stderr, flush=True)
atexit.register(report)  # registered first, so it runs after every other exit handler
import llmtrace
handle = llmtrace.init(exporters="otlp", otlp_endpoint=ENDPOINT, instrument="none",
                       service_name="exit-test")
from opentelemetry import trace
tracer = trace.get_tracer("app")
for i in range(3000):
    with tracer.start_as_current_span("chat") as span:
        span.set_attribute("gen_ai.operation.name", "chat")
        span.set_attribute("gen_ai.request.model", "gpt-4o-mini")
        span.set_attribute("gen_ai.usage.input_tokens", 10)
        span.set_attribute("gen_ai.usage.output_tokens", 2)
time.sleep(0.5)  # let the batch worker start exporting into the silence
marks["end"] = time.monotonic()
if EXPLICIT:
    handle.shutdown()
    print(f"shutdown {time.monotonic() - marks['end']:.2f}", file=sys.stderr, flush=True)
    marks["end"] = time.monotonic()
"""


def run_app(endpoint: str, explicit: bool, timeout_ms: int) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "LLMTRACE_"))}
    environ.update(PYTHONPATH=str(REPO), LLMTRACE_EXIT_TIMEOUT_MS=str(timeout_ms))
    code = f"ENDPOINT = {endpoint!r}\nEXPLICIT = {explicit!r}\n" + textwrap.dedent(SCRIPT)
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=environ, timeout=120
    )


def seconds(stderr: str, label: str) -> float:
    line = next(x for x in stderr.splitlines() if x.startswith(label + " "))
    return float(line.split()[1])


@pytest.mark.parametrize("explicit", [False, True], ids=["exit", "shutdown"])
def test_a_silent_collector_delays_exit_at_most_the_timeout(silent_endpoint, explicit):
    result = run_app(silent_endpoint, explicit, timeout_ms=1000)
    assert result.returncode == 0, result.stderr
    # 1 s for the exports. Unbounded, the exit took 41 s (the SDK's export timeouts and
    # retries); bounded it takes ~1-2 s on a quiet machine but was measured at up to 8.4 s at
    # load 18-21, so the limit sits between the two rather than near the quiet figure.
    if explicit:
        assert seconds(result.stderr, "shutdown") < UNBOUNDED_SECONDS / 3, result.stderr
    assert seconds(result.stderr, "exit-delay") < UNBOUNDED_SECONDS / 3, result.stderr
    failures = [x for x in result.stderr.splitlines() if "OTLP export to" in x]
    assert 1 <= len(failures) <= 2, result.stderr  # logged once (and again at 10 failures)
    assert "failed batch(es) so far" in failures[0]
    assert "127.0.0.1" in failures[0]
    # the SDK's own per-batch lines are not repeated for every batch
    assert "Failed to export" not in result.stderr
    assert "Traceback" not in result.stderr


def test_the_default_bound_is_a_few_seconds():
    from llmtrace.otel.settings import LiveSettings, resolve

    assert LiveSettings().exit_timeout_ms <= 5000
    assert resolve({"LLMTRACE_EXIT_TIMEOUT_MS": "1500"}).exit_timeout_ms == 1500


def test_credentials_in_the_endpoint_are_not_logged():
    from llmtrace.safe_text import redact_url

    assert redact_url("http://pk-lf-1:sk-lf-2@host:3000/x") == "http://***@host:3000/x"
    assert redact_url("http://host:3000") == "http://host:3000"
