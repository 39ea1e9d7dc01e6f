/* Sweeps: distributions (bounds and shape with fixed seeds), grid order,
 * determinism, hyperband bands and Li et al.'s schedule, config errors with
 * positions, TPE against random on a test function, and four agents sharing
 * one sweep without double claims, in the store and through a tracking server. */
#include <math.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "imops/http.h"
#include "imops/server.h"
#include "imops/sweep.h"
#include "imops/track_sweep.h"
#include "testutil.h"

static im_sweep_config_t *parse(const char *y) {
  im_sweep_config_t *c = NULL;
  im_status_t st = im_sweep_config_parse(y, strlen(y), "t.yaml", &c);
  if (st) fprintf(stderr, "parse: %s\n", im_last_error());
  assert_int_equal(st, IM_OK);
  return c;
}

static void expect_error(const char *y, const char *want) {
  im_sweep_config_t *c = NULL;
  assert_int_not_equal(im_sweep_config_parse(y, strlen(y), "t.yaml", &c), IM_OK);
  assert_null(c);
  if (!strstr(im_last_error(), want)) fprintf(stderr, "got '%s', want '%s'\n", im_last_error(), want);
  assert_non_null(strstr(im_last_error(), want));
}

typedef struct {
  double mean, var, lo, hi, q50;
} stats_t;

static int cmpd(const void *a, const void *b) {
  double u = *(const double *)a, v = *(const double *)b;
  return u < v ? -1 : u > v;
}

static stats_t sample_stats(const im_sweep_param_t *p, int n, uint64_t seed, double *buf) {
  im_rng_t r;
  im_rng_seed(&r, seed);
  stats_t s = {0, 0, INFINITY, -INFINITY, 0};
  for (int i = 0; i < n; i++) {
    buf[i] = im_sweep_param_sample(p, &r);
    s.mean += buf[i];
    s.lo = fmin(s.lo, buf[i]), s.hi = fmax(s.hi, buf[i]);
  }
  s.mean /= n;
  for (int i = 0; i < n; i++) s.var += (buf[i] - s.mean) * (buf[i] - s.mean);
  s.var /= n - 1;
  qsort(buf, (size_t)n, sizeof *buf, cmpd);
  s.q50 = buf[n / 2];
  return s;
}

