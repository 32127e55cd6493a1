"""Import PyTorch state dicts: official MAT checkpoints and efficientnet_pytorch weights.

This is the only place that knows PyTorch names and the NCHW/OIHW layout. torch itself
is imported lazily and only to read `.pth` files; `.npz` and `.safetensors` need none.

    from mat_jax.interop.torch import load_state_dict, mat_from_state_dict
    sd = load_state_dict(path)                     # dict[str, np.ndarray]
    model = mat_from_state_dict(sd, config.model)  # an nnx MAT module
    out = model(x, train=False)                    # x: (B, H, W, 3) in [-1, 1]
"""

from __future__ import annotations

import os
import re
import zipfile
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from mat_jax.models.mat import MAT

# Buffers of the official model that carry no learnable state of ours: checked or
# reported, never loaded into a variable.
_SKIPPED_SUFFIXES = (".num_batches_tracked",)
_SETTINGS = ("auxiliary_loss.alpha", "auxiliary_loss.inner_margin")
_MASK = "attentions.mask"

_LEAF = {"kernel": "weight", "bias": "bias", "scale": "weight", "mean": "running_mean", "var": "running_var"}

# MAT head modules whose PyTorch names are nn.Sequential indices (activations in between).
_SEQUENTIAL = {"projection_local": ("projection_local", (0, 2)), "ensemble_classifier": ("ensemble_classifier_fc", (0, 2))}


class StateDictMismatch(ValueError):
    """A state dict that does not fit the model; the message lists every offending tensor."""


# --------------------------------------------------------------------------- reading


