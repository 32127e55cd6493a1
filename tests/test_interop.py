"""Weight import: file formats, generalisation beyond the parity setting, and clear errors."""

from __future__ import annotations

import zipfile

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

from configs.ffpp import get_config
from mat_jax.interop import torch as interop
from mat_jax.models.mat import create_model


# One jitted forward for the module: models with the same structure share its compilation.
forward = nnx.jit(lambda m, x: m(x, train=False))


def small_config(m: int = 3) -> ml_collections.ConfigDict:
    """A MAT unlike the parity one: B0 backbone, M=3, other layers and widths."""
    cfg = get_config().model
    cfg.backbone = "efficientnet-b0"
    cfg.num_attention_maps = m
    cfg.texture_layer = "b3"
    cfg.attention_layer = "b4"
    cfg.mid_dims = 24
    cfg.image_size = 64
    return cfg


@pytest.fixture(scope="module")
def source():
    """A randomly initialised small MAT (seed 7), its state dict and its eval outputs on a batch of 3."""
    cfg = small_config()
    model = create_model(cfg, seed=7)
    x = jax.random.uniform(jax.random.key(3), (3, 64, 64, 3), minval=-1, maxval=1)
    out = forward(model, x)
    return cfg, interop.state_dict_from_model(model), x, np.asarray(out["logits"]), np.asarray(out["attention_maps"])


def check_same_outputs(model, source):
    _, _, x, logits, maps = source
    out = forward(model, x)
    np.testing.assert_array_equal(np.asarray(out["logits"]), logits)
    np.testing.assert_array_equal(np.asarray(out["attention_maps"]), maps)
    assert out["attention_maps"].shape[-1] == 3 and out["feature_matrix"].shape[:2] == (3, 3)


def test_roundtrip_npz_and_safetensors(source, tmp_path):
    cfg, sd, *_ = source
    # PyTorch layouts: conv weights OIHW, linears (out, in).
    assert sd["net._conv_stem.weight"].shape == (32, 3, 3, 3)
    assert sd["attentions.conv2.weight"].shape == (3, 80, 1, 1)  # M=3 maps from b4 (80 channels)
    assert sd["projection_local.0.weight"].shape == (24, 3 * 40)
    np.savez(tmp_path / "w.npz", **sd)
    model = interop.mat_from_state_dict(interop.load_state_dict(tmp_path / "w.npz"), cfg)
    check_same_outputs(model, source)

    from safetensors.numpy import save_file

    save_file(sd, str(tmp_path / "w.safetensors"))
    model = interop.mat_from_state_dict(interop.load_state_dict(tmp_path / "w.safetensors"), cfg)
    check_same_outputs(model, source)


@pytest.mark.torch
def test_roundtrip_pth_official_checkpoint_layout(source, tmp_path):
    torch = pytest.importorskip("torch")
    cfg, sd, *_ = source
    # As the official trainer saves it: a dict with logs beside the state dict, DDP prefix.
    ckpt = {
        "logs": {"epoch": 3},
        "state_dict": {"module." + k: torch.from_numpy(v) for k, v in sd.items()},
    }
    ckpt["state_dict"]["module.net._bn0.num_batches_tracked"] = torch.tensor(5)
    torch.save(ckpt, tmp_path / "ckpt_3.pth")
    loaded = interop.load_state_dict(tmp_path / "ckpt_3.pth")
    assert "net._bn0.num_batches_tracked" in loaded and not any(k.startswith("module.") for k in loaded)
    check_same_outputs(interop.mat_from_state_dict(loaded, cfg), source)


@pytest.mark.torch
def test_conv_layout_matches_torch_conv(source):
    """The OIHW -> HWIO mapping is the one torch's own conv uses (not just self-consistent)."""
    torch = pytest.importorskip("torch")
    _, sd, *_ = source
    w = sd["net._blocks.3._depthwise_conv.weight"]  # depthwise (C, 1, k, k)
    c = w.shape[0]
    x = np.random.default_rng(0).normal(size=(1, c, 9, 9)).astype(np.float32)
    ref = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w), padding=w.shape[-1] // 2, groups=c)
    ours = jax.lax.conv_general_dilated(
        jnp.asarray(x.transpose(0, 2, 3, 1)),
        jnp.asarray(interop.to_jax_layout(w, "kernel")),
        (1, 1),
        "SAME",
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=c,
        precision=jax.lax.Precision.HIGHEST,
    )
    np.testing.assert_allclose(np.asarray(ours), ref.numpy().transpose(0, 2, 3, 1), atol=1e-5)


