"""Where this process sits in a multi-process run, and `jax.distributed` set up from it.

Three sources, first match wins:
1. explicit flags (`--coordinator`, `--num-processes`, `--process-id`) for local runs;
2. TPU VMs (GKE TPU node pools, which set TPU_WORKER_HOSTNAMES): JAX detects the slice
   (and, with the MEGASCALE_* variables, the slices) itself;
3. JobSet on CPU/GPU pools: the coordinator is the JobSet's first pod by its DNS name,
   `<jobset>-<replicatedJob>-0-0.<subdomain>`; the process id is
   `JOB_INDEX * LAYERTAP_PROCESSES_PER_JOB + JOB_COMPLETION_INDEX` (one Job per slice).
No source: a single process, nothing to initialise.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass

from layertap.errors import LayerTapError

COORDINATOR_PORT = 8476
# Set by GKE on TPU VMs (and by JAX's TPU cluster detection); their presence means "let JAX detect".
TPU_ENV_KEYS = ("TPU_WORKER_HOSTNAMES", "MEGASCALE_COORDINATOR_ADDRESS", "TPU_WORKER_ID")


@dataclass(frozen=True)
class Distributed:
    source: str  # "flags", "jobset", "tpu" or "single"
    coordinator: str | None = None
    num_processes: int = 1
    process_id: int = 0

    def __str__(self) -> str:
        if self.source == "single":
            return "single process"
        if self.source == "tpu":
            return "TPU slice (JAX auto-detection)"
        return f"process {self.process_id}/{self.num_processes}, coordinator {self.coordinator} (from {self.source})"


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
    if "JOBSET_NAME" not in env:
        return None
    try:
        jobset, replicated_job = env["JOBSET_NAME"], env["REPLICATED_JOB_NAME"]
        per_job = int(env.get("LAYERTAP_PROCESSES_PER_JOB", "1"))
        total = int(env["LAYERTAP_NUM_PROCESSES"])
        process_id = int(env.get("JOB_INDEX", "0")) * per_job + int(env.get("JOB_COMPLETION_INDEX", "0"))
    except KeyError as missing:
        raise LayerTapError(f"JobSet environment: {missing.args[0]} is not set") from None
    except ValueError as error:
        raise LayerTapError(f"JobSet environment: {error}") from None
    if not 0 <= process_id < total:
        raise LayerTapError(f"JobSet environment: process id {process_id} is outside 0..{total - 1}")
    subdomain = env.get("LAYERTAP_SUBDOMAIN", jobset)
    port = env.get("LAYERTAP_COORDINATOR_PORT", str(COORDINATOR_PORT))
    coordinator = f"{jobset}-{replicated_job}-0-0.{subdomain}:{port}"
    return Distributed("jobset", coordinator, total, process_id)


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
    print(
        f"layertap: joined as {setup}: process {jax.process_index()} of {jax.process_count()}, "
        f"{jax.local_device_count()} of {jax.device_count()} devices here",
        file=sys.stderr,
        flush=True,
    )
