"""Infrastructure shared by the experiments (registry and config coercion, problem loading,
plot style). Experiments import from here, never from each other."""
