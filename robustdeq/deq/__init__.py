"""The shared equilibrium layer: solvers, gradient modes, warm starts, solver statistics."""

from robustdeq.deq.equilibrium import AttackSession as AttackSession
from robustdeq.deq.equilibrium import Counters as Counters
from robustdeq.deq.equilibrium import Equilibrium as Equilibrium
from robustdeq.deq.equilibrium import SolverStats as SolverStats
from robustdeq.deq.equilibrium import equilibria as equilibria
from robustdeq.deq.equilibrium import grad_mode as grad_mode
from robustdeq.deq.equilibrium import regularisation as regularisation
from robustdeq.deq.equilibrium import solver_budget as solver_budget
from robustdeq.records.solver import GRAD_MODES as GRAD_MODES
from robustdeq.records.solver import SolverSpec as SolverSpec
from robustdeq.records.solver import is_attack_mode as is_attack_mode
