"""The worker's spec: a YAML or JSON document (a whole ActivationExtraction, its spec, or
just the job sections), with command-line flags on top, validated into a `WorkerSpec`."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from layertap.errors import LayerTapError
from layertap_api.resource import KIND, ActivationExtractionSpec
from layertap_api.spec import JobSpec, MeshSpec, WorkerSpec
from layertap_api.validation import explain

Model = TypeVar("Model", bound=BaseModel)


def read_spec_file(path: str | Path) -> dict[str, Any]:
    """The spec in a YAML file holding an ActivationExtraction or just its spec."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LayerTapError(f"{path}: no such config file") from None
    except IsADirectoryError:
        raise LayerTapError(f"{path} is a directory: --config takes a YAML or JSON file") from None
    except UnicodeDecodeError:
        raise LayerTapError(f"{path}: not a text file (not UTF-8): --config takes a YAML or JSON file") from None
    except OSError as error:
        raise LayerTapError(f"{path}: cannot read the config file ({error.strerror or error})") from None
    return parse_spec(text, str(path))


def parse_spec(text: str, source: str) -> dict[str, Any]:
    """A resource or its spec, as YAML or JSON (the operator passes it as JSON in LAYERTAP_SPEC)."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise LayerTapError(f"{source}: not valid YAML ({error})") from None
    if isinstance(document, dict) and document.get("kind", KIND) != KIND:  # another manifest: not its fields
        raise LayerTapError(f"{source}: kind {document['kind']!r} is not {KIND}: give an {KIND} or its spec")
    if isinstance(document, dict) and "spec" in document:
        document = document["spec"]
    if not isinstance(document, dict):
        raise LayerTapError(f"{source}: expected an ActivationExtraction or its spec (a mapping)")
    return document


def apply_overrides(raw: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Set "section.field" (or deeper, "prediction.sampling.seed") keys, camelCase as on the
    wire, whose value is not None; `raw` itself is left as it was."""
    merged = dict(raw)
    for dotted, value in overrides.items():
        if value is None:
            continue
        *sections, field = dotted.split(".")
        node = merged
        for section in sections:
            node[section] = dict(node.get(section) or {})
            node = node[section]
        node[field] = value
    return merged


def worker_spec(document: dict[str, Any], source: str, *, model_parallel: int | None = None) -> WorkerSpec:
    """What this worker runs. A document with `resources` is a whole resource spec and is
    validated as one (the workers run its job sections and `resources.mesh`); otherwise it
    holds the job sections only. `model_parallel` (--model-parallel) replaces the mesh."""
    if "resources" in document:
        spec = _validated(ActivationExtractionSpec, document, source).worker_spec()
    else:
        spec = WorkerSpec.model_validate(_validated(JobSpec, document, source).model_dump())
    if model_parallel is not None:
        mesh = _validated(MeshSpec, {"model": model_parallel}, "--model-parallel")
        spec = spec.model_copy(update={"mesh": mesh})
    return spec


def _validated(model: type[Model], raw: dict[str, Any], source: str) -> Model:
    try:
        return model.model_validate(raw)
    except ValidationError as error:
        raise LayerTapError(f"{source}: {explain(error, model)}") from None


def parse_layers(text: str) -> list[int]:
    """'10-23', '3,5,7' or '0-3,8' -> a list of layer indices."""
    layers: list[int] = []
    for part in text.split(","):
        first, dash, last = part.strip().partition("-")
        try:
            start, stop = int(first), int(last if dash else first)  # "3-" is no range: int("") fails
        except ValueError:
            raise LayerTapError(f"--layers {text!r}: expected e.g. 10-23 or 3,5,7") from None
        if stop < start:
            raise LayerTapError(f"--layers {text!r}: the range {part.strip()} is empty; write it low-high")
        layers.extend(range(start, stop + 1))
    return layers
