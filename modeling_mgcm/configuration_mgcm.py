"""`MGCMConfig`: every architectural knob of MGCM (Liu et al. 2022), with the paper's configuration as default.

The text encoder and the optional vision backbone are sub-configs (`text_config`, `vision_config`), as in
CLIP or VisionEncoderDecoder, so any encoder that `AutoModel` builds plugs in.
"""

import re
from dataclasses import field

from huggingface_hub.dataclasses import strict
from transformers import AutoConfig, PreTrainedConfig
from transformers.configuration_utils import SubConfigSpec

from .vision_features import image_feature_dim as backbone_feature_dim

# The tag set of docs/interfaces.md; `processing.corpus.labels` derives its names and entity types from it.
MGCM_LABEL_NAMES = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC")

# The 80 COCO classes, in the detectors' usual order: the paper's object detector (Mask R-CNN) speaks these.
COCO_OBJECT_LABELS = (
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
)  # fmt: skip

AUGMENTATION_MODES = ("none", "add", "gate", "attention")
# The visual granularities; any number of named text sources (`text_sources`) follow them.
VISUAL_GRANULARITIES = ("image", "objects")
GRANULARITIES = (*VISUAL_GRANULARITIES, "caption")
# A text source's name becomes its input names (`<name>_input_ids`, `<name>_attention_mask`) and a
# corpus column, so it must be a lowercase identifier.
TEXT_SOURCE_NAME = re.compile(r"[a-z][a-z0-9_]*")
# Names a text source cannot take: the visual granularities and the other columns of a tweet corpus.
RESERVED_TEXT_SOURCE_NAMES = (*VISUAL_GRANULARITIES, "id", "tokens", "ner_tags", "labels", "words")
# The key of the single cross-modal block that every text source shares with `share_text_source_block`.
SHARED_TEXT_SOURCE_BLOCK = "text_sources"

# bert-base-cased: the paper's text encoder (its vocabulary is smaller than BertConfig's uncased default).
_BERT_BASE_CASED = {"vocab_size": 28996}
# ResNet-152: the paper's frozen image encoder, a 7x7 grid of 2048-d regions for a 224x224 image.
_RESNET_152 = {
    "embedding_size": 64,
    "hidden_sizes": [256, 512, 1024, 2048],
    "depths": [3, 8, 36, 3],
    "layer_type": "bottleneck",
}


def _paper_vision_config() -> dict:
    return {"model_type": "resnet", **_RESNET_152}


