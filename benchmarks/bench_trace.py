"""Benchmark: the cost of recording kernel call trees (issue 4, "Trace").

Run from the repository root::

    python benchmarks/bench_trace.py               # 10,000 steps, 3 repetitions
    python benchmarks/bench_trace.py --steps 2000 --reps 1

It prints figures and asserts nothing. One seeded random program of steps (mmap, munmap,
mprotect, mremap, madvise, brk, reads and writes of one page or a few, fork, exit and
reclaim, over a few processes) runs on fresh machines with ``trace=True`` and
``trace=False`` (``history=False`` both times, so that the timeline's checkpoints do not
blur the comparison), and the script prints steps/s for each, the slowdown, the cost per
step, and how large the recorded trees are (calls and state changes per step). It also
times pure page hits (accesses that need no fault, where no kernel function runs) both
ways, since those are the hot path of a long run.
"""

import argparse
import os
import random
import statistics
import sys
import time

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import vmwidgets as vw  # noqa: E402

PAGE = vw.PAGE_SIZE
RW = vw.PROT_READ | vw.PROT_WRITE
PA = vw.MAP_PRIVATE | vw.MAP_ANONYMOUS
ARENA = 0x100000000000
ARENA_PAGES = 256


def make_program(n, seed):
    """``n`` steps as ``(who, call, args)``; ``who`` indexes the live processes."""
    rng = random.Random(seed)
    prog = []
    for _ in range(n):
        r = rng.random()
        pages = rng.randint(1, 8)
        addr = ARENA + rng.randrange(ARENA_PAGES - pages) * PAGE
        who = rng.randrange(4)
        if r < 0.12:
            prog.append((who, "mmap", (addr, pages * PAGE, rng.choice((RW, vw.PROT_READ)),
                                       PA | vw.MAP_FIXED)))
        elif r < 0.20:
            prog.append((who, "munmap", (addr, pages * PAGE)))
        elif r < 0.28:
            prog.append((who, "mprotect", (addr, pages * PAGE,
                                           rng.choice((RW, vw.PROT_READ, vw.PROT_NONE)))))
        elif r < 0.31:
            prog.append((who, "mremap", (addr, PAGE, 2 * PAGE, vw.MREMAP_MAYMOVE)))
        elif r < 0.35:
            prog.append((who, "madvise", (addr, pages * PAGE,
                                          rng.choice((vw.MADV_DONTNEED, vw.MADV_PAGEOUT)))))
        elif r < 0.37:
            prog.append((who, "brk", (rng.randint(0, 64),)))
        elif r < 0.62:
            prog.append((who, "write", (addr, bytes([rng.randrange(256)]) * rng.randint(1, 2 * PAGE))))
        elif r < 0.92:
            prog.append((who, "read", (addr, rng.randint(1, 2 * PAGE))))
        elif r < 0.95:
            prog.append((who, "fork", ()))
        elif r < 0.975:
            prog.append((who, "exit", ()))
        else:
            prog.append((who, "reclaim", (rng.randint(1, 16),)))
    return prog


def run(prog, trace):
    """Run the program on a fresh machine; returns the seconds it took."""
    m = vw.Machine(ram="64M", swap="64M", history=False, trace=trace)
    procs = [m.spawn()]
    start = time.perf_counter()
    for who, call, args in prog:
        p = procs[who % len(procs)]
        try:
            if call == "fork":
                if len(procs) < 4:
                    procs.append(p.fork())
                continue
            if call == "exit":
                if len(procs) > 1:
                    p.exit()
                    procs.remove(p)
                continue
            if call == "reclaim":
                m.reclaim(*args)
                continue
            if call == "brk":
                p.brk(p.mm.start_brk + args[0] * PAGE)
                continue
            getattr(p, call)(*args)
        except (OSError, vw.SegmentationFault, vw.BusError):
            pass
    return time.perf_counter() - start


def tree_sizes(prog):
    """Calls and state changes per step, from a traced run that keeps its records."""
    m = vw.Machine(ram="64M", swap="64M", trace=True)
    m.timeline.keep_records = len(prog) + 10
    procs = [m.spawn()]
    for who, call, args in prog:
        p = procs[who % len(procs)]
        try:
            if call == "fork":
                if len(procs) < 4:
                    procs.append(p.fork())
            elif call == "exit":
                if len(procs) > 1:
                    p.exit()
                    procs.remove(p)
            elif call == "reclaim":
                m.reclaim(*args)
            elif call == "brk":
                p.brk(p.mm.start_brk + args[0] * PAGE)
            else:
                getattr(p, call)(*args)
        except (OSError, vw.SegmentationFault, vw.BusError):
            pass
    calls, notes = [], []
    for rec in m.timeline.records.values():
        if rec.trace is None:
            continue
        walked = list(rec.trace.walk())
        calls.append(len(walked) - 1)
        notes.append(sum(len(c.changes) + c.dropped for _, c in walked))
    return calls, notes


def hits(trace, n):
    """Seconds for ``n`` one-byte reads of pages already mapped (no fault)."""
    m = vw.Machine(ram="64M", history=False, trace=trace)
    p = m.spawn()
    a = p.mmap(0, 64 * PAGE, RW, PA | vw.MAP_POPULATE)
    start = time.perf_counter()
    for i in range(n):
        p.read(a + (i % 64) * PAGE, 1)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=4)
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    prog = make_program(args.steps, args.seed)
    print(f"bench_trace: {args.steps} random steps (seed {args.seed}), best of {args.reps}")
    times = {}
    for trace in (False, True):
        times[trace] = min(run(prog, trace) for _ in range(args.reps))
    off, on = times[False], times[True]
    print(f"  tracing off: {off:7.3f} s  {args.steps / off:9.0f} steps/s  "
          f"{off / args.steps * 1e6:7.1f} us/step")
    print(f"  tracing on : {on:7.3f} s  {args.steps / on:9.0f} steps/s  "
          f"{on / args.steps * 1e6:7.1f} us/step")
    print(f"  slowdown with tracing: x{on / off:.2f} (+{(on - off) / args.steps * 1e6:.1f} us/step)")
    calls, notes = tree_sizes(prog)
    print(f"  tree size per step: calls median {statistics.median(calls):.0f}, "
          f"mean {statistics.mean(calls):.1f}, max {max(calls)}; state changes median "
          f"{statistics.median(notes):.0f}, mean {statistics.mean(notes):.1f}, max {max(notes)}")
    n = 20_000
    h_off = min(hits(False, n) for _ in range(args.reps))
    h_on = min(hits(True, n) for _ in range(args.reps))
    print(f"  page hits (no fault): off {h_off / n * 1e6:.2f} us, on {h_on / n * 1e6:.2f} us "
          f"per read (x{h_on / h_off:.2f})")


if __name__ == "__main__":
    main()
