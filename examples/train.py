#!/usr/bin/env python
"""Train MGCM for multimodal NER with Accelerate, from one CPU to many GPUs.

With no data argument it trains on the embedded synthetic corpus with tiny random backbones and, for
comparison, a text-only model of the same size (a few minutes on 2 CPU cores):

    accelerate launch examples/train.py

On Twitter-2015 with a local encoder folder, GloVe neighbours and BLIP-2 captions:

    accelerate launch examples/train.py --dataset_dir ../shared/data/twitter2015 \
        --captions_file ../shared/data/captions/twitter2015_blip2.txt \
        --text_model ~/.cache/mgcm-offline-models/all-MiniLM-L6-v2 \
        --word_vectors ~/.cache/mgcm-offline-models/glove-6b-50d --granularities caption \
        --output_dir outputs/twitter2015

The best epoch is selected on `valid` (lenient F1) only; every split present is then evaluated
deterministically and written to `output_dir/results.json` with a model card, and the model and processor
are saved so that the Auto classes load them.
"""

import argparse
import hashlib
import logging
import math
import os
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, set_seed
from safetensors.torch import load_file
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import AutoImageProcessor, AutoModel, AutoTokenizer, get_linear_schedule_with_warmup

from modeling_mgcm import COCO_OBJECT_LABELS, MGCMConfig, MGCMForTokenClassification
from processing import (
    LABEL_NAMES,
    ImageFeatureCache,
    MGCMDataCollator,
    MGCMProcessor,
    build_neighbour_table,
    format_metrics_table,
    load_tweet_corpus,
    make_synthetic_corpus,
)
from processing.cli_options import name_value_pairs
from processing.corpus.synthetic import SYNTHETIC_OBJECT_LABELS, score_ambiguous_mentions
from processing.evaluation.corpus_evaluation import evaluate_corpus
from processing.testing.tiny_backbones import (
    build_corpus_tokenizer,
    tiny_image_processor,
    tiny_text_config,
    tiny_vision_config,
    weights_fingerprint,
)
from processing.training.checkpointing import (
    latest_checkpoint,
    load_checkpoint,
    prune_checkpoints,
    save_checkpoint,
    save_pretrained_atomically,
    write_json_atomically,
)
from processing.training.model_card import render_model_card
from processing.training.nonfinite_loss import NonFiniteLossMonitor

