"""Peak process memory (max RSS) of linear_attention at n = 65536, 8 heads, head_dim 64.

One configuration per process, so each RSS is its own:
  python benchmarks/linear_memory.py fwd noncausal   # also: fwd causal, grad noncausal, grad causal
"""
import resource
import sys
import time

import jax, jax.numpy as jnp
import linformer_jax as lj
mode, causal = sys.argv[1], sys.argv[2] == 'causal'
n, h, d = 65536, 8, 64
ks = jax.random.split(jax.random.key(0), 3)
q, k, v = (jax.random.normal(kk, (1, n, h, d)) for kk in ks)
if mode == 'fwd':
  f = jax.jit(lambda q, k, v: lj.linear_attention(q, k, v, causal=causal))
else:
  f = jax.jit(jax.grad(lambda q, k, v: lj.linear_attention(q, k, v, causal=causal).sum(), argnums=(0, 1, 2)))
jax.block_until_ready(f(q, k, v))
t = time.perf_counter(); jax.block_until_ready(f(q, k, v)); dt = time.perf_counter() - t
print(mode, causal, f'{dt:.3f}s', f'maxrss {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/2**20:.2f} GiB')
