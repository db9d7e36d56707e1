"""Unit tests of the front door: ``vw.Machine``, ``Process`` syscalls and accesses, the
/proc views, ``find_vma`` / ``for_each_vma`` and ``validate``.

The expected values are Linux 6.18 x86-64's; where the kernel source decides a boundary
(vm.max_map_count, brk's gap to the next mapping) the test says which line.
"""

import errno
import os

import pytest

import vmwidgets as vw

P = vw.PAGE_SIZE
RW = vw.PROT_READ | vw.PROT_WRITE
ANON = vw.MAP_PRIVATE | vw.MAP_ANONYMOUS
#: A free region of a spawned process, far from everything (its own PGD entry).
FAR = 0x2000_0000_0000
START_BRK = 0x5555_5555_8000
ZERO_PFN_FLAGS = 1 << vw.KPF_ZERO_PAGE


@pytest.fixture
def m():
    return vw.Machine(ram="64M")


@pytest.fixture
def p(m):
    return m.spawn()


def fixed(p, addr, npages, prot=RW, flags=ANON):
    return p.mmap(addr, npages * P, prot, flags | vw.MAP_FIXED)


def maps_lines(p):
    return p.proc_maps().splitlines()


def line_for(p, addr):
    """The maps line of the VMA starting at ``addr``."""
    return next(line for line in maps_lines(p) if line.startswith(f"{addr:x}-"))


def zero_pfn(p):
    """The PFN of the shared zero page, found the way a user would (a read fault)."""
    a = p.mmap(0, P, vw.PROT_READ, ANON)
    p.read(a, 1)
    pfn = p.pagemap(a).pfn
    p.munmap(a, P)
    return pfn


# -- argument types ----------------------------------------------------------------------------

@pytest.mark.parametrize("call, name", [
    (lambda p: p.mmap("0", P, RW, ANON), "addr"),
    (lambda p: p.mmap(0, 4096.0, RW, ANON), "length"),
    (lambda p: p.mmap(0, P, None, ANON), "prot"),
    (lambda p: p.mmap(0, P, RW, "0x22"), "flags"),
    (lambda p: p.mmap(0, P, RW, ANON, fd="3"), "fd"),
    (lambda p: p.mmap(0, P, RW, ANON, offset=[]), "offset"),
    (lambda p: p.mmap(True, P, RW, ANON), "addr"),
    (lambda p: p.munmap(b"\0", P), "addr"),
    (lambda p: p.munmap(0, "4096"), "length"),
    (lambda p: p.mprotect(0, P, 1.0), "prot"),
    (lambda p: p.madvise(0, P, "4"), "advice"),
    (lambda p: p.mremap(None, P, P), "old_addr"),
    (lambda p: p.mremap(0, "1", P), "old_size"),
    (lambda p: p.mremap(0, P, 2.5), "new_size"),
    (lambda p: p.mremap(0, P, P, flags="1"), "flags"),
    (lambda p: p.mremap(0, P, P, 3, new_addr=1.0), "new_addr"),
    (lambda p: p.brk(None), "addr"),
    (lambda p: p.write("0x1000", b"x"), "addr"),
    (lambda p: p.write(0x1000, "text"), "data"),
    (lambda p: p.read(0x1000, "2"), "size"),
    (lambda p: p.read(1.5, 2), "addr"),
    (lambda p: p.touch(None), "addr"),
    (lambda p: p.pagemap("0x1000"), "addr"),
    (lambda p: p.machine.kpagecount("1"), "pfn"),
    (lambda p: p.machine.kpageflags(1.0), "pfn"),
])
def test_wrong_python_type_is_a_type_error_naming_the_argument(p, call, name):
    before = p.proc_maps()
    with pytest.raises(TypeError) as info:
        call(p)
    assert str(info.value).startswith(f"{name} must be"), str(info.value)
    assert p.proc_maps() == before


def test_no_event_is_recorded_for_a_type_error(p, m):
    n = len(m.events)
    with pytest.raises(TypeError):
        p.munmap("0", P)
    assert len(m.events) == n


def test_bytes_like_data_is_accepted(p):
    a = p.mmap(0, P, RW, ANON)
    p.write(a, bytearray(b"ab"))
    p.write(a + 2, memoryview(b"cd"))
    assert p.read(a, 4) == b"abcd"


# -- negative ints are unsigned 64-bit, as in the syscall ABI ----------------------------------

