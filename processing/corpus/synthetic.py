"""A synthetic multimodal tweet corpus in which only the image decides the type of the ambiguous mentions.

How it is built (everything drawn from a seeded generator, one stream per split):
- Every tweet with an image mentions one **ambiguous name** from `SYNTHETIC_AMBIGUOUS_NAMES` ("Jordan",
  "Sierra Nevada", ...). Its type is the tweet's image type, drawn so that each name takes the four types
  equally often (per name, types come in shuffled blocks of four): the words say nothing about it.
- The image (`image_size` square, PNG bytes) is grey with small grey distractor squares and one large
  block whose colour says the type (`SYNTHETIC_TYPE_COLOURS`: PER red, LOC green, ORG blue, MISC yellow).
  The image is always right.
- The caption says the type in one word (`SYNTHETIC_CAPTION_WORDS`: person, landscape, storefront,
  poster), and the objects hold one type-specific label (`SYNTHETIC_TYPE_OBJECTS`: person, mountain,
  logo, trophy) among 0 to 3 neutral ones, in descending score order.
- A fraction of image tweets (`misleading_caption_fraction`, default 5%) has a caption describing another
  type, and another, disjoint fraction (`misleading_objects_fraction`, default 5%) has the object of
  another type: the image then contradicts them, and a majority of image, caption and objects is always
  right.
- A fraction of tweets (`missing_image_fraction`, default 15%) has no image, hence no caption and no
  objects. These tweets mention no ambiguous name: their names come from type-specific pools
  (`SYNTHETIC_UNAMBIGUOUS_NAMES`), so the text alone decides them.
- Any tweet may also mention one name from a type-specific pool, so a text-only model has entities to learn.

A text-only reader that picks the most frequent type per name is right about one time in four on the
ambiguous mentions; one that reads the image colour is always right.
"""

import io
from collections.abc import Sequence

import numpy as np
from datasets import Dataset, DatasetDict
from PIL import Image as PILImage

from processing.corpus.labels import ENTITY_TYPES, LABEL_TO_ID
from processing.corpus.schema import corpus_features
from processing.evaluation.metrics import as_tag_names, entity_spans, score_entity_spans

SYNTHETIC_AMBIGUOUS_NAMES = (
    ("Jordan",),
    ("Phoenix",),
    ("Madison",),
    ("Georgia",),
    ("Chelsea",),
    ("Austin",),
    ("Victoria",),
    ("Jackson",),
    ("Mercury",),
    ("Orion",),
    ("Sierra", "Nevada"),
    ("Blue", "Ridge"),
)
SYNTHETIC_UNAMBIGUOUS_NAMES = {
    "PER": (
        ("Barack", "Obama"),
        ("Taylor", "Swift"),
        ("Lionel", "Messi"),
        ("Serena", "Williams"),
        ("Adele",),
    ),
    "LOC": (("London",), ("New", "York"), ("Tokyo",), ("Texas",), ("Nairobi",)),
    "ORG": (("NASA",), ("Google",), ("FIFA",), ("Red", "Cross"), ("BBC",)),
    "MISC": (("Christmas",), ("Olympics",), ("iPhone",), ("Super", "Bowl"), ("Coachella",)),
}
SYNTHETIC_TYPE_COLOURS = {
    "PER": (220, 40, 40),
    "LOC": (40, 170, 60),
    "ORG": (40, 80, 220),
    "MISC": (235, 200, 30),
}
SYNTHETIC_CAPTION_WORDS = {"PER": "person", "LOC": "landscape", "ORG": "storefront", "MISC": "poster"}
SYNTHETIC_TYPE_OBJECTS = {"PER": "person", "LOC": "mountain", "ORG": "logo", "MISC": "trophy"}
SYNTHETIC_NEUTRAL_OBJECTS = ("car", "dog", "chair", "cup", "bottle", "umbrella")
# The detector vocabulary of the synthetic objects, e.g. for `MGCMConfig.object_labels`.
SYNTHETIC_OBJECT_LABELS = tuple(SYNTHETIC_TYPE_OBJECTS.values()) + SYNTHETIC_NEUTRAL_OBJECTS

