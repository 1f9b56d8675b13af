from __future__ import annotations

import pytest

from layertap.errors import LayerTapError
from layertap.run.distributed import detect

JOBSET_ENV = {
    "JOBSET_NAME": "arc-0",
    "REPLICATED_JOB_NAME": "workers",
    "JOB_INDEX": "1",
    "JOB_COMPLETION_INDEX": "2",
    "LAYERTAP_PROCESSES_PER_JOB": "4",
    "LAYERTAP_NUM_PROCESSES": "8",
}


def test_no_environment_is_a_single_process():
    assert detect(env={}).source == "single"


def test_flags_win_over_the_environment():
    setup = detect("localhost:1234", 2, 1, env=JOBSET_ENV)
    assert (setup.source, setup.coordinator, setup.num_processes, setup.process_id) == ("flags", "localhost:1234", 2, 1)


def test_jobset_env_gives_the_first_pod_as_coordinator_and_a_global_process_id():
    setup = detect(env=JOBSET_ENV)
    assert setup.source == "jobset"
    assert setup.coordinator == "arc-0-workers-0-0.arc-0:8482"
    assert (setup.num_processes, setup.process_id) == (8, 1 * 4 + 2)


def test_jobset_coordinator_port_can_be_set():
    setup = detect(env={**JOBSET_ENV, "JAX_COORDINATOR_PORT": "9000"})
    assert setup.coordinator == "arc-0-workers-0-0.arc-0:9000"


def test_tpu_vms_are_left_to_jax_detection_even_under_jobset():
    assert detect(env={**JOBSET_ENV, "TPU_WORKER_HOSTNAMES": "a,b", "TPU_WORKER_ID": "0"}).source == "tpu"


@pytest.mark.parametrize(
    "flags, env, message",
    [
        (("h:1", 2, None), {}, "go together"),
        (("h:1", 2, 2), {}, "outside 0..1"),
        ((None, None, None), {**JOBSET_ENV, "JOB_INDEX": "2"}, "process id 10 is outside 0..7"),
        (
            (None, None, None),
            {k: v for k, v in JOBSET_ENV.items() if k != "LAYERTAP_NUM_PROCESSES"},
            "LAYERTAP_NUM_PROCESSES",
        ),
    ],
)
def test_inconsistent_settings_are_refused(flags, env, message):
    with pytest.raises(LayerTapError, match=message):
        detect(*flags, env=env)
