"""MGCMProcessor: word alignment, windows of long tweets and their merge, objects, captions, images, saving."""

import logging
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from processor_doubles import OBJECT_LABELS, WordLengthTable
from transformers import AutoProcessor, AutoTokenizer
from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

from modeling_mgcm.tweet_tokenizer import split_tweet
from modeling_mgcm.windows import plan_windows
from processing import MGCMProcessor, merge_windows, word_shape_id
from processing.text.neighbour_search import neighbour_table_from_embeddings


@pytest.fixture(scope="module")
def tokenizer(tiny_bert_dir):
    return AutoTokenizer.from_pretrained(tiny_bert_dir)


@pytest.fixture
def processor(tokenizer):
    return MGCMProcessor(tokenizer, neighbour_table=WordLengthTable(), object_labels=OBJECT_LABELS)


def tiny_image_processor() -> ViTImageProcessorPil:
    return ViTImageProcessorPil(size={"height": 16, "width": 16})


def window_word_counts(encoding) -> list[int]:
    return encoding["word_mask"].sum(1).tolist()


def test_labels_are_word_level_and_word_ids_start_each_word_at_its_first_piece(processor, tokenizer):
    words = ["Obama", "xyz", "in", "Paris!"]
    encoding = processor(words, word_labels=[1, 0, 0, 3])

    pieces = tokenizer.convert_ids_to_tokens(encoding["input_ids"][0].tolist())
    assert pieces == ["[CLS]", "obama", "x", "##y", "##z", "in", "paris", "!", "[SEP]"]
    assert encoding["word_ids"][0].tolist() == [-1, 0, 1, 1, 1, 2, 3, 3, -1]
    first_pieces = [pieces[encoding["word_ids"][0].tolist().index(word)] for word in range(4)]
    assert first_pieces == ["obama", "x", "in", "paris"]
    assert encoding["labels"].tolist() == [[1, 0, 0, 3]]
    assert encoding["word_mask"].tolist() == [[1, 1, 1, 1]]
    assert encoding["word_shape_ids"][0].tolist() == [word_shape_id(word) for word in words]
    assert encoding["attention_mask"].tolist() == [[1] * 9]
    assert encoding["token_type_ids"].tolist() == [[0] * 9]


def test_batch_pads_pieces_words_and_labels(processor, tokenizer):
    encoding = processor([["Obama", "xyz"], ["in"]], word_labels=[[1, 0], [0]])

    assert encoding["input_ids"].shape == (2, 6)
    assert encoding["input_ids"][1, 3:].tolist() == [tokenizer.pad_token_id] * 3
    assert encoding["attention_mask"][1].tolist() == [1, 1, 1, 0, 0, 0]
    assert encoding["word_ids"][1].tolist() == [-1, 0, -1, -1, -1, -1]
    assert encoding["word_mask"].tolist() == [[1, 1], [1, 0]]
    assert encoding["word_shape_ids"][1, 1].item() == 0
    assert encoding["labels"].tolist() == [[1, 0], [0, -100]]


def test_model_inputs_have_the_contract_dtypes_and_shapes(processor):
    encoding = processor(
        [["Obama", "in", "Paris"], ["rt"]],
        images=None,
        objects=[[{"label": "person", "score": 0.9}], []],
        captions=["a man", ""],
        word_labels=[[1, 0, 3], [0]],
    )
    batch, pieces = encoding["input_ids"].shape
    words = encoding["word_mask"].shape[1]
    expected = {
        "input_ids": ((batch, pieces), torch.long),
        "attention_mask": ((batch, pieces), torch.long),
        "token_type_ids": ((batch, pieces), torch.long),
        "word_ids": ((batch, pieces), torch.long),
        "word_mask": ((batch, words), torch.long),
        "word_shape_ids": ((batch, words), torch.long),
        "neighbour_vectors": ((batch, words, 2, 3), torch.float32),
        "neighbour_weights": ((batch, words, 2), torch.float32),
        "object_ids": ((batch, 5), torch.long),
        "object_mask": ((batch, 5), torch.long),
        "caption_input_ids": ((batch, encoding["caption_input_ids"].shape[1]), torch.long),
        "caption_attention_mask": ((batch, encoding["caption_input_ids"].shape[1]), torch.long),
        "labels": ((batch, words), torch.long),
        "overflow_to_sample_mapping": ((batch,), torch.long),
        "window_word_offset": ((batch,), torch.long),
    }
    assert set(encoding) == set(expected)
    for name, (shape, dtype) in expected.items():
        assert tuple(encoding[name].shape) == shape, name
        assert encoding[name].dtype == dtype, name
    model_inputs = set(encoding) - {"overflow_to_sample_mapping", "window_word_offset"}
    assert model_inputs <= set(processor.model_input_names)


