/* Sweep state in the store (include/imops/track_sweep.h): sweeps, trials
 * claimed atomically by agents (one BEGIN IMMEDIATE transaction per claim:
 * stale trials failed, the cap checked, a PENDING trial taken with a
 * conditional UPDATE or a new one inserted), intermediate values for early
 * termination, and agent registrations. */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "imops/track_sweep.h"
#include "track/track_impl.h"

static const char q_sweep_ins[] =
    "INSERT INTO sweeps (sweep_id, name, experiment_id, config, method, metric_name, metric_goal, state, max_trials,"
    " creation_time, last_update_time) VALUES (?, ?, ?, ?, ?, ?, ?, 'PENDING', ?, ?, ?)";
static const char q_sweep_cols[] =
    "SELECT sweep_id, name, experiment_id, config, method, metric_name, metric_goal, state, max_trials,"
    " creation_time, last_update_time FROM sweeps WHERE sweep_id = ?";
static const char q_sweep_all[] =
    "SELECT sweep_id, name, experiment_id, config, method, metric_name, metric_goal, state, max_trials,"
    " creation_time, last_update_time FROM sweeps ORDER BY creation_time DESC, sweep_id";
static const char q_sweep_state[] = "UPDATE sweeps SET state = ?, last_update_time = ? WHERE sweep_id = ?";
static const char q_trials[] =
    "SELECT trial, params, state, agent_id, run_uuid, claimed_time, heartbeat_time, finished_time, objective"
    " FROM sweep_trials WHERE sweep_id = ? ORDER BY trial";
static const char q_trial_one[] =
    "SELECT trial, params, state, agent_id, run_uuid, claimed_time, heartbeat_time, finished_time, objective"
    " FROM sweep_trials WHERE sweep_id = ? AND trial = ?";
static const char q_stale[] =
    "UPDATE sweep_trials SET state = 'FAILED', finished_time = ? WHERE sweep_id = ? AND state IN ('CLAIMED', "
    "'RUNNING') AND heartbeat_time < ?";
static const char q_count[] = "SELECT count(*) FROM sweep_trials WHERE sweep_id = ?";
static const char q_pending[] =
    "SELECT trial FROM sweep_trials WHERE sweep_id = ? AND state = 'PENDING' ORDER BY trial LIMIT 1";
static const char q_take[] =
    "UPDATE sweep_trials SET state = 'CLAIMED', agent_id = ?, claimed_time = ?, heartbeat_time = ? WHERE sweep_id = ? "
    "AND trial = ? AND state = 'PENDING'";
static const char q_max_trial[] = "SELECT coalesce(max(trial), 0) FROM sweep_trials WHERE sweep_id = ?";
static const char q_trial_ins[] =
    "INSERT INTO sweep_trials (sweep_id, trial, params, state, agent_id, claimed_time, heartbeat_time) VALUES (?, ?, "
    "?, 'CLAIMED', ?, ?, ?)";
static const char q_trial_upd[] =
    "UPDATE sweep_trials SET state = coalesce(?, state), run_uuid = coalesce(?, run_uuid), objective = coalesce(?, "
    "objective), heartbeat_time = ?, finished_time = CASE WHEN ? THEN ? ELSE finished_time END WHERE sweep_id = ? AND "
    "trial = ? AND agent_id = ? AND state IN ('CLAIMED', 'RUNNING')";
static const char q_step_put[] =
    "INSERT OR REPLACE INTO sweep_trial_steps (sweep_id, trial, step, value) VALUES (?, ?, ?, ?)";
static const char q_steps[] =
    "SELECT trial, step, value FROM sweep_trial_steps WHERE sweep_id = ? ORDER BY trial, step";
static const char q_agent_ins[] =
    "INSERT OR REPLACE INTO sweep_agents (agent_id, sweep_id, host, pid, state, start_time, heartbeat_time) VALUES "
    "(?, ?, ?, ?, 'RUNNING', ?, ?)";
static const char q_agent_end[] = "UPDATE sweep_agents SET state = ?, heartbeat_time = ? WHERE agent_id = ?";
static const char q_agent_beat[] = "UPDATE sweep_agents SET heartbeat_time = ? WHERE agent_id = ?";

