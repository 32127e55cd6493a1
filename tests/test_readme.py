"""README's commands, run as a newcomer types them (relative paths included), and CI's command."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def bash_lines() -> list[str]:
    """Every command in README's ```bash blocks, continuation lines joined."""
    text = (ROOT / "README.md").read_text()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = " ".join(line.split())
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def test_ci_runs_readme_test_command():
    ci = [l.strip() for l in (ROOT / ".ci" / "run").read_text().splitlines()]
    tests = [l for l in bash_lines() if "pytest" in l and l.startswith("python3 -m venv")]
    assert len(tests) == 1, tests
    assert tests[0] in ci


def test_readme_has_the_two_setup_commands():
    setups = [l for l in bash_lines() if l.startswith("python3 -m venv .venv")]
    assert len(setups) == 2, setups
    demo = [l for l in setups if "mat_jax.main" in l]
    assert demo and demo[0].endswith("--config=configs/demo.py --workdir=workdir/demo")


@pytest.mark.slow
def test_demo_followups_run_as_written(demo_run, tmp_path):
    """The predict and export commands after the demo, in a folder laid out as after the set-up
    command: `.venv` is this interpreter's environment and `workdir/demo` the demo's workdir."""
    workdir, _ = demo_run
    (tmp_path / ".venv").symlink_to(Path(sys.prefix), target_is_directory=True)
    (tmp_path / "workdir").mkdir()
    (tmp_path / "workdir" / "demo").symlink_to(workdir, target_is_directory=True)
    followups = [l for l in bash_lines() if l.startswith(".venv/bin/python -m mat_jax.") and "main" not in l]
    assert {l.split()[2] for l in followups} >= {"mat_jax.predict", "mat_jax.export"}, followups
    for line in followups:
        res = subprocess.run(["bash", "-c", line], cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, f"{line}\n{res.stdout[-2000:]}\n{res.stderr[-3000:]}"
    saved = json.loads((tmp_path / "predictions" / "predictions.json").read_text())["results"]
    assert saved and all(r["status"] == "ok" for r in saved)
    assert (workdir / "test_bundle.npz").is_file()
