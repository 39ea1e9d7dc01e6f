/* Layer norm on oneDNN's layer normalization primitive, over rows [M,C] of
 * the public layout directly (memory-bound: a reorder would cost as much as
 * the op). Batch norm is in cpu_bnorm.c.
 *
 * Our ops save 1/sqrt(var + eps) for backward and take no eps there, while
 * oneDNN's backward wants the variance and eps; the backward plan therefore
 * runs with eps = 0 and the variance rebuilt as 1/invstd^2 (computed in double,
 * so oneDNN's 1/sqrt(var) gives back invstd to float rounding). oneDNN writes
 * the gamma/beta gradients; they are added to ours (+=) from the workspace. */
#include <math.h>
#include <string.h>

#include "backend/cpu/cpu.h"

/* The caller's pointer slots of the layer-norm plans. */
enum { LN_X, LN_Y, LN_MEAN, LN_VAR, LN_GAMMA, LN_BETA, LN_DY, LN_DX };

static uint32_t fbits(float f) {
  uint32_t u;
  memcpy(&u, &f, sizeof u);
  return u;
}

/* Fills var[i] = 1/invstd[i]^2 (double arithmetic) for the backward plan. */
static void var_from_invstd(const float *invstd, float *var, int64_t n, int nt) {
  const int nt_ = nt, par_ = n > CPU_PAR_MIN;
  (void)nt_;
  (void)par_;
  CPU_OMP_FOR
  for (int64_t i = 0; i < n; i++) {
    const double s = invstd[i];
    var[i] = (float)(1.0 / (s * s));
  }
}

static void add_into(float *dst, const float *src, int64_t n) {
  for (int64_t i = 0; i < n; i++) dst[i] += src[i];
}

static void fill_ones(float *p, int64_t n) {
  for (int64_t i = 0; i < n; i++) p[i] = 1.0f;
}

/* The backward plan: memories in this order, so that the run can find the
 * workspace ones by index (the step's scratchpad, if any, comes after them). */
enum { BWD_VAR = 3, BWD_SCALE = 4, BWD_DSCALE = 6, BWD_DSHIFT = 7, BWD_SHIFT = 8 };

/* Adds the backward step (pd consumed). data and stat are the public descriptors of x and of
 * the statistics, chan that of gamma. Scale is always used (gamma, or ones in the workspace
 * when gamma is NULL) so that dgamma can be produced either way. */
static void norm_bwd_step(cpu_build_t *bld, dnnl_primitive_desc_t pd, const dnnl_memory_desc_t *data,
                          const dnnl_memory_desc_t *stat, const dnnl_memory_desc_t *chan, int has_gamma) {
  const int args[9] = {DNNL_ARG_SRC,      DNNL_ARG_DIFF_DST,   DNNL_ARG_MEAN,       DNNL_ARG_VARIANCE, DNNL_ARG_SCALE,
                       DNNL_ARG_DIFF_SRC, DNNL_ARG_DIFF_SCALE, DNNL_ARG_DIFF_SHIFT, DNNL_ARG_SHIFT};
  int mems[9];
  mems[0] = im__cpu_mem_user(bld, data, LN_X);
  mems[1] = im__cpu_mem_user(bld, data, LN_DY);
  mems[2] = im__cpu_mem_user(bld, stat, LN_MEAN);
  mems[BWD_VAR] = im__cpu_mem_ws(bld, stat);
  mems[BWD_SCALE] = has_gamma ? im__cpu_mem_user(bld, chan, LN_GAMMA) : im__cpu_mem_ws(bld, chan);
  mems[5] = im__cpu_mem_user(bld, data, LN_DX);
  mems[BWD_DSCALE] = im__cpu_mem_ws(bld, chan);
  mems[BWD_DSHIFT] = im__cpu_mem_ws(bld, chan);
  mems[BWD_SHIFT] = im__cpu_mem_ws(bld, chan); /* oneDNN requires the shift with use_shift; unused */
  im__cpu_step(bld, pd, 9, args, mems, 1);
}

