"""The garbage collector's settings for a long-running process of ours (a server process, a
campaign build worker), applied once its start-up is done.

Why: CPython's cyclic collector runs a young-generation pass every 700 net container
allocations, and every hundredth pass is a full one over every tracked object in the process.
A server process holds a few hundred thousand such objects that live as long as it does (modules,
SQLAlchemy's tables and compiled statements, Jinja's environment), and a campaign batch
allocates hundreds of thousands of short-lived ones (contacts, rows, tuples), so the collector
kept walking the same long-lived heap: measured on the 100,000-message campaign bench, 27 us of
the dispatcher's 142 us of CPU a message went to it.

So, once start-up is done:
- `gc.freeze()` moves every object alive then to a permanent generation the collector never
  walks (they would survive anyway);
- the young generation's threshold is raised from 700 to YOUNG_THRESHOLD allocations: a pass
  costs about the same per young object whatever the threshold, but fewer passes promote fewer
  short-lived objects into the older generations, which are what made the passes expensive.

Reference cycles are still collected, later; the memory they hold meanwhile is a few
megabytes at most.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 50_000  # net container allocations between two young-generation passes
OLDER_THRESHOLD = 10  # CPython's default for the two older generations


def settle() -> None:
    """Call once a process's start-up is done (see the module doc); calling again also freezes
    what was made since."""
    gc.collect()  # what start-up left as garbage is freed, not frozen
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, OLDER_THRESHOLD, OLDER_THRESHOLD)


__all__ = ["OLDER_THRESHOLD", "YOUNG_THRESHOLD", "settle"]
