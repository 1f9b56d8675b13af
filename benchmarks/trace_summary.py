"""Where a device's time goes, from a `jax.profiler.trace(..., create_perfetto_trace=True)`
directory: the kernels' time per step by kind (attention, matmul, copy, the rest of XLA's
fusions) and the ops that take most of it, as markdown (issue 30 asks for the profile).

It reads the Perfetto JSON that JAX writes beside its XPlane file, so nothing beyond JAX is
needed (no TensorBoard or xprof). A GPU's kernels are the events of its "/device:GPU:N"
process on its "Stream" threads (the other rows of that process are derived from them and
would count them twice); on a CPU, which has no device process, XLA's own host threads
stand in, so that the summary can be tried here.
"""

from __future__ import annotations

import gzip
import json
import re
from collections import Counter
from pathlib import Path

# Checked in this order: cuDNN's attention kernels have "gemm"-like parts in their names.
KINDS = (
    ("attention", re.compile(r"cudnn|fmha|flash|attention|sdpa", re.IGNORECASE)),
    ("matmul", re.compile(r"gemm|cublas|cutlass|xmma|nvjet|matmul|dot|ynn_fusion", re.IGNORECASE)),
    ("copy", re.compile(r"memcpy|memset|copy|transpose", re.IGNORECASE)),
)
OTHER = "other XLA fusions (elementwise, reductions)"


def kind(name: str) -> str:
    return next((label for label, pattern in KINDS if pattern.search(name)), OTHER)


def kernel_events(trace_dir: Path) -> tuple[list[tuple[str, float]], str]:
    """(op name, microseconds) of every kernel in the newest trace under `trace_dir`, and
    which rows of the trace they came from."""
    paths = sorted(Path(trace_dir).glob("**/perfetto_trace.json.gz"), key=lambda p: p.stat().st_mtime)
    if not paths:
        raise FileNotFoundError(f"no perfetto_trace.json.gz under {trace_dir}")
    with gzip.open(paths[-1]) as f:
        document = json.load(f)
    events = document["traceEvents"] if isinstance(document, dict) else document
    processes = {e["pid"]: e["args"]["name"] for e in events if e.get("ph") == "M" and e["name"] == "process_name"}
    threads = {
        (e["pid"], e["tid"]): e["args"]["name"] for e in events if e.get("ph") == "M" and e["name"] == "thread_name"
    }
    devices = {pid for pid, name in processes.items() if name.startswith("/device:")}
    streams = {key for key, name in threads.items() if key[0] in devices and name.startswith("Stream")}
    if streams:
        rows, source = streams, "the device's streams"
    elif devices:
        rows, source = {key for key in threads if key[0] in devices}, "the device's rows"
    else:
        rows, source = {key for key, name in threads.items() if name.startswith("tf_XLA")}, "XLA's CPU threads"
    kernels = []
    for event in events:
        if event.get("ph") != "X" or (event["pid"], event["tid"]) not in rows:
            continue
        name = event["name"]
        if name.startswith(("end: ", "ThunkExecutor", "SlinkyThreadPool")):  # a CPU thread's markers, not work
            continue
        op = (event.get("args") or {}).get("hlo_op") or name
        kernels.append((op if op == name else f"{op} ({name[:60]})", float(event.get("dur", 0.0))))
    return kernels, source


def summarize(trace_dir: Path, steps: int, step_ms: float | None = None, top: int = 12) -> str:
    """Markdown: the kernels' milliseconds per step by kind and the `top` ops."""
    kernels, source = kernel_events(trace_dir)
    by_kind, by_op, calls = Counter(), Counter(), Counter()
    for op, micros in kernels:
        by_kind[kind(op)] += micros
        by_op[op] += micros
        calls[op] += 1
    busy = sum(by_kind.values()) / 1e3 / steps
    lines = [f"{len(kernels)} kernels over {steps} steps, from {source}: {busy:.1f} ms of kernels per step"]
    if step_ms:
        lines[-1] += f" of {step_ms:.1f} ms wall ({busy / step_ms:.0%} busy)"
    lines += ["", "| kind | ms per step | share |", "| --- | ---: | ---: |"]
    for label, micros in by_kind.most_common():
        lines.append(f"| {label} | {micros / 1e3 / steps:.2f} | {micros / 1e3 / steps / busy:.1%} |")
    lines += ["", "| op | kind | calls per step | ms per step | share |", "| --- | --- | ---: | ---: | ---: |"]
    for op, micros in by_op.most_common(top):
        lines.append(
            f"| {op} | {kind(op)} | {calls[op] / steps:g} | {micros / 1e3 / steps:.2f} | "
            f"{micros / 1e3 / steps / busy:.1%} |"
        )
    return "\n".join(lines)
