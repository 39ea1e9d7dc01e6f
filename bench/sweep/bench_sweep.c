/* bench/sweep: imops' searches (random, bayes = TPE) on standard test
 * functions: Branin (2-d), Hartmann-6 (6-d) and a mixed categorical /
 * log-scale / integer function. For each function, method and seed it runs
 * 50 trials through im_sweep_suggest (the same call an agent makes inside its
 * claim) and prints one JSON line with the best value after 10, 25 and 50
 * trials. bench/sweep/run.sh runs this beside Optuna's TPE and random
 * samplers (optuna_bench.py, the same functions) and prints the medians. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imops/sweep.h"

static const char *const spaces[] = {
    /* branin */
    "parameters:\n  x1: {min: -5.0, max: 10.0}\n  x2: {min: 0.0, max: 15.0}\n",
    /* hartmann6 */
    "parameters:\n  x1: {min: 0.0, max: 1.0}\n  x2: {min: 0.0, max: 1.0}\n  x3: {min: 0.0, max: 1.0}\n"
    "  x4: {min: 0.0, max: 1.0}\n  x5: {min: 0.0, max: 1.0}\n  x6: {min: 0.0, max: 1.0}\n",
    /* mixed */
    "parameters:\n  opt: {values: [a, b, c]}\n  lr: {distribution: log_uniform_values, min: 1.0e-5, max: 1.0}\n"
    "  layers: {min: 1, max: 8}\n  x: {min: 0.0, max: 1.0}\n"};
static const char *const names[] = {"branin", "hartmann6", "mixed"};

static double branin(const double *x) {
  double b = 5.1 / (4 * M_PI * M_PI), c = 5 / M_PI, t = 1 / (8 * M_PI);
  double u = x[1] - b * x[0] * x[0] + c * x[0] - 6;
  return u * u + 10 * (1 - t) * cos(x[0]) + 10;
}

static double hartmann6(const double *x) {
  static const double a[4] = {1.0, 1.2, 3.0, 3.2};
  static const double A[4][6] = {{10, 3, 17, 3.5, 1.7, 8}, {0.05, 10, 17, 0.1, 8, 14}, {3, 3.5, 1.7, 10, 17, 8},
                                 {17, 8, 0.05, 10, 0.1, 14}};
  static const double P[4][6] = {{1312, 1696, 5569, 124, 8283, 5886}, {2329, 4135, 8307, 3736, 1004, 9991},
                                 {2348, 1451, 3522, 2883, 3047, 6650}, {4047, 8828, 8732, 5743, 1091, 381}};
  double s = 0;
  for (int i = 0; i < 4; i++) {
    double e = 0;
    for (int j = 0; j < 6; j++) e += A[i][j] * (x[j] - 1e-4 * P[i][j]) * (x[j] - 1e-4 * P[i][j]);
    s += a[i] * exp(-e);
  }
  return -s;
}

/* opt a/b/c shifts the best log10(lr); b is best: minimum 0 at (b, 10^-2.5, 4, 0.7). */
static double mixed(const double *x) {
  static const double off[3] = {0.0, 0.5, 1.5}, bias[3] = {0.2, 0.0, 0.5};
  int k = (int)x[0];
  double u = log10(x[1]) + 3 - off[k];
  return u * u + 0.1 * (x[2] - 4) * (x[2] - 4) + (x[3] - 0.7) * (x[3] - 0.7) + bias[k];
}

int main(int argc, char **argv) {
  int seeds = argc > 1 ? atoi(argv[1]) : 10, trials = 50;
  const char *only = argc > 2 ? argv[2] : NULL;
  double (*fns[3])(const double *) = {branin, hartmann6, mixed};
  /* knobs for experiments (the library's defaults when unset) */
  im_sweep_bayes_opts_t tpe = {0};
  if (getenv("IM_TPE_STARTUP")) tpe.n_startup = atoi(getenv("IM_TPE_STARTUP"));
  if (getenv("IM_TPE_CANDIDATES")) tpe.n_candidates = atoi(getenv("IM_TPE_CANDIDATES"));
  if (getenv("IM_TPE_PRIOR")) tpe.prior_weight = atof(getenv("IM_TPE_PRIOR"));
  if (getenv("IM_TPE_GAMMA")) tpe.gamma = atof(getenv("IM_TPE_GAMMA"));
  if (getenv("IM_TPE_UNIVARIATE")) tpe.univariate = 1;
  if (getenv("IM_BAYES_TPE")) tpe.tpe = 1;
  for (int f = 0; f < 3; f++) {
    if (only && strcmp(only, names[f])) continue;
    for (int m = 0; m < 2; m++) {
      char yaml[1024];
      snprintf(yaml, sizeof yaml, "method: %s\nmetric: {name: f, goal: minimize}\n%s", m ? "bayes" : "random",
               spaces[f]);
      im_sweep_config_t *c = NULL;
      if (im_sweep_config_parse(yaml, strlen(yaml), names[f], &c) != IM_OK) {
        fprintf(stderr, "bench_sweep: %s\n", im_last_error());
        return 1;
      }
      for (int s = 0; s < seeds; s++) {
        size_t d = c->n_params;
        double *xs = calloc((size_t)trials * d, sizeof *xs), best = INFINITY, at[3] = {0};
        im_sweep_obs_t *obs = calloc((size_t)trials, sizeof *obs);
        for (int i = 0; i < trials; i++) {
          double *x = xs + (size_t)i * d;
          if (im_sweep_suggest_ex(c, obs, (size_t)i, (uint64_t)(1000 + s), &tpe, x) != IM_OK) {
            fprintf(stderr, "bench_sweep: %s\n", im_last_error());
            return 1;
          }
          double y = fns[f](x);
          obs[i] = (im_sweep_obs_t){.x = x, .y = y, .done = 1};
          best = fmin(best, y);
          if (i + 1 == 10) at[0] = best;
          if (i + 1 == 25) at[1] = best;
          if (i + 1 == 50) at[2] = best;
        }
        printf("{\"impl\": \"imops\", \"method\": \"%s\", \"function\": \"%s\", \"seed\": %d, \"best\": [%.10g, %.10g, %.10g]}\n",
               m ? "bayes" : "random", names[f], s, at[0], at[1], at[2]);
        free(xs), free(obs);
      }
      im_sweep_config_free(c);
    }
  }
  return 0;
}
