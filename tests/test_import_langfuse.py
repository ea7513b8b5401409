"""``llmtrace import langfuse`` against a loopback Langfuse (tests/langfuse_server.py).

The real ``langfuse`` SDK talks HTTP to a real server in a thread; the real store, pricing
(genai-prices) and fingerprinting run. Faults (429, 500, dropped connections, Ctrl-C) are
produced by the server or by raising from the progress hooks, never by replacing our code.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from click.testing import CliRunner
from langfuse_server import LangfuseStub, iso, iter_pages, observation, prompt, score
from polars.testing import assert_frame_equal

from llmtrace.accuracy import AccuracyConfig
from llmtrace.config import Config, ConfigError
from llmtrace.costs import summarize
from llmtrace.importers.langfuse import (
    ImportReporter,
    ImportStats,
    LangfuseImportError,
    LangfuseSettings,
    RetryPolicy,
    checkpoint_name,
    import_langfuse,
    observations_to_calls,
    prompt_template_fingerprint,
    retry_wait,
    scores_frame,
)
from llmtrace.pricing import PriceBook, price_calls
from llmtrace.record import CALL_SCHEMA, TOKEN_FIELDS
from llmtrace.store import Store

T0 = datetime(2026, 9, 1, 10, tzinfo=UTC)
SINCE, UNTIL = T0 - timedelta(hours=1), T0 + timedelta(days=1)
BOOK = PriceBook()
FAST = RetryPolicy(attempts=3, backoff=0.01, max_backoff=0.05)
V2_OBS = "/api/public/v2/observations"
# A copy of Langfuse's public API spec (shared/research/langfuse-openapi.yml, MIT-licensed data).
SPEC = Path(__file__).parent / "fixtures" / "langfuse" / "openapi.yml"
LANGFUSE_ENV = (
    "LANGFUSE_PUBLIC_KEY",
    "LANGFUSE_SECRET_KEY",
    "LANGFUSE_BASE_URL",
    "LANGFUSE_HOST",
    "LANGFUSE_TIMEOUT",
)

USAGE = {"input": 100, "input_cached_tokens": 1000, "output": 50, "output_reasoning_tokens": 200}
MESSAGES = [
    {"role": "system", "content": "You answer questions about invoices."},
    {"role": "user", "content": "What is due?"},
]


def _generations(n: int = 23) -> list[dict[str, Any]]:
    """n generations over n // 2 traces, a few shapes of usage, plus embeddings and spans."""
    rows = []
    for i in range(n):
        rows.append(
            observation(
                f"obs-{i:02d}",
                f"trace-{i // 2:02d}",
                T0 + timedelta(minutes=i),
                usage={**USAGE, "total": 1350},
                cost={"input": 0.001, "total": 0.004},
                prompt_name="qa" if i % 3 else None,
                prompt_version=3 if i % 3 else None,
                session_id=f"sess-{i // 2 % 4}",  # trace attributes: same per trace
                user_id=f"user-{i // 2 % 5}",
                input=MESSAGES,
                output=[{"role": "assistant", "content": "42 EUR"}],
            )
        )
    rows.append(
        observation(
            "emb-1",
            "trace-emb",
            T0,
            type="EMBEDDING",
            model="text-embedding-3-small",
            usage={"input": 400},
        )
    )
    rows.append(
        observation("emb-2", "trace-emb", T0, type="EMBEDDING", model="text-embedding-3-small")
    )
    rows.append(observation("span-1", "trace-00", T0, type="SPAN", model=None))
    return rows


@pytest.fixture
def stub() -> LangfuseStub:
    return LangfuseStub(observations=_generations())


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """No user config, price file or Langfuse keys leak in from the environment."""
    monkeypatch.chdir(tmp_path)
    for name in ("LLMTRACE_CONFIG", "LLMTRACE_PRICES", *LANGFUSE_ENV):
        monkeypatch.delenv(name, raising=False)


def _settings(url: str, stub: LangfuseStub, secret: str | None = None) -> LangfuseSettings:
    return LangfuseSettings(url, stub.public_key, secret or stub.secret_key, timeout=10)


def _run(url: str, stub: LangfuseStub, store: Store, **options: Any) -> ImportStats:
    options = {
        "since": SINCE,
        "until": UNTIL,
        "book": BOOK,
        "page_size": 5,
        "retry": FAST,
        **options,
    }
    return import_langfuse(store, _settings(url, stub), **options)


def _entry(store: Store, url: str) -> dict[str, Any]:
    state = store.read_state(checkpoint_name(url))
    assert len(state) == 1
    return next(iter(state.values()))


def _stored(store: Store) -> pl.DataFrame:
    return store.scan().collect().sort("span_id")


EXPECTED = 25  # 23 generations + 2 embeddings; the span is not a call


# -- mapping ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("usage", "expected"),
    [
        (  # OpenAI keys as Langfuse stores them: cached and reasoning outside input/output
            {
                "input": 100,
                "input_cached_tokens": 1000,
                "output": 50,
                "output_reasoning_tokens": 200,
            },
            (1100, 1000, None, None, 250, 200),
        ),
        (  # Anthropic keys (manual ingestion)
            {
                "input": 100,
                "cache_read_input_tokens": 1000,
                "cache_creation_input_tokens": 300,
                "output": 50,
            },
            (1400, 1000, 300, None, 50, None),
        ),
        (  # LangChain callback keys
            {
                "input": 100,
                "input_cache_read": 10,
                "input_cache_creation": 20,
                "output": 5,
                "output_reasoning": 7,
            },
            (130, 10, 20, None, 12, 7),
        ),
        (  # Vercel AI SDK / OTel: cache writes split by lifetime, bare reasoning_tokens
            {
                "input": 100,
                "input_cache_creation_5m": 20,
                "input_cache_creation_1h": 30,
                "output": 5,
                "reasoning_tokens": 3,
            },
            (150, None, 50, 30, 8, 3),
        ),
        (  # Gemini raw keys: the prompt count already includes cached content
            {
                "promptTokenCount": 1000,
                "cachedContentTokenCount": 400,
                "candidatesTokenCount": 50,
                "thoughtsTokenCount": 30,
            },
            (1000, 400, None, None, 80, 30),
        ),
        ({"input": 400}, (400, None, None, None, None, None)),  # an embedding
        ({}, (None, None, None, None, None, None)),  # no usage at all
    ],
)
def test_exclusive_usage_buckets_become_inclusive_tokens(usage, expected):
    row = observation("o", "t", T0, usage=usage)
    calls, rejected = observations_to_calls([row])
    assert rejected.is_empty()
    got = calls.select(TOKEN_FIELDS).row(0)
    assert got == expected


