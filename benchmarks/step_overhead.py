"""Cost of the MGCM layers beside the text encoder: time one training step (forward + backward) of
`MGCMForTokenClassification` with every granularity on and precomputed image features, against the same
text encoder under a plain linear + CRF head, in one run, and print the ratio (target <= 1.25).

    python benchmarks/step_overhead.py [--text-model FOLDER] [--steps 10]

Shapes follow Twitter-2015 with the MiniLM tokenizer: 48 word pieces hold about 18 words (URLs split into
many pieces) and BLIP-2 captions average 12 pieces, so a batch pads them to about 20. The image is the
paper's ResNet-152 grid (49 regions of 2048-d), objects are 5 ids, neighbours k=4 of 200-d.
Both models run the same batches, steps alternate between them, and the median step is reported.
"""

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from transformers import AutoModel

from modeling_mgcm import ConditionalRandomField, MGCMForTokenClassification
from modeling_mgcm.modeling_mgcm import first_piece_positions

MODEL_FOLDERS = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "tools" / "offline-models" / "all-MiniLM-L6-v2",
    Path.home() / ".cache" / "mgcm-offline-models" / "all-MiniLM-L6-v2",
)


class LinearCRFTagger(nn.Module):
    """The baseline: text encoder, first sub-token of each word, dropout, linear emissions, CRF."""

    def __init__(self, encoder: nn.Module, num_labels: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(0.1)
        self.classifier = nn.Linear(encoder.config.hidden_size, num_labels)
        self.crf = ConditionalRandomField(num_labels)

    def forward(self, input_ids, attention_mask, word_ids, word_mask, labels, **_) -> torch.Tensor:
        states = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        positions, _ = first_piece_positions(word_ids, word_mask.shape[1])
        words = states.gather(1, positions.unsqueeze(-1).expand(-1, -1, states.shape[-1]))
        return self.crf(self.classifier(self.dropout(words)), labels, word_mask.bool())


def make_batch(args: argparse.Namespace, vocab_size: int, num_labels: int, num_object_labels: int) -> dict:
    """A full batch: every example has an image, objects and a caption; words of 2-3 pieces."""
    generator = torch.Generator().manual_seed(0)
    batch, pieces, words = args.batch_size, args.pieces, args.words
    input_ids = torch.randint(1000, vocab_size, (batch, pieces), generator=generator)
    word_ids = torch.full((batch, pieces), -1, dtype=torch.long)
    # Spread the words over the pieces between [CLS] and [SEP].
    word_ids[:, 1:-1] = (torch.arange(pieces - 2) * words // (pieces - 2)).expand(batch, -1)
    return {
        "input_ids": input_ids,
        "attention_mask": torch.ones(batch, pieces, dtype=torch.long),
        "word_ids": word_ids,
        "word_mask": torch.ones(batch, words, dtype=torch.long),
        "word_shape_ids": torch.randint(1, 12, (batch, words), generator=generator),
        "neighbour_vectors": torch.randn(batch, words, 4, 200, generator=generator),
        "neighbour_weights": torch.softmax(torch.randn(batch, words, 4, generator=generator), dim=-1),
        "image_features": torch.randn(batch, 49, 2048, generator=generator).relu(),
        "image_mask": torch.ones(batch, dtype=torch.long),
        "object_ids": torch.randint(0, num_object_labels, (batch, 5), generator=generator),
        "object_mask": torch.ones(batch, 5, dtype=torch.long),
        "caption_input_ids": torch.randint(
            1000, vocab_size, (batch, args.caption_pieces), generator=generator
        ),
        "caption_attention_mask": torch.ones(batch, args.caption_pieces, dtype=torch.long),
        "labels": torch.randint(0, num_labels, (batch, words), generator=generator),
    }


def time_step(model: nn.Module, batch: dict) -> float:
    """Seconds for one forward + backward."""
    model.zero_grad(set_to_none=True)
    start = time.perf_counter()
    output = model(**batch)
    loss = output if isinstance(output, torch.Tensor) else output.loss
    loss.backward()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--text-model", type=Path, default=None, help="encoder folder (default: MiniLM-L6)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--pieces", type=int, default=48)
    parser.add_argument("--words", type=int, default=18)
    parser.add_argument("--caption-pieces", type=int, default=20)
    args = parser.parse_args()

    folder = args.text_model or next(
        (path for path in MODEL_FOLDERS if (path / "config.json").exists()), None
    )
    if folder is None:
        raise SystemExit(
            f"no text model folder: pass --text-model (looked in {[str(p) for p in MODEL_FOLDERS]})"
        )
    torch.manual_seed(0)
    mgcm = MGCMForTokenClassification.from_backbones(
        str(folder),
        image_feature_dim=2048,
        use_image=True,
        use_objects=True,
        use_caption=True,
        use_word_shape=True,
        augmentation_mode="gate",
    )
    text_encoder = AutoModel.from_pretrained(str(folder))
    # MGCM drops the unused sentence pooler too; keeping it would only add its (gradient-free) weights.
    text_encoder.pooler = None
    baseline = LinearCRFTagger(text_encoder, mgcm.config.num_labels)
    batch = make_batch(
        args, mgcm.config.text_config.vocab_size, mgcm.config.num_labels, len(mgcm.config.object_labels)
    )
    mgcm.train()
    baseline.train()
    for _ in range(args.warmup):
        time_step(mgcm, batch)
        time_step(baseline, batch)
    mgcm_times, baseline_times = [], []
    for _ in range(args.steps):
        baseline_times.append(time_step(baseline, batch))
        mgcm_times.append(time_step(mgcm, batch))
    mgcm_step, baseline_step = statistics.median(mgcm_times), statistics.median(baseline_times)
    encoder_parameters = sum(p.numel() for p in baseline.encoder.parameters())
    extra_parameters = sum(p.numel() for p in mgcm.parameters()) - encoder_parameters
    print(
        f"text encoder: {folder} ({encoder_parameters / 1e6:.1f}M parameters); MGCM adds {extra_parameters / 1e6:.1f}M"
    )
    print(
        f"batch {args.batch_size} x {args.pieces} pieces, {args.words} words, {args.caption_pieces} caption pieces, "
        f"49x2048 image regions, 5 objects; torch threads {torch.get_num_threads()}"
    )
    print(f"baseline (encoder + linear + CRF) step: {baseline_step * 1000:.1f} ms (median of {args.steps})")
    print(f"MGCM (image + objects + caption, augmentation, word shape) step: {mgcm_step * 1000:.1f} ms")
    print(f"ratio MGCM / baseline: {mgcm_step / baseline_step:.3f} (target <= 1.25)")


if __name__ == "__main__":
    main()
