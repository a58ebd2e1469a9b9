"""A byte-bounded LRU cache of images read from files (the dataset-example pictures of `top`
name thousands of images: 512 channels x 25 examples; each is read once while it stays cached)."""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable

import numpy as np

from .errors import ImageError

__all__ = ["ImageCache"]


class ImageCache:
    """``get(path)``: ``read(path)`` (an array, e.g. a preprocessed (H, W, 3) display image), kept
    while the cache holds at most ``budget`` bytes (least recently used out first, the newest
    always kept), or None when ``read`` raises ImageError (a file deleted or damaged since)."""

    def __init__(self, read: Callable[[str], np.ndarray], *, budget: int = 512 << 20):
        self.read, self.budget, self.held = read, budget, 0
        self.cache: OrderedDict[str, np.ndarray | None] = OrderedDict()

    def get(self, path: str) -> np.ndarray | None:
        if path in self.cache:
            self.cache.move_to_end(path)
            return self.cache[path]
        try:
            value: np.ndarray | None = self.read(path)
        except ImageError:
            value = None
        self.cache[path] = value
        self.held += 0 if value is None else value.nbytes
        while self.held > self.budget and len(self.cache) > 1:
            _, old = self.cache.popitem(last=False)
            self.held -= 0 if old is None else old.nbytes
        return value
