"""Prompt versions the calls name: read once, kept in the checkpoint (labels, times, template
fingerprint; never the text), re-read when the prompt changes."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import polars as pl
import pydantic

from llmtrace import fingerprint
from llmtrace.importers.langfuse.client import LangfuseImportError, _BadRequest, _NotFound
from llmtrace.importers.langfuse.mapping import _snake

if TYPE_CHECKING:
    from llmtrace.importers.langfuse.paging import _Context


PROMPTS_PAGE_SIZE = 100  # the prompts list maximum


def prompt_template_fingerprint(kind: str | None, template: Any, config: Any = None) -> str | None:
    """A Langfuse prompt version's template fingerprint, computed by ``llmtrace.fingerprint``
    exactly as for a call's input: leading system messages plus tools.

    A chat prompt's messages are read as a call's input messages are (a placeholder, like any
    non-system message, ends the system part); a text prompt is read as the system message
    (where ``compile()`` output usually goes); tools come from ``config.tools`` when the prompt
    keeps them there. ``{{variables}}`` stay as written, so a call whose system message had
    them filled in fingerprints differently: that is why a call's own input wins.
    """
    tools = config.get("tools") if isinstance(config, Mapping) else None
    if kind == "text" or isinstance(template, str):
        messages = [{"role": "system", "content": str(template)}]
    elif isinstance(template, list):
        messages = [_template_message(m) for m in template]
    else:
        return None
    value = {"messages": messages, "tools": tools if isinstance(tools, list) else []}
    prompt = fingerprint.read_prompt({"langfuse.observation.input": value})
    return fingerprint.fingerprint(prompt)["template_fingerprint"] if prompt else None


def _template_message(message: Any) -> dict[str, Any]:
    """A chat prompt message as an input message; a placeholder (``{name, type}``) becomes a
    message of its own role, which ends the system part as the messages it stands for do."""
    if not isinstance(message, Mapping):
        return {"role": "user", "content": message}
    if message.get("type") == "placeholder" or "role" not in message:
        return {"role": "placeholder", "content": str(message.get("name") or "")}
    return {"role": message.get("role"), "content": message.get("content")}


def _apply_prompts(ctx: _Context, calls: pl.DataFrame) -> pl.DataFrame:
    """Fill ``template_fingerprint`` of calls whose input gave none from their prompt version's
    template; each version is read from the server once and then kept in the checkpoint."""
    pairs = (
        calls.filter(pl.col("prompt_name").is_not_null() & pl.col("prompt_version").is_not_null())
        .select("prompt_name", "prompt_version")
        .unique()
        .sort("prompt_name", "prompt_version")
    )
    if pairs.is_empty():
        return calls
    known = ctx.entry.setdefault("prompts", {})
    found = []
    for name, version in pairs.iter_rows():  # distinct prompt versions: a handful per page
        _ensure_prompt_version(ctx, name, version)
        cached = known.get(name, {}).get("by_version", {}).get(version) or {}
        found.append((name, version, cached.get("template_fingerprint")))
    table = pl.DataFrame(
        found,
        schema={"prompt_name": pl.String, "prompt_version": pl.String, "_prompt_fp": pl.String},
        orient="row",
    )
    return (
        calls.join(table, on=["prompt_name", "prompt_version"], how="left", maintain_order="left")
        .with_columns(
            pl.coalesce("template_fingerprint", "_prompt_fp").alias("template_fingerprint")
        )
        .drop("_prompt_fp")
    )


def _ensure_prompt_version(ctx: _Context, name: str, version: str) -> None:
    """Read a prompt version into the checkpoint unless it is there and still current."""
    if ctx.prompts_off or (name, version) in ctx.prompt_missing:
        return
    meta = _list_prompt(ctx, name)
    if meta is None:
        return
    cached = ctx.entry["prompts"][name]["by_version"].get(version)
    if cached is not None and cached.get("seen_update") == meta.get("last_updated_at"):
        return
    if not version.isdigit() or int(version) not in (meta.get("versions") or []):
        ctx.prompt_missing.add((name, version))
        ctx.notice_once(
            f"prompt:{name}@{version}",
            f"prompt {name!r} has no version {version} on the server (deleted?): its calls keep "
            "the fingerprint of their own input",
        )
        return
    _get_prompt_version(ctx, name, version, meta)


def _list_prompt(ctx: _Context, name: str) -> dict[str, Any] | None:
    """The prompt's metadata from the list endpoint, once per run, recorded in the checkpoint;
    versions already recorded are re-read if the prompt changed since (a label moved)."""
    if name in ctx.prompt_listed:
        return ctx.prompt_listed[name]
    ctx.prompt_listed[name] = None
    try:
        meta = _find_prompt_meta(ctx, name)
    except (_NotFound, _BadRequest, LangfuseImportError, pydantic.ValidationError) as exc:
        _prompts_unavailable(ctx, exc)
        return None
    if meta is None:
        ctx.notice_once(
            f"prompt:{name}",
            f"prompt {name!r} is not among the project's prompts (deleted?): its calls keep "
            "the fingerprint of their own input",
        )
        return None
    entry = ctx.entry.setdefault("prompts", {}).setdefault(name, {"by_version": {}})
    entry.update(
        {
            "type": meta.get("type"),
            "versions": sorted(meta.get("versions") or []),
            "labels": sorted(meta.get("labels") or []),
            "tags": sorted(meta.get("tags") or []),
            "last_updated_at": meta.get("last_updated_at"),
        }
    )
    ctx.prompt_listed[name] = meta
    for version, cached in list(entry["by_version"].items()):
        if cached.get("seen_update") != meta.get("last_updated_at") and not ctx.prompts_off:
            _get_prompt_version(ctx, name, version, meta)
    return meta


def _find_prompt_meta(ctx: _Context, name: str) -> dict[str, Any] | None:
    """``GET /api/public/v2/prompts?name=``, page by page, until the entry named ``name``."""
    page = 1
    while True:
        response = ctx.client.call(
            "GET /api/public/v2/prompts",
            lambda page=page: ctx.client.api.prompts.list(
                name=name, page=page, limit=PROMPTS_PAGE_SIZE, request_options=ctx.client.options
            ),
        )
        body = _sdk_dump(response)
        for item in body.get("data") or []:
            if isinstance(item, dict) and item.get("name") == name:
                return {_snake(k): v for k, v in item.items()}
        if page >= int(_sdk_dump(body.get("meta")).get("total_pages") or 0):
            return None
        page += 1


def _sdk_dump(model: Any) -> dict[str, Any]:
    """An SDK model (or its dump) as JSON values with snake_case top-level keys: the SDK's
    models dump under the API's camelCase names, their attributes are snake_case."""
    if isinstance(model, pydantic.BaseModel):
        model = pydantic.BaseModel.model_dump(model, mode="json")
    return {_snake(k): v for k, v in model.items()} if isinstance(model, dict) else {}


