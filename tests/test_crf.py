"""The CRF against brute-force enumeration of every tag sequence on tiny inputs, plus its edge cases."""

import itertools

import pytest
import torch

from modeling_mgcm.crf import ConditionalRandomField

NUM_TAGS = 3

# (row lengths, padded width): ragged rows, full rows, length-1 rows, a batch of only length-1 rows.
LENGTH_CASES = [
    ([4], 4),
    ([1], 1),
    ([1, 1, 1], 1),
    ([1, 1], 3),
    ([3, 1, 4, 2], 4),
    ([2, 2], 5),
    ([5, 3, 1], 5),
]


def make_crf(num_tags: int = NUM_TAGS, seed: int = 0) -> ConditionalRandomField:
    """A CRF whose transition scores are large enough that they change the answers."""
    crf = ConditionalRandomField(num_tags)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in (crf.start_transitions, crf.end_transitions, crf.transitions):
            parameter.copy_(torch.randn(parameter.shape, generator=generator))
    return crf


def make_inputs(lengths: list[int], width: int, num_tags: int = NUM_TAGS, seed: int = 0):
    """Random emissions (B, W, L), random tags (B, W) with -100 at padding, and the prefix mask (B, W)."""
    generator = torch.Generator().manual_seed(seed)
    emissions = torch.randn(len(lengths), width, num_tags, generator=generator) * 2
    mask = torch.arange(width).unsqueeze(0) < torch.tensor(lengths).unsqueeze(1)
    tags = torch.randint(num_tags, (len(lengths), width), generator=generator).masked_fill(~mask, -100)
    return emissions, tags, mask


def brute_force(crf: ConditionalRandomField, emissions: torch.Tensor, length: int):
    """Every tag sequence of one row, scored in float64 straight from the CRF's definition.

    Returns (sequences (S, n), scores (S,)) with S = num_tags ** n.
    """
    start = crf.start_transitions.detach().double()
    end = crf.end_transitions.detach().double()
    transitions = crf.transitions.detach().double()
    row = emissions[:length].double()
    sequences = torch.tensor(list(itertools.product(range(crf.num_tags), repeat=length)))
    scores = (
        start[sequences[:, 0]]
        + row[torch.arange(length), sequences].sum(dim=1)
        + transitions[sequences[:, :-1], sequences[:, 1:]].sum(dim=1)
        + end[sequences[:, -1]]
    )
    return sequences, scores


@pytest.mark.parametrize(("lengths", "width"), LENGTH_CASES)
def test_the_nll_of_each_row_matches_enumeration(lengths, width):
    """The forward algorithm: log Z minus the gold path's score, against every tag sequence of the row."""
    crf = make_crf()
    emissions, tags, mask = make_inputs(lengths, width)
    nll = crf(emissions, tags, mask)
    assert nll.shape == (len(lengths),)
    for row, length in enumerate(lengths):
        sequences, scores = brute_force(crf, emissions[row], length)
        gold = (sequences == tags[row, :length]).all(dim=1)
        expected_nll = torch.logsumexp(scores, dim=0) - scores[gold].squeeze(0)
        assert nll[row].item() == pytest.approx(expected_nll.item(), abs=1e-4)


@pytest.mark.parametrize(("lengths", "width"), LENGTH_CASES)
def test_an_unlabelled_real_word_is_summed_over_as_enumeration_says(lengths, width):
    """-100 on a real word means "ignore this word": the likelihood sums over every tag it could take."""
    crf = make_crf(seed=4)
    emissions, tags, mask = make_inputs(lengths, width, seed=4)
    generator = torch.Generator().manual_seed(4)
    unlabelled = mask & (torch.rand(mask.shape, generator=generator) < 0.5)
    unlabelled[0, 0] = True  # at least one, and at the first word, where the start score applies
    partial = tags.masked_fill(unlabelled, -100)
    emissions.requires_grad_(True)
    nll = crf(emissions, partial, mask)
    nll.sum().backward()
    assert torch.isfinite(emissions.grad).all()
    for row, length in enumerate(lengths):
        sequences, scores = brute_force(crf, emissions[row].detach(), length)
        labelled = ~unlabelled[row, :length]
        agrees = ((sequences == tags[row, :length]) | ~labelled).all(dim=1)
        expected = torch.logsumexp(scores, dim=0) - torch.logsumexp(scores[agrees], dim=0)
        assert nll[row].item() == pytest.approx(expected.item(), abs=1e-4)
    # A row with every word unlabelled carries no information: its loss is 0.
    all_unknown = crf(emissions.detach(), tags.masked_fill(mask, -100), mask)
    assert torch.allclose(all_unknown, torch.zeros_like(all_unknown), atol=1e-4)


