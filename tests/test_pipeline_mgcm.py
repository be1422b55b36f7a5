"""The "multimodal-ner" pipeline: loading, outputs checked against the model's own Viterbi path, CRF
marginals and attention, offsets, word splitting shared with the processor, batching, windows, text-only
posts, bad images in both modes, URLs and cached features."""

import http.server
import io
import threading
import time
import urllib.request
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import AutoModelForTokenClassification, AutoProcessor, pipeline

import modeling_mgcm  # noqa: F401  (registers the Auto classes)
from modeling_mgcm.image_sources import DEFAULT_URL_TIMEOUT, host_allowed
from modeling_mgcm.pipeline_mgcm import BadImageWarning, MultimodalNERPipeline
from modeling_mgcm.tweet_tokenizer import split_tweet
from modeling_mgcm.windows import WINDOW_INFO_KEYS, merge_windows
from processing import ImageFeatureCache, ImageLoadError, make_synthetic_corpus
from processing.testing.tiny_backbones import save_tiny_mgcm


@pytest.fixture(scope="module")
def synthetic_posts():
    """Test tweets of the synthetic corpus as raw posts (text, PIL image or None, caption, objects)."""
    corpus = make_synthetic_corpus(0, 0, 8, seed=3)["test"]
    return [
        {
            "text": " ".join(row["tokens"]),
            "image": row["image"],
            "caption": row["caption"],
            "objects": row["objects"],
        }
        for row in corpus
    ]


def image_file(folder, name="photo.png", colour=(200, 30, 30)):
    path = folder / name
    Image.new("RGB", (48, 40), colour).save(path)
    return path


def strip_scores(outputs):
    return [
        [{key: value for key, value in entity.items() if key != "score"} for entity in post]
        for post in outputs
    ]


def assert_same_outputs(left, right):
    assert strip_scores(left) == strip_scores(right)
    for left_post, right_post in zip(left, right, strict=True):
        for left_entity, right_entity in zip(left_post, right_post, strict=True):
            assert left_entity["score"] == pytest.approx(right_entity["score"], abs=1e-5)


def direct_outputs(tagger, words, **inputs):
    """The processor and the model called directly on one post's words: `(encoding, model output)`, with the
    cross-modal attention weights; the encoding keeps the window bookkeeping."""
    encoding = tagger.processor(words=words, **inputs)
    model_inputs = {name: value for name, value in encoding.items() if name not in WINDOW_INFO_KEYS}
    with torch.no_grad():
        return encoding, tagger.model(**model_inputs, output_attentions=True)


def merged(encoding, per_window):
    """Per-window word values merged into one per word of the post, as the pipeline merges windows."""
    return merge_windows(
        per_window,
        encoding["overflow_to_sample_mapping"],
        encoding["window_word_offset"],
        encoding["word_mask"].sum(1),
    )[0]


def lenient_entities(tags):
    """(type, first word, end word) of a BIO tag list, an I- after O or another type opening an entity."""
    entities, current = [], None
    for index, tag in enumerate([*tags, "O"]):
        kind = None if tag == "O" else tag[2:]
        if current is not None and (kind != current[0] or tag.startswith("B-")):
            entities.append((current[0], current[1], index))
            current = None
        if kind is not None and current is None:
            current = (kind, index)
    return entities


def model_call_sizes(tagger):
    """Records the batch size of every model call, until the returned hook handle is removed."""
    sizes = []

    def record(module, args, kwargs):
        sizes.append(kwargs["input_ids"].shape[0])

    return sizes, tagger.model.register_forward_pre_hook(record, with_kwargs=True)


def split_words(text):
    return [word for word, _, _ in split_tweet(text)]


def test_pipeline_loads_model_and_processor_from_the_folder(tagger, tiny_mgcm_dir):
    assert isinstance(tagger, MultimodalNERPipeline)
    assert type(tagger.processor).__name__ == "MGCMProcessor"
    assert tagger.model.config.model_type == "mgcm" and not tagger.model.training
    # The same pipeline from objects given explicitly.
    model = AutoModelForTokenClassification.from_pretrained(tiny_mgcm_dir)
    explicit = pipeline("multimodal-ner", model=model, processor=AutoProcessor.from_pretrained(tiny_mgcm_dir))
    text = "Jordan visits Phoenix with Obama in Paris"
    assert_same_outputs([explicit(text)], [tagger(text)])


