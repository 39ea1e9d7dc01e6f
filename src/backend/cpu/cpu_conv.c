/* 2-d convolution on oneDNN: forward, backward data and backward weights
 * (+ bias) for every shape class (stride, padding, dilation, groups and
 * depthwise). The public layouts are NCHW activations and OIHW weights; each
 * primitive is created with format "any" so that oneDNN picks its fastest
 * (blocked, nChw16c-style) layouts, and the plan reorders in and out around
 * it. Measured on Zen 5 (2 cores): the jit:avx512_core kernels on blocked
 * layouts run at 250-340 GFLOP/s against 100-200 for the gemm kernels that
 * oneDNN uses on plain NCHW, and the reorders cost 3-15% of the convolution
 * (more for the few-channel first layer). Activations may also arrive and
 * leave in the blocked layout itself (IM_LAYOUT_NCHW16C, which the nn planner
 * keeps across conv/BN/ReLU/pool chains): then those reorders disappear. */
#include <stdlib.h>
#include <stdatomic.h>
#include <string.h>

#include "backend/cpu/cpu.h"

typedef struct {
  dnnl_memory_desc_t x, w, y, b;     /* public layouts: NCHW, (G)OIHW, NCHW, bias [K] */
  dnnl_memory_desc_t xa, wa, ya;     /* format any, for oneDNN to choose */
  dnnl_dims_t stride, dil, pad_l, pad_r;
} conv_mds_t;

/* The oneDNN tag of an activation's layout. */
static dnnl_format_tag_t act_tag(const im_tensor_t *t) {
  return t->layout == IM_LAYOUT_NCHW16C ? dnnl_nChw16c : t->layout == IM_LAYOUT_NHWC ? dnnl_nhwc : dnnl_nchw;
}

/* x is (N,C,H,W), w is (K,C/G,R,S), y is (N,K,P,Q), x and y in the layouts xt and yt: the
 * descriptors and geometry. */
static void conv_mds(const im_conv2d_params_t *p, const int64_t *xs, const int64_t *ws, const int64_t *ys,
                     dnnl_format_tag_t xt, dnnl_format_tag_t yt, conv_mds_t *m) {
  memset(m, 0, sizeof *m);
  const int64_t G = p->groups;
  im__cpu_md(&m->x, 4, xs, xt);
  im__cpu_md(&m->y, 4, ys, yt);
  /* A blocked or channels-last activation is asked for as it is: with "any", oneDNN's inference
   * kernels (brgconv) pick NHWC for blocked tensors, and the two reorders around each convolution
   * cost more than brgconv gains (resnet18@224 batch 64: 74 img/s with them, 96 without). */
  im__cpu_md(&m->xa, 4, xs, xt != dnnl_nchw ? xt : dnnl_format_tag_any);
  im__cpu_md(&m->ya, 4, ys, yt != dnnl_nchw ? yt : dnnl_format_tag_any);
  im__cpu_md(&m->b, 1, &ys[1], dnnl_x);
  if (G == 1) {
    im__cpu_md(&m->w, 4, ws, dnnl_oihw);
    im__cpu_md(&m->wa, 4, ws, dnnl_format_tag_any);
  } else {
    const int64_t gw[5] = {G, ws[0] / G, ws[1], ws[2], ws[3]};
    im__cpu_md(&m->w, 5, gw, dnnl_goihw);
    im__cpu_md(&m->wa, 5, gw, dnnl_format_tag_any);
  }
  m->stride[0] = p->stride_h;
  m->stride[1] = p->stride_w;
  m->dil[0] = p->dilation_h - 1; /* oneDNN counts dilation from 0 */
  m->dil[1] = p->dilation_w - 1;
  m->pad_l[0] = m->pad_r[0] = p->pad_h;
  m->pad_l[1] = m->pad_r[1] = p->pad_w;
}

