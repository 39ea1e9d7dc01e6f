/* The cpu backend (src/backend/cpu: oneDNN, sgemm, OpenMP loops) against the
 * reference backend: every op runs on both with the same random inputs over
 * the shape classes (stride 1/2, padding 0/1/2/3, dilation 1/2, groups 1/2/
 * depthwise, odd sizes like 7x5, batch 1 and 3, 1x1 and 7x7 kernels, a few
 * realistic layers such as 64 channels at 56x56), and every output, running
 * statistic and gradient must satisfy |cpu - ref| <= atol + rtol |ref| with
 * per-op tolerances (float vs the reference's double accumulation, so atol
 * scales with the square root of the reduction length). Max pooling and the
 * element-wise ops must agree exactly (indices, ties, NaN). Gradients that
 * accumulate (+=) start from random values, so the contract is checked too.
 * The plan cache is exercised by repeating each op on fresh buffers. Prints
 * the worst difference per op. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "imops/backend.h"
#include "imops/core.h"
#include "imops/tensor.h"

#define OK(e)                                                                         \
  do {                                                                                \
    im_status_t st_ = (e);                                                            \
    if (st_ != IM_OK) fail_msg("%s -> %s: %s", #e, im_status_name(st_), im_last_error()); \
  } while (0)

static im_backend_t *ref, *cpu;
static im_rng_t rng;

/* ---- worst differences per op ---- */

#define MAX_STATS 64
typedef struct {
  const char *op;
  double max_abs, max_rel, worst_ratio; /* ratio: |d| / (atol + rtol |ref|), must stay <= 1 */
  int64_t n;
} stat_t;
static stat_t stats[MAX_STATS];
static int nstats;

static stat_t *stat_for(const char *op) {
  for (int i = 0; i < nstats; i++)
    if (!strcmp(stats[i].op, op)) return &stats[i];
  assert_true(nstats < MAX_STATS);
  stats[nstats].op = op;
  return &stats[nstats++];
}

static int setup(void **state) {
  im_rng_seed(&rng, 20240611);
  if (im_backend_ref_new(&ref) != IM_OK) return -1;
  if (im_backend_cpu_new(&cpu) != IM_OK) {
    fprintf(stderr, "cpu backend: %s\n", im_last_error());
    return -1;
  }
  return 0;
}

static int teardown(void **state) {
  printf("%-26s %12s %12s %12s %10s\n", "op (cpu vs ref)", "max |diff|", "max rel", "worst/tol", "values");
  for (int i = 0; i < nstats; i++)
    printf("%-26s %12.3g %12.3g %12.3g %10lld\n", stats[i].op, stats[i].max_abs, stats[i].max_rel,
           stats[i].worst_ratio, (long long)stats[i].n);
  im_backend_free(cpu);
  im_backend_free(ref);
  return 0;
}

/* ---- tensors ---- */

static im_tensor_t mk(im_dtype_t dt, int ndim, const int64_t *shape) {
  im_tensor_t t;
  OK(im_tensor_alloc(&t, dt, ndim, shape));
  return t;
}

/* Uniform in [-1, 1). */
static void rnd(im_tensor_t *t) {
  float *p = t->data;
  for (int64_t i = 0; i < im_tensor_numel(t); i++) p[i] = (float)(2.0 * im_rng_uniform(&rng) - 1.0);
}

static im_tensor_t mk_rnd(int ndim, const int64_t *shape) {
  im_tensor_t t = mk(IM_F32, ndim, shape);
  rnd(&t);
  return t;
}

static im_tensor_t clone(const im_tensor_t *s) {
  im_tensor_t t = mk(s->dtype, s->ndim, s->shape);
  OK(im_tensor_copy(&t, s));
  return t;
}

static void freet(im_tensor_t *t) { im_tensor_free(t); }

/* got (cpu) against want (ref): |d| <= atol + rtol |want|; NaN must meet NaN. */
static void cmp(const char *op, const char *what, const im_tensor_t *got, const im_tensor_t *want, double atol,
                double rtol) {
  assert_int_equal(got->dtype, want->dtype);
  assert_int_equal(im_tensor_numel(got), im_tensor_numel(want));
  stat_t *s = stat_for(op);
  const int64_t n = im_tensor_numel(want);
  int64_t bad = 0;
  for (int64_t i = 0; i < n; i++) {
    double a, b;
    if (want->dtype == IM_I32) {
      a = ((const int32_t *)got->data)[i];
      b = ((const int32_t *)want->data)[i];
    } else if (want->dtype == IM_U8) {
      a = ((const uint8_t *)got->data)[i];
      b = ((const uint8_t *)want->data)[i];
    } else {
      a = ((const float *)got->data)[i];
      b = ((const float *)want->data)[i];
    }
    if (isnan(a) || isnan(b)) {
      if (!(isnan(a) && isnan(b)) && bad++ < 5)
        printf("  %s %s[%lld]: cpu %.9g ref %.9g\n", op, what, (long long)i, a, b);
      continue;
    }
    if (isinf(a) || isinf(b)) {
      if (a != b && bad++ < 5) printf("  %s %s[%lld]: cpu %.9g ref %.9g\n", op, what, (long long)i, a, b);
      continue;
    }
    const double d = fabs(a - b), tol = atol + rtol * fabs(b), ratio = d / (tol > 0 ? tol : 1e-300);
    if (d > s->max_abs) s->max_abs = d;
    if (fabs(b) > 1e-3 && d / fabs(b) > s->max_rel) s->max_rel = d / fabs(b);
    if (ratio > s->worst_ratio) s->worst_ratio = ratio;
    if (d > tol && bad++ < 5)
      printf("  %s %s[%lld]: cpu %.9g ref %.9g (diff %.3g > %.3g)\n", op, what, (long long)i, a, b, d, tol);
  }
  s->n += n;
  if (bad) fail_msg("%s: %lld of %lld values of %s differ beyond tolerance", op, (long long)bad, (long long)n, what);
}

/* ---- convolution ---- */

typedef struct {
  int64_t N, C, H, W, K, R, S;
  int sh, sw, ph, pw, dh, dw, g;
} conv_case_t;

static const conv_case_t conv_cases[] = {
    /* N  C   H   W   K  R  S  sh sw ph pw dh dw g */
    {1, 3, 7, 5, 4, 3, 3, 1, 1, 0, 0, 1, 1, 1},     /* odd sizes, no padding */
    {3, 4, 9, 7, 6, 3, 3, 2, 2, 1, 1, 1, 1, 1},     /* stride 2, batch 3 */
    {2, 6, 11, 9, 4, 3, 3, 1, 1, 1, 1, 2, 2, 2},    /* dilation 2, groups 2 */
    {2, 8, 10, 10, 8, 3, 3, 1, 1, 1, 1, 1, 1, 8},   /* depthwise */
    {3, 16, 13, 11, 16, 3, 3, 2, 2, 1, 1, 1, 1, 16}, /* depthwise, stride 2 */
    {2, 7, 9, 9, 14, 3, 3, 1, 1, 1, 1, 1, 1, 7},    /* groups with channel multiplier 2 */
    {1, 5, 7, 5, 7, 1, 1, 1, 1, 0, 0, 1, 1, 1},     /* 1x1 on 7x5 */
    {3, 32, 14, 14, 64, 1, 1, 2, 2, 0, 0, 1, 1, 1}, /* 1x1 stride 2 (resnet downsample) */
    {2, 3, 16, 14, 8, 7, 7, 2, 2, 3, 3, 1, 1, 1},   /* 7x7 stride 2 pad 3 (resnet stem) */
    {2, 4, 15, 13, 6, 3, 3, 2, 2, 2, 2, 2, 2, 1},   /* dilation 2 with stride 2 */
    {2, 4, 12, 11, 5, 3, 2, 1, 2, 0, 1, 2, 1, 1},   /* asymmetric stride, pad, dilation, kernel */
    {2, 32, 10, 10, 32, 3, 3, 1, 1, 1, 1, 1, 1, 2}, /* groups 2, 16 channels per group */
    {3, 3, 23, 23, 32, 3, 3, 2, 2, 1, 1, 1, 1, 1},  /* SurfaceCNN stem shape, small */
    {1, 64, 56, 56, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1}, /* realistic: resnet18 layer1 at 224 */
    {2, 128, 7, 7, 128, 3, 3, 1, 1, 1, 1, 1, 1, 1}, /* many channels, small image */
    {3, 24, 5, 9, 40, 5, 5, 1, 1, 2, 2, 1, 1, 1},   /* 5x5 kernel, odd channels */
};

/* Tolerances: float accumulation over red terms of magnitude ~1 against double. */
static double conv_atol(int64_t red) { return 2e-6 * sqrt((double)red) + 1e-6; }

static void run_conv_case(const conv_case_t *cc, int with_bias) {
  const im_conv2d_params_t p = {cc->sh, cc->sw, cc->ph, cc->pw, cc->dh, cc->dw, cc->g};
  const int64_t xs[4] = {cc->N, cc->C, cc->H, cc->W}, ws[4] = {cc->K, cc->C / cc->g, cc->R, cc->S};
  int64_t ys[4];
  OK(im_conv2d_output_shape(&p, xs, ws, ys));
  const int64_t bs[1] = {cc->K};
  for (int rep = 0; rep < 2; rep++) { /* the second time on fresh buffers, through the cached plan */
    im_tensor_t x = mk_rnd(4, xs), w = mk_rnd(4, ws), bias = mk_rnd(1, bs), dy = mk_rnd(4, ys);
    im_tensor_t y1 = mk(IM_F32, 4, ys), y2 = mk(IM_F32, 4, ys), dx1 = mk(IM_F32, 4, xs), dx2 = mk(IM_F32, 4, xs);
    im_tensor_t dw1 = mk_rnd(4, ws), dw2 = clone(&dw1), db1 = mk_rnd(1, bs), db2 = clone(&db1);
    rnd(&dx1); /* data gradients are assigned: garbage before must not matter */
    OK(im_op_conv2d_forward(ref, &p, &x, &w, with_bias ? &bias : NULL, &y1));
    OK(im_op_conv2d_forward(cpu, &p, &x, &w, with_bias ? &bias : NULL, &y2));
    const int64_t red_f = ws[1] * ws[2] * ws[3], red_d = (cc->K / cc->g) * cc->R * cc->S,
                  red_w = cc->N * ys[2] * ys[3];
    cmp("conv2d_forward", "y", &y2, &y1, conv_atol(red_f), 1e-5);
    OK(im_op_conv2d_backward_data(ref, &p, &dy, &w, &dx1));
    OK(im_op_conv2d_backward_data(cpu, &p, &dy, &w, &dx2));
    cmp("conv2d_backward_data", "dx", &dx2, &dx1, conv_atol(red_d), 1e-5);
    OK(im_op_conv2d_backward_weight(ref, &p, &x, &dy, &dw1, with_bias ? &db1 : NULL));
    OK(im_op_conv2d_backward_weight(cpu, &p, &x, &dy, &dw2, with_bias ? &db2 : NULL));
    cmp("conv2d_backward_weight", "dw", &dw2, &dw1, conv_atol(red_w), 1e-5);
    cmp("conv2d_backward_weight", "dbias", &db2, &db1, conv_atol(red_w), 1e-5);
    freet(&x), freet(&w), freet(&bias), freet(&dy), freet(&y1), freet(&y2), freet(&dx1), freet(&dx2);
    freet(&dw1), freet(&dw2), freet(&db1), freet(&db2);
  }
}

