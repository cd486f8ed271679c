"""Partitions: every slice gets ε from exactly one group, for any Z >= 3 (hypothesis)."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ctblend.priors.partitions import (
    Partition,
    PartitionPolicy,
    adjacency_partition,
    cross_partition,
)

Z = st.integers(min_value=3, max_value=120)


def _writers(p: Partition) -> Counter:
    return Counter(i for g in p.groups for i, w in zip(g.indices, g.writes, strict=True) if w)


def _check_cover(p: Partition, z: int) -> None:
    assert p.num_slices == z
    assert _writers(p) == Counter(range(z)), "some slice is written twice or never"
    for g in p.groups:
        assert all(0 <= i < z for i in g.indices)
        assert any(g.writes)


@settings(max_examples=200, deadline=None)
@given(z=Z, offset=st.integers(0, 2))
def test_adjacency_partition_properties(z, offset):
    p = adjacency_partition(z, offset)
    _check_cover(p, z)
    assert p.label == 1 and p.kind == "adjacency"
    for g in p.groups:
        a, b, c = g.indices
        assert (b - a, c - b) == (1, 1), "adjacency groups hold three consecutive slices"
    # Full groups start at offset, offset + 3, …; the only other windows are the borders.
    starts = {g.indices[0] for g in p.groups}
    interior = {j for j in range(offset, z - 2, 3)}
    assert starts <= interior | {0, z - 3}
    assert interior <= starts


@pytest.mark.parametrize("z", range(9, 65))
def test_every_cross_group_is_a_true_gap3_triple_inside_the_volume(z):
    """Red before: Z = 32 fed (27, 30, 31), (28, 31, 31), (29, 31, 31) labelled gap 3."""
    p = cross_partition(z)
    _check_cover(p, z)
    assert p.label == 3 and p.kind == "cross"
    for g in p.groups:
        a, b, c = g.indices
        assert (b - a, c - b) == (3, 3) and 0 <= a and c < z, g.indices


def test_cross_partition_tail_hand_cases():
    tail = [(g.indices, g.writes) for g in cross_partition(10).groups]
    assert tail == [
        ((0, 3, 6), (True, True, True)),
        ((1, 4, 7), (True, True, True)),
        ((2, 5, 8), (True, True, True)),
        ((3, 6, 9), (False, False, True)),  # the block [1, 10) writes only slice 9
    ]
    tail = [(g.indices, g.writes) for g in cross_partition(32).groups[-3:]]
    assert tail == [
        ((23, 26, 29), (False, False, True)),  # the block [23, 32): slices 27…31 were missing
        ((24, 27, 30), (False, True, True)),
        ((25, 28, 31), (False, True, True)),
    ]


def test_cross_partition_hand_case():
    p = cross_partition(18)
    assert [g.indices for g in p.groups] == [
        (0, 3, 6),
        (1, 4, 7),
        (2, 5, 8),
        (9, 12, 15),
        (10, 13, 16),
        (11, 14, 17),
    ]
    assert all(g.writes == (True, True, True) for g in p.groups)


def test_adjacency_hand_cases():
    p = adjacency_partition(10, 2)
    assert [(g.indices, g.writes) for g in p.groups] == [
        ((0, 1, 2), (True, True, False)),
        ((2, 3, 4), (True, True, True)),
        ((5, 6, 7), (True, True, True)),
        ((7, 8, 9), (False, True, True)),
    ]
    # Z = 3: every offset collapses to the single window.
    for s in range(3):
        assert [(g.indices, g.writes) for g in adjacency_partition(3, s).groups] == [
            ((0, 1, 2), (True, True, True))
        ]


@settings(max_examples=100, deadline=None)
@given(z=Z, step=st.integers(0, 400), k=st.integers(0, 8), seed=st.integers(0, 2**31))
def test_policy_alternation_and_labels(z, step, k, seed):
    policy = PartitionPolicy("random", k)
    p = policy(z, step, torch.Generator().manual_seed(seed))
    _check_cover(p, z)
    use_cross = k > 0 and step % k == 0 and z >= 9
    assert p.kind == ("cross" if use_cross else "adjacency")
    assert p.label == (3 if use_cross else 1)


def test_default_policy_is_cross_on_even_steps_as_the_authors_code():
    """Their loop runs ``ct += 1`` then ``if ct % 2 == 1`` (cross): 0-based steps 0, 2, 4 …"""
    policy = PartitionPolicy()
    gen = torch.Generator().manual_seed(0)
    kinds = [policy(30, s, gen).kind for s in range(6)]
    assert kinds == ["cross", "adjacency"] * 3
    assert policy(8, 0, gen).kind == "adjacency"  # no gap-3 partition below 9 slices
    starts = {policy(30, 1, gen).groups[1].indices[0] for _ in range(60)}
    assert starts == {1, 2, 3}  # second group starts at s or s + 3 for s = 0, 1, 2


def test_fixed_policy_is_deterministic_offset_zero():
    policy = PartitionPolicy("fixed", 0)
    for step in range(5):
        assert policy(12, step) == adjacency_partition(12, 0)


def test_invalid_inputs():
    with pytest.raises(ValueError, match="at least 3 slices"):
        adjacency_partition(2)
    with pytest.raises(ValueError, match="at least 9 slices"):
        cross_partition(8)
    with pytest.raises(ValueError, match="offset"):
        adjacency_partition(9, 3)
    with pytest.raises(ValueError, match="offset"):
        PartitionPolicy("sometimes")