def test_observation_fields_map_to_the_call_record():
    hexed = observation(
        "a1b2c3d4e5f60718",
        "0af7651916cd43dd8448eb211c80319c",
        T0,
        usage={"input": 10, "output": 2, "total": 99},
        cost={"input": 0.25, "output": 0.5},
        prompt_name="qa",
        prompt_version=7,
        session_id="sess",
        user_id="",
        environment="production",
        level="ERROR",
        input={"messages": MESSAGES, "tools": [{"name": "lookup", "parameters": {}}]},
        model_parameters={"reasoning_effort": "high", "temperature": 0.2},
        parent_id="00f067aa0ba902b7",
    )
    calls, _ = observations_to_calls([hexed])
    row = calls.row(0, named=True)
    assert (row["trace_id"], row["span_id"]) == (
        "0af7651916cd43dd8448eb211c80319c",
        "a1b2c3d4e5f60718",
    )
    assert row["parent_span_id"] == "00f067aa0ba902b7"
    assert (row["prompt_name"], row["prompt_version"], row["prompt"]) == ("qa", "7", "qa@7")
    assert row["action"] == "answer-question"
    assert (row["conversation_id"], row["user_id"]) == ("sess", None)  # "" is unset
    assert (row["environment"], row["operation"], row["reasoning_effort"]) == (
        "production",
        "chat",
        "high",
    )
    assert row["is_error"] is True
    assert row["start_time"] == T0
    assert row["duration_ms"] == pytest.approx(1500.0)
    # no "total" in costDetails: the sum of its keys
    assert (row["reported_cost"], row["reported_cost_source"]) == (0.75, "langfuse.costDetails")
    assert row["_usage_mismatch"] is True  # total 99 != 10 + 2
    assert row["template_fingerprint"] is not None and len(row["prefix_hashes"]) == 2
    assert row["input_content"] is None and row["output_content"] is None
    kept, _ = observations_to_calls([hexed], keep_content=True)
    assert "invoices" in kept["input_content"][0]


def test_prompt_falls_back_to_the_template_fingerprint():
    calls, _ = observations_to_calls([observation("o", "t", T0, input=MESSAGES)])
    assert calls["prompt"][0] == f"fp:{calls['template_fingerprint'][0]}"


def test_bad_rows_are_rejected_by_id_and_the_rest_is_kept():
    good = observation("good", "t", T0, usage={"input": 1})
    no_trace = {**observation("orphan", "t", T0), "traceId": None}
    bad_time = {**observation("late", "t", T0), "startTime": "yesterday"}
    calls, rejected = observations_to_calls([good, no_trace, bad_time])
    assert calls["span_id"].to_list() == ["good"]
    assert rejected.rows() == [
        (1, "orphan", "traceId missing"),
        (2, "late", "startTime yesterday is not a time"),
    ]


# -- a whole import -----------------------------------------------------------------------------


def test_import_pages_maps_prices_and_checkpoints(stub, tmp_path):
    store = Store(tmp_path / "store")
    with stub.running() as url:
        stats = _run(url, stub, store)
    calls = _stored(store)
    assert calls.schema == CALL_SCHEMA
    assert calls.height == stats.calls == stats.added == EXPECTED
    assert stats.pages == 6  # 23 generations in pages of 5, then one page of embeddings
    assert set(calls["source"]) == {"langfuse"}
    # every v2 request asked for the fields a call record needs, in pages of 5
    pages = [p for p in stub.calls_to(V2_OBS) if p.get("fields", [""])[0] != "core"]
    assert {p["limit"][0] for p in pages} == {"5"}
    assert all("trace_context" in p["fields"][0] and "usage" in p["fields"][0] for p in pages)
    assert sum("cursor" in p for p in pages) == 4
    gen = calls.filter(pl.col("span_id") == "obs-01").row(0, named=True)
    assert (gen["input_tokens"], gen["cache_read_tokens"], gen["output_tokens"]) == (
        1100,
        1000,
        250,
    )
    assert (gen["provider"], gen["price_status"], gen["reported_cost"]) == ("openai", "ok", 0.004)
    expected = BOOK.price_one(
        "openai",
        "gpt-4o-mini",
        gen["start_time"],
        input_tokens=1100,
        cache_read_tokens=1000,
        output_tokens=250,
        reasoning_tokens=200,
    )
    assert gen["total_cost"] == pytest.approx(expected["total_cost"])
    assert gen["prompt"] == "qa@3"
    unpriced = calls.filter(pl.col("span_id") == "emb-2").row(0, named=True)
    assert (unpriced["price_status"], unpriced["total_cost"]) == ("no_usage", None)
    entry = _entry(store, url)
    assert "run" not in entry and entry["watermark"] == "2026-09-02T10:00:00Z"


def test_responses_are_valid_under_langfuses_openapi_spec(stub, tmp_path):
    yaml = pytest.importorskip("yaml")
    validators = pytest.importorskip("openapi_schema_validator")
    if not SPEC.exists():
        pytest.skip("Langfuse's OpenAPI spec is not on this machine")
    spec = yaml.safe_load(SPEC.read_text())
    v2 = spec["components"]["schemas"]["ObservationV2"]["properties"]
    v2["model"] = v2.pop("providedModelName")  # what the server really sends (research notes)
    stub.prompts = _prompts()
    stub.scores = [
        score("s1", "accuracy", 0.5, trace_id="trace-00", observation_id="obs-00", timestamp=T0),
        score("s2", "correct", True, trace_id="trace-01", timestamp=T0),
        score("s3", "correctness", "incorrect", trace_id="trace-02", timestamp=T0),
    ]
    with stub.running() as url:
        _run(url, stub, Store(tmp_path / "a"))
        stub.v2 = False
        _run(url, stub, Store(tmp_path / "b"))

    def check(schema: str, path: str) -> None:
        bodies = list(iter_pages(stub, path))
        assert bodies, path
        validator = validators.OAS30Validator(
            {"$ref": f"#/components/schemas/{schema}", "components": spec["components"]},
            format_checker=validators.OAS30Validator.FORMAT_CHECKER,
        )
        for body in bodies:
            validator.validate(body)

    check("ObservationsV2Response", V2_OBS)
    check("GetScoresV3Response", "/api/public/v3/scores")
    check("legacyObservationsViews", "/api/public/observations")
    check("Traces", "/api/public/traces")
    check("GetScoresResponse", "/api/public/v2/scores")
    check("PromptMetaListResponse", "/api/public/v2/prompts")
    check("Prompt", "/api/public/v2/prompts/qa")


# -- scores -------------------------------------------------------------------------------------


def _scored_stub() -> LangfuseStub:
    later = T0 + timedelta(hours=2)
    scores = [
        score("n1", "accuracy", 0.8, trace_id="trace-00", observation_id="obs-00", timestamp=later),
        score("n2", "Accuracy", 0.4, trace_id="trace-00", observation_id="obs-00", timestamp=later),
        score("b1", "correct", True, trace_id="trace-01", timestamp=later),  # trace level
        score(
            "b2", "correct", False, trace_id="trace-02", observation_id="obs-04", timestamp=later
        ),
        score("c1", "verdict", "partially_correct", trace_id="trace-03", timestamp=later),
        score(
            "c2",
            "verdict",
            "off-topic",
            trace_id="trace-04",
            observation_id="obs-08",
            timestamp=later,
        ),
        score("x1", "toxicity", 0.9, trace_id="trace-00", timestamp=later),  # not accuracy
        score("x2", "accuracy", 7.0, trace_id="trace-05", observation_id="obs-10", timestamp=later),
        score("t1", "accuracy", "great", trace_id="trace-06", timestamp=later, data_type="TEXT"),
    ]
    return LangfuseStub(observations=_generations(), scores=scores)


