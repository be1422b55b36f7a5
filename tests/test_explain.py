"""Tests for `processing.explain`: the numbers behind the figure, the figure, its PNG and HTML files."""

import base64
import copy
import io
import itertools
import re
import warnings

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba
from PIL import Image
from transformers import AutoModelForTokenClassification, AutoProcessor, ViTConfig, pipeline

import modeling_mgcm  # noqa: F401  (registers the Auto classes)
import processing
from modeling_mgcm import MGCMConfig, MGCMForTokenClassification
from processing import LABEL_TO_ID, ImageLoadError, MGCMProcessor, merge_windows
from processing.explanations import (
    GRANULARITY_COLOURS,
    MAX_CAPTION_WORDS_DRAWN,
    draw_explanation,
    explain,
    explain_post,
    figure_size,
    image_region_grid,
    render_html,
)
from processing.testing.tiny_backbones import build_corpus_tokenizer, tiny_image_processor, tiny_text_config

OBJECTS = [{"label": "car", "score": 0.4}, {"label": "person", "score": 0.9}, {"label": "dog", "score": 0.7}]
CAPTION = "a person in the photo"  # each word is whole in the tiny vocabulary
KNOWLEDGE = "Obama visits Paris with the person in the photo"  # 9 words, each whole
KNOWLEDGE_LENGTH = 8  # knowledge pieces read, [CLS] and [SEP] included: the first 6 words


def _force_tags(model: MGCMForTokenClassification, first: str, second: str) -> None:
    """Make the CRF's Viterbi path `first second O O ...` whatever the emissions' (zeroed) scores."""
    with torch.no_grad():
        model.classifier.weight.zero_()
        model.classifier.bias.zero_()
        crf = model.crf
        crf.start_transitions.fill_(-10.0)
        crf.start_transitions[LABEL_TO_ID[first]] = 10.0
        crf.transitions.fill_(-10.0)
        crf.transitions[LABEL_TO_ID[first], LABEL_TO_ID[second]] = 10.0
        crf.transitions[LABEL_TO_ID[second], LABEL_TO_ID["O"]] = 10.0
        crf.transitions[LABEL_TO_ID["O"], LABEL_TO_ID["O"]] = 10.0
        crf.end_transitions.zero_()


@pytest.fixture(scope="module")
def tagger(tiny_mgcm_dir):
    """The tiny full-featured model, with a CRF that tags the first two words of any post as one PER."""
    model = AutoModelForTokenClassification.from_pretrained(tiny_mgcm_dir).eval()
    _force_tags(model, "B-PER", "I-PER")
    return model, AutoProcessor.from_pretrained(tiny_mgcm_dir)


@pytest.fixture(scope="module")
def red_image():
    image = Image.new("RGB", (80, 60), (200, 30, 30))
    image.paste((30, 30, 200), (0, 0, 40, 30))
    return image


def full_post(image) -> dict:
    return {
        "words": ["Obama", "Phoenix", "visits", "the", "photo"],
        "image": image,
        "caption": CAPTION,
        "objects": OBJECTS,
    }


# --------------------------------------------------------------------------------------------------
# The numbers


def test_entity_gates_attention_and_scores_are_the_models_own(tagger, red_image):
    model, processor = tagger
    post = full_post(red_image)
    explanation = explain_post(tagger, post)

    inputs = processor(
        words=[post["words"]], images=[red_image], objects=[OBJECTS], captions=[CAPTION], return_tensors="pt"
    )
    for name in ("overflow_to_sample_mapping", "window_word_offset"):
        inputs.pop(name)
    with torch.no_grad():
        output = model(**inputs, output_attentions=True)
        marginals = model.crf.marginals(output.logits, inputs["word_mask"].bool())[0]

    assert explanation.tags == ["B-PER", "I-PER", "O", "O", "O"]
    [entity] = explanation.entities
    assert (entity.entity_group, entity.word_start, entity.word_end, entity.text) == (
        "PER",
        0,
        2,
        "Obama Phoenix",
    )
    expected_score = (marginals[0, LABEL_TO_ID["B-PER"]] + marginals[1, LABEL_TO_ID["I-PER"]]) / 2
    assert entity.score == pytest.approx(float(expected_score), abs=1e-6)
    assert set(entity.gate_values) == {"image", "objects", "caption"}
    for name, gate in entity.gate_values.items():
        assert gate == pytest.approx(float(output.gate_values[name][0, :2].mean()), abs=1e-6)
        np.testing.assert_allclose(
            explanation.gate_values[name], output.gate_values[name][0].numpy(), atol=1e-6
        )

    image_attention = output.granularity_attentions["image"][0, :2].mean(0).numpy()
    np.testing.assert_allclose(entity.attention["image"], image_attention, atol=1e-6)
    assert explanation.region_grid == (0, 8, 8)  # the tiny ResNet's 8x8 grid over a 64x64 input
    assert explanation.model_image.shape == (64, 64, 3)
    assert explanation.model_image.min() >= 0.0 and explanation.model_image.max() <= 1.0
    # The model's view of the image: its blue top-left quarter is still blue after un-normalising.
    assert explanation.model_image[:8, :8, 2].mean() > 0.7 > explanation.model_image[:8, :8, 0].mean()

    # Objects in the order the model saw them: highest score first.
    assert explanation.object_labels == ["person", "dog", "car"]
    np.testing.assert_allclose(
        entity.attention["objects"],
        output.granularity_attentions["objects"][0, :2, :3].mean(0).numpy(),
        atol=1e-6,
    )

    # Caption pieces are summed per word; the remainder sits on [CLS] and [SEP].
    assert explanation.caption_words == CAPTION.split()
    caption_pieces = output.granularity_attentions["caption"][0, :2].mean(0).numpy()
    assert len(caption_pieces) == len(CAPTION.split()) + 2  # the tiny vocabulary holds each word whole
    np.testing.assert_allclose(entity.attention["caption"], caption_pieces[1:-1], atol=1e-6)


