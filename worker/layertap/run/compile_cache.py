"""JAX's persistent compilation cache, kept where pods come and go: a restarted worker loads
the programs the last attempt compiled instead of compiling them again.

JAX reads and writes a local directory. Before the first compile, the stored entries are
fetched into it; after each new compile, the entries the store lacks are put there. JAX
writes entries from process 0 only (jax/_src/compiler.py), so process 0 uploads and every
process downloads. An entry's key covers the program, the devices, the compile options and
the JAX version, so a changed image or topology simply misses.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import jax
from jax.experimental.compilation_cache import compilation_cache

from layertap.humanize import plural
from layertap.io import open_store
from layertap_api.spec import OutputSpec

log = logging.getLogger(__name__)

CACHE_DIR_NAME = ".jax-cache"  # under the output, unless output.compilationCache names another place
ENTRY_SUFFIX = "-cache"  # JAX's entry files; anything else in its directory is bookkeeping
# A fixed path: JAX's cache keys include paths it derives from it (its XLA autotuning cache
# directory), so a directory of another name would never hit. Kept between local runs.
LOCAL_DIR = Path(tempfile.gettempdir()) / "layertap-jax-cache"


def cache_uri(output: OutputSpec) -> str | None:
    """Where this run keeps compiled programs; None: nowhere (output.compilationCache: off)."""
    if output.compilation_cache == "off":
        return None
    return output.compilation_cache or f"{output.uri.rstrip('/')}/{CACHE_DIR_NAME}"


class CompilationCache:
    def __init__(self, uri: str, writer: bool, local_dir: Path = LOCAL_DIR) -> None:
        self.uri, self.writer = uri, writer
        self.store = open_store(uri)
        self.local_dir = local_dir
        self._known: set[str] = set()  # entries the store has, or that were here before this run

    def enable(self) -> int:
        """Fetch the stored entries and point JAX at them; returns how many the store has."""
        self.local_dir.mkdir(parents=True, exist_ok=True)
        stored = {key for key in self.store.list("") if key.endswith(ENTRY_SUFFIX) and "/" not in key}
        here = {path.name for path in self.local_dir.glob(f"*{ENTRY_SUFFIX}")}
        for key in stored - here:
            partial = self.local_dir / f".{key}.partial"
            self.store.download(key, partial)
            os.replace(partial, self.local_dir / key)  # JAX never sees half a file
        self._known = stored | here
        compilation_cache.reset_cache()  # JAX settles its cache directory once per process
        jax.config.update("jax_compilation_cache_dir", str(self.local_dir))
        return len(stored)

    def save(self) -> int:
        """Put the entries the store lacks (process 0 only: the others have none of their own)."""
        if not self.writer:
            return 0
        new = [p for p in self.local_dir.glob(f"*{ENTRY_SUFFIX}") if p.name not in self._known]
        for path in new:
            try:
                self.store.create(path.name, path.read_bytes())  # create-if-absent: a racing writer's is as good
            except OSError as error:  # a full disk, say: the cache saves time, the run goes on without it
                log.warning("%s: the compiled program was not kept (%s); a restart compiles it again", self.uri, error)
                return 0
            self._known.add(path.name)
        return len(new)

    def close(self) -> None:
        jax.config.update("jax_compilation_cache_dir", None)
        compilation_cache.reset_cache()


def open_for_run(output: OutputSpec, process: int) -> CompilationCache | None:
    """The run's persistent compilation cache, fetched and enabled (None: output.compilationCache off)."""
    uri = cache_uri(output)
    if uri is None:
        return None
    cache = CompilationCache(uri, writer=process == 0)
    fetched = cache.enable()
    if process == 0:
        print(f"compilation cache {uri}: {plural(fetched, 'compiled program')} found", flush=True)
    return cache
