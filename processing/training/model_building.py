"""The model a training run starts from: MGCM with the granularities and options of its flags, over pretrained
backbones (`--text_model`, `--vision_model`) or tiny random ones."""

from transformers import AutoModel, PreTrainedTokenizerBase

from modeling_mgcm import MGCMConfig, MGCMForTokenClassification
from modeling_mgcm.configuration_mgcm import VISUAL_GRANULARITIES
from modeling_mgcm.neighbour_table import NeighbourTable
from processing.corpus.labels import LABEL_NAMES
from processing.testing.tiny_backbones import tiny_text_config, tiny_vision_config
from processing.training.arguments import TrainArguments

# The word-vector width a model without a neighbour table records (GloVe 6B 50d's; its augmentation is off).
DEFAULT_AUGMENTATION_DIM = 50


def model_config_kwargs(
    args: TrainArguments, neighbour_table: NeighbourTable | None, object_labels: list[str]
) -> dict:
    """The `MGCMConfig` fields the flags set (everything but the backbones' configs)."""
    return dict(
        use_image="image" in args.granularities,
        use_objects="objects" in args.granularities,
        text_sources=[name for name in args.granularities if name not in VISUAL_GRANULARITIES],
        share_text_source_block=args.share_text_source_block,
        detach_text_source_encoding=not args.text_source_gradient,
        num_cross_attention_layers=args.num_cross_attention_layers,
        input_dropout=args.input_dropout_rates,
        object_labels=object_labels,
        augmentation_mode=args.augmentation_mode,
        augmentation_dim=neighbour_table.dim if neighbour_table is not None else DEFAULT_AUGMENTATION_DIM,
        num_neighbours=neighbour_table.k if neighbour_table is not None else args.num_neighbours,
        use_word_shape=not args.no_word_shape,
        aux_span_loss_weight=args.aux_span_loss_weight,
        id2label=dict(enumerate(LABEL_NAMES)),
        label2id={label: index for index, label in enumerate(LABEL_NAMES)},
    )


def build_model(
    args: TrainArguments,
    tokenizer: PreTrainedTokenizerBase,
    neighbour_table: NeighbourTable | None,
    object_labels: list[str],
) -> MGCMForTokenClassification:
    """MGCM with pretrained backbones from `--text_model`/`--vision_model`, or tiny random ones, with
    activation checkpointing under `--gradient_checkpointing`."""
    model = _model_with_backbones(args, tokenizer, model_config_kwargs(args, neighbour_table, object_labels))
    if args.gradient_checkpointing:
        # Non-reentrant: it works under DDP and with inputs that need no gradient (the frozen caption pass).
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    return model


def _model_with_backbones(
    args: TrainArguments, tokenizer: PreTrainedTokenizerBase, config_kwargs: dict
) -> MGCMForTokenClassification:
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


__all__ = ["build_model", "model_config_kwargs"]
