"""Its one job: the official PyTorch MAT code, loaded from the user's checkout and run as one step.

`load_official(PATH)` finds and imports a checkout of the official code (GitHub repository
yoctta/multiple-attention) or raises `NotACheckout` naming what is wrong with PATH;
`build_official` turns it into a callable running one train step (AGDA on or off) or eval
forward of a config on the benchmarks' synthetic batch. `mat_jax.bench_reference` times
those beside ours.

Its modules are loaded from PATH when the benchmark runs; none of its code is copied into this
repository (it has no licence). Needs torch and kornia (`pip install -e .[reference]`); the
official AGDA.py imports kornia.

Taken from the checkout, unchanged: models/MAT.py (the model, `train_batch`, the AGDA second
pass and match loss inside `MAT.forward`, the regional loss), models/efficientnet/,
models/xception.py, AGDA.py, utils.py (`ACC`), config.py's `train_config` (fed with this
config's numbers on top of the recipe `ff-all-c23` + backbone, like main.py's `aexp`; it
builds the model, AGDA and optimiser arguments and the loss weights) and train.py's
`train_loss` (that function alone, read with `ast`: importing train.py asserts CUDA and
loads the data pipeline).

What this module does instead of train.py's loop, which needs CUDA, NCCL and DDP:
  * one process, one device: CUDA when JAX runs on a GPU and torch sees one, else the CPU.
    No DistributedDataParallel or SyncBatchNorm: at world size 1 they compute the same
    step (DDP's hook overhead is not counted);
  * the train step is the body of train.py's `run` for phase 'train': `net.train()`,
    `net(X, y, train_batch=True, AG=AG)` with AG=None without AGDA (as train.py does when
    AGDA_loss_weight is 0), `train_loss`, backward, `AdamW.step()`, `zero_grad()`, `ACC`
    on the logits; only the cross-rank metric averaging (`dist_average`) is left out;
    warnings are silenced as train.py does;
  * the eval forward is `net.eval()` and `net(X)` under `torch.no_grad()`;
  * the backbone comes from `EfficientNet.from_name` with random weights instead of
    `from_pretrained`, which downloads AdvProp weights (Xception's ImageNet download is
    skipped the same way), with this config's width/depth/drop-connect/dropout overrides
    (tiny configs). Weights do not change the time of a step;
  * if torchvision is not installed, a stub stands in for it: MAT.py imports
    torchvision.models but never uses it. A checkout without models/efficientnet/__init__.py
    gets `EfficientNet` from models/efficientnet/model.py, which is all that file would export.
"""

from __future__ import annotations

import ast
import contextlib
import importlib
import importlib.machinery
import importlib.util
import random
import subprocess
import sys
import types
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import numpy as np

from mat_jax import state as state_lib, timing

# Present in every commit of yoctta/multiple-attention, and all of them are loaded.
REQUIRED_FILES = ("models/MAT.py", "models/efficientnet/model.py", "models/efficientnet/utils.py",
                  "models/xception.py", "AGDA.py", "utils.py", "config.py", "train.py")  # fmt: skip
# Top-level module names the official code imports itself by; ours never use them.
_OFFICIAL_TOP = ("models", "utils", "AGDA", "config")


# What the official code imports beyond torch's own packages (torchvision is stubbed).
_INSTALL = {"torch": "pip install -e .[reference]", "kornia": "pip install -e .[reference]"}


class NotACheckout(ValueError):
    """--reference does not name a usable checkout of the official code."""


# ---------------------------------------------------------------- loading the checkout
def _load(name: str, file: Path | None, package_dir: Path | None = None) -> types.ModuleType:
    if file is not None and file.is_file():
        locations = [str(package_dir)] if package_dir else None
        spec = importlib.util.spec_from_file_location(name, file, submodule_search_locations=locations)
    else:  # a folder without __init__.py: an empty package over it
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(package_dir)]
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    parent, _, child = name.rpartition(".")
    if parent:
        setattr(sys.modules[parent], child, module)
    if spec.loader is not None:
        spec.loader.exec_module(module)
    return module


def _function_from(file: Path, name: str) -> Callable:
    """One top-level function of `file`, compiled alone (its module's imports never run)."""
    tree = ast.parse(file.read_text(), filename=str(file))
    node = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name), None)
    if node is None:
        raise NotACheckout(f"{file}: no function {name}(); expected train.py of yoctta/multiple-attention")
    namespace: dict[str, Any] = {}
    exec(compile(ast.Module(body=[node], type_ignores=[]), str(file), "exec"), namespace)  # noqa: S102
    return namespace[name]


