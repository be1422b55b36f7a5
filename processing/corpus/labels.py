"""The tag set shared by the corpora, the metrics and the model: BIO over PER, LOC, ORG and MISC."""

from collections.abc import Sequence

from modeling_mgcm.configuration_mgcm import MGCM_LABEL_NAMES

# The model's tag set, as a list (the type of a `datasets.ClassLabel`'s names); the entity types are the ones
# its B- tags name.
LABEL_NAMES = list(MGCM_LABEL_NAMES)
ENTITY_TYPES = tuple(name.removeprefix("B-") for name in LABEL_NAMES if name.startswith("B-"))
LABEL_TO_ID = {name: index for index, name in enumerate(LABEL_NAMES)}
ID_TO_LABEL = dict(enumerate(LABEL_NAMES))

# Twitter-2015 calls the fourth type OTHER; Twitter-2017 and the published results call it MISC.
TAG_ALIASES = {"B-OTHER": "B-MISC", "I-OTHER": "I-MISC"}


def normalise_tag(tag: str) -> str:
    """Map a corpus tag to its name in `LABEL_NAMES` (OTHER becomes MISC); raise `KeyError` if unknown."""
    tag = TAG_ALIASES.get(tag, tag)
    if tag not in LABEL_TO_ID:
        raise KeyError(tag)
    return tag


def repair_bio_tags(tags: Sequence[str]) -> list[str]:
    """Turn every I- tag that opens an entity into B- (conlleval's notion of an entity start).

    An I- tag opens an entity when it follows O, starts the sequence, or follows a tag of another type.
    Lenient scoring already reads such a tag as a start, so repairing never changes lenient scores;
    it makes strict (IOB2) scoring and B-tag counts agree with them.
    """
    repaired = []
    previous_type = None
    for tag in tags:
        if tag.startswith("I-") and tag[2:] != previous_type:
            tag = "B-" + tag[2:]
        repaired.append(tag)
        previous_type = None if tag == "O" else tag[2:]
    return repaired


__all__ = [
    "ENTITY_TYPES",
    "ID_TO_LABEL",
    "LABEL_NAMES",
    "LABEL_TO_ID",
    "TAG_ALIASES",
    "normalise_tag",
    "repair_bio_tags",
]
