/* Unit tests of the nn core: architectures (parameter counts and names as
 * torchvision's), initialization statistics, memory planning and a training
 * step that allocates nothing, batching and inference, the model bundle
 * (round trip, bad bundles), determinism, optimizers against hand-computed
 * updates, and learning-rate schedules against torch's values.
 *
 * With IM_NN_EXPORT_DIR set, the binary instead writes bundles and check
 * files for tests/integration/test_nn_torch.py (load into torchvision, same
 * logits) and exits. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imops/backend.h"
#include "imops/core.h"
#include "imops/nn.h"
#include "imops/tensor.h"
#include "testutil.h"

#define OK(e) assert_int_equal((e), IM_OK)

#if defined(__SANITIZE_ADDRESS__)
#define IM_SLOW 1 /* sanitizer builds: skip the largest models */
#else
#define IM_SLOW 0
#endif

static im_backend_t *be;

static int setup(void **state) { return im_backend_ref_new(&be) == IM_OK ? 0 : -1; }
static int teardown(void **state) {
  im_backend_free(be);
  return 0;
}

/* ---- helpers ---- */

static im_nn_model_t *mk(const char *arch, im_nn_model_opts_t o) {
  im_nn_model_t *m = NULL;
  if (im_nn_model_new(arch, &o, &m) != IM_OK) fail_msg("im_nn_model_new(%s): %s", arch, im_last_error());
  return m;
}

static void fill_normal(im_tensor_t *t, uint64_t seed) {
  im_rng_t r;
  im_rng_seed(&r, seed);
  float *p = im_tensor_f32(t);
  for (int64_t i = 0; i < im_tensor_numel(t); i++) p[i] = (float)im_rng_normal(&r);
}

static im_tensor_t batch(int64_t n, int64_t c, int64_t h, int64_t w, uint64_t seed) {
  im_tensor_t x;
  OK(im_tensor_alloc(&x, IM_F32, 4, (int64_t[]){n, c, h, w}));
  fill_normal(&x, seed);
  return x;
}

static im_nn_state_entry_t entry(const im_nn_model_t *m, const char *name) {
  for (size_t i = 0; i < im_nn_state_count(m); i++) {
    im_nn_state_entry_t e;
    OK(im_nn_state_get(m, i, &e));
    if (strcmp(e.name, name) == 0) return e;
  }
  fail_msg("no state entry %s", name);
  return (im_nn_state_entry_t){0};
}

static void assert_shape(const im_nn_model_t *m, const char *name, int ndim, const int64_t *shape) {
  im_nn_state_entry_t e = entry(m, name);
  assert_non_null(e.tensor);
  assert_int_equal(e.tensor->ndim, ndim);
  for (int i = 0; i < ndim; i++) assert_int_equal(e.tensor->shape[i], shape[i]);
}

/* 1 when every state entry of a and b is bitwise equal. */
static int same_state(const im_nn_model_t *a, const im_nn_model_t *b) {
  if (im_nn_state_count(a) != im_nn_state_count(b)) return 0;
  for (size_t i = 0; i < im_nn_state_count(a); i++) {
    im_nn_state_entry_t x, y;
    OK(im_nn_state_get(a, i, &x));
    OK(im_nn_state_get(b, i, &y));
    if (strcmp(x.name, y.name) != 0 || x.kind != y.kind) return 0;
    if (x.kind == IM_NN_STATE_COUNTER) {
      if (*x.counter != *y.counter) return 0;
    } else if (!im_tensor_same_shape(x.tensor, y.tensor) ||
               memcmp(x.tensor->data, y.tensor->data, im_tensor_nbytes(x.tensor)) != 0) {
      return 0;
    }
  }
  return 1;
}

static void stats(const im_tensor_t *t, double *mean, double *std, double *maxabs) {
  const float *p = im_tensor_f32(t);
  const int64_t n = im_tensor_numel(t);
  double s = 0, ss = 0, mx = 0;
  for (int64_t i = 0; i < n; i++) {
    s += p[i];
    ss += (double)p[i] * p[i];
    if (fabs(p[i]) > mx) mx = fabs(p[i]);
  }
  *mean = s / n;
  *std = sqrt(ss / n - *mean * *mean);
  *maxabs = mx;
}

/* One training step: zero, forward, loss, backward, clip, optimizer. */
static float train_step(im_nn_model_t *m, im_nn_optim_t *opt, const im_tensor_t *x, const int32_t *labels) {
  float loss;
  im_nn_zero_grad(m);
  OK(im_nn_forward(m, x, 1, NULL));
  OK(im_nn_loss(m, labels, 0.1f, &loss));
  OK(im_nn_backward(m));
  OK(im_nn_clip_grad_norm(m, 10.0, NULL));
  OK(im_nn_optim_step(opt));
  return loss;
}

/* ---- architectures ---- */

typedef struct {
  const char *arch;
  im_nn_model_opts_t o;
  int64_t params;
  size_t state, nparams;
  int big;
} arch_case_t;

