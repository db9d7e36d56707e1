"""The ``anon_vma`` exercise: deterministic, its answer right by another route (the
question's steps replayed on a fresh machine and the anon_vmas read off the rmap graph),
the worked answer accepted, and the typical mistakes named."""

import random
import re
import subprocess
import sys

import pytest

import vmwidgets as vw
import vmwidgets.views  # noqa: F401  (vw.views)
from vmwidgets.scenarios.exercises.anon_vma import _answer_text

P = vw.PAGE_SIZE
SEEDS = range(200)
PROT = {"PROT_READ": vw.PROT_READ, "PROT_WRITE": vw.PROT_WRITE, "PROT_EXEC": vw.PROT_EXEC}
ARENA = 0x10000000
FIXED = vw.MAP_PRIVATE | vw.MAP_ANONYMOUS | vw.MAP_FIXED


def find(want, seeds=range(600)):
    for seed in seeds:
        ex = vw.exercise("anon_vma", seed)
        if want(ex):
            return ex
    raise AssertionError("no anon_vma exercise has the property wanted")


def replay(question):
    """Run the question's set-up and steps on a fresh machine; return it, the processes by
    name, and the labelled VMAs as the question lists them (label, name, start, end)."""
    prot = lambda text: sum(PROT[p] for p in text.split("|"))
    m = vw.Machine(ram="64M")
    procs = {"p": m.spawn()}
    for addr, n, pr in re.findall(r"^  mmap\((0x[0-9a-f]+), (\d+) \* P, ([A-Z_|]+),", question, re.M):
        procs["p"].mmap(int(addr, 16), int(n) * P, prot(pr), FIXED)
    for line in re.findall(r"^  \d+\. (.*)$", question, re.M):
        if line == "p forks child":
            procs["child"] = procs["p"].fork()
        elif re.match(r"\w+ (writes|reads) page", line):
            who, verb, page = re.match(r"(\w+) (writes|reads) page (\d+)", line).groups()
            addr = ARENA + int(page) * P
            if verb == "writes":
                procs[who].write(addr, b"x")
            else:
                procs[who].read(addr, 1)
        else:
            who, addr, n, pr = re.match(r"(\w+): mprotect\((0x[0-9a-f]+), (\d+) \* P, ([A-Z_|]+)\)",
                                        line).groups()
            procs[who].mprotect(int(addr, 16), int(n) * P, prot(pr))
        vw.validate(m)
    labels = [(l, who, int(a, 16), int(b, 16)) for l, who, a, b in
              re.findall(r"^  ([A-Z])  (\w+) +([0-9a-f]{8})-([0-9a-f]{8}) ", question, re.M)]
    return m, procs, labels


def own_anon_vmas(machine, procs, labels):
    """label -> the VMA's own anon_vma id, from the rmap graph alone: the anon_vmas its
    chains lead to, and of those the one that is no other's parent (a forked VMA is chained
    to its parent's anon_vma and to its own, a child of it)."""
    g = vw.views.rmap_graph(machine)
    out = {}
    for label, who, start, _end in labels:
        node = f"vma:{procs[who].pid}:{start:#x}"
        avs = {v for avc in g.successors(node) if g.nodes[avc]["kind"] == "avc"
               for v in g.successors(avc)}
        parents = {g.nodes[a]["parent"] for a in avs if g.nodes[a]["parent"] != g.nodes[a]["id"]}
        leaves = [g.nodes[a]["id"] for a in avs if g.nodes[a]["id"] not in parents]
        assert len(leaves) <= 1, (label, avs)
        out[label] = leaves[0] if leaves else None
    return out


def groups_of(ids):
    groups, none = {}, []
    for label, av in ids.items():
        if av is None:
            none.append(label)
        else:
            groups.setdefault(av, []).append(label)
    return {"groups": list(groups.values()), "none": none}


# -- determinism ---------------------------------------------------------------------------------

def test_same_seed_same_exercise_and_seeds_differ():
    texts = set()
    for seed in range(10):
        a, b = vw.exercise("anon_vma", seed), vw.exercise("anon_vma", seed)
        assert a == b and a.text(answer=True) == b.text(answer=True)
        texts.add(a.question)
    assert len(texts) == 10


# -- the answer, by another route ----------------------------------------------------------------------

