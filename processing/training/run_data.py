"""The data of a training run, built as its flags ask: the corpus, the tokenizer, the semantic-augmentation
neighbour table, the image features, the processor and the data loaders.

Whatever is cached on disk (neighbour table, image features) or tokenised (window rows) is built by the main
process first, so the other processes read it instead of building it again.
"""

from dataclasses import dataclass, field
from pathlib import Path

import datasets
from accelerate import Accelerator
from accelerate.logging import get_logger
from torch.utils.data import DataLoader
from transformers import AutoImageProcessor, AutoTokenizer, PreTrainedTokenizerBase

from modeling_mgcm import COCO_OBJECT_LABELS, MGCMConfig, MGCMForTokenClassification
from modeling_mgcm.neighbour_table import NeighbourTable
from modeling_mgcm.processing_mgcm import MGCMProcessor
from processing.corpus.synthetic import SYNTHETIC_OBJECT_LABELS, make_synthetic_corpus
from processing.corpus.tweet_corpus import load_tweet_corpus
from processing.images.feature_cache import ImageFeatureCache
from processing.testing.tiny_backbones import (
    build_corpus_tokenizer,
    tiny_image_processor,
    weights_fingerprint,
)
from processing.text.neighbour_search import build_neighbour_table
from processing.training.arguments import (
    DEFAULT_TEXT_SOURCE_LENGTH,
    DEFAULT_TEXT_SOURCE_LENGTHS,
    TrainArguments,
)
from processing.training.data_collator import MGCMDataCollator

logger = get_logger(__name__)
REQUIRED_SPLITS = ("train", "valid")


def load_corpus(args: TrainArguments) -> datasets.DatasetDict:
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


def final_eval_splits(args: TrainArguments, corpus: datasets.DatasetDict) -> list[str]:
    """The splits the selected model is evaluated on (`--final_eval_splits`, default all), once the corpus is
    known to hold the train and valid splits a run needs."""
    for required in REQUIRED_SPLITS:
        if required not in corpus:
            raise ValueError(f"the corpus has no {required} split (it has {sorted(corpus)}); both are needed")
    logger.info("corpus: %s", {name: len(split) for name, split in corpus.items()})
    splits = args.final_eval_splits.split(",") if args.final_eval_splits else list(corpus)
    unknown = sorted(set(splits) - set(corpus))
    if unknown:
        raise ValueError(f"--final_eval_splits: no split {unknown}; the corpus has {sorted(corpus)}")
    return splits


def build_tokenizer(args: TrainArguments, corpus: datasets.DatasetDict) -> PreTrainedTokenizerBase:
    """The `--text_model`'s tokenizer, or a WordPiece tokenizer over the train split's words."""
    if args.text_model is not None:
        return AutoTokenizer.from_pretrained(args.text_model)
    return build_corpus_tokenizer(sorted({word for words in corpus["train"]["tokens"] for word in words}))


def corpus_neighbour_table(
    args: TrainArguments, corpus: datasets.DatasetDict, accelerator: Accelerator, cache_dir: Path
) -> NeighbourTable | None:
    """The `--word_vectors` neighbours of every word of every split, or None without augmentation."""
    if args.augmentation_mode == "none":
        return None
    corpus_words = [word for split in corpus.values() for words in split["tokens"] for word in words]
    with accelerator.main_process_first():
        neighbour_table = build_neighbour_table(
            corpus_words, args.word_vectors, k=args.num_neighbours, cache_dir=cache_dir / "neighbours"
        )
    logger.info("neighbour table: %s", neighbour_table)
    return neighbour_table


def object_label_vocabulary(args: TrainArguments) -> list[str]:
    """The detector's class names: the synthetic corpus's, `--object_labels_file`'s, or the 80 COCO classes."""
    if args.synthetic:
        return list(SYNTHETIC_OBJECT_LABELS)
    if args.object_labels_file:
        lines = Path(args.object_labels_file).read_text(encoding="utf-8").splitlines()
        return [line.strip() for line in lines if line.strip()]
    return list(COCO_OBJECT_LABELS)