def _get_prompt_version(ctx: _Context, name: str, version: str, meta: dict[str, Any]) -> None:
    """Read one prompt version; record its labels, times and template fingerprint (never its
    text) in the checkpoint."""
    what = f"GET /api/public/v2/prompts/{name}?version={version}"
    try:
        prompt = ctx.client.call(
            what,
            lambda: ctx.client.api.prompts.get(
                quote(name, safe=""),  # folder prompts: "a/b" is one path segment
                version=int(version),
                request_options=ctx.client.options,
            ),
        )
    except (_NotFound, pydantic.ValidationError) as exc:
        ctx.prompt_missing.add((name, version))
        problem = "not found" if isinstance(exc, _NotFound) else "not readable"
        ctx.notice_once(f"prompt:{name}@{version}", f"{what}: {problem}; skipped")
        return
    except (_BadRequest, LangfuseImportError) as exc:
        _prompts_unavailable(ctx, exc)
        return
    data = _sdk_dump(prompt)
    ctx.entry["prompts"][name]["by_version"][version] = {
        "labels": sorted(data.get("labels") or []),
        "created_at": data.get("created_at"),  # not in the spec; the server sends it
        "updated_at": data.get("updated_at"),
        "commit_message": data.get("commit_message"),
        "template_fingerprint": prompt_template_fingerprint(
            data.get("type"), data.get("prompt"), data.get("config")
        ),
        "seen_update": meta.get("last_updated_at"),
    }
    ctx.stats.prompt_versions += 1


def _prompts_unavailable(ctx: _Context, exc: Exception) -> None:
    """No prompts from this server in this run; said once, and the import goes on."""
    ctx.prompts_off = True
    reason = "no prompts endpoint (HTTP 404)" if isinstance(exc, _NotFound) else str(exc)
    ctx.notice_once(
        "prompts",
        f"prompts are not available from {ctx.client.settings.host} ({reason}): calls keep the "
        "prompt name and version their observations carry, without the version's labels or "
        "template fingerprint",
    )
