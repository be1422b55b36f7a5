"""The semantic-augmentation neighbour table: each word's k most similar words, their weights and vectors.

MGCM augments every word with its k nearest words in a word-vector space (cosine similarity, the word
itself excluded), weighted by the softmax of those similarities. `processing.build_neighbour_table` computes them
once for a kept vocabulary (every corpus word type found in the vectors plus the `keep_top_n` most
frequent words, so that new posts are augmented too); `NeighbourTable.lookup` serves them to the
processor. Neighbour vectors are stored once each and referenced by index, not copied k times per word.
"""

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from .atomic_files import atomic_write_path
from .tweet_normalise import normalise_token

TABLE_FILE_NAME = "neighbour_table.safetensors"
TABLE_FORMAT = "mgcm-neighbour-table"
# Version 2 tables carry a checksum; version 1 files (without one) are refused, so that a damaged file cannot
# pass as an old one.
TABLE_FORMAT_VERSION = "2"
# Metadata key of the sha256 of the tensors and the other metadata: a damaged file is detected, not trusted.
CHECKSUM_KEY = "content_sha256"


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
        with atomic_write_path(path) as temporary:
            save_file(tensors, temporary, metadata=metadata)

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


__all__ = ["TABLE_FILE_NAME", "NeighbourTable"]
