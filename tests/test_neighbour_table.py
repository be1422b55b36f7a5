"""Semantic-augmentation neighbour table: word-vector files, tweet normalisation, exact cosine top-k with
softmax weights, OOV masking, kept vocabulary, disk cache and save/load."""

import os

import numpy as np
import pytest
from safetensors.numpy import save_file

from modeling_mgcm.neighbour_table import TABLE_FILE_NAME, NeighbourTable
from modeling_mgcm.tweet_normalise import NUMBER_CLASS_TOKEN, URL_CLASS_TOKEN, normalise_token
from processing.text.neighbour_search import build_neighbour_table, neighbour_table_from_embeddings
from processing.text.word_vectors import WordVectors, WordVectorsFormatError, load_word_vectors


def random_vectors(num_words: int, dim: int, seed: int = 0) -> WordVectors:
    rng = np.random.default_rng(seed)
    words = [f"w{index}" for index in range(num_words)]
    return WordVectors(words, rng.normal(size=(num_words, dim)).astype(np.float32))


def brute_force_neighbours(vectors: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (V, k) of each row's k most cosine-similar other rows, and their softmax weights."""
    unit = vectors.astype(np.float64) / np.linalg.norm(vectors, axis=1, keepdims=True)
    similarities = unit @ unit.T
    np.fill_diagonal(similarities, -np.inf)
    order = np.argsort(-similarities, axis=1, kind="stable")[:, :k]
    top = np.take_along_axis(similarities, order, axis=1)
    weights = np.exp(top) / np.exp(top).sum(axis=1, keepdims=True)
    return order, weights


def write_glove_text(path, words, vectors, header=False, trailing_space=False):
    with open(path, "w", encoding="utf-8") as stream:
        if header:
            stream.write(f"{len(words)} {vectors.shape[1]}\n")
        for word, vector in zip(words, vectors, strict=True):
            values = " ".join(repr(float(value)) for value in vector)
            stream.write(f"{word} {values}{' ' if trailing_space else ''}\n")


def write_vectors_folder(folder, words, vectors):
    os.makedirs(folder, exist_ok=True)
    np.save(os.path.join(folder, "vectors.npy"), vectors)
    with open(os.path.join(folder, "words.txt"), "w", encoding="utf-8") as stream:
        stream.write("\n".join(words) + "\n")


# A small lower-case vocabulary in which the neighbours are known by construction: each word's vector is
# a cluster centre plus a little noise, so its neighbours are the other members of its cluster.
CLUSTERS = {
    "city": ["paris", "london", "berlin", "rome", "madrid"],
    "web": ["url", "link", "website", "webpage", "online"],
    "number": ["1", "2", "3", "4", "5"],
    "sport": ["football", "soccer", "tennis", "rugby", "golf"],
}


@pytest.fixture(scope="module")
def clustered_vectors() -> WordVectors:
    rng = np.random.default_rng(1)
    words, rows = [], []
    for centre_seed, members in enumerate(CLUSTERS.values()):
        centre = np.random.default_rng(100 + centre_seed).normal(size=8)
        for word in members:
            words.append(word)
            rows.append(centre + 0.05 * rng.normal(size=8))
    return WordVectors(words, np.array(rows, dtype=np.float32))


# Normalisation


@pytest.mark.parametrize(
    ("token", "expected"),
    [
        ("Paris", "paris"),
        ("PARIS", "paris"),
        ("#Paris", "paris"),
        ("@Paris", "paris"),
        ("#MetGala", "metgala"),
        ("#", "#"),
        ("@", "@"),
        ("Trump…", "trump"),
        ("…", "…"),
        ("&amp", "&"),
        ("cafe\u0301", "café"),
        ("\u00a0", ""),
        ("", ""),
        ("http://t.co/15beLF6Ajw", URL_CLASS_TOKEN),
        ("https://t.co/cyAF0hSUes", URL_CLASS_TOKEN),
        ("http://t…", URL_CLASS_TOKEN),
        ("htt…", URL_CLASS_TOKEN),
        ("co/w7rktBN5ac", URL_CLASS_TOKEN),
        ("www.nytimes.com", URL_CLASS_TOKEN),
        ("2017", NUMBER_CLASS_TOKEN),
        ("1,000", NUMBER_CLASS_TOKEN),
        ("10:30", NUMBER_CLASS_TOKEN),
        ("$5.99", NUMBER_CLASS_TOKEN),
        ("7.5/10", NUMBER_CLASS_TOKEN),
        ("#1", NUMBER_CLASS_TOKEN),
        ("1st", "1st"),
        ("30pm", "30pm"),
    ],
)
def test_normalise_token(token, expected):
    assert normalise_token(token) == expected


def test_lookup_normalises_hashtags_mentions_case_urls_and_numbers(clustered_vectors):
    table = build_neighbour_table(["paris"], clustered_vectors, k=2, keep_top_n=len(clustered_vectors))
    vectors, weights = table.lookup(["paris", "#Paris", "@PARIS", "http://t.co/x", "url", "2017", "1"])
    for same in (1, 2):
        np.testing.assert_array_equal(vectors[same], vectors[0])
        np.testing.assert_array_equal(weights[same], weights[0])
    np.testing.assert_array_equal(vectors[3], vectors[4])
    np.testing.assert_array_equal(vectors[5], vectors[6])
    assert {word for word, _ in table.neighbours("#Paris")} <= set(CLUSTERS["city"])
    assert {word for word, _ in table.neighbours("http://t.co/abc")} <= set(CLUSTERS["web"])
    assert {word for word, _ in table.neighbours("2,017")} <= set(CLUSTERS["number"])


def test_without_normalisation_lookups_are_exact(clustered_vectors):
    table = build_neighbour_table(
        [], clustered_vectors, k=2, normalise=False, keep_top_n=len(clustered_vectors)
    )
    _, weights = table.lookup(["paris", "Paris", "#paris", "2017"])
    assert weights[0].sum() == pytest.approx(1.0)
    assert weights[1:].sum() == 0


# Nearest neighbours and weights


@pytest.mark.parametrize(("num_words", "k"), [(40, 3), (1000, 4), (1000, 1)])
def test_neighbours_and_weights_match_brute_force_cosine_and_softmax(num_words, k):
    # 1000 words is enough rows for the block-maxima selection; 40 takes the plain top-k path.
    word_vectors = random_vectors(num_words, dim=12)
    table = build_neighbour_table(word_vectors.words, word_vectors, k=k, keep_top_n=0, batch_size=128)
    expected_rows, expected_weights = brute_force_neighbours(word_vectors.vectors, k)

    vectors, weights = table.lookup(word_vectors.words)

    assert len(table) == num_words and table.k == k and table.dim == 12
    np.testing.assert_array_equal(vectors, word_vectors.vectors[expected_rows])
    np.testing.assert_allclose(weights, expected_weights, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0, rtol=1e-5)
    assert [word for word, _ in table.neighbours("w7")] == [f"w{row}" for row in expected_rows[7]]


def test_a_word_is_never_its_own_neighbour_even_when_its_duplicate_vector_is_closest(clustered_vectors):
    words = clustered_vectors.words + ["paris2"]
    vectors = np.vstack([clustered_vectors.vectors, clustered_vectors.vectors[:1]])
    table = build_neighbour_table(["paris", "paris2"], WordVectors(words, vectors), k=2, keep_top_n=0)
    assert table.neighbours("paris")[0][0] == "paris2"
    assert table.neighbours("paris2")[0][0] == "paris"
    assert all(word != "paris" for word, _ in table.neighbours("paris"))


def test_neighbour_vectors_are_stored_once_each():
    word_vectors = random_vectors(300, dim=6)
    table = build_neighbour_table(word_vectors.words, word_vectors, k=4, keep_top_n=0)
    used = np.unique(table.neighbour_indices)
    assert table.neighbour_vectors.shape[0] == len(table.neighbour_words) == len(used)
    assert len(set(table.neighbour_words)) == len(table.neighbour_words)
    assert table.neighbour_vectors.shape[0] < len(table) * table.k


# OOV and the kept vocabulary


def test_oov_words_get_zero_vectors_and_zero_weights(clustered_vectors):
    table = build_neighbour_table(["paris"], clustered_vectors, k=3, keep_top_n=len(clustered_vectors))
    vectors, weights = table.lookup(["qwertyuiop", "paris", "", "\u00a0", "😂"])
    assert vectors.shape == (5, 3, 8) and vectors.dtype == np.float32
    assert weights.shape == (5, 3) and weights.dtype == np.float32
    assert not weights[[0, 2, 3, 4]].any() and not vectors[[0, 2, 3, 4]].any()
    assert weights[1].sum() == pytest.approx(1.0) and np.abs(vectors[1]).sum() > 0
    assert "paris" in table and "qwertyuiop" not in table and table.neighbours("qwertyuiop") == []


def test_lookup_of_nothing_and_of_a_non_string(clustered_vectors):
    table = build_neighbour_table([], clustered_vectors, k=2, keep_top_n=len(clustered_vectors))
    vectors, weights = table.lookup([])
    assert vectors.shape == (0, 2, 8) and weights.shape == (0, 2)
    with pytest.raises(TypeError, match=r"token 1 is 3 \(int\)"):
        table.lookup(["paris", 3])


def test_kept_vocabulary_is_corpus_words_plus_the_most_frequent_reachable_words():
    words = ["the", "Paris", "1990", "of", "rare", "url", "1", "zzz"]
    vectors = np.random.default_rng(0).normal(size=(len(words), 4)).astype(np.float32)
    vectors[-1] = 0.0  # a zero vector has no neighbours
    table = build_neighbour_table(["RARE", "#zzz", "absent"], WordVectors(words, vectors), k=2, keep_top_n=4)
    # "Paris" (cased) and "1990" (a number) are never produced by normalisation; the class tokens
    # "url" and "1" are kept for new posts; "rare" is kept as a corpus word beyond the top 4.
    assert table.vocabulary == ["the", "of", "rare", "url", "1"]
    assert table.neighbours("zzz") == []


def test_neighbours_come_from_all_vectors_not_only_the_kept_ones(clustered_vectors):
    table = build_neighbour_table(["paris"], clustered_vectors, k=4, keep_top_n=0)
    assert table.vocabulary == ["paris", "url", "1"]
    assert {word for word, _ in table.neighbours("paris")} == set(CLUSTERS["city"]) - {"paris"}


def test_bad_settings_are_refused(clustered_vectors):
    with pytest.raises(ValueError, match=r"k must be an integer in 1\.\.19"):
        build_neighbour_table([], clustered_vectors, k=20)
    with pytest.raises(ValueError, match="keep_top_n must be"):
        build_neighbour_table([], clustered_vectors, keep_top_n=-1)
    with pytest.raises(TypeError, match=r"word 1 is None"):
        build_neighbour_table(["paris", None], clustered_vectors)


def test_from_embeddings_keeps_every_word():
    table = neighbour_table_from_embeddings(
        ["paris", "london", "obama"], np.eye(3, dtype=np.float32) + 0.1, k=2
    )
    assert table.vocabulary == ["paris", "london", "obama"] and table.k == 2


# Word-vector files


def test_glove_word2vec_and_folder_formats_load_the_same_vectors(tmp_path):
    expected = random_vectors(30, dim=5)
    glove, word2vec, folder = tmp_path / "glove.txt", tmp_path / "w2v.txt", tmp_path / "folder"
    write_glove_text(glove, expected.words, expected.vectors)
    write_glove_text(word2vec, expected.words, expected.vectors, header=True, trailing_space=True)
    write_vectors_folder(folder, expected.words, expected.vectors)

    for path in (glove, word2vec, folder):
        loaded = load_word_vectors(path)
        assert loaded.words == expected.words, path
        assert loaded.vectors.dtype == np.float32
        np.testing.assert_array_equal(loaded.vectors, expected.vectors)

    tables = [
        build_neighbour_table(["w3", "w4"], path, k=2, keep_top_n=5) for path in (glove, word2vec, folder)
    ]
    for table in tables[1:]:
        assert table.vocabulary == tables[0].vocabulary
        np.testing.assert_array_equal(table.lookup(["w3"])[0], tables[0].lookup(["w3"])[0])


def test_max_words_keeps_the_first_words(tmp_path):
    expected = random_vectors(10, dim=3)
    write_glove_text(tmp_path / "glove.txt", expected.words, expected.vectors, header=True)
    write_vectors_folder(tmp_path / "folder", expected.words, expected.vectors)
    for path in (tmp_path / "glove.txt", tmp_path / "folder"):
        loaded = load_word_vectors(path, max_words=4)
        assert loaded.words == expected.words[:4]
        np.testing.assert_array_equal(loaded.vectors, expected.vectors[:4])


def test_a_byte_order_mark_is_not_part_of_the_first_word(tmp_path):
    (tmp_path / "glove.txt").write_text("\ufeffthe 0.1 0.2\nof 0.3 0.4\n", encoding="utf-8")
    write_vectors_folder(tmp_path / "folder", ["\ufeffthe", "of"], np.ones((2, 2), dtype=np.float32))
    assert load_word_vectors(tmp_path / "glove.txt").words == ["the", "of"]
    assert load_word_vectors(tmp_path / "folder").words == ["the", "of"]


def test_words_with_spaces_are_read_when_the_extra_fields_are_not_numbers(tmp_path):
    path = tmp_path / "glove.txt"
    path.write_text("the 0.1 0.2\n. . . 0.3 0.4\nat name@x.com 0.5 0.6\n", encoding="utf-8")
    assert load_word_vectors(path).words == ["the", ". . .", "at name@x.com"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            "the 0.1 0.2\nof 0.3\n",
            r"glove\.txt, line 2: expected a word and 2 values, found 1 values after 'of'",
        ),
        ("the 0.1 0.2\nof 0.3 0.4 0.5\n", r"glove\.txt, line 2: expected a word and 2 values, found 3"),
        ("the 0.1 0.2\nof 0.3 abc\n", r"glove\.txt, line 2, field 3: value 'abc' is not a number"),
        ("the 0.1 nan\n", r"glove\.txt, line 1, field 3: value 'nan' is not finite"),
        ("the 0.1 0.2\n\nof 0.3 0.4\n", r"glove\.txt, line 2: empty line"),
        (
            "3 2\nthe 0.1 0.2\nof 0.3 0.4\n",
            r"glove\.txt, line 1: the header announces 3 words but the file has 2",
        ),
        ("the\n", r"glove\.txt, line 1: a word with no values"),
        ("", r"glove\.txt: no word vectors"),
    ],
)
def test_malformed_text_files_are_reported_with_file_and_line(tmp_path, content, message):
    path = tmp_path / "glove.txt"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(WordVectorsFormatError, match=message):
        load_word_vectors(path)


