"""The reverse map as a graph, across all processes (mm/rmap.c, include/linux/rmap.h).

Nodes (string ids, stable from step to step while the object lives):

==========================  =====================================================
``mm:PID``                  a process's ``mm_struct``
``vma:PID:0xSTART``         a VMA (a VMA that moves or is split gets a new id)
``avc:PID:0xSTART:AV``      the anon_vma_chain linking that VMA to anon_vma AV
``av:ID``                   an ``anon_vma``
``page:0xPFN``              an anonymous or page-cache frame
``file:PATH``               a file's ``address_space``
==========================  =====================================================

Edges carry ``kind``: ``vma`` (mm -> VMA), ``chain`` (VMA -> AVC, one per entry of
``vma->anon_vma_chain``), ``anon_vma`` (AVC -> anon_vma), ``parent`` and ``root``
(anon_vma -> its parent / root, omitted when it is its own), ``page`` (anon_vma -> the
anonymous pages whose ``mapping`` it is), ``i_pages`` (file -> its cached pages),
``i_mmap`` (file -> the VMAs mapping it) and ``maps`` (VMA -> a page it maps, with the
``address``: exactly what :func:`vmwidgets.rmap_walk` finds for that page).

>>> import vmwidgets as vw
>>> m = vw.Machine(); p = m.spawn()
>>> a = p.mmap(0, 4096, vw.PROT_READ | vw.PROT_WRITE, vw.MAP_PRIVATE | vw.MAP_ANONYMOUS)
>>> p.write(a, b"x")
>>> g = rmap_graph(m)
>>> sorted(v for u, v, k in g.edges(data="kind") if k == "maps" and u == f"vma:1:{a:#x}")
['page:0x...']
"""

import math

import networkx as nx
import numpy as np

from ..core.rmap import rmap_walk
from ..procfs import vma_name
from . import _style
from ._changes import anon_vmas_changed, frames_changed

#: Above this many nodes of a kind, :func:`draw_rmap` leaves them unlabelled by default.
LABEL_LIMIT = 40

#: x column of each node kind in :func:`rmap_layout`.
COLUMNS = {"mm": 0.0, "vma": 1.0, "avc": 2.0, "av": 3.0, "file": 3.0, "page": 4.0}


_EDGE_ORDER = {k: i for i, k in enumerate(
    ("vma", "chain", "anon_vma", "parent", "root", "page", "i_mmap", "i_pages", "maps"))}


def _vma_id(vma):
    return f"vma:{vma.vm_mm.owner.pid}:{vma.vm_start:#x}"


def _order(kind, *key):
    # Sort key of a node inside its column (files go below the anon_vmas of column 3).
    return (1 if kind == "file" else 0,) + key


