/* The default bayes search: a Gaussian process with expected improvement,
 * as W&B's bayes method (bayes_search.py) does it, made stronger: the
 * parameters are encoded into [0, 1]^D (numeric ones through im__sweep_encode,
 * i.e. log scale / CDF; categoricals one-hot), the objective is ranked into
 * normal scores (a Gaussian copula: robust to heavy tails such as Branin's),
 * the kernel is Matern 5/2 with one length scale per dimension, and its
 * hyperparameters (length scales, signal and noise variance) maximize the
 * marginal likelihood (random search, then coordinate refinement in log
 * space). Candidates are uniform points plus perturbations of the best
 * trials; the one with the largest expected improvement, refined by a short
 * local search, is decoded back (integers and quantized values rounded).
 * Running trials enter as "constant liars" at the worst score, which spreads
 * parallel agents. At most 100 trials feed the model (the best and the newest). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "sweep/sweep_impl.h"

#define GP_MAX_POINTS 100
#define GP_MAX_DIMS 256
#ifndef EI_XI
#define EI_XI 0.1
#endif
#ifndef ONEHOT_MAX_L
#define ONEHOT_MAX_L 20.0
#endif

typedef struct {
  size_t n, D;
  const double *X; /* n x D */
  const double *y; /* n */
  double logl[GP_MAX_DIMS], logs2, logn2;
  double *K, *L, *alpha, *tmp; /* n x n, n x n, n, n */
} gp_t;

static double matern52(const gp_t *g, const double *a, const double *b) {
  double r2 = 0;
  for (size_t d = 0; d < g->D; d++) {
    double t = (a[d] - b[d]) / exp(g->logl[d]);
    r2 += t * t;
  }
  double r = sqrt(5 * r2);
  return exp(g->logs2) * (1 + r + 5.0 / 3 * r2) * exp(-r);
}

/* Cholesky of g->K into g->L (lower); 0 on failure. */
static int cholesky(gp_t *g) {
  size_t n = g->n;
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j <= i; j++) {
      double s = g->K[i * n + j];
      for (size_t k = 0; k < j; k++) s -= g->L[i * n + k] * g->L[j * n + k];
      if (i == j) {
        if (!(s > 0)) return 0;
        g->L[i * n + i] = sqrt(s);
      } else {
        g->L[i * n + j] = s / g->L[j * n + j];
      }
    }
  return 1;
}

/* Solves L z = b (forward) into z. */
static void fwd(const gp_t *g, const double *b, double *z) {
  size_t n = g->n;
  for (size_t i = 0; i < n; i++) {
    double s = b[i];
    for (size_t k = 0; k < i; k++) s -= g->L[i * n + k] * z[k];
    z[i] = s / g->L[i * n + i];
  }
}

/* Fits K, L, alpha for the current hyperparameters; returns the log marginal likelihood (-inf on failure). */
static double fit(gp_t *g) {
  size_t n = g->n;
  for (size_t i = 0; i < n; i++)
    for (size_t j = 0; j <= i; j++) {
      double k = matern52(g, g->X + i * g->D, g->X + j * g->D);
      g->K[i * n + j] = g->K[j * n + i] = k + (i == j ? exp(g->logn2) + 1e-8 : 0);
    }
  if (!cholesky(g)) return -INFINITY;
  fwd(g, g->y, g->tmp);
  for (size_t i = n; i-- > 0;) { /* back substitution: L^T alpha = tmp */
    double s = g->tmp[i];
    for (size_t k = i + 1; k < n; k++) s -= g->L[k * n + i] * g->alpha[k];
    g->alpha[i] = s / g->L[i * n + i];
  }
  double ll = 0;
  for (size_t i = 0; i < n; i++) ll += -0.5 * g->y[i] * g->alpha[i] - log(g->L[i * n + i]);
  /* weak priors keep the length scales and noise reasonable with few points */
  for (size_t d = 0; d < g->D; d++) ll -= 0.5 * pow((g->logl[d] - log(0.5)) / 1.5, 2);
  ll -= 0.5 * pow((g->logn2 - log(1e-3)) / 3, 2);
  return ll;
}

static void predict(const gp_t *g, const double *x, double *mu, double *sd) {
  size_t n = g->n;
  double m = 0;
  for (size_t i = 0; i < n; i++) {
    g->tmp[i] = matern52(g, x, g->X + i * g->D);
    m += g->tmp[i] * g->alpha[i];
  }
  double *v = g->tmp + n;
  fwd(g, g->tmp, v);
  double var = exp(g->logs2);
  for (size_t i = 0; i < n; i++) var -= v[i] * v[i];
  *mu = m;
  *sd = sqrt(var > 1e-12 ? var : 1e-12);
}