@pytest.mark.parametrize("seed", SEEDS)
def test_answer_replayed_from_the_question_and_read_off_the_rmap_graph(seed):
    ex = vw.exercise("anon_vma", seed)
    m, procs, labels = replay(ex.question)
    assert [l for l, *_ in labels] == list(ex.labels)
    for label, who, start, end in labels:          # the VMAs are the ones the question lists
        vma = procs[who].mm.vma_lookup(start)
        assert (vma.vm_start, vma.vm_end) == (start, end)
    ids = own_anon_vmas(m, procs, labels)
    assert groups_of(ids) == ex.answer
    assert ids == ex.ids
    assert ex.check(_answer_text(ex.answer)).correct
    assert ex.check(ex.answer).correct and ex.check(ex.ids).correct


def test_written_pages_are_filed_under_an_anon_vma_their_vma_is_chained_to():
    """rmap finds every written page: its anon_vma is one the VMA's chains lead to."""
    for seed in range(40):
        ex = vw.exercise("anon_vma", seed)
        m = ex.machine
        for label, (name, vma) in ex.labels.items():
            chained = {avc.anon_vma.id for avc in vma.anon_vma_chain}
            for addr in range(vma.vm_start, vma.vm_end, P):
                e = ex.procs[name].pagemap(addr)
                page = m.phys.pages.get(e.pfn) if e.present else None
                if page is not None and page.kind == "anon":
                    assert page.mapping.id in chained
                    assert any(v is vma for _p, v, _a in vw.rmap_walk(m, e.pfn))


def test_the_cases_all_occur():
    seen = set()
    for seed in range(300):
        w = " ".join(vw.exercise("anon_vma", seed).worked_answer.split())
        seen |= {key for key, text in [("reuse", "reused anon_vma"), ("alloc", "allocated anon_vma"),
                                       ("fork", "anon_vma_fork() gave"), ("split", "was split off"),
                                       ("merge", "(dup_anon_vma)"),
                                       ("forked", "was forked (its anon_vma_chain")]
                 if text in w}
    # (A neighbour refused for its hidden flags does not occur: every VMA written here is
    # writable, so it and any neighbour with an anon_vma both carry VM_ACCOUNT.)
    assert seen == {"reuse", "alloc", "fork", "split", "merge", "forked"}


# -- check() ------------------------------------------------------------------------------------------

def with_ids(ex, **change):
    ids = dict(ex.ids)
    ids.update(change)
    return ids


def test_mistake_anon_vma_at_mmap():
    ex = find(lambda ex: any(v is None and not _read(ex, l) for l, v in ex.ids.items()))
    label = next(l for l, v in ex.ids.items() if v is None and not _read(ex, l))
    fb = ex.check(with_ids(ex, **{label: 999}))
    assert not fb.correct and len(fb.mistakes) == 1
    assert ("a VMA gets its anon_vma at the first write fault (anon_vma_prepare), not at mmap"
            in fb.mistakes[0])


def _read(ex, label):
    name, vma = ex.labels[label]
    return any(re.match(rf"\w+ reads page (\d+) ", t) and
               vma.vm_start <= ARENA + int(t.split()[3]) * P < vma.vm_end for t in ex.steps)


def test_mistake_a_read_needs_an_anon_vma():
    ex = find(lambda ex: any(v is None and _read(ex, l) and ex.labels[l][0] == "p"
                             for l, v in ex.ids.items()))
    label = next(l for l, v in ex.ids.items() if v is None and _read(ex, l) and ex.labels[l][0] == "p")
    fb = ex.check(with_ids(ex, **{label: 999}))
    assert "a read fault maps the shared zero page and needs no anon_vma" in fb.mistakes[0]


def test_mistake_missing_the_reuse_of_a_neighbours_anon_vma():
    ex = find(lambda ex: "reused anon_vma" in ex.worked_answer
              and not any("was split off" in t for t in sum(ex.extra.values(), [])))
    group = next(g for g in ex.answer["groups"] if len(g) > 1)
    fb = ex.check(with_ids(ex, **{group[-1]: 999}))
    text = " ".join(fb.mistakes)
    assert "reused anon_vma" in text and "find_mergeable_anon_vma() found the" in text


