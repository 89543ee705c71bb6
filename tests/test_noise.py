"""The counter-based Langevin noise: standard normal, uncorrelated, a function of (seed, step, atom) alone."""

import numpy as np
import pytest
import torch
from scipy import stats

from mlff.dynamics.noise import counter_normal, element_counters, mix32, replica_keys


def draw(seeds, step, counts):
    batch = torch.repeat_interleave(torch.arange(len(counts)), torch.as_tensor(counts))
    return counter_normal(replica_keys(torch.as_tensor(seeds, dtype=torch.long)), step, batch, element_counters(batch))


def test_mix32_is_the_reference_lowbias32():
    """Against a plain-Python lowbias32 (unbounded ints, masked): the signed multiply is exact mod 2^32."""

    def reference(x: int) -> int:
        x ^= x >> 16
        x = (x * 0x7FEB352D) & 0xFFFFFFFF
        x ^= x >> 15
        x = (x * 0x846CA68B) & 0xFFFFFFFF
        return x ^ (x >> 16)

    values = [0, 1, 2, 12345, 0x7FFFFFFF, 0x80000000, 0xDEADBEEF, 0xFFFFFFFF]
    assert mix32(torch.as_tensor(values, dtype=torch.long)).tolist() == [reference(v) for v in values]


def test_noise_is_standard_normal():
    sample = torch.cat([draw([11, 12, 13], step, [50, 20, 30]) for step in range(200)]).flatten().numpy()
    assert abs(sample.mean()) < 0.01 and abs(sample.std() - 1.0) < 0.01
    assert stats.kstest(sample, "norm").pvalue > 1e-3


def test_noise_is_uncorrelated_across_steps_atoms_components_and_seeds():
    steps = torch.stack([draw([5, 6], step, [400, 400]) for step in range(50)]).numpy()  # [50, 800, 3]
    bound = 4.0 / np.sqrt(steps.size / 3)
    pairs = {
        "consecutive steps": (steps[1:], steps[:-1]),
        "neighbouring atoms": (steps[:, 1:400], steps[:, :399]),
        "components": (steps[..., 0], steps[..., 1]),
        "seeds 5 and 6": (steps[:, :400], steps[:, 400:]),
    }
    for name, (a, b) in pairs.items():
        assert abs(np.corrcoef(a.ravel(), b.ravel())[0, 1]) < bound, name


def test_a_replicas_noise_does_not_depend_on_its_batch():
    together = draw([3, 4, 5], 17, [4, 9, 6])
    np.testing.assert_array_equal(together[4:13], draw([4], 17, [9]))
    np.testing.assert_array_equal(together[13:], draw([5], 17, [6]))
    assert not torch.equal(draw([3], 17, [4]), draw([3], 18, [4])), "another step, other numbers"


def test_large_seeds_and_steps_use_every_bit():
    base = draw([2**40 + 1], 2**33 + 7, [5])
    assert not torch.equal(base, draw([1], 2**33 + 7, [5]))
    assert not torch.equal(base, draw([2**40 + 1], 7, [5]))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_the_gpu_draws_the_cpus_numbers():
    batch = torch.repeat_interleave(torch.arange(3), torch.as_tensor([4, 9, 6]))
    keys = replica_keys(torch.as_tensor([3, 4, 5]))
    cpu = counter_normal(keys, 99, batch, element_counters(batch))
    cuda = counter_normal(keys.cuda(), 99, batch.cuda(), element_counters(batch.cuda()))
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-12, atol=1e-12)
