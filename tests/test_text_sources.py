"""Named text sources (caption, LLM-written knowledge, any name) end to end: `MGCMConfig.text_sources` and
the legacy caption keys it replaced; the model's per-source blocks and gates, the shared block, input dropout
and legacy `caption_projection` weights; the processor's per-source lengths and text segments, old
processor configs and corpus preprocessing; and `load_tweet_corpus(text_source_files=...)`."""

import json

import datasets
import pytest
import torch
from huggingface_hub.errors import StrictDataclassClassValidationError
from mgcm_batches import CLS, SEP, build_batch, mgcm_config, run, three_examples, tiny_model
from safetensors.torch import load_file, save_file
from tiny_corpora import write_file

from modeling_mgcm import MGCMConfig, MGCMForTokenClassification
from modeling_mgcm.configuration_mgcm import SHARED_TEXT_SOURCE_BLOCK
from processing import WINDOW_INFO_KEYS, MGCMProcessor
from processing.corpus.tweet_corpus import CorpusFormatError, load_tweet_corpus
from processing.training.window_rows import preprocess_corpus

pytestmark = pytest.mark.usefixtures("single_thread")

SOURCES = ["caption", "knowledge"]
# The corpus columns every split has; a text source of one of these names would overwrite it.
CORPUS_COLUMNS = ("id", "tokens", "ner_tags", "image", "objects")


def source_ids(seed: int, length: int, vocab_size: int = 60) -> list[int]:
    """One text source's pieces as the processor writes them: [CLS] `length` random pieces [SEP]."""
    generator = torch.Generator().manual_seed(seed)
    return [CLS, *torch.randint(5, vocab_size, (length,), generator=generator).tolist(), SEP]


def with_source(batch: dict, name: str, rows: list[list[int]]) -> dict:
    """`batch` plus (or with new) `<name>_input_ids` / `<name>_attention_mask`; an empty row has no source."""
    length = max(1, max(len(ids) for ids in rows))
    input_ids = torch.zeros(len(rows), length, dtype=torch.long)
    attention_mask = torch.zeros(len(rows), length, dtype=torch.long)
    for row, ids in enumerate(rows):
        input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
        attention_mask[row, : len(ids)] = 1
    return {**batch, f"{name}_input_ids": input_ids, f"{name}_attention_mask": attention_mask}


def knowledge_rows(seed: int = 100, absent: tuple[int, ...] = ()) -> list[list[int]]:
    """Knowledge for the three tweets of `three_examples`, of different lengths; none for rows in `absent`."""
    return [[] if row in absent else source_ids(seed + row, 3 + 2 * row) for row in range(3)]


def knowledge_batch(absent: tuple[int, ...] = (), seed: int = 100) -> dict:
    """Three tweets with every granularity, a caption and knowledge (none for the rows in `absent`)."""
    return with_source(build_batch(three_examples()), "knowledge", knowledge_rows(seed, absent))


def source_model(text_config, seed: int = 0, **overrides) -> MGCMForTokenClassification:
    """A tiny eval-mode model with image, objects, caption and knowledge."""
    return tiny_model(text_config, seed, text_sources=SOURCES, **overrides)


def dropped_rows(gate: torch.Tensor) -> torch.Tensor:
    """(B, W) gate -> (B,) bool: the rows whose block saw no input (gate 0 at every word)."""
    return (gate == 0).all(dim=1)


def edit_json(path, edit) -> None:
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))


def to_legacy_config(data: dict) -> None:
    """config.json as written before named text sources: `use_caption` and `detach_caption_encoding`."""
    assert data.pop("text_sources") == ["caption"]
    data["detach_caption_encoding"] = data.pop("detach_text_source_encoding")
    del data["share_text_source_block"], data["input_dropout"]
    data["use_caption"] = True


# ----------------------------------------------------------------------------------------------------------
# Config


def test_text_sources_and_their_options_round_trip_through_save_pretrained(tiny_text_config, tmp_path):
    config = mgcm_config(
        tiny_text_config,
        use_caption=False,
        text_sources=["knowledge", "caption"],
        share_text_source_block=True,
        input_dropout={"knowledge": 0.3, "image": 0.1},
        detach_text_source_encoding=False,
    )
    config.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert "use_caption" not in saved and "detach_caption_encoding" not in saved

    loaded = MGCMConfig.from_pretrained(tmp_path)
    assert loaded.text_sources == ["knowledge", "caption"]
    assert loaded.granularities == ("image", "objects", "knowledge", "caption")
    assert loaded.share_text_source_block is True
    assert loaded.input_dropout == {"knowledge": 0.3, "image": 0.1}
    assert loaded.detach_text_source_encoding is False
    assert loaded.use_caption is True


