/* imops-specific sweep endpoints (/api/2.0/imops/sweeps/...): agents on
 * several machines share a sweep through the server. create, get (with its
 * trials), list, claim (the next trial, claimed atomically in the store's
 * write transaction with the search running inside it), heartbeat,
 * update-trial (run id, final state, objective), report (a per-epoch value;
 * the answer says whether hyperband prunes the trial), set-state,
 * agent-start / agent-end. Thin over src/track/sweeps.c and im_sweep_claim /
 * im_sweep_step; errors in MLflow's style. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "imops/sweep.h"
#include "imops/track_sweep.h"
#include "server/server_impl.h"

static int valid_id(const char *id) {
  size_t n = strlen(id);
  if (n == 0 || n > 64) return 0;
  for (size_t i = 0; i < n; i++)
    if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'z'))) return 0;
  return 1;
}

/* The required sweep_id, checked. */
static im_status_t sweep_id(srv_ctx_t *c, const char **id) {
  im_status_t st = im__srv_req(c, "sweep_id", id);
  if (st) return st;
  if (!valid_id(*id)) return im__srv_fail(c, SRV_INVALID, "Invalid value '%s' for parameter 'sweep_id'", *id);
  return IM_OK;
}

/* The required agent_id: 1..95 printable characters. */
static im_status_t agent_id(srv_ctx_t *c, const char **id) {
  im_status_t st = im__srv_req(c, "agent_id", id);
  if (st) return st;
  size_t n = strlen(*id);
  int ok = n > 0 && n < 96;
  for (size_t i = 0; ok && i < n; i++) ok = (unsigned char)(*id)[i] > 0x20 && (*id)[i] != 0x7f;
  if (!ok) return im__srv_fail(c, SRV_INVALID, "Invalid value for parameter 'agent_id' (1 to 95 printable characters)");
  return IM_OK;
}

static im_status_t nonneg(srv_ctx_t *c, const char *key, int64_t def, int64_t *out) {
  im_status_t st = im__srv_i64(c, key, def, out);
  if (st) return st;
  if (*out < 0) return im__srv_fail(c, SRV_INVALID, "Invalid value %lld for parameter '%s' (must be >= 0)",
                                    (long long)*out, key);
  return IM_OK;
}

/* A store failure; a trial the agent no longer holds (reclaimed as stale) is
 * 409 ABORTED: the agent drops the trial and goes on. */
static im_status_t trial_fail(srv_ctx_t *c, im_status_t st) {
  if (st == IM_ERR_STATE) return im__srv_fail(c, "ABORTED", "%s", im_last_error());
  return im__srv_store_fail(c, st);
}

static json_t *num(double v) { return isfinite(v) ? json_real(v) : json_null(); }
static json_t *opt_time(int64_t t) { return t == IM_TRACK_NO_TIME ? json_null() : json_integer(t); }

static json_t *sweep_json(const im_track_sweep_t *w) {
  return json_pack("{s:s,s:s,s:s?,s:s,s:s,s:s?,s:s?,s:s,s:I,s:I,s:I}", "sweep_id", w->sweep_id, "name", w->name,
                   "experiment_id", w->experiment_id, "config", w->config, "method", w->method, "metric_name",
                   w->metric_name, "metric_goal", w->metric_goal, "state", w->state, "max_trials",
                   (json_int_t)w->max_trials, "creation_time", (json_int_t)w->creation_time, "last_update_time",
                   (json_int_t)w->last_update_time);
}

static json_t *trial_json(const im_track_sweep_trial_t *t) {
  return json_pack("{s:I,s:s,s:s,s:s?,s:s?,s:o,s:o,s:o,s:o}", "trial", (json_int_t)t->trial, "params", t->params,
                   "state", t->state, "agent_id", t->agent_id, "run_id", t->run_id, "claimed_time",
                   opt_time(t->claimed_time), "heartbeat_time", opt_time(t->heartbeat_time), "finished_time",
                   opt_time(t->finished_time), "objective", num(t->objective));
}