@pytest.mark.parametrize("call, err", [
    # start above TASK_SIZE
    (lambda p: p.munmap(-P, P), errno.EINVAL),
    (lambda p: p.munmap(FAR, -1), errno.EINVAL),
    # len = ULONG_MAX: PAGE_ALIGN wraps to 0
    (lambda p: p.mmap(0, -1, RW, ANON), errno.ENOMEM),
    # MAP_FIXED at 0xfffffffffffff000: past TASK_SIZE
    (lambda p: p.mmap(-P, P, RW, ANON | vw.MAP_FIXED), errno.ENOMEM),
    # start + len wraps around
    (lambda p: p.mprotect(-P, P, vw.PROT_READ), errno.ENOMEM),
    (lambda p: p.madvise(-P, P, vw.MADV_DONTNEED), errno.EINVAL),
    # nothing mapped at 0xfffffffffffff000
    (lambda p: p.mremap(-P, P, P), errno.EFAULT),
    (lambda p: p.mremap(-P, P, 2 * P), errno.EFAULT),
    # unknown prot bits (all of them)
    (lambda p: p.mprotect(START_BRK, P, -1), errno.EINVAL),
])
def test_negative_ints_are_taken_as_unsigned_64_bit(p, call, err):
    before = p.proc_maps()
    with pytest.raises(OSError) as info:
        call(p)
    assert info.value.errno == err, info.value
    assert p.proc_maps() == before
    vw.validate(p.machine)


def test_negative_offset_is_a_huge_page_aligned_offset(p):
    # 0xfffffffffffff000 is page aligned, and pgoff + 1 page does not overflow.
    a = p.mmap(FAR, P, RW, ANON | vw.MAP_FIXED, offset=-P)
    assert a == FAR
    with pytest.raises(OSError) as info:
        p.mmap(FAR, P, RW, ANON | vw.MAP_FIXED, offset=-1)
    assert info.value.errno == errno.EINVAL


def test_access_at_a_negative_address_is_sigsegv(p):
    with pytest.raises(vw.SegmentationFault) as info:
        p.read(-P, 1)
    assert info.value.si_code == vw.SEGV_MAPERR


def test_errors_carry_the_syscall_and_a_plain_words_reason(p):
    a = fixed(p, FAR, 2)
    with pytest.raises(OSError) as info:
        p.munmap(a + 1, P)
    e = info.value
    assert e.errno == errno.EINVAL
    assert e.strerror == os.strerror(errno.EINVAL)
    assert e.syscall == "munmap"
    assert "not page aligned" in e.reason
    assert str(e) == f"[Errno {errno.EINVAL}] Invalid argument: munmap: {e.reason}"

    with pytest.raises(OSError) as info:
        p.mmap(a, P, RW, ANON | vw.MAP_FIXED_NOREPLACE)
    assert info.value.errno == errno.EEXIST
    assert "overlaps" in info.value.reason

    with pytest.raises(OSError) as info:
        p.mmap(0, 0, RW, ANON)
    assert info.value.errno == errno.EINVAL and info.value.reason == "length is 0"

    with pytest.raises(OSError) as info:
        p.mprotect(a, 3 * P, vw.PROT_READ)        # the third page is not mapped
    assert info.value.errno == errno.ENOMEM
    assert f"{a + 2 * P:#x}" in info.value.reason

    with pytest.raises(OSError) as info:
        p.mremap(a + 8 * P, P, 2 * P)
    assert info.value.errno == errno.EFAULT and "not mapped" in info.value.reason


def test_a_failed_syscall_is_recorded_with_its_errno(p, m):
    with pytest.raises(OSError):
        p.munmap(1, P)
    event = m.events[-1]
    assert (event.call, event.errno, event.result) == ("munmap", errno.EINVAL, None)


# -- Machine and sysctl ------------------------------------------------------------------------

@pytest.mark.parametrize("ram, pages", [
    ("64M", 16384), ("64MB", 16384), ("64MiB", 16384), ("1G", 262144), ("512K", 128),
    (64 << 20, 16384), ("  128m ", 32768), (str(1 << 20), 256),
])
def test_machine_ram_sizes(ram, pages):
    m = vw.Machine(ram=ram)
    assert m.phys.nr_pages == pages
    assert m.phys.nr_free < pages          # the kernel's reserved frames


def test_machine_default_ram_is_256M():
    assert vw.Machine().phys.nr_pages == (256 << 20) // P


@pytest.mark.parametrize("ram, exc", [
    ("lots", ValueError), ("4K", ValueError), (1.5, TypeError), (None, TypeError),
])
def test_machine_bad_ram(ram, exc):
    with pytest.raises(exc, match="(?i)ram"):
        vw.Machine(ram=ram)


def test_sysctl_defaults(m):
    assert m.sysctl["vm.max_map_count"] == 65530
    assert m.sysctl["vm.mmap_min_addr"] == 4096
    assert m.sysctl["vm.overcommit_memory"] == 0


