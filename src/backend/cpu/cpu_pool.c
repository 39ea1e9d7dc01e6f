/* Pooling for the cpu backend. Max pooling is our own loop, because our
 * indices are torch's (the argmax as h*W + w in its plane, first maximum in
 * row-major window order, NaN wins) while oneDNN's workspace stores window
 * offsets in its own layout, and oneDNN lets NaN lose and starts from
 * -FLT_MAX rather than -inf. The loop runs over output rows on the OpenMP
 * threads; windows inside the image go 16 columns at a time in AVX-512
 * registers (strides 1 and 2, chosen at run time) or column-vectorised with
 * selects, and the windows the image clips one by one. Average pooling runs on
 * oneDNN's pooling primitive (floor mode: no window passes the padded image, so
 * its divisors are torch's). Without indices (inference), max pooling takes
 * kernels that compute the maximum alone (_mm512_max_ps in the reference's
 * order; 2x2/2 and 3x3/2 windows unrolled) and only detect NaNs, recomputing
 * the rare row that has one by the exact loop. Global average pooling sums in
 * double in pixel order, as the reference, many channels side by side.
 * Blocked (nChw16c) tensors take loops of their own with the 16 channels of a
 * block in the SIMD lanes (max pooling and global average pooling). */
#include <math.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include "backend/cpu/cpu.h"

/* ---- max pooling ------------------------------------------------------------------------------------ */

/* One output position by the reference rule (used for windows clipped by the image). */
static void max_one(const float *xp, int64_t H, int64_t W, const im_pool2d_params_t *p, int64_t oh, int64_t ow,
                    float *y, int32_t *idx) {
  int64_t h0 = oh * p->stride_h - p->pad_h, w0 = ow * p->stride_w - p->pad_w;
  const int64_t h1 = h0 + p->kernel_h < H ? h0 + p->kernel_h : H;
  const int64_t w1 = w0 + p->kernel_w < W ? w0 + p->kernel_w : W;
  if (h0 < 0) h0 = 0;
  if (w0 < 0) w0 = 0;
  float best = -INFINITY;
  int64_t arg = h0 * W + w0;
  for (int64_t ih = h0; ih < h1; ih++)
    for (int64_t iw = w0; iw < w1; iw++) {
      const float v = xp[ih * W + iw];
      if (v > best || isnan(v)) {
        best = v;
        arg = ih * W + iw;
        if (isnan(v)) goto done;
      }
    }
done:
  *y = best;
  if (idx) *idx = (int32_t)arg;
}

/* The update rule of the vectorised loops: take v when it is greater, or when it is NaN while the
 * best so far is not (so the first NaN wins, as the reference's early exit). Selects, no branches. */
#define MAX_UPD(v, b) (((v) > (b)) | (((v) != (v)) & ((b) == (b))))

/* Interior columns [qa, qb) of an output row whose window rows are [h0, h1), the window walked in
 * row-major order with the whole column range at once (accumulating in yr and ir). */
static void max_cols(const float *xp, int64_t W, int64_t h0, int64_t h1, int64_t sw, int64_t pw, int64_t kw,
                     int64_t qa, int64_t qb, float *yr, int32_t *ir) {
  for (int64_t q = qa; q < qb; q++) yr[q] = -INFINITY;
  if (ir) {
    for (int64_t q = qa; q < qb; q++) ir[q] = (int32_t)(h0 * W + q * sw - pw);
    for (int64_t ih = h0; ih < h1; ih++)
      for (int64_t s = 0; s < kw; s++) {
        const int64_t o = ih * W + s - pw; /* + q*sw >= 0 for interior columns */
        for (int64_t q = qa; q < qb; q++) {
          const float v = xp[o + q * sw], bst = yr[q];
          const int upd = MAX_UPD(v, bst);
          yr[q] = upd ? v : bst;
          ir[q] = upd ? (int32_t)(o + q * sw) : ir[q];
        }
      }
  } else {
    for (int64_t ih = h0; ih < h1; ih++)
      for (int64_t s = 0; s < kw; s++) {
        const int64_t o = ih * W + s - pw;
        for (int64_t q = qa; q < qb; q++) {
          const float v = xp[o + q * sw], bst = yr[q];
          yr[q] = MAX_UPD(v, bst) ? v : bst;
        }
      }
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
#define CPU_MAXPOOL_AVX512 1
/* Interior columns [qa, qb) with stride sw of 1 or 2, 16 at a time in AVX-512 registers (the
 * running maximum and its index stay in registers over the whole window), the last block masked.
 * Stride 2 picks the even lanes of two loads; the loads are masked so that nothing past the
 * block's last window column is read. */
__attribute__((target("avx512f"))) static void max_cols_avx512(const float *xp, int64_t W, int64_t h0, int64_t h1,
                                                              int64_t sw, int64_t pw, int64_t kw, int64_t qa,
                                                              int64_t qb, float *yr, int32_t *ir) {
  const __m512i lane = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
  const __m512i lane_s = sw == 1 ? lane : _mm512_slli_epi32(lane, 1);
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  for (int64_t q = qa; q < qb; q += 16) {
    const int n = qb - q < 16 ? (int)(qb - q) : 16;
    const __mmask16 m = (__mmask16)((1u << n) - 1u);
    /* Stride 2: the block's elements are o + 2j, j < n, that is o .. o + 2n - 2. */
    const unsigned span = sw == 1 ? (unsigned)n : 2u * (unsigned)n - 1u;
    const __mmask16 ma = (__mmask16)(span >= 16 ? 0xFFFFu : (1u << span) - 1u);
    const __mmask16 mb = (__mmask16)(span > 16 ? (1u << (span - 16)) - 1u : 0u);
    __m512 best = _mm512_set1_ps(-INFINITY);
    __m512i arg = _mm512_add_epi32(_mm512_set1_epi32((int32_t)(h0 * W + q * sw - pw)), lane_s);
    for (int64_t ih = h0; ih < h1; ih++)
      for (int64_t s = 0; s < kw; s++) {
        const int64_t o = ih * W + q * sw + s - pw; /* >= 0: q is an interior column */
        __m512 v = _mm512_maskz_loadu_ps(ma, xp + o);
        if (sw == 2) v = _mm512_permutex2var_ps(v, even, _mm512_maskz_loadu_ps(mb, xp + o + 16));
        const __mmask16 upd = _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) |
                              (_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q) & _mm512_cmp_ps_mask(best, best, _CMP_ORD_Q));
        best = _mm512_mask_mov_ps(best, upd, v);
        arg = _mm512_mask_mov_epi32(arg, upd, _mm512_add_epi32(_mm512_set1_epi32((int32_t)o), lane_s));
      }
    _mm512_mask_storeu_ps(yr + q, m, best);
    if (ir) _mm512_mask_storeu_epi32(ir + q, m, arg);
  }
}