/* Runs the backward plan: nstat statistics (one per row), C channels. */
static im_status_t norm_bwd_run(cpu_ctx_t *c, cpu_plan_t *pl, im__ct *x, im__ct *dy, im__ct *gamma, im__ct *save_mean,
                                im__ct *save_invstd, im__t *dx, im__t *dgamma, im__t *dbeta, int64_t nstat,
                                int64_t C) {
  void *const user[8] = {x->data, NULL, save_mean->data, NULL, gamma ? gamma->data : NULL, NULL, dy->data,
                         dx->data};
  im_status_t st = im__cpu_plan_bind(c, pl, user);
  if (st != IM_OK) return st;
  var_from_invstd(save_invstd->data, im__cpu_ws_ptr(c, pl, BWD_VAR), nstat, c->nthreads);
  if (!gamma) fill_ones(im__cpu_ws_ptr(c, pl, BWD_SCALE), C);
  memset(im__cpu_ws_ptr(c, pl, BWD_SHIFT), 0, (size_t)C * sizeof(float));
  st = im__cpu_plan_exec(c, pl);
  if (st != IM_OK) return st;
  if (dgamma) add_into(dgamma->data, im__cpu_ws_ptr(c, pl, BWD_DSCALE), C);
  if (dbeta) add_into(dbeta->data, im__cpu_ws_ptr(c, pl, BWD_DSHIFT), C);
  return IM_OK;
}

/* ---- layer norm ------------------------------------------------------------------------------------- */

/* x is (..., C): M rows of C; gamma, beta (C) or NULL; y like x, save_mean, save_invstd (M), all assigned.
 * oneDNN writes the row means into save_mean and the biased variances into save_invstd, which
 * this file then turns into 1/sqrt(var + eps). */
im_status_t im__cpu_layernorm_forward(im_backend_t *b, const im_layernorm_params_t *p, im__ct *x, im__ct *gamma,
                                      im__ct *beta, im__t *y, im__t *save_mean, im__t *save_invstd) {
  const im_tensor_t *all[] = {x, y};
  if (im__cpu_any_empty(2, all)) return IM_ERR_UNSUPPORTED;
  cpu_ctx_t *c = im__cpu_ctx(b);
  const int64_t C = x->shape[x->ndim - 1], M = im_tensor_numel(x) / C;
  cpu_key_t k;
  memset(&k, 0, sizeof k);
  k.op = IM_OP_LAYERNORM_FORWARD;
  const int64_t v[] = {M, C, gamma != NULL, beta != NULL, fbits(p->eps)};
  memcpy(k.v, v, sizeof v);
  cpu_build_t bld;
  cpu_plan_t *pl;
  im_status_t st = im__cpu_plan_get(c, &k, &bld, &pl);
  if (st != IM_OK) return st;
  if (!pl) {
    dnnl_memory_desc_t data, stat, chan;
    const int64_t d2[2] = {M, C};
    im__cpu_md(&data, 2, d2, dnnl_ab);
    im__cpu_md(&stat, 1, &M, dnnl_x);
    im__cpu_md(&chan, 1, &C, dnnl_x);
    const unsigned flags = (gamma ? dnnl_use_scale : 0u) | (beta ? dnnl_use_shift : 0u);
    dnnl_layer_normalization_desc_t d;
    dnnl_status_t s =
        dnnl_layer_normalization_forward_desc_init(&d, dnnl_forward_training, &data, &stat, p->eps, flags);
    if (s != dnnl_success) bld.st = im__cpu_dnnl_error(s, "layer norm descriptor");
    dnnl_primitive_desc_t pd = im__cpu_pd(&bld, &d, NULL, 0);
    int args[6] = {DNNL_ARG_SRC, DNNL_ARG_DST, DNNL_ARG_MEAN, DNNL_ARG_VARIANCE}, mems[6], n = 4;
    mems[0] = im__cpu_mem_user(&bld, &data, LN_X);
    mems[1] = im__cpu_mem_user(&bld, &data, LN_Y);
    mems[2] = im__cpu_mem_user(&bld, &stat, LN_MEAN);
    mems[3] = im__cpu_mem_user(&bld, &stat, LN_VAR);
    if (gamma) args[n] = DNNL_ARG_SCALE, mems[n++] = im__cpu_mem_user(&bld, &chan, LN_GAMMA);
    if (beta) args[n] = DNNL_ARG_SHIFT, mems[n++] = im__cpu_mem_user(&bld, &chan, LN_BETA);
    im__cpu_step(&bld, pd, n, args, mems, 1);
    st = im__cpu_plan_finish(&bld, &pl);
    if (st != IM_OK) return st;
  }
  if (pl->unsupported) return IM_ERR_UNSUPPORTED;
  void *const user[6] = {x->data, y->data, save_mean->data, save_invstd->data, gamma ? gamma->data : NULL,
                         beta ? beta->data : NULL};
  st = im__cpu_plan_run(c, pl, user);
  if (st != IM_OK) return st;
  float *si = save_invstd->data;
  const double eps = p->eps;
  const int nt_ = c->nthreads, par_ = M > CPU_PAR_MIN;
  (void)nt_;
  (void)par_;
  CPU_OMP_FOR
  for (int64_t i = 0; i < M; i++) si[i] = (float)(1.0 / sqrt((double)si[i] + eps));
  return IM_OK;
}

