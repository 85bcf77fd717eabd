"""Per-sample power-iteration state kept between visits of a training sample (warm start)."""
from __future__ import annotations

import numpy as np
import torch


class VectorBank:
    """Singular-vector estimates v_i, norm estimates s_i and staleness per dataset index.

    The tensors live on ``device`` (that of the training batches by default, so that a step reads and writes
    them without waiting for the host); vectors are stored compactly (float16 by default) and grown on demand
    to the largest index seen; unseen samples have s_i = NaN.  Which samples have been seen is also kept on
    the host (``seen``), where the dataset indices of a batch are, so that the step can tell a cold batch from
    a warm one without reading the device.
    """

    def __init__(self, sample_shape: tuple[int, ...], dtype: torch.dtype = torch.float16, device="cpu"):
        self.sample_shape = tuple(sample_shape)
        self.dtype, self.device = dtype, torch.device(device)
        self.vectors = torch.zeros((0, *self.sample_shape), dtype=dtype, device=self.device)
        self.values = torch.zeros(0, dtype=torch.float32, device=self.device)
        self.age = torch.zeros(0, dtype=torch.int64, device=self.device)  # visits since last refresh
        self._seen = np.zeros(0, dtype=bool)

    def _grow(self, size: int) -> None:
        n = self.values.numel()
        if size <= n:
            return
        size = max(size, 2 * n)
        self.vectors = torch.cat((self.vectors, self.vectors.new_zeros((size - n, *self.sample_shape))))
        self.values = torch.cat((self.values, self.values.new_full((size - n,), float("nan"))))
        self.age = torch.cat((self.age, self.age.new_zeros(size - n)))
        self._seen = np.concatenate((self._seen, np.zeros(size - n, dtype=bool)))

    def seen(self, index: np.ndarray) -> np.ndarray:
        """(B,) bool on the host: which of the dataset indices ``index`` (host, (B,)) have a stored vector."""
        self._grow(int(index.max()) + 1 if index.size else 0)
        return self._seen[index]

    def lookup(self, index: torch.Tensor):
        """(values (B,) float32, age (B,)) for dataset indices ``index`` (B,) (seen through ``seen`` first)."""
        index = index.to(self.device)
        return self.values[index], self.age[index]

    def vectors_of(self, index: torch.Tensor) -> torch.Tensor:
        """The stored vectors (rows, *sample_shape) of dataset indices ``index`` (rows,), in float32."""
        return self.vectors[index.to(self.device)].float()

    def store(self, index: torch.Tensor, host_index: np.ndarray, rows: torch.Tensor, values: torch.Tensor,
              vectors: torch.Tensor) -> None:
        """Write fresh values/vectors for ``index[rows]`` and age the other samples of the batch by one visit
        (``index``: the batch's dataset indices (B,) on any device, ``host_index`` the same on the host; ``rows``:
        positions in the batch).  Every sample of the batch counts as seen afterwards: a step refreshes all its
        unseen ones."""
        index = index.to(self.device)
        fresh = index[rows.to(self.device)]
        self.values[fresh] = values.detach().to(self.device, torch.float32)
        self.vectors[fresh] = vectors.detach().to(self.device, self.dtype)
        self.age[index] += 1
        self.age[fresh] = 0
        self._seen[host_index] = True

    def to(self, device) -> "VectorBank":
        """Move the stored tensors to ``device`` (in place); returns the bank."""
        self.device = torch.device(device)
        self.vectors, self.values, self.age = (t.to(self.device) for t in (self.vectors, self.values, self.age))
        return self

    def state(self) -> dict:
        return {"vectors": self.vectors.clone(), "values": self.values.clone(), "age": self.age.clone()}

    def load(self, state: dict) -> None:
        self.vectors = state["vectors"].to(self.device, self.dtype)
        self.values = state["values"].to(self.device)
        self.age = state["age"].to(self.device)
        self._seen = (~torch.isnan(self.values)).cpu().numpy()