def test_caption_words_split_into_several_pieces_get_the_sum_of_their_pieces(tagger):
    model, processor = tagger
    caption = "skyscrapers downtown"  # not in the tiny vocabulary: spelled in characters
    explanation = explain_post(tagger, {"words": ["Obama", "Phoenix", "visits"], "caption": caption})
    encoding = processor.tokenizer(caption)
    inputs = processor(words=[["Obama", "Phoenix", "visits"]], captions=[caption], return_tensors="pt")
    for name in ("overflow_to_sample_mapping", "window_word_offset"):
        inputs.pop(name)
    with torch.no_grad():
        pieces = (
            model(**inputs, output_attentions=True).granularity_attentions["caption"][0, :2].mean(0).numpy()
        )
    word_ids = encoding.word_ids()
    expected = [sum(pieces[i] for i, word in enumerate(word_ids) if word == w) for w in (0, 1)]
    assert explanation.caption_words == ["skyscrapers", "downtown"]
    np.testing.assert_allclose(explanation.entities[0].attention["caption"], expected, atol=1e-6)


def test_raw_text_is_split_like_the_pipeline_and_highlighted_in_the_original_string(tagger):
    text = "@Obama \n #Phoenix\tvisits <b>x</b> 🎉"
    explanation = explain_post(tagger, {"text": text})
    assert explanation.words[:2] == ["@Obama", "#Phoenix"]
    assert (
        explanation.entities[0].text == "@Obama \n #Phoenix"
    )  # as the pipeline's "word": a slice of the text
    assert all(
        text[start:end] == word
        for word, (start, end) in zip(explanation.words, explanation.word_offsets, strict=True)
    )
    page = render_html(explanation, b"png")
    # The entity keeps the original spacing between its words; markup in the tweet is escaped.
    assert re.search(r"<mark [^>]*>@Obama \n #Phoenix<sup>PER</sup></mark>", page)
    assert "&lt;b&gt;" in page and "<b>" not in page
    assert "🎉" in page
    # The figure lays the words out on one line, single-spaced.
    drawn = [text.get_text() for text in draw_explanation(explanation, dpi=30).texts]
    assert "@Obama #Phoenix" in drawn and "🎉" in drawn


def test_a_post_longer_than_one_window_gets_one_value_per_word(tagger):
    model, processor = tagger
    words = ["Obama", "Phoenix"] + ["visits", "the", "photo", "person"] * 12
    explanation = explain_post(tagger, {"words": words, "caption": CAPTION})
    inputs = processor(words=[words], captions=[CAPTION], return_tensors="pt")
    assert len(inputs["input_ids"]) > 1  # several windows
    mapping, offsets = inputs.pop("overflow_to_sample_mapping"), inputs.pop("window_word_offset")
    with torch.no_grad():
        output = model(**inputs, output_attentions=True)
    counts = inputs["word_mask"].sum(1)
    expected_gates = merge_windows(output.gate_values["caption"], mapping, offsets, counts)[0]
    assert len(explanation.tags) == len(words)
    assert explanation.attention["caption"].shape == (len(words), len(CAPTION.split()))
    np.testing.assert_allclose(explanation.gate_values["caption"], expected_gates, atol=1e-6)
    assert [entity.text for entity in explanation.entities] == ["Obama Phoenix"]


def test_inputs_the_config_does_not_use_are_left_out(tiny_mgcm_dir, red_image):
    model = AutoModelForTokenClassification.from_pretrained(tiny_mgcm_dir)
    processor = AutoProcessor.from_pretrained(tiny_mgcm_dir)
    config = copy.deepcopy(model.config)
    config.use_image = False
    config.use_objects = False
    text_and_caption = MGCMForTokenClassification(config).eval()
    # As the pipeline: each kind of input the model ignores is named in a warning.
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        explanation = explain_post(text_and_caption, full_post(red_image), processor=processor)
    assert {str(warning.message) for warning in caught} == {
        "this MGCM model does not use images: they are ignored",
        "this MGCM model does not use detected objects: they are ignored",
    }
    assert set(explanation.attention) == {"caption"}
    assert explanation.model_image is None and explanation.object_labels == []


