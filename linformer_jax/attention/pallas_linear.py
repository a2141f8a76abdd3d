"""A Pallas (Triton) kernel for the paper's causal linear attention (Verma 2021).

`linear_attention(..., causal=True, implementation='pallas')` runs it (linear.py
adds the exact fallback). Imports nothing else from linformer_jax but its
constants. Per batch b and head h, with
qs = softmax over features of q (applied by the caller), keys k [n, d], values
v [n, e] and a key weight w [n] in {0, 1} (0 = padding; the caller has already
set padded keys to -1e30):

  out_i = sum_f qs_if * (sum_{j<=i} w_j exp(k_jf) v_j) / (sum_{j<=i} w_j exp(k_jf))

(0 for a query with no real key at or before it). One Triton program per
(batch, head[, value block]) walks the chunks of `chunk_size` positions in order with a
`lax.fori_loop`, carrying the online-softmax state (M [d], Z [d], S [d, e]):

  m_c   = max(M, max_j k_jf)            P = w * exp(K_c - m_c)      decay = exp(M - m_c)
  den   = cumsum_j P + decay * Z        qn = qs / den
  out_c = (qn * decay) @ S + tril(qn @ P^T) @ V_c
  S <- decay S + P^T V_c,  Z <- decay Z + sum_j P,  M <- m_c

The shift m_c cancels between numerator and denominator.

Underflow contract: when keys spread by more than ~40 nats within a chunk, den
for early positions can fall below exp(-40) and the factorised result loses
accuracy (or is plain wrong). The kernel then returns `underflow = True` and the
CALLER must discard `out` and use an exact path. Whatever the flag, the forward
and backward stay finite (den is clamped to >= exp(-40) before dividing), so a
discarded result never injects NaN (0 * inf) into gradients.

Backward (a `jax.custom_vjp`): nothing but the inputs is saved. A first kernel
re-runs the forward sweep and writes dqs plus, per chunk, the running max m_c
and the Z entering the chunk ([n/C, d] each; no per-chunk [d, e] state is
stored); a second kernel sweeps the chunks in reverse, carrying
R [d, e] = sum_{i>=j} qn_i dout_i and r [d] = sum_{i>=j} qn_i dqs_i, rescaled by
exp(m_{c-1} - m_c) <= 1 when stepping back a chunk:

  dqs_if = dout_i . num_if / den_if
  dv_j   = sum_f P_jf R_jf
  dk_jf  = P_jf (v_j . R_jf - r_jf)

The max shift is treated as a constant (it cancels). `w` gets a zero gradient.
`initial_state` (m, z, s) is differentiated (dm = z dz + sum_e s ds, the exact
partial of the (m, z, s) representation); of the returned final state, z and s
take cotangents and m is treated as a constant (which keeps chained calls exact,
since the representation is shift invariant).

Cost: O(n·d·e + n·C·d) time per (batch, head), forward and backward alike
(the backward runs two sweeps); with B value blocks the d-side part (exponentials,
normalisers, the C x C scores) is repeated per block: O(n·d·e + B·n·C·d).
Memory: O(n·d + n·e) in and out, plus O(d·e) state per program; the backward
keeps O(B·n·d) (dqs and dk partial sums) + O(B·n/C·d) (m_c, Z) extra.

GPU notes (NOT verified on a GPU here; only the Triton IR lowering was checked):
tl.dot needs every matmul dimension >= 16, so use chunk_size >= 16 on GPU (the
feature dims are padded to powers of two >= 16 here). `precision=None` gives
Triton's default for float32 dots, which is TF32; pass
`jax.lax.Precision.HIGHEST` for IEEE float32. The normalisers (den, and the
reverse sums of the backward) never use TF32.
"""
import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl

try:  # The Triton compiler params (jax.experimental.pallas.triton in 0.10/0.11).
  from jax.experimental.pallas import triton as _plgpu
  _CompilerParams = _plgpu.CompilerParams
except (ImportError, AttributeError):  # pragma: no cover - older layouts.
  _CompilerParams = None

# A denominator below exp(-MAX_SHIFT) sets the underflow flag; dividing, den is
# clamped to at least TINY so that everything stays finite.
from linformer_jax.attention.common import NEG as _NEG, TINY as _TINY  # pylint: disable=g-import-not-at-top,wrong-import-position

