/* Unit tests of the tracking store's search: MLflow filter syntax on runs
 * (every comparator on metrics, params, tags and attributes, LIKE/ILIKE,
 * IN/NOT IN, quoting and backticks, AND in any case), order_by with missing
 * values last, paging with page tokens, views, bad filters (IM_ERR_ARG with a
 * message naming the problem), injection attempts, and the experiment,
 * registered model and model version searches. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imops/core.h"
#include "imops/track.h"
#include "testutil.h"

#define OK(x) assert_int_equal((x), IM_OK)

typedef struct {
  im_track_store_t *s;
  char *r1, *r2, *r3, *r4, *r5, *r6; /* alpha-1, alpha-2, beta, gamma (exp 1), delta (exp 2), deleted-run (exp 1) */
} fixture_t;

static char *make_run(im_track_store_t *s, const char *exp, const char *name, int64_t start, int status) {
  im_track_run_create_t c = {.experiment_id = exp, .run_name = name, .user_id = "tester", .start_time = start};
  im_track_run_t *r = NULL;
  OK(im_track_run_create(s, &c, &r));
  char *id = im_strdup(r->run_id);
  im_track_run_free(r);
  if (status) {
    im_track_run_update_t u = {.status = status, .end_time = start + 10};
    OK(im_track_run_update(s, id, &u, NULL));
  }
  return id;
}

static int setup(void **state) {
  fixture_t *f = calloc(1, sizeof *f);
  OK(im_track_open(tu_tmpdir(), &f->s));
  im_track_store_t *s = f->s;
  OK(im_track_experiment_create(s, "search", NULL, NULL, 0, NULL));
  OK(im_track_experiment_create(s, "second", NULL, NULL, 0, NULL));
  f->r1 = make_run(s, "1", "alpha-1", 1000, IM_TRACK_RUN_FINISHED);
  f->r2 = make_run(s, "1", "alpha-2", 2000, IM_TRACK_RUN_FINISHED);
  f->r3 = make_run(s, "1", "beta", 3000, 0);
  f->r4 = make_run(s, "1", "gamma", 4000, IM_TRACK_RUN_FAILED);
  f->r5 = make_run(s, "2", "delta", 5000, 0);
  f->r6 = make_run(s, "1", "deleted-run", 6000, 0);
  OK(im_track_log_metric(s, f->r1, "val_accuracy", 0.95, 1, 0));
  OK(im_track_log_metric(s, f->r1, "loss", 0.1, 1, 0));
  OK(im_track_log_metric(s, f->r1, "my key", 5, 1, 0));
  OK(im_track_log_param(s, f->r1, "optimizer", "adam"));
  OK(im_track_log_param(s, f->r1, "lr", "0.01"));
  OK(im_track_run_set_tag(s, f->r1, "team", "vision"));
  OK(im_track_run_set_tag(s, f->r1, "my-key", "x"));
  OK(im_track_log_metric(s, f->r2, "val_accuracy", 0.85, 1, 0));
  OK(im_track_log_metric(s, f->r2, "loss", 0.2, 1, 0));
  OK(im_track_log_param(s, f->r2, "optimizer", "sgd"));
  OK(im_track_log_param(s, f->r2, "lr", "0.1"));
  OK(im_track_run_set_tag(s, f->r2, "team", "Vision"));
  /* an older value first: search sees the latest only */
  OK(im_track_log_metric(s, f->r3, "val_accuracy", 0.5, 1, 0));
  OK(im_track_log_metric(s, f->r3, "val_accuracy", 0.91, 2, 1));
  OK(im_track_log_param(s, f->r3, "optimizer", "Adam"));
  OK(im_track_run_set_tag(s, f->r3, "team", "ml"));
  OK(im_track_log_param(s, f->r4, "optimizer", "adam"));
  OK(im_track_run_set_tag(s, f->r4, "quote", "it's"));
  OK(im_track_log_metric(s, f->r5, "val_accuracy", 0.99, 1, 0));
  OK(im_track_log_metric(s, f->r6, "val_accuracy", 0.99, 1, 0));
  OK(im_track_run_delete(s, f->r6));
  *state = f;
  return 0;
}