def test_unknown_sysctl_raises_key_error(m):
    with pytest.raises(KeyError, match="vm.no_such_knob"):
        m.sysctl["vm.no_such_knob"] = 1
    with pytest.raises(KeyError):
        m.sysctl["vm.no_such_knob"]
    assert "vm.no_such_knob" not in m.sysctl


@pytest.mark.parametrize("key, value", [
    ("vm.max_map_count", -1), ("vm.max_map_count", "100"), ("vm.max_map_count", True),
    ("vm.overcommit_memory", 3),
])
def test_bad_sysctl_values_are_refused(m, key, value):
    before = m.sysctl[key]
    with pytest.raises(ValueError):
        m.sysctl[key] = value
    assert m.sysctl[key] == before


def test_mmap_min_addr(m):
    m.sysctl["vm.mmap_min_addr"] = 0x10000
    user, root = m.spawn(root=False), m.spawn(root=True)
    # A hint below mmap_min_addr is rounded up to it (mm/mmap.c: round_hint_to_min).
    assert user.mmap(0x1000, P, RW, ANON) == 0x10000
    # MAP_FIXED below it: EPERM without CAP_SYS_RAWIO (security/commoncap.c: cap_mmap_addr).
    with pytest.raises(OSError) as info:
        user.mmap(0x1000, P, RW, ANON | vw.MAP_FIXED)
    assert info.value.errno == errno.EPERM
    assert root.mmap(0x1000, P, RW, ANON | vw.MAP_FIXED) == 0x1000
    assert root.mmap(0, P, RW, ANON | vw.MAP_FIXED) == 0
    vw.validate(m)


def _map_single_pages(p, start, count):
    """mmap ``count`` one-page VMAs at ``start``, with a hole after each (none can merge)."""
    for i in range(count):
        p.mmap(start + 2 * i * P, P, RW, ANON | vw.MAP_FIXED_NOREPLACE)
    return start + 2 * count * P


def _fill_to(p, target, start):
    """Add isolated one-page VMAs until ``map_count == target``; return the next free slot."""
    return _map_single_pages(p, start, target - p.mm.map_count)


def test_max_map_count_do_mmap_refuses_only_above_the_limit(m, p):
    m.sysctl["vm.max_map_count"] = 100
    addr = FAR
    created = 0
    with pytest.raises(OSError) as info:
        while True:
            p.mmap(addr, P, RW, ANON | vw.MAP_FIXED_NOREPLACE)
            addr += 2 * P
            created += 1
            assert created < 200, "vm.max_map_count is not enforced"
    assert info.value.errno == errno.ENOMEM
    assert "max_map_count" in info.value.reason
    # mm/mmap.c: do_mmap() fails when map_count > sysctl_max_map_count, so the mmap made
    # at map_count == max still succeeds: max + 1 VMAs.
    assert p.mm.map_count == 101
    assert created == 101 - 9            # a spawned process starts with 9 VMAs
    # One fewer VMA: an mmap works again, exactly once.
    p.munmap(FAR, P)
    assert p.mm.map_count == 100
    p.mmap(FAR, P, RW, ANON | vw.MAP_FIXED_NOREPLACE)
    with pytest.raises(OSError) as info:
        p.mmap(FAR + P * 4000, P, RW, ANON)
    assert info.value.errno == errno.ENOMEM
    vw.validate(m)


def test_max_map_count_split_vma_refuses_at_the_limit(m, p):
    m.sysctl["vm.max_map_count"] = 100
    two = fixed(p, FAR, 2)                   # split by mprotect of its second page
    three = fixed(p, FAR + 4 * P, 3)         # split by munmap / MAP_FIXED of its middle page
    nxt = _fill_to(p, 100, FAR + 16 * P)
    before = p.proc_maps()
    # mm/vma.c: split_vma() fails when map_count >= sysctl_max_map_count.
    with pytest.raises(OSError) as info:
        p.mprotect(two + P, P, vw.PROT_READ)
    assert info.value.errno == errno.ENOMEM
    with pytest.raises(OSError) as info:
        p.munmap(three + P, P)
    assert info.value.errno == errno.ENOMEM
    with pytest.raises(OSError) as info:
        p.mmap(three + P, P, vw.PROT_READ, ANON | vw.MAP_FIXED)
    assert info.value.errno == errno.ENOMEM
    assert p.proc_maps() == before
    # Unmapping the end of a VMA needs no split, so it works even at the limit.
    p.munmap(three + 2 * P, P)
    p.mmap(three + 2 * P, P, RW, ANON | vw.MAP_FIXED)      # put it back (merges)
    assert p.mm.map_count == 100
    # One below the limit, one split is allowed (and brings map_count to the limit).
    p.munmap(nxt - 2 * P, P)
    assert p.mm.map_count == 99
    p.mprotect(two + P, P, vw.PROT_READ)
    assert p.mm.map_count == 100
    assert line_for(p, two + P).startswith(f"{two + P:x}-{two + 2 * P:x} r--p")
    vw.validate(m)


