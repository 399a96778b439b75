"""Stratified item sampling for comparison jobs (backend.jobs.actions.sample_items)."""

from collections import Counter
from types import SimpleNamespace


from backend.jobs.actions import sample_items


def make_items(sizes):
    """Items in suite order, grouped by category, with ``sizes`` {category: count}."""
    items = []
    for category, count in sizes.items():
        for _ in range(count):
            items.append(SimpleNamespace(category=category, position=len(items)))
    return items


def categories(items):
    return Counter(item.category for item in items)


def test_sample_limit_covers_all():
    items = make_items({"b": 2, "a": 3})

    assert sample_items(items, 5, seed=1) == items
    assert sample_items(items, 50, seed=1) == items
    assert sample_items(items, None, seed=1) == items
    assert sample_items(items, 5, seed=1) is not items


def test_sample_proportions_exact():
    items = make_items({"Animals": 60, "Artifacts": 30, "Food": 10})

    sample = sample_items(items, 10, seed=0)

    assert len(sample) == 10
    assert categories(sample) == {"Animals": 6, "Artifacts": 3, "Food": 1}


def test_sample_largest_remainder():
    # Exact shares are 2.5, 1.5 and 1.0; the one spare slot goes to a remainder of 0.5,
    # the tie between A and B broken by category name.
    items = make_items({"B": 3, "A": 5, "C": 2})

    sample = sample_items(items, 5, seed=0)

    assert categories(sample) == {"A": 3, "B": 1, "C": 1}


def test_sample_tie_exact_arithmetic():
    # Exact shares 25/3, 4/3 and 1/3 all leave a remainder of 1/3; by name "a" gets the spare.
    items = make_items({"a": 4, "b": 1, "c": 25})

    sample = sample_items(items, 10, seed=0)

    assert categories(sample) == {"a": 2, "c": 8}


def test_sample_small_category_can_vanish():
    # Proportional allocation: a category whose share rounds to zero gets no item.
    items = make_items({"big": 98, "tiny": 2})

    sample = sample_items(items, 10, seed=3)

    assert categories(sample) == {"big": 10}


def test_sample_reproducible():
    items = make_items({"x": 40, "y": 25, "z": 35})

    first = sample_items(items, 20, seed=7)
    again = sample_items(items, 20, seed=7)
    other = sample_items(items, 20, seed=8)

    assert [item.position for item in first] == [item.position for item in again]
    assert [item.position for item in first] != [item.position for item in other]
    assert categories(other) == categories(first) == {"x": 8, "y": 5, "z": 7}


def test_sample_keeps_suite_order():
    items = make_items({"x": 30, "y": 30})

    positions = [item.position for item in sample_items(items, 12, seed=5)]

    assert positions == sorted(positions)
    assert len(set(positions)) == 12


def test_sample_without_categories():
    items = make_items({"": 50})

    sample = sample_items(items, 7, seed=2)

    assert len(sample) == 7
    assert all(item in items for item in sample)


def test_sample_zero_limit():
    assert sample_items(make_items({"a": 3}), 0, seed=0) == []