/* ---- max pooling without indices (inference) ----
 * The maximum alone, taken as best = _mm512_max_ps(v, best) (that is v > best ? v : best, the
 * reference's update without its NaN clause) over the window in row-major order, or as a tree of
 * such maxima whose right operand always holds the earlier elements: either way the first maximum
 * in row-major order comes out, so ties (-0 and +0) resolve as in the reference. NaN lanes are only
 * detected, by an unordered compare of two vectors at a time; a row that met one is recomputed by
 * the exact loop above, so a NaN wins (the first one, with its bits) as in the reference. */
#define MX(v, best) _mm512_max_ps(v, best)
#define UNORD(a, b) _mm512_cmp_ps_mask(a, b, _CMP_UNORD_Q)
#define AVX512_INLINE __attribute__((target("avx512f"), always_inline)) static inline

/* The lanes of the first n (1..16) in a mask. */
static inline __mmask16 lanes(int64_t n) { return (__mmask16)(n >= 16 ? 0xFFFFu : (1u << n) - 1u); }

/* Interior columns [qa, qb) of an output row, window rows [h0, h1), plain plane xp of width W; kw and
 * sw are constants where the caller is specialised (always inlined). Stride 2 loads the span of two
 * window columns s, s+1 once and splits it into its even and odd elements. Returns the NaN lanes. */
AVX512_INLINE __mmask16 max_cols_noidx_body(const float *xp, int64_t W, int64_t h0, int64_t h1, int sw, int64_t pw,
                                             int kw, int64_t qa, int64_t qb, float *yr) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  __mmask16 nan = 0;
  for (int64_t q = qa; q < qb; q += 16) {
    const int64_t n = qb - q < 16 ? qb - q : 16;
    const __mmask16 m = lanes(n);
    __m512 best = _mm512_set1_ps(-INFINITY);
    for (int64_t ih = h0; ih < h1; ih++) {
      const float *r = xp + ih * W + q * sw - pw; /* >= xp: q is an interior column */
      if (sw == 1) {
        int s = 0;
        for (; s + 1 < kw; s += 2) {
          const __m512 a = _mm512_maskz_loadu_ps(m, r + s), b = _mm512_maskz_loadu_ps(m, r + s + 1);
          nan |= UNORD(a, b);
          best = MX(b, MX(a, best));
        }
        if (s < kw) {
          const __m512 a = _mm512_maskz_loadu_ps(m, r + s);
          nan |= UNORD(a, a);
          best = MX(a, best);
        }
      } else {
        for (int s = 0; s < kw; s += 2) {
          /* Elements r + s + 2j and (when s + 1 < kw) r + s + 1 + 2j, j < n; nothing past them is read. */
          const int64_t span = s + 1 < kw ? 2 * n : 2 * n - 1;
          const __m512 lo = _mm512_maskz_loadu_ps(lanes(span), r + s);
          const __m512 hi = _mm512_maskz_loadu_ps(span > 16 ? lanes(span - 16) : 0, r + s + 16);
          nan |= UNORD(lo, hi);
          best = MX(_mm512_permutex2var_ps(lo, even, hi), best);
          if (s + 1 < kw) best = MX(_mm512_permutex2var_ps(lo, odd, hi), best);
        }
      }
    }
    _mm512_mask_storeu_ps(yr + q, m, best);
  }
  return nan;
}

/* max_cols_noidx_body specialised for 2 and 3 columns at stride 2 (2x2/2 and 3x3/2 pools) and
 * stride 1; other windows take the general body. Nonzero when a NaN was met. */