static void test_conv(void **state) {
  for (size_t i = 0; i < sizeof conv_cases / sizeof *conv_cases; i++) run_conv_case(&conv_cases[i], (int)(i % 3 != 1));
}

/* ---- batch norm ---- */

static void run_bn_case(int ndim, const int64_t *xs, int affine, float eps) {
  const im_batchnorm_params_t p = {eps, 0.1f};
  const int64_t C = xs[1], cs[1] = {C};
  int64_t red = xs[0];
  for (int i = 2; i < ndim; i++) red *= xs[i];
  for (int rep = 0; rep < 2; rep++) {
    im_tensor_t x = mk_rnd(ndim, xs), dy = mk_rnd(ndim, xs), gamma = mk_rnd(1, cs), beta = mk_rnd(1, cs);
    /* A per-channel offset and scale, so that the statistics are not all (0, 1/3). */
    float *xd = x.data;
    for (int64_t i = 0; i < im_tensor_numel(&x); i++) {
      const int64_t ch = (i / (im_tensor_numel(&x) / xs[0] / C)) % C;
      xd[i] = xd[i] * (float)(0.5 + ch % 3) + (float)(ch % 5) - 2.0f;
    }
    im_tensor_t rm1 = mk_rnd(1, cs), rv1 = mk(IM_F32, 1, cs), y1 = mk(IM_F32, ndim, xs), sm1 = mk(IM_F32, 1, cs),
                si1 = mk(IM_F32, 1, cs);
    im_tensor_fill_f32(&rv1, 1.5f);
    im_tensor_t rm2 = clone(&rm1), rv2 = clone(&rv1), y2 = mk(IM_F32, ndim, xs), sm2 = mk(IM_F32, 1, cs),
                si2 = mk(IM_F32, 1, cs);
    const im_tensor_t *g = affine ? &gamma : NULL, *bt = affine ? &beta : NULL;
    OK(im_op_batchnorm_forward_train(ref, &p, &x, g, bt, &rm1, &rv1, &y1, &sm1, &si1));
    OK(im_op_batchnorm_forward_train(cpu, &p, &x, g, bt, &rm2, &rv2, &y2, &sm2, &si2));
    cmp("batchnorm_forward_train", "y", &y2, &y1, 2e-5, 1e-5);
    cmp("batchnorm_forward_train", "save_mean", &sm2, &sm1, 1e-6, 1e-5);
    cmp("batchnorm_forward_train", "save_invstd", &si2, &si1, 1e-6, 1e-5);
    cmp("batchnorm_forward_train", "running_mean", &rm2, &rm1, 1e-6, 1e-5);
    cmp("batchnorm_forward_train", "running_var", &rv2, &rv1, 1e-6, 1e-5);
    /* Eval with the updated running statistics, out of place and in place. */
    OK(im_op_batchnorm_forward_eval(ref, &p, &x, g, bt, &rm1, &rv1, &y1));
    OK(im_op_batchnorm_forward_eval(cpu, &p, &x, g, bt, &rm1, &rv1, &y2));
    cmp("batchnorm_forward_eval", "y", &y2, &y1, 1e-5, 1e-5);
    im_tensor_t xi = clone(&x);
    OK(im_op_batchnorm_forward_eval(cpu, &p, &xi, g, bt, &rm1, &rv1, &xi));
    cmp("batchnorm_forward_eval", "y (in place)", &xi, &y1, 1e-5, 1e-5);
    /* Backward from the reference's saved statistics (both backends get the same inputs). */
    im_tensor_t dx1 = mk_rnd(ndim, xs), dx2 = mk(IM_F32, ndim, xs), dg1 = mk_rnd(1, cs), dg2 = clone(&dg1),
                db1 = mk_rnd(1, cs), db2 = clone(&db1);
    OK(im_op_batchnorm_backward(ref, &x, &dy, g, &sm1, &si1, &dx1, &dg1, &db1));
    OK(im_op_batchnorm_backward(cpu, &x, &dy, g, &sm1, &si1, &dx2, &dg2, &db2));
    cmp("batchnorm_backward", "dx", &dx2, &dx1, 2e-5, 1e-4);
    cmp("batchnorm_backward", "dgamma", &dg2, &dg1, 2e-6 * sqrt((double)red) + 1e-6, 1e-5);
    cmp("batchnorm_backward", "dbeta", &db2, &db1, 2e-6 * sqrt((double)red) + 1e-6, 1e-5);
    /* Without the parameter gradients. */
    OK(im_op_batchnorm_backward(cpu, &x, &dy, g, &sm1, &si1, &dx2, NULL, NULL));
    cmp("batchnorm_backward", "dx", &dx2, &dx1, 2e-5, 1e-4);
    freet(&x), freet(&dy), freet(&gamma), freet(&beta), freet(&rm1), freet(&rv1), freet(&y1), freet(&sm1);
    freet(&si1), freet(&rm2), freet(&rv2), freet(&y2), freet(&sm2), freet(&si2), freet(&xi), freet(&dx1);
    freet(&dx2), freet(&dg1), freet(&dg2), freet(&db1), freet(&db2);
  }
}

static void test_batchnorm(void **state) {
  run_bn_case(4, (const int64_t[]){3, 5, 7, 5}, 1, 1e-5f);
  run_bn_case(4, (const int64_t[]){1, 16, 4, 4}, 0, 1e-5f);
  run_bn_case(2, (const int64_t[]){9, 8}, 1, 1e-3f);
  run_bn_case(3, (const int64_t[]){3, 6, 10}, 0, 1e-5f);
  run_bn_case(4, (const int64_t[]){3, 64, 28, 28}, 1, 1e-5f);
  run_bn_case(4, (const int64_t[]){2, 17, 1, 1}, 1, 1e-5f);
}

/* ---- layer norm ---- */

static void run_ln_case(int ndim, const int64_t *xs, int affine, float eps) {
  const im_layernorm_params_t p = {eps};
  const int64_t C = xs[ndim - 1], cs[1] = {C};
  int64_t M = 1;
  for (int i = 0; i < ndim - 1; i++) M *= xs[i];
  const int64_t ms[1] = {M};
  for (int rep = 0; rep < 2; rep++) {
    im_tensor_t x = mk_rnd(ndim, xs), dy = mk_rnd(ndim, xs), gamma = mk_rnd(1, cs), beta = mk_rnd(1, cs);
    float *xd = x.data;
    for (int64_t i = 0; i < im_tensor_numel(&x); i++) xd[i] = xd[i] * 2.0f + (float)((i / C) % 7) - 3.0f;
    im_tensor_t y1 = mk(IM_F32, ndim, xs), y2 = mk(IM_F32, ndim, xs), sm1 = mk(IM_F32, 1, ms), sm2 = mk(IM_F32, 1, ms),
                si1 = mk(IM_F32, 1, ms), si2 = mk(IM_F32, 1, ms);
    const im_tensor_t *g = affine ? &gamma : NULL, *bt = affine ? &beta : NULL;
    OK(im_op_layernorm_forward(ref, &p, &x, g, bt, &y1, &sm1, &si1));
    OK(im_op_layernorm_forward(cpu, &p, &x, g, bt, &y2, &sm2, &si2));
    cmp("layernorm_forward", "y", &y2, &y1, 2e-5, 1e-5);
    cmp("layernorm_forward", "save_mean", &sm2, &sm1, 1e-6, 1e-5);
    cmp("layernorm_forward", "save_invstd", &si2, &si1, 1e-6, 1e-5);
    im_tensor_t dx1 = mk_rnd(ndim, xs), dx2 = mk(IM_F32, ndim, xs), dg1 = mk_rnd(1, cs), dg2 = clone(&dg1),
                db1 = mk_rnd(1, cs), db2 = clone(&db1);
    OK(im_op_layernorm_backward(ref, &x, &dy, g, &sm1, &si1, &dx1, &dg1, &db1));
    OK(im_op_layernorm_backward(cpu, &x, &dy, g, &sm1, &si1, &dx2, &dg2, &db2));
    cmp("layernorm_backward", "dx", &dx2, &dx1, 2e-5, 1e-4);
    cmp("layernorm_backward", "dgamma", &dg2, &dg1, 2e-6 * sqrt((double)M) + 1e-6, 1e-5);
    cmp("layernorm_backward", "dbeta", &db2, &db1, 2e-6 * sqrt((double)M) + 1e-6, 1e-5);
    freet(&x), freet(&dy), freet(&gamma), freet(&beta), freet(&y1), freet(&y2), freet(&sm1), freet(&sm2);
    freet(&si1), freet(&si2), freet(&dx1), freet(&dx2), freet(&dg1), freet(&dg2), freet(&db1), freet(&db2);
  }
}

