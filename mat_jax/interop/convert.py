"""Turn a PyTorch weight file into an orbax checkpoint that training and evaluation start from.

    mat-jax-import WEIGHTS --out=DIR [--config=configs/ffpp.py] [--target=mat|backbone]
    python -m mat_jax.interop.convert WEIGHTS --out=DIR ...

* `--target=mat` (default): an official MAT checkpoint (`ckpt_*.pth` with `net.`,
  `attentions.`, ... names), loaded strictly into the MAT that `config.model` describes.
* `--target=backbone`: backbone weights only, e.g. efficientnet_pytorch's ImageNet or
  AdvProp `adv-efficientnet-b4-44fb3a87.pth` (no prefix) or the `net.` part of a stage-1
  checkpoint; the classifier `_fc` is skipped. The written checkpoint holds the backbone
  alone (what stage 1 trains and stage 2 starts from).

`WEIGHTS` may be `.pth`/`.pt` (needs `pip install 'mat_jax[torch]'`), `.npz` or
`.safetensors`. Point `config.init_from` at `DIR` to start a run from it.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from mat_jax import checkpointing
from mat_jax.config_file import load_config
from mat_jax.interop import torch as interop
from mat_jax.models.mat import create_model


def convert(weights: str, out: str, config, *, target: str = "mat", trust_pickle: bool = False) -> dict:
    """Reads `weights`, loads them into the model of `config.model`, writes a checkpoint at `out`.

    Returns a summary dict (also stored as the checkpoint's meta).
    """
    sd = interop.load_state_dict(weights, trust_pickle=trust_pickle)
    if target == "mat":
        model = interop.mat_from_state_dict(sd, config.model, seed=int(config.seed))
        unused = sorted(k for k in sd if k not in interop.expected_names(model))
        saved = model
    elif target == "backbone":
        model = create_model(config.model, seed=int(config.seed))
        unused = interop.load_backbone(model, sd)
        saved = model.backbone
    else:
        raise ValueError(f"target must be 'mat' or 'backbone', got {target!r}")
    meta = {
        "source": os.path.abspath(weights),
        "target": target,
        "backbone": config.model.backbone,
        "num_attention_maps": int(config.model.num_attention_maps),
        "tensors_in_file": len(sd),
        "unused": unused,
        "regional_loss_settings": interop.regional_loss_settings(sd),
    }
    meta["path"] = checkpointing.save_model(out, saved, meta)
    return meta


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="mat-jax-import", description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("weights", help=".pth/.pt, .npz or .safetensors state dict")
    parser.add_argument("--out", required=True, help="checkpoint directory to create (must not exist)")
    parser.add_argument("--config", default="configs/ffpp.py", help="config file[:args] describing the model")
    parser.add_argument("--target", choices=("mat", "backbone"), default="mat")
    parser.add_argument("--trust-pickle", action="store_true",
                        help="allow .pth files that hold Python objects (only for files you trust)")
    args = parser.parse_args(argv)
    try:
        summary = convert(args.weights, args.out, load_config(args.config), target=args.target,
                          trust_pickle=args.trust_pickle)
    except (ValueError, FileNotFoundError, FileExistsError, ImportError) as e:
        print(f"mat-jax-import: error: {e}", file=sys.stderr)
        return 2
    extras = [k for k in summary["unused"] if not k.endswith("num_batches_tracked")]
    print(f"wrote {summary['path']} ({summary['target']}, {summary['backbone']}, "
          f"M={summary['num_attention_maps']}) from {summary['tensors_in_file']} tensors")
    if extras:
        print(f"  not loaded ({len(extras)}): {', '.join(extras[:10])}{' ...' if len(extras) > 10 else ''}")
    if summary["regional_loss_settings"]:
        settings = {k: (np.round(v, 6).tolist() if isinstance(v, list) else round(v, 6))
                    for k, v in summary["regional_loss_settings"].items()}
        print(f"  the file's regional-loss settings (set them in config.loss to continue it): {settings}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