static im_status_t create(srv_ctx_t *c) {
  const char *name, *config, *method;
  im_status_t st;
  if ((st = im__srv_req(c, "name", &name)) || (st = im__srv_req(c, "config", &config)) ||
      (st = im__srv_req(c, "method", &method)))
    return st;
  if (strcmp(method, "grid") && strcmp(method, "random") && strcmp(method, "bayes"))
    return im__srv_fail(c, SRV_INVALID, "Invalid value '%s' for parameter 'method' (grid, random or bayes)", method);
  /* what agents read back: {"config": <W&B sweep config>, "imops": {parent_run_id, data, seed, experiment_id}} */
  json_t *doc = json_loads(config, 0, NULL);
  char *wb = json_is_object(json_object_get(doc, "config")) && json_is_object(json_object_get(doc, "imops"))
                 ? json_dumps(json_object_get(doc, "config"), JSON_COMPACT)
                 : NULL;
  json_decref(doc);
  if (!wb) return im__srv_fail(c, SRV_INVALID, "Invalid value for parameter 'config' (a JSON object as text with "
                               "the sweep configuration under \"config\" and imops' settings under \"imops\")");
  im_sweep_config_t *cfg = NULL;
  st = im_sweep_config_parse(wb, strlen(wb), "config", &cfg);
  free(wb);
  im_sweep_config_free(cfg);
  if (st) return im__srv_fail(c, SRV_INVALID, "Invalid value for parameter 'config': %s", im_last_error());
  const char *goal = im__srv_str(c, "metric_goal");
  if (goal && strcmp(goal, "minimize") && strcmp(goal, "maximize"))
    return im__srv_fail(c, SRV_INVALID, "Invalid value '%s' for parameter 'metric_goal' (minimize or maximize)", goal);
  int64_t cap;
  if ((st = nonneg(c, "max_trials", 0, &cap))) return st;
  im_track_sweep_t w = {.name = (char *)(uintptr_t)name, .experiment_id = (char *)(uintptr_t)im__srv_str(c, "experiment_id"),
                        .config = (char *)(uintptr_t)config, .method = (char *)(uintptr_t)method,
                        .metric_name = (char *)(uintptr_t)im__srv_str(c, "metric_name"),
                        .metric_goal = (char *)(uintptr_t)goal, .max_trials = cap};
  char *id = NULL;
  if ((st = im_track_sweep_create(c->st, &w, &id))) return im__srv_store_fail(c, st);
  json_t *j = im__srv_obj1("sweep_id", json_string(id));
  im_free(id);
  return j ? im__srv_ok(c, j) : im_error(IM_ERR_NOMEM, "out of memory");
}

static im_status_t get(srv_ctx_t *c) {
  const char *id;
  im_status_t st = sweep_id(c, &id);
  if (st) return st;
  im_track_sweep_t *w = NULL;
  im_track_sweep_trial_t *tr = NULL;
  im_track_sweep_step_t *steps = NULL;
  int64_t n = 0, ns = 0;
  if ((st = im_track_sweep_get(c->st, id, &w)) || (st = im_track_sweep_trials(c->st, id, &tr, &n)) ||
      (st = im_track_sweep_steps(c->st, id, &steps, &ns))) {
    st = im__srv_store_fail(c, st);
    goto done;
  }
  json_t *trials = json_array(), *jsteps = json_array();
  for (int64_t i = 0; trials && i < n; i++) json_array_append_new(trials, trial_json(&tr[i]));
  for (int64_t i = 0; jsteps && i < ns; i++)
    json_array_append_new(jsteps, json_pack("{s:I,s:I,s:o}", "trial", (json_int_t)steps[i].trial, "step",
                                            (json_int_t)steps[i].step, "value", num(steps[i].value)));
  json_t *j = json_pack("{s:o?,s:o?,s:o?}", "sweep", sweep_json(w), "trials", trials, "steps", jsteps);
  st = j ? im__srv_ok(c, j) : im_error(IM_ERR_NOMEM, "out of memory");
done:
  im_track_sweep_free(w);
  im_track_sweep_trials_free(tr, n);
  im_free(steps);
  return st;
}

