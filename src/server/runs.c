/* MLflow run endpoints: runs create/get/update/delete/restore/search,
 * log-metric, log-parameter, log-batch (MLflow's limits, 1 MB body),
 * set-tag, delete-tag, log-inputs (accepted and validated; datasets are not
 * stored), log-model (appended to the mlflow.log-model.history tag as MLflow
 * does) and metrics/get-history. Thin over the store. */
#include <stdio.h>
#include <string.h>

#include "imops/track_json.h"
#include "server/server_impl.h"

#define LOG_MODEL_HISTORY_TAG "mlflow.log-model.history"

/* The run as JSON with its artifact URI as clients should see it. */
static json_t *run_json(srv_ctx_t *c, const im_track_run_t *r) {
  json_t *j = im_track_run_json(r);
  json_t *info = j ? json_object_get(j, "info") : NULL;
  if (info && r->artifact_uri && *r->artifact_uri) {
    char *pub = im__srv_public_uri(c->srv, r->artifact_uri);
    json_t *v = pub ? json_string(pub) : NULL;
    im_free(pub);
    if (!v || json_object_set_new(info, "artifact_uri", v)) {
      json_decref(j);
      return NULL;
    }
  }
  return j;
}

static im_status_t answer_run(srv_ctx_t *c, im_status_t st, im_track_run_t *r) {
  if (st) return im__srv_store_fail(c, st);
  json_t *j = im__srv_obj1("run", run_json(c, r));
  im_track_run_free(r);
  return j ? im__srv_ok(c, j) : im_error(IM_ERR_NOMEM, "out of memory");
}

static im_status_t need_run_id(srv_ctx_t *c, const char **out) {
  *out = NULL;
  const char *r = im__srv_run_id(c);
  if (!r || !*r) return im__srv_fail(c, SRV_INVALID, "Missing value for required parameter 'run_id'.");
  *out = r;
  return IM_OK;
}

static im_status_t done(srv_ctx_t *c, im_status_t st) { return st ? im__srv_store_fail(c, st) : im__srv_ok(c, NULL); }

static im_status_t create(srv_ctx_t *c) {
  im_track_kv_t *tags;
  int n;
  int64_t start = 0;
  im_status_t st;
  if ((st = im__srv_i64(c, "start_time", 0, &start))) return st;
  if ((st = im__srv_kvs(c, "tags", &tags, &n))) return st;
  const char *exp = im__srv_str(c, "experiment_id");
  im_track_run_create_t rc = {
      .experiment_id = exp && *exp ? exp : "0",
      .run_name = im__srv_str(c, "run_name"),
      .user_id = im__srv_str(c, "user_id"),
      .start_time = start,
      .tags = tags,
      .n_tags = n,
  };
  if (rc.run_name && !*rc.run_name) rc.run_name = NULL;
  im_track_run_t *r = NULL;
  st = im_track_run_create(c->st, &rc, &r);
  im_free(tags);
  return answer_run(c, st, r);
}

static im_status_t get(srv_ctx_t *c) {
  const char *id;
  im_status_t st = need_run_id(c, &id);
  if (st) return st;
  im_track_run_t *r = NULL;
  st = im_track_run_get(c->st, id, &r);
  return answer_run(c, st, r);
}

static im_status_t update(srv_ctx_t *c) {
  const char *id;
  im_status_t st = need_run_id(c, &id);
  if (st) return st;
  im_track_run_update_t u = {.end_time = IM_TRACK_NO_TIME};
  const char *status = im__srv_str(c, "status");
  if (status && *status && !(u.status = im_track_run_status_parse(status)))
    return im__srv_fail(c, SRV_INVALID, "Invalid run status '%.100s': expected RUNNING, SCHEDULED, FINISHED, FAILED or KILLED.",
                        status);
  if ((st = im__srv_i64(c, "end_time", IM_TRACK_NO_TIME, &u.end_time))) return st;
  u.run_name = im__srv_str(c, "run_name");
  if (u.run_name && !*u.run_name) u.run_name = NULL;
  im_track_run_t *r = NULL;
  st = im_track_run_update(c->st, id, &u, &r);
  if (st) return im__srv_store_fail(c, st);
  json_t *j = run_json(c, r), *info = j ? json_object_get(j, "info") : NULL;
  json_t *out = info ? im__srv_obj1("run_info", json_incref(info)) : NULL;
  json_decref(j);
  im_track_run_free(r);
  return out ? im__srv_ok(c, out) : im_error(IM_ERR_NOMEM, "out of memory");
}