static const char *const trial_states[] = {"PENDING", "CLAIMED", "RUNNING", "FINISHED", "FAILED", "KILLED", "PRUNED"};
static const char *const sweep_states[] = {"PENDING", "RUNNING", "PAUSED", "FINISHED", "CANCELED", "FAILED"};

static int one_of(const char *s, const char *const *list, size_t n) {
  for (size_t i = 0; s && i < n; i++)
    if (!strcmp(s, list[i])) return 1;
  return 0;
}

void im_track_sweep_free(im_track_sweep_t *w) {
  if (!w) return;
  im_track_sweep_list_free(w, 1);
}

void im_track_sweep_list_free(im_track_sweep_t *items, int64_t n) {
  if (!items) return;
  for (int64_t i = 0; i < n; i++) {
    im_track_sweep_t *w = &items[i];
    im_free(w->sweep_id), im_free(w->name), im_free(w->experiment_id), im_free(w->config), im_free(w->method);
    im_free(w->metric_name), im_free(w->metric_goal), im_free(w->state);
  }
  im_free(items);
}

void im_track_sweep_trials_free(im_track_sweep_trial_t *items, int64_t n) {
  if (!items) return;
  for (int64_t i = 0; i < n; i++) {
    im_free(items[i].params), im_free(items[i].state), im_free(items[i].agent_id), im_free(items[i].run_id);
  }
  im_free(items);
}


static int fill_sweep(sqlite3_stmt *st, im_track_sweep_t *w) {
  int oom = 0;
  w->sweep_id = im__trk_col_dup(st, 0, &oom);
  w->name = im__trk_col_dup0(st, 1, &oom);
  w->experiment_id = im__trk_col_dup(st, 2, &oom);
  w->config = im__trk_col_dup0(st, 3, &oom);
  w->method = im__trk_col_dup0(st, 4, &oom);
  w->metric_name = im__trk_col_dup(st, 5, &oom);
  w->metric_goal = im__trk_col_dup(st, 6, &oom);
  w->state = im__trk_col_dup0(st, 7, &oom);
  w->max_trials = sqlite3_column_int64(st, 8);
  w->creation_time = sqlite3_column_int64(st, 9);
  w->last_update_time = sqlite3_column_int64(st, 10);
  return oom;
}

static int fill_trial(sqlite3_stmt *st, im_track_sweep_trial_t *t) {
  int oom = 0;
  t->trial = sqlite3_column_int64(st, 0);
  t->params = im__trk_col_dup0(st, 1, &oom);
  t->state = im__trk_col_dup0(st, 2, &oom);
  t->agent_id = im__trk_col_dup(st, 3, &oom);
  t->run_id = im__trk_col_dup(st, 4, &oom);
  t->claimed_time = im__trk_col_time(st, 5);
  t->heartbeat_time = im__trk_col_time(st, 6);
  t->finished_time = im__trk_col_time(st, 7);
  t->objective = sqlite3_column_type(st, 8) == SQLITE_NULL ? NAN : sqlite3_column_double(st, 8);
  return oom;
}

im_status_t im_track_sweep_create(im_track_store_t *s, const im_track_sweep_t *in, char **id_out) {
  if (!s || !in || !in->config || !in->method) return im_error(IM_ERR_ARG, "a sweep needs a config and a method");
  char id[33];
  im__trk_uuid_hex(id);
  id[8] = 0;
  int64_t now = im__trk_now();
  int64_t exp = in->experiment_id ? im__trk_parse_id(in->experiment_id) : -1;
  im_status_t r = im__trk_begin(s);
  if (r) return r;
  sqlite3_stmt *st = im__trk_stmt(s, q_sweep_ins);
  if (!st) r = IM_ERR_INTERNAL;
  if (r == IM_OK)
    r = im__trk_bindv(s, st, 1, "sssssssiii", id, in->name ? in->name : "", NULL, in->config, in->method,
                      in->metric_name, in->metric_goal, in->max_trials, now, now);
  if (r == IM_OK && exp >= 0 && sqlite3_bind_int64(st, 3, exp) != SQLITE_OK) r = im__trk_sqlfail(s, 0, "bind");
  int row = 0;
  if (r == IM_OK) r = im__trk_step(s, st, &row);
  if (st) im__trk_reset(st);
  r = im__trk_end(s, r);
  if (r == IM_OK && id_out && !(*id_out = im_strdup(id))) r = IM__TRK_NOMEM(s);
  return r;
}

