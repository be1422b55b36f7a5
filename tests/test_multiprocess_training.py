"""Training on two CPU processes against one, as `accelerate launch --multi_gpu` runs it on several GPUs.

Each test starts the real script in subprocesses; they are slow (marker `multiprocess`) and run in CI.
"""

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from training_runs import learning_rates, run_train_script

from processing.training.checkpointing import TRAINING_STATE_FILE, latest_checkpoint

pytestmark = pytest.mark.multiprocess

# 320 synthetic training tweets: 20 batches of 16 (1 process) or 2 x 20 batches of 8 (2 processes).
LEARNING_RATE_RUN = [
    "--synthetic",
    "--synthetic_sizes",
    "320,16,16",
    "--seed",
    "5",
    "--final_eval_splits",
    "valid",
    "--checkpointing_steps",
    "no",
    "--no_text_only_baseline",
]


def trained(completed) -> str:
    assert completed.returncode == 0, completed.stderr[-4000:]
    return completed.stderr


@pytest.mark.parametrize(
    "accumulation, steps",
    [pytest.param(1, 40, id="no-accumulation"), pytest.param(2, 14, id="accumulate-2")],
)
def test_the_learning_rate_at_every_step_does_not_depend_on_the_number_of_processes(
    tmp_path, accumulation, steps
):
    """Same global batch (16 x accumulation) on 1 process and on 2: the same rate at every optimizer step,
    through warm-up and decay to the last step, across an epoch boundary."""
    common = LEARNING_RATE_RUN + ["--max_train_steps", str(steps)]
    common += ["--gradient_accumulation_steps", str(accumulation)]
    one = trained(
        run_train_script(
            common + ["--per_device_train_batch_size", "16", "--output_dir", str(tmp_path / "1")]
        )
    )
    two = trained(
        run_train_script(
            common + ["--per_device_train_batch_size", "8", "--output_dir", str(tmp_path / "2")], processes=2
        )
    )
    rates_one, rates_two = learning_rates(one), learning_rates(two)
    assert sorted(rates_one) == list(range(1, steps + 1))
    assert sorted(rates_two) == list(range(1, steps + 1))
    for step in rates_one:
        assert rates_two[step] == pytest.approx(rates_one[step], rel=1e-9, abs=1e-15), step
    # The schedule is the one asked for: linear warm-up over 10% of the steps, then linear decay to 0.
    warmup = int(0.1 * steps)
    peak = rates_one[warmup + 1]["fusion"]
    assert rates_one[1]["fusion"] == 0.0 and peak == pytest.approx(1e-3)
    assert rates_one[steps]["fusion"] == pytest.approx(1e-3 / (steps - warmup))
    results = json.loads((tmp_path / "2" / "results.json").read_text())
    assert results["training"]["num_processes"] == 2 and results["training"]["optimizer_steps"] == steps


@pytest.mark.parametrize(
    "source_gradient", [[], ["--text_source_gradient"]], ids=["detached", "trained-through"]
)
def test_a_two_process_run_whose_batches_lack_side_inputs_trains_to_the_end(tmp_path, source_gradient):
    """Images, objects and captions each for one tweet in 8, batch 2 per process, and input dropout of the
    objects and captions on top: many steps have a batch without one of them on one rank only. Every block
    still runs, so DDP finds every parameter used; with gradient checkpointing (non-reentrant), as DDP needs
    it; and with the caption pass read without gradient (the default) or trained through, when one rank's
    batch has captions and the other's none."""
    arguments = [
        *source_gradient,
        "--gradient_checkpointing",
        "--input_dropout",
        "objects=0.5",
        "--input_dropout",
        "caption=0.5",
        "--synthetic",
        "--synthetic_sizes",
        "64,16,16",
        "--per_device_train_batch_size",
        "2",
        "--num_train_epochs",
        "2",
        "--final_eval_splits",
        "valid",
        "--no_text_only_baseline",
        "--output_dir",
        str(tmp_path / "run"),
    ]
    trained(run_train_script(arguments, processes=2, wrapper_dir=tmp_path, FAILURE="sparse_side_inputs"))
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    assert results["training"]["optimizer_steps"] == 2 * 16  # 64 tweets / (2 x 2) per step, 2 epochs
    assert results["run"]["granularities"] == ["image", "objects", "caption"]
    assert results["images"]["with_features"] < results["images"]["missing"]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["input_dropout"] == {"objects": 0.5, "caption": 0.5}
    assert config["detach_text_source_encoding"] == (not source_gradient)