@strict
class MGCMConfig(PreTrainedConfig):
    r"""Configuration of `MGCMModel` / `MGCMForTokenClassification`.

    Defaults reproduce the paper: bert-base-cased, a frozen ResNet-152, image and object granularities
    (80 COCO classes, 5 objects), gated semantic augmentation with k=4 200-d neighbours, fusion dropout 0.5,
    an auxiliary span CRF weighted 0.5, and a CRF decoder over the 9 BIO tags of PER/LOC/ORG/MISC.

    Bad values are refused by the `validate_*` methods, which transformers runs at construction, in
    `config.validate()` and in `save_pretrained`: a `StrictDataclassClassValidationError` whose cause is a
    ValueError naming the field, its value and what is allowed.

    Args:
        text_config: config of the text encoder (any encoder `AutoModel.from_config` builds); it also
            encodes every text source (captions, knowledge, ...), with shared weights.
        vision_config: config of the vision backbone that turns `pixel_values` into region features
            (ResNet, ConvNeXt, ViT, CLIP vision, ...). Pass `None` for a model without backbone that reads
            precomputed `image_features` only; then `image_feature_dim` says their width.
        image_feature_dim: width `D_v` of the image region features. Derived from `vision_config` when
            there is one (an explicit different value raises).
        freeze_vision_backbone: keep the backbone's weights fixed and the backbone in eval mode.
        use_image, use_objects: the visual granularities of image regions and detected objects.
        text_sources: names of the text granularities, in order: any text about a post (`"caption"`,
            `"knowledge"`, ...), each read through the shared text encoder from `<name>_input_ids` and
            `<name>_attention_mask`, with its own cross-modal block, gate and mask. `use_caption=True`
            (a keyword kept from earlier configs, and a read-only property) puts `"caption"` first.
        share_text_source_block: one cross-modal block for every text source, told apart by a learned
            source embedding added to their tokens, instead of a block each; each source keeps its own gate
            values and slot in the fusion. Off by default: a block each scored as well or better at the same
            step cost (BENCHMARKS.md, issue 15).
        input_dropout: granularity name -> probability of removing that input from an example during
            training (its mask row set to zero), so that one model serves posts with and without it.
        object_labels: the detector's class names; `object_ids` index into them, `len(object_labels)`
            is the "no object" padding id.
        max_objects: objects per image (the width of `object_ids`).
        augmentation_mode: how a word's neighbour vectors enter its state: "none", "add" (`h + W a`),
            "gate" (`g*h + (1-g)*W a`) or "attention" (h attends over its k projected neighbours, then gate).
        augmentation_dim: width of the neighbour word vectors.
        num_neighbours: k, the number of neighbours per word.
        use_word_shape, num_word_shapes: a learned embedding of each word's shape class (capitalisation,
            digits, @, #, URL; see docs/interfaces.md), added to its state.
        cross_modal_hidden_size: width of the cross-modal layers (visual tokens, the two-branch blocks);
            `None` is the text encoder's width, as in the paper. A smaller width makes the MGCM layers cheap
            beside the encoder: word states are projected to it and the fused result back.
        num_cross_attention_layers: depth of each cross-attention step of the two-branch blocks.
        num_cross_attention_heads: heads of the cross-modal attention layers; `None` takes the text
            encoder's. The extra text self-attention layer always uses the text encoder's heads.
        hidden_dropout_prob, attention_dropout_prob: dropout inside the MGCM layers.
        fusion_dropout_prob: dropout on the concatenated granularity outputs before fusion.
        aux_span_loss_weight: weight of the auxiliary B/I/O span loss on the text stream; 0 turns it off.
        use_crf: decode with a linear-chain CRF (trained by its NLL) rather than per-word argmax (cross-entropy).
        detach_text_source_encoding: encode the text sources with the shared text encoder as a feature
            extraction, like the frozen image backbone: no back-propagation into the encoder and no dropout,
            so each source costs one deterministic forward; the encoder is still trained through the tweet.
            Earlier configs call it `detach_caption_encoding`, which is still read.
    """

    model_type = "mgcm"
    sub_configs_defaults = {
        "text_config": SubConfigSpec(
            config_class=AutoConfig, model_type="bert", init_kwargs=_BERT_BASE_CASED
        ),
        "vision_config": SubConfigSpec(
            config_class=AutoConfig, model_type="resnet", init_kwargs=_RESNET_152, optional=True
        ),
    }

    text_config: dict | PreTrainedConfig | None = None
    vision_config: dict | PreTrainedConfig | None = field(default_factory=_paper_vision_config)
    image_feature_dim: int | None = None
    freeze_vision_backbone: bool = True
    use_image: bool = True
    use_objects: bool = True
    text_sources: list[str] | tuple[str, ...] = ()
    share_text_source_block: bool = False
    input_dropout: dict[str, float | int] = field(default_factory=dict)
    object_labels: list[str] | tuple[str, ...] = COCO_OBJECT_LABELS
    max_objects: int = 5
    augmentation_mode: str = "gate"
    augmentation_dim: int = 200
    num_neighbours: int = 4
    use_word_shape: bool = False
    num_word_shapes: int = 12
    cross_modal_hidden_size: int | None = None
    num_cross_attention_layers: int = 1
    num_cross_attention_heads: int | None = None
    hidden_dropout_prob: float | int = 0.1
    attention_dropout_prob: float | int = 0.1
    fusion_dropout_prob: float | int = 0.5
    aux_span_loss_weight: float | int = 0.5
    use_crf: bool = True
    detach_text_source_encoding: bool = True
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02

    def __post_init__(self, **kwargs):
        self._read_legacy_caption_fields(kwargs)
        if self.id2label is None and kwargs.get("num_labels") is None:
            self.id2label = dict(enumerate(MGCM_LABEL_NAMES))
            self.label2id = {label: index for index, label in self.id2label.items()}
        # The base class sets `attn_implementation` (None unless given) on every sub-config; a backbone config
        # handed over from a loaded model keeps the implementation it was loaded with (usually sdpa).
        kept_implementations = {
            name: getattr(self, name)._attn_implementation
            for name in ("text_config", "vision_config")
            if isinstance(getattr(self, name), PreTrainedConfig) and "attn_implementation" not in kwargs
        }
        super().__post_init__(**kwargs)
        for name, implementation in kept_implementations.items():
            getattr(self, name)._attn_implementation = implementation
        # JSON has no tuples: keep one type so that a reloaded config compares equal to the original.
        self.object_labels = list(self.object_labels)
        self.text_sources = list(self.text_sources)
        self._resolve_image_feature_dim()
        # The value checks are the `validate_*` methods below, which `@strict` runs right after this.

    @property
    def hidden_size(self) -> int:
        """Width of the word states: the text encoder's hidden size."""
        return self.text_config.hidden_size

    def _read_legacy_caption_fields(self, kwargs: dict) -> None:
        """Configs before named text sources had `use_caption` and `detach_caption_encoding`."""
        if kwargs.pop("use_caption", False) and "caption" not in self.text_sources:
            self.text_sources = ["caption", *self.text_sources]
        if "detach_caption_encoding" in kwargs:
            self.detach_text_source_encoding = kwargs.pop("detach_caption_encoding")

    @property
    def use_caption(self) -> bool:
        """Whether the caption is one of the text sources."""
        return "caption" in self.text_sources

    @property
    def granularities(self) -> tuple[str, ...]:
        """Every granularity this configuration turns on: image, objects, then the text sources in order."""
        switches = {"image": self.use_image, "objects": self.use_objects}
        return (*(name for name in VISUAL_GRANULARITIES if switches[name]), *self.text_sources)

    @property
    def cross_modal_width(self) -> int:
        """Width of the visual tokens and the cross-modal blocks."""
        if self.cross_modal_hidden_size is not None:
            return self.cross_modal_hidden_size
        return self.text_config.hidden_size

    @property
    def attention_heads(self) -> int:
        """Heads of the cross-modal attention layers."""
        if self.num_cross_attention_heads is not None:
            return self.num_cross_attention_heads
        return self.text_config.num_attention_heads

    def validate_architecture(self) -> None:
        """Part of `@strict`-powered validation: the layer sizes and switches. Each error names the field, its
        value and what is allowed."""
        super().validate_architecture()
        if self.augmentation_mode not in AUGMENTATION_MODES:
            raise ValueError(
                f"MGCMConfig: augmentation_mode must be one of {AUGMENTATION_MODES}, got {self.augmentation_mode!r}"
            )
        if self.max_objects < 0:
            raise ValueError(f"MGCMConfig: max_objects must be >= 0, got {self.max_objects}")
        if self.use_objects and self.max_objects == 0:
            raise ValueError("MGCMConfig: use_objects=True needs max_objects >= 1, got 0")
        if self.use_objects and not self.object_labels:
            raise ValueError(
                "MGCMConfig: use_objects=True needs object_labels (the detector's class names), got none"
            )
        bad_labels = [label for label in self.object_labels if not isinstance(label, str) or not label]
        repeated = sorted({label for label in self.object_labels if self.object_labels.count(label) > 1})
        if bad_labels or repeated:
            raise ValueError(
                f"MGCMConfig: object_labels must be distinct non-empty strings; bad {bad_labels}, repeated {repeated}"
            )
        if self.vision_config is not None:
            derived = backbone_feature_dim(self.vision_config)
            if self.image_feature_dim != derived:
                raise ValueError(
                    f"MGCMConfig: image_feature_dim={self.image_feature_dim} contradicts the vision backbone "
                    f"({self.vision_config.model_type}), whose features are {derived}-d; leave it unset"
                )
        elif self.use_image and self.image_feature_dim is None:
            raise ValueError(
                "MGCMConfig: use_image=True needs an image encoder: a vision_config (the model runs the backbone "
                "on pixel_values) or image_feature_dim (the width of precomputed image_features, e.g. 2048 "
                "for ResNet-152)"
            )
        if self.image_feature_dim is not None and self.image_feature_dim < 1:
            raise ValueError(f"MGCMConfig: image_feature_dim must be >= 1, got {self.image_feature_dim}")
        if self.augmentation_mode != "none":
            for name in ("augmentation_dim", "num_neighbours"):
                if getattr(self, name) < 1:
                    raise ValueError(
                        f"MGCMConfig: augmentation_mode={self.augmentation_mode!r} needs {name} >= 1, "
                        f"got {getattr(self, name)}"
                    )
        if self.use_word_shape and self.num_word_shapes < 2:
            raise ValueError(
                f"MGCMConfig: use_word_shape=True needs num_word_shapes >= 2 (0 is padding), got {self.num_word_shapes}"
            )
        if self.granularities and self.num_cross_attention_layers < 1:
            raise ValueError(
                f"MGCMConfig: num_cross_attention_layers must be >= 1, got {self.num_cross_attention_layers}"
            )
        hidden_size = getattr(self.text_config, "hidden_size", None)
        if not isinstance(hidden_size, int) or hidden_size < 1:
            raise ValueError(
                f"MGCMConfig: text_config ({type(self.text_config).__name__}) has no usable hidden_size: {hidden_size!r}"
            )
        text_heads = getattr(self.text_config, "num_attention_heads", None)
        if not isinstance(text_heads, int) or text_heads < 1 or hidden_size % text_heads:
            raise ValueError(
                f"MGCMConfig: text_config needs num_attention_heads dividing its hidden_size {hidden_size}, "
                f"got {text_heads!r}"
            )
        if self.cross_modal_hidden_size is not None and self.cross_modal_hidden_size < 1:
            raise ValueError(
                f"MGCMConfig: cross_modal_hidden_size must be >= 1 (or None), got {self.cross_modal_hidden_size}"
            )
        heads, width = self.attention_heads, self.cross_modal_width
        if heads < 1 or width % heads:
            raise ValueError(
                f"MGCMConfig: the cross-modal width {width} must be a multiple of the cross-attention heads "
                f"{heads} (set num_cross_attention_heads)"
            )

    def validate_text_sources(self) -> None:
        """Part of `@strict`-powered validation: text source names and the input dropout of each granularity."""
        for name in self.text_sources:
            check_text_source_name(name, "MGCMConfig: text_sources")
        repeated = sorted({name for name in self.text_sources if self.text_sources.count(name) > 1})
        if repeated:
            raise ValueError(f"MGCMConfig: text_sources repeats {repeated}")
        for name, probability in self.input_dropout.items():
            if name not in self.granularities:
                raise ValueError(
                    f"MGCMConfig: input_dropout names {name!r}, which is not a granularity of this config "
                    f"{self.granularities}"
                )
            if not 0 <= probability < 1:
                raise ValueError(f"MGCMConfig: input_dropout[{name!r}] must be in [0, 1), got {probability}")

    def validate_training_values(self) -> None:
        """Part of `@strict`-powered validation: dropout probabilities and the auxiliary span task."""
        for name in ("hidden_dropout_prob", "attention_dropout_prob", "fusion_dropout_prob"):
            if not 0 <= getattr(self, name) < 1:
                raise ValueError(f"MGCMConfig: {name} must be in [0, 1), got {getattr(self, name)}")
        if self.aux_span_loss_weight < 0:
            raise ValueError(
                f"MGCMConfig: aux_span_loss_weight must be >= 0, got {self.aux_span_loss_weight}"
            )
        if self.aux_span_loss_weight > 0:
            span_tags_of_labels(self.id2label)

    def _resolve_image_feature_dim(self) -> None:
        """Unset, `image_feature_dim` is the backbone's feature width (`validate_architecture` refuses a
        different one)."""
        if self.vision_config is not None and self.image_feature_dim is None:
            self.image_feature_dim = backbone_feature_dim(self.vision_config)


