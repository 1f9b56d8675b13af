"""Where this process sits in a multi-process run, and `jax.distributed` set up from it.

Three sources, first match wins:
1. explicit flags (`--coordinator`, `--num-processes`, `--process-id`) for local runs;
2. TPU VMs (GKE TPU node pools, which set TPU_WORKER_HOSTNAMES): JAX detects the slice
   (and, with the MEGASCALE_* variables, the slices) itself;
3. JobSet on CPU/GPU pools: the placement the operator wrote into the pod
   (`layertap_api.contract.Placement`): the coordinator is the JobSet's first pod by its
   DNS name, the process id `slice * processes per slice + host`.
No source: a single process, nothing to initialise.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from layertap.environment import worker_environment
from layertap.errors import LayerTapError

# Set by GKE on TPU VMs (and by JAX's TPU cluster detection); their presence means "let JAX detect".
# GKE injects these into TPU pods (the MEGASCALE_* ones are ours, not a sign of TPU VMs).
TPU_ENV_KEYS = ("TPU_WORKER_HOSTNAMES", "TPU_WORKER_ID")


@dataclass(frozen=True)
class Distributed:
    source: str  # "flags", "jobset", "tpu" or "single"
    coordinator: str | None = None
    num_processes: int = 1
    process_id: int = 0
    slice_id: int | None = None  # which slice (JobSet Job) this process is in

    def __str__(self) -> str:
        if self.source == "single":
            return "single process"
        if self.source == "tpu":
            return "TPU slice (JAX auto-detection)"
        where = f" in slice {self.slice_id}" if self.slice_id is not None else ""
        return (
            f"process {self.process_id}/{self.num_processes}{where}, coordinator {self.coordinator} "
            f"(from {self.source})"
        )


def from_flags(coordinator: str | None, num_processes: int | None, process_id: int | None) -> Distributed | None:
    given = [coordinator is not None, num_processes is not None, process_id is not None]
    if not any(given):
        return None
    if not all(given):
        raise LayerTapError("--coordinator, --num-processes and --process-id go together: give all three or none")
    if not 0 <= process_id < num_processes:
        raise LayerTapError(f"--process-id {process_id} is outside 0..{num_processes - 1}")
    return Distributed("flags", coordinator, num_processes, process_id)


def from_jobset_env(env: Mapping[str, str]) -> Distributed | None:
    placement = worker_environment(env).placement
    if placement is None:
        return None
    return Distributed(
        "jobset", placement.coordinator, placement.num_processes, placement.process_id, placement.slice_id
    )


def detect(
    coordinator: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    env: Mapping[str, str] | None = None,
) -> Distributed:
    env = os.environ if env is None else env
    explicit = from_flags(coordinator, num_processes, process_id)
    if explicit:
        return explicit
    if any(key in env for key in TPU_ENV_KEYS):
        return Distributed("tpu")  # GKE TPU pods also carry the JobSet env; JAX knows the slice better
    return from_jobset_env(env) or Distributed("single")


def initialize(setup: Distributed) -> None:
    """Join the run (before any other JAX call); the single-process case needs nothing."""
    import jax

    if setup.source == "single" or (setup.source != "tpu" and setup.num_processes == 1):
        return
    # Only the CPU backend reads this; it gives CPU processes real cross-process collectives.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if setup.source == "tpu":
        jax.distributed.initialize()
    else:
        jax.distributed.initialize(setup.coordinator, setup.num_processes, setup.process_id)


def report_joined(setup: Distributed) -> None:
    """Say where this process sits (after the device check: this starts JAX's backends)."""
    import jax

    if setup.source == "single":
        return
    print(
        f"layertap: joined as {setup}: process {jax.process_index()} of {jax.process_count()}, "
        f"{jax.local_device_count()} of {jax.device_count()} devices here",
        file=sys.stderr,
        flush=True,
    )