static int teardown(void **state) {
  fixture_t *f = *state;
  im_track_close(f->s);
  im_free(f->r1);
  im_free(f->r2);
  im_free(f->r3);
  im_free(f->r4);
  im_free(f->r5);
  im_free(f->r6);
  free(f);
  return 0;
}

/* The run names of a search, comma-separated, or "ERR:<message>". */
static char result[4096];

static const char *search_ex(fixture_t *f, const char *const *exps, int n_exps, im_track_view_t view,
                             const char *filter, const char *const *order, int n_order, int64_t max, const char *token,
                             char **next) {
  im_track_search_t q = {
      .filter = filter, .order_by = order, .n_order_by = n_order, .max_results = max, .page_token = token};
  im_track_run_list_t *l = NULL;
  im_status_t st = im_track_run_search(f->s, exps, n_exps, view, &q, &l);
  if (st != IM_OK) {
    assert_null(l);
    snprintf(result, sizeof result, "ERR:%s", im_track_errmsg(f->s));
    assert_int_equal(st, IM_ERR_ARG);
    assert_string_equal(im_track_error_code(f->s), "INVALID_PARAMETER_VALUE");
    return result;
  }
  result[0] = '\0';
  size_t o = 0;
  for (int64_t i = 0; i < l->n; i++)
    o += (size_t)snprintf(result + o, sizeof result - o, "%s%s", i ? "," : "", l->items[i].run_name);
  if (next) *next = l->next_page_token ? im_strdup(l->next_page_token) : NULL;
  im_track_run_list_free(l);
  return result;
}

static const char *const exp1[] = {"1"};

static const char *runs(fixture_t *f, const char *filter) {
  return search_ex(f, exp1, 1, IM_TRACK_ACTIVE_ONLY, filter, NULL, 0, 0, NULL, NULL);
}

static const char *ordered(fixture_t *f, const char *filter, const char *o1, const char *o2) {
  const char *order[2] = {o1, o2};
  return search_ex(f, exp1, 1, IM_TRACK_ACTIVE_ONLY, filter, order, o2 ? 2 : 1, 0, NULL, NULL);
}

static void test_metric_comparators(void **state) {
  fixture_t *f = *state;
  assert_string_equal(runs(f, NULL), "gamma,beta,alpha-2,alpha-1"); /* default: start_time DESC */
  assert_string_equal(runs(f, ""), "gamma,beta,alpha-2,alpha-1");
  assert_string_equal(runs(f, "metrics.val_accuracy > 0.9"), "beta,alpha-1");
  assert_string_equal(runs(f, "metrics.val_accuracy = 0.85"), "alpha-2");
  assert_string_equal(runs(f, "metrics.val_accuracy == 0.85"), "alpha-2");
  assert_string_equal(runs(f, "metrics.val_accuracy != 0.85"), "beta,alpha-1"); /* runs without it: out */
  assert_string_equal(runs(f, "metrics.val_accuracy >= 0.91"), "beta,alpha-1");
  assert_string_equal(runs(f, "metrics.val_accuracy < 0.9"), "alpha-2");
  assert_string_equal(runs(f, "metrics.val_accuracy <= 0.91"), "beta,alpha-2");
  assert_string_equal(runs(f, "metrics.val_accuracy < 0.6"), ""); /* beta's 0.5 is history, not latest */
  assert_string_equal(runs(f, "metric.loss<0.15"), "alpha-1");
  assert_string_equal(runs(f, "metrics.loss > -1e3"), "alpha-2,alpha-1");
  assert_string_equal(runs(f, "metrics.`my key` = 5"), "alpha-1");
  assert_string_equal(runs(f, "metrics.\"my key\" >= 5.0"), "alpha-1");
}

