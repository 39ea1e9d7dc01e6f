/* The cpu backend's pooling kernels against the reference backend, bit for bit: max pooling
 * without indices (the inference kernels: 2x2/2 and 3x3/2 pad 1 specialised, the rest general)
 * and with them, on plain and blocked (nChw16c) tensors, and global average pooling on plain,
 * blocked and channels-last tensors. The data are built to catch a kernel that is only nearly
 * right: values on a coarse grid (ties, among them -0 against +0, where the first maximum in
 * row-major order decides the sign), NaNs with distinct payloads (the first NaN of a window must
 * come out, bits and all), infinities, rows of -inf; sizes that are not multiples of the window,
 * of 16 output columns or of 16 channels (tails); and, for the averages, magnitudes spread over
 * 2^-30..2^30 so that summing in another order than the reference's changes the rounding. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "imops/backend.h"
#include "imops/core.h"
#include "imops/tensor.h"

#define OK(e)                                                                              \
  do {                                                                                     \
    im_status_t st_ = (e);                                                                 \
    if (st_ != IM_OK) fail_msg("%s -> %s: %s", #e, im_status_name(st_), im_last_error()); \
  } while (0)

static im_backend_t *ref, *cpu;
static im_rng_t rng;

static int setup(void **state) {
  (void)state;
  im_rng_seed(&rng, 20261129);
  if (im_backend_ref_new(&ref) != IM_OK) return -1;
  if (im_backend_cpu_new(&cpu) != IM_OK) {
    fprintf(stderr, "cpu backend: %s\n", im_last_error());
    return -1;
  }
  return 0;
}

static int teardown(void **state) {
  (void)state;
  im_backend_free(cpu);
  im_backend_free(ref);
  return 0;
}

static im_tensor_t mk(im_dtype_t dt, int ndim, const int64_t *shape, im_layout_t layout) {
  im_tensor_t t;
  OK(im_tensor_alloc(&t, dt, ndim, shape));
  t.layout = layout;
  return t;
}

/* t (plain) in layout l, by the cpu backend's relayout (a copy: bits kept). */
static im_tensor_t in_layout(const im_tensor_t *t, im_layout_t l) {
  im_tensor_t r = mk(t->dtype, t->ndim, t->shape, l);
  OK(im_op_relayout(cpu, t, &r));
  return r;
}

/* A NaN with payload k (so that which NaN came out can be told). */
static float nan_k(uint32_t k) {
  const uint32_t bits = 0x7FC00000u | (k & 0x3FFFFFu) | 1u;
  float f;
  memcpy(&f, &bits, sizeof f);
  return (k & 1) ? -f : f;
}

/* Max-pooling data: halves in [-2, 2] (many ties, -0 and +0 both), then with probability
 * nan_per_mille / 1000 a NaN of its own payload, now and then an infinity, and one row of -inf. */
static void fill_max(im_tensor_t *t, int nan_per_mille) {
  float *p = t->data;
  const int64_t n = im_tensor_numel(t), W = t->shape[3];
  for (int64_t i = 0; i < n; i++) {
    const uint32_t r = im_rng_below(&rng, 1000);
    float v = roundf((float)(4.0 * im_rng_uniform(&rng) - 2.0) * 2.0f) / 2.0f; /* -0.0 when it rounds from below 0 */
    if (r < (uint32_t)nan_per_mille)
      v = nan_k((uint32_t)i);
    else if (r < (uint32_t)nan_per_mille + 3)
      v = (r & 1) ? INFINITY : -INFINITY;
    p[i] = v;
  }
  if (n >= 2 * W)
    for (int64_t i = 0; i < W; i++) p[W + i] = -INFINITY;
}

/* got against want, bit for bit; on a difference, fails naming the first element. */
static void same_bits(const char *what, const im_tensor_t *got, const im_tensor_t *want) {
  assert_int_equal(im_tensor_numel(got), im_tensor_numel(want));
  assert_int_equal(got->layout, IM_LAYOUT_PLAIN);
  const int64_t n = im_tensor_numel(want);
  const uint32_t *a = got->data, *b = want->data;
  for (int64_t i = 0; i < n; i++)
    if (a[i] != b[i]) {
      float fa, fb;
      memcpy(&fa, &a[i], sizeof fa);
      memcpy(&fb, &b[i], sizeof fb);
      fail_msg("%s: element %lld is %g (0x%08x), the reference has %g (0x%08x)", what, (long long)i, (double)fa,
               (unsigned)a[i], (double)fb, (unsigned)b[i]);
    }
}

/* t in the plain layout (a copy where it is not). */
static im_tensor_t plain(const im_tensor_t *t) { return in_layout(t, IM_LAYOUT_PLAIN); }

/* ---- max pooling ---- */