def test_wrong_architecture_names_every_problem(source):
    _, sd, *_ = source
    cfg = small_config(m=5)  # the file has 3 attention maps
    with pytest.raises(interop.StateDictMismatch) as err:
        interop.mat_from_state_dict(sd, cfg)
    msg = str(err.value)
    assert "wrong shape" in msg and "attentions.conv2.weight: file (3, 80, 1, 1), model expects (5, 80, 1, 1)" in msg
    assert "texture_enhance.conv0.weight" in msg
    assert "3 attention maps on a 80-channel attention layer" in msg and "num_attention_maps" in msg

    cfg = small_config()
    cfg.backbone = "efficientnet-b1"  # deeper: its extra blocks are missing from the file
    with pytest.raises(interop.StateDictMismatch, match=r"missing:[\s\S]*net\._blocks\.15\."):
        interop.mat_from_state_dict(sd, cfg)

    extra = dict(sd, **{"head.extra.weight": np.zeros(3, np.float32)})
    with pytest.raises(interop.StateDictMismatch, match=r"1 unexpected:\n    head\.extra\.weight"):
        interop.mat_from_state_dict(extra, small_config())


def test_backbone_only_import(source):
    """efficientnet_pytorch-style files (no `net.` prefix, 1000-class `_fc`) load into the backbone."""
    cfg, sd, *_ = source
    plain = {k.removeprefix("net."): v for k, v in sd.items() if k.startswith("net.")}
    plain["_fc.weight"] = np.zeros((1000, 1280), np.float32)
    plain["_fc.bias"] = np.zeros((1000,), np.float32)
    model = create_model(cfg, seed=0)
    interop.load_backbone(model, plain)
    got = np.asarray(model.backbone.blocks[4].depthwise_conv.kernel[...])
    np.testing.assert_array_equal(got, interop.to_jax_layout(sd["net._blocks.4._depthwise_conv.weight"], "kernel"))
    # The head keeps its own (seed 0) initialisation.
    assert not np.array_equal(np.asarray(model.attentions.conv2.kernel[...]),
                              interop.to_jax_layout(sd["attentions.conv2.weight"], "kernel"))
    del plain["_blocks.2._bn1.weight"]
    with pytest.raises(interop.StateDictMismatch, match=r"net\._blocks\.2\._bn1\.weight"):
        interop.load_backbone(create_model(cfg, seed=0), plain)


@pytest.mark.parametrize("suffix", [".npz", ".safetensors", ".pth"])
def test_truncated_file_says_so(source, tmp_path, suffix):
    _, sd, *_ = source
    path = tmp_path / f"w{suffix}"
    small = {k: v for k, v in list(sd.items())[:20]}
    if suffix == ".npz":
        np.savez(path, **small)
    elif suffix == ".safetensors":
        from safetensors.numpy import save_file

        save_file(small, str(path))
    else:
        torch = pytest.importorskip("torch")
        torch.save({k: torch.from_numpy(v) for k, v in small.items()}, path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"(truncated|not a valid safetensors file)") as err:
        interop.load_state_dict(path)
    assert str(path) in str(err.value)


def test_other_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such weight file"):
        interop.load_state_dict(tmp_path / "missing.pth")
    (tmp_path / "w.h5").write_bytes(b"x")
    with pytest.raises(ValueError, match="unknown weight format '.h5'"):
        interop.load_state_dict(tmp_path / "w.h5")
    (tmp_path / "empty.npz").write_bytes(b"")
    with pytest.raises(ValueError, match="empty.npz"):
        interop.load_state_dict(tmp_path / "empty.npz")
    with zipfile.ZipFile(tmp_path / "nothing.npz", "w"):
        pass
    with pytest.raises(ValueError, match="holds no tensors"):
        interop.load_state_dict(tmp_path / "nothing.npz")


@pytest.mark.parametrize(
    "shape, match",
    [
        ((64, 64, 3), r"batch of images shaped \(batch, height, width, 3\), got shape \(64, 64, 3\)"),
        ((2, 3, 64, 64), r"looks like NCHW"),
        ((2, 64, 64, 1), r"3 RGB channels .* got shape \(2, 64, 64, 1\)"),
    ],
)
def test_bad_images_raise(source, shape, match):
    cfg, sd, *_ = source
    model = interop.mat_from_state_dict(sd, cfg)  # abstract build: no compilation
    with pytest.raises(ValueError, match=match):
        model(jnp.zeros(shape), train=False)
