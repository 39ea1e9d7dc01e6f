/* The REST tracking client: the same logging as the embedded store, sent
 * with MLflow's REST API 2.0 to `imops server` or a real `mlflow server`
 * (experiments/get-by-name + create, runs/create, runs/log-batch, runs/update,
 * metrics/get-history, the registry's download URIs) and artifacts through
 * the server's mlflow-artifacts proxy, or straight to S3 / local files when
 * the run's artifact URI says so. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "imops/track_json.h"
#include "track/client_impl.h"

#define MAX_HISTORY_PAGES 1000
#define MAX_PROXY_FILES 100000

static const char *env(const char *n) {
  const char *v = getenv(n);
  return v && *v ? v : NULL;
}

im_status_t im__trk_rest_open(im_track_client_t *c, const char *uri) {
  size_t n = strlen(uri);
  while (n > 8 && uri[n - 1] == '/') n--;
  c->base = im_strndup(uri, n);
  c->where = im_strndup(uri, n);
  if (!c->base || !c->where) return im_error(IM_ERR_NOMEM, "out of memory");
  const char *tok = env("MLFLOW_TRACKING_TOKEN");
  if (!tok) tok = env("IMOPS_TOKEN");
  im_http_client_opts_t o = {.bearer_token = tok,
                             .username = env("MLFLOW_TRACKING_USERNAME"),
                             .password = env("MLFLOW_TRACKING_PASSWORD"),
                             .insecure = env("MLFLOW_TRACKING_INSECURE_TLS") &&
                                         !strcasecmp(env("MLFLOW_TRACKING_INSECURE_TLS"), "true"),
                             .max_retries = 5};
  return im_http_client_new(&o, &c->http);
}

/* Calls an MLflow endpoint ("runs/create"); a non-200 answer becomes an
 * error carrying MLflow's error_code and message (404 -> IM_ERR_NOT_FOUND). */
static im_status_t call_api(im_track_client_t *c, const char *method, const char *prefix, const char *endpoint,
                            json_t *req, json_t **out) {
  if (out) *out = NULL;
  size_t n = strlen(c->base) + strlen(endpoint) + 32;
  char *url = im_malloc(n);
  if (!url) {
    json_decref(req);
    return im_error(IM_ERR_NOMEM, "out of memory");
  }
  snprintf(url, n, "%s/api/2.0/%s%s", c->base, prefix, endpoint);
  json_t *ans = NULL;
  long status = 0;
  im_status_t st = req || !strcmp(method, "GET") ? im_http_client_json(c->http, method, url, req, &ans, &status)
                                                  : im_error(IM_ERR_NOMEM, "out of memory");
  if (!st && status != 200) {
    const char *code = json_string_value(json_object_get(ans, "error_code"));
    const char *msg = json_string_value(json_object_get(ans, "message"));
    im_status_t s2 = status == 404 ? IM_ERR_NOT_FOUND
                     : status == 409 ? IM_ERR_STATE
                     : code && !strcmp(code, "RESOURCE_ALREADY_EXISTS") ? IM_ERR_EXISTS
                     : status == 400 ? IM_ERR_ARG
                                     : IM_ERR_IO;
    st = im_error(s2, "%s %s: HTTP %ld %s%s%s", method, url, status, code ? code : "", code && msg ? ": " : "",
                  msg ? msg : "");
  } else if (st) {
    st = im_error(st, "%s %s: %s", method, url, im_last_error());
  }
  if (!st && out) {
    *out = ans ? ans : json_object();
    ans = NULL;
  }
  json_decref(ans);
  json_decref(req);
  im_free(url);
  return st;
}

static im_status_t call(im_track_client_t *c, const char *method, const char *endpoint, json_t *req, json_t **out) {
  return call_api(c, method, "mlflow/", endpoint, req, out);
}

im_status_t im_track_client_call(im_track_client_t *c, const char *method, const char *path, json_t *req,
                                 json_t **out) {
  if (out) *out = NULL;
  if (!c->base) {
    json_decref(req);
    return im_error(IM_ERR_UNSUPPORTED, "%s is not a tracking server", c->where ? c->where : "this store");
  }
  return call_api(c, method, "", path, req, out);
}

/* ---- JSON to entities ------------------------------------------------------------------- */

static char *jdup(const json_t *o, const char *k, int *oom) {
  const json_t *v = json_object_get(o, k);
  const char *s = json_is_string(v) ? json_string_value(v) : "";
  char *d = im_strdup(s);
  if (!d) *oom = 1;
  return d;
}

