// Hand-written CPU kernels: block formats, OCP MX and BFP (a shared E8M0 scale per block,
// float or fixed-point elements) and the shared micro-exponent formats (MX9/MX6/MX4), and
// nearest_even of element formats by float arithmetic. native.py says why they exist and
// how they are built; kernels/block.py, kernels/grid.py and kernels/core.py hold the
// definitions they follow, and the tests hold them equal to those bit for bit.
//
// Blocks: float32, contiguous, (nblocks, block) row-major with block a multiple of 16; the
// output has the same layout. Elements: n float32 values. Parameters: the int32 vector p and
// the float32 vector q of kernels/core.py; their slot numbers arrive as macros
// (-DP_SR_BITS=6 ...) made from the Python constants, so the two cannot drift apart.
//
// Written with GCC/Clang vector extensions, 16 float32 lanes (one AVX-512 register; the
// compiler splits it where vectors are narrower), because GCC's auto-vectoriser left the
// element loop of a 16-element block scalar. Compiled without -ffast-math and with
// -ffp-contract=off: every float operation is an IEEE operation the eager kernel performs
// (the floor, below, is exact by construction).

#include <cstdint>
#include <cstring>
#include <vector>

namespace {

enum Mode { NEAREST_EVEN = 0, NEAREST_AWAY = 1, TOWARD_ZERO = 2, DOWN = 3, UP = 4, STOCHASTIC = 5 };

constexpr int L = 16;  // lanes
typedef float vf __attribute__((vector_size(64)));
typedef int32_t vi __attribute__((vector_size(64)));
typedef uint32_t vu __attribute__((vector_size(64)));

inline vf load(const float* p) {
  vf v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

inline void store(float* p, vf v) { std::memcpy(p, &v, sizeof v); }

inline vf splat(float s) { return vf{} + s; }
inline vu splat_u(uint32_t s) { return vu{} + s; }
inline vi splat_i(int32_t s) { return vi{} + s; }

inline vu umax(vu a, vu b) { return a > b ? a : b; }
inline uint32_t umax1(uint32_t a, uint32_t b) { return a > b ? a : b; }

// lane e takes lane e ^ K
#define XOR_LANES(K)                                                                       \
  0 ^ K, 1 ^ K, 2 ^ K, 3 ^ K, 4 ^ K, 5 ^ K, 6 ^ K, 7 ^ K, 8 ^ K, 9 ^ K, 10 ^ K, 11 ^ K, 12 ^ K, \
      13 ^ K, 14 ^ K, 15 ^ K
template <int K>
inline vu swap_lanes(vu v) {
#ifdef __clang__
  return __builtin_shufflevector(v, v, XOR_LANES(K));
#else
  return __builtin_shuffle(v, vu{XOR_LANES(K)});
#endif
}

// The maximum over runs of `run` lanes (a power of two, 1..16) starting at multiples of run,
// in every lane of the run, from the runs of `from` lanes (from <= run).
inline vu run_max(vu m, int from, int run) {
  if (from < 2 && run >= 2) m = umax(m, swap_lanes<1>(m));
  if (from < 4 && run >= 4) m = umax(m, swap_lanes<2>(m));
  if (from < 8 && run >= 8) m = umax(m, swap_lanes<4>(m));
  if (from < 16 && run >= 16) m = umax(m, swap_lanes<8>(m));
  return m;
}

// 2**(sf - 127) for biased exponents sf in [0, 254]; sf = 0 gives 2**-127 (as _pow2_biased).
inline vf pow2_biased(vi sf) {
  return sf == 0 ? (vf)splat_u(0x00400000u) : (vf)((vu)sf << 23);
}

// lowbias32 (numerics.rounding.lowbias32) on uint32 lanes: logical shifts, wrapping products.
inline vu lowbias32(vu h) {
  h ^= h >> 16;
  h *= 0x7FEB352Du;
  h ^= h >> 15;
  h *= 0x846CA68Bu;
  h ^= h >> 16;
  return h;
}

const vu IOTA = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15};

// What every element of a call shares: the element grid (from q) and the random source.
struct Grid {
  vf cmin, cmax;     // the clamp: -max_neg, max_pos
  vf c;              // the adder constant: 2**(emax + 23 - m) fixed, 2**(emin + 23 - m) float
  vf step, inv_step; // fixed point: the step 2**(emax - m) and its inverse
  vf lo, split, ulp; // float elements: 2**emin, 2**(23 - m) + 1, 2**-m
  vf two_r;          // 2**R, R random bits
  uint32_t k0, k1, shift;  // the keys; 32 - R
};

Grid grid(const int32_t* p, const float* q) {
  const float step = q[Q_C] * 0x1p-23f;
  return {splat(-q[Q_MAX_NEG]),
          splat(q[Q_MAX_POS]),
          splat(q[Q_C]),
          splat(step),
          splat(1.0f / step),
          splat(q[Q_LO]),
          splat(q[Q_SPLIT]),
          splat((q[Q_SPLIT] - 1.0f) * 0x1p-23f),
          splat(static_cast<float>(1 << p[P_SR_BITS])),
          static_cast<uint32_t>(p[P_KEY0]),
          static_cast<uint32_t>(p[P_KEY1]),
          static_cast<uint32_t>(32 - p[P_SR_BITS])};
}

// round_elements (kernels/grid.py): element-space values xs, scaled from x, rounded to the
// element grid, saturating; a fixed-point grid (FIXED) has one step and a two's-complement
// zero, a float grid the step of each value's binade. idx numbers the elements for
// stochastic rounding.
template <int MODE, bool FIXED>
inline vf round_elements(vf x, vf xs, const Grid& g, vu idx) {
  vf v = xs < g.cmin ? g.cmin : xs;
  v = v > g.cmax ? g.cmax : v;
  v = (vf)((vu)v & 0x7FFFFFFFu);
  vf y;
  if (MODE == NEAREST_EVEN && FIXED) {
    y = (v + g.c) - g.c;
  } else if (MODE == NEAREST_EVEN) {  // round_magnitude: Veltkamp's split, the adder below lo
    const vf s = v * g.split;
    y = v < g.lo ? (v + g.c) - g.c : s - (s - v);
  } else {
    vf step = g.step, inv_step = g.inv_step;
    if (!FIXED) {  // max(pow2_floor(v), 2**emin) * 2**-m, as grid.py
      const vf s = v * 8388609.0f;
      vf hi = s - (s - v);
      hi = hi > v ? hi * 0.5f : hi;
      step = (hi < g.lo ? g.lo : hi) * g.ulp;
      inv_step = 1.0f / step;
    }
    const vf t = v * inv_step;
    // floor(t), t >= 0: below 2**23, t + 2**23 rounds t to an integer (its binade's ulp is
    // 1), exactly, and a result above t steps down by one; from 2**23 up t is an integer.
    const vf big = splat(0x1p23f);
    const vf r = (t + big) - big;
    vf n = r > t ? r - 1.0f : r;
    n = t >= big ? t : n;
    const vf f = t - n;
    vi up;
    if (MODE == STOCHASTIC) {
      const vu h = lowbias32(lowbias32(idx ^ g.k0) + g.k1) >> g.shift;
      up = f * g.two_r >= __builtin_convertvector((vi)h + 1, vf);
    } else if (MODE == NEAREST_AWAY) {
      up = f >= 0.5f;
    } else if (MODE == TOWARD_ZERO) {
      up = vi{};
    } else {
      const vi inexact = (f > 0.0f) | ((xs == 0.0f) & (x != 0.0f));
      const vi neg = x < 0.0f;
      up = inexact & (MODE == UP ? ~neg : neg);
    }
    y = (n + (vf)((vu)up & 0x3F800000u)) * step;  // n + 1.0 or n + 0.0
  }
  const vf out = (vf)((vu)y | ((vu)xs & 0x80000000u));  // y >= +0: copysign
  if (FIXED) return y == 0.0f ? vf{} : out;
  return out;
}

// |x|'s largest bit pattern over a block of nv vectors, in every lane
inline vu block_max(const float* xi, int64_t nv) {
  vu m = vu{};
  for (int64_t k = 0; k < nv; ++k) m = umax(m, (vu)load(xi + k * L) & 0x7FFFFFFFu);
  return run_max(m, 1, L);
}

// The E8M0 scale rule of MX / BFP (block._mx_scales), from the block maxima m (per lane).
struct MxRule {
  int32_t emax;  // the element format's emax
  vi top;        // 254 - emax: the largest biased scale exponent
  bool ceil;     // the ceil rule (double the scale once while amax exceeds max * scale)
  vf max_pos;    // the element format's maximum
};

MxRule mx_rule(const int32_t* p, const float* q) {
  return {p[P_EMAX_ELEM], splat_i(254 - p[P_EMAX_ELEM]), p[P_CEIL] == 1, splat(q[Q_MAX_POS])};
}

struct Scales {
  vf scale, inv;  // 2**s and 2**-s
  vi bad;         // the block holds an inf or a NaN: all of it is NaN
};

inline Scales mx_scales(vu m, const MxRule& r) {
  vi sf = (vi)(m >> 23) - r.emax;
  sf = sf < 0 ? vi{} : sf;
  sf = sf > r.top ? r.top : sf;
  if (r.ceil) {
    const vi bump = (vf)m > r.max_pos * pow2_biased(sf);
    sf = bump ? (sf + 1 > r.top ? r.top : sf + 1) : sf;
  }
  return {pow2_biased(sf), pow2_biased(254 - sf), m >= 0x7F800000u};
}

// The shared micro-exponents' block scale 2**E (E = floor(log2 amax), clamped at -127; a zero
// or float32-subnormal maximum gives 2**-127), from the block maxima m (per lane).
struct Micro {
  vu scale_bits;
  vf scale, inv;
  vi can_tau;  // E above the clamp: a sub-block may take 2**(E - 1)
  vi bad;
};

inline Micro smx_scales(vu m) {
  const vu ex = m >> 23;
  const vu bits = ex == 0 ? splat_u(0x00400000u) : ex << 23;
  return {bits, (vf)bits, 1.0f / (vf)bits, ex != 0, m >= 0x7F800000u};
}

const vf NAN_V = (vf)splat_u(0x7FC00000u);

// MX / BFP (block_kernel), blocks along the last axis: NV vectors of 16 per block (0: a
// runtime count, nv), the block maximum reduced across lanes.
template <int MODE, int NV, bool FIXED>
void block(const float* __restrict x, float* __restrict out, int64_t nblocks, int64_t nv_,
           const int32_t* p, const float* q, int nthreads, int64_t first = 0) {
  const int64_t nv = NV ? NV : nv_;
  const Grid g = grid(p, q);
  const MxRule rule = mx_rule(p, q);
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (int64_t i = 0; i < nblocks; ++i) {
    const float* xi = x + i * nv * L;
    float* oi = out + i * nv * L;
    const Scales s = mx_scales(block_max(xi, nv), rule);
    const vu base = IOTA + static_cast<uint32_t>((first + i) * nv * L);
    for (int64_t k = 0; k < nv; ++k) {
      const vf xe = load(xi + k * L);
      const vf y =
          round_elements<MODE, FIXED>(xe, xe * s.inv, g, base + static_cast<uint32_t>(k * L));
      store(oi + k * L, s.bad ? NAN_V : y * s.scale);
    }
  }
}

// Shared micro-exponents (smx_kernel), blocks along the last axis: a run of `sub` elements
// (a power of two, at most 16) whose maximum lies below 2**E takes the scale 2**(E - 1).
template <int MODE, int NV, int SUB>
void smx(const float* __restrict x, float* __restrict out, int64_t nblocks, int64_t nv_,
         int sub_, const int32_t* p, const float* q, int nthreads, int64_t first = 0) {
  const int64_t nv = NV ? NV : nv_;
  const int sub = SUB ? SUB : sub_;
  const Grid g = grid(p, q);
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (int64_t i = 0; i < nblocks; ++i) {
    const float* xi = x + i * nv * L;
    float* oi = out + i * nv * L;
    const Micro s = smx_scales(block_max(xi, nv));
    const vu base = IOTA + static_cast<uint32_t>((first + i) * nv * L);
    for (int64_t k = 0; k < nv; ++k) {
      const vf xe = load(xi + k * L);
      const vu sm = run_max((vu)xe & 0x7FFFFFFFu, 1, sub);  // its run's maximum, per lane
      const vi tau = s.can_tau & (sm < s.scale_bits);
      const vf sc = tau ? s.scale * 0.5f : s.scale;
      const vf iv = tau ? s.inv * 2.0f : s.inv;
      const vf y =
          round_elements<MODE, true>(xe, xe * iv, g, base + static_cast<uint32_t>(k * L));
      store(oi + k * L, s.bad ? NAN_V : y * sc);
    }
  }
}

// Blocks of NV vectors (16 or 32 elements) along the last axis, 16 blocks at a time: their
// maxima are reduced together by a four-stage shuffle network (15 maxima, 30 two-vector
// shuffles for 16 blocks, where one block alone takes 4 lane swaps and 4 maxima), their
// scales computed once, one block per lane, and each block's lane broadcast back. A block
// holding an inf or NaN gets a NaN scale, which makes all of it NaN. The last nblocks % 16
// blocks go one at a time.
#ifdef __clang__
#define SHUFFLE2(a, b, ...) __builtin_shufflevector(a, b, __VA_ARGS__)
#else
#define SHUFFLE2(a, b, ...) __builtin_shuffle(a, b, vu{__VA_ARGS__})
#endif

// halve the partial maxima per block: lanes i of a pair of vectors, by the index lists lo, hi
#define HALVE(a, b, LO, HI) umax(SHUFFLE2(a, b, LO), SHUFFLE2(a, b, HI))
#define LO8 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23
#define HI8 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31
#define LO4 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27
#define HI4 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31
#define LO2 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29
#define HI2 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31
#define LO1 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30
#define HI1 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31

// lane b: the largest |x| bit pattern of block b (NV vectors) of the 16 blocks at x
template <int NV>
inline vu max_16_blocks(const float* x) {
  vu a[L], w8[8], w4[4], w2[2];
  for (int b = 0; b < L; ++b) {
    a[b] = vu{};
    for (int k = 0; k < NV; ++k) a[b] = umax(a[b], (vu)load(x + (b * NV + k) * L) & 0x7FFFFFFFu);
  }
  for (int k = 0; k < 8; ++k) w8[k] = HALVE(a[2 * k], a[2 * k + 1], LO8, HI8);
  for (int k = 0; k < 4; ++k) w4[k] = HALVE(w8[2 * k], w8[2 * k + 1], LO4, HI4);
  for (int k = 0; k < 2; ++k) w2[k] = HALVE(w4[2 * k], w4[2 * k + 1], LO2, HI2);
  return HALVE(w2[0], w2[1], LO1, HI1);
}

inline vu lane_of(vu v, int b) {
#ifdef __clang__
  vu out;
  for (int j = 0; j < L; ++j) out[j] = v[b];
  return out;
#else
  return __builtin_shuffle(v, splat_u(static_cast<uint32_t>(b)));
#endif
}

template <int MODE, int NV, bool FIXED>
void block16(const float* __restrict x, float* __restrict out, int64_t nblocks,
             const int32_t* p, const float* q, int nthreads) {
  const Grid g = grid(p, q);
  const MxRule rule = mx_rule(p, q);
  const int64_t groups = nblocks / L;
  constexpr int64_t STEP = L * NV * L;  // floats per 16 blocks
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (int64_t h = 0; h < groups; ++h) {
    const float* xh = x + h * STEP;
    float* oh = out + h * STEP;
    const Scales s = mx_scales(max_16_blocks<NV>(xh), rule);
    const vu scale = (vu)(s.bad ? NAN_V : s.scale);
    for (int b = 0; b < L; ++b) {
      const vf sc = (vf)lane_of(scale, b), iv = (vf)lane_of((vu)s.inv, b);
      for (int k = 0; k < NV; ++k) {
        const int64_t e = (b * NV + k) * L;
        const vf xe = load(xh + e);
        const vu idx = IOTA + static_cast<uint32_t>(h * STEP + e);
        store(oh + e, round_elements<MODE, FIXED>(xe, xe * iv, g, idx) * sc);
      }
    }
  }
  const int64_t done = groups * L;
  block<MODE, NV, FIXED>(x + done * NV * L, out + done * NV * L, nblocks - done, NV, p, q, 1,
                         done);
}

template <int MODE, int SUB>
void smx16(const float* __restrict x, float* __restrict out, int64_t nblocks, int sub_,
           const int32_t* p, const float* q, int nthreads) {
  const int sub = SUB ? SUB : sub_;
  const Grid g = grid(p, q);
  const int64_t groups = nblocks / L;
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (int64_t h = 0; h < groups; ++h) {
    const float* xh = x + h * L * L;
    float* oh = out + h * L * L;
    const Micro s = smx_scales(max_16_blocks<1>(xh));
    const vu bits = s.bad ? splat_u(0x7FC00000u) : s.scale_bits;  // NaN: the block is NaN
    for (int b = 0; b < L; ++b) {
      const vu sb = lane_of(bits, b);
      const vf scale = (vf)sb, inv = (vf)lane_of((vu)s.inv, b);
      const vf xe = load(xh + b * L);
      const vu sm = run_max((vu)xe & 0x7FFFFFFFu, 1, sub);
      const vi tau = (sb != 0x00400000u) & (sm < sb);  // not on the clamp 2**-127
      const vf sc = tau ? scale * 0.5f : scale;
      const vf iv = tau ? inv * 2.0f : inv;
      const vu idx = IOTA + static_cast<uint32_t>((h * L + b) * L);
      store(oh + b * L, round_elements<MODE, true>(xe, xe * iv, g, idx) * sc);
    }
  }
  const int64_t done = groups * L;
  smx<MODE, 1, SUB>(x + done * L, out + done * L, nblocks - done, 1, sub, p, q, 1, done);
}

// Blocks along a non-last axis, read in place: (nblocks, block, post) with each block
// running along dim 1. The 16 lanes are 16 neighbouring positions along post, each its own
// block, so a block maximum is a lane-wise maximum over the block's rows, with no reduction
// across lanes. A work item is a band: one block index n and up to SEG * 16 positions along
// post, read row by row (contiguous), once for the maxima and again to round (from L2; a
// (block, 16) tile read down its column instead strides post floats from row to row, and
// its rows fight for one L1 set when post is a multiple of 1024). A last tile narrower than
// 16 positions goes through a zero-padded vector. Stochastic rounding numbers element
// (n, e, j), n = i * nbpa + k, as the axis-last layout would:
// (i * post + j) * nbpa * block + k * block + e (see core.sr_random).
constexpr int64_t SEG = 64;  // tiles per band: 1,024 positions

inline vf load_part(const float* src, int64_t lanes) {
  if (lanes == L) return load(src);
  float buf[L] = {};
  std::memcpy(buf, src, lanes * sizeof(float));
  return load(buf);
}

inline void store_part(float* dst, vf v, int64_t lanes) {
  if (lanes == L) return store(dst, v);
  float buf[L];
  store(buf, v);
  std::memcpy(dst, buf, lanes * sizeof(float));
}

struct Band {
  const float* src;  // row 0, first position of the band
  float* dst;
  int64_t post, block;
  int64_t ntiles, last;  // tiles in the band, lanes of the last one
  vu base;               // the random-bit number of lane 0's element e = 0, per lane
  uint32_t tile_step;    // what 16 positions add to it
  int64_t lanes(int64_t t) const { return t + 1 < ntiles ? L : last; }
};

// per tile, |x|'s largest bit pattern over rows [e0, e1), lane by lane
inline void band_max(const Band& b, int64_t e0, int64_t e1, vu* m) {
  for (int64_t t = 0; t < b.ntiles; ++t) m[t] = vu{};
  for (int64_t e = e0; e < e1; ++e) {
    const float* row = b.src + e * b.post;
    for (int64_t t = 0; t < b.ntiles; ++t) {
      m[t] = umax(m[t], (vu)load_part(row + t * L, b.lanes(t)) & 0x7FFFFFFFu);
    }
  }
}

// rows [e0, e1) rounded, tile t at inverse scale iv[t] and scale sc[t]
template <int MODE, bool FIXED>
inline void band_round(const Band& b, int64_t e0, int64_t e1, const vf* iv, const vf* sc,
                       const vi* bad, const Grid& g) {
  for (int64_t e = e0; e < e1; ++e) {
    const float* row = b.src + e * b.post;
    float* orow = b.dst + e * b.post;
    for (int64_t t = 0; t < b.ntiles; ++t) {
      const vf xe = load_part(row + t * L, b.lanes(t));
      const vu idx = b.base + static_cast<uint32_t>(e) + b.tile_step * static_cast<uint32_t>(t);
      const vf y = round_elements<MODE, FIXED>(xe, xe * iv[t], g, idx);
      store_part(orow + t * L, bad[t] ? NAN_V : y * sc[t], b.lanes(t));
    }
  }
}

template <int MODE, bool FIXED>
inline void block_band(const Band& b, const Grid& g, const MxRule& rule) {
  vu m[SEG];
  vf iv[SEG], sc[SEG];
  vi bad[SEG];
  band_max(b, 0, b.block, m);
  for (int64_t t = 0; t < b.ntiles; ++t) {
    const Scales s = mx_scales(m[t], rule);
    iv[t] = s.inv, sc[t] = s.scale, bad[t] = s.bad;
  }
  band_round<MODE, FIXED>(b, 0, b.block, iv, sc, bad, g);
}

template <int MODE>
inline void smx_band(const Band& b, const Grid& g, int64_t sub) {
  vu m[SEG];
  band_max(b, 0, b.block, m);
  for (int64_t t = 0; t < b.ntiles; ++t) {
    const Micro s = smx_scales(m[t]);
    const int64_t lanes = b.lanes(t);
    const vu base = b.base + b.tile_step * static_cast<uint32_t>(t);
    for (int64_t r = 0; r < b.block; r += sub) {  // a run of sub rows: a few L1 lines
      vu sm = vu{};
      for (int64_t e = r; e < r + sub; ++e) {
        sm = umax(sm, (vu)load_part(b.src + e * b.post + t * L, lanes) & 0x7FFFFFFFu);
      }
      const vi tau = s.can_tau & (sm < s.scale_bits);
      const vf sc = tau ? s.scale * 0.5f : s.scale;
      const vf iv = tau ? s.inv * 2.0f : s.inv;
      for (int64_t e = r; e < r + sub; ++e) {
        const vf xe = load_part(b.src + e * b.post + t * L, lanes);
        const vf y = round_elements<MODE, true>(xe, xe * iv, g, base + static_cast<uint32_t>(e));
        store_part(b.dst + e * b.post + t * L, s.bad ? NAN_V : y * sc, lanes);
      }
    }
  }
}

// F(band) over every band of a (nblocks, block, post) layout
template <typename F>
void over_bands(const float* __restrict x, float* __restrict out, int64_t nblocks,
                int64_t block, int64_t post, int32_t nbpa_, int nthreads, const F& f) {
  const int64_t tiles = (post + L - 1) / L;
  const int64_t bands = (tiles + SEG - 1) / SEG;
  const int64_t nbpa = nbpa_ > 0 ? nbpa_ : 1;  // only stochastic rounding reads it
  const uint32_t per_position = static_cast<uint32_t>(nbpa * block);
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (int64_t w = 0; w < nblocks * bands; ++w) {
    const int64_t n = w / bands, t0 = (w % bands) * SEG;
    const int64_t t1 = t0 + SEG < tiles ? t0 + SEG : tiles;
    const int64_t i = n / nbpa, k = n % nbpa, j0 = t0 * L;
    const vu base = (IOTA + static_cast<uint32_t>(i * post + j0)) * per_position +
                    static_cast<uint32_t>(k * block);
    const int64_t last = post - (t1 - 1) * L;
    f(Band{x + n * block * post + j0, out + n * block * post + j0, post, block, t1 - t0,
           last < L ? last : L, base, per_position * L});
  }
}

template <int MODE, bool FIXED>
void block_post(const float* x, float* out, int64_t nblocks, int64_t block, int64_t post,
                const int32_t* p, const float* q, int nthreads) {
  const Grid g = grid(p, q);
  const MxRule rule = mx_rule(p, q);
  over_bands(x, out, nblocks, block, post, p[P_NBPA], nthreads,
             [&](const Band& b) { block_band<MODE, FIXED>(b, g, rule); });
}

template <int MODE>
void smx_post(const float* x, float* out, int64_t nblocks, int64_t block, int64_t post,
              int64_t sub, const int32_t* p, const float* q, int nthreads) {
  const Grid g = grid(p, q);
  over_bands(x, out, nblocks, block, post, p[P_NBPA], nthreads,
             [&](const Band& b) { smx_band<MODE>(b, g, sub); });
}

// nearest_even of an element format by float arithmetic (core.round_nearest_even_float):
// |x| clamped to 2**(emax + 1), round_magnitude, overflow, flush (FTZ) and a
// two's-complement zero (TWOS), with the sign of x.
template <bool FTZ, bool TWOS>
inline vf element_nearest(vf x, const float* q) {
  const vf ax = (vf)((vu)x & 0x7FFFFFFFu);
  const vf hi = splat(q[Q_HI]);
  const vf v = ax > hi ? hi : ax;  // NaN stays NaN
  const vf s = v * splat(q[Q_SPLIT]);
  const vf c = splat(q[Q_C]);
  vf y = v < splat(q[Q_LO]) ? (v + c) - c : s - (s - v);
  const vf maxf = x < 0.0f ? splat(q[Q_MAX_NEG]) : splat(q[Q_MAX_POS]);
  const vf over = q[Q_SAT] > 0.0f ? maxf : splat(q[Q_SPECIAL]);
  y = y > maxf ? over : y;
  if (FTZ) y = y < splat(q[Q_MINNORM]) ? vf{} : y;
  vf out = (vf)(((vu)y & 0x7FFFFFFFu) | ((vu)x & 0x80000000u));
  if (TWOS && q[Q_TWOS] > 0.0f) out = y == 0.0f ? vf{} : out;
  return out;
}

// The integer core (core.round_bits and core._finish) on the float32 bit patterns of an
// element format, in every mode: drop d low bits of the significand, rounding up by the
// mode's rule, then overflow, flush, inf, NaN and the sign.
struct Bits {
  vi m, emin_f, max_pos, max_neg, ovf, minnorm, sr_bits;
  uint32_t k0, k1, shift;  // the random keys; 32 - R
};

Bits bits_params(const int32_t* p) {
  return {splat_i(p[P_M]),       splat_i(p[P_EMIN_F]),  splat_i(p[P_MAX_POS]),
          splat_i(p[P_MAX_NEG]), splat_i(p[P_OVF]),     splat_i(p[P_MINNORM]),
          splat_i(p[P_SR_BITS]), static_cast<uint32_t>(p[P_KEY0]),
          static_cast<uint32_t>(p[P_KEY1]), static_cast<uint32_t>(32 - p[P_SR_BITS])};
}

inline vi imax(vi a, vi b) { return a > b ? a : b; }
inline vi imin(vi a, vi b) { return a < b ? a : b; }

template <int MODE>
inline vf round_bits(vf xf, vu idx, const Bits& g) {
  constexpr int32_t INF = 0x7F800000;
  const vi b = (vi)xf;
  const vi neg = b < 0;
  const vi a = b & 0x7FFFFFFF;
  const vi ex = a >> 23;
  const vi ee = imax(ex, splat_i(1));
  const vi top = imax(ee, g.emin_f);
  const vi d0 = top - ee + (23 - g.m);  // bits to drop; > 23: the step exceeds |x|
  const vi d = imin(d0, splat_i(25));
  const vu du = (vu)d;
  const vi sig = (a & 0x7FFFFF) | ((ex > 0) & 0x800000);
  const vi low = sig & (vi)((splat_u(1) << du) - 1u);  // the dropped bits
  vi up;
  if (MODE == NEAREST_EVEN || MODE == NEAREST_AWAY) {
    const vi half = (vi)((splat_u(1) << du) >> 1);
    if (MODE == NEAREST_EVEN) {
      const vi kept = (vi)((vu)(top > ee ? sig : a) >> du);
      const vi odd = ((kept & 1) == 1) & (d0 <= 23);
      up = (low > half) | ((low == half) & odd & (d > 0));
    } else {
      up = (low >= half) & (low > 0);
    }
  } else if (MODE == TOWARD_ZERO) {
    up = vi{};
  } else if (MODE == UP) {
    up = (low != 0) & ~neg;
  } else if (MODE == DOWN) {
    up = (low != 0) & neg;
  } else {  // t = floor(f * 2**R): the dropped fraction truncated (or widened) to R bits
    const vi sh = d0 - g.sr_bits;
    const vi right = (vi)((vu)low >> (vu)imin(imax(sh, vi{}), splat_i(25)));
    const vi left = (vi)((vu)low << (vu)imax(-sh, vi{}));
    const vi t = sh >= 0 ? right : left;
    const vi rnd = (vi)(lowbias32(lowbias32(idx ^ g.k0) + g.k1) >> g.shift);
    up = rnd < t;
  }
  const vi upi = up & 1;
  const vi small = (vi)((((vu)imin(a, splat_i(INF)) >> du) + (vu)upi) << du);
  const vi big = up & ((top - g.m) << 23);  // one step, a normal float32 when d0 > 23
  vi y = d0 > 23 ? big : small;
  // _finish: overflow by the mode, flush, inf and NaN inputs, the sign
  const vi maxb = neg ? g.max_neg : g.max_pos;
  const vi saturate = g.ovf < 0;
  vi ovf_val;
  if (MODE == TOWARD_ZERO) ovf_val = maxb;
  else if (MODE == UP) ovf_val = (saturate | neg) ? maxb : g.ovf;
  else if (MODE == DOWN) ovf_val = (saturate | ~neg) ? maxb : g.ovf;
  else ovf_val = saturate ? maxb : g.ovf;
  y = y > maxb ? ovf_val : y;
  y = y < g.minnorm ? vi{} : y;
  y = a == INF ? (saturate ? maxb : g.ovf) : y;
  y = a > INF ? a : y;  // NaN stays NaN
  const vi sign = ((g.minnorm < 0) & (y == 0)) ? vi{} : (b & (vi)splat_u(0x80000000u));
  return (vf)(y | sign);
}

// f(x, idx) over n elements, idx numbering them from 0; the tail through a zero-padded vector
template <typename F>
void elementwise(const float* __restrict x, float* __restrict out, int64_t n, int nthreads,
                 const F& f) {
  const int64_t nvec = n / L;
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (int64_t i = 0; i < nvec; ++i) {
    store(out + i * L, f(load(x + i * L), IOTA + static_cast<uint32_t>(i * L)));
  }
  if (const int64_t rest = n - nvec * L) {
    float buf[L] = {};
    std::memcpy(buf, x + nvec * L, rest * sizeof(float));
    store(buf, f(load(buf), IOTA + static_cast<uint32_t>(nvec * L)));
    std::memcpy(out + nvec * L, buf, rest * sizeof(float));
  }
}

template <int MODE>
void element_bits(const float* x, float* out, int64_t n, const int32_t* p, int nthreads) {
  const Bits g = bits_params(p);
  elementwise(x, out, n, nthreads, [&g](vf v, vu idx) { return round_bits<MODE>(v, idx, g); });
}

template <bool FTZ, bool TWOS>
void element_float(const float* x, float* out, int64_t n, const float* q, int nthreads) {
  elementwise(x, out, n, nthreads, [q](vf v, vu) { return element_nearest<FTZ, TWOS>(v, q); });
}

// Scaled integers (element.int_kernel): rows of n values, each row with the scale
// amax / qmax (1 for an all-zero row); values times 1 / scale (divided by the scale where
// that overflows), rounded to integers in [-qmax, qmax], times the scale; a row holding an
// inf or a NaN is NaN. The work is cut into (row, chunk) pieces, so one long row (a
// per-tensor scale) and many short ones (per channel) both share the threads.
constexpr int64_t CHUNK = 16384;

// f(vector, its first element's index in the row, lanes in use) over [c0, c1) of a row
template <typename F>
inline void over_chunk(const float* xr, int64_t c0, int64_t c1, const F& f) {
  int64_t e = c0;
  for (; e + L <= c1; e += L) f(load(xr + e), e, L);
  if (e < c1) {
    float buf[L] = {};
    std::memcpy(buf, xr + e, (c1 - e) * sizeof(float));
    f(load(buf), e, static_cast<int>(c1 - e));
  }
}

template <int MODE>
void scaled_int(const float* __restrict x, float* __restrict out, int64_t rows, int64_t n,
                const int32_t* p, const float* q, float qmax, int nthreads) {
  const int64_t nchunks = n > 0 ? (n + CHUNK - 1) / CHUNK : 1;
  const int64_t pieces = rows * nchunks;
  std::vector<uint32_t> piece_max(pieces);
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (int64_t k = 0; k < pieces; ++k) {
    const int64_t r = k / nchunks, c0 = (k % nchunks) * CHUNK;
    const int64_t c1 = c0 + CHUNK < n ? c0 + CHUNK : n;
    vu m = vu{};
    over_chunk(x + r * n, c0, c1,
               [&m](vf v, int64_t, int) { m = umax(m, (vu)v & 0x7FFFFFFFu); });
    m = run_max(m, 1, L);
    piece_max[k] = m[0];
  }
  std::vector<uint32_t>& row_max = piece_max;  // reduced in place: row r's maximum in slot r
  for (int64_t r = 0; r < rows; ++r) {
    uint32_t mb = 0;
    for (int64_t j = r * nchunks; j < (r + 1) * nchunks; ++j) mb = umax1(mb, piece_max[j]);
    row_max[r] = mb;
  }
  const Grid g = grid(p, q);
  const bool adder = MODE == NEAREST_EVEN && qmax < 0x1p22f;
  const vf magic = splat(1.5f * 0x1p23f), lo = splat(-qmax), hi = splat(qmax);
  const vf nan = (vf)splat_u(0x7FC00000u);
#pragma omp parallel for schedule(static) num_threads(nthreads)
  for (int64_t k = 0; k < pieces; ++k) {
    const int64_t r = k / nchunks, c0 = (k % nchunks) * CHUNK;
    const int64_t c1 = c0 + CHUNK < n ? c0 + CHUNK : n;
    const uint32_t mb = row_max[r];
    float amax;
    std::memcpy(&amax, &mb, sizeof amax);
    const float scale = amax > 0.0f ? amax / qmax : 1.0f;
    const float inv = 1.0f / scale;
    const bool divide = inv - inv != 0.0f;  // inv is inf (mb < inf here, so never NaN)
    const bool bad = mb >= 0x7F800000u;
    const vf vscale = splat(scale), vinv = splat(inv);
    float* orow = out + r * n;
    over_chunk(x + r * n, c0, c1, [&](vf xv, int64_t e, int lanes) {
      const vf v = divide ? xv / vscale : xv * vinv;
      vf qv;
      if (adder) {
        vf c = v < lo ? lo : v;
        c = c > hi ? hi : c;
        qv = (c + magic) - magic;
      } else {
        qv = round_elements<MODE, true>(v, v, g, IOTA + static_cast<uint32_t>(r * n + e));
      }
      const vf y = bad ? nan : qv * vscale;
      if (lanes == L) {
        store(orow + e, y);
      } else {
        float buf[L];
        store(buf, y);
        std::memcpy(orow + e, buf, lanes * sizeof(float));
      }
    });
  }
}

// The kernel families as F<MODE>::run(...), so that one switch maps a runtime mode onto them.
template <int MODE>
struct Block {
  // 32-element blocks go 16 at a time too, but for stochastic rounding, which was a little
  // slower that way (numerics bench, mxfp8_e4m3 / mxint8 / mxfp4_e2m1, two interleaved
  // rounds: 0.68-0.75 -> 0.64-0.73x clone, where nearest_even gained 0.81-0.83 -> 0.86-0.90)
  static constexpr bool GROUP2 = MODE != STOCHASTIC;

