"""Reads and writes UMT-style CoNLL tweet corpora, with their captions and detected objects.

A corpus folder holds any of `train.txt`, `valid.txt`, `test.txt`. A tweet is an `IMGID:<id>` line,
one `token<TAB>tag` line per token, then a blank line; its image is `<image_dir>/<id>.jpg`.

Command line: `python -m processing.corpus stats|export DIR ...` (see `processing/corpus/cli.py`).
"""

import json
import math
import operator
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from datasets import Dataset, DatasetDict

from modeling_mgcm.configuration_mgcm import check_text_source_name
from processing.corpus.labels import (
    ID_TO_LABEL,
    LABEL_NAMES,
    LABEL_TO_ID,
    TAG_ALIASES,
    normalise_tag,
    repair_bio_tags,
)
from processing.corpus.schema import corpus_features

SPLIT_NAMES = ("train", "valid", "test")
IMGID_PREFIX = "IMGID:"
IMAGE_SUFFIX = ".jpg"
CAPTION_SEPARATOR = IMAGE_SUFFIX + " :"


class CorpusFormatError(ValueError):
    """A corpus, captions or objects file that cannot be read as it stands.

    `path`, `line_number` (1-based, None when unknown) and `text` (the offending line or value) say where.
    """

    def __init__(self, path: str | os.PathLike, line_number: int | None, text: str, problem: str):
        self.path = str(path)
        self.line_number = line_number
        self.text = text
        self.problem = problem
        location = self.path if line_number is None else f"{self.path}, line {line_number}"
        super().__init__(f"{location}: {problem}: {text!r}")

    def __reduce__(self):
        # Keeps the error picklable, so it survives `datasets` worker processes.
        return (type(self), (self.path, self.line_number, self.text, self.problem))


class DuplicateTweetIdError(CorpusFormatError):
    """The same IMGID names two tweets of one split (or two entries of a captions or objects file)."""


@dataclass(frozen=True)
class ConllTweet:
    """One tweet of a CoNLL file: its IMGID, tokens, tags (names from `LABEL_NAMES`) and IMGID line."""

    id: str
    tokens: list[str]
    tags: list[str]
    line_number: int


