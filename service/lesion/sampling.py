"""Which blocks a lesion study removes or swaps: seeded, reproducible draws.

Every draw comes from a `numpy.random.Generator` that the caller seeds, so
the same seed gives the same sets and orders on any machine.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Points on the default grid of k (blocks removed at once).
DEFAULT_GRID_POINTS = 9


def default_grid(num_blocks: int, points: int = DEFAULT_GRID_POINTS) -> list[int]:
    """About `points` values of k spread evenly from 1 to `num_blocks`."""
    spread = np.linspace(1, num_blocks, min(points, num_blocks))
    return sorted({round(float(k)) for k in spread})


def default_swaps_grid(num_swappable: int) -> list[int]:
    """Swap counts 1, 2, 4, ... up to the number of swappable blocks.

    Past that many swaps an order is close to a random shuffle of each stage,
    so more swaps add little but evaluation time.
    """
    grid = [1]
    while grid[-1] * 2 <= num_swappable:
        grid.append(grid[-1] * 2)
    return grid


def draw_removal_sets(
    num_blocks: int, grid: Sequence[int], draws: int, rng: np.random.Generator
) -> list[list[list[int]]]:
    """For each k of `grid`, `draws` sets of k distinct blocks, each sorted.

    Draws are independent, so a set can come up twice where few exist (k near
    1 or near `num_blocks`); the study evaluates each distinct set once.
    """
    return [
        [sorted(rng.choice(num_blocks, size=k, replace=False).tolist()) for _ in range(draws)]
        for k in grid
    ]


def swappable_pairs(stages: Sequence[int], swappable: Sequence[bool]) -> list[tuple[int, int]]:
    """Pairs of blocks (i < j) of one stage that may trade places.

    Args:
        stages: the stage of each block, in network order.
        swappable: whether each block maps its input to a tensor of the same
            shape through an identity shortcut (see `service.lesion.reordering`).
    """
    candidates = [index for index, ok in enumerate(swappable) if ok]
    return [
        (first, second)
        for position, first in enumerate(candidates)
        for second in candidates[position + 1 :]
        if stages[first] == stages[second]
    ]


def draw_orders(
    num_blocks: int,
    pairs: Sequence[tuple[int, int]],
    swaps_grid: Sequence[int],
    draws: int,
    rng: np.random.Generator,
) -> list[list[list[int]]]:
    """For each swap count s, `draws` block orders made by s random swaps.

    Each swap exchanges the blocks at the two positions of a pair drawn
    uniformly from `pairs`, starting from the network's own order; `order[p]`
    is the block that runs at position p. Later swaps can undo earlier ones.

    Raises:
        ValueError: `pairs` is empty, so no block can move.
    """
    if not pairs:
        raise ValueError("no two blocks of one stage can be swapped in this network")

    grid_orders = []
    for swaps in swaps_grid:
        orders = []
        for _ in range(draws):
            order = list(range(num_blocks))
            for pick in rng.integers(len(pairs), size=swaps):
                first, second = pairs[pick]
                order[first], order[second] = order[second], order[first]
            orders.append(order)
        grid_orders.append(orders)
    return grid_orders


def kendall_tau(order: Sequence[int]) -> float:
    """Kendall's rank correlation between `order` and the identity order.

    1 for the network's own order, -1 for its reverse; Veit et al. 2016 use
    it to say how far a reordered network is from the trained one.
    """
    ranks = np.asarray(order)
    count = len(ranks)
    if count < 2:
        return 1.0
    later = np.triu(np.ones((count, count), dtype=bool), k=1)
    signs = np.sign(ranks[None, :] - ranks[:, None])[later]
    return float(signs.sum() / later.sum())
