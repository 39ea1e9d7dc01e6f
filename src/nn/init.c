/* Weight initialization as the reference implementations do it: kaiming
 * normal (fan_out, ReLU gain) for torchvision ResNet convs, torch's default
 * Linear init (kaiming_uniform a=sqrt 5, i.e. U(+-1/sqrt(fan_in)), bias
 * U(+-1/sqrt(fan_in))), trunc_normal(std 0.02, bounds +-2) for ConvNeXt, and
 * constants for norms, running stats and layer scale. Each entry draws from
 * its own stream im_rng_derive(seed, entry index), so the result depends only
 * on the seed and the architecture, not on the threads that fill the entries. */
#include <math.h>

#include "nn/nn_impl.h"

/* PyTorch's _calculate_fan_in_and_fan_out: dim 1 and dim 0 times the receptive field. */
static void fans(const im__nn_entry_t *e, double *fan_in, double *fan_out) {
  double rf = 1.0;
  for (int i = 2; i < e->ndim; i++) rf *= (double)e->shape[i];
  *fan_in = (e->ndim >= 2 ? (double)e->shape[1] : 1.0) * rf;
  *fan_out = (e->ndim >= 1 ? (double)e->shape[0] : 1.0) * rf;
}

/* Standard normals in pairs (both Box-Muller outputs). */
typedef struct {
  im_rng_t r;
  double spare;
  int has_spare;
} normal_t;

static double normal(normal_t *g) {
  if (g->has_spare) {
    g->has_spare = 0;
    return g->spare;
  }
  double u1 = im_rng_uniform(&g->r), u2 = im_rng_uniform(&g->r);
  if (u1 < 1e-300) u1 = 1e-300;
  const double rad = sqrt(-2.0 * log(u1)), th = 6.283185307179586 * u2;
  g->spare = rad * sin(th);
  g->has_spare = 1;
  return rad * cos(th);
}

typedef struct {
  im_nn_model_t *m;
  uint64_t seed;
} init_ctx_t;

static void init_one(void *ctx, int64_t i, int thread) {
  const init_ctx_t *c = ctx;
  im__nn_entry_t *e = &c->m->ents[i];
  if (e->kind == IM_NN_STATE_COUNTER) {
    e->counter = 0;
    return;
  }
  float *v = im_tensor_f32(&e->value);
  const int64_t n = im_tensor_numel(&e->value);
  normal_t g = {.has_spare = 0};
  im_rng_seed(&g.r, im_rng_derive(c->seed, (uint64_t)i));
  im_rng_t *r = &g.r;
  double fan_in, fan_out;
  fans(e, &fan_in, &fan_out);
  switch (e->init) {
    case IM__NN_INIT_CONST:
      for (int64_t k = 0; k < n; k++) v[k] = (float)e->init_arg;
      break;
    case IM__NN_INIT_KAIMING_FAN_OUT: {
      const double std = sqrt(2.0) / sqrt(fan_out);
      for (int64_t k = 0; k < n; k++) v[k] = (float)(std * normal(&g));
      break;
    }
    case IM__NN_INIT_TORCH_DEFAULT: {
      /* kaiming_uniform_(a=sqrt 5): gain sqrt(2 / (1 + 5)), bound gain * sqrt(3 / fan_in) = 1/sqrt(fan_in) */
      const double bound = sqrt(2.0 / 6.0) * sqrt(3.0 / fan_in);
      for (int64_t k = 0; k < n; k++) v[k] = (float)((2.0 * im_rng_uniform(r) - 1.0) * bound);
      break;
    }
    case IM__NN_INIT_UNIFORM:
      for (int64_t k = 0; k < n; k++) v[k] = (float)((2.0 * im_rng_uniform(r) - 1.0) * e->init_arg);
      break;
    case IM__NN_INIT_TRUNC_NORMAL:
      for (int64_t k = 0; k < n; k++) {
        double z;
        do z = e->init_arg * normal(&g);
        while (z < -2.0 || z > 2.0);
        v[k] = (float)z;
      }
      break;
  }
}

im_status_t im__nn_init_entries(im_nn_model_t *m, uint64_t seed) {
  init_ctx_t c = {m, seed};
  /* Entries are independent streams: any thread may fill any entry. */
  return im_parallel_for((int64_t)m->n_ents, 0, init_one, &c);
}
