/* Unit tests of the tracking store under concurrent writers and crashes:
 * several processes log metrics (single calls and batches) to one run at the
 * same time and none is lost or fails with "database is locked"; a process
 * killed (SIGKILL) in the middle of log_batch leaves the store consistent,
 * with the batch either wholly there or not at all. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "imops/core.h"
#include "imops/track.h"
#include "testutil.h"
#include "track/track_impl.h"

#define OK(x) assert_int_equal((x), IM_OK)

/* The issue asks for 4 processes x 10,000 metrics; both are macros so a slow
 * machine (or a sanitizer build) can be given smaller numbers. */
#ifndef IM_TRACK_TEST_PROCS
#define IM_TRACK_TEST_PROCS 4
#endif
#ifndef IM_TRACK_TEST_METRICS
#define IM_TRACK_TEST_METRICS 10000
#endif
#define CHUNK 100

static char *make_run(const char *home) {
  im_track_store_t *s = NULL;
  OK(im_track_open(home, &s));
  im_track_run_create_t c = {.run_name = "shared"};
  im_track_run_t *r = NULL;
  OK(im_track_run_create(s, &c, &r));
  char *id = strdup(r->run_id);
  im_track_run_free(r);
  im_track_close(s);
  return id;
}

/* One writer: N metrics, alternating chunks of single log_metric calls and
 * one log_batch (with a param and a tag). Returns a process exit status. */
static int writer(const char *home, const char *run_id, int k, int n) {
  im_track_store_t *s = NULL;
  if (im_track_open(home, &s) != IM_OK) {
    fprintf(stderr, "writer %d: open: %s\n", k, im_last_error());
    return 1;
  }
  im_track_metric_in_t batch[CHUNK];
  for (int j = 0; j < n; j += CHUNK) {
    int m = n - j < CHUNK ? n - j : CHUNK;
    int64_t base = (int64_t)k * n + j;
    im_status_t st = IM_OK;
    if ((j / CHUNK) % 2 == 0) {
      for (int i = 0; i < m && st == IM_OK; i++)
        st = im_track_log_metric(s, run_id, "loss", (double)(base + i), 1000 + base + i, base + i);
    } else {
      for (int i = 0; i < m; i++)
        batch[i] = (im_track_metric_in_t){"loss", (double)(base + i), 1000 + base + i, base + i};
      char pkey[32], tval[32];
      snprintf(pkey, sizeof pkey, "p%d_%d", k, j);
      snprintf(tval, sizeof tval, "%d", j);
      im_track_kv_t p = {pkey, "v"};
      im_track_kv_t t = {pkey, tval};
      st = im_track_log_batch(s, run_id, batch, m, &p, 1, &t, 1);
    }
    if (st != IM_OK) {
      fprintf(stderr, "writer %d at %d: %s: %s\n", k, j, im_status_name(st), im_track_errmsg(s));
      im_track_close(s);
      return 1;
    }
  }
  im_track_close(s);
  return 0;
}

static void test_concurrent_writers(void **state) {
  const char *home = tu_tmpdir();
  char *run_id = make_run(home);
  int gate[2];
  assert_int_equal(pipe(gate), 0);
  pid_t pids[IM_TRACK_TEST_PROCS];
  for (int k = 0; k < IM_TRACK_TEST_PROCS; k++) {
    pids[k] = fork();
    assert_true(pids[k] >= 0);
    if (pids[k] == 0) {
      close(gate[1]);
      char c;
      while (read(gate[0], &c, 1) < 0 && errno == EINTR) {
      } /* all start together when the parent closes the gate */
      _exit(writer(home, run_id, k, IM_TRACK_TEST_METRICS));
    }
  }
  close(gate[0]);
  double t0 = im_time_now();
  close(gate[1]);
  int failed = 0;
  for (int k = 0; k < IM_TRACK_TEST_PROCS; k++) {
    int status = 0;
    assert_int_equal(waitpid(pids[k], &status, 0), pids[k]);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) failed++;
  }
  double secs = im_time_now() - t0;
  assert_int_equal(failed, 0);
  print_message("concurrent writers: %d processes x %d metrics in %.2f s (%.0f metrics/s)\n", IM_TRACK_TEST_PROCS,
                IM_TRACK_TEST_METRICS, secs, IM_TRACK_TEST_PROCS * IM_TRACK_TEST_METRICS / secs);

  const int64_t total = (int64_t)IM_TRACK_TEST_PROCS * IM_TRACK_TEST_METRICS;
  im_track_store_t *s = NULL;
  OK(im_track_open(home, &s));
  im_track_metric_list_t *h = NULL;
  OK(im_track_get_metric_history(s, run_id, "loss", 0, NULL, &h));
  assert_int_equal(h->n, total);
  for (int64_t i = 0; i < h->n; i++) {
    if (h->items[i].step != i || h->items[i].value != (double)i) fail_msg("metric %lld missing or wrong", (long long)i);
  }
  im_track_metric_list_free(h);
  im_track_run_t *r = NULL;
  OK(im_track_run_get(s, run_id, &r));
  assert_int_equal(r->n_metrics, 1);
  assert_int_equal(r->metrics[0].step, total - 1); /* the latest of all writers */
  int batches = IM_TRACK_TEST_PROCS * ((IM_TRACK_TEST_METRICS / CHUNK) / 2);
  assert_int_equal(r->n_params, batches);
  assert_int_equal(r->n_tags, batches + 1); /* + mlflow.runName */
  im_track_run_free(r);
  im_track_close(s);
  free(run_id);
}

