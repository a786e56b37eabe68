"""Training recipes and the training loop."""

from robustdeq.training.recipes import RECIPES as RECIPES
from robustdeq.training.trainer import TrainResult as TrainResult
from robustdeq.training.trainer import build_model as build_model
from robustdeq.training.trainer import train_model as train_model