def test_a_non_finite_loss_on_rank_1_stops_both_ranks_naming_the_step(tmp_path):
    """The loss of rank 1's 7th batch (optimizer step 7) is NaN; rank 0's are finite. Both ranks learn of it
    at the next check (before step 8's checkpoint), raise the same error, and step 6 stays intact."""
    output_dir = tmp_path / "run"
    records = tmp_path / "exits"
    records.mkdir()
    arguments = [
        "--synthetic",
        "--synthetic_sizes",
        "64,8,8",
        "--per_device_train_batch_size",
        "8",
        "--num_train_epochs",
        "3",
        "--checkpointing_steps",
        "2",
        "--logging_steps",
        "100",
        "--no_text_only_baseline",
        "--output_dir",
        str(output_dir),
    ]
    stopped = run_train_script(
        arguments,
        processes=2,
        wrapper_dir=tmp_path,
        FAILURE="nan_loss",
        FAILURE_AT="7",
        FAILURE_RANK="1",
        EXIT_RECORD_DIR=str(records),
    )
    assert stopped.returncode != 0
    exits = {path.stem: json.loads(path.read_text()) for path in records.iterdir()}
    assert set(exits) == {"rank0", "rank1"}, stopped.stderr[-4000:]
    checkpoints_dir = output_dir / "checkpoints"
    for rank, (error_type, message) in exits.items():
        assert error_type == "FloatingPointError"
        assert message == (
            f"[{rank[:4]} {rank[4:]}] non-finite training loss at optimizer step 7 on rank 1 of 2; every rank "
            f"stops. No checkpoint was written after the fault; the last good one is in {checkpoints_dir}."
        )
    assert "[rank 0] non-finite training loss at optimizer step 7" in stopped.stderr
    assert latest_checkpoint(checkpoints_dir) == checkpoints_dir / "step_6"
    assert sorted(path.name for path in checkpoints_dir.iterdir()) == ["step_4", "step_6"]
    weights = load_file(checkpoints_dir / "step_6" / "model.safetensors")
    assert weights and all(torch.isfinite(tensor).all() for tensor in weights.values())
    assert json.loads((checkpoints_dir / "step_6" / TRAINING_STATE_FILE).read_text())["completed_steps"] == 6
    assert not (output_dir / "results.json").exists()


def test_two_processes_and_one_reach_the_same_test_f1_on_the_synthetic_corpus(tmp_path):
    """The default synthetic corpus (600/200/200), global batch 16: 2 processes x 8 against 1 x 16."""
    common = ["--synthetic", "--no_text_only_baseline", "--checkpointing_steps", "no"]
    scores = {}
    for processes, batch_size in ((1, "16"), (2, "8")):
        output_dir = tmp_path / f"{processes}-processes"
        arguments = common + ["--per_device_train_batch_size", batch_size, "--output_dir", str(output_dir)]
        trained(run_train_script(arguments, processes=processes, timeout=1200))
        results = json.loads(Path(output_dir, "results.json").read_text())
        assert results["training"]["num_processes"] == processes
        scores[processes] = 100 * results["metrics"]["test"]["lenient"]["overall_f1"]
    assert scores[1] > 80, scores  # both learn the task, not merely agree
    assert abs(scores[1] - scores[2]) <= 2.0, scores


def test_a_checkpoint_of_one_process_refuses_to_resume_on_two_on_both_ranks(tmp_path):
    """The schedule's step count and the position in the epoch are per-process counts: a checkpoint resumes
    only on as many processes as wrote it, and both ranks say so rather than train from elsewhere."""
    output_dir = tmp_path / "run"
    arguments = [
        "--synthetic",
        "--synthetic_sizes",
        "32,8,8",
        "--per_device_train_batch_size",
        "8",
        "--num_train_epochs",
        "1",
        "--checkpointing_steps",
        "2",
        "--no_text_only_baseline",
        "--output_dir",
        str(output_dir),
    ]
    trained(run_train_script(arguments))
    checkpoint = latest_checkpoint(output_dir / "checkpoints")
    assert json.loads((checkpoint / TRAINING_STATE_FILE).read_text())["num_processes"] == 1
    records = tmp_path / "exits"
    records.mkdir()
    resumed = run_train_script(
        [*arguments, "--resume_from_checkpoint", "latest"],
        processes=2,
        wrapper_dir=tmp_path,
        EXIT_RECORD_DIR=str(records),
    )
    assert resumed.returncode != 0
    exits = {path.stem: json.loads(path.read_text()) for path in records.iterdir()}
    assert set(exits) == {"rank0", "rank1"}, resumed.stderr[-4000:]
    for error_type, message in exits.values():
        assert error_type == "ValueError"
        assert message.endswith(
            f"{checkpoint} was written by a run on 1 process(es) and resumes only on 1, not 2: relaunch with"
            " --num_processes 1, or start a new run"
        )
