"""The semantic-augmentation neighbour table: each word's k most similar words, their weights and vectors.

MGCM augments every word with its k nearest words in a word-vector space (cosine similarity, the word
itself excluded), weighted by the softmax of those similarities. `build_neighbour_table` computes them
once for a kept vocabulary (every corpus word type found in the vectors plus the `keep_top_n` most
frequent words, so that new posts are augmented too); `NeighbourTable.lookup` serves them to the
processor. Neighbour vectors are stored once each and referenced by index, not copied k times per word.
"""

import hashlib
import json
import logging
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from .tweet_normalise import NUMBER_CLASS_TOKEN, URL_CLASS_TOKEN, normalise_token
from .word_vectors import WordVectors, load_word_vectors

TABLE_FILE_NAME = "neighbour_table.safetensors"
TABLE_FORMAT = "mgcm-neighbour-table"
# Version 2 tables carry a checksum; version 1 files (without one) are refused, so that a damaged file cannot
# pass as an old one.
TABLE_FORMAT_VERSION = "2"
# Metadata key of the sha256 of the tensors and the other metadata: a damaged file is detected, not trusted.
CHECKSUM_KEY = "content_sha256"

logger = logging.getLogger(__name__)

# Candidates are scanned in blocks of this many columns: see `_top_k_columns`.
_SELECTION_BLOCK = 64


