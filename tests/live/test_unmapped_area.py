"""Address choice against the live kernel: where does a mapping without MAP_FIXED land?

The child reads its own /proc/self/maps and calls mmap at once (``mmap_probe``); the model
is given exactly that layout and must choose the same address: the highest gap below
mmap_base that fits (stack guard gap included), a hint when it is free, 2 MiB alignment for
anonymous lengths that are multiples of 2 MiB.
"""

import random

import pytest

import vmwidgets as vw
from vmwidgets.core.mm_types import VmAreaStruct
from tests.live.difftools import require_live
from vmwidgets.live import LiveProcess

pytestmark = pytest.mark.live

P = vw.PAGE_SIZE
ANON = vw.MAP_PRIVATE | vw.MAP_ANONYMOUS


def model_from_maps(text):
    """A model process whose VMAs are exactly the ones listed in a maps text."""
    m = vw.Machine()
    p = m.spawn()
    for vma in list(p.mm.mm_mt):
        p.mm.remove(vma)
    for line in text.splitlines():
        fields = line.split()
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if start >= vw.core.flags.TASK_SIZE:
            continue  # [vsyscall] is not a VMA
        perms = fields[1]
        flags = ((vw.VM_READ if perms[0] == "r" else 0) | (vw.VM_WRITE if perms[1] == "w" else 0)
                 | (vw.VM_EXEC if perms[2] == "x" else 0) | vw.VM_MAYREAD | vw.VM_MAYWRITE)
        if line.endswith("[stack]"):
            flags |= vw.VM_GROWSDOWN
        p.mm.insert(VmAreaStruct(p.mm, start, end, flags, start >> 12))
    return p


def test_spawn_layout_constants_match_a_no_aslr_process():
    require_live()
    with LiveProcess(no_aslr=True) as lp:
        lines = lp.maps_text().splitlines()
    p = vw.Machine().spawn()
    model = p.proc_maps().splitlines()
    stack = [line for line in lines if line.endswith("[stack]")]
    assert stack and stack[0] == [m for m in model if m.endswith("[stack]")][0]
    assert lines[-1] == model[-1], "[vsyscall] line"
    # mmap_base: the dynamic loader sits right below it in a no-ASLR process.
    ld_end = max(int(line.split()[0].split("-")[1], 16) for line in lines if "ld-linux" in line)
    assert ld_end == p.mm.mmap_base
    vdso = [line.split()[0] for line in model if line.endswith(("[vvar]", "[vdso]"))]
    assert len(vdso) == 2


@pytest.mark.parametrize("seed", range(3))
def test_mmap_without_fixed_lands_where_the_kernel_puts_it(seed):
    require_live()
    rng = random.Random(seed)
    with LiveProcess(no_aslr=True) as lp:
        made = []
        for step in range(40):
            if made and rng.random() < 0.3:
                addr, length = made.pop(rng.randrange(len(made)))
                lp.munmap(addr, length)
                continue
            length = rng.choice([P, 2 * P, 3 * P, 16 * P, 100 * P, 512 * P, 1024 * P, 1500 * P])
            prot = rng.choice([vw.PROT_READ, vw.PROT_READ | vw.PROT_WRITE])
            hint = 0
            if rng.random() < 0.2 and made:
                hint = made[-1][0] + made[-1][1] + rng.choice([0, P, 1])
            text, got = lp.mmap_probe(hint, length, prot, ANON)
            p = model_from_maps(text)
            want = p.mmap(hint, length, prot, ANON)
            assert want == got, (f"step {step}: mmap(hint={hint:#x}, {length:#x}) kernel "
                                 f"{got:#x}, model {want:#x}")
            made.append((got, length))
