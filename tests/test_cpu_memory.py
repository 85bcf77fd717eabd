"""keep_freed_memory: freed activations stay in the process, so allocating them again takes no page faults."""
import resource
import sys

import pytest
import torch

from jacinv import cpu_memory


def page_faults_of_steps(steps: int = 4, blocks: int = 2, mb: int = 48) -> int:
    """Minor page faults of ``steps`` cycles like a training step's activations: ``blocks`` tensors of ``mb`` MB
    allocated and filled, then all freed (after 16 cycles: glibc takes up to about 8 to settle)."""
    def cycle():
        live = [torch.ones(mb * 2**18) for _ in range(blocks)]
        del live
    for _ in range(16):
        cycle()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(steps):
        cycle()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc only")
def test_freed_blocks_are_reused_without_page_faults(monkeypatch):
    for name in cpu_memory.USER_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    assert cpu_memory.keep_freed_memory() == "freed memory kept for reuse"
    # 2 blocks of 48 MB are 24,576 pages; glibc maps blocks above 32 MB afresh on every allocation by default
    assert page_faults_of_steps(steps=4) < 4 * 24_576 // 10


def test_user_allocator_settings_are_left_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", "131072")
    assert cpu_memory.keep_freed_memory() == "allocator left as set by MALLOC_TRIM_THRESHOLD_"
