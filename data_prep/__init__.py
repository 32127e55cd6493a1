"""Raw deepfake video datasets -> aligned face crops in sharded TFRecords (`mat_jax.data.records`).

Modules: `sources` (dataset readers), `worker` (one video -> records), `results` (a video's
outcome, its completion marker), `shards` (work folder, part files, merge), `run` (videos over
worker processes, progress bar), `report` (summary, dataset description, report.tsv), `build`
(the CLI and the build's steps), `perturb` (the DeeperForensics-1.0 perturbations), `robustness`
(perturbed copies of an eval split), `sbi` (self-blended pseudo-fakes), `demo_faces` (the demo's
synthetic face videos), `demo` (an offline FF++-shaped tree), `bench`.

Frame sampling, face detection, alignment, the build settings and the frames -> face crops
step live in `mat_jax.faces`, shared with `mat_jax.predict`. From mat_jax, only
`mat_jax.data.records` (the schema) and `mat_jax.faces` are imported; mat_jax never imports
data_prep.
"""

__version__ = "1.0.0"
