"""CPU kernels through oneDNN as XLA FFI custom calls (built by `make kernels`)."""
from cnn_jax.kernels.conv import conv_general_dilated, supports, threads, unavailable_reason

__all__ = ['conv_general_dilated', 'supports', 'threads', 'unavailable_reason']
