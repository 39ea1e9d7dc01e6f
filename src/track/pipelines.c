/* Pipeline runs in the store (tables pipeline_runs and pipeline_steps of
 * schema v3): creating a run, recording each step's status, cache key,
 * inputs, outputs and message, finding a previous success by cache key, and
 * reading runs back for `imops pipeline runs`. */
#include <stdlib.h>
#include <string.h>

#include "track/track_impl.h"

#define NO_TIME_SQL "-9223372036854775808"

static const char q_run_insert[] =
    "INSERT INTO pipeline_runs (pipeline_run_id, pipeline_name, spec, params, status, experiment_id, run_uuid,"
    " creation_time) VALUES (?, ?, ?, ?, 'PENDING', ?, ?, ?)";
static const char q_run_update[] =
    "UPDATE pipeline_runs SET status = COALESCE(?, status),"
    " start_time = COALESCE(NULLIF(?, " NO_TIME_SQL "), start_time),"
    " end_time = COALESCE(NULLIF(?, " NO_TIME_SQL "), end_time) WHERE pipeline_run_id = ?";
static const char q_step_put[] =
    "INSERT INTO pipeline_steps (pipeline_run_id, step_name, status, run_uuid, attempt, cache_key, inputs,"
    " outputs, message, start_time, end_time)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULLIF(?, " NO_TIME_SQL "), NULLIF(?, " NO_TIME_SQL "))"
    " ON CONFLICT (pipeline_run_id, step_name) DO UPDATE SET status = excluded.status, run_uuid = excluded.run_uuid,"
    " attempt = excluded.attempt, cache_key = excluded.cache_key, inputs = excluded.inputs,"
    " outputs = excluded.outputs, message = excluded.message, start_time = excluded.start_time,"
    " end_time = excluded.end_time";
static const char q_cache_find[] =
    "SELECT s.outputs, s.pipeline_run_id, s.step_name FROM pipeline_steps s"
    " WHERE s.cache_key = ? AND s.status = 'SUCCEEDED' AND s.pipeline_run_id != ?"
    " ORDER BY s.end_time DESC LIMIT 1";
#define RUN_COLS                                                                                                   \
  "pipeline_run_id, pipeline_name, spec, params, status, CAST(experiment_id AS TEXT), run_uuid, creation_time," \
  " start_time, end_time"
static const char q_run_get[] = "SELECT " RUN_COLS " FROM pipeline_runs WHERE pipeline_run_id = ?";
static const char q_run_prefix[] =
    "SELECT pipeline_run_id FROM pipeline_runs WHERE substr(pipeline_run_id, 1, length(?1)) = ?1 LIMIT 2";
static const char q_run_list[] =
    "SELECT " RUN_COLS " FROM pipeline_runs WHERE (?1 IS NULL OR pipeline_name = ?1)"
    " ORDER BY creation_time DESC, pipeline_run_id LIMIT ?2";
static const char q_steps[] =
    "SELECT step_name, status, run_uuid, attempt, cache_key, inputs, outputs, message, start_time, end_time"
    " FROM pipeline_steps WHERE pipeline_run_id = ? ORDER BY rowid";


static int valid_status(const char *s, int step) {
  static const char *const all[] = {"PENDING", "RUNNING", "SUCCEEDED", "FAILED", "CANCELED", "SKIPPED", "CACHED"};
  for (int i = 0; i < (step ? 7 : 5); i++)
    if (!strcmp(s, all[i])) return 1;
  return 0;
}

im_status_t im_track_pipeline_run_create(im_track_store_t *s, const char *name, const char *spec_json,
                                         const char *params_json, const char *experiment_id, const char *run_uuid,
                                         char **id_out) {
  *id_out = NULL;
  if (!s || !name || !*name) return im_error(IM_ERR_ARG, "a pipeline run needs a pipeline name");
  char id[33];
  im__trk_uuid_hex(id);
  int64_t exp = experiment_id ? im__trk_parse_id(experiment_id) : -1;
  if (experiment_id && exp < 0) return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "bad experiment id '%s'", experiment_id);
  sqlite3_stmt *st = im__trk_stmt(s, q_run_insert);
  if (!st) return IM_ERR_INTERNAL;
  im_status_t r = im__trk_bindv(s, st, 1, "ssss", id, name, spec_json && *spec_json ? spec_json : "{}",
                                params_json && *params_json ? params_json : "{}");
  if (!r) r = exp >= 0 ? im__trk_bindv(s, st, 5, "i", exp) : im__trk_bindv(s, st, 5, "n");
  if (!r) r = im__trk_bindv(s, st, 6, "si", run_uuid, im__trk_now());
  int row;
  if (!r) r = im__trk_step(s, st, &row);
  im__trk_reset(st);
  if (r) return r;
  if (!(*id_out = im_strdup(id))) return IM__TRK_NOMEM(s);
  return IM_OK;
}