/* ---- killed in the middle of a batch ------------------------------------------------------- */
#define KILL_BATCH 998 /* + 1 param + 1 tag = the 1000-entity limit */
static int kill_pipe = -1;
static int batch_no;

static void stop_mid_batch(int i) {
  if (batch_no == 2 && i == KILL_BATCH / 2) {
    char c = 'k';
    if (write(kill_pipe, &c, 1) != 1) _exit(4);
    for (;;) pause(); /* half of the batch written, not committed: wait for SIGKILL */
  }
}

static int batch_writer(const char *home, const char *run_id) {
  im_track_store_t *s = NULL;
  if (im_track_open(home, &s) != IM_OK) return 1;
  im__trk_batch_hook = stop_mid_batch;
  static im_track_metric_in_t ms[KILL_BATCH];
  for (batch_no = 0; batch_no < 5; batch_no++) {
    for (int i = 0; i < KILL_BATCH; i++) {
      int64_t step = (int64_t)batch_no * KILL_BATCH + i;
      ms[i] = (im_track_metric_in_t){"m", (double)step, 1000 + step, step};
    }
    char key[16], val[16];
    snprintf(key, sizeof key, "p%d", batch_no);
    snprintf(val, sizeof val, "%d", batch_no);
    im_track_kv_t p = {key, "v"}, t = {"last_batch", val};
    if (im_track_log_batch(s, run_id, ms, KILL_BATCH, &p, 1, &t, 1) != IM_OK) return 2;
  }
  return 3; /* should have been killed */
}

static void check_integrity(const char *db_path) {
  sqlite3 *db = NULL;
  assert_int_equal(sqlite3_open(db_path, &db), SQLITE_OK);
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
  sqlite3_finalize(st);
  /* the latest-metrics table agrees with the history */
  assert_int_equal(sqlite3_prepare_v2(db,
                                      "SELECT count(*) FROM latest_metrics l WHERE step != "
                                      "(SELECT max(step) FROM metrics m WHERE m.run_pk = l.run_pk AND m.key = l.key)",
                                      -1, &st, NULL),
                   SQLITE_OK);
  assert_int_equal(sqlite3_step(st), SQLITE_ROW);
  assert_int_equal(sqlite3_column_int(st, 0), 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
}

static void test_killed_mid_batch(void **state) {
  const char *home = tu_tmpdir();
  char *run_id = make_run(home);
  int p[2];
  assert_int_equal(pipe(p), 0);
  pid_t pid = fork();
  assert_true(pid >= 0);
  if (pid == 0) {
    close(p[0]);
    kill_pipe = p[1];
    _exit(batch_writer(home, run_id));
  }
  close(p[1]);
  struct pollfd pfd = {p[0], POLLIN, 0};
  int ready = poll(&pfd, 1, 60000);
  char c = 0;
  int got = ready == 1 ? (int)read(p[0], &c, 1) : 0;
  assert_int_equal(kill(pid, SIGKILL), 0);
  int status = 0;
  assert_int_equal(waitpid(pid, &status, 0), pid);
  close(p[0]);
  if (got != 1) fail_msg("the writer did not reach the middle of batch 2 (exit status %d)", status);
  assert_true(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);

  /* batches 0 and 1 are there in full, nothing of batch 2 */
  im_track_store_t *s = NULL;
  OK(im_track_open(home, &s));
  im_track_metric_list_t *h = NULL;
  OK(im_track_get_metric_history(s, run_id, "m", 0, NULL, &h));
  assert_int_equal(h->n, 2 * KILL_BATCH);
  for (int64_t i = 0; i < h->n; i++) assert_int_equal(h->items[i].step, i);
  im_track_metric_list_free(h);
  im_track_run_t *r = NULL;
  OK(im_track_run_get(s, run_id, &r));
  assert_int_equal(r->n_params, 2);
  assert_string_equal(r->params[0].key, "p0");
  assert_string_equal(r->params[1].key, "p1");
  int found = 0;
  for (int i = 0; i < r->n_tags; i++)
    if (!strcmp(r->tags[i].key, "last_batch")) {
      assert_string_equal(r->tags[i].value, "1");
      found = 1;
    }
  assert_true(found);
  assert_int_equal(r->metrics[0].step, 2 * KILL_BATCH - 1);
  im_track_run_free(r);
  /* and the store takes the batch again */
  im_track_metric_in_t m = {"m", 1.0, 5000, 2 * KILL_BATCH};
  im_track_kv_t pp = {"p2", "v"};
  OK(im_track_log_batch(s, run_id, &m, 1, &pp, 1, NULL, 0));
  char *db = strdup(im_track_db_path(s));
  im_track_close(s);
  check_integrity(db);
  free(db);
  free(run_id);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_concurrent_writers),
      cmocka_unit_test(test_killed_mid_batch),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