# -- pagemap, kpagecount, kpageflags -----------------------------------------------------------

def test_pagemap_int_encoding(p):
    a = fixed(p, FAR, 3)
    assert int(p.pagemap(a)) == 0                       # not present: all zero
    p.write(a, b"x")
    e = p.pagemap(a)
    raw = int(e)
    assert raw >> 63 & 1 == 1                           # PM_PRESENT
    assert raw >> 56 & 1 == 1                           # PM_MMAP_EXCLUSIVE
    assert raw >> 61 & 1 == 0                           # PM_FILE: anonymous
    assert raw >> 62 & 1 == 0                           # PM_SWAP
    assert raw & ((1 << 55) - 1) == e.pfn != 0          # PFN in bits 0-54
    assert raw == (1 << 63) | (1 << 56) | e.pfn
    assert vw.PagemapEntry.from_int(raw) == e
    # A read fault maps the zero page: present, not exclusive.
    p.read(a + P, 1)
    z = p.pagemap(a + P)
    assert int(z) == (1 << 63) | z.pfn
    # The same page seen without PFNs (as an unprivileged reader sees it).
    assert int(p.pagemap(a, show_pfn=False)) == (1 << 63) | (1 << 56)


def test_pagemap_of_shared_anonymous_memory_is_file_backed(p):
    a = p.mmap(0, P, RW, vw.MAP_SHARED | vw.MAP_ANONYMOUS)
    p.write(a, b"s")
    e = p.pagemap(a)
    assert e.present and e.file_shared and e.exclusive
    assert int(e) >> 61 & 1 == 1                        # PM_FILE (shmem is not anon)


def test_zero_page_kpageflags_and_kpagecount(m, p):
    a = fixed(p, FAR, 2, prot=vw.PROT_READ)
    assert p.read(a, 2 * P) == bytes(2 * P)
    e1, e2 = p.pagemap(a), p.pagemap(a + P)
    assert e1.pfn == e2.pfn                             # one zero page for everything
    assert m.kpageflags(e1.pfn) & ZERO_PFN_FLAGS
    assert not m.kpageflags(e1.pfn) & (1 << vw.KPF_ANON)
    assert m.kpagecount(e1.pfn) == 0


def test_written_anon_page_kpageflags_and_kpagecount(m, p):
    a = fixed(p, FAR, 1)
    p.write(a, b"x")
    pfn = p.pagemap(a).pfn
    flags = m.kpageflags(pfn)
    assert flags & (1 << vw.KPF_ANON)
    assert flags & (1 << vw.KPF_MMAP)
    assert not flags & ZERO_PFN_FLAGS
    assert m.kpagecount(pfn) == 1
    # Once unmapped the frame is free: no longer mapped, not anonymous.
    p.munmap(a, P)
    assert m.kpagecount(pfn) == 0
    assert not m.kpageflags(pfn) & ((1 << vw.KPF_ANON) | (1 << vw.KPF_MMAP))


def test_kpage_pfn_outside_ram(m):
    with pytest.raises(ValueError):
        m.kpagecount(m.phys.nr_pages)
    with pytest.raises(ValueError):
        m.kpageflags(-1)


# -- find_vma, for_each_vma --------------------------------------------------------------------

def test_find_vma(p):
    a = fixed(p, FAR, 2)
    b = fixed(p, FAR + 5 * P, 1, prot=vw.PROT_READ)
    mm = p.mm
    assert mm.find_vma(a).vm_start == a                 # at vm_start
    assert mm.find_vma(a + P + 123).vm_start == a       # inside
    assert mm.find_vma(a + 2 * P).vm_start == b         # at vm_end: the next VMA
    assert mm.find_vma(a + 3 * P).vm_start == b         # in a gap: the next VMA, above it
    assert mm.find_vma(0).vm_start == a                 # below everything: the first VMA
    last = list(vw.for_each_vma(mm))[-1]                # [stack]
    assert mm.find_vma(last.vm_end - 1) is last
    assert mm.find_vma(last.vm_end) is None             # above the last VMA
    assert mm.find_vma((1 << 64) - 1) is None
    # The VMA returned is the first one with addr < vm_end.
    for addr in (0, a - 1, a, a + 2 * P - 1, a + 2 * P, START_BRK, (1 << 47) - P - 1):
        vma = mm.find_vma(addr)
        earlier = [v for v in vw.for_each_vma(mm) if v.vm_end > addr]
        assert vma is (earlier[0] if earlier else None)


