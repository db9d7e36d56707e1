"""anon_vma_prepare, anon_vma_chain and the anon_vma counters (core/rmap.py)."""

import vmwidgets as vw
from tests.scenario import FIXED, RW, P, new_process, pg


def chain_ids(vma):
    return [avc.anon_vma.id for avc in vma.anon_vma_chain]


def test_first_write_fault_creates_a_root_anon_vma():
    m, p = new_process()
    p.mmap(pg(0), 4 * P, RW, FIXED)
    vma = p.mm.find_vma(pg(0))
    assert vma.anon_vma is None
    p.read(pg(0), 1)
    assert vma.anon_vma is None, "a read fault maps the zero page: no anon_vma"
    p.write(pg(1), b"x")
    av = vma.anon_vma
    assert av is not None and av.root is av and av.parent is av
    assert (av.num_children, av.num_active_vmas) == (1, 1), "self-parent link, one VMA"
    assert [avc.vma for avc in av.rb_root] == [vma]
    page = m.phys.pages[p.pagemap(pg(1)).pfn]
    assert page.mapping is av and page.index == pg(1) >> 12
    assert list(vw.rmap_walk(m, page.pfn)) == [(p, vma, pg(1))]


def test_prepare_reuses_next_before_prev():
    # AAAAbCCCC   a and c faulted separately (two anon_vmas); b (RWX, so it merged with
    # neither at mmap time) is compatible with both: R/W/X are ignored by
    # anon_vma_compatible. Its first write takes the *next* VMA's anon_vma.
    m, p = new_process()
    p.mmap(pg(0), 4 * P, RW, FIXED)
    p.write(pg(0), b"a")
    p.mmap(pg(5), 4 * P, RW, FIXED)
    p.write(pg(5), b"c")
    p.mmap(pg(4), P, RW | vw.PROT_EXEC, FIXED)
    a, b, c = (p.mm.find_vma(pg(i)) for i in (0, 4, 5))
    assert len({a.id, b.id, c.id}) == 3 and a.anon_vma is not c.anon_vma
    p.write(pg(4), b"b")
    assert b.anon_vma is c.anon_vma
    assert c.anon_vma.num_active_vmas == 2


def test_split_gives_both_halves_the_anon_vma():
    m, p = new_process()
    p.mmap(pg(0), 8 * P, RW, FIXED)
    p.write(pg(0), b"x")
    p.mprotect(pg(4), 4 * P, vw.PROT_READ)
    lo, hi = p.mm.find_vma(pg(0)), p.mm.find_vma(pg(4))
    assert lo is not hi and lo.anon_vma is hi.anon_vma
    assert chain_ids(lo) == chain_ids(hi) == [lo.anon_vma.id]
    vw.validate(m)


def test_unlink_frees_anon_vma_with_its_last_vma():
    m, p = new_process()
    p.mmap(pg(0), 4 * P, RW, FIXED)
    p.write(pg(0), b"x")
    av = p.mm.find_vma(pg(0)).anon_vma
    p.mprotect(pg(2), 2 * P, vw.PROT_READ)
    assert av.num_active_vmas == 2 and len(av.rb_root) == 2
    p.munmap(pg(0), 2 * P)
    assert av.num_active_vmas == 1 and not av.freed
    p.munmap(pg(2), 2 * P)
    assert av.freed and av.id not in m.anon_vmas
    vw.validate(m)


def test_merge_removes_the_swallowed_vmas_chain():
    m, p = new_process()
    p.mmap(pg(0), 8 * P, RW, FIXED)
    p.write(pg(0), b"x")
    p.mprotect(pg(2), 3 * P, vw.PROT_READ)
    av = p.mm.find_vma(pg(0)).anon_vma
    assert len(av.rb_root) == 3
    p.mprotect(pg(2), 3 * P, RW)
    assert len(av.rb_root) == 1 and av.num_active_vmas == 1
    assert chain_ids(p.mm.find_vma(pg(7))) == [av.id]
    vw.validate(m)


def test_new_range_next_to_faulted_vma_merges_and_later_faults_share():
    m, p = new_process()
    p.mmap(pg(0), 4 * P, RW, FIXED)
    p.write(pg(0), b"x")
    p.mmap(pg(4), 4 * P, RW, FIXED)
    vma = p.mm.find_vma(pg(4))
    assert vma is p.mm.find_vma(pg(0))
    p.write(pg(5), b"y")
    pages = {p.pagemap(pg(i)).pfn for i in (0, 5)}
    assert {m.phys.pages[pfn].mapping for pfn in pages} == {vma.anon_vma}