static void test_layernorm(void **state) {
  run_ln_case(4, (const int64_t[]){3, 7, 5, 12}, 1, 1e-5f);
  run_ln_case(3, (const int64_t[]){2, 5, 96}, 0, 1e-6f);
  run_ln_case(2, (const int64_t[]){8, 3}, 1, 1e-5f);
  run_ln_case(4, (const int64_t[]){2, 14, 14, 96}, 1, 1e-6f); /* ConvNeXt stage 1 at 56/4 */
  run_ln_case(2, (const int64_t[]){5, 768}, 1, 1e-6f);
}

/* ---- element-wise ---- */

static void test_eltwise(void **state) {
  const int64_t sizes[] = {1, 17, 1000, 3 * 64 * 56 * 56 + 5};
  for (size_t si = 0; si < sizeof sizes / sizeof *sizes; si++) {
    const int64_t n = sizes[si];
    im_tensor_t x = mk_rnd(1, &n), dy = mk_rnd(1, &n);
    float *xd = x.data;
    for (int64_t i = 0; i < n; i++) xd[i] *= 6.0f;
    if (n > 10) {
      xd[1] = 0.0f, xd[2] = -0.0f, xd[3] = NAN, xd[4] = INFINITY, xd[5] = -INFINITY, xd[6] = 1e-30f;
    }
    im_tensor_t y1 = mk(IM_F32, 1, &n), y2 = mk(IM_F32, 1, &n), d1 = mk(IM_F32, 1, &n), d2 = mk(IM_F32, 1, &n);
    OK(im_op_relu_forward(ref, &x, &y1));
    OK(im_op_relu_forward(cpu, &x, &y2));
    cmp("relu_forward", "y", &y2, &y1, 0, 0);
    OK(im_op_relu_backward(ref, &y1, &dy, &d1));
    OK(im_op_relu_backward(cpu, &y1, &dy, &d2));
    cmp("relu_backward", "dx", &d2, &d1, 0, 0);
    im_tensor_t xi = clone(&x);
    OK(im_op_relu_forward(cpu, &xi, &xi));
    cmp("relu_forward", "y (in place)", &xi, &y1, 0, 0);
    /* GELU on finite inputs (the reference's erf in double vs oneDNN's polynomial). */
    if (n > 10) xd[3] = 0.5f, xd[4] = 9.0f, xd[5] = -9.0f;
    OK(im_op_gelu_forward(ref, &x, &y1));
    OK(im_op_gelu_forward(cpu, &x, &y2));
    cmp("gelu_forward", "y", &y2, &y1, 1e-6, 1e-5);
    OK(im_op_gelu_backward(ref, &x, &dy, &d1));
    OK(im_op_gelu_backward(cpu, &x, &dy, &d2));
    cmp("gelu_backward", "dx", &d2, &d1, 1e-6, 1e-5);
    OK(im_tensor_copy(&xi, &dy));
    OK(im_op_gelu_backward(cpu, &x, &xi, &xi));
    cmp("gelu_backward", "dx (in place)", &xi, &d1, 1e-6, 1e-5);
    /* add, add_backward, fill, dropout: exact. */
    OK(im_op_add(ref, &x, &dy, &y1));
    OK(im_op_add(cpu, &x, &dy, &y2));
    cmp("add", "y", &y2, &y1, 0, 0);
    OK(im_tensor_copy(&xi, &x));
    OK(im_op_add(cpu, &xi, &dy, &xi));
    cmp("add", "y (in place)", &xi, &y1, 0, 0);
    OK(im_op_add_backward(cpu, &dy, &d1, &d2));
    cmp("add_backward", "dx1", &d1, &dy, 0, 0);
    cmp("add_backward", "dx2", &d2, &dy, 0, 0);
    OK(im_op_fill(cpu, &d1, 0.25f));
    im_tensor_fill_f32(&d2, 0.25f);
    cmp("fill", "t", &d1, &d2, 0, 0);
    im_tensor_t m1 = mk(IM_U8, 1, &n), m2 = mk(IM_U8, 1, &n);
    im_rng_t r1, r2;
    im_rng_seed(&r1, 7 + (uint64_t)n);
    r2 = r1;
    OK(im_op_dropout_forward(ref, 0.3f, &r1, &x, &y1, &m1));
    OK(im_op_dropout_forward(cpu, 0.3f, &r2, &x, &y2, &m2));
    cmp("dropout_forward", "mask", &m2, &m1, 0, 0);
    cmp("dropout_forward", "y", &y2, &y1, 0, 0);
    OK(im_op_dropout_backward(ref, 0.3f, &m1, &dy, &d1));
    OK(im_op_dropout_backward(cpu, 0.3f, &m1, &dy, &d2));
    cmp("dropout_backward", "dx", &d2, &d1, 0, 0);
    freet(&x), freet(&dy), freet(&y1), freet(&y2), freet(&d1), freet(&d2), freet(&xi), freet(&m1), freet(&m2);
  }
}

/* ---- pooling ---- */

typedef struct {
  int64_t N, C, H, W;
  int kh, kw, sh, sw, ph, pw;
} pool_case_t;

static const pool_case_t pool_cases[] = {
    {2, 3, 8, 8, 2, 2, 2, 2, 0, 0},     /* 2x2 stride 2 */
    {3, 2, 7, 5, 3, 3, 2, 2, 1, 1},     /* 3x3 stride 2 pad 1 on odd sizes (resnet) */
    {1, 4, 9, 7, 3, 3, 1, 1, 1, 1},     /* stride 1 */
    {2, 2, 6, 9, 2, 2, 1, 1, 0, 0},     /* overlapping windows */
    {1, 3, 10, 11, 3, 3, 3, 3, 1, 1},   /* stride 3, sizes not divisible */
    {2, 3, 8, 9, 1, 3, 2, 1, 0, 1},     /* 1x3 window, strides 2x1 */
    {1, 2, 5, 5, 5, 5, 1, 1, 2, 2},     /* window as large as the image */
    {3, 64, 56, 56, 3, 3, 2, 2, 1, 1},  /* realistic: resnet18 stem pool at 112 */
    {3, 32, 56, 56, 2, 2, 2, 2, 0, 0},  /* realistic: SurfaceCNN pool */
};

static void run_pool_case(const pool_case_t *pc) {
  for (int ex = 0; ex < 2; ex++) {
    const im_pool2d_params_t p = {pc->kh, pc->kw, pc->sh, pc->sw, pc->ph, pc->pw, ex};
    const int64_t xs[4] = {pc->N, pc->C, pc->H, pc->W};
    int64_t ys[4];
    OK(im_pool2d_output_shape(&p, xs, ys));
    im_tensor_t x = mk_rnd(4, xs), dy = mk_rnd(4, ys);
    /* Ties (values on a coarse grid), and where there is room a NaN, an infinity and a row of -inf. */
    float *xd = x.data;
    const int64_t n = im_tensor_numel(&x);
    for (int64_t i = 0; i < n; i++) xd[i] = roundf(xd[i] * 3.0f);
    if (ex == 1 && n > 40) {
      xd[5] = NAN, xd[17] = INFINITY, xd[n - 3] = NAN;
      for (int64_t i = 0; i < pc->W; i++) xd[pc->W + i] = -INFINITY;
    }
    im_tensor_t y1 = mk(IM_F32, 4, ys), y2 = mk(IM_F32, 4, ys), i1 = mk(IM_I32, 4, ys), i2 = mk(IM_I32, 4, ys);
    im_tensor_t dx1 = mk(IM_F32, 4, xs), dx2 = mk(IM_F32, 4, xs);
    rnd(&dx2);
    OK(im_op_maxpool2d_forward(ref, &p, &x, &y1, &i1));
    OK(im_op_maxpool2d_forward(cpu, &p, &x, &y2, &i2));
    cmp("maxpool2d_forward", "y", &y2, &y1, 0, 0);
    cmp("maxpool2d_forward", "indices", &i2, &i1, 0, 0);
    OK(im_op_maxpool2d_forward(cpu, &p, &x, &y2, NULL));
    cmp("maxpool2d_forward", "y (no indices)", &y2, &y1, 0, 0);
    OK(im_op_maxpool2d_backward(ref, &p, &dy, &i1, &dx1));
    OK(im_op_maxpool2d_backward(cpu, &p, &dy, &i1, &dx2));
    cmp("maxpool2d_backward", "dx", &dx2, &dx1, 0, 0);
    /* Average pooling on finite data. */
    rnd(&x);
    OK(im_op_avgpool2d_forward(ref, &p, &x, &y1));
    OK(im_op_avgpool2d_forward(cpu, &p, &x, &y2));
    cmp("avgpool2d_forward", "y", &y2, &y1, 1e-6, 1e-5);
    rnd(&dx2);
    OK(im_op_avgpool2d_backward(ref, &p, &dy, &dx1));
    OK(im_op_avgpool2d_backward(cpu, &p, &dy, &dx2));
    cmp("avgpool2d_backward", "dx", &dx2, &dx1, 1e-6, 1e-5);
    freet(&x), freet(&dy), freet(&y1), freet(&y2), freet(&i1), freet(&i2), freet(&dx1), freet(&dx2);
  }
}

static void test_pool(void **state) {
  for (size_t i = 0; i < sizeof pool_cases / sizeof *pool_cases; i++) run_pool_case(&pool_cases[i]);
  /* Global average pooling into [N,C] and [N,C,1,1]. */
  const int64_t xs[4] = {3, 5, 7, 5}, y2s[2] = {3, 5}, y4s[4] = {3, 5, 1, 1};
  im_tensor_t x = mk_rnd(4, xs), a = mk(IM_F32, 2, y2s), b = mk(IM_F32, 4, y4s), dx1 = mk(IM_F32, 4, xs),
              dx2 = mk(IM_F32, 4, xs);
  OK(im_op_global_avgpool_forward(ref, &x, &a));
  OK(im_op_global_avgpool_forward(cpu, &x, &b));
  cmp("global_avgpool_forward", "y", &b, &a, 1e-7, 1e-6);
  OK(im_op_global_avgpool_backward(ref, &a, &dx1));
  OK(im_op_global_avgpool_backward(cpu, &b, &dx2));
  cmp("global_avgpool_backward", "dx", &dx2, &dx1, 0, 0);
  freet(&x), freet(&a), freet(&b), freet(&dx1), freet(&dx2);
}