def test_entities_are_the_viterbi_path_scored_by_mean_crf_marginals(tagger, tmp_path):
    post = {
        "text": "Jordan visits Phoenix with Obama , at the Paris photo",
        "image": image_file(tmp_path),
        "caption": "a person in Paris",
        "objects": [{"label": "person", "score": 0.9}],
    }
    entities = tagger(post)
    words = post["text"].split()
    # Reference: the processor and the model called directly.
    inputs = tagger.processor(
        words=words,
        images=Image.open(post["image"]).convert("RGB"),
        captions=post["caption"],
        objects=post["objects"],
    )
    inputs.pop("overflow_to_sample_mapping")
    inputs.pop("window_word_offset")
    with torch.no_grad():
        output = tagger.model(**inputs)
        marginals = tagger.model.crf.marginals(output.logits, inputs["word_mask"].bool())[0]
    tags = [tagger.model.config.id2label[int(tag)] for tag in output.predictions[0]]
    expected = lenient_entities(tags)
    assert expected, "the untrained model should still predict some entity on this post"
    assert [(e["entity_group"], e["word_start"], e["word_end"]) for e in entities] == expected
    for entity in entities:
        span = range(entity["word_start"], entity["word_end"])
        tag_ids = [int(output.predictions[0, word]) for word in span]
        mean_marginal = sum(
            float(marginals[word, tag]) for word, tag in zip(span, tag_ids, strict=True)
        ) / len(span)
        assert entity["score"] == pytest.approx(mean_marginal, abs=1e-6)
        assert entity["word"] == " ".join(words[entity["word_start"] : entity["word_end"]])


def test_synthetic_corpus_offsets_round_trip_and_scores_are_probabilities(tagger, synthetic_posts):
    words_outputs = tagger(synthetic_posts, batch_size=4, aggregation="words")
    assert len(words_outputs) == len(synthetic_posts)
    assert tagger(synthetic_posts[:3], batch_size=4) == [output["entities"] for output in words_outputs[:3]]
    found = 0
    for post, words_output in zip(synthetic_posts, words_outputs, strict=True):
        text = post["text"]
        assert words_output["text"] == text and words_output["image_error"] is None
        assert [word["word"] for word in words_output["words"]] == [word for word, _, _ in split_tweet(text)]
        for word in words_output["words"]:
            assert text[word["start"] : word["end"]] == word["word"]
            assert 0.0 <= word["score"] <= 1.0
            assert sum(word["marginals"].values()) == pytest.approx(1.0, abs=1e-5)
            assert word["score"] == pytest.approx(word["marginals"][word["tag"]])
            assert set(word["gates"]) == {"image", "objects", "caption"}
        for entity in words_output["entities"]:
            found += 1
            assert text[entity["start"] : entity["end"]] == entity["word"]
            first, last = (
                words_output["words"][entity["word_start"]],
                words_output["words"][entity["word_end"] - 1],
            )
            assert (entity["start"], entity["end"]) == (first["start"], last["end"])
            assert 0.0 <= entity["score"] <= 1.0
    assert found > 0


def test_batched_and_one_by_one_outputs_are_equal(tagger, synthetic_posts, tmp_path):
    long_text = " ".join(["Obama visits Paris , Jordan at Phoenix !"] * 12)  # several windows of 32 pieces
    posts = [
        *synthetic_posts[:3],
        {"text": long_text, "image": image_file(tmp_path), "caption": "a person"},
        "Jordan in Phoenix",
        {"text": ["Obama", "in", "Paris"], "caption": ""},
        {"text": "", "caption": "nothing to tag"},
    ]
    # The long post's windows are items 3.. of the DataLoader: batches of 3 split them over two model calls.
    assert len(tagger.processor.encode_windows([split_words(long_text)])) > 3
    one_by_one = [tagger(post, aggregation="words") for post in posts]
    for batch_size in (1, 3, 8):
        assert_same_outputs(tagger(posts, batch_size=batch_size), [alone["entities"] for alone in one_by_one])
    for batch_size in (3, 8):
        batched = tagger(posts, batch_size=batch_size, aggregation="words")
        for alone, together in zip(one_by_one, batched, strict=True):
            assert [w["tag"] for w in alone["words"]] == [w["tag"] for w in together["words"]]
            for alone_word, batched_word in zip(alone["words"], together["words"], strict=True):
                assert batched_word["score"] == pytest.approx(alone_word["score"], abs=1e-5)
                for name, gate in alone_word["gates"].items():
                    assert batched_word["gates"][name] == pytest.approx(gate, abs=1e-5)


