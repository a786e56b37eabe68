"""robustdeq: the adversarial-robustness benchmark for deep equilibrium and weight-tied models.

The Python API (``robustdeq/api.py``)::

    entry = robustdeq.evaluate(model, "digits-linf")   # any nn.Module, images in [0, 1] -> logits
    model = robustdeq.load_model("deq-pgd-at")          # a trained reference defense from the zoo
    robustdeq.list_models(), robustdeq.load_protocol("digits-linf")
    robustdeq.from_torchdeq(model)                      # true eval-mode gradients for torchdeq DEQs
"""

__version__ = "0.1.0"

from robustdeq.api import Entry as Entry  # noqa: E402
from robustdeq.api import evaluate as evaluate  # noqa: E402
from robustdeq.api import list_models as list_models  # noqa: E402
from robustdeq.api import load_model as load_model  # noqa: E402
from robustdeq.api import load_protocol as load_protocol  # noqa: E402
from robustdeq.deq.torchdeq_adapter import from_torchdeq as from_torchdeq  # noqa: E402
from robustdeq.errors import RobustdeqError as RobustdeqError  # noqa: E402
