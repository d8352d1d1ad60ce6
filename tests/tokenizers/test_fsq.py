import pytest
import torch

from genrec.tokenizers import FSQ


def test_default_codebook_has_15360_codes():
    assert FSQ().codebook_size == 8 * 8 * 8 * 6 * 5 == 15360


@pytest.mark.parametrize("levels", [[8, 8, 8, 6, 5], [3, 4], [2, 7, 5]])
def test_each_channel_takes_exactly_its_number_of_levels(levels):
    fsq = FSQ(levels)
    z = torch.linspace(-20, 20, 20001)[:, None].expand(-1, len(levels))
    digits = fsq.indices_to_digits(fsq.codes_to_indices(fsq(z)))
    for c, n in enumerate(levels):
        assert sorted(digits[:, c].unique().tolist()) == list(range(n))


def test_forward_rounds_bounded_values_to_the_grid():
    fsq = FSQ([5, 4])
    z = torch.randn(100, 2) * 3
    q = fsq(z)
    half = torch.tensor([2.0, 2.0])
    assert torch.allclose(q * half, (fsq.bound(z)).round())
    assert q.abs().max() <= 1.0


def test_gradient_passes_straight_through_the_rounding():
    fsq = FSQ([8, 6])
    z = torch.randn(32, 2, requires_grad=True)
    fsq(z).sum().backward()
    # d/dz of bound(z) / half_width: rounding contributes identity, so the gradient is not zero.
    z2 = z.detach().clone().requires_grad_(True)
    (fsq.bound(z2) / fsq._half_width).sum().backward()
    assert torch.allclose(z.grad, z2.grad)
    assert (z.grad.abs() > 0).all()


def test_index_digits_round_trip_covers_the_whole_codebook():
    fsq = FSQ()
    idx = torch.arange(fsq.codebook_size)
    codes = fsq.indices_to_codes(idx)
    assert torch.equal(fsq.codes_to_indices(codes), idx)
    assert codes.unique(dim=0).shape[0] == fsq.codebook_size
    assert torch.equal(fsq.all_codes(), codes)


def test_bad_levels_and_shapes_are_refused():
    with pytest.raises(ValueError, match="levels"):
        FSQ([8, 1])
    with pytest.raises(ValueError, match="last dimension"):
        FSQ([8, 8])(torch.zeros(3, 5))
