/* Unit tests of the folded inference path: the fused convolution op (the cpu
 * backend's oneDNN post-op against the reference kernels, and against a plain
 * convolution followed by ReLU), the fused residual op (conv + residual, then
 * ReLU, in place or not, in every layout) against conv, add and ReLU run
 * apart, folded models (batch norm folded, ReLU fused, layer_scale folded)
 * against the unfolded eval-mode forward on both backends, ResNet's residual
 * adds fused by the planner against the unfused plan, what a folded model
 * refuses, that its inference allocates nothing once planned, and batch lanes. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imops/backend.h"
#include "imops/core.h"
#include "nn/nn_impl.h" /* the planner's fusion marks */
#include "imops/nn.h"
#include "imops/tensor.h"
#include "testutil.h"

#define OK(e) assert_int_equal((e), IM_OK)

#if defined(__SANITIZE_ADDRESS__)
#define IM_SLOW 1
#else
#define IM_SLOW 0
#endif

static void fill(im_tensor_t *t, uint64_t seed, double lo, double hi) {
  im_rng_t r;
  im_rng_seed(&r, seed);
  float *p = im_tensor_f32(t);
  for (int64_t i = 0; i < im_tensor_numel(t); i++) p[i] = (float)(lo + (hi - lo) * im_rng_uniform(&r));
}

/* Max |a - b| / (1 + |b|) over the elements; infinite where one is NaN and the other not. */
static double rel_diff(const float *a, const float *b, int64_t n) {
  double mx = 0;
  for (int64_t i = 0; i < n; i++) {
    if (isnan(a[i]) != isnan(b[i])) return INFINITY;
    double d = isnan(a[i]) ? 0.0 : fabs((double)a[i] - (double)b[i]) / (1.0 + fabs((double)b[i]));
    if (d > mx) mx = d;
  }
  return mx;
}

/* ---- the fused op ---- */

static void fused_case(im_backend_t *ref, im_backend_t *cpu, int64_t n, int64_t c, int64_t hw, int64_t k, int r,
                       int stride, int pad, int groups, int bias, im_act_t act) {
  im_conv2d_params_t p = {.stride_h = stride, .stride_w = stride, .pad_h = pad, .pad_w = pad, .groups = groups};
  im_tensor_t x, w, b, y0, y1, y2;
  int64_t ys[4];
  OK(im_tensor_alloc(&x, IM_F32, 4, (int64_t[]){n, c, hw, hw}));
  OK(im_tensor_alloc(&w, IM_F32, 4, (int64_t[]){k, c / groups, r, r}));
  OK(im_tensor_alloc(&b, IM_F32, 1, (int64_t[]){k}));
  fill(&x, 1, -1, 1);
  fill(&w, 2, -0.5, 0.5);
  fill(&b, 3, -0.5, 0.5);
  OK(im_conv2d_output_shape(&p, x.shape, w.shape, ys));
  OK(im_tensor_alloc(&y0, IM_F32, 4, ys));
  OK(im_tensor_alloc(&y1, IM_F32, 4, ys));
  OK(im_tensor_alloc(&y2, IM_F32, 4, ys));
  const im_tensor_t *bp = bias ? &b : NULL;
  OK(im_op_conv2d_forward_fused(ref, &p, &x, &w, bp, act, &y0));
  OK(im_op_conv2d_forward_fused(cpu, &p, &x, &w, bp, act, &y1));
  /* The definition: a plain convolution, then ReLU. */
  OK(im_op_conv2d_forward(cpu, &p, &x, &w, bp, &y2));
  if (act == IM_ACT_RELU) OK(im_op_relu_forward(cpu, &y2, &y2));
  const int64_t ny = im_tensor_numel(&y0);
  double d01 = rel_diff(im_tensor_f32(&y1), im_tensor_f32(&y0), ny);
  double d21 = rel_diff(im_tensor_f32(&y1), im_tensor_f32(&y2), ny);
  if (d01 > 1e-5 || d21 > 1e-5)
    fail_msg("conv %lldx%lldx%lld k%d s%d g%d act %d: cpu vs ref %.3g, fused vs unfused %.3g", (long long)c,
             (long long)hw, (long long)k, r, stride, groups, (int)act, d01, d21);
  if (act == IM_ACT_RELU)
    for (int64_t i = 0; i < ny; i++) assert_true(im_tensor_f32(&y1)[i] >= 0.0f);
  im_tensor_free(&x);
  im_tensor_free(&w);
  im_tensor_free(&b);
  im_tensor_free(&y0);
  im_tensor_free(&y1);
  im_tensor_free(&y2);
}

