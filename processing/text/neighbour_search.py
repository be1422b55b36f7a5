"""Building the semantic-augmentation neighbour table from word vectors: an exact cosine top-k per kept word.

The kept vocabulary is every corpus word type found in the vectors plus the `keep_top_n` most frequent
words, so that new posts are augmented too. The result is a `modeling_mgcm.NeighbourTable`, which the
processor ships and looks words up in; building needs the full word vectors, which never ship.
"""

import hashlib
import json
import logging
import math
import os
from collections.abc import Iterable, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from modeling_mgcm.neighbour_table import TABLE_FORMAT, TABLE_FORMAT_VERSION, NeighbourTable
from modeling_mgcm.tweet_normalise import NUMBER_CLASS_TOKEN, URL_CLASS_TOKEN, normalise_token
from processing.text.word_vectors import WordVectors, load_word_vectors

logger = logging.getLogger(__name__)

# Candidates are scanned in blocks of this many columns: see `_top_k_columns`.
_SELECTION_BLOCK = 64


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


def neighbour_table_from_embeddings(
    words: Sequence[str], vectors: np.ndarray, k: int = 4, normalise: bool = True
) -> NeighbourTable:
    """A table over every word of a small in-memory embedding (V words, (V, dim) vectors)."""
    word_vectors = WordVectors(list(words), np.asarray(vectors, dtype=np.float32))
    return build_neighbour_table(words, word_vectors, k=k, normalise=normalise, keep_top_n=len(word_vectors))


__all__ = ["build_neighbour_table", "neighbour_table_from_embeddings"]
