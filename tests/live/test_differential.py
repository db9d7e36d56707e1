"""The live kernel is the oracle: the same operations on the model and on a real child
process, compared after every step (return value or errno, the arena's /proc/PID/maps
lines, and the pagemap state of every arena page; as root also which pages share a frame,
kpagecount and the ANON / ZERO_PAGE / MMAP kpageflags).

Skips with the reason when the live kernel cannot be used (not Linux x86-64, no /proc).
"""

import pytest

import vmwidgets as vw
from tests.live.difftools import Twin, require_live, run_ops, run_random_trace

pytestmark = pytest.mark.live

P = vw.PAGE_SIZE
R, W, X = vw.PROT_READ, vw.PROT_WRITE, vw.PROT_EXEC
RW = R | W
ANON = vw.MAP_PRIVATE | vw.MAP_ANONYMOUS
FIXED = ANON | vw.MAP_FIXED
SHARED = vw.MAP_SHARED | vw.MAP_ANONYMOUS | vw.MAP_FIXED
MOVE = vw.MREMAP_MAYMOVE | vw.MREMAP_FIXED

# Each scenario: (op, page or address arguments...). Pages are arena page numbers.
SCENARIOS = {
    "new range merges with prev": [("mmap", 0, 4, RW, FIXED), ("mmap", 4, 2, RW, FIXED)],
    "new range merges with next": [("mmap", 4, 4, RW, FIXED), ("mmap", 2, 2, RW, FIXED)],
    "new range fills a hole": [("mmap", 0, 2, RW, FIXED), ("mmap", 4, 2, RW, FIXED),
                               ("mmap", 2, 2, RW, FIXED)],
    "MAP_NORESERVE is a hidden flag": [("mmap", 0, 4, RW, FIXED | vw.MAP_NORESERVE),
                                       ("mmap", 4, 4, RW, FIXED)],
    "MAP_STACK sets VM_NOHUGEPAGE": [("mmap", 0, 4, RW, FIXED | vw.MAP_STACK),
                                     ("mmap", 4, 4, RW, FIXED)],
    "mprotect splits in three and merges back": [
        ("mmap", 0, 8, RW, FIXED), ("mprotect", 2, 3, R), ("mprotect", 2, 3, RW)],
    "mprotect head merges left": [("mmap", 0, 4, R, FIXED), ("mmap", 4, 4, RW, FIXED),
                                  ("mprotect", 4, 2, R)],
    "mprotect tail merges right": [("mmap", 0, 4, RW, FIXED), ("mmap", 4, 4, R, FIXED),
                                   ("mprotect", 2, 2, R)],
    "mprotect whole middle merges both": [
        ("mmap", 0, 4, R, FIXED), ("mmap", 4, 4, RW, FIXED), ("mmap", 8, 4, R, FIXED),
        ("mprotect", 4, 4, R)],
    "RW to R unfaulted then fresh R merges": [
        ("mmap", 0, 4, RW, FIXED), ("mprotect", 0, 4, R), ("mmap", 4, 4, R, FIXED)],
    "RW to R faulted keeps VM_ACCOUNT": [
        ("mmap", 0, 4, RW, FIXED), ("write", 0), ("mprotect", 0, 4, R),
        ("mmap", 4, 4, R, FIXED)],
    "R to RW then fresh RW merges": [
        ("mmap", 0, 4, R, FIXED), ("mprotect", 0, 4, RW), ("mmap", 4, 4, RW, FIXED)],
    "fact sheet: mprotect halves, write, mprotect": [
        ("mmap", 0, 10, RW, FIXED), ("mprotect", 0, 5, R), ("write", 5), ("mprotect", 5, 5, R)],
    "faulted merges with unfaulted (6.16+)": [
        ("mmap", 0, 10, RW, FIXED), ("mprotect", 0, 5, RW | X), ("write", 5),
        ("mprotect", 5, 5, RW | X)],
    "adjacent mmap after a fault merges and shares the anon_vma": [
        ("mmap", 0, 4, RW, FIXED), ("write", 0), ("mmap", 4, 4, RW, FIXED), ("write", 5),
        ("mprotect", 0, 8, R), ("mprotect", 0, 8, RW)],
    "fault reuses the neighbour's anon_vma (R/W/X ignored)": [
        ("mmap", 0, 4, RW, FIXED), ("mmap", 4, 4, RW | X, FIXED), ("write", 0), ("write", 4),
        ("mprotect", 4, 4, RW)],
    "separately faulted VMAs never merge": [
        ("mmap", 0, 4, RW, FIXED), ("write", 0), ("mmap", 5, 4, RW, FIXED), ("write", 5),
        ("mmap", 4, 1, RW, FIXED), ("mprotect", 0, 9, R), ("mprotect", 0, 9, RW)],
    "munmap punches a hole": [("mmap", 0, 8, RW, FIXED | vw.MAP_POPULATE), ("munmap", 2, 3)],
    "munmap of nothing succeeds": [("munmap", 0, 4)],
    "MAP_FIXED replaces part of a VMA": [
        ("mmap", 0, 8, RW, FIXED), ("write", 3), ("mmap", 2, 3, R, FIXED)],
    "MAP_FIXED_NOREPLACE refuses overlap": [
        ("mmap", 0, 4, RW, FIXED), ("mmap", 2, 4, RW, ANON | vw.MAP_FIXED_NOREPLACE)],
    "hint honoured when free": [("mmap", 0, 4, RW, ANON)],
    "read faults map the zero page": [("mmap", 0, 4, RW, FIXED), ("read", 0), ("read", 1),
                                      ("write", 1)],
    "write to the zero page COWs": [("mmap", 0, 2, RW, FIXED), ("read", 0), ("write", 0)],
    "MAP_POPULATE on read-only maps zero pages": [("mmap", 0, 4, R, FIXED | vw.MAP_POPULATE)],
    "PROT_NONE keeps pages": [("mmap", 0, 4, RW, FIXED), ("write", 0), ("mprotect", 0, 4, 0),
                              ("read", 0), ("mprotect", 0, 4, R), ("read", 0)],
    "write-only mapping is readable": [("mmap", 0, 2, W, FIXED), ("read", 0)],
    "exec-only mapping is readable": [("mmap", 0, 2, X, FIXED), ("read", 0)],
    "segfaults": [("read", 0), ("mmap", 0, 2, R, FIXED), ("write", 0), ("mprotect", 0, 2, 0),
                  ("read", 1)],
    "DONTNEED zaps and reads back zeroes": [
        ("mmap", 0, 4, RW, FIXED), ("write", 1), ("madvise", 0, 4, vw.MADV_DONTNEED),
        ("read", 1)],
    "DONTNEED over a hole": [("mmap", 0, 4, RW, FIXED | vw.MAP_POPULATE),
                             ("madvise", 0, 6, vw.MADV_DONTNEED)],
    "madvise flags split and merge": [
        ("mmap", 0, 8, RW, FIXED), ("madvise", 2, 2, vw.MADV_DONTFORK),
        ("madvise", 2, 2, vw.MADV_DOFORK), ("madvise", 4, 4, vw.MADV_WIPEONFORK),
        ("madvise", 0, 8, vw.MADV_KEEPONFORK), ("madvise", 1, 2, vw.MADV_RANDOM)],
    "MADV_POPULATE_WRITE on read-only": [("mmap", 0, 4, R, FIXED),
                                         ("madvise", 0, 4, vw.MADV_POPULATE_WRITE)],
    "MADV_POPULATE_READ": [("mmap", 0, 4, RW, FIXED), ("madvise", 0, 4, vw.MADV_POPULATE_READ)],
    "MADV_FREE keeps pages until reclaim": [
        ("mmap", 0, 4, RW, FIXED | vw.MAP_POPULATE), ("madvise", 0, 4, vw.MADV_FREE),
        ("read", 0)],
    "mremap grows in place": [("mmap", 0, 2, RW, FIXED), ("mremap", 0, 2, 4, 0, 0)],
    "mremap grows in place and merges with next": [
        ("mmap", 0, 2, RW, FIXED), ("mmap", 4, 2, RW, FIXED), ("mremap", 0, 2, 4, 0, 0)],
    "mremap blocked without MAYMOVE": [("mmap", 0, 2, RW, FIXED), ("mmap", 2, 1, R, FIXED),
                                       ("mremap", 0, 2, 4, 0, 0)],
    "mremap shrink": [("mmap", 0, 4, RW, FIXED | vw.MAP_POPULATE), ("mremap", 0, 4, 1, 0, 0)],
    "mremap of a hole": [("mremap", 0, 1, 1, 0, 0), ("mremap", 0, 2, 1, 0, 0)],
    "mremap unfaulted moves and merges": [
        ("mmap", 0, 4, RW, FIXED), ("mmap", 8, 4, RW, FIXED), ("mremap", 0, 4, 4, MOVE, 4)],
    "mremap faulted moves keeping pgoff": [
        ("mmap", 0, 4, RW, FIXED), ("write", 1), ("mmap", 8, 4, RW, FIXED),
        ("mremap", 0, 4, 4, MOVE, 4), ("read", 5)],
    "mremap faulted moves back and merges": [
        ("mmap", 0, 8, RW, FIXED), ("write", 2), ("mremap", 2, 2, 2, MOVE, 10),
        ("mremap", 10, 2, 2, MOVE, 2)],
    "mremap moves two VMAs at once (6.17+)": [
        ("mmap", 0, 2, RW, FIXED), ("mmap", 2, 2, R, FIXED), ("write", 0),
        ("mremap", 0, 4, 4, MOVE, 8)],
    "mremap move where the target splits a later source VMA": [
        ("mmap", 0, 12, RW, FIXED), ("mprotect", 1, 1, 0), ("write", 2),
        ("mremap", 1, 3, 3, MOVE, 4), ("read", 5)],
    "mremap FIXED onto overlap": [("mmap", 0, 4, RW, FIXED), ("mremap", 0, 4, 4, MOVE, 2)],
    "mremap DONTUNMAP": [("mmap", 0, 4, RW, FIXED), ("write", 0),
                         ("mremap", 0, 4, 4, MOVE | vw.MREMAP_DONTUNMAP, 8), ("read", 0)],
    "mremap FIXED grows while moving": [("mmap", 0, 2, RW, FIXED), ("write", 0),
                                        ("mremap", 0, 2, 4, MOVE, 8)],
    "shared anonymous memory": [("mmap", 0, 4, RW, SHARED), ("write", 0), ("read", 1),
                                ("mprotect", 0, 2, R), ("mmap", 4, 2, RW, SHARED)],
    "MAP_GROWSDOWN": [("mmap", 8, 4, RW, FIXED | vw.MAP_GROWSDOWN), ("write", 9)],
    "MAP_GROWSDOWN grows on an access below it": [
        ("mmap", 8, 4, RW, FIXED | vw.MAP_GROWSDOWN), ("write", 6), ("read", 3)],
    "MADV_HUGEPAGE / NOHUGEPAGE split and merge": [
        ("mmap", 0, 8, RW, FIXED), ("madvise", 2, 2, vw.MADV_HUGEPAGE),
        ("madvise", 2, 4, vw.MADV_NOHUGEPAGE), ("madvise", 0, 8, vw.MADV_NOHUGEPAGE)],
    "MADV_MERGEABLE sets a hidden flag": [
        ("mmap", 0, 8, RW, FIXED), ("madvise", 0, 4, vw.MADV_MERGEABLE),
        ("mmap", 8, 2, RW, FIXED), ("madvise", 0, 4, vw.MADV_UNMERGEABLE)],
    "MADV_DONTDUMP on a shared mapping": [("mmap", 0, 4, RW, SHARED),
                                          ("madvise", 1, 2, vw.MADV_DONTDUMP)],
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_scenario_matches_kernel(name):
    require_live()
    with Twin(arena_pages=16) as twin:
        run_ops(twin, SCENARIOS[name])


# Raw calls whose errno (or success) must match, each in a fresh pair of processes.
# Addresses are offsets from the arena base unless marked absolute with "abs".
ERRNO_CASES = {
    "mmap length 0": [("mmap", 0, 0, RW, FIXED)],
    "mmap huge length": [("mmap", 0, (1 << 64) - P, RW, ANON)],
    "mmap neither shared nor private": [("mmap", 0, P, RW, vw.MAP_ANONYMOUS | vw.MAP_FIXED)],
    "mmap shared and private on anon": [("mmap", 0, P, RW, vw.MAP_SHARED_VALIDATE
                                         | vw.MAP_ANONYMOUS | vw.MAP_FIXED)],
    "mmap fixed unaligned": [("mmap", 1, P, RW, FIXED)],
    "mmap unaligned offset": [("mmap", 0, P, RW, FIXED, -1, 1)],
    "mmap bad fd": [("mmap", 0, P, RW, vw.MAP_PRIVATE | vw.MAP_FIXED, 999, 0)],
    "mmap fixed past user space": [("mmap", "abs", (1 << 47) - P, 2 * P, RW, FIXED)],
    "mmap growsdown shared": [("mmap", 0, P, RW, SHARED | vw.MAP_GROWSDOWN)],
    "munmap unaligned": [("munmap", 1, P)],
    "munmap length 0": [("munmap", 0, 0)],
    "munmap odd length": [("mmap", 0, 4 * P, RW, FIXED), ("munmap", 0, P + 1)],
    "munmap past user space": [("munmap", 0, 1 << 62)],
    "mprotect unaligned": [("mprotect", 1, P, R)],
    "mprotect length 0 on a hole": [("mprotect", 0, 0, R)],
    "mprotect bad prot": [("mmap", 0, P, RW, FIXED), ("mprotect", 0, P, 0x10)],
    "mprotect PROT_SEM is allowed": [("mmap", 0, P, RW, FIXED), ("mprotect", 0, P, R | 8)],
    "mprotect GROWSDOWN on normal VMA": [("mmap", 0, P, RW, FIXED),
                                         ("mprotect", 0, P, R | vw.PROT_GROWSDOWN)],
    "mprotect GROWSDOWN and GROWSUP": [("mprotect", 0, P, R | vw.PROT_GROWSDOWN
                                       | vw.PROT_GROWSUP)],
    "mprotect length 1": [("mmap", 0, 2 * P, RW, FIXED), ("mprotect", 0, 1, R)],
    "mprotect wraps": [("mprotect", 0, (1 << 64) - P, R)],
    "mprotect start in hole": [("mmap", 1, P, RW, FIXED), ("mprotect", 0, 2 * P, R)],
    "madvise bad advice": [("madvise", 0, P, 12345)],
    "madvise unaligned": [("madvise", 1, P, vw.MADV_DONTNEED)],
    "madvise length 0": [("madvise", 0, 0, vw.MADV_DONTNEED)],
    "madvise on a hole": [("madvise", 0, P, vw.MADV_DONTNEED)],
    "madvise HWPOISON without CONFIG_MEMORY_FAILURE": [("mmap", 0, P, RW, FIXED),
                                                      ("madvise", 0, P, vw.MADV_HWPOISON)],
    "madvise WIPEONFORK on shared": [("mmap", 0, P, RW, SHARED),
                                     ("madvise", 0, P, vw.MADV_WIPEONFORK)],
    "madvise FREE on shared": [("mmap", 0, P, RW, SHARED), ("madvise", 0, P, vw.MADV_FREE)],
    "mremap bad flags": [("mremap", 0, P, P, 8, 0)],
    "mremap unaligned": [("mremap", 1, P, P, 0, 0)],
    "mremap new length 0": [("mmap", 0, P, RW, FIXED), ("mremap", 0, P, 0, 0, 0)],
    "mremap FIXED without MAYMOVE": [("mmap", 0, P, RW, FIXED),
                                     ("mremap", 0, P, P, vw.MREMAP_FIXED, 8 * P)],
    "mremap DONTUNMAP resize": [("mmap", 0, P, RW, FIXED),
                                ("mremap", 0, P, 2 * P, MOVE | vw.MREMAP_DONTUNMAP, 8 * P)],
    "mremap old length 0 private": [("mmap", 0, P, RW, FIXED), ("mremap", 0, 0, P, MOVE, 8 * P)],
    "mremap old length 0 shared duplicates": [
        ("mmap", 0, 2 * P, RW, SHARED), ("mremap", P, 0, P, MOVE, 8 * P),
        ("mremap", 0, 0, 2 * P, MOVE, 12 * P)],
    "mremap crosses VMA end": [("mmap", 0, P, RW, FIXED), ("mmap", P, P, R, FIXED),
                               ("mremap", 0, 2 * P, 3 * P, 0, 0)],
    "mremap FIXED unaligned target": [("mmap", 0, P, RW, FIXED), ("mremap", 0, P, P, MOVE, 8 * P + 1)],
    "mremap shrink across VMAs": [("mmap", 0, P, RW, FIXED), ("mmap", P, P, R, FIXED),
                                  ("mremap", 0, 2 * P, P, 0, 0)],
    "mremap move with a gap at the start": [("mmap", P, P, RW, FIXED),
                                            ("mremap", 0, 2 * P, 2 * P, MOVE, 8 * P)],
    "mremap move with a gap in the middle": [("mmap", 0, P, RW, FIXED), ("mmap", 2 * P, P, R, FIXED),
                                             ("mremap", 0, 3 * P, 3 * P, MOVE, 8 * P)],
}


def _raw(twin, op):
    name, args = op[0], list(op[1:])
    if args and args[0] == "abs":
        args = args[1:]
    else:
        args[0] = twin.base + args[0]
    if name == "mremap" and args[3] & (vw.MREMAP_FIXED | vw.MREMAP_DONTUNMAP):
        args[4] = twin.base + args[4]
    return name, args


@pytest.mark.parametrize("name", sorted(ERRNO_CASES))
def test_errno_matches_kernel(name):
    require_live()
    with Twin(arena_pages=16) as twin:
        for op in ERRNO_CASES[name]:
            twin.syscall(*[_raw(twin, op)[0]] + _raw(twin, op)[1])
            vw.validate(twin.m)
            twin.check()


def test_hint_inside_stack_guard_gap_is_not_honoured():
    """A hint within 1 MiB (stack_guard_gap) below a MAP_GROWSDOWN VMA is refused: both the
    model and the kernel place the mapping elsewhere (near their own mmap_base)."""
    require_live()
    with Twin(arena_pages=1024) as twin:
        stack = twin.base + 600 * P
        twin.syscall("mmap", stack, 4 * P, RW, FIXED | vw.MAP_GROWSDOWN)
        twin.check()
        for hint_page, honoured in ((600 - 200, False), (600 - 256 - 4, True)):
            hint = twin.base + hint_page * P
            got = twin.syscall("mmap", hint, 4 * P, RW, ANON)
            assert (got.get("ret") == hint) == honoured, (hint_page, got)
            twin.check()


@pytest.mark.parametrize("seed", range(40))
def test_random_trace_matches_kernel(seed):
    """Seeded random traces of every syscall and access; compared after every op."""
    require_live()
    log = run_random_trace(seed, n_ops=200, arena_pages=48)
    assert len(log) >= 200