def test_binary_files_are_reported_as_not_utf8(tmp_path):
    path = tmp_path / "glove.txt"
    path.write_bytes(b"the 0.1 0.2\n\xff\xfe 0.3 0.4\n")
    with pytest.raises(WordVectorsFormatError, match=r"glove\.txt, line 2: not UTF-8"):
        load_word_vectors(path)


def test_malformed_folders_are_reported(tmp_path):
    folder = tmp_path / "vectors"
    write_vectors_folder(folder, ["a", "b", "c"], np.ones((3, 2), dtype=np.float32))
    (folder / "words.txt").write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(WordVectorsFormatError, match=r"words\.txt has 2 words but .*vectors\.npy has 3 rows"):
        load_word_vectors(folder)

    (folder / "words.txt").write_text("a\n\nc\n", encoding="utf-8")
    with pytest.raises(WordVectorsFormatError, match=r"words\.txt, line 2: empty word"):
        load_word_vectors(folder)

    (folder / "words.txt").write_text("a\nb\nc\n", encoding="utf-8")
    np.save(folder / "vectors.npy", np.array([[1.0, np.inf], [0, 0], [0, 0]], dtype=np.float32))
    with pytest.raises(
        WordVectorsFormatError, match=r"row 0 \(line 1 of words\.txt, word 'a'\): .*not finite"
    ):
        load_word_vectors(folder)

    np.save(folder / "vectors.npy", np.array([[object(), 1]] * 3, dtype=object), allow_pickle=True)
    with pytest.raises(WordVectorsFormatError, match=r"vectors\.npy: not a plain numeric \.npy array"):
        load_word_vectors(folder)

    os.remove(folder / "words.txt")
    with pytest.raises(FileNotFoundError, match=r"has no words\.txt"):
        load_word_vectors(folder)
    with pytest.raises(FileNotFoundError, match="no such word-vectors file or folder"):
        load_word_vectors(tmp_path / "missing")


