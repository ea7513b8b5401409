"""A loopback Langfuse public-API server for the importer tests.

It speaks the parts of Langfuse's API the importer and the real ``langfuse`` SDK use, with
responses shaped by Langfuse's OpenAPI spec (shared/research/langfuse-openapi.yml), except that
v2 observations carry ``model`` (what the server really sends) instead of the spec's
``providedModelName``:

* ``GET /api/public/v2/observations``: cursor pagination (``meta.cursor`` until the last page,
  then ``meta: {}``), ``startTime`` descending, field groups (unrequested groups absent),
  ``type`` / ``fromStartTime`` / ``toStartTime`` filters, ``limit`` up to 1000.
* ``GET /api/public/v3/scores``: cursor pagination, ``limit`` up to 100, ``fields=subject``.
* The older page-based reads a self-hosted Langfuse v3 has: ``GET /api/public/observations``,
  ``GET /api/public/traces`` and ``GET /api/public/v2/scores``.
* Prompts: ``GET /api/public/v2/prompts`` (``PromptMeta`` per name, page-based, ``name`` /
  ``label`` / ``tag`` filters, ``limit`` up to 100) and ``GET /api/public/v2/prompts/{name}``
  (``version`` or ``label``, default ``production``; the name URL-encoded, folders included).
  Like the real server (it returns the stored row) a prompt also carries ``id``,
  ``createdAt``, ``updatedAt``, ``projectId`` and ``createdBy``, which the spec leaves open.
  ``prompts_available=False`` answers both with 404, as a server without prompts does.
* HTTP Basic auth (401 otherwise), and scripted faults: a status with headers (429 with
  Retry-After, 500...) or a dropped connection, on chosen requests of a path.

Observations are kept in one internal shape (the v2 row with every group) and rendered per
endpoint. ``io`` values are kept as Python objects: v2 sends them as raw JSON strings, v1 as JSON.
"""

from __future__ import annotations

import base64
import functools
import json
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

PROJECT_ID = "proj-test"

# v2 field groups -> keys (ObservationV2 in the spec; "model" instead of "providedModelName").
FIELD_GROUPS: dict[str, tuple[str, ...]] = {
    "core": ("id", "traceId", "startTime", "endTime", "projectId", "parentObservationId", "type"),
    "basic": (
        "name",
        "level",
        "statusMessage",
        "version",
        "environment",
        "bookmarked",
        "public",
        "userId",
        "sessionId",
        "isRootObservation",
    ),
    "time": ("completionStartTime", "createdAt", "updatedAt"),
    "io": ("input", "output"),
    "metadata": ("metadata",),
    "model": ("model", "internalModelId", "modelParameters"),
    "usage": ("usageDetails", "costDetails", "totalCost", "usagePricingTierName"),
    "prompt": ("promptId", "promptName", "promptVersion"),
    "metrics": ("latency", "timeToFirstToken"),
    "trace_context": ("tags", "release", "traceName"),
}
# Always sent, null unless the model group is requested.
ALWAYS_PRICES = ("modelId", "inputPrice", "outputPrice", "totalPrice")


def iso(value: datetime) -> str:
    """Langfuse's timestamp format: millisecond precision, ``Z``."""
    return (
        value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{value.microsecond // 1000:03d}Z"
    )


def parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).astimezone(UTC)