static void test_distributions(void **state) {
  (void)state;
  im_sweep_config_t *c = parse(
      "method: random\n"
      "parameters:\n"
      "  u: {distribution: uniform, min: 2, max: 6}\n"
      "  i: {min: 1, max: 4}\n"
      "  qu: {distribution: q_uniform, min: 0, max: 10, q: 2}\n"
      "  lu: {distribution: log_uniform_values, min: 0.001, max: 10}\n"
      "  qlu: {distribution: q_log_uniform_values, min: 1, max: 1000, q: 5}\n"
      "  ilu: {distribution: inv_log_uniform_values, min: 0.01, max: 1}\n"
      "  v1: {distribution: log_uniform, min: -4, max: 0}\n"
      "  n: {distribution: normal, mu: 3, sigma: 2}\n"
      "  qn: {distribution: q_normal, mu: 0, sigma: 5, q: 1}\n"
      "  ln: {distribution: log_normal, mu: 0, sigma: 0.5}\n"
      "  qln: {distribution: q_log_normal, mu: 2, sigma: 0.5, q: 1}\n"
      "  cat: {values: [a, b, c]}\n"
      "  wp: {values: [x, y], probabilities: [0.2, 0.8]}\n"
      "  k: {value: 7}\n");
  enum { N = 20000 };
  double *buf = malloc(N * sizeof *buf);
  const im_sweep_param_t *P = c->params;
  assert_int_equal(c->n_params, 14);
  /* uniform(2, 6): mean 4, var 16/12 */
  stats_t s = sample_stats(&P[0], N, 1, buf);
  assert_true(s.lo >= 2 && s.hi <= 6);
  assert_true(fabs(s.mean - 4) < 0.05 && fabs(s.var - 16.0 / 12) < 0.05);
  assert_int_equal(P[1].dist, IM_SWEEP_INT_UNIFORM);
  s = sample_stats(&P[1], N, 2, buf);
  assert_true(s.lo == 1 && s.hi == 4 && fabs(s.mean - 2.5) < 0.05 && fabs(s.var - 1.25) < 0.05);
  for (int i = 0; i < N; i++) assert_true(buf[i] == floor(buf[i]));
  s = sample_stats(&P[2], N, 3, buf);
  for (int i = 0; i < N; i++) assert_true(fmod(buf[i], 2) == 0 && buf[i] >= 0 && buf[i] <= 10);
  /* log-uniform: log10 is uniform on [-3, 1]: median 1e-1 */
  s = sample_stats(&P[3], N, 4, buf);
  assert_true(s.lo >= 0.001 && s.hi <= 10 && fabs(log10(s.q50) + 1) < 0.05);
  s = sample_stats(&P[4], N, 5, buf);
  for (int i = 0; i < N; i++) assert_true(fmod(buf[i], 5) == 0 && buf[i] >= 0 && buf[i] <= 1000);
  s = sample_stats(&P[5], N, 6, buf);
  assert_true(s.lo >= 0.01 && s.hi <= 1 && fabs(log10(s.q50) + 1) < 0.05);
  s = sample_stats(&P[6], N, 7, buf);
  assert_true(s.lo >= exp(-4) && s.hi <= 1 && fabs(log(s.q50) + 2) < 0.05);
  s = sample_stats(&P[7], N, 8, buf); /* N(3, 2) */
  assert_true(fabs(s.mean - 3) < 0.05 && fabs(sqrt(s.var) - 2) < 0.05 && fabs(s.q50 - 3) < 0.06);
  s = sample_stats(&P[8], N, 9, buf);
  for (int i = 0; i < N; i++) assert_true(buf[i] == round(buf[i]));
  assert_true(fabs(s.mean) < 0.15 && fabs(sqrt(s.var) - 5) < 0.1);
  s = sample_stats(&P[9], N, 10, buf); /* lognormal(0, 0.5): median 1, mean exp(0.125) */
  assert_true(s.lo > 0 && fabs(s.q50 - 1) < 0.03 && fabs(s.mean - exp(0.125)) < 0.03);
  s = sample_stats(&P[10], N, 11, buf);
  for (int i = 0; i < N; i++) assert_true(buf[i] == round(buf[i]) && buf[i] >= 0);
  s = sample_stats(&P[11], N, 12, buf);
  int cnt[3] = {0};
  for (int i = 0; i < N; i++) cnt[(int)buf[i]]++;
  for (int k = 0; k < 3; k++) assert_true(fabs(cnt[k] / (double)N - 1.0 / 3) < 0.015);
  s = sample_stats(&P[12], N, 13, buf);
  assert_true(fabs(s.mean - 0.8) < 0.015);
  assert_int_equal(P[13].dist, IM_SWEEP_CONSTANT);
  /* a point renders as JSON with integers as integers */
  double x[14];
  assert_int_equal(im_sweep_suggest(c, NULL, 0, 5, x), IM_OK);
  char *j = im_sweep_point_json(c, x);
  assert_non_null(strstr(j, "\"k\":7"));
  double y[14];
  assert_int_equal(im_sweep_point_parse(c, j, y), IM_OK);
  for (int i = 0; i < 14; i++) assert_true(fabs(x[i] - y[i]) <= 1e-12 * fmax(1, fabs(x[i])));
  im_free(j);
  free(buf);
  im_sweep_config_free(c);
}

