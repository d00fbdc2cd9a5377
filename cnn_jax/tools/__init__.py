"""Analysis and figures, each a module run as `python -m cnn_jax.tools.<name>`.

- `analyze`: Canziani, Paszke, Culurciello 2016 ("An Analysis of Deep Neural Network Models for
  Practical Applications"): parameters, operations, forward time and memory against batch size,
  training throughput; CSV, Markdown and PNG plots.
- `filters`: a checkpoint's first-layer kernels (Krizhevsky et al. 2012, Figure 3).
- `predict`: top-5 classes of images (Krizhevsky et al. 2012, Figure 4).
"""