def test_the_models_training_mode_is_restored_and_dropout_is_off_while_explaining(tiny_mgcm_dir, red_image):
    model = AutoModelForTokenClassification.from_pretrained(tiny_mgcm_dir)
    processor = AutoProcessor.from_pretrained(tiny_mgcm_dir)
    model.config.hidden_dropout_prob = 0.5
    model.dropout.p = 0.5
    model.train()
    first = explain_post((model, processor), full_post(red_image))
    second = explain_post((model, processor), full_post(red_image))
    assert model.training
    np.testing.assert_array_equal(first.tag_probabilities, second.tag_probabilities)


# --------------------------------------------------------------------------------------------------
# The image grid


@pytest.mark.parametrize(
    ("num_regions", "height", "width", "expected"),
    [
        (64, 64, 64, (0, 8, 8)),  # tiny ResNet
        (49, 224, 224, (0, 7, 7)),  # ResNet-152, ConvNeXt, Swin
        (50, 224, 224, (1, 7, 7)),  # ViT-B/32 with its CLS token
        (197, 224, 224, (1, 14, 14)),  # ViT-B/16, CLIP ViT-B/16
        (12, 96, 128, (0, 3, 4)),  # a CNN on a landscape image
        (281, 224, 320, (1, 14, 20)),  # a ViT on a landscape image
        (1, 64, 64, (0, 1, 1)),  # a pooled feature
    ],
)
def test_region_grid_is_recovered_from_the_number_of_regions(num_regions, height, width, expected):
    assert image_region_grid(num_regions, height, width) == expected


@pytest.mark.parametrize(("num_regions", "height", "width"), [(13, 64, 64), (11, 64, 64), (0, 64, 64)])
def test_region_counts_that_are_no_grid_of_the_image_are_refused(num_regions, height, width):
    with pytest.raises(ValueError, match=f"{num_regions}"):
        image_region_grid(num_regions, height, width)


def test_a_vit_backbones_cls_token_is_dropped_from_the_heatmap(red_image):
    tokenizer = build_corpus_tokenizer(["Obama", "visits"])
    vision = ViTConfig(
        image_size=32,
        patch_size=8,
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
    )
    config = MGCMConfig(
        text_config=tiny_text_config(len(tokenizer), hidden_size=32),
        vision_config=vision,
        use_image=True,
        use_objects=False,
        use_caption=False,
        augmentation_mode="none",
    )
    torch.manual_seed(0)
    model = MGCMForTokenClassification(config).eval()
    _force_tags(model, "B-LOC", "I-LOC")
    processor = MGCMProcessor(tokenizer=tokenizer, image_processor=tiny_image_processor(32), max_length=16)
    explanation = explain_post((model, processor), {"words": ["Obama", "visits", "x"], "image": red_image})
    assert explanation.region_grid == (1, 4, 4)  # 16 patches of 8x8 pixels after the CLS token
    assert explanation.attention["image"].shape == (3, 17)
    figure = draw_explanation(explanation, dpi=30)
    [image_axes] = [axes for axes in figure.axes if axes.images]
    heat = image_axes.images[1].get_array()
    assert heat.shape[:2] == (4, 4)
    assert "CLS" in image_axes.get_title(loc="left")


# --------------------------------------------------------------------------------------------------
# The figure and its files


def test_explain_writes_a_png_of_the_figure_size_and_a_self_contained_html_page(tagger, red_image, tmp_path):
    output = tmp_path / "explanation.png"
    figure = processing.explain(tagger, full_post(red_image), output, figsize=(8.0, 5.0), dpi=50)
    png = output.read_bytes()
    with Image.open(output) as written:
        assert written.format == "PNG"
        assert written.size == (400, 250)
    assert tuple(figure.get_size_inches()) == (8.0, 5.0)

    page = (tmp_path / "explanation.html").read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert re.search(r"<mark [^>]*>Obama Phoenix<sup>PER</sup></mark>", page)
    assert "<td>Obama Phoenix</td>" in page
    [inlined] = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert base64.b64decode(inlined) == png
    # Self-contained: nothing is fetched from anywhere.
    assert not re.search(r'(src|href)="(?!data:)', page)
    # Written atomically: no temporary file is left beside the results.
    assert sorted(path.name for path in tmp_path.iterdir()) == ["explanation.html", "explanation.png"]


