/* Experiments: create (unique names, artifact location under the artifact
 * root), get by id or name, search, soft delete / restore (with their runs),
 * rename, tags. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "track/track_impl.h"

#define EXP_COLS "e.experiment_id, e.name, e.artifact_location, e.lifecycle_stage, e.creation_time, e.last_update_time"

static const char q_by_id[] = "SELECT " EXP_COLS " FROM experiments e WHERE e.experiment_id = ?";
static const char q_by_name[] = "SELECT " EXP_COLS " FROM experiments e WHERE e.name = ?";
static const char q_tags[] = "SELECT key, value FROM experiment_tags WHERE experiment_id = ? ORDER BY key";
static const char q_state[] = "SELECT lifecycle_stage = 'active' FROM experiments WHERE experiment_id = ?";
static const char q_name_taken[] = "SELECT lifecycle_stage = 'active' FROM experiments WHERE name = ?";
static const char q_insert[] =
    "INSERT INTO experiments (name, artifact_location, lifecycle_stage, creation_time, last_update_time) "
    "VALUES (?, ?, 'active', ?, ?)";
static const char q_set_location[] = "UPDATE experiments SET artifact_location = ? WHERE experiment_id = ?";
static const char q_tag_put[] =
    "INSERT INTO experiment_tags (experiment_id, key, value) VALUES (?, ?, ?) "
    "ON CONFLICT (experiment_id, key) DO UPDATE SET value = excluded.value";
static const char q_set_stage[] =
    "UPDATE experiments SET lifecycle_stage = ?, last_update_time = ? WHERE experiment_id = ?";
static const char q_delete_runs[] =
    "UPDATE runs SET lifecycle_stage = 'deleted', deleted_time = ? "
    "WHERE experiment_id = ? AND lifecycle_stage = 'active'";
static const char q_restore_runs[] =
    "UPDATE runs SET lifecycle_stage = 'active', deleted_time = NULL "
    "WHERE experiment_id = ? AND lifecycle_stage = 'deleted' AND deleted_time >= ?";
static const char q_deleted_at[] = "SELECT last_update_time FROM experiments WHERE experiment_id = ?";
static const char q_rename[] = "UPDATE experiments SET name = ?, last_update_time = ? WHERE experiment_id = ?";
static const char q_touch[] = "UPDATE experiments SET last_update_time = ? WHERE experiment_id = ?";

static const im__attr_t exp_attrs[] = {
    {"name", "e.name", 0},
    {"experiment_id", "e.experiment_id", 1},
    {"creation_time", "e.creation_time", 1},
    {"last_update_time", "e.last_update_time", 1},
};

const im__domain_t im__dom_experiments = {
    .what = "experiments",
    .attrs = exp_attrs,
    .n_attrs = (int)(sizeof exp_attrs / sizeof exp_attrs[0]),
    .tag_prefix = "EXISTS (SELECT 1 FROM experiment_tags t WHERE t.experiment_id = e.experiment_id AND t.key = ? AND ",
    .tag_col = "t.value",
    .tag_order = "(SELECT t.value FROM experiment_tags t WHERE t.experiment_id = e.experiment_id AND t.key = ?)",
};

void im__trk_experiment_clear(im_track_experiment_t *e) {
  if (!e) return;
  im_free(e->experiment_id);
  im_free(e->name);
  im_free(e->artifact_location);
  im_free(e->lifecycle_stage);
  im__trk_tags_free(e->tags, e->n_tags);
  memset(e, 0, sizeof *e);
}

void im_track_experiment_free(im_track_experiment_t *e) {
  if (!e) return;
  im__trk_experiment_clear(e);
  im_free(e);
}

void im_track_experiment_list_free(im_track_experiment_list_t *l) {
  if (!l) return;
  for (int64_t i = 0; i < l->n; i++) im__trk_experiment_clear(&l->items[i]);
  im_free(l->items);
  im_free(l->next_page_token);
  im_free(l);
}

/* Fills e from a row of EXP_COLS and loads its tags. */
static im_status_t load_row(im_track_store_t *s, sqlite3_stmt *st, im_track_experiment_t *e) {
  int oom = 0;
  char id[24];
  int64_t eid = sqlite3_column_int64(st, 0);
  snprintf(id, sizeof id, "%" PRId64, eid);
  e->experiment_id = im_strdup(id);
  e->name = im__trk_col_dup0(st, 1, &oom);
  e->artifact_location = im__trk_col_dup0(st, 2, &oom);
  e->lifecycle_stage = im__trk_col_dup0(st, 3, &oom);
  e->creation_time = sqlite3_column_int64(st, 4);
  e->last_update_time = sqlite3_column_int64(st, 5);
  if (oom || !e->experiment_id) return IM__TRK_NOMEM(s);
  sqlite3_stmt *t = im__trk_stmt(s, q_tags);
  if (!t) return IM_ERR_INTERNAL;
  im_status_t r = im__trk_bindv(s, t, 1, "i", eid);
  if (r) return r;
  return im__trk_load_tags(s, t, &e->tags, &e->n_tags);
}

