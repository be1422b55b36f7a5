"""The training loop of `examples/train.py`, with Accelerate, from one CPU to many GPUs.

`train_and_evaluate` reads top to bottom as one run: build the data, build the model, prepare, train with
the best epoch selected on `valid` (lenient F1) only, evaluate the selected model deterministically on every
final split (gathered with `gather_for_metrics`), save. `main` is the command: one run, and on the synthetic
corpus a text-only model of the same size for comparison.
"""

import logging
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import datasets
import torch
import transformers
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, set_seed
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from modeling_mgcm import MGCMForTokenClassification
from modeling_mgcm.processing_mgcm import MGCMProcessor
from processing.evaluation.corpus_evaluation import evaluate_corpus
from processing.training.arguments import TrainArguments, parse_args
from processing.training.checkpointing import (
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    save_pretrained_atomically,
)
from processing.training.final_evaluation import evaluate_selected_model, write_split_predictions
from processing.training.model_building import build_model
from processing.training.nonfinite_loss import NonFiniteLossMonitor
from processing.training.optimizer import build_optimizer, build_scheduler, group_learning_rates
from processing.training.run_data import (
    build_dataloaders,
    build_image_inputs,
    build_processor,
    build_tokenizer,
    corpus_neighbour_table,
    final_eval_splits,
    load_corpus,
    object_label_vocabulary,
)
from processing.training.run_report import (
    assemble_results,
    print_example_prediction,
    print_text_only_comparison,
    run_record,
    save_run_outputs,
    training_record,
)
from processing.training.window_rows import tokenised_windows

logger = get_logger(__name__)
# Loggers whose INFO lines would drown the run's own and that have no library verbosity function (transformers
# and datasets have theirs, set in `configure_logging`): huggingface_hub's HTTP client logs every request, and
# Accelerate logs every file of every checkpoint it saves or loads.
NOISY_LOGGERS = ("httpx", "accelerate.checkpointing", "accelerate.accelerator")
TRACKER_PROJECT = "mgcm"
# The training state's seconds of training in the current epoch so far, carried by its step checkpoints.
EPOCH_TRAIN_SECONDS = "epoch_train_seconds"
# The run folder's subfolder of each final split's predictions (`prediction_files` format).
PREDICTIONS_DIR = "predictions"


class TrainingRun(NamedTuple):
    """What `train_and_evaluate` returns: results.json's content, the selected (unwrapped) model, its
    processor and the corpus."""

    results: dict
    model: MGCMForTokenClassification
    processor: MGCMProcessor
    corpus: datasets.DatasetDict


@dataclass
class PreparedTraining:
    """The objects `accelerator.prepare` wrapped, which the loop drives."""

    accelerator: Accelerator
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    train_dataloader: DataLoader
    eval_dataloaders: dict[str, DataLoader]


@dataclass
class EpochResult:
    """One epoch: the mean train loss over every process, this process's batches, and the epoch's training
    seconds, a resumed epoch's including those before the checkpoint it resumed from."""

    train_loss: float
    batches: int
    seconds: float


class GuardedCheckpoints:
    """Checkpoints under `checkpoints_dir`, written only once every process's loss is known to be finite, the
    `keep` newest kept."""

    def __init__(self, accelerator: Accelerator, checkpoints_dir: Path, keep: int) -> None:
        self.accelerator = accelerator
        self.checkpoints_dir = checkpoints_dir
        self.keep = keep
        self.nonfinite_loss = NonFiniteLossMonitor(accelerator)
        self.consequence = (
            f"No checkpoint was written after the fault; the last good one is in {checkpoints_dir}."
        )

    def check_loss(self) -> None:
        """Stop every process, at the same step, if any process has had a non-finite loss."""
        self.nonfinite_loss.check(self.consequence)

    def save(self, state: dict) -> None:
        self.check_loss()
        save_checkpoint(self.accelerator, self.checkpoints_dir, state["completed_steps"], state)
        if self.accelerator.is_main_process:
            prune_checkpoints(self.checkpoints_dir, self.keep)


def build_accelerator(args: TrainArguments, output_dir: Path) -> Accelerator:
    """An Accelerator with `--gradient_accumulation_steps`, `--mixed_precision` and seedable samplers (so a
    resumed run shuffles as the uninterrupted one), logging to TensorBoard under `--with_tracking`."""
    return Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with="tensorboard" if args.with_tracking else None,
        project_dir=str(output_dir),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )


