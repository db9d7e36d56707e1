"""Tests of the live-kernel harness (vmwidgets.live) against the running kernel.

Tests needing Linux x86-64 skip via live_kernel_available(); those needing
root (PFNs, /proc/kpageflags) skip via live_root_available().
"""

import errno
import time

import pytest

from vmwidgets import live
from vmwidgets.live import (
    KPF_ANON,
    KPF_ZERO_PAGE,
    MAP_ANONYMOUS,
    MAP_FIXED,
    MAP_FIXED_NOREPLACE,
    MAP_PRIVATE,
    PAGE_SIZE,
    PM_EXCLUSIVE,
    PM_FILE,
    PM_PFN_MASK,
    PM_PRESENT,
    PROT_READ,
    PROT_WRITE,
    LiveProcess,
)

pytestmark = pytest.mark.live

P = PAGE_SIZE
RW = PROT_READ | PROT_WRITE
ANON_FIXED = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED


def need_kernel():
    ok, reason = live.live_kernel_available()
    if not ok:
        pytest.skip(reason)


def need_root():
    ok, reason = live.live_root_available()
    if not ok:
        pytest.skip(reason)


@pytest.fixture
def lp():
    need_kernel()
    with LiveProcess() as proc:
        yield proc


def span(line):
    """(start, end) of a maps line."""
    start, end = line.split()[0].split("-")
    return int(start, 16), int(end, 16)


def perms(line):
    return line.split()[1]


# --------------------------------------------------------------------------
# Process basics


def test_start_is_fast_and_arena_is_empty():
    need_kernel()
    t0 = time.monotonic()
    with LiveProcess() as proc:
        elapsed = time.monotonic() - t0
        assert proc.arena == live.DEFAULT_ARENA_BASE
        assert proc.arena_end == proc.arena + live.DEFAULT_ARENA_PAGES * P
        assert proc.maps() == []
        assert proc.pid > 0
    assert elapsed < 1.0  # typically well under 0.2 s


def test_close_is_idempotent_and_kills_child():
    need_kernel()
    proc = LiveProcess(arena_pages=16)
    popen = proc._proc
    proc.close()
    proc.close()
    assert popen.returncode is not None
    with pytest.raises(RuntimeError):
        proc.maps()


def test_unavailable_arena_is_reported():
    need_kernel()
    # An arena reaching past the top of the user address space (47 bits)
    # cannot be reserved.  (Occupied ranges are randomized, so cannot be
    # targeted reliably; they fail the same way, with EEXIST.)
    with pytest.raises(RuntimeError, match="not available in the child"):
        LiveProcess(arena_pages=16, arena_base=(1 << 47) - 8 * P)


def test_malloc_does_not_use_brk(lp):
    assert lp.initial_brk == lp.start_brk
    lp.maps_text()
    lp.run([{"op": "maps", "args": [0, 1 << 47]}] * 20)
    lp.read(lp.arena - P, 0)
    assert lp.brk(0) == lp.initial_brk
    assert "[heap]" not in lp.maps_text()


# --------------------------------------------------------------------------
# System calls


def test_mmap_fixed_shows_in_maps(lp):
    addr = lp.mmap(lp.arena, 4 * P, RW, ANON_FIXED)
    assert addr == lp.arena
    (line,) = lp.maps()
    assert span(line) == (lp.arena, lp.arena + 4 * P)
    assert line.split()[1:5] == ["rw-p", "00000000", "00:00", "0"]
    assert line.startswith("%x-%x rw-p 00000000 00:00 0" % (lp.arena, lp.arena + 4 * P))


def test_mprotect_splits_into_three(lp):
    a = lp.mmap(lp.arena, 3 * P, RW, ANON_FIXED)
    assert lp.mprotect(a + P, P, PROT_READ) == 0
    lines = lp.maps()
    assert [span(l) for l in lines] == [(a, a + P), (a + P, a + 2 * P), (a + 2 * P, a + 3 * P)]
    assert [perms(l) for l in lines] == ["rw-p", "r--p", "rw-p"]


def test_munmap_of_hole_returns_zero(lp):
    assert lp.munmap(lp.arena + 10 * P, 5 * P) == 0
    assert lp.maps() == []


def test_mmap_length_zero_is_einval(lp):
    with pytest.raises(OSError) as exc:
        lp.mmap(lp.arena, 0, RW, ANON_FIXED)
    assert exc.value.errno == errno.EINVAL


def test_fixed_noreplace_over_mapping_is_eexist(lp):
    lp.mmap(lp.arena, 4 * P, RW, ANON_FIXED)
    with pytest.raises(OSError) as exc:
        lp.mmap(lp.arena + 3 * P, 2 * P, RW, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE)
    assert exc.value.errno == errno.EEXIST
    assert [span(l) for l in lp.maps()] == [(lp.arena, lp.arena + 4 * P)]


def test_mremap_and_madvise(lp):
    a = lp.mmap(lp.arena, 2 * P, RW, ANON_FIXED)
    lp.write(a, b"abc")
    assert lp.mremap(a, 2 * P, 4 * P) == a  # grow in place
    assert [span(l) for l in lp.maps()] == [(a, a + 4 * P)]
    assert lp.madvise(a, P, live.MADV_DONTNEED) == 0
    assert lp.read(a, 3) == b"\0\0\0"


