"""Infrastructure shared by the experiments: the protocol and registry (``base``), the common
config fields (``config``), problem loading (``common``), helpers used by several experiments
(``curvature_sweep``, ``functional_training``, ``architecture``) and the figure style
(``plotting``). Experiments import from here, never from each other."""
