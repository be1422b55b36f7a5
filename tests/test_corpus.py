"""The CoNLL corpus reader and writer, the captions and objects readers, `load_tweet_corpus` and its stats."""

import json
import pickle

import pytest
from datasets import Dataset, Image
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image as PILImage
from seqeval.metrics.sequence_labeling import get_entities
from tiny_corpora import TRAIN_TEXT, tag_names, write_file

from processing.corpus.cli import main
from processing.corpus.labels import LABEL_NAMES, LABEL_TO_ID, repair_bio_tags
from processing.corpus.schema import corpus_features
from processing.corpus.stats import corpus_stats, format_corpus_stats
from processing.corpus.tweet_corpus import (
    CorpusFormatError,
    DuplicateTweetIdError,
    load_tweet_corpus,
    read_captions_file,
    read_conll_file,
    read_objects_file,
    write_conll,
)


def test_loader_reads_ids_tokens_and_tags_mapping_other_to_misc(corpus_dir):
    corpus = load_tweet_corpus(corpus_dir)
    train = corpus["train"]
    assert train["id"] == ["101", "102", "103"]
    assert train[0]["tokens"] == ["RT", "@user", "Barack", "Obama", "in", "Paris"]
    assert tag_names(train[0]["ner_tags"]) == ["O", "O", "B-PER", "I-PER", "O", "B-LOC"]
    assert tag_names(train[1]["ner_tags"]) == ["B-MISC", "I-MISC", "O", "B-ORG"]
    assert train.features == corpus_features()
    assert train.features["ner_tags"].feature.names == LABEL_NAMES


def test_loader_loads_only_the_splits_present(corpus_dir):
    corpus = load_tweet_corpus(corpus_dir)
    assert list(corpus) == ["train", "valid"]
    assert corpus["valid"]["id"] == ["201"]


def test_loader_without_side_inputs_has_no_image_caption_or_objects(corpus_dir):
    train = load_tweet_corpus(corpus_dir)["train"]
    assert train["image"] == [None, None, None]
    assert train["caption"] == ["", "", ""]
    assert train["objects"] == [[], [], []]


def test_loader_refuses_missing_folder_and_folder_without_splits(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_tweet_corpus(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="train.txt, valid.txt, test.txt"):
        load_tweet_corpus(tmp_path / "empty")


def test_repair_bio_opens_orphan_inside_tags_only_when_asked(corpus_dir):
    write_file(
        corpus_dir / "test.txt", "IMGID:9\nA\tI-PER\nB\tI-PER\nC\tO\nD\tI-LOC\nE\tB-LOC\nF\tI-ORG\nG\tI-ORG\n"
    )
    kept = load_tweet_corpus(corpus_dir)["test"][0]["ner_tags"]
    repaired = load_tweet_corpus(corpus_dir, repair_bio=True)["test"][0]["ner_tags"]
    assert tag_names(kept) == ["I-PER", "I-PER", "O", "I-LOC", "B-LOC", "I-ORG", "I-ORG"]
    assert tag_names(repaired) == ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "B-ORG", "I-ORG"]


@given(st.lists(st.sampled_from(LABEL_NAMES), max_size=12))
def test_repair_bio_keeps_lenient_entities_and_leaves_no_orphan(tags):
    repaired = repair_bio_tags(tags)
    assert get_entities(repaired) == get_entities(tags)
    for previous, tag in zip(["O", *repaired], repaired, strict=False):
        if tag.startswith("I-"):
            assert previous[2:] == tag[2:]


MALFORMED_CASES = {
    "no tab": ("IMGID:1\nhello O\n", 2, "hello O", "no tab"),
    "unknown tag": ("IMGID:1\nhello\tO\nParis\tB-CITY\n", 3, "Paris\tB-CITY", "unknown tag 'B-CITY'"),
    "tokens before first IMGID": ("hello\tO\nIMGID:1\nx\tO\n", 1, "hello\tO", "before the first 'IMGID:'"),
    "token after blank line without IMGID": ("IMGID:1\nx\tO\n\ny\tO\n", 4, "y\tO", "outside a tweet"),
    "empty tweet followed by blank line": (
        "IMGID:1\nx\tO\n\nIMGID:2\n\nIMGID:3\ny\tO\n",
        4,
        "IMGID:2",
        "empty tweet",
    ),
    "empty tweet at end of file": ("IMGID:1\nx\tO\n\nIMGID:2\n", 4, "IMGID:2", "empty tweet"),
    "IMGID without id": ("IMGID:1\nx\tO\n\nIMGID:  \ny\tO\n", 4, "IMGID:  ", "without an id"),
    "empty token": ("IMGID:1\n\tO\n", 2, "\tO", "empty token"),
    "two tabs": ("IMGID:1\nx\tO\tO\n", 2, "x\tO\tO", "more than one tab"),
}


