/* Training benchmark, imops side: images/second of a full training step
 * (im_nn_zero_grad, forward, loss, backward, SGD step with momentum) on random
 * data for one model, then inference at batch 64 and batch-1 latency on the
 * model folded for inference (batch norm folded, ReLU fused: what imops predict,
 * test and serve run), and the process's peak RSS. bench/train/run.sh runs it once per
 * model beside PyTorch (torch_train.py) and prints the comparison table.
 *
 *   bench_train --model NAME [--img 112] [--channels 3] [--classes 2] [--batch 64]
 *               [--steps 5] [--reps 5] [--warmup 2] [--infer-reps 5] [--lat-reps 30]
 *               [--sgemm N] [--profile 1]
 *   bench_train --sgemm N            (only the GEMM peak)
 *
 * Prints one JSON object: train_ips (median), train_ips_min/max, infer_ips,
 * latency_ms (median of batch-1 forwards), peak_rss_train_kb (VmHWM after
 * the training timing: plan, optimizer, oneDNN caches and all), peak_rss_kb
 * (at the end) and, with --sgemm N, dnnl_sgemm's GFLOP/s on N x N x N (median
 * of 7 after 2 warm-ups): the machine's fp32 GEMM peak as oneDNN reaches it.
 * --profile 1 times the cpu backend's plan steps during the timed training
 * steps and adds step_s (wall time of those steps), plan_s (time in oneDNN
 * plan steps: convolutions, layout reorders, ...) and reorder_s (the reorders
 * alone); the rest of step_s is imops' own loops (batch norm, ReLU, pooling,
 * optimizer). Timing every step costs a little speed: leave it off for the table.
 * Threads: IMOPS_NUM_THREADS / OMP_NUM_THREADS as set by the caller. */
#include <oneapi/dnnl/dnnl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imops/backend.h"
#include "imops/core.h"
#include "imops/nn.h"
#include "imops/tensor.h"

/* The cpu backend's step timer (src/backend/cpu/cpu.h; declared here so that the bench
 * does not see the backend's internal headers). */
void im__cpu_profile(im_backend_t *b, int on, double *reorder_s, double *total_s);

