/* Unit tests of the reference backend (src/backend/ref) and the op layer
 * (src/backend/backend.c):
 * - gradient checks for every op with a backward, over the shape classes
 *   (stride 1/2, padding 0/1/3, dilation 1/2, groups 1/2/depthwise, odd sizes,
 *   batch 1 and 3, 1x1 and 7x7 kernels): loss = sum(y * r) for a fixed random
 *   r, accumulated in double over the float forward; a 5-point central
 *   difference with a power-of-two step (2^-3 to 2^-7, see h_step) on inputs
 *   quantized to multiples of 2^-12, so every perturbed input is exact in float; per element for small tensors,
 *   a random subset plus random directions for large ones; relative error
 *   with an absolute floor. Inputs keep clear of kinks (ReLU at 0, max-pool
 *   ties) by construction.
 * - analytically known answers, the assigned/accumulated contract, running
 *   statistics, dropout masks, argument checking, and the dispatcher's
 *   fallback to the reference kernels. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "backend/backend_impl.h"
#include "imops/backend.h"
#include "imops/core.h"
#include "imops/tensor.h"
#include "testutil.h"

#define OK(e) assert_int_equal((e), IM_OK)
#define MAX_ELEMS 256         /* per-element checks per tensor before sampling */
#define N_DIRS 3              /* random-direction checks for sampled tensors */
#define GRAD_TOL 2e-3         /* on |a - n| / max(|a|, |n|, floor), see check_grad */

static im_backend_t *be;
static im_rng_t rng;
/* The finite-difference step, a power of two: 2^-3 for ops linear in the
 * checked input (the difference is exact, a big step only shrinks the effect
 * of float rounding), 2^-5 for smooth non-linear ops, 2^-7 for piecewise
 * linear ones whose kinks the inputs avoid by more than 2 steps. */
static double h_step = 1.0 / 32.0;
#define H_LINEAR (1.0 / 8.0)
#define H_SMOOTH (1.0 / 32.0)
#define H_KINKED (1.0 / 128.0)
static double worst_overall;

static int setup(void **state) {
  im_rng_seed(&rng, 1234);
  return im_backend_ref_new(&be) == IM_OK ? 0 : -1;
}

static int teardown(void **state) {
  im_backend_free(be);
  printf("gradient checks: worst relative error %.3g (tolerance %.3g plus the output rounding bound)\n",
         worst_overall, GRAD_TOL);
  return 0;
}

/* ---- helpers ---- */

static im_tensor_t mk(int ndim, const int64_t *shape) {
  im_tensor_t t;
  OK(im_tensor_alloc(&t, IM_F32, ndim, shape));
  return t;
}
#define MK(...) mk((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)), (int64_t[]){__VA_ARGS__})

/* Uniform in [-a, a], quantized to multiples of 2^-12 so that x +- k h is exact in float. */
static float qrand(double a) {
  double v = (2.0 * im_rng_uniform(&rng) - 1.0) * a;
  return (float)(nearbyint(v * 4096.0) / 4096.0);
}

static void randomize(im_tensor_t *t, double a) {
  float *p = im_tensor_f32(t);
  for (int64_t i = 0; i < im_tensor_numel(t); i++) p[i] = qrand(a);
}

/* Keeps |x| >= m (away from a kink at 0). */
static void away_from_zero(im_tensor_t *t, double m) {
  float *p = im_tensor_f32(t);
  for (int64_t i = 0; i < im_tensor_numel(t); i++)
    if (fabs(p[i]) < m) p[i] = (float)(p[i] < 0 ? p[i] - m : p[i] + m);
}

/* Distinct values at least 1/16 apart in random order: no max-pool ties, even
 * when an element moves by 2h. */
static void distinct(im_tensor_t *t) {
  const int64_t n = im_tensor_numel(t);
  int64_t *perm = im_malloc((size_t)n * sizeof *perm);
  assert_non_null(perm);
  for (int64_t i = 0; i < n; i++) perm[i] = i;
  im_rng_shuffle(&rng, perm, (size_t)n, sizeof *perm);
  float *p = im_tensor_f32(t);
  for (int64_t i = 0; i < n; i++) p[i] = (float)((double)(perm[i] - n / 2) / 16.0);
  im_free(perm);
}

/* For the checker's own test: report failures in last_fails instead of asserting. */
static int no_assert, last_fails;

/* sum |terms| of the last loss evaluated: bounds the effect of rounding the float outputs. */
static double loss_abs;

static double dot(const im_tensor_t *y, const im_tensor_t *r) {
  const float *a = im_tensor_f32(y), *b = im_tensor_f32(r);
  double s = 0.0, sa = 0.0;
  for (int64_t i = 0; i < im_tensor_numel(y); i++) {
    s += (double)a[i] * b[i];
    sa += fabs((double)a[i] * b[i]);
  }
  loss_abs = sa;
  return s;
}

typedef double (*loss_fn)(void *ctx);

/* 5-point central difference of f along direction d (NULL: the unit vector at element i).
 * *noise is a bound on its error from rounding the op's float outputs (each
 * off by at most 2^-24 relative): (1 + 8 + 8 + 1) / (12 h) * 2^-24 * max sum|terms|. */
static double numeric(loss_fn f, void *ctx, im_tensor_t *x, int64_t i, const float *d, double *noise) {
  float *p = im_tensor_f32(x);
  const int64_t n = im_tensor_numel(x);
  float *save = NULL;
  if (d) {
    save = im_malloc((size_t)n * sizeof *save);
    assert_non_null(save);
    memcpy(save, p, (size_t)n * sizeof *save);
  }
  double fv[4], mabs = 0.0;
  static const double steps[4] = {-2, -1, 1, 2};
  for (int k = 0; k < 4; k++) {
    if (d) {
      for (int64_t j = 0; j < n; j++) p[j] = (float)(save[j] + steps[k] * h_step * d[j]);
    } else {
      const float orig = p[i];
      p[i] = (float)(orig + steps[k] * h_step);
      fv[k] = f(ctx);
      mabs = fmax(mabs, loss_abs);
      p[i] = orig;
      continue;
    }
    fv[k] = f(ctx);
    mabs = fmax(mabs, loss_abs);
  }
  *noise = 1.5 / h_step * 0x1p-24 * mabs;
  if (d) {
    memcpy(p, save, (size_t)n * sizeof *save);
    im_free(save);
  }
  return (fv[0] - 8.0 * fv[1] + 8.0 * fv[2] - fv[3]) / (12.0 * h_step);
}

/* Compares the analytic gradient g of f with respect to x with finite differences.
 * Passes when |a - n| <= GRAD_TOL * max(|a|, |n|, floor) + noise, with
 * floor = 1e-3 * max|g| + 1e-5 and noise the rounding bound of numeric().
 * Returns the worst |a - n| / max(|a|, |n|, floor) (the relative error). */
