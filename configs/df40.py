"""Cross-dataset evaluation on DF40's FF++ domain (its new forgery methods on FF++'s faces) of
a model trained on FF++.

    python -m mat_jax.main --config=configs/df40.py --workdir=FFPP_WORKDIR --mode=eval \
        --config.data.root=DF40_RECORDS

Same model as `configs/ffpp.py` (pass the same variant arguments, e.g. `:tiny`); the records
are DF40's test split (`data_prep.build --dataset=df40 --splits=test`), reported per method
(`eval/.../metrics.json` breaks results down by method, each against all reals). Results go to
`FFPP_WORKDIR/eval/df40_test/`. Its reals are FF++'s own test videos and its fakes are made
from FF++ videos: the domain is the training one, the forgery methods are new.
"""

from __future__ import annotations

import ml_collections

from configs import ffpp


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return ffpp.cross_dataset(arg, "df40")