@dataclass
class ImageInputs:
    """How a run's model sees the images: the image processor, the cache of the frozen backbone's features,
    and the counts of tweets with and without usable features (results.json `images`)."""

    image_processor: object | None = None
    feature_cache: ImageFeatureCache | None = None
    counts: dict = field(default_factory=dict)


def build_image_inputs(
    args: TrainArguments,
    model: MGCMForTokenClassification,
    corpus: datasets.DatasetDict,
    accelerator: Accelerator,
    cache_dir: Path,
) -> ImageInputs:
    """The image processor and the features of every corpus image, computed once by the model's frozen
    vision backbone (`--vision_model`, or the tiny random one); empty for a model without the image."""
    if not model.config.use_image:
        return ImageInputs()
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
    counts = {
        "with_features": len(stats.computed_ids) + len(stats.reused_ids),
        "missing": len(stats.missing_ids),
        "corrupt": len(stats.corrupt_ids),
        "vision_forward_calls": feature_cache.vision_forward_calls,
    }
    logger.info("image features: %s", counts)
    return ImageInputs(image_processor, feature_cache, counts)


def text_source_lengths(args: TrainArguments, corpus: datasets.DatasetDict) -> dict[str, int]:
    """Pieces kept of every text source of the corpus, --text_source_max_length or the default."""
    names = [
        name for name in corpus["train"].column_names if name == "caption" or name in args.text_source_files
    ]
    defaults = {name: DEFAULT_TEXT_SOURCE_LENGTHS.get(name, DEFAULT_TEXT_SOURCE_LENGTH) for name in names}
    return defaults | {
        name: args.text_source_lengths[name] for name in names if name in args.text_source_lengths
    }


def build_processor(
    args: TrainArguments,
    corpus: datasets.DatasetDict,
    model_config: MGCMConfig,
    tokenizer: PreTrainedTokenizerBase,
    image_processor,
    neighbour_table: NeighbourTable | None,
    object_labels: list[str],
) -> MGCMProcessor:
    """The processor saved with the model: windows of `--max_length` pieces, the text sources' lengths and
    roles, the neighbour table, and the object labels when the model reads objects."""
    return MGCMProcessor(
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


@dataclass
class RunDataloaders:
    """The shuffled train loader, an ordered loader per split for evaluation, and the evaluation collator
    (which keeps each window's tweet and word offset, to merge windows back into tweets)."""

    train: DataLoader
    evaluation: dict[str, DataLoader]
    eval_collator: MGCMDataCollator


def build_dataloaders(
    args: TrainArguments,
    windows: datasets.DatasetDict,
    processor: MGCMProcessor,
    feature_cache: ImageFeatureCache | None,
) -> RunDataloaders:
    """Data loaders over the window rows, at `--per_device_train_batch_size` and `--per_device_eval_batch_size`."""
    train_collator = MGCMDataCollator(processor, image_feature_cache=feature_cache)
    eval_collator = MGCMDataCollator(processor, image_feature_cache=feature_cache, return_window_info=True)
    train = DataLoader(
        windows["train"], shuffle=True, batch_size=args.per_device_train_batch_size, collate_fn=train_collator
    )
    evaluation = {
        name: DataLoader(split, batch_size=args.per_device_eval_batch_size, collate_fn=eval_collator)
        for name, split in windows.items()
    }
    return RunDataloaders(train, evaluation, eval_collator)


__all__ = [
    "ImageInputs",
    "RunDataloaders",
    "build_dataloaders",
    "build_image_inputs",
    "build_processor",
    "build_tokenizer",
    "corpus_neighbour_table",
    "final_eval_splits",
    "load_corpus",
    "object_label_vocabulary",
    "text_source_lengths",
]