static void test_archs(void **state) {
  /* Expected counts from torchvision 0.14 (and SurfaceNet in tools/ref/gen_model_fixtures.py):
   * sum(p.numel() for p in m.parameters()), len(m.state_dict()), len(list(m.parameters())). */
  const arch_case_t cases[] = {
      {"surfacenet", {.num_classes = 2}, 93730, 20, 11, 0},
      {"smallcnn", {.num_classes = 10, .in_channels = 1}, 94186, 20, 11, 0},
      {"resnet18", {.num_classes = 2}, 11177538, 122, 62, 0},
      {"resnet34", {.num_classes = 2}, 21285698, 218, 110, 1},
      {"convnext-atto", {.num_classes = 2}, 3375162, 128, 128, 0},
      {"convnext-femto", {.num_classes = 2}, 4833554, 128, 128, 1},
      {"convnext-pico", {.num_classes = 2}, 8533698, 128, 128, 1},
      {"convnext-nano", {.num_classes = 2}, 14953842, 146, 146, 1},
      {"convnext-tiny", {.num_classes = 2}, 27821666, 182, 182, 0},
  };
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    if (cases[i].big && IM_SLOW) continue;
    im_nn_model_t *m = mk(cases[i].arch, cases[i].o);
    printf("  %-15s %10lld params (torchvision %lld), %zu state entries, %zu nodes\n", cases[i].arch,
           (long long)im_nn_model_num_params(m), (long long)cases[i].params, im_nn_state_count(m),
           im_nn_model_num_nodes(m));
    assert_int_equal(im_nn_model_num_params(m), cases[i].params);
    assert_int_equal(im_nn_state_count(m), cases[i].state);
    assert_int_equal(im_nn_param_count(m), cases[i].nparams);
    if (strcmp(cases[i].arch, "resnet18") == 0) {
      im_nn_state_entry_t e;
      OK(im_nn_state_get(m, 5, &e));
      assert_string_equal(e.name, "bn1.num_batches_tracked");
      assert_int_equal(e.kind, IM_NN_STATE_COUNTER);
      OK(im_nn_state_get(m, im_nn_state_count(m) - 3, &e));
      assert_string_equal(e.name, "layer4.1.bn2.num_batches_tracked");
      assert_shape(m, "conv1.weight", 4, (int64_t[]){64, 3, 7, 7});
      assert_shape(m, "layer1.0.conv1.weight", 4, (int64_t[]){64, 64, 3, 3});
      assert_shape(m, "layer2.0.downsample.0.weight", 4, (int64_t[]){128, 64, 1, 1});
      assert_shape(m, "layer2.0.downsample.1.running_var", 1, (int64_t[]){128});
      assert_shape(m, "layer4.1.bn2.bias", 1, (int64_t[]){512});
      assert_shape(m, "fc.weight", 2, (int64_t[]){2, 512});
      assert_shape(m, "fc.bias", 1, (int64_t[]){2});
      im_nn_param_t p;
      OK(im_nn_param_get(m, 0, &p));
      assert_string_equal(p.name, "conv1.weight");
      assert_int_equal(p.decay, 1);
      OK(im_nn_param_get(m, 1, &p));
      assert_string_equal(p.name, "bn1.weight");
      assert_int_equal(p.decay, 0);
      assert_int_equal(im_nn_param_find(m, "fc.bias"), 61);
      assert_int_equal(im_nn_param_find(m, "nope"), -1);
    }
    if (strcmp(cases[i].arch, "convnext-tiny") == 0) {
      im_nn_state_entry_t e;
      OK(im_nn_state_get(m, 4, &e));
      assert_string_equal(e.name, "features.1.0.layer_scale");
      OK(im_nn_state_get(m, 5, &e));
      assert_string_equal(e.name, "features.1.0.block.0.weight");
      assert_shape(m, "features.0.0.weight", 4, (int64_t[]){96, 3, 4, 4});
      assert_shape(m, "features.0.1.weight", 1, (int64_t[]){96});
      assert_shape(m, "features.1.0.layer_scale", 3, (int64_t[]){96, 1, 1});
      assert_shape(m, "features.1.0.block.0.weight", 4, (int64_t[]){96, 1, 7, 7});
      assert_shape(m, "features.1.0.block.3.weight", 2, (int64_t[]){384, 96});
      assert_shape(m, "features.1.0.block.5.weight", 2, (int64_t[]){96, 384});
      assert_shape(m, "features.2.1.weight", 4, (int64_t[]){192, 96, 2, 2});
      assert_shape(m, "features.5.8.block.2.bias", 1, (int64_t[]){384});
      assert_shape(m, "features.7.2.block.5.bias", 1, (int64_t[]){768});
      assert_shape(m, "classifier.0.weight", 1, (int64_t[]){768});
      assert_shape(m, "classifier.2.weight", 2, (int64_t[]){2, 768});
      OK(im_nn_state_get(m, im_nn_state_count(m) - 1, &e));
      assert_string_equal(e.name, "classifier.2.bias");
      im_nn_param_t p;
      OK(im_nn_param_get(m, 4, &p));
      assert_int_equal(p.decay, 0); /* layer_scale */
    }
    if (strcmp(cases[i].arch, "smallcnn") == 0) {
      im_nn_model_opts_t ro;
      im_nn_model_get_opts(m, &ro);
      assert_int_equal(ro.stem_stride, 1);
      assert_shape(m, "conv1.weight", 4, (int64_t[]){32, 1, 3, 3});
      assert_shape(m, "fc.weight", 2, (int64_t[]){10, 128});
    }
    im_nn_model_free(m);
  }
  /* Names, aliases and option checks. */
  assert_true(im_nn_arch_count() >= 9);
  assert_string_equal(im_nn_arch_name(0), "surfacenet");
  assert_null(im_nn_arch_name(im_nn_arch_count()));
  im_nn_model_t *m = NULL;
  assert_int_equal(im_nn_model_new("resnet50", NULL, &m), IM_ERR_NOT_FOUND);
  assert_non_null(strstr(im_last_error(), "unknown architecture 'resnet50'"));
  assert_null(m);
  OK(im_nn_model_new("convnext_atto", &(im_nn_model_opts_t){.width = 0.25f}, &m));
  assert_string_equal(im_nn_model_arch(m), "convnext-atto");
  assert_shape(m, "features.0.0.weight", 4, (int64_t[]){10, 3, 4, 4});
  im_nn_model_free(m);
  const struct {
    const char *arch;
    im_nn_model_opts_t o;
  } bad[] = {
      {"surfacenet", {.in_channels = 2}},  {"surfacenet", {.num_classes = -1}}, {"surfacenet", {.width = -1.0f}},
      {"surfacenet", {.dropout = 1.0f}},   {"surfacenet", {.depths = {1}}},     {"surfacenet", {.stem_stride = 3}},
      {"resnet18", {.stem_stride = 1}},    {"resnet18", {.drop_path = 0.1f}},   {"resnet18", {.depths = {65}}},
      {"convnext-atto", {.drop_path = 1}}, {"resnet18", {.layer_scale = 1}},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    assert_int_equal(im_nn_model_new(bad[i].arch, &bad[i].o, &m), IM_ERR_ARG);
    assert_null(m);
  }
  im_nn_model_free(NULL);
}

/* ---- initialization ---- */

static void test_init_stats(void **state) {
  im_nn_model_t *m = mk("resnet18", (im_nn_model_opts_t){.num_classes = 2, .seed = 1});
  double mean, std, mx;
  /* kaiming_normal_(fan_out, relu): std = sqrt(2 / (K R S)) */
  stats(entry(m, "conv1.weight").tensor, &mean, &std, &mx);
  assert_true(fabs(std / sqrt(2.0 / (64 * 49)) - 1.0) < 0.04);
  assert_true(fabs(mean) < 0.002);
  stats(entry(m, "layer4.1.conv2.weight").tensor, &mean, &std, &mx);
  assert_true(fabs(std / sqrt(2.0 / (512 * 9)) - 1.0) < 0.01);
  stats(entry(m, "layer3.0.downsample.0.weight").tensor, &mean, &std, &mx);
  assert_true(fabs(std / sqrt(2.0 / 256) - 1.0) < 0.03);
  /* fc: torch's Linear default, U(+-1/sqrt(fan_in)) for weight and bias */
  const double bound = 1.0 / sqrt(512.0);
  stats(entry(m, "fc.weight").tensor, &mean, &std, &mx);
  assert_true(mx <= bound);
  assert_true(fabs(std / (bound / sqrt(3.0)) - 1.0) < 0.08);
  stats(entry(m, "fc.bias").tensor, &mean, &std, &mx);
  assert_true(mx <= bound && mx > 0.0);
  /* BN: weight 1, bias 0, running stats 0 and 1, no batches tracked */
  stats(entry(m, "layer2.1.bn1.weight").tensor, &mean, &std, &mx);
  assert_true(mean == 1.0 && std == 0.0);
  stats(entry(m, "layer2.1.bn1.bias").tensor, &mean, &std, &mx);
  assert_true(mx == 0.0);
  stats(entry(m, "layer2.1.bn1.running_var").tensor, &mean, &std, &mx);
  assert_true(mean == 1.0 && std == 0.0);
  stats(entry(m, "layer2.1.bn1.running_mean").tensor, &mean, &std, &mx);
  assert_true(mx == 0.0);
  assert_int_equal(*entry(m, "bn1.num_batches_tracked").counter, 0);
  im_nn_model_free(m);

  m = mk("convnext-atto", (im_nn_model_opts_t){.num_classes = 2, .seed = 1});
  stats(entry(m, "features.0.0.weight").tensor, &mean, &std, &mx);
  assert_true(fabs(std / 0.02 - 1.0) < 0.07);
  stats(entry(m, "features.5.0.block.3.weight").tensor, &mean, &std, &mx);
  assert_true(fabs(std / 0.02 - 1.0) < 0.01);
  assert_true(mx < 0.02 * 6);
  stats(entry(m, "features.5.0.block.0.weight").tensor, &mean, &std, &mx);
  assert_true(fabs(std / 0.02 - 1.0) < 0.04);
  const char *zeros[] = {"features.0.0.bias", "features.5.0.block.0.bias", "features.5.0.block.3.bias",
                         "features.5.0.block.2.bias", "classifier.2.bias", "features.4.1.bias"};
  for (size_t i = 0; i < sizeof zeros / sizeof *zeros; i++) {
    stats(entry(m, zeros[i]).tensor, &mean, &std, &mx);
    assert_true(mx == 0.0);
  }
  stats(entry(m, "features.3.1.layer_scale").tensor, &mean, &std, &mx);
  assert_true(mean == (double)1e-6f && std == 0.0);
  stats(entry(m, "features.3.1.block.2.weight").tensor, &mean, &std, &mx);
  assert_true(mean == 1.0 && std == 0.0);
  im_nn_model_free(m);

  m = mk("convnext-atto", (im_nn_model_opts_t){.num_classes = 2, .seed = 1, .layer_scale = 0.5f});
  stats(entry(m, "features.1.0.layer_scale").tensor, &mean, &std, &mx);
  assert_true(mean == 0.5);
  im_nn_model_free(m);
}