static int64_t jint(const json_t *o, const char *k, int64_t def) {
  const json_t *v = json_object_get(o, k);
  if (json_is_integer(v)) return json_integer_value(v);
  if (json_is_real(v)) return (int64_t)json_real_value(v);
  if (json_is_string(v)) return strtoll(json_string_value(v), NULL, 10);
  return def;
}

static double jdouble(const json_t *v) {
  if (json_is_number(v)) return json_number_value(v);
  if (json_is_string(v)) return strtod(json_string_value(v), NULL); /* "NaN", "Infinity", "-Infinity" */
  return 0;
}

static int load_kv(const json_t *arr, im_track_tag_t **out, int *n) {
  size_t k = json_array_size(arr);
  *out = NULL;
  *n = 0;
  if (!k) return 0;
  if (!(*out = im_calloc(k, sizeof **out))) return 1;
  int oom = 0;
  for (size_t i = 0; i < k; i++) {
    const json_t *e = json_array_get(arr, i);
    (*out)[i].key = jdup(e, "key", &oom);
    (*out)[i].value = jdup(e, "value", &oom);
    (*n)++;
  }
  return oom;
}

static im_status_t run_from_json(const json_t *j, im_track_run_t **out) {
  const json_t *info = json_object_get(j, "info"), *data = json_object_get(j, "data");
  if (!json_is_object(info)) return im_error(IM_ERR_FORMAT, "the server's run has no \"info\"");
  im_track_run_t *r = im_calloc(1, sizeof *r);
  if (!r) return im_error(IM_ERR_NOMEM, "out of memory");
  int oom = 0;
  r->run_id = jdup(info, "run_id", &oom);
  if (r->run_id && !*r->run_id) {
    im_free(r->run_id);
    r->run_id = jdup(info, "run_uuid", &oom);
  }
  r->run_name = jdup(info, "run_name", &oom);
  r->experiment_id = jdup(info, "experiment_id", &oom);
  r->user_id = jdup(info, "user_id", &oom);
  const json_t *stv = json_object_get(info, "status");
  r->status = json_is_string(stv) ? im_track_run_status_parse(json_string_value(stv)) : (int)jint(info, "status", 0);
  r->start_time = jint(info, "start_time", 0);
  r->end_time = jint(info, "end_time", IM_TRACK_NO_TIME);
  r->artifact_uri = jdup(info, "artifact_uri", &oom);
  r->lifecycle_stage = jdup(info, "lifecycle_stage", &oom);
  const json_t *ms = json_object_get(data, "metrics");
  if (json_array_size(ms)) {
    if (!(r->metrics = im_calloc(json_array_size(ms), sizeof *r->metrics))) oom = 1;
    for (size_t i = 0; r->metrics && i < json_array_size(ms); i++) {
      const json_t *m = json_array_get(ms, i);
      r->metrics[i] = (im_track_metric_t){jdup(m, "key", &oom), jdouble(json_object_get(m, "value")),
                                          jint(m, "timestamp", 0), jint(m, "step", 0)};
      r->n_metrics++;
    }
  }
  oom |= load_kv(json_object_get(data, "params"), &r->params, &r->n_params);
  oom |= load_kv(json_object_get(data, "tags"), &r->tags, &r->n_tags);
  if (oom) {
    im_track_run_free(r);
    return im_error(IM_ERR_NOMEM, "out of memory");
  }
  *out = r;
  return IM_OK;
}

static json_t *kv_array(const im_track_kv_t *kv, int n) {
  json_t *a = json_array();
  for (int i = 0; a && i < n; i++) json_array_append_new(a, json_pack("{s:s,s:s}", "key", kv[i].key, "value", kv[i].value));
  return a;
}

/* ---- operations ------------------------------------------------------------------------------ */

