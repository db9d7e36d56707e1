"""docs/teaching.md: its examples run, and its table of exercise kinds is complete."""

import csv
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import vmwidgets as vw
from vmwidgets.scenarios.exercises import KINDS

DOC = Path(__file__).resolve().parent.parent / "docs" / "teaching.md"


def _blocks(lang):
    return re.findall(rf"```{lang}\n(.*?)```", DOC.read_text(), re.S)


def test_kinds_table_lists_every_exercise_kind():
    listed = re.findall(r"^\| `(\w+)` \|", DOC.read_text(), re.M)
    assert sorted(listed) == sorted(KINDS)


def test_the_example_scenario_runs_as_its_notes_say(tmp_path):
    (text,) = _blocks("json")
    path = tmp_path / "swap-demo.json"
    path.write_text(text)
    sc = vw.scenarios.Scenario.load(path)
    m, procs = sc.run()                      # raises if an expect/returns is not met
    p, child = procs["p"], procs["child"]
    assert p.pagemap(0x10000000).swapped     # reclaim unmapped it from p ...
    assert child.read(0x10000000, 5) == b"hello"
    out = subprocess.run([sys.executable, "-m", "vmwidgets", "scenario", str(path)],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "p.munmap(buf+1, 4K) -> EINVAL" in out.stdout


def test_the_spreadsheet_example_checks_answers(tmp_path, capsys):
    (code,) = [b for b in _blocks("python") if "csv.DictReader" in b]
    ex = vw.exercise("cow", 17)
    with open(tmp_path / "answers.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["student", "seed", "answer"])
        w.writerow(["ada", 17, ex.answer_text()])
        w.writerow(["bob", 17, "page 0: p"])
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        exec(code, {})
    finally:
        os.chdir(cwd)
    out = capsys.readouterr().out.splitlines()
    assert out[:2] == ["ada", "  True"]
    assert out[2:4] == ["bob", "  False"] and len(out) > 4
