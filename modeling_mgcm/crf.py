"""Linear-chain conditional random field over word-level emission scores.

Shapes: B = batch size, W = words per row (padded), L = number of tags. Masks are boolean and
left-aligned: each row is a prefix of `True` followed by padding. Emissions and parameters are cast to
float32 first, so the sums run in float32 whatever the input dtype or autocast context (none of the ops
used is one that autocast lowers), and every float result is float32.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .host_reads import host_reads_allowed

PADDING_TAG = -100
# Score given to the tags a partly labelled word rules out: far below any real path, yet finite, so that
# logsumexp over ruled-out tags has finite gradients (an all -inf logsumexp back-propagates NaN).
_RULED_OUT = -1e9


class ConditionalRandomField(nn.Module):
    """A batched, masked linear-chain CRF.

    The score of tags `y` for a row of length n is
    `start[y_0] + sum_t emissions[t, y_t] + sum_{t>=1} transitions[y_{t-1}, y_t] + end[y_{n-1}]`,
    and its probability is `exp(score) / Z`, with `Z` summed over all L**n tag sequences. A gold tag of
    -100 on a real word means "unknown": the likelihood then sums over every tag of that word (Tsuboi et al.
    2008), as -100 means "ignore this word" to a cross-entropy head.

    Parameters: `start_transitions` (L,), `end_transitions` (L,), `transitions` (L, L) where
    `transitions[i, j]` scores moving from tag i to tag j.
    """

    def __init__(self, num_tags: int) -> None:
        super().__init__()
        if not isinstance(num_tags, int) or isinstance(num_tags, bool) or num_tags < 1:
            raise ValueError(f"ConditionalRandomField needs num_tags to be a positive int, got {num_tags!r}")
        self.num_tags = num_tags
        self.start_transitions = nn.Parameter(torch.empty(num_tags))
        self.end_transitions = nn.Parameter(torch.empty(num_tags))
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Draw all transition scores from uniform(-0.1, 0.1)."""
        for parameter in (self.start_transitions, self.end_transitions, self.transitions):
            nn.init.uniform_(parameter, -0.1, 0.1)

    def extra_repr(self) -> str:
        return f"num_tags={self.num_tags}"

    def forward(self, emissions: Tensor, tags: Tensor, mask: Tensor) -> Tensor:
        """Negative log-likelihood of `tags`, one per row: (B,). The model's loss is its mean.

        Args:
            emissions: (B, W, L) float scores.
            tags: (B, W) long gold tags; -100 on a real word leaves it unlabelled (marginalised over);
                values at masked positions are ignored.
            mask: (B, W) bool, left-aligned.
        """
        emissions, mask = self._validate(emissions, mask)
        tags, labelled = self._validate_tags(tags, mask)
        start, end, transitions = self._float_parameters()
        # The gold score sums over the paths that agree with every labelled word (one path when all are):
        # the partition of emissions with the other tags ruled out. One forward pass computes both.
        ruled_out = labelled.unsqueeze(-1) & (
            tags.unsqueeze(-1) != torch.arange(self.num_tags, device=tags.device)
        )
        both = torch.cat([emissions, emissions.masked_fill(ruled_out, _RULED_OUT)])
        log_alphas = _forward_log_alphas(both, mask.repeat(2, 1), start, transitions)
        log_partition, gold_score = torch.logsumexp(log_alphas[:, -1] + end, dim=-1).chunk(2)
        return log_partition - gold_score

    @torch.no_grad()
    def decode(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """Viterbi: the highest-scoring tags, (B, W, L), (B, W) -> (B, W) long, -100 at masked positions."""
        emissions, mask = self._validate(emissions, mask)
        start, end, transitions = self._float_parameters()
        return _viterbi(emissions, mask, start, end, transitions)

    def marginals(self, emissions: Tensor, mask: Tensor) -> Tensor:
        """Posterior P(y_t = tag | row) by forward-backward: (B, W, L), (B, W) -> (B, W, L), 0 when masked."""
        emissions, mask = self._validate(emissions, mask)
        start, end, transitions = self._float_parameters()
        log_alphas = _forward_log_alphas(emissions, mask, start, transitions)
        log_betas = _backward_log_betas(emissions, mask, end, transitions)
        # alpha_t(i) + beta_t(i) sums to log Z over i at every t; normalising per word rather than
        # subtracting log Z keeps each row summing to 1 even when scores are huge.
        word_marginals = torch.softmax(log_alphas + log_betas, dim=-1)
        return word_marginals.masked_fill(~mask.unsqueeze(-1), 0.0)

    def _float_parameters(self) -> tuple[Tensor, Tensor, Tensor]:
        # The model may be cast to half precision as a whole; the CRF still sums in float32.
        return self.start_transitions.float(), self.end_transitions.float(), self.transitions.float()

    def _validate(self, emissions: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Check shapes and the left-aligned mask; return float32 emissions and the mask."""
        if emissions.dim() != 3 or emissions.shape[-1] != self.num_tags:
            raise ValueError(
                f"ConditionalRandomField: emissions must have shape (batch, words, {self.num_tags}), "
                f"got {tuple(emissions.shape)}"
            )
        if not emissions.is_floating_point():
            raise TypeError(
                f"ConditionalRandomField: emissions must be floating point, got {emissions.dtype}"
            )
        if mask.shape != emissions.shape[:2]:
            raise ValueError(
                f"ConditionalRandomField: mask shape {tuple(mask.shape)} does not match emissions "
                f"(batch, words) = {tuple(emissions.shape[:2])}"
            )
        if mask.dtype != torch.bool:
            raise TypeError(f"ConditionalRandomField: mask must be bool (pass mask.bool()), got {mask.dtype}")
        if mask.shape[1] == 0:
            raise ValueError(
                "ConditionalRandomField: emissions have zero words; every row needs at least one"
            )
        if host_reads_allowed(mask):
            self._check_left_aligned(mask)
        return emissions.float(), mask

    @staticmethod
    def _check_left_aligned(mask: Tensor) -> None:
        # A row is bad if it starts masked or turns back on after padding; one sync checks the batch.
        bad_rows = ~mask[:, 0] | (mask[:, 1:] & ~mask[:, :-1]).any(dim=1)
        if bool(bad_rows.any()):
            # Building the message is the only place that leaves the vectorised path, and only on failure.
            all_masked = (~mask.any(dim=1)).nonzero().flatten().tolist()
            if all_masked:
                raise ValueError(
                    f"ConditionalRandomField: mask rows {all_masked} have no unmasked word; "
                    "drop empty examples before the CRF"
                )
            not_prefix = bad_rows.nonzero().flatten().tolist()
            row = not_prefix[0]
            raise ValueError(
                f"ConditionalRandomField: mask rows {not_prefix} are not left-aligned (a prefix of True "
                f"then padding); row {row} is {mask[row].int().tolist()}"
            )

    def _validate_tags(self, tags: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Check gold tags at unmasked positions; return them with unlabelled positions set to 0, and the
        (B, W) bool mask of labelled words (real words whose tag is not -100)."""
        if tags.shape != mask.shape:
            raise ValueError(
                f"ConditionalRandomField: tags shape {tuple(tags.shape)} does not match mask {tuple(mask.shape)}"
            )
        if tags.is_floating_point() or tags.dtype == torch.bool:
            raise TypeError(f"ConditionalRandomField: tags must be an integer tensor, got {tags.dtype}")
        tags = tags.long()
        labelled = mask & (tags != PADDING_TAG)
        if host_reads_allowed(tags):
            out_of_range = labelled & ((tags < 0) | (tags >= self.num_tags))
            if bool(out_of_range.any()):
                row, word = out_of_range.nonzero()[0].tolist()
                raise ValueError(
                    f"ConditionalRandomField: tag {int(tags[row, word])} at row {row}, word {word} is outside "
                    f"0..{self.num_tags - 1} (mask that position if it is padding)"
                )
        # Any in-range value keeps the gathers valid where the tag is unknown or padding.
        return tags.masked_fill(~labelled, 0), labelled


def _forward_log_alphas(emissions: Tensor, mask: Tensor, start: Tensor, transitions: Tensor) -> Tensor:
    """log alpha_t(j) = log sum of scores of all prefixes ending in tag j at word t: (B, W, L).

    At padded words alpha is carried over unchanged, so the last column is alpha at each row's last word.
    """
    log_alpha = start + emissions[:, 0]
    log_alphas = [log_alpha]
    for word in range(1, emissions.shape[1]):
        # (B, L_prev, 1) + (L_prev, L_next) + (B, 1, L_next), reduced over the previous tag.
        step = torch.logsumexp(log_alpha.unsqueeze(2) + transitions + emissions[:, word].unsqueeze(1), dim=1)
        log_alpha = torch.where(mask[:, word].unsqueeze(1), step, log_alpha)
        log_alphas.append(log_alpha)
    return torch.stack(log_alphas, dim=1)


def _backward_log_betas(emissions: Tensor, mask: Tensor, end: Tensor, transitions: Tensor) -> Tensor:
    """log beta_t(i) = log sum of scores of all suffixes after tag i at word t (end score included): (B, W, L).

    Each row's last word and all its padding get beta = end, because the mask is left-aligned.
    """
    num_words = emissions.shape[1]
    log_beta = end.expand(emissions.shape[0], -1)
    log_betas = [log_beta]
    for word in range(num_words - 2, -1, -1):
        # (L_this, L_next) + (B, 1, L_next), reduced over the next tag.
        following = (emissions[:, word + 1] + log_beta).unsqueeze(1)
        step = torch.logsumexp(transitions + following, dim=2)
        log_beta = torch.where(mask[:, word + 1].unsqueeze(1), step, log_beta)
        log_betas.append(log_beta)
    return torch.stack(log_betas[::-1], dim=1)


def _viterbi(emissions: Tensor, mask: Tensor, start: Tensor, end: Tensor, transitions: Tensor) -> Tensor:
    """Best tag sequence per row: (B, W) long, -100 at masked positions."""
    batch_size, num_words, num_tags = emissions.shape
    keep_tag = torch.arange(num_tags, device=emissions.device).expand(batch_size, -1)
    best_score = start + emissions[:, 0]
    backpointers = []
    for word in range(1, num_words):
        candidates = best_score.unsqueeze(2) + transitions
        step_score, step_pointer = candidates.max(dim=1)
        word_is_real = mask[:, word].unsqueeze(1)
        best_score = torch.where(word_is_real, step_score + emissions[:, word], best_score)
        # At padding every tag points to itself, so backtracking walks through padding unchanged.
        backpointers.append(torch.where(word_is_real, step_pointer, keep_tag))
    current = (best_score + end).argmax(dim=1, keepdim=True)
    decoded = [current]
    for pointers in reversed(backpointers):
        current = pointers.gather(1, current)
        decoded.append(current)
    tags = torch.cat(decoded[::-1], dim=1)
    return tags.masked_fill(~mask, PADDING_TAG)


def decode_tags(logits: Tensor, word_mask: Tensor, crf: ConditionalRandomField | None) -> Tensor:
    """(B, W, L) emissions, (B, W) mask -> (B, W) long tags, PADDING_TAG at padding: Viterbi with `crf`, else
    argmax."""
    word_mask = word_mask.bool()
    if crf is not None:
        return crf.decode(logits, word_mask)
    return logits.argmax(dim=-1).masked_fill(~word_mask, PADDING_TAG)


__all__ = ["ConditionalRandomField", "decode_tags"]
