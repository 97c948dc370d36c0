"""Training loops built on the functional model: full-batch gradient descent in the full
parameter space (:mod:`~goldilocks_zone.training.gradient_descent`, P1 §5) and training
confined to a surface θ = P + R u (:mod:`~goldilocks_zone.training.subspace`, P3)."""