static void test_grid_and_determinism(void **state) {
  (void)state;
  im_sweep_config_t *c = parse(
      "method: grid\n"
      "parameters:\n"
      "  opt: {values: [adam, sgd]}\n"
      "  bs: {values: [32, 64, 128]}\n"
      "  ep: {min: 1, max: 2}\n"
      "  q: {distribution: q_uniform, min: 0, max: 1, q: 0.5}\n"
      "  fixed: {value: x}\n");
  int64_t n = 0;
  assert_int_equal(im_sweep_grid_count(c, &n), IM_OK);
  assert_int_equal(n, 2 * 3 * 2 * 2);
  double x[5];
  char seen[24][128];
  for (int64_t i = 0; i < n; i++) {
    assert_int_equal(im_sweep_suggest(c, NULL, (size_t)i, 1, x), IM_OK);
    char *j = im_sweep_point_json(c, x);
    snprintf(seen[i], sizeof seen[i], "%s", j);
    im_free(j);
    for (int64_t k = 0; k < i; k++) assert_string_not_equal(seen[k], seen[i]);
    /* in order: the last parameter fastest */
    assert_int_equal((int)x[0], (int)(i / 12));
    assert_int_equal((int)x[1], (int)(i / 4 % 3));
    assert_true(x[2] == 1 + (double)(i / 2 % 2));
    assert_true(x[3] == 0.5 * (double)(i % 2));
  }
  assert_string_equal(seen[0], "{\"opt\":\"adam\",\"bs\":32,\"ep\":1,\"q\":0.0,\"fixed\":\"x\"}");
  assert_int_equal(im_sweep_suggest(c, NULL, (size_t)n, 1, x), IM_ERR_NOT_FOUND);
  im_sweep_config_free(c);
  expect_error("method: grid\nparameters:\n  lr: {min: 0.1, max: 0.5}\n", "t.yaml:3:7: parameters.lr");
  /* random: same seed, same trials; another seed, others */
  c = parse("method: random\nparameters:\n  lr: {min: 0.001, max: 0.1}\n  o: {values: [a, b]}\n");
  double a[2], b[2], d[2];
  for (size_t i = 0; i < 5; i++) {
    assert_int_equal(im_sweep_suggest(c, NULL, i, 42, a), IM_OK);
    assert_int_equal(im_sweep_suggest(c, NULL, i, 42, b), IM_OK);
    assert_int_equal(im_sweep_suggest(c, NULL, i, 43, d), IM_OK);
    assert_true(a[0] == b[0] && a[1] == b[1] && a[0] != d[0]);
  }
  im_sweep_config_free(c);
}

static void test_nested(void **state) {
  (void)state;
  im_sweep_config_t *c = parse(
      "method: random\n"
      "parameters:\n"
      "  optimizer:\n"
      "    parameters:\n"
      "      name: {values: [adam, sgd]}\n"
      "      lr: {distribution: log_uniform_values, min: 1.0e-5, max: 0.1}\n"
      "  epochs: {value: 2}\n");
  assert_int_equal(c->n_params, 3);
  assert_string_equal(c->params[0].name, "optimizer.name");
  assert_string_equal(c->params[1].name, "optimizer.lr");
  double x[3];
  assert_int_equal(im_sweep_suggest(c, NULL, 0, 1, x), IM_OK);
  char *j = im_sweep_point_json(c, x);
  assert_non_null(strstr(j, "{\"optimizer\":{\"name\":"));
  double y[3];
  assert_int_equal(im_sweep_point_parse(c, j, y), IM_OK);
  assert_true(x[1] == y[1]);
  im_free(j);
  assert_int_equal(im_sweep_check_train(c), IM_OK);
  im_sweep_config_free(c);
}

static void test_config_errors(void **state) {
  (void)state;
  expect_error("method: random\nparameters:\n  lr: {min: 0.1, max: 0.1}\n", "t.yaml:3:7: parameters.lr: min (0.1) must be less than max");
  expect_error("method: random\nbogus: 1\nparameters:\n  a: {value: 1}\n", "t.yaml:2:1: bogus: unknown key");
  expect_error("method: random\nparameters:\n  a: {valus: [1]}\n", "t.yaml:3:7: parameters.a: unknown key 'valus'");
  expect_error("method: annealing\nparameters:\n  a: {value: 1}\n", "t.yaml:1:9: method: unknown method");
  expect_error("method: random\nparameters:\n  a: {distribution: log_uniform_values, min: 0, max: 1}\n", "needs min > 0");
  expect_error("method: random\nparameters:\n  a: {values: [1, 2], probabilities: [0.5, 0.6]}\n", "sum to 1");
  expect_error("method: random\nparameters:\n  a: {distribution: normal, sigma: -1}\n", "sigma must not be negative");
  expect_error("method: random\nparameters:\n  a: {distribution: warped, min: 0, max: 1}\n", "unknown distribution 'warped'");
  expect_error("method: bayes\nparameters:\n  a: {min: 0.0, max: 1.0}\n", "metric");
  expect_error("method: random\nparameters:\n  a: {value: 1}\nearly_terminate: {type: hyperband, eta: 1}\n",
               "t.yaml:4:41: early_terminate.eta");
  expect_error("method: random\nparameters:\n  a: {value: 1}\nrun_cap: 0\n", "t.yaml:4:10: run_cap");
  expect_error("method: random\nmetric: {name: x, goal: up}\nparameters:\n  a: {value: 1}\n", "metric.goal");
  expect_error("method: random\nparameters:\n  a: {values: []}\n", "non-empty");
  expect_error("method: random\nparameters:\n  a: [1, 2\n", "t.yaml");
  im_sweep_config_t *c = parse("method: random\nmetric: {name: val_loss}\nparameters:\n  dropoutz: {value: 1}\n");
  assert_int_equal(im_sweep_check_train(c), IM_ERR_ARG);
  assert_non_null(strstr(im_last_error(), "t.yaml:4:13: parameters.dropoutz"));
  im_sweep_config_free(c);
  /* W&B's own example parses, program and command included */
  c = parse("program: train\nmethod: bayes\nmetric: {name: val_acc, goal: maximize, target: 0.99}\n"
            "parameters:\n  lr: {distribution: log_uniform_values, min: 1.0e-4, max: 1.0e-1}\n"
            "  batch_size: {values: [32, 64, 128]}\n  epochs: {value: 20}\n"
            "early_terminate: {type: hyperband, min_iter: 3, eta: 3}\nrun_cap: 30\n"
            "command: [\"${program}\", \"${args}\"]\n");
  assert_int_equal(c->method, IM_SWEEP_BAYES);
  assert_true(c->maximize && c->has_target && c->target == 0.99 && c->run_cap == 30 && c->n_command == 2);
  assert_true(c->hyperband && c->hb_min_iter == 3 && c->hb_strict == 1);
  im_sweep_config_free(c);
}

