"""MGCM: multi-granularity cross-modality NER (Liu et al. 2022) as a transformers `PreTrainedModel`.

Top to bottom, as the architecture reads: word states from the first sub-token of each word, word shape and
semantic augmentation, the granularities (image regions, detected objects, and the pieces of each named text
source: caption, knowledge, ...) each with a two-branch gated cross-modal block, fusion with the text stream,
emissions and the CRF.

Shapes: B = batch, T = word pieces, W = words, R = image regions, O = objects per image, C = pieces of a text
source,
d = the text encoder's hidden size, d_c = the cross-modal width (`config.cross_modal_width`, d by default),
L = number of labels.
"""

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Unpack

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers import AutoModel, PreTrainedModel
from transformers import initialization as init
from transformers.utils import ModelOutput, TransformersKwargs, can_return_tuple

from .configuration_mgcm import SHARED_TEXT_SOURCE_BLOCK, MGCMConfig, span_tags_of_labels
from .crf import PADDING_TAG, ConditionalRandomField, decode_tags
from .cross_modal_attention import MGCMAttentionLayer, MGCMCoupledAttentionBlock
from .host_reads import host_reads_allowed
from .semantic_augmentation import MGCMSemanticAugmentation
from .vision_features import extract_image_features
from .weight_files import refuse_pickle_weights

# At most this many encoder calls for one text source of a batch (see `MGCMModel._text_source_tokens`).
TEXT_SOURCE_LENGTH_GROUPS = 2
# The inputs of a text source NAME: NAME_input_ids and NAME_attention_mask.
TEXT_SOURCE_INPUT = re.compile(r"(?P<name>[a-z][a-z0-9_]*)_(?P<kind>input_ids|attention_mask)")
# Checkpoints before named text sources called the text-source projection `caption_projection`.
_LEGACY_KEY_MAPPING = {r"caption_projection\.": "text_source_projection."}
# The keyword arguments transformers passes to a model's forward (`output_attentions`, `num_items_in_batch`, ...).
_TRANSFORMERS_KWARGS = frozenset(TransformersKwargs.__annotations__)


@dataclass
class MGCMModelOutput(ModelOutput):
    """Outputs of `MGCMModel`.

    Args:
        last_hidden_state: (B, W, d) word states after fusion with the visual granularities (the text
            stream itself when the config turns every granularity off).
        text_hidden_state: (B, W, d) the text stream: word states after one extra self-attention layer.
        word_mask: (B, W) bool, True for real words.
        gate_values: granularity name -> (B, W) mean sigmoid gate between branch (a) and (b); 0 at padding
            words and for examples without that input. Every granularity of the config.
        hidden_states: with `output_hidden_states=True`, a tuple of `text_config.num_hidden_layers + 2` word-level
            states (B, W, d), each word read at its first piece as for `last_hidden_state`: the text encoder's
            embedding output, each encoder layer's output, then the fused states, so that `hidden_states[-1]`
            is `last_hidden_state`. Padding words hold no meaningful values.
        attentions: the text encoder's self-attentions, a tuple of (B, heads, T, T) per layer, with
            `output_attentions=True` (needs `attn_implementation="eager"`; None under sdpa).
        granularity_attentions: with `output_attentions=True`, granularity name -> (B, W, R|O|C) attention
            of each word over that side input (image regions, objects or text-source pieces) in branch (a) of
            its cross-modal block, averaged over heads. Not transformers' `cross_attentions` (a per-layer
            tuple of decoder-over-encoder attentions).
    """

    last_hidden_state: torch.FloatTensor | None = None
    text_hidden_state: torch.FloatTensor | None = None
    word_mask: torch.BoolTensor | None = None
    gate_values: dict[str, torch.FloatTensor] | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    granularity_attentions: dict[str, torch.FloatTensor] | None = None


@dataclass
class MGCMTokenClassifierOutput(ModelOutput):
    """Outputs of `MGCMForTokenClassification`.

    Args:
        loss: scalar, CRF negative log-likelihood (or cross-entropy without CRF), plus
            `aux_span_loss_weight` times the auxiliary span loss, when `labels` are given.
        logits: (B, W, L) word-level emission scores.
        predictions: (B, W) long, Viterbi tags (argmax without CRF), -100 at padding words. Not computed
            (None) in a training-mode forward with labels, where only the loss is needed.
        gate_values, hidden_states, attentions, granularity_attentions: as in `MGCMModelOutput`.
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    predictions: torch.LongTensor | None = None
    gate_values: dict[str, torch.FloatTensor] | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    granularity_attentions: dict[str, torch.FloatTensor] | None = None


def _first_true(mask: Tensor) -> tuple[int, ...]:
    """Index of the first True of a boolean tensor, for error messages."""
    return tuple(mask.nonzero()[0].tolist())


def first_piece_positions(word_ids: Tensor, num_words: int) -> tuple[Tensor, Tensor]:
    """Position of each word's first sub-token.

    Args:
        word_ids: (B, T) long, the word of each piece (0..W-1), -1 for special and padding pieces.
        num_words: W.

    Returns:
        positions (B, W) long (0 for words without pieces) and has_piece (B, W) bool.
    """
    batch_size, num_pieces = word_ids.shape
    pieces = torch.arange(num_pieces, device=word_ids.device).expand(batch_size, -1)
    # Pieces of no word go to an extra column that is dropped afterwards.
    target = torch.where(word_ids >= 0, word_ids, torch.full_like(word_ids, num_words))
    first = torch.full((batch_size, num_words + 1), num_pieces, dtype=torch.long, device=word_ids.device)
    first = first.scatter_reduce(1, target, pieces, reduce="amin")[:, :num_words]
    has_piece = first < num_pieces
    return torch.where(has_piece, first, torch.zeros_like(first)), has_piece


def _at_words(piece_states: Tensor, word_positions: Tensor) -> Tensor:
    """(B, T, d) piece states -> (B, W, d) the states at `word_positions` (B, W), each word's first piece."""
    return piece_states.gather(1, word_positions.unsqueeze(-1).expand(-1, -1, piece_states.shape[-1]))


