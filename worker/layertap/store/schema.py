"""The shape of a run's index files, checked where they are read: a commit record, a
manifest or a sample sidecar that was damaged (by hand, by a tool, by a bug) is named as damaged
with what is wrong, never a Python error deep inside a resume, a finalize or a read.

Only the fields LayerTap reads are checked; others are let be. TypedDicts, not models:
pydantic checks the dicts as they are without building objects (a third of the time, which
shows at the ~31,000 entries of a manifest of a billion tokens)."""

from __future__ import annotations

from typing import Annotated, NotRequired

from pydantic import Field, StrictInt, StrictStr, StringConstraints, TypeAdapter, ValidationError
from typing_extensions import TypedDict  # pydantic's choice on Python < 3.12

from layertap.store import dtypes

Count = Annotated[StrictInt, Field(ge=0)]
# [unit id, first row, end row] of a unit's rows in the shard; the id is checked by _rows_damage
# (a union's error would name its members)
UnitRows = tuple[object, Count, Count]
Units = Annotated[list[UnitRows], Field(min_length=1)]
Shape = Annotated[list[Annotated[StrictInt, Field(gt=0)]], Field(min_length=1)]  # one row's, at a site
Shapes = dict[StrictStr, Shape]


class StatsEntry(TypedDict):
    key: StrictStr
    bytes: Count
    crc32c: StrictStr


class ShardFile(TypedDict):
    """One shard file: of a record of whole units, or one part of a split unit."""

    shard: StrictStr
    bytes: Count
    crc32c: StrictStr
    tokens: Count
    tensors: NotRequired[dict]  # tensor name -> CRC32C: one that is not a string fails its check when read


class _Rows(TypedDict):
    """Whose rows a shard (or a split unit) holds: a commit record's and a manifest entry's."""

    samples: StrictStr
    process_index: Count
    seq: Count
    tokens: Count
    units: Units
    stats: NotRequired[StatsEntry]


class CommitRecord(_Rows):
    """A commit record: one shard file's fields, or `parts` (a split unit's files)."""

    hidden_size: Count
    shard: NotRequired[StrictStr]
    bytes: NotRequired[Count]
    crc32c: NotRequired[StrictStr]
    tensors: NotRequired[dict]
    parts: NotRequired[Annotated[list[ShardFile], Field(min_length=1)]]
    shapes: NotRequired[Shapes]
    run: NotRequired[StrictStr]  # the run's identity (writer.run_identity)


class ManifestShard(ShardFile, _Rows):
    """A manifest's entry of one shard file (`part`: [k, of] of a split unit's)."""

    part: NotRequired[tuple[Count, Count]]


class Manifest(TypedDict):
    """What readers take from a manifest (`format` is checked before, by its reader)."""

    meta: dict
    layers: Annotated[list[Count], Field(min_length=1)]
    storage_dtype: StrictStr  # one of dtypes.NUMPY_DTYPES: checked by manifest_damage
    hidden_size: Count | None  # None: no shard committed yet
    num_tokens: Count
    shards: list[ManifestShard]
    sites: NotRequired[Annotated[list[StrictStr], Field(min_length=1)]]
    shapes: NotRequired[Shapes | None]
    statistics: NotRequired[StatsEntry | None]


class Sidecar(TypedDict):
    """A shard's sample sidecar: sample index (decimal) -> its provenance (a JSON object)."""

    samples: dict[Annotated[StrictStr, StringConstraints(pattern=r"^[0-9]+$")], dict]


_RECORD = TypeAdapter(CommitRecord)
_SIDECAR = TypeAdapter(Sidecar)
_MANIFEST = TypeAdapter(Manifest)


def record_damage(record: object) -> str:
    """What is wrong with a commit record ("" if nothing)."""
    try:
        _RECORD.validate_python(record)
    except ValidationError as error:
        return _first(error)
    if "parts" not in record:
        missing = [key for key in ("shard", "bytes", "crc32c") if key not in record]
        if missing:
            return f"no {', '.join(missing)}"
    elif len(record["units"]) != 1:
        return f"a split unit's record holds one unit, this one {len(record['units'])}"
    elif sum(part["tokens"] for part in record["parts"]) != record["tokens"]:
        return f"its parts hold {sum(p['tokens'] for p in record['parts'])} rows, its tokens say {record['tokens']}"
    return _rows_damage(record)


def manifest_damage(manifest: dict) -> str:
    """What is wrong with a manifest ("" if nothing)."""
    try:
        _MANIFEST.validate_python(manifest)
    except ValidationError as error:
        return _first(error)
    if manifest["storage_dtype"] not in dtypes.NUMPY_DTYPES:
        return f"storage_dtype: {manifest['storage_dtype']!r} is not one of {', '.join(dtypes.NUMPY_DTYPES)}"
    for i, entry in enumerate(manifest["shards"]):
        if why := _rows_damage(entry):
            return f"shards.{i}: {why}"
    return ""


def sidecar_damage(sidecar: dict) -> str:
    """What is wrong with a sample sidecar ("" if nothing)."""
    try:
        _SIDECAR.validate_python(sidecar)
    except ValidationError as error:
        return _first(error)
    return ""


def _rows_damage(entry: dict) -> str:
    """The units' rows follow each other from row 0 to the shard's last ("" if they do)."""
    row = 0
    for unit, first, end in entry["units"]:
        if isinstance(unit, bool) or not isinstance(unit, int | str):  # kept in sets and compared
            return f"unit {unit!r} is no unit id (an integer or a string)"
        if first != row or end < first:
            return f"unit {unit!r} has rows {first}..{end}, not from row {row}"
        row = end
    return "" if row == entry["tokens"] else f"its units hold {row} rows, its tokens say {entry['tokens']}"


def _first(error: ValidationError) -> str:
    """The problem in words: "no samples" (every field missing), or the first other one,
    "units.0.1: Input should be a valid integer"."""
    problems = error.errors(include_url=False)
    missing = [".".join(map(str, p["loc"])) for p in problems if p["type"] == "missing"]
    if missing:
        return f"no {', '.join(missing)}"
    where = ".".join(map(str, problems[0]["loc"]))
    return f"{where}: {problems[0]['msg']}" if where else problems[0]["msg"]