static double check_grad(const char *label, loss_fn f, void *ctx, im_tensor_t *x, const im_tensor_t *g) {
  const int64_t n = im_tensor_numel(x);
  const float *gd = im_tensor_f32(g);
  assert_int_equal(im_tensor_numel(g), n);
  double gmax = 0.0;
  for (int64_t i = 0; i < n; i++) gmax = fmax(gmax, fabs(gd[i]));
  const double floor_ = 1e-3 * gmax + 1e-5;
  double worst = 0.0;
  int64_t worst_i = -1;
  double worst_a = 0, worst_n = 0;
  int fails = 0;
  const int sampled = n > MAX_ELEMS;
  const int64_t count = sampled ? MAX_ELEMS : n;
  for (int64_t k = 0; k < count; k++) {
    const int64_t i = sampled ? (int64_t)(im_rng_next(&rng) % (uint64_t)n) : k;
    double noise;
    const double num = numeric(f, ctx, x, i, NULL, &noise), a = gd[i];
    const double den = fmax(fmax(fabs(a), fabs(num)), floor_), e = fabs(a - num) / den;
    if (fabs(a - num) > GRAD_TOL * den + noise) fails++;
    if (e > worst) {
      worst = e;
      worst_i = i;
      worst_a = a;
      worst_n = num;
    }
  }
  if (sampled) {
    float *d = im_malloc((size_t)n * sizeof *d);
    assert_non_null(d);
    for (int t = 0; t < N_DIRS; t++) {
      double a = 0.0, mag = 0.0;
      for (int64_t i = 0; i < n; i++) {
        d[i] = (im_rng_next(&rng) >> 63) ? 1.0f : -1.0f;
        a += (double)gd[i] * d[i];
        mag += fabs(gd[i]);
      }
      double noise;
      const double num = numeric(f, ctx, x, 0, d, &noise);
      const double den = fmax(fmax(fabs(a), fabs(num)), 1e-3 * mag + 1e-5), e = fabs(a - num) / den;
      if (fabs(a - num) > GRAD_TOL * den + noise) fails++;
      if (e > worst) {
        worst = e;
        worst_i = -2 - t;
        worst_a = a;
        worst_n = num;
      }
    }
    im_free(d);
  }
  printf("  %-40s %6lld elems %s: worst %.2e", label, (long long)n, sampled ? "sampled" : "all    ", worst);
  if (worst > GRAD_TOL)
    printf(" (%s) at %lld: analytic %.8g numeric %.8g", fails ? "FAILED" : "within rounding noise", (long long)worst_i,
           worst_a, worst_n);
  printf("\n");
  last_fails = fails;
  if (no_assert) return worst;
  if (worst > worst_overall) worst_overall = worst;
  assert_int_equal(fails, 0);
  return worst;
}

/* ---- conv2d ---- */

typedef struct {
  im_conv2d_params_t p;
  im_tensor_t x, w, b, y, r;
  int bias;
} conv_ctx;

static double conv_loss(void *c) {
  conv_ctx *k = c;
  OK(im_op_conv2d_forward(be, &k->p, &k->x, &k->w, k->bias ? &k->b : NULL, &k->y));
  return dot(&k->y, &k->r);
}

static void conv_case(const char *name, int64_t N, int64_t C, int64_t H, int64_t W, int64_t K, int64_t R, int64_t S,
                      im_conv2d_params_t p, int bias) {
  conv_ctx k = {.p = p, .bias = bias};
  h_step = H_LINEAR;
  const int64_t G = p.groups ? p.groups : 1;
  k.x = MK(N, C, H, W);
  k.w = MK(K, C / G, R, S);
  k.b = MK(K);
  randomize(&k.x, 1.0);
  randomize(&k.w, 1.0);
  randomize(&k.b, 1.0);
  int64_t ys[4];
  OK(im_conv2d_output_shape(&p, k.x.shape, k.w.shape, ys));
  k.y = mk(4, ys);
  k.r = mk(4, ys);
  randomize(&k.r, 1.0);
  im_tensor_t dx = MK(N, C, H, W), dw = MK(K, C / G, R, S), db = MK(K);
  im_tensor_fill_f32(&dx, NAN); /* assigned: whatever was there must go */
  OK(im_op_conv2d_backward_data(be, &p, &k.r, &k.w, &dx));
  OK(im_op_conv2d_backward_weight(be, &p, &k.x, &k.r, &dw, bias ? &db : NULL));
  char label[96];
  printf("conv2d %s: x[%lld,%lld,%lld,%lld] w[%lld,%lld,%lld,%lld] -> y[%lld,%lld,%lld,%lld]\n", name, (long long)N,
         (long long)C, (long long)H, (long long)W, (long long)K, (long long)(C / G), (long long)R, (long long)S,
         (long long)ys[0], (long long)ys[1], (long long)ys[2], (long long)ys[3]);
  snprintf(label, sizeof label, "conv2d %s dx", name);
  check_grad(label, conv_loss, &k, &k.x, &dx);
  snprintf(label, sizeof label, "conv2d %s dw", name);
  check_grad(label, conv_loss, &k, &k.w, &dw);
  if (bias) {
    snprintf(label, sizeof label, "conv2d %s dbias", name);
    check_grad(label, conv_loss, &k, &k.b, &db);
  }
  /* weight gradients accumulate: a second call doubles them */
  im_tensor_t dw2 = MK(K, C / G, R, S);
  OK(im_tensor_copy(&dw2, &dw));
  OK(im_op_conv2d_backward_weight(be, &p, &k.x, &k.r, &dw2, NULL));
  for (int64_t i = 0; i < im_tensor_numel(&dw); i++)
    assert_float_equal(im_tensor_f32(&dw2)[i], 2.0f * im_tensor_f32(&dw)[i], 1e-5 * (1 + fabs(im_tensor_f32(&dw)[i])));
  im_tensor_free(&dw2);
  im_tensor_free(&dx);
  im_tensor_free(&dw);
  im_tensor_free(&db);
  im_tensor_free(&k.x);
  im_tensor_free(&k.w);
  im_tensor_free(&k.b);
  im_tensor_free(&k.y);
  im_tensor_free(&k.r);
}

static void test_gradcheck_conv2d(void **state) {
  typedef im_conv2d_params_t P;
  conv_case("3x3 s1 p1", 1, 3, 7, 5, 4, 3, 3, (P){.pad_h = 1, .pad_w = 1}, 1);
  conv_case("3x3 s2 p1 g2 batch3", 3, 4, 7, 5, 6, 3, 3, (P){.stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1, .groups = 2}, 1);
  conv_case("3x3 depthwise p1", 2, 4, 9, 8, 4, 3, 3, (P){.pad_h = 1, .pad_w = 1, .groups = 4}, 1);
  conv_case("7x7 depthwise p3", 1, 3, 8, 7, 3, 7, 7, (P){.pad_h = 3, .pad_w = 3, .groups = 3}, 1);
  conv_case("3x3 dilation2 p2", 2, 2, 9, 7, 3, 3, 3, (P){.pad_h = 2, .pad_w = 2, .dilation_h = 2, .dilation_w = 2}, 0);
  conv_case("1x1 s2 p0 batch3", 3, 5, 7, 5, 4, 1, 1, (P){.stride_h = 2, .stride_w = 2}, 1);
  conv_case("7x7 s2 p3 stem", 1, 3, 11, 9, 4, 7, 7, (P){.stride_h = 2, .stride_w = 2, .pad_h = 3, .pad_w = 3}, 1);
  conv_case("3x2 s(2,1) p(1,0) d(1,2)", 2, 2, 7, 6, 2, 3, 2,
            (P){.stride_h = 2, .stride_w = 1, .pad_h = 1, .pad_w = 0, .dilation_h = 1, .dilation_w = 2}, 1);
  conv_case("3x3 depthwise x2 s2 p1", 1, 2, 7, 5, 4, 3, 3, (P){.stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1, .groups = 2}, 0);
  conv_case("3x3 s3 p0 (input not covered)", 1, 2, 8, 7, 3, 3, 3, (P){.stride_h = 3, .stride_w = 3}, 1);
}

/* ---- batch norm ---- */

typedef struct {
  im_batchnorm_params_t p;
  im_tensor_t x, g, b, rm, rv, y, sm, si, r;
  int affine;
} bn_ctx;