def test_neighbour_inputs_follow_the_words_and_are_zero_at_padding(processor):
    encoding = processor([["paris", "at"], ["london"]])

    assert encoding["neighbour_vectors"][0, :, 0, 0].tolist() == [5.0, 2.0]
    assert encoding["neighbour_vectors"][1, :, 0, 0].tolist() == [6.0, 0.0]
    assert encoding["neighbour_weights"][1].tolist() == [[0.5, 0.5], [0.0, 0.0]]


def test_words_without_any_word_piece_get_an_unk_slot(processor, tokenizer):
    words = ["paris", "\u00a0", "\x07", "", "\ufffd", "london"]
    encoding = processor(words, word_labels=[3, 0, 0, 0, 0, 3])

    assert encoding["word_mask"].tolist() == [[1] * 6]
    assert encoding["word_ids"][0].tolist() == [-1, 0, 1, 2, 3, 4, 5, -1]
    assert encoding["input_ids"][0, 2:6].tolist() == [tokenizer.unk_token_id] * 4
    assert encoding["labels"].tolist() == [[3, 0, 0, 0, 0, 3]]


def test_text_input_is_split_with_the_tweet_splitter(processor):
    texts = ["@Obama  in\tParis!", "rt #NBA https://t.co/x1 🎉🇫🇷", "I've seen U.S. :)"]
    from_text = processor(text=texts)
    from_words = processor([[word for word, _, _ in split_tweet(text)] for text in texts])
    # Punctuation splits off, mentions, hashtags, URLs and emoji stay whole: not white-space words.
    assert [word for word, _, _ in split_tweet(texts[0])] == ["@Obama", "in", "Paris", "!"]
    assert [word for word, _, _ in split_tweet(texts[2])] == "I ' ve seen U . S . :)".split()

    for name in from_words:
        assert torch.equal(from_text[name], from_words[name]), name
    single = processor(text=texts[1])
    assert torch.equal(single["input_ids"], from_text["input_ids"][1:2])


def test_a_list_of_strings_as_text_is_a_batch_of_tweets_and_as_words_one_tweet(processor):
    as_text = processor(text=["Obama", "Paris"])
    as_words = processor(words=["Obama", "Paris"])
    assert as_text["overflow_to_sample_mapping"].tolist() == [0, 1]
    assert as_words["overflow_to_sample_mapping"].tolist() == [0]
    assert as_words["word_mask"].tolist() == [[1, 1]]
    # Pre-split words are taken as they are, even those the splitter would cut.
    assert processor(words=["U.S.", "Paris!"])["word_mask"].tolist() == [[1, 1]]


def test_a_word_longer_than_the_window_keeps_its_first_pieces_and_its_prediction(tokenizer):
    processor = MGCMProcessor(tokenizer, max_length=8, stride=1)
    words = ["in", "abcdefghijklmnop", "paris"]
    encoding = processor(words, word_labels=[0, 3, 4])

    counts = window_word_counts(encoding)
    assert encoding["input_ids"].shape[1] <= 8
    long_window = encoding["window_word_offset"].tolist().index(1)
    pieces = tokenizer.convert_ids_to_tokens(encoding["input_ids"][long_window].tolist())
    assert pieces == ["[CLS]", "a", "##b", "##c", "##d", "##e", "##f", "[SEP]"]
    merged = merge_windows(
        encoding["labels"], encoding["overflow_to_sample_mapping"], encoding["window_word_offset"], counts
    )
    assert merged == [[0, 3, 4]]