# Launch parameters keyed by (padded d, padded e). NOT MEASURED: no GPU was
# available when this kernel was written. These are guesses from the flash
# attention kernel's heuristics (4 warps up to 64-wide tiles, 8 beyond), with
# value blocks where a [d, e] float32 state (plus the backward's R) would crowd
# the registers. Measure before trusting them.
H200_DEFAULTS = {
    (16, 16): dict(chunk_size=64, num_warps=4, num_stages=2, block_e=None),
    (32, 32): dict(chunk_size=64, num_warps=4, num_stages=2, block_e=None),
    (64, 64): dict(chunk_size=64, num_warps=4, num_stages=2, block_e=None),
    (64, 128): dict(chunk_size=64, num_warps=8, num_stages=2, block_e=64),
    (128, 64): dict(chunk_size=64, num_warps=8, num_stages=2, block_e=None),
    (128, 128): dict(chunk_size=32, num_warps=8, num_stages=1, block_e=64),
}


def _padded(size):
  """A feature width Triton can tile: a power of two, at least 16."""
  return max(16, 1 << max(0, int(size) - 1).bit_length())


def _mm(a, b, *, ta=False, tb=False, precision=None):
  """a @ b with float32 accumulation; ta/tb contract a's rows / b's columns instead."""
  dims = (((0 if ta else 1,), (1 if tb else 0,)), ((), ()))
  return lax.dot_general(a, b, dims, precision=precision, preferred_element_type=jnp.float32)


_EXACT = lax.Precision.HIGHEST


def _chunk_terms(qs, k, w, m_prev, z_prev):
  """The per-chunk quantities shared by all three kernels (all float32).

  qs, k [C, d]; w [C]; m_prev, z_prev [d] (the state entering the chunk).
  Returns m_c [d], p [C, d], decay [d], den [C, d], has_key [C, d], qn [C, d].
  """
  m_c = jnp.maximum(m_prev, jnp.max(k, axis=0))
  p = w[:, None] * jnp.exp(k - m_c[None, :])
  decay = jnp.exp(m_prev - m_c)
  den = jnp.cumsum(p, axis=0) + (decay * z_prev)[None, :]
  # A real key at or before the position: in this chunk, or carried (Z >= 1 then,
  # since the key at the running max contributes exp(0)).
  has_key = (jnp.cumsum(w, axis=0)[:, None] > 0) | (z_prev[None, :] > 0)
  qn = jnp.where(has_key, qs / jnp.maximum(den, _TINY), 0.0)
  return m_c, p, decay, den, has_key, qn


def _masks(size):
  rows = jnp.arange(size)[:, None]
  cols = jnp.arange(size)[None, :]
  return rows >= cols, rows <= cols  # tril (j <= i), triu (i >= j as [j, i])


def _load(ref, sl):
  return ref[sl, :].astype(jnp.float32)


def _fwd_kernel(qs_ref, k_ref, w_ref, v_ref, m0_ref, z0_ref, s0_ref,
                out_ref, flag_ref, m_out_ref, z_out_ref, s_out_ref,
                *, chunk, n_chunks, n, d, precision):
  tril, _ = _masks(chunk)
  feature_ok = (jnp.arange(m0_ref.shape[0]) < d)[None, :]

  def body(c, carry):
    m, z, s, flag = carry
    start = pl.multiple_of(c * chunk, chunk)
    sl = pl.ds(start, chunk)
    qs, k, v = _load(qs_ref, sl), _load(k_ref, sl), _load(v_ref, sl)
    w = w_ref[sl].astype(jnp.float32)
    m_c, p, decay, den, has_key, qn = _chunk_terms(qs, k, w, m, z)
    valid = ((start + jnp.arange(chunk)) < n)[:, None]
    under = has_key & valid & feature_ok & (den < _TINY)
    flag = jnp.maximum(flag, jnp.max(under.astype(jnp.float32), axis=0))
    scores = jnp.where(tril, _mm(qn, p, tb=True, precision=precision), 0.0)
    out = (_mm(qn * decay[None, :], s, precision=precision)
           + _mm(scores, v, precision=precision))
    out_ref[sl, :] = out.astype(out_ref.dtype)
    s = decay[:, None] * s + _mm(p, v, ta=True, precision=precision)
    z = decay * z + jnp.sum(p, axis=0)
    return m_c, z, s, flag

  init = (m0_ref[...], z0_ref[...], s0_ref[...], jnp.zeros(m0_ref.shape, jnp.float32))
  m, z, s, flag = lax.fori_loop(0, n_chunks, body, init)
  flag_ref[...] = flag
  m_out_ref[...] = m
  z_out_ref[...] = z
  s_out_ref[...] = s


