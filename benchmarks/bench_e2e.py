"""Latencies of the whole product on the simulated GKE TPU cluster (tests/e2e/simulated_gke.py):
kubectl apply -> Running -> Succeeded for a v5e 4x4 run, and kill -9 of a worker -> JobSet
restarted -> workers running again -> first new progress report.

    sudo .venv/bin/python benchmarks/bench_e2e.py [--repeat 3]

Needs root and the binaries of tests/setup.d (as the e2e tier). Timing is printed, never
asserted. Every figure includes the machine's own slowness: 2 cores run the control plane,
the controllers and four JAX processes at once.
"""

from __future__ import annotations

import argparse
import json
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

from simulated_gke import running_cluster
from workflow import E2E, install, kill_process, upload_inputs


def timed_until(check, timeout: float = 600) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise TimeoutError
        time.sleep(0.1)
    return time.monotonic() - start


def run_once(e2e: E2E, longer: bool) -> dict:
    spec = e2e.spec("tpu-v5-lite-podslice", "4x4", **({"dataset": {"prompt": {"augmentations": 3}}} if longer else {}))
    start = time.monotonic()
    e2e.apply(spec)
    running = timed_until(lambda: e2e.status().get("phase") == "Running")
    out = {"apply_to_running": running}
    if longer:
        timed_until(lambda: (e2e.status().get("progress") or {}).get("samplesDone"))
        victim = e2e.pod_directories()[1]
        killed = time.monotonic()
        kill_process(victim, signal.SIGKILL)
        timed_until(lambda: e2e.status().get("restarts"))
        out["kill_to_restart"] = time.monotonic() - killed
        timed_until(lambda: e2e.status().get("phase") == "Running" and e2e.status().get("restarts"))
        out["kill_to_running_again"] = time.monotonic() - killed
        first = (e2e.status().get("progress") or {}).get("updateTime")
        timed_until(lambda: (e2e.status().get("progress") or {}).get("updateTime") != first)
        out["kill_to_new_progress"] = time.monotonic() - killed
    timed_until(lambda: e2e.status().get("phase") == "Succeeded")
    out["apply_to_succeeded"] = time.monotonic() - start
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="layertap-bench-e2e-"))
    t0 = time.monotonic()
    with running_cluster(workdir) as cluster:
        started = time.monotonic() - t0
        install(cluster)
        upload_inputs(cluster, workdir / "inputs")
        ready = time.monotonic() - t0
        rows = []
        for i in range(args.repeat):
            rows.append(run_once(E2E(cluster, f"bench{i}"), longer=False))
            rows.append(run_once(E2E(cluster, f"benchkill{i}"), longer=True))
    print(f"# cluster up in {started:.1f} s; chart installed and inputs uploaded at {ready:.1f} s\n")
    print("| measure | median s | runs |\n| --- | ---: | ---: |")
    for key in (
        "apply_to_running",
        "apply_to_succeeded",
        "kill_to_restart",
        "kill_to_running_again",
        "kill_to_new_progress",
    ):
        values = [r[key] for r in rows if key in r and not (key == "apply_to_succeeded" and "kill_to_restart" in r)]
        if values:
            print(f"| {key} | {statistics.median(values):.1f} | {len(values)} |")
    print("\n" + json.dumps(rows))


if __name__ == "__main__":
    main()
