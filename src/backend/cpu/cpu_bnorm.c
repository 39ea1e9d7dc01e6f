/* Batch norm for the cpu backend: our own OpenMP loops over NCHW, one
 * channel per iteration (so the sums are deterministic for any thread
 * count), with SIMD reductions in float over each contiguous run of a
 * channel's data and double accumulation across runs. A channel's data is
 * read from memory once per pass and its second pass mostly hits the cache.
 * Measured against oneDNN 2.6's batch norm on plain NCHW (ncsp_bnorm, the
 * only layout our API offers it), which was 2-2.7x slower than PyTorch's
 * ATen kernels at 64x64x56x56, these run at or below PyTorch's time.
 * Blocked (nChw16c) tensors take the same passes per block of 16 channels,
 * with the 16 channels in the SIMD lanes. */
#include <math.h>
#include <string.h>

#include "backend/cpu/cpu.h"

/* SIMD loops: the reductions may reassociate (their sums are floats named s, or s1 and s2). */
#ifdef _OPENMP
#define CPU_SIMD_SUM _Pragma("omp simd reduction(+:s)")
#define CPU_SIMD_SUM2 _Pragma("omp simd reduction(+:s1, s2)")
#define CPU_SIMD _Pragma("omp simd")
#define CPU_OMP_CHANNELS _Pragma("omp parallel for num_threads(nt_) if(par_) schedule(dynamic, 1)")
#else
#define CPU_SIMD_SUM
#define CPU_SIMD_SUM2
#define CPU_SIMD
#define CPU_OMP_CHANNELS
#endif

/* Float partial sums over at most this many elements before they go into a double. */
#define RUN_MAX 4096

/* x viewed as (N, C, L): L is the product of the dims after C (1 for [N,C]). */
static void ncl(im__ct *x, int64_t *N, int64_t *C, int64_t *L) {
  *N = x->shape[0];
  *C = x->shape[1];
  *L = 1;
  for (int i = 2; i < x->ndim; i++) *L *= x->shape[i];
}

/* Sum of channel c's elements of x (N, C, L). */
static double chan_sum(const float *x, int64_t N, int64_t C, int64_t L, int64_t c) {
  double acc = 0.0;
  for (int64_t n = 0; n < N; n++) {
    const float *r = x + (n * C + c) * L;
    for (int64_t i0 = 0; i0 < L; i0 += RUN_MAX) {
      const int64_t i1 = i0 + RUN_MAX < L ? i0 + RUN_MAX : L;
      float s = 0.0f;
      CPU_SIMD_SUM
      for (int64_t i = i0; i < i1; i++) s += r[i];
      acc += s;
    }
  }
  return acc;
}

/* Sum of (x - m)^2 over channel c. */
static double chan_sqdev(const float *x, int64_t N, int64_t C, int64_t L, int64_t c, float m) {
  double acc = 0.0;
  for (int64_t n = 0; n < N; n++) {
    const float *r = x + (n * C + c) * L;
    for (int64_t i0 = 0; i0 < L; i0 += RUN_MAX) {
      const int64_t i1 = i0 + RUN_MAX < L ? i0 + RUN_MAX : L;
      float s = 0.0f;
      CPU_SIMD_SUM
      for (int64_t i = i0; i < i1; i++) {
        const float d = r[i] - m;
        s += d * d;
      }
      acc += s;
    }
  }
  return acc;
}

/* y = (x - m) * k + t over channel c (y may be x), then max(y, 0) when relu. */
static void chan_affine(const float *x, float *y, int64_t N, int64_t C, int64_t L, int64_t c, float m, float k,
                        float t, int relu) {
  for (int64_t n = 0; n < N; n++) {
    const float *r = x + (n * C + c) * L;
    float *o = y + (n * C + c) * L;
    if (relu) {
      CPU_SIMD
      for (int64_t i = 0; i < L; i++) {
        const float v = (r[i] - m) * k + t;
        o[i] = v < 0.0f ? 0.0f : v; /* as relu_forward: NaN passes */
      }
    } else {
      CPU_SIMD
      for (int64_t i = 0; i < L; i++) o[i] = (r[i] - m) * k + t;
    }
  }
}

/* ---- blocked (nChw16c): element (n, c, i) at ((n * CB + c / 16) * L + i) * 16 + c % 16 ---- */

#define BL 16
/* Positions per float partial sum before it goes into the double (as RUN_MAX elements). */
#define BRUN (RUN_MAX / BL)

