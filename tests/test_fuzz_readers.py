"""Property-based fuzzing of the readers of untrusted files: the CoNLL corpus loader, the captions and objects
readers, the neighbour-table reader and the pipeline's raw-text word splitter.

What must hold for any input: the reader returns a valid result or raises its documented error type
(`CorpusFormatError` for corpus, captions and objects files; `ValueError` for a neighbour table), never
anything else; writing a corpus (or objects file, or table) and reading it back is the identity; splitting
raw text into words and mapping the offsets back reproduces the text spans.

CI runs a fixed seed (`derandomize=True`) and a small budget. `MGCM_FUZZ_EXAMPLES=10000` (see
`benchmarks/fuzz_readers.py`) runs the local budget of at least 10,000 generated cases per target.
"""

import json
import os
import random
import unicodedata

import numpy as np
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors
from transformers import AutoProcessor

from modeling_mgcm.neighbour_table import CHECKSUM_KEY, TABLE_FILE_NAME, NeighbourTable, _content_digest
from modeling_mgcm.tweet_tokenizer import split_tweet
from processing.corpus.labels import LABEL_NAMES, LABEL_TO_ID, TAG_ALIASES
from processing.corpus.tweet_corpus import (
    CorpusFormatError,
    load_tweet_corpus,
    read_captions_file,
    read_conll_file,
    read_objects_file,
    write_conll,
)
from processing.images.object_detection import write_objects_file
from processing.text.neighbour_search import neighbour_table_from_embeddings


def safetensors_metadata(data: bytes) -> dict[str, str]:
    """The `__metadata__` of a safetensors file's header."""
    header_length = int.from_bytes(data[:8], "little")
    return dict(json.loads(data[8 : 8 + header_length])["__metadata__"])


FUZZ_EXAMPLES = int(os.environ.get("MGCM_FUZZ_EXAMPLES", "100"))
FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

# Any character a UTF-8 file can hold (lone surrogates cannot be encoded).
ANY_CHARACTER = st.characters(blacklist_categories=("Cs",))
ANY_TEXT = st.text(ANY_CHARACTER, max_size=12)
# Characters that make line-based formats interesting: separators, spaces of every kind, marks, controls.
AWKWARD_CHARACTERS = st.sampled_from(
    ["\t", "\r", "\n", " ", "\u00a0", "\u2028", "\u0085", "\ufeff", "\ufffd", "\u200d", "\u0301", "\x00", ":"]
)
AWKWARD_TEXT = st.text(st.one_of(ANY_CHARACTER, AWKWARD_CHARACTERS), max_size=12)
TAG_TEXT = st.one_of(
    st.sampled_from(LABEL_NAMES + list(TAG_ALIASES)), st.sampled_from([" O", "O ", "B-", "X"])
)


def file_bytes(
    lines: list[str], newline: str, byte_order_mark: bool, garbage: bytes, garbage_at: int
) -> bytes:
    """A text file from lines, optionally with a BOM and some raw bytes spliced in."""
    data = (("\ufeff" if byte_order_mark else "") + newline.join(lines)).encode("utf-8")
    position = garbage_at % (len(data) + 1)
    return data[:position] + garbage + data[position:]


def text_files(line: st.SearchStrategy[str]) -> st.SearchStrategy[bytes]:
    """Files made of `line`s, mostly valid UTF-8, plus some arbitrary bytes."""
    structured = st.builds(
        file_bytes,
        st.lists(line, max_size=16),
        st.sampled_from(["\n", "\r\n"]),
        st.booleans(),
        st.one_of(st.just(b""), st.binary(max_size=4)),
        st.integers(min_value=0, max_value=10_000),
    )
    return st.one_of(structured, structured, structured, st.binary(max_size=200))


# ----------------------------------------------------------------------------------------------------------
# The CoNLL corpus loader

CONLL_LINE = st.one_of(
    st.builds(
        lambda image_id: "IMGID:" + image_id,
        st.one_of(st.sampled_from(["1", "2", " 1", "a/b", ".."]), AWKWARD_TEXT),
    ),
    st.builds(lambda token, tag: f"{token}\t{tag}", AWKWARD_TEXT, TAG_TEXT),
    st.builds(lambda token, tag: f"{token}\t{tag}", st.sampled_from(["x", "RT", "@user"]), TAG_TEXT),
    st.just(""),
    AWKWARD_TEXT,
)


