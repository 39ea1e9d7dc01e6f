/* Hyperband early termination: W&B's bands and stopping rule
 * (wandb/sweeps hyperband_stopping.py) over the per-epoch metric trials
 * report, and Li et al.'s bracket schedule (JMLR 2018, Algorithm 1). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sweep/sweep_impl.h"

void im_sweep_hyperband_bands(const im_sweep_config_t *c, int64_t *bands, size_t cap, size_t *n) {
  *n = 0;
  if (!c->hyperband) return;
  const double eta = c->hb_eta > 1 ? c->hb_eta : 3;
  if (c->hb_max_iter > 0) {
    double band = (double)c->hb_max_iter;
    for (int64_t i = 0; i < c->hb_s && *n < cap; i++) {
      band /= eta;
      if (band < 1) break;
      bands[(*n)++] = (int64_t)band;
    }
    for (size_t i = 0; i < *n / 2; i++) { /* ascending */
      int64_t t = bands[i];
      bands[i] = bands[*n - 1 - i];
      bands[*n - 1 - i] = t;
    }
  } else {
    double band = (double)c->hb_min_iter;
    while (*n < cap && band < 1e9) {
      bands[(*n)++] = (int64_t)band;
      band *= eta;
    }
  }
}

static int cmp_d(const void *a, const void *b) {
  double u = *(const double *)a, v = *(const double *)b;
  return u < v ? -1 : u > v ? 1 : 0;
}

int im_sweep_hyperband_stop(const im_sweep_config_t *c, const double *const *hist, const size_t *len, size_t ntrials,
                            size_t self) {
  if (!c->hyperband || self >= ntrials) return 0;
  int64_t bands[64];
  size_t nb = 0;
  im_sweep_hyperband_bands(c, bands, 64, &nb);
  const double sign = c->maximize ? -1 : 1;
  /* the last band the trial has reached */
  size_t b = nb;
  for (size_t i = 0; i < nb; i++)
    if ((int64_t)len[self] >= bands[i]) b = i;
  if (b == nb) return 0;
  const size_t at = (size_t)bands[b] - 1;
  double *vals = malloc(ntrials * sizeof *vals);
  if (!vals) return 0;
  size_t m = 0;
  for (size_t t = 0; t < ntrials; t++)
    if (len[t] > at && isfinite(hist[t][at])) vals[m++] = sign * hist[t][at];
  int stop = 0;
  if (m > 0) {
    qsort(vals, m, sizeof *vals, cmp_d);
    size_t k = (size_t)floor((double)m / c->hb_eta);
    if (k >= m) k = m - 1;
    double threshold = vals[k], mine;
    if (c->hb_strict) {
      mine = sign * hist[self][at];
    } else {
      mine = INFINITY;
      for (size_t i = 0; i < len[self]; i++)
        if (isfinite(hist[self][i])) mine = fmin(mine, sign * hist[self][i]);
    }
    stop = !(mine <= threshold); /* NaN counts as worse */
  }
  free(vals);
  return stop;
}

void im_sweep_hyperband_schedule(double R, double eta, im_sweep_bracket_t *out, size_t cap, size_t *n) {
  *n = 0;
  if (!(R >= 1) || !(eta > 1)) return;
  int s_max = (int)floor(log(R) / log(eta) + 1e-9);
  if (s_max > 15) s_max = 15;
  double B = (s_max + 1) * R;
  for (int s = s_max; s >= 0 && *n < cap; s--) {
    im_sweep_bracket_t *br = &out[(*n)++];
    memset(br, 0, sizeof *br);
    br->s = s;
    br->rungs = s + 1;
    double nn = ceil(B / R * pow(eta, s) / (s + 1) - 1e-9), r = R * pow(eta, -s);
    for (int i = 0; i <= s; i++) {
      br->n[i] = (int64_t)floor(nn * pow(eta, -i) + 1e-9);
      br->r[i] = r * pow(eta, i);
    }
  }
}
