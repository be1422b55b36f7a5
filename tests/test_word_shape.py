"""Word-shape classes of tweet tokens (docs/interfaces.md: 12 classes, 0 is padding)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from modeling_mgcm.word_shape import (
    ALL_CAPS_SHAPE_ID,
    CAPITALISED_SHAPE_ID,
    DIGITS_SHAPE_ID,
    HASHTAG_SHAPE_ID,
    LETTERS_AND_DIGITS_SHAPE_ID,
    LOWER_CASE_SHAPE_ID,
    MENTION_SHAPE_ID,
    MIXED_CASE_SHAPE_ID,
    NUM_WORD_SHAPES,
    OTHER_SHAPE_ID,
    PADDING_SHAPE_ID,
    PUNCTUATION_SHAPE_ID,
    URL_SHAPE_ID,
    WORD_SHAPE_NAMES,
    word_shape_id,
)

EXAMPLES_BY_CLASS = {
    LOWER_CASE_SHAPE_ID: ["paris", "rt", "don't", "café", "cafe\u0301", "straße", "lol😂", "…and"],
    CAPITALISED_SHAPE_ID: ["Paris", "I", "A", "Édith", "New-york", "Trump…"],
    ALL_CAPS_SHAPE_ID: ["USA", "NBA", "U.S.", "ÉTÉ", "RT"],
    MIXED_CASE_SHAPE_ID: ["iPhone", "McDonald", "O'Neil", "NBAFinals", "eBay"],
    DIGITS_SHAPE_ID: ["2017", "7", "10:30", "6/10", "1,000", "$5", "-3.5", "50%", "2014-15", "٣"],
    LETTERS_AND_DIGITS_SHAPE_ID: ["30pm", "1st", "MP3", "Trump2016", "SS11", "125K"],
    MENTION_SHAPE_ID: ["@user", "@PIX11News", "@nytimes", "@_x"],
    HASHTAG_SHAPE_ID: ["#Tag", "#amwriting", "#MyFest2015", "#1", "#東京"],
    URL_SHAPE_ID: [
        "http://t.co/15beLF6Ajw",
        "https://t.co/cyAF0hSUes",
        "www.example.com",
        "http://t…",
        "http:…",
        "htt…",
        "co/w7rktBN5ac",
        "//t",
        "bit.ly/abc",
    ],
    PUNCTUATION_SHAPE_ID: [",", "!!", "...", "…", "#", "@", "-", "&amp", "&gt", "©", "™", "€", "“"],
    OTHER_SHAPE_ID: [
        "😂",
        "❤️",
        "🇺🇸",
        "👍🏼",
        "1️⃣",
        "\ufe0f",
        "\ufffd",
        "\u0301",
        "\u00a0",
        "",
        "   ",
        "東京",
        "مرحبا",
        "!😂",
    ],
}


def test_there_are_twelve_named_classes_and_the_examples_cover_every_real_one():
    assert NUM_WORD_SHAPES == 12 == len(WORD_SHAPE_NAMES)
    assert WORD_SHAPE_NAMES[PADDING_SHAPE_ID] == "padding"
    assert set(EXAMPLES_BY_CLASS) == set(range(1, NUM_WORD_SHAPES))


@pytest.mark.parametrize(
    ("token", "expected"),
    [(token, shape) for shape, tokens in EXAMPLES_BY_CLASS.items() for token in tokens],
    ids=lambda value: repr(value) if isinstance(value, str) else WORD_SHAPE_NAMES[value],
)
def test_each_token_gets_its_class(token, expected):
    assert WORD_SHAPE_NAMES[word_shape_id(token)] == WORD_SHAPE_NAMES[expected]


def test_surrounding_whitespace_and_nbsp_do_not_change_the_class():
    assert word_shape_id("\u00a0Paris ") == CAPITALISED_SHAPE_ID
    assert word_shape_id("\tUSA\n") == ALL_CAPS_SHAPE_ID


def test_a_replacement_character_inside_a_word_keeps_the_word_class():
    # Twitter-2017 has U+FFFD inside tokens: the letters still say how the word is cased.
    assert word_shape_id("caf\ufffd") == LOWER_CASE_SHAPE_ID
    assert word_shape_id("Caf\ufffd") == CAPITALISED_SHAPE_ID


@given(st.text(max_size=12))
def test_any_text_gets_a_real_class_never_padding(token):
    assert 1 <= word_shape_id(token) < NUM_WORD_SHAPES
