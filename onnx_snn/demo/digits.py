"""scikit-learn's digits data and a small BN-CNN for it (demo, tests, benchmarks)."""

from __future__ import annotations

from typing import Any

import numpy as np


def load_digits_split(test_size: float = 0.3, seed: int = 0):
    """Digits as float32 [N, 1, 8, 8] in [0, 1]: ``(x_train, y_train, x_test, y_test)``."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = (digits.images / 16.0).astype(np.float32)[:, None]
    y = digits.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, random_state=seed, stratify=y)
    return x_train, y_train, x_test, y_test


def digits_cnn() -> Any:
    """Conv-BN-ReLU x3 with average pooling, then a linear classifier."""
    from torch import nn

    def block(c_in: int, c_out: int) -> list:
        return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU()]

    return nn.Sequential(*block(1, 16), *block(16, 32), nn.AvgPool2d(2),
                         *block(32, 64), nn.AvgPool2d(2), nn.Flatten(), nn.Linear(64 * 2 * 2, 10))


def train_digits_cnn(x: np.ndarray, y: np.ndarray, epochs: int = 30, seed: int = 0) -> Any:
    """Train ``digits_cnn`` (about 3 s on one CPU core)."""
    import torch

    torch.manual_seed(seed)
    return train_classifier(digits_cnn(), x, y, epochs, seed)


def train_classifier(model: Any, x: np.ndarray, y: np.ndarray, epochs: int = 30,
                     seed: int = 0) -> Any:
    """Train ``model`` with Adam, a cosine schedule and cross-entropy, batches of 64.

    Training uses one torch thread: these nets are tiny, so a second thread gains
    nothing, and one thread does not slow down tenfold when the cores are busy.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        optimizer = torch.optim.Adam(model.parameters(), lr=3e-3, weight_decay=1e-4)
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, max(epochs, 1))
        inputs, targets = torch.from_numpy(x), torch.from_numpy(y)
        generator = torch.Generator().manual_seed(seed)
        model.train()
        for _ in range(epochs):
            for index in torch.randperm(len(inputs), generator=generator).split(64):
                optimizer.zero_grad()
                loss = torch.nn.functional.cross_entropy(model(inputs[index]), targets[index])
                loss.backward()
                optimizer.step()
            scheduler.step()
        return model.eval()
    finally:
        torch.set_num_threads(threads)