def configure_logging(accelerator: Accelerator) -> None:
    """The run's own INFO lines (on the main process: Accelerate's logger); transformers and datasets at
    WARNING on the local main process and ERROR on the others, so that each warning is printed once."""
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO, force=True
    )
    # The example scripts give transformers INFO on the main process; WARNING keeps its per-file loading
    # lines (config, weights, tokenizer) out of the run's log, as before.
    if accelerator.is_local_main_process:
        transformers.utils.logging.set_verbosity_warning()
        datasets.utils.logging.set_verbosity_warning()
    else:
        transformers.utils.logging.set_verbosity_error()
        datasets.utils.logging.set_verbosity_error()
    for noisy in NOISY_LOGGERS:
        logging.getLogger(noisy).setLevel(logging.WARNING)


def set_training_length(args: TrainArguments, batches_per_epoch: int) -> None:
    """Resolve `max_train_steps` (default: every epoch) and the `num_train_epochs` that it takes."""
    steps_per_epoch = math.ceil(batches_per_epoch / args.gradient_accumulation_steps)
    if args.max_train_steps is None:
        args.max_train_steps = args.num_train_epochs * steps_per_epoch
    args.num_train_epochs = math.ceil(args.max_train_steps / steps_per_epoch)


def prepare_training(
    args: TrainArguments,
    accelerator: Accelerator,
    model: MGCMForTokenClassification,
    train_dataloader: DataLoader,
    eval_dataloaders: dict[str, DataLoader],
) -> PreparedTraining:
    """Optimizer and scheduler built, and everything wrapped by `accelerator.prepare`; the run's length
    resolved from the prepared (per-process) train loader."""
    optimizer = build_optimizer(model, args)
    model, optimizer, train_dataloader = accelerator.prepare(model, optimizer, train_dataloader)
    eval_dataloaders = {name: accelerator.prepare(loader) for name, loader in eval_dataloaders.items()}
    set_training_length(args, len(train_dataloader))
    scheduler = accelerator.prepare(build_scheduler(optimizer, args, accelerator.num_processes))
    return PreparedTraining(accelerator, model, optimizer, scheduler, train_dataloader, eval_dataloaders)


def start_tracking(args: TrainArguments, accelerator: Accelerator) -> None:
    """Under `--with_tracking`: the run's arguments as TensorBoard hyperparameters."""
    if args.with_tracking:
        accelerator.init_trackers(
            TRACKER_PROJECT,
            {k: (v if isinstance(v, int | float | str | bool) else str(v)) for k, v in vars(args).items()},
        )


def initial_state(args: TrainArguments, accelerator: Accelerator, checkpoints_dir: Path) -> dict:
    """The training state to start from: fresh, or restored from `--resume_from_checkpoint` (a step_<N>
    folder, or 'latest')."""
    state = {"epoch": 0, "batches_in_epoch": 0, "completed_steps": 0, "best_f1": -1.0, "best_epoch": None}
    state[EPOCH_TRAIN_SECONDS] = 0.0
    state["history"] = []
    if not args.resume_from_checkpoint:
        return state
    checkpoint = (
        latest_checkpoint(checkpoints_dir)
        if args.resume_from_checkpoint == "latest"
        else Path(args.resume_from_checkpoint)
    )
    if checkpoint is None:
        logger.info("no checkpoint under %s: starting from scratch", checkpoints_dir)
        return state
    state = load_checkpoint(accelerator, checkpoint)
    logger.info("resumed from %s: epoch %d, batch %d", checkpoint, state["epoch"], state["batches_in_epoch"])
    return state


def log_optimizer_step(
    args: TrainArguments, accelerator: Accelerator, step: int, learning_rates: dict[str, float]
) -> None:
    logger.info(
        "optimizer step %d: learning rate %s",
        step,
        " ".join(f"{name}={rate:.6e}" for name, rate in learning_rates.items()),
    )
    if args.with_tracking:
        accelerator.log({f"learning_rate/{name}": rate for name, rate in learning_rates.items()}, step=step)


