/* Params (write-once), metrics (full history plus the latest value per key)
 * and log_batch (params, metrics and tags in one transaction, MLflow's
 * limits), and metric history reads. The single-metric path uses cached
 * statements: lookup, insert, latest upsert. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "track/track_impl.h"

void (*im__trk_batch_hook)(int i) = NULL;

static const char q_metric_insert[] =
    "INSERT OR IGNORE INTO metrics (run_pk, key, value, is_nan, timestamp, step) VALUES (?, ?, ?, ?, ?, ?)";
/* The latest value: the largest (step, timestamp, value), NaN below every number. */
static const char q_latest_upsert[] =
    "INSERT INTO latest_metrics (run_pk, key, value, is_nan, timestamp, step) VALUES (?1, ?2, ?3, ?4, ?5, ?6) "
    "ON CONFLICT (run_pk, key) DO UPDATE SET value = excluded.value, is_nan = excluded.is_nan, "
    "timestamp = excluded.timestamp, step = excluded.step "
    "WHERE (excluded.step, excluded.timestamp, CASE WHEN excluded.is_nan THEN -9e999 ELSE excluded.value END) > "
    "(latest_metrics.step, latest_metrics.timestamp, "
    "CASE WHEN latest_metrics.is_nan THEN -9e999 ELSE latest_metrics.value END)";
static const char q_param_insert[] = "INSERT INTO params (run_pk, key, value) VALUES (?, ?, ?) ON CONFLICT DO NOTHING";
static const char q_param_get[] = "SELECT value FROM params WHERE run_pk = ? AND key = ?";
static const char q_history[] =
    "SELECT key, value, is_nan, timestamp, step FROM metrics WHERE run_pk = ? AND key = ? "
    "ORDER BY timestamp, step, id LIMIT ? OFFSET ?";

void im_track_metric_list_free(im_track_metric_list_t *l) {
  if (!l) return;
  for (int64_t i = 0; i < l->n; i++) im_free(l->items[i].key);
  im_free(l->items);
  im_free(l->next_page_token);
  im_free(l);
}

im_status_t im__trk_metric_put(im_track_store_t *s, int64_t pk, const char *key, double value, int64_t ts,
                               int64_t step) {
  int is_nan = isnan(value) ? 1 : 0;
  double v = is_nan ? 0.0 : value;
  im_status_t r = im__trk_exec(s, q_metric_insert, NULL, "isdiii", pk, key, v, (int64_t)is_nan, ts, step);
  if (r == IM_OK) r = im__trk_exec(s, q_latest_upsert, NULL, "isdiii", pk, key, v, (int64_t)is_nan, ts, step);
  return r;
}

static im_status_t check_metric(im_track_store_t *s, const char *key, int64_t ts) {
  im_status_t r = im__trk_check_key(s, "metric", key);
  if (r == IM_OK && ts < 0)
    r = im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID,
                     "metric '%s' has an invalid timestamp %lld: it must be a non-negative 64-bit integer (ms)", key,
                     (long long)ts);
  return r;
}

/* Inserts a param, or checks that the stored value is the same. */
static im_status_t param_put(im_track_store_t *s, int64_t pk, const char *run_id, const char *key, const char *value) {
  int changes = 0;
  im_status_t r = im__trk_exec(s, q_param_insert, &changes, "iss", pk, key, value);
  if (r || changes) return r;
  char *old = NULL;
  int found = 0;
  r = im__trk_query_str(s, q_param_get, &found, &old, "is", pk, key);
  if (r == IM_OK && found && old && strcmp(old, value))
    r = im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID,
                     "Changing param values is not allowed. Param with key='%s' was already logged with value='%.200s' "
                     "for run ID='%s'. Attempted logging new value '%.200s'.",
                     key, old, run_id, value);
  im_free(old);
  return r;
}