def _accuracy_config(tmp_path: Path) -> AccuracyConfig:
    path = tmp_path / "llmtrace.toml"
    path.write_text(
        '[accuracy]\nnames = ["accuracy", "correct", "verdict"]\n'
        "[accuracy.categories]\ncorrect = 1.0\npartially_correct = 0.5\nincorrect = 0\n"
    )
    return AccuracyConfig.from_config(
        Config(data=__import__("tomllib").loads(path.read_text()), path=path)
    )


@pytest.mark.parametrize(
    ("v2", "v3_scores"),
    [(True, True), (False, False), (True, False)],
    ids=["v3-scores", "old-server", "no-v3-scores"],
)
def test_scores_of_each_type_attach_to_observations_and_traces(tmp_path, v2, v3_scores):
    stub = _scored_stub()
    stub.v2 = v2
    if not v3_scores:  # v2 observations but no v3 scores: the page-based scores are read
        stub.fail("/api/public/v3/scores", status=404, times=100)
    store = Store(tmp_path / "store")
    with stub.running() as url:
        stats = _run(url, stub, store, accuracy=_accuracy_config(tmp_path))
    calls = _stored(store).select("span_id", "accuracy", "scores")
    acc = dict(zip(calls["span_id"], calls["accuracy"], strict=True))
    assert acc["obs-00"] == pytest.approx(0.6)  # mean of 0.8 and 0.4 (names case-insensitive)
    assert acc["obs-02"] == acc["obs-03"] == 1.0  # boolean true on trace-01 reaches both calls
    assert acc["obs-04"] == 0.0 and acc["obs-05"] is None  # false on obs-04 only
    assert acc["obs-06"] == acc["obs-07"] == 0.5  # categorical via [accuracy.categories]
    assert acc["obs-08"] is None  # unknown category: kept as a score, not accuracy
    assert acc["obs-10"] is None  # numeric outside 0..1 is not accuracy
    obs00 = calls.filter(pl.col("span_id") == "obs-00")["scores"][0]
    assert sorted(s["name"] for s in obs00) == ["Accuracy", "accuracy", "toxicity"]
    label = calls.filter(pl.col("span_id") == "obs-08")["scores"][0][0]
    assert (label["label"], label["value"], label["source"]) == ("off-topic", None, "langfuse.eval")
    assert stats.scores == 8  # the TEXT score is not read
    assert stats.calls_with_accuracy == 6
    assert (stats.scores_new_calls, stats.scores_stored_calls, stats.scores_unmatched) == (8, 0, 0)
    assert bool(stub.calls_to("/api/public/v2/scores")) is not v3_scores


def test_accuracy_config_errors_name_the_file(tmp_path):
    path = tmp_path / "llmtrace.toml"
    with pytest.raises(ConfigError, match="llmtrace.toml.*categories.*great"):
        AccuracyConfig.from_config(Config({"accuracy": {"categories": {"great": 2}}}, path))
    with pytest.raises(ConfigError, match="names must be a list"):
        AccuracyConfig.from_config(Config({"accuracy": {"names": "accuracy"}}, path))


@pytest.mark.parametrize("v2", [True, False], ids=["v2", "old-server"])
def test_a_trace_score_added_after_the_import_reaches_the_stored_calls(tmp_path, v2):
    stub = LangfuseStub(
        v2=v2,
        observations=_generations(),
        scores=[
            score("early", "accuracy", 0.9, trace_id="trace-00", observation_id="obs-00",
                  timestamp=T0 + timedelta(hours=1)),
            score("nowhere", "accuracy", 1.0, trace_id="trace-zz",
                  timestamp=T0 + timedelta(hours=1)),
        ],
    )  # fmt: skip
    store = Store(tmp_path / "store")
    with stub.running() as url:
        first = _run(url, stub, store)
        assert (first.scores_new_calls, first.scores_stored_calls, first.scores_unmatched) == (
            1,
            0,
            1,
        )
        judged = UNTIL + timedelta(hours=2)  # an evaluation run the next day
        stub.scores += [
            score("judge-1", "correct", True, trace_id="trace-01", timestamp=judged),
            score("judge-2", "accuracy", 0.0, trace_id="trace-02", observation_id="obs-04",
                  timestamp=judged),
        ]  # fmt: skip
        second = _run(url, stub, store, since=None)  # the next run, from the checkpoint
        files = sorted(store.files())
        third = _run(url, stub, store, since=None)
    assert second.added == 0
    assert (second.scores_stored_calls, second.calls_rescored, second.scores_unmatched) == (2, 3, 0)
    acc = dict(_stored(store).select("span_id", "accuracy").rows())
    assert acc["obs-02"] == acc["obs-03"] == 1.0  # the trace score reached both of its calls
    assert acc["obs-04"] == 0.0 and acc["obs-05"] is None
    assert acc["obs-00"] == 0.9  # scored by the first import, untouched since
    assert (third.scores_stored_calls, third.scores_present, third.calls_rescored) == (0, 2, 0)
    assert sorted(store.files()) == files  # the rerun rewrote nothing
    assert _stored(store).height == EXPECTED


def _scores_of(store: Store, span_id: str) -> tuple[list[dict[str, Any]], float | None]:
    row = _stored(store).filter(pl.col("span_id") == span_id).row(0, named=True)
    return row["scores"], row["accuracy"]


@pytest.mark.parametrize("v2", [True, False], ids=["v2", "old-server"])
def test_a_score_edited_at_langfuse_replaces_the_stored_version_on_a_rerun(tmp_path, v2):
    """An annotator corrects two verdicts after the import. The normal incremental run does not
    see the edits (the score timestamps are older than its look-back and the API filters scores
    by timestamp only); a rerun over their window does, and replaces the stored versions."""
    judged = T0 + timedelta(hours=1)
    stub = LangfuseStub(
        v2=v2,
        observations=_generations(),
        scores=[
            score("e1", "accuracy", 0.9, trace_id="trace-00", observation_id="obs-00",
                  timestamp=judged),
            score("t1", "correct", True, trace_id="trace-01", timestamp=judged),
        ],
    )  # fmt: skip
    accuracy = _accuracy_config(tmp_path)
    store = Store(tmp_path / "store")
    with stub.running() as url:
        first = _run(url, stub, store, accuracy=accuracy)
        assert (first.scores_new_calls, first.scores_replaced) == (2, 0)
        edited = UNTIL + timedelta(days=3)
        stub.edit_score("e1", 0.2, at=edited)
        stub.edit_score("t1", False, at=edited)
        incremental = _run(url, stub, store, accuracy=accuracy, since=None)
        assert (incremental.scores, incremental.scores_replaced) == (0, 0)
        assert _scores_of(store, "obs-00")[1] == 0.9  # not re-read: still the old verdict
        rerun = _run(url, stub, store, accuracy=accuracy)  # the same --since again
        files = sorted(store.files())
        again = _run(url, stub, store, accuracy=accuracy)
    assert (rerun.added, rerun.scores_replaced, rerun.scores_stored_calls) == (0, 2, 0)
    assert (rerun.calls_rescored, rerun.scores_present) == (3, 0)
    held, acc = _scores_of(store, "obs-00")
    assert [(s["id"], s["name"], s["value"]) for s in held] == [("e1", "accuracy", 0.2)]
    assert acc == pytest.approx(0.2)
    for span in ("obs-02", "obs-03"):  # the trace score reached both calls, edited on both
        held, acc = _scores_of(store, span)
        assert [(s["id"], s["value"], s["label"]) for s in held] == [("t1", 0.0, "false")]
        assert acc == 0.0
    assert (again.scores_replaced, again.scores_present, again.calls_rescored) == (0, 2, 0)
    assert sorted(store.files()) == files  # the rerun after the edit rewrote nothing
    assert _stored(store).height == EXPECTED


