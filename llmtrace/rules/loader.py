"""Finding rules: the built-in YAML pack, the Python logic of each built-in code, custom YAML rules.

A rule's identity, default parameters and documentation live in YAML (``rules/<CODE>.yaml``,
installed as ``llmtrace._rulepack``) so that ``llmtrace rules`` and ``--explain`` read the same
text the engine runs with, and users write their own rules in the same format. The Python logic
of a built-in code is found through ``BUILTIN_MODULES``, the one table mapping code → module.

Every problem with a rule file raises ``ConfigError`` naming the file and the field, so the engine
can report that one rule and still run the others.
"""

from __future__ import annotations

import glob
import importlib
import importlib.resources
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

import yaml

from llmtrace.config import Config, ConfigError
from llmtrace.rules.base import SEVERITIES, Rule, RuleDoc, RuleSpec

RULEPACK = "llmtrace._rulepack"

# Code → module holding the rule's logic (a module-level ``RULE`` following the Rule protocol).
BUILTIN_MODULES: dict[str, str] = {
    "LT101": "llmtrace.rules.lt101_reasoning",
    "LT201": "llmtrace.rules.lt201_caching",
    "LT202": "llmtrace.rules.lt202_history",
    "LT203": "llmtrace.rules.lt203_unread_writes",
    "LT301": "llmtrace.rules.lt301_context",
    "LT401": "llmtrace.rules.lt401_rightsizing",
    "LT501": "llmtrace.rules.lt501_batch",
    "LT502": "llmtrace.rules.lt502_duplicates",
    "LT503": "llmtrace.rules.lt503_agent_loops",
}

CODE_PATTERN = re.compile(r"^[A-Z]{1,4}[0-9]{1,4}$")
_SPEC_FIELDS = {"code", "name", "summary", "severity", "params", "doc"}

Origin = Literal["built-in", "custom"]


@dataclass(frozen=True)
class RuleEntry:
    """A rule ready to run: its YAML spec, its logic, and where it came from."""

    spec: RuleSpec
    rule: Rule
    origin: Origin
    source: str


# -- reading YAML --------------------------------------------------------------------------------


def read_yaml(text: str, source: str) -> dict[str, Any]:
    """Parse one rule file; anything but a YAML mapping is a ConfigError naming ``source``."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{source}:{where} not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a rule file must be a YAML mapping (code, name, ...)")
    return data


def _text(data: Mapping[str, Any], name: str, source: str, *, required: bool = True) -> str:
    value = data.get(name)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{source}: field '{name}' must be a non-empty string")
    return value.strip() if name not in {"what", "why", "fix", "example"} else value.rstrip()


def parse_spec(
    data: Mapping[str, Any], source: str, *, extra_fields: frozenset[str] = frozenset()
) -> RuleSpec:
    """Validate a rule file's common fields (code, name, summary, severity, params, doc)."""
    unknown = sorted(set(data) - _SPEC_FIELDS - extra_fields)
    if unknown:
        raise ConfigError(
            f"{source}: unknown field(s) {', '.join(map(repr, unknown))} "
            f"(expected: {', '.join(sorted(_SPEC_FIELDS | extra_fields))})"
        )
    code = _text(data, "code", source)
    if not CODE_PATTERN.match(code):
        raise ConfigError(f"{source}: field 'code' must look like LT101 or X100, not {code!r}")
    severity = data.get("severity", "medium")
    if severity not in SEVERITIES:
        raise ConfigError(
            f"{source}: field 'severity' must be one of {', '.join(SEVERITIES)}, not {severity!r}"
        )
    params = data.get("params") or {}
    if not isinstance(params, dict) or not all(isinstance(k, str) for k in params):
        raise ConfigError(f"{source}: field 'params' must be a mapping of names to values")
    doc = data.get("doc")
    if not isinstance(doc, dict):
        raise ConfigError(f"{source}: field 'doc' must be a mapping with what, why and fix")
    unknown_doc = sorted(set(doc) - {"what", "why", "fix", "example"})
    if unknown_doc:
        raise ConfigError(f"{source}: unknown field(s) in 'doc': {', '.join(unknown_doc)}")
    return RuleSpec(
        code=code,
        name=_text(data, "name", source),
        summary=_text(data, "summary", source),
        params=dict(params),
        doc=RuleDoc(
            what=_text(doc, "what", f"{source}: doc"),
            why=_text(doc, "why", f"{source}: doc"),
            fix=_text(doc, "fix", f"{source}: doc"),
            example=_text(doc, "example", f"{source}: doc", required=False),
        ),
        default_severity=severity,
    )