# Type-neutral phrasings: each is used with every type equally often, so the context carries no type cue.
_MENTION_TEMPLATES = (
    "{} is all over my timeline today",
    "can not believe what {} just did",
    "new photos of {} are out",
    "everyone is talking about {} again",
    "look at {} this morning",
    "so proud of {} right now",
    "{} trending worldwide !",
    "big news about {} tonight",
)
_SECOND_MENTION_TEMPLATES = ("and {} too", "while {} waits", ", also {} .", "- {} has seen it")
_CAPTION_OPENERS = ("a photo of a", "a picture of a", "an image showing a", "a close up of a")
_CAPTION_CLOSERS = ("", "at night", "on a sunny day", "with a plain background", "in the city")
_HASHTAGS = ("#news", "#photo", "#tbt", "#love", "#live")
_URL_CHARACTERS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _name_tags(name: Sequence[str], entity_type: str) -> list[int]:
    return [LABEL_TO_ID["B-" + entity_type]] + [LABEL_TO_ID["I-" + entity_type]] * (len(name) - 1)


def _fill_template(
    template: str, name: Sequence[str], entity_type: str, tokens: list[str], tags: list[int]
) -> None:
    """Append the template's words to `tokens` (tags O) with `name` (tags of `entity_type`) at `{}`."""
    for word in template.split():
        if word == "{}":
            tokens.extend(name)
            tags.extend(_name_tags(name, entity_type))
        else:
            tokens.append(word)
            tags.append(LABEL_TO_ID["O"])