static void test_fused_op(void **state) {
  (void)state;
  im_backend_t *ref, *cpu;
  OK(im_backend_ref_new(&ref));
  OK(im_backend_cpu_new(&cpu));
  assert_true(im_backend_supports(cpu, IM_OP_CONV2D_FORWARD_FUSED));
  assert_string_equal(im_op_name(IM_OP_CONV2D_FORWARD_FUSED), "conv2d_forward_fused");
  fused_case(ref, cpu, 2, 3, 17, 8, 3, 2, 1, 1, 1, IM_ACT_RELU);   /* a stem */
  fused_case(ref, cpu, 2, 16, 9, 32, 3, 1, 1, 1, 1, IM_ACT_RELU);  /* a 3x3 */
  fused_case(ref, cpu, 1, 16, 8, 16, 1, 2, 0, 1, 0, IM_ACT_RELU);  /* a 1x1 downsample, no bias */
  fused_case(ref, cpu, 2, 16, 7, 16, 7, 1, 3, 16, 1, IM_ACT_NONE); /* depthwise */
  fused_case(ref, cpu, 2, 16, 9, 32, 3, 1, 1, 1, 1, IM_ACT_NONE);
  /* Argument checks as the plain op's. */
  im_tensor_t x, w, y;
  OK(im_tensor_alloc(&x, IM_F32, 4, (int64_t[]){1, 3, 8, 8}));
  OK(im_tensor_alloc(&w, IM_F32, 4, (int64_t[]){4, 3, 3, 3}));
  OK(im_tensor_alloc(&y, IM_F32, 4, (int64_t[]){1, 4, 5, 5}));
  im_conv2d_params_t p = {.pad_h = 1, .pad_w = 1};
  assert_int_equal(im_op_conv2d_forward_fused(cpu, &p, &x, &w, NULL, IM_ACT_RELU, &y), IM_ERR_ARG);
  assert_int_equal(im_op_conv2d_forward_fused(cpu, &p, &x, &w, NULL, (im_act_t)7, &y), IM_ERR_ARG);
  im_tensor_free(&x);
  im_tensor_free(&w);
  im_tensor_free(&y);
  im_backend_free(ref);
  im_backend_free(cpu);
}

/* ---- the fused residual op ---- */

typedef struct {
  int64_t n, c, hw, k;
  int r, stride, pad, bias;
} res_case_t;

/* A copy of plain t in layout lay. */
static im_tensor_t in_layout(im_backend_t *be, const im_tensor_t *t, im_layout_t lay) {
  im_tensor_t r;
  OK(im_tensor_alloc(&r, IM_F32, t->ndim, t->shape));
  r.layout = lay;
  OK(im_op_relayout(be, t, &r));
  return r;
}

/* act(conv(x) + bias + residual) on be, x in layout xl, residual and y in yl, with y a separate tensor
 * (NaN-filled: every element must be written) and y the residual itself, against conv, add and ReLU
 * run apart on the reference backend: the same float operations there, so the reference backend
 * matches exactly. stamped: weights stamped as a folded model's (the cpu backend's inference kernels). */
static void fused_add_case(im_backend_t *ref, im_backend_t *be, const res_case_t *rc, im_act_t act, im_layout_t xl,
                           im_layout_t yl, int stamped) {
  const im_conv2d_params_t p = {.stride_h = rc->stride, .stride_w = rc->stride, .pad_h = rc->pad, .pad_w = rc->pad};
  im_tensor_t x, w, b, res, want, got;
  int64_t ys[4];
  OK(im_tensor_alloc(&x, IM_F32, 4, (int64_t[]){rc->n, rc->c, rc->hw, rc->hw}));
  OK(im_tensor_alloc(&w, IM_F32, 4, (int64_t[]){rc->k, rc->c, rc->r, rc->r}));
  OK(im_tensor_alloc(&b, IM_F32, 1, (int64_t[]){rc->k}));
  fill(&x, 11, -1, 1);
  fill(&w, 12, -0.3, 0.3);
  fill(&b, 13, -0.5, 0.5);
  OK(im_conv2d_output_shape(&p, x.shape, w.shape, ys));
  OK(im_tensor_alloc(&res, IM_F32, 4, ys));
  OK(im_tensor_alloc(&want, IM_F32, 4, ys));
  OK(im_tensor_alloc(&got, IM_F32, 4, ys));
  fill(&res, 14, -2, 2);
  const im_tensor_t *bp = rc->bias ? &b : NULL;
  OK(im_op_conv2d_forward(ref, &p, &x, &w, bp, &want));
  OK(im_op_add(ref, &want, &res, &want));
  if (act == IM_ACT_RELU) OK(im_op_relu_forward(ref, &want, &want));
  if (stamped) w.stamp = im_tensor_stamp_new();
  im_tensor_t xv = in_layout(be, &x, xl), rv = in_layout(be, &res, yl);
  const int64_t ny = im_tensor_numel(&want);
  for (int alias = 0; alias < 2; alias++) {
    im_tensor_t y;
    if (alias) {
      y = in_layout(be, &res, yl);
    } else {
      OK(im_tensor_alloc(&y, IM_F32, 4, ys));
      y.layout = yl;
      for (int64_t i = 0; i < ny; i++) im_tensor_f32(&y)[i] = NAN;
    }
    for (int rep = 0; rep < 2 - alias; rep++) /* again: a cached plan (and prepared weights) */
      OK(im_op_conv2d_forward_fused_add(be, &p, &xv, &w, bp, alias ? &y : &rv, act, &y));
    OK(im_op_relayout(be, &y, &got));
    const double d = rel_diff(im_tensor_f32(&got), im_tensor_f32(&want), ny);
    if (d > (be == ref ? 0.0 : 1e-5))
      fail_msg("%s conv+add %lldx%lldx%lld->%lld k%d s%d act %d layouts %d/%d%s%s: differs by %.3g",
               im_backend_name(be), (long long)rc->c, (long long)rc->hw, (long long)rc->hw, (long long)rc->k, rc->r,
               rc->stride, (int)act, (int)xl, (int)yl, alias ? " in place" : "", stamped ? " stamped" : "", d);
    if (act == IM_ACT_RELU)
      for (int64_t i = 0; i < ny; i++) assert_true(im_tensor_f32(&got)[i] >= 0.0f);
    im_tensor_free(&y);
  }
  OK(im_op_relayout(be, &rv, &got)); /* an input: untouched when y is another tensor */
  assert_memory_equal(im_tensor_f32(&got), im_tensor_f32(&res), im_tensor_nbytes(&res));
  im_tensor_free(&xv);
  im_tensor_free(&rv);
  im_tensor_free(&x);
  im_tensor_free(&w);
  im_tensor_free(&b);
  im_tensor_free(&res);
  im_tensor_free(&want);
  im_tensor_free(&got);
}

