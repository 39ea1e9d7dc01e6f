/* The bayes search: a tree-structured Parzen estimator (Bergstra et al. 2011)
 * in Optuna's form, multivariate by default. Completed trials are split by
 * objective into the best gamma(n) ("good", density l) and the rest ("bad",
 * density g, which also gets running trials as a constant liar); each
 * density is a mixture of one kernel per trial plus a prior kernel, in the
 * [0, 1] space of im__sweep_encode (so log-scale parameters are searched in
 * log space): truncated Gaussians for numeric parameters (integers and
 * quantized values are rounded on decoding), and for categorical ones
 * Optuna's kernel (mass 1 on the trial's choice plus prior_weight / kernels
 * on every choice, normalized). Candidates are drawn from l and
 * the one maximizing log l(x) - log g(x) is taken. Nested parameters are
 * flattened names and always present, so they need nothing special. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sweep/sweep_impl.h"

typedef struct {
  size_t d;          /* dimensions (parameters) */
  const im_sweep_config_t *c;
  size_t nk;         /* kernels, the last one the prior */
  const double *mu;  /* nk x d centres in [0,1] (categoricals: index) */
  double *sigma;     /* d: bandwidth per numeric dimension */
  double prior_weight;
} parzen_t;

static double log_trunc_norm(double x, double mu, double s) {
  double z = (x - mu) / s;
  double Z = im__sweep_phi((1 - mu) / s) - im__sweep_phi((0 - mu) / s);
  if (Z < 1e-300) Z = 1e-300;
  return -0.5 * z * z - log(s * sqrt(2 * M_PI)) - log(Z);
}

/* Categorical kernel k at index v: mass 1 on its own value plus prior_weight/nk spread evenly. */
static double log_cat(const parzen_t *pz, size_t k, size_t j, double v) {
  size_t K = pz->c->params[j].n_values;
  if (k == pz->nk - 1) return -log((double)K); /* the prior */
  double eps = pz->prior_weight / (double)pz->nk;
  double own = (size_t)pz->mu[k * pz->d + j] == (size_t)v ? 1 : 0;
  return log((own + eps) / (1 + (double)K * eps));
}

/* Log density of kernel k at x: over every dimension (only = d) or dimension only. */
static double log_kernel(const parzen_t *pz, size_t k, const double *x, size_t only) {
  double lp = 0;
  for (size_t j = only < pz->d ? only : 0; j < (only < pz->d ? only + 1 : pz->d); j++) {
    const im_sweep_param_t *p = &pz->c->params[j];
    if (!im_sweep_param_searchable(p)) continue;
    if (im__sweep_is_categorical(p->dist)) lp += log_cat(pz, k, j, x[j]);
    else if (k == pz->nk - 1) lp += log_trunc_norm(x[j], 0.5, 1.0);
    else lp += log_trunc_norm(x[j], pz->mu[k * pz->d + j], pz->sigma[j]);
  }
  return lp;
}

static double log_mix(const parzen_t *pz, const double *x, size_t only) {
  double m = -INFINITY, s = 0;
  double *lk = malloc(pz->nk * sizeof *lk);
  if (!lk) return 0;
  double wsum = (double)(pz->nk - 1) + pz->prior_weight;
  for (size_t k = 0; k < pz->nk; k++) {
    double w = k == pz->nk - 1 ? pz->prior_weight : 1;
    lk[k] = log(w / wsum) + log_kernel(pz, k, x, only);
    if (lk[k] > m) m = lk[k];
  }
  for (size_t k = 0; k < pz->nk; k++) s += exp(lk[k] - m);
  free(lk);
  return m + log(s);
}

static double trunc_norm_draw(im_rng_t *r, double mu, double s) {
  for (int i = 0; i < 100; i++) {
    double v = mu + s * im_rng_normal(r);
    if (v >= 0 && v <= 1) return v;
  }
  return im_rng_uniform(r);
}

static void draw(const parzen_t *pz, im_rng_t *r, double *x) {
  double wsum = (double)(pz->nk - 1) + pz->prior_weight, u = im_rng_uniform(r) * wsum;
  size_t k = (size_t)u;
  if (k >= pz->nk - 1) k = pz->nk - 1;
  for (size_t j = 0; j < pz->d; j++) {
    const im_sweep_param_t *p = &pz->c->params[j];
    if (!im_sweep_param_searchable(p)) {
      x[j] = 0;
    } else if (im__sweep_is_categorical(p->dist)) {
      size_t K = p->n_values;
      if (k == pz->nk - 1) {
        x[j] = (double)im_rng_below(r, (uint32_t)K);
      } else {
        double eps = pz->prior_weight / (double)pz->nk, v = im_rng_uniform(r) * (1 + (double)K * eps);
        x[j] = v < 1 ? pz->mu[k * pz->d + j] : (double)im_rng_below(r, (uint32_t)K);
      }
    } else {
      x[j] = k == pz->nk - 1 ? trunc_norm_draw(r, 0.5, 1.0) : trunc_norm_draw(r, pz->mu[k * pz->d + j], pz->sigma[j]);
    }
  }
}

/* Bandwidths: Scott's rule in the multivariate form Optuna uses, with its
 * "magic clip" floor (range / min(100, 1 + kernels)). */
static void bandwidths(parzen_t *pz, size_t n, size_t dims, int univariate) {
  double scott = 0.2 * pow((double)(n + 1), -1.0 / ((double)(univariate ? 1 : dims) + 4));
  double floor_ = 1.0 / fmin(100.0, 1.0 + (double)n);
  for (size_t j = 0; j < pz->d; j++) pz->sigma[j] = fmax(scott, floor_);
}

