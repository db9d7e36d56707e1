"""brk against the live kernel: return values and the [heap] VMA, relative to start_brk.

The live child keeps malloc off the brk heap, so its break starts at start_brk with no
[heap] line; the model process is brought to the same state by shrinking its heap first.
"""

import pytest

import vmwidgets as vw
from tests.live.difftools import require_live
from vmwidgets.live import LiveProcess

pytestmark = pytest.mark.live

P = vw.PAGE_SIZE


def _relative(lines, start):
    out = []
    for line in lines:
        fields = line.split()
        lo, hi = (int(x, 16) - start for x in fields[0].split("-"))
        out.append((lo, hi, fields[1], fields[-1] if fields[-1] == "[heap]" else ""))
    return out


@pytest.mark.parametrize("case", [
    [P, P + 1, 10 * P, 3 * P + 5, -1, 0, 2 * P, 0],
    [5 * P, 5 * P - 1, 4 * P + 1, 4 * P, 7 * P, 0],
    [0x21000, 0x21000 + 17, 0x40000, 0x1000, 0],
])
def test_brk_sequence_matches_kernel(case):
    require_live()
    with LiveProcess() as lp:
        start = lp.start_brk
        assert lp.initial_brk == start
        results = lp.brk_sequence([start + off for off in case])
    m = vw.Machine()
    p = m.spawn()
    mstart = p.mm.start_brk
    p.brk(mstart)
    for off, (kret, klines) in zip(case, results):
        mret = p.brk(mstart + off)
        assert mret - mstart == kret - start, f"brk(start{off:+#x})"
        mlines = [line for line in p.proc_maps().splitlines() if line.endswith("[heap]")]
        assert _relative(mlines, mstart) == _relative(
            [line for line in klines if line.endswith("[heap]")], start)
        vw.validate(m)


def test_brk_refused_near_another_mapping():
    require_live()
    with LiveProcess() as lp:
        start = lp.start_brk
        lp.mmap(start + 20 * P, P, vw.PROT_READ, vw.MAP_PRIVATE | vw.MAP_ANONYMOUS | vw.MAP_FIXED_NOREPLACE)
        kernel = [ret - start for ret, _ in lp.brk_sequence([start + 20 * P, start + 19 * P,
                                                            start + 19 * P + 1])]
    p = vw.Machine().spawn()
    mstart = p.mm.start_brk
    p.brk(mstart)
    p.mmap(mstart + 20 * P, P, vw.PROT_READ, vw.MAP_PRIVATE | vw.MAP_ANONYMOUS | vw.MAP_FIXED_NOREPLACE)
    model = [p.brk(mstart + off) - mstart for off in (20 * P, 19 * P, 19 * P + 1)]
    assert model == kernel
