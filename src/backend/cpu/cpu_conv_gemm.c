/* Inference convolutions as one packed matrix product, for the shapes where oneDNN's direct and
 * Winograd kernels run far below the machine's peak: small outputs with many channels at batch 1
 * (resnet18's last stage: a 7x7 output, 512 channels, 9.4 MB of weights per layer; oneDNN ran
 * those at 180 GFLOP/s on this 2-core AVX-512 machine) and strided layers.
 *
 * y[m, k] = bias[k] (+ y[m, k] when sum) + sum over kk of A[m, kk] * W[kk, k], then ReLU when asked,
 * where m runs over the output pixels (n, p, q) and kk over (input channel block, r, s, channel).
 *   - W is packed once per stamped weight tensor (cached by data pointer and stamp, like oneDNN's
 *     prepared weights): groups of up to 4 output-channel blocks of 16, [group][kk][64].
 *   - A is gathered at every call from the blocked input (nChw16c) into tiles of 7 output pixels,
 *     [tile][kk / 16][7][16]: 16 channels of one input pixel are one vector copy, zeros in the padding.
 *   - The micro-kernel keeps a 7 x 64 block of y in 28 AVX-512 registers over the whole kk loop,
 *     broadcasting A and loading W: 28 FMAs per 4 weight loads and 7 broadcasts (all from L1/L2).
 *     Seven rows fit resnet's output sizes (7x7, 14x14, 28x28, 56x56, 112x112 are multiples of 7).
 * y is written in the blocked layout; the two threads split the (group, tile) pairs, so each keeps
 * its own weight groups in its L2. */
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu.h"

enum { MR = 7, NB = 4, BL = 16, CACHE = 64 };

struct cpu_gemm_cache {
  struct {
    const void *src;
    uint64_t stamp; /* 0: empty */
    int64_t shape[4];
    float *wp;
    uint64_t used;
  } e[CACHE];
  uint64_t clock;
  int force; /* -1: auto; 0: never; 1: wherever the kernel applies */
};

void im__cpu_gemm_cache_free(cpu_ctx_t *c) {
  if (!c->gemm) return;
  for (int i = 0; i < CACHE; i++) free(c->gemm->e[i].wp);
  free(c->gemm);
  c->gemm = NULL;
}

static struct cpu_gemm_cache *cache_of(cpu_ctx_t *c) {
  if (!c->gemm) {
    c->gemm = calloc(1, sizeof *c->gemm);
    if (!c->gemm) return NULL;
    const char *e = getenv("IMOPS_CONV_ALGO");
    c->gemm->force = !e ? -1 : !strcmp(e, "gemm") ? 1 : !strcmp(e, "direct") || !strcmp(e, "nogemm") ? 0 : -1;
  }
  return c->gemm;
}

void im__cpu_gemm_force(im_backend_t *b, int mode) {
  struct cpu_gemm_cache *g = cache_of(im__cpu_ctx(b));
  if (g) g->force = mode;
}

/* w [K][C][R][S] -> [group][kk][nb*16], kk = ((cb*R + r)*S + s)*16 + ci; the last group may hold
 * fewer than NB blocks. */
static void pack_weights(const float *w, const int64_t *ws, float *wp) {
  const int64_t K = ws[0], C = ws[1], R = ws[2], S = ws[3], KK = C * R * S, KB = K / BL;
  for (int64_t g = 0; g * NB < KB; g++) {
    const int64_t nb = KB - g * NB < NB ? KB - g * NB : NB, width = nb * BL;
    float *dst = wp + g * NB * BL * KK;
    for (int64_t cb = 0; cb < C / BL; cb++)
      for (int64_t r = 0; r < R; r++)
        for (int64_t s = 0; s < S; s++)
          for (int64_t ci = 0; ci < BL; ci++) {
            const int64_t kk = ((cb * R + r) * S + s) * BL + ci, c = cb * BL + ci;
            for (int64_t j = 0; j < width; j++) {
              const int64_t k = g * NB * BL + j;
              dst[kk * width + j] = w[((k * C + c) * R + r) * S + s];
            }
          }
  }
}

