"""_PAGE_SAVED_DIRTY: no read-only PTE is ever dirty (Linux >= 6.6 on x86-64).

A PTE with Write=0,Dirty=1 is shadow-stack memory to a CPU with CET, so since the x86
shadow-stack work (6.6) the kernel keeps a write-protected PTE's dirty bit in the software
bit 58, _PAGE_SAVED_DIRTY (arch/x86/include/asm/pgtable.h: pte_wrprotect(),
pte_mksaveddirty(), pte_mkwrite() / pte_clear_saveddirty(), pte_modify(), pte_dirty(),
pte_mkclean(); arch/x86/include/asm/pgtable_types.h: _PAGE_BIT_SAVED_DIRTY, defined on
every x86-64 kernel whatever CONFIG_X86_USER_SHADOW_STACK says). The expected bit values
below are written out by hand from those sources.
"""

import random

import pytest

import vmwidgets as vw
from vmwidgets.core import pgtable, swap
from vmwidgets.core.flags import (_PAGE_DIRTY, _PAGE_NX, _PAGE_PRESENT,
                                  _PAGE_PROTNONE, _PAGE_RW, _PAGE_SAVED_DIRTY, _PAGE_USER,
                                  pte_flags_names)
from vmwidgets.core.tlb import pte_needs_flush
from vmwidgets.views.pagetable import walk_text
from tests.scenario import FIXED, R, RW, P, pg

SD = 1 << 58                       # _PAGE_BIT_SAVED_DIRTY == _PAGE_BIT_SOFTW5 == 58
D, W, A = 1 << 6, 1 << 1, 1 << 5
SHARED_FILE = vw.MAP_SHARED | vw.MAP_FIXED
SHARED_ANON = vw.MAP_SHARED | vw.MAP_ANONYMOUS | vw.MAP_FIXED


def machine(**kw):
    m = vw.Machine(**kw)
    return m, m.spawn()


def pte(proc, addr):
    return pgtable.get_pte(proc.mm, addr)


def bits(value):
    """The flag part of a PTE (PFN masked off)."""
    return value & ~vw.core.flags.PTE_PFN_MASK


def assert_saved_dirty(value):
    assert value & _PAGE_PRESENT
    assert not value & W, f"{value:#x} is writable"
    assert not value & D, f"{value:#x}: Write=0,Dirty=1 is a shadow-stack PTE"
    assert value & SD, f"{value:#x} lost its dirty bit"
    assert pgtable.pte_dirty(value)


def assert_writable_dirty(value):
    assert value & W and value & D, f"{value:#x}"
    assert not value & SD, f"{value:#x} still has _PAGE_SAVED_DIRTY"


# -- the helpers, bit by bit ----------------------------------------------------------------------

def test_the_bit_is_58_and_has_a_name():
    assert _PAGE_SAVED_DIRTY == SD and _PAGE_DIRTY == D and _PAGE_RW == W
    assert pte_flags_names(_PAGE_PRESENT | _PAGE_USER | SD | _PAGE_NX) == \
        ["P", "U", "SAVED_DIRTY", "NX"]


@pytest.mark.parametrize("before, after", [
    (W | D, SD),                   # dirty: D moves to SavedDirty
    (W, 0),                        # clean: nothing to save
    (W | D | A, SD | A),
    (D, SD),                       # even an already read-only Write=0,Dirty=1 value
    (SD, SD),
])
def test_pte_wrprotect(before, after):
    base = 0x1234000 | _PAGE_PRESENT | _PAGE_USER
    assert pgtable.pte_wrprotect(base | before) == base | after


@pytest.mark.parametrize("before, after", [
    (SD, W | D),                   # the saved dirty bit goes back to D
    (0, W),
    (D, W | D),
    (W | D, W | D),
])
def test_pte_mkwrite(before, after):
    base = 0x1234000 | _PAGE_PRESENT | _PAGE_USER
    assert pgtable.pte_mkwrite(base | before) == base | after


def test_pte_mkdirty_mkclean_and_pte_dirty():
    base = 0x1234000 | _PAGE_PRESENT | _PAGE_USER
    assert pgtable.pte_mkdirty(base) == base | SD              # read-only: saved
    assert pgtable.pte_mkdirty(base | W) == base | W | D
    assert pgtable.pte_mkclean(base | SD) == base
    assert pgtable.pte_mkclean(base | W | D) == base | W
    assert pgtable.pte_dirty(base | SD) and pgtable.pte_dirty(base | D)
    assert not pgtable.pte_dirty(base | W)