/* One pass over block cb for the statistics of its 16 channels: with d = x - shift[j], s1[j] = sum d
 * and s2[j] = sum d^2 (float runs into doubles). The shift is a value of the channel, close to its
 * mean next to the spread of the data, so var = (s2 - s1^2 / M) / M loses little to cancellation
 * (the blocked data of one block does not fit the L2 cache, so a second pass would come from memory). */
static void blk_stats(const float *x, int64_t N, int64_t CB, int64_t L, int64_t cb, const float *shift, double *s1,
                      double *s2) {
  for (int j = 0; j < BL; j++) s1[j] = s2[j] = 0.0;
  for (int64_t n = 0; n < N; n++) {
    const float *r = x + (n * CB + cb) * L * BL;
    for (int64_t i0 = 0; i0 < L; i0 += BRUN) {
      const int64_t i1 = i0 + BRUN < L ? i0 + BRUN : L;
      float f1[BL] = {0}, f2[BL] = {0};
      for (int64_t i = i0; i < i1; i++) {
        CPU_SIMD
        for (int j = 0; j < BL; j++) {
          const float d = r[i * BL + j] - shift[j];
          f1[j] += d;
          f2[j] += d * d;
        }
      }
      for (int j = 0; j < BL; j++) {
        s1[j] += f1[j];
        s2[j] += f2[j];
      }
    }
  }
}

/* y = (x - m[j]) * k[j] + t[j] over block cb (y may be x), then max(y, 0) when relu. */
static void blk_affine(const float *x, float *y, int64_t N, int64_t CB, int64_t L, int64_t cb, const float *m,
                       const float *k, const float *t, int relu) {
  const float lo = relu ? 0.0f : -INFINITY;
  for (int64_t n = 0; n < N; n++) {
    const float *r = x + (n * CB + cb) * L * BL;
    float *o = y + (n * CB + cb) * L * BL;
    for (int64_t i = 0; i < L; i++) {
      CPU_SIMD
      for (int j = 0; j < BL; j++) {
        const float v = (r[i * BL + j] - m[j]) * k[j] + t[j];
        o[i * BL + j] = v < lo ? lo : v; /* as relu_forward: NaN passes */
      }
    }
  }
}

static void bn_train_blocked(int nt_, int par_, const float *xd, const float *gd, const float *bd, float *yd,
                             float *rm, float *rv, float *sm, float *si, int64_t N, int64_t C, int64_t L, double mom,
                             double eps, int relu) {
  const int64_t CB = C / BL;
  const double M = (double)(N * L);
  (void)nt_;
  (void)par_;
  CPU_OMP_CHANNELS
  for (int64_t cb = 0; cb < CB; cb++) {
    double s1[BL], s2[BL];
    float m[BL], k[BL], t[BL], shift[BL];
    memcpy(shift, xd + cb * L * BL, sizeof shift); /* sample 0, position 0 */
    blk_stats(xd, N, CB, L, cb, shift, s1, s2);
    for (int j = 0; j < BL; j++) {
      const int64_t c = cb * BL + j;
      const double d = s1[j] / M, var0 = s2[j] / M - d * d, var = var0 > 0 ? var0 : 0.0;
      const double mean = (double)shift[j] + d, invstd = 1.0 / sqrt(var + eps);
      m[j] = (float)mean;
      k[j] = (float)(invstd * (gd ? gd[c] : 1.0));
      t[j] = bd ? bd[c] : 0.0f;
      sm[c] = m[j];
      si[c] = (float)invstd;
      rm[c] = (float)((1.0 - mom) * rm[c] + mom * mean);
      rv[c] = (float)((1.0 - mom) * rv[c] + mom * var * M / (M - 1.0));
    }
    blk_affine(xd, yd, N, CB, L, cb, m, k, t, relu);
  }
}

/* The gradient of a ReLU with output y at dy: dy where y > 0, else 0 (a NaN y gives 0), as relu_backward.
 * dy is an argument, read whatever y is, so that the select vectorises. */
static inline float relu_grad(float y, float dy) { return y > 0.0f ? dy : 0.0f; }

