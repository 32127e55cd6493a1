"""Cross-dataset evaluation on DFDC-preview of a model trained on FF++.

    python -m mat_jax.main --config=configs/dfdcp.py --workdir=FFPP_WORKDIR --mode=eval \
        --config.data.root=DFDCP_RECORDS

Same model as `configs/ffpp.py` (pass the same variant arguments, e.g. `:tiny`); the records
are the preview's official test set (`data_prep.build --dataset=dfdcp --splits=test`, its split
leaks fixed: docs/data.md). Results go to `FFPP_WORKDIR/eval/dfdcp_test/`.
"""

from __future__ import annotations

import ml_collections

from configs import ffpp


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return ffpp.cross_dataset(arg, "dfdcp")
