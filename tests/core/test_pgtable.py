"""Page tables, PTE bits, faults and freeing (core/pgtable.py, core/memory.py)."""

import pytest

import vmwidgets as vw
from vmwidgets.core import pgtable
from vmwidgets.core.flags import (_PAGE_ACCESSED, _PAGE_DIRTY, _PAGE_NX, _PAGE_PRESENT,
                                  _PAGE_PROTNONE, _PAGE_RW, _PAGE_SPECIAL, _PAGE_USER)
from vmwidgets.core.page_alloc import ZERO_PFN
from tests.scenario import FIXED, R, RW, P, new_process, pg


def test_walk_has_four_levels_with_the_address_split():
    m, p = new_process()
    addr = pg(3) + 0x123
    p.mmap(pg(0), 8 * P, RW, FIXED)
    p.write(addr, b"x")
    rows = pgtable.walk(p.mm, addr)
    assert [r[0] for r in rows] == ["PGD", "PUD", "PMD", "PTE"]
    assert [r[2] for r in rows] == [(addr >> 39) & 511, (addr >> 30) & 511,
                                    (addr >> 21) & 511, (addr >> 12) & 511]
    # Upper levels point to the next table's frame; the PTE to the data page.
    for (_, table, index, entry), (_, child, _, _) in zip(rows, rows[1:]):
        assert pgtable.pte_pfn(entry) == child.page.pfn
        assert entry & _PAGE_PRESENT and entry & _PAGE_USER
    pte = rows[-1][3]
    assert p.pagemap(addr).pfn == pgtable.pte_pfn(pte)


def test_pte_bits_of_a_written_private_page():
    m, p = new_process()
    p.mmap(pg(0), P, RW, FIXED)
    p.write(pg(0), b"x")
    pte = pgtable.get_pte(p.mm, pg(0))
    for bit in (_PAGE_PRESENT, _PAGE_RW, _PAGE_USER, _PAGE_ACCESSED, _PAGE_DIRTY, _PAGE_NX):
        assert pte & bit
    assert not pte & _PAGE_SPECIAL


def test_read_fault_maps_zero_page_read_only_special():
    m, p = new_process()
    p.mmap(pg(0), P, RW, FIXED)
    assert p.read(pg(0), 3) == b"\0\0\0"
    pte = pgtable.get_pte(p.mm, pg(0))
    assert pgtable.pte_pfn(pte) == ZERO_PFN
    assert pte & _PAGE_SPECIAL and not pte & _PAGE_RW, "private writable prot is never RW"
    assert m.kpagecount(ZERO_PFN) == 0
    assert m.kpageflags(ZERO_PFN) & (1 << vw.KPF_ZERO_PAGE)
    # The write then copies (zero-page COW) into a fresh exclusive page.
    p.write(pg(0), b"y")
    e = p.pagemap(pg(0))
    assert e.pfn != ZERO_PFN and e.exclusive
    vw.validate(m)


def test_exec_bit_clears_nx():
    m, p = new_process()
    p.mmap(pg(0), P, R | vw.PROT_EXEC, FIXED)
    p.read(pg(0), 1)
    assert not pgtable.get_pte(p.mm, pg(0)) & _PAGE_NX


def test_prot_none_pte_keeps_frame_but_not_present_bit():
    m, p = new_process()
    p.mmap(pg(0), P, RW, FIXED)
    p.write(pg(0), b"keep")
    pfn = p.pagemap(pg(0)).pfn
    p.mprotect(pg(0), P, vw.PROT_NONE)
    pte = pgtable.get_pte(p.mm, pg(0))
    assert not pte & _PAGE_PRESENT and pte & _PAGE_PROTNONE
    assert p.pagemap(pg(0)).present and p.pagemap(pg(0)).pfn == pfn
    with pytest.raises(vw.SegmentationFault) as exc:
        p.read(pg(0), 1)
    assert exc.value.si_code == vw.SEGV_ACCERR
    p.mprotect(pg(0), P, R)
    assert p.read(pg(0), 4) == b"keep"