def test_use_caption_puts_the_caption_first_and_is_read_only(tiny_text_config):
    config = mgcm_config(tiny_text_config, use_caption=True, text_sources=["knowledge"])
    assert config.text_sources == ["caption", "knowledge"]
    assert mgcm_config(tiny_text_config, use_caption=False).text_sources == []
    with pytest.raises(AttributeError):
        config.use_caption = False


def test_an_old_config_json_with_use_caption_loads_as_the_caption_source(tiny_text_config, tmp_path):
    mgcm_config(tiny_text_config, detach_text_source_encoding=True).save_pretrained(tmp_path)
    edit_json(tmp_path / "config.json", to_legacy_config)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["use_caption"] is True and saved["detach_caption_encoding"] is True
    edit_json(tmp_path / "config.json", lambda data: data.update(detach_caption_encoding=False))

    loaded = MGCMConfig.from_pretrained(tmp_path)
    assert loaded.text_sources == ["caption"] and loaded.use_caption
    assert loaded.detach_text_source_encoding is False
    # Saved again, it speaks today's keys only.
    loaded.save_pretrained(tmp_path / "again")
    resaved = json.loads((tmp_path / "again" / "config.json").read_text())
    assert resaved["text_sources"] == ["caption"] and resaved["detach_text_source_encoding"] is False
    assert "use_caption" not in resaved and "detach_caption_encoding" not in resaved


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (dict(text_sources=["Knowledge"]), r"text source name 'Knowledge' must be a lowercase identifier"),
        (
            dict(text_sources=["image"]),
            r"text_sources: text source name 'image' must be .* other than image, objects, id, tokens",
        ),
        (dict(text_sources=["objects"]), r"text source name 'objects'"),
        (dict(text_sources=["knowledge", "knowledge"]), r"text_sources repeats \['knowledge'\]"),
        (dict(use_caption=True, text_sources=["caption", "caption"]), r"text_sources repeats \['caption'\]"),
        (
            dict(input_dropout={"knowledge": 0.5}),
            r"input_dropout names 'knowledge', which is not a granularity",
        ),
        (dict(use_image=False, input_dropout={"image": 0.5}), r"input_dropout names 'image'"),
        (dict(input_dropout={"caption": 1}), r"input_dropout\['caption'\] must be in \[0, 1\), got 1"),
        (dict(input_dropout={"caption": -0.1}), r"input_dropout\['caption'\] must be in \[0, 1\)"),
    ],
    ids=lambda value: str(value) if isinstance(value, dict) else "",
)
def test_bad_text_sources_and_input_dropout_raise_naming_the_field(tiny_text_config, overrides, message):
    # transformers v5 runs the config's validate_* hooks through huggingface_hub, which wraps their ValueError.
    with pytest.raises(StrictDataclassClassValidationError, match=message):
        mgcm_config(tiny_text_config, **overrides)


# ----------------------------------------------------------------------------------------------------------
# Model: one block, gate and fusion slot per source, each reading its own inputs


def test_each_text_source_has_its_own_block_gate_and_fusion_slot(tiny_text_config):
    model = source_model(tiny_text_config)
    granularities = {"image", "objects", "caption", "knowledge"}
    assert set(model.mgcm.cross_modal_blocks) == granularities
    assert model.mgcm.text_source_embeddings is None
    assert model.mgcm.fusion.in_features == len(granularities) * model.config.cross_modal_width
    output = run(model, knowledge_batch())
    assert set(output.gate_values) == granularities
    real_words = build_batch(three_examples())["word_mask"].bool()
    for name in SOURCES:
        assert (output.gate_values[name][real_words] > 0).all(), name


