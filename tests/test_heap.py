"""heap.settle: what start-up left alive is frozen out of the collector's passes and the young
generation's threshold raised (the module doc says why); cycles made after it are still
collected."""

from __future__ import annotations

import gc
import weakref

from mailprime import heap


class _Node:
    def __init__(self) -> None:
        self.other: _Node | None = None


def test_settle_freezes_start_up_and_raises_the_young_threshold() -> None:
    before = gc.get_threshold()
    try:
        heap.settle()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (heap.YOUNG_THRESHOLD, heap.OLDER_THRESHOLD,
                                      heap.OLDER_THRESHOLD)
        a, b = _Node(), _Node()
        a.other, b.other = b, a  # a cycle made after start-up
        gone = weakref.ref(a)
        del a, b
        gc.collect()
        assert gone() is None
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
