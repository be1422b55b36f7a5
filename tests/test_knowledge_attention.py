"""benchmarks/knowledge_attention.py: how much of an entity's attention falls on the source's mentions of it."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import knowledge_attention  # noqa: E402

KNOWLEDGE_WORDS = ["George", "Zimmerman", "(", "person", ")", "met", "George", "Zimmerman", "twice"]


def word(text: str, tag: str, attention: list[float]) -> dict:
    return {"word": text, "tag": tag, "attention": {"knowledge": attention}}


def test_every_mention_is_found_and_a_missing_phrase_gives_none():
    words = [w.lower() for w in KNOWLEDGE_WORDS]
    assert knowledge_attention.occurrences(["george", "zimmerman"], words) == [0, 6]
    assert knowledge_attention.mention_shares(["trayvon"], words, [[1 / 9] * 9], after=4) is None


def test_the_shares_sum_the_weight_on_the_mentions_and_on_the_words_after_them():
    words = [w.lower() for w in KNOWLEDGE_WORDS]
    rows = [[0.3, 0.1, 0.0, 0.2, 0.0, 0.1, 0.1, 0.1, 0.1], [0.0, 0.5, 0.0, 0.0, 0.0, 0.0, 0.0, 0.3, 0.2]]
    shares = knowledge_attention.mention_shares(["george", "zimmerman"], words, rows, after=4)
    # Mentions: words 0, 1, 6, 7; after them: 2-5 and 8 (the window after the first runs into the second).
    assert shares["on_mention"] == pytest.approx((0.6 + 0.8) / 2)
    assert shares["after_mention"] == pytest.approx((0.4 + 0.2) / 2)
    assert shares["uniform_on_mention"] == pytest.approx(4 / 9)
    assert shares["uniform_after_mention"] == pytest.approx(5 / 9)


def test_entities_are_grouped_by_whether_the_run_tagged_them_and_words_outside_are_the_baseline():
    uniform = [1 / 9] * 9
    on_george = [1.0, 0, 0, 0, 0, 0, 0, 0, 0]
    outputs = [
        {
            "words": [
                word("@George", "B-PER", on_george),
                word("Zimmerman", "I-PER", uniform),
                word("twice", "O", uniform),
                word("Sanford", "B-LOC", uniform),
            ],
            "attended": {"knowledge": {"words": KNOWLEDGE_WORDS}},
        },
        # A post without knowledge counts nowhere.
        {"words": [word("George", "O", [])], "attended": {}},
    ]
    gold = [["B-PER", "I-PER", "O", "B-ORG"], ["B-PER"]]
    report = knowledge_attention.attention_report(outputs, gold, "knowledge", str.split, after=2)
    # "@George Zimmerman" is tagged right and stated twice; Sanford (tagged LOC, gold ORG) is not stated.
    right = report["tagged right"]
    assert right["count"] == 1
    assert right["on_mention"] == pytest.approx((1.0 + 4 / 9) / 2)
    assert right["after_mention"] == pytest.approx((0 + 3 / 9) / 2)
    assert report["tagged wrong"]["count"] == 0
    # "twice", outside any entity, is stated once: its weight on it is 1/9, what a uniform attention puts there.
    outside = report["words outside entities"]
    assert outside["count"] == 1 and outside["on_mention"] == pytest.approx(outside["uniform_on_mention"])
