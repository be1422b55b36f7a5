"""Cost of the MGCM layers beside the text encoder: time one training step (forward + backward) of
`MGCMForTokenClassification` with every granularity on and precomputed image features, against the same
text encoder under a plain linear + CRF head, in one run, and print the ratios (target <= 1.25).

    python benchmarks/step_overhead.py [--text-model FOLDER] [--steps 10] [--threads N]

Three MGCM widths are measured: the paper's (the cross-modal layers as wide as the encoder) and two slim
ones (`cross_modal_hidden_size` 128 with 4 heads, 64 with 2), and the 128 one once more without the caption
granularity, to show what the caption pass (a forward of the shared encoder over the captions) costs. Shapes follow Twitter-2015 with the MiniLM
tokenizer: 48 word pieces hold about 18 words (URLs split into many pieces); BLIP-2 captions of both corpora
average 12 pieces (5 to 28; 18 for the longest of 16 on average), here drawn uniformly from 7 to
`--caption-pieces` (20). The image is the paper's ResNet-152 grid (49 regions of 2048-d), objects are 5 of
the 80 COCO classes, neighbours k=4 of 200-d, word shape and the auxiliary span CRF are on.

The models see the same batch, their steps alternate (so a busy machine slows them alike), and the median
step is reported, in wall-clock and in process CPU time (less sensitive to other processes on a shared
machine, especially with `--threads 1`). Matrix-product FLOPs of one step, which do not depend on the
machine at all, are printed beside them.
"""

import argparse
import statistics
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoModel

from modeling_mgcm import ConditionalRandomField, MGCMForTokenClassification
from modeling_mgcm.modeling_mgcm import first_piece_positions

MODEL_FOLDERS = (
    Path(__file__).resolve().parents[1].parent / "shared" / "tools" / "offline-models" / "all-MiniLM-L6-v2",
    Path.home() / ".cache" / "mgcm-offline-models" / "all-MiniLM-L6-v2",
)
CAPTION_ON = {"use_caption": True}
MGCM_VARIANTS = {
    "MGCM, paper width": CAPTION_ON,
    "MGCM, cross_modal_hidden_size=128": {
        **CAPTION_ON,
        "cross_modal_hidden_size": 128,
        "num_cross_attention_heads": 4,
    },
    "MGCM, cross_modal_hidden_size=64": {
        **CAPTION_ON,
        "cross_modal_hidden_size": 64,
        "num_cross_attention_heads": 2,
    },
    # The caption pass is a forward of the shared encoder over the captions: shown apart for scale.
    "MGCM, cross_modal_hidden_size=128, no caption": {
        "cross_modal_hidden_size": 128,
        "num_cross_attention_heads": 4,
    },
}


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
        return self.crf(self.classifier(self.dropout(words)), labels, word_mask.bool()).mean()