def check_tweets(tweets) -> None:
    """What any successful read guarantees."""
    assert len({tweet.id for tweet in tweets}) == len(tweets)
    for tweet in tweets:
        assert tweet.id and tweet.id == tweet.id.strip() and "\t" not in tweet.id and "\n" not in tweet.id
        assert tweet.tokens and len(tweet.tokens) == len(tweet.tags)
        assert all(token and "\t" not in token and "\n" not in token for token in tweet.tokens)
        assert all(tag in LABEL_TO_ID for tag in tweet.tags)


@FUZZ
@given(text_files(CONLL_LINE))
def test_conll_reader_reads_or_raises_a_format_error_and_what_it_reads_writes_back(tmp_path, data):
    path = tmp_path / "train.txt"
    path.write_bytes(data)
    try:
        tweets = read_conll_file(path)
    except CorpusFormatError as error:
        assert error.path == str(path)
        return
    check_tweets(tweets)
    # What was read is a valid corpus: written back and read again, it is the same.
    rows = [{"id": tweet.id, "tokens": tweet.tokens, "ner_tags": tweet.tags} for tweet in tweets]
    reread = read_conll_file(write_conll(rows, tmp_path / "again.txt"))
    assert [(t.id, t.tokens, t.tags) for t in reread] == [(t.id, t.tokens, t.tags) for t in tweets]


@FUZZ
@given(text_files(CONLL_LINE))
def test_corpus_loader_with_images_captions_and_objects_loads_or_raises_a_format_error(tmp_path, data):
    corpus_dir, image_dir = tmp_path / "corpus", tmp_path / "images"
    corpus_dir.mkdir(exist_ok=True)
    image_dir.mkdir(exist_ok=True)
    (corpus_dir / "train.txt").write_bytes(data)
    captions = tmp_path / "captions.txt"
    captions.write_text("1.jpg :a caption\n2.jpg :\n")
    objects = tmp_path / "objects.json"
    objects.write_text('{"1": [{"label": "person", "score": 0.9}]}')
    try:
        corpus = load_tweet_corpus(
            corpus_dir, image_dir=image_dir, captions_file=captions, objects_file=objects
        )
    except CorpusFormatError:
        return
    tweets = read_conll_file(corpus_dir / "train.txt")
    train = corpus["train"]
    assert train["id"] == [tweet.id for tweet in tweets]
    assert train["tokens"] == [tweet.tokens for tweet in tweets]
    assert train["caption"] == [{"1": "a caption"}.get(tweet.id, "") for tweet in tweets]
    assert train["image"] == [None] * len(tweets)


TOKEN_TEXT = st.text(st.one_of(ANY_CHARACTER, AWKWARD_CHARACTERS), min_size=1, max_size=8).filter(
    lambda text: "\t" not in text and "\n" not in text
)
ID_TEXT = st.text(st.one_of(ANY_CHARACTER, AWKWARD_CHARACTERS), min_size=1, max_size=10).filter(
    lambda text: text.strip() == text and "\t" not in text and "\n" not in text
)
CORPUS_ROWS = st.lists(
    st.tuples(
        ID_TEXT,
        st.lists(st.tuples(TOKEN_TEXT, st.sampled_from(range(len(LABEL_NAMES)))), min_size=1, max_size=6),
    ),
    min_size=1,
    max_size=5,
    unique_by=lambda row: row[0],
)


@FUZZ
@given(CORPUS_ROWS)
def test_writing_a_corpus_and_loading_it_back_is_the_identity(tmp_path, rows):
    corpus_dir = tmp_path / "corpus"
    corpus_dir.mkdir(exist_ok=True)
    rows = [
        {"id": image_id, "tokens": [token for token, _ in pairs], "ner_tags": [tag for _, tag in pairs]}
        for image_id, pairs in rows
    ]
    write_conll(rows, corpus_dir / "valid.txt")
    loaded = load_tweet_corpus(corpus_dir)["valid"]
    assert loaded.select_columns(["id", "tokens", "ner_tags"]).to_list() == rows


# ----------------------------------------------------------------------------------------------------------
# Captions and objects files

CAPTION_LINE = st.one_of(
    st.builds(lambda image_id, caption: f"{image_id}.jpg :{caption}", AWKWARD_TEXT, AWKWARD_TEXT),
    st.just(""),
    AWKWARD_TEXT,
)


@FUZZ
@given(text_files(CAPTION_LINE))
def test_captions_reader_reads_or_raises_a_format_error(tmp_path, data):
    path = tmp_path / "captions.txt"
    path.write_bytes(data)
    try:
        captions = read_captions_file(path)
    except CorpusFormatError as error:
        assert error.path == str(path)
        return
    for image_id, caption in captions.items():
        assert image_id and image_id == image_id.strip() and caption == caption.strip()


