"""JSON Schemas of what edgeft writes for other programs (``bundle.json``, ``bench.json``) and the small
validator the device runtime checks them with.

The schemas are standard JSON Schema (draft 2020-12; tests check them with the ``jsonschema`` package). The
runtime validates with the subset below instead of depending on ``jsonschema``, whose current releases
pull in ``rpds-py`` (compiled, Rust) and three more packages onto every device for one check.
"""
from __future__ import annotations

import re
from typing import Any

from edgeft_runtime.errors import BundleError

_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None),
          "integer": int, "number": (int, float)}

_SHA256 = {"type": "string", "pattern": "^[0-9a-f]{64}$"}
_NUM_OR_NULL = {"type": ["number", "null"]}
_SHAPE = {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 1}

BUNDLE_SCHEMA_VERSION = 1
BUNDLE_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://edgeft.dev/schemas/bundle-1.json",
    "title": "edgeft bundle.json",
    "type": "object",
    "required": ["schema_version", "name", "version", "target", "engine", "modality", "task", "inputs",
                 "outputs", "preprocessing", "labels", "runtime", "verification", "golden", "lineage", "files"],
    "properties": {
        "schema_version": {"const": BUNDLE_SCHEMA_VERSION},
        "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]*$"},
        "version": {"type": "string", "minLength": 1, "pattern": "^[^\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\ufeff]+$"},
        "target": {"type": "object", "required": ["name", "backend", "precision", "device"],
                   "properties": {"name": {"type": "string"}, "backend": {"type": "string"},
                                  "precision": {"enum": ["fp32", "fp16", "int8"]},
                                  "device": {"type": "object"}}},
        "engine": {"type": "object", "required": ["dir", "model_file", "runtime", "deferred"],
                   "properties": {"dir": {"type": "string"}, "model_file": {"type": "string"},
                                  "runtime": {"type": "string"}, "deferred": {"type": "boolean"},
                                  "session_options": {"type": "object"}}},
        "reference": {"type": ["object", "null"]},
        "modality": {"enum": ["text", "image"]},
        "task": {"enum": ["classification", "regression"]},
        "inputs": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["name", "dtype"],
            "properties": {"name": {"type": "string"}, "dtype": {"type": "string"},
                           "min": _SHAPE, "opt": _SHAPE, "max": _SHAPE}}},
        "outputs": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["name", "dtype"],
            "properties": {"name": {"type": "string"}, "dtype": {"type": "string"}}}},
        "preprocessing": {"type": "object", "required": ["type", "file"],
                          "properties": {"type": {"enum": ["tokenizer", "image"]}, "file": {"type": "string"},
                                         "max_length": {"type": "integer", "minimum": 1}}},
        "labels": {"type": "array", "items": {"type": "string"}},
        "runtime": {"type": "object", "required": ["distribution", "version", "wheel", "requirements", "dependencies"],
                    "properties": {"distribution": {"const": "edgeft-runtime"}, "version": {"type": "string"},
                                   "wheel": {"type": "string"}, "requirements": {"type": "string"},
                                   "dependencies": {"type": "array", "items": {"type": "string"}}}},
        "verification": {"type": "object", "required": ["verdict", "gates"],
                         "properties": {"verdict": {"enum": ["passed", "failed", "incomplete"]},
                                        "packaged_despite_failure": {"type": "boolean"},
                                        "accuracy": _NUM_OR_NULL, "baseline_accuracy": _NUM_OR_NULL,
                                        "top1_agreement": _NUM_OR_NULL, "p50_ms": _NUM_OR_NULL,
                                        "host": {"type": "object"}, "gates": {"type": "array"}}},
        "golden": {"type": "object", "required": ["inputs", "expected", "count", "tolerance"],
                   "properties": {"inputs": {"type": "string"}, "expected": {"type": "string"},
                                  "count": {"type": "integer", "minimum": 0},
                                  "tolerance": {"type": "object", "required": ["atol"],
                                                "properties": {"atol": {"type": "number", "minimum": 0}}}}},
        "lineage": {"type": "object", "required": ["run_manifest_sha256", "edgeft_version"],
                    "properties": {"run_manifest_sha256": _SHA256, "edgeft_version": {"type": "string"}}},
        "files": {"type": "array", "minItems": 1, "items": {
            "type": "object", "required": ["path", "sha256", "bytes"], "additionalProperties": False,
            "properties": {"path": {"type": "string", "minLength": 1}, "sha256": _SHA256,
                           "bytes": {"type": "integer", "minimum": 0}}}},
    },
}