def test_scores_since_picks_up_an_edit_of_an_older_score_in_an_incremental_run(tmp_path):
    """``--scores-since`` re-reads scores further back than the observations' window, so the
    nightly incremental run sees an annotator's correction of an older score."""
    stub = LangfuseStub(
        observations=_generations(),
        scores=[score("e1", "accuracy", 0.9, trace_id="trace-00", observation_id="obs-00",
                      timestamp=T0 + timedelta(hours=1))],
    )  # fmt: skip
    store = Store(tmp_path / "store")
    with stub.running() as url:
        _run(url, stub, store)
        stub.edit_score("e1", 0.2, at=UNTIL + timedelta(days=3))
        nxt = _run(url, stub, store, since=None, scores_since=T0 - timedelta(days=1))
    assert (nxt.scores, nxt.scores_replaced, nxt.calls_rescored, nxt.added) == (1, 1, 1, 0)
    held, acc = _scores_of(store, "obs-00")
    assert [(s["id"], s["value"]) for s in held] == [("e1", 0.2)] and acc == pytest.approx(0.2)


def test_an_edit_within_the_look_back_reaches_the_next_incremental_run(tmp_path):
    """A score timestamped within the incremental look-back (an hour before the window, which
    starts 15 minutes before the watermark) is read again, so its edit replaces the old one."""
    recent = UNTIL - timedelta(minutes=30)
    stub = LangfuseStub(
        observations=_generations(),
        scores=[score("r1", "accuracy", 1.0, trace_id="trace-11", observation_id="obs-22",
                      timestamp=recent)],
    )  # fmt: skip
    store = Store(tmp_path / "store")
    with stub.running() as url:
        _run(url, stub, store)
        assert _scores_of(store, "obs-22")[1] == 1.0
        stub.edit_score("r1", 0.0, at=UNTIL + timedelta(minutes=5))
        nxt = _run(url, stub, store, since=None)
    assert (nxt.scores, nxt.scores_replaced, nxt.calls_rescored) == (1, 1, 1)
    held, acc = _scores_of(store, "obs-22")
    assert [(s["id"], s["value"]) for s in held] == [("r1", 0.0)] and acc == 0.0


def _command(stub, tmp_path) -> tuple[dict[str, str], list[str]]:
    """The keys and the arguments of one day's ``import langfuse`` into ``tmp_path/store``."""
    env = {"LANGFUSE_PUBLIC_KEY": stub.public_key, "LANGFUSE_SECRET_KEY": stub.secret_key}
    args = ["import", "langfuse", "--since", "2026-09-01", "--until", "2026-09-02"]
    return env, [*args, "--store", str(tmp_path / "store")]


def test_the_command_says_how_many_scores_were_updated(stub, tmp_path):
    from llmtrace.cli import cli

    stub.scores = [score("n1", "accuracy", 1, trace_id="trace-00", timestamp=T0)]
    env, args = _command(stub, tmp_path)
    with stub.running() as url:
        first = CliRunner().invoke(cli, [*args, "--host", url], env=env)
        assert first.exit_code == 0, first.output
        assert "updated," not in first.output
        stub.edit_score("n1", 0, at=T0 + timedelta(days=1))
        second = CliRunner().invoke(cli, [*args, "--host", url], env=env)
    assert second.exit_code == 0, second.output
    assert "0 matched no call, 1 updated (1 read)" in second.output
    acc = _stored(Store(tmp_path / "store")).filter(pl.col("trace_id") == "trace-00")["accuracy"]
    assert acc.to_list() == [0.0, 0.0]


def test_the_command_rereads_older_scores_with_scores_since(stub, tmp_path):
    from llmtrace.cli import cli

    stub.scores = [score("n1", "accuracy", 1, trace_id="trace-00", timestamp=T0)]
    env, args = _command(stub, tmp_path)
    later = ["--since", "2026-09-02", "--until", "2026-09-03", "--store", str(tmp_path / "store")]
    with stub.running() as url:
        assert CliRunner().invoke(cli, [*args, "--host", url], env=env).exit_code == 0
        stub.edit_score("n1", 0, at=T0 + timedelta(days=1))
        plain = CliRunner().invoke(cli, ["import", "langfuse", *later, "--host", url], env=env)
        assert "updated" not in plain.output  # the next day's window does not see the edit
        rescored = CliRunner().invoke(
            cli,
            ["import", "langfuse", *later, "--scores-since", "2026-08-31", "--host", url],
            env=env,
        )
    assert rescored.exit_code == 0, rescored.output
    assert "1 updated" in rescored.output


def test_new_calls_get_one_score_per_langfuse_id():
    """Page-based reads can repeat a score; a call written with its scores holds it once, with
    its id (a row without id gets none in the struct, and stays a copy)."""
    common = pl.DataFrame(
        {
            "score_id": ["a", "a", None],
            "trace_id": ["t"] * 3,
            "observation_id": [None] * 3,
            "name": ["accuracy"] * 3,
            "data_type": ["NUMERIC"] * 3,
            "value_text": ["1", "0", "0.5"],
            "source": ["ANNOTATION"] * 3,
        }
    )
    frame = scores_frame(common, AccuracyConfig())
    assert frame["score_id"].to_list() == ["a", "#2"]
    assert [(s["id"], s["value"]) for s in frame["score"]] == [("a", 1.0), (None, 0.5)]


# -- prompts ------------------------------------------------------------------------------------

QA_V2 = [
    {"role": "system", "content": "You answer questions about {{topic}}."},
    {"name": "history", "type": "placeholder"},
    {"role": "user", "content": "{{question}}"},
]
QA_V3 = [  # the system message the observations' input starts with
    {"role": "system", "content": "You answer questions about invoices."},
    {"role": "user", "content": "{{question}}"},
]


