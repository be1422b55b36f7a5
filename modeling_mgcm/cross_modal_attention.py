"""The attention building blocks of MGCM: masked multi-head attention, a post-norm attention layer and the
two-branch cross-modal block with its sigmoid gate (UMT's coupled attention, one block per granularity).

Shapes: B = batch, Q = queries, K = keys, W = words, N = visual tokens (regions, objects or caption pieces),
d = hidden size (the text encoder's).
"""

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS


def eager_attention_forward(
    module: nn.Module,
    query: Tensor,
    key: Tensor,
    value: Tensor,
    attention_mask: Tensor,
    scaling: float,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[Tensor, Tensor]:
    """Softmax attention written out: (B, h, Q, d), (B, h, K, d), (B, h, K, d), bool mask broadcastable to
    (B, h, Q, K) (True = attend) -> context (B, Q, h, d) and weights (B, h, Q, K), as transformers'
    attention functions return them."""
    scores = (query @ key.transpose(-1, -2)) * scaling
    weights = scores.masked_fill(~attention_mask, torch.finfo(scores.dtype).min).softmax(dim=-1)
    context = F.dropout(weights, dropout, module.training) @ value
    return context.transpose(1, 2).contiguous(), weights


class MGCMAttention(nn.Module):
    """Multi-head attention of `query_states` over `key_value_states` with a boolean key mask.

    The attention itself is the function `config._attn_implementation` names in transformers' attention
    interface ("sdpa" by default, calling the kernel directly; "eager", also used for the weights; any
    function registered with `AttentionInterface`). Set it with `from_pretrained(..., attn_implementation=...)`
    or `model.set_attn_implementation(...)`.

    A query row whose keys are all masked (an example without that input) gets a zero context instead of
    the NaN a softmax over nothing would give, so it cannot poison the batch or its gradients.
    """

    is_causal = False

    def __init__(self, config, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        if hidden_size % num_heads:
            raise ValueError(
                f"hidden size {hidden_size} is not a multiple of the {num_heads} attention heads"
            )
        self.config = config
        self.num_heads = num_heads
        self.head_dim = hidden_size // num_heads
        self.scaling = self.head_dim**-0.5
        self.dropout_prob = config.attention_dropout_prob
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
        implementation = self.config._attn_implementation
        dropout = self.dropout_prob if self.training else 0.0
        weights = None
        if implementation == "sdpa" and not output_attentions:
            # The kernel itself: transformers' sdpa_attention_forward adds ~55 us of Python per call, a third
            # of the kernel's own time at batch 1 (measured on 2 CPU cores), for options MGCM never uses.
            context = F.scaled_dot_product_attention(
                query, key, value, attn_mask=attend, dropout_p=dropout, scale=self.scaling
            ).transpose(1, 2)
        else:
            attention = eager_attention_forward
            if not output_attentions and implementation not in (None, "eager"):
                attention = ALL_ATTENTION_FUNCTIONS[implementation]
            context, weights = attention(
                self, query, key, value, attend, scaling=self.scaling, dropout=dropout
            )
        context = self.output(context.reshape(batch_size, num_queries, hidden_size))
        context = context * has_key[:, None, None].to(context.dtype)
        return context, (weights if output_attentions else None)


class MGCMAttentionLayer(GradientCheckpointingLayer):
    """Attention, dropout, residual and LayerNorm (post-norm, as in BERT). Self-attention when the keys are
    the queries. With gradient checkpointing on, its activations are recomputed in the backward pass."""

    def __init__(self, config, hidden_size: int, num_heads: int) -> None:
        super().__init__()
        self.attention = MGCMAttention(config, hidden_size, num_heads)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)
        self.layer_norm = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)

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

    def __init__(self, config, hidden_size: int) -> None:
        super().__init__()

        def stack() -> nn.ModuleList:
            return nn.ModuleList(
                MGCMAttentionLayer(config, hidden_size, config.attention_heads)
                for _ in range(config.num_cross_attention_layers)
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


__all__ = ["MGCMAttention", "MGCMAttentionLayer", "MGCMCoupledAttentionBlock", "eager_attention_forward"]
