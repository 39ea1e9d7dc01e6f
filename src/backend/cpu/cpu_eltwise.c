/* Element-wise ops for the cpu backend: exact GELU forward and backward on
 * oneDNN's eltwise primitive (vectorised, with a polynomial erf far cheaper
 * than libm's), layout permutes on oneDNN reorders, and ReLU, dropout, add
 * and fill as OpenMP loops. Any shape; in place where
 * backend.h allows it (oneDNN eltwise accepts dst == src). */
#include <string.h>

#include "backend/cpu/cpu.h"

/* A private plan number (beyond im_op_t): the layout permutes, keyed by direction and dtype. */
enum { PLAN_PERMUTE = IM_OP_COUNT_ + 1 };

/* An eltwise plan over n elements viewed as a 1-d tensor. fwd: src (slot 0) -> dst (slot 1).
 * bwd: src (slot 0), diff_dst (slot 1) -> diff_src (slot 2). */
static im_status_t eltwise(im_backend_t *b, im_op_t op, dnnl_alg_kind_t alg, int backward, int64_t n,
                           void *const *user) {
  cpu_ctx_t *c = im__cpu_ctx(b);
  cpu_key_t k;
  memset(&k, 0, sizeof k);
  k.op = (int32_t)op;
  k.v[0] = n;
  cpu_build_t bld;
  cpu_plan_t *pl;
  im_status_t st = im__cpu_plan_get(c, &k, &bld, &pl);
  if (st != IM_OK) return st;
  if (!pl) {
    dnnl_memory_desc_t md;
    im__cpu_md(&md, 1, &n, dnnl_x);
    dnnl_eltwise_desc_t fd, bd;
    dnnl_status_t s = dnnl_eltwise_forward_desc_init(&fd, dnnl_forward_training, alg, &md, 0.0f, 0.0f);
    if (s == dnnl_success && backward) s = dnnl_eltwise_backward_desc_init(&bd, alg, &md, &md, 0.0f, 0.0f);
    if (s != dnnl_success) bld.st = im__cpu_dnnl_error(s, "eltwise descriptor");
    dnnl_primitive_desc_t pd = im__cpu_pd(&bld, &fd, NULL, 0);
    if (backward) {
      dnnl_primitive_desc_t hint = pd;
      pd = im__cpu_pd(&bld, &bd, hint, 0);
      if (hint) dnnl_primitive_desc_destroy(hint);
      const int args[3] = {DNNL_ARG_SRC, DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_SRC};
      const int mems[3] = {im__cpu_mem_user(&bld, &md, 0), im__cpu_mem_user(&bld, &md, 1),
                           im__cpu_mem_user(&bld, &md, 2)};
      im__cpu_step(&bld, pd, 3, args, mems, 1);
    } else {
      const int args[2] = {DNNL_ARG_SRC, DNNL_ARG_DST};
      const int mems[2] = {im__cpu_mem_user(&bld, &md, 0), im__cpu_mem_user(&bld, &md, 1)};
      im__cpu_step(&bld, pd, 2, args, mems, 1);
    }
    st = im__cpu_plan_finish(&bld, &pl);
    if (st != IM_OK) return st;
  }
  if (pl->unsupported) return IM_ERR_UNSUPPORTED;
  return im__cpu_plan_run(c, pl, user);
}

/* x, y have the same shape; y = max(x, 0), assigned (y == x allowed); NaN stays NaN, as torch
 * (oneDNN's relu turns NaN into 0, hence a loop of our own; it is memory-bound either way). */
im_status_t im__cpu_relu_forward(im_backend_t *b, im__ct *x, im__t *y) {
  const int64_t n = im_tensor_numel(x);
  const float *xd = x->data;
  float *yd = y->data;
  const int nt_ = im__cpu_ctx(b)->nthreads, par_ = n > CPU_PAR_MIN;
  (void)nt_;
  (void)par_;
  CPU_OMP_FOR
  for (int64_t i = 0; i < n; i++) yd[i] = xd[i] < 0.0f ? 0.0f : xd[i];
  return IM_OK;
}

/* y (relu's output), dy, dx have the same shape; dx = y > 0 ? dy : 0, assigned (dx == dy allowed). */
im_status_t im__cpu_relu_backward(im_backend_t *b, im__ct *y, im__ct *dy, im__t *dx) {
  const int64_t n = im_tensor_numel(y);
  const float *yd = y->data, *dyd = dy->data;
  float *dxd = dx->data;
  const int nt_ = im__cpu_ctx(b)->nthreads, par_ = n > CPU_PAR_MIN;
  (void)nt_;
  (void)par_;
  CPU_OMP_FOR
  for (int64_t i = 0; i < n; i++) {
    const float g = dyd[i]; /* loaded unconditionally, so the select vectorises */
    dxd[i] = yd[i] > 0.0f ? g : 0.0f;
  }
  return IM_OK;
}