static im_status_t rest_experiment_id(im_track_client_t *c, const char *name, char **id) {
  json_t *ans = NULL;
  im_status_t st = call(c, "GET", "experiments/get-by-name", json_pack("{s:s}", "experiment_name", name), &ans);
  if (st == IM_ERR_NOT_FOUND) {
    st = call(c, "POST", "experiments/create", json_pack("{s:s}", "name", name), &ans);
    if (!st) {
      const char *eid = json_string_value(json_object_get(ans, "experiment_id"));
      st = eid ? IM_OK : im_error(IM_ERR_FORMAT, "experiments/create answered without an experiment_id");
      if (!st && !(*id = im_strdup(eid))) st = im_error(IM_ERR_NOMEM, "out of memory");
      json_decref(ans);
      return st;
    }
    if (st == IM_ERR_EXISTS) /* created meanwhile */
      st = call(c, "GET", "experiments/get-by-name", json_pack("{s:s}", "experiment_name", name), &ans);
  }
  if (st) return st;
  const json_t *e = json_object_get(ans, "experiment");
  const char *eid = json_string_value(json_object_get(e, "experiment_id"));
  if (!eid) st = im_error(IM_ERR_FORMAT, "experiments/get-by-name answered without an experiment_id");
  if (!st) st = im__trk_client_check_active(name, json_string_value(json_object_get(e, "lifecycle_stage")));
  if (!st && !(*id = im_strdup(eid))) st = im_error(IM_ERR_NOMEM, "out of memory");
  json_decref(ans);
  return st;
}

static im_status_t run_answer(im_status_t st, json_t *ans, im_track_run_t **out) {
  if (!st) st = run_from_json(json_object_get(ans, "run"), out);
  json_decref(ans);
  return st;
}

static im_status_t rest_run_create(im_track_client_t *c, const im_track_run_create_t *rc, im_track_run_t **out) {
  json_t *tags = kv_array(rc->tags, rc->n_tags);
  if (tags && rc->parent_run_id)
    json_array_append_new(tags, json_pack("{s:s,s:s}", "key", "mlflow.parentRunId", "value", rc->parent_run_id));
  json_t *req = json_pack("{s:s,s:I,s:o?}", "experiment_id", rc->experiment_id ? rc->experiment_id : "0", "start_time",
                          (json_int_t)(rc->start_time ? rc->start_time : im_time_wall_ms()), "tags", tags);
  if (req && rc->run_name) json_object_set_new(req, "run_name", json_string(rc->run_name));
  if (req && rc->user_id) json_object_set_new(req, "user_id", json_string(rc->user_id));
  json_t *ans = NULL;
  im_status_t st = call(c, "POST", "runs/create", req, &ans);
  return run_answer(st, ans, out);
}

static im_status_t rest_run_get(im_track_client_t *c, const char *run_id, im_track_run_t **out) {
  json_t *ans = NULL;
  im_status_t st = call(c, "GET", "runs/get", json_pack("{s:s}", "run_id", run_id), &ans);
  return run_answer(st, ans, out);
}

static im_status_t rest_run_update(im_track_client_t *c, const char *run_id, const im_track_run_update_t *u) {
  json_t *req = json_pack("{s:s,s:s}", "run_id", run_id, "run_uuid", run_id);
  if (req && u->status) json_object_set_new(req, "status", json_string(im_track_run_status_name(u->status)));
  if (req && u->end_time != IM_TRACK_NO_TIME) json_object_set_new(req, "end_time", json_integer(u->end_time));
  if (req && u->run_name) json_object_set_new(req, "run_name", json_string(u->run_name));
  return call(c, "POST", "runs/update", req, NULL);
}

static im_status_t rest_set_tag(im_track_client_t *c, const char *run_id, const char *key, const char *value) {
  return call(c, "POST", "runs/set-tag",
              json_pack("{s:s,s:s,s:s,s:s}", "run_id", run_id, "run_uuid", run_id, "key", key, "value", value), NULL);
}

static im_status_t rest_log_batch(im_track_client_t *c, const char *run_id, const im_track_metric_in_t *m, int nm,
                                  const im_track_kv_t *p, int np, const im_track_kv_t *t, int nt) {
  json_t *ms = json_array();
  for (int i = 0; ms && i < nm; i++) {
    json_t *v = im_track_double_json(m[i].value);
    json_array_append_new(ms, json_pack("{s:s,s:o,s:I,s:I}", "key", m[i].key, "value", v, "timestamp",
                                        (json_int_t)m[i].timestamp, "step", (json_int_t)m[i].step));
  }
  json_t *req = json_pack("{s:s,s:o,s:o,s:o}", "run_id", run_id, "metrics", ms, "params", kv_array(p, np), "tags",
                          kv_array(t, nt));
  return call(c, "POST", "runs/log-batch", req, NULL);
}

