/* The sweep state behind agents, create, show and list: either the embedded
 * store (src/track/sweeps.c straight) or `imops server`'s sweep endpoints
 * (/api/2.0/imops/sweeps/..., src/server/sweeps.c) through the REST tracking
 * client, with the sweep's runs (parent run, tags, metrics) going the same
 * way. The server runs the same im_sweep_claim / im_sweep_step as the
 * embedded path, inside its store's transaction, so agents on several
 * machines claim each trial exactly once. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imops/http.h"
#include "sweep/sweep_impl.h"


im_status_t im_sweep_state_open(const char *where, im_sweep_state_t **out) {
  *out = NULL;
  im_sweep_state_t *s = im_calloc(1, sizeof *s);
  if (!s) return im_error(IM_ERR_NOMEM, "out of memory");
  const char *env = getenv("MLFLOW_TRACKING_URI");
  if (!where && im_track_uri_is_server(env)) where = env;
  im_status_t st = im_track_uri_is_server(where) ? im_track_client_open(where, &s->tc) : im_track_open(where, &s->store);
  s->own_store = s->store != NULL;
  if (st) {
    im_sweep_state_close(s);
    return st;
  }
  *out = s;
  return IM_OK;
}

void im_sweep_state_close(im_sweep_state_t *s) {
  if (!s) return;
  if (s->own_store) im_track_close(s->store);
  im_track_client_close(s->tc);
  im_free(s);
}

int im_sweep_state_is_remote(const im_sweep_state_t *s) { return s->tc != NULL; }

const char *im__sweep_state_where(im_sweep_state_t *s) {
  return s->tc ? im_track_client_where(s->tc) : im_track_home(s->store);
}

/* ---- JSON of the endpoints back to rows ------------------------------------------------------ */
static char *jstr(const json_t *o, const char *k, int *oom) {
  const char *v = json_string_value(json_object_get(o, k));
  if (!v) return NULL;
  char *d = im_strdup(v);
  if (!d) *oom = 1;
  return d;
}

static int64_t jint(const json_t *o, const char *k, int64_t def) {
  const json_t *v = json_object_get(o, k);
  return json_is_integer(v) ? (int64_t)json_integer_value(v) : def;
}

static double jnum(const json_t *o, const char *k) {
  const json_t *v = json_object_get(o, k);
  return json_is_number(v) ? json_number_value(v) : NAN;
}

static im_status_t row_from_json(const json_t *j, im_track_sweep_t *w) {
  int oom = 0;
  w->sweep_id = jstr(j, "sweep_id", &oom);
  w->name = jstr(j, "name", &oom);
  w->experiment_id = jstr(j, "experiment_id", &oom);
  w->config = jstr(j, "config", &oom);
  w->method = jstr(j, "method", &oom);
  w->metric_name = jstr(j, "metric_name", &oom);
  w->metric_goal = jstr(j, "metric_goal", &oom);
  w->state = jstr(j, "state", &oom);
  w->max_trials = jint(j, "max_trials", 0);
  w->creation_time = jint(j, "creation_time", 0);
  w->last_update_time = jint(j, "last_update_time", 0);
  if (oom) return im_error(IM_ERR_NOMEM, "out of memory");
  if (!w->sweep_id || !w->name || !w->config || !w->method || !w->state)
    return im_error(IM_ERR_FORMAT, "the server's sweep answer lacks sweep_id, name, config, method or state");
  return IM_OK;
}

static im_status_t trial_from_json(const json_t *j, im_track_sweep_trial_t *t) {
  int oom = 0;
  t->trial = jint(j, "trial", 0);
  t->params = jstr(j, "params", &oom);
  t->state = jstr(j, "state", &oom);
  t->agent_id = jstr(j, "agent_id", &oom);
  t->run_id = jstr(j, "run_id", &oom);
  t->claimed_time = jint(j, "claimed_time", IM_TRACK_NO_TIME);
  t->heartbeat_time = jint(j, "heartbeat_time", IM_TRACK_NO_TIME);
  t->finished_time = jint(j, "finished_time", IM_TRACK_NO_TIME);
  t->objective = jnum(j, "objective");
  if (oom) return im_error(IM_ERR_NOMEM, "out of memory");
  if (t->trial < 1 || !t->params || !t->state)
    return im_error(IM_ERR_FORMAT, "the server's trial answer lacks trial, params or state");
  return IM_OK;
}