static double bn_loss(void *c) {
  bn_ctx *k = c;
  OK(im_op_batchnorm_forward_train(be, &k->p, &k->x, k->affine ? &k->g : NULL, k->affine ? &k->b : NULL, &k->rm,
                                   &k->rv, &k->y, &k->sm, &k->si));
  return dot(&k->y, &k->r);
}

static void bn_case(const char *name, int ndim, const int64_t *shape, int affine) {
  bn_ctx k = {.p = IM_BATCHNORM_DEFAULTS, .affine = affine};
  h_step = H_SMOOTH;
  const int64_t C = shape[1];
  k.x = mk(ndim, shape);
  k.y = mk(ndim, shape);
  k.r = mk(ndim, shape);
  k.g = MK(C);
  k.b = MK(C);
  k.rm = MK(C);
  k.rv = MK(C);
  k.sm = MK(C);
  k.si = MK(C);
  randomize(&k.x, 2.0);
  randomize(&k.r, 1.0);
  randomize(&k.g, 1.5);
  randomize(&k.b, 1.0);
  im_tensor_fill_f32(&k.rv, 1.0f);
  bn_loss(&k);
  im_tensor_t dx = mk(ndim, shape), dg = MK(C), db = MK(C);
  im_tensor_fill_f32(&dx, NAN);
  OK(im_op_batchnorm_backward(be, &k.x, &k.r, affine ? &k.g : NULL, &k.sm, &k.si, &dx, affine ? &dg : NULL,
                              affine ? &db : NULL));
  char label[96];
  snprintf(label, sizeof label, "batchnorm %s dx", name);
  check_grad(label, bn_loss, &k, &k.x, &dx);
  if (affine) {
    snprintf(label, sizeof label, "batchnorm %s dgamma", name);
    check_grad(label, bn_loss, &k, &k.g, &dg);
    snprintf(label, sizeof label, "batchnorm %s dbeta", name);
    check_grad(label, bn_loss, &k, &k.b, &db);
  }
  im_tensor_t *all[] = {&k.x, &k.g, &k.b, &k.rm, &k.rv, &k.y, &k.sm, &k.si, &k.r, &dx, &dg, &db};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) im_tensor_free(all[i]);
}

static void test_gradcheck_batchnorm(void **state) {
  bn_case("[3,4,5,3]", 4, (int64_t[]){3, 4, 5, 3}, 1);
  bn_case("[1,3,7,5] batch1", 4, (int64_t[]){1, 3, 7, 5}, 1);
  bn_case("[6,5] (1d)", 2, (int64_t[]){6, 5}, 1);
  bn_case("[2,3,4,4] no affine", 4, (int64_t[]){2, 3, 4, 4}, 0);
}

/* ---- layer norm ---- */

typedef struct {
  im_layernorm_params_t p;
  im_tensor_t x, g, b, y, sm, si, r;
} ln_ctx;

static double ln_loss(void *c) {
  ln_ctx *k = c;
  OK(im_op_layernorm_forward(be, &k->p, &k->x, &k->g, &k->b, &k->y, &k->sm, &k->si));
  return dot(&k->y, &k->r);
}

static void ln_case(const char *name, int ndim, const int64_t *shape, float eps) {
  ln_ctx k = {.p = {eps}};
  h_step = H_SMOOTH;
  const int64_t C = shape[ndim - 1];
  k.x = mk(ndim, shape);
  k.y = mk(ndim, shape);
  k.r = mk(ndim, shape);
  const int64_t M = im_tensor_numel(&k.x) / C;
  k.g = MK(C);
  k.b = MK(C);
  k.sm = MK(M);
  k.si = MK(M);
  randomize(&k.x, 2.0);
  randomize(&k.r, 1.0);
  randomize(&k.g, 1.5);
  randomize(&k.b, 1.0);
  ln_loss(&k);
  im_tensor_t dx = mk(ndim, shape), dg = MK(C), db = MK(C);
  im_tensor_fill_f32(&dx, NAN);
  OK(im_op_layernorm_backward(be, &k.x, &k.r, &k.g, &k.sm, &k.si, &dx, &dg, &db));
  char label[96];
  snprintf(label, sizeof label, "layernorm %s dx", name);
  check_grad(label, ln_loss, &k, &k.x, &dx);
  snprintf(label, sizeof label, "layernorm %s dgamma", name);
  check_grad(label, ln_loss, &k, &k.g, &dg);
  snprintf(label, sizeof label, "layernorm %s dbeta", name);
  check_grad(label, ln_loss, &k, &k.b, &db);
  im_tensor_t *all[] = {&k.x, &k.g, &k.b, &k.y, &k.sm, &k.si, &k.r, &dx, &dg, &db};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) im_tensor_free(all[i]);
}

static void test_gradcheck_layernorm(void **state) {
  ln_case("NHWC [2,3,4,6]", 4, (int64_t[]){2, 3, 4, 6}, 1e-6f);
  ln_case("[5,7]", 2, (int64_t[]){5, 7}, 1e-5f);
  ln_case("[1,5,3,9] batch1", 4, (int64_t[]){1, 5, 3, 9}, 1e-6f);
}

/* ---- element-wise ---- */

typedef struct {
  im_tensor_t x, x2, y, r, mask;
  int which; /* 0 relu, 1 gelu, 2 dropout, 3 add, 4 nchw->nhwc, 5 nhwc->nchw */
  float p;
} ew_ctx;

static double ew_loss(void *c) {
  ew_ctx *k = c;
  switch (k->which) {
    case 0: OK(im_op_relu_forward(be, &k->x, &k->y)); break;
    case 1: OK(im_op_gelu_forward(be, &k->x, &k->y)); break;
    case 2: {
      im_rng_t r;
      im_rng_seed(&r, 99); /* the same mask every time */
      OK(im_op_dropout_forward(be, k->p, &r, &k->x, &k->y, &k->mask));
      break;
    }
    case 3: OK(im_op_add(be, &k->x, &k->x2, &k->y)); break;
    case 4: OK(im_op_nchw_to_nhwc(be, &k->x, &k->y)); break;
    case 5: OK(im_op_nhwc_to_nchw(be, &k->x, &k->y)); break;
  }
  return dot(&k->y, &k->r);
}

