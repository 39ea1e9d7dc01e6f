/* Unit tests of src/track: the store (open, Default experiment, errors),
 * experiments, runs, params (write-once), metrics (history, latest value,
 * NaN/Inf), log_batch (limits, all-or-nothing), the model registry (versions,
 * aliases, stages), model URIs, and schema migration from a version-1 database
 * built by hand. Search is in test_track_search.c, concurrency and crashes in
 * test_track_concurrency.c. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <limits.h>
#include <math.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "imops/core.h"
#include "imops/track.h"
#include "testutil.h"

#define OK(x) assert_int_equal((x), IM_OK)

static im_track_store_t *open_tmp(void) {
  im_track_store_t *s = NULL;
  OK(im_track_open(tu_tmpdir(), &s));
  return s;
}

/* Creates a run and returns its id (free with im_free). */
static char *new_run(im_track_store_t *s, const char *exp, const char *name) {
  im_track_run_create_t c = {.experiment_id = exp, .run_name = name, .user_id = "tester"};
  im_track_run_t *r = NULL;
  OK(im_track_run_create(s, &c, &r));
  char *id = im_strdup(r->run_id);
  im_track_run_free(r);
  return id;
}

static const char *tag_value(const im_track_tag_t *t, int n, const char *key) {
  for (int i = 0; i < n; i++)
    if (!strcmp(t[i].key, key)) return t[i].value;
  return NULL;
}

static const im_track_metric_t *metric_of(const im_track_run_t *r, const char *key) {
  for (int i = 0; i < r->n_metrics; i++)
    if (!strcmp(r->metrics[i].key, key)) return &r->metrics[i];
  return NULL;
}

/* ---- the store ------------------------------------------------------------------- */
static void test_open_and_default_experiment(void **state) {
  const char *dir = tu_tmpdir();
  const char *home = tu_path(dir, "ws");
  im_track_store_t *s = NULL;
  OK(im_track_open(home, &s));
  assert_int_equal(im_track_schema_version(s), IM_TRACK_SCHEMA_VERSION);
  char *abs = realpath(home, NULL);
  assert_non_null(abs);
  assert_string_equal(im_track_home(s), abs);
  assert_string_equal(im_track_db_path(s), tu_path(abs, "imops.db"));
  char want[4096];
  snprintf(want, sizeof want, "file://%s/artifacts", abs);
  assert_string_equal(im_track_artifact_root(s), want);
  im_track_experiment_t *e = NULL;
  OK(im_track_experiment_get(s, "0", &e));
  assert_string_equal(e->name, "Default");
  assert_string_equal(e->lifecycle_stage, "active");
  snprintf(want, sizeof want, "file://%s/artifacts/0", abs);
  assert_string_equal(e->artifact_location, want);
  assert_true(e->creation_time > 0);
  im_track_experiment_free(e);
  /* errors: per handle and thread-local, with an MLflow code */
  assert_int_equal(im_track_experiment_get(s, "42", &e), IM_ERR_NOT_FOUND);
  assert_null(e);
  assert_string_equal(im_track_error_code(s), "RESOURCE_DOES_NOT_EXIST");
  assert_non_null(strstr(im_track_errmsg(s), "42"));
  assert_non_null(strstr(im_last_error(), "42"));
  im_track_close(s);
  /* reopening keeps the one Default experiment; a .db path works too */
  im_status_t st = im_track_open(tu_path(abs, "imops.db"), &s);
  if (st) fail_msg("reopen: %s", im_last_error());
  im_track_experiment_list_t *l = NULL;
  OK(im_track_experiment_search(s, IM_TRACK_ALL, NULL, &l));
  assert_int_equal(l->n, 1);
  im_track_experiment_list_free(l);
  im_track_close(s);
  free(abs);
  /* freeing NULL is a no-op */
  im_track_close(NULL);
  im_track_experiment_free(NULL);
  im_track_experiment_list_free(NULL);
  im_track_run_free(NULL);
  im_track_run_list_free(NULL);
  im_track_metric_list_free(NULL);
  im_track_model_free(NULL);
  im_track_model_list_free(NULL);
  im_track_model_version_free(NULL);
  im_track_model_version_list_free(NULL);
  im_track_uri_free(NULL);
  assert_string_equal(im_track_status_to_error_code(IM_ERR_EXISTS), "RESOURCE_ALREADY_EXISTS");
  assert_string_equal(im_track_status_to_error_code(IM_ERR_ARG), "INVALID_PARAMETER_VALUE");
  assert_string_equal(im_track_status_to_error_code(IM_ERR_STATE), "INVALID_STATE");
  assert_string_equal(im_track_status_to_error_code(IM_ERR_IO), "INTERNAL_ERROR");
}

static void test_open_env_and_artifact_root(void **state) {
  const char *dir = tu_tmpdir();
  setenv("IMOPS_HOME", dir, 1);
  setenv("IMOPS_ARTIFACT_ROOT", "s3://bucket/prefix/", 1);
  im_track_store_t *s = NULL;
  OK(im_track_open(NULL, &s));
  unsetenv("IMOPS_HOME");
  unsetenv("IMOPS_ARTIFACT_ROOT");
  assert_string_equal(im_track_artifact_root(s), "s3://bucket/prefix");
  char *id = NULL;
  OK(im_track_experiment_create(s, "on-s3", NULL, NULL, 0, &id));
  im_track_experiment_t *e = NULL;
  OK(im_track_experiment_get(s, id, &e));
  char want[64];
  snprintf(want, sizeof want, "s3://bucket/prefix/%s", id);
  assert_string_equal(e->artifact_location, want);
  im_track_experiment_free(e);
  char *run = new_run(s, id, "r");
  im_track_run_t *r = NULL;
  OK(im_track_run_get(s, run, &r));
  char wantr[128];
  snprintf(wantr, sizeof wantr, "s3://bucket/prefix/%s/%s/artifacts", id, run);
  assert_string_equal(r->artifact_uri, wantr);
  im_track_run_free(r);
  /* the server's proxied root: no doubled slash */
  OK(im_track_set_artifact_root(s, "mlflow-artifacts:/"));
  assert_string_equal(im_track_artifact_root(s), "mlflow-artifacts:/");
  char *id3 = NULL;
  OK(im_track_experiment_create(s, "proxied", NULL, NULL, 0, &id3));
  char *run3 = new_run(s, id3, "p");
  OK(im_track_run_get(s, run3, &r));
  snprintf(wantr, sizeof wantr, "mlflow-artifacts:/%s/%s/artifacts", id3, run3);
  assert_string_equal(r->artifact_uri, wantr);
  im_track_run_free(r);
  im_free(run3);
  im_free(id3);
  im_free(run);
  im_free(id);
  im_track_close(s);
}

