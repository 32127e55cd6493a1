#!/usr/bin/env python3
"""Train mat_jax on a Cloud TPU VM or pod slice: create, install, run on all workers, stream, tear down.

    python launch/tpu_vm.py --name=mat-v4 --zone=us-central2-b --type=v4-32 \\
        --workdir=gs://BUCKET/runs/ffpp --config=configs/ffpp.py \\
        --set=data.root=gs://BUCKET/records/ffpp_c23 [--spot] [--dry-run]

Steps (each one a gcloud command, printed before it runs; `--dry-run` prints them all
and runs nothing):
  1. create the TPU VM (skipped if it exists and is READY; a preempted or stopped one is
     deleted and created again),
  2. copy this checkout to every worker (`git archive` of HEAD, so what runs is committed),
  3. install it on every worker into a Python 3.11 venv with `jax[tpu]`,
  4. start `python -m mat_jax.main --config=... --workdir=gs://...` on all workers at once
     (each worker logs to ~/mat_jax_train.log; `jax.distributed.initialize()` finds the
     other workers by itself on TPU VMs),
  5. stream worker 0's log until training ends,
  6. delete the TPU VM (unless `--keep`).

Preemption: training checkpoints to the gs:// workdir and resumes exactly from the last
checkpoint, so after a spot VM is preempted the same command line carries on where it
stopped. Only standard-library Python is needed on the machine that launches.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Remote paths are expanded by the workers' shell ($HOME, never a quoted "~").
REMOTE_DIR = "$HOME/mat_jax"
REMOTE_VENV = "$HOME/mat_jax_venv"
REMOTE_LOG = "$HOME/mat_jax_train.log"
REMOTE_PID = "$HOME/mat_jax_train.pid"
REMOTE_EXIT = "$HOME/mat_jax_train.exit"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--name", required=True, help="TPU VM name")
    p.add_argument("--zone", required=True, help="e.g. us-central2-b (v4), us-east5-b (v5p)")
    p.add_argument("--type", required=True, dest="accelerator_type", help="accelerator type, e.g. v4-8, v4-32, v5p-16")
    p.add_argument("--version", default="tpu-ubuntu2204-base", help="TPU software version (runtime image)")
    p.add_argument("--project", default="", help="GCP project (default: gcloud's)")
    p.add_argument("--spot", action="store_true", help="spot (preemptible) capacity")
    p.add_argument("--config", default="configs/ffpp.py", help="config file[:args], relative to the repo")
    p.add_argument("--workdir", required=True, help="gs:// directory for checkpoints and logs")
    p.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                   help="config override, repeatable: --set=data.root=gs://... becomes --config.data.root=...")
    p.add_argument("--mode", default="train", choices=("train", "eval"))
    p.add_argument("--python", default="python3.11", help="Python on the TPU VM (installed with apt if missing)")
    p.add_argument("--keep", action="store_true", help="keep the TPU VM after the run")
    p.add_argument("--dry-run", action="store_true", help="print every command, run none")
    args = p.parse_args(argv)
    if not args.workdir.startswith("gs://"):
        p.error(f"--workdir must be a gs:// path so that every worker and a re-run see it, got {args.workdir}")
    return args


def _gcloud(args: argparse.Namespace, *words: str) -> list[str]:
    cmd = ["gcloud", "compute", "tpus", "tpu-vm", *words, f"--zone={args.zone}"]
    if args.project:
        cmd.append(f"--project={args.project}")
    return cmd


def _ssh(args: argparse.Namespace, command: str, worker: str = "all") -> list[str]:
    return _gcloud(args, "ssh", args.name, f"--worker={worker}", f"--command={command}")


def create_command(args: argparse.Namespace) -> list[str]:
    cmd = _gcloud(args, "create", args.name, f"--accelerator-type={args.accelerator_type}",
                  f"--version={args.version}")
    if args.spot:
        cmd.append("--spot")
    return cmd


def describe_command(args: argparse.Namespace) -> list[str]:
    return _gcloud(args, "describe", args.name, "--format=value(state)")


def delete_command(args: argparse.Namespace) -> list[str]:
    return _gcloud(args, "delete", args.name, "--quiet")


def copy_commands(args: argparse.Namespace, archive: str) -> list[list[str]]:
    return [
        ["git", "-C", str(REPO), "archive", "--format=tar.gz", f"--output={archive}", "HEAD"],
        _gcloud(args, "scp", archive, f"{args.name}:mat_jax.tar.gz", "--worker=all"),
        _ssh(args, f'rm -rf "{REMOTE_DIR}" && mkdir -p "{REMOTE_DIR}" && tar -xzf "$HOME/mat_jax.tar.gz" -C "{REMOTE_DIR}"'),
    ]


def setup_command(args: argparse.Namespace) -> list[str]:
    py = shlex.quote(args.python)
    script = " && ".join([
        f"(command -v {py} >/dev/null || (sudo apt-get update -q && sudo apt-get install -yq {py} {py}-venv))",
        f'{py} -m venv "{REMOTE_VENV}"',
        f'"{REMOTE_VENV}/bin/pip" install -q --upgrade pip',
        f'"{REMOTE_VENV}/bin/pip" install -q -e "{REMOTE_DIR}[tpu]"',
    ])
    return _ssh(args, script)


def train_flags(args: argparse.Namespace) -> list[str]:
    """The flags of the mat_jax command every worker runs."""
    flags = [f"--config={args.config}", f"--workdir={args.workdir}", f"--mode={args.mode}"]
    for item in args.set:
        field, sep, value = item.partition("=")
        if not sep or not field:
            raise SystemExit(f"--set needs FIELD=VALUE, got {item!r}")
        flags.append(f"--config.{field}={value}")
    return flags


def run_command(args: argparse.Namespace) -> list[str]:
    # nohup + background: an ssh drop must not kill training. The wrapper records the exit
    # code and the pid so that the stream step can wait for the end and report it.
    train = f'"{REMOTE_VENV}/bin/python" -m mat_jax.main ' + " ".join(shlex.quote(f) for f in train_flags(args))
    wrapped = shlex.quote(f'{train}; echo $? > "{REMOTE_EXIT}"')
    return _ssh(args, f'cd "{REMOTE_DIR}" && rm -f "{REMOTE_EXIT}" && '
                      f'nohup bash -c {wrapped} > "{REMOTE_LOG}" 2>&1 < /dev/null & echo $! > "{REMOTE_PID}"')


def stream_command(args: argparse.Namespace) -> list[str]:
    # Follow worker 0's log until its training process exits, then exit with its code.
    follow = (f'tail -n +1 -F "{REMOTE_LOG}" --pid="$(cat "{REMOTE_PID}")" 2>/dev/null; '
              f'exit "$(cat "{REMOTE_EXIT}" 2>/dev/null || echo 1)"')
    return _ssh(args, follow, worker="0")


def plan(args: argparse.Namespace) -> list[tuple[str, list[str]]]:
    """Every step as (title, command), in order (the create step is decided at run time)."""
    archive = "/tmp/mat_jax.tar.gz"
    steps = [("create", create_command(args))]
    steps += [("copy", c) for c in copy_commands(args, archive)]
    steps += [("setup", setup_command(args)), ("run", run_command(args)), ("stream", stream_command(args))]
    if not args.keep:
        steps.append(("teardown", delete_command(args)))
    return steps


def _show(cmd: list[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    steps = plan(args)
    if args.dry_run:
        print(f"# state check: {_show(describe_command(args))}")
        for title, cmd in steps:
            print(f"# {title}\n{_show(cmd)}")
        return 0
    state = subprocess.run(describe_command(args), capture_output=True, text=True)
    existing = state.stdout.strip() if state.returncode == 0 else ""
    status = 0
    try:
        for title, cmd in steps:
            if title == "teardown":
                continue
            if title == "create" and existing == "READY":
                print(f"# {args.name} exists and is READY: reusing it", flush=True)
                continue
            if title == "create" and existing:
                print(f"# {args.name} is {existing} (preempted or stopped): deleting it first", flush=True)
                subprocess.run(delete_command(args), check=True)
            print(f"# {title}\n{_show(cmd)}", flush=True)
            result = subprocess.run(cmd)
            if result.returncode != 0:
                print(f"launch: step {title!r} failed with exit code {result.returncode}", file=sys.stderr)
                status = result.returncode
                break
    finally:
        if not args.keep:
            print(f"# teardown\n{_show(delete_command(args))}", flush=True)
            subprocess.run(delete_command(args))
    return status


if __name__ == "__main__":
    sys.exit(main())