static double ei(const gp_t *g, const double *x, double best) {
  double mu, sd;
  predict(g, x, &mu, &sd);
  double imp = best - mu - EI_XI, z = imp / sd;
  return imp * im__sweep_phi(z) + sd * exp(-0.5 * z * z) / sqrt(2 * M_PI);
}

/* Layout of the encoded space: each searchable parameter's first dimension and width. */
typedef struct {
  size_t D;
  size_t off[1024], width[1024];
} layout_t;

static void layout(const im_sweep_config_t *c, layout_t *l) {
  l->D = 0;
  for (size_t j = 0; j < c->n_params && j < 1024; j++) {
    const im_sweep_param_t *p = &c->params[j];
    l->off[j] = l->D;
    l->width[j] = !im_sweep_param_searchable(p) ? 0 : im__sweep_is_categorical(p->dist) ? p->n_values : 1;
    l->D += l->width[j];
  }
}

static void encode(const im_sweep_config_t *c, const layout_t *l, const double *x, double *z) {
  for (size_t j = 0; j < c->n_params; j++) {
    const im_sweep_param_t *p = &c->params[j];
    if (!l->width[j]) continue;
    if (im__sweep_is_categorical(p->dist)) {
      for (size_t k = 0; k < l->width[j]; k++) z[l->off[j] + k] = (size_t)x[j] == k ? 1 : 0;
    } else {
      z[l->off[j]] = im__sweep_encode(p, x[j]);
    }
  }
}

/* A random point of the encoded space (categoricals one-hot). */
static void random_z(const im_sweep_config_t *c, const layout_t *l, im_rng_t *r, double *z) {
  for (size_t j = 0; j < c->n_params; j++) {
    if (!l->width[j]) continue;
    if (l->width[j] > 1 || im__sweep_is_categorical(c->params[j].dist)) {
      size_t pick = im_rng_below(r, (uint32_t)l->width[j]);
      for (size_t k = 0; k < l->width[j]; k++) z[l->off[j] + k] = k == pick;
    } else {
      z[l->off[j]] = im_rng_uniform(r);
    }
  }
}

/* A perturbation of z: numeric dimensions moved by N(0, step), categoricals switched with probability 0.2. */
static void perturb(const im_sweep_config_t *c, const layout_t *l, im_rng_t *r, const double *z, double step,
                    double *out) {
  memcpy(out, z, l->D * sizeof *out);
  for (size_t j = 0; j < c->n_params; j++) {
    if (!l->width[j]) continue;
    if (im__sweep_is_categorical(c->params[j].dist)) {
      if (im_rng_uniform(r) < 0.2) {
        size_t pick = im_rng_below(r, (uint32_t)l->width[j]);
        for (size_t k = 0; k < l->width[j]; k++) out[l->off[j] + k] = k == pick;
      }
    } else {
      double v = z[l->off[j]] + step * im_rng_normal(r);
      out[l->off[j]] = v < 0 ? 0 : v > 1 ? 1 : v;
    }
  }
}

typedef struct {
  double y;
  size_t i;
} yi_t;
static int by_y(const void *a, const void *b) {
  double u = ((const yi_t *)a)->y, v = ((const yi_t *)b)->y;
  return u < v ? -1 : u > v ? 1 : 0;
}