# A leading U+FEFF on the first line is the file's byte-order mark, by design not part of the IMGID.
CAPTION_ID = ID_TEXT.filter(lambda text: ".jpg :" not in text and not text.startswith("\ufeff"))
CAPTION_TEXT = st.text(st.one_of(ANY_CHARACTER, AWKWARD_CHARACTERS), max_size=30).filter(
    lambda text: "\n" not in text
)


@FUZZ
@given(st.dictionaries(CAPTION_ID, CAPTION_TEXT, max_size=6), st.sampled_from(["\n", "\r\n"]))
def test_a_captions_file_reads_back_the_captions_it_was_written_from(tmp_path, captions, newline):
    path = tmp_path / "captions.txt"
    path.write_bytes(newline.join(f"{i}.jpg :{c}" for i, c in captions.items()).encode("utf-8"))
    assert read_captions_file(path) == {image_id: caption.strip() for image_id, caption in captions.items()}


JSON_VALUE = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from([0, 1, 0.5, -0.0, 1.0000001, "person", ""]),
        ANY_TEXT,
    ),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(st.one_of(st.sampled_from(["label", "score", "1"]), ANY_TEXT), children, max_size=4),
    ),
    max_leaves=12,
)
OBJECTS_TEXT = st.one_of(
    JSON_VALUE.map(json.dumps),
    st.dictionaries(ANY_TEXT, JSON_VALUE, max_size=4).map(
        lambda value: json.dumps(value, ensure_ascii=False)
    ),
    st.builds(
        lambda text, cut: text[: cut % (len(text) + 1)], JSON_VALUE.map(json.dumps), st.integers(0, 500)
    ),
)


@FUZZ
@given(st.one_of(OBJECTS_TEXT.map(lambda text: text.encode("utf-8")), text_files(ANY_TEXT)))
def test_objects_reader_reads_or_raises_a_format_error(tmp_path, data):
    path = tmp_path / "objects.json"
    path.write_bytes(data)
    try:
        objects = read_objects_file(path)
    except CorpusFormatError as error:
        assert error.path == str(path)
        return
    for detections in objects.values():
        for detection in detections:
            assert set(detection) == {"label", "score"}
            assert isinstance(detection["label"], str) and detection["label"]
            assert isinstance(detection["score"], float) and 0 <= detection["score"] <= 1


DETECTIONS = st.lists(
    st.fixed_dictionaries(
        {
            "label": st.text(ANY_CHARACTER, min_size=1, max_size=8),
            "score": st.floats(min_value=0, max_value=1),
        }
    ),
    max_size=4,
)


@FUZZ
@given(st.dictionaries(st.text(ANY_CHARACTER, max_size=8), DETECTIONS, max_size=5))
def test_writing_an_objects_file_and_reading_it_back_is_the_identity(tmp_path, objects):
    path = write_objects_file(objects, tmp_path / "objects.json")
    assert read_objects_file(path) == objects


@pytest.mark.parametrize(
    "text",
    [
        '{"1": [{"label": "person", "score": ' + "1" * 5000 + "}]}",
        "[" * 100_000 + "]" * 100_000,
        '{"1": ' + "[" * 5000 + "]" * 5000 + "}",
    ],
    ids=["5000-digit number", "100000-deep nesting", "5000-deep value"],
)
def test_objects_reader_turns_pathological_json_into_a_format_error(tmp_path, text):
    """Inputs a random JSON generator does not reach: Python's integer-size limit and recursion limit."""
    path = tmp_path / "objects.json"
    path.write_text(text)
    with pytest.raises(CorpusFormatError, match="objects.json"):
        read_objects_file(path)


# ----------------------------------------------------------------------------------------------------------
# The neighbour-table reader

TABLE_TENSOR_NAMES = ["neighbour_indices", "neighbour_weights", "neighbour_vectors"]
ARRAY = st.builds(
    lambda dtype, shape, seed: np.random.default_rng(seed).normal(scale=3, size=shape).astype(dtype),
    st.sampled_from([np.float32, np.float16, np.float64, np.int32, np.int64, np.uint8, np.int8]),
    st.lists(st.integers(0, 3), max_size=3).map(tuple),
    st.integers(0, 2**32 - 1),
)
JSON_TEXT = st.one_of(JSON_VALUE.map(json.dumps), st.lists(ANY_TEXT, max_size=4).map(json.dumps), ANY_TEXT)
TABLE_METADATA_KEYS = ["format", "format_version", "normalise", "vocabulary", "neighbour_words", "source"]
# One change to a valid table file: a tensor replaced or removed, a metadata entry replaced or removed.
TABLE_CHANGE = st.one_of(
    st.tuples(
        st.just("tensor"), st.sampled_from(TABLE_TENSOR_NAMES + ["other"]), st.one_of(st.none(), ARRAY)
    ),
    st.tuples(
        st.just("metadata"),
        st.sampled_from(TABLE_METADATA_KEYS),
        st.one_of(st.none(), JSON_TEXT, st.sampled_from(["true", "false", "1", "2", '["w0"]', "[]", "[1]"])),
    ),
)