/* ---- experiments ------------------------------------------------------------------- */
static void test_experiments(void **state) {
  im_track_store_t *s = open_tmp();
  char *id = NULL;
  im_track_kv_t tags[] = {{"team", "vision"}, {"purpose", "cracks"}};
  OK(im_track_experiment_create(s, "surface", NULL, tags, 2, &id));
  assert_string_equal(id, "1");
  char *id2 = NULL;
  OK(im_track_experiment_create(s, "custom-loc", "file:///data/arts", NULL, 0, &id2));
  assert_string_equal(id2, "2");
  /* names are unique */
  assert_int_equal(im_track_experiment_create(s, "surface", NULL, NULL, 0, NULL), IM_ERR_EXISTS);
  assert_string_equal(im_track_error_code(s), "RESOURCE_ALREADY_EXISTS");
  assert_int_equal(im_track_experiment_create(s, "", NULL, NULL, 0, NULL), IM_ERR_ARG);
  assert_string_equal(im_track_error_code(s), "INVALID_PARAMETER_VALUE");

  im_track_experiment_t *e = NULL;
  OK(im_track_experiment_get_by_name(s, "surface", &e));
  assert_string_equal(e->experiment_id, "1");
  assert_int_equal(e->n_tags, 2);
  assert_string_equal(tag_value(e->tags, e->n_tags, "team"), "vision");
  assert_true(e->last_update_time >= e->creation_time);
  im_track_experiment_free(e);
  OK(im_track_experiment_get(s, "2", &e));
  assert_string_equal(e->artifact_location, "file:///data/arts");
  im_track_experiment_free(e);
  assert_int_equal(im_track_experiment_get_by_name(s, "nope", &e), IM_ERR_NOT_FOUND);
  assert_int_equal(im_track_experiment_get(s, "abc", &e), IM_ERR_NOT_FOUND);

  /* tags overwrite */
  OK(im_track_experiment_set_tag(s, "1", "team", "ml"));
  OK(im_track_experiment_get(s, "1", &e));
  assert_string_equal(tag_value(e->tags, e->n_tags, "team"), "ml");
  im_track_experiment_free(e);
  assert_int_equal(im_track_experiment_set_tag(s, "1", "bad key!", "x"), IM_ERR_ARG);

  /* rename */
  OK(im_track_experiment_rename(s, "1", "surface-v2"));
  assert_int_equal(im_track_experiment_rename(s, "1", "custom-loc"), IM_ERR_EXISTS);
  OK(im_track_experiment_get(s, "1", &e));
  assert_string_equal(e->name, "surface-v2");
  im_track_experiment_free(e);

  /* delete takes the runs along; restore brings them back */
  char *run = new_run(s, "1", "r1");
  char *run_kept_deleted = new_run(s, "1", "r2");
  OK(im_track_run_delete(s, run_kept_deleted));
  usleep(5000); /* restore brings back runs deleted at or after the experiment (millisecond times) */
  OK(im_track_experiment_delete(s, "1"));
  OK(im_track_experiment_get(s, "1", &e));
  assert_string_equal(e->lifecycle_stage, "deleted");
  im_track_experiment_free(e);
  im_track_run_t *r = NULL;
  OK(im_track_run_get(s, run, &r));
  assert_string_equal(r->lifecycle_stage, "deleted");
  im_track_run_free(r);
  /* a deleted experiment keeps its name; no runs can start in it */
  assert_int_equal(im_track_experiment_create(s, "surface-v2", NULL, NULL, 0, NULL), IM_ERR_EXISTS);
  im_track_run_create_t c = {.experiment_id = "1"};
  assert_int_equal(im_track_run_create(s, &c, &r), IM_ERR_STATE);
  assert_string_equal(im_track_error_code(s), "INVALID_PARAMETER_VALUE");
  assert_int_equal(im_track_experiment_rename(s, "1", "x"), IM_ERR_STATE);
  assert_int_equal(im_track_experiment_delete(s, "1"), IM_ERR_NOT_FOUND);
  OK(im_track_experiment_restore(s, "1"));
  assert_int_equal(im_track_experiment_restore(s, "1"), IM_ERR_NOT_FOUND);
  OK(im_track_run_get(s, run, &r));
  assert_string_equal(r->lifecycle_stage, "active");
  im_track_run_free(r);
  OK(im_track_run_get(s, run_kept_deleted, &r));
  assert_string_equal(r->lifecycle_stage, "deleted"); /* it was deleted before */
  im_track_run_free(r);

  /* the Default experiment stays */
  assert_int_equal(im_track_experiment_delete(s, "0"), IM_ERR_ARG);
  assert_int_equal(im_track_experiment_delete(s, "77"), IM_ERR_NOT_FOUND);
  im_free(run);
  im_free(run_kept_deleted);
  im_free(id);
  im_free(id2);
  im_track_close(s);
}