static im_status_t get_one(im_track_store_t *s, const char *sql, const char *fmt, const char *sval, int64_t ival,
                           im_track_experiment_t **out, int *found) {
  sqlite3_stmt *st = im__trk_stmt(s, sql);
  if (!st) return IM_ERR_INTERNAL;
  im_status_t r = *fmt == 's' ? im__trk_bindv(s, st, 1, "s", sval) : im__trk_bindv(s, st, 1, "i", ival);
  int row = 0;
  if (r == IM_OK) r = im__trk_step(s, st, &row);
  *found = row;
  if (r != IM_OK || !row) {
    im__trk_reset(st);
    return r;
  }
  im_track_experiment_t *e = im_calloc(1, sizeof *e);
  if (!e)
    r = IM__TRK_NOMEM(s);
  else
    r = load_row(s, st, e);
  im__trk_reset(st);
  if (r != IM_OK) {
    im_track_experiment_free(e);
    return r;
  }
  *out = e;
  return IM_OK;
}

/* Parses an experiment id and checks that it exists; *active its state. */
static im_status_t lookup(im_track_store_t *s, const char *experiment_id, int64_t *id, int *active) {
  int64_t v = im__trk_parse_id(experiment_id);
  int found = 0;
  int64_t a = 0;
  im_status_t r = IM_OK;
  if (v >= 0) r = im__trk_query_i64(s, q_state, &found, &a, "i", v);
  if (r) return r;
  if (!found)
    return im__trk_fail(s, IM_ERR_NOT_FOUND, NULL, "No Experiment with id=%s exists",
                        experiment_id ? experiment_id : "(null)");
  *id = v;
  *active = (int)a;
  return IM_OK;
}

static im_status_t check_name(im_track_store_t *s, const char *name) {
  if (!name || !*name)
    return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "experiment name must be a non-empty string");
  if (im__trk_utf8_len(name) > IM_TRACK_MAX_EXPERIMENT_NAME_LEN)
    return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "experiment name '%.40s...' is longer than %d characters", name,
                        IM_TRACK_MAX_EXPERIMENT_NAME_LEN);
  return IM_OK;
}

static im_status_t name_free(im_track_store_t *s, const char *name) {
  int found = 0;
  int64_t active = 0;
  im_status_t r = im__trk_query_i64(s, q_name_taken, &found, &active, "s", name);
  if (r) return r;
  if (found && active) return im__trk_fail(s, IM_ERR_EXISTS, NULL, "Experiment(name=%s) already exists.", name);
  if (found)
    return im__trk_fail(s, IM_ERR_EXISTS, NULL,
                        "Experiment(name=%s) already exists in the deleted state; restore it or choose another name",
                        name);
  return IM_OK;
}

im_status_t im_track_experiment_create(im_track_store_t *s, const char *name, const char *artifact_location,
                                       const im_track_kv_t *tags, int n_tags, char **id_out) {
  if (!s) return im_error(IM_ERR_ARG, "no store");
  if (id_out) *id_out = NULL;
  im_status_t r = check_name(s, name);
  if (r) return r;
  if (n_tags < 0 || (n_tags > 0 && !tags)) return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "bad tag list");
  for (int i = 0; i < n_tags; i++) {
    if ((r = im__trk_check_key(s, "tag", tags[i].key))) return r;
    if ((r = im__trk_check_value(s, "tag", tags[i].key, tags[i].value, IM_TRACK_MAX_TAG_VALUE_LEN))) return r;
  }
  if ((r = im__trk_begin(s))) return r;
  r = name_free(s, name);
  int64_t now = im__trk_now(), id = -1;
  if (r == IM_OK)
    r = im__trk_exec(s, q_insert, NULL, "ssii", name, artifact_location ? artifact_location : "", now, now);
  if (r == IM_OK) {
    id = sqlite3_last_insert_rowid(s->db);
    if (!artifact_location || !*artifact_location) {
      char idbuf[24];
      snprintf(idbuf, sizeof idbuf, "%" PRId64, id);
      char *loc = im__trk_join_uri(s->artifact_root, idbuf);
      if (!loc)
        r = IM__TRK_NOMEM(s);
      else
        r = im__trk_exec(s, q_set_location, NULL, "si", loc, id);
      im_free(loc);
    }
  }
  for (int i = 0; r == IM_OK && i < n_tags; i++)
    r = im__trk_exec(s, q_tag_put, NULL, "iss", id, tags[i].key, tags[i].value);
  r = im__trk_end(s, r);
  if (r == IM_OK && id_out) {
    char buf[24];
    snprintf(buf, sizeof buf, "%" PRId64, id);
    *id_out = im_strdup(buf);
    if (!*id_out) r = IM__TRK_NOMEM(s);
  }
  return r;
}

