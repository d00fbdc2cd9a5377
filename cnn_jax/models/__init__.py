"""The model zoo. `create(name)`, `list_models()`, `get_info(name)`; one file per family.

Every model is a Flax NNX module taking NHWC images, `model(x, train=False)`, returning float32
logits (models with auxiliary heads return `(logits, aux_logits)` when training with them on).
"""

from cnn_jax.models.registry import ModelInfo, create, get_info, list_models, register

# Importing a family registers its models.
from cnn_jax.models import alexnet  # noqa: F401  pylint: disable=g-bad-import-order
from cnn_jax.models import nin  # noqa: F401
from cnn_jax.models import vgg  # noqa: F401
from cnn_jax.models import resnet  # noqa: F401
from cnn_jax.models import googlenet  # noqa: F401
from cnn_jax.models import inception  # noqa: F401
from cnn_jax.models import squeezenet  # noqa: F401
from cnn_jax.models import mobilenet  # noqa: F401
from cnn_jax.models import densenet  # noqa: F401
from cnn_jax.models import inception_v4  # noqa: F401
from cnn_jax.models import enet  # noqa: F401
from cnn_jax.models import small  # noqa: F401

__all__ = ['ModelInfo', 'create', 'get_info', 'list_models', 'register']
