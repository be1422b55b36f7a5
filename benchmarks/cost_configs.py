"""What `training_cost.py` measures: the configurations of `run_accuracy.sh` as MGCMConfig fields, the issue-6
target ratios, the step schedules per encoder, and the fixed seeds and sizes every measurement shares."""

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
OFFLINE_MODELS = Path(
    os.environ.get("MGCM_OFFLINE_MODELS", str(Path.home() / ".cache" / "mgcm-offline-models"))
)
DEFAULT_ENCODERS = ("all-MiniLM-L6-v2", "all-mpnet-base-v2")
URL_TOKEN = "http"
SHUFFLE_SEED = 0
MODEL_SEED = 1
IMAGE_SIZE = 224
EPOCHS_OF_THE_ACCURACY_RUNS = 5
# Pipeline batch for the inference memory peak (posts per call).
INFER_BATCH_SIZE = 32

# Per configuration: its MGCMConfig fields (the processor carries the neighbour table when augmenting).
_FULL = {"augmentation_mode": "gate", "use_word_shape": True}
CONFIGS: dict[str, dict[str, Any]] = {
    "text": {"augmentation_mode": "none", "use_word_shape": False, "text_sources": []},
    "text+shape+sa": {**_FULL, "text_sources": []},
    "full": {**_FULL, "text_sources": ["caption"], "detach_text_source_encoding": True},
    "full-caption-grad": {**_FULL, "text_sources": ["caption"], "detach_text_source_encoding": False},
    "full+knowledge": {**_FULL, "text_sources": ["caption", "knowledge"]},
    "full+knowledge-shared": {
        **_FULL,
        "text_sources": ["caption", "knowledge"],
        "share_text_source_block": True,
    },
    "full+knowledge-grad": {
        **_FULL,
        "text_sources": ["caption", "knowledge"],
        "detach_text_source_encoding": False,
    },
    "full+knowledge-cross2": {
        **_FULL,
        "text_sources": ["caption", "knowledge"],
        "num_cross_attention_layers": 2,
    },
    "full+knowledge-concat": {**_FULL, "text_sources": ["caption"]},
    "text+knowledge-concat": {"augmentation_mode": "none", "use_word_shape": False, "text_sources": []},
}
# The configurations that append the knowledge to the tweet as a text segment instead.
KNOWLEDGE_AS_SEGMENT = ("full+knowledge-concat", "text+knowledge-concat")
KNOWLEDGE_LENGTH = 200
BASELINE = "text"
FULL = "full"
# Issue 6: the overhead over `text` with the caption granularity, and without it.
TARGET_RATIO_WITH_CAPTION = 1.4
TARGET_RATIO_WITHOUT_CAPTION = 1.25
TARGET_RATIOS = {
    "text+shape+sa": TARGET_RATIO_WITHOUT_CAPTION,
    "full": TARGET_RATIO_WITH_CAPTION,
    "full-caption-grad": TARGET_RATIO_WITH_CAPTION,
}


@dataclass(frozen=True)
class Schedule:
    """Steps per configuration: `warmup` discarded, then `rounds` rounds of `steps_per_round` timed."""

    warmup: int
    rounds: int
    steps_per_round: int

    @property
    def timed_steps(self) -> int:
        return self.rounds * self.steps_per_round

    @property
    def total_steps(self) -> int:
        return self.warmup + self.timed_steps


# An mpnet step takes 5-8x a MiniLM one: fewer steps keep the default run within 25 minutes on 2 shared cores.
DEFAULT_SCHEDULES = {
    "all-MiniLM-L6-v2": Schedule(warmup=3, rounds=10, steps_per_round=4),
    "all-mpnet-base-v2": Schedule(warmup=1, rounds=6, steps_per_round=2),
}
DEFAULT_RSS_TRAIN_STEPS = {"all-MiniLM-L6-v2": 10, "all-mpnet-base-v2": 4}


__all__ = [
    "BASELINE",
    "CONFIGS",
    "DEFAULT_ENCODERS",
    "DEFAULT_RSS_TRAIN_STEPS",
    "DEFAULT_SCHEDULES",
    "EPOCHS_OF_THE_ACCURACY_RUNS",
    "FULL",
    "IMAGE_SIZE",
    "INFER_BATCH_SIZE",
    "KNOWLEDGE_AS_SEGMENT",
    "KNOWLEDGE_LENGTH",
    "MODEL_SEED",
    "OFFLINE_MODELS",
    "PROJECT_ROOT",
    "SHUFFLE_SEED",
    "TARGET_RATIOS",
    "TARGET_RATIO_WITHOUT_CAPTION",
    "TARGET_RATIO_WITH_CAPTION",
    "URL_TOKEN",
    "Schedule",
]
