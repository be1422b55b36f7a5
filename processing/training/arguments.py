"""The command line of `examples/train.py`: every flag with its default, and the checks between flags that stop
a bad run before anything is loaded.

The flags are the fields of four dataclasses, one per `--help` group (data, model, optimisation, run), parsed by
`transformers.HfArgumentParser` as the transformers example scripts parse theirs. `TrainArguments` is their
union: one flat object with every flag as an attribute (the training modules read `args.granularities`, not
`args.model.granularities`), whose `__post_init__` resolves what the flags leave open (the granularities, the
text sources and their roles, and the learning rates and epochs that depend on whether the encoder is
pretrained) and raises a `ValueError` naming the flag when they do not fit together. The resolution needs flags
of several groups at once, which is why it lives in the union and not in the groups.
"""

import argparse
from dataclasses import Field, asdict, dataclass, field
from typing import Literal

from transformers import HfArgumentParser

from modeling_mgcm.configuration_mgcm import VISUAL_GRANULARITIES
from processing.cli_options import name_value_pairs

# The command's --help text.
DESCRIPTION = """Train MGCM for multimodal NER with Accelerate, from one CPU to many GPUs.

With no data argument it trains on the embedded synthetic corpus with tiny random backbones and, for
comparison, a text-only model of the same size (a few minutes on 2 CPU cores):

    accelerate launch examples/train.py

On Twitter-2015 with a local encoder folder, GloVe neighbours and BLIP-2 captions:

    accelerate launch examples/train.py --dataset_dir ../shared/data/twitter2015 \\
        --captions_file ../shared/data/captions/twitter2015_blip2.txt \\
        --text_model ~/.cache/mgcm-offline-models/all-MiniLM-L6-v2 \\
        --word_vectors ~/.cache/mgcm-offline-models/glove-6b-50d --granularities caption \\
        --output_dir outputs/twitter2015

The best epoch is selected on `valid` (lenient F1) only; every split present is then evaluated
deterministically and written to `output_dir/results.json` with a model card, and the model and processor
are saved so that the Auto classes load them.
"""
# Word pieces kept of a text source that --text_source_max_length does not set: BLIP-2 captions are ~12 words,
# PGIM's knowledge ~100 words (130-200 pieces), other sources get room for a paragraph.
DEFAULT_TEXT_SOURCE_LENGTHS = {"caption": 32, "knowledge": 200}
DEFAULT_TEXT_SOURCE_LENGTH = 128
# The flags whose values are files or folders of the training machine (`--text_source` as NAME=FILE): what a
# Hub export reduces to their last part.
PATH_ARGUMENTS = (
    "dataset_dir",
    "image_dir",
    "captions_file",
    "text_source",
    "objects_file",
    "object_labels_file",
    "text_model",
    "vision_model",
    "word_vectors",
    "output_dir",
    "cache_dir",
    "resume_from_checkpoint",
)


def flag(default=None, help: str | None = None, repeatable: bool = False, **argparse_options) -> Field:
    """A dataclass field read as a flag: `help` and `argparse_options` go to argparse (`metavar`, ...).

    `repeatable` flags are given once per value (`--text_source a=f --text_source b=g`) and read as a list:
    HfArgumentParser gives a list field `nargs="+"`, and argparse's "extend" action adds up the repeats."""
    metadata = {"help": help, **argparse_options}
    if repeatable:
        metadata["action"] = "extend"
    return field(default=default, metadata=metadata)


@dataclass
class DataArguments:
    """The corpus, its images, objects and texts about each post."""

    _argument_group_name = "data"

    dataset_dir: str | None = flag(help="folder with train.txt, valid.txt (and test.txt) in UMT CoNLL format")
    image_dir: str | None = flag(help="folder of <IMGID>.jpg tweet images")
    captions_file: str | None = flag(
        help="captions file, one '<IMGID>.jpg :<caption>' per line (= --text_source caption=FILE)"
    )
    text_source: list[str] | None = flag(
        repeatable=True,
        metavar="NAME=FILE",
        help="a named text about each post (e.g. knowledge=../shared/data/knowledge/twitter2015_pgim.txt), "
        "in the captions format; repeat for several. Each is a granularity of its own unless "
        "--text_source_as_segment names it",
    )
    text_source_origin: list[str] | None = flag(
        repeatable=True,
        metavar="NAME=TEXT",
        help="where a text source comes from (e.g. knowledge='PGIM (Li et al. 2023), ChatGPT-written'), "
        "for the model card",
    )
    objects_file: str | None = flag(help="JSON objects file {IMGID: [{label, score}, ...]}")
    object_labels_file: str | None = flag(
        help="detector class names, one per line (default: 80 COCO classes)"
    )
    repair_bio: bool = flag(False, help="turn an I- tag opening an entity into B-")
    synthetic: bool = flag(
        False, help="train on the embedded synthetic corpus (also the default without --dataset_dir)"
    )
    synthetic_sizes: str = flag("600,200,200", help="train,valid,test tweets of the synthetic corpus")