static void test_param_tag_comparators(void **state) {
  fixture_t *f = *state;
  assert_string_equal(runs(f, "params.optimizer = 'adam'"), "gamma,alpha-1");
  assert_string_equal(runs(f, "params.optimizer = \"sgd\""), "alpha-2");
  assert_string_equal(runs(f, "params.optimizer != 'adam'"), "beta,alpha-2");
  assert_string_equal(runs(f, "params.optimizer LIKE 'a%'"), "gamma,alpha-1"); /* LIKE is case-sensitive */
  assert_string_equal(runs(f, "params.optimizer ILIKE 'a%'"), "gamma,beta,alpha-1");
  assert_string_equal(runs(f, "params.optimizer like '_gd'"), "alpha-2");
  assert_string_equal(runs(f, "params.optimizer IN ('sgd', 'Adam')"), "beta,alpha-2");
  assert_string_equal(runs(f, "param.optimizer NOT IN ('sgd','Adam')"), "gamma,alpha-1");
  assert_string_equal(runs(f, "parameters.lr = '0.01'"), "alpha-1");
  assert_string_equal(runs(f, "tags.team = 'vision'"), "alpha-1");
  assert_string_equal(runs(f, "tags.team ILIKE 'VISION'"), "alpha-2,alpha-1");
  assert_string_equal(runs(f, "tag.team LIKE '%i%'"), "alpha-2,alpha-1");
  assert_string_equal(runs(f, "tags.mlflow.runName LIKE 'alpha%'"), "alpha-2,alpha-1");
  assert_string_equal(runs(f, "tags.`my-key` = 'x'"), "alpha-1");
  assert_string_equal(runs(f, "tags.\"my-key\" = 'x'"), "alpha-1");
  assert_string_equal(runs(f, "tags.my-key = 'x'"), "alpha-1");
  assert_string_equal(runs(f, "tags.quote = 'it''s'"), "gamma");
  assert_string_equal(runs(f, "tags.quote = \"it's\""), "gamma");
  assert_string_equal(runs(f, "tags.quote LIKE '%''%'"), "gamma");
}

static void test_attributes_and_combinations(void **state) {
  fixture_t *f = *state;
  assert_string_equal(runs(f, "attributes.status = 'FINISHED'"), "alpha-2,alpha-1");
  assert_string_equal(runs(f, "status != 'FINISHED'"), "gamma,beta");
  assert_string_equal(runs(f, "attr.status = 'RUNNING'"), "beta");
  assert_string_equal(runs(f, "run.status IN ('FAILED', 'RUNNING')"), "gamma,beta");
  assert_string_equal(runs(f, "attributes.run_name = 'beta'"), "beta");
  assert_string_equal(runs(f, "run_name ILIKE 'ALPHA%'"), "alpha-2,alpha-1");
  assert_string_equal(runs(f, "`run name` = 'gamma'"), "gamma");
  assert_string_equal(runs(f, "attributes.user_id = 'tester'"), "gamma,beta,alpha-2,alpha-1");
  assert_string_equal(runs(f, "attributes.start_time >= 2000"), "gamma,beta,alpha-2");
  assert_string_equal(runs(f, "attributes.created < 2000"), "alpha-1");
  assert_string_equal(runs(f, "attributes.end_time = 1010"), "alpha-1");
  assert_string_equal(runs(f, "attributes.artifact_uri LIKE '%/artifacts'"), "gamma,beta,alpha-2,alpha-1");
  char filter[256];
  snprintf(filter, sizeof filter, "attributes.run_id IN ('%s', '%s')", f->r1, f->r3);
  assert_string_equal(runs(f, filter), "beta,alpha-1");
  snprintf(filter, sizeof filter, "attributes.run_id NOT IN ('%s', '%s')", f->r1, f->r3);
  assert_string_equal(runs(f, filter), "gamma,alpha-2");
  snprintf(filter, sizeof filter, "run_id = '%s'", f->r2);
  assert_string_equal(runs(f, filter), "alpha-2");
  /* the example, with AND in any case */
  assert_string_equal(runs(f,
                           "metrics.val_accuracy > 0.9 and params.optimizer = 'adam' and "
                           "tags.mlflow.runName LIKE 'alpha%' and attributes.status = 'FINISHED'"),
                      "alpha-1");
  assert_string_equal(runs(f, "metrics.val_accuracy > 0.8 AND params.optimizer = 'adam' And status = 'FINISHED'"),
                      "alpha-1");
  assert_string_equal(runs(f, "  metrics.val_accuracy>0.8\tand\nparams.lr='0.1'  "), "alpha-2");
  assert_string_equal(runs(f, "params.optimizer = 'adam' and params.optimizer = 'sgd'"), "");
}

