"""--since/--until parsing and configuration discovery."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from llmtrace.config import ConfigError, load_config
from llmtrace.timespec import parse_when

NOW = datetime(2026, 11, 27, 12, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("7d", NOW - timedelta(days=7)),
        ("24h", NOW - timedelta(hours=24)),
        ("90m", NOW - timedelta(minutes=90)),
        ("2w", NOW - timedelta(weeks=2)),
        ("now", NOW),
        ("today", datetime(2026, 11, 27, tzinfo=UTC)),
        ("2026-11-01", datetime(2026, 11, 1, tzinfo=UTC)),
        ("2026-11-01T10:00:00Z", datetime(2026, 11, 1, 10, tzinfo=UTC)),
        ("2026-11-01T10:00:00", datetime(2026, 11, 1, 10, tzinfo=UTC)),
        ("2026-11-01T12:00:00+02:00", datetime(2026, 11, 1, 10, tzinfo=UTC)),
    ],
)
def test_parse_when(text, expected):
    assert parse_when(text, now=NOW) == expected


@pytest.mark.parametrize("text", ["yesterday-ish", "7x", "2026-13-01", ""])
def test_parse_when_rejects_with_the_accepted_forms(text):
    with pytest.raises(ValueError, match="24h, 7d"):
        parse_when(text, now=NOW)


def test_config_found_in_llmtrace_toml_walking_up(tmp_path, monkeypatch):
    monkeypatch.delenv("LLMTRACE_CONFIG", raising=False)
    (tmp_path / "llmtrace.toml").write_text('prices = "p.toml"\n[rules]\nselect = ["LT1"]\n')
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    config = load_config(start=nested)
    assert config.path == tmp_path / "llmtrace.toml"
    assert config.section("rules") == {"select": ["LT1"]}
    assert config.resolve_path(config.data["prices"]) == tmp_path / "p.toml"


def test_config_from_pyproject_tool_table(tmp_path, monkeypatch):
    monkeypatch.delenv("LLMTRACE_CONFIG", raising=False)
    (tmp_path / "pyproject.toml").write_text('[tool.llmtrace.accuracy]\nnames = ["correct"]\n')
    assert load_config(start=tmp_path).section("accuracy") == {"names": ["correct"]}


def test_bad_config_names_the_file(tmp_path):
    bad = tmp_path / "llmtrace.toml"
    bad.write_text("[rules\n")
    with pytest.raises(ConfigError, match="llmtrace.toml: not valid TOML"):
        load_config(bad)
    bad.write_text("rules = 3\n")
    with pytest.raises(ConfigError, match=r"\[rules\] must be a table"):
        load_config(bad).section("rules")
