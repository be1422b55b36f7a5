"""`split_tweet`: a tweet-aware word splitter whose words map back to the original string.

Words follow the conventions of the Twitter-2015/2017 corpora the models are trained on, so that raw text is
split the way the training words were: punctuation, apostrophes and periods split off (`I ' ve`, `U . S .`),
hyphenated words and numbers stay whole (`T-Mobile`, `2014-15`, `10:30`, `3.5`), and, as in Twitter-2015,
`@user`, `#tag`, `$CASHTAG`, URLs and e-mail addresses are single words. Each emoji is one word, with its skin
tone, variation selector, zero-width-joiner sequence, keycap or flag pair. Runs of one punctuation mark (`...`,
`!!!`), HTML entities (`&amp;`) and simple emoticons (`:)`, `:-(`, `<3`) are single words.

White space (including NBSP and the other Unicode spaces), control characters, zero-width spaces, byte-order
marks and bidirectional-text controls separate words and never belong to one. Combining marks stay on the
character they modify; U+FFFD, private-use and unassigned code points are letters (they usually stand for a
character that was lost).

The splitter is total: every `str` gives a list (possibly empty), and `text[start:end] == word` always.
"""

import re
import unicodedata

# Invisible characters that separate words: zero-width space, Mongolian vowel separator, byte-order mark,
# and the bidirectional controls that RTL tweets carry at word edges (marks, embeddings, isolates).
_INVISIBLE_SEPARATORS = frozenset(
    "\u200b\u180e\ufeff\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
)
_ZERO_WIDTH_JOINER = "\u200d"
_KEYCAP = "\u20e3"
_SKIN_TONES = range(0x1F3FB, 0x1F400)
_REGIONAL_INDICATORS = range(0x1F1E6, 0x1F200)
_TAG_CHARACTERS = range(0xE0020, 0xE0080)
# Pictographic blocks (emoji and the symbols that render as emoji) outside category So.
_PICTOGRAPHIC_RANGES = ((0x1F000, 0x1FAFF), (0x2600, 0x27BF), (0x2B00, 0x2BFF))

_HYPHENS = frozenset("-\u2010\u2011")
_NUMBER_SEPARATORS = frozenset(".,:/")
_MENTION_MARKS = frozenset("@\uff20")
_HASHTAG_MARKS = frozenset("#\uff03")
# Closing characters a URL does not end with in running text ("see http://x.co/a." or "(http://x.co/a)").
_URL_TRAILING = frozenset(".,;:!?'\"»”’)]}>*")
_URL_STOP = frozenset('<>"')

_URL_SCHEME = re.compile(r"(?:https?://|ftp://|www\.)\S", re.IGNORECASE)
# A link without a scheme needs a lower-case top-level domain and a path: "bit.ly/x", not "Mr.Smith/".
_BARE_DOMAIN = re.compile(r"[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[a-z]{2,}/")
_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_HTML_ENTITY = re.compile(r"&(?:[A-Za-z][A-Za-z0-9]{1,31}|#[0-9]{1,7}|#[xX][0-9A-Fa-f]{1,6});")
_EMOTICON = re.compile(r"<3|[:;=][-o^']?[)(\]\[/\\|*3DPpOo]")
_CASHTAG = re.compile(r"\$[A-Za-z]{1,10}")

# Longest e-mail address or scheme-less link looked for (RFC 5321: 64-character local part, 255 domain).
_MATCH_WINDOW = 320

# Cluster kinds.
_WORD = "word"
_EMOJI = "emoji"
_PUNCTUATION = "punctuation"


def _is_separator(character: str) -> bool:
    return (
        character.isspace()
        or character in _INVISIBLE_SEPARATORS
        or unicodedata.category(character) in ("Cc", "Zs", "Zl", "Zp", "Cs")
    )


