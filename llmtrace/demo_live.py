"""``llmtrace demo --live``: live pricing in a minute, offline and without API keys.

Starts the loopback provider (``llmtrace.loopback``: real OpenAI and Anthropic response shapes
on 127.0.0.1), runs ``examples/chat_app.py`` under ``llmtrace run`` with the SDKs pointed at
it, and shows the calls the app made as the store priced them. Everything a real app goes
through runs for real: the SDKs, the official instrumentations, llmtrace's span processor,
pricing and the store; only the provider is local.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

from llmtrace.errors import UsageError

SERVICE = "chat-app-demo"


def example_app() -> Path:
    """examples/chat_app.py of this checkout (it is not in the wheel)."""
    app = Path(__file__).resolve().parent.parent / "examples" / "chat_app.py"
    if not app.is_file():
        raise UsageError(
            f"{app} not found: `demo --live` runs the example app of a source checkout "
            "(git clone, then pip install -e '.[dev]')"
        )
    return app


def check_sdks() -> None:
    missing = [name for name in ("openai", "anthropic") if importlib.util.find_spec(name) is None]
    if missing:
        raise UsageError(
            f"the example app needs the {' and '.join(missing)} SDK(s): "
            f"pip install {' '.join(missing)}"
        )


def app_environment(base: dict[str, str], openai_url: str, anthropic_url: str) -> dict[str, str]:
    """The app's environment: SDKs pointed at the loopback with placeholder keys; the user's
    own OTLP/Langfuse settings left out, so the demo sends nothing anywhere."""
    env = {
        k: v
        for k, v in base.items()
        if not k.startswith(("OTEL_", "LLMTRACE_", "OPENAI_", "ANTHROPIC_", "LANGFUSE_"))
    }
    env.update(
        OPENAI_BASE_URL=openai_url,
        OPENAI_API_KEY="sk-loopback",
        ANTHROPIC_BASE_URL=anthropic_url,
        ANTHROPIC_API_KEY="sk-ant-loopback",
    )
    return env


def run_live_demo(store: str | Path, *, timeout: float = 180.0) -> tuple[int, datetime]:
    """Run the example app against a loopback provider under ``llmtrace run``; returns the
    app's exit code and when it started (its calls are the store's rows from then on)."""
    from llmtrace.loopback import LoopbackProvider

    check_sdks()
    app = example_app()
    provider = LoopbackProvider().start()
    started = datetime.now(UTC)
    try:
        command = [
            sys.executable,
            "-m",
            "llmtrace.cli",
            "run",
            "--exporters",
            "store",
            "--store",
            str(store),
            "--service-name",
            SERVICE,
            "--",
            sys.executable,
            str(app),
        ]
        env = app_environment(
            dict(os.environ), provider.openai_base_url, provider.anthropic_base_url
        )
        done = subprocess.run(command, env=env, timeout=timeout, check=False)
    finally:
        provider.stop()
    return done.returncode, started
