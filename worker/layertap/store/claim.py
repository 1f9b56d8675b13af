"""Claiming an output for one run: the first attempt writes a document that says what the run
is; every later attempt (a resume) must describe the same run, or is refused naming what
differs. Extraction claims `run.json`, prediction `prediction.json`."""

from __future__ import annotations

import json
from collections.abc import Callable, Collection

from layertap.errors import LayerTapError
from layertap.io.store import Store
from layertap.store.index import read_json


def claim(
    store: Store,
    key: str,
    document: dict,
    what: str,
    described: str,
    compared: Callable[[dict], object] = lambda document: document,
) -> dict | None:
    """Write `key` unless it exists (returns None); if it does, return it when `compared` of it
    equals that of `document`, else refuse: "`store` already holds `what` with other inputs
    or settings". `described` names the document in a read error."""
    if store.create(key, json.dumps(document, indent=1, sort_keys=True).encode()) is None:
        return None
    old = read_json(store, key, described)
    if compared(old) != compared(document):
        changes = differences(compared(old), compared(document))
        shown = "; ".join(changes[:3]) + (f"; and {len(changes) - 3} more" if len(changes) > 3 else "")
        raise LayerTapError(
            f"{store.uri} already holds {what} with other inputs or settings: {shown}. {what.capitalize()} resumes "
            "only with the same model, data and settings: restore them, or write to a new output.uri"
        )
    return old


def refuse_foreign_files(store: Store, own: Collection[str], what: str) -> None:
    """Before a first claim: an output holding anything but `own` names (a checkpoint, a
    dataset, another tool's files) is refused rather than written into and mixed with.
    Hidden names are not counted: the worker's caches (.jax-cache, .hf-cache) are made there
    before the claim."""
    names = sorted(name for name in store.names(limit=100) - set(own) if not name.startswith("."))
    if names:
        shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
        raise LayerTapError(
            f"{store.uri} holds files that are not {what}'s ({shown}): write to a new or empty output.uri"
        )


def differences(old: object, new: object, path: str = "") -> list[str]:
    """What changed between two JSON values, as 'path: old -> new' (leaves only)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for key in sorted(old.keys() | new.keys()):
            name = f"[{json.dumps(key)}]" if "." in str(key) else (f".{key}" if path else str(key))
            out += differences(old.get(key), new.get(key), f"{path}{name}")
        return out
    if old == new:
        return []
    return [f"{path or 'meta'}: {_short_json(old)} -> {_short_json(new)}"]


def _short_json(value: object, limit: int = 60) -> str:
    text = json.dumps(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
