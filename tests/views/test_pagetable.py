"""The page-table walk view against /proc/PID/pagemap and the page tables."""

import pytest

import vmwidgets as vw
from vmwidgets.core.flags import PAGE_SHIFT
from vmwidgets.views import draw_walk, step_changes, walk, walk_text

from .scenes import ANON, RW, family


def test_indices_and_pfn_agree_with_pagemap_for_every_page_of_every_vma():
    m, p, c, a, f = family()
    checked = 0
    for proc in (p, c):
        for vma in proc.mm.mm_mt:
            for addr in range(vma.vm_start, vma.vm_end, 4096):
                w = walk(m, proc.pid, addr + 0x123)
                e = proc.pagemap(addr)
                assert w.indices == tuple((addr >> s) & 511 for s in (39, 30, 21, 12))
                assert [r.index for r in w.rows] == list(w.indices[:len(w.rows)])
                if e.present:
                    assert w.pfn == e.pfn and len(w.rows) == 4
                    assert w.physical == (e.pfn << PAGE_SHIFT) | 0x123
                    checked += 1
                else:
                    assert w.pfn is None and w.swapped == e.swapped
    assert checked >= 8


def test_rows_follow_the_tables():
    m, p, c, a, f = family()
    w = walk(m, p.pid, a)
    assert [r.level for r in w.rows] == ["PGD", "PUD", "PMD", "PTE"]
    assert w.rows[0].table_pfn == p.mm.pgd.page.pfn
    for upper, lower in zip(w.rows, w.rows[1:]):
        assert upper.next_pfn == lower.table_pfn
        assert m.phys.pages[lower.table_pfn].kind == "pgtable"
    # fork write-protected the parent's PTE; the child's write did not give it back.
    assert "P" in w.rows[-1].flags and "RW" not in w.rows[-1].flags
    assert w.vma.startswith(f"{a:#x}-")


def test_zero_page_readonly_and_unmapped_addresses():
    m, p, c, a, f = family()
    z = walk(m, p.pid, a + 2 * 4096)
    assert z.zero_page and z.pfn == p.pagemap(a + 2 * 4096).pfn
    assert "RW" not in z.rows[-1].flags
    assert "shared zero page" in walk_text(m, p.pid, a + 2 * 4096)
    hole = walk(m, p.pid, 0x1000)
    assert hole.pfn is None and hole.vma is None and hole.rows[-1].entry == 0
    assert "no VMA holds this address" in walk_text(m, p.pid, 0x1000)


def test_text_shows_each_level_entry_and_flags():
    m, p, c, a, f = family()
    w = walk(m, p.pid, a + 4096)
    text = walk_text(m, p.pid, a + 4096)
    for r in w.rows:
        assert f"{r.level}[{r.index:#x}] in table pfn {r.table_pfn:#x} = {r.entry:#018x}" in text
        assert " ".join(r.flags) in text
    assert f"physical address {w.physical:#x} in pfn {w.pfn:#x}" in text


def test_draw_has_a_box_per_level_and_the_frame():
    m, p, c, a, f = family()
    ax = draw_walk(m, p.pid, a)
    gids = [x.get_gid() for x in ax.patches if x.get_gid()]
    assert gids == ["level-PGD", "level-PUD", "level-PMD", "level-PTE", "frame"]
    texts = " ".join(t.get_text() for t in ax.texts)
    assert f"pfn {p.pagemap(a).pfn:#x}" in texts and "index 255" in texts
    ax = draw_walk(m, p.pid, 0x1000, ax=ax)           # a walk that stops at the PGD
    assert [x.get_gid() for x in ax.patches if x.get_gid()] == ["level-PGD", "frame"]
    assert "not present" in " ".join(t.get_text() for t in ax.texts)


def test_changed_pte_is_outlined_and_named():
    m = vw.Machine()
    p = m.spawn()
    a = p.mmap(0, 4096, RW, ANON)
    p.write(a, b"x")
    n = m.nr_steps
    ch = step_changes(m.timeline.state(n - 1), m.timeline.state(n))
    ax = draw_walk(m, p.pid, a, changes=ch)
    pte = [x for x in ax.patches if x.get_gid() == "level-PTE"][0]
    assert pte.get_linewidth() > 1
    assert "the last step changed this PTE: none -> pfn" in walk_text(m, p.pid, a, ch)


def test_swapped_page():
    m = vw.Machine(ram="16M", swap="1M")
    p = m.spawn()
    a = p.mmap(0, 8 * 4096, RW, ANON)
    for i in range(8):
        p.write(a + i * 4096, b"s")
    m.reclaim(64)
    out = [x for x in range(a, a + 8 * 4096, 4096) if p.pagemap(x).swapped]
    assert out
    w = walk(m, p.pid, out[0])
    assert w.swapped and w.pfn is None
    assert "swapped out" in walk_text(m, p.pid, out[0])


@pytest.mark.parametrize("addr, error", [(-1, ValueError), (1 << 47, ValueError), ("0x1000", TypeError)])
def test_bad_address(addr, error):
    m = vw.Machine()
    p = m.spawn()
    with pytest.raises(error, match="address"):
        walk(m, p.pid, addr)
