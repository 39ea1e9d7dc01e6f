/* Unit tests of src/monitor: the exact Prometheus text exposition (HELP/TYPE
 * lines, escaping, label order, cumulative histogram buckets ending in +Inf,
 * _sum/_count, the trailing newline), value formatting, name validation,
 * concurrent updates from many threads, process metrics, and the statistics
 * (Welford against a two-pass computation, merging, PSI by hand). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imops/core.h"
#include "imops/monitor.h"

static char *expose(im_monitor_t *r) {
  im_buf_t b = {0};
  assert_int_equal(im_monitor_expose(r, &b), IM_OK);
  assert_true(b.len > 0);
  assert_int_equal(b.data[b.len - 1], '\n');
  char *s = im_strndup(b.data, b.len);
  im_buf_free(&b);
  return s;
}

static void test_exposition_exact(void **state) {
  im_monitor_t *r;
  assert_int_equal(im_monitor_new(&r), IM_OK);
  im_monitor_family_t *req, *g, *h;
  const char *ln[] = {"route", "code"};
  assert_int_equal(im_monitor_counter(r, "app_requests_total", "Requests.\nBy route \\ code.", 2, ln, &req), IM_OK);
  assert_int_equal(im_monitor_gauge(r, "app_temperature", "A gauge.", 0, NULL, &g), IM_OK);
  const double bounds[] = {0.1, 0.5, 1};
  const char *hl[] = {"route"};
  assert_int_equal(im_monitor_histogram(r, "app_latency_seconds", "Latency.", 1, hl, 3, bounds, &h), IM_OK);
  im_monitor_series_t *a, *b, *t, *l;
  const char *va[] = {"/predict", "200"}, *vb[] = {"/a\"b\\c\nd", "404"};
  assert_int_equal(im_monitor_series(req, va, &a), IM_OK);
  assert_int_equal(im_monitor_series(req, vb, &b), IM_OK);
  im_monitor_series_t *a2;
  assert_int_equal(im_monitor_series(req, va, &a2), IM_OK);
  assert_ptr_equal(a, a2);
  im_monitor_inc(a, 3);
  im_monitor_inc(a, -5); /* counters never go down */
  im_monitor_inc(b, 1);
  assert_int_equal(im_monitor_series(g, NULL, &t), IM_OK);
  im_monitor_set(t, -2.5);
  const char *hv[] = {"/predict"};
  assert_int_equal(im_monitor_series(h, hv, &l), IM_OK);
  im_monitor_observe(l, 0.05);
  im_monitor_observe(l, 0.1); /* le is inclusive */
  im_monitor_observe(l, 0.7);
  im_monitor_observe(l, 3);
  im_monitor_observe(l, NAN); /* ignored */
  assert_int_equal(im_monitor_count(l), 4);
  char *s = expose(r);
  const char *want =
      "# HELP app_requests_total Requests.\\nBy route \\\\ code.\n"
      "# TYPE app_requests_total counter\n"
      "app_requests_total{route=\"/predict\",code=\"200\"} 3\n"
      "app_requests_total{route=\"/a\\\"b\\\\c\\nd\",code=\"404\"} 1\n"
      "# HELP app_temperature A gauge.\n"
      "# TYPE app_temperature gauge\n"
      "app_temperature -2.5\n"
      "# HELP app_latency_seconds Latency.\n"
      "# TYPE app_latency_seconds histogram\n"
      "app_latency_seconds_bucket{route=\"/predict\",le=\"0.1\"} 2\n"
      "app_latency_seconds_bucket{route=\"/predict\",le=\"0.5\"} 2\n"
      "app_latency_seconds_bucket{route=\"/predict\",le=\"1\"} 3\n"
      "app_latency_seconds_bucket{route=\"/predict\",le=\"+Inf\"} 4\n"
      "app_latency_seconds_sum{route=\"/predict\"} 3.85\n"
      "app_latency_seconds_count{route=\"/predict\"} 4\n";
  if (strcmp(s, want)) fprintf(stderr, "got:\n%s\nwant:\n%s\n", s, want);
  assert_string_equal(s, want);
  im_free(s);
  /* clearing hides the series; a new one with the same labels starts at zero */
  im_monitor_family_clear(req);
  assert_int_equal(im_monitor_series(req, va, &a2), IM_OK);
  assert_ptr_not_equal(a, a2);
  s = expose(r);
  assert_non_null(strstr(s, "app_requests_total{route=\"/predict\",code=\"200\"} 0\n"));
  assert_null(strstr(s, "code=\"404\""));
  im_free(s);
  im_monitor_free(r);
}