/* ---- planning, no allocation in the step ---- */

static void no_malloc_case(const char *arch, im_nn_model_opts_t o, int64_t b, int64_t hw, im_nn_optim_kind_t kind) {
  im_nn_model_t *m = mk(arch, o);
  OK(im_nn_plan(m, be, b, hw, hw, 1));
  const size_t train_bytes = im_nn_plan_bytes(m), unshared = im_nn_plan_bytes_unshared(m);
  im_nn_optim_opts_t oo = im_nn_optim_defaults(kind);
  oo.momentum = 0.9;
  oo.nesterov = kind == IM_NN_OPTIM_SGD;
  oo.weight_decay = 1e-4;
  oo.decay_filter = 1;
  im_nn_optim_t *opt;
  OK(im_nn_optim_new(m, &oo, &opt));
  im_tensor_t x = batch(b, o.in_channels ? o.in_channels : 3, hw, hw, 5), xe = batch(1, 3, hw, hw, 6), probs;
  OK(im_tensor_alloc(&probs, IM_F32, 2, (int64_t[]){b, m ? im_nn_model_num_classes(m) : 0}));
  int32_t labels[64];
  for (int i = 0; i < 64; i++) labels[i] = i % 2;
  const im_nn_sched_t sched = {.kind = IM_NN_SCHED_COSINE, .base_lr = kind == IM_NN_OPTIM_SGD ? 0.1 : 1e-3,
                               .t_max = 10, .warmup = 2, .warmup_start = 0.1};
  /* Warm-up: one pass of everything the loop does, so that backends that cache
   * per-shape state (the cpu backend's primitives and workspace) have filled it. */
  float first = 0, last = 0;
  int64_t live = 0;
  for (int s = -1; s < 3; s++) {
    if (s == 0) {
      live = im_alloc_live_bytes();
      im_alloc_fail_after(1); /* from here on, the next allocation through the funnel fails */
    }
    im_nn_optim_set_lr(opt, im_nn_sched_lr(&sched, s < 0 ? 0 : s));
    last = train_step(m, opt, &x, labels);
    if (s == 0) first = last;
    im_tensor_t lg;
    OK(im_nn_forward(m, &xe, 0, &lg)); /* eval on a partial batch */
    OK(im_nn_loss(m, labels, 0.0f, NULL));
    OK(im_nn_predict(m, &x, NULL, &probs));
    if (s == 2) {
      im_alloc_fail_after(0);
      assert_int_equal(im_alloc_live_bytes(), live);
    }
  }
  printf("  %-14s batch %lld at %lldx%lld: train plan %.2f MiB (%.2f MiB without reuse), loss %.4f -> %.4f\n",
         arch, (long long)b, (long long)hw, (long long)hw, train_bytes / 1048576.0, unshared / 1048576.0, first,
         last);
  assert_true(train_bytes < unshared);
  assert_true(isfinite(first) && isfinite(last) && first > 0.0f && last > 0.0f);
  /* An inference plan reuses more. */
  OK(im_nn_plan(m, be, b, hw, hw, 0));
  printf("  %-14s inference plan %.2f MiB\n", arch, im_nn_plan_bytes(m) / 1048576.0);
  assert_true(im_nn_plan_bytes(m) < train_bytes);
  im_tensor_t lg;
  assert_int_equal(im_nn_forward(m, &x, 1, &lg), IM_ERR_STATE);
  OK(im_nn_forward(m, &x, 0, &lg));
  im_tensor_free(&x);
  im_tensor_free(&xe);
  im_tensor_free(&probs);
  im_nn_optim_free(opt);
  im_nn_model_free(m);
}

static void test_plan_no_malloc(void **state) {
  no_malloc_case("surfacenet", (im_nn_model_opts_t){.num_classes = 2, .dropout = 0.2f, .seed = 3}, 4, 24,
                 IM_NN_OPTIM_SGD);
  no_malloc_case("resnet18", (im_nn_model_opts_t){.num_classes = 2, .width = 0.125f, .seed = 3}, 2, 32,
                 IM_NN_OPTIM_ADAMW);
  no_malloc_case("convnext-atto",
                 (im_nn_model_opts_t){.num_classes = 2, .width = 0.125f, .drop_path = 0.2f, .dropout = 0.1f,
                                      .layer_scale = 0.5f, .seed = 3},
                 2, 32, IM_NN_OPTIM_ADAM);
}

/* ---- batching and inference ---- */

