"""Training-time datasets: items are (float normalised CxHxW tensor, int label)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from sweep.tasks.datasets.formats import ImageFiles

Normalize = Callable[[torch.Tensor], torch.Tensor]


class AugmentedArrays(torch.utils.data.Dataset):
    """A whole small-image split held in memory as uint8, augmented per batch in numpy.

    Why: PIL transforms per 28-32 px image cost more than a model step on a small CPU, and
    torch's intra-op threads fight the training step for the cores (a contended 2-core epoch
    ran 6x slower). Batches come through `__getitems__` (which DataLoader prefers): random crop
    with zero padding `pad` and horizontal flip are one strided gather, normalisation is a
    lookup table built by `normalize` itself, so values equal `normalize(crop)` bit for bit.
    Random draws use torch's generator, which DataLoader seeds per worker.
    """

    def __init__(
        self,
        images: np.ndarray,
        labels: np.ndarray,
        normalize: Normalize,
        pad: int,
        augment: bool,
    ) -> None:
        self.images, self.labels = images, labels
        self.pad, self.augment = pad, augment
        levels = torch.arange(256, dtype=torch.uint8).expand(images.shape[1], 1, 256)
        self.table = normalize(levels).squeeze(1).numpy()  # [C, 256] float32
        self.channels = np.arange(images.shape[1])[None, :, None, None]

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[tuple[torch.Tensor, int]]:
        images = self.images[np.asarray(indices)]
        if self.augment:
            images = self._crop_flip(images)
        batch = torch.from_numpy(self.table[self.channels, images])
        return list(zip(batch.unbind(0), self.labels[indices].tolist(), strict=True))

    def _crop_flip(self, images: np.ndarray) -> np.ndarray:
        n, _, h, w = images.shape
        p = self.pad
        padded = np.pad(images, ((0, 0), (0, 0), (p, p), (p, p)))
        windows = np.lib.stride_tricks.sliding_window_view(padded, (h, w), axis=(2, 3))
        top, left = torch.randint(0, 2 * p + 1, (2, n)).numpy()
        crops = windows[np.arange(n), :, top, left]  # [n, C, h, w], a copy
        flip = (torch.rand(n) < 0.5).numpy()
        crops[flip] = crops[flip, ..., ::-1]
        return crops


class LabeledFiles(torch.utils.data.Dataset):
    """Image files with their labels, for training on the large-image (folder) datasets."""

    def __init__(self, files: ImageFiles, labels: Sequence[int], normalize: Normalize) -> None:
        self.files, self.labels, self.normalize = files, labels, normalize

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.normalize(self.files[index]), self.labels[index]
