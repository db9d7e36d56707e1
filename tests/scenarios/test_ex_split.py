"""The ``split`` exercise: deterministic, its answer right by other routes (the question's
calls replayed on a fresh machine and counted from /proc/PID/maps; the live kernel), the
worked answer accepted, and the typical mistakes named."""

import random
import re
import shutil
import subprocess
import sys

import pytest

import vmwidgets as vw
from vmwidgets.scenarios.exercises.split import _merged

P = vw.PAGE_SIZE
SEEDS = range(200)
PROT = {"PROT_NONE": 0, "PROT_READ": vw.PROT_READ, "PROT_WRITE": vw.PROT_WRITE,
        "PROT_EXEC": vw.PROT_EXEC}


def text_of(answer):
    return "\n".join(f"{i}. {r} {n}" for i, (r, n) in enumerate(answer, 1))


def find(want, seeds=range(600)):
    """The first exercise and call index for which ``want(step, exercise)`` holds."""
    for seed in seeds:
        ex = vw.exercise("split", seed)
        for i, step in enumerate(ex.steps):
            if want(step, ex):
                return ex, i
    raise AssertionError("no split exercise has a call with the property wanted")


def parse_question(question):
    """The machine set-up and calls, read back from the question text alone."""
    prot = lambda text: sum(PROT[p] for p in text.split("|"))
    setup = [(int(a, 16), int(n) * P, prot(pr)) for a, n, pr in
             re.findall(r"^  mmap\((0x[0-9a-f]+), (\d+) \* P, ([A-Z_|]+),", question, re.M)]
    calls = []
    for kind, args in re.findall(r"^  \d+\. (munmap|mprotect)\(([^)]*)\)", question, re.M):
        parts = [a.strip() for a in args.split(",")]
        call = [kind, int(parts[0], 16), int(parts[1].split("*")[0]) * P]
        if kind == "mprotect":
            call.append(prot(parts[2]))
        calls.append(tuple(call))
    limit = int(re.search(r"vm\.max_map_count = (\d+)", question).group(1))
    start = int(re.search(r"map_count = (\d+) VMAs", question).group(1))
    return setup, calls, limit, start


def maps_count(proc):
    """map_count as /proc/PID/maps shows it: every line but the [vsyscall] gate area."""
    return len([l for l in proc.proc_maps().splitlines() if l and "[vsyscall]" not in l])


# -- determinism ---------------------------------------------------------------------------------

def test_same_seed_same_exercise_and_seeds_differ():
    texts = set()
    for seed in range(10):
        a, b = vw.exercise("split", seed), vw.exercise("split", seed)
        assert a == b and a.text(answer=True) == b.text(answer=True)
        texts.add(a.question)
    assert len(texts) >= 9


# -- the answer, by other routes -------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
def test_answer_replayed_from_the_question_text(seed):
    """Replay the question's calls on a fresh machine (with history and tracing, unlike the
    generator's): errnos from the syscalls, map_count from /proc/PID/maps line counts."""
    ex = vw.exercise("split", seed)
    setup, calls, limit, start = parse_question(ex.question)
    m = vw.Machine(ram="64M")
    p = m.spawn()
    for addr, length, prot in setup:
        p.mmap(addr, length, prot, vw.MAP_PRIVATE | vw.MAP_ANONYMOUS | vw.MAP_FIXED)
    assert maps_count(p) == start == ex.start_count
    m.sysctl["vm.max_map_count"] = limit
    got = []
    for call in calls:
        try:
            getattr(p, call[0])(*call[1:])
            result = "ok"
        except OSError as exc:
            result = {12: "ENOMEM"}.get(exc.errno, exc.errno)
        got.append((result, maps_count(p)))
        vw.validate(m)
    assert got == ex.answer
    assert ex.check(text_of(ex.answer)).correct
    assert ex.check(ex.answer).correct
    assert ex.check(text_of(got)).correct