typedef struct {
  int64_t N, C, H, W;
  int kh, kw, sh, sw, ph, pw;
} pool_case_t;

static const pool_case_t max_cases[] = {
    /* 2x2 stride 2: the surfacenet pools (even and odd sizes, 16-column tails, one column) */
    {2, 16, 8, 8, 2, 2, 2, 2, 0, 0},
    {1, 32, 13, 75, 2, 2, 2, 2, 0, 0},
    {2, 3, 9, 33, 2, 2, 2, 2, 0, 0},
    {1, 5, 7, 2, 2, 2, 2, 2, 0, 0},
    {1, 16, 5, 3, 2, 2, 2, 2, 0, 0},
    /* 3x3 stride 2 pad 1: the resnet stem pool (even and odd sizes, the clipped edges) */
    {1, 16, 12, 70, 3, 3, 2, 2, 1, 1},
    {2, 32, 9, 35, 3, 3, 2, 2, 1, 1},
    {2, 3, 11, 67, 3, 3, 2, 2, 1, 1},
    {1, 7, 3, 3, 3, 3, 2, 2, 1, 1},
    {1, 16, 2, 2, 3, 3, 2, 2, 1, 1},
    /* the general kernels */
    {1, 16, 9, 40, 3, 3, 1, 1, 1, 1},   /* stride 1 */
    {2, 5, 6, 37, 2, 2, 1, 1, 0, 0},    /* overlapping, stride 1, even window */
    {1, 16, 10, 41, 3, 3, 3, 3, 1, 1},  /* stride 3 */
    {2, 3, 8, 45, 1, 3, 2, 1, 0, 1},    /* 1x3, strides 2x1 */
    {1, 16, 11, 50, 4, 4, 2, 2, 2, 2},  /* 4 columns at stride 2 */
    {1, 6, 11, 50, 4, 5, 2, 2, 1, 2},   /* 5 columns at stride 2 */
    {1, 16, 5, 5, 5, 5, 1, 1, 2, 2},    /* window as large as the image */
    {1, 2, 4, 36, 2, 3, 2, 2, 0, 1},    /* 2 rows x 3 columns, stride 2 */
    {1, 32, 7, 19, 3, 2, 2, 2, 1, 0},   /* 3 rows x 2 columns (blocked: not the unrolled kernels) */
};

/* One case with one kind of data: the reference with indices against the cpu backend with and
 * without them, plain and (16-channel multiples) blocked, bit for bit. */
static void run_max_case(const pool_case_t *pc, int nan_per_mille) {
  const im_pool2d_params_t p = {pc->kh, pc->kw, pc->sh, pc->sw, pc->ph, pc->pw, 0};
  const int64_t xs[4] = {pc->N, pc->C, pc->H, pc->W};
  int64_t ys[4];
  OK(im_pool2d_output_shape(&p, xs, ys));
  char what[160];
  snprintf(what, sizeof what, "%lldx%lldx%lldx%lld pool %dx%d/%dx%d pad %dx%d, NaN %d/1000", (long long)pc->N,
           (long long)pc->C, (long long)pc->H, (long long)pc->W, pc->kh, pc->kw, pc->sh, pc->sw, pc->ph, pc->pw,
           nan_per_mille);
  im_tensor_t x = mk(IM_F32, 4, xs, IM_LAYOUT_PLAIN), y0 = mk(IM_F32, 4, ys, IM_LAYOUT_PLAIN),
              i0 = mk(IM_I32, 4, ys, IM_LAYOUT_PLAIN);
  fill_max(&x, nan_per_mille);
  OK(im_op_maxpool2d_forward(ref, &p, &x, &y0, &i0));
  for (int blocked = 0; blocked < 2; blocked++) {
    if (blocked && pc->C % 16) continue;
    const im_layout_t l = blocked ? IM_LAYOUT_NCHW16C : IM_LAYOUT_PLAIN;
    im_tensor_t xi = in_layout(&x, l);
    for (int with_idx = 0; with_idx < 2; with_idx++) {
      im_tensor_t y = mk(IM_F32, 4, ys, l), id = mk(IM_I32, 4, ys, l);
      im_tensor_fill_f32(&y, 12345.0f); /* every output must be written */
      OK(im_op_maxpool2d_forward(cpu, &p, &xi, &y, with_idx ? &id : NULL));
      char w2[220];
      snprintf(w2, sizeof w2, "%s, %s, %s: y", what, blocked ? "blocked" : "plain",
               with_idx ? "indices" : "no indices");
      im_tensor_t yp = plain(&y);
      same_bits(w2, &yp, &y0);
      if (with_idx) {
        im_tensor_t ip = plain(&id);
        snprintf(w2, sizeof w2, "%s, %s: indices", what, blocked ? "blocked" : "plain");
        same_bits(w2, &ip, &i0);
        im_tensor_free(&ip);
      }
      im_tensor_free(&yp), im_tensor_free(&y), im_tensor_free(&id);
    }
    im_tensor_free(&xi);
  }
  im_tensor_free(&x), im_tensor_free(&y0), im_tensor_free(&i0);
}

