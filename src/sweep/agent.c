/* Sweeps and the agents that run them, over a sweep state (state.c: the
 * embedded store or imops server): creating a sweep (its row and its parent
 * run), reading it back, and the agent loop: claim a trial atomically (the
 * search runs inside the claim, over every trial so far), run the objective,
 * report intermediate values for hyperband, record the result. Any number of
 * agents, in threads, processes or on machines sharing a server, share a sweep. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "imops/track_sweep.h"
#include "sweep/sweep_impl.h"

struct im_sweep_trial {
  im_sweep_state_t *store;
  const im_sweep_info_t *info;
  const char *agent_id;
  int64_t number;
  double *x;
  char *params;
  char *run_id;
  int pruned;
  double last;
};

int64_t im_sweep_trial_number(const im_sweep_trial_t *t) { return t->number; }
const double *im_sweep_trial_x(const im_sweep_trial_t *t) { return t->x; }
const char *im_sweep_trial_params(const im_sweep_trial_t *t) { return t->params; }
const im_sweep_info_t *im_sweep_trial_sweep(const im_sweep_trial_t *t) { return t->info; }
void im_sweep_trial_prune(im_sweep_trial_t *t) { t->pruned = 1; }
const char *im__sweep_trial_home(const im_sweep_trial_t *t) { return im__sweep_state_where(t->store); }
im_status_t im__sweep_trial_tag(im_sweep_trial_t *t, const char *key, const char *value) {
  if (!t->run_id) return im_error(IM_ERR_STATE, "the trial has no run");
  return im__sweep_st_set_tag(t->store, t->run_id, key, value);
}

im_status_t im_sweep_create(im_track_store_t *s, const im_sweep_config_t *c, const im_sweep_create_opts_t *o,
                            char **sweep_id) {
  im_sweep_state_t w = im__sweep_state_of(s);
  return im_sweep_state_create(&w, c, o, sweep_id);
}

im_status_t im_sweep_state_create(im_sweep_state_t *s, const im_sweep_config_t *c, const im_sweep_create_opts_t *o,
                                  char **sweep_id) {
  *sweep_id = NULL;
  im_sweep_create_opts_t def = {0};
  if (!o) o = &def;
  char *exp = NULL, *sid = NULL;
  im_track_run_t *run = NULL;
  json_t *doc = NULL;
  char *text = NULL;
  const char *name = o->name ? o->name : c->name ? c->name : "sweep";
  im_status_t st = im__sweep_st_experiment_id(s, o->experiment, &exp);
  if (st) return st;
  char rname[300];
  snprintf(rname, sizeof rname, "sweep-%s", name);
  im_track_kv_t tags[] = {{"imops.sweep_role", "parent"}, {"mlflow.source.name", "imops sweep"},
                          {"mlflow.source.type", "LOCAL"}};
  im_track_run_create_t rc = {.experiment_id = exp, .run_name = rname, .tags = tags, .n_tags = 3};
  if ((st = im__sweep_st_run_create(s, &rc, &run))) goto done;
  doc = json_pack("{s:o?,s:{s:s,s:s?,s:I,s:s}}", "config", json_loads(c->json, 0, NULL), "imops", "parent_run_id",
                  run->run_id, "data", o->data_dir, "seed", (json_int_t)(o->seed ? o->seed : 1), "experiment_id", exp);
  text = doc ? json_dumps(doc, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
  if (!text) {
    st = im_error(IM_ERR_NOMEM, "out of memory");
    goto done;
  }
  int64_t cap = o->max_trials > 0 ? o->max_trials : c->run_cap;
  if (c->run_cap > 0 && cap > c->run_cap) cap = c->run_cap;
  im_track_sweep_t w = {.name = (char *)(uintptr_t)name, .experiment_id = exp, .config = text,
                        .method = (char *)(uintptr_t)im_sweep_method_name(c->method), .metric_name = c->metric_name,
                        .metric_goal = c->metric_name ? (char *)(uintptr_t)(c->maximize ? "maximize" : "minimize") : NULL,
                        .max_trials = cap};
  if ((st = im__sweep_st_create(s, &w, &sid))) goto done;
  if ((st = im__sweep_st_set_tag(s, run->run_id, "imops.sweep_id", sid))) goto done;
  *sweep_id = sid;
  sid = NULL;
done:
  im_free(exp), im_free(sid);
  im_track_run_free(run);
  json_decref(doc);
  free(text);
  return st;
}

void im_sweep_info_free(im_sweep_info_t *w) {
  if (!w) return;
  im_free(w->sweep_id), im_free(w->name), im_free(w->state), im_free(w->experiment_id), im_free(w->parent_run_id);
  im_free(w->data_dir);
  im_sweep_config_free(w->config);
  im_free(w);
}

static char *jdup(const json_t *j) {
  const char *s = json_string_value(j);
  return s ? im_strdup(s) : NULL;
}

im_status_t im_sweep_info(im_track_store_t *s, const char *sweep_id, im_sweep_info_t **out) {
  im_sweep_state_t w = im__sweep_state_of(s);
  return im_sweep_state_info(&w, sweep_id, out);
}

im_status_t im_sweep_state_info(im_sweep_state_t *s, const char *sweep_id, im_sweep_info_t **out) {
  *out = NULL;
  im_track_sweep_t *row = NULL;
  im_status_t st = im__sweep_st_get(s, sweep_id, &row);
  if (st) return st;
  json_t *doc = json_loads(row->config, 0, NULL);
  im_sweep_info_t *w = im_calloc(1, sizeof *w);
  const json_t *im = json_object_get(doc, "imops");
  char *cfg = doc ? json_dumps(json_object_get(doc, "config"), JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
  if (!w || !doc || !cfg) {
    st = im_error(w ? IM_ERR_FORMAT : IM_ERR_NOMEM, "sweep %s: its stored config is damaged", sweep_id);
  } else {
    char src[64];
    snprintf(src, sizeof src, "sweep %s", sweep_id);
    st = im_sweep_config_parse(cfg, strlen(cfg), src, &w->config);
    w->sweep_id = im_strdup(row->sweep_id);
    w->name = im_strdup(row->name);
    w->state = im_strdup(row->state);
    w->experiment_id = jdup(json_object_get(im, "experiment_id"));
    w->parent_run_id = jdup(json_object_get(im, "parent_run_id"));
    w->data_dir = jdup(json_object_get(im, "data"));
    w->seed = (uint64_t)json_integer_value(json_object_get(im, "seed"));
    w->max_trials = row->max_trials;
    if (st == IM_OK && (!w->sweep_id || !w->name || !w->state)) st = im_error(IM_ERR_NOMEM, "out of memory");
  }
  free(cfg);
  json_decref(doc);
  im_track_sweep_free(row);
  if (st) {
    im_sweep_info_free(w);
    return st;
  }
  *out = w;
  return IM_OK;
}

/* ---- the search inside a claim ------------------------------------------------- */
typedef struct {
  const im_sweep_info_t *info;
} suggest_ctx_t;

