/* Kernels benchmark: GFLOP/s of conv2d forward, backward-data and
 * backward-weights on the cpu backend (oneDNN) and the ref backend for the
 * layers of resnet18 at 112x112 and of SurfaceCNN, with the share of the cpu
 * time spent reordering NCHW/OIHW to oneDNN's blocked layouts and back; then
 * milliseconds of the memory-bound ops of a training step (batch norm, ReLU,
 * max pool, layer norm, GELU) at realistic shapes. Given the output of
 * torch_conv.py (run.sh does both), PyTorch's figures for the same ops sit
 * beside ours with the ratio to PyTorch's better layout.
 *
 *   bench_kernels [--batch 64] [--reps 7] [--ref-batch 2] [--no-ref] [--torch FILE]
 *
 * Each cpu figure is the median (min-max) of --reps timed runs after two
 * warm-ups; ref runs once at --ref-batch (its speed per image hardly depends on
 * the batch). FLOPs are 2 * MACs of the convolution for every one of the three
 * ops. The memory-bound shapes are fixed at batch 64 (--batch scales the convs). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imops/backend.h"
#include "imops/core.h"
#include "imops/tensor.h"

/* The cpu backend's step timer (src/backend/cpu/cpu.h; declared here so that the bench
 * does not see oneDNN's headers, which only backend/ includes). */
void im__cpu_profile(im_backend_t *b, int on, double *reorder_s, double *total_s);
size_t im__cpu_workspace_bytes(const im_backend_t *b);

typedef struct {
  const char *name;
  int64_t C, H, K, R;
  int stride, pad, bias;
} layer_t;

static const layer_t layers[] = {
    {"r18.conv1 3-64 k7s2 @112", 3, 112, 64, 7, 2, 3, 0},
    {"r18.l1 64-64 k3 @28", 64, 28, 64, 3, 1, 1, 0},
    {"r18.l2a 64-128 k3s2 @28", 64, 28, 128, 3, 2, 1, 0},
    {"r18.l2ds 64-128 k1s2 @28", 64, 28, 128, 1, 2, 0, 0},
    {"r18.l2 128-128 k3 @14", 128, 14, 128, 3, 1, 1, 0},
    {"r18.l3a 128-256 k3s2 @14", 128, 14, 256, 3, 2, 1, 0},
    {"r18.l3 256-256 k3 @7", 256, 7, 256, 3, 1, 1, 0},
    {"r18.l4a 256-512 k3s2 @7", 256, 7, 512, 3, 2, 1, 0},
    {"r18.l4 512-512 k3 @4", 512, 4, 512, 3, 1, 1, 0},
    {"surf.c1 3-32 k3s2 @112", 3, 112, 32, 3, 2, 1, 1},
    {"surf.c2 32-64 k3 @28", 32, 28, 64, 3, 1, 1, 1},
    {"surf.c3 64-128 k3 @14", 64, 14, 128, 3, 1, 1, 1},
};
#define NLAYERS ((int)(sizeof layers / sizeof *layers))
static const char *const op_names[3] = {"fwd", "bwd_data", "bwd_weight"};

/* PyTorch's GFLOP/s per layer and op, NCHW and channels_last, median and best (0 when absent). */
static double torch_nchw[NLAYERS][3], torch_cl[NLAYERS][3], torch_best[NLAYERS][3];