logger = get_logger(__name__)
VISUAL_GRANULARITY_CHOICES = ("image", "objects")
# Word pieces kept of a text source that --text_source_max_length does not set: BLIP-2 captions are ~12 words,
# PGIM's knowledge ~100 words (130-200 pieces), other sources get room for a paragraph.
DEFAULT_TEXT_SOURCE_LENGTHS = {"caption": 32, "knowledge": 200}
DEFAULT_TEXT_SOURCE_LENGTH = 128


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    data = parser.add_argument_group("data")
    data.add_argument(
        "--dataset_dir", help="folder with train.txt, valid.txt (and test.txt) in UMT CoNLL format"
    )
    data.add_argument("--image_dir", help="folder of <IMGID>.jpg tweet images")
    data.add_argument(
        "--captions_file",
        help="captions file, one '<IMGID>.jpg :<caption>' per line (= --text_source caption=FILE)",
    )
    data.add_argument(
        "--text_source",
        action="append",
        metavar="NAME=FILE",
        help="a named text about each post (e.g. knowledge=../shared/data/knowledge/twitter2015_pgim.txt), "
        "in the captions format; repeat for several. Each is a granularity of its own unless "
        "--text_source_as_segment names it",
    )
    data.add_argument("--objects_file", help="JSON objects file {IMGID: [{label, score}, ...]}")
    data.add_argument(
        "--object_labels_file", help="detector class names, one per line (default: 80 COCO classes)"
    )
    data.add_argument("--repair_bio", action="store_true", help="turn an I- tag opening an entity into B-")
    data.add_argument("--synthetic", action="store_true", help="train on the embedded synthetic corpus")
    data.add_argument(
        "--synthetic_sizes", default="600,200,200", help="train,valid,test tweets of the synthetic corpus"
    )
    model = parser.add_argument_group("model")
    model.add_argument("--text_model", help="text encoder folder or Hub id (default: tiny random BERT)")
    model.add_argument(
        "--vision_model", help="vision backbone folder or Hub id (default: tiny random ResNet)"
    )
    model.add_argument(
        "--word_vectors", help="GloVe/word2vec text file or folder with vectors.npy + words.txt"
    )
    model.add_argument("--num_neighbours", type=int, default=4)
    model.add_argument(
        "--granularities",
        default=None,
        help="comma-separated subset of image,objects and the text sources given ('' for text only); "
        "default: all for --synthetic, else every text source given that is not a segment",
    )
    data.add_argument(
        "--text_source_origin",
        action="append",
        metavar="NAME=TEXT",
        help="where a text source comes from (e.g. knowledge='PGIM (Li et al. 2023), ChatGPT-written'), "
        "for the model card",
    )
    model.add_argument(
        "--text_source_max_length",
        action="append",
        metavar="NAME=N",
        help="word pieces kept of a text source, special tokens included (default: caption 32, knowledge 200, "
        f"others {DEFAULT_TEXT_SOURCE_LENGTH})",
    )
    model.add_argument(
        "--text_source_as_segment",
        action="append",
        metavar="NAME",
        help="control: append this text source to the tweet as a further text segment (PGIM's way) "
        "instead of its granularity; repeat for several",
    )
    model.add_argument(
        "--share_text_source_block",
        action="store_true",
        help="one cross-modal block for every text source, with a learned source embedding, instead of "
        "one block each",
    )
    model.add_argument(
        "--input_dropout",
        action="append",
        metavar="NAME=P",
        help="remove granularity NAME from each training example with probability P, so that one model "
        "serves posts with and without it (off by default)",
    )
    model.add_argument("--augmentation_mode", choices=("none", "add", "gate", "attention"), default=None)
    model.add_argument("--no_word_shape", action="store_true", help="turn the word-shape feature off")
    model.add_argument("--aux_span_loss_weight", type=float, default=0.5)
    model.add_argument(
        "--gradient_checkpointing",
        action="store_true",
        help="recompute the attention layers' activations in the backward pass (less activation memory for one more forward pass of each layer)",
    )
    model.add_argument("--max_length", type=int, default=128, help="word pieces per window")
    model.add_argument("--stride", type=int, default=16, help="words shared by consecutive windows")
    model.add_argument(
        "--url_token",
        default=None,
        help="feed every link to the encoder as this one word (e.g. 'http'): links are ~half the word "
        "pieces of Twitter-2015",
    )
    model.add_argument(
        "--caption_as_text_segment",
        action="store_true",
        help="= --text_source_as_segment caption",
    )
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--num_train_epochs", type=int, default=None)
    optim.add_argument("--max_train_steps", type=int, default=None, help="overrides --num_train_epochs")
    optim.add_argument("--per_device_train_batch_size", type=int, default=16)
    optim.add_argument("--per_device_eval_batch_size", type=int, default=64)
    optim.add_argument("--learning_rate", type=float, default=None, help="encoder learning rate")
    optim.add_argument("--fusion_learning_rate", type=float, default=None, help="MGCM layers and heads")
    optim.add_argument("--crf_learning_rate", type=float, default=None, help="CRF transition scores")
    optim.add_argument("--warmup_ratio", type=float, default=0.1)
    optim.add_argument("--weight_decay", type=float, default=0.01)
    optim.add_argument("--max_grad_norm", type=float, default=1.0)
    optim.add_argument("--gradient_accumulation_steps", type=int, default=1)
    optim.add_argument("--mixed_precision", choices=("no", "fp16", "bf16"), default=None)
    run = parser.add_argument_group("run")
    run.add_argument("--seed", type=int, default=42)
    run.add_argument("--output_dir", default="outputs/mgcm")
    run.add_argument(
        "--cache_dir", default=None, help="feature and neighbour caches (default: output_dir/cache)"
    )
    run.add_argument(
        "--checkpointing_steps",
        default="epoch",
        help="'epoch' (a checkpoint at every epoch end), a number N (also every N optimizer steps, so a run "
        "stopped mid-epoch resumes there), or 'no'",
    )
    run.add_argument("--keep_checkpoints", type=int, default=2, help="newest checkpoints kept on disk")
    run.add_argument(
        "--resume_from_checkpoint",
        default=None,
        help="a step_<N> checkpoint folder, or 'latest' for the newest one under output_dir/checkpoints",
    )
    run.add_argument("--with_tracking", action="store_true", help="log to TensorBoard in output_dir/runs")
    run.add_argument(
        "--logging_steps",
        type=int,
        default=10,
        help="every N optimizer steps: log the mean train loss and check every process's loss is finite "
        "(the learning rates are logged at every step)",
    )
    run.add_argument(
        "--final_eval_splits",
        default=None,
        help="comma-separated splits the selected model is evaluated on at the end (default: all)",
    )
    run.add_argument(
        "--drop_text_sources_at_eval",
        default="",
        help="comma-separated text sources: the selected model is also evaluated on the final splits as if "
        "no post had them (results.json 'metrics_without')",
    )
    run.add_argument(
        "--no_text_only_baseline",
        action="store_true",
        help="with --synthetic: skip training the text-only comparison model",
    )
    args = parser.parse_args(argv)

    args.synthetic = args.synthetic or args.dataset_dir is None
    try:
        args.text_source_files = name_value_pairs(args.text_source, "--text_source")
        args.text_source_lengths = name_value_pairs(
            args.text_source_max_length, "--text_source_max_length", int
        )
        args.input_dropout_rates = name_value_pairs(args.input_dropout, "--input_dropout", float)
        args.text_source_origins = name_value_pairs(args.text_source_origin, "--text_source_origin")
    except ValueError as error:
        parser.error(str(error))
    if args.captions_file:
        if "caption" in args.text_source_files:
            parser.error("give the captions as --captions_file or --text_source caption=FILE, not both")
        args.text_source_files = {"caption": args.captions_file, **args.text_source_files}
    args.segment_sources = list(args.text_source_as_segment or [])
    if args.caption_as_text_segment and "caption" not in args.segment_sources:
        args.segment_sources.insert(0, "caption")
    # The synthetic corpus brings its own captions.
    text_sources = ["caption", *args.text_source_files] if args.synthetic else list(args.text_source_files)
    text_sources = list(dict.fromkeys(text_sources))
    if args.granularities is None:
        default = ["image", "objects"] if args.synthetic else []
        default += [name for name in text_sources if name not in args.segment_sources]
        args.granularities = ",".join(default)
    args.granularities = [name for name in args.granularities.split(",") if name]
    choices = (*VISUAL_GRANULARITY_CHOICES, *text_sources)
    unknown = sorted(set(args.granularities) - set(choices))
    if unknown:
        parser.error(
            f"--granularities: unknown {unknown}; choose from {choices} (a text source needs --text_source NAME=FILE)"
        )
    for option, names in (
        ("--text_source_as_segment", args.segment_sources),
        ("--text_source_max_length", list(args.text_source_lengths)),
        ("--text_source_origin", list(args.text_source_origins)),
    ):
        missing = sorted(set(names) - set(text_sources))
        if missing:
            parser.error(f"{option} names {missing}, which no --text_source (or --captions_file) gives")
    both = sorted(set(args.segment_sources) & set(args.granularities))
    if both:
        parser.error(f"{both}: a text source is either a segment or a granularity, not both")
    unknown_dropout = sorted(set(args.input_dropout_rates) - set(args.granularities))
    if unknown_dropout:
        parser.error(f"--input_dropout names {unknown_dropout}, which are not among --granularities")
    args.drop_text_sources_at_eval = [n for n in args.drop_text_sources_at_eval.split(",") if n]
    missing = sorted(set(args.drop_text_sources_at_eval) - set(text_sources))
    if missing:
        parser.error(f"--drop_text_sources_at_eval names {missing}, which no --text_source gives")
    if "image" in args.granularities and not args.synthetic and not (args.image_dir and args.vision_model):
        parser.error("the image granularity on a real corpus needs --image_dir and --vision_model")
    if "objects" in args.granularities and not args.synthetic and not args.objects_file:
        parser.error("the objects granularity on a real corpus needs --objects_file")
    if args.augmentation_mode is None:
        args.augmentation_mode = "gate" if args.word_vectors else "none"
    if args.augmentation_mode != "none" and not args.word_vectors:
        parser.error(f"--augmentation_mode {args.augmentation_mode} needs --word_vectors")
    # Tiny random encoders learn fast with a high rate; pretrained encoders want the paper's 3e-5.
    pretrained = args.text_model is not None
    if args.learning_rate is None:
        args.learning_rate = 3e-5 if pretrained else 1e-3
    if args.fusion_learning_rate is None:
        args.fusion_learning_rate = 1e-3 if pretrained else args.learning_rate
    if args.crf_learning_rate is None:
        args.crf_learning_rate = 1e-2
    if args.num_train_epochs is None:
        args.num_train_epochs = 12 if args.synthetic else 5
    if args.logging_steps < 1:
        parser.error("--logging_steps must be at least 1")
    if args.checkpointing_steps not in ("epoch", "no") and not args.checkpointing_steps.isdigit():
        parser.error("--checkpointing_steps takes 'epoch', 'no' or a number of steps")
    return args


