"""Which files of a Hugging Face dataset repository hold one split of one configuration.

Pure: the repository's file paths and its README metadata in, paths out. The rules are the
ones the `datasets` library reads a repository by:
1. the README's `configs` (what `push_to_hub` writes): the configuration `dataset.config`
   names (unset: the one marked `default: true`, else the one named `default`, else the only
   one), its `data_files` by split (glob patterns; a bare pattern or list is the train
   split), under its `data_dir`;
2. otherwise the file names, under the directory `dataset.config` when it is set (the layout
   of the Hub's parquet conversion, `refs/convert/parquet`: `CONFIG/SPLIT/0000.parquet`):
   `data/SPLIT-00000-of-00001.*` (any split name); else directories, then file names, that
   say train / validation / test (or training, dev, val, eval, ...); else every data file is
   the train split.
Hidden files and folders (`.x`, `__x`) and files that are not data are never part of a split.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from layertap.errors import LayerTapError

# What `datasets` can read as data; the reader later keeps the ones of `dataset.format`.
DATA_SUFFIXES = (".parquet", ".arrow", ".jsonl", ".json", ".csv", ".tsv", ".txt")
COMPRESSED = ("", ".gz", ".zst", ".bz2", ".xz")
SPLIT_KEYWORDS = {
    "train": ("train", "training"),
    "validation": ("validation", "valid", "dev", "val"),
    "test": ("test", "testing", "eval", "evaluation"),
}
_SEP = "[-._ 0-9]"  # what may stand between a split keyword and the rest of a name
_IN_DIR = ("{k}/**", "{k}" + _SEP + "*/**", "**/*" + _SEP + "{k}/**", "**/*" + _SEP + "{k}" + _SEP + "*/**")
_IN_NAME = ("**/{k}" + _SEP + "*", "**/*" + _SEP + "{k}" + _SEP + "*")
_SHARDED = re.compile(r"^data/(?P<split>\w+(?:\.\w+)*)-\d{5}-of-\d{5}[^/]*$")


def is_data_file(path: str) -> bool:
    hidden = any(part.startswith((".", "__")) for part in path.split("/"))
    return not hidden and path.endswith(tuple(s + c for s in DATA_SUFFIXES for c in COMPRESSED))


def split_files(paths: Iterable[str], metadata: dict | None, split: str, config: str | None, where: str) -> list[str]:
    """The files of `split` (sorted); an unknown split or configuration is a LayerTapError
    naming the field and what the repository has. `where` names the repository in messages."""
    splits = layout(paths, metadata, config, where)
    if split not in splits:
        of = f" (configuration {config})" if config else ""
        raise LayerTapError(f"dataset.split: {where}{of} has no split {split!r} (splits: {', '.join(splits)})")
    return splits[split]


def layout(paths: Iterable[str], metadata: dict | None, config: str | None, where: str) -> dict[str, list[str]]:
    """split -> its data files, splits in the order train, validation, test, then by name."""
    files = sorted(p for p in paths if is_data_file(p))
    if not files:
        raise LayerTapError(f"{where}: no data files ({', '.join(DATA_SUFFIXES)}) in the repository")
    configs = (metadata or {}).get("configs")
    if configs:
        chosen = _choose_config(configs, config, where)
        splits = _from_data_files(files, chosen.get("data_files"), chosen.get("data_dir"))
    else:
        if config is not None:
            base = f"{config.strip('/')}/"
            under = [f.removeprefix(base) for f in files if f.startswith(base)]
            if not under:
                tops = sorted({f.split("/", 1)[0] for f in files if "/" in f})
                raise LayerTapError(
                    f"dataset.config: {where} has no README configs and no directory {config!r} "
                    f"(its directories: {', '.join(tops) or 'none'})"
                )
            splits = {name: [base + f for f in found] for name, found in _by_file_names(under).items()}
        else:
            splits = _by_file_names(files)
    splits = {name: found for name, found in splits.items() if found}
    if not splits:
        raise LayerTapError(f"{where}: the README's data_files match no data file of the repository")
    return dict(sorted(splits.items(), key=lambda item: _split_order(item[0])))


def _choose_config(configs: list, config: str | None, where: str) -> dict:
    named = {str(c.get("config_name", "default")): c for c in configs if isinstance(c, dict)}
    if config is not None:
        if config not in named:
            raise LayerTapError(
                f"dataset.config: {config!r} is not a configuration of {where} (configs: {', '.join(named)})"
            )
        return named[config]
    marked = [c for c in named.values() if c.get("default")]
    if marked:
        return marked[0]
    if "default" in named:
        return named["default"]
    if len(named) == 1:
        return next(iter(named.values()))
    raise LayerTapError(
        f"dataset.config: {where} has configurations {', '.join(named)} and none is the default; choose one"
    )


def _from_data_files(files: list[str], data_files, data_dir: str | None) -> dict[str, list[str]]:
    """A configuration's `data_files` (a pattern, a list of them, or [{split, path}]) -> files."""
    base = f"{data_dir.strip('/')}/" if data_dir else ""
    if data_files is None:  # only a data_dir: the file-name rules below it
        under = [f.removeprefix(base) for f in files if f.startswith(base)]
        return {name: [base + f for f in found] for name, found in _by_file_names(under).items()}
    if isinstance(data_files, (str, list)) and not any(isinstance(entry, dict) for entry in _listed(data_files)):
        data_files = [{"split": "train", "path": data_files}]
    patterns: dict[str, list[str]] = {}
    for entry in _listed(data_files):
        if isinstance(entry, dict) and "split" in entry:
            patterns.setdefault(str(entry["split"]), []).extend(str(p) for p in _listed(entry.get("path", [])))
    return {name: _matching(files, [base + p.removeprefix("./") for p in found]) for name, found in patterns.items()}


def _by_file_names(files: list[str]) -> dict[str, list[str]]:
    sharded: dict[str, list[str]] = {}
    for f in files:
        match = _SHARDED.match(f)
        if match:
            sharded.setdefault(match["split"], []).append(f)
    if sharded:
        return sharded
    for rules in (_IN_DIR, _IN_NAME):
        found = {
            name: _matching(files, [rule.format(k=k) for k in keywords for rule in rules])
            for name, keywords in SPLIT_KEYWORDS.items()
        }
        if any(found.values()):
            return found
    return {"train": files}


def _matching(files: list[str], patterns: list[str]) -> list[str]:
    compiled = [glob_regex(p) for p in patterns]
    return [f for f in files if any(p.match(f) for p in compiled)]


def glob_regex(pattern: str) -> re.Pattern:
    """A glob over '/'-separated paths (`*`, `?`, `[...]`, `**` across folders) as a regex."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:[^/]*/)*")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[" and "]" in pattern[i + 2 :]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1 : end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body).replace("\\", "\\\\") + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + r"\Z")


def _listed(value) -> list:
    return value if isinstance(value, list) else [value]


def _split_order(name: str) -> tuple[int, str]:
    known = list(SPLIT_KEYWORDS)
    return (known.index(name) if name in known else len(known), name)
