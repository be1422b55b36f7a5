"""CPU cost of MGCM on Twitter-2015 (issue 6), measured in one run: training throughput and the overhead of the
MGCM parts over the text model, peak memory in training and in inference, and the one-off costs (neighbour
table, image feature cache). Writes `benchmarks/results/cost.json`.

    python benchmarks/training_cost.py [--encoders all-MiniLM-L6-v2,all-mpnet-base-v2] [--threads 1]
                                       [--precision bf16|fp32] [--output benchmarks/results/cost.json]

A smoke run (a few minutes, most of them the first neighbour-table build):

    python benchmarks/training_cost.py --encoders all-MiniLM-L6-v2 --warmup 1 --rounds 1 --steps-per-round 2 \
        --rss-train-steps 2 --infer-tweets 32 --images 64 --output /tmp/cost.json

This file is the command and its report. The measurements are its siblings: `cost_training_steps.py` (training
throughput), `cost_memory_children.py` (the child processes of the peak-memory and neighbour-table
measurements), `cost_image_cache.py`; the configurations, targets and schedules are in `cost_configs.py`.

Training. The configurations are those of `benchmarks/run_accuracy.sh`, built as `examples/train.py` builds
them with `processing.training` (`from_backbones` with the same seed, `MGCMProcessor(url_token="http")`,
`tokenised_windows`, `MGCMDataCollator`, AdamW over `parameter_groups` with train.py's default rates, linear warm-up, gradient
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
  `full+knowledge-cross2`: every block's cross-attention steps two layers deep (`num_cross_attention_layers`);
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
import json
import os
import platform
import shlex
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import datasets
import torch
import transformers
import transformers.utils.logging

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cost_configs import (  # noqa: E402
    BASELINE,
    CONFIGS,
    DEFAULT_ENCODERS,
    DEFAULT_RSS_TRAIN_STEPS,
    DEFAULT_SCHEDULES,
    FULL,
    IMAGE_SIZE,
    KNOWLEDGE_LENGTH,
    OFFLINE_MODELS,
    PROJECT_ROOT,
    SHUFFLE_SEED,
    TARGET_RATIO_WITH_CAPTION,
    TARGET_RATIO_WITHOUT_CAPTION,
    URL_TOKEN,
    Schedule,
)
from cost_image_cache import measure_image_feature_cache  # noqa: E402
from cost_memory_children import CHILD_PHASES, run_child  # noqa: E402
from cost_training_steps import load_real_corpus, measure_training, training_defaults  # noqa: E402
from peak_memory import own_peak_rss_mib  # noqa: E402

from modeling_mgcm.atomic_files import write_json_atomically  # noqa: E402


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


if __name__ == "__main__":
    main()
