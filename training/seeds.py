"""Every random stream of a training run, derived from ``train.seed`` (or the autoencoder's ``seed``).

Each stream gets its own formula so no two share numbers, and each is a pure function of the seed (and
the rank or step), so a resumed run draws what the uninterrupted run would have drawn.
"""
from __future__ import annotations

# Same on every rank: the draws all ranks must agree on (timesteps, rollout exit blocks).
SHARED_OFFSET = 17
# One per rank: noise and data draws that must differ across ranks.
LOCAL_STRIDE, LOCAL_OFFSET = 1000, 31
# Random initialisation of a network by role; a random critic starts as a copy of a random teacher.
ROLE_STRIDE = 100
ROLE_SEEDS = {"student": 1, "teacher": 2, "critic": 2}
# The ODE-pair pool of ``ode_init``, one per rank; a prime stride keeps it off the other streams.
ODE_POOL_STRIDE = 7919
# The autoencoder trainer's per-step generator; a prime stride larger than any step count.
AUTOENCODER_STEP_STRIDE = 1_000_003


def shared_seed(seed: int) -> int:
    return seed + SHARED_OFFSET


def local_seed(seed: int, rank: int) -> int:
    return seed * LOCAL_STRIDE + LOCAL_OFFSET + rank


def role_seed(seed: int, role: str) -> int:
    return seed * ROLE_STRIDE + ROLE_SEEDS.get(role, 0)


def ode_pool_seed(seed: int, rank: int) -> int:
    return seed * ODE_POOL_STRIDE + rank


def autoencoder_step_seed(seed: int, step: int) -> int:
    return seed * AUTOENCODER_STEP_STRIDE + step
