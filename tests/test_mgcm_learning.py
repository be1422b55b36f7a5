"""Learning, not just running: on the synthetic corpus only the image decides the type of the ambiguous
mentions ("Jordan" is a person, a place, a company or an event depending on the colour of the picture), so
a tiny MGCM that reads the image resolves them while the same model with every granularity off cannot.

The image path is the project's own: a frozen (random) tiny ResNet turns each picture into region features
once (`extract_image_features`, as the feature cache does), `MGCMProcessor` and `MGCMDataCollator` make the
batches, and the model is selected on `valid` and scored on `test` with `score_ambiguous_mentions`.
"""

import pytest
import torch
from region_features import RegionFeatureTable
from torch.utils.data import DataLoader
from transformers import ResNetModel

from modeling_mgcm import MGCMConfig, MGCMForTokenClassification
from processing import (
    MGCMDataCollator,
    MGCMProcessor,
    make_synthetic_corpus,
    merge_windows,
    score_ambiguous_mentions,
)
from processing.testing.tiny_backbones import (
    build_corpus_tokenizer,
    tiny_image_processor,
    tiny_text_config,
    tiny_vision_config,
)
from processing.training.optimizer import parameter_groups
from processing.training.window_rows import preprocess_corpus

IMAGE_SIZE = 32
MAX_EPOCHS = 12
VALID_TARGET_F1 = 0.95

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def synthetic():
    corpus = make_synthetic_corpus(800, 100, 150, seed=0, image_size=IMAGE_SIZE)
    words = sorted({word for split in corpus.values() for tweet in split["tokens"] for word in tweet})
    tokenizer = build_corpus_tokenizer(words)
    processor = MGCMProcessor(tokenizer, max_length=64)
    torch.manual_seed(0)
    vision_model = ResNetModel(tiny_vision_config()).eval()
    features = RegionFeatureTable(corpus, vision_model, tiny_image_processor(IMAGE_SIZE))
    return {
        "corpus": corpus,
        "windows": preprocess_corpus(processor, corpus),
        "processor": processor,
        "features": features,
        "vocab_size": len(tokenizer),
    }


def tiny_mgcm(synthetic, use_image: bool, seed: int = 0) -> MGCMForTokenClassification:
    text_config = tiny_text_config(synthetic["vocab_size"], hidden_size=32)
    text_config.hidden_dropout_prob = text_config.attention_probs_dropout_prob = 0.0
    config = MGCMConfig(
        text_config=text_config,
        vision_config=None,
        image_feature_dim=synthetic["features"].feature_dim if use_image else None,
        use_image=use_image,
        use_objects=False,
        use_caption=False,
        augmentation_mode="none",
        use_word_shape=True,
        hidden_dropout_prob=0.0,
        attention_dropout_prob=0.0,
        fusion_dropout_prob=0.0,
    )
    torch.manual_seed(seed)
    return MGCMForTokenClassification(config)


def ambiguous_f1(model, synthetic, split: str) -> float:
    """F1 on the ambiguous mentions of a split, every word of every tweet predicted."""
    collator = MGCMDataCollator(synthetic["processor"], synthetic["features"], return_window_info=True)
    loader = DataLoader(synthetic["windows"][split], batch_size=64, collate_fn=collator)
    predictions, tweets, offsets, word_counts = [], [], [], []
    model.eval()
    with torch.no_grad():
        for batch in loader:
            tweets += batch.pop("overflow_to_sample_mapping").tolist()
            offsets += batch.pop("window_word_offset").tolist()
            batch.pop("labels")
            predictions += model(**batch).predictions.tolist()
            word_counts += batch["word_mask"].sum(dim=1).tolist()
    tweets_of_split = synthetic["corpus"][split]
    merged = merge_windows(
        predictions, tweets, offsets, word_counts, num_words=[len(t) for t in tweets_of_split["tokens"]]
    )
    scores = score_ambiguous_mentions(tweets_of_split["tokens"], tweets_of_split["ner_tags"], merged)
    return scores["overall_f1"]


def train(model, synthetic, max_epochs: int, stop_at_valid_f1: float | None = None) -> int:
    """AdamW with the model's parameter groups and gradient clipping; returns the epochs run (stopping once
    the valid score is good)."""
    optimizer = torch.optim.AdamW(
        parameter_groups(model, lr=2e-3, crf_lr=1e-2, weight_decay=0.01), foreach=True
    )
    loader = DataLoader(
        synthetic["windows"]["train"],
        batch_size=16,
        shuffle=True,
        collate_fn=MGCMDataCollator(synthetic["processor"], synthetic["features"]),
        generator=torch.Generator().manual_seed(0),
    )
    for epoch in range(1, max_epochs + 1):
        model.train()
        for batch in loader:
            loss = model(**batch).loss
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
        if stop_at_valid_f1 is not None and ambiguous_f1(model, synthetic, "valid") >= stop_at_valid_f1:
            return epoch
    return max_epochs


def test_reading_the_image_resolves_ambiguous_mentions_that_text_alone_cannot(synthetic):
    # A tiny random model does not always find the image within the budget (with seed 0 on one machine it
    # stayed at 0.49 valid F1 for 12 epochs, while seed 1 reached 1.0): up to three initialisations are
    # tried and the first to reach the target on valid is kept. Selection is on valid; test is scored once.
    for seed in range(3):
        reader = tiny_mgcm(synthetic, use_image=True, seed=seed)
        epochs = train(reader, synthetic, MAX_EPOCHS, stop_at_valid_f1=VALID_TARGET_F1)
        if ambiguous_f1(reader, synthetic, "valid") >= VALID_TARGET_F1:
            break
    image_f1 = ambiguous_f1(reader, synthetic, "test")

    # The same model and budget with every granularity off: the words say nothing about the type.
    text_only = tiny_mgcm(synthetic, use_image=False)
    assert text_only.config.granularities == ()
    train(text_only, synthetic, epochs)
    text_f1 = ambiguous_f1(text_only, synthetic, "test")

    assert image_f1 >= 0.9, f"image reader: ambiguous-mention F1 {image_f1:.3f} after {epochs} epochs"
    assert text_f1 <= 0.6, f"text only: ambiguous-mention F1 {text_f1:.3f} after {epochs} epochs"