  static void run(const float* x, float* out, int64_t nblocks, int64_t nv, const int32_t* p,
                  const float* q, int fixed, int nthreads) {
    if (fixed) go<true>(x, out, nblocks, nv, p, q, nthreads);
    else go<false>(x, out, nblocks, nv, p, q, nthreads);
  }

  template <bool FIXED>
  static void go(const float* x, float* out, int64_t nblocks, int64_t nv, const int32_t* p,
                 const float* q, int nthreads) {
    if (nv == 1) block16<MODE, 1, FIXED>(x, out, nblocks, p, q, nthreads);
    else if (nv == 2 && GROUP2) block16<MODE, 2, FIXED>(x, out, nblocks, p, q, nthreads);
    else if (nv == 2) block<MODE, 2, FIXED>(x, out, nblocks, nv, p, q, nthreads);
    else block<MODE, 0, FIXED>(x, out, nblocks, nv, p, q, nthreads);
  }
};

template <int MODE>
struct Smx {
  static void run(const float* x, float* out, int64_t nblocks, int64_t nv, int sub,
                  const int32_t* p, const float* q, int nthreads) {
    if (nv == 1 && sub == 2) smx16<MODE, 2>(x, out, nblocks, sub, p, q, nthreads);
    else if (nv == 1) smx16<MODE, 0>(x, out, nblocks, sub, p, q, nthreads);
    else smx<MODE, 0, 0>(x, out, nblocks, nv, sub, p, q, nthreads);
  }
};

template <int MODE>
struct BlockPost {
  static void run(const float* x, float* out, int64_t nblocks, int64_t block, int64_t post,
                  const int32_t* p, const float* q, int fixed, int nthreads) {
    if (fixed) block_post<MODE, true>(x, out, nblocks, block, post, p, q, nthreads);
    else block_post<MODE, false>(x, out, nblocks, block, post, p, q, nthreads);
  }
};

template <int MODE>
struct SmxPost {
  static void run(const float* x, float* out, int64_t nblocks, int64_t block, int64_t post,
                  int64_t sub, const int32_t* p, const float* q, int nthreads) {
    smx_post<MODE>(x, out, nblocks, block, post, sub, p, q, nthreads);
  }
};

template <int MODE>
struct ElementBits {
  static void run(const float* x, float* out, int64_t n, const int32_t* p, int nthreads) {
    element_bits<MODE>(x, out, n, p, nthreads);
  }
};

template <int MODE>
struct ScaledInt {
  static void run(const float* x, float* out, int64_t rows, int64_t n, const int32_t* p,
                  const float* q, float qmax, int nthreads) {
    scaled_int<MODE>(x, out, rows, n, p, q, qmax, nthreads);
  }
};

// F<mode>::run(args...); 0, or -1 for a mode it does not know
template <template <int> class F, typename... A>
int by_mode(int mode, A... args) {
  switch (mode) {
    case NEAREST_EVEN: F<NEAREST_EVEN>::run(args...); return 0;
    case NEAREST_AWAY: F<NEAREST_AWAY>::run(args...); return 0;
    case TOWARD_ZERO: F<TOWARD_ZERO>::run(args...); return 0;
    case DOWN: F<DOWN>::run(args...); return 0;
    case UP: F<UP>::run(args...); return 0;
    case STOCHASTIC: F<STOCHASTIC>::run(args...); return 0;
    default: return -1;
  }
}

}  // namespace