static void test_maxpool(void **state) {
  (void)state;
  for (size_t i = 0; i < sizeof max_cases / sizeof *max_cases; i++) {
    run_max_case(&max_cases[i], 0);   /* no NaN: the fast kernels alone */
    run_max_case(&max_cases[i], 2);   /* a few NaNs: some rows recomputed exactly */
    run_max_case(&max_cases[i], 150); /* many NaNs, several in a window */
  }
}

/* One NaN, at every position of the plane in turn (in every channel, its own payload per channel),
 * the rest finite: whatever the position, the kernels must see it. */
static void test_maxpool_each_nan(void **state) {
  (void)state;
  static const im_pool2d_params_t pools[] = {{2, 2, 2, 2, 0, 0, 0}, {3, 3, 2, 2, 1, 1, 0}, {3, 3, 1, 1, 1, 1, 0},
                                             {4, 4, 2, 2, 2, 2, 0}, {1, 3, 2, 1, 0, 1, 0}};
  static const int64_t shapes[2][4] = {{1, 16, 5, 35}, {1, 16, 6, 34}}; /* odd and even widths */
  for (int pi = 0; pi < 10; pi++) {
    const int64_t *xs = shapes[pi / 5], HW = xs[2] * xs[3];
    int64_t ys[4];
    const im_pool2d_params_t *pp = &pools[pi % 5];
    OK(im_pool2d_output_shape(pp, xs, ys));
    im_tensor_t x = mk(IM_F32, 4, xs, IM_LAYOUT_PLAIN), y0 = mk(IM_F32, 4, ys, IM_LAYOUT_PLAIN);
    fill_max(&x, 0);
    float *xd = x.data;
    for (int64_t pos = 0; pos < HW; pos++) {
      float keep[16];
      for (int c = 0; c < 16; c++) keep[c] = xd[c * HW + pos], xd[c * HW + pos] = nan_k((uint32_t)(100 + c));
      OK(im_op_maxpool2d_forward(ref, pp, &x, &y0, NULL));
      for (int blocked = 0; blocked < 2; blocked++) {
        const im_layout_t l = blocked ? IM_LAYOUT_NCHW16C : IM_LAYOUT_PLAIN;
        im_tensor_t xi = in_layout(&x, l), y = mk(IM_F32, 4, ys, l);
        OK(im_op_maxpool2d_forward(cpu, pp, &xi, &y, NULL));
        im_tensor_t yp = plain(&y);
        char what[120];
        snprintf(what, sizeof what, "case %d, a NaN at %lld, %s", pi, (long long)pos, blocked ? "blocked" : "plain");
        same_bits(what, &yp, &y0);
        im_tensor_free(&xi), im_tensor_free(&y), im_tensor_free(&yp);
      }
      for (int c = 0; c < 16; c++) xd[c * HW + pos] = keep[c];
    }
    im_tensor_free(&x), im_tensor_free(&y0);
  }
}

/* The sign of a zero maximum is the first zero's in row-major order: the rule that makes the
 * order of the kernels' maxima matter, shown directly on 2x2/2 and 3x3/2 windows of zeros. */
static void test_maxpool_signed_zero(void **state) {
  (void)state;
  static const im_pool2d_params_t pools[] = {{2, 2, 2, 2, 0, 0, 0}, {3, 3, 2, 2, 1, 1, 0}, {3, 3, 1, 1, 1, 1, 0}};
  const int64_t xs[4] = {1, 16, 6, 34};
  for (int pi = 0; pi < 3; pi++)
    for (int pattern = 0; pattern < 4; pattern++) {
      int64_t ys[4];
      OK(im_pool2d_output_shape(&pools[pi], xs, ys));
      im_tensor_t x = mk(IM_F32, 4, xs, IM_LAYOUT_PLAIN), y0 = mk(IM_F32, 4, ys, IM_LAYOUT_PLAIN);
      float *xd = x.data;
      for (int64_t i = 0; i < im_tensor_numel(&x); i++) /* zeros of both signs, or negatives */
        xd[i] = pattern == 0 ? ((i & 1) ? 0.0f : -0.0f)
                : pattern == 1 ? ((i & 1) ? -0.0f : 0.0f)
                : pattern == 2 ? (im_rng_below(&rng, 2) ? 0.0f : -0.0f)
                               : (im_rng_below(&rng, 3) ? -0.0f : (im_rng_below(&rng, 2) ? 0.0f : -1.0f));
      OK(im_op_maxpool2d_forward(ref, &pools[pi], &x, &y0, NULL));
      for (int blocked = 0; blocked < 2; blocked++) {
        const im_layout_t l = blocked ? IM_LAYOUT_NCHW16C : IM_LAYOUT_PLAIN;
        im_tensor_t xi = in_layout(&x, l), y = mk(IM_F32, 4, ys, l);
        OK(im_op_maxpool2d_forward(cpu, &pools[pi], &xi, &y, NULL));
        im_tensor_t yp = plain(&y);
        same_bits(blocked ? "signed zeros, blocked" : "signed zeros, plain", &yp, &y0);
        im_tensor_free(&xi), im_tensor_free(&y), im_tensor_free(&yp);
      }
      im_tensor_free(&x), im_tensor_free(&y0);
    }
}

