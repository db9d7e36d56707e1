"""Merging and splitting, one kernel case at a time (mm/vma.c, 6.18).

Each test draws the arena above each step: one character per page, a letter per VMA,
``.`` for a hole, capitals for pages present in the page table (see tests/scenario.py).
The same sequences run against the live kernel in tests/live/test_scenarios_live.py.
"""

import errno

import pytest

import vmwidgets as vw
from tests.scenario import FIXED, R, RW, P, new_process, perms, pg, picture


def test_new_range_merges_with_prev():
    # aaaa....   mmap [0,4)
    # aaaaaa..   mmap [4,6): vma_merge_new_range grows prev (classic case 2)
    m, p = new_process()
    p.mmap(pg(0), 4 * P, RW, FIXED)
    a = p.mm.find_vma(pg(0))
    p.mmap(pg(4), 2 * P, RW, FIXED)
    assert picture(p, 8) == "aaaaaa.."
    assert p.mm.find_vma(pg(5)) is a, "prev is the VMA that survives"
    vw.validate(m)


def test_new_range_merges_with_next():
    # ....aaaa   then mmap [2,4): next grows down, its pgoff drops (classic case 3)
    m, p = new_process()
    p.mmap(pg(4), 4 * P, RW, FIXED)
    nxt = p.mm.find_vma(pg(4))
    p.mmap(pg(2), 2 * P, RW, FIXED)
    assert picture(p, 8) == "..aaaaaa"
    assert p.mm.find_vma(pg(2)) is nxt
    assert nxt.vm_pgoff == pg(2) >> 12


def test_new_range_fills_hole_merges_both():
    # aa..bb  ->  mmap [2,4)  ->  aaaaaa   prev swallows next (classic case 1)
    m, p = new_process()
    p.mmap(pg(0), 2 * P, RW, FIXED)
    p.mmap(pg(4), 2 * P, RW, FIXED)
    prev = p.mm.find_vma(pg(0))
    p.mmap(pg(2), 2 * P, RW, FIXED)
    assert picture(p, 6) == "aaaaaa"
    assert p.mm.find_vma(pg(5)) is prev
    assert p.mm.map_count == len(list(vw.for_each_vma(p.mm)))


def test_different_prot_does_not_merge():
    # aaaabb..   R next to RW: flags differ
    m, p = new_process()
    p.mmap(pg(0), 4 * P, R, FIXED)
    p.mmap(pg(4), 2 * P, RW, FIXED)
    assert picture(p, 8) == "aaaabb.."


def test_hidden_flag_noreserve_blocks_merge():
    # aaaabb..   same perms in maps, but VM_NORESERVE differs: two lines
    m, p = new_process()
    p.mmap(pg(0), 4 * P, RW, FIXED | vw.MAP_NORESERVE)
    p.mmap(pg(4), 2 * P, RW, FIXED)
    assert perms(p) == ["rw-p", "rw-p"]
    assert picture(p, 8) == "aaaabb.."


def test_mprotect_middle_splits_in_three():
    # aaaaaaaa -> mprotect [2,5) R -> aabbbccc ; the original object is the middle piece
    m, p = new_process()
    p.mmap(pg(0), 8 * P, RW, FIXED)
    original = p.mm.find_vma(pg(0))
    p.mprotect(pg(2), 3 * P, R)
    assert picture(p, 8) == "aabbbccc"
    assert perms(p) == ["rw-p", "r--p", "rw-p"]
    assert p.mm.find_vma(pg(3)) is original
    vw.validate(m)


def test_mprotect_back_merges_all_three():
    # aabbbccc -> mprotect [2,5) RW -> aaaaaaaa (merge both, classic case 6)
    m, p = new_process()
    p.mmap(pg(0), 8 * P, RW, FIXED)
    p.mprotect(pg(2), 3 * P, R)
    p.mprotect(pg(2), 3 * P, RW)
    assert picture(p, 8) == "aaaaaaaa"


def test_mprotect_head_merges_left_partial():
    # aaaabbbb (a R, b RW) -> mprotect [4,6) R -> aaaaaabb (classic case 5)
    m, p = new_process()
    p.mmap(pg(0), 4 * P, R, FIXED)
    p.mmap(pg(4), 4 * P, RW, FIXED)
    p.mprotect(pg(4), 2 * P, R)
    assert picture(p, 8) == "aaaaaabb"
    assert perms(p) == ["r--p", "rw-p"]