/* GET imops/sweeps/get: the sweep's row, trials and steps in one answer. */
static im_status_t rest_get(im_sweep_state_t *s, const char *sweep_id, json_t **out) {
  im_buf_t q = {0};
  im_status_t st = im_http_url_encode(&q, sweep_id, strlen(sweep_id), NULL);
  char path[256];
  if (st == IM_OK) snprintf(path, sizeof path, "imops/sweeps/get?sweep_id=%.*s", (int)(q.len < 200 ? q.len : 200),
                            (const char *)q.data);
  im_buf_free(&q);
  return st ? st : im_track_client_call(s->tc, "GET", path, NULL, out);
}

im_status_t im__sweep_st_get(im_sweep_state_t *s, const char *sweep_id, im_track_sweep_t **out) {
  *out = NULL;
  if (s->store) return im_track_sweep_get(s->store, sweep_id, out);
  json_t *ans = NULL;
  im_status_t st = rest_get(s, sweep_id, &ans);
  im_track_sweep_t *w = st ? NULL : im_calloc(1, sizeof *w);
  if (!st && !w) st = im_error(IM_ERR_NOMEM, "out of memory");
  if (!st) st = row_from_json(json_object_get(ans, "sweep"), w);
  json_decref(ans);
  if (st) {
    im_track_sweep_free(w);
    return st;
  }
  *out = w;
  return IM_OK;
}

/* Parsers and freers of the arrays' elements, in one shape for rest_array. */
static im_status_t p_trial(const json_t *j, void *e) { return trial_from_json(j, e); }
static im_status_t p_sweep(const json_t *j, void *e) { return row_from_json(j, e); }
static im_status_t p_step(const json_t *j, void *e) {
  *(im_track_sweep_step_t *)e = (im_track_sweep_step_t){jint(j, "trial", 0), jint(j, "step", 0), jnum(j, "value")};
  return IM_OK;
}
static void f_trials(void *v, int64_t n) { im_track_sweep_trials_free(v, n); }
static void f_sweeps(void *v, int64_t n) { im_track_sweep_list_free(v, n); }
static void f_steps(void *v, int64_t n) { (void)n, im_free(v); }

/* The array ans[key] of an answer (st: the call's status; ans released) as a
 * new array of elements of size sz, each parsed by parse. */
static im_status_t rest_array(im_status_t st, json_t *ans, const char *key, size_t sz,
                              im_status_t (*parse)(const json_t *, void *), void (*freev)(void *, int64_t),
                              void **items, int64_t *n) {
  const json_t *arr = json_object_get(ans, key);
  size_t k = json_array_size(arr);
  char *v = st ? NULL : im_calloc(k + 1, sz);
  if (!st && !v) st = im_error(IM_ERR_NOMEM, "out of memory");
  for (size_t i = 0; st == IM_OK && i < k; i++) st = parse(json_array_get(arr, i), v + i * sz);
  json_decref(ans);
  if (st) {
    if (v) freev(v, (int64_t)k);
    return st;
  }
  *items = v;
  *n = (int64_t)k;
  return IM_OK;
}

im_status_t im_sweep_state_trials(im_sweep_state_t *s, const char *sweep_id, im_track_sweep_trial_t **items,
                                  int64_t *n) {
  *items = NULL;
  *n = 0;
  if (s->store) return im_track_sweep_trials(s->store, sweep_id, items, n);
  json_t *ans = NULL;
  im_status_t st = rest_get(s, sweep_id, &ans);
  return rest_array(st, ans, "trials", sizeof **items, p_trial, f_trials, (void **)items, n);
}

im_status_t im__sweep_st_steps(im_sweep_state_t *s, const char *sweep_id, im_track_sweep_step_t **items, int64_t *n) {
  *items = NULL;
  *n = 0;
  if (s->store) return im_track_sweep_steps(s->store, sweep_id, items, n);
  json_t *ans = NULL;
  im_status_t st = rest_get(s, sweep_id, &ans);
  return rest_array(st, ans, "steps", sizeof **items, p_step, f_steps, (void **)items, n);
}

