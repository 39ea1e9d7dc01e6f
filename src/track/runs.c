/* Runs: create (uuid4 hex ids, generated names, artifact_uri under the
 * experiment's artifact location, parent runs through mlflow.parentRunId),
 * get (info + latest metrics, params, tags), update, soft delete / restore,
 * tags, and search with MLflow's filter and order_by syntax. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "track/track_impl.h"

#define RUN_COLS                                                                                               \
  "r.id, r.run_uuid, r.name, r.experiment_id, r.user_id, r.status, r.start_time, r.end_time, r.artifact_uri, " \
  "r.lifecycle_stage"

#define TAG_RUN_NAME "mlflow.runName"
#define TAG_PARENT "mlflow.parentRunId"

static const char q_lookup[] = "SELECT id, lifecycle_stage = 'active' FROM runs WHERE run_uuid = ?";
static const char q_by_pk[] = "SELECT " RUN_COLS " FROM runs r WHERE r.id = ?";
static const char q_metrics[] =
    "SELECT key, value, is_nan, timestamp, step FROM latest_metrics WHERE run_pk = ? ORDER BY key";
static const char q_params[] = "SELECT key, value FROM params WHERE run_pk = ? ORDER BY key";
static const char q_tags[] = "SELECT key, value FROM tags WHERE run_pk = ? ORDER BY key";
static const char q_tag_put[] =
    "INSERT INTO tags (run_pk, key, value) VALUES (?, ?, ?) ON CONFLICT (run_pk, key) DO UPDATE SET value = "
    "excluded.value";
static const char q_tag_del[] = "DELETE FROM tags WHERE run_pk = ? AND key = ?";
static const char q_set_name[] = "UPDATE runs SET name = ? WHERE id = ?";
static const char q_exp[] =
    "SELECT lifecycle_stage = 'active', artifact_location FROM experiments WHERE experiment_id = ?";
static const char q_insert[] =
    "INSERT INTO runs (run_uuid, name, experiment_id, user_id, status, start_time, end_time, artifact_uri, "
    "lifecycle_stage) VALUES (?, ?, ?, ?, 'RUNNING', ?, NULL, ?, 'active')";
static const char q_set_status[] = "UPDATE runs SET status = ? WHERE id = ?";
static const char q_set_end[] = "UPDATE runs SET end_time = ? WHERE id = ?";
static const char q_set_stage[] = "UPDATE runs SET lifecycle_stage = ?, deleted_time = ? WHERE id = ?";

static const im__attr_t run_attrs[] = {
    {"run_id", "r.run_uuid", 0},
    {"run_name", "r.name", 0},
    {"run name", "r.name", 0},
    {"status", "r.status", 0},
    {"user_id", "r.user_id", 0},
    {"artifact_uri", "r.artifact_uri", 0},
    {"lifecycle_stage", "r.lifecycle_stage", 0},
    {"start_time", "r.start_time", 1},
    {"end_time", "r.end_time", 1},
    {"created", "r.start_time", 1},
    {"Created", "r.start_time", 1},
};

const im__domain_t im__dom_runs = {
    .what = "runs",
    .attrs = run_attrs,
    .n_attrs = (int)(sizeof run_attrs / sizeof run_attrs[0]),
    .tag_prefix = "EXISTS (SELECT 1 FROM tags t WHERE t.run_pk = r.id AND t.key = ? AND ",
    .tag_col = "t.value",
    .param_prefix = "EXISTS (SELECT 1 FROM params p WHERE p.run_pk = r.id AND p.key = ? AND ",
    .param_col = "p.value",
    .metric_prefix = "EXISTS (SELECT 1 FROM latest_metrics m WHERE m.run_pk = r.id AND m.key = ? AND m.is_nan = 0 AND ",
    .metric_col = "m.value",
    .tag_order = "(SELECT t.value FROM tags t WHERE t.run_pk = r.id AND t.key = ?)",
    .param_order = "(SELECT p.value FROM params p WHERE p.run_pk = r.id AND p.key = ?)",
    /* NaN sorts as the largest value */
    .metric_order =
        "(SELECT CASE WHEN m.is_nan THEN 9e999 ELSE m.value END FROM latest_metrics m WHERE m.run_pk = r.id AND m.key "
        "= ?)",
};

