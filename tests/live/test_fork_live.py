"""fork, copy-on-write and exit against the live kernel: several processes driven in step.

After every step, every process's arena maps and pagemap states are compared; as root also
which (process, page) pairs share a frame, each frame's kpagecount (the mapcount) and its
ANON / ZERO_PAGE / MMAP flags.
"""

import pytest

import vmwidgets as vw
from tests.live.difftools import Twin, require_live, run_ops, run_random_family_trace

pytestmark = pytest.mark.live

P = vw.PAGE_SIZE
RW = vw.PROT_READ | vw.PROT_WRITE
FIXED = vw.MAP_PRIVATE | vw.MAP_ANONYMOUS | vw.MAP_FIXED
SHARED = vw.MAP_SHARED | vw.MAP_ANONYMOUS | vw.MAP_FIXED

# (who, op, args...): ``who`` is the index of the process (0 is the first one).
SCENARIOS = {
    "parent write after fork stays private": [
        (0, "mmap", 0, 2, RW, FIXED), (0, "write", 0), (0, "fork"), (0, "write", 0),
        (1, "read", 0), (0, "read", 0)],
    "child write copies; parent's page exclusive again": [
        (0, "mmap", 0, 2, RW, FIXED), (0, "write", 0), (0, "fork"), (1, "write", 0),
        (0, "write", 0), (1, "read", 1)],
    "read after fork shares; zero page shared": [
        (0, "mmap", 0, 4, RW, FIXED), (0, "write", 0), (0, "read", 1), (0, "fork"),
        (1, "read", 0), (1, "read", 1), (1, "read", 2), (1, "write", 1)],
    "unfaulted VMA is not copied": [(0, "mmap", 0, 4, RW, FIXED), (0, "read", 0), (0, "fork"),
                                    (1, "read", 0)],
    "forked VMA refuses a merge the parent accepts": [
        (0, "mmap", 0, 4, RW, FIXED), (0, "write", 0), (0, "fork"), (1, "write", 1),
        (1, "mmap", 4, 4, RW, FIXED), (1, "mprotect", 0, 8, vw.PROT_READ),
        (0, "mmap", 4, 4, RW, FIXED), (0, "mprotect", 0, 8, vw.PROT_READ)],
    "fork chain with exits": [
        (0, "mmap", 0, 4, RW, FIXED), (0, "write", 0), (0, "write", 1), (0, "fork"),
        (1, "fork"), (2, "write", 0), (1, "exit"), (1, "write", 1), (1, "fork"),
        (2, "write", 2)],
    "DONTFORK and WIPEONFORK": [
        (0, "mmap", 0, 2, RW, FIXED), (0, "mmap", 4, 2, RW, FIXED), (0, "write", 0),
        (0, "write", 4), (0, "madvise", 0, 2, vw.MADV_DONTFORK),
        (0, "madvise", 4, 2, vw.MADV_WIPEONFORK), (0, "fork"), (1, "read", 4), (1, "read", 0)],
    "shared anonymous memory stays shared": [
        (0, "mmap", 0, 2, RW, SHARED), (0, "write", 0), (0, "fork"), (1, "read", 0),
        (1, "write", 1), (0, "read", 1)],
    "munmap in the child, exit of the parent's sibling": [
        (0, "mmap", 0, 4, RW, FIXED | vw.MAP_POPULATE), (0, "fork"), (0, "fork"),
        (1, "munmap", 1, 2), (2, "exit"), (0, "write", 1)],
    "mprotect read-only after fork then write": [
        (0, "mmap", 0, 2, RW, FIXED), (0, "write", 0), (0, "fork"),
        (0, "mprotect", 0, 2, vw.PROT_READ), (0, "mprotect", 0, 2, RW), (0, "write", 0),
        (1, "write", 0)],
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_fork_scenario_matches_kernel(name):
    require_live()
    with Twin(arena_pages=16) as twin:
        run_ops(twin, SCENARIOS[name])


@pytest.mark.parametrize("seed", range(16))
def test_random_multiprocess_trace_matches_kernel(seed):
    require_live()
    log = run_random_family_trace(seed, n_ops=150, arena_pages=32)
    assert len(log) >= 150
