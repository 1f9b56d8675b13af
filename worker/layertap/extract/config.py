"""The run's job spec: a YAML file (a whole ActivationExtraction or just its spec), with flags on top."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import yaml
from layertap_api.spec import JobSpec
from pydantic import ValidationError

from layertap.errors import LayerTapError

# the sections the worker runs, by their wire names
WORKER_SECTIONS = tuple(field.alias or name for name, field in JobSpec.model_fields.items())


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """The spec in a YAML file holding an ActivationExtraction or just its spec."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LayerTapError(f"{path}: no such config file") from None
    return parse_spec(text, str(path))


def parse_spec(text: str, source: str) -> dict[str, Any]:
    """A resource or its spec, as YAML or JSON (the operator passes it as JSON in LAYERTAP_SPEC)."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise LayerTapError(f"{source}: not valid YAML ({error})") from None
    if isinstance(document, dict) and "spec" in document:
        document = document["spec"]
    if not isinstance(document, dict):
        raise LayerTapError(f"{source}: expected an ActivationExtraction or its spec (a mapping)")
    return document


def worker_part(spec: dict[str, Any]) -> dict[str, Any]:
    """The sections the worker runs; cluster fields (resources, image, ...) are the operator's."""
    return {key: spec[key] for key in WORKER_SECTIONS if key in spec}


def mesh_model_axis(spec: dict[str, Any]) -> int | None:
    """resources.mesh.model of a full resource spec, if set."""
    mesh = (spec.get("resources") or {}).get("mesh") or {}
    return mesh.get("model")


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set "section.field" keys (camelCase, as on the wire) whose value is not None."""
    merged = {key: dict(value) if isinstance(value, dict) else value for key, value in raw.items()}
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, field = dotted.split(".")
        merged.setdefault(section, {})[field] = value
    return merged


def validate(raw: dict[str, Any], source: str) -> JobSpec:
    try:
        return JobSpec.model_validate(raw)
    except ValidationError as error:
        problems = "; ".join(
            f"{'.'.join(str(part) for part in issue['loc'])}: {issue['msg']}" for issue in error.errors()
        )
        raise LayerTapError(f"{source}: {problems}") from None


def default_layers(num_layers: int) -> list[int]:
    """The upper part of the model: 10-23 for a 24-layer model."""
    return list(range(math.floor(10 * num_layers / 24), num_layers))


def parse_layers(text: str) -> list[int]:
    """'10-23', '3,5,7' or '0-3,8' -> a list of layer indices."""
    layers: list[int] = []
    try:
        for part in text.split(","):
            first, _, last = part.strip().partition("-")
            layers.extend(range(int(first), int(last or first) + 1))
    except ValueError:
        raise LayerTapError(f"--layers {text!r}: expected e.g. 10-23 or 3,5,7") from None
    return layers