static im_status_t suggest_cb(void *user, const im_track_sweep_trial_t *trials, int64_t n, char **params) {
  suggest_ctx_t *sc = user;
  const im_sweep_config_t *c = sc->info->config;
  size_t d = c->n_params ? c->n_params : 1;
  double *xs = im_calloc((size_t)n + 1, d * sizeof *xs);
  im_sweep_obs_t *obs = im_calloc((size_t)n + 1, sizeof *obs);
  im_status_t st = xs && obs ? IM_OK : im_error(IM_ERR_NOMEM, "out of memory");
  for (int64_t i = 0; st == IM_OK && i < n; i++) {
    double *x = xs + (size_t)i * d;
    const char *state = trials[i].state;
    obs[i].y = trials[i].objective;
    obs[i].done = !strcmp(state, "FINISHED") || !strcmp(state, "PRUNED");
    int live = !strcmp(state, "CLAIMED") || !strcmp(state, "RUNNING");
    if ((obs[i].done || live) && im_sweep_point_parse(c, trials[i].params, x) == IM_OK) obs[i].x = x;
    if (!obs[i].done) obs[i].y = NAN;
  }
  double *x = xs + (size_t)n * d;
  if (st == IM_OK) st = im_sweep_suggest(c, obs, (size_t)n, sc->info->seed, x);
  if (st == IM_OK && !(*params = im_sweep_point_json(c, x))) st = im_error(IM_ERR_NOMEM, "out of memory");
  im_free(xs);
  im_free(obs);
  return st;
}

im_status_t im_sweep_claim(im_track_store_t *s, const char *sweep_id, const char *agent_id, int64_t stale_ms,
                           int64_t limit, im_track_sweep_trial_t **out) {
  *out = NULL;
  im_sweep_info_t *info = NULL;
  im_status_t st = im_sweep_info(s, sweep_id, &info);
  if (st) return st;
  suggest_ctx_t sc = {.info = info};
  st = im_track_sweep_claim(s, sweep_id, agent_id, stale_ms > 0 ? stale_ms : 30 * 60 * 1000, limit, suggest_cb, &sc,
                            out);
  im_sweep_info_free(info);
  return st;
}