def test_default_figure_is_12_inches_wide_and_grows_with_the_entities(tagger, red_image, tmp_path):
    explanation = explain_post(tagger, full_post(red_image))
    width, height = figure_size(explanation)
    assert width == 12.0
    explain(tagger, full_post(red_image), tmp_path / "one.png", dpi=40)
    with Image.open(tmp_path / "one.png") as written:
        assert written.size[0] == 480 and abs(written.size[1] - height * 40) < 1

    two_entities = copy.deepcopy(explanation)
    second = copy.deepcopy(explanation.entities[0])
    second.word_start, second.word_end, second.text = 3, 4, "the"
    two_entities.entities.append(second)
    assert figure_size(two_entities)[1] > height
    figure = draw_explanation(two_entities, dpi=40)
    # One gate, image, objects and caption panel per entity.
    assert len(figure.axes) == 8
    assert sum(bool(axes.images) for axes in figure.axes) == 2


def test_text_only_post_has_no_image_panel_and_no_gates(tagger, tmp_path):
    figure = explain(tagger, {"text": "Obama Phoenix visits"}, tmp_path / "text.png", dpi=40)
    explanation = explain_post(tagger, {"text": "Obama Phoenix visits"})
    assert explanation.gate_values == {} and explanation.attention == {}
    assert explanation.entities[0].text == "Obama Phoenix"
    assert len(figure.axes) == 1 and not figure.axes[0].images
    page = (tmp_path / "text.html").read_text(encoding="utf-8")
    assert "Obama Phoenix" in page and "gate image" not in page
    with Image.open(tmp_path / "text.png") as written:
        assert np.all(np.abs(np.array(written.size) - figure.get_size_inches() * 40) < 1)


def test_post_with_caption_only_draws_gates_and_caption_attention(tagger):
    figure = explain(tagger, {"words": ["Obama", "Phoenix", "visits"], "caption": CAPTION}, dpi=40)
    titles = [axes.get_title(loc="left") for axes in figure.axes]
    assert titles == ["gate per granularity", "attention over caption words"]
    assert [label.get_text() for label in figure.axes[1].get_yticklabels()] == CAPTION.split()


def test_a_post_with_no_entity_still_draws_the_tweet(tiny_mgcm_dir, tmp_path):
    model = AutoModelForTokenClassification.from_pretrained(tiny_mgcm_dir).eval()
    _force_tags(model, "O", "O")
    processor = AutoProcessor.from_pretrained(tiny_mgcm_dir)
    figure = explain((model, processor), {"words": ["visits", "the", "photo"]}, tmp_path / "none.png", dpi=40)
    texts = [text.get_text() for text in figure.texts]
    assert "no entity predicted" in texts and "visits" in texts
    assert "No entity predicted." in (tmp_path / "none.html").read_text(encoding="utf-8")


def test_entities_beyond_max_entities_are_left_to_the_html_page(tagger, red_image):
    explanation = explain_post(tagger, full_post(red_image))
    extra = copy.deepcopy(explanation.entities[0])
    extra.word_start, extra.word_end, extra.text = 3, 4, "the"
    explanation.entities.append(extra)
    figure = draw_explanation(explanation, dpi=30, max_entities=1)
    assert len(figure.axes) == 4
    assert any("1 more entities" in text.get_text() for text in figure.texts)
    assert "<td>the</td>" in render_html(explanation, b"")


def test_long_posts_captions_and_notes_stay_inside_the_figure(tagger, red_image, tmp_path):
    post = {
        "text": "Obama Phoenix " + "visits the photograph with everyone 🎉 " * 10,
        "image": red_image,
        "caption": "a person in the photo with the person " * 8,  # more than max_caption_length pieces
        "objects": OBJECTS,
    }
    explanation = explain_post(tagger, post)
    assert explanation.caption.endswith(" …")
    assert explanation.caption[:-2].split() == explanation.caption_words  # what the model read
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        figure = explain(tagger, post, tmp_path / "long.png", dpi=40, note="Model: a tiny random one. " * 12)
    assert not [warning for warning in caught if "Glyph" in str(warning.message)]  # emoji are boxes, quietly
    renderer = figure.canvas.get_renderer()
    lines = {round(text.get_position()[1], 3) for text in figure.texts if text.get_text() == "photograph"}
    assert len(lines) > 1  # the tweet wraps
    assert sum(text.get_text().startswith("caption: ") for text in figure.texts) == 1
    for text in figure.texts:
        extent = text.get_window_extent(renderer)
        assert extent.x0 >= 0 and extent.x1 <= figure.bbox.width, text.get_text()
        assert extent.y0 >= 0 and extent.y1 <= figure.bbox.height, text.get_text()

    # The caption panel keeps the most attended words, in caption order, with labels that do not overlap.
    caption_axes = next(
        axes for axes in figure.axes if axes.get_title(loc="left").startswith("attention over caption")
    )
    labels = caption_axes.get_yticklabels()
    assert len(labels) == MAX_CAPTION_WORDS_DRAWN
    weights = explanation.entities[0].attention["caption"]
    kept = np.sort(np.argsort(-weights, kind="stable")[:MAX_CAPTION_WORDS_DRAWN])
    assert [label.get_text() for label in labels] == [explanation.caption_words[index] for index in kept]
    boxes = sorted((label.get_window_extent(renderer) for label in labels), key=lambda box: box.y0)
    assert all(lower.y1 <= upper.y0 + 0.5 for lower, upper in zip(boxes, boxes[1:], strict=False))