static void test_experiments_and_views(void **state) {
  fixture_t *f = *state;
  const char *const both[] = {"1", "2"};
  assert_string_equal(search_ex(f, both, 2, 0, "metrics.val_accuracy > 0.9", NULL, 0, 0, NULL, NULL),
                      "delta,beta,alpha-1");
  assert_string_equal(search_ex(f, NULL, 0, 0, "metrics.val_accuracy > 0.98", NULL, 0, 0, NULL, NULL), "delta");
  const char *const none[] = {"77"};
  assert_string_equal(search_ex(f, none, 1, 0, NULL, NULL, 0, 0, NULL, NULL), "");
  const char *const bad[] = {"x"};
  assert_non_null(strstr(search_ex(f, bad, 1, 0, NULL, NULL, 0, 0, NULL, NULL), "invalid experiment id"));
  assert_string_equal(search_ex(f, exp1, 1, IM_TRACK_DELETED_ONLY, NULL, NULL, 0, 0, NULL, NULL), "deleted-run");
  assert_string_equal(search_ex(f, exp1, 1, IM_TRACK_ALL, "metrics.val_accuracy > 0.98", NULL, 0, 0, NULL, NULL),
                      "deleted-run");
  assert_string_equal(
      search_ex(f, exp1, 1, IM_TRACK_ALL, "attributes.lifecycle_stage = 'deleted'", NULL, 0, 0, NULL, NULL),
      "deleted-run");
}

static void test_order_by(void **state) {
  fixture_t *f = *state;
  /* missing values last in both directions */
  assert_string_equal(ordered(f, NULL, "metrics.val_accuracy DESC", NULL), "alpha-1,beta,alpha-2,gamma");
  assert_string_equal(ordered(f, NULL, "metrics.val_accuracy ASC", NULL), "alpha-2,beta,alpha-1,gamma");
  assert_string_equal(ordered(f, NULL, "metrics.val_accuracy", NULL), "alpha-2,beta,alpha-1,gamma");
  /* ties fall back to start_time DESC */
  assert_string_equal(ordered(f, NULL, "params.optimizer ASC", NULL), "beta,gamma,alpha-1,alpha-2");
  assert_string_equal(ordered(f, NULL, "attributes.status ASC", "metrics.loss DESC"), "gamma,alpha-2,alpha-1,beta");
  assert_string_equal(ordered(f, NULL, "attributes.start_time ASC", NULL), "alpha-1,alpha-2,beta,gamma");
  assert_string_equal(ordered(f, NULL, "start_time desc", NULL), "gamma,beta,alpha-2,alpha-1");
  assert_string_equal(ordered(f, NULL, "tags.team DESC", NULL), "alpha-1,beta,alpha-2,gamma");
  assert_string_equal(ordered(f, NULL, "attributes.run_name", NULL), "alpha-1,alpha-2,beta,gamma");
  assert_string_equal(ordered(f, "params.optimizer ILIKE 'a%'", "metrics.`my key` DESC", "run_name DESC"),
                      "alpha-1,gamma,beta");
  assert_non_null(strstr(ordered(f, NULL, "metrics.acc SIDEWAYS", NULL), "expected ASC or DESC"));
  assert_non_null(strstr(ordered(f, NULL, "attributes.color", NULL), "invalid order_by key 'color'"));
  assert_non_null(strstr(ordered(f, NULL, "", NULL), "empty order_by"));
}