/* x, y have the same shape; y = x Phi(x) (exact erf form), assigned. */
im_status_t im__cpu_gelu_forward(im_backend_t *b, im__ct *x, im__t *y) {
  if (im_tensor_numel(x) == 0) return IM_ERR_UNSUPPORTED;
  void *const u[2] = {x->data, y->data};
  return eltwise(b, IM_OP_GELU_FORWARD, dnnl_eltwise_gelu_erf, 0, im_tensor_numel(x), u);
}

/* x (gelu's input), dy, dx have the same shape; dx = dy (Phi(x) + x phi(x)), assigned. */
im_status_t im__cpu_gelu_backward(im_backend_t *b, im__ct *x, im__ct *dy, im__t *dx) {
  if (im_tensor_numel(x) == 0) return IM_ERR_UNSUPPORTED;
  void *const u[3] = {x->data, dy->data, dx->data};
  return eltwise(b, IM_OP_GELU_BACKWARD, dnnl_eltwise_gelu_erf, 1, im_tensor_numel(x), u);
}

/* x, y have the same shape, mask is U8 of that shape; all assigned.
 * mask[i] = im__dropout_keep(seed, i, p) (the shared rule, so masks match the reference);
 * y = x mask / (1-p) (0 when p == 1). */
im_status_t im__cpu_dropout_forward(im_backend_t *b, float p, uint64_t seed, im__ct *x, im__t *y, im__t *mask) {
  const int64_t n = im_tensor_numel(x);
  const float *xd = x->data;
  float *yd = y->data;
  uint8_t *md = mask->data;
  const float scale = p < 1.0f ? (float)(1.0 / (1.0 - (double)p)) : 0.0f;
  const int nt_ = im__cpu_ctx(b)->nthreads, par_ = n > CPU_PAR_MIN;
  (void)nt_;
  (void)par_;
  CPU_OMP_FOR
  for (int64_t i = 0; i < n; i++) {
    const uint8_t keep = (uint8_t)im__dropout_keep(seed, (uint64_t)i, p);
    const float v = xd[i] * scale;
    md[i] = keep;
    yd[i] = keep ? v : 0.0f;
  }
  return IM_OK;
}

/* mask (U8), dy, dx have the same shape; dx = dy mask / (1-p), assigned (dx == dy allowed). */
im_status_t im__cpu_dropout_backward(im_backend_t *b, float p, im__ct *mask, im__ct *dy, im__t *dx) {
  const int64_t n = im_tensor_numel(dy);
  const uint8_t *md = mask->data;
  const float *dyd = dy->data;
  float *dxd = dx->data;
  const float scale = p < 1.0f ? (float)(1.0 / (1.0 - (double)p)) : 0.0f;
  const int nt_ = im__cpu_ctx(b)->nthreads, par_ = n > CPU_PAR_MIN;
  (void)nt_;
  (void)par_;
  CPU_OMP_FOR
  for (int64_t i = 0; i < n; i++) {
    const float g = dyd[i] * scale;
    dxd[i] = md[i] ? g : 0.0f;
  }
  return IM_OK;
}

/* x1, x2, y have the same shape; y = x1 + x2, assigned (y may be x1 or x2). */
im_status_t im__cpu_add(im_backend_t *b, im__ct *x1, im__ct *x2, im__t *y) {
  const int64_t n = im_tensor_numel(x1);
  const float *a = x1->data, *c = x2->data;
  float *yd = y->data;
  const int nt_ = im__cpu_ctx(b)->nthreads, par_ = n > CPU_PAR_MIN;
  (void)nt_;
  (void)par_;
  CPU_OMP_FOR
  for (int64_t i = 0; i < n; i++) yd[i] = a[i] + c[i];
  return IM_OK;
}

/* dy, dx1, dx2 have the same shape; dx1 = dy, dx2 = dy, assigned (either may be NULL or dy). */
im_status_t im__cpu_add_backward(im_backend_t *b, im__ct *dy, im__t *dx1, im__t *dx2) {
  const int64_t n = im_tensor_numel(dy);
  const float *s = dy->data;
  float *d1 = dx1 && dx1->data != dy->data ? dx1->data : NULL;
  float *d2 = dx2 && dx2->data != dy->data ? dx2->data : NULL;
  const int nt_ = im__cpu_ctx(b)->nthreads, par_ = n > CPU_PAR_MIN;
  (void)nt_;
  (void)par_;
  if (d1 && d2) {
    CPU_OMP_FOR
    for (int64_t i = 0; i < n; i++) d1[i] = d2[i] = s[i];
  } else if (d1 || d2) {
    float *d = d1 ? d1 : d2;
    CPU_OMP_FOR
    for (int64_t i = 0; i < n; i++) d[i] = s[i];
  }
  return IM_OK;
}