im_status_t im_track_log_param(im_track_store_t *s, const char *run_id, const char *key, const char *value) {
  if (!s) return im_error(IM_ERR_ARG, "no store");
  im_status_t r = im__trk_check_key(s, "param", key);
  if (r == IM_OK) r = im__trk_check_value(s, "param", key, value, IM_TRACK_MAX_PARAM_VALUE_LEN);
  if (r) return r;
  if ((r = im__trk_begin(s))) return r;
  int64_t pk = 0;
  r = im__trk_run_active(s, run_id, &pk);
  if (r == IM_OK) r = param_put(s, pk, run_id, key, value);
  return im__trk_end(s, r);
}

im_status_t im_track_log_metric(im_track_store_t *s, const char *run_id, const char *key, double value,
                                int64_t timestamp, int64_t step) {
  if (!s) return im_error(IM_ERR_ARG, "no store");
  im_status_t r = check_metric(s, key, timestamp);
  if (r) return r;
  if ((r = im__trk_begin(s))) return r;
  int64_t pk = 0;
  r = im__trk_run_active(s, run_id, &pk);
  if (r == IM_OK) r = im__trk_metric_put(s, pk, key, value, timestamp, step);
  return im__trk_end(s, r);
}

im_status_t im_track_log_batch(im_track_store_t *s, const char *run_id, const im_track_metric_in_t *metrics,
                               int n_metrics, const im_track_kv_t *params, int n_params, const im_track_kv_t *tags,
                               int n_tags) {
  if (!s) return im_error(IM_ERR_ARG, "no store");
  if (n_metrics < 0 || n_params < 0 || n_tags < 0 || (n_metrics && !metrics) || (n_params && !params) ||
      (n_tags && !tags))
    return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "bad batch lists");
  if (n_metrics > IM_TRACK_MAX_BATCH_METRICS)
    return im__trk_fail(s, IM_ERR_LIMIT, IM__TRK_INVALID,
                        "A batch logging request can contain at most %d metrics. Got %d metrics. Please split up "
                        "metrics across multiple requests and try again.",
                        IM_TRACK_MAX_BATCH_METRICS, n_metrics);
  if (n_params > IM_TRACK_MAX_BATCH_PARAMS)
    return im__trk_fail(s, IM_ERR_LIMIT, IM__TRK_INVALID,
                        "A batch logging request can contain at most %d params. Got %d params. Please split up "
                        "params across multiple requests and try again.",
                        IM_TRACK_MAX_BATCH_PARAMS, n_params);
  if (n_tags > IM_TRACK_MAX_BATCH_TAGS)
    return im__trk_fail(s, IM_ERR_LIMIT, IM__TRK_INVALID,
                        "A batch logging request can contain at most %d tags. Got %d tags. Please split up tags "
                        "across multiple requests and try again.",
                        IM_TRACK_MAX_BATCH_TAGS, n_tags);
  if (n_metrics + n_params + n_tags > IM_TRACK_MAX_BATCH_TOTAL)
    return im__trk_fail(s, IM_ERR_LIMIT, IM__TRK_INVALID,
                        "A batch logging request can contain at most %d metrics, params and tags in total. Got %d. "
                        "Please split it across multiple requests and try again.",
                        IM_TRACK_MAX_BATCH_TOTAL, n_metrics + n_params + n_tags);
  im_status_t r = IM_OK;
  for (int i = 0; i < n_metrics; i++)
    if ((r = check_metric(s, metrics[i].key, metrics[i].timestamp))) return r;
  for (int i = 0; i < n_params; i++) {
    if ((r = im__trk_check_key(s, "param", params[i].key))) return r;
    if ((r = im__trk_check_value(s, "param", params[i].key, params[i].value, IM_TRACK_MAX_PARAM_VALUE_LEN))) return r;
    for (int j = 0; j < i; j++)
      if (!strcmp(params[i].key, params[j].key))
        return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID,
                            "Duplicate parameter keys have been submitted: ['%s']. Please ensure the request contains "
                            "only one param value per param key.",
                            params[i].key);
  }
  for (int i = 0; i < n_tags; i++) {
    if ((r = im__trk_check_key(s, "tag", tags[i].key))) return r;
    if ((r = im__trk_check_value(s, "tag", tags[i].key, tags[i].value, IM_TRACK_MAX_TAG_VALUE_LEN))) return r;
  }
  if ((r = im__trk_begin(s))) return r;
  int64_t pk = 0;
  r = im__trk_run_active(s, run_id, &pk);
  /* params first: a conflicting param fails the batch before anything is written */
  for (int i = 0; r == IM_OK && i < n_params; i++) r = param_put(s, pk, run_id, params[i].key, params[i].value);
  for (int i = 0; r == IM_OK && i < n_metrics; i++) {
    r = im__trk_metric_put(s, pk, metrics[i].key, metrics[i].value, metrics[i].timestamp, metrics[i].step);
    if (im__trk_batch_hook) im__trk_batch_hook(i);
  }
  for (int i = 0; r == IM_OK && i < n_tags; i++) r = im__trk_run_tag_put(s, pk, tags[i].key, tags[i].value);
  return im__trk_end(s, r);
}