static void test_hyperband(void **state) {
  (void)state;
  im_sweep_config_t *c = parse("method: random\nmetric: {name: loss}\nparameters:\n  a: {min: 0.0, max: 1.0}\n"
                               "early_terminate: {type: hyperband, max_iter: 27, s: 2, eta: 3}\n");
  int64_t bands[16];
  size_t nb = 0;
  im_sweep_hyperband_bands(c, bands, 16, &nb);
  assert_int_equal(nb, 2);
  assert_int_equal(bands[0], 3);
  assert_int_equal(bands[1], 9);
  /* four trials at band 3 with values 1, 2, 3, 4: threshold = sorted[floor(4/3)] = 2 */
  double h[4][3] = {{5, 4, 1}, {5, 4, 2}, {5, 4, 3}, {5, 4, 4}};
  const double *hist[4] = {h[0], h[1], h[2], h[3]};
  size_t len[4] = {3, 3, 3, 3};
  assert_int_equal(im_sweep_hyperband_stop(c, hist, len, 4, 0), 0);
  assert_int_equal(im_sweep_hyperband_stop(c, hist, len, 4, 1), 0);
  assert_int_equal(im_sweep_hyperband_stop(c, hist, len, 4, 2), 1);
  assert_int_equal(im_sweep_hyperband_stop(c, hist, len, 4, 3), 1);
  len[3] = 2; /* before the first band: never stopped */
  assert_int_equal(im_sweep_hyperband_stop(c, hist, len, 4, 3), 0);
  im_sweep_config_free(c);
  c = parse("method: random\nparameters:\n  a: {min: 0.0, max: 1.0}\n"
            "early_terminate: {type: hyperband, min_iter: 2, eta: 2}\n");
  im_sweep_hyperband_bands(c, bands, 5, &nb);
  assert_int_equal(nb, 5);
  for (int i = 0; i < 5; i++) assert_int_equal(bands[i], 2 << i);
  im_sweep_config_free(c);
  /* Li et al. (JMLR 2018) Table 1: R = 81, eta = 3 */
  im_sweep_bracket_t br[8];
  im_sweep_hyperband_schedule(81, 3, br, 8, &nb);
  assert_int_equal(nb, 5);
  static const int64_t want_n[5][5] = {{81, 27, 9, 3, 1}, {34, 11, 3, 1}, {15, 5, 1}, {8, 2}, {5}};
  static const double want_r[5][5] = {{1, 3, 9, 27, 81}, {3, 9, 27, 81}, {9, 27, 81}, {27, 81}, {81}};
  for (int s = 0; s < 5; s++) {
    assert_int_equal(br[s].s, 4 - s);
    assert_int_equal(br[s].rungs, 5 - s);
    for (int i = 0; i < br[s].rungs; i++) {
      assert_int_equal(br[s].n[i], want_n[s][i]);
      assert_true(fabs(br[s].r[i] - want_r[s][i]) < 1e-9);
    }
  }
}

