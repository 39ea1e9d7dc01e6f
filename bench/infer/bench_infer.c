/* Inference benchmark of imops' folded inference path (the graph that imops
 * predict, test and serve run: batch norm folded, ReLU fused, memory planned
 * once) on the cpu backend: single-image latency (p50, p99 over --reps) and
 * batch throughput (median img/s over --batch-reps). It also writes the same
 * model as ONNX (--onnx FILE) so that ONNX Runtime runs the very same graph
 * and weights (bench/infer/peers.py; run.sh puts them side by side).
 *
 *   bench_infer --arch resnet18 --size 224 [--batch 64] [--reps 100] [--batch-reps 5] [--onnx F] [--nodes]
 *
 * --nodes also prints, on stderr, each node's median time at batch 1 and at the batch size (over
 * --reps and --batch-reps forwards): where a forward spends its time, layer by layer. A batch
 * that runs as batch lanes (src/nn/lanes.c) shows lane 0's times: about 1/lanes of the images.
 * "lanes" in the JSON: their number (0: one batch); the profiled shares then cover only the
 * steps outside the lanes.
 *
 * Prints one JSON object on stdout. Weights are freshly initialized (with
 * non-trivial batch-norm statistics); speed does not depend on their values. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imops/backend.h"
#include "imops/core.h"
#include "imops/nn.h"
#include "imops/onnx.h"
#include "imops/tensor.h"

/* The cpu backend's step timer (src/backend/cpu/cpu.h; declared here so that the bench
 * does not see oneDNN's headers, which only backend/ includes). */
void im__cpu_profile(im_backend_t *b, int on, double *reorder_s, double *total_s);
/* The per-node timer of src/nn (nn_impl.h). */
void im__nn_time_nodes(im_nn_model_t *m, double *acc);
size_t im__nn_node_count(const im_nn_model_t *m);
const char *im__nn_node_op(const im_nn_model_t *m, size_t i);
int im__nn_lanes_count(const im_nn_model_t *m);

