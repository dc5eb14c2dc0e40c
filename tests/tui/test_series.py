"""Min/max-preserving downsampling: the pyramid gives what brute force gives, at O(width)."""

import math

from tuneterm.tui.chart import Line, rasterize
from tuneterm.tui.series import MinMaxSeries


def brute(xs, ys, x0, x1, nb):
    out = [None] * nb
    for x, y in zip(xs, ys):
        k = min(nb - 1, max(0, int((x - x0) * nb / ((x1 - x0) or 1.0))))
        out[k] = (y, y) if out[k] is None else (min(out[k][0], y), max(out[k][1], y))
    return out


def test_small_series_buckets_exactly():
    s = MinMaxSeries()
    ys = [math.sin(i * 0.3) for i in range(1, 101)]
    for i, y in enumerate(ys, start=1):
        s.add(i, y)
    assert s.buckets(1, 100, 40) == brute(range(1, 101), ys, 1, 100, 40)


def test_large_series_keeps_every_extreme():
    s = MinMaxSeries()
    n = 100_000
    ys = [math.sin(i * 0.001) for i in range(n)]
    ys[54_321] = 9.0  # a one-step spike must survive downsampling
    ys[7_777] = -9.0
    for i, y in enumerate(ys):
        s.add(i, y)
    b = s.buckets(0, n - 1, 60)
    assert max(x[1] for x in b if x) == 9.0
    assert min(x[0] for x in b if x) == -9.0
    assert (s.lo, s.hi) == (-9.0, 9.0)
    exact = brute(range(n), ys, 0, n - 1, 60)
    # blocks straddle bucket edges by at most one block (n / 240 points): extremes agree
    spike = [i for i, x in enumerate(b) if x and x[1] == 9.0]
    assert spike and abs(spike[0] - [i for i, x in enumerate(exact) if x and x[1] == 9.0][0]) <= 1


def test_resume_rewrites_later_steps():
    s = MinMaxSeries()
    for i in range(1, 11):
        s.add(i, float(i))
    s.add(6, 100.0)  # an attempt resumed from step 5 re-emits step 6
    assert list(s.xs) == [1, 2, 3, 4, 5, 6]
    assert s.hi == 100.0 and s.last == 100.0
    assert s.buckets(1, 6, 6)[-1] == (100.0, 100.0)


def test_nonfinite_points_are_skipped():
    s = MinMaxSeries()
    s.add(1, float("nan"))
    s.add(2, 1.0)
    assert len(s) == 1


def test_rasterize_draws_spike_and_flat_lines():
    s = MinMaxSeries()
    for i in range(1000):
        s.add(i, 5.0 if i == 500 else 0.0)
    bits, owner, lo, hi = rasterize([Line(s, "red", "x")], 20, 4)
    assert (lo, hi) == (0.0, 5.0)
    assert bits[0][10] or bits[0][9]  # the spike reaches the top row
    flat = MinMaxSeries()
    flat.add(1, 2.0)
    flat.add(2, 2.0)
    bits, _, lo, hi = rasterize([Line(flat, "red", "x")], 10, 3)
    assert lo < 2.0 < hi and any(any(r) for r in bits)


def test_pyramid_buckets_equal_brute_force_at_every_length():
    for n in (1, 2, 3, 7, 64, 65, 1000, 4097, 30_001):
        s = MinMaxSeries()
        ys = [((i * 7919) % 101) / 10.0 for i in range(n)]
        for i, y in enumerate(ys):
            s.add(i, y)
        for nb in (1, 5, 40):
            got = s.buckets(0, max(n - 1, 1), nb)
            exact = brute(range(n), ys, 0, max(n - 1, 1), nb)
            # blocks are placed by their first point: totals and extremes are the same
            assert max(b[1] for b in got if b) == max(b[1] for b in exact if b)
            assert min(b[0] for b in got if b) == min(b[0] for b in exact if b)
            if n <= 4 * nb:
                assert got == exact