class NeighbourTable:
    """Nearest neighbours of a kept vocabulary, looked up per token.

    Args:
        vocabulary: the V kept words (normalised forms when `normalise` is true), unique.
        neighbour_indices: (V, k) integer rows of `neighbour_vectors`, most similar first.
        neighbour_weights: (V, k) float32 softmax of the cosine similarities.
        neighbour_vectors: (U, dim) float32, each neighbour's vector stored once.
        neighbour_words: the U words of `neighbour_vectors`, for inspection.
        normalise: whether `lookup` passes tokens through `normalise_token` first.
        source: where the word vectors came from (provenance only).
    """

    def __init__(
        self,
        vocabulary: Sequence[str],
        neighbour_indices: np.ndarray,
        neighbour_weights: np.ndarray,
        neighbour_vectors: np.ndarray,
        neighbour_words: Sequence[str],
        normalise: bool = True,
        source: str = "",
    ):
        for name, words in (("vocabulary", vocabulary), ("neighbour_words", neighbour_words)):
            if isinstance(words, str | bytes) or not isinstance(words, Sequence | np.ndarray):
                raise ValueError(f"{name} must be a list of words, got {type(words).__name__}")
            if not all(isinstance(word, str) for word in words):
                raise ValueError(f"{name} must hold strings only")
        vocabulary = list(vocabulary)
        neighbour_words = list(neighbour_words)
        # A table with float indices or non-finite values would give the model garbage or NaN, silently.
        if not np.issubdtype(neighbour_indices.dtype, np.integer):
            raise ValueError(f"neighbour_indices must be integers, got {neighbour_indices.dtype}")
        for name, values in (
            ("neighbour_weights", neighbour_weights),
            ("neighbour_vectors", neighbour_vectors),
        ):
            if not np.issubdtype(values.dtype, np.floating) or not np.isfinite(values).all():
                raise ValueError(f"{name} must be finite floating-point numbers ({values.dtype})")
        if neighbour_indices.ndim != 2 or neighbour_weights.shape != neighbour_indices.shape:
            raise ValueError(
                f"neighbour_indices {neighbour_indices.shape} and neighbour_weights {neighbour_weights.shape} "
                "must both be (words, k)"
            )
        if neighbour_indices.shape[0] != len(vocabulary):
            raise ValueError(f"{len(vocabulary)} words but {neighbour_indices.shape[0]} rows of neighbours")
        if neighbour_vectors.ndim != 2 or neighbour_vectors.shape[0] != len(neighbour_words):
            raise ValueError(
                f"neighbour_vectors {neighbour_vectors.shape} must be (len(neighbour_words)={len(neighbour_words)}, dim)"
            )
        if neighbour_indices.size and not 0 <= neighbour_indices.min() <= neighbour_indices.max() < len(
            neighbour_words
        ):
            raise ValueError(f"neighbour_indices must lie in 0..{len(neighbour_words) - 1}")
        self._row_of = {word: row for row, word in enumerate(vocabulary)}
        if len(self._row_of) != len(vocabulary):
            raise ValueError(f"the vocabulary repeats {len(vocabulary) - len(self._row_of)} words")
        self.vocabulary = vocabulary
        self.neighbour_indices = np.ascontiguousarray(neighbour_indices, dtype=np.int32)
        self.neighbour_weights = np.ascontiguousarray(neighbour_weights, dtype=np.float32)
        self.neighbour_vectors = np.ascontiguousarray(neighbour_vectors, dtype=np.float32)
        self.neighbour_words = neighbour_words
        self.normalise = bool(normalise)
        self.source = source

    @property
    def k(self) -> int:
        """Neighbours per word."""
        return int(self.neighbour_indices.shape[1])

    @property
    def dim(self) -> int:
        """Width of the word vectors."""
        return int(self.neighbour_vectors.shape[1])

    def __len__(self) -> int:
        return len(self.vocabulary)

    def __contains__(self, token: object) -> bool:
        return isinstance(token, str) and self._key(token) in self._row_of

    def __repr__(self) -> str:
        return (
            f"NeighbourTable(words={len(self)}, k={self.k}, dim={self.dim}, "
            f"stored_vectors={len(self.neighbour_words)}, normalise={self.normalise}, source={self.source!r})"
        )

    def _key(self, token: str) -> str:
        return normalise_token(token) if self.normalise else token

    def lookup(self, tokens: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Neighbours of each token: `neighbour_vectors` (n, k, dim) float32 and `neighbour_weights` (n, k)
        float32. A token outside the vocabulary gets zero vectors and zero weights."""
        rows = np.full(len(tokens), -1, dtype=np.int64)
        for position, token in enumerate(tokens):
            if not isinstance(token, str):
                raise TypeError(f"token {position} is {token!r} ({type(token).__name__}), not a string")
            rows[position] = self._row_of.get(self._key(token), -1)
        found = rows >= 0
        vectors = np.zeros((len(tokens), self.k, self.dim), dtype=np.float32)
        weights = np.zeros((len(tokens), self.k), dtype=np.float32)
        vectors[found] = self.neighbour_vectors[self.neighbour_indices[rows[found]]]
        weights[found] = self.neighbour_weights[rows[found]]
        return vectors, weights

    def neighbours(self, token: str) -> list[tuple[str, float]]:
        """The (word, weight) neighbours of a token, most similar first; [] when it is not in the table."""
        row = self._row_of.get(self._key(token))
        if row is None:
            return []
        return [
            (self.neighbour_words[index], float(weight))
            for index, weight in zip(self.neighbour_indices[row], self.neighbour_weights[row], strict=True)
        ]

    def save_pretrained(self, save_directory: str | os.PathLike) -> None:
        """Writes `neighbour_table.safetensors` (tensors, with the vocabulary as JSON metadata) atomically."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        self._write_file(directory / TABLE_FILE_NAME)

    def _write_file(self, path: Path) -> None:
        tensors = {
            "neighbour_indices": self.neighbour_indices,
            "neighbour_weights": self.neighbour_weights,
            "neighbour_vectors": self.neighbour_vectors,
        }
        metadata = {
            "format": TABLE_FORMAT,
            "format_version": TABLE_FORMAT_VERSION,
            "normalise": json.dumps(self.normalise),
            "source": self.source,
            "vocabulary": json.dumps(self.vocabulary, ensure_ascii=False),
            "neighbour_words": json.dumps(self.neighbour_words, ensure_ascii=False),
        }
        metadata[CHECKSUM_KEY] = _content_digest(tensors, metadata)
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(descriptor)
        try:
            save_file(tensors, temporary, metadata=metadata)
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike) -> "NeighbourTable":
        """Loads a table written by `save_pretrained` (a folder, or the `.safetensors` file itself).

        Raises `FileNotFoundError` when there is no table, and `ValueError` naming the file when it is not a
        readable table or its contents do not match the checksum written with them.
        """
        path = Path(directory)
        if path.is_dir():
            path = path / TABLE_FILE_NAME
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no neighbour table here (expected {TABLE_FILE_NAME})")
        return cls._read_file(path)

    @classmethod
    def _read_file(cls, path: Path) -> "NeighbourTable":
        try:
            with safe_open(str(path), framework="np") as stream:
                metadata = stream.metadata() or {}
                tensors = {name: stream.get_tensor(name) for name in stream.keys()}
        except (SafetensorError, OSError) as error:
            raise ValueError(f"{path}: not a readable safetensors file ({error})") from None
        if metadata.get("format") != TABLE_FORMAT or metadata.get("format_version") != TABLE_FORMAT_VERSION:
            raise ValueError(
                f"{path}: not an {TABLE_FORMAT} file of version {TABLE_FORMAT_VERSION} "
                f"(format={metadata.get('format')!r}, version={metadata.get('format_version')!r})"
            )
        missing = {"neighbour_indices", "neighbour_weights", "neighbour_vectors"} - set(tensors)
        if missing:
            raise ValueError(f"{path}: missing tensors {sorted(missing)}")
        if metadata.get(CHECKSUM_KEY) != _content_digest(tensors, metadata):
            raise ValueError(f"{path}: contents do not match their {CHECKSUM_KEY} (damaged or altered file)")
        try:
            vocabulary = json.loads(metadata["vocabulary"])
            neighbour_words = json.loads(metadata["neighbour_words"])
            normalise = json.loads(metadata["normalise"])
        except (KeyError, json.JSONDecodeError) as error:
            raise ValueError(f"{path}: broken metadata ({error!r})") from None
        if not isinstance(normalise, bool):
            raise ValueError(
                f"{path}: metadata normalise must be true or false, got {metadata['normalise']!r}"
            )
        try:
            return cls(
                vocabulary,
                tensors["neighbour_indices"],
                tensors["neighbour_weights"],
                tensors["neighbour_vectors"],
                neighbour_words,
                normalise=normalise,
                source=metadata.get("source", ""),
            )
        except ValueError as error:
            raise ValueError(f"{path}: {error}") from None

    @classmethod
    def from_embeddings(
        cls, words: Sequence[str], vectors: np.ndarray, k: int = 4, normalise: bool = True
    ) -> "NeighbourTable":
        """A table over every word of a small in-memory embedding (V words, (V, dim) vectors)."""
        word_vectors = WordVectors(list(words), np.asarray(vectors, dtype=np.float32))
        return build_neighbour_table(
            words, word_vectors, k=k, normalise=normalise, keep_top_n=len(word_vectors)
        )


