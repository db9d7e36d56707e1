"""The address space strip and the rmap graph as SVG text, built from the views' data.

The same pictures as :func:`~vmwidgets.views.draw_address_space` and
:func:`~vmwidgets.views.draw_rmap` (same layouts, colours and marks), without matplotlib:
a widget puts the text in an ``ipywidgets.HTML`` and the browser draws it, which costs the
kernel a few milliseconds instead of rasterising every label.

Pure functions: a state in, a string out, the same string for the same state. Every text is
escaped; the ``<svg>`` has ``role="img"``, an ``aria-label`` and a ``<title>``, and every
VMA and rmap node a ``<title>`` (hover text, and what a screen reader reads). Elements
carry classes for what they show (``vma``, ``gap``, ``removed``, ``node``, ``edge``) and
marks (``changed``: the last step touched it; ``selected``: the student chose it), and a
``data-start`` (VMA) or ``data-node`` (rmap node id).

>>> import vmwidgets as vw
>>> m = vw.Machine(); p = m.spawn()
>>> address_space_svg(m, p.pid).startswith('<svg')
True
"""

from html import escape

from ..procfs import maps_line
from . import _style
from ._changes import anon_vmas_changed, frames_changed, unmapped_ranges, vma_marks
from .address_space import _removed_places, address_space_layout
from .rmap import COLUMNS, _EDGE_ORDER, _highlight_set, LABEL_LIMIT, rmap_graph, rmap_layout

#: Width of both pictures, in pixels.
WIDTH = 900
FONT = "font-family:sans-serif"
MONO = "font-family:monospace"
_PLAIN_EDGE = "#525252"


def _n(v):
    """A coordinate as short, deterministic text."""
    return f"{v:.1f}".rstrip("0").rstrip(".")


def _open(width, height, label, top=0.0):
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{_n(height)}" '
            f'viewBox="0 {_n(top)} {width} {_n(height)}" role="img" aria-label="{escape(label)}" '
            f'style="max-width:100%;height:auto;font-size:9px;{FONT}">'
            f'<title>{escape(label)}</title>')


def _text(x, y, s, anchor="start", extra=""):
    return (f'<text x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}" '
            f'dominant-baseline="middle"{extra}>{escape(s)}</text>')


def _vertical_text(x, y, s, anchor="end", style=MONO):
    """Text read bottom to top; with ``anchor="end"`` it hangs down from (x, y)."""
    return _text(x, y, s, anchor, f' transform="rotate(-90 {_n(x)} {_n(y)})" style="{style}"')


# -- the address space strip ------------------------------------------------------------------
#: Where the bars sit and how tall the picture is (pixels).
_BAR_TOP, _BAR_HEIGHT, _HEIGHT = 34.0, 40.0, 210.0