static void test_gradcheck_elementwise(void **state) {
  ew_ctx k = {0};
  k.x = MK(3, 4, 5, 2);
  k.x2 = MK(3, 4, 5, 2);
  k.y = MK(3, 4, 5, 2);
  k.r = MK(3, 4, 5, 2);
  OK(im_tensor_alloc(&k.mask, IM_U8, 4, (int64_t[]){3, 4, 5, 2}));
  im_tensor_t dx = MK(3, 4, 5, 2), dx2 = MK(3, 4, 5, 2);
  randomize(&k.r, 1.0);

  k.which = 0; /* relu: from the output */
  h_step = H_KINKED;
  randomize(&k.x, 2.0);
  away_from_zero(&k.x, 4 * h_step);
  ew_loss(&k);
  OK(im_op_relu_backward(be, &k.y, &k.r, &dx));
  check_grad("relu dx", ew_loss, &k, &k.x, &dx);

  k.which = 1; /* gelu: from the input; a wide range covers both tails */
  h_step = H_SMOOTH;
  randomize(&k.x, 4.0);
  ew_loss(&k);
  OK(im_op_gelu_backward(be, &k.x, &k.r, &dx));
  check_grad("gelu dx", ew_loss, &k, &k.x, &dx);

  k.which = 2;
  h_step = H_LINEAR;
  k.p = 0.3f;
  randomize(&k.x, 2.0);
  ew_loss(&k);
  OK(im_op_dropout_backward(be, k.p, &k.mask, &k.r, &dx));
  check_grad("dropout p=0.3 dx", ew_loss, &k, &k.x, &dx);

  k.which = 3;
  randomize(&k.x2, 2.0);
  ew_loss(&k);
  OK(im_op_add_backward(be, &k.r, &dx, &dx2));
  check_grad("add dx1", ew_loss, &k, &k.x, &dx);
  check_grad("add dx2", ew_loss, &k, &k.x2, &dx2);

  /* permutes: the gradient of one is the other */
  k.which = 4;
  im_tensor_free(&k.y);
  im_tensor_free(&k.r);
  k.y = MK(3, 5, 2, 4);
  k.r = MK(3, 5, 2, 4);
  randomize(&k.r, 1.0);
  OK(im_op_nhwc_to_nchw(be, &k.r, &dx));
  check_grad("nchw_to_nhwc dx", ew_loss, &k, &k.x, &dx);
  k.which = 5;
  im_tensor_t xh = MK(3, 5, 2, 4), rc = MK(3, 4, 5, 2), dxh = MK(3, 5, 2, 4);
  randomize(&xh, 1.0);
  randomize(&rc, 1.0);
  im_tensor_t xs = k.x, rs = k.r, ys = k.y;
  k.x = xh;
  k.r = rc;
  k.y = MK(3, 4, 5, 2);
  OK(im_op_nchw_to_nhwc(be, &k.r, &dxh));
  check_grad("nhwc_to_nchw dx", ew_loss, &k, &k.x, &dxh);
  im_tensor_free(&k.y);
  k.x = xs;
  k.r = rs;
  k.y = ys;
  im_tensor_t *all[] = {&k.x, &k.x2, &k.y, &k.r, &k.mask, &dx, &dx2, &xh, &rc, &dxh};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) im_tensor_free(all[i]);
}

/* ---- pooling ---- */

typedef struct {
  im_pool2d_params_t p;
  im_tensor_t x, y, idx, r;
  int which; /* 0 max, 1 avg, 2 global avg */
} pool_ctx;

static double pool_loss(void *c) {
  pool_ctx *k = c;
  if (k->which == 0) OK(im_op_maxpool2d_forward(be, &k->p, &k->x, &k->y, &k->idx));
  else if (k->which == 1) OK(im_op_avgpool2d_forward(be, &k->p, &k->x, &k->y));
  else OK(im_op_global_avgpool_forward(be, &k->x, &k->y));
  return dot(&k->y, &k->r);
}

static void pool_case(const char *name, int which, int64_t N, int64_t C, int64_t H, int64_t W, im_pool2d_params_t p) {
  pool_ctx k = {.p = p, .which = which};
  h_step = which == 0 ? H_KINKED : H_LINEAR;
  k.x = MK(N, C, H, W);
  int64_t ys[4] = {N, C, 1, 1};
  if (which < 2) OK(im_pool2d_output_shape(&p, k.x.shape, ys));
  k.y = which < 2 ? mk(4, ys) : MK(N, C);
  k.r = which < 2 ? mk(4, ys) : MK(N, C);
  OK(im_tensor_alloc(&k.idx, IM_I32, 4, ys));
  if (which == 0) distinct(&k.x);
  else randomize(&k.x, 2.0);
  randomize(&k.r, 1.0);
  pool_loss(&k);
  im_tensor_t dx = MK(N, C, H, W);
  im_tensor_fill_f32(&dx, NAN);
  if (which == 0) OK(im_op_maxpool2d_backward(be, &k.p, &k.r, &k.idx, &dx));
  else if (which == 1) OK(im_op_avgpool2d_backward(be, &k.p, &k.r, &dx));
  else OK(im_op_global_avgpool_backward(be, &k.r, &dx));
  char label[96];
  snprintf(label, sizeof label, "%s %s dx", which == 0 ? "maxpool" : which == 1 ? "avgpool" : "gap", name);
  check_grad(label, pool_loss, &k, &k.x, &dx);
  im_tensor_t *all[] = {&k.x, &k.y, &k.idx, &k.r, &dx};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) im_tensor_free(all[i]);
}

static void test_gradcheck_pool(void **state) {
  typedef im_pool2d_params_t P;
  pool_case("k2 s2 7x5", 0, 2, 3, 7, 5, (P){.kernel_h = 2, .kernel_w = 2});
  pool_case("k3 s2 p1 7x5 batch3", 0, 3, 2, 7, 5, (P){.kernel_h = 3, .kernel_w = 3, .stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1});
  pool_case("k3 s1 p1 overlapping", 0, 1, 2, 6, 5, (P){.kernel_h = 3, .kernel_w = 3, .stride_h = 1, .stride_w = 1, .pad_h = 1, .pad_w = 1});
  pool_case("k2 s2 7x5", 1, 2, 3, 7, 5, (P){.kernel_h = 2, .kernel_w = 2});
  pool_case("k3 s2 p1 incl pad", 1, 3, 2, 7, 5, (P){.kernel_h = 3, .kernel_w = 3, .stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1});
  pool_case("k3 s2 p1 excl pad", 1, 3, 2, 7, 5,
            (P){.kernel_h = 3, .kernel_w = 3, .stride_h = 2, .stride_w = 2, .pad_h = 1, .pad_w = 1, .exclude_pad = 1});
  pool_case("k3x2 s1 p(1,1)", 1, 1, 2, 6, 5, (P){.kernel_h = 3, .kernel_w = 2, .stride_h = 1, .stride_w = 1, .pad_h = 1, .pad_w = 1});
  pool_case("[3,4,5,3]", 2, 3, 4, 5, 3, (P){0});
}

/* ---- linear ---- */

typedef struct {
  im_tensor_t x, w, b, y, r;
} lin_ctx;

static double lin_loss(void *c) {
  lin_ctx *k = c;
  OK(im_op_linear_forward(be, &k->x, &k->w, &k->b, &k->y));
  return dot(&k->y, &k->r);
}

static void lin_case(const char *name, int xnd, const int64_t *xs, int64_t out) {
  lin_ctx k;
  h_step = H_LINEAR;
  const int64_t in = xs[xnd - 1];
  int64_t ys[IM_TENSOR_MAX_DIMS];
  memcpy(ys, xs, (size_t)xnd * sizeof *ys);
  ys[xnd - 1] = out;
  k.x = mk(xnd, xs);
  k.w = MK(out, in);
  k.b = MK(out);
  k.y = mk(xnd, ys);
  k.r = mk(xnd, ys);
  randomize(&k.x, 1.0);
  randomize(&k.w, 1.0);
  randomize(&k.b, 1.0);
  randomize(&k.r, 1.0);
  im_tensor_t dx = mk(xnd, xs), dw = MK(out, in), db = MK(out);
  im_tensor_fill_f32(&dx, NAN);
  OK(im_op_linear_backward_data(be, &k.r, &k.w, &dx));
  OK(im_op_linear_backward_weight(be, &k.x, &k.r, &dw, &db));
  char label[96];
  snprintf(label, sizeof label, "linear %s dx", name);
  check_grad(label, lin_loss, &k, &k.x, &dx);
  snprintf(label, sizeof label, "linear %s dw", name);
  check_grad(label, lin_loss, &k, &k.w, &dw);
  snprintf(label, sizeof label, "linear %s dbias", name);
  check_grad(label, lin_loss, &k, &k.b, &db);
  im_tensor_t *all[] = {&k.x, &k.w, &k.b, &k.y, &k.r, &dx, &dw, &db};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) im_tensor_free(all[i]);
}

/* The checker itself must catch small errors: a gradient off by 1% in one
 * element, or a plausible-looking wrong formula. */