def test_mprotect_tail_merges_right_partial():
    # aaaabbbb (a RW, b R) -> mprotect [2,4) R -> aabbbbbb (classic case 4)
    m, p = new_process()
    p.mmap(pg(0), 4 * P, RW, FIXED)
    p.mmap(pg(4), 4 * P, R, FIXED)
    nxt = p.mm.find_vma(pg(4))
    p.mprotect(pg(2), 2 * P, R)
    assert picture(p, 8) == "aabbbbbb"
    assert p.mm.find_vma(pg(2)) is nxt and nxt.vm_pgoff == pg(2) >> 12


def test_faulted_and_unfaulted_merge_since_6_16():
    # aaaaabbbbb  mmap 10 RW, mprotect first 5 RWX (both keep VM_ACCOUNT)
    # aaaaaBbbbb  write page 5: b gets an anon_vma, a has none
    # aaaaaAaaaa  mprotect last 5 RWX: 6.16+ merges a faulted VMA with an unfaulted one
    m, p = new_process()
    rwx = RW | vw.PROT_EXEC
    p.mmap(pg(0), 10 * P, RW, FIXED)
    p.mprotect(pg(0), 5 * P, rwx)
    p.write(pg(5), b"x")
    assert picture(p, 10) == "aaaaaBbbbb"
    p.mprotect(pg(5), 5 * P, rwx)
    assert picture(p, 10) == "aaaaaAaaaa"
    assert p.mm.find_vma(pg(0)).anon_vma is not None, "the merged VMA took b's anon_vma"
    vw.validate(m)


def test_hidden_vm_account_keeps_faulted_ro_apart():
    # aaaaabbbbb  mmap 10 RW, mprotect first 5 R: a was never faulted, so it drops VM_ACCOUNT
    # aaaaaBbbbb  write page 5
    # aaaaaBbbbb  mprotect last 5 R: b is faulted and keeps VM_ACCOUNT: still two r--p lines
    # (The fact sheet claims one VMA here; the live 6.18 kernel shows two.)
    m, p = new_process()
    p.mmap(pg(0), 10 * P, RW, FIXED)
    p.mprotect(pg(0), 5 * P, R)
    p.write(pg(5), b"x")
    p.mprotect(pg(5), 5 * P, R)
    assert picture(p, 10) == "aaaaaBbbbb"
    assert perms(p, 10) == ["r--p", "r--p"]


def test_separately_faulted_vmas_never_merge():
    # aaaa.bbbb: write both -> two anon_vmas; fill the hole, mprotect all R and back: 2 VMAs
    m, p = new_process()
    p.mmap(pg(0), 4 * P, RW, FIXED)
    p.write(pg(0), b"a")
    p.mmap(pg(5), 4 * P, RW, FIXED)
    p.write(pg(5), b"b")
    p.mmap(pg(4), P, RW, FIXED)
    p.mprotect(pg(0), 9 * P, R)
    p.mprotect(pg(0), 9 * P, RW)
    assert picture(p, 9) == "AaaaaBbbb"
    assert len(p.mm.vmas_in(pg(0), pg(9))) == 2
    assert p.mm.find_vma(pg(0)).anon_vma is not p.mm.find_vma(pg(5)).anon_vma


def test_fault_reuses_neighbours_anon_vma():
    # aaaa + bbbb(RWX): write a, write b: b's fault reuses a's anon_vma (R/W/X ignored),
    # so after mprotect b to RW the two merge.
    m, p = new_process()
    p.mmap(pg(0), 4 * P, RW, FIXED)
    p.mmap(pg(4), 4 * P, RW | vw.PROT_EXEC, FIXED)
    p.write(pg(0), b"a")
    p.write(pg(4), b"b")
    assert p.mm.find_vma(pg(0)).anon_vma is p.mm.find_vma(pg(4)).anon_vma
    p.mprotect(pg(4), 4 * P, RW)
    assert picture(p, 8) == "AaaaAaaa"


def test_rw_to_ro_unfaulted_drops_vm_account_and_merges():
    # mmap RW, mprotect R (never faulted: VM_ACCOUNT dropped), mmap R after it: one VMA
    m, p = new_process()
    p.mmap(pg(0), 4 * P, RW, FIXED)
    p.mprotect(pg(0), 4 * P, R)
    assert not p.mm.find_vma(pg(0)).vm_flags & vw.VM_ACCOUNT
    p.mmap(pg(4), 4 * P, R, FIXED)
    assert picture(p, 8) == "aaaaaaaa"


