"""Spans made in a test with the OpenTelemetry SDK: a tracer whose finished spans are kept in
memory, and the attributes of one plain chat call (OTel GenAI semconv).

Why here: the live spool, store and carry tests each built the same provider, exporter and
usage dictionary by hand (duplicates --change found fourteen copies).
"""

from __future__ import annotations

from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

CHAT_USAGE: dict[str, Any] = {
    "gen_ai.operation.name": "chat",
    "gen_ai.provider.name": "openai",
    "gen_ai.request.model": "gpt-4o-mini",
    "gen_ai.usage.input_tokens": 100,
    "gen_ai.usage.output_tokens": 10,
}
"""One chat call's attributes: copy it (``dict(CHAT_USAGE)`` or ``{**CHAT_USAGE, ...}``)."""


def memory_provider(
    resource: Resource | None = None,
) -> tuple[InMemorySpanExporter, TracerProvider]:
    """A tracer provider whose finished spans land in the returned in-memory exporter."""
    memory = InMemorySpanExporter()
    provider = TracerProvider() if resource is None else TracerProvider(resource=resource)
    provider.add_span_processor(SimpleSpanProcessor(memory))
    return memory, provider
