"""Device mesh, logical-axis rules and multi-host start-up.

Parameters carry logical axis names (`embed`, `mlp`, `heads`, ...). One short ordered rule table
maps them to the mesh axes `('data', 'fsdp', 'tensor')`. A parameter whose names match no rule is
an error, never a silent replica: a 7B job that replicates a weight by accident runs out of memory
only after the queue wait.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import os
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.experimental import mesh_utils
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

log = logging.getLogger(__name__)

MESH_AXES = ("data", "fsdp", "tensor")
BATCH_AXES = ("data", "fsdp")

# logical name -> mesh axis (or None = replicated along that dimension). First match wins.
DEFAULT_RULES: tuple[tuple[str, str | None], ...] = (
    ("layers", None),
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("norm", None),
)


def resolve_mesh_shape(shape: Sequence[int], num_devices: int) -> tuple[int, ...]:
    """Fill the single -1 so that the product equals the number of devices."""
    shape = tuple(int(s) for s in shape)
    if len(shape) != len(MESH_AXES):
        raise ValueError(f"mesh shape {shape} must give one size per axis {MESH_AXES}")
    if shape.count(-1) > 1:
        raise ValueError(f"mesh shape {shape}: at most one axis may be -1")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if num_devices % known:
            raise ValueError(f"mesh shape {shape} does not divide {num_devices} devices")
        shape = tuple(num_devices // known if s == -1 else s for s in shape)
    if math.prod(shape) != num_devices:
        raise ValueError(
            f"mesh shape {dict(zip(MESH_AXES, shape))} needs {math.prod(shape)} devices, have {num_devices}"
        )
    return shape


def make_mesh(shape: Sequence[int] = (1, -1, 1), devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A `(data, fsdp, tensor)` mesh with Auto axis types (NNX matmuls fail under Explicit ones).

    On TPU the mesh follows the chips' ICI torus (`create_device_mesh`), and an axis may span part of a
    physical axis (`allow_split_physical_axes`), so that e.g. fsdp=32 x tensor=2 lays out on v5p-128's 4x4x4
    torus, which `jax.make_mesh` refuses off v5e. CPU and GPU devices keep their order (GPUs sorted by id).
    """
    devices = list(devices) if devices is not None else jax.devices()
    if -1 not in shape and 0 < math.prod(shape) < len(devices):
        log.warning("mesh %s uses %d of %d devices", tuple(shape), math.prod(shape), len(devices))
        devices = devices[: math.prod(shape)]
    sizes = resolve_mesh_shape(shape, len(devices))
    axis_types = (AxisType.Auto,) * len(MESH_AXES)
    if devices[0].platform == "tpu":
        slices = {getattr(d, "slice_index", 0) for d in devices}
        if len(slices) > 1:
            raise ValueError(
                f"mesh {dict(zip(MESH_AXES, sizes))}: the devices span {len(slices)} TPU slices (multislice); "
                "janus-train lays meshes out within one slice"
            )
        grid = mesh_utils.create_device_mesh(sizes, devices, allow_split_physical_axes=True)
        return Mesh(grid, MESH_AXES, axis_types=axis_types)
    if devices == jax.devices():
        return jax.make_mesh(sizes, MESH_AXES, axis_types=axis_types)
    return Mesh(np.asarray(devices).reshape(sizes), MESH_AXES, axis_types=axis_types)


def logical_to_spec(
    logical: Sequence[str | None],
    shape: Sequence[int],
    mesh: Mesh,
    rules: Sequence[tuple[str, str | None]] = DEFAULT_RULES,
    name: str = "?",
) -> PartitionSpec:
    """Map logical axis names to a PartitionSpec; unknown names and indivisible sizes are errors."""
    table = dict(rules)
    used: set[str] = set()
    spec: list[str | None] = []
    for dim, axis_name in zip(shape, logical):
        if axis_name is None:
            spec.append(None)
            continue
        if axis_name not in table:
            raise ValueError(f"parameter {name}: logical axis {axis_name!r} matches no sharding rule {list(table)}")
        mesh_axis = table[axis_name]
        if mesh_axis is None or mesh_axis in used or mesh.shape[mesh_axis] == 1:
            spec.append(None)
            continue
        if dim % mesh.shape[mesh_axis]:
            raise ValueError(
                f"parameter {name}: dimension {axis_name}={dim} is not divisible by mesh axis "
                f"{mesh_axis}={mesh.shape[mesh_axis]}"
            )
        used.add(mesh_axis)
        spec.append(mesh_axis)
    return PartitionSpec(*spec)


def _logical_axes(variable: nnx.Variable) -> tuple | None:
    meta = variable.get_metadata()
    return meta.get("out_sharding") or meta.get("sharding") or meta.get("sharding_names")