static int cmp_double(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double median(double *v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_double);
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/* A field of /proc/self/status in kB (VmHWM, VmRSS), or -1. */
static long proc_status_kb(const char *field) {
  FILE *f = fopen("/proc/self/status", "r");
  if (!f) return -1;
  char line[256];
  long v = -1;
  size_t n = strlen(field);
  while (fgets(line, sizeof line, f))
    if (!strncmp(line, field, n) && line[n] == ':') {
      v = strtol(line + n + 1, NULL, 10);
      break;
    }
  fclose(f);
  return v;
}

static void die(const char *what) {
  fprintf(stderr, "bench_train: %s: %s\n", what, im_last_error());
  exit(1);
}

/* dnnl_sgemm GFLOP/s on n x n x n, median of 7 after 2 warm-ups. */
static double sgemm_peak(int n) {
  size_t nn = (size_t)n * n;
  float *a = malloc(nn * sizeof *a), *b = malloc(nn * sizeof *b), *c = malloc(nn * sizeof *c);
  if (!a || !b || !c) {
    fprintf(stderr, "bench_train: out of memory for sgemm %d\n", n);
    exit(1);
  }
  for (size_t i = 0; i < nn; i++) {
    a[i] = (float)(i % 17) * 0.01f;
    b[i] = (float)(i % 13) * 0.02f;
    c[i] = 0;
  }
  double t[7];
  for (int r = 0; r < 9; r++) {
    double t0 = im_time_now();
    if (dnnl_sgemm('N', 'N', n, n, n, 1.0f, a, n, b, n, 0.0f, c, n) != dnnl_success) {
      fprintf(stderr, "bench_train: dnnl_sgemm failed\n");
      exit(1);
    }
    if (r >= 2) t[r - 2] = im_time_now() - t0;
  }
  free(a);
  free(b);
  free(c);
  return 2.0 * n * (double)n * n / median(t, 7) / 1e9;
}

int main(int argc, char **argv) {
  const char *model = NULL;
  int img = 112, ch = 3, classes = 2, batch = 64, steps = 5, reps = 5, warmup = 2, infer_reps = 5, lat_reps = 30;
  int sgemm = 0, profile = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (i + 1 >= argc) {
      fprintf(stderr, "bench_train: %s needs a value\n", a);
      return 2;
    }
    const char *v = argv[++i];
    if (!strcmp(a, "--model")) model = v;
    else if (!strcmp(a, "--img")) img = atoi(v);
    else if (!strcmp(a, "--channels")) ch = atoi(v);
    else if (!strcmp(a, "--classes")) classes = atoi(v);
    else if (!strcmp(a, "--batch")) batch = atoi(v);
    else if (!strcmp(a, "--steps")) steps = atoi(v);
    else if (!strcmp(a, "--reps")) reps = atoi(v);
    else if (!strcmp(a, "--warmup")) warmup = atoi(v);
    else if (!strcmp(a, "--infer-reps")) infer_reps = atoi(v);
    else if (!strcmp(a, "--lat-reps")) lat_reps = atoi(v);
    else if (!strcmp(a, "--sgemm")) sgemm = atoi(v);
    else if (!strcmp(a, "--profile")) profile = atoi(v);
    else {
      fprintf(stderr, "bench_train: unknown option %s\n", a);
      return 2;
    }
  }
  if (!model && sgemm > 0) { /* the GEMM peak alone */
    printf("{\"sgemm_n\": %d, \"sgemm_gflops\": %.1f, \"threads\": %d}\n", sgemm, sgemm_peak(sgemm), im_num_threads());
    return 0;
  }
  if (!model || img < 8 || batch < 2 || steps < 1 || reps < 1 || reps > 100 || infer_reps < 1 || infer_reps > 100 ||
      lat_reps < 1 || lat_reps > 1000) {
    fprintf(stderr, "usage: bench_train --model NAME [--img S] [--channels C] [--batch N] [--steps K] [--reps R] ...\n");
    return 2;
  }

  im_backend_t *be = NULL;
  if (im_backend_cpu_new(&be)) die("cpu backend");
  im_nn_model_opts_t mo = {.num_classes = classes, .in_channels = ch, .seed = 1};
  im_nn_model_t *m = NULL;
  if (im_nn_model_new(model, &mo, &m)) die(model);
  if (im_nn_plan(m, be, batch, img, img, 1)) die("plan");
  im_nn_optim_opts_t oo = im_nn_optim_defaults(IM_NN_OPTIM_SGD);
  oo.lr = 0.01;
  oo.momentum = 0.9;
  im_nn_optim_t *opt = NULL;
  if (im_nn_optim_new(m, &oo, &opt)) die("optimizer");

  /* Random inputs (normal-ish) and labels, as the PyTorch side uses. */
  int64_t shape[4] = {batch, ch, img, img};
  im_tensor_t x;
  if (im_tensor_alloc(&x, IM_F32, 4, shape)) die("input");
  im_rng_t r;
  im_rng_seed(&r, 7);
  float *xd = im_tensor_f32(&x);
  for (int64_t i = 0; i < im_tensor_numel(&x); i++) xd[i] = (float)im_rng_normal(&r);
  int32_t *labels = malloc(sizeof *labels * (size_t)batch);
  for (int i = 0; i < batch; i++) labels[i] = (int32_t)im_rng_below(&r, (uint32_t)classes);

  double *ips = malloc(sizeof *ips * (size_t)(reps + infer_reps + lat_reps));
  double step_s = 0, plan_s = 0, reorder_s = 0;
  for (int rep = -warmup; rep < reps; rep++) {
    if (profile && rep == 0) im__cpu_profile(be, 1, NULL, NULL);
    double t0 = im_time_now();
    for (int s = 0; s < (rep < 0 ? 1 : steps); s++) {
      float loss;
      im_nn_zero_grad(m);
      if (im_nn_forward(m, &x, 1, NULL) || im_nn_loss(m, labels, 0.0f, &loss) || im_nn_backward(m) ||
          im_nn_optim_step(opt))
        die("training step");
    }
    if (rep >= 0) ips[rep] = (double)batch * steps / (im_time_now() - t0);
    if (rep >= 0) step_s += (double)batch * steps / ips[rep];
  }
  if (profile) im__cpu_profile(be, 0, &reorder_s, &plan_s);
  double train_med = median(ips, reps), train_min = ips[0], train_max = ips[reps - 1];
  size_t plan_bytes = im_nn_plan_bytes(m);
  long hwm_train = proc_status_kb("VmHWM");

  /* Inference on the folded model: a plan at batch 64, then at batch 1. */
  im_nn_model_t *f = NULL;
  if (im_nn_model_fold(m, &f)) die("fold");
  if (im_nn_plan(f, be, batch, img, img, 0)) die("inference plan");
  for (int rep = -1; rep < infer_reps; rep++) {
    double t0 = im_time_now();
    if (im_nn_forward(f, &x, 0, NULL)) die("inference");
    if (rep >= 0) ips[rep] = (double)batch / (im_time_now() - t0);
  }
  double infer_med = median(ips, infer_reps);
  if (im_nn_plan(f, be, 1, img, img, 0)) die("batch-1 plan");
  int64_t shape1[4] = {1, ch, img, img};
  im_tensor_t x1;
  if (im_tensor_alloc(&x1, IM_F32, 4, shape1)) die("input");
  memcpy(x1.data, x.data, im_tensor_nbytes(&x1));
  for (int rep = -3; rep < lat_reps; rep++) {
    double t0 = im_time_now();
    if (im_nn_forward(f, &x1, 0, NULL)) die("batch-1 inference");
    if (rep >= 0) ips[rep] = (im_time_now() - t0) * 1e3;
  }
  double lat_med = median(ips, lat_reps);
  double gemm = sgemm > 0 ? sgemm_peak(sgemm) : 0;
  long long nparams = 0;
  for (size_t i = 0; i < im_nn_param_count(m); i++) {
    im_nn_param_t p;
    if (im_nn_param_get(m, i, &p) == IM_OK) nparams += im_tensor_numel(p.value);
  }

  printf("{\"model\": \"%s\", \"img\": %d, \"channels\": %d, \"batch\": %d, \"threads\": %d, \"train_ips\": %.2f, "
         "\"train_ips_min\": %.2f, \"train_ips_max\": %.2f, \"infer_ips\": %.2f, \"latency_ms\": %.3f, "
         "\"peak_rss_train_kb\": %ld, \"peak_rss_kb\": %ld, \"params\": %lld, \"plan_bytes\": %zu",
         model, img, ch, batch, im_num_threads(), train_med, train_min, train_max, infer_med, lat_med, hwm_train,
         proc_status_kb("VmHWM"), nparams, plan_bytes);
  if (sgemm > 0) printf(", \"sgemm_n\": %d, \"sgemm_gflops\": %.1f", sgemm, gemm);
  if (profile) printf(", \"step_s\": %.4f, \"plan_s\": %.4f, \"reorder_s\": %.4f", step_s, plan_s, reorder_s);
  printf("}\n");
  free(ips);
  free(labels);
  im_tensor_free(&x);
  im_tensor_free(&x1);
  im_nn_optim_free(opt);
  im_nn_model_free(f);
  im_nn_model_free(m);
  im_backend_free(be);
  return 0;
}