static void test_gradcheck_catches_errors(void **state) {
  lin_ctx k;
  h_step = H_LINEAR;
  k.x = MK(3, 6);
  k.w = MK(4, 6);
  k.b = MK(4);
  k.y = MK(3, 4);
  k.r = MK(3, 4);
  randomize(&k.x, 1.0);
  randomize(&k.w, 1.0);
  randomize(&k.b, 1.0);
  randomize(&k.r, 1.0);
  im_tensor_t dx = MK(3, 6), dw = MK(4, 6);
  OK(im_op_linear_backward_data(be, &k.r, &k.w, &dx));
  OK(im_op_linear_backward_weight(be, &k.x, &k.r, &dw, NULL));
  no_assert = 1;
  check_grad("linear dx (correct)", lin_loss, &k, &k.x, &dx);
  assert_int_equal(last_fails, 0);
  im_tensor_f32(&dx)[7] *= 1.01f;
  check_grad("linear dx (one element off by 1%)", lin_loss, &k, &k.x, &dx);
  assert_int_equal(last_fails, 1);
  /* dW^T x instead of dy^T x: the right shape, the wrong values */
  for (int o = 0; o < 4; o++)
    for (int i = 0; i < 6; i++) im_tensor_f32(&dw)[o * 6 + i] = im_tensor_f32(&dw)[((o + 1) % 4) * 6 + i];
  check_grad("linear dw (rows rotated)", lin_loss, &k, &k.w, &dw);
  assert_true(last_fails > 10);
  no_assert = 0;
  im_tensor_t *all[] = {&k.x, &k.w, &k.b, &k.y, &k.r, &dx, &dw};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) im_tensor_free(all[i]);
}

static void test_gradcheck_linear(void **state) {
  lin_case("[5,7]->4", 2, (int64_t[]){5, 7}, 4);
  lin_case("[2,3,7]->5", 3, (int64_t[]){2, 3, 7}, 5);
  lin_case("[1,128]->10", 2, (int64_t[]){1, 128}, 10);
}

/* ---- softmax cross-entropy ---- */

typedef struct {
  im_xent_params_t p;
  im_tensor_t z, lab, loss;
} xent_ctx;

static double xent_loss(void *c) {
  xent_ctx *k = c;
  OK(im_op_softmax_xent_forward(be, &k->p, &k->z, &k->lab, &k->loss, NULL));
  loss_abs = fabs(im_tensor_f32(&k->loss)[0]);
  return im_tensor_f32(&k->loss)[0];
}

static void xent_case(const char *name, int64_t N, int64_t K, float eps, double scale) {
  xent_ctx k = {.p = {eps}};
  h_step = H_SMOOTH;
  k.z = MK(N, K);
  k.loss = MK(1);
  OK(im_tensor_alloc(&k.lab, IM_I32, 1, (int64_t[]){N}));
  randomize(&k.z, scale);
  int32_t *l = k.lab.data;
  for (int64_t i = 0; i < N; i++) l[i] = (int32_t)im_rng_below(&rng, (uint32_t)K);
  im_tensor_t dz = MK(N, K);
  im_tensor_fill_f32(&dz, NAN);
  OK(im_op_softmax_xent_backward(be, &k.p, &k.z, &k.lab, &dz));
  char label[96];
  snprintf(label, sizeof label, "softmax_xent %s dlogits", name);
  check_grad(label, xent_loss, &k, &k.z, &dz);
  im_tensor_t *all[] = {&k.z, &k.lab, &k.loss, &dz};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) im_tensor_free(all[i]);
}

static void test_gradcheck_xent(void **state) {
  xent_case("N5 K7 eps0", 5, 7, 0.0f, 2.0);
  xent_case("N5 K7 eps0.1", 5, 7, 0.1f, 2.0);
  xent_case("N3 K2 eps0.1 large logits", 3, 2, 0.1f, 8.0);
  xent_case("N16 K10 eps0.2", 16, 10, 0.2f, 3.0);
}

/* ---- known answers ---- */

