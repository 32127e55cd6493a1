"""The official MAT recipe on FaceForensics++ (EfficientNet-B4, 380 px, M=4).

    python -m mat_jax.main --config=configs/ffpp.py --workdir=DIR
    python -m mat_jax.main --config=configs/ffpp.py:stage=pretrain --workdir=DIR_STAGE1

Stage 1 (`stage=pretrain`) trains the backbone alone with cross-entropy on its own
logits for 20 epochs; stage 2 (the default, `stage=mat`) builds MAT from the stage-1
checkpoint (`config.init_from`) and trains 30 epochs with
CE + 0.5 * regional loss + CE(AGDA image) + 0.1 * match loss. Numbers follow the
official code (docs/reference.md, "Training recipe"), not the paper, where they differ.

Arguments (comma separated after the file name):
  stage=mat|pretrain  which stage of the recipe
  quality=c23         FF++ compression (c0, c23, c40)
  padding=reference   "reference" reproduces the official static padding; "same" is TF-SAME
  bf16                bfloat16 compute (parameters, BatchNorm statistics and losses stay float32)
  smoke               a few tiny steps, for checking a set-up end to end
  tiny                a tiny model (EfficientNet-B0 at width 0.25 / depth 0.2, 64 px, M=2)
                      for CPU tests and demos; combine with smoke for a minimal run

Expected runtime: `python -m mat_jax.bench` measures it on your machine (and with
`--reference=PATH` next to the official code); README's Speed section quotes its output
with the machine named. The B4 recipe is for GPUs and TPUs; on a CPU use `tiny`/`smoke`.
"""

from __future__ import annotations

import ml_collections