typedef struct {
  double y;
  const double *x;
} ranked_t;

static int by_y(const void *a, const void *b) {
  double u = ((const ranked_t *)a)->y, v = ((const ranked_t *)b)->y;
  return u < v ? -1 : u > v ? 1 : 0;
}

im_status_t im__sweep_tpe(const im_sweep_config_t *c, const im_sweep_obs_t *hist, size_t n, uint64_t seed,
                          const im_sweep_bayes_opts_t *o, double *x) {
  im_sweep_bayes_opts_t def = {0};
  if (!o) o = &def;
  const int n_startup = o->n_startup > 0 ? o->n_startup : 5;
  const int n_cand = o->n_candidates > 0 ? o->n_candidates : 64;
  const double pw = o->prior_weight > 0 ? o->prior_weight : 1.0;
  const size_t d = c->n_params;
  im_rng_t r;
  im_rng_seed(&r, im_rng_derive(seed, (uint64_t)n));
  size_t ndone = 0, nrun = 0, dims = 0;
  for (size_t i = 0; i < n; i++) {
    if (!hist[i].x) continue;
    if (hist[i].done && isfinite(hist[i].y)) ndone++;
    else if (!hist[i].done) nrun++;
  }
  for (size_t j = 0; j < d; j++) dims += im_sweep_param_searchable(&c->params[j]) ? 1 : 0;
  if (ndone < (size_t)n_startup || dims == 0) {
    for (size_t j = 0; j < d; j++) x[j] = im_sweep_param_sample(&c->params[j], &r);
    return IM_OK;
  }
  ranked_t *rk = malloc(ndone * sizeof *rk);
  double *enc = malloc((ndone + nrun + 1) * d * sizeof *enc);
  double *sig = malloc(d * sizeof *sig);
  double *cand = malloc((size_t)n_cand * d * sizeof *cand);
  if (!rk || !enc || !sig || !cand) {
    free(rk), free(enc), free(sig), free(cand);
    return im_error(IM_ERR_NOMEM, "out of memory");
  }
  size_t m = 0;
  for (size_t i = 0; i < n; i++)
    if (hist[i].x && hist[i].done && isfinite(hist[i].y))
      rk[m++] = (ranked_t){.y = c->maximize ? -hist[i].y : hist[i].y, .x = hist[i].x};
  qsort(rk, m, sizeof *rk, by_y);
  size_t n_good = (size_t)ceil((o->gamma > 0 ? o->gamma : 0.1) * (double)m);
  if (n_good < 1) n_good = 1;
  if (n_good > 25) n_good = 25;
  /* encode: good first, then bad, then running (bad), then a slot for the prior */
  size_t row = 0;
  for (size_t i = 0; i < m; i++, row++)
    for (size_t j = 0; j < d; j++) {
      const im_sweep_param_t *p = &c->params[j];
      enc[row * d + j] = im__sweep_is_categorical(p->dist) ? rk[i].x[j] : im__sweep_encode(p, rk[i].x[j]);
    }
  for (size_t i = 0; i < n; i++) {
    if (!hist[i].x || hist[i].done) continue;
    for (size_t j = 0; j < d; j++) {
      const im_sweep_param_t *p = &c->params[j];
      enc[row * d + j] = im__sweep_is_categorical(p->dist) ? hist[i].x[j] : im__sweep_encode(p, hist[i].x[j]);
    }
    row++;
  }
  /* l: the good rows + prior; g: the rest + prior (the prior's mu slot is unused) */
  parzen_t l = {.d = d, .c = c, .nk = n_good + 1, .mu = enc, .sigma = sig, .prior_weight = pw};
  double *sig_g = malloc(d * sizeof *sig_g), *tmp = malloc(d * sizeof *tmp);
  parzen_t g = {.d = d, .c = c, .nk = row - n_good + 1, .mu = enc + n_good * d, .sigma = sig_g, .prior_weight = pw};
  im_status_t st = IM_OK;
  if (!sig_g || !tmp) {
    st = im_error(IM_ERR_NOMEM, "out of memory");
  } else {
    bandwidths(&l, n_good, dims, o->univariate);
    bandwidths(&g, row - n_good, dims, o->univariate);
    double best = -INFINITY;
    size_t pick = 0;
    for (int k = 0; k < n_cand; k++) {
      double *xc = cand + (size_t)k * d;
      double score = 0;
      if (o->univariate) {
        /* independent draws from l's marginals, scored per dimension (Optuna's default TPE) */
        for (size_t j = 0; j < d; j++) {
          draw(&l, &r, tmp);
          xc[j] = tmp[j];
        }
        for (size_t j = 0; j < d; j++)
          if (im_sweep_param_searchable(&c->params[j])) score += log_mix(&l, xc, j) - log_mix(&g, xc, j);
      } else {
        draw(&l, &r, xc);
        score = log_mix(&l, xc, d) - log_mix(&g, xc, d);
      }
      if (score > best) best = score, pick = (size_t)k;
    }
    const double *xc = cand + pick * d;
    for (size_t j = 0; j < d; j++) {
      const im_sweep_param_t *p = &c->params[j];
      x[j] = !im_sweep_param_searchable(p) ? 0 : im__sweep_is_categorical(p->dist) ? xc[j] : im__sweep_decode(p, xc[j]);
    }
  }
  free(sig_g), free(tmp);
  free(rk), free(enc), free(sig), free(cand);
  return st;
}