def address_space_svg(machine, pid, changes=None, highlight=None):
    """The VMAs of process ``pid`` as an SVG strip (what :func:`draw_address_space`
    draws): one box per VMA coloured by permissions and labelled ``perms name av N``, the
    compressed gaps hatched and labelled with their size, the VMAs the last step changed
    (``changes``) outlined in red (class ``changed``), the ranges it unmapped dashed (class
    ``removed``), and the VMA holding address ``highlight`` outlined as selected."""
    proc = _style.process(machine, pid)
    mm = proc.mm
    segs = address_space_layout(mm)
    marks = vma_marks(changes, pid)
    ghosts = _removed_places(segs, unmapped_ranges(changes, pid, mm))
    vmas = [s for s in segs if s.kind == "vma"]
    right = max([segs[-1].x1 if segs else 1.0] + [x1 for _x0, x1 in ghosts]) + 0.2
    left = min([0.0] + [x0 for x0, _x1 in ghosts]) - 0.2
    scale = (WIDTH - 20) / (right - left)

    def px(x):
        return 10 + (x - left) * scale

    title = f"pid {pid}: address space, {len(vmas)} VMAs (not to scale)"
    out = [_open(WIDTH, _HEIGHT, title),
           '<defs><pattern id="vmw-hatch" width="6" height="6" patternUnits="userSpaceOnUse" '
           'patternTransform="rotate(45)"><rect width="6" height="6" fill="'
           f'{_style.GAP_COLOR}"/><line x1="0" y1="0" x2="0" y2="6" stroke="#bdbdbd"/>'
           '</pattern></defs>',
           _text(WIDTH / 2, 10, title, "middle", ' font-size="11" font-weight="bold"')]
    by_start = {v.vm_start: v for v in mm.mm_mt}
    mid = _BAR_TOP + _BAR_HEIGHT / 2
    for s in segs:
        x0, x1 = px(s.x0), px(s.x1)
        if s.kind == "gap":
            if s.compressed:
                size = _style.human_size(s.size)
                out.append(f'<g class="gap"><title>gap of {size}: {s.start:#x}-{s.end:#x}</title>'
                           f'<rect x="{_n(x0)}" y="{_n(_BAR_TOP + 12)}" width="{_n(x1 - x0)}" '
                           f'height="16" fill="url(#vmw-hatch)" stroke="#bdbdbd" stroke-width="0.5"/>'
                           + _vertical_text((x0 + x1) / 2, mid, size, "middle", FONT) + '</g>')
            continue
        classes, stroke, width = ["vma"], _PLAIN_EDGE, 0.6
        if highlight is not None and s.start <= highlight < s.end:
            classes.append("selected")
            stroke, width = _style.SELECTED, 2.5
        elif s.start in marks:
            stroke, width = _style.HIGHLIGHT, 2.5
        if s.start in marks:
            classes.append("changed")
        fill = _style.PERM_COLORS.get(s.perms[:3], _style.PERM_COLORS["other"])
        hover = maps_line(by_start[s.start]).rstrip() if s.start in by_start else s.label()
        if s.start in marks:
            hover += f" ({marks[s.start]} by the last step)"
        out.append(f'<g class="{" ".join(classes)}" data-start="{s.start:#x}">'
                   f'<title>{escape(hover)}</title>'
                   f'<rect x="{_n(x0)}" y="{_n(_BAR_TOP)}" width="{_n(x1 - x0)}" '
                   f'height="{_n(_BAR_HEIGHT)}" fill="{fill}" stroke="{stroke}" '
                   f'stroke-width="{width}"/>'
                   + _vertical_text((x0 + x1) / 2, _BAR_TOP + _BAR_HEIGHT + 4, s.label()) + '</g>')
    for x0, x1 in ghosts:
        out.append(f'<rect class="removed" x="{_n(px(x0))}" y="{_n(_BAR_TOP - 3)}" '
                   f'width="{_n(px(x1) - px(x0))}" height="{_n(_BAR_HEIGHT + 6)}" fill="none" '
                   f'stroke="{_style.HIGHLIGHT}" stroke-width="1.5" stroke-dasharray="4 3">'
                   '<title>unmapped by the last step</title></rect>')
    if vmas:
        out.append(_text(px(vmas[0].x0), _BAR_TOP - 8, f"{vmas[0].start:#x}", "start",
                         f' style="{MONO}"'))
        out.append(_text(px(vmas[-1].x1), _BAR_TOP - 8, f"{vmas[-1].end:#x}", "end",
                         f' style="{MONO}"'))
    out.append("</svg>")
    return "".join(out)


def message_svg(text):
    """A small picture that only says ``text`` (e.g. that the process is not running)."""
    return _open(WIDTH, 40, text) + _text(WIDTH / 2, 20, text, "middle") + "</svg>"


# -- the rmap graph ---------------------------------------------------------------------------
_TOP = 44.0          # room for the title and the column headings (pixels)
_SLOT = 5.0          # pixels per layout slot: neighbours in a column are 10 pixels apart