# Cache


def test_a_second_build_with_the_same_inputs_is_read_from_the_cache(tmp_path, counted_searches):
    folder = tmp_path / "vectors"
    expected = random_vectors(50, dim=4)
    write_vectors_folder(folder, expected.words, expected.vectors)
    cache = tmp_path / "cache"

    first = build_neighbour_table(["w1", "w2"], folder, k=3, keep_top_n=10, cache_dir=cache)
    cached_files = sorted(os.listdir(cache))
    second = build_neighbour_table(["w2", "w1", "w1"], folder, k=3, keep_top_n=10, cache_dir=cache)

    assert len(counted_searches) == 1
    assert len(cached_files) == 1 and cached_files[0].endswith(".safetensors")
    assert sorted(os.listdir(cache)) == cached_files  # no temporary files left behind
    assert second.vocabulary == first.vocabulary
    np.testing.assert_array_equal(second.neighbour_vectors, first.neighbour_vectors)
    np.testing.assert_array_equal(second.neighbour_weights, first.neighbour_weights)


def test_the_cache_misses_when_k_normalisation_vocabulary_or_vectors_change(tmp_path, counted_searches):
    folder = tmp_path / "vectors"
    expected = random_vectors(50, dim=4)
    write_vectors_folder(folder, expected.words, expected.vectors)
    cache = tmp_path / "cache"

    build_neighbour_table(["w1"], folder, k=3, keep_top_n=10, cache_dir=cache)
    build_neighbour_table(["w1"], folder, k=2, keep_top_n=10, cache_dir=cache)
    build_neighbour_table(["w1"], folder, k=3, keep_top_n=10, normalise=False, cache_dir=cache)
    build_neighbour_table(["w1", "w40"], folder, k=3, keep_top_n=10, cache_dir=cache)
    changed = expected.vectors.copy()
    changed[0, 0] += 1.0
    np.save(folder / "vectors.npy", changed)
    table = build_neighbour_table(["w1"], folder, k=3, keep_top_n=10, cache_dir=cache)

    assert len(counted_searches) == 5
    assert len(os.listdir(cache)) == 5
    fresh = build_neighbour_table(["w1"], WordVectors(expected.words, changed), k=3, keep_top_n=10)
    np.testing.assert_array_equal(table.neighbour_vectors, fresh.neighbour_vectors)