__attribute__((target("avx512f"))) static int max_cols_noidx_avx512(const float *xp, int64_t W, int64_t h0,
                                                                   int64_t h1, int64_t sw, int64_t pw, int64_t kw,
                                                                   int64_t qa, int64_t qb, float *yr) {
  if (sw == 2 && kw == 2) return max_cols_noidx_body(xp, W, h0, h1, 2, pw, 2, qa, qb, yr) != 0;
  if (sw == 2 && kw == 3) return max_cols_noidx_body(xp, W, h0, h1, 2, pw, 3, qa, qb, yr) != 0;
  if (sw == 2) return max_cols_noidx_body(xp, W, h0, h1, 2, pw, (int)kw, qa, qb, yr) != 0;
  if (kw == 3) return max_cols_noidx_body(xp, W, h0, h1, 1, pw, 3, qa, qb, yr) != 0;
  return max_cols_noidx_body(xp, W, h0, h1, 1, pw, (int)kw, qa, qb, yr) != 0;
}
#endif

/* Output row oh of one plane: xp is the (H, W) plane, yr and ir (or NULL) the row's Q outputs.
 * Columns q in [qlo, qhi) have windows inside the image horizontally: with AVX-512 and stride 1
 * or 2 they go through max_cols_avx512, else through max_cols; columns whose windows the image
 * clips go one by one. */
static void max_row(const float *xp, int64_t H, int64_t W, const im_pool2d_params_t *p, int64_t oh, int64_t Q,
                    int64_t qlo, int64_t qhi, int avx512, float *yr, int32_t *ir) {
  for (int64_t q = 0; q < qlo; q++) max_one(xp, H, W, p, oh, q, &yr[q], ir ? &ir[q] : NULL);
  for (int64_t q = qhi > qlo ? qhi : qlo; q < Q; q++) max_one(xp, H, W, p, oh, q, &yr[q], ir ? &ir[q] : NULL);
  if (qhi <= qlo) return;
  int64_t h0 = oh * p->stride_h - p->pad_h;
  const int64_t h1 = h0 + p->kernel_h < H ? h0 + p->kernel_h : H;
  if (h0 < 0) h0 = 0;
  const int64_t sw = p->stride_w, pw = p->pad_w, kw = p->kernel_w;
  int64_t q = qlo;
#ifdef CPU_MAXPOOL_AVX512
  if (avx512 && (sw == 1 || sw == 2)) {
    /* Without indices the maximum alone, unless a NaN calls for the exact loop. */
    if (ir || max_cols_noidx_avx512(xp, W, h0, h1, sw, pw, kw, q, qhi, yr))
      max_cols_avx512(xp, W, h0, h1, sw, pw, kw, q, qhi, yr, ir);
    q = qhi;
  }
#else
  (void)avx512;
#endif
  if (q < qhi) max_cols(xp, W, h0, h1, sw, pw, kw, q, qhi, yr, ir);
}

/* ---- blocked (nChw16c) max pooling ---- */

#define BL 16
#ifdef _OPENMP
#define POOL_SIMD _Pragma("omp simd")
#else
#define POOL_SIMD
#endif

/* The input range [*a, *b) of output position o's window along one axis, clipped to [0, lim). */
static inline void clip_window(int64_t o, int stride, int pad, int k, int64_t lim, int64_t *a, int64_t *b) {
  *a = o * stride - pad;
  *b = *a + k;
  if (*a < 0) *a = 0;
  if (*b > lim) *b = lim;
}

/* One output row oh of block plane xp ([H][W][16]) into yr ([Q][16]) and ir (or NULL). */
static void max_row_blocked(const float *xp, int64_t H, int64_t W, const im_pool2d_params_t *p, int64_t oh,
                            int64_t Q, float *yr, int32_t *ir) {
  int64_t h0, h1;
  clip_window(oh, p->stride_h, p->pad_h, p->kernel_h, H, &h0, &h1);
  for (int64_t q = 0; q < Q; q++) {
    int64_t w0, w1;
    clip_window(q, p->stride_w, p->pad_w, p->kernel_w, W, &w0, &w1);
    float best[BL];
    int32_t bi[BL];
    const float *f = xp + (h0 * W + w0) * BL;
    for (int j = 0; j < BL; j++) {
      best[j] = f[j];
      bi[j] = (int32_t)(h0 * W + w0);
    }
    for (int64_t h = h0; h < h1; h++)
      for (int64_t w = w0; w < w1; w++) { /* the first position again changes nothing */
        const float *v = xp + (h * W + w) * BL;
        const int32_t at = (int32_t)(h * W + w);
        POOL_SIMD
        for (int j = 0; j < BL; j++) {
          const int up = MAX_UPD(v[j], best[j]);
          best[j] = up ? v[j] : best[j];
          bi[j] = up ? at : bi[j];
        }
      }
    memcpy(yr + q * BL, best, sizeof best);
    if (ir) memcpy(ir + q * BL, bi, sizeof bi);
  }
}

