"""Audit time and peak memory on a store, against Polars scanning the same columns and the same
aggregations in DuckDB SQL over the same files, measured in the same run.

    python bench/gen_store.py --rows 10000000 --store /tmp/lt-10m      # once per size
    python bench/bench_audit.py --store /tmp/lt-10m --runs 3 --json /tmp/audit-10m.json

Three contenders, each in its own process (so peak RSS is its own), interleaved run by run so
machine noise hits them alike; medians are reported:

* ``audit``   - ``run_audit`` with the built-in rules (LT101, LT201, LT301) on the local engine,
  the default window (the 7 days before 2026-11-20; LT101 also reads the 7 before that);
* ``scan``    - Polars reading the columns each rule reads over its window, reduced per column
  (max of the value, string length or list length, so every value is decoded) - the I/O and
  decode floor under the audit;
* ``duckdb``  - the three aggregate steps written in DuckDB SQL over the same Parquet files
  (same filters, group keys, window functions and sums; see ``DUCKDB_SQL``), materialised into
  temporary tables. DuckDB is a benchmark-only dependency (``pip install duckdb``).

The DuckDB queries reproduce each rule's aggregate step: LT101's histogram cells; LT201's
system-prefix groups, deeper-prefix choice, per-group time ordering, cache replay and cell sums;
LT301's per-conversation turn numbering and least-squares fit, the budget policy and the
single-call cells and histograms. Not reproduced: LT301's summarise-every-N-turns policy
(positional shifts within a conversation) and the string-key join-back of both; ``decide``
(tiny tables) is not part of either side's comparison but is part of ``audit``.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

UNTIL = datetime(2026, 11, 20, tzinfo=UTC)
SINCE = UNTIL - timedelta(days=7)
BASELINE = SINCE - timedelta(days=7)
CONTENDERS = ("audit", "scan", "duckdb")


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


# -- the contenders (each runs in a fresh process) ----------------------------------------------


def run_audit_once(store_path: Path) -> dict[str, Any]:
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
    from llmtrace.rules import lt101_reasoning, lt201_caching, lt301_context
    from llmtrace.store import Store

    store = Store(store_path)
    plans = []
    for rule in (lt101_reasoning.RULE, lt201_caching.RULE, lt301_context.RULE):
        since = BASELINE if getattr(rule, "needs_baseline", False) else SINCE
        columns = list(dict.fromkeys([*rule.columns, "start_time"]))
        scan = store.scan(since, UNTIL).select(columns)
        plans.append(scan.select(_reduce(CALL_SCHEMA, c) for c in columns))
    began = time.perf_counter()
    pl.collect_all(plans)
    return {"seconds": time.perf_counter() - began}


def _ts(value: datetime) -> str:
    return f"TIMESTAMPTZ '{value.strftime('%Y-%m-%d %H:%M:%S')}+00'"


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
    return {"LT101": lt101, "LT201": lt201, "LT301": lt301}


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


ONCE = {"audit": run_audit_once, "scan": run_scan_once, "duckdb": run_duckdb_once}


# -- the driver ---------------------------------------------------------------------------------


def measure(store: Path, what: str) -> dict[str, Any]:
    """One contender in a fresh process: its figures and its own peak RSS."""
    out = subprocess.run(
        [sys.executable, __file__, "--store", str(store), "--one", what],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--only", nargs="*", choices=CONTENDERS, default=list(CONTENDERS))
    parser.add_argument("--one", choices=CONTENDERS, help=argparse.SUPPRESS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    if args.one:
        figures = ONCE[args.one](args.store)
        figures["peak_rss_gb"] = peak_rss_gb()
        print(json.dumps(figures, default=str))
        return

    runs: dict[str, list[dict[str, Any]]] = {what: [] for what in args.only}
    for i in range(args.runs):
        for what in args.only:
            figures = measure(args.store, what)
            runs[what].append(figures)
            print(
                f"run {i + 1} {what}: {figures['seconds']:.1f} s, "
                f"peak {figures['peak_rss_gb']:.2f} GB",
                file=sys.stderr,
                flush=True,
            )
    summary: dict[str, Any] = {"store": str(args.store), "runs": args.runs}
    for what, values in runs.items():
        summary[what] = {
            "median_seconds": round(statistics.median(v["seconds"] for v in values), 2),
            "median_peak_rss_gb": round(statistics.median(v["peak_rss_gb"] for v in values), 2),
            "max_peak_rss_gb": round(max(v["peak_rss_gb"] for v in values), 2),
            "last": values[-1],
        }
    if "audit" in summary:
        audit = summary["audit"]["median_seconds"]
        for peer in ("scan", "duckdb"):
            if peer in summary:
                summary[f"audit_over_{peer}"] = round(audit / summary[peer]["median_seconds"], 2)
    print(json.dumps(summary, indent=2, default=str))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()