static im_status_t list(srv_ctx_t *c) {
  im_track_sweep_t *items = NULL;
  int64_t n = 0;
  im_status_t st = im_track_sweep_list(c->st, &items, &n);
  if (st) return im__srv_store_fail(c, st);
  json_t *a = json_array();
  for (int64_t i = 0; a && i < n; i++) json_array_append_new(a, sweep_json(&items[i]));
  im_track_sweep_list_free(items, n);
  json_t *j = im__srv_obj1("sweeps", a);
  return j ? im__srv_ok(c, j) : im_error(IM_ERR_NOMEM, "out of memory");
}

static im_status_t claim(srv_ctx_t *c) {
  const char *id, *agent;
  int64_t stale, limit;
  im_status_t st;
  if ((st = sweep_id(c, &id)) || (st = agent_id(c, &agent)) || (st = nonneg(c, "stale_ms", 0, &stale)) ||
      (st = nonneg(c, "limit", 0, &limit)))
    return st;
  im_track_sweep_trial_t *t = NULL;
  if ((st = im_sweep_claim(c->st, id, agent, stale, limit, &t))) return im__srv_store_fail(c, st);
  json_t *j = t ? im__srv_obj1("trial", trial_json(t)) : json_object();
  im_track_sweep_trials_free(t, t ? 1 : 0);
  return j ? im__srv_ok(c, j) : im_error(IM_ERR_NOMEM, "out of memory");
}

/* sweep_id, trial (>= 1) and agent_id: what the trial endpoints share. */
static im_status_t trial_args(srv_ctx_t *c, const char **id, int64_t *trial, const char **agent) {
  im_status_t st;
  if ((st = sweep_id(c, id)) || (st = im__srv_req_i64(c, "trial", trial)) || (st = agent_id(c, agent))) return st;
  if (*trial < 1) return im__srv_fail(c, SRV_INVALID, "Invalid value %lld for parameter 'trial' (must be >= 1)",
                                      (long long)*trial);
  return IM_OK;
}

static im_status_t heartbeat(srv_ctx_t *c) {
  const char *id, *agent;
  int64_t trial;
  im_status_t st = trial_args(c, &id, &trial, &agent);
  if (st) return st;
  if ((st = im_track_sweep_trial_update(c->st, id, trial, agent, NULL, NULL, NAN))) return trial_fail(c, st);
  return im__srv_ok(c, NULL);
}

static const char *const trial_states[] = {"RUNNING", "FINISHED", "FAILED", "KILLED", "PRUNED", NULL};

static im_status_t update_trial(srv_ctx_t *c) {
  const char *id, *agent;
  int64_t trial;
  im_status_t st = trial_args(c, &id, &trial, &agent);
  if (st) return st;
  const char *state = im__srv_str(c, "state"), *run_id = im__srv_str(c, "run_id"), *obj = im__srv_str(c, "objective");
  if (state) {
    int ok = 0;
    for (const char *const *s = trial_states; *s && !ok; s++) ok = !strcmp(state, *s);
    if (!ok) return im__srv_fail(c, SRV_INVALID, "Invalid value '%s' for parameter 'state' "
                                 "(RUNNING, FINISHED, FAILED, KILLED or PRUNED)", state);
  }
  if (run_id && !valid_id(run_id)) return im__srv_fail(c, SRV_INVALID, "Invalid value for parameter 'run_id'");
  double v = NAN;
  if (obj && im__srv_parse_double(obj, &v))
    return im__srv_fail(c, SRV_INVALID, "Invalid value '%s' for parameter 'objective' (a number)", obj);
  if ((st = im_track_sweep_trial_update(c->st, id, trial, agent, state, run_id, v))) return trial_fail(c, st);
  return im__srv_ok(c, NULL);
}

