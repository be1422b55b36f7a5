"""Deterministic corpus evaluation: tag every window, gather across processes, merge windows, score.

Every word of every tweet is predicted (long tweets are split into overlapping windows and merged back),
so every gold entity of the split is scored, whatever the model's window.
"""

from collections.abc import Sequence

import torch
from tqdm.auto import tqdm

from modeling_mgcm.windows import merge_windows
from processing.evaluation.metrics import MODES, ner_metrics


@torch.no_grad()
def predict_corpus(model, dataloader, accelerator, num_words: Sequence[int], description: str = "Predicting"):
    """Viterbi tags for every word of every tweet of a split.

    Args:
        model: an (accelerate-prepared) `MGCMForTokenClassification`.
        dataloader: batches from `MGCMDataCollator(..., return_window_info=True)` over
            `preprocess_corpus(processor, split)`, not shuffled.
        accelerator: the run's `Accelerator`; predictions are gathered from all processes with
            `gather_for_metrics`, so each window counts exactly once.
        num_words: words per tweet of the split, `(num_tweets,)`.

    Returns:
        A list over tweets (in split order) of lists of label ids, one per word.
    """
    model.eval()
    window_predictions, tweet_indices, word_offsets, word_counts = [], [], [], []
    progress = tqdm(dataloader, desc=description, disable=not accelerator.is_local_main_process, leave=False)
    for batch in progress:
        tweet_index = batch.pop("overflow_to_sample_mapping")
        word_offset = batch.pop("window_word_offset")
        batch.pop("labels", None)
        predictions = model(**batch).predictions
        word_count = batch["word_mask"].sum(dim=1)
        # Batches have different word lengths on different processes: pad before gathering.
        predictions = accelerator.pad_across_processes(predictions, dim=1, pad_index=-100)
        gathered = accelerator.gather_for_metrics((predictions, tweet_index, word_offset, word_count))
        for values, store in zip(
            gathered, (window_predictions, tweet_indices, word_offsets, word_counts), strict=True
        ):
            store.extend(values.cpu().tolist())
    return merge_windows(window_predictions, tweet_indices, word_offsets, word_counts, num_words=num_words)


def score_predictions(
    gold_tag_ids: Sequence[Sequence[int]], predicted_tag_ids: Sequence[Sequence[int]], id2label
) -> dict[str, dict]:
    """`ner_metrics` in both seqeval modes: `{"lenient": {...}, "strict": {...}}`."""
    names = {int(index): name for index, name in id2label.items()}
    gold = [[names[int(tag)] for tag in tweet] for tweet in gold_tag_ids]
    predicted = [[names[int(tag)] for tag in tweet] for tweet in predicted_tag_ids]
    return {mode: ner_metrics(gold, predicted, mode=mode) for mode in MODES}


def evaluate_corpus(model, dataloader, accelerator, split, id2label, description: str = "Evaluating"):
    """Score a corpus split: returns `(metrics by mode, predicted label ids per tweet)`."""
    gold = split["ner_tags"]
    predictions = predict_corpus(
        model, dataloader, accelerator, [len(tags) for tags in gold], description=description
    )
    return score_predictions(gold, predictions, id2label), predictions


__all__ = ["evaluate_corpus", "predict_corpus", "score_predictions"]