static void test_fused_add_op(void **state) {
  (void)state;
  im_backend_t *ref, *cpu;
  OK(im_backend_ref_new(&ref));
  OK(im_backend_cpu_new(&cpu));
  assert_true(im_backend_supports(cpu, IM_OP_CONV2D_FORWARD_FUSED_ADD));
  assert_true(im_backend_supports(ref, IM_OP_CONV2D_FORWARD_FUSED_ADD));
  assert_string_equal(im_op_name(IM_OP_CONV2D_FORWARD_FUSED_ADD), "conv2d_forward_fused_add");
  static const res_case_t cases[] = {
      {2, 16, 9, 32, 3, 1, 1, 1},  /* a 3x3 */
      {1, 64, 14, 64, 3, 1, 1, 1}, /* a ResNet block's second conv (Winograd when stamped) */
      {2, 32, 8, 64, 1, 2, 0, 0},  /* a 1x1 downsample shortcut, no bias */
      {2, 3, 11, 16, 3, 2, 1, 1},  /* few input channels: x stays plain */
  };
  const im_layout_t P = IM_LAYOUT_PLAIN, B = IM_LAYOUT_NCHW16C, L = IM_LAYOUT_NHWC;
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    const res_case_t *rc = &cases[i];
    const im_layout_t xb = rc->c % 16 ? P : B;
    for (int a = 0; a < 2; a++) {
      const im_act_t act = a ? IM_ACT_RELU : IM_ACT_NONE;
      fused_add_case(ref, ref, rc, act, P, P, 0);
      fused_add_case(ref, cpu, rc, act, P, P, 0);
      fused_add_case(ref, cpu, rc, act, P, P, 1);
      fused_add_case(ref, cpu, rc, act, xb, B, 0);
      fused_add_case(ref, cpu, rc, act, xb, B, 1);
      fused_add_case(ref, cpu, rc, act, P, B, 1);
      fused_add_case(ref, cpu, rc, act, rc->c % 16 ? P : L, L, 0);
    }
  }
  /* Argument checks. */
  const im_conv2d_params_t p = {.pad_h = 1, .pad_w = 1};
  im_tensor_t x, w, y, big, part, r2;
  OK(im_tensor_alloc(&x, IM_F32, 4, (int64_t[]){1, 16, 8, 8}));
  OK(im_tensor_alloc(&w, IM_F32, 4, (int64_t[]){16, 16, 3, 3}));
  OK(im_tensor_alloc(&y, IM_F32, 4, (int64_t[]){1, 16, 8, 8}));
  OK(im_tensor_alloc(&r2, IM_F32, 4, (int64_t[]){1, 16, 8, 7}));
  OK(im_tensor_alloc(&big, IM_F32, 1, (int64_t[]){2 * 16 * 64}));
  OK(im_tensor_view(&part, IM_F32, 4, y.shape, im_tensor_f32(&big) + 1));
  im_tensor_t yv;
  OK(im_tensor_view(&yv, IM_F32, 4, y.shape, im_tensor_f32(&big)));
  assert_int_equal(im_op_conv2d_forward_fused_add(cpu, &p, &x, &w, NULL, &r2, IM_ACT_RELU, &y), IM_ERR_ARG);
  assert_non_null(strstr(im_last_error(), "residual"));
  assert_int_equal(im_op_conv2d_forward_fused_add(cpu, &p, &x, &w, NULL, &part, IM_ACT_RELU, &yv), IM_ERR_ARG);
  assert_int_equal(im_op_conv2d_forward_fused_add(cpu, &p, &x, &w, NULL, &x, IM_ACT_RELU, &x), IM_ERR_ARG);
  assert_int_equal(im_op_conv2d_forward_fused_add(cpu, &p, &x, &w, NULL, &y, (im_act_t)7, &y), IM_ERR_ARG);
  assert_int_equal(im_op_conv2d_forward_fused_add(cpu, &p, &x, &w, NULL, NULL, IM_ACT_NONE, &y), IM_ERR_ARG);
  im_tensor_t yb = y;
  yb.layout = IM_LAYOUT_NCHW16C;
  assert_int_equal(im_op_conv2d_forward_fused_add(cpu, &p, &x, &w, NULL, &y, IM_ACT_NONE, &yb), IM_ERR_ARG);
  assert_non_null(strstr(im_last_error(), "layouts"));
  assert_int_equal(im_op_conv2d_forward_fused_add(ref, &p, &x, &w, NULL, &yb, IM_ACT_NONE, &yb), IM_ERR_ARG);
  OK(im_op_conv2d_forward_fused_add(cpu, &p, &x, &w, NULL, &yb, IM_ACT_NONE, &yb));
  im_tensor_free(&x);
  im_tensor_free(&w);
  im_tensor_free(&y);
  im_tensor_free(&r2);
  im_tensor_free(&big);
  im_backend_free(ref);
  im_backend_free(cpu);
}

