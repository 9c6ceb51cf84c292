"""Networks for the BatchNorm fold and fusion tests."""

from __future__ import annotations

import torch
from torch import nn


def with_trained_statistics(model: nn.Module) -> nn.Module:
    """Give every BatchNorm non-trivial statistics and affine parameters, then eval mode."""
    generator = torch.Generator().manual_seed(1)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            shape = module.running_mean.shape
            module.running_mean.copy_(torch.randn(shape, generator=generator) * 0.3)
            module.running_var.copy_(torch.rand(shape, generator=generator) + 0.5)
            with torch.no_grad():
                module.weight.copy_(torch.rand(shape, generator=generator) + 0.5)
                module.bias.copy_(torch.randn(shape, generator=generator) * 0.1)
    return model.eval()


class UnconnectedConvNorm(nn.Module):
    """A convolution and a BatchNorm registered one after the other but not connected."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.norm = nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) + self.norm(x)