/* ---- global average pooling ---- */

/* Values of magnitude 2^-30..2^30 and both signs: sums whose rounding depends on their order. */
static void fill_wide(im_tensor_t *t) {
  float *p = t->data;
  for (int64_t i = 0; i < im_tensor_numel(t); i++)
    p[i] = ldexpf((float)(2.0 * im_rng_uniform(&rng) - 1.0), (int)im_rng_below(&rng, 61) - 30);
}

/* Each plane: small values with big canceling pairs among them (2^40 then -2^40 near the start,
 * 2^41 then -2^41 in the middle), so that the double sum loses different low bits in every other
 * order of summation and the mean, even in float, tells which order was taken. */
static void fill_cancel(im_tensor_t *t) {
  float *p = t->data;
  const int64_t HW = t->shape[2] * t->shape[3], NC = t->shape[0] * t->shape[1];
  for (int64_t i = 0; i < NC * HW; i++) p[i] = (float)(2.0 * im_rng_uniform(&rng) - 1.0) / 64.0f;
  for (int64_t pl = 0; pl < NC && HW >= 6; pl++) {
    float *x = p + pl * HW;
    x[1] = 0x1p40f, x[2] = -0x1p40f;
    x[HW / 2 + 1] = 0x1p41f, x[HW / 2 + 2] = -0x1p41f;
  }
}

static void test_global_avgpool(void **state) {
  (void)state;
  static const int64_t shapes[][4] = {
      {3, 32, 7, 5},  {2, 48, 14, 14}, {1, 128, 3, 3}, {5, 16, 1, 1}, {2, 80, 4, 9}, /* blocked too */
      {3, 5, 7, 5},   {2, 20, 6, 7},   {1, 70, 5, 5},  {4, 3, 9, 2},  {1, 1, 3, 3},
  };
  for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++)
    for (int special = 0; special < 3; special++) {
      const int64_t *xs = shapes[si], ys[2] = {xs[0], xs[1]};
      im_tensor_t x = mk(IM_F32, 4, xs, IM_LAYOUT_PLAIN), y0 = mk(IM_F32, 2, ys, IM_LAYOUT_PLAIN);
      if (special == 2)
        fill_cancel(&x);
      else
        fill_wide(&x);
      if (special == 1) { /* a NaN plane and an infinite plane */
        float *xd = x.data;
        const int64_t HW = xs[2] * xs[3], NC = xs[0] * xs[1];
        xd[(NC - 1) * HW] = nan_k(7);
        xd[(NC / 2) * HW + HW - 1] = -INFINITY;
      }
      OK(im_op_global_avgpool_forward(ref, &x, &y0));
      for (int li = 0; li < 3; li++) {
        const im_layout_t l = li == 0 ? IM_LAYOUT_PLAIN : li == 1 ? IM_LAYOUT_NCHW16C : IM_LAYOUT_NHWC;
        if (l == IM_LAYOUT_NCHW16C && xs[1] % 16) continue;
        im_tensor_t xi = in_layout(&x, l), y = mk(IM_F32, 2, ys, IM_LAYOUT_PLAIN);
        im_tensor_fill_f32(&y, 12345.0f);
        OK(im_op_global_avgpool_forward(cpu, &xi, &y));
        char what[160];
        snprintf(what, sizeof what, "global_avgpool %lldx%lldx%lldx%lld %s%s", (long long)xs[0], (long long)xs[1],
                 (long long)xs[2], (long long)xs[3], li == 0 ? "plain" : li == 1 ? "blocked" : "channels-last",
                 special == 1 ? " with NaN and inf" : special == 2 ? " canceling" : "");
        same_bits(what, &y, &y0);
        im_tensor_free(&xi), im_tensor_free(&y);
      }
      im_tensor_free(&x), im_tensor_free(&y0);
    }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_maxpool),
      cmocka_unit_test(test_maxpool_each_nan),
      cmocka_unit_test(test_maxpool_signed_zero),
      cmocka_unit_test(test_global_avgpool),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
