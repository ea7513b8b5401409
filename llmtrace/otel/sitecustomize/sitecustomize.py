"""Loaded at interpreter start-up by ``llmtrace run`` (its folder is put first on PYTHONPATH).

It calls ``llmtrace.init()`` before the app's code runs, then hands over to any other
``sitecustomize`` module the environment had (as ``opentelemetry-instrument`` does), so the app
starts exactly as it would without llmtrace. It must never stop the app: every failure,
including llmtrace not being importable by this interpreter, is swallowed.
"""

from __future__ import annotations


def _start() -> None:
    try:
        import llmtrace

        llmtrace.init()
    except Exception as exc:  # noqa: BLE001 - the app must start whatever happens here
        try:
            from llmtrace.otel import _guard

            _guard.swallow("sitecustomize", exc)
        except Exception:  # noqa: BLE001
            pass


def _chain() -> None:
    """Run the next ``sitecustomize`` on sys.path, the one this module shadows."""
    import contextlib
    import importlib.util
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        if not entry or os.path.abspath(entry) == here:
            continue
        candidate = os.path.join(entry, "sitecustomize.py")
        if os.path.isfile(candidate):
            spec = importlib.util.spec_from_file_location("_llmtrace_next_sitecustomize", candidate)
            if spec is not None and spec.loader is not None:
                # theirs, not ours, but never fatal here
                with contextlib.suppress(Exception):
                    spec.loader.exec_module(importlib.util.module_from_spec(spec))
            return


_chain()
_start()