def small_table(seed: int, num_words: int, dim: int, k: int) -> NeighbourTable:
    rng = np.random.default_rng(seed)
    words = [f"w{index}" for index in range(num_words)]
    return neighbour_table_from_embeddings(words, rng.normal(size=(num_words, dim)), k=k)


@pytest.fixture(scope="module")
def saved_table(tmp_path_factory):
    """A valid table and the bytes of its file."""
    folder = tmp_path_factory.mktemp("table")
    table = small_table(0, 12, 4, 3)
    table.save_pretrained(folder)
    return table, (folder / TABLE_FILE_NAME).read_bytes()


def check_table(table: NeighbourTable) -> None:
    """What any table that loads guarantees: its lookups have the contract shapes and finite values."""
    words = table.vocabulary[:3] + ["never-seen-word"]
    vectors, weights = table.lookup(words)
    assert vectors.shape == (len(words), table.k, table.dim) and vectors.dtype == np.float32
    assert weights.shape == (len(words), table.k) and weights.dtype == np.float32
    assert np.isfinite(vectors).all() and np.isfinite(weights).all()


@FUZZ
@given(st.lists(TABLE_CHANGE, min_size=1, max_size=3), st.sampled_from(["stale", "dropped", "recomputed"]))
@example([("metadata", "vocabulary", "true")], "recomputed")
@example([("metadata", "neighbour_words", "[1]")], "recomputed")
@example([("metadata", "normalise", '"yes"')], "recomputed")
@example([("tensor", "neighbour_indices", np.zeros((12, 3), np.float32))], "recomputed")
@example([("tensor", "neighbour_vectors", np.full((10, 4), np.nan, np.float32))], "recomputed")
def test_neighbour_table_reader_loads_only_valid_tables(tmp_path, saved_table, changes, checksum):
    """Valid safetensors files whose contents are not a valid table. With a recomputed checksum (a hand-made
    or deliberately altered file) the reader's own checks are all that stands."""
    _, data = saved_table
    tensors, metadata = load_safetensors(data), safetensors_metadata(data)
    for kind, name, value in changes:
        target = tensors if kind == "tensor" else metadata
        if value is None:
            target.pop(name, None)
        else:
            target[name] = value
    if checksum == "dropped":
        del metadata[CHECKSUM_KEY]
    elif checksum == "recomputed":
        metadata[CHECKSUM_KEY] = _content_digest(tensors, metadata)
    path = tmp_path / TABLE_FILE_NAME
    path.write_bytes(save_safetensors(tensors, metadata=metadata))
    try:
        table = NeighbourTable.from_pretrained(tmp_path)
    except ValueError as error:
        assert str(path) in str(error)
        return
    check_table(table)


@FUZZ
@given(st.binary(max_size=300))
def test_neighbour_table_reader_refuses_arbitrary_bytes(tmp_path, data):
    path = tmp_path / TABLE_FILE_NAME
    path.write_bytes(data)
    with pytest.raises(ValueError, match=str(path)):
        NeighbourTable.from_pretrained(tmp_path)


@FUZZ
@given(
    st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)), min_size=1, max_size=3),
    st.one_of(st.none(), st.integers(0, 10**6)),
    st.binary(max_size=8),
)
def test_a_damaged_neighbour_table_file_is_refused_or_reads_as_it_was_written(
    tmp_path, saved_table, flips, cut, appended
):
    table, data = saved_table
    damaged = bytearray(data)
    for position, mask in flips:
        damaged[position % len(damaged)] ^= mask
    if cut is not None:
        damaged = damaged[: cut % len(damaged)]
    path = tmp_path / TABLE_FILE_NAME
    path.write_bytes(bytes(damaged) + appended)
    try:
        loaded = NeighbourTable.from_pretrained(tmp_path)
    except ValueError as error:
        assert str(path) in str(error)
        return
    # A change that does not make the file invalid must not change what it says either.
    assert loaded.vocabulary == table.vocabulary and loaded.neighbour_words == table.neighbour_words
    for name in TABLE_TENSOR_NAMES:
        np.testing.assert_array_equal(getattr(loaded, name), getattr(table, name))


