"""Config files outside absl: `path/to/config.py[:arg]` to a locked ConfigDict.

The trainer reads `--config` through ml_collections' absl flag; the other command lines
(`mat-jax-import`, `predict`, `export`) take the same spelling through `load_config`. A
bare file name that is not found relative to the working directory is looked up among the
packaged `configs/`.
"""

from __future__ import annotations

import importlib.util
import os

import configs


def load_config(spec: str):
    """`path/to/config.py[:arg]` -> ConfigDict (locked: a mistyped key raises), as `--config` reads it."""
    path, _, arg = spec.partition(":")
    if not os.path.isfile(path):
        packaged = os.path.join(os.path.dirname(configs.__file__), os.path.basename(path))
        if not os.path.isfile(packaged):
            raise FileNotFoundError(f"config file {path} not found")
        path = packaged
    module_spec = importlib.util.spec_from_file_location("mat_jax_config", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    config = module.get_config(arg or None)
    config.lock()
    return config
