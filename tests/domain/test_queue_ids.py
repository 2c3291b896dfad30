"""Queue ids: `queue_id_of_number` (two base-31 digits a division) writes what one digit at a
time wrote, and `queue_id_number` reads it back; new ids sort by time."""

from __future__ import annotations

import time

from hypothesis import given
from hypothesis import strategies as st

from mailprime.domain.ids import (
    _ALPHABET,
    QUEUE_ID_LENGTH,
    QUEUE_ID_OCTETS,
    new_queue_id,
    queue_id_number,
    queue_id_of_number,
)


def _one_digit_at_a_time(n: int) -> str:
    out = []
    while n:
        n, r = divmod(n, len(_ALPHABET))
        out.append(_ALPHABET[r])
    return "".join(reversed(out)).rjust(QUEUE_ID_LENGTH, "0")


@given(st.integers(min_value=0, max_value=2 ** (8 * QUEUE_ID_OCTETS) - 1))
def test_two_digits_at_a_time_write_the_same_id_and_it_reads_back(n: int) -> None:
    made = queue_id_of_number(n)
    assert made == _one_digit_at_a_time(n)
    if len(made) == QUEUE_ID_LENGTH or made[0] != "0":
        assert queue_id_number(made) == n


def test_edges_and_order() -> None:
    for n in (0, 1, 30, 31, 960, 961, 962, 31 ** 18, 31 ** 19 - 1):
        assert queue_id_of_number(n) == _one_digit_at_a_time(n)
    first = new_queue_id()
    time.sleep(0.002)
    assert new_queue_id() > first  # the millisecond clock leads