@pytest.mark.parametrize(("lengths", "width"), LENGTH_CASES)
def test_decode_is_the_enumerated_argmax_with_padding_marked(lengths, width):
    crf = make_crf(seed=1)
    emissions, _, mask = make_inputs(lengths, width, seed=1)
    decoded = crf.decode(emissions, mask)
    assert decoded.dtype == torch.long
    assert decoded.shape == (len(lengths), width)
    for row, length in enumerate(lengths):
        sequences, scores = brute_force(crf, emissions[row], length)
        assert decoded[row, :length].tolist() == sequences[scores.argmax()].tolist()
        assert (decoded[row, length:] == -100).all()


@pytest.mark.parametrize(("lengths", "width"), LENGTH_CASES)
def test_marginals_match_enumeration_and_are_zero_at_padding(lengths, width):
    crf = make_crf(seed=2)
    emissions, _, mask = make_inputs(lengths, width, seed=2)
    marginals = crf.marginals(emissions, mask)
    assert marginals.shape == emissions.shape
    for row, length in enumerate(lengths):
        sequences, scores = brute_force(crf, emissions[row], length)
        probabilities = torch.softmax(scores, dim=0)
        one_hot = torch.nn.functional.one_hot(sequences, crf.num_tags).double()
        expected = torch.einsum("s,snl->nl", probabilities, one_hot)
        torch.testing.assert_close(marginals[row, :length].double(), expected, atol=1e-5, rtol=0)
        assert (marginals[row, length:] == 0).all()


def test_the_nll_gradient_is_the_marginals_minus_the_gold_tags():
    """d NLL / d emissions = P(y_t = tag) - [gold tag], from forward-backward; 0 at padding."""
    crf = make_crf(seed=3)
    emissions, tags, mask = make_inputs([6, 2, 4], 6, seed=3)
    emissions.requires_grad_(True)
    (gradient,) = torch.autograd.grad(crf(emissions, tags, mask).sum(), emissions)
    gold = torch.nn.functional.one_hot(tags.clamp(min=0), crf.num_tags) * mask.unsqueeze(-1)
    expected = crf.marginals(emissions.detach(), mask) - gold
    torch.testing.assert_close(gradient, expected, atol=1e-5, rtol=0)


def test_tags_at_masked_positions_are_ignored():
    crf = make_crf(seed=5)
    emissions, tags, mask = make_inputs([4, 2], 4, seed=5)
    other_padding = tags.masked_fill(~mask, 2)
    torch.testing.assert_close(crf(emissions, tags, mask), crf(emissions, other_padding, mask))


def test_padding_does_not_change_a_row():
    crf = make_crf(seed=6)
    emissions, tags, mask = make_inputs([2, 5], 5, seed=6)
    # Garbage in the padding must not reach any result.
    emissions[0, 2:] = 1e3
    alone = emissions[:1, :2], tags[:1, :2], mask[:1, :2]
    batched = emissions, tags, mask
    torch.testing.assert_close(crf(*batched)[:1], crf(*alone))
    assert crf.decode(*batched[::2])[0, :2].tolist() == crf.decode(*alone[::2])[0].tolist()
    torch.testing.assert_close(crf.marginals(*batched[::2])[0, :2], crf.marginals(*alone[::2])[0])


def test_all_masked_row_is_rejected_naming_the_row():
    crf = make_crf()
    emissions, tags, mask = make_inputs([3, 2, 3], 3)
    mask[1] = False
    for call in (
        lambda: crf(emissions, tags, mask),
        lambda: crf.decode(emissions, mask),
        lambda: crf.marginals(emissions, mask),
    ):
        with pytest.raises(ValueError, match=r"rows \[1\] have no unmasked word"):
            call()


def test_mask_that_is_not_a_prefix_is_rejected_naming_the_row():
    crf = make_crf()
    emissions, tags, mask = make_inputs([3, 3, 3], 3)
    mask[2] = torch.tensor([True, False, True])
    with pytest.raises(ValueError, match=r"rows \[2\] are not left-aligned.*\[1, 0, 1\]"):
        crf.decode(emissions, mask)
    mask[2] = torch.tensor([False, True, True])
    with pytest.raises(ValueError, match=r"rows \[2\] are not left-aligned"):
        crf(emissions, tags, mask)


