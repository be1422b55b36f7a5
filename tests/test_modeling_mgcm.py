"""MGCMModel / MGCMForTokenClassification on tiny random backbones: shapes, masks, exact absence, padding and
batch invariance, gradients, every augmentation mode and granularity, save/reload, Auto classes,
from_backbones, remote code and located input errors."""

import copy
import json
import os

import pytest
import torch
import torch.nn.functional as F
from mgcm_batches import (
    GRANULARITY_KEYS,
    NEIGHBOURS,
    OBJECT_LABELS,
    OBJECT_PADDING_ID,
    REGIONS,
    VECTOR_DIM,
    Example,
    build_batch,
    mgcm_config,
    random_example,
    run,
    three_examples,
    tiny_model,
)
from transformers import (
    AutoModel,
    AutoModelForTokenClassification,
    BertModel,
    CLIPVisionConfig,
    ConvNextConfig,
    ResNetModel,
    ViTConfig,
    masking_utils,
)

from modeling_mgcm import MGCMForTokenClassification, MGCMModel, extract_image_features
from modeling_mgcm.cross_modal_attention import MGCMAttention
from modeling_mgcm.semantic_augmentation import MGCMSemanticAugmentation

pytestmark = pytest.mark.usefixtures("single_thread")


# ----------------------------------------------------------------------------------------------------------
# Shapes, masks and exact absence


def test_outputs_have_the_contract_shapes_and_padding(tiny_text_config):
    model = tiny_model(tiny_text_config)
    batch = build_batch(three_examples(), extra_words=2)
    output = run(model, batch, output_attentions=True, output_hidden_states=True)
    batch_size, num_words = batch["word_mask"].shape
    assert output.logits.shape == (batch_size, num_words, 9) and output.logits.dtype == torch.float32
    assert output.predictions.shape == (batch_size, num_words)
    padding = batch["word_mask"] == 0
    assert (output.predictions[padding] == -100).all()
    assert ((output.predictions[~padding] >= 0) & (output.predictions[~padding] < 9)).all()
    assert set(output.gate_values) == {"image", "objects", "caption"}
    for gate in output.gate_values.values():
        assert gate.shape == (batch_size, num_words)
        assert (gate[padding] == 0).all() and ((gate[~padding] > 0) & (gate[~padding] < 1)).all()
    expected_keys = {"image": REGIONS, "objects": 3, "caption": batch["caption_input_ids"].shape[1]}
    for name, keys in expected_keys.items():
        weights = output.granularity_attentions[name]
        assert weights.shape == (batch_size, num_words, keys)
        # Each real word's attention is a distribution over the input's real tokens.
        key_mask = {
            "image": torch.ones(batch_size, REGIONS, dtype=torch.bool),
            "objects": batch["object_mask"].bool(),
            "caption": batch["caption_attention_mask"].bool(),
        }[name]
        torch.testing.assert_close(weights.sum(-1)[~padding], torch.ones((~padding).sum().item()))
        assert (weights.masked_select(~key_mask.unsqueeze(1)) == 0).all()


def test_hidden_states_are_word_level_and_end_with_the_last_hidden_state(tiny_text_config):
    """The encoder's embedding output and every layer, read at each word's first piece, then the fused
    word states: (B, W, d) each, the last one `last_hidden_state`, as in transformers models."""
    model = tiny_model(tiny_text_config)
    batch = build_batch(three_examples(), extra_words=2)
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    with torch.no_grad():
        output = model.mgcm(**inputs, output_hidden_states=True)
        encoded = model.mgcm.text_encoder(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True
        )
        tagged = model(**inputs, output_hidden_states=True)
    batch_size, num_words = batch["word_mask"].shape
    assert len(output.hidden_states) == tiny_text_config.num_hidden_layers + 2
    assert all(
        states.shape == (batch_size, num_words, tiny_text_config.hidden_size)
        for states in output.hidden_states
    )
    assert output.hidden_states[-1] is output.last_hidden_state
    # Each encoder state at the piece where its word starts.
    word_ids, word_mask = batch["word_ids"], batch["word_mask"].bool()
    for layer, piece_states in enumerate(encoded.hidden_states):
        for row, word in word_mask.nonzero().tolist():
            first_piece = int((word_ids[row] == word).nonzero()[0])
            torch.testing.assert_close(
                output.hidden_states[layer][row, word], piece_states[row, first_piece], rtol=0, atol=0
            )
    torch.testing.assert_close(tagged.hidden_states[-1], output.last_hidden_state, rtol=0, atol=0)
    assert run(model, batch).hidden_states is None


