"""The accelerator the resource asked for, or a loud failure.

JAX falls back to CPU without a word when its accelerator backend fails to start, so a
worker on a node whose TPUs or GPUs it cannot open would hold them while computing on CPU.
The JobSet sets JAX_PLATFORMS (JAX then fails instead of falling back), and the worker
checks that it sees the devices the spec asked for, kind and count per host, before it
loads anything; otherwise it stops with a message naming both, as a configuration error
(exit 2: the JobSet fails at once instead of restarting every host).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from layertap.errors import LayerTapError
from layertap.estimate import Devices
from layertap_api.contract import ENV_SIMULATED_ACCELERATOR
from layertap_api.spec import ExpectedDevices


def check_devices(expected: ExpectedDevices | None, env: Mapping[str, str] | None = None) -> None:
    """Raise unless this process sees `expected.per_host` devices of `expected.platform`.

    A test cluster that simulates an accelerator with CPU devices says so in
    LAYERTAP_SIMULATED_ACCELERATOR (the platform it stands in for): CPU devices then count.
    """
    import jax

    env = os.environ if env is None else env
    try:
        devices = jax.local_devices()
    # JAX_PLATFORMS names a backend that cannot start (jax asserts when its plugin is not installed)
    except (RuntimeError, AssertionError) as error:
        why = str(error) or "its plugin is not installed"
        if expected is None:
            raise LayerTapError(
                f"JAX could not start the backend that JAX_PLATFORMS={env.get('JAX_PLATFORMS', '')!r} names ({why}); "
                "install the matching jax extra (e.g. jax[cuda12] or jax[tpu]), or unset JAX_PLATFORMS"
            ) from None
        raise LayerTapError(
            f"resources.accelerator {expected.accelerator}: JAX could not start its {expected.platform} backend "
            f"({why}); is the node's accelerator there, and does the image have the matching jax extra?"
        ) from None
    if expected is None:
        return
    platforms = {device.platform for device in devices}
    simulated = env.get(ENV_SIMULATED_ACCELERATOR) == expected.platform and platforms == {"cpu"}
    if (platforms != {expected.platform} and not simulated) or len(devices) != expected.per_host:
        found = ", ".join(f"{sum(d.platform == p for d in devices)} {p.upper()}" for p in sorted(platforms)) or "none"
        raise LayerTapError(
            f"resources.accelerator {expected.accelerator}: each worker host should have {expected.per_host} "
            f"{expected.platform.upper()} device(s), JAX sees {found}; the node lacks the accelerator, or its "
            "runtime did not start (see the log above)"
        )


def present_devices(expected: ExpectedDevices | None) -> Devices:
    """The devices this run computes on, for the estimate (the accelerator's name from the spec)."""
    import jax

    device = jax.devices()[0]
    accelerator = expected.accelerator if expected is not None else None
    return Devices(
        jax.device_count(),
        device.platform,
        jax.process_count(),
        accelerator,
        device.device_kind,
        len(os.sched_getaffinity(0)),
    )