def rmap_graph(machine):
    """The rmap structures of ``machine`` as a :class:`networkx.DiGraph` (see the module
    docstring for nodes and edges). Node attributes: ``kind``, ``label``, ``order`` (sort
    key within the node's column) and per kind ``pid``, ``start``/``end``/``perms``,
    ``id``/``root``, ``pfn``/``mapcount``/``refcount``, ``path``."""
    _style.check_machine(machine)
    g = nx.DiGraph()
    files = {}
    vma_node = {}
    for proc in sorted(machine.processes, key=lambda p: p.pid):
        pid = proc.pid
        mm_id = f"mm:{pid}"
        g.add_node(mm_id, kind="mm", label=f"mm {pid}", pid=pid, order=_order("mm", pid))
        for vma in proc.mm.mm_mt:
            vid = _vma_id(vma)
            vma_node[vma] = vid
            name = vma_name(vma)
            g.add_node(vid, kind="vma", pid=pid, start=vma.vm_start, end=vma.vm_end,
                       perms=vma.perms(), name=name, order=_order("vma", pid, vma.vm_start),
                       label=f"{vma.vm_start:#x} {vma.perms()}")
            g.add_edge(mm_id, vid, kind="vma")
            for avc in vma.anon_vma_chain:
                av = avc.anon_vma
                cid = f"avc:{pid}:{vma.vm_start:#x}:{av.id}"
                g.add_node(cid, kind="avc", pid=pid, anon_vma=av.id, label="avc",
                           order=_order("avc", pid, vma.vm_start, av.id))
                g.add_edge(vid, cid, kind="chain")
                g.add_edge(cid, f"av:{av.id}", kind="anon_vma")
            if vma.vm_file is not None:
                files.setdefault(vma.vm_file.path, vma.vm_file)
    for av in sorted(machine.anon_vmas.values(), key=lambda a: a.id):
        aid = f"av:{av.id}"
        g.add_node(aid, kind="av", id=av.id, root=av.root.id, parent=av.parent.id,
                   label=f"anon_vma {av.id}" + (" (root)" if av.root is av else ""),
                   order=_order("av", av.root.id, av.id))
        if av.parent is not av:
            g.add_edge(aid, f"av:{av.parent.id}", kind="parent")
        if av.root is not av and av.root is not av.parent:
            g.add_edge(aid, f"av:{av.root.id}", kind="root")
    for path, f in sorted(files.items()):
        fid = f"file:{path}"
        g.add_node(fid, kind="file", path=path, label=path, order=_order("file", path))
        for vma in sorted(f.mapping.i_mmap, key=lambda v: (v.vm_mm.owner.pid, v.vm_start)):
            if vma in vma_node:
                g.add_edge(fid, vma_node[vma], kind="i_mmap")
    for pfn, page in sorted(machine.phys.pages.items()):
        if page.kind == "anon":
            owner = f"av:{page.mapping.id}"
            kind = "page"
        elif page.kind == "file" and page.mapping.host.path in files:
            owner = f"file:{page.mapping.host.path}"
            kind = "i_pages"
        else:
            continue
        pid_ = f"page:{pfn:#x}"
        g.add_node(pid_, kind="page", pfn=pfn, mapcount=page.mapcount, refcount=page.refcount,
                   page_kind=page.kind, label=f"{pfn:#x}", order=_order("page", pfn))
        if owner in g:
            g.add_edge(owner, pid_, kind=kind)
        for _proc, vma, address in rmap_walk(machine, pfn):
            if vma in vma_node:
                g.add_edge(vma_node[vma], pid_, kind="maps", address=address)
    return g


def rmap_layout(graph, previous=None):
    """Positions ``{node: (x, y)}`` for :func:`rmap_graph`: one column per kind (mm, VMA,
    AVC, anon_vma and files, pages), nodes top to bottom in their ``order``, on integer
    slots two apart (one free slot between neighbours).

    Deterministic. With ``previous`` (the layout of the step before), every node that is
    still there keeps its position exactly, and new nodes take free slots: between their
    neighbours in the column's order when there is room (evenly spread), else the free
    slots nearest to that place, so nodes never overlap and a step moves nothing it did
    not change. A column can then fall out of order where many nodes were inserted at one
    place; drawing once without ``previous`` lays everything out afresh. An mm is placed
    level with its first VMA.
    """
    columns = {}
    for node, data in graph.nodes(data=True):
        if data["kind"] != "mm":
            columns.setdefault(data["kind"] if data["kind"] != "file" else "av", []).append(
                (data["order"], node))
    pos = {}
    for kind, items in sorted(columns.items()):
        items.sort()
        x = COLUMNS[kind]
        if not previous:
            for rank, (_o, node) in enumerate(items):
                pos[node] = (x, -2.0 * rank)
            continue
        kept = [i for i, (_o, node) in enumerate(items) if node in previous
                and previous[node][0] == x]
        taken = set()
        for i in kept:
            pos[items[i][1]] = previous[items[i][1]]
            taken.add(previous[items[i][1]][1])
        bounds = [-1] + kept + [len(items)]
        for a, b in zip(bounds, bounds[1:]):
            run = [items[i][1] for i in range(a + 1, b)]
            if not run:
                continue
            top = pos[items[a][1]][1] if a >= 0 else None
            bottom = pos[items[b][1]][1] if b < len(items) else None
            for node, y in zip(run, _slots(top, bottom, len(run), taken)):
                pos[node] = (x, y)
                taken.add(y)
    # An mm sits level with its first VMA (and stays where it was, once placed).
    mms = sorted((d["order"], n) for n, d in graph.nodes(data=True) if d["kind"] == "mm")
    x = COLUMNS["mm"]
    taken = set()
    new = []
    for rank, (_o, node) in enumerate(mms):
        if previous and node in previous and previous[node][0] == x:
            pos[node] = previous[node]
            taken.add(previous[node][1])
        else:
            new.append((rank, node))
    for rank, node in new:
        first = min((graph.nodes[v]["order"], v) for v in graph.successors(node)) \
            if graph.out_degree(node) else None
        y = pos[first[1]][1] if first else -2.0 * rank
        if y in taken:                      # a slot an older mm keeps: the nearest free one
            y = _slots(y + 1, y - 1, 1, taken)[0]
        pos[node] = (x, y)
        taken.add(y)
    return pos