def test_return_dict_false_gives_the_output_fields_as_a_tuple(tiny_text_config):
    model = tiny_model(tiny_text_config)
    batch = build_batch(three_examples())
    output = run(model, batch, output_attentions=True)
    as_tuple = run(model, batch, output_attentions=True, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(output.to_tuple())
    torch.testing.assert_close(as_tuple[0], output.logits, rtol=0, atol=0)
    assert as_tuple[-1].keys() == output.granularity_attentions.keys()


def test_hidden_states_are_all_or_none(tiny_text_config):
    batch = build_batch(three_examples())
    with pytest.raises(ValueError, match=r"output_hidden_states must be True or False, got \[-1\]"):
        run(tiny_model(tiny_text_config), batch, output_hidden_states=[-1])


def test_transformers_kwargs_are_accepted_and_unknown_keywords_refused(tiny_text_config):
    """`num_items_in_batch` (which Trainer may pass) reaches nothing that changes the loss; a misspelt input
    is an error, not silently ignored."""
    model = tiny_model(tiny_text_config)
    batch = build_batch(three_examples())
    with torch.no_grad():
        plain = model(**batch).loss
        counted = model(**batch, num_items_in_batch=torch.tensor(7)).loss
    assert torch.equal(plain, counted)
    with pytest.raises(TypeError, match="unexpected keyword argument 'imgae_features'"):
        model(**batch, imgae_features=batch["image_features"])


def test_encoder_attentions_need_the_eager_implementation(tiny_text_config):
    batch = build_batch(three_examples())
    assert run(tiny_model(tiny_text_config), batch, output_attentions=True).attentions is None
    eager = tiny_model(tiny_text_config, attn_implementation="eager")
    attentions = run(eager, batch, output_attentions=True).attentions
    assert len(attentions) == tiny_text_config.num_hidden_layers
    assert (
        attentions[0].shape == (3, tiny_text_config.num_attention_heads) + (batch["input_ids"].shape[1],) * 2
    )


def test_predictions_are_the_crf_viterbi_path(tiny_text_config):
    model = tiny_model(tiny_text_config)
    batch = build_batch(three_examples(), extra_words=1)
    output = run(model, batch)
    assert torch.equal(output.predictions, model.crf.decode(output.logits, batch["word_mask"].bool()))


@pytest.mark.parametrize("granularity", ["image", "objects", "caption"])
def test_an_absent_input_gives_exactly_the_output_of_a_batch_without_it(tiny_text_config, granularity):
    """torch.equal: both batches have the same shapes, so the same kernels run on the same numbers; any
    leak of the masked input (even 1e-9) would show."""
    model = tiny_model(tiny_text_config)
    # Example 1 lacks the input; a masked image row holds NaN to prove that nothing reads it.
    masked = build_batch(three_examples(**{granularity: 1}), absent_filler=float("nan"))
    missing = build_batch(three_examples(**{granularity: 1}), without=(granularity,))
    with_input, without_input = run(model, masked), run(model, missing)
    assert torch.isfinite(with_input.logits).all()
    assert torch.equal(with_input.logits[1], without_input.logits[1])
    assert (with_input.gate_values[granularity][1] == 0).all()
    assert (without_input.gate_values[granularity] == 0).all()
    # The examples that have the input do use it.
    assert not torch.allclose(with_input.logits[0], without_input.logits[0])


def test_an_example_without_any_visual_input_matches_a_text_only_batch(tiny_text_config):
    model = tiny_model(tiny_text_config)
    examples = three_examples(image=1, objects=1, caption=1)
    full = run(model, build_batch(examples))
    text_only = run(model, build_batch(examples, without=("image", "objects", "caption")))
    assert torch.equal(full.logits[1], text_only.logits[1])
    assert set(text_only.gate_values) == {"image", "objects", "caption"}
    assert all((gate == 0).all() for gate in text_only.gate_values.values())


def test_padding_and_batch_composition_do_not_change_an_example(tiny_text_config):
    """allclose at atol 1e-6: the batches have different shapes (more pieces, words, caption pieces and
    rows), so matrix products may sum in another order and differ in the last float bits; a leak through
    padding or across rows would be orders of magnitude larger."""
    model = tiny_model(tiny_text_config)
    # Six tweets with captions of different lengths: the captions are encoded in length groups.
    examples = three_examples(caption=2) + [random_example(seed, 4 + seed) for seed in (3, 4, 5)]
    crowded = run(model, build_batch(examples[::-1], extra_pieces=5, extra_words=3, extra_caption=4))
    for index, example in enumerate(examples):
        alone = run(model, build_batch([example]))
        row, num_words = len(examples) - 1 - index, len(example.word_pieces)
        torch.testing.assert_close(crowded.logits[row, :num_words], alone.logits[0], rtol=0, atol=1e-6)
        assert torch.equal(crowded.predictions[row, :num_words], alone.predictions[0])
        for name, gate in alone.gate_values.items():
            torch.testing.assert_close(crowded.gate_values[name][row, :num_words], gate[0], rtol=0, atol=1e-6)


def test_an_all_masked_key_row_gives_zeros_and_finite_gradients(tiny_text_config):
    torch.manual_seed(0)
    attention = MGCMAttention(
        mgcm_config(tiny_text_config, attention_dropout_prob=0.0), hidden_size=8, num_heads=2
    )
    queries = torch.randn(2, 3, 8, requires_grad=True)
    keys = torch.randn(2, 4, 8)
    key_mask = torch.tensor([[True, True, False, False], [False, False, False, False]])
    context, _ = attention(queries, keys, key_mask)
    assert (context[1] == 0).all() and torch.isfinite(context).all()
    context.sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in attention.parameters())
    # The eager path (used for attention weights) agrees with the fused one.
    eager, weights = attention(queries, keys, key_mask, output_attentions=True)
    torch.testing.assert_close(eager, context)
    assert (weights[0, :, :, 2:] == 0).all()


