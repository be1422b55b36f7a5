"""The corpus command line, `python -m processing.corpus`: `stats DIR` prints a corpus's statistics per split;
`export DIR OUT` writes it as a Hub dataset folder that `datasets.load_dataset(OUT)` reads."""

import argparse
import sys
from pathlib import Path

from processing.cli_options import name_value_pairs
from processing.corpus.hub_dataset import KNOWN_CORPUS_SOURCES, CorpusSource, export_corpus_dataset
from processing.corpus.stats import corpus_stats, format_corpus_stats
from processing.corpus.tweet_corpus import CorpusFormatError, load_tweet_corpus


def _add_corpus_options(parser: argparse.ArgumentParser) -> None:
    """The options of `load_tweet_corpus`, shared by every subcommand."""
    parser.add_argument("data_dir", type=Path, help="folder with train.txt, valid.txt and/or test.txt")
    parser.add_argument("--captions-file", type=Path, help="captions, '<IMGID>.jpg :<caption>' per line")
    parser.add_argument("--objects-file", type=Path, help='JSON {"<IMGID>": [{"label": ..., "score": ...}]}')
    parser.add_argument(
        "--text-source",
        action="append",
        default=[],
        metavar="NAME=FILE",
        help="a further text source in the captions format, e.g. knowledge=twitter2015_pgim.txt",
    )
    parser.add_argument("--image-dir", type=Path, help="folder with <IMGID>.jpg images")
    parser.add_argument("--repair-bio", action="store_true", help="turn I- tags that open an entity into B-")


def _export_source(args: argparse.Namespace, parser: argparse.ArgumentParser) -> str | CorpusSource | None:
    """`--source`, or a `CorpusSource` from `--pretty-name`, `--description` and `--terms`, or None (inferred)."""
    custom = [args.description, args.terms]
    if args.source is not None and any(custom):
        parser.error("give --source, or --description and --terms for another corpus, not both")
    if any(custom):
        if not all(custom) or not args.pretty_name:
            parser.error("a corpus other than the known ones needs --pretty-name, --description and --terms")
        return CorpusSource(pretty_name=args.pretty_name, description=args.description, terms=args.terms)
    return args.source


def main(argv: list[str] | None = None) -> int:
    """`stats DIR`: tweets, tokens, entities and coverage per split; `export DIR OUT`: a Hub dataset folder."""
    parser = argparse.ArgumentParser(
        prog="python -m processing.corpus", description="tweet corpus statistics and export"
    )
    commands = parser.add_subparsers(dest="command", required=True)
    _add_corpus_options(commands.add_parser("stats", help="print corpus statistics per split"))
    export = commands.add_parser(
        "export", help="write the corpus as a Hub dataset folder (Parquet files and a dataset card)"
    )
    _add_corpus_options(export)
    export.add_argument("output_dir", type=Path, help="the dataset folder to write")
    export.add_argument(
        "--source",
        choices=sorted(KNOWN_CORPUS_SOURCES),
        help="the corpus, for the card's source, terms and citation (default: recognised by its split sizes)",
    )
    export.add_argument("--pretty-name", help="the dataset's name on its card")
    export.add_argument("--description", help="another corpus: where its tweets and annotations come from")
    export.add_argument("--terms", help="another corpus: who may use it and how")
    export.add_argument(
        "--column-note",
        action="append",
        default=[],
        metavar="COLUMN=TEXT",
        help="the card's description of a column, e.g. knowledge='LLM knowledge from PGIM (Li et al., 2023)'",
    )
    export.add_argument("--overwrite", action="store_true", help="replace OUT if it is not empty")
    args = parser.parse_args(argv)
    try:
        text_source_files = name_value_pairs(args.text_source, "--text-source")
        column_notes = name_value_pairs(args.column_note, "--column-note") if args.command == "export" else {}
    except ValueError as error:
        parser.error(str(error))
    source = _export_source(args, export) if args.command == "export" else None
    try:
        corpus = load_tweet_corpus(
            args.data_dir,
            image_dir=args.image_dir,
            captions_file=args.captions_file,
            objects_file=args.objects_file,
            repair_bio=args.repair_bio,
            text_source_files=text_source_files,
        )
        if args.command == "stats":
            print(format_corpus_stats(corpus_stats(corpus)))
            return 0
        written = export_corpus_dataset(
            corpus,
            args.output_dir,
            source=source,
            pretty_name=args.pretty_name,
            column_notes=column_notes,
            overwrite=args.overwrite,
        )
    except (CorpusFormatError, FileNotFoundError, FileExistsError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    for bad in written.bad_images:
        print(f"left out: {bad.split} {bad.id}: {bad.reason}", file=sys.stderr)
    print(f"wrote {written.folder}\n{written.summary()}")
    return 0


__all__ = ["main"]
