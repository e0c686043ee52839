"""relative_skew against a direct (materialised, L×L×D) computation of relative scores."""

from __future__ import annotations

import pytest
import torch

from attnkit.positions import relative_skew


def materialised(q: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """S_rel[b, h, i, j] = q_i · E[distance j - p_i] for j ≤ p_i (Shaw et al. 2018), with the
    (Lq, Lk, D) tensor of embeddings that skewing avoids; 0 after the query."""
    b, h, lq, d = q.shape
    lk = table.shape[-2]
    table = table if table.dim() == 3 else table.unsqueeze(0).expand(h, lk, d)
    out = torch.zeros(b, h, lq, lk, dtype=q.dtype)
    for i in range(lq):
        p = lk - lq + i  # bottom-right aligned query position
        for j in range(p + 1):
            row = (j - p) + (lk - 1)  # row r of the table embeds distance r - (Lk - 1)
            out[:, :, i, j] = (q[:, :, i, :] * table[:, row, :]).sum(-1)
    return out


@pytest.mark.parametrize(("lq", "lk"), [(1, 1), (7, 7), (13, 13), (1, 9), (4, 11)])
@pytest.mark.parametrize("shared", [False, True])
def test_skew_equals_the_materialised_relative_scores(lq: int, lk: int, shared: bool) -> None:
    q = torch.randn(2, 3, lq, 5, dtype=torch.float64)
    table = torch.randn(lk, 5, dtype=torch.float64) if shared else torch.randn(
        3, lk, 5, dtype=torch.float64
    )
    torch.testing.assert_close(relative_skew(q, table), materialised(q, table))


def test_skew_matches_the_papers_square_recipe() -> None:
    # Huang et al. 2018, step by step for Lq = Lk = L: pad a zero column on the left, reshape
    # to (L+1, L), drop the first row, reshape to (L, L); below the diagonal it is S_rel.
    q, table = torch.randn(1, 1, 6, 4), torch.randn(6, 4)
    qe = q[0, 0] @ table.T  # (L, L)
    paper = torch.cat((torch.zeros(6, 1), qe), dim=1).reshape(7, 6)[1:].reshape(6, 6)
    torch.testing.assert_close(relative_skew(q, table)[0, 0], paper.tril())


def test_skew_gradient_flows_to_queries_and_embeddings() -> None:
    q = torch.randn(1, 2, 5, 3, dtype=torch.float64, requires_grad=True)
    table = torch.randn(2, 8, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(relative_skew, (q, table))


@pytest.mark.parametrize(
    ("q_shape", "t_shape", "error"),
    [
        ((2, 3, 5, 4), (3, 4, 4), ValueError),  # Lq > Lk
        ((2, 3, 5, 4), (2, 5, 4), ValueError),  # heads differ
        ((2, 3, 5, 4), (3, 5, 6), ValueError),  # dims differ
        ((3, 5, 4), (5, 4), ValueError),  # q not 4-D
    ],
)
def test_bad_shapes_raise_naming_them(q_shape, t_shape, error) -> None:
    with pytest.raises(error, match="relative_skew"):
        relative_skew(torch.randn(*q_shape), torch.randn(*t_shape))


def test_mixed_dtypes_raise() -> None:
    with pytest.raises(TypeError, match="dtypes differ"):
        relative_skew(torch.randn(1, 1, 2, 2), torch.randn(2, 2, dtype=torch.float64))


def test_without_zeroing_the_visible_part_is_unchanged() -> None:
    q = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    table = torch.randn(3, 9, 4, dtype=torch.float64)
    visible = ~torch.ones(5, 9, dtype=torch.bool).triu(9 - 5 + 1)
    fast = relative_skew(q, table, zero_future=False)
    assert torch.isfinite(fast).all()
    torch.testing.assert_close(fast[..., visible], materialised(q, table)[..., visible])
