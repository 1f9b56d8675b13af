"""hf:// sources: Hugging Face Hub models and datasets, resolved through huggingface_hub into
its cache and read from there as local files.

- The cache: HF_HUB_CACHE, else HF_HOME/hub, else ~/.cache/huggingface/hub, read each time a
  source is resolved. huggingface_hub locks each file while it downloads it, so hosts that
  share the cache (a volume every host of a run mounts, HF_HUB_CACHE pointed at it) download
  each file once: the first host fetches it, the others wait for it and read it.
- The Hub is asked once per source what the revision is and which files it has. With
  HF_HUB_OFFLINE=1, or when the Hub cannot be reached (then with a warning), only the cache is
  read, and the revision must be there; a source the cache lacks and the Hub cannot give is a
  LayerTapError naming it and what to do.
- Only what LayerTap reads is downloaded: a model's config, tokenizer and safetensors; a
  dataset's README (its configs) and the data files of the one split asked for.
- Identity: a dataset's files are named hf://datasets/ORG/NAME@COMMIT/PATH, the commit the
  revision resolved to, in errors, in each sample's provenance and in the run's identity (with
  their fingerprints); a model's files are fingerprinted by content like any checkpoint's.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from layertap.errors import LayerTapError
from layertap.io.hub_splits import split_files
from layertap.io.sources import Source, named_source
from layertap.io.store import open_store
from layertap_api.contract import (
    ENV_HF_HOME,
    ENV_HF_HUB_CACHE,
    ENV_HF_HUB_OFFLINE,
    ENV_HF_TOKEN,
    ENV_XDG_CACHE_HOME,
)
from layertap_api.hub import HubRef, RepoType, parse_hub_uri

log = logging.getLogger(__name__)

# A checkpoint's files LayerTap reads (layertap.model.checkpoint), at the repository's top level.
MODEL_FILES = (
    "config.json",
    "model.safetensors.index.json",
    "*.safetensors",
    "tokenizer*",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "chat_template.*",
)
TOP_LEVEL_ONLY = ("*/*",)  # no sub-folders (other formats, ONNX exports, original weights)
README = "README.md"


def hub_cache(env: Mapping[str, str] = os.environ) -> Path:
    """The cache huggingface_hub uses under `env` (its own rule, read now, not at import)."""
    if env.get(ENV_HF_HUB_CACHE):
        return Path(os.path.expandvars(env[ENV_HF_HUB_CACHE])).expanduser()
    home = env.get(ENV_HF_HOME) or os.path.join(env.get(ENV_XDG_CACHE_HOME) or "~/.cache", "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def offline(env: Mapping[str, str] = os.environ) -> bool:
    """HF_HUB_OFFLINE, read now (huggingface_hub reads it once, at its import)."""
    from huggingface_hub import constants

    return env.get(ENV_HF_HUB_OFFLINE, "").strip().upper() in ("1", "ON", "YES", "TRUE") or constants.HF_HUB_OFFLINE


@dataclass(frozen=True)
class Answer:
    """What the Hub said of a revision, or why it was not asked."""

    commit: str | None = None
    files: tuple[str, ...] = ()
    cache_only: str = ""  # why only the cache is read ("" when the Hub answered)


@dataclass(frozen=True)
class Snapshot:
    """A repository at one commit, as far as the cache holds it."""

    ref: HubRef  # as asked for
    commit: str  # what its revision resolved to
    path: Path  # the snapshot's folder in the cache

    def name(self, file: str) -> str:
        """hf://[datasets/]ORG/NAME@COMMIT/FILE: where a file came from, on any host."""
        return f"{self.ref.at(self.commit)}/{file}"


def model_dir(uri: str) -> Path:
    """The local folder of a model hf://ORG/NAME[@REVISION]: its config, tokenizer and
    safetensors, downloaded into the cache unless they are there (offline: only from it)."""
    ref = _parsed(uri, "model", "model.uri")
    snap = snapshot(ref, ask(ref), MODEL_FILES, TOP_LEVEL_ONLY)
    if not (snap.path / "config.json").is_file():
        raise LayerTapError(
            f"{uri}: no config.json at commit {snap.commit} (in {snap.path}); a model.uri must be a "
            "transformers checkpoint with safetensors weights"
        )
    return snap.path