def test_for_each_vma_yields_in_address_order(p):
    for page in (40, 3, 21, 9, 30, 0):
        fixed(p, FAR + page * P, 1, prot=vw.PROT_READ if page % 2 else RW)
    vmas = list(vw.for_each_vma(p.mm))
    starts = [v.vm_start for v in vmas]
    assert starts == sorted(starts)
    assert all(a.vm_end <= b.vm_start for a, b in zip(vmas, vmas[1:]))
    assert len(vmas) == p.mm.map_count == len(maps_lines(p)) - 1     # [vsyscall] is no VMA
    for vma, line in zip(vmas, maps_lines(p)):
        assert line.startswith(f"{vma.vm_start:x}-{vma.vm_end:x} ")


# -- validate ----------------------------------------------------------------------------------

def test_validate_accepts_a_consistent_machine(m, p):
    a = fixed(p, FAR, 4)
    p.write(a, b"x" * (2 * P))
    p.read(a + 3 * P, 1)
    p.mprotect(a + P, P, vw.PROT_READ)
    assert vw.validate(m) is None


def test_validate_reports_a_wrong_mapcount(m, p):
    a = fixed(p, FAR, 1)
    p.write(a, b"x")
    pfn = p.pagemap(a).pfn
    m.phys.pages[pfn].mapcount += 1
    with pytest.raises(vw.ValidationError) as info:
        vw.validate(m)
    text = str(info.value)
    assert isinstance(info.value, AssertionError)
    assert text.startswith("model state is inconsistent:")
    assert f"frame {pfn:#x}: mapcount 2 but 1 PTE(s) map it" in text
    assert "pid 1:" in text                             # followed by a dump of the state


def test_validate_reports_overlapping_vmas(m, p):
    a = fixed(p, FAR, 1)
    fixed(p, FAR + 2 * P, 1, prot=vw.PROT_READ)
    p.mm.find_vma(a).vm_end = a + 3 * P                 # grows over its neighbour
    with pytest.raises(vw.ValidationError, match="overlaps"):
        vw.validate(m)


def test_validate_reports_a_pte_outside_every_vma(m, p):
    a = fixed(p, FAR, 2)
    p.write(a + P, b"x")
    p.mm.set_range(p.mm.find_vma(a), a, a + P, p.mm.find_vma(a).vm_pgoff)
    with pytest.raises(vw.ValidationError, match=f"{a + P:#x}: a PTE outside every VMA"):
        vw.validate(m)


# -- the spawn layout --------------------------------------------------------------------------

SPAWN_MAPS = """\
555555554000-555555555000 r--p 00000000 fe:00 260131                     /usr/bin/demo
555555555000-555555556000 r-xp 00001000 fe:00 260131                     /usr/bin/demo
555555556000-555555557000 r--p 00002000 fe:00 260131                     /usr/bin/demo
555555557000-555555558000 rw-p 00003000 fe:00 260131                     /usr/bin/demo
555555558000-555555579000 rw-p 00000000 00:00 0                          [heap]
7ffff7ff7000-7ffff7ffb000 r--p 00000000 00:00 0                          [vvar]
7ffff7ffb000-7ffff7ffd000 r--p 00000000 00:00 0                          [vvar_vclock]
7ffff7ffd000-7ffff7fff000 r-xp 00000000 00:00 0                          [vdso]
7ffffffde000-7ffffffff000 rw-p 00000000 00:00 0                          [stack]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
"""


def test_spawn_layout(p):
    assert p.proc_maps() == SPAWN_MAPS
    names = [line[73:] for line in maps_lines(p)]
    assert names == ["/usr/bin/demo"] * 4 + ["[heap]", "[vvar]", "[vvar_vclock]", "[vdso]",
                                             "[stack]", "[vsyscall]"]
    assert p.mm.start_brk == START_BRK and p.mm.brk == START_BRK + 0x21000


def test_spawn_is_deterministic(m):
    assert m.spawn().proc_maps() == m.spawn().proc_maps() == vw.Machine().spawn().proc_maps()


def test_anonymous_maps_line_ends_with_inode_and_a_space(p):
    a = p.mmap(0, 2 * P, RW, ANON)
    assert line_for(p, a) == f"{a:x}-{a + 2 * P:x} rw-p 00000000 00:00 0 "
    b = fixed(p, FAR, 1, prot=vw.PROT_NONE)
    assert line_for(p, b) == f"{b:x}-{b + P:x} ---p 00000000 00:00 0 "
    # A new anonymous mapping goes just below the lowest one near mmap_base (top down).
    assert a + 2 * P == 0x7ffff7ff7000


def test_shared_anonymous_maps_line(p):
    a = p.mmap(0, P, RW, vw.MAP_SHARED | vw.MAP_ANONYMOUS)
    line = line_for(p, a)
    assert line.startswith(f"{a:x}-{a + P:x} rw-s 00000000 00:01 ")
    assert line.endswith(" /dev/zero (deleted)")