static void test_batches_and_predict(void **state) {
  im_nn_model_t *m = mk("resnet18", (im_nn_model_opts_t){.num_classes = 3, .width = 0.125f, .seed = 9});
  OK(im_nn_plan(m, be, 4, 32, 32, 1));
  im_tensor_t x = batch(5, 3, 32, 32, 1), lg, all, probs, logits;
  const int64_t per = 3 * 32 * 32;
  /* Eval mode is per sample: a batch and its samples one by one give the same logits, bit for bit. */
  im_tensor_t x4;
  OK(im_tensor_view(&x4, IM_F32, 4, (int64_t[]){4, 3, 32, 32}, x.data));
  OK(im_nn_forward(m, &x4, 0, &lg));
  assert_int_equal(lg.ndim, 2);
  assert_int_equal(lg.shape[0], 4);
  assert_int_equal(lg.shape[1], 3);
  OK(im_tensor_alloc(&all, IM_F32, 2, (int64_t[]){4, 3}));
  OK(im_tensor_copy(&all, &lg));
  for (int i = 0; i < 4; i++) {
    im_tensor_t xi;
    OK(im_tensor_view(&xi, IM_F32, 4, (int64_t[]){1, 3, 32, 32}, im_tensor_f32(&x) + i * per));
    OK(im_nn_forward(m, &xi, 0, &lg));
    assert_int_equal(lg.shape[0], 1);
    assert_memory_equal(lg.data, im_tensor_f32(&all) + i * 3, 3 * sizeof(float));
  }
  /* predict runs any N in chunks of the planned batch. */
  OK(im_tensor_alloc(&probs, IM_F32, 2, (int64_t[]){5, 3}));
  OK(im_tensor_alloc(&logits, IM_F32, 2, (int64_t[]){5, 3}));
  OK(im_nn_predict(m, &x, &logits, &probs));
  assert_memory_equal(logits.data, all.data, 4 * 3 * sizeof(float));
  for (int i = 0; i < 5; i++) {
    const float *p = im_tensor_f32(&probs) + i * 3, *l = im_tensor_f32(&logits) + i * 3;
    assert_true(fabs(p[0] + p[1] + p[2] - 1.0) < 1e-6);
    assert_true((l[0] > l[1]) == (p[0] > p[1]));
  }
  /* Input checks. */
  im_tensor_t bad;
  OK(im_tensor_view(&bad, IM_F32, 4, (int64_t[]){5, 3, 32, 32}, x.data));
  assert_int_equal(im_nn_forward(m, &bad, 0, &lg), IM_ERR_ARG); /* more than planned */
  OK(im_tensor_view(&bad, IM_F32, 4, (int64_t[]){2, 3, 32, 16}, x.data));
  assert_int_equal(im_nn_forward(m, &bad, 0, &lg), IM_ERR_ARG);
  assert_int_equal(im_nn_predict(m, &bad, NULL, NULL), IM_ERR_ARG);
  OK(im_tensor_view(&bad, IM_F32, 2, (int64_t[]){5, 2}, logits.data));
  assert_int_equal(im_nn_predict(m, &x, &bad, NULL), IM_ERR_ARG);
  /* Training with a partial batch, and the phase rules. */
  int32_t labels[4] = {0, 1, 2, 1};
  assert_int_equal(im_nn_backward(m), IM_ERR_STATE);
  im_tensor_t x2;
  OK(im_tensor_view(&x2, IM_F32, 4, (int64_t[]){2, 3, 32, 32}, x.data));
  OK(im_nn_forward(m, &x2, 1, &lg));
  assert_int_equal(lg.shape[0], 2);
  assert_int_equal(im_nn_backward(m), IM_ERR_STATE); /* no loss yet */
  labels[1] = 3;
  assert_int_equal(im_nn_loss(m, labels, 0.0f, NULL), IM_ERR_ARG);
  labels[1] = 1;
  assert_int_equal(im_nn_loss(m, labels, 1.5f, NULL), IM_ERR_ARG);
  float loss;
  OK(im_nn_loss(m, labels, 0.0f, &loss));
  assert_true(loss > 0.0f && loss < 10.0f);
  OK(im_nn_backward(m));
  assert_int_equal(im_nn_backward(m), IM_ERR_STATE); /* once per forward */
  /* backward_from: the gradient of sum(logits * r) equals backward of a loss with that dlogits. */
  im_tensor_t dl;
  OK(im_tensor_alloc(&dl, IM_F32, 2, (int64_t[]){2, 3}));
  fill_normal(&dl, 4);
  OK(im_nn_forward(m, &x2, 1, &lg));
  im_nn_zero_grad(m);
  OK(im_nn_backward_from(m, &dl));
  im_nn_param_t p;
  OK(im_nn_param_get(m, (size_t)im_nn_param_find(m, "fc.bias"), &p));
  /* d/db sum(r * (W h + b)) = column sums of r */
  for (int k = 0; k < 3; k++)
    assert_true(fabs(im_tensor_f32(p.grad)[k] - (im_tensor_f32(&dl)[k] + im_tensor_f32(&dl)[3 + k])) < 1e-6);
  im_tensor_free(&dl);
  im_tensor_free(&x);
  im_tensor_free(&all);
  im_tensor_free(&probs);
  im_tensor_free(&logits);
  /* Unplanned models and images too small for the architecture. */
  im_nn_model_free(m);
  m = mk("surfacenet", (im_nn_model_opts_t){0});
  x = batch(1, 3, 8, 8, 1);
  assert_int_equal(im_nn_forward(m, &x, 0, &lg), IM_ERR_STATE);
  assert_int_equal(im_nn_plan(m, NULL, 1, 8, 8, 0), IM_ERR_ARG); /* no backend yet */
  assert_int_equal(im_nn_plan(m, be, 1, 2, 2, 0), IM_ERR_ARG);
  assert_non_null(strstr(im_last_error(), "does not fit"));
  assert_int_equal(im_nn_plan(m, be, 0, 8, 8, 0), IM_ERR_ARG);
  OK(im_nn_plan(m, be, 1, 8, 8, 0));
  OK(im_nn_forward(m, &x, 0, &lg));
  im_tensor_free(&x);
  im_nn_model_free(m);
  m = mk("convnext-atto", (im_nn_model_opts_t){.width = 0.125f});
  assert_int_equal(im_nn_plan(m, be, 2, 16, 16, 1), IM_ERR_ARG);
  OK(im_nn_plan(m, be, 2, 32, 32, 1));
  im_nn_model_free(m);
}

/* ---- the bundle ---- */

static void roundtrip(const char *arch, im_nn_model_opts_t o) {
  const char *tmp = tu_tmpdir(), *dir = tu_path(tmp, "model");
  im_nn_model_t *m = mk(arch, o);
  const int nc = im_nn_model_num_classes(m);
  OK(im_nn_plan(m, be, 2, 32, 32, 1));
  im_nn_optim_opts_t oo = im_nn_optim_defaults(IM_NN_OPTIM_SGD);
  oo.momentum = 0.9;
  im_nn_optim_t *opt;
  OK(im_nn_optim_new(m, &oo, &opt));
  im_tensor_t x = batch(2, 3, 32, 32, 11), lg;
  const int32_t labels[2] = {0, 1};
  train_step(m, opt, &x, labels); /* running stats and counters move */
  const char *classes[] = {"Negative", "Positive", "Unsure"};
  const char *mnames[] = {"val_accuracy", "val_loss"};
  const double mvals[] = {0.9875, 0.0421};
  im_nn_bundle_meta_t meta = {.classes = classes, .num_classes = (size_t)nc, .img_h = 32, .img_w = 32, .n_norm = 3,
                              .mean = {0.485f, 0.456f, 0.406f}, .std = {0.229f, 0.224f, 0.225f},
                              .metric_names = mnames, .metric_values = mvals, .n_metrics = 2, .run_id = "abc123"};
  OK(im_nn_bundle_save(m, dir, &meta));
  OK(im_nn_forward(m, &x, 0, &lg));
  float want[8];
  memcpy(want, lg.data, sizeof(float) * 2 * (size_t)nc);

  im_nn_model_t *l;
  im_nn_bundle_meta_t got;
  OK(im_nn_bundle_load(dir, be, &l, &got));
  assert_string_equal(im_nn_model_arch(l), arch);
  assert_true(same_state(m, l));
  im_nn_model_opts_t ro, lo;
  im_nn_model_get_opts(m, &ro);
  im_nn_model_get_opts(l, &lo);
  assert_memory_equal(&ro, &lo, sizeof ro);
  if (strcmp(arch, "resnet18") == 0) assert_int_equal(*entry(l, "bn1.num_batches_tracked").counter, 1);
  OK(im_nn_plan(l, NULL, 2, 32, 32, 0)); /* the backend given to load */
  OK(im_nn_forward(l, &x, 0, &lg));
  assert_memory_equal(lg.data, want, sizeof(float) * 2 * (size_t)nc);
  assert_int_equal(got.num_classes, nc);
  for (int i = 0; i < nc; i++) assert_string_equal(got.classes[i], classes[i]);
  assert_int_equal(got.img_h, 32);
  assert_int_equal(got.n_norm, 3);
  assert_true(got.mean[1] == 0.456f && got.std[2] == 0.225f);
  assert_int_equal(got.n_metrics, 2);
  assert_string_equal(got.metric_names[0], "val_accuracy");
  assert_true(got.metric_values[0] == 0.9875 && got.metric_values[1] == 0.0421);
  assert_non_null(got.created);
  assert_int_equal(strlen(got.model_uuid), 32);
  assert_non_null(got.imops_version);
  /* model.json and MLmodel as documented. */
  json_error_t je;
  json_t *j = json_load_file(tu_path(dir, "model.json"), 0, &je);
  assert_non_null(j);
  assert_string_equal(json_string_value(json_object_get(j, "format")), "imops-model");
  assert_int_equal(json_integer_value(json_object_get(j, "format_version")), 1);
  assert_int_equal(json_integer_value(json_object_get(j, "num_params")), im_nn_model_num_params(m));
  json_decref(j);
  uint8_t *ml;
  size_t len;
  OK(im_file_read(tu_path(dir, "MLmodel"), 0, &ml, &len));
  char sig[160];
  snprintf(sig, sizeof sig, "\"shape\": [-1, 3, 32, 32]}}]'");
  assert_non_null(strstr((char *)ml, sig));
  snprintf(sig, sizeof sig, "\"shape\": [-1, %d]}}]'", nc);
  assert_non_null(strstr((char *)ml, sig));
  assert_non_null(strstr((char *)ml, "artifact_path: model\nflavors:\n  imops:\n"));
  assert_non_null(strstr((char *)ml, "run_id: abc123\n"));
  assert_non_null(strstr((char *)ml, got.model_uuid));
  im_free(ml);
  /* num_batches_tracked is an F32 scalar in the file. */
  im_safetensors_t *st;
  OK(im_safetensors_load(tu_path(dir, "model.safetensors"), 0, &st));
  assert_int_equal(im_safetensors_count(st), im_nn_state_count(m));
  im_nn_bundle_meta_free(&got);
  im_nn_bundle_meta_free(NULL);
  im_safetensors_free(st);
  im_nn_model_free(l);
  im_tensor_free(&x);
  im_nn_optim_free(opt);
  im_nn_model_free(m);
  tu_rmtree(tmp);
}