from configs.common import parse_arg


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    arg = parse_arg(arg, stage="mat", quality="c23", padding="reference", smoke=False, tiny=False, bf16=False)
    if arg.stage not in ("mat", "pretrain"):
        raise ValueError(f"stage must be 'mat' or 'pretrain', got {arg.stage!r}")
    config = ml_collections.ConfigDict()
    config.seed = 1234567  # the official code's numpy/torch seed
    config.stage = arg.stage
    # Where stage 2 starts: a stage-1 workdir (its best, else latest checkpoint), one of its
    # checkpoint directories, or a model checkpoint written by `mat-jax-import`
    # (checkpointing.save_model). A backbone-only checkpoint loads into MAT's backbone;
    # empty: random init. Ignored when the workdir already holds a checkpoint (resume).
    config.init_from = ""

    # ------------------------------------------------------------------ model
    config.model = m = ml_collections.ConfigDict()
    m.backbone = "efficientnet-b4"
    m.padding = arg.padding
    m.image_size = 380  # centre crop of the 384 px aligned faces
    m.num_attention_maps = 4  # M
    m.texture_layer = "b2"  # SL_t: shallow textures, 95x95 at 380 px
    m.attention_layer = "b5"  # SL_a: attention maps, 23x23 at 380 px
    m.mid_dims = 256  # width of the head's projections
    m.head_dropout = 0.25  # per-(sample, head) dropout of the textural rows
    m.final_dropout = 0.5  # element-wise dropout of the pooled global feature
    m.drop_connect_rate = 0.2  # backbone stochastic depth, scaled by block index / 32
    m.backbone_dropout = 0.0  # the official code zeroes EfficientNet's top dropout
    m.num_classes = 2  # 0 real, 1 fake
    m.dtype = "bfloat16" if arg.bf16 else "float32"  # compute dtype; bfloat16 on TPU/GPU for speed
    m.width = 0.0  # EfficientNet width multiplier override; 0: the variant's own
    m.depth = 0.0  # EfficientNet depth multiplier override; 0: the variant's own
    m.bn_momentum = 0.0  # backbone BatchNorm decay override; 0: the official 0.99

    # ------------------------------------------------------------------ losses
    config.loss = loss = ml_collections.ConfigDict()
    loss.ce_weight = 1.0
    loss.regional_weight = 0.5
    loss.agda_ce_weight = 1.0  # CE of the second pass on the AGDA image
    loss.match_weight = 0.1
    loss.alpha = 0.05  # centre step, reset when stage 2 starts
    loss.alpha_decay = 0.9  # alpha *= 0.9 after every epoch
    loss.margin = 0.8  # inter-centre margin (released value; config.py default 0.5)
    loss.inner_margin = (0.2, -0.8)  # (real, fake); negative pushes fakes away

    # ------------------------------------------------------------------ AGDA
    config.agda = agda = ml_collections.ConfigDict()
    agda.enabled = arg.stage == "mat"
    agda.threshold = (0.4, 0.6)  # t ~ U(lo, hi), one draw per step
    agda.zoom = (3.0, 5.0)  # sigmoid steepness ~ U(lo, hi)
    agda.scale_factor = 0.5  # degraded copy at half size (paper: 0.3)
    agda.kernel_size = 11
    agda.sigma = 7.0
    agda.noise_rate = 0.1

    # ------------------------------------------------------------------ optimiser
    config.optim = optim = ml_collections.ConfigDict()
    optim.learning_rate = 1e-4  # AdamW
    optim.b1 = 0.9
    optim.b2 = 0.999
    optim.weight_decay = 1e-6
    optim.lr_decay = 0.5  # StepLR: x0.5 ...
    optim.lr_decay_epochs = 5  # ... every 5 epochs (a staircase over steps, so per epoch)

    # ------------------------------------------------------------------ data
    config.data = data = ml_collections.ConfigDict()
    data.dataset = "ffpp"
    data.quality = arg.quality
    # Directory of TFRecords written by `python -m data_prep.build` (gs:// works). "{workdir}"
    # in it stands for the run's --workdir.
    data.root = ""
    # Commands that make the records when data.root holds none yet, run in order by
    # mat_jax.main ("python" is this interpreter; "{workdir}", "{root}" and "{seed}" are
    # filled in). Empty: the records must exist (the real-data path runs data_prep by hand).
    data.prepare = ()
    data.balance = "repeat"  # reals repeated to match fakes, as the official loader does
    data.shuffle_buffer = 8192
    data.hflip = True  # the official FF++ augmentation is a horizontal flip only
    data.random_resized_crop = False
    data.color_jitter = 0.0
    data.jpeg_quality = (0, 0)  # (lo, hi) re-compression; (0, 0) off
    data.blur_prob = 0.0
    # Alignment jitter (off in the official recipe): a random similarity transform of each
    # training crop, as a fresh landmark detection would move it. Max shift (fraction of the
    # crop side, per axis), max scale change (scale in [1/(1+s), 1+s]), max rotation (degrees).
    data.jitter_shift = 0.0
    data.jitter_scale = 0.0
    data.jitter_rotation = 0.0

    # ------------------------------------------------------------------ evaluation
    config.eval = ev = ml_collections.ConfigDict()
    # Video score from frame scores: "mean" (of P(fake): the field's protocol), "mean_logit",
    # "max" or "topk" (mean of the `topk` largest); every rule is also reported side by side.
    ev.aggregation = "mean"
    ev.topk = 3
    # Videos with several people (data_prep tracks each face): each track is scored by
    # `aggregation`, the video by the "max" over its tracks (the FFIW protocol) or their "mean".
    ev.track_reduce = "max"
    # A decision threshold is chosen on val (at the EER and at this FPR) and applied unchanged
    # to test; TPR at FPR 1% and 0.1% are reported on every split.
    ev.target_fpr = 0.01
    ev.calibration_bins = 15  # ECE bins
    ev.temperature_scaling = True  # fit T on val, report test's ECE / Brier before and after
    ev.bootstrap_draws = 1000  # 95% intervals of video AUC / ACC / EER, resampling videos
    ev.seed = 0

    # ------------------------------------------------------------------ robustness
    # --mode=robustness: the best checkpoint on perturbed copies of an eval split (the
    # DeeperForensics-1.0 protocol), one records folder per (perturbation, level) under `root`,
    # made by `python -m data_prep.build ... --perturb=all` ("{root}" is data.root).
    config.robustness = robust = ml_collections.ConfigDict()
    robust.root = "{root}/robustness"
    robust.split = "test"
    robust.prepare = ()  # commands that make the copies, run first like data.prepare
    robust.after_training = False  # also run it at the end of a training run (the demo does)

    # ------------------------------------------------------------------ schedule
    config.train = train = ml_collections.ConfigDict()
    train.batch_size = 60  # global; the official run used ~15 per GPU on 4 GPUs
    train.epochs = 30 if arg.stage == "mat" else 20
    train.steps_per_epoch = 0  # 0: one pass over the (balanced) training split
    train.num_train_steps = -1  # > 0 overrides epochs * steps_per_epoch (schedules keep epochs)
    train.log_every_steps = 50  # metrics are fetched from the device only here (and at saves)
    train.checkpoint_every_steps = 1000  # plus one at every evaluation and at the end
    train.keep_checkpoints = 3  # most recent training checkpoints kept; "best" is kept apart
    train.eval_every_epochs = 1
    train.eval_every_steps = 0  # > 0 overrides eval_every_epochs
    train.eval_batch_size = 64
    train.eval_split = "val"  # the best checkpoint is chosen here, never on "test"
    train.best_metric = "frame/auc"  # key of evaluate's metrics (higher is better)
    train.final_eval_split = "test"  # evaluated once at the end with the best checkpoint; "" skips
    # On SIGTERM: save after the current step (several hosts: the next log step), exit 143.
    train.checkpoint_on_sigterm = True
    train.profile_steps = 0  # > 0: a jax.profiler trace of that many steps into the workdir
    train.profile_first_step = 10  # ... starting this many steps after the (re)start

    if arg.stage == "pretrain":
        config.loss.regional_weight = 0.0
        config.loss.match_weight = 0.0
        config.loss.agda_ce_weight = 0.0
        train.batch_size = 64  # 16 per GPU

    if arg.tiny:
        m.backbone = "efficientnet-b0"
        m.width, m.depth = 0.25, 0.2  # 7 MBConv blocks, 8..80 channels
        m.image_size = 64
        m.num_attention_maps = 2
        m.texture_layer = "b2"
        m.attention_layer = "b5"
        m.mid_dims = 32
        train.eval_batch_size = 8

    if arg.smoke:
        m.backbone = "efficientnet-b0"
        m.image_size = 64
        train.batch_size = 4
        train.epochs = 1
        train.steps_per_epoch = 3
        train.log_every_steps = 1
        train.eval_batch_size = 4
        data.shuffle_buffer = 16
    config.lock()  # a mistyped key (in a derived config or on the command line) raises
    return config


def cross_dataset(arg: str | None, dataset: str) -> ml_collections.ConfigDict:
    """An FF++ model (the same `arg` variants) evaluated on the "test" records of `dataset`:
    a test set here, so there is nothing to validate or select on. `data.root` is left for
    the command line (the records data_prep wrote)."""
    config = get_config(arg)  # locked: only its keys can be set
    config.data.dataset = dataset
    config.data.root = ""
    config.train.eval_split = ""
    config.train.final_eval_split = "test"
    return config
