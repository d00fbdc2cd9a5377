"""CPU kernels as XLA FFI custom calls (built by `make kernels`): oneDNN's convolutions (`conv`)
and max and average pooling (`pool`), BatchNorm's passes with its activation and residual
(`normalization`, C++ loops) and a bias add whose gradient is their sum pass (`bias`); and the
dense layer's matmul with a layout-friendly kernel gradient, oneDNN's in bfloat16 (`dense`). Each
has XLA's own ops as its path on GPUs and wherever the library is not built."""
from cnn_jax.kernels.normalization import (ACTIVATIONS, activate, batch_norm, channel_sums,
                                           portable_batch_norm)
from cnn_jax.kernels.bias import bias_add, portable_bias_add
from cnn_jax.kernels.dense import dot_general as dense_dot_general
from cnn_jax.kernels.dense import promote_dtype as dense_promote_dtype
from cnn_jax.kernels.dense import supports as dense_supports
from cnn_jax.kernels.conv import (batch_axes, conv_general_dilated, supports, threads,
                                  unavailable_reason)
from cnn_jax.kernels.pool import avg_pool, max_pool

__all__ = ['ACTIVATIONS', 'activate', 'avg_pool', 'batch_axes', 'batch_norm', 'bias_add',
           'channel_sums', 'conv_general_dilated', 'dense_dot_general', 'dense_promote_dtype',
           'dense_supports', 'max_pool', 'portable_batch_norm', 'portable_bias_add', 'supports',
           'threads', 'unavailable_reason']
