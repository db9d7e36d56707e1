"""Scenario scripts and seeded exercises.

* :mod:`.format`: the scenario format, a named list of public calls that round-trips
  through JSON, runs on a fresh machine, and can be exported from any machine's timeline.
* :mod:`.library`: named scenarios, one per classic case (``get(name)``, ``names()``).
* :mod:`.exercises`: seeded exercise generators, question and worked answer from one run.

>>> import vmwidgets as vw
>>> "merge-prev" in vw.scenarios.names()
True
>>> m, procs = vw.scenarios.get("merge-prev").run()
"""

from .format import (Scenario, ScenarioError, ScenarioRun, Step, StepOutcome, error_name,
                     from_machine, from_ops, machine_params)
from .library import get, names

__all__ = ["Scenario", "ScenarioError", "ScenarioRun", "Step", "StepOutcome", "error_name",
           "from_machine", "from_ops", "get", "machine_params", "names"]
