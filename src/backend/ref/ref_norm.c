/* Reference normalization kernels: batch norm over NCHW (statistics per
 * channel over N and the spatial dims) and layer norm over the last dimension
 * (channels-last rows). Two-pass statistics in double. */
#include <math.h>

#include "backend/ref/ref.h"

/* x viewed as (N, C, L): L is the product of the dims after C (1 for [N,C]). */
static void ncl(im__ct *x, int64_t *N, int64_t *C, int64_t *L) {
  *N = x->shape[0];
  *C = x->shape[1];
  *L = 1;
  for (int i = 2; i < x->ndim; i++) *L *= x->shape[i];
}

/* x is (N, C, ...), gamma and beta (C) or NULL; running_mean and running_var (C) are updated;
 * y is like x, save_mean and save_invstd are (C); all assigned.
 * mean and var are the batch's (biased var); invstd = 1/sqrt(var + eps);
 * y = (x - mean) invstd gamma + beta; running = (1-m) running + m stat, with var * n/(n-1) for running_var. */
im_status_t im__ref_batchnorm_forward_train(im_backend_t *b, const im_batchnorm_params_t *p, im__ct *x, im__ct *gamma,
                                            im__ct *beta, im__t *running_mean, im__t *running_var, im__t *y,
                                            im__t *save_mean, im__t *save_invstd) {
  int64_t N, C, L;
  ncl(x, &N, &C, &L);
  const double M = (double)(N * L), m = p->momentum;
  const float *xd = x->data, *gd = gamma ? gamma->data : NULL, *bd = beta ? beta->data : NULL;
  float *yd = y->data, *rm = running_mean->data, *rv = running_var->data, *sm = save_mean->data,
        *si = save_invstd->data;
  for (int64_t c = 0; c < C; c++) {
    double sum = 0.0, sq = 0.0;
    for (int64_t n = 0; n < N; n++)
      for (int64_t l = 0; l < L; l++) sum += xd[(n * C + c) * L + l];
    const double mean = sum / M;
    for (int64_t n = 0; n < N; n++)
      for (int64_t l = 0; l < L; l++) {
        const double d = xd[(n * C + c) * L + l] - mean;
        sq += d * d;
      }
    const double var = sq / M, invstd = 1.0 / sqrt(var + (double)p->eps);
    const double g = gd ? gd[c] : 1.0, bt = bd ? bd[c] : 0.0;
    for (int64_t n = 0; n < N; n++)
      for (int64_t l = 0; l < L; l++) {
        const int64_t i = (n * C + c) * L + l;
        yd[i] = (float)((xd[i] - mean) * invstd * g + bt);
      }
    sm[c] = (float)mean;
    si[c] = (float)invstd;
    rm[c] = (float)((1.0 - m) * rm[c] + m * mean);
    rv[c] = (float)((1.0 - m) * rv[c] + m * var * M / (M - 1.0));
  }
  return IM_OK;
}

/* x is (N, C, ...), gamma, beta (C) or NULL, running_mean, running_var (C); y is like x, assigned.
 * y = (x - running_mean) / sqrt(running_var + eps) gamma + beta. */
im_status_t im__ref_batchnorm_forward_eval(im_backend_t *b, const im_batchnorm_params_t *p, im__ct *x, im__ct *gamma,
                                           im__ct *beta, im__ct *running_mean, im__ct *running_var, im__t *y) {
  int64_t N, C, L;
  ncl(x, &N, &C, &L);
  const float *xd = x->data, *gd = gamma ? gamma->data : NULL, *bd = beta ? beta->data : NULL;
  const float *rm = running_mean->data, *rv = running_var->data;
  float *yd = y->data;
  for (int64_t c = 0; c < C; c++) {
    const double invstd = 1.0 / sqrt((double)rv[c] + (double)p->eps);
    const double g = gd ? gd[c] : 1.0, bt = bd ? bd[c] : 0.0;
    for (int64_t n = 0; n < N; n++)
      for (int64_t l = 0; l < L; l++) {
        const int64_t i = (n * C + c) * L + l;
        yd[i] = (float)((xd[i] - (double)rm[c]) * invstd * g + bt);
      }
  }
  return IM_OK;
}