def test_rw_to_ro_faulted_keeps_vm_account():
    # The same after a write fault: VM_ACCOUNT stays, so the fresh R mapping stays apart
    m, p = new_process()
    p.mmap(pg(0), 4 * P, RW, FIXED)
    p.write(pg(0), b"x")
    p.mprotect(pg(0), 4 * P, R)
    p.mmap(pg(4), 4 * P, R, FIXED)
    assert picture(p, 8) == "Aaaabbbb"


def test_munmap_middle_splits_and_frees():
    # AAAAAAAA -> munmap [2,5) -> AA...AAA
    m, p = new_process()
    p.mmap(pg(0), 8 * P, RW, FIXED | vw.MAP_POPULATE)
    free_before = m.phys.nr_free
    p.munmap(pg(2), 3 * P)
    assert picture(p, 8) == "AA...BBB"
    assert m.phys.nr_free == free_before + 3
    vw.validate(m)


def test_munmap_at_max_map_count_fails_only_for_a_hole():
    m, p = new_process()
    p.mmap(pg(0), 8 * P, RW, FIXED)
    m.sysctl["vm.max_map_count"] = p.mm.map_count
    with pytest.raises(OSError) as exc:
        p.munmap(pg(2), P)                       # would split one VMA in three
    assert exc.value.errno == errno.ENOMEM
    assert p.munmap(pg(0), P) == 0               # trimming the head needs no new VMA


def test_mprotect_over_hole_changes_first_part_then_enomem():
    # aaaa..bb -> mprotect [0,8) R -> AAAA changed, then ENOMEM at the hole; bb unchanged
    m, p = new_process()
    p.mmap(pg(0), 4 * P, RW, FIXED)
    p.mmap(pg(6), 2 * P, RW, FIXED)
    with pytest.raises(OSError) as exc:
        p.mprotect(pg(0), 8 * P, R)
    assert exc.value.errno == errno.ENOMEM
    assert perms(p, 8) == ["r--p", "rw-p"]


def test_madvise_dontneed_over_hole_zaps_then_enomem():
    m, p = new_process()
    p.mmap(pg(0), 4 * P, RW, FIXED | vw.MAP_POPULATE)
    p.write(pg(1), b"data")
    with pytest.raises(OSError) as exc:
        p.madvise(pg(0), 6 * P, vw.MADV_DONTNEED)
    assert exc.value.errno == errno.ENOMEM
    assert picture(p, 6) == "aaaa.."
    assert p.read(pg(1), 4) == bytes(4)


def test_mremap_unfaulted_moves_and_merges_at_destination():
    # aaaa....bbbb -> move a to [4,8) right before b: pgoff is reset, so it merges
    m, p = new_process()
    p.mmap(pg(0), 4 * P, RW, FIXED)
    p.mmap(pg(8), 4 * P, RW, FIXED)
    new = p.mremap(pg(0), 4 * P, 4 * P, vw.MREMAP_MAYMOVE | vw.MREMAP_FIXED, pg(4))
    assert new == pg(4)
    assert picture(p, 12) == "....aaaaaaaa"


def test_mremap_faulted_keeps_pgoff_and_data():
    m, p = new_process()
    p.mmap(pg(0), 4 * P, RW, FIXED)
    p.write(pg(1), b"moved")
    p.mmap(pg(8), 4 * P, RW, FIXED)
    p.mremap(pg(0), 4 * P, 4 * P, vw.MREMAP_MAYMOVE | vw.MREMAP_FIXED, pg(4))
    assert picture(p, 12) == "....aAaabbbb"
    assert p.read(pg(5), 5) == b"moved"
    assert len(p.mm.vmas_in(pg(4), pg(12))) == 2, "a faulted VMA keeps its old pgoff"
    vw.validate(m)


def test_mremap_grow_in_place_and_blocked():
    m, p = new_process()
    p.mmap(pg(0), 2 * P, RW, FIXED)
    assert p.mremap(pg(0), 2 * P, 4 * P) == pg(0)
    p.mmap(pg(5), P, R, FIXED)
    with pytest.raises(OSError) as exc:
        p.mremap(pg(0), 4 * P, 6 * P)
    assert exc.value.errno == errno.ENOMEM


def test_brk_grows_and_shrinks_heap():
    m, p = new_process()
    start = p.brk(0)
    assert p.brk(start + 3 * P) == start + 3 * P
    heap = [line for line in p.proc_maps().splitlines() if line.endswith("[heap]")]
    assert len(heap) == 1
    assert p.brk(p.mm.start_brk - P) == start + 3 * P, "below start_brk: refused, old break"
    assert p.brk(start) == start
