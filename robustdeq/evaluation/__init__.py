"""Protocol runner, attacks and reliability checks."""

from robustdeq.evaluation.attacks import ATTACKS as ATTACKS
from robustdeq.evaluation.attacks import Attack as Attack
from robustdeq.evaluation.runner import EvalResult as EvalResult
from robustdeq.evaluation.runner import evaluate as evaluate
