"""The attention building blocks of MGCM: masked multi-head attention, a post-norm attention layer and the
two-branch cross-modal block with its sigmoid gate (UMT's coupled attention, one block per granularity).

Shapes: B = batch, Q = queries, K = keys, W = words, N = visual tokens (regions, objects or caption pieces),
d = hidden size (the text encoder's).
"""

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.modeling_layers import GradientCheckpointingLayer


class MGCMAttention(nn.Module):
    """Multi-head attention of `query_states` over `key_value_states` with a boolean key mask.

    A query row whose keys are all masked (an example without that input) gets a zero context instead of
    the NaN a softmax over nothing would give, so it cannot poison the batch or its gradients.
    """

    def __init__(self, hidden_size: int, num_heads: int, dropout_prob: float) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(
                f"hidden size {hidden_size} is not a multiple of the {num_heads} attention heads"
            )
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.dropout_prob = dropout_prob
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key_value = nn.Linear(hidden_size, 2 * hidden_size)
        self.output = nn.Linear(hidden_size, hidden_size)

    def forward(
        self,
        query_states: Tensor,
        key_value_states: Tensor,
        key_mask: Tensor,
        output_attentions: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """(B, Q, d), (B, K, d), (B, K) bool -> context (B, Q, d) and, if asked, weights (B, heads, Q, K)."""
        batch_size, num_queries, hidden_size = query_states.shape
        num_keys = key_value_states.shape[1]
        query = self.query(query_states).view(batch_size, num_queries, self.num_heads, self.head_dim)
        query = query.transpose(1, 2)
        key, value = (
            self.key_value(key_value_states)
            .view(batch_size, num_keys, 2, self.num_heads, self.head_dim)
            .permute(2, 0, 3, 1, 4)
        )
        has_key = key_mask.any(dim=1)
        # Rows without keys attend to everything (finite) and are zeroed below.
        attend = (key_mask | ~has_key.unsqueeze(1))[:, None, None, :]
        dropout_prob = self.dropout_prob if self.training else 0.0
        weights = None
        if output_attentions:
            scores = (query @ key.transpose(-1, -2)) / math.sqrt(self.head_dim)
            weights = scores.masked_fill(~attend, torch.finfo(scores.dtype).min).softmax(dim=-1)
            context = F.dropout(weights, dropout_prob, self.training) @ value
        else:
            context = F.scaled_dot_product_attention(
                query, key, value, attn_mask=attend, dropout_p=dropout_prob
            )
        context = self.output(context.transpose(1, 2).reshape(batch_size, num_queries, hidden_size))
        context = context * has_key[:, None, None].to(context.dtype)
        return context, weights


class MGCMAttentionLayer(GradientCheckpointingLayer):
    """Attention, dropout, residual and LayerNorm (post-norm, as in BERT). Self-attention when the keys are
    the queries. With gradient checkpointing on, its activations are recomputed in the backward pass."""

    def __init__(
        self, hidden_size: int, num_heads: int, attention_dropout: float, hidden_dropout: float, eps: float
    ) -> None:
        super().__init__()
        self.attention = MGCMAttention(hidden_size, num_heads, attention_dropout)
        self.dropout = nn.Dropout(hidden_dropout)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=eps)

    def forward(
        self,
        query_states: Tensor,
        key_value_states: Tensor,
        key_mask: Tensor,
        output_attentions: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """(B, Q, d), (B, K, d), (B, K) bool -> (B, Q, d) and optional weights (B, heads, Q, K)."""
        context, weights = self.attention(query_states, key_value_states, key_mask, output_attentions)
        return self.layer_norm(query_states + self.dropout(context)), weights


class MGCMCoupledAttentionBlock(nn.Module):
    """One granularity's cross-modal block.

    Branch (a): the words attend to the visual tokens. Branch (b): the visual tokens attend to the words,
    then the words attend to those text-aware visual tokens. A sigmoid gate `g = sigmoid(W [a; b] + c)`
    mixes them per dimension: `g * a + (1 - g) * b`. Each attention step is a stack of
    `num_layers` attention layers.
    """

    def __init__(
        self,
        hidden_size: int,
        num_heads: int,
        num_layers: int,
        attention_dropout: float,
        hidden_dropout: float,
        eps: float,
    ) -> None:
        super().__init__()

        def stack() -> nn.ModuleList:
            return nn.ModuleList(
                MGCMAttentionLayer(hidden_size, num_heads, attention_dropout, hidden_dropout, eps)
                for _ in range(num_layers)
            )

        self.word_to_visual = stack()
        self.visual_to_word = stack()
        self.word_to_text_aware_visual = stack()
        self.gate = nn.Linear(2 * hidden_size, hidden_size)

    def forward(
        self,
        word_states: Tensor,
        word_mask: Tensor,
        visual_states: Tensor,
        visual_mask: Tensor,
        output_attentions: bool = False,
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        """Cross-modal word states for one granularity.

        Args:
            word_states: (B, W, d). word_mask: (B, W) bool.
            visual_states: (B, N, d). visual_mask: (B, N) bool; a row with no True lacks this input.

        Returns:
            fused (B, W, d), exactly zero for rows without the input; the mean gate value (B, W), 0 at
            padding words and rows without the input; with `output_attentions`, branch (a)'s last
            word-to-visual attention averaged over heads (B, W, N), else None.
        """
        present = visual_mask.any(dim=1)
        direct = word_states
        weights = None
        for layer in self.word_to_visual:
            direct, weights = layer(direct, visual_states, visual_mask, output_attentions)
        text_aware_visual = visual_states
        for layer in self.visual_to_word:
            text_aware_visual, _ = layer(text_aware_visual, word_states, word_mask)
        coupled = word_states
        for layer in self.word_to_text_aware_visual:
            coupled, _ = layer(coupled, text_aware_visual, visual_mask)
        gate = torch.sigmoid(self.gate(torch.cat([direct, coupled], dim=-1)))
        fused = gate * direct + (1.0 - gate) * coupled
        fused = fused * present[:, None, None].to(fused.dtype)
        keep = word_mask & present.unsqueeze(1)
        mean_gate = torch.where(keep, gate.mean(dim=-1), torch.zeros_like(keep, dtype=gate.dtype))
        word_to_visual_weights = None
        if weights is not None:
            word_to_visual_weights = weights.mean(dim=1) * keep.unsqueeze(-1)
        return fused, mean_gate, word_to_visual_weights


__all__ = ["MGCMAttention", "MGCMAttentionLayer", "MGCMCoupledAttentionBlock"]
