"""Kernel call trees (vmwidgets/trace, issue 4): each step's tree against what Linux 6.18 calls.

Every expected tree below is written from the 6.18 sources named in the comment above it
(the kernel's call nesting, with the simplifications the model labels in its code: e.g. no
p4d/pud/pmd levels between unmap_page_range and zap_pte_range). ``structure_diff`` compares
the names and nesting exactly; the tests then check the arguments, results and state
changes that matter for the step.

The arena is the one of tests/scenario.py: page ``n`` is ``pg(n)`` at 0x100000000000.
"""

import os

import pytest

import vmwidgets as vw
from vmwidgets import trace
from vmwidgets.trace import Call, Note, compact, function_graph, structure_diff
from tests.scenario import FIXED, P, R, RW, pg

RWX = RW | vw.PROT_EXEC
SHARED = vw.MAP_SHARED


def machine(**kw):
    kw.setdefault("ram", "16M")
    kw.setdefault("swap", "8M")
    m = vw.Machine(**kw)
    return m, m.spawn()


def tree(m):
    """The call tree of the last step."""
    return m.last_step.trace


def same(expected, call, depth=None):
    diff = structure_diff(expected, call, depth)
    assert not diff, "\n" + diff


def changes(call):
    return call.all_changes()


def one(call, func):
    found = call.find_all(func)
    assert len(found) == 1, (func, [c.func for _, c in call.walk()])
    return found[0]


# -- mmap -------------------------------------------------------------------------------------

# arch/x86/kernel/sys_x86_64.c: sys_mmap -> ksys_mmap_pgoff (mm/mmap.c) -> vm_mmap_pgoff
# (mm/util.c) -> do_mmap (mm/mmap.c) -> __get_unmapped_area -> mm_get_unmapped_area_vmflags
# -> arch_get_unmapped_area_topdown_vmflags (arch/x86) -> vm_unmapped_area ->
# unmapped_area_topdown (mm/vma.c); then mmap_region -> __mmap_region (mm/vma.c):
# __mmap_setup (security_vm_enough_memory_mm -> __vm_enough_memory for a private writable
# mapping), vma_merge_new_range, __mmap_new_vma, __mmap_complete -> vms_complete_munmap_vmas.
MMAP_NEW = """
mmap
  ksys_mmap_pgoff
    vm_mmap_pgoff
      do_mmap
        __get_unmapped_area
          mm_get_unmapped_area_vmflags
            arch_get_unmapped_area_topdown_vmflags
              vm_unmapped_area
                unmapped_area_topdown
        mmap_region
          __mmap_region
            __mmap_setup
              __vm_enough_memory
            vma_merge_new_range
            __mmap_new_vma
            __mmap_complete
              vms_complete_munmap_vmas
"""


def test_mmap_new_vma():
    m, p = machine()
    a = p.mmap(0, 3 * P, RW, vw.MAP_PRIVATE | vw.MAP_ANONYMOUS)
    t = tree(m)
    same(MMAP_NEW, t)
    do_mmap = one(t, "do_mmap")
    assert do_mmap.args["len"] == "0x3000" and do_mmap.args["file"] == "NULL"
    assert do_mmap.result == hex(a)
    assert one(t, "unmapped_area_topdown").result == hex(a)
    assert one(t, "vma_merge_new_range").result == "NULL"
    assert one(t, "__mmap_new_vma").changes == [f"vma inserted: vma[{a:#x}-{a + 3 * P:#x} rw-p]"]
    assert t.result == hex(a)


# mm/vma.c: a MAP_FIXED range next to a compatible VMA: vma_merge_new_range -> vma_expand;
# x86 arch_get_unmapped_area_topdown_vmflags returns a MAP_FIXED address at once.
MMAP_MERGE = """
mmap
  ksys_mmap_pgoff
    vm_mmap_pgoff
      do_mmap
        __get_unmapped_area
          mm_get_unmapped_area_vmflags
            arch_get_unmapped_area_topdown_vmflags
        mmap_region
          __mmap_region
            __mmap_setup
              __vm_enough_memory
            vma_merge_new_range
              vma_expand
            __mmap_complete
              vms_complete_munmap_vmas
"""


def test_mmap_merges_with_the_previous_vma():
    m, p = machine()
    p.mmap(pg(0), 2 * P, RW, FIXED)
    p.mmap(pg(2), P, RW, FIXED)
    t = tree(m)
    same(MMAP_MERGE, t)
    merge = one(t, "vma_merge_new_range")
    assert merge.result == f"vma[{pg(0):#x}-{pg(3):#x} rw-p]"
    assert one(t, "vma_expand").changes == [
        f"vma[{pg(0):#x}-{pg(2):#x} rw-p] -> [{pg(0):#x}-{pg(3):#x}]"]
    assert not t.find("__mmap_new_vma")


# mm/vma.c: __mmap_setup() gathers the VMAs in the way (vms_gather_munmap_vmas, splitting at
# both edges) and clears their PTEs (vms_clean_up_area -> vms_clear_ptes -> unmap_vmas,
# free_pgtables); the new range then merges with both halves (vma_expand swallowing the
# next one: dup_anon_vma, unlink_anon_vmas via vma_complete), and __mmap_complete ->
# vms_complete_munmap_vmas frees the old VMA (remove_vma); its PTEs are already gone.
MMAP_FIXED_OVER = """
mmap
  ksys_mmap_pgoff
    vm_mmap_pgoff
      do_mmap
        __get_unmapped_area
          mm_get_unmapped_area_vmflags
            arch_get_unmapped_area_topdown_vmflags
        mmap_region
          __mmap_region
            __mmap_setup
              vms_gather_munmap_vmas
                __split_vma
                  anon_vma_clone
                __split_vma
                  anon_vma_clone
              vms_clean_up_area
                vms_clear_ptes
                  tlb_gather_mmu
                  unmap_vmas
                    unmap_single_vma
                      unmap_page_range
                        zap_pte_range
                          folio_remove_rmap_pte
                  free_pgtables
                    unlink_anon_vmas
                    free_pgd_range
                  tlb_finish_mmu
                    tlb_flush_mmu
                      flush_tlb_mm_range
                        flush_tlb_func
            vma_merge_new_range
              vma_expand
                dup_anon_vma
                unlink_anon_vmas
            __mmap_complete
              vms_complete_munmap_vmas
                vms_clear_ptes
                remove_vma
"""


