"""Views: pure functions from machine states to pictures, graphs and text.

``views/diff.py`` says what a step changed (:func:`step_changes`); the drawing modules
highlight it.
"""

from .diff import Changes, step_changes
from .narration import narrate, narrate_step, trace_rows, trace_view
from .address_space import address_space_layout, address_space_text, draw_address_space
from .rmap import draw_rmap, rmap_graph, rmap_layout, rmap_text
from .pagetable import draw_walk, walk, walk_text
from .frames import draw_frames, frame_rows, frames_text, swap_rows
from .tlb import draw_tlb, tlb_rows, tlb_text

__all__ = ["Changes", "step_changes", "narrate", "narrate_step", "trace_rows", "trace_view",
           "address_space_layout", "address_space_text", "draw_address_space",
           "draw_rmap", "rmap_graph", "rmap_layout", "rmap_text",
           "draw_walk", "walk", "walk_text",
           "draw_frames", "frame_rows", "frames_text", "swap_rows",
           "draw_tlb", "tlb_rows", "tlb_text"]