static void test_bundle_roundtrip(void **state) {
  roundtrip("resnet18", (im_nn_model_opts_t){.num_classes = 3, .width = 0.125f, .dropout = 0.25f,
                                             .depths = {1, 2, 1, 1}, .seed = 4});
  roundtrip("convnext-atto", (im_nn_model_opts_t){.num_classes = 2, .width = 0.125f, .seed = 0xFEDCBA9876543210ULL,
                                                  .layer_scale = 0.1f, .drop_path = 0.125f});
}

static void write_json(const char *path, json_t *j) {
  char *s = json_dumps(j, 0);
  assert_int_equal(tu_write_file(path, s, strlen(s)), 0);
  free(s);
}

/* Temporary directories of the bundle tests, removed by the test at its end. */
static const char *tmps[32];
static int ntmp;

static const char *tmpdir(void) {
  assert_true(ntmp < 32);
  return tmps[ntmp++] = tu_tmpdir();
}

static void rm_tmps(void) {
  while (ntmp > 0) tu_rmtree(tmps[--ntmp]);
}

/* A bundle of surfacenet width 0.5 in a fresh directory; returns the directory. */
static const char *good_bundle(void) {
  const char *dir = tu_path(tmpdir(), "b");
  im_nn_model_t *m = mk("surfacenet", (im_nn_model_opts_t){.width = 0.5f});
  im_nn_bundle_meta_t meta = {.img_h = 32, .img_w = 32};
  OK(im_nn_bundle_save(m, dir, &meta));
  im_nn_model_free(m);
  return dir;
}

static void expect_load_error(const char *dir, im_status_t want, const char *msg) {
  im_nn_model_t *m = (im_nn_model_t *)&m; /* must be set to NULL */
  im_nn_bundle_meta_t meta;
  im_status_t st = im_nn_bundle_load(dir, be, &m, &meta);
  printf("  load error: %s\n", im_last_error());
  assert_int_equal(st, want);
  assert_null(m);
  assert_null(meta.priv_);
  if (msg && !strstr(im_last_error(), msg)) fail_msg("error '%s' does not mention '%s'", im_last_error(), msg);
}

static void edit_json(const char *dir, const char *key, json_t *value) {
  json_error_t je;
  json_t *j = json_load_file(tu_path(dir, "model.json"), 0, &je);
  assert_non_null(j);
  json_object_set_new(j, key, value);
  write_json(tu_path(dir, "model.json"), j);
  json_decref(j);
}

/* Rewrites dir/model.safetensors from a model's state, dropping `drop` and adding `add`. */
static void rewrite_weights(const char *dir, const char *drop, const char *add) {
  im_nn_model_t *m = mk("surfacenet", (im_nn_model_opts_t){.width = 0.5f});
  im_named_tensor_t list[64];
  im_tensor_t cnt[64];
  float zero = 0.0f;
  size_t n = 0;
  for (size_t i = 0; i < im_nn_state_count(m); i++) {
    im_nn_state_entry_t e;
    OK(im_nn_state_get(m, i, &e));
    if (drop && strcmp(e.name, drop) == 0) continue;
    if (e.kind == IM_NN_STATE_COUNTER) {
      OK(im_tensor_view(&cnt[n], IM_F32, 0, NULL, &zero));
      list[n] = (im_named_tensor_t){e.name, &cnt[n]};
    } else {
      list[n] = (im_named_tensor_t){e.name, e.tensor};
    }
    n++;
  }
  if (add) list[n++] = (im_named_tensor_t){add, entry(m, "fc.bias").tensor};
  OK(im_safetensors_write(tu_path(dir, "model.safetensors"), list, n, NULL, 0));
  im_nn_model_free(m);
}

static void test_bundle_errors(void **state) {
  expect_load_error(tu_path(tmpdir(), "nothing-here"), IM_ERR_NOT_FOUND, "model.json");
  const char *d = good_bundle();
  remove(tu_path(d, "model.safetensors"));
  expect_load_error(d, IM_ERR_NOT_FOUND, "model.safetensors");

  d = good_bundle();
  assert_int_equal(tu_write_file(tu_path(d, "model.json"), "{\"format\": ", 11), 0);
  expect_load_error(d, IM_ERR_FORMAT, "invalid JSON");

  d = good_bundle();
  edit_json(d, "format_version", json_integer(2));
  expect_load_error(d, IM_ERR_FORMAT, "format_version 2 is not supported");

  d = good_bundle();
  edit_json(d, "format", json_string("something-else"));
  expect_load_error(d, IM_ERR_FORMAT, "not an imops model bundle");

  d = good_bundle();
  edit_json(d, "arch", json_string("vgg16"));
  expect_load_error(d, IM_ERR_NOT_FOUND, "unknown architecture 'vgg16'");

  d = good_bundle();
  edit_json(d, "classes", json_pack("[s]", "one"));
  expect_load_error(d, IM_ERR_FORMAT, "\"classes\" must list 2 names");

  d = good_bundle(); /* the weights of width 0.5, the options of width 1 */
  json_error_t je;
  json_t *j = json_load_file(tu_path(d, "model.json"), 0, &je);
  json_object_set_new(json_object_get(j, "options"), "width", json_real(1.0));
  write_json(tu_path(d, "model.json"), j);
  json_decref(j);
  expect_load_error(d, IM_ERR_FORMAT, "tensor 'conv1.weight' is F32 [16, 3, 3, 3], the model needs F32 [32, 3, 3, 3]");

  d = good_bundle(); /* truncated weights */
  uint8_t *data;
  size_t len;
  OK(im_file_read(tu_path(d, "model.safetensors"), 0, &data, &len));
  assert_int_equal(tu_write_file(tu_path(d, "model.safetensors"), data, len - 100), 0);
  im_free(data);
  expect_load_error(d, IM_ERR_FORMAT, "model.safetensors");

  d = good_bundle();
  rewrite_weights(d, "bn2.running_var", NULL);
  expect_load_error(d, IM_ERR_FORMAT, "missing tensor 'bn2.running_var'");

  d = good_bundle();
  rewrite_weights(d, NULL, "fc2.bias");
  expect_load_error(d, IM_ERR_FORMAT, "unexpected tensor 'fc2.bias'");

  d = good_bundle(); /* a bad state file leaves the model unchanged */
  rewrite_weights(d, "fc.bias", NULL);
  im_nn_model_t *m = mk("surfacenet", (im_nn_model_opts_t){.width = 0.5f, .seed = 99});
  im_nn_model_t *m2 = mk("surfacenet", (im_nn_model_opts_t){.width = 0.5f, .seed = 99});
  im_safetensors_t *st;
  OK(im_safetensors_load(tu_path(d, "model.safetensors"), 0, &st));
  assert_int_equal(im_nn_state_load(m, st), IM_ERR_FORMAT);
  assert_true(same_state(m, m2));
  im_safetensors_free(st);
  im_nn_model_free(m);
  im_nn_model_free(m2);

  /* save checks its metadata */
  m = mk("surfacenet", (im_nn_model_opts_t){0});
  const char *one[] = {"a"};
  const char *x = tu_path(tmpdir(), "x");
  assert_int_equal(im_nn_bundle_save(m, x, &(im_nn_bundle_meta_t){.img_h = 0, .img_w = 1}), IM_ERR_ARG);
  assert_int_equal(im_nn_bundle_save(m, x, &(im_nn_bundle_meta_t){.img_h = 1, .img_w = 1, .classes = one,
                                                                  .num_classes = 1}),
                   IM_ERR_ARG);
  assert_int_equal(im_nn_bundle_save(m, x, &(im_nn_bundle_meta_t){.img_h = 1, .img_w = 1, .n_norm = 1}), IM_ERR_ARG);
  const char *dup[] = {"acc", "acc"};
  const double vals[] = {1, 2};
  assert_int_equal(im_nn_bundle_save(m, x, &(im_nn_bundle_meta_t){.img_h = 1, .img_w = 1, .metric_names = dup,
                                                                  .metric_values = vals, .n_metrics = 2}),
                   IM_ERR_ARG);
  im_nn_model_free(m);
  rm_tmps();
}