def test_mmap_fixed_over_the_middle_of_a_vma():
    m, p = machine()
    p.mmap(pg(0), 3 * P, RW, FIXED)
    p.write(pg(1), b"x")
    pfn = p.pagemap(pg(1)).pfn
    p.mmap(pg(1), P, RW, FIXED)
    t = tree(m)
    same(MMAP_FIXED_OVER, t)
    assert one(t, "vms_gather_munmap_vmas").changes == [f"vma removed: vma[{pg(1):#x}-{pg(2):#x} rw-p]"]
    zap = one(t, "zap_pte_range")
    assert f"pte {pg(1):#x}: pfn {pfn:#x} rw dirty -> none" in zap.changes
    # the page goes back only after the TLB flush (mmu_gather: tlb_flush_mmu_free)
    assert f"page freed: pfn {pfn:#x} (anon)" in one(t, "tlb_flush_mmu").changes
    assert one(t, "vma_merge_new_range").result == f"vma[{pg(0):#x}-{pg(3):#x} rw-p]"
    assert not p.pagemap(pg(1)).present
    assert len(p.mm.vmas_in(pg(0), pg(3))) == 1


def test_mmap_populate_faults_the_pages_in():
    # mm/util.c: vm_mmap_pgoff() -> __mm_populate() after do_mmap() (mm/gup.c:
    # populate_vma_page_range -> __get_user_pages -> faultin_page -> handle_mm_fault).
    m, p = machine()
    p.mmap(pg(0), 2 * P, RW, FIXED | vw.MAP_POPULATE)
    t = tree(m)
    assert [c.func for c in one(t, "vm_mmap_pgoff").children] == ["do_mmap", "__mm_populate"]
    same("""
        __mm_populate
          populate_vma_page_range
            __get_user_pages
              faultin_page
                handle_mm_fault
              faultin_page
                handle_mm_fault
        """, one(t, "__mm_populate"), depth=4)
    flags = [c.args["flags"] for c in t.find_all("handle_mm_fault")]
    assert flags == ["WRITE", "WRITE"]          # GUP faults: not FAULT_FLAG_USER


# -- munmap -----------------------------------------------------------------------------------

# mm/mmap.c: __vm_munmap -> do_vmi_munmap -> do_vmi_align_munmap (mm/vma.c):
# vms_gather_munmap_vmas (__split_vma at both edges), vms_complete_munmap_vmas ->
# vms_clear_ptes -> unmap_vmas (mm/memory.c) -> unmap_single_vma -> unmap_page_range ->
# zap_pte_range, and free_pgtables -> unlink_anon_vmas, free_pgd_range; then remove_vma.
MUNMAP_SPLIT = """
munmap
  __vm_munmap
    do_vmi_munmap
      do_vmi_align_munmap
        vms_gather_munmap_vmas
          __split_vma
            anon_vma_clone
          __split_vma
            anon_vma_clone
        vms_complete_munmap_vmas
          vms_clear_ptes
            tlb_gather_mmu
            unmap_vmas
              unmap_single_vma
                unmap_page_range
                  zap_pte_range
                    folio_remove_rmap_pte
            free_pgtables
              unlink_anon_vmas
              free_pgd_range
            tlb_finish_mmu
              tlb_flush_mmu
                flush_tlb_mm_range
                  flush_tlb_func
          remove_vma
"""


def test_munmap_of_the_middle_splits_twice():
    m, p = machine()
    p.mmap(pg(0), 3 * P, RW, FIXED)
    p.write(pg(0), b"abc" * 3000)               # pages 0, 1 and 2 (9000 bytes)
    pfn = p.pagemap(pg(1)).pfn
    assert p.munmap(pg(1), P) == 0
    t = tree(m)
    same(MUNMAP_SPLIT, t)
    low, high = t.find_all("__split_vma")
    assert (low.args["addr"], low.args["new_below"]) == (hex(pg(1)), "True")
    assert (high.args["addr"], high.args["new_below"]) == (hex(pg(2)), "False")
    assert low.changes[0] == f"vma[{pg(0):#x}-{pg(3):#x} rw-p] -> [{pg(1):#x}-{pg(3):#x}] pgoff " \
                             f"{pg(0) >> 12:#x} -> {pg(1) >> 12:#x}"
    assert one(t, "vms_gather_munmap_vmas").changes == [f"vma removed: vma[{pg(1):#x}-{pg(2):#x} rw-p]"]
    assert one(t, "folio_remove_rmap_pte").changes == [f"pfn {pfn:#x}: mapcount 1 -> 0"]
    assert one(t, "zap_pte_range").changes == [f"pte {pg(1):#x}: pfn {pfn:#x} rw dirty -> none"]
    assert f"page freed: pfn {pfn:#x} (anon)" in one(t, "tlb_flush_mmu").changes
    assert t.result == "0"


def test_munmap_of_nothing_mapped_stops_in_do_vmi_munmap():
    # mm/vma.c: do_vmi_munmap(): vma_find() finds nothing: return 0.
    m, p = machine()
    p.munmap(pg(0), P)
    same("munmap\n  __vm_munmap\n    do_vmi_munmap", tree(m))


def test_munmap_einval_shows_in_the_tree():
    m, p = machine()
    with pytest.raises(OSError):
        p.munmap(pg(0) + 1, P)
    t = tree(m)
    assert one(t, "do_vmi_munmap").error == "-EINVAL" and t.error == "-EINVAL"


# -- mprotect ---------------------------------------------------------------------------------

# mm/mprotect.c: do_mprotect_pkey -> mprotect_fixup -> vma_modify_flags (mm/vma.c) ->
# vma_modify -> vma_merge_existing_range (no merge), split_vma -> __split_vma (->
# anon_vma_clone, called whether or not the VMA has an anon_vma) twice; then
# vm_flags_reset_once and change_protection (-> change_pte_range, the levels between not
# shown by the model).
MPROTECT_SPLIT = """
mprotect
  do_mprotect_pkey
    tlb_gather_mmu
    mprotect_fixup
      vma_modify_flags
        vma_modify
          vma_merge_existing_range
          split_vma
            __split_vma
              anon_vma_clone
          split_vma
            __split_vma
              anon_vma_clone
      change_protection
        change_pte_range
    tlb_finish_mmu
      tlb_flush_mmu
        flush_tlb_mm_range
          flush_tlb_func
"""


def test_mprotect_of_the_middle_splits_and_write_protects():
    m, p = machine()
    p.mmap(pg(0), 3 * P, RW, FIXED)
    p.write(pg(1), b"x")
    pfn = p.pagemap(pg(1)).pfn
    p.mprotect(pg(1), P, R)
    t = tree(m)
    same(MPROTECT_SPLIT, t)
    fixup = one(t, "mprotect_fixup")
    assert fixup.changes == [f"vma[{pg(1):#x}-{pg(2):#x} r--p]: vm_flags -VM_WRITE"]
    assert one(t, "vma_merge_existing_range").result == "NULL"
    assert one(t, "change_pte_range").changes == [f"pte {pg(1):#x}: pfn {pfn:#x} rw dirty -> "
                                                  f"pfn {pfn:#x} ro dirty"]
    assert one(t, "change_protection").result == "1"


