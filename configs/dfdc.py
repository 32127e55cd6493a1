"""MAT on DFDC, or cross-dataset evaluation of an FF++ model on DFDC's test split.

    python -m mat_jax.main --config=configs/dfdc.py --workdir=DIR --config.data.root=DFDC_RECORDS
    python -m mat_jax.main --config=configs/dfdc.py --workdir=FFPP_WORKDIR --mode=eval \
        --config.data.root=DFDC_RECORDS

Same model and recipe as `configs/ffpp.py` (variant arguments pass through), with the
official DFDC training augmentation approximated by the input pipeline's options
(docs/reference.md, "Training recipe": flip, colour jitter, blur, JPEG 65-80; the official loader also
adds noise and to-gray, which the pipeline does not offer). The official loader samples
30 frames per training video. Evaluation results go to `WORKDIR/eval/dfdc_test/`.
"""

from __future__ import annotations

import ml_collections

from configs import ffpp


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    config = ffpp.get_config(arg)  # locked: only its keys can be set
    config.data.dataset = "dfdc"
    config.data.root = ""  # directory of the DFDC records written by data_prep
    config.data.color_jitter = 0.2
    config.data.blur_prob = 0.3
    config.data.jpeg_quality = (65, 80)
    return config