static void test_paging(void **state) {
  fixture_t *f = *state;
  char *tok = NULL, *tok2 = NULL, *tok3 = NULL;
  assert_string_equal(search_ex(f, exp1, 1, 0, NULL, NULL, 0, 2, NULL, &tok), "gamma,beta");
  assert_non_null(tok);
  assert_string_equal(tok, "eyJvZmZzZXQiOiAyfQ=="); /* base64 of {"offset": 2}, like MLflow */
  assert_string_equal(search_ex(f, exp1, 1, 0, NULL, NULL, 0, 2, tok, &tok2), "alpha-2,alpha-1");
  assert_null(tok2);
  assert_string_equal(search_ex(f, exp1, 1, 0, NULL, NULL, 0, 3, NULL, &tok3), "gamma,beta,alpha-2");
  im_free(tok3);
  assert_string_equal(search_ex(f, exp1, 1, 0, NULL, NULL, 0, 3, tok, &tok3), "alpha-2,alpha-1");
  assert_null(tok3);
  im_free(tok);
  /* paging follows the order and filter */
  const char *order[] = {"metrics.val_accuracy DESC"};
  assert_string_equal(search_ex(f, exp1, 1, 0, "metrics.val_accuracy > 0", order, 1, 1, NULL, &tok), "alpha-1");
  assert_string_equal(search_ex(f, exp1, 1, 0, "metrics.val_accuracy > 0", order, 1, 1, tok, &tok2), "beta");
  assert_string_equal(search_ex(f, exp1, 1, 0, "metrics.val_accuracy > 0", order, 1, 1, tok2, &tok3), "alpha-2");
  assert_null(tok3);
  im_free(tok);
  im_free(tok2);
  /* bad tokens and limits */
  assert_non_null(strstr(search_ex(f, exp1, 1, 0, NULL, NULL, 0, 2, "%%%", NULL), "invalid page token"));
  assert_non_null(strstr(search_ex(f, exp1, 1, 0, NULL, NULL, 0, 2, "eyJmb28iOiAxfQ==", NULL), "invalid page token"));
  assert_non_null(strstr(search_ex(f, exp1, 1, 0, NULL, NULL, 0, 50001, NULL, NULL), "max_results"));
  assert_non_null(strstr(search_ex(f, exp1, 1, 0, NULL, NULL, 0, -1, NULL, NULL), "max_results"));
  assert_string_equal(search_ex(f, exp1, 1, 0, NULL, NULL, 0, 50000, NULL, NULL), "gamma,beta,alpha-2,alpha-1");
}

static void expect_bad(fixture_t *f, const char *filter, const char *needle) {
  const char *r = runs(f, filter);
  if (strncmp(r, "ERR:", 4) || !strstr(r, needle))
    fail_msg("filter \"%s\": expected an error containing \"%s\", got \"%s\"", filter, needle, r);
}