@settings(max_examples=60, deadline=None)
@given(
    piece_counts=st.lists(st.integers(1, 6), min_size=1, max_size=60),
    capacity=st.integers(6, 20),
    stride=st.integers(0, 8),
)
def test_planned_windows_fit_overlap_by_at_most_the_stride_and_cover_every_word(
    piece_counts, capacity, stride
):
    windows = plan_windows(piece_counts, capacity, stride)

    assert windows[0][0] == 0 and windows[-1][1] == len(piece_counts)
    for start, end in windows:
        assert start < end and sum(piece_counts[start:end]) <= capacity
    for (start, end), (next_start, next_end) in zip(windows, windows[1:], strict=False):
        assert start < next_start <= end < next_end
        assert end - next_start <= stride


def test_merge_takes_each_word_from_the_window_where_it_is_farthest_from_a_cut_edge():
    # Windows [0, 6) and [3, 9) of a 9-word tweet; predictions name their window.
    merged = merge_windows([["a"] * 6, ["b"] * 6], [0, 0], [0, 3])

    # Word 4 is 1 from A's cut right edge and 1 from B's left edge: the tie goes to A; word 5 is B's.
    assert merged == [["a", "a", "a", "a", "a", "b", "b", "b", "b"]]


def test_merge_refuses_to_drop_a_word_silently():
    with pytest.raises(ValueError, match=r"tweet 0: words \[2\] of 5 are in no window"):
        merge_windows([[1, 1], [1, 1]], [0, 0], [0, 3])
    with pytest.raises(ValueError, match="tweet 0: windows reach word 3 of 3"):
        merge_windows([[1, 1, 1, 1]], [0], [0], num_words=[3])
    with pytest.raises(ValueError, match="tweet 1 has no window"):
        merge_windows([[1], [1]], [0, 2], [0, 0])


def test_objects_map_to_ids_best_scores_first_padded_with_the_no_object_id(tokenizer, caplog):
    processor = MGCMProcessor(tokenizer, object_labels=OBJECT_LABELS, max_objects=3)
    objects = [
        [
            {"label": "car", "score": 0.5},
            {"label": "unicorn", "score": 0.99},
            {"label": "person", "score": 0.9},
            {"label": "dog", "score": 0.7},
            {"label": "person", "score": 0.6},
        ],
        [],
        [{"label": "unicorn", "score": 0.8}, {"label": "dog", "score": 0.75}],
    ]
    with caplog.at_level(logging.WARNING, logger="modeling_mgcm.processing_mgcm"):
        encoding = processor([["rt"], ["rt"], ["rt"]], objects=objects)

    assert encoding["object_ids"].tolist() == [[0, 2, 0], [3, 3, 3], [2, 3, 3]]
    assert encoding["object_mask"].tolist() == [[1, 1, 1], [0, 0, 0], [1, 0, 0]]
    assert processor.unknown_object_label_counts == {"unicorn": 2}
    assert len([record for record in caplog.records if "unicorn" in record.getMessage()]) == 1


def test_objects_as_a_struct_of_lists_are_read_like_a_list_of_objects(processor):
    as_struct = processor(["rt"], objects={"label": ["dog", "car"], "score": [0.2, 0.8]})
    as_list = processor(["rt"], objects=[{"label": "dog", "score": 0.2}, {"label": "car", "score": 0.8}])

    assert as_struct["object_ids"].tolist() == as_list["object_ids"].tolist() == [[1, 2, 3, 3, 3]]


def test_malformed_objects_and_objects_without_a_vocabulary_are_rejected(processor, tokenizer):
    with pytest.raises(ValueError, match=r"tweet 1, object 0: expected"):
        processor([["rt"], ["rt"]], objects=[[], [{"label": "dog", "score": float("nan")}]])
    with pytest.raises(ValueError, match="no object_labels"):
        MGCMProcessor(tokenizer)(["rt"], objects=[{"label": "dog", "score": 0.9}])