# mm/vma.c: vma_merge_existing_range() merging the middle VMA with both neighbours: the
# range grows prev over middle and next (dup_anon_vma; vma_complete removes the others).
MPROTECT_MERGE = """
mprotect
  do_mprotect_pkey
    tlb_gather_mmu
    mprotect_fixup
      __vm_enough_memory
      vma_modify_flags
        vma_modify
          vma_merge_existing_range
            dup_anon_vma
      change_protection
    tlb_finish_mmu
      tlb_flush_mmu
"""


def test_mprotect_back_merges_with_both_neighbours():
    m, p = machine()
    p.mmap(pg(0), 3 * P, RW, FIXED)
    p.mprotect(pg(1), P, R)
    p.mprotect(pg(1), P, RW)
    t = tree(m)
    same(MPROTECT_MERGE, t)
    merge = one(t, "vma_merge_existing_range")
    assert merge.result == f"vma[{pg(0):#x}-{pg(3):#x} rw-p]"
    assert merge.changes == [f"vma removed: vma[{pg(1):#x}-{pg(2):#x} r--p]",
                             f"vma removed: vma[{pg(2):#x}-{pg(3):#x} rw-p]",
                             f"vma[{pg(0):#x}-{pg(1):#x} rw-p] -> [{pg(0):#x}-{pg(3):#x}]"]
    assert one(t, "mprotect_fixup").changes == []      # prev already had the flags


# -- mremap ---------------------------------------------------------------------------------------

# mm/mremap.c (6.16+): do_mremap -> check_prep_vma -> mremap_at -> expand_vma ->
# expand_vma_in_place (vrm_calc_charge) -> vma_merge_extend (mm/vma.c) ->
# vma_merge_new_range -> vma_expand.
MREMAP_EXPAND = """
mremap
  do_mremap
    check_prep_vma
    mremap_at
      expand_vma
        expand_vma_in_place
          __vm_enough_memory
          vma_merge_extend
            vma_merge_new_range
              vma_expand
"""


def test_mremap_expands_in_place():
    m, p = machine()
    p.mmap(pg(0), 2 * P, RW, FIXED)
    assert p.mremap(pg(0), 2 * P, 4 * P) == pg(0)
    t = tree(m)
    same(MREMAP_EXPAND, t)
    assert one(t, "vma_expand").changes == [f"vma[{pg(0):#x}-{pg(2):#x} rw-p] -> [{pg(0):#x}-{pg(4):#x}]"]
    assert t.result == hex(pg(0))


# mm/mremap.c: expand_vma -> vrm_set_new_addr (__get_unmapped_area ...) -> move_vma ->
# vrm_calc_charge, copy_vma_and_data -> copy_vma (mm/vma.c: vma_merge_new_range, else
# vm_area_dup + anon_vma_clone) and move_page_tables; then unmap_source_vma ->
# do_vmi_munmap of the old range.
MREMAP_MOVE = """
mremap
  do_mremap
    check_prep_vma
    mremap_at
      expand_vma
        vrm_set_new_addr
          __get_unmapped_area
            mm_get_unmapped_area_vmflags
              arch_get_unmapped_area_topdown_vmflags
                vm_unmapped_area
                  unmapped_area_topdown
        move_vma
          __vm_enough_memory
          copy_vma_and_data
            copy_vma
              vma_merge_new_range
              anon_vma_clone
            move_page_tables
              __pte_alloc
              flush_tlb_mm_range
                flush_tlb_func
          unmap_source_vma
            do_vmi_munmap
              do_vmi_align_munmap
                vms_gather_munmap_vmas
                vms_complete_munmap_vmas
                  vms_clear_ptes
                    tlb_gather_mmu
                    unmap_vmas
                      unmap_single_vma
                        unmap_page_range
                    free_pgtables
                      unlink_anon_vmas
                      free_pgd_range
                    tlb_finish_mmu
                      tlb_flush_mmu
                  remove_vma
"""


def test_mremap_moves_when_the_next_page_is_taken():
    m, p = machine()
    p.mmap(pg(0), 2 * P, RW, FIXED)
    p.write(pg(0), b"moved")
    pfn = p.pagemap(pg(0)).pfn
    p.mmap(pg(2), P, R, FIXED)
    new = p.mremap(pg(0), 2 * P, 4 * P, vw.MREMAP_MAYMOVE)
    t = tree(m)
    same(MREMAP_MOVE, t)
    assert one(t, "move_page_tables").changes == [f"pte {pg(0):#x}: pfn {pfn:#x} rw dirty -> none",
                                                  f"pte {new:#x}: none -> pfn {pfn:#x} rw dirty"]
    assert one(t, "move_page_tables").result == "1"
    assert one(t, "move_vma").result == hex(new) and p.read(new, 5) == b"moved"


# -- madvise, brk -----------------------------------------------------------------------------

# mm/madvise.c: do_madvise -> madvise_do_behavior -> madvise_walk_vmas ->
# madvise_vma_behavior -> madvise_dontneed_free -> madvise_dontneed_single_vma ->
# zap_page_range_single_batched (mm/memory.c) -> unmap_single_vma -> unmap_page_range ->
# zap_pte_range.
MADV_DONTNEED = """
madvise
  do_madvise
    madvise_do_behavior
      tlb_gather_mmu
      madvise_walk_vmas
        madvise_vma_behavior
          madvise_dontneed_free
            madvise_dontneed_single_vma
              zap_page_range_single_batched
                unmap_single_vma
                  unmap_page_range
                    zap_pte_range
                      folio_remove_rmap_pte
      tlb_finish_mmu
        tlb_flush_mmu
          flush_tlb_mm_range
            flush_tlb_func
"""


def test_madvise_dontneed_zaps_the_pages():
    m, p = machine()
    p.mmap(pg(0), 2 * P, RW, FIXED)
    p.write(pg(0), b"x")
    pfn = p.pagemap(pg(0)).pfn
    p.madvise(pg(0), 2 * P, vw.MADV_DONTNEED)
    t = tree(m)
    same(MADV_DONTNEED, t)
    assert f"page freed: pfn {pfn:#x} (anon)" in one(t, "tlb_flush_mmu").changes
    assert p.read(pg(0), 1) == b"\0"


# mm/mmap.c: SYSCALL_DEFINE1(brk) (__do_sys_brk) grows the heap with do_brk_flags
# (mm/vma.c: vma_merge_new_range -> vma_expand when the heap VMA ends at the old break)
# and shrinks it with do_vmi_align_munmap.
def test_brk_grows_by_merging_and_shrinks_by_unmapping():
    m, p = machine()
    old = p.brk(0)
    p.brk(old + 2 * P)
    t = tree(m)
    same("""
        brk
          __do_sys_brk
            do_brk_flags
              __vm_enough_memory
              vma_merge_new_range
                vma_expand
        """, t)
    assert one(t, "do_brk_flags").result == "0" and t.result == hex(old + 2 * P)
    p.brk(old)
    t = tree(m)
    same("""
        brk
          __do_sys_brk
            do_vmi_align_munmap
              vms_gather_munmap_vmas
                __split_vma
                  anon_vma_clone
              vms_complete_munmap_vmas
                vms_clear_ptes
                  tlb_gather_mmu
                  unmap_vmas
                    unmap_single_vma
                      unmap_page_range
                  free_pgtables
                    unlink_anon_vmas
                    free_pgd_range
                  tlb_finish_mmu
                    tlb_flush_mmu
                remove_vma
        """, t)


