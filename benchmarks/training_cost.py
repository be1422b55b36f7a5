"""CPU cost of MGCM on Twitter-2015 (issue 6), measured in one run: training throughput and the overhead of the
MGCM parts over the text model, peak memory in training and in inference, and the one-off costs (neighbour
table, image feature cache). Writes `benchmarks/results/cost.json`.

    python benchmarks/training_cost.py [--encoders all-MiniLM-L6-v2,all-mpnet-base-v2] [--threads 1]
                                       [--precision bf16|fp32] [--output benchmarks/results/cost.json]

A smoke run (a few minutes, most of them the first neighbour-table build):

    python benchmarks/training_cost.py --encoders all-MiniLM-L6-v2 --warmup 1 --rounds 1 --steps-per-round 2 \
        --rss-train-steps 2 --infer-tweets 32 --images 64 --output /tmp/cost.json

Training. The configurations are those of `benchmarks/run_accuracy.sh`, built as `examples/train.py` builds
them (`from_backbones` with the same seed, `MGCMProcessor(url_token="http")`, `preprocess_corpus`,
`MGCMDataCollator`, AdamW over `parameter_groups` with train.py's default rates, linear warm-up, gradient
clipping, Accelerate autocast in `--precision`):

- `text`: encoder + CRF (no augmentation, no word shape, no caption);
- `text+shape+sa`: + word shape + gated GloVe 6B 50d augmentation, k=4 (the full model without caption);
- `full`: + the caption granularity (BLIP-2 captions). Its caption pass is detached
  (`detach_text_source_encoding=True`, MGCMConfig's default and so what run_accuracy.sh trains): the shared
  encoder runs over the captions without dropout and without back-propagation;
- `full-caption-grad`: `full` with `detach_text_source_encoding=False`, the caption pass trained too (an extra
  row: what the caption costs when the encoder learns from it);
- `full+knowledge`: `full` + PGIM's LLM-written knowledge (`../shared/data/knowledge/twitter2015_pgim.txt`,
  200 word pieces) as a text-source granularity with its own block, encoded detached like the caption;
  `full+knowledge-shared`: the same with one block shared by caption and knowledge
  (`share_text_source_block`); `full+knowledge-grad`: the knowledge and caption passes trained too;
- `full+knowledge-concat`: `full` with the knowledge appended to the tweet as a second segment (PGIM's way:
  the encoder reads tweet + knowledge with gradient); `text+knowledge-concat`: PGIM's own model, encoder +
  CRF over tweet + knowledge.

`--configs` measures a subset (`text` is always in it, as the baseline) and `--training-only` skips the
memory children and the one-off costs.

In one process, every configuration takes the same fixed sequence of real Twitter-2015 train batches (16
windows, shuffled with a fixed seed). A step is collation (padding, neighbour lookup) + forward + backward +
clipping + optimizer step. Steps are interleaved in rounds (a few steps per configuration, the order rotated
every round) after warm-up steps that are discarded, so drift and other processes' load hit every
configuration alike; the median step gives tweets/s, seconds per epoch (derived: train tweets / tweets/s)
and the ratio to `text` (targets: <= 1.4 with the caption, <= 1.25 without). Process CPU time per step is
reported beside wall time: on a shared machine with one torch thread it is less sensitive to other load.

Peak RSS is read from a child process per encoder and phase (`os.wait4`, through a bare launcher process:
Linux carries a parent's peak into a child started from it): `train` builds the full model and
its data as train.py does and runs `--rss-train-steps` steps, then saves model and processor as train.py
does; `infer` loads that folder and tags `--infer-tweets` Twitter-2015 valid tweets (with captions) through
the "multimodal-ner" pipeline, in bfloat16 weights with `--precision bf16`.

One-off costs: the neighbour table over every Twitter-2015 word, built into an empty cache folder and then
read back from it (in a child process, so its memory peak is reported too); captions, which are not cached
(see the JSON's note); and the time `ImageFeatureCache` saves over `--image-epochs` epochs of getting every
image's features, on a synthetic corpus of `--images` 224x224 PNG images with a tiny random ResNet
(without cache: decode + preprocess + backbone forward every epoch, 16 images a batch; with cache: one
`build`, then `get` reads every epoch).

The default run took 14 minutes on 2 AMD EPYC cores shared with two training runs (load average 5-6: the
benchmark got about two thirds of a core, CPU time / wall time 0.66, so absolute times are slower than on a
quiet machine; the ratios are what to read), bf16, 1 torch thread:

    encoder  config             step s  tweets/s  s/epoch  ratio  CPU-time ratio
    MiniLM   text                0.758      21.1      190  1.000  1.000
    MiniLM   text+shape+sa       0.752      21.3      188  0.992  0.985   target <= 1.25: met
    MiniLM   full                0.918      17.4      230  1.211  1.207   target <= 1.4: met
    MiniLM   full-caption-grad   1.145      14.0      286  1.511  1.534   target <= 1.4: not met
    mpnet    text                3.889       4.1      972  1.000  1.000
    mpnet    text+shape+sa       3.937       4.1      984  1.012  1.015   met
    mpnet    full                4.681       3.4     1170  1.204  1.205   met
    mpnet    full-caption-grad   5.964       2.7     1491  1.534  1.543   not met

Peak RSS (MiB): MiniLM train 1441, infer 801 (300 tweets, 55 tweets/s); mpnet train 3349, infer 1214 (12
tweets/s). Neighbour table: 168 s first build (95,968 words, peak 1209 MiB), 1.0 s from the cache. Image
feature cache, 2,000 images x 3 epochs: 44.7 s without, 17.2 s with (16.9 s build + 0.3 s reads), 2.6x,
96 MiB on disk.
"""