static void test_known_answers(void **state) {
  /* conv with a centred delta kernel and padding 1 is the identity; with stride 2 it subsamples */
  im_tensor_t x = MK(1, 1, 5, 4), w = MK(1, 1, 3, 3), y = MK(1, 1, 5, 4), y2 = MK(1, 1, 3, 2);
  randomize(&x, 1.0);
  im_tensor_f32(&w)[4] = 1.0f;
  im_conv2d_params_t cp = {.pad_h = 1, .pad_w = 1};
  OK(im_op_conv2d_forward(be, &cp, &x, &w, NULL, &y));
  assert_memory_equal(y.data, x.data, im_tensor_nbytes(&x));
  cp.stride_h = cp.stride_w = 2;
  OK(im_op_conv2d_forward(be, &cp, &x, &w, NULL, &y2));
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 2; j++) assert_true(im_tensor_f32(&y2)[i * 2 + j] == im_tensor_f32(&x)[(2 * i) * 4 + 2 * j]);
  im_tensor_free(&y2);
  /* all-ones 3x3 kernel on all-ones input: 4 at corners, 6 on edges, 9 inside */
  im_tensor_fill_f32(&x, 1.0f);
  im_tensor_fill_f32(&w, 1.0f);
  cp.stride_h = cp.stride_w = 1;
  OK(im_op_conv2d_forward(be, &cp, &x, &w, NULL, &y));
  assert_true(im_tensor_f32(&y)[0] == 4.0f);
  assert_true(im_tensor_f32(&y)[1] == 6.0f);
  assert_true(im_tensor_f32(&y)[5] == 9.0f);
  im_tensor_free(&x);
  im_tensor_free(&w);
  im_tensor_free(&y);

  /* max pool: values and torch-style indices */
  x = MK(1, 1, 4, 4);
  for (int i = 0; i < 16; i++) im_tensor_f32(&x)[i] = (float)((i * 7) % 16);
  y = MK(1, 1, 2, 2);
  im_tensor_t idx;
  OK(im_tensor_alloc(&idx, IM_I32, 4, (int64_t[]){1, 1, 2, 2}));
  im_pool2d_params_t pp = {.kernel_h = 2, .kernel_w = 2};
  OK(im_op_maxpool2d_forward(be, &pp, &x, &y, &idx));
  for (int o = 0; o < 4; o++) {
    const int32_t at = ((int32_t *)idx.data)[o];
    assert_true(im_tensor_f32(&y)[o] == im_tensor_f32(&x)[at]);
    assert_int_equal(at / 4 / 2, o / 2); /* inside its window */
    assert_int_equal(at % 4 / 2, o % 2);
  }
  /* ties: the first in the window wins */
  im_tensor_fill_f32(&x, 1.0f);
  OK(im_op_maxpool2d_forward(be, &pp, &x, &y, &idx));
  assert_int_equal(((int32_t *)idx.data)[3], 2 * 4 + 2);
  /* avg pool 3x3 s1 p1 at the corner: 4 valid of 9 */
  im_tensor_free(&y);
  y = MK(1, 1, 4, 4);
  pp = (im_pool2d_params_t){.kernel_h = 3, .kernel_w = 3, .stride_h = 1, .stride_w = 1, .pad_h = 1, .pad_w = 1};
  OK(im_op_avgpool2d_forward(be, &pp, &x, &y));
  assert_float_equal(im_tensor_f32(&y)[0], 4.0f / 9.0f, 1e-7);
  assert_float_equal(im_tensor_f32(&y)[5], 1.0f, 1e-7);
  pp.exclude_pad = 1;
  OK(im_op_avgpool2d_forward(be, &pp, &x, &y));
  assert_float_equal(im_tensor_f32(&y)[0], 1.0f, 1e-7);
  im_tensor_free(&x);
  im_tensor_free(&y);
  im_tensor_free(&idx);

  /* linear by hand: [1,2] x [[1,2],[3,4],[5,6]]^T + [1,1,1] = [6, 12, 18] */
  x = MK(1, 2);
  w = MK(3, 2);
  im_tensor_t bias = MK(3);
  y = MK(1, 3);
  for (int i = 0; i < 6; i++) im_tensor_f32(&w)[i] = (float)(i + 1);
  im_tensor_f32(&x)[0] = 1;
  im_tensor_f32(&x)[1] = 2;
  im_tensor_fill_f32(&bias, 1.0f);
  OK(im_op_linear_forward(be, &x, &w, &bias, &y));
  assert_true(im_tensor_f32(&y)[0] == 6.0f && im_tensor_f32(&y)[1] == 12.0f && im_tensor_f32(&y)[2] == 18.0f);
  im_tensor_free(&x);
  im_tensor_free(&w);
  im_tensor_free(&bias);
  im_tensor_free(&y);

  /* cross-entropy of uniform logits is log K whatever the smoothing; gradient rows sum to 0 */
  im_tensor_t z = MK(2, 5), loss = MK(1), lab, dz = MK(2, 5), probs = MK(2, 5);
  OK(im_tensor_alloc(&lab, IM_I32, 1, (int64_t[]){2}));
  ((int32_t *)lab.data)[0] = 1;
  ((int32_t *)lab.data)[1] = 4;
  im_xent_params_t xp = {0.1f};
  OK(im_op_softmax_xent_forward(be, &xp, &z, &lab, &loss, &probs));
  assert_float_equal(im_tensor_f32(&loss)[0], log(5.0), 1e-6);
  assert_float_equal(im_tensor_f32(&probs)[3], 0.2f, 1e-7);
  /* a confident correct prediction: loss ~ eps * (mean over classes of -logp) */
  im_tensor_f32(&z)[1] = 30.0f;
  im_tensor_f32(&z)[9] = 30.0f;
  xp.label_smoothing = 0.0f;
  OK(im_op_softmax_xent_forward(be, &xp, &z, &lab, &loss, NULL));
  assert_true(im_tensor_f32(&loss)[0] < 1e-11f);
  xp.label_smoothing = 0.1f;
  OK(im_op_softmax_xent_forward(be, &xp, &z, &lab, &loss, NULL));
  assert_float_equal(im_tensor_f32(&loss)[0], 0.1 * 4.0 / 5.0 * 30.0, 1e-4);
  OK(im_op_softmax_xent_backward(be, &xp, &z, &lab, &dz));
  for (int n = 0; n < 2; n++) {
    double s = 0;
    for (int k = 0; k < 5; k++) s += im_tensor_f32(&dz)[n * 5 + k];
    assert_true(fabs(s) < 1e-7);
  }
  im_tensor_free(&z);
  im_tensor_free(&loss);
  im_tensor_free(&lab);
  im_tensor_free(&dz);
  im_tensor_free(&probs);

  /* gelu(1) = Phi(1), gelu(-inf side) -> 0, relu */
  x = MK(3);
  y = MK(3);
  im_tensor_f32(&x)[0] = 1.0f;
  im_tensor_f32(&x)[1] = -10.0f;
  im_tensor_f32(&x)[2] = 0.0f;
  OK(im_op_gelu_forward(be, &x, &y));
  assert_float_equal(im_tensor_f32(&y)[0], 0.8413447460685429, 1e-7);
  assert_true(fabs(im_tensor_f32(&y)[1]) < 1e-20);
  assert_true(im_tensor_f32(&y)[2] == 0.0f);
  OK(im_op_relu_forward(be, &x, &x)); /* in place */
  assert_true(im_tensor_f32(&x)[0] == 1.0f && im_tensor_f32(&x)[1] == 0.0f);
  im_tensor_free(&x);
  im_tensor_free(&y);
}

static void test_batchnorm_running_stats(void **state) {
  im_tensor_t x = MK(4, 2, 3, 1), y = MK(4, 2, 3, 1), rm = MK(2), rv = MK(2), sm = MK(2), si = MK(2), y2 = MK(4, 2, 3, 1);
  randomize(&x, 3.0);
  im_tensor_fill_f32(&rm, 0.5f);
  im_tensor_fill_f32(&rv, 2.0f);
  im_batchnorm_params_t p = IM_BATCHNORM_DEFAULTS;
  OK(im_op_batchnorm_forward_train(be, &p, &x, NULL, NULL, &rm, &rv, &y, &sm, &si));
  for (int c = 0; c < 2; c++) {
    double s = 0, sq = 0;
    for (int n = 0; n < 4; n++)
      for (int l = 0; l < 3; l++) s += im_tensor_f32(&x)[(n * 2 + c) * 3 + l];
    const double mean = s / 12;
    for (int n = 0; n < 4; n++)
      for (int l = 0; l < 3; l++) sq += pow(im_tensor_f32(&x)[(n * 2 + c) * 3 + l] - mean, 2);
    assert_float_equal(im_tensor_f32(&sm)[c], mean, 1e-6);
    assert_float_equal(im_tensor_f32(&si)[c], 1.0 / sqrt(sq / 12 + 1e-5), 1e-5);
    assert_float_equal(im_tensor_f32(&rm)[c], 0.9 * 0.5 + 0.1 * mean, 1e-6);
    assert_float_equal(im_tensor_f32(&rv)[c], 0.9 * 2.0 + 0.1 * sq / 11, 1e-6); /* unbiased */
    /* the normalized output has mean 0 and (biased) variance ~1 */
    double ys = 0, yq = 0;
    for (int n = 0; n < 4; n++)
      for (int l = 0; l < 3; l++) {
        const double v = im_tensor_f32(&y)[(n * 2 + c) * 3 + l];
        ys += v;
        yq += v * v;
      }
    assert_true(fabs(ys / 12) < 1e-6);
    assert_float_equal(yq / 12, sq / 12 / (sq / 12 + 1e-5), 1e-5);
  }
  /* eval with running stats equal to the batch's (biased) stats reproduces the training output */
  for (int c = 0; c < 2; c++) {
    im_tensor_f32(&rm)[c] = im_tensor_f32(&sm)[c];
    const double inv = im_tensor_f32(&si)[c];
    im_tensor_f32(&rv)[c] = (float)(1.0 / (inv * inv) - 1e-5);
  }
  OK(im_op_batchnorm_forward_eval(be, &p, &x, NULL, NULL, &rm, &rv, &y2));
  for (int i = 0; i < 24; i++) assert_float_equal(im_tensor_f32(&y2)[i], im_tensor_f32(&y)[i], 1e-4);
  /* batch of one value per channel cannot train */
  im_tensor_t x1 = MK(1, 2), y1 = MK(1, 2);
  assert_int_equal(im_op_batchnorm_forward_train(be, &p, &x1, NULL, NULL, &rm, &rv, &y1, &sm, &si), IM_ERR_ARG);
  im_tensor_t *all[] = {&x, &y, &rm, &rv, &sm, &si, &y2, &x1, &y1};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) im_tensor_free(all[i]);
}