def test_bad_shapes_dtypes_and_tag_values_are_rejected():
    crf = make_crf()
    emissions, tags, mask = make_inputs([3, 2], 3)
    with pytest.raises(ValueError, match=r"\(batch, words, 3\)"):
        crf.decode(emissions[..., :2], mask)
    with pytest.raises(ValueError, match="mask shape"):
        crf.decode(emissions, mask[:, :2])
    with pytest.raises(TypeError, match="mask must be bool"):
        crf.decode(emissions, mask.long())
    bad_tags = tags.clone()
    bad_tags[1, 1] = 7
    with pytest.raises(ValueError, match="tag 7 at row 1, word 1"):
        crf(emissions, bad_tags, mask)
    bad_tags[1, 1] = -5
    with pytest.raises(ValueError, match="tag -5 at row 1, word 1"):
        crf(emissions, bad_tags, mask)


def test_large_emissions_stay_finite():
    crf = make_crf(seed=7)
    emissions, tags, mask = make_inputs([6, 3, 1], 6, seed=7)
    emissions = (emissions * 1e4).requires_grad_(True)
    nll = crf(emissions, tags, mask)
    assert torch.isfinite(nll).all()
    assert (nll >= 0).all()
    nll.sum().backward()
    assert torch.isfinite(emissions.grad).all()
    assert all(torch.isfinite(parameter.grad).all() for parameter in crf.parameters())
    marginals = crf.marginals(emissions.detach(), mask)
    assert torch.isfinite(marginals).all()
    torch.testing.assert_close(marginals.sum(dim=-1), mask.float())
    # With emissions this large the transitions cannot outweigh them: Viterbi follows the emissions.
    expected = emissions.detach().argmax(dim=-1).masked_fill(~mask, -100)
    assert torch.equal(crf.decode(emissions.detach(), mask), expected)


def test_gradient_reaches_all_three_parameter_tensors():
    crf = make_crf(seed=8)
    emissions, tags, mask = make_inputs([4, 2, 3], 4, seed=8)
    crf(emissions, tags, mask).mean().backward()
    for name in ("start_transitions", "end_transitions", "transitions"):
        gradient = getattr(crf, name).grad
        assert gradient is not None, name
        assert gradient.abs().sum() > 0, name


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_emissions_are_computed_in_float32(dtype):
    crf = make_crf(seed=9)
    emissions, tags, mask = make_inputs([4, 2], 4, seed=9)
    low = emissions.to(dtype)
    upcast = low.float()
    nll = crf(low, tags, mask)
    marginals = crf.marginals(low, mask)
    assert nll.dtype == marginals.dtype == torch.float32
    torch.testing.assert_close(nll, crf(upcast, tags, mask))
    torch.testing.assert_close(marginals, crf.marginals(upcast, mask))
    assert torch.equal(crf.decode(low, mask), crf.decode(upcast, mask))


def test_autocast_does_not_lower_crf_precision():
    crf = make_crf(seed=10)
    emissions, tags, mask = make_inputs([5, 3], 5, seed=10)
    expected = crf(emissions, tags, mask)
    with torch.autocast(device_type=emissions.device.type, dtype=torch.bfloat16):
        nll = crf(emissions.to(torch.bfloat16), tags, mask)
        crf_in_half = make_crf(seed=10).to(torch.bfloat16)
        half_parameter_nll = crf_in_half(emissions, tags, mask)
    assert nll.dtype == half_parameter_nll.dtype == torch.float32
    torch.testing.assert_close(nll, crf(emissions.to(torch.bfloat16).float(), tags, mask))
    # Parameters stored in bfloat16 are rounded, but the sums over them are still float32.
    torch.testing.assert_close(half_parameter_nll, expected, atol=0.1, rtol=0.01)


def test_reset_parameters_draws_small_uniform_scores():
    crf = make_crf()
    crf.reset_parameters()
    assert crf.transitions.shape == (NUM_TAGS, NUM_TAGS)
    assert crf.start_transitions.shape == crf.end_transitions.shape == (NUM_TAGS,)
    for parameter in crf.parameters():
        assert parameter.abs().max() <= 0.1
        assert parameter.std() > 0
    with pytest.raises(ValueError, match="num_tags"):
        ConditionalRandomField(0)
