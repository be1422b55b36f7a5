"""MGCMDataCollator: window rows of a corpus padded into model batches, and evaluation over whole tweets."""

import logging

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from processor_doubles import OBJECT_LABELS, WordLengthTable
from torch.utils.data import DataLoader
from transformers import AutoTokenizer, ResNetModel
from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil

from modeling_mgcm import MGCMConfig, MGCMForTokenClassification
from processing import WINDOW_INFO_KEYS, ImageFeatureCache, MGCMDataCollator, MGCMProcessor, corpus_features
from processing.training.window_rows import preprocess_corpus


class CountingFeatureCache:
    """An image feature cache double: features encode the id, and every `get` call is recorded."""

    def __init__(self, ids_with_images: set[str], regions: int = 4, dim: int = 6):
        self.ids_with_images = ids_with_images
        self.regions, self.dim = regions, dim
        self.calls: list[list[str]] = []

    def feature_of(self, image_id: str) -> float:
        return float(sum(ord(character) for character in image_id))

    def get(self, ids):
        self.calls.append(list(ids))
        features = torch.zeros(len(ids), self.regions, self.dim)
        mask = torch.zeros(len(ids), dtype=torch.long)
        for index, image_id in enumerate(ids):
            if image_id in self.ids_with_images:
                features[index] = self.feature_of(image_id)
                mask[index] = 1
        return features, mask


def make_corpus(num_long_words: int = 150) -> datasets.Dataset:
    rng = np.random.default_rng(1)
    vocabulary = ["obama", "paris", "xyz", "london", "\u00a0", "!", "abc1"]
    long_tokens = [str(rng.choice(vocabulary)) for _ in range(num_long_words)]
    rows = {
        "id": ["t1", "t2", "t3", "t4"],
        "tokens": [["RT", "Obama", "in", "Paris"], long_tokens, ["london"], ["xyz", "\x07", "at"]],
        "ner_tags": [[0, 1, 0, 3], [int(tag) for tag in rng.integers(0, 9, num_long_words)], [3], [0, 0, 0]],
        "image": [Image.new("RGB", (8, 8)), None, None, None],
        "caption": ["a man in paris", "", "a city", ""],
        "objects": [
            [{"label": "person", "score": 0.9}, {"label": "car", "score": 0.95}],
            [],
            [{"label": "unicorn", "score": 0.5}],
            [{"label": "dog", "score": 0.3}],
        ],
    }
    return datasets.Dataset.from_dict(rows, features=corpus_features())


@pytest.fixture(scope="module")
def processor(tiny_bert_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_bert_dir)
    return MGCMProcessor(
        tokenizer, neighbour_table=WordLengthTable(), object_labels=OBJECT_LABELS, max_length=24, stride=3
    )


@pytest.fixture(scope="module")
def corpus():
    return make_corpus()


@pytest.fixture(scope="module")
def window_rows(processor, corpus):
    return preprocess_corpus(processor, corpus, batch_size=2, keep_in_memory=True)


def test_preprocessing_splits_long_tweets_into_window_rows_of_the_corpus(window_rows, corpus):
    tweet_of_row = window_rows["tweet_index"]

    assert sorted(set(tweet_of_row)) == [0, 1, 2, 3]
    assert tweet_of_row.count(1) > 5
    assert [row["id"] for row in window_rows] == [corpus[index]["id"] for index in tweet_of_row]
    first = window_rows[0]
    assert first["words"] == ["RT", "Obama", "in", "Paris"]
    assert first["labels"] == [0, 1, 0, 3]
    assert first["object_ids"] == [1, 0]
    assert all(len(row["input_ids"]) <= 24 for row in window_rows)


