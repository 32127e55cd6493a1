"""mat_jax: Multi-attentional Deepfake Detection (Zhao et al., CVPR 2021) in JAX/Flax.

`python -m mat_jax.<command>` imports this package before the command: the one moment to
re-execute with glibc's huge-page tunable before JAX and TensorFlow load (see hugepages).
"""

from mat_jax import hugepages as _hugepages

_hugepages.reexec_for()