/* ---- freeing --------------------------------------------------------------------- */
void im__trk_run_clear(im_track_run_t *r) {
  if (!r) return;
  im_free(r->run_id);
  im_free(r->run_name);
  im_free(r->experiment_id);
  im_free(r->user_id);
  im_free(r->artifact_uri);
  im_free(r->lifecycle_stage);
  if (r->metrics) {
    for (int i = 0; i < r->n_metrics; i++) im_free(r->metrics[i].key);
    im_free(r->metrics);
  }
  im__trk_tags_free(r->params, r->n_params);
  im__trk_tags_free(r->tags, r->n_tags);
  memset(r, 0, sizeof *r);
}

void im_track_run_free(im_track_run_t *r) {
  if (!r) return;
  im__trk_run_clear(r);
  im_free(r);
}

void im_track_run_list_free(im_track_run_list_t *l) {
  if (!l) return;
  for (int64_t i = 0; i < l->n; i++) im__trk_run_clear(&l->items[i]);
  im_free(l->items);
  im_free(l->next_page_token);
  im_free(l);
}

/* ---- lookups shared with metrics.c ------------------------------------------------- */
im_status_t im__trk_run_lookup(im_track_store_t *s, const char *run_id, int64_t *pk, int *active) {
  if (!run_id || !*run_id) return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "run_id is required");
  sqlite3_stmt *st = im__trk_stmt(s, q_lookup);
  if (!st) return IM_ERR_INTERNAL;
  im_status_t r = im__trk_bindv(s, st, 1, "s", run_id);
  int row = 0;
  if (r == IM_OK) r = im__trk_step(s, st, &row);
  if (r == IM_OK && row) {
    *pk = sqlite3_column_int64(st, 0);
    *active = sqlite3_column_int(st, 1);
  }
  im__trk_reset(st);
  if (r == IM_OK && !row) r = im__trk_fail(s, IM_ERR_NOT_FOUND, NULL, "Run with id=%s not found", run_id);
  return r;
}

im_status_t im__trk_run_active(im_track_store_t *s, const char *run_id, int64_t *pk) {
  int active = 0;
  im_status_t r = im__trk_run_lookup(s, run_id, pk, &active);
  if (r == IM_OK && !active)
    r = im__trk_fail(s, IM_ERR_STATE, IM__TRK_INVALID,
                     "The run %s must be in the 'active' state. Current state is deleted.", run_id);
  return r;
}

im_status_t im__trk_run_tag_put(im_track_store_t *s, int64_t pk, const char *key, const char *value) {
  im_status_t r = im__trk_exec(s, q_tag_put, NULL, "iss", pk, key, value);
  /* mlflow.runName is the run's name: keep the column in step */
  if (r == IM_OK && !strcmp(key, TAG_RUN_NAME)) r = im__trk_exec(s, q_set_name, NULL, "si", value, pk);
  return r;
}

/* ---- loading ------------------------------------------------------------------------ */
static im_status_t load_data(im_track_store_t *s, int64_t pk, im_track_run_t *run) {
  sqlite3_stmt *st = im__trk_stmt(s, q_metrics);
  if (!st) return IM_ERR_INTERNAL;
  im_status_t r = im__trk_bindv(s, st, 1, "i", pk);
  void *items = NULL;
  int64_t n = 0;
  if (r == IM_OK)
    r = im__trk_collect_page(s, st, INT64_MAX, 0, sizeof(im_track_metric_t), im__trk_metric_fill, &items, &n, NULL);
  run->metrics = items;
  run->n_metrics = (int)n;
  im__trk_reset(st);
  if (r) return r;
  if (!(st = im__trk_stmt(s, q_params))) return IM_ERR_INTERNAL;
  if ((r = im__trk_bindv(s, st, 1, "i", pk))) return r;
  if ((r = im__trk_load_tags(s, st, &run->params, &run->n_params))) return r;
  if (!(st = im__trk_stmt(s, q_tags))) return IM_ERR_INTERNAL;
  if ((r = im__trk_bindv(s, st, 1, "i", pk))) return r;
  return im__trk_load_tags(s, st, &run->tags, &run->n_tags);
}