def _commit(root: Path) -> str:
    try:
        cmd = ["git", "-C", str(root), "rev-parse", "HEAD"]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() if out.returncode == 0 else "unknown (not a git checkout)"


def load_official(path: str) -> types.SimpleNamespace:
    """The official model, AGDA, config and loss from the checkout at `path`."""
    root = Path(path).expanduser()
    expected = "a checkout of the official MAT code, the GitHub repository yoctta/multiple-attention"
    if not root.is_dir():
        raise NotACheckout(f"--reference={path}: no such directory; expected {expected}")
    missing = [f for f in REQUIRED_FILES if not (root / f).is_file()]
    if missing:
        raise NotACheckout(f"--reference={path}: not {expected} (missing {', '.join(missing)}); "
                           "pass the folder that holds models/MAT.py, AGDA.py and train.py")  # fmt: skip
    root = root.resolve()
    train_loss = _function_from(root / "train.py", "train_loss")
    stub_torchvision = importlib.util.find_spec("torchvision") is None
    names = _OFFICIAL_TOP + (("torchvision",) if stub_torchvision else ())
    saved = {n: m for n, m in sys.modules.items() if n.split(".")[0] in names}
    for n in saved:
        del sys.modules[n]
    try:
        if stub_torchvision:
            sys.modules["torchvision"] = tv = types.ModuleType("torchvision")
            sys.modules["torchvision.models"] = tv.models = types.ModuleType("torchvision.models")
        utils = _load("utils", root / "utils.py")
        _load("models", root / "models" / "__init__.py", root / "models")
        eff = _load("models.efficientnet", root / "models" / "efficientnet" / "__init__.py",
                    root / "models" / "efficientnet")  # fmt: skip
        if not hasattr(eff, "EfficientNet"):
            eff.EfficientNet = importlib.import_module("models.efficientnet.model").EfficientNet
        mat = importlib.import_module("models.MAT")
        xception = importlib.import_module("models.xception")
        agda = _load("AGDA", root / "AGDA.py")
        config = _load("config", root / "config.py")
    except ModuleNotFoundError as e:
        fix = _INSTALL.get(e.name or "")
        if fix is None:
            raise NotACheckout(f"--reference={path}: importing the official code failed ({e})") from e
        raise NotACheckout(
            f"--reference={path}: the official code imports {e.name}, not installed here: {fix}"
        ) from e
    except Exception as e:  # noqa: BLE001 - any failure of foreign code is reported with its path
        raise NotACheckout(f"--reference={path}: importing the official code failed "
                           f"({type(e).__name__}: {e}); expected {expected}") from e  # fmt: skip
    finally:
        # The official modules keep their own references; the names go back to their owners.
        for n in [n for n in sys.modules if n.split(".")[0] in names]:
            del sys.modules[n]
        sys.modules.update(saved)
    return types.SimpleNamespace(
        root=root, commit=_commit(root), MAT=mat.MAT, EfficientNet=eff.EfficientNet, xception=xception,
        AGDA=agda.AGDA, train_config=config.train_config, train_loss=train_loss, ACC=utils.ACC,
        torchvision_stubbed=stub_torchvision,
    )  # fmt: skip


