"""Colours, fonts and the axes helper shared by every view (one place, so that all the
pictures agree: a read-only VMA is the same blue in the strip and in the rmap graph).

Matplotlib is imported only when a picture is drawn: the text views work without it.
"""

#: VMA fill by permissions (``perms()[:3]``); anything else falls back to ``"other"``.
PERM_COLORS = {
    "r--": "#9ecae1", "rw-": "#a1d99b", "r-x": "#fdae6b", "rwx": "#fb6a4a",
    "---": "#d9d9d9", "-w-": "#c7e9c0", "--x": "#fdd0a2", "-wx": "#fc9272",
    "other": "#bdbdbd",
}
GAP_COLOR = "#f7f7f7"
HIGHLIGHT = "#e31a1c"       # the last step's change
SELECTED = "#6a3d9a"        # what the student selected

#: rmap graph: node colour by kind, edge colour by kind.
NODE_COLORS = {"mm": "#4d4d4d", "vma": "#a1d99b", "avc": "#fdd0a2", "av": "#fd8d3c",
               "page": "#9ecae1", "file": "#bcbddc"}
EDGE_COLORS = {"vma": "#969696", "chain": "#fdae6b", "anon_vma": "#fdae6b",
               "parent": "#d94801", "root": "#7f2704", "page": "#6baed6",
               "maps": "#c6dbef", "i_mmap": "#9e9ac8", "i_pages": "#9e9ac8"}

#: physical frames by kind.
FRAME_COLORS = {"anon": "#a1d99b", "file": "#bcbddc", "zero": "#ffffff",
                "pgtable": "#fdd0a2", "swapcache": "#fcbba1", "kernel": "#d9d9d9"}

FONT_SIZE = 7
MONO = "monospace"


def new_axes(ax, figsize, keep=()):
    """An Axes ready for a new drawing: a fresh one on its own
    :class:`matplotlib.figure.Figure` (never pyplot's global state) when ``ax`` is None.

    A given ``ax`` is reused cheaply (a widget redraws the same Axes at every step): its
    collections and patches go, its texts are kept aside and recycled by :func:`text`
    (creating a Text costs 25 times more than moving one), and :func:`finish` removes
    those not reused. ``ax.clear()`` would cost several milliseconds per view.
    Collections whose gid is in ``keep`` stay, for the caller to update in place.
    """
    if ax is None:
        from matplotlib.figure import Figure
        ax = Figure(figsize=figsize).add_subplot()
    else:
        for artist in list(ax.collections) + list(ax.patches) + list(ax.lines):
            if artist.get_gid() not in keep:
                artist.remove()
    ax.set_axis_off()
    pool = getattr(ax, "_vmwidgets_pool", None)
    if pool is None:
        pool = []
    from matplotlib.text import Text
    for t in list(ax.texts):
        if type(t) is not Text:          # annotations are not recycled
            t.remove()
    pool.extend(reversed(list(ax.texts)))
    ax._vmwidgets_pool = pool
    return ax


#: Every property :func:`text` sets, so that a recycled Text keeps nothing of its past.
_TEXT_DEFAULTS = {"rotation": 0, "ha": "left", "va": "baseline", "family": "sans-serif",
                  "weight": "normal", "color": "black", "zorder": 3, "gid": None,
                  "fontsize": FONT_SIZE}


def text(ax, x, y, s, **kw):
    """``ax.text(x, y, s, **kw)``, recycling a Text of the previous drawing if any."""
    props = dict(_TEXT_DEFAULTS, transform=ax.transData)
    props.update(kw)
    pool = ax._vmwidgets_pool
    if pool:
        t = pool.pop()
        t.set_position((x, y))
        t.set_text(s)
        t.update(props)
        return t
    return ax.text(x, y, s, **props)


def kept(ax, gid):
    """The artist with this gid kept by :func:`new_axes`, or None."""
    for artist in ax.collections:
        if artist.get_gid() == gid:
            return artist
    return None


def finish(ax, title, pad=6.0):
    """Set the title and drop the texts of the previous drawing that were not reused."""
    for t in ax._vmwidgets_pool:
        t.remove()
    ax._vmwidgets_pool = []
    ax.set_title(title, fontsize=FONT_SIZE + 2, pad=pad)
    return ax


def bare(ax):
    """No ticks or frame: the views are diagrams, not plots."""
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def check_machine(machine):
    if not hasattr(machine, "processes") or not hasattr(machine, "phys"):
        raise TypeError(f"expected a vmwidgets Machine, got {type(machine).__name__}")


def process(machine, pid):
    """The live process ``pid`` of ``machine`` (a clear error otherwise)."""
    check_machine(machine)
    if isinstance(pid, bool) or not isinstance(pid, int):
        raise TypeError(f"pid must be an int, not {type(pid).__name__}")
    for proc in machine.processes:
        if proc.pid == pid:
            return proc
    alive = ", ".join(str(p.pid) for p in machine.processes) or "none"
    raise ValueError(f"no process {pid} is running (running: {alive})")


def human_size(nbytes):
    """``4K``, ``132K``, ``1.5M``, ``127T``: sizes as pmap prints them."""
    for unit, shift in (("T", 40), ("G", 30), ("M", 20), ("K", 10)):
        if nbytes >= 1 << shift:
            value = nbytes / (1 << shift)
            return f"{value:.0f}{unit}" if value >= 10 or value == int(value) else f"{value:.1f}{unit}"
    return f"{nbytes}B"
