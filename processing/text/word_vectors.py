"""Reads pretrained word vectors: GloVe/word2vec text files, or a `vectors.npy` + `words.txt` folder.

The folder layout is what `../shared/tools/offline-models` writes: `vectors.npy` (V, dim) and
`words.txt`, one word a line in the same order. Files are assumed frequency ordered (GloVe and word2vec
are), which is what `max_words` and the neighbour table's `keep_top_n` rely on.
"""

import hashlib
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

VECTORS_FILE_NAME = "vectors.npy"
WORDS_FILE_NAME = "words.txt"

# The cache identity of a vectors file reads this many evenly spaced blocks, not the whole file.
_DIGEST_SAMPLES = 32
_DIGEST_BLOCK_BYTES = 1 << 16

# Editors on Windows start UTF-8 files with one; it is not part of the first word.
_BYTE_ORDER_MARK = "\ufeff"


class WordVectorsFormatError(ValueError):
    """A word-vectors file that cannot be read as it stands; the message names the file and line."""


@dataclass(frozen=True, eq=False)
class WordVectors:
    """Words and their vectors, row-aligned.

    `words`: V strings (a word may repeat; lookups use its first row). `vectors`: (V, dim) float32, possibly
    a read-only memory map. `source`: where they came from. `identity`: a digest that changes when the
    source file changes (None: the contents are hashed when `digest` is first asked for).
    """

    words: list[str]
    vectors: np.ndarray
    source: str = "<memory>"
    identity: str | None = field(default=None, repr=False)

    def __post_init__(self):
        if self.vectors.ndim != 2 or self.vectors.dtype != np.float32:
            raise ValueError(
                f"{self.source}: vectors must be a (V, dim) float32 matrix, got shape "
                f"{self.vectors.shape} and dtype {self.vectors.dtype}"
            )
        if len(self.words) != self.vectors.shape[0]:
            raise ValueError(
                f"{self.source}: {len(self.words)} words but {self.vectors.shape[0]} vectors; they must be row-aligned"
            )

    def __len__(self) -> int:
        return len(self.words)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @cached_property
    def index(self) -> dict[str, int]:
        """Word -> its first row."""
        index: dict[str, int] = {}
        for row, word in enumerate(self.words):
            index.setdefault(word, row)
        return index

    @cached_property
    def digest(self) -> str:
        """A hex digest identifying these vectors, for cache keys."""
        if self.identity is not None:
            return self.identity
        hasher = hashlib.sha256()
        hasher.update(np.asarray(self.vectors.shape, dtype=np.int64).tobytes())
        hasher.update(np.ascontiguousarray(self.vectors).tobytes())
        for word in self.words:
            hasher.update(word.encode("utf-8", errors="surrogatepass") + b"\n")
        return hasher.hexdigest()