def test_batch_size_counts_windows_that_the_base_dataloader_groups_into_model_calls(tagger):
    texts = [" ".join(["Obama"] * length) for length in (3, 40, 1, 25, 7, 60, 2, 12, 33, 5, 18, 9)]
    windows = sum(len(tagger.processor.encode_windows([split_words(text)])) for text in texts)
    assert windows > len(texts)  # some posts give several windows
    sizes, hook = model_call_sizes(tagger)
    try:
        outputs = {batch_size: tagger(texts, batch_size=batch_size) for batch_size in (1, 5)}
    finally:
        hook.remove()
    # Every window once, `batch_size` windows a call (the last call takes the rest), whatever the posts.
    assert sizes == [1] * windows + [5] * (windows // 5) + ([windows % 5] if windows % 5 else [])
    assert_same_outputs(outputs[5], outputs[1])


def test_a_dataloader_worker_prepares_the_posts_with_the_same_outputs(tagger, synthetic_posts):
    posts = [*synthetic_posts[:4], " ".join(["Obama visits Paris , Jordan at Phoenix !"] * 12)]
    in_process = tagger(posts, batch_size=3, aggregation="words")
    in_worker = tagger(posts, batch_size=3, aggregation="words", num_workers=1)
    assert [[w["tag"] for w in post["words"]] for post in in_worker] == [
        [w["tag"] for w in post["words"]] for post in in_process
    ]
    assert_same_outputs([post["entities"] for post in in_worker], [post["entities"] for post in in_process])


def test_text_only_posts_need_no_image_and_match_an_absent_image(tagger, tmp_path):
    text = "Jordan visits Phoenix with Obama"
    alone = tagger(text)
    assert tagger({"text": text}) == alone
    assert tagger({"text": text, "image": None, "caption": None, "objects": None}) == alone
    # Batched beside a post with an image, the text-only post keeps its text-only output.
    batched = tagger([{"text": "Paris photo", "image": image_file(tmp_path)}, text], batch_size=2)
    assert_same_outputs([batched[1]], [alone])
    assert tagger({"text": text}, aggregation="words")["words"][0]["gates"]["image"] == 0.0


def test_pre_split_words_are_offsets_into_the_words_joined_by_spaces(tagger):
    output = tagger({"text": ["Jordan", "in", "São", "Paulo"]}, aggregation="words")
    assert output["text"] == "Jordan in São Paulo"
    assert [(w["start"], w["end"]) for w in output["words"]] == [(0, 6), (7, 9), (10, 13), (14, 19)]


@pytest.mark.parametrize(
    "text",
    [
        "@Obama visits #Phoenix: https://t.co/x1Y 🎉🇫🇷",
        "RT @jordan_23: Paris!!! 👍🏽 #NBA",
        "Obama's photo (in Paris), see www.example.com/a.",
    ],
)
def test_the_processor_splits_raw_text_into_the_pipelines_words(tagger, text):
    output = tagger(text, aggregation="words")
    words = [word["word"] for word in output["words"]]
    assert words != text.split()  # mentions, hashtags, URLs, emoji and punctuation: not white-space words
    from_text = tagger.processor(text=text)
    from_words = tagger.processor(words=words)
    assert from_text.keys() == from_words.keys()
    for name in from_words:
        assert torch.equal(from_text[name], from_words[name]), name
    # The model's tags on the processor's encoding of the raw text are the pipeline's.
    model_inputs = {name: value for name, value in from_text.items() if name not in WINDOW_INFO_KEYS}
    with torch.no_grad():
        predictions = tagger.model(**model_inputs).predictions
    tags = [tagger.model.config.id2label[tag] for tag in merged(from_text, predictions)]
    assert tags == [word["tag"] for word in output["words"]]


def test_output_attentions_gives_each_word_its_attention_over_each_input(tagger, tmp_path):
    caption = "a person near Paris"  # "near" is spelled in several pieces, the other words are whole
    objects = [{"label": "car", "score": 0.4}, {"label": "person", "score": 0.9}]
    post = {
        "text": "Jordan visits Phoenix with Obama",
        "image": image_file(tmp_path),
        "caption": caption,
        "objects": objects,
    }
    output = tagger(post, aggregation="words", output_attentions=True)
    words = [word["word"] for word in output["words"]]
    encoding, reference = direct_outputs(
        tagger, words, images=Image.open(post["image"]).convert("RGB"), captions=caption, objects=objects
    )
    attended = output["attended"]
    assert list(attended) == ["image", "objects", "caption"]
    torch.testing.assert_close(attended["image"]["pixel_values"], encoding["pixel_values"][0])
    assert attended["objects"] == ["person", "car"]  # as the model read them: highest score first
    assert attended["caption"] == {"text": caption, "words": caption.split(), "truncated": False}
    piece_words = tagger.processor.tokenizer(caption).word_ids()
    assert piece_words.count(2) > 1
    attention = reference.granularity_attentions
    for index, word in enumerate(output["words"]):
        assert set(word["attention"]) == {"image", "objects", "caption"}
        np.testing.assert_allclose(word["attention"]["image"], attention["image"][0, index], atol=1e-6)
        assert len(word["attention"]["image"]) == 64  # the tiny ResNet's 8x8 regions
        np.testing.assert_allclose(
            word["attention"]["objects"], attention["objects"][0, index, :2], atol=1e-6
        )
        pieces = attention["caption"][0, index]
        expected = [
            sum(float(pieces[piece]) for piece, owner in enumerate(piece_words) if owner == caption_word)
            for caption_word in range(4)
        ]
        np.testing.assert_allclose(word["attention"]["caption"], expected, atol=1e-6)
        assert sum(word["attention"]["caption"]) < 1.0  # the rest is on [CLS] and [SEP]
    # The rest of the output is what it is without attention.
    plain = tagger(post, aggregation="words")
    assert_same_outputs([output["entities"]], [plain["entities"]])
    for with_attention, without in zip(output["words"], plain["words"], strict=True):
        assert set(with_attention) - set(without) == {"attention"}
        assert with_attention["tag"] == without["tag"]
        assert with_attention["score"] == pytest.approx(without["score"], abs=1e-5)


def test_output_attentions_describes_only_the_inputs_a_post_has(tagger):
    output = tagger(
        {"text": "Jordan visits Phoenix", "caption": ""}, aggregation="words", output_attentions=True
    )
    assert output["attended"] == {} and all(word["attention"] == {} for word in output["words"])
    assert tagger("  ", aggregation="words", output_attentions=True) == {
        "text": "  ",
        "words": [],
        "entities": [],
        "image_error": None,
        "attended": {},
    }
    long_caption = "a person in Paris with the photo " * 6  # whole words, more than max_caption_length
    output = tagger(
        {"text": "Obama in Paris", "caption": long_caption}, aggregation="words", output_attentions=True
    )
    read = output["attended"]["caption"]
    assert (
        read["truncated"] and long_caption.startswith(read["text"]) and read["words"] == read["text"].split()
    )
    assert len(read["words"]) == tagger.processor.max_caption_length - 2
    assert all(len(word["attention"]["caption"]) == len(read["words"]) for word in output["words"])


def test_attention_is_the_same_batched_or_alone_and_merged_across_windows(tagger):
    long_text = " ".join(["Obama visits Paris , Jordan at Phoenix !"] * 6)  # several windows of 32 pieces
    posts = [
        {"text": "Jordan in Phoenix", "caption": "a person", "objects": ["car"]},
        {"text": long_text, "caption": "the photo of a person in Paris", "objects": ["person", "dog"]},
        {"text": "Obama visits Paris", "caption": "Obama"},
    ]
    alone = [tagger(post, aggregation="words", output_attentions=True) for post in posts]
    batched = tagger(posts, batch_size=3, aggregation="words", output_attentions=True)
    for one, other in zip(alone, batched, strict=True):
        assert one["attended"] == other["attended"]
        for one_word, other_word in zip(one["words"], other["words"], strict=True):
            for name, weights in one_word["attention"].items():
                np.testing.assert_allclose(other_word["attention"][name], weights, atol=1e-5)
    words = [word["word"] for word in alone[1]["words"]]
    encoding, reference = direct_outputs(
        tagger,
        words,
        captions=posts[1]["caption"],
        objects=[{"label": "person", "score": 1.0}, {"label": "dog", "score": 1.0}],
    )
    assert len(encoding["input_ids"]) > 1
    expected = merged(encoding, reference.granularity_attentions["objects"][:, :, :2])
    np.testing.assert_allclose(
        [word["attention"]["objects"] for word in alone[1]["words"]], expected, atol=1e-6
    )


def test_empty_input_gives_no_entities(tagger):
    assert tagger("") == [] and tagger(" \u00a0 ") == [] and tagger([]) == []
    assert tagger("  ", aggregation="words") == {
        "text": "  ",
        "words": [],
        "entities": [],
        "image_error": None,
    }


@pytest.mark.parametrize(
    "content, reason",
    [
        (None, "missing image"),
        (b"<html>404 not found</html>", "not an image"),
        ("truncated", "truncated image"),
    ],
)
def test_bad_images_raise_an_error_naming_the_input_by_default(tagger, tmp_path, content, reason):
    path = tmp_path / "bad.jpg"
    if content == "truncated":
        buffer = io.BytesIO()
        Image.new("RGB", (64, 64), "blue").save(buffer, format="JPEG")
        path.write_bytes(buffer.getvalue()[:200])
    elif content is not None:
        path.write_bytes(content)
    posts = ["Paris", {"text": "Jordan visits Phoenix", "image": str(path)}]
    with pytest.raises(ImageLoadError, match=rf"input 1: image .*bad\.jpg: {reason}.*on_bad_image='mask'"):
        tagger(posts, batch_size=2)
    # Numbered over the whole input, not within a model batch; a long post's windows do not shift it.
    posts = ["Paris", " ".join(["Obama visits Paris"] * 20), "Obama", "Jordan", *posts]
    with pytest.raises(ImageLoadError, match=rf"input 5: image .*bad\.jpg: {reason}"):
        tagger(posts, batch_size=2)


def test_bad_images_are_masked_with_a_warning_and_recorded(tagger, tmp_path):
    text = "Jordan visits Phoenix with Obama"
    (tmp_path / "broken.jpg").write_bytes(b"GIF89a garbage")
    with pytest.warns(BadImageWarning, match="broken.jpg"):
        masked = tagger(
            {"text": text, "image": tmp_path / "broken.jpg"}, on_bad_image="mask", aggregation="words"
        )
    assert "broken.jpg" in masked["image_error"] and "not an image" in masked["image_error"]
    text_only = tagger(text, aggregation="words")
    assert masked["entities"] == text_only["entities"]
    with pytest.warns(BadImageWarning, match="missing image"):
        entities = tagger({"text": text, "image": "no/such/file.png"}, on_bad_image="mask")
    assert entities == text_only["entities"]
    # One warning per bad post, however many windows it gives and however the windows are batched.
    long_text = " ".join(["Obama visits Paris , Jordan at Phoenix !"] * 12)
    posts = [text, {"text": long_text, "image": "gone.png"}, "Paris", {"text": text, "image": "gone.png"}]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outputs = tagger(posts, batch_size=2, on_bad_image="mask", aggregation="words")
    assert len([warning for warning in caught if warning.category is BadImageWarning]) == 2
    assert [output["image_error"] is not None for output in outputs] == [False, True, False, True]


def test_options_and_posts_are_checked_with_clear_errors(tagger):
    with pytest.raises(ValueError, match="unknown post keys \\['imgae'\\]"):
        tagger({"text": "Paris", "imgae": "x.jpg"})
    with pytest.raises(ValueError, match="needs a 'text'"):
        tagger({"caption": "a photo"})
    with pytest.raises(TypeError, match="input 1: 'text' must be a string or a list of words"):
        tagger(["Paris", {"text": 42}], batch_size=2)
    with pytest.raises(ValueError, match="aggregation must be one of"):
        tagger("Paris", aggregation="simple")
    with pytest.raises(ValueError, match="on_bad_image must be one of"):
        tagger("Paris", on_bad_image="skip")
    with pytest.raises(TypeError, match="unknown multimodal-ner pipeline argument"):
        tagger("Paris", stride=3)
    with pytest.raises(ValueError, match="output_attentions=True .* pass aggregation='words'"):
        tagger("Paris", output_attentions=True)
    with pytest.raises(ValueError, match="output_attentions=True .* pass aggregation='words'"):
        tagger(["Paris", "Obama"], batch_size=2, output_attentions=True)
    with pytest.raises(ValueError, match="output_attentions must be True or False, got 'yes'"):
        tagger("Paris", aggregation="words", output_attentions="yes")


def test_options_given_to_the_pipeline_hold_for_every_call(tagger):
    explaining = MultimodalNERPipeline(
        model=tagger.model, processor=tagger.processor, aggregation="words", output_attentions=True
    )
    output = explaining({"text": "Obama in Paris", "caption": "a person"})
    assert set(output["attended"]) == {"caption"} and set(output["words"][0]["attention"]) == {"caption"}
    assert "attended" not in explaining("Obama in Paris", output_attentions=False)


def test_generators_are_tagged_lazily_one_batch_at_a_time(tagger):
    pulled = []

    def posts():
        for index in range(10):
            pulled.append(index)
            yield f"Obama visits Paris {index}"

    outputs = tagger(posts(), batch_size=3)
    first = next(outputs)
    assert isinstance(first, list) and len(pulled) == 3
    assert len([first, *outputs]) == 10 and len(pulled) == 10


@pytest.fixture(scope="module")
def knowledge_tagger(tmp_path_factory):
    """The pipeline over a tiny MGCM that also reads a `knowledge` text source."""
    folder = save_tiny_mgcm(
        tmp_path_factory.mktemp("tiny-knowledge-mgcm"),
        max_length=32,
        stride=4,
        text_source_max_lengths={"knowledge": 24},
    )
    return pipeline("multimodal-ner", model=str(folder), device="cpu")


def test_a_knowledge_writer_writes_for_batch_size_posts_at_a_time_before_they_are_read(knowledge_tagger):
    calls = []

    def writer(texts, captions):
        calls.append(list(texts))
        return [f"{text} names a person" for text in texts]

    posts = [{"text": f"Obama visits Paris {index}"} for index in range(5)]
    posts[1]["knowledge"] = "Obama (person) is named."
    written = knowledge_tagger(posts, knowledge_writer=writer, batch_size=2, aggregation="words")
    # The posts lacking knowledge among each `batch_size` posts, in one call.
    assert calls == [[posts[0]["text"]], [posts[2]["text"], posts[3]["text"]], [posts[4]["text"]]]
    given = [post | {"knowledge": post.get("knowledge", f"{post['text']} names a person")} for post in posts]
    assert written == knowledge_tagger(given, batch_size=2, aggregation="words")
    # A generator is read, and its knowledge written, one group of `batch_size` posts ahead at most.
    calls.clear()
    outputs = knowledge_tagger((post for post in posts), knowledge_writer=writer, batch_size=2)
    next(outputs)
    assert calls == [[posts[0]["text"]]]
    with pytest.raises(TypeError, match="input 3: 'knowledge' must be a string or None"):
        knowledge_tagger(
            [*posts[:3], {"text": "Paris", "knowledge": 5}], knowledge_writer=writer, batch_size=2
        )


class _ImageServer(http.server.BaseHTTPRequestHandler):
    """Serves /photo.png, /big (declares 10 MB), /stream-big (no length, 3 MB), /slow, /to-localhost
    (a redirect to /photo.png on the host named localhost) and 404 otherwise; records each path asked for."""

    photo = b""
    requested: list[str] = []

    def do_GET(self):  # noqa: N802 (http.server's naming)
        self.requested.append(self.path)
        if self.path == "/photo.png":
            self._send(200, self.photo)
        elif self.path == "/big":
            self.send_response(200)
            self.send_header("Content-Length", str(10_000_000))
            self.end_headers()
        elif self.path == "/stream-big":
            self.send_response(200)
            self.end_headers()
            for _ in range(48):
                self.wfile.write(b"\0" * 65536)
        elif self.path == "/to-localhost":
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{self.server.server_address[1]}/photo.png")
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif self.path == "/slow":
            time.sleep(1.5)
            self._send(200, self.photo)
        else:
            self._send(404, b"not found")

    def _send(self, status, body):
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def handle_one_request(self):
        # The client hangs up on purpose on the oversized and slow answers.
        try:
            super().handle_one_request()
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def image_server():
    buffer = io.BytesIO()
    Image.new("RGB", (48, 40), (200, 30, 30)).save(buffer, format="PNG")
    _ImageServer.photo = buffer.getvalue()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ImageServer)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_image_urls_are_fetched_and_decoded(tagger, image_server, tmp_path):
    text = "Jordan visits Phoenix"
    from_url = tagger({"text": text, "image": f"{image_server}/photo.png"})
    from_file = tagger({"text": text, "image": image_file(tmp_path)})
    assert_same_outputs([from_url], [from_file])


