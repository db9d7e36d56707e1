"""Tests of the live-kernel harness (vmwidgets.live) against the running kernel.

Tests needing Linux x86-64 skip via live_kernel_available(); those needing
root (PFNs, /proc/kpageflags) skip via live_root_available().
"""

import errno
import gc
import os
import signal
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


# --------------------------------------------------------------------------
# Several processes: fork, copy-on-write, exit

MADV_DONTFORK = live.MADV_DONTFORK
MADV_WIPEONFORK = live.MADV_WIPEONFORK


def gone(pid):
    """True once ``pid`` no longer exists (not even as a zombie)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def ppid_of(pid):
    with open("/proc/%d/stat" % pid) as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def pfn(entry):
    return entry & PM_PFN_MASK


@pytest.fixture
def forked(lp):
    """(parent, child): the parent mapped 4 pages at the arena and wrote page 0, then
    forked."""
    a = lp.mmap(lp.arena, 4 * P, RW, ANON_FIXED)
    lp.write(a, b"parent data")
    child = lp.fork()
    yield lp, child
    child.close()


def test_fork_returns_a_process_with_the_same_arena(forked):
    parent, child = forked
    assert child.pid not in (parent.pid, 0) and child.alive
    assert child.parent is parent
    assert ppid_of(child.pid) == parent.pid
    assert (child.arena, child.arena_end, child.guard) == (parent.arena, parent.arena_end,
                                                           parent.guard)
    assert (child.initial_brk, child.start_brk) == (parent.initial_brk, parent.start_brk)


def test_fork_shares_data_and_pages(forked):
    parent, child = forked
    a = parent.arena
    assert parent.read(a, 11) == child.read(a, 11) == b"parent data"
    for proc in (parent, child):
        entry = proc.pagemap(a)
        assert entry & PM_PRESENT
        assert not entry & PM_EXCLUSIVE  # mapped by two processes
        assert not entry & PM_FILE


def test_fork_shares_the_frame_root(forked):
    need_root()
    parent, child = forked
    a = parent.arena
    frame = pfn(parent.pagemap(a))
    assert frame and pfn(child.pagemap(a)) == frame
    assert parent.kpagecount(frame) == 2
    assert parent.kpageflags(frame) >> KPF_ANON & 1


def test_child_write_copies_and_parent_page_becomes_exclusive_again(forked):
    parent, child = forked
    a = parent.arena
    child.write(a, b"CHILD")
    assert child.read(a, 11) == b"CHILDt data"
    assert parent.read(a, 11) == b"parent data"
    for proc in (parent, child):
        entry = proc.pagemap(a)
        assert entry & PM_PRESENT and entry & PM_EXCLUSIVE


def test_child_write_copies_root(forked):
    need_root()
    parent, child = forked
    a = parent.arena
    before = pfn(parent.pagemap(a))
    child.write(a, b"CHILD")
    p_frame, c_frame = pfn(parent.pagemap(a)), pfn(child.pagemap(a))
    assert p_frame == before  # the parent keeps the original frame
    assert c_frame and c_frame != p_frame  # the child got a copy
    assert parent.kpagecount(p_frame) == 1
    assert parent.kpagecount(c_frame) == 1
    # The parent's page is no longer shared: its write reuses the frame, no copy.
    parent.write(a, b"P")
    assert pfn(parent.pagemap(a)) == before
    assert parent.kpagecount(before) == 1


def test_child_read_of_untouched_page_maps_the_zero_page(forked):
    parent, child = forked
    a = parent.arena + 2 * P
    assert child.pagemap(a) & PM_PRESENT == 0
    assert child.read(a, 8) == bytes(8)
    entry = child.pagemap(a)
    assert entry & PM_PRESENT and not entry & PM_EXCLUSIVE
    # pagemap is per process: the parent never touched that page.
    assert parent.pagemap(a) & PM_PRESENT == 0
    if live.live_root_available()[0]:
        assert child.kpageflags(pfn(entry)) >> KPF_ZERO_PAGE & 1


def test_pagemap_reads_each_process_own_pages(forked):
    parent, child = forked
    a = parent.arena + 3 * P
    parent.write(a, b"only in the parent")
    assert parent.pagemap(a) & PM_PRESENT
    assert child.pagemap(a) & PM_PRESENT == 0
    assert child.read(a, 4) == bytes(4)


def test_pagemaps_batch(forked):
    parent, child = forked
    addrs = [parent.arena + i * P for i in range(4)] + [parent.arena - P]
    for proc in (parent, child):
        assert proc.pagemaps(addrs) == [proc.pagemap(x) for x in addrs]
    assert parent.pagemaps([]) == []


def test_child_exit_makes_the_page_exclusive_again(forked):
    parent, child = forked
    a = parent.arena
    pid = child.pid
    assert not parent.pagemap(a) & PM_EXCLUSIVE
    child.exit()
    assert not child.alive
    assert child.exit_status == 0
    assert gone(pid)  # reaped at once, no zombie
    assert parent.pagemap(a) & PM_EXCLUSIVE
    if live.live_root_available()[0]:
        assert parent.kpagecount(pfn(parent.pagemap(a))) == 1
    with pytest.raises(RuntimeError, match="gone"):
        child.maps()
    child.close()  # still fine
    assert parent.read(a, 11) == b"parent data"


def test_fork_of_a_fork(forked):
    parent, child = forked
    a = parent.arena
    grandchild = child.fork()
    try:
        assert grandchild.parent is child
        assert ppid_of(grandchild.pid) == child.pid
        assert grandchild.read(a, 11) == b"parent data"
        assert not grandchild.pagemap(a) & PM_EXCLUSIVE
        if live.live_root_available()[0]:
            frame = pfn(parent.pagemap(a))
            assert pfn(grandchild.pagemap(a)) == frame
            assert parent.kpagecount(frame) == 3
        grandchild.write(a, b"GRAND")
        assert (parent.read(a, 5), child.read(a, 5), grandchild.read(a, 5)) == (
            b"paren", b"paren", b"GRAND")
        # Closing the middle process: the grandchild lives on, adopted by the first
        # process (a child subreaper), and its handle still works.
        child_pid = child.pid
        child.close()
        assert gone(child_pid)
        assert ppid_of(grandchild.pid) == parent.pid
        assert grandchild.read(a, 5) == b"GRAND"
        great = grandchild.fork()
        assert great.read(a, 5) == b"GRAND"
        great.exit()
        assert gone(great.pid)
    finally:
        grandchild.close()
    assert gone(grandchild.pid)


def test_maps_of_the_child_equal_the_parent(lp):
    a = lp.arena
    lp.mmap(a, 8 * P, RW, ANON_FIXED)
    lp.mprotect(a + 2 * P, P, PROT_READ)
    lp.mmap(a + 20 * P, 2 * P, PROT_READ, ANON_FIXED)
    lp.write(a, b"x")
    with lp.fork() as child:
        assert len(lp.maps()) == 4
        assert child.maps() == lp.maps()
        # After fork the two address spaces are independent.
        child.munmap(a + 5 * P, P)  # splits the last rw-p VMA in the child only
        assert len(child.maps()) == 5 and len(lp.maps()) == 4


def test_madv_dontfork_area_is_absent_in_the_child(lp):
    a = lp.arena
    lp.mmap(a, 2 * P, RW, ANON_FIXED)
    lp.mmap(a + 4 * P, 2 * P, RW, ANON_FIXED)
    lp.write(a + 4 * P, b"not inherited")
    assert lp.madvise(a + 4 * P, 2 * P, MADV_DONTFORK) == 0
    with lp.fork() as child:
        assert [span(l) for l in child.maps()] == [(a, a + 2 * P)]
        assert [span(l) for l in lp.maps()] == [(a, a + 2 * P), (a + 4 * P, a + 6 * P)]
        assert child.probe(a + 4 * P, False) == "signal 11"
        assert lp.read(a + 4 * P, 13) == b"not inherited"


def test_madv_wipeonfork_area_reads_as_zeroes_in_the_child(lp):
    a = lp.arena
    lp.mmap(a, 2 * P, RW, ANON_FIXED)
    lp.write(a, b"wiped in the child")
    lp.write(a + P, b"page 2")
    assert lp.madvise(a, 2 * P, MADV_WIPEONFORK) == 0
    with lp.fork() as child:
        assert child.maps() == lp.maps()  # the area is there, but empty
        assert child.pagemap(a) & PM_PRESENT == 0
        assert child.read(a, 18) == bytes(18)
        assert child.read(a + P, 6) == bytes(6)
        assert lp.read(a, 18) == b"wiped in the child"
        assert lp.pagemap(a) & PM_EXCLUSIVE  # nothing was shared
        # The flag is inherited: a fork of the child wipes again.
        child.write(a, b"child data")
        with child.fork() as grandchild:
            assert grandchild.read(a, 10) == bytes(10)


def test_close_of_all_handles_leaves_no_process(lp):
    a = lp.mmap(lp.arena, P, RW, ANON_FIXED)
    lp.write(a, b"x")
    c1 = lp.fork()
    c2 = lp.fork()
    g1 = c1.fork()
    g2 = c1.fork()
    gg = g1.fork()
    forked = [c1, c2, g1, g2, gg]
    pids = [h.pid for h in forked]
    assert len(set(pids + [lp.pid])) == 6
    # Close in a mixed order: parents before and after their children.
    c1.close()
    g2.close()
    assert gg.read(a, 1) == b"x"
    gg.close()
    g1.close()
    c2.close()
    for h in forked:
        assert not h.alive
    for pid in pids:
        assert gone(pid), pid
    assert lp.read(a, 1) == b"x"
    if live.live_root_available()[0]:
        assert lp.kpagecount(pfn(lp.pagemap(a))) == 1


def test_closing_the_first_process_closes_every_forked_one():
    need_kernel()
    proc = LiveProcess(arena_pages=16)
    child = proc.fork()
    grandchild = child.fork()
    pids = [proc.pid, child.pid, grandchild.pid]
    proc.close()
    assert not child.alive and not grandchild.alive
    for pid in pids:
        assert gone(pid), pid
    with pytest.raises(RuntimeError, match="gone"):
        grandchild.maps()


def test_dropped_handle_is_killed_and_reaped(lp):
    pid = lp.fork().pid  # the handle is dropped at once
    gc.collect()
    assert gone(pid)
    assert lp.maps() == []


def test_forked_child_death_is_runtime_error(lp):
    a = lp.mmap(lp.arena, P, PROT_READ, ANON_FIXED)
    child = lp.fork()
    with pytest.raises(RuntimeError, match="died with signal 11 during touch"):
        child.touch(a, write=True)
    assert not child.alive
    assert gone(child.pid)
    with pytest.raises(RuntimeError, match="gone"):
        child.maps()
    child.close()
    assert len(lp.maps()) == 1  # the parent is unharmed


def test_forked_child_hang_times_out(lp):
    child = lp.fork()
    child.timeout = 0.3
    os.kill(child.pid, signal.SIGSTOP)
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match="timed out after 0.3s during maps"):
        child.maps()
    assert time.monotonic() - t0 < 5
    child.close()  # SIGKILL works on a stopped process
    assert gone(child.pid)
    assert lp.maps() == []


def test_fork_and_exit_cannot_be_batched(lp):
    with pytest.raises(RuntimeError, match="cannot be part of a run batch"):
        lp.run([{"op": "fork", "args": [1]}])
    with pytest.raises(RuntimeError, match="cannot be part of a run batch"):
        lp.run([{"op": "exit"}])
    assert lp.alive and lp.maps() == []


def test_exit_of_the_first_process():
    need_kernel()
    proc = LiveProcess(arena_pages=16)
    popen = proc._proc
    proc.exit()
    assert not proc.alive
    assert popen.returncode == 0 and proc.exit_status == 0
    assert gone(proc.pid)
    with pytest.raises(RuntimeError, match="gone"):
        proc.maps()
    proc.close()


def _fork_with(proc, action):
    """proc.fork(), but ``action(pid)`` runs on the new process before the test side
    connects to it."""
    real = proc._call
    pids = []

    def call(op, *args):
        ret = real(op, *args)
        if op == "fork":
            pids.append(ret["pid"])
            action(ret["pid"])
        return ret

    proc._call = call
    try:
        return proc.fork(), pids
    finally:
        del proc._call


def test_forked_process_dying_before_it_connects(lp):
    # Killed before or after it opened its request FIFO: the same error either way.
    pids = []
    with pytest.raises(RuntimeError, match="died with signal 9 during fork"):
        _fork_with(lp, lambda pid: (pids.append(pid), os.kill(pid, signal.SIGKILL)))
    assert gone(pids[0])
    assert lp.maps() == []


def test_forked_process_that_never_connects_times_out(lp):
    # Stopped before or after it opened its request FIFO: the same error either way.
    lp.timeout = 0.3
    pids = []
    t0 = time.monotonic()
    with pytest.raises(RuntimeError, match=r"timed out after 0.3s during fork \(connecting"):
        _fork_with(lp, lambda pid: (pids.append(pid), os.kill(pid, signal.SIGSTOP)))
    assert time.monotonic() - t0 < 5
    assert gone(pids[0])
    lp.timeout = live.DEFAULT_TIMEOUT
    assert lp.maps() == []
