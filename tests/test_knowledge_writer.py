"""Tests for `modeling_mgcm.knowledge_writer`, on a tiny random GPT-2 and a WordLevel tokenizer built offline."""

import json

import pytest
from tiny_text_generation import build_pipeline, build_tokenizer, tiny_gpt2_config
from transformers import GPT2Model, pipeline

from modeling_mgcm.knowledge_writer import (
    NO_CAPTION_TEXT,
    KnowledgeWriter,
    as_knowledge_writer,
)

POSTS = [
    "Obama meets Merkel in Berlin today",
    "RT @JayKenMinaj George Zimmerman trial",
    "Florida trial today",
    "Merkel in Berlin",
    "a stage in Florida",
]
CAPTIONS = ["a man on a stage holding a microphone", None, "", "a stage", None]
CHAT_TEMPLATE = (
    "{% for message in messages %}<user> {{ message['content'] }}\n{% endfor %}"
    "{% if add_generation_prompt %}<bot>{% endif %}"
)


def spy_on_generate(generation_pipeline, monkeypatch) -> list[dict]:
    """Record the keyword arguments of every `model.generate` call of the pipeline."""
    calls = []
    generate = generation_pipeline.model.generate

    def recording_generate(*args, **kwargs):
        calls.append(kwargs)
        return generate(*args, **kwargs)

    monkeypatch.setattr(generation_pipeline.model, "generate", recording_generate)
    return calls


def generated_posts(calls: list[dict]) -> int:
    return sum(call["input_ids"].shape[0] for call in calls)


def answer_length(tokenizer, answer: str) -> int:
    return len(tokenizer(answer, add_special_tokens=False)["input_ids"])


def test_one_line_per_post_and_deterministic():
    answers = KnowledgeWriter(build_pipeline(), max_new_tokens=6)(POSTS, CAPTIONS)
    again = KnowledgeWriter(build_pipeline(), max_new_tokens=6)(POSTS, CAPTIONS)

    assert len(answers) == len(POSTS)
    assert all(isinstance(answer, str) and answer for answer in answers)
    assert all(answer == " ".join(answer.split()) for answer in answers)
    assert answers == again


def test_answers_stop_at_max_new_tokens():
    generation_pipeline = build_pipeline()
    short = KnowledgeWriter(generation_pipeline, max_new_tokens=3)(POSTS)
    longer = KnowledgeWriter(generation_pipeline, max_new_tokens=9)(POSTS)

    tokenizer = generation_pipeline.tokenizer
    assert all(answer_length(tokenizer, answer) <= 3 for answer in short)
    assert all(answer_length(tokenizer, answer) <= 9 for answer in longer)
    assert max(answer_length(tokenizer, answer) for answer in longer) > 3


def test_batches_give_the_same_answers_as_single_posts(monkeypatch):
    one_by_one = KnowledgeWriter(build_pipeline(), max_new_tokens=5, batch_size=1)(POSTS, CAPTIONS)

    generation_pipeline = build_pipeline()
    assert generation_pipeline.tokenizer.pad_token is None
    calls = spy_on_generate(generation_pipeline, monkeypatch)
    batched = KnowledgeWriter(generation_pipeline, max_new_tokens=5, batch_size=2)(POSTS, CAPTIONS)

    assert batched == one_by_one
    assert [call["input_ids"].shape[0] for call in calls] == [2, 2, 1]
    assert generation_pipeline.tokenizer.pad_token == "<eos>"
    eos_id = generation_pipeline.tokenizer.eos_token_id
    assert all(call["pad_token_id"] == eos_id for call in calls)
    assert generation_pipeline.tokenizer.padding_side == "left"


def test_cache_serves_repeats_without_generating(monkeypatch):
    generation_pipeline = build_pipeline()
    calls = spy_on_generate(generation_pipeline, monkeypatch)
    writer = KnowledgeWriter(generation_pipeline, max_new_tokens=4)
    posts = [POSTS[0], POSTS[1], POSTS[0]]
    captions = [CAPTIONS[0], None, CAPTIONS[0]]

    first = writer(posts, captions)
    assert generated_posts(calls) == 2  # the repeated post is generated once
    assert (writer.cache_hits, writer.cache_misses) == (1, 2)
    assert first[0] == first[2]

    second = writer(posts, captions)
    assert generated_posts(calls) == 2
    assert (writer.cache_hits, writer.cache_misses) == (4, 2)
    assert second == first

    # Another caption is another input.
    writer([POSTS[0]], ["a stage"])
    assert generated_posts(calls) == 3