@pytest.mark.parametrize(("changed", "fixed"), [("knowledge", "caption"), ("caption", "knowledge")])
def test_each_source_reads_only_its_own_inputs(tiny_text_config, changed, fixed):
    model = source_model(tiny_text_config)
    batch = knowledge_batch()
    other_text = with_source(batch, changed, [source_ids(500 + row, 4) for row in range(3)])
    first, second = run(model, batch), run(model, other_text)
    assert not torch.allclose(first.logits, second.logits, atol=1e-5)
    assert not torch.allclose(first.gate_values[changed], second.gate_values[changed], atol=1e-6)
    assert torch.equal(first.gate_values[fixed], second.gate_values[fixed])


def test_a_batch_without_knowledge_inputs_runs_with_a_zero_knowledge_gate(tiny_text_config):
    model = source_model(tiny_text_config)
    output = run(model, build_batch(three_examples()))
    assert torch.isfinite(output.logits).all()
    assert (output.gate_values["knowledge"] == 0).all()
    assert output.gate_values["caption"].abs().sum() > 0


def test_an_all_zero_knowledge_mask_row_gives_exactly_the_logits_of_omitting_knowledge(tiny_text_config):
    """torch.equal, as for the caption in test_modeling_mgcm: the knowledge-less row must not see any trace
    of the other rows' knowledge, nor of its own padding pieces."""
    model = source_model(tiny_text_config)
    with_knowledge = run(model, knowledge_batch(absent=(1,)))
    without_knowledge = run(model, build_batch(three_examples()))
    assert torch.equal(with_knowledge.logits[1], without_knowledge.logits[1])
    assert (with_knowledge.gate_values["knowledge"][1] == 0).all()
    assert not torch.allclose(with_knowledge.logits[0], without_knowledge.logits[0])


def test_inputs_of_a_source_the_config_lacks_are_ignored(tiny_text_config):
    model = source_model(tiny_text_config)
    batch = knowledge_batch()
    extra = with_source(batch, "summary", knowledge_rows(seed=7))
    assert torch.equal(run(model, extra).logits, run(model, batch).logits)


def test_malformed_text_source_inputs_raise(tiny_text_config):
    model = source_model(tiny_text_config)
    batch = knowledge_batch()
    misspelt = {**batch, "knowledge_input_idz": batch.pop("knowledge_input_ids")}
    with pytest.raises(TypeError, match="unexpected keyword argument 'knowledge_input_idz'"):
        run(model, misspelt)
    without_mask = {
        key: value for key, value in knowledge_batch().items() if key != "knowledge_attention_mask"
    }
    with pytest.raises(ValueError, match="knowledge_input_ids need knowledge_attention_mask"):
        run(model, without_mask)
    short_mask = knowledge_batch()
    short_mask["knowledge_attention_mask"] = short_mask["knowledge_attention_mask"][:, :-1]
    with pytest.raises(ValueError, match="knowledge_attention_mask has shape"):
        run(model, short_mask)


def test_a_shared_block_serves_every_source_with_its_own_embedding_and_gate(tiny_text_config):
    model = source_model(tiny_text_config, share_text_source_block=True)
    assert set(model.mgcm.cross_modal_blocks) == {"image", "objects", SHARED_TEXT_SOURCE_BLOCK}
    embeddings = model.mgcm.text_source_embeddings
    assert (embeddings.num_embeddings, embeddings.embedding_dim) == (2, model.config.cross_modal_width)
    assert model.mgcm.fusion.in_features == 4 * model.config.cross_modal_width

    # The same text as caption and as knowledge: only the source embedding tells them apart.
    batch = build_batch(three_examples())
    same_text = {
        **batch,
        "knowledge_input_ids": batch["caption_input_ids"],
        "knowledge_attention_mask": batch["caption_attention_mask"],
    }
    block_outputs = []
    shared_block = model.mgcm.cross_modal_blocks[SHARED_TEXT_SOURCE_BLOCK]
    shared_block.register_forward_hook(lambda module, args, output: block_outputs.append(output[0]))

    gates = run(model, same_text).gate_values
    assert set(gates) == {"image", "objects", "caption", "knowledge"}
    assert not torch.equal(gates["caption"], gates["knowledge"])
    caption_states, knowledge_states = block_outputs  # the shared block ran once per source, in order
    assert not torch.allclose(caption_states, knowledge_states, atol=1e-4)

    with torch.no_grad():
        model.mgcm.text_source_embeddings.weight.zero_()
    block_outputs.clear()
    gates = run(model, same_text).gate_values
    assert torch.equal(gates["caption"], gates["knowledge"])
    assert torch.equal(*block_outputs)


