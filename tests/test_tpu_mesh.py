"""make_mesh on TPU devices lays the mesh along the chips' ICI torus. The devices are libtpu's compile-only
TPU devices of real slice topologies (janus_jax.tpu_plan), so this runs on a CPU-only machine."""

from __future__ import annotations

import jax
import numpy as np
import pytest
from jax.experimental import mesh_utils

from janus_jax import tpu_plan
from janus_jax.sharding import MESH_AXES, make_mesh


@pytest.fixture(scope="module")
def slices() -> dict[str, list]:
    pytest.importorskip("libtpu", reason='needs the TPU compiler: pip install "jax[tpu]==0.10.2"')
    return {name: tpu_plan.compile_only_devices(tpu_plan.parse_slice(name)) for name in ("v5e-16", "v5p-128")}


def _ici_line(devices) -> bool:
    """Each device is the previous one's ICI neighbour: one step along one physical axis."""
    steps = [np.abs(np.subtract(a.coords, b.coords)) for a, b in zip(devices, devices[1:])]
    return all(sorted(s.tolist()) == [0] * (len(s) - 1) + [1] for s in steps)


def test_the_tensor_axis_runs_along_ici_links_where_the_device_list_order_does_not(slices):
    devices = slices["v5p-128"]
    shape = (2, 8, 4)
    mesh = make_mesh(shape, devices)
    assert mesh.axis_names == MESH_AXES and mesh.devices.shape == shape
    assert all(_ici_line(group) for group in mesh.devices.reshape(-1, 4))
    naive = np.asarray(devices).reshape(shape)  # what make_mesh did with an explicit device list before
    assert not all(_ici_line(group) for group in naive.reshape(-1, 4))


@pytest.mark.parametrize(
    ("name", "shape"),
    [("v5e-16", (1, 8, 2)), ("v5e-16", (2, 4, 2)), ("v5p-128", (1, 32, 2)), ("v5p-128", (1, -1, 1))],
)
def test_tpu_meshes_are_create_device_mesh_with_split_physical_axes(slices, name, shape):
    devices = slices[name]
    mesh = make_mesh(shape, devices)
    expected = mesh_utils.create_device_mesh(mesh.devices.shape, devices, allow_split_physical_axes=True)
    assert [d.id for d in mesh.devices.flat] == [d.id for d in expected.flat]
    assert [d.id for d in mesh.devices.flat] != [d.id for d in devices]


def test_fsdp_32_by_tensor_2_on_v5p_128_which_jax_make_mesh_refuses(slices):
    devices = slices["v5p-128"]
    with pytest.raises(NotImplementedError):
        jax.make_mesh((1, 32, 2), MESH_AXES, devices=devices)
    assert dict(make_mesh((1, 32, 2), devices).shape) == {"data": 1, "fsdp": 32, "tensor": 2}


def test_cpu_meshes_keep_the_device_order():
    devices = jax.devices()[:8]
    mesh = make_mesh((2, 2, 2), devices)
    assert [d.id for d in mesh.devices.flat] == [d.id for d in devices]


def test_planning_leaves_no_tpu_settings_in_the_environment(slices):
    """libtpu's compile-only settings are restored once its devices exist: a TPU_WORKER_HOSTNAMES left behind
    made every janus-train started later by the same process take itself for a TPU pod worker."""
    import os

    assert "TPU_WORKER_HOSTNAMES" not in os.environ  # (jax itself sets TPU_SKIP_MDS_QUERY where libtpu is)
