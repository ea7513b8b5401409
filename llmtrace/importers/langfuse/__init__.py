"""Import LLM calls from Langfuse's public API into the store: incremental, resumable, priced.

What is read, and why this way
------------------------------
* **Observations**: ``GET /api/public/v2/observations`` through the real ``langfuse`` SDK
  (``LangfuseAPI.observations.get_many``), one pass per observation type that carries usage
  (``GENERATION``, ``EMBEDDING``), cursor pagination at the largest page size (1000). The field
  groups asked for are exactly what a call record needs; ``trace_context`` brings the trace
  name, so no trace endpoint is needed. Servers without v2 observations (self-hosted Langfuse
  v3: HTTP 404) are read through the older page-based ``/api/public/observations`` and
  ``/api/public/traces`` instead (the SDK 5 no longer wraps them, so they are plain GETs).
* **Scores**: ``GET /api/public/v3/scores`` (SDK ``scores.get_many``), else the page-based
  ``/api/public/v2/scores``; numeric, boolean and categorical scores from an hour before the
  window's start on, each kept once by its id (page-based reads can repeat a row). They are
  read *before* the observations so a new call is written once, with its scores. Scores for
  calls stored by an earlier run (LLM-as-judge runs later; trace scores are added after the
  trace) are merged into those stored calls first, by ``Store.attach_scores``: the store's one
  update path, idempotent and crash-safe.
* **Prompts**: ``GET /api/public/v2/prompts?name=`` (SDK ``prompts.list``) and
  ``GET /api/public/v2/prompts/{name}?version=`` (``prompts.get``), only for the prompt
  versions the calls name, each read once and kept in the checkpoint (re-read when the
  prompt's ``lastUpdatedAt`` moves, e.g. a label moved): the version's labels (production,
  latest...), created time and tags there order prompt versions; its template gives
  ``template_fingerprint`` to calls whose own input gave none (io masked or not captured). A
  server without prompts is said once and the import goes on.

Mapping (Langfuse -> call record, Polars expressions; only fingerprinting is per row)
------------------------------------------------------------------------------------
traceId / id / parentObservationId -> trace_id / span_id / parent_span_id (kept as sent, hex
for OTel-ingested data); model -> model and request_model; provider: Langfuse does not record
it, so it is the provider genai-prices matches for the model; usageDetails -> tokens, by the
bucket table ``llmtrace.dialects.USAGE_JSON_BUCKETS`` (the same table the OTLP importer uses for
Langfuse-SDK spans): Langfuse's buckets are exclusive, the record is inclusive, so
``input_tokens = input + cache reads + cache writes`` and ``output_tokens = output +
reasoning``; costDetails ``total`` (else the sum of its keys) -> ``reported_cost``, then our
own prices; promptName@promptVersion -> prompt; traceName -> action; sessionId ->
conversation_id; userId, environment; level ERROR -> is_error; input/output -> fingerprints
(content kept only with ``keep_content``). Empty strings, which Langfuse sends for unset
fields, count as missing.

Scores -> accuracy, as ``llmtrace.accuracy`` defines it: a score counts when its name is one
of ``[accuracy] names`` (config); numeric values in 0..1 as they are, booleans as 1/0,
categories through ``[accuracy.categories]``. Observation scores attach to their observation,
trace scores to every call of the trace; ``accuracy`` is the mean of the counted scores,
``scores`` keeps them all.

Incremental and safe
--------------------
The checkpoint (``Store.write_state("langfuse-<host>")``, one entry per project key) holds a
*watermark* (every observation that started before it has been imported) and, while an import
runs, the window being read and the position after the last page that was fully stored (type
pass and cursor, or page number). A page is appended first, then the checkpoint moves past it,
so whatever stops the process (Ctrl-C, a crash, a dropped connection) the next run re-reads at
most the page it was on, and the store's idempotent append skips what was already written:
every observation is stored exactly once. The next window starts ``OVERLAP`` before the
watermark so observations ingested late (long calls, batching exporters) are still picked up.
Scores are merged into stored calls at the start of every window read, resumed ones included,
and a score a call already holds is not added again, so reruns add nothing. A score edited at
Langfuse (an annotator's correction, ``create_score(id=...)``) keeps its id, and the version read
replaces the one a call holds. Both score endpoints filter by the score's ``timestamp`` only
(no ``updatedAt`` filter), so an incremental run re-reads scores timestamped from an hour before
its window on: an edit of an older score is picked up by a rerun over its window (``--since``)
or by ``--scores-since`` (scores re-read further back than the observations), not by a plain
incremental run. The checkpoint
also keeps ``prompts``: per prompt its versions, labels, tags and ``lastUpdatedAt``, and per
version used its labels, created time, commit message and template fingerprint (no text).

Errors: 401/403 stop at once (wrong keys or host); 429 waits for ``Retry-After`` however long
it is (the SDK would cap it at 60 s, so SDK retries are off and this module retries);
5xx, 408, 409, timeouts and dropped connections retry with exponential backoff and then stop
with a message naming the request and the last problem; the checkpoint keeps what was stored.

Layout (one job per module): ``client`` (settings, retries, HTTP), ``paging`` (the run:
windows, pages, checkpoints), ``mapping`` (observations -> call records), ``scores``,
``prompts``, ``stats`` (results and progress hooks).
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> the submodule that defines it. Loaded on first use (PEP 562), so that
# ``llmtrace import langfuse --help`` and the modules that only need ``stats`` do not import the
# langfuse SDK and Polars (0.4 s of start-up, bench/bench_startup.py).
_EXPORTS = {
    "DEFAULT_HOST": "client",
    "LangfuseImportError": "client",
    "LangfuseSettings": "client",
    "RetryPolicy": "client",
    "checkpoint_name": "client",
    "retry_wait": "client",
    "OBSERVATION_TYPES": "mapping",
    "observations_to_calls": "mapping",
    "import_langfuse": "paging",
    "prompt_template_fingerprint": "prompts",
    "attach_scores": "scores",
    "scores_frame": "scores",
    "ImportReporter": "stats",
    "ImportStats": "stats",
}

__all__ = sorted(_EXPORTS, key=str.lower)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
