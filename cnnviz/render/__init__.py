"""Rendering: image arrays to PNGs, upscaling, tile grids, results that display themselves
(Jupyter, matplotlib), and the HTML report explorer."""

from .colormap import COLORMAPS, apply_colormap, overlay
from .display import Displayable
from .images import save_png, tile_grid, to_pil, to_uint8, upscale
from .report import (
    Hover,
    Markup,
    Page,
    ReportContext,
    ReportSizeWarning,
    Section,
    build_report,
    escape,
    register_section,
    sections,
    unregister_section,
)

__all__ = [
    "COLORMAPS",
    "Displayable",
    "Hover",
    "Markup",
    "Page",
    "ReportContext",
    "ReportSizeWarning",
    "Section",
    "apply_colormap",
    "build_report",
    "escape",
    "overlay",
    "register_section",
    "save_png",
    "sections",
    "tile_grid",
    "to_pil",
    "to_uint8",
    "unregister_section",
    "upscale",
]