/* The algorithm for a convolution: oneDNN's "auto", which takes Winograd (F(4x4,3x3), 2.25x fewer
 * multiplications) for 3x3 stride-1 convolutions where its heuristics expect a gain and direct
 * elsewhere, except for grouped convolutions and inputs of fewer than 16 channels (a first
 * layer), where the Winograd transforms cost more than they save (28x28x1: 9.5 against 58
 * GFLOP/s). Measured on this machine (2 cores, AVX-512): resnet18's and surfacenet's 3x3 layers
 * go from 170-270 to 320-430 direct-equivalent GFLOP/s in all three passes. The choice depends
 * on shapes and the thread count only, so runs stay reproducible. IMOPS_CONV_ALGO=direct turns
 * it off (for comparisons), IMOPS_CONV_ALGO=onednn turns off imops' own Winograd (cpu_wino.c) alone. */
enum { ALGO_ANY, ALGO_DIRECT, ALGO_ONEDNN };
static int algo_env(void) {
  static atomic_int algo_ = -1; /* batch lanes build their plans on threads of their own */
  int algo = atomic_load_explicit(&algo_, memory_order_relaxed);
  if (algo < 0) {
    const char *e = getenv("IMOPS_CONV_ALGO");
    algo = !e ? ALGO_ANY : !strcmp(e, "direct") ? ALGO_DIRECT : !strcmp(e, "onednn") ? ALGO_ONEDNN : ALGO_ANY;
    atomic_store_explicit(&algo_, algo, memory_order_relaxed);
  }
  return algo;
}

static dnnl_alg_kind_t conv_alg(const im_conv2d_params_t *p, int64_t in_channels) {
  if (algo_env() == ALGO_DIRECT || p->groups != 1 || in_channels < 16) return dnnl_convolution_direct;
  return dnnl_convolution_auto;
}

/* Inference (weights that stay the same between calls): oneDNN's Winograd F(2x2,3x3) for inference
 * keeps its weights transformed (the "wino" weights format, prepared once like any stamped weights)
 * and beats the direct kernels on 3x3 stride-1 layers with at least 14x14 outputs; on smaller outputs
 * the tiles' overhead loses. Its kernels take no channels-last tensors. */
static dnnl_alg_kind_t conv_alg_infer(const im_conv2d_params_t *p, const im_tensor_t *x, const im_tensor_t *y,
                                      const int64_t *ws) {
  const dnnl_alg_kind_t a = conv_alg(p, x->shape[1]);
  const int64_t *xs = x->shape;
  if (a == dnnl_convolution_direct || x->layout == IM_LAYOUT_NHWC || y->layout == IM_LAYOUT_NHWC) return a;
  enum { MIN_HW = 14, MAX_N = 4 }; /* measured on resnet18@224: batches of 8 and more lose to "auto" */
  const int unit = (p->stride_h <= 1) && (p->stride_w <= 1) && (p->dilation_h <= 1) && (p->dilation_w <= 1);
  const int same3x3 = ws[2] == 3 && ws[3] == 3 && p->pad_h == 1 && p->pad_w == 1;
  if (unit && same3x3 && xs[0] <= MAX_N && xs[2] >= MIN_HW && xs[3] >= MIN_HW) return dnnl_convolution_winograd;
  return a;
}

/* variant: bit 0 a fused ReLU, bits 1-2 and 3-4 the layouts of x and y (or dx and dy); bit 5 (forward) stamped
 * weights; bit 6 (forward) a sum post-op (a fused residual add). */
static void conv_key(cpu_key_t *k, im_op_t op, const im_conv2d_params_t *p, const int64_t *xs, const int64_t *ws,
                     int has_bias, const im_tensor_t *x, const im_tensor_t *y, int relu) {
  memset(k, 0, sizeof *k);
  k->op = (int32_t)op;
  k->variant = relu | (int)x->layout << 1 | (int)y->layout << 3;
  const int64_t v[CPU_KEY_LEN] = {xs[0],       xs[1],       xs[2],         xs[3],         ws[0],
                                  ws[2],       ws[3],       p->stride_h,   p->stride_w,   p->pad_h,
                                  p->pad_w,    p->dilation_h, p->dilation_w, p->groups, has_bias};
  memcpy(k->v, v, sizeof v);
}