import argparse
import datetime
import functools
import gc
import importlib.util
import json
import os
import platform
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers
import transformers.utils.logging
from accelerate import Accelerator
from transformers import (
    AutoModelForTokenClassification,
    AutoProcessor,
    AutoTokenizer,
    ResNetModel,
    get_linear_schedule_with_warmup,
    pipeline,
)

from modeling_mgcm import MGCMForTokenClassification

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peak_memory import own_peak_rss_mib, run_measured  # noqa: E402

from modeling_mgcm.vision_features import extract_image_features
from processing import (
    LABEL_NAMES,
    ImageFeatureCache,
    MGCMDataCollator,
    MGCMProcessor,
    build_neighbour_table,
    load_image,
    load_tweet_corpus,
    load_word_vectors,
    make_synthetic_corpus,
)
from processing.testing.tiny_backbones import (
    tiny_image_processor,
    tiny_vision_config,
    weights_fingerprint,
)
from processing.training.checkpointing import write_json_atomically

PROJECT_ROOT = Path(__file__).resolve().parents[1]
OFFLINE_MODELS = Path(
    os.environ.get("MGCM_OFFLINE_MODELS", str(Path.home() / ".cache" / "mgcm-offline-models"))
)
DEFAULT_ENCODERS = ("all-MiniLM-L6-v2", "all-mpnet-base-v2")
URL_TOKEN = "http"
SHUFFLE_SEED = 0
MODEL_SEED = 1
IMAGE_SIZE = 224
EPOCHS_OF_THE_ACCURACY_RUNS = 5
# Pipeline batch for the inference memory peak (posts per call).
INFER_BATCH_SIZE = 32

# Per configuration: its MGCMConfig fields (the processor carries the neighbour table when augmenting).
_FULL = {"augmentation_mode": "gate", "use_word_shape": True}
CONFIGS: dict[str, dict[str, Any]] = {
    "text": {"augmentation_mode": "none", "use_word_shape": False, "text_sources": []},
    "text+shape+sa": {**_FULL, "text_sources": []},
    "full": {**_FULL, "text_sources": ["caption"], "detach_text_source_encoding": True},
    "full-caption-grad": {**_FULL, "text_sources": ["caption"], "detach_text_source_encoding": False},
    "full+knowledge": {**_FULL, "text_sources": ["caption", "knowledge"]},
    "full+knowledge-shared": {
        **_FULL,
        "text_sources": ["caption", "knowledge"],
        "share_text_source_block": True,
    },
    "full+knowledge-grad": {
        **_FULL,
        "text_sources": ["caption", "knowledge"],
        "detach_text_source_encoding": False,
    },
    "full+knowledge-concat": {**_FULL, "text_sources": ["caption"]},
    "text+knowledge-concat": {"augmentation_mode": "none", "use_word_shape": False, "text_sources": []},
}
# The configurations that append the knowledge to the tweet as a text segment instead.
KNOWLEDGE_AS_SEGMENT = ("full+knowledge-concat", "text+knowledge-concat")
KNOWLEDGE_LENGTH = 200
BASELINE = "text"
FULL = "full"
# Issue 6: the overhead over `text` with the caption granularity, and without it.
TARGET_RATIO_WITH_CAPTION = 1.4
TARGET_RATIO_WITHOUT_CAPTION = 1.25
TARGET_RATIOS = {
    "text+shape+sa": TARGET_RATIO_WITHOUT_CAPTION,
    "full": TARGET_RATIO_WITH_CAPTION,
    "full-caption-grad": TARGET_RATIO_WITH_CAPTION,
}