def _prompts() -> list[dict[str, Any]]:
    return [
        prompt("qa", 1, "Old instructions.", created=T0 - timedelta(days=30)),
        prompt("qa", 2, QA_V2, created=T0 - timedelta(days=20)),
        prompt(
            "qa",
            3,
            QA_V3,
            created=T0 - timedelta(days=10),
            labels=("production", "latest"),
            tags=("billing",),
            commit_message="invoices only",
        ),
        prompt("support/triage", 1, "Sort the ticket.", created=T0, labels=("latest",)),
    ]


def _prompted_stub() -> LangfuseStub:
    """The usual generations (qa@3, with input) plus calls whose input was not captured."""
    rows = _generations()
    for i, (name, version) in enumerate([("qa", 2), ("support/triage", 1), ("gone", 1)]):
        rows.append(
            observation(
                f"noio-{i}",
                f"trace-noio-{i}",
                T0 + timedelta(minutes=30 + i),
                prompt_name=name,
                prompt_version=version,
            )
        )
    return LangfuseStub(observations=rows, prompts=_prompts())


def test_prompt_template_fingerprints_are_the_ones_calls_get():
    from_input, _ = observations_to_calls([observation("o", "t", T0, input=MESSAGES)])
    assert prompt_template_fingerprint("chat", QA_V3) == from_input["template_fingerprint"][0]
    as_system = [{"role": "system", "content": "Sort the ticket."}]
    text, _ = observations_to_calls([observation("o", "t", T0, input=as_system)])
    assert (
        prompt_template_fingerprint("text", "Sort the ticket.") == text["template_fingerprint"][0]
    )
    tools = [{"name": "lookup", "description": "find", "parameters": {}}]
    with_tools, _ = observations_to_calls(
        [observation("o", "t", T0, input={"messages": MESSAGES, "tools": tools})]
    )
    assert (
        prompt_template_fingerprint("chat", QA_V3, {"tools": tools, "temperature": 0})
        == with_tools["template_fingerprint"][0]
    )
    assert prompt_template_fingerprint("chat", QA_V2) != prompt_template_fingerprint("chat", QA_V3)
    # a placeholder first: the system part is unknown, as for a call starting with history
    assert prompt_template_fingerprint("chat", [QA_V2[1], QA_V2[0]]) is None


def test_prompts_give_fingerprints_and_ordered_version_metadata(tmp_path):
    stub = _prompted_stub()
    notices: list[str] = []

    class Notes(ImportReporter):
        def notice(self, message: str) -> None:
            notices.append(message)

    store = Store(tmp_path / "store")
    with stub.running() as url:
        stats = _run(url, stub, store, reporter=Notes())
        assert stats.prompt_versions == 3  # qa 2 and 3, support/triage 1: each read once
        assert len(stub.calls_to("/api/public/v2/prompts/qa")) == 2
        assert len(stub.calls_to("/api/public/v2/prompts/support%2Ftriage")) == 1
        again = _run(url, stub, store)
        assert again.prompt_versions == 0  # cached in the checkpoint and unchanged
        assert len(stub.calls_to("/api/public/v2/prompts/qa")) == 2
        # production moves from version 3 to 2: the versions already recorded are re-read
        for row in stub.prompts:
            if row["name"] == "qa" and row["version"] in (2, 3):
                row["labels"] = ["production"] if row["version"] == 2 else ["latest"]
                row["updatedAt"] = iso(T0)
        moved = _run(url, stub, store)
    calls = _stored(store)
    fingerprints = dict(calls.select("span_id", "template_fingerprint").rows())
    assert fingerprints["obs-01"] == prompt_template_fingerprint("chat", QA_V3)  # own input
    assert fingerprints["noio-0"] == prompt_template_fingerprint("chat", QA_V2)  # from qa@2
    assert fingerprints["noio-1"] == prompt_template_fingerprint("text", "Sort the ticket.")
    assert fingerprints["noio-2"] is None  # prompt "gone" is not on the server
    assert calls.filter(pl.col("span_id") == "noio-0")["prompt"][0] == "qa@2"
    assert sum("'gone'" in n for n in notices) == 1
    state_file = next(store.state_dir.glob("langfuse-*.json"))
    qa = _entry(store, url)["prompts"]["qa"]
    assert (qa["type"], qa["versions"], qa["tags"]) == ("chat", [1, 2, 3], ["billing"])
    assert set(qa["by_version"]) == {"2", "3"}  # only versions calls use
    assert qa["by_version"]["3"]["created_at"] == iso(T0 - timedelta(days=10))
    assert qa["by_version"]["2"]["created_at"] < qa["by_version"]["3"]["created_at"]
    assert qa["by_version"]["3"]["commit_message"] == "invoices only"
    assert moved.prompt_versions == 2
    assert qa["by_version"]["2"]["labels"] == ["production"]
    assert qa["by_version"]["3"]["labels"] == ["latest"]
    assert "invoices" not in state_file.read_text().replace("invoices only", "")  # no content


def test_a_server_without_prompts_imports_and_says_so_once(tmp_path):
    stub = _prompted_stub()
    stub.prompts_available = False
    notices: list[str] = []

    class Notes(ImportReporter):
        def notice(self, message: str) -> None:
            notices.append(message)

    store = Store(tmp_path / "store")
    with stub.running() as url:
        stats = _run(url, stub, store, reporter=Notes())
    assert stats.added == EXPECTED + 3 and stats.prompt_versions == 0
    assert sum("prompts are not available" in n for n in notices) == 1
    assert len(stub.calls_to("/api/public/v2/prompts")) == 1  # not asked again page after page
    fingerprints = dict(_stored(store).select("span_id", "template_fingerprint").rows())
    assert fingerprints["noio-0"] is None
    assert fingerprints["obs-01"] == prompt_template_fingerprint("chat", QA_V3)  # its own input


# -- rate limits, server errors, wrong keys ------------------------------------------------------


def test_429_waits_for_retry_after(stub, tmp_path):
    stub.fail(V2_OBS, status=429, headers={"Retry-After": "1"}, first=3)
    store = Store(tmp_path / "store")
    with stub.running() as url:
        stats = _run(url, stub, store)
    assert (stats.rate_limit_waits, stats.waited_seconds) == (1, 1.0)
    assert _stored(store).height == EXPECTED


def test_429_waits_beyond_the_sdks_60_second_cap(stub, tmp_path):
    stub.fail(V2_OBS, status=429, headers={"Retry-After": "120"}, first=2)
    waits: list[float] = []
    with stub.running() as url:
        stats = _run(url, stub, Store(tmp_path / "store"), sleep=waits.append)
    assert waits == [120.0]
    assert stats.added == EXPECTED


