/* Winograd F(4x4,3x3) convolution for inference: imops' own kernel, for the layers where oneDNN's
 * Winograd (F(2x2,3x3) for small batches) leaves speed behind.
 *
 * Each 4x4 tile of the output comes from a 6x6 tile of the input: V = B'dB per tile and input
 * channel, then for each of the 36 transformed positions e a matrix product
 * M[e][tile][k] = sum_c V[e][tile][c] U[e][c][k] with the weights transformed once (U = G g G',
 * kept as the plan's prepared copy of stamped weights), then y = A'MA + bias (+ y, the fused
 * residual) and ReLU. That is 36 multiplications per 16 outputs per channel pair against oneDNN's
 * F(2x2)'s 16 per 4 (2.25 against 4 per output) and direct's 9.
 *
 * The work is split by tiles, each thread taking a contiguous range in blocks small enough that
 * the block's V and M stay in L2 (1 MiB a core here); a block is transformed, multiplied for all
 * 36 positions, and transformed back before the next, so V and M never go to memory. The product
 * runs a register-blocked kernel: 6 tiles x 64 output channels (24 accumulators), broadcasting V.
 *
 * Where it serves (im__cpu_wino_fits): stamped weights, 3x3 stride 1 pad 1, one group, blocked
 * (nChw16c) input and output with channel counts that are multiples of 16, outputs of 28x28 or
 * more with C*K <= 128*128 (transformed weights of 2.25 MiB or less); smaller outputs with many
 * channels go to cpu_wino2.c's F(2x2). Measured on this machine, 2 threads, against oneDNN's
 * Winograd on the same data: in one process alternating, 56x56x64->64 0.39-0.53 against
 * 0.51-0.81 ms and 28x28x128->128 0.41-0.44 against 0.50-0.52 ms (jit_fp32_wino_2x3); through the
 * backend with caches flushed between calls, 0.33-0.42 against 0.50-0.57 and 0.36-0.53 against
 * 0.48-0.61 ms; in resnet18@224, single images 12% faster (median of 8 pairs of runs,
 * IMOPS_CONV_ALGO=onednn against the default) and batches of 64 7% (4 pairs; its layers 27-29
 * against 29-42 ms and 25-26 against 26-33 ms, against oneDNN's F(4x4)). At 14x14x256->256 it lost
 * (0.56 against 0.40 ms: 9.4 MiB of transformed weights to stream for 16 tiles), hence the bounds.
 * Its transforms round more than direct convolution: outputs differ from a double-precision direct
 * convolution by about 1e-5 of the largest one (test_backend_cpu), about 4x oneDNN's F(2x2). */
#include <stdio.h>
#include <stdlib.h>
#include "backend/cpu/cpu_wino.h"

enum { WINO_E = 36 };
/* Bytes of V and M for one block of tiles: small where the transformed weights fit in L2 beside
 * them, large where they do not (measured, 2 threads, caches flushed between calls: 56x56x64->64
 * 0.33-0.42 ms with 256 KiB blocks against 0.43-0.51 with 1 MiB; 28x28x128->128 0.36-0.53 with
 * 1 MiB against 0.64-0.67 with 256 KiB). */
#define WINO_L2_WEIGHTS (640 << 10)
#define WINO_BLOCK_SMALL (256 << 10)
#define WINO_BLOCK_LARGE (1 << 20)

/* The geometry a plan's key holds (cpu_conv.c, conv_key): x (N,C,H,W), K output channels. */
typedef struct {
  int64_t N, C, H, W, K, th, tw, tiles; /* tiles: N*th*tw, th x tw of 4x4 each */
  int64_t nb;                           /* tiles per block */
} wino_geo_t;

static wino_geo_t geo_of(const cpu_key_t *k, int nthreads) {
  wino_geo_t g = {k->v[0], k->v[1], k->v[2], k->v[3], k->v[4], (k->v[2] + 3) / 4, (k->v[3] + 3) / 4, 0, 0};
  g.tiles = g.N * g.th * g.tw;
  const int64_t per = (g.tiles + nthreads - 1) / nthreads;
  /* Weights that L2 holds beside a block stay there (small blocks cost nothing then); larger
   * weights stream from L3 once per block, so blocks are made as large as L2 allows. */
  const int64_t u_bytes = WINO_E * g.C * g.K * (int64_t)sizeof(float);
  const int64_t budget = u_bytes <= WINO_L2_WEIGHTS ? WINO_BLOCK_SMALL : WINO_BLOCK_LARGE;
  int64_t max = budget / (WINO_E * (g.C + g.K) * (int64_t)sizeof(float));
  if (max < WINO_TILES) max = WINO_TILES;
  const int64_t blocks = (per + max - 1) / max;
  g.nb = (per + blocks - 1) / blocks;
  return g;
}

