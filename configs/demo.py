"""The offline demo: a small MAT trained on the CPU on a generated FF++-shaped tree.

    python -m mat_jax.main --config=configs/demo.py --workdir=workdir/demo

The config names its data with data_prep's own commands (`config.data.prepare`), which
mat_jax.main runs before training when `config.data.root` (`<workdir>/demo_data/records`)
holds no records yet: `python -m data_prep.demo` makes the tree (real faces from photos
shipped in pip packages, with motion; fakes made from them by self-blending) and
`python -m data_prep.build --dataset=demo` prepares it. Then it trains MAT (both losses,
AGDA) with the official recipe's structure at a CPU size, evaluates on the demo's val split
for model selection and on its test split at the end, and leaves TensorBoard logs,
checkpoints, metrics JSON/CSV and plots in the workdir; last, the best checkpoint is scored
on the DeeperForensics-1.0 perturbations of the test split (`--mode=robustness`).

Arguments: `small` (a few steps, for tests); `steps=N`.
"""

from __future__ import annotations

import ml_collections

from configs import ffpp
from configs.common import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = parse_arg(arg, small=False, steps=0)
    config = ffpp.get_config("tiny")
    config.seed = 0

    # The demo tree. Many short videos rather than few long ones: with two source photos,
    # variety of identities and motion is what keeps a from-scratch model from memorising (96
    # videos of 8 frames test better than 48 of 16 and cost about the same to make).
    videos = "96,10,10"  # real videos per train, val, test split (each with one fake)
    frames = 8  # frames per video, all of them sampled in every split
    video_size = "320x240"
    crop_size = 128  # aligned face crops (the "bench" template, margin 1.3)

    # The "tiny" MAT of configs/ffpp.py (EfficientNet-B0 at width 0.25, depth 0.2, 64 px)
    # with four attention maps. From scratch and for a few hundred steps, the backbone's
    # BatchNorm averages must move faster than the official 0.99, or eval mode lags.
    m = config.model
    m.num_attention_maps = 4
    m.mid_dims = 64
    m.bn_momentum = 0.9

    config.data.dataset = "demo"
    config.data.root = "{workdir}/demo_data/records"  # made on the first run (data.prepare)
    config.data.shuffle_buffer = 2048
    # No alignment jitter (data.jitter_*): val/test faces are cut with landmarks found on each
    # video, and so are the train faces here (self-blended fakes never reuse their real
    # video's landmarks, data_prep.sources), so training already sees a detector's geometry.
    # Even 1 % shift / 2 % scale / 1 degree slowed this small budget down (test video AUC
    # 0.87 and 0.69 for two seeds against 0.95 and 0.83 without).

    config.optim.learning_rate = 1e-3  # from scratch, no ImageNet weights offline
    config.optim.lr_decay_epochs = 1

    t = config.train
    t.batch_size = 16
    t.epochs = 2
    t.steps_per_epoch = 0  # one pass over the balanced train split (1536 faces -> 96 steps)
    t.log_every_steps = 48  # a progress line (steps/s, ETA) every 48 steps keeps the console short
    t.checkpoint_every_steps = 96
    t.eval_every_steps = 48  # four looks at val to pick the best checkpoint
    t.eval_batch_size = 64

    if arg.steps:
        t.num_train_steps = arg.steps
    perturb = "all"
    if arg.small:
        videos, frames, video_size, crop_size = "4,2,2", 8, "160x128", 64
        perturb = "CS:5,GB:5,VC:5"
        m.num_attention_maps = 2
        t.batch_size = 8
        t.epochs = 1
        t.num_train_steps = 4
        t.log_every_steps = 2
        t.checkpoint_every_steps = 2
        t.eval_every_epochs = 1
        t.eval_every_steps = 0
        t.eval_batch_size = 16
    raw = "{workdir}/demo_data/raw"
    build = (f"python -m data_prep.build --dataset=demo --root={raw} --out={{root}} --recipe=bench "
             f"--size={crop_size} --frames={frames} --workers=2 --no_progress")
    config.data.prepare = (
        (f"python -m data_prep.demo --out={raw} --videos={videos} --frames={frames} --size={video_size} "
         "--qualities=c23 --celebdf=0,0,0 --seed={seed}"),
        build,
    )
    # After training, the best checkpoint on the DeeperForensics-1.0 perturbations of the test
    # split (all 35; three at their worst level for `small`), cut with the clean faces' geometry.
    config.robustness.prepare = (f"{build} --splits=test --perturb={perturb}",)
    config.robustness.after_training = True
    return config