im_status_t im_track_sweep_get(im_track_store_t *s, const char *sweep_id, im_track_sweep_t **out) {
  *out = NULL;
  if (!s || !sweep_id) return im_error(IM_ERR_ARG, "no store or sweep id");
  sqlite3_stmt *st = im__trk_stmt(s, q_sweep_cols);
  if (!st) return IM_ERR_INTERNAL;
  im_status_t r = im__trk_bindv(s, st, 1, "s", sweep_id);
  int row = 0;
  if (r == IM_OK) r = im__trk_step(s, st, &row);
  if (r == IM_OK && !row) r = im__trk_fail(s, IM_ERR_NOT_FOUND, NULL, "no sweep with id '%s'", sweep_id);
  if (r == IM_OK) {
    im_track_sweep_t *w = im_calloc(1, sizeof *w);
    if (!w || fill_sweep(st, w)) {
      im_track_sweep_free(w);
      r = IM__TRK_NOMEM(s);
    } else {
      *out = w;
    }
  }
  im__trk_reset(st);
  return r;
}

/* Collects every row of a cached statement (already bound) into a growing
 * array (the paging collector with no page limit), and resets it. */
static im_status_t collect(im_track_store_t *s, sqlite3_stmt *st, size_t size, im__trk_fill_fn fill, void **items,
                           int64_t *n) {
  *items = NULL;
  *n = 0;
  im_status_t r = im__trk_collect_page(s, st, INT64_MAX, 0, size, fill, items, n, NULL);
  im__trk_reset(st);
  return r;
}

static im_status_t fill_sweep_v(im_track_store_t *s, sqlite3_stmt *st, void *p) {
  return fill_sweep(st, p) ? IM__TRK_NOMEM(s) : IM_OK;
}
static im_status_t fill_trial_v(im_track_store_t *s, sqlite3_stmt *st, void *p) {
  return fill_trial(st, p) ? IM__TRK_NOMEM(s) : IM_OK;
}
static im_status_t fill_step_v(im_track_store_t *s, sqlite3_stmt *st, void *p) {
  im_track_sweep_step_t *x = p;
  x->trial = sqlite3_column_int64(st, 0);
  x->step = sqlite3_column_int64(st, 1);
  x->value = sqlite3_column_type(st, 2) == SQLITE_NULL ? NAN : sqlite3_column_double(st, 2);
  return IM_OK;
}

im_status_t im_track_sweep_list(im_track_store_t *s, im_track_sweep_t **items, int64_t *n) {
  if (!s) return im_error(IM_ERR_ARG, "no store");
  sqlite3_stmt *st = im__trk_stmt(s, q_sweep_all);
  if (!st) return IM_ERR_INTERNAL;
  im_status_t r = collect(s, st, sizeof **items, fill_sweep_v, (void **)items, n);
  if (r) {
    im_track_sweep_list_free(*items, *n);
    *items = NULL, *n = 0;
  }
  return r;
}

im_status_t im_track_sweep_set_state(im_track_store_t *s, const char *sweep_id, const char *state) {
  if (!s || !one_of(state, sweep_states, 6)) return im_error(IM_ERR_ARG, "bad sweep state '%s'", state ? state : "");
  int changes = 0;
  im_status_t r = im__trk_exec(s, q_sweep_state, &changes, "sis", state, im__trk_now(), sweep_id);
  if (r == IM_OK && !changes) r = im__trk_fail(s, IM_ERR_NOT_FOUND, NULL, "no sweep with id '%s'", sweep_id);
  return r;
}

static im_status_t load_trials(im_track_store_t *s, const char *sweep_id, im_track_sweep_trial_t **items, int64_t *n) {
  sqlite3_stmt *st = im__trk_stmt(s, q_trials);
  if (!st) return IM_ERR_INTERNAL;
  im_status_t r = im__trk_bindv(s, st, 1, "s", sweep_id);
  if (r == IM_OK) r = collect(s, st, sizeof **items, fill_trial_v, (void **)items, n);
  else im__trk_reset(st);
  if (r) {
    im_track_sweep_trials_free(*items, *n);
    *items = NULL, *n = 0;
  }
  return r;
}