/* Fills the info part from a RUN_COLS row; *pk gets the row id. */
static im_status_t load_info(im_track_store_t *s, sqlite3_stmt *st, im_track_run_t *run, int64_t *pk) {
  int oom = 0;
  *pk = sqlite3_column_int64(st, 0);
  run->run_id = im__trk_col_dup0(st, 1, &oom);
  run->run_name = im__trk_col_dup0(st, 2, &oom);
  char id[24];
  snprintf(id, sizeof id, "%" PRId64, (int64_t)sqlite3_column_int64(st, 3));
  run->experiment_id = im_strdup(id);
  run->user_id = im__trk_col_dup0(st, 4, &oom);
  const char *status = (const char *)sqlite3_column_text(st, 5);
  run->status = (im_track_run_status_t)im_track_run_status_parse(status);
  run->start_time = sqlite3_column_int64(st, 6);
  run->end_time = im__trk_col_time(st, 7);
  run->artifact_uri = im__trk_col_dup0(st, 8, &oom);
  run->lifecycle_stage = im__trk_col_dup0(st, 9, &oom);
  if (oom || !run->experiment_id) return IM__TRK_NOMEM(s);
  return IM_OK;
}

im_status_t im__trk_run_load(im_track_store_t *s, int64_t pk, im_track_run_t **out) {
  sqlite3_stmt *st = im__trk_stmt(s, q_by_pk);
  if (!st) return IM_ERR_INTERNAL;
  im_status_t r = im__trk_bindv(s, st, 1, "i", pk);
  int row = 0;
  if (r == IM_OK) r = im__trk_step(s, st, &row);
  im_track_run_t *run = NULL;
  if (r == IM_OK && !row) r = im__trk_fail(s, IM_ERR_NOT_FOUND, NULL, "Run not found");
  if (r == IM_OK && !(run = im_calloc(1, sizeof *run))) r = IM__TRK_NOMEM(s);
  int64_t pk2 = 0;
  if (r == IM_OK) r = load_info(s, st, run, &pk2);
  im__trk_reset(st);
  if (r == IM_OK) r = load_data(s, pk, run);
  if (r != IM_OK) {
    im_track_run_free(run);
    return r;
  }
  *out = run;
  return IM_OK;
}

/* ---- create -------------------------------------------------------------------------- */
static void generate_name(char *out, size_t n) {
  static const char *const adj[] = {"amazing", "bold",   "brave",  "bright", "calm",   "clever", "crisp",
                                    "daring",  "eager",  "fair",   "gentle", "glossy", "honest", "keen",
                                    "lively",  "loud",   "merry",  "nimble", "polite", "quick",  "quiet",
                                    "rare",    "rustic", "smooth", "sunny",  "swift",  "tidy",   "wise"};
  static const char *const noun[] = {"ant",   "bass",  "bear",  "crab", "crow",  "deer", "dove",  "eel",
                                     "finch", "fox",   "frog",  "gull", "hare",  "hawk", "lark",  "lynx",
                                     "mole",  "moth",  "newt",  "owl",  "panda", "ram",  "seal",  "shrew",
                                     "slug",  "snail", "stork", "toad", "trout", "wasp", "whale", "wolf"};
  char hex[33];
  im__trk_uuid_hex(hex);
  unsigned v = 0;
  for (int i = 0; i < 8; i++) v = v * 16 + (unsigned)(hex[i] <= '9' ? hex[i] - '0' : hex[i] - 'a' + 10);
  snprintf(out, n, "%s-%s-%03u", adj[v % (sizeof adj / sizeof adj[0])], noun[(v / 64) % (sizeof noun / sizeof noun[0])],
           (v / 4096) % 1000);
}

