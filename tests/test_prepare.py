"""mat_jax.prepare: a config's own data-preparation commands, run for real on a tiny demo tree."""

from __future__ import annotations

import shutil

import pytest

from configs import demo
from mat_jax import prepare
from mat_jax.data import records


def _tiny_demo_config():
    config = demo.get_config("small")
    config.data.prepare = tuple(
        c.replace("--videos=4,2,2", "--videos=2,2,2").replace("--frames=8", "--frames=2")
        for c in config.data.prepare
    )
    return config


def test_commands_run_once_then_resume_from_what_is_on_disk(tmp_path, capfd):
    workdir = str(tmp_path / "run")
    config = _tiny_demo_config()
    seconds = prepare.ensure_records(config, workdir)
    assert seconds is not None and seconds > 0
    assert config.data.root == f"{workdir}/demo_data/records"
    summary = records.load_summary(config.data.root)
    assert summary is not None and summary["dataset"] == "demo"
    out = capfd.readouterr().out
    assert "-m data_prep.demo --out=" + f"{workdir}/demo_data/raw" in out
    assert "--seed=0" in out  # {seed} is the config's seed

    # Records present: nothing runs.
    assert prepare.ensure_records(_tiny_demo_config(), workdir) is None
    assert "data_prep" not in capfd.readouterr().out

    # Records lost after the tree was made (a kill during the build): the tree is kept.
    shutil.rmtree(config.data.root)
    assert prepare.ensure_records(_tiny_demo_config(), workdir) is not None
    assert "demo tree already in" in capfd.readouterr().out
    assert records.load_summary(f"{workdir}/demo_data/records") is not None


def test_a_failing_command_names_itself_and_no_commands_means_nothing_to_do(tmp_path):
    config = _tiny_demo_config()
    config.data.prepare = ("python -m data_prep.build --dataset=demo --root={workdir}/missing --out={root}",)
    with pytest.raises(RuntimeError, match=r"data preparation failed .*--root=.*/missing"):
        prepare.ensure_records(config, str(tmp_path))

    config = _tiny_demo_config()
    config.data.prepare = ()
    assert prepare.ensure_records(config, str(tmp_path)) is None
    assert config.data.root == f"{tmp_path}/demo_data/records"
