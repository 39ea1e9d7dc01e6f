/* Unit tests of the folded inference path: the fused convolution op (the cpu
 * backend's oneDNN post-op against the reference kernels, and against a plain
 * convolution followed by ReLU), folded models (batch norm folded, ReLU fused,
 * layer_scale folded) against the unfolded eval-mode forward on both
 * backends, what a folded model refuses, and that its inference allocates
 * nothing once planned. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "imops/backend.h"
#include "imops/core.h"
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

/* Max |a - b| / (1 + |b|) over the elements. */
static double rel_diff(const float *a, const float *b, int64_t n) {
  double mx = 0;
  for (int64_t i = 0; i < n; i++) {
    double d = fabs((double)a[i] - (double)b[i]) / (1.0 + fabs((double)b[i]));
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

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_fused_op),
      cmocka_unit_test(test_fold_models),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