/* One thread's V and M, 64-byte aligned. */
static size_t block_bytes(const wino_geo_t *g) {
  return ((size_t)(WINO_E * g->nb * (g->C + g->K)) * sizeof(float) + 63) & ~(size_t)63;
}

/* U[e] is [K/64 blocks][C][64] (the last block as wide as what is left), from OIHW weights. */
static size_t u_off(const wino_geo_t *g, int e, int64_t kb) { return (size_t)(e * g->C * g->K + kb * WINO_KW * g->C); }

static void transform_weights(const wino_geo_t *g, const float *w, float *u, int nthreads) {
  static const double G[6][3] = {{1 / 4.0, 0, 0},
                                 {-1 / 6.0, -1 / 6.0, -1 / 6.0},
                                 {-1 / 6.0, 1 / 6.0, -1 / 6.0},
                                 {1 / 24.0, 1 / 12.0, 1 / 6.0},
                                 {1 / 24.0, -1 / 12.0, 1 / 6.0},
                                 {0, 0, 1}};
  const int64_t C = g->C, K = g->K;
  const int nt_ = nthreads, par_ = K * C >= 4096;
  CPU_OMP_FOR
  for (int64_t k = 0; k < K; k++) {
    const int64_t kb = k / WINO_KW, kw = K - kb * WINO_KW < WINO_KW ? K - kb * WINO_KW : WINO_KW;
    for (int64_t c = 0; c < C; c++) {
      const float *f = w + (k * C + c) * 9;
      double t[6][3];
      for (int i = 0; i < 6; i++)
        for (int j = 0; j < 3; j++) t[i][j] = G[i][0] * f[j] + G[i][1] * f[3 + j] + G[i][2] * f[6 + j];
      for (int i = 0; i < 6; i++)
        for (int j = 0; j < 6; j++)
          u[u_off(g, i * 6 + j, kb) + (size_t)(c * kw + k % WINO_KW)] =
              (float)(t[i][0] * G[j][0] + t[i][1] * G[j][1] + t[i][2] * G[j][2]);
    }
  }
}

#if defined(__x86_64__)

/* B'd for one column (or row) of 6: the input transform's 1-D step. */
WINO_INLINE void bt6(const v16 *d, v16 *o) {
  const v16 four = _mm512_set1_ps(4.0f), five = _mm512_set1_ps(5.0f), two = _mm512_set1_ps(2.0f);
  const v16 t0 = _mm512_fnmadd_ps(four, d[2], d[4]), t1 = _mm512_fnmadd_ps(four, d[1], d[3]);
  const v16 t2 = _mm512_sub_ps(d[4], d[2]), t3 = _mm512_mul_ps(two, _mm512_sub_ps(d[3], d[1]));
  o[0] = _mm512_fmadd_ps(four, d[0], _mm512_fnmadd_ps(five, d[2], d[4]));
  o[1] = _mm512_add_ps(t0, t1);
  o[2] = _mm512_sub_ps(t0, t1);
  o[3] = _mm512_add_ps(t2, t3);
  o[4] = _mm512_sub_ps(t2, t3);
  o[5] = _mm512_fmadd_ps(four, d[1], _mm512_fnmadd_ps(five, d[3], d[5]));
}

/* A'm for one column (or row) of 6 into 4: the output transform's 1-D step. */
WINO_INLINE void at6(const v16 *m, v16 *o) {
  const v16 a = _mm512_add_ps(m[1], m[2]), b = _mm512_sub_ps(m[1], m[2]);
  const v16 c = _mm512_add_ps(m[3], m[4]), d = _mm512_sub_ps(m[3], m[4]);
  o[0] = _mm512_add_ps(_mm512_add_ps(m[0], a), c);
  o[1] = _mm512_fmadd_ps(_mm512_set1_ps(2.0f), d, b);
  o[2] = _mm512_fmadd_ps(_mm512_set1_ps(4.0f), c, a);
  o[3] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.0f), d, b), m[5]);
}


