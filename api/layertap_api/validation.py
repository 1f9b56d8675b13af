"""Validation errors a user can act on: each problem as `field.path: what is wrong`, and an
unknown key named with the nearest valid one (a misspelled section must never be ignored)."""

from __future__ import annotations

import difflib
import types
import typing

from pydantic import BaseModel, ValidationError


def explain(error: ValidationError, model: type[BaseModel]) -> str:
    """The problems of `error` (raised validating `model`), joined by '; '."""
    return "; ".join(_problem(issue, model) for issue in error.errors())


def _problem(issue: dict, model: type[BaseModel]) -> str:
    path = ".".join(str(part) for part in issue["loc"])
    if issue["type"] == "value_error":  # our validators' messages: they name their field
        return _located(issue["loc"], issue["msg"].removeprefix("Value error, "))
    if issue["type"] != "extra_forbidden":
        return f"{path}: {issue['msg']}"
    *parent, key = issue["loc"]
    valid = _field_names(model, parent)
    if not valid:
        return f"{path}: unknown field"
    near = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.6)
    hint = f"did you mean {near[0]}? " if near else ""
    return f"{path}: unknown field, {hint}(valid here: {', '.join(valid)})"


def _field_names(model: type[BaseModel], loc: list) -> list[str]:
    """The wire names of the fields of the model found at `loc` inside `model`."""
    current: type[BaseModel] | None = model
    for part in loc:
        if current is None:
            return []
        if isinstance(part, int):
            continue  # a list item: the model of the list's items, already unwrapped
        fields = {field.alias or name: field for name, field in current.model_fields.items()}
        field = fields.get(str(part))
        current = _model_in(field.annotation) if field else None
    return [] if current is None else [field.alias or name for name, field in current.model_fields.items()]


def _model_in(annotation) -> type[BaseModel] | None:
    """The BaseModel inside an annotation such as `X`, `X | None` or `list[X]`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) in (typing.Union, list):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _located(loc: tuple, message: str) -> str:
    """`message` under its field's path; a model's rule names its field itself (`dataset.split:
    ...` raised at loc `dataset`, `workloadPriorityClassName: ...` at the top), so no repeat."""
    if not loc:
        return message
    *parent, last = map(str, loc)
    if message.startswith((f"{last}.", f"{last}:")):
        return ".".join([*parent, message])
    return f"{'.'.join([*parent, last])}: {message}"