def test_pte_modify_follows_the_old_write_bit():
    # arch/x86/include/asm/pgtable.h: pte_modify() (6.18): a writable PTE goes through
    # pte_mksaveddirty(), a read-only one through pte_clear_saveddirty().
    pfn = 0x1234000
    ro = _PAGE_PRESENT | _PAGE_USER | A | _PAGE_NX            # PAGE_READONLY
    rw = ro | W                                                # PAGE_SHARED
    none = _PAGE_PROTNONE | A                                  # PAGE_NONE
    assert pgtable.pte_modify(pfn | rw | D, ro) == pfn | ro | SD
    assert pgtable.pte_modify(pfn | rw | D, none) == pfn | none | SD
    assert pgtable.pte_modify(pfn | ro | SD, rw) == pfn | rw | D
    assert pgtable.pte_modify(pfn | ro | SD, ro) == pfn | ro | SD
    assert pgtable.pte_modify(pfn | none | SD, ro) == pfn | ro | SD
    assert pgtable.pte_modify(pfn | rw, ro) == pfn | ro        # clean stays clean


def test_pte_needs_flush_ignores_the_software_bit():
    # arch/x86/include/asm/tlbflush.h: pte_flags_need_flush() (6.18): _PAGE_SAVED_DIRTY is
    # one of the software_flags; a cleared D or a changed RW needs a flush.
    base = 0x1234000 | _PAGE_PRESENT | _PAGE_USER | A
    assert pte_needs_flush(base | W | D, base | SD)            # RW and D cleared
    assert not pte_needs_flush(base | SD, base)                # only the software bit
    assert not pte_needs_flush(base, base | SD)


# -- fork and COW ----------------------------------------------------------------------------------

def test_fork_moves_the_dirty_bit_of_both_ptes_to_saved_dirty():
    m, p = machine()
    p.mmap(pg(0), P, RW, FIXED)
    p.write(pg(0), b"x")
    assert_writable_dirty(pte(p, pg(0)))
    c = p.fork()
    parent, child = pte(p, pg(0)), pte(c, pg(0))
    assert_saved_dirty(parent)
    assert_saved_dirty(child)
    assert bits(parent) == _PAGE_PRESENT | _PAGE_USER | A | SD | _PAGE_NX
    assert bits(child) == _PAGE_PRESENT | _PAGE_USER | SD | _PAGE_NX     # old in the child
    assert pgtable.pte_text(parent).endswith("ro dirty")
    line = [t for t in walk_text(m, p.pid, pg(0)).splitlines() if t.strip().startswith("PTE[")]
    assert "(P U A SAVED_DIRTY NX): " in line[0], line      # was (P U A D NX) before 6.6
    vw.validate(m)


def test_cow_copy_is_writable_and_dirty_and_the_last_mapper_reuses_with_d_restored():
    m, p = machine()
    p.mmap(pg(0), P, RW, FIXED)
    p.write(pg(0), b"x")
    c = p.fork()
    pfn = p.pagemap(pg(0)).pfn
    c.write(pg(0), b"c")                               # wp_page_copy() in the child
    copy = pte(c, pg(0))
    assert_writable_dirty(copy)
    assert pgtable.pte_pfn(copy) != pfn
    assert_saved_dirty(pte(p, pg(0)))                  # the parent still write-protected
    p.write(pg(0), b"p")                               # the only mapper: wp_page_reuse()
    reused = pte(p, pg(0))
    assert pgtable.pte_pfn(reused) == pfn
    assert_writable_dirty(reused)
    assert bits(reused) == _PAGE_PRESENT | W | _PAGE_USER | A | D | _PAGE_NX
    vw.validate(m)


def test_reuse_after_the_child_exits():
    m, p = machine()
    p.mmap(pg(0), P, RW, FIXED)
    p.write(pg(0), b"x")
    c = p.fork()
    c.exit()
    assert_saved_dirty(pte(p, pg(0)))
    pfn = p.pagemap(pg(0)).pfn
    p.write(pg(0), b"y")
    assert pgtable.pte_pfn(pte(p, pg(0))) == pfn
    assert_writable_dirty(pte(p, pg(0)))
    vw.validate(m)