# ----------------------------------------------------------------------------------------------------------
# Model: input dropout


def count_dropped_rows(model, seeds: range, name: str) -> tuple[int, list[int]]:
    """Rows (of the knowledge batch, where every row has every input) whose `name` input was dropped,
    in total and per seeded forward."""
    batch = knowledge_batch()
    per_forward = []
    for seed in seeds:
        torch.manual_seed(seed)
        per_forward.append(int(dropped_rows(run(model, batch).gate_values[name]).sum()))
    return sum(per_forward), per_forward


def test_input_dropout_removes_nearly_every_example_s_input_in_training_and_only_that_input(tiny_text_config):
    model = source_model(tiny_text_config, input_dropout={"knowledge": 0.99}).train()
    seeds = range(10)
    dropped, _ = count_dropped_rows(model, seeds, "knowledge")
    assert dropped >= 27  # of 30 rows; 29.7 expected
    for name in ("image", "objects", "caption"):
        assert count_dropped_rows(model, seeds, name)[0] == 0, name


def test_input_dropout_draws_each_example_apart(tiny_text_config):
    model = source_model(tiny_text_config, input_dropout={"caption": 0.5}).train()
    dropped, per_forward = count_dropped_rows(model, range(20), "caption")
    assert 15 <= dropped <= 45  # of 60 rows
    assert any(0 < count < 3 for count in per_forward)  # some batches lose the input in some rows only
    assert count_dropped_rows(model, range(20), "knowledge")[0] == 0


def test_input_dropout_never_drops_in_eval_mode(tiny_text_config):
    model = source_model(tiny_text_config, input_dropout={"knowledge": 0.99, "image": 0.99})
    assert not model.training
    for name in ("knowledge", "image"):
        assert count_dropped_rows(model, range(5), name)[0] == 0, name


@pytest.mark.parametrize("shared", [False, True], ids=["block-each", "shared-block"])
@pytest.mark.parametrize("dropped", [("knowledge",), ("caption", "knowledge"), ("image",)], ids="+".join)
def test_every_parameter_gets_a_gradient_when_input_dropout_empties_a_whole_batch(
    tiny_text_config, dropped, shared
):
    """DDP needs every trainable parameter in every step's graph, also when input dropout removed an input
    from every example of the batch. A slim width makes the text-source projection a Linear, so it counts
    (with every text source dropped, nothing but the dropped rows keeps it in the graph)."""
    model = source_model(
        tiny_text_config,
        input_dropout=dict.fromkeys(dropped, 0.99),
        share_text_source_block=shared,
        cross_modal_hidden_size=16,
    ).train()
    torch.manual_seed(0)
    output = model(**knowledge_batch())
    for name in dropped:
        assert dropped_rows(output.gate_values[name]).all(), name
    output.loss.backward()
    without_gradient = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert without_gradient == []


@pytest.mark.parametrize("detached", [True, False], ids=["detached", "trained-through"])
def test_text_sources_are_read_without_gradient_and_dropout_only_while_detached(tiny_text_config, detached):
    """Each pass of the shared text encoder in training: the tweet's is always trained; a text source's has
    no gradient and runs in eval mode under `detach_text_source_encoding`, and is trained like the tweet's
    without it. The encoder is back in training mode after the forward."""
    model = source_model(tiny_text_config, detach_text_source_encoding=detached).train()
    passes = []
    model.mgcm.text_encoder.register_forward_hook(
        lambda module, inputs, output: passes.append(
            (output.last_hidden_state.requires_grad, module.training)
        )
    )
    model(**knowledge_batch())
    tweet_pass, *source_passes = passes
    assert tweet_pass == (True, True) and len(source_passes) >= 2  # the caption's and the knowledge's
    assert set(source_passes) == ({(False, False)} if detached else {(True, True)})
    assert model.mgcm.text_encoder.training


# ----------------------------------------------------------------------------------------------------------
# Model: checkpoints from before named text sources