/* A first layer (fewer than 16 input channels, one group): its input stays in the caller's plain
 * layout, which oneDNN's first-layer kernels read directly; with "any" oneDNN may ask for the
 * input padded to 16 channels, a reorder that writes 5x the image (21% of surfacenet's inference). */
static int few_channels(const conv_mds_t *m) { return m->x.dims[1] < 16 && m->w.ndims == 4; }

/* oneDNN falls back to its reference kernels (tens of times slower) for some layout requests, such
 * as a plain first-layer input with a channels-last output: is pd one of those? relax() then lets
 * oneDNN choose the activations' layouts, and the plan reorders (cheap next to the reference kernel). */
static int is_ref(const_dnnl_primitive_desc_t pd) {
  const char *impl = NULL;
  return pd && dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success && impl &&
         !strncmp(impl, "ref", 3);
}
static int relax(conv_mds_t *m) {
  if (m->xa.format_kind == dnnl_format_kind_any && m->ya.format_kind == dnnl_format_kind_any) return 0;
  im__cpu_md(&m->xa, 4, m->x.dims, dnnl_format_tag_any);
  im__cpu_md(&m->ya, 4, m->y.dims, dnnl_format_tag_any);
  return 1;
}

/* A forward pd on "any" layouts: the forward op itself, and the hint the backward ops need.
 * sum, relu: fused post-ops (inference): dst += the convolution, then ReLU. */
static dnnl_primitive_desc_t fwd_pd_act(cpu_build_t *bld, const conv_mds_t *m, dnnl_alg_kind_t alg, int with_bias,
                                        int sum, int relu, int infer) {
  dnnl_convolution_desc_t d;
  dnnl_status_t s = dnnl_dilated_convolution_forward_desc_init(&d, infer ? dnnl_forward_inference : dnnl_forward_training,
                                                               alg, few_channels(m) ? &m->x : &m->xa, &m->wa,
                                                               with_bias ? &m->b : NULL, &m->ya, m->stride, m->dil,
                                                               m->pad_l, m->pad_r);
  if (s != dnnl_success) {
    if (bld->st == IM_OK) bld->st = im__cpu_dnnl_error(s, "convolution descriptor");
    return NULL;
  }
  return im__cpu_pd_act(bld, &d, NULL, sum, relu);
}

static dnnl_primitive_desc_t fwd_pd(cpu_build_t *bld, const conv_mds_t *m, dnnl_alg_kind_t alg, int with_bias) {
  return fwd_pd_act(bld, m, alg, with_bias, 0, 0, 0);
}

static const dnnl_memory_desc_t *q(const_dnnl_primitive_desc_t pd, dnnl_query_t what) {
  return pd ? dnnl_primitive_desc_query_md(pd, what, 0) : NULL;
}

/* x is (N,C,H,W) NCHW, w is (K,C/G,R,S), bias is (K) or NULL; y is (N,K,P,Q) NCHW, assigned (added
 * to y's old values when sum), then ReLU'd when relu. One plan: reorder x and w to oneDNN's layouts,
 * convolve (+bias, +sum and +ReLU as post-ops, so the residual add and the activation cost no extra
 * pass), reorder y back (with sum, y is first reordered into oneDNN's layout when that differs). */
