"""The decoder's image-side terms of the last few clicked images, for fast interactive clicks.

A click's decoder work splits into what depends on the image only (projections of its 4,096
image tokens for the first two-way block, positional terms of later ones: `SharedImage`) and
what depends on the click. `GranularityPredictor` keeps the first part of the most recently
clicked images here, so each further click on an image runs only the per-click part through
the shared-image decoder (`core_model.grid_decode`): the same arithmetic as the model's
decoder up to float rounding (logits within ~5e-7).

Entries are keyed by the embedding's cache key and the decoder's weight state (identity and
in-place version of every parameter), so new weights never meet old terms.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

from core_model.grid_decode import SharedImage

#: Images whose terms are kept (about 16 MiB each for Hiera-S in float32, the size of the
#: embedding itself): the images a handful of annotators are clicking on at once.
CLICK_TERMS_IMAGES = 8


class ClickTerms:
    """A small thread-safe LRU of `SharedImage` values.

    Args:
        capacity: Images kept (>= 1).
    """

    def __init__(self, capacity: int = CLICK_TERMS_IMAGES) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, SharedImage] = OrderedDict()

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def get(self, key: Hashable, build: Callable[[], SharedImage]) -> SharedImage:
        """Return the terms of `key`, computing them with `build` (outside the lock) if absent."""
        with self._lock:
            held = self._entries.get(key)
            if held is not None:
                self._entries.move_to_end(key)
                return held
        terms = build()
        with self._lock:
            self._entries[key] = terms
            self._entries.move_to_end(key)
            while len(self._entries) > self.capacity:
                self._entries.popitem(last=False)
        return terms