def test_mprotect_back_to_rw_makes_exclusive_page_writable_at_once():
    m, p = new_process()
    p.mmap(pg(0), P, RW, FIXED)
    p.write(pg(0), b"x")
    p.mprotect(pg(0), P, R)
    assert not pgtable.get_pte(p.mm, pg(0)) & _PAGE_RW
    p.mprotect(pg(0), P, RW)
    assert pgtable.get_pte(p.mm, pg(0)) & _PAGE_RW, "MM_CP_TRY_CHANGE_WRITABLE"


def test_munmap_frees_page_tables_no_vma_needs():
    m, p = new_process()
    free0 = m.phys.nr_free
    # Two pages 1 GiB apart need separate PMD and PTE tables.
    a, b = pg(0), pg(0) + (1 << 30)
    p.mmap(a, P, RW, FIXED)
    p.mmap(b, P, RW, FIXED)
    p.write(a, b"a")
    p.write(b, b"b")
    used = free0 - m.phys.nr_free
    assert used == 2 + 2 + 2 + 1, "2 pages, 2 PTE tables, 2 PMD tables, 1 PUD table"
    p.munmap(b, P)
    assert free0 - m.phys.nr_free == 1 + 1 + 1 + 1, "page a, its PTE and PMD tables, the PUD"
    p.munmap(a, P)
    assert m.phys.nr_free == free0
    vw.validate(m)


def test_page_table_shared_with_a_neighbour_survives():
    m, p = new_process()
    p.mmap(pg(0), P, RW, FIXED)
    p.mmap(pg(2), P, RW, FIXED)
    p.write(pg(0), b"a")
    p.write(pg(2), b"b")
    table = pgtable.lookup_pte_table(p.mm, pg(2))
    p.munmap(pg(2), P)
    assert pgtable.lookup_pte_table(p.mm, pg(0)) is table
    assert table.page.kind == "pgtable"


def test_segv_leaves_state_untouched():
    m, p = new_process()
    p.mmap(pg(0), P, R, FIXED)
    before = (p.proc_maps(), m.phys.nr_free, p.pagemap(pg(0)))
    with pytest.raises(vw.SegmentationFault) as exc:
        p.write(pg(0), b"no")
    assert exc.value.si_code == vw.SEGV_ACCERR and exc.value.addr == pg(0)
    with pytest.raises(vw.SegmentationFault) as exc:
        p.read(pg(5), 1)
    assert exc.value.si_code == vw.SEGV_MAPERR
    assert (p.proc_maps(), m.phys.nr_free, p.pagemap(pg(0))) == before


def test_multi_page_write_is_refused_whole_when_a_page_faults():
    m, p = new_process()
    p.mmap(pg(0), P, RW, FIXED)
    p.mmap(pg(1), P, R, FIXED)
    with pytest.raises(vw.SegmentationFault):
        p.write(pg(1) - 2, b"abcd")
    assert not p.pagemap(pg(0)).present


def test_stack_grows_down_on_access_below_it():
    m, p = new_process()
    stack = [v for v in vw.for_each_vma(p.mm) if v.vm_flags & vw.VM_GROWSDOWN][0]
    start = stack.vm_start
    p.write(start - 3 * P, b"deep")
    assert stack.vm_start == start - 3 * P
    assert p.read(start - 3 * P, 4) == b"deep"
    vw.validate(m)


def test_out_of_memory_kills_the_largest_process_not_the_model():
    # 64 frames of RAM, no swap: the write faults until reclaim finds nothing to free, then
    # the OOM killer picks the process with the largest badness: here the writer itself.
    m = vw.Machine(ram="256K")
    small = m.spawn()
    p = m.spawn()
    a = p.mmap(0, 128 * P, RW, vw.MAP_PRIVATE | vw.MAP_ANONYMOUS | vw.MAP_NORESERVE)
    with pytest.raises(vw.ProcessKilled) as exc:
        p.write(a, bytes(128 * P))
    assert exc.value.pid == p.pid and "Out of memory" in exc.value.reason
    assert m.processes == [small] and not p.alive
    assert m.events[-1].call == "kill"
    with pytest.raises(ProcessLookupError):
        p.read(a, 1)
    vw.validate(m)
