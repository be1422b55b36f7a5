"""split_tweet: tweet entities and emoji stay whole, punctuation splits off as in the corpora, offsets always
index the original string, and any str is split without error."""

import re
import sys
import unicodedata
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from modeling_mgcm import tweet_tokenizer
from modeling_mgcm.tweet_tokenizer import split_tweet

DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


def words_of(text: str) -> list[str]:
    return [word for word, _, _ in split_tweet(text)]


@pytest.mark.parametrize(
    "text, expected",
    [
        ("RT @AuthorGiaLee: wow", ["RT", "@AuthorGiaLee", ":", "wow"]),
        ("#MyFest2015 #amwriting!", ["#MyFest2015", "#amwriting", "!"]),
        ("＠fullwidth ＃タグ", ["＠fullwidth", "＃タグ"]),
        ("@user's cat", ["@user", "'", "s", "cat"]),
        ("w/@action4IFAW", ["w", "/", "@action4IFAW"]),
        ("lone @ and # marks", ["lone", "@", "and", "#", "marks"]),
        ("$AAPL rose $100", ["$AAPL", "rose", "$", "100"]),
        ("mail a.b+c@example.co.uk now", ["mail", "a.b+c@example.co.uk", "now"]),
    ],
)
def test_mentions_hashtags_cashtags_and_emails_stay_whole(text, expected):
    assert words_of(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("see http://t.co/7ubozPWFAa.", ["see", "http://t.co/7ubozPWFAa", "."]),
        ("(https://x.com/a?b=1&c=2)", ["(", "https://x.com/a?b=1&c=2", ")"]),
        ("http://en.wikipedia.org/wiki/Foo_(bar)!", ["http://en.wikipedia.org/wiki/Foo_(bar)", "!"]),
        ("www.example.com, bit.ly/3abc", ["www.example.com", ",", "bit.ly/3abc"]),
        ("truncated http://t… link", ["truncated", "http://t…", "link"]),
        ('quoted "http://t.co/abc"', ["quoted", '"', "http://t.co/abc", '"']),
        ("HTTPS://EXAMPLE.COM/X", ["HTTPS://EXAMPLE.COM/X"]),
        ("link😂http://t.co/a😂", ["link", "😂", "http://t.co/a", "😂"]),
    ],
)
def test_urls_stay_whole_and_give_back_sentence_punctuation(text, expected):
    assert words_of(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("👨‍👩‍👧‍👦", ["👨‍👩‍👧‍👦"]),  # zero-width-joiner family
        ("🙏🏾🙏", ["🙏🏾", "🙏"]),  # skin tone stays on its emoji
        ("🇺🇸🇫🇷", ["🇺🇸", "🇫🇷"]),  # flags are regional-indicator pairs
        ("#️⃣1️⃣", ["#️⃣", "1️⃣"]),  # keycaps, not a hashtag or a number
        (
            "🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f!",
            ["🏴\U000e0067\U000e0062\U000e0073\U000e0063\U000e0074\U000e007f", "!"],
        ),
        ("❤️❤️", ["❤️", "❤️"]),  # variation selector stays on
        ("#elephants🐘 📷Bookstore", ["#elephants", "🐘", "📷", "Bookstore"]),
        ("🏀💯", ["🏀", "💯"]),
    ],
)
def test_each_emoji_sequence_is_one_word(text, expected):
    assert words_of(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("I've", ["I", "'", "ve"]),  # the corpora split apostrophes
        ("U.S. Mr. Smith.", ["U", ".", "S", ".", "Mr", ".", "Smith", "."]),  # and periods
        ("T-Mobile game-winning 2014-15", ["T-Mobile", "game-winning", "2014-15"]),
        (
            "at 10:30, 3.5% of $1,000 on 3/5/14",
            ["at", "10:30", ",", "3.5", "%", "of", "$", "1,000", "on", "3/5/14"],
        ),
        ("AT&T and H&M &amp; Q&A", ["AT&T", "and", "H&M", "&amp;", "Q&A"]),
        ("wait... what?!!", ["wait", "...", "what", "?", "!!"]),
        ("bath--and", ["bath", "--", "and"]),
        ("ok :) <3 :-( :D", ["ok", ":)", "<3", ":-(", ":D"]),
        ("time:pm so :30", ["time", ":", "pm", "so", ":", "30"]),
    ],
)
def test_punctuation_splits_off_like_the_corpora(text, expected):
    assert words_of(text) == expected


def test_unicode_spaces_controls_and_bidi_marks_separate_words():
    text = "a\u00a0b\u2009c\u200bd\u3000e\x00f\x07g\ufeffh\u200fi\u202ej\u2028k"
    assert words_of(text) == list("abcdefghijk")


def test_rtl_words_have_offsets_without_their_direction_marks():
    text = "\u200fשלום\u200e עולם @user"
    assert split_tweet(text) == [("שלום", 1, 5), ("עולם", 7, 11), ("@user", 12, 17)]


def test_combining_marks_stay_on_their_letter():
    decomposed = "cafe\u0301 nai\u0308ve #cafe\u0301"
    assert words_of(decomposed) == ["cafe\u0301", "nai\u0308ve", "#cafe\u0301"]
    # A mark with nothing to attach to is kept, not dropped.
    assert words_of("\u0301 x") == ["\u0301", "x"]


