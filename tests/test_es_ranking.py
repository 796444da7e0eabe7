"""Tie-aware fitness shaping: equal fitnesses get equal utility, against a direct computation."""

import pytest
import torch
from evotorch.tools import ranking

from metods_evo.optimizers.es import TIE_AVERAGED


def reference(fitnesses: list[float], base: str) -> list[float]:
    """The base ranker's utility of each rank, averaged over the ranks a group of equal fitnesses occupies."""
    n = len(fitnesses)
    by_rank = ranking.rankers[base](torch.arange(n, 0, -1, dtype=torch.float64)).tolist()  # by_rank[k]: k-th best
    ordered = sorted(range(n), key=lambda i: -fitnesses[i])
    out = [0.0] * n
    k = 0
    while k < n:
        group = [i for i in ordered if fitnesses[i] == fitnesses[ordered[k]]]
        share = sum(by_rank[k:k + len(group)]) / len(group)
        for i in group:
            out[i] = share
        k += len(group)
    return out


@pytest.mark.parametrize("base", ["nes", "centered"])
def test_tied_fitnesses_share_the_mean_utility_of_their_ranks(base):
    generator = torch.Generator().manual_seed(0)
    fitnesses = torch.randint(-3, 4, (64,), generator=generator).double() / 16  # steps of 1/16, many ties
    got = ranking.rankers[TIE_AVERAGED[base]](fitnesses)
    torch.testing.assert_close(got, torch.tensor(reference(fitnesses.tolist(), base), dtype=torch.float64))
    assert abs(float(got.sum())) < 1e-9  # still zero-sum: a tie adds no net direction
    groups = {}
    for value, utility in zip(fitnesses.tolist(), got.tolist()):
        groups.setdefault(value, set()).add(round(utility, 12))
    assert all(len(u) == 1 for u in groups.values())
    assert len(groups) > 1 and max(groups) > min(groups)


@pytest.mark.parametrize("base", ["nes", "centered"])
def test_distinct_fitnesses_rank_as_the_base_ranker(base):
    fitnesses = torch.randn(100, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    torch.testing.assert_close(ranking.rankers[TIE_AVERAGED[base]](fitnesses), ranking.rankers[base](fitnesses))


def test_utilities_do_not_depend_on_the_order_of_the_population():
    fitnesses = torch.tensor([0.5, 0.25, 0.5, 1.0, 0.25, 0.25, 0.0, 1.0])
    permutation = torch.randperm(len(fitnesses), generator=torch.Generator().manual_seed(2))
    ranker = ranking.rankers[TIE_AVERAGED["nes"]]
    torch.testing.assert_close(ranker(fitnesses)[permutation], ranker(fitnesses[permutation]))
    # evotorch's own ranker orders ties by index, so the same population in another order gets other utilities
    assert not torch.equal(ranking.nes(fitnesses)[permutation], ranking.nes(fitnesses[permutation]))