static void test_validation(void **state) {
  im_monitor_t *r;
  assert_int_equal(im_monitor_new(&r), IM_OK);
  im_monitor_family_t *f;
  const char *le[] = {"le"}, *dunder[] = {"__x"}, *dup[] = {"a", "a"}, *ok[] = {"a"};
  const double bad[] = {1, 1}, good[] = {1};
  assert_int_equal(im_monitor_counter(r, "9bad", "", 0, NULL, &f), IM_ERR_ARG);
  assert_int_equal(im_monitor_counter(r, "has-dash", "", 0, NULL, &f), IM_ERR_ARG);
  assert_int_equal(im_monitor_counter(r, "x", "", 1, dunder, &f), IM_ERR_ARG);
  assert_int_equal(im_monitor_counter(r, "x", "", 2, dup, &f), IM_ERR_ARG);
  assert_int_equal(im_monitor_histogram(r, "h", "", 1, le, 1, good, &f), IM_ERR_ARG);
  assert_int_equal(im_monitor_histogram(r, "h", "", 0, NULL, 2, bad, &f), IM_ERR_ARG);
  assert_int_equal(im_monitor_histogram(r, "h", "", 0, NULL, 0, good, &f), IM_ERR_ARG);
  assert_int_equal(im_monitor_gauge(r, "x", "", 1, ok, &f), IM_OK);
  im_monitor_family_t *again;
  assert_int_equal(im_monitor_gauge(r, "x", "", 0, NULL, &again), IM_ERR_EXISTS);
  assert_null(again);
  im_monitor_series_t *s;
  assert_int_equal(im_monitor_series(f, NULL, &s), IM_ERR_ARG);
  /* a family without series shows HELP and TYPE only */
  char *text = expose(r);
  assert_string_equal(text, "# HELP x \n# TYPE x gauge\n");
  im_free(text);
  im_monitor_free(r);
}

static void test_format_value(void **state) {
  char b[40];
  assert_string_equal(im_monitor_format_value(0, b, sizeof b), "0");
  assert_string_equal(im_monitor_format_value(42, b, sizeof b), "42");
  assert_string_equal(im_monitor_format_value(-7, b, sizeof b), "-7");
  assert_string_equal(im_monitor_format_value(0.1, b, sizeof b), "0.1");
  assert_string_equal(im_monitor_format_value(0.0025, b, sizeof b), "0.0025");
  assert_string_equal(im_monitor_format_value(1e20, b, sizeof b), "1e+20");
  assert_string_equal(im_monitor_format_value(INFINITY, b, sizeof b), "+Inf");
  assert_string_equal(im_monitor_format_value(-INFINITY, b, sizeof b), "-Inf");
  assert_string_equal(im_monitor_format_value(NAN, b, sizeof b), "NaN");
  double third = 1.0 / 3.0;
  im_monitor_format_value(third, b, sizeof b);
  assert_true(strtod(b, NULL) == third);
}

typedef struct {
  im_monitor_series_t *c, *h;
} th_arg_t;

static void *hammer(void *p) {
  th_arg_t *a = p;
  for (int i = 0; i < 20000; i++) {
    im_monitor_inc(a->c, 1);
    im_monitor_observe(a->h, (i % 4) * 0.5);
  }
  return NULL;
}

static void test_concurrent_updates(void **state) {
  im_monitor_t *r;
  assert_int_equal(im_monitor_new(&r), IM_OK);
  im_monitor_family_t *c, *h;
  const double bounds[] = {0.5, 1};
  assert_int_equal(im_monitor_counter(r, "n_total", "n", 0, NULL, &c), IM_OK);
  assert_int_equal(im_monitor_histogram(r, "v", "v", 0, NULL, 2, bounds, &h), IM_OK);
  th_arg_t a;
  assert_int_equal(im_monitor_series(c, NULL, &a.c), IM_OK);
  assert_int_equal(im_monitor_series(h, NULL, &a.h), IM_OK);
  pthread_t t[4];
  for (int i = 0; i < 4; i++) pthread_create(&t[i], NULL, hammer, &a);
  for (int i = 0; i < 4; i++) pthread_join(t[i], NULL);
  assert_true(im_monitor_value(a.c) == 80000);
  assert_int_equal(im_monitor_count(a.h), 80000);
  assert_true(fabs(im_monitor_value(a.h) - 80000 * 0.75) < 1e-6);
  char *s = expose(r);
  assert_non_null(strstr(s, "v_bucket{le=\"0.5\"} 40000\nv_bucket{le=\"1\"} 60000\nv_bucket{le=\"+Inf\"} 80000\n"));
  im_free(s);
  im_monitor_free(r);
}