@pytest.mark.parametrize("case", list(MALFORMED_CASES))
def test_malformed_line_error_names_file_line_and_text(tmp_path, case):
    text, line_number, bad_text, problem = MALFORMED_CASES[case]
    path = write_file(tmp_path / "bad" / "train.txt", text)
    with pytest.raises(CorpusFormatError) as raised:
        load_tweet_corpus(path.parent)
    error = raised.value
    assert isinstance(error, ValueError)
    assert (error.path, error.line_number, error.text) == (str(path), line_number, bad_text)
    assert f"{path}, line {line_number}" in str(error)
    assert repr(bad_text) in str(error)
    assert problem in str(error)


def test_non_utf8_file_error_names_line_and_bytes(tmp_path):
    path = write_file(tmp_path / "train.txt", b"IMGID:1\ncaf\xe9\tO\nbar\tO\n")
    with pytest.raises(CorpusFormatError, match="not UTF-8") as raised:
        read_conll_file(path)
    assert raised.value.line_number == 2
    assert raised.value.text == "caf\\xe9\tO"
    assert str(path) in str(raised.value)


def test_duplicate_imgid_in_a_split_is_reported_with_both_lines(tmp_path):
    path = write_file(tmp_path / "train.txt", "IMGID:7\nx\tO\n\nIMGID:8\ny\tO\n\nIMGID:7\nz\tO\n")
    with pytest.raises(DuplicateTweetIdError, match="already names the tweet at line 1") as raised:
        read_conll_file(path)
    assert raised.value.line_number == 7


def test_format_error_survives_pickling_for_worker_processes(tmp_path):
    error = CorpusFormatError(tmp_path / "train.txt", 3, "x y", "no tab")
    restored = pickle.loads(pickle.dumps(error))
    assert (str(restored), restored.line_number) == (str(error), 3)


def test_reader_accepts_crlf_bom_and_repeated_blank_lines(tmp_path):
    plain = read_conll_file(write_file(tmp_path / "a.txt", TRAIN_TEXT))
    windows = "\ufeff" + TRAIN_TEXT.replace("\n\n", "\n\n\n").replace("\n", "\r\n")
    from_windows = read_conll_file(write_file(tmp_path / "b.txt", windows))
    assert [(t.id, t.tokens, t.tags) for t in from_windows] == [(t.id, t.tokens, t.tags) for t in plain]
    assert [t.line_number for t in from_windows] == [1, 10, 17]


def test_reader_keeps_unicode_whitespace_and_line_separator_tokens(tmp_path):
    # Twitter-2015 has a lone no-break space token; U+2028 would split the line under str.splitlines.
    path = write_file(tmp_path / "train.txt", "IMGID:1\n\u00a0\tO\na\u2028b\tO\n\ufffd\tB-MISC\n")
    (tweet,) = read_conll_file(path)
    assert tweet.tokens == ["\u00a0", "a\u2028b", "\ufffd"]


def test_token_that_looks_like_an_imgid_line_is_a_token(tmp_path):
    (tweet,) = read_conll_file(write_file(tmp_path / "train.txt", "IMGID:1\nIMGID:2\tO\n"))
    assert (tweet.id, tweet.tokens) == ("1", ["IMGID:2"])


def test_captions_file_reads_ids_and_captions_including_empty_ones(tmp_path):
    path = write_file(
        tmp_path / "captions.txt", "101.jpg :a man on a stage\n\n102.jpg :\n17_06_1.jpg :a sign: open\n"
    )
    assert read_captions_file(path) == {"101": "a man on a stage", "102": "", "17_06_1": "a sign: open"}


@pytest.mark.parametrize(
    ("text", "line_number", "error_type"),
    [
        ("101.jpg :a\n102 a cat\n", 2, CorpusFormatError),
        ("101.jpg :a\n101.jpg :b\n", 2, DuplicateTweetIdError),
        (b"101.jpg :caf\xc3\n", 1, CorpusFormatError),
    ],
)
def test_captions_file_errors_name_the_line(tmp_path, text, line_number, error_type):
    path = write_file(tmp_path / "captions.txt", text)
    with pytest.raises(error_type) as raised:
        read_captions_file(path)
    assert raised.value.line_number == line_number
    assert str(path) in str(raised.value)


def test_objects_file_keeps_label_and_score_in_file_order(tmp_path):
    detections = {
        "101": [{"label": "person", "score": 0.9, "box": [1, 2, 3, 4]}, {"label": "dog", "score": 1}]
    }
    path = write_file(tmp_path / "objects.json", json.dumps(detections))
    assert read_objects_file(path) == {
        "101": [{"label": "person", "score": 0.9}, {"label": "dog", "score": 1.0}]
    }