static int cmp_double(const void *a, const void *b) {
  const double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

typedef struct {
  im_conv2d_params_t p;
  im_tensor_t x, w, b, y, dy, dx, dw, db;
} conv_t;

static int conv_init(conv_t *c, const layer_t *l, int64_t N) {
  memset(c, 0, sizeof *c);
  c->p = (im_conv2d_params_t){l->stride, l->stride, l->pad, l->pad, 1, 1, 1};
  const int64_t xs[4] = {N, l->C, l->H, l->H}, ws[4] = {l->K, l->C, l->R, l->R}, bs[1] = {l->K};
  int64_t ys[4];
  if (im_conv2d_output_shape(&c->p, xs, ws, ys) != IM_OK) return -1;
  im_rng_t r;
  im_rng_seed(&r, 1);
  im_tensor_t *rnd[] = {&c->x, &c->w, &c->b, &c->dy};
  if (im_tensor_alloc(&c->x, IM_F32, 4, xs) || im_tensor_alloc(&c->w, IM_F32, 4, ws) ||
      im_tensor_alloc(&c->b, IM_F32, 1, bs) || im_tensor_alloc(&c->y, IM_F32, 4, ys) ||
      im_tensor_alloc(&c->dy, IM_F32, 4, ys) || im_tensor_alloc(&c->dx, IM_F32, 4, xs) ||
      im_tensor_alloc(&c->dw, IM_F32, 4, ws) || im_tensor_alloc(&c->db, IM_F32, 1, bs))
    return -1;
  for (int i = 0; i < 4; i++) {
    float *d = rnd[i]->data;
    for (int64_t k = 0; k < im_tensor_numel(rnd[i]); k++) d[k] = (float)(im_rng_uniform(&r) - 0.5);
  }
  return 0;
}

static void conv_free(conv_t *c) {
  im_tensor_t *all[] = {&c->x, &c->w, &c->b, &c->y, &c->dy, &c->dx, &c->dw, &c->db};
  for (int i = 0; i < 8; i++) im_tensor_free(all[i]);
}

static im_status_t conv_run(im_backend_t *be, conv_t *c, int op, int bias) {
  switch (op) {
    case 0: return im_op_conv2d_forward(be, &c->p, &c->x, &c->w, bias ? &c->b : NULL, &c->y);
    case 1: return im_op_conv2d_backward_data(be, &c->p, &c->dy, &c->w, &c->dx);
    default: return im_op_conv2d_backward_weight(be, &c->p, &c->x, &c->dy, &c->dw, bias ? &c->db : NULL);
  }
}

static double conv_flops(const layer_t *l, const conv_t *c) {
  return 2.0 * (double)im_tensor_numel(&c->y) * (double)(l->C * l->R * l->R);
}

/* ---- memory-bound ops ---- */

enum { X_BN_FWD, X_BN_BWD, X_RELU_FWD, X_RELU_BWD, X_MAXPOOL_FWD, X_MAXPOOL_BWD, X_LN_FWD, X_LN_BWD, X_GELU_FWD, X_GELU_BWD };
typedef struct {
  const char *name;
  int kind;
  int64_t shape[4]; /* at batch 64; NHWC [N,H,W,C] for layer norm */
  int pool_k, pool_s, pool_p;
} xop_t;

static const xop_t xops[] = {
    {"batchnorm fwd 64x64x56x56", X_BN_FWD, {64, 64, 56, 56}, 0, 0, 0},
    {"batchnorm bwd 64x64x56x56", X_BN_BWD, {64, 64, 56, 56}, 0, 0, 0},
    {"relu fwd 64x64x56x56", X_RELU_FWD, {64, 64, 56, 56}, 0, 0, 0},
    {"relu bwd 64x64x56x56", X_RELU_BWD, {64, 64, 56, 56}, 0, 0, 0},
    {"maxpool k3s2p1 fwd 64x64x56x56", X_MAXPOOL_FWD, {64, 64, 56, 56}, 3, 2, 1},
    {"maxpool k3s2p1 bwd 64x64x56x56", X_MAXPOOL_BWD, {64, 64, 56, 56}, 3, 2, 1},
    {"maxpool k2s2 fwd 64x32x56x56", X_MAXPOOL_FWD, {64, 32, 56, 56}, 2, 2, 0},
    {"maxpool k2s2 bwd 64x32x56x56", X_MAXPOOL_BWD, {64, 32, 56, 56}, 2, 2, 0},
    {"layernorm fwd 64x28x28x96", X_LN_FWD, {64, 28, 28, 96}, 0, 0, 0},
    {"layernorm bwd 64x28x28x96", X_LN_BWD, {64, 28, 28, 96}, 0, 0, 0},
    {"gelu fwd 64x28x28x384", X_GELU_FWD, {64, 28, 28, 384}, 0, 0, 0},
    {"gelu bwd 64x28x28x384", X_GELU_BWD, {64, 28, 28, 384}, 0, 0, 0},
};
#define NXOPS ((int)(sizeof xops / sizeof *xops))
static double torch_x_nchw[NXOPS], torch_x_cl[NXOPS], torch_x_best[NXOPS]; /* ms */

typedef struct {
  im_tensor_t x, y, dy, dx, gamma, beta, rm, rv, sm, si, dg, db, idx;
  im_pool2d_params_t pp;
} xbufs_t;

static int xop_init(xbufs_t *t, const xop_t *o, int64_t N) {
  memset(t, 0, sizeof *t);
  int64_t xs[4] = {N, o->shape[1], o->shape[2], o->shape[3]}, ys[4];
  memcpy(ys, xs, sizeof ys);
  const int ln = o->kind == X_LN_FWD || o->kind == X_LN_BWD;
  const int64_t C = ln ? xs[3] : xs[1], cs[1] = {C}, rows[1] = {N * xs[1] * xs[2]};
  if (o->kind == X_MAXPOOL_FWD || o->kind == X_MAXPOOL_BWD) {
    t->pp = (im_pool2d_params_t){o->pool_k, o->pool_k, o->pool_s, o->pool_s, o->pool_p, o->pool_p, 0};
    if (im_pool2d_output_shape(&t->pp, xs, ys) != IM_OK) return -1;
  }
  const int64_t *ss = ln ? rows : cs;
  if (im_tensor_alloc(&t->x, IM_F32, 4, xs) || im_tensor_alloc(&t->dx, IM_F32, 4, xs) ||
      im_tensor_alloc(&t->y, IM_F32, 4, ys) || im_tensor_alloc(&t->dy, IM_F32, 4, ys) ||
      im_tensor_alloc(&t->idx, IM_I32, 4, ys) || im_tensor_alloc(&t->gamma, IM_F32, 1, cs) ||
      im_tensor_alloc(&t->beta, IM_F32, 1, cs) || im_tensor_alloc(&t->rm, IM_F32, 1, cs) ||
      im_tensor_alloc(&t->rv, IM_F32, 1, cs) || im_tensor_alloc(&t->dg, IM_F32, 1, cs) ||
      im_tensor_alloc(&t->db, IM_F32, 1, cs) || im_tensor_alloc(&t->sm, IM_F32, 1, ss) ||
      im_tensor_alloc(&t->si, IM_F32, 1, ss))
    return -1;
  im_rng_t r;
  im_rng_seed(&r, 2);
  im_tensor_t *rnd[] = {&t->x, &t->dy, &t->gamma, &t->beta};
  for (int i = 0; i < 4; i++) {
    float *d = rnd[i]->data;
    for (int64_t k = 0; k < im_tensor_numel(rnd[i]); k++) d[k] = (float)(im_rng_uniform(&r) - 0.5);
  }
  im_tensor_fill_f32(&t->rv, 1.0f);
  im_tensor_fill_f32(&t->si, 1.0f);
  return 0;
}

static void xop_free(xbufs_t *t) {
  im_tensor_t *all[] = {&t->x, &t->y, &t->dy, &t->dx, &t->gamma, &t->beta, &t->rm,
                        &t->rv, &t->sm, &t->si, &t->dg, &t->db, &t->idx};
  for (size_t i = 0; i < sizeof all / sizeof *all; i++) im_tensor_free(all[i]);
}

static im_status_t xop_run(im_backend_t *be, const xop_t *o, xbufs_t *t) {
  const im_batchnorm_params_t bp = IM_BATCHNORM_DEFAULTS;
  const im_layernorm_params_t lp = {1e-6f};
  switch (o->kind) {
    case X_BN_FWD:
      return im_op_batchnorm_forward_train(be, &bp, &t->x, &t->gamma, &t->beta, &t->rm, &t->rv, &t->y, &t->sm,
                                           &t->si);
    case X_BN_BWD:
      return im_op_batchnorm_backward(be, &t->x, &t->dy, &t->gamma, &t->sm, &t->si, &t->dx, &t->dg, &t->db);
    case X_RELU_FWD: return im_op_relu_forward(be, &t->x, &t->y);
    case X_RELU_BWD: return im_op_relu_backward(be, &t->x, &t->dy, &t->dx);
    case X_MAXPOOL_FWD: return im_op_maxpool2d_forward(be, &t->pp, &t->x, &t->y, &t->idx);
    case X_MAXPOOL_BWD: return im_op_maxpool2d_backward(be, &t->pp, &t->dy, &t->idx, &t->dx);
    case X_LN_FWD: return im_op_layernorm_forward(be, &lp, &t->x, &t->gamma, &t->beta, &t->y, &t->sm, &t->si);
    case X_LN_BWD:
      return im_op_layernorm_backward(be, &t->x, &t->dy, &t->gamma, &t->sm, &t->si, &t->dx, &t->dg, &t->db);
    case X_GELU_FWD: return im_op_gelu_forward(be, &t->x, &t->y);
    default: return im_op_gelu_backward(be, &t->x, &t->dy, &t->dx);
  }
}

/* torch_conv.py --table lines: "conv <layer> <op> <gflops nchw> <gflops cl> <best nchw> <best cl>"
 * and "xop <index> <ms nchw> <ms cl> <best nchw> <best cl>" (medians, then the best runs). */
static void read_torch(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) {
    fprintf(stderr, "bench_kernels: cannot read %s\n", path);
    return;
  }
  char tag[8];
  while (fscanf(f, "%7s", tag) == 1) {
    int li, oi;
    double a, b, c, d;
    if (!strcmp(tag, "conv") && fscanf(f, "%d %d %lf %lf %lf %lf", &li, &oi, &a, &b, &c, &d) == 6) {
      if (li >= 0 && li < NLAYERS && oi >= 0 && oi < 3)
        torch_nchw[li][oi] = a, torch_cl[li][oi] = b, torch_best[li][oi] = c > d ? c : d;
    } else if (!strcmp(tag, "xop") && fscanf(f, "%d %lf %lf %lf %lf", &li, &a, &b, &c, &d) == 5) {
      if (li >= 0 && li < NXOPS) torch_x_nchw[li] = a, torch_x_cl[li] = b, torch_x_best[li] = c < d ? c : d;
    } else {
      break;
    }
  }
  fclose(f);
}