def dataset_sources(uri: str, *, split: str, config: str | None, suffixes: tuple[str, ...], what: str) -> list[Source]:
    """The data files of one split of a dataset hf://ORG/NAME[@REVISION] with these suffixes,
    as sources named by repository and commit; only they (and the README) are downloaded."""
    ref = _parsed(uri, "dataset", "dataset.uri")
    answer = ask(ref)
    card = snapshot(ref, answer, (README,))  # resolves the revision (and records it in the cache's refs)
    if answer.cache_only:
        paths = _cached_files(card.path)
    else:  # the Hub's list, of the same commit (a branch may move between two questions)
        paths = list(answer.files if answer.commit == card.commit else ask(ref.at(card.commit)).files)
    where = str(ref) if ref.pinned else f"{ref} (commit {card.commit})"
    files = split_files(paths, _metadata(card), split, config, where)
    chosen = [f for f in files if f.endswith(suffixes)]
    if not chosen:
        shown = ", ".join(files[:5]) + (f" and {len(files) - 5} more" if len(files) > 5 else "")
        raise LayerTapError(
            f"dataset.format: split {split!r} of {where} has no {what} files ({', '.join(suffixes)}); "
            f"its files: {shown}"
        )
    data = snapshot(ref.at(card.commit), answer, tuple(_literal_pattern(f) for f in chosen))
    missing = [f for f in chosen if not (data.path / f).is_file()]
    if missing:
        detail = f"{len(missing)} of the split's files, e.g. {missing[0]}, are not there"
        raise LayerTapError(_not_cached(ref, answer.cache_only, detail))
    store = open_store(str(data.path))
    return [named_source(store, f, data.name(f)) for f in chosen]


def ask(ref: HubRef) -> Answer:
    """The revision's commit and files, from the Hub; offline or unreachable, why not."""
    if offline():
        return Answer(cache_only=f"{ENV_HF_HUB_OFFLINE} is set")
    from huggingface_hub import HfApi
    from huggingface_hub.utils import HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    with _explained(ref, ""):
        try:
            info = HfApi().repo_info(ref.repo_id, repo_type=ref.repo_type, revision=ref.revision)
        except (RepositoryNotFoundError, RevisionNotFoundError):
            raise
        except Exception as error:
            status = getattr(getattr(error, "response", None), "status_code", None)
            down = isinstance(error, HfHubHTTPError) and (status is None or status >= 500)
            if not (down or (_unreachable(error) and not isinstance(error, HfHubHTTPError))):
                raise
            first_line = str(error).splitlines()[0] if str(error) else ""
            why = f"the Hub cannot be reached ({type(error).__name__}: {first_line})"
            log.warning("%s: %s; reading the cache %s only", ref, why, hub_cache())
            return Answer(cache_only=why)
    return Answer(info.sha, tuple(sibling.rfilename for sibling in info.siblings or ()))


def snapshot(ref: HubRef, answer: Answer, allow: tuple[str, ...], ignore: tuple[str, ...] = ()) -> Snapshot:
    """The repository's files matching `allow` (and not `ignore`) in the cache, downloaded
    first unless only the cache may be read; errors say what is missing and what to do."""
    from huggingface_hub import snapshot_download

    with _explained(ref, answer.cache_only):
        folder = snapshot_download(
            ref.repo_id,
            repo_type=ref.repo_type,
            revision=ref.revision,
            cache_dir=hub_cache(),
            local_files_only=bool(answer.cache_only),
            allow_patterns=list(allow),
            ignore_patterns=list(ignore) or None,
        )
    return Snapshot(ref, Path(folder).name, Path(folder))


