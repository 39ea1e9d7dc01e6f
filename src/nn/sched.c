/* Learning-rate schedules as pure functions of a tick (a step or an epoch,
 * the caller decides): constant, cosine annealing (torch CosineAnnealingLR's
 * closed form), step decay (StepLR), each optionally after a linear warm-up
 * (LinearLR chained with SequentialLR). See nn.h for the formulas. */
#include <math.h>

#include "nn/nn_impl.h"

im_status_t im_nn_sched_check(const im_nn_sched_t *s) {
  if (!s) return im_error(IM_ERR_ARG, "schedule: NULL");
  if (!(s->base_lr >= 0.0) || isinf(s->base_lr)) return im_error(IM_ERR_ARG, "schedule: invalid base_lr %g", s->base_lr);
  if (s->warmup < 0) return im_error(IM_ERR_ARG, "schedule: warmup must be >= 0");
  if (s->warmup > 0 && !(s->warmup_start >= 0.0 && s->warmup_start <= 1.0))
    return im_error(IM_ERR_ARG, "schedule: warmup_start %g must be in [0, 1]", s->warmup_start);
  switch (s->kind) {
    case IM_NN_SCHED_CONSTANT: return IM_OK;
    case IM_NN_SCHED_COSINE:
      if (s->t_max < 1) return im_error(IM_ERR_ARG, "schedule: cosine needs t_max >= 1");
      if (!(s->eta_min >= 0.0) || isinf(s->eta_min)) return im_error(IM_ERR_ARG, "schedule: invalid eta_min");
      return IM_OK;
    case IM_NN_SCHED_STEP:
      if (s->step_size < 1) return im_error(IM_ERR_ARG, "schedule: step decay needs step_size >= 1");
      if (!(s->gamma >= 0.0) || isinf(s->gamma)) return im_error(IM_ERR_ARG, "schedule: invalid gamma");
      return IM_OK;
  }
  return im_error(IM_ERR_ARG, "schedule: unknown kind %d", (int)s->kind);
}

double im_nn_sched_lr(const im_nn_sched_t *s, int64_t t) {
  if (t < 0) t = 0;
  if (s->warmup > 0 && t < s->warmup)
    return s->base_lr * (s->warmup_start + (1.0 - s->warmup_start) * (double)t / (double)s->warmup);
  const int64_t u = t - (s->warmup > 0 ? s->warmup : 0);
  switch (s->kind) {
    case IM_NN_SCHED_COSINE:
      if (s->t_max < 1) return s->base_lr;
      return s->eta_min + (s->base_lr - s->eta_min) * (1.0 + cos(M_PI * (double)u / (double)s->t_max)) / 2.0;
    case IM_NN_SCHED_STEP:
      if (s->step_size < 1) return s->base_lr;
      return s->base_lr * pow(s->gamma, (double)(u / s->step_size));
    default: return s->base_lr;
  }
}