/* ---- folded models ---- */

/* Non-trivial batch-norm statistics and affine parameters, and layer scales, so that folding matters. */
static void randomize_state(im_nn_model_t *m) {
  for (size_t i = 0; i < im_nn_state_count(m); i++) {
    im_nn_state_entry_t e;
    OK(im_nn_state_get(m, i, &e));
    const size_t len = strlen(e.name);
#define ENDS(s) (len >= strlen(s) && strcmp(e.name + len - strlen(s), s) == 0)
    if (ENDS("running_var")) fill(e.tensor, i + 100, 0.5, 2.0);
    else if (ENDS("running_mean")) fill(e.tensor, i + 100, -0.3, 0.3);
    else if (ENDS("layer_scale")) fill(e.tensor, i + 100, 0.2, 1.0);
    else if (e.kind == IM_NN_STATE_PARAM && e.tensor->ndim == 1) fill(e.tensor, i + 100, -0.2, 1.2); /* norms, biases */
#undef ENDS
  }
}

static int count_kind(const im_nn_model_t *m, im_nn_node_kind_t k, int with_act) {
  int n = 0;
  for (size_t i = 0; i < im_nn_model_num_nodes(m); i++) {
    im_nn_node_info_t nd;
    OK(im_nn_node_get(m, i, &nd));
    n += nd.kind == k && (!with_act || nd.act == IM_ACT_RELU);
  }
  return n;
}

static void fold_case(im_backend_t *be, const char *arch, im_nn_model_opts_t o, int64_t hw, int64_t batch) {
  im_nn_model_t *m = NULL, *f = NULL;
  OK(im_nn_model_new(arch, &o, &m));
  randomize_state(m);
  OK(im_nn_plan(m, be, batch, hw, hw, 0));
  im_tensor_t x, y0, y1;
  const int k = im_nn_model_num_classes(m), c = im_nn_model_in_channels(m);
  OK(im_tensor_alloc(&x, IM_F32, 4, (int64_t[]){batch, c, hw, hw}));
  OK(im_tensor_alloc(&y0, IM_F32, 2, (int64_t[]){batch, k}));
  OK(im_tensor_alloc(&y1, IM_F32, 2, (int64_t[]){batch, k}));
  fill(&x, 7, -2, 2);
  OK(im_nn_predict(m, &x, &y0, NULL));

  OK(im_nn_model_fold(m, &f));
  assert_true(im_nn_model_is_folded(f) && !im_nn_model_is_folded(m));
  assert_true(im_nn_model_num_nodes(f) < im_nn_model_num_nodes(m));
  assert_int_equal(count_kind(f, IM_NN_NODE_BATCHNORM, 0), 0);
  assert_int_equal(count_kind(f, IM_NN_NODE_SCALE, 0), 0);
  if (strncmp(arch, "convnext", 8) != 0) assert_true(count_kind(f, IM_NN_NODE_CONV, 1) > 0);
  im_nn_model_free(m); /* the folded copy owns its weights */
  OK(im_nn_plan(f, NULL, batch, hw, hw, 0));
  OK(im_nn_predict(f, &x, &y1, NULL));
  double d = rel_diff(im_tensor_f32(&y1), im_tensor_f32(&y0), batch * k);
  if (d > 1e-4) fail_msg("%s on %s: folded logits differ by %.3g (relative)", arch, im_backend_name(be), d);

  /* Inference-only. */
  assert_int_equal(im_nn_plan(f, NULL, batch, hw, hw, 1), IM_ERR_STATE);
  assert_non_null(strstr(im_last_error(), "folded"));
  const char *path = tu_path(tu_tmpdir(), "w.safetensors");
  assert_int_equal(im_nn_state_save(f, path, NULL, 0), IM_ERR_STATE);
  im_nn_model_t *g = NULL;
  assert_int_equal(im_nn_model_fold(f, &g), IM_ERR_ARG);
  assert_null(g);
  /* Planned once: a further batch allocates nothing. */
  OK(im_nn_plan(f, NULL, batch, hw, hw, 0));
  OK(im_nn_predict(f, &x, &y1, NULL)); /* the backend's per-shape caches fill on the first batch */
  const int64_t live = im_alloc_live_bytes();
  im_alloc_fail_after(1); /* the next allocation through the funnel would fail */
  OK(im_nn_predict(f, &x, &y1, NULL));
  im_alloc_fail_after(0);
  assert_int_equal(im_alloc_live_bytes(), live);
  im_nn_model_free(f);
  im_tensor_free(&x);
  im_tensor_free(&y0);
  im_tensor_free(&y1);
}