@dataclass(frozen=True)
class Schedule:
    """Steps per configuration: `warmup` discarded, then `rounds` rounds of `steps_per_round` timed."""

    warmup: int
    rounds: int
    steps_per_round: int

    @property
    def timed_steps(self) -> int:
        return self.rounds * self.steps_per_round

    @property
    def total_steps(self) -> int:
        return self.warmup + self.timed_steps


# An mpnet step takes 5-8x a MiniLM one: fewer steps keep the default run within 25 minutes on 2 shared cores.
DEFAULT_SCHEDULES = {
    "all-MiniLM-L6-v2": Schedule(warmup=3, rounds=10, steps_per_round=4),
    "all-mpnet-base-v2": Schedule(warmup=1, rounds=6, steps_per_round=2),
}
DEFAULT_RSS_TRAIN_STEPS = {"all-MiniLM-L6-v2": 10, "all-mpnet-base-v2": 4}


# ---------------------------------------------------------------------------------------------------------
# What training does, step by step


@functools.cache
def load_train_script():
    """`examples/train.py` as a module: its argument defaults are the training hyperparameters."""
    spec = importlib.util.spec_from_file_location("mgcm_train_script", PROJECT_ROOT / "examples" / "train.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def training_defaults(dataset_dir: Path, encoder_dir: Path) -> argparse.Namespace:
    """The arguments `run_accuracy.sh` gives train.py for a pretrained encoder (rates, window, batch)."""
    return load_train_script().parse_args(
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
    defaults: argparse.Namespace,
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
    windows = load_train_script().tokenised_windows(
        processor, datasets.DatasetDict(train=corpus["train"]), model.config
    )["train"]
    batch_size = defaults.per_device_train_batch_size
    batches = [
        [windows[index] for index in indices]
        for indices in fixed_batch_order(len(windows), batch_size, num_batches)
    ]
    optimizer = load_train_script().build_optimizer(model, defaults)
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


# ---------------------------------------------------------------------------------------------------------
# Peak memory: child processes


# Linux keeps a process's peak RSS across fork and exec: a child started by this (large) process would report
# at least this process's peak. A bare interpreter in between starts the measured process from a small one
# and reads its peak with wait4; it writes the peak (ru_maxrss) and exit code to the file named first.
def child_peak_rss_mib(arguments: Sequence[str], log_path: Path) -> float:
    """Run `python *arguments` in a fresh process and return its own peak resident memory in MiB.

    Raises RuntimeError with the end of the child's standard error (in `log_path`) if it fails.
    """
    exit_status, peak = run_measured(list(arguments), log_path)
    if exit_status != 0:
        tail = log_path.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise RuntimeError(
            f"python {shlex.join(arguments)} exited with {exit_status}; its log ({log_path}) ends:\n{tail}"
        )
    return peak


def run_child(phase: str, spec: dict, work_dir: Path) -> tuple[float, dict]:
    """Run this script's `phase` in a fresh process; returns its peak RSS (MiB) and the JSON it wrote."""
    spec_path = work_dir / f"child-{phase}-{spec.get('encoder_name', 'all')}.json"
    result_path = spec_path.with_suffix(".result.json")
    spec = {**spec, "result_path": str(result_path)}
    spec_path.write_text(json.dumps(spec), encoding="utf-8")
    peak = child_peak_rss_mib(
        [str(Path(__file__).resolve()), "--child", phase, "--child-spec", str(spec_path)],
        spec_path.with_suffix(".log"),
    )
    return peak, json.loads(result_path.read_text(encoding="utf-8"))


def child_neighbour_table(spec: dict) -> dict:
    """First build of the neighbour table into an empty cache folder, then the call that reads it back."""
    corpus = load_tweet_corpus(spec["dataset_dir"])
    words = [word for split in corpus.values() for tokens in split["tokens"] for word in tokens]
    started = time.perf_counter()
    vectors = load_word_vectors(spec["word_vectors"])
    vectors_seconds = time.perf_counter() - started
    del vectors
    cache_dir = Path(spec["cache_dir"])
    if cache_dir.exists() and any(cache_dir.iterdir()):
        raise ValueError(f"{cache_dir}: the neighbour cache folder of a first build must be empty")
    started = time.perf_counter()
    table = build_neighbour_table(words, spec["word_vectors"], k=spec["k"], cache_dir=cache_dir)
    first_seconds = time.perf_counter() - started
    started = time.perf_counter()
    cached = build_neighbour_table(words, spec["word_vectors"], k=spec["k"], cache_dir=cache_dir)
    cached_seconds = time.perf_counter() - started
    if cached.vocabulary != table.vocabulary:
        raise RuntimeError(f"the cached neighbour table in {cache_dir} differs from the one just built")
    return {
        "corpus_tokens": len(words),
        "corpus_word_types": len(set(words)),
        "table_words": len(table),
        "k": table.k,
        "dim": table.dim,
        "vectors_load_seconds": vectors_seconds,
        "first_build_seconds": first_seconds,
        "cached_seconds": cached_seconds,
        "cache_bytes": sum(path.stat().st_size for path in cache_dir.rglob("*") if path.is_file()),
    }


def child_train(spec: dict) -> dict:
    """The full model trained for a few steps as train.py trains it, then saved with its processor."""
    torch.set_num_threads(spec["threads"])
    corpus, table = load_real_corpus(spec)
    defaults = training_defaults(Path(spec["dataset_dir"]), Path(spec["encoder_dir"]))
    accelerator = Accelerator(mixed_precision="bf16" if spec["precision"] == "bf16" else "no")
    run = build_config_run(
        FULL, Path(spec["encoder_dir"]), corpus, table, defaults, accelerator, spec["steps"]
    )
    started = time.perf_counter()
    for rows in run.batches:
        training_step(run, rows, accelerator, defaults.max_grad_norm)
    seconds = time.perf_counter() - started
    for item in (accelerator.unwrap_model(run.model), run.processor):
        item.save_pretrained(spec["model_dir"])
    return {"steps": spec["steps"], "train_seconds": seconds}


def child_infer(spec: dict) -> dict:
    """Tag Twitter-2015 valid tweets with their captions through the "multimodal-ner" pipeline."""
    torch.set_num_threads(spec["threads"])
    dtype = torch.bfloat16 if spec["precision"] == "bf16" else torch.float32
    model = AutoModelForTokenClassification.from_pretrained(spec["model_dir"], dtype=dtype)
    processor = AutoProcessor.from_pretrained(spec["model_dir"])
    tagger = pipeline("multimodal-ner", model=model, processor=processor)
    valid = load_tweet_corpus(spec["dataset_dir"], captions_file=spec["captions_file"])["valid"]
    rows = valid.select(range(min(spec["tweets"], len(valid))))
    posts = [{"text": row["tokens"], "caption": row["caption"]} for row in rows]
    started = time.perf_counter()
    outputs = tagger(posts, batch_size=INFER_BATCH_SIZE)
    seconds = time.perf_counter() - started
    if len(outputs) != len(posts):
        raise RuntimeError(f"the pipeline returned {len(outputs)} outputs for {len(posts)} posts")
    return {
        "tweets": len(posts),
        "batch_size": INFER_BATCH_SIZE,
        "weights_dtype": str(dtype).removeprefix("torch."),
        "seconds": seconds,
        "tweets_per_second": len(posts) / seconds,
        "entities_found": sum(len(output) for output in outputs),
    }


CHILD_PHASES: dict[str, Callable[[dict], dict]] = {
    "neighbour_table": child_neighbour_table,
    "train": child_train,
    "infer": child_infer,
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


# ---------------------------------------------------------------------------------------------------------
# Image feature cache


def measure_image_feature_cache(num_images: int, epochs: int, batch_size: int, work_dir: Path) -> dict:
    """Seconds to get every image's features for `epochs` epochs, without and with `ImageFeatureCache`."""
    started = time.perf_counter()
    images = make_synthetic_corpus(
        num_images, 0, 0, seed=SHUFFLE_SEED, image_size=IMAGE_SIZE, missing_image_fraction=0.0
    )["train"].select_columns(["id", "image"])
    generation_seconds = time.perf_counter() - started
    undecoded = images.cast_column("image", datasets.Image(decode=False))
    torch.manual_seed(MODEL_SEED)
    vision_model = ResNetModel(tiny_vision_config()).eval()
    image_processor = tiny_image_processor(IMAGE_SIZE)
    parameter = next(vision_model.parameters())
    starts = range(0, num_images, batch_size)

    def uncached_features(start: int) -> torch.Tensor:
        rows = undecoded[start : start + batch_size]
        pixels = image_processor(images=[load_image(entry) for entry in rows["image"]], return_tensors="pt")
        pixel_values = pixels["pixel_values"].to(device=parameter.device, dtype=parameter.dtype)
        with torch.no_grad():
            return extract_image_features(vision_model, pixel_values)

    started = time.perf_counter()
    for _ in range(epochs):
        for start in starts:
            uncached_features(start)
    without_cache = time.perf_counter() - started

    cache = ImageFeatureCache(
        work_dir / "image_features",
        vision_model,
        image_processor,
        backbone_name=f"tiny-random-resnet-{weights_fingerprint(vision_model)}",
        show_progress=False,
    )
    started = time.perf_counter()
    stats = cache.build(images)
    build_seconds = time.perf_counter() - started
    ids = images["id"]
    started = time.perf_counter()
    for _ in range(epochs):
        for start in starts:
            cache.get(ids[start : start + batch_size])
    read_seconds = time.perf_counter() - started
    if len(stats.computed_ids) != num_images:
        raise RuntimeError(
            f"the cache computed {len(stats.computed_ids)} of {num_images} images: {stats.problems}"
        )
    # The cache must serve what the backbone computes (float16 on disk): a cache that saved time by serving
    # something else would be no saving.
    cached, _ = cache.get(ids[:batch_size])
    computed = uncached_features(0).float().cpu()
    if not torch.allclose(cached, computed, rtol=1e-2, atol=1e-2):
        raise RuntimeError(
            f"cached features differ from computed ones by up to {(cached - computed).abs().max().item():.3g}"
        )
    with_cache = build_seconds + read_seconds
    return {
        "images": num_images,
        "image_size": IMAGE_SIZE,
        "image_format": "PNG (processing.make_synthetic_corpus)",
        "generation_seconds": generation_seconds,
        "vision_backbone": "tiny random ResNet (processing.testing.tiny_backbones.tiny_vision_config)",
        "feature_shape": list(cache.feature_shape),
        "storage_dtype": str(cache.storage_dtype).removeprefix("torch."),
        "epochs": epochs,
        "batch_size": batch_size,
        "without_cache_seconds": without_cache,
        "with_cache_seconds": with_cache,
        "with_cache_build_seconds": build_seconds,
        "with_cache_read_seconds": read_seconds,
        "saving_seconds": without_cache - with_cache,
        "ratio_without_to_with": without_cache / with_cache,
        "cache_bytes": sum(path.stat().st_size for path in cache.directory.rglob("*") if path.is_file()),
    }


# ---------------------------------------------------------------------------------------------------------
# Report


def hardware(threads: int) -> dict:
    cpu_model = platform.processor() or platform.machine()
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        names = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text(encoding="utf-8", errors="replace").splitlines()
            if line.startswith("model name")
        ]
        cpu_model = names[0] if names else cpu_model
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu_model": cpu_model,
        "logical_cpus": os.cpu_count(),
        "cpus_available": available,
        "load_average_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": threads,
        "python": platform.python_version(),
    }


def print_training(encoder: str, result: dict) -> None:
    print(
        f"\ntraining, {encoder} ({result['encoder_parameters'] / 1e6:.1f}M encoder parameters): batch "
        f"{result['batch_size']}, {result['warmup_steps']} warm-up + {result['rounds']} rounds x "
        f"{result['steps_per_round']} timed steps per configuration, {result['train_windows']} train windows "
        f"for {result['train_tweets']} tweets"
    )
    print(
        f"{'config':18} {'step s':>7} {'CPU s':>7} {'collate':>8} {'tweets/s':>9} {'s/epoch*':>9} "
        f"{'ratio':>6} {'CPU ratio':>9}  target"
    )
    for name, row in result["configs"].items():
        target = (
            ""
            if row["target_ratio"] is None
            else f"<= {row['target_ratio']} {'met' if row['met'] else 'NOT met'}"
        )
        print(
            f"{name:18} {row['median_step_seconds']:7.3f} {row['median_step_cpu_seconds']:7.3f} "
            f"{row['median_collate_seconds']:8.4f} {row['tweets_per_second']:9.1f} "
            f"{row['seconds_per_epoch_derived']:9.0f} {row['ratio_to_text']:6.3f} "
            f"{row['cpu_time_ratio_to_text']:9.3f}  {target}"
        )
    print("* derived: train windows x median step / batch size")


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--encoders",
        default=",".join(DEFAULT_ENCODERS),
        help="comma-separated encoder folders, or names under $MGCM_OFFLINE_MODELS; a missing default is skipped",
    )
    parser.add_argument("--data-dir", type=Path, default=PROJECT_ROOT / ".." / "shared" / "data")
    parser.add_argument("--word-vectors", type=Path, default=OFFLINE_MODELS / "glove-6b-50d")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--precision", choices=("bf16", "fp32"), default="bf16")
    parser.add_argument(
        "--warmup", type=int, default=None, help="discarded steps per config (default per encoder)"
    )
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds (default per encoder)")
    parser.add_argument("--steps-per-round", type=int, default=None, help="steps per config and round")
    parser.add_argument("--rss-train-steps", type=int, default=None, help="steps of the memory child")
    parser.add_argument(
        "--infer-tweets", type=int, default=300, help="valid tweets tagged by the memory child"
    )
    parser.add_argument("--images", type=int, default=2000, help="synthetic images of the cache benchmark")
    parser.add_argument("--image-epochs", type=int, default=3)
    parser.add_argument(
        "--work-dir", type=Path, default=None, help="scratch folder (default: a temporary one)"
    )
    parser.add_argument("--output", type=Path, default=PROJECT_ROOT / "benchmarks" / "results" / "cost.json")
    parser.add_argument(
        "--configs",
        default=",".join(CONFIGS),
        help=f"comma-separated configurations to time (default all: {','.join(CONFIGS)}); text is always timed",
    )
    parser.add_argument(
        "--training-only",
        action="store_true",
        help="time training only: no memory children, no one-off costs",
    )
    parser.add_argument("--child", choices=sorted(CHILD_PHASES), help=argparse.SUPPRESS)
    parser.add_argument("--child-spec", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for name in (
        "threads",
        "rounds",
        "steps_per_round",
        "rss_train_steps",
        "infer_tweets",
        "images",
        "image_epochs",
    ):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.warmup is not None and args.warmup < 0:
        parser.error(f"--warmup must be >= 0, got {args.warmup}")
    args.configs = list(dict.fromkeys([BASELINE, *(name for name in args.configs.split(",") if name)]))
    unknown = sorted(set(args.configs) - set(CONFIGS))
    if unknown:
        parser.error(f"--configs: unknown {unknown}; choose from {list(CONFIGS)}")
    return args


def resolve_encoders(spec: str) -> list[Path]:
    """Encoder folders from `--encoders`; a default encoder that is not installed is left out with a note."""
    folders = []
    for item in (part.strip() for part in spec.split(",") if part.strip()):
        folder = Path(item).expanduser() if ("/" in item or Path(item).is_dir()) else OFFLINE_MODELS / item
        if not (folder / "config.json").is_file():
            if item in DEFAULT_ENCODERS:
                print(f"note: {folder} is not there; {item} is skipped")
                continue
            raise SystemExit(f"--encoders: {folder} holds no model (no config.json)")
        folders.append(folder)
    if not folders:
        raise SystemExit(f"--encoders {spec!r}: no encoder folder found")
    return folders


def schedule_for(encoder_name: str, args: argparse.Namespace) -> Schedule:
    default = DEFAULT_SCHEDULES.get(encoder_name, DEFAULT_SCHEDULES[DEFAULT_ENCODERS[0]])
    return Schedule(
        warmup=default.warmup if args.warmup is None else args.warmup,
        rounds=args.rounds or default.rounds,
        steps_per_round=args.steps_per_round or default.steps_per_round,
    )


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()
    if args.child:
        spec = json.loads(args.child_spec.read_text(encoding="utf-8"))
        result = CHILD_PHASES[args.child](spec)
        write_json_atomically(spec["result_path"], {**result, "vm_hwm_mib": own_peak_rss_mib()})
        return
    # Read first, before this process adds its own load.
    machine = hardware(args.threads)
    torch.set_num_threads(args.threads)
    encoders = resolve_encoders(args.encoders)
    dataset_dir = (args.data_dir / "twitter2015").resolve()
    captions_file = (args.data_dir / "captions" / "twitter2015_blip2.txt").resolve()
    knowledge_file = (args.data_dir / "knowledge" / "twitter2015_pgim.txt").resolve()
    for required in (dataset_dir, captions_file, knowledge_file, args.word_vectors):
        if not required.exists():
            raise SystemExit(f"{required} does not exist (see --data-dir and --word-vectors)")
    report: dict[str, Any] = {
        "benchmark": "training_cost (issue 6)",
        "command": shlex.join(["python", *sys.argv]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "complete": False,
        "hardware": machine,
        "precision": args.precision,
        "data": {
            "corpus": "Twitter-2015 (../shared/data/twitter2015)",
            "captions": "BLIP-2 (../shared/data/captions/twitter2015_blip2.txt)",
            "knowledge": f"PGIM (../shared/data/knowledge/twitter2015_pgim.txt), {KNOWLEDGE_LENGTH} word pieces",
            "word_vectors": args.word_vectors.name,
            "url_token": URL_TOKEN,
        },
        "training": {
            "method": (
                "one process; every configuration takes the same fixed sequence of real train batches "
                f"(seeded shuffle {SHUFFLE_SEED}); step = collation + forward + backward + clipping + AdamW + "
                "scheduler; steps interleaved round-robin (order rotated each round) after discarded "
                "warm-up steps; medians of the timed steps; seconds per epoch derived = train windows x "
                "median step / batch size"
            ),
            "targets": {
                "with caption (full / text)": TARGET_RATIO_WITH_CAPTION,
                "without caption (text+shape+sa / text)": TARGET_RATIO_WITHOUT_CAPTION,
            },
            "encoders": {},
        },
        "peak_rss_mib": {},
        "one_off": {},
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    print(
        f"{machine['cpu_model']}, {machine['cpus_available']} CPUs, load average {machine['load_average_at_start']:.2f}; "
        f"torch {machine['torch']}, {args.threads} threads; {args.precision}"
    )
    with tempfile.TemporaryDirectory(prefix="mgcm-training-cost-") as scratch:
        work_dir = args.work_dir or Path(scratch)
        work_dir.mkdir(parents=True, exist_ok=True)
        cache_dir = work_dir / "neighbours"
        common = {
            "dataset_dir": str(dataset_dir),
            "captions_file": str(captions_file),
            "knowledge_file": str(knowledge_file),
            "word_vectors": str(args.word_vectors),
            "k": training_defaults(dataset_dir, encoders[0]).num_neighbours,
            "cache_dir": str(cache_dir),
            "threads": args.threads,
            "precision": args.precision,
        }

        if not args.training_only:
            # ---- one-off: neighbour table (its first build fills the cache that everything below reads)
            peak, neighbour = run_child("neighbour_table", common, work_dir)
            neighbour["peak_rss_mib"] = peak
            neighbour["note"] = (
                "build_neighbour_table over every Twitter-2015 token (all splits, as train.py), into an empty "
                "cache folder, then the same call reading the cache; both load the vectors first "
                "(vectors_load_seconds); the build uses every CPU thread"
            )
            report["one_off"]["neighbour_table"] = neighbour
            report["one_off"]["captions"] = {
                "cached": False,
                "note": (
                    "caption encodings are not cached: the caption goes through the text encoder being trained, at "
                    "every step, so its cost is inside the full / text ratio. With detach_text_source_encoding=True "
                    "(the default, `full`) the pass is a forward without dropout or gradient; "
                    "`full-caption-grad` back-propagates through it"
                ),
            }
            print(
                f"\nneighbour table: {neighbour['table_words']} words x k={neighbour['k']} from "
                f"{neighbour['corpus_word_types']} corpus word types; first build {neighbour['first_build_seconds']:.1f} s, "
                f"cached {neighbour['cached_seconds']:.1f} s (vectors load {neighbour['vectors_load_seconds']:.1f} s); "
                f"peak RSS {peak:.0f} MiB"
            )
            write_json_atomically(args.output, report)

            # ---- one-off: image feature cache
            images = measure_image_feature_cache(args.images, args.image_epochs, 16, work_dir)
            report["one_off"]["image_feature_cache"] = images
            print(
                f"\nimage features, {images['images']} {IMAGE_SIZE}x{IMAGE_SIZE} images x {images['epochs']} epochs: "
                f"without cache {images['without_cache_seconds']:.1f} s, with cache {images['with_cache_seconds']:.1f} s "
                f"(build {images['with_cache_build_seconds']:.1f} s + reads {images['with_cache_read_seconds']:.1f} s); "
                f"saving {images['saving_seconds']:.1f} s, ratio {images['ratio_without_to_with']:.2f}; "
                f"cache {images['cache_bytes'] / 2**20:.1f} MiB"
            )
            write_json_atomically(args.output, report)

        corpus, table = load_real_corpus(common)
        for encoder_dir in encoders:
            name = encoder_dir.name
            result = measure_training(
                encoder_dir,
                corpus,
                table,
                schedule_for(name, args),
                args.precision,
                dataset_dir,
                args.configs,
            )
            report["training"]["encoders"][name] = result
            print_training(name, result)
            write_json_atomically(args.output, report)

            if args.training_only:
                continue
            model_dir = work_dir / f"model-{name}"
            spec = {
                **common,
                "encoder_name": name,
                "encoder_dir": str(encoder_dir),
                "model_dir": str(model_dir),
                "steps": args.rss_train_steps or DEFAULT_RSS_TRAIN_STEPS.get(name, 10),
            }
            train_peak, train_info = run_child("train", spec, work_dir)
            infer_peak, infer_info = run_child("infer", {**spec, "tweets": args.infer_tweets}, work_dir)
            report["peak_rss_mib"][name] = {
                "train": train_peak,
                "infer": infer_peak,
                "config": FULL,
                "train_phase": (
                    f"child process: load Twitter-2015 + captions, neighbour table from cache, build `{FULL}`, "
                    f"window the corpus, {train_info['steps']} training steps, save model and processor"
                ),
                "infer_phase": (
                    f"child process: load the saved folder ({infer_info['weights_dtype']} weights), tag "
                    f"{infer_info['tweets']} valid tweets with captions through the multimodal-ner pipeline, "
                    f"batch {infer_info['batch_size']}"
                ),
                "train_child": train_info,
                "infer_child": infer_info,
            }
            print(
                f"peak RSS, {name}: train {train_peak:.0f} MiB ({train_info['steps']} steps), infer {infer_peak:.0f} MiB "
                f"({infer_info['tweets']} tweets, {infer_info['tweets_per_second']:.1f} tweets/s)"
            )
            write_json_atomically(args.output, report)
    report["complete"] = True
    write_json_atomically(args.output, report)
    print(f"\nwrote {args.output}")


__all__ = [
    "CONFIGS",
    "ConfigRun",
    "Schedule",
    "build_config_run",
    "child_peak_rss_mib",
    "own_peak_rss_mib",
    "fixed_batch_order",
    "interleaved_schedule",
    "measure_image_feature_cache",
    "measure_training",
    "summarise_steps",
    "training_step",
]

if __name__ == "__main__":
    main()