static int cmp_double(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static double pct(const double *v, int n, double p) {
  int i = (int)ceil(p * n) - 1;
  return v[i < 0 ? 0 : i >= n ? n - 1 : i];
}

static void die(const char *what) {
  fprintf(stderr, "bench_infer: %s: %s\n", what, im_last_error());
  exit(1);
}

/* reps timed forwards of x: each node's median time, printed on stderr. */
static void node_table(im_nn_model_t *f, const im_tensor_t *x, int reps) {
  const size_t n = im__nn_node_count(f);
  double *t = calloc(n * (size_t)reps, sizeof *t), *acc = calloc(n, sizeof *acc), *col = malloc(sizeof *col * (size_t)reps);
  if (!t || !acc || !col) die("node table");
  im_tensor_t y;
  for (int r = 0; r < reps; r++) {
    memset(acc, 0, sizeof *acc * n);
    im__nn_time_nodes(f, acc);
    if (im_nn_forward(f, x, 0, &y) != IM_OK) die("forward");
    im__nn_time_nodes(f, NULL);
    for (size_t i = 0; i < n; i++) t[i * (size_t)reps + (size_t)r] = acc[i];
  }
  const int64_t b = x->shape[0];
  double total = 0;
  fprintf(stderr, "batch %lld: node, op, median ms, us per image\n", (long long)b);
  for (size_t i = 1; i < n; i++) {
    memcpy(col, t + i * (size_t)reps, sizeof *col * (size_t)reps);
    qsort(col, (size_t)reps, sizeof *col, cmp_double);
    const double ms = pct(col, reps, 0.5) * 1e3;
    total += ms;
    fprintf(stderr, "%4zu %-10s %9.3f %9.1f\n", i, im__nn_node_op(f, i), ms, ms * 1e3 / (double)b);
  }
  fprintf(stderr, "sum of medians %.3f ms (%.0f img/s)\n", total, total > 0 ? (double)b * 1e3 / total : 0.0);
  free(t);
  free(acc);
  free(col);
}

int main(int argc, char **argv) {
  const char *arch = "surfacenet", *onnx = NULL;
  int size = 112, batch = 64, reps = 100, batch_reps = 5, nodes = 0;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
    if (!strcmp(a, "--nodes")) {
      nodes = 1;
      continue;
    }
    if (!v) break;
    if (!strcmp(a, "--arch")) arch = v, i++;
    else if (!strcmp(a, "--size")) size = atoi(v), i++;
    else if (!strcmp(a, "--batch")) batch = atoi(v), i++;
    else if (!strcmp(a, "--reps")) reps = atoi(v), i++;
    else if (!strcmp(a, "--batch-reps")) batch_reps = atoi(v), i++;
    else if (!strcmp(a, "--onnx")) onnx = v, i++;
  }
  if (size < 8 || batch < 1 || reps < 1 || batch_reps < 1) {
    fprintf(stderr, "bench_infer: bad arguments\n");
    return 2;
  }
  im_nn_model_t *m = NULL, *f = NULL;
  im_backend_t *be = NULL;
  if (im_nn_model_new(arch, &(im_nn_model_opts_t){.seed = 1}, &m) != IM_OK) die(arch);
  /* Batch-norm statistics as a trained model has them (not 0 and 1). */
  for (size_t i = 0; i < im_nn_state_count(m); i++) {
    im_nn_state_entry_t e;
    if (im_nn_state_get(m, i, &e) != IM_OK || e.kind != IM_NN_STATE_BUFFER) continue;
    float *p = im_tensor_f32(e.tensor);
    const int var = strstr(e.name, "running_var") != NULL;
    for (int64_t k = 0; k < im_tensor_numel(e.tensor); k++) p[k] = var ? 1.0f + 0.01f * (float)(k % 7) : 0.01f * (float)(k % 5);
  }
  if (im_backend_cpu_new(&be) != IM_OK) die("cpu backend");
  if (onnx) {
    im_onnx_opts_t o = IM_ONNX_DEFAULTS;
    o.img_h = o.img_w = size;
    if (im_onnx_export(m, &o, onnx) != IM_OK) die("onnx export");
  }
  if (im_nn_model_fold(m, &f) != IM_OK) die("fold");
  im_nn_model_free(m);
  const int c = im_nn_model_in_channels(f);
  im_tensor_t x;
  if (im_tensor_alloc(&x, IM_F32, 4, (int64_t[]){batch, c, size, size}) != IM_OK) die("input");
  im_rng_t r;
  im_rng_seed(&r, 3);
  for (int64_t i = 0; i < im_tensor_numel(&x); i++) im_tensor_f32(&x)[i] = (float)im_rng_normal(&r);

  /* Single image. */
  if (im_nn_plan(f, be, 1, size, size, 0) != IM_OK) die("plan 1");
  im_tensor_t x1, y;
  (void)im_tensor_view(&x1, IM_F32, 4, (int64_t[]){1, c, size, size}, x.data);
  for (int i = 0; i < 5; i++)
    if (im_nn_forward(f, &x1, 0, &y) != IM_OK) die("forward");
  double *lat = malloc(sizeof *lat * (size_t)reps);
  for (int i = 0; i < reps; i++) {
    double t0 = im_time_now();
    if (im_nn_forward(f, &x1, 0, &y) != IM_OK) die("forward");
    lat[i] = (im_time_now() - t0) * 1e3;
  }
  qsort(lat, (size_t)reps, sizeof *lat, cmp_double);
  if (nodes) node_table(f, &x1, reps);

  /* Batch. */
  if (im_nn_plan(f, be, batch, size, size, 0) != IM_OK) die("plan batch");
  if (im_nn_forward(f, &x, 0, &y) != IM_OK) die("forward");
  double *tp = malloc(sizeof *tp * (size_t)batch_reps);
  for (int i = 0; i < batch_reps; i++) {
    double t0 = im_time_now();
    if (im_nn_forward(f, &x, 0, &y) != IM_OK) die("forward");
    tp[i] = batch / (im_time_now() - t0);
  }
  qsort(tp, (size_t)batch_reps, sizeof *tp, cmp_double);
  if (nodes) node_table(f, &x, batch_reps);
  /* Where the time goes: one profiled batch, the share of oneDNN steps that are layout reorders
   * (NCHW <-> blocked around each convolution), and of the whole forward spent in the backend's
   * plans ("onednn_share": oneDNN's primitives and imops' own Winograd kernels). */
  double reorder_s = 0, plans_s = 0;
  im__cpu_profile(be, 1, NULL, NULL);
  double t0 = im_time_now();
  if (im_nn_forward(f, &x, 0, &y) != IM_OK) die("forward");
  const double fwd_s = im_time_now() - t0;
  im__cpu_profile(be, 0, &reorder_s, &plans_s);
  printf("{\"runner\": \"imops\", \"arch\": \"%s\", \"size\": %d, \"threads\": %d, \"p50_ms\": %.4f, \"p99_ms\": %.4f, "
         "\"batch\": %d, \"img_s\": %.2f, \"plan_bytes\": %zu, \"reorder_share\": %.3f, \"onednn_share\": %.3f, \"lanes\": %d}\n",
         arch, size, im_num_threads(), pct(lat, reps, 0.5), pct(lat, reps, 0.99), batch,
         pct(tp, batch_reps, 0.5), im_nn_plan_bytes(f), fwd_s > 0 ? reorder_s / fwd_s : 0.0,
         fwd_s > 0 ? plans_s / fwd_s : 0.0, im__nn_lanes_count(f));
  free(lat);
  free(tp);
  im_tensor_free(&x);
  im_nn_model_free(f);
  im_backend_free(be);
  return 0;
}