@pytest.mark.parametrize(
    "path, options, message",
    [
        ("/missing.png", {}, "missing image .*HTTP 404"),
        ("/big", {"max_image_bytes": 1_000_000}, "too large.*Content-Length 10000000 exceeds 1000000"),
        ("/stream-big", {"max_image_bytes": 1_000_000}, "too large.*exceeds 1000000 bytes"),
        ("/slow", {"image_timeout": 0.3}, "unreadable image file.*(timed out|longer than)"),
    ],
)
def test_image_urls_have_a_size_limit_and_a_timeout(
    tagger, image_server, monkeypatch, path, options, message
):
    timeouts = []
    opener_open = urllib.request.OpenerDirector.open

    def recording_open(self, request, timeout):
        timeouts.append(timeout)
        return opener_open(self, request, timeout=timeout)

    monkeypatch.setattr(urllib.request.OpenerDirector, "open", recording_open)
    with pytest.raises(ImageLoadError, match=message):
        tagger({"text": "Paris", "image": image_server + path}, **options)
    # One fetch, under the pipeline's timeout (the slow server answers after 1.5 s: only a timeout of 0.3 s
    # makes that fetch fail).
    assert timeouts == [options.get("image_timeout", DEFAULT_URL_TIMEOUT)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadImageWarning)
        masked = tagger(
            {"text": "Paris", "image": image_server + path},
            on_bad_image="mask",
            aggregation="words",
            **options,
        )
    assert image_server + path in masked["image_error"]


