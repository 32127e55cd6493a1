"""Video -> face crops: the one path shared by `data_prep` (building records) and `mat_jax.predict`.

Modules: `frames` (video decoding, frame sampling, H.264 writing), `detect` (face detection +
68 landmarks), `align` (similarity alignment recipes), `settings` (what decides a build's
records, read back from their summary), `crops` (frames -> aligned, encoded face crops).

Needs the `prep` extra (OpenCV, dlib): only `mat_jax.predict` and `data_prep` import it.
Importing this package imports none of its modules.
"""
