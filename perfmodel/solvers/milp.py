"""The MILP plumbing every solver shares: a HiGHS solver through pulp (CBC as fallback), and variables
attached to their problem."""

from __future__ import annotations

import pulp

from ..errors import InputError


def var(prob: pulp.LpProblem, name: str, low=None, up=None, cat: str = "Continuous") -> pulp.LpVariable:
    """A variable attached to the problem (PuLP >= 3.3 API; plain LpVariable on older PuLP)."""
    if hasattr(prob, "add_variable"):
        return prob.add_variable(name, low, up, cat=cat)
    return pulp.LpVariable(name, low, up, cat=cat)


def solver(time_limit: float):
    """HiGHS (through highspy, else its command-line binary), else CBC; one line if none can run."""
    for factory in (lambda: pulp.HiGHS(msg=False, timeLimit=time_limit),
                    lambda: pulp.HiGHS_CMD(msg=False, timeLimit=time_limit),
                    lambda: pulp.PULP_CBC_CMD(msg=False, timeLimit=time_limit)):
        try:
            s = factory()
            if s.available():
                return s
        except Exception:  # a solver interface pulp ships but this machine cannot run
            continue
    raise InputError("no MILP solver is available (install highspy, or CBC through pulp)")


