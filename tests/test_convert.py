"""The weight-import CLI: a PyTorch-named file in, an orbax checkpoint the trainer can start from out."""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from configs.ffpp import get_config
from mat_jax import checkpointing
from mat_jax.interop import convert
from mat_jax.interop import torch as interop
from mat_jax.models.mat import create_model


def test_convert_cli_mat_and_backbone(tmp_path, capsys):
    cfg = get_config("tiny,smoke")
    source = create_model(cfg.model, seed=5)
    sd = interop.state_dict_from_model(source)
    sd["auxiliary_loss.alpha"] = np.asarray(0.0024, np.float32)
    np.savez(tmp_path / "mat.npz", **sd)

    rc = convert.main([str(tmp_path / "mat.npz"), f"--out={tmp_path / 'ckpt'}", "--config=configs/ffpp.py:tiny,smoke"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "wrote" in printed and "alpha" in printed

    restored = create_model(cfg.model, seed=99)
    meta = checkpointing.load_model(tmp_path / "ckpt", restored)
    assert meta["target"] == "mat" and meta["regional_loss_settings"]["alpha"] == np.float32(0.0024)
    x = jax.random.uniform(jax.random.key(0), (2, 64, 64, 3), minval=-1, maxval=1)
    forward = nnx.jit(lambda m, x: m(x, train=False)["logits"])
    np.testing.assert_array_equal(np.asarray(forward(restored, x)), np.asarray(forward(source, x)))

    # Backbone only, from an efficientnet_pytorch-style file (no prefix, 1000-class head).
    plain = {k.removeprefix("net."): v for k, v in sd.items() if k.startswith("net.") and "_fc" not in k}
    plain["_fc.weight"] = np.zeros((1000, sd["net._conv_head.weight"].shape[0]), np.float32)
    np.savez(tmp_path / "effnet.npz", **plain)
    rc = convert.main([str(tmp_path / "effnet.npz"), f"--out={tmp_path / 'bb'}", "--config=configs/ffpp.py:tiny,smoke",
                       "--target=backbone"])
    assert rc == 0
    backbone = create_model(cfg.model, seed=99).backbone
    checkpointing.load_model(tmp_path / "bb", backbone)
    np.testing.assert_array_equal(np.asarray(backbone.conv_stem.kernel[...]),
                                  np.asarray(source.backbone.conv_stem.kernel[...]))

    # A file of another architecture: exit code 2 and the names in the message.
    cfg_other = get_config("tiny,smoke")
    m = cfg_other.model.num_attention_maps
    cfg_other.model.num_attention_maps = m + 2
    np.savez(tmp_path / "other.npz", **interop.state_dict_from_model(create_model(cfg_other.model)))
    rc = convert.main([str(tmp_path / "other.npz"), f"--out={tmp_path / 'bad'}", "--config=configs/ffpp.py:tiny,smoke"])
    assert rc == 2
    err = capsys.readouterr().err
    mid = sd["attentions.conv2.weight"].shape[1]
    assert f"attentions.conv2.weight: file ({m + 2}, {mid}, 1, 1), model expects ({m}, {mid}, 1, 1)" in err
    assert not (tmp_path / "bad").exists()