static im_status_t conv_forward(im_backend_t *b, const im_conv2d_params_t *p, im__ct *x, im__ct *w, im__ct *bias,
                                int relu, int sum, im__t *y) {
  const im_tensor_t *all[] = {x, w, bias, y};
  if (im__cpu_any_empty(4, all)) return IM_ERR_UNSUPPORTED;
  cpu_ctx_t *c = im__cpu_ctx(b);
  im_status_t st;
  cpu_key_t k;
  conv_key(&k, relu ? IM_OP_CONV2D_FORWARD_FUSED : IM_OP_CONV2D_FORWARD, p, x->shape, w->shape, bias != NULL, x, y,
           relu);
  const int stamped = w->stamp != 0; /* weights that stay: an inference model */
  const int own = algo_env() == ALGO_ANY ? im__cpu_wino_fits(p, x, w, y) : 0; /* 4: F(4x4), 2: F(2x2) */
  k.variant |= stamped << 5 | (sum != 0) << 6 | (own != 0) << 7 | (own == 2) << 8;
  cpu_build_t bld;
  cpu_plan_t *pl;
  st = im__cpu_plan_get(c, &k, &bld, &pl);
  if (st != IM_OK) return st;
  if (!pl && own) {
    im__cpu_wino_plan(&bld, c->nthreads);
    st = im__cpu_plan_finish(&bld, &pl);
    if (st != IM_OK) return st;
  }
  if (!pl) {
    conv_mds_t m;
    conv_mds(p, x->shape, w->shape, y->shape, act_tag(x), act_tag(y), &m);
    const dnnl_alg_kind_t alg = stamped ? conv_alg_infer(p, x, y, w->shape) : conv_alg(p, x->shape[1]);
    const int infer = relu || sum || stamped;
    dnnl_primitive_desc_t pd = fwd_pd_act(&bld, &m, alg, bias != NULL, sum, relu, infer);
    if (is_ref(pd) && relax(&m)) {
      dnnl_primitive_desc_destroy(pd);
      pd = fwd_pd_act(&bld, &m, alg, bias != NULL, sum, relu, infer);
    }
    const int mx = im__cpu_mem_in(&bld, &m.x, 0, q(pd, dnnl_query_src_md));
    const int mw = im__cpu_mem_in_const(&bld, &m.w, 1, q(pd, dnnl_query_weights_md));
    const int mb = bias ? im__cpu_mem_user(&bld, &m.b, 2) : -1;
    const dnnl_memory_desc_t *ymd = q(pd, dnnl_query_dst_md);
    const int my = sum ? im__cpu_mem_in(&bld, &m.y, 3, ymd) : im__cpu_mem_out(&bld, &m.y, 3, ymd, 0);
    const int args[4] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_DST, DNNL_ARG_BIAS};
    const int mems[4] = {mx, mw, my, mb};
    im__cpu_step(&bld, pd, bias ? 4 : 3, args, mems, 1);
    im__cpu_mem_out_done(&bld, my, &m.y, 3, 0);
    st = im__cpu_plan_finish(&bld, &pl);
    if (st != IM_OK) return st;
  }
  if (pl->unsupported) return IM_ERR_UNSUPPORTED;
  void *const user[4] = {x->data, w->data, bias ? bias->data : NULL, y->data};
  return im__cpu_plan_run_stamped(c, pl, user, w->stamp); /* stamped weights: prepared once */
}

im_status_t im__cpu_conv2d_forward(im_backend_t *b, const im_conv2d_params_t *p, im__ct *x, im__ct *w, im__ct *bias,
                                   im__t *y) {
  return conv_forward(b, p, x, w, bias, 0, 0, y);
}

im_status_t im__cpu_conv2d_forward_fused(im_backend_t *b, const im_conv2d_params_t *p, im__ct *x, im__ct *w,
                                         im__ct *bias, im_act_t act, im__t *y) {
  return conv_forward(b, p, x, w, bias, act == IM_ACT_RELU, 0, y);
}

/* y = act(conv + bias + residual): the residual is copied into y unless y is the residual itself
 * (the nn planner writes in place where the identity has no later reader), then oneDNN's sum post-op
 * adds the convolution to it. */