def _slots(top, bottom, k, taken):
    """``k`` free integer slots, top to bottom, for nodes that belong between the slots
    ``top`` and ``bottom`` (either may be None: the start or end of the column)."""
    if top is None and bottom is None:
        top = 1.0
    if top is None:
        top = bottom + 2.0 * k + 1
    if bottom is None:
        bottom = top - 2.0 * k - 1
    free = [float(y) for y in range(int(math.ceil(top)) - 1, int(math.floor(bottom)), -1)
            if y < top and y > bottom and float(y) not in taken]
    if len(free) >= k:
        # Spread evenly over the room there is, keeping the order.
        return [free[(i + 1) * (len(free) + 1) // (k + 1) - 1] for i in range(k)]
    # No room: the nearest free slots around the middle (the order may suffer).
    mid = round((top + bottom) / 2)
    out = []
    d = 0
    while len(out) < k:
        for y in (mid - d, mid + d) if d else (mid,):
            if float(y) not in taken and float(y) not in out and len(out) < k:
                out.append(float(y))
        d += 1
    return sorted(out, reverse=True)


def draw_rmap(machine, ax=None, highlight=None, changes=None, previous=None, labels=None):
    """Draw :func:`rmap_graph` with :func:`rmap_layout`; returns the Axes.

    Cheap on purpose: the edges are one ``LineCollection`` (gid ``"edges"``, sorted by
    kind then ids), the nodes two scatters (gid ``"nodes-round"``: mm, VMA, AVC,
    anon_vma; ``"nodes-square"``: files and pages; ``.vmwidgets_nodes`` lists their
    node ids in order). ``highlight`` is a node id (e.g.
    ``"vma:1:0x7ffff7ff6000"``) or an iterable of them: those nodes, their chains, anon_vmas
    and pages are drawn in the selection colour. ``changes`` outlines the frames and
    anon_vmas the last step touched. ``previous`` is the layout of the step before (see
    :func:`rmap_layout`); the layout used is left in ``ax.rmap_layout`` and the graph in
    ``ax.rmap_graph``. ``labels``: True labels every node, False only the mm nodes and the
    highlighted ones; by default a kind of node is labelled unless there are more than
    :data:`LABEL_LIMIT` of it (the labels would overlap, and each costs ~1 ms to render;
    the text alternative names them all).
    """
    from matplotlib.collections import LineCollection

    g = rmap_graph(machine)
    pos = rmap_layout(g, previous)
    ax = _style.new_axes(ax, (9, 6), keep=("edges", "nodes-round", "nodes-square"))
    marked = _highlight_set(g, highlight)
    touched = {f"page:{pfn:#x}" for pfn in frames_changed(changes)}
    touched |= {f"av:{i}" for i in anon_vmas_changed(changes)}
    edges = sorted(g.edges(data="kind"), key=lambda e: (_EDGE_ORDER[e[2]], e[0], e[1]))
    segs = [(pos[u], pos[v]) for u, v, _k in edges]
    colors = [_style.SELECTED if u in marked and v in marked else _style.EDGE_COLORS[k]
              for u, v, k in edges]
    widths = [0.5 if k == "maps" else 1.0 for _u, _v, k in edges]
    styles = ["dashed" if k in ("parent", "root") else "solid" for _u, _v, k in edges]
    lc = _style.kept(ax, "edges")
    if lc is None:
        lc = LineCollection(segs, zorder=1, gid="edges")
        ax.add_collection(lc)
    lc.set_segments(segs)
    lc.set_color(colors)
    lc.set_linewidth(widths)
    lc.set_linestyle(styles)
    kinds = {}
    for node, kind in g.nodes(data="kind"):
        kinds.setdefault(kind, []).append(node)
    # Markers shrink as the tallest column fills up (60 points^2 up to 25 slots).
    size = max(6.0, min(60.0, 1500.0 / max(1, max((len(v) for v in kinds.values()), default=1))))
    for shape, members in (("o", ("mm", "vma", "avc", "av")), ("s", ("file", "page"))):
        gid = "nodes-" + ("round" if shape == "o" else "square")
        nodes = sorted(n for k in members for n in kinds.get(k, ()))
        edge = [_style.SELECTED if n in marked else _style.HIGHLIGHT if n in touched
                else "#525252" for n in nodes]
        sc = _style.kept(ax, gid)
        if sc is None:
            sc = ax.scatter([], [], marker=shape, zorder=2, gid=gid)
        sc.set_offsets([pos[n] for n in nodes] if nodes else np.empty((0, 2)))
        sc.set_sizes([size * (0.4 if g.nodes[n]["kind"] == "avc" else 1.0) for n in nodes])
        sc.set_facecolor([_style.NODE_COLORS[g.nodes[n]["kind"]] for n in nodes])
        sc.set_edgecolor(edge)
        sc.set_linewidth([2.0 if e != "#525252" else 0.5 for e in edge])
        sc.vmwidgets_nodes = nodes
    crowded = {k for k, members in kinds.items() if len(members) > LABEL_LIMIT}
    for node, data in g.nodes(data=True):
        kind = data["kind"]
        if kind == "avc":
            continue
        if not (kind == "mm" or node in marked or labels is True
                or (labels is None and kind not in crowded)):
            continue
        x, y = pos[node]
        right = kind == "page"
        _style.text(ax, x + (0.08 if right else -0.08), y, data["label"], fontsize=_style.FONT_SIZE,
                    ha="left" if right else "right", va="center", zorder=3, gid=f"label:{node}")
    ys = [p[1] for p in pos.values()] or [0.0]
    top = max(ys)
    for kind in ("mm", "vma", "avc", "av", "page"):
        _style.text(ax, (COLUMNS[kind] + 0.9) / 5.8, 1.0,
                    {"av": "anon_vma, file", "avc": "AVC"}.get(kind, kind),
                    ha="center", va="bottom", fontsize=_style.FONT_SIZE + 1, weight="bold",
                    transform=ax.transAxes)
    ax.set_xlim(-0.9, 4.9)
    ax.set_ylim(min(ys) - 1.0, top + 1.0)
    _style.finish(ax, f"rmap: {len(kinds.get('mm', []))} mm, {len(kinds.get('vma', []))} VMAs, "
                 f"{len(kinds.get('av', []))} anon_vmas, {len(kinds.get('page', []))} pages", pad=16)
    ax.rmap_layout = pos
    ax.rmap_graph = g
    return ax


def _highlight_set(g, highlight):
    """The selected nodes and what hangs off them: a VMA's chains, anon_vmas and pages;
    an anon_vma's chains, VMAs and pages; a page's VMAs."""
    if highlight is None:
        return set()
    seeds = [highlight] if isinstance(highlight, str) else list(highlight)
    out = set()
    for node in seeds:
        if node not in g:
            raise ValueError(f"{node!r} is not a node of the rmap graph")
        out.add(node)
        kind = g.nodes[node]["kind"]
        if kind == "vma":
            for _, c, k in g.out_edges(node, data="kind"):
                out.add(c)
                if k == "chain":
                    out.update(g.successors(c))
                if k == "maps":
                    out.add(c)
        elif kind == "av":
            for c, _ in g.in_edges(node):
                if g.nodes[c]["kind"] == "avc":
                    out.add(c)
                    out.update(g.predecessors(c))
            out.update(v for _, v, k in g.out_edges(node, data="kind") if k == "page")
        elif kind == "page":
            out.update(u for u, _, k in g.in_edges(node, data="kind") if k in ("maps", "page", "i_pages"))
        elif kind == "mm":
            out.update(g.successors(node))
    return out


def rmap_text(machine, graph=None):
    """The text alternative of :func:`draw_rmap`: per process its VMAs with their chains,
    then each anon_vma tree with its pages, then each mapped file with its i_mmap, then
    each page with the VMAs and addresses that map it (the rmap walk). ``graph``: the
    :func:`rmap_graph` of ``machine`` if already built (e.g. ``ax.rmap_graph``)."""
    g = rmap_graph(machine) if graph is None else graph
    lines = []
    nodes = g.nodes
    for mm in sorted((n for n in g if nodes[n]["kind"] == "mm"), key=lambda n: nodes[n]["order"]):
        lines.append(f"mm of pid {nodes[mm]['pid']}:")
        for vid in sorted(g.successors(mm), key=lambda n: nodes[n]["order"]):
            d = nodes[vid]
            chains = sorted(nodes[v]["anon_vma"] for _, v, k in g.out_edges(vid, data="kind")
                            if k == "chain")
            npages = sum(1 for _, _, k in g.out_edges(vid, data="kind") if k == "maps")
            text = f"  VMA {d['start']:#x}-{d['end']:#x} {d['perms']}"
            if d["name"]:
                text += f" {d['name']}"
            if chains:
                text += " -> anon_vma " + ", ".join(map(str, chains))
            if npages:
                text += f"; maps {npages} page{'s' if npages != 1 else ''}"
            lines.append(text)
    for aid in sorted((n for n in g if nodes[n]["kind"] == "av"), key=lambda n: nodes[n]["id"]):
        d = nodes[aid]
        rel = "root" if d["root"] == d["id"] else f"parent {d['parent']}, root {d['root']}"
        pages = sorted(nodes[v]["pfn"] for _, v, k in g.out_edges(aid, data="kind") if k == "page")
        vmas = sorted(u for c, _, k in g.in_edges(aid, data="kind") if k == "anon_vma"
                      for u in g.predecessors(c))
        lines.append(f"anon_vma {d['id']} ({rel}): {len(vmas)} VMA chain(s), "
                     f"{len(pages)} page(s)" + (": " + " ".join(f"{p:#x}" for p in pages) if pages else ""))
    for fid in sorted(n for n in g if nodes[n]["kind"] == "file"):
        vmas = [v for _, v, k in g.out_edges(fid, data="kind") if k == "i_mmap"]
        pages = [v for _, v, k in g.out_edges(fid, data="kind") if k == "i_pages"]
        lines.append(f"file {nodes[fid]['path']}: i_mmap has {len(vmas)} VMA(s), "
                     f"{len(pages)} page(s) cached")
    for page in sorted((n for n in g if nodes[n]["kind"] == "page"), key=lambda n: nodes[n]["pfn"]):
        d = nodes[page]
        users = sorted((nodes[u]["pid"], a) for u, _, a in g.in_edges(page, data="address") if a is not None)
        where = ", ".join(f"pid {p} at {a:#x}" for p, a in users) or "no PTE"
        lines.append(f"page {d['pfn']:#x} ({d['page_kind']}, mapcount {d['mapcount']}, "
                     f"refcount {d['refcount']}): {where}")
    return "\n".join(lines)