def train_one_epoch(
    args: TrainArguments,
    run: PreparedTraining,
    state: dict,
    epoch: int,
    checkpoints: GuardedCheckpoints,
    progress: tqdm,
) -> EpochResult:
    """The optimizer steps of one epoch (from `state["batches_in_epoch"]` on a resumed epoch), with the
    step-count checkpoints of `--checkpointing_steps N`; stops at `args.max_train_steps`."""
    accelerator, model, optimizer = run.accelerator, run.model, run.optimizer
    model.train()
    run.train_dataloader.set_epoch(epoch)
    skip = state["batches_in_epoch"] if epoch == state["epoch"] else 0
    batches = accelerator.skip_first_batches(run.train_dataloader, skip) if skip else run.train_dataloader
    state["batches_in_epoch"] = skip
    # Checkpoints of older code have no seconds: their resumed epoch counts from the resume only.
    carried_seconds = state.get(EPOCH_TRAIN_SECONDS, 0.0) if skip else 0.0
    # Summed on the device: reading the loss on the host at every batch would stall a GPU.
    epoch_loss = torch.zeros((), device=accelerator.device)
    epoch_batches = 0
    epoch_started = time.perf_counter()
    for batch in batches:
        with accelerator.accumulate(model):
            loss = model(**batch).loss
            checkpoints.nonfinite_loss.record(loss, state["completed_steps"] + 1)
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                if args.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                learning_rates = group_learning_rates(optimizer)
            optimizer.step()
            run.scheduler.step()
            optimizer.zero_grad()
        state["batches_in_epoch"] += 1
        epoch_loss += loss.detach().float()
        epoch_batches += 1
        if not accelerator.sync_gradients:
            continue
        state["completed_steps"] += 1
        step = state["completed_steps"]
        progress.update(1)
        log_optimizer_step(args, accelerator, step, learning_rates)
        if step % args.logging_steps == 0:
            checkpoints.check_loss()
            mean_loss = accelerator.reduce(epoch_loss / epoch_batches, reduction="mean").item()
            progress.set_postfix(loss=f"{mean_loss:.3f}")
            logger.info("optimizer step %d: mean train loss this epoch %.4f", step, mean_loss)
            if args.with_tracking:
                accelerator.log({"train_loss": mean_loss}, step=step)
        if args.checkpointing_steps.isdigit() and step % int(args.checkpointing_steps) == 0:
            state[EPOCH_TRAIN_SECONDS] = carried_seconds + time.perf_counter() - epoch_started
            checkpoints.save(state)
        if step >= args.max_train_steps:
            break
    checkpoints.check_loss()
    train_loss = accelerator.reduce(epoch_loss / max(epoch_batches, 1), reduction="mean").item()
    return EpochResult(train_loss, epoch_batches, carried_seconds + time.perf_counter() - epoch_started)


def validate_and_select(
    args: TrainArguments,
    run: PreparedTraining,
    state: dict,
    epoch: int,
    epoch_result: EpochResult,
    valid_split: datasets.Dataset,
    processor: MGCMProcessor,
    best_dir: Path,
) -> None:
    """Score the epoch's model on valid, record it in `state["history"]`, and save it to `best_dir` when its
    lenient F1 is the best so far: the selection never sees another split."""
    accelerator, model = run.accelerator, run.model
    valid_started = time.perf_counter()
    metrics, _ = evaluate_corpus(
        model,
        run.eval_dataloaders["valid"],
        accelerator,
        valid_split,
        accelerator.unwrap_model(model).config.id2label,
        "Validating",
    )
    valid_f1 = metrics["lenient"]["overall_f1"]
    state["history"].append(
        {
            "epoch": epoch,
            "train_loss": epoch_result.train_loss,
            "valid_f1": valid_f1,
            "valid_strict_f1": metrics["strict"]["overall_f1"],
            "train_batches": epoch_result.batches,
            "train_seconds": epoch_result.seconds,
            "valid_seconds": time.perf_counter() - valid_started,
        }
    )
    logger.info(
        "epoch %d: train loss %.4f, valid F1 %.2f (lenient) / %.2f (strict)",
        epoch,
        epoch_result.train_loss,
        100 * valid_f1,
        100 * metrics["strict"]["overall_f1"],
    )
    if args.with_tracking:
        accelerator.log(
            {"valid_f1": valid_f1, "epoch_train_loss": epoch_result.train_loss, "epoch": epoch + 1},
            step=state["completed_steps"],
        )
    if valid_f1 > state["best_f1"]:
        state["best_f1"], state["best_epoch"] = valid_f1, epoch
        # On every process: the full state dict, gathered by Accelerate however the model is wrapped.
        best_state = accelerator.get_state_dict(model)
        if accelerator.is_main_process:
            save_pretrained_atomically([accelerator.unwrap_model(model), processor], best_dir, best_state)
        del best_state
        accelerator.wait_for_everyone()


def train_epochs(
    args: TrainArguments,
    run: PreparedTraining,
    state: dict,
    valid_split: datasets.Dataset,
    processor: MGCMProcessor,
    checkpoints_dir: Path,
    best_dir: Path,
) -> int:
    """Train from `state` to `args.max_train_steps`, validating and checkpointing at every epoch end.
    Returns the train batches this process ran."""
    accelerator = run.accelerator
    checkpoints = GuardedCheckpoints(accelerator, checkpoints_dir, args.keep_checkpoints)
    logger.info(
        "training: %d epochs, %d optimizer steps, %d processes, %d train batches per process",
        args.num_train_epochs,
        args.max_train_steps,
        accelerator.num_processes,
        len(run.train_dataloader),
    )
    progress = tqdm(
        total=args.max_train_steps,
        initial=state["completed_steps"],
        desc="Training",
        disable=not accelerator.is_local_main_process,
    )
    batches_seen = 0
    for epoch in range(state["epoch"], args.num_train_epochs):
        if state["completed_steps"] >= args.max_train_steps:
            break
        epoch_result = train_one_epoch(args, run, state, epoch, checkpoints, progress)
        batches_seen += epoch_result.batches
        validate_and_select(args, run, state, epoch, epoch_result, valid_split, processor, best_dir)
        state["epoch"], state["batches_in_epoch"], state[EPOCH_TRAIN_SECONDS] = epoch + 1, 0, 0.0
        if args.checkpointing_steps != "no":
            checkpoints.save(state)
    progress.close()
    return batches_seen