/* ---- linear ---- */

static void run_linear_case(int ndim, const int64_t *xs, int64_t out, int with_bias) {
  const int64_t in = xs[ndim - 1], ws[2] = {out, in}, bs[1] = {out};
  int64_t ys[4];
  memcpy(ys, xs, sizeof(int64_t) * (size_t)ndim);
  ys[ndim - 1] = out;
  int64_t M = 1;
  for (int i = 0; i < ndim - 1; i++) M *= xs[i];
  im_tensor_t x = mk_rnd(ndim, xs), w = mk_rnd(2, ws), bias = mk_rnd(1, bs), dy = mk_rnd(ndim, ys);
  im_tensor_t y1 = mk(IM_F32, ndim, ys), y2 = mk(IM_F32, ndim, ys), dx1 = mk(IM_F32, ndim, xs),
              dx2 = mk(IM_F32, ndim, xs), dw1 = mk_rnd(2, ws), dw2 = clone(&dw1), db1 = mk_rnd(1, bs),
              db2 = clone(&db1);
  rnd(&y2);
  OK(im_op_linear_forward(ref, &x, &w, with_bias ? &bias : NULL, &y1));
  OK(im_op_linear_forward(cpu, &x, &w, with_bias ? &bias : NULL, &y2));
  cmp("linear_forward", "y", &y2, &y1, conv_atol(in), 1e-5);
  OK(im_op_linear_backward_data(ref, &dy, &w, &dx1));
  OK(im_op_linear_backward_data(cpu, &dy, &w, &dx2));
  cmp("linear_backward_data", "dx", &dx2, &dx1, conv_atol(out), 1e-5);
  OK(im_op_linear_backward_weight(ref, &x, &dy, &dw1, with_bias ? &db1 : NULL));
  OK(im_op_linear_backward_weight(cpu, &x, &dy, &dw2, with_bias ? &db2 : NULL));
  cmp("linear_backward_weight", "dw", &dw2, &dw1, conv_atol(M), 1e-5);
  cmp("linear_backward_weight", "dbias", &db2, &db1, conv_atol(M), 1e-5);
  freet(&x), freet(&w), freet(&bias), freet(&dy), freet(&y1), freet(&y2), freet(&dx1), freet(&dx2);
  freet(&dw1), freet(&dw2), freet(&db1), freet(&db2);
}

static void test_linear(void **state) {
  run_linear_case(2, (const int64_t[]){7, 13}, 5, 1);
  run_linear_case(3, (const int64_t[]){2, 3, 17}, 9, 0);
  run_linear_case(2, (const int64_t[]){64, 512}, 10, 1);
  run_linear_case(2, (const int64_t[]){1, 128}, 2, 1);
  run_linear_case(4, (const int64_t[]){2, 7, 7, 96}, 384, 1); /* ConvNeXt MLP */
  run_linear_case(2, (const int64_t[]){3, 100}, 130, 1);      /* dbias over more than one 64-block */
}

/* ---- layout, loss (reference fallback), backend facts ---- */

static void test_layout_and_fallback(void **state) {
  const int64_t xs[4] = {3, 5, 7, 4}, hs[4] = {3, 7, 4, 5};
  im_tensor_t x = mk_rnd(4, xs), h1 = mk(IM_F32, 4, hs), h2 = mk(IM_F32, 4, hs), b1 = mk(IM_F32, 4, xs);
  OK(im_op_nchw_to_nhwc(ref, &x, &h1));
  OK(im_op_nchw_to_nhwc(cpu, &x, &h2));
  cmp("nchw_to_nhwc", "y", &h2, &h1, 0, 0);
  OK(im_op_nhwc_to_nchw(cpu, &h2, &b1));
  cmp("nhwc_to_nchw", "y", &b1, &x, 0, 0);
  im_tensor_t u = mk(IM_U8, 4, xs), uh1 = mk(IM_U8, 4, hs), uh2 = mk(IM_U8, 4, hs), i = mk(IM_I32, 4, xs),
              ih1 = mk(IM_I32, 4, hs), ih2 = mk(IM_I32, 4, hs);
  for (int64_t k = 0; k < im_tensor_numel(&u); k++) {
    ((uint8_t *)u.data)[k] = (uint8_t)(k * 7);
    ((int32_t *)i.data)[k] = (int32_t)(k * 104729 - 5000000);
  }
  OK(im_op_nchw_to_nhwc(ref, &u, &uh1));
  OK(im_op_nchw_to_nhwc(cpu, &u, &uh2));
  cmp("nchw_to_nhwc", "y (U8)", &uh2, &uh1, 0, 0);
  OK(im_op_nchw_to_nhwc(ref, &i, &ih1));
  OK(im_op_nchw_to_nhwc(cpu, &i, &ih2));
  cmp("nchw_to_nhwc", "y (I32)", &ih2, &ih1, 0, 0);
  /* Softmax cross-entropy is not accelerated: the cpu handle runs the reference kernel. */
  const int64_t ls[2] = {4, 3}, ns[1] = {4}, one[1] = {1};
  im_tensor_t logits = mk_rnd(2, ls), labels = mk(IM_I32, 1, ns), l1 = mk(IM_F32, 1, one), l2 = mk(IM_F32, 1, one),
              g1 = mk(IM_F32, 2, ls), g2 = mk(IM_F32, 2, ls);
  for (int k = 0; k < 4; k++) ((int32_t *)labels.data)[k] = k % 3;
  const im_xent_params_t xp = {0.1f};
  OK(im_op_softmax_xent_forward(ref, &xp, &logits, &labels, &l1, NULL));
  OK(im_op_softmax_xent_forward(cpu, &xp, &logits, &labels, &l2, NULL));
  cmp("softmax_xent (ref fallback)", "loss", &l2, &l1, 0, 0);
  OK(im_op_softmax_xent_backward(ref, &xp, &logits, &labels, &g1));
  OK(im_op_softmax_xent_backward(cpu, &xp, &logits, &labels, &g2));
  cmp("softmax_xent (ref fallback)", "dlogits", &g2, &g1, 0, 0);
  assert_string_equal(im_backend_name(cpu), "cpu");
  for (int op = 0; op < IM_OP_COUNT_; op++) assert_int_equal(im_backend_supports(cpu, (im_op_t)op), 1);
  OK(im_backend_sync(cpu));
  /* Argument checks happen before the backend: a bad shape is refused and nothing is written. */
  im_tensor_t bad = mk(IM_F32, 4, hs);
  assert_int_equal(im_op_relu_forward(cpu, &x, &bad), IM_ERR_ARG);
  freet(&x), freet(&h1), freet(&h2), freet(&b1), freet(&u), freet(&uh1), freet(&uh2), freet(&i), freet(&ih1);
  freet(&ih2), freet(&logits), freet(&labels), freet(&l1), freet(&l2), freet(&g1), freet(&g2), freet(&bad);
  im_backend_free(NULL);
}

/* A training-step-like sequence on one handle: every op's plan is cached and reused, and
 * the results do not depend on what ran before (the shared workspace is rebound each call). */
static void test_interleaved(void **state) {
  const im_conv2d_params_t p1 = {1, 1, 1, 1, 1, 1, 1}, p2 = {2, 2, 0, 0, 1, 1, 1};
  const int64_t xs[4] = {3, 8, 12, 10}, w1s[4] = {16, 8, 3, 3}, w2s[4] = {4, 16, 1, 1};
  int64_t y1s[4], y2s[4];
  OK(im_conv2d_output_shape(&p1, xs, w1s, y1s));
  OK(im_conv2d_output_shape(&p2, y1s, w2s, y2s));
  im_tensor_t x = mk_rnd(4, xs), w1 = mk_rnd(4, w1s), w2 = mk_rnd(4, w2s);
  im_tensor_t a[2], c[2];
  im_backend_t *bs[2] = {ref, cpu};
  for (int k = 0; k < 2; k++) {
    a[k] = mk(IM_F32, 4, y1s), c[k] = mk(IM_F32, 4, y2s);
    for (int step = 0; step < 3; step++) {
      OK(im_op_conv2d_forward(bs[k], &p1, &x, &w1, NULL, &a[k]));
      OK(im_op_relu_forward(bs[k], &a[k], &a[k]));
      OK(im_op_conv2d_forward(bs[k], &p2, &a[k], &w2, NULL, &c[k]));
    }
  }
  cmp("interleaved conv/relu/conv", "y", &c[1], &c[0], conv_atol(16 * 9 + 16), 1e-5);
  freet(&x), freet(&w1), freet(&w2), freet(&a[0]), freet(&a[1]), freet(&c[0]), freet(&c[1]);
}

/* ---- the blocked layout (nChw16c) ---- */

/* A blocked copy of plain t (through im_op_relayout), and back. */
static im_tensor_t blk(const im_tensor_t *t) {
  im_tensor_t b = mk(t->dtype, t->ndim, t->shape);
  b.layout = IM_LAYOUT_NCHW16C;
  OK(im_op_relayout(cpu, t, &b));
  return b;
}

static im_tensor_t unblk(const im_tensor_t *b) {
  im_tensor_t t = mk(b->dtype, b->ndim, b->shape);
  OK(im_op_relayout(cpu, b, &t));
  return t;
}

/* got (blocked or plain) against the plain result want, after converting got to plain. */
static void cmp_any(const char *op, const char *what, const im_tensor_t *got, const im_tensor_t *want, double atol,
                    double rtol) {
  if (got->layout == IM_LAYOUT_PLAIN) {
    cmp(op, what, got, want, atol, rtol);
    return;
  }
  im_tensor_t p = unblk(got);
  cmp(op, what, &p, want, atol, rtol);
  freet(&p);
}

static im_tensor_t like_layout(const im_tensor_t *t, int blocked) {
  im_tensor_t r = mk(t->dtype, t->ndim, t->shape);
  if (blocked) r.layout = IM_LAYOUT_NCHW16C;
  return r;
}

/* Convolutions with x and y (dx and dy) blocked or plain in every combination the channel counts
 * allow, against the all-plain cpu results (the same kernels but for the layout). */