/* ---- runs ---------------------------------------------------------------------------- */
static int is_hex32(const char *s) {
  if (strlen(s) != 32) return 0;
  for (int i = 0; i < 32; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
  return 1;
}

static void test_runs(void **state) {
  im_track_store_t *s = open_tmp();
  im_track_kv_t tags[] = {{"mlflow.source.name", "train.c"}, {"phase", "dev"}};
  im_track_run_create_t c = {
      .experiment_id = "0", .run_name = "baseline", .user_id = "ana", .start_time = 1000, .tags = tags, .n_tags = 2};
  im_track_run_t *r = NULL;
  OK(im_track_run_create(s, &c, &r));
  assert_true(is_hex32(r->run_id));
  assert_string_equal(r->run_name, "baseline");
  assert_string_equal(r->experiment_id, "0");
  assert_string_equal(r->user_id, "ana");
  assert_int_equal(r->status, IM_TRACK_RUN_RUNNING);
  assert_int_equal(r->start_time, 1000);
  assert_true(r->end_time == IM_TRACK_NO_TIME);
  assert_string_equal(r->lifecycle_stage, "active");
  assert_string_equal(tag_value(r->tags, r->n_tags, "mlflow.runName"), "baseline");
  assert_string_equal(tag_value(r->tags, r->n_tags, "phase"), "dev");
  char want[4096];
  snprintf(want, sizeof want, "file://%s/artifacts/0/%s/artifacts", im_track_home(s), r->run_id);
  assert_string_equal(r->artifact_uri, want);
  char *parent = im_strdup(r->run_id);
  im_track_run_free(r);

  /* a generated name; a parent run */
  im_track_run_create_t c2 = {.parent_run_id = parent};
  OK(im_track_run_create(s, &c2, &r));
  assert_true(strlen(r->run_name) > 5 && strchr(r->run_name, '-'));
  assert_string_equal(tag_value(r->tags, r->n_tags, "mlflow.parentRunId"), parent);
  assert_true(r->start_time > 0);
  char *child = im_strdup(r->run_id);
  assert_string_not_equal(child, parent);
  im_track_run_free(r);

  /* the name may come from the tag; a different name and tag is an error */
  im_track_kv_t nt[] = {{"mlflow.runName", "from-tag"}};
  im_track_run_create_t c3 = {.tags = nt, .n_tags = 1};
  OK(im_track_run_create(s, &c3, &r));
  assert_string_equal(r->run_name, "from-tag");
  im_track_run_free(r);
  c3.run_name = "other";
  assert_int_equal(im_track_run_create(s, &c3, &r), IM_ERR_ARG);
  assert_non_null(strstr(im_track_errmsg(s), "mlflow.runName"));
  im_track_run_create_t c4 = {.experiment_id = "9"};
  assert_int_equal(im_track_run_create(s, &c4, &r), IM_ERR_NOT_FOUND);

  /* update */
  im_track_run_update_t u = {.status = IM_TRACK_RUN_FINISHED, .end_time = 5000, .run_name = "renamed"};
  OK(im_track_run_update(s, parent, &u, &r));
  assert_int_equal(r->status, IM_TRACK_RUN_FINISHED);
  assert_int_equal(r->end_time, 5000);
  assert_string_equal(r->run_name, "renamed");
  assert_string_equal(tag_value(r->tags, r->n_tags, "mlflow.runName"), "renamed");
  im_track_run_free(r);
  im_track_run_update_t u2 = {.status = 0, .end_time = IM_TRACK_NO_TIME};
  OK(im_track_run_update(s, parent, &u2, NULL));
  OK(im_track_run_get(s, parent, &r));
  assert_int_equal(r->status, IM_TRACK_RUN_FINISHED);
  assert_int_equal(r->end_time, 5000);
  im_track_run_free(r);
  im_track_run_update_t bad = {.status = 9, .end_time = IM_TRACK_NO_TIME};
  assert_int_equal(im_track_run_update(s, parent, &bad, NULL), IM_ERR_ARG);

  /* setting mlflow.runName renames */
  OK(im_track_run_set_tag(s, parent, "mlflow.runName", "via-tag"));
  OK(im_track_run_get(s, parent, &r));
  assert_string_equal(r->run_name, "via-tag");
  im_track_run_free(r);

  /* tags */
  OK(im_track_run_set_tag(s, child, "k", "v1"));
  OK(im_track_run_set_tag(s, child, "k", "v2"));
  OK(im_track_run_get(s, child, &r));
  assert_string_equal(tag_value(r->tags, r->n_tags, "k"), "v2");
  im_track_run_free(r);
  OK(im_track_run_delete_tag(s, child, "k"));
  assert_int_equal(im_track_run_delete_tag(s, child, "k"), IM_ERR_NOT_FOUND);
  assert_string_equal(im_track_error_code(s), "RESOURCE_DOES_NOT_EXIST");

  /* delete / restore; a deleted run takes no writes */
  OK(im_track_run_delete(s, child));
  OK(im_track_run_get(s, child, &r));
  assert_string_equal(r->lifecycle_stage, "deleted");
  im_track_run_free(r);
  assert_int_equal(im_track_log_metric(s, child, "m", 1, 1, 0), IM_ERR_STATE);
  assert_string_equal(im_track_error_code(s), "INVALID_PARAMETER_VALUE");
  assert_int_equal(im_track_log_param(s, child, "p", "1"), IM_ERR_STATE);
  assert_int_equal(im_track_run_set_tag(s, child, "t", "1"), IM_ERR_STATE);
  assert_int_equal(im_track_run_update(s, child, &u2, NULL), IM_ERR_STATE);
  OK(im_track_run_restore(s, child));
  OK(im_track_log_metric(s, child, "m", 1, 1, 0));

  /* unknown runs */
  assert_int_equal(im_track_run_get(s, "0123456789abcdef0123456789abcdef", &r), IM_ERR_NOT_FOUND);
  assert_null(r);
  assert_non_null(strstr(im_track_errmsg(s), "0123456789abcdef0123456789abcdef"));
  assert_int_equal(im_track_log_metric(s, "nope", "m", 1, 1, 0), IM_ERR_NOT_FOUND);
  assert_int_equal(im_track_run_delete(s, "nope"), IM_ERR_NOT_FOUND);

  assert_string_equal(im_track_run_status_name(IM_TRACK_RUN_KILLED), "KILLED");
  assert_null(im_track_run_status_name(0));
  assert_int_equal(im_track_run_status_parse("finished"), IM_TRACK_RUN_FINISHED);
  assert_int_equal(im_track_run_status_parse("2"), IM_TRACK_RUN_SCHEDULED);
  assert_int_equal(im_track_run_status_parse("DONE"), 0);
  im_free(parent);
  im_free(child);
  im_track_close(s);
}

/* ---- params ---------------------------------------------------------------------------- */
static void test_params(void **state) {
  im_track_store_t *s = open_tmp();
  char *run = new_run(s, "0", "p");
  OK(im_track_log_param(s, run, "lr", "0.01"));
  OK(im_track_log_param(s, run, "lr", "0.01")); /* same value: idempotent */
  assert_int_equal(im_track_log_param(s, run, "lr", "0.02"), IM_ERR_ARG);
  assert_string_equal(im_track_error_code(s), "INVALID_PARAMETER_VALUE");
  assert_non_null(strstr(im_track_errmsg(s), "lr"));
  assert_non_null(strstr(im_track_errmsg(s), "0.01"));
  OK(im_track_log_param(s, run, "nested/opt.name-x y", "adam"));
  /* keys and values are validated */
  assert_int_equal(im_track_log_param(s, run, "", "x"), IM_ERR_ARG);
  assert_int_equal(im_track_log_param(s, run, "a$b", "x"), IM_ERR_ARG);
  assert_int_equal(im_track_log_param(s, run, "../up", "x"), IM_ERR_ARG);
  assert_int_equal(im_track_log_param(s, run, "/abs", "x"), IM_ERR_ARG);
  assert_int_equal(im_track_log_param(s, run, "a//b", "x"), IM_ERR_ARG);
  assert_int_equal(im_track_log_param(s, run, "a/./b", "x"), IM_ERR_ARG);
  assert_int_equal(im_track_log_param(s, run, "ok", NULL), IM_ERR_ARG);
  char key[260], *val = malloc(IM_TRACK_MAX_PARAM_VALUE_LEN + 2);
  memset(key, 'k', 250);
  key[250] = '\0';
  OK(im_track_log_param(s, run, key, "x"));
  key[250] = 'k';
  key[251] = '\0';
  assert_int_equal(im_track_log_param(s, run, key, "x"), IM_ERR_ARG);
  assert_non_null(strstr(im_track_errmsg(s), "250"));
  memset(val, 'v', IM_TRACK_MAX_PARAM_VALUE_LEN);
  val[IM_TRACK_MAX_PARAM_VALUE_LEN] = '\0';
  OK(im_track_log_param(s, run, "long", val));
  val[IM_TRACK_MAX_PARAM_VALUE_LEN] = 'v';
  val[IM_TRACK_MAX_PARAM_VALUE_LEN + 1] = '\0';
  assert_int_equal(im_track_log_param(s, run, "toolong", val), IM_ERR_ARG);
  assert_non_null(strstr(im_track_errmsg(s), "6000"));
  free(val);
  im_track_run_t *r = NULL;
  OK(im_track_run_get(s, run, &r));
  assert_int_equal(r->n_params, 4);
  assert_string_equal(tag_value(r->params, r->n_params, "lr"), "0.01");
  assert_string_equal(tag_value(r->params, r->n_params, "nested/opt.name-x y"), "adam");
  im_track_run_free(r);
  im_free(run);
  im_track_close(s);
}

/* ---- metrics --------------------------------------------------------------------------- */
static void test_metric_history_and_latest(void **state) {
  im_track_store_t *s = open_tmp();
  char *run = new_run(s, "0", "m");
  /* logged out of order: history comes back by timestamp, then step */
  OK(im_track_log_metric(s, run, "loss", 0.5, 2000, 1));
  OK(im_track_log_metric(s, run, "loss", 0.9, 1000, 0));
  OK(im_track_log_metric(s, run, "loss", 0.3, 3000, 2));
  OK(im_track_log_metric(s, run, "loss", 0.4, 2000, 3));
  OK(im_track_log_metric(s, run, "loss", 0.3, 3000, 2)); /* exact duplicate: ignored */
  im_track_metric_list_t *h = NULL;
  OK(im_track_get_metric_history(s, run, "loss", 0, NULL, &h));
  assert_int_equal(h->n, 4);
  assert_null(h->next_page_token);
  const double want_v[] = {0.9, 0.5, 0.4, 0.3};
  const int64_t want_ts[] = {1000, 2000, 2000, 3000}, want_step[] = {0, 1, 3, 2};
  for (int i = 0; i < 4; i++) {
    assert_string_equal(h->items[i].key, "loss");
    assert_true(h->items[i].value == want_v[i]);
    assert_int_equal(h->items[i].timestamp, want_ts[i]);
    assert_int_equal(h->items[i].step, want_step[i]);
  }
  im_track_metric_list_free(h);
  /* paging through the history */
  OK(im_track_get_metric_history(s, run, "loss", 3, NULL, &h));
  assert_int_equal(h->n, 3);
  assert_non_null(h->next_page_token);
  im_track_metric_list_t *h2 = NULL;
  OK(im_track_get_metric_history(s, run, "loss", 3, h->next_page_token, &h2));
  assert_int_equal(h2->n, 1);
  assert_true(h2->items[0].value == 0.3);
  assert_null(h2->next_page_token);
  im_track_metric_list_free(h);
  im_track_metric_list_free(h2);
  assert_int_equal(im_track_get_metric_history(s, run, "loss", 3, "garbage!", &h), IM_ERR_ARG);
  OK(im_track_get_metric_history(s, run, "never", 0, NULL, &h));
  assert_int_equal(h->n, 0);
  im_track_metric_list_free(h);
  assert_int_equal(im_track_get_metric_history(s, "nope", "loss", 0, NULL, &h), IM_ERR_NOT_FOUND);

  /* latest: the largest step (then timestamp, then value) */
  im_track_run_t *r = NULL;
  OK(im_track_run_get(s, run, &r));
  const im_track_metric_t *m = metric_of(r, "loss");
  assert_non_null(m);
  assert_int_equal(m->step, 3);
  assert_true(m->value == 0.4);
  im_track_run_free(r);
  /* same step: the latest timestamp wins, even when logged earlier */
  OK(im_track_log_metric(s, run, "acc", 0.7, 5000, 0));
  OK(im_track_log_metric(s, run, "acc", 0.8, 4000, 0));
  OK(im_track_run_get(s, run, &r));
  m = metric_of(r, "acc");
  assert_true(m->value == 0.7);
  assert_int_equal(m->timestamp, 5000);
  im_track_run_free(r);
  /* same step and timestamp: the larger value wins whatever the order */
  OK(im_track_log_metric(s, run, "acc", 0.95, 5000, 0));
  OK(im_track_log_metric(s, run, "acc", 0.75, 5000, 0));
  OK(im_track_run_get(s, run, &r));
  assert_true(metric_of(r, "acc")->value == 0.95);
  im_track_run_free(r);

  /* NaN and infinities round-trip (history and latest) */
  OK(im_track_log_metric(s, run, "nan", NAN, 10, 0));
  OK(im_track_log_metric(s, run, "pinf", INFINITY, 10, 0));
  OK(im_track_log_metric(s, run, "ninf", -INFINITY, 10, 0));
  OK(im_track_log_metric(s, run, "nan", NAN, 10, 0)); /* duplicate NaN: ignored too */
  OK(im_track_get_metric_history(s, run, "nan", 0, NULL, &h));
  assert_int_equal(h->n, 1);
  assert_true(isnan(h->items[0].value));
  im_track_metric_list_free(h);
  OK(im_track_get_metric_history(s, run, "ninf", 0, NULL, &h));
  assert_true(isinf(h->items[0].value) && h->items[0].value < 0);
  im_track_metric_list_free(h);
  OK(im_track_run_get(s, run, &r));
  assert_true(isnan(metric_of(r, "nan")->value));
  assert_true(isinf(metric_of(r, "pinf")->value) && metric_of(r, "pinf")->value > 0);
  assert_true(isinf(metric_of(r, "ninf")->value) && metric_of(r, "ninf")->value < 0);
  im_track_run_free(r);
  /* a number at the same step and time beats NaN; a later NaN is the latest */
  OK(im_track_log_metric(s, run, "nan", 1.5, 10, 0));
  OK(im_track_run_get(s, run, &r));
  assert_true(metric_of(r, "nan")->value == 1.5);
  im_track_run_free(r);
  OK(im_track_log_metric(s, run, "nan", NAN, 11, 0));
  OK(im_track_run_get(s, run, &r));
  assert_true(isnan(metric_of(r, "nan")->value));
  im_track_run_free(r);

  /* bad input */
  assert_int_equal(im_track_log_metric(s, run, "bad key?", 1, 1, 0), IM_ERR_ARG);
  assert_int_equal(im_track_log_metric(s, run, "neg", 1, -5, 0), IM_ERR_ARG);
  assert_non_null(strstr(im_track_errmsg(s), "timestamp"));
  OK(im_track_log_metric(s, run, "negstep", 1, 5, -3)); /* steps may be negative */
  OK(im_track_log_metric(s, run, "big", 1e308, 5, INT64_MAX));
  im_free(run);
  im_track_close(s);
}

/* ---- log_batch -------------------------------------------------------------------------- */
static void test_log_batch(void **state) {
  im_track_store_t *s = open_tmp();
  char *run = new_run(s, "0", "b");
  im_track_metric_in_t ms[3] = {{"a", 1, 100, 0}, {"a", 2, 200, 1}, {"b", NAN, 100, 0}};
  im_track_kv_t ps[2] = {{"lr", "0.1"}, {"opt", "sgd"}};
  im_track_kv_t ts[1] = {{"note", "first"}};
  OK(im_track_log_batch(s, run, ms, 3, ps, 2, ts, 1));
  OK(im_track_log_batch(s, run, ms, 3, ps, 2, ts, 1)); /* a retried batch is fine */
  im_track_metric_list_t *h = NULL;
  OK(im_track_get_metric_history(s, run, "a", 0, NULL, &h));
  assert_int_equal(h->n, 2);
  im_track_metric_list_free(h);
  OK(im_track_log_batch(s, run, NULL, 0, NULL, 0, NULL, 0)); /* empty */

  /* a conflicting param fails the whole batch: nothing of it is written */
  im_track_metric_in_t m2[1] = {{"c", 3, 300, 0}};
  im_track_kv_t p2[2] = {{"new", "x"}, {"lr", "0.2"}};
  im_track_kv_t t2[1] = {{"note", "second"}};
  assert_int_equal(im_track_log_batch(s, run, m2, 1, p2, 2, t2, 1), IM_ERR_ARG);
  assert_string_equal(im_track_error_code(s), "INVALID_PARAMETER_VALUE");
  im_track_run_t *r = NULL;
  OK(im_track_run_get(s, run, &r));
  assert_null(metric_of(r, "c"));
  assert_null(tag_value(r->params, r->n_params, "new"));
  assert_string_equal(tag_value(r->tags, r->n_tags, "note"), "first");
  assert_int_equal(r->n_params, 2);
  assert_true(isnan(metric_of(r, "b")->value));
  im_track_run_free(r);

  /* limits */
  im_track_metric_in_t *many = calloc(1001, sizeof *many);
  for (int i = 0; i < 1001; i++) many[i] = (im_track_metric_in_t){"m", (double)i, 1000, i};
  OK(im_track_log_batch(s, run, many, 1000, NULL, 0, NULL, 0));
  assert_int_equal(im_track_log_batch(s, run, many, 1001, NULL, 0, NULL, 0), IM_ERR_LIMIT);
  assert_string_equal(im_track_error_code(s), "INVALID_PARAMETER_VALUE");
  assert_non_null(strstr(im_track_errmsg(s), "1000 metrics"));
  im_track_kv_t kv[101];
  char names[101][16];
  for (int i = 0; i < 101; i++) {
    snprintf(names[i], sizeof names[i], "k%d", i);
    kv[i] = (im_track_kv_t){names[i], "v"};
  }
  assert_int_equal(im_track_log_batch(s, run, NULL, 0, kv, 101, NULL, 0), IM_ERR_LIMIT);
  assert_non_null(strstr(im_track_errmsg(s), "100 params"));
  assert_int_equal(im_track_log_batch(s, run, NULL, 0, NULL, 0, kv, 101), IM_ERR_LIMIT);
  assert_non_null(strstr(im_track_errmsg(s), "100 tags"));
  assert_int_equal(im_track_log_batch(s, run, many, 950, kv, 50, kv, 1), IM_ERR_LIMIT);
  assert_non_null(strstr(im_track_errmsg(s), "in total"));
  OK(im_track_log_batch(s, run, many, 900, kv, 50, kv, 50)); /* exactly 1000 */
  /* key, value and duplicate checks */
  im_track_metric_in_t longkey[1] = {{NULL, 1, 1, 0}};
  char key[252];
  memset(key, 'x', 251);
  key[251] = '\0';
  longkey[0].key = key;
  assert_int_equal(im_track_log_batch(s, run, longkey, 1, NULL, 0, NULL, 0), IM_ERR_ARG);
  char *big = malloc(IM_TRACK_MAX_TAG_VALUE_LEN + 2);
  memset(big, 't', IM_TRACK_MAX_TAG_VALUE_LEN + 1);
  big[IM_TRACK_MAX_TAG_VALUE_LEN + 1] = '\0';
  im_track_kv_t bt[1] = {{"big", big}};
  assert_int_equal(im_track_log_batch(s, run, NULL, 0, NULL, 0, bt, 1), IM_ERR_ARG);
  assert_non_null(strstr(im_track_errmsg(s), "8000"));
  big[IM_TRACK_MAX_TAG_VALUE_LEN] = '\0';
  OK(im_track_log_batch(s, run, NULL, 0, NULL, 0, bt, 1));
  free(big);
  im_track_kv_t dup[2] = {{"same", "1"}, {"same", "1"}};
  assert_int_equal(im_track_log_batch(s, run, NULL, 0, dup, 2, NULL, 0), IM_ERR_ARG);
  assert_non_null(strstr(im_track_errmsg(s), "Duplicate"));
  assert_int_equal(im_track_log_batch(s, "nope", ms, 1, NULL, 0, NULL, 0), IM_ERR_NOT_FOUND);
  free(many);
  im_free(run);
  im_track_close(s);
}

/* ---- the registry ------------------------------------------------------------------------- */
static void test_registry(void **state) {
  im_track_store_t *s = open_tmp();
  char *run = new_run(s, "0", "train");
  im_track_kv_t mt[] = {{"owner", "ana"}};
  im_track_model_t *m = NULL;
  OK(im_track_model_create(s, "surface", "crack detector", mt, 1, &m));
  assert_string_equal(m->name, "surface");
  assert_string_equal(m->description, "crack detector");
  assert_int_equal(m->n_tags, 1);
  assert_int_equal(m->n_latest, 0);
  assert_true(m->creation_time > 0);
  im_track_model_free(m);
  assert_int_equal(im_track_model_create(s, "surface", NULL, NULL, 0, NULL), IM_ERR_EXISTS);
  assert_string_equal(im_track_error_code(s), "RESOURCE_ALREADY_EXISTS");
  assert_int_equal(im_track_model_create(s, "", NULL, NULL, 0, NULL), IM_ERR_ARG);
  assert_int_equal(im_track_model_create(s, "a/b", NULL, NULL, 0, NULL), IM_ERR_ARG);

  /* versions count up per model and are never reused */
  char src[128];
  snprintf(src, sizeof src, "runs:/%s/model", run);
  im_track_kv_t vt[] = {{"validated", "yes"}};
  im_track_model_version_create_t vc = {
      .name = "surface", .source = src, .run_id = run, .description = "first", .tags = vt, .n_tags = 1};
  im_track_model_version_t *v = NULL;
  OK(im_track_model_version_create(s, &vc, &v));
  assert_int_equal(v->version, 1);
  assert_string_equal(v->current_stage, "None");
  assert_string_equal(v->status, "READY");
  assert_string_equal(v->source, src);
  assert_string_equal(v->run_id, run);
  assert_string_equal(v->description, "first");
  assert_string_equal(tag_value(v->tags, v->n_tags, "validated"), "yes");
  im_track_model_version_free(v);
  im_track_model_version_create_t vc2 = {.name = "surface", .source = "s3://models/surface/2"};
  OK(im_track_model_version_create(s, &vc2, &v));
  assert_int_equal(v->version, 2);
  assert_string_equal(v->run_id, "");
  im_track_model_version_free(v);
  OK(im_track_model_version_create(s, &vc2, &v));
  assert_int_equal(v->version, 3);
  im_track_model_version_free(v);
  OK(im_track_model_version_delete(s, "surface", 3));
  assert_int_equal(im_track_model_version_get(s, "surface", 3, &v), IM_ERR_NOT_FOUND);
  OK(im_track_model_version_create(s, &vc2, &v));
  assert_int_equal(v->version, 4);
  im_track_model_version_free(v);
  im_track_model_version_create_t nosrc = {.name = "surface"};
  assert_int_equal(im_track_model_version_create(s, &nosrc, &v), IM_ERR_ARG);
  im_track_model_version_create_t nomodel = {.name = "ghost", .source = "x"};
  assert_int_equal(im_track_model_version_create(s, &nomodel, &v), IM_ERR_NOT_FOUND);
  assert_string_equal(im_track_error_code(s), "RESOURCE_DOES_NOT_EXIST");

  /* aliases: set, move, resolve, delete */
  OK(im_track_model_set_alias(s, "surface", "champion", 1));
  OK(im_track_model_set_alias(s, "surface", "challenger", 2));
  OK(im_track_model_version_get_by_alias(s, "surface", "champion", &v));
  assert_int_equal(v->version, 1);
  assert_int_equal(v->n_aliases, 1);
  assert_string_equal(v->aliases[0], "champion");
  im_track_model_version_free(v);
  OK(im_track_model_set_alias(s, "surface", "champion", 4)); /* moves */
  OK(im_track_model_version_get_by_alias(s, "surface", "champion", &v));
  assert_int_equal(v->version, 4);
  im_track_model_version_free(v);
  OK(im_track_model_version_get(s, "surface", 1, &v));
  assert_int_equal(v->n_aliases, 0);
  im_track_model_version_free(v);
  assert_int_equal(im_track_model_set_alias(s, "surface", "x", 99), IM_ERR_NOT_FOUND);
  assert_int_equal(im_track_model_set_alias(s, "surface", "latest", 1), IM_ERR_ARG);
  assert_int_equal(im_track_model_set_alias(s, "surface", "v3", 1), IM_ERR_ARG);
  assert_int_equal(im_track_model_set_alias(s, "surface", "has space", 1), IM_ERR_ARG);
  OK(im_track_model_set_alias(s, "surface", "v3-candidate", 1));
  OK(im_track_model_delete_alias(s, "surface", "challenger"));
  assert_int_equal(im_track_model_version_get_by_alias(s, "surface", "challenger", &v), IM_ERR_NOT_FOUND);
  assert_non_null(strstr(im_track_errmsg(s), "challenger"));
  OK(im_track_model_get(s, "surface", &m));
  assert_int_equal(m->n_aliases, 2);
  assert_string_equal(m->aliases[0].alias, "champion");
  assert_int_equal(m->aliases[0].version, 4);
  im_track_model_free(m);

  /* stages: archive_existing moves the others in the target stage to Archived */
  OK(im_track_model_version_transition_stage(s, "surface", 1, "production", 0, &v));
  assert_string_equal(v->current_stage, "Production");
  im_track_model_version_free(v);
  OK(im_track_model_version_transition_stage(s, "surface", 2, "Production", 0, NULL));
  OK(im_track_model_version_transition_stage(s, "surface", 4, "Production", 1, &v));
  assert_string_equal(v->current_stage, "Production");
  im_track_model_version_free(v);
  OK(im_track_model_version_get(s, "surface", 1, &v));
  assert_string_equal(v->current_stage, "Archived");
  im_track_model_version_free(v);
  OK(im_track_model_version_get(s, "surface", 2, &v));
  assert_string_equal(v->current_stage, "Archived");
  im_track_model_version_free(v);
  assert_int_equal(im_track_model_version_transition_stage(s, "surface", 2, "Gold", 0, NULL), IM_ERR_ARG);
  assert_int_equal(im_track_model_version_transition_stage(s, "surface", 2, "None", 1, NULL), IM_ERR_ARG);
  assert_int_equal(im_track_model_version_transition_stage(s, "surface", 9, "None", 0, NULL), IM_ERR_NOT_FOUND);
  OK(im_track_model_version_transition_stage(s, "surface", 2, "Staging", 1, NULL));
  im_track_model_version_list_t *lv = NULL;
  const char *prod[] = {"production"};
  OK(im_track_model_latest_versions(s, "surface", prod, 1, &lv));
  assert_int_equal(lv->n, 1);
  assert_int_equal(lv->items[0].version, 4);
  im_track_model_version_list_free(lv);
  OK(im_track_model_latest_versions(s, "surface", NULL, 0, &lv));
  assert_int_equal(lv->n, 3); /* Staging 2, Production 4, Archived 1 */
  assert_string_equal(lv->items[0].current_stage, "Staging");
  assert_string_equal(lv->items[1].current_stage, "Production");
  assert_string_equal(lv->items[2].current_stage, "Archived");
  im_track_model_version_list_free(lv);
  const char *badst[] = {"Nope"};
  assert_int_equal(im_track_model_latest_versions(s, "surface", badst, 1, &lv), IM_ERR_ARG);
  OK(im_track_model_get(s, "surface", &m));
  assert_int_equal(m->n_latest, 3);
  im_track_model_free(m);

  /* updates and tags */
  OK(im_track_model_version_update(s, "surface", 4, "the best", &v));
  assert_string_equal(v->description, "the best");
  im_track_model_version_free(v);
  OK(im_track_model_version_set_tag(s, "surface", 4, "k", "v"));
  OK(im_track_model_version_get(s, "surface", 4, &v));
  assert_string_equal(tag_value(v->tags, v->n_tags, "k"), "v");
  im_track_model_version_free(v);
  OK(im_track_model_version_delete_tag(s, "surface", 4, "k"));
  OK(im_track_model_version_get(s, "surface", 4, &v));
  assert_int_equal(v->n_tags, 0);
  im_track_model_version_free(v);
  OK(im_track_model_update(s, "surface", "updated", &m));
  assert_string_equal(m->description, "updated");
  im_track_model_free(m);
  OK(im_track_model_set_tag(s, "surface", "owner", "bo"));
  OK(im_track_model_set_tag(s, "surface", "extra", "1"));
  OK(im_track_model_delete_tag(s, "surface", "extra"));
  OK(im_track_model_get(s, "surface", &m));
  assert_int_equal(m->n_tags, 1);
  assert_string_equal(m->tags[0].value, "bo");
  im_track_model_free(m);

  /* rename keeps versions and aliases */
  OK(im_track_model_create(s, "other", NULL, NULL, 0, NULL));
  assert_int_equal(im_track_model_rename(s, "surface", "other", NULL), IM_ERR_EXISTS);
  OK(im_track_model_rename(s, "surface", "surface-v2", &m));
  assert_string_equal(m->name, "surface-v2");
  im_track_model_free(m);
  assert_int_equal(im_track_model_get(s, "surface", &m), IM_ERR_NOT_FOUND);
  OK(im_track_model_version_get_by_alias(s, "surface-v2", "champion", &v));
  assert_int_equal(v->version, 4);
  assert_string_equal(v->name, "surface-v2");
  im_track_model_version_free(v);

  /* deleting a version drops its aliases; deleting a model drops everything */
  OK(im_track_model_version_delete(s, "surface-v2", 4));
  assert_int_equal(im_track_model_version_get_by_alias(s, "surface-v2", "champion", &v), IM_ERR_NOT_FOUND);
  OK(im_track_model_delete(s, "surface-v2"));
  assert_int_equal(im_track_model_get(s, "surface-v2", &m), IM_ERR_NOT_FOUND);
  assert_int_equal(im_track_model_version_get(s, "surface-v2", 1, &v), IM_ERR_NOT_FOUND);
  assert_int_equal(im_track_model_delete(s, "surface-v2"), IM_ERR_NOT_FOUND);
  /* a new model of the old name starts at version 1 again */
  OK(im_track_model_create(s, "surface-v2", NULL, NULL, 0, NULL));
  im_track_model_version_create_t vc3 = {.name = "surface-v2", .source = "/models/x"};
  OK(im_track_model_version_create(s, &vc3, &v));
  assert_int_equal(v->version, 1);
  im_track_model_version_free(v);
  im_free(run);
  im_track_close(s);
}

/* ---- model URIs ---------------------------------------------------------------------------- */
static void test_uri_parse(void **state) {
  im_track_uri_t *u = NULL;
  OK(im_track_uri_parse("runs:/abc123/model", &u));
  assert_int_equal(u->kind, IM_TRACK_URI_RUNS);
  assert_string_equal(u->run_id, "abc123");
  assert_string_equal(u->path, "model");
  im_track_uri_free(u);
  OK(im_track_uri_parse("runs:/abc123", &u));
  assert_string_equal(u->path, "");
  im_track_uri_free(u);
  OK(im_track_uri_parse("models:/surface/3", &u));
  assert_int_equal(u->kind, IM_TRACK_URI_MODELS);
  assert_string_equal(u->name, "surface");
  assert_int_equal(u->version, 3);
  im_track_uri_free(u);
  OK(im_track_uri_parse("models:/surface@champion", &u));
  assert_string_equal(u->name, "surface");
  assert_string_equal(u->alias, "champion");
  im_track_uri_free(u);
  OK(im_track_uri_parse("models:/surface/staging", &u));
  assert_string_equal(u->stage, "Staging");
  im_track_uri_free(u);
  OK(im_track_uri_parse("models:/surface/Latest", &u));
  assert_string_equal(u->stage, "latest");
  im_track_uri_free(u);
  OK(im_track_uri_parse("s3://bucket/path/to/model", &u));
  assert_int_equal(u->kind, IM_TRACK_URI_S3);
  assert_string_equal(u->location, "s3://bucket/path/to/model");
  assert_int_equal(u->is_local, 0);
  im_track_uri_free(u);
  OK(im_track_uri_parse("file:///tmp/my%20model", &u));
  assert_int_equal(u->kind, IM_TRACK_URI_FILE);
  assert_string_equal(u->location, "/tmp/my model");
  assert_int_equal(u->is_local, 1);
  im_track_uri_free(u);
  OK(im_track_uri_parse("file://localhost/srv/m", &u));
  assert_string_equal(u->location, "/srv/m");
  im_track_uri_free(u);
  OK(im_track_uri_parse("models/bundle", &u));
  assert_int_equal(u->kind, IM_TRACK_URI_PATH);
  assert_string_equal(u->location, "models/bundle");
  assert_int_equal(u->is_local, 1);
  im_track_uri_free(u);
  OK(im_track_uri_parse("mlflow-artifacts:/0/abc/artifacts/model", &u));
  assert_int_equal(u->kind, IM_TRACK_URI_OTHER);
  assert_int_equal(u->is_local, 0);
  im_track_uri_free(u);
  const char *bad[] = {"",
                       "runs:",
                       "runs:/",
                       "runs:/a b/model",
                       "models:/",
                       "models:/surface",
                       "models:/surface/gold",
                       "models:/surface/1/extra",
                       "models:/@a",
                       "models:/x@",
                       "models:/surface/0",
                       "s3://",
                       "s3:///key",
                       "file://otherhost/x",
                       "file:relative"};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    u = (im_track_uri_t *)(uintptr_t)1;
    assert_int_equal(im_track_uri_parse(bad[i], &u), IM_ERR_ARG);
    assert_null(u);
    assert_true(strlen(im_last_error()) > 0);
  }
}