def _split_text_source_inputs(kwargs: dict) -> tuple[dict[str, Tensor], dict]:
    """Forward keyword arguments -> (`<name>_input_ids` / `<name>_attention_mask` of text sources, the
    `TransformersKwargs`); any other name raises the TypeError an unknown argument would."""
    text_source_inputs, transformers_kwargs = {}, {}
    for key, value in kwargs.items():
        if key in _TRANSFORMERS_KWARGS:
            transformers_kwargs[key] = value
        elif TEXT_SOURCE_INPUT.fullmatch(key):
            text_source_inputs[key] = value
        else:
            raise TypeError(
                f"MGCM forward got an unexpected keyword argument {key!r}; text sources are passed as "
                "<name>_input_ids and <name>_attention_mask"
            )
    return text_source_inputs, transformers_kwargs


@contextmanager
def _evaluation_mode(module: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Run `module` in eval mode (no dropout) inside the block and restore its mode afterwards."""
    switch = enabled and module.training
    if switch:
        module.eval()
    try:
        yield
    finally:
        if switch:
            module.train()


def _drop_pooler(encoder: nn.Module) -> nn.Module:
    # Tagging never reads the pooled sentence vector; left in, its weights would get no gradient, which
    # breaks distributed training and wastes optimizer state.
    if getattr(encoder, "pooler", None) is not None:
        encoder.pooler = None
    return encoder


class MGCMImageRegionEncoder(nn.Module):
    """Image regions to visual tokens: LayerNorm of the raw features, projection to the cross-modal width,
    LayerNorm, one self-attention layer.

    CNN region features are uncentred (post-ReLU) and their scale depends on the backbone; normalising them
    first lets the colour or shape differences between images, not their shared offset, drive the projection
    (without it a tiny model took several times longer to start reading the image on the synthetic corpus).
    """

    def __init__(self, config: MGCMConfig) -> None:
        super().__init__()
        width = config.cross_modal_width
        # No affine part: the projection right after it learns any scale and offset.
        self.feature_layer_norm = nn.LayerNorm(
            config.image_feature_dim, eps=config.layer_norm_eps, elementwise_affine=False
        )
        self.projection = nn.Linear(config.image_feature_dim, width)
        self.layer_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.self_attention = MGCMAttentionLayer(config, width, config.attention_heads)

    def forward(self, image_features: Tensor, region_mask: Tensor) -> Tensor:
        """(B, R, D_v), (B, R) bool -> (B, R, d_c)."""
        states = self.dropout(self.layer_norm(self.projection(self.feature_layer_norm(image_features))))
        return self.self_attention(states, states, region_mask)[0]


class MGCMObjectEncoder(nn.Module):
    """Detected object class ids to visual tokens: a learned embedding per class (plus the padding id)."""

    def __init__(self, config: MGCMConfig) -> None:
        super().__init__()
        self.padding_id = len(config.object_labels)
        width = config.cross_modal_width
        self.embedding = nn.Embedding(self.padding_id + 1, width, padding_idx=self.padding_id)
        self.layer_norm = nn.LayerNorm(width, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, object_ids: Tensor) -> Tensor:
        """(B, O) long -> (B, O, d_c)."""
        return self.dropout(self.layer_norm(self.embedding(object_ids)))


class MGCMPreTrainedModel(PreTrainedModel):
    """Weight initialisation and loading glue shared by the MGCM models."""

    config: MGCMConfig
    config_class = MGCMConfig
    base_model_prefix = "mgcm"
    main_input_name = "input_ids"
    input_modalities = ("text", "image")
    _no_split_modules = ["MGCMAttentionLayer", "MGCMCoupledAttentionBlock"]
    _supports_sdpa = True
    supports_gradient_checkpointing = True
    # The CRF loss is a mean over rows that ignores `num_items_in_batch`: Trainer must scale it for gradient
    # accumulation itself (without this it infers from `**kwargs` that the model does).
    accepts_loss_kwargs = False

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike | None,
        *model_args,
        use_safetensors: bool | None = True,
        **kwargs,
    ):
        """`PreTrainedModel.from_pretrained` reading safetensors weights only, and checkpoints saved under
        older weight names.

        With `use_safetensors=True` (the default here; transformers' default None falls back to pickles)
        transformers itself refuses a folder holding only `pytorch_model.bin`; a config or index that points
        at a pickle file raises `OSError` too (see `refuse_pickle_weights`). `use_safetensors=False` opts in.
        """
        if use_safetensors and pretrained_model_name_or_path is not None:
            refuse_pickle_weights(
                pretrained_model_name_or_path, kwargs.get("subfolder", ""), kwargs.get("config")
            )
        # Passed per call: v5 has no class-level renaming, and a global `register_checkpoint_conversion_mapping`
        # entry is reverted on save too, so a model built from scratch would be saved under the legacy names.
        legacy_names = "key_mapping" not in kwargs
        if legacy_names:
            kwargs["key_mapping"] = _LEGACY_KEY_MAPPING
        loaded = super().from_pretrained(
            pretrained_model_name_or_path, *model_args, use_safetensors=use_safetensors, **kwargs
        )
        if legacy_names:
            # Saved again under today's names, as a model built from scratch would be, not the legacy ones.
            model = loaded[0] if isinstance(loaded, tuple) else loaded
            model._weight_conversions = None
        return loaded

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """Linear, embedding and LayerNorm weights as the base class does; CRF scores uniform in ±0.1."""
        super()._init_weights(module)
        if isinstance(module, ConditionalRandomField):
            for parameter in (module.start_transitions, module.end_transitions, module.transitions):
                init.uniform_(parameter, -0.1, 0.1)


class MGCMModel(MGCMPreTrainedModel):
    """The MGCM encoder: word-level states fused with the image, object and text-source granularities.

    `text_encoder` and `vision_model` may be given as pretrained models (see
    `MGCMForTokenClassification.from_backbones`); otherwise they are built from the config's sub-configs.
    """

    def __init__(
        self,
        config: MGCMConfig,
        text_encoder: PreTrainedModel | None = None,
        vision_model: PreTrainedModel | None = None,
    ) -> None:
        super().__init__(config)
        hidden_size = config.hidden_size
        self.text_encoder = _drop_pooler(
            text_encoder if text_encoder is not None else AutoModel.from_config(config.text_config)
        )
        self.vision_model = None
        if config.use_image and config.vision_config is not None:
            self.vision_model = (
                vision_model if vision_model is not None else AutoModel.from_config(config.vision_config)
            )
            self._freeze_vision_backbone()
        self.word_shape_embeddings = (
            nn.Embedding(config.num_word_shapes, hidden_size, padding_idx=0)
            if config.use_word_shape
            else None
        )
        self.augmentation = (
            MGCMSemanticAugmentation(config.augmentation_mode, config.augmentation_dim, hidden_size)
            if config.augmentation_mode != "none"
            else None
        )
        self.word_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.text_self_attention = MGCMAttentionLayer(
            config, hidden_size, config.text_config.num_attention_heads
        )
        width = config.cross_modal_width
        # Identity at the paper's setting (cross-modal width = encoder width).
        self.word_projection = nn.Linear(hidden_size, width) if width != hidden_size else nn.Identity()
        self.image_encoder = MGCMImageRegionEncoder(config) if config.use_image else None
        self.object_encoder = MGCMObjectEncoder(config) if config.use_objects else None
        self.text_source_projection = (
            nn.Linear(hidden_size, width) if config.text_sources and width != hidden_size else nn.Identity()
        )
        self.text_source_embeddings = None
        block_names = config.granularities
        if config.share_text_source_block and config.text_sources:
            self.text_source_embeddings = nn.Embedding(len(config.text_sources), width)
            block_names = (*block_names[: -len(config.text_sources)], SHARED_TEXT_SOURCE_BLOCK)
        self.cross_modal_blocks = nn.ModuleDict(
            {name: MGCMCoupledAttentionBlock(config, width) for name in block_names}
        )
        if config.granularities:
            self.fusion_dropout = nn.Dropout(config.fusion_dropout_prob)
            self.fusion = nn.Linear(len(config.granularities) * width, width)
            self.text_visual_combination = nn.Linear(hidden_size + width, hidden_size)
        self.post_init()

    def train(self, mode: bool = True) -> "MGCMModel":
        """Switch train/eval mode; a frozen vision backbone stays in eval mode (its BatchNorm statistics and
        dropout must not move) and without gradients."""
        super().train(mode)
        self._freeze_vision_backbone()
        return self

    def _freeze_vision_backbone(self) -> None:
        # `from_pretrained` swaps in freshly loaded parameters (requires_grad=True) and then calls eval(), which
        # lands in train() above: re-freezing there keeps a reloaded backbone frozen.
        if self.vision_model is not None and self.config.freeze_vision_backbone:
            self.vision_model.requires_grad_(False)
            self.vision_model.eval()

    def get_input_embeddings(self) -> nn.Module:
        return self.text_encoder.get_input_embeddings()

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.text_encoder.set_input_embeddings(value)

    @can_return_tuple
    def forward(
        self,
        input_ids: Tensor,
        word_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        word_mask: Tensor | None = None,
        word_shape_ids: Tensor | None = None,
        neighbour_vectors: Tensor | None = None,
        neighbour_weights: Tensor | None = None,
        pixel_values: Tensor | None = None,
        image_features: Tensor | None = None,
        image_mask: Tensor | None = None,
        object_ids: Tensor | None = None,
        object_mask: Tensor | None = None,
        caption_input_ids: Tensor | None = None,
        caption_attention_mask: Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MGCMModelOutput:
        """Word states fused with every side input the batch holds (see docs/interfaces.md for inputs).

        `kwargs` hold the `TransformersKwargs` (`output_attentions`, `output_hidden_states`, ...; the others go
        to the text encoder's pass over the tweet) and the (B, C) `<name>_input_ids` and `<name>_attention_mask`
        of the text sources other than the caption: their names come from `config.text_sources`, so no
        signature can list them. Inputs of granularities the config turns off are ignored; a granularity the
        config turns on may be missing from the batch, or masked per example, and then contributes exactly
        nothing.
        """
        text_source_inputs, encoder_kwargs = _split_text_source_inputs(kwargs)
        output_attentions, output_hidden_states = self._output_flags(encoder_kwargs)

        if word_ids.shape != input_ids.shape:
            raise ValueError(
                f"word_ids has shape {tuple(word_ids.shape)} but input_ids {tuple(input_ids.shape)}; "
                "they must match piece for piece"
            )
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if word_mask is None:
            num_words = int(word_ids.max().clamp(min=0)) + 1
            word_mask = first_piece_positions(word_ids, num_words)[1]
        word_mask = word_mask.bool()
        if token_type_ids is not None:
            encoder_kwargs["token_type_ids"] = token_type_ids
        encoded = self.text_encoder(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
            **encoder_kwargs,
        )
        word_positions = self._word_positions(word_ids, word_mask)
        word_states = _at_words(encoded.last_hidden_state, word_positions)
        if self.word_shape_embeddings is not None:
            word_states = word_states + self.word_shape_embeddings(
                self._checked_word_shapes(word_shape_ids, word_mask)
            )
        if self.augmentation is not None:
            word_states = self._augment(word_states, word_mask, neighbour_vectors, neighbour_weights)
        word_states = self.word_dropout(word_states) * word_mask.unsqueeze(-1)
        text_states = self.text_self_attention(word_states, word_states, word_mask)[0]

        text_source_inputs = self._text_source_inputs(
            caption_input_ids, caption_attention_mask, text_source_inputs
        )
        side_inputs = self._side_tokens(
            word_mask, pixel_values, image_features, image_mask, object_ids, object_mask, text_source_inputs
        )
        gate_values, granularity_attentions, granularity_states = {}, {}, []
        word_queries = self.word_projection(word_states)
        # Every block runs on every batch, on masked input where examples lack it: a block skipped because
        # its input is absent from one batch would leave its parameters out of the graph, and DDP stops.
        for name in self.config.granularities:
            side_states, side_mask = side_inputs[name]
            fused, gate, weights = self._block_of(name)(
                word_queries, word_mask, side_states, side_mask, output_attentions
            )
            granularity_states.append(fused)
            gate_values[name] = gate
            if weights is not None:
                granularity_attentions[name] = weights
        if granularity_states:
            visual_context = F.relu(self.fusion(self.fusion_dropout(torch.cat(granularity_states, dim=-1))))
            fused_states = self.text_visual_combination(torch.cat([text_states, visual_context], dim=-1))
        else:
            fused_states = text_states

        hidden_states = None
        if output_hidden_states:
            # The encoder's states read at the words as `word_states` is, then the fused ones, so that
            # hidden_states[-1] is last_hidden_state as in every transformers model.
            encoder_states = (_at_words(states, word_positions) for states in encoded.hidden_states)
            hidden_states = (*encoder_states, fused_states)
        return MGCMModelOutput(
            last_hidden_state=fused_states,
            text_hidden_state=text_states,
            word_mask=word_mask,
            gate_values=gate_values,
            hidden_states=hidden_states,
            # An sdpa encoder records no attention weights (an empty tuple): report None rather than ().
            attentions=(encoded.attentions or None) if output_attentions else None,
            granularity_attentions=granularity_attentions if output_attentions else None,
        )

    def _output_flags(self, kwargs: dict) -> tuple[bool, bool]:
        """Pop `output_attentions` and `output_hidden_states` from `kwargs`, the config's values by default."""
        output_attentions = kwargs.pop("output_attentions", None)
        output_hidden_states = kwargs.pop("output_hidden_states", None)
        if output_attentions is None:
            output_attentions = self.config.output_attentions
        if output_hidden_states is None:
            output_hidden_states = self.config.output_hidden_states
        if not isinstance(output_hidden_states, bool):
            # transformers also takes layer indices here; MGCM's word-level states are all or none.
            raise ValueError(
                f"MGCM returns all its hidden states or none: output_hidden_states must be True or False, "
                f"got {output_hidden_states!r}"
            )
        return bool(output_attentions), output_hidden_states

    def _word_positions(self, word_ids: Tensor, word_mask: Tensor) -> Tensor:
        """(B, T) word ids, (B, W) word mask -> (B, W) long position of each word's first piece (0 for padding
        words), checking that the two agree."""
        num_words = word_mask.shape[1]
        checked = host_reads_allowed(word_ids)
        if checked and bool((word_ids >= num_words).any()):
            row, piece = _first_true(word_ids >= num_words)
            raise ValueError(
                f"word_ids[{row}, {piece}] = {int(word_ids[row, piece])} but word_mask has {num_words} "
                "words per row; word_ids must index words 0..W-1 (-1 for special and padding pieces)"
            )
        positions, has_piece = first_piece_positions(word_ids, num_words)
        if checked and bool((word_mask & ~has_piece).any()):
            row, word = _first_true(word_mask & ~has_piece)
            raise ValueError(
                f"word {word} of row {row} is a real word (word_mask 1) but no piece has word_ids == {word}"
            )
        return positions

    def _checked_word_shapes(self, word_shape_ids: Tensor | None, word_mask: Tensor) -> Tensor:
        if word_shape_ids is None:
            raise ValueError(
                "config.use_word_shape=True needs word_shape_ids (B, W) (modeling_mgcm.word_shape), got none"
            )
        if word_shape_ids.shape != word_mask.shape:
            raise ValueError(
                f"word_shape_ids has shape {tuple(word_shape_ids.shape)}, expected (B, W) = {tuple(word_mask.shape)}"
            )
        if host_reads_allowed(word_shape_ids):
            bad = (word_shape_ids < 0) | (word_shape_ids >= self.config.num_word_shapes)
            if bool(bad.any()):
                row, word = _first_true(bad)
                raise ValueError(
                    f"word_shape_ids[{row}, {word}] = {int(word_shape_ids[row, word])} is outside "
                    f"0..{self.config.num_word_shapes - 1} (config.num_word_shapes)"
                )
        return word_shape_ids.masked_fill(~word_mask, 0)

    def _augment(
        self,
        word_states: Tensor,
        word_mask: Tensor,
        neighbour_vectors: Tensor | None,
        neighbour_weights: Tensor | None,
    ) -> Tensor:
        config = self.config
        if neighbour_vectors is None or neighbour_weights is None:
            raise ValueError(
                f"config.augmentation_mode={config.augmentation_mode!r} needs neighbour_vectors (B, W, k, dim) "
                "and neighbour_weights (B, W, k) (processing.NeighbourTable; all-zero weights for words "
                "without neighbours), or a config with augmentation_mode='none'"
            )
        batch_size, num_words = word_mask.shape
        if (
            neighbour_vectors.dim() != 4
            or neighbour_vectors.shape[:2] != (batch_size, num_words)
            or neighbour_vectors.shape[-1] != config.augmentation_dim
            or neighbour_weights.shape != neighbour_vectors.shape[:3]
        ):
            raise ValueError(
                f"neighbour_vectors {tuple(neighbour_vectors.shape)} and neighbour_weights "
                f"{tuple(neighbour_weights.shape)} must be (B, W, k, {config.augmentation_dim}) and (B, W, k) "
                f"with (B, W) = {(batch_size, num_words)}"
            )
        # Padding words never borrow neighbours, whatever the padding holds.
        neighbour_weights = neighbour_weights.masked_fill(~word_mask.unsqueeze(-1), 0)
        return self.augmentation(word_states, neighbour_vectors, neighbour_weights)

    def _text_source_inputs(
        self,
        caption_input_ids: Tensor | None,
        caption_attention_mask: Tensor | None,
        other_inputs: dict[str, Tensor],
    ) -> dict[str, tuple[Tensor | None, Tensor | None]]:
        """Text source name -> (input ids, attention mask), for the sources of the config; the inputs of
        other well-named sources are ignored, like those of any granularity the config turns off."""
        inputs = {"caption": (caption_input_ids, caption_attention_mask)}
        for key, tensor in other_inputs.items():
            match = TEXT_SOURCE_INPUT.fullmatch(key)
            ids, mask = inputs.get(match["name"], (None, None))
            inputs[match["name"]] = (tensor, mask) if match["kind"] == "input_ids" else (ids, tensor)
        inputs = {name: inputs.get(name, (None, None)) for name in self.config.text_sources}
        for name, (ids, mask) in inputs.items():
            if ids is None and mask is not None:
                raise ValueError(f"{name}_attention_mask was given without {name}_input_ids")
        return inputs

    def _block_of(self, granularity: str) -> MGCMCoupledAttentionBlock:
        if self.text_source_embeddings is not None and granularity in self.config.text_sources:
            return self.cross_modal_blocks[SHARED_TEXT_SOURCE_BLOCK]
        return self.cross_modal_blocks[granularity]

    def _side_tokens(
        self,
        word_mask: Tensor,
        pixel_values: Tensor | None,
        image_features: Tensor | None,
        image_mask: Tensor | None,
        object_ids: Tensor | None,
        object_mask: Tensor | None,
        text_source_inputs: dict[str, tuple[Tensor | None, Tensor | None]],
    ) -> dict[str, tuple[Tensor, Tensor]]:
        """Granularity name -> (side-input states (B, N, d_c), mask (B, N) bool), for every granularity of
        the config; an input missing from the batch is one fully masked token per example. In training,
        `config.input_dropout` removes each input from a random share of the examples."""
        batch_size, device = word_mask.shape[0], word_mask.device
        no_input = torch.zeros(batch_size, 1, dtype=torch.bool, device=device)
        tokens = {}
        if self.image_encoder is not None:
            if pixel_values is None and image_features is None:
                image_features = torch.zeros(batch_size, 1, self.config.image_feature_dim, device=device)
                image_mask = no_input[:, 0]
            states, mask = self._image_tokens(pixel_values, image_features, image_mask)
            tokens["image"] = states, self._drop_examples("image", mask)
        if self.object_encoder is not None:
            if object_ids is None:
                object_ids = no_input.long() + self.object_encoder.padding_id
                object_mask = no_input
            states, mask = self._object_tokens(object_ids, object_mask)
            tokens["objects"] = states, self._drop_examples("objects", mask)
        for index, (name, (ids, mask)) in enumerate(text_source_inputs.items()):
            if ids is None:
                hidden_states = torch.zeros(batch_size, 1, self.config.hidden_size, device=device)
                states, mask = self.text_source_projection(hidden_states), no_input
            else:
                mask = self._checked_text_source_mask(name, ids, mask)
                # Dropped before encoding: on CPU the encoder then skips those rows.
                states, mask = self._text_source_tokens(ids, self._drop_examples(name, mask))
            if self.text_source_embeddings is not None:
                states = states + self.text_source_embeddings.weight[index]
            tokens[name] = states, mask
        return tokens

    def _drop_examples(self, granularity: str, mask: Tensor) -> Tensor:
        """(B, N) bool mask with the rows of a random `config.input_dropout[granularity]` share of the
        examples set to False, in training; the mask itself otherwise."""
        probability = self.config.input_dropout.get(granularity, 0)
        if not (self.training and probability > 0):
            return mask
        kept = torch.rand(mask.shape[0], device=mask.device) >= probability
        return mask & kept.unsqueeze(1)

    def _image_tokens(
        self, pixel_values: Tensor | None, image_features: Tensor | None, image_mask: Tensor | None
    ) -> tuple[Tensor, Tensor]:
        if pixel_values is not None and image_features is not None:
            raise ValueError("pass either pixel_values or precomputed image_features, not both")
        given = pixel_values if pixel_values is not None else image_features
        batch_size = given.shape[0]
        if image_mask is None:
            present = torch.ones(batch_size, dtype=torch.bool, device=given.device)
        elif image_mask.shape != (batch_size,):
            raise ValueError(f"image_mask must have shape ({batch_size},), got {tuple(image_mask.shape)}")
        else:
            present = image_mask.bool()
        if pixel_values is not None:
            image_features = self._backbone_features(pixel_values)
        elif image_features.dim() != 3 or image_features.shape[-1] != self.config.image_feature_dim:
            raise ValueError(
                f"image_features must be (B, R, {self.config.image_feature_dim}) (config.image_feature_dim), "
                f"got {tuple(image_features.shape)}"
            )
        image_features = image_features.to(self.image_encoder.projection.weight.dtype)
        # Rows without an image may hold anything; zeros keep NaN out of the shared layers' gradients.
        image_features = image_features.masked_fill(~present[:, None, None], 0.0)
        region_mask = present.unsqueeze(1).expand(-1, image_features.shape[1])
        return self.image_encoder(image_features, region_mask), region_mask

    def _backbone_features(self, pixel_values: Tensor) -> Tensor:
        """Run the vision backbone on every row, (B, 3, H, W) -> (B, R, D_v); rows without an image are
        masked afterwards, so the graph is the same whichever rows have one."""
        if self.vision_model is None:
            raise ValueError(
                "this MGCM config has no vision_config, so the model cannot read pixel_values: pass "
                f"precomputed image_features (B, R, {self.config.image_feature_dim}) instead"
            )
        frozen = self.config.freeze_vision_backbone
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen):
            features = extract_image_features(self.vision_model, pixel_values)
        if features.shape[-1] != self.config.image_feature_dim:
            raise ValueError(
                f"the vision backbone gave {features.shape[-1]}-d regions but config.image_feature_dim is "
                f"{self.config.image_feature_dim}"
            )
        return features

    def _object_tokens(self, object_ids: Tensor, object_mask: Tensor | None) -> tuple[Tensor, Tensor]:
        padding_id = self.object_encoder.padding_id
        if object_ids.dim() != 2:
            raise ValueError(f"object_ids must be (B, max_objects), got {tuple(object_ids.shape)}")
        if host_reads_allowed(object_ids):
            bad = (object_ids < 0) | (object_ids > padding_id)
            if bool(bad.any()):
                row, column = _first_true(bad)
                raise ValueError(
                    f"object_ids[{row}, {column}] = {int(object_ids[row, column])} is outside 0..{padding_id} "
                    f"({padding_id} object labels in the config, {padding_id} is the padding id)"
                )
        if object_mask is None:
            object_mask = object_ids != padding_id
        elif object_mask.shape != object_ids.shape:
            raise ValueError(
                f"object_mask has shape {tuple(object_mask.shape)} but object_ids {tuple(object_ids.shape)}"
            )
        object_mask = object_mask.bool()
        object_ids = object_ids.masked_fill(~object_mask, padding_id)
        return self.object_encoder(object_ids), object_mask

    @staticmethod
    def _checked_text_source_mask(name: str, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor:
        if attention_mask is None:
            raise ValueError(
                f"{name}_input_ids need {name}_attention_mask (an all-zero row means no {name} for that post)"
            )
        if attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"{name}_attention_mask has shape {tuple(attention_mask.shape)} but {name}_input_ids "
                f"{tuple(input_ids.shape)}"
            )
        return attention_mask.bool()

    def _text_source_tokens(self, input_ids: Tensor, source_mask: Tensor) -> tuple[Tensor, Tensor]:
        """(B, C) pieces of one text source through the shared text encoder -> ((B, C, d_c), (B, C) mask),
        encoding only the rows that have the source where the host may read the mask."""
        if host_reads_allowed(source_mask):
            return self._text_source_states_by_length(input_ids, source_mask), source_mask
        # One fixed-shape pass over every row. A row without the source attends to its first (padding)
        # piece so that no softmax runs over nothing; its states are masked everywhere downstream.
        present = source_mask.any(dim=1, keepdim=True)
        encoder_mask = source_mask | (
            ~present & (torch.arange(source_mask.shape[1], device=present.device) == 0)
        )
        with self._text_source_encoding_context():
            states = self.text_encoder(
                input_ids=input_ids, attention_mask=encoder_mask.long(), return_dict=True
            ).last_hidden_state
        return self.text_source_projection(states), source_mask

    @contextmanager
    def _text_source_encoding_context(self) -> Iterator[None]:
        """No gradient and the encoder in eval mode while text sources are detached (the default)."""
        detached = self.config.detach_text_source_encoding
        with (
            torch.set_grad_enabled(torch.is_grad_enabled() and not detached),
            _evaluation_mode(self.text_encoder, detached),
        ):
            yield

    def _text_source_states_by_length(self, input_ids: Tensor, source_mask: Tensor) -> Tensor:
        """(B, C) pieces -> (B, C, d_c) states, encoding only rows that have the source, in groups of
        similar length each cut to its longest row: about a quarter less padding than one pass over the
        batch, for a few host reads (CPU only; see `host_reads`)."""
        present = source_mask.any(dim=1)
        batch_size, source_length = input_ids.shape
        # Rows without the source keep the projection of zeros (masked everywhere downstream); it also
        # keeps the projection in the graph of a batch in which no row has the source.
        blank = torch.zeros(batch_size, source_length, self.config.hidden_size, device=input_ids.device)
        all_rows = self.text_source_projection(blank)
        positions = torch.arange(1, source_length + 1, device=source_mask.device)
        lengths = (source_mask * positions).amax(dim=1)
        rows = present.nonzero().squeeze(1)
        rows = rows[lengths[rows].argsort(stable=True)]
        for group in torch.tensor_split(rows, max(1, min(TEXT_SOURCE_LENGTH_GROUPS, len(rows)))):
            if group.numel() == 0:
                continue
            length = int(lengths[group[-1]])
            with self._text_source_encoding_context():
                states = self.text_encoder(
                    input_ids=input_ids[group, :length],
                    attention_mask=source_mask[group, :length].long(),
                    return_dict=True,
                ).last_hidden_state
            states = self.text_source_projection(states)
            all_rows = all_rows.to(states.dtype).index_put(
                (group.unsqueeze(1), positions[:length].unsqueeze(0) - 1), states
            )
        return all_rows


class MGCMForTokenClassification(MGCMPreTrainedModel):
    """MGCM with word-level emissions, a CRF decoder and the auxiliary span task (UMT)."""

    def __init__(
        self,
        config: MGCMConfig,
        text_encoder: PreTrainedModel | None = None,
        vision_model: PreTrainedModel | None = None,
    ) -> None:
        super().__init__(config)
        self.mgcm = MGCMModel(config, text_encoder=text_encoder, vision_model=vision_model)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.crf = ConditionalRandomField(config.num_labels) if config.use_crf else None
        self.span_classifier = None
        self.span_crf = None
        self._span_tag_of_label: list[int] = []
        if config.aux_span_loss_weight > 0:
            self._span_tag_of_label = span_tags_of_labels(config.id2label)
            self.span_classifier = nn.Linear(config.hidden_size, 3)
            self.span_crf = ConditionalRandomField(3) if config.use_crf else None
        self.post_init()

    @classmethod
    def from_pretrained(
        cls,
        pretrained_model_name_or_path: str | os.PathLike | None,
        *model_args,
        runtime: str = "torch",
        **kwargs,
    ):
        """`MGCMPreTrainedModel.from_pretrained`, or with `runtime="onnx"` the folder's exported ONNX graphs.

        `runtime="onnx"` returns an `MGCMOnnxForTokenClassification` (`onnx_model`) and never loads the torch
        weights when the folder holds fresh ONNX files (else it exports them once into a cache). It takes
        `int8`, `providers`, `session_options` (a dict of `onnxruntime.SessionOptions` attributes) and
        `onnx_cache_dir`. This is the way in for `pipeline("multimodal-ner", model=folder,
        model_kwargs={"runtime": "onnx"})`: transformers loads the model through here before the pipeline
        sees its own arguments.
        """
        from .onnx_model import ONNX_OPTIONS

        if runtime == "onnx":
            from .onnx_model import MGCMOnnxForTokenClassification

            if model_args:
                raise TypeError("runtime='onnx' takes no positional model arguments")
            return MGCMOnnxForTokenClassification.from_pretrained(pretrained_model_name_or_path, **kwargs)
        if runtime != "torch":
            raise ValueError(f"runtime must be 'torch' or 'onnx', got {runtime!r}")
        onnx_only = sorted(set(kwargs) & set(ONNX_OPTIONS))
        if onnx_only:
            raise TypeError(f"{onnx_only} are options of the ONNX runtime: pass runtime='onnx' with them")
        return super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)

    def export_to_onnx(
        self,
        save_directory: str | os.PathLike,
        int8: bool = False,
        per_channel: bool = True,
        reduce_range: bool = False,
        image_size: tuple[int, int] | None = None,
    ) -> list[Path]:
        """Save the model into `save_directory` (`save_pretrained`) and its ONNX graphs into `save_directory/onnx`.

        Writes `model.onnx` (emissions and gates), `vision_model.onnx` when the config has a vision backbone, and
        with `int8` `model_quantized.onnx` (dynamic int8; `per_channel`, `reduce_range`: see
        `onnx_export.quantize_onnx`). `image_size` is the (H, W) the image processor gives. Returns the ONNX
        files. Needs the onnx extra (`pip install 'mgcm[onnx]'`).
        """
        from .onnx_export import ONNX_SUBFOLDER, folder_fingerprint, write_onnx_files

        self.save_pretrained(save_directory)
        weights, config_digest = folder_fingerprint(save_directory)
        return write_onnx_files(
            self,
            Path(save_directory) / ONNX_SUBFOLDER,
            weights,
            config_digest,
            int8=int8,
            per_channel=per_channel,
            reduce_range=reduce_range,
            image_size=image_size,
        )

    @classmethod
    def from_backbones(
        cls,
        text_model_name_or_path: str,
        vision_model_name_or_path: str | None = None,
        use_safetensors: bool | None = True,
        **config_kwargs,
    ) -> "MGCMForTokenClassification":
        """A model whose text encoder (and vision backbone) carry pretrained weights; the MGCM layers are new.

        Args:
            text_model_name_or_path: a folder (or Hub id) holding an encoder `AutoModel` loads.
            vision_model_name_or_path: optional folder (or Hub id) of a vision backbone; without it the model
                reads precomputed `image_features` (pass `image_feature_dim`) or no image.
            use_safetensors: as in `from_pretrained`: a backbone folder holding only pickle weights is refused
                unless this is False.
            config_kwargs: any other `MGCMConfig` field (`text_sources=["caption"]`, `object_labels=...`, ...).
        """
        for name in ("text_config", "vision_config"):
            if name in config_kwargs:
                raise ValueError(f"from_backbones takes {name} from the pretrained folder; do not pass it")
        backbones = [text_model_name_or_path]
        if vision_model_name_or_path is not None:
            backbones.append(vision_model_name_or_path)
        loaded = []
        for name_or_path in backbones:
            if use_safetensors:
                refuse_pickle_weights(name_or_path)
            loaded.append(AutoModel.from_pretrained(name_or_path, use_safetensors=use_safetensors))
        text_encoder, vision_model = loaded[0], (loaded[1] if len(loaded) > 1 else None)
        config = MGCMConfig(
            text_config=text_encoder.config,
            vision_config=vision_model.config if vision_model is not None else None,
            **config_kwargs,
        )
        return cls(config, text_encoder=text_encoder, vision_model=vision_model)

    @can_return_tuple
    def forward(
        self,
        input_ids: Tensor,
        word_ids: Tensor,
        attention_mask: Tensor | None = None,
        token_type_ids: Tensor | None = None,
        word_mask: Tensor | None = None,
        word_shape_ids: Tensor | None = None,
        neighbour_vectors: Tensor | None = None,
        neighbour_weights: Tensor | None = None,
        pixel_values: Tensor | None = None,
        image_features: Tensor | None = None,
        image_mask: Tensor | None = None,
        object_ids: Tensor | None = None,
        object_mask: Tensor | None = None,
        caption_input_ids: Tensor | None = None,
        caption_attention_mask: Tensor | None = None,
        labels: Tensor | None = None,
        **kwargs: Unpack[TransformersKwargs],
    ) -> MGCMTokenClassifierOutput:
        """Emissions, Viterbi predictions and, with word-level `labels` (B, W), the loss.

        `kwargs` are those of `MGCMModel.forward`: the `TransformersKwargs` and the (B, C) `<name>_input_ids`
        and `<name>_attention_mask` of text sources other than the caption.

        A label of -100 ignores the word: padding, or a real word left unlabelled, which the CRF sums over
        (every tag possible there) and cross-entropy skips.
        """
        encoded = self.mgcm(
            input_ids=input_ids,
            word_ids=word_ids,
            attention_mask=attention_mask,
            token_type_ids=token_type_ids,
            word_mask=word_mask,
            word_shape_ids=word_shape_ids,
            neighbour_vectors=neighbour_vectors,
            neighbour_weights=neighbour_weights,
            pixel_values=pixel_values,
            image_features=image_features,
            image_mask=image_mask,
            object_ids=object_ids,
            object_mask=object_mask,
            caption_input_ids=caption_input_ids,
            caption_attention_mask=caption_attention_mask,
            return_dict=True,
            **kwargs,
        )
        word_mask = encoded.word_mask
        logits = self.classifier(self.dropout(encoded.last_hidden_state))
        loss = None
        if labels is not None:
            if labels.shape != word_mask.shape:
                raise ValueError(
                    f"labels have shape {tuple(labels.shape)}, expected word-level (B, W) = {tuple(word_mask.shape)}"
                )
            loss = self._tagging_loss(logits, labels, word_mask, self.crf)
            if self.span_classifier is not None:
                span_logits = self.span_classifier(self.dropout(encoded.text_hidden_state))
                span_labels = self._span_labels(labels, word_mask)
                span_loss = self._tagging_loss(span_logits, span_labels, word_mask, self.span_crf)
                loss = loss + self.config.aux_span_loss_weight * span_loss
        predictions = None
        if not (self.training and labels is not None):
            predictions = self.decode(logits, word_mask)
        return MGCMTokenClassifierOutput(
            loss=loss,
            logits=logits,
            predictions=predictions,
            gate_values=encoded.gate_values,
            hidden_states=encoded.hidden_states,
            attentions=encoded.attentions,
            granularity_attentions=encoded.granularity_attentions,
        )

    def decode(self, logits: Tensor, word_mask: Tensor) -> Tensor:
        """(B, W, L), (B, W) -> (B, W) long tags, -100 at padding: Viterbi with the CRF, else argmax."""
        return decode_tags(logits, word_mask, self.crf)

    def extract_image_features(self, pixel_values: Tensor) -> Tensor:
        """Region features of the vision backbone as the forward reads `pixel_values`: (B, 3, H, W) -> (B, R, D_v)."""
        return self.mgcm._backbone_features(pixel_values)

    def _span_labels(self, labels: Tensor, word_mask: Tensor) -> Tensor:
        """Word labels (B, W) -> auxiliary span tags (0 O, 1 B, 2 I), -100 where the label is."""
        if host_reads_allowed(labels):
            bad = word_mask & (labels != PADDING_TAG) & ((labels < 0) | (labels >= self.config.num_labels))
            if bool(bad.any()):
                row, word = _first_true(bad)
                raise ValueError(
                    f"labels[{row}, {word}] = {int(labels[row, word])} is not a label id "
                    f"0..{self.config.num_labels - 1}"
                )
        span_tag_of_label = torch.tensor(self._span_tag_of_label, dtype=torch.long, device=labels.device)
        span_labels = span_tag_of_label[labels.clamp(min=0, max=self.config.num_labels - 1)]
        return span_labels.masked_fill(labels == PADDING_TAG, PADDING_TAG)

    @staticmethod
    def _tagging_loss(
        logits: Tensor, labels: Tensor, word_mask: Tensor, crf: ConditionalRandomField | None
    ) -> Tensor:
        """CRF negative log-likelihood (mean over rows), or word-level cross-entropy without a CRF."""
        if crf is not None:
            return crf(logits, labels, word_mask).mean()
        labels = labels.masked_fill(~word_mask, PADDING_TAG)
        return F.cross_entropy(logits.flatten(0, 1).float(), labels.flatten(), ignore_index=PADDING_TAG)


__all__ = [
    "MGCMForTokenClassification",
    "MGCMModel",
    "MGCMModelOutput",
    "MGCMPreTrainedModel",
    "MGCMTokenClassifierOutput",
    "first_piece_positions",
]