/* ---- intermediate values and hyperband ----------------------------------------------- */
static im_status_t hyperband_stop(im_track_store_t *s, const im_sweep_info_t *info, int64_t trial, int *stop);

im_status_t im_sweep_step(im_track_store_t *s, const char *sweep_id, int64_t trial, const char *agent_id, int64_t step,
                          double value, int *stop) {
  *stop = 0;
  im_sweep_info_t *info = NULL;
  im_status_t st = im_sweep_info(s, sweep_id, &info);
  if (st) return st;
  /* the trial must be the agent's (this also refreshes its heartbeat) */
  if ((st = im_track_sweep_trial_update(s, sweep_id, trial, agent_id, NULL, NULL, NAN)) == IM_OK &&
      (st = im_track_sweep_report(s, sweep_id, trial, step, value)) == IM_OK && info->config->hyperband)
    st = hyperband_stop(s, info, trial, stop);
  im_sweep_info_free(info);
  return st;
}

im_status_t im_sweep_trial_report(im_sweep_trial_t *t, int64_t step, double value, int *stop) {
  int halt = 0;
  if (stop) *stop = 0;
  t->last = value;
  im_status_t st = im__sweep_st_report(t->store, t->info->sweep_id, t->number, t->agent_id, step, value, &halt);
  if (st == IM_OK && stop) *stop = halt;
  return st;
}

static im_status_t hyperband_stop(im_track_store_t *s, const im_sweep_info_t *info, int64_t trial, int *stop) {
  im_track_sweep_step_t *steps = NULL;
  int64_t n = 0;
  im_status_t st = im_track_sweep_steps(s, info->sweep_id, &steps, &n);
  if (st) return st;
  /* one history per trial, values in step order */
  size_t ntr = 0, self = (size_t)-1;
  for (int64_t i = 0; i < n; i++)
    if (i == 0 || steps[i].trial != steps[i - 1].trial) ntr++;
  const double **hist = im_calloc(ntr + 1, sizeof *hist);
  size_t *len = im_calloc(ntr + 1, sizeof *len);
  double *vals = im_calloc((size_t)n + 1, sizeof *vals);
  if (!hist || !len || !vals) {
    st = im_error(IM_ERR_NOMEM, "out of memory");
  } else {
    size_t k = (size_t)-1;
    for (int64_t i = 0; i < n; i++) {
      if (i == 0 || steps[i].trial != steps[i - 1].trial) {
        k++;
        hist[k] = vals + i;
        if (steps[i].trial == trial) self = k;
      }
      vals[i] = steps[i].value;
      len[k]++;
    }
    if (self != (size_t)-1 && im_sweep_hyperband_stop(info->config, hist, len, ntr, self)) *stop = 1;
  }
  im_free(hist), im_free(len), im_free(vals), im_free(steps);
  return st;
}

im_status_t im_sweep_trial_set_run(im_sweep_trial_t *t, const char *run_id) {
  im_free(t->run_id);
  if (!(t->run_id = im_strdup(run_id))) return im_error(IM_ERR_NOMEM, "out of memory");
  char num[32];
  snprintf(num, sizeof num, "%lld", (long long)t->number);
  im_status_t st = im__sweep_st_update(t->store, t->info->sweep_id, t->number, t->agent_id, NULL, run_id, NAN);
  if (st == IM_OK) st = im__sweep_st_set_tag(t->store, run_id, "imops.sweep_id", t->info->sweep_id);
  if (st == IM_OK) st = im__sweep_st_set_tag(t->store, run_id, "imops.sweep_trial", num);
  return st;
}

/* ---- the agent loop ----------------------------------------------------------------------- */
static int target_reached(const im_sweep_config_t *c, const im_track_sweep_trial_t *tr, int64_t n) {
  if (!c->has_target) return 0;
  for (int64_t i = 0; i < n; i++) {
    if (strcmp(tr[i].state, "FINISHED") || !isfinite(tr[i].objective)) continue;
    if (c->maximize ? tr[i].objective >= c->target : tr[i].objective <= c->target) return 1;
  }
  return 0;
}

static void emit(const im_sweep_agent_opts_t *o, const im_sweep_trial_t *t, const char *state, double value,
                 const char *error) {
  if (!o->on_event) return;
  im_sweep_event_t e = {.sweep_id = t->info->sweep_id, .trial = t->number, .params = t->params, .state = state,
                        .value = value, .run_id = t->run_id, .error = error};
  o->on_event(o->user, &e);
}

