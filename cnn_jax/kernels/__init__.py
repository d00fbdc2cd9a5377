"""CPU kernels as XLA FFI custom calls (built by `make kernels`): oneDNN's convolutions (`conv`)
and max and average pooling (`pool`), BatchNorm's passes with its activation and residual
(`normalization`, C++ loops); and the dense layer's matmul with a layout-friendly kernel gradient
(`dense`). Each has XLA's own ops as its path on GPUs and wherever the library is not built."""
from cnn_jax.kernels.normalization import (ACTIVATIONS, activate, batch_norm,
                                           portable_batch_norm)
from cnn_jax.kernels.dense import dot_general as dense_dot_general
from cnn_jax.kernels.conv import (batch_axes, conv_general_dilated, supports, threads,
                                  unavailable_reason)
from cnn_jax.kernels.pool import avg_pool, max_pool

__all__ = ['ACTIVATIONS', 'activate', 'avg_pool', 'batch_axes', 'batch_norm',
           'conv_general_dilated', 'dense_dot_general', 'max_pool', 'portable_batch_norm',
           'supports', 'threads', 'unavailable_reason']
