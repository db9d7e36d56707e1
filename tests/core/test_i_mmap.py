"""i_mmap: a file page's rmap walk visits VMAs in file-offset order, ties in the order the
VMAs were added; never in an order that depends on where Python put the objects."""

import os

import vmwidgets as vw

P = vw.PAGE_SIZE
RW = vw.PROT_READ | vw.PROT_WRITE


def _file_machine():
    m = vw.Machine(ram="16M", history=False, trace=False)
    m.create_file("/data", b"x" * (4 * P))
    return m


def test_walk_in_pgoff_order_whatever_the_mapping_order():
    m = _file_machine()
    p = m.spawn()
    fd = p.open("/data", os.O_RDWR)
    # Page 2 of the file, mapped three times: from offset 2, from 1, from 0 (in that order).
    addrs = [p.mmap(0, P * (3 - off), RW, vw.MAP_SHARED, fd, off * P) for off in (2, 1, 0)]
    page_addr = [a + (2 - off) * P for a, off in zip(addrs, (2, 1, 0))]
    for a in page_addr:
        p.read(a, 1)
    pfn = p.pagemap(page_addr[0], show_pfn=True).pfn
    walked = [(vma.vm_pgoff, addr) for _, vma, addr in vw.rmap_walk(m, pfn)]
    assert walked == [(0, page_addr[2]), (1, page_addr[1]), (2, page_addr[0])]


def test_same_offset_in_the_order_added():
    for trial in range(20):        # objects land at different addresses on each trial
        junk = [object() for _ in range(trial * 7)]
        m = _file_machine()
        p = m.spawn()
        fd = p.open("/data", os.O_RDWR)
        a = p.mmap(0, P, RW, vw.MAP_SHARED, fd, 0)
        p.read(a, 1)
        kids = [p.fork() for _ in range(4)]
        for k in kids:                 # fork copies no PTE of a shared file mapping
            k.read(a, 1)
        pfn = p.pagemap(a, show_pfn=True).pfn
        order = [proc.pid for proc, _, _ in vw.rmap_walk(m, pfn)]
        assert order == [p.pid] + [k.pid for k in kids], (trial, order)
        del junk
