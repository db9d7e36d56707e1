"""The SVG pictures (vmwidgets/views/svg.py), headless: parse them and look at the elements."""

import xml.etree.ElementTree as ET

import pytest

import vmwidgets as vw
from vmwidgets.views import rmap_graph, rmap_layout, step_changes
from vmwidgets.views.svg import address_space_svg, message_svg, rmap_svg

from .scenes import ANON, RW, family

NS = "{http://www.w3.org/2000/svg}"


def parse(text):
    root = ET.fromstring(text)
    assert root.tag == f"{NS}svg" and root.get("role") == "img" and root.get("aria-label")
    assert root.find(f"{NS}title").text == root.get("aria-label")
    return root


def groups(root, cls):
    return [g for g in root.iter(f"{NS}g") if cls in g.get("class", "").split()]


def title(element):
    return element.find(f"{NS}title").text


def test_strip_has_every_vma_of_the_maps_with_its_line_as_title():
    m, p, c, a, f = family()
    root = parse(address_space_svg(m, p.pid))
    vmas = groups(root, "vma")
    # Every line of the maps but [vsyscall] (the gate area: printed by Linux, not a VMA;
    # the matplotlib strip leaves it out too).
    lines = [line for line in p.proc_maps().splitlines() if not line.endswith("[vsyscall]")]
    assert len(vmas) == len(lines) == p.mm.map_count
    for g, line in zip(vmas, lines):
        start = int(line.split("-")[0], 16)
        assert g.get("data-start") == f"{start:#x}"
        assert title(g) == line.rstrip()
        assert g.find(f"{NS}rect") is not None and g.find(f"{NS}text").text.startswith(line.split()[1])
    labels = [g.find(f"{NS}text").text for g in vmas]
    assert any(t.endswith("[heap]") for t in labels) and any("av " in t for t in labels)
    assert "VMAs (not to scale)" in root.get("aria-label")
    gaps = groups(root, "gap")
    assert gaps and all(title(g).startswith("gap of ") for g in gaps)


def test_strip_marks_the_changed_vma_the_unmapped_range_and_the_selection():
    m = vw.Machine(ram="16M")
    p = m.spawn()
    a = p.mmap(0x10000000, 4 * 4096, RW, ANON | vw.MAP_FIXED)
    p.mprotect(a, 4096, vw.PROT_READ)
    n = len(m.timeline)
    ch = step_changes(m.timeline.state(n - 1), m.timeline.state(n))
    root = parse(address_space_svg(m, p.pid, changes=ch, highlight=a + 2 * 4096))
    changed = {g.get("data-start") for g in groups(root, "changed")}
    assert f"{a:#x}" in changed
    assert [g.get("data-start") for g in groups(root, "selected")] == [f"{a + 4096:#x}"]
    p.munmap(a + 4096, 4096)
    n = len(m.timeline)
    ch = step_changes(m.timeline.state(n - 1), m.timeline.state(n))
    root = parse(address_space_svg(m, p.pid, changes=ch))
    assert [r for r in root.iter(f"{NS}rect") if r.get("class") == "removed"]
    assert not groups(parse(address_space_svg(m, p.pid)), "changed")


def test_rmap_has_every_node_with_its_label_and_a_title():
    m, p, c, a, f = family()
    g = rmap_graph(m)
    root = parse(rmap_svg(m))
    nodes = {e.get("data-node"): e for e in groups(root, "node")}
    assert set(nodes) == set(g)
    for node, data in g.nodes(data=True):
        e = nodes[node]
        assert data["kind"] in e.get("class").split()
        assert title(e).startswith(node + ":")
        if data["kind"] != "avc":
            assert e.find(f"{NS}text").text == data["label"]
    lines = [e for e in root.iter(f"{NS}line")]
    assert len(lines) == g.number_of_edges()


def test_rmap_highlight_and_changes_are_marked():
    m, p, c, a, f = family()
    vma = f"vma:{p.pid}:{a:#x}"
    g = rmap_graph(m)
    root = parse(rmap_svg(m, highlight=vma))
    selected = {e.get("data-node") for e in groups(root, "selected")}
    chains = {v for _, v, k in g.out_edges(vma, data="kind") if k == "chain"}
    pages = {v for _, v, k in g.out_edges(vma, data="kind") if k == "maps"}
    assert vma in selected and chains and chains <= selected and pages and pages <= selected
    assert any("selected" in e.get("class") for e in root.iter(f"{NS}line"))
    p.write(a + 2 * 4096, b"new")                       # a new anonymous page
    n = len(m.timeline)
    ch = step_changes(m.timeline.state(n - 1), m.timeline.state(n))
    root = parse(rmap_svg(m, changes=ch))
    pfn = p.pagemap(a + 2 * 4096).pfn
    assert f"page:{pfn:#x}" in {e.get("data-node") for e in groups(root, "changed")}


def test_output_is_deterministic_and_text_is_escaped():
    m, p, c, a, f = family()
    assert rmap_svg(m) == rmap_svg(m) and address_space_svg(m, p.pid) == address_space_svg(m, p.pid)
    other, *_ = family()
    assert rmap_svg(other) == rmap_svg(m)
    m.create_file("/tmp/<a&b>", b"x" * 4096)
    fd = p.open("/tmp/<a&b>")
    p.mmap(0, 4096, vw.PROT_READ, vw.MAP_PRIVATE, fd, 0)
    for text in (address_space_svg(m, p.pid), rmap_svg(m), message_svg("<not> & running")):
        parse(text)
    assert "&lt;a&amp;b&gt;" in rmap_svg(m) and "<a&b>" not in rmap_svg(m)


def test_unchanged_nodes_keep_their_position_from_one_step_to_the_next():
    m, p, c, a, f = family()

    def positions(root):
        out = {}
        for e in groups(root, "node"):
            shape = e.find(f"{NS}circle")
            if shape is not None:
                out[e.get("data-node")] = (shape.get("cx"), shape.get("cy"))
            else:
                shape = e.find(f"{NS}rect")
                out[e.get("data-node")] = (shape.get("x"), shape.get("y"))
        return out

    g0 = rmap_graph(m)
    layout = rmap_layout(g0)
    first = positions(parse(rmap_svg(m, graph=g0, layout=layout)))
    assert first == positions(parse(rmap_svg(m)))           # graph/layout given or not: same
    b = p.mmap(0, 2 * 4096, RW, ANON)
    p.write(b, b"x")
    second = positions(parse(rmap_svg(m, previous=layout)))
    kept = set(first) & set(second)
    assert len(kept) >= len(first) - 1 and len(second) > len(first)
    assert all(first[n] == second[n] for n in kept)
    # And through the Explorer, which passes the layout of the picture before.
    pytest.importorskip("ipywidgets")
    from vmwidgets.widgets import Explorer
    ex = Explorer(m)
    before = positions(parse(ex.picture.value.split("<br>")[1].removesuffix("</div>")))
    ex.set_op("mmap", addr="0", length="8K", prot="rw-", flags="private|anonymous")
    ex.run_button.click()
    after = positions(parse(ex.picture.value.split("<br>")[1].removesuffix("</div>")))
    kept = set(before) & set(after)        # the mmap may merge with a VMA (a new VMA id)
    assert len(kept) >= len(before) - 2 and all(after[n] == before[n] for n in kept)
