/* Winograd F(2x2,3x3) for inference with the weights transformed as they stream through: imops'
 * kernel for 3x3 layers with many channels and small outputs (resnet18's 7x7 stage at 224), where
 * oneDNN runs direct convolution for single images and its own Winograd keeps 16/9 times the
 * weights' bytes transformed, which a core then streams from memory at every call.
 *
 * The prepared copy of the weights is only reordered ([C][3][3][K], as many bytes as the weights):
 * each thread takes a range of 64-channel output blocks, transforms the input tiles itself
 * (V = B'dB, 4x4 per 2x2 output tile, all channels: a few percent of the work), and then for each
 * block of 64 output channels and 64 input channels at a time transforms those weights
 * (U = G g G', 256 KiB that stay in L2) and multiplies them into M for all 16 positions, which
 * finally becomes y = A'MA + bias (+ y, the fused residual), ReLU. 16 multiplications per 4
 * outputs per channel pair against direct convolution's 36.
 *
 * Where it serves (im__cpu_wino_fits in cpu_wino.c): stamped weights, 3x3 stride 1 pad 1, one
 * group, x and y both blocked or both channels-last, C >= 64 a multiple of 16 and K of 64, outputs
 * of 7x7 or less, and the transformed input of all tiles within 1 MiB. Measured in resnet18@224 at
 * batch 1 (2 threads, runs alternating): its 7x7x512->512 layers 0.89-0.92 against 1.02-1.06 ms and
 * 1.10-1.15 against 1.34-1.36 ms for oneDNN's brgconv (13-17%); on 14x14x256->256 it was no faster
 * than oneDNN's F(2x2) (0.50-0.71 both), so it does not serve there. Without the prefetch of the
 * next run of weights the transform waited on memory as long as the products took. */
#include "backend/cpu/cpu_wino.h"

enum {
  W2_E = 16,
  W2_CC = 64,                   /* input channels per weight chunk */
  W2_US = W2_CC * WINO_KW + 16, /* floats from one position of U to the next: not a multiple of 4 KiB,
                                 * so that U's 16 stores of a channel do not alias the next loads */
};

typedef struct {
  int64_t N, C, H, W, K, th, tw, tiles;
  wino_lay_t xl, yl;
} w2_geo_t;

static w2_geo_t w2_geo(const cpu_key_t *k) {
  w2_geo_t g = {k->v[0], k->v[1], k->v[2], k->v[3], k->v[4], (k->v[2] + 1) / 2, (k->v[3] + 1) / 2, 0, {0}, {0}};
  g.tiles = g.N * g.th * g.tw;
  g.xl = wino_lay((im_layout_t)((k->variant >> 1) & 3), g.C, g.H, g.W);
  g.yl = wino_lay((im_layout_t)((k->variant >> 3) & 3), g.K, g.H, g.W);
  return g;
}

/* One thread's V [E][tiles][C], U chunk [E][CC][64] and M [E][tiles][64], 64-byte aligned each. */
static size_t al64(size_t n) { return (n + 63) & ~(size_t)63; }
static size_t v_bytes(const w2_geo_t *g) { return al64((size_t)(W2_E * g->tiles * g->C) * sizeof(float)); }
static size_t u_bytes(void) { return al64((size_t)(W2_E * W2_US) * sizeof(float)); }
static size_t m_bytes(const w2_geo_t *g) { return al64((size_t)(W2_E * g->tiles * WINO_KW) * sizeof(float)); }

size_t im__cpu_wino2_ws_bytes(const cpu_key_t *k, int nthreads) {
  const w2_geo_t g = w2_geo(k);
  return (v_bytes(&g) + u_bytes() + m_bytes(&g)) * (size_t)nthreads;
}

/* OIHW -> [K/64][C][3][3][64]: what one block of 64 output channels takes from CC input channels
 * is one contiguous run, and the runs follow each other in the order a thread takes them. */
static void reorder_weights(const w2_geo_t *g, const float *w, float *r, int nthreads) {
  const int64_t C = g->C, K = g->K;
  const int nt_ = nthreads, par_ = C * K >= 4096;
  CPU_OMP_FOR
  for (int64_t k = 0; k < K; k++)
    for (int64_t c = 0; c < C; c++)
      for (int i = 0; i < 9; i++) r[((k / WINO_KW * C + c) * 9 + i) * WINO_KW + k % WINO_KW] = w[(k * C + c) * 9 + i];
}

