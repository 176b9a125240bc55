"""Results that display themselves: in Jupyter (``_repr_png_``, ``_repr_html_``) and with
matplotlib (``plot()``), from one picture each result type draws.

A result class mixes in :class:`Displayable` and defines :meth:`Displayable.picture` (an
(H, W, 3) uint8 array) and :meth:`Displayable.facts` (name -> value rows for the HTML
table); :func:`new_axes` is the matplotlib plumbing every ``plot()`` shares (the
attribution maps' ``plot()`` with its colorbar included).
"""

from __future__ import annotations

import html
from typing import Any

import numpy as np

from .images import png_bytes, png_data_uri


def new_axes(ax: Any = None, figsize: tuple[float, float] = (5.4, 4.2)) -> tuple[Any, Any, bool]:
    """``(figure, axes, created)``: ``ax`` and its figure, or a new figure's axes.

    Raises:
        ImportError: matplotlib is not installed (naming the extra that brings it).
    """
    try:
        import matplotlib.pyplot as plt
    except ImportError as error:
        raise ImportError(
            "plot() needs matplotlib, which is not installed: pip install 'cnnviz[plot]' "
            "(or pip install matplotlib)"
        ) from error
    if ax is None:
        figure, ax = plt.subplots(figsize=figsize)
        return figure, ax, True
    return ax.figure, ax, False


class Displayable:
    """Mixin: Jupyter display and ``plot()`` from :meth:`picture` and :meth:`facts`."""

    def picture(self) -> np.ndarray:
        """The result as one (H, W, 3) uint8 picture."""
        raise NotImplementedError

    def facts(self) -> list[tuple[str, object]]:
        """Rows of the HTML display's table (the first one's value is the plot title)."""
        return []

    def _repr_png_(self) -> bytes:
        """Jupyter: :meth:`picture` as PNG bytes."""
        return png_bytes(self.picture())

    def _repr_html_(self) -> str:
        """Jupyter: a table of :meth:`facts` above :meth:`picture`, inlined as PNG."""
        left = "style='text-align:left'"
        rows = "".join(
            f"<tr><th {left}>{html.escape(str(name))}</th><td {left}>"
            f"{html.escape(str(value))}</td></tr>"
            for name, value in self.facts()
        )
        name = html.escape(type(self).__name__)
        return (
            f"<div class='cnnviz-result'><table>{rows}</table>"
            f"<img src='{png_data_uri(self.picture())}' alt='{name}'/></div>"
        )

    def plot(self, ax: Any = None) -> tuple[Any, Any]:
        """Draw :meth:`picture` with matplotlib, titled by the first fact.

        Args:
            ax: a matplotlib Axes to draw on; default a new figure.

        Returns:
            ``(figure, axes)``.
        """
        picture = self.picture()
        height, width = picture.shape[:2]
        figure, ax, created = new_axes(ax, figsize=(min(12.0, 1.0 + width / 80), 1.0 + height / 80))
        ax.imshow(picture, interpolation="nearest")
        ax.set_axis_off()
        facts = self.facts()
        if facts:
            ax.set_title(f"{facts[0][0]}: {facts[0][1]}", fontsize=10)
        if created:
            figure.tight_layout()
        return figure, ax


__all__ = ["Displayable", "new_axes"]