# -- SIGSEGV -----------------------------------------------------------------------------------

def test_sigsegv_on_unmapped_is_maperr(p):
    a = fixed(p, FAR, 1)
    p.munmap(a, P)
    before = p.proc_maps()
    for access in (lambda: p.read(a + 5, 1), lambda: p.write(a + 5, b"x"),
                   lambda: p.touch(a + 5), lambda: p.touch(a + 5, write=True)):
        with pytest.raises(vw.SegmentationFault) as info:
            access()
        assert info.value.si_code == vw.SEGV_MAPERR
        assert info.value.addr == a + 5
    assert p.proc_maps() == before
    assert int(p.pagemap(a)) == 0


def test_sigsegv_on_prot_none_is_accerr(p):
    a = fixed(p, FAR, 1, prot=vw.PROT_NONE)
    for access, kind in ((lambda: p.read(a, 1), "read"), (lambda: p.write(a, b"x"), "write")):
        with pytest.raises(vw.SegmentationFault) as info:
            access()
        assert info.value.si_code == vw.SEGV_ACCERR
        assert info.value.access == kind
    assert int(p.pagemap(a)) == 0                         # nothing was faulted in


def test_sigsegv_on_write_to_read_only_is_accerr(p):
    a = fixed(p, FAR, 1, prot=vw.PROT_READ)
    assert p.read(a, 4) == bytes(4)
    before = (p.proc_maps(), int(p.pagemap(a)))
    with pytest.raises(vw.SegmentationFault) as info:
        p.write(a + 7, b"x")
    assert (info.value.si_code, info.value.addr) == (vw.SEGV_ACCERR, a + 7)
    with pytest.raises(vw.SegmentationFault) as info:
        p.touch(a, write=True)
    assert info.value.si_code == vw.SEGV_ACCERR
    assert (p.proc_maps(), int(p.pagemap(a))) == before
    # The binary's text is read-only too.
    with pytest.raises(vw.SegmentationFault) as info:
        p.write(0x555555555000, b"\xcc")
    assert info.value.si_code == vw.SEGV_ACCERR


def test_write_only_mapping_is_readable_on_x86(p):
    a = fixed(p, FAR, 1, prot=vw.PROT_WRITE)
    p.write(a, b"w")
    assert p.read(a, 1) == b"w"


def test_refused_access_across_pages_changes_nothing(m, p):
    a = fixed(p, FAR, 1)                                   # the next page is not mapped
    before = (p.proc_maps(), int(p.pagemap(a)), m.phys.nr_free)
    with pytest.raises(vw.SegmentationFault) as info:
        p.write(a + P - 2, b"abcd")
    assert info.value.addr == a + P                       # the first byte refused
    assert info.value.si_code == vw.SEGV_MAPERR
    assert (p.proc_maps(), int(p.pagemap(a)), m.phys.nr_free) == before
    with pytest.raises(vw.SegmentationFault):
        p.read(a + P - 2, 4)
    assert (p.proc_maps(), int(p.pagemap(a)), m.phys.nr_free) == before
    # Read-only second page: the write is refused there, with SEGV_ACCERR.
    fixed(p, a + P, 1, prot=vw.PROT_READ)
    with pytest.raises(vw.SegmentationFault) as info:
        p.write(a + P - 2, b"abcd")
    assert (info.value.addr, info.value.si_code) == (a + P, vw.SEGV_ACCERR)
    assert p.read(a + P - 2, 4) == bytes(4)


def test_access_to_the_top_page_of_user_space_is_maperr(p):
    # [0x7ffffffff000, 1 << 47) is canonical user space above TASK_SIZE: never mapped.
    for addr in ((1 << 47) - P, (1 << 47) - 1):
        with pytest.raises(vw.SegmentationFault) as info:
            p.read(addr, 1)
        assert (info.value.si_code, info.value.addr) == (vw.SEGV_MAPERR, addr)
    # A read that runs off the end of [stack] into it.
    with pytest.raises(vw.SegmentationFault) as info:
        p.read((1 << 47) - P - 2, 4)
    assert info.value.si_code == vw.SEGV_MAPERR


# -- faults ------------------------------------------------------------------------------------

def test_write_across_a_page_boundary(m, p):
    a = fixed(p, FAR, 2)
    p.read(a, 1)                                          # page tables exist from here on
    free = m.phys.nr_free
    p.write(a + P - 2, b"abcd")
    assert p.read(a + P - 2, 4) == b"abcd"
    assert p.read(a, P - 2) == bytes(P - 2)
    assert p.read(a + P + 2, P - 2) == bytes(P - 2)
    e1, e2 = p.pagemap(a), p.pagemap(a + P)
    assert e1.present and e1.exclusive and e2.present and e2.exclusive
    assert e1.pfn != e2.pfn
    assert m.phys.nr_free == free - 2                     # one new frame per page