#ifdef CPU_MAXPOOL_AVX512
/* max_row_blocked with the 16 lanes in one AVX-512 register (the same selects). */
__attribute__((target("avx512f"))) static void max_row_blocked_avx512(const float *xp, int64_t H, int64_t W,
                                                                      const im_pool2d_params_t *p, int64_t oh,
                                                                      int64_t Q, float *yr, int32_t *ir) {
  int64_t h0, h1;
  clip_window(oh, p->stride_h, p->pad_h, p->kernel_h, H, &h0, &h1);
  for (int64_t q = 0; q < Q; q++) {
    int64_t w0, w1;
    clip_window(q, p->stride_w, p->pad_w, p->kernel_w, W, &w0, &w1);
    __m512 best = _mm512_loadu_ps(xp + (h0 * W + w0) * BL);
    __m512i bi = _mm512_set1_epi32((int32_t)(h0 * W + w0));
    for (int64_t h = h0; h < h1; h++)
      for (int64_t w = w0; w < w1; w++) {
        const __m512 v = _mm512_loadu_ps(xp + (h * W + w) * BL);
        const __mmask16 up = _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ) |
                             (_mm512_cmp_ps_mask(v, v, _CMP_UNORD_Q) & _mm512_cmp_ps_mask(best, best, _CMP_ORD_Q));
        best = _mm512_mask_mov_ps(best, up, v);
        bi = _mm512_mask_mov_epi32(bi, up, _mm512_set1_epi32((int32_t)(h * W + w)));
      }
    _mm512_storeu_ps(yr + q * BL, best);
    if (ir) _mm512_storeu_si512((void *)(ir + q * BL), bi);
  }
}

/* The window rows [h0, h1) x columns [w0, w1) of block plane xp: their maximum (the no-index rule
 * above), NaN lanes or'ed into *nan. */
AVX512_INLINE __m512 max_win_blocked(const float *xp, int64_t W, int64_t h0, int64_t h1, int64_t w0, int64_t w1,
                                     __mmask16 *nan) {
  __m512 best = _mm512_set1_ps(-INFINITY);
  __mmask16 k = 0;
  for (int64_t h = h0; h < h1; h++) {
    const float *r = xp + h * W * BL;
    int64_t w = w0;
    for (; w + 1 < w1; w += 2) {
      const __m512 a = _mm512_loadu_ps(r + w * BL), b = _mm512_loadu_ps(r + (w + 1) * BL);
      k |= UNORD(a, b);
      best = MX(b, MX(a, best));
    }
    if (w < w1) {
      const __m512 a = _mm512_loadu_ps(r + w * BL);
      k |= UNORD(a, a);
      best = MX(a, best);
    }
  }
  *nan |= k;
  return best;
}

/* Columns w and w + 1 of block row r: their first maximum; NaN lanes or'ed into *k. */
AVX512_INLINE __m512 row2(const float *r, int64_t w, __mmask16 *k) {
  const __m512 a = _mm512_loadu_ps(r + w * BL), b = _mm512_loadu_ps(r + (w + 1) * BL);
  *k |= UNORD(a, b);
  return MX(b, a);
}

/* Output columns [qa, qb) of a row through max_win_blocked. */
AVX512_INLINE void max_cols_blocked(const float *xp, int64_t W, const im_pool2d_params_t *p, int64_t h0, int64_t h1,
                                    int64_t qa, int64_t qb, float *yr, __mmask16 *nan) {
  for (int64_t q = qa; q < qb; q++) {
    int64_t w0, w1;
    clip_window(q, p->stride_w, p->pad_w, p->kernel_w, W, &w0, &w1);
    _mm512_storeu_ps(yr + q * BL, max_win_blocked(xp, W, h0, h1, w0, w1, nan));
  }
}

/* max_row_blocked_avx512 without indices: 2x2 and 3x3 windows inside the image unrolled (each
 * window row reduced, then the rows in order), the others through max_win_blocked. The columns
 * [qlo, qhi) have windows inside the image horizontally. A row that met a NaN is recomputed by the
 * exact loop. */
__attribute__((target("avx512f"))) static void max_row_blocked_noidx_avx512(const float *xp, int64_t H, int64_t W,
                                                                            const im_pool2d_params_t *p,
                                                                            int64_t oh, int64_t Q, int64_t qlo,
                                                                            int64_t qhi, float *yr) {
  int64_t h0, h1;
  clip_window(oh, p->stride_h, p->pad_h, p->kernel_h, H, &h0, &h1);
  const int64_t sw = p->stride_w, pw = p->pad_w, kw = p->kernel_w, rows = h1 - h0;
  __mmask16 nan = 0;
  int64_t qa = 0, qb = 0; /* the unrolled columns */
  if (qhi > qlo && ((rows == 2 && kw == 2) || (rows == 3 && kw == 3))) qa = qlo, qb = qhi;
  max_cols_blocked(xp, W, p, h0, h1, 0, qa, yr, &nan);
  const float *r0 = xp + h0 * W * BL, *r1 = qb > qa ? r0 + W * BL : r0, *r2 = qb > qa && kw == 3 ? r1 + W * BL : r1;
  if (kw == 2)
    for (int64_t q = qa; q < qb; q++) {
      const int64_t w = q * sw - pw;
      const __m512 t0 = row2(r0, w, &nan), t1 = row2(r1, w, &nan);
      _mm512_storeu_ps(yr + q * BL, MX(t1, t0));
    }
  else
    for (int64_t q = qa; q < qb; q++) {
      const int64_t w = q * sw - pw;
      const __m512 e0 = _mm512_loadu_ps(r0 + (w + 2) * BL), e1 = _mm512_loadu_ps(r1 + (w + 2) * BL),
                   e2 = _mm512_loadu_ps(r2 + (w + 2) * BL);
      nan |= UNORD(e0, e1) | UNORD(e2, e2);
      const __m512 t0 = MX(e0, row2(r0, w, &nan)), t1 = MX(e1, row2(r1, w, &nan)), t2 = MX(e2, row2(r2, w, &nan));
      _mm512_storeu_ps(yr + q * BL, MX(t2, MX(t1, t0)));
    }
  max_cols_blocked(xp, W, p, h0, h1, qb, Q, yr, &nan);
  if (nan) max_row_blocked_avx512(xp, H, W, p, oh, Q, yr, NULL);
}
#endif

