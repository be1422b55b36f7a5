"""MGCMConfig: paper defaults, save/load round trips, Auto registration and located errors for bad values."""

import json

import pytest
from huggingface_hub.errors import StrictDataclassClassValidationError
from transformers import AutoConfig, BertConfig, ResNetConfig, RobertaConfig, ViTConfig

from modeling_mgcm import COCO_OBJECT_LABELS, MGCM_LABEL_NAMES, MGCMConfig


def tiny_text() -> BertConfig:
    return BertConfig(
        vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )


def tiny_config(**overrides) -> MGCMConfig:
    settings = dict(
        text_config=tiny_text(),
        vision_config=None,
        image_feature_dim=12,
        object_labels=["person", "dog", "car"],
        augmentation_dim=6,
        num_neighbours=3,
    )
    settings.update(overrides)
    return MGCMConfig(**settings)


def test_defaults_reproduce_the_paper_configuration():
    config = MGCMConfig()
    assert config.model_type == "mgcm"
    # bert-base-cased and a frozen ResNet-152 giving 2048-d regions
    assert config.text_config.model_type == "bert"
    assert (config.text_config.vocab_size, config.text_config.hidden_size) == (28996, 768)
    assert config.text_config.num_hidden_layers == 12
    assert config.vision_config.model_type == "resnet"
    assert config.vision_config.depths == [3, 8, 36, 3]
    assert config.image_feature_dim == 2048
    assert config.freeze_vision_backbone
    # image and object granularities, caption off; 5 COCO objects
    assert config.granularities == ("image", "objects")
    assert config.object_labels == list(COCO_OBJECT_LABELS) and len(config.object_labels) == 80
    assert config.max_objects == 5
    # gated semantic augmentation, k = 4 neighbours of 200-d word2vec vectors
    assert (config.augmentation_mode, config.augmentation_dim, config.num_neighbours) == ("gate", 200, 4)
    assert not config.use_word_shape
    # one cross-attention layer per step at the encoder's width and heads; fusion dropout 0.5
    assert config.num_cross_attention_layers == 1
    assert (config.cross_modal_width, config.attention_heads) == (768, 12)
    assert config.fusion_dropout_prob == 0.5
    assert config.aux_span_loss_weight == 0.5
    assert config.use_crf
    assert [config.id2label[index] for index in range(config.num_labels)] == list(MGCM_LABEL_NAMES)
    assert config.label2id["B-PER"] == 1


def test_config_round_trips_through_save_pretrained(tmp_path):
    config = tiny_config(
        use_caption=True,
        augmentation_mode="attention",
        use_word_shape=True,
        cross_modal_hidden_size=16,
        num_cross_attention_heads=4,
        num_cross_attention_layers=2,
        fusion_dropout_prob=0.3,
        aux_span_loss_weight=0.0,
        use_crf=False,
        detach_caption_encoding=False,
    )
    config.save_pretrained(tmp_path)
    reloaded = MGCMConfig.from_pretrained(tmp_path)
    assert reloaded.to_dict() == config.to_dict()
    assert reloaded.vision_config is None
    assert isinstance(reloaded.text_config, BertConfig) and reloaded.text_config.hidden_size == 32
    assert reloaded.granularities == ("image", "objects", "caption")
    assert reloaded.id2label == config.id2label


def test_default_config_round_trips_with_its_resnet_sub_config(tmp_path):
    config = MGCMConfig()
    config.save_pretrained(tmp_path)
    reloaded = MGCMConfig.from_pretrained(tmp_path)
    assert reloaded.to_dict() == config.to_dict()
    assert isinstance(reloaded.vision_config, ResNetConfig)
    assert reloaded.vision_config.hidden_sizes == [256, 512, 1024, 2048]


def test_auto_config_knows_mgcm_and_saving_writes_auto_map(tmp_path):
    assert AutoConfig.for_model("mgcm").__class__ is MGCMConfig
    config = tiny_config()
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "mgcm"
    assert saved["auto_map"]["AutoConfig"] == "configuration_mgcm.MGCMConfig"
    # The config file ships with its code, so the folder loads as Hub remote code.
    assert (tmp_path / "configuration_mgcm.py").exists()
    loaded = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(loaded, MGCMConfig)
    assert loaded.to_diff_dict() == config.to_diff_dict()


