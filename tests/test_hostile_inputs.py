"""Hostile and odd inputs, end to end through the processor, the model, the "multimodal-ner" pipeline and the
image feature cache. For each input the outcome is decided and tested: a clear error, masked with a warning,
or works (every word tagged, offsets into the text, the image used when it is an image)."""

import io
import json
import logging
import math
import random
import struct
import tracemalloc
import unicodedata
import warnings
import zlib

import pytest
import torch
from datasets import Dataset, Features, Value
from datasets import Image as ImageFeature
from PIL import Image
from transformers import AutoModelForTokenClassification, AutoProcessor

import modeling_mgcm  # noqa: F401  (registers the Auto classes)
from modeling_mgcm.pipeline_mgcm import BadImageWarning
from modeling_mgcm.word_shape import WORD_SHAPE_NAMES
from processing import ImageFeatureCache, ImageLoadError, load_image, load_tweet_corpus, merge_windows
from processing.corpus.tweet_corpus import CorpusFormatError
from processing.predict_cli import parse_post_line, run_batch
from processing.testing.tiny_backbones import tiny_image_processor

IMAGE_ROWS = Features({"id": Value("string"), "image": ImageFeature()})
LABELS = {"O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"}


@pytest.fixture(scope="module")
def model(tiny_mgcm_dir):
    return AutoModelForTokenClassification.from_pretrained(tiny_mgcm_dir).eval()


@pytest.fixture
def processor(tiny_mgcm_dir):
    return AutoProcessor.from_pretrained(tiny_mgcm_dir)


def tag_words(tagger, post, **options) -> dict:
    """The pipeline's per-word output, checked for what every tagged post guarantees."""
    output = tagger(post, aggregation="words", **options)
    text = output["text"]
    for word in output["words"]:
        assert text[word["start"] : word["end"]] == word["word"] and word["word"]
        assert word["tag"] in LABELS and 0 <= word["score"] <= 1 and math.isfinite(word["score"])
        assert sum(word["marginals"].values()) == pytest.approx(1, abs=1e-4)
    for entity in output["entities"]:
        assert text[entity["start"] : entity["end"]] == entity["word"]
    return output


def words_of(output: dict) -> list[str]:
    return [word["word"] for word in output["words"]]


# ----------------------------------------------------------------------------------------------------------
# Text


def test_an_empty_tweet_has_no_words_in_the_pipeline_and_is_a_clear_error_for_the_processor(
    tagger, processor
):
    for text in ["", "   ", "\u00a0\u200b\ufeff", "\x00\x1b\x7f", "\u202e\u2066"]:
        assert tag_words(tagger, text)["words"] == [] and tagger(text) == []
    with pytest.raises(ValueError, match="tweet 0 has no words: nothing to tag"):
        processor(text="")


def test_a_one_word_tweet_is_tagged(tagger):
    assert words_of(tag_words(tagger, "Obama")) == ["Obama"]


def test_a_400_word_tweet_is_windowed_and_every_word_is_tagged_once(tagger, processor, model):
    words = [f"w{index}" if index % 7 else "Paris" for index in range(400)]
    output = tag_words(tagger, " ".join(words))  # offsets into the text checked there
    assert words_of(output) == words
    # The processor, behind a short post, on words of one to many pieces, a lone NBSP and punctuation: windows
    # of at most 32 pieces that together cover every word, each with the labels of its words.
    rng = random.Random(0)
    vocabulary = ["obama", "paris", "xyz", "a1b2c3", "\u00a0", "!", "london", "abcdefgh"]
    long_post = [rng.choice(vocabulary) for _ in range(400)]
    labels = [rng.randrange(len(LABELS)) for _ in range(400)]
    encoding = processor([["Obama", "in"], long_post], word_labels=[[1, 0], labels], return_tensors="pt")
    mapping = encoding["overflow_to_sample_mapping"].tolist()
    offsets = encoding["window_word_offset"].tolist()
    counts = encoding["word_mask"].sum(1).tolist()
    assert encoding["input_ids"].shape[1] <= 32
    assert mapping[0] == 0 and set(mapping[1:]) == {1} and len(mapping) > 10
    covered = set()
    for window in range(1, len(mapping)):
        span = range(offsets[window], offsets[window] + counts[window])
        covered.update(span)
        assert encoding["labels"][window, : counts[window]].tolist() == labels[span.start : span.stop]
    assert covered == set(range(400))
    # Merged back: one value per word, in order, overlapping windows counted once.
    assert merge_windows(encoding["labels"], mapping, offsets, counts) == [[1, 0], labels]
    one_hot = torch.nn.functional.one_hot(encoding["labels"].clamp(min=0), len(LABELS)).float()
    merged_scores = processor.merge_windows(one_hot, mapping, offsets, counts, num_words=[2, 400])
    assert torch.tensor(merged_scores[1]).argmax(-1).tolist() == labels
    # The model's tags over the pipeline's words, merged the same way, are the pipeline's.
    encoding = processor(words, return_tensors="pt")
    offsets = encoding.pop("window_word_offset")
    mapping = encoding.pop("overflow_to_sample_mapping")
    with torch.no_grad():
        predictions = model(**encoding).predictions
    (merged,) = merge_windows(predictions, mapping, offsets, encoding["word_mask"].sum(1), num_words=[400])
    assert [model.config.id2label[tag] for tag in merged] == [word["tag"] for word in output["words"]]


