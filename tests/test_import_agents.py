"""``llmtrace import claude-code`` / ``import codex`` against transcripts in the real shapes.

The fixtures (tests/fixtures/claude-code, tests/fixtures/codex) follow the public shapes: a
streamed Claude Code response written as three entries with partial output counts, a request
without ``requestId``, 1-hour and 5-minute cache writes, a subagent file under
``<session>/subagents/``, a parent's ``progress`` copy and ``toolUseResult.usage`` (not
requests), a ``<synthetic>`` entry, a malformed line and a truncated last line; a Codex rollout
with ``info: null``, a re-emitted ``token_count``, a model change, and a fork that copies the
parent's history. The expected costs are computed here, independently, request by request,
with genai-prices' own ``calc_price``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import defaultdict
from datetime import datetime
from pathlib import Path

import polars as pl
import pytest
from click.testing import CliRunner
from genai_prices import Usage, calc_price

from llmtrace.cli import cli
from llmtrace.store import Store

FIXTURES = Path(__file__).parent / "fixtures"
CLAUDE = FIXTURES / "claude-code" / "projects"
CODEX = FIXTURES / "codex" / "sessions"


def _when(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _price(model: str, provider: str, at: datetime, **tokens: int) -> float:
    usage = Usage(**tokens)
    return float(
        calc_price(usage, model, provider_id=provider, genai_request_timestamp=at).total_price
    )


def claude_reference(root: Path) -> dict[str, dict]:
    """Per request: session, model and genai-prices' cost, read straight from the files.

    One request per (message id, request id) -- the message id alone without a request id --
    with the largest output count among its entries; priced at its first entry's time.
    """
    requests: dict[str, dict] = {}
    for path in sorted(root.rglob("*.jsonl")):
        for raw in path.read_bytes().split(b"\n"):
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            if entry.get("type") != "assistant":
                continue
            message = entry["message"]
            usage = message["usage"]
            if message["model"] == "<synthetic>" or not isinstance(usage["output_tokens"], int):
                continue
            key = f"{message['id']}/{entry.get('requestId')}"
            at = _when(entry["timestamp"])
            known = requests.get(key)
            if known is None or usage["output_tokens"] >= known["usage"]["output_tokens"]:
                first = at if known is None else min(known["at"], at)
                requests[key] = {
                    "usage": usage,
                    "at": first,
                    "model": message["model"],
                    "session": entry["sessionId"],
                }
            else:
                known["at"] = min(known["at"], at)
    for request in requests.values():
        u = request["usage"]
        written = u["cache_creation_input_tokens"]
        request["cost"] = _price(
            request["model"],
            "anthropic",
            request["at"],
            input_tokens=u["input_tokens"] + written + u["cache_read_input_tokens"],
            cache_read_tokens=u["cache_read_input_tokens"],
            cache_write_tokens=written,
            cache_write_1h_tokens=u["cache_creation"]["ephemeral_1h_input_tokens"],
            output_tokens=u["output_tokens"],
        )
    return requests


def codex_reference(root: Path) -> dict[str, dict]:
    """Per request (an increase of the running totals, counted once across files):
    ``last_token_usage`` priced with the model of the latest ``turn_context``."""
    requests: dict[str, dict] = {}
    for path in sorted(root.rglob("rollout-*.jsonl")):
        model = conversation = None
        for raw in path.read_bytes().split(b"\n"):
            try:
                entry = json.loads(raw)
            except ValueError:
                continue
            payload = entry.get("payload", {})
            if entry["type"] == "session_meta":
                conversation = conversation or payload["id"]
            elif entry["type"] == "turn_context":
                model = payload["model"]
            elif payload.get("type") == "token_count" and payload.get("info"):
                total = json.dumps(payload["info"]["total_token_usage"], sort_keys=True)
                last = payload["info"]["last_token_usage"]
                at = _when(entry["timestamp"])
                if total in requests and requests[total]["at"] <= at:
                    continue
                requests[total] = {
                    "at": at,
                    "model": model,
                    "session": conversation,
                    "cost": _price(
                        model,
                        "openai",
                        at,
                        input_tokens=last["input_tokens"],
                        cache_read_tokens=last["cached_input_tokens"],
                        output_tokens=last["output_tokens"],
                        output_reasoning_tokens=last["reasoning_output_tokens"],
                    ),
                }
    return requests


def _sums(requests: dict[str, dict], key: str) -> dict[str, float]:
    sums: dict[str, float] = defaultdict(float)
    for request in requests.values():
        sums[request[key]] += request["cost"]
    return dict(sums)


def _stored_sums(store: Store, source: str, key: str) -> dict[str, float]:
    frame = (
        store.scan()
        .filter(pl.col("source") == source)
        .group_by(key)
        .agg(pl.col("total_cost").sum())
        .collect()
    )
    return dict(frame.iter_rows())


def _run(*args: str) -> object:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


@pytest.fixture
def claude_copy(tmp_path: Path) -> Path:
    target = tmp_path / "projects"
    shutil.copytree(CLAUDE, target)
    return target


def test_claude_code_costs_equal_genai_prices_per_request(claude_copy: Path, tmp_path: Path):
    store_dir = tmp_path / "store"
    result = _run(
        "import", "claude-code", str(claude_copy), "--store", str(store_dir), "--settle", "0"
    )
    assert result.exit_code == 1  # two bad lines, reported, the rest imported
    assert "4f1d2c3b-aaaa-4bbb-8ccc-0123456789ab.jsonl:3: not valid JSON" in result.output
    assert ".jsonl:5: field 'usage': not a token count: 'many'" in result.output
    store = Store(store_dir)
    calls = store.scan().collect()
    reference = claude_reference(claude_copy)
    assert calls.height == len(reference) == 8  # A B C D, two subagent requests, V1 V2
    assert calls["span_id"].n_unique() == calls.height
    for key in ("model", "session"):
        column = "conversation_id" if key == "session" else key
        expected = _sums(reference, key)
        got = _stored_sums(store, "claude-code", column)
        assert got.keys() == expected.keys()
        for name, cost in expected.items():
            assert got[name] == pytest.approx(cost, abs=1e-6, rel=0)
    assert set(calls["price_status"]) == {"ok"}


def test_claude_code_request_shapes(claude_copy: Path, tmp_path: Path):
    store = Store(tmp_path / "store")
    _run("import", "claude-code", str(claude_copy), "--store", str(store.path), "--settle", "0")
    calls = store.scan().collect()
    a = calls.filter(pl.col("response_id") == "msg_A").row(0, named=True)
    # three streamed entries -> one call with the final output count, inclusive input
    assert a["output_tokens"] == 135 and a["reasoning_tokens"] == 49
    assert a["input_tokens"] == 10 + 9907 + 22820
    assert a["cache_write_tokens"] == a["cache_write_1h_tokens"] == 9907
    assert a["agent"] == "claude-code" and a["service"] == "shop"
    assert a["action"] == "claude-code turn"
    assert a["service_tier"] == "standard"  # Anthropic's usage.service_tier, kept
    b = calls.filter(pl.col("response_id") == "msg_B").row(0, named=True)
    assert b["tool"] == "Bash" and b["cache_write_1h_tokens"] == 0
    c = calls.filter(pl.col("response_id") == "msg_C").row(0, named=True)
    assert c["tool"] == "Task"
    sub = calls.filter(pl.col("agent") == "claude-code:subagent")
    assert sub.height == 2
    assert set(sub["conversation_id"]) == {"9c42ba52-3bf1-449f-a040-8ee33284a1c8"}
    # subagent requests belong to the parent's turn that spawned them (the first prompt)
    assert set(sub["trace_id"]) == {a["trace_id"]}
    assert sub.filter(pl.col("response_id") == "msg_S2")["output_tokens"].item() == 48
    d = calls.filter(pl.col("response_id") == "msg_D").row(0, named=True)
    assert d["trace_id"] != a["trace_id"]  # the second prompt is a second turn
    assert "msg_E" not in set(calls["response_id"])  # truncated last line: not yet
    assert "msg_syn" not in set(calls["response_id"])


def test_claude_code_incremental_reads_only_what_was_appended(claude_copy: Path, tmp_path: Path):
    store = Store(tmp_path / "store")
    args = ("import", "claude-code", str(claude_copy), "--store", str(store.path), "--settle", "0")
    _run(*args)
    before = store.scan().collect()
    again = _run(*args)
    assert "Read 0 new lines" in again.output  # nothing re-read, nothing added
    assert store.scan().collect().height == before.height
    # the truncated line is completed, and a new streamed entry of it appended
    session = claude_copy / "-home-dev-shop" / "9c42ba52-3bf1-449f-a040-8ee33284a1c8.jsonl"
    text = session.read_text()
    cut = text.rfind("\n") + 1
    assert text[cut:].startswith("{")  # the line being written
    lines = [json.loads(line) for line in text[:cut].splitlines()]
    entry = next(e for e in lines if e.get("uuid") == "d1")
    entry.update(
        uuid="e1", parentUuid="d1", timestamp="2026-11-20T10:31:00.000Z", requestId="req_E"
    )
    entry["message"].update(id="msg_E")
    entry["message"]["usage"].update(
        input_tokens=3, cache_read_input_tokens=35300, output_tokens=10
    )
    final = json.loads(json.dumps(entry))
    final["uuid"] = "e2"
    final["message"]["usage"]["output_tokens"] = 95
    with open(session, "w") as handle:
        handle.write(text[:cut] + json.dumps(entry) + "\n" + json.dumps(final) + "\n")
    result = _run(*args)
    assert "Read 2 new lines" in result.output
    after = store.scan().collect()
    assert after.height == before.height + 1
    e = after.filter(pl.col("response_id") == "msg_E").row(0, named=True)
    assert e["output_tokens"] == 95
    assert e["trace_id"] == before.filter(pl.col("response_id") == "msg_D")["trace_id"].item()


def test_claude_code_active_file_keeps_its_last_request_for_later(claude_copy: Path, tmp_path):
    store = Store(tmp_path / "store")
    session = claude_copy / "-home-dev-shop" / "9c42ba52-3bf1-449f-a040-8ee33284a1c8.jsonl"
    now = time.time()
    os.utime(session, (now, now))
    _run("import", "claude-code", str(session), "--store", str(store.path), "--settle", "3600")
    held = store.scan().collect()
    assert "msg_D" not in set(held["response_id"])  # may still be streaming
    _run("import", "claude-code", str(session), "--store", str(store.path), "--settle", "0")
    assert "msg_D" in set(store.scan().collect()["response_id"])


def test_resumed_session_copy_adds_nothing(claude_copy: Path, tmp_path: Path):
    store = Store(tmp_path / "store")
    args = ("import", "claude-code", str(claude_copy), "--store", str(store.path), "--settle", "0")
    _run(*args)
    count = store.scan().collect().height
    source = claude_copy / "-home-dev-billing" / "4f1d2c3b-aaaa-4bbb-8ccc-0123456789ab.jsonl"
    shutil.copy(source, source.with_name("resumed-session.jsonl"))
    _run(*args)
    assert store.scan().collect().height == count


def test_codex_costs_equal_genai_prices_and_forks_count_once(tmp_path: Path):
    sessions = tmp_path / "sessions"
    shutil.copytree(CODEX, sessions)
    store = Store(tmp_path / "store")
    result = _run("import", "codex", str(sessions), "--store", str(store.path))
    assert result.exit_code == 1
    assert ":13: not valid JSON" in result.output
    calls = store.scan().collect()
    reference = codex_reference(sessions)
    assert calls.height == len(reference) == 4  # r1 r2 r3 once, the fork's own r4
    for key in ("model", "session"):
        column = "conversation_id" if key == "session" else key
        expected = _sums(reference, key)
        got = _stored_sums(store, "codex", column)
        assert got.keys() == expected.keys()
        for name, cost in expected.items():
            assert got[name] == pytest.approx(cost, abs=1e-6, rel=0)
    r3 = calls.filter(pl.col("model") == "gpt-5").sort("start_time").row(0, named=True)
    assert r3["reasoning_effort"] == "high" and r3["reasoning_tokens"] == 640
    assert r3["input_tokens"] == 17000 and r3["cache_read_tokens"] == 16000
    first = calls.sort("start_time").row(0, named=True)
    assert first["tool"] == "shell" and first["service"] == "api"
    again = _run("import", "codex", str(sessions), "--store", str(store.path))
    assert "Read 0 new lines" in again.output
    assert store.scan().collect().height == 4


def test_codex_appended_lines_continue_the_running_totals(tmp_path: Path):
    sessions = tmp_path / "sessions"
    shutil.copytree(CODEX, sessions)
    store = Store(tmp_path / "store")
    _run("import", "codex", str(sessions), "--store", str(store.path))
    parent = next(sessions.rglob("rollout-*112b63d66e90.jsonl"))
    lines = [json.loads(x) for x in parent.read_text().splitlines() if x.startswith("{")]
    last = [e for e in lines if e["payload"].get("type") == "token_count"][-1]
    extra = json.loads(json.dumps(last))
    info = extra["payload"]["info"]
    step = {
        "input_tokens": 20000,
        "cached_input_tokens": 19000,
        "output_tokens": 10,
        "reasoning_output_tokens": 0,
        "total_tokens": 20010,
    }
    info["last_token_usage"] = step
    info["total_token_usage"] = {k: v + step[k] for k, v in info["total_token_usage"].items()}
    extra["timestamp"] = "2026-11-20T21:59:00.000Z"
    with open(parent, "a") as handle:
        handle.write(json.dumps(last) + "\n")  # re-emitted: not a request
        handle.write(json.dumps(extra) + "\n")
    result = _run("import", "codex", str(sessions), "--store", str(store.path))
    assert "Read 2 new lines" in result.output
    calls = store.scan().collect()
    assert calls.height == 5
    new = calls.filter(pl.col("input_tokens") == 20000).row(0, named=True)
    assert new["model"] == "gpt-5" and new["cache_read_tokens"] == 19000  # model carried over


def test_missing_default_folder_is_a_usage_error(tmp_path: Path):
    result = _run("import", "codex", str(tmp_path / "nope"), "--store", str(tmp_path / "s"))
    assert result.exit_code == 2
    assert "no such file or folder" in result.output