def train_and_evaluate(args: TrainArguments) -> TrainingRun:
    """One training run: build data and model, train with selection on valid, evaluate, save."""
    output_dir = Path(args.output_dir)
    accelerator = build_accelerator(args, output_dir)
    configure_logging(accelerator)
    set_seed(args.seed)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(args.cache_dir) if args.cache_dir else output_dir / "cache"
    started = time.perf_counter()

    # ---- data and model
    corpus = load_corpus(args)
    final_splits = final_eval_splits(args, corpus)
    tokenizer = build_tokenizer(args, corpus)
    neighbour_table = corpus_neighbour_table(args, corpus, accelerator, cache_dir)
    object_labels = object_label_vocabulary(args)
    model = build_model(args, tokenizer, neighbour_table, object_labels)
    image_inputs = build_image_inputs(args, model, corpus, accelerator, cache_dir)
    processor = build_processor(
        args, corpus, model.config, tokenizer, image_inputs.image_processor, neighbour_table, object_labels
    )
    with accelerator.main_process_first():
        windows = tokenised_windows(processor, corpus, model.config)
    dataloaders = build_dataloaders(args, windows, processor, image_inputs.feature_cache)

    # ---- prepare
    run = prepare_training(args, accelerator, model, dataloaders.train, dataloaders.evaluation)
    start_tracking(args, accelerator)
    checkpoints_dir = output_dir / "checkpoints"
    best_dir = output_dir / "best_model"
    state = initial_state(args, accelerator, checkpoints_dir)

    # ---- train, selecting on valid only
    train_started = time.perf_counter()
    batches_seen = train_epochs(args, run, state, corpus["valid"], processor, checkpoints_dir, best_dir)
    train_loop_seconds = time.perf_counter() - train_started

    # ---- final evaluation of the selected model on every split
    evaluation = evaluate_selected_model(
        args,
        run.model,
        accelerator,
        best_dir,
        run.eval_dataloaders,
        dataloaders.eval_collator,
        processor,
        corpus,
        final_splits,
    )
    results = assemble_results(
        evaluation,
        state["history"],
        run_record(args, corpus, processor, model.config.use_image),
        training_record(
            accelerator,
            state,
            train_batches_total=len(dataloaders.train),
            train_batches_per_process=len(run.train_dataloader),
            batches_seen=batches_seen,
            train_loop_seconds=train_loop_seconds,
            started=started,
        ),
        image_inputs.counts,
        processor,
    )

    # ---- save
    unwrapped = accelerator.unwrap_model(run.model)
    save_run_outputs(accelerator, unwrapped, processor, output_dir, results)
    if accelerator.is_main_process:
        write_split_predictions(output_dir / PREDICTIONS_DIR, evaluation, corpus, unwrapped.config.id2label)
    if args.with_tracking:
        accelerator.end_training()
    accelerator.wait_for_everyone()
    return TrainingRun(results, unwrapped, processor, corpus)


def is_main_rank() -> bool:
    """Whether this is the first process of the launch (the only one without `accelerate launch`)."""
    return int(os.environ.get("RANK", "0")) == 0


def main(argv: list[str] | None = None) -> None:
    """The training command: `argv` (default: the command line) as `examples/train.py` takes it."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parse_args(argv)
    run = train_and_evaluate(args)
    if not args.synthetic or not args.granularities or args.no_text_only_baseline:
        if is_main_rank():
            print_example_prediction(run.model, run.processor, run.corpus)
        return
    # The synthetic corpus is built so that only the image decides ambiguous mentions: show it.
    text_only = [
        "--granularities",
        "",
        "--output_dir",
        str(Path(args.output_dir) / "text_only"),
        "--no_text_only_baseline",
    ]
    baseline = train_and_evaluate(parse_args(argv + text_only)).results
    if is_main_rank():
        print_text_only_comparison(args.granularities, run.results, baseline)
        print_example_prediction(run.model, run.processor, run.corpus)


__all__ = [
    "EpochResult",
    "GuardedCheckpoints",
    "PreparedTraining",
    "TrainingRun",
    "initial_state",
    "main",
    "prepare_training",
    "set_training_length",
    "train_and_evaluate",
    "train_epochs",
    "train_one_epoch",
    "validate_and_select",
]
