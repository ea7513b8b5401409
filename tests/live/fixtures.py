"""Fixtures for the live-side tests: tests/test_live_*.py load them with ``pytest_plugins``.

Everything here is real: the provider is an HTTP server the real ``openai`` / ``anthropic`` SDKs
talk to, the receiver decodes real OTLP/HTTP protobuf exports.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from live.receiver import OtlpReceiver
from llmtrace.loopback import LoopbackProvider


@pytest.fixture(scope="session")
def provider() -> Iterator[LoopbackProvider]:
    server = LoopbackProvider().start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def receiver_server() -> Iterator[OtlpReceiver]:
    server = OtlpReceiver().start()
    yield server
    server.stop()


@pytest.fixture
def receiver(receiver_server: OtlpReceiver) -> OtlpReceiver:
    receiver_server.clear()
    return receiver_server


@pytest.fixture
def live(receiver: OtlpReceiver, tmp_path: Path) -> Iterator[Any]:
    """``llmtrace.init()`` exporting spans and metrics over OTLP/HTTP to the receiver.

    ``set_global=False`` keeps tests independent (the global providers can be set only once per
    process); the anthropic client is given the tracer provider explicitly instead.
    """
    from llmtrace.otel import _guard
    from llmtrace.otel.setup import init

    _guard.reset()
    handle = init(
        exporters="otlp",
        otlp_endpoint=receiver.endpoint,
        service_name="live-test",
        set_global=False,
        metric_interval_ms=3_600_000,
    )
    assert handle is not None
    yield handle
    handle.shutdown()
