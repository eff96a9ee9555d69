"""Plotting helpers the paper scripts share: labels placed beside scatter points without overlaps."""

from __future__ import annotations

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.text import Annotation
from matplotlib.transforms import Bbox

__all__ = ["LABEL_SPOTS", "place_labels"]

#: label offsets tried in turn (points; alignment), the first that stays inside the axes and clear of the others wins
LABEL_SPOTS = [(5, 3, "left", "bottom"), (5, -3, "left", "top"), (-5, 3, "right", "bottom"),
               (-5, -3, "right", "top"), (0, 7, "center", "bottom"), (0, -7, "center", "top"),
               (5, 12, "left", "bottom"), (-5, 12, "right", "bottom"), (5, -12, "left", "top"),
               (-5, -12, "right", "top")]  # fmt: skip


def _annotate(ax: plt.Axes, point: pd.Series, spot: tuple[int, int, str, str]) -> Annotation:
    dx, dy, ha, va = spot
    return ax.annotate(point["text"], (point["x"], point["y"]), xytext=(dx, dy), textcoords="offset points", ha=ha,
                       va=va, fontsize=7)  # fmt: skip


def place_labels(ax: plt.Axes, points: pd.DataFrame) -> None:
    """Label each point (columns ``x``, ``y``, ``text``, data coordinates) where the label stays inside the axes and
    clear of the other labels and markers. Call it last, once the limits and the layout are set."""
    renderer = ax.figure.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    centres = ax.transData.transform(points[["x", "y"]].to_numpy())
    taken = [Bbox.from_bounds(px - 5, py - 5, 10, 10) for px, py in centres]  # the markers
    for _, point in points.iterrows():
        boxes = []
        for spot in LABEL_SPOTS:
            label = _annotate(ax, point, spot)
            boxes.append((spot, label.get_window_extent(renderer)))
            label.remove()
        inside = [(s, b) for s, b in boxes if frame.contains(b.x0, b.y0) and frame.contains(b.x1, b.y1)]
        clear = [(s, b) for s, b in inside if not any(b.overlaps(other) for other in taken)]
        spot, box = (clear or inside or boxes)[0]  # crowded everywhere: the first spot inside the axes
        _annotate(ax, point, spot)
        taken.append(box)