@pytest.mark.parametrize(
    ("content", "message", "line_number"),
    [
        ('{\n"101": [\n{"label": "person", "score": 0.9},\n]\n}', "invalid JSON", 4),
        ('[{"label": "person", "score": 0.9}]', "expected a JSON object", 1),
        ('{\n"101": {"label": "person"}\n}', "expected a list", 2),
        ('{\n"101": [],\n"102": [{"label": "", "score": 0.5}]\n}', "label must be a non-empty string", 3),
        ('{\n"102": [{"label": "cat", "score": 1.5}]\n}', "score must be a number in [0, 1]", 2),
        ('{\n"102": [{"label": "cat", "score": true}]\n}', "score must be a number in [0, 1]", 2),
        ('{\n"102": [{"label": "cat", "score": NaN}]\n}', "score must be a number in [0, 1]", 2),
        ('{\n"101": [],\n"101": []\n}', "duplicate key", 2),
    ],
)
def test_objects_file_errors_name_the_file_entry_and_line(tmp_path, content, message, line_number):
    path = write_file(tmp_path / "objects.json", content)
    with pytest.raises(CorpusFormatError, match=message.replace("[", r"\[").replace("]", r"\]")) as raised:
        read_objects_file(path)
    assert raised.value.line_number == line_number
    assert str(path) in str(raised.value)


def test_loader_attaches_captions_and_objects_by_imgid(corpus_dir, tmp_path):
    captions = write_file(tmp_path / "captions.txt", "101.jpg :a man\n103.jpg :\n999.jpg :not in corpus\n")
    objects = write_file(tmp_path / "objects.json", json.dumps({"102": [{"label": "cup", "score": 0.5}]}))
    train = load_tweet_corpus(corpus_dir, captions_file=captions, objects_file=objects)["train"]
    assert train["caption"] == ["a man", "", ""]
    assert train["objects"] == [[], [{"label": "cup", "score": 0.5}], []]


@pytest.fixture
def image_dir(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    PILImage.new("RGB", (20, 10), (255, 0, 0)).save(folder / "101.jpg")
    write_file(folder / "102.jpg", b"this is not a jpeg")
    return folder


def test_loader_links_existing_images_masks_missing_and_keeps_corrupt_paths(corpus_dir, image_dir):
    train = load_tweet_corpus(corpus_dir, image_dir=image_dir)["train"]
    paths = train.cast_column("image", Image(decode=False))["image"]
    assert paths[0]["path"] == str(image_dir.absolute() / "101.jpg")
    assert paths[1]["path"] == str(image_dir.absolute() / "102.jpg")
    assert paths[2] is None
    assert train[0]["image"].size == (20, 10)
    # The corrupt file loads; it fails only when decoded, where later code masks it.
    with pytest.raises(PILImage.UnidentifiedImageError):
        train[1]["image"]


@pytest.mark.parametrize("bad_id", ["../escape", "sub/dir", "/etc/passwd", "a\\b"])
def test_imgid_that_would_leave_the_image_folder_is_refused(tmp_path, image_dir, bad_id):
    write_file(tmp_path / "c" / "train.txt", f"IMGID:ok\nx\tO\n\nIMGID:{bad_id}\ny\tO\n")
    with pytest.raises(CorpusFormatError, match="outside") as raised:
        load_tweet_corpus(tmp_path / "c", image_dir=image_dir)
    assert raised.value.line_number == 4
    # Without an image folder no path is built, so the same corpus loads.
    assert load_tweet_corpus(tmp_path / "c")["train"]["id"] == ["ok", bad_id]


def test_loader_refuses_a_missing_image_folder(corpus_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="image folder"):
        load_tweet_corpus(corpus_dir, image_dir=tmp_path / "no-images")


def test_write_conll_round_trips_through_the_loader(corpus_dir, tmp_path):
    original = load_tweet_corpus(corpus_dir)["train"]
    (tmp_path / "copy").mkdir()
    write_conll(original, tmp_path / "copy" / "train.txt")
    copy = load_tweet_corpus(tmp_path / "copy")["train"]
    assert copy.to_dict() == original.to_dict()
    assert (tmp_path / "copy" / "train.txt").read_text(encoding="utf-8").startswith("IMGID:101\nRT\tO\n")


def test_write_conll_accepts_tag_names_and_writes_other_as_misc(tmp_path):
    rows = [{"id": "a", "tokens": ["World", "Cup"], "ner_tags": ["B-OTHER", "I-OTHER"]}]
    (tweet,) = read_conll_file(write_conll(rows, tmp_path / "t.txt"))
    assert tweet.tags == ["B-MISC", "I-MISC"]


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"id": "a", "tokens": ["x\ty"], "ner_tags": [0]}, "without tab or newline"),
        ({"id": "a", "tokens": ["x\ny"], "ner_tags": [0]}, "without tab or newline"),
        ({"id": "a", "tokens": [""], "ner_tags": [0]}, "non-empty"),
        ({"id": "a", "tokens": [], "ner_tags": []}, "at least one token"),
        ({"id": "a", "tokens": ["x", "y"], "ner_tags": [0]}, "at least one token and one tag per token"),
        ({"id": " a", "tokens": ["x"], "ner_tags": [0]}, "surrounding spaces"),
        ({"id": "a\nb", "tokens": ["x"], "ner_tags": [0]}, "without tab, newline"),
        ({"id": "a\tb", "tokens": ["x"], "ner_tags": [0]}, "without tab, newline"),
        ({"id": "a", "tokens": ["x"], "ner_tags": [9]}, "unknown tag"),
        ({"id": "a", "tokens": ["x"], "ner_tags": ["B-CITY"]}, "unknown tag"),
        ({"id": "a", "tokens": ["\ud800"], "ner_tags": [0]}, "UTF-8"),
    ],
)
def test_write_conll_refuses_rows_that_would_not_round_trip(tmp_path, row, message):
    with pytest.raises(ValueError, match=message):
        write_conll([row], tmp_path / "t.txt")