/* Branin on [-5, 10] x [0, 15]: minimum 0.397887. */
static double branin(const double *x) {
  double a = 1, b = 5.1 / (4 * M_PI * M_PI), c = 5 / M_PI, r = 6, s = 10, t = 1 / (8 * M_PI);
  double u = x[1] - b * x[0] * x[0] + c * x[0] - r;
  return a * u * u + s * (1 - t) * cos(x[0]) + s;
}

static double run_search(im_sweep_config_t *c, uint64_t seed, int n, const im_sweep_bayes_opts_t *o) {
  double *xs = calloc((size_t)n * 2, sizeof *xs);
  im_sweep_obs_t *obs = calloc((size_t)n, sizeof *obs);
  double best = INFINITY;
  for (int i = 0; i < n; i++) {
    double *x = xs + 2 * i;
    assert_int_equal(im_sweep_suggest_ex(c, obs, (size_t)i, seed, o, x), IM_OK);
    obs[i] = (im_sweep_obs_t){.x = x, .y = branin(x), .done = 1};
    best = fmin(best, obs[i].y);
  }
  free(xs), free(obs);
  return best;
}

/* The model-based searches (the GP, the default; the TPE) against random
 * search on Branin over 10 fixed seeds. */
static void bayes_vs_random(const im_sweep_bayes_opts_t *o, const char *what, double within) {
  const char *space = "metric: {name: f}\nparameters:\n  x1: {min: -5.0, max: 10.0}\n  x2: {min: 0.0, max: 15.0}\n";
  char y[512];
  snprintf(y, sizeof y, "method: bayes\n%s", space);
  im_sweep_config_t *bayes = parse(y);
  snprintf(y, sizeof y, "method: random\n%s", space);
  im_sweep_config_t *rnd = parse(y);
  enum { SEEDS = 10, N = 40 };
  double rb[SEEDS], rr[SEEDS];
  int wins = 0;
  for (int s = 0; s < SEEDS; s++) {
    rb[s] = run_search(bayes, (uint64_t)s + 1, N, o);
    rr[s] = run_search(rnd, (uint64_t)s + 1, N, NULL);
    wins += rb[s] < rr[s];
  }
  qsort(rb, SEEDS, sizeof *rb, cmpd);
  qsort(rr, SEEDS, sizeof *rr, cmpd);
  fprintf(stderr, "branin after %d trials, median best: %s %.4f random %.4f (%s better in %d of %d seeds)\n", N, what,
          rb[SEEDS / 2], rr[SEEDS / 2], what, wins, SEEDS);
  assert_true(rb[SEEDS / 2] < rr[SEEDS / 2]);
  assert_true(wins >= 7);
  assert_true(rb[SEEDS / 2] < 0.397887 + within);
  im_sweep_config_free(bayes);
  im_sweep_config_free(rnd);
}

static void test_gp_beats_random(void **state) {
  (void)state;
  bayes_vs_random(NULL, "gp", 0.1);
}

static void test_tpe_beats_random(void **state) {
  (void)state;
  im_sweep_bayes_opts_t o = {.tpe = 1};
  bayes_vs_random(&o, "tpe", 0.4);
}

/* ---- agents sharing one sweep ---- */
static const char *g_home;
static const char *g_sweep;

static im_status_t cheap(void *user, im_sweep_trial_t *t, double *value) {
  const double *x = im_sweep_trial_x(t);
  for (int64_t e = 1; e <= 3; e++) {
    int stop = 0;
    im_status_t st = im_sweep_trial_report(t, e, (x[0] - 0.3) * (x[0] - 0.3) + 1.0 / (double)e, &stop);
    if (st) return st;
    if (stop) {
      im_sweep_trial_prune(t);
      break;
    }
  }
  *value = (x[0] - 0.3) * (x[0] - 0.3);
  return IM_OK;
}

static im_status_t fixed_point(void *user, const im_track_sweep_trial_t *trials, int64_t n, char **params) {
  *params = im_strdup("{\"a\": 0.5, \"b\": \"p\"}");
  return *params ? IM_OK : IM_ERR_NOMEM;
}

static void *agent_thread(void *arg) {
  int64_t *ran = arg;
  im_sweep_agent_opts_t o = {.tracking_home = g_home, .sweep_id = g_sweep, .objective = cheap};
  im_status_t st = im_sweep_agent_run(&o, ran);
  if (st) fprintf(stderr, "agent: %s\n", im_last_error());
  return st ? (void *)1 : NULL;
}