int main(int argc, char **argv) {
  int64_t batch = 64, ref_batch = 2;
  int reps = 7, do_ref = 1;
  const char *torch_file = NULL;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--batch") && i + 1 < argc) batch = atoll(argv[++i]);
    else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--ref-batch") && i + 1 < argc) ref_batch = atoll(argv[++i]);
    else if (!strcmp(argv[i], "--no-ref")) do_ref = 0;
    else if (!strcmp(argv[i], "--torch") && i + 1 < argc) torch_file = argv[++i];
    else {
      fprintf(stderr, "usage: bench_kernels [--batch N] [--reps N] [--ref-batch N] [--no-ref] [--torch FILE]\n");
      return 2;
    }
  }
  if (reps < 1 || reps > 1000 || batch < 1 || ref_batch < 1) {
    fprintf(stderr, "bench_kernels: bad --reps or --batch\n");
    return 2;
  }
  if (torch_file) read_torch(torch_file);
  im_backend_t *cpu = NULL, *ref = NULL;
  if (im_backend_cpu_new(&cpu) != IM_OK || im_backend_ref_new(&ref) != IM_OK) {
    fprintf(stderr, "bench_kernels: %s\n", im_last_error());
    return 1;
  }
  printf("conv2d GFLOP/s, cpu backend at batch %lld (median (min-max) of %d), %d threads; ref at batch %lld\n",
         (long long)batch, reps, im_num_threads(), (long long)ref_batch);
  printf("(cpu/torch: our median over torch's better median; best: our best run over torch's best run)\n");
  printf("%-26s %-10s %22s %8s %8s %8s %9s %9s %10s %6s\n", "layer", "op", "cpu", "reorder", "ref", "cpu/ref",
         "torch", "torch_cl", "cpu/torch", "best");
  double *t = malloc(sizeof *t * (size_t)reps);
  if (!t) return 1;
  for (int li = 0; li < NLAYERS; li++) {
    const layer_t *l = &layers[li];
    conv_t c, cr;
    if (conv_init(&c, l, batch) || (do_ref && conv_init(&cr, l, ref_batch))) {
      fprintf(stderr, "bench_kernels: out of memory\n");
      return 1;
    }
    const double fl = conv_flops(l, &c);
    for (int op = 0; op < 3; op++) {
      for (int w = 0; w < 2; w++)
        if (conv_run(cpu, &c, op, l->bias) != IM_OK) {
          fprintf(stderr, "bench_kernels: %s\n", im_last_error());
          return 1;
        }
      double reorder_s = 0, total_s = 0;
      for (int r = 0; r < reps; r++) {
        const double t0 = im_time_now();
        (void)conv_run(cpu, &c, op, l->bias);
        t[r] = im_time_now() - t0;
      }
      /* One more run with the steps timed, for the reorder share. */
      im__cpu_profile(cpu, 1, NULL, NULL);
      (void)conv_run(cpu, &c, op, l->bias);
      im__cpu_profile(cpu, 0, &reorder_s, &total_s);
      qsort(t, (size_t)reps, sizeof *t, cmp_double);
      const double med = fl / t[reps / 2] / 1e9, lo = fl / t[reps - 1] / 1e9, hi = fl / t[0] / 1e9;
      double refg = 0;
      if (do_ref) {
        const double t0 = im_time_now();
        (void)conv_run(ref, &cr, op, l->bias);
        refg = conv_flops(l, &cr) / (im_time_now() - t0) / 1e9;
      }
      char cell[64], rc[16] = "-", rr[16] = "-", tc[16] = "-", tl[16] = "-", tb[16] = "-", tbb[16] = "-";
      snprintf(cell, sizeof cell, "%.1f (%.1f-%.1f)", med, lo, hi);
      if (do_ref) snprintf(rc, sizeof rc, "%.2f", refg), snprintf(rr, sizeof rr, "%.0fx", med / refg);
      const double tn = torch_nchw[li][op], tcl = torch_cl[li][op], best = tn > tcl ? tn : tcl;
      if (tn > 0) snprintf(tc, sizeof tc, "%.1f", tn);
      if (tcl > 0) snprintf(tl, sizeof tl, "%.1f", tcl);
      if (best > 0) snprintf(tb, sizeof tb, "%.2f", med / best);
      if (torch_best[li][op] > 0) snprintf(tbb, sizeof tbb, "%.2f", hi / torch_best[li][op]);
      printf("%-26s %-10s %22s %7.1f%% %8s %8s %9s %9s %10s %6s\n", l->name, op_names[op], cell,
             total_s > 0 ? 100.0 * reorder_s / total_s : 0.0, rc, rr, tc, tl, tb, tbb);
      fflush(stdout);
    }
    conv_free(&c);
    if (do_ref) conv_free(&cr);
  }
  printf("\nmemory-bound ops, ms per call at batch 64 (cpu: median (min-max) of %d; ref: one run at batch %lld, "
         "scaled to 64)\n",
         reps, (long long)ref_batch);
  printf("%-32s %22s %9s %8s %9s %9s %10s %6s\n", "op", "cpu ms", "ref ms", "ref/cpu", "torch", "torch_cl",
         "torch/cpu", "best");
  for (int xi = 0; xi < NXOPS; xi++) {
    const xop_t *o = &xops[xi];
    xbufs_t xb, xr;
    if (xop_init(&xb, o, o->shape[0]) || (do_ref && xop_init(&xr, o, ref_batch))) {
      fprintf(stderr, "bench_kernels: out of memory\n");
      return 1;
    }
    /* The backward ops need valid statistics and indices: run the forward once first. */
    const xop_t *fw = xi > 0 && (o->kind == X_BN_BWD || o->kind == X_MAXPOOL_BWD || o->kind == X_LN_BWD) ? &xops[xi - 1]
                                                                                                       : NULL;
    if (fw && (xop_run(cpu, fw, &xb) != IM_OK || (do_ref && xop_run(ref, fw, &xr) != IM_OK))) {
      fprintf(stderr, "bench_kernels: %s\n", im_last_error());
      return 1;
    }
    for (int w = 0; w < 2; w++)
      if (xop_run(cpu, o, &xb) != IM_OK) {
        fprintf(stderr, "bench_kernels: %s\n", im_last_error());
        return 1;
      }
    for (int r = 0; r < reps; r++) {
      const double t0 = im_time_now();
      (void)xop_run(cpu, o, &xb);
      t[r] = im_time_now() - t0;
    }
    qsort(t, (size_t)reps, sizeof *t, cmp_double);
    const double med = t[reps / 2] * 1e3;
    char cell[64], rc[16] = "-", rr[16] = "-", tc[16] = "-", tl[16] = "-", tb[16] = "-";
    snprintf(cell, sizeof cell, "%.2f (%.2f-%.2f)", med, t[0] * 1e3, t[reps - 1] * 1e3);
    if (do_ref) {
      const double t0 = im_time_now();
      (void)xop_run(ref, o, &xr);
      const double refms = (im_time_now() - t0) * 1e3 * (double)o->shape[0] / (double)ref_batch;
      snprintf(rc, sizeof rc, "%.1f", refms);
      snprintf(rr, sizeof rr, "%.0fx", refms / med);
      xop_free(&xr);
    }
    const double tn = torch_x_nchw[xi], tcl = torch_x_cl[xi];
    const double best = tn > 0 && tcl > 0 ? (tn < tcl ? tn : tcl) : tn > 0 ? tn : tcl;
    char tbb[16] = "-";
    if (tn > 0) snprintf(tc, sizeof tc, "%.2f", tn);
    if (tcl > 0) snprintf(tl, sizeof tl, "%.2f", tcl);
    if (best > 0) snprintf(tb, sizeof tb, "%.2f", best / med);
    if (torch_x_best[xi] > 0) snprintf(tbb, sizeof tbb, "%.2f", torch_x_best[xi] / (t[0] * 1e3));
    printf("%-32s %22s %9s %8s %9s %9s %10s %6s\n", o->name, cell, rc, rr, tc, tl, tb, tbb);
    fflush(stdout);
    xop_free(&xb);
  }
  printf("\ncpu backend workspace: %.1f MiB\n", (double)im__cpu_workspace_bytes(cpu) / (1024.0 * 1024.0));
  free(t);
  im_backend_free(cpu);
  im_backend_free(ref);
  return 0;
}