static im_status_t rest_history(im_track_client_t *c, const char *run_id, const char *key, im_track_metric_list_t **out) {
  im_track_metric_list_t *l = im_calloc(1, sizeof *l);
  if (!l) return im_error(IM_ERR_NOMEM, "out of memory");
  im_status_t st = IM_OK;
  char *token = NULL;
  for (int page = 0; !st && page < MAX_HISTORY_PAGES; page++) {
    json_t *req = json_pack("{s:s,s:s,s:s}", "run_id", run_id, "run_uuid", run_id, "metric_key", key), *ans = NULL;
    if (req && token) json_object_set_new(req, "page_token", json_string(token));
    if ((st = call(c, "GET", "metrics/get-history", req, &ans))) break;
    const json_t *ms = json_object_get(ans, "metrics");
    size_t k = json_array_size(ms);
    im_track_metric_t *it = k ? im_realloc(l->items, (size_t)(l->n + (int64_t)k) * sizeof *it) : l->items;
    if (k && !it) st = im_error(IM_ERR_NOMEM, "out of memory");
    else l->items = it;
    int oom = 0;
    for (size_t i = 0; !st && i < k; i++) {
      const json_t *m = json_array_get(ms, i);
      l->items[l->n++] = (im_track_metric_t){jdup(m, "key", &oom), jdouble(json_object_get(m, "value")),
                                             jint(m, "timestamp", 0), jint(m, "step", 0)};
    }
    if (oom) st = im_error(IM_ERR_NOMEM, "out of memory");
    im_free(token);
    token = NULL;
    const char *nt = json_string_value(json_object_get(ans, "next_page_token"));
    if (!st && nt && *nt && !(token = im_strdup(nt))) st = im_error(IM_ERR_NOMEM, "out of memory");
    json_decref(ans);
    if (!token) break;
  }
  im_free(token);
  if (st) {
    im_track_metric_list_free(l);
    return st;
  }
  *out = l;
  return IM_OK;
}

/* ---- artifacts through the mlflow-artifacts proxy ---------------------------------------------- */

/* The proxy path of an mlflow-artifacts: URI (NULL when uri is not one). */
static char *proxy_rel(const char *uri) {
  if (strncasecmp(uri, "mlflow-artifacts:", 17)) return NULL;
  const char *p = uri + 17;
  if (!strncmp(p, "//", 2)) p += 2 + strcspn(p + 2, "/"); /* mlflow-artifacts://host:port/path: this server */
  while (*p == '/') p++;
  return im_strdup(p);
}

static im_status_t proxy_url(im_track_client_t *c, const char *rel, const char *query, char **out) {
  im_buf_t b = {0};
  im_status_t st = im_buf_printf(&b, "%s/api/2.0/mlflow-artifacts/artifacts", c->base);
  if (!st && *rel) st = im_buf_append(&b, "/", 1);
  if (!st) st = im_http_url_encode(&b, rel, strlen(rel), "/");
  if (!st && query) st = im_buf_printf(&b, "?%s", query);
  if (!st) st = im_buf_append(&b, "", 1);
  if (st) im_buf_free(&b);
  *out = st ? NULL : b.data;
  return st;
}

static im_status_t proxy_put(im_track_client_t *c, const char *rel, const char *local) {
  char *url = NULL;
  im_status_t st = proxy_url(c, rel, NULL, &url);
  if (st) return st;
  im_http_request_t rq = {.method = "PUT", .url = url, .upload_path = local};
  im_http_response_t r = {0};
  st = im_http_client_request(c->http, &rq, &r);
  if (!st && r.status != 200)
    st = im_error(IM_ERR_IO, "PUT %s: HTTP %ld %.300s", url, r.status, r.body ? (const char *)r.body : "");
  im_http_response_deinit(&r);
  im_free(url);
  return st;
}