def _bwd_forward_kernel(qs_ref, k_ref, w_ref, v_ref, g_ref, m0_ref, z0_ref, s0_ref,
                        dqs_ref, mc_ref, zp_ref, *, chunk, n_chunks, precision):
  """The forward sweep again: dqs, and each chunk's running max m_c and entering Z."""
  tril, _ = _masks(chunk)

  def body(c, carry):
    m, z, s = carry
    start = pl.multiple_of(c * chunk, chunk)
    sl = pl.ds(start, chunk)
    qs, k, v, g = _load(qs_ref, sl), _load(k_ref, sl), _load(v_ref, sl), _load(g_ref, sl)
    w = w_ref[sl].astype(jnp.float32)
    m_c, p, decay, den, has_key, _ = _chunk_terms(qs, k, w, m, z)
    gv = jnp.where(tril, _mm(g, v, tb=True, precision=precision), 0.0)  # [i, j] g_i . v_j
    num_g = (decay[None, :] * _mm(g, s, tb=True, precision=precision)
             + _mm(gv, p, precision=precision))  # dout_i . num_if
    dqs = jnp.where(has_key, num_g / jnp.maximum(den, _TINY), 0.0)
    dqs_ref[sl, :] = dqs.astype(dqs_ref.dtype)
    mc_ref[pl.ds(c, 1), :] = m_c[None, :]
    zp_ref[pl.ds(c, 1), :] = z[None, :]
    s = decay[:, None] * s + _mm(p, v, ta=True, precision=precision)
    z = decay * z + jnp.sum(p, axis=0)
    return m_c, z, s

  lax.fori_loop(0, n_chunks, body, (m0_ref[...], z0_ref[...], s0_ref[...]))


def _bwd_reverse_kernel(qs_ref, k_ref, w_ref, v_ref, g_ref, dqs_ref, mc_ref, zp_ref,
                        m0_ref, ds_ref, dz_ref, dk_ref, dv_ref, ds0_ref, dz0_ref,
                        *, chunk, n_chunks, n_blocks, precision):
  """The reverse sweep: dk, dv and the initial state's (dz0, ds0).

  With value blocks, dk is a partial sum over the blocks (v_j . R_jf splits over
  e); each block adds 1/n_blocks of the -r_jf term, which does not depend on e
  (n_blocks is a power of two, so the split itself is exact).
  """
  _, triu = _masks(chunk)
  triu_f = triu.astype(jnp.float32)

  def body(i, carry):
    big_r, r = carry  # In the shift of chunk c: the sums over the chunks after it.
    c = n_chunks - 1 - i
    start = pl.multiple_of(c * chunk, chunk)
    sl = pl.ds(start, chunk)
    qs, k, v, g = _load(qs_ref, sl), _load(k_ref, sl), _load(v_ref, sl), _load(g_ref, sl)
    dqs = _load(dqs_ref, sl)
    w = w_ref[sl].astype(jnp.float32)
    # The state entering chunk c: the previous chunk's running max (m0 for the
    # first) and Z; m_c = max(m_prev, max k) is recomputed exactly.
    z_prev = jnp.sum(zp_ref[pl.ds(c, 1), :], axis=0)
    m_before = jnp.sum(mc_ref[pl.ds(jnp.maximum(c - 1, 0), 1), :], axis=0)
    m_prev = jnp.where(c > 0, m_before, m0_ref[...])
    _, p, decay, _, _, qn = _chunk_terms(qs, k, w, m_prev, z_prev)
    pq = jnp.where(triu, _mm(p, qn, tb=True, precision=precision), 0.0)  # [j, i], i >= j
    dv = _mm(p, big_r, precision=precision) + _mm(pq, g, precision=precision)
    vg = jnp.where(triu, _mm(v, g, tb=True, precision=precision), 0.0)  # [j, i] v_j . g_i
    v_dot_r = _mm(v, big_r, tb=True, precision=precision) + _mm(vg, qn, precision=precision)
    qd = qn * dqs
    suffix_r = r[None, :] + _mm(triu_f, qd, precision=_EXACT)
    dk = p * (v_dot_r - suffix_r * (1.0 / n_blocks))
    dk_ref[sl, :] = dk.astype(dk_ref.dtype)
    dv_ref[sl, :] = dv.astype(dv_ref.dtype)
    big_r = (big_r + _mm(qn, g, ta=True, precision=precision)) * decay[:, None]
    r = (r + jnp.sum(qd, axis=0)) * decay
    return big_r, r

  big_r, r = lax.fori_loop(0, n_chunks, body, (ds_ref[...], -dz_ref[...]))
  ds0_ref[...] = big_r
  dz0_ref[...] = -r