#define AGENTS_SWEEP                                                                                    \
  "method: bayes\nmetric: {name: f}\nparameters:\n  a: {min: 0.0, max: 1.0}\n  b: {values: [p, q]}\n" \
  "early_terminate: {type: hyperband, min_iter: 1, eta: 2}\n"

/* Four agent threads on g_sweep at g_home; the trials they ran in all. */
static int64_t four_agents(void) {
  pthread_t th[4];
  int64_t ran[4] = {0};
  for (int i = 0; i < 4; i++) assert_int_equal(pthread_create(&th[i], NULL, agent_thread, &ran[i]), 0);
  for (int i = 0; i < 4; i++) {
    void *r = NULL;
    pthread_join(th[i], &r);
    assert_null(r);
  }
  return ran[0] + ran[1] + ran[2] + ran[3];
}

static void test_agents_concurrent(void **state) {
  (void)state;
  const char *home = tu_tmpdir();
  g_home = home;
  im_track_store_t *s = NULL;
  assert_int_equal(im_track_open(home, &s), IM_OK);
  im_sweep_config_t *c = parse(AGENTS_SWEEP);
  char *id = NULL;
  im_sweep_create_opts_t co = {.experiment = "sweeps", .seed = 7, .max_trials = 13};
  assert_int_equal(im_sweep_create(s, c, &co, &id), IM_OK);
  g_sweep = id;
  assert_int_equal(four_agents(), 13);
  im_track_sweep_trial_t *tr = NULL;
  int64_t n = 0;
  assert_int_equal(im_track_sweep_trials(s, id, &tr, &n), IM_OK);
  assert_int_equal(n, 13);
  int pruned = 0;
  for (int64_t i = 0; i < n; i++) {
    assert_int_equal(tr[i].trial, i + 1);
    assert_true(!strcmp(tr[i].state, "FINISHED") || !strcmp(tr[i].state, "PRUNED"));
    assert_true(isfinite(tr[i].objective));
    pruned += !strcmp(tr[i].state, "PRUNED");
  }
  assert_true(pruned > 0);
  im_track_sweep_trials_free(tr, n);
  /* a stale claim is failed by the next agent's claim */
  im_sweep_info_t *w = NULL;
  assert_int_equal(im_sweep_info(s, id, &w), IM_OK);
  assert_int_equal(w->max_trials, 13);
  assert_non_null(w->parent_run_id);
  im_sweep_info_free(w);
  /* a crashed agent: its claimed trial goes FAILED once its heartbeat is stale, and the
   * crashed agent can no longer report on it */
  char *id2 = NULL;
  co.max_trials = 3;
  assert_int_equal(im_sweep_create(s, c, &co, &id2), IM_OK);
  im_track_sweep_trial_t *one = NULL;
  assert_int_equal(im_track_sweep_claim(s, id2, "crashed", 0, 0, fixed_point, NULL, &one), IM_OK);
  assert_non_null(one);
  assert_int_equal(one->trial, 1);
  assert_string_equal(one->state, "CLAIMED");
  int64_t t0 = im_time_wall_ms();
  for (int i = 0; i < 100000000 && im_time_wall_ms() < t0 + 3; i++) { /* let the heartbeat age 3 ms */
  }
  int64_t r1 = 0;
  im_sweep_agent_opts_t o = {.tracking_home = home, .sweep_id = id2, .objective = cheap, .stale_ms = 1};
  assert_int_equal(im_sweep_agent_run(&o, &r1), IM_OK);
  assert_int_equal(r1, 2); /* the cap counts the failed trial */
  assert_int_equal(im_track_sweep_trials(s, id2, &tr, &n), IM_OK);
  assert_int_equal(n, 3);
  assert_string_equal(tr[0].state, "FAILED");
  assert_true(!strcmp(tr[1].state, "FINISHED") || !strcmp(tr[1].state, "PRUNED"));
  im_track_sweep_trials_free(tr, n);
  assert_int_equal(im_track_sweep_trial_update(s, id2, 1, "crashed", "FINISHED", NULL, 1.0), IM_ERR_STATE);
  im_track_sweep_trials_free(one, 1);
  im_free(id2);
  /* metric.target: the sweep finishes once a trial reaches it */
  im_sweep_config_t *ct = parse("method: random\nmetric: {name: f, target: 1.0}\nparameters:\n  a: {min: 0.0, max: 1.0}\n");
  co.max_trials = 10;
  assert_int_equal(im_sweep_create(s, ct, &co, &id2), IM_OK);
  im_sweep_agent_opts_t ot = {.tracking_home = home, .sweep_id = id2, .objective = cheap};
  assert_int_equal(im_sweep_agent_run(&ot, &r1), IM_OK);
  assert_int_equal(r1, 1);
  im_sweep_info_t *wt = NULL;
  assert_int_equal(im_sweep_info(s, id2, &wt), IM_OK);
  assert_string_equal(wt->state, "FINISHED");
  im_sweep_info_free(wt);
  im_sweep_config_free(ct);
  im_free(id2);
  im_free(id);
  im_sweep_config_free(c);
  im_track_close(s);
}

