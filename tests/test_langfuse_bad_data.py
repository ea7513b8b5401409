"""Bad Langfuse data never blocks an import (issue 12, point 2): a bad observation or score is
skipped with a problem naming its id and field, the checkpoint moves past it, malformed pages
are retried like 5xx answers, and credentials in the host URL never reach output or file names.
Against the loopback Langfuse server, through the real SDK and HTTP client."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from langfuse_server import LangfuseStub, observation, score

from llmtrace.cli import cli
from llmtrace.importers.langfuse import (
    LangfuseImportError,
    LangfuseSettings,
    RetryPolicy,
    checkpoint_name,
    import_langfuse,
)
from llmtrace.pricing import PriceBook
from llmtrace.store import Store

T0 = datetime(2026, 9, 1, 10, tzinfo=UTC)
SINCE, UNTIL = T0 - timedelta(hours=1), T0 + timedelta(days=1)
FAST = RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.05)
BOOK = PriceBook()
V2_OBS = "/api/public/v2/observations"


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("LLMTRACE_CONFIG", "LLMTRACE_PRICES", "LANGFUSE_BASE_URL", "LANGFUSE_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("LANGFUSE_PUBLIC_KEY", raising=False)
    monkeypatch.delenv("LANGFUSE_SECRET_KEY", raising=False)


def good(i: int) -> dict[str, Any]:
    return observation(
        f"obs-{i:02d}", f"trace-{i}", T0 + timedelta(minutes=i), usage={"input": 10, "output": 2}
    )


def poisoned(**fields: Any) -> dict[str, Any]:
    row = good(99)
    row["id"] = "obs-bad"
    row.update(fields)
    return row


def run(url: str, stub: LangfuseStub, store: Store, **options: Any):
    settings = LangfuseSettings(url, stub.public_key, stub.secret_key, timeout=10)
    options = {
        "since": SINCE,
        "until": UNTIL,
        "book": BOOK,
        "page_size": 3,
        "retry": FAST,
        **options,
    }
    return import_langfuse(store, settings, **options)


BAD = {
    "input 1e30": ({"usageDetails": {"input": 1e30, "output": 1}}, "usageDetails.input"),
    "input 2^63-1": ({"usageDetails": {"input": 2**63 - 1, "output": 1}}, "usageDetails.input"),
    "negative output": ({"usageDetails": {"input": 1, "output": -5}}, "usageDetails.output"),
    "model object": ({"model": {"name": "gpt-4o"}}, "model"),
    "cost NaN": ({"costDetails": {"total": "NaN"}}, "costDetails.total"),
    "cost negative": ({"costDetails": {"total": -2.5}}, "costDetails.total"),
    "end in year 9999": ({"endTime": "9999-01-01T00:00:00Z"}, "endTime"),
    "id with a newline": ({"id": "obs-bad\n/etc/x:1: forged", "model": {"x": 1}}, "model"),
}


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"startTime": "9999-01-01T00:00:00Z"}, "startTime 9999-01-01T00:00:00Z is not between"),
        ({"startTime": "1970-01-01T00:00:00Z"}, "startTime 1970-01-01T00:00:00Z is not between"),
        ({"latency": float("inf"), "endTime": None}, "latency inf is not a duration"),
        ({"promptVersion": "three", "promptName": "qa"}, "promptVersion 'three'"),
        ({"model": "gpt\udfff"}, "model holds invalid Unicode"),
        ({"usageDetails": {"input": "1e300"}}, "usageDetails.input = 1e300"),
    ],
)
def test_implausible_values_are_rejected_by_the_mapper(fields, expected):
    from llmtrace.importers.langfuse import observations_to_calls

    calls, rejected = observations_to_calls([good(1), poisoned(**fields), good(2)])
    assert sorted(calls["span_id"]) == ["obs-01", "obs-02"]
    assert rejected.height == 1 and rejected["id"][0] == "obs-bad"
    assert expected in rejected["reason"][0]


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_observation_is_skipped_by_id_and_field_and_never_blocks_a_rerun(tmp_path, case):
    fields, field_name = BAD[case]
    stub = LangfuseStub(observations=[good(1), good(2), poisoned(**fields), good(3), good(4)])
    store = Store(tmp_path / "s")
    with stub.running() as url:
        stats = run(url, stub, store)
        assert stats.rejected == 1
        assert len(stats.problems) == 1
        assert "obs-bad" in stats.problems[0] and field_name in stats.problems[0]
        assert "\n" not in stats.problems[0]
        stored = store.scan().collect()
        assert sorted(stored["span_id"]) == ["obs-01", "obs-02", "obs-03", "obs-04"]
        assert stored["reported_cost"].is_nan().sum() == 0
        # the checkpoint moved past the bad page: a rerun reads on, never stops there
        again = run(url, stub, store, since=None, until=None)
        assert again.added == 0
        assert "run" not in next(iter(store.read_state(checkpoint_name(url)).values()))


def test_the_command_names_the_bad_observation_and_exits_1(tmp_path, monkeypatch):
    stub = LangfuseStub(observations=[good(1), poisoned(model={"x": 1}, id="obs-\n-forged")])
    monkeypatch.setenv("LANGFUSE_PUBLIC_KEY", stub.public_key)
    monkeypatch.setenv("LANGFUSE_SECRET_KEY", stub.secret_key)
    with stub.running() as url:
        outcome = CliRunner().invoke(
            cli,
            [
                "import",
                "langfuse",
                "--host",
                url,
                "--since",
                "2026-09-01",
                "--until",
                "2026-09-02",
                "--store",
                str(tmp_path / "s"),
            ],
        )
    assert outcome.exit_code == 1, outcome.output
    assert "Traceback" not in outcome.output
    lines = [x for x in outcome.stderr.splitlines() if "skipped" in x and "obs-" in x]
    assert len(lines) == 1 and "obs-\\n-forged" in lines[0] and "model" in lines[0]


@pytest.mark.parametrize(
    "raw",
    [b'{"data": [{"id": "obs-01", "traceId"', b"<html><body>502 Bad Gateway</body></html>"],
    ids=["truncated-json", "html-with-200"],
)
def test_malformed_pages_are_retried_like_5xx(tmp_path, raw):
    stub = LangfuseStub(observations=[good(1), good(2)])
    stub.fail(V2_OBS, status=200, raw=raw, headers={"Content-Type": "text/html"}, first=2)
    store = Store(tmp_path / "s")
    with stub.running() as url:
        stats = run(url, stub, store)
    assert stats.retries >= 1
    assert sorted(store.scan().collect()["span_id"]) == ["obs-01", "obs-02"]


def test_a_page_that_stays_malformed_is_reported_not_a_traceback(tmp_path):
    stub = LangfuseStub(observations=[good(1)])
    stub.fail(V2_OBS, status=200, raw=b"<html>maintenance</html>", first=2, times=50)
    with stub.running() as url, pytest.raises(LangfuseImportError) as error:
        run(url, stub, Store(tmp_path / "s"))
    assert "failed 3 times" in str(error.value) and "malformed answer" in str(error.value)


def test_bad_scores_are_skipped_by_id(tmp_path):
    stub = LangfuseStub(
        observations=[good(1), good(2)],
        scores=[
            score("sc-ok", "accuracy", 0.5, trace_id="trace-1", timestamp=T0),
            score(
                "sc-nan", "accuracy", "NaN", trace_id="trace-2", timestamp=T0, data_type="NUMERIC"
            ),
        ],
    )
    store = Store(tmp_path / "s")
    with stub.running() as url:
        stats = run(url, stub, store)
    assert stats.scores_rejected == 1
    assert any("sc-nan" in p for p in stats.problems)
    stored = store.scan().collect().sort("span_id")
    assert stored["accuracy"].to_list() == [0.5, None]


def test_credentials_in_the_host_url_are_redacted_and_never_in_a_file_name(tmp_path):
    stub = LangfuseStub(observations=[good(1)])
    with stub.running() as url:
        secret_url = url.replace("http://", f"http://{stub.public_key}:{stub.secret_key}@")
        outcome = CliRunner().invoke(
            cli,
            [
                "import",
                "langfuse",
                "--host",
                secret_url,
                "--since",
                "2026-09-01",
                "--until",
                "2026-09-02",
                "--store",
                str(tmp_path / "s"),
            ],
        )
    assert outcome.exit_code == 0, outcome.output
    assert stub.secret_key not in outcome.output
    assert stub.public_key not in outcome.output
    names = [p.name for p in (tmp_path / "s").rglob("*")]
    assert not any(stub.secret_key in n or stub.public_key in n for n in names), names
    assert Store(tmp_path / "s").scan().collect().height == 1
    assert checkpoint_name("http://pk:sk@host:3000") == "langfuse-host_3000"