# Specs over the grid (batch i, head j, value block l).
def _seq_spec(n_pad, f):
  """[b, n, h, f], f not blocked (qs, k, dqs, dk)."""
  return pl.BlockSpec((None, n_pad, None, f), lambda i, j, l: (i, 0, j, 0))


def _seq_e_spec(n_pad, block_e):
  """[b, n, h, e] in value blocks (v, out, dout, dv)."""
  return pl.BlockSpec((None, n_pad, None, block_e), lambda i, j, l: (i, 0, j, l))


def _w_spec(n_pad):
  return pl.BlockSpec((None, n_pad), lambda i, j, l: (i, 0))


def _head_spec(*shape):
  """[b, h, *shape], not blocked (m0, z0)."""
  return pl.BlockSpec((None, None) + shape, lambda i, j, l: (i, j) + (0,) * len(shape))


def _state_e_spec(dp, block_e):
  """[b, h, d, e] in value blocks (s0, s, ds, ds0)."""
  return pl.BlockSpec((None, None, dp, block_e), lambda i, j, l: (i, j, 0, l))


def _per_block_spec(*shape):
  """[b, h, value blocks, *shape]: one copy per value block (flag, m, z, ...)."""
  return pl.BlockSpec((None, None, None) + shape, lambda i, j, l: (i, j, l) + (0,) * len(shape))


def _partial_seq_spec(n_pad, f):
  """[value blocks, b, n, h, f]: one partial sum per value block (dqs, dk)."""
  return pl.BlockSpec((None, None, n_pad, None, f), lambda i, j, l: (l, i, 0, j, 0))


def _call(kernel, cfg, name, in_specs, out_specs, out_shape, grid, *args):
  params = None
  if _CompilerParams is not None:
    params = _CompilerParams(num_warps=cfg.num_warps, num_stages=cfg.num_stages)
  return pl.pallas_call(
      kernel, grid=grid, in_specs=in_specs, out_specs=out_specs, out_shape=out_shape,
      compiler_params=params, interpret=cfg.interpret, name=name)(*args)


class _Config(tuple):
  """Static settings: (chunk, n, d, num_warps, num_stages, interpret, precision, block_e)."""
  __slots__ = ()
  chunk = property(lambda self: self[0])
  n = property(lambda self: self[1])
  d = property(lambda self: self[2])
  num_warps = property(lambda self: self[3])
  num_stages = property(lambda self: self[4])
  interpret = property(lambda self: self[5])
  precision = property(lambda self: self[6])
  block_e = property(lambda self: self[7])


def _forward(cfg, qs, k, w, v, m0, z0, s0):
  b, n_pad, h, dp = qs.shape
  ep, be = v.shape[-1], cfg.block_e
  nb = ep // be
  f32 = jnp.float32
  kernel = functools.partial(_fwd_kernel, chunk=cfg.chunk, n_chunks=n_pad // cfg.chunk,
                             n=cfg.n, d=cfg.d, precision=cfg.precision)
  out, flag, m, z, s = _call(
      kernel, cfg, 'causal_linear_fwd',
      [_seq_spec(n_pad, dp), _seq_spec(n_pad, dp), _w_spec(n_pad), _seq_e_spec(n_pad, be),
       _head_spec(dp), _head_spec(dp), _state_e_spec(dp, be)],
      [_seq_e_spec(n_pad, be), _per_block_spec(dp), _per_block_spec(dp), _per_block_spec(dp),
       _state_e_spec(dp, be)],
      [jax.ShapeDtypeStruct((b, n_pad, h, ep), f32), jax.ShapeDtypeStruct((b, h, nb, dp), f32),
       jax.ShapeDtypeStruct((b, h, nb, dp), f32), jax.ShapeDtypeStruct((b, h, nb, dp), f32),
       jax.ShapeDtypeStruct((b, h, dp, ep), f32)],
      (b, h, nb), qs, k, w, v, m0, z0, s0)
  # Every value block computes the same flag, m and z.
  return out, flag[:, :, 0], m[:, :, 0], z[:, :, 0], s


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _core(cfg, qs, k, w, v, m0, z0, s0):
  """Padded inputs -> (out, per-feature flag, m, z, s), all float32."""
  return tuple(_forward(cfg, qs, k, w, v, m0, z0, s0))