def load_state_dict(path: str | os.PathLike, *, trust_pickle: bool = False) -> dict[str, np.ndarray]:
    """Reads a state dict from `.pth`/`.pt`/`.ckpt` (torch), `.npz` or `.safetensors`.

    Checkpoints that wrap the weights (`{"state_dict": ...}` as the official trainer
    saves, or `{"model": ...}`) are unwrapped and a DDP `module.` prefix is removed.
    `.pth` files are read with `weights_only=True` unless `trust_pickle` is set.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no such weight file: {path}")
    suffix = os.path.splitext(path)[1].lower()
    try:
        if suffix in (".pth", ".pt", ".ckpt", ".bin"):
            raw = _read_torch(path, trust_pickle)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                raw = {k: z[k] for k in z.files}
        elif suffix == ".safetensors":
            from safetensors.numpy import load_file

            raw = load_file(path)
        else:
            raise ValueError(
                f"{path}: unknown weight format {suffix!r}; expected .pth/.pt (PyTorch), .npz or .safetensors"
            )
    except (zipfile.BadZipFile, EOFError, OSError, RuntimeError) as e:
        raise ValueError(
            f"{path}: cannot read this weight file ({type(e).__name__}: {e}); it is probably truncated "
            "or corrupt: download or copy it again."
        ) from e
    except Exception as e:  # safetensors raises its own error types for bad headers
        if type(e).__name__ == "SafetensorError":
            raise ValueError(f"{path}: not a valid safetensors file ({e}); download or copy it again.") from e
        raise
    return _unwrap(raw, path)


def _read_torch(path: str, trust_pickle: bool) -> Mapping[str, Any]:
    try:
        import torch
    except ImportError as e:
        raise ImportError(
            f"reading {path} needs PyTorch: pip install 'mat_jax[torch]' (or convert the file to .npz / "
            ".safetensors elsewhere)"
        ) from e
    try:
        obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as e:
        if "Weights only load failed" in str(e):
            raise ValueError(
                f"{path}: the checkpoint holds Python objects besides tensors, which weights_only loading "
                "refuses. If you trust its source, pass trust_pickle=True (CLI: --trust-pickle)."
            ) from e
        raise
    return obj


def _unwrap(raw: Mapping[str, Any], path: str) -> dict[str, np.ndarray]:
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(raw, Mapping) and key in raw and isinstance(raw[key], Mapping):
            raw = raw[key]
            break
    if not isinstance(raw, Mapping):
        raise ValueError(f"{path}: expected a mapping of tensor names to tensors, got {type(raw).__name__}")
    out = {}
    for name, value in raw.items():
        if not hasattr(value, "shape"):
            continue  # training logs and counters stored beside the weights
        if hasattr(value, "detach"):
            value = value.detach().cpu().numpy()
        out[name.removeprefix("module.")] = np.asarray(value)
    if not out:
        raise ValueError(f"{path}: holds no tensors")
    return out


# --------------------------------------------------------------------------- naming


def _backbone_name(path: tuple, backbone_kind: str) -> str:
    parts = []
    i = 0
    while i < len(path):
        p = path[i]
        if backbone_kind == "efficientnet":
            parts.append(str(p) if isinstance(p, int) else f"_{p}")
        else:
            parts.append(_xception_part(path, i))
        i += 1
    return ".".join(x for x in parts if x)


def _xception_part(path: tuple, i: int) -> str:
    p = path[i]
    prev = path[i - 1] if i > 0 else None
    if prev == "blocks" and isinstance(p, int):
        return ""  # folded into "blocks" below
    if p == "blocks":
        return f"block{path[i + 1] + 1}"
    if prev in ("sep_convs", "bns") and isinstance(p, int):
        return ""
    if p in ("sep_convs", "bns"):
        return f"rep.{_xception_rep_index(path, i)}"
    return str(p)


def _xception_rep_index(path: tuple, i: int) -> int:
    # In PyTorch each repetition is [ReLU, SeparableConv2d, BatchNorm2d] inside `rep`;
    # block1 (start_with_relu=False) drops the leading ReLU.
    j = path[i + 1]
    block = path[i - 1] if path[i - 2] == "blocks" else None
    offset = 0 if block == 0 else 1
    return 3 * j + offset + (1 if path[i] == "bns" else 0)


def torch_name(path: tuple, backbone_kind: str) -> str:
    """PyTorch state-dict name of one NNX variable path of MAT."""
    if path == ("centers",):
        return "auxiliary_loss.feature_centers"
    *mods, leaf = path
    head = mods[0]
    if head == "backbone":
        prefix = "net." + _backbone_name(tuple(mods[1:]), backbone_kind)
    elif head in _SEQUENTIAL:
        name, idx = _SEQUENTIAL[head]
        prefix = f"{name}.{idx[mods[1]]}"
    else:
        prefix = ".".join(str(m) for m in mods)
    return f"{prefix}.{_LEAF[leaf]}"


def to_jax_layout(value: np.ndarray, leaf) -> np.ndarray:
    if leaf == "kernel" and value.ndim == 4:
        return np.transpose(value, (2, 3, 1, 0))  # OIHW -> HWIO
    if leaf == "kernel" and value.ndim == 2:
        return value.T  # (out, in) -> (in, out)
    return value


def to_torch_layout(value: np.ndarray, leaf) -> np.ndarray:
    """Inverse of `to_jax_layout`: HWIO -> OIHW, (in, out) -> (out, in)."""
    if leaf == "kernel" and value.ndim == 4:
        return np.transpose(value, (3, 2, 0, 1))
    if leaf == "kernel" and value.ndim == 2:
        return value.T
    return value


def state_dict_from_model(model) -> dict[str, np.ndarray]:
    """The PyTorch state dict (official names, NCHW/OIHW layouts) of an NNX MAT.

    With `attentions.mask` included, its output loads back with `mat_from_state_dict`
    and into the official PyTorch model (`strict=False`: no `num_batches_tracked`).
    """
    flat = dict(nnx.to_flat_state(nnx.state(model)))
    out = {
        name: np.ascontiguousarray(to_torch_layout(np.asarray(flat[path].get_value()), path[-1]))
        for name, path in expected_names(model).items()
    }
    mask = np.zeros((1, 1, 24, 24), np.float32)
    mask[..., 2:-2, 2:-2] = 1.0
    out[_MASK] = mask
    return out


def _backbone_kind(model) -> str:
    return "xception" if type(model.backbone).__name__ == "Xception" else "efficientnet"


def expected_names(model) -> dict[str, tuple]:
    """PyTorch name -> NNX path for every variable of `model`."""
    kind = _backbone_kind(model)
    return {torch_name(path, kind): path for path, _ in nnx.to_flat_state(nnx.state(model))}


# --------------------------------------------------------------------------- loading


def load_into(model, sd: Mapping[str, np.ndarray], *, strict: bool = True, source: str = "state dict") -> list[str]:
    """Copies the state dict `sd` into `model` in place; returns the names it did not use.

    Every variable whose PyTorch name is present is loaded. With
    `strict`, any missing, unexpected or mis-shaped tensor raises StateDictMismatch
    naming all of them; without it, only shape mismatches of present names raise.
    """
    names = expected_names(model)
    flat = dict(nnx.to_flat_state(nnx.state(model)))

    missing, bad_shape, updates = [], [], {}
    for name, path in names.items():
        if name not in sd:
            missing.append(name)
            continue
        var = flat[path]
        target = var.get_value()
        value = to_jax_layout(np.asarray(sd[name]), path[-1])
        if value.shape != target.shape:
            bad_shape.append(f"{name}: file {tuple(sd[name].shape)}, model expects "
                             f"{_torch_shape(target.shape, path[-1])}")
            continue
        updates[path] = value.astype(target.dtype)

    leftover = [k for k in sd if k not in names]
    unexpected = [k for k in leftover if not _is_known_extra(k)]
    _check_mask(sd, bad_shape, model)
    if bad_shape or (strict and (missing or unexpected)):
        raise StateDictMismatch(_mismatch_message(source, missing if strict else [], unexpected if strict else [],
                                                  bad_shape, _describe(sd)))
    for path, value in updates.items():
        flat[path].set_value(jnp.asarray(value))
    return leftover


def _torch_shape(shape: tuple, leaf: str) -> tuple:
    if leaf == "kernel" and len(shape) == 4:
        return (shape[3], shape[2], shape[0], shape[1])
    if leaf == "kernel" and len(shape) == 2:
        return (shape[1], shape[0])
    return tuple(shape)


def _is_known_extra(name: str) -> bool:
    return name.endswith(_SKIPPED_SUFFIXES) or name in _SETTINGS or name == _MASK


def _check_mask(sd: Mapping[str, np.ndarray], problems: list, model) -> None:
    if _MASK not in sd:
        return
    mask = np.asarray(sd[_MASK])
    expected = np.zeros((1, 1, 24, 24), np.float32)
    expected[..., 2:-2, 2:-2] = 1.0
    if mask.shape != expected.shape or not np.array_equal(mask, expected):
        problems.append(f"{_MASK}: differs from the official 24x24 border mask this port hard-codes")


def _describe(sd: Mapping[str, np.ndarray]) -> str:
    """A one-line guess of the architecture a state dict was saved from."""
    hints = []
    w = sd.get("attentions.conv2.weight")
    if w is not None:
        hints.append(f"{w.shape[0]} attention maps on a {w.shape[1]}-channel attention layer")
    w = sd.get("texture_enhance.conv_extract.weight")
    if w is not None:
        hints.append(f"a {w.shape[0]}-channel texture layer")
    w = sd.get("net._conv_stem.weight", sd.get("_conv_stem.weight"))
    if w is not None:
        hints.append(f"an EfficientNet with a {w.shape[0]}-channel stem")
    if "net.block1.rep.0.conv1.weight" in sd or "block1.rep.0.conv1.weight" in sd:
        hints.append("an Xception backbone")
    return "; ".join(hints)


def _mismatch_message(source, missing, unexpected, bad_shape, description) -> str:
    lines = [f"{source} does not match the model built from the config:"]
    for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", bad_shape)):
        if items:
            lines.append(f"  {len(items)} {title}:")
            lines.extend(f"    {x}" for x in items)
    if description:
        lines.append(f"  the file looks like: {description}")
    lines.append("  Check config.model (backbone, num_attention_maps, texture_layer, attention_layer, mid_dims) "
                 "against the run that produced the file.")
    return "\n".join(lines)


def regional_loss_settings(state_dict: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """alpha and inner margins saved in an official checkpoint (reported, not loaded)."""
    out = {}
    if "auxiliary_loss.alpha" in state_dict:
        out["alpha"] = float(np.asarray(state_dict["auxiliary_loss.alpha"]))
    if "auxiliary_loss.inner_margin" in state_dict:
        out["inner_margin"] = [float(x) for x in np.asarray(state_dict["auxiliary_loss.inner_margin"])]
    return out


def mat_from_state_dict(state_dict: Mapping[str, np.ndarray], model_cfg, *, seed: int = 0):
    """Builds MAT from `model_cfg` and loads an official MAT state dict into it (strict).

    The model is built abstractly (shapes only): a strict load replaces every variable,
    so running the random initialisation first would be wasted work.
    """
    cfg = dict(model_cfg)
    model = nnx.eval_shape(lambda: MAT(cfg, rngs=nnx.Rngs(seed)))
    load_into(model, state_dict, strict=True, source="MAT state dict")
    return model


def load_backbone(model, state_dict: Mapping[str, np.ndarray], *, skip_classifier: bool = True) -> list[str]:
    """Loads backbone weights only: efficientnet_pytorch ImageNet/AdvProp files (no prefix) or
    the `net.` part of a MAT / stage-1 checkpoint. The classifier (`_fc`, `last_linear`) is
    skipped by default, as its class count rarely matches. Returns the names left unused."""
    has_net = any(k.startswith("net.") for k in state_dict)
    sd = {k.removeprefix("net."): v for k, v in state_dict.items() if k.startswith("net.") or not has_net}
    sd = {"net." + k: v for k, v in sd.items() if not (skip_classifier and _is_classifier(k))}
    names = {k: p for k, p in expected_names(model).items() if k.startswith("net.")}
    wanted = {k for k in names if not (skip_classifier and _is_classifier(k.removeprefix("net.")))}
    missing = sorted(wanted - set(sd))
    if missing:
        raise StateDictMismatch(_mismatch_message("backbone state dict", missing, [], [], _describe(state_dict)))
    return load_into(model, sd, strict=False, source="backbone state dict")


def _is_classifier(name: str) -> bool:
    return re.match(r"^(_fc|last_linear)\.", name) is not None
