"""The physical-frames view against kpagecount, rmap_walk and the page tables."""

import vmwidgets as vw
from vmwidgets.core.page_alloc import ZERO_PFN
from vmwidgets.views import draw_frames, frame_rows, frames_text, step_changes, swap_rows

from .scenes import ANON, RW, family


def test_rows_agree_with_kpagecount_and_rmap_walk():
    m, p, c, a, f = family()
    rows = frame_rows(m)
    assert [r.pfn for r in rows] == sorted(r.pfn for r in rows)
    for r in rows:
        page = m.phys.pages[r.pfn]
        assert r.kpagecount == m.kpagecount(r.pfn)
        assert r.refcount == page.refcount
        if r.kind in ("anon", "file"):
            assert r.mapcount == m.kpagecount(r.pfn) == len(r.mappers)
            assert set(r.mappers) == {(proc.pid, addr) for proc, _v, addr in vw.rmap_walk(m, r.pfn)}
    kinds = {r.kind for r in rows}
    assert {"anon", "file", "zero", "pgtable"} <= kinds
    assert not {r.pfn for r in rows} & {pfn for pfn, pg in m.phys.pages.items() if pg.kind in ("free", "kernel")}


def test_every_present_pte_is_a_mapper_of_its_frame():
    m, p, c, a, f = family()
    by_pfn = {r.pfn: set(r.mappers) for r in frame_rows(m)}
    for proc in (p, c):
        for vma in proc.mm.mm_mt:
            for addr in range(vma.vm_start, vma.vm_end, 4096):
                e = proc.pagemap(addr)
                if e.present:
                    assert (proc.pid, addr) in by_pfn[e.pfn]
    zero = [r for r in frame_rows(m) if r.pfn == ZERO_PFN][0]
    assert zero.kind == "zero" and zero.kpagecount == 0
    assert (p.pid, a + 2 * 4096) in zero.mappers and (c.pid, a + 2 * 4096) in zero.mappers


def test_swap_cache_and_swap_count():
    m = vw.Machine(ram="16M", swap="1M")
    p = m.spawn()
    a = p.mmap(0, 4 * 4096, RW, ANON)
    for i in range(4):
        p.write(a + i * 4096, b"s")
    m.reclaim(64)
    p.read(a, 1)                               # swapped back in: in the swap cache again
    rows = {r.pfn: r for r in frame_rows(m)}
    back = rows[p.pagemap(a).pfn]
    page = m.phys.pages[back.pfn]
    assert back.kind == ("swapcache" if page.swap is not None else "anon")
    used = m.swap_pages - m.swap.nr_free
    assert used >= 3
    text = frames_text(m)
    assert f"swap: {used} of {m.swap_pages} slots used" in text
    slots = swap_rows(m)
    assert len(slots) == used
    swapped = {(p.pid, x) for x in range(a, a + 4 * 4096, 4096) if p.pagemap(x).swapped}
    assert swapped and swapped == {pa for r in slots for pa in r.mappers
                                   if pa[0] == p.pid and a <= pa[1] < a + 4 * 4096}
    for r in slots:
        assert r.count == len(r.mappers)
        assert r.text() in text
    if page.swap is not None:
        assert [r.cached_pfn for r in slots if r.slot == page.swap.offset] == [back.pfn]


def test_swap_slot_shared_by_parent_and_child():
    m = vw.Machine(ram="16M", swap="1M")
    p = m.spawn()
    a = p.mmap(0, 4096, RW, ANON)
    p.write(a, b"s")
    c = p.fork()
    m.reclaim(64)
    row = [r for r in swap_rows(m) if (p.pid, a) in r.mappers][0]
    assert set(row.mappers) >= {(p.pid, a), (c.pid, a)} and row.count >= 2


def test_draw_one_cell_per_frame_labelled():
    m, p, c, a, f = family()
    rows = frame_rows(m)
    ax = draw_frames(m)
    cells = sum(len(col.get_paths()) for col in ax.collections if col.get_gid() == "frames")
    assert cells == len(rows)
    labels = {t.get_gid(): t.get_text() for t in ax.texts if t.get_gid()}
    for r in rows:
        assert labels[f"frame:{r.pfn:#x}"] == f"{r.pfn:#x}\n{r.mapcount}/{r.refcount}"
    assert "anon" in ax.get_title()


def test_changes_mark_the_cow_copy():
    m, p, c, a, f = family()
    c.write(a + 4096, b"copy")
    n = m.nr_steps
    ch = step_changes(m.timeline.state(n - 1), m.timeline.state(n))
    new = c.pagemap(a + 4096).pfn
    text = frames_text(m, ch)
    assert [l for l in text.splitlines() if l.startswith(f"* pfn {new:#x} ")]
    assert "changed by the last step" in text
    ax = draw_frames(m, changes=ch)
    rows = frame_rows(m)
    widths = [w for col in ax.collections if col.get_gid() == "frames" for w in col.get_linewidths()]
    assert widths[[r.pfn for r in rows].index(new)] > 1


def test_text_one_line_per_frame():
    m, p, c, a, f = family()
    text = frames_text(m)
    rows = frame_rows(m)
    for r in rows:
        assert f"pfn {r.pfn:#x} {r.kind}" in text
    assert text.splitlines()[0].startswith(f"{len(rows)} frames in use")
