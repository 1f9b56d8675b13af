"""The pre-flight estimate: what a run will take, before its first step (docs/estimate.md).

The cost model, stated: FLOPs are counted for what the step computes, padding included:
per block, 2 FLOPs per weight per position (q/k/v/o and the MLP) plus the attention
products over the keys the block-causal kernel visits (queries in blocks of 128 against
the keys up to each block's end). Compute time is FLOPs / (devices x throughput): on TPU
and GPU an ACCELERATOR_EFFICIENCY (MFU) of the chip's dense bfloat16 peak (the catalog's
data sheet figure), measured on GPU and assumed on TPU; on CPU the throughput measured here
per core (docs/benchmarks.md).
Transfer time is the bytes that cross from the devices to their hosts (the compact outputs:
stored entries and their spare room) / (devices x each device's link); write time is the
stored bytes / (hosts x write bandwidth). The three overlap (the next step computes while
earlier ones cross and are written), so the run takes the longest, and that one is its
bound. Pure.
"""

from __future__ import annotations

from dataclasses import dataclass

from layertap.humanize import plural
from layertap.model.attention import QUERY_BLOCK
from layertap_api.catalog import ACCELERATORS
from layertap_api.status import Estimate

# Share of the dense bf16 peak the extraction forward reaches, by accelerator kind. GPU:
# measured on one H200 (bf16, cuDNN attention, layers 10-23 of Qwen2.5-0.5B, T=2048, B=16;
# issue 30), used for every GPU. TPU: assumed until measured.
ACCELERATOR_EFFICIENCY = {"gpu": 0.378, "tpu": 0.40}
# Measured on 2 Zen 4 cores (docs/benchmarks.md, forward pass, T=512-2048): float32 175-181
# GFLOP/s, bfloat16 318-337 GFLOP/s (its dots on the CPU's bf16 instructions, avx512_bf16).
CPU_TFLOPS_PER_CORE = {"float32": 0.085, "bfloat16": 0.16}
# Bytes per second one host writes: a local disk as measured here (docs/format.md, ~0.9 GB/s);
# GCS assumed at 200 MB/s per host (4 resumable uploads of 256 MiB shards at once), until measured.
WRITE_BYTES_PER_SECOND = {"local": 0.9e9, "gcs": 0.2e9}
# Bytes per second one device's compact output crosses to its host, into pinned memory:
# assumed until measured (a GPU's PCIe Gen5 x16 link at about half its 64 GB/s, a TPU
# chip's at 10 GB/s; docs/benchmarks.md, host path). A CPU's output is in host memory already.
DEVICE_TO_HOST_BYTES_PER_SECOND = {"gpu": 25e9, "tpu": 10e9}
# jax's device_kind -> the catalog's accelerator, for runs outside the cluster
DEVICE_KINDS = {
    "TPU v4": "tpu-v4-podslice",
    "TPU v5 lite": "tpu-v5-lite-podslice",
    "TPU v5e": "tpu-v5-lite-podslice",
    "TPU v5": "tpu-v5p-slice",
    "TPU v5p": "tpu-v5p-slice",
    "TPU v6 lite": "tpu-v6e-slice",
    "TPU v6e": "tpu-v6e-slice",
    "Tesla T4": "nvidia-tesla-t4",
    "NVIDIA L4": "nvidia-l4",
    "NVIDIA A100": "nvidia-tesla-a100",
    "NVIDIA H100": "nvidia-h100-80gb",
    "NVIDIA H200": "nvidia-h200-141gb",
}


@dataclass(frozen=True)
class Devices:
    """What runs the forward: `accelerator` (a catalog name) or the local platform."""

    count: int
    platform: str  # cpu, gpu, tpu
    hosts: int = 1  # processes, each writing its own shards
    accelerator: str | None = None  # catalog name; None: from device_kind, or the CPU model
    device_kind: str = ""
    cores: int = 1  # CPU only: the cores XLA uses

    def throughput(self, dtype: str) -> tuple[float | None, str]:
        """FLOP/s of one device, and the basis of that figure (None: unknown device). The
        accelerator the resource asked for comes first: the estimate is for the chosen chips."""
        name = self.accelerator
        if name is None and self.platform != "cpu":
            name = next((a for kind, a in DEVICE_KINDS.items() if self.device_kind.startswith(kind)), None)
        accelerator = ACCELERATORS.get(name)
        if accelerator is not None and accelerator.peak_tflops is not None:
            efficiency, peak = ACCELERATOR_EFFICIENCY[accelerator.kind], accelerator.peak_tflops
            how = "measured on an H200" if accelerator.kind == "gpu" else "assumed"
            return (
                peak * 1e12 * efficiency,
                f"{name}: {efficiency * 100:g}% of {peak:g} TFLOP/s (bf16 peak) per chip, {how}",
            )
        if self.platform == "cpu":
            per_core = CPU_TFLOPS_PER_CORE[dtype]
            return (
                per_core * self.cores * 1e12,
                f"CPU: {per_core * 1e3:.0f} GFLOP/s per core measured in {dtype}, {self.cores} cores",
            )
        return None, f"no throughput known for {self.device_kind or self.platform}: no time estimate"


