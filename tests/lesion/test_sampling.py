"""Grids, seeded draws and Kendall's tau of the lesion study."""

from __future__ import annotations

import numpy as np
import pytest

from service.lesion.sampling import (
    default_grid,
    default_swaps_grid,
    draw_orders,
    draw_removal_sets,
    kendall_tau,
    swappable_pairs,
)


@pytest.mark.parametrize("num_blocks", [1, 3, 9, 27, 54])
def test_default_grid_spreads_from_one_to_all_blocks(num_blocks: int) -> None:
    grid = default_grid(num_blocks)
    assert grid[0] == 1 and grid[-1] == num_blocks
    assert grid == sorted(set(grid))
    assert len(grid) == min(num_blocks, 9)


def test_default_swaps_grid_doubles_up_to_the_movable_blocks() -> None:
    assert default_swaps_grid(1) == [1]
    assert default_swaps_grid(7) == [1, 2, 4]
    assert default_swaps_grid(25) == [1, 2, 4, 8, 16]


def test_removal_sets_depend_only_on_the_seed() -> None:
    def draw(seed: int) -> list[list[list[int]]]:
        return draw_removal_sets(27, [1, 5, 27], 4, np.random.default_rng(seed))

    assert draw(3) == draw(3)
    assert draw(3) != draw(4)
    assert all(len(set(s)) == len(s) == k for k, sets in zip([1, 5, 27], draw(3)) for s in sets)


def test_pairs_stay_within_a_stage_and_skip_fixed_blocks() -> None:
    stages = [1, 1, 1, 2, 2, 2]
    swappable = [True, True, False, False, True, True]
    assert swappable_pairs(stages, swappable) == [(0, 1), (4, 5)]


def test_orders_are_permutations_made_of_the_given_pairs() -> None:
    pairs = [(0, 1), (4, 5)]
    per_swaps = draw_orders(6, pairs, [1, 2, 8], 5, np.random.default_rng(0))
    assert [len(orders) for orders in per_swaps] == [5, 5, 5]
    for order in (order for orders in per_swaps for order in orders):
        assert sorted(order[:2]) == [0, 1] and order[2:4] == [2, 3]
        assert sorted(order[4:]) == [4, 5]
    # One swap always changes the order; there is only one way to do it per pair.
    assert all(order != list(range(6)) for order in per_swaps[0])


def test_orders_need_a_pair() -> None:
    with pytest.raises(ValueError, match="no two blocks"):
        draw_orders(3, [], [1], 1, np.random.default_rng(0))


@pytest.mark.parametrize(
    ("order", "tau"),
    [([0, 1, 2, 3], 1.0), ([3, 2, 1, 0], -1.0), ([1, 0, 2, 3], 4 / 6), ([0], 1.0)],
)
def test_kendall_tau_counts_pairs_in_order(order: list[int], tau: float) -> None:
    assert kendall_tau(order) == pytest.approx(tau)