static void test_blocked_conv(void **state) {
  static const conv_case_t cases[] = {
      {2, 16, 9, 9, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1},    /* Winograd-eligible */
      {2, 32, 10, 11, 16, 3, 3, 2, 2, 1, 1, 1, 1, 1},  /* stride 2 */
      {2, 3, 17, 17, 16, 3, 3, 2, 2, 1, 1, 1, 1, 1},   /* a stem: only y can be blocked */
      {1, 64, 14, 14, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1},  /* resnet-like */
      {2, 32, 8, 8, 64, 1, 1, 2, 2, 0, 0, 1, 1, 1},    /* 1x1 downsample */
  };
  for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
    const conv_case_t *cc = &cases[ci];
    const im_conv2d_params_t p = {cc->sh, cc->sw, cc->ph, cc->pw, cc->dh, cc->dw, cc->g};
    const int64_t xs[4] = {cc->N, cc->C, cc->H, cc->W}, ws[4] = {cc->K, cc->C, cc->R, cc->S}, bs[1] = {cc->K};
    int64_t ys[4];
    OK(im_conv2d_output_shape(&p, xs, ws, ys));
    im_tensor_t x = mk_rnd(4, xs), w = mk_rnd(4, ws), bias = mk_rnd(1, bs), dy = mk_rnd(4, ys);
    im_tensor_t y0 = mk(IM_F32, 4, ys), dx0 = mk(IM_F32, 4, xs), dw0 = mk(IM_F32, 4, ws), db0 = mk(IM_F32, 1, bs);
    OK(im_op_conv2d_forward_fused(cpu, &p, &x, &w, &bias, IM_ACT_RELU, &y0));
    OK(im_op_conv2d_backward_data(cpu, &p, &dy, &w, &dx0));
    OK(im_op_conv2d_backward_weight(cpu, &p, &x, &dy, &dw0, &db0));
    const double atol = conv_atol(cc->C * cc->R * cc->S + cc->N * ys[2] * ys[3]);
    for (int combo = 1; combo < 4; combo++) {
      const int xb = combo & 1, yb = (combo >> 1) & 1;
      if (xb && cc->C % 16) continue;
      im_tensor_t xi = xb ? blk(&x) : clone(&x), dyi = yb ? blk(&dy) : clone(&dy);
      im_tensor_t y = like_layout(&y0, yb), dx = like_layout(&dx0, xb), dw = mk(IM_F32, 4, ws),
                  db = mk(IM_F32, 1, bs);
      OK(im_op_conv2d_forward_fused(cpu, &p, &xi, &w, &bias, IM_ACT_RELU, &y));
      cmp_any("blocked conv2d_forward", "y", &y, &y0, atol, 1e-5);
      OK(im_op_conv2d_backward_data(cpu, &p, &dyi, &w, &dx));
      cmp_any("blocked conv2d_backward_data", "dx", &dx, &dx0, atol, 1e-5);
      OK(im_op_conv2d_backward_weight(cpu, &p, &xi, &dyi, &dw, &db));
      cmp("blocked conv2d_backward_weight", "dw", &dw, &dw0, atol, 1e-5);
      cmp("blocked conv2d_backward_weight", "dbias", &db, &db0, atol, 1e-5);
      freet(&xi), freet(&dyi), freet(&y), freet(&dx), freet(&dw), freet(&db);
    }
    freet(&x), freet(&w), freet(&bias), freet(&dy), freet(&y0), freet(&dx0), freet(&dw0), freet(&db0);
  }
}

/* Batch norm, max pooling, global average pooling, ReLU and add on blocked tensors against the
 * reference on plain ones; max pooling (values, indices, NaN) and the element-wise ops exactly. */
static void test_blocked_ops(void **state) {
  const int64_t xs[4] = {3, 32, 9, 11}, cs[1] = {32}, gs[2] = {3, 32};
  im_tensor_t x = mk_rnd(4, xs), dy = mk_rnd(4, xs), gam = mk_rnd(1, cs), bet = mk_rnd(1, cs);
  ((float *)x.data)[5] = NAN;
  ((float *)x.data)[100] = -INFINITY;
  im_tensor_t xb = blk(&x), dyb = blk(&dy);
  { /* relayout round trip, on either backend (host memory) */
    im_tensor_t back = mk(IM_F32, 4, xs);
    OK(im_op_relayout(ref, &xb, &back));
    cmp("relayout", "round trip", &back, &x, 0, 0);
    freet(&back);
  }
  /* max pooling */
  static const im_pool2d_params_t pools[] = {{3, 3, 2, 2, 1, 1, 0}, {2, 2, 2, 2, 0, 0, 0}, {3, 3, 1, 1, 1, 1, 0}};
  for (int pi = 0; pi < 3; pi++) {
    int64_t ys[4];
    OK(im_pool2d_output_shape(&pools[pi], xs, ys));
    im_tensor_t y1 = mk(IM_F32, 4, ys), i1 = mk(IM_I32, 4, ys), y2 = like_layout(&y1, 1), i2 = like_layout(&i1, 1);
    OK(im_op_maxpool2d_forward(ref, &pools[pi], &x, &y1, &i1));
    OK(im_op_maxpool2d_forward(cpu, &pools[pi], &xb, &y2, &i2));
    cmp_any("blocked maxpool2d_forward", "y", &y2, &y1, 0, 0);
    cmp_any("blocked maxpool2d_forward", "indices", &i2, &i1, 0, 0);
    im_tensor_t g = mk_rnd(4, ys), gb = blk(&g), dx1 = mk(IM_F32, 4, xs), dx2 = like_layout(&dx1, 1);
    OK(im_op_maxpool2d_backward(ref, &pools[pi], &g, &i1, &dx1));
    OK(im_op_maxpool2d_backward(cpu, &pools[pi], &gb, &i2, &dx2));
    cmp_any("blocked maxpool2d_backward", "dx", &dx2, &dx1, 1e-6, 1e-6);
    freet(&y1), freet(&i1), freet(&y2), freet(&i2), freet(&g), freet(&gb), freet(&dx1), freet(&dx2);
  }
  ((float *)x.data)[5] = 0.5f; /* the statistics below want finite data */
  ((float *)x.data)[100] = -0.5f;
  freet(&xb);
  xb = blk(&x);
  /* batch norm: train, eval, backward */
  const im_batchnorm_params_t bp = {1e-5f, 0.1f};
  im_tensor_t rm1 = mk_rnd(1, cs), rv1 = mk(IM_F32, 1, cs), sm1 = mk(IM_F32, 1, cs), si1 = mk(IM_F32, 1, cs);
  im_tensor_fill_f32(&rv1, 1.5f);
  im_tensor_t rm2 = clone(&rm1), rv2 = clone(&rv1), sm2 = mk(IM_F32, 1, cs), si2 = mk(IM_F32, 1, cs);
  im_tensor_t y1 = mk(IM_F32, 4, xs), y2 = like_layout(&y1, 1);
  OK(im_op_batchnorm_forward_train(ref, &bp, &x, &gam, &bet, &rm1, &rv1, &y1, &sm1, &si1));
  OK(im_op_batchnorm_forward_train(cpu, &bp, &xb, &gam, &bet, &rm2, &rv2, &y2, &sm2, &si2));
  cmp_any("blocked batchnorm_forward_train", "y", &y2, &y1, 1e-5, 1e-5);
  cmp("blocked batchnorm_forward_train", "running_mean", &rm2, &rm1, 1e-6, 1e-5);
  cmp("blocked batchnorm_forward_train", "running_var", &rv2, &rv1, 1e-6, 1e-5);
  cmp("blocked batchnorm_forward_train", "save_invstd", &si2, &si1, 1e-6, 1e-5);
  { /* BN + ReLU in one pass (training), blocked and plain, against the reference's bn then relu */
    im_tensor_t r1 = clone(&rm1), v1 = clone(&rv1), r2 = clone(&rm1), v2 = clone(&rv1), r3 = clone(&rm1),
                v3 = clone(&rv1), s1 = mk(IM_F32, 1, cs), s2 = mk(IM_F32, 1, cs), s3 = mk(IM_F32, 1, cs),
                i1 = mk(IM_F32, 1, cs), i2 = mk(IM_F32, 1, cs), i3 = mk(IM_F32, 1, cs), f1 = mk(IM_F32, 4, xs),
                f2 = like_layout(&f1, 1), f3 = mk(IM_F32, 4, xs);
    OK(im_op_batchnorm_forward_train(ref, &bp, &x, &gam, &bet, &r1, &v1, &f1, &s1, &i1));
    OK(im_op_relu_forward(ref, &f1, &f1));
    OK(im_op_batchnorm_forward_train_fused(cpu, &bp, &xb, &gam, &bet, &r2, &v2, IM_ACT_RELU, &f2, &s2, &i2));
    OK(im_op_batchnorm_forward_train_fused(cpu, &bp, &x, &gam, &bet, &r3, &v3, IM_ACT_RELU, &f3, &s3, &i3));
    cmp_any("batchnorm_forward_train_fused", "y (blocked)", &f2, &f1, 1e-5, 1e-5);
    cmp("batchnorm_forward_train_fused", "y (plain)", &f3, &f1, 1e-5, 1e-5);
    cmp("batchnorm_forward_train_fused", "running_var", &v2, &v1, 1e-6, 1e-5);
    cmp("batchnorm_forward_train_fused", "save_invstd", &i3, &i1, 1e-6, 1e-5);
    assert_int_equal(im_op_batchnorm_forward_train_fused(cpu, &bp, &x, &gam, &bet, &r3, &v3, (im_act_t)7, &f3, &s3,
                                                         &i3),
                     IM_ERR_ARG);
    freet(&r1), freet(&v1), freet(&r2), freet(&v2), freet(&r3), freet(&v3), freet(&s1), freet(&s2), freet(&s3);
    freet(&i1), freet(&i2), freet(&i3), freet(&f1), freet(&f2), freet(&f3);
  }
  OK(im_op_batchnorm_forward_eval(ref, &bp, &x, &gam, &bet, &rm1, &rv1, &y1));
  OK(im_op_batchnorm_forward_eval(cpu, &bp, &xb, &gam, &bet, &rm1, &rv1, &y2));
  cmp_any("blocked batchnorm_forward_eval", "y", &y2, &y1, 1e-6, 1e-5);
  im_tensor_t dx1 = mk(IM_F32, 4, xs), dx2 = like_layout(&dx1, 1), dg1 = mk_rnd(1, cs), dg2 = clone(&dg1),
              db1 = mk_rnd(1, cs), db2 = clone(&db1);
  OK(im_op_batchnorm_backward(ref, &x, &dy, &gam, &sm1, &si1, &dx1, &dg1, &db1));
  OK(im_op_batchnorm_backward(cpu, &xb, &dyb, &gam, &sm2, &si2, &dx2, &dg2, &db2));
  cmp_any("blocked batchnorm_backward", "dx", &dx2, &dx1, 1e-5, 1e-4);
  cmp("blocked batchnorm_backward", "dgamma", &dg2, &dg1, 1e-4, 1e-4);
  cmp("blocked batchnorm_backward", "dbeta", &db2, &db1, 1e-4, 1e-4);
  /* global average pooling */
  im_tensor_t g1 = mk(IM_F32, 2, gs), g2 = mk(IM_F32, 2, gs), gg = mk_rnd(2, gs);
  OK(im_op_global_avgpool_forward(ref, &x, &g1));
  OK(im_op_global_avgpool_forward(cpu, &xb, &g2));
  cmp("blocked global_avgpool_forward", "y", &g2, &g1, 1e-6, 1e-6);
  OK(im_op_global_avgpool_backward(ref, &gg, &dx1));
  OK(im_op_global_avgpool_backward(cpu, &gg, &dx2));
  cmp_any("blocked global_avgpool_backward", "dx", &dx2, &dx1, 0, 0);
  /* ReLU and add, in place as the planner runs them */
  OK(im_op_relu_forward(ref, &x, &y1));
  OK(im_op_relu_forward(cpu, &xb, &y2));
  cmp_any("blocked relu_forward", "y", &y2, &y1, 0, 0);
  OK(im_op_add(ref, &y1, &dy, &y1));
  OK(im_op_add(cpu, &y2, &dyb, &y2));
  cmp_any("blocked add", "y", &y2, &y1, 0, 0);
  /* what is refused, touching nothing */
  im_tensor_t small = mk(IM_F32, 4, (int64_t[]){1, 8, 4, 4}), smallb = small;
  smallb.layout = IM_LAYOUT_NCHW16C;
  assert_int_equal(im_op_relu_forward(cpu, &smallb, &smallb), IM_ERR_ARG);          /* 8 channels */
  assert_int_equal(im_op_relu_forward(ref, &xb, &y2), IM_ERR_ARG);                  /* ref: plain only */
  assert_int_equal(im_op_relu_forward(cpu, &xb, &y1), IM_ERR_ARG);                  /* mixed layouts */
  assert_int_equal(im_op_batchnorm_forward_eval(cpu, &bp, &x, &gam, &bet, &rm1, &rv1, &y2), IM_ERR_ARG);
  assert_int_equal(im_op_gelu_forward(cpu, &xb, &y2), IM_ERR_ARG);                  /* no blocked kernel */
  im_tensor_t bad_g = gam;
  bad_g.layout = IM_LAYOUT_NCHW16C; /* per-channel vectors are plain */
  assert_int_equal(im_op_batchnorm_forward_eval(cpu, &bp, &xb, &bad_g, &bet, &rm1, &rv1, &y2), IM_ERR_ARG);
  assert_int_equal(im_backend_blocked_ok(cpu), 1);
  assert_int_equal(im_backend_blocked_ok(ref), 0);
  freet(&x), freet(&dy), freet(&gam), freet(&bet), freet(&xb), freet(&dyb), freet(&rm1), freet(&rv1), freet(&sm1);
  freet(&si1), freet(&rm2), freet(&rv2), freet(&sm2), freet(&si2), freet(&y1), freet(&y2), freet(&dx1), freet(&dx2);
  freet(&dg1), freet(&dg2), freet(&db1), freet(&db2), freet(&g1), freet(&g2), freet(&gg), freet(&small);
}