def test_read_of_untouched_private_anon_maps_the_zero_page(m, p):
    a = fixed(p, FAR, 2)
    assert p.read(a, 2 * P) == bytes(2 * P)
    for addr in (a, a + P):
        e = p.pagemap(addr)
        assert e.present and not e.exclusive and not e.file_shared
        assert m.kpageflags(e.pfn) & ZERO_PFN_FLAGS
    assert p.pagemap(a).pfn == zero_pfn(p)


def test_write_allocates_an_exclusive_page(m, p):
    zero = zero_pfn(p)
    a = fixed(p, FAR, 1)
    p.read(a, 1)
    free = m.phys.nr_free
    p.write(a + 10, b"hello")
    e = p.pagemap(a)
    assert e.present and e.exclusive and not e.file_shared
    assert e.pfn != zero
    assert m.phys.nr_free == free - 1
    assert p.read(a + 8, 9) == b"\0\0hello\0\0"


def test_touch_write_faults_as_a_write_and_keeps_the_data(p):
    a = fixed(p, FAR, 1)
    p.touch(a)
    assert not p.pagemap(a).exclusive                     # zero page
    p.touch(a, write=True)
    assert p.pagemap(a).exclusive
    p.write(a, b"k")
    p.touch(a, write=True)
    assert p.read(a, 1) == b"k"


@pytest.mark.parametrize("prot, exclusive, flags", [
    (RW, True, ANON),                                      # write faults: own pages
    (vw.PROT_READ, False, ANON),                           # read faults: the zero page
    (RW, True, vw.MAP_SHARED | vw.MAP_ANONYMOUS),          # shmem pages
])
def test_map_populate_populates(m, p, prot, exclusive, flags):
    a = p.mmap(FAR, 4 * P, prot, flags | vw.MAP_FIXED | vw.MAP_POPULATE)
    entries = [p.pagemap(a + i * P) for i in range(4)]
    assert all(e.present and e.exclusive == exclusive for e in entries)
    pfns = {e.pfn for e in entries}
    assert len(pfns) == (4 if exclusive else 1)
    assert p.read(a, 4 * P) == bytes(4 * P)
    vw.validate(m)


def test_map_populate_with_map_nonblock_does_not_populate(p):
    a = p.mmap(FAR, 2 * P, RW, ANON | vw.MAP_FIXED | vw.MAP_POPULATE | vw.MAP_NONBLOCK)
    assert not p.pagemap(a).present


def test_without_populate_nothing_is_present(p):
    a = p.mmap(0, 4 * P, RW, ANON)
    assert not any(p.pagemap(a + i * P).present for i in range(4))


# -- munmap frees frames and page tables -------------------------------------------------------

def _pgtable_frames(m):
    return sum(1 for page in m.phys.pages.values() if page.kind == "pgtable")


def test_munmap_frees_frames_and_page_tables(m, p):
    free, tables = m.phys.nr_free, _pgtable_frames(m)
    a = fixed(p, FAR, 4)
    assert m.phys.nr_free == free                         # nothing until the first fault
    p.write(a, b"x" * (4 * P))
    # 4 pages, plus a PUD, a PMD and a PTE table under a PGD slot of their own.
    assert m.phys.nr_free == free - 4 - 3
    assert _pgtable_frames(m) == tables + 3
    p.munmap(a + P, 2 * P)                               # the middle: only its frames go
    assert m.phys.nr_free == free - 2 - 3
    p.munmap(a, 4 * P)
    assert m.phys.nr_free == free
    assert _pgtable_frames(m) == tables
    vw.validate(m)


def test_munmap_of_zero_page_mappings_frees_only_tables(m, p):
    free = m.phys.nr_free
    a = fixed(p, FAR, 2, prot=vw.PROT_READ)
    p.read(a, 2 * P)
    assert m.phys.nr_free == free - 3                     # tables only: the zero page is shared
    p.munmap(a, 2 * P)
    assert m.phys.nr_free == free


def test_munmap_of_nothing_mapped_succeeds(p):
    before = p.proc_maps()
    assert p.munmap(FAR, 16 * P) == 0
    assert p.proc_maps() == before


# -- brk ---------------------------------------------------------------------------------------

def heap_line(p):
    return next(line for line in maps_lines(p) if line.endswith("[heap]"))


