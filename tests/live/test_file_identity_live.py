"""Which file mappings merge, against the live kernel: is_mergeable_vma() compares
``vma->vm_file``, the open file description (``struct file``), not the inode.

Two open(2)s of one file mapped at contiguous addresses and offsets stay two VMAs; one fd
(or a dup() of it, or the fd a fork child inherited) mapped twice merges into one. After
every step the maps lines of every process are compared with the kernel's.
"""

import os

import pytest

import vmwidgets as vw
from tests.live import difftools
from tests.live.difftools import Twin, require_live

pytestmark = pytest.mark.live

P = vw.PAGE_SIZE
R, W = vw.PROT_READ, vw.PROT_WRITE
RW = R | W
PRIV = vw.MAP_PRIVATE | vw.MAP_FIXED
SHARED = vw.MAP_SHARED | vw.MAP_FIXED
FILE_PAGES = 16


@pytest.fixture
def real_file():
    with difftools.real_file(FILE_PAGES, prefix="vmw-ident-") as path:
        yield path


def run(twin, path, ops):
    """``ops``: (who, name, *args); fds are named ("a", "b") and opened in process 0."""
    fds = {}
    for who, name, *args in ops:
        if name == "open":
            fds[args[0]] = twin.open(path, args[1])
        elif name == "dup":
            fds[args[1]] = twin.dup(fds[args[0]], who)
        elif name == "close":
            mp, lp = twin.pairs[who]
            assert mp.close(fds[args[0]]) == lp.close_fd(twin.fds[fds[args[0]]]) == 0
        elif name == "fork":
            twin.fork(who)
        elif name == "mmap":
            page, n, prot, flags, fdname, off = args
            twin.syscall("mmap", twin.base + page * P, n * P, prot, flags, fds[fdname],
                         off * P, who=who)
        elif name in ("read", "write"):
            twin.access(twin.base + args[0] * P + 5, name == "write", who=who)
        elif name == "mprotect":
            twin.syscall(name, twin.base + args[0] * P, args[1] * P, args[2], who=who)
        vw.validate(twin.m)
        twin.check()
    return [len(twin.maps(who)[1]) for who in range(len(twin.pairs))]


SCENARIOS = {
    # name: (ops, number of VMAs in the arena of each process at the end)
    "one fd mapped twice contiguously merges": ([
        (0, "open", "a", os.O_RDONLY), (0, "mmap", 0, 4, R, PRIV, "a", 0),
        (0, "mmap", 4, 4, R, PRIV, "a", 4)], [1]),
    "two fds of one file mapped contiguously stay two VMAs": ([
        (0, "open", "a", os.O_RDONLY), (0, "open", "b", os.O_RDONLY),
        (0, "mmap", 0, 4, R, PRIV, "a", 0), (0, "mmap", 4, 4, R, PRIV, "b", 4)], [2]),
    "two fds, shared mappings, stay two VMAs": ([
        (0, "open", "a", os.O_RDWR), (0, "open", "b", os.O_RDWR),
        (0, "mmap", 0, 4, RW, SHARED, "a", 0), (0, "mmap", 4, 4, RW, SHARED, "b", 4),
        (0, "write", 3), (0, "write", 4)], [2]),
    "two fds: mapping the gap with the first fd merges only with the first": ([
        (0, "open", "a", os.O_RDONLY), (0, "open", "b", os.O_RDONLY),
        (0, "mmap", 0, 2, R, PRIV, "a", 0), (0, "mmap", 4, 4, R, PRIV, "b", 4),
        (0, "mmap", 2, 2, R, PRIV, "a", 2)], [2]),
    "two fds: mprotect back does not merge across the fds": ([
        (0, "open", "a", os.O_RDONLY), (0, "open", "b", os.O_RDONLY),
        (0, "mmap", 0, 4, R, PRIV, "a", 0), (0, "mmap", 4, 4, R, PRIV, "b", 4),
        (0, "mprotect", 2, 4, vw.PROT_NONE), (0, "mprotect", 2, 4, R)], [2]),
    "a dup of the fd merges": ([
        (0, "open", "a", os.O_RDONLY), (0, "dup", "a", "d"),
        (0, "mmap", 0, 4, R, PRIV, "a", 0), (0, "mmap", 4, 4, R, PRIV, "d", 4)], [1]),
    "fork child maps the inherited fd next to an inherited VMA: merges": ([
        (0, "open", "a", os.O_RDONLY), (0, "mmap", 0, 4, R, PRIV, "a", 0), (0, "fork"),
        (1, "mmap", 4, 4, R, PRIV, "a", 4)], [1, 1]),
    "fork child maps the inherited fd next to a written (forked) private VMA: no merge": ([
        (0, "open", "a", os.O_RDONLY), (0, "mmap", 0, 4, RW, PRIV, "a", 0), (0, "write", 1),
        (0, "fork"), (1, "mmap", 4, 4, RW, PRIV, "a", 4)], [1, 2]),   # uncowed parents
    "mapping kept after close of the fd, a new open does not merge with it": ([
        (0, "open", "a", os.O_RDONLY), (0, "mmap", 0, 4, R, PRIV, "a", 0),
        (0, "close", "a"), (0, "open", "b", os.O_RDONLY),
        (0, "mmap", 4, 4, R, PRIV, "b", 4)], [2]),
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_file_identity_matches_kernel(real_file, name):
    require_live()
    ops, counts = SCENARIOS[name]
    with Twin(arena_pages=16) as twin:
        got = run(twin, real_file, ops)
    if counts is not None:
        assert got == counts