/* The output columns [*qlo, *qhi) (within [0, Q)) whose windows lie inside the W columns:
 * q*sw - pw >= 0 and q*sw - pw + kw <= W. */
static void interior_cols(const im_pool2d_params_t *p, int64_t W, int64_t Q, int64_t *qlo, int64_t *qhi) {
  *qlo = (p->pad_w + p->stride_w - 1) / p->stride_w;
  *qhi = W + p->pad_w - p->kernel_w < 0 ? 0 : (W + p->pad_w - p->kernel_w) / p->stride_w + 1;
  if (*qlo > Q) *qlo = Q;
  if (*qhi > Q) *qhi = Q;
}

static void maxpool_forward_blocked(int nt_, int par_, const im_pool2d_params_t *p, im__ct *x, im__t *y,
                                    im__t *indices) {
  const int64_t NB = x->shape[0] * (x->shape[1] / BL), H = x->shape[2], W = x->shape[3];
  const int64_t P = y->shape[2], Q = y->shape[3], rows = NB * P;
  const float *xd = x->data;
  float *yd = y->data;
  int32_t *id = indices ? indices->data : NULL;
#ifdef CPU_MAXPOOL_AVX512
  const int avx512 = __builtin_cpu_supports("avx512f");
  int64_t qlo, qhi;
  interior_cols(p, W, Q, &qlo, &qhi);
#endif
  (void)nt_;
  (void)par_;
  CPU_OMP_FOR
  for (int64_t r = 0; r < rows; r++) {
    const int64_t pl = r / P, oh = r % P;
#ifdef CPU_MAXPOOL_AVX512
    if (avx512 && !id) {
      max_row_blocked_noidx_avx512(xd + pl * H * W * BL, H, W, p, oh, Q, qlo, qhi, yd + r * Q * BL);
      continue;
    }
    if (avx512) {
      max_row_blocked_avx512(xd + pl * H * W * BL, H, W, p, oh, Q, yd + r * Q * BL, id ? id + r * Q * BL : NULL);
      continue;
    }
#endif
    max_row_blocked(xd + pl * H * W * BL, H, W, p, oh, Q, yd + r * Q * BL, id ? id + r * Q * BL : NULL);
  }
}

/* x is (N, C, H, W); y is (N, C, P, Q), assigned; indices (N, C, P, Q) I32 or NULL, assigned:
 * y = max over the window clipped to the image; indices = h*W + w of the first maximum in
 * row-major window order (a NaN wins). Same results as the reference, bit for bit. */
im_status_t im__cpu_maxpool2d_forward(im_backend_t *b, const im_pool2d_params_t *p, im__ct *x, im__t *y,
                                      im__t *indices) {
  const int64_t NC = x->shape[0] * x->shape[1], H = x->shape[2], W = x->shape[3];
  const int64_t P = y->shape[2], Q = y->shape[3];
  if (NC == 0 || P == 0 || Q == 0) return IM_OK;
  if (x->layout == IM_LAYOUT_NCHW16C) {
    maxpool_forward_blocked(im__cpu_ctx(b)->nthreads, NC * H * W > CPU_PAR_MIN, p, x, y, indices);
    return IM_OK;
  }
  int64_t qlo, qhi;
  interior_cols(p, W, Q, &qlo, &qhi);
  const float *xd = x->data;
  float *yd = y->data;
  int32_t *id = indices ? indices->data : NULL;
  const int64_t rows = NC * P;
#ifdef CPU_MAXPOOL_AVX512
  const int avx512 = __builtin_cpu_supports("avx512f");
#else
  const int avx512 = 0;
#endif
  const int nt_ = im__cpu_ctx(b)->nthreads, par_ = NC * H * W > CPU_PAR_MIN;
  (void)nt_;
  (void)par_;
  CPU_OMP_FOR
  for (int64_t r = 0; r < rows; r++) {
    const int64_t pl = r / P, oh = r % P;
    max_row(xd + pl * H * W, H, W, p, oh, Q, qlo, qhi, avx512, yd + r * Q, id ? id + r * Q : NULL);
  }
  return IM_OK;
}

/* dy, indices are (N, C, P, Q); dx is (N, C, H, W), assigned: each plane zeroed, then
 * dx[n,c][indices[n,c,p,q]] += dy[n,c,p,q] (planes in parallel; indices stay in their plane). */