def _core_fwd(cfg, qs, k, w, v, m0, z0, s0):
  return _core(cfg, qs, k, w, v, m0, z0, s0), (qs, k, w, v, m0, z0, s0)


def _core_bwd(cfg, residuals, cotangents):
  qs, k, w, v, m0, z0, s0 = residuals
  g, _, _, dz, ds = cotangents  # The flag and the final m take no cotangent.
  b, n_pad, h, dp = qs.shape
  ep, be = v.shape[-1], cfg.block_e
  nb = ep // be
  n_chunks = n_pad // cfg.chunk
  f32 = jnp.float32
  g = g.astype(f32)
  kernel = functools.partial(_bwd_forward_kernel, chunk=cfg.chunk, n_chunks=n_chunks,
                             precision=cfg.precision)
  dqs, mc, zp = _call(
      kernel, cfg, 'causal_linear_bwd_fwd',
      [_seq_spec(n_pad, dp), _seq_spec(n_pad, dp), _w_spec(n_pad), _seq_e_spec(n_pad, be),
       _seq_e_spec(n_pad, be), _head_spec(dp), _head_spec(dp), _state_e_spec(dp, be)],
      [_partial_seq_spec(n_pad, dp), _per_block_spec(n_chunks, dp),
       _per_block_spec(n_chunks, dp)],
      [jax.ShapeDtypeStruct((nb, b, n_pad, h, dp), f32),
       jax.ShapeDtypeStruct((b, h, nb, n_chunks, dp), f32),
       jax.ShapeDtypeStruct((b, h, nb, n_chunks, dp), f32)],
      (b, h, nb), qs, k, w, v, g, m0, z0, s0)
  dqs = jnp.sum(dqs, axis=0)  # dout_i . num_if / den_if, summed over the value blocks.
  mc, zp = mc[:, :, 0], zp[:, :, 0]  # The same in every value block.
  kernel = functools.partial(_bwd_reverse_kernel, chunk=cfg.chunk, n_chunks=n_chunks,
                             n_blocks=nb, precision=cfg.precision)
  dk, dv, ds0, dz0 = _call(
      kernel, cfg, 'causal_linear_bwd_rev',
      [_seq_spec(n_pad, dp), _seq_spec(n_pad, dp), _w_spec(n_pad), _seq_e_spec(n_pad, be),
       _seq_e_spec(n_pad, be), _seq_spec(n_pad, dp), _head_spec(n_chunks, dp),
       _head_spec(n_chunks, dp), _head_spec(dp), _state_e_spec(dp, be), _head_spec(dp)],
      [_partial_seq_spec(n_pad, dp), _seq_e_spec(n_pad, be), _state_e_spec(dp, be),
       _per_block_spec(dp)],
      [jax.ShapeDtypeStruct((nb, b, n_pad, h, dp), f32),
       jax.ShapeDtypeStruct((b, n_pad, h, ep), f32),
       jax.ShapeDtypeStruct((b, h, dp, ep), f32), jax.ShapeDtypeStruct((b, h, nb, dp), f32)],
      (b, h, nb), qs, k, w, v, g, dqs, mc, zp, m0, ds.astype(f32), dz.astype(f32))
  dk = jnp.sum(dk, axis=0)
  dz0 = dz0[:, :, 0]
  # The state represents exp(m) z and exp(m) s: d/dm at fixed (z, s).
  dm0 = z0 * dz0 + jnp.sum(s0 * ds0, axis=-1)
  return (dqs.astype(qs.dtype), dk.astype(k.dtype), jnp.zeros_like(w), dv.astype(v.dtype),
          dm0, dz0, ds0)


_core.defvjp(_core_fwd, _core_bwd)


@functools.partial(jax.jit, static_argnames=('chunk_size', 'return_state', 'num_warps',
                                             'num_stages', 'interpret', 'precision',
                                             'block_e'))