im_status_t im_track_sweep_trials(im_track_store_t *s, const char *sweep_id, im_track_sweep_trial_t **items,
                                  int64_t *n) {
  *items = NULL, *n = 0;
  if (!s || !sweep_id) return im_error(IM_ERR_ARG, "no store or sweep id");
  int began = im__trk_read_begin(s);
  im_status_t r = load_trials(s, sweep_id, items, n);
  im__trk_read_end(s, began);
  return r;
}

static im_status_t get_trial(im_track_store_t *s, const char *sweep_id, int64_t trial, im_track_sweep_trial_t **out) {
  sqlite3_stmt *st = im__trk_stmt(s, q_trial_one);
  if (!st) return IM_ERR_INTERNAL;
  int64_t n = 0;
  im_status_t r = im__trk_bindv(s, st, 1, "si", sweep_id, trial);
  if (r == IM_OK) r = collect(s, st, sizeof **out, fill_trial_v, (void **)out, &n);
  else im__trk_reset(st);
  if (r == IM_OK && n != 1) r = im__trk_fail(s, IM_ERR_INTERNAL, NULL, "trial %lld vanished", (long long)trial);
  if (r) {
    im_track_sweep_trials_free(*out, n);
    *out = NULL;
  }
  return r;
}

/* The claim's body, inside the transaction. */
static im_status_t claim_tx(im_track_store_t *s, const char *sweep_id, const char *agent_id, int64_t stale_ms,
                            int64_t limit, im_track_sweep_suggest_fn suggest, void *user,
                            im_track_sweep_trial_t **out) {
  int64_t now = im__trk_now();
  im_track_sweep_t *w = NULL;
  im_status_t r = im_track_sweep_get(s, sweep_id, &w);
  if (r) return r;
  int open = !strcmp(w->state, "PENDING") || !strcmp(w->state, "RUNNING");
  int64_t cap = w->max_trials;
  im_track_sweep_free(w);
  if (stale_ms > 0 && (r = im__trk_exec(s, q_stale, NULL, "isi", now, sweep_id, now - stale_ms))) return r;
  if (!open) return IM_OK;
  int found = 0;
  int64_t count = 0, trial = 0;
  if ((r = im__trk_query_i64(s, q_count, &found, &count, "s", sweep_id))) return r;
  if ((cap > 0 && count >= cap) || (limit > 0 && count >= limit)) return IM_OK;
  if ((r = im__trk_query_i64(s, q_pending, &found, &trial, "s", sweep_id))) return r;
  if (found) {
    int changes = 0;
    if ((r = im__trk_exec(s, q_take, &changes, "siisi", agent_id, now, now, sweep_id, trial))) return r;
    if (changes != 1) return im__trk_fail(s, IM_ERR_STATE, NULL, "trial %lld was claimed by another agent", (long long)trial);
  } else {
    im_track_sweep_trial_t *all = NULL;
    int64_t n = 0;
    char *params = NULL;
    if ((r = load_trials(s, sweep_id, &all, &n))) return r;
    r = suggest ? suggest(user, all, n, &params) : IM_ERR_NOT_FOUND;
    im_track_sweep_trials_free(all, n);
    if (r == IM_ERR_NOT_FOUND) {
      im_error_clear();
      return IM_OK;
    }
    if (r) return im__trk_fail(s, r, NULL, "%s", im_last_error());
    if ((r = im__trk_query_i64(s, q_max_trial, &found, &trial, "s", sweep_id)) == IM_OK) {
      trial++;
      r = im__trk_exec(s, q_trial_ins, NULL, "sissii", sweep_id, trial, params, agent_id, now, now);
    }
    im_free(params);
    if (r) return r;
  }
  if ((r = im__trk_exec(s, q_sweep_state, NULL, "sis", "RUNNING", now, sweep_id))) return r;
  return get_trial(s, sweep_id, trial, out);
}