@dataclass
class ModelArguments:
    """The backbones, the granularities the model reads and how it reads them."""

    _argument_group_name = "model"

    text_model: str | None = flag(help="text encoder folder or Hub id (default: tiny random BERT)")
    vision_model: str | None = flag(help="vision backbone folder or Hub id (default: tiny random ResNet)")
    word_vectors: str | None = flag(help="GloVe/word2vec text file or folder with vectors.npy + words.txt")
    num_neighbours: int = flag(4, help="nearest neighbours of each word for semantic augmentation")
    # A list once resolved; given as one comma-separated string, as transformers' `report_to` is.
    granularities: list[str] | str | None = flag(
        help="comma-separated subset of image,objects and the text sources given ('' for text only); "
        "default: all for --synthetic, else every text source given that is not a segment",
    )
    text_source_max_length: list[str] | None = flag(
        repeatable=True,
        metavar="NAME=N",
        help="word pieces kept of a text source, special tokens included (default: caption 32, knowledge 200, "
        f"others {DEFAULT_TEXT_SOURCE_LENGTH})",
    )
    text_source_as_segment: list[str] | None = flag(
        repeatable=True,
        metavar="NAME",
        help="control: append this text source to the tweet as a further text segment (PGIM's way) "
        "instead of its granularity; repeat for several",
    )
    share_text_source_block: bool = flag(
        False,
        help="one cross-modal block for every text source, with a learned source embedding, instead of "
        "one block each",
    )
    text_source_gradient: bool = flag(
        False,
        help="back-propagate into the text encoder through the text sources too (each then costs a "
        "training pass of the encoder, not one forward without gradient)",
    )
    num_cross_attention_layers: int = flag(
        1, help="depth of each cross-attention step between the words and a granularity"
    )
    input_dropout: list[str] | None = flag(
        repeatable=True,
        metavar="NAME=P",
        help="remove granularity NAME from each training example with probability P, so that one model "
        "serves posts with and without it (off by default)",
    )
    augmentation_mode: Literal["none", "add", "gate", "attention"] | None = flag(
        help="how the word-vector neighbours enter the model (default: gate with --word_vectors, else none)"
    )
    no_word_shape: bool = flag(False, help="turn the word-shape feature off")
    aux_span_loss_weight: float = flag(0.5, help="weight of the auxiliary entity-span loss")
    gradient_checkpointing: bool = flag(
        False,
        help="recompute the attention layers' activations in the backward pass (less activation memory for "
        "one more forward pass of each layer)",
    )
    max_length: int = flag(128, help="word pieces per window")
    stride: int = flag(16, help="words shared by consecutive windows")
    url_token: str | None = flag(
        help="feed every link to the encoder as this one word (e.g. 'http'): links are ~half the word "
        "pieces of Twitter-2015"
    )
    caption_as_text_segment: bool = flag(False, help="= --text_source_as_segment caption")


@dataclass
class OptimisationArguments:
    """The schedule and the optimizer; the rates and epochs left unset depend on the encoder and the corpus."""

    _argument_group_name = "optimisation"

    num_train_epochs: int | None = flag(help="default: 12 on the synthetic corpus, else 5")
    max_train_steps: int | None = flag(help="overrides --num_train_epochs")
    per_device_train_batch_size: int = flag(16, help="train windows per batch on each process")
    per_device_eval_batch_size: int = flag(64, help="evaluation windows per batch on each process")
    learning_rate: float | None = flag(
        help="encoder learning rate (default: 3e-5 with --text_model, else 1e-3)"
    )
    fusion_learning_rate: float | None = flag(
        help="MGCM layers and heads (default: 1e-3 with --text_model, else --learning_rate)"
    )
    crf_learning_rate: float | None = flag(help="CRF transition scores (default: 1e-2)")
    warmup_ratio: float = flag(0.1, help="share of the optimizer steps with a linearly rising learning rate")
    weight_decay: float = flag(0.01, help="AdamW weight decay (not of biases and norms)")
    max_grad_norm: float = flag(1.0, help="gradient clipping norm (0: no clipping)")
    gradient_accumulation_steps: int = flag(1, help="batches per optimizer step")
    mixed_precision: Literal["no", "fp16", "bf16"] | None = flag(
        help="default: the accelerate config's setting"
    )