def test_legacy_caption_projection_weights_load_and_are_saved_under_the_new_names(tiny_text_config, tmp_path):
    model = tiny_model(tiny_text_config, cross_modal_hidden_size=16)
    assert isinstance(model.mgcm.text_source_projection, torch.nn.Linear)
    batch = build_batch(three_examples(caption=1))
    legacy = tmp_path / "legacy"
    model.save_pretrained(legacy)
    weights = load_file(legacy / "model.safetensors")
    renamed = {
        key.replace(".text_source_projection.", ".caption_projection."): t for key, t in weights.items()
    }
    assert sorted(key for key in renamed if "caption_projection" in key) == [
        "mgcm.caption_projection.bias",
        "mgcm.caption_projection.weight",
    ]
    save_file(renamed, legacy / "model.safetensors", metadata={"format": "pt"})
    edit_json(legacy / "config.json", to_legacy_config)

    loaded = MGCMForTokenClassification.from_pretrained(legacy).eval()
    assert loaded.config.text_sources == ["caption"]
    assert torch.equal(run(loaded, batch).logits, run(model, batch).logits)

    loaded.save_pretrained(tmp_path / "resaved")
    keys = set(load_file(tmp_path / "resaved" / "model.safetensors"))
    assert {"mgcm.text_source_projection.weight", "mgcm.text_source_projection.bias"} <= keys
    assert not any("caption_projection" in key for key in keys)


# ----------------------------------------------------------------------------------------------------------
# Processor


KNOWLEDGE = "obama is the president in paris"


def piece_ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def test_each_text_source_is_truncated_to_its_own_length(tiny_tokenizer):
    processor = MGCMProcessor(tiny_tokenizer, text_source_max_lengths={"knowledge": 5}, max_caption_length=9)
    assert processor.text_sources == ["caption", "knowledge"]
    (window,) = processor.encode_windows(
        [["obama"]], captions=[KNOWLEDGE], text_sources={"knowledge": [KNOWLEDGE]}
    )
    pieces = piece_ids(tiny_tokenizer, KNOWLEDGE)
    assert window["knowledge_input_ids"] == [CLS, *pieces[:3], SEP]
    assert window["caption_input_ids"] == [CLS, *pieces[:7], SEP]


def test_unknown_sources_and_bare_strings_for_a_batch_are_refused(tiny_tokenizer):
    processor = MGCMProcessor(tiny_tokenizer, text_source_max_lengths={"knowledge": 5})
    tweets = [["obama"], ["paris"]]
    with pytest.raises(ValueError, match=r"text sources \['summary'\] are not read by this processor"):
        processor.encode_windows(tweets, text_sources={"summary": ["a", "b"]})
    with pytest.raises(TypeError, match="knowledge must be a list with one text"):
        processor.encode_windows(tweets, text_sources={"knowledge": KNOWLEDGE})
    with pytest.raises(TypeError, match="knowledge must be a list with one text"):
        processor(tweets, text_sources={"knowledge": KNOWLEDGE})
    # One tweet takes its one text as a string.
    single = processor(["obama"], text_sources={"knowledge": KNOWLEDGE})
    assert single["knowledge_attention_mask"].tolist() == [[1] * 5]


def segment_processor(tokenizer, segment_sources: list[str]) -> MGCMProcessor:
    return MGCMProcessor(
        tokenizer,
        text_source_max_lengths={"knowledge": 16, "caption": 16},
        segment_sources=segment_sources,
    )


def test_a_segment_source_follows_the_tweet_after_the_separator_and_belongs_to_no_word(tiny_tokenizer):
    processor = segment_processor(tiny_tokenizer, ["knowledge"])
    assert processor.granularity_sources == ["caption"]
    windows = processor.encode_windows(
        [["obama", "in", "paris"], ["london"]], text_sources={"knowledge": ["the president", None]}
    )
    knowledge = piece_ids(tiny_tokenizer, "the president")
    tweet = piece_ids(tiny_tokenizer, "obama in paris")
    first = windows[0]
    assert first["input_ids"] == [CLS, *tweet, SEP, *knowledge, SEP]
    assert first["word_ids"] == [-1, 0, 1, 2, *[-1] * (len(knowledge) + 2)]
    # BERT's sentence pairs: the second segment has token type 1.
    pair_types = tiny_tokenizer("obama in paris", "the president", return_token_type_ids=True)[
        "token_type_ids"
    ]
    assert first["token_type_ids"] == pair_types == [0] * (len(tweet) + 2) + [1] * (len(knowledge) + 1)
    assert "knowledge_input_ids" not in first
    assert windows[1]["input_ids"] == [CLS, *piece_ids(tiny_tokenizer, "london"), SEP]
    assert "knowledge_input_ids" not in processor.pad_windows(windows)
    assert "knowledge_input_ids" not in processor.model_input_names


