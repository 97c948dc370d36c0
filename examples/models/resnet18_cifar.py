"""A ResNet-18 for 32×32 images (CIFAR-style stem: 3×3 convolution, no max-pool), written out
here because torchvision is optional. Used as a "user's model" by the diagnosis guide:

    goldilocks diagnose --model examples.models.resnet18_cifar:resnet18 --dataset ...

(run from the repository root so that ``examples`` is importable), or in Python
``gz.diagnose(resnet18, (images, labels))``.
"""

from __future__ import annotations

import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                          nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


def resnet18(in_shape: tuple[int, ...] = (3, 32, 32), num_classes: int = 10) -> nn.Module:
    """ResNet-18 (11.2M parameters for 10 classes) mapping (B, C, H, W) images to logits."""
    layers: list[nn.Module] = [nn.Conv2d(in_shape[0], 64, 3, 1, 1, bias=False),
                               nn.BatchNorm2d(64), nn.ReLU()]
    cin = 64
    for cout, stride in ((64, 1), (64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2),
                         (512, 1)):
        layers.append(BasicBlock(cin, cout, stride))
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes)]
    return nn.Sequential(*layers)
