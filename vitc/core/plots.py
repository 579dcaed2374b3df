"""The reports' accuracy-vs-speed plot: points, their labels kept apart, a Pareto front (matplotlib, off-screen).

Labels are placed one by one at the first of a ring of offsets around their point whose box stays inside the
plot area (so none runs over the title or the axis labels) and overlaps no earlier label and no point; a label
with no free place nearby keeps its first place. ``pipeline/report.py`` (the run report) and ``vitc tune``'s
report draw with it.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any


@dataclass
class Point:
    x: float
    y: float
    label: str | None = None  # written beside the point (one per variant)
    legend: str | None = None  # the legend entry (one per distinct text)
    color: str = "tab:blue"
    marker: str = "o"
    size: float = 60.0


OFFSETS = [(6, 6), (6, -12), (-6, 6), (-6, -12), (10, 16), (10, -22), (-10, 16), (-10, -22), (14, 28), (14, -34),
           (-14, 28), (-14, -34), (18, 40), (18, -46)]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points no other point beats on both x and y (higher is better on each), by ascending x."""
    order = sorted(range(len(points)), key=lambda i: (-points[i][0], -points[i][1]))
    front, best_y = [], float("-inf")
    for i in order:
        if points[i][1] > best_y:
            front.append(i)
            best_y = points[i][1]
    return sorted(front, key=lambda i: points[i][0])


def place_labels(fig: Any, ax: Any, labels: list[Any], points: Sequence[tuple[float, float]] = (), radius: float = 7.0) -> None:
    """Move each label to the first offset whose box is inside the axes and overlaps neither an earlier label nor
    a marker (``points``, in data coordinates, each a box of ``radius`` pixels)."""
    from matplotlib.transforms import Bbox

    renderer = fig.canvas.get_renderer()
    area = ax.get_window_extent(renderer)
    placed: list[Any] = []
    for x, y in points:
        px, py = ax.transData.transform((x, y))
        placed.append(Bbox.from_extents(px - radius, py - radius, px + radius, py + radius))
    for text in labels:
        best = None
        for dx, dy in OFFSETS:
            text.set_position((dx, dy))
            text.set_ha("left" if dx >= 0 else "right")
            box = text.get_window_extent(renderer)
            inside = area.x0 <= box.x0 and box.x1 <= area.x1 and area.y0 <= box.y0 and box.y1 <= area.y1
            if best is None:
                best = (dx, dy)
            if inside and not any(box.overlaps(other) for other in placed):
                best = (dx, dy)
                break
        assert best is not None
        text.set_position(best)
        text.set_ha("left" if best[0] >= 0 else "right")
        placed.append(text.get_window_extent(renderer))


def scatter_png(points: Sequence[Point], *, xlabel: str, ylabel: str, title: str, front: bool = False,
                xline: tuple[float, str] | None = None) -> bytes:
    """The points (higher is better on both axes), their labels placed apart, with ``front`` the Pareto front, and
    ``xline`` (x, legend) a vertical line (a target)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10.5, 6), dpi=120)
    seen: set[str] = set()
    for p in points:
        ax.scatter(p.x, p.y, s=p.size, marker=p.marker, color=p.color, edgecolor="black", linewidth=0.6, zorder=3,
                   label=p.legend if p.legend and p.legend not in seen else None)
        if p.legend:
            seen.add(p.legend)
    if front and len(points) > 1:
        idx = pareto_front([(p.x, p.y) for p in points])
        ax.plot([points[i].x for i in idx], [points[i].y for i in idx], color="gray", linestyle="--", linewidth=1, zorder=2,
                label="Pareto front")
    if xline is not None:
        ax.axvline(xline[0], color="tab:red", linestyle=":", linewidth=1, zorder=1, label=xline[1])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title, pad=12)
    ax.grid(True, alpha=0.3)
    ax.margins(x=0.12, y=0.15)  # room for labels inside the plot area
    if seen or front or xline:  # beside the plot: inside, it covers points and labels
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    fig.tight_layout()
    texts = [ax.annotate(p.label, (p.x, p.y), textcoords="offset points", xytext=(6, 6), fontsize=8)
             for p in points if p.label]
    place_labels(fig, ax, texts, [(p.x, p.y) for p in points])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


__all__ = ["Point", "pareto_front", "place_labels", "scatter_png"]