def test_image_url_hosts_confine_the_fetches_redirects_included(tagger, image_server):
    """A service tagging strangers' posts names the hosts it fetches from: a URL elsewhere, or a redirect
    from an allowed host to another, is refused before anything is sent there."""
    photo = f"{image_server}/photo.png"
    text = "Jordan visits Phoenix"
    allowed = tagger({"text": text, "image": photo}, image_url_hosts=["127.0.0.1"])
    assert_same_outputs([allowed], [tagger({"text": text, "image": photo})])
    _ImageServer.requested.clear()
    cases = [
        (photo, ["example.org"], "'127.0.0.1'"),
        (photo, [], "'127.0.0.1'"),
        (f"{image_server}/to-localhost", ["127.0.0.1"], "'localhost'"),
    ]
    for url, hosts, host in cases:
        with pytest.raises(ImageLoadError, match=f"image refused .*the host {host} is not among the allowed"):
            tagger({"text": text, "image": url}, image_url_hosts=hosts)
    # The allowed host was asked for the redirect only; the redirect's target and the others never.
    assert _ImageServer.requested == ["/to-localhost"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BadImageWarning)
        masked = tagger(
            {"text": text, "image": photo}, image_url_hosts=[], on_bad_image="mask", aggregation="words"
        )
    assert "image refused" in masked["image_error"]
    with pytest.raises(TypeError, match="image_url_hosts must be a list of host names"):
        tagger({"text": text}, image_url_hosts="127.0.0.1")