def state_shardings(state: nnx.State, mesh: Mesh, rules=DEFAULT_RULES):
    """The state's tree with each Variable's value replaced by its NamedSharding (same structure,
    so it serves directly as jit in/out shardings), from the logical names."""

    def one(path, variable):
        name = jax.tree_util.keystr(path)
        shape = variable.get_value().shape
        logical = _logical_axes(variable)
        if logical is None:
            if shape == ():
                return variable.replace(NamedSharding(mesh, PartitionSpec()))
            raise ValueError(f"parameter {name} has no logical axis names; add them where it is created")
        if len(logical) != len(shape):
            raise ValueError(f"parameter {name}: logical axes {logical} do not match shape {shape}")
        return variable.replace(NamedSharding(mesh, logical_to_spec(logical, shape, mesh, rules, name)))

    return jax.tree_util.tree_map_with_path(one, state, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Leading (batch) dimension over data and fsdp, the rest replicated."""
    return NamedSharding(mesh, PartitionSpec(BATCH_AXES, *([None] * (ndim - 1))))


_ACTIVATION_MESH: contextvars.ContextVar[Mesh | None] = contextvars.ContextVar("janus_activation_mesh", default=None)


@contextlib.contextmanager
def activation_sharding(mesh: Mesh | None) -> Iterator[None]:
    """While tracing under this context, the model pins its activations to the batch axes of `mesh`.

    Without the pins XLA may contract the LM head over the fsdp-sharded `embed` dimension and keep
    full-batch float32 logits on every device; with them each device holds its own rows only.
    """
    token = _ACTIVATION_MESH.set(mesh)
    try:
        yield
    finally:
        _ACTIVATION_MESH.reset(token)


def activation_mesh() -> Mesh | None:
    """The mesh `activation_sharding` set for the code being traced, if any (kernels in `shard_map` need it)."""
    return _ACTIVATION_MESH.get()


def constrain_batch(x: jax.Array, *rest: str | None) -> jax.Array:
    """Shard dim 0 over (data, fsdp) and the given trailing axes, when an activation mesh is set."""
    mesh = _ACTIVATION_MESH.get()
    if mesh is None or x.shape[0] % (mesh.shape["data"] * mesh.shape["fsdp"]):
        return x
    rest = tuple(a if a is None or x.shape[i + 1] % mesh.shape[a] == 0 else None for i, a in enumerate(rest))
    spec = PartitionSpec(BATCH_AXES, *rest, *([None] * (x.ndim - 1 - len(rest))))
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def embedding_lookup(table: jax.Array, ids: jax.Array) -> jax.Array:
    """``table[ids]`` for batch-sharded ids, each device looking up its own rows.

    Why: the table is sharded (vocab over `tensor`, embed over `fsdp`) and its embed split clashes with
    the batch split over `fsdp`, so XLA gathered every row's ids and looked the whole batch up on every
    device, then resharded the result. Pinning the table to its vocab split (gathered over `fsdp`, as
    FSDP gathers every weight before use) lets each device look up its rows in its vocab slice and sum
    over `tensor`.
    """
    mesh = _ACTIVATION_MESH.get()
    if mesh is not None and table.shape[0] % mesh.shape["tensor"] == 0:
        table = jax.lax.with_sharding_constraint(table, NamedSharding(mesh, PartitionSpec("tensor", None)))
    return constrain_batch(jnp.take(table, ids, axis=0))


def initialize_distributed() -> None:
    """Join a multi-process job, whatever launched it.

    Local runs and GPU clusters set JANUS_COORDINATOR_ADDRESS / JANUS_NUM_PROCESSES /
    JANUS_PROCESS_ID (launch/ does this); TPU pods and SLURM are auto-detected by JAX; anything
    else is a single process.
    """
    if jax.distributed.is_initialized():
        return
    address = os.environ.get("JANUS_COORDINATOR_ADDRESS")
    if address:
        num = int(os.environ["JANUS_NUM_PROCESSES"])
        pid = int(os.environ["JANUS_PROCESS_ID"])
        if os.environ.get("JAX_PLATFORMS", "").startswith("cpu"):
            jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(coordinator_address=address, num_processes=num, process_id=pid)
        log.info("joined job at %s as process %d of %d", address, pid, num)
    elif (
        "SLURM_JOB_ID" in os.environ
        and int(os.environ.get("SLURM_NTASKS", "1")) > 1
        or os.environ.get("TPU_WORKER_HOSTNAMES")
        or os.environ.get("MEGASCALE_COORDINATOR_ADDRESS")
    ):
        jax.distributed.initialize()


def host_copy(arr: jax.Array) -> np.ndarray:
    """The whole of a (possibly multi-host sharded) array as numpy, on every host."""
    if jax.process_count() > 1 and not arr.is_fully_addressable:
        from jax.experimental import multihost_utils

        return np.asarray(multihost_utils.process_allgather(arr, tiled=True))
    return np.asarray(jax.device_get(arr))