static im_status_t experiment_get_snap(im_track_store_t *s, const char *experiment_id, im_track_experiment_t **out) {
  if (!s || !out) return im_error(IM_ERR_ARG, "im_track_experiment_get: NULL argument");
  *out = NULL;
  int64_t id = im__trk_parse_id(experiment_id);
  int found = 0;
  im_status_t r = id >= 0 ? get_one(s, q_by_id, "i", NULL, id, out, &found) : IM_OK;
  if (r == IM_OK && !found)
    r = im__trk_fail(s, IM_ERR_NOT_FOUND, NULL, "No Experiment with id=%s exists",
                     experiment_id ? experiment_id : "(null)");
  return r;
}

static im_status_t experiment_get_by_name_snap(im_track_store_t *s, const char *name, im_track_experiment_t **out) {
  if (!s || !out) return im_error(IM_ERR_ARG, "im_track_experiment_get_by_name: NULL argument");
  *out = NULL;
  if (!name) return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "experiment name is required");
  int found = 0;
  im_status_t r = get_one(s, q_by_name, "s", name, 0, out, &found);
  if (r == IM_OK && !found)
    r = im__trk_fail(s, IM_ERR_NOT_FOUND, NULL, "Experiment with name '%s' does not exist", name);
  return r;
}

static const char *view_sql(im_track_view_t view) {
  switch (view) {
    case IM_TRACK_DELETED_ONLY:
      return "e.lifecycle_stage = 'deleted'";
    case IM_TRACK_ALL:
      return "1";
    default:
      return "e.lifecycle_stage = 'active'";
  }
}

/* im__trk_fill_fn for experiment searches. */
static im_status_t experiment_fill(im_track_store_t *s, sqlite3_stmt *st, void *item) { return load_row(s, st, item); }

static const im__search_spec_t experiment_search = {
    .dom = &im__dom_experiments,
    .def_results = 1000,
    .max_results = IM_TRACK_MAX_SEARCH_RESULTS,
    .select = "SELECT " EXP_COLS " FROM experiments e WHERE ",
    .order_tail = "e.creation_time DESC, e.experiment_id ASC",
    .what = "preparing the experiment search",
    .item_size = sizeof(im_track_experiment_t),
    .fill = experiment_fill,
};

static im_status_t experiment_search_snap(im_track_store_t *s, im_track_view_t view, const im_track_search_t *q,
                                          im_track_experiment_list_t **out) {
  if (!s || !out) return im_error(IM_ERR_ARG, "im_track_experiment_search: NULL argument");
  *out = NULL;
  if ((int)view < 0 || (int)view > IM_TRACK_ALL)
    return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "invalid view type %d", view);
  im_track_experiment_list_t *l = im_calloc(1, sizeof *l);
  if (!l) return IM__TRK_NOMEM(s);
  void *items = NULL;
  im_status_t r =
      im__trk_search(s, &experiment_search, q, view_sql(view), NULL, 0, &items, &l->n, &l->next_page_token);
  l->items = items;
  if (r != IM_OK) {
    im_track_experiment_list_free(l);
    return r;
  }
  *out = l;
  return IM_OK;
}

im_status_t im_track_experiment_delete(im_track_store_t *s, const char *experiment_id) {
  if (!s) return im_error(IM_ERR_ARG, "no store");
  if (experiment_id && !strcmp(experiment_id, "0"))
    return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID,
                        "Cannot delete the default experiment '0'. This is an internally reserved experiment.");
  im_status_t r = im__trk_begin(s);
  if (r) return r;
  int64_t id = 0;
  int active = 0;
  r = lookup(s, experiment_id, &id, &active);
  if (r == IM_OK && !active)
    r = im__trk_fail(s, IM_ERR_NOT_FOUND, NULL, "No active Experiment with id=%s exists (it is already deleted)",
                     experiment_id);
  int64_t now = im__trk_now();
  if (r == IM_OK) r = im__trk_exec(s, q_set_stage, NULL, "sii", "deleted", now, id);
  if (r == IM_OK) r = im__trk_exec(s, q_delete_runs, NULL, "ii", now, id);
  return im__trk_end(s, r);
}