/* Batch norm's backward with a fused ReLU (batchnorm_backward_fused) on x of shape xs, plain or blocked,
 * against the reference's relu_backward then batchnorm_backward on plain tensors; the reference's own
 * fused kernel must give exactly that. y (the ReLU's output) has zeros, -0, negatives and a NaN, and dy
 * a NaN where y masks it. With IM_ACT_NONE the op is batchnorm_backward. */
static void run_bn_backward_fused(int ndim, const int64_t *xs, int affine, int blocked) {
  const char *op = blocked ? "blocked batchnorm_bwd_fused" : "batchnorm_backward_fused";
  const im_batchnorm_params_t p = {1e-5f, 0.1f};
  const int64_t C = xs[1], cs[1] = {C};
  int64_t red = xs[0];
  for (int i = 2; i < ndim; i++) red *= xs[i];
  const double atol_c = blocked ? 1e-4 : 2e-6 * sqrt((double)red) + 1e-6, rtol_c = blocked ? 1e-4 : 1e-5;
  im_tensor_t x = mk_rnd(ndim, xs), dy = mk_rnd(ndim, xs), gamma = mk_rnd(1, cs), beta = mk_rnd(1, cs);
  float *xd = x.data;
  for (int64_t i = 0; i < im_tensor_numel(&x); i++) xd[i] = xd[i] * (float)(0.5 + i % 3) + (float)(i % 5) - 2.0f;
  im_tensor_t rm = mk_rnd(1, cs), rv = mk(IM_F32, 1, cs), sm = mk(IM_F32, 1, cs), si = mk(IM_F32, 1, cs),
              y = mk(IM_F32, ndim, xs);
  im_tensor_fill_f32(&rv, 1.5f);
  const im_tensor_t *g = affine ? &gamma : NULL;
  OK(im_op_batchnorm_forward_train_fused(ref, &p, &x, g, &beta, &rm, &rv, IM_ACT_RELU, &y, &sm, &si));
  float *yd = y.data, *dyd = dy.data;
  const int64_t n = im_tensor_numel(&y);
  yd[0] = 0.0f, yd[1 % n] = NAN, yd[2 % n] = -0.0f, yd[n / 2] = -0.25f, yd[n - 1] = 1e-30f;
  im_tensor_t xi = blocked ? blk(&x) : clone(&x), yi = blocked ? blk(&y) : clone(&y);
  im_tensor_t dx1 = mk(IM_F32, ndim, xs), dx2 = like_layout(&dx1, blocked), dg1 = mk_rnd(1, cs), dg2 = clone(&dg1),
              db1 = mk_rnd(1, cs), db2 = clone(&db1), t = mk(IM_F32, ndim, xs);
  /* IM_ACT_NONE: batchnorm_backward (dy finite here) */
  im_tensor_t dyi = blocked ? blk(&dy) : clone(&dy);
  OK(im_op_batchnorm_backward(ref, &x, &dy, g, &sm, &si, &dx1, &dg1, &db1));
  OK(im_op_batchnorm_backward_fused(cpu, &xi, &yi, IM_ACT_NONE, &dyi, g, &sm, &si, &dx2, &dg2, &db2));
  cmp_any(op, "dx (none)", &dx2, &dx1, 2e-5, 1e-4);
  cmp(op, "dgamma (none)", &dg2, &dg1, atol_c, rtol_c);
  cmp(op, "dbeta (none)", &db2, &db1, atol_c, rtol_c);
  /* IM_ACT_RELU: dy is NaN where y is 0 and where y is NaN, which the mask drops */
  dyd[0] = NAN, dyd[1 % n] = NAN;
  freet(&dyi);
  dyi = blocked ? blk(&dy) : clone(&dy);
  OK(im_op_relu_backward(ref, &y, &dy, &t));
  OK(im_op_batchnorm_backward(ref, &x, &t, g, &sm, &si, &dx1, &dg1, &db1));
  for (int64_t i = 0; i < C; i++) assert_false(isnan(((float *)dg1.data)[i]) || isnan(((float *)db1.data)[i]));
  OK(im_op_batchnorm_backward_fused(cpu, &xi, &yi, IM_ACT_RELU, &dyi, g, &sm, &si, &dx2, &dg2, &db2));
  cmp_any(op, "dx", &dx2, &dx1, 2e-5, 1e-4);
  cmp(op, "dgamma", &dg2, &dg1, atol_c, rtol_c);
  cmp(op, "dbeta", &db2, &db1, atol_c, rtol_c);
  OK(im_op_batchnorm_backward_fused(cpu, &xi, &yi, IM_ACT_RELU, &dyi, g, &sm, &si, &dx2, NULL, NULL));
  cmp_any(op, "dx (no parameter gradients)", &dx2, &dx1, 2e-5, 1e-4);
  if (!blocked) { /* the reference's fused kernel is the composition, to the bit */
    im_tensor_t dx0 = mk(IM_F32, ndim, xs), dg0 = clone(&dg1), db0 = clone(&db1);
    OK(im_op_batchnorm_backward(ref, &x, &t, g, &sm, &si, &dx1, &dg1, &db1));
    OK(im_op_batchnorm_backward_fused(ref, &x, &y, IM_ACT_RELU, &dy, g, &sm, &si, &dx0, &dg0, &db0));
    cmp("batchnorm_backward_fused (ref)", "dx", &dx0, &dx1, 0, 0);
    cmp("batchnorm_backward_fused (ref)", "dgamma", &dg0, &dg1, 0, 0);
    cmp("batchnorm_backward_fused (ref)", "dbeta", &db0, &db1, 0, 0);
    freet(&dx0), freet(&dg0), freet(&db0);
  }
  freet(&x), freet(&dy), freet(&gamma), freet(&beta), freet(&rm), freet(&rv), freet(&sm), freet(&si), freet(&y);
  freet(&xi), freet(&yi), freet(&dyi), freet(&dx1), freet(&dx2), freet(&dg1), freet(&dg2), freet(&db1), freet(&db2);
  freet(&t);
}