def test_two_segment_sources_follow_the_tweet_in_their_order(tiny_tokenizer):
    processor = segment_processor(tiny_tokenizer, ["knowledge", "caption"])
    assert processor.granularity_sources == []
    windows = processor.encode_windows(
        [["obama"], ["paris"]],
        captions=["a man", "a city"],
        text_sources={"knowledge": ["the president", ""]},
    )
    obama, paris, president = (
        piece_ids(tiny_tokenizer, text) for text in ("obama", "paris", "the president")
    )
    man, city = piece_ids(tiny_tokenizer, "a man"), piece_ids(tiny_tokenizer, "a city")
    assert windows[0]["input_ids"] == [CLS, *obama, SEP, *president, SEP, *man, SEP]
    assert windows[1]["input_ids"] == [CLS, *paris, SEP, *city, SEP]
    segment_pieces = len(president) + len(man)
    assert windows[0]["word_ids"] == [-1, *[0] * len(obama), *[-1] * (segment_pieces + 3)]
    # BERT's pair layout: the tweet and its [SEP] are type 0, everything after it type 1.
    assert windows[0]["token_type_ids"] == [0] * (2 + len(obama)) + [1] * (segment_pieces + 2)


def test_lengths_and_segments_round_trip_through_save_pretrained(tiny_tokenizer, tmp_path):
    processor = MGCMProcessor(
        tiny_tokenizer,
        text_source_max_lengths={"knowledge": 7, "summary": 4, "caption": 20},
        segment_sources=["summary"],
    )
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "processor_config.json").read_text())
    assert saved["text_source_max_lengths"] == {"caption": 20, "knowledge": 7, "summary": 4}
    assert saved["segment_sources"] == ["summary"]
    assert "max_caption_length" not in saved and "caption_as_text_segment" not in saved

    loaded = MGCMProcessor.from_pretrained(tmp_path)
    assert loaded.text_source_max_lengths == processor.text_source_max_lengths
    assert loaded.segment_sources == ["summary"] and loaded.granularity_sources == ["caption", "knowledge"]
    inputs = {"text_sources": {"knowledge": [KNOWLEDGE], "summary": ["a man"]}, "captions": [KNOWLEDGE]}
    expected, actual = processor([["obama"]], **inputs), loaded([["obama"]], **inputs)
    assert set(actual) == set(expected)
    for name, value in expected.items():
        assert torch.equal(actual[name], value), name


def test_an_old_processor_config_loads_its_caption_length_and_segment(tiny_tokenizer, tmp_path):
    MGCMProcessor(tiny_tokenizer).save_pretrained(tmp_path)

    def to_legacy(data: dict) -> None:
        del data["text_source_max_lengths"], data["segment_sources"]
        data.update(max_caption_length=20, caption_as_text_segment=True)

    edit_json(tmp_path / "processor_config.json", to_legacy)
    loaded = MGCMProcessor.from_pretrained(tmp_path)
    assert loaded.text_source_max_lengths == {"caption": 20}
    assert loaded.segment_sources == ["caption"]
    assert (loaded.max_caption_length, loaded.caption_as_text_segment) == (20, True)


def test_preprocess_corpus_writes_knowledge_rows_that_pad_into_model_inputs(tiny_tokenizer):
    processor = MGCMProcessor(tiny_tokenizer, text_source_max_lengths={"knowledge": 6})
    corpus = datasets.Dataset.from_dict(
        {
            "id": ["1", "2"],
            "tokens": [["obama", "in", "paris"], ["london"]],
            "ner_tags": [[1, 0, 3], [3]],
            "knowledge": [KNOWLEDGE, ""],
        }
    )
    rows = preprocess_corpus(processor, corpus)
    assert "knowledge_input_ids" in rows.column_names and "caption_input_ids" not in rows.column_names
    pieces = piece_ids(tiny_tokenizer, KNOWLEDGE)
    assert rows["knowledge_input_ids"] == [[CLS, *pieces[:4], SEP], []]

    batch = processor.pad_windows([rows[index] for index in range(len(rows))])
    assert batch["knowledge_input_ids"].tolist() == [[CLS, *pieces[:4], SEP], [0] * 6]
    assert batch["knowledge_attention_mask"].tolist() == [[1] * 6, [0] * 6]
    names = processor.model_input_names
    assert {"knowledge_input_ids", "knowledge_attention_mask", "caption_input_ids"} <= set(names)