static void test_bad_filters(void **state) {
  fixture_t *f = *state;
  expect_bad(f, "metrics.acc >> 1", "expected a value");
  expect_bad(f, "metrics.a = 1 or metrics.b = 2", "OR is not supported");
  expect_bad(f, "foo.bar = 'x'", "unknown entity 'foo'");
  expect_bad(f, "metrics.acc = 'high'", "numeric");
  expect_bad(f, "metrics.acc LIKE '1%'", "numeric");
  expect_bad(f, "params.lr > '0.1'", "is a string");
  expect_bad(f, "params.lr = 0.1", "quote the value");
  expect_bad(f, "params.lr = 'unterminated", "unterminated");
  expect_bad(f, "attributes.color = 'red'", "invalid attribute key 'color'");
  expect_bad(f, "attributes.start_time = 'yesterday'", "numeric");
  expect_bad(f, "metrics.acc", "expected a comparator");
  expect_bad(f, "metrics.acc = 1 and", "expected a condition after AND");
  expect_bad(f, "metrics.acc = 1 metrics.b = 2", "expected AND");
  expect_bad(f, "datasets.name = 'x'", "datasets");
  expect_bad(f, "attributes.run_id IN ()", "empty list");
  expect_bad(f, "attributes.run_id IN 'a'", "expected '('");
  expect_bad(f, "attributes.run_id IN ('a' 'b')", "expected ',' or ')'");
  expect_bad(f, "metrics.`` = 1", "empty key");
  expect_bad(f, "metrics. = 1", "expected a name");
  expect_bad(f, "status = FINISHED", "expected a value");
  expect_bad(f, "metrics.acc = 1.2.3", "not a valid number");
  expect_bad(f, "metrics.acc = 1e999", "not a valid number");
  expect_bad(f, "metrics.acc NOT LIKE 'x'", "NOT IN");
  expect_bad(f, "= 1", "expected a key");
  expect_bad(f, "(metrics.a = 1)", "expected a key");
  /* the message says where */
  expect_bad(f, "metrics.acc = 1 and params.x ~ 'y'", "position");
}

static void test_injection_is_inert(void **state) {
  fixture_t *f = *state;
  assert_string_equal(runs(f, "params.optimizer = 'adam'' OR 1=1 --'"), "");
  assert_string_equal(runs(f, "tags.`x') OR 1=1 --` = 'a'"), "");
  assert_string_equal(runs(f, "params.optimizer = 'adam\"; DROP TABLE runs; --'"), "");
  assert_string_equal(runs(f, "attributes.run_id IN ('x'') OR (''1''=''1')"), "");
  assert_string_equal(runs(f, NULL), "gamma,beta,alpha-2,alpha-1"); /* still all there */
}

/* ---- experiments -------------------------------------------------------------------------- */
static const char *exp_search(im_track_store_t *s, im_track_view_t view, const char *filter, const char *order,
                              int64_t max, const char *token, char **next) {
  const char *ord[1] = {order};
  im_track_search_t q = {
      .filter = filter, .order_by = ord, .n_order_by = order ? 1 : 0, .max_results = max, .page_token = token};
  im_track_experiment_list_t *l = NULL;
  if (im_track_experiment_search(s, view, &q, &l) != IM_OK) {
    snprintf(result, sizeof result, "ERR:%s", im_track_errmsg(s));
    return result;
  }
  size_t o = 0;
  result[0] = '\0';
  for (int64_t i = 0; i < l->n; i++)
    o += (size_t)snprintf(result + o, sizeof result - o, "%s%s", i ? "," : "", l->items[i].name);
  if (next) *next = l->next_page_token ? im_strdup(l->next_page_token) : NULL;
  im_track_experiment_list_free(l);
  return result;
}