def _file_identity(path: Path, hasher) -> None:
    """Feeds a file's size and evenly spaced blocks of it to `hasher`: cheap for a 1 GB file, and any
    edit that changes the size or a sampled block changes the digest."""
    size = path.stat().st_size
    hasher.update(f"{path.name}:{size}\n".encode())
    with path.open("rb") as stream:
        for sample in range(_DIGEST_SAMPLES):
            stream.seek(max(0, (size - _DIGEST_BLOCK_BYTES) * sample // max(1, _DIGEST_SAMPLES - 1)))
            hasher.update(stream.read(_DIGEST_BLOCK_BYTES))


def _files_identity(paths: list[Path], max_words: int | None) -> str:
    hasher = hashlib.sha256(f"max_words={max_words}\n".encode())
    for path in paths:
        _file_identity(path, hasher)
    return hasher.hexdigest()


def _decode_line(path: Path, line_number: int, raw: bytes) -> str:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise WordVectorsFormatError(
            f"{path}, line {line_number}: not UTF-8 (byte {raw[error.start]:#04x} at column {error.start + 1}); "
            "binary word2vec files are not supported: convert them to text"
        ) from None


def _parse_values(path: Path, line_number: int, values: list[str]) -> np.ndarray:
    try:
        row = np.array(values, dtype=np.float32)
    except ValueError:
        for column, value in enumerate(values, start=2):
            try:
                float(value)
            except ValueError:
                raise WordVectorsFormatError(
                    f"{path}, line {line_number}, field {column}: value {value!r} is not a number"
                ) from None
        raise WordVectorsFormatError(
            f"{path}, line {line_number}: values that numpy cannot read as float32"
        ) from None
    if not np.isfinite(row).all():
        column = int(np.flatnonzero(~np.isfinite(row))[0])
        raise WordVectorsFormatError(
            f"{path}, line {line_number}, field {column + 2}: value {values[column]!r} is not finite"
        )
    return row


def _is_header(fields: list[str]) -> bool:
    """word2vec's optional first line: `<number of words> <dim>`."""
    return len(fields) == 2 and all(field.isdigit() for field in fields) and int(fields[1]) > 0


def _split_word(path: Path, line_number: int, fields: list[str], dim: int) -> tuple[str, list[str]]:
    """The word and its `dim` values. Words with spaces (glove.840B has `. . .`) are accepted when the
    extra fields are not numbers; an extra number means a value too many."""
    extra = len(fields) - 1 - dim
    if extra < 0 or (extra > 0 and _looks_numeric(fields[extra])):
        raise WordVectorsFormatError(
            f"{path}, line {line_number}: expected a word and {dim} values, found {len(fields) - 1} values "
            f"after {fields[0]!r}"
        )
    return " ".join(fields[: extra + 1]), fields[extra + 1 :]


def _looks_numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_text_vectors(path: Path, max_words: int | None) -> WordVectors:
    words: list[str] = []
    rows: list[np.ndarray] = []
    dim: int | None = None
    expected_words: int | None = None
    with path.open("rb") as stream:
        for line_number, raw in enumerate(stream, start=1):
            if max_words is not None and len(words) >= max_words:
                break
            line = _decode_line(path, line_number, raw).rstrip("\r\n")
            if line_number == 1:
                line = line.removeprefix(_BYTE_ORDER_MARK)
            # word2vec text files end each line with a space; GloVe's do not.
            fields = line.rstrip(" ").split(" ")
            if line_number == 1 and _is_header(fields):
                expected_words, dim = int(fields[0]), int(fields[1])
                continue
            if not line.strip():
                raise WordVectorsFormatError(
                    f"{path}, line {line_number}: empty line; expected a word and values"
                )
            if dim is None:
                dim = len(fields) - 1
                if dim < 1:
                    raise WordVectorsFormatError(
                        f"{path}, line {line_number}: a word with no values: {line!r}"
                    )
            word, values = _split_word(path, line_number, fields, dim)
            words.append(word)
            rows.append(_parse_values(path, line_number, values))
    if not words:
        raise WordVectorsFormatError(f"{path}: no word vectors in the file")
    if expected_words is not None and max_words is None and len(words) != expected_words:
        raise WordVectorsFormatError(
            f"{path}, line 1: the header announces {expected_words} words but the file has {len(words)}"
        )
    return WordVectors(
        words=words,
        vectors=np.stack(rows),
        source=str(path),
        identity=_files_identity([path], max_words),
    )


def _read_words_file(path: Path) -> list[str]:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line_number = data.count(b"\n", 0, error.start) + 1
        raise WordVectorsFormatError(
            f"{path}, line {line_number}: not UTF-8 (byte {data[error.start]:#04x})"
        ) from None
    # Split on "\n" only: str.splitlines would also split words at U+2028, U+0085 and friends.
    words = [line.removesuffix("\r") for line in text.removeprefix(_BYTE_ORDER_MARK).split("\n")]
    if words and words[-1] == "":
        words.pop()
    for line_number, word in enumerate(words, start=1):
        if not word:
            raise WordVectorsFormatError(f"{path}, line {line_number}: empty word")
    return words


def _read_vectors_folder(folder: Path, max_words: int | None) -> WordVectors:
    vectors_path, words_path = folder / VECTORS_FILE_NAME, folder / WORDS_FILE_NAME
    for path in (vectors_path, words_path):
        if not path.is_file():
            raise FileNotFoundError(
                f"{folder} is a folder but has no {path.name}: a word-vectors folder holds "
                f"{VECTORS_FILE_NAME} and {WORDS_FILE_NAME}"
            )
    try:
        vectors = np.load(vectors_path, mmap_mode="r", allow_pickle=False)
    except ValueError as error:
        raise WordVectorsFormatError(f"{vectors_path}: not a plain numeric .npy array ({error})") from None
    if vectors.ndim != 2 or not np.issubdtype(vectors.dtype, np.floating):
        raise WordVectorsFormatError(
            f"{vectors_path}: expected a (words, dim) float matrix, got shape {vectors.shape} dtype {vectors.dtype}"
        )
    words = _read_words_file(words_path)
    if len(words) != vectors.shape[0]:
        raise WordVectorsFormatError(
            f"{words_path} has {len(words)} words but {vectors_path} has {vectors.shape[0]} rows; "
            "they must be row-aligned"
        )
    if max_words is not None:
        words, vectors = words[:max_words], vectors[:max_words]
    # float32 stays a memory map; other float types are converted once.
    vectors = vectors if vectors.dtype == np.float32 else np.asarray(vectors, dtype=np.float32)
    finite = np.isfinite(vectors).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise WordVectorsFormatError(
            f"{vectors_path}, row {row} (line {row + 1} of {words_path.name}, word {words[row]!r}): "
            "a value is not finite"
        )
    return WordVectors(
        words=words,
        vectors=vectors,
        source=str(folder),
        identity=_files_identity([vectors_path, words_path], max_words),
    )


def load_word_vectors(path: str | os.PathLike, max_words: int | None = None) -> WordVectors:
    """Reads word vectors from a GloVe/word2vec text file (word2vec's `<count> <dim>` header optional) or a
    folder holding `vectors.npy` + `words.txt`.

    `max_words`: keep only the first (most frequent) words. Returns `WordVectors` with (V, dim) float32
    vectors. Raises `WordVectorsFormatError` naming the file and line of a malformed entry.
    """
    path = Path(path)
    if max_words is not None and (not isinstance(max_words, int) or max_words < 1):
        raise ValueError(f"max_words must be a positive integer or None, got {max_words!r}")
    if path.is_dir():
        return _read_vectors_folder(path, max_words)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such word-vectors file or folder")
    return _read_text_vectors(path, max_words)


__all__ = [
    "VECTORS_FILE_NAME",
    "WORDS_FILE_NAME",
    "WordVectors",
    "WordVectorsFormatError",
    "load_word_vectors",
]