def test_fork_leaves_a_shared_mappings_pte_writable_and_dirty():
    m, p = machine()
    p.mmap(pg(0), P, RW, SHARED_ANON)
    p.write(pg(0), b"x")
    c = p.fork()
    assert_writable_dirty(pte(p, pg(0)))               # not a COW mapping: no wrprotect
    assert not pte(c, pg(0)), "no anon_vma: vma_needs_copy() is false, the child faults"
    vw.validate(m)


# -- mprotect ----------------------------------------------------------------------------------

def test_mprotect_read_only_saves_the_dirty_bit_and_writable_restores_it_at_once():
    # mm/mprotect.c: change_pte_range() (6.18): an exclusive anonymous page of a private
    # writable VMA is made writable by mprotect itself (can_change_pte_writable()).
    m, p = machine()
    p.mmap(pg(0), P, RW, FIXED)
    p.write(pg(0), b"x")
    p.mprotect(pg(0), P, R)
    assert_saved_dirty(pte(p, pg(0)))
    p.mprotect(pg(0), P, RW)
    assert_writable_dirty(pte(p, pg(0)))
    vw.validate(m)


def test_prot_none_round_trip_keeps_the_page_dirty():
    m, p = machine()
    p.mmap(pg(0), P, RW, FIXED)
    p.write(pg(0), b"x")
    p.mprotect(pg(0), P, vw.PROT_NONE)
    v = pte(p, pg(0))
    assert pgtable.pte_present(v) and not v & _PAGE_PRESENT and v & SD and not v & D
    p.mprotect(pg(0), P, RW)
    assert_writable_dirty(pte(p, pg(0)))
    vw.validate(m)


def test_mprotect_writable_leaves_a_shared_cow_page_saved_dirty_until_the_write_fault():
    m, p = machine()
    p.mmap(pg(0), P, RW, FIXED)
    p.write(pg(0), b"x")
    c = p.fork()
    p.mprotect(pg(0), P, R)
    p.mprotect(pg(0), P, RW)
    assert_saved_dirty(pte(p, pg(0)))                  # not exclusive: COW still needed
    p.write(pg(0), b"p")
    assert_writable_dirty(pte(p, pg(0)))
    assert p.pagemap(pg(0)).pfn != c.pagemap(pg(0)).pfn
    vw.validate(m)


def test_mprotect_on_a_shared_file_mapping_uses_pte_dirty_for_the_write_upgrade():
    # mm/mprotect.c: can_change_shared_pte_writable() (6.18): with write notifications a
    # dirty PTE (D or the saved bit) becomes writable at once, a clean one stays read-only.
    m, p = machine()
    m.create_file("/f", bytes(2 * P))
    fd = p.open("/f", 2)
    p.mmap(pg(0), 2 * P, RW, SHARED_FILE, fd, 0)
    p.write(pg(0), b"dirty")
    p.read(pg(1), 1)
    assert_writable_dirty(pte(p, pg(0)))
    clean = pte(p, pg(1))
    assert not clean & W and not pgtable.pte_dirty(clean)
    p.mprotect(pg(0), 2 * P, R)
    assert_saved_dirty(pte(p, pg(0)))
    p.mprotect(pg(0), 2 * P, RW)
    assert_writable_dirty(pte(p, pg(0)))
    assert not pte(p, pg(1)) & W, "a clean page still needs its write fault (writenotify)"
    vw.validate(m)


def test_mprotect_on_shared_shmem_makes_the_saved_dirty_pte_writable_again():
    m, p = machine()
    p.mmap(pg(0), P, RW, SHARED_ANON)
    p.write(pg(0), b"x")
    p.mprotect(pg(0), P, R)
    assert_saved_dirty(pte(p, pg(0)))
    p.mprotect(pg(0), P, RW)                           # vm_page_prot is writable here
    assert_writable_dirty(pte(p, pg(0)))
    vw.validate(m)


# -- reclaim, munmap, MADV_FREE ---------------------------------------------------------------