im_status_t im__cpu_maxpool2d_backward(im_backend_t *b, const im_pool2d_params_t *p, im__ct *dy, im__ct *indices,
                                       im__t *dx) {
  const int64_t NC = dx->shape[0] * dx->shape[1], HW = dx->shape[2] * dx->shape[3];
  const int64_t PQ = dy->shape[2] * dy->shape[3];
  const float *dyd = dy->data;
  const int32_t *id = indices->data;
  float *dxd = dx->data;
  const int nt_ = im__cpu_ctx(b)->nthreads, par_ = NC * HW > CPU_PAR_MIN;
  (void)nt_;
  (void)par_;
  if (dx->layout == IM_LAYOUT_NCHW16C) {
    const int64_t NB = NC / BL;
    CPU_OMP_FOR
    for (int64_t pl = 0; pl < NB; pl++) {
      float *dp = dxd + pl * HW * BL;
      const float *g = dyd + pl * PQ * BL;
      const int32_t *ip = id + pl * PQ * BL;
      memset(dp, 0, (size_t)(HW * BL) * sizeof *dp);
      for (int64_t i = 0; i < PQ; i++)
        for (int j = 0; j < BL; j++) dp[(int64_t)ip[i * BL + j] * BL + j] += g[i * BL + j];
    }
    return IM_OK;
  }
  CPU_OMP_FOR
  for (int64_t pl = 0; pl < NC; pl++) {
    float *dp = dxd + pl * HW;
    const float *g = dyd + pl * PQ;
    const int32_t *ip = id + pl * PQ;
    memset(dp, 0, (size_t)HW * sizeof *dp);
    for (int64_t i = 0; i < PQ; i++) dp[ip[i]] += g[i];
  }
  return IM_OK;
}

/* ---- average pooling on oneDNN ------------------------------------------------------------------------- */

static void pool_key(cpu_key_t *k, im_op_t op, const im_pool2d_params_t *p, const int64_t *xs) {
  memset(k, 0, sizeof *k);
  k->op = (int32_t)op;
  const int64_t v[] = {xs[0],       xs[1],       xs[2],    xs[3],    p->kernel_h,    p->kernel_w,
                       p->stride_h, p->stride_w, p->pad_h, p->pad_w, p->exclude_pad};
  memcpy(k->v, v, sizeof v);
}

/* The forward descriptor on the public NCHW layouts (x [N,C,H,W], y [N,C,P,Q]). */
static dnnl_status_t avg_fwd_desc(dnnl_pooling_v2_desc_t *d, const im_pool2d_params_t *p, const dnnl_memory_desc_t *x,
                                  const dnnl_memory_desc_t *y) {
  const dnnl_dims_t str = {p->stride_h, p->stride_w}, ker = {p->kernel_h, p->kernel_w}, dil = {0, 0},
                    pad = {p->pad_h, p->pad_w};
  const dnnl_alg_kind_t alg = p->exclude_pad ? dnnl_pooling_avg_exclude_padding : dnnl_pooling_avg_include_padding;
  return dnnl_pooling_v2_forward_desc_init(d, dnnl_forward_training, alg, x, y, str, ker, dil, pad, pad);
}

/* x is (N, C, H, W); y is (N, C, P, Q), assigned: the window's sum (clipped to the image) divided by
 * the window size (count_include_pad) or by the number of its elements inside the image (exclude_pad). */
im_status_t im__cpu_avgpool2d_forward(im_backend_t *b, const im_pool2d_params_t *p, im__ct *x, im__t *y) {
  const im_tensor_t *all[] = {x, y};
  if (im__cpu_any_empty(2, all)) return IM_ERR_UNSUPPORTED;
  cpu_ctx_t *c = im__cpu_ctx(b);
  cpu_key_t k;
  pool_key(&k, IM_OP_AVGPOOL2D_FORWARD, p, x->shape);
  cpu_build_t bld;
  cpu_plan_t *pl;
  im_status_t st = im__cpu_plan_get(c, &k, &bld, &pl);
  if (st != IM_OK) return st;
  if (!pl) {
    dnnl_memory_desc_t xm, ym;
    im__cpu_md(&xm, 4, x->shape, dnnl_nchw);
    im__cpu_md(&ym, 4, y->shape, dnnl_nchw);
    dnnl_pooling_v2_desc_t d;
    dnnl_status_t s = avg_fwd_desc(&d, p, &xm, &ym);
    if (s != dnnl_success) bld.st = im__cpu_dnnl_error(s, "pooling descriptor");
    dnnl_primitive_desc_t pd = im__cpu_pd(&bld, &d, NULL, 0);
    const int args[2] = {DNNL_ARG_SRC, DNNL_ARG_DST};
    const int mems[2] = {im__cpu_mem_user(&bld, &xm, 0), im__cpu_mem_user(&bld, &ym, 1)};
    im__cpu_step(&bld, pd, 2, args, mems, 1);
    st = im__cpu_plan_finish(&bld, &pl);
    if (st != IM_OK) return st;
  }
  if (pl->unsupported) return IM_ERR_UNSUPPORTED;
  void *const user[2] = {x->data, y->data};
  return im__cpu_plan_run(c, pl, user);
}

/* dy is (N, C, P, Q); dx is (N, C, H, W), assigned: each dy spread evenly over its window's
 * in-image elements with the forward's divisor. */