im_status_t im_track_run_create(im_track_store_t *s, const im_track_run_create_t *c, im_track_run_t **out) {
  if (!s || !c) return im_error(IM_ERR_ARG, "im_track_run_create: NULL argument");
  if (out) *out = NULL;
  const char *exp_id = c->experiment_id ? c->experiment_id : "0";
  if (c->n_tags < 0 || (c->n_tags > 0 && !c->tags)) return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "bad tag list");
  const char *tag_name = NULL;
  im_status_t r = IM_OK;
  for (int i = 0; i < c->n_tags; i++) {
    if ((r = im__trk_check_key(s, "tag", c->tags[i].key))) return r;
    if ((r = im__trk_check_value(s, "tag", c->tags[i].key, c->tags[i].value, IM_TRACK_MAX_TAG_VALUE_LEN))) return r;
    if (!strcmp(c->tags[i].key, TAG_RUN_NAME)) tag_name = c->tags[i].value;
  }
  if (c->run_name && tag_name && strcmp(c->run_name, tag_name))
    return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID,
                        "Both 'run_name' argument and 'mlflow.runName' tag are specified, but with different values "
                        "(run_name='%s', mlflow.runName='%s').",
                        c->run_name, tag_name);
  if (c->run_name && (r = im__trk_check_value(s, "run name", c->run_name, c->run_name, IM_TRACK_MAX_TAG_VALUE_LEN)))
    return r;
  char gen[64];
  const char *name = c->run_name ? c->run_name : tag_name;
  if (!name || !*name) {
    generate_name(gen, sizeof gen);
    name = gen;
  }
  int64_t eid = im__trk_parse_id(exp_id);
  char uuid[33];
  im__trk_uuid_hex(uuid);
  if ((r = im__trk_begin(s))) return r;
  sqlite3_stmt *st = NULL;
  int row = 0, active = 0;
  char *loc = NULL;
  if (eid >= 0) {
    st = im__trk_stmt(s, q_exp);
    if (!st) r = IM_ERR_INTERNAL;
    if (r == IM_OK) r = im__trk_bindv(s, st, 1, "i", eid);
    if (r == IM_OK) r = im__trk_step(s, st, &row);
    if (r == IM_OK && row) {
      int oom = 0;
      active = sqlite3_column_int(st, 0);
      loc = im__trk_col_dup0(st, 1, &oom);
      if (oom) r = IM__TRK_NOMEM(s);
    }
    im__trk_reset(st);
  }
  if (r == IM_OK && !row) r = im__trk_fail(s, IM_ERR_NOT_FOUND, NULL, "No Experiment with id=%s exists", exp_id);
  if (r == IM_OK && !active)
    r = im__trk_fail(s, IM_ERR_STATE, IM__TRK_INVALID, "Could not create run under non-active experiment with ID %s.",
                     exp_id);
  char *uri = NULL;
  if (r == IM_OK) {
    char tail[48];
    snprintf(tail, sizeof tail, "%s/artifacts", uuid);
    if (!(uri = im__trk_join_uri(loc, tail))) r = IM__TRK_NOMEM(s);
  }
  int64_t start = c->start_time > 0 ? c->start_time : im__trk_now();
  if (r == IM_OK)
    r = im__trk_exec(s, q_insert, NULL, "ssisis", uuid, name, eid, c->user_id ? c->user_id : "", start, uri);
  int64_t pk = sqlite3_last_insert_rowid(s->db);
  for (int i = 0; r == IM_OK && i < c->n_tags; i++)
    r = im__trk_exec(s, q_tag_put, NULL, "iss", pk, c->tags[i].key, c->tags[i].value);
  if (r == IM_OK) r = im__trk_run_tag_put(s, pk, TAG_RUN_NAME, name);
  if (r == IM_OK && c->parent_run_id && *c->parent_run_id) r = im__trk_run_tag_put(s, pk, TAG_PARENT, c->parent_run_id);
  im_free(loc);
  im_free(uri);
  r = im__trk_end(s, r);
  if (r == IM_OK && out) r = im__trk_run_load(s, pk, out);
  return r;
}