def test_the_cases_all_occur():
    seen = set()
    for seed in range(300):
        for step in vw.exercise("split", seed).steps:
            partial = step["result"] == "ENOMEM" and step["after"] != step["before"]
            seen.add((step["call"][0], step["shape"], step["result"], partial,
                      step["call"][0] == "mprotect" and _merged(step)))
    for case in [("munmap", "middle", "ENOMEM", False, False), ("munmap", "middle", "ok", False, False),
                 ("munmap", "whole", "ok", False, False), ("munmap", "span", "ok", False, False),
                 ("munmap", "head", "ok", False, False), ("munmap", "tail", "ok", False, False),
                 ("mprotect", "middle", "ok", False, False),
                 ("mprotect", "middle", "ENOMEM", False, False),
                 ("mprotect", "middle", "ENOMEM", True, False),
                 ("mprotect", "head", "ENOMEM", False, False), ("mprotect", "head", "ok", False, True),
                 ("mprotect", "whole", "ok", False, False), ("mprotect", "whole", "ok", False, True)]:
        assert case in seen, case


def test_a_failed_mprotect_keeps_its_first_split():
    ex, i = find(lambda s, ex: s["result"] == "ENOMEM" and s["after"] != s["before"])
    step = ex.steps[i]
    assert step["after"] == step["before"] + 1 == ex.limit
    assert len(step["vmas_after"]) == len(step["vmas_before"]) + 1
    perms = {v[2] for v in step["vmas_after"] if v[3] not in {w[3] for w in step["vmas_before"]}}
    assert len(perms) == 1 and "first split is not undone" in " ".join(ex.worked_answer.split())


# -- check() ------------------------------------------------------------------------------------------

def _with(ex, i, result=None, delta=None):
    """The right answer with call ``i`` changed: its result, or its map_count by ``delta``
    (later counts shifted too, as a student who counted on would)."""
    answer = [list(a) for a in ex.answer]
    if result is not None:
        answer[i][0] = result
    if delta:
        for a in answer[i:]:
            a[1] += delta
    return text_of(answer)


def test_mistake_mprotect_in_the_middle_makes_two_new_vmas():
    ex, i = find(lambda s, ex: s["call"][0] == "mprotect" and s["shape"] == "middle"
                 and s["result"] == "ok")
    fb = ex.check(_with(ex, i, delta=-1))
    assert not fb.correct and len(fb.mistakes) == 1
    assert "an mprotect in the middle of a VMA makes two new VMAs (3 pieces): map_count grows by 2" \
        in fb.mistakes[0]


def test_mistake_munmap_of_a_whole_vma_needs_no_split():
    ex, i = find(lambda s, ex: s["call"][0] == "munmap" and s["shape"] == "whole"
                 and s["before"] == ex.limit)
    fb = ex.check(_with(ex, i, result="ENOMEM"))
    assert "munmap of a whole VMA needs no split" in fb.mistakes[0]
    fb = ex.check(_with(ex, i, delta=+1))
    assert "munmap of a whole VMA removes it: map_count drops by 1" in fb.mistakes[0]


def test_mistake_munmap_hole_at_the_limit_fails_and_changes_nothing():
    ex, i = find(lambda s, ex: s["call"][0] == "munmap" and s["result"] == "ENOMEM")
    fb = ex.check(_with(ex, i, result="ok", delta=+1))
    assert ("the split would exceed max_map_count, so the call fails with ENOMEM and nothing "
            "changes") in fb.mistakes[0]
    fb = ex.check(_with(ex, i, delta=+1))
    assert "the call failed and changed nothing" in fb.mistakes[0]


def test_mistake_a_failed_mprotect_still_split_once():
    ex, i = find(lambda s, ex: s["result"] == "ENOMEM" and s["after"] != s["before"])
    fb = ex.check(_with(ex, i, delta=-1))
    assert "the second split failed, but the first one stays" in fb.mistakes[0]
    fb = ex.check(_with(ex, i, result="ok", delta=+1))
    assert "the first brings map_count to" in fb.mistakes[0]


def test_mistake_munmap_edges_and_spans_never_fail():
    for shape in ("head", "tail", "span"):
        ex, i = find(lambda s, ex: s["call"][0] == "munmap" and s["shape"] == shape
                     and s["before"] == s["after"] if shape != "span" else
                     s["call"][0] == "munmap" and s["shape"] == shape)
        fb = ex.check(_with(ex, i, result="ENOMEM"))
        assert "does not check vm.max_map_count" in fb.mistakes[0] or \
            "only for a hole inside a single VMA" in fb.mistakes[0], fb
    ex, i = find(lambda s, ex: s["call"][0] == "munmap" and s["shape"] == "head")
    fb = ex.check(_with(ex, i, delta=+1))
    assert "only trims it: map_count does not change" in fb.mistakes[0]