def test_cache_key_depends_on_template_and_generator():
    generation_pipeline = build_pipeline()
    writer = KnowledgeWriter(generation_pipeline, max_new_tokens=4)
    other_template = KnowledgeWriter(generation_pipeline, prompt_template="Post: {text}", max_new_tokens=4)
    other_length = KnowledgeWriter(generation_pipeline, max_new_tokens=5)
    keys = {w.cache_key(POSTS[0], "") for w in (writer, other_template, other_length)}
    assert len(keys) == 3
    assert writer.cache_key(POSTS[0], "") != writer.cache_key(POSTS[0], "a stage")


def test_cache_file_persists_across_writers(tmp_path, monkeypatch):
    cache_file = tmp_path / "knowledge-cache.jsonl"
    generation_pipeline = build_pipeline()
    calls = spy_on_generate(generation_pipeline, monkeypatch)
    answers = KnowledgeWriter(generation_pipeline, max_new_tokens=4, batch_size=2, cache_file=cache_file)(
        POSTS, CAPTIONS
    )
    assert generated_posts(calls) == len(POSTS)

    records = [json.loads(line) for line in cache_file.read_text(encoding="utf-8").splitlines()]
    assert [record["knowledge"] for record in records] == answers
    assert all(set(record) == {"key", "knowledge"} for record in records)

    reopened = KnowledgeWriter(generation_pipeline, max_new_tokens=4, cache_file=cache_file)
    assert reopened(POSTS, CAPTIONS) == answers
    assert generated_posts(calls) == len(POSTS)
    assert (reopened.cache_hits, reopened.cache_misses) == (len(POSTS), 0)


def test_truncated_last_cache_line_is_ignored_and_cut_off(tmp_path):
    cache_file = tmp_path / "knowledge-cache.jsonl"
    calls = []

    def echo(texts, captions):
        calls.extend(texts)
        return [f"knowledge of {text}" for text in texts]

    KnowledgeWriter(echo, cache_file=cache_file)(POSTS[:2])
    with open(cache_file, "a", encoding="utf-8") as handle:
        handle.write('{"key": "0123", "knowl')  # an append cut short

    with pytest.warns(UserWarning, match=r"knowledge-cache\.jsonl, line 3: ignoring a truncated last line"):
        reopened = KnowledgeWriter(echo, cache_file=cache_file)
    assert reopened(POSTS[:3]) == [f"knowledge of {text}" for text in POSTS[:3]]
    assert calls == POSTS[:2] + [POSTS[2]]

    lines = cache_file.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["knowledge"] for line in lines] == [f"knowledge of {text}" for text in POSTS[:3]]


