/* Model-level parity with PyTorch: loads tests/ref/model_<arch>.safetensors
 * (made by tools/ref/gen_model_fixtures.py from torch 1.13 / torchvision
 * 0.14 in float64), fills every state entry with the same deterministic
 * formula as the script, and requires |ours - torch| <= 1e-4 + 1e-3 |torch|
 * for the eval and training logits, the loss, the parameter gradients, the
 * BN running statistics, and the weights after SGD / Adam / AdamW steps.
 * Prints the maximum difference of every compared tensor. Runs on the
 * reference backend, then on the cpu backend (oneDNN, Winograd convolutions,
 * activations in the blocked layout where the planner keeps them so). */
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
#include "imops/nn.h"
#include "imops/tensor.h"

#ifndef IM_SOURCE_DIR
#error "IM_SOURCE_DIR must point at the source tree (CMakeLists.txt sets it)"
#endif

#define OK(e) assert_int_equal((e), IM_OK)
#define ATOL 1e-4
#define RTOL 1e-3
#define SAMPLE_MAX 256

static im_backend_t *be;
static double worst_ratio, worst_abs;
static int n_compared;

static int setup(void **state) {
  worst_ratio = worst_abs = 0;
  n_compared = 0;
  return im_backend_ref_new(&be) == IM_OK ? 0 : -1;
}

static int setup_cpu(void **state) {
  worst_ratio = worst_abs = 0;
  n_compared = 0;
  return im_backend_cpu_new(&be) == IM_OK ? 0 : -1;
}

static int teardown(void **state) {
  printf("nn parity (%s backend): %d tensors compared, max |diff| %.3g, worst diff / (atol + rtol |ref|) = %.3g\n",
         im_backend_name(be), n_compared, worst_abs, worst_ratio);
  im_backend_free(be);
  return 0;
}

/* ---- the deterministic state (tools/ref/gen_model_fixtures.py: formula_value) ---- */

static uint64_t fnv1a64(const char *s) {
  uint64_t h = 0xCBF29CE484222325ULL;
  for (; *s; s++) h = (h ^ (unsigned char)*s) * 0x100000001B3ULL;
  return h;
}

static double unit_value(uint64_t h, uint64_t i) {
  uint64_t z = h + (i + 1) * 0x9E3779B97F4A7C15ULL;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  z ^= z >> 31;
  return ((double)(z >> 40) - 8388608.0) / 8388608.0;
}

static int ends_with(const char *s, const char *suf) {
  size_t a = strlen(s), b = strlen(suf);
  return a >= b && strcmp(s + a - b, suf) == 0;
}

static void formula_state(im_nn_model_t *m) {
  for (size_t i = 0; i < im_nn_state_count(m); i++) {
    im_nn_state_entry_t e;
    OK(im_nn_state_get(m, i, &e));
    if (e.kind == IM_NN_STATE_COUNTER) {
      *e.counter = 0;
      continue;
    }
    const uint64_t h = fnv1a64(e.name);
    const int64_t n = im_tensor_numel(e.tensor);
    float *v = im_tensor_f32(e.tensor);
    for (int64_t k = 0; k < n; k++) {
      const double u = unit_value(h, (uint64_t)k);
      double x;
      if (ends_with(e.name, "running_mean")) x = 0.1 * u;
      else if (ends_with(e.name, "running_var")) x = 1.0 + 0.5 * u;
      else if (ends_with(e.name, "layer_scale")) x = 0.5 + 0.25 * u;
      else if (e.tensor->ndim >= 2) x = sqrt(6.0 / (double)(n / e.tensor->shape[0])) * u;
      else if (ends_with(e.name, ".weight")) x = 1.0 + 0.2 * u;
      else x = 0.1 * u;
      v[k] = (float)x;
    }
  }
}

/* ---- fixtures ---- */

typedef struct {
  im_safetensors_t *f;
  json_t *cases;
  const char *name;
} fx_t;

