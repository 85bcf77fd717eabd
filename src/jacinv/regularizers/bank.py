"""Per-sample power-iteration state kept between visits of a training sample (warm start)."""
from __future__ import annotations

import torch


class VectorBank:
    """Singular-vector estimates v_i, norm estimates s_i and staleness per dataset index.

    Vectors are stored compactly (float16 on the CPU by default) and grown on demand
    to the largest index seen; unseen samples have s_i = NaN.
    """

    def __init__(self, sample_shape: tuple[int, ...], dtype: torch.dtype = torch.float16, device="cpu"):
        self.sample_shape = tuple(sample_shape)
        self.dtype, self.device = dtype, torch.device(device)
        self.vectors = torch.zeros((0, *self.sample_shape), dtype=dtype, device=self.device)
        self.values = torch.zeros(0, dtype=torch.float32, device=self.device)
        self.age = torch.zeros(0, dtype=torch.int64, device=self.device)  # visits since last refresh

    def _grow(self, size: int) -> None:
        n = self.values.numel()
        if size <= n:
            return
        size = max(size, 2 * n)
        self.vectors = torch.cat((self.vectors, self.vectors.new_zeros((size - n, *self.sample_shape))))
        self.values = torch.cat((self.values, self.values.new_full((size - n,), float("nan"))))
        self.age = torch.cat((self.age, self.age.new_zeros(size - n)))

    def lookup(self, index: torch.Tensor):
        """(values (B,), vectors (B, *sample_shape) float32, age (B,)) for dataset indices ``index``."""
        index = index.to(self.device)
        self._grow(int(index.max()) + 1)
        return self.values[index], self.vectors[index].float(), self.age[index]

    def store(self, index: torch.Tensor, refreshed: torch.Tensor, values: torch.Tensor, vectors: torch.Tensor) -> None:
        """Write fresh values/vectors for ``index[refreshed]`` and age the others by one visit."""
        index = index.to(self.device)
        refreshed = refreshed.to(self.device)
        fresh = index[refreshed]
        self.values[fresh] = values.detach().to(self.device, torch.float32)
        self.vectors[fresh] = vectors.detach().to(self.device, self.dtype)
        self.age[index[~refreshed]] += 1
        self.age[fresh] = 0

    def state(self) -> dict:
        return {"vectors": self.vectors.clone(), "values": self.values.clone(), "age": self.age.clone()}

    def load(self, state: dict) -> None:
        self.vectors = state["vectors"].to(self.device, self.dtype)
        self.values = state["values"].to(self.device)
        self.age = state["age"].to(self.device)