@dataclass
class RunArguments:
    """Seeds, folders, checkpoints, logging and the final evaluation."""

    _argument_group_name = "run"

    seed: int = flag(42, help="seed of the model's initialisation, the shuffling and the synthetic corpus")
    output_dir: str = flag("outputs/mgcm", help="where the model, results.json and the model card go")
    cache_dir: str | None = flag(help="feature and neighbour caches (default: output_dir/cache)")
    checkpointing_steps: str = flag(
        "epoch",
        help="'epoch' (a checkpoint at every epoch end), a number N (also every N optimizer steps, so a run "
        "stopped mid-epoch resumes there), or 'no'",
    )
    keep_checkpoints: int = flag(2, help="newest checkpoints kept on disk")
    resume_from_checkpoint: str | None = flag(
        help="a step_<N> checkpoint folder, or 'latest' for the newest one under output_dir/checkpoints"
    )
    with_tracking: bool = flag(False, help="log to TensorBoard in output_dir/runs")
    logging_steps: int = flag(
        10,
        help="every N optimizer steps: log the mean train loss and check every process's loss is finite "
        "(the learning rates are logged at every step)",
    )
    final_eval_splits: str | None = flag(
        help="comma-separated splits the selected model is evaluated on at the end (default: all)"
    )
    # A list once resolved, as --granularities.
    drop_text_sources_at_eval: list[str] | str | None = flag(
        "",
        help="comma-separated text sources: the selected model is also evaluated on the final splits as if "
        "no post had them (results.json 'metrics_without')",
    )
    no_text_only_baseline: bool = flag(
        False, help="with --synthetic: skip training the text-only comparison model"
    )


ARGUMENT_GROUPS = (DataArguments, ModelArguments, OptimisationArguments, RunArguments)


@dataclass
class TrainArguments(RunArguments, OptimisationArguments, ModelArguments, DataArguments):
    """Every flag of `examples/train.py`, resolved and checked.

    Besides the flags it holds `text_source_files`, `text_source_lengths`, `input_dropout_rates` and
    `text_source_origins` (dicts from the `NAME=VALUE` flags) and `segment_sources`; `granularities` and
    `drop_text_sources_at_eval` are lists. Raises `ValueError`, naming the flag, on a bad combination.
    """

    text_source_files: dict[str, str] = field(init=False, default_factory=dict)
    text_source_lengths: dict[str, int] = field(init=False, default_factory=dict)
    input_dropout_rates: dict[str, float] = field(init=False, default_factory=dict)
    text_source_origins: dict[str, str] = field(init=False, default_factory=dict)
    segment_sources: list[str] = field(init=False, default_factory=list)

    def __post_init__(self) -> None:
        self.synthetic = self.synthetic or self.dataset_dir is None
        if self.num_cross_attention_layers < 1:
            raise ValueError(
                f"--num_cross_attention_layers must be at least 1, got {self.num_cross_attention_layers}"
            )
        self._read_name_value_options()
        self._resolve_granularities()
        self._resolve_optimisation()

    def _read_name_value_options(self) -> None:
        self.text_source_files = name_value_pairs(self.text_source, "--text_source")
        self.text_source_lengths = name_value_pairs(
            self.text_source_max_length, "--text_source_max_length", int
        )
        self.input_dropout_rates = name_value_pairs(self.input_dropout, "--input_dropout", float)
        self.text_source_origins = name_value_pairs(self.text_source_origin, "--text_source_origin")
        if self.captions_file:
            if "caption" in self.text_source_files:
                raise ValueError(
                    "give the captions as --captions_file or --text_source caption=FILE, not both"
                )
            self.text_source_files = {"caption": self.captions_file, **self.text_source_files}

    def _resolve_granularities(self) -> None:
        """Which text sources are segments and which granularities the model reads, and that every flag
        naming a text source or a granularity names one that exists."""
        self.segment_sources = list(self.text_source_as_segment or [])
        if self.caption_as_text_segment and "caption" not in self.segment_sources:
            self.segment_sources.insert(0, "caption")
        # The synthetic corpus brings its own captions.
        text_sources = (
            ["caption", *self.text_source_files] if self.synthetic else list(self.text_source_files)
        )
        text_sources = list(dict.fromkeys(text_sources))
        if self.granularities is None:
            default = list(VISUAL_GRANULARITIES) if self.synthetic else []
            self.granularities = default + [name for name in text_sources if name not in self.segment_sources]
        self.granularities = comma_separated(self.granularities)
        choices = (*VISUAL_GRANULARITIES, *text_sources)
        unknown = sorted(set(self.granularities) - set(choices))
        if unknown:
            raise ValueError(
                f"--granularities: unknown {unknown}; choose from {choices} "
                "(a text source needs --text_source NAME=FILE)"
            )
        for option, names in (
            ("--text_source_as_segment", self.segment_sources),
            ("--text_source_max_length", list(self.text_source_lengths)),
            ("--text_source_origin", list(self.text_source_origins)),
        ):
            missing = sorted(set(names) - set(text_sources))
            if missing:
                raise ValueError(
                    f"{option} names {missing}, which no --text_source (or --captions_file) gives"
                )
        both = sorted(set(self.segment_sources) & set(self.granularities))
        if both:
            raise ValueError(
                f"--text_source_as_segment and --granularities both name {both}: a text source is either a "
                "segment or a granularity, not both"
            )
        unknown_dropout = sorted(set(self.input_dropout_rates) - set(self.granularities))
        if unknown_dropout:
            raise ValueError(f"--input_dropout names {unknown_dropout}, which are not among --granularities")
        self.drop_text_sources_at_eval = comma_separated(self.drop_text_sources_at_eval)
        missing = sorted(set(self.drop_text_sources_at_eval) - set(text_sources))
        if missing:
            raise ValueError(f"--drop_text_sources_at_eval names {missing}, which no --text_source gives")
        real_corpus = not self.synthetic
        if real_corpus and "image" in self.granularities and not (self.image_dir and self.vision_model):
            raise ValueError("the image granularity on a real corpus needs --image_dir and --vision_model")
        if real_corpus and "objects" in self.granularities and not self.objects_file:
            raise ValueError("the objects granularity on a real corpus needs --objects_file")

    def _resolve_optimisation(self) -> None:
        """The augmentation mode, learning rates and epochs the flags leave open, and the run-schedule checks."""
        if self.augmentation_mode is None:
            self.augmentation_mode = "gate" if self.word_vectors else "none"
        if self.augmentation_mode != "none" and not self.word_vectors:
            raise ValueError(f"--augmentation_mode {self.augmentation_mode} needs --word_vectors")
        # Tiny random encoders learn fast with a high rate; pretrained encoders want the paper's 3e-5.
        pretrained = self.text_model is not None
        if self.learning_rate is None:
            self.learning_rate = 3e-5 if pretrained else 1e-3
        if self.fusion_learning_rate is None:
            self.fusion_learning_rate = 1e-3 if pretrained else self.learning_rate
        if self.crf_learning_rate is None:
            self.crf_learning_rate = 1e-2
        if self.num_train_epochs is None:
            self.num_train_epochs = 12 if self.synthetic else 5
        if self.logging_steps < 1:
            raise ValueError(f"--logging_steps must be at least 1, got {self.logging_steps}")
        if self.checkpointing_steps not in ("epoch", "no") and not self.checkpointing_steps.isdigit():
            raise ValueError(
                f"--checkpointing_steps takes 'epoch', 'no' or a number of steps, got {self.checkpointing_steps!r}"
            )