def _read_utf8_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 file (a leading byte-order mark dropped), split on "\\n" only.

    `str.splitlines` would also split on characters such as U+2028 or U+0085, which can be tokens.
    """
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line_start = data.rfind(b"\n", 0, error.start) + 1
        line_end = data.find(b"\n", error.start)
        bad_line = data[line_start : None if line_end == -1 else line_end]
        raise CorpusFormatError(
            path,
            data.count(b"\n", 0, error.start) + 1,
            bad_line.decode("utf-8", errors="backslashreplace"),
            f"not UTF-8 (byte {data[error.start]:#04x} at column {error.start - line_start + 1}); "
            "re-encode the file as UTF-8",
        ) from None
    return text.removeprefix("\ufeff").split("\n")


def read_conll_file(path: str | os.PathLike, repair_bio: bool = False) -> list[ConllTweet]:
    """Read one UMT-style CoNLL file into tweets, mapping OTHER to MISC.

    With `repair_bio=True`, an I- tag that opens an entity becomes B- (see `labels.repair_bio_tags`).
    Raises `CorpusFormatError` naming the file, line and text of the first malformed line, and
    `DuplicateTweetIdError` when an IMGID repeats.
    """
    path = Path(path)
    tweets: list[ConllTweet] = []
    first_line_of_id: dict[str, int] = {}
    open_tweet: tuple[str, int] | None = None  # (id, IMGID line) of the tweet being read
    tokens: list[str] = []
    tags: list[str] = []
    last_blank_line = 0

    def close_tweet() -> None:
        image_id, id_line = open_tweet
        if not tokens:
            raise CorpusFormatError(
                path, id_line, IMGID_PREFIX + image_id, "empty tweet: the IMGID line has no token lines"
            )
        final_tags = repair_bio_tags(tags) if repair_bio else list(tags)
        tweets.append(ConllTweet(image_id, list(tokens), final_tags, id_line))
        tokens.clear()
        tags.clear()

    for line_number, line in enumerate(_read_utf8_lines(path), start=1):
        if not line.strip():
            if open_tweet is not None:
                close_tweet()
                open_tweet = None
            last_blank_line = line_number
            continue
        if "\t" not in line:
            if not line.startswith(IMGID_PREFIX):
                raise CorpusFormatError(
                    path, line_number, line, "no tab: expected 'token<TAB>tag' or 'IMGID:<id>'"
                )
            if open_tweet is not None:
                close_tweet()
            image_id = line[len(IMGID_PREFIX) :].strip()
            if not image_id:
                raise CorpusFormatError(path, line_number, line, "IMGID line without an id")
            if image_id in first_line_of_id:
                raise DuplicateTweetIdError(
                    path,
                    line_number,
                    line,
                    f"IMGID {image_id} already names the tweet at line {first_line_of_id[image_id]}; "
                    "give each tweet its own id",
                )
            first_line_of_id[image_id] = line_number
            open_tweet = (image_id, line_number)
            continue
        if open_tweet is None:
            if not first_line_of_id:
                problem = "token line before the first 'IMGID:' line"
            else:
                problem = (
                    f"token line outside a tweet (the blank line {last_blank_line} ended the previous "
                    "tweet); start a new tweet with an 'IMGID:<id>' line"
                )
            raise CorpusFormatError(path, line_number, line, problem)
        token, _, tag = line.partition("\t")
        tag = tag.strip()
        if not token:
            raise CorpusFormatError(path, line_number, line, "empty token before the tab")
        if "\t" in tag:
            raise CorpusFormatError(path, line_number, line, "more than one tab: expected 'token<TAB>tag'")
        try:
            tags.append(normalise_tag(tag))
        except KeyError:
            known = ", ".join(LABEL_NAMES + list(TAG_ALIASES))
            raise CorpusFormatError(
                path, line_number, line, f"unknown tag {tag!r}; known tags: {known}"
            ) from None
        tokens.append(token)
    if open_tweet is not None:
        close_tweet()
    return tweets


def write_conll(dataset: Iterable[Mapping], path: str | os.PathLike) -> Path:
    """Write rows with `id`, `tokens` and `ner_tags` (ids into `LABEL_NAMES` or tag names) as a CoNLL file.

    `read_conll_file` reads the file back to the same ids, tokens and tags (OTHER as MISC). Rows that
    could not round-trip (tabs or newlines in a token, an empty tweet, a repeated id...) raise `ValueError`.
    """
    if isinstance(dataset, Dataset):
        # Iterating the full rows would decode every image.
        dataset = dataset.select_columns(["id", "tokens", "ner_tags"])
    blocks = []
    seen_ids = set()
    for row_index, row in enumerate(dataset):
        image_id, tokens, tags = row["id"], list(row["tokens"]), list(row["ner_tags"])
        where = f"row {row_index} (id {image_id!r})"
        if (
            not isinstance(image_id, str)
            or not image_id
            or image_id.strip() != image_id
            or "\t" in image_id
            or "\n" in image_id
        ):
            raise ValueError(
                f"{where}: an id must be a non-empty string without tab, newline or surrounding spaces"
            )
        if image_id in seen_ids:
            raise ValueError(f"{where}: the id repeats an earlier row")
        seen_ids.add(image_id)
        if not tokens or len(tokens) != len(tags):
            raise ValueError(
                f"{where}: needs at least one token and one tag per token, got {len(tokens)} tokens and {len(tags)} tags"
            )
        lines = [IMGID_PREFIX + image_id]
        for position, (token, tag) in enumerate(zip(tokens, tags, strict=True)):
            if not isinstance(token, str) or not token or "\t" in token or "\n" in token:
                raise ValueError(
                    f"{where}, token {position}: {token!r} must be non-empty, without tab or newline"
                )
            try:
                tag_name = normalise_tag(tag) if isinstance(tag, str) else ID_TO_LABEL[operator.index(tag)]
            except (KeyError, TypeError):
                raise ValueError(f"{where}, token {position}: unknown tag {tag!r}") from None
            lines.append(f"{token}\t{tag_name}")
        blocks.append("\n".join(lines) + "\n")
    text = "\n".join(blocks)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise ValueError(f"{path}: cannot encode {text[error.start : error.end]!r} as UTF-8") from None
    path = Path(path)
    path.write_bytes(data)
    return path


def read_captions_file(path: str | os.PathLike) -> dict[str, str]:
    """Read `<IMGID>.jpg :<text>` lines into {IMGID: text}; blank lines are skipped. Every text source
    (captions, PGIM knowledge, ...) comes in this format."""
    path = Path(path)
    captions: dict[str, str] = {}
    first_line_of_id: dict[str, int] = {}
    for line_number, line in enumerate(_read_utf8_lines(path), start=1):
        if not line.strip():
            continue
        image_name, separator, caption = line.partition(CAPTION_SEPARATOR)
        image_id = image_name.strip()
        if not separator or not image_id:
            raise CorpusFormatError(path, line_number, line, "expected '<IMGID>.jpg :<caption>'")
        if image_id in first_line_of_id:
            raise DuplicateTweetIdError(
                path,
                line_number,
                line,
                f"IMGID {image_id} already has a caption at line {first_line_of_id[image_id]}",
            )
        first_line_of_id[image_id] = line_number
        captions[image_id] = caption.strip()
    return captions


def _line_containing(text: str, needle: str) -> int | None:
    """The 1-based line of the first occurrence of `needle` in `text` (to point at a JSON value)."""
    position = text.find(needle)
    return None if position == -1 else text.count("\n", 0, position) + 1


def read_objects_file(path: str | os.PathLike) -> dict[str, list[dict]]:
    """Read a JSON file `{IMGID: [{"label": str, "score": float in [0, 1]}, ...]}`.

    Objects keep their file order (a detector's score order); keys other than label and score are dropped.
    """
    path = Path(path)
    text = "\n".join(_read_utf8_lines(path))

    def reject_duplicate_keys(pairs: list[tuple[str, object]]) -> dict:
        mapping = {}
        for key, value in pairs:
            if key in mapping:
                raise DuplicateTweetIdError(
                    path, _line_containing(text, json.dumps(key)), key, "duplicate key"
                )
            mapping[key] = value
        return mapping

    try:
        content = json.loads(text, object_pairs_hook=reject_duplicate_keys)
    except json.JSONDecodeError as error:
        bad_line = text.split("\n")[error.lineno - 1] if error.lineno else ""
        raise CorpusFormatError(
            path, error.lineno, bad_line, f"invalid JSON ({error.msg}, column {error.colno})"
        ) from None
    except RecursionError:
        raise CorpusFormatError(path, None, text[:40], "invalid JSON (nested too deeply)") from None
    except ValueError as error:
        if isinstance(error, CorpusFormatError):
            raise
        # Python refuses to convert integers of more than 4300 digits; json reports it without a position.
        digits = re.search(r"\d{4301,}", text)
        line_number = None if digits is None else text.count("\n", 0, digits.start()) + 1
        value = text[:40] if digits is None else digits.group()[:20] + "..."
        raise CorpusFormatError(path, line_number, value, f"invalid JSON ({error})") from None
    if not isinstance(content, dict):
        raise CorpusFormatError(
            path, 1, type(content).__name__, 'expected a JSON object {"<IMGID>": [objects]}'
        )
    objects: dict[str, list[dict]] = {}
    for image_id, detections in content.items():
        line_number = _line_containing(text, json.dumps(image_id))
        if not isinstance(detections, list):
            raise CorpusFormatError(
                path, line_number, repr(detections), f"IMGID {image_id}: expected a list of objects"
            )
        objects[image_id] = []
        for index, detection in enumerate(detections):
            where = f"IMGID {image_id}, object {index}"
            if not isinstance(detection, dict):
                raise CorpusFormatError(
                    path, line_number, repr(detection), f'{where}: expected {{"label": ..., "score": ...}}'
                )
            label, score = detection.get("label"), detection.get("score")
            if not isinstance(label, str) or not label:
                raise CorpusFormatError(
                    path, line_number, repr(label), f"{where}: label must be a non-empty string"
                )
            if (
                isinstance(score, bool)
                or not isinstance(score, int | float)
                or not math.isfinite(score)
                or not 0 <= score <= 1
            ):
                raise CorpusFormatError(
                    path, line_number, repr(score), f"{where}: score must be a number in [0, 1]"
                )
            objects[image_id].append({"label": label, "score": float(score)})
    return objects


def image_path_for(image_dir: Path, tweet: ConllTweet, corpus_file: Path) -> Path:
    """`<image_dir>/<IMGID>.jpg`; an IMGID that would lead outside `image_dir` raises `CorpusFormatError`."""
    file_name = tweet.id + IMAGE_SUFFIX
    # A separator, a drive ("C:x") or a NUL byte could reach outside image_dir or break the file system call;
    # backslashes are refused on every platform so that a corpus behaves the same everywhere.
    if Path(file_name).name != file_name or "\\" in file_name or "\x00" in file_name:
        raise CorpusFormatError(
            corpus_file,
            tweet.line_number,
            IMGID_PREFIX + tweet.id,
            f"IMGID would name an image outside {image_dir}; an IMGID must be a plain file name",
        )
    return image_dir / file_name


def _split_dataset(
    tweets: list[ConllTweet],
    corpus_file: Path,
    split: str,
    image_dir: Path | None,
    text_sources: Mapping[str, Mapping[str, str]],
    objects: Mapping[str, list[dict]],
) -> Dataset:
    images = []
    for tweet in tweets:
        path = None if image_dir is None else image_path_for(image_dir, tweet, corpus_file)
        # A missing file becomes None; a present but corrupt one keeps its path: decoding is lazy.
        images.append(str(path) if path is not None and path.is_file() else None)
    columns = {
        "id": [tweet.id for tweet in tweets],
        "tokens": [tweet.tokens for tweet in tweets],
        "ner_tags": [[LABEL_TO_ID[tag] for tag in tweet.tags] for tweet in tweets],
        "image": images,
        **{
            name: [texts.get(tweet.id, "") for tweet in tweets]
            for name, texts in {"caption": {}, **text_sources}.items()
        },
        "objects": [objects.get(tweet.id, []) for tweet in tweets],
    }
    return Dataset.from_dict(columns, features=corpus_features(list(text_sources)), split=split)


def load_tweet_corpus(
    data_dir: str | os.PathLike,
    image_dir: str | os.PathLike | None = None,
    captions_file: str | os.PathLike | None = None,
    objects_file: str | os.PathLike | None = None,
    repair_bio: bool = False,
    text_source_files: Mapping[str, str | os.PathLike] | None = None,
) -> DatasetDict:
    """Load whichever of `train.txt`, `valid.txt`, `test.txt` exist in `data_dir` as a DatasetDict.

    Features: `id`, `tokens`, `ner_tags` (ClassLabel over `LABEL_NAMES`, OTHER read as MISC), `image`
    (path of `<image_dir>/<IMGID>.jpg`, None when there is no such file), `caption` ("" when none) and
    `objects` ([] when none), and one string column per entry of `text_source_files` (name -> a file in
    the captions format, e.g. `{"knowledge": "twitter2015_pgim.txt"}`; "" where a tweet has none;
    `captions_file` is the same as a `caption` entry). A corrupt image file keeps its path; it fails only when decoded, so cast the
    column to `datasets.Image(decode=False)` to read paths. `repair_bio=True` turns I- tags that open an
    entity into B-; the default keeps the data as published so scores stay comparable.
    """
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"corpus folder {data_dir} does not exist")
    split_files = {split: data_dir / f"{split}.txt" for split in SPLIT_NAMES}
    split_files = {split: path for split, path in split_files.items() if path.is_file()}
    if not split_files:
        raise FileNotFoundError(f"{data_dir} holds none of {', '.join(f'{s}.txt' for s in SPLIT_NAMES)}")
    if image_dir is not None:
        image_dir = Path(image_dir).absolute()
        if not image_dir.is_dir():
            raise FileNotFoundError(f"image folder {image_dir} does not exist")
    source_files = dict(text_source_files or {})
    if captions_file is not None:
        if "caption" in source_files:
            raise ValueError(
                "give the captions as captions_file or as text_source_files['caption'], not both"
            )
        source_files = {"caption": captions_file, **source_files}
    for name in source_files:
        check_text_source_name(name, "load_tweet_corpus: text_source_files")
    text_sources = {name: read_captions_file(path) for name, path in source_files.items()}
    objects = read_objects_file(objects_file) if objects_file is not None else {}
    return DatasetDict(
        {
            split: _split_dataset(
                read_conll_file(path, repair_bio), path, split, image_dir, text_sources, objects
            )
            for split, path in split_files.items()
        }
    )


__all__ = [
    "SPLIT_NAMES",
    "ConllTweet",
    "CorpusFormatError",
    "DuplicateTweetIdError",
    "image_path_for",
    "load_tweet_corpus",
    "read_captions_file",
    "read_conll_file",
    "read_objects_file",
    "write_conll",
]
