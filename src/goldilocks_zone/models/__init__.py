"""Models measured by the papers: a registry of plain ``nn.Module`` factories.

``create(name, in_shape, num_classes, *, activation, bias, init, seed, **kwargs)`` builds
``demo``, ``lenet-300-100``, ``lenet-5``, ``small-cnn`` or ``mlp``; ``homogeneity(model)`` says
whether a network is positively homogeneous and of which degree (used by the scale ↔
temperature identity).
"""

from goldilocks_zone.models.architectures import ACTIVATIONS
from goldilocks_zone.models.homogeneity import Homogeneity, homogeneity
from goldilocks_zone.models.init import INIT_SCHEMES, weight_std
from goldilocks_zone.models.registry import create, load_model, names, register, resolve_factory

__all__ = ["ACTIVATIONS", "INIT_SCHEMES", "Homogeneity", "create", "homogeneity", "load_model",
           "names", "register", "resolve_factory", "weight_std"]