def check_text_source_name(name: object, where: str) -> None:
    """Raise a ValueError (starting with `where`) unless `name` can name a text source."""
    if (
        not isinstance(name, str)
        or not TEXT_SOURCE_NAME.fullmatch(name)
        or name in RESERVED_TEXT_SOURCE_NAMES
    ):
        raise ValueError(
            f"{where}: text source name {name!r} must be a lowercase identifier ([a-z][a-z0-9_]*) other than "
            f"{', '.join(RESERVED_TEXT_SOURCE_NAMES)}"
        )


def span_tags_of_labels(id2label: dict[int, str]) -> list[int]:
    """The auxiliary task's tag (0 O, 1 B, 2 I) of each label id, from BIO label names.

    Raises when no name starts with "B-", since the span task would then have nothing to learn.
    """
    span_tags = []
    for index in range(len(id2label)):
        name = id2label[index]
        span_tags.append(1 if name.startswith("B-") else 2 if name.startswith("I-") else 0)
    if 1 not in span_tags:
        raise ValueError(
            f"MGCMConfig: aux_span_loss_weight > 0 needs BIO label names (B-X, I-X, O) in id2label, got "
            f"{list(id2label.values())}; name the labels or set aux_span_loss_weight=0"
        )
    return span_tags


__all__ = [
    "AUGMENTATION_MODES",
    "COCO_OBJECT_LABELS",
    "GRANULARITIES",
    "MGCM_LABEL_NAMES",
    "MGCMConfig",
    "RESERVED_TEXT_SOURCE_NAMES",
    "SHARED_TEXT_SOURCE_BLOCK",
    "TEXT_SOURCE_NAME",
    "VISUAL_GRANULARITIES",
    "check_text_source_name",
    "span_tags_of_labels",
]
