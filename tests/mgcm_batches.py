"""Hand-built MGCM inputs for tests of the model: tiny configs and models over precomputed 12-d image
features, random tweets (`Example`) and the padded batches the processor would give for them."""

import copy
from dataclasses import dataclass, field

import torch

from modeling_mgcm import MGCMConfig, MGCMForTokenClassification

OBJECT_LABELS = ["person", "dog", "car", "tree"]
OBJECT_PADDING_ID = len(OBJECT_LABELS)
FEATURE_DIM, REGIONS = 12, 4
VECTOR_DIM, NEIGHBOURS = 6, 3
CLS, SEP, PAD = 2, 3, 0
GRANULARITY_KEYS = {
    "image": ("image_features", "image_mask"),
    "objects": ("object_ids", "object_mask"),
    "caption": ("caption_input_ids", "caption_attention_mask"),
}


def mgcm_config(text_config, **overrides) -> MGCMConfig:
    """Every granularity, gated augmentation and word shape on, precomputed 12-d image features."""
    settings = dict(
        # A copy: the config sets the attention implementation on its sub-configs, and this one is shared.
        text_config=copy.deepcopy(text_config),
        vision_config=None,
        image_feature_dim=FEATURE_DIM,
        use_caption=True,
        object_labels=OBJECT_LABELS,
        max_objects=3,
        augmentation_dim=VECTOR_DIM,
        num_neighbours=NEIGHBOURS,
        use_word_shape=True,
    )
    settings.update(overrides)
    return MGCMConfig(**settings)


def tiny_model(text_config, seed: int = 0, **overrides) -> MGCMForTokenClassification:
    torch.manual_seed(seed)
    return MGCMForTokenClassification(mgcm_config(text_config, **overrides)).eval()


@dataclass
class Example:
    """One tweet with its inputs, unpadded."""

    word_pieces: list[list[int]]
    labels: list[int]
    shapes: list[int]
    neighbour_vectors: torch.Tensor
    neighbour_weights: torch.Tensor
    image_features: torch.Tensor | None = None
    object_ids: list[int] = field(default_factory=list)
    caption_ids: list[int] = field(default_factory=list)


def random_example(
    seed: int,
    num_words: int,
    image: bool = True,
    objects: bool = True,
    caption: bool = True,
    vocab_size: int = 60,
) -> Example:
    generator = torch.Generator().manual_seed(seed)

    def ints(low: int, high: int, size: int) -> list[int]:
        return torch.randint(low, high, (size,), generator=generator).tolist()

    pieces_per_word = ints(1, 4, num_words)
    weights = torch.rand(num_words, NEIGHBOURS, generator=generator)
    weights[0] = 0.0  # an out-of-vocabulary word
    return Example(
        word_pieces=[ints(5, vocab_size, count) for count in pieces_per_word],
        labels=ints(0, 9, num_words),
        shapes=ints(1, 12, num_words),
        neighbour_vectors=torch.randn(num_words, NEIGHBOURS, VECTOR_DIM, generator=generator),
        neighbour_weights=weights / weights.sum(-1, keepdim=True).clamp(min=1e-6),
        image_features=torch.randn(REGIONS, FEATURE_DIM, generator=generator).relu() if image else None,
        object_ids=ints(0, len(OBJECT_LABELS), int(ints(1, 4, 1)[0])) if objects else [],
        caption_ids=[CLS] + ints(5, vocab_size, int(ints(2, 6, 1)[0])) + [SEP] if caption else [],
    )


def build_batch(
    examples: list[Example],
    extra_pieces: int = 0,
    extra_words: int = 0,
    extra_caption: int = 0,
    absent_filler: float = 0.0,
    without: tuple[str, ...] = (),
) -> dict[str, torch.Tensor]:
    """Pad examples into model inputs; `without` drops a granularity's inputs from the whole batch."""
    batch_size = len(examples)
    num_pieces = max(sum(len(p) for p in ex.word_pieces) for ex in examples) + 2 + extra_pieces
    num_words = max(len(ex.word_pieces) for ex in examples) + extra_words
    caption_length = max(1, max(len(ex.caption_ids) for ex in examples)) + extra_caption
    batch = {
        "input_ids": torch.full((batch_size, num_pieces), PAD),
        "attention_mask": torch.zeros(batch_size, num_pieces, dtype=torch.long),
        "word_ids": torch.full((batch_size, num_pieces), -1),
        "word_mask": torch.zeros(batch_size, num_words, dtype=torch.long),
        "word_shape_ids": torch.zeros(batch_size, num_words, dtype=torch.long),
        "neighbour_vectors": torch.zeros(batch_size, num_words, NEIGHBOURS, VECTOR_DIM),
        "neighbour_weights": torch.zeros(batch_size, num_words, NEIGHBOURS),
        "labels": torch.full((batch_size, num_words), -100),
        "image_features": torch.full((batch_size, REGIONS, FEATURE_DIM), absent_filler),
        "image_mask": torch.zeros(batch_size, dtype=torch.long),
        "object_ids": torch.full((batch_size, 3), OBJECT_PADDING_ID),
        "object_mask": torch.zeros(batch_size, 3, dtype=torch.long),
        "caption_input_ids": torch.full((batch_size, caption_length), PAD),
        "caption_attention_mask": torch.zeros(batch_size, caption_length, dtype=torch.long),
    }
    for row, ex in enumerate(examples):
        pieces = [CLS] + [piece for word in ex.word_pieces for piece in word] + [SEP]
        word_of_piece = [-1] + [index for index, word in enumerate(ex.word_pieces) for _ in word] + [-1]
        batch["input_ids"][row, : len(pieces)] = torch.tensor(pieces)
        batch["attention_mask"][row, : len(pieces)] = 1
        batch["word_ids"][row, : len(pieces)] = torch.tensor(word_of_piece)
        words = len(ex.word_pieces)
        batch["word_mask"][row, :words] = 1
        batch["word_shape_ids"][row, :words] = torch.tensor(ex.shapes)
        batch["neighbour_vectors"][row, :words] = ex.neighbour_vectors
        batch["neighbour_weights"][row, :words] = ex.neighbour_weights
        batch["labels"][row, :words] = torch.tensor(ex.labels)
        if ex.image_features is not None:
            batch["image_features"][row] = ex.image_features
            batch["image_mask"][row] = 1
        if ex.object_ids:
            batch["object_ids"][row, : len(ex.object_ids)] = torch.tensor(ex.object_ids)
            batch["object_mask"][row, : len(ex.object_ids)] = 1
        if ex.caption_ids:
            batch["caption_input_ids"][row, : len(ex.caption_ids)] = torch.tensor(ex.caption_ids)
            batch["caption_attention_mask"][row, : len(ex.caption_ids)] = 1
    for granularity in without:
        for key in GRANULARITY_KEYS[granularity]:
            del batch[key]
    return batch


def three_examples(**absent) -> list[Example]:
    """Three tweets of 5, 3 and 6 words; `absent={'image': 1}` takes example 1's image away."""
    sizes = (5, 3, 6)
    examples = []
    for index, size in enumerate(sizes):
        present = {name: absent.get(name) != index for name in GRANULARITY_KEYS}
        examples.append(random_example(index, size, **present))
    return examples


def run(model, batch, **kwargs):
    inputs = {key: value for key, value in batch.items() if key != "labels"}
    with torch.no_grad():
        return model(**inputs, **kwargs)