def test_output_attentions_does_not_change_the_logits(tiny_text_config):
    model = tiny_model(tiny_text_config)
    batch = build_batch(three_examples(objects=0))
    plain, eager = run(model, batch), run(model, batch, output_attentions=True)
    torch.testing.assert_close(eager.logits, plain.logits, rtol=0, atol=1e-5)
    assert (eager.granularity_attentions["objects"][0] == 0).all()


# ----------------------------------------------------------------------------------------------------------
# Gradients, frozen backbone, augmentation modes, granularities


def pixel_batch(examples: list[Example], image_size: int = 32) -> dict[str, torch.Tensor]:
    batch = build_batch(examples, without=("image",))
    generator = torch.Generator().manual_seed(7)
    batch["pixel_values"] = torch.randn(len(examples), 3, image_size, image_size, generator=generator)
    batch["image_mask"] = torch.tensor([int(ex.image_features is not None) for ex in examples])
    return batch


def test_gradients_reach_every_trainable_module_and_never_the_frozen_backbone(
    tiny_text_config, tiny_resnet_config
):
    model = tiny_model(tiny_text_config, vision_config=tiny_resnet_config, image_feature_dim=None)
    model.train()
    assert not model.mgcm.vision_model.training
    batch = pixel_batch(three_examples(image=1))
    output = model(**batch)
    assert output.predictions is None  # no decoding in a training step
    output.loss.backward()
    trainable = {name: p for name, p in model.named_parameters() if p.requires_grad}
    without_gradient = [name for name, p in trainable.items() if p.grad is None or not p.grad.abs().sum() > 0]
    assert without_gradient == []
    assert any(name.startswith("mgcm.text_encoder.") for name in trainable)
    assert any(name.startswith("mgcm.cross_modal_blocks.caption.") for name in trainable)
    vision = dict(model.mgcm.vision_model.named_parameters())
    assert vision and all(not p.requires_grad and p.grad is None for p in vision.values())
    assert not any(name.startswith("mgcm.vision_model.") for name in trainable)


def examples_lacking(*granularities: str) -> list[Example]:
    """Three tweets none of which has the given inputs."""
    return [
        random_example(index, size, **dict.fromkeys(granularities, False))
        for index, size in enumerate((5, 3, 6))
    ]


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(lambda: build_batch(examples_lacking(*GRANULARITY_KEYS)), id="all-masked"),
        pytest.param(
            lambda: build_batch(examples_lacking(*GRANULARITY_KEYS), without=tuple(GRANULARITY_KEYS)),
            id="all-missing",
        ),
        pytest.param(lambda: build_batch(examples_lacking("objects")), id="no-objects"),
        pytest.param(lambda: build_batch(examples_lacking("caption")), id="no-caption"),
    ],
)
def test_every_trainable_parameter_is_in_the_graph_when_no_example_has_a_side_input(tiny_text_config, build):
    """DDP needs every parameter in every step's graph: a batch without any image, object or caption still
    runs each block (on masked input), so each trainable parameter gets a gradient, zero or not."""
    model = tiny_model(tiny_text_config).train()
    model(**build()).loss.backward()
    without_gradient = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert without_gradient == []