def test_a_note_is_wrapped_at_the_foot_of_the_figure_and_added_to_the_html(tagger):
    explanation = explain_post(tagger, {"text": "Obama Phoenix visits"})
    note = "Model: trained on the synthetic corpus with tiny random backbones & <no> real data. " * 4
    figure = draw_explanation(explanation, dpi=40, note=note)
    texts = figure.texts
    footer = next(
        texts[-count:]
        for count in range(1, len(texts) + 1)
        if " ".join(text.get_text() for text in texts[-count:]).split() == note.split()
    )
    assert len(footer) >= 2  # too long for one line of a 12-inch figure
    renderer = figure.canvas.get_renderer()
    assert all(text.get_window_extent(renderer).x1 <= figure.bbox.width for text in footer)
    assert figure_size(explanation, note=note)[1] > figure_size(explanation)[1]
    assert f"<p>{note.replace('&', '&amp;').replace('<', '&lt;').replace('>', '&gt;')}</p>" in render_html(
        explanation, b"", note=note
    )
    with pytest.raises(TypeError, match="note must be a string"):
        draw_explanation(explanation, note=3)


def test_a_pipeline_gives_the_same_entities_and_scores_as_its_own_output(tiny_mgcm_dir, red_image):
    model = AutoModelForTokenClassification.from_pretrained(tiny_mgcm_dir).eval()
    _force_tags(model, "B-ORG", "I-ORG")
    tagger = pipeline("multimodal-ner", model=model, processor=AutoProcessor.from_pretrained(tiny_mgcm_dir))
    post = {
        "text": "@Obama #Phoenix visits the photo 🎉",
        "image": red_image,
        "caption": CAPTION,
        "objects": OBJECTS,
    }
    [predicted] = tagger(post)
    [entity] = explain_post(tagger, post).entities
    assert (entity.entity_group, entity.word_start, entity.word_end) == (
        predicted["entity_group"],
        predicted["word_start"],
        predicted["word_end"],
    )
    assert entity.text == predicted["word"] == "@Obama #Phoenix"
    assert entity.score == pytest.approx(predicted["score"], abs=1e-5)
    words = tagger(post, aggregation="words")["words"]
    explanation = explain_post(tagger, post)
    for name in ("image", "objects", "caption"):
        np.testing.assert_allclose(
            explanation.gate_values[name], [word["gates"][name] for word in words], atol=1e-5
        )


def test_posts_in_the_pipelines_forms_are_read_alike(tagger, red_image):
    as_words = explain_post(tagger, {"words": ["Obama", "Phoenix", "visits"], "objects": ["person", "dog"]})
    as_list = explain_post(tagger, {"text": ["Obama", "Phoenix", "visits"], "objects": ["person", "dog"]})
    as_text = explain_post(tagger, "Obama Phoenix visits")
    assert as_words.words == as_list.words == as_text.words
    assert as_words.object_labels == ["person", "dog"]  # plain labels keep their order
    np.testing.assert_array_equal(as_words.tag_probabilities, as_list.tag_probabilities)
    buffer = io.BytesIO()
    red_image.save(buffer, format="PNG")
    from_bytes = explain_post(tagger, {"text": "Obama Phoenix", "image": buffer.getvalue()})
    from_pil = explain_post(tagger, {"text": "Obama Phoenix", "image": red_image})
    np.testing.assert_allclose(from_bytes.attention["image"], from_pil.attention["image"], atol=1e-6)


def test_words_with_spaces_and_empty_words_are_read_as_the_pipeline_reads_them(tagger):
    model, processor = tagger
    words = ["Obama", "new york", "", "visits"]
    explanation = explain_post(tagger, {"words": words})
    reference = pipeline("multimodal-ner", model=model, processor=processor)(
        {"text": words}, aggregation="words"
    )
    assert explanation.words == words == [word["word"] for word in reference["words"]]
    assert explanation.text == reference["text"] == "Obama new york  visits"
    assert explanation.word_offsets == [(word["start"], word["end"]) for word in reference["words"]]
    assert explanation.tags == [word["tag"] for word in reference["words"]]
    assert [entity.text for entity in explanation.entities] == ["Obama new york"]
    drawn = [text.get_text() for text in draw_explanation(explanation, dpi=30).texts]
    assert "Obama new york" in drawn