# -- built-in rules ------------------------------------------------------------------------------


def builtin_specs() -> dict[str, RuleSpec]:
    """Every rule file of the built-in pack, by code (files that fail to parse raise).

    Read once per process: the pack is part of the installed package, and parsing its nine
    YAML files took 0.35-0.40 CPU-s, twice in every audit (the catalogue, then LT101's
    default severity), measured on the 10M store's audit (issue 15). A new dict each call.
    """
    return dict(_builtin_specs())


@cache
def _builtin_specs() -> dict[str, RuleSpec]:
    specs: dict[str, RuleSpec] = {}
    for resource in sorted(importlib.resources.files(RULEPACK).iterdir(), key=lambda r: r.name):
        if not resource.name.endswith((".yaml", ".yml")):
            continue
        source = f"rules/{resource.name}"
        spec = parse_spec(read_yaml(resource.read_text(encoding="utf-8"), source), source)
        if spec.code in specs:
            raise ConfigError(f"{source}: code {spec.code} is declared twice in the rule pack")
        specs[spec.code] = spec
    return specs


def builtin_logic(code: str) -> Rule:
    """The ``RULE`` object of a built-in code (ImportError/LookupError when it is missing)."""
    module_name = BUILTIN_MODULES.get(code)
    if module_name is None:
        raise LookupError(f"{code}: no logic module registered in BUILTIN_MODULES")
    module = importlib.import_module(module_name)
    rule = getattr(module, "RULE", None)
    if rule is None:
        raise LookupError(f"{code}: {module_name} has no RULE")
    return rule


# -- custom rules --------------------------------------------------------------------------------


def custom_rule_files(config: Config) -> tuple[list[Path], list[str]]:
    """Files named by ``[rules] custom`` (globs relative to the config file) and pattern errors."""
    patterns = config.section("rules").get("custom", [])
    if isinstance(patterns, str):
        patterns = [patterns]
    if not isinstance(patterns, list) or not all(isinstance(p, str) for p in patterns):
        raise ConfigError(f"{config.path}: [rules] custom must be a list of file patterns")
    files: list[Path] = []
    errors: list[str] = []
    for pattern in patterns:
        resolved = str(config.resolve_path(pattern))
        matched = sorted(Path(p) for p in glob.glob(resolved, recursive=True))
        if not matched:
            errors.append(f"{config.path}: [rules] custom pattern {pattern!r} matches no file")
        files.extend(p for p in matched if p not in files)
    return files, errors


def load_custom_rules(config: Config) -> tuple[list[RuleEntry], list[tuple[str, str]]]:
    """Custom rule entries and ``(source, message)`` errors for files that could not be loaded."""
    from llmtrace.rules.custom import load_custom_rule  # custom imports this module

    files, pattern_errors = custom_rule_files(config)
    errors = [(str(config.path), message) for message in pattern_errors]
    entries: list[RuleEntry] = []
    for path in files:
        try:
            spec, rule = load_custom_rule(path)
        except ConfigError as exc:
            errors.append((str(path), str(exc)))
            continue
        entries.append(RuleEntry(spec=spec, rule=rule, origin="custom", source=str(path)))
    return entries, errors