im_status_t im_track_pipeline_run_update(im_track_store_t *s, const char *id, const char *status, int64_t start_time,
                                         int64_t end_time) {
  if (!s || !id) return im_error(IM_ERR_ARG, "no pipeline run");
  if (status && !valid_status(status, 0))
    return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "bad pipeline run status '%s'", status);
  int changes = 0;
  im_status_t r = im__trk_exec(s, q_run_update, &changes, "siis", status, start_time, end_time, id);
  if (!r && !changes) return im__trk_fail(s, IM_ERR_NOT_FOUND, IM__TRK_NOT_FOUND, "no pipeline run '%s'", id);
  return r;
}

im_status_t im_track_pipeline_step_put(im_track_store_t *s, const char *id, const im_track_pipeline_step_t *p) {
  if (!s || !id || !p || !p->step_name || !p->status) return im_error(IM_ERR_ARG, "incomplete pipeline step");
  if (!valid_status(p->status, 1))
    return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "bad pipeline step status '%s'", p->status);
  return im__trk_exec(s, q_step_put, NULL, "ssssissssii", id, p->step_name, p->status, p->run_uuid, p->attempt,
                      p->cache_key, p->inputs && *p->inputs ? p->inputs : "{}",
                      p->outputs && *p->outputs ? p->outputs : "{}", p->message ? p->message : "", p->start_time,
                      p->end_time);
}

im_status_t im_track_pipeline_cache_find(im_track_store_t *s, const char *cache_key, const char *not_run_id,
                                         char **outputs_json, char **from_run_id, char **from_step) {
  *outputs_json = NULL;
  if (from_run_id) *from_run_id = NULL;
  if (from_step) *from_step = NULL;
  sqlite3_stmt *st = im__trk_stmt(s, q_cache_find);
  if (!st) return IM_ERR_INTERNAL;
  im_status_t r = im__trk_bindv(s, st, 1, "ss", cache_key, not_run_id ? not_run_id : "");
  int row = 0, oom = 0;
  if (!r) r = im__trk_step(s, st, &row);
  if (!r && row) {
    *outputs_json = im__trk_col_dup0(st, 0, &oom);
    if (from_run_id) *from_run_id = im__trk_col_dup0(st, 1, &oom);
    if (from_step) *from_step = im__trk_col_dup0(st, 2, &oom);
  }
  im__trk_reset(st);
  if (r) return r;
  if (oom) {
    im_free(*outputs_json);
    *outputs_json = NULL;
    if (from_run_id) im_free(*from_run_id), *from_run_id = NULL;
    if (from_step) im_free(*from_step), *from_step = NULL;
    return IM__TRK_NOMEM(s);
  }
  return row ? IM_OK : IM_ERR_NOT_FOUND;
}

static void step_clear(im_track_pipeline_step_t *p) {
  im_free(p->step_name);
  im_free(p->status);
  im_free(p->run_uuid);
  im_free(p->cache_key);
  im_free(p->inputs);
  im_free(p->outputs);
  im_free(p->message);
}

static void run_clear(im_track_pipeline_run_t *r) {
  im_free(r->pipeline_run_id);
  im_free(r->pipeline_name);
  im_free(r->spec);
  im_free(r->params);
  im_free(r->status);
  im_free(r->experiment_id);
  im_free(r->run_uuid);
  for (int i = 0; i < r->n_steps; i++) step_clear(&r->steps[i]);
  im_free(r->steps);
}

void im_track_pipeline_run_free(im_track_pipeline_run_t *r) {
  if (!r) return;
  run_clear(r);
  im_free(r);
}

void im_track_pipeline_run_list_free(im_track_pipeline_run_list_t *l) {
  if (!l) return;
  for (int64_t i = 0; i < l->n; i++) run_clear(&l->items[i]);
  im_free(l->items);
  im_free(l);
}

static int fill_run(sqlite3_stmt *st, im_track_pipeline_run_t *r) {
  int oom = 0;
  r->pipeline_run_id = im__trk_col_dup0(st, 0, &oom);
  r->pipeline_name = im__trk_col_dup0(st, 1, &oom);
  r->spec = im__trk_col_dup0(st, 2, &oom);
  r->params = im__trk_col_dup0(st, 3, &oom);
  r->status = im__trk_col_dup0(st, 4, &oom);
  r->experiment_id = im__trk_col_dup(st, 5, &oom);
  r->run_uuid = im__trk_col_dup(st, 6, &oom);
  r->creation_time = sqlite3_column_int64(st, 7);
  r->start_time = im__trk_col_time(st, 8);
  r->end_time = im__trk_col_time(st, 9);
  return oom;
}