def test_captions_are_tokenised_apart_truncated_and_absent_ones_have_an_all_zero_mask(tokenizer):
    processor = MGCMProcessor(tokenizer, max_caption_length=6)
    encoding = processor([["rt"], ["rt"], ["rt"], ["rt"]], captions=["a man in paris", "", None, "   "])

    caption_pieces = tokenizer.convert_ids_to_tokens(encoding["caption_input_ids"][0].tolist())
    assert caption_pieces == ["[CLS]", "a", "m", "##a", "##n", "[SEP]"]
    assert encoding["caption_attention_mask"].tolist() == [[1] * 6, [0] * 6, [0] * 6, [0] * 6]
    assert encoding["caption_input_ids"][1:].eq(tokenizer.pad_token_id).all()

    no_caption_at_all = processor(["rt"], captions="")
    assert no_caption_at_all["caption_attention_mask"].tolist() == [[0]]


def test_images_give_pixel_values_and_a_mask_with_zeros_for_missing_images(tokenizer):
    processor = MGCMProcessor(tokenizer, image_processor=tiny_image_processor(), max_length=6, stride=0)
    colour = Image.new("RGB", (40, 30), (255, 0, 0))
    grey = Image.new("L", (20, 20), 128)
    encoding = processor([["rt"], ["in"], ["paris", "xyz", "london", "obama"]], images=[colour, None, grey])

    tweet_of_window = encoding["overflow_to_sample_mapping"].tolist()
    assert tweet_of_window == [0, 1, 2, 2]
    assert encoding["pixel_values"].shape == (4, 3, 16, 16)
    assert encoding["pixel_values"].dtype == torch.float32
    assert encoding["image_mask"].tolist() == [1, 0, 1, 1]
    assert encoding["pixel_values"][1].eq(0).all()
    assert not encoding["pixel_values"][0].eq(0).all()
    assert torch.equal(encoding["pixel_values"][2], encoding["pixel_values"][3])
    expected_grey = tiny_image_processor()(images=[grey.convert("RGB")], return_tensors="pt")["pixel_values"][
        0
    ]
    assert torch.allclose(encoding["pixel_values"][2], expected_grey)

    only_missing = processor([["rt"]], images=[None])
    assert only_missing["pixel_values"].shape == (1, 3, 16, 16)
    assert only_missing["image_mask"].tolist() == [0]


def test_precomputed_image_features_follow_their_tweet_into_every_window(tokenizer):
    processor = MGCMProcessor(tokenizer, max_length=6, stride=0)
    features = torch.arange(2 * 4 * 5, dtype=torch.float32).reshape(2, 4, 5)
    encoding = processor(
        [["paris", "xyz", "london", "obama"], ["rt"]],
        image_features=features,
        image_mask=torch.tensor([1, 0]),
    )

    tweet_of_window = encoding["overflow_to_sample_mapping"].tolist()
    assert tweet_of_window == [0, 0, 1]
    assert torch.equal(encoding["image_features"], features[tweet_of_window])
    assert encoding["image_mask"].tolist() == [1, 1, 0]
    assert "pixel_values" not in encoding


def test_image_inputs_are_checked(processor, tokenizer):
    with pytest.raises(ValueError, match="no image_processor"):
        processor([["rt"]], images=[Image.new("RGB", (8, 8))])
    with pytest.raises(ValueError, match="images or image_features, not both"):
        processor([["rt"]], images=[None], image_features=torch.zeros(1, 2, 3), image_mask=[1])
    with pytest.raises(ValueError, match=r"n = 2 tweets, got \(1, 2, 3\)"):
        processor([["rt"], ["rt"]], image_features=torch.zeros(1, 2, 3), image_mask=[1])
    with pytest.raises(ValueError, match="images has 2 entries for 1 tweets"):
        MGCMProcessor(tokenizer, image_processor=tiny_image_processor())([["rt"]], images=[None, None])