/* yd: a fused ReLU's output (its gradient replaces dy), or NULL. */
static void bn_backward_blocked(int nt_, int par_, const float *xd, const float *yd, const float *dyd,
                                const float *gd, const float *sm, const float *si, float *dxd, float *dg, float *db,
                                int64_t N, int64_t C, int64_t L) {
  const int64_t CB = C / BL;
  const double M = (double)(N * L);
  (void)nt_;
  (void)par_;
  CPU_OMP_CHANNELS
  for (int64_t cb = 0; cb < CB; cb++) {
    const float *mean = sm + cb * BL;
    double sdy[BL] = {0}, sdyd[BL] = {0}; /* sum dy, sum dy (x - mean) */
    for (int64_t n = 0; n < N; n++) {
      const int64_t at = (n * CB + cb) * L * BL;
      const float *xr = xd + at, *gr = dyd + at, *yr = yd ? yd + at : NULL;
      for (int64_t i0 = 0; i0 < L; i0 += BRUN) {
        const int64_t i1 = i0 + BRUN < L ? i0 + BRUN : L;
        float f1[BL] = {0}, f2[BL] = {0};
        if (yr) {
          for (int64_t i = i0; i < i1; i++) {
            CPU_SIMD
            for (int j = 0; j < BL; j++) {
              const float g = relu_grad(yr[i * BL + j], gr[i * BL + j]);
              f1[j] += g;
              f2[j] += g * (xr[i * BL + j] - mean[j]);
            }
          }
        } else {
          for (int64_t i = i0; i < i1; i++) {
            CPU_SIMD
            for (int j = 0; j < BL; j++) {
              f1[j] += gr[i * BL + j];
              f2[j] += gr[i * BL + j] * (xr[i * BL + j] - mean[j]);
            }
          }
        }
        for (int j = 0; j < BL; j++) {
          sdy[j] += f1[j];
          sdyd[j] += f2[j];
        }
      }
    }
    float k1[BL], k2[BL], k3[BL];
    for (int j = 0; j < BL; j++) {
      const int64_t c = cb * BL + j;
      const double invstd = si[c], g = gd ? gd[c] : 1.0, sdyx = sdyd[j] * invstd;
      k1[j] = (float)(g * invstd);
      k2[j] = (float)(-g * invstd * invstd * sdyx / M);
      k3[j] = (float)(-g * invstd * sdy[j] / M);
      if (dg) dg[c] = (float)(dg[c] + sdyx);
      if (db) db[c] = (float)(db[c] + sdy[j]);
    }
    for (int64_t n = 0; n < N; n++) {
      const int64_t at = (n * CB + cb) * L * BL;
      const float *xr = xd + at, *gr = dyd + at, *yr = yd ? yd + at : NULL;
      float *o = dxd + at;
      if (yr) {
        for (int64_t i = 0; i < L; i++) {
          CPU_SIMD
          for (int j = 0; j < BL; j++)
            o[i * BL + j] = k1[j] * relu_grad(yr[i * BL + j], gr[i * BL + j]) +
                            (k2[j] * (xr[i * BL + j] - mean[j]) + k3[j]);
        }
      } else {
        for (int64_t i = 0; i < L; i++) {
          CPU_SIMD
          for (int j = 0; j < BL; j++)
            o[i * BL + j] = k1[j] * gr[i * BL + j] + (k2[j] * (xr[i * BL + j] - mean[j]) + k3[j]);
        }
      }
    }
  }
}

/* ---- the members ---- */

/* x is (N, C, ...), gamma and beta (C) or NULL; running_mean and running_var (C) are updated;
 * y is like x, save_mean and save_invstd are (C); all assigned.
 * Per channel, two passes for the statistics (mean, then the mean squared deviation: the
 * biased variance, as the reference) and one for y = (x - mean) invstd gamma + beta;
 * running = (1-m) running + m stat, with var * n/(n-1) for running_var. */
static im_status_t bn_forward_train(im_backend_t *b, const im_batchnorm_params_t *p, im__ct *x, im__ct *gamma,
                                    im__ct *beta, im__t *running_mean, im__t *running_var, int relu, im__t *y,
                                    im__t *save_mean, im__t *save_invstd) {
  int64_t N, C, L;
  ncl(x, &N, &C, &L);
  const double M = (double)(N * L), mom = p->momentum, eps = p->eps;
  const float *xd = x->data, *gd = gamma ? gamma->data : NULL, *bd = beta ? beta->data : NULL;
  float *yd = y->data, *rm = running_mean->data, *rv = running_var->data, *sm = save_mean->data,
        *si = save_invstd->data;
  const int nt_ = im__cpu_ctx(b)->nthreads, par_ = N * C * L > CPU_PAR_MIN && C > 1;
  if (x->layout == IM_LAYOUT_NCHW16C) {
    bn_train_blocked(nt_, par_ && C > BL, xd, gd, bd, yd, rm, rv, sm, si, N, C, L, mom, eps, relu);
    return IM_OK;
  }
  (void)nt_;
  (void)par_;
  CPU_OMP_CHANNELS
  for (int64_t c = 0; c < C; c++) {
    const double mean = chan_sum(xd, N, C, L, c) / M;
    const double var = chan_sqdev(xd, N, C, L, c, (float)mean) / M;
    const double invstd = 1.0 / sqrt(var + eps);
    const double g = gd ? gd[c] : 1.0;
    chan_affine(xd, yd, N, C, L, c, (float)mean, (float)(invstd * g), bd ? bd[c] : 0.0f, relu);
    sm[c] = (float)mean;
    si[c] = (float)invstd;
    rm[c] = (float)((1.0 - mom) * rm[c] + mom * mean);
    rv[c] = (float)((1.0 - mom) * rv[c] + mom * var * M / (M - 1.0));
  }
  return IM_OK;
}