/* Lists a proxy directory recursively into l (paths relative to top). */
static im_status_t proxy_walk(im_track_client_t *c, const char *top, const char *sub, int depth,
                              im_track_file_list_t *l, int64_t *cap) {
  if (depth > 64) return im_error(IM_ERR_LIMIT, "artifact tree nested too deeply");
  char *dir = *sub ? im_path_join(top, sub) : im_strdup(top);
  if (!dir) return im_error(IM_ERR_NOMEM, "out of memory");
  im_buf_t q = {0};
  im_status_t st = im_buf_printf(&q, "path=");
  if (!st) st = im_http_url_encode(&q, dir, strlen(dir), NULL);
  if (!st) st = im_buf_append(&q, "", 1);
  char *url = NULL;
  if (!st) st = proxy_url(c, "", q.data, &url);
  json_t *ans = NULL;
  if (!st) st = im_http_client_json(c->http, "GET", url, NULL, &ans, NULL);
  const json_t *files = json_object_get(ans, "files");
  for (size_t i = 0; !st && i < json_array_size(files); i++) {
    const json_t *f = json_array_get(files, i);
    const char *p = json_string_value(json_object_get(f, "path"));
    if (!p) continue;
    const char *base = strrchr(p, '/'); /* basenames, but take the last name of a path too */
    base = base ? base + 1 : p;
    if (!*base || !strcmp(base, ".") || !strcmp(base, "..")) continue;
    char *child = *sub ? im_path_join(sub, base) : im_strdup(base);
    if (!child) st = im_error(IM_ERR_NOMEM, "out of memory");
    else if (json_is_true(json_object_get(f, "is_dir"))) st = proxy_walk(c, top, child, depth + 1, l, cap);
    else if (l->n >= MAX_PROXY_FILES) st = im_error(IM_ERR_LIMIT, "more than %d artifact files", MAX_PROXY_FILES);
    else {
      if (l->n == *cap) {
        int64_t nc = *cap ? *cap * 2 : 32;
        im_track_file_info_t *it = im_realloc(l->items, (size_t)nc * sizeof *it);
        if (!it) st = im_error(IM_ERR_NOMEM, "out of memory");
        else {
          l->items = it;
          *cap = nc;
        }
      }
      if (!st) {
        l->items[l->n++] = (im_track_file_info_t){child, 0, jint(f, "file_size", 0)};
        child = NULL;
      }
    }
    im_free(child);
  }
  json_decref(ans);
  im_free(url);
  im_buf_free(&q);
  im_free(dir);
  return st;
}

/* Downloads the proxy tree (or file) rel into dst, which appears whole. */
static im_status_t proxy_fetch(im_track_client_t *c, const char *rel, const char *dst) {
  im_track_file_list_t l = {0};
  int64_t cap = 0;
  im_status_t st = proxy_walk(c, rel, "", 0, &l, &cap);
  size_t n = strlen(dst) + 48;
  char *tmp = im_malloc(n);
  char hex[33];
  im__trk_uuid_hex(hex);
  if (!tmp) st = im_error(IM_ERR_NOMEM, "out of memory");
  else snprintf(tmp, n, "%s.tmp-%ld-%.8s", dst, (long)getpid(), hex);
  int single = !st && l.n == 0; /* rel names a file */
  for (int64_t i = 0; !st && i <= (single ? 0 : l.n - 1); i++) {
    char *src = single ? im_strdup(rel) : im_path_join(rel, l.items[i].path);
    char *to = single ? im_strdup(tmp) : im_path_join(tmp, l.items[i].path);
    char *url = NULL;
    if (!src || !to) st = im_error(IM_ERR_NOMEM, "out of memory");
    if (!st && !single) {
      char *slash = strrchr(to, '/');
      *slash = '\0';
      st = im_mkdir_p(to);
      *slash = '/';
    }
    if (!st) st = proxy_url(c, src, NULL, &url);
    if (!st) {
      im_http_request_t rq = {.method = "GET", .url = url, .download_path = to};
      im_http_response_t r = {0};
      st = im_http_client_request(c->http, &rq, &r);
      if (!st && r.status != 200)
        st = im_error(r.status == 404 ? IM_ERR_NOT_FOUND : IM_ERR_IO, "GET %s: HTTP %ld", url, r.status);
      im_http_response_deinit(&r);
    }
    im_free(url);
    im_free(src);
    im_free(to);
  }
  if (!st && rename(tmp, dst) != 0 && !im_is_dir(dst)) st = im_error(IM_ERR_IO, "cannot move %s into place", dst);
  if (st && tmp) { /* leftovers of a failed download */
    im_track_artifacts_t *a = NULL;
    if (im_track_artifacts_open(tmp, &a) == IM_OK) (void)im_track_artifacts_delete(a, "");
    im_track_artifacts_free(a);
    unlink(tmp);
  }
  for (int64_t i = 0; i < l.n; i++) im_free(l.items[i].path);
  im_free(l.items);
  im_free(tmp);
  return st;
}

