"""The synthetic corpus: determinism, stated fractions, and that only the image decides ambiguous mentions."""

import io
from collections import Counter, defaultdict

import numpy as np
import pytest
from datasets import Image
from PIL import Image as PILImage
from tiny_corpora import tag_names

from processing.corpus.labels import ENTITY_TYPES, LABEL_NAMES, LABEL_TO_ID
from processing.corpus.schema import corpus_features
from processing.corpus.synthetic import (
    SYNTHETIC_AMBIGUOUS_NAMES,
    SYNTHETIC_CAPTION_WORDS,
    SYNTHETIC_OBJECT_LABELS,
    SYNTHETIC_TYPE_COLOURS,
    SYNTHETIC_TYPE_OBJECTS,
    ambiguous_mention_spans,
    make_synthetic_corpus,
    score_ambiguous_mentions,
)
from processing.corpus.tweet_corpus import load_tweet_corpus, write_conll


@pytest.fixture(scope="module")
def corpus():
    return make_synthetic_corpus(300, 40, 200, seed=3)


def raw_rows(dataset):
    """Rows with image bytes instead of decoded images, for exact comparison."""
    return dataset.cast_column("image", Image(decode=False)).to_list()


def ambiguous_mentions(dataset):
    """(row index, start, end, gold type) of every ambiguous-name mention."""
    mentions = []
    for index, (tokens, tag_ids) in enumerate(zip(dataset["tokens"], dataset["ner_tags"], strict=True)):
        for start, end in sorted(ambiguous_mention_spans(tokens)):
            mentions.append((index, start, end, LABEL_NAMES[tag_ids[start]][2:]))
    return mentions


def predict_ambiguous(dataset, type_of_mention):
    """Gold tags everywhere except ambiguous mentions, which get `type_of_mention(row, tokens, span)`."""
    predictions = [tag_names(tag_ids) for tag_ids in dataset["ner_tags"]]
    for index, start, end, _ in ambiguous_mentions(dataset):
        entity_type = type_of_mention(index, dataset[index]["tokens"][start:end])
        predictions[index][start:end] = ["B-" + entity_type] + ["I-" + entity_type] * (end - start - 1)
    return predictions


def ambiguous_f1(dataset, predictions):
    return score_ambiguous_mentions(dataset["tokens"], dataset["ner_tags"], predictions)["overall_f1"]


def image_type(image_bytes: bytes) -> str:
    """Read the type from pixels: the mean colour of the saturated pixels, matched to the nearest type colour."""
    pixels = np.asarray(PILImage.open(io.BytesIO(image_bytes)).convert("RGB"), dtype=np.float32)
    saturated = pixels.max(axis=2) - pixels.min(axis=2) > 80
    mean_colour = pixels[saturated].mean(axis=0)
    return min(ENTITY_TYPES, key=lambda t: np.abs(mean_colour - np.array(SYNTHETIC_TYPE_COLOURS[t])).sum())


def caption_type(caption: str) -> str:
    (entity_type,) = [t for t, word in SYNTHETIC_CAPTION_WORDS.items() if word in caption.split()]
    return entity_type


def objects_type(objects: list[dict]) -> str:
    (entity_type,) = [
        t for t, label in SYNTHETIC_TYPE_OBJECTS.items() if label in {o["label"] for o in objects}
    ]
    return entity_type


def test_same_arguments_give_identical_corpora():
    first, second = make_synthetic_corpus(30, 5, 5, seed=7), make_synthetic_corpus(30, 5, 5, seed=7)
    for split in ("train", "valid", "test"):
        assert raw_rows(first[split]) == raw_rows(second[split])


def test_another_seed_gives_another_corpus():
    assert raw_rows(make_synthetic_corpus(30, 0, 0, seed=1)["train"]) != raw_rows(
        make_synthetic_corpus(30, 0, 0, seed=2)["train"]
    )


def test_a_split_does_not_change_when_another_split_grows():
    assert raw_rows(make_synthetic_corpus(10, 5, 20, seed=0)["test"]) == raw_rows(
        make_synthetic_corpus(50, 5, 20, seed=0)["test"]
    )


def test_features_match_the_real_corpus_loader(corpus, tmp_path):
    assert list(corpus) == ["train", "valid", "test"]
    assert [len(corpus[s]) for s in corpus] == [300, 40, 200]
    assert corpus["train"].features == corpus_features()
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "train.txt").write_text("IMGID:1\nx\tO\n", encoding="utf-8")
    assert load_tweet_corpus(tmp_path / "real")["train"].features == corpus["train"].features


def test_text_columns_round_trip_through_the_conll_writer(corpus, tmp_path):
    (tmp_path / "syn").mkdir()
    write_conll(corpus["valid"], tmp_path / "syn" / "valid.txt")
    read_back = load_tweet_corpus(tmp_path / "syn")["valid"]
    assert read_back["tokens"] == corpus["valid"]["tokens"]
    assert read_back["ner_tags"] == corpus["valid"]["ner_tags"]


def test_images_are_square_pngs_of_the_requested_size():
    dataset = make_synthetic_corpus(20, 0, 0, image_size=32)["train"]
    images = [image for image in dataset["image"] if image is not None]
    assert images and all(image.size == (32, 32) and image.mode == "RGB" for image in images)