@pytest.mark.parametrize(
    "text, expected_words, shape",
    [
        ("😀👍🏽🇫🇷👨\u200d👩\u200d👧", ["😀", "👍🏽", "🇫🇷", "👨\u200d👩\u200d👧"], "other"),
        (
            "http://t.co/abc https://x.co/a?b=1 www.site.org/p",
            ["http://t.co/abc", "https://x.co/a?b=1", "www.site.org/p"],
            "url",
        ),
    ],
    ids=["only emoji", "only URLs"],
)
def test_a_tweet_of_only_emoji_or_only_urls_is_tagged_word_by_word(
    tagger, processor, text, expected_words, shape
):
    output = tag_words(tagger, text)
    assert words_of(output) == expected_words
    shapes = {}
    for window in processor.encode_windows([expected_words]):  # long URLs take several windows
        for position, shape_id in enumerate(window["word_shape_ids"]):
            shapes[window["window_word_offset"] + position] = WORD_SHAPE_NAMES[shape_id]
    assert [shapes[index] for index in range(len(expected_words))] == [shape] * len(expected_words)


@pytest.mark.parametrize(
    "text, expected_words",
    [
        ("Obama\u00a0visits\u00a0Paris", ["Obama", "visits", "Paris"]),
        ("Obama \ufffd Paris caf\ufffd", ["Obama", "\ufffd", "Paris", "caf\ufffd"]),
        ("أوباما يزور باريس \u200f@user", ["أوباما", "يزور", "باريس", "@user"]),
        ("\u202bשלום Paris\u202c", ["שלום", "Paris"]),
        ("Zoe\u0301 visits Cafe\u0301 Flore", ["Zoe\u0301", "visits", "Cafe\u0301", "Flore"]),
        (
            "family 👨\u200d👩\u200d👧 and क\u094d\u200dष",
            ["family", "👨\u200d👩\u200d👧", "and", "क\u094d\u200dष"],
        ),
        ("Obama\x00visits\x1bParis\x7f\x85today", ["Obama", "visits", "Paris", "today"]),
    ],
    ids=["NBSP", "U+FFFD", "right-to-left", "bidi embedding", "combining", "zero-width joiner", "controls"],
)
def test_odd_characters_separate_or_stay_in_words_and_every_word_is_tagged(tagger, text, expected_words):
    output = tag_words(tagger, text)
    assert words_of(output) == expected_words
    for word in words_of(output):
        assert not any(unicodedata.category(character) in ("Cc", "Zs") for character in word)


@pytest.mark.parametrize("word", ["\u00a0", "\ufffd", "\u200b", "\x00", "\u0301", "👨\u200d👩\u200d👧"])
def test_a_word_list_holding_an_odd_token_gets_one_tag_per_word(tagger, processor, model, word):
    """Corpus tokens (a lone NBSP, U+FFFD...) come as word lists, not text: each still gets a word slot."""
    words = ["Obama", word, "Paris"]
    encoding = processor(words, return_tensors="pt")
    assert encoding["word_mask"].tolist() == [[1, 1, 1]]
    assert set(encoding["word_ids"][0].tolist()) - {-1} == {0, 1, 2}
    output = tagger({"text": words}, aggregation="words")
    assert words_of(output) == words