# -- faults ----------------------------------------------------------------------------------------

# arch/x86/mm/fault.c: exc_page_fault -> (handle_page_fault, always_inline) ->
# do_user_addr_fault -> lock_vma_under_rcu (mm/mmap_lock.c) -> handle_mm_fault
# (mm/memory.c) -> __handle_mm_fault -> handle_pte_fault -> do_pte_missing ->
# do_anonymous_page. The model allocates the PTE table in __handle_mm_fault (labelled).
READ_ZERO = """
read
  exc_page_fault
    do_user_addr_fault
      lock_vma_under_rcu
      handle_mm_fault
        __handle_mm_fault
          __pud_alloc
          __pmd_alloc
          __pte_alloc
          handle_pte_fault
            do_pte_missing
              do_anonymous_page
"""


def test_read_fault_maps_the_zero_page():
    m, p = machine()
    p.mmap(pg(0), P, RW, FIXED)
    assert p.read(pg(0), 1) == b"\0"
    t = tree(m)
    same(READ_ZERO, t)
    assert one(t, "handle_mm_fault").args["flags"] == "USER|VMA_LOCK"
    assert one(t, "do_anonymous_page").changes == [f"pte {pg(0):#x}: none -> zero page ro"]
    assert one(t, "do_anonymous_page").result == "0"
    assert not t.find("__vmf_anon_prepare")       # no anon_vma for a read


# mm/memory.c: do_anonymous_page -> vmf_anon_prepare (a static inline in mm/internal.h,
# not traced) -> __vmf_anon_prepare -> __anon_vma_prepare (mm/rmap.c:
# find_mergeable_anon_vma, anon_vma_alloc, anon_vma_chain_link) -> alloc_anon_folio ->
# folio_add_new_anon_rmap; set_ptes.
WRITE_ANON = """
do_anonymous_page
  __vmf_anon_prepare
    __anon_vma_prepare
      find_mergeable_anon_vma
      anon_vma_alloc
  alloc_anon_folio
  folio_add_new_anon_rmap
"""


def test_first_write_fault_prepares_an_anon_vma():
    m, p = machine()
    p.mmap(pg(0), P, RW, FIXED)
    p.write(pg(0), b"x")
    t = tree(m)
    same(WRITE_ANON, one(t, "do_anonymous_page"))
    assert one(t, "find_mergeable_anon_vma").result == "NULL"
    new = one(t, "anon_vma_alloc").result
    vma = f"vma[{pg(0):#x}-{pg(1):#x} rw-p]"
    assert one(t, "__anon_vma_prepare").changes == [f"{vma}.anon_vma = {new}",
                                                    f"avc links {vma} to {new}"]
    pfn = p.pagemap(pg(0)).pfn
    assert one(t, "alloc_anon_folio").result == f"pfn {pfn:#x}"
    assert one(t, "do_anonymous_page").changes == [f"pte {pg(0):#x}: none -> pfn {pfn:#x} rw dirty"]


def test_a_second_write_to_the_vma_needs_no_anon_vma_and_a_hit_no_fault():
    m, p = machine()
    p.mmap(pg(0), 2 * P, RW, FIXED)
    p.write(pg(0), b"x")
    p.write(pg(1), b"y")
    t = tree(m)
    # __vmf_anon_prepare() returns at once when the VMA has its anon_vma: no
    # __anon_vma_prepare below it (vmf_anon_prepare() is inline: not shown).
    same("do_anonymous_page\n  __vmf_anon_prepare\n  alloc_anon_folio\n  folio_add_new_anon_rmap",
         one(t, "do_anonymous_page"))
    p.write(pg(1), b"z")                          # present and writable: a TLB/PTE hit
    same("write", tree(m))
    assert tree(m).all_changes() == []


def test_write_to_a_neighbour_reuses_its_anon_vma():
    # mm/vma.c: find_mergeable_anon_vma() -> reusable_anon_vma(): the VMA before differs only
    # in VM_EXEC (anon_vma_compatible ignores R/W/X), so __anon_vma_prepare takes its
    # anon_vma instead of allocating one, and the two VMAs could merge later.
    m, p = machine()
    p.mmap(pg(0), P, RW, FIXED)
    p.write(pg(0), b"x")
    first = p.mm.vma_lookup(pg(0)).anon_vma
    p.mmap(pg(1), P, RWX, FIXED)
    p.write(pg(1), b"y")
    t = tree(m)
    same("""
        __vmf_anon_prepare
          __anon_vma_prepare
            find_mergeable_anon_vma
        """, one(t, "__vmf_anon_prepare"))
    assert one(t, "find_mergeable_anon_vma").result == f"anon_vma#{first.id}"
    assert p.mm.vma_lookup(pg(1)).anon_vma is first
    p.mprotect(pg(1), P, RW)                      # now they merge: same anon_vma
    assert one(tree(m), "vma_merge_existing_range").result == f"vma[{pg(0):#x}-{pg(2):#x} rw-p]"


# mm/memory.c: handle_pte_fault -> do_wp_page: a private anonymous page that is not
# exclusive and has another reference -> wp_can_reuse_anon_folio() false -> wp_page_copy
# (__vmf_anon_prepare, folio_prealloc, __wp_page_copy_user, folio_add_new_anon_rmap, set_pte,
# folio_remove_rmap_pte of the old page).
COW_COPY = """
handle_pte_fault
  do_wp_page
    wp_can_reuse_anon_folio
    wp_page_copy
      __vmf_anon_prepare
      folio_prealloc
      folio_add_new_anon_rmap
      flush_tlb_mm_range
        flush_tlb_func
      folio_remove_rmap_pte
"""


def test_write_after_fork_copies():
    m, p = machine()
    p.mmap(pg(0), P, RW, FIXED)
    p.write(pg(0), b"x")
    old = p.pagemap(pg(0)).pfn
    c = p.fork()
    c.write(pg(0), b"c")
    t = tree(m)
    same(COW_COPY, one(t, "handle_pte_fault"))
    new = c.pagemap(pg(0)).pfn
    assert one(t, "wp_can_reuse_anon_folio").result == "False"
    assert one(t, "wp_can_reuse_anon_folio").changes == [f"pfn {old:#x} refcount 2: shared, copy it"]
    copy = one(t, "wp_page_copy")
    assert copy.args["old"] == f"pfn {old:#x}" and copy.result == "0"
    # ptep_clear_flush() first (the old PTE out of every TLB), then the new PTE
    assert copy.changes == [f"pte {pg(0):#x}: pfn {old:#x} ro dirty old -> none",
                            f"pte {pg(0):#x}: none -> pfn {new:#x} rw dirty"]
    assert one(t, "folio_remove_rmap_pte").changes == [f"pfn {old:#x}: mapcount 2 -> 1"]


