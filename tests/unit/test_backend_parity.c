/* Parity of the reference backend with PyTorch: loads the fixtures in
 * tests/ref/<family>.safetensors (made by tools/ref/gen_layer_fixtures.py from
 * torch.nn.functional in float64), runs each case's forward and backward
 * through the op layer, and requires |ours - torch| <= 1e-5 + 1e-4 |torch|
 * for every output, running statistic and gradient (indices exactly). Prints
 * the maximum difference per tensor. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "imops/backend.h"
#include "imops/core.h"
#include "imops/tensor.h"

#ifndef IM_SOURCE_DIR
#error "IM_SOURCE_DIR must point at the source tree (CMakeLists.txt sets it)"
#endif

#define OK(e) assert_int_equal((e), IM_OK)
#define ATOL 1e-5
#define RTOL 1e-4

static im_backend_t *be;
static double worst_ratio, worst_abs;
static int n_compared;

static int setup(void **state) { return im_backend_ref_new(&be) == IM_OK ? 0 : -1; }

static int teardown(void **state) {
  im_backend_free(be);
  printf("parity: %d tensors compared, max |diff| %.3g, worst diff / (atol + rtol |ref|) = %.3g\n", n_compared,
         worst_abs, worst_ratio);
  return 0;
}

/* One fixture file and the case being run. */
typedef struct {
  im_safetensors_t *f;
  const char *name;
  json_t *c;
} fx_t;

static im_tensor_t in(const fx_t *fx, const char *role) {
  char key[128];
  snprintf(key, sizeof key, "%s.%s", fx->name, role);
  im_tensor_t t;
  if (im_safetensors_get(fx->f, key, &t) != IM_OK) fail_msg("fixture has no tensor %s", key);
  return t;
}

/* A zeroed owned tensor shaped like the fixture's role (for outputs and in/out state). */
static im_tensor_t like(const fx_t *fx, const char *role) {
  im_tensor_t r = in(fx, role), t;
  OK(im_tensor_alloc(&t, r.dtype, r.ndim, r.shape));
  return t;
}

static im_tensor_t copy_of(const fx_t *fx, const char *role) {
  im_tensor_t r = in(fx, role), t = like(fx, role);
  OK(im_tensor_copy(&t, &r));
  return t;
}

static void compare(const fx_t *fx, const char *role, const im_tensor_t *got) {
  im_tensor_t ref = in(fx, role);
  assert_int_equal(im_tensor_numel(got), im_tensor_numel(&ref));
  assert_int_equal(got->dtype, ref.dtype);
  const int64_t n = im_tensor_numel(&ref);
  double mx = 0.0, ratio = 0.0;
  int64_t bad = 0, at = -1;
  for (int64_t i = 0; i < n; i++) {
    double a, b;
    if (ref.dtype == IM_I32) {
      a = ((const int32_t *)got->data)[i];
      b = ((const int32_t *)ref.data)[i];
    } else {
      a = im_tensor_f32(got)[i];
      b = im_tensor_f32(&ref)[i];
    }
    const double d = fabs(a - b), r = d / (ATOL + RTOL * fabs(b));
    if (!(d <= mx)) mx = d;
    if (!(r <= ratio)) {
      ratio = r;
      at = i;
    }
    if (ref.dtype == IM_I32 ? a != b : !(r <= 1.0)) bad++;
  }
  printf("  %-24s %-18s %6lld elems  max|diff| %.2e  ratio %.3f%s\n", fx->name, role, (long long)n, mx, ratio,
         bad ? "  FAILED" : "");
  if (bad)
    printf("    first worst at %lld: ours %.9g torch %.9g\n", (long long)at,
           ref.dtype == IM_I32 ? ((const int32_t *)got->data)[at] : im_tensor_f32(got)[at],
           ref.dtype == IM_I32 ? ((const int32_t *)ref.data)[at] : im_tensor_f32(&ref)[at]);
  n_compared++;
  if (ref.dtype != IM_I32) {
    if (ratio > worst_ratio) worst_ratio = ratio;
    if (mx > worst_abs) worst_abs = mx;
  }
  assert_int_equal(bad, 0);
}