def test_retry_wait_reads_every_form_langfuse_and_proxies_send():
    policy = RetryPolicy()
    assert retry_wait({"Retry-After": "3600"}, None, 0, policy) == 3600.0
    assert retry_wait({"retry-after-ms": "2500"}, None, 0, policy) == 2.5
    date = "Tue, 01 Sep 2026 10:02:00 GMT"
    now = datetime(2026, 9, 1, 10, 0, tzinfo=UTC).timestamp()
    assert retry_wait({"Retry-After": date}, None, 0, policy, now=now) == 120.0
    body = {"message": "Rate limit exceeded", "details": {"retryAfterSeconds": 90}}
    assert retry_wait({}, body, 0, policy) == 90.0
    assert 0.9 <= retry_wait({}, None, 0, policy) <= 1.1  # no hint: backoff
    assert retry_wait({"Retry-After": "999999"}, None, 0, RetryPolicy(max_rate_limit_wait=60)) == 60


def test_server_errors_retry_with_backoff_then_succeed(stub, tmp_path):
    stub.fail(V2_OBS, status=500, first=3, times=2)
    stub.fail("/api/public/v3/scores", status=503, first=1)
    store = Store(tmp_path / "store")
    with stub.running() as url:
        stats = _run(url, stub, store)
    assert stats.retries == 3
    assert _stored(store).height == EXPECTED


def test_persistent_server_errors_fail_clearly_and_a_rerun_completes(stub, tmp_path):
    fault = stub.fail(V2_OBS, status=502, first=4, times=100)
    store = Store(tmp_path / "store")
    with stub.running() as url:
        with pytest.raises(LangfuseImportError, match=r"page 3\).*failed 3 times.*HTTP 502"):
            _run(url, stub, store)
        assert _stored(store).height == 10  # the two pages before the failure
        assert _entry(store, url)["run"]["pages"] == 2
        stub.faults.remove(fault)
        stats = _run(url, stub, store)
    assert (stats.resumed, stats.added, stats.duplicates) == (True, EXPECTED - 10, 0)
    assert _stored(store)["span_id"].n_unique() == EXPECTED


def test_wrong_keys_fail_at_once(stub, tmp_path):
    with stub.running() as url:
        settings = _settings(url, stub, secret="sk-lf-wrong")
        with pytest.raises(LangfuseImportError, match=r"rejected the API keys \(HTTP 401\)"):
            import_langfuse(Store(tmp_path), settings, since=SINCE, book=BOOK, retry=FAST)
    assert len(stub.requests) == 1  # no retries on 401


def test_settings_follow_the_sdks_environment_variables():
    keys = {"LANGFUSE_PUBLIC_KEY": "pk-lf-1", "LANGFUSE_SECRET_KEY": "sk-lf-1"}
    assert LangfuseSettings.from_env(environ=keys).host == "https://cloud.langfuse.com"
    env = {
        **keys,
        "LANGFUSE_HOST": "https://old.example",
        "LANGFUSE_BASE_URL": "https://new.example/",
    }
    assert LangfuseSettings.from_env(environ=env).host == "https://new.example"
    assert LangfuseSettings.from_env("http://h:3000", environ=env).host == "http://h:3000"
    with pytest.raises(LangfuseImportError, match="LANGFUSE_SECRET_KEY not set"):
        LangfuseSettings.from_env(environ={"LANGFUSE_PUBLIC_KEY": "pk"})
    assert checkpoint_name("http://127.0.0.1:3000/") == "langfuse-127.0.0.1_3000"


# -- interruption and resume --------------------------------------------------------------------


class _Stop(ImportReporter):
    """Raises KeyboardInterrupt (Ctrl-C) from a progress hook at a chosen page."""

    def __init__(self, hook: str, page: int) -> None:
        self.hook, self.page = hook, page

    def fetched(self, stats: ImportStats) -> None:
        if self.hook == "fetched" and stats.pages == self.page:
            raise KeyboardInterrupt

    def stored(self, stats: ImportStats) -> None:
        if self.hook == "stored" and stats.pages == self.page:
            raise KeyboardInterrupt


@pytest.mark.parametrize(
    ("hook", "page", "stored_before"),
    [
        ("fetched", 1, 0),  # before the first page is stored
        ("fetched", 3, 10),  # a page read but not stored
        ("stored", 3, 15),  # right after a page and its checkpoint
        ("stored", 5, 23),  # the last generation page: the next pass is embeddings
        ("fetched", 6, 23),  # in the embedding pass
    ],
)
def test_ctrl_c_anywhere_then_rerun_stores_everything_once(
    stub, tmp_path, hook, page, stored_before
):
    store = Store(tmp_path / "store")
    with stub.running() as url:
        with pytest.raises(KeyboardInterrupt):
            _run(url, stub, store, reporter=_Stop(hook, page))
        assert _stored(store).height == stored_before
        saved = _entry(store, url)["run"]
        before = len(stub.requests)
        stats = _run(url, stub, store)
    assert stats.resumed
    assert (stats.added, stats.duplicates) == (EXPECTED - stored_before, 0)
    assert _stored(store)["span_id"].n_unique() == _stored(store).height == EXPECTED
    resumed = [p for path, p in stub.requests[before:] if path == V2_OBS]
    if saved.get("cursor"):  # the rerun went on from the saved cursor, not from the start
        assert resumed[0]["cursor"] == [saved["cursor"]]


def test_crash_between_append_and_checkpoint_stores_the_page_once(stub, tmp_path):
    """The window between a page's append and its checkpoint write: rewinding the checkpoint
    file to the page before is exactly the state such a crash leaves."""
    store = Store(tmp_path / "store")
    state_file = store.state_dir / "x.json"

    class Snapshot(ImportReporter):
        def stored(self, stats: ImportStats) -> None:
            if stats.pages == 2:
                nonlocal state_file
                state_file = next(store.state_dir.glob("langfuse-*.json"))
                self.saved = state_file.read_text()
            if stats.pages == 3:
                raise KeyboardInterrupt

    snapshot = Snapshot()
    with stub.running() as url:
        with pytest.raises(KeyboardInterrupt):
            _run(url, stub, store, reporter=snapshot)
        assert _stored(store).height == 15
        state_file.write_text(snapshot.saved)  # page 3 stored, checkpoint still after page 2
        stats = _run(url, stub, store)
    assert (stats.added, stats.duplicates) == (EXPECTED - 15, 5)
    assert _stored(store)["span_id"].n_unique() == _stored(store).height == EXPECTED


def test_dropped_connections_fail_clearly_and_the_rerun_resumes(stub, tmp_path):
    fault = stub.fail(V2_OBS, drop=True, first=3, times=100)
    store = Store(tmp_path / "store")
    with stub.running() as url:
        with pytest.raises(LangfuseImportError, match="network error"):
            _run(url, stub, store)
        cursor = _entry(store, url)["run"]["cursor"]
        stub.faults.remove(fault)
        before = len(stub.requests)
        stats = _run(url, stub, store)
    assert [p for path, p in stub.requests[before:] if path == V2_OBS][0]["cursor"] == [cursor]
    assert (stats.added, stats.duplicates) == (EXPECTED - 5, 0)


