"""Helpers for the live-side tests: SDK clients and subprocess environments for the loopback."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from llmtrace.loopback import LoopbackProvider

REPO = Path(__file__).resolve().parents[2]


def openai_client(provider: LoopbackProvider) -> Any:
    import openai

    return openai.OpenAI(base_url=provider.openai_base_url, api_key="sk-test", max_retries=0)


def anthropic_client(provider: LoopbackProvider, tracer_provider: Any = None) -> Any:
    import anthropic

    options: dict[str, Any] = {}
    if tracer_provider is not None:
        options["open_telemetry"] = {"tracer_provider": tracer_provider}
    return anthropic.Anthropic(
        base_url=provider.anthropic_base_url, api_key="sk-ant-test", max_retries=0, **options
    )


def child_env(provider: LoopbackProvider, **extra: str) -> dict[str, str]:
    """Environment for a subprocess app pointed at the loopback provider."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OTEL_", "LLMTRACE_", "OPENAI_", "ANTHROPIC_"))
    }
    env.update(
        OPENAI_BASE_URL=provider.openai_base_url,
        OPENAI_API_KEY="sk-test",
        ANTHROPIC_BASE_URL=provider.anthropic_base_url,
        ANTHROPIC_API_KEY="sk-ant-test",
        PYTHONPATH=os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    env.update(extra)
    return env


PYTHON = sys.executable