static void test_batchnorm_backward_fused(void **state) {
  run_bn_backward_fused(4, (const int64_t[]){3, 5, 7, 5}, 1, 0);
  run_bn_backward_fused(4, (const int64_t[]){2, 17, 1, 1}, 0, 0);
  run_bn_backward_fused(2, (const int64_t[]){9, 8}, 1, 0);
  run_bn_backward_fused(3, (const int64_t[]){3, 6, 10}, 1, 0);
  run_bn_backward_fused(4, (const int64_t[]){3, 64, 28, 28}, 1, 0);
  run_bn_backward_fused(4, (const int64_t[]){3, 32, 9, 11}, 1, 1);
  run_bn_backward_fused(4, (const int64_t[]){2, 16, 5, 3}, 0, 1);
  run_bn_backward_fused(4, (const int64_t[]){2, 64, 28, 28}, 1, 1);
  /* what is refused, touching nothing */
  const int64_t xs[4] = {2, 16, 3, 3}, cs[1] = {16};
  im_tensor_t x = mk_rnd(4, xs), y = mk_rnd(4, xs), dy = mk_rnd(4, xs), sm = mk_rnd(1, cs), si = mk_rnd(1, cs),
              dx = mk_rnd(4, xs), keep = clone(&dx), odd = mk_rnd(4, (const int64_t[]){2, 16, 3, 4});
  im_tensor_t xb = blk(&x), dyb = blk(&dy), dxb = like_layout(&dx, 1);
  for (int k = 0; k < 2; k++) {
    im_backend_t *be = k ? ref : cpu;
    assert_int_equal(im_op_batchnorm_backward_fused(be, &x, &y, (im_act_t)7, &dy, NULL, &sm, &si, &dx, NULL, NULL),
                     IM_ERR_ARG);
    assert_int_equal(im_op_batchnorm_backward_fused(be, &x, NULL, IM_ACT_RELU, &dy, NULL, &sm, &si, &dx, NULL, NULL),
                     IM_ERR_ARG);
    assert_int_equal(im_op_batchnorm_backward_fused(be, &x, &dx, IM_ACT_RELU, &dy, NULL, &sm, &si, &dx, NULL, NULL),
                     IM_ERR_ARG); /* y is dx */
    assert_int_equal(im_op_batchnorm_backward_fused(be, &x, &dx, IM_ACT_NONE, &dy, NULL, &sm, &si, &dx, NULL, NULL),
                     IM_ERR_ARG); /* y is dx, even unread */
    assert_int_equal(im_op_batchnorm_backward_fused(be, &x, &odd, IM_ACT_RELU, &dy, NULL, &sm, &si, &dx, NULL, NULL),
                     IM_ERR_ARG); /* y's shape */
  }
  assert_int_equal(im_op_batchnorm_backward_fused(cpu, &xb, &y, IM_ACT_RELU, &dyb, NULL, &sm, &si, &dxb, NULL, NULL),
                   IM_ERR_ARG); /* y plain, the rest blocked */
  cmp("batchnorm_backward_fused", "dx untouched", &dx, &keep, 0, 0);
  freet(&x), freet(&y), freet(&dy), freet(&sm), freet(&si), freet(&dx), freet(&keep), freet(&odd), freet(&xb);
  freet(&dyb), freet(&dxb);
}

/* ---- the channels-last layout (NHWC) ---- */

static im_tensor_t in_layout(const im_tensor_t *t, im_layout_t l) {
  im_tensor_t r = mk(t->dtype, t->ndim, t->shape);
  r.layout = l;
  OK(im_op_relayout(cpu, t, &r));
  return r;
}

/* ConvNeXt's ops on channels-last tensors against the plain ones: depthwise 7x7, the 2x2/2
 * downsampling, a 4x4/4 stem from the plain image (which oneDNN only runs with its reference
 * kernel as asked, so the plan lets it choose and reorders), the per-channel scale (1x1 depthwise),
 * add, ReLU and global average pooling (exactly); and what is refused. */
static void test_channels_last(void **state) {
  static const conv_case_t cases[] = {
      {2, 40, 14, 14, 40, 7, 7, 1, 1, 3, 3, 1, 1, 40}, /* depthwise 7x7 */
      {2, 40, 14, 14, 80, 2, 2, 2, 2, 0, 0, 1, 1, 1},  /* downsampling */
      {2, 3, 32, 32, 40, 4, 4, 4, 4, 0, 0, 1, 1, 1},   /* stem: only y channels-last */
      {1, 40, 7, 7, 40, 1, 1, 1, 1, 0, 0, 1, 1, 40},   /* layer scale */
      {1, 32, 14, 14, 32, 3, 3, 1, 1, 1, 1, 1, 1, 1},  /* stamped: not Winograd, which takes no NHWC */
  };
  for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
    const conv_case_t *cc = &cases[ci];
    const im_conv2d_params_t p = {cc->sh, cc->sw, cc->ph, cc->pw, cc->dh, cc->dw, cc->g};
    const int64_t xs[4] = {cc->N, cc->C, cc->H, cc->W}, ws[4] = {cc->K, cc->C / cc->g, cc->R, cc->S},
                  bs[1] = {cc->K};
    int64_t ys[4];
    OK(im_conv2d_output_shape(&p, xs, ws, ys));
    im_tensor_t x = mk_rnd(4, xs), w = mk_rnd(4, ws), bias = mk_rnd(1, bs), dy = mk_rnd(4, ys);
    im_tensor_t y0 = mk(IM_F32, 4, ys), dx0 = mk(IM_F32, 4, xs), dw0 = mk(IM_F32, 4, ws), db0 = mk(IM_F32, 1, bs);
    OK(im_op_conv2d_forward(ref, &p, &x, &w, &bias, &y0));
    OK(im_op_conv2d_backward_data(ref, &p, &dy, &w, &dx0));
    OK(im_op_conv2d_backward_weight(ref, &p, &x, &dy, &dw0, &db0));
    const double atol = conv_atol(cc->C / cc->g * cc->R * cc->S + cc->N * ys[2] * ys[3]);
    const int x_cl = cc->C >= 16;
    im_tensor_t xi = x_cl ? in_layout(&x, IM_LAYOUT_NHWC) : clone(&x), dyi = in_layout(&dy, IM_LAYOUT_NHWC);
    im_tensor_t y = mk(IM_F32, 4, ys), dx = mk(IM_F32, 4, xs), dw = mk(IM_F32, 4, ws), db = mk(IM_F32, 1, bs);
    y.layout = IM_LAYOUT_NHWC;
    dx.layout = xi.layout;
    OK(im_op_conv2d_forward(cpu, &p, &xi, &w, &bias, &y));
    cmp_any("channels-last conv2d_forward", "y", &y, &y0, atol, 1e-5);
    w.stamp = im_tensor_stamp_new(); /* the inference kernels */
    OK(im_op_conv2d_forward(cpu, &p, &xi, &w, &bias, &y));
    cmp_any("channels-last conv2d_forward (stamped)", "y", &y, &y0, atol, 1e-5);
    w.stamp = 0;
    OK(im_op_conv2d_backward_data(cpu, &p, &dyi, &w, &dx));
    cmp_any("channels-last conv2d_backward_data", "dx", &dx, &dx0, atol, 1e-5);
    OK(im_op_conv2d_backward_weight(cpu, &p, &xi, &dyi, &dw, &db));
    cmp("channels-last conv2d_backward_weight", "dw", &dw, &dw0, atol, 1e-5);
    cmp("channels-last conv2d_backward_weight", "dbias", &db, &db0, atol, 1e-5);
    freet(&xi), freet(&dyi), freet(&y), freet(&dx), freet(&dw), freet(&db);
    freet(&x), freet(&w), freet(&bias), freet(&dy), freet(&y0), freet(&dx0), freet(&dw0), freet(&db0);
  }
  /* element-wise ops and global average pooling, exactly */
  const int64_t xs[4] = {3, 40, 5, 7}, gs[2] = {3, 40};
  im_tensor_t x = mk_rnd(4, xs), x2 = mk_rnd(4, xs), g = mk_rnd(2, gs);
  im_tensor_t xc = in_layout(&x, IM_LAYOUT_NHWC), x2c = in_layout(&x2, IM_LAYOUT_NHWC);
  im_tensor_t y1 = mk(IM_F32, 4, xs), y2 = mk(IM_F32, 4, xs), g1 = mk(IM_F32, 2, gs), g2 = mk(IM_F32, 2, gs);
  y2.layout = IM_LAYOUT_NHWC;
  OK(im_op_add(ref, &x, &x2, &y1));
  OK(im_op_add(cpu, &xc, &x2c, &y2));
  cmp_any("channels-last add", "y", &y2, &y1, 0, 0);
  OK(im_op_relu_forward(ref, &y1, &y1));
  OK(im_op_relu_forward(cpu, &y2, &y2));
  cmp_any("channels-last relu_forward", "y", &y2, &y1, 0, 0);
  OK(im_op_global_avgpool_forward(ref, &x, &g1));
  OK(im_op_global_avgpool_forward(cpu, &xc, &g2));
  cmp("channels-last global_avgpool_forward", "y", &g2, &g1, 0, 0);
  OK(im_op_global_avgpool_backward(ref, &g, &y1));
  OK(im_op_global_avgpool_backward(cpu, &g, &y2));
  cmp_any("channels-last global_avgpool_backward", "dx", &y2, &y1, 0, 0);
  { /* relayout: channels-last -> blocked -> plain (48 channels: both layouts apply) */
    const int64_t bs4[4] = {2, 48, 3, 5};
    im_tensor_t a = mk_rnd(4, bs4), ac = in_layout(&a, IM_LAYOUT_NHWC), ab = mk(IM_F32, 4, bs4), back = mk(IM_F32, 4, bs4);
    ab.layout = IM_LAYOUT_NCHW16C;
    OK(im_op_relayout(ref, &ac, &ab));
    OK(im_op_relayout(ref, &ab, &back));
    cmp("relayout", "NHWC -> nChw16c -> plain", &back, &a, 0, 0);
    freet(&a), freet(&ac), freet(&ab), freet(&back);
  }
  /* refused, touching nothing: ops without a channels-last kernel, the reference backend, mixed
   * layouts, a channels-last tensor that is not 4-D */
  const int64_t cs[1] = {40};
  im_tensor_t rm = mk_rnd(1, cs), rv = mk_rnd(1, cs);
  const im_batchnorm_params_t bp = IM_BATCHNORM_DEFAULTS;
  assert_int_equal(im_op_batchnorm_forward_eval(cpu, &bp, &xc, NULL, NULL, &rm, &rv, &y2), IM_ERR_ARG);
  assert_int_equal(im_op_gelu_forward(cpu, &xc, &y2), IM_ERR_ARG);
  assert_int_equal(im_op_relu_forward(ref, &xc, &y2), IM_ERR_ARG);
  assert_int_equal(im_op_add(cpu, &xc, &x2, &y2), IM_ERR_ARG);
  im_tensor_t g_cl = g;
  g_cl.layout = IM_LAYOUT_NHWC;
  assert_int_equal(im_op_relu_forward(cpu, &g_cl, &g_cl), IM_ERR_ARG);
  freet(&x), freet(&x2), freet(&g), freet(&xc), freet(&x2c), freet(&y1), freet(&y2), freet(&g1), freet(&g2);
  freet(&rm), freet(&rv);
}