# ----------------------------------------------------------------------------------------------------------
# Images


def encoded(image: Image.Image, image_format: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=image_format, **options)
    return buffer.getvalue()


def png_declaring(width: int, height: int) -> bytes:
    """A small PNG file whose header declares `width` x `height` RGB pixels (the data would run out)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 4096))
        + chunk(b"IEND", b"")
    )


def animated_gif() -> bytes:
    frames = [Image.new("P", (32, 24), index * 80) for index in range(3)]
    return encoded(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=100, loop=0)


GOOD_IMAGES = {
    "png with alpha": lambda: encoded(Image.new("RGBA", (40, 30), (200, 20, 20, 90)), "PNG"),
    "grayscale": lambda: encoded(Image.new("L", (40, 30), 128), "PNG"),
    "cmyk jpeg": lambda: encoded(Image.new("CMYK", (40, 30), (0, 200, 200, 10)), "JPEG"),
    "1x1": lambda: encoded(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"),
    "animated gif": animated_gif,
}
BAD_IMAGES = {
    "truncated jpeg": (
        lambda: encoded(Image.linear_gradient("L").convert("RGB"), "JPEG")[:700],
        "truncated",
    ),
    "not an image": (lambda: b"<!DOCTYPE html><html><body>404 Not Found</body></html>", "not_an_image"),
    "empty file": (lambda: b"", "not_an_image"),
    "bomb 40000x40000": (lambda: png_declaring(40_000, 40_000), "too_large"),
    "bomb 12000x12000": (lambda: png_declaring(12_000, 12_000), "too_large"),
}


@pytest.mark.parametrize("name", list(GOOD_IMAGES))
def test_odd_but_valid_images_are_decoded_to_rgb_and_read_by_the_model(tagger, tmp_path, name):
    path = tmp_path / f"{name.replace(' ', '_')}.img"
    path.write_bytes(GOOD_IMAGES[name]())
    decoded = load_image(path)
    assert decoded.mode == "RGB"
    with Image.open(path) as original:
        assert decoded.size == original.size  # the first frame of an animation
        expected = original.convert("RGB")
    output = tag_words(tagger, {"text": "Jordan visits Phoenix", "image": str(path)})
    assert output["image_error"] is None
    # The image reached the model: the image gate is open, and the output is that of the first frame in RGB.
    assert all(word["gates"]["image"] > 0 for word in output["words"])
    assert tag_words(tagger, {"text": "Jordan visits Phoenix", "image": expected}) == output


@pytest.mark.parametrize("name", list(BAD_IMAGES))
def test_a_bad_image_is_a_clear_error_by_default_and_masked_with_a_warning_on_request(tagger, tmp_path, name):
    content, reason = BAD_IMAGES[name]
    path = tmp_path / "tweet.jpg"
    path.write_bytes(content())
    with pytest.raises(ImageLoadError, match=r"input 0: image .*tweet\.jpg") as caught:
        tagger({"text": "Jordan visits Phoenix", "image": str(path)})
    assert caught.value.reason == reason
    with pytest.warns(BadImageWarning, match="tweet.jpg"):
        masked = tag_words(tagger, {"text": "Jordan visits Phoenix", "image": str(path)}, on_bad_image="mask")
    assert "tweet.jpg" in masked["image_error"]
    assert masked["entities"] == tagger("Jordan visits Phoenix")
    assert all(word["gates"]["image"] == 0 for word in masked["words"])


@pytest.mark.parametrize("size", [(40_000, 40_000), (12_000, 12_000)])
def test_a_decompression_bomb_is_refused_from_its_header_without_decoding(size):
    """PIL refuses above twice `MAX_IMAGE_PIXELS` and only warns above it; both are refused, before any pixel
    is decoded: the memory used stays far below the 430 MB that 12000 x 12000 RGB pixels would take."""
    data = png_declaring(*size)
    tracemalloc.start()
    try:
        with pytest.raises(ImageLoadError, match="possible decompression bomb") as caught:
            load_image(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.reason == "too_large" and peak < 5 * 2**20


def test_bad_images_in_a_corpus_are_masked_and_counted_by_the_feature_cache(tmp_path, model):
    images = {name: make() for name, make in GOOD_IMAGES.items()}
    images.update({name: make() for name, (make, _) in BAD_IMAGES.items()})
    rows = [{"id": name, "image": {"bytes": data, "path": None}} for name, data in images.items()]
    dataset = Dataset.from_list(rows, features=IMAGE_ROWS)
    cache = ImageFeatureCache(tmp_path / "cache", model.mgcm.vision_model, tiny_image_processor(), "tiny")
    stats = cache.build(dataset)
    assert sorted(stats.computed_ids) == sorted(GOOD_IMAGES)
    assert sorted(stats.corrupt_ids) == sorted(BAD_IMAGES)
    _, image_mask = cache.get(list(images))
    assert image_mask.tolist() == [1] * len(GOOD_IMAGES) + [0] * len(BAD_IMAGES)


# ----------------------------------------------------------------------------------------------------------
# Objects, captions, IMGIDs


def test_an_unknown_object_label_is_skipped_counted_and_logged_once(tagger, processor, caplog):
    post = {"text": "Jordan visits Phoenix", "objects": [{"label": "spaceship", "score": 0.9}, "person"]}
    with caplog.at_level(logging.WARNING, logger="modeling_mgcm.processing_mgcm"):
        output = tagger(post)
        tagger(post)
    assert output == tagger({"text": "Jordan visits Phoenix", "objects": ["person"]})
    assert tagger.processor.unknown_object_label_counts["spaceship"] == 2
    assert caplog.text.count("'spaceship'") == 1
    encoding = processor(["Jordan"], objects=[{"label": "spaceship", "score": 0.9}])
    assert encoding["object_mask"].tolist() == [[0] * processor.max_objects]


def test_an_empty_caption_is_no_caption_and_a_2000_character_caption_is_truncated(tagger, processor):
    text = "Jordan visits Phoenix"
    assert tagger({"text": text, "caption": ""}) == tagger({"text": text, "caption": None}) == tagger(text)
    encoding = processor(["Jordan"], captions="")
    assert encoding["caption_attention_mask"].tolist() == [[0]]
    long_caption = ("a man with a ball on a court in Phoenix " * 60)[:2000]
    encoding = processor(["Jordan"], captions=long_caption)
    assert encoding["caption_attention_mask"].sum().item() == processor.max_caption_length
    output = tag_words(tagger, {"text": text, "caption": long_caption})
    assert all(word["gates"]["caption"] > 0 for word in output["words"])


@pytest.mark.parametrize("image_id", ["../escape", "a/b", "..", "/etc/passwd", "c:\\x", "a\\..\\b", "x\x00y"])
def test_an_imgid_with_path_separators_or_dots_never_becomes_a_path(tmp_path, model, tagger, image_id):
    """In a corpus it is refused naming the line (".." is a plain name: its image is "<image_dir>/...jpg");
    in the feature cache it is only a tensor name; in the pipeline it is a cache key that is not found."""
    corpus_dir, image_dir = tmp_path / "corpus", tmp_path / "images"
    corpus_dir.mkdir()
    image_dir.mkdir()
    (corpus_dir / "train.txt").write_text(f"IMGID:ok\nParis\tB-LOC\n\nIMGID:{image_id}\nObama\tB-PER\n")
    if image_id == "..":
        (image_dir / "...jpg").write_bytes(GOOD_IMAGES["1x1"]())
        train = load_tweet_corpus(corpus_dir, image_dir=image_dir)["train"].cast_column(
            "image", ImageFeature(decode=False)
        )
        assert train[1]["image"]["path"] == str(image_dir / "...jpg")
    else:
        with pytest.raises(CorpusFormatError, match=r"train\.txt, line 4: IMGID would name an image outside"):
            load_tweet_corpus(corpus_dir, image_dir=image_dir)

    row = {"id": image_id, "image": {"bytes": GOOD_IMAGES["1x1"](), "path": None}}
    cache = ImageFeatureCache(tmp_path / "cache", model.mgcm.vision_model, tiny_image_processor(), "tiny")
    assert cache.build(Dataset.from_list([row], features=IMAGE_ROWS)).computed_ids == [image_id]
    assert cache.get([image_id])[1].tolist() == [1]
    written = {path.relative_to(tmp_path).parts[0] for path in tmp_path.rglob("*")}
    assert written == {"corpus", "images", "cache"}

    # In the pipeline, an image_id is a key of the cache, nothing else.
    output = tag_words(tagger, {"text": "Obama", "image_id": image_id}, image_feature_cache=cache)
    assert output["image_error"] is None and output["words"][0]["gates"]["image"] > 0
    with pytest.raises(ImageLoadError, match="not in the image feature cache") as caught:
        tagger({"text": "Obama", "image_id": "../" + image_id}, image_feature_cache=cache)
    assert caught.value.reason == "missing"


# ----------------------------------------------------------------------------------------------------------
# mgcm-predict input lines


@pytest.mark.parametrize(
    "line, message",
    [
        (b'{"text": "x", "n": ' + b"1" * 5000 + b"}", "Exceeds the limit"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"text": "x", "n": [' + b"[" * 3000 + b"]" * 3000 + b"]}", "nested too deeply"),
    ],
    ids=["5000-digit number", "100000-deep array", "3000-deep value"],
)
def test_a_json_line_beyond_pythons_number_or_nesting_limits_is_an_error_record(line, message):
    """json.loads raises ValueError (not JSONDecodeError) or RecursionError for these: one such line used to
    stop the whole run."""
    post, record = parse_post_line(line, 7)
    assert post is None and record["line"] == 7
    assert record["error"].startswith("line 7: invalid JSON (") and message in record["error"]


def run_lines(tagger, tmp_path, lines: list[bytes], **options):
    """`mgcm-predict`'s batch loop over `lines`, into a UTF-8 file as the command writes it: (records, summary)."""
    source = io.BytesIO(b"\n".join(lines) + b"\n")
    output_path = tmp_path / "predictions.jsonl"
    with open(output_path, "w", encoding="utf-8") as sink, warnings.catch_warnings():
        warnings.simplefilter("ignore", BadImageWarning)
        summary = run_batch(
            tagger, source, sink, progress=False, **{"batch_size": 4, "chunk_size": 5} | options
        )
    records = [json.loads(line) for line in output_path.read_text(encoding="utf-8").splitlines()]
    return records, summary