def test_mistake_a_merge_needs_no_new_vma():
    ex, i = find(lambda s, ex: s["call"][0] == "mprotect" and _merged(s)
                 and s["before"] == ex.limit)
    fb = ex.check(_with(ex, i, result="ENOMEM"))
    assert "merges instead of splitting" in fb.mistakes[0]


def test_mistake_mprotect_at_the_limit_fails():
    ex, i = find(lambda s, ex: s["call"][0] == "mprotect" and s["shape"] in ("head", "tail")
                 and s["result"] == "ENOMEM")
    fb = ex.check(_with(ex, i, result="ok", delta=+1))
    assert "split_vma() fails with ENOMEM and nothing changes" in fb.mistakes[0]


def test_one_mistake_is_not_counted_again_in_later_calls():
    ex, i = find(lambda s, ex: s["call"][0] == "munmap" and s["shape"] == "middle"
                 and s["result"] == "ok")
    fb = ex.check(_with(ex, i, delta=+1))       # every later count is one too high as well
    assert len(fb.mistakes) == 1 and fb.mistakes[0].startswith(f"call {i + 1} ")


def test_accepted_forms():
    ex = vw.exercise("split", 0)
    answer = ex.answer
    forms = [text_of(answer), "; ".join(f"{r} {n}" for r, n in answer),
             "\n".join(f"call {i}: {'succeeds' if r == 'ok' else 'fails'}, map_count {n}"
                       for i, (r, n) in enumerate(answer, 1)),
             [tuple(a) for a in answer], [list(a) for a in answer],
             [(0 if r == "ok" else -12, n) for r, n in answer],
             {i: a for i, a in enumerate(answer, 1)},
             [{"result": r, "map_count": n} for r, n in answer]]
    for form in forms:
        assert ex.check(form).correct, form


def test_bad_text_never_raises():
    ex = vw.exercise("split", 5)
    rng = random.Random(1)
    junk = ["", "   ", "ok", "1. ok", "ENOMEM ENOMEM", "1. maybe 3", "\x00\n\n;;;", "1.2.3",
            None, 3, 4.5, [None], [("ok",)], {"x": "y"}, [[1, 2, 3]], ("ok", "x"), [("ok", "x")]]
    junk += ["".join(rng.choice("0123456789 .;:\nokENOMEMfail-xyz") for _ in range(rng.randrange(30)))
             for _ in range(300)]
    for text in junk:
        fb = ex.check(text)
        assert isinstance(fb, vw.scenarios.exercises.Feedback) and not fb.correct or \
            fb.correct is True
        assert all(isinstance(m, str) and m for m in fb.mistakes)


def test_wrong_number_of_lines():
    ex = vw.exercise("split", 0)
    fb = ex.check(text_of(ex.answer[:-1]))
    assert not fb.correct and "give one answer per call" in fb.mistakes[0]


# -- front ends ---------------------------------------------------------------------------------------

def test_command_line():
    out = subprocess.run([sys.executable, "-m", "vmwidgets", "exercise", "split", "--seed", "3",
                          "-c"], capture_output=True, text=True, check=True).stdout
    ex = vw.exercise("split", 3)
    assert out.startswith("ARG kind split\nARG seed 3\n") and "ANSWER" in out
    assert ex.worked_answer in out


def test_exercise_widget():
    pytest.importorskip("ipywidgets")
    w = vw.widgets.ExerciseWidget("split", 3)
    w.answer.value = text_of(w.exercise.answer)
    w.check_button.click()
    assert "Correct." in w.feedback.value and w.exercise.worked_answer not in w.text()
    w.answer.value = "1. what 3"
    w.check_button.click()
    assert "Not quite." in w.feedback.value and "could not read" in w.feedback.value


# -- the live kernel -----------------------------------------------------------------------------------

