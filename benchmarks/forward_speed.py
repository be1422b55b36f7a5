"""The model's forward against an earlier version of `modeling_mgcm/`, timed in one run on the same batches.

    python benchmarks/forward_speed.py [--baseline c19a91b] [--threads 1] [--repeats 30]

The earlier version is read from git (`git show REF:modeling_mgcm/...`) into a temporary package, so both
models live in one process, load the same weights and are timed alternately on the same inputs: the ratio
is free of machine drift. The model is the configuration of `hub_configs/mgcm-offline-minilm` (all-MiniLM-L6-v2's
shape, random weights: the time does not depend on them; the `full` configuration of BENCHMARKS.md: word
shape, gated semantic augmentation with k=4 50-d neighbours, the caption granularity), at batch 32 and 1, on inputs of the
Twitter-2015 sizes with `--url_token http` (about 24 pieces and 16 words per tweet, 5 to 30 caption pieces).
Inference mode: eval, no gradient, Viterbi decoding included. A third column times the current model with
`MGCM_CHECK_INPUTS=0`: the fixed graph that runs on accelerators (no input checks, one padded caption pass
instead of length groups), to show what the CPU's host reads cost or save. The figures go in BENCHMARKS.md.
"""

import argparse
import importlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
# all-MiniLM-L6-v2's shape with the `full` configuration: word shape, gated augmentation, the caption.
CONFIG = REPO / "hub_configs" / "mgcm-offline-minilm"


def load_baseline(ref: str, folder: Path):
    """`modeling_mgcm` as it was at git `ref`, imported as the package `mgcm_baseline`."""
    listing = subprocess.run(
        ["git", "ls-tree", "--name-only", f"{ref}:modeling_mgcm"], cwd=REPO, capture_output=True, text=True
    )
    if listing.returncode != 0:
        sys.exit(f"git cannot read modeling_mgcm at {ref}: {listing.stderr.strip()}")
    package = folder / "mgcm_baseline"
    package.mkdir()
    for name in listing.stdout.split():
        if name.endswith(".py"):
            source = subprocess.run(
                ["git", "show", f"{ref}:modeling_mgcm/{name}"], cwd=REPO, capture_output=True, check=True
            ).stdout
            (package / name).write_bytes(source)
    sys.path.insert(0, str(folder))
    return importlib.import_module("mgcm_baseline")


def batch(batch_size: int, generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Padded inputs of Twitter-2015 sizes; every row has a caption of 5 to 30 pieces."""
    pieces = torch.randint(14, 36, (batch_size,), generator=generator)
    max_pieces = int(pieces.max())
    words = (pieces * 2) // 3 - 1
    max_words = int(words.max())
    input_ids = torch.randint(1000, 30000, (batch_size, max_pieces), generator=generator)
    attention_mask = (torch.arange(max_pieces) < pieces[:, None]).long()
    word_ids = torch.full((batch_size, max_pieces), -1)
    for row in range(batch_size):
        # [CLS], then each word one or two pieces, then [SEP] and padding.
        real = int(pieces[row]) - 2
        ids = torch.randint(0, int(words[row]), (real,), generator=generator)
        ids[: int(words[row])] = torch.arange(int(words[row]))  # every word has a piece
        word_ids[row, 1 : 1 + real] = ids.sort().values
    word_mask = (torch.arange(max_words) < words[:, None]).long()
    captions = torch.randint(5, 31, (batch_size,), generator=generator)
    max_caption = int(captions.max())
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "token_type_ids": torch.zeros_like(input_ids),
        "word_ids": word_ids,
        "word_mask": word_mask,
        "word_shape_ids": torch.randint(1, 12, (batch_size, max_words), generator=generator) * word_mask,
        "neighbour_vectors": torch.randn(batch_size, max_words, 4, 50, generator=generator),
        "neighbour_weights": torch.rand(batch_size, max_words, 4, generator=generator) * word_mask[..., None],
        "caption_input_ids": torch.randint(1000, 30000, (batch_size, max_caption), generator=generator),
        "caption_attention_mask": (torch.arange(max_caption) < captions[:, None]).long(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--baseline", default="c19a91b", help="git revision of the earlier modeling_mgcm")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=30, help="timed forwards of each model per setting")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    import modeling_mgcm

    with tempfile.TemporaryDirectory() as folder:
        baseline = load_baseline(args.baseline, Path(folder))
        torch.manual_seed(0)
        current = modeling_mgcm.MGCMForTokenClassification(modeling_mgcm.MGCMConfig.from_pretrained(CONFIG))
        earlier = baseline.MGCMForTokenClassification(baseline.MGCMConfig.from_pretrained(CONFIG))
        current.eval()
        earlier.eval()
        earlier.load_state_dict(current.state_dict())
        generator = torch.Generator().manual_seed(0)
        print(
            f"forward of {args.baseline} (earlier) and the working tree (current), {args.threads} thread(s)"
        )
        print(
            f"{'batch':>5}{'earlier ms':>12}{'current ms':>12}{'current/earlier':>17}{'fixed graph/current':>21}"
        )
        for batch_size in (32, 1):
            inputs = [batch(batch_size, generator) for _ in range(8)]
            timings = {"earlier": [], "current": [], "fixed": []}
            with torch.no_grad():
                for model in (earlier, current):  # warm-up
                    model(**inputs[0])
                reference = earlier(**inputs[1]).logits
                if not torch.allclose(current(**inputs[1]).logits, reference, atol=1e-4):
                    sys.exit("the two versions disagree on the logits: not the same model")
                contenders = [("earlier", earlier), ("current", current), ("fixed", current)]
                for repeat in range(args.repeats):
                    # Each takes each place in the order in turn, so that none always follows the same one.
                    shift = repeat % len(contenders)
                    for name, model in contenders[shift:] + contenders[:shift]:
                        os.environ["MGCM_CHECK_INPUTS"] = "0" if name == "fixed" else ""
                        started = time.perf_counter()
                        model(**inputs[repeat % len(inputs)])
                        timings[name].append(time.perf_counter() - started)
                os.environ.pop("MGCM_CHECK_INPUTS")
            median_ms = {name: 1000 * statistics.median(values) for name, values in timings.items()}
            print(
                f"{batch_size:>5}{median_ms['earlier']:>12.1f}{median_ms['current']:>12.1f}"
                f"{median_ms['current'] / median_ms['earlier']:>17.3f}"
                f"{median_ms['fixed'] / median_ms['current']:>21.3f}"
            )


if __name__ == "__main__":
    main()