/* V[e][i][C] for tiles t0..t0+n-1 from blocked x. */
WINO_FN void input_block(const wino_geo_t *g, const float *x, int64_t t0, int64_t n, float *V) {
  const int64_t H = g->H, W = g->W, CB = g->C / 16;
  for (int64_t i = 0; i < n; i++) {
    int64_t img, tr, tc;
    wino_tile_pos(t0 + i, g->th, g->tw, &img, &tr, &tc);
    const int64_t r0 = tr * 4 - 1, c0 = tc * 4 - 1;
    const int inside = r0 >= 0 && c0 >= 0 && r0 + 6 <= H && c0 + 6 <= W;
    for (int64_t cb = 0; cb < CB; cb++) {
      const float *xb = x + (size_t)((img * CB + cb) * H * W * 16);
      v16 d[6][6], t[6][6], o[6];
      for (int r = 0; r < 6; r++) {
        const int64_t h = r0 + r;
        for (int c = 0; c < 6; c++) {
          const int64_t w = c0 + c;
          d[r][c] = inside || (h >= 0 && h < H && w >= 0 && w < W) ? _mm512_loadu_ps(xb + (size_t)((h * W + w) * 16))
                                                                   : _mm512_setzero_ps();
        }
      }
      for (int r = 0; r < 6; r++) {
        bt6(d[r], o);
        for (int c = 0; c < 6; c++) t[c][r] = o[c];
      }
      for (int c = 0; c < 6; c++) {
        bt6(t[c], o);
        for (int r = 0; r < 6; r++) _mm512_storeu_ps(V + (size_t)(((r * 6 + c) * g->nb + i) * g->C + cb * 16), o[r]);
      }
    }
  }
}

/* M[i][k] (row stride ms) = V[i][c] (row stride vs) x u[c][kw], c < C, for NT tiles and NV*16 = kw
 * channels; added to M's values when acc. pf, when not NULL: data a later call reads, fetched
 * meanwhile, |pfn| cache lines from pf on for each c (into L1 when pfn > 0, L2 when pfn < 0). */
WINO_INLINE void product(const int NT, const int NV, const float *V, int64_t vs, int64_t C, const float *u, float *M,
                         int64_t ms, const float *pf, int pfn, int acc) {
  v16 a[WINO_TILES][4];
  const float *v[WINO_TILES]; /* the tiles' rows: addresses the loop does not recompute */
  for (int t = 0; t < NT; t++) {
    v[t] = V + t * vs;
    for (int j = 0; j < NV; j++) a[t][j] = acc ? _mm512_loadu_ps(M + t * ms + j * 16) : _mm512_setzero_ps();
  }
#define WINO_STEP(c)                                                                  \
  do {                                                                                \
    v16 w[4];                                                                         \
    for (int j = 0; j < NV; j++) w[j] = _mm512_loadu_ps(u + (c) * NV * 16 + j * 16);  \
    for (int t = 0; t < NT; t++) {                                                    \
      const v16 b = _mm512_set1_ps(v[t][c]);                                          \
      for (int j = 0; j < NV; j++) a[t][j] = _mm512_fmadd_ps(b, w[j], a[t][j]);       \
    }                                                                                 \
  } while (0)
  if (!pf) {
    for (int64_t c = 0; c < C; c++) WINO_STEP(c);
  } else if (pfn > 0) {
    for (int64_t c = 0; c < C; c++) {
      for (int j = 0; j < pfn; j++) _mm_prefetch((const char *)(pf + (c * pfn + j) * 16), _MM_HINT_T0);
      WINO_STEP(c);
    }
  } else {
    for (int64_t c = 0; c < C; c++) {
      for (int j = 0; j < -pfn; j++) _mm_prefetch((const char *)(pf + (c * -pfn + j) * 16), _MM_HINT_T1);
      WINO_STEP(c);
    }
  }
#undef WINO_STEP
  for (int t = 0; t < NT; t++)
    for (int j = 0; j < NV; j++) _mm512_storeu_ps(M + t * ms + j * 16, a[t][j]);
}