static void test_uri_resolve(void **state) {
  im_track_store_t *s = open_tmp();
  char *run = new_run(s, "0", "r");
  im_track_run_t *r = NULL;
  OK(im_track_run_get(s, run, &r));
  char want[4096];
  snprintf(want, sizeof want, "%s/artifacts/0/%s/artifacts/model", im_track_home(s), run);
  im_track_run_free(r);
  char uri[256];
  snprintf(uri, sizeof uri, "runs:/%s/model", run);
  im_track_uri_t *u = NULL;
  OK(im_track_resolve_uri(s, uri, &u));
  assert_string_equal(u->location, want);
  assert_int_equal(u->is_local, 1);
  assert_string_equal(u->run_id, run);
  im_track_uri_free(u);

  /* artifacts served by `imops server` from this workspace are local files */
  OK(im_track_resolve_uri(s, "mlflow-artifacts:/0/abc/artifacts/model", &u));
  char served[4096];
  snprintf(served, sizeof served, "%s/artifacts/0/abc/artifacts/model", im_track_home(s));
  assert_string_equal(u->location, served);
  assert_int_equal(u->is_local, 1);
  im_track_uri_free(u);
  assert_int_equal(im_track_resolve_uri(s, "mlflow-artifacts:/0/../../etc", &u), IM_ERR_ARG);

  /* registry forms; version 1's source is a runs:/ URI, resolved through the run */
  OK(im_track_model_create(s, "surface", NULL, NULL, 0, NULL));
  im_track_model_version_create_t v1 = {.name = "surface", .source = uri, .run_id = run};
  im_track_model_version_create_t v2 = {.name = "surface", .source = "s3://models/surface/v2"};
  im_track_model_version_create_t v3 = {.name = "surface", .source = "file:///srv/models/v3"};
  OK(im_track_model_version_create(s, &v1, NULL));
  OK(im_track_model_version_create(s, &v2, NULL));
  OK(im_track_model_version_create(s, &v3, NULL));
  OK(im_track_model_set_alias(s, "surface", "champion", 2));
  OK(im_track_model_version_transition_stage(s, "surface", 1, "Production", 0, NULL));

  OK(im_track_resolve_uri(s, "models:/surface/1", &u));
  assert_string_equal(u->location, want);
  assert_int_equal(u->is_local, 1);
  assert_string_equal(u->name, "surface");
  assert_int_equal(u->version, 1);
  assert_string_equal(u->run_id, run);
  assert_string_equal(u->source, uri);
  im_track_uri_free(u);
  OK(im_track_resolve_uri(s, "models:/surface@champion", &u));
  assert_string_equal(u->location, "s3://models/surface/v2");
  assert_int_equal(u->is_local, 0);
  assert_int_equal(u->version, 2);
  assert_null(u->run_id);
  im_track_uri_free(u);
  OK(im_track_resolve_uri(s, "models:/surface/Production", &u));
  assert_int_equal(u->version, 1);
  assert_string_equal(u->location, want);
  im_track_uri_free(u);
  OK(im_track_resolve_uri(s, "models:/surface/latest", &u));
  assert_int_equal(u->version, 3);
  assert_string_equal(u->location, "/srv/models/v3");
  assert_int_equal(u->is_local, 1);
  im_track_uri_free(u);
  OK(im_track_resolve_uri(s, "s3://b/k", &u));
  assert_string_equal(u->location, "s3://b/k");
  im_track_uri_free(u);
  OK(im_track_resolve_uri(s, "file:///x/y", &u));
  assert_string_equal(u->location, "/x/y");
  im_track_uri_free(u);
  OK(im_track_resolve_uri(s, "./bundle", &u));
  assert_string_equal(u->location, "./bundle");
  im_track_uri_free(u);
  OK(im_track_resolve_uri(NULL, "s3://b/k", &u)); /* no store needed */
  im_track_uri_free(u);
  assert_int_equal(im_track_resolve_uri(NULL, uri, &u), IM_ERR_ARG);

  /* unknown things */
  const char *missing[] = {"runs:/0123456789abcdef0123456789abcdef/model",
                           "models:/ghost/1",
                           "models:/surface/9",
                           "models:/surface@nobody",
                           "models:/surface/Staging",
                           "models:/ghost/latest"};
  for (size_t i = 0; i < sizeof missing / sizeof missing[0]; i++) {
    assert_int_equal(im_track_resolve_uri(s, missing[i], &u), IM_ERR_NOT_FOUND);
    assert_null(u);
    assert_string_equal(im_track_error_code(s), "RESOURCE_DOES_NOT_EXIST");
  }
  assert_non_null(strstr(im_track_errmsg(s), "ghost"));
  OK(im_track_model_create(s, "empty", NULL, NULL, 0, NULL));
  assert_int_equal(im_track_resolve_uri(s, "models:/empty/latest", &u), IM_ERR_NOT_FOUND);
  assert_non_null(strstr(im_track_errmsg(s), "no versions"));
  /* a version whose source names a deleted... unknown run: not found, with the chain in the message */
  im_track_model_version_create_t dangling = {.name = "empty", .source = "runs:/ffffffffffffffffffffffffffffffff/m"};
  OK(im_track_model_version_create(s, &dangling, NULL));
  assert_int_equal(im_track_resolve_uri(s, "models:/empty/1", &u), IM_ERR_NOT_FOUND);
  assert_non_null(strstr(im_track_errmsg(s), "ffffffffffffffffffffffffffffffff"));
  /* a source that loops back on itself */
  OK(im_track_model_create(s, "loop", NULL, NULL, 0, NULL));
  im_track_model_version_create_t loop = {.name = "loop", .source = "models:/loop/1"};
  OK(im_track_model_version_create(s, &loop, NULL));
  assert_int_equal(im_track_resolve_uri(s, "models:/loop/1", &u), IM_ERR_ARG);
  assert_int_equal(im_track_resolve_uri(s, "models:/surface/gold", &u), IM_ERR_ARG);
  im_free(run);
  im_track_close(s);
}

