"""The PyTorch transfer-learning tutorial's plain loop, with EfficientNet-Lite0 and its weights.

    .venv/bin/python benchmarks/tutorial_baseline.py DATA EPOCHS   # prints one JSON line

As in the tutorial ("Finetuning the ConvNet"): RandomResizedCrop(224) + flip for training,
Resize(256) + CenterCrop(224) for validation, SGD lr 0.001 momentum 0.9, StepLR(7, 0.1),
the whole network trained, the best validation epoch kept. The tutorial runs 25 epochs;
EPOCHS is lower here so it fits a CPU benchmark. Normalisation uses the backbone's mean/std.
"""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torchvision import datasets, transforms

from imgcls.models.backbone import build_network
from imgcls.models.registry import get_backbone


def loaders(data: Path) -> dict[str, torch.utils.data.DataLoader]:
    norm = transforms.Normalize([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
    train = transforms.Compose(
        [transforms.RandomResizedCrop(224), transforms.RandomHorizontalFlip(), transforms.ToTensor(), norm]
    )
    evaluate = transforms.Compose(
        [transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(), norm]
    )
    found = {}
    for split, tf in (("train", train), ("val", evaluate), ("test", evaluate)):
        if (data / split).is_dir():
            folder = datasets.ImageFolder(data / split, tf, loader=lambda p: datasets.folder.pil_loader(p))
            found[split] = torch.utils.data.DataLoader(
                folder, batch_size=32, shuffle=split == "train", num_workers=1
            )
    return found


def accuracy_of(model: nn.Module, loader: torch.utils.data.DataLoader) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return correct / total


def main() -> None:
    data, epochs = Path(sys.argv[1]), int(sys.argv[2])
    started = time.perf_counter()
    dls = loaders(data)
    classes = len(dls["train"].dataset.classes)
    model, _ = build_network(get_backbone("efficientnet_lite0"), num_classes=classes)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=7, gamma=0.1)
    criterion = nn.CrossEntropyLoss()
    best, best_state = -1.0, None
    for _ in range(epochs):
        model.train()
        for x, y in dls["train"]:
            optimizer.zero_grad()
            criterion(model(x), y).backward()
            optimizer.step()
        scheduler.step()
        val = accuracy_of(model, dls["val"])
        if val > best:
            best, best_state = val, copy.deepcopy(model.state_dict())
    model.load_state_dict(best_state)
    result = {"val_accuracy": best, "train_s": time.perf_counter() - started}
    if "test" in dls:
        result["test_accuracy"] = accuracy_of(model, dls["test"])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