#if defined(__x86_64__)
/* V[e][t][c] for every tile t and channel c. */
WINO_FN void w2_input(const w2_geo_t *g, const float *x, float *V) {
  const int64_t H = g->H, W = g->W, CB = g->C / 16, T = g->tiles;
  for (int64_t t = 0; t < T; t++) {
    int64_t n, tr, tc;
    wino_tile_pos(t, g->th, g->tw, &n, &tr, &tc);
    const int64_t r0 = tr * 2 - 1, c0 = tc * 2 - 1;
    for (int64_t cb = 0; cb < CB; cb++) {
      const float *xb = x + n * g->xl.img + cb * g->xl.blk;
      v16 d[4][4], u[4][4];
      for (int r = 0; r < 4; r++)
        for (int c = 0; c < 4; c++) {
          const int64_t h = r0 + r, w = c0 + c;
          d[r][c] = h >= 0 && h < H && w >= 0 && w < W ? _mm512_loadu_ps(xb + h * g->xl.row + w * g->xl.col)
                                                       : _mm512_setzero_ps();
        }
      for (int c = 0; c < 4; c++) { /* B'd: rows d0-d2, d1+d2, d2-d1, d1-d3 */
        u[0][c] = _mm512_sub_ps(d[0][c], d[2][c]);
        u[1][c] = _mm512_add_ps(d[1][c], d[2][c]);
        u[2][c] = _mm512_sub_ps(d[2][c], d[1][c]);
        u[3][c] = _mm512_sub_ps(d[1][c], d[3][c]);
      }
      for (int r = 0; r < 4; r++) { /* (B'd)B: the same on columns */
        float *o = V + (size_t)((r * 4 * T + t) * g->C + cb * 16);
        const size_t es = (size_t)(T * g->C); /* from one position e to the next */
        _mm512_storeu_ps(o, _mm512_sub_ps(u[r][0], u[r][2]));
        _mm512_storeu_ps(o + es, _mm512_add_ps(u[r][1], u[r][2]));
        _mm512_storeu_ps(o + 2 * es, _mm512_sub_ps(u[r][2], u[r][1]));
        _mm512_storeu_ps(o + 3 * es, _mm512_sub_ps(u[r][1], u[r][3]));
      }
    }
  }
}

/* U[e][c][64] = G g G' for cc input channels from their run of reordered weights f ([cc][9][64]),
 * U's positions W2_US floats apart. G's halves are left out (G = D G'' with D = diag(1, 1/2, 1/2, 1)
 * and G'' of 0s and 1s): U carries D U D's factors 1, 2 or 4 more, which the output transform takes
 * back (it multiplies M by A'D, D A). */
WINO_FN void w2_weights(const float *f0, int64_t cc, float *U) {
  for (int64_t c = 0; c < cc; c++)
    for (int j = 0; j < 4; j++) {
      const float *f = f0 + c * 9 * WINO_KW + j * 16;
      v16 f9[9], t[4][3];
      for (int i = 0; i < 9; i++) f9[i] = _mm512_loadu_ps(f + i * WINO_KW);
      for (int s = 0; s < 3; s++) { /* G''g: rows g0, g0+g1+g2, g0-g1+g2, g2 */
        const v16 a = _mm512_add_ps(f9[s], f9[6 + s]);
        t[0][s] = f9[s];
        t[1][s] = _mm512_add_ps(a, f9[3 + s]);
        t[2][s] = _mm512_sub_ps(a, f9[3 + s]);
        t[3][s] = f9[6 + s];
      }
      for (int q = 0; q < 4; q++) { /* (G''g)G''' */
        const v16 a = _mm512_add_ps(t[q][0], t[q][2]);
        float *o = U + (size_t)(q * 4 * W2_US + c * WINO_KW + j * 16);
        _mm512_storeu_ps(o, t[q][0]);
        _mm512_storeu_ps(o + W2_US, _mm512_add_ps(a, t[q][1]));
        _mm512_storeu_ps(o + 2 * W2_US, _mm512_sub_ps(a, t[q][1]));
        _mm512_storeu_ps(o + 3 * W2_US, t[q][2]);
      }
    }
}

