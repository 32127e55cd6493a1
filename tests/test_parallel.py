"""Mesh, host batch -> global array, host gathers; when to call jax.distributed.initialize."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import jax
import numpy as np
import pytest

from mat_jax import parallel

ROOT = Path(__file__).resolve().parents[1]


def test_mesh_and_global_batch_on_this_process():
    mesh = parallel.create_mesh()
    assert mesh.axis_names == ("data",) and mesh.devices.size == jax.device_count()
    assert mesh.axis_types == (jax.sharding.AxisType.Auto,)
    n = 2 * jax.device_count()
    host = {
        "image": np.arange(n * 4, dtype=np.float32).reshape(n, 2, 2, 1),
        "label": np.arange(n, dtype=np.int32) % 2,
        "video_id": np.array([f"v{i}" for i in range(n)]),
    }
    batch = parallel.global_batch(host, mesh)
    assert set(batch) == {"image", "label"}  # strings stay on the host
    assert batch["image"].sharding == parallel.data_sharding(mesh)
    np.testing.assert_array_equal(parallel.host_local(batch["image"], mesh), host["image"])
    np.testing.assert_array_equal(parallel.allgather(host["label"]), host["label"])
    np.testing.assert_array_equal(parallel.allgather_strings(host["video_id"]), host["video_id"])
    assert parallel.check_batch_size(n, mesh) == n // jax.process_count()


_EIGHT = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np
    from mat_jax import parallel
    mesh = parallel.create_mesh()
    assert mesh.devices.size == 8, mesh
    x = np.arange(16 * 3, dtype=np.float32).reshape(16, 3)
    g = parallel.global_batch({"x": x}, mesh)["x"]
    assert len(g.addressable_shards) == 8 and g.addressable_shards[3].data.shape == (2, 3)
    np.testing.assert_array_equal(np.asarray(g.addressable_shards[3].data), x[6:8])
    np.testing.assert_array_equal(parallel.host_local(g, mesh), x)
    w = jax.device_put(np.ones(3, np.float32), parallel.replicated(mesh))
    # A batch statistic under jit is global, as SyncBatchNorm's: not a per-device mean.
    f = jax.jit(lambda w, x: (jnp.mean(x, axis=0) * w), out_shardings=parallel.replicated(mesh))
    np.testing.assert_allclose(np.asarray(f(w, g)), x.mean(0), rtol=1e-6)
    try:
        parallel.check_batch_size(12, mesh)
    except ValueError as e:
        assert "not divisible by the 8 devices" in str(e)
    else:
        raise AssertionError("batch 12 on 8 devices accepted")
    print("OK")
    """
)


def test_eight_fake_devices():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu",
               PYTHONPATH=str(ROOT))  # fmt: skip
    out = subprocess.run([sys.executable, "-c", _EIGHT], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=300)  # fmt: skip
    assert out.returncode == 0 and out.stdout.strip().endswith("OK"), out.stderr[-4000:]


@pytest.mark.parametrize(
    "environ, expected",
    [
        ({}, None),
        ({"SLURM_NTASKS": "1", "SLURM_JOB_ID": "7"}, None),  # one task: a plain single-host run
        ({"SLURM_NTASKS": "4", "SLURM_JOB_ID": "7"}, {}),
        ({"OMPI_COMM_WORLD_SIZE": "2"}, {}),
        ({"TPU_WORKER_HOSTNAMES": "w0"}, None),
        ({"TPU_WORKER_HOSTNAMES": "w0,w1,w2,w3"}, {}),
        ({"JAX_COORDINATOR_ADDRESS": "10.0.0.1:1234"}, {"coordinator_address": "10.0.0.1:1234"}),
        (
            {"JAX_COORDINATOR_ADDRESS": "127.0.0.1:5", "JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "1"},
            {"coordinator_address": "127.0.0.1:5", "num_processes": 2, "process_id": 1},
        ),
    ],
)
def test_distributed_init_args(environ, expected):
    assert parallel.distributed_init_args(environ) == expected
