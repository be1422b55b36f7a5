"""Training throughput (issue 6): every configuration built as `examples/train.py` builds it, then timed on the
same fixed sequence of real Twitter-2015 train batches, steps interleaved in rotating rounds (see
`training_cost.py`'s docstring for the method)."""

import gc
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
from accelerate import Accelerator
from cost_configs import (
    BASELINE,
    CONFIGS,
    EPOCHS_OF_THE_ACCURACY_RUNS,
    KNOWLEDGE_AS_SEGMENT,
    KNOWLEDGE_LENGTH,
    MODEL_SEED,
    SHUFFLE_SEED,
    TARGET_RATIOS,
    URL_TOKEN,
    Schedule,
)
from transformers import AutoTokenizer, get_linear_schedule_with_warmup

from modeling_mgcm import MGCMForTokenClassification
from processing import (
    LABEL_NAMES,
    MGCMDataCollator,
    MGCMProcessor,
    build_neighbour_table,
    load_tweet_corpus,
)
from processing.training.arguments import TrainArguments, parse_args
from processing.training.optimizer import build_optimizer
from processing.training.window_rows import tokenised_windows


def training_defaults(dataset_dir: Path, encoder_dir: Path) -> TrainArguments:
    """The arguments `run_accuracy.sh` gives examples/train.py for a pretrained encoder (rates, window, batch)."""
    return parse_args(
        ["--dataset_dir", str(dataset_dir), "--text_model", str(encoder_dir), "--url_token", URL_TOKEN]
    )


@dataclass
class ConfigRun:
    """One configuration ready to train: model and optimizer prepared by the accelerator, its collator and
    its window rows in the fixed batch order."""

    name: str
    model: torch.nn.Module
    processor: MGCMProcessor
    optimizer: torch.optim.Optimizer
    scheduler: Any
    collator: MGCMDataCollator
    batches: list[list[dict]]
    num_windows: int


def fixed_batch_order(
    num_rows: int, batch_size: int, num_batches: int, seed: int = SHUFFLE_SEED
) -> list[list[int]]:
    """The first `num_batches` batches of a seeded shuffle of `num_rows` rows (reshuffled past one epoch)."""
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    while len(order) < num_batches * batch_size:
        order.extend(torch.randperm(num_rows, generator=generator).tolist())
    return [order[start : start + batch_size] for start in range(0, num_batches * batch_size, batch_size)]


def build_config_run(
    name: str,
    encoder_dir: Path,
    corpus: datasets.DatasetDict,
    neighbour_table,
    defaults: TrainArguments,
    accelerator: Accelerator,
    num_batches: int,
) -> ConfigRun:
    """Model, processor, windows, collator and optimizer of configuration `name`, as train.py builds them."""
    settings = dict(CONFIGS[name])
    augmented = settings["augmentation_mode"] != "none"
    segments = ["knowledge"] if name in KNOWLEDGE_AS_SEGMENT else []
    table = neighbour_table if augmented else None
    torch.manual_seed(MODEL_SEED)
    model = MGCMForTokenClassification.from_backbones(
        str(encoder_dir),
        use_image=False,
        use_objects=False,
        augmentation_dim=neighbour_table.dim,
        num_neighbours=neighbour_table.k,
        aux_span_loss_weight=defaults.aux_span_loss_weight,
        id2label=dict(enumerate(LABEL_NAMES)),
        label2id={label: index for index, label in enumerate(LABEL_NAMES)},
        **settings,
    )
    processor = MGCMProcessor(
        tokenizer=AutoTokenizer.from_pretrained(str(encoder_dir)),
        neighbour_table=table,
        max_length=defaults.max_length,
        stride=defaults.stride,
        max_objects=model.config.max_objects,
        url_token=URL_TOKEN,
        text_source_max_lengths={"knowledge": KNOWLEDGE_LENGTH},
        segment_sources=segments,
    )
    windows = tokenised_windows(processor, datasets.DatasetDict(train=corpus["train"]), model.config)["train"]
    batch_size = defaults.per_device_train_batch_size
    batches = [
        [windows[index] for index in indices]
        for indices in fixed_batch_order(len(windows), batch_size, num_batches)
    ]
    optimizer = build_optimizer(model, defaults)
    model, optimizer = accelerator.prepare(model, optimizer)
    total_steps = EPOCHS_OF_THE_ACCURACY_RUNS * -(-len(windows) // batch_size)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(defaults.warmup_ratio * total_steps), total_steps
    )
    model.train()
    return ConfigRun(
        name, model, processor, optimizer, scheduler, MGCMDataCollator(processor), batches, len(windows)
    )


def wait_for_device(device: torch.device) -> None:
    """Wait for the work queued on an asynchronous device (CUDA, XPU, MPS...), so that a timing is true."""
    if device.type != "cpu":
        torch.accelerator.synchronize(device)


def training_step(run: ConfigRun, rows: list[dict], accelerator: Accelerator, max_grad_norm: float) -> dict:
    """One optimizer step on `rows` as train.py takes it; returns wall and CPU seconds (total, collation)."""
    wall, cpu = time.perf_counter(), time.process_time()
    batch = run.collator(rows).to(accelerator.device)
    wait_for_device(accelerator.device)
    collate_seconds = time.perf_counter() - wall
    loss = run.model(**batch).loss
    accelerator.backward(loss)
    if max_grad_norm:
        accelerator.clip_grad_norm_(run.model.parameters(), max_grad_norm)
    run.optimizer.step()
    run.scheduler.step()
    run.optimizer.zero_grad()
    wait_for_device(accelerator.device)
    if not torch.isfinite(loss.detach()):
        raise FloatingPointError(f"{run.name}: non-finite training loss {loss.item()}")
    return {
        "wall": time.perf_counter() - wall,
        "cpu": time.process_time() - cpu,
        "collate": collate_seconds,
    }


