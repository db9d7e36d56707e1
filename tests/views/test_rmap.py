"""The rmap graph: its structure against the model's anon_vma chains, i_mmap and
rmap_walk; the layout's stability; the drawing's artists; the text."""

import pytest

import vmwidgets as vw
from vmwidgets.views import draw_rmap, rmap_graph, rmap_layout, rmap_text, step_changes

from .scenes import ANON, RW, family, many_vmas


def edges(g, kind):
    return {(u, v) for u, v, k in g.edges(data="kind") if k == kind}


def test_chain_edges_are_the_anon_vma_chains():
    m, p, c, a, f = family()
    g = rmap_graph(m)
    want_chain, want_av = set(), set()
    for proc in m.processes:
        for vma in proc.mm.mm_mt:
            vid = f"vma:{proc.pid}:{vma.vm_start:#x}"
            assert g.nodes[vid]["kind"] == "vma"
            assert (f"mm:{proc.pid}", vid) in edges(g, "vma")
            for avc in vma.anon_vma_chain:
                cid = f"avc:{proc.pid}:{vma.vm_start:#x}:{avc.anon_vma.id}"
                want_chain.add((vid, cid))
                want_av.add((cid, f"av:{avc.anon_vma.id}"))
    assert edges(g, "chain") == want_chain and edges(g, "anon_vma") == want_av
    assert len(want_chain) >= 4       # parent and child both chain to the shared anon_vma
    # Each anon_vma's in-edges from AVCs are exactly its rb_root (the interval tree).
    for av in m.anon_vmas.values():
        got = {u for u, v in edges(g, "anon_vma") if v == f"av:{av.id}"}
        assert got == {f"avc:{x.vma.vm_mm.owner.pid}:{x.vma.vm_start:#x}:{av.id}" for x in av.rb_root}


def test_parent_and_root_edges():
    m, p, c, a, f = family()
    g = rmap_graph(m)
    want = {(f"av:{av.id}", f"av:{av.parent.id}") for av in m.anon_vmas.values() if av.parent is not av}
    assert want and edges(g, "parent") == want
    roots = {n for n, d in g.nodes(data=True) if d["kind"] == "av" and d["root"] == d["id"]}
    assert {f"av:{av.id}" for av in m.anon_vmas.values() if av.root is av} == roots


def test_maps_edges_equal_rmap_walk_and_page_edges_the_owner():
    m, p, c, a, f = family()
    g = rmap_graph(m)
    pages = [n for n, d in g.nodes(data=True) if d["kind"] == "page"]
    assert len(pages) >= 4
    want = set()
    for node in pages:
        pfn = g.nodes[node]["pfn"]
        for proc, vma, addr in vw.rmap_walk(m, pfn):
            want.add((f"vma:{proc.pid}:{vma.vm_start:#x}", node, addr))
        page = m.phys.pages[pfn]
        owner = f"av:{page.mapping.id}" if page.kind == "anon" else f"file:{page.mapping.host.path}"
        assert g.has_edge(owner, node)
        assert g.nodes[node]["mapcount"] == m.kpagecount(pfn)
    got = {(u, v, d["address"]) for u, v, d in g.edges(data=True) if d["kind"] == "maps"}
    assert got == want
    # The COW copy of the child is its own page; the parent's first page is exclusive.
    pa, ca = p.pagemap(a).pfn, c.pagemap(a).pfn
    assert pa != ca
    assert {u for u, v in edges(g, "maps") if v == f"page:{pa:#x}"} == {f"vma:{p.pid}:{a:#x}"}
    shared = p.pagemap(a + 4096).pfn
    assert {u for u, v in edges(g, "maps") if v == f"page:{shared:#x}"} == {
        f"vma:{p.pid}:{a:#x}", f"vma:{c.pid}:{a:#x}"}