def test_brk_query_and_grow_and_shrink(m, p):
    cur = p.brk(0)                                        # below start_brk: refused, reports
    assert cur == p.mm.brk == START_BRK + 0x21000
    new = p.brk(cur + 5 * P + 123)
    assert new == cur + 5 * P + 123 == p.mm.brk
    end = cur + 6 * P                                     # PAGE_ALIGN(brk)
    assert heap_line(p).startswith(f"{START_BRK:x}-{end:x} rw-p ")
    p.write(end - 1, b"h")                                # the last heap byte is usable
    with pytest.raises(vw.SegmentationFault):
        p.write(end, b"h")
    # Shrinking within the last page changes no VMA.
    assert p.brk(new - 100) == new - 100
    assert heap_line(p).startswith(f"{START_BRK:x}-{end:x} ")
    # Shrinking unmaps the pages above the new break; growing again gives zeroes.
    assert p.brk(cur) == cur
    assert heap_line(p).startswith(f"{START_BRK:x}-{cur:x} ")
    with pytest.raises(vw.SegmentationFault) as info:
        p.read(end - 1, 1)
    assert info.value.si_code == vw.SEGV_MAPERR
    assert p.brk(end) == end
    assert p.read(end - 1, 1) == b"\0"
    assert sum(line.endswith("[heap]") for line in maps_lines(p)) == 1
    vw.validate(m)


def test_brk_below_start_is_refused(p):
    cur = p.brk(0)
    before = p.proc_maps()
    assert p.brk(START_BRK - 1) == cur
    assert p.brk(START_BRK - P) == cur
    assert p.mm.brk == cur and p.proc_maps() == before
    # Down to start_brk itself is allowed: the heap VMA goes away.
    assert p.brk(START_BRK) == START_BRK
    assert not any(line.endswith("[heap]") for line in maps_lines(p))
    assert p.brk(START_BRK + P) == START_BRK + P
    assert heap_line(p).startswith(f"{START_BRK:x}-{START_BRK + P:x} rw-p ")


def test_brk_refused_too_close_to_the_next_mapping(m, p):
    cur = p.brk(0)
    other = fixed(p, cur + 8 * P, 1)
    before = p.proc_maps()
    # mm/mmap.c: brk fails if newbrk + PAGE_SIZE > vm_start_gap(next): one page must stay free.
    assert p.brk(other - P + 1) == cur
    assert p.brk(other + 100 * P) == cur
    assert p.mm.brk == cur and p.proc_maps() == before
    assert p.brk(other - P) == other - P
    assert heap_line(p).startswith(f"{START_BRK:x}-{other - P:x} ")
    vw.validate(m)


def test_brk_keeps_the_stack_guard_gap_below_a_stack(m, p):
    cur = p.brk(0)
    stack = p.mmap(cur + 512 * P, P, RW, ANON | vw.MAP_FIXED | vw.MAP_GROWSDOWN)
    # vm_start_gap() of a VM_GROWSDOWN VMA is 256 pages (stack_guard_gap) below it.
    assert p.brk(stack - 256 * P - P + 1) == cur
    assert p.brk(stack - 256 * P - P) == stack - 256 * P - P


def _check_brk_refused(m, p, request):
    cur = p.brk(0)
    before = p.proc_maps()
    assert p.brk(request) == cur
    assert p.mm.brk == cur
    assert p.proc_maps() == before
    vw.validate(m)


@pytest.mark.parametrize("request_", [-P, 1 << 63, 1 << 47, (1 << 47) - P])
def test_brk_far_above_is_refused(m, p, request_):
    # Too close to (or past) [stack], or more than RAM can commit: the old break.
    _check_brk_refused(m, p, request_)


# PAGE_ALIGN(brk) wraps to 0 here; the length newbrk - oldbrk is then a huge unsigned
# number that do_brk_flags' vm_enough_memory check refuses.
@pytest.mark.parametrize("request_", [-1, -P + 1, -2048])
def test_brk_to_the_last_page_of_the_address_space_is_refused(m, p, request_):
    _check_brk_refused(m, p, request_)


def test_brk_shrink_refused_at_max_map_count_returns_the_old_break(m, p):
    cur = p.brk(0)
    # An anonymous mapping right above the heap merges with it (checked on a live kernel),
    # so shrinking the break now unmaps the middle of that VMA: one more VMA.
    fixed(p, cur, 4)
    assert heap_line(p).startswith(f"{START_BRK:x}-{cur + 4 * P:x} ")
    m.sysctl["vm.max_map_count"] = p.mm.map_count
    before = p.proc_maps()
    assert p.brk(cur - 2 * P) == cur
    assert p.mm.brk == cur
    assert p.proc_maps() == before
    # One VMA of headroom and the same shrink splits the VMA.
    m.sysctl["vm.max_map_count"] = p.mm.map_count + 1
    assert p.brk(cur - 2 * P) == cur - 2 * P
    vw.validate(m)