def test_next_run_continues_from_the_watermark(stub, tmp_path):
    store = Store(tmp_path / "store")
    with stub.running() as url:
        _run(url, stub, store, until=T0 + timedelta(minutes=10))
        assert _stored(store).height == 12  # obs-00..obs-09 and both embeddings
        before = len(stub.requests)
        stats = _run(url, stub, store, since=None)
    first = [p for path, p in stub.requests[before:] if path == V2_OBS][0]
    assert first["fromStartTime"] == ["2026-09-01T09:55:00Z"]  # watermark minus the overlap
    # the overlap re-reads the 12 calls of the first run's last 15 minutes; the store skips them
    assert (stats.added, stats.duplicates) == (EXPECTED - 12, 12)
    assert _entry(store, url)["watermark"] == "2026-09-02T10:00:00Z"


# -- older servers ------------------------------------------------------------------------------


def test_old_server_falls_back_to_page_based_endpoints_and_says_so_once(tmp_path):
    notices: list[str] = []

    class Notes(ImportReporter):
        def notice(self, message: str) -> None:
            notices.append(message)

    stub = _scored_stub()
    with stub.running() as url:
        _run(url, stub, Store(tmp_path / "v2"))
        stub.v2 = False
        stats = _run(url, stub, Store(tmp_path / "v1"), reporter=Notes())
    assert stats.api == "v1"
    assert sum("no v2 observations endpoint" in n for n in notices) == 1
    assert stub.calls_to("/api/public/traces") and stub.calls_to("/api/public/observations")
    columns = [
        "trace_id",
        "span_id",
        "action",
        "conversation_id",
        "user_id",
        "prompt",
        "input_tokens",
        "output_tokens",
        "total_cost",
        "reported_cost",
        "accuracy",
        "input_fingerprint",
    ]
    v2 = _stored(Store(tmp_path / "v2")).select(columns)
    v1 = _stored(Store(tmp_path / "v1")).select(columns)
    assert v1.height == EXPECTED
    # costs to within float rounding: price_calls' last bit depends on the batch it prices
    assert_frame_equal(v1, v2, check_exact=False, rel_tol=1e-12, abs_tol=0)


def test_a_page_the_sdk_cannot_parse_is_read_as_json_and_only_bad_rows_skipped(tmp_path):
    rows = _generations(6)
    rows[2]["level"] = "CRITICAL"  # not an ObservationLevel: the SDK rejects the whole page
    rows[3]["startTime"] = "not a time"
    rows[4]["usageDetails"] = "n/a"  # one column cannot hold this and the other rows' objects
    rows[5]["usageDetails"] = {"input": 1.5}
    stub = LangfuseStub(observations=rows)
    notices: list[str] = []

    class Notes(ImportReporter):
        def notice(self, message: str) -> None:
            notices.append(message)

    store = Store(tmp_path / "store")
    with stub.running() as url:
        stats = _run(url, stub, store, page_size=1000, reporter=Notes())
    assert any("could not parse" in n for n in notices)
    assert stats.rejected == 3
    problems = {p.split("(observation ")[1] for p in stats.problems}  # page order: by time
    assert problems == {
        "obs-03): startTime not a time is not a time; skipped",
        "obs-04): usageDetails is not an object of numbers; skipped",
        "obs-05): usageDetails.input = 1.5 is not a token count; skipped",
    }
    assert _stored(store)["span_id"].to_list() == ["emb-1", "emb-2", "obs-00", "obs-01", "obs-02"]


# -- the command ---------------------------------------------------------------------------------


def test_command_imports_and_summarises(stub, tmp_path):
    from llmtrace.cli import cli

    (tmp_path / "llmtrace.toml").write_text('[accuracy]\nnames = ["accuracy"]\n')
    stub.scores = [score("n1", "accuracy", 1, trace_id="trace-00", timestamp=T0)]
    env, args = _command(stub, tmp_path)
    with stub.running() as url:
        result = CliRunner().invoke(cli, [*args, "--host", url], env=env)
        assert result.exit_code == 0, result.output
        assert "Read 25 observations in 2 pages" in result.output  # the span is not asked for
        assert "-> 25 calls" in result.output
        assert "imported 25 new calls, skipped 0 already stored" in result.output
        assert "2 with accuracy" in result.output
        assert "scores: 1 attached to new calls, 0 to stored calls, 0 matched no call" in (
            result.output
        )
        again = CliRunner().invoke(cli, [*args, "--host", url], env=env)
        assert "imported 0 new calls, skipped 25 already stored" in again.output
        stub.observations.append({**observation("bad", "t", T0), "startTime": "soon"})
        stub.observations[-1]["level"] = "LOUD"  # the SDK refuses the page: read as JSON
        partial = CliRunner().invoke(cli, [*args, "--host", url], env=env)
        wrong = CliRunner().invoke(
            cli, [*args, "--host", url], env={**env, "LANGFUSE_SECRET_KEY": "nope"}
        )
    assert partial.exit_code == 1, partial.output
    assert "(observation bad): startTime soon is not a time; skipped" in partial.output
    assert wrong.exit_code == 2  # wrong or missing keys are configuration errors: exit 2
    assert "rejected the API keys (HTTP 401)" in wrong.output
    missing = CliRunner().invoke(cli, args, env={"LANGFUSE_PUBLIC_KEY": ""})
    assert missing.exit_code == 2
    assert "Traceback" not in missing.output and len(missing.output.strip().splitlines()) == 1
    assert "LANGFUSE_PUBLIC_KEY and LANGFUSE_SECRET_KEY" in missing.output


# -- done when: the same calls from OTLP cost the same -------------------------------------------