def test_in_memory_vectors_are_cached_by_their_contents(tmp_path, counted_searches):
    word_vectors = random_vectors(40, dim=4)
    build_neighbour_table(["w1"], word_vectors, k=2, keep_top_n=5, cache_dir=tmp_path)
    build_neighbour_table(["w1"], random_vectors(40, dim=4), k=2, keep_top_n=5, cache_dir=tmp_path)
    build_neighbour_table(["w1"], random_vectors(40, dim=4, seed=1), k=2, keep_top_n=5, cache_dir=tmp_path)
    assert len(counted_searches) == 2


# Save and load


def test_save_and_load_round_trip(tmp_path, clustered_vectors):
    table = build_neighbour_table(["paris", "#Football"], clustered_vectors, k=3, keep_top_n=7)
    table.save_pretrained(tmp_path / "table")
    loaded = NeighbourTable.from_pretrained(tmp_path / "table")

    assert os.listdir(tmp_path / "table") == [TABLE_FILE_NAME]
    assert loaded.vocabulary == table.vocabulary and loaded.neighbour_words == table.neighbour_words
    assert (len(loaded), loaded.k, loaded.dim, loaded.normalise) == (len(table), 3, 8, True)
    for name in ("neighbour_indices", "neighbour_weights", "neighbour_vectors"):
        np.testing.assert_array_equal(getattr(loaded, name), getattr(table, name))
    tokens = ["Paris", "football", "unknown", "http://t.co/x"]
    for loaded_array, array in zip(loaded.lookup(tokens), table.lookup(tokens), strict=True):
        np.testing.assert_array_equal(loaded_array, array)


def test_loading_refuses_missing_and_foreign_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="no neighbour table here"):
        NeighbourTable.from_pretrained(tmp_path)
    save_file({"weights": np.zeros(2, dtype=np.float32)}, str(tmp_path / TABLE_FILE_NAME))
    with pytest.raises(ValueError, match=r"neighbour_table\.safetensors: not an mgcm-neighbour-table file"):
        NeighbourTable.from_pretrained(tmp_path)
    (tmp_path / TABLE_FILE_NAME).write_bytes(b"not safetensors")
    with pytest.raises(ValueError, match=r"neighbour_table\.safetensors: not a readable safetensors file"):
        NeighbourTable.from_pretrained(tmp_path)