/* Sweeps shared through a tracking server: an in-process `imops server` on a
 * loopback ephemeral port, four agents (threads, each with its own REST
 * clients, as on four machines) against /api/2.0/imops/sweeps: exactly
 * max_trials trials, each claimed by one agent; hyperband's verdict from the
 * server's report endpoint; the summary through the same state interface. */
static void test_agents_through_server(void **state) {
  (void)state;
  im_server_opts_t so = {.host = "127.0.0.1", .port = 0, .workspace = tu_path(tu_tmpdir(), "srv"), .threads = 4};
  im_server_t *srv = NULL;
  assert_int_equal(im_server_new(&so, &srv), IM_OK);
  assert_int_equal(im_server_start(srv), IM_OK);
  char uri[64];
  snprintf(uri, sizeof uri, "http://127.0.0.1:%d", im_server_port(srv));
  g_home = uri; /* the agents (agent_thread) go through the server */

  im_sweep_config_t *c = parse(AGENTS_SWEEP);
  im_sweep_state_t *ss = NULL;
  assert_int_equal(im_sweep_state_open(uri, &ss), IM_OK);
  assert_true(im_sweep_state_is_remote(ss));
  char *id = NULL;
  im_sweep_create_opts_t co = {.experiment = "sweeps", .seed = 5, .max_trials = 9};
  assert_int_equal(im_sweep_state_create(ss, c, &co, &id), IM_OK);
  g_sweep = id;

  assert_int_equal(four_agents(), 9);

  im_track_sweep_trial_t *tr = NULL;
  int64_t n = 0;
  assert_int_equal(im_sweep_state_trials(ss, id, &tr, &n), IM_OK);
  assert_int_equal(n, 9);
  for (int64_t i = 0; i < n; i++) {
    assert_int_equal(tr[i].trial, i + 1);
    assert_true(!strcmp(tr[i].state, "FINISHED") || !strcmp(tr[i].state, "PRUNED"));
    assert_true(isfinite(tr[i].objective));
    assert_non_null(tr[i].agent_id);
  }
  im_track_sweep_trials_free(tr, n);

  im_sweep_summary_t *sum = NULL;
  assert_int_equal(im_sweep_state_summary(ss, id, &sum), IM_OK);
  assert_int_equal(sum->n, 9);
  assert_true(sum->best >= 0);
  assert_non_null(sum->info->parent_run_id);
  im_sweep_summary_free(sum);
  /* the same sweep as the server's own store sees it */
  im_track_store_t *s = NULL;
  assert_int_equal(im_track_open(im_server_workspace(srv), &s), IM_OK);
  assert_int_equal(im_track_sweep_trials(s, id, &tr, &n), IM_OK);
  assert_int_equal(n, 9);
  im_track_sweep_trials_free(tr, n);
  im_track_close(s);
  /* hyperband through the report endpoint: three trials at band 1, the worst is pruned */
  char *id3 = NULL;
  co.max_trials = 3;
  assert_int_equal(im_sweep_state_create(ss, c, &co, &id3), IM_OK);
  im_http_client_t *hc = NULL;
  assert_int_equal(im_http_client_new(NULL, &hc), IM_OK);
  char url[128];
  const double vals[3] = {0.1, 0.2, 5.0};
  const char *agents[3] = {"a1", "a2", "a3"};
  for (int i = 0; i < 3; i++) {
    json_t *ans = NULL;
    long status = 0;
    snprintf(url, sizeof url, "%s/api/2.0/imops/sweeps/claim", uri);
    json_t *req = json_pack("{s:s,s:s}", "sweep_id", id3, "agent_id", agents[i]);
    assert_int_equal(im_http_client_json(hc, "POST", url, req, &ans, &status), IM_OK);
    json_decref(req);
    assert_int_equal(status, 200);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(ans, "trial"), "trial")), i + 1);
    json_decref(ans);
  }
  for (int i = 0; i < 3; i++) {
    json_t *ans = NULL;
    long status = 0;
    snprintf(url, sizeof url, "%s/api/2.0/imops/sweeps/report", uri);
    json_t *req = json_pack("{s:s,s:i,s:s,s:i,s:f}", "sweep_id", id3, "trial", i + 1, "agent_id", agents[i], "step", 1,
                            "value", vals[i]);
    assert_int_equal(im_http_client_json(hc, "POST", url, req, &ans, &status), IM_OK);
    json_decref(req);
    assert_int_equal(status, 200);
    assert_int_equal(json_is_true(json_object_get(ans, "prune")), i == 2);
    json_decref(ans);
  }
  im_http_client_free(hc);
  im_free(id3);
  /* an unknown sweep is IM_ERR_NOT_FOUND through the server too */
  im_sweep_info_t *w = NULL;
  assert_int_equal(im_sweep_state_info(ss, "deadbeef", &w), IM_ERR_NOT_FOUND);

  im_sweep_state_close(ss);
  im_sweep_config_free(c);
  im_free(id);
  assert_int_equal(im_server_stop(srv, 10.0), IM_OK);
  im_server_free(srv);
  g_home = NULL, g_sweep = NULL;
}