/* ---- determinism ---- */

static void test_determinism(void **state) {
  const struct {
    const char *arch;
    im_nn_model_opts_t o;
  } cases[] = {
      {"surfacenet", {.num_classes = 3, .width = 0.5f, .dropout = 0.3f, .seed = 7}},
      {"convnext-atto", {.num_classes = 2, .width = 0.125f, .drop_path = 0.3f, .dropout = 0.2f, .seed = 7}},
  };
  for (size_t c = 0; c < 2; c++) {
    im_nn_model_t *m[2];
    im_nn_optim_t *opt[2];
    im_tensor_t x = batch(4, 3, 32, 32, 2);
    const int32_t labels[4] = {0, 1, 1, 0};
    for (int k = 0; k < 2; k++) {
      m[k] = mk(cases[c].arch, cases[c].o);
      OK(im_nn_plan(m[k], be, 4, 32, 32, 1));
      im_nn_optim_opts_t oo = im_nn_optim_defaults(IM_NN_OPTIM_SGD);
      oo.lr = 0.05;
      oo.momentum = 0.9;
      OK(im_nn_optim_new(m[k], &oo, &opt[k]));
    }
    assert_true(same_state(m[0], m[1]));
    for (int s = 0; s < 3; s++)
      for (int k = 0; k < 2; k++) train_step(m[k], opt[k], &x, labels);
    assert_true(same_state(m[0], m[1]));
    im_nn_model_opts_t o2 = cases[c].o;
    o2.seed = 8;
    im_nn_model_t *other = mk(cases[c].arch, o2);
    assert_false(same_state(m[0], other));
    im_nn_model_free(other);
    for (int k = 0; k < 2; k++) {
      im_nn_optim_free(opt[k]);
      im_nn_model_free(m[k]);
    }
    im_tensor_free(&x);
  }
}

/* ---- optimizers against hand-computed updates ---- */

/* Sets every parameter to p0(i) and its gradient to g(i), i the index in the parameter slab order
 * (g + wd p stays away from 0, where Adam's update is ill-conditioned). */
static void set_pg(im_nn_model_t *m, int64_t *n_out) {
  int64_t k = 0;
  for (size_t i = 0; i < im_nn_param_count(m); i++) {
    im_nn_param_t p;
    OK(im_nn_param_get(m, i, &p));
    for (int64_t j = 0; j < im_tensor_numel(p.value); j++, k++) {
      im_tensor_f32(p.value)[j] = (float)(0.5 - 0.01 * (double)(k % 13));
      im_tensor_f32(p.grad)[j] = (float)(0.02 * (double)((k % 7) - 3) + 0.0035);
    }
  }
  *n_out = k;
}

typedef double (*ref_fn)(double p, double g, int decay, double *s1, double *s2);

static double sgd_wd_mom_ref(double p, double g, int decay, double *s1, double *s2) {
  /* lr 0.1, momentum 0.9, wd 0.01: two steps with the same gradient */
  double d = g + 0.01 * p;
  *s1 = d;
  p -= 0.1 * *s1;
  d = g + 0.01 * p;
  *s1 = 0.9 * *s1 + d;
  return p - 0.1 * *s1;
}

static double sgd_nesterov_ref(double p, double g, int decay, double *s1, double *s2) {
  /* lr 0.1, momentum 0.9, nesterov, no wd, dampening 0: two steps */
  *s1 = g;
  p -= 0.1 * (g + 0.9 * *s1);
  *s1 = 0.9 * *s1 + g;
  return p - 0.1 * (g + 0.9 * *s1);
}

static double adam_ref(double p, double g, int decay, double *m, double *v) {
  /* Adam lr 0.01, betas (0.9, 0.999), eps 1e-8, L2 wd 0.1: two steps */
  for (int t = 1; t <= 2; t++) {
    const double gg = g + 0.1 * p;
    *m = 0.9 * *m + 0.1 * gg;
    *v = 0.999 * *v + 0.001 * gg * gg;
    p -= 0.01 / (1 - pow(0.9, t)) * *m / (sqrt(*v) / sqrt(1 - pow(0.999, t)) + 1e-8);
  }
  return p;
}

static double adamw_filter_ref(double p, double g, int decay, double *m, double *v) {
  /* AdamW lr 0.01, wd 0.5 on decay parameters only: two steps */
  for (int t = 1; t <= 2; t++) {
    if (decay) p *= 1 - 0.01 * 0.5;
    *m = 0.9 * *m + 0.1 * g;
    *v = 0.999 * *v + 0.001 * g * g;
    p -= 0.01 / (1 - pow(0.9, t)) * *m / (sqrt(*v) / sqrt(1 - pow(0.999, t)) + 1e-8);
  }
  return p;
}

static void check_optim(im_nn_optim_opts_t o, ref_fn ref, const char *what) {
  im_nn_model_t *m = mk("surfacenet", (im_nn_model_opts_t){.width = 0.125f});
  int64_t n;
  set_pg(m, &n);
  im_nn_optim_t *opt;
  OK(im_nn_optim_new(m, &o, &opt));
  OK(im_nn_optim_step(opt));
  OK(im_nn_optim_step(opt));
  assert_int_equal(im_nn_optim_steps(opt), 2);
  int64_t k = 0;
  double worst = 0;
  for (size_t i = 0; i < im_nn_param_count(m); i++) {
    im_nn_param_t p;
    OK(im_nn_param_get(m, i, &p));
    for (int64_t j = 0; j < im_tensor_numel(p.value); j++, k++) {
      double s1 = 0, s2 = 0;
      const double want = ref((float)(0.5 - 0.01 * (double)(k % 13)), (float)(0.02 * (double)((k % 7) - 3) + 0.0035),
                              p.decay, &s1, &s2);
      const double d = fabs(im_tensor_f32(p.value)[j] - want) / (1e-7 + 1e-6 * fabs(want));
      if (d > worst) worst = d;
    }
  }
  printf("  %-28s %lld params, worst |diff| / (1e-7 + 1e-6 |ref|) = %.3f\n", what, (long long)n, worst);
  assert_true(worst <= 1.0);
  im_nn_optim_free(opt);
  im_nn_model_free(m);
}

