"""cnn_jax: the classic ImageNet CNNs and their training recipes in JAX/Flax NNX."""
