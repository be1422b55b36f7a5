"""Normalises tweet tokens before they are looked up in a word-vector vocabulary.

`normalise_token` lower-cases a token, strips the `#`/`@` of hashtags and mentions, and maps URLs and
numbers to one class token each, so that `#Paris`, `@Paris` and `PARIS` all find the vector of `paris`.

The class tokens are ordinary words of GloVe and word2vec vocabularies, chosen for their neighbours
(measured in GloVe 6B 50d):
- URLs -> `"url"`: its nearest words are `username`, `bookmark`, `password`, `directory`, `webpage`,
  web vocabulary that says "a link" (the neighbours of `"http"` are file formats, those of `"link"` are
  `connection`, `access`). Tweet-trained vocabularies that spell it `<url>` are not matched.
- Numbers -> `"1"`: its nearest words are `2`, `3`, `4`, `5` (cosine > 0.95), so every number is
  augmented as "a number". `"0"` is closer to sports scores (`vs.`), and `"number"` to `other`, `only`.
"""

import html
import re
import unicodedata

URL_CLASS_TOKEN = "url"
NUMBER_CLASS_TOKEN = "1"

# A tweet's link, whole or cut by the tokenizer or by a 140-character truncation ("http://t…", "htt…",
# "co/w7rktBN5ac", "//t"): all seen in Twitter-2015.
_URL_PATTERN = re.compile(
    r"""(?:https?:|ftp:|www\.)\S*                       # scheme or www.
      | h(?:t(?:t(?:ps?)?)?)?(?::/{0,2}\S*)?…            # a link truncated by an ellipsis
      | (?:t\.)?co/\w\S*                                # a t.co link split at its first dot
      | //\S+                                           # a link split after its scheme
      | [a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}/\S*      # a domain with a path: bit.ly/abc
    """,
    re.IGNORECASE | re.VERBOSE,
)

# Cardinals, decimals, times, dates, scores and ranges: 7, -3.5, $1,000, 10:30, 6/10, 2014-15, 50%.
_NUMBER_PATTERN = re.compile(r"[+\-±]?[$€£¥]?\d+(?:[.,:/\-]\d+)*%?")

_TRUNCATION_MARKS = ("…", "...")


def clean_token(token: str) -> str:
    """The token in canonical Unicode form (NFC), HTML entities decoded, surrounding whitespace removed.

    Twitter-2015 keeps entities such as `&amp` and `&gt` undecoded; NFC joins a letter and its combining
    accent into the one code point that word-vector vocabularies use.
    """
    return html.unescape(unicodedata.normalize("NFC", token)).strip()


def is_url(token: str) -> bool:
    """Whether a (cleaned) token is a link, whole or truncated."""
    return _URL_PATTERN.fullmatch(token) is not None


def is_number(token: str) -> bool:
    """Whether a (cleaned) token is a number, possibly with sign, currency, separators or percent."""
    return _NUMBER_PATTERN.fullmatch(token) is not None


def normalise_token(token: str) -> str:
    """The form of a tweet token that is looked up in a (lower-cased) word-vector vocabulary.

    In order: `clean_token`; a URL becomes `URL_CLASS_TOKEN`; leading `#`/`@` are stripped (a lone `#`
    or `@` stays itself, as Twitter-2017 splits them off into their own tokens); a trailing truncation
    ellipsis is dropped; a number becomes `NUMBER_CLASS_TOKEN`; the rest is lower-cased. A token that is
    empty or only whitespace gives "", which no vocabulary holds.
    """
    text = clean_token(token)
    if is_url(text):
        return URL_CLASS_TOKEN
    text = text.lstrip("#@") or text
    for mark in _TRUNCATION_MARKS:
        if text.endswith(mark) and len(text) > len(mark):
            text = text[: -len(mark)]
            break
    if is_number(text):
        return NUMBER_CLASS_TOKEN
    return text.lower()


__all__ = [
    "NUMBER_CLASS_TOKEN",
    "URL_CLASS_TOKEN",
    "clean_token",
    "is_number",
    "is_url",
    "normalise_token",
]