def causal_linear(qs, k, w, v, *, chunk_size=64, initial_state=None, return_state=False,
                  num_warps=4, num_stages=2, interpret=False, precision=None, block_e=None):
  """Causal linear attention of the paper, as a Pallas Triton kernel.

  Args:
    qs: [batch, n, heads, d], the feature-softmaxed queries (float32 or bfloat16).
    k: [batch, n, heads, d] keys; padded keys already set to -1e30 by the caller.
    w: [batch, n] key weights, 1.0 for a real key, 0.0 for padding.
    v: [batch, n, heads, e] values (float32 or bfloat16).
    chunk_size: positions per chunk C (>= 16 on a GPU; any size in interpret mode).
      n is padded up to a multiple inside.
    initial_state: None, or (m [b, h, d], z [b, h, d], s [b, h, d, e]) float32, the
      state after some earlier keys (e.g. the final state of a previous call).
    return_state: also return the final state (m, z, s) after the last position.
    num_warps, num_stages: Triton launch parameters (see H200_DEFAULTS, unmeasured).
    interpret: run with Pallas interpret mode (CPU testing).
    precision: for the matmuls (None: Triton's default, TF32 on GPU for float32).
    block_e: None (all of e in one program), or a power of two >= 16 that divides
      the padded e: one program per (batch, head, value block) then, each
      recomputing the d-side work (exponentials, normalisers, C x C scores);
      more programs and a smaller [d, block_e] state per program.

  Returns:
    (out [batch, n, heads, e] float32, underflow bool scalar), plus the final state
    (m, z, s) with `return_state`. `underflow` is True when some position with a
    real key at or before it (counting `initial_state`) had a denominator below
    exp(-40) in its chunk's shift: `out` is then unreliable and the caller must use
    an exact path. Outputs and gradients are finite either way.

  Differentiable in qs, k, v and initial_state (w gets zero). Cost O(n·d·e + n·C·d)
  time; memory O(n·(d + e)) besides O(d·e) state per (batch, head).
  """
  b, n, h, d = qs.shape
  e = v.shape[-1]
  if k.shape != qs.shape or v.shape[:3] != (b, n, h) or w.shape != (b, n):
    raise ValueError(f'causal_linear: shapes qs {qs.shape}, k {k.shape}, w {w.shape}, '
                     f'v {v.shape} do not match')
  chunk = int(chunk_size)
  if chunk < 1:
    raise ValueError(f'causal_linear: chunk_size must be positive, got {chunk_size}')
  dp, ep = _padded(d), _padded(e)
  n_pad = max(chunk, -(-n // chunk) * chunk)
  f32 = jnp.float32
  if initial_state is None:
    m0 = jnp.full((b, h, d), _NEG, f32)
    z0 = jnp.zeros((b, h, d), f32)
    s0 = jnp.zeros((b, h, d, e), f32)
  else:
    m0, z0, s0 = (jnp.asarray(x, f32) for x in initial_state)
  # Padded features: qs 0 (they reach no output), k 0 and an empty state;
  # padded positions: k -1e30, w 0, qs and v 0.
  seq = (0, n_pad - n)
  qs_p = jnp.pad(qs, ((0, 0), seq, (0, 0), (0, dp - d)))
  k_p = jnp.pad(jnp.pad(k, ((0, 0), (0, 0), (0, 0), (0, dp - d))),
                ((0, 0), seq, (0, 0), (0, 0)), constant_values=_NEG)
  v_p = jnp.pad(v, ((0, 0), seq, (0, 0), (0, ep - e)))
  w_p = jnp.pad(w.astype(f32), ((0, 0), seq))
  m0_p = jnp.pad(m0, ((0, 0), (0, 0), (0, dp - d)), constant_values=_NEG)
  z0_p = jnp.pad(z0, ((0, 0), (0, 0), (0, dp - d)))
  s0_p = jnp.pad(s0, ((0, 0), (0, 0), (0, dp - d), (0, ep - e)))
  be = ep if block_e is None else int(block_e)
  if be < 16 or be & (be - 1) or ep % be:
    raise ValueError(f'causal_linear: block_e must be a power of two >= 16 dividing the '
                     f'padded e ({ep}), got {block_e}')
  cfg = _Config((chunk, n, d, int(num_warps), int(num_stages), bool(interpret), precision, be))
  out, flag, m, z, s = _core(cfg, qs_p, k_p, w_p, v_p, m0_p, z0_p, s0_p)
  out = out[:, :n, :, :e]
  underflow = jnp.any(lax.stop_gradient(flag) > 0)
  if not return_state:
    return out, underflow
  return out, underflow, (lax.stop_gradient(m[..., :d]), z[..., :d], s[..., :d, :e])
