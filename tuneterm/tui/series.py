"""A metric series with a min/max pyramid, so that drawing it costs the same for 100 or
100,000 points (no textual, no numpy: start-up stays fast).

Level ``j`` of the pyramid holds the min and max of consecutive blocks of ``2**(j+1)``
points, maintained as points arrive (amortised O(1) per point). Drawing ``nb`` buckets
picks the finest level with at most ``4 * nb`` blocks and folds those blocks into the
buckets: peaks and dips survive downsampling (a spike of one step still shows), and the
work is O(nb) whatever the length of the run.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, bisect_right


class MinMaxSeries:
    __slots__ = ("xs", "ys", "levels", "lo", "hi")

    def __init__(self) -> None:
        self.xs = array("d")
        self.ys = array("d")
        self.levels: list[tuple[array, array]] = []
        self.lo = math.inf
        self.hi = -math.inf

    def __len__(self) -> int:
        return len(self.ys)

    @property
    def last(self) -> float | None:
        return self.ys[-1] if self.ys else None

    def add(self, x: float, y: float) -> None:
        if not math.isfinite(y):
            return  # a NaN/inf loss is an event (the timeline shows it), not a point
        if self.xs and x <= self.xs[-1]:
            # a resumed attempt re-emits the steps after its checkpoint: the newest wins
            self._truncate(bisect_left(self.xs, x))
        self.xs.append(x)
        self.ys.append(y)
        self.lo = min(self.lo, y)
        self.hi = max(self.hi, y)
        self._push(len(self.ys))

    def extend(self, points) -> None:
        for x, y in points:
            self.add(x, y)

    def _push(self, n: int) -> None:
        if n % 2:
            return
        a, b = self.ys[-2], self.ys[-1]
        lo, hi = (a, b) if a <= b else (b, a)
        j = 0
        while True:
            if j == len(self.levels):
                self.levels.append((array("d"), array("d")))
            mins, maxs = self.levels[j]
            mins.append(lo)
            maxs.append(hi)
            if len(mins) % 2:
                return
            lo, hi = min(mins[-2], mins[-1]), max(maxs[-2], maxs[-1])
            j += 1

    def _truncate(self, n: int) -> None:
        xs, ys = self.xs[:n], self.ys[:n]
        self.__init__()
        for x, y in zip(xs, ys):
            self.xs.append(x)
            self.ys.append(y)
            self.lo = min(self.lo, y)
            self.hi = max(self.hi, y)
            self._push(len(self.ys))

    def buckets(self, x0: float, x1: float, nb: int) -> list[tuple[float, float] | None]:
        """(min, max) of the points falling in each of ``nb`` equal x-buckets of [x0, x1]."""
        out: list = [None] * nb
        n = len(self.ys)
        if n == 0 or nb <= 0:
            return out
        span = (x1 - x0) or 1.0
        scale = nb / span
        xs = self.xs

        def put(i: int, lo: float, hi: float) -> None:
            k = int((xs[i] - x0) * scale)
            k = 0 if k < 0 else nb - 1 if k >= nb else k
            cur = out[k]
            out[k] = (lo, hi) if cur is None else (min(cur[0], lo), max(cur[1], hi))

        # finest level with at most 4*nb blocks (level j: blocks of 2**(j+1) points)
        j = -1
        while n >> (j + 1) > 4 * nb and j + 1 < len(self.levels):
            j += 1
        if j < 0:
            for i in range(n):
                y = self.ys[i]
                put(i, y, y)
            return out
        size = 2 << j
        mins, maxs = self.levels[j]
        for b in range(len(mins)):
            put(b * size, mins[b], maxs[b])
        # the tail after the last full block: finer and finer blocks, then single points
        i = len(mins) * size
        for k in range(j - 1, -1, -1):
            ksize = 2 << k
            kmins, kmaxs = self.levels[k]
            b = i // ksize
            while b < len(kmins):
                put(b * ksize, kmins[b], kmaxs[b])
                b += 1
                i = b * ksize
        for i in range(i, n):
            y = self.ys[i]
            put(i, y, y)
        return out

    def mean_between(self, x0: float | None, x1: float | None) -> float | None:
        """Mean of the points with x0 < x <= x1 (open ends when None)."""
        i = 0 if x0 is None else bisect_right(self.xs, x0)
        k = len(self.xs) if x1 is None else bisect_right(self.xs, x1)
        if k <= i:
            return None
        return math.fsum(self.ys[i:k]) / (k - i)