def test_malformed_middle_cache_line_raises_with_its_line_number(tmp_path):
    cache_file = tmp_path / "knowledge-cache.jsonl"
    KnowledgeWriter(lambda texts, captions: ["k"] * len(texts), cache_file=cache_file)(POSTS[:2])
    first, second = cache_file.read_text(encoding="utf-8").splitlines()
    cache_file.write_text(f"{first}\nnot json at all\n{second}\n", encoding="utf-8")

    with pytest.raises(ValueError, match=r"knowledge-cache\.jsonl, line 2: .*'not json at all'"):
        KnowledgeWriter(lambda texts, captions: ["k"] * len(texts), cache_file=cache_file)

    cache_file.write_text(f'{first}\n{{"key": "abc"}}\n{second}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 2: .*expected"):
        KnowledgeWriter(lambda texts, captions: ["k"] * len(texts), cache_file=cache_file)


def test_chat_template_formats_the_prompt(monkeypatch):
    generation_pipeline = build_pipeline()
    tokenizer = generation_pipeline.tokenizer
    tokenizer.chat_template = CHAT_TEMPLATE
    chats = []
    apply_chat_template = tokenizer.apply_chat_template

    def recording_apply_chat_template(messages, *args, **kwargs):
        chats.append(messages)
        return apply_chat_template(messages, *args, **kwargs)

    monkeypatch.setattr(tokenizer, "apply_chat_template", recording_apply_chat_template)
    calls = spy_on_generate(generation_pipeline, monkeypatch)
    writer = KnowledgeWriter(generation_pipeline, max_new_tokens=3, batch_size=1)
    writer(POSTS[:2], CAPTIONS[:2])

    expected_prompts = [writer.build_prompt(POSTS[0], CAPTIONS[0]), writer.build_prompt(POSTS[1], "")]
    assert [list(chat) for chat in chats] == [
        [{"role": "user", "content": prompt}] for prompt in expected_prompts
    ]
    assert NO_CAPTION_TEXT in expected_prompts[1] and CAPTIONS[0] in expected_prompts[0]
    seen = [tokenizer.decode(call["input_ids"][0]) for call in calls]
    assert all(text.startswith("<user>") and text.endswith("<bot>") for text in seen)


def test_plain_prompt_without_chat_template(monkeypatch):
    generation_pipeline = build_pipeline()
    calls = spy_on_generate(generation_pipeline, monkeypatch)
    writer = KnowledgeWriter(generation_pipeline, max_new_tokens=3, batch_size=1)
    writer([POSTS[0]], [CAPTIONS[0]])

    expected = generation_pipeline.tokenizer(writer.build_prompt(POSTS[0], CAPTIONS[0]))["input_ids"]
    assert calls[0]["input_ids"][0].tolist() == expected


def test_rejects_a_pipeline_of_another_task():
    tokenizer = build_tokenizer()
    feature_extractor = pipeline(
        "feature-extraction", model=GPT2Model(tiny_gpt2_config(len(tokenizer))), tokenizer=tokenizer
    )
    with pytest.raises(ValueError, match="feature-extraction"):
        KnowledgeWriter(feature_extractor)
    with pytest.raises(ValueError, match="feature-extraction"):
        as_knowledge_writer(feature_extractor)


def test_plain_callable_gets_texts_and_captions_in_batches():
    batches = []

    def describe(texts, captions):
        batches.append((texts, captions))
        return [
            f"  {text}\n\n(caption: {caption or '-'})  "
            for text, caption in zip(texts, captions, strict=True)
        ]

    writer = KnowledgeWriter(describe, batch_size=2)
    answers = writer(POSTS, CAPTIONS)

    assert batches == [
        (POSTS[0:2], [CAPTIONS[0], ""]),
        (POSTS[2:4], ["", CAPTIONS[3]]),
        (POSTS[4:5], [""]),
    ]
    assert answers[0] == f"{POSTS[0]} (caption: {CAPTIONS[0]})"
    assert answers[1] == f"{POSTS[1]} (caption: -)"


def test_callable_answers_are_checked():
    with pytest.raises(ValueError, match="returned 1 answers for 2 posts"):
        KnowledgeWriter(lambda texts, captions: ["only one"])(POSTS[:2])
    with pytest.raises(TypeError, match=r"index 1: None"):
        KnowledgeWriter(lambda texts, captions: ["fine", None])(POSTS[:2])
    with pytest.raises(TypeError, match="list of str"):
        KnowledgeWriter(lambda texts, captions: "one string")(POSTS[:2])


def test_posts_are_checked():
    writer = KnowledgeWriter(lambda texts, captions: ["k"] * len(texts))
    with pytest.raises(TypeError, match=r"texts\[1\].*\['split', 'words'\]"):
        writer(["a post", ["split", "words"]])
    with pytest.raises(TypeError, match="sequence of str"):
        writer("a single string")
    with pytest.raises(ValueError, match="2 texts but 1 captions"):
        writer(POSTS[:2], ["one caption"])
    with pytest.raises(TypeError, match=r"captions\[0\].*42"):
        writer(POSTS[:1], [42])
    with pytest.raises(ValueError, match="unknown fields"):
        KnowledgeWriter(lambda texts, captions: texts, prompt_template="{text} {image}")


def test_as_knowledge_writer():
    assert as_knowledge_writer(None) is None
    writer = KnowledgeWriter(lambda texts, captions: ["k"] * len(texts))
    assert as_knowledge_writer(writer) is writer
    generation_pipeline = build_pipeline()
    wrapped = as_knowledge_writer(generation_pipeline)
    assert isinstance(wrapped, KnowledgeWriter) and wrapped.generator is generation_pipeline
    assert isinstance(as_knowledge_writer(lambda texts, captions: texts), KnowledgeWriter)
    with pytest.raises(TypeError, match="text-generation pipeline or a callable"):
        as_knowledge_writer("gpt2")