def test_a_pipelines_own_options_apply(tagger, red_image, tmp_path):
    model, processor = tagger
    red_image.save(tmp_path / "photo.png")
    with_folder = pipeline("multimodal-ner", model=model, processor=processor, image_dir=str(tmp_path))
    explanation = explain_post(with_folder, {"text": "Obama Phoenix", "image": "photo.png"})
    from_pil = explain_post(tagger, {"text": "Obama Phoenix", "image": red_image})
    np.testing.assert_allclose(explanation.attention["image"], from_pil.attention["image"], atol=1e-6)
    assert not with_folder.model.training
    with pytest.raises(ImageLoadError, match="photo.png"):
        explain_post(tagger, {"text": "Obama Phoenix", "image": "photo.png"})


def test_a_bare_model_takes_its_processor_as_a_keyword(tagger, red_image):
    model, processor = tagger
    from_model = explain_post(model, full_post(red_image), processor=processor)
    from_pair = explain_post(tagger, full_post(red_image))
    assert from_model.entities[0].gate_values == from_pair.entities[0].gate_values


# --------------------------------------------------------------------------------------------------
# Other text sources


def _text_source_tagger(
    tiny_mgcm_dir, text_sources: list[str], shared: bool = False, force_tags: bool = True, **processor_options
) -> tuple[MGCMForTokenClassification, MGCMProcessor]:
    """The tiny model with `text_sources` (with `force_tags` its CRF tags the first two words as one PER)
    and its processor with `processor_options`."""
    saved = AutoProcessor.from_pretrained(tiny_mgcm_dir)
    config = copy.deepcopy(AutoModelForTokenClassification.from_pretrained(tiny_mgcm_dir).config)
    config.text_sources = text_sources
    config.share_text_source_block = shared
    torch.manual_seed(0)
    model = MGCMForTokenClassification(config).eval()
    if force_tags:
        _force_tags(model, "B-PER", "I-PER")
    processor = MGCMProcessor(
        tokenizer=saved.tokenizer,
        image_processor=saved.image_processor,
        neighbour_table=saved.neighbour_table,
        object_labels=saved.object_labels,
        max_length=saved.max_length,
        stride=saved.stride,
        **processor_options,
    )
    return model, processor


@pytest.fixture(scope="module", params=[False, True], ids=["own-blocks", "shared-block"])
def knowledge_tagger(request, tiny_mgcm_dir):
    """A model reading the caption and knowledge, with a block per source or one shared block."""
    return _text_source_tagger(
        tiny_mgcm_dir,
        ["caption", "knowledge"],
        shared=request.param,
        text_source_max_lengths={"knowledge": KNOWLEDGE_LENGTH},
    )


def knowledge_post(image) -> dict:
    return {**full_post(image), "knowledge": KNOWLEDGE}


def test_each_entity_gets_attention_over_the_knowledge_words_it_read(knowledge_tagger, red_image):
    model, processor = knowledge_tagger
    assert ("text_sources" in model.mgcm.cross_modal_blocks) == model.config.share_text_source_block
    explanation = explain_post(knowledge_tagger, knowledge_post(red_image))

    inputs = processor(
        words=[full_post(red_image)["words"]],
        images=[red_image],
        objects=[OBJECTS],
        text_sources={"caption": [CAPTION], "knowledge": [KNOWLEDGE]},
        return_tensors="pt",
    )
    for name in ("overflow_to_sample_mapping", "window_word_offset"):
        inputs.pop(name)
    with torch.no_grad():
        output = model(**inputs, output_attentions=True)

    read = KNOWLEDGE.split()[: KNOWLEDGE_LENGTH - 2]
    assert explanation.source_words["knowledge"] == read
    assert explanation.source_texts["knowledge"] == " ".join(read) + " …"
    [entity] = explanation.entities
    assert set(entity.gate_values) == {"image", "objects", "caption", "knowledge"}
    assert entity.gate_values["knowledge"] == pytest.approx(
        float(output.gate_values["knowledge"][0, :2].mean()), abs=1e-6
    )
    assert entity.attention["knowledge"].shape == (len(read),)
    knowledge_pieces = output.granularity_attentions["knowledge"][0, :2].mean(0).numpy()
    np.testing.assert_allclose(entity.attention["knowledge"], knowledge_pieces[1:-1], atol=1e-6)
    # The caption is explained alike, beside it.
    assert explanation.caption_words == explanation.source_words["caption"] == CAPTION.split()
    caption_pieces = output.granularity_attentions["caption"][0, :2].mean(0).numpy()
    np.testing.assert_allclose(entity.attention["caption"], caption_pieces[1:-1], atol=1e-6)