def observation(
    id: str,
    trace_id: str,
    start: datetime,
    *,
    type: str = "GENERATION",
    model: str | None = "gpt-4o-mini",
    usage: dict[str, int] | None = None,
    cost: dict[str, float] | None = None,
    trace_name: str | None = "answer-question",
    session_id: str | None = None,
    user_id: str | None = None,
    prompt_name: str | None = None,
    prompt_version: int | None = None,
    input: Any = None,
    output: Any = None,
    level: str = "DEFAULT",
    environment: str = "default",
    parent_id: str | None = None,
    duration_s: float = 1.5,
    model_parameters: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One observation in the internal shape (every v2 group present)."""
    end = datetime.fromtimestamp(start.timestamp() + duration_s, UTC)
    cost = cost or {}
    return {
        "id": id,
        "traceId": trace_id,
        "startTime": iso(start),
        "endTime": iso(end),
        "projectId": PROJECT_ID,
        "parentObservationId": parent_id,
        "type": type,
        "name": f"{type.lower()}-{id}",
        "level": level,
        "statusMessage": "upstream error" if level == "ERROR" else "",
        "version": None,
        "environment": environment,
        "bookmarked": False,
        "public": False,
        "userId": user_id or "",
        "sessionId": session_id,
        "isRootObservation": parent_id is None,
        "completionStartTime": None,
        "createdAt": iso(start),
        "updatedAt": iso(end),
        "input": input,
        "output": output,
        "metadata": {},
        "model": model,
        "internalModelId": "cm-1" if model else None,
        "modelParameters": model_parameters or {},
        "usageDetails": usage or {},
        "costDetails": cost,
        "totalCost": cost.get("total", 0),
        "usagePricingTierName": "Standard" if cost else None,
        "promptId": f"prompt-{prompt_name}" if prompt_name else None,
        "promptName": prompt_name or "",
        "promptVersion": prompt_version,
        "latency": duration_s,
        "timeToFirstToken": None,
        "modelId": "cm-1" if model else None,
        "inputPrice": "0.00000015" if model else None,
        "outputPrice": "0.0000006" if model else None,
        "totalPrice": None,
        "tags": [],
        "release": None,
        "traceName": trace_name,
    }


def score(
    id: str,
    name: str,
    value: float | bool | str,
    *,
    trace_id: str,
    observation_id: str | None = None,
    timestamp: datetime,
    data_type: str | None = None,
    source: str = "EVAL",
) -> dict[str, Any]:
    """One score in the internal (v3) shape; the data type follows the value unless given."""
    if data_type is None:
        data_type = (
            "BOOLEAN"
            if isinstance(value, bool)
            else "CATEGORICAL"
            if isinstance(value, str)
            else "NUMERIC"
        )
    subject: dict[str, Any] = (
        {"kind": "observation", "id": observation_id, "traceId": trace_id}
        if observation_id
        else {"kind": "trace", "id": trace_id}
    )
    return {
        "id": id,
        "projectId": PROJECT_ID,
        "name": name,
        "dataType": data_type,
        "value": value,
        "source": source,
        "timestamp": iso(timestamp),
        "environment": "default",
        "createdAt": iso(timestamp),
        "updatedAt": iso(timestamp),
        "subject": subject,
    }


def prompt(
    name: str,
    version: int,
    template: str | list[dict[str, Any]],
    *,
    created: datetime,
    labels: tuple[str, ...] = (),
    tags: tuple[str, ...] = (),
    config: dict[str, Any] | None = None,
    commit_message: str | None = None,
) -> dict[str, Any]:
    """One prompt version in the internal shape: a chat prompt when ``template`` is a list of
    messages (``{"role", "content"}``, or ``{"name", "type": "placeholder"}``), else text."""
    chat = isinstance(template, list)
    messages = [
        m if m.get("type") == "placeholder" else {**m, "type": "chatmessage"}
        for m in (template if chat else [])
    ]
    return {
        "id": f"prompt-{name}-{version}",
        "type": "chat" if chat else "text",
        "prompt": messages if chat else template,
        "name": name,
        "version": version,
        "config": config or {},
        "labels": list(labels),
        "tags": list(tags),
        "commitMessage": commit_message,
        "resolutionGraph": None,
        "createdAt": iso(created),
        "updatedAt": iso(created),
        "projectId": PROJECT_ID,
        "createdBy": "API",
    }


@dataclass
class Fault:
    """A scripted failure: requests ``first``..``first+times-1`` (1-based) to ``path`` get it."""

    path: str
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)
    drop: bool = False
    # sent as it is instead of a JSON body (a truncated page, an HTML error page)
    raw: bytes | None = None
    first: int = 1
    times: int = 1

    def applies(self, path: str, count: int) -> bool:
        return path == self.path and self.first <= count < self.first + self.times


@dataclass
class LangfuseStub:
    """The server's data and behaviour; ``with stub.running() as url:`` serves it."""

    public_key: str = "pk-lf-test"
    secret_key: str = "sk-lf-test"
    v2: bool = True
    observations: list[dict[str, Any]] = field(default_factory=list)
    scores: list[dict[str, Any]] = field(default_factory=list)
    prompts: list[dict[str, Any]] = field(default_factory=list)
    prompts_available: bool = True
    faults: list[Fault] = field(default_factory=list)
    requests: list[tuple[str, dict[str, list[str]]]] = field(default_factory=list)
    responses: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()

    # -- serving ------------------------------------------------------------------------------

    def running(self) -> _Running:
        return _Running(self)

    def fail(self, path: str, **kwargs: Any) -> Fault:
        """Add a fault (see ``Fault``) and return it."""
        fault = Fault(path, **kwargs)
        self.faults.append(fault)
        return fault

    def edit_score(
        self, id: str, value: float | bool | str, *, at: datetime, timestamp: datetime | None = None
    ) -> None:
        """What ``create_score(id=...)`` (an upsert) or an annotator's correction does to a
        stored score: the value changes, ``updatedAt`` moves to ``at``; the score's
        ``timestamp`` (what ``fromTimestamp`` filters on) stays unless ``timestamp`` is given."""
        with self._lock:
            (row,) = [s for s in self.scores if s["id"] == id]
            row["value"] = value
            row["updatedAt"] = iso(at)
            if timestamp is not None:
                row["timestamp"] = iso(timestamp)

    def calls_to(self, path: str) -> list[dict[str, list[str]]]:
        """Query parameters of every request made to ``path`` so far."""
        return [params for p, params in self.requests if p == path]

    def handle(self, method: str, raw_path: str, auth: str | None) -> tuple[int, dict, Any]:
        """Route one request: (status, headers, body); body ``None`` means drop the connection."""
        url = urlsplit(raw_path)
        path, params = url.path, parse_qs(url.query)
        with self._lock:
            self.requests.append((path, params))
            self.counts[path] += 1
            count = self.counts[path]
        for fault in self.faults:
            if fault.applies(path, count):
                if fault.drop:
                    return 0, {}, None
                if fault.raw is not None:
                    return fault.status or 200, fault.headers, fault.raw
                body = fault.body or {"message": f"scripted {fault.status}"}
                return fault.status or 500, fault.headers, body
        if auth != _basic(self.public_key, self.secret_key):
            return 401, {}, {"message": "Invalid credentials. Confirm the host and keys."}
        routes = {
            "/api/public/v2/observations": self._v2_observations if self.v2 else None,
            "/api/public/v3/scores": self._v3_scores if self.v2 else None,
            "/api/public/observations": self._v1_observations,
            "/api/public/traces": self._v1_traces,
            "/api/public/v2/scores": self._v1_scores,
        }
        if self.prompts_available:
            routes["/api/public/v2/prompts"] = self._prompts_list
        route = routes.get(path)
        if self.prompts_available and path.startswith(_PROMPT_PREFIX):
            route = functools.partial(self._prompt_get, unquote(path[len(_PROMPT_PREFIX) :]))
        if method != "GET" or route is None:
            return 404, {}, {"message": "Not Found", "error": "LangfuseNotFoundError"}
        status, body = route(params)
        if status == 200:
            with self._lock:
                self.responses.append((path, body))
        return status, {}, body

    # -- v2 observations (cursor) -------------------------------------------------------------

    def _v2_observations(self, params: dict[str, list[str]]) -> tuple[int, Any]:
        limit = int(_one(params, "limit") or 50)
        if limit > 1000:
            return 400, {"message": "limit must be <= 1000"}
        groups = {g.strip() for g in (_one(params, "fields") or "core,basic").split(",")}
        unknown = groups - set(FIELD_GROUPS)
        if unknown:
            return 400, {"message": f"unknown field groups {sorted(unknown)}"}
        rows = self._select(params)
        cursor = _one(params, "cursor")
        if cursor:
            try:
                last = json.loads(base64.b64decode(cursor))
            except ValueError:
                return 400, {"message": "invalid cursor"}
            position = (last["lastStartTimeTo"], last["lastId"])
            rows = [r for r in rows if (r["startTime"], r["id"]) < position]
        page, more = rows[:limit], len(rows) > limit
        meta: dict[str, Any] = {}
        if more:
            tail = page[-1]
            token = {
                "lastStartTimeTo": tail["startTime"],
                "lastTraceId": tail["traceId"],
                "lastId": tail["id"],
            }
            meta["cursor"] = base64.b64encode(json.dumps(token).encode()).decode()
        return 200, {"data": [_render_v2(r, groups | {"core"}) for r in page], "meta": meta}

    def _select(self, params: dict[str, list[str]]) -> list[dict[str, Any]]:
        """Observations matching type and start-time filters, startTime descending."""
        kind = _one(params, "type")
        since, until = _one(params, "fromStartTime"), _one(params, "toStartTime")
        rows = [
            r
            for r in self.observations
            if (kind is None or r["type"] == kind) and _within(r["startTime"], since, until)
        ]
        return sorted(rows, key=lambda r: (r["startTime"], r["id"]), reverse=True)

    # -- v3 scores (cursor) -------------------------------------------------------------------

    def _v3_scores(self, params: dict[str, list[str]]) -> tuple[int, Any]:
        limit = int(_one(params, "limit") or 50)
        if limit > 100:
            return 400, {"message": "limit must be <= 100"}
        groups = {g for g in (_one(params, "fields") or "").split(",") if g}
        rows = self._scores_in(params)
        offset = int(base64.urlsafe_b64decode(_one(params, "cursor") or "MA==").decode())
        page = rows[offset : offset + limit]
        meta: dict[str, Any] = {"limit": limit}
        if offset + limit < len(rows):
            meta["cursor"] = base64.urlsafe_b64encode(str(offset + limit).encode()).decode()
        data = []
        for row in page:
            item = {k: v for k, v in row.items() if k != "subject"}
            if "subject" in groups:
                item["subject"] = row["subject"]
            data.append(item)
        return 200, {"data": data, "meta": meta}

    def _scores_in(self, params: dict[str, list[str]]) -> list[dict[str, Any]]:
        since, until = _one(params, "fromTimestamp"), _one(params, "toTimestamp")
        types = _one(params, "dataType")
        wanted = {t.strip().upper() for t in types.split(",")} if types else None
        rows = [
            s
            for s in self.scores
            if _within(s["timestamp"], since, until) and (wanted is None or s["dataType"] in wanted)
        ]
        return sorted(rows, key=lambda s: (s["timestamp"], s["id"]), reverse=True)

    # -- prompts -----------------------------------------------------------------------------

    def _prompts_list(self, params: dict[str, list[str]]) -> tuple[int, Any]:
        """``PromptMetaListResponse``: one entry per name over the versions that match."""
        limit = int(_one(params, "limit") or 10)
        if not 1 <= limit <= 100:
            return 400, {"message": "limit must be between 1 and 100"}
        name, label, tag = _one(params, "name"), _one(params, "label"), _one(params, "tag")
        names: dict[str, list[dict[str, Any]]] = {}
        for row in self.prompts:
            if (
                (name is None or row["name"] == name)
                and (label is None or label in row["labels"])
                and (tag is None or tag in row["tags"])
            ):
                names.setdefault(row["name"], []).append(row)
        metas = [_prompt_meta(rows) for _, rows in sorted(names.items())]
        rows, meta = self._page(params, metas)
        return 200, {"data": rows, "meta": meta}

    def _prompt_get(self, name: str, params: dict[str, list[str]]) -> tuple[int, Any]:
        """``Prompt``: the version asked for, else the one with the label (production)."""
        version, label = _one(params, "version"), _one(params, "label")
        if version and label:
            return 400, {"message": "Cannot specify both version and label"}
        for row in self.prompts:
            if row["name"] != name:
                continue
            if (version and row["version"] == int(version)) or (
                not version and (label or "production") in row["labels"]
            ):
                return 200, row
        wanted = f"with version {version}" if version else f"with label '{label or 'production'}'"
        return 404, {"message": f"Prompt not found: '{name}' {wanted}", "error": "NotFound"}

    # -- older page-based reads ---------------------------------------------------------------

    def _page(self, params: dict[str, list[str]], rows: list[Any]) -> tuple[list[Any], dict]:
        page = int(_one(params, "page") or 1)
        limit = int(_one(params, "limit") or 50)
        total_pages = (len(rows) + limit - 1) // limit
        meta = {"page": page, "limit": limit, "totalItems": len(rows), "totalPages": total_pages}
        return rows[(page - 1) * limit : page * limit], meta

    def _v1_observations(self, params: dict[str, list[str]]) -> tuple[int, Any]:
        rows, meta = self._page(params, self._select(params))
        return 200, {"data": [_render_v1(r) for r in rows], "meta": meta, "_deprecation": _DEPR}

    def _v1_traces(self, params: dict[str, list[str]]) -> tuple[int, Any]:
        since, until = _one(params, "fromTimestamp"), _one(params, "toTimestamp")
        first: dict[str, dict[str, Any]] = {}
        for obs in sorted(self.observations, key=lambda r: r["startTime"]):
            first.setdefault(obs["traceId"], obs)
        traces = [
            _render_trace(trace_id, obs)
            for trace_id, obs in first.items()
            if _within(obs["startTime"], since, until)
        ]
        traces.sort(key=lambda t: t["timestamp"], reverse=True)
        rows, meta = self._page(params, traces)
        return 200, {"data": rows, "meta": meta, "_deprecation": _DEPR}

    def _v1_scores(self, params: dict[str, list[str]]) -> tuple[int, Any]:
        rows, meta = self._page(params, self._scores_in(params))
        return 200, {"data": [_render_v1_score(s) for s in rows], "meta": meta}


_PROMPT_PREFIX = "/api/public/v2/prompts/"


def _prompt_meta(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """A ``PromptMeta`` of one prompt's versions: labels and tags over all, the newest config."""
    newest = max(rows, key=lambda r: r["version"])
    return {
        "name": newest["name"],
        "type": newest["type"],
        "versions": sorted(r["version"] for r in rows),
        "labels": sorted({label for r in rows for label in r["labels"]}),
        "tags": sorted({tag for r in rows for tag in r["tags"]}),
        "lastUpdatedAt": max(r["updatedAt"] for r in rows),
        "lastConfig": newest["config"],
    }


_DEPR = {
    "message": "Deprecated on Langfuse Cloud; use GET /api/public/v2/observations.",
    "replacement": "GET /api/public/v2/observations",
    "sunsetAt": "2026-11-16",
}


def _within(value: str, since: str | None, until: str | None) -> bool:
    """Whether a timestamp is in [since, until); an unreadable one (a test's bad row) is in."""
    try:
        moment = parse_iso(value)
    except ValueError:
        return True
    return (since is None or moment >= parse_iso(since)) and (
        until is None or moment < parse_iso(until)
    )


def _one(params: dict[str, list[str]], name: str) -> str | None:
    values = params.get(name)
    return values[0] if values else None


def _basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def _render_v2(row: dict[str, Any], groups: set[str]) -> dict[str, Any]:
    out: dict[str, Any] = dict.fromkeys(ALWAYS_PRICES)
    for group in groups:
        for key in FIELD_GROUPS[group]:
            value = row[key]
            if key in ("input", "output") and value is not None:
                value = json.dumps(value)  # v2 sends io as raw strings
            out[key] = value
    if "model" in groups:
        out.update({key: row[key] for key in ALWAYS_PRICES})
    return out


def _render_v1(row: dict[str, Any]) -> dict[str, Any]:
    """An ObservationsView: every Observation field plus the view's prices and costs."""
    usage = row["usageDetails"]
    cost = row["costDetails"]
    return {
        "id": row["id"],
        "traceId": row["traceId"],
        "type": row["type"],
        "name": row["name"],
        "startTime": row["startTime"],
        "endTime": row["endTime"],
        "completionStartTime": row["completionStartTime"],
        "model": row["model"],
        "modelParameters": row["modelParameters"],
        "input": row["input"],
        "version": row["version"],
        "metadata": row["metadata"],
        "output": row["output"],
        "usage": {
            "input": usage.get("input", 0),
            "output": usage.get("output", 0),
            "total": usage.get("total", sum(usage.values())),
            "unit": "TOKENS",
        },
        "level": row["level"],
        "statusMessage": row["statusMessage"],
        "parentObservationId": row["parentObservationId"],
        "promptId": row["promptId"],
        "usageDetails": usage,
        "costDetails": cost,
        "environment": row["environment"],
        "promptName": row["promptName"] or None,
        "promptVersion": row["promptVersion"],
        "modelId": row["modelId"],
        "inputPrice": float(row["inputPrice"]) if row["inputPrice"] else None,
        "outputPrice": float(row["outputPrice"]) if row["outputPrice"] else None,
        "totalPrice": None,
        "calculatedInputCost": cost.get("input"),
        "calculatedOutputCost": cost.get("output"),
        "calculatedTotalCost": cost.get("total"),
        "latency": row["latency"],
        "timeToFirstToken": row["timeToFirstToken"],
    }


def _render_trace(trace_id: str, first: dict[str, Any]) -> dict[str, Any]:
    """A TraceWithDetails built from the trace's first observation (trace attributes live on
    every observation in Langfuse's data model)."""
    return {
        "id": trace_id,
        "timestamp": first["startTime"],
        "name": first["traceName"],
        "sessionId": first["sessionId"],
        "release": None,
        "version": None,
        "userId": first["userId"] or None,
        "tags": [],
        "public": False,
        "environment": first["environment"],
        "htmlPath": f"/project/{PROJECT_ID}/traces/{trace_id}",
        "latency": -1,
        "totalCost": -1,
    }


def _render_v1_score(row: dict[str, Any]) -> dict[str, Any]:
    """A GetScoresResponseData (v2 scores endpoint): BOOLEAN as 1/0 plus "True"/"False"."""
    subject = row["subject"]
    value = row["value"]
    out = {
        "id": row["id"],
        "traceId": subject.get("traceId", subject["id"]),
        "observationId": subject["id"] if subject["kind"] == "observation" else None,
        "sessionId": None,
        "datasetRunId": None,
        "name": row["name"],
        "source": row["source"],
        "timestamp": row["timestamp"],
        "createdAt": row["createdAt"],
        "updatedAt": row["updatedAt"],
        "authorUserId": None,
        "comment": None,
        "metadata": {},
        "configId": None,
        "queueId": None,
        "environment": row["environment"],
        "dataType": row["dataType"],
    }
    if row["dataType"] == "BOOLEAN":
        out.update(value=1.0 if value else 0.0, stringValue="True" if value else "False")
    elif row["dataType"] == "CATEGORICAL":
        out.update(value=0.0, stringValue=value)
    elif row["dataType"] in ("TEXT", "CORRECTION"):
        out["stringValue"] = value
    else:
        out["value"] = float(value)
    return out


class _Handler(BaseHTTPRequestHandler):
    stub: LangfuseStub
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        status, headers, body = self.stub.handle(
            "GET", self.path, self.headers.get("Authorization")
        )
        if body is None:  # a dropped connection: no status line at all
            self.close_connection = True
            return
        payload = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        if "Content-Type" not in headers:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # keep pytest output clean
        return


class _Running:
    """Context manager: serve ``stub`` on 127.0.0.1 in a thread; yields the base URL."""

    def __init__(self, stub: LangfuseStub) -> None:
        self.stub = stub
        handler = type("Handler", (_Handler,), {"stub": stub})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    def __enter__(self) -> str:
        self.thread.start()
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def iter_pages(stub: LangfuseStub, path: str) -> Iterator[dict[str, Any]]:
    """The bodies the stub sent for ``path`` (for validating them against the spec)."""
    for p, body in stub.responses:
        if p == path:
            yield body