def load_corpus(args):
    """The DatasetDict to train on: the synthetic corpus or a UMT-format corpus folder."""
    if args.synthetic:
        sizes = [int(size) for size in args.synthetic_sizes.split(",")]
        return make_synthetic_corpus(*sizes, seed=args.seed)
    return load_tweet_corpus(
        args.dataset_dir,
        image_dir=args.image_dir,
        objects_file=args.objects_file,
        repair_bio=args.repair_bio,
        text_source_files=args.text_source_files,
    )


def text_source_lengths(args, corpus) -> dict[str, int]:
    """Pieces kept of every text source of the corpus, --text_source_max_length or the default."""
    names = [
        name for name in corpus["train"].column_names if name == "caption" or name in args.text_source_files
    ]
    defaults = {name: DEFAULT_TEXT_SOURCE_LENGTHS.get(name, DEFAULT_TEXT_SOURCE_LENGTH) for name in names}
    return defaults | {
        name: args.text_source_lengths[name] for name in names if name in args.text_source_lengths
    }


def text_source_records(args, corpus, processor) -> list[dict]:
    """What the model card says of each text source read: its role, length, file, origin and coverage."""
    records = []
    for name in processor.text_sources:
        if name not in args.granularities and name not in processor.segment_sources:
            continue
        path = args.text_source_files.get(name)
        records.append(
            {
                "name": name,
                "role": "segment" if name in processor.segment_sources else "granularity",
                "max_length": processor.text_source_max_lengths[name],
                "file": path,
                "sha256": file_sha256(path) if path else None,
                "origin": args.text_source_origins.get(
                    name, "the synthetic corpus" if args.synthetic else None
                ),
                "input_dropout": args.input_dropout_rates.get(name, 0.0),
                "coverage": {
                    split: sum(1 for text in rows[name] if text.strip()) / max(len(rows), 1)
                    for split, rows in corpus.items()
                },
            }
        )
    return records