// The entry points. Each returns 0, or -1 for a mode or variant it does not know.
extern "C" {

// blocks of nv * 16 elements, fixed-point (fixed != 0) or float elements
int numerics_block(const float* x, float* out, int64_t nblocks, int64_t nv, const int32_t* p,
                   const float* q, int fixed, int mode, int nthreads) {
  return by_mode<Block>(mode, x, out, nblocks, nv, p, q, fixed, nthreads);
}

// blocks of nv * 16 elements, runs of sub (1, 2, 4, 8 or 16) sharing tau
int numerics_smx(const float* x, float* out, int64_t nblocks, int64_t nv, int sub,
                 const int32_t* p, const float* q, int mode, int nthreads) {
  return by_mode<Smx>(mode, x, out, nblocks, nv, sub, p, q, nthreads);
}

// blocks along a non-last axis, (nblocks, block, post), fixed-point or float elements
int numerics_block_post(const float* x, float* out, int64_t nblocks, int64_t block,
                        int64_t post, const int32_t* p, const float* q, int fixed, int mode,
                        int nthreads) {
  return by_mode<BlockPost>(mode, x, out, nblocks, block, post, p, q, fixed, nthreads);
}

// shared micro-exponents along a non-last axis, (nblocks, block, post), runs of sub along
// the block
int numerics_smx_post(const float* x, float* out, int64_t nblocks, int64_t block, int64_t post,
                      int64_t sub, const int32_t* p, const float* q, int mode, int nthreads) {
  return by_mode<SmxPost>(mode, x, out, nblocks, block, post, sub, p, q, nthreads);
}

// n elements of an element format: nearest_even by float arithmetic (variant 0 plain, 1
// flushing subnormals, 2 with a two's-complement zero), or any mode on the bit patterns
// (variant 3)
int numerics_element(const float* x, float* out, int64_t n, const int32_t* p, const float* q,
                     int variant, int mode, int nthreads) {
  if (variant < 3 && mode != NEAREST_EVEN) return -1;
  switch (variant) {
    case 0: element_float<false, false>(x, out, n, q, nthreads); return 0;
    case 1: element_float<true, false>(x, out, n, q, nthreads); return 0;
    case 2: element_float<false, true>(x, out, n, q, nthreads); return 0;
    case 3: return by_mode<ElementBits>(mode, x, out, n, p, nthreads);
    default: return -1;
  }
}

// scaled integers: rows x n values, a scale per row
int numerics_scaled_int(const float* x, float* out, int64_t rows, int64_t n, const int32_t* p,
                        const float* q, float qmax, int mode, int nthreads) {
  return by_mode<ScaledInt>(mode, x, out, rows, n, p, q, qmax, nthreads);
}

}  // extern "C"