WINO_TARGET void im__cpu_wino_product(int nt, int nv, const float *V, int64_t vs, int64_t C, const float *u, float *M,
                                      int64_t ms, const float *pf, int pfn, int acc) {
#define WINO_P(t, v) \
  case (t) * 4 + (v) - 1: product(t, v, V, vs, C, u, M, ms, pf, pfn, acc); break;
#define WINO_P4(t) WINO_P(t, 1) WINO_P(t, 2) WINO_P(t, 3) WINO_P(t, 4)
  switch (nt * 4 + nv - 1) {
    WINO_P4(1) WINO_P4(2) WINO_P4(3) WINO_P4(4) WINO_P4(5) WINO_P4(6)
  default: break;
  }
#undef WINO_P4
#undef WINO_P
}

/* y (blocked) for tiles t0..t0+n-1 from M[e][i][K]: A'MA + bias (+ y when sum), ReLU when relu. */
WINO_FN void output_block(const wino_geo_t *g, const float *M, const float *bias, int relu, int sum, int64_t t0,
                          int64_t n, float *y) {
  const int64_t H = g->H, W = g->W, KB = g->K / 16;
  const v16 zero = _mm512_setzero_ps();
  for (int64_t i = 0; i < n; i++) {
    int64_t img, tr, tc;
    wino_tile_pos(t0 + i, g->th, g->tw, &img, &tr, &tc);
    for (int64_t kb = 0; kb < KB; kb++) {
      v16 m[6], t[4][6], o[4];
      for (int c = 0; c < 6; c++) {
        for (int r = 0; r < 6; r++) m[r] = _mm512_loadu_ps(M + (size_t)(((r * 6 + c) * g->nb + i) * g->K + kb * 16));
        at6(m, o);
        for (int r = 0; r < 4; r++) t[r][c] = o[r];
      }
      const v16 bv = bias ? _mm512_loadu_ps(bias + kb * 16) : zero;
      float *yb = y + (size_t)((img * KB + kb) * H * W * 16);
      for (int r = 0; r < 4; r++) {
        const int64_t h = tr * 4 + r;
        at6(t[r], o);
        if (h >= H) continue;
        for (int c = 0; c < 4; c++) {
          const int64_t w = tc * 4 + c;
          if (w >= W) continue;
          float *p = yb + (size_t)((h * W + w) * 16);
          v16 v = _mm512_add_ps(o[c], bv);
          if (sum) v = _mm512_add_ps(v, _mm512_loadu_ps(p));
          if (relu) v = _mm512_max_ps(v, zero);
          _mm512_storeu_ps(p, v);
        }
      }
    }
  }
}

/* Tiles t0..t1-1, in blocks of g->nb, with one thread's V and M at vm. */
static void wino_range(const wino_geo_t *g, const float *x, const float *u, const float *bias, int relu, int sum,
                       float *y, int64_t t0, int64_t t1, float *vm) {
  float *V = vm, *M = vm + WINO_E * g->nb * g->C;
  for (int64_t b0 = t0; b0 < t1; b0 += g->nb) {
    const int64_t n = t1 - b0 < g->nb ? t1 - b0 : g->nb;
    input_block(g, x, b0, n, V);
    /* The tiles in groups of at most WINO_TILES, as even as can be (49: five of 5 and four of 6). */
    const int64_t groups = (n + WINO_TILES - 1) / WINO_TILES;
    for (int e = 0; e < WINO_E; e++)
      for (int64_t kb = 0; kb * WINO_KW < g->K; kb++) {
        const int64_t kw = g->K - kb * WINO_KW < WINO_KW ? g->K - kb * WINO_KW : WINO_KW;
        const float *ue = u + u_off(g, e, kb), *next = ue + kw * g->C; /* the weights the next (e, kb) takes */
        for (int64_t q = 0, i = 0; q < groups; q++) {
          const int64_t m = n / groups + (q < n % groups);
          im__cpu_wino_product((int)m, (int)(kw / 16), V + (size_t)((e * g->nb + i) * g->C), g->C, g->C, ue,
                               M + (size_t)((e * g->nb + i) * g->K + kb * WINO_KW), g->K, q == 0 ? next : NULL,
                               (int)(kw / 16), 0);
          i += m;
        }
      }
    output_block(g, M, bias, relu, sum, b0, n, y);
  }
}
#endif

