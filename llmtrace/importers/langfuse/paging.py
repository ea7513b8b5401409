"""The import run: windows, pages (cursor- or number-based), the checkpoint after every stored
page, and the steps that map, score, price and store each page."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import polars as pl
import pydantic

from llmtrace.accuracy import AccuracyConfig
from llmtrace.importers.langfuse.client import (
    LangfuseImportError,
    LangfuseSettings,
    RetryPolicy,
    _BadRequest,
    _Client,
    _iso,
    _NotFound,
    _parse,
    checkpoint_name,
)
from llmtrace.importers.langfuse.mapping import (
    _FRAME_ERRORS,
    OBSERVATION_TYPES,
    _nonblank,
    observations_to_calls,
)
from llmtrace.importers.langfuse.prompts import _apply_prompts
from llmtrace.importers.langfuse.scores import (
    _SCORE_COLUMNS,
    SCORE_TYPES,
    _empty_scores,
    _scores_v1,
    _scores_v3,
    attach_scores,
    scores_frame,
)
from llmtrace.importers.langfuse.stats import ImportReporter, ImportStats
from llmtrace.pricing import PriceBook, price_calls
from llmtrace.record import conform
from llmtrace.safe_text import escape
from llmtrace.store import Store

# v2 field groups a call record needs (io for fingerprints; metadata is large and not needed).
V2_FIELDS = "core,basic,model,usage,prompt,metrics,trace_context,io"


V2_PAGE_SIZE = 1000  # the v2 maximum


V1_PAGE_SIZE = 100


SCORES_PAGE_SIZE = 100  # the v3 maximum (more is HTTP 400)


# Re-read this much before the watermark: observations can arrive after a later one was read.
OVERLAP = timedelta(minutes=15)


# First import without --since reads this far back.
DEFAULT_LOOKBACK = timedelta(days=30)


# Scores are timestamped after their observation starts; a little slack covers clock skew.
SCORE_SLACK = timedelta(hours=1)


# Old servers: a trace can start before its observations' window.
TRACE_LOOKBACK = timedelta(days=1)


# A rerun whose --since/--until moved less than this (a relative "7d" re-evaluated) resumes.
RESUME_TOLERANCE = timedelta(days=1)


@dataclass
class _Context:
    """Everything one import run shares."""

    store: Store
    client: _Client
    stats: ImportStats
    reporter: ImportReporter
    book: PriceBook
    accuracy: AccuracyConfig
    keep_content: bool
    page_size: int
    state_name: str
    project: str
    state: dict[str, Any]
    scores: pl.DataFrame = field(default_factory=_empty_scores)
    traces: pl.DataFrame | None = None
    noticed: set[str] = field(default_factory=set)
    # ids of the window's scores that matched no stored call, and those of them that then
    # reached a call read in this run
    unstored_scores: set[str] = field(default_factory=set)
    new_call_scores: set[str] = field(default_factory=set)
    # prompts: names listed in this run (None: not on the server), versions the server lacks
    prompt_listed: dict[str, dict[str, Any] | None] = field(default_factory=dict)
    prompt_missing: set[tuple[str, str]] = field(default_factory=set)
    prompts_off: bool = False
    # re-read scores from here even when the window starts later (edits of older scores)
    scores_since: datetime | None = None

    def notice_once(self, key: str, message: str) -> None:
        if key not in self.noticed:
            self.noticed.add(key)
            self.reporter.notice(message)

    @property
    def entry(self) -> dict[str, Any]:
        return self.state.setdefault(self.project, {})

    def save(self) -> None:
        self.store.write_state(self.state_name, self.state)


def import_langfuse(
    store: Store,
    settings: LangfuseSettings,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    keep_content: bool = False,
    book: PriceBook | None = None,
    accuracy: AccuracyConfig | None = None,
    page_size: int = V2_PAGE_SIZE,
    retry: RetryPolicy | None = None,
    reporter: ImportReporter | None = None,
    sleep: Callable[[float], None] = time.sleep,
    scores_since: datetime | None = None,
) -> ImportStats:
    """Import Langfuse generations and embeddings into ``store``; returns what was done.

    ``since``/``until`` bound the observations' start times; without ``since`` the import goes
    on from the checkpoint (or reads the last 30 days the first time), without ``until`` up to
    now. An unfinished earlier import is finished first. ``scores_since`` re-reads scores
    timestamped from then on even when the window starts later: Langfuse filters scores by
    their timestamp only, so this is how an edit of an older score (an annotator's correction)
    reaches the stored call. Raises ``LangfuseImportError`` with a
    message for the user; everything stored up to then stays stored and checkpointed.
    """
    reporter = reporter or ImportReporter()
    stats = ImportStats(host=settings.host)
    name = checkpoint_name(settings.host)
    project = "project-" + hashlib.sha256(settings.public_key.encode()).hexdigest()[:12]
    client = _Client(settings, retry or RetryPolicy(), reporter, stats, sleep)
    ctx = _Context(
        store=store,
        client=client,
        stats=stats,
        reporter=reporter,
        book=book or PriceBook.load(),
        accuracy=accuracy or AccuracyConfig(),
        keep_content=keep_content,
        page_size=max(1, min(page_size, V2_PAGE_SIZE)),
        state_name=name,
        project=project,
        state=store.read_state(name),
        scores_since=scores_since,
    )
    try:
        for window in _windows(ctx, since, until):
            _run_window(ctx, window)
    except (_NotFound, _BadRequest) as exc:  # where no fallback applies
        raise LangfuseImportError(str(exc)) from None
    finally:
        client.close()
    watermark = ctx.entry.get("watermark")
    stats.watermark = _parse(watermark)
    return stats


def _windows(ctx: _Context, since: datetime | None, until: datetime | None):
    """The windows to read: an unfinished run first (if this call continues it), then new."""
    now = datetime.now(UTC)
    run = ctx.entry.get("run")
    run_from, run_to = _checkpoint_window(run)
    if run and (run_from is None or run_to is None):
        ctx.reporter.notice("the checkpoint's unfinished import is unreadable; starting afresh")
        ctx.entry.pop("run", None)
    elif run and run_from is not None and run_to is not None:
        close = (since is None or abs(since - run_from) <= RESUME_TOLERANCE) and (
            until is None or abs(until - run_to) <= RESUME_TOLERANCE
        )
        if close:
            ctx.stats.resumed = True
            ctx.reporter.notice(
                f"continuing the unfinished import of {_iso(run_from)} .. {_iso(run_to)} "
                f"after {run.get('pages', 0)} stored pages"
            )
            yield run
            since = None  # the rest follows on from the watermark
        else:
            ctx.reporter.notice(
                f"an unfinished import of {_iso(run_from)} .. {_iso(run_to)} is replaced by the "
                "requested window (calls it stored stay stored)"
            )
            ctx.entry.pop("run", None)
    watermark = _parse(ctx.entry.get("watermark"))
    start = since or (watermark - OVERLAP if watermark else now - DEFAULT_LOOKBACK)
    end = until or now
    if ctx.stats.resumed and until is not None:
        return  # the resumed run was the window asked for
    if start >= end:
        if not ctx.stats.resumed:
            ctx.reporter.notice(f"nothing to read: {_iso(start)} is not before {_iso(end)}")
        return
    run = {"from": _iso(start), "to": _iso(end), "api": None, "type_index": 0, "pages": 0}
    ctx.entry["run"] = run
    yield run


def _checkpoint_window(run: Any) -> tuple[datetime | None, datetime | None]:
    """The (from, to) of a checkpointed run, or Nones if it is missing or damaged."""
    try:
        return _parse(run["from"]), _parse(run["to"])
    except (KeyError, TypeError, ValueError, AttributeError):
        return None, None


def _run_window(ctx: _Context, run: dict[str, Any]) -> None:
    """Read one window completely, page by page, checkpointing after each stored page."""
    start, end = _parse(run["from"]), _parse(run["to"])
    assert start is not None and end is not None
    ctx.stats.windows.append((start, end))
    if run.get("api") is None:
        run["api"] = _probe(ctx, start, end)
    ctx.stats.api = run["api"]
    if run["api"] == "v1":
        ctx.notice_once(
            "v1",
            f"{ctx.client.settings.host} has no v2 observations endpoint (older self-hosted "
            "Langfuse): reading the page-based /api/public/observations and /api/public/traces "
            "instead",
        )
    ctx.save()
    ctx.scores = _read_scores(ctx, start, run["api"])
    _attach_to_stored(ctx)
    ctx.traces = None
    if run["api"] == "v1":
        ctx.traces = _read_traces(ctx, start - TRACE_LOOKBACK, end)
        _pages_v1(ctx, run, start, end)
    else:
        _pages_v2(ctx, run, start, end)
    ctx.stats.scores_new_calls += len(ctx.new_call_scores)
    ctx.stats.scores_unmatched += len(ctx.unstored_scores - ctx.new_call_scores)
    _finish(ctx, start, end)


def _attach_to_stored(ctx: _Context) -> None:
    """Merge the window's scores into calls stored by earlier runs (late LLM-as-judge verdicts,
    trace scores added after the trace) before any page is read.

    Done first, and again whenever the window is re-read, so a crash anywhere leaves nothing
    behind; scores already held are not added again, and a score edited at Langfuse since
    replaces the version a call holds (same id). Scores matching no stored call are
    remembered: the pages decide whether they belong to a call read now or to none.
    """
    if ctx.scores.is_empty():
        ctx.unstored_scores, ctx.new_call_scores = set(), set()
        return
    ctx.reporter.stage("attaching scores to stored calls")
    frame = ctx.scores.select(
        "score_id", "trace_id", pl.col("observation_id").alias("span_id"), "score"
    )
    result = ctx.store.attach_scores(frame, ctx.accuracy)
    ctx.stats.scores_stored_calls += result.attached
    ctx.stats.scores_present += result.present
    ctx.stats.scores_replaced += result.replaced
    ctx.stats.calls_rescored += result.calls
    ctx.unstored_scores, ctx.new_call_scores = set(result.unmatched_ids), set()


def _note_new_call_scores(ctx: _Context, calls: pl.DataFrame) -> None:
    """Which of the scores no stored call held reach the calls of this page: those calls were
    not stored before this run, so the scores count as attached to new calls."""
    if not ctx.unstored_scores:
        return
    scores = ctx.scores
    hit = scores.filter(
        pl.col("observation_id").is_in(calls.get_column("span_id").implode())
        | (
            pl.col("observation_id").is_null()
            & pl.col("trace_id").is_in(calls.get_column("trace_id").implode())
        )
    ).get_column("score_id")
    ctx.new_call_scores.update(set(hit) & ctx.unstored_scores)


def _finish(ctx: _Context, start: datetime, end: datetime) -> None:
    """The window is complete: move the watermark (if the window joins on to it) and clear the
    run, in one checkpoint write."""
    entry = ctx.entry
    old = _parse(entry.get("watermark"))
    if old is None or start <= old:
        entry["watermark"] = _iso(max(old, end) if old else end)
    entry.pop("run", None)
    entry["last_import"] = {
        "finished": _iso(datetime.now(UTC)),
        "from": _iso(start),
        "to": _iso(end),
    }
    ctx.save()


def _probe(ctx: _Context, start: datetime, end: datetime) -> str:
    """Which observations API the server has: one small v2 request (it also checks the keys
    before anything else is read)."""
    try:
        ctx.client.call(
            "GET /api/public/v2/observations",
            lambda: ctx.client.api.observations.get_many(
                fields="core",
                limit=1,
                from_start_time=start,
                to_start_time=end,
                request_options=ctx.client.options,
            ),
        )
    except _NotFound:
        return "v1"
    except pydantic.ValidationError:
        pass  # the endpoint exists; page parsing problems are dealt with page by page
    return "v2"


def _read_scores(ctx: _Context, start: datetime, api: str) -> pl.DataFrame:
    """Every numeric, boolean and categorical score from ``start - SCORE_SLACK`` on (or from
    ``ctx.scores_since`` when that is earlier)."""
    ctx.reporter.stage("reading scores")
    since = start - SCORE_SLACK
    if ctx.scores_since is not None and ctx.scores_since < since:
        since = ctx.scores_since
    frames: list[pl.DataFrame] = []
    if api == "v2":
        try:
            frames = _scores_pages_v3(ctx, since)
        except _NotFound:
            api = "v1"
            ctx.notice_once(
                "scores-v1", "this server has no v3 scores endpoint: reading /api/public/v2/scores"
            )
    if api == "v1":
        frames = _scores_pages_v1(ctx, since)
    common = pl.concat(frames) if frames else pl.DataFrame(schema=_SCORE_COLUMNS)
    common = _drop_bad_scores(ctx, common)
    scores = scores_frame(common, ctx.accuracy)
    ctx.stats.scores += scores.height
    return scores


def _readable_scores(
    ctx: _Context, rows: list[Any], convert: Callable[[list[Any]], pl.DataFrame]
) -> pl.DataFrame:
    """``convert(rows)``; when one odd score sinks the page, each row is tried alone and the
    ones that fail are skipped with a problem naming their id (off the normal path)."""
    try:
        return convert(rows)
    except _FRAME_ERRORS:
        pass
    frames = []
    for row in rows:
        try:
            frames.append(convert([row]))
        except _FRAME_ERRORS as exc:
            score_id = row.get("id") if isinstance(row, dict) else None
            _score_problem(ctx, score_id, f"unreadable ({type(exc).__name__})")
    return pl.concat(frames) if frames else pl.DataFrame(schema=_SCORE_COLUMNS)


def _drop_bad_scores(ctx: _Context, common: pl.DataFrame) -> pl.DataFrame:
    """Scores whose numeric value is not a finite number are skipped, each with a problem."""
    number = pl.col("value_text").str.strip_chars().cast(pl.Float64, strict=False)
    bad = (pl.col("data_type").str.to_uppercase() == "NUMERIC") & (
        number.is_null() | number.is_nan() | number.is_infinite()
    ).fill_null(True)
    for score_id, value in common.filter(bad).select("score_id", "value_text").iter_rows():
        _score_problem(ctx, score_id, f"value {value!r} is not a finite number")
    return common.filter(~bad)


def _score_problem(ctx: _Context, score_id: Any, reason: str) -> None:
    ctx.stats.scores_rejected += 1
    ctx.stats.problem(f"score {escape(score_id or '?')}: {escape(reason)}; skipped")


def _scores_pages_v3(ctx: _Context, since: datetime) -> list[pl.DataFrame]:
    frames: list[pl.DataFrame] = []
    cursor: str | None = None
    while True:
        rows, cursor, sdk_names = _cursor_page(
            ctx,
            "GET /api/public/v3/scores",
            lambda cursor=cursor: ctx.client.api.scores.get_many(
                limit=SCORES_PAGE_SIZE,
                cursor=cursor,
                fields="subject",
                data_type=",".join(SCORE_TYPES),
                from_timestamp=since,
                request_options=ctx.client.options,
            ),
            "api/public/v3/scores",
            {
                "limit": SCORES_PAGE_SIZE,
                "cursor": cursor,
                "fields": "subject",
                "dataType": ",".join(SCORE_TYPES),
                "fromTimestamp": _iso(since),
            },
        )
        if rows:
            frames.append(
                _readable_scores(ctx, rows, lambda r, names=sdk_names: _scores_v3(r, names))
            )
        if not cursor or not rows:
            return frames


def _cursor_page(
    ctx: _Context,
    what: str,
    sdk_request: Callable[[], Any],
    path: str,
    params: dict[str, Any],
) -> tuple[list[dict[str, Any]], str | None, bool]:
    """One cursor page through the SDK: its rows, the next cursor, and whether the rows carry
    the SDK's field names (True) or are the server's JSON (False).

    The SDK rejects a whole page for one odd row (an unknown enum value, a float token count);
    that page is then read as plain JSON so the good rows are kept and the bad ones are
    rejected one by one, by id.
    """
    try:
        page = ctx.client.call(what, sdk_request)
    except pydantic.ValidationError as exc:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        ctx.reporter.notice(
            f"{what}: the SDK could not parse the page ({where}: {first.get('msg', 'invalid')}); "
            "reading it as plain JSON"
        )
        body = ctx.client.call(what, lambda: ctx.client.get_json(path, params))
        return body["data"], (body.get("meta") or {}).get("cursor") or None, False
    # pydantic's own dump: the SDK's .json()/.dict() walk every value in Python (5x slower)
    data = pydantic.BaseModel.model_dump(page, exclude_unset=True)
    return data.get("data", []), page.meta.cursor, True


def _scores_pages_v1(ctx: _Context, since: datetime) -> list[pl.DataFrame]:
    frames, page = [], 1
    while True:
        body = ctx.client.call(
            "GET /api/public/v2/scores",
            lambda page=page: ctx.client.get_json(
                "api/public/v2/scores",
                {"page": page, "limit": SCORES_PAGE_SIZE, "fromTimestamp": _iso(since)},
            ),
        )
        rows = body["data"]
        if rows:
            frames.append(_readable_scores(ctx, rows, _scores_v1))
        if not rows or page >= int(body.get("meta", {}).get("totalPages") or 0):
            return frames
        page += 1


def _read_traces(ctx: _Context, start: datetime, end: datetime) -> pl.DataFrame:
    """Trace name, session, user and environment per trace (older servers only: there the
    observations do not carry them)."""
    ctx.reporter.stage("reading traces")
    frames, page = [], 1
    schema = {"id": pl.String, "name": pl.String, "sessionId": pl.String, "userId": pl.String}
    while True:
        body = ctx.client.call(
            "GET /api/public/traces",
            lambda page=page: ctx.client.get_json(
                "api/public/traces",
                {
                    "page": page,
                    "limit": V1_PAGE_SIZE,
                    "fromTimestamp": _iso(start),
                    "toTimestamp": _iso(end),
                    "fields": "core",
                },
            ),
        )
        rows = body["data"]
        if rows:
            frames.append(pl.from_dicts(rows, schema=schema, strict=False))
        if not rows or page >= int(body.get("meta", {}).get("totalPages") or 0):
            break
        page += 1
    traces = pl.concat(frames) if frames else pl.DataFrame(schema=schema)
    return traces.unique("id", keep="first").select(
        pl.col("id").alias("trace_id"),
        _nonblank("name").alias("_t_action"),
        _nonblank("sessionId").alias("_t_conversation"),
        _nonblank("userId").alias("_t_user"),
    )


def _pages_v2(ctx: _Context, run: dict[str, Any], start: datetime, end: datetime) -> None:
    """Cursor pages of each observation type, from the checkpointed position on."""
    api = ctx.client.api
    for index in range(run.get("type_index", 0), len(OBSERVATION_TYPES)):
        kind = OBSERVATION_TYPES[index]
        ctx.reporter.stage(f"reading {kind.lower()} observations")
        cursor = run.get("cursor") if run.get("type_index", 0) == index else None
        while True:
            what = f"GET /api/public/v2/observations ({kind.lower()}, page {run['pages'] + 1})"
            params = {
                "fields": V2_FIELDS,
                "limit": ctx.page_size,
                "cursor": cursor,
                "type": kind,
                "fromStartTime": _iso(start),
                "toStartTime": _iso(end),
            }
            try:
                rows, next_cursor, sdk_names = _cursor_page(
                    ctx,
                    what,
                    lambda cursor=cursor, kind=kind: api.observations.get_many(
                        fields=V2_FIELDS,
                        limit=ctx.page_size,
                        cursor=cursor,
                        type=kind,
                        from_start_time=start,
                        to_start_time=end,
                        request_options=ctx.client.options,
                    ),
                    "api/public/v2/observations",
                    params,
                )
            except _BadRequest as exc:
                if cursor is None:
                    raise LangfuseImportError(str(exc)) from None
                ctx.reporter.notice(
                    "the server did not accept the saved cursor; reading this pass from its "
                    "start again (calls already stored are skipped)"
                )
                cursor = None
                continue
            _store_page(ctx, rows, f"v2 {kind.lower()} page {run['pages'] + 1}", sdk_names)
            run["pages"] = run.get("pages", 0) + 1
            if next_cursor:
                run["type_index"], run["cursor"] = index, next_cursor
            else:
                run["type_index"], run["cursor"] = index + 1, None
            ctx.save()
            ctx.reporter.stored(ctx.stats)
            if not next_cursor:
                break
            cursor = next_cursor


def _pages_v1(ctx: _Context, run: dict[str, Any], start: datetime, end: datetime) -> None:
    """Page-numbered observations of each type (older servers), from the checkpoint on."""
    for index in range(run.get("type_index", 0), len(OBSERVATION_TYPES)):
        kind = OBSERVATION_TYPES[index]
        ctx.reporter.stage(f"reading {kind.lower()} observations (page-based API)")
        number = run.get("page", 1) if run.get("type_index", 0) == index else 1
        while True:
            body = ctx.client.call(
                f"GET /api/public/observations ({kind}, page {number})",
                lambda number=number, kind=kind: ctx.client.get_json(
                    "api/public/observations",
                    {
                        "page": number,
                        "limit": V1_PAGE_SIZE,
                        "type": kind,
                        "fromStartTime": _iso(start),
                        "toStartTime": _iso(end),
                    },
                ),
            )
            rows = body["data"]
            _store_page(ctx, rows, f"v1 {kind.lower()} page {number}")
            last = not rows or number >= int((body.get("meta") or {}).get("totalPages") or 0)
            run["pages"] = run.get("pages", 0) + 1
            run["type_index"], run["page"] = (index + 1, 1) if last else (index, number + 1)
            ctx.save()
            ctx.reporter.stored(ctx.stats)
            if last:
                break
            number += 1


def _store_page(
    ctx: _Context, rows: list[dict[str, Any]], label: str, sdk_names: bool = False
) -> None:
    """Map, score, price and append one page of observations."""
    stats = ctx.stats
    stats.pages += 1
    stats.observations += len(rows)
    ctx.reporter.fetched(stats)
    if not rows:
        return
    calls, rejected = observations_to_calls(
        rows, keep_content=ctx.keep_content, sdk_names=sdk_names
    )
    for row, obs_id, reason in rejected.iter_rows():
        stats.problem(
            f"{label}, row {row + 1} (observation {escape(obs_id or '?')}): "
            f"{escape(reason)}; skipped"
        )
    stats.rejected += rejected.height
    if calls.is_empty():
        return
    stats.usage_mismatch += int(calls.get_column("_usage_mismatch").sum())
    if ctx.traces is not None:
        calls = _join_traces(calls, ctx.traces)
    calls = _apply_prompts(ctx, calls)
    calls = attach_scores(calls, ctx.scores, ctx.accuracy)
    _note_new_call_scores(ctx, calls)
    priced = price_calls(conform(calls), ctx.book)  # which also assumes each model's provider
    result = ctx.store.append(priced)
    _count(stats, priced, result.added, result.duplicates)


def _join_traces(calls: pl.DataFrame, traces: pl.DataFrame) -> pl.DataFrame:
    """Fill action, conversation and user from the trace (older servers)."""
    return (
        calls.join(traces, on="trace_id", how="left", maintain_order="left")
        .with_columns(
            pl.coalesce("action", "_t_action").alias("action"),
            pl.coalesce("conversation_id", "_t_conversation").alias("conversation_id"),
            pl.coalesce("user_id", "_t_user").alias("user_id"),
        )
        .drop("_t_action", "_t_conversation", "_t_user")
    )


def _count(stats: ImportStats, priced: pl.DataFrame, added: int, duplicates: int) -> None:
    summary = priced.select(
        pl.len().alias("calls"),
        pl.col("scores").is_not_null().sum().alias("scored"),
        pl.col("accuracy").is_not_null().sum().alias("accurate"),
        pl.col("total_cost").sum().alias("cost"),
        pl.col("reported_cost").sum().alias("reported"),
    ).row(0, named=True)
    stats.calls += summary["calls"]
    stats.calls_with_scores += summary["scored"]
    stats.calls_with_accuracy += summary["accurate"]
    stats.total_cost += summary["cost"] or 0.0
    stats.reported_cost += summary["reported"] or 0.0
    stats.added += added
    stats.duplicates += duplicates
    for status, count in priced.group_by("price_status").len().iter_rows():
        stats.price_status[status] += count
