"""Cross-dataset evaluation on records imported from DeepfakeBench's preprocessed data (any of
its datasets: Celeb-DF, DFDC, DFDCP, DFD, UADFV, ...) of a model trained on FF++.

    python -m mat_jax.main --config=configs/deepfakebench.py --workdir=FFPP_WORKDIR --mode=eval \
        --config.data.root=IMPORTED_RECORDS

Same model as `configs/ffpp.py` (pass the same variant arguments, e.g. `:tiny`); the records
are the test split of `data_prep.build --dataset=deepfakebench --json=... --splits=test`.
Results go to `FFPP_WORKDIR/eval/deepfakebench_test/`; pass `--config.data.dataset=<name>`
to name the folder after the imported dataset (`eval/<name>_test/`), one import per folder.
"""

from __future__ import annotations

import ml_collections

from configs import ffpp


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return ffpp.cross_dataset(arg, "deepfakebench")