def _otlp_request(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """OTLP JSON for the same calls as the Langfuse rows: a root span named like the trace,
    and a semconv chat span with inclusive token counts."""

    def attr(key: str, value: Any) -> dict[str, Any]:
        if isinstance(value, str):
            return {"key": key, "value": {"stringValue": value}}
        return {"key": key, "value": {"intValue": str(value)}}

    def nanos(text: str) -> str:
        return str(int(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1e9))

    spans = []
    for i, row in enumerate(rows):
        usage = row["usageDetails"]
        attrs = [
            attr("gen_ai.operation.name", "chat"),
            attr("gen_ai.provider.name", "openai"),
            attr("gen_ai.request.model", row["model"]),
            attr("gen_ai.usage.input_tokens", usage["input"] + usage["input_cached_tokens"]),
            attr("gen_ai.usage.cache_read.input_tokens", usage["input_cached_tokens"]),
            attr("gen_ai.usage.output_tokens", usage["output"] + usage["output_reasoning_tokens"]),
            attr("gen_ai.usage.reasoning.output_tokens", usage["output_reasoning_tokens"]),
            attr("gen_ai.input.messages", json.dumps(row["input"])),
        ]
        if row["promptName"]:
            attrs += [
                attr("gen_ai.prompt.name", row["promptName"]),
                attr("gen_ai.prompt.version", str(row["promptVersion"])),
            ]
        root = f"{i + 1:016x}"
        spans.append(
            {
                "traceId": row["traceId"],
                "spanId": root,
                "name": row["traceName"],
                "startTimeUnixNano": nanos(row["startTime"]),
                "endTimeUnixNano": nanos(row["endTime"]),
            }
        )
        spans.append(
            {
                "traceId": row["traceId"],
                "spanId": row["id"],
                "parentSpanId": root,
                "name": f"chat {row['model']}",
                "startTimeUnixNano": nanos(row["startTime"]),
                "endTimeUnixNano": nanos(row["endTime"]),
                "attributes": attrs,
            }
        )
    return {"resourceSpans": [{"scopeSpans": [{"scope": {"name": "test"}, "spans": spans}]}]}


def test_costs_by_prompt_match_an_otlp_import_of_the_same_calls(tmp_path):
    otlp = pytest.importorskip("llmtrace.importers.otlp")
    rows = []
    for i in range(12):
        usage = {
            "input": 100 + 37 * i,
            "input_cached_tokens": 1000 * (i % 3),
            "output": 50 + i,
            "output_reasoning_tokens": 20 * (i % 2),
        }
        system = {"role": "system", "content": f"template {i % 2}"}
        rows.append(
            observation(
                f"{i + 1:016x}".replace("0", "a", 1),
                f"{i // 3 + 1:032x}",
                T0 + timedelta(hours=i),
                model="gpt-4o-mini" if i % 4 else "gpt-4o",
                usage=usage,
                prompt_name="qa" if i < 6 else None,
                prompt_version=1 + i % 2 if i < 6 else None,
                input=[system, {"role": "user", "content": f"question {i}"}],
                trace_name="support-answer",
            )
        )
    stub = LangfuseStub(observations=rows)
    from_langfuse = Store(tmp_path / "langfuse")
    with stub.running() as url:
        _run(url, stub, from_langfuse)
    path = tmp_path / "spans.jsonl"
    path.write_text(json.dumps(_otlp_request(rows)) + "\n")
    imported = otlp.import_otlp([path], accuracy_names=())
    assert not imported.problems
    from_otlp = Store(tmp_path / "otlp")
    from_otlp.append(price_calls(imported.calls, BOOK))

    by_prompt = [summarize(store.scan(), ["prompt"]) for store in (from_langfuse, from_otlp)]
    assert by_prompt[0].height == 4  # qa@1, qa@2 and two template fingerprints
    assert by_prompt[0]["total_cost"].null_count() == 0
    assert_frame_equal(by_prompt[0], by_prompt[1], check_exact=False, rel_tol=1e-12, abs_tol=0)
    by_action = [
        summarize(store.scan(), ["action", "model"]) for store in (from_langfuse, from_otlp)
    ]
    assert_frame_equal(by_action[0], by_action[1], check_exact=False, rel_tol=1e-12, abs_tol=0)


def _rounded(value: Any) -> Any:
    """Floats to 9 significant digits (the batch-dependent last bit of a price aside)."""
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_rounded(v) for v in value]
    return value


def test_audit_findings_match_an_otlp_import_of_the_same_calls(tmp_path):
    otlp = pytest.importorskip("llmtrace.importers.otlp")
    engine = pytest.importorskip("llmtrace.rules.engine")
    system = {"role": "system", "content": "Refund policy, clause by clause. " * 300}
    rows = [
        observation(
            f"{i + 1:016x}",
            f"{i + 1:032x}",
            T0 + timedelta(minutes=2 * i),
            model="gpt-4o",
            usage={
                "input": 2600,
                "input_cached_tokens": 0,
                "output": 80,
                "output_reasoning_tokens": 0,
            },
            prompt_name="refunds",
            prompt_version=4,
            input=[system, {"role": "user", "content": f"order {i}"}],
            trace_name="refund-request",
        )
        for i in range(200)
    ]
    stub = LangfuseStub(observations=rows)
    from_langfuse = Store(tmp_path / "langfuse")
    with stub.running() as url:
        _run(url, stub, from_langfuse, page_size=1000)
    path = tmp_path / "spans.jsonl"
    path.write_text(json.dumps(_otlp_request(rows)) + "\n")
    from_otlp = Store(tmp_path / "otlp")
    from_otlp.append(price_calls(otlp.import_otlp([path], accuracy_names=()).calls, BOOK))
    findings = [
        engine.run_audit(
            store, since=SINCE, until=UNTIL, config=Config(), price_book=BOOK, now=UNTIL
        ).findings
        for store in (from_langfuse, from_otlp)
    ]
    assert [f.rule for f in findings[0]] == ["LT201"]  # a long system prompt, never cached
    assert _rounded([f.to_dict() for f in findings[0]]) == _rounded(
        [f.to_dict() for f in findings[1]]
    )


def test_calls_without_provider_are_priced_under_the_models_first_party_and_tiers_kept(
    tmp_path,
):
    """Langfuse records no provider: an embedding model genai-prices cannot place by name
    (``text-embedding-3-small``, listed by Azure and OpenAI) is priced under OpenAI, its
    first party, and the record says the provider was assumed. Langfuse's OpenAI integration
    keeps the service tier in the model parameters: flex is priced at flex rates."""
    from genai_prices import Usage, calc_price

    at = datetime(2026, 11, 20, 10, tzinfo=UTC)
    rows = [
        observation(
            f"emb-{i}",
            "trace-emb",
            at + timedelta(seconds=i),
            type="EMBEDDING",
            model="text-embedding-3-small",
            usage={"input": 400 + i},
        )
        for i in range(100)
    ]
    rows.append(
        observation(
            "flex-1",
            "trace-flex",
            at,
            model="o3",
            usage={"input": 1000, "output": 200},
            model_parameters={"service_tier": "flex", "reasoning_effort": "low"},
        )
    )
    stub = LangfuseStub(observations=rows)
    store = Store(tmp_path / "store")
    with stub.running() as url:
        _run(url, stub, store, since=at - timedelta(hours=1), until=at + timedelta(hours=1))
    calls = _stored(store)
    embeddings = calls.filter(pl.col("operation") == "embeddings")
    assert embeddings.height == 100
    assert set(embeddings["price_status"]) == {"ok"}
    assert set(embeddings["provider"]) == {"openai"} and embeddings["provider_assumed"].all()
    assert set(embeddings["price_source"]) == {
        f"genai-prices {genai_prices_version()} (provider openai assumed)"
    }
    for row in embeddings.iter_rows(named=True):
        usage = Usage(input_tokens=row["input_tokens"])
        want = calc_price(usage, "text-embedding-3-small", provider_id="openai")
        assert row["total_cost"] == pytest.approx(float(want.total_price), rel=1e-12)
    flex = calls.filter(pl.col("span_id") == "flex-1").row(0, named=True)
    assert (flex["service_tier"], flex["reasoning_effort"], flex["price_status"]) == (
        "flex",
        "low",
        "ok",
    )
    want = calc_price(
        Usage(input_tokens=1000, output_tokens=200),
        "o3",
        provider_id="openai",
        genai_request_timestamp=at,
        price_context={"service_tier": "flex"},
    )
    assert flex["total_cost"] == pytest.approx(float(want.total_price), rel=1e-12)


def genai_prices_version() -> str:
    import genai_prices

    return genai_prices.__version__
