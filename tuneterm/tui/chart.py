"""A braille line chart (Textual's Line API), drawing MinMaxSeries through their pyramid.

Each cell holds 2x4 braille dots; every x-pixel column draws the min..max of the points in
it, joined to the neighbouring column, so a downsampled curve keeps its spikes. Rendering
is cached per (size, data version): a repaint for a key press elsewhere costs nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip
from textual.widget import Widget

from tuneterm.tui.data import fmt_axis, fmt_num
from tuneterm.tui.series import MinMaxSeries

# braille dot bits by (x, y) inside a 2x4 cell
_DOTS = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))
GUTTER = 7  # width of the y-axis labels


@dataclass
class Line:
    series: MinMaxSeries
    color: str
    label: str


def rasterize(lines: list[Line], width: int, height: int) -> tuple[list[list[int]], list[list[int]], float, float]:
    """Braille bit masks and the index of the colouring line, per cell; and the y-range."""
    bits = [[0] * width for _ in range(height)]
    owner = [[-1] * width for _ in range(height)]
    present = [ln for ln in lines if len(ln.series)]
    if not present or width <= 0 or height <= 0:
        return bits, owner, 0.0, 0.0
    x0 = min(ln.series.xs[0] for ln in present)
    x1 = max(ln.series.xs[-1] for ln in present)
    lo = min(ln.series.lo for ln in present)
    hi = max(ln.series.hi for ln in present)
    if hi - lo < 1e-12 * max(1.0, abs(hi)):
        lo, hi = lo - 0.5 * (abs(lo) or 1.0) * 0.1, hi + 0.5 * (abs(hi) or 1.0) * 0.1
    pw, ph = width * 2, height * 4
    yscale = (ph - 1) / (hi - lo)
    for li, ln in enumerate(lines):
        if not len(ln.series):
            continue
        prev = None  # (px, y) of the previous non-empty column's middle
        for px, b in enumerate(ln.series.buckets(x0, x1, pw)):
            if b is None:
                continue
            top = (hi - b[1]) * yscale
            bot = (hi - b[0]) * yscale
            mid = (top + bot) / 2
            if prev is not None:
                # join to the previous point with a straight line across empty columns
                ppx, py0 = prev
                slope = (mid - py0) / (px - ppx)
                for c in range(ppx + 1, px + 1):
                    a = py0 + slope * (c - ppx - 0.5)
                    e = py0 + slope * min(c - ppx + 0.5, px - ppx)
                    if c == px:
                        top, bot = min(top, a), max(bot, a)
                    else:
                        _column(bits, owner, li, c, min(a, e), max(a, e), ph)
            _column(bits, owner, li, px, top, bot, ph)
            prev = (px, mid)
    return bits, owner, lo, hi


def _column(bits, owner, li: int, px: int, top: float, bot: float, ph: int) -> None:
    cx, dx = divmod(px, 2)
    for py in range(max(int(round(top)), 0), min(int(round(bot)), ph - 1) + 1):
        cy, dy = divmod(py, 4)
        bits[cy][cx] |= _DOTS[dx][dy]
        owner[cy][cx] = li


class LineChart(Widget):
    """A chart of one or more series sharing the x axis (steps) and y axis."""

    DEFAULT_CSS = "LineChart { height: 8; }"

    def __init__(self, title: str, lines: list[Line], *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.lines = lines
        self.chart_title = title
        self.border_title = title
        self._cache_key: tuple | None = None
        self._strips: list[Strip] = []

    def set_title(self, title: str) -> None:
        self.chart_title = self.border_title = title

    def data_version(self) -> tuple:
        # cheap: lengths and last points identify the data (add() only appends/truncates)
        return tuple((len(ln.series), ln.series.last, ln.series.xs[-1] if len(ln.series) else None)
                     for ln in self.lines)

    def update_data(self) -> None:
        """Call after the series changed; repaints only when they did."""
        self._update_subtitle()
        if self._cache_key != (self.size.width, self.size.height, self.data_version()):
            self.refresh()

    def _build(self) -> list[Strip]:
        w, h = self.size.width, self.size.height
        key = (w, h, self.data_version())
        if key == self._cache_key:
            return self._strips
        base = self.rich_style  # computing it is not free: only when the data or size changed
        plot_w = max(w - GUTTER, 0)
        bits, owner, lo, hi = rasterize(self.lines, plot_w, h)
        colors = [base + Style(color=ln.color) for ln in self.lines]
        dim = base + Style(dim=True)
        strips = []
        has_data = any(len(ln.series) for ln in self.lines)
        for y in range(h):
            if not has_data:
                label = "no data yet" if y == h // 2 else ""
                strips.append(Strip([Segment(label.center(w)[:w], dim)], w))
                continue
            if y == 0:
                axis = fmt_axis(hi)
            elif y == h - 1:
                axis = fmt_axis(lo)
            else:
                axis = ""
            segs = [Segment(axis[: GUTTER - 1].rjust(GUTTER - 1) + "│", dim)]
            row_bits, row_owner = bits[y], owner[y]
            run_style, run = None, []
            for x in range(plot_w):
                b = row_bits[x]
                st = colors[row_owner[x]] if b else base
                ch = chr(0x2800 + b) if b else " "
                if st is not run_style and run:
                    segs.append(Segment("".join(run), run_style))
                    run = []
                run_style = st
                run.append(ch)
            if run:
                segs.append(Segment("".join(run), run_style))
            strips.append(Strip(segs, w))
        self._strips, self._cache_key = strips, key
        return strips

    def _update_subtitle(self) -> None:
        parts = []
        for ln in self.lines:
            if len(ln.series):
                parts.append(f"[{ln.color}]{ln.label} {fmt_num(ln.series.last, 4)}[/]")
        sub = " ".join(parts)
        if sub != self.border_subtitle:
            self.border_subtitle = sub

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._cache_key = None  # a theme change: draw again with the new colours

    def render_line(self, y: int) -> Strip:
        strips = self._build()
        if y < len(strips):
            return strips[y]
        return Strip.blank(self.size.width, self.rich_style)