def test_an_unlabelled_real_word_is_ignored_by_the_loss(tiny_text_config):
    """-100 on a real word: the CRF sums over its tags; the loss is finite and the word's emission gets a
    gradient only through that sum, so a label there would change the loss."""
    model = tiny_model(tiny_text_config)
    batch = build_batch(three_examples(), extra_words=1)
    partial = batch["labels"].clone()
    partial[0, 1] = -100
    with torch.no_grad():
        full_loss = model(**batch).loss
        partial_loss = model(**(batch | {"labels": partial})).loss
    assert torch.isfinite(partial_loss) and partial_loss < full_loss
    without_crf = tiny_model(tiny_text_config, use_crf=False, aux_span_loss_weight=0.0)
    with torch.no_grad():
        output = without_crf(**(batch | {"labels": partial}))
    keep = batch["word_mask"].bool() & (partial != -100)
    torch.testing.assert_close(output.loss, F.cross_entropy(output.logits[keep], partial[keep]))


def test_an_unfrozen_vision_backbone_trains(tiny_text_config, tiny_resnet_config):
    model = tiny_model(
        tiny_text_config,
        vision_config=tiny_resnet_config,
        image_feature_dim=None,
        freeze_vision_backbone=False,
    )
    model.train()
    assert model.mgcm.vision_model.training
    model(**pixel_batch(three_examples())).loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.mgcm.vision_model.parameters())


@pytest.mark.parametrize(
    "vision_config",
    [
        ViTConfig(
            hidden_size=24,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            image_size=32,
            patch_size=8,
        ),
        CLIPVisionConfig(
            hidden_size=24,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            image_size=32,
            patch_size=8,
        ),
        ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2),
    ],
    ids=["vit", "clip-vision", "convnext"],
)
def test_patch_token_and_feature_map_backbones_read_pixels(tiny_text_config, vision_config):
    model = tiny_model(tiny_text_config, vision_config=vision_config, image_feature_dim=None)
    batch = pixel_batch(three_examples(image=1))
    model.train()
    output = model(**batch)
    output.loss.backward()
    assert model.mgcm.image_encoder.projection.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.mgcm.vision_model.parameters())