def test_missing_images_and_misleading_side_inputs_come_in_the_stated_fractions(corpus):
    train = raw_rows(corpus["train"])
    without_image = [row for row in train if row["image"] is None]
    assert len(without_image) == round(0.15 * 300)
    with_image = [row for row in train if row["image"] is not None]
    truths = [image_type(row["image"]["bytes"]) for row in with_image]
    wrong_caption = [caption_type(row["caption"]) != t for row, t in zip(with_image, truths, strict=True)]
    wrong_objects = [objects_type(row["objects"]) != t for row, t in zip(with_image, truths, strict=True)]
    assert sum(wrong_caption) == sum(wrong_objects) == round(0.05 * len(with_image))
    # Never both wrong: image, caption and objects always have a right majority.
    assert not any(c and o for c, o in zip(wrong_caption, wrong_objects, strict=True))


def test_tweets_without_image_have_no_caption_objects_or_ambiguous_name(corpus):
    for row in raw_rows(corpus["train"]):
        if row["image"] is None:
            assert (row["caption"], row["objects"]) == ("", [])
            assert not ambiguous_mention_spans(row["tokens"])
            assert any(tag != LABEL_TO_ID["O"] for tag in row["ner_tags"])
        else:
            assert len(ambiguous_mention_spans(row["tokens"])) == 1


def test_objects_use_the_declared_vocabulary_in_score_order(corpus):
    for objects in corpus["train"]["objects"]:
        assert len(objects) <= 5
        assert {o["label"] for o in objects} <= set(SYNTHETIC_OBJECT_LABELS)
        assert [o["score"] for o in objects] == sorted((o["score"] for o in objects), reverse=True)


def test_each_ambiguous_name_takes_every_type_about_equally_often(corpus):
    types_per_name = defaultdict(Counter)
    for index, start, end, entity_type in ambiguous_mentions(corpus["train"]):
        types_per_name[tuple(corpus["train"][index]["tokens"][start:end])][entity_type] += 1
    assert set(types_per_name) == set(SYNTHETIC_AMBIGUOUS_NAMES)
    for counts in types_per_name.values():
        assert max(counts[t] for t in ENTITY_TYPES) - min(counts[t] for t in ENTITY_TYPES) <= 1


def test_text_only_majority_oracle_scores_at_most_half_on_ambiguous_mentions(corpus):
    def fit_majority(dataset):
        counts = defaultdict(Counter)
        for index, start, end, entity_type in ambiguous_mentions(dataset):
            counts[tuple(dataset[index]["tokens"][start:end])][entity_type] += 1
        return {name: c.most_common(1)[0][0] for name, c in counts.items()}

    majority = fit_majority(corpus["train"])
    held_out = ambiguous_f1(
        corpus["test"], predict_ambiguous(corpus["test"], lambda _, name: majority[tuple(name)])
    )
    # Even fitted on the very tweets it is scored on, the name alone is no better than a coin.
    in_sample = fit_majority(corpus["test"])
    fitted = ambiguous_f1(
        corpus["test"], predict_ambiguous(corpus["test"], lambda _, name: in_sample[tuple(name)])
    )
    assert held_out <= 0.5
    assert fitted <= 0.5


def test_image_reading_oracle_scores_one_on_ambiguous_mentions(corpus):
    test = corpus["test"]
    images = raw_rows(test)
    predictions = predict_ambiguous(test, lambda index, _: image_type(images[index]["image"]["bytes"]))
    assert ambiguous_f1(test, predictions) == 1.0


def test_caption_and_objects_oracles_are_right_except_on_misleading_tweets(corpus):
    test = corpus["test"]
    captions_f1 = ambiguous_f1(
        test, predict_ambiguous(test, lambda index, _: caption_type(test[index]["caption"]))
    )
    objects_f1 = ambiguous_f1(
        test, predict_ambiguous(test, lambda index, _: objects_type(test[index]["objects"]))
    )
    mentions = len(ambiguous_mentions(test))
    misleading = round(0.05 * mentions)
    assert captions_f1 == pytest.approx(1 - misleading / mentions)
    assert objects_f1 == pytest.approx(1 - misleading / mentions)

    def vote(index, _):
        votes = [caption_type(test[index]["caption"]), objects_type(test[index]["objects"])]
        return (
            votes[0]
            if votes[0] == votes[1]
            else image_type(raw_rows(test.select([index]))[0]["image"]["bytes"])
        )

    assert ambiguous_f1(test, predict_ambiguous(test, vote)) == 1.0


def test_ambiguous_scoring_ignores_other_entities_and_punishes_overlong_predictions():
    tokens = [["Jordan", "met", "Taylor", "Swift"], ["in", "Sierra", "Nevada", "today"]]
    gold = [["B-PER", "O", "B-PER", "I-PER"], ["O", "B-LOC", "I-LOC", "O"]]
    pred = [["B-PER", "O", "O", "O"], ["O", "B-LOC", "I-LOC", "I-LOC"]]
    scores = score_ambiguous_mentions(tokens, gold, pred)
    # Jordan is right; the Sierra Nevada prediction runs one word past the name; Taylor Swift is ignored.
    assert scores["overall_number"] == 2
    assert (scores["overall_precision"], scores["overall_recall"]) == (0.5, 0.5)
    assert scores["PER"]["f1"] == 1.0 and scores["LOC"]["f1"] == 0.0


def test_ambiguous_scoring_refuses_misaligned_input():
    with pytest.raises(ValueError, match="tweet 0"):
        score_ambiguous_mentions([["Jordan"]], [["B-PER"]], [["B-PER", "O"]])


@pytest.mark.parametrize(
    "arguments",
    [
        {"n_train": -1},
        {"image_size": 4},
        {"missing_image_fraction": 1.5},
        {"misleading_caption_fraction": 0.6, "misleading_objects_fraction": 0.6},
    ],
)
def test_invalid_arguments_are_refused(arguments):
    with pytest.raises(ValueError):
        make_synthetic_corpus(**{"n_train": 5, "n_valid": 0, "n_test": 0, **arguments})
