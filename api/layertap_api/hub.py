"""Hugging Face Hub references in a spec: `hf://ORG/NAME` or `hf://ORG/NAME@REVISION`.

A model.uri names a model repository; a dataset.uri a dataset repository (also written
`hf://datasets/ORG/NAME`, as huggingface_hub's file system does). The revision is a branch,
a tag or a commit sha; unset, the repository's default branch (main). Parsed here, in the
API, so that the operator refuses a malformed one at `kubectl apply` time and the worker
reads it back with the same rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

HF_SCHEME = "hf://"
RepoType = Literal["model", "dataset"]
# huggingface_hub's own rule (validate_repo_id): an optional namespace, then a name, each of
# letters, digits, '-', '_' and '.', without '--' or '..' and not ending in '.git'. ASCII
# classes only: the CRD's CEL rules (cel.py) use these patterns under RE2, which must read
# them as Python does.
_PART = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}"
_REPO_ID = re.compile(rf"^(?:{_PART}/)?{_PART}$")
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SPACE = " \t\n\r\f\v"  # what a revision may not hold (git refuses it too)
# The whole reference of each repository type, less the '--', '..' and '.git' rules below.
URI_PATTERNS = {
    repo_type: rf"^hf://{prefix}(?:{_PART}/)?{_PART}(?:@[^/{_SPACE}][^{_SPACE}]*)?$"
    for repo_type, prefix in (("model", ""), ("dataset", "(?:datasets/)?"))
}
DOUBLE_DASH_IN_REPO = r"^hf://[^@]*--"
GIT_SUFFIX = r"^hf://[^@]*[.]git(?:@|$)"
FORM = "hf://ORG/NAME or hf://ORG/NAME@REVISION (a branch, tag or commit sha)"


@dataclass(frozen=True)
class HubRef:
    """One repository of the Hub at one revision (None: its default branch)."""

    repo_id: str
    repo_type: RepoType
    revision: str | None = None

    @property
    def pinned(self) -> bool:
        """Whether the revision is a commit sha (the same files wherever and whenever it is read)."""
        return self.revision is not None and bool(_COMMIT.match(self.revision))

    def at(self, commit: str) -> HubRef:
        return HubRef(self.repo_id, self.repo_type, commit)

    def __str__(self) -> str:
        kind = "datasets/" if self.repo_type == "dataset" else ""
        return f"{HF_SCHEME}{kind}{self.repo_id}" + (f"@{self.revision}" if self.revision else "")


def is_hub(uri: str) -> bool:
    return uri.startswith(HF_SCHEME)


def parse_hub_uri(uri: str, repo_type: RepoType) -> HubRef:
    """`hf://ORG/NAME[@REVISION]` -> HubRef; a malformed one is a ValueError saying the form."""
    form = FORM
    if not is_hub(uri):
        raise ValueError(f"{uri!r} is not a Hugging Face Hub reference; expected {form}")
    repo_id, at, revision = uri[len(HF_SCHEME) :].partition("@")
    if repo_type == "dataset" and repo_id.count("/") == 2 and repo_id.startswith("datasets/"):
        repo_id = repo_id.removeprefix("datasets/")
    if not _REPO_ID.match(repo_id) or "--" in repo_id or ".." in repo_id or repo_id.endswith(".git"):
        raise ValueError(f"{uri!r}: {repo_id!r} is not a {repo_type} repository id; expected {form}")
    if at and (not revision or any(c in _SPACE for c in revision) or ".." in revision or revision.startswith("/")):
        # git refuses such names too; '..' would also climb out of the cache's refs/ folder
        raise ValueError(
            f"{uri!r}: the revision after '@' is empty, has spaces, '..' or a leading '/'; expected {form}"
        )
    return HubRef(repo_id, repo_type, revision or None)