def test_the_processor_s_knowledge_reaches_the_model_s_knowledge_block(tiny_tokenizer, tiny_text_config):
    processor = MGCMProcessor(tiny_tokenizer, text_source_max_lengths={"knowledge": 16})
    model = source_model(tiny_text_config, use_image=False, use_objects=False, augmentation_mode="none")
    encoding = processor(
        [["obama", "in", "paris"], ["london"]],
        captions=["a man", "a city"],
        text_sources={"knowledge": [KNOWLEDGE, None]},
    )
    output = run(model, {name: value for name, value in encoding.items() if name not in WINDOW_INFO_KEYS})
    assert (output.gate_values["knowledge"][0] > 0).all()
    assert (output.gate_values["knowledge"][1] == 0).all()
    assert (output.gate_values["caption"][1, :1] > 0).all()


@pytest.mark.parametrize("name", ["image", "objects"])
def test_the_processor_refuses_the_source_names_the_config_refuses(tiny_tokenizer, name):
    with pytest.raises(ValueError, match=name):
        MGCMProcessor(tiny_tokenizer, text_source_max_lengths={name: 5})


# ----------------------------------------------------------------------------------------------------------
# Corpus


KNOWLEDGE_FILE = (
    "101.jpg :Barack Obama is the 44th president\n103.jpg :London is a city\n999.jpg :not in corpus\n"
)


def test_the_loader_adds_a_column_per_text_source_empty_where_a_tweet_has_none(corpus_dir, tmp_path):
    knowledge = write_file(tmp_path / "knowledge.txt", KNOWLEDGE_FILE)
    captions = write_file(tmp_path / "captions.txt", "102.jpg :a trophy\n")
    corpus = load_tweet_corpus(corpus_dir, captions_file=captions, text_source_files={"knowledge": knowledge})
    train = corpus["train"]
    assert train["knowledge"] == ["Barack Obama is the 44th president", "", "London is a city"]
    assert train["caption"] == ["", "a trophy", ""]
    assert train["tokens"][0] == ["RT", "@user", "Barack", "Obama", "in", "Paris"]
    assert corpus["valid"]["knowledge"] == [""]
    assert isinstance(train.features["knowledge"], datasets.Value)
    assert train.features["knowledge"].dtype == "string"


def test_a_knowledge_line_without_the_separator_is_reported_with_file_and_line(corpus_dir, tmp_path):
    knowledge = write_file(tmp_path / "knowledge.txt", "101.jpg :fine\n\n103.jpg London is a city\n")
    with pytest.raises(CorpusFormatError) as raised:
        load_tweet_corpus(corpus_dir, text_source_files={"knowledge": knowledge})
    assert (raised.value.path, raised.value.line_number) == (str(knowledge), 3)
    assert f"{knowledge}, line 3" in str(raised.value)


def test_bad_text_source_names_are_refused(corpus_dir, tmp_path):
    knowledge = write_file(tmp_path / "knowledge.txt", KNOWLEDGE_FILE)
    for name in ("Knowledge", "llm-knowledge", "2knowledge"):
        with pytest.raises(ValueError, match=f"text source name '{name}'"):
            load_tweet_corpus(corpus_dir, text_source_files={name: knowledge})
    with pytest.raises(ValueError, match="captions_file or as text_source_files"):
        load_tweet_corpus(corpus_dir, captions_file=knowledge, text_source_files={"caption": knowledge})


@pytest.mark.parametrize("name", CORPUS_COLUMNS)
def test_a_text_source_named_like_a_corpus_column_is_refused(corpus_dir, tmp_path, name):
    knowledge = write_file(tmp_path / "knowledge.txt", KNOWLEDGE_FILE)
    with pytest.raises(ValueError, match=name):
        load_tweet_corpus(corpus_dir, text_source_files={name: knowledge})