/* The plan's own kernel (cpu_plan_t.own): user = {x, w, bias, y}; owned holds U once prepared. */
static im_status_t wino_run(const cpu_plan_t *pl, void *const *user, void *owned, void *ws, int nthreads,
                            int prepared) {
  const wino_geo_t g = geo_of(&pl->key, nthreads);
  if (!prepared) transform_weights(&g, user[1], owned, nthreads);
#if defined(__x86_64__)
  const int relu = pl->key.variant & 1, sum = (pl->key.variant >> 6) & 1;
  const float *x = user[0], *u = owned, *bias = user[2];
  float *y = user[3];
  const size_t per = block_bytes(&g) / sizeof(float);
  const int nt = nthreads < g.tiles ? nthreads : (int)g.tiles;
#ifdef _OPENMP
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    const int t = omp_get_thread_num(), n = omp_get_num_threads();
    wino_range(&g, x, u, bias, relu, sum, y, g.tiles * t / n, g.tiles * (t + 1) / n, (float *)ws + per * (size_t)t);
  }
#else
  (void)nt;
  wino_range(&g, x, u, bias, relu, sum, y, 0, g.tiles, ws);
#endif
  return IM_OK;
#else
  (void)ws;
  return im_error(IM_ERR_INTERNAL, "cpu backend: Winograd F(4x4) runs on x86-64 only");
#endif
}

int im__cpu_wino_fits(const im_conv2d_params_t *p, const im_tensor_t *x, const im_tensor_t *w, const im_tensor_t *y) {
#if defined(__x86_64__)
  const int avx512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("fma");
  const int64_t *xs = x->shape, *ws = w->shape, *ys = y->shape;
  if (!avx512 || !w->stamp || p->groups != 1 || p->stride_h != 1 || p->stride_w != 1 || p->pad_h != 1 ||
      p->pad_w != 1 || p->dilation_h != 1 || p->dilation_w != 1 || ws[2] != 3 || ws[3] != 3 || xs[1] % 16 ||
      ws[0] % 16)
    return 0;
  /* F(4x4): blocked, outputs of 28x28 and more, transformed weights of at most 2.25 MiB. */
  if (x->layout == IM_LAYOUT_NCHW16C && y->layout == IM_LAYOUT_NCHW16C && ys[2] >= 28 && ys[3] >= 28 &&
      xs[1] * ws[0] <= 128 * 128)
    return 4;
  /* F(2x2), weights streamed: outputs of 7x7 or less (oneDNN's direct kernels' ground; at 14x14 its
   * own F(2x2) was as fast), 64 or more input channels, the transformed input within 1 MiB. */
  const int64_t v_bytes = xs[0] * ((ys[2] + 1) / 2) * ((ys[3] + 1) / 2) * xs[1] * 16 * (int64_t)sizeof(float);
  const int same = x->layout == y->layout && (x->layout == IM_LAYOUT_NCHW16C || x->layout == IM_LAYOUT_NHWC);
  if (same && ws[0] % 64 == 0 && xs[1] >= 64 && ys[2] * ys[3] <= 49 && v_bytes <= (1 << 20)) return 2;
  return 0;
#else
  (void)p, (void)x, (void)w, (void)y;
  return 0;
#endif
}

void im__cpu_wino_plan(cpu_build_t *bld, int nthreads) {
  cpu_plan_t *pl = bld->plan;
  if (!pl || bld->st != IM_OK) return;
  pl->const_slot = 1;
  if ((pl->key.variant >> 8) & 1) { /* F(2x2): the weights reordered */
    pl->own = im__cpu_wino2_run;
    pl->owned_bytes = (size_t)(pl->key.v[1] * pl->key.v[4] * 9) * sizeof(float);
    pl->ws_bytes = im__cpu_wino2_ws_bytes(&pl->key, nthreads);
    snprintf(pl->impl, sizeof pl->impl, "imops:wino_2x3_stream");
    return;
  }
  const wino_geo_t g = geo_of(&pl->key, nthreads);
  pl->own = wino_run;
  pl->owned_bytes = (size_t)(WINO_E * g.C * g.K) * sizeof(float);
  pl->ws_bytes = block_bytes(&g) * (size_t)nthreads;
  snprintf(pl->impl, sizeof pl->impl, "imops:wino_4x3");
}
