"""Cross-dataset evaluation on DeeperForensics-1.0 of a model trained on FF++.

    python -m mat_jax.main --config=configs/deeperforensics.py --workdir=FFPP_WORKDIR --mode=eval \
        --config.data.root=DEEPERFORENSICS_RECORDS

Same model as `configs/ffpp.py` (pass the same variant arguments, e.g. `:tiny`); the records
are its official test split (`data_prep.build --dataset=deeperforensics --ffpp_root=FFPP
--splits=test`): the end-to-end face swaps with the FF++ originals they were made on. Results
go to `FFPP_WORKDIR/eval/deeperforensics_test/`.
"""

from __future__ import annotations

import ml_collections

from configs import ffpp


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return ffpp.cross_dataset(arg, "deeperforensics")