static im_status_t run_get_snap(im_track_store_t *s, const char *run_id, im_track_run_t **out) {
  if (!s || !out) return im_error(IM_ERR_ARG, "im_track_run_get: NULL argument");
  *out = NULL;
  int64_t pk = 0;
  int active = 0;
  im_status_t r = im__trk_run_lookup(s, run_id, &pk, &active);
  if (r == IM_OK) r = im__trk_run_load(s, pk, out);
  return r;
}

im_status_t im_track_run_update(im_track_store_t *s, const char *run_id, const im_track_run_update_t *u,
                                im_track_run_t **out) {
  if (!s || !u) return im_error(IM_ERR_ARG, "im_track_run_update: NULL argument");
  if (out) *out = NULL;
  if (u->status && !im_track_run_status_name(u->status))
    return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "invalid run status %d", u->status);
  im_status_t r = IM_OK;
  if (u->run_name && (r = im__trk_check_value(s, "run name", u->run_name, u->run_name, IM_TRACK_MAX_TAG_VALUE_LEN)))
    return r;
  if ((r = im__trk_begin(s))) return r;
  int64_t pk = 0;
  r = im__trk_run_active(s, run_id, &pk);
  if (r == IM_OK && u->status) r = im__trk_exec(s, q_set_status, NULL, "si", im_track_run_status_name(u->status), pk);
  if (r == IM_OK && u->end_time != IM_TRACK_NO_TIME) r = im__trk_exec(s, q_set_end, NULL, "ii", u->end_time, pk);
  if (r == IM_OK && u->run_name && *u->run_name) r = im__trk_run_tag_put(s, pk, TAG_RUN_NAME, u->run_name);
  r = im__trk_end(s, r);
  if (r == IM_OK && out) r = im__trk_run_load(s, pk, out);
  return r;
}

static im_status_t set_stage(im_track_store_t *s, const char *run_id, int deleted) {
  if (!s) return im_error(IM_ERR_ARG, "no store");
  im_status_t r = im__trk_begin(s);
  if (r) return r;
  int64_t pk = 0;
  int active = 0;
  r = im__trk_run_lookup(s, run_id, &pk, &active);
  if (r == IM_OK) {
    if (deleted)
      r = im__trk_exec(s, q_set_stage, NULL, "sii", "deleted", im__trk_now(), pk);
    else
      r = im__trk_exec(s, q_set_stage, NULL, "sni", "active", pk);
  }
  return im__trk_end(s, r);
}

im_status_t im_track_run_delete(im_track_store_t *s, const char *run_id) { return set_stage(s, run_id, 1); }
im_status_t im_track_run_restore(im_track_store_t *s, const char *run_id) { return set_stage(s, run_id, 0); }

im_status_t im_track_run_set_tag(im_track_store_t *s, const char *run_id, const char *key, const char *value) {
  if (!s) return im_error(IM_ERR_ARG, "no store");
  im_status_t r = im__trk_check_key(s, "tag", key);
  if (r == IM_OK) r = im__trk_check_value(s, "tag", key, value, IM_TRACK_MAX_TAG_VALUE_LEN);
  if (r) return r;
  if ((r = im__trk_begin(s))) return r;
  int64_t pk = 0;
  r = im__trk_run_active(s, run_id, &pk);
  if (r == IM_OK) r = im__trk_run_tag_put(s, pk, key, value);
  return im__trk_end(s, r);
}