im_status_t im__trk_metric_fill(im_track_store_t *s, sqlite3_stmt *st, void *item) {
  im_track_metric_t *m = item;
  int oom = 0;
  m->key = im__trk_col_dup0(st, 0, &oom);
  m->value = sqlite3_column_int(st, 2) ? NAN : sqlite3_column_double(st, 1);
  m->timestamp = sqlite3_column_int64(st, 3);
  m->step = sqlite3_column_int64(st, 4);
  return oom ? IM__TRK_NOMEM(s) : IM_OK;
}

static im_status_t get_metric_history_snap(im_track_store_t *s, const char *run_id, const char *key,
                                           int64_t max_results, const char *page_token, im_track_metric_list_t **out) {
  if (!s || !out) return im_error(IM_ERR_ARG, "im_track_get_metric_history: NULL argument");
  *out = NULL;
  if (!key || !*key) return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "metric_key is required");
  if (max_results < 0)
    return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "max_results must be positive (got %lld)",
                        (long long)max_results);
  int64_t offset = 0, pk = 0;
  int active = 0;
  im_status_t r = im__trk_parse_page_token(s, page_token, &offset);
  if (r == IM_OK) r = im__trk_run_lookup(s, run_id, &pk, &active);
  if (r) return r;
  sqlite3_stmt *st = im__trk_stmt(s, q_history);
  if (!st) return IM_ERR_INTERNAL;
  int64_t limit = max_results > 0 ? max_results : -1;
  r = im__trk_bindv(s, st, 1, "isii", pk, key, limit > 0 ? limit + 1 : -1, offset);
  im_track_metric_list_t *l = NULL;
  if (r == IM_OK && !(l = im_calloc(1, sizeof *l))) r = IM__TRK_NOMEM(s);
  if (r == IM_OK) {
    void *items = NULL;
    r = im__trk_collect_page(s, st, limit > 0 ? limit : INT64_MAX, offset, sizeof(im_track_metric_t),
                             im__trk_metric_fill, &items, &l->n, &l->next_page_token);
    l->items = items;
  }
  im__trk_reset(st);
  if (r != IM_OK) {
    im_track_metric_list_free(l);
    return r;
  }
  *out = l;
  return IM_OK;
}

/* ---- public reads: each in one snapshot (a read transaction) ------------------------ */

im_status_t im_track_get_metric_history(im_track_store_t *s, const char *run_id, const char *key, int64_t max_results,
                                        const char *page_token, im_track_metric_list_t **out) {
  IM__TRK_READ_SNAPSHOT(s, get_metric_history_snap(s, run_id, key, max_results, page_token, out));
}