# ---------------------------------------------------------------- the official steps
def official_config(off, config, batch: int, *, agda: bool = True):
    """The checkout's `train_config` for this config's model, losses, AGDA and optimiser.

    Without AGDA its loss weight is 0: that is how train.py turns AGDA off (`run` then
    passes AG=None and `train_loss` leaves out the AGDA CE and match terms).
    """
    m, loss, o = config.model, config.loss, config.optim
    size = int(m.image_size)
    params = dict(
        feature_layer=m.texture_layer if state_lib.is_mat(config) else "logits",
        attention_layer=m.attention_layer, num_attentions=int(m.num_attention_maps),
        mid_dims=int(m.mid_dims), dropout_rate=float(m.head_dropout),
        drop_final_rate=float(m.final_dropout), num_classes=int(m.num_classes),
        alpha=float(loss.alpha), margin=float(loss.margin),
        inner_margin=[float(v) for v in loss.inner_margin], resize=(size, size), batch_size=batch,
        ensemble_loss_weight=float(loss.ce_weight), aux_loss_weight=float(loss.regional_weight),
        AGDA_loss_weight=float(loss.agda_ce_weight) if agda else 0.0,
        match_loss_weight=float(loss.match_weight),
        learning_rate=float(o.learning_rate), adam_betas=(float(o.b1), float(o.b2)),
        weight_decay=float(o.weight_decay),
    )  # fmt: skip
    a = config.agda  # AGDA.mod_func tests `type(threshold) == tuple`: keep tuples tuples
    params.update(AGDA_kernel_size=int(a.kernel_size), AGDA_sigma=float(a.sigma),
                  AGDA_scale_factor=float(a.scale_factor), AGDA_noise_rate=float(a.noise_rate),
                  AGDA_threshold=tuple(float(v) for v in a.threshold),
                  AGDA_zoom=tuple(float(v) for v in a.zoom))  # fmt: skip
    backbone = m.backbone.lower()
    return off.train_config("mat_jax_bench", ["ff-all-c23", backbone], **params)


@contextlib.contextmanager
def _offline_backbone(off, model_cfg):
    """MAT.__init__ downloads pretrained backbones: build them from their names instead."""
    overrides = {"drop_connect_rate": float(model_cfg.drop_connect_rate),
                 "dropout_rate": float(model_cfg.backbone_dropout)}  # fmt: skip
    for ours, theirs in (("width", "width_coefficient"), ("depth", "depth_coefficient"),
                         ("bn_momentum", "batch_norm_momentum")):  # fmt: skip
        if model_cfg.get(ours):  # 0: the variant's own
            overrides[theirs] = float(model_cfg[ours])

    def from_pretrained(cls, model_name, advprop=False, num_classes=1000, in_channels=3, escape=""):
        params = {**overrides, "num_classes": num_classes}
        return cls.from_name(model_name, override_params=params, escape=escape)

    efficientnet, zoo = off.EfficientNet, off.xception.model_zoo
    original = efficientnet.__dict__["from_pretrained"]
    efficientnet.from_pretrained = classmethod(from_pretrained)
    off.xception.model_zoo = types.SimpleNamespace(load_url=lambda *a, **k: {})
    try:
        yield
    finally:
        efficientnet.from_pretrained = original
        off.xception.model_zoo = zoo


def official_device():
    """The device of the official side: CUDA when JAX runs on a GPU and torch sees one, else the CPU."""
    import torch  # deferred: heavy, and needed only with --reference

    gpu = jax.default_backend() == "gpu" and torch.cuda.is_available()
    return torch.device("cuda" if gpu else "cpu")


def build_official(off, config, case: str, *, batch: int, device) -> Callable[[], None]:
    """A callable running one official step of `case`, returning when the device is done."""
    import torch  # deferred: heavy, and needed only with --reference

    cfg = official_config(off, config, batch, agda=case == "train")
    torch.manual_seed(int(config.seed))
    random.seed(int(config.seed))  # AGDA draws its threshold and steepness with `random`
    with _offline_backbone(off, config.model), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = off.MAT(**cfg.net_config).to(device)
    host = timing.synthetic_host_batch(config, batch)
    x = torch.from_numpy(host["image"].transpose(0, 3, 1, 2).copy()).to(device)
    y = torch.from_numpy(host["label"].astype(np.int64)).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    if case == "eval":
        net.eval()

        def step():
            with torch.no_grad():
                net(x)

    else:
        # As train.py's `run`: no AGDA module when its loss weight is 0.
        ag = off.AGDA(**cfg.AGDA_config).to(device) if cfg.AGDA_loss_weight != 0 else None
        optimizer = torch.optim.AdamW(net.parameters(), lr=cfg.learning_rate, betas=cfg.adam_betas,
                                      weight_decay=cfg.weight_decay)  # fmt: skip
        logits = "logits" if cfg.feature_layer == "logits" else "ensemble_logit"
        net.train()

        def step():
            with torch.set_grad_enabled(True):
                loss_pack = net(x, y, train_batch=True, AG=ag)
            off.train_loss(loss_pack, cfg).backward()
            optimizer.step()
            optimizer.zero_grad()
            with torch.no_grad():
                off.ACC(loss_pack[logits], y)

    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # as train.py's main_worker
            step()
        sync()

    return run