def test_image_feature_dim_comes_from_the_vision_backbone():
    resnet = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    assert tiny_config(vision_config=resnet, image_feature_dim=None).image_feature_dim == 16
    vit = ViTConfig(hidden_size=24, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    assert tiny_config(vision_config=vit, image_feature_dim=None).image_feature_dim == 24
    # A sub-config given as a dict is resolved through its model_type.
    assert tiny_config(vision_config=vit.to_dict(), image_feature_dim=None).vision_config.model_type == "vit"


def test_any_auto_text_encoder_is_accepted():
    roberta = RobertaConfig(
        vocab_size=64, hidden_size=24, num_hidden_layers=1, num_attention_heads=3, intermediate_size=32
    )
    config = tiny_config(text_config=roberta.to_dict())
    assert isinstance(config.text_config, RobertaConfig)
    assert (config.hidden_size, config.attention_heads) == (24, 3)
    # A dict without model_type falls back to BERT.
    assert (
        tiny_config(text_config={"hidden_size": 32, "num_attention_heads": 4}).text_config.model_type
        == "bert"
    )


def test_switched_off_granularities_need_no_encoder():
    config = tiny_config(use_image=False, use_objects=False, image_feature_dim=None, object_labels=[])
    assert config.granularities == ()
    assert config.image_feature_dim is None


def test_a_loaded_backbone_keeps_its_attention_implementation():
    text = tiny_text()
    text._attn_implementation = "sdpa"
    assert tiny_config(text_config=text).text_config._attn_implementation == "sdpa"
    assert (
        tiny_config(text_config=tiny_text(), attn_implementation="eager").text_config._attn_implementation
        == "eager"
    )


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"augmentation_mode": "concat"}, r"augmentation_mode must be one of .* got 'concat'"),
        ({"max_objects": -1}, r"max_objects must be >= 0, got -1"),
        ({"max_objects": 0}, r"use_objects=True needs max_objects >= 1"),
        (
            {"image_feature_dim": None},
            r"use_image=True needs an image encoder: a vision_config .* or image_feature_dim",
        ),
        ({"object_labels": []}, r"use_objects=True needs object_labels"),
        ({"object_labels": ["dog", "dog"]}, r"object_labels must be distinct .* repeated \['dog'\]"),
        ({"augmentation_dim": 0}, r"augmentation_mode='gate' needs augmentation_dim >= 1, got 0"),
        (
            {"num_neighbours": 0, "augmentation_mode": "add"},
            r"augmentation_mode='add' needs num_neighbours >= 1",
        ),
        ({"use_word_shape": True, "num_word_shapes": 1}, r"num_word_shapes >= 2"),
        ({"num_cross_attention_layers": 0}, r"num_cross_attention_layers must be >= 1, got 0"),
        (
            {"num_cross_attention_heads": 3},
            r"cross-modal width 32 must be a multiple of the cross-attention heads 3",
        ),
        (
            {"cross_modal_hidden_size": 15},
            r"cross-modal width 15 must be a multiple of the cross-attention heads 2",
        ),
        ({"cross_modal_hidden_size": 0}, r"cross_modal_hidden_size must be >= 1"),
        ({"fusion_dropout_prob": 1.0}, r"fusion_dropout_prob must be in \[0, 1\), got 1.0"),
        ({"aux_span_loss_weight": -0.5}, r"aux_span_loss_weight must be >= 0, got -0.5"),
        ({"num_labels": 3}, r"aux_span_loss_weight > 0 needs BIO label names .*LABEL_0"),
        ({"image_feature_dim": 0}, r"image_feature_dim must be >= 1, got 0"),
    ],
)
def test_bad_values_raise_at_construction_with_the_field_and_value(overrides, message):
    with pytest.raises(StrictDataclassClassValidationError, match=message) as raised:
        tiny_config(**overrides)
    # transformers' validation wraps the ValueError that names the field.
    assert isinstance(raised.value.__cause__, ValueError)


def test_feature_dim_contradicting_the_backbone_raises():
    resnet = ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")
    with pytest.raises(
        StrictDataclassClassValidationError,
        match=r"image_feature_dim=12 contradicts the vision backbone \(resnet\).* 16-d",
    ):
        tiny_config(vision_config=resnet, image_feature_dim=12)


def test_values_changed_after_construction_are_checked_by_validate_and_save_pretrained(tmp_path):
    """The checks are transformers' validation hooks, so they run wherever transformers validates."""
    config = tiny_config()
    config.validate()
    config.max_objects = -1
    with pytest.raises(StrictDataclassClassValidationError, match=r"max_objects must be >= 0, got -1"):
        config.validate()
    with pytest.raises(StrictDataclassClassValidationError, match=r"max_objects must be >= 0"):
        config.save_pretrained(tmp_path)
    assert not (tmp_path / "config.json").exists()
    config.max_objects = 3
    config.input_dropout = {"knowledge": 0.5}
    with pytest.raises(StrictDataclassClassValidationError, match=r"input_dropout names 'knowledge'"):
        config.validate()


def test_non_bio_labels_are_fine_without_the_span_task():
    config = tiny_config(num_labels=3, aux_span_loss_weight=0.0)
    assert config.num_labels == 3
