"""Time the step diff and the narration (vmwidgets/views/diff.py, narration.py) at lesson
scale: 3 processes of about 50 VMAs each, with touched pages, on two CPUs.

For every step of a seeded run (mmap, write, read, mprotect, munmap, madvise, fork, exit,
thread accesses on CPU 1), it times ``step_changes(before, after, record)``,
``narrate(record, before, after, changes)`` and ``trace_view(record)`` on the timeline's
states, and prints the median, the 95th percentile and the worst of each, and of
diff + narration together (target: well under 20 ms). Getting the states themselves
(``m.timeline.state(i)``) is timed apart, as the widgets pay it anyway. Asserts nothing.

    python benchmarks/bench_narration.py [--steps 200] [--seed 1]
"""

import argparse
import gc
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import vmwidgets as vw  # noqa: E402
from vmwidgets.views import narrate, step_changes, trace_view  # noqa: E402

P = vw.PAGE_SIZE
RW = vw.PROT_READ | vw.PROT_WRITE
ANON = vw.MAP_PRIVATE | vw.MAP_ANONYMOUS
BASE = 0x100000000


def lesson_machine():
    """3 processes of about 50 VMAs (R and RW alternating, so that nothing merges)."""
    m = vw.Machine(ram="64M", cpus=2, swap="4M")
    procs = [m.spawn() for _ in range(3)]
    for p in procs:
        for i in range(50 - p.mm.map_count):
            addr = BASE + i * 4 * P
            p.mmap(addr, 4 * P, RW if i % 2 else vw.PROT_READ, ANON | vw.MAP_FIXED)
            if i % 2:
                p.write(addr, b"x")
    return m, procs


def run_steps(m, procs, steps, seed):
    rng = random.Random(seed)
    thread = procs[0].clone_thread(cpu=1)
    first = len(m.timeline)
    for _ in range(steps):
        p = rng.choice(procs)
        i = rng.randrange(40)
        addr = BASE + i * 4 * P + rng.randrange(4) * P
        what = rng.choice(["write", "write", "read", "mprotect", "munmap", "mmap", "madvise",
                           "thread"])
        try:
            if what == "write":
                p.write(addr, b"w")
            elif what == "read":
                p.read(addr, 1)
            elif what == "mprotect":
                p.mprotect(addr, P, rng.choice([vw.PROT_READ, RW]))
            elif what == "munmap":
                p.munmap(addr, P)
            elif what == "mmap":
                p.mmap(addr, P, rng.choice([vw.PROT_READ, RW]), ANON | vw.MAP_FIXED)
            elif what == "madvise":
                p.madvise(addr, P, vw.MADV_DONTNEED)
            else:
                thread.write(BASE + (i | 1) * 4 * P, b"t")
        except (OSError, vw.SegmentationFault):
            pass
    child = procs[1].fork()
    child.write(BASE + 4 * P, b"c")
    child.exit()
    return first, len(m.timeline)


def stats(name, values):
    values = sorted(values)
    p95 = values[min(len(values) - 1, int(round(0.95 * (len(values) - 1))))]
    print(f"{name:<28} median {statistics.median(values):7.2f} ms   p95 {p95:7.2f} ms   "
          f"max {values[-1]:7.2f} ms   ({len(values)} steps)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    m, procs = lesson_machine()
    first, last = run_steps(m, procs, args.steps, args.seed)
    print(f"{len(m.processes)} processes, VMAs: "
          f"{', '.join(str(p.mm.map_count) for p in m.processes)}; "
          f"timing steps {first}..{last - 1}")

    measure(m, first, last)
    print("again with the cyclic garbage collector off (the tail above is its passes, "
          "triggered by the objects the state rebuilds make):")
    gc.disable()
    try:
        measure(m, first, last)
    finally:
        gc.enable()


def measure(m, first, last):
    t_state, t_diff, t_narr, t_trace, t_both = [], [], [], [], []
    before = m.timeline.state(first)
    for i in range(first, last):
        t = time.perf_counter()
        after = m.timeline.state(i + 1)
        rec = m.timeline.record(i)
        t_state.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        ch = step_changes(before, after, rec)
        t1 = time.perf_counter()
        narrate(rec, before, after, ch)
        t2 = time.perf_counter()
        trace_view(rec)
        t3 = time.perf_counter()
        t_diff.append((t1 - t) * 1000)
        t_narr.append((t2 - t1) * 1000)
        t_trace.append((t3 - t2) * 1000)
        t_both.append((t2 - t) * 1000)
        before = after
    stats("state(i+1) + record(i)", t_state)
    stats("step_changes", t_diff)
    stats("narrate", t_narr)
    stats("trace_view", t_trace)
    stats("step_changes + narrate", t_both)


if __name__ == "__main__":
    main()