def test_mistake_child_shares_the_parents_anon_vma():
    def pairs(ex):
        return [(c, q) for c, (n, v) in ex.labels.items() if n == "child"
                for q, (m, w) in ex.labels.items()
                if m == "p" and w.vm_start == v.vm_start and ex.ids[q] is not None
                and len(v.anon_vma_chain) == 2]
    ex = find(lambda ex: pairs(ex))
    child, parent = pairs(ex)[0]
    fb = ex.check(with_ids(ex, **{child: ex.ids[parent]}))
    assert any("after fork the child's VMA gets its own anon_vma chained to the parent's" in m
               for m in fb.mistakes)
    assert f"chained to {ex.ids[child]}, {ex.ids[parent]}" in ex.worked_answer


def test_mistake_split_pieces_keep_one_anon_vma():
    ex = find(lambda ex: any("was split off" in t for t in sum(ex.extra.values(), []))
              and any(len(g) > 1 for g in ex.answer["groups"]))
    for group in ex.answer["groups"]:
        if len(group) < 2:
            continue
        fb = ex.check(with_ids(ex, **{group[1]: 999}))
        if any("__split_vma() leaves the same anon_vma on both pieces" in m for m in fb.mistakes):
            return
    raise AssertionError("no split message")


def test_mistake_lumping_separate_anon_vmas():
    ex = find(lambda ex: len(ex.answer["groups"]) >= 2
              and all(n == "p" for n, _ in ex.labels.values()))
    a, b = ex.answer["groups"][0][0], ex.answer["groups"][1][0]
    fb = ex.check(with_ids(ex, **{b: ex.ids[a]}))
    assert any("have different anon_vmas" in m and "got its own at step" in m for m in fb.mistakes)


def test_accepted_forms():
    ex = find(lambda ex: ex.answer["none"] and any(len(g) > 1 for g in ex.answer["groups"]))
    groups, none = ex.answer["groups"], ex.answer["none"]
    forms = [_answer_text(ex.answer), "; ".join(" ".join(g) for g in groups) + "; none: " + " ".join(none),
             "\n".join(", ".join(g).lower() for g in groups) + "\nNONE " + ",".join(none),
             "\n".join(" and ".join(g) + " share anon_vma" for g in groups)
             + "\n" + " ".join(none) + " has none",
             ex.answer, ex.ids, {k: (None if v is None else f"av{v}") for k, v in ex.ids.items()}]
    for form in forms:
        assert ex.check(form).correct, form


def test_the_briefs_example_wording():
    ex = find(lambda ex: list(ex.labels) == ["A", "B", "C"]
              and ex.answer == {"groups": [["A", "B"]], "none": ["C"]})
    assert ex.check("VMA A and B share anon_vma 1; C has none").correct


def test_bad_text_never_raises():
    ex = vw.exercise("anon_vma", 5)
    rng = random.Random(2)
    junk = ["", " ", "none", "none:", "A A", "Z", "A; A", "hello", "a-b-c", "\x00", None, 7, 2.5,
            [None], [["A", "A"]], {"groups": "A"}, {"groups": [["Q"]]}, {5: 1}, [[1, 2]], ["A", 3]]
    junk += ["".join(rng.choice("ABCDEFGZ ;:\nnone,xyz_12") for _ in range(rng.randrange(25)))
             for _ in range(300)]
    for text in junk:
        fb = ex.check(text)
        assert fb.correct in (True, False)
        assert all(isinstance(m, str) and m for m in fb.mistakes)


def test_unplaced_vmas_are_named():
    ex = vw.exercise("anon_vma", 0)
    fb = ex.check(" ".join(ex.answer["groups"][0]))
    missing = [l for l in ex.labels if l not in ex.answer["groups"][0]]
    if missing:
        assert f"you did not place {', '.join(missing)}" in fb.mistakes[-1]


# -- front ends ---------------------------------------------------------------------------------------

def test_command_line():
    out = subprocess.run([sys.executable, "-m", "vmwidgets", "exercise", "anon_vma", "--seed", "3",
                          "-c"], capture_output=True, text=True, check=True).stdout
    ex = vw.exercise("anon_vma", 3)
    assert out.startswith("ARG kind anon_vma\nARG seed 3\n") and ex.worked_answer in out


def test_exercise_widget():
    pytest.importorskip("ipywidgets")
    w = vw.widgets.ExerciseWidget("anon_vma", 3)
    w.answer.value = _answer_text(w.exercise.answer)
    w.check_button.click()
    assert "Correct." in w.feedback.value and w.exercise.worked_answer not in w.text()
    w.answer.value = "A B C D E F G H I J K"
    w.check_button.click()
    assert "Not quite." in w.feedback.value