def rmap_svg(machine, changes=None, highlight=None, previous=None, graph=None, layout=None):
    """The rmap of ``machine`` as SVG (what :func:`draw_rmap` draws): :func:`rmap_graph`
    placed by :func:`rmap_layout` (``previous``: the layout of the picture before, so that
    nodes stay where they were), nodes coloured by kind, edges by kind (``parent``/``root``
    dashed), the ``highlight`` node(s) with their chains, anon_vmas and pages in the
    selection colour (class ``selected``), and the frames and anon_vmas the last step
    touched outlined in red (class ``changed``). Every node has a ``<title>``; node
    labels are drawn as :func:`draw_rmap` draws them (a kind with more than
    :data:`LABEL_LIMIT` nodes only where selected).

    ``graph`` and ``layout``: the graph and the positions, if the caller has built them
    (a widget keeps the layout to pass as ``previous`` next time).
    """
    g = rmap_graph(machine) if graph is None else graph
    pos = rmap_layout(g, previous) if layout is None else layout
    marked = _highlight_set(g, highlight)
    touched = {f"page:{pfn:#x}" for pfn in frames_changed(changes)}
    touched |= {f"av:{i}" for i in anon_vmas_changed(changes)}
    kinds = {}
    for node, kind in g.nodes(data="kind"):
        kinds.setdefault(kind, []).append(node)
    ys = [p[1] for p in pos.values()] or [0.0]
    xscale = WIDTH / 5.8

    def px(x):
        return (x + 0.9) * xscale

    # A fixed scale from a fixed origin (slot 0 at pixel 0; the viewBox grows to fit): a
    # node the layout keeps in place keeps its pixels from step to step.
    def py(y):
        return -y * _SLOT

    first = py(max(ys)) - _SLOT - _TOP          # the top of the picture
    height = py(min(ys)) + _SLOT + 8 - first

    title = (f"rmap: {len(kinds.get('mm', []))} mm, {len(kinds.get('vma', []))} VMAs, "
             f"{len(kinds.get('av', []))} anon_vmas, {len(kinds.get('page', []))} pages")
    out = [_open(WIDTH, height, title, first),
           _text(WIDTH / 2, first + 10, title, "middle", ' font-size="11" font-weight="bold"')]
    for kind in ("mm", "vma", "avc", "av", "page"):
        heading = {"av": "anon_vma, file", "avc": "AVC"}.get(kind, kind)
        out.append(_text(px(COLUMNS[kind]), first + 30, heading, "middle", ' font-size="10" font-weight="bold"'))
    out.append('<g class="edges" fill="none">')
    for u, v, k in sorted(g.edges(data="kind"), key=lambda e: (_EDGE_ORDER[e[2]], e[0], e[1])):
        (x0, y0), (x1, y1) = pos[u], pos[v]
        selected = u in marked and v in marked
        colour = _style.SELECTED if selected else _style.EDGE_COLORS[k]
        dash = ' stroke-dasharray="4 3"' if k in ("parent", "root") else ""
        out.append(f'<line class="edge {k}{" selected" if selected else ""}" '
                   f'x1="{_n(px(x0))}" y1="{_n(py(y0))}" x2="{_n(px(x1))}" y2="{_n(py(y1))}" '
                   f'stroke="{colour}" stroke-width="{0.5 if k == "maps" else 1}"{dash}/>')
    out.append("</g>")
    radius = 2.5
    crowded = {k for k, members in kinds.items() if len(members) > LABEL_LIMIT}
    for node in sorted(g, key=lambda n: (pos[n][0], -pos[n][1], n)):
        data = g.nodes[node]
        kind = data["kind"]
        x, y = px(pos[node][0]), py(pos[node][1])
        classes = ["node", kind]
        stroke, width = _PLAIN_EDGE, 0.5
        if node in marked:
            classes.append("selected")
            stroke, width = _style.SELECTED, 2.0
        elif node in touched:
            stroke, width = _style.HIGHLIGHT, 2.0
        if node in touched:
            classes.append("changed")
        fill = _style.NODE_COLORS[kind]
        paint = f'fill="{fill}" stroke="{stroke}" stroke-width="{width}"'
        r = radius * (0.65 if kind == "avc" else 1.0)
        if kind in ("page", "file"):
            shape = (f'<rect x="{_n(x - r)}" y="{_n(y - r)}" width="{_n(2 * r)}" '
                     f'height="{_n(2 * r)}" {paint}/>')
        else:
            shape = f'<circle cx="{_n(x)}" cy="{_n(y)}" r="{_n(r)}" {paint}/>'
        label = ""
        if kind != "avc" and (kind == "mm" or node in marked or kind not in crowded):
            right = kind == "page"
            label = _text(x + (r + 3 if right else -r - 3), y, data["label"],
                          "start" if right else "end")
        out.append(f'<g class="{" ".join(classes)}" data-node="{escape(node)}">'
                   f'<title>{escape(_node_title(node, data))}</title>{shape}{label}</g>')
    out.append("</svg>")
    return "".join(out)


def _node_title(node, data):
    """The hover text of an rmap node: its id and what it is."""
    kind = data["kind"]
    if kind == "vma":
        return f"{node}: VMA {data['start']:#x}-{data['end']:#x} {data['perms']} {data['name'] or ''}".rstrip()
    if kind == "avc":
        return f"{node}: anon_vma_chain to anon_vma {data['anon_vma']}"
    if kind == "page":
        return (f"{node}: {data['page_kind']} page, mapcount {data['mapcount']}, "
                f"refcount {data['refcount']}")
    return f"{node}: {data['label']}"
