"""Which file is "the same file" for VMA merging: the open file description.

mm/vma.c is_mergeable_vma() (6.18) refuses a merge when ``vma->vm_file != vmg->file``:
``vm_file`` is a ``struct file`` (an :class:`~vmwidgets.core.filemap.OpenFile`), made by
each open(2), shared by dup() and fork, and kept by a mapping after close(2). The inode
(:class:`~vmwidgets.core.filemap.File`) is only what the maps line shows. The same cases
run against the live kernel in tests/live/test_file_identity_live.py.
"""

import os
import pickle

import vmwidgets as vw
from tests.scenario import R, RW, P, BASE, new_process, pg, picture
from vmwidgets.core.filemap import File, OpenFile
from vmwidgets.views.narration import narrate

PRIV = vw.MAP_PRIVATE | vw.MAP_FIXED
SHARED = vw.MAP_SHARED | vw.MAP_FIXED


def setup(pages=16):
    m, p = new_process()
    m.create_file("/data", bytes(range(256)) * (pages * P // 256))
    return m, p


def arena_maps(p, pages=16):
    return [line for line in p.proc_maps().splitlines()
            if BASE <= int(line.split("-")[0], 16) < BASE + pages * P]


def told(m):
    n = len(m.timeline)
    return narrate(m.last_step, m.timeline.state(n - 1), m.timeline.state(n))


def test_each_open_is_a_new_struct_file_of_the_same_inode():
    m, p = setup()
    a, b = p.open("/data"), p.open("/data")
    fa, fb = p.files[a], p.files[b]
    assert isinstance(fa, OpenFile) and fa is not fb
    assert fa.f_inode is fb.f_inode is m.files["/data"]
    assert fa.mapping is fb.mapping is m.files["/data"].mapping
    assert (fa.path, fa.dev, fa.ino) == ("/data", m.files["/data"].dev, m.files["/data"].ino)


def test_two_opens_mapped_contiguously_stay_two_vmas():
    m, p = setup()
    a, b = p.open("/data"), p.open("/data")
    p.mmap(pg(0), 4 * P, R, PRIV, a, 0)
    p.mmap(pg(4), 4 * P, R, PRIV, b, 4 * P)
    assert picture(p, 8) == "aaaabbbb"
    lines = arena_maps(p)
    assert len(lines) == 2
    assert all(line.endswith(" /data") for line in lines)
    assert lines[1].split()[2] == "00004000"
    text = told(m)
    assert "A new VMA" in text and "was created" in text, text
    vw.validate(m)


def test_two_opens_shared_mappings_stay_two_vmas_but_share_the_page_cache():
    m, p = setup()
    a, b = p.open("/data", os.O_RDWR), p.open("/data", os.O_RDWR)
    p.mmap(pg(0), 4 * P, RW, SHARED, a, 0)
    p.mmap(pg(4), 4 * P, RW, SHARED, b, 0)          # the same file pages again
    p.write(pg(1), b"Z")
    assert p.read(pg(5), 1) == b"Z", "one inode, one page cache"
    assert picture(p, 8).lower() == "aaaabbbb"
    vw.validate(m)


def test_one_fd_mapped_twice_contiguously_merges():
    m, p = setup()
    fd = p.open("/data")
    p.mmap(pg(0), 4 * P, R, PRIV, fd, 0)
    p.mmap(pg(4), 4 * P, R, PRIV, fd, 4 * P)
    assert picture(p, 8) == "aaaaaaaa"
    assert len(arena_maps(p)) == 1
    assert "merge" in told(m).lower()
    vw.validate(m)


def test_dup_shares_the_struct_file_and_merges():
    m, p = setup()
    fd = p.open("/data")
    fd2 = p.dup(fd)
    assert fd2 != fd and p.files[fd2] is p.files[fd]
    p.mmap(pg(0), 4 * P, R, PRIV, fd, 0)
    p.mmap(pg(4), 4 * P, R, PRIV, fd2, 4 * P)
    assert picture(p, 8) == "aaaaaaaa"
    vw.validate(m)


def test_dup_of_a_closed_fd_is_ebadf():
    m, p = setup()
    try:
        p.dup(7)
    except OSError as exc:
        assert exc.errno == 9
    else:
        raise AssertionError("dup(7) succeeded")


def test_mapping_keeps_the_struct_file_after_close():
    m, p = setup()
    fd = p.open("/data")
    p.mmap(pg(0), 4 * P, R, PRIV, fd, 0)
    held = p.mm.find_vma(pg(0)).vm_file
    p.close(fd)
    assert p.mm.find_vma(pg(0)).vm_file is held
    fd = p.open("/data")                            # may reuse the number: a new struct file
    assert p.files[fd] is not held
    p.mmap(pg(4), 4 * P, R, PRIV, fd, 4 * P)
    assert picture(p, 8) == "aaaabbbb"
    vw.validate(m)


def test_fork_child_shares_the_struct_file_and_merges():
    # Live 6.18: the child's mmap of the inherited fd next to the inherited VMA merges.
    m, p = setup()
    fd = p.open("/data")
    p.mmap(pg(0), 4 * P, R, PRIV, fd, 0)
    c = p.fork()
    assert c.files[fd] is p.files[fd]
    assert c.mm.find_vma(pg(0)).vm_file is p.mm.find_vma(pg(0)).vm_file
    c.mmap(pg(4), 4 * P, R, PRIV, fd, 4 * P)
    assert picture(c, 8) == "aaaaaaaa"
    assert picture(p, 8) == "aaaa...."
    # The child's own open is another struct file: no merge.
    fd2 = c.open("/data")
    c.mmap(pg(8), 4 * P, R, PRIV, fd2, 8 * P)
    assert picture(c, 12) == "aaaaaaaabbbb"
    vw.validate(m)


def test_shared_anonymous_mappings_each_get_their_own_file():
    m, p = new_process()
    anon_shared = vw.MAP_SHARED | vw.MAP_ANONYMOUS | vw.MAP_FIXED
    p.mmap(pg(0), 2 * P, RW, anon_shared)
    p.mmap(pg(2), 2 * P, RW, anon_shared)
    a, b = p.mm.find_vma(pg(0)), p.mm.find_vma(pg(2))
    assert a is not b and a.vm_file is not b.vm_file
    assert a.vm_file.f_inode is not b.vm_file.f_inode
    assert all(line.endswith("/dev/zero (deleted)") for line in arena_maps(p))
    vw.validate(m)


def test_maps_line_comes_from_the_inode():
    m, p = setup()
    inode = m.files["/data"]
    fd = p.open("/data")
    p.mmap(pg(0), P, R, PRIV, fd, 0)
    (line,) = arena_maps(p)
    assert f" {inode.ino} " in line and line.endswith(" /data")
    assert line.split()[3] == "%02x:%02x" % inode.dev


def test_struct_files_survive_pickling():
    m, p = setup()
    a, b = p.open("/data"), p.open("/data")
    p.mmap(pg(0), 4 * P, R, PRIV, a, 0)
    m2 = pickle.loads(pickle.dumps(m))
    p2 = m2.processes[-1]
    vma = p2.mm.find_vma(pg(0))
    assert vma.vm_file is p2.files[a] and p2.files[b] is not p2.files[a]
    assert vma.vm_file.f_inode is m2.files["/data"]
    p2.mmap(pg(4), 4 * P, R, PRIV, b, 4 * P)
    p2.mmap(pg(8), 4 * P, R, PRIV, a, 8 * P)
    assert picture(p2, 12) == "aaaabbbbcccc"
    assert isinstance(m2.files["/data"], File)
    vw.validate(m2)
