"""Atomic training checkpoints on top of `accelerator.save_state`, and finding the one to resume from.

A checkpoint is written into a temporary folder and renamed into place only when complete, so a run
killed mid-write leaves the previous checkpoint intact and no half-written one is ever picked up.
Model weights are safetensors; optimizer, scheduler and RNG states are accelerate's torch files, which
accelerate reads back with `weights_only=True`.
"""

import json
import os
import re
import shutil
from pathlib import Path

from modeling_mgcm.atomic_files import replace_directory, write_json_atomically

CHECKPOINT_PATTERN = re.compile(r"^step_(\d+)$")
TRAINING_STATE_FILE = "training_state.json"
# The training_state.json key of the writer's process count (checkpoints of before it have none).
WRITTEN_ON_PROCESSES = "num_processes"


def save_checkpoint(accelerator, checkpoints_dir: str | os.PathLike, step: int, training_state: dict) -> Path:
    """Save the full training state as `checkpoints_dir/step_<step>`, atomically. Call on every process.

    `training_state` (JSON-serialisable: epoch, step, best score, history...) is stored beside
    accelerate's files in `training_state.json`, with the number of processes that wrote it.
    """
    checkpoints_dir = Path(checkpoints_dir)
    final = checkpoints_dir / f"step_{step}"
    partial = checkpoints_dir / f".partial_step_{step}"
    if accelerator.is_main_process:
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(partial))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        written = training_state | {WRITTEN_ON_PROCESSES: accelerator.num_processes}
        write_json_atomically(partial / TRAINING_STATE_FILE, written)
        replace_directory(partial, final)
    accelerator.wait_for_everyone()
    return final


def latest_checkpoint(checkpoints_dir: str | os.PathLike) -> Path | None:
    """The complete checkpoint with the highest step under `checkpoints_dir`, or None."""
    checkpoints_dir = Path(checkpoints_dir)
    if not checkpoints_dir.is_dir():
        return None
    complete = [
        (int(match.group(1)), path)
        for path in checkpoints_dir.iterdir()
        if (match := CHECKPOINT_PATTERN.match(path.name)) and (path / TRAINING_STATE_FILE).is_file()
    ]
    return max(complete)[1] if complete else None


def load_checkpoint(accelerator, checkpoint_dir: str | os.PathLike) -> dict:
    """Restore the state saved by `save_checkpoint` on as many processes as wrote it; returns its
    `training_state`."""
    checkpoint_dir = Path(checkpoint_dir)
    state_file = checkpoint_dir / TRAINING_STATE_FILE
    if not state_file.is_file():
        raise FileNotFoundError(
            f"{checkpoint_dir} is not a complete mgcm checkpoint (no {TRAINING_STATE_FILE}); "
            "pass a step_<N> folder or the run's output_dir"
        )
    state = json.loads(state_file.read_text(encoding="utf-8"))
    written_on = state.pop(WRITTEN_ON_PROCESSES, accelerator.num_processes)
    if written_on != accelerator.num_processes:
        # The scheduler's step count and the position in the epoch are in per-process batches, and each
        # process's share of the data depends on the count: another count would resume elsewhere.
        raise ValueError(
            f"{checkpoint_dir} was written by a run on {written_on} process(es) and resumes only on "
            f"{written_on}, not {accelerator.num_processes}: relaunch with --num_processes {written_on}, or "
            "start a new run"
        )
    accelerator.load_state(str(checkpoint_dir))
    return state


def prune_checkpoints(checkpoints_dir: str | os.PathLike, keep: int) -> None:
    """Delete all but the `keep` newest complete checkpoints (main process only)."""
    checkpoints_dir = Path(checkpoints_dir)
    steps = sorted(
        (int(match.group(1)), path)
        for path in checkpoints_dir.iterdir()
        if (match := CHECKPOINT_PATTERN.match(path.name))
    )
    for _, path in steps[:-keep] if keep > 0 else []:
        shutil.rmtree(path, ignore_errors=True)


def save_pretrained_atomically(objects, folder: str | os.PathLike, state_dict: dict | None = None) -> Path:
    """`save_pretrained` each of `objects` (model, processor...) into `folder`, swapped in when complete.

    `state_dict` (from `accelerator.get_state_dict(model)`) is what the model (the first object) saves.
    """
    folder = Path(folder)
    partial = folder.with_name(f".partial_{folder.name}")
    shutil.rmtree(partial, ignore_errors=True)
    for index, item in enumerate(objects):
        if index == 0 and state_dict is not None:
            item.save_pretrained(partial, state_dict=state_dict)
        else:
            item.save_pretrained(partial)
    replace_directory(partial, folder)
    return folder


__all__ = [
    "TRAINING_STATE_FILE",
    "latest_checkpoint",
    "load_checkpoint",
    "prune_checkpoints",
    "save_checkpoint",
    "save_pretrained_atomically",
]
