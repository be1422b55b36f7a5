"""The command line of `examples/train.py`: every flag with its default, and the checks between flags that stop
a bad run before anything is loaded.

`parse_args` also resolves what the flags leave open: the granularities, the text sources and their roles,
and the learning rates and epochs that depend on whether the encoder is pretrained.
"""

import argparse

from modeling_mgcm.configuration_mgcm import VISUAL_GRANULARITIES
from processing.cli_options import name_value_pairs

# The command's --help text.
DESCRIPTION = """Train MGCM for multimodal NER with Accelerate, from one CPU to many GPUs.

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
# Word pieces kept of a text source that --text_source_max_length does not set: BLIP-2 captions are ~12 words,
# PGIM's knowledge ~100 words (130-200 pieces), other sources get room for a paragraph.
DEFAULT_TEXT_SOURCE_LENGTHS = {"caption": 32, "knowledge": 200}
DEFAULT_TEXT_SOURCE_LENGTH = 128


def build_parser() -> argparse.ArgumentParser:
    """The parser of every training flag, in its groups: data, model, optimisation, run."""
    parser = argparse.ArgumentParser(
        description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
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
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The training arguments of `argv` (default: the command line), resolved and checked.

    Adds `text_source_files`, `text_source_lengths`, `input_dropout_rates`, `text_source_origins` (dicts from
    the `NAME=VALUE` options) and `segment_sources`; turns `granularities` and `drop_text_sources_at_eval`
    into lists. Exits with argparse's usage message on a bad combination.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    args.synthetic = args.synthetic or args.dataset_dir is None
    _read_name_value_options(args, parser)
    _resolve_granularities(args, parser)
    _resolve_optimisation(args, parser)
    return args


def _read_name_value_options(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
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


def _resolve_granularities(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Which text sources are segments and which granularities the model reads, and that every option naming
    a text source or a granularity names one that exists."""
    args.segment_sources = list(args.text_source_as_segment or [])
    if args.caption_as_text_segment and "caption" not in args.segment_sources:
        args.segment_sources.insert(0, "caption")
    # The synthetic corpus brings its own captions.
    text_sources = ["caption", *args.text_source_files] if args.synthetic else list(args.text_source_files)
    text_sources = list(dict.fromkeys(text_sources))
    if args.granularities is None:
        default = list(VISUAL_GRANULARITIES) if args.synthetic else []
        default += [name for name in text_sources if name not in args.segment_sources]
        args.granularities = ",".join(default)
    args.granularities = [name for name in args.granularities.split(",") if name]
    choices = (*VISUAL_GRANULARITIES, *text_sources)
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


def _resolve_optimisation(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """The augmentation mode, learning rates and epochs the flags leave open, and the run-schedule checks."""
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


__all__ = [
    "DEFAULT_TEXT_SOURCE_LENGTH",
    "DEFAULT_TEXT_SOURCE_LENGTHS",
    "DESCRIPTION",
    "build_parser",
    "parse_args",
]
