"""File mappings against the live kernel, on a real temporary file.

The file's page cache is emptied first (fsync + POSIX_FADV_DONTNEED) so the kernel starts
like the model: every page is read in by a fault, with read-around and fault-around.
After every step the maps lines (offset, device, inode, path) and the pagemap states are
compared, and at the end the file's contents (MAP_SHARED writes reach the file).
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
FILE_PAGES = 40


@pytest.fixture
def real_file():
    with difftools.real_file(FILE_PAGES, tail=b"tail", prefix="vmw-file-") as path:
        yield path


def run(twin, path, ops):
    fds = {}
    for op in ops:
        name, args = op[0], op[1:]
        if name == "open":
            fds[args[0]] = twin.open(path, args[1])
        elif name == "mmap":
            page, n, prot, flags, fdname, off = args
            twin.syscall("mmap", twin.base + page * P, n * P, prot, flags,
                         fds.get(fdname, 99), off)
        elif name in ("read", "write"):
            twin.access(twin.base + args[0] * P + 5, name == "write")
        elif name in ("mprotect", "madvise"):
            twin.syscall(name, twin.base + args[0] * P, args[1] * P, args[2])
        elif name == "munmap":
            twin.syscall(name, twin.base + args[0] * P, args[1] * P)
        vw.validate(twin.m)
        twin.check()
    # Reading the file fills the kernel's page cache (and fault-around would then map
    # more), so the contents are compared once, at the end.
    if path in twin.m.files:
        with open(path, "rb") as f:
            assert twin.m.read_file(path) == f.read(), "file contents"


SCENARIOS = {
    "private read maps page-cache pages with fault-around": [
        ("open", "f", os.O_RDONLY), ("mmap", 0, 32, R, PRIV, "f", 0), ("read", 20), ("read", 3)],
    "private write copies (do_cow_fault)": [
        ("open", "f", os.O_RDONLY), ("mmap", 0, 8, RW, PRIV, "f", 0), ("write", 2),
        ("read", 3)],
    "private read then write COWs the file page": [
        ("open", "f", os.O_RDONLY), ("mmap", 0, 8, RW, PRIV, "f", 0), ("read", 2),
        ("write", 2)],
    "offset mapping": [("open", "f", os.O_RDONLY), ("mmap", 0, 4, R, PRIV, "f", 8 * P),
                       ("read", 1)],
    "shared write reaches the file": [
        ("open", "f", os.O_RDWR), ("mmap", 0, 8, RW, SHARED, "f", 0), ("write", 1),
        ("read", 6)],
    "two shared mappings see each other's writes": [
        ("open", "f", os.O_RDWR), ("mmap", 0, 4, RW, SHARED, "f", 0),
        ("mmap", 8, 4, R, SHARED, "f", 0), ("write", 1), ("read", 9)],
    "shared read-only fd refuses PROT_WRITE": [
        ("open", "f", os.O_RDONLY), ("mmap", 0, 4, RW, SHARED, "f", 0),
        ("mmap", 0, 4, R, SHARED, "f", 0), ("mprotect", 0, 4, RW)],
    "write-only fd cannot be mapped": [("open", "f", os.O_WRONLY),
                                       ("mmap", 0, 4, R, PRIV, "f", 0)],
    "bad fd": [("mmap", 0, 4, R, PRIV, "nofd", 0)],
    "misaligned offset": [("open", "f", os.O_RDONLY), ("mmap", 0, 4, R, PRIV, "f", 100)],
    "past the end of the file is SIGBUS": [
        ("open", "f", os.O_RDONLY), ("mmap", 0, 8, R, PRIV, "f", 36 * P), ("read", 4),
        ("read", 5), ("read", 0)],
    "file VMAs split and merge back": [
        ("open", "f", os.O_RDONLY), ("mmap", 0, 8, RW, PRIV, "f", 0), ("mprotect", 2, 2, R),
        ("mprotect", 2, 2, RW), ("munmap", 3, 1)],
    "adjacent mappings of consecutive offsets merge": [
        ("open", "f", os.O_RDONLY), ("mmap", 0, 4, R, PRIV, "f", 0),
        ("mmap", 4, 4, R, PRIV, "f", 4 * P), ("mmap", 9, 4, R, PRIV, "f", 4 * P)],
    "MADV_RANDOM turns read-around off": [
        ("open", "f", os.O_RDONLY), ("mmap", 0, 32, R, PRIV, "f", 0),
        ("madvise", 0, 32, vw.MADV_RANDOM), ("read", 20), ("read", 5)],
    "MADV_DONTNEED on a private file mapping drops the COW copy": [
        ("open", "f", os.O_RDONLY), ("mmap", 0, 4, RW, PRIV, "f", 0), ("write", 1),
        ("madvise", 0, 4, vw.MADV_DONTNEED), ("read", 1)],
}


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_file_scenario_matches_kernel(real_file, name):
    require_live()
    with Twin(arena_pages=48) as twin:
        run(twin, real_file, SCENARIOS[name])