def test_bad_words_and_labels_are_reported_with_their_position(processor):
    with pytest.raises(ValueError, match="tweet 1 has no words"):
        processor([["rt"], []])
    with pytest.raises(TypeError, match=r"tweet 0, word 1 is not a string: 3"):
        processor([["rt", 3]])
    with pytest.raises(ValueError, match="tweet 0 has 2 words but 1 labels"):
        processor([["rt", "in"]], word_labels=[[0]])
    with pytest.raises(ValueError, match=r"tweet 0, word 1 \('in'\): label must be .* got -3"):
        processor([["rt", "in"]], word_labels=[[0, -3]])


def test_settings_are_validated(tokenizer):
    with pytest.raises(ValueError, match="no room for words"):
        MGCMProcessor(tokenizer, max_length=2)
    with pytest.raises(ValueError, match="stride must be an integer >= 0"):
        MGCMProcessor(tokenizer, stride=-1)
    with pytest.raises(ValueError, match=r"repeated \['car'\]"):
        MGCMProcessor(tokenizer, object_labels=["car", "car"])


def test_save_and_load_with_auto_processor_round_trips_every_part(tmp_path, tokenizer):
    vocabulary = ["paris", "london", "obama"]
    vectors = np.random.default_rng(0).normal(size=(3, 4)).astype(np.float32)
    table = neighbour_table_from_embeddings(vocabulary, vectors, k=2)
    processor = MGCMProcessor(
        tokenizer,
        image_processor=tiny_image_processor(),
        neighbour_table=table,
        object_labels=OBJECT_LABELS,
        max_length=10,
        stride=2,
        max_objects=4,
        max_caption_length=7,
    )
    processor.save_pretrained(tmp_path)
    loaded = AutoProcessor.from_pretrained(tmp_path)

    assert isinstance(loaded, MGCMProcessor)
    assert loaded.to_dict() == processor.to_dict()
    assert loaded.image_processor.size == {"height": 16, "width": 16}
    table_files = os.listdir(tmp_path / "neighbour_table")
    assert any(name.endswith(".safetensors") for name in table_files)
    assert not any(name.endswith((".pkl", ".pickle", ".bin", ".npy")) for name in table_files)

    inputs = {
        "words": [["Paris", "xyz", "london", "obama", "in", "at"], ["rt"]],
        "images": [Image.new("RGB", (20, 20), (0, 90, 0)), None],
        "objects": [[{"label": "dog", "score": 0.5}], []],
        "captions": ["a dog in paris", None],
        "word_labels": [[3, 0, 3, 1, 0, 0], [0]],
    }
    expected, actual = processor(**inputs), loaded(**inputs)
    assert set(actual) == set(expected)
    for name in expected:
        assert torch.equal(actual[name], expected[name]), name
    assert actual["neighbour_weights"][0, 0].sum() > 0


def test_a_text_only_processor_round_trips_without_image_processor_or_table(tmp_path, tokenizer):
    processor = MGCMProcessor(tokenizer, max_length=16)
    processor.save_pretrained(tmp_path)
    loaded = MGCMProcessor.from_pretrained(tmp_path)

    assert loaded.image_processor is None and loaded.neighbour_table is None and loaded.object_labels is None
    assert loaded.max_length == 16
    assert "neighbour_vectors" not in loaded(["paris"])


def test_loading_fails_loudly_when_the_saved_neighbour_table_is_missing(tmp_path, tokenizer):
    table = neighbour_table_from_embeddings(["paris", "london"], np.eye(2, dtype=np.float32), k=1)
    MGCMProcessor(tokenizer, neighbour_table=table).save_pretrained(tmp_path)
    for name in os.listdir(tmp_path / "neighbour_table"):
        os.remove(tmp_path / "neighbour_table" / name)
    os.rmdir(tmp_path / "neighbour_table")

    with pytest.raises(FileNotFoundError, match="names a neighbour table"):
        MGCMProcessor.from_pretrained(tmp_path)