static void test_fold_models(void **state) {
  (void)state;
  im_backend_t *ref, *cpu;
  OK(im_backend_ref_new(&ref));
  OK(im_backend_cpu_new(&cpu));
  im_backend_t *bes[2] = {cpu, ref};
  for (int i = 0; i < 2; i++) {
    im_backend_t *be = bes[i];
    fold_case(be, "surfacenet", (im_nn_model_opts_t){.seed = 1, .dropout = 0.3f}, 32, 3);
    fold_case(be, "smallcnn", (im_nn_model_opts_t){.seed = 2, .in_channels = 1, .num_classes = 10}, 28, 2);
    fold_case(be, "resnet18", (im_nn_model_opts_t){.seed = 3, .width = 0.25f}, 32, 2);
    if (!IM_SLOW || be == cpu)
      fold_case(be, "convnext-atto", (im_nn_model_opts_t){.seed = 4, .width = 0.4f, .drop_path = 0.1f}, 32, 2);
  }
  im_backend_free(ref);
  im_backend_free(cpu);
}

/* The planner's residual fusion in folded model f planned for batch: *convs gets the convolutions
 * with a fused add, *inplace those writing over their residual, *done the adds and ReLUs they do. */
static void count_fused(const im_nn_model_t *f, int *convs, int *inplace, int *done) {
  *convs = *inplace = *done = 0;
  for (size_t i = 0; i < f->n_nodes; i++) {
    const im__nn_node_t *nd = &f->nodes[i];
    if (nd->res >= 0) {
      assert_int_equal(nd->op, IM__NN_CONV);
      assert_int_equal(f->nodes[nd->res].out.layout, nd->out.layout);
      (*convs)++;
      *inplace += nd->res_inplace && nd->out.data == f->nodes[nd->res].out.data;
    }
    if (nd->by_conv >= 0) {
      assert_true(nd->op == IM__NN_ADD || nd->op == IM__NN_RELU);
      assert_ptr_equal(nd->out.data, f->nodes[nd->by_conv].out.data);
      (*done)++;
    }
  }
}

/* A folded ResNet on be: its residual adds and their ReLUs run inside the convolutions (over the
 * identity's buffer), the graph the exporter walks stays as it was, and the logits equal those of
 * the unfused plan (IMOPS_FUSE_RESIDUAL=0), also for a part of the planned batch. */
static void residual_case(im_backend_t *be, const char *arch, float width, int64_t hw, int64_t batch, int blocks) {
  im_nn_model_t *m = NULL, *f = NULL;
  OK(im_nn_model_new(arch, &(im_nn_model_opts_t){.seed = 5, .width = width}, &m));
  randomize_state(m);
  OK(im_nn_model_fold(m, &f));
  im_nn_model_free(m);
  const size_t nodes = im_nn_model_num_nodes(f);
  const int k = im_nn_model_num_classes(f);
  im_tensor_t x, y0, y1;
  OK(im_tensor_alloc(&x, IM_F32, 4, (int64_t[]){batch, 3, hw, hw}));
  OK(im_tensor_alloc(&y0, IM_F32, 2, (int64_t[]){batch, k}));
  OK(im_tensor_alloc(&y1, IM_F32, 2, (int64_t[]){batch, k}));
  fill(&x, 21, -2, 2);
  int convs, inplace, done;
  setenv("IMOPS_FUSE_RESIDUAL", "0", 1);
  OK(im_nn_plan(f, be, batch, hw, hw, 0));
  count_fused(f, &convs, &inplace, &done);
  assert_int_equal(convs + done, 0);
  OK(im_nn_predict(f, &x, &y0, NULL));
  const size_t bytes0 = im_nn_plan_bytes(f);
  unsetenv("IMOPS_FUSE_RESIDUAL");
  OK(im_nn_plan(f, be, batch, hw, hw, 0));
  count_fused(f, &convs, &inplace, &done);
  assert_int_equal(convs, blocks);
  assert_int_equal(inplace, blocks); /* every identity is free after its block's first convolution */
  assert_int_equal(done, 2 * blocks);
  assert_int_equal(im_nn_model_num_nodes(f), nodes);
  assert_int_equal(count_kind(f, IM_NN_NODE_ADD, 0), blocks);
  assert_int_equal(count_kind(f, IM_NN_NODE_RELU, 0), blocks);
  OK(im_nn_predict(f, &x, &y1, NULL));
  double d = rel_diff(im_tensor_f32(&y1), im_tensor_f32(&y0), batch * k);
  if (d > 1e-5)
    fail_msg("%s on %s, batch %lld: fused logits differ by %.3g", arch, im_backend_name(be), (long long)batch, d);
  assert_true(im_nn_plan_bytes(f) <= bytes0);
  if (batch > 1) { /* one image through the batch plan */
    im_tensor_t x1, l1;
    OK(im_tensor_view(&x1, IM_F32, 4, (int64_t[]){1, 3, hw, hw}, x.data));
    OK(im_tensor_alloc(&l1, IM_F32, 2, (int64_t[]){1, k}));
    OK(im_nn_predict(f, &x1, &l1, NULL));
    d = rel_diff(im_tensor_f32(&l1), im_tensor_f32(&y0), k);
    if (d > 1e-5) fail_msg("%s on %s: one image of a batch-%lld plan differs by %.3g", arch, im_backend_name(be),
                           (long long)batch, d);
    im_tensor_free(&l1);
  }
  im_nn_model_free(f);
  im_tensor_free(&x);
  im_tensor_free(&y0);
  im_tensor_free(&y1);
}