im_status_t im_sweep_state_sweeps(im_sweep_state_t *s, im_track_sweep_t **items, int64_t *n) {
  *items = NULL;
  *n = 0;
  if (s->store) return im_track_sweep_list(s->store, items, n);
  json_t *ans = NULL;
  im_status_t st = im_track_client_call(s->tc, "GET", "imops/sweeps/list", NULL, &ans);
  return rest_array(st, ans, "sweeps", sizeof **items, p_sweep, f_sweeps, (void **)items, n);
}

/* POSTs body (stolen) to imops/sweeps/<what>; *out (may be NULL) gets the answer. */
static im_status_t post(im_sweep_state_t *s, const char *what, json_t *body, json_t **out) {
  char path[96];
  snprintf(path, sizeof path, "imops/sweeps/%s", what);
  if (!body) return im_error(IM_ERR_NOMEM, "out of memory");
  return im_track_client_call(s->tc, "POST", path, body, out);
}

im_status_t im__sweep_st_create(im_sweep_state_t *s, const im_track_sweep_t *in, char **id_out) {
  *id_out = NULL;
  if (s->store) return im_track_sweep_create(s->store, in, id_out);
  json_t *ans = NULL;
  im_status_t st = post(s, "create",
                        json_pack("{s:s,s:s?,s:s,s:s,s:s?,s:s?,s:I}", "name", in->name, "experiment_id",
                                  in->experiment_id, "config", in->config, "method", in->method, "metric_name",
                                  in->metric_name, "metric_goal", in->metric_goal, "max_trials",
                                  (json_int_t)in->max_trials),
                        &ans);
  const char *id = json_string_value(json_object_get(ans, "sweep_id"));
  if (!st && !id) st = im_error(IM_ERR_FORMAT, "the server's answer to imops/sweeps/create has no sweep_id");
  if (!st && !(*id_out = im_strdup(id))) st = im_error(IM_ERR_NOMEM, "out of memory");
  json_decref(ans);
  return st;
}

im_status_t im__sweep_st_set_state(im_sweep_state_t *s, const char *sweep_id, const char *state) {
  if (s->store) return im_track_sweep_set_state(s->store, sweep_id, state);
  return post(s, "set-state", json_pack("{s:s,s:s}", "sweep_id", sweep_id, "state", state), NULL);
}

im_status_t im__sweep_st_claim(im_sweep_state_t *s, const char *sweep_id, const char *agent_id, int64_t stale_ms,
                               int64_t limit, im_track_sweep_trial_t **out) {
  *out = NULL;
  if (s->store) return im_sweep_claim(s->store, sweep_id, agent_id, stale_ms, limit, out);
  json_t *ans = NULL;
  im_status_t st = post(s, "claim",
                        json_pack("{s:s,s:s,s:I,s:I}", "sweep_id", sweep_id, "agent_id", agent_id, "stale_ms",
                                  (json_int_t)stale_ms, "limit", (json_int_t)limit),
                        &ans);
  const json_t *tj = json_object_get(ans, "trial");
  if (!st && tj) {
    im_track_sweep_trial_t *t = im_calloc(1, sizeof *t);
    st = t ? trial_from_json(tj, t) : im_error(IM_ERR_NOMEM, "out of memory");
    if (st) im_track_sweep_trials_free(t, t ? 1 : 0);
    else *out = t;
  }
  json_decref(ans);
  return st;
}

im_status_t im__sweep_st_update(im_sweep_state_t *s, const char *sweep_id, int64_t trial, const char *agent_id,
                                const char *state, const char *run_id, double objective) {
  if (s->store) return im_track_sweep_trial_update(s->store, sweep_id, trial, agent_id, state, run_id, objective);
  json_t *b = json_pack("{s:s,s:I,s:s,s:s?,s:s?}", "sweep_id", sweep_id, "trial", (json_int_t)trial, "agent_id",
                        agent_id, "state", state, "run_id", run_id);
  if (b && isfinite(objective)) json_object_set_new(b, "objective", json_real(objective));
  return post(s, state || run_id || isfinite(objective) ? "update-trial" : "heartbeat", b, NULL);
}