def test_write_after_the_child_exited_reuses_the_page():
    # mm/memory.c: do_wp_page -> wp_can_reuse_anon_folio() (only reference) -> wp_page_reuse.
    m, p = machine()
    p.mmap(pg(0), P, RW, FIXED)
    p.write(pg(0), b"x")
    pfn = p.pagemap(pg(0)).pfn
    p.fork().exit()
    p.write(pg(0), b"y")
    t = tree(m)
    same("handle_pte_fault\n  do_wp_page\n    wp_can_reuse_anon_folio\n    wp_page_reuse",
         one(t, "handle_pte_fault"))
    assert one(t, "wp_can_reuse_anon_folio").result == "True"
    assert one(t, "wp_page_reuse").changes == [f"pte {pg(0):#x}: pfn {pfn:#x} ro dirty -> "
                                               f"pfn {pfn:#x} rw dirty"]


def file_machine(pages=8):
    m, p = machine()
    m.create_file("/data", (bytes(range(1, 256)) * (pages * P // 255 + 1))[:pages * P])
    fd = p.open("/data", os.O_RDWR)
    return m, p, fd


# A cold page-cache miss (mm/memory.c: do_read_fault -> do_fault_around (nothing cached
# yet) -> __do_fault -> filemap_fault (mm/filemap.c: do_sync_mmap_readahead,
# __filemap_get_folio(FGP_CREAT)) drops the lock for the I/O and returns
# VM_FAULT_RETRY|VM_FAULT_MAJOR); arch/x86/mm/fault.c: do_user_addr_fault retries under the
# mmap lock (lock_mm_and_find_vma) with FAULT_FLAG_TRIED, and fault-around
# (filemap_map_pages -> set_pte_range) maps the page and its cached neighbours.
FILE_READ_COLD = """
do_user_addr_fault
  lock_vma_under_rcu
  handle_mm_fault
    __handle_mm_fault
      __pud_alloc
      __pmd_alloc
      __pte_alloc
      handle_pte_fault
        do_pte_missing
          do_fault
            do_read_fault
              do_fault_around
                filemap_map_pages
              __do_fault
                filemap_fault
                  do_sync_mmap_readahead
  lock_mm_and_find_vma
  handle_mm_fault
    __handle_mm_fault
      handle_pte_fault
        do_pte_missing
          do_fault
            do_read_fault
              do_fault_around
                filemap_map_pages
                  set_pte_range
                    folio_add_file_rmap_pte
                  set_pte_range
                    folio_add_file_rmap_pte
                  set_pte_range
                    folio_add_file_rmap_pte
                  set_pte_range
                    folio_add_file_rmap_pte
"""


def test_file_read_fault_on_a_cold_cache_retries():
    m, p, fd = file_machine(pages=4)
    p.mmap(pg(0), 4 * P, R, FIXED & ~vw.MAP_ANONYMOUS, fd)
    assert p.read(pg(1), 1) == bytes([(P % 255) + 1])
    t = tree(m)
    same(FILE_READ_COLD, one(t, "do_user_addr_fault"))
    first, second = t.find_all("handle_mm_fault")
    assert (first.args["flags"], first.result) == ("USER|VMA_LOCK", "MAJOR|RETRY")
    assert (second.args["flags"], second.result) == ("TRIED|USER", "NOPAGE")
    assert one(t, "filemap_fault").result == "MAJOR|RETRY"
    cached = [c for c in one(t, "filemap_fault").all_changes() if c.startswith("page cache")]
    assert len(cached) == 4 and cached[-1].startswith("page cache: /data index 0x1 ->")
    assert sum(c.startswith("pte ") for c in second.all_changes()) == 4


def test_file_read_fault_on_a_cached_page_is_fault_around_alone():
    # Another mapping of the same cached file: do_read_fault -> do_fault_around maps the
    # page (filemap_map_pages returns VM_FAULT_NOPAGE), no ->fault call.
    m, p, fd = file_machine(pages=2)
    flags = vw.MAP_PRIVATE | vw.MAP_FIXED
    p.mmap(pg(0), 2 * P, R, flags, fd)
    p.read(pg(0), 1)
    p.mmap(pg(4), 2 * P, R, flags, fd)
    p.read(pg(5), 1)
    t = tree(m)
    same("""
        do_read_fault
          do_fault_around
            filemap_map_pages
              set_pte_range
                folio_add_file_rmap_pte
              set_pte_range
                folio_add_file_rmap_pte
        """, one(t, "do_read_fault"))
    assert one(t, "do_read_fault").result == "NOPAGE"
    assert len(t.find_all("handle_mm_fault")) == 1


def test_shared_file_write_faults():
    m, p, fd = file_machine(pages=2)
    flags = SHARED | vw.MAP_FIXED
    p.mmap(pg(0), 2 * P, RW, flags, fd)
    p.read(pg(0), 1)                              # cached and mapped read-only (write-notify)
    p.write(pg(0), b"W")
    t = tree(m)
    # mm/memory.c: do_wp_page -> wp_page_shared -> wp_page_reuse, fault_dirty_shared_page.
    same("do_wp_page\n  wp_page_shared\n    wp_page_reuse\n    fault_dirty_shared_page",
         one(t, "do_wp_page"))
    pfn = p.pagemap(pg(0)).pfn
    assert one(t, "fault_dirty_shared_page").changes == [f"pfn {pfn:#x} dirty"]
    # A second shared mapping of the cached file: do_fault -> do_shared_fault -> __do_fault
    # -> filemap_fault (a hit: VM_FAULT_LOCKED), finish_fault -> set_pte_range,
    # fault_dirty_shared_page.
    p.mmap(pg(4), 2 * P, RW, flags, fd)
    p.write(pg(5), b"V")
    t = tree(m)
    same("""
        do_fault
          do_shared_fault
            __do_fault
              filemap_fault
            finish_fault
              set_pte_range
                folio_add_file_rmap_pte
            fault_dirty_shared_page
        """, one(t, "do_fault"))
    assert one(t, "filemap_fault").result == "LOCKED"
    assert m.read_file("/data")[P:P + 1] == b"V"


def test_private_file_write_is_do_cow_fault():
    # mm/memory.c: do_cow_fault: __vmf_anon_prepare, folio_prealloc (the copy's page, first),
    # __do_fault -> filemap_fault, copy, finish_fault -> set_pte_range ->
    # folio_add_new_anon_rmap.
    m, p, fd = file_machine(pages=1)
    p.mmap(pg(0), P, RW, vw.MAP_PRIVATE | vw.MAP_FIXED, fd)
    p.read(pg(0), 1)
    p.mmap(pg(2), P, RW, vw.MAP_PRIVATE | vw.MAP_FIXED, fd)
    p.write(pg(2), b"c")
    t = tree(m)
    same("""
        do_cow_fault
          __vmf_anon_prepare
            __anon_vma_prepare
              find_mergeable_anon_vma
              anon_vma_alloc
          folio_prealloc
          __do_fault
            filemap_fault
          finish_fault
            set_pte_range
              folio_add_new_anon_rmap
        """, one(t, "do_cow_fault"))
    assert m.read_file("/data")[:1] == b"\x01" and p.read(pg(2), 2) == b"c\x02"


# mm/memory.c: handle_pte_fault -> do_swap_page -> swap_cache_get_folio (mm/swap_state.c),
# a miss -> swapin_readahead; set_pte_at.
def test_swap_in_after_pageout():
    m, p = machine()
    p.mmap(pg(0), P, RW, FIXED)
    p.write(pg(0), b"swapped")
    p.madvise(pg(0), P, vw.MADV_PAGEOUT)
    t = tree(m)
    # mm/madvise.c: madvise_pageout -> madvise_cold_or_pageout_pte_range -> reclaim_pages
    # (mm/vmscan.c) -> reclaim_folio_list -> shrink_folio_list: folio_alloc_swap,
    # try_to_unmap (mm/rmap.c: rmap_walk -> rmap_walk_anon -> try_to_unmap_one), pageout,
    # __remove_mapping.
    same("""
        madvise_vma_behavior
          madvise_pageout
            madvise_cold_or_pageout_pte_range
              tlb_gather_mmu
              reclaim_pages
                reclaim_folio_list
                  shrink_folio_list
                    folio_alloc_swap
                    try_to_unmap
                      rmap_walk
                        rmap_walk_anon
                          try_to_unmap_one
                            flush_tlb_mm_range
                              flush_tlb_func
                            folio_remove_rmap_pte
                    pageout
                    __remove_mapping
              tlb_finish_mmu
                tlb_flush_mmu
        """, one(t, "madvise_vma_behavior"))
    # try_to_unmap_one(): ptep_clear_flush(), then the swap entry
    assert any(c.startswith(f"pte {pg(0):#x}: pfn") and c.endswith("-> none")
               for c in t.all_changes())
    assert f"pte {pg(0):#x}: none -> swap slot 0x1 excl" in t.all_changes()
    assert p.read(pg(0), 7) == b"swapped"
    t = tree(m)
    same("do_swap_page\n  swap_cache_get_folio\n  swapin_readahead", one(t, "do_swap_page"))
    assert one(t, "swap_cache_get_folio").result == "NULL"
    assert one(t, "do_swap_page").result == "MAJOR"
    pfn = p.pagemap(pg(0)).pfn
    assert f"pte {pg(0):#x}: swap slot 0x1 excl -> pfn {pfn:#x} rw" in one(t, "do_swap_page").changes


def test_stack_growth_goes_through_lock_mm_and_find_vma():
    # A fault below the stack VMA: lock_vma_under_rcu finds nothing; mm/mmap_lock.c:
    # lock_mm_and_find_vma -> expand_stack_locked (mm/mmap.c) -> expand_downwards.
    m, p = machine()
    stack = p.mm.find_vma(p.mm.start_stack)
    start, end = stack.vm_start, stack.vm_end
    below = start - 2 * P
    p.read(below, 1)
    t = tree(m)
    same("""
        do_user_addr_fault
          lock_vma_under_rcu
          lock_mm_and_find_vma
            expand_stack_locked
              expand_downwards
          handle_mm_fault
            __handle_mm_fault
              handle_pte_fault
        """, one(t, "do_user_addr_fault"), depth=3)
    assert one(t, "lock_vma_under_rcu").result == "NULL"
    assert one(t, "expand_downwards").changes[0].startswith(
        f"vma[{start:#x}-{end:#x} rw-p] -> [{below:#x}-{end:#x}]")
    assert stack.vm_start == below


def test_refused_accesses_end_in_bad_area():
    m, p = machine()
    p.mmap(pg(0), P, R, FIXED)
    with pytest.raises(vw.SegmentationFault):
        p.write(pg(0), b"x")
    t = tree(m)
    # arch/x86/mm/fault.c: access_error() -> bad_area_access_error.
    same("""
        write
          exc_page_fault
            do_user_addr_fault
              lock_vma_under_rcu
              bad_area_access_error
        """, t)
    assert one(t, "bad_area_access_error").error == "SIGSEGV"
    assert t.error == "SegmentationFault"
    with pytest.raises(vw.SegmentationFault):
        p.read(pg(8), 1)
    # No VMA: lock_vma_under_rcu and lock_mm_and_find_vma return NULL -> bad_area_nosemaphore.
    same("""
        read
          exc_page_fault
            do_user_addr_fault
              lock_vma_under_rcu
              lock_mm_and_find_vma
              bad_area_nosemaphore
        """, tree(m))
    assert one(tree(m), "lock_mm_and_find_vma").result == "NULL"


def test_access_past_the_end_of_a_file_is_sigbus():
    m, p, fd = file_machine(pages=1)
    p.mmap(pg(0), 4 * P, R, vw.MAP_PRIVATE | vw.MAP_FIXED, fd)
    with pytest.raises(vw.BusError):
        p.read(pg(3), 1)
    same("read\n  exc_page_fault\n    do_user_addr_fault\n      lock_vma_under_rcu\n      do_sigbus",
         tree(m))
    assert one(tree(m), "do_sigbus").error == "SIGBUS"


# -- fork, exit, reclaim ---------------------------------------------------------------------------

# kernel/fork.c: kernel_clone -> copy_process -> copy_mm -> dup_mm (mm_init -> mm_alloc_pgd
# -> pgd_alloc) -> dup_mmap (mm/mmap.c): for each VMA anon_vma_fork (mm/rmap.c:
# anon_vma_clone, anon_vma_alloc when the parent VMA has an anon_vma) and copy_page_range
# (mm/memory.c; -> copy_pte_range when vma_needs_copy).
def test_fork():
    m, p = machine()
    p.mmap(pg(0), P, RW, FIXED)
    p.write(pg(0), b"x")
    pfn = p.pagemap(pg(0)).pfn
    c = p.fork()
    t = tree(m)
    same("""
        fork
          kernel_clone
            copy_process
              copy_mm
                dup_mm
                  pgd_alloc
                  dup_mmap
        """, t, depth=5)
    dup = one(t, "dup_mmap")
    assert len(dup.find_all("anon_vma_fork")) == len(dup.find_all("copy_page_range")) == \
        p.mm.map_count
    ours = [k for k in dup.children if k.args.get("vma", "").startswith(f"vma[{pg(0):#x}")
            or k.args.get("dst_vma", "").startswith(f"vma[{pg(0):#x}")]
    same("""
        anon_vma_fork
          anon_vma_clone
          anon_vma_alloc
        copy_page_range
          copy_pte_range
            __pud_alloc
            __pmd_alloc
            __pte_alloc
        """, "\n".join(compact(k) for k in ours))
    assert one(t, "kernel_clone").result == str(c.pid)
    notes = ours[1].all_changes()
    assert f"pfn {pfn:#x}: mapcount 1 -> 2, refcount 2, no longer exclusive" in notes
    assert f"parent pte {pg(0):#x}: pfn {pfn:#x} rw dirty -> pfn {pfn:#x} ro dirty (COW)" in notes
    assert f"pte {pg(0):#x}: none -> pfn {pfn:#x} ro dirty old" in notes


# kernel/exit.c: do_exit -> exit_mm -> mmput (kernel/fork.c) -> __mmput -> exit_mmap
# (mm/mmap.c: unmap_vmas, free_pgtables, remove_vma for each VMA) and mmdrop -> __mmdrop
# -> mm_free_pgd -> pgd_free.
def test_exit():
    m, p = machine()
    c = p.fork()
    n = c.mm.map_count
    c.exit()
    t = tree(m)
    expected = ["exit", "  do_exit", "    exit_mm", "      enter_lazy_tlb", "      mmput",
                "        __mmput", "          exit_mmap", "            tlb_gather_mmu",
                "            unmap_vmas", "            free_pgtables", "            tlb_finish_mmu"]
    expected += ["            remove_vma"] * n + ["          __mmdrop", "            pgd_free"]
    same("\n".join(expected), t, depth=6)
    assert len(one(t, "unmap_vmas").children) == n      # unmap_single_vma for each VMA
    assert len(one(t, "free_pgtables").find_all("unlink_anon_vmas")) == n
    assert any(x.startswith("page freed:") and x.endswith("(pgtable)")
               for x in one(t, "pgd_free").changes)


# mm/vmscan.c (kswapd): balance_pgdat -> shrink_node -> shrink_folio_list (the model's LRU
# with a second chance: referenced pages -- folio_referenced -> rmap_walk -> rmap_walk_anon
# -> folio_referenced_one -- are kept for a second pass).
def test_reclaim():
    m, p = machine()
    p.mmap(pg(0), P, RW, FIXED)
    p.write(pg(0), b"x")                          # the stack page and this one are on the LRU
    assert m.reclaim(1) == 1
    t = tree(m)
    same("""
        reclaim
          balance_pgdat
            shrink_node
              shrink_folio_list
                folio_referenced
                  rmap_walk
                    rmap_walk_anon
                      folio_referenced_one
                folio_referenced
                  rmap_walk
                    rmap_walk_anon
                      folio_referenced_one
              shrink_folio_list
                folio_alloc_swap
                try_to_unmap
                  rmap_walk
                    rmap_walk_anon
                      try_to_unmap_one
                        flush_tlb_mm_range
                          flush_tlb_func
                        folio_remove_rmap_pte
                pageout
                __remove_mapping
        """, t)
    assert [c.result for c in t.find_all("folio_referenced")] == ["1", "1"]
    assert one(t, "shrink_node").result == "1"


def test_direct_reclaim_from_a_fault():
    # mm/page_alloc.c: an allocation with no free frame: __alloc_pages_slowpath ->
    # __alloc_pages_direct_reclaim -> try_to_free_pages (mm/vmscan.c) -> shrink_node.
    m, p = machine(ram=f"{48 * 4}K", swap="1M")
    npages = m.phys.nr_free + 4
    p.mmap(pg(0), npages * P, RW, FIXED)
    p.write(pg(0), b"x" * (npages * P))
    slow = tree(m).find_all("__alloc_pages_slowpath")
    assert slow
    same("__alloc_pages_slowpath\n  try_to_free_pages\n    shrink_node", slow[0], depth=2)
    assert slow[0].result.startswith("pfn ")
    assert one(tree(m), "try_to_free_pages").result != "0"
    vw.validate(m)


def test_the_oom_killer_kills_the_faulting_process():
    # mm/page_alloc.c: __alloc_pages_slowpath: direct reclaim frees nothing (no swap, no file
    # pages) -> __alloc_pages_may_oom -> out_of_memory (mm/oom_kill.c) -> oom_kill_process ->
    # __oom_kill_process; the victim's exit (kernel/exit.c: do_exit ...) runs at once in the
    # model. Here the victim is the faulting process: its fault ends in SIGKILL.
    m = vw.Machine(ram=f"{48 * 4}K")
    m.spawn()
    q = m.spawn()
    n = m.phys.nr_free + 8
    q.mmap(pg(0), n * P, RW, FIXED)
    with pytest.raises(vw.ProcessKilled):
        q.write(pg(0), b"x" * (n * P))
    t = tree(m)
    slow = t.find_all("__alloc_pages_slowpath")[-1]
    same("""
        __alloc_pages_slowpath
          try_to_free_pages
            shrink_node
          out_of_memory
            oom_kill_process
        """, slow, depth=2)
    same("__oom_kill_process\n  do_exit\n    exit_mm", one(slow, "__oom_kill_process"), depth=2)
    assert one(slow, "out_of_memory").result == f"pid {q.pid}"
    assert slow.error == "SIGKILL" and t.error == "ProcessKilled"
    assert one(slow, "try_to_free_pages").result == "0"
    assert not q.alive
    vw.validate(m)


# -- the recorder and the rendering ---------------------------------------------------------

GOLDEN = """\
 0)               |  write(pid=1, addr=0x100000000000, data=<2 bytes>) {
 0)               |    exc_page_fault(mm=mm(pid 1), address=0x100000000000, write=True) {
 0)               |      do_user_addr_fault(mm=mm(pid 1), address=0x100000000000, write=True) {
 0)               |        lock_vma_under_rcu(address=0x100000000000); /* = vma[0x100000000000-0x100000001000 rw-p] */
 0)               |        handle_mm_fault(vma=vma[0x100000000000-0x100000001000 rw-p], address=0x100000000000, flags=WRITE|USER|VMA_LOCK) {
 0)               |          __handle_mm_fault(vma=vma[0x100000000000-0x100000001000 rw-p], address=0x100000000000, flags=WRITE|USER|VMA_LOCK) {
 0)               |            __pud_alloc(mm=mm(pid 1), address=0x100000000000) {
 0)               |              /* page allocated: pfn 0x15 (pgtable) */
 0)               |              /* pfn 0x15 is the PUD table for 0x100000000000-0x108000000000 */
 0)               |            } /* __pud_alloc = PUD table pfn 0x15 */
 0)               |            __pmd_alloc(mm=mm(pid 1), address=0x100000000000) {
 0)               |              /* page allocated: pfn 0x16 (pgtable) */
 0)               |              /* pfn 0x16 is the PMD table for 0x100000000000-0x100040000000 */
 0)               |            } /* __pmd_alloc = PMD table pfn 0x16 */
 0)               |            __pte_alloc(mm=mm(pid 1), address=0x100000000000) {
 0)               |              /* page allocated: pfn 0x17 (pgtable) */
 0)               |              /* pfn 0x17 is the PTE table for 0x100000000000-0x100000200000 */
 0)               |            } /* __pte_alloc = PTE table pfn 0x17 */
 0)               |            handle_pte_fault(vma=vma[0x100000000000-0x100000001000 rw-p], address=0x100000000000, flags=WRITE|USER|VMA_LOCK) {
 0)               |              do_pte_missing(vma=vma[0x100000000000-0x100000001000 rw-p], address=0x100000000000, flags=WRITE|USER|VMA_LOCK) {
 0)               |                do_anonymous_page(vma=vma[0x100000000000-0x100000001000 rw-p], address=0x100000000000, flags=WRITE|USER|VMA_LOCK) {
 0)               |                  __vmf_anon_prepare(vma=vma[0x100000000000-0x100000001000 rw-p]) {
 0)               |                    __anon_vma_prepare(vma=vma[0x100000000000-0x100000001000 rw-p]) {
 0)               |                      find_mergeable_anon_vma(vma=vma[0x100000000000-0x100000001000 rw-p]); /* = NULL */
 0)               |                      anon_vma_alloc() {
 0)               |                        /* anon_vma#2 allocated */
 0)               |                      } /* anon_vma_alloc = anon_vma#2 */
 0)               |                      /* vma[0x100000000000-0x100000001000 rw-p].anon_vma = anon_vma#2 */
 0)               |                      /* avc links vma[0x100000000000-0x100000001000 rw-p] to anon_vma#2 */
 0)               |                    } /* __anon_vma_prepare = 0 */
 0)               |                  } /* __vmf_anon_prepare = 0 */
 0)               |                  alloc_anon_folio(vma=vma[0x100000000000-0x100000001000 rw-p], address=0x100000000000) {
 0)               |                    /* page allocated: pfn 0x18 (anon) */
 0)               |                  } /* alloc_anon_folio = pfn 0x18 */
 0)               |                  folio_add_new_anon_rmap(page=pfn 0x18, vma=vma[0x100000000000-0x100000001000 rw-p], address=0x100000000000) {
 0)               |                    /* pfn 0x18: anon, exclusive, mapcount 1, filed under anon_vma#2 at index 0x100000000 */
 0)               |                  }
 0)               |                  /* pte 0x100000000000: none -> pfn 0x18 rw dirty */
 0)               |                } /* do_anonymous_page = 0 */
 0)               |              } /* do_pte_missing = 0 */
 0)               |            } /* handle_pte_fault = 0 */
 0)               |          } /* __handle_mm_fault = 0 */
 0)               |        } /* handle_mm_fault = 0 */
 0)               |      }
 0)               |    }
 0)               |  }"""


def test_golden_function_graph_of_a_first_write():
    m = vw.Machine(ram="16M")
    p = m.spawn()
    p.mmap(pg(0), P, RW, FIXED)
    p.write(pg(0), b"hi")
    assert m.last_step.function_graph() == GOLDEN


def test_function_graph_options_and_compact_form():
    m, p = machine()
    p.mmap(pg(0), P, RW, FIXED)
    p.read(pg(0), 1)
    t = tree(m)
    text = function_graph(t, cpu=3, header=True, args=False)
    lines = text.splitlines()
    assert lines[0] == "# tracer: function_graph" and lines[2].startswith("# CPU  DURATION")
    assert lines[4] == " 3)               |  read() {"
    assert " 3)               |        lock_vma_under_rcu(); /* = vma[" in text
    assert lines[-1] == " 3)               |  } /* read = <1 bytes> */"
    assert compact(t, depth=2) == "read\n  exc_page_fault\n    do_user_addr_fault"
    assert t.compact().splitlines()[-1] == "              do_anonymous_page"


def test_notes_and_calls_are_capped_per_call():
    m, p = machine()
    n = trace.MAX_NOTES + 8
    p.mmap(pg(0), n * P, RW, FIXED)
    p.write(pg(0), b"x" * (n * P))
    p.munmap(pg(0), n * P)
    zap = one(tree(m), "zap_pte_range")
    assert zap.nnotes == trace.MAX_NOTES and zap.dropped == n - trace.MAX_NOTES
    assert len(zap.children) == n                 # folio_remove_rmap_pte per page
    assert "/* ... and " in function_graph(zap)
    assert "more change(s) */" in function_graph(zap)


def test_structure_diff_reports_the_difference():
    t = Call("do_wp_page")
    t.body = [Call("wp_page_copy"), Note("pte ...")]
    assert structure_diff("do_wp_page\n  wp_page_copy", t) == ""
    diff = structure_diff("do_wp_page\n  wp_page_reuse", t)
    assert "-  wp_page_reuse" in diff and "+  wp_page_copy" in diff


# -- determinism -------------------------------------------------------------------------------------

def program(m, p):
    p.mmap(pg(0), 4 * P, RW, FIXED)
    p.write(pg(0), b"a" * (2 * P))
    c = p.fork()
    c.write(pg(1), b"b")
    p.mprotect(pg(1), P, R)
    p.madvise(pg(0), P, vw.MADV_PAGEOUT)
    p.read(pg(0), 1)
    p.mremap(pg(2), 2 * P, 4 * P, vw.MREMAP_MAYMOVE)
    c.exit()
    m.reclaim(2)
    p.munmap(pg(0), 8 * P)


def test_the_same_steps_give_the_same_trees():
    runs = []
    for _ in range(2):
        m, p = machine()
        program(m, p)
        runs.append([m.timeline.record(i) for i in range(m.nr_steps)])
    for a, b in zip(*runs):
        assert a.trace == b.trace
        assert a.function_graph() == b.function_graph()


def test_a_dropped_record_is_rebuilt_with_the_same_tree():
    m = vw.Machine(ram="16M", swap="8M")
    m.timeline.keep_records = 5
    p = m.spawn()
    kept = []
    real = m.timeline.append

    def append(record, *rest):
        kept.append(record)
        return real(record, *rest)

    m.timeline.append = append
    program(m, p)
    assert m.nr_steps > 10 and 0 not in m.timeline.records
    for original in kept[:-5]:
        rebuilt = m.timeline.record(original.index)
        assert rebuilt is not original
        assert rebuilt.trace == original.trace, original
        assert rebuilt.function_graph() == original.function_graph()