def interleaved_schedule(names: Sequence[str], schedule: Schedule) -> list[tuple[str, int, bool]]:
    """The order of steps: `(configuration, batch position, timed)`.

    A warm-up round (`schedule.warmup` steps each, not timed), then `schedule.rounds` rounds of
    `schedule.steps_per_round` steps each; every configuration takes batch positions 0, 1, 2... in turn, and
    the configuration order rotates by one every round so that none always follows the same other.
    """
    steps: list[tuple[str, int, bool]] = []
    position = dict.fromkeys(names, 0)
    rounds = [(schedule.warmup, False)] + [(schedule.steps_per_round, True)] * schedule.rounds
    for round_index, (count, timed) in enumerate(rounds):
        shift = round_index % len(names)
        for name in [*names[shift:], *names[:shift]]:
            for _ in range(count):
                steps.append((name, position[name], timed))
                position[name] += 1
    return steps


def summarise_steps(timings: dict[str, list[dict]], batch_size: int, train_windows: int) -> dict[str, dict]:
    """Median step, tweets/s, derived seconds per epoch and ratios to `text`, per configuration."""
    rows = {}
    for name, steps in timings.items():
        wall = statistics.median(step["wall"] for step in steps)
        rows[name] = {
            "timed_steps": len(steps),
            "median_step_seconds": wall,
            "median_step_cpu_seconds": statistics.median(step["cpu"] for step in steps),
            "median_collate_seconds": statistics.median(step["collate"] for step in steps),
            "tweets_per_second": batch_size / wall,
            # A window is a tweet unless the tweet is longer than the window (`train_windows` vs tweets).
            "seconds_per_epoch_derived": train_windows * wall / batch_size,
        }
    baseline = rows[BASELINE]
    for name, row in rows.items():
        row["ratio_to_text"] = row["median_step_seconds"] / baseline["median_step_seconds"]
        row["cpu_time_ratio_to_text"] = row["median_step_cpu_seconds"] / baseline["median_step_cpu_seconds"]
        target = TARGET_RATIOS.get(name)
        row["target_ratio"] = target
        row["met"] = None if target is None else row["ratio_to_text"] <= target
    return rows


def measure_training(
    encoder_dir: Path,
    corpus: datasets.DatasetDict,
    neighbour_table,
    schedule: Schedule,
    precision: str,
    dataset_dir: Path,
    names: Sequence[str] = tuple(CONFIGS),
) -> dict:
    """Interleaved training steps of the configurations `names` on one encoder (see the module docstring)."""
    defaults = training_defaults(dataset_dir, encoder_dir)
    accelerator = Accelerator(mixed_precision="bf16" if precision == "bf16" else "no")
    runs = {
        name: build_config_run(
            name, encoder_dir, corpus, neighbour_table, defaults, accelerator, schedule.total_steps
        )
        for name in names
    }
    timings: dict[str, list[dict]] = {name: [] for name in names}
    started = time.perf_counter()
    for name, position, timed in interleaved_schedule(list(names), schedule):
        run = runs[name]
        step = training_step(run, run.batches[position], accelerator, defaults.max_grad_norm)
        if timed:
            timings[name].append(step)
    elapsed = time.perf_counter() - started
    train_windows = runs[BASELINE].num_windows
    encoder_parameters = sum(
        p.numel() for p in accelerator.unwrap_model(runs[BASELINE].model).mgcm.text_encoder.parameters()
    )
    configs = summarise_steps(timings, defaults.per_device_train_batch_size, train_windows)
    for name, run in runs.items():
        configs[name]["parameters"] = sum(p.numel() for p in run.model.parameters())
        configs[name]["config"] = {
            **CONFIGS[name],
            "segment_sources": run.processor.segment_sources,
        }
    del runs
    accelerator.free_memory()
    gc.collect()
    return {
        "encoder": str(encoder_dir),
        "encoder_parameters": encoder_parameters,
        "batch_size": defaults.per_device_train_batch_size,
        "train_tweets": len(corpus["train"]),
        "train_windows": train_windows,
        "warmup_steps": schedule.warmup,
        "rounds": schedule.rounds,
        "steps_per_round": schedule.steps_per_round,
        "benchmark_seconds": elapsed,
        "configs": configs,
    }


def load_real_corpus(spec: dict):
    """Twitter-2015 with BLIP-2 captions and PGIM knowledge, and its neighbour table (read from the cache
    folder when built)."""
    corpus = load_tweet_corpus(
        spec["dataset_dir"],
        captions_file=spec["captions_file"],
        text_source_files={"knowledge": spec["knowledge_file"]},
    )
    words = [word for split in corpus.values() for tokens in split["tokens"] for word in tokens]
    table = build_neighbour_table(words, spec["word_vectors"], k=spec["k"], cache_dir=spec["cache_dir"])
    return corpus, table


__all__ = [
    "ConfigRun",
    "build_config_run",
    "fixed_batch_order",
    "interleaved_schedule",
    "load_real_corpus",
    "measure_training",
    "summarise_steps",
    "training_defaults",
    "training_step",
]