/* x, dy are (..., C): M rows; gamma (C) or NULL; save_mean, save_invstd (M) from forward;
 * dx like x, assigned; dgamma, dbeta (C) or NULL, accumulated (+=).
 * Per row with g = dy gamma: dx = invstd (g - mean(g) - xhat mean(g xhat)). */
im_status_t im__cpu_layernorm_backward(im_backend_t *b, im__ct *x, im__ct *dy, im__ct *gamma, im__ct *save_mean,
                                       im__ct *save_invstd, im__t *dx, im__t *dgamma, im__t *dbeta) {
  const im_tensor_t *all[] = {x, dx};
  if (im__cpu_any_empty(2, all)) return IM_ERR_UNSUPPORTED;
  cpu_ctx_t *c = im__cpu_ctx(b);
  const int64_t C = x->shape[x->ndim - 1], M = im_tensor_numel(x) / C;
  cpu_key_t k;
  memset(&k, 0, sizeof k);
  k.op = IM_OP_LAYERNORM_BACKWARD;
  const int64_t v[] = {M, C, gamma != NULL};
  memcpy(k.v, v, sizeof v);
  cpu_build_t bld;
  cpu_plan_t *pl;
  im_status_t st = im__cpu_plan_get(c, &k, &bld, &pl);
  if (st != IM_OK) return st;
  if (!pl) {
    dnnl_memory_desc_t data, stat, chan;
    const int64_t d2[2] = {M, C};
    im__cpu_md(&data, 2, d2, dnnl_ab);
    im__cpu_md(&stat, 1, &M, dnnl_x);
    im__cpu_md(&chan, 1, &C, dnnl_x);
    const unsigned flags = dnnl_use_scale | dnnl_use_shift;
    dnnl_layer_normalization_desc_t fd, d;
    dnnl_status_t s =
        dnnl_layer_normalization_forward_desc_init(&fd, dnnl_forward_training, &data, &stat, 0.0f, flags);
    if (s == dnnl_success)
      s = dnnl_layer_normalization_backward_desc_init(&d, dnnl_backward, &data, &data, &stat, 0.0f, flags);
    if (s != dnnl_success) bld.st = im__cpu_dnnl_error(s, "layer norm backward descriptor");
    dnnl_primitive_desc_t hint = im__cpu_pd(&bld, &fd, NULL, 0);
    dnnl_primitive_desc_t pd = im__cpu_pd(&bld, &d, hint, 0);
    if (hint) dnnl_primitive_desc_destroy(hint);
    /* The scale and its gradient are per channel ([C]); the statistics per row ([M]). */
    norm_bwd_step(&bld, pd, &data, &stat, &chan, gamma != NULL);
    st = im__cpu_plan_finish(&bld, &pl);
    if (st != IM_OK) return st;
  }
  if (pl->unsupported) return IM_ERR_UNSUPPORTED;
  return norm_bwd_run(c, pl, x, dy, gamma, save_mean, save_invstd, dx, dgamma, dbeta, M, C);
}