im_status_t im__sweep_st_report(im_sweep_state_t *s, const char *sweep_id, int64_t trial, const char *agent_id,
                                int64_t step, double value, int *stop) {
  *stop = 0;
  if (s->store) return im_sweep_step(s->store, sweep_id, trial, agent_id, step, value, stop);
  json_t *ans = NULL;
  /* NaN / infinities travel as MLflow writes them, in strings */
  json_t *v = isfinite(value) ? json_real(value) : json_string(isnan(value) ? "NaN" : value > 0 ? "Infinity" : "-Infinity");
  im_status_t st = post(s, "report",
                        json_pack("{s:s,s:I,s:s,s:I,s:o}", "sweep_id", sweep_id, "trial", (json_int_t)trial,
                                  "agent_id", agent_id, "step", (json_int_t)step, "value", v),
                        &ans);
  if (!st) *stop = json_is_true(json_object_get(ans, "prune"));
  json_decref(ans);
  return st;
}

im_status_t im__sweep_st_agent_start(im_sweep_state_t *s, const char *sweep_id, const char *agent_id, const char *host,
                                     int64_t pid) {
  if (s->store) return im_track_sweep_agent_start(s->store, sweep_id, agent_id, host, pid);
  return post(s, "agent-start",
              json_pack("{s:s,s:s,s:s,s:I}", "sweep_id", sweep_id, "agent_id", agent_id, "host", host ? host : "",
                        "pid", (json_int_t)pid),
              NULL);
}

im_status_t im__sweep_st_agent_end(im_sweep_state_t *s, const char *agent_id, const char *state) {
  if (s->store) return im_track_sweep_agent_end(s->store, agent_id, state);
  return post(s, "agent-end", json_pack("{s:s,s:s}", "agent_id", agent_id, "state", state), NULL);
}

/* ---- runs ---------------------------------------------------------------------------------------- */
im_status_t im__sweep_st_experiment_id(im_sweep_state_t *s, const char *name, char **id) {
  *id = NULL;
  if (!name) name = "Default";
  if (s->tc) return im_track_client_experiment_id(s->tc, name, id);
  im_track_experiment_t *e = NULL;
  im_status_t st = im_track_experiment_get_by_name(s->store, name, &e);
  if (st == IM_OK) {
    *id = im_strdup(e->experiment_id);
    im_track_experiment_free(e);
    return *id ? IM_OK : im_error(IM_ERR_NOMEM, "out of memory");
  }
  if (st != IM_ERR_NOT_FOUND) return st;
  st = im_track_experiment_create(s->store, name, NULL, NULL, 0, id);
  if (st == IM_ERR_EXISTS) return im__sweep_st_experiment_id(s, name, id);
  return st;
}

im_status_t im__sweep_st_run_create(im_sweep_state_t *s, const im_track_run_create_t *rc, im_track_run_t **out) {
  return s->tc ? im_track_client_run_create(s->tc, rc, out) : im_track_run_create(s->store, rc, out);
}

im_status_t im__sweep_st_run_get(im_sweep_state_t *s, const char *run_id, im_track_run_t **out) {
  return s->tc ? im_track_client_run_get(s->tc, run_id, out) : im_track_run_get(s->store, run_id, out);
}

im_status_t im__sweep_st_set_tag(im_sweep_state_t *s, const char *run_id, const char *key, const char *value) {
  return s->tc ? im_track_client_set_tag(s->tc, run_id, key, value) : im_track_run_set_tag(s->store, run_id, key, value);
}

im_status_t im__sweep_st_log_metric(im_sweep_state_t *s, const char *run_id, const char *key, double v, int64_t step) {
  im_track_metric_in_t m = {.key = key, .value = v, .timestamp = im_time_wall_ms(), .step = step};
  return s->tc ? im_track_client_log_batch(s->tc, run_id, &m, 1, NULL, 0, NULL, 0)
               : im_track_log_metric(s->store, run_id, key, v, m.timestamp, step);
}

im_status_t im__sweep_st_run_finish(im_sweep_state_t *s, const char *run_id) {
  im_track_run_update_t up = {.status = IM_TRACK_RUN_FINISHED, .end_time = im_time_wall_ms()};
  return s->tc ? im_track_client_run_update(s->tc, run_id, &up) : im_track_run_update(s->store, run_id, &up, NULL);
}
