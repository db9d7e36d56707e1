"""Machines for the view tests: small, deterministic, with something of everything."""

import vmwidgets as vw

RW = vw.PROT_READ | vw.PROT_WRITE
ANON = vw.MAP_PRIVATE | vw.MAP_ANONYMOUS


def family():
    """A parent and a forked child on 2 CPUs: anonymous pages shared COW and one copied,
    a zero-page read, a private file mapping with page-cache pages, a split by mprotect."""
    m = vw.Machine(ram="16M", cpus=2, swap="1M")
    p = m.spawn()
    a = p.mmap(0, 4 * 4096, RW, ANON)
    p.write(a, b"one")
    p.write(a + 4096, b"two")
    p.read(a + 2 * 4096, 1)                    # the zero page
    m.create_file("/data/f", b"file" * 3000)
    fd = p.open("/data/f")
    f = p.mmap(0, 2 * 4096, vw.PROT_READ, vw.MAP_PRIVATE, fd, 0)
    p.read(f, 1)
    c = p.fork()
    m.switch_to(1, c)
    c.write(a, b"COW")                         # the child's own copy of the first page
    p.mprotect(a + 3 * 4096, 4096, vw.PROT_READ)
    return m, p, c, a, f


def many_vmas(nprocs=3, nvmas=50):
    """``nprocs`` processes of ``nvmas`` VMAs (R and RW alternate so that none merge)."""
    m = vw.Machine(ram="32M", cpus=2)
    p = m.spawn()
    base = 0x100000000
    for i in range(nvmas - p.mm.map_count):
        addr = base + i * 2 * 4096
        p.mmap(addr, 2 * 4096, RW if i % 2 else vw.PROT_READ, ANON | vw.MAP_FIXED)
        if i % 2:
            p.write(addr, b"x")
    for _ in range(nprocs - 1):
        p.fork()
    return m, p, base