static void test_optim_hand(void **state) {
  im_nn_optim_opts_t o = im_nn_optim_defaults(IM_NN_OPTIM_SGD);
  o.lr = 0.1;
  o.momentum = 0.9;
  o.weight_decay = 0.01;
  check_optim(o, sgd_wd_mom_ref, "sgd momentum + wd");
  o.weight_decay = 0;
  o.nesterov = 1;
  check_optim(o, sgd_nesterov_ref, "sgd nesterov");
  o = im_nn_optim_defaults(IM_NN_OPTIM_ADAM);
  o.lr = 0.01;
  o.weight_decay = 0.1;
  check_optim(o, adam_ref, "adam (L2 wd)");
  o = im_nn_optim_defaults(IM_NN_OPTIM_ADAMW);
  o.lr = 0.01;
  o.weight_decay = 0.5;
  o.decay_filter = 1;
  check_optim(o, adamw_filter_ref, "adamw (decoupled, filtered)");

  /* Defaults and option checks. */
  o = im_nn_optim_defaults(IM_NN_OPTIM_ADAMW);
  assert_true(o.lr == 1e-3 && o.beta1 == 0.9 && o.beta2 == 0.999 && o.eps == 1e-8 && o.weight_decay == 1e-2);
  im_nn_model_t *m = mk("surfacenet", (im_nn_model_opts_t){.width = 0.125f});
  im_nn_optim_t *opt = NULL;
  o = im_nn_optim_defaults(IM_NN_OPTIM_SGD);
  o.nesterov = 1;
  assert_int_equal(im_nn_optim_new(m, &o, &opt), IM_ERR_ARG);
  o = im_nn_optim_defaults(IM_NN_OPTIM_ADAM);
  o.beta1 = 1.0;
  assert_int_equal(im_nn_optim_new(m, &o, &opt), IM_ERR_ARG);
  o.beta1 = 0.9;
  o.lr = -1;
  assert_int_equal(im_nn_optim_new(m, &o, &opt), IM_ERR_ARG);
  assert_null(opt);

  /* Clipping by global norm: all gradients 0.5, norm 0.5 sqrt(N). */
  int64_t n;
  set_pg(m, &n);
  for (size_t i = 0; i < im_nn_param_count(m); i++) {
    im_nn_param_t p;
    OK(im_nn_param_get(m, i, &p));
    im_tensor_fill_f32(p.grad, 0.5f);
  }
  double norm;
  OK(im_nn_clip_grad_norm(m, 0.0, &norm)); /* measure only */
  assert_true(fabs(norm - 0.5 * sqrt((double)n)) < 1e-9);
  OK(im_nn_clip_grad_norm(m, 1e9, &norm)); /* no clipping needed */
  im_nn_param_t p;
  OK(im_nn_param_get(m, 0, &p));
  assert_true(im_tensor_f32(p.grad)[0] == 0.5f);
  OK(im_nn_clip_grad_norm(m, 1.0, &norm));
  const float want = (float)(0.5 * (1.0 / (norm + 1e-6)));
  OK(im_nn_param_get(m, im_nn_param_count(m) - 1, &p));
  assert_true(fabs(im_tensor_f32(p.grad)[0] - want) <= 1e-7f);
  OK(im_nn_clip_grad_norm(m, 0.0, &norm));
  assert_true(fabs(norm - 1.0) < 1e-5);

  /* Optimizer state round trip for checkpoints. */
  o = im_nn_optim_defaults(IM_NN_OPTIM_ADAMW);
  o.amsgrad = 1;
  OK(im_nn_optim_new(m, &o, &opt));
  set_pg(m, &n);
  OK(im_nn_optim_step(opt));
  OK(im_nn_optim_step(opt));
  const char *otmp = tu_tmpdir(), *path = tu_path(otmp, "optim.safetensors");
  OK(im_nn_optim_save(opt, path));
  im_nn_model_t *m2 = mk("surfacenet", (im_nn_model_opts_t){.width = 0.125f});
  im_nn_optim_t *opt2;
  OK(im_nn_optim_new(m2, &o, &opt2));
  OK(im_nn_optim_load(opt2, path));
  assert_int_equal(im_nn_optim_steps(opt2), 2);
  /* Same weights and gradients, same state: the next step agrees bit for bit. */
  for (size_t i = 0; i < im_nn_param_count(m); i++) {
    im_nn_param_t a, b;
    OK(im_nn_param_get(m, i, &a));
    OK(im_nn_param_get(m2, i, &b));
    OK(im_tensor_copy(b.value, a.value));
    OK(im_tensor_copy(b.grad, a.grad));
  }
  OK(im_nn_optim_step(opt));
  OK(im_nn_optim_step(opt2));
  assert_true(same_state(m, m2));
  im_nn_optim_t *sgd;
  im_nn_optim_opts_t so = im_nn_optim_defaults(IM_NN_OPTIM_SGD);
  so.momentum = 0.9;
  OK(im_nn_optim_new(m2, &so, &sgd));
  assert_int_equal(im_nn_optim_load(sgd, path), IM_ERR_FORMAT);
  im_nn_optim_free(sgd);
  im_nn_optim_free(opt2);
  im_nn_optim_free(opt);
  im_nn_optim_free(NULL);
  im_nn_model_free(m2);
  im_nn_model_free(m);
  tu_rmtree(otmp);
}

/* ---- schedules against torch 1.13's schedulers (values printed by torch, stepping once per tick) ---- */

static void check_sched(const im_nn_sched_t *s, const double *want, int n, const char *what) {
  OK(im_nn_sched_check(s));
  double worst = 0;
  for (int t = 0; t < n; t++) {
    const double d = fabs(im_nn_sched_lr(s, t) - want[t]);
    if (d > worst) worst = d;
    if (d > 1e-12 + 1e-9 * fabs(want[t])) fail_msg("%s at t=%d: %.17g, torch %.17g", what, t, im_nn_sched_lr(s, t), want[t]);
  }
  printf("  %-34s %2d ticks, max |diff| vs torch %.2g\n", what, n, worst);
}

static void test_sched(void **state) {
  /* CosineAnnealingLR(lr 0.1, T_max=10, eta_min=0.001), 14 epochs (periodic past T_max) */
  const double cos_want[] = {0.1, 0.09757729755661011, 0.0905463412215599, 0.07959536998847742, 0.0657963412215599,
                             0.0505, 0.03520365877844011, 0.02140463001152259, 0.010453658778440109,
                             0.0034227024433899004, 0.001, 0.0034227024433899004, 0.01045365877844014,
                             0.02140463001152267};
  check_sched(&(im_nn_sched_t){.kind = IM_NN_SCHED_COSINE, .base_lr = 0.1, .t_max = 10, .eta_min = 0.001}, cos_want,
              14, "CosineAnnealingLR");
  /* StepLR(lr 0.1, step_size=3, gamma=0.5) */
  const double step_want[] = {0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.0125};
  check_sched(&(im_nn_sched_t){.kind = IM_NN_SCHED_STEP, .base_lr = 0.1, .step_size = 3, .gamma = 0.5}, step_want,
              10, "StepLR");
  /* SequentialLR([LinearLR(start_factor=0.1, total_iters=5), CosineAnnealingLR(T_max=10)], milestones=[5]) */
  const double warm_want[] = {0.010000000000000002, 0.028000000000000004, 0.046000000000000006, 0.064, 0.082, 0.1,
                              0.09755282581475769, 0.09045084971874738, 0.07938926261462367, 0.06545084971874739,
                              0.05000000000000001, 0.03454915028125264, 0.020610737385376353, 0.009549150281252635,
                              0.002447174185242324, 0.0, 0.0024471741852423235};
  check_sched(&(im_nn_sched_t){.kind = IM_NN_SCHED_COSINE, .base_lr = 0.1, .t_max = 10, .warmup = 5,
                               .warmup_start = 0.1},
              warm_want, 17, "LinearLR(5) then CosineAnnealingLR");
  /* SequentialLR([LinearLR(start_factor=0.25, total_iters=4), StepLR(step_size=2, gamma=0.1)], milestones=[4]) */
  const double ws_want[] = {0.025, 0.043750000000000004, 0.06250000000000001, 0.08125000000000002, 0.1, 0.1,
                            0.010000000000000002, 0.010000000000000002, 0.0010000000000000002, 0.0010000000000000002};
  check_sched(&(im_nn_sched_t){.kind = IM_NN_SCHED_STEP, .base_lr = 0.1, .step_size = 2, .gamma = 0.1, .warmup = 4,
                               .warmup_start = 0.25},
              ws_want, 10, "LinearLR(4) then StepLR");
  const double const_want[] = {0.3, 0.3, 0.3};
  check_sched(&(im_nn_sched_t){.kind = IM_NN_SCHED_CONSTANT, .base_lr = 0.3}, const_want, 3, "constant");
  assert_int_equal(im_nn_sched_check(&(im_nn_sched_t){.kind = IM_NN_SCHED_COSINE, .base_lr = 0.1}), IM_ERR_ARG);
  assert_int_equal(im_nn_sched_check(&(im_nn_sched_t){.kind = IM_NN_SCHED_STEP, .base_lr = 0.1}), IM_ERR_ARG);
  assert_int_equal(im_nn_sched_check(&(im_nn_sched_t){.base_lr = -1}), IM_ERR_ARG);
  assert_int_equal(im_nn_sched_check(&(im_nn_sched_t){.base_lr = 1, .warmup = 2, .warmup_start = 2}), IM_ERR_ARG);
}

