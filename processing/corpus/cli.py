"""The corpus command line, `python -m processing.corpus stats DIR`: a corpus's statistics per split."""

import argparse
import sys
from pathlib import Path

from processing.cli_options import name_value_pairs
from processing.corpus.stats import corpus_stats, format_corpus_stats
from processing.corpus.tweet_corpus import CorpusFormatError, load_tweet_corpus


def main(argv: list[str] | None = None) -> int:
    """`stats DIR`: print tweets, tokens, entities and image, caption and object coverage per split."""
    parser = argparse.ArgumentParser(
        prog="python -m processing.corpus", description="tweet corpus statistics"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    stats = commands.add_parser("stats", help="print corpus statistics per split")
    stats.add_argument("data_dir", type=Path, help="folder with train.txt, valid.txt and/or test.txt")
    stats.add_argument("--captions-file", type=Path, help="captions, '<IMGID>.jpg :<caption>' per line")
    stats.add_argument("--objects-file", type=Path, help='JSON {"<IMGID>": [{"label": ..., "score": ...}]}')
    stats.add_argument(
        "--text-source",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="a further text source in the captions format, e.g. knowledge=twitter2015_pgim.txt",
    )
    stats.add_argument("--image-dir", type=Path, help="folder with <IMGID>.jpg images")
    stats.add_argument("--repair-bio", action="store_true", help="turn I- tags that open an entity into B-")
    args = parser.parse_args(argv)
    try:
        text_source_files = name_value_pairs(args.text_source, "--text-source")
    except ValueError as error:
        parser.error(str(error))
    try:
        corpus = load_tweet_corpus(
            args.data_dir,
            image_dir=args.image_dir,
            captions_file=args.captions_file,
            objects_file=args.objects_file,
            repair_bio=args.repair_bio,
            text_source_files=text_source_files,
        )
    except (CorpusFormatError, FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(format_corpus_stats(corpus_stats(corpus)))
    return 0


__all__ = ["main"]