im_status_t im_track_sweep_claim(im_track_store_t *s, const char *sweep_id, const char *agent_id, int64_t stale_ms,
                                 int64_t limit, im_track_sweep_suggest_fn suggest, void *user,
                                 im_track_sweep_trial_t **out) {
  *out = NULL;
  if (!s || !sweep_id || !agent_id) return im_error(IM_ERR_ARG, "a claim needs a store, a sweep id and an agent id");
  im_status_t r = im__trk_begin(s);
  if (r) return r;
  r = claim_tx(s, sweep_id, agent_id, stale_ms, limit, suggest, user, out);
  r = im__trk_end(s, r);
  if (r) {
    im_track_sweep_trials_free(*out, 1);
    *out = NULL;
  }
  if (r == IM_OK) (void)im__trk_exec(s, q_agent_beat, NULL, "is", im__trk_now(), agent_id);
  return r;
}

im_status_t im_track_sweep_trial_update(im_track_store_t *s, const char *sweep_id, int64_t trial, const char *agent_id,
                                        const char *state, const char *run_id, double objective) {
  if (!s || !sweep_id || !agent_id) return im_error(IM_ERR_ARG, "no store, sweep or agent");
  if (state && !one_of(state, trial_states, 7)) return im_error(IM_ERR_ARG, "bad trial state '%s'", state);
  int final = state && strcmp(state, "CLAIMED") && strcmp(state, "RUNNING") && strcmp(state, "PENDING");
  int64_t now = im__trk_now();
  sqlite3_stmt *st = im__trk_stmt(s, q_trial_upd);
  if (!st) return IM_ERR_INTERNAL;
  im_status_t r = im__trk_bindv(s, st, 1, "ss", state, run_id);
  if (r == IM_OK)
    r = sqlite3_bind_double(st, 3, objective) == SQLITE_OK ? IM_OK : im__trk_sqlfail(s, 0, "bind");
  if (r == IM_OK && isnan(objective) && sqlite3_bind_null(st, 3) != SQLITE_OK) r = im__trk_sqlfail(s, 0, "bind");
  if (r == IM_OK) r = im__trk_bindv(s, st, 4, "iiisis", now, (int64_t)final, now, sweep_id, trial, agent_id);
  int row = 0;
  if (r == IM_OK) r = im__trk_step(s, st, &row);
  int changes = r == IM_OK ? sqlite3_changes(s->db) : 0;
  im__trk_reset(st);
  if (r == IM_OK && changes != 1)
    r = im__trk_fail(s, IM_ERR_STATE, NULL, "trial %lld of sweep %s is no longer held by agent %s (reclaimed as stale?)",
                     (long long)trial, sweep_id, agent_id);
  if (r == IM_OK) (void)im__trk_exec(s, q_agent_beat, NULL, "is", now, agent_id);
  return r;
}

im_status_t im_track_sweep_report(im_track_store_t *s, const char *sweep_id, int64_t trial, int64_t step, double value) {
  if (!s || !sweep_id) return im_error(IM_ERR_ARG, "no store or sweep");
  return im__trk_exec(s, q_step_put, NULL, "siid", sweep_id, trial, step, value);
}

im_status_t im_track_sweep_steps(im_track_store_t *s, const char *sweep_id, im_track_sweep_step_t **items, int64_t *n) {
  *items = NULL, *n = 0;
  if (!s || !sweep_id) return im_error(IM_ERR_ARG, "no store or sweep");
  sqlite3_stmt *st = im__trk_stmt(s, q_steps);
  if (!st) return IM_ERR_INTERNAL;
  im_status_t r = im__trk_bindv(s, st, 1, "s", sweep_id);
  if (r == IM_OK) r = collect(s, st, sizeof **items, fill_step_v, (void **)items, n);
  else im__trk_reset(st);
  if (r) {
    im_free(*items);
    *items = NULL, *n = 0;
  }
  return r;
}

im_status_t im_track_sweep_agent_start(im_track_store_t *s, const char *sweep_id, const char *agent_id, const char *host,
                                       int64_t pid) {
  if (!s || !sweep_id || !agent_id) return im_error(IM_ERR_ARG, "no store, sweep or agent");
  int64_t now = im__trk_now();
  return im__trk_exec(s, q_agent_ins, NULL, "sssiii", agent_id, sweep_id, host ? host : "", pid, now, now);
}

im_status_t im_track_sweep_agent_end(im_track_store_t *s, const char *agent_id, const char *state) {
  if (!s || !agent_id) return im_error(IM_ERR_ARG, "no store or agent");
  return im__trk_exec(s, q_agent_end, NULL, "sis", state ? state : "FINISHED", im__trk_now(), agent_id);
}
