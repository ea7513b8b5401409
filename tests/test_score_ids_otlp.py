"""OTLP evaluations have no score id: they keep the copy rule after scores gained ids. Equal
verdicts of two evaluators stay two, re-importing adds nothing, and nothing is ever "updated"."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner
from test_import_otlp import chat, evaluation, request, span, write_lines

from llmtrace.cli import cli
from llmtrace.store import Store

ACCURATE = {"name": "accuracy", "value": 1.0, "label": None, "source": "otel", "id": None}


def test_otlp_evaluations_without_id_still_add_copies(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LLMTRACE_CONFIG", raising=False)
    store = tmp_path / "store"

    def import_(path: Path) -> str:
        result = CliRunner().invoke(cli, ["import", "otlp", str(path), "--store", str(store)])
        assert result.exit_code == 0, result.output
        return result.stdout

    def judge(span_id: str, *values: float) -> dict:
        events = [evaluation("accuracy", v) for v in values]
        return span(span_id, "00000000000000a1", "judge", {}, events=events)

    import_(
        write_lines(
            tmp_path / "calls.jsonl", request(span("00000000000000a1", None, "chat", chat()))
        )
    )
    two = write_lines(tmp_path / "two.jsonl", request(judge("00000000000000e1", 1.0, 1.0)))
    assert "0 attached to new calls, 2 to stored calls, 0 matched no call" in import_(two)
    files = sorted(Store(store).files())
    again = import_(two)
    assert "2 already attached" in again and "updated" not in again
    assert sorted(Store(store).files()) == files
    one = write_lines(tmp_path / "one.jsonl", request(judge("00000000000000e2", 1.0)))
    assert "0 to stored calls, 0 matched no call, 1 already attached" in import_(one)
    three = write_lines(tmp_path / "three.jsonl", request(judge("00000000000000e3", 1.0, 1.0, 1.0)))
    assert "1 to stored calls, 0 matched no call, 2 already attached" in import_(three)
    (row,) = Store(store).scan().collect().to_dicts()
    assert row["scores"] == [ACCURATE] * 3
    assert row["accuracy"] == pytest.approx(1.0)