def test_pixel_values_give_the_same_logits_as_their_precomputed_features(
    tiny_text_config, tiny_resnet_config
):
    model = tiny_model(tiny_text_config, vision_config=tiny_resnet_config, image_feature_dim=None)
    batch = pixel_batch(three_examples(image=1))
    from_pixels = run(model, batch)
    features_batch = dict(batch)
    with torch.no_grad():
        features_batch["image_features"] = extract_image_features(
            model.mgcm.vision_model, features_batch.pop("pixel_values")
        )
    torch.testing.assert_close(run(model, features_batch).logits, from_pixels.logits, rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", ["none", "add", "gate", "attention"])
def test_each_augmentation_mode_trains_and_reads_the_neighbours(tiny_text_config, mode):
    model = tiny_model(tiny_text_config, augmentation_mode=mode)
    batch = build_batch(three_examples())
    model.train()
    model(**batch).loss.backward()
    if mode == "none":
        assert model.mgcm.augmentation is None
    else:
        assert all(
            p.grad is not None and p.grad.abs().sum() > 0 for p in model.mgcm.augmentation.parameters()
        )
    model.eval()
    shuffled = dict(batch, neighbour_vectors=torch.randn_like(batch["neighbour_vectors"]))
    changed = not torch.allclose(run(model, batch).logits, run(model, shuffled).logits)
    assert changed == (mode != "none")


@pytest.mark.parametrize("mode", ["add", "gate", "attention"])
def test_words_without_neighbours_keep_their_state(mode):
    torch.manual_seed(0)
    augmentation = MGCMSemanticAugmentation(mode, augmentation_dim=VECTOR_DIM, hidden_size=8)
    states = torch.randn(2, 4, 8)
    vectors = torch.randn(2, 4, NEIGHBOURS, VECTOR_DIM)
    weights = torch.rand(2, 4, NEIGHBOURS)
    weights[0, 1] = 0.0
    weights[1] = 0.0
    augmented = augmentation(states, vectors, weights)
    assert torch.equal(augmented[0, 1], states[0, 1]) and torch.equal(augmented[1], states[1])
    assert not torch.allclose(augmented[0, 0], states[0, 0])
    if mode == "add":
        averaged = (weights.unsqueeze(-1) * vectors).sum(-2)
        torch.testing.assert_close(augmented, states + averaged @ augmentation.projection.weight.T)
    if mode == "attention":
        # A neighbour with zero weight is not attended to, whatever its vector.
        weights[0, 0, 0] = 0.0
        reference = augmentation(states, vectors, weights)
        vectors[0, 0, 0] = 100.0
        torch.testing.assert_close(augmentation(states, vectors, weights), reference)


@pytest.mark.parametrize(
    "granularities",
    [(), ("image",), ("objects",), ("caption",), ("image", "caption"), ("image", "objects", "caption")],
)
def test_each_granularity_switches_on_and_off(tiny_text_config, granularities):
    switches = {f"use_{name}": name in granularities for name in ("image", "objects", "caption")}
    model = tiny_model(tiny_text_config, **switches)
    assert set(model.mgcm.cross_modal_blocks) == set(granularities)
    assert (model.mgcm.image_encoder is None) == ("image" not in granularities)
    assert (model.mgcm.object_encoder is None) == ("objects" not in granularities)
    batch = build_batch(three_examples())
    output = run(model, batch)
    assert set(output.gate_values) == set(granularities)
    # Inputs of switched-off granularities are ignored.
    switched_off = tuple(name for name in GRANULARITY_KEYS if name not in granularities)
    assert torch.equal(run(model, build_batch(three_examples(), without=switched_off)).logits, output.logits)
    model.train()
    model(**batch).loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_a_slim_cross_modal_width_projects_words_and_visual_tokens(tiny_text_config):
    model = tiny_model(tiny_text_config, cross_modal_hidden_size=8, num_cross_attention_heads=2)
    assert model.mgcm.word_projection.out_features == 8
    assert model.mgcm.image_encoder.projection.out_features == 8
    assert (model.mgcm.fusion.in_features, model.mgcm.fusion.out_features) == (3 * 8, 8)
    assert model.mgcm.text_visual_combination.in_features == tiny_text_config.hidden_size + 8
    model.train()
    model(**build_batch(three_examples())).loss.backward()
    assert model.mgcm.text_source_projection.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("detach", [True, False])
def test_a_detached_caption_pass_is_a_deterministic_feature_extraction(tiny_text_config, detach):
    text_config = copy.deepcopy(tiny_text_config)
    text_config.hidden_dropout_prob = 0.5
    model = tiny_model(text_config, detach_caption_encoding=detach, cross_modal_hidden_size=16).train()
    batch = build_batch(three_examples(caption=1))
    ids, mask = batch["caption_input_ids"], batch["caption_attention_mask"]
    first, _ = model.mgcm._text_source_tokens(ids, mask.bool())
    second, _ = model.mgcm._text_source_tokens(ids, mask.bool())
    # Detached: no dropout and no gradient into the encoder; otherwise the encoder trains on captions too.
    assert torch.equal(first, second) == detach
    assert model.mgcm.text_encoder.training
    assert (first[1] == 0).all()
    model.zero_grad()
    first.sum().backward()
    encoder_gradients = [p.grad for p in model.mgcm.text_encoder.parameters() if p.grad is not None]
    assert bool(encoder_gradients) != detach


def test_deeper_cross_attention_stacks_layers(tiny_text_config):
    model = tiny_model(tiny_text_config, num_cross_attention_layers=2)
    block = model.mgcm.cross_modal_blocks["image"]
    assert len(block.word_to_visual) == len(block.visual_to_word) == len(block.word_to_text_aware_visual) == 2
    assert torch.isfinite(run(model, build_batch(three_examples())).logits).all()


# ----------------------------------------------------------------------------------------------------------
# Losses


def test_the_loss_is_crf_nll_plus_half_the_span_crf_nll(tiny_text_config):
    model = tiny_model(tiny_text_config)
    batch = build_batch(three_examples(), extra_words=1)
    # B-PER I-PER O B-LOC I-LOC ... -> B I O B I
    batch["labels"][0, :5] = torch.tensor([1, 2, 0, 3, 4])
    with torch.no_grad():
        output = model(**batch)
        encoded = model.mgcm(**{k: v for k, v in batch.items() if k != "labels"})
        mask = batch["word_mask"].bool()
        span_labels = model._span_labels(batch["labels"], mask)
        span_logits = model.span_classifier(encoded.text_hidden_state)
        expected = (
            model.crf(output.logits, batch["labels"], mask).mean()
            + 0.5 * model.span_crf(span_logits, span_labels, mask).mean()
        )
    assert span_labels[0, :5].tolist() == [1, 2, 0, 1, 2]
    assert (span_labels[~mask] == -100).all()
    torch.testing.assert_close(output.loss, expected)


def test_without_crf_the_loss_is_cross_entropy_and_predictions_argmax(tiny_text_config):
    model = tiny_model(tiny_text_config, use_crf=False, aux_span_loss_weight=0.0)
    assert model.crf is None and model.span_classifier is None
    batch = build_batch(three_examples(), extra_words=1)
    with torch.no_grad():
        output = model(**batch)
    mask = batch["word_mask"].bool()
    torch.testing.assert_close(output.loss, F.cross_entropy(output.logits[mask], batch["labels"][mask]))
    assert torch.equal(output.predictions[mask], output.logits.argmax(-1)[mask])
    assert (output.predictions[~mask] == -100).all()


# ----------------------------------------------------------------------------------------------------------
# Saving, loading, Auto classes, pretrained backbones, remote code


def test_save_and_reload_gives_identical_logits(tiny_text_config, tiny_resnet_config, tmp_path):
    model = tiny_model(tiny_text_config, vision_config=tiny_resnet_config, image_feature_dim=None)
    batch = pixel_batch(three_examples(image=1, objects=2))
    model.save_pretrained(tmp_path)
    files = set(os.listdir(tmp_path))
    assert "model.safetensors" in files and not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    assert {"configuration_mgcm.py", "modeling_mgcm.py", "crf.py", "vision_features.py"} <= files
    saved_config = json.loads((tmp_path / "config.json").read_text())
    assert saved_config["auto_map"] == {
        "AutoConfig": "configuration_mgcm.MGCMConfig",
        "AutoModelForTokenClassification": "modeling_mgcm.MGCMForTokenClassification",
    }
    reloaded = AutoModelForTokenClassification.from_pretrained(tmp_path)
    assert type(reloaded) is MGCMForTokenClassification
    assert torch.equal(run(reloaded, batch).logits, run(model, batch).logits)
    # The backbone is still frozen after loading, and stays in eval mode in training.
    reloaded.train()
    assert not reloaded.mgcm.vision_model.training
    assert not any(p.requires_grad for p in reloaded.mgcm.vision_model.parameters())


def test_auto_classes_build_mgcm_from_its_config(tiny_text_config):
    config = mgcm_config(tiny_text_config)
    assert type(AutoModelForTokenClassification.from_config(config)) is MGCMForTokenClassification
    assert type(AutoModel.from_config(config)) is MGCMModel


def test_init_weights_covers_every_parameter(tiny_text_config):
    """Built on the meta device and materialised uninitialised (NaN), every parameter must be set by
    `initialize_weights`, as happens to weights missing from a checkpoint."""
    config = mgcm_config(tiny_text_config, cross_modal_hidden_size=16)
    with torch.device("meta"):
        model = MGCMForTokenClassification(config)
    model.to_empty(device="cpu")
    for tensor in list(model.parameters()):
        tensor.data.fill_(float("nan"))
    model.initialize_weights()
    uninitialised = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    assert uninitialised == []
    assert model.crf.transitions.abs().max() <= 0.1 and model.crf.transitions.std() > 0
    assert (model.classifier.bias == 0).all()
    assert (model.mgcm.object_encoder.embedding.weight[OBJECT_PADDING_ID] == 0).all()


def test_a_base_model_checkpoint_loads_under_the_tagging_head(tiny_text_config, tmp_path):
    torch.manual_seed(0)
    base = MGCMModel(mgcm_config(tiny_text_config))
    base.save_pretrained(tmp_path)
    tagger = MGCMForTokenClassification.from_pretrained(tmp_path)
    for name, tensor in base.state_dict().items():
        assert torch.equal(tagger.mgcm.state_dict()[name], tensor), name
    assert torch.isfinite(tagger.crf.transitions).all() and tagger.crf.transitions.abs().max() <= 0.1


def test_from_backbones_loads_pretrained_encoders(tiny_bert_dir, tiny_resnet_config, tmp_path):
    torch.manual_seed(1)
    ResNetModel(tiny_resnet_config).save_pretrained(tmp_path / "resnet")
    model = MGCMForTokenClassification.from_backbones(
        str(tiny_bert_dir),
        str(tmp_path / "resnet"),
        use_caption=True,
        object_labels=OBJECT_LABELS,
        augmentation_dim=VECTOR_DIM,
        num_neighbours=NEIGHBOURS,
    )
    text_reference = BertModel.from_pretrained(tiny_bert_dir).state_dict()
    text_loaded = model.mgcm.text_encoder.state_dict()
    assert set(text_loaded) == {name for name in text_reference if not name.startswith("pooler.")}
    assert all(torch.equal(text_loaded[name], text_reference[name]) for name in text_loaded)
    vision_reference = ResNetModel.from_pretrained(tmp_path / "resnet").state_dict()
    assert all(torch.equal(t, vision_reference[n]) for n, t in model.mgcm.vision_model.state_dict().items())
    assert model.config.image_feature_dim == tiny_resnet_config.hidden_sizes[-1]
    assert model.config.text_config._attn_implementation == "sdpa"
    assert not any(p.requires_grad for p in model.mgcm.vision_model.parameters())
    model.eval()
    assert torch.isfinite(run(model, pixel_batch(three_examples())).logits).all()
    with pytest.raises(ValueError, match="from_backbones takes text_config from the pretrained folder"):
        MGCMForTokenClassification.from_backbones(str(tiny_bert_dir), text_config={})


# ----------------------------------------------------------------------------------------------------------
# Input errors


def _set(key, value):
    def mutate(batch):
        batch[key] = value(batch)

    return mutate


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (
            _set("word_ids", lambda b: b["word_ids"].masked_fill(b["word_ids"] == 2, 9)),
            r"word_ids\[0, \d+\] = 9 but",
        ),
        (
            _set("word_ids", lambda b: b["word_ids"].masked_fill(b["word_ids"] == 2, -1)),
            r"word 2 of row 0 is a real word .* no piece has word_ids == 2",
        ),
        (
            _set("object_ids", lambda b: b["object_ids"].index_fill(1, torch.tensor([0]), 7)),
            r"object_ids\[0, 0\] = 7",
        ),
        (
            _set("word_shape_ids", lambda b: b["word_shape_ids"] + 20),
            r"word_shape_ids\[0, 0\] = \d+ is outside 0..11",
        ),
        (_set("neighbour_vectors", lambda b: None), r"augmentation_mode='gate' needs neighbour_vectors"),
        (_set("neighbour_vectors", lambda b: b["neighbour_vectors"][..., :4]), r"must be \(B, W, k, 6\)"),
        (
            _set("image_features", lambda b: b["image_features"][..., :5]),
            r"image_features must be \(B, R, 12\)",
        ),
        (_set("pixel_values", lambda b: torch.zeros(3, 3, 8, 8)), r"pass either pixel_values or precomputed"),
        (_set("labels", lambda b: b["labels"][:, :2]), r"labels have shape \(3, 2\), expected word-level"),
        (_set("word_shape_ids", lambda b: None), r"use_word_shape=True needs word_shape_ids"),
        (_set("caption_attention_mask", lambda b: None), r"caption_input_ids need caption_attention_mask"),
    ],
)
def test_bad_inputs_raise_errors_that_name_the_value(tiny_text_config, mutate, message):
    model = tiny_model(tiny_text_config)
    batch = build_batch(three_examples())
    mutate(batch)
    with pytest.raises(ValueError, match=message):
        model(**batch)


