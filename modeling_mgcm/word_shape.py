"""Word-shape classes of tweet tokens, so that uncased encoders still see capitalisation.

The 12 classes are those of docs/interfaces.md; the model only knows `config.num_word_shapes = 12`.
A token is cleaned first (`clean_token`: NFC, HTML entities decoded, surrounding whitespace removed).
Characters other than letters and digits (apostrophes, hyphens, dots, emoji) do not change the class
of a token that has letters or digits: `don't` is lower-case, `U.S.` all caps, `10:30` digits.
"""

import unicodedata

from .tweet_normalise import clean_token, is_url

NUM_WORD_SHAPES = 12

PADDING_SHAPE_ID = 0
LOWER_CASE_SHAPE_ID = 1
CAPITALISED_SHAPE_ID = 2
ALL_CAPS_SHAPE_ID = 3
MIXED_CASE_SHAPE_ID = 4
DIGITS_SHAPE_ID = 5
LETTERS_AND_DIGITS_SHAPE_ID = 6
MENTION_SHAPE_ID = 7
HASHTAG_SHAPE_ID = 8
URL_SHAPE_ID = 9
PUNCTUATION_SHAPE_ID = 10
OTHER_SHAPE_ID = 11

WORD_SHAPE_NAMES = [
    "padding",
    "lower",
    "capitalised",
    "all_caps",
    "mixed_case",
    "digits",
    "letters_and_digits",
    "mention",
    "hashtag",
    "url",
    "punctuation",
    "other",
]

# Blocks whose symbols render as emoji (or join them: variation selectors, zero-width joiner, skin
# tones, tag characters). Other symbols (`©`, `™`, `€`, `+`) count as punctuation/symbols.
_EMOJI_RANGES = (
    (0x2190, 0x21FF),  # arrows: ↩ ↪
    (0x2300, 0x23FF),  # technical: ⌚ ⏰
    (0x25A0, 0x27BF),  # geometric shapes, miscellaneous symbols, dingbats: ▶ ☀ ❤ ⚽ ✔
    (0x2900, 0x297F),  # supplemental arrows: ⤴
    (0x2B00, 0x2BFF),  # ⬆ ⭐
    (0x3030, 0x3030),
    (0x303D, 0x303D),
    (0x3297, 0x3299),
    (0x200D, 0x200D),  # zero-width joiner
    (0xFE00, 0xFE0F),  # variation selectors
    (0x1F000, 0x1FAFF),  # pictographs, emoticons, flags, skin tones
    (0xE0020, 0xE007F),  # tag characters of subdivision flags
)


def _is_emoji_or_unknown(character: str) -> bool:
    """Emoji, the replacement character U+FFFD (a decoding error), private-use or unassigned code points."""
    code_point = ord(character)
    if code_point == 0xFFFD or unicodedata.category(character) in ("Co", "Cn"):
        return True
    return any(low <= code_point <= high for low, high in _EMOJI_RANGES)


def _has_letter_or_digit(text: str) -> bool:
    return any(character.isalpha() or unicodedata.category(character) == "Nd" for character in text)


def _case_shape_id(letters: list[str]) -> int:
    """The case class of a word's letters; letters of uncased scripts (CJK, Arabic, Thai) give "other"."""
    cased = [
        character
        for character in letters
        if character.islower() or character.isupper() or character.istitle()
    ]
    if not cased:
        return OTHER_SHAPE_ID
    upper = [not character.islower() for character in cased]
    if not any(upper):
        return LOWER_CASE_SHAPE_ID
    if upper[0] and not any(upper[1:]):
        # A lone capital ("I", "A") reads as a capitalised word, not as an acronym.
        return CAPITALISED_SHAPE_ID
    if all(upper):
        return ALL_CAPS_SHAPE_ID
    return MIXED_CASE_SHAPE_ID


def word_shape_id(token: str) -> int:
    """The word-shape class (1..11) of a token; 0 is padding and never returned.

    Checked in order: empty or whitespace-only -> other; URL; `@mention`; `#hashtag` (a lone `@`/`#` is
    punctuation); letters and digits; letters (by case); digits (with any separators, sign or currency);
    punctuation and symbols only; anything else (emoji, U+FFFD, lone combining marks) -> other.
    """
    text = clean_token(token)
    if not text:
        return OTHER_SHAPE_ID
    if is_url(text):
        return URL_SHAPE_ID
    if text[0] == "@" and _has_letter_or_digit(text[1:]):
        return MENTION_SHAPE_ID
    if text[0] == "#" and _has_letter_or_digit(text[1:]):
        return HASHTAG_SHAPE_ID
    letters = [character for character in text if character.isalpha()]
    has_digit = any(unicodedata.category(character) == "Nd" for character in text)
    if letters and has_digit:
        return LETTERS_AND_DIGITS_SHAPE_ID
    if letters:
        return _case_shape_id(letters)
    if any(_is_emoji_or_unknown(character) for character in text):
        # Keycap emoji such as 1️⃣ hold a digit but are pictures, not numbers.
        return OTHER_SHAPE_ID
    if has_digit:
        return DIGITS_SHAPE_ID
    if all(unicodedata.category(character)[0] in "PS" for character in text):
        return PUNCTUATION_SHAPE_ID
    return OTHER_SHAPE_ID


__all__ = [
    "ALL_CAPS_SHAPE_ID",
    "CAPITALISED_SHAPE_ID",
    "DIGITS_SHAPE_ID",
    "HASHTAG_SHAPE_ID",
    "LETTERS_AND_DIGITS_SHAPE_ID",
    "LOWER_CASE_SHAPE_ID",
    "MENTION_SHAPE_ID",
    "MIXED_CASE_SHAPE_ID",
    "NUM_WORD_SHAPES",
    "OTHER_SHAPE_ID",
    "PADDING_SHAPE_ID",
    "PUNCTUATION_SHAPE_ID",
    "URL_SHAPE_ID",
    "WORD_SHAPE_NAMES",
    "word_shape_id",
]