def test_hostile_json_lines_each_give_one_output_line_and_never_stop_the_run(tagger, tmp_path):
    lines = [
        b'{"text": "Obama in Paris", "id": 1}',
        b'{"text": "x", "id": 2, "n": ' + b"1" * 5000 + b"}",
        b"[" * 100_000 + b"]" * 100_000,
        b'{"text": "caf\xe9"}',
        b"not json",
        b"",
        b'"just a string"',
        b'{"text": 42}',
        b'{"id": 9, "text": "Obama", "image": "/no/such/image.jpg"}',
        b'{"text": "Obama", "imgae": "x"}',
        b'\xef\xbb\xbf{"text": "a byte-order mark after line 1"}',
        b'{"text": "Phoenix", "id": 12}',
    ]
    records, summary = run_lines(tagger, tmp_path, lines)
    assert [record["line"] for record in records] == list(range(1, len(lines) + 1))
    assert {record["line"] for record in records if "error" in record} == {2, 3, 4, 5, 6, 7, 8, 10, 11}
    assert [records[index].get("id") for index in (0, 8, 11)] == [1, 9, 12]
    assert "image_error" in records[8] and records[8]["entities"] == tagger("Obama")
    assert (summary.posts, summary.tagged, summary.errors, summary.masked_images) == (12, 3, 9, 1)


def test_a_lone_surrogate_in_a_post_is_tagged_and_written_as_an_escaped_utf8_line(tagger, tmp_path):
    """'\\ud800' is valid JSON but not UTF-8: writing the record as it is used to raise UnicodeEncodeError."""
    records, summary = run_lines(
        tagger, tmp_path, [b'{"text": "\\ud800 Obama \\udfff", "id": "\\udc80"}', b'{"text": "Paris"}']
    )
    assert [record["line"] for record in records] == [1, 2] and summary.errors == 0
    assert records[0]["text"] == "\ud800 Obama \udfff" and records[0]["id"] == "\udc80"
    assert [entity["word"] for entity in records[0]["entities"]] in ([], ["Obama"])
    assert "\\ud800" in (tmp_path / "predictions.jsonl").read_text(encoding="utf-8").splitlines()[0]