static void test_fused_residual_models(void **state) {
  (void)state;
  im_backend_t *ref, *cpu;
  OK(im_backend_ref_new(&ref));
  OK(im_backend_cpu_new(&cpu));
  residual_case(cpu, "resnet18", 1.0f, 32, 1, 8);
  residual_case(cpu, "resnet18", 1.0f, 32, 3, 8);
  residual_case(cpu, "resnet34", 0.25f, 32, 2, 16);
  residual_case(ref, "resnet18", 0.25f, 32, 2, 8);
  im_backend_free(ref);
  im_backend_free(cpu);
}

/* Single-image inference plans: convolutions with outputs of 7x7 or less, and the adds and ReLUs
 * after them, go channels-last (plan.c, plan_small_channels_last); batch plans and
 * IMOPS_LAYOUT=blocked keep them blocked; the logits are those of the blocked plan. */
static int count_layout(const im_nn_model_t *f, im_layout_t lay) {
  int n = 0;
  for (size_t i = 0; i < f->n_nodes; i++) n += f->nodes[i].out.layout == lay && f->nodes[i].out.ndim == 4;
  return n;
}

static void test_small_channels_last(void **state) {
  (void)state;
  im_backend_t *cpu;
  OK(im_backend_cpu_new(&cpu));
  im_nn_model_t *m = NULL, *f = NULL;
  OK(im_nn_model_new("resnet18", &(im_nn_model_opts_t){.seed = 6, .width = 0.25f}, &m));
  randomize_state(m);
  OK(im_nn_model_fold(m, &f));
  im_nn_model_free(m);
  const int k = im_nn_model_num_classes(f);
  im_tensor_t x, y0, y1;
  OK(im_tensor_alloc(&x, IM_F32, 4, (int64_t[]){1, 3, 32, 32}));
  OK(im_tensor_alloc(&y0, IM_F32, 2, (int64_t[]){1, k}));
  OK(im_tensor_alloc(&y1, IM_F32, 2, (int64_t[]){1, k}));
  fill(&x, 22, -2, 2);
  setenv("IMOPS_LAYOUT", "blocked", 1);
  OK(im_nn_plan(f, cpu, 1, 32, 32, 0));
  assert_int_equal(count_layout(f, IM_LAYOUT_NHWC), 0);
  OK(im_nn_predict(f, &x, &y0, NULL));
  unsetenv("IMOPS_LAYOUT");
  OK(im_nn_plan(f, cpu, 2, 32, 32, 0)); /* a batch plan: blocked */
  assert_int_equal(count_layout(f, IM_LAYOUT_NHWC), 0);
  OK(im_nn_plan(f, cpu, 1, 32, 32, 0));
  /* At 32x32: stages 2-4 (4x4, 2x2, 1x1 outputs) are channels-last, stage 1 (8x8) and the stem are not. */
  int cl = 0;
  for (size_t i = 0; i < f->n_nodes; i++) {
    const im__nn_node_t *nd = &f->nodes[i];
    if (nd->out.ndim != 4) continue;
    const int small = nd->out.shape[2] * nd->out.shape[3] <= 49 && nd->op != IM__NN_MAXPOOL;
    if (nd->op == IM__NN_CONV || nd->op == IM__NN_ADD || nd->op == IM__NN_RELU)
      assert_int_equal(nd->out.layout, small ? IM_LAYOUT_NHWC : IM_LAYOUT_NCHW16C);
    cl += nd->out.layout == IM_LAYOUT_NHWC;
  }
  assert_true(cl >= 3 * 7); /* three stages of two blocks, a downsample each */
  OK(im_nn_predict(f, &x, &y1, NULL));
  const double d = rel_diff(im_tensor_f32(&y1), im_tensor_f32(&y0), k);
  if (d > 1e-5) fail_msg("channels-last small stages: logits differ from the blocked plan's by %.3g", d);
  im_nn_model_free(f);
  im_tensor_free(&x), im_tensor_free(&y0), im_tensor_free(&y1);
  im_backend_free(cpu);
}

