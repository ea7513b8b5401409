"""Start-up stays cheap: the CLI and ``llmtrace.init()`` import only what they use.

Not timed (timings belong in bench/bench_startup.py); these check which modules get imported,
which is what the timings follow from.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from llmtrace import price_book, record
from llmtrace.otel import processor


def imported_after(code: str, tmp_path: Path, *modules: str) -> list[str]:
    probe = f"{code}; import sys; print(','.join(m for m in {modules!r} if m in sys.modules))"
    env = {"LLMTRACE_STORE": str(tmp_path / "store"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env
    )
    return [m for m in done.stdout.strip().split(",") if m]


def test_init_imports_neither_polars_nor_an_sdk_the_app_does_not_use(tmp_path: Path) -> None:
    """Nor the price data: it is loaded when the first call is priced."""
    heavy = ("polars", "anthropic", "openai", "langfuse", "llmtrace.store", "genai_prices")
    code = "import llmtrace; llmtrace.init()"
    assert imported_after(code, tmp_path, *heavy) == []


def test_an_sdk_imported_after_init_is_instrumented_then(tmp_path: Path) -> None:
    code = (
        "import llmtrace; handle = llmtrace.init(); "
        "assert handle.instrumented == []; "
        "import openai; assert handle.instrumented == ['openai'], handle.instrumented"
    )
    assert imported_after(code, tmp_path, "polars", "anthropic") == []


def test_an_sdk_imported_before_init_is_instrumented_at_once(tmp_path: Path) -> None:
    code = "import openai, llmtrace; assert llmtrace.init().instrumented == ['openai']"
    assert imported_after(code, tmp_path, "anthropic") == []


def test_the_live_side_copies_of_record_constants_agree() -> None:
    assert processor.TOKEN_FIELDS == record.TOKEN_FIELDS
    assert processor.PRICE_OK == record.PRICE_OK


def test_the_price_book_copies_of_record_constants_agree() -> None:
    assert price_book.COST_COMPONENTS == record.COST_COMPONENTS
    for name in ("OK", "UNKNOWN_MODEL", "NO_MODEL", "NO_USAGE", "INVALID_USAGE", "UNPRICED_TIER"):
        assert getattr(price_book, f"PRICE_{name}") == getattr(record, f"PRICE_{name}")


def test_pricing_live_calls_loads_no_polars(tmp_path: Path) -> None:
    """The price data the first priced call loads, and pricing a call with it, need no
    Polars (~25 MB an app would carry for nothing; bench/bench_startup.py)."""
    code = (
        "import datetime, llmtrace; handle = llmtrace.init(exporters='none'); "
        "pricer = handle.processor._pricer; "
        "costs = pricer({'provider': 'openai', 'model': 'gpt-4o', 'input_tokens': 1000, "
        "'output_tokens': 10, 'start_time': datetime.datetime(2026, 11, 1, tzinfo=datetime.UTC)}); "
        "assert costs['price_status'] == 'ok', costs"
    )
    assert imported_after(code, tmp_path, "polars", "genai_prices") == ["genai_prices"]


def test_an_app_that_exits_during_a_price_load_waits_for_it(tmp_path: Path) -> None:
    """A price load under way on a daemon thread (the pricing worker's first call) is
    finished, not killed, when the app exits.

    A daemon thread killed inside genai-prices' native code while the interpreter finalizes
    aborts the whole app (SIGABRT, about 1 exit in 15 before this was fixed). The load here is
    slowed and the app exits as soon as it has begun (an Event, no sleeping on the app's
    side): without the wait at exit the thread never prints.
    """
    code = (
        "import threading, time; from llmtrace import price_book; load = price_book.PriceBook.load\n"
        "began = threading.Event()\n"
        "def slow(*args, **kwargs):\n"
        "    began.set(); time.sleep(0.5); book = load(*args, **kwargs)\n"
        "    print('loaded', flush=True)\n"
        "    return book\n"
        "price_book.PriceBook.load = slow\n"
        "import llmtrace; handle = llmtrace.init(exporters='none')\n"
        "threading.Thread(target=handle.processor._pricer.get, daemon=True).start()\n"
        "began.wait()\n"
    )
    env = {"LLMTRACE_STORE": str(tmp_path / "store"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "loaded"


def test_an_app_that_makes_no_llm_call_loads_no_price_data(tmp_path: Path) -> None:
    code = (
        "import openai, llmtrace; llmtrace.init(); openai.OpenAI(api_key='k', base_url='http://x')"
    )
    assert imported_after(code, tmp_path, "genai_prices", "llmtrace.price_book") == []


def test_a_child_forked_during_a_price_load_loads_its_own(tmp_path: Path) -> None:
    """The parent's load holds the book's lock; the forked child has no thread finishing it,
    so without a fresh lock its first priced call would wait forever."""
    code = (
        "import os, threading, time; from llmtrace import price_book\n"
        "load = price_book.PriceBook.load; began = threading.Event(); go = threading.Event()\n"
        "def held(*args, **kwargs):\n"
        "    began.set(); go.wait(); return load(*args, **kwargs)\n"
        "price_book.PriceBook.load = held\n"
        "import llmtrace; handle = llmtrace.init(exporters='none'); pricer = handle.processor._pricer\n"
        "threading.Thread(target=pricer.get, daemon=True).start(); began.wait()\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    free = pricer._lock.acquire(timeout=10)\n"  # taken for good without the fix
        "    price_book.PriceBook.load = load\n"
        "    if free: pricer._lock.release(); pricer.get()\n"
        "    os._exit(0 if free else 3)\n"
        "go.set(); _, status = os.waitpid(pid, 0); print(os.waitstatus_to_exitcode(status))\n"
    )
    env = {"LLMTRACE_STORE": str(tmp_path / "store"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "0"


def cli_loaded(argv: list[str], tmp_path: Path, *modules: str) -> tuple[str, list[str]]:
    """Run ``llmtrace ARGV`` in a fresh interpreter: its output, and which of ``modules`` it
    loaded."""
    code = (
        f"import sys; from llmtrace import cli; sys.argv = ['llmtrace', *{argv!r}]\n"
        "try:\n    cli.main()\nexcept SystemExit as exit:\n    assert not exit.code, exit.code\n"
        f"print('\\nloaded:', *(m for m in {modules!r} if m in sys.modules))"
    )
    env = {"LLMTRACE_STORE": str(tmp_path / "store"), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    lines = done.stdout.strip().splitlines()
    return done.stdout, lines[-1].split()[1:]


def test_prices_of_one_model_loads_no_polars(tmp_path: Path) -> None:
    """``llmtrace prices MODEL`` reads the price book only (``llmtrace.price_book``)."""
    out, loaded = cli_loaded(["prices", "gpt-4o"], tmp_path, "polars", "genai_prices")
    assert "$2.50" in out  # the rates were shown
    assert loaded == ["genai_prices"]


def test_import_langfuse_help_loads_no_langfuse_sdk(tmp_path: Path) -> None:
    """``llmtrace import langfuse --help`` shows options only: the langfuse SDK (0.4 s of
    imports) loads when an import runs."""
    out, loaded = cli_loaded(["import", "langfuse", "--help"], tmp_path, "langfuse")
    assert "--since" in out  # the help was shown
    assert loaded == []


def test_the_importers_per_span_step_loads_no_polars(tmp_path: Path) -> None:
    """``otlp_rows`` turns spans into rows inside the app (the store exporter): no Polars."""
    code = (
        "from llmtrace.importers.otlp_rows import SpanRows; rows = SpanRows(False); "
        "rows.add({'trace_id': 't', 'span_id': 's', 'parent_span_id': None, 'name': 'chat', "
        "'scope': None, 'events': [], 'resource': {}, 'start_ns': 1, 'end_ns': 2, "
        "'attributes': {'gen_ai.system': 'openai', 'gen_ai.request.model': 'gpt-4o', "
        "'gen_ai.usage.input_tokens': 3}}); assert len(rows.calls) == 1, rows.calls"
    )
    assert imported_after(code, tmp_path, "polars") == []


def test_the_per_span_rows_name_the_importers_columns() -> None:
    """The call frame is built from the rows by name: every raw column is a row field (the
    tree, roots and evaluation schemas take their names from the rows themselves)."""
    from llmtrace.importers import otlp, otlp_rows

    assert set(otlp._RAW_SCHEMA.names()) <= set(otlp_rows.CALL_ROW)