@pytest.mark.parametrize(
    "url, hosts, allowed",
    [
        ("https://pbs.twimg.com/media/a.jpg", None, True),
        ("https://pbs.twimg.com/media/a.jpg", ["pbs.twimg.com"], True),
        ("https://pbs.twimg.com/media/a.jpg", ["twimg.com"], True),
        ("https://PBS.TWIMG.COM./a.jpg", ["Twimg.com"], True),
        ("https://eviltwimg.com/a.jpg", ["twimg.com"], False),
        ("https://twimg.com.evil.org/a.jpg", ["twimg.com"], False),
        ("https://pbs.twimg.com@evil.org/a.jpg", ["pbs.twimg.com"], False),
        ("https://pbs.twimg.com/a.jpg", [], False),
    ],
)
def test_a_url_s_host_is_allowed_only_as_named_or_a_subdomain(url, hosts, allowed):
    assert host_allowed(url, hosts) is allowed


def test_cached_image_features_give_the_outputs_of_the_raw_images(tagger, tiny_mgcm_dir, tmp_path):
    from datasets import Dataset
    from datasets import Image as ImageFeature

    paths = [image_file(tmp_path, f"{index}.png", (40 * index, 90, 200 - 30 * index)) for index in range(3)]
    dataset = Dataset.from_dict(
        {"id": ["a", "b", "gone"], "image": [str(paths[0]), str(paths[1]), str(tmp_path / "gone.png")]}
    ).cast_column("image", ImageFeature())
    cache = ImageFeatureCache(
        tmp_path / "cache",
        tagger.model.mgcm.vision_model,
        tagger.processor.image_processor,
        backbone_name="tiny-resnet",
        storage_dtype=torch.float32,
        show_progress=False,
    )
    cache.build(dataset)
    texts = ["Jordan visits Phoenix", "Obama in Paris with Jordan"]
    from_images = [tagger({"text": text, "image": path}) for text, path in zip(texts, paths, strict=False)]
    from_cache = tagger(
        [{"text": text, "image_id": image_id} for text, image_id in zip(texts, "ab", strict=True)],
        batch_size=2,
        image_feature_cache=cache,
    )
    assert_same_outputs(from_cache, from_images)
    # One post with cached features and one with a raw image in the same batch.
    mixed = tagger(
        [{"text": texts[0], "image_id": "a"}, {"text": texts[1], "image": paths[1]}],
        batch_size=2,
        image_feature_cache=cache,
    )
    assert_same_outputs(mixed, from_images)
    # The attention over cached features is the attention over the raw image's; there are no pixels to show.
    with_cache, with_image = (
        tagger(
            {"text": texts[0], **image},
            image_feature_cache=cache,
            aggregation="words",
            output_attentions=True,
        )
        for image in ({"image_id": "a"}, {"image": paths[0]})
    )
    assert with_cache["attended"]["image"] == {"pixel_values": None}
    for cached_word, image_word in zip(with_cache["words"], with_image["words"], strict=True):
        np.testing.assert_allclose(
            cached_word["attention"]["image"], image_word["attention"]["image"], atol=1e-5
        )
    with pytest.raises(ImageLoadError, match="image_id 'gone'.*missing or corrupt"):
        tagger({"text": "Paris", "image_id": "gone"}, image_feature_cache=cache)
    with pytest.raises(ImageLoadError, match="image_id 'unknown'.*not in the image feature cache"):
        tagger({"text": "Paris", "image_id": "unknown"}, image_feature_cache=cache)
    with pytest.raises(ValueError, match="no image_feature_cache"):
        tagger({"text": "Paris", "image_id": "a"})


