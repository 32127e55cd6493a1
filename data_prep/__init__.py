"""Raw deepfake video datasets -> aligned face crops in sharded TFRecords (`mat_jax.data.records`).

Modules: `sources` (dataset readers), `frames` (video decoding and frame sampling), `faces`
(offline face detection + 68 landmarks), `align` (similarity alignment recipes), `sbi`
(self-blended pseudo-fakes), `worker` (one video -> records), `shards` (part files, merge,
dataset description), `build` (the CLI), `demo` (an offline FF++-shaped tree), `bench`.

Only `mat_jax.data.records` is imported from mat_jax.
"""

__version__ = "1.0.0"
