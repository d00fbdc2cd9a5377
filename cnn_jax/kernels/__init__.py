"""CPU kernels through oneDNN as XLA FFI custom calls (built by `make kernels`)."""
from cnn_jax.kernels.conv import conv_general_dilated, supports, threads, unavailable_reason
from cnn_jax.kernels.pool import max_pool

__all__ = ['conv_general_dilated', 'max_pool', 'supports', 'threads', 'unavailable_reason']