def test_collated_batches_have_the_contract_names_shapes_and_dtypes(processor, window_rows):
    collator = MGCMDataCollator(processor, image_feature_cache=CountingFeatureCache({"t1"}))
    rows = [window_rows[index] for index in range(4)]
    batch = collator(rows)

    pieces = max(len(row["input_ids"]) for row in rows)
    words = max(len(row["words"]) for row in rows)
    captions = max(1, max(len(row["caption_input_ids"]) for row in rows))
    expected = {
        "input_ids": ((4, pieces), torch.long),
        "attention_mask": ((4, pieces), torch.long),
        "token_type_ids": ((4, pieces), torch.long),
        "word_ids": ((4, pieces), torch.long),
        "word_mask": ((4, words), torch.long),
        "word_shape_ids": ((4, words), torch.long),
        "neighbour_vectors": ((4, words, 2, 3), torch.float32),
        "neighbour_weights": ((4, words, 2), torch.float32),
        "image_features": ((4, 4, 6), torch.float32),
        "image_mask": ((4,), torch.long),
        "object_ids": ((4, 5), torch.long),
        "object_mask": ((4, 5), torch.long),
        "caption_input_ids": ((4, captions), torch.long),
        "caption_attention_mask": ((4, captions), torch.long),
        "labels": ((4, words), torch.long),
    }
    assert set(batch) == set(expected)
    for name, (shape, dtype) in expected.items():
        assert tuple(batch[name].shape) == shape, name
        assert batch[name].dtype == dtype, name


def test_a_collated_batch_runs_through_the_model_with_every_granularity(
    processor, window_rows, tiny_text_config
):
    config = MGCMConfig(
        text_config=tiny_text_config,
        vision_config=None,
        image_feature_dim=6,
        object_labels=OBJECT_LABELS,
        augmentation_dim=WordLengthTable.dim,
        num_neighbours=WordLengthTable.k,
        use_caption=True,
        use_word_shape=True,
    )
    torch.manual_seed(0)
    model = MGCMForTokenClassification(config).eval()
    collator = MGCMDataCollator(processor, image_feature_cache=CountingFeatureCache({"t1", "t3"}))
    batch = collator([window_rows[index] for index in range(len(window_rows)) if index % 3 == 0])

    with torch.no_grad():
        output = model(**batch)
    assert torch.isfinite(output.loss)
    assert output.logits.shape == (*batch["word_mask"].shape, len(config.id2label))
    assert output.predictions[batch["word_mask"] == 0].eq(-100).all()
    assert output.predictions[batch["word_mask"] == 1].ge(0).all()


def test_collation_matches_calling_the_processor_on_the_same_tweets(processor, window_rows, corpus):
    tweet_rows = [corpus[index] for index in (0, 2, 3)]
    direct = processor(
        [row["tokens"] for row in tweet_rows],
        objects=[row["objects"] for row in tweet_rows],
        captions=[row["caption"] for row in tweet_rows],
        word_labels=[row["ner_tags"] for row in tweet_rows],
    )
    rows_of = {row["tweet_index"]: row for row in window_rows if row["tweet_index"] != 1}
    collated = MGCMDataCollator(processor)([rows_of[index] for index in (0, 2, 3)])

    assert set(collated) == set(direct) - set(WINDOW_INFO_KEYS)
    for name in collated:
        assert torch.equal(collated[name], direct[name]), name


def test_padding_values_are_neutral_and_captions_objects_absent_rows_are_masked(processor, window_rows):
    rows_of = {row["tweet_index"]: row for row in window_rows if row["tweet_index"] != 1}
    batch = MGCMDataCollator(processor)([rows_of[2], rows_of[0], rows_of[3]])

    assert batch["labels"][0].tolist() == [3, -100, -100, -100]
    assert batch["word_mask"][0].tolist() == [1, 0, 0, 0]
    assert batch["word_ids"][0].tolist()[3:] == [-1] * (batch["word_ids"].shape[1] - 3)
    assert batch["input_ids"][0, 3:].eq(processor.tokenizer.pad_token_id).all()
    assert batch["neighbour_vectors"][0, :, 0, 0].tolist() == [6.0, 0.0, 0.0, 0.0]
    # "unicorn" is not an object label: tweet 2 has no object left.
    assert batch["object_mask"][0].tolist() == [0] * 5
    assert batch["object_ids"][0].tolist() == [3] * 5
    assert batch["caption_attention_mask"][2].eq(0).all()
    assert batch["caption_attention_mask"][0].sum() > 0


def test_image_features_come_from_the_cache_once_per_tweet(processor, window_rows):
    cache = CountingFeatureCache({"t1", "t2"})
    rows = [row for row in window_rows if row["tweet_index"] in (0, 1)]
    batch = MGCMDataCollator(processor, image_feature_cache=cache)(rows)

    assert cache.calls == [["t1", "t2"]]
    for row_index, row in enumerate(rows):
        assert batch["image_features"][row_index].eq(cache.feature_of(row["id"])).all()
    assert batch["image_mask"].tolist() == [1] * len(rows)