def test_pixel_values_without_a_vision_backbone_raise(tiny_text_config):
    model = tiny_model(tiny_text_config)
    batch = build_batch(three_examples(), without=("image",))
    batch["pixel_values"] = torch.zeros(3, 3, 8, 8)
    with pytest.raises(
        ValueError,
        match=r"no vision_config, so the model cannot read pixel_values: pass precomputed image_features \(B, R, 12\)",
    ):
        model(**batch)


# ----------------------------------------------------------------------------------------------------------
# One fixed graph: no host reads of tensor values in the forward


@pytest.mark.parametrize("training", [True, False], ids=["training", "inference"])
def test_the_forward_reads_no_tensor_value_on_the_host(tiny_text_config, training, monkeypatch):
    """A meta tensor has a shape and no values: reading one on the host (`bool()`, `.item()`, `int()`,
    `.tolist()`, `nonzero`) or branching on it raises. A forward that runs on the meta device is therefore
    one fixed graph, as it runs on a GPU: no synchronisation, and an absent input is a mask, not a branch.

    Only the encoder's mask builder is told not to look: transformers reads the padding mask on the host to
    skip an all-ones mask (its own choice, outside the MGCM layers, and skipped under torch.compile)."""
    monkeypatch.setattr(masking_utils, "_ignore_bidirectional_mask_sdpa", lambda *args, **kwargs: False)
    model = tiny_model(tiny_text_config).to("meta").train(training)
    examples = three_examples(image=1, objects=0, caption=2)
    batch = {key: value.to("meta") for key, value in build_batch(examples, extra_words=1).items()}
    output = model(**batch, output_attentions=not training)
    assert output.loss.shape == () and output.loss.device.type == "meta"
    assert output.logits.shape == (3, 7, model.config.num_labels)
    if not training:
        assert output.predictions.shape == (3, 7)
        assert set(output.granularity_attentions) == {"image", "objects", "caption"}
    without_inputs = {k: v for k, v in batch.items() if not k.startswith(("image", "object", "caption"))}
    assert model(**without_inputs).logits.shape == (3, 7, model.config.num_labels)