static const float *packed_weights(struct cpu_gemm_cache *g, const im_tensor_t *w) {
  int slot = -1;
  for (int i = 0; i < CACHE; i++) {
    if (g->e[i].stamp == w->stamp && g->e[i].src == w->data && !memcmp(g->e[i].shape, w->shape, sizeof g->e[i].shape)) {
      g->e[i].used = ++g->clock;
      return g->e[i].wp;
    }
    if (slot < 0 || g->e[i].used < g->e[slot].used) slot = i;
  }
  float *wp = malloc(sizeof *wp * (size_t)im_tensor_numel(w));
  if (!wp) return NULL;
  pack_weights(w->data, w->shape, wp);
  free(g->e[slot].wp);
  g->e[slot].src = w->data;
  g->e[slot].stamp = w->stamp;
  memcpy(g->e[slot].shape, w->shape, sizeof g->e[slot].shape);
  g->e[slot].wp = wp;
  g->e[slot].used = ++g->clock;
  return wp;
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define GEMM_AVX512 __attribute__((target("avx512f")))

typedef struct {
  const float *x; /* blocked input */
  float *y;       /* blocked output */
  const float *wp, *bias;
  float *ap; /* gathered tiles */
  int64_t N, C, H, W, K, P, Q, R, S, sh, sw, ph, pw;
  int64_t M, MT, KK, NG;
  int relu, sum;
} job_t;

/* Tile mt of A: for each (cb, r, s) the 7 rows' 16 channels, zeros where the window leaves the
 * image or past the last output pixel. */
GEMM_AVX512 static void gather_tile(const job_t *j, int64_t mt) {
  float *dst = j->ap + mt * j->KK * MR;
  const int64_t PQ = j->P * j->Q, CB = j->C / BL;
  for (int i = 0; i < MR; i++) {
    const int64_t m = mt * MR + i;
    if (m >= j->M) {
      for (int64_t blk = 0; blk < j->KK / BL; blk++) _mm512_storeu_ps(dst + (blk * MR + i) * BL, _mm512_setzero_ps());
      continue;
    }
    const int64_t n = m / PQ, p = m % PQ / j->Q, q = m % j->Q;
    for (int64_t cb = 0; cb < CB; cb++) {
      const float *xc = j->x + (n * CB + cb) * j->H * j->W * BL;
      for (int64_t r = 0; r < j->R; r++) {
        const int64_t ih = p * j->sh - j->ph + r;
        for (int64_t s = 0; s < j->S; s++) {
          const int64_t iw = q * j->sw - j->pw + s, blk = (cb * j->R + r) * j->S + s;
          const __m512 v = ih >= 0 && ih < j->H && iw >= 0 && iw < j->W ? _mm512_loadu_ps(xc + (ih * j->W + iw) * BL)
                                                                      : _mm512_setzero_ps();
          _mm512_storeu_ps(dst + (blk * MR + i) * BL, v);
        }
      }
    }
  }
}

/* One 7-row tile times one group of nb (1..4) output blocks. Always inlined with a constant nb, so
 * the accumulators stay in registers. */
GEMM_AVX512 static inline __attribute__((always_inline)) void tile_kernel(const job_t *j, int64_t g, int64_t mt,
                                                                          const int nb) {
  const int64_t PQ = j->P * j->Q, KB = j->K / BL, width = nb * BL;
  const float *a = j->ap + mt * j->KK * MR, *w = j->wp + g * NB * BL * j->KK;
  int64_t off[MR];
  int mr = 0;
  for (int i = 0; i < MR; i++) {
    const int64_t m = mt * MR + i;
    if (m >= j->M) break;
    off[i] = ((m / PQ) * KB + g * NB) * PQ * BL + (m % PQ) * BL;
    mr++;
  }
  __m512 acc[MR][NB];
#pragma GCC unroll 4
  for (int b = 0; b < nb; b++) {
    const __m512 bv = j->bias ? _mm512_loadu_ps(j->bias + (g * NB + b) * BL) : _mm512_setzero_ps();
#pragma GCC unroll 7
    for (int i = 0; i < MR; i++)
      acc[i][b] = j->sum && i < mr ? _mm512_add_ps(bv, _mm512_loadu_ps(j->y + off[i] + b * PQ * BL)) : bv;
  }
  for (int64_t blk = 0; blk < j->KK / BL; blk++) {
    const float *ab = a + blk * MR * BL, *wb = w + blk * BL * width;
#pragma GCC unroll 2
    for (int ci = 0; ci < BL; ci++) {
      __m512 wv[NB];
#pragma GCC unroll 4
      for (int b = 0; b < nb; b++) wv[b] = _mm512_loadu_ps(wb + ci * width + b * BL);
#pragma GCC unroll 7
      for (int i = 0; i < MR; i++) {
        const __m512 av = _mm512_set1_ps(ab[i * BL + ci]);
#pragma GCC unroll 4
        for (int b = 0; b < nb; b++) acc[i][b] = _mm512_fmadd_ps(av, wv[b], acc[i][b]);
      }
    }
  }
  const __m512 zero = _mm512_setzero_ps();
#pragma GCC unroll 7
  for (int i = 0; i < MR; i++)
#pragma GCC unroll 4
    for (int b = 0; b < nb; b++)
      if (i < mr) _mm512_storeu_ps(j->y + off[i] + b * PQ * BL, j->relu ? _mm512_max_ps(acc[i][b], zero) : acc[i][b]);
}

GEMM_AVX512 static void tile(const job_t *j, int64_t g, int64_t mt) {
  const int64_t KB = j->K / BL, nb = KB - g * NB < NB ? KB - g * NB : NB;
  switch (nb) {
  case 4: tile_kernel(j, g, mt, 4); break;
  case 3: tile_kernel(j, g, mt, 3); break;
  case 2: tile_kernel(j, g, mt, 2); break;
  default: tile_kernel(j, g, mt, 1); break;
  }
}

static void run(const job_t *j, int nt) {
  const int64_t tiles = j->NG * j->MT;
  (void)nt;
#ifdef _OPENMP
#pragma omp parallel num_threads(nt)
#endif
  {
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
    for (int64_t mt = 0; mt < j->MT; mt++) gather_tile(j, mt);
#ifdef _OPENMP
#pragma omp for schedule(static)
#endif
    for (int64_t t = 0; t < tiles; t++) tile(j, t / j->MT, t % j->MT);
  }
}

/* Where the kernel beats oneDNN on this machine (2 threads, measured per layer): 3x3 stride-1 layers
 * with outputs too small for Winograd's tiles (under 14x14) at batch 1, i.e. resnet18's last stage
 * at 224x224: 0.82-0.89 against 1.28 ms a layer. oneDNN's Winograd wins on larger outputs (2x), and
 * oneDNN ties or wins on strided and 1x1 layers and on larger batches. */
static int worth_it(const job_t *j) {
  return j->sh == 1 && j->sw == 1 && j->R * j->S > 1 && j->P * j->Q < 14 * 14 && j->M <= 64;
}

im_status_t im__cpu_conv_gemm_forward(im_backend_t *b, const im_conv2d_params_t *p, im__ct *x, im__ct *w, im__ct *bias,
                                      int relu, int sum, im__t *y) {
  cpu_ctx_t *c = im__cpu_ctx(b);
  if (!w->stamp || x->layout != IM_LAYOUT_NCHW16C || y->layout != IM_LAYOUT_NCHW16C || w->layout != IM_LAYOUT_PLAIN)
    return IM_ERR_UNSUPPORTED;
  if ((p->groups > 1) || p->dilation_h > 1 || p->dilation_w > 1 || x->shape[1] % BL || w->shape[0] % BL)
    return IM_ERR_UNSUPPORTED;
  struct cpu_gemm_cache *g = cache_of(c);
  if (!g || !g->force || !__builtin_cpu_supports("avx512f")) return IM_ERR_UNSUPPORTED;
  job_t j = {.x = x->data, .y = y->data, .bias = bias ? bias->data : NULL, .N = x->shape[0], .C = x->shape[1],
             .H = x->shape[2], .W = x->shape[3], .K = w->shape[0], .P = y->shape[2], .Q = y->shape[3],
             .R = w->shape[2], .S = w->shape[3], .sh = p->stride_h > 1 ? p->stride_h : 1,
             .sw = p->stride_w > 1 ? p->stride_w : 1, .ph = p->pad_h, .pw = p->pad_w, .relu = relu, .sum = sum};
  j.M = j.N * j.P * j.Q;
  j.MT = (j.M + MR - 1) / MR;
  j.KK = j.C * j.R * j.S;
  j.NG = (j.K / BL + NB - 1) / NB;
  if (g->force < 0 && !worth_it(&j)) return IM_ERR_UNSUPPORTED;
  const float *wp = packed_weights(g, w);
  if (!wp) return im_error(IM_ERR_NOMEM, "conv2d: out of memory for packed weights");
  j.wp = wp;
  float *ap = im__cpu_ws_reserve(c, sizeof(float) * (size_t)(j.MT * MR * j.KK));
  if (!ap) return im_error(IM_ERR_NOMEM, "conv2d: out of memory for the gathered input");
  j.ap = ap;
  run(&j, c->nthreads);
  return IM_OK;
}
#else
im_status_t im__cpu_conv_gemm_forward(im_backend_t *b, const im_conv2d_params_t *p, im__ct *x, im__ct *w, im__ct *bias,
                                      int relu, int sum, im__t *y) {
  (void)b, (void)p, (void)x, (void)w, (void)bias, (void)relu, (void)sum, (void)y;
  return IM_ERR_UNSUPPORTED;
}
#endif
