"""MGCMProcessor's text options: `url_token` (links reach the encoder as one word) and
`caption_as_text_segment` (the ITA-style control: the caption appended to the tweet as a second segment)."""

import numpy as np
import pytest
import torch
from transformers import AutoModelForTokenClassification, AutoProcessor, pipeline

import modeling_mgcm  # noqa: F401  (registers the Auto classes)
from modeling_mgcm import MGCMConfig, MGCMForTokenClassification
from processing import WINDOW_INFO_KEYS, MGCMProcessor, word_shape_id
from processing.corpus.labels import LABEL_NAMES
from processing.testing.tiny_backbones import build_corpus_tokenizer, tiny_text_config
from processing.training.window_rows import window_row_features

WORDS = ["Obama", "visits", "Paris", "http://t.co/w7rktBN5ac", "a", "man", "on", "stage", "rt"]


@pytest.fixture(scope="module")
def tokenizer():
    return build_corpus_tokenizer(WORDS)


def pieces(tokenizer, ids) -> list[str]:
    return tokenizer.convert_ids_to_tokens(list(ids))


def model_inputs(encoding) -> dict:
    return {name: value for name, value in encoding.items() if name not in WINDOW_INFO_KEYS}


def test_a_link_reaches_the_encoder_as_the_url_token_while_words_labels_and_shapes_keep_it(tokenizer):
    tweet = ["Obama", "http://t.co/w7rktBN5ac", "Paris", "t.co/w7rk…"]
    plain = MGCMProcessor(tokenizer).encode_windows([tweet], word_labels=[[1, 0, 5, 0]])[0]
    replaced = MGCMProcessor(tokenizer, url_token="http").encode_windows([tweet], word_labels=[[1, 0, 5, 0]])[
        0
    ]

    assert pieces(tokenizer, replaced["input_ids"]) == [
        "[CLS]",
        "Obama",
        "h",
        "##t",
        "##t",
        "##p",
        "Paris",
    ] + [
        "h",
        "##t",
        "##t",
        "##p",
        "[SEP]",
    ]
    assert replaced["word_ids"] == [-1, 0, 1, 1, 1, 1, 2, 3, 3, 3, 3, -1]
    # Without the option the link is spelled out piece by piece, as before.
    assert len(plain["input_ids"]) > len(replaced["input_ids"]) + 10
    for window in (plain, replaced):
        assert window["words"] == tweet
        assert window["labels"] == [1, 0, 5, 0]
        assert window["word_shape_ids"] == [word_shape_id(word) for word in tweet]


def test_the_caption_segment_follows_every_window_after_a_separator_and_belongs_to_no_word(tokenizer):
    processor = MGCMProcessor(tokenizer, max_length=6, stride=1, caption_as_text_segment=True)
    tweet = ["Obama", "visits", "Paris", "rt", "Obama", "visits", "Paris"]
    windows = processor.encode_windows([tweet, ["rt"]], captions=["a man on stage", None])

    tweet_windows = [window for window in windows if window["tweet_index"] == 0]
    assert len(tweet_windows) >= 2
    for window in tweet_windows:
        content = len(window["words"])
        tokens = pieces(tokenizer, window["input_ids"])
        assert tokens[: content + 2] == ["[CLS]", *window["words"], "[SEP]"]
        assert tokens[content + 2 :] == ["a", "man", "on", "stage", "[SEP]"]
        assert window["word_ids"] == [-1, *range(content), *[-1] * 6]
        assert window["token_type_ids"] == [0] * (content + 2) + [1] * 5
        assert "caption_input_ids" not in window
    no_caption = windows[-1]
    assert pieces(tokenizer, no_caption["input_ids"]) == ["[CLS]", "rt", "[SEP]"]
    assert no_caption["token_type_ids"] == [0, 0, 0]
    assert "caption_input_ids" not in window_row_features(processor, ["id", "tokens", "caption"])


def text_only_config(tokenizer) -> MGCMConfig:
    return MGCMConfig(
        text_config=tiny_text_config(len(tokenizer), hidden_size=32),
        augmentation_mode="none",
        id2label=dict(enumerate(LABEL_NAMES)),
        label2id={label: index for index, label in enumerate(LABEL_NAMES)},
    )


def test_a_text_model_reads_the_caption_segment_and_padding_does_not_change_its_scores(tokenizer):
    torch.manual_seed(0)
    model = MGCMForTokenClassification(text_only_config(tokenizer)).eval()
    processor = MGCMProcessor(tokenizer, caption_as_text_segment=True)
    tweets = [["Obama", "visits", "Paris"], ["Obama", "visits", "Paris"], ["rt"]]
    captions = ["a man on stage", "stage", "a man on stage a man on stage"]

    with torch.no_grad():
        together = model(**model_inputs(processor(tweets, captions=captions))).logits
        alone = [
            model(**model_inputs(processor([tweet], captions=[caption]))).logits
            for tweet, caption in zip(tweets, captions, strict=True)
        ]
    # Different captions give different word scores for the same tweet: the encoder attends to them.
    assert not torch.allclose(together[0, :3], together[1, :3], atol=1e-4)
    for row, logits in enumerate(alone):
        torch.testing.assert_close(together[row, : logits.shape[1]], logits[0], atol=1e-5, rtol=1e-5)


def test_both_options_survive_save_and_load_and_the_pipeline_passes_the_caption(tmp_path, tokenizer):
    torch.manual_seed(0)
    MGCMForTokenClassification(text_only_config(tokenizer)).save_pretrained(tmp_path)
    processor = MGCMProcessor(tokenizer, url_token="http", caption_as_text_segment=True)
    processor.save_pretrained(tmp_path)

    loaded = AutoProcessor.from_pretrained(tmp_path)
    assert (loaded.url_token, loaded.caption_as_text_segment) == ("http", True)
    inputs = {"words": [["Obama", "http://t.co/w7rktBN5ac"]], "captions": ["a man"]}
    for name, value in processor(**inputs).items():
        assert torch.equal(loaded(**inputs)[name], value), name

    model = AutoModelForTokenClassification.from_pretrained(tmp_path)
    tagger = pipeline("multimodal-ner", model=model, processor=loaded, device="cpu")
    scores = [
        np.array(
            [
                word["score"]
                for word in tagger({"text": "Obama visits Paris", "caption": caption}, aggregation="words")[
                    "words"
                ]
            ]
        )
        for caption in (None, "a man on stage")
    ]
    assert not np.allclose(scores[0], scores[1])


def test_bad_option_values_are_refused(tokenizer):
    for url_token in ("", "  ", 3):
        with pytest.raises(ValueError, match="url_token"):
            MGCMProcessor(tokenizer, url_token=url_token)
    with pytest.raises(ValueError, match="caption_as_text_segment"):
        MGCMProcessor(tokenizer, caption_as_text_segment="yes")
    with pytest.raises(ValueError, match="segments would not fit"):
        MGCMProcessor(tokenizer, max_length=500, max_caption_length=32, caption_as_text_segment=True)