/* t is F32 of any shape; every element = v. */
im_status_t im__cpu_fill(im_backend_t *b, im__t *t, float v) {
  const int64_t n = im_tensor_numel(t);
  float *d = t->data;
  const int nt_ = im__cpu_ctx(b)->nthreads, par_ = n > CPU_PAR_MIN;
  (void)nt_;
  (void)par_;
  CPU_OMP_FOR
  for (int64_t i = 0; i < n; i++) d[i] = v;
  return IM_OK;
}

/* ---- layout permutes (any dtype) as oneDNN reorders ------------------------------------------------- */

static dnnl_data_type_t dnnl_dt(im_dtype_t dt) {
  switch (dt) {
    case IM_F32: return dnnl_f32;
    case IM_U8: return dnnl_u8;
    case IM_I32: return dnnl_s32;
  }
  return dnnl_data_type_undef;
}

/* to_nhwc: x [N,C,H,W] -> y [N,H,W,C]; else x [N,H,W,C] -> y [N,C,H,W]. One reorder of the
 * logical NCHW tensor between the nchw and nhwc tags. */
static im_status_t permute(im_backend_t *b, im__ct *x, im__t *y, int to_nhwc) {
  if (im_tensor_numel(x) == 0 || dnnl_dt(x->dtype) == dnnl_data_type_undef) return IM_ERR_UNSUPPORTED;
  cpu_ctx_t *c = im__cpu_ctx(b);
  /* The logical dims are always N, C, H, W. */
  const int64_t N = x->shape[0], C = to_nhwc ? x->shape[1] : x->shape[3], H = to_nhwc ? x->shape[2] : x->shape[1],
                W = to_nhwc ? x->shape[3] : x->shape[2];
  cpu_key_t k;
  memset(&k, 0, sizeof k);
  k.op = PLAN_PERMUTE;
  k.variant = to_nhwc;
  const int64_t v[] = {N, C, H, W, (int64_t)x->dtype};
  memcpy(k.v, v, sizeof v);
  cpu_build_t bld;
  cpu_plan_t *pl;
  im_status_t st = im__cpu_plan_get(c, &k, &bld, &pl);
  if (st != IM_OK) return st;
  if (!pl) {
    dnnl_memory_desc_t a, z;
    const dnnl_dims_t d = {N, C, H, W};
    dnnl_status_t s = dnnl_memory_desc_init_by_tag(&a, 4, d, dnnl_dt(x->dtype), to_nhwc ? dnnl_nchw : dnnl_nhwc);
    if (s == dnnl_success) s = dnnl_memory_desc_init_by_tag(&z, 4, d, dnnl_dt(x->dtype), to_nhwc ? dnnl_nhwc : dnnl_nchw);
    if (s != dnnl_success) bld.st = im__cpu_dnnl_error(s, "permute descriptor");
    const int from = im__cpu_mem_user(&bld, &a, 0), to = im__cpu_mem_user(&bld, &z, 1);
    if (bld.st == IM_OK) {
      dnnl_primitive_desc_t pd = NULL;
      dnnl_primitive_attr_t at = NULL;
      s = dnnl_primitive_attr_create(&at);
      if (s == dnnl_success) s = dnnl_primitive_attr_set_scratchpad_mode(at, dnnl_scratchpad_mode_user);
      im__cpu_set_threads(c->nthreads);
      if (s == dnnl_success) s = dnnl_reorder_primitive_desc_create(&pd, &a, c->engine, &z, c->engine, at);
      if (at) dnnl_primitive_attr_destroy(at);
      if (s != dnnl_success) bld.st = im__cpu_dnnl_error(s, "permute reorder");
      const int args[2] = {DNNL_ARG_FROM, DNNL_ARG_TO}, mems[2] = {from, to};
      im__cpu_step(&bld, pd, 2, args, mems, 1);
    }
    st = im__cpu_plan_finish(&bld, &pl);
    if (st != IM_OK) return st;
  }
  if (pl->unsupported) return IM_ERR_UNSUPPORTED;
  void *const user[2] = {x->data, y->data};
  return im__cpu_plan_run(c, pl, user);
}

/* x is (N, C, H, W); y is (N, H, W, C), assigned: y[n,h,w,c] = x[n,c,h,w]. Any dtype. */
im_status_t im__cpu_nchw_to_nhwc(im_backend_t *b, im__ct *x, im__t *y) { return permute(b, x, y, 1); }

/* x is (N, H, W, C); y is (N, C, H, W), assigned: y[n,c,h,w] = x[n,h,w,c]. Any dtype. */
im_status_t im__cpu_nhwc_to_nchw(im_backend_t *b, im__ct *x, im__t *y) { return permute(b, x, y, 0); }