def make_batch(args: argparse.Namespace, vocab_size: int, num_labels: int, num_object_labels: int) -> dict:
    """A full batch: every example has an image, objects and a caption; words of 2-3 pieces."""
    generator = torch.Generator().manual_seed(0)
    batch, pieces, words = args.batch_size, args.pieces, args.words
    word_ids = torch.full((batch, pieces), -1, dtype=torch.long)
    # Spread the words over the pieces between [CLS] and [SEP].
    word_ids[:, 1:-1] = (torch.arange(pieces - 2) * words // (pieces - 2)).expand(batch, -1)
    caption_lengths = torch.randint(7, args.caption_pieces + 1, (batch,), generator=generator)
    caption_lengths[0] = args.caption_pieces
    return {
        "input_ids": torch.randint(1000, vocab_size, (batch, pieces), generator=generator),
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
        "caption_attention_mask": (torch.arange(args.caption_pieces) < caption_lengths.unsqueeze(1)).long(),
        "labels": torch.randint(0, num_labels, (batch, words), generator=generator),
    }


def training_step(model: nn.Module, batch: dict) -> None:
    model.zero_grad(set_to_none=True)
    output = model(**batch)
    loss = output if isinstance(output, torch.Tensor) else output.loss
    loss.backward()


def time_step(model: nn.Module, batch: dict) -> tuple[float, float]:
    """Wall-clock and process CPU seconds for one forward + backward."""
    wall, cpu = time.perf_counter(), time.process_time()
    training_step(model, batch)
    return time.perf_counter() - wall, time.process_time() - cpu


def step_flops(model: nn.Module, batch: dict) -> int:
    with FlopCounterMode(display=False) as counter:
        training_step(model, batch)
    return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--text-model", type=Path, default=None, help="encoder folder (default: MiniLM-L6)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--pieces", type=int, default=48)
    parser.add_argument("--words", type=int, default=18)
    parser.add_argument("--caption-pieces", type=int, default=20, help="longest caption of the batch")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    folder = args.text_model or next(
        (path for path in MODEL_FOLDERS if (path / "config.json").exists()), None
    )
    if folder is None:
        raise SystemExit(
            f"no text model folder: pass --text-model (looked in {[str(p) for p in MODEL_FOLDERS]})"
        )
    torch.manual_seed(0)
    models: dict[str, nn.Module] = {}
    for name, settings in MGCM_VARIANTS.items():
        models[name] = MGCMForTokenClassification.from_backbones(
            str(folder),
            image_feature_dim=2048,
            use_image=True,
            use_objects=True,
            use_word_shape=True,
            augmentation_mode="gate",
            **settings,
        )
    num_labels = next(iter(models.values())).config.num_labels
    text_encoder = AutoModel.from_pretrained(str(folder))
    # MGCM drops the unused sentence pooler too; keeping it would only add its (gradient-free) weights.
    text_encoder.pooler = None
    baseline = LinearCRFTagger(text_encoder, num_labels)
    config = next(iter(models.values())).config
    batch = make_batch(args, config.text_config.vocab_size, num_labels, len(config.object_labels))

    everything = {"baseline (encoder + linear + CRF)": baseline, **models}
    for model in everything.values():
        model.train()
        for _ in range(args.warmup):
            time_step(model, batch)
    wall: dict[str, list[float]] = {name: [] for name in everything}
    cpu: dict[str, list[float]] = {name: [] for name in everything}
    for _ in range(args.steps):
        for name, model in everything.items():
            wall_seconds, cpu_seconds = time_step(model, batch)
            wall[name].append(wall_seconds)
            cpu[name].append(cpu_seconds)
    flops = {name: step_flops(model, batch) for name, model in everything.items()}

    baseline_name = next(iter(everything))
    baseline_wall, baseline_cpu = (
        statistics.median(wall[baseline_name]),
        statistics.median(cpu[baseline_name]),
    )
    encoder_parameters = sum(p.numel() for p in baseline.encoder.parameters())
    print(f"text encoder: {folder} ({encoder_parameters / 1e6:.1f}M parameters)")
    print(
        f"batch {args.batch_size} x {args.pieces} pieces, {args.words} words, captions of 7-{args.caption_pieces} "
        f"pieces, 49x2048 image regions, 5 objects; torch threads {torch.get_num_threads()}; "
        f"median of {args.steps} steps"
    )
    for name in everything:
        step, step_cpu = statistics.median(wall[name]), statistics.median(cpu[name])
        extra = sum(p.numel() for p in everything[name].parameters()) - encoder_parameters
        print(
            f"{name:42s} {step * 1000:7.1f} ms  ratio {step / baseline_wall:.3f} | CPU time ratio "
            f"{step_cpu / baseline_cpu:.3f} | FLOP ratio {flops[name] / flops[baseline_name]:.3f} "
            f"| +{extra / 1e6:.1f}M parameters"
        )
    print("target: ratio <= 1.25 (wall clock, on a quiet machine)")


if __name__ == "__main__":
    main()
