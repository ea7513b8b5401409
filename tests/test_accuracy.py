"""Accuracy settings and the scores -> accuracy expression every importer and the audit share."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from llmtrace.accuracy import DEFAULT_CATEGORIES, DEFAULT_NAMES, AccuracyConfig
from llmtrace.config import Config, ConfigError
from llmtrace.record import SCORE_STRUCT


def scores(*lists: list[tuple[str, float | None, str | None]] | None) -> pl.DataFrame:
    rows = [
        None
        if items is None
        else [{"name": n, "value": v, "label": lab, "source": "t"} for n, v, lab in items]
        for items in lists
    ]
    return pl.DataFrame({"scores": rows}, schema={"scores": pl.List(SCORE_STRUCT)})


def accuracy(config: AccuracyConfig, frame: pl.DataFrame) -> list[float | None]:
    return frame.select(config.from_scores()).to_series().to_list()


def test_defaults_when_the_config_says_nothing(tmp_path: Path) -> None:
    config = AccuracyConfig.from_config(Config({}, tmp_path / "llmtrace.toml"))
    assert config.names == frozenset(DEFAULT_NAMES)
    assert config.categories == dict(DEFAULT_CATEGORIES)
    assert config.names_configured is False


def test_config_names_and_categories_are_case_insensitive(tmp_path: Path) -> None:
    section = {"names": ["Verdict"], "categories": {"Good": 1, "meh": 0.5}}
    config = AccuracyConfig.from_config(Config({"accuracy": section}, tmp_path / "x.toml"))
    assert config.names == {"verdict"} and config.names_configured
    assert config.categories == {"good": 1.0, "meh": 0.5}  # replaces the defaults whole
    frame = scores([("VERDICT", None, "GOOD"), ("verdict", None, "Meh")], [("verdict", 2.0, None)])
    assert accuracy(config, frame) == [0.75, None]


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"names": "accuracy"}, "[accuracy] names must be a list"),
        ({"names": ["ok", ""]}, "[accuracy] names must be a list"),
        ({"categories": ["pass"]}, "[accuracy.categories] must be a table"),
        ({"categories": {"great": 2}}, "[accuracy.categories] great = 2"),
        ({"categories": {"yes": True}}, "[accuracy.categories] yes = True"),
    ],
)
def test_bad_values_name_the_file(tmp_path: Path, section: dict, message: str) -> None:
    path = tmp_path / "llmtrace.toml"
    with pytest.raises(ConfigError, match=str(path)) as raised:
        AccuracyConfig.from_config(Config({"accuracy": section}, path))
    assert message in str(raised.value)


def test_from_scores_value_then_label_then_nothing() -> None:
    config = AccuracyConfig()
    frame = scores(
        [("accuracy", 1.0, None), ("Correctness", None, "FAIL"), ("helpfulness", 4.0, None)],
        [("exact_match", 7.0, "passed")],  # out of range: the label decides
        [("exact_match", 7.0, None), ("toxicity", 0.1, None)],  # nothing counts
        [],
        None,
    )
    assert accuracy(config, frame) == [0.5, 1.0, None, None, None]
    assert accuracy(AccuracyConfig(names=frozenset()), frame) == [None] * 5


def test_resolve_prefers_arguments_and_reads_the_config_for_the_rest(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "llmtrace.toml").write_text(
        '[accuracy]\nnames = ["judge"]\n[accuracy.categories]\ngood = 1\n'
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LLMTRACE_CONFIG", raising=False)
    from_config = AccuracyConfig.resolve()
    assert (from_config.names, from_config.categories) == ({"judge"}, {"good": 1.0})
    given = AccuracyConfig.resolve(names=["Accuracy"])
    assert (given.names, given.categories) == ({"accuracy"}, {"good": 1.0})


def test_otlp_import_uses_the_configured_categories(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``[accuracy.categories]`` reaches the OTLP importer (labels map through the config)."""
    from llmtrace.importers.otlp import import_otlp

    event = {
        "name": "gen_ai.evaluation.result",
        "attributes": [
            {"key": "gen_ai.evaluation.name", "value": {"stringValue": "judge"}},
            {"key": "gen_ai.evaluation.score.label", "value": {"stringValue": "Good"}},
        ],
    }
    attrs = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-4o-mini",
        "gen_ai.usage.input_tokens": 10,
        "gen_ai.usage.output_tokens": 1,
    }
    span = {
        "traceId": "0123456789abcdef0123456789abcdef",
        "spanId": "00000000000000a1",
        "name": "chat",
        "startTimeUnixNano": "1767225600000000000",
        "endTimeUnixNano": "1767225601000000000",
        "attributes": [
            {"key": k, "value": {"intValue": str(v)} if type(v) is int else {"stringValue": v}}
            for k, v in attrs.items()
        ],
        "events": [event],
    }
    request = {"resourceSpans": [{"scopeSpans": [{"spans": [span]}]}]}
    path = tmp_path / "t.jsonl"
    path.write_text(json.dumps(request) + "\n")
    (tmp_path / "llmtrace.toml").write_text(
        '[accuracy]\nnames = ["judge"]\n[accuracy.categories]\ngood = 0.75\n'
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LLMTRACE_CONFIG", raising=False)
    result = import_otlp([path])
    assert result.problems == []
    assert result.calls["accuracy"].to_list() == [0.75]