static void fx_open(fx_t *fx, const char *file) {
  char path[1024];
  snprintf(path, sizeof path, "%s/tests/ref/%s", IM_SOURCE_DIR, file);
  if (im_safetensors_load(path, 0, &fx->f) != IM_OK) fail_msg("cannot load %s: %s", path, im_last_error());
  const char *fmt = im_safetensors_metadata(fx->f, "format"), *cases = im_safetensors_metadata(fx->f, "cases");
  if (!fmt || strcmp(fmt, "imops-ref-fixture") != 0 || !cases) fail_msg("%s is not an imops fixture", path);
  json_error_t je;
  fx->cases = json_loads(cases, 0, &je);
  assert_non_null(fx->cases);
  printf("%s (torch %s, torchvision %s)\n", file, im_safetensors_metadata(fx->f, "torch"),
         im_safetensors_metadata(fx->f, "torchvision"));
}

static void fx_close(fx_t *fx) {
  json_decref(fx->cases);
  im_safetensors_free(fx->f);
}

static json_t *fx_case(fx_t *fx, const char *name) {
  for (size_t i = 0; i < json_array_size(fx->cases); i++) {
    json_t *c = json_array_get(fx->cases, i);
    if (strcmp(json_string_value(json_object_get(c, "name")), name) == 0) {
      fx->name = name;
      return c;
    }
  }
  fail_msg("no case %s", name);
  return NULL;
}

static int has(const fx_t *fx, const char *role) {
  char key[400];
  snprintf(key, sizeof key, "%s.%s", fx->name, role);
  im_tensor_t t;
  return im_safetensors_get(fx->f, key, &t) == IM_OK;
}

static im_tensor_t ref(const fx_t *fx, const char *role) {
  char key[400];
  snprintf(key, sizeof key, "%s.%s", fx->name, role);
  im_tensor_t t;
  if (im_safetensors_get(fx->f, key, &t) != IM_OK) fail_msg("fixture has no tensor %s", key);
  return t;
}

static double jnum(json_t *o, const char *k, double dflt) {
  json_t *v = json_object_get(o, k);
  return json_is_number(v) ? json_number_value(v) : dflt;
}

/* Compares n floats got[i * stride] with the reference tensor (n elements). */
static void compare_strided(const char *what, const float *got, int64_t stride, const im_tensor_t *r, int64_t n) {
  assert_int_equal(r->dtype, IM_F32);
  assert_int_equal(im_tensor_numel(r), n);
  const float *b = im_tensor_f32(r);
  double mx = 0.0, ratio = 0.0;
  int64_t bad = 0, at = 0;
  for (int64_t i = 0; i < n; i++) {
    const double d = fabs((double)got[i * stride] - b[i]), q = d / (ATOL + RTOL * fabs(b[i]));
    if (!(d <= mx)) mx = d;
    if (!(q <= ratio)) {
      ratio = q;
      at = i;
    }
    if (!(q <= 1.0)) bad++;
  }
  printf("  %-44s %8lld elems  max|diff| %.2e  ratio %.3f%s\n", what, (long long)n, mx, ratio, bad ? "  FAILED" : "");
  if (bad)
    printf("    worst at %lld: ours %.9g torch %.9g (%lld bad)\n", (long long)at, got[at * stride], b[at],
           (long long)bad);
  n_compared++;
  if (ratio > worst_ratio) worst_ratio = ratio;
  if (mx > worst_abs) worst_abs = mx;
  assert_int_equal(bad, 0);
}

static void compare(const fx_t *fx, const char *role, const im_tensor_t *got) {
  im_tensor_t r = ref(fx, role);
  assert_int_equal(im_tensor_numel(got), im_tensor_numel(&r));
  compare_strided(role, im_tensor_f32(got), 1, &r, im_tensor_numel(&r));
}

static im_nn_model_t *build(json_t *c) {
  json_t *o = json_object_get(c, "opts");
  im_nn_model_opts_t opts = {.num_classes = (int)jnum(o, "num_classes", 2), .in_channels = (int)jnum(o, "in_channels", 3),
                             .width = (float)jnum(o, "width", 1.0)};
  im_nn_model_t *m;
  if (im_nn_model_new(json_string_value(json_object_get(c, "arch")), &opts, &m) != IM_OK)
    fail_msg("model: %s", im_last_error());
  formula_state(m);
  OK(im_nn_plan(m, be, (int64_t)jnum(c, "batch", 0), (int64_t)jnum(c, "h", 0), (int64_t)jnum(c, "w", 0), 1));
  return m;
}