@FUZZ
@given(
    st.lists(st.text(ANY_CHARACTER, min_size=1, max_size=6), min_size=3, max_size=10, unique=True),
    st.integers(1, 6),
    st.integers(0, 2**32 - 1),
    st.booleans(),
)
def test_saving_a_neighbour_table_and_loading_it_back_is_the_identity(tmp_path, words, dim, seed, normalise):
    vectors = np.random.default_rng(seed).normal(size=(len(words), dim))
    table = neighbour_table_from_embeddings(
        words, vectors, k=random.Random(seed).randint(1, len(words) - 1), normalise=normalise
    )
    table.save_pretrained(tmp_path)
    loaded = NeighbourTable.from_pretrained(tmp_path)
    assert (loaded.vocabulary, loaded.neighbour_words, loaded.normalise) == (
        table.vocabulary,
        table.neighbour_words,
        table.normalise,
    )
    for name in TABLE_TENSOR_NAMES:
        np.testing.assert_array_equal(getattr(loaded, name), getattr(table, name))


# ----------------------------------------------------------------------------------------------------------
# The pipeline's raw-text word splitter

# Pieces of real tweets, so that generated text meets the splitter's special cases often.
TWEET_FRAGMENTS = [
    "@user",
    "#tag",
    "$AAPL",
    "http://t.co/xyz",
    "https://x.co/a)",
    "www.site.com/p?",
    "bit.ly/x",
    "a@b.co",
    "&amp;",
    "&#39;",
    ":)",
    ":-(",
    "<3",
    "...",
    "!!!",
    "U.S.",
    "I've",
    "T-Mobile",
    "2014-15",
    "10:30",
    "3.5",
    "AT&T",
    "😀",
    "👍🏽",
    "👨‍👩‍👧",
    "🇫🇷",
    "#️⃣",
    "❤️",
    "e\u0301",
    "\u0915\u094d\u0937",
    "مرحبا",
    "שלום",
    "\u200f",
    "\u202e",
    "\u200b",
    "\u200d",
    "\u00a0",
    "\ufffd",
    "\ufeff",
    "\u2028",
    "\x00",
    "\x1b",
    "\t",
    "\r\n",
    " ",
    "…",
    "“",
    "’",
    "(",
    ")",
]
TWEET_TEXT = st.lists(
    st.one_of(st.sampled_from(TWEET_FRAGMENTS), st.text(ANY_CHARACTER, max_size=4)), max_size=14
).map("".join)
# Independent of the splitter's own tables: what can never be inside a word, and what may be left between words.
NEVER_IN_A_WORD = {"Cc", "Zs", "Zl", "Zp", "Cs"}
MAY_SEPARATE_WORDS = NEVER_IN_A_WORD | {"Cf"}


@FUZZ
@given(st.one_of(TWEET_TEXT, st.text(ANY_CHARACTER), st.text(st.characters())))
def test_splitting_raw_text_then_mapping_offsets_back_reproduces_the_text_spans(text):
    words = split_tweet(text)
    previous_end = 0
    covered = [False] * len(text)
    for word, start, end in words:
        assert text[start:end] == word and word
        assert previous_end <= start < end
        previous_end = end
        assert not any(
            character.isspace() or unicodedata.category(character) in NEVER_IN_A_WORD for character in word
        )
        covered[start:end] = [True] * (end - start)
    # Nothing but separators is dropped: every other character is in a word.
    dropped = [character for character, inside in zip(text, covered, strict=True) if not inside]
    assert all(
        character.isspace() or unicodedata.category(character) in MAY_SEPARATE_WORDS for character in dropped
    )


@pytest.fixture(scope="module")
def processor(tiny_mgcm_dir):
    """The tiny model's processor: 32-piece windows, so longer generated posts are windowed."""
    return AutoProcessor.from_pretrained(tiny_mgcm_dir)


@FUZZ
@given(st.lists(TWEET_TEXT, min_size=1, max_size=4).map(" ".join))
def test_split_words_are_words_the_processor_encodes(processor, text):
    """Whatever the splitter gives the processor is a valid tweet: every word gets a slot in a window."""
    words = [word for word, _, _ in split_tweet(text)]
    if not words:
        return
    windows = processor.encode_windows([words])
    covered = set()
    for window in windows:
        offset = window["window_word_offset"]
        assert window["words"] == words[offset : offset + len(window["words"])]
        assert len(window["word_shape_ids"]) == len(window["words"])
        assert set(window["word_ids"]) - {-1} == set(range(len(window["words"])))
        covered.update(range(offset, offset + len(window["words"])))
    assert covered == set(range(len(words)))