/* ---- allocation failures: every allocation of the life cycle fails once, in turn ---- */

static im_status_t life_cycle(const char *dir) {
  im_nn_model_t *m = NULL, *l = NULL;
  im_nn_optim_t *opt = NULL;
  im_nn_bundle_meta_t meta = {0};
  im_tensor_t x = {0};
  const int32_t labels[2] = {0, 1};
  float loss;
  im_nn_optim_opts_t oo = im_nn_optim_defaults(IM_NN_OPTIM_ADAMW);
  const char *mn[] = {"acc"};
  const double mv[] = {0.5};
  im_status_t st;
  if ((st = im_nn_model_new("convnext-atto", &(im_nn_model_opts_t){.width = 0.125f, .depths = {1, 1, 2, 1}}, &m)) !=
      IM_OK)
    goto out;
  if ((st = im_nn_plan(m, be, 2, 32, 32, 1)) != IM_OK) goto out;
  if ((st = im_nn_optim_new(m, &oo, &opt)) != IM_OK) goto out;
  if ((st = im_tensor_alloc(&x, IM_F32, 4, (int64_t[]){2, 3, 32, 32})) != IM_OK) goto out;
  if ((st = im_nn_forward(m, &x, 1, NULL)) != IM_OK || (st = im_nn_loss(m, labels, 0.0f, &loss)) != IM_OK ||
      (st = im_nn_backward(m)) != IM_OK || (st = im_nn_optim_step(opt)) != IM_OK)
    goto out;
  if ((st = im_nn_optim_save(opt, tu_path(dir, "opt.safetensors"))) != IM_OK) goto out;
  if ((st = im_nn_optim_load(opt, tu_path(dir, "opt.safetensors"))) != IM_OK) goto out;
  const im_nn_bundle_meta_t sm = {.img_h = 32, .img_w = 32, .metric_names = mn, .metric_values = mv, .n_metrics = 1};
  if ((st = im_nn_bundle_save(m, tu_path(dir, "model"), &sm)) != IM_OK) goto out;
  if ((st = im_nn_bundle_load(tu_path(dir, "model"), be, &l, &meta)) != IM_OK) goto out;
  if (!same_state(m, l)) st = IM_ERR_INTERNAL;
out:
  im_nn_bundle_meta_free(&meta);
  im_nn_model_free(l);
  im_tensor_free(&x);
  im_nn_optim_free(opt);
  im_nn_model_free(m);
  return st;
}

static void test_alloc_failures(void **state) {
  const char *dir = tu_tmpdir();
  const int64_t live = im_alloc_live_bytes();
  int k, failures = 0;
  for (k = 1; k < 5000; k++) {
    im_alloc_fail_after(k);
    im_status_t st = life_cycle(dir);
    im_alloc_fail_after(0);
    assert_int_equal(im_alloc_live_bytes(), live);
    if (st == IM_OK) break;
    if (st != IM_ERR_NOMEM) fail_msg("allocation %d failing gave %s: %s", k, im_status_name(st), im_last_error());
    failures++;
  }
  printf("  %d allocations, each failed in turn: IM_ERR_NOMEM, nothing leaked\n", failures);
  assert_true(k < 5000 && failures > 150); /* about 300 today: fewer means a failure was swallowed */
  tu_rmtree(dir);
}

/* ---- export for tests/integration/test_nn_torch.py ---- */

static int export_all(const char *out) {
  const struct {
    const char *arch, *dir;
    im_nn_model_opts_t o;
  } cases[] = {
      {"surfacenet", "surfacenet", {.num_classes = 2, .seed = 1}},
      {"smallcnn", "smallcnn", {.num_classes = 10, .in_channels = 1, .seed = 1}},
      {"resnet18", "resnet18", {.num_classes = 2, .seed = 1}},
      {"convnext-atto", "convnext-atto", {.num_classes = 2, .seed = 1, .layer_scale = 0.5f}},
  };
  im_backend_t *b;
  if (im_backend_ref_new(&b) != IM_OK) return 1;
  for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
    im_nn_model_t *m;
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%s", out, cases[i].dir);
    const int c = cases[i].o.in_channels ? cases[i].o.in_channels : 3, hw = c == 1 ? 28 : 64;
    im_tensor_t x, lg, le, lt;
    if (im_nn_model_new(cases[i].arch, &cases[i].o, &m) != IM_OK || im_nn_plan(m, b, 2, hw, hw, 1) != IM_OK ||
        im_tensor_alloc(&x, IM_F32, 4, (int64_t[]){2, c, hw, hw}) != IM_OK)
      goto fail;
    fill_normal(&x, 77);
    im_nn_bundle_meta_t meta = {.img_h = hw, .img_w = hw};
    if (im_nn_bundle_save(m, dir, &meta) != IM_OK) goto fail;
    /* eval logits with the saved weights, then training-mode logits (batch statistics) */
    if (im_nn_forward(m, &x, 0, &lg) != IM_OK || im_tensor_alloc(&le, IM_F32, 2, lg.shape) != IM_OK ||
        im_tensor_copy(&le, &lg) != IM_OK || im_nn_forward(m, &x, 1, &lt) != IM_OK)
      goto fail;
    const im_named_tensor_t list[] = {{"x", &x}, {"logits_eval", &le}, {"logits_train", &lt}};
    char path[1100];
    snprintf(path, sizeof path, "%s/check.safetensors", dir);
    if (im_safetensors_write(path, list, 3, NULL, 0) != IM_OK) goto fail;
    printf("exported %s\n", dir);
    im_tensor_free(&x);
    im_tensor_free(&le);
    im_nn_model_free(m);
    continue;
  fail:
    fprintf(stderr, "export %s: %s\n", cases[i].arch, im_last_error());
    return 1;
  }
  im_backend_free(b);
  return 0;
}

int main(void) {
  const char *exp = getenv("IM_NN_EXPORT_DIR");
  if (exp && *exp) return export_all(exp);
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_archs),         cmocka_unit_test(test_init_stats),
      cmocka_unit_test(test_plan_no_malloc), cmocka_unit_test(test_batches_and_predict),
      cmocka_unit_test(test_bundle_roundtrip), cmocka_unit_test(test_bundle_errors),
      cmocka_unit_test(test_determinism),   cmocka_unit_test(test_optim_hand),
      cmocka_unit_test(test_sched),         cmocka_unit_test(test_alloc_failures),
  };
  return cmocka_run_group_tests(tests, setup, teardown);
}
