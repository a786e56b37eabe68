"""robustdeq: the adversarial-robustness benchmark for deep equilibrium and weight-tied models."""

__version__ = "0.1.0"