/* x, dy are (N, C, ...), gamma (C) or NULL, save_mean, save_invstd (C) from forward_train;
 * dx like x, assigned; dgamma, dbeta (C) or NULL, accumulated (+=).
 * With xhat = (x - mean) invstd and M = N*L: dbeta += sum dy, dgamma += sum dy xhat,
 * dx = gamma invstd (dy - sum(dy)/M - xhat sum(dy xhat)/M).
 * With y (a ReLU's output, like x) each dy is relu_backward's, y > 0 ? dy : 0, instead. */
static void bn_backward(im__ct *x, im__ct *y, im__ct *dy, im__ct *gamma, im__ct *save_mean, im__ct *save_invstd,
                        im__t *dx, im__t *dgamma, im__t *dbeta) {
  int64_t N, C, L;
  ncl(x, &N, &C, &L);
  const double M = (double)(N * L);
  const float *xd = x->data, *yd = y ? y->data : NULL, *dyd = dy->data, *gd = gamma ? gamma->data : NULL,
              *sm = save_mean->data, *si = save_invstd->data;
  float *dxd = dx->data, *dg = dgamma ? dgamma->data : NULL, *db = dbeta ? dbeta->data : NULL;
#define DY(i) (yd && !(yd[i] > 0.0f) ? 0.0f : dyd[i])
  for (int64_t c = 0; c < C; c++) {
    const double mean = sm[c], invstd = si[c], g = gd ? gd[c] : 1.0;
    double sdy = 0.0, sdyx = 0.0;
    for (int64_t n = 0; n < N; n++)
      for (int64_t l = 0; l < L; l++) {
        const int64_t i = (n * C + c) * L + l;
        sdy += DY(i);
        sdyx += DY(i) * ((xd[i] - mean) * invstd);
      }
    for (int64_t n = 0; n < N; n++)
      for (int64_t l = 0; l < L; l++) {
        const int64_t i = (n * C + c) * L + l;
        const double xhat = (xd[i] - mean) * invstd;
        dxd[i] = (float)(g * invstd * (DY(i) - sdy / M - xhat * sdyx / M));
      }
    if (dg) dg[c] = (float)(dg[c] + sdyx);
    if (db) db[c] = (float)(db[c] + sdy);
  }
#undef DY
}