def _is_extender(character: str) -> bool:
    """Characters that belong to the character before them: combining marks, variation selectors, skin tones,
    subdivision-flag tags and invisible format characters (ZWNJ, word joiner, soft hyphen)."""
    code_point = ord(character)
    return (
        unicodedata.category(character) in ("Mn", "Mc", "Me", "Cf")
        or code_point in _SKIN_TONES
        or code_point in _TAG_CHARACTERS
    )


def _is_pictographic(character: str) -> bool:
    code_point = ord(character)
    if character == "\ufffd":
        return False
    if code_point in _REGIONAL_INDICATORS or unicodedata.category(character) == "So":
        return True
    return any(low <= code_point <= high for low, high in _PICTOGRAPHIC_RANGES)


def _is_word_character(character: str) -> bool:
    category = unicodedata.category(character)
    # U+FFFD, private-use and unassigned code points usually stand for a lost letter of the word.
    return category[0] in "LNM" or category in ("Co", "Cn") or character in ("_", "\ufffd")


def _clusters(chunk: str) -> list[tuple[int, int, str]]:
    """Split a run of non-separator characters into `(start, end, kind)` user-perceived characters."""
    clusters = []
    position = 0
    length = len(chunk)
    while position < length:
        start = position
        base = chunk[position]
        position += 1
        if (
            ord(base) in _REGIONAL_INDICATORS
            and position < length
            and ord(chunk[position]) in _REGIONAL_INDICATORS
        ):
            position += 1  # a flag is a pair of regional indicators
        joined = False
        while position < length:
            character = chunk[position]
            if character == _ZERO_WIDTH_JOINER and position + 1 < length:
                # ZWJ glues the next character on (emoji sequences, Indic conjuncts).
                joined = joined or _is_pictographic(chunk[position + 1])
                position += 2
            elif _is_extender(character):
                position += 1
            else:
                break
        text = chunk[start:position]
        if _is_pictographic(base) or joined or _KEYCAP in text or "\ufe0f" in text[1:2]:
            kind = _EMOJI
        elif _is_word_character(base) or _is_extender(base):
            kind = _WORD
        else:
            kind = _PUNCTUATION
        clusters.append((start, position, kind))
    return clusters