def test_an_image_feature_cache_built_on_the_corpus_feeds_the_collator(
    processor, window_rows, corpus, tiny_resnet_config, tmp_path
):
    torch.manual_seed(0)
    cache = ImageFeatureCache(
        tmp_path,
        ResNetModel(tiny_resnet_config).eval(),
        ViTImageProcessorPil(size={"height": 64, "width": 64}),
        backbone_name="tiny-resnet",
        storage_dtype=torch.float32,
        show_progress=False,
    )
    cache.build(corpus)
    rows = [row for row in window_rows if row["tweet_index"] in (0, 1)]
    batch = MGCMDataCollator(processor, image_feature_cache=cache)(rows)

    expected_features, expected_mask = cache.get([row["id"] for row in rows])
    assert batch["image_features"].shape == (len(rows), 64, 16)
    assert torch.equal(batch["image_features"], expected_features)
    assert batch["image_mask"].tolist() == [1] + [0] * (len(rows) - 1) == expected_mask.tolist()


def test_a_cache_returning_the_wrong_shape_is_reported(processor, window_rows):
    class ShortCache:
        def get(self, ids):
            return torch.zeros(1, 2, 3), torch.ones(1, dtype=torch.long)

    collator = MGCMDataCollator(processor, image_feature_cache=ShortCache())
    with pytest.raises(ValueError, match=r"returned features \(1, 2, 3\)"):
        collator([window_rows[0], window_rows[1]])


def test_evaluation_batches_merge_back_to_one_prediction_per_gold_word(processor, window_rows, corpus):
    collator = MGCMDataCollator(processor, return_window_info=True)
    window_predictions, tweet_of_window, offsets, counts = [], [], [], []
    for batch in DataLoader(window_rows, batch_size=3, shuffle=False, collate_fn=collator):
        assert set(WINDOW_INFO_KEYS) <= set(batch)
        # The gold labels stand in for model predictions: merging must give back every gold word.
        window_predictions += list(batch["labels"])
        tweet_of_window += batch["overflow_to_sample_mapping"].tolist()
        offsets += batch["window_word_offset"].tolist()
        counts += batch["word_mask"].sum(1).tolist()

    merged = processor.merge_windows(
        window_predictions,
        tweet_of_window,
        offsets,
        counts,
        num_words=[len(tokens) for tokens in corpus["tokens"]],
    )
    assert merged == corpus["ner_tags"]


def test_training_batches_carry_no_bookkeeping_keys(processor, window_rows):
    batch = MGCMDataCollator(processor)([window_rows[0]])

    assert not set(WINDOW_INFO_KEYS) & set(batch)


def test_raw_corpus_rows_are_refused_with_a_pointer_to_preprocessing(processor, corpus):
    with pytest.raises(ValueError, match=r"window_rows.preprocess_corpus\(processor, corpus\) first"):
        MGCMDataCollator(processor)([corpus[0]])


def test_a_dataset_dict_is_preprocessed_split_by_split_with_split_row_indices(processor):
    corpus = datasets.DatasetDict({"train": make_corpus(10), "valid": make_corpus(10).select([2, 3])})
    rows = preprocess_corpus(processor, corpus, keep_in_memory=True)

    assert rows["valid"]["tweet_index"] == [0, 1]
    assert rows["valid"]["id"] == ["t3", "t4"]
    assert sorted(set(rows["train"]["tweet_index"])) == [0, 1, 2, 3]


def test_objects_are_left_out_with_a_warning_when_the_processor_has_no_object_labels(tiny_bert_dir, caplog):
    text_only = MGCMProcessor(AutoTokenizer.from_pretrained(tiny_bert_dir))
    with caplog.at_level(logging.WARNING, logger="processing.training.window_rows"):
        rows = preprocess_corpus(text_only, make_corpus(5), keep_in_memory=True)

    assert "object_ids" not in rows.column_names
    assert "no object_labels" in caplog.text
    assert "object_ids" not in MGCMDataCollator(text_only)([rows[0]])


def test_a_corpus_without_required_columns_is_rejected(processor):
    with pytest.raises(ValueError, match=r"lacks the columns \['tokens'\]"):
        preprocess_corpus(processor, datasets.Dataset.from_dict({"id": ["a"]}))
