"""Cross-dataset evaluation on WildDeepfake of a model trained on FF++.

    python -m mat_jax.main --config=configs/wilddeepfake.py --workdir=FFPP_WORKDIR --mode=eval \
        --config.data.root=WILDDEEPFAKE_RECORDS

Same model as `configs/ffpp.py` (pass the same variant arguments, e.g. `:tiny`); the records
are WildDeepfake's official test split (`data_prep.build --dataset=wilddeepfake --splits=test`),
one "video" per face sequence. Results go to `FFPP_WORKDIR/eval/wilddeepfake_test/`.
"""

from __future__ import annotations

import ml_collections

from configs import ffpp


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return ffpp.cross_dataset(arg, "wilddeepfake")