def file_sha256(path: str) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def tokenised_windows(processor, corpus, model_config, dropped_sources=()):
    """The window rows of every split, without the inputs of text sources the model does not read; the
    `dropped_sources` are emptied first, as if no post had them."""
    if dropped_sources:
        corpus = corpus.map(lambda row: dict.fromkeys(dropped_sources, ""), desc="Removing text sources")
    windows = processor.preprocess_corpus(corpus)
    unread = [
        f"{name}_input_ids"
        for name in processor.granularity_sources
        if name not in model_config.text_sources and f"{name}_input_ids" in windows["train"].column_names
    ]
    return windows.remove_columns(unread) if unread else windows


def object_label_vocabulary(args) -> list[str]:
    if args.synthetic:
        return list(SYNTHETIC_OBJECT_LABELS)
    if args.object_labels_file:
        lines = Path(args.object_labels_file).read_text(encoding="utf-8").splitlines()
        return [line.strip() for line in lines if line.strip()]
    return list(COCO_OBJECT_LABELS)


def build_model(args, tokenizer, neighbour_table, object_labels):
    """MGCM with pretrained backbones from `--text_model`/`--vision_model`, or tiny random ones."""
    config_kwargs = dict(
        use_image="image" in args.granularities,
        use_objects="objects" in args.granularities,
        text_sources=[name for name in args.granularities if name not in VISUAL_GRANULARITY_CHOICES],
        share_text_source_block=args.share_text_source_block,
        input_dropout=args.input_dropout_rates,
        object_labels=object_labels,
        augmentation_mode=args.augmentation_mode,
        augmentation_dim=neighbour_table.dim if neighbour_table is not None else 50,
        num_neighbours=neighbour_table.k if neighbour_table is not None else args.num_neighbours,
        use_word_shape=not args.no_word_shape,
        aux_span_loss_weight=args.aux_span_loss_weight,
        id2label=dict(enumerate(LABEL_NAMES)),
        label2id={label: index for index, label in enumerate(LABEL_NAMES)},
    )
    use_vision = config_kwargs["use_image"]
    if args.text_model is not None:
        vision_path = args.vision_model if use_vision else None
        if use_vision and vision_path is None:
            # A pretrained text encoder with the tiny random vision backbone (synthetic images only).
            text_encoder = AutoModel.from_pretrained(args.text_model, use_safetensors=True)
            config = MGCMConfig(
                text_config=text_encoder.config, vision_config=tiny_vision_config(), **config_kwargs
            )
            return MGCMForTokenClassification(config, text_encoder=text_encoder)
        return MGCMForTokenClassification.from_backbones(args.text_model, vision_path, **config_kwargs)
    config = MGCMConfig(
        text_config=tiny_text_config(len(tokenizer)),
        vision_config=tiny_vision_config() if use_vision else None,
        **config_kwargs,
    )
    return MGCMForTokenClassification(config)