static im_status_t load_steps(im_track_store_t *s, im_track_pipeline_run_t *r) {
  sqlite3_stmt *st = im__trk_stmt(s, q_steps);
  if (!st) return IM_ERR_INTERNAL;
  im_status_t rc = im__trk_bindv(s, st, 1, "s", r->pipeline_run_id);
  int row = 1, oom = 0;
  while (!rc && !oom) {
    if ((rc = im__trk_step(s, st, &row)) || !row) break;
    im_track_pipeline_step_t *steps = im_realloc(r->steps, sizeof *steps * (size_t)(r->n_steps + 1));
    if (!steps) {
      oom = 1;
      break;
    }
    r->steps = steps;
    im_track_pipeline_step_t *p = &r->steps[r->n_steps++];
    memset(p, 0, sizeof *p);
    p->step_name = im__trk_col_dup0(st, 0, &oom);
    p->status = im__trk_col_dup0(st, 1, &oom);
    p->run_uuid = im__trk_col_dup(st, 2, &oom);
    p->attempt = sqlite3_column_int64(st, 3);
    p->cache_key = im__trk_col_dup(st, 4, &oom);
    p->inputs = im__trk_col_dup0(st, 5, &oom);
    p->outputs = im__trk_col_dup0(st, 6, &oom);
    p->message = im__trk_col_dup0(st, 7, &oom);
    p->start_time = im__trk_col_time(st, 8);
    p->end_time = im__trk_col_time(st, 9);
  }
  im__trk_reset(st);
  return rc ? rc : oom ? IM__TRK_NOMEM(s) : IM_OK;
}

im_status_t im_track_pipeline_run_get(im_track_store_t *s, const char *id, im_track_pipeline_run_t **out) {
  *out = NULL;
  if (!s || !id || !*id) return im_error(IM_ERR_ARG, "no pipeline run id");
  int began = im__trk_read_begin(s);
  /* A unique prefix names a run too, as with git commits. */
  char *full = NULL;
  sqlite3_stmt *st = im__trk_stmt(s, q_run_prefix);
  im_status_t r = st ? im__trk_bindv(s, st, 1, "s", id) : IM_ERR_INTERNAL;
  int row = 0, n = 0, oom = 0;
  while (!r && (r = im__trk_step(s, st, &row)) == IM_OK && row) {
    if (!n++) full = im__trk_col_dup0(st, 0, &oom);
  }
  if (st) im__trk_reset(st);
  if (!r && oom) r = IM__TRK_NOMEM(s);
  if (!r && n == 0) r = im__trk_fail(s, IM_ERR_NOT_FOUND, IM__TRK_NOT_FOUND, "no pipeline run '%s'", id);
  if (!r && n > 1) r = im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "'%s' names more than one pipeline run", id);
  im_track_pipeline_run_t *run = NULL;
  if (!r && !(run = im_calloc(1, sizeof *run))) r = IM__TRK_NOMEM(s);
  if (!r && !(st = im__trk_stmt(s, q_run_get))) r = IM_ERR_INTERNAL;
  if (!r) r = im__trk_bindv(s, st, 1, "s", full);
  if (!r) r = im__trk_step(s, st, &row);
  if (!r && row && fill_run(st, run)) r = IM__TRK_NOMEM(s);
  if (st && run) im__trk_reset(st);
  if (!r) r = load_steps(s, run);
  im__trk_read_end(s, began);
  im_free(full);
  if (r) {
    im_track_pipeline_run_free(run);
    return r;
  }
  *out = run;
  return IM_OK;
}

im_status_t im_track_pipeline_run_list(im_track_store_t *s, const char *pipeline_name, int64_t max,
                                       im_track_pipeline_run_list_t **out) {
  *out = NULL;
  if (!s) return im_error(IM_ERR_ARG, "no store");
  im_track_pipeline_run_list_t *l = im_calloc(1, sizeof *l);
  if (!l) return IM__TRK_NOMEM(s);
  int began = im__trk_read_begin(s);
  sqlite3_stmt *st = im__trk_stmt(s, q_run_list);
  im_status_t r = st ? im__trk_bindv(s, st, 1, "si", pipeline_name, max > 0 ? max : 100) : IM_ERR_INTERNAL;
  int row = 1;
  while (!r) {
    if ((r = im__trk_step(s, st, &row)) || !row) break;
    im_track_pipeline_run_t *items = im_realloc(l->items, sizeof *items * (size_t)(l->n + 1));
    if (!items) {
      r = IM__TRK_NOMEM(s);
      break;
    }
    l->items = items;
    memset(&l->items[l->n], 0, sizeof *l->items);
    if (fill_run(st, &l->items[l->n++])) r = IM__TRK_NOMEM(s);
  }
  if (st) im__trk_reset(st);
  for (int64_t i = 0; !r && i < l->n; i++) r = load_steps(s, &l->items[i]);
  im__trk_read_end(s, began);
  if (r) {
    im_track_pipeline_run_list_free(l);
    return r;
  }
  *out = l;
  return IM_OK;
}
