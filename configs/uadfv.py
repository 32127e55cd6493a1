"""Cross-dataset evaluation on UADFV of a model trained on FF++.

    python -m mat_jax.main --config=configs/uadfv.py --workdir=FFPP_WORKDIR --mode=eval \
        --config.data.root=UADFV_RECORDS

Same model as `configs/ffpp.py` (pass the same variant arguments, e.g. `:tiny`); the records
are the test part of data_prep's fixed split by person (`data_prep.build --dataset=uadfv
--splits=test`; UADFV ships no split). Results go to `FFPP_WORKDIR/eval/uadfv_test/`.
"""

from __future__ import annotations

import ml_collections

from configs import ffpp


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return ffpp.cross_dataset(arg, "uadfv")
