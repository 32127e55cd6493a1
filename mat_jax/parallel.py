"""Data parallelism over all devices of all hosts: one ("data",) mesh, jax.jit, no pmap.

Every array of the training state (parameters, optimizer moments, BatchNorm statistics,
feature centres) is replicated; the batch axis of the inputs is split over "data".
Under `jax.jit` the BatchNorm statistics and the centre update are then means over the
*global* batch, which is what the reference's SyncBatchNorm and all-reduce compute.

Multi-host: each process reads its own files and builds a host batch of
`global_batch // process_count` examples; `global_batch` stitches the host batches
into one global array (rows ordered by process).
"""

from __future__ import annotations

from typing import Any, Mapping

import jax
import jaxlib
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = "data"

# XLA:CPU compile option for the train, eval and predict steps. With YNNPACK taking the
# reductions (BatchNorm statistics and their gradients) and nothing else, a B4 MAT train
# step on a 2-core CPU went from 3.8 to 2.8 s and eval from 7.5 to 11 images/s; parity
# with the official model holds. It is a per-compilation option, not XLA_FLAGS, so
# TensorFlow in the same process (its XLA does not know the flag) never sees it.
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_REDUCE"}
# The experimental option was measured with jaxlib 0.10; another release may drop it.
CPU_COMPILER_OPTIONS_JAXLIB = "0.10."


def create_mesh(devices=None) -> Mesh:
    """A one-axis ("data",) mesh over `devices` (default: every device of every host).

    The axis is `Auto` (GSPMD propagation), not jax's default `Explicit`: with explicit
    sharding in types every gather, reshape and index in the model and losses would need
    an output-sharding annotation (a replicated table indexed by a batch-sharded label
    already fails), while for pure data parallelism the compiler's propagation is exact.
    """
    devices = jax.devices() if devices is None else list(devices)
    return jax.make_mesh(
        (len(devices),), (DATA_AXIS,), devices=devices, axis_types=(jax.sharding.AxisType.Auto,)
    )


def compiler_options(mesh: Mesh | None = None) -> dict[str, str] | None:
    """`jax.jit(..., compiler_options=...)` for the platform of `mesh` (default: jax's devices)."""
    device = mesh.devices.flat[0] if mesh is not None else jax.devices()[0]
    if device.platform != "cpu" or not jaxlib.__version__.startswith(CPU_COMPILER_OPTIONS_JAXLIB):
        return None
    return dict(CPU_COMPILER_OPTIONS)


def data_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over the "data" axis."""
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def check_batch_size(global_batch: int, mesh: Mesh) -> int:
    """The per-host batch size; raises with the numbers when the split is not even."""
    n_dev, n_proc = mesh.devices.size, jax.process_count()
    if global_batch % n_dev:
        raise ValueError(
            f"global batch {global_batch} is not divisible by the {n_dev} devices of the mesh; "
            f"choose a multiple of {n_dev} (--config.train.batch_size=...)"
        )
    return global_batch // n_proc


def is_numeric(x: Any) -> bool:
    return isinstance(x, (np.ndarray, jax.Array)) and np.dtype(x.dtype).kind in "biuf"


def global_batch(host_batch: Mapping[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
    """Host batch (numpy, b = global / process_count rows) -> global arrays sharded on "data".

    Non-numeric entries (video ids, method names) stay on the host and are dropped
    here; the caller keeps them from the host batch.
    """
    sharding = data_sharding(mesh)
    out = {}
    for key, value in host_batch.items():
        if is_numeric(value):
            out[key] = jax.make_array_from_process_local_data(sharding, np.asarray(value))
    return out


def host_local(array: jax.Array, mesh: Mesh) -> np.ndarray:
    """The rows of a "data"-sharded global array that this host fed in (inverse of global_batch)."""
    if jax.process_count() == 1:
        return np.asarray(jax.device_get(array))
    local = multihost_utils.global_array_to_host_local_array(array, mesh, P(DATA_AXIS))
    return np.asarray(local)


def allgather(values: np.ndarray) -> np.ndarray:
    """Concatenates equally long host arrays in process order (identity on one host)."""
    if jax.process_count() == 1:
        return np.asarray(values)
    return np.asarray(multihost_utils.process_allgather(np.asarray(values), tiled=True))


def allgather_strings(values: np.ndarray) -> np.ndarray:
    """`allgather` for arrays of str/bytes: sent as padded UTF-8 byte rows."""
    if jax.process_count() == 1:
        return np.asarray(values)
    encoded = [v.encode() if isinstance(v, str) else bytes(v) for v in np.asarray(values).reshape(-1)]
    width = int(np.max(allgather(np.array([max([len(e) for e in encoded], default=0)], np.int32))))
    rows = np.zeros((len(encoded), max(width, 1)), np.uint8)
    lengths = np.array([len(e) for e in encoded], np.int32)
    for i, e in enumerate(encoded):
        rows[i, : len(e)] = np.frombuffer(e, np.uint8)
    rows, lengths = allgather(rows), allgather(lengths)
    return np.array([bytes(r[:n]).decode() for r, n in zip(rows, lengths)], dtype=object)


def sync(name: str) -> None:
    """A barrier across processes (no-op on one host)."""
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices(name)


def distributed_init_args(environ: Mapping[str, str]) -> dict | None:
    """Arguments for `jax.distributed.initialize`, or None on a single-process system.

    * `JAX_COORDINATOR_ADDRESS` (host:port) with `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`:
      an explicit set-up (the tests use it on localhost); without the two counts, JAX's
      cluster detection fills them in.
    * SLURM with more than one task, Open MPI with more than one rank, or a multi-worker
      Cloud TPU slice: JAX detects everything itself.
    A single-host machine must not call it: on CPU/GPU it would wait for a coordinator.
    """
    if environ.get("JAX_COORDINATOR_ADDRESS"):
        args: dict = {"coordinator_address": environ["JAX_COORDINATOR_ADDRESS"]}
        if environ.get("JAX_NUM_PROCESSES"):
            args["num_processes"] = int(environ["JAX_NUM_PROCESSES"])
        if environ.get("JAX_PROCESS_ID"):
            args["process_id"] = int(environ["JAX_PROCESS_ID"])
        return args
    counts = (environ.get("SLURM_NTASKS"), environ.get("OMPI_COMM_WORLD_SIZE"))
    if any(c and c.isdigit() and int(c) > 1 for c in counts):
        return {}
    hosts = environ.get("TPU_WORKER_HOSTNAMES", "")
    if len([h for h in hosts.split(",") if h.strip()]) > 1:
        return {}
    return None