static int32_t *labels_of(const fx_t *fx) {
  im_tensor_t l = ref(fx, "labels");
  assert_int_equal(l.dtype, IM_I32);
  return (int32_t *)l.data;
}

/* ---- the forward/backward case ---- */

static void run_fwd(const char *file, const char *case_name) {
  fx_t fx;
  fx_open(&fx, file);
  json_t *c = fx_case(&fx, case_name);
  im_nn_model_t *m = build(c);
  printf(" %s %s (batch %d at %dx%d): %lld parameters, plan %.1f MiB (%.1f MiB without reuse)\n", im_nn_model_arch(m),
         case_name, (int)jnum(c, "batch", 0), (int)jnum(c, "h", 0), (int)jnum(c, "w", 0),
         (long long)im_nn_model_num_params(m), im_nn_plan_bytes(m) / 1048576.0,
         im_nn_plan_bytes_unshared(m) / 1048576.0);
  im_tensor_t x = ref(&fx, "x"), logits;
  const double t0 = im_time_now();
  OK(im_nn_forward(m, &x, 0, &logits));
  compare(&fx, "logits_eval", &logits);
  im_nn_zero_grad(m);
  OK(im_nn_forward(m, &x, 1, &logits));
  compare(&fx, "logits", &logits);
  float loss;
  OK(im_nn_loss(m, labels_of(&fx), (float)jnum(c, "label_smoothing", 0.0), &loss));
  im_tensor_t lt;
  OK(im_tensor_view(&lt, IM_F32, 1, (int64_t[]){1}, &loss));
  compare(&fx, "loss", &lt);
  OK(im_nn_backward(m));
  printf("  (forward eval + forward/backward train: %.2f s)\n", im_time_now() - t0);
  json_t *full = json_object_get(c, "full_grads");
  const int all = json_is_string(full);
  for (size_t i = 0; i < im_nn_param_count(m); i++) {
    im_nn_param_t p;
    OK(im_nn_param_get(m, i, &p));
    char role[320];
    snprintf(role, sizeof role, "grad.%s", p.name);
    if (all || has(&fx, role)) compare(&fx, role, p.grad);
    if (!all) {
      snprintf(role, sizeof role, "gs.%s", p.name);
      const int64_t n = im_tensor_numel(p.grad), step = n / SAMPLE_MAX > 1 ? n / SAMPLE_MAX : 1;
      const int64_t cnt = (n + step - 1) / step < SAMPLE_MAX ? (n + step - 1) / step : SAMPLE_MAX;
      im_tensor_t r = ref(&fx, role);
      compare_strided(role, im_tensor_f32(p.grad), step, &r, cnt);
    }
  }
  for (size_t i = 0; i < im_nn_state_count(m); i++) {
    im_nn_state_entry_t e;
    OK(im_nn_state_get(m, i, &e));
    if (e.kind == IM_NN_STATE_COUNTER) assert_int_equal(*e.counter, 1);
    if (e.kind != IM_NN_STATE_BUFFER) continue;
    char role[320];
    snprintf(role, sizeof role, "state.%s", e.name);
    compare(&fx, role, e.tensor);
  }
  im_nn_model_free(m);
  fx_close(&fx);
}

/* Sanitizer builds run the reference kernels at -O0: resnet18 there uses the 36x36 case only. */
#if defined(__SANITIZE_ADDRESS__)
#define IM_SLOW_KERNELS 1
#else
#define IM_SLOW_KERNELS 0
#endif

static void test_parity_surfacenet(void **state) { run_fwd("model_surfacenet.safetensors", "fwd"); }
static void test_parity_resnet18(void **state) {
  run_fwd("model_resnet18.safetensors", "fwd_small");
  if (!IM_SLOW_KERNELS) run_fwd("model_resnet18.safetensors", "fwd");
}
static void test_parity_convnext_atto(void **state) { run_fwd("model_convnext_atto.safetensors", "fwd"); }