im_status_t im_track_run_delete_tag(im_track_store_t *s, const char *run_id, const char *key) {
  if (!s) return im_error(IM_ERR_ARG, "no store");
  if (!key) return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "tag key is required");
  im_status_t r = im__trk_begin(s);
  if (r) return r;
  int64_t pk = 0;
  int changes = 0;
  r = im__trk_run_active(s, run_id, &pk);
  if (r == IM_OK) r = im__trk_exec(s, q_tag_del, &changes, "is", pk, key);
  if (r == IM_OK && !changes)
    r = im__trk_fail(s, IM_ERR_NOT_FOUND, NULL, "No tag with name: %s in run with id %s", key, run_id);
  return im__trk_end(s, r);
}

/* ---- search ---------------------------------------------------------------------------- */
/* im__trk_fill_fn for run searches: the info from the row, then params, metrics and tags. */
static im_status_t run_fill(im_track_store_t *s, sqlite3_stmt *st, void *item) {
  int64_t pk = 0;
  im_status_t r = load_info(s, st, item, &pk);
  return r == IM_OK ? load_data(s, pk, item) : r;
}

static const im__search_spec_t run_search = {
    .dom = &im__dom_runs,
    .def_results = 1000,
    .max_results = IM_TRACK_MAX_SEARCH_RESULTS,
    .select = "SELECT " RUN_COLS " FROM runs r WHERE ",
    .order_tail = "r.start_time DESC, r.run_uuid ASC",
    .what = "preparing the run search",
    .item_size = sizeof(im_track_run_t),
    .fill = run_fill,
};

static im_status_t run_search_snap(im_track_store_t *s, const char *const *experiment_ids, int n_experiment_ids,
                                   im_track_view_t view, const im_track_search_t *q, im_track_run_list_t **out) {
  if (!s || !out) return im_error(IM_ERR_ARG, "im_track_run_search: NULL argument");
  *out = NULL;
  if (n_experiment_ids < 0 || (n_experiment_ids > 0 && !experiment_ids))
    return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "bad experiment id list");
  if (n_experiment_ids > 1000)
    return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "too many experiment ids (%d; at most 1000)", n_experiment_ids);
  int64_t ids[1000];
  for (int i = 0; i < n_experiment_ids; i++)
    if ((ids[i] = im__trk_parse_id(experiment_ids[i])) < 0)
      return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "invalid experiment id '%s'",
                          experiment_ids[i] ? experiment_ids[i] : "(null)");
  const char *view_sql = view == IM_TRACK_DELETED_ONLY ? "r.lifecycle_stage = 'deleted'"
                         : view == IM_TRACK_ALL        ? "1"
                                                       : "r.lifecycle_stage = 'active'";
  im_buf_t cond = {0};
  int e = im_buf_printf(&cond, "%s", view_sql);
  if (!e && n_experiment_ids > 0) {
    e = im_buf_printf(&cond, " AND r.experiment_id IN (");
    for (int i = 0; !e && i < n_experiment_ids; i++) e = im_buf_printf(&cond, "%s?", i ? ", " : "");
    if (!e) e = im_buf_printf(&cond, ")");
  }
  im_track_run_list_t *l = NULL;
  im_status_t r = IM_OK;
  if (e || !(l = im_calloc(1, sizeof *l))) r = IM__TRK_NOMEM(s);
  if (r == IM_OK) {
    void *items = NULL;
    r = im__trk_search(s, &run_search, q, cond.data, ids, n_experiment_ids, &items, &l->n, &l->next_page_token);
    l->items = items;
  }
  im_buf_free(&cond);
  if (r != IM_OK) {
    im_track_run_list_free(l);
    return r;
  }
  *out = l;
  return IM_OK;
}

/* ---- public reads: each in one snapshot (a read transaction) ------------------------ */

im_status_t im_track_run_get(im_track_store_t *s, const char *run_id, im_track_run_t **out) {
  IM__TRK_READ_SNAPSHOT(s, run_get_snap(s, run_id, out));
}

im_status_t im_track_run_search(im_track_store_t *s, const char *const *experiment_ids, int n_experiment_ids,
                                im_track_view_t view, const im_track_search_t *q, im_track_run_list_t **out) {
  IM__TRK_READ_SNAPSHOT(s, run_search_snap(s, experiment_ids, n_experiment_ids, view, q, out));
}