/* Stamped weights (tensor.h): the cpu backend prepares them once per (pointer, stamp). Several
 * weights of one shape alternate through one plan, a renewed stamp after new values is honoured,
 * and unstamped calls always see the current values. */
static void stamped_weights(const int64_t xs[4]) {
  const im_conv2d_params_t p = {1, 1, 1, 1, 1, 1, 1};
  const int64_t ws[4] = {32, 16, 3, 3}, bs[1] = {32};
  int64_t ys[4];
  OK(im_conv2d_output_shape(&p, xs, ws, ys));
  im_tensor_t x = mk_rnd(4, xs), bias = mk_rnd(1, bs), w[3], y = mk(IM_F32, 4, ys), want = mk(IM_F32, 4, ys);
  for (int k = 0; k < 3; k++) {
    w[k] = mk_rnd(4, ws);
    w[k].stamp = im_tensor_stamp_new();
  }
  assert_true(w[0].stamp != 0 && w[1].stamp != w[0].stamp);
  for (int round = 0; round < 3; round++)
    for (int k = 0; k < 3; k++) {
      im_tensor_t plain_w = w[k];
      plain_w.stamp = 0;
      OK(im_op_conv2d_forward_fused(ref, &p, &x, &plain_w, &bias, IM_ACT_RELU, &want));
      OK(im_op_conv2d_forward_fused(cpu, &p, &x, &w[k], &bias, IM_ACT_RELU, &y));
      cmp("conv2d_forward (stamped weights)", "y", &y, &want, conv_atol(16 * 9), 1e-5);
      OK(im_op_conv2d_forward(cpu, &p, &x, &w[k], &bias, &y)); /* the unfused plan too */
      OK(im_op_conv2d_forward(ref, &p, &x, &plain_w, &bias, &want));
      cmp("conv2d_forward (stamped weights)", "y", &y, &want, conv_atol(16 * 9), 1e-5);
    }
  /* New values under a new stamp; then the same values unstamped. */
  rnd(&w[1]);
  w[1].stamp = im_tensor_stamp_new();
  im_tensor_t plain_w = w[1];
  plain_w.stamp = 0;
  OK(im_op_conv2d_forward_fused(ref, &p, &x, &plain_w, &bias, IM_ACT_RELU, &want));
  OK(im_op_conv2d_forward_fused(cpu, &p, &x, &w[1], &bias, IM_ACT_RELU, &y));
  cmp("conv2d_forward (stamped weights)", "y renewed", &y, &want, conv_atol(16 * 9), 1e-5);
  rnd(&plain_w);
  OK(im_op_conv2d_forward_fused(ref, &p, &x, &plain_w, &bias, IM_ACT_RELU, &want));
  OK(im_op_conv2d_forward_fused(cpu, &p, &x, &plain_w, &bias, IM_ACT_RELU, &y));
  cmp("conv2d_forward (stamped weights)", "y unstamped", &y, &want, conv_atol(16 * 9), 1e-5);
  freet(&x), freet(&bias), freet(&y), freet(&want), freet(&w[0]), freet(&w[1]), freet(&w[2]);
}

/* Stamped weights run oneDNN's inference kernels: Winograd F(2x2,3x3) with weights kept
 * transformed for a batch of up to 4 on outputs of 14x14 or more, oneDNN's "auto" on smaller
 * outputs and larger batches (cpu_conv.c, conv_alg_infer). */
static void test_stamped_weights(void **state) {
  stamped_weights((const int64_t[4]){2, 16, 10, 10});
  stamped_weights((const int64_t[4]){1, 16, 16, 16});
  stamped_weights((const int64_t[4]){8, 16, 14, 15});
}

/* imops' own Winograd kernels (src/backend/cpu/cpu_wino.c, cpu_wino2.c) serve stamped 3x3 stride-1
 * convolutions: F(4x4,3x3) on blocked tensors with outputs of 28x28 or more and at most 128x128
 * channel pairs, F(2x2,3x3) with streamed weights on outputs of 7x7 or less with 64 or more input
 * channels, blocked or channels-last. Each runs with ReLU, without bias or activation, with the fused
 * residual add (in place and not), on ragged tiles (odd, and 29-33 wide), a batch of 2, output channels past a
 * multiple of 64 (F(4x4): 80, 48), input channels past one (F(2x2): 80), weights alternating through
 * one plan and a renewed stamp; against the reference on plain tensors. Winograd's transforms round
 * more than direct convolution (outputs within about 1e-5 of their largest magnitude), hence a
 * wider tolerance. */
int im__cpu_own_plans(const im_backend_t *b);
static void test_wino(void **state) {
  static const struct {
    int64_t N, C, H, W, K;
    im_layout_t l;
  } cases[] = {
      {1, 64, 56, 56, 64, IM_LAYOUT_NCHW16C},  {2, 32, 30, 29, 80, IM_LAYOUT_NCHW16C}, /* F(4x4) */
      {1, 16, 28, 33, 48, IM_LAYOUT_NCHW16C},  {1, 64, 7, 7, 64, IM_LAYOUT_NCHW16C}, /* F(2x2) from here */
      {2, 64, 5, 7, 128, IM_LAYOUT_NCHW16C},   {1, 128, 7, 7, 128, IM_LAYOUT_NHWC},
      {1, 80, 6, 5, 64, IM_LAYOUT_NHWC},
  };
  const im_conv2d_params_t p = {1, 1, 1, 1, 1, 1, 1};
  for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
    const int64_t xs[4] = {cases[ci].N, cases[ci].C, cases[ci].H, cases[ci].W};
    const int64_t ws[4] = {cases[ci].K, cases[ci].C, 3, 3}, bs[1] = {cases[ci].K};
    const im_layout_t l = cases[ci].l;
    int64_t ys[4];
    OK(im_conv2d_output_shape(&p, xs, ws, ys));
    im_tensor_t x = mk_rnd(4, xs), bias = mk_rnd(1, bs), res = mk_rnd(4, ys), want = mk(IM_F32, 4, ys), w[2];
    im_tensor_t xl = in_layout(&x, l), resl = in_layout(&res, l), yres = in_layout(&res, l), y = mk(IM_F32, 4, ys);
    y.layout = l;
    for (int k = 0; k < 2; k++) {
      w[k] = mk_rnd(4, ws);
      w[k].stamp = im_tensor_stamp_new();
    }
    const int before = im__cpu_own_plans(cpu);
    const double atol = 8 * conv_atol(xs[1] * 9);
    for (int round = 0; round < 3; round++)
      for (int k = 0; k < 2; k++) {
        if (round == 2 && k == 1) { /* new values under a new stamp */
          rnd(&w[1]);
          w[1].stamp = im_tensor_stamp_new();
        }
        im_tensor_t pw = w[k];
        pw.stamp = 0;
        OK(im_op_conv2d_forward_fused(ref, &p, &x, &pw, &bias, IM_ACT_RELU, &want));
        OK(im_op_conv2d_forward_fused(cpu, &p, &xl, &w[k], &bias, IM_ACT_RELU, &y));
        cmp_any("winograd conv+relu", "y", &y, &want, atol, 1e-5);
        OK(im_op_conv2d_forward(ref, &p, &x, &pw, NULL, &want));
        OK(im_op_conv2d_forward(cpu, &p, &xl, &w[k], NULL, &y));
        cmp_any("winograd conv, no bias", "y", &y, &want, atol, 1e-5);
        OK(im_op_conv2d_forward_fused_add(ref, &p, &x, &pw, &bias, &res, IM_ACT_RELU, &want));
        OK(im_op_conv2d_forward_fused_add(cpu, &p, &xl, &w[k], &bias, &resl, IM_ACT_RELU, &y));
        cmp_any("winograd conv+add+relu", "y", &y, &want, atol, 1e-5);
        OK(im_op_relayout(cpu, &res, &yres)); /* in place: y is the residual */
        OK(im_op_conv2d_forward_fused_add(cpu, &p, &xl, &w[k], &bias, &yres, IM_ACT_RELU, &yres));
        cmp_any("winograd conv+add+relu", "y in place", &yres, &want, atol, 1e-5);
      }
    assert_int_equal(im__cpu_own_plans(cpu), before + 3); /* relu, plain, add+relu */
    freet(&x), freet(&bias), freet(&res), freet(&want), freet(&xl), freet(&resl), freet(&y), freet(&yres);
    freet(&w[0]), freet(&w[1]);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_conv),      cmocka_unit_test(test_batchnorm),
      cmocka_unit_test(test_layernorm), cmocka_unit_test(test_eltwise),
      cmocka_unit_test(test_pool),      cmocka_unit_test(test_linear),
      cmocka_unit_test(test_layout_and_fallback), cmocka_unit_test(test_interleaved),
      cmocka_unit_test(test_blocked_conv), cmocka_unit_test(test_blocked_ops),
      cmocka_unit_test(test_stamped_weights), cmocka_unit_test(test_channels_last),
      cmocka_unit_test(test_batchnorm_backward_fused), cmocka_unit_test(test_wino),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