static im_status_t delete_(srv_ctx_t *c) {
  const char *id;
  im_status_t st = need_run_id(c, &id);
  return st ? st : done(c, im_track_run_delete(c->st, id));
}

static im_status_t restore(srv_ctx_t *c) {
  const char *id;
  im_status_t st = need_run_id(c, &id);
  return st ? st : done(c, im_track_run_restore(c->st, id));
}

static im_status_t search(srv_ctx_t *c) {
  im_track_search_t q;
  const char **ob = NULL, **ids = NULL;
  int nids = 0;
  im_track_view_t view;
  im_status_t st = im__srv_search_args(c, &q, &ob);
  if (st == IM_OK) st = im__srv_view(c, "run_view_type", &view);
  if (st == IM_OK) st = im__srv_strs(c, "experiment_ids", &ids, &nids);
  if (st) {
    im_free(ob);
    return st;
  }
  im_track_run_list_t *l = NULL;
  st = im_track_run_search(c->st, ids, nids, view, &q, &l);
  im_free(ob);
  im_free(ids);
  if (st) return im__srv_store_fail(c, st);
  json_t *arr = json_array();
  for (int64_t i = 0; arr && i < l->n; i++) json_array_append_new(arr, run_json(c, &l->items[i]));
  st = im__srv_ok_list(c, "runs", arr, l->next_page_token);
  im_track_run_list_free(l);
  return st;
}

/* A metric's value, timestamp and step from strings, MLflow's messages on errors. */
static im_status_t metric_fields(srv_ctx_t *c, const char *key, const char *value, const char *ts, const char *step,
                                 im_track_metric_in_t *m) {
  if (!key || !*key) return im__srv_fail(c, SRV_INVALID, "Missing value for required parameter 'key'.");
  if (!value || !*value)
    return im__srv_fail(c, SRV_INVALID, "Missing value for required parameter 'value' of metric '%.250s'.", key);
  if (!ts || !*ts)
    return im__srv_fail(c, SRV_INVALID, "Missing value for required parameter 'timestamp' of metric '%.250s'.", key);
  m->key = key;
  if (im__srv_parse_double(value, &m->value))
    return im__srv_fail(c, SRV_INVALID, "Got invalid value %.100s for metric '%.250s' (timestamp=%.40s). Please specify "
                        "value as a valid double (64-bit floating point)", value, key, ts);
  if (im__srv_parse_i64(ts, &m->timestamp))
    return im__srv_fail(c, SRV_INVALID, "Got invalid timestamp %.100s for metric '%.250s' (value=%.40s). Timestamp must "
                        "be a nonnegative long (64-bit integer) ", ts, key, value);
  m->step = 0;
  if (step && *step && im__srv_parse_i64(step, &m->step))
    return im__srv_fail(c, SRV_INVALID, "Got invalid step %.100s for metric '%.250s' (value=%.40s). Step must be a "
                        "valid long (64-bit integer).", step, key, value);
  return IM_OK;
}

static im_status_t log_metric(srv_ctx_t *c) {
  const char *id;
  im_status_t st = need_run_id(c, &id);
  if (st) return st;
  im_track_metric_in_t m;
  if ((st = metric_fields(c, im__srv_str(c, "key"), im__srv_str(c, "value"), im__srv_str(c, "timestamp"),
                          im__srv_str(c, "step"), &m)))
    return st;
  return done(c, im_track_log_metric(c->st, id, m.key, m.value, m.timestamp, m.step));
}

static im_status_t log_param(srv_ctx_t *c) {
  const char *id, *key;
  im_status_t st;
  if ((st = need_run_id(c, &id)) || (st = im__srv_req(c, "key", &key))) return st;
  const char *value = im__srv_str(c, "value");
  return done(c, im_track_log_param(c->st, id, key, value ? value : ""));
}

