"""Audit CPU time, wall time and peak memory on a store, against Polars scanning the columns the
rules read and the same aggregations in DuckDB SQL over the same files, in the same run.

    python bench/run_all.py --only audit        # the documented run: 10M-call store, 3 runs
    python bench/gen_store.py --rows 10000000 --store /tmp/lt-10m      # or by hand, once per size
    python bench/bench_audit.py --store /tmp/lt-10m --runs 3 --json /tmp/audit-10m.json
    git worktree add /tmp/old-audit <commit>                           # code to compare with
    python bench/bench_audit.py --store /tmp/lt-10m --old /tmp/old-audit --json /tmp/a.json

Three contenders (four with ``--old``), each in its own process (so CPU and peak RSS are its
own, read with ``os.wait4``), interleaved run by run so machine noise hits them alike; medians
are reported. CPU seconds (user + system of all threads) are the figure that holds on a loaded
machine: the rows give the whole process (start-up included, as ``/usr/bin/time`` counts it);
``work_cpu_s`` is the measured step only. The JSON result is ``bench/_measure.py``'s
``llmtrace-bench/1``, which run_all.py turns into bench/README.md's table rows.

* ``audit``   - ``run_audit`` with every built-in rule on the local engine, the default window
  (the 7 days before 2026-11-20; LT101 also reads the 7 before that);
* ``scan``    - Polars reading every column the built-in rules and the coverage census read, over
  the window each reads, reduced per column (max of the value, string length or list length,
  so every value is decoded) - the I/O and decode floor under the audit;
* ``old``     - with ``--old DIR``: the same audit run by the code in DIR (a git worktree of an
  earlier commit, put first on ``PYTHONPATH``), to measure a change against its parent in the
  same run;
* ``duckdb``  - each rule's aggregate step written in DuckDB SQL over the same Parquet files
  (same filters, group keys, window functions and sums; see ``duckdb_sql``), materialised into
  temporary tables. DuckDB is a benchmark-only dependency (``pip install duckdb``).

The DuckDB queries reproduce: LT101's histogram cells; LT201's system-prefix groups,
deeper-prefix choice, per-group time ordering, cache replay and cell sums; LT202's per-
conversation replay (previous turn's prompt resent, gap, hits and counterfactual reads/writes per
lifetime); LT203's per-lineage next/previous call (unread writes); LT301's turn numbering and
least-squares fit, the budget policy and the single-call cells and histograms; LT401's and
LT501's per-key sums (24 hour counts); LT502's per-request ordering and cross-session repeats
with distinct sessions and users; LT503's per-session sums and repeated-request loops. Not
reproduced: LT301's summarise-every-N-turns policy (positional shifts within a conversation) and
its second pass over the history as LT202 would cache it; LT202's cacheable minimum per model
(one CASE per call instead); the string-key join-backs; ``decide`` (tiny tables), which is part
of ``audit`` only.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

UNTIL = datetime(2026, 11, 20, tzinfo=UTC)
SINCE = UNTIL - timedelta(days=7)
BASELINE = SINCE - timedelta(days=7)
CONTENDERS = ("audit", "old", "scan", "duckdb")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

RUN_ALL = {
    "name": "audit",
    "order": 50,
    "full": ["--runs", "3"],
    "quick": ["--runs", "1"],
    "store": {"full": 10_000_000, "quick": 50_000},
    "requires": ["duckdb"],
}


# -- the contenders (each runs in a fresh process) ----------------------------------------------


def run_audit_once(store_path: Path) -> dict[str, Any]:
    import llmtrace
    from llmtrace.config import Config
    from llmtrace.rules.engine import run_audit
    from llmtrace.store import Store

    began = time.perf_counter()
    result = run_audit(Store(store_path), until=UNTIL, config=Config(data={}, path=None))
    seconds = time.perf_counter() - began
    return {
        "seconds": seconds,
        "calls_in_window": result.calls_scanned,
        "findings": len(result.findings),
        "by_rule": {r: sum(f.rule == r for f in result.findings) for r in result.rules_run},
        "errors": [e.to_dict() for e in result.errors],
        "code": str(Path(llmtrace.__file__).parent.parent),
    }


def _reduce(schema: Any, name: str) -> Any:
    """A per-column reduction that decodes every value (statistics cannot answer it)."""
    import polars as pl

    dtype = schema[name]
    column = pl.col(name)
    if isinstance(dtype, pl.List):
        return column.list.len().max().alias(name)
    if dtype == pl.String:
        return column.str.len_bytes().max().alias(name)
    if dtype == pl.Boolean:
        return column.sum().alias(name)
    return column.max().alias(name)


def run_scan_once(store_path: Path) -> dict[str, Any]:
    import polars as pl

    from llmtrace.record import CALL_SCHEMA
    from llmtrace.rules.coverage import CENSUS_COLUMNS
    from llmtrace.rules.loader import builtin_logic, builtin_specs
    from llmtrace.store import Store

    store = Store(store_path)
    current: set[str] = set(CENSUS_COLUMNS)
    baseline: set[str] = set()
    for code in builtin_specs():
        rule = builtin_logic(code)
        wanted = baseline if getattr(rule, "needs_baseline", False) else current
        derived = getattr(rule, "derived_columns", None) or {}
        for column in rule.columns:  # a derived column: the store columns it is computed from
            wanted.update(derived[column].meta.root_names() if column in derived else [column])
    plans = []
    for since, columns in ((SINCE, current - baseline), (BASELINE, baseline)):
        if not columns:
            continue
        names = sorted({*columns, "start_time"})
        scan = store.scan(since, UNTIL).select(names)
        plans.append(scan.select(_reduce(CALL_SCHEMA, c) for c in names))
    began = time.perf_counter()
    pl.collect_all(plans)
    return {"seconds": time.perf_counter() - began, "columns": sorted(current | baseline)}


def _ts(value: datetime) -> str:
    return f"TIMESTAMPTZ '{value.strftime('%Y-%m-%d %H:%M:%S')}+00'"


# LT202's cacheable minimum per call (the rule looks it up per model; the exact table does not
# change the work: one CASE per call)
MINIMUM = (
    "CASE WHEN provider IN ('openai', 'azure') THEN 1024 WHEN model LIKE '%haiku%' THEN 2048 "
    "WHEN model LIKE '%opus%' OR model LIKE '%sonnet%' THEN 1024 ELSE 4096 END"
)


def duckdb_sql(files: str) -> dict[str, str]:
    """The three aggregate steps in DuckDB SQL (parameters: the rules' YAML defaults)."""
    window = f"start_time >= {_ts(SINCE)} AND start_time < {_ts(UNTIL)}"
    both = f"start_time >= {_ts(BASELINE)} AND start_time < {_ts(UNTIL)}"
    source = f"read_parquet('{files}')"
    rbin = (
        "CASE WHEN {x} <= 0 THEN 0 ELSE CAST(floor(log2(greatest({x}, 1)) * 16) AS INTEGER) + 1 END"
    )
    lt101 = f"""
        SELECT prompt, model, service, reasoning_effort,
            CASE WHEN start_time >= {_ts(SINCE)} THEN 'current' ELSE 'baseline' END AS period,
            {rbin.format(x="reasoning_tokens")} AS bin,
            count(*) AS calls, sum(reasoning_tokens) AS reasoning_tokens,
            count(accuracy) AS labelled, sum(least(greatest(accuracy, 0), 1)) AS correct,
            sum(reasoning_cost) AS reasoning_cost,
            sum(reasoning_tokens) FILTER (WHERE reasoning_cost IS NOT NULL) AS priced_tokens,
            min(start_time) AS first_seen, max(prompt_name) AS prompt_name,
            max(prompt_version) AS prompt_version, max(provider) AS provider
        FROM {source}
        WHERE {both} AND reasoning_tokens IS NOT NULL AND reasoning_tokens >= 0
        GROUP BY ALL"""
    deeper = (1, 2, 3)
    lt201 = f"""
        WITH base AS (
            SELECT hash(provider, model) AS m, hash(service, prompt) AS s, start_time,
                input_tokens AS inp,
                least(greatest(coalesce(cache_read_tokens, 0), 0), input_tokens) AS rd,
                coalesce(cache_write_tokens, 0) AS wr,
                coalesce(cache_write_1h_tokens, 0) AS wr1h,
                CASE WHEN provider IN ('openai', 'azure') THEN 128 ELSE 1 END AS step,
                300.0 AS ttl,
                {", ".join(f"prefix_hashes[{d + 1}] AS h{d}" for d in range(4))},
                {", ".join(f"prefix_tokens[{d + 1}] AS p{d}" for d in range(4))}
            FROM {source}
            WHERE {window} AND provider IN ('anthropic', 'aws', 'openai', 'azure')
                AND model IS NOT NULL AND input_tokens > 0 AND prefix_hashes[1] IS NOT NULL
        ), sized AS (
            SELECT *, xor(h0, m) AS k0, count(*) OVER k AS n0,
                {", ".join(f"min(h{d}) OVER k AS lo{d}, max(h{d}) OVER k AS hi{d}" for d in deeper)}
            FROM base WINDOW k AS (PARTITION BY xor(h0, m))
        ), flagged AS (
            SELECT *, {
        ", ".join(f"h{d} = lo{d} AS islo{d}, h{d} = hi{d} AS ishi{d}" for d in deeper)
    }
            FROM sized WHERE n0 >= 20
        ), counted AS (
            SELECT *, greatest(20.0, n0 * 0.5) AS floor_n,
                {
        ", ".join(
            f"sum(CAST(islo{d} AS INTEGER)) OVER k AS nlo{d}, "
            f"sum(CAST(ishi{d} AS INTEGER)) OVER k AS nhi{d}"
            for d in deeper
        )
    }
            FROM flagged WINDOW k AS (PARTITION BY k0)
        ), chosen AS (
            SELECT *, CASE
                {
        " ".join(
            f"WHEN (islo{d} AND nlo{d} >= floor_n) OR (ishi{d} AND nhi{d} >= floor_n) THEN {d}"
            for d in reversed(deeper)
        )
    } ELSE 0 END AS depth
            FROM counted
        ), grouped AS (
            SELECT m, s, start_time, inp, rd, wr, wr1h, step, ttl, depth,
                CASE depth {" ".join(f"WHEN {d} THEN h{d}" for d in range(4))} END AS prefix_hash,
                coalesce(CASE depth {" ".join(f"WHEN {d} THEN p{d}" for d in range(4))} END, 0)
                    AS prefix_raw
            FROM chosen
        ), replay AS (
            SELECT *, xor(prefix_hash, m) AS g,
                least(prefix_raw, inp) // step * step AS prefix,
                (epoch_us(start_time) - lag(epoch_us(start_time))
                    OVER (PARTITION BY xor(prefix_hash, m) ORDER BY start_time)) / 1e6 AS gap_s,
                CAST(start_time AS DATE) AS day,
                CAST(floor(log2(inp)) AS INTEGER) AS band
            FROM grouped
        ), hits AS (
            SELECT *, coalesce(gap_s <= ttl, false) AS hit_short,
                coalesce(gap_s <= 3600, false) AS hit_long,
                (gap_s > 30)::INT + (gap_s > 60)::INT + (gap_s > 300)::INT + (gap_s > 600)::INT
                + (gap_s > 1800)::INT + (gap_s > 3600)::INT + (gap_s > 7200)::INT AS gap_bin
            FROM replay
        )
        SELECT g, m, s, day, band, any_value(depth) AS depth,
            any_value(prefix_hash) AS prefix_hash, count(*) AS calls, sum(inp) AS input,
            sum(rd) AS read, sum(wr) AS write, sum(wr1h) AS write_1h, sum(prefix) AS prefix,
            sum(least(rd, prefix)) AS read_in_prefix,
            {
        ", ".join(
            f"sum(hit_{s}::INT) AS hits_{s}, "
            f"sum(CASE WHEN hit_{s} THEN greatest(rd, prefix) ELSE rd END) AS read_{s}, "
            f"sum(greatest(least(CASE WHEN hit_{s} THEN wr - least(wr, greatest(prefix - rd, 0)) "
            f"ELSE greatest(wr, greatest(prefix - rd, 0)) END, "
            f"inp - CASE WHEN hit_{s} THEN greatest(rd, prefix) ELSE rd END), 0)) AS write_{s}"
            for s in ("short", "long")
        )
    },
            {", ".join(f"count(*) FILTER (WHERE gap_bin = {i}) AS gaps_{i}" for i in range(8))},
            max(prefix_raw) AS prefix_tokens_max, min(start_time) AS first_call,
            max(start_time) AS last_call
        FROM hits GROUP BY g, m, s, day, band"""
    tokens = ("inp", "rd", "wr", "wr1h")
    budget = "greatest(8000, p0)"
    lt301 = f"""
        WITH base AS (
            SELECT hash(provider, model, service, prompt) AS k,
                CASE WHEN conversation_id IS NOT NULL THEN hash(conversation_id) END AS c,
                start_time, CAST(start_time AS DATE) AS day,
                CAST(floor(log2(input_tokens)) AS INTEGER) AS band, input_tokens AS inp,
                least(greatest(coalesce(cache_read_tokens, 0), 0), input_tokens) AS rd,
                greatest(least(coalesce(cache_write_tokens, 0), input_tokens
                    - least(greatest(coalesce(cache_read_tokens, 0), 0), input_tokens)), 0) AS wr,
                least(coalesce(cache_write_1h_tokens, 0), coalesce(cache_write_tokens, 0)) AS wr1h,
                coalesce(output_tokens, 0) AS outp,
                least(greatest(coalesce(prefix_tokens[1], 0), 0), input_tokens) AS p0
            FROM {source}
            WHERE {window} AND input_tokens > 0 AND model IS NOT NULL
        ), turns AS (
            SELECT *, row_number() OVER (PARTITION BY c ORDER BY start_time) - 1 AS turn
            FROM base WHERE c IS NOT NULL
        ), fit AS (
            SELECT *, count(*) OVER w AS n, sum(turn) OVER w AS sx, sum(inp) OVER w AS sy,
                sum(turn * inp::DOUBLE) OVER w AS sxy, sum(turn * turn::DOUBLE) OVER w AS sxx,
                sum(inp * inp::DOUBLE) OVER w AS syy, sum(outp) OVER w AS sout,
                bool_or(rd + wr > 0) OVER w AS cached
            FROM turns WINDOW w AS (PARTITION BY c)
        ), line AS (
            SELECT *,
                CASE WHEN n * sxx - sx * sx > 0 THEN (n * sxy - sx * sy) / (n * sxx - sx * sx)
                    ELSE 0 END AS slope,
                CASE WHEN n * sxx - sx * sx > 0 AND n * syy - sy * sy > 0
                    THEN pow(n * sxy - sx * sy, 2) / ((n * sxx - sx * sx) * (n * syy - sy * sy))
                    ELSE 0 END AS r2
            FROM fit
        ), q AS (
            SELECT *, (n >= 4 AND slope >= 200 AND r2 >= 0.6)::INT AS q,
                least(inp, {budget}) AS b_inp,
                CASE WHEN cached THEN least(rd, p0) ELSE least(rd, {budget}) END AS b_rd
            FROM line
        ), conv AS (
            SELECT 'conv' AS kind, k, day, band, sum(q) AS calls,
                {", ".join(f"sum({t} * q) AS {t}" for t in tokens)},
                sum(b_inp * q) AS budget_input, sum(b_rd * q) AS budget_read,
                sum((inp - b_inp) * q) AS trimmed_budget, sum(outp * q) AS output,
                sum((turn = n - 1)::INT) AS conversations,
                sum((turn = n - 1)::INT * q) AS flagged,
                sum(slope * (turn = n - 1)::INT * q) AS slope_sum,
                sum(r2 * (turn = n - 1)::INT * q) AS r2_sum, max(inp * q) AS input_max
            FROM q GROUP BY k, day, band
        ), single AS (
            SELECT 'single' AS kind, k, day, band, count(*) AS calls,
                {", ".join(f"sum({t}) AS {t}" for t in tokens)},
                sum(least(inp, {budget})) AS budget_input,
                sum(least(rd, {budget})) AS budget_read,
                sum(inp - least(inp, {budget})) AS trimmed_budget, sum(outp) AS output,
                max(inp) AS input_max
            FROM base WHERE c IS NULL GROUP BY k, day, band
        ), hist AS (
            SELECT 'hist_input' AS kind, k, {rbin.format(x="inp")} AS bin, count(*) AS calls
            FROM base WHERE c IS NULL GROUP BY ALL
            UNION ALL
            SELECT 'hist_output' AS kind, k, {rbin.format(x="outp")} AS bin, count(*) AS calls
            FROM base WHERE c IS NULL GROUP BY ALL
        )
        SELECT * FROM conv UNION ALL BY NAME SELECT * FROM single
        UNION ALL BY NAME SELECT * FROM hist"""
    lt202 = f"""
        WITH base AS (
            SELECT hash(provider, model, service, prompt) AS k, hash(conversation_id) AS c,
                start_time, CAST(start_time AS DATE) AS day,
                CAST(floor(log2(input_tokens)) AS INTEGER) AS band, input_tokens AS l,
                least(greatest(coalesce(cache_read_tokens, 0), 0), input_tokens) AS rd,
                greatest(least(coalesce(cache_write_tokens, 0), input_tokens
                    - least(greatest(coalesce(cache_read_tokens, 0), 0), input_tokens)), 0) AS wr,
                least(greatest(coalesce(prefix_tokens[1], 0), 0), input_tokens) AS p0,
                len(prefix_hashes) AS nh, prefix_hashes[-1] AS last_h, prefix_hashes AS hs,
                provider IN ('anthropic', 'aws') AS explicit, {MINIMUM} AS minimum
            FROM {source}
            WHERE {window} AND input_tokens > 0 AND conversation_id IS NOT NULL
                AND model IS NOT NULL AND provider IN ('anthropic', 'aws', 'openai', 'azure')
        ), turns AS (
            SELECT *, lag(l) OVER w AS prev_l, lag(nh) OVER w AS prev_n,
                lag(last_h) OVER w AS prev_last,
                (epoch_us(start_time) - lag(epoch_us(start_time)) OVER w) / 1e6 AS gap_s
            FROM base WINDOW w AS (PARTITION BY c ORDER BY start_time)
        ), replay AS (
            SELECT *, prev_l IS NULL AS first,
                coalesce(prev_n > 0 AND hs[prev_n] = prev_last AND prev_l <= l, false) AS resent
            FROM turns
        ), hits AS (
            SELECT *, coalesce(resent AND gap_s <= 300 AND prev_l >= minimum, false) AS hit_short,
                coalesce(resent AND gap_s <= 3600 AND prev_l >= minimum AND explicit, false)
                    AS hit_long
            FROM replay
        ), cf AS (
            SELECT *,
                CASE WHEN hit_short THEN CASE WHEN explicit THEN prev_l
                    ELSE prev_l // 128 * 128 END ELSE 0 END AS cr_short,
                CASE WHEN hit_long THEN prev_l ELSE 0 END AS cr_long
            FROM hits
        )
        SELECT k, day, band, count(*) AS calls, sum((NOT first)::INT) AS turns_after_first,
            sum(resent::INT) AS resent, sum(first::INT) AS conversations,
            sum(l - p0) AS history, sum(greatest(rd - p0, 0)) AS read,
            sum(greatest(rd + wr - p0, 0) - greatest(rd - p0, 0)) AS write,
            {
        ", ".join(
            f"sum(hit_{o}::INT) AS hits_{o}, "
            f"sum(CASE WHEN rd + wr > 0 AND rd >= cr_{o} THEN rd ELSE cr_{o} END) AS read_{o}, "
            f"sum(CASE WHEN rd + wr > 0 AND rd >= cr_{o} THEN wr "
            f"WHEN l >= minimum THEN l - cr_{o} ELSE 0 END) AS write_{o}"
            for o in ("short", "long")
        )
    },
            sum(l) AS input, max(l) AS input_max, min(start_time) AS first_call,
            max(start_time) AS last_call
        FROM cf GROUP BY k, day, band"""
    lt203 = f"""
        WITH base AS (
            SELECT hash(provider, model, coalesce(prefix_hashes[1], hash(prompt))) AS g,
                hash(provider, model, service, prompt) AS k, start_time,
                CAST(start_time AS DATE) AS day,
                CAST(floor(log2(input_tokens)) AS INTEGER) AS band, input_tokens AS inp,
                least(greatest(coalesce(cache_read_tokens, 0), 0), input_tokens) AS rd,
                greatest(least(coalesce(cache_write_tokens, 0), input_tokens
                    - least(greatest(coalesce(cache_read_tokens, 0), 0), input_tokens)), 0) AS wr,
                coalesce(cache_write_1h_tokens, 0) AS w1h_raw
            FROM {source}
            WHERE {window} AND input_tokens > 0 AND model IS NOT NULL
        ), ordered AS (
            SELECT *, least(w1h_raw, wr) AS w1h,
                (epoch_us(start_time) - lag(epoch_us(start_time)) OVER w) / 1e6 AS gap_prev,
                (lead(epoch_us(start_time)) OVER w - epoch_us(start_time)) / 1e6 AS gap_next,
                lead(rd) OVER w > 0 AS next_reads, lag(rd + wr) OVER w > 0 AS prev_cached
            FROM base WINDOW w AS (PARTITION BY g ORDER BY start_time)
        )
        SELECT k, day, band, count(*) AS calls, sum(inp) AS input, sum(rd) AS read,
            sum((wr > 0)::INT) AS writing_calls, sum(wr - w1h) AS write_5m,
            sum(w1h) AS write_1h,
            sum(CASE WHEN coalesce(next_reads AND gap_next <= 300, false) THEN 0
                ELSE wr - w1h END) AS wasted_5m,
            sum(CASE WHEN coalesce(next_reads AND gap_next <= 3600, false) THEN 0
                ELSE w1h END) AS wasted_1h,
            sum(CASE WHEN coalesce(gap_next <= 300, false) THEN w1h ELSE 0 END)
                AS write_1h_next_within_5m,
            sum(CASE WHEN coalesce(gap_prev > 300 AND gap_prev <= 3600, false) THEN rd ELSE 0 END)
                AS reads_after_mid_gap,
            sum(CASE WHEN coalesce(gap_prev > 300 AND gap_prev <= 3600 AND prev_cached, false)
                THEN wr - w1h ELSE 0 END) AS rewrites_after_mid_gap,
            min(start_time) AS first_call, max(start_time) AS last_call
        FROM ordered GROUP BY k, day, band"""
    lt401 = f"""
        SELECT provider, model, service, prompt, count(*) AS calls,
            count(total_cost) AS priced_calls, sum(total_cost) AS cost,
            count(accuracy) AS labelled, sum(accuracy) AS correct,
            min(start_time) AS first_call, max(start_time) AS last_call
        FROM {source}
        WHERE {window} AND prompt IS NOT NULL AND model IS NOT NULL
            AND NOT coalesce(is_error, false)
        GROUP BY ALL"""
    lt501 = f"""
        SELECT provider, model, service, action, prompt, count(*) AS calls,
            count(conversation_id) AS conversation_calls, count(total_cost) AS priced_calls,
            sum(coalesce(duration_ms, 0)) AS duration_sum_ms,
            sum((duration_ms >= 20000)::INT) AS long_calls, sum(total_cost) AS cost,
            sum(input_cost) AS input_cost, sum(cache_read_cost) AS cache_read_cost,
            sum(cache_write_cost) AS cache_write_cost,
            sum(coalesce(output_cost, 0) + coalesce(reasoning_cost, 0))
                FILTER (WHERE total_cost IS NOT NULL) AS output_cost,
            {", ".join(f"count(*) FILTER (WHERE hour(start_time) = {h}) AS h{h:02d}" for h in range(24))},
            min(start_time) AS first_call, max(start_time) AS last_call
        FROM {source}
        WHERE {window} AND model IS NOT NULL AND NOT coalesce(is_error, false)
            AND coalesce(service_tier, 'standard') IN ('standard', 'default')
        GROUP BY ALL"""
    lt502 = f"""
        WITH base AS (
            SELECT provider, model, service, prompt, input_fingerprint,
                coalesce(reasoning_effort, '') AS params, start_time, total_cost,
                coalesce(conversation_id, trace_id) AS session,
                coalesce(user_id, conversation_id, trace_id) AS requester
            FROM {source}
            WHERE {window} AND input_fingerprint IS NOT NULL AND model IS NOT NULL
                AND NOT coalesce(is_error, false)
        ), flagged AS (
            SELECT *, coalesce(
                (epoch_us(start_time) - lag(epoch_us(start_time)) OVER w) / 1e6 <= 3600
                AND session IS DISTINCT FROM lag(session) OVER w, false) AS rep
            FROM base WINDOW w AS (
                PARTITION BY provider, model, service, prompt, input_fingerprint, params
                ORDER BY start_time)
        )
        SELECT provider, model, service, prompt, input_fingerprint, params, count(*) AS calls,
            sum(rep::INT) AS repeats, sum(total_cost) FILTER (WHERE rep) AS repeat_cost,
            count(*) FILTER (WHERE rep AND total_cost IS NULL) AS repeat_unpriced,
            count(DISTINCT session) AS sessions, count(DISTINCT requester) AS users,
            min(start_time) AS first_call, max(start_time) AS last_call
        FROM flagged GROUP BY ALL HAVING sum(rep::INT) > 0"""
    lt503 = f"""
        WITH base AS (
            SELECT service, coalesce(conversation_id, 'trace:' || trace_id) AS session,
                coalesce('in:' || input_fingerprint,
                    CASE WHEN tool IS NOT NULL
                        THEN 'step:' || model || '/' || step_fingerprint END) AS rep,
                coalesce(total_cost, 0) AS cost, coalesce(is_error, false) AS err, start_time
            FROM {source}
            WHERE {window}
        ), per_session AS (
            SELECT service, session, count(*) AS calls, sum(cost) AS cost,
                count(*) FILTER (WHERE err AND cost > 0) AS failed_calls,
                sum(cost) FILTER (WHERE err) AS failed_cost, max(start_time) AS last_seen
            FROM base GROUP BY ALL
        ), loops AS (
            SELECT service, session, count(*) AS loops, sum(n - 1) AS repeated_calls,
                sum(waste) AS repeated_cost, max(n) AS max_repeats
            FROM (
                SELECT service, session, rep, count(*) AS n,
                    sum(cost) - arg_min(cost, start_time) AS waste
                FROM base WHERE rep IS NOT NULL GROUP BY ALL HAVING count(*) >= 3
            ) GROUP BY ALL
        )
        SELECT * FROM per_session LEFT JOIN loops USING (service, session)
        WHERE coalesce(loops, 0) > 0 OR failed_calls > 0"""
    return {
        "LT101": lt101,
        "LT201": lt201,
        "LT202": lt202,
        "LT203": lt203,
        "LT301": lt301,
        "LT401": lt401,
        "LT501": lt501,
        "LT502": lt502,
        "LT503": lt503,
    }


def run_duckdb_once(store_path: Path) -> dict[str, Any]:
    import duckdb

    files = f"{store_path}/calls/*/*.parquet"
    con = duckdb.connect()
    con.execute("SET preserve_insertion_order = false")
    rows = {}
    began = time.perf_counter()
    for code, sql in duckdb_sql(files).items():
        con.execute(f"CREATE OR REPLACE TEMP TABLE agg_{code} AS {sql}")
        rows[code] = con.execute(f"SELECT count(*) FROM agg_{code}").fetchone()[0]
    seconds = time.perf_counter() - began
    return {"seconds": seconds, "rows": rows, "duckdb": duckdb.__version__}


ONCE = {
    "audit": run_audit_once,
    "old": run_audit_once,
    "scan": run_scan_once,
    "duckdb": run_duckdb_once,
}


# -- the driver ---------------------------------------------------------------------------------


def measure(store: Path, what: str, old: Path | None = None) -> dict[str, Any]:
    """One contender in a fresh process: its figures, and the CPU seconds (user + system, all
    threads, start-up included), wall seconds and peak RSS of that process alone."""
    from _measure import run_child

    env = dict(os.environ)
    if what == "old":
        assert old is not None
        env["PYTHONPATH"] = os.pathsep.join([str(old), env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep
        )
    out, _, usage = run_child(
        [sys.executable, __file__, "--store", str(store), "--one", what], env=env
    )
    figures = json.loads(out.strip().splitlines()[-1])
    if what == "old" and Path(figures["code"]).resolve() != old.resolve():  # type: ignore[union-attr]
        raise SystemExit(f"--old {old}: the child imported llmtrace from {figures['code']}")
    figures.update(usage)
    return figures


def _old_commit(old: Path) -> str:
    from _measure import git_state

    commit, dirty = git_state(old)
    return commit + ("+dirty" if dirty else "")


def _median(values: list[dict[str, Any]], name: str) -> float:
    return round(statistics.median(v[name] for v in values), 2)


def main() -> None:
    from _measure import Report, add_json_argument

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=CONTENDERS, default=None)
    parser.add_argument("--old", type=Path, help="a checkout of earlier code to compare with")
    parser.add_argument("--one", choices=CONTENDERS, help=argparse.SUPPRESS)
    add_json_argument(parser)
    args = parser.parse_args()

    if args.one:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        figures = ONCE[args.one](args.store)
        after = resource.getrusage(resource.RUSAGE_SELF)
        figures["work_cpu_s"] = (after.ru_utime + after.ru_stime) - (
            usage.ru_utime + usage.ru_stime
        )
        print(json.dumps(figures, default=str))
        return

    chosen = args.only or [c for c in CONTENDERS if c != "old" or args.old is not None]
    if "old" in chosen and args.old is None:
        parser.error("--only old needs --old DIR")
    report = Report("audit", argv=sys.argv)
    runs: dict[str, list[dict[str, Any]]] = {what: [] for what in chosen}
    for i in range(args.runs):
        for what in chosen:
            figures = measure(args.store, what, args.old)
            runs[what].append(figures)
            print(
                f"run {i + 1} {what}: {figures['cpu_s']:.1f} CPU-s "
                f"({figures['work_cpu_s']:.1f} in the work), {figures['wall_s']:.1f} s wall, "
                f"peak {figures['peak_rss_mb']:,.0f} MB",
                file=sys.stderr,
                flush=True,
            )
    med = {
        what: {
            name: _median(values, name) for name in ("cpu_s", "wall_s", "peak_rss_mb", "work_cpu_s")
        }
        for what, values in runs.items()
    }
    peers = {
        "duckdb": "DuckDB SQL of the nine aggregate steps",
        "scan": "Polars scan of the columns the rules read",
    }
    baseline = "; ".join(
        f"{text}: {med[what]['cpu_s']:.1f} CPU-s, {med[what]['peak_rss_mb']:,.0f} MB"
        for what, text in peers.items()
        if what in med
    )
    for what in ("audit", "old"):
        if what not in runs:
            continue
        last = runs[what][-1]
        ratios = {
            f"over_{p}": round(med[what]["cpu_s"] / med[p]["cpu_s"], 2) for p in peers if p in med
        }
        result = f"{med[what]['cpu_s']:.1f} CPU-s (median of {args.runs})"
        if ratios:
            result += "; " + ", ".join(
                f"{r:.2f}× {name.removeprefix('over_').replace('duckdb', 'DuckDB')}"
                for name, r in ratios.items()
            )
        result += f"; {last['findings']} findings"
        code = "" if what == "audit" else f" at {_old_commit(args.old)} (--old)"
        other = "old" if what == "audit" else "audit"
        row_baseline = baseline
        if other in med:
            label = f"same audit at {_old_commit(args.old)}" if other == "old" else "this tree"
            row_baseline = f"{label}: {med[other]['cpu_s']:.1f} CPU-s, " + (
                f"{med[other]['peak_rss_mb']:,.0f} MB; {baseline}"
            )
        report.row(
            figure=f"**audit**, nine built-in rules, local engine{code}",
            size=f"{last['calls_in_window']:,} calls in the 7-day window ({args.store.name})",
            result=result,
            measure={**med[what], "peak_rss_mb": max(v["peak_rss_mb"] for v in runs[what])},
            baseline=row_baseline or None,
            runs=[
                {k: v[k] for k in ("cpu_s", "wall_s", "peak_rss_mb", "work_cpu_s")}
                for v in runs[what]
            ],
            by_rule=last["by_rule"],
            errors=last["errors"],
            **ratios,
        )
    extra = {what: runs[what] for what in runs if what not in ("audit", "old")}
    data = report.write(args.json)
    data["peers"] = extra
    if args.json:
        args.json.write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(json.dumps(data["rows"], indent=2, default=str))


if __name__ == "__main__":
    main()