def test_the_fixed_shape_caption_pass_gives_the_grouped_pass_s_logits(tiny_text_config, monkeypatch):
    """Off the CPU the captions go through the encoder in one padded pass instead of length groups."""
    model = tiny_model(tiny_text_config).eval()
    batch = build_batch(three_examples(caption=1), extra_caption=3)
    grouped = run(model, batch).logits
    monkeypatch.setenv("MGCM_CHECK_INPUTS", "0")
    fixed = run(model, batch).logits
    torch.testing.assert_close(fixed, grouped, rtol=0, atol=1e-5)


def test_gradient_checkpointing_gives_the_same_loss_and_gradients(tiny_text_config):
    """Non-reentrant checkpointing (as `--gradient_checkpointing` turns it on) recomputes every attention
    layer, the encoder's and MGCM's, in the backward pass, and changes no number."""
    plain = tiny_model(tiny_text_config).train()
    checkpointed = copy.deepcopy(plain)
    checkpointed.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    batch = build_batch(three_examples(image=1, caption=2))
    calls, losses = {"plain": 0, "checkpointed": 0}, {}
    for name, model in (("plain", plain), ("checkpointed", checkpointed)):
        for module in model.modules():
            if type(module).__name__ == "MGCMAttention":
                module.register_forward_hook(lambda *_, name=name: calls.__setitem__(name, calls[name] + 1))
        torch.manual_seed(0)
        losses[name] = model(**batch).loss
        losses[name].backward()
    assert torch.equal(losses["checkpointed"], losses["plain"])
    assert calls["checkpointed"] == 2 * calls["plain"] > 0  # every MGCM attention layer ran again
    gradients = {name: p.grad for name, p in checkpointed.named_parameters() if p.requires_grad}
    for name, parameter in plain.named_parameters():
        if parameter.requires_grad:
            torch.testing.assert_close(gradients[name], parameter.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_eager_and_sdpa_attention_give_the_same_logits(tiny_text_config, tmp_path, monkeypatch):
    """`attn_implementation` reaches the MGCM attention layers through transformers' attention interface,
    as it reaches the encoder's: eager runs no SDPA kernel anywhere, sdpa runs one in every layer."""
    tiny_model(tiny_text_config).save_pretrained(tmp_path)
    batch = build_batch(three_examples(image=1, objects=0, caption=2))
    kernel_calls = []
    sdpa_kernel = F.scaled_dot_product_attention
    monkeypatch.setattr(
        F, "scaled_dot_product_attention", lambda *a, **k: kernel_calls.append(1) or sdpa_kernel(*a, **k)
    )
    logits, calls = {}, {}
    for implementation in ("eager", "sdpa"):
        model = MGCMForTokenClassification.from_pretrained(
            tmp_path, attn_implementation=implementation
        ).eval()
        assert model.mgcm.text_self_attention.attention.config._attn_implementation == implementation
        kernel_calls.clear()
        logits[implementation] = run(model, batch).logits
        calls[implementation] = len(kernel_calls)
    mgcm_layers = sum(type(m).__name__ == "MGCMAttention" for m in model.modules())
    assert calls["eager"] == 0 and calls["sdpa"] >= mgcm_layers + tiny_text_config.num_hidden_layers
    torch.testing.assert_close(logits["eager"], logits["sdpa"], rtol=0, atol=1e-5)
