/* The cpu backend's packed-matrix-product convolution (src/backend/cpu/cpu_conv_gemm.c) against
 * the reference backend: stamped weights, blocked input and output, over the shapes its tiling
 * has edges in (output pixels not a multiple of its 7-row tiles, tiles spanning two images of a
 * batch, output channels not a multiple of its 64-channel groups, stride 2, 1x1 and 3x3, zero
 * padding), with and without bias, ReLU, and a residual summed into y in place. It must take
 * every one of these calls when forced, and leave the weights' cache consistent when several
 * weights alternate and a stamp is renewed. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <string.h>

#include "imops/backend.h"
#include "imops/core.h"
#include "imops/tensor.h"

/* cpu_conv_gemm.c (declared in src/backend/cpu/cpu.h, which needs oneDNN's headers). */
im_status_t im__cpu_conv_gemm_forward(im_backend_t *b, const im_conv2d_params_t *p, const im_tensor_t *x,
                                      const im_tensor_t *w, const im_tensor_t *bias, int relu, int sum,
                                      im_tensor_t *y);
void im__cpu_gemm_force(im_backend_t *b, int mode);

#define OK(e)                                                                                  \
  do {                                                                                         \
    im_status_t st_ = (e);                                                                     \
    if (st_ != IM_OK) fail_msg("%s -> %s: %s", #e, im_status_name(st_), im_last_error());   \
  } while (0)

static im_backend_t *ref, *cpu;
static im_rng_t rng;

static int setup(void **state) {
  (void)state;
  im_rng_seed(&rng, 7);
  if (im_backend_ref_new(&ref) != IM_OK || im_backend_cpu_new(&cpu) != IM_OK) return -1;
  im__cpu_gemm_force(cpu, 1);
  return 0;
}

static int teardown(void **state) {
  (void)state;
  im_backend_free(cpu);
  im_backend_free(ref);
  return 0;
}

static im_tensor_t rnd(int ndim, const int64_t *shape) {
  im_tensor_t t;
  OK(im_tensor_alloc(&t, IM_F32, ndim, shape));
  for (int64_t i = 0; i < im_tensor_numel(&t); i++) im_tensor_f32(&t)[i] = (float)im_rng_normal(&rng);
  return t;
}

static im_tensor_t relayout(const im_tensor_t *t, im_layout_t to) {
  im_tensor_t r;
  OK(im_tensor_alloc(&r, IM_F32, t->ndim, t->shape));
  r.layout = to;
  OK(im_op_relayout(cpu, t, &r));
  return r;
}

/* |got - want| <= atol + 1e-5 |want| everywhere; got blocked, want plain. */
static void expect_close(const char *what, const im_tensor_t *got_blocked, const im_tensor_t *want, double atol) {
  im_tensor_t got = relayout(got_blocked, IM_LAYOUT_PLAIN);
  double worst = 0;
  for (int64_t i = 0; i < im_tensor_numel(want); i++) {
    const double g = im_tensor_f32(&got)[i], w = im_tensor_f32(want)[i], d = fabs(g - w) / (atol + 1e-5 * fabs(w));
    if (!(d <= 1.0)) fail_msg("%s: element %lld is %.7g, want %.7g", what, (long long)i, g, w);
    if (d > worst) worst = d;
  }
  im_tensor_free(&got);
}

typedef struct {
  int64_t n, c, h, w, k, r, s;
  int stride, pad;
} gcase_t;

/* One case in the 2 x 2 x 2 combinations of bias, ReLU and a summed residual. */
static void run_case(const gcase_t *gc) {
  const im_conv2d_params_t p = {gc->stride, gc->stride, gc->pad, gc->pad, 1, 1, 1};
  const int64_t xs[4] = {gc->n, gc->c, gc->h, gc->w}, ws[4] = {gc->k, gc->c, gc->r, gc->s}, bs[1] = {gc->k};
  int64_t ys[4];
  OK(im_conv2d_output_shape(&p, xs, ws, ys));
  im_tensor_t x = rnd(4, xs), w = rnd(4, ws), bias = rnd(1, bs), res = rnd(4, ys);
  w.stamp = im_tensor_stamp_new();
  im_tensor_t xb = relayout(&x, IM_LAYOUT_NCHW16C), want, plain_w = w;
  plain_w.stamp = 0;
  OK(im_tensor_alloc(&want, IM_F32, 4, ys));
  const double atol = 1e-5 * sqrt((double)(gc->c * gc->r * gc->s)) + 1e-6;
  for (int combo = 0; combo < 8; combo++) {
    const int with_bias = combo & 1, relu = (combo >> 1) & 1, sum = (combo >> 2) & 1;
    OK(im_op_conv2d_forward(ref, &p, &x, &plain_w, with_bias ? &bias : NULL, &want));
    float *wd = im_tensor_f32(&want);
    for (int64_t i = 0; i < im_tensor_numel(&want); i++) {
      if (sum) wd[i] += im_tensor_f32(&res)[i];
      if (relu && wd[i] < 0) wd[i] = 0;
    }
    im_tensor_t y = relayout(&res, IM_LAYOUT_NCHW16C); /* the residual, overwritten in place */
    OK(im__cpu_conv_gemm_forward(cpu, &p, &xb, &w, with_bias ? &bias : NULL, relu, sum, &y));
    char what[160];
    snprintf(what, sizeof what, "gemm conv n%lld c%lld %lldx%lld k%lld %lldx%lld s%d p%d bias %d relu %d sum %d",
             (long long)gc->n, (long long)gc->c, (long long)gc->h, (long long)gc->w, (long long)gc->k,
             (long long)gc->r, (long long)gc->s, gc->stride, gc->pad, with_bias, relu, sum);
    expect_close(what, &y, &want, atol);
    im_tensor_free(&y);
  }
  im_tensor_free(&x), im_tensor_free(&w), im_tensor_free(&bias), im_tensor_free(&res), im_tensor_free(&xb);
  im_tensor_free(&want);
}

static void test_shapes(void **state) {
  (void)state;
  static const gcase_t cases[] = {
      {1, 32, 7, 7, 64, 3, 3, 1, 1},    /* resnet's last stage, small: one 64-channel group, 7 tiles */
      {1, 16, 5, 5, 48, 3, 3, 1, 1},    /* 25 pixels: the last tile has 4 rows; a 3-block group */
      {3, 16, 6, 5, 80, 3, 3, 1, 1},    /* tiles that span two images; groups of 4 and 1 blocks */
      {1, 32, 14, 14, 32, 3, 3, 2, 1},  /* stride 2 with padding */
      {2, 32, 9, 9, 64, 1, 1, 2, 0},    /* 1x1 downsample */
      {1, 16, 4, 4, 16, 3, 3, 1, 2},    /* padding wider than the kernel's reach on one side */
      {1, 16, 11, 7, 32, 5, 3, 2, 1},   /* rectangular kernel, odd sizes */
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) run_case(&cases[i]);
}

/* Three weights of one shape alternate; then one gets new values under a new stamp. */
static void test_weight_cache(void **state) {
  (void)state;
  const im_conv2d_params_t p = {1, 1, 1, 1, 1, 1, 1};
  const int64_t xs[4] = {1, 16, 7, 7}, ws[4] = {32, 16, 3, 3};
  int64_t ys[4];
  OK(im_conv2d_output_shape(&p, xs, ws, ys));
  im_tensor_t x = rnd(4, xs), w[3], want, y;
  im_tensor_t xb = relayout(&x, IM_LAYOUT_NCHW16C);
  OK(im_tensor_alloc(&want, IM_F32, 4, ys));
  OK(im_tensor_alloc(&y, IM_F32, 4, ys));
  y.layout = IM_LAYOUT_NCHW16C;
  for (int k = 0; k < 3; k++) {
    w[k] = rnd(4, ws);
    w[k].stamp = im_tensor_stamp_new();
  }
  for (int round = 0; round < 4; round++)
    for (int k = 0; k < 3; k++) {
      if (round == 3 && k == 1) { /* new values, new stamp: packed again */
        for (int64_t i = 0; i < im_tensor_numel(&w[k]); i++) im_tensor_f32(&w[k])[i] = (float)im_rng_normal(&rng);
        w[k].stamp = im_tensor_stamp_new();
      }
      im_tensor_t plain_w = w[k];
      plain_w.stamp = 0;
      OK(im_op_conv2d_forward(ref, &p, &x, &plain_w, NULL, &want));
      OK(im__cpu_conv_gemm_forward(cpu, &p, &xb, &w[k], NULL, 0, 0, &y));
      expect_close("gemm conv (alternating weights)", &y, &want, 1e-4);
    }
  /* The public op takes the same path when forced, and declines what it cannot do: unstamped
   * weights and plain tensors go to oneDNN. */
  OK(im_op_conv2d_forward(cpu, &p, &xb, &w[0], NULL, &y));
  im_tensor_t plain_w = w[0];
  plain_w.stamp = 0;
  OK(im_op_conv2d_forward(ref, &p, &x, &plain_w, NULL, &want));
  expect_close("conv2d_forward (forced gemm)", &y, &want, 1e-4);
  assert_int_equal(im__cpu_conv_gemm_forward(cpu, &p, &xb, &plain_w, NULL, 0, 0, &y), IM_ERR_UNSUPPORTED);
  assert_int_equal(im__cpu_conv_gemm_forward(cpu, &p, &x, &w[0], NULL, 0, 0, &y), IM_ERR_UNSUPPORTED);
  for (int k = 0; k < 3; k++) im_tensor_free(&w[k]);
  im_tensor_free(&x), im_tensor_free(&xb), im_tensor_free(&want), im_tensor_free(&y);
}

int main(void) {
  const struct CMUnitTest tests[] = {cmocka_unit_test(test_shapes), cmocka_unit_test(test_weight_cache)};
  return cmocka_run_group_tests(tests, setup, teardown);
}