def _draw_image(rng: np.random.Generator, entity_type: str, size: int) -> bytes:
    """A PNG: grey background, grey distractor squares and a block of the type colour, 3/4 of the side."""
    background = int(rng.integers(90, 171))
    pixels = np.full((size, size, 3), background, dtype=np.int16)
    block = max(1, round(0.75 * size))
    top, left = rng.integers(0, size - block + 1, size=2)
    pixels[top : top + block, left : left + block] = SYNTHETIC_TYPE_COLOURS[entity_type]
    # Grey distractors have no hue, so they never look like a type colour.
    for _ in range(int(rng.integers(2, 5))):
        side = int(rng.integers(max(1, size // 10), max(2, size // 5) + 1))
        y, x = rng.integers(0, size - side + 1, size=2)
        pixels[y : y + side, x : x + side] = int(rng.integers(0, 256))
    pixels += rng.integers(-12, 13, size=pixels.shape, dtype=np.int16)
    buffer = io.BytesIO()
    PILImage.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _caption(rng: np.random.Generator, entity_type: str) -> str:
    opener = _CAPTION_OPENERS[rng.integers(len(_CAPTION_OPENERS))]
    closer = _CAPTION_CLOSERS[rng.integers(len(_CAPTION_CLOSERS))]
    return f"{opener} {SYNTHETIC_CAPTION_WORDS[entity_type]} {closer}".strip()


def _objects(rng: np.random.Generator, entity_type: str) -> list[dict]:
    detections = [
        {"label": SYNTHETIC_TYPE_OBJECTS[entity_type], "score": round(float(rng.uniform(0.75, 0.99)), 2)}
    ]
    for index in rng.choice(len(SYNTHETIC_NEUTRAL_OBJECTS), size=int(rng.integers(0, 4)), replace=False):
        detections.append(
            {"label": SYNTHETIC_NEUTRAL_OBJECTS[index], "score": round(float(rng.uniform(0.3, 0.95)), 2)}
        )
    return sorted(detections, key=lambda detection: -detection["score"])


def _other_type(rng: np.random.Generator, entity_type: str) -> str:
    others = [other for other in ENTITY_TYPES if other != entity_type]
    return others[rng.integers(len(others))]


def _unambiguous_name(rng: np.random.Generator) -> tuple[tuple[str, ...], str]:
    entity_type = ENTITY_TYPES[rng.integers(len(ENTITY_TYPES))]
    pool = SYNTHETIC_UNAMBIGUOUS_NAMES[entity_type]
    return pool[rng.integers(len(pool))], entity_type


def _make_split(
    split: str,
    size: int,
    rng: np.random.Generator,
    image_size: int,
    missing_image_fraction: float,
    misleading_caption_fraction: float,
    misleading_objects_fraction: float,
) -> Dataset:
    missing = round(missing_image_fraction * size)
    misleading_captions = round(misleading_caption_fraction * (size - missing))
    misleading_objects = round(misleading_objects_fraction * (size - missing))
    # Exact counts, spread at random: a small split still has every kind of tweet in the stated fractions.
    kinds = ["no_image"] * missing + ["misleading_caption"] * misleading_captions
    kinds += ["misleading_objects"] * misleading_objects
    kinds += ["faithful"] * (size - len(kinds))
    kinds = [kinds[index] for index in rng.permutation(size)]
    pending_types: dict[int, list[str]] = {index: [] for index in range(len(SYNTHETIC_AMBIGUOUS_NAMES))}
    columns: dict[str, list] = {
        name: [] for name in ("id", "tokens", "ner_tags", "image", "caption", "objects")
    }
    for index, kind in enumerate(kinds):
        tokens: list[str] = []
        tags: list[int] = []
        if rng.random() < 0.3:
            tokens += ["RT", f"@user{rng.integers(1000)}", ":"]
            tags += [LABEL_TO_ID["O"]] * 3
        template = _MENTION_TEMPLATES[rng.integers(len(_MENTION_TEMPLATES))]
        if kind == "no_image":
            name, entity_type = _unambiguous_name(rng)
            image, caption, objects = None, "", []
        else:
            name_index = int(rng.integers(len(SYNTHETIC_AMBIGUOUS_NAMES)))
            if not pending_types[name_index]:
                pending_types[name_index] = [ENTITY_TYPES[i] for i in rng.permutation(len(ENTITY_TYPES))]
            entity_type = pending_types[name_index].pop()
            name = SYNTHETIC_AMBIGUOUS_NAMES[name_index]
            image = {"bytes": _draw_image(rng, entity_type, image_size), "path": None}
            caption_type = _other_type(rng, entity_type) if kind == "misleading_caption" else entity_type
            objects_type = _other_type(rng, entity_type) if kind == "misleading_objects" else entity_type
            caption, objects = _caption(rng, caption_type), _objects(rng, objects_type)
        _fill_template(template, name, entity_type, tokens, tags)
        if rng.random() < 0.5:
            second_name, second_type = _unambiguous_name(rng)
            while second_name == name:
                second_name, second_type = _unambiguous_name(rng)
            second_template = _SECOND_MENTION_TEMPLATES[rng.integers(len(_SECOND_MENTION_TEMPLATES))]
            _fill_template(second_template, second_name, second_type, tokens, tags)
        if rng.random() < 0.4:
            tokens.append(_HASHTAGS[rng.integers(len(_HASHTAGS))])
            tags.append(LABEL_TO_ID["O"])
        if rng.random() < 0.6:
            tokens.append("http://t.co/" + "".join(rng.choice(list(_URL_CHARACTERS), size=10)))
            tags.append(LABEL_TO_ID["O"])
        columns["id"].append(f"synthetic_{split}_{index:05d}")
        columns["tokens"].append(tokens)
        columns["ner_tags"].append(tags)
        columns["image"].append(image)
        columns["caption"].append(caption)
        columns["objects"].append(objects)
    return Dataset.from_dict(columns, features=corpus_features(), split=split)


def make_synthetic_corpus(
    n_train: int,
    n_valid: int,
    n_test: int,
    seed: int = 0,
    image_size: int = 64,
    missing_image_fraction: float = 0.15,
    misleading_caption_fraction: float = 0.05,
    misleading_objects_fraction: float = 0.05,
) -> DatasetDict:
    """A deterministic DatasetDict with the features of the real corpora (see the module docstring).

    Each split has its own random stream, so a split does not change when another split's size does.
    Misleading fractions are of the tweets with an image; caption and objects are never both misleading.
    """
    sizes = {"train": n_train, "valid": n_valid, "test": n_test}
    for split, size in sizes.items():
        if not isinstance(size, int) or size < 0:
            raise ValueError(f"n_{split} must be a non-negative int, got {size!r}")
    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an int of at least 8 pixels, got {image_size!r}")
    fractions = {
        "missing_image_fraction": missing_image_fraction,
        "misleading_caption_fraction": misleading_caption_fraction,
        "misleading_objects_fraction": misleading_objects_fraction,
    }
    for name, fraction in fractions.items():
        if not 0 <= fraction <= 1:
            raise ValueError(f"{name} must be in [0, 1], got {fraction!r}")
    if misleading_caption_fraction + misleading_objects_fraction > 1:
        raise ValueError("misleading_caption_fraction + misleading_objects_fraction must not exceed 1")
    return DatasetDict(
        {
            split: _make_split(
                split,
                size,
                np.random.default_rng([seed, split_index]),
                image_size,
                missing_image_fraction,
                misleading_caption_fraction,
                misleading_objects_fraction,
            )
            for split_index, (split, size) in enumerate(sizes.items())
        }
    )


def ambiguous_mention_spans(tokens: Sequence[str]) -> set[tuple[int, int]]:
    """(start, end) word spans, `end` exclusive, where a name of `SYNTHETIC_AMBIGUOUS_NAMES` occurs."""
    spans = set()
    for name in SYNTHETIC_AMBIGUOUS_NAMES:
        for start in range(len(tokens) - len(name) + 1):
            if tuple(tokens[start : start + len(name)]) == name:
                spans.add((start, start + len(name)))
    return spans


def score_ambiguous_mentions(
    tokens_per_tweet: Sequence[Sequence[str]],
    gold_tags: Sequence[Sequence[str | int]],
    pred_tags: Sequence[Sequence[str | int]],
    mode: str = "lenient",
) -> dict[str, float | int | dict]:
    """`ner_metrics`-style scores restricted to the mentions of ambiguous names.

    Gold entities count when their span is an ambiguous name; predicted entities count when they overlap
    one (so a prediction that runs past the name is wrong, not ignored). Tags are names or label ids.
    """
    if not len(tokens_per_tweet) == len(gold_tags) == len(pred_tags):
        raise ValueError(
            f"{len(tokens_per_tweet)} token sequences, {len(gold_tags)} gold and {len(pred_tags)} predicted ones"
        )
    gold_names, pred_names = as_tag_names(gold_tags, "gold"), as_tag_names(pred_tags, "predicted")
    gold_spans, pred_spans = [], []
    for index, (tokens, gold, pred) in enumerate(zip(tokens_per_tweet, gold_names, pred_names, strict=True)):
        if not len(tokens) == len(gold) == len(pred):
            raise ValueError(
                f"tweet {index}: {len(tokens)} tokens, {len(gold)} gold and {len(pred)} predicted tags"
            )
        ambiguous = ambiguous_mention_spans(tokens)
        gold_spans.append({span for span in entity_spans(gold, mode) if span[1:] in ambiguous})
        pred_spans.append(
            {
                span
                for span in entity_spans(pred, mode)
                if any(span[1] < end and start < span[2] for start, end in ambiguous)
            }
        )
    return score_entity_spans(gold_spans, pred_spans)


__all__ = [
    "SYNTHETIC_AMBIGUOUS_NAMES",
    "SYNTHETIC_CAPTION_WORDS",
    "SYNTHETIC_NEUTRAL_OBJECTS",
    "SYNTHETIC_OBJECT_LABELS",
    "SYNTHETIC_TYPE_COLOURS",
    "SYNTHETIC_TYPE_OBJECTS",
    "SYNTHETIC_UNAMBIGUOUS_NAMES",
    "ambiguous_mention_spans",
    "make_synthetic_corpus",
    "score_ambiguous_mentions",
]
