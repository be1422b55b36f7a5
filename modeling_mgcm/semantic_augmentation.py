"""Semantic augmentation: each word's state is enriched with the vectors of its k nearest neighbours in a
word-embedding space (MGCM, after SANER).

Shapes: B = batch, W = words, k = neighbours, D_a = neighbour vector size, d = hidden size.
Words without neighbours (out-of-vocabulary, padding: all weights zero) keep their state unchanged.
"""

import math

import torch
from torch import Tensor, nn


class MGCMSemanticAugmentation(nn.Module):
    """Combines a word's contextual state `h` with its neighbours, in one of three modes.

    - "add": `h + W a`, with `a` the similarity-weighted mean of the neighbour vectors (the release).
    - "gate": `g * h + (1 - g) * A`, `A = W a`, `g = sigmoid(W_g [h; A] + b)` (the paper's variant).
    - "attention": `A` is an attention of `h` over the k projected neighbours (learned weights, SANER),
      then the same gate.
    """

    def __init__(self, mode: str, augmentation_dim: int, hidden_size: int) -> None:
        super().__init__()
        if mode not in ("add", "gate", "attention"):
            raise ValueError(f"MGCMSemanticAugmentation: unknown mode {mode!r}")
        self.mode = mode
        self.augmentation_dim = augmentation_dim
        # No bias: a word without neighbours must get exactly nothing added.
        self.projection = nn.Linear(augmentation_dim, hidden_size, bias=False)
        self.gate = nn.Linear(2 * hidden_size, hidden_size) if mode != "add" else None

    def forward(self, word_states: Tensor, neighbour_vectors: Tensor, neighbour_weights: Tensor) -> Tensor:
        """(B, W, d), (B, W, k, D_a), (B, W, k) -> (B, W, d)."""
        neighbour_vectors = neighbour_vectors.to(word_states.dtype)
        neighbour_weights = neighbour_weights.to(word_states.dtype)
        has_neighbours = (neighbour_weights != 0).any(dim=-1, keepdim=True)
        if self.mode == "attention":
            projected = self.projection(neighbour_vectors)
            scores = (projected @ word_states.unsqueeze(-1)).squeeze(-1) / math.sqrt(word_states.shape[-1])
            # Words without any neighbour get a uniform (finite) softmax here and are restored below.
            scores = scores.masked_fill(
                (neighbour_weights == 0) & has_neighbours, torch.finfo(scores.dtype).min
            )
            augmentation = (scores.softmax(dim=-1).unsqueeze(-1) * projected).sum(dim=-2)
        else:
            averaged = (neighbour_weights.unsqueeze(-1) * neighbour_vectors).sum(dim=-2)
            augmentation = self.projection(averaged)
        if self.mode == "add":
            augmented = word_states + augmentation
        else:
            gate = torch.sigmoid(self.gate(torch.cat([word_states, augmentation], dim=-1)))
            augmented = gate * word_states + (1.0 - gate) * augmentation
        return torch.where(has_neighbours, augmented, word_states)


__all__ = ["MGCMSemanticAugmentation"]