def test_the_figure_and_the_page_have_the_knowledge(knowledge_tagger, red_image, tmp_path):
    figure = explain(knowledge_tagger, knowledge_post(red_image), tmp_path / "knowledge.png", dpi=40)
    titles = [axes.get_title(loc="left") for axes in figure.axes]
    assert titles[0] == "gate per granularity" and titles[3:] == [
        "attention over caption words",
        "attention over knowledge words",
    ]
    read = KNOWLEDGE.split()[: KNOWLEDGE_LENGTH - 2]
    assert [label.get_text() for label in figure.axes[4].get_yticklabels()] == read
    # A colour of its own, in the gate panel and in its bar panel.
    [knowledge_colour] = {bar.get_facecolor() for bar in figure.axes[4].patches}
    gate_colours = [bar.get_facecolor() for bar in figure.axes[0].patches]
    assert gate_colours[3] == knowledge_colour and len(set(gate_colours)) == 4
    texts = [text.get_text() for text in figure.texts]
    assert f"knowledge: {' '.join(read)} …" in texts
    page = (tmp_path / "knowledge.html").read_text(encoding="utf-8")
    assert f"<b>knowledge</b>: {' '.join(read)} …</p>" in page and "<th>gate knowledge</th>" in page


def test_a_post_without_knowledge_has_no_knowledge_attention(knowledge_tagger, red_image):
    explanation = explain_post(knowledge_tagger, {**knowledge_post(red_image), "knowledge": "  "})
    assert set(explanation.attention) == {"image", "objects", "caption"}
    assert "knowledge" not in explanation.gate_values and "knowledge" not in explanation.source_words
    assert "knowledge" not in explanation.entities[0].attention
    figure = draw_explanation(explanation, dpi=30)
    assert not any("knowledge" in axes.get_title(loc="left") for axes in figure.axes)
    assert not any(text.get_text().startswith("knowledge:") for text in figure.texts)


def test_a_long_knowledge_text_is_cut_in_the_figure_and_whole_in_the_page(tiny_mgcm_dir, red_image):
    tagger = _text_source_tagger(
        tiny_mgcm_dir, ["caption", "knowledge"], text_source_max_lengths={"knowledge": 400}
    )
    knowledge = "Obama visits Paris with the person in the photo " * 30
    explanation = explain_post(tagger, {**knowledge_post(red_image), "knowledge": knowledge})
    assert explanation.source_texts["knowledge"] == knowledge.strip()  # read whole
    assert explanation.entities[0].attention["knowledge"].shape == (270,)
    figure = draw_explanation(explanation, dpi=40)
    # The knowledge's detail lines: the header's last lines, down to the first entity's bold words.
    start = next(
        index for index, text in enumerate(figure.texts) if text.get_text().startswith("knowledge: ")
    )
    lines = list(itertools.takewhile(lambda text: text.get_fontweight() != "bold", figure.texts[start:]))
    assert len(lines) == 3 and lines[-1].get_text().endswith(" …")
    renderer = figure.canvas.get_renderer()
    assert all(line.get_window_extent(renderer).x1 <= figure.bbox.width for line in lines)
    knowledge_axes = next(axes for axes in figure.axes if "knowledge" in axes.get_title(loc="left"))
    assert len(knowledge_axes.get_yticklabels()) == MAX_CAPTION_WORDS_DRAWN
    assert knowledge.strip() in render_html(explanation, b"")


def test_a_caption_read_as_a_text_segment_has_no_attention_but_reaches_the_model(tiny_mgcm_dir):
    # Untrained emissions, so that the tags' probabilities show whether the caption was read.
    model, processor = _text_source_tagger(tiny_mgcm_dir, [], force_tags=False, caption_as_text_segment=True)
    words = ["Obama", "Phoenix", "visits"]
    explanation = explain_post((model, processor), {"words": words, "caption": CAPTION})
    assert explanation.attention == {} and explanation.caption is None and explanation.caption_words == []
    inputs = processor(words=[words], captions=[CAPTION], return_tensors="pt")
    for name in ("overflow_to_sample_mapping", "window_word_offset"):
        inputs.pop(name)
    with torch.no_grad():
        marginals = model.crf.marginals(model(**inputs).logits, inputs["word_mask"].bool())[0]
    expected = marginals[torch.arange(3), [LABEL_TO_ID[tag] for tag in explanation.tags]].numpy()
    np.testing.assert_allclose(explanation.tag_probabilities, expected, atol=1e-6)
    without_caption = explain_post((model, processor), {"words": words})
    assert not np.allclose(without_caption.tag_probabilities, explanation.tag_probabilities)