static const char *obj_str(json_t *o, const char *k) {
  json_t *v = json_object_get(o, k);
  return json_is_string(v) ? json_string_value(v) : NULL;
}

static im_status_t log_batch(srv_ctx_t *c) {
  size_t len;
  (void)im_http_req_body(c->req, &len);
  if (len > SRV_MAX_BATCH_BODY)
    return im__srv_fail(c, SRV_INVALID, "Batched logging API requests must be at most 1 MB in size. Got %zu bytes.", len);
  const char *id;
  im_status_t st = need_run_id(c, &id);
  if (st) return st;
  im_track_kv_t *params = NULL, *tags = NULL;
  int np = 0, nt = 0;
  if ((st = im__srv_kvs(c, "params", &params, &np)) || (st = im__srv_kvs(c, "tags", &tags, &nt))) {
    im_free(params);
    return st;
  }
  json_t *ms = json_object_get(c->args, "metrics");
  if (json_is_object(ms)) ms = NULL; /* handled below as a type error */
  size_t nm = json_is_array(ms) ? json_array_size(ms) : 0;
  im_track_metric_in_t *metrics = NULL;
  if (json_object_get(c->args, "metrics") && !json_is_array(ms)) {
    st = im__srv_fail(c, SRV_INVALID, "Invalid value for parameter 'metrics': expected a list of metrics.");
  } else if (nm > 0 && !(metrics = im_calloc(nm, sizeof *metrics))) {
    st = im_error(IM_ERR_NOMEM, "out of memory");
  }
  for (size_t i = 0; st == IM_OK && i < nm; i++) {
    json_t *m = json_array_get(ms, i);
    if (!json_is_object(m)) {
      st = im__srv_fail(c, SRV_INVALID, "Invalid value for parameter 'metrics': entry %zu is not an object.", i);
      break;
    }
    st = metric_fields(c, obj_str(m, "key"), obj_str(m, "value"), obj_str(m, "timestamp"), obj_str(m, "step"),
                       &metrics[i]);
  }
  if (st == IM_OK) st = done(c, im_track_log_batch(c->st, id, metrics, (int)nm, params, np, tags, nt));
  im_free(metrics);
  im_free(params);
  im_free(tags);
  return st;
}

static im_status_t set_tag(srv_ctx_t *c) {
  const char *id, *key;
  im_status_t st;
  if ((st = need_run_id(c, &id)) || (st = im__srv_req(c, "key", &key))) return st;
  const char *value = im__srv_str(c, "value");
  return done(c, im_track_run_set_tag(c->st, id, key, value ? value : ""));
}

static im_status_t delete_tag(srv_ctx_t *c) {
  const char *id, *key;
  im_status_t st;
  if ((st = need_run_id(c, &id)) || (st = im__srv_req(c, "key", &key))) return st;
  return done(c, im_track_run_delete_tag(c->st, id, key));
}

/* Datasets are validated and acknowledged but not stored (the store has no
 * dataset tables yet); an unknown or deleted run is still an error. */
static im_status_t log_inputs(srv_ctx_t *c) {
  const char *id;
  im_status_t st = need_run_id(c, &id);
  if (st) return st;
  json_t *ds = json_object_get(c->args, "datasets");
  if (ds && !json_is_array(ds))
    return im__srv_fail(c, SRV_INVALID, "Invalid value for parameter 'datasets': expected a list.");
  for (size_t i = 0; ds && i < json_array_size(ds); i++) {
    json_t *d = json_object_get(json_array_get(ds, i), "dataset");
    if (!json_is_object(d) || !obj_str(d, "name") || !obj_str(d, "digest"))
      return im__srv_fail(c, SRV_INVALID, "Invalid dataset input %zu: a dataset needs a name and a digest.", i);
  }
  im_track_run_t *r = NULL;
  if ((st = im_track_run_get(c->st, id, &r))) return im__srv_store_fail(c, st);
  int active = r->lifecycle_stage && !strcmp(r->lifecycle_stage, "active");
  im_track_run_free(r);
  if (!active)
    return im__srv_fail(c, SRV_INVALID, "The run %s must be in the 'active' state. Current state is deleted.", id);
  return im__srv_ok(c, NULL);
}