im_status_t im__cpu_conv2d_forward_fused_add(im_backend_t *b, const im_conv2d_params_t *p, im__ct *x, im__ct *w,
                                             im__ct *bias, im__ct *residual, im_act_t act, im__t *y) {
  if (y->data != residual->data) {
    const im_status_t st = im__cpu_add_backward(b, residual, y, NULL); /* a parallel copy, any layout */
    if (st != IM_OK) return st;
  }
  return conv_forward(b, p, x, w, bias, act == IM_ACT_RELU, 1, y);
}

/* The backward-data (weights 0) or backward-weights (weights 1, with_bias: also the bias) pd, with
 * the forward pd as its hint; rebuilt with relaxed layouts when oneDNN would run its reference kernel.
 * A first layer (few_channels) keeps its plain input, in backward data with plain dy and weights too. */
static dnnl_primitive_desc_t bwd_pd(cpu_build_t *bld, conv_mds_t *m, dnnl_alg_kind_t alg, int weights, int with_bias) {
  dnnl_primitive_desc_t pd = NULL;
  for (int again = 1; again;) {
    dnnl_primitive_desc_t hint = fwd_pd(bld, m, alg, with_bias);
    const int plain = few_channels(m);
    dnnl_convolution_desc_t d;
    if (bld->st == IM_OK) {
      const dnnl_status_t s =
          weights ? dnnl_dilated_convolution_backward_weights_desc_init(&d, alg, plain ? &m->x : &m->xa, &m->wa,
                                                                         with_bias ? &m->b : NULL, &m->ya, m->stride,
                                                                         m->dil, m->pad_l, m->pad_r)
                  : dnnl_dilated_convolution_backward_data_desc_init(&d, alg, plain ? &m->x : &m->xa,
                                                                      plain ? &m->w : &m->wa, plain ? &m->y : &m->ya,
                                                                      m->stride, m->dil, m->pad_l, m->pad_r);
      if (s != dnnl_success)
        bld->st = im__cpu_dnnl_error(s, weights ? "convolution backward-weights descriptor"
                                                : "convolution backward-data descriptor");
      pd = im__cpu_pd(bld, &d, hint, 0);
    }
    if (hint) dnnl_primitive_desc_destroy(hint);
    again = is_ref(pd) && relax(m);
    if (again) dnnl_primitive_desc_destroy(pd), pd = NULL;
  }
  return pd;
}

/* dy is (N,K,P,Q) NCHW, w is (K,C/G,R,S); dx is (N,C,H,W) NCHW, assigned.
 * oneDNN's blocked backward-data kernel is slow when the input has few channels
 * (a network's first layer: 40-55 GFLOP/s against 75-120 for gemm on plain
 * layouts), so with fewer than 16 input channels and one group the plan asks for
 * the plain layouts; otherwise "any" with reorders as forward. */
im_status_t im__cpu_conv2d_backward_data(im_backend_t *b, const im_conv2d_params_t *p, im__ct *dy, im__ct *w,
                                         im__t *dx) {
  const im_tensor_t *all[] = {dy, w, dx};
  if (im__cpu_any_empty(3, all)) return IM_ERR_UNSUPPORTED;
  cpu_ctx_t *c = im__cpu_ctx(b);
  cpu_key_t k;
  conv_key(&k, IM_OP_CONV2D_BACKWARD_DATA, p, dx->shape, w->shape, 0, dx, dy, 0);
  cpu_build_t bld;
  cpu_plan_t *pl;
  im_status_t st = im__cpu_plan_get(c, &k, &bld, &pl);
  if (st != IM_OK) return st;
  if (!pl) {
    conv_mds_t m;
    conv_mds(p, dx->shape, w->shape, dy->shape, act_tag(dx), act_tag(dy), &m);
    dnnl_primitive_desc_t pd = bwd_pd(&bld, &m, conv_alg(p, dx->shape[1]), 0, 0);
    const int mdy = im__cpu_mem_in(&bld, &m.y, 0, q(pd, dnnl_query_diff_dst_md));
    const int mw = im__cpu_mem_in(&bld, &m.w, 1, q(pd, dnnl_query_weights_md));
    const int mdx = im__cpu_mem_out(&bld, &m.x, 2, q(pd, dnnl_query_diff_src_md), 0);
    const int args[3] = {DNNL_ARG_DIFF_DST, DNNL_ARG_WEIGHTS, DNNL_ARG_DIFF_SRC};
    const int mems[3] = {mdy, mw, mdx};
    im__cpu_step(&bld, pd, 3, args, mems, 1);
    im__cpu_mem_out_done(&bld, mdx, &m.x, 2, 0);
    st = im__cpu_plan_finish(&bld, &pl);
    if (st != IM_OK) return st;
  }
  if (pl->unsupported) return IM_ERR_UNSUPPORTED;
  void *const user[3] = {dy->data, w->data, dx->data};
  return im__cpu_plan_run(c, pl, user);
}