im_status_t im__sweep_gp(const im_sweep_config_t *c, const im_sweep_obs_t *hist, size_t n, uint64_t seed,
                         const im_sweep_bayes_opts_t *o, double *x) {
  im_sweep_bayes_opts_t def = {0};
  if (!o) o = &def;
  layout_t *lay = malloc(sizeof *lay);
  if (!lay) return im_error(IM_ERR_NOMEM, "out of memory");
  layout(c, lay);
  const size_t D = lay->D, d = c->n_params;
  const int n_startup = o->n_startup > 0 ? o->n_startup : 4;
  im_rng_t r;
  im_rng_seed(&r, im_rng_derive(seed, (uint64_t)n));
  /* the points: done ones with values, ranked; running ones as liars */
  yi_t *done = malloc((n + 1) * sizeof *done);
  size_t nd = 0, nrun = 0;
  for (size_t i = 0; done && i < n; i++) {
    if (!hist[i].x) continue;
    if (hist[i].done && isfinite(hist[i].y)) done[nd++] = (yi_t){c->maximize ? -hist[i].y : hist[i].y, i};
    else if (!hist[i].done) nrun++;
  }
  if (!done || nd < (size_t)n_startup || D == 0 || D > GP_MAX_DIMS || c->n_params > 1024) {
    free(done), free(lay);
    if (n < (size_t)n_startup && n_startup <= 64) {
      /* the first trials: a Latin hypercube in [0, 1]^d (one stratum per trial
       * and parameter, a permutation per parameter from the seed alone, so
       * every agent computes the same design), so each categorical choice and
       * each part of every range is covered early */
      for (size_t j = 0; j < d; j++) {
        const im_sweep_param_t *p = &c->params[j];
        im_rng_t pr;
        im_rng_seed(&pr, im_rng_derive(seed ^ 0x6c68735f6c617473ull, (uint64_t)j));
        int perm[64];
        for (int k = 0; k < n_startup; k++) perm[k] = k;
        im_rng_shuffle(&pr, perm, (size_t)n_startup, sizeof perm[0]);
        double u = ((double)perm[n] + im_rng_uniform(&r)) / (double)n_startup;
        if (!im_sweep_param_searchable(p)) x[j] = 0;
        else if (im__sweep_is_categorical(p->dist) && p->dist == IM_SWEEP_CATEGORICAL_W_PROBABILITIES)
          x[j] = im_sweep_param_sample(p, &r);
        else x[j] = im__sweep_decode(p, u);
      }
      return IM_OK;
    }
    for (size_t j = 0; j < d; j++) x[j] = im_sweep_param_sample(&c->params[j], &r);
    return IM_OK;
  }
  qsort(done, nd, sizeof *done, by_y);
  /* at most GP_MAX_POINTS: the best half, then the newest */
  size_t keep = nd < GP_MAX_POINTS ? nd : GP_MAX_POINTS;
  if (nd > keep) {
    size_t half = keep / 2;
    yi_t *rest = done + half;
    size_t nrest = nd - half;
    for (size_t a = 0; a < nrest; a++) /* newest first: by index, descending */
      for (size_t b = a + 1; b < nrest; b++)
        if (rest[b].i > rest[a].i) {
          yi_t t = rest[a];
          rest[a] = rest[b];
          rest[b] = t;
        }
  }
  size_t nliar = nrun < 16 ? nrun : 16, m = keep + nliar;
  double *X = calloc(m * D, sizeof *X), *y = calloc(m, sizeof *y), *K = calloc(m * m, sizeof *K),
         *L = calloc(m * m, sizeof *L), *alpha = calloc(m, sizeof *alpha), *tmp = calloc(2 * m, sizeof *tmp);
  double *cand = calloc(D, sizeof *cand), *bestz = calloc(D, sizeof *bestz), *trial = calloc(D, sizeof *trial);
  yi_t *rank = calloc(keep, sizeof *rank);
  im_status_t st = X && y && K && L && alpha && tmp && cand && bestz && trial && rank ? IM_OK
                                                                                      : im_error(IM_ERR_NOMEM, "out of memory");
  if (st == IM_OK) {
    /* normal scores of the ranks (the copula); ties share the lower rank */
    for (size_t i = 0; i < keep; i++) {
      encode(c, lay, hist[done[i].i].x, X + i * D);
      rank[i] = (yi_t){done[i].y, i};
    }
    qsort(rank, keep, sizeof *rank, by_y);
    for (size_t k = 0; k < keep; k++) {
      size_t first = k;
      while (first > 0 && rank[first - 1].y == rank[k].y) first--;
      y[rank[k].i] = im__sweep_phi_inv(((double)first + 0.5) / (double)keep);
    }
    double worst = -INFINITY, best = INFINITY;
    for (size_t i = 0; i < keep; i++) worst = fmax(worst, y[i]), best = fmin(best, y[i]);
    size_t li = keep;
    for (size_t i = 0; i < n && li < m; i++)
      if (hist[i].x && !hist[i].done) {
        encode(c, lay, hist[i].x, X + li * D);
        y[li++] = worst;
      }
    /* hyperparameters: random search then coordinate refinement of the log marginal likelihood */
    /* one-hot dimensions keep a short length scale: categories stay distinct
     * enough that an untried choice keeps its uncertainty (and gets explored) */
    unsigned char onehot[GP_MAX_DIMS] = {0};
    for (size_t j = 0; j < d; j++)
      if (lay->width[j] && im__sweep_is_categorical(c->params[j].dist))
        for (size_t k = 0; k < lay->width[j]; k++) onehot[lay->off[j] + k] = 1;
    gp_t g = {.n = m, .D = D, .X = X, .y = y, .K = K, .L = L, .alpha = alpha, .tmp = tmp};
    double bl[GP_MAX_DIMS], bs2 = 0, bn2 = log(1e-3), bll = -INFINITY;
    for (size_t k = 0; k < D; k++) bl[k] = log(0.5);
    for (int t = 0; t < 40; t++) {
      double common = log(0.05) + im_rng_uniform(&r) * (log(3.0) - log(0.05));
      for (size_t k = 0; k < D; k++) {
        g.logl[k] = t == 0 ? log(0.5) : common + 0.5 * im_rng_normal(&r);
        if (onehot[k] && g.logl[k] > log(ONEHOT_MAX_L)) g.logl[k] = log(ONEHOT_MAX_L);
      }
      g.logs2 = t == 0 ? 0 : log(0.3) + im_rng_uniform(&r) * (log(3.0) - log(0.3));
      g.logn2 = t == 0 ? log(1e-3) : log(1e-6) + im_rng_uniform(&r) * (log(0.3) - log(1e-6));
      double ll = fit(&g);
      if (ll > bll) bll = ll, memcpy(bl, g.logl, D * sizeof *bl), bs2 = g.logs2, bn2 = g.logn2;
    }
    for (double step = 1.0; step > 0.1; step /= 2) {
      for (size_t k = 0; k < D + 2; k++) {
        for (int sgn = -1; sgn <= 1; sgn += 2) {
          memcpy(g.logl, bl, D * sizeof *bl);
          g.logs2 = bs2, g.logn2 = bn2;
          double *p = k < D ? &g.logl[k] : k == D ? &g.logs2 : &g.logn2;
          *p += sgn * step;
          if (k < D && (*p < log(0.01) || *p > (onehot[k] ? log(ONEHOT_MAX_L) : log(20.0)))) continue;
          if (k == D + 1 && (*p < log(1e-8) || *p > log(1.0))) continue;
          double ll = fit(&g);
          if (ll > bll) bll = ll, memcpy(bl, g.logl, D * sizeof *bl), bs2 = g.logs2, bn2 = g.logn2;
        }
      }
    }
    memcpy(g.logl, bl, D * sizeof *bl);
    g.logs2 = bs2, g.logn2 = bn2;
    if (!isfinite(fit(&g))) { /* cannot fit: a random point */
      for (size_t j = 0; j < d; j++) x[j] = im_sweep_param_sample(&c->params[j], &r);
      goto done_;
    }
    /* candidates: uniform, and around the best few trials at two scales */
    const int n_uniform = o->n_candidates > 0 ? o->n_candidates : 2000;
    double best_ei = -INFINITY;
    size_t top = keep < 5 ? keep : 5;
    for (int t = 0; t < n_uniform + (int)top * 300; t++) {
      if (t < n_uniform) random_z(c, lay, &r, cand);
      else perturb(c, lay, &r, X + (size_t)((t - n_uniform) / 300) * D, (t % 2) ? 0.03 : 0.12, cand);
      double e = ei(&g, cand, best);
      if (e > best_ei) best_ei = e, memcpy(bestz, cand, D * sizeof *cand);
    }
    for (int t = 0; t < 200; t++) { /* local refinement */
      perturb(c, lay, &r, bestz, 0.02, trial);
      double e = ei(&g, trial, best);
      if (e > best_ei) best_ei = e, memcpy(bestz, trial, D * sizeof *trial);
    }
    /* every other choice of each categorical parameter, then refine again */
    for (int pass = 0; pass < 2; pass++) {
      for (size_t j = 0; j < d; j++) {
        if (!lay->width[j] || !im__sweep_is_categorical(c->params[j].dist)) continue;
        for (size_t k = 0; k < lay->width[j]; k++) {
          memcpy(trial, bestz, D * sizeof *trial);
          for (size_t q = 0; q < lay->width[j]; q++) trial[lay->off[j] + q] = q == k;
          double e = ei(&g, trial, best);
          if (e > best_ei) best_ei = e, memcpy(bestz, trial, D * sizeof *trial);
        }
      }
      for (int t = 0; t < 100; t++) {
        perturb(c, lay, &r, bestz, 0.02, trial);
        double e = ei(&g, trial, best);
        if (e > best_ei) best_ei = e, memcpy(bestz, trial, D * sizeof *trial);
      }
    }
    for (size_t j = 0; j < d; j++) {
      const im_sweep_param_t *p = &c->params[j];
      if (!lay->width[j]) {
        x[j] = 0;
      } else if (im__sweep_is_categorical(p->dist)) {
        size_t arg = 0;
        for (size_t k = 1; k < lay->width[j]; k++)
          if (bestz[lay->off[j] + k] > bestz[lay->off[j] + arg]) arg = k;
        x[j] = (double)arg;
      } else {
        x[j] = im__sweep_decode(p, bestz[lay->off[j]]);
      }
    }
  }
done_:
  free(X), free(y), free(K), free(L), free(alpha), free(tmp), free(cand), free(bestz), free(trial), free(rank);
  free(done), free(lay);
  return st;
}
