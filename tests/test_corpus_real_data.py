"""`load_tweet_corpus`, `corpus_stats` and `ner_metrics` on the real corpora in ../shared/data.

The expected counts are those of ../shared/data/README.md and of the issue; token counts were measured
once (lines with a tab per file) and are asserted so that no token is ever lost or added.
"""

import subprocess
import sys
from pathlib import Path

import pytest
from datasets import Image

from processing.corpus.stats import corpus_stats
from processing.corpus.tweet_corpus import load_tweet_corpus
from processing.evaluation.metrics import ner_metrics

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

pytestmark = pytest.mark.skipif(not SHARED_DATA.is_dir(), reason=f"{SHARED_DATA} is absent")

TWITTER2015_B_TAGS = {
    "train": {"PER": 2217, "LOC": 2091, "ORG": 927, "MISC": 931, "total": 6166},
    "valid": {"PER": 552, "LOC": 522, "ORG": 247, "MISC": 220, "total": 1541},
    "test": {"PER": 1816, "LOC": 1697, "ORG": 839, "MISC": 720, "total": 5072},
}
TWITTER2017_B_TAGS = {
    "train": {"PER": 2943, "LOC": 731, "ORG": 1674, "MISC": 701, "total": 6049},
    "valid": {"PER": 626, "LOC": 173, "ORG": 375, "MISC": 150, "total": 1324},
}


@pytest.fixture(scope="module")
def twitter2015():
    return load_tweet_corpus(
        SHARED_DATA / "twitter2015", captions_file=SHARED_DATA / "captions" / "twitter2015_blip2.txt"
    )


@pytest.fixture(scope="module")
def twitter2017():
    return load_tweet_corpus(
        SHARED_DATA / "twitter2017",
        image_dir=SHARED_DATA / "sample_images",
        captions_file=SHARED_DATA / "captions" / "twitter2017_blip2.txt",
    )


def gold_tag_names(dataset):
    names = dataset.features["ner_tags"].feature.names
    return [[names[tag_id] for tag_id in tag_ids] for tag_ids in dataset["ner_tags"]]


def test_twitter2015_counts_match_the_data_readme(twitter2015):
    stats = corpus_stats(twitter2015)
    assert {split: s["tweets"] for split, s in stats.items()} == {"train": 4000, "valid": 1000, "test": 3257}
    assert {split: s["tokens"] for split, s in stats.items()} == {
        "train": 64439,
        "valid": 16178,
        "test": 52822,
    }
    assert {split: s["entities_b_only"] for split, s in stats.items()} == TWITTER2015_B_TAGS
    assert {split: s["inside_tags_opening_entity"] for split, s in stats.items()} == {
        "train": 186,
        "valid": 53,
        "test": 135,
    }
    assert stats["test"]["entities_lenient"]["total"] == 5207


def test_twitter2015_captions_cover_every_tweet_but_the_two_empty_ones(twitter2015):
    stats = corpus_stats(twitter2015)
    assert sum(s["tweets"] - s["with_caption"] for s in stats.values()) == 2
    assert all(s["missing_image"] == s["tweets"] for s in stats.values())


@pytest.mark.parametrize(
    "corpus, coverage",
    [
        ("twitter2015", {"train": (3999, 4000), "valid": (999, 1000), "test": (3256, 3257)}),
        ("twitter2017", {"train": (3373, 3373), "valid": (723, 723)}),
    ],
)
def test_pgim_knowledge_covers_the_tweets_the_readme_says(corpus, coverage):
    knowledge = SHARED_DATA / "knowledge" / f"{corpus}_pgim.txt"
    stats = corpus_stats(load_tweet_corpus(SHARED_DATA / corpus, text_source_files={"knowledge": knowledge}))
    assert {
        split: (s["with_text_sources"]["knowledge"], s["tweets"]) for split, s in stats.items()
    } == coverage


def test_the_stats_command_reports_each_text_source():
    completed = subprocess.run(
        [sys.executable, "-m", "processing.corpus", "stats", str(SHARED_DATA / "twitter2017")]
        + ["--text-source", f"knowledge={SHARED_DATA / 'knowledge' / 'twitter2017_pgim.txt'}"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    rows = {line.split("  ")[0].strip(): line for line in completed.stdout.splitlines()}
    assert "3373 (100.0%)" in rows["with knowledge"] and "0 (0.0%)" in rows["with caption"]


def test_twitter2015_test_gold_against_itself_scores_5207_lenient_and_5072_strict(twitter2015):
    gold = gold_tag_names(twitter2015["test"])
    lenient = ner_metrics(gold, gold, mode="lenient")
    strict = ner_metrics(gold, gold, mode="strict")
    assert (
        lenient["overall_number"] == sum(lenient[t]["number"] for t in ("PER", "LOC", "ORG", "MISC")) == 5207
    )
    assert strict["overall_number"] == 5072
    assert lenient["overall_f1"] == strict["overall_f1"] == 1.0


def test_repair_bio_turns_the_374_orphan_inside_tags_into_b_tags():
    repaired = corpus_stats(load_tweet_corpus(SHARED_DATA / "twitter2015", repair_bio=True))
    assert sum(s["entities_b_only"]["total"] for s in repaired.values()) == 6166 + 1541 + 5072 + 374
    assert (
        repaired["test"]["entities_b_only"]["total"] == repaired["test"]["entities_lenient"]["total"] == 5207
    )


def test_twitter2017_loads_without_a_test_split_and_matches_the_readme(twitter2017):
    assert list(twitter2017) == ["train", "valid"]
    stats = corpus_stats(twitter2017)
    assert {split: s["tweets"] for split, s in stats.items()} == {"train": 3373, "valid": 723}
    assert {split: s["tokens"] for split, s in stats.items()} == {"train": 53007, "valid": 11309}
    assert {split: s["entities_b_only"] for split, s in stats.items()} == TWITTER2017_B_TAGS
    assert all(s["with_caption"] == s["tweets"] for s in stats.values())


def test_twitter2017_links_the_one_sample_image(twitter2017):
    train = twitter2017["train"]
    paths = train.cast_column("image", Image(decode=False))["image"]
    linked = [(tweet_id, path["path"]) for tweet_id, path in zip(train["id"], paths, strict=True) if path]
    assert linked == [("16_05_01_127", str(SHARED_DATA.absolute() / "sample_images" / "16_05_01_127.jpg"))]
    index = train["id"].index("16_05_01_127")
    assert train[index]["image"].size == (1099, 1024)


def test_known_unicode_quirks_survive_loading(twitter2015, twitter2017):
    valid = twitter2015["valid"]
    assert "\u00a0" in valid[valid["id"].index("73309")]["tokens"]
    train = twitter2017["train"]
    tokens = train[train["id"].index("16_05_19_148")]["tokens"]
    assert sum(token.count("\ufffd") for token in tokens) == 4


def test_stats_command_prints_the_readme_counts():
    result = subprocess.run(
        [sys.executable, "-m", "processing.corpus", "stats", str(SHARED_DATA / "twitter2015")],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    lines = [line.strip() for line in result.stdout.splitlines()]

    def counts(label):
        return [line.split()[-3:] for line in lines if line.startswith(label)]

    assert lines[0].split() == ["train", "valid", "test"]
    assert counts("tweets") == [["4000", "1000", "3257"]]
    assert counts("tokens") == [["64439", "16178", "52822"]]
    # B- tag totals first, then lenient totals.
    assert counts("total") == [["6166", "1541", "5072"], ["6352", "1594", "5207"]]
    assert counts("I- tags opening an entity") == [["186", "53", "135"]]
