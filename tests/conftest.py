"""Shared fixtures: the parity dump of the official PyTorch model, read from ../shared."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import numpy as np
import pytest

# Parity tolerances assume float32 matmuls at full precision on the CPU.
jax.config.update("jax_default_matmul_precision", "highest")

ROOT = Path(__file__).resolve().parents[1]
PARITY = ROOT.parent / "shared" / "parity" / "reference_b4_seed0.npz"


@pytest.fixture(scope="session")
def parity():
    """The whole dump as a dict of numpy arrays (read once; ~131 MB)."""
    if not PARITY.exists():
        pytest.fail(f"parity dump missing: expected {PARITY} (the project's ../shared folder)")
    with np.load(PARITY) as z:
        data = {k: z[k] for k in z.files}
    data["meta"] = json.loads(str(data["meta"]))
    return data


@pytest.fixture(scope="session")
def parity_state_dict(parity):
    """Only the PyTorch state-dict entries of the dump (names without a '/')."""
    return {k: v for k, v in parity.items() if "/" not in k and k != "meta"}