/* Batch lanes (lanes.c): where a folded batch plan takes them (every convolution's output 14x14 or
 * more, a batch of at least two per thread; IMOPS_BATCH_LANES=off/on), that an image's logits through
 * the lanes are those of a single-image plan on one thread, bit for bit, whatever batch it came in,
 * that they equal the batch plan's up to rounding, that the loss of such a forward is the batch
 * plan's, and that a forward through them allocates nothing. */
static void lanes_plan(im_nn_model_t *f, im_backend_t *be, const char *mode, int64_t batch, int64_t hw) {
  if (mode) setenv("IMOPS_BATCH_LANES", mode, 1);
  OK(im_nn_plan(f, be, batch, hw, hw, 0));
  unsetenv("IMOPS_BATCH_LANES");
}

static void test_batch_lanes(void **state) {
  (void)state;
  const char *old = getenv("IMOPS_NUM_THREADS");
  char *saved = old ? strdup(old) : NULL;
  setenv("IMOPS_NUM_THREADS", "2", 1);
  im_backend_t *cpu, *one;
  OK(im_backend_cpu_new(&cpu));
  if (saved) setenv("IMOPS_NUM_THREADS", saved, 1);
  else unsetenv("IMOPS_NUM_THREADS");
  free(saved);
  assert_int_equal(im_backend_num_threads(cpu), 2);
  OK(im_backend_new_like(cpu, 1, &one));
  assert_int_equal(im_backend_num_threads(one), 1);
  im_backend_t *ref;
  OK(im_backend_ref_new(&ref));
  assert_int_equal(im_backend_num_threads(ref), 1);
  im_backend_t *none = NULL;
  assert_int_equal(im_backend_new_like(ref, 2, &none), IM_ERR_UNSUPPORTED);
  assert_null(none);
  assert_int_equal(im_backend_new_like(cpu, 0, &none), IM_ERR_ARG);

  im_nn_model_t *m = NULL, *f = NULL, *r = NULL, *rf = NULL;
  OK(im_nn_model_new("surfacenet", &(im_nn_model_opts_t){.seed = 8, .width = 0.25f}, &m));
  randomize_state(m);
  OK(im_nn_model_fold(m, &f));
  OK(im_nn_model_new("resnet18", &(im_nn_model_opts_t){.seed = 9, .width = 0.25f}, &r));
  OK(im_nn_model_fold(r, &rf));
  enum { B = 8, HW = 112 };
  const int k = im_nn_model_num_classes(f);
  im_tensor_t x, y0, y1, y5, l1;
  OK(im_tensor_alloc(&x, IM_F32, 4, (int64_t[]){B, 3, HW, HW}));
  OK(im_tensor_alloc(&y0, IM_F32, 2, (int64_t[]){B, k}));
  OK(im_tensor_alloc(&y1, IM_F32, 2, (int64_t[]){B, k}));
  OK(im_tensor_alloc(&y5, IM_F32, 2, (int64_t[]){5, k}));
  OK(im_tensor_alloc(&l1, IM_F32, 2, (int64_t[]){1, k}));
  fill(&x, 23, -2, 2);
  const int32_t labels[B] = {0, 1, 1, 0, 1, 0, 0, 1};

  /* Where lanes go. */
  lanes_plan(m, cpu, "on", B, HW); /* not folded: never */
  assert_int_equal(im__nn_lanes_count(m), 0);
  lanes_plan(f, cpu, NULL, B, HW);
  assert_int_equal(im__nn_lanes_count(f), 2);
  assert_int_equal(im__nn_lanes_batch(f), 1);
  lanes_plan(f, cpu, NULL, 3, HW); /* fewer than two images a thread */
  assert_int_equal(im__nn_lanes_count(f), 0);
  lanes_plan(f, cpu, NULL, B, 64); /* conv3's output is 8x8 */
  assert_int_equal(im__nn_lanes_count(f), 0);
  lanes_plan(f, ref, "on", B, HW); /* one thread */
  assert_int_equal(im__nn_lanes_count(f), 0);
  lanes_plan(rf, cpu, NULL, B, HW); /* resnet18's last stages are 7x7 and 4x4 */
  assert_int_equal(im__nn_lanes_count(rf), 0);
  /* Forced on a network whose lanes would not pay: each lane takes half the batch at a time. */
  {
    im_tensor_t xr, r0, r1;
    OK(im_tensor_alloc(&xr, IM_F32, 4, (int64_t[]){B, 3, 32, 32}));
    OK(im_tensor_alloc(&r0, IM_F32, 2, (int64_t[]){B, k}));
    OK(im_tensor_alloc(&r1, IM_F32, 2, (int64_t[]){B, k}));
    fill(&xr, 24, -2, 2);
    lanes_plan(rf, cpu, "off", B, 32);
    OK(im_nn_predict(rf, &xr, &r0, NULL));
    lanes_plan(rf, cpu, "on", B, 32);
    assert_int_equal(im__nn_lanes_count(rf), 2);
    assert_int_equal(im__nn_lanes_batch(rf), B / 2);
    OK(im_nn_predict(rf, &xr, &r1, NULL));
    double dr = rel_diff(im_tensor_f32(&r1), im_tensor_f32(&r0), B * k);
    if (dr > 1e-4) fail_msg("resnet18 through lanes of %d images: logits differ by %.3g", B / 2, dr);
    for (int64_t n = 1; n <= 3; n++) { /* partial batches: chunks of ceil(n / 2) */
      im_tensor_t xv, yv;
      OK(im_tensor_view(&xv, IM_F32, 4, (int64_t[]){n, 3, 32, 32}, xr.data));
      OK(im_tensor_view(&yv, IM_F32, 2, (int64_t[]){n, k}, r1.data));
      OK(im_nn_predict(rf, &xv, &yv, NULL));
      dr = rel_diff(im_tensor_f32(&r1), im_tensor_f32(&r0), n * k);
      if (dr > 1e-4) fail_msg("resnet18 lanes, %lld images: logits differ by %.3g", (long long)n, dr);
    }
    im_tensor_free(&xr), im_tensor_free(&r0), im_tensor_free(&r1);
  }

  /* The batch plan, then the lanes: equal up to rounding, and the same loss. */
  float loss0, loss1;
  lanes_plan(f, cpu, "off", B, HW);
  assert_int_equal(im__nn_lanes_count(f), 0);
  const size_t bytes0 = im_nn_plan_bytes(f);
  im_tensor_t lg;
  OK(im_nn_forward(f, &x, 0, &lg));
  memcpy(y0.data, lg.data, sizeof(float) * B * (size_t)k);
  OK(im_nn_loss(f, labels, 0.0f, &loss0));
  lanes_plan(f, cpu, NULL, B, HW);
  assert_true(im_nn_plan_bytes(f) > bytes0); /* the lanes' own plans count */
  OK(im_nn_forward(f, &x, 0, &lg));
  memcpy(y1.data, lg.data, sizeof(float) * B * (size_t)k);
  OK(im_nn_loss(f, labels, 0.0f, &loss1));
  const double d = rel_diff(im_tensor_f32(&y1), im_tensor_f32(&y0), B * k);
  if (d > 1e-4) fail_msg("lanes against the batch plan: logits differ by %.3g", d);
  assert_true(fabs((double)loss1 - (double)loss0) <= 1e-5 * (1.0 + fabs((double)loss0)));

  /* Five images through the same lanes: the first five rows again, bit for bit. */
  im_tensor_t x5;
  OK(im_tensor_view(&x5, IM_F32, 4, (int64_t[]){5, 3, HW, HW}, x.data));
  OK(im_nn_predict(f, &x5, &y5, NULL));
  assert_memory_equal(y5.data, y1.data, sizeof(float) * 5 * (size_t)k);
  /* Planned once: a further batch allocates nothing (the lanes' threads wait between batches). */
  const int64_t live = im_alloc_live_bytes();
  im_alloc_fail_after(1);
  OK(im_nn_predict(f, &x, &y0, NULL));
  im_alloc_fail_after(0);
  assert_int_equal(im_alloc_live_bytes(), live);
  assert_memory_equal(y0.data, y1.data, sizeof(float) * B * (size_t)k);

  /* Each image alone, planned for one image on one thread: its row of the lanes' logits, bit for bit,
   * and rows differ (images are not mixed up). */
  OK(im_nn_plan(f, one, 1, HW, HW, 0));
  const size_t per = 3 * (size_t)HW * HW;
  for (int i = 0; i < B; i++) {
    im_tensor_t xi;
    OK(im_tensor_view(&xi, IM_F32, 4, (int64_t[]){1, 3, HW, HW}, im_tensor_f32(&x) + (size_t)i * per));
    OK(im_nn_predict(f, &xi, &l1, NULL));
    assert_memory_equal(l1.data, im_tensor_f32(&y1) + (size_t)i * (size_t)k, sizeof(float) * (size_t)k);
    if (i > 0) assert_memory_not_equal(im_tensor_f32(&y1) + (size_t)i * (size_t)k, y1.data, sizeof(float) * (size_t)k);
  }

  im_nn_model_free(m);
  im_nn_model_free(f);
  im_nn_model_free(r);
  im_nn_model_free(rf);
  im_tensor_free(&x), im_tensor_free(&y0), im_tensor_free(&y1), im_tensor_free(&y5), im_tensor_free(&l1);
  im_backend_free(cpu);
  im_backend_free(one);
  im_backend_free(ref);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_batch_lanes),
      cmocka_unit_test(test_small_channels_last),
      cmocka_unit_test(test_fused_op),
      cmocka_unit_test(test_fused_add_op),
      cmocka_unit_test(test_fused_residual_models),
      cmocka_unit_test(test_fold_models),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