static int jint(json_t *c, const char *k, int i) {
  json_t *v = json_object_get(c, k);
  if (json_is_array(v)) v = json_array_get(v, (size_t)i);
  if (!json_is_integer(v)) fail_msg("case parameter %s missing", k);
  return (int)json_integer_value(v);
}

static double jnum(json_t *c, const char *k) {
  json_t *v = json_object_get(c, k);
  if (!json_is_number(v)) fail_msg("case parameter %s missing", k);
  return json_number_value(v);
}

/* ---- one runner per op ---- */

static void run_conv2d(const fx_t *fx) {
  im_conv2d_params_t p = {.stride_h = jint(fx->c, "stride", 0), .stride_w = jint(fx->c, "stride", 1),
                          .pad_h = jint(fx->c, "pad", 0), .pad_w = jint(fx->c, "pad", 1),
                          .dilation_h = jint(fx->c, "dilation", 0), .dilation_w = jint(fx->c, "dilation", 1),
                          .groups = jint(fx->c, "groups", 0)};
  const int bias = json_is_true(json_object_get(fx->c, "bias"));
  im_tensor_t x = in(fx, "x"), w = in(fx, "w"), dy = in(fx, "dy"), b = bias ? in(fx, "b") : x;
  im_tensor_t y = like(fx, "y"), dx = like(fx, "dx"), dw = like(fx, "dw"), db = bias ? like(fx, "db") : y;
  OK(im_op_conv2d_forward(be, &p, &x, &w, bias ? &b : NULL, &y));
  OK(im_op_conv2d_backward_data(be, &p, &dy, &w, &dx));
  OK(im_op_conv2d_backward_weight(be, &p, &x, &dy, &dw, bias ? &db : NULL));
  compare(fx, "y", &y);
  compare(fx, "dx", &dx);
  compare(fx, "dw", &dw);
  if (bias) {
    compare(fx, "db", &db);
    im_tensor_free(&db);
  }
  im_tensor_free(&y);
  im_tensor_free(&dx);
  im_tensor_free(&dw);
}

static void run_batchnorm_train(const fx_t *fx) {
  im_batchnorm_params_t p = {(float)jnum(fx->c, "eps"), (float)jnum(fx->c, "momentum")};
  im_tensor_t x = in(fx, "x"), g = in(fx, "gamma"), b = in(fx, "beta"), dy = in(fx, "dy");
  im_tensor_t rm = copy_of(fx, "running_mean"), rv = copy_of(fx, "running_var");
  im_tensor_t y = like(fx, "y"), sm = like(fx, "save_mean"), si = like(fx, "save_invstd");
  im_tensor_t dx = like(fx, "dx"), dg = like(fx, "dgamma"), db = like(fx, "dbeta");
  OK(im_op_batchnorm_forward_train(be, &p, &x, &g, &b, &rm, &rv, &y, &sm, &si));
  OK(im_op_batchnorm_backward(be, &x, &dy, &g, &sm, &si, &dx, &dg, &db));
  compare(fx, "y", &y);
  compare(fx, "running_mean_after", &rm);
  compare(fx, "running_var_after", &rv);
  compare(fx, "save_mean", &sm);
  compare(fx, "save_invstd", &si);
  compare(fx, "dx", &dx);
  compare(fx, "dgamma", &dg);
  compare(fx, "dbeta", &db);
  im_tensor_t *all[] = {&rm, &rv, &y, &sm, &si, &dx, &dg, &db};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) im_tensor_free(all[i]);
}

static void run_batchnorm_eval(const fx_t *fx) {
  im_batchnorm_params_t p = {(float)jnum(fx->c, "eps"), 0.1f};
  im_tensor_t x = in(fx, "x"), g = in(fx, "gamma"), b = in(fx, "beta"), rm = in(fx, "running_mean"),
              rv = in(fx, "running_var"), y = like(fx, "y");
  OK(im_op_batchnorm_forward_eval(be, &p, &x, &g, &b, &rm, &rv, &y));
  compare(fx, "y", &y);
  im_tensor_free(&y);
}