class _StopBeforeTheModel(Exception):
    pass


def test_every_model_input_is_moved_to_the_pipelines_device(tagger, tmp_path, monkeypatch):
    """The windows are padded in `_forward`, after the base class moved the items: the pipeline must move the
    padded batch itself, to its own device. The meta device stands for an accelerator on a CPU-only machine;
    the model is stopped before it runs."""
    assert tagger.model.device == tagger.device
    seen = []

    def record_and_stop(module, args, kwargs):
        seen.append({name: value.device for name, value in kwargs.items() if isinstance(value, torch.Tensor)})
        raise _StopBeforeTheModel

    post = {
        "text": "Jordan visits Phoenix",
        "image": image_file(tmp_path),
        "caption": "a person",
        "objects": ["person"],
    }
    monkeypatch.setattr(tagger, "device", torch.device("meta"))
    hook = tagger.model.register_forward_pre_hook(record_and_stop, with_kwargs=True)
    try:
        for batch_size in (1, 2):
            with pytest.raises(_StopBeforeTheModel):
                tagger([post, "Obama in Paris"], batch_size=batch_size)
    finally:
        hook.remove()
    for devices in seen:
        assert {"input_ids", "word_ids", "pixel_values", "caption_input_ids", "object_ids"} <= set(devices)
        assert set(devices.values()) == {torch.device("meta")}, devices


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_pipeline_on_a_gpu_gives_the_cpu_pipelines_outputs(tagger, tiny_mgcm_dir, synthetic_posts):
    on_gpu = pipeline("multimodal-ner", model=str(tiny_mgcm_dir), device=0)
    assert on_gpu.model.device == on_gpu.device == torch.device("cuda", 0)
    posts = [*synthetic_posts, " ".join(["Obama visits Paris , Jordan at Phoenix !"] * 12)]
    assert_same_outputs(on_gpu(posts, batch_size=4), tagger(posts, batch_size=4))


