"""The views the widgets draw with: ``vmwidgets.views`` where it provides them, else
simple stand-ins with the same names and signatures (kept until every view has landed).

``get(name)`` looks the function up at call time, so a view that lands later is used
without a change here.
"""

import importlib

from ..core.mm_types import for_each_vma
from ..procfs import proc_maps

# name -> module of vmwidgets.views that defines it (the shared contract).
_WHERE = {
    "draw_address_space": "vmwidgets.views", "address_space_text": "vmwidgets.views",
    "draw_rmap": "vmwidgets.views", "rmap_text": "vmwidgets.views",
    "step_changes": "vmwidgets.views.diff",
    "narrate": "vmwidgets.views.narration", "trace_view": "vmwidgets.views.narration",
}


def get(name):
    """The view function ``name``: the real one if importable, else the stand-in."""
    try:
        fn = getattr(importlib.import_module(_WHERE[name]), name, None)
    except ImportError:
        fn = None
    return fn if fn is not None else _FALLBACK[name]


def is_real(name):
    return get(name) is not _FALLBACK[name]


# -- stand-ins ------------------------------------------------------------------------------
def _new_ax(ax):
    if ax is None:
        from matplotlib.figure import Figure
        ax = Figure(figsize=(8, 2)).add_subplot()
    return ax


def _mm(machine, pid):
    try:
        return machine.task(pid).mm
    except ProcessLookupError:
        return None


def draw_address_space(machine, pid, ax=None, changes=None, highlight=None):
    """Stand-in: the process's VMAs as boxes on a line, each as wide as its share of the
    mapped pages (at least a sliver), labelled with start address and perms."""
    ax = _new_ax(ax)
    mm = _mm(machine, pid)
    vmas = list(for_each_vma(mm)) if mm is not None else []
    total = sum(max(v.pages(), 1) for v in vmas) or 1
    x = 0.0
    for v in vmas:
        w = max(v.pages() / total, 0.02)
        colour = "#f4a582" if v.vm_file is None else "#92c5de"
        if "w" in v.perms():
            colour = "#d6604d" if v.vm_file is None else "#4393c3"
        ax.add_patch(__import__("matplotlib.patches", fromlist=["Rectangle"]).Rectangle(
            (x, 0.2), w, 0.6, facecolor=colour, edgecolor="black", linewidth=0.6))
        ax.text(x + w / 2, 0.5, f"{v.vm_start:x}\n{v.perms()}", ha="center", va="center",
                fontsize=6, rotation=90 if w < 0.08 else 0)
        x += w
    ax.set_xlim(0, max(x, 1))
    ax.set_ylim(0, 1)
    ax.set_axis_off()
    ax.set_title(f"pid {pid}: {len(vmas)} VMAs" if mm is not None else f"pid {pid}: not running",
                 fontsize=9)
    return ax


def address_space_text(machine, pid, changes=None):
    mm = _mm(machine, pid)
    return proc_maps(mm) if mm is not None else f"pid {pid} is not running\n"


def draw_rmap(machine, ax=None, highlight=None, changes=None, previous=None):
    """Stand-in: one row per anon_vma with the VMAs chained to it."""
    ax = _new_ax(ax)
    lines = rmap_text(machine).splitlines()[:14]
    for i, line in enumerate(lines):
        ax.text(0.01, 0.95 - i * 0.07, line, fontsize=7, family="monospace", va="top",
                color="crimson" if highlight and highlight in line else "black")
    ax.set_axis_off()
    ax.set_title("rmap (anon_vma -> VMAs)", fontsize=9)
    return ax


def rmap_text(machine):
    out = []
    for proc in machine.processes:
        for v in for_each_vma(proc.mm):
            if v.anon_vma_chain:
                avs = ", ".join(f"anon_vma {c.anon_vma.id}" for c in v.anon_vma_chain)
                out.append(f"vma:{proc.pid}:{v.vm_start:#x} -> {avs}")
    return "\n".join(out) or "(no anonymous VMA has an anon_vma yet)"


def step_changes(before, after, record=None):
    return None


def narrate(record, before, after):
    what = f"error {record.error}" if record.error else (
        f"returned {record.result:#x}" if isinstance(record.result, int) and record.result > 4096
        else f"returned {record.result!r}")
    return f"Step {record.index + 1}: {record.op} {what}; {len(record.events)} events."


def trace_view(record, depth=None):
    return record.function_graph() or "(no call tree: tracing was off)"


_FALLBACK = {f.__name__: f for f in (draw_address_space, address_space_text, draw_rmap, rmap_text,
                                     step_changes, narrate, trace_view)}