static void test_experiment_search(void **state) {
  im_track_store_t *s = NULL;
  OK(im_track_open(tu_tmpdir(), &s));
  im_track_kv_t t[] = {{"kind", "cv"}};
  OK(im_track_experiment_create(s, "surface-a", NULL, t, 1, NULL));
  OK(im_track_experiment_create(s, "surface-b", NULL, NULL, 0, NULL));
  OK(im_track_experiment_create(s, "Other", NULL, t, 1, NULL));
  assert_string_equal(exp_search(s, 0, "name = 'Other'", NULL, 0, NULL, NULL), "Other");
  assert_string_equal(exp_search(s, 0, "name LIKE 'surface%'", "name ASC", 0, NULL, NULL), "surface-a,surface-b");
  assert_string_equal(exp_search(s, 0, "name ILIKE '%OTHER%'", NULL, 0, NULL, NULL), "Other");
  assert_string_equal(exp_search(s, 0, "attribute.name != 'Default'", "name DESC", 0, NULL, NULL),
                      "surface-b,surface-a,Other");
  assert_string_equal(exp_search(s, 0, "tags.kind = 'cv'", "name", 0, NULL, NULL), "Other,surface-a");
  assert_string_equal(exp_search(s, 0, "creation_time > 0 and name LIKE '%-b'", NULL, 0, NULL, NULL), "surface-b");
  assert_string_equal(exp_search(s, 0, NULL, "experiment_id ASC", 0, NULL, NULL), "Default,surface-a,surface-b,Other");
  char *tok = NULL, *tok2 = NULL;
  assert_string_equal(exp_search(s, 0, NULL, "name ASC", 3, NULL, &tok), "Default,Other,surface-a");
  assert_non_null(tok);
  assert_string_equal(exp_search(s, 0, NULL, "name ASC", 3, tok, &tok2), "surface-b");
  assert_null(tok2);
  im_free(tok);
  OK(im_track_experiment_delete(s, "2"));
  assert_string_equal(exp_search(s, IM_TRACK_DELETED_ONLY, NULL, NULL, 0, NULL, NULL), "surface-b");
  assert_string_equal(exp_search(s, IM_TRACK_ALL, "name LIKE 'surface%'", "name", 0, NULL, NULL),
                      "surface-a,surface-b");
  assert_string_equal(exp_search(s, IM_TRACK_ACTIVE_ONLY, "name LIKE 'surface%'", NULL, 0, NULL, NULL), "surface-a");
  assert_non_null(strstr(exp_search(s, 0, "metrics.x > 1", NULL, 0, NULL, NULL), "experiments cannot be filtered"));
  assert_non_null(strstr(exp_search(s, 0, "owner = 'x'", NULL, 0, NULL, NULL), "invalid attribute key 'owner'"));
  assert_non_null(strstr(exp_search(s, 0, "name = ", NULL, 0, NULL, NULL), "expected a value"));
  im_track_close(s);
}