def _content_digest(tensors: dict[str, np.ndarray], metadata: dict[str, str]) -> str:
    """sha256 over every tensor (name, dtype, shape, bytes) and every metadata entry but the checksum."""
    hasher = hashlib.sha256()
    for name in sorted(tensors):
        array = np.ascontiguousarray(tensors[name])
        hasher.update(json.dumps([name, array.dtype.str, list(array.shape)]).encode())
        hasher.update(array.tobytes())
    described = {key: value for key, value in metadata.items() if key != CHECKSUM_KEY}
    hasher.update(json.dumps(described, sort_keys=True).encode())
    return hasher.hexdigest()


@contextmanager
def _all_cpu_threads():
    """Runs torch on every core this process may use, then restores the caller's setting."""
    previous = torch.get_num_threads()
    available = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(max(1, available or 1))
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _top_k_columns(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest scores of each row and their columns, largest first: (q, k) values, (q, k) columns.

    `scores` (q, n), n a multiple of `_SELECTION_BLOCK`. Instead of a top-k over all n columns, it takes
    the k blocks with the largest block maxima and a top-k over those k blocks only: exact, because each
    of the k best scores lies in a block whose maximum is at least that score, and at most k-1 blocks can
    have a larger maximum. A max-reduction is several times cheaper than `torch.topk` over n columns.
    """
    rows, columns = scores.shape
    blocks = columns // _SELECTION_BLOCK
    if blocks <= 2 * k:
        return torch.topk(scores, k, dim=1)
    block_maxima = scores.view(rows, blocks, _SELECTION_BLOCK).amax(dim=2)
    best_blocks = torch.topk(block_maxima, k, dim=1, sorted=False).indices
    offsets = torch.arange(_SELECTION_BLOCK, device=scores.device)
    candidate_columns = (best_blocks.unsqueeze(2) * _SELECTION_BLOCK + offsets).reshape(rows, -1)
    values, positions = torch.topk(torch.gather(scores, 1, candidate_columns), k, dim=1)
    return values, torch.gather(candidate_columns, 1, positions)


def _nearest_neighbours(
    vectors: np.ndarray, query_rows: np.ndarray, k: int, batch_size: int, device: torch.device
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine top-k of each query row among all rows of `vectors` (N, dim), itself excluded.

    Returns neighbour rows (Q, k) int64 and similarities (Q, k) float32, most similar first.
    """
    num_vectors = vectors.shape[0]
    padded = math.ceil(num_vectors / _SELECTION_BLOCK) * _SELECTION_BLOCK
    unit_vectors = torch.zeros(padded, vectors.shape[1], dtype=torch.float32, device=device)
    unit_vectors[:num_vectors] = torch.from_numpy(np.array(vectors, dtype=np.float32))
    # A zero vector stays zero: it is nobody's neighbour by more than a cosine of 0.
    unit_vectors /= unit_vectors.norm(dim=1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
    queries = torch.from_numpy(query_rows.astype(np.int64)).to(device)
    neighbour_rows = torch.empty(len(queries), k, dtype=torch.int64, device=device)
    similarities = torch.empty(len(queries), k, dtype=torch.float32, device=device)
    # One score buffer reused for every batch: allocating (batch, N) anew each time costs page faults.
    scores = torch.empty(min(batch_size, len(queries)), padded, dtype=torch.float32, device=device)
    for start in range(0, len(queries), batch_size):
        batch_rows = queries[start : start + batch_size]
        batch_scores = scores[: len(batch_rows)]
        torch.mm(unit_vectors[batch_rows], unit_vectors.T, out=batch_scores)
        batch_scores[:, num_vectors:] = -torch.inf
        batch_scores[torch.arange(len(batch_rows), device=device), batch_rows] = -torch.inf
        values, columns = _top_k_columns(batch_scores, k)
        similarities[start : start + len(batch_rows)] = values
        neighbour_rows[start : start + len(batch_rows)] = columns
    return neighbour_rows.cpu().numpy(), similarities.cpu().numpy()


def _kept_rows(
    words: Iterable[str], word_vectors: WordVectors, normalise: bool, keep_top_n: int
) -> np.ndarray:
    """Rows of the vectors to keep, in file order: the corpus words found in the vectors, the class
    tokens, and the first `keep_top_n` words that a normalised lookup can reach."""
    index = word_vectors.index
    keys = set()
    for position, word in enumerate(words):
        if not isinstance(word, str):
            raise TypeError(f"word {position} is {word!r} ({type(word).__name__}), not a string")
        keys.add(normalise_token(word) if normalise else word)
    if normalise:
        keys |= {URL_CLASS_TOKEN, NUMBER_CLASS_TOKEN}
    rows = {index[key] for key in keys if key in index}
    for row, word in enumerate(word_vectors.words[:keep_top_n]):
        # Words that normalisation never produces ("Paris" in a cased file, "1990") would never be found.
        if index[word] == row and (not normalise or normalise_token(word) == word):
            rows.add(row)
    kept = np.array(sorted(rows), dtype=np.int64)
    if len(kept):
        # A zero vector has no direction, hence no nearest words: such a word counts as out of vocabulary.
        kept = kept[np.linalg.norm(np.asarray(word_vectors.vectors[kept]), axis=1) > 0]
    return kept


def _cache_key(word_vectors: WordVectors, k: int, normalise: bool, vocabulary: list[str]) -> str:
    settings = {
        "format": TABLE_FORMAT,
        "format_version": TABLE_FORMAT_VERSION,
        "vectors": word_vectors.digest,
        "k": k,
        "normalise": normalise,
    }
    hasher = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    hasher.update(json.dumps(vocabulary, ensure_ascii=False).encode("utf-8", errors="surrogatepass"))
    return hasher.hexdigest()


def build_neighbour_table(
    words: Iterable[str],
    word_vectors: WordVectors | str | os.PathLike,
    k: int = 4,
    normalise: bool = True,
    keep_top_n: int = 100_000,
    cache_dir: str | os.PathLike | None = None,
    *,
    batch_size: int = 256,
    device: str | torch.device | None = None,
) -> NeighbourTable:
    """Builds the neighbour table of a corpus against a word-vector space.

    Args:
        words: the corpus tokens or word types (normalised here when `normalise` is true).
        word_vectors: loaded `WordVectors`, or a path for `load_word_vectors`.
        k: neighbours per word, the word itself excluded.
        normalise: look words up as `normalise_token` gives them (for lower-cased vectors such as GloVe).
        keep_top_n: also keep the first `keep_top_n` words of the vectors (frequency ordered), so that
            words of new posts outside the corpus are augmented at inference.
        cache_dir: if given, the table is stored there under a hash of (vectors identity, k, normalise,
            kept vocabulary) and reused by the next call with the same inputs.
        batch_size: query words per matrix product; memory is about batch_size * len(vectors) * 4 bytes.
        device: where to compute (default: torch's default device).
    """
    if not isinstance(word_vectors, WordVectors):
        word_vectors = load_word_vectors(word_vectors)
    if not isinstance(k, int) or not 1 <= k < len(word_vectors):
        raise ValueError(
            f"k must be an integer in 1..{len(word_vectors) - 1} (vectors minus the word), got {k!r}"
        )
    if not isinstance(keep_top_n, int) or keep_top_n < 0:
        raise ValueError(f"keep_top_n must be an integer >= 0, got {keep_top_n!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    kept = _kept_rows(words, word_vectors, normalise, keep_top_n)
    vocabulary = [word_vectors.words[row] for row in kept]

    cache_path = None
    if cache_dir is not None:
        key = _cache_key(word_vectors, k, normalise, vocabulary)
        cache_path = Path(cache_dir) / f"neighbour_table-{key[:40]}.safetensors"
        if cache_path.is_file():
            try:
                return NeighbourTable._read_file(cache_path)
            except ValueError as error:
                logger.warning("%s: rebuilding the cached neighbour table", error)

    device = torch.device(device) if device is not None else torch.get_default_device()
    with _all_cpu_threads():
        neighbour_rows, similarities = _nearest_neighbours(word_vectors.vectors, kept, k, batch_size, device)
    weights = torch.softmax(torch.from_numpy(similarities), dim=1).numpy()
    stored_rows, neighbour_indices = np.unique(neighbour_rows, return_inverse=True)
    table = NeighbourTable(
        vocabulary,
        neighbour_indices.reshape(neighbour_rows.shape),
        weights,
        np.asarray(word_vectors.vectors[stored_rows]),
        [word_vectors.words[row] for row in stored_rows],
        normalise=normalise,
        source=word_vectors.source,
    )
    if cache_path is not None:
        cache_path.parent.mkdir(parents=True, exist_ok=True)
        table._write_file(cache_path)
    return table


__all__ = ["TABLE_FILE_NAME", "NeighbourTable", "build_neighbour_table"]
