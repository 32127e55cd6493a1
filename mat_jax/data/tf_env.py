"""TensorFlow for mat_jax: the one place that imports it, keeps it off the accelerators, and
holds the tf.data settings every pipeline of `mat_jax.data` runs with.

Every module of mat_jax that needs TensorFlow takes it from here (`from mat_jax.data.tf_env
import tf`), so GPUs and TPUs are hidden from TensorFlow exactly once, at the first import,
before any TensorFlow use: they belong to JAX, and tf.data needs only the CPU.
"""

from __future__ import annotations

import sys


def _import_tf_without_jax():
    """TensorFlow's TFLite helpers try `from jax import jit` at import and take ImportError as
    "no JAX". When JAX is not loaded yet, give them that ImportError: the ONNX backend's
    pipeline (tf.data decode, no model) then runs without JAX, and data_prep's workers do not
    spend ~0.6 s importing it. JAX imports normally afterwards; TFLite's JAX converter, which
    mat_jax never uses, is the only thing that sees no JAX."""
    if "jax" in sys.modules:
        import tensorflow

        return tensorflow
    sys.modules["jax"] = None  # type: ignore[assignment]  # `import jax` raises ImportError
    try:
        import tensorflow
    finally:
        del sys.modules["jax"]
    return tensorflow


tf = _import_tf_without_jax()

__all__ = ["PREFETCH_BATCHES", "READ_CYCLE", "dataset_options", "tf"]

READ_CYCLE = 16  # files read in parallel and interleaved record by record
PREFETCH_BATCHES = 2


def _hide_accelerators_from_tf() -> None:
    """Keeps TensorFlow off GPUs/TPUs, which belong to JAX (tf.data needs only the CPU)."""
    for kind in ("GPU", "TPU"):
        try:
            tf.config.set_visible_devices([], kind)
        except (RuntimeError, ValueError):
            # RuntimeError: devices were already initialised (someone used TF first);
            # ValueError: this TensorFlow build has no such device type.
            pass


_hide_accelerators_from_tf()


def dataset_options() -> tf.data.Options:
    """The options of every mat_jax dataset: deterministic, one thread per op."""
    options = tf.data.Options()
    options.deterministic = True
    # Parallelism comes from processing many images at once; per-op threads would only
    # compete with them (and with JAX) for the host's cores.
    options.threading.max_intra_op_parallelism = 1
    return options
