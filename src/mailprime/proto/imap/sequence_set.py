"""IMAP sequence sets (RFC 3501 9 `sequence-set`, RFC 9051 9): "1:4,7,9:*"."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SeqRange:
    """One element of a sequence set; `None` stands for "*" (the largest number in use).

    A single number n is `SeqRange(n, n)`; "n:m" and "m:n" mean the same range (RFC 3501 9).
    """

    start: int | None
    end: int | None

    def bounds(self, largest: int) -> tuple[int, int]:
        """(low, high) with "*" replaced by `largest`; low <= high."""
        start = largest if self.start is None else self.start
        end = largest if self.end is None else self.end
        return (start, end) if start <= end else (end, start)

    def to_wire(self) -> str:
        start = "*" if self.start is None else str(self.start)
        if self.start == self.end:
            return start
        end = "*" if self.end is None else str(self.end)
        return f"{start}:{end}"


@dataclass(frozen=True, slots=True)
class SequenceSet:
    """A parsed sequence set (message sequence numbers or UIDs, depending on the command)."""

    ranges: tuple[SeqRange, ...]

    def intervals(self, largest: int) -> list[tuple[int, int]]:
        """Sorted, merged, non-overlapping (low, high) intervals; "*" is `largest`.

        Use this rather than `resolve` for UID sets, whose ranges may be huge ("1:4294967295").
        With `largest` 0 (empty mailbox) "*" is 0, so "1:*" is the interval (0, 1): callers
        intersect with the numbers that exist.
        """
        raw = sorted(r.bounds(largest) for r in self.ranges)
        merged: list[tuple[int, int]] = []
        for low, high in raw:
            if merged and low <= merged[-1][1] + 1:
                merged[-1] = (merged[-1][0], max(merged[-1][1], high))
            else:
                merged.append((low, high))
        return merged

    def resolve(self, largest: int) -> list[int]:
        """The numbers in the set, ascending and de-duplicated, limited to 1..largest.

        Meant for message sequence numbers, where `largest` is the number of messages.
        """
        out: list[int] = []
        for low, high in self.intervals(largest):
            out.extend(range(max(low, 1), min(high, largest) + 1))
        return out

    def contains(self, number: int, largest: int) -> bool:
        return any(low <= number <= high for low, high in (r.bounds(largest) for r in self.ranges))

    def to_wire(self) -> str:
        return ",".join(r.to_wire() for r in self.ranges)

    @classmethod
    def of(cls, numbers: Iterable[int]) -> SequenceSet:
        """The most compact set holding `numbers` (for COPYUID, APPENDUID, MODIFIED, ESEARCH ALL).

        Order is kept as given, so COPYUID's two sets stay paired (RFC 4315 3); runs of
        consecutive ascending numbers become ranges.
        """
        ranges: list[SeqRange] = []
        for n in numbers:
            if ranges and ranges[-1].end is not None and n == ranges[-1].end + 1:
                ranges[-1] = SeqRange(ranges[-1].start, n)
            else:
                ranges.append(SeqRange(n, n))
        return cls(tuple(ranges))