static im_status_t run_one(const im_sweep_agent_opts_t *o, im_sweep_state_t *s, const im_sweep_info_t *info,
                           const char *agent_id, const im_track_sweep_trial_t *claimed) {
  im_sweep_trial_t t = {.store = s, .info = info, .agent_id = agent_id, .number = claimed->trial, .last = NAN};
  size_t d = info->config->n_params ? info->config->n_params : 1;
  t.x = im_calloc(d, sizeof *t.x);
  t.params = im_strdup(claimed->params);
  im_status_t st = t.x && t.params ? IM_OK : im_error(IM_ERR_NOMEM, "out of memory");
  if (st == IM_OK) st = im_sweep_point_parse(info->config, claimed->params, t.x);
  if (st == IM_OK) st = im__sweep_st_update(s, info->sweep_id, t.number, agent_id, "RUNNING", NULL, NAN);
  if (st) {
    im_free(t.x), im_free(t.params);
    return st;
  }
  emit(o, &t, "RUNNING", NAN, NULL);
  double value = NAN;
  im_sweep_objective_fn fn = o->objective ? o->objective : im_sweep_train_objective;
  im_status_t ost = fn(o->objective ? o->objective_user : o->objective_user, &t, &value);
  const char *state = "FINISHED";
  char err[512] = "";
  if (ost) {
    state = "FAILED";
    snprintf(err, sizeof err, "%s", im_last_error());
    value = NAN;
  } else if (t.pruned) {
    state = "PRUNED";
    if (!isfinite(value)) value = t.last;
  }
  st = im__sweep_st_update(s, info->sweep_id, t.number, agent_id, state, NULL, value);
  emit(o, &t, state, value, ost ? err : NULL);
  im_free(t.x), im_free(t.params), im_free(t.run_id);
  return st;
}

im_status_t im_sweep_agent_run(const im_sweep_agent_opts_t *o, int64_t *ran) {
  if (ran) *ran = 0;
  if (!o || !o->sweep_id) return im_error(IM_ERR_ARG, "an agent needs a sweep id");
  im_sweep_state_t *s = NULL;
  im_sweep_info_t *info = NULL;
  im_status_t st = im_sweep_state_open(o->tracking_home, &s);
  if (st == IM_OK) st = im_sweep_state_info(s, o->sweep_id, &info);
  char agent[96], host[64] = "";
  if (o->agent_id) {
    snprintf(agent, sizeof agent, "%s", o->agent_id);
  } else {
    gethostname(host, sizeof host - 1);
    im_rng_t r;
    im_rng_seed(&r, (uint64_t)im_time_wall_ms() ^ ((uint64_t)getpid() << 20) ^ (uint64_t)(uintptr_t)&r);
    snprintf(agent, sizeof agent, "%s-%d-%08x", host, (int)getpid(), (unsigned)(im_rng_next(&r) & 0xffffffffu));
  }
  if (st == IM_OK) st = im__sweep_st_agent_start(s, o->sweep_id, agent, host, (int64_t)getpid());
  int64_t done = 0;
  const int64_t stale = o->stale_ms > 0 ? o->stale_ms : 30 * 60 * 1000;
  while (st == IM_OK && (o->count <= 0 || done < o->count) && !(o->cancel && *o->cancel)) {
    im_track_sweep_trial_t *tr = NULL;
    int64_t n = 0;
    if (info->config->has_target) {
      if ((st = im_sweep_state_trials(s, o->sweep_id, &tr, &n))) break;
      int hit = target_reached(info->config, tr, n);
      im_track_sweep_trials_free(tr, n);
      tr = NULL;
      if (hit) {
        st = im__sweep_st_set_state(s, o->sweep_id, "FINISHED");
        break;
      }
    }
    if ((st = im__sweep_st_claim(s, o->sweep_id, agent, stale, o->limit, &tr))) break;
    if (!tr) break;
    st = run_one(o, s, info, agent, tr);
    im_track_sweep_trials_free(tr, 1);
    done++;
  }
  if (s && info && im__sweep_st_agent_end(s, agent, st ? "FAILED" : "FINISHED") != IM_OK)
    im_log(IM_LOG_WARN, "sweep %s: cannot record the end of agent %s", o->sweep_id, agent);
  if (ran) *ran = done;
  im_sweep_info_free(info);
  im_sweep_state_close(s);
  return st;
}