def test_reclaim_of_a_saved_dirty_anonymous_page_counts_it_dirty(monkeypatch):
    m, p = machine(swap="1M")
    p.mmap(pg(0), P, RW, FIXED)
    p.write(pg(0), b"precious")
    c = p.fork()
    c.exit()                                           # mapped once again, still read-only
    assert_saved_dirty(pte(p, pg(0)))
    seen = []
    real = swap.pageout

    def spy(machine, page, slot=None):
        seen.append(page.dirty)
        return real(machine, page, slot)

    monkeypatch.setattr(swap, "pageout", spy)
    p.madvise(pg(0), P, vw.MADV_PAGEOUT)
    assert seen == [True], "try_to_unmap_one() tests pte_dirty(): the saved bit counts"
    assert p.pagemap(pg(0)).swapped
    assert p.read(pg(0), 8) == b"precious"
    vw.validate(m)


def test_munmap_of_a_saved_dirty_file_pte_marks_the_page_dirty():
    m, p = machine()
    m.create_file("/f", bytes(P))
    fd = p.open("/f", 2)
    p.mmap(pg(0), P, RW, SHARED_FILE, fd, 0)
    p.write(pg(0), b"x")
    p.mprotect(pg(0), P, R)
    page = m.phys.pages[p.pagemap(pg(0)).pfn]
    page.dirty = False                     # as if written back without cleaning the PTE
    p.munmap(pg(0), P)
    assert page.dirty, "zap_present_folio_ptes(): pte_dirty() sees the saved bit"
    vw.validate(m)


def test_madv_free_clears_the_saved_dirty_bit_too():
    m, p = machine()
    p.mmap(pg(0), P, RW, FIXED)
    p.write(pg(0), b"x")
    c = p.fork()
    c.exit()
    assert_saved_dirty(pte(p, pg(0)))
    p.madvise(pg(0), P, vw.MADV_FREE)
    v = pte(p, pg(0))
    assert v & _PAGE_PRESENT and not pgtable.pte_dirty(v) and not v & A   # clean and old
    vw.validate(m)


# -- no read-only PTE is ever dirty ---------------------------------------------------------

def check_no_shadow_stack_ptes(m):
    for proc in m.processes:
        for addr, _t, _i, v in pgtable.iter_ptes(proc.mm, 0, vw.core.flags.TASK_SIZE):
            if not pgtable.pte_present(v):
                continue
            assert not (v & D and not v & W), f"pid {proc.pid} {addr:#x}: {v:#x} is W=0,D=1"
            assert not (v & SD and v & W), f"pid {proc.pid} {addr:#x}: {v:#x} is W=1,SD=1"


@pytest.mark.parametrize("seed", range(12))
def test_random_runs_never_make_a_read_only_dirty_pte(seed):
    rng = random.Random(seed)
    m = vw.Machine(ram=96 * P, swap=64 * P)
    m.create_file("/f", bytes(8 * P))
    procs = [m.spawn()]
    pages = 16
    prots = [RW, RW, R, vw.PROT_NONE]
    for _ in range(150):
        procs = [q for q in procs if q.alive] or [m.spawn()]
        p = rng.choice(procs)
        first = rng.randrange(pages)
        n = rng.randint(1, 4)
        addr, length = pg(first), n * P
        op = rng.choice(["mmap", "mmap", "write", "write", "write", "read", "fork",
                         "mprotect", "mprotect", "munmap", "madvise", "exit"])
        try:
            if op == "mmap":
                kind = rng.choice(["anon", "anon", "shared", "file"])
                if kind == "file":
                    fd = p.open("/f", 2)
                    p.mmap(addr, length, rng.choice(prots), SHARED_FILE, fd, 0)
                else:
                    p.mmap(addr, length, rng.choice(prots),
                           FIXED if kind == "anon" else SHARED_ANON)
            elif op == "write":
                p.write(addr + rng.randrange(P), bytes([rng.randrange(1, 256)]))
            elif op == "read":
                p.read(addr + rng.randrange(P), 1)
            elif op == "fork" and len(procs) < 5:
                procs.append(p.fork())
            elif op == "mprotect":
                p.mprotect(addr, length, rng.choice(prots))
            elif op == "munmap":
                p.munmap(addr, length)
            elif op == "madvise":
                p.madvise(addr, length, rng.choice([vw.MADV_FREE, vw.MADV_PAGEOUT,
                                                    vw.MADV_DONTNEED, vw.MADV_COLD]))
            elif op == "exit" and len(procs) > 1:
                p.exit()
        except (OSError, vw.SegmentationFault, vw.BusError, vw.ProcessKilled):
            pass
        vw.validate(m)
        check_no_shadow_stack_ptes(m)