static void test_dropout_masks(void **state) {
  const int64_t n = 20000;
  im_tensor_t x = MK(n), y = MK(n), dy = MK(n), dx = MK(n), m, m2;
  OK(im_tensor_alloc(&m, IM_U8, 1, (int64_t[]){n}));
  OK(im_tensor_alloc(&m2, IM_U8, 1, (int64_t[]){n}));
  im_tensor_fill_f32(&x, 1.0f);
  im_tensor_fill_f32(&dy, 1.0f);
  im_rng_t r;
  im_rng_seed(&r, 5);
  OK(im_op_dropout_forward(be, 0.25f, &r, &x, &y, &m));
  int64_t kept = 0;
  for (int64_t i = 0; i < n; i++) {
    const uint8_t k = ((uint8_t *)m.data)[i];
    kept += k;
    assert_true(im_tensor_f32(&y)[i] == (k ? 1.0f / 0.75f : 0.0f));
  }
  assert_true(fabs((double)kept / n - 0.75) < 0.02);
  OK(im_op_dropout_backward(be, 0.25f, &m, &dy, &dx));
  assert_memory_equal(dx.data, y.data, im_tensor_nbytes(&y));
  /* the next call draws a new mask; the same seed gives the same mask */
  OK(im_op_dropout_forward(be, 0.25f, &r, &x, &y, &m2));
  assert_true(memcmp(m.data, m2.data, (size_t)n) != 0);
  im_rng_seed(&r, 5);
  OK(im_op_dropout_forward(be, 0.25f, &r, &x, &y, &m2));
  assert_memory_equal(m.data, m2.data, (size_t)n);
  /* p = 0 keeps all unscaled, p = 1 drops all; p outside [0,1] is refused */
  OK(im_op_dropout_forward(be, 0.0f, &r, &x, &y, &m));
  assert_memory_equal(y.data, x.data, im_tensor_nbytes(&x));
  OK(im_op_dropout_forward(be, 1.0f, &r, &x, &y, &m));
  for (int64_t i = 0; i < n; i++) assert_true(im_tensor_f32(&y)[i] == 0.0f);
  assert_int_equal(im_op_dropout_forward(be, 1.5f, &r, &x, &y, &m), IM_ERR_ARG);
  assert_int_equal(im_op_dropout_forward(be, NAN, &r, &x, &y, &m), IM_ERR_ARG);
  assert_int_equal(im_op_dropout_forward(be, 0.5f, NULL, &x, &y, &m), IM_ERR_ARG);
  im_tensor_t *all[] = {&x, &y, &dy, &dx, &m, &m2};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) im_tensor_free(all[i]);
}

static void test_argument_checks(void **state) {
  im_tensor_t x = MK(2, 4, 7, 5), w = MK(6, 2, 3, 3), y = MK(2, 6, 7, 5), bad = MK(2, 6, 7, 4);
  im_conv2d_params_t cp = {.pad_h = 1, .pad_w = 1, .groups = 2};
  OK(im_op_conv2d_forward(be, &cp, &x, &w, NULL, &y));
  im_tensor_fill_f32(&bad, 7.0f);
  assert_int_equal(im_op_conv2d_forward(be, &cp, &x, &w, NULL, &bad), IM_ERR_ARG);
  assert_non_null(strstr(im_last_error(), "F32[2,6,7,4], expected F32[2,6,7,5]"));
  assert_true(im_tensor_f32(&bad)[0] == 7.0f); /* untouched */
  cp.groups = 3; /* does not divide 4 */
  assert_int_equal(im_op_conv2d_forward(be, &cp, &x, &w, NULL, &y), IM_ERR_ARG);
  cp.groups = 1; /* w's channels are for 2 groups */
  assert_int_equal(im_op_conv2d_forward(be, &cp, &x, &w, NULL, &y), IM_ERR_ARG);
  cp = (im_conv2d_params_t){.stride_h = -1, .groups = 2};
  assert_int_equal(im_op_conv2d_forward(be, &cp, &x, &w, NULL, &y), IM_ERR_ARG);
  cp = (im_conv2d_params_t){.pad_h = 1, .pad_w = 1, .groups = 2};
  im_tensor_t bias7 = MK(7);
  assert_int_equal(im_op_conv2d_forward(be, &cp, &x, &w, &bias7, &y), IM_ERR_ARG);
  assert_int_equal(im_op_conv2d_forward(be, &cp, &x, &w, NULL, &x), IM_ERR_ARG); /* wrong shape */
  im_tensor_t alias;
  OK(im_tensor_view(&alias, IM_F32, 4, (int64_t[]){2, 6, 7, 5}, x.data)); /* big enough? no: overlaps x */
  im_tensor_t big = MK(2 * 6 * 7 * 5 + 10);
  OK(im_tensor_view(&alias, IM_F32, 4, (int64_t[]){2, 6, 7, 5}, im_tensor_f32(&big) + 3));
  im_tensor_t xin;
  OK(im_tensor_view(&xin, IM_F32, 4, (int64_t[]){2, 4, 7, 5}, im_tensor_f32(&big)));
  assert_int_equal(im_op_conv2d_forward(be, &cp, &xin, &w, NULL, &alias), IM_ERR_ARG);
  assert_non_null(strstr(im_last_error(), "overlaps"));
  im_tensor_t nodata;
  OK(im_tensor_view(&nodata, IM_F32, 4, (int64_t[]){2, 4, 7, 5}, NULL));
  assert_int_equal(im_op_conv2d_forward(be, &cp, &nodata, &w, NULL, &y), IM_ERR_ARG);
  assert_int_equal(im_op_conv2d_forward(NULL, &cp, &x, &w, NULL, &y), IM_ERR_ARG);
  /* a kernel larger than the padded input */
  im_tensor_t w9 = MK(6, 2, 9, 9);
  assert_int_equal(im_op_conv2d_forward(be, &cp, &x, &w9, NULL, &y), IM_ERR_ARG);

  /* pools: padding over half the kernel, indices out of range */
  im_tensor_t px = MK(1, 1, 4, 4), py = MK(1, 1, 2, 2), pi;
  OK(im_tensor_alloc(&pi, IM_I32, 4, (int64_t[]){1, 1, 2, 2}));
  im_pool2d_params_t pp = {.kernel_h = 2, .kernel_w = 2, .pad_h = 2};
  assert_int_equal(im_op_maxpool2d_forward(be, &pp, &px, &py, &pi), IM_ERR_ARG);
  pp.pad_h = 0;
  OK(im_op_maxpool2d_forward(be, &pp, &px, &py, &pi));
  ((int32_t *)pi.data)[2] = 16;
  assert_int_equal(im_op_maxpool2d_backward(be, &pp, &py, &pi, &px), IM_ERR_ARG);
  ((int32_t *)pi.data)[2] = -1;
  assert_int_equal(im_op_maxpool2d_backward(be, &pp, &py, &pi, &px), IM_ERR_ARG);

  /* labels out of range, bad smoothing */
  im_tensor_t z = MK(2, 3), loss = MK(1), lab;
  OK(im_tensor_alloc(&lab, IM_I32, 1, (int64_t[]){2}));
  im_xent_params_t xp = {0.0f};
  ((int32_t *)lab.data)[1] = 3;
  assert_int_equal(im_op_softmax_xent_forward(be, &xp, &z, &lab, &loss, NULL), IM_ERR_ARG);
  ((int32_t *)lab.data)[1] = -2;
  assert_int_equal(im_op_softmax_xent_backward(be, &xp, &z, &lab, &z), IM_ERR_ARG);
  ((int32_t *)lab.data)[1] = 2;
  xp.label_smoothing = 1.5f;
  assert_int_equal(im_op_softmax_xent_forward(be, &xp, &z, &lab, &loss, NULL), IM_ERR_ARG);
  xp.label_smoothing = 0.0f;
  OK(im_op_softmax_xent_forward(be, &xp, &z, &lab, &loss, NULL));
  assert_int_equal(im_op_softmax_xent_backward(be, &xp, &z, &lab, &z), IM_ERR_ARG); /* dlogits overlaps logits */

  /* element-wise: in place is fine, a partial overlap is not; dtypes are checked */
  im_tensor_t e = MK(8), part;
  OK(im_tensor_view(&part, IM_F32, 1, (int64_t[]){8}, im_tensor_f32(&big) + 1));
  im_tensor_t e0;
  OK(im_tensor_view(&e0, IM_F32, 1, (int64_t[]){8}, im_tensor_f32(&big)));
  OK(im_op_gelu_forward(be, &e0, &e0));
  assert_int_equal(im_op_gelu_forward(be, &e0, &part), IM_ERR_ARG);
  OK(im_op_add(be, &e, &e0, &e));
  im_tensor_t u8;
  OK(im_tensor_alloc(&u8, IM_U8, 1, (int64_t[]){8}));
  assert_int_equal(im_op_relu_forward(be, &u8, &u8), IM_ERR_ARG);
  assert_int_equal(im_op_fill(be, &u8, 1.0f), IM_ERR_ARG);
  OK(im_op_fill(be, &e, 3.0f));
  assert_true(im_tensor_f32(&e)[7] == 3.0f);

  /* linear: mismatched inner dimension */
  im_tensor_t lx = MK(3, 5), lw = MK(4, 6), ly = MK(3, 4);
  assert_int_equal(im_op_linear_forward(be, &lx, &lw, NULL, &ly), IM_ERR_ARG);
  /* layer norm: save tensors sized for rows */
  im_tensor_t lnx = MK(2, 3, 4), lny = MK(2, 3, 4), lsm = MK(6), lsi = MK(5);
  im_layernorm_params_t lp = IM_LAYERNORM_DEFAULTS;
  assert_int_equal(im_op_layernorm_forward(be, &lp, &lnx, NULL, NULL, &lny, &lsm, &lsi), IM_ERR_ARG);

  im_tensor_t *all[] = {&x, &w, &y, &bad, &bias7, &big, &w9, &px, &py, &pi, &z, &loss, &lab, &e, &u8,
                        &lx, &lw, &ly, &lnx, &lny, &lsm, &lsi};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) im_tensor_free(all[i]);
}

