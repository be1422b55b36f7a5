"""Interrupted training runs of `examples/train.py`: killed while writing a checkpoint, stopped by a non-finite
loss. (SIGKILL mid-epoch and resume to the same metrics: tests/test_train_script.py.)

Each run is the real script in a subprocess, through a small wrapper that imports it as a module, patches one
function to inject the failure, and calls its `main` with the command line: no test hook in production code.
"""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from processing.checkpointing import TRAINING_STATE_FILE, latest_checkpoint, load_checkpoint

REPO = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = REPO / "examples" / "train.py"
# 32 training tweets in batches of 8: 4 optimizer steps per epoch, a checkpoint every 2 steps.
SMALL_RUN = [
    "--synthetic",
    "--synthetic_sizes",
    "32,8,8",
    "--seed",
    "3",
    "--per_device_train_batch_size",
    "8",
    "--num_train_epochs",
    "2",
    "--checkpointing_steps",
    "2",
    "--keep_checkpoints",
    "3",
    "--no_text_only_baseline",
]

WRAPPER = """
import importlib.util, os, signal, sys
from pathlib import Path

import accelerate
import torch

from modeling_mgcm import MGCMForTokenClassification

spec = importlib.util.spec_from_file_location("train_script", {train_script!r})
train = importlib.util.module_from_spec(spec)
spec.loader.exec_module(train)
failure, at = os.environ["FAILURE"], int(os.environ["FAILURE_AT"])

if failure == "kill_during_checkpoint_write":
    save_state = accelerate.Accelerator.save_state
    calls = []

    def dying_save_state(self, output_dir=None, **kwargs):
        calls.append(output_dir)
        result = save_state(self, output_dir, **kwargs)
        if len(calls) == at:
            # Killed halfway through writing: the weights file is cut short, the optimizer state never came.
            folder = Path(output_dir)
            weights = folder / "model.safetensors"
            weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
            (folder / "optimizer.bin").unlink()
            os.kill(os.getpid(), signal.SIGKILL)
        return result

    accelerate.Accelerator.save_state = dying_save_state

elif failure == "nan_loss":
    forward = MGCMForTokenClassification.forward
    training_calls = []

    def forward_with_nan_loss(self, *args, **kwargs):
        output = forward(self, *args, **kwargs)
        if self.training:
            training_calls.append(1)
            if len(training_calls) == at:
                output.loss = output.loss * float("nan")
        return output

    MGCMForTokenClassification.forward = forward_with_nan_loss

train.main(sys.argv[1:])
"""


def run_training(tmp_path: Path, output_dir: Path, *extra: str, failure: str = "none", at: int = 0):
    wrapper = tmp_path / "train_with_failure.py"
    wrapper.write_text(WRAPPER.format(train_script=str(TRAIN_SCRIPT)))
    environment = dict(
        os.environ,
        HF_HUB_OFFLINE="1",
        HF_DATASETS_OFFLINE="1",
        PYTHONPATH=str(REPO),
        FAILURE=failure,
        FAILURE_AT=str(at),
        OMP_NUM_THREADS="1",
    )
    environment.pop("ACCELERATE_USE_CPU", None)
    command = [sys.executable, str(wrapper), *SMALL_RUN, "--output_dir", str(output_dir), *extra]
    return subprocess.run(command, env=environment, capture_output=True, text=True, timeout=600)


def checkpoint_steps(checkpoints_dir: Path) -> list[str]:
    return sorted(path.name for path in checkpoints_dir.iterdir())


def assert_complete_and_finite(checkpoint: Path) -> dict:
    """A checkpoint that loads: its training state, and finite weights in a readable safetensors file."""
    weights = load_file(checkpoint / "model.safetensors")
    assert weights and all(torch.isfinite(tensor).all() for tensor in weights.values())
    assert (checkpoint / "optimizer.bin").is_file() and (checkpoint / "scheduler.bin").is_file()
    return json.loads((checkpoint / TRAINING_STATE_FILE).read_text())


def test_a_kill_during_a_checkpoint_write_leaves_the_previous_one_which_a_resume_picks_up(tmp_path):
    output_dir = tmp_path / "run"
    killed = run_training(tmp_path, output_dir, failure="kill_during_checkpoint_write", at=2)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    checkpoints_dir = output_dir / "checkpoints"
    # The second checkpoint (step 4) died half-written under its temporary name; step 2 is complete.
    assert checkpoint_steps(checkpoints_dir) == [".partial_step_4", "step_2"]
    assert not (checkpoints_dir / ".partial_step_4" / TRAINING_STATE_FILE).exists()
    assert latest_checkpoint(checkpoints_dir) == checkpoints_dir / "step_2"
    with pytest.raises(FileNotFoundError, match="not a complete mgcm checkpoint"):
        load_checkpoint(None, checkpoints_dir / ".partial_step_4")  # refused even when named explicitly
    assert assert_complete_and_finite(checkpoints_dir / "step_2")["completed_steps"] == 2
    assert not (output_dir / "results.json").exists()

    resumed = run_training(tmp_path, output_dir, "--resume_from_checkpoint", "latest")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {checkpoints_dir / 'step_2'}: epoch 0, batch 2" in resumed.stderr
    results = json.loads((output_dir / "results.json").read_text())
    assert results["training"]["optimizer_steps"] == 8 and len(results["history"]) == 2
    # The resumed run rewrote step 4 in full; the half-written folder is gone.
    assert checkpoint_steps(checkpoints_dir) == ["step_4", "step_6", "step_8"]
    assert assert_complete_and_finite(checkpoints_dir / "step_4")["completed_steps"] == 4


def test_a_non_finite_loss_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    output_dir = tmp_path / "run"
    # The 6th training batch: epoch 1, its batch 1, after 5 optimizer steps.
    stopped = run_training(tmp_path, output_dir, failure="nan_loss", at=6)
    assert stopped.returncode == 1
    assert (
        "FloatingPointError: non-finite training loss nan at epoch 1, batch 1, optimizer step 5; "
        f"the last good checkpoint is in {output_dir / 'checkpoints'}"
    ) in stopped.stderr
    # Stopped at once, not skipped: no later checkpoint, no results.
    checkpoints_dir = output_dir / "checkpoints"
    assert checkpoint_steps(checkpoints_dir) == ["step_2", "step_4"]
    assert not (output_dir / "results.json").exists()
    last_good = latest_checkpoint(checkpoints_dir)
    assert last_good == checkpoints_dir / "step_4"
    assert assert_complete_and_finite(last_good)["completed_steps"] == 4
    # Its optimizer state, written before the bad step, is finite too (a resume from it is tested above).
    optimizer_state = torch.load(last_good / "optimizer.bin", weights_only=True)
    moments = [value for state in optimizer_state["state"].values() for value in state.values()]
    assert moments and all(torch.isfinite(torch.as_tensor(value)).all() for value in moments)
