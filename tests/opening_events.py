"""What the tests of the integrations assert about the default's opening in a rewinding loop."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

# the default opening's multipliers in the order it tries them (1, the start, last)
DEFAULT_ORDER = [0.1, 0.316, 3.16, 10.0, 1.0]


def assert_default_opening(events: Sequence[dict[str, Any]]) -> None:
    """The run opened with the default's range test: one ``opening_candidate`` per discarded
    multiplier, the grid 1/10 .. 10x in order, then at most the two extension rounds past its
    edge (``opening_extends``) that a choice at the edge adds, then the ``opening``."""
    kinds = [e["kind"] for e in events]
    assert "opening" in kinds, kinds
    i = kinds.index("opening")
    assert kinds[:i] == ["opening_candidate"] * i, kinds[: i + 1]
    factors = events[i]["factors"]
    assert len(factors) == i + 1 and 5 <= len(factors) <= 7, factors
    assert factors[:5] == pytest.approx(DEFAULT_ORDER), factors