static im_status_t rest_log_artifacts(im_track_client_t *c, const char *artifact_uri, const char *local_path,
                                      const char *artifact_path) {
  char *rel = proxy_rel(artifact_uri);
  if (!rel) { /* s3:// or a local path: straight there */
    im_track_artifacts_t *a = NULL;
    im_status_t st = im_track_artifacts_open(artifact_uri, &a);
    if (!st) st = im__trk_client_put(a, local_path, artifact_path);
    im_track_artifacts_free(a);
    return st;
  }
  im_status_t st = IM_OK;
  if (im_is_dir(local_path)) {
    im_track_artifacts_t *src = NULL; /* the local tree, listed through the file store */
    im_track_file_list_t *l = NULL;
    st = im_track_artifacts_open(local_path, &src);
    if (!st) st = im_track_artifacts_list_all(src, "", &l);
    for (int64_t i = 0; !st && i < l->n; i++) {
      char *a = artifact_path ? im_path_join(rel, artifact_path) : im_strdup(rel);
      char *to = a ? im_path_join(a, l->items[i].path) : NULL, *from = im_path_join(local_path, l->items[i].path);
      st = to && from ? proxy_put(c, to, from) : im_error(IM_ERR_NOMEM, "out of memory");
      im_free(a);
      im_free(to);
      im_free(from);
    }
    im_track_file_list_free(l);
    im_track_artifacts_free(src);
  } else {
    const char *base = strrchr(local_path, '/');
    base = base ? base + 1 : local_path;
    char *to = im_path_join(rel, artifact_path ? artifact_path : base);
    st = to ? proxy_put(c, to, local_path) : im_error(IM_ERR_NOMEM, "out of memory");
    im_free(to);
  }
  im_free(rel);
  return st;
}

/* ---- model URIs ------------------------------------------------------------------------------------ */

/* The download URI and run of a registered version. */
static im_status_t version_location(im_track_client_t *c, const char *name, const char *version, char **loc,
                                    char **run_id) {
  json_t *ans = NULL;
  im_status_t st = call(c, "GET", "model-versions/get", json_pack("{s:s,s:s}", "name", name, "version", version), &ans);
  if (st) return st;
  const char *rid = json_string_value(json_object_get(json_object_get(ans, "model_version"), "run_id"));
  if (rid && *rid && !(*run_id = im_strdup(rid))) st = im_error(IM_ERR_NOMEM, "out of memory");
  json_decref(ans);
  if (!st)
    st = call(c, "GET", "model-versions/get-download-uri", json_pack("{s:s,s:s}", "name", name, "version", version), &ans);
  if (st) return st;
  const char *u = json_string_value(json_object_get(ans, "artifact_uri"));
  if (!u) st = im_error(IM_ERR_FORMAT, "get-download-uri answered without an artifact_uri");
  else if (!(*loc = im_strdup(u))) st = im_error(IM_ERR_NOMEM, "out of memory");
  json_decref(ans);
  return st;
}

static im_status_t model_location(im_track_client_t *c, const im_track_uri_t *u, char **loc, char **run_id) {
  char ver[32];
  if (u->version > 0) {
    snprintf(ver, sizeof ver, "%" PRId64, u->version);
    return version_location(c, u->name, ver, loc, run_id);
  }
  json_t *ans = NULL;
  im_status_t st;
  if (u->alias) {
    st = call(c, "GET", "registered-models/alias", json_pack("{s:s,s:s}", "name", u->name, "alias", u->alias), &ans);
    const char *v = st ? NULL : json_string_value(json_object_get(json_object_get(ans, "model_version"), "version"));
    if (!st && !v) st = im_error(IM_ERR_FORMAT, "registered-models/alias answered without a version");
    if (!st) snprintf(ver, sizeof ver, "%.20s", v);
  } else {
    json_t *req = json_pack("{s:s}", "name", u->name);
    if (req && strcmp(u->stage, "latest")) json_object_set_new(req, "stages", json_pack("[s]", u->stage));
    st = call(c, "POST", "registered-models/get-latest-versions", req, &ans);
    int64_t best = 0;
    const json_t *vs = json_object_get(ans, "model_versions");
    for (size_t i = 0; !st && i < json_array_size(vs); i++) {
      int64_t v = jint(json_array_get(vs, i), "version", 0);
      if (v > best) best = v;
    }
    if (!st && !best) st = im_error(IM_ERR_NOT_FOUND, "registered model %s has no version in stage %s", u->name, u->stage);
    snprintf(ver, sizeof ver, "%" PRId64, best);
  }
  json_decref(ans);
  return st ? st : version_location(c, u->name, ver, loc, run_id);
}

