"""Rendering: image arrays to PNGs, upscaling, tile grids, and the HTML report."""

from .colormap import COLORMAPS, apply_colormap, overlay
from .images import save_png, tile_grid, to_pil, to_uint8, upscale
from .report import (
    Markup,
    Page,
    ReportContext,
    Section,
    build_report,
    escape,
    register_section,
    sections,
    unregister_section,
)

__all__ = [
    "COLORMAPS",
    "Markup",
    "Page",
    "ReportContext",
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