def test_write_conll_refuses_repeated_ids(tmp_path):
    rows = [{"id": "a", "tokens": ["x"], "ner_tags": [0]}] * 2
    with pytest.raises(ValueError, match="repeats"):
        write_conll(rows, tmp_path / "t.txt")


TOKEN_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\t\n"), min_size=1, max_size=6
)
ID_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=8).filter(
    lambda text: text.strip() == text and "\t" not in text and "\n" not in text
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    st.lists(
        st.tuples(
            ID_TEXT, st.lists(st.tuples(TOKEN_TEXT, st.sampled_from(LABEL_NAMES)), min_size=1, max_size=5)
        ),
        min_size=1,
        max_size=4,
        unique_by=lambda tweet: tweet[0],
    )
)
def test_write_then_read_is_the_identity(tmp_path, tweets):
    rows = [
        {"id": i, "tokens": [t for t, _ in pairs], "ner_tags": [LABEL_TO_ID[g] for _, g in pairs]}
        for i, pairs in tweets
    ]
    path = write_conll(Dataset.from_list(rows), tmp_path / "train.txt")
    read_back = [
        {"id": t.id, "tokens": t.tokens, "ner_tags": [LABEL_TO_ID[g] for g in t.tags]}
        for t in read_conll_file(path)
    ]
    assert read_back == rows


def test_corpus_stats_counts_b_tags_lenient_entities_and_coverage(corpus_dir, image_dir, tmp_path):
    captions = write_file(tmp_path / "captions.txt", "101.jpg :a man\n103.jpg :\n")
    objects = write_file(tmp_path / "objects.json", json.dumps({"102": [{"label": "cup", "score": 0.5}]}))
    corpus = load_tweet_corpus(corpus_dir, image_dir=image_dir, captions_file=captions, objects_file=objects)
    stats = corpus_stats(corpus)
    train = stats["train"]
    assert (train["tweets"], train["tokens"]) == (3, 13)
    assert train["entities_b_only"] == {"PER": 1, "LOC": 1, "ORG": 1, "MISC": 1, "total": 4}
    # "London I-LOC" after O opens an entity in lenient reading.
    assert train["entities_lenient"] == {"PER": 1, "LOC": 2, "ORG": 1, "MISC": 1, "total": 5}
    assert train["inside_tags_opening_entity"] == 1
    assert (train["with_image"], train["missing_image"], train["with_caption"], train["with_objects"]) == (
        2,
        1,
        1,
        1,
    )
    assert stats["valid"]["tweets"] == 1
    table = format_corpus_stats(stats)
    assert "I- tags opening an entity" in table
    assert "1 (33.3%)" in table  # captions: one of three tweets


def test_stats_command_prints_the_table_and_reports_errors(corpus_dir, tmp_path, capsys):
    assert main(["stats", str(corpus_dir)]) == 0
    out = capsys.readouterr().out
    assert out.split("\n")[0].split() == ["train", "valid"]
    assert out.split("\n")[1].split() == ["tweets", "3", "1"]
    write_file(tmp_path / "bad" / "train.txt", "IMGID:1\nx O\n")
    assert main(["stats", str(tmp_path / "bad")]) == 1
    assert "line 2" in capsys.readouterr().err
