"""``python -m vmwidgets``: exercises in the OSTEP style and scenarios, run as a user would."""

import json
import subprocess
import sys

import pytest

import vmwidgets as vw


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "vmwidgets", *args], capture_output=True,
                          text=True, cwd=cwd, timeout=60)


def test_exercise_list():
    out = cli("exercise", "--list")
    assert out.returncode == 0
    assert [line.split()[0] for line in out.stdout.splitlines()] == list(vw.scenarios.exercises.KINDS)


def test_exercise_echoes_parameters_then_the_question():
    out = cli("exercise", "translate", "--seed", "3")
    assert out.returncode == 0, out.stderr
    ex = vw.exercise("translate", 3)
    lines = out.stdout.splitlines()
    assert lines[:2] == ["ARG kind translate", "ARG seed 3"]
    assert lines[:len(ex.params)] == ex.params_text().splitlines()
    assert ex.question in out.stdout and "ANSWER" not in out.stdout
    assert "Run with -c" in out.stdout


def test_exercise_with_the_answer_short_options():
    out = cli("exercise", "cow", "-s", "5", "-c")
    assert out.returncode == 0, out.stderr
    assert out.stdout == vw.exercise("cow", 5).text(answer=True) + "\n"


def test_exercise_check_a_students_answer(tmp_path):
    """A teacher checks handed-in answers: the feedback printed, exit status 0 or 1."""
    from vmwidgets.scenarios.exercises.base import _line_text
    ex = vw.exercise("maps", 4)
    right = tmp_path / "right.txt"
    right.write_text("\n".join(_line_text(line) for line in ex.answer) + "\n")
    out = cli("exercise", "maps", "-s", "4", "--check", str(right))
    assert (out.returncode, out.stdout) == (0, "maps seed 4: Correct.\n"), out.stderr
    wrong = "\n".join(_line_text(line) for line in ex.answer[1:])
    out = subprocess.run([sys.executable, "-m", "vmwidgets", "exercise", "maps", "-s", "4",
                          "--check", "-"], input=wrong, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stdout == f"maps seed 4: {ex.check(wrong)}\n"
    assert "missing the line" in out.stdout
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    out = cli("exercise", "maps", "-s", "4", "--check", str(empty))
    assert (out.returncode, out.stdout) == (1, "maps seed 4: the answer is empty\n")


@pytest.mark.parametrize("args, message", [
    (["exercise", "maps", "--check", "/no/such/answer.txt"], "cannot read /no/such/answer.txt"),
    (["exercise", "tlbx", "-s", "1"], "invalid choice: 'tlbx'"),
    (["exercise", "maps", "-s", "-2"], "invalid seed '-2': it must be >= 0"),
    (["exercise", "maps", "--seed", "seven"], "invalid seed 'seven'"),
    (["exercise"], "give a KIND (or --list)"),
    (["scenario", "merge-prve"], "no scenario named 'merge-prve'; did you mean merge-prev"),
    (["scenario"], "give a NAME (or --list)"),
    (["scenario", "/no/such/file.json"], "cannot read /no/such/file.json"),
    ([], "the following arguments are required: COMMAND"),
])
def test_bad_arguments_are_argparse_errors(args, message):
    out = cli(*args)
    assert out.returncode == 2
    assert message in out.stderr and "usage:" in out.stderr
    assert "Traceback" not in out.stderr


def test_scenario_list_and_run():
    out = cli("scenario", "--list")
    assert out.returncode == 0
    assert [line.split()[0] for line in out.stdout.splitlines()] == vw.scenarios.names()
    out = cli("scenario", "merge-prev")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    assert text.startswith("merge-prev: A new mapping merges with the VMA before it\n")
    assert "[2] p.mmap(0x100000004000, 8K, rw, private|anonymous|fixed) = 0x100000004000" in text
    after = text.split("[2] p.mmap")[1]
    assert "+ 100000000000-100000006000 rw-p" in after and "- 100000000000-100000004000" in after


def test_scenario_json_and_files(tmp_path):
    out = cli("scenario", "cow-chain", "--json")
    assert out.returncode == 0
    assert vw.scenarios.Scenario.from_json(out.stdout) == vw.scenarios.get("cow-chain")
    path = tmp_path / "mine.json"
    data = json.loads(out.stdout)
    data["ops"][-1]["expect"] = "ENOMEM"          # the last write succeeds: a failed check
    path.write_text(json.dumps(data))
    out = cli("scenario", str(path))
    assert out.returncode == 1
    assert "scenario failed: cow-chain: op 10" in out.stderr and "Traceback" not in out.stderr
    path.write_text('{"name": "x", "ops": [{"call": "fly"}]}')
    out = cli("scenario", str(path))
    assert out.returncode == 2 and "Machine has no public call 'fly'" in out.stderr