im_status_t im_track_experiment_restore(im_track_store_t *s, const char *experiment_id) {
  if (!s) return im_error(IM_ERR_ARG, "no store");
  im_status_t r = im__trk_begin(s);
  if (r) return r;
  int64_t id = 0, deleted_at = 0;
  int active = 0, found = 0;
  r = lookup(s, experiment_id, &id, &active);
  if (r == IM_OK && active)
    r = im__trk_fail(s, IM_ERR_NOT_FOUND, NULL, "No deleted Experiment with id=%s exists (it is active)",
                     experiment_id);
  if (r == IM_OK) r = im__trk_query_i64(s, q_deleted_at, &found, &deleted_at, "i", id);
  if (r == IM_OK) r = im__trk_exec(s, q_set_stage, NULL, "sii", "active", im__trk_now(), id);
  /* the runs that were deleted together with the experiment come back */
  if (r == IM_OK) r = im__trk_exec(s, q_restore_runs, NULL, "ii", id, deleted_at);
  return im__trk_end(s, r);
}

im_status_t im_track_experiment_rename(im_track_store_t *s, const char *experiment_id, const char *new_name) {
  if (!s) return im_error(IM_ERR_ARG, "no store");
  im_status_t r = check_name(s, new_name);
  if (r) return r;
  if ((r = im__trk_begin(s))) return r;
  int64_t id = 0;
  int active = 0, found = 0;
  char *old = NULL;
  r = lookup(s, experiment_id, &id, &active);
  if (r == IM_OK && !active)
    r = im__trk_fail(s, IM_ERR_STATE, IM__TRK_INVALID, "Cannot rename a non-active experiment (id=%s).", experiment_id);
  if (r == IM_OK)
    r = im__trk_query_str(s, "SELECT name FROM experiments WHERE experiment_id = ?", &found, &old, "i", id);
  if (r == IM_OK && old && strcmp(old, new_name)) {
    r = name_free(s, new_name);
    if (r == IM_OK) r = im__trk_exec(s, q_rename, NULL, "sii", new_name, im__trk_now(), id);
  }
  im_free(old);
  return im__trk_end(s, r);
}

im_status_t im_track_experiment_set_tag(im_track_store_t *s, const char *experiment_id, const char *key,
                                        const char *value) {
  if (!s) return im_error(IM_ERR_ARG, "no store");
  im_status_t r = im__trk_check_key(s, "tag", key);
  if (r == IM_OK) r = im__trk_check_value(s, "tag", key, value, IM_TRACK_MAX_TAG_VALUE_LEN);
  if (r) return r;
  if ((r = im__trk_begin(s))) return r;
  int64_t id = 0;
  int active = 0;
  r = lookup(s, experiment_id, &id, &active);
  if (r == IM_OK && !active)
    r = im__trk_fail(s, IM_ERR_STATE, IM__TRK_INVALID,
                     "The experiment %s must be in the 'active' state to set tags; it is deleted", experiment_id);
  if (r == IM_OK) r = im__trk_exec(s, q_tag_put, NULL, "iss", id, key, value);
  if (r == IM_OK) r = im__trk_exec(s, q_touch, NULL, "ii", im__trk_now(), id);
  return im__trk_end(s, r);
}

/* ---- public reads: each in one snapshot (a read transaction) ------------------------ */

im_status_t im_track_experiment_get(im_track_store_t *s, const char *experiment_id, im_track_experiment_t **out) {
  IM__TRK_READ_SNAPSHOT(s, experiment_get_snap(s, experiment_id, out));
}

im_status_t im_track_experiment_get_by_name(im_track_store_t *s, const char *name, im_track_experiment_t **out) {
  IM__TRK_READ_SNAPSHOT(s, experiment_get_by_name_snap(s, name, out));
}

im_status_t im_track_experiment_search(im_track_store_t *s, im_track_view_t view, const im_track_search_t *q,
                                       im_track_experiment_list_t **out) {
  IM__TRK_READ_SNAPSHOT(s, experiment_search_snap(s, view, q, out));
}