static im_status_t report(srv_ctx_t *c) {
  const char *id, *agent, *value;
  int64_t trial, step;
  im_status_t st = trial_args(c, &id, &trial, &agent);
  if (st || (st = im__srv_req_i64(c, "step", &step)) || (st = im__srv_req(c, "value", &value))) return st;
  if (step < 1) return im__srv_fail(c, SRV_INVALID, "Invalid value %lld for parameter 'step' (must be >= 1)",
                                    (long long)step);
  double v;
  if (im__srv_parse_double(value, &v))
    return im__srv_fail(c, SRV_INVALID, "Invalid value '%s' for parameter 'value' (a number)", value);
  int stop = 0;
  if ((st = im_sweep_step(c->st, id, trial, agent, step, v, &stop))) return trial_fail(c, st);
  json_t *j = im__srv_obj1("prune", json_boolean(stop));
  return j ? im__srv_ok(c, j) : im_error(IM_ERR_NOMEM, "out of memory");
}

static im_status_t set_state(srv_ctx_t *c) {
  static const char *const states[] = {"PENDING", "RUNNING", "PAUSED", "FINISHED", "CANCELED", "FAILED", NULL};
  const char *id, *state;
  im_status_t st;
  if ((st = sweep_id(c, &id)) || (st = im__srv_req(c, "state", &state))) return st;
  int ok = 0;
  for (const char *const *s = states; *s && !ok; s++) ok = !strcmp(state, *s);
  if (!ok) return im__srv_fail(c, SRV_INVALID, "Invalid value '%s' for parameter 'state'", state);
  if ((st = im_track_sweep_set_state(c->st, id, state))) return im__srv_store_fail(c, st);
  return im__srv_ok(c, NULL);
}

static im_status_t agent_start(srv_ctx_t *c) {
  const char *id, *agent;
  int64_t pid;
  im_status_t st;
  if ((st = sweep_id(c, &id)) || (st = agent_id(c, &agent)) || (st = nonneg(c, "pid", 0, &pid))) return st;
  const char *host = im__srv_str(c, "host");
  if ((st = im_track_sweep_agent_start(c->st, id, agent, host ? host : "", pid))) return im__srv_store_fail(c, st);
  return im__srv_ok(c, NULL);
}

static im_status_t agent_end(srv_ctx_t *c) {
  const char *agent, *state;
  im_status_t st;
  if ((st = agent_id(c, &agent)) || (st = im__srv_req(c, "state", &state))) return st;
  if (strcmp(state, "FINISHED") && strcmp(state, "FAILED"))
    return im__srv_fail(c, SRV_INVALID, "Invalid value '%s' for parameter 'state' (FINISHED or FAILED)", state);
  if ((st = im_track_sweep_agent_end(c->st, agent, state))) return im__srv_store_fail(c, st);
  return im__srv_ok(c, NULL);
}

im_status_t im__srv_routes_sweeps(im_server_t *s) {
  static const srv_route_t r[] = {
      {"POST", "imops/sweeps/create", create},       {"GET", "imops/sweeps/get", get},
      {"GET", "imops/sweeps/list", list},            {"POST", "imops/sweeps/claim", claim},
      {"POST", "imops/sweeps/heartbeat", heartbeat}, {"POST", "imops/sweeps/update-trial", update_trial},
      {"POST", "imops/sweeps/report", report},       {"POST", "imops/sweeps/set-state", set_state},
      {"POST", "imops/sweeps/agent-start", agent_start}, {"POST", "imops/sweeps/agent-end", agent_end},
  };
  return im__srv_add_routes(s, r, sizeof r / sizeof r[0], SRV_STORE);
}
