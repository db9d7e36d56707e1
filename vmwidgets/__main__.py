"""The command line: seeded exercises in the style of OSTEP's homework simulators, and
named scenarios.

    python -m vmwidgets exercise --list
    python -m vmwidgets exercise translate --seed 7            # parameters, then the question
    python -m vmwidgets exercise translate -s 7 -c             # ... and the worked answer
    python -m vmwidgets exercise translate -s 7 --check ans.txt  # check a student's answer
    python -m vmwidgets scenario --list
    python -m vmwidgets scenario merge-prev                    # each op, then the maps
    python -m vmwidgets scenario bug.json                      # a scenario saved as JSON
    python -m vmwidgets scenario merge-prev --json             # the scenario itself, as JSON

Errors in the arguments (an unknown kind or scenario, a bad seed) are argparse errors:
a message and exit status 2.
"""

import argparse
import os
import sys
import textwrap

from .scenarios import Scenario, ScenarioError, exercises, library


def _seed(text):
    try:
        value = int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}: give a whole number >= 0") \
            from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"invalid seed {text!r}: it must be >= 0")
    return value


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m vmwidgets",
        description="Linux 6.18 x86-64 virtual memory, simulated: exercises and scenarios.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    ex = sub.add_parser("exercise", help="a seeded exercise: question, and with -c its answer",
                        description="Print a seeded exercise: its parameters, the question, "
                        "and with -c the worked answer. The same seed gives the same exercise.")
    ex.add_argument("kind", nargs="?", metavar="KIND", choices=list(exercises.KINDS),
                    help="one of: " + ", ".join(exercises.KINDS))
    ex.add_argument("-s", "--seed", type=_seed, default=0, help="random seed (default 0)")
    ex.add_argument("-c", "--answer", action="store_true", help="also print the worked answer")
    ex.add_argument("--check", metavar="FILE",
                    help="check the answer written in FILE ('-': standard input) and print the "
                    "feedback; exit status 0 if it is correct, 1 if not")
    ex.add_argument("--list", action="store_true", help="list the exercise kinds")
    ex.set_defaults(subparser=ex)

    sc = sub.add_parser("scenario", help="run a named scenario (or a JSON file), showing the maps",
                        description="Run a scenario op by op, printing each op's result and "
                        "the /proc/PID/maps of the processes it changed.")
    sc.add_argument("name", nargs="?", metavar="NAME",
                    help="a library scenario (see --list) or a path to a .json scenario")
    sc.add_argument("--list", action="store_true", help="list the library's scenarios")
    sc.add_argument("--json", action="store_true", help="print the scenario as JSON, do not run it")
    sc.set_defaults(subparser=sc)
    return parser


def _exercise(parser, args, out):
    if args.list:
        width = max(map(len, exercises.KINDS))
        for kind, cls in exercises.KINDS.items():
            print(f"{kind:<{width}}  {cls.summary}", file=out)
        return 0
    if args.kind is None:
        parser.error("give a KIND (or --list); kinds: " + ", ".join(exercises.KINDS))
    ex = exercises.exercise(args.kind, args.seed)
    if args.check is not None:
        return _check(parser, ex, args.check, out)
    print(ex.text(answer=args.answer), file=out)
    if not args.answer:
        print("\nRun with -c (--answer) to see the worked answer.", file=out)
    return 0


def _check(parser, ex, path, out):
    """Check the answer in ``path`` as the exercise widget would; 0 if correct, else 1."""
    try:
        if path == "-":
            text = sys.stdin.read()
        else:
            with open(path, encoding="utf-8") as f:
                text = f.read()
    except OSError as exc:
        parser.error(f"cannot read {path}: {exc.strerror}")
    except UnicodeDecodeError:
        parser.error(f"{path} is not UTF-8 text")
    if not text.strip():
        print(f"{ex.kind} seed {ex.seed}: the answer is empty", file=out)
        return 1
    verdict = ex.check(text.strip())
    print(f"{ex.kind} seed {ex.seed}: {verdict}", file=out)
    return 0 if verdict.correct else 1


def _load_scenario(parser, name):
    if name.endswith(".json") or os.sep in name:
        try:
            return Scenario.load(name)
        except OSError as exc:
            parser.error(f"cannot read {name}: {exc.strerror}")
        except ScenarioError as exc:
            parser.error(f"{name}: {exc}")
    try:
        return library.get(name)
    except KeyError as exc:
        parser.error(exc.args[0])


def _scenario(parser, args, out):
    if args.list:
        width = max(map(len, library.names()))
        for name in library.names():
            print(f"{name:<{width}}  {library.get(name).title}", file=out)
        return 0
    if args.name is None:
        parser.error("give a NAME (or --list)")
    sc = _load_scenario(parser, args.name)
    if args.json:
        print(sc.to_json(), end="", file=out)
        return 0
    print(f"{sc.name}: {sc.title}" if sc.title else sc.name, file=out)
    if sc.description:
        print(textwrap.fill(sc.description, 88), file=out)
    if sc.machine:
        print("machine: " + ", ".join(f"{k}={v}" for k, v in sc.machine.items()), file=out)
    run = sc.start()
    seen = {}                 # pid -> the maps lines printed last
    try:
        for outcome in run:
            print(f"\n{outcome}" + (f"   # {outcome.step.note}" if outcome.step.note else ""),
                  file=out)
            m = run.machine
            if len(m.cpus) > 1:
                for flush in m.tlb_log:
                    if flush.step == m.nr_steps - 1:
                        print(f"  tlb_flush: {flush}", file=out)
            shown = [outcome.target] if outcome.step.proc is not None else []
            if outcome.step.bind in run.procs:
                shown.append(run.procs[outcome.step.bind])
            for proc in shown:
                name = next(n for n, p in run.procs.items() if p is proc)
                if not proc.alive:
                    print(f"  {name} (pid {proc.pid}) has exited", file=out)
                    continue
                print(_maps_text(proc, name, seen), file=out)
    except ScenarioError as exc:
        print(f"\nscenario failed: {exc}", file=sys.stderr)
        return 1
    return 0


def _maps_text(proc, name, seen):
    """/proc/PID/maps, marking lines new since the process's maps were last shown with ``+``
    and lines gone since then with ``-``."""
    lines = proc.proc_maps().splitlines()
    before = seen.get(proc.pid)
    seen[proc.pid] = lines
    head = f"  /proc/{proc.pid}/maps ({name})"
    if before is None:
        return head + ":\n" + "\n".join(f"      {line}" for line in lines)
    if before == lines:
        return head + ": unchanged"
    rows = [(line, "+" if line not in before else " ") for line in lines]
    rows += [(line, "-") for line in before if line not in lines]
    rows.sort(key=lambda row: int(row[0].split("-")[0], 16))
    return (head + ": (+ new, - gone)\n"
            + "\n".join(f"    {mark} {line}" for line, mark in rows))


def main(argv=None, out=None):
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); returns the exit
    status."""
    out = out or sys.stdout
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "exercise":
        return _exercise(args.subparser, args, out)
    return _scenario(args.subparser, args, out)


if __name__ == "__main__":
    sys.exit(main())