def _parsed(uri: str, repo_type: RepoType, field: str) -> HubRef:
    try:
        return parse_hub_uri(uri, repo_type)
    except ValueError as error:
        raise LayerTapError(f"{field}: {error}") from None


def _cached_files(root: Path) -> list[str]:
    """The files of a snapshot the cache holds (all the repository has, as far as it knows)."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) if root.is_dir() else []


def _metadata(snap: Snapshot) -> dict | None:
    """The README's YAML header (its `configs`), None without a README."""
    from huggingface_hub import metadata_load

    readme = snap.path / README
    if not readme.is_file():
        return None
    try:
        return metadata_load(readme)
    except Exception as error:
        raise LayerTapError(f"{snap.name(README)}: its YAML header cannot be read ({error})") from None


def _literal_pattern(path: str) -> str:
    """An allow pattern (fnmatch) that matches exactly `path`."""
    return re.sub(r"([*?\[])", r"[\1]", path)


@contextmanager
def _explained(ref: HubRef, cache_only: str) -> Iterator[None]:
    """huggingface_hub's errors as LayerTapErrors naming the reference and what to do."""
    from huggingface_hub.utils import (  # where every version since 0.24 exports them
        GatedRepoError,
        HfHubHTTPError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    try:
        yield
    except GatedRepoError:
        raise LayerTapError(
            f"{ref}: a gated repository; accept its conditions on huggingface.co and give the worker that "
            f"account's token ({ENV_HF_TOKEN}), or give a gs:// or local copy"
        ) from None
    except RepositoryNotFoundError:
        raise LayerTapError(
            f"{ref}: no such {ref.repo_type} repository on the Hub, or a private one the worker's token "
            f"({ENV_HF_TOKEN}) cannot read"
        ) from None
    except RevisionNotFoundError:
        raise LayerTapError(
            f"{ref}: the repository has no revision {ref.revision!r} (a branch, tag or commit sha)"
        ) from None
    except LocalEntryNotFoundError as error:
        incomplete = type(error).__name__ == "IncompleteSnapshotError"
        raise LayerTapError(_not_cached(ref, cache_only, "only part of it is there" if incomplete else "")) from None
    except HfHubHTTPError as error:
        status = getattr(getattr(error, "response", None), "status_code", None)
        raise LayerTapError(f"{ref}: the Hub answered {status} ({str(error).splitlines()[0]})") from None
    except ValueError as error:  # huggingface_hub's own check of an id or revision
        raise LayerTapError(f"{ref}: {error}") from None
    except OSError as error:
        if error.errno in (errno.EACCES, errno.EROFS, errno.ENOSPC, errno.EDQUOT):
            raise LayerTapError(
                f"{ref}: cannot write to the cache {hub_cache()} ({error.strerror}); set {ENV_HF_HUB_CACHE} to a "
                "writable folder with room for it"
            ) from None
        raise LayerTapError(_not_cached(ref, cache_only, f"{type(error).__name__}: {error}")) from None
    except Exception as error:
        if _unreachable(error):
            why = f"the Hub cannot be reached ({type(error).__name__}: {error})"
            raise LayerTapError(_not_cached(ref, why)) from None
        raise


def _not_cached(ref: HubRef, why: str, detail: str = "") -> str:
    """Not in the cache, and why the Hub could not give it: what to do."""
    revision = f" --revision {ref.revision}" if ref.revision else ""
    kind = " --repo-type dataset" if ref.repo_type == "dataset" else ""
    return (
        f"{ref}: not in the local cache {hub_cache()}{f' ({detail})' if detail else ''} and "
        f"{why or 'the Hub cannot be reached'}; set {ENV_HF_HUB_CACHE} to a cache that holds it "
        f"(`hf download {ref.repo_id}{kind}{revision}` where the Hub can be reached), or give a gs:// or local path"
    )


def _unreachable(error: BaseException) -> bool:
    """A network failure (httpx's errors are not OSErrors; the others are)."""
    library = type(error).__module__.split(".")[0]
    return isinstance(error, OSError) or library in ("httpx", "httpx2", "requests", "urllib3")
