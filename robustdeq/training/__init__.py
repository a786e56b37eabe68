"""Training: the recipes (registered by name for defense manifests) and the loop they run in.

Importing the package fills the recipe registry (:data:`RECIPES`): ``standard``, ``pgd_at``,
``trades`` and ``ris`` (recipes.py), ``jiio`` (jiio.py) and ``federated`` (federated.py).
"""

from robustdeq.training import federated as federated  # registers "federated"
from robustdeq.training import jiio as jiio  # registers "jiio"
from robustdeq.training import recipes as recipes  # registers "standard", "pgd_at", "trades", "ris"
from robustdeq.training.base import RECIPES as RECIPES
from robustdeq.training.base import make_recipe as make_recipe
from robustdeq.training.trainer import TrainResult as TrainResult
from robustdeq.training.trainer import build_model as build_model
from robustdeq.training.trainer import train_model as train_model
from robustdeq.training.trainer import training_recipe as training_recipe