class _ChunkSplitter:
    """Splits one run of non-separator characters into words, left to right."""

    def __init__(self, chunk: str):
        self.chunk = chunk
        self.clusters = _clusters(chunk)
        # Cluster index ending at each offset, so regular-expression matches can be mapped back to clusters.
        self.cluster_ending_at = {end: index for index, (_, end, _) in enumerate(self.clusters)}

    def text(self, index: int) -> str:
        start, end, _ = self.clusters[index]
        return self.chunk[start:end]

    def kind(self, index: int) -> str | None:
        return self.clusters[index][2] if 0 <= index < len(self.clusters) else None

    def is_digit(self, index: int) -> bool:
        return self.kind(index) == _WORD and unicodedata.category(self.text(index)[0]) == "Nd"

    def match_end(self, pattern: re.Pattern, index: int) -> int | None:
        """Cluster index after a match of `pattern` at cluster `index`, if it ends on a cluster boundary.

        Matching looks at most `_MATCH_WINDOW` characters ahead, which bounds the work per word: without it a
        chunk like "a.a.a.a..." would be scanned to its end from every word (quadratic time).
        """
        start = self.clusters[index][0]
        match = pattern.match(self.chunk, start, start + _MATCH_WINDOW)
        if match is None or match.end() not in self.cluster_ending_at:
            return None
        return self.cluster_ending_at[match.end()] + 1

    def split(self) -> list[tuple[int, int]]:
        words = []
        index = 0
        while index < len(self.clusters):
            end = self.next_word_end(index)
            words.append((self.clusters[index][0], self.clusters[end - 1][1]))
            index = end
        return words

    def next_word_end(self, index: int) -> int:
        """Cluster index just after the word that starts at cluster `index`."""
        kind = self.kind(index)
        text = self.text(index)
        after_word = self.kind(index - 1) == _WORD
        if kind == _EMOJI:
            return index + 1
        if not after_word:
            start = self.clusters[index][0]
            window = start + _MATCH_WINDOW
            if _URL_SCHEME.match(self.chunk, start, window) or _BARE_DOMAIN.match(self.chunk, start, window):
                return self.url_end(index)
            email_end = self.match_end(_EMAIL, index)
            if email_end is not None:
                return email_end
        if kind == _WORD:
            return self.word_end(index)
        if text in _MENTION_MARKS or text in _HASHTAG_MARKS:
            end = index + 1
            while self.kind(end) == _WORD:
                end += 1
            if end > index + 1:
                return end
        if text == "$" and not after_word:
            cashtag_end = self.match_end(_CASHTAG, index)
            if cashtag_end is not None and self.kind(cashtag_end) != _WORD:
                return cashtag_end
        if text == "&":
            entity_end = self.match_end(_HTML_ENTITY, index)
            if entity_end is not None:
                return entity_end
        if not after_word:
            emoticon_end = self.match_end(_EMOTICON, index)
            # ":Dog" and ":30" are not emoticons.
            if emoticon_end is not None and not (
                self.text(emoticon_end - 1).isalnum() and self.kind(emoticon_end) == _WORD
            ):
                return emoticon_end
        # A run of one punctuation mark is one word: "...", "!!!", "--".
        end = index + 1
        while end < len(self.clusters) and self.text(end) == text:
            end += 1
        return end

    def word_end(self, index: int) -> int:
        """Letters and digits, joined by single hyphens, by `&` (AT&T) and, between digits, by . , : /."""
        end = index + 1
        while end < len(self.clusters):
            if self.kind(end) == _WORD:
                end += 1
                continue
            joiner = self.text(end)
            if self.kind(end + 1) != _WORD:
                break
            if joiner in _HYPHENS or (joiner == "&" and self.match_end(_HTML_ENTITY, end) is None):
                end += 2
            elif joiner in _NUMBER_SEPARATORS and self.is_digit(end - 1) and self.is_digit(end + 1):
                end += 2
            else:
                break
        return end

    def url_end(self, index: int) -> int:
        """A URL runs to white space, an emoji or `<>"`, includes a truncation ellipsis, and gives back the
        closing punctuation of the sentence around it (an unbalanced `)` included)."""
        end = index
        while end < len(self.clusters) and self.kind(end) != _EMOJI:
            text = self.text(end)
            if text in _URL_STOP:
                break
            end += 1
            if text == "…":
                return end
        url = self.chunk[self.clusters[index][0] : self.clusters[end - 1][1]]
        opened, closed = url.count("("), url.count(")")
        while end > index + 1 and self.text(end - 1) in _URL_TRAILING:
            if self.text(end - 1) == ")":
                if opened >= closed:
                    break  # it closes a parenthesis of the URL: wiki/Foo_(bar)
                closed -= 1
            end -= 1
        return end


def split_tweet(text: str) -> list[tuple[str, int, int]]:
    """Split a tweet into words with their character offsets in `text`.

    Args:
        text: the tweet, any string.

    Returns:
        `(word, start, end)` triples in order, with `text[start:end] == word`, non-empty, not overlapping,
        and no separator character (white space, control, zero-width space, bidi control) inside a word.

    Raises:
        TypeError: `text` is not a string.
    """
    if not isinstance(text, str):
        raise TypeError(f"split_tweet takes a str, got {type(text).__name__}: {text!r:.80}")
    words = []
    position = 0
    length = len(text)
    while position < length:
        if _is_separator(text[position]):
            position += 1
            continue
        chunk_start = position
        while position < length and not _is_separator(text[position]):
            position += 1
        chunk = text[chunk_start:position]
        if chunk.isascii() and chunk.isalnum():
            # Most chunks are plain words; the cluster scanner would return them whole.
            words.append((chunk, chunk_start, position))
            continue
        for start, end in _ChunkSplitter(chunk).split():
            words.append(
                (text[chunk_start + start : chunk_start + end], chunk_start + start, chunk_start + end)
            )
    return words


__all__ = ["split_tweet"]