im_status_t im__cpu_avgpool2d_backward(im_backend_t *b, const im_pool2d_params_t *p, im__ct *dy, im__t *dx) {
  const im_tensor_t *all[] = {dy, dx};
  if (im__cpu_any_empty(2, all)) return IM_ERR_UNSUPPORTED;
  cpu_ctx_t *c = im__cpu_ctx(b);
  cpu_key_t k;
  pool_key(&k, IM_OP_AVGPOOL2D_BACKWARD, p, dx->shape);
  cpu_build_t bld;
  cpu_plan_t *pl;
  im_status_t st = im__cpu_plan_get(c, &k, &bld, &pl);
  if (st != IM_OK) return st;
  if (!pl) {
    dnnl_memory_desc_t xm, ym;
    im__cpu_md(&xm, 4, dx->shape, dnnl_nchw);
    im__cpu_md(&ym, 4, dy->shape, dnnl_nchw);
    dnnl_pooling_v2_desc_t fd, d;
    const dnnl_dims_t str = {p->stride_h, p->stride_w}, ker = {p->kernel_h, p->kernel_w}, dil = {0, 0},
                      pad = {p->pad_h, p->pad_w};
    const dnnl_alg_kind_t alg = p->exclude_pad ? dnnl_pooling_avg_exclude_padding : dnnl_pooling_avg_include_padding;
    dnnl_status_t s = avg_fwd_desc(&fd, p, &xm, &ym);
    if (s == dnnl_success) s = dnnl_pooling_v2_backward_desc_init(&d, alg, &xm, &ym, str, ker, dil, pad, pad);
    if (s != dnnl_success) bld.st = im__cpu_dnnl_error(s, "pooling backward descriptor");
    dnnl_primitive_desc_t hint = im__cpu_pd(&bld, &fd, NULL, 0);
    dnnl_primitive_desc_t pd = im__cpu_pd(&bld, &d, hint, 0);
    if (hint) dnnl_primitive_desc_destroy(hint);
    const int args[2] = {DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_SRC};
    const int mems[2] = {im__cpu_mem_user(&bld, &ym, 0), im__cpu_mem_user(&bld, &xm, 1)};
    im__cpu_step(&bld, pd, 2, args, mems, 1);
    st = im__cpu_plan_finish(&bld, &pl);
    if (st != IM_OK) return st;
  }
  if (pl->unsupported) return IM_ERR_UNSUPPORTED;
  void *const user[2] = {dy->data, dx->data};
  return im__cpu_plan_run(c, pl, user);
}

/* ---- global average pooling ------------------------------------------------------------------------------ */

/* Each channel's sum runs in double in the order of its pixels, as the reference's, so the means
 * agree bit for bit; what is fast is running many channels' sums side by side (one addition chain
 * waits on the one before it). */
#define GAP_G 4 /* groups of 16 channels summed together (8 chains of 8 doubles with AVX-512) */

#ifdef CPU_MAXPOOL_AVX512
/* acc (the 16 lanes as 2 x 8 doubles) plus the lanes m of x, converted exactly. */
AVX512_INLINE void gap_add(const float *x, __mmask16 m, __m512d *lo, __m512d *hi) {
  const __m512 v = _mm512_maskz_loadu_ps(m, x);
  *lo = _mm512_add_pd(*lo, _mm512_cvtps_pd(_mm512_castps512_ps256(v)));
  *hi = _mm512_add_pd(*hi, _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1))));
}

/* The lanes m of y = (float)((lo, hi) / n). */
AVX512_INLINE void gap_store(float *y, __mmask16 m, __m512d lo, __m512d hi, __m512d n) {
  const __m256 l = _mm512_cvtpd_ps(_mm512_div_pd(lo, n)), h = _mm512_cvtpd_ps(_mm512_div_pd(hi, n));
  _mm512_mask_storeu_ps(y, m, _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(_mm256_castps_pd(l)),
                                                                   _mm256_castps_pd(h), 1)));
}

/* For g < G (<= GAP_G = 4): the first w[g] (1..16) lanes of x[g] + i * stride summed over i < n in
 * double, in order of i, and y[g][j] = (float)(sum / n) for those lanes. Missing groups repeat
 * group 0 and are not stored. */
__attribute__((target("avx512f"))) static void gap_groups_avx512(const float *const *x, const int *w, int G, int64_t n,
                                                                 int64_t stride, float *const *y) {
  const float *x0 = x[0], *x1 = x[G > 1], *x2 = x[G > 2 ? 2 : 0], *x3 = x[G > 3 ? 3 : 0];
  const __mmask16 m0 = lanes(w[0]), m1 = lanes(w[G > 1]), m2 = lanes(w[G > 2 ? 2 : 0]), m3 = lanes(w[G > 3 ? 3 : 0]);
  __m512d a0 = _mm512_setzero_pd(), a1 = a0, b0 = a0, b1 = a0, c0 = a0, c1 = a0, d0 = a0, d1 = a0;
  for (int64_t i = 0; i < n; i++) {
    gap_add(x0 + i * stride, m0, &a0, &a1);
    gap_add(x1 + i * stride, m1, &b0, &b1);
    gap_add(x2 + i * stride, m2, &c0, &c1);
    gap_add(x3 + i * stride, m3, &d0, &d1);
  }
  const __m512d dn = _mm512_set1_pd((double)n);
  gap_store(y[0], m0, a0, a1, dn);
  if (G > 1) gap_store(y[1], m1, b0, b1, dn);
  if (G > 2) gap_store(y[2], m2, c0, c1, dn);
  if (G > 3) gap_store(y[3], m3, d0, d1, dn);
}
#endif

/* gap_groups_avx512 where avx512 is set, else the same in plain C. */
static void gap_groups(int avx512, const float *const *x, const int *w, int G, int64_t n, int64_t stride,
                       float *const *y) {
#ifdef CPU_MAXPOOL_AVX512
  if (avx512) {
    gap_groups_avx512(x, w, G, n, stride, y);
    return;
  }
#else
  (void)avx512;
#endif
  for (int g = 0; g < G; g++) {
    double acc[BL] = {0};
    for (int64_t i = 0; i < n; i++)
      for (int j = 0; j < w[g]; j++) acc[j] += x[g][i * stride + j];
    for (int j = 0; j < w[g]; j++) y[g][j] = (float)(acc[j] / (double)n);
  }
}

