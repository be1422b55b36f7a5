"""Shared fixtures: tiny randomly initialised backbones that tests build themselves (no hub access), the
pipeline over a tiny MGCM, a small corpus folder, and torch on one thread.

Plain helpers that tests import live beside this file: `mgcm_batches` (hand-built model inputs),
`tiny_corpora` (corpus files and splits), `tiny_text_generation` (a tiny text-generation pipeline),
`training_runs` (running examples/train.py) and `clean_process` (a process without this project).
"""

import os
import string

import pytest
import torch
from tiny_corpora import TRAIN_TEXT, write_file
from transformers import BertConfig, BertModel, BertTokenizer, ResNetConfig, pipeline

# Tests never reach a hub: fail fast instead of waiting on a network that is not there.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TINY_WORDS = ["the", "in", "at", "of", "and", "to", "is", "rt", "http", "co", "obama", "paris", "london"]


def tiny_vocab() -> dict[str, int]:
    """A WordPiece vocabulary that can spell any lower-case ASCII word, so nothing maps to [UNK] needlessly."""
    characters = list(string.ascii_lowercase + string.digits + string.punctuation)
    continuations = ["##" + c for c in string.ascii_lowercase + string.digits]
    tokens = SPECIAL_TOKENS + characters + continuations + TINY_WORDS
    return {token: index for index, token in enumerate(dict.fromkeys(tokens))}


@pytest.fixture(scope="session")
def tiny_tokenizer() -> BertTokenizer:
    """An uncased WordPiece tokenizer over `tiny_vocab()`."""
    return BertTokenizer(vocab=tiny_vocab(), do_lower_case=True)


@pytest.fixture(scope="session")
def tiny_text_config(tiny_tokenizer) -> BertConfig:
    """A 2-layer, 32-wide BERT config sized to the tiny vocabulary."""
    return BertConfig(
        vocab_size=len(tiny_tokenizer),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=512,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )


@pytest.fixture(scope="session")
def tiny_resnet_config() -> ResNetConfig:
    """A 2-stage ResNet with 16 output channels: a 64x64 image gives an 8x8 grid of 16-d regions."""
    return ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], layer_type="basic")


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory, tiny_tokenizer, tiny_text_config):
    """A folder holding a tiny random BertModel and its tokenizer, as `save_pretrained` writes them."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    torch.manual_seed(0)
    BertModel(tiny_text_config).save_pretrained(folder)
    tiny_tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_mgcm_dir(tmp_path_factory):
    """A saved, untrained, full-featured MGCM folder: model (image, objects, caption, gated semantic
    augmentation, word shape) and its processor (tokenizer, image processor, neighbour table, object labels),
    as `examples/train.py` writes it. Load it with the Auto classes."""
    from processing.testing.tiny_backbones import save_tiny_mgcm

    return save_tiny_mgcm(tmp_path_factory.mktemp("tiny-mgcm"), max_length=32, stride=4)


@pytest.fixture(scope="module")
def tagger(tiny_mgcm_dir):
    """The "multimodal-ner" pipeline over `tiny_mgcm_dir`, on the CPU."""
    import modeling_mgcm  # noqa: F401  (registers the pipeline task)

    return pipeline("multimodal-ner", model=str(tiny_mgcm_dir), device="cpu")


@pytest.fixture(scope="module")
def single_thread():
    """Torch on one thread, from the first test of a module that asks to the module's end. Tiny models run
    fastest so on a shared CPU, where two threads can wait on each other (a hundred times slower in
    test_modeling_mgcm), and float sums run in the order of a one-thread clean process."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def counted_searches(monkeypatch):
    """Counts the nearest-neighbour searches that `build_neighbour_table` runs."""
    from processing.text import neighbour_search

    calls = []
    search = neighbour_search._nearest_neighbours

    def counting_search(*args, **kwargs):
        calls.append(args)
        return search(*args, **kwargs)

    monkeypatch.setattr(neighbour_search, "_nearest_neighbours", counting_search)
    return calls


@pytest.fixture
def corpus_dir(tmp_path):
    """A corpus folder: tweets 101, 102 and 103 (`tiny_corpora.TRAIN_TEXT`) in train.txt, 201 in valid.txt."""
    folder = tmp_path / "corpus"
    write_file(folder / "train.txt", TRAIN_TEXT)
    write_file(folder / "valid.txt", "IMGID:201\nNASA\tB-ORG\nlaunch\tO\n")
    return folder