_C_HELPER = r"""
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
/* argv: slack, then m:ADDR:LEN:PROT (set-up), u:ADDR:LEN (munmap), p:ADDR:LEN:PROT (mprotect).
   Fills the address space with one-page VMAs until map_count = max_map_count - slack, then
   prints "start N" and, per call, "ERRNO MAP_COUNT". */
static long count(void) {
    FILE *f = fopen("/proc/self/maps", "r");
    char buf[512];
    long n = 0;
    while (fgets(buf, sizeof buf, f))
        if (!strstr(buf, "[vsyscall]")) n++;
    fclose(f);
    return n;
}
int main(int argc, char **argv) {
    long max = 0, slack = atol(argv[1]);
    FILE *f = fopen("/proc/sys/vm/max_map_count", "r");
    if (!f || fscanf(f, "%ld", &max) != 1) return 3;
    fclose(f);
    printf("max %ld\n", max); fflush(stdout); count();
    for (int i = 2; i < argc; i++) {
        char k; unsigned long a, l; int p = 0;
        sscanf(argv[i], "%c:%lx:%lx:%d", &k, &a, &l, &p);
        if (k == 'm' && mmap((void *)a, l, p, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                             -1, 0) == MAP_FAILED) return 4;
    }
    unsigned long base = 0x200000000000UL;
    for (long n = count(); n < max - slack; n++, base += 2 * 4096)
        if (mmap((void *)base, 4096, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                 -1, 0) == MAP_FAILED) return 5;
    printf("start %ld\n", count());
    for (int i = 2; i < argc; i++) {
        char k; unsigned long a, l; int p = 0, r;
        sscanf(argv[i], "%c:%lx:%lx:%d", &k, &a, &l, &p);
        if (k == 'm') continue;
        r = k == 'u' ? munmap((void *)a, l) : mprotect((void *)a, l, p);
        printf("%d %ld\n", r ? errno : 0, count());
    }
    return 0;
}
"""


@pytest.fixture(scope="module")
def helper(tmp_path_factory):
    if not sys.platform.startswith("linux"):
        pytest.skip("needs the Linux kernel")
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("needs a C compiler to build the helper that fills the address space")
    with open("/proc/sys/vm/max_map_count") as f:
        limit = int(f.read())
    if limit > 200_000:
        pytest.skip(f"vm.max_map_count is {limit}: too many VMAs to fill a process up to it")
    d = tmp_path_factory.mktemp("split_live")
    (d / "fill.c").write_text(_C_HELPER)
    subprocess.run([cc, "-O1", "-o", str(d / "fill"), str(d / "fill.c")], check=True)
    return d / "fill"


def _live_seeds():
    """A few seeds that cover every case of the exercise."""
    chosen, seen = [], set()
    for seed in range(300):
        ex = vw.exercise("split", seed)
        cases = {(s["call"][0], s["shape"], s["result"], s["after"] - s["before"]) for s in ex.steps}
        if cases - seen:
            chosen.append(seed)
            seen |= cases
    return chosen


@pytest.mark.live
def test_the_live_kernel_agrees(helper):
    """vm.max_map_count is global, so it is not lowered here: the helper fills a real
    process with VMAs up to the kernel's limit minus the exercise's slack, then makes the
    exercise's calls and reports each errno and /proc/self/maps line count."""
    for seed in _live_seeds():
        ex = vw.exercise("split", seed)
        setup, calls, limit, start = parse_question(ex.question)
        args = [str(limit - start)] + [f"m:{a:x}:{l:x}:{p}" for a, l, p in setup]
        args += [f"u:{c[1]:x}:{c[2]:x}" if c[0] == "munmap" else f"p:{c[1]:x}:{c[2]:x}:{c[3]}"
                 for c in calls]
        run = subprocess.run([str(helper)] + args, capture_output=True, text=True, timeout=120)
        if run.returncode in (4, 5):
            pytest.skip("the helper could not place its mappings in this address space")
        assert run.returncode == 0, run
        lines = run.stdout.split("\n")
        live_start = int(lines[1].split()[1])
        live = [(int(e), int(n)) for e, n in (l.split() for l in lines[2:] if l)]
        model = [(0 if r == "ok" else 12, n) for r, n in ex.answer]
        assert [(e, n - live_start) for e, n in live] == [(e, n - start) for e, n in model], seed