/* Where a model URI's files are on the server (an artifact URI) and its run. */
static im_status_t rest_model_location(im_track_client_t *c, const char *uri, char **loc, char **rid) {
  im_track_uri_t *u = NULL, *u2 = NULL;
  im_status_t st = im_track_uri_parse(uri, &u);
  if (st) return st;
  if (u->kind == IM_TRACK_URI_RUNS) {
    im_track_run_t *r = NULL;
    if (!(st = rest_run_get(c, u->run_id, &r))) {
      *loc = *u->path ? im__trk_join_uri(r->artifact_uri, u->path) : im_strdup(r->artifact_uri);
      *rid = im_strdup(r->run_id);
      if (!*loc || !*rid) st = im_error(IM_ERR_NOMEM, "out of memory");
    }
    im_track_run_free(r);
  } else if (u->kind == IM_TRACK_URI_MODELS) {
    st = model_location(c, u, loc, rid);
    if (!st && !strncasecmp(*loc, "runs:", 5)) { /* mlflow server hands out a runs:/ source as it is */
      char *src = *loc, *r2 = NULL;
      *loc = NULL;
      st = im_track_uri_parse(src, &u2) ? im_error(IM_ERR_FORMAT, "%s: bad source %s", uri, src)
           : u2->kind != IM_TRACK_URI_RUNS ? im_error(IM_ERR_FORMAT, "%s: bad source %s", uri, src)
                                            : rest_model_location(c, src, loc, &r2);
      if (!st && !*rid) {
        *rid = r2;
        r2 = NULL;
      }
      im_free(r2);
      im_free(src);
    }
  } else {
    *loc = im_strdup(uri);
    if (!*loc) st = im_error(IM_ERR_NOMEM, "out of memory");
  }
  im_track_uri_free(u);
  im_track_uri_free(u2);
  return st;
}

static im_status_t rest_fetch_model(im_track_client_t *c, const char *uri, const char *cache_dir, char **local_dir,
                                    char **run_id) {
  char *loc = NULL, *rid = NULL;
  im_status_t st = rest_model_location(c, uri, &loc, &rid);
  char *rel = loc ? proxy_rel(loc) : NULL;
  if (!st && !rel && !strncasecmp(loc, "runs:", 5)) { /* a version whose download URI is still runs:/ */
    im_free(rid);
    rid = NULL;
    im_free(loc);
    loc = NULL;
    st = IM_ERR_NOT_FOUND;
    im_error(st, "the server gave a runs:/ download URI for %s", uri);
  }
  if (!st && !rel) {
    st = im_track_artifacts_fetch(loc, cache_dir, local_dir);
  } else if (!st) {
    char *cache = im__trk_cache_dir(cache_dir);
    char hx[40];
    im_hash_t h;
    im_hash_init(&h, 0x696d6f7073ULL);
    im_hash_update(&h, c->base, strlen(c->base));
    im_hash_update(&h, loc, strlen(loc));
    snprintf(hx, sizeof hx, "%016" PRIx64, im_hash_final(&h));
    const char *base = strrchr(rel, '/');
    char *dir = cache ? im_path_join(cache, hx) : NULL;
    char *dst = dir ? im_path_join(dir, base ? base + 1 : (*rel ? rel : "artifacts")) : NULL;
    if (!dst) st = im_error(IM_ERR_NOMEM, "out of memory");
    if (!st) st = im_mkdir_p(dir);
    if (!st && access(dst, F_OK) != 0) st = proxy_fetch(c, rel, dst);
    if (!st) {
      *local_dir = dst;
      dst = NULL;
    }
    im_free(dst);
    im_free(dir);
    im_free(cache);
  }
  if (!st && run_id) {
    *run_id = rid;
    rid = NULL;
  }
  im_free(rid);
  im_free(rel);
  im_free(loc);
  return st;
}

static void rest_close(im_track_client_t *c) {
  im_http_client_free(c->http);
  im_free(c->base);
}

const im__trk_client_ops_t im__trk_rest_ops = {
    rest_experiment_id, rest_run_create,    rest_run_get,     rest_run_update,     rest_set_tag, rest_log_batch,
    rest_history,       rest_log_artifacts, rest_fetch_model, rest_model_location, rest_close,
};
