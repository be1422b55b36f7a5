"""Helpers for tests that run `examples/train.py` as a user does: in a subprocess, on one process or under
`accelerate launch` with two CPU processes, optionally through a wrapper that injects one failure; and the
`results.json` such a run writes, with made-up scores, for tests of what reads it.

The wrapper imports the training loop (`processing.training.loop`, whose `main` the script calls), patches
one function, and calls `main` with the command line: no test hook in production code. It also writes each
process's exception to `EXIT_RECORD_DIR`, so a test can tell a process that raised from one the launcher
killed.
"""

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TRAIN_SCRIPT = REPO / "examples" / "train.py"
LEARNING_RATE_LINE = re.compile(r"optimizer step (\d+): learning rate (.*)$", re.MULTILINE)

WRAPPER = """
import json, os, signal, sys
from pathlib import Path

import accelerate
import torch

from modeling_mgcm import MGCMForTokenClassification
from processing.training import loop as train

failure, at = os.environ.get("FAILURE", "none"), int(os.environ.get("FAILURE_AT", "0"))
failure_rank = os.environ.get("FAILURE_RANK")
rank = os.environ.get("RANK", "0")

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

elif failure == "nan_loss" and failure_rank in (None, rank):
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

elif failure == "sparse_side_inputs":
    load_corpus = train.load_corpus

    def load_sparse_corpus(args):
        # Each side input kept for one tweet in 8, each for different tweets: most batches lack it.
        def thin(row, index):
            return {
                "image": row["image"] if index % 8 == 0 else None,
                "objects": row["objects"] if index % 8 == 3 else [],
                "caption": row["caption"] if index % 8 == 5 else "",
            }

        return load_corpus(args).map(thin, with_indices=True)

    train.load_corpus = load_sparse_corpus

try:
    train.main(sys.argv[1:])
except BaseException as error:
    record_dir = os.environ.get("EXIT_RECORD_DIR")
    if record_dir:
        Path(record_dir, f"rank{rank}.json").write_text(json.dumps([type(error).__name__, str(error)]))
    raise
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def two_cpu_processes() -> list[str]:
    """`accelerate launch` with 2 CPU processes; needs ACCELERATE_USE_CPU=true in the environment.

    Without it, --multi_gpu on a machine without GPUs starts two processes that each believe they are
    alone; `--cpu --num_processes 2` silently starts one.
    """
    return [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(free_port()),
    ]


def run_environment(**overrides: str) -> dict:
    environment = dict(
        os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", PYTHONPATH=str(REPO), OMP_NUM_THREADS="1"
    )
    environment.pop("ACCELERATE_USE_CPU", None)
    return environment | overrides


def run_train_script(
    arguments: list[str],
    processes: int = 1,
    wrapper_dir: Path | None = None,
    timeout: int = 900,
    **environment: str,
) -> subprocess.CompletedProcess:
    """Run the script (through the failure wrapper when `wrapper_dir` is given) on 1 or 2 CPU processes."""
    script = TRAIN_SCRIPT
    if wrapper_dir is not None:
        script = wrapper_dir / "train_with_failure.py"
        script.write_text(WRAPPER)
    launcher = [sys.executable]
    if processes == 2:
        launcher = two_cpu_processes()
        environment["ACCELERATE_USE_CPU"] = "true"
    elif processes != 1:
        raise ValueError(f"1 or 2 processes, not {processes}")
    return subprocess.run(
        launcher + [str(script), *arguments],
        env=run_environment(**environment),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def learning_rates(log: str) -> dict[int, dict[str, float]]:
    """Optimizer step -> {parameter group: learning rate}, read from a run's log."""
    return {
        int(step): {name: float(rate) for name, rate in (pair.split("=") for pair in rates.split())}
        for step, rates in LEARNING_RATE_LINE.findall(log)
    }


def fake_results() -> dict:
    """A results.json as examples/train.py writes it, with recognisable scores."""

    def metrics(f1: float) -> dict:
        per_type = {
            name: {"precision": f1, "recall": f1, "f1": f1, "number": 7} for name in ("PER", "LOC", "ORG")
        }
        return {
            "overall_precision": 0.6125,
            "overall_recall": 0.5875,
            "overall_f1": f1,
            "overall_number": 21,
            **per_type,
        }

    return {
        "metrics": {"valid": {"lenient": metrics(0.6042), "strict": metrics(0.5931)}},
        "history": [{"epoch": 1, "valid_f1": 0.6042}],
        "run": {
            "dataset": "synthetic",
            "text_model": "tiny random BERT",
            "vision_model": "tiny random ResNet",
            "granularities": ["image", "objects", "caption"],
            "augmentation_mode": "gate",
            "use_word_shape": True,
            "aux_span_loss_weight": 0.5,
            "seed": 0,
            "args": {},
        },
        "training": {"num_processes": 1, "optimizer_steps": 3, "epochs_run": 1, "best_epoch": 1},
    }
