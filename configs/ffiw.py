"""Cross-dataset evaluation on FFIW-10K of a model trained on FF++.

    python -m mat_jax.main --config=configs/ffiw.py --workdir=FFPP_WORKDIR --mode=eval \
        --config.data.root=FFIW_RECORDS

Same model as `configs/ffpp.py` (pass the same variant arguments, e.g. `:tiny`); the records
are FFIW-10K's test release (`data_prep.build --dataset=ffiw --splits=test`), one track per
person with its own label where the fakes' face marks say which faces are forged; a video
scores as its most fake track. Results go to `FFPP_WORKDIR/eval/ffiw_test/`.
"""

from __future__ import annotations

import ml_collections

from configs import ffpp


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return ffpp.cross_dataset(arg, "ffiw")