def attention_pairs(length: int, block: int = QUERY_BLOCK) -> int:
    """(query, key) pairs the block-causal kernel multiplies in a row of `length` positions."""
    return sum(min(block, length - start) * min(start + block, length) for start in range(0, length, block))


def forward_flops(config, blocks: int, shapes: list[tuple[int, int]]) -> float:
    """FLOPs of steps of the given (rows, row length), padding rows and positions included."""
    dense = 2 * config.block_matmul_params
    attention = 4 * config.num_attention_heads * config.head_dim  # q.k and weights.v, 2 FLOPs each
    per_row = {t: dense * t + attention * attention_pairs(t) for t in {t for _, t in shapes}}
    return float(blocks * sum(rows * per_row[t] for rows, t in shapes))


def estimate(prepared, devices: Devices) -> Estimate:
    """The status.progress.estimate of a prepared run."""
    plan = prepared.plan
    flops = forward_flops(prepared.config, prepared.tap.blocks_to_run, plan.step_shapes)
    rate, basis = devices.throughput(prepared.job.model.dtype)
    target = "gcs" if prepared.job.output.uri.startswith("gs://") else "local"
    write_seconds = prepared.disk_bytes() / (devices.hosts * WRITE_BYTES_PER_SECOND[target])
    link = DEVICE_TO_HOST_BYTES_PER_SECOND.get(devices.platform)
    transfer_seconds = prepared.moved_bytes() / (devices.count * link) if link else 0.0
    if link:
        basis += f"; device to host at {link / 1e9:.0f} GB/s per device"
    basis += f"; writes at {WRITE_BYTES_PER_SECOND[target] / 1e6:.0f} MB/s per host ({target})"
    timing = {}
    if rate:
        stages = {"compute": flops / (devices.count * rate), "transfer": transfer_seconds, "writing": write_seconds}
        bound = max(stages, key=stages.get)
        timing = {
            "seconds": stages[bound],
            "compute_seconds": stages["compute"],
            "bound": bound,
            "chip_hours": stages[bound] * devices.count / 3600,
        }
    return Estimate(
        samples=len(prepared.samples),
        tokens=plan.useful_tokens,
        padding_fraction=round(plan.padding_fraction, 4),
        rows=prepared.rows_stored,
        bytes=prepared.disk_bytes(),
        flops=flops,
        devices=devices.count,
        transfer_seconds=transfer_seconds,
        write_seconds=write_seconds,
        basis=basis,
        **timing,
    )


def describe(e: Estimate) -> str:
    """One line for the log: FLOPs, time and device-hours."""
    if e.seconds is None:
        return f"{flops_text(e.flops)}; {e.basis}"
    stages = [f"compute {duration(e.compute_seconds)}"]
    if e.transfer_seconds:
        stages.append(f"device to host {duration(e.transfer_seconds)}")
    stages.append(f"writing {duration(e.write_seconds)}")
    return (
        f"{flops_text(e.flops)}: {'' if e.seconds < 1 else 'about '}{duration(e.seconds)}, bound by {e.bound} "
        f"({', '.join(stages)}) on {plural(e.devices, 'device')} "
        f"({e.chip_hours:.3g} device-hours; {e.basis})"
    )


def flops_text(flops: float) -> str:
    for unit, scale in (("EFLOP", 1e18), ("PFLOP", 1e15), ("TFLOP", 1e12)):
        if flops >= scale:
            return f"{flops / scale:.3g} {unit}"
    return f"{flops / 1e9:.3g} GFLOP"


def duration(seconds: float) -> str:
    if seconds < 1:
        return "under 1s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, hours = seconds // 60, seconds // 3600
    return f"{minutes}m{seconds % 60:02d}s" if hours == 0 else f"{hours}h{minutes % 60:02d}m"
