"""Interrupted training runs of `examples/train.py`: killed while writing a checkpoint, stopped by a non-finite
loss. (SIGKILL mid-epoch and resume to the same metrics: tests/test_train_script.py.)

Each run is the real script in a subprocess, through the failure wrapper of `training_runs`; the last test
resumes a checkpoint of the older format in-process.
"""

import json
import signal
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator
from safetensors.torch import load_file
from training_runs import run_train_script

from processing.training.checkpointing import (
    TRAINING_STATE_FILE,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)

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


def run_training(tmp_path: Path, output_dir: Path, *extra: str, failure: str = "none", at: int = 0):
    arguments = [*SMALL_RUN, "--output_dir", str(output_dir), *extra]
    return run_train_script(arguments, wrapper_dir=tmp_path, FAILURE=failure, FAILURE_AT=str(at))


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
    kept = assert_complete_and_finite(checkpoints_dir / "step_2")
    assert kept["completed_steps"] == 2 and kept["epoch_train_seconds"] > 0
    assert not (output_dir / "results.json").exists()
    # An hour of training before the kill, so that the resumed epoch's time shows whether it was carried.
    state_file = checkpoints_dir / "step_2" / TRAINING_STATE_FILE
    state_file.write_text(json.dumps(kept | {"epoch_train_seconds": 3600.0}))

    resumed = run_training(tmp_path, output_dir, "--resume_from_checkpoint", "latest")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {checkpoints_dir / 'step_2'}: epoch 0, batch 2" in resumed.stderr
    results = json.loads((output_dir / "results.json").read_text())
    assert results["training"]["optimizer_steps"] == 8 and len(results["history"]) == 2
    # The resumed epoch's time includes the killed process's first 2 steps, and the run's is every epoch's.
    epoch_seconds = [epoch["train_seconds"] for epoch in results["history"]]
    assert epoch_seconds[0] > 3600 > epoch_seconds[1] > 0
    assert results["training"]["train_seconds"] == pytest.approx(sum(epoch_seconds))
    assert 0 < results["training"]["train_loop_seconds_this_process"] < 3600
    # The resumed run rewrote step 4 in full; the half-written folder is gone.
    assert checkpoint_steps(checkpoints_dir) == ["step_4", "step_6", "step_8"]
    assert assert_complete_and_finite(checkpoints_dir / "step_4")["completed_steps"] == 4


def test_a_non_finite_loss_stops_the_run_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    output_dir = tmp_path / "run"
    # The 6th training batch: epoch 1, its batch 1, optimizer step 6, checked before that step's checkpoint.
    stopped = run_training(tmp_path, output_dir, failure="nan_loss", at=6)
    assert stopped.returncode == 1
    assert (
        "FloatingPointError: [rank 0] non-finite training loss at optimizer step 6 on rank 0 of 1; every rank "
        f"stops. No checkpoint was written after the fault; the last good one is in {output_dir / 'checkpoints'}"
    ) in stopped.stderr
    # Stopped before the next checkpoint, not skipped: no later checkpoint, no results.
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


def test_a_checkpoint_written_before_process_counts_were_recorded_still_resumes(tmp_path):
    """The knowledge runs resume step checkpoints of older code, which did not record the process count."""
    accelerator = Accelerator()
    model = accelerator.prepare(torch.nn.Linear(3, 2))
    checkpoint = save_checkpoint(accelerator, tmp_path / "checkpoints", 5, {"epoch": 1, "completed_steps": 5})
    state_file = checkpoint / TRAINING_STATE_FILE
    state = json.loads(state_file.read_text())
    assert state.pop("num_processes") == 1
    state_file.write_text(json.dumps(state))
    with torch.no_grad():
        model.weight.zero_()
    assert load_checkpoint(accelerator, checkpoint) == {"epoch": 1, "completed_steps": 5}
    assert model.weight.abs().sum() > 0  # the saved weights are back