def test_file_side_is_i_mmap_and_page_cache():
    m, p, c, a, f = family()
    g = rmap_graph(m)
    mapping = m.files["/data/f"].mapping
    assert edges(g, "i_mmap") >= {("file:/data/f", f"vma:{v.vm_mm.owner.pid}:{v.vm_start:#x}")
                                  for v in mapping.i_mmap}
    assert {v for u, v in edges(g, "i_pages") if u == "file:/data/f"} == {
        f"page:{pg.pfn:#x}" for pg in mapping.i_pages.values()}


def test_layout_is_deterministic_and_columns_by_kind():
    m1, *_ = family()
    m2, *_ = family()
    g1, g2 = rmap_graph(m1), rmap_graph(m2)
    assert rmap_layout(g1) == rmap_layout(g2)
    pos = rmap_layout(g1)
    xs = {g1.nodes[n]["kind"]: x for n, (x, y) in pos.items()}
    assert xs["mm"] < xs["vma"] < xs["avc"] < xs["av"] < xs["page"]
    assert len(set(pos.values())) == len(pos)        # no two nodes on top of each other
    for proc in m1.processes:
        first = f"vma:{proc.pid}:{next(iter(proc.mm.mm_mt)).vm_start:#x}"
        assert pos[f"mm:{proc.pid}"][1] == pos[first][1]


def test_unchanged_nodes_keep_their_position_step_after_step():
    m, p, base = many_vmas(2, 20)
    pos = rmap_layout(rmap_graph(m))
    ops = [lambda: p.mmap(0, 3 * 4096, RW, ANON),
           lambda: p.write(base + 3 * 4096, b"w"),
           lambda: p.mprotect(base + 2 * 4096, 4096, RW),
           lambda: p.munmap(base + 6 * 4096, 2 * 4096),
           lambda: p.fork()]
    for op in ops:
        op()
        g = rmap_graph(m)
        new = rmap_layout(g, previous=pos)
        kept = set(pos) & set(new)
        assert kept and all(new[n] == pos[n] for n in kept)
        assert set(new) == set(g)
        # New nodes land between their neighbours: each column stays in its order.
        for kind in ("vma", "av", "page"):
            col = sorted((n for n in g if g.nodes[n]["kind"] == kind), key=lambda n: g.nodes[n]["order"])
            ys = [new[n][1] for n in col]
            assert ys == sorted(ys, reverse=True), kind
        assert len(set(new.values())) == len(new)
        pos = new


def test_draw_artists_match_the_graph():
    m, p, c, a, f = family()
    ax = draw_rmap(m)
    g = ax.rmap_graph
    lines = [col for col in ax.collections if col.get_gid() == "edges"]
    assert len(lines) == 1 and len(lines[0].get_segments()) == g.number_of_edges()
    round_, square = ([col for col in ax.collections if col.get_gid() == gid][0]
                      for gid in ("nodes-round", "nodes-square"))
    assert len(round_.get_offsets()) + len(square.get_offsets()) == g.number_of_nodes()
    assert set(square.vmwidgets_nodes) == {n for n, d in g.nodes(data=True) if d["kind"] in ("page", "file")}
    for node, (x, y) in zip(round_.vmwidgets_nodes, round_.get_offsets()):
        assert ax.rmap_layout[node] == (x, y)
    labels = {t.get_gid(): t.get_text() for t in ax.texts if t.get_gid()}
    assert labels[f"label:mm:{p.pid}"] == f"mm {p.pid}"
    assert labels["label:file:/data/f"] == "/data/f"
    assert "rmap:" in ax.get_title()


