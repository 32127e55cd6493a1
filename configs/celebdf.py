"""Cross-dataset evaluation on Celeb-DF (v2) of a model trained on FF++.

    python -m mat_jax.main --config=configs/celebdf.py --workdir=FFPP_WORKDIR --mode=eval \
        --config.data.root=CELEBDF_RECORDS

Same model as `configs/ffpp.py` (pass the same variant arguments, e.g. `:tiny`); the
records are Celeb-DF's official 518-video test list (`data_prep`), so only the "test"
split exists. Results go to `FFPP_WORKDIR/eval/celebdf_test/`. Evaluating B4 at 380 px
on the 518 videos x 20 frames takes minutes on one GPU and about an hour on a 2-core CPU.
"""

from __future__ import annotations

import ml_collections

from configs import ffpp


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    return ffpp.cross_dataset(arg, "celebdf")