static void run_layernorm(const fx_t *fx) {
  im_layernorm_params_t p = {(float)jnum(fx->c, "eps")};
  im_tensor_t x = in(fx, "x"), g = in(fx, "gamma"), b = in(fx, "beta"), dy = in(fx, "dy");
  im_tensor_t y = like(fx, "y"), sm = like(fx, "save_mean"), si = like(fx, "save_invstd");
  im_tensor_t dx = like(fx, "dx"), dg = like(fx, "dgamma"), db = like(fx, "dbeta");
  OK(im_op_layernorm_forward(be, &p, &x, &g, &b, &y, &sm, &si));
  OK(im_op_layernorm_backward(be, &x, &dy, &g, &sm, &si, &dx, &dg, &db));
  compare(fx, "y", &y);
  compare(fx, "save_mean", &sm);
  compare(fx, "save_invstd", &si);
  compare(fx, "dx", &dx);
  compare(fx, "dgamma", &dg);
  compare(fx, "dbeta", &db);
  im_tensor_t *all[] = {&y, &sm, &si, &dx, &dg, &db};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) im_tensor_free(all[i]);
}

static void run_unary(const fx_t *fx, const char *op) {
  im_tensor_t x = in(fx, "x"), dy = in(fx, "dy"), y = like(fx, "y"), dx = like(fx, "dx");
  if (!strcmp(op, "gelu")) {
    OK(im_op_gelu_forward(be, &x, &y));
    OK(im_op_gelu_backward(be, &x, &dy, &dx));
  } else if (!strcmp(op, "relu")) {
    OK(im_op_relu_forward(be, &x, &y));
    OK(im_op_relu_backward(be, &y, &dy, &dx));
  } else {
    OK(im_op_nchw_to_nhwc(be, &x, &y));
    OK(im_op_nhwc_to_nchw(be, &dy, &dx));
  }
  compare(fx, "y", &y);
  compare(fx, "dx", &dx);
  im_tensor_free(&y);
  im_tensor_free(&dx);
}

static im_pool2d_params_t pool_params(const fx_t *fx) {
  json_t *incl = json_object_get(fx->c, "count_include_pad");
  return (im_pool2d_params_t){.kernel_h = jint(fx->c, "kernel", 0), .kernel_w = jint(fx->c, "kernel", 1),
                              .stride_h = jint(fx->c, "stride", 0), .stride_w = jint(fx->c, "stride", 1),
                              .pad_h = jint(fx->c, "pad", 0), .pad_w = jint(fx->c, "pad", 1),
                              .exclude_pad = incl && json_is_false(incl)};
}

static void run_pool(const fx_t *fx, const char *op) {
  im_tensor_t x = in(fx, "x"), dy = in(fx, "dy"), y = like(fx, "y"), dx = like(fx, "dx");
  if (!strcmp(op, "maxpool2d")) {
    im_pool2d_params_t p = pool_params(fx);
    im_tensor_t idx = like(fx, "indices");
    OK(im_op_maxpool2d_forward(be, &p, &x, &y, &idx));
    OK(im_op_maxpool2d_backward(be, &p, &dy, &idx, &dx));
    compare(fx, "indices", &idx);
    im_tensor_free(&idx);
  } else if (!strcmp(op, "avgpool2d")) {
    im_pool2d_params_t p = pool_params(fx);
    OK(im_op_avgpool2d_forward(be, &p, &x, &y));
    OK(im_op_avgpool2d_backward(be, &p, &dy, &dx));
  } else {
    OK(im_op_global_avgpool_forward(be, &x, &y));
    OK(im_op_global_avgpool_backward(be, &dy, &dx));
  }
  compare(fx, "y", &y);
  compare(fx, "dx", &dx);
  im_tensor_free(&y);
  im_tensor_free(&dx);
}

static void run_linear(const fx_t *fx) {
  im_tensor_t x = in(fx, "x"), w = in(fx, "w"), b = in(fx, "b"), dy = in(fx, "dy");
  im_tensor_t y = like(fx, "y"), dx = like(fx, "dx"), dw = like(fx, "dw"), db = like(fx, "db");
  OK(im_op_linear_forward(be, &x, &w, &b, &y));
  OK(im_op_linear_backward_data(be, &dy, &w, &dx));
  OK(im_op_linear_backward_weight(be, &x, &dy, &dw, &db));
  compare(fx, "y", &y);
  compare(fx, "dx", &dx);
  compare(fx, "dw", &dw);
  compare(fx, "db", &db);
  im_tensor_t *all[] = {&y, &dx, &dw, &db};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) im_tensor_free(all[i]);
}

