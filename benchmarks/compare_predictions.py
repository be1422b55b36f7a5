"""Where two trained runs differ, entity by entity, on one split that is not test.

    python benchmarks/compare_predictions.py RUN_A RUN_B [--split valid] [--source knowledge] [--output F]

Each run folder's `predictions/<split>.tsv` (written by training since 2026-12-02) is read; a run without one
is tagged through the `multimodal-ner` pipeline from its saved model, with the corpus and text-source files
its `results.json` names, and the file is written into the folder (the pipeline gives the run's own scores:
issue 19). Prints each run's lenient seqeval F1 by type; the gold entities found by both, by one only, by
neither, per type; for those one run finds alone, what the other predicted there (the same span with another
type, an overlapping span, nothing); and, with `--source`, how many gold entities that text source names word
for word, with each run's recall on those and on the rest. Only train or valid: an analysis that guides the
next change must not look at test.
"""

import argparse
import collections
import json
import sys
from pathlib import Path

from seqeval.metrics.sequence_labeling import get_entities
from transformers import pipeline

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling_mgcm import MGCMForTokenClassification  # noqa: E402
from modeling_mgcm.processing_mgcm import MGCMProcessor  # noqa: E402
from processing import LABEL_NAMES, load_tweet_corpus  # noqa: E402
from processing.evaluation.metrics import ner_metrics  # noqa: E402
from processing.evaluation.prediction_files import read_predictions, write_predictions  # noqa: E402

ENTITY_TYPES = ("PER", "LOC", "ORG", "MISC")


def run_corpus(run: Path, split: str):
    """The run's split, with every text source its results.json names, read from the files it names."""
    args = json.loads((run / "results.json").read_text(encoding="utf-8"))["run"]["args"]
    sources = dict(entry.split("=", 1) for entry in args.get("text_source") or [])
    return load_tweet_corpus(
        args["dataset_dir"],
        image_dir=args.get("image_dir"),
        captions_file=args.get("captions_file"),
        text_source_files=sources,
    )[split]


def pipeline_word_outputs(run: Path, rows, **call_options) -> list[dict]:
    """The `multimodal-ner` pipeline's per-word outputs (`aggregation="words"`) of every post of `rows`, by the
    run's saved model (float32, this machine's device), with the text sources and images it reads."""
    processor = MGCMProcessor.from_pretrained(run)
    model = MGCMForTokenClassification.from_pretrained(run).eval()
    tagger = pipeline("multimodal-ner", model=model, processor=processor)
    names = [name for name in processor.text_sources if name in rows.column_names]
    posts = []
    for row in rows:
        post = {"text": row["tokens"], **{name: row[name] for name in names}}
        if model.config.use_image and row.get("image"):
            post["image"] = row["image"]
        posts.append(post)
    return tagger(posts, batch_size=32, aggregation="words", on_bad_image="mask", **call_options)


def tag_through_pipeline(run: Path, rows) -> list[list[int]]:
    """Tag ids of every post of `rows` by the run's saved model."""
    outputs = pipeline_word_outputs(run, rows)
    return [[LABEL_NAMES.index(word["tag"]) for word in output["words"]] for output in outputs]


def run_predictions(run: Path, split: str) -> dict[str, tuple[list, list, list]]:
    """The run's predictions file of `split`, written first by the pipeline when the run has none."""
    path = run / "predictions" / f"{split}.tsv"
    if not path.is_file():
        print(f"{run.name}: no {path.relative_to(run)}; tagging {split} through the pipeline", flush=True)
        rows = run_corpus(run, split)
        write_predictions(path, rows, tag_through_pipeline(run, rows), dict(enumerate(LABEL_NAMES)))
    return read_predictions(path)


def entity_set(tag_lists: list[list[str]]) -> set[tuple[int, str, int, int]]:
    """(post, type, first word, last word) of every entity."""
    return {
        (post, kind, first, last)
        for post, tags in enumerate(tag_lists)
        for kind, first, last in get_entities(tags)
    }


def what_the_other_predicted(entity, other: set) -> str:
    post, _, first, last = entity
    here = [found for found in other if found[0] == post and not (found[3] < first or found[2] > last)]
    if any(found[2:] == entity[2:] for found in here):
        return "same span, other type"
    return "overlapping span" if here else "nothing"


def compare(names: list[str], gold, predicted: list, words, source_texts=None) -> dict:
    """The comparison's numbers (see the module docstring)."""
    report = {"f1": {}, "found_by": {}, "where_one_alone": {}}
    for name, tags in zip(names, predicted, strict=True):
        metrics = ner_metrics(gold, tags)
        report["f1"][name] = {"overall": 100 * metrics["overall_f1"]} | {
            kind: 100 * metrics[kind]["f1"] for kind in ENTITY_TYPES if kind in metrics
        }
    gold_entities = entity_set(gold)
    found = [entity_set(tags) for tags in predicted]
    for kind in (*ENTITY_TYPES, "all"):
        of_kind = [entity for entity in gold_entities if kind in ("all", entity[1])]
        counts = collections.Counter(
            "both"
            if entity in found[0] and entity in found[1]
            else f"{names[0]} only"
            if entity in found[0]
            else f"{names[1]} only"
            if entity in found[1]
            else "neither"
            for entity in of_kind
        )
        report["found_by"][kind] = dict(counts)
    for alone, other in ((0, 1), (1, 0)):
        only = [entity for entity in gold_entities if entity in found[alone] and entity not in found[other]]
        report["where_one_alone"][f"{names[alone]} only"] = dict(
            collections.Counter(what_the_other_predicted(entity, found[other]) for entity in only)
        )
    if source_texts is not None:
        named = {
            (post, kind, first, last)
            for post, kind, first, last in gold_entities
            if " ".join(words[post][first : last + 1]).lower().lstrip("@#") in source_texts[post].lower()
        }
        report["named_by_source"] = {"entities": len(gold_entities), "named": len(named)}
        for label, subset in (("recall_named", named), ("recall_not_named", gold_entities - named)):
            report["named_by_source"][label] = {
                name: 100 * len(subset & entities) / len(subset) if subset else None
                for name, entities in zip(names, found, strict=True)
            }
    return report


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs=2, type=Path, help="two training output folders")
    parser.add_argument("--split", default="valid", choices=["train", "valid"])
    parser.add_argument(
        "--source", help="a text source of the corpus (e.g. knowledge) to look entities up in"
    )
    parser.add_argument("--output", type=Path, help="also write the numbers as JSON")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    rows = run_corpus(args.runs[0], args.split)
    names = [run.name for run in args.runs]
    by_run = [run_predictions(run, args.split) for run in args.runs]
    if list(by_run[0]) != list(by_run[1]) or list(by_run[0]) != rows["id"]:
        raise SystemExit(f"the runs' {args.split} predictions are not of the same posts as the corpus's")
    words = [posts[0] for posts in by_run[0].values()]
    gold = [posts[1] for posts in by_run[0].values()]
    predicted = [[posts[2] for posts in run.values()] for run in by_run]
    if args.source and args.source not in rows.column_names:
        raise SystemExit(f"--source {args.source}: the runs' corpus has no such text source")
    report = compare(names, gold, predicted, words, rows[args.source] if args.source else None)
    report |= {"split": args.split, "seqeval_mode": "lenient", "runs": [str(run) for run in args.runs]}
    print(json.dumps(report, indent=1))
    if args.output:
        args.output.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