im_status_t im__cpu_batchnorm_forward_train(im_backend_t *b, const im_batchnorm_params_t *p, im__ct *x, im__ct *gamma,
                                            im__ct *beta, im__t *running_mean, im__t *running_var, im__t *y,
                                            im__t *save_mean, im__t *save_invstd) {
  return bn_forward_train(b, p, x, gamma, beta, running_mean, running_var, 0, y, save_mean, save_invstd);
}

/* The same with the ReLU applied as y is written (act is IM_ACT_NONE or IM_ACT_RELU). */
im_status_t im__cpu_batchnorm_forward_train_fused(im_backend_t *b, const im_batchnorm_params_t *p, im__ct *x,
                                                  im__ct *gamma, im__ct *beta, im__t *running_mean,
                                                  im__t *running_var, im_act_t act, im__t *y, im__t *save_mean,
                                                  im__t *save_invstd) {
  return bn_forward_train(b, p, x, gamma, beta, running_mean, running_var, act == IM_ACT_RELU, y, save_mean,
                          save_invstd);
}

/* x is (N, C, ...), gamma, beta (C) or NULL, running_mean, running_var (C); y is like x, assigned
 * (y == x allowed). y = (x - running_mean) / sqrt(running_var + eps) gamma + beta. */
im_status_t im__cpu_batchnorm_forward_eval(im_backend_t *b, const im_batchnorm_params_t *p, im__ct *x, im__ct *gamma,
                                           im__ct *beta, im__ct *running_mean, im__ct *running_var, im__t *y) {
  int64_t N, C, L;
  ncl(x, &N, &C, &L);
  const float *xd = x->data, *gd = gamma ? gamma->data : NULL, *bd = beta ? beta->data : NULL;
  const float *rm = running_mean->data, *rv = running_var->data;
  float *yd = y->data;
  const int nt_ = im__cpu_ctx(b)->nthreads, par_ = N * C * L > CPU_PAR_MIN && C > 1;
  if (x->layout == IM_LAYOUT_NCHW16C) {
    const int64_t CB = C / BL;
    (void)nt_;
    CPU_OMP_CHANNELS
    for (int64_t cb = 0; cb < CB; cb++) {
      float m[BL], k[BL], t[BL];
      for (int j = 0; j < BL; j++) {
        const int64_t c = cb * BL + j;
        m[j] = rm[c];
        k[j] = (float)(1.0 / sqrt((double)rv[c] + (double)p->eps) * (gd ? gd[c] : 1.0));
        t[j] = bd ? bd[c] : 0.0f;
      }
      blk_affine(xd, yd, N, CB, L, cb, m, k, t, 0);
    }
    return IM_OK;
  }
  (void)nt_;
  (void)par_;
  CPU_OMP_CHANNELS
  for (int64_t c = 0; c < C; c++) {
    const double invstd = 1.0 / sqrt((double)rv[c] + (double)p->eps);
    chan_affine(xd, yd, N, C, L, c, rm[c], (float)(invstd * (gd ? gd[c] : 1.0)), bd ? bd[c] : 0.0f, 0);
  }
  return IM_OK;
}

/* x, dy are (N, C, ...), gamma (C) or NULL, save_mean, save_invstd (C) from forward_train;
 * dx like x, assigned; dgamma, dbeta (C) or NULL, accumulated (+=).
 * Per channel, with xhat = (x - mean) invstd and M = N*L: one pass for sum dy and sum dy (x - mean),
 * one for dx = gamma invstd (dy - sum(dy)/M - xhat sum(dy xhat)/M);
 * dgamma += sum dy xhat, dbeta += sum dy.
 * With y (a fused ReLU's output, like x), both passes take the ReLU's gradient in place of dy. */