def test_marginals_are_a_distribution_over_the_labels_even_without_a_crf(tiny_mgcm_dir):
    # The same weights with argmax decoding (and softmax scores); the checkpoint's CRF weights go unused.
    model = AutoModelForTokenClassification.from_pretrained(tiny_mgcm_dir, use_crf=False)
    assert model.crf is None and not model.config.use_crf
    tagger = pipeline("multimodal-ner", model=model, processor=AutoProcessor.from_pretrained(tiny_mgcm_dir))
    output = tagger("Jordan visits Phoenix", aggregation="words")
    for word in output["words"]:
        assert sum(word["marginals"].values()) == pytest.approx(1.0, abs=1e-5)
        assert word["tag"] == max(word["marginals"], key=word["marginals"].get)
    assert np.isfinite([word["score"] for word in output["words"]]).all()


def test_the_pipeline_reads_bio_tags_as_seqeval_does_in_lenient_mode():
    """The pipeline's own BIO decoder (it ships without seqeval) gives seqeval's lenient entities."""
    from modeling_mgcm.pipeline_outputs import lenient_entity_spans
    from processing.evaluation.metrics import entity_spans

    rng = np.random.default_rng(0)
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "I-ORG", "B-MISC"]
    for length in range(0, 12):
        for _ in range(200):
            sequence = [tags[index] for index in rng.integers(0, len(tags), size=length)]
            assert set(lenient_entity_spans(sequence)) == entity_spans(sequence, "lenient"), sequence
