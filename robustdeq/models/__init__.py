"""Model families, each a registered factory (importing this package registers them all)."""

from robustdeq.models import deq as deq
from robustdeq.models import explicit as explicit
from robustdeq.models import lyadeq as lyadeq
from robustdeq.models import lyadeq_residual as lyadeq_residual
from robustdeq.models import weight_tied as weight_tied
from robustdeq.models.registry import MODELS as MODELS
from robustdeq.models.registry import create_model as create_model