/* ---- migrations ----------------------------------------------------------------------------- */
/* The version-1 schema, frozen here as it shipped (independent of src/track). */
static const char v1_schema[] =
    "CREATE TABLE schema_version (version INTEGER NOT NULL);"
    "CREATE TABLE experiments (experiment_id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE,"
    "  artifact_location TEXT NOT NULL, lifecycle_stage TEXT NOT NULL DEFAULT 'active'"
    "  CHECK (lifecycle_stage IN ('active', 'deleted')), creation_time INTEGER NOT NULL,"
    "  last_update_time INTEGER NOT NULL);"
    "CREATE TABLE experiment_tags (experiment_id INTEGER NOT NULL REFERENCES experiments(experiment_id)"
    "  ON DELETE CASCADE, key TEXT NOT NULL, value TEXT NOT NULL, PRIMARY KEY (experiment_id, key)) WITHOUT ROWID;"
    "CREATE TABLE runs (id INTEGER PRIMARY KEY, run_uuid TEXT NOT NULL UNIQUE, name TEXT NOT NULL DEFAULT '',"
    "  experiment_id INTEGER NOT NULL REFERENCES experiments(experiment_id), user_id TEXT NOT NULL DEFAULT '',"
    "  status TEXT NOT NULL DEFAULT 'RUNNING' CHECK (status IN ('RUNNING', 'SCHEDULED', 'FINISHED', 'FAILED', "
    "'KILLED')),"
    "  start_time INTEGER NOT NULL, end_time INTEGER, artifact_uri TEXT NOT NULL,"
    "  lifecycle_stage TEXT NOT NULL DEFAULT 'active' CHECK (lifecycle_stage IN ('active', 'deleted')),"
    "  deleted_time INTEGER);"
    "CREATE INDEX runs_by_experiment ON runs(experiment_id, start_time);"
    "CREATE TABLE tags (run_pk INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, key TEXT NOT NULL,"
    "  value TEXT NOT NULL, PRIMARY KEY (run_pk, key)) WITHOUT ROWID;"
    "CREATE TABLE params (run_pk INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, key TEXT NOT NULL,"
    "  value TEXT NOT NULL, PRIMARY KEY (run_pk, key)) WITHOUT ROWID;"
    "CREATE TABLE metrics (id INTEGER PRIMARY KEY, run_pk INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    "  key TEXT NOT NULL, value REAL NOT NULL, is_nan INTEGER NOT NULL DEFAULT 0, timestamp INTEGER NOT NULL,"
    "  step INTEGER NOT NULL DEFAULT 0);"
    "CREATE UNIQUE INDEX metrics_unique ON metrics(run_pk, key, timestamp, step, value, is_nan);"
    "CREATE TABLE latest_metrics (run_pk INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE, key TEXT NOT NULL,"
    "  value REAL NOT NULL, is_nan INTEGER NOT NULL DEFAULT 0, timestamp INTEGER NOT NULL,"
    "  step INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (run_pk, key)) WITHOUT ROWID;"
    "CREATE INDEX latest_metrics_by_key ON latest_metrics(key, value);"
    "INSERT INTO schema_version (version) VALUES (1);"
    "INSERT INTO experiments VALUES (0, 'Default', 'file:///old/artifacts/0', 'active', 1, 1);"
    "INSERT INTO experiments VALUES (1, 'legacy', 'file:///old/artifacts/1', 'active', 2, 2);"
    "INSERT INTO experiment_tags VALUES (1, 'team', 'old');"
    "INSERT INTO runs VALUES (1, 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', 'old-run', 1, 'bo', 'FINISHED', 10, 20,"
    "  'file:///old/artifacts/1/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/artifacts', 'active', NULL);"
    "INSERT INTO tags VALUES (1, 'mlflow.runName', 'old-run');"
    "INSERT INTO params VALUES (1, 'lr', '0.1');"
    "INSERT INTO metrics (run_pk, key, value, is_nan, timestamp, step) VALUES (1, 'acc', 0.5, 0, 11, 0),"
    "  (1, 'acc', 0.75, 0, 12, 1);"
    "INSERT INTO latest_metrics VALUES (1, 'acc', 0.75, 0, 12, 1);";