static void run_xent(const fx_t *fx) {
  im_xent_params_t p = {(float)jnum(fx->c, "label_smoothing")};
  im_tensor_t z = in(fx, "logits"), lab = in(fx, "labels"), loss = like(fx, "loss"), dz = like(fx, "dlogits");
  OK(im_op_softmax_xent_forward(be, &p, &z, &lab, &loss, NULL));
  OK(im_op_softmax_xent_backward(be, &p, &z, &lab, &dz));
  compare(fx, "loss", &loss);
  compare(fx, "dlogits", &dz);
  im_tensor_free(&loss);
  im_tensor_free(&dz);
}

/* Loads tests/ref/<family>.safetensors, checks its format and version, runs every case; returns the count. */
static int run_family(const char *family) {
  char path[1024];
  snprintf(path, sizeof path, "%s/tests/ref/%s.safetensors", IM_SOURCE_DIR, family);
  im_safetensors_t *f;
  if (im_safetensors_load(path, 0, &f) != IM_OK) fail_msg("%s (regenerate: tools/ref/gen_layer_fixtures.py)", im_last_error());
  const char *fmt = im_safetensors_metadata(f, "format"), *ver = im_safetensors_metadata(f, "version");
  if (!fmt || strcmp(fmt, "imops-ref-fixture") || !ver || strcmp(ver, "1"))
    fail_msg("%s: not an imops-ref-fixture version 1 file; HINT: /usr/bin/python3 tools/ref/gen_layer_fixtures.py",
             path);
  const char *cases = im_safetensors_metadata(f, "cases");
  assert_non_null(cases);
  json_error_t err;
  json_t *arr = json_loads(cases, 0, &err);
  assert_true(json_is_array(arr));
  printf("%s (torch %s)\n", path, im_safetensors_metadata(f, "torch") ? im_safetensors_metadata(f, "torch") : "?");
  size_t i;
  json_t *c;
  json_array_foreach(arr, i, c) {
    fx_t fx = {f, json_string_value(json_object_get(c, "name")), c};
    const char *op = json_string_value(json_object_get(c, "op"));
    assert_non_null(fx.name);
    assert_non_null(op);
    if (!strcmp(op, "conv2d")) run_conv2d(&fx);
    else if (!strcmp(op, "batchnorm_train")) run_batchnorm_train(&fx);
    else if (!strcmp(op, "batchnorm_eval")) run_batchnorm_eval(&fx);
    else if (!strcmp(op, "layernorm")) run_layernorm(&fx);
    else if (!strcmp(op, "gelu") || !strcmp(op, "relu") || !strcmp(op, "nchw_to_nhwc")) run_unary(&fx, op);
    else if (!strcmp(op, "maxpool2d") || !strcmp(op, "avgpool2d") || !strcmp(op, "global_avgpool")) run_pool(&fx, op);
    else if (!strcmp(op, "linear")) run_linear(&fx);
    else if (!strcmp(op, "softmax_xent")) run_xent(&fx);
    else fail_msg("unknown op %s in %s", op, path);
  }
  int n = (int)json_array_size(arr);
  json_decref(arr);
  im_safetensors_free(f);
  return n;
}

static void test_parity_conv2d(void **state) { assert_true(run_family("conv2d") >= 8); }
static void test_parity_norm(void **state) { assert_true(run_family("norm") >= 9); }
static void test_parity_eltwise(void **state) { assert_true(run_family("eltwise") >= 3); }
static void test_parity_pool(void **state) { assert_true(run_family("pool") >= 8); }
static void test_parity_linear_loss(void **state) { assert_true(run_family("linear_loss") >= 7); }

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parity_conv2d),      cmocka_unit_test(test_parity_norm),
      cmocka_unit_test(test_parity_eltwise),     cmocka_unit_test(test_parity_pool),
      cmocka_unit_test(test_parity_linear_loss),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