/* ---- the backend interface ---- */

static int relu_calls;
static im_status_t fake_relu(im_backend_t *b, im__ct *x, im__t *y) {
  relu_calls++;
  return im__ref_iface.relu_forward(b, x, y);
}
static im_status_t fake_gelu_declines(im_backend_t *b, im__ct *x, im__t *y) { return IM_ERR_UNSUPPORTED; }

static void test_backend_interface(void **state) {
  assert_string_equal(im_backend_name(be), "ref");
  for (int op = 0; op < IM_OP_COUNT_; op++) {
    assert_true(im_backend_supports(be, (im_op_t)op));
    assert_string_not_equal(im_op_name((im_op_t)op), "?");
  }
  assert_false(im_backend_supports(be, IM_OP_COUNT_));
  assert_string_equal(im_op_name(IM_OP_CONV2D_FORWARD), "conv2d_forward");
  assert_string_equal(im_op_name(IM_OP_FILL), "fill");
  OK(im_backend_sync(be));

  im_tensor_t t;
  OK(im_backend_tensor_alloc(be, &t, IM_F32, 2, (int64_t[]){2, 3}));
  const float src[6] = {1, 2, 3, 4, 5, 6};
  float back[6];
  OK(im_backend_tensor_set(be, &t, src, sizeof src));
  OK(im_backend_tensor_get(be, &t, back, sizeof back));
  assert_memory_equal(src, back, sizeof src);
  assert_int_equal(im_backend_tensor_set(be, &t, src, 5), IM_ERR_ARG);
  im_backend_tensor_free(be, &t);

  /* a host backend with one op of its own: the rest fall back to ref, declined ops too */
  static im_backend_i host_iface = {.version = IM_BACKEND_IFACE_VERSION, .name = "fakehost",
                                    .flags = IM_BACKEND_F_HOST, .relu_forward = fake_relu,
                                    .gelu_forward = fake_gelu_declines};
  im_backend_t *fb;
  OK(im__backend_new(&host_iface, NULL, &fb));
  im_tensor_t x = MK(4), y = MK(4);
  randomize(&x, 1.0);
  OK(im_op_relu_forward(fb, &x, &y));
  assert_int_equal(relu_calls, 1);
  OK(im_op_gelu_forward(fb, &x, &y));
  OK(im_op_add(fb, &x, &x, &y));
  assert_true(im_backend_supports(fb, IM_OP_CONV2D_FORWARD));
  im_backend_free(fb);

  /* a device backend (not host memory) has no fallback */
  static im_backend_i dev_iface = {.version = IM_BACKEND_IFACE_VERSION, .name = "fakedev", .relu_forward = fake_relu};
  OK(im__backend_new(&dev_iface, NULL, &fb));
  assert_true(im_backend_supports(fb, IM_OP_RELU_FORWARD));
  assert_false(im_backend_supports(fb, IM_OP_GELU_FORWARD));
  OK(im_op_relu_forward(fb, &x, &y));
  assert_int_equal(im_op_gelu_forward(fb, &x, &y), IM_ERR_UNSUPPORTED);
  assert_non_null(strstr(im_last_error(), "fakedev"));
  im_backend_free(fb);

  /* a vtable of another version is refused */
  static im_backend_i old_iface = {.version = IM_BACKEND_IFACE_VERSION + 1, .name = "future"};
  assert_int_equal(im__backend_new(&old_iface, NULL, &fb), IM_ERR_UNSUPPORTED);
  assert_null(fb);
  im_backend_free(NULL);
  im_tensor_free(&x);
  im_tensor_free(&y);
}

static void test_permute_dtypes(void **state) {
  im_tensor_t a, b, c;
  OK(im_tensor_alloc(&a, IM_U8, 4, (int64_t[]){2, 3, 4, 5}));
  OK(im_tensor_alloc(&b, IM_U8, 4, (int64_t[]){2, 4, 5, 3}));
  OK(im_tensor_alloc(&c, IM_U8, 4, (int64_t[]){2, 3, 4, 5}));
  for (int i = 0; i < 120; i++) ((uint8_t *)a.data)[i] = (uint8_t)i;
  OK(im_op_nchw_to_nhwc(be, &a, &b));
  /* b[n=1,h=2,w=3,c=1] == a[1,1,2,3] */
  assert_int_equal(((uint8_t *)b.data)[((1 * 4 + 2) * 5 + 3) * 3 + 1], ((uint8_t *)a.data)[((1 * 3 + 1) * 4 + 2) * 5 + 3]);
  OK(im_op_nhwc_to_nchw(be, &b, &c));
  assert_memory_equal(a.data, c.data, 120);
  assert_int_equal(im_op_nhwc_to_nchw(be, &a, &c), IM_ERR_ARG); /* shapes do not permute into each other */
  im_tensor_free(&a);
  im_tensor_free(&b);
  im_tensor_free(&c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_gradcheck_conv2d),      cmocka_unit_test(test_gradcheck_batchnorm),
      cmocka_unit_test(test_gradcheck_layernorm),   cmocka_unit_test(test_gradcheck_elementwise),
      cmocka_unit_test(test_gradcheck_pool),        cmocka_unit_test(test_gradcheck_linear),
      cmocka_unit_test(test_gradcheck_xent),        cmocka_unit_test(test_gradcheck_catches_errors),
      cmocka_unit_test(test_known_answers),
      cmocka_unit_test(test_batchnorm_running_stats), cmocka_unit_test(test_dropout_masks),
      cmocka_unit_test(test_argument_checks),       cmocka_unit_test(test_backend_interface),
      cmocka_unit_test(test_permute_dtypes),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