/* ---- the registry ------------------------------------------------------------------------- */
static void test_registry_search(void **state) {
  fixture_t *f = *state;
  im_track_store_t *s = f->s;
  im_track_kv_t prod[] = {{"stage", "prod"}};
  OK(im_track_model_create(s, "surface", NULL, prod, 1, NULL));
  OK(im_track_model_create(s, "surface-small", NULL, NULL, 0, NULL));
  OK(im_track_model_create(s, "mnist", NULL, NULL, 0, NULL));
  im_track_kv_t val[] = {{"validated", "yes"}};
  im_track_model_version_create_t v1 = {.name = "surface", .source = "file:///m/1", .run_id = f->r1};
  im_track_model_version_create_t v2 = {
      .name = "surface", .source = "s3://b/m/2", .run_id = f->r2, .tags = val, .n_tags = 1};
  im_track_model_version_create_t v3 = {.name = "mnist", .source = "s3://b/mnist/1", .run_id = f->r1};
  OK(im_track_model_version_create(s, &v1, NULL));
  OK(im_track_model_version_create(s, &v2, NULL));
  OK(im_track_model_version_create(s, &v3, NULL));

  struct {
    const char *filter, *order;
    int64_t max;
    const char *want;
  } mcases[] = {
      {"name='surface'", NULL, 0, "surface"},
      {"name LIKE 'surface%'", NULL, 0, "surface,surface-small"},
      {"name ILIKE 'SURF%'", "name DESC", 0, "surface-small,surface"},
      {"tags.stage = 'prod'", NULL, 0, "surface"},
      {NULL, NULL, 0, "mnist,surface,surface-small"},
      {NULL, NULL, 2, "mnist,surface"},
      {"run_id = 'x'", NULL, 0, "ERR:invalid attribute key 'run_id'"},
      {NULL, NULL, 1001, "ERR:max_results"},
  };
  for (size_t i = 0; i < sizeof mcases / sizeof mcases[0]; i++) {
    const char *ord[1] = {mcases[i].order};
    im_track_search_t q = {.filter = mcases[i].filter,
                           .order_by = ord,
                           .n_order_by = mcases[i].order ? 1 : 0,
                           .max_results = mcases[i].max};
    im_track_model_list_t *l = NULL;
    char got[512] = "";
    if (im_track_model_search(s, &q, &l) != IM_OK) {
      snprintf(got, sizeof got, "ERR:%s", im_track_errmsg(s));
      if (!strstr(got, mcases[i].want + 4)) fail_msg("model search %zu: got %s", i, got);
      continue;
    }
    size_t o = 0;
    for (int64_t j = 0; j < l->n; j++)
      o += (size_t)snprintf(got + o, sizeof got - o, "%s%s", j ? "," : "", l->items[j].name);
    if (mcases[i].max == 2) assert_non_null(l->next_page_token);
    im_track_model_list_free(l);
    if (strcmp(got, mcases[i].want))
      fail_msg("model search %zu (%s): got %s, want %s", i, mcases[i].filter, got, mcases[i].want);
  }

  char f1[128], f2[200];
  snprintf(f1, sizeof f1, "run_id = '%s'", f->r1);
  snprintf(f2, sizeof f2, "run_id IN ('%s', '%s') and name = 'surface'", f->r1, f->r2);
  struct {
    const char *filter, *order;
    const char *want;
  } vcases[] = {
      {"name = 'surface'", NULL, "surface/2,surface/1"},
      {"name = 'surface'", "version_number ASC", "surface/1,surface/2"},
      {f1, NULL, "mnist/1,surface/1"},
      {f2, NULL, "surface/2,surface/1"},
      {"source_path LIKE 's3://%'", NULL, "mnist/1,surface/2"},
      {"version_number >= 2", NULL, "surface/2"},
      {"tags.validated = 'yes'", NULL, "surface/2"},
      {"name != 'surface'", NULL, "mnist/1"},
      {NULL, "creation_timestamp DESC", "*"},
      {"params.x = 'y'", NULL, "ERR:cannot be filtered by params"},
  };
  for (size_t i = 0; i < sizeof vcases / sizeof vcases[0]; i++) {
    const char *ord[1] = {vcases[i].order};
    im_track_search_t q = {.filter = vcases[i].filter, .order_by = ord, .n_order_by = vcases[i].order ? 1 : 0};
    im_track_model_version_list_t *l = NULL;
    char got[512] = "";
    if (im_track_model_version_search(s, &q, &l) != IM_OK) {
      snprintf(got, sizeof got, "ERR:%s", im_track_errmsg(s));
      if (strncmp(vcases[i].want, "ERR:", 4) || !strstr(got, vcases[i].want + 4))
        fail_msg("version search %zu: got %s", i, got);
      continue;
    }
    size_t o = 0;
    for (int64_t j = 0; j < l->n; j++)
      o += (size_t)snprintf(got + o, sizeof got - o, "%s%s/%lld", j ? "," : "", l->items[j].name,
                            (long long)l->items[j].version);
    int64_t n = l->n;
    im_track_model_version_list_free(l);
    if (!strcmp(vcases[i].want, "*")) {
      assert_int_equal(n, 3);
      continue;
    }
    if (strcmp(got, vcases[i].want))
      fail_msg("version search %zu (%s): got %s, want %s", i, vcases[i].filter, got, vcases[i].want);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test_setup_teardown(test_metric_comparators, setup, teardown),
      cmocka_unit_test_setup_teardown(test_param_tag_comparators, setup, teardown),
      cmocka_unit_test_setup_teardown(test_attributes_and_combinations, setup, teardown),
      cmocka_unit_test_setup_teardown(test_experiments_and_views, setup, teardown),
      cmocka_unit_test_setup_teardown(test_order_by, setup, teardown),
      cmocka_unit_test_setup_teardown(test_paging, setup, teardown),
      cmocka_unit_test_setup_teardown(test_bad_filters, setup, teardown),
      cmocka_unit_test_setup_teardown(test_injection_is_inert, setup, teardown),
      cmocka_unit_test(test_experiment_search),
      cmocka_unit_test_setup_teardown(test_registry_search, setup, teardown),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
