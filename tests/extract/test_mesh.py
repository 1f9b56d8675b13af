"""The device mesh as resources.mesh asks for it, checked against the devices the run has."""

from __future__ import annotations

import jax
import pytest

from layertap.errors import LayerTapError
from layertap.run.mesh import DATA, MODEL, make_mesh
from layertap_api.spec import MeshSpec


def test_default_mesh_is_data_parallel_over_every_device():
    mesh = make_mesh(MeshSpec(), num_heads=4, num_kv_heads=2)
    assert (mesh.shape[DATA], mesh.shape[MODEL]) == (jax.device_count(), 1)


def test_a_data_axis_that_does_not_match_the_devices_is_refused():
    devices = jax.device_count()
    assert make_mesh(MeshSpec(data=devices), 4, 2).shape[DATA] == devices
    with pytest.raises(LayerTapError, match=rf"data x model = {2 * devices} x 1 .* this run has {devices}"):
        make_mesh(MeshSpec(data=2 * devices), 4, 2)


def test_a_model_axis_must_divide_the_devices():
    with pytest.raises(LayerTapError, match="does not divide"):
        make_mesh(MeshSpec(model=3), 4, 2)
