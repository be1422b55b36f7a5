"""Benchmark: build the semantic-augmentation neighbour table for every word type of Twitter-2015 and
Twitter-2017 against GloVe 6B 50d (400k words), and report wall time, coverage and size on disk.

    python benchmarks/neighbour_table.py [--data-dir ../shared/data] [--vectors DIR] [--keep-top-n 100000]

The vectors default to `$MGCM_OFFLINE_MODELS/glove-6b-50d` (else `~/.cache/mgcm-offline-models/...`),
the folder that `../shared/tools/offline-models` writes. Nothing is cached: every run builds from scratch.
"""

import argparse
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

import torch

from modeling_mgcm.neighbour_table import TABLE_FILE_NAME
from modeling_mgcm.tweet_normalise import normalise_token
from processing.text.neighbour_search import build_neighbour_table
from processing.text.word_vectors import load_word_vectors

PROJECT_ROOT = Path(__file__).resolve().parents[1]
CORPORA = ("twitter2015", "twitter2017")


def default_vectors_folder() -> Path:
    models = os.environ.get("MGCM_OFFLINE_MODELS", str(Path.home() / ".cache" / "mgcm-offline-models"))
    return Path(models) / "glove-6b-50d"


def read_corpus_tokens(corpus_folder: Path) -> Counter:
    """Token counts of every split file of a CoNLL tweet corpus (first tab field of each token line)."""
    counts: Counter = Counter()
    split_files = sorted(corpus_folder.glob("*.txt"))
    if not split_files:
        raise FileNotFoundError(f"{corpus_folder}: no split files (*.txt)")
    for split_file in split_files:
        with split_file.open(encoding="utf-8") as lines:
            for line in lines:
                line = line.rstrip("\n")
                if line and not line.startswith("IMGID:"):
                    counts[line.split("\t", 1)[0]] += 1
    return counts


def folder_size(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", type=Path, default=PROJECT_ROOT / ".." / "shared" / "data")
    parser.add_argument("--vectors", type=Path, default=default_vectors_folder())
    parser.add_argument("--k", type=int, default=4)
    parser.add_argument("--keep-top-n", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()

    token_counts: Counter = Counter()
    for corpus in CORPORA:
        token_counts.update(read_corpus_tokens(args.data_dir / corpus))
    print(
        f"corpus: {sum(token_counts.values())} tokens, {len(token_counts)} word types ({', '.join(CORPORA)})"
    )
    print(f"cpu threads available: {len(os.sched_getaffinity(0))}, load average: {os.getloadavg()}")

    start = time.perf_counter()
    word_vectors = load_word_vectors(args.vectors)
    loaded = time.perf_counter()
    print(
        f"vectors: {len(word_vectors)} x {word_vectors.dim} from {word_vectors.source} ({loaded - start:.2f} s)"
    )

    table = build_neighbour_table(
        token_counts, word_vectors, k=args.k, keep_top_n=args.keep_top_n, batch_size=args.batch_size
    )
    built = time.perf_counter()
    corpus_keys = {normalise_token(word) for word in token_counts}
    found_types = [word for word in token_counts if word in table]
    found_tokens = sum(token_counts[word] for word in found_types)
    print(
        f"table: {len(table)} words (keep_top_n={args.keep_top_n}, of which {len(corpus_keys & set(table.vocabulary))} "
        f"from the corpus), k={table.k}, {len(table.neighbour_words)} distinct neighbour vectors"
    )
    print(
        f"build time (threads={torch.get_num_threads()}): {built - loaded:.2f} s; with loading {built - start:.2f} s"
    )
    print(
        f"coverage: {len(found_types) / len(token_counts):.1%} of word types ({len(found_types)}/{len(token_counts)}), "
        f"{found_tokens / sum(token_counts.values()):.1%} of tokens; "
        f"{len(corpus_keys)} normalised types"
    )
    with tempfile.TemporaryDirectory() as folder:
        table.save_pretrained(folder)
        size = folder_size(Path(folder))
        print(f"size on disk: {size / 2**20:.1f} MiB ({TABLE_FILE_NAME}, {size} bytes)")
    for word in ("paris", "#Obama", "@nytimes", "http://t.co/abc", "2017", "Lakers"):
        print(f"  {word!r}: {table.neighbours(word)}")


if __name__ == "__main__":
    main()