/* y for output channels k0..k0+63 from M[e][t][64]: A'MA + bias (+ y when sum), ReLU when relu. */
WINO_FN void w2_output(const w2_geo_t *g, const float *M, const float *bias, int relu, int sum, int64_t k0,
                       float *y) {
  const int64_t H = g->H, W = g->W, T = g->tiles;
  const v16 zero = _mm512_setzero_ps(), half = _mm512_set1_ps(0.5f);
  const size_t es = (size_t)(T * WINO_KW);
  for (int64_t t = 0; t < T; t++) {
    int64_t n, tr, tc;
    wino_tile_pos(t, g->th, g->tw, &n, &tr, &tc);
    for (int j = 0; j < 4; j++) {
      const float *m = M + (size_t)(t * WINO_KW + j * 16);
      v16 a[2][4], o[2][2];
      for (int c = 0; c < 4; c++) { /* A'D m: rows m0+(m1+m2)/2, (m1-m2)/2-m3 */
        const v16 m0 = _mm512_loadu_ps(m + c * es), m1 = _mm512_loadu_ps(m + (4 + c) * es);
        const v16 m2 = _mm512_loadu_ps(m + (8 + c) * es), m3 = _mm512_loadu_ps(m + (12 + c) * es);
        a[0][c] = _mm512_fmadd_ps(half, _mm512_add_ps(m1, m2), m0);
        a[1][c] = _mm512_fmsub_ps(half, _mm512_sub_ps(m1, m2), m3);
      }
      for (int r = 0; r < 2; r++) { /* (A'D m)D A */
        o[r][0] = _mm512_fmadd_ps(half, _mm512_add_ps(a[r][1], a[r][2]), a[r][0]);
        o[r][1] = _mm512_fmsub_ps(half, _mm512_sub_ps(a[r][1], a[r][2]), a[r][3]);
      }
      const v16 bv = bias ? _mm512_loadu_ps(bias + k0 + j * 16) : zero;
      float *yb = y + n * g->yl.img + (k0 / 16 + j) * g->yl.blk;
      for (int r = 0; r < 2; r++) {
        const int64_t h = tr * 2 + r;
        if (h >= H) continue;
        for (int c = 0; c < 2; c++) {
          const int64_t w = tc * 2 + c;
          if (w >= W) continue;
          float *p = yb + h * g->yl.row + w * g->yl.col;
          v16 v = _mm512_add_ps(o[r][c], bv);
          if (sum) v = _mm512_add_ps(v, _mm512_loadu_ps(p));
          if (relu) v = _mm512_max_ps(v, zero);
          _mm512_storeu_ps(p, v);
        }
      }
    }
  }
}

/* One thread: output-channel blocks kb0..kb1-1 (64 each). */
static void w2_range(const w2_geo_t *g, const float *x, const float *r, const float *bias, int relu, int sum,
                     float *y, int64_t kb0, int64_t kb1, char *ws) {
  float *V = (float *)ws, *U = (float *)(ws + v_bytes(g)), *M = (float *)(ws + v_bytes(g) + u_bytes());
  const int64_t T = g->tiles, groups = (T + WINO_TILES - 1) / WINO_TILES;
  const float *end = r + kb1 * g->C * 9 * WINO_KW; /* this thread's last run of weights */
  w2_input(g, x, V);
  for (int64_t kb = kb0; kb < kb1; kb++) {
    for (int64_t c0 = 0; c0 < g->C; c0 += W2_CC) {
      const int64_t cc = g->C - c0 < W2_CC ? g->C - c0 : W2_CC;
      const float *f = r + (kb * g->C + c0) * 9 * WINO_KW, *next = f + cc * 9 * WINO_KW;
      w2_weights(f, cc, U);
      /* The next run streams from memory into L2 while this one's products run, a cache line for
       * each input channel of a product (unfetched, the transform of each run waited on memory). */
      const int64_t lines = (next + cc * 9 * WINO_KW <= end ? cc * 9 * WINO_KW : end - next) / 16;
      int64_t sent = 0;
      for (int e = 0; e < W2_E; e++)
        for (int64_t q = 0, i = 0; q < groups; q++) {
          const int64_t m = T / groups + (q < T % groups);
          im__cpu_wino_product((int)m, 4, V + (size_t)((e * T + i) * g->C + c0), g->C, cc,
                               U + (size_t)(e * W2_US), M + (size_t)((e * T + i) * WINO_KW), WINO_KW,
                               sent < lines ? next + sent * 16 : NULL, -1, c0 > 0);
          sent += cc;
          i += m;
        }
    }
    w2_output(g, M, bias, relu, sum, kb * WINO_KW, y);
  }
}
#endif

im_status_t im__cpu_wino2_run(const cpu_plan_t *pl, void *const *user, void *owned, void *ws, int nthreads,
                              int prepared) {
  const w2_geo_t g = w2_geo(&pl->key);
  if (!prepared) reorder_weights(&g, user[1], owned, nthreads);
#if defined(__x86_64__)
  const int relu = pl->key.variant & 1, sum = (pl->key.variant >> 6) & 1;
  const float *x = user[0], *r = owned, *bias = user[2];
  float *y = user[3];
  const int64_t KB = g.K / WINO_KW;
  const size_t per = v_bytes(&g) + u_bytes() + m_bytes(&g);
  const int nt = nthreads < KB ? nthreads : (int)KB;
#ifdef _OPENMP
#pragma omp parallel num_threads(nt) if (nt > 1)
  {
    const int t = omp_get_thread_num(), n = omp_get_num_threads();
    w2_range(&g, x, r, bias, relu, sum, y, KB * t / n, KB * (t + 1) / n, (char *)ws + per * (size_t)t);
  }
#else
  (void)nt, (void)per;
  w2_range(&g, x, r, bias, relu, sum, y, 0, KB, ws);
#endif
  return IM_OK;
#else
  (void)ws;
  return im_error(IM_ERR_INTERNAL, "cpu backend: Winograd F(2x2) runs on x86-64 only");
#endif
}