static void test_katib_and_importance(void **state) {
  (void)state;
  im_sweep_config_t *c = parse("name: Seed Sweep\nmethod: random\nmetric: {name: val_loss, goal: minimize}\n"
                               "parameters:\n  batch_size: {values: [32, 64]}\n  optimizer: {values: [adam, sgd]}\n"
                               "  lr: {distribution: log_uniform_values, min: 0.001, max: 0.1}\n  epochs: {value: 1}\n"
                               "run_cap: 10\n");
  im_buf_t b = {0};
  assert_int_equal(im_sweep_katib_yaml(c, NULL, &b), IM_OK);
  assert_non_null(strstr(b.data, "kind: Experiment"));
  assert_non_null(strstr(b.data, "objectiveMetricName: val_loss"));
  assert_non_null(strstr(b.data, "maxTrialCount: 10"));
  assert_non_null(strstr(b.data, "distribution: logUniform"));
  assert_non_null(strstr(b.data, "${trialParameters.lr}"));
  assert_non_null(strstr(b.data, "name: seed-sweep"));
  im_buf_free(&b);
  /* importance: y depends on lr only */
  double xs[20][4];
  const double *px[20];
  double ys[20];
  im_rng_t r;
  im_rng_seed(&r, 3);
  for (int i = 0; i < 20; i++) {
    assert_int_equal(im_sweep_suggest(c, NULL, (size_t)i, 9, xs[i]), IM_OK);
    px[i] = xs[i];
    ys[i] = log(xs[i][2]) + 0.01 * im_rng_normal(&r);
  }
  im_sweep_importance_t *imp = NULL;
  size_t n = 0;
  assert_int_equal(im_sweep_importance(c, px, ys, 20, &imp, &n), IM_OK);
  assert_int_equal(n, 3);
  assert_string_equal(imp[2].name, "lr");
  assert_true(imp[2].correlation > 0.95 && imp[2].rank_correlation > 0.95);
  assert_true(imp[2].importance > imp[0].importance && imp[2].importance > imp[1].importance);
  im_sweep_importance_free(imp, n);
  const char *dir = tu_tmpdir();
  int64_t trials[20];
  for (int i = 0; i < 20; i++) trials[i] = i + 1;
  assert_int_equal(im_sweep_plot_metric(tu_path(dir, "m.svg"), c, trials, ys, 20), IM_OK);
  assert_int_equal(im_sweep_plot_parallel(tu_path(dir, "p.svg"), c, px, ys, 20), IM_OK);
  im_sweep_config_free(c);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_distributions),  cmocka_unit_test(test_grid_and_determinism),
      cmocka_unit_test(test_nested),         cmocka_unit_test(test_config_errors),
      cmocka_unit_test(test_hyperband),      cmocka_unit_test(test_gp_beats_random),
      cmocka_unit_test(test_tpe_beats_random),
      cmocka_unit_test(test_agents_concurrent), cmocka_unit_test(test_agents_through_server),
      cmocka_unit_test(test_katib_and_importance),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
