"""Reclaim, swap, file pages and the OOM killer (core/swap.py, core/filemap.py)."""

import pytest

import vmwidgets as vw
from vmwidgets.core import swap
from tests.scenario import FIXED, R, RW, P, pg

SHARED_FILE = vw.MAP_SHARED | vw.MAP_FIXED
PRIVATE_FILE = vw.MAP_PRIVATE | vw.MAP_FIXED


def machine(**kw):
    m = vw.Machine(**kw)
    return m, m.spawn()


def test_reclaim_takes_the_coldest_page_first_and_gives_referenced_ones_a_second_chance():
    # A one-entry TLB: touching page 0 again misses it, so the page walk sets the accessed
    # bit again (x86 sets it only on a walk; a cached translation would leave it clear).
    m, p = machine(swap="1M", tlb_entries=1)
    p.mmap(pg(0), 3 * P, RW, FIXED)
    for i in range(3):
        p.write(pg(i), bytes([i + 1]))
    # Clear every accessed bit (as an earlier scan would), then touch page 0 again.
    for i in range(3):
        swap.page_referenced(m, m.phys.pages[p.pagemap(pg(i)).pfn])
    p.read(pg(0), 1)
    freed = m.reclaim(1)
    assert freed == 1
    swapped = [i for i in range(3) if p.pagemap(pg(i)).swapped]
    assert swapped == [1], "page 0 was referenced (second chance); page 1 is the coldest"
    assert m.stats["pswpout"] == 1
    vw.validate(m)


def test_swapped_page_comes_back_with_its_data_and_exclusive():
    m, p = machine(swap="1M")
    p.mmap(pg(0), P, RW, FIXED)
    p.write(pg(0), b"precious")
    p.madvise(pg(0), P, vw.MADV_PAGEOUT)
    e = p.pagemap(pg(0))
    assert e.swapped and not e.present and int(e) & vw.PM_SWAP
    assert p.read(pg(0), 8) == b"precious"
    e = p.pagemap(pg(0))
    assert e.present and e.exclusive
    page = m.phys.pages[e.pfn]
    assert page.swap is not None, "a read fault leaves the page in the swap cache"
    assert m.kpageflags(e.pfn) & (1 << vw.KPF_SWAPCACHE)
    faults = len(m.events)
    p.write(pg(0), b"P")   # exclusive: mapped writable at swap-in, so no fault, no copy
    assert p.pagemap(pg(0)).pfn == e.pfn and page.swap is not None
    assert m.events[faults].outcome == ["1 byte(s)"]
    vw.validate(m)


def test_shared_swap_entry_after_fork_is_not_exclusive():
    m, p = machine(swap="1M")
    p.mmap(pg(0), P, RW, FIXED)
    p.write(pg(0), b"x")
    p.madvise(pg(0), P, vw.MADV_PAGEOUT)
    c = p.fork()
    assert c.pagemap(pg(0)).swapped and p.pagemap(pg(0)).swapped
    assert c.read(pg(0), 1) == b"x" and p.read(pg(0), 1) == b"x"
    assert p.pagemap(pg(0)).pfn == c.pagemap(pg(0)).pfn, "both find it in the swap cache"
    c.write(pg(0), b"c")
    assert p.read(pg(0), 1) == b"x"
    vw.validate(m)


def test_without_swap_anonymous_pages_stay():
    m, p = machine()
    p.mmap(pg(0), 4 * P, RW, FIXED | vw.MAP_POPULATE)
    assert m.reclaim(4) == 0
    assert all(p.pagemap(pg(i)).present for i in range(4))


def test_clean_file_pages_are_dropped_and_read_again():
    m, p = machine()
    m.create_file("/data", b"A" * P + b"B" * P)
    fd = p.open("/data")
    p.mmap(pg(0), 2 * P, R, PRIVATE_FILE, fd, 0)
    assert p.read(pg(1), 1) == b"B"
    cached = len(m.files["/data"].mapping.i_pages)
    assert m.reclaim(10) == cached + 0 and not p.pagemap(pg(1)).present
    assert not m.files["/data"].mapping.i_pages
    assert p.read(pg(1), 2) == b"BB"
    vw.validate(m)


def test_dirty_shared_file_page_is_written_back_before_it_is_dropped():
    m, p = machine()
    m.create_file("/log", bytes(2 * P))
    fd = p.open("/log", 2)
    p.mmap(pg(0), 2 * P, RW, SHARED_FILE, fd, 0)
    p.write(pg(0) + 10, b"hello")
    assert m.read_file("/log")[10:15] == b"hello", "visible through the page cache at once"
    assert bytes(m.files["/log"].data[10:15]) == bytes(5), "not yet on disk"
    m.reclaim(10)
    assert bytes(m.files["/log"].data[10:15]) == b"hello", "written back by reclaim"
    assert p.read(pg(0) + 10, 5) == b"hello"
    vw.validate(m)