def test_text_sources_beyond_the_caption_take_further_colours_in_order(tiny_mgcm_dir):
    model, processor = _text_source_tagger(
        tiny_mgcm_dir, ["knowledge", "caption", "ocr"], text_source_max_lengths={"knowledge": 8, "ocr": 8}
    )
    post = {"words": ["Obama", "Phoenix", "visits"], "caption": CAPTION, "knowledge": "Paris", "ocr": "photo"}
    explanation = explain_post((model, processor), post)
    assert list(explanation.gate_values) == list(explanation.attention) == ["knowledge", "caption", "ocr"]
    figure = draw_explanation(explanation, dpi=30)
    assert [axes.get_title(loc="left") for axes in figure.axes[1:]] == [
        f"attention over {name} words" for name in ("knowledge", "caption", "ocr")
    ]
    gate_colours = [bar.get_facecolor() for bar in figure.axes[0].patches]
    assert len(set(gate_colours)) == 3 and gate_colours[1] == to_rgba(GRANULARITY_COLOURS["caption"])
    # Further sources' colours follow the model's order, whatever the post holds.
    [ocr_colour] = {bar.get_facecolor() for bar in figure.axes[3].patches}
    without_knowledge = draw_explanation(
        explain_post((model, processor), {**post, "knowledge": None}), dpi=30
    )
    assert {bar.get_facecolor() for bar in without_knowledge.axes[2].patches} == {ocr_colour}


# --------------------------------------------------------------------------------------------------
# Wrong inputs


@pytest.mark.parametrize(
    ("post", "error", "message"),
    [
        (3, TypeError, "a post is a string or a dict"),
        ({"text": "Obama", "words": ["Obama"]}, ValueError, "exactly one of 'text'"),
        ({"caption": "a person"}, ValueError, "exactly one of 'text'"),
        ({"text": "Obama", "imgae": "x.jpg"}, ValueError, r"unknown post keys \['imgae'\]"),
        ({"text": "Obama", "image_id": "16_05_01_127"}, ValueError, "not its cached features' 'image_id'"),
        ({"text": 3}, TypeError, r"'text' must be a string or a list of words \(strings\), got 3"),
        ({"text": "  \t "}, ValueError, "no words"),
        ({"words": "Obama visits"}, TypeError, r"post\['words'\] must be a list of words, got str"),
        ({"words": ["Obama", 3]}, TypeError, r"'text' must be a string or a list of words"),
        ({"text": "Obama", "image": 3}, TypeError, "an image must be a path, an http"),
        ({"text": "Obama", "caption": ["a"]}, TypeError, r"'caption' must be a string or None, got \['a'\]"),
        ({"text": "Obama", "knowledge": "x"}, ValueError, r"unknown post keys \['knowledge'\]"),
        ({"text": "Obama", "objects": "person"}, TypeError, r"'objects' must be a list"),
        ({"text": "Obama", "objects": [{"label": "person"}]}, ValueError, "object 0"),
    ],
)
def test_malformed_posts_are_refused_with_the_offending_key(tagger, post, error, message):
    with pytest.raises(error, match=message):
        explain_post(tagger, post)


def test_an_image_that_is_missing_or_not_an_image_names_the_file(tagger, tmp_path):
    missing = tmp_path / "missing.jpg"
    with pytest.raises(ImageLoadError, match="missing.jpg") as raised:
        explain_post(tagger, {"text": "Obama", "image": str(missing)})
    assert raised.value.is_missing
    not_an_image = tmp_path / "page.jpg"
    not_an_image.write_text("<html>404</html>")
    with pytest.raises(ImageLoadError, match="page.jpg") as raised:
        explain_post(tagger, {"text": "Obama", "image": not_an_image})
    assert raised.value.reason == "not_an_image"


def test_wrong_models_processors_and_output_paths_are_refused(tagger, tmp_path):
    model, processor = tagger
    with pytest.raises(TypeError, match="MGCM token-classification model"):
        explain_post((torch.nn.Linear(2, 2), processor), {"text": "Obama"})
    with pytest.raises(TypeError, match="needs the model's MGCMProcessor"):
        explain_post(model, {"text": "Obama"})
    with pytest.raises(TypeError, match=r"\(model, processor\) pair"):
        explain_post((model, processor, None), {"text": "Obama"})
    with pytest.raises(ValueError, match=r"must name a \.png file, got '.*explanation\.jpg'"):
        explain(tagger, {"text": "Obama"}, tmp_path / "explanation.jpg")
    with pytest.raises(FileNotFoundError, match="no_such_folder"):
        explain(tagger, {"text": "Obama"}, tmp_path / "no_such_folder" / "x.png")
    explanation = explain_post(tagger, {"text": "Obama"})
    with pytest.raises(ValueError, match="max_entities"):
        draw_explanation(explanation, max_entities=0)
    with pytest.raises(ValueError, match="figsize"):
        draw_explanation(explanation, figsize=(0, 3))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("knowledge", [["Paris"], 3, {"text": "Paris"}])
def test_a_knowledge_that_is_not_a_string_is_refused_naming_the_key(knowledge_tagger, knowledge):
    with pytest.raises(TypeError, match=r"'knowledge' must be a string or None"):
        explain_post(knowledge_tagger, {"text": "Obama Phoenix", "knowledge": knowledge})