def comma_separated(value: list[str] | str) -> list[str]:
    """`"a,b"` -> `["a", "b"]` (`""` -> `[]`); a list, as a resolved `TrainArguments` holds, as it is."""
    names = value.split(",") if isinstance(value, str) else value
    return [name for name in names if name]


class HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The description as written, and each flag's default after its help where it has one."""

    # ArgumentDefaultsHelpFormatter alone would also print "(default: None)" for the flags TrainArguments
    # resolves, whose help says what they default to.
    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.default == "":
            return action.help
        return super()._get_help_string(action)


def build_parser() -> HfArgumentParser:
    """The parser of every training flag, in its groups: data, model, optimisation, run."""
    return HfArgumentParser(ARGUMENT_GROUPS, description=DESCRIPTION, formatter_class=HelpFormatter)


def parse_args(argv: list[str] | None = None) -> TrainArguments:
    """The training arguments of `argv` (default: the command line), resolved and checked.

    Exits with argparse's usage message and status 2 on an unknown flag, a bad value or a bad combination.
    """
    parser = build_parser()
    # No `<script>.args` file is read: the command line is the whole run's configuration.
    *groups, unknown = parser.parse_args_into_dataclasses(
        argv, return_remaining_strings=True, look_for_args_file=False
    )
    if unknown:
        parser.error(f"unrecognized arguments: {' '.join(unknown)}")
    try:
        return TrainArguments(**{name: value for group in groups for name, value in asdict(group).items()})
    except ValueError as error:
        parser.error(str(error))


__all__ = [
    "ARGUMENT_GROUPS",
    "DEFAULT_TEXT_SOURCE_LENGTH",
    "DEFAULT_TEXT_SOURCE_LENGTHS",
    "DESCRIPTION",
    "DataArguments",
    "ModelArguments",
    "OptimisationArguments",
    "PATH_ARGUMENTS",
    "RunArguments",
    "TrainArguments",
    "build_parser",
    "comma_separated",
    "parse_args",
]