def test_highlight_a_vma_colours_its_chains_and_pages():
    m, p, c, a, f = family()
    node = f"vma:{c.pid}:{a:#x}"
    ax = draw_rmap(m, highlight=node)
    from matplotlib.colors import to_rgba
    from vmwidgets.views._style import SELECTED
    round_ = [col for col in ax.collections if col.get_gid() == "nodes-round"][0]
    sel = {n for n, e in zip(round_.vmwidgets_nodes, round_.get_edgecolors()) if tuple(e) == to_rgba(SELECTED)}
    vma = c.mm.vma_lookup(a)
    assert sel == {node} | {f"avc:{c.pid}:{a:#x}:{x.anon_vma.id}" for x in vma.anon_vma_chain} | {
        f"av:{x.anon_vma.id}" for x in vma.anon_vma_chain}
    with pytest.raises(ValueError, match="not a node"):
        draw_rmap(m, highlight="vma:1:0x0")


def test_changes_outline_new_pages_and_redraw_reuses_the_axes():
    m, p, c, a, f = family()
    ax = draw_rmap(m)
    c.write(a + 4096, b"copy")
    n = m.nr_steps
    ch = step_changes(m.timeline.state(n - 1), m.timeline.state(n))
    ax2 = draw_rmap(m, ax=ax, changes=ch, previous=ax.rmap_layout)
    assert ax2 is ax and len([x for x in ax.collections if x.get_gid() == "edges"]) == 1
    from matplotlib.colors import to_rgba
    from vmwidgets.views._style import HIGHLIGHT
    square = [col for col in ax.collections if col.get_gid() == "nodes-square"][0]
    red = {n for n, e in zip(square.vmwidgets_nodes, square.get_edgecolors()) if tuple(e) == to_rgba(HIGHLIGHT)}
    assert f"page:{c.pagemap(a + 4096).pfn:#x}" in red


def test_text_names_every_vma_chain_and_mapping():
    m, p, c, a, f = family()
    text = rmap_text(m)
    for proc in m.processes:
        assert f"mm of pid {proc.pid}:" in text
        for vma in proc.mm.mm_mt:
            assert f"VMA {vma.vm_start:#x}-{vma.vm_end:#x} {vma.perms()}" in text
    for av in m.anon_vmas.values():
        assert f"anon_vma {av.id} (" in text
    shared = p.pagemap(a + 4096).pfn
    line = [l for l in text.splitlines() if l.startswith(f"page {shared:#x} ")][0]
    assert f"pid {p.pid} at {a + 4096:#x}" in line and f"pid {c.pid} at {a + 4096:#x}" in line
    assert "mapcount 2" in line
    assert "file /data/f: i_mmap has 2 VMA(s)" in text     # parent and child


def test_not_a_machine():
    with pytest.raises(TypeError, match="Machine"):
        rmap_graph(object())


def test_crowded_kinds_are_unlabelled_unless_asked():
    m, p, base = many_vmas(3, 50)
    ax = draw_rmap(m)
    g = ax.rmap_graph
    gids = {t.get_gid() for t in ax.texts if t.get_gid()}
    assert {f"label:mm:{q.pid}" for q in m.processes} <= gids
    assert not any(x.startswith("label:vma:") for x in gids)      # 150 VMAs: too many
    sel = f"vma:{p.pid}:{base:#x}"
    ax = draw_rmap(m, ax=ax, highlight=sel)
    assert f"label:{sel}" in {t.get_gid() for t in ax.texts}
    ax = draw_rmap(m, ax=ax, labels=True)
    labelled = {t.get_gid() for t in ax.texts if t.get_gid()}
    assert labelled == {f"label:{n}" for n, k in g.nodes(data="kind") if k != "avc"}


def test_every_node_is_inside_the_drawing():
    m, p, base = many_vmas(1, 10)
    ax = draw_rmap(m)
    p.mmap(0x1000000, 4096, RW, ANON | vw.MAP_FIXED)      # lowest address: above the rest
    ax = draw_rmap(m, ax=ax, previous=ax.rmap_layout)
    new = ax.rmap_layout[f"vma:{p.pid}:0x1000000"]
    lo, hi = ax.get_ylim()
    assert all(lo < y < hi for _x, y in ax.rmap_layout.values())
    assert new[1] > ax.rmap_layout[f"vma:{p.pid}:{base:#x}"][1]