im_status_t im__ref_batchnorm_backward(im_backend_t *b, im__ct *x, im__ct *dy, im__ct *gamma, im__ct *save_mean,
                                       im__ct *save_invstd, im__t *dx, im__t *dgamma, im__t *dbeta) {
  bn_backward(x, NULL, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
  return IM_OK;
}

/* x is (..., C): M rows of C; gamma, beta (C) or NULL; y like x, save_mean, save_invstd (M), all assigned.
 * Per row: mean, biased var, invstd = 1/sqrt(var + eps), y = (x - mean) invstd gamma + beta. */
im_status_t im__ref_layernorm_forward(im_backend_t *b, const im_layernorm_params_t *p, im__ct *x, im__ct *gamma,
                                      im__ct *beta, im__t *y, im__t *save_mean, im__t *save_invstd) {
  const int64_t C = x->shape[x->ndim - 1], M = im_tensor_numel(x) / C;
  const float *xd = x->data, *gd = gamma ? gamma->data : NULL, *bd = beta ? beta->data : NULL;
  float *yd = y->data, *sm = save_mean->data, *si = save_invstd->data;
  for (int64_t m = 0; m < M; m++) {
    const float *xr = xd + m * C;
    double sum = 0.0, sq = 0.0;
    for (int64_t c = 0; c < C; c++) sum += xr[c];
    const double mean = sum / (double)C;
    for (int64_t c = 0; c < C; c++) sq += (xr[c] - mean) * (xr[c] - mean);
    const double invstd = 1.0 / sqrt(sq / (double)C + (double)p->eps);
    for (int64_t c = 0; c < C; c++)
      yd[m * C + c] = (float)((xr[c] - mean) * invstd * (gd ? gd[c] : 1.0) + (bd ? bd[c] : 0.0));
    sm[m] = (float)mean;
    si[m] = (float)invstd;
  }
  return IM_OK;
}

/* x, dy are (..., C): M rows; gamma (C) or NULL; save_mean, save_invstd (M) from forward;
 * dx like x, assigned; dgamma, dbeta (C) or NULL, accumulated (+=).
 * Per row with g = dy gamma: dx = invstd (g - mean(g) - xhat mean(g xhat));
 * dgamma += sum over rows of dy xhat, dbeta += sum over rows of dy. */
im_status_t im__ref_layernorm_backward(im_backend_t *b, im__ct *x, im__ct *dy, im__ct *gamma, im__ct *save_mean,
                                       im__ct *save_invstd, im__t *dx, im__t *dgamma, im__t *dbeta) {
  const int64_t C = x->shape[x->ndim - 1], M = im_tensor_numel(x) / C;
  const float *xd = x->data, *dyd = dy->data, *gd = gamma ? gamma->data : NULL, *sm = save_mean->data,
              *si = save_invstd->data;
  float *dxd = dx->data, *dg = dgamma ? dgamma->data : NULL, *db = dbeta ? dbeta->data : NULL;
  for (int64_t m = 0; m < M; m++) {
    const double mean = sm[m], invstd = si[m];
    double sg = 0.0, sgx = 0.0;
    for (int64_t c = 0; c < C; c++) {
      const double g = dyd[m * C + c] * (gd ? gd[c] : 1.0), xhat = (xd[m * C + c] - mean) * invstd;
      sg += g;
      sgx += g * xhat;
    }
    for (int64_t c = 0; c < C; c++) {
      const double g = dyd[m * C + c] * (gd ? gd[c] : 1.0), xhat = (xd[m * C + c] - mean) * invstd;
      dxd[m * C + c] = (float)(invstd * (g - sg / (double)C - xhat * sgx / (double)C));
    }
  }
  /* Parameter gradients column by column, so that each is one double sum. */
  for (int64_t c = 0; c < C && (dg || db); c++) {
    double sdy = 0.0, sdyx = 0.0;
    for (int64_t m = 0; m < M; m++) {
      sdy += dyd[m * C + c];
      sdyx += dyd[m * C + c] * ((xd[m * C + c] - (double)sm[m]) * (double)si[m]);
    }
    if (dg) dg[c] = (float)(dg[c] + sdyx);
    if (db) db[c] = (float)(db[c] + sdy);
  }
  return IM_OK;
}

/* The fused training forward, by definition: batch norm, then the activation in place. */
im_status_t im__ref_batchnorm_forward_train_fused(im_backend_t *b, const im_batchnorm_params_t *p, im__ct *x,
                                                  im__ct *gamma, im__ct *beta, im__t *running_mean,
                                                  im__t *running_var, im_act_t act, im__t *y, im__t *save_mean,
                                                  im__t *save_invstd) {
  im_status_t st =
      im__ref_batchnorm_forward_train(b, p, x, gamma, beta, running_mean, running_var, y, save_mean, save_invstd);
  if (st == IM_OK && act == IM_ACT_RELU) st = im__ref_relu_forward(b, y, y);
  return st;
}

/* The fused backward: batch norm's, from dy masked by relu's output y when act is IM_ACT_RELU. */
im_status_t im__ref_batchnorm_backward_fused(im_backend_t *b, im__ct *x, im__ct *y, im_act_t act, im__ct *dy,
                                             im__ct *gamma, im__ct *save_mean, im__ct *save_invstd, im__t *dx,
                                             im__t *dgamma, im__t *dbeta) {
  bn_backward(x, act == IM_ACT_RELU ? y : NULL, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta);
  return IM_OK;
}