static void test_process_and_build_info(void **state) {
  im_monitor_t *r;
  assert_int_equal(im_monitor_new(&r), IM_OK);
  assert_int_equal(im_monitor_process_register(r), IM_OK);
  assert_int_equal(im_monitor_build_info_register(r), IM_OK);
  char *s = expose(r);
  const char *names[] = {"process_cpu_seconds_total ", "process_resident_memory_bytes ",
                         "process_virtual_memory_bytes ", "process_open_fds ", "process_max_fds ",
                         "process_start_time_seconds ", "process_threads ", "imops_build_info{version=\""};
  for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
    char line[128];
    snprintf(line, sizeof line, "\n%s", names[i]);
    if (!strstr(s, line)) fprintf(stderr, "missing %s in:\n%s\n", names[i], s);
    assert_non_null(strstr(s, line));
  }
  assert_non_null(strstr(s, "# TYPE process_cpu_seconds_total counter\n"));
  im_monitor_process_t p;
  im_monitor_process_read(&p);
  assert_true(p.resident_bytes > 1e5);
  assert_true(p.threads >= 1);
  assert_true(p.open_fds >= 3);
  assert_true(p.start_time_seconds > 1.5e9);
  im_free(s);
  /* exposing twice keeps one sample per process metric */
  s = expose(r);
  const char *first = strstr(s, "\nprocess_threads ");
  assert_non_null(first);
  assert_null(strstr(first + 1, "\nprocess_threads "));
  im_free(s);
  im_monitor_free(r);
}

static void test_welford(void **state) {
  double xs[1000];
  im_rng_t g;
  im_rng_seed(&g, 7);
  for (int i = 0; i < 1000; i++) xs[i] = 0.3 + 0.1 * im_rng_normal(&g);
  double mean = 0, var = 0;
  for (int i = 0; i < 1000; i++) mean += xs[i];
  mean /= 1000;
  for (int i = 0; i < 1000; i++) var += (xs[i] - mean) * (xs[i] - mean);
  var /= 1000;
  im_monitor_welford_t all = {0, 0, 0}, a = {0, 0, 0}, b = {0, 0, 0};
  for (int i = 0; i < 1000; i++) im_monitor_welford_add(&all, xs[i]);
  for (int i = 0; i < 300; i++) im_monitor_welford_add(&a, xs[i]);
  double sum = 0, sq = 0;
  for (int i = 300; i < 1000; i++) sum += xs[i], sq += xs[i] * xs[i];
  b = im_monitor_welford_from_sums(700, sum, sq);
  im_monitor_welford_merge(&a, &b);
  assert_true(fabs(all.mean - mean) < 1e-12);
  assert_true(fabs(im_monitor_welford_var(&all) - var) < 1e-12);
  assert_true(fabs(a.mean - mean) < 1e-12);
  assert_true(fabs(im_monitor_welford_var(&a) - var) < 1e-9);
  assert_true(fabs(im_monitor_welford_std(&a) - sqrt(var)) < 1e-9);
  im_monitor_welford_t empty = {0, 0, 0}, c = all;
  im_monitor_welford_merge(&c, &empty);
  assert_true(c.n == all.n && c.mean == all.mean);
  im_monitor_welford_merge(&empty, &all);
  assert_true(empty.n == 1000 && empty.mean == all.mean);
  assert_true(im_monitor_welford_var(&(im_monitor_welford_t){0, 0, 0}) == 0);
}

static void test_psi(void **state) {
  const double e[] = {50, 50}, same[] = {5, 5}, shift[] = {80, 20}, zero[] = {0, 0}, miss[] = {100, 0};
  assert_true(fabs(im_monitor_psi(2, e, same, 0)) < 1e-15);
  double want = (0.8 - 0.5) * log(0.8 / 0.5) + (0.2 - 0.5) * log(0.2 / 0.5);
  assert_true(fabs(im_monitor_psi(2, e, shift, 0) - want) < 1e-12);
  assert_true(im_monitor_psi(2, e, zero, 0) == 0);
  /* an empty bin is floored at eps instead of giving infinity */
  double m = im_monitor_psi(2, e, miss, 1e-4);
  double want2 = (1 - 0.5) * log(1 / 0.5) + (1e-4 - 0.5) * log(1e-4 / 0.5);
  assert_true(isfinite(m) && fabs(m - want2) < 1e-9);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_exposition_exact), cmocka_unit_test(test_validation),
      cmocka_unit_test(test_format_value),     cmocka_unit_test(test_concurrent_updates),
      cmocka_unit_test(test_process_and_build_info), cmocka_unit_test(test_welford),
      cmocka_unit_test(test_psi),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