/* ---- optimizer cases ---- */

static void run_optim(const char *name) {
  fx_t fx;
  fx_open(&fx, "model_surfacenet.safetensors");
  json_t *c = fx_case(&fx, name), *cfg = json_object_get(c, "optim");
  im_nn_model_t *m = build(c);
  const char *kind = json_string_value(json_object_get(cfg, "kind"));
  im_nn_optim_opts_t o = im_nn_optim_defaults(strcmp(kind, "sgd") == 0    ? IM_NN_OPTIM_SGD
                                              : strcmp(kind, "adam") == 0 ? IM_NN_OPTIM_ADAM
                                                                          : IM_NN_OPTIM_ADAMW);
  o.lr = jnum(cfg, "lr", o.lr);
  o.momentum = jnum(cfg, "momentum", 0.0);
  o.dampening = jnum(cfg, "dampening", 0.0);
  o.nesterov = (int)jnum(cfg, "nesterov", 0);
  o.beta1 = jnum(cfg, "beta1", o.beta1);
  o.beta2 = jnum(cfg, "beta2", o.beta2);
  o.eps = jnum(cfg, "eps", o.eps);
  o.amsgrad = (int)jnum(cfg, "amsgrad", 0);
  o.weight_decay = jnum(cfg, "weight_decay", 0.0);
  o.decay_filter = (int)jnum(cfg, "decay_filter", 0);
  im_nn_optim_t *opt;
  OK(im_nn_optim_new(m, &o, &opt));
  const int steps = (int)jnum(c, "steps", 1);
  const double clip = jnum(c, "clip", 0.0);
  im_tensor_t x = ref(&fx, "x");
  float losses[16];
  assert_true(steps <= 16);
  for (int s = 0; s < steps; s++) {
    im_nn_zero_grad(m);
    OK(im_nn_forward(m, &x, 1, NULL));
    OK(im_nn_loss(m, labels_of(&fx), (float)jnum(c, "label_smoothing", 0.0), &losses[s]));
    OK(im_nn_backward(m));
    if (clip > 0) OK(im_nn_clip_grad_norm(m, clip, NULL));
    OK(im_nn_optim_step(opt));
  }
  printf(" %s (%s, %d steps):\n", name, kind, steps);
  im_tensor_t lt;
  OK(im_tensor_view(&lt, IM_F32, 1, (int64_t[]){steps}, losses));
  compare(&fx, "losses", &lt);
  for (size_t i = 0; i < im_nn_state_count(m); i++) {
    im_nn_state_entry_t e;
    OK(im_nn_state_get(m, i, &e));
    char role[320];
    snprintf(role, sizeof role, "final.%s", e.name);
    if (e.kind == IM_NN_STATE_COUNTER) {
      im_tensor_t r = ref(&fx, role);
      assert_int_equal(*e.counter, (int64_t)im_tensor_f32(&r)[0]);
      continue;
    }
    compare(&fx, role, e.tensor);
  }
  im_nn_optim_free(opt);
  im_nn_model_free(m);
  fx_close(&fx);
}

static void test_optim_sgd(void **state) { run_optim("sgd"); }
static void test_optim_sgd_nesterov_clip(void **state) { run_optim("sgd_nesterov_clip"); }
static void test_optim_adam(void **state) { run_optim("adam"); }
static void test_optim_adamw_filter(void **state) { run_optim("adamw_filter"); }
static void test_optim_adamw(void **state) { run_optim("adamw"); }

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_parity_surfacenet),
      cmocka_unit_test(test_parity_resnet18),
      cmocka_unit_test(test_parity_convnext_atto),
      cmocka_unit_test(test_optim_sgd),
      cmocka_unit_test(test_optim_sgd_nesterov_clip),
      cmocka_unit_test(test_optim_adam),
      cmocka_unit_test(test_optim_adamw_filter),
      cmocka_unit_test(test_optim_adamw),
  };
  int fails = cmocka_run_group_tests_name("ref backend", tests, setup, teardown);
  fails += cmocka_run_group_tests_name("cpu backend", tests, setup_cpu, teardown);
  return fails;
}
