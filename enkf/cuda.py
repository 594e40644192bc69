"""The batched forecast on an NVIDIA GPU: one CUDA thread per ensemble member, numba.cuda.

enkf.batch.forecast_ensembles cuts the P N members of P paths into column blocks for the CPU
cores; here every member of every path is one GPU thread that integrates its state through the
whole cycle (steps_per_cycle model steps) in its own local memory, so a cycle of all paths is
one kernel launch and the ensembles cross the bus once each way. The arithmetic is that of
enkf.models (the same right-hand sides, the same RK4 / Euler combinations, in the same order);
on a GPU the compiler may contract a * b + c into one fused multiply-add, so a GPU forecast
agrees with the CPU one to rounding (~1e-15 relative per step), not bit for bit.

Without a GPU the same kernel runs under numba's CUDA simulator (NUMBA_ENABLE_CUDASIM=1, set
before numba is imported): tests/test_batched.py compares it with the CPU kernel that way.
"""
from __future__ import annotations

import math

import numpy as np
from numba import cuda, float64

from enkf.models import EULER, LORENZ96

MAX_N = 64  # the largest state a thread integrates (local arrays need a compile-time size)


@cuda.jit(device=True, cache=True)
def _rhs(model_id, params, x, out, n):
    if model_id == LORENZ96:
        F = params[0]
        for i in range(n):
            ip1 = i + 1 if i + 1 < n else 0
            im1 = i - 1 if i >= 1 else n - 1
            im2 = i - 2 if i >= 2 else i - 2 + n
            out[i] = (x[ip1] - x[im2]) * x[im1] - x[i] + F
    else:
        out[0] = params[0] * (x[1] - x[0])
        out[1] = x[0] * (params[1] - x[2]) - x[1]
        out[2] = x[0] * x[1] - params[2] * x[2]


@cuda.jit(cache=True)
def _forecast_kernel(EE, model_id, integrator_id, params, dt, n_steps):
    """EE (P, N, n) in place: thread t advances member t % N of path t // N."""
    t = cuda.grid(1)
    P, N, n = EE.shape
    if t >= P * N:
        return
    p, j = t // N, t % N
    x = cuda.local.array(MAX_N, float64)
    k1 = cuda.local.array(MAX_N, float64)
    k2 = cuda.local.array(MAX_N, float64)
    k3 = cuda.local.array(MAX_N, float64)
    k4 = cuda.local.array(MAX_N, float64)
    tmp = cuda.local.array(MAX_N, float64)
    for i in range(n):
        x[i] = EE[p, j, i]
    for _ in range(n_steps):
        _rhs(model_id, params, x, k1, n)
        if integrator_id == EULER:
            for i in range(n):
                x[i] += dt * k1[i]
            continue
        for i in range(n):
            tmp[i] = x[i] + 0.5 * dt * k1[i]
        _rhs(model_id, params, tmp, k2, n)
        for i in range(n):
            tmp[i] = x[i] + 0.5 * dt * k2[i]
        _rhs(model_id, params, tmp, k3, n)
        for i in range(n):
            tmp[i] = x[i] + dt * k3[i]
        _rhs(model_id, params, tmp, k4, n)
        for i in range(n):
            x[i] += dt / 6.0 * (k1[i] + 2.0 * k2[i] + 2.0 * k3[i] + k4[i])
    for i in range(n):
        EE[p, j, i] = x[i]


def available() -> bool:
    """A CUDA GPU numba can use (or the simulator)."""
    return cuda.is_available()


def forecast_ensembles(EE, model_id: int, integrator_id: int, params: np.ndarray, dt: float,
                       n_steps: int, threads_per_block: int = 128):
    """Advance every member of EE (P, N, n) by n_steps model steps on the GPU.

    EE: a host array (returns a new host array) or a device array (advanced in place and
    returned, nothing crosses the bus)."""
    P, N, n = EE.shape
    if n > MAX_N:
        raise ValueError(f"model.n: the GPU forecast integrates states of at most {MAX_N} variables, got {n}")
    on_host = isinstance(EE, np.ndarray)
    d_EE = cuda.to_device(np.ascontiguousarray(EE, dtype=np.float64)) if on_host else EE
    d_params = cuda.to_device(np.asarray(params, dtype=np.float64))
    blocks = math.ceil(P * N / threads_per_block)
    _forecast_kernel[blocks, threads_per_block](d_EE, model_id, integrator_id, d_params, float(dt), int(n_steps))
    return d_EE.copy_to_host() if on_host else d_EE