def test_run_batch(lp):
    a = lp.arena
    out = lp.run([
        {"op": "mmap", "args": [a, 2 * P, RW, ANON_FIXED]},
        {"op": "mmap", "args": [a, 0, RW, ANON_FIXED]},
        {"op": "write", "args": [a, b"xyz"]},
        {"op": "read", "args": [a, 3]},
        {"op": "munmap", "args": [a + P, P]},
        {"op": "maps", "args": [a, a + 2 * P]},
    ])
    assert out[0] == {"ret": a}
    assert out[1] == {"errno": errno.EINVAL}
    assert out[3] == {"ret": b"xyz"}
    assert out[4] == {"ret": 0}
    assert [span(l) for l in out[5]["ret"]] == [(a, a + P)]


# --------------------------------------------------------------------------
# Memory and pagemap


def test_write_read_round_trip(lp):
    a = lp.mmap(lp.arena, 2 * P, RW, ANON_FIXED)
    data = bytes(range(256)) * 20  # crosses a page boundary
    lp.write(a + 100, data)
    assert lp.read(a + 100, len(data)) == data
    assert lp.read(a, 100) == bytes(100)


def test_touch_write_keeps_value(lp):
    a = lp.mmap(lp.arena, P, RW, ANON_FIXED)
    lp.write(a, b"\x5a")
    lp.touch(a, write=True)
    assert lp.read(a, 1) == b"\x5a"


def test_pagemap_written_page_is_present_and_exclusive(lp):
    a = lp.mmap(lp.arena, P, RW, ANON_FIXED)
    assert lp.pagemap(a) & PM_PRESENT == 0
    lp.touch(a, write=True)
    entry = lp.pagemap(a)
    assert entry & PM_PRESENT
    assert entry & PM_EXCLUSIVE
    assert not entry & PM_FILE


def test_pagemap_read_page_is_zero_page_not_exclusive(lp):
    a = lp.mmap(lp.arena, P, PROT_READ, ANON_FIXED)
    lp.touch(a, write=False)
    entry = lp.pagemap(a)
    assert entry & PM_PRESENT
    assert not entry & PM_EXCLUSIVE
    assert not entry & PM_FILE


def test_kpageflags_zero_page_and_anon_page(lp):
    need_root()
    a = lp.mmap(lp.arena, 2 * P, RW, ANON_FIXED)
    lp.touch(a, write=False)
    lp.touch(a + P, write=True)
    zero_pfn = lp.pagemap(a) & PM_PFN_MASK
    anon_pfn = lp.pagemap(a + P) & PM_PFN_MASK
    assert zero_pfn and anon_pfn and zero_pfn != anon_pfn
    assert lp.kpageflags(zero_pfn) >> KPF_ZERO_PAGE & 1
    flags = lp.kpageflags(anon_pfn)
    assert flags >> KPF_ANON & 1
    assert not flags >> KPF_ZERO_PAGE & 1
    assert lp.kpagecount(anon_pfn) == 1


# --------------------------------------------------------------------------
# Child death


def test_child_death_is_runtime_error(lp):
    a = lp.mmap(lp.arena, P, PROT_READ, ANON_FIXED)
    with pytest.raises(RuntimeError, match="died with signal 11 during touch"):
        lp.touch(a, write=True)
    with pytest.raises(RuntimeError, match="gone"):
        lp.maps()


def test_child_death_in_batch_is_runtime_error(lp):
    a = lp.arena
    with pytest.raises(RuntimeError, match=r"died with signal 11 during run\(\[mmap, touch"):
        lp.run([
            {"op": "mmap", "args": [a, P, PROT_READ, ANON_FIXED]},
            {"op": "touch", "args": [a, True]},
            {"op": "maps", "args": [a, a + P]},
        ])


def test_unknown_op_is_runtime_error_and_child_survives(lp):
    with pytest.raises(RuntimeError, match="rejected"):
        lp._call("no_such_op")
    assert lp.maps() == []


# --------------------------------------------------------------------------
# brk


def test_brk_sequence_grows_and_shrinks(lp):
    b = lp.initial_brk
    assert b % P == 0
    results = lp.brk_sequence([b + 3 * P, b + 5 * P + 1, b + P, b - P, b])
    rets = [r for r, _ in results]
    assert rets == [b + 3 * P, b + 5 * P + 1, b + P, b + P, b]
    heaps = [[span(l) for l in lines] for _, lines in results]
    assert heaps == [[(b, b + 3 * P)], [(b, b + 6 * P)], [(b, b + P)], [(b, b + P)], []]
    assert all(l.endswith("[heap]") for _, lines in results for l in lines)
    # The initial break is restored afterwards.
    assert lp.brk(0) == b


def test_brk_sequence_reliable():
    need_kernel()
    for _ in range(50):
        with LiveProcess(arena_pages=16) as proc:
            b = proc.initial_brk
            results = proc.brk_sequence([b + 2 * P, b])
            assert results[0][0] == b + 2 * P
            assert [span(l) for l in results[0][1]] == [(b, b + 2 * P)]
            assert results[1] == (b, [])