def problems(value: Any, schema: dict, where: str = "") -> list[str]:
    """What in ``value`` breaks ``schema`` (the keywords used above), each naming the field."""
    out: list[str] = []
    name = where or "(top level)"
    if "const" in schema and value != schema["const"]:
        return [f"{name} must be {schema['const']!r} (found {value!r})"]
    if "enum" in schema and value not in schema["enum"]:
        return [f"{name} must be one of {schema['enum']} (found {value!r})"]
    types = schema.get("type")
    if types is not None:
        types = [types] if isinstance(types, str) else types
        ok = any(isinstance(value, _TYPES[t]) and not (t in ("integer", "number") and isinstance(value, bool))
                 for t in types)
        if not ok:
            return [f"{name} must be {' or '.join(types)} (found {type(value).__name__})"]
    if isinstance(value, str):
        if len(value) < schema.get("minLength", 0):
            out.append(f"{name} must not be empty")
        # fullmatch: JSON Schema patterns are searches, but every pattern here is anchored, and "$" would
        # let a trailing newline through
        if "pattern" in schema and not re.fullmatch(schema["pattern"].removeprefix("^").removesuffix("$"), value):
            out.append(f"{name} {value!r} does not match {schema['pattern']}")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and "minimum" in schema \
            and value < schema["minimum"]:
        out.append(f"{name} must be at least {schema['minimum']} (found {value})")
    if isinstance(value, list):
        if len(value) < schema.get("minItems", 0):
            out.append(f"{name} needs at least {schema['minItems']} item(s)")
        if "items" in schema:
            for i, item in enumerate(value):
                out += problems(item, schema["items"], f"{name}[{i}]" if where else f"[{i}]")
    if isinstance(value, dict):
        for key in schema.get("required", []):
            if key not in value:
                out.append(f"{where + '.' if where else ''}{key} is missing")
        props = schema.get("properties", {})
        for key, sub in props.items():
            if key in value:
                out += problems(value[key], sub, f"{where}.{key}" if where else key)
        if schema.get("additionalProperties") is False:
            out += [f"{where + '.' if where else ''}{k} is not a known field" for k in value if k not in props]
    return out


def validate(value: Any, schema: dict, what: str) -> None:
    """BundleError listing every problem, or nothing."""
    found = problems(value, schema)
    if found:
        raise BundleError(f"{what} does not match its schema: " + "; ".join(found[:8])
                          + (f" (and {len(found) - 8} more)" if len(found) > 8 else ""),
                          fix="make the bundle again with `edgeft package` (do not edit bundle.json by hand)")


_MS = {"type": "number", "minimum": 0}
_MS_OR_NULL = {"type": ["number", "null"], "minimum": 0}
BENCH_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "$id": "https://edgeft.dev/schemas/bench-1.json",
    "title": "edgeft bench.json",
    "type": "object",
    "required": ["schema_version", "source", "host", "versions", "settings", "engines", "results", "accuracy", "warnings"],
    "properties": {
        "schema_version": {"const": 1},
        "source": {"type": "object"},
        "host": {"type": "object", "required": ["cpu", "isa_class", "isa_flags", "cores"]},
        "versions": {"type": "object"},
        "settings": {"type": "object", "required": ["sweep", "rounds"]},
        "engines": {"type": "array", "items": {"type": "object", "required": ["name", "kind"]}},
        "results": {"type": "array", "items": {
            "type": "object",
            "required": ["engine", "batch", "seq", "threads", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms",
                         "throughput", "load_s", "cold_start_s", "peak_rss_mb", "file_bytes", "rounds_p50_ms", "round_cv"],
            "properties": {"engine": {"type": "string"}, "batch": {"type": "integer", "minimum": 1},
                           "seq": {"type": ["integer", "null"], "minimum": 1},
                           "threads": {"type": ["integer", "null"], "minimum": 0},
                           "p50_ms": _MS, "p90_ms": _MS, "p99_ms": _MS, "mean_ms": _MS, "std_ms": _MS,
                           "throughput": _MS_OR_NULL, "load_s": _MS, "cold_start_s": _MS_OR_NULL,
                           "peak_rss_mb": _MS_OR_NULL, "gpu_memory_mb": _MS_OR_NULL,
                           "file_bytes": {"type": ["integer", "null"], "minimum": 0},
                           "rounds_p50_ms": {"type": "array", "items": _MS, "minItems": 1},
                           "round_cv": _MS_OR_NULL}}},
        "accuracy": {"type": "array", "items": {
            "type": "object", "required": ["engine", "batch", "accuracy", "top1_agreement", "examples"],
            "properties": {"engine": {"type": "string"}, "batch": {"type": "integer", "minimum": 1},
                           "accuracy": {"type": ["number", "null"], "minimum": 0},
                           "top1_agreement": {"type": ["number", "null"], "minimum": 0},
                           "examples": {"type": "integer", "minimum": 0}}}},
        "warnings": {"type": "array", "items": {"type": "string"}},
    },
}
