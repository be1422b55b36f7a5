"""Small randomly initialised backbones for the offline quickstart and for tests (no hub needed).

The quickstart trains MGCM on the synthetic corpus from scratch: a WordPiece tokenizer whose vocabulary
is the corpus's own words (plus characters, so no word maps to [UNK]), a 2-layer BERT of width 64, a
2-stage ResNet and a matching image processor.
"""

import hashlib
import string
from collections.abc import Iterable

import torch
from transformers import BertConfig, BertTokenizer, ResNetConfig, ViTImageProcessorPil

SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def build_corpus_tokenizer(words: Iterable[str], lowercase: bool = False) -> BertTokenizer:
    """A WordPiece tokenizer whose vocabulary holds every corpus word whole, plus single characters."""
    characters = string.ascii_letters + string.digits + string.punctuation
    vocabulary = (
        list(SPECIAL_TOKENS) + list(characters) + ["##" + c for c in string.ascii_letters + string.digits]
    )
    for word in words:
        vocabulary.append(word.lower() if lowercase else word)
    token_ids = {token: index for index, token in enumerate(dict.fromkeys(vocabulary))}
    return BertTokenizer(vocab=token_ids, do_lower_case=lowercase, model_max_length=512)


def tiny_text_config(vocab_size: int, hidden_size: int = 64, num_layers: int = 2) -> BertConfig:
    """A small BERT config (`hidden_size` wide, `num_layers` deep, 2 heads)."""
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=512,
    )


def tiny_vision_config() -> ResNetConfig:
    """A 2-stage basic-block ResNet: a 64x64 image gives an 8x8 grid of 32-d region features."""
    return ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic")


def tiny_image_processor(image_size: int = 64) -> ViTImageProcessorPil:
    """Resizes to `image_size` square and normalises with ImageNet statistics."""
    return ViTImageProcessorPil(
        size={"height": image_size, "width": image_size},
        image_mean=[0.485, 0.456, 0.406],
        image_std=[0.229, 0.224, 0.225],
    )


def save_tiny_mgcm(
    folder, max_length: int = 128, stride: int = 16, text_source_max_lengths: dict[str, int] | None = None
):
    """Save an untrained full-featured MGCM and its processor into `folder`, as `examples/train.py` does.

    Every granularity is on (image, objects, caption, and a text source per entry of
    `text_source_max_lengths`, e.g. `{"knowledge": 24}`), with gated semantic augmentation over a small
    random neighbour table and the word-shape feature; for tests and benchmarks. Returns `folder`.
    """
    import numpy as np

    from modeling_mgcm import MGCMConfig, MGCMForTokenClassification
    from modeling_mgcm.processing_mgcm import MGCMProcessor
    from processing.corpus.labels import LABEL_NAMES
    from processing.corpus.synthetic import SYNTHETIC_OBJECT_LABELS
    from processing.text.neighbour_search import neighbour_table_from_embeddings

    words = ["Jordan", "Phoenix", "Obama", "Paris", "visits", "the", "in", "at", "with", "photo", "person"]
    tokenizer = build_corpus_tokenizer(words)
    vectors = np.random.default_rng(0).normal(size=(len(words), 8))
    table = neighbour_table_from_embeddings([word.lower() for word in words], vectors, k=2)
    config = MGCMConfig(
        text_config=tiny_text_config(len(tokenizer), hidden_size=32),
        vision_config=tiny_vision_config(),
        use_image=True,
        use_objects=True,
        text_sources=list(dict.fromkeys(["caption", *(text_source_max_lengths or {})])),
        object_labels=list(SYNTHETIC_OBJECT_LABELS),
        augmentation_mode="gate",
        augmentation_dim=table.dim,
        num_neighbours=table.k,
        use_word_shape=True,
        id2label=dict(enumerate(LABEL_NAMES)),
        label2id={label: index for index, label in enumerate(LABEL_NAMES)},
    )
    torch.manual_seed(0)
    MGCMForTokenClassification(config).save_pretrained(folder)
    processor = MGCMProcessor(
        tokenizer=tokenizer,
        image_processor=tiny_image_processor(),
        neighbour_table=table,
        object_labels=list(SYNTHETIC_OBJECT_LABELS),
        max_length=max_length,
        stride=stride,
        text_source_max_lengths=text_source_max_lengths,
    )
    processor.save_pretrained(folder)
    return folder


def weights_fingerprint(module: torch.nn.Module) -> str:
    """A short digest of a module's parameters, to key caches of features computed with random weights."""
    digest = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


__all__ = [
    "build_corpus_tokenizer",
    "save_tiny_mgcm",
    "tiny_image_processor",
    "tiny_text_config",
    "tiny_vision_config",
    "weights_fingerprint",
]
