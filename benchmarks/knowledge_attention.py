"""Where a trained model's words look in a text source, for the gold entities the source names, on a split that
is not test.

    python benchmarks/knowledge_attention.py RUN [--split valid] [--source knowledge] [--after 4] [--output F]

Tags the split through the `multimodal-ner` pipeline (`aggregation="words"`, `output_attentions=True`: each
word's attention in the source's block, averaged over heads, summed over each source word's pieces). For every
gold entity whose words the source states word for word (case-insensitive, split as the tokenizer splits them),
its words' mean attention on those mentions and on the `--after` words after each mention (where PGIM's knowledge
gives the type: "George Zimmerman (person)"), beside what a uniform attention would put there; apart for
the entities the run tags right and wrong, and for the words outside entities that the source also states (the
same look-up, a baseline). Only train or valid: an analysis that guides the next change must not look at test.
"""

import argparse
import json
import statistics
import sys
from pathlib import Path

from compare_predictions import entity_set, pipeline_word_outputs, run_corpus
from seqeval.metrics.sequence_labeling import get_entities

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from modeling_mgcm import MGCMConfig  # noqa: E402
from modeling_mgcm.processing_mgcm import MGCMProcessor  # noqa: E402
from processing import LABEL_NAMES  # noqa: E402


def occurrences(phrase: list[str], words: list[str]) -> list[int]:
    """Start index of every occurrence of `phrase` in `words` (both lower-cased already)."""
    width = len(phrase)
    return [start for start in range(len(words) - width + 1) if words[start : start + width] == phrase]


def mention_shares(
    phrase: list[str], source_words: list[str], attention: list[list[float]], after: int
) -> dict[str, float] | None:
    """The mean over `attention`'s rows (one per tweet word of the entity, over `source_words`) of its weight on
    every mention of `phrase` and on the `after` words after each; and the shares of the source's words those
    two sets are (what a uniform attention would put on them). None when the source does not state `phrase`."""
    starts = occurrences(phrase, source_words)
    if not starts:
        return None
    on_mention = {start + offset for start in starts for offset in range(len(phrase))}
    following = {
        index
        for start in starts
        for index in range(start + len(phrase), min(start + len(phrase) + after, len(source_words)))
    } - on_mention
    return {
        "on_mention": statistics.fmean(sum(row[i] for i in on_mention) for row in attention),
        "after_mention": statistics.fmean(sum(row[i] for i in following) for row in attention),
        "uniform_on_mention": len(on_mention) / len(source_words),
        "uniform_after_mention": len(following) / len(source_words),
    }


def mean_shares(measured: list[dict[str, float]]) -> dict[str, float | int]:
    summary: dict[str, float | int] = {"count": len(measured)}
    for key in ("on_mention", "after_mention", "uniform_on_mention", "uniform_after_mention"):
        summary[key] = statistics.fmean(m[key] for m in measured) if measured else float("nan")
    return summary


def attention_report(
    outputs: list[dict], gold_tags: list[list[str]], source: str, split_words, after: int
) -> dict:
    """The numbers of the module docstring from the pipeline's per-post `outputs` and the gold tags.
    `split_words(text)` splits a phrase as the tokenizer's pre-tokenizer does."""
    predicted = entity_set([[word["tag"] for word in output["words"]] for output in outputs])
    groups: dict[str, list[dict[str, float]]] = {
        "tagged right": [],
        "tagged wrong": [],
        "words outside entities": [],
    }
    for post, (output, tags) in enumerate(zip(outputs, gold_tags, strict=True)):
        attended = output.get("attended", {}).get(source)
        if attended is None:
            continue
        source_words = [word.lower() for word in attended["words"]]
        words = output["words"]
        spans = get_entities(tags)
        inside = {index for _, first, last in spans for index in range(first, last + 1)}
        candidates = [
            ("tagged right" if (post, kind, first, last) in predicted else "tagged wrong", first, last)
            for kind, first, last in spans
        ] + [("words outside entities", index, index) for index in range(len(words)) if index not in inside]
        for group, first, last in candidates:
            text = " ".join(word["word"] for word in words[first : last + 1]).lstrip("@#")
            phrase = [piece.lower() for piece in split_words(text)]
            rows = [word["attention"][source] for word in words[first : last + 1]]
            shares = mention_shares(phrase, source_words, rows, after) if phrase else None
            if shares is not None:
                groups[group].append(shares)
    return {group: mean_shares(measured) for group, measured in groups.items()}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", type=Path, help="a training output folder (its saved model and results.json)")
    parser.add_argument("--split", default="valid", choices=["train", "valid"])
    parser.add_argument("--source", default="knowledge", help="the text source whose block is read")
    parser.add_argument("--after", type=int, default=4, help="words after a mention counted as its context")
    parser.add_argument("--output", type=Path, help="also write the numbers as JSON")
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    text_sources = MGCMConfig.from_pretrained(args.run).text_sources
    if args.source not in text_sources:
        raise SystemExit(f"{args.run}: the model reads no {args.source!r} granularity ({text_sources})")
    rows = run_corpus(args.run, args.split)
    outputs = pipeline_word_outputs(args.run, rows, output_attentions=True)
    gold = [[LABEL_NAMES[tag] for tag in row["ner_tags"]] for row in rows]
    pre_tokenizer = MGCMProcessor.from_pretrained(args.run).tokenizer.backend_tokenizer.pre_tokenizer
    report = attention_report(
        outputs,
        gold,
        args.source,
        lambda text: [word for word, _ in pre_tokenizer.pre_tokenize_str(text)],
        args.after,
    )
    report |= {"run": str(args.run), "split": args.split, "source": args.source, "after": args.after}
    print(json.dumps(report, indent=1))
    if args.output:
        args.output.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