/* MLflow 2.x log_model: the MLmodel as JSON, appended to a run tag. The oldest
 * entries are dropped when the history would be over the tag value limit. */
static im_status_t log_model(srv_ctx_t *c) {
  const char *id, *mj;
  im_status_t st;
  if ((st = need_run_id(c, &id)) || (st = im__srv_req(c, "model_json", &mj))) return st;
  json_error_t e;
  json_t *model = json_loads(mj, 0, &e);
  if (!json_is_object(model)) {
    json_decref(model);
    return im__srv_fail(c, SRV_INVALID, "model_json is not a JSON object: %s", e.text);
  }
  im_track_run_t *r = NULL;
  if ((st = im_track_run_get(c->st, id, &r))) {
    json_decref(model);
    return im__srv_store_fail(c, st);
  }
  json_t *hist = NULL;
  for (int i = 0; i < r->n_tags; i++)
    if (!strcmp(r->tags[i].key, LOG_MODEL_HISTORY_TAG)) hist = json_loads(r->tags[i].value, 0, NULL);
  im_track_run_free(r);
  if (!json_is_array(hist)) {
    json_decref(hist);
    hist = json_array();
  }
  char *text = NULL;
  if (hist && json_array_append_new(hist, model) == 0) {
    for (;;) {
      text = json_dumps(hist, JSON_COMPACT);
      if (!text || strlen(text) <= IM_TRACK_MAX_TAG_VALUE_LEN || json_array_size(hist) <= 1) break;
      free(text);
      text = NULL;
      json_array_remove(hist, 0);
    }
  }
  json_decref(hist);
  if (!text) return im_error(IM_ERR_NOMEM, "out of memory");
  if (strlen(text) > IM_TRACK_MAX_TAG_VALUE_LEN) {
    free(text);
    return im__srv_fail(c, SRV_INVALID, "model_json is over %d characters", IM_TRACK_MAX_TAG_VALUE_LEN);
  }
  st = im_track_run_set_tag(c->st, id, LOG_MODEL_HISTORY_TAG, text);
  free(text);
  return done(c, st);
}

static im_status_t get_history(srv_ctx_t *c) {
  const char *id, *key;
  im_status_t st;
  if ((st = need_run_id(c, &id)) || (st = im__srv_req(c, "metric_key", &key))) return st;
  int64_t max = 0;
  if ((st = im__srv_i64(c, "max_results", 0, &max))) return st;
  if (max < 0) return im__srv_fail(c, SRV_INVALID, "max_results must be positive.");
  const char *tok = im__srv_str(c, "page_token");
  im_track_metric_list_t *l = NULL;
  st = im_track_get_metric_history(c->st, id, key, max, tok && *tok ? tok : NULL, &l);
  if (st) return im__srv_store_fail(c, st);
  json_t *arr = json_array();
  for (int64_t i = 0; arr && i < l->n; i++) json_array_append_new(arr, im_track_metric_json(&l->items[i]));
  st = im__srv_ok_list(c, "metrics", arr, l->next_page_token);
  im_track_metric_list_free(l);
  return st;
}

im_status_t im__srv_routes_runs(im_server_t *s) {
  static const srv_route_t r[] = {
      {"POST", "mlflow/runs/create", create},
      {"GET", "mlflow/runs/get", get},
      {"POST", "mlflow/runs/update", update},
      {"POST", "mlflow/runs/delete", delete_},
      {"POST", "mlflow/runs/restore", restore},
      {"POST", "mlflow/runs/search", search},
      {"POST", "mlflow/runs/log-metric", log_metric},
      {"POST", "mlflow/runs/log-parameter", log_param},
      {"POST", "mlflow/runs/log-batch", log_batch},
      {"POST", "mlflow/runs/set-tag", set_tag},
      {"POST", "mlflow/runs/delete-tag", delete_tag},
      {"POST", "mlflow/runs/log-inputs", log_inputs},
      {"POST", "mlflow/runs/log-model", log_model},
      {"GET", "mlflow/metrics/get-history", get_history},
  };
  return im__srv_add_routes(s, r, sizeof r / sizeof r[0], SRV_STORE);
}