def test_replacement_character_and_private_use_count_as_letters():
    assert words_of("caf\ufffd \ufffd \ue000x") == ["caf\ufffd", "\ufffd", "\ue000x"]


def test_lone_surrogates_and_empty_or_blank_strings_are_handled():
    assert split_tweet("") == []
    assert split_tweet(" \t\n\u00a0") == []
    assert words_of("\ud800abc\udfff") == ["abc"]


def test_non_strings_are_refused_with_the_type():
    with pytest.raises(TypeError, match="bytes"):
        split_tweet(b"tweet")


def _is_separator(character: str) -> bool:
    return character.isspace() or unicodedata.category(character) in ("Cc", "Zs", "Zl", "Zp", "Cs")


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(codec=None), max_size=60))
def test_any_string_splits_into_words_that_index_it_and_drop_only_separators(text):
    words = split_tweet(text)
    covered = [False] * len(text)
    previous_end = 0
    for word, start, end in words:
        assert text[start:end] == word and word
        assert start >= previous_end
        previous_end = end
        assert not any(_is_separator(character) for character in word)
        covered[start:end] = [True] * (end - start)
    # Only separators (white space, controls, zero-width and bidi marks, BOM) are left out of every word.
    for position, character in enumerate(text):
        if not covered[position]:
            assert (
                _is_separator(character)
                or character in "\u200b\u180e\ufeff\u061c\u200e\u200f"
                or ("\u202a" <= character <= "\u202e" or "\u2066" <= character <= "\u2069")
            ), (text, position)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "@user_1",
                "#Tag2",
                "http://t.co/x9Y",
                "👩🏽‍💻",
                "🇯🇵",
                "T-Mobile",
                "10:30",
                "&amp;",
                "...",
                "word",
                "é",
            ]
        ),
        min_size=1,
        max_size=12,
    )
)
def test_space_separated_units_come_back_as_they_were(units):
    assert words_of(" ".join(units)) == units


@pytest.mark.skipif(
    not (DATA_DIR / "twitter2017" / "train.txt").is_file(), reason="shared corpus not present"
)
def test_resplitting_corpus_tweets_gives_back_nearly_all_their_words():
    # The corpus words joined by spaces are what a raw tweet looks like after the corpus's own splitting;
    # splitting them again should find the same words (Twitter-2017 differs only on "21," and invisible tokens).
    blocks = (DATA_DIR / "twitter2017" / "train.txt").read_text(encoding="utf-8").split("\n\n")[:1000]
    same = total = 0
    for block in blocks:
        tokens = [line.split("\t")[0] for line in block.split("\n") if "\t" in line]
        text = " ".join(tokens)
        spans = {(start, end) for _, start, end in split_tweet(text)}
        position = 0
        for token in tokens:
            same += (position, position + len(token)) in spans
            total += 1
            position += len(token) + 1
    assert total > 10_000
    assert same / total > 0.995


class CountingPattern:
    """A compiled pattern that adds to `counter[0]` the characters each `match` may scan (`pos` to `endpos`)."""

    def __init__(self, pattern: re.Pattern, counter: list[int]):
        self.pattern = pattern
        self.counter = counter

    def match(self, string: str, pos: int = 0, endpos: int = sys.maxsize):
        self.counter[0] += min(endpos, len(string)) - pos
        return self.pattern.match(string, pos, endpos)


@pytest.fixture
def count_splitting_work(monkeypatch):
    """`count(text)`: splits `text` and returns the work done, counted in operations rather than seconds: the
    characters every regular expression of the splitter may scan, plus each look at a character cluster."""
    counter = [0]
    for name, value in list(vars(tweet_tokenizer).items()):
        if isinstance(value, re.Pattern):
            monkeypatch.setattr(tweet_tokenizer, name, CountingPattern(value, counter))
    for method in ("kind", "text"):
        original = getattr(tweet_tokenizer._ChunkSplitter, method)

        def counted(self, index, original=original):
            counter[0] += 1
            return original(self, index)

        monkeypatch.setattr(tweet_tokenizer._ChunkSplitter, method, counted)

    def count(text: str) -> int:
        counter[0] = 0
        words = split_tweet(text)
        assert "".join(word for word, _, _ in words) == text
        return counter[0]

    return count


ADVERSARIAL_UNITS = [
    ("", "a."),
    ("", "a+"),
    ("", "x.y"),
    ("", "a&"),
    ("", "1,"),
    ("", "@a"),
    ("http://a", ")"),
]


@pytest.mark.parametrize("prefix, unit", ADVERSARIAL_UNITS)
def test_long_adversarial_strings_split_in_linear_work(count_splitting_work, prefix, unit):
    # Doubling the text doubles linear work (ratio 2) and quadruples quadratic work (ratio 4), such as a scan
    # to the end of the chunk from every word.
    work = [count_splitting_work(prefix + unit * (size // len(unit))) for size in (4_000, 8_000)]
    assert work[0] > 4_000
    assert work[1] / work[0] < 3, work


def test_the_work_count_sees_a_quadratic_scan(count_splitting_work, monkeypatch):
    # Without the bound on how far a match looks ahead, "a.a.a..." is scanned to its end from every word.
    monkeypatch.setattr(tweet_tokenizer, "_MATCH_WINDOW", 10**9)
    work = [count_splitting_work("a." * (size // 2)) for size in (4_000, 8_000)]
    assert work[1] / work[0] > 3.5, work