static im_status_t bn_backward(im_backend_t *b, im__ct *x, im__ct *y, im__ct *dy, im__ct *gamma, im__ct *save_mean,
                               im__ct *save_invstd, im__t *dx, im__t *dgamma, im__t *dbeta) {
  int64_t N, C, L;
  ncl(x, &N, &C, &L);
  const double M = (double)(N * L);
  const float *xd = x->data, *yd = y ? y->data : NULL, *dyd = dy->data, *gd = gamma ? gamma->data : NULL,
              *sm = save_mean->data, *si = save_invstd->data;
  float *dxd = dx->data, *dg = dgamma ? dgamma->data : NULL, *db = dbeta ? dbeta->data : NULL;
  const int nt_ = im__cpu_ctx(b)->nthreads, par_ = N * C * L > CPU_PAR_MIN && C > 1;
  if (x->layout == IM_LAYOUT_NCHW16C) {
    bn_backward_blocked(nt_, par_ && C > BL, xd, yd, dyd, gd, sm, si, dxd, dg, db, N, C, L);
    return IM_OK;
  }
  (void)nt_;
  (void)par_;
  CPU_OMP_CHANNELS
  for (int64_t c = 0; c < C; c++) {
    const float mean = sm[c];
    const double invstd = si[c], g = gd ? gd[c] : 1.0;
    double sdy = 0.0, sdyd = 0.0; /* sum dy, sum dy (x - mean) */
    for (int64_t n = 0; n < N; n++) {
      const int64_t at = (n * C + c) * L;
      const float *xr = xd + at, *gr = dyd + at, *yr = yd ? yd + at : NULL;
      for (int64_t i0 = 0; i0 < L; i0 += RUN_MAX) {
        const int64_t i1 = i0 + RUN_MAX < L ? i0 + RUN_MAX : L;
        float s1 = 0.0f, s2 = 0.0f;
        if (yr) {
          CPU_SIMD_SUM2
          for (int64_t i = i0; i < i1; i++) {
            const float gi = relu_grad(yr[i], gr[i]);
            s1 += gi;
            s2 += gi * (xr[i] - mean);
          }
        } else {
          CPU_SIMD_SUM2
          for (int64_t i = i0; i < i1; i++) {
            s1 += gr[i];
            s2 += gr[i] * (xr[i] - mean);
          }
        }
        sdy += s1;
        sdyd += s2;
      }
    }
    const double sdyx = sdyd * invstd; /* sum dy xhat */
    /* dx = k1 dy + k2 (x - mean) + k3 */
    const float k1 = (float)(g * invstd), k2 = (float)(-g * invstd * invstd * sdyx / M),
                k3 = (float)(-g * invstd * sdy / M);
    for (int64_t n = 0; n < N; n++) {
      const int64_t at = (n * C + c) * L;
      const float *xr = xd + at, *gr = dyd + at, *yr = yd ? yd + at : NULL;
      float *o = dxd + at;
      if (yr) {
        CPU_SIMD
        for (int64_t i = 0; i < L; i++) o[i] = k1 * relu_grad(yr[i], gr[i]) + (k2 * (xr[i] - mean) + k3);
      } else {
        CPU_SIMD
        for (int64_t i = 0; i < L; i++) o[i] = k1 * gr[i] + (k2 * (xr[i] - mean) + k3);
      }
    }
    if (dg) dg[c] = (float)(dg[c] + sdyx);
    if (db) db[c] = (float)(db[c] + sdy);
  }
  return IM_OK;
}

im_status_t im__cpu_batchnorm_backward(im_backend_t *b, im__ct *x, im__ct *dy, im__ct *gamma, im__ct *save_mean,
                                       im__ct *save_invstd, im__t *dx, im__t *dgamma, im__t *dbeta) {
  return bn_backward(b, x, NULL, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
}

/* The same with the ReLU's backward (from its output y) folded in when act is IM_ACT_RELU. */
im_status_t im__cpu_batchnorm_backward_fused(im_backend_t *b, im__ct *x, im__ct *y, im_act_t act, im__ct *dy,
                                             im__ct *gamma, im__ct *save_mean, im__ct *save_invstd, im__t *dx,
                                             im__t *dgamma, im__t *dbeta) {
  return bn_backward(b, x, act == IM_ACT_RELU ? y : NULL, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
}