/* x is (N,C,H,W) NCHW, dy is (N,K,P,Q) NCHW; dw is (K,C/G,R,S), accumulated (+=); dbias is (K) or
 * NULL, accumulated (+=). oneDNN writes its weight (and bias) gradient into the workspace, and the
 * reorder back to OIHW carries a sum post-op, so the accumulation costs no extra pass. */
im_status_t im__cpu_conv2d_backward_weight(im_backend_t *b, const im_conv2d_params_t *p, im__ct *x, im__ct *dy,
                                           im__t *dw, im__t *dbias) {
  const im_tensor_t *all[] = {x, dy, dw, dbias};
  if (im__cpu_any_empty(4, all)) return IM_ERR_UNSUPPORTED;
  cpu_ctx_t *c = im__cpu_ctx(b);
  cpu_key_t k;
  conv_key(&k, IM_OP_CONV2D_BACKWARD_WEIGHT, p, x->shape, dw->shape, dbias != NULL, x, dy, 0);
  cpu_build_t bld;
  cpu_plan_t *pl;
  im_status_t st = im__cpu_plan_get(c, &k, &bld, &pl);
  if (st != IM_OK) return st;
  if (!pl) {
    conv_mds_t m;
    conv_mds(p, x->shape, dw->shape, dy->shape, act_tag(x), act_tag(dy), &m);
    dnnl_primitive_desc_t pd = bwd_pd(&bld, &m, conv_alg(p, x->shape[1]), 1, dbias != NULL);
    const int mx = im__cpu_mem_in(&bld, &m.x, 0, q(pd, dnnl_query_src_md));
    const int mdy = im__cpu_mem_in(&bld, &m.y, 1, q(pd, dnnl_query_diff_dst_md));
    const int mdw = im__cpu_mem_out(&bld, &m.w, 2, q(pd, dnnl_query_diff_weights_md), 1);
    const int mdb = dbias ? im__cpu_mem_out(&bld, &m.b, 3, &m.b, 1) : -1;
    const int args[4] = {DNNL_ARG_SRC, DNNL_ARG_DIFF_DST, DNNL_ARG_DIFF_WEIGHTS, DNNL_ARG_DIFF_BIAS};
    const int mems[4] = {mx, mdy, mdw, mdb};
    im__cpu_step(&bld, pd, dbias ? 4 : 3, args, mems, 1);
    im__cpu_mem_out_done(&bld, mdw, &m.w, 2, 1);
    if (dbias) im__cpu_mem_out_done(&bld, mdb, &m.b, 3, 1);
    st = im__cpu_plan_finish(&bld, &pl);
    if (st != IM_OK) return st;
  }
  if (pl->unsupported) return IM_ERR_UNSUPPORTED;
  void *const user[4] = {x->data, dy->data, dw->data, dbias ? dbias->data : NULL};
  return im__cpu_plan_run(c, pl, user);
}