def test_shared_file_mapping_visible_to_every_mapper():
    m, p = machine()
    m.create_file("/shm", bytes(P))
    q = m.spawn()
    a, b = p.open("/shm", 2), q.open("/shm", 2)
    p.mmap(pg(0), P, RW, SHARED_FILE, a, 0)
    q.mmap(pg(4), P, RW, SHARED_FILE, b, 0)
    p.write(pg(0), b"ping")
    assert q.read(pg(4), 4) == b"ping"
    pfn = p.pagemap(pg(0)).pfn
    assert q.pagemap(pg(4)).pfn == pfn and m.kpagecount(pfn) == 2
    assert sorted(proc.pid for proc, _, _ in vw.rmap_walk(m, pfn)) == [p.pid, q.pid]
    vw.validate(m)


def test_private_file_write_is_private():
    m, p = machine()
    m.create_file("/cfg", b"old")
    fd = p.open("/cfg")
    p.mmap(pg(0), P, RW, PRIVATE_FILE, fd, 0)
    assert p.read(pg(0), 3) == b"old"
    p.write(pg(0), b"new")
    assert p.read(pg(0), 3) == b"new" and m.read_file("/cfg") == b"old"
    e = p.pagemap(pg(0))
    assert not e.file_shared and e.exclusive, "the COW copy is an anonymous page"


def test_file_errors():
    m, p = machine()
    m.create_file("/ro", b"x")
    fd = p.open("/ro")
    with pytest.raises(OSError) as exc:
        p.mmap(pg(0), P, RW, SHARED_FILE, fd, 0)
    assert exc.value.errno == 13
    with pytest.raises(OSError) as exc:
        p.mmap(pg(0), P, R, PRIVATE_FILE, 42, 0)
    assert exc.value.errno == 9
    with pytest.raises(OSError) as exc:
        p.mmap(pg(0), P, R, PRIVATE_FILE, fd, 100)
    assert exc.value.errno == 22
    with pytest.raises(FileNotFoundError):
        p.open("/missing")
    p.mmap(pg(0), 2 * P, R, PRIVATE_FILE, fd, 0)
    with pytest.raises(vw.BusError):
        p.read(pg(1), 1)


def test_oom_killer_picks_the_largest_process():
    m = vw.Machine(ram="512K")
    big, small = m.spawn(), m.spawn()
    big.mmap(pg(0), 60 * P, RW, FIXED | vw.MAP_NORESERVE)
    big.write(pg(0), bytes(60 * P))
    small.mmap(pg(0), 40 * P, RW, FIXED | vw.MAP_NORESERVE)
    small.write(pg(0), bytes(40 * P))      # runs out: the OOM killer takes `big`
    assert not big.alive and small.alive
    kill = [e for e in m.events if e.call == "kill"][0]
    assert kill.pid == big.pid and "badness" in kill.outcome[0]
    assert small.read(pg(39), 1) == b"\0"
    vw.validate(m)


def test_reclaim_during_a_cow_fault_skips_the_page_being_prepared():
    # do_cow_fault() allocates its new anonymous page first, then reads the file page. When
    # that read needs reclaim, the new page (no rmap yet, not yet on the kernel's LRU) must
    # not be scanned. Found by fuzzing: rmap_walk() crashed on its missing anon_vma.
    m = vw.Machine(ram=64 * P)
    m.sysctl["vm.overcommit_memory"] = 1
    m.create_file("/one", b"file page".ljust(16 * P, b"."))   # read-around reads 16 pages
    p, filler = m.spawn(), m.spawn()
    fd = p.open("/one", 2)
    a = p.mmap(0, P, RW, vw.MAP_PRIVATE, fd, 0)
    big = filler.mmap(0, 64 * P, RW, vw.MAP_PRIVATE | vw.MAP_ANONYMOUS)
    i = 0
    while m.phys.nr_free > 3:
        filler.write(big + i * P, b"f")
        i += 1
    assert a and m.phys.nr_free == 3
    p.write(a, b"F")        # read-around runs out of frames: direct reclaim runs mid-fault
    assert m.stats["pgsteal"] > 0
    assert p.read(a, 9) == b"File page" and m.read_file("/one")[:9] == b"file page"
    vw.validate(m)