def load_best_weights(model, folder: Path) -> None:
    """Load the safetensors weights saved in `folder` into `model` (all shards)."""
    state = {}
    for shard in sorted(folder.glob("*.safetensors")):
        if shard.name.startswith("model"):
            state.update(load_file(shard))
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise RuntimeError(
            f"the best model in {folder} does not match: missing {missing}, unexpected {unexpected}"
        )


def build_optimizer(model, args) -> torch.optim.AdamW:
    """AdamW over the model's learning-rate groups: encoders, MGCM layers and heads, CRF transitions."""
    return torch.optim.AdamW(
        model.parameter_groups(
            lr=args.learning_rate,
            fusion_lr=args.fusion_learning_rate,
            crf_lr=args.crf_learning_rate,
            weight_decay=args.weight_decay,
        )
    )


def peak_rss_mib() -> float | None:
    """This process's peak resident memory in MiB, or None where the OS does not report it."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def train_and_evaluate(args):
    """One training run: build data and model, train with selection on valid, evaluate, save.

    Returns `(results, model, processor, corpus)`.
    """
    output_dir = Path(args.output_dir)
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with="tensorboard" if args.with_tracking else None,
        project_dir=str(output_dir),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True),
    )
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO, force=True
    )
    for noisy in (
        "httpx",
        "datasets",
        "transformers.modeling_utils",
        "accelerate.checkpointing",
        "accelerate.accelerator",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    set_seed(args.seed)
    if accelerator.is_main_process:
        output_dir.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(args.cache_dir) if args.cache_dir else output_dir / "cache"
    started = time.perf_counter()

    # ---- data
    corpus = load_corpus(args)
    for required in ("train", "valid"):
        if required not in corpus:
            raise ValueError(f"the corpus has no {required} split (it has {sorted(corpus)}); both are needed")
    logger.info("corpus: %s", {name: len(split) for name, split in corpus.items()})
    final_splits = args.final_eval_splits.split(",") if args.final_eval_splits else list(corpus)
    unknown_splits = sorted(set(final_splits) - set(corpus))
    if unknown_splits:
        raise ValueError(f"--final_eval_splits: no split {unknown_splits}; the corpus has {sorted(corpus)}")

    if args.text_model is not None:
        tokenizer = AutoTokenizer.from_pretrained(args.text_model)
    else:
        tokenizer = build_corpus_tokenizer(
            sorted({word for words in corpus["train"]["tokens"] for word in words})
        )

    neighbour_table = None
    if args.augmentation_mode != "none":
        corpus_words = [word for split in corpus.values() for words in split["tokens"] for word in words]
        with accelerator.main_process_first():
            neighbour_table = build_neighbour_table(
                corpus_words, args.word_vectors, k=args.num_neighbours, cache_dir=cache_dir / "neighbours"
            )
        logger.info("neighbour table: %s", neighbour_table)

    object_labels = object_label_vocabulary(args)
    model = build_model(args, tokenizer, neighbour_table, object_labels)
    if args.gradient_checkpointing:
        # Non-reentrant: it works under DDP and with inputs that need no gradient (the frozen caption pass).
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    model_config = model.config
    use_image = model_config.use_image

    image_processor, feature_cache, image_counts = None, None, {}
    if use_image:
        vision_model = model.mgcm.vision_model
        if args.vision_model:
            image_processor = AutoImageProcessor.from_pretrained(args.vision_model)
            backbone_name = args.vision_model
        else:
            image_processor = tiny_image_processor()
            backbone_name = f"tiny-random-resnet-{weights_fingerprint(vision_model)}"
        vision_model.to(accelerator.device)
        feature_cache = ImageFeatureCache(
            cache_dir / "image_features", vision_model, image_processor, backbone_name
        )
        with accelerator.main_process_first():
            stats = feature_cache.build(corpus)
        image_counts = {
            "with_features": len(stats.computed_ids) + len(stats.reused_ids),
            "missing": len(stats.missing_ids),
            "corrupt": len(stats.corrupt_ids),
            "vision_forward_calls": feature_cache.vision_forward_calls,
        }
        logger.info("image features: %s", image_counts)

    processor = MGCMProcessor(
        tokenizer=tokenizer,
        image_processor=image_processor,
        neighbour_table=neighbour_table,
        object_labels=object_labels if model_config.use_objects else None,
        max_length=args.max_length,
        stride=args.stride,
        max_objects=model_config.max_objects,
        url_token=args.url_token,
        text_source_max_lengths=text_source_lengths(args, corpus),
        segment_sources=args.segment_sources,
    )
    with accelerator.main_process_first():
        windows = tokenised_windows(processor, corpus, model_config)

    train_collator = MGCMDataCollator(processor, image_feature_cache=feature_cache)
    eval_collator = MGCMDataCollator(processor, image_feature_cache=feature_cache, return_window_info=True)
    train_dataloader = DataLoader(
        windows["train"], shuffle=True, batch_size=args.per_device_train_batch_size, collate_fn=train_collator
    )
    eval_dataloaders = {
        name: DataLoader(split, batch_size=args.per_device_eval_batch_size, collate_fn=eval_collator)
        for name, split in windows.items()
    }
    train_batches_total = len(train_dataloader)

    # ---- optimisation
    optimizer = build_optimizer(model, args)
    model, optimizer, train_dataloader = accelerator.prepare(model, optimizer, train_dataloader)
    eval_dataloaders = {name: accelerator.prepare(loader) for name, loader in eval_dataloaders.items()}
    steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    if args.max_train_steps is None:
        args.max_train_steps = args.num_train_epochs * steps_per_epoch
    args.num_train_epochs = math.ceil(args.max_train_steps / steps_per_epoch)
    # The prepared scheduler takes num_processes steps per optimizer step (Accelerate's rule for batches that
    # are not split), so it is sized in those units: the rate at each optimizer step is then the same on
    # any number of processes.
    scheduler = get_linear_schedule_with_warmup(
        optimizer,
        int(args.warmup_ratio * args.max_train_steps) * accelerator.num_processes,
        args.max_train_steps * accelerator.num_processes,
    )
    scheduler = accelerator.prepare(scheduler)
    if args.with_tracking:
        accelerator.init_trackers(
            "mgcm",
            {k: (v if isinstance(v, int | float | str | bool) else str(v)) for k, v in vars(args).items()},
        )

    # ---- resume
    checkpoints_dir = output_dir / "checkpoints"
    best_dir = output_dir / "best_model"
    state = {"epoch": 0, "batches_in_epoch": 0, "completed_steps": 0, "best_f1": -1.0, "best_epoch": None}
    state["history"] = []
    if args.resume_from_checkpoint:
        checkpoint = (
            latest_checkpoint(checkpoints_dir)
            if args.resume_from_checkpoint == "latest"
            else Path(args.resume_from_checkpoint)
        )
        if checkpoint is None:
            logger.info("no checkpoint under %s: starting from scratch", checkpoints_dir)
        else:
            state = load_checkpoint(accelerator, checkpoint)
            logger.info(
                "resumed from %s: epoch %d, batch %d", checkpoint, state["epoch"], state["batches_in_epoch"]
            )

    nonfinite_loss = NonFiniteLossMonitor(accelerator)
    consequence = f"No checkpoint was written after the fault; the last good one is in {checkpoints_dir}."

    def checkpoint_now():
        nonfinite_loss.check(consequence)
        save_checkpoint(accelerator, checkpoints_dir, state["completed_steps"], state)
        if accelerator.is_main_process:
            prune_checkpoints(checkpoints_dir, args.keep_checkpoints)

    # ---- training
    logger.info(
        "training: %d epochs, %d optimizer steps, %d processes, %d train batches per process",
        args.num_train_epochs,
        args.max_train_steps,
        accelerator.num_processes,
        len(train_dataloader),
    )
    progress = tqdm(
        total=args.max_train_steps,
        initial=state["completed_steps"],
        desc="Training",
        disable=not accelerator.is_local_main_process,
    )
    batches_seen = 0
    train_started = time.perf_counter()
    for epoch in range(state["epoch"], args.num_train_epochs):
        if state["completed_steps"] >= args.max_train_steps:
            break
        model.train()
        train_dataloader.set_epoch(epoch)
        skip = state["batches_in_epoch"] if epoch == state["epoch"] else 0
        batches = accelerator.skip_first_batches(train_dataloader, skip) if skip else train_dataloader
        state["batches_in_epoch"] = skip
        # Summed on the device: reading the loss on the host at every batch would stall a GPU.
        epoch_loss = torch.zeros((), device=accelerator.device)
        epoch_batches = 0
        epoch_started = time.perf_counter()
        for batch in batches:
            with accelerator.accumulate(model):
                loss = model(**batch).loss
                nonfinite_loss.record(loss, state["completed_steps"] + 1)
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    if args.max_grad_norm:
                        accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                    # The rate this optimizer step applies, per parameter group (decay variants share it).
                    learning_rates = {
                        group["name"].removesuffix("_no_decay"): group["lr"]
                        for group in optimizer.param_groups
                    }
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad()
            state["batches_in_epoch"] += 1
            batches_seen += 1
            epoch_loss += loss.detach().float()
            epoch_batches += 1
            if not accelerator.sync_gradients:
                continue
            state["completed_steps"] += 1
            step = state["completed_steps"]
            progress.update(1)
            logger.info(
                "optimizer step %d: learning rate %s",
                step,
                " ".join(f"{name}={rate:.6e}" for name, rate in learning_rates.items()),
            )
            if args.with_tracking:
                accelerator.log(
                    {f"learning_rate/{name}": rate for name, rate in learning_rates.items()}, step=step
                )
            if step % args.logging_steps == 0:
                nonfinite_loss.check(consequence)
                mean_loss = accelerator.reduce(epoch_loss / epoch_batches, reduction="mean").item()
                progress.set_postfix(loss=f"{mean_loss:.3f}")
                logger.info("optimizer step %d: mean train loss this epoch %.4f", step, mean_loss)
                if args.with_tracking:
                    accelerator.log({"train_loss": mean_loss}, step=step)
            if args.checkpointing_steps.isdigit() and step % int(args.checkpointing_steps) == 0:
                checkpoint_now()
            if step >= args.max_train_steps:
                break
        nonfinite_loss.check(consequence)
        epoch_loss = accelerator.reduce(epoch_loss / max(epoch_batches, 1), reduction="mean").item()
        # ---- selection on valid only
        valid_started = time.perf_counter()
        metrics, _ = evaluate_corpus(
            model,
            eval_dataloaders["valid"],
            accelerator,
            corpus["valid"],
            model_config.id2label,
            "Validating",
        )
        valid_f1 = metrics["lenient"]["overall_f1"]
        state["history"].append(
            {
                "epoch": epoch,
                "train_loss": epoch_loss,
                "valid_f1": valid_f1,
                "valid_strict_f1": metrics["strict"]["overall_f1"],
                "train_batches": epoch_batches,
                "train_seconds": valid_started - epoch_started,
                "valid_seconds": time.perf_counter() - valid_started,
            }
        )
        logger.info(
            "epoch %d: train loss %.4f, valid F1 %.2f (lenient) / %.2f (strict)",
            epoch,
            epoch_loss,
            100 * valid_f1,
            100 * metrics["strict"]["overall_f1"],
        )
        if args.with_tracking:
            accelerator.log(
                {"valid_f1": valid_f1, "epoch_train_loss": epoch_loss, "epoch": epoch + 1},
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
        state["epoch"], state["batches_in_epoch"] = epoch + 1, 0
        if args.checkpointing_steps != "no":
            checkpoint_now()
    progress.close()
    train_seconds = time.perf_counter() - train_started

    # ---- final evaluation of the selected model on every split
    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    load_best_weights(unwrapped, best_dir)
    results = {"metrics": {}, "history": state["history"]}
    predictions_by_split = {}
    for name in final_splits:
        loader = eval_dataloaders[name]
        results["metrics"][name], predictions_by_split[name] = evaluate_corpus(
            model, loader, accelerator, corpus[name], unwrapped.config.id2label, f"Evaluating {name}"
        )
    if args.drop_text_sources_at_eval:
        results["metrics_without"] = {
            "text_sources": args.drop_text_sources_at_eval,
            "metrics": evaluate_without_sources(
                args, model, accelerator, processor, corpus, final_splits, eval_collator
            ),
        }
    if args.synthetic:
        results["ambiguous_mentions"] = {
            name: score_ambiguous_mentions(corpus[name]["tokens"], corpus[name]["ner_tags"], predictions)
            for name, predictions in predictions_by_split.items()
        }
    results["run"] = {
        "dataset": "synthetic" if args.synthetic else str(args.dataset_dir),
        "text_model": args.text_model or "tiny random BERT",
        "vision_model": (args.vision_model or "tiny random ResNet") if use_image else None,
        "granularities": args.granularities,
        "text_sources": text_source_records(args, corpus, processor),
        "augmentation_mode": args.augmentation_mode,
        "use_word_shape": not args.no_word_shape,
        "aux_span_loss_weight": args.aux_span_loss_weight,
        "seed": args.seed,
        "args": {
            k: v for k, v in vars(args).items() if isinstance(v, int | float | str | bool | list | type(None))
        },
    }
    results["training"] = {
        "num_processes": accelerator.num_processes,
        "train_batches_total": train_batches_total,
        "train_batches_per_process": len(train_dataloader),
        "train_batches_seen_this_process": batches_seen,
        "optimizer_steps": state["completed_steps"],
        "epochs_run": len(state["history"]),
        "best_epoch": state["best_epoch"],
        "train_seconds": train_seconds,
        "total_seconds": time.perf_counter() - started,
        "mixed_precision": accelerator.mixed_precision,
        "peak_rss_mib": peak_rss_mib(),
        "peak_gpu_memory_mib": (
            torch.cuda.max_memory_allocated(accelerator.device) / 2**20
            if accelerator.device.type == "cuda"
            else None
        ),
    }
    results["images"] = image_counts
    if processor.unknown_object_label_counts:
        results["unknown_object_labels"] = dict(processor.unknown_object_label_counts)

    if accelerator.is_main_process:
        for item in (unwrapped, processor):
            item.save_pretrained(output_dir)
        write_json_atomically(output_dir / "results.json", results)
        (output_dir / "README.md").write_text(render_model_card(results), encoding="utf-8")
        for name, by_mode in results["metrics"].items():
            for mode, metrics in by_mode.items():
                accelerator.print(format_metrics_table(metrics, title=f"{name} ({mode} seqeval)"))
    if args.with_tracking:
        accelerator.end_training()
    accelerator.wait_for_everyone()
    return results, unwrapped, processor, corpus


def evaluate_without_sources(args, model, accelerator, processor, corpus, splits, collator) -> dict:
    """Metrics of the selected model on `splits` with `--drop_text_sources_at_eval` removed from every post."""
    unwrapped = accelerator.unwrap_model(model)
    eval_corpus = type(corpus)({name: corpus[name] for name in splits})
    with accelerator.main_process_first():
        windows = tokenised_windows(processor, eval_corpus, unwrapped.config, args.drop_text_sources_at_eval)
    metrics = {}
    for name in splits:
        loader = accelerator.prepare(
            DataLoader(windows[name], batch_size=args.per_device_eval_batch_size, collate_fn=collator)
        )
        metrics[name], _ = evaluate_corpus(
            model,
            loader,
            accelerator,
            corpus[name],
            unwrapped.config.id2label,
            f"Evaluating {name} without " + ",".join(args.drop_text_sources_at_eval),
        )
    return metrics


def print_example_prediction(model, processor, corpus) -> None:
    """Tag one held-out tweet and print its words with the predicted tags."""
    split = corpus["test"] if "test" in corpus else corpus["valid"]
    row = next((r for r in split if any(r["ner_tags"])), split[0])
    encoding = processor(
        row["tokens"],
        images=row["image"] if model.config.use_image else None,
        objects=row["objects"] if model.config.use_objects else None,
        text_sources={name: row[name] for name in processor.text_sources if name in row},
        return_tensors="pt",
    )
    encoding = {
        k: v.to(model.device) for k, v in encoding.items() if k not in ("overflow_to_sample_mapping",)
    }
    offsets = encoding.pop("window_word_offset")
    model.eval()
    with torch.no_grad():
        predictions = model(**encoding).predictions
    merged = processor.merge_windows(predictions, [0] * len(offsets), offsets, encoding["word_mask"].sum(1))[
        0
    ]
    tagged = " ".join(
        f"{word}/{model.config.id2label[tag]}" if tag else word
        for word, tag in zip(row["tokens"], merged, strict=True)
    )
    print(f"\nExample ({row['id']}, caption: {row['caption']!r}):\n  {tagged}")


def main(argv=None) -> None:
    args = parse_args(argv)
    results, model, processor, corpus = train_and_evaluate(args)
    if not args.synthetic or not args.granularities or args.no_text_only_baseline:
        if int(os.environ.get("RANK", "0")) == 0:
            print_example_prediction(model, processor, corpus)
        return
    # The synthetic corpus is built so that only the image decides ambiguous mentions: show it.
    baseline_args = parse_args(
        (argv or [])
        + [
            "--granularities",
            "",
            "--output_dir",
            str(Path(args.output_dir) / "text_only"),
            "--no_text_only_baseline",
        ]
    )
    baseline = train_and_evaluate(baseline_args)[0]
    if int(os.environ.get("RANK", "0")) == 0:
        split = "test" if "test" in results["metrics"] else "valid"
        print(f"\nSynthetic corpus, {split} split, lenient seqeval F1 (%):")
        print(f"{'model':<28}{'all entities':>14}{'ambiguous mentions':>20}")
        for label, run in (("MGCM (" + ",".join(args.granularities) + ")", results), ("text only", baseline)):
            print(
                f"{label:<28}{100 * run['metrics'][split]['lenient']['overall_f1']:>14.2f}"
                f"{100 * run['ambiguous_mentions'][split]['overall_f1']:>20.2f}"
            )
        print_example_prediction(model, processor, corpus)


if __name__ == "__main__":
    main()
