"""Weight import: torchvision state_dicts -> cnn_jax models (`python -m cnn_jax.convert`).

torch is an optional extra (requirements-torch.txt), needed only to read `.pth` files.
"""

from cnn_jax.convert import weights
from cnn_jax.convert.torchvision import (FAMILIES, convert_state_dict, load_model, model_kwargs,
                                         read_state_dict, supported_models)

__all__ = ['FAMILIES', 'convert_state_dict', 'load_model', 'model_kwargs', 'read_state_dict',
           'supported_models', 'weights']
