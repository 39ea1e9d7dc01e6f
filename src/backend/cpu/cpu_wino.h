/* What imops' two Winograd kernels share (cpu_wino.c: F(4x4,3x3) with weights transformed once;
 * cpu_wino2.c: F(2x2,3x3) with weights transformed as they stream through): the register-blocked
 * product of transformed inputs and weights, and their SIMD helpers. Internal to the cpu backend. */
#ifndef IMOPS_BACKEND_CPU_WINO_H
#define IMOPS_BACKEND_CPU_WINO_H

#include "backend/cpu/cpu.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define WINO_TARGET __attribute__((target("avx512f,fma")))
#define WINO_INLINE __attribute__((target("avx512f,fma"), always_inline)) static inline
#define WINO_FN WINO_TARGET static
typedef __m512 v16;
#endif

enum { WINO_TILES = 6 /* tiles per product kernel */, WINO_KW = 64 /* its output channels */ };

/* M[i][k] (row stride ms) = V[i][c] (row stride vs) x u[c][k] for i < nt (1..6) tiles, c < C and
 * k < 16 nv (nv 1..4; u's rows are 16 nv wide), added to M's values when acc; pf: data a later
 * call reads, fetched meanwhile, |pfn| cache lines for each c from pf on (into L1 when pfn > 0,
 * into L2 when pfn < 0), or NULL. x86-64 with AVX-512 only (cpu_wino.c). */
void im__cpu_wino_product(int nt, int nv, const float *V, int64_t vs, int64_t C, const float *u, float *M, int64_t ms,
                          const float *pf, int pfn, int acc);

/* Where 16 channels of a pixel sit in a blocked (nChw16c) or channels-last tensor of C channels,
 * H x W: image n, channel block cb, row h, column w at n*img + cb*blk + h*row + w*col. */
typedef struct {
  int64_t img, blk, row, col;
} wino_lay_t;

static inline wino_lay_t wino_lay(im_layout_t l, int64_t C, int64_t H, int64_t W) {
  if (l == IM_LAYOUT_NHWC) return (wino_lay_t){H * W * C, 16, W * C, C};
  return (wino_lay_t){C * H * W, H * W * 16, W * 16, 16};
}

/* Tile t of a batch tiled th x tw per image: its image, tile row and tile column. */
static inline void wino_tile_pos(int64_t t, int64_t th, int64_t tw, int64_t *n, int64_t *r, int64_t *c) {
  *n = t / (th * tw);
  t %= th * tw;
  *r = t / tw;
  *c = t % tw;
}

/* cpu_wino2.c: the F(2x2) kernel's plan run (cpu_plan_t.own), its prepared bytes and workspace. */
im_status_t im__cpu_wino2_run(const cpu_plan_t *pl, void *const *user, void *owned, void *ws, int nthreads,
                              int prepared);
size_t im__cpu_wino2_ws_bytes(const cpu_key_t *k, int nthreads);

#endif