/* x is (N, C, H, W); y has N*C elements ([N,C] or [N,C,1,1]), assigned: each plane's mean
 * (summed in double in pixel order, as the reference). Blocked tensors sum GAP_G blocks of 16
 * channels at once, NHWC ones GAP_G runs of 16 channels of an image, plain ones 8 planes. */
im_status_t im__cpu_global_avgpool_forward(im_backend_t *b, im__ct *x, im__t *y) {
  const int64_t NC = x->shape[0] * x->shape[1], HW = x->shape[2] * x->shape[3];
  const float *xd = x->data;
  float *yd = y->data;
  const int nt_ = im__cpu_ctx(b)->nthreads, par_ = NC * HW > CPU_PAR_MIN / 8;
  /* (a lower bar than elsewhere: the input is the previous layer's output, spread over both
   * cores' caches, and reading it from one core costs more than waking the other) */
  (void)nt_;
  (void)par_;
  if (x->layout == IM_LAYOUT_NCHW16C || x->layout == IM_LAYOUT_NHWC) {
    /* Units of 16 channels: blocked, unit u is block plane u (stride 16); NHWC, unit u is image
     * u / CB, channels 16 (u % CB) on (stride C). GAP_G units per task. */
    const int blocked = x->layout == IM_LAYOUT_NCHW16C;
    const int64_t C = x->shape[1], CB = blocked ? 1 : (C + BL - 1) / BL, U = blocked ? NC / BL : x->shape[0] * CB;
    const int64_t stride = blocked ? BL : C, tasks = (U + GAP_G - 1) / GAP_G;
#ifdef CPU_MAXPOOL_AVX512
    const int avx512 = __builtin_cpu_supports("avx512f");
#else
    const int avx512 = 0;
#endif
    CPU_OMP_FOR
    for (int64_t t = 0; t < tasks; t++) {
      const float *src[GAP_G];
      float *dst[GAP_G];
      int w[GAP_G], G = 0;
      for (int64_t u = t * GAP_G; u < U && G < GAP_G; u++, G++) {
        const int64_t n = u / CB, c0 = (u % CB) * BL;
        src[G] = blocked ? xd + u * HW * BL : xd + n * HW * C + c0;
        dst[G] = blocked ? yd + u * BL : yd + n * C + c0;
        w[G] = blocked || C - c0 >= BL ? BL : (int)(C - c0);
      }
      gap_groups(avx512, src, w, G, HW, stride, dst);
    }
    return IM_OK;
  }
  CPU_OMP_FOR
  for (int64_t t = 0; t < (NC + 7) / 8; t++) { /* 8 planes side by side */
    const int64_t p0 = t * 8, g = NC - p0 < 8 ? NC - p0 : 8;
    const float *xp = xd + p0 * HW;
    double acc[8] = {0};
    for (int64_t i = 0; i < HW; i++)
      for (int64_t j = 0; j < g; j++) acc[j] += xp[j * HW + i];
    for (int64_t j = 0; j < g; j++) yd[p0 + j] = (float)(acc[j] / (double)HW);
  }
  return IM_OK;
}

/* dy has N*C elements; dx is (N, C, H, W), assigned: dx[n,c,i,j] = dy[n,c] / (H W). */
im_status_t im__cpu_global_avgpool_backward(im_backend_t *b, im__ct *dy, im__t *dx) {
  const int64_t NC = dx->shape[0] * dx->shape[1], HW = dx->shape[2] * dx->shape[3];
  const float *dyd = dy->data;
  float *dxd = dx->data;
  const int nt_ = im__cpu_ctx(b)->nthreads, par_ = NC * HW > CPU_PAR_MIN;
  (void)nt_;
  (void)par_;
  if (dx->layout == IM_LAYOUT_NCHW16C) {
    const int64_t NB = NC / BL;
    CPU_OMP_FOR
    for (int64_t pl = 0; pl < NB; pl++) {
      float g[BL];
      for (int j = 0; j < BL; j++) g[j] = (float)((double)dyd[pl * BL + j] / (double)HW);
      float *dp = dxd + pl * HW * BL;
      for (int64_t i = 0; i < HW; i++) memcpy(dp + i * BL, g, sizeof g);
    }
    return IM_OK;
  }
  if (dx->layout == IM_LAYOUT_NHWC) {
    const int64_t N = dx->shape[0], C = dx->shape[1];
    CPU_OMP_FOR
    for (int64_t n = 0; n < N; n++) {
      float *dp = dxd + n * HW * C;
      for (int64_t c = 0; c < C; c++) dp[c] = (float)((double)dyd[n * C + c] / (double)HW);
      for (int64_t i = 1; i < HW; i++) memcpy(dp + i * C, dp, sizeof *dp * (size_t)C);
    }
    return IM_OK;
  }
  CPU_OMP_FOR
  for (int64_t pl = 0; pl < NC; pl++) {
    const float g = (float)((double)dyd[pl] / (double)HW);
    float *dp = dxd + pl * HW;
    for (int64_t i = 0; i < HW; i++) dp[i] = g;
  }
  return IM_OK;
}
