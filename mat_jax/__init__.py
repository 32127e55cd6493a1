"""mat_jax: Multi-attentional Deepfake Detection (Zhao et al., CVPR 2021) in JAX/Flax.

`python -m mat_jax.<command>` imports this package before the command: the one moment to
re-execute with glibc's malloc tunables before JAX and TensorFlow load (see allocator).
"""

from mat_jax import allocator as _allocator

_allocator.reexec_for()