static int64_t sql_int(const char *db_path, const char *sql) {
  sqlite3 *db = NULL;
  assert_int_equal(sqlite3_open_v2(db_path, &db, SQLITE_OPEN_READWRITE, NULL), SQLITE_OK);
  sqlite3_stmt *st = NULL;
  assert_int_equal(sqlite3_prepare_v2(db, sql, -1, &st, NULL), SQLITE_OK);
  int64_t v = -1;
  if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  sqlite3_close(db);
  return v;
}

static void make_db(const char *path, const char *sql) {
  sqlite3 *db = NULL;
  assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
  char *err = NULL;
  int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
  if (rc != SQLITE_OK) fail_msg("fixture SQL: %s", err);
  sqlite3_close(db);
}

static void test_migration_from_v1(void **state) {
  const char *dir = tu_tmpdir();
  const char *db = tu_path(dir, "imops.db");
  make_db(db, v1_schema);
  assert_int_equal(sql_int(db, "SELECT version FROM schema_version"), 1);

  im_track_store_t *s = NULL;
  OK(im_track_open(dir, &s));
  assert_int_equal(im_track_schema_version(s), IM_TRACK_SCHEMA_VERSION);
  /* the old data survived */
  im_track_run_t *r = NULL;
  OK(im_track_run_get(s, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", &r));
  assert_string_equal(r->run_name, "old-run");
  assert_string_equal(r->experiment_id, "1");
  assert_int_equal(r->status, IM_TRACK_RUN_FINISHED);
  assert_int_equal(r->end_time, 20);
  assert_string_equal(tag_value(r->params, r->n_params, "lr"), "0.1");
  assert_true(metric_of(r, "acc")->value == 0.75);
  im_track_run_free(r);
  im_track_metric_list_t *h = NULL;
  OK(im_track_get_metric_history(s, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "acc", 0, NULL, &h));
  assert_int_equal(h->n, 2);
  im_track_metric_list_free(h);
  im_track_experiment_t *e = NULL;
  OK(im_track_experiment_get_by_name(s, "legacy", &e));
  assert_string_equal(tag_value(e->tags, e->n_tags, "team"), "old");
  im_track_experiment_free(e);
  OK(im_track_experiment_get(s, "0", &e));
  assert_string_equal(e->artifact_location, "file:///old/artifacts/0"); /* untouched */
  im_track_experiment_free(e);
  /* the new parts work: the registry, and old runs take new writes */
  OK(im_track_model_create(s, "after-migration", NULL, NULL, 0, NULL));
  im_track_model_version_create_t vc = {.name = "after-migration",
                                        .source = "runs:/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa/model"};
  OK(im_track_model_version_create(s, &vc, NULL));
  OK(im_track_log_metric(s, "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", "acc", 0.8, 13, 2));
  char *id = NULL;
  OK(im_track_experiment_create(s, "new", NULL, NULL, 0, &id));
  assert_string_equal(id, "2");
  im_free(id);
  im_track_close(s);
  assert_int_equal(sql_int(db, "SELECT version FROM schema_version"), IM_TRACK_SCHEMA_VERSION);
  assert_int_equal(sql_int(db, "SELECT count(*) FROM schema_version"), 1);
  assert_int_equal(sql_int(db,
                           "SELECT count(*) FROM sqlite_master WHERE name IN ('sweeps', 'sweep_trials', "
                           "'sweep_agents', 'pipeline_runs', 'pipeline_steps', 'registered_models', "
                           "'model_versions', 'registered_model_aliases')"),
                   8);
  assert_int_equal(sql_int(db, "SELECT count(*) FROM metrics"), 3);
  /* reopening a current database changes nothing */
  OK(im_track_open(dir, &s));
  im_track_close(s);
  assert_int_equal(sql_int(db, "SELECT version FROM schema_version"), IM_TRACK_SCHEMA_VERSION);
}

static void test_schema_guards(void **state) {
  /* a database from a newer imops is refused, not damaged */
  const char *dir = tu_tmpdir();
  const char *db = tu_path(dir, "imops.db");
  make_db(db, "CREATE TABLE schema_version (version INTEGER NOT NULL); INSERT INTO schema_version VALUES (99);");
  im_track_store_t *s = (im_track_store_t *)(uintptr_t)1;
  assert_int_equal(im_track_open(dir, &s), IM_ERR_UNSUPPORTED);
  assert_null(s);
  assert_non_null(strstr(im_last_error(), "99"));
  assert_int_equal(sql_int(db, "SELECT version FROM schema_version"), 99);
  /* some other SQLite file is not taken over */
  const char *dir2 = tu_tmpdir();
  const char *other = tu_path(dir2, "other.db");
  make_db(other, "CREATE TABLE t (x); INSERT INTO t VALUES (1);");
  assert_int_equal(im_track_open(other, &s), IM_ERR_FORMAT);
  assert_non_null(strstr(im_last_error(), "not an imops store"));
  /* not a database at all */
  const char *junk = tu_path(dir2, "junk.db");
  const char *text = "this is not sqlite, just text that is long enough to look like a header";
  assert_int_equal(tu_write_file(junk, text, strlen(text)), 0);
  assert_int_not_equal(im_track_open(junk, &s), IM_OK);
  assert_null(s);
  /* the sweep and pipeline tables take real rows */
  const char *dir3 = tu_tmpdir();
  OK(im_track_open(dir3, &s));
  im_track_close(s);
  const char *db3 = tu_path(dir3, "imops.db");
  make_db(db3,
          "INSERT INTO sweeps (sweep_id, config, method, state, creation_time, last_update_time) "
          "VALUES ('sw1', '{\"method\":\"grid\"}', 'grid', 'RUNNING', 1, 1);"
          "INSERT INTO sweep_trials (sweep_id, trial, params) VALUES ('sw1', 0, '{\"lr\":0.1}'), ('sw1', 1, '{}');"
          "UPDATE sweep_trials SET state = 'CLAIMED', agent_id = 'a1' WHERE sweep_id = 'sw1' AND trial = "
          "(SELECT min(trial) FROM sweep_trials WHERE sweep_id = 'sw1' AND state = 'PENDING');"
          "INSERT INTO pipeline_runs (pipeline_run_id, pipeline_name, creation_time) VALUES ('p1', 'surface', 1);"
          "INSERT INTO pipeline_steps (pipeline_run_id, step_name, status) VALUES ('p1', 'train', 'RUNNING');");
  assert_int_equal(sql_int(db3, "SELECT count(*) FROM sweep_trials WHERE state = 'CLAIMED'"), 1);
  assert_int_equal(sql_int(db3, "SELECT count(*) FROM pipeline_steps"), 1);
}

/* ---- allocation failures: every error path frees what it took ------------------------------- */
static void test_allocation_failures(void **state) {
  const char *home = tu_tmpdir();
  im_track_store_t *s = NULL;
  /* opening */
  int64_t base = im_alloc_live_bytes();
  for (int k = 1; k < 40; k++) {
    im_alloc_fail_after(k);
    im_status_t st = im_track_open(home, &s);
    im_alloc_fail_after(0);
    if (st == IM_OK) {
      im_track_close(s);
    } else {
      assert_int_equal(st, IM_ERR_NOMEM);
      assert_null(s);
    }
    assert_int_equal(im_alloc_live_bytes(), base);
  }
  OK(im_track_open(home, &s));
  char *run = new_run(s, "0", "alloc");
  OK(im_track_log_metric(s, run, "m", 1, 1, 0));
  OK(im_track_log_param(s, run, "p", "v"));
  OK(im_track_run_set_tag(s, run, "t", "v"));
  OK(im_track_model_create(s, "m", NULL, NULL, 0, NULL));
  char src[64];
  snprintf(src, sizeof src, "runs:/%s/model", run);
  im_track_model_version_create_t vc = {.name = "m", .source = src};
  OK(im_track_model_version_create(s, &vc, NULL));
  OK(im_track_model_set_alias(s, "m", "champion", 1));
  base = im_alloc_live_bytes();
  for (int k = 1; k < 60; k++) {
    im_track_search_t q = {.filter = "metrics.m > 0 and params.p = 'v' and tags.t LIKE 'v%'",
                           .order_by = (const char *const[]){"metrics.m DESC"},
                           .n_order_by = 1};
    im_track_run_list_t *l = NULL;
    im_track_run_t *r = NULL;
    im_track_model_t *m = NULL;
    im_track_uri_t *u = NULL;
    im_track_metric_list_t *h = NULL;
    im_track_experiment_list_t *el = NULL;
    im_track_model_version_list_t *vl = NULL;
    im_alloc_fail_after(k);
    im_status_t st[7];
    st[0] = im_track_run_search(s, NULL, 0, 0, &q, &l);
    im_alloc_fail_after(k);
    st[1] = im_track_run_get(s, run, &r);
    im_alloc_fail_after(k);
    st[2] = im_track_model_get(s, "m", &m);
    im_alloc_fail_after(k);
    st[3] = im_track_resolve_uri(s, "models:/m@champion", &u);
    im_alloc_fail_after(k);
    st[4] = im_track_get_metric_history(s, run, "m", 0, NULL, &h);
    im_alloc_fail_after(k);
    st[5] = im_track_experiment_search(s, IM_TRACK_ALL, NULL, &el);
    im_alloc_fail_after(k);
    st[6] = im_track_model_version_search(s, NULL, &vl);
    im_alloc_fail_after(0);
    for (int i = 0; i < 7; i++)
      if (st[i] != IM_OK && st[i] != IM_ERR_NOMEM) fail_msg("call %d at k=%d: %s", i, k, im_last_error());
    im_track_run_list_free(l);
    im_track_run_free(r);
    im_track_model_free(m);
    im_track_uri_free(u);
    im_track_metric_list_free(h);
    im_track_experiment_list_free(el);
    im_track_model_version_list_free(vl);
    assert_int_equal(im_alloc_live_bytes(), base);
  }
  /* writes that fail for memory leave nothing half-done */
  for (int k = 1; k < 20; k++) {
    im_track_metric_in_t ms[2] = {{"b", 1, 5, 0}, {"b", 2, 6, 1}};
    im_track_kv_t ps[1] = {{"q", "1"}};
    im_alloc_fail_after(k);
    im_status_t st = im_track_log_batch(s, run, ms, 2, ps, 1, NULL, 0);
    im_alloc_fail_after(0);
    assert_true(st == IM_OK || st == IM_ERR_NOMEM);
  }
  im_track_metric_list_t *h = NULL;
  OK(im_track_get_metric_history(s, run, "b", 0, NULL, &h));
  assert_int_equal(h->n, 2);
  im_track_metric_list_free(h);
  im_free(run);
  im_track_close(s);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_open_and_default_experiment),
      cmocka_unit_test(test_open_env_and_artifact_root),
      cmocka_unit_test(test_experiments),
      cmocka_unit_test(test_runs),
      cmocka_unit_test(test_params),
      cmocka_unit_test(test_metric_history_and_latest),
      cmocka_unit_test(test_log_batch),
      cmocka_unit_test(test_registry),
      cmocka_unit_test(test_uri_parse),
      cmocka_unit_test(test_uri_resolve),
      cmocka_unit_test(test_migration_from_v1),
      cmocka_unit_test(test_schema_guards),
      cmocka_unit_test(test_allocation_failures),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
