/* The model registry: registered models (unique names, description, tags,
 * aliases) and their versions (numbers increasing per model and never
 * reused, source URI, run id, READY status, stages with archive_existing on
 * transition, tags), with MLflow-style search. */
#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "track/track_impl.h"

#define MV_COLS                                                                                          \
  "m.name, v.version, v.creation_time, v.last_updated_time, v.user_id, v.current_stage, v.description, " \
  "v.source, v.run_id, v.run_link, v.status, v.status_message, v.model_id"
#define MV_FROM " FROM model_versions v JOIN registered_models m ON m.id = v.model_id"

static const char q_model_id[] = "SELECT id FROM registered_models WHERE name = ?";
static const char q_model_row[] =
    "SELECT name, creation_time, last_updated_time, user_id, description FROM registered_models WHERE id = ?";
static const char q_model_tags[] = "SELECT key, value FROM registered_model_tags WHERE model_id = ? ORDER BY key";
static const char q_model_aliases[] =
    "SELECT alias, version FROM registered_model_aliases WHERE model_id = ? ORDER BY alias";
static const char q_latest[] =
    "SELECT " MV_COLS MV_FROM
    " WHERE v.model_id = ? AND v.version = (SELECT max(x.version) FROM model_versions x "
    "WHERE x.model_id = v.model_id AND x.current_stage = v.current_stage) "
    "ORDER BY CASE v.current_stage WHEN 'None' THEN 0 WHEN 'Staging' THEN 1 WHEN 'Production' THEN 2 ELSE 3 END";
static const char q_mv_get[] = "SELECT " MV_COLS MV_FROM " WHERE v.model_id = ? AND v.version = ?";
static const char q_mv_tags[] =
    "SELECT key, value FROM model_version_tags WHERE model_id = ? AND version = ? ORDER BY key";
static const char q_mv_aliases[] =
    "SELECT alias FROM registered_model_aliases WHERE model_id = ? AND version = ? ORDER BY alias";
static const char q_mv_exists[] = "SELECT 1 FROM model_versions WHERE model_id = ? AND version = ?";
static const char q_model_insert[] =
    "INSERT INTO registered_models (name, creation_time, last_updated_time, description, user_id) "
    "VALUES (?, ?, ?, ?, '')";
static const char q_model_tag_put[] =
    "INSERT INTO registered_model_tags (model_id, key, value) VALUES (?, ?, ?) "
    "ON CONFLICT (model_id, key) DO UPDATE SET value = excluded.value";
static const char q_model_tag_del[] = "DELETE FROM registered_model_tags WHERE model_id = ? AND key = ?";
static const char q_model_touch[] = "UPDATE registered_models SET last_updated_time = ? WHERE id = ?";
static const char q_model_rename[] = "UPDATE registered_models SET name = ?, last_updated_time = ? WHERE id = ?";
static const char q_model_desc[] = "UPDATE registered_models SET description = ?, last_updated_time = ? WHERE id = ?";
static const char q_model_delete[] = "DELETE FROM registered_models WHERE id = ?";
static const char q_next_version[] = "SELECT next_version FROM registered_models WHERE id = ?";
static const char q_bump_version[] =
    "UPDATE registered_models SET next_version = next_version + 1, last_updated_time = ? WHERE id = ?";
static const char q_mv_insert[] =
    "INSERT INTO model_versions (model_id, version, creation_time, last_updated_time, user_id, current_stage, "
    "description, source, run_id, run_link, status, status_message) "
    "VALUES (?, ?, ?, ?, ?, 'None', ?, ?, ?, ?, 'READY', '')";
static const char q_mv_tag_put[] =
    "INSERT INTO model_version_tags (model_id, version, key, value) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (model_id, version, key) DO UPDATE SET value = excluded.value";
static const char q_mv_tag_del[] = "DELETE FROM model_version_tags WHERE model_id = ? AND version = ? AND key = ?";
static const char q_mv_desc[] =
    "UPDATE model_versions SET description = ?, last_updated_time = ? WHERE model_id = ? AND version = ?";
static const char q_mv_stage[] =
    "UPDATE model_versions SET current_stage = ?, last_updated_time = ? WHERE model_id = ? AND version = ?";
static const char q_mv_archive[] =
    "UPDATE model_versions SET current_stage = 'Archived', last_updated_time = ? "
    "WHERE model_id = ? AND current_stage = ? AND version != ?";
static const char q_mv_delete[] = "DELETE FROM model_versions WHERE model_id = ? AND version = ?";
static const char q_alias_put[] =
    "INSERT INTO registered_model_aliases (model_id, alias, version) VALUES (?, ?, ?) "
    "ON CONFLICT (model_id, alias) DO UPDATE SET version = excluded.version";
static const char q_alias_del[] = "DELETE FROM registered_model_aliases WHERE model_id = ? AND alias = ?";
static const char q_alias_get[] = "SELECT version FROM registered_model_aliases WHERE model_id = ? AND alias = ?";

static const im__attr_t model_attrs[] = {
    {"name", "m.name", 0},
    {"creation_timestamp", "m.creation_time", 1},
    {"last_updated_timestamp", "m.last_updated_time", 1},
    {"timestamp", "m.last_updated_time", 1},
};

const im__domain_t im__dom_models = {
    .what = "registered models",
    .attrs = model_attrs,
    .n_attrs = (int)(sizeof model_attrs / sizeof model_attrs[0]),
    .tag_prefix = "EXISTS (SELECT 1 FROM registered_model_tags t WHERE t.model_id = m.id AND t.key = ? AND ",
    .tag_col = "t.value",
    .tag_order = "(SELECT t.value FROM registered_model_tags t WHERE t.model_id = m.id AND t.key = ?)",
};

static const im__attr_t version_attrs[] = {
    {"name", "m.name", 0},
    {"run_id", "v.run_id", 0},
    {"source_path", "v.source", 0},
    {"current_stage", "v.current_stage", 0},
    {"version_number", "v.version", 1},
    {"creation_timestamp", "v.creation_time", 1},
    {"last_updated_timestamp", "v.last_updated_time", 1},
    {"timestamp", "v.last_updated_time", 1},
};

const im__domain_t im__dom_versions = {
    .what = "model versions",
    .attrs = version_attrs,
    .n_attrs = (int)(sizeof version_attrs / sizeof version_attrs[0]),
    .tag_prefix =
        "EXISTS (SELECT 1 FROM model_version_tags t WHERE t.model_id = v.model_id AND t.version = v.version "
        "AND t.key = ? AND ",
    .tag_col = "t.value",
    .tag_order =
        "(SELECT t.value FROM model_version_tags t WHERE t.model_id = v.model_id AND t.version = v.version "
        "AND t.key = ?)",
};

/* ---- freeing ------------------------------------------------------------------------ */
void im__trk_model_version_clear(im_track_model_version_t *v) {
  if (!v) return;
  im_free(v->name);
  im_free(v->user_id);
  im_free(v->current_stage);
  im_free(v->description);
  im_free(v->source);
  im_free(v->run_id);
  im_free(v->run_link);
  im_free(v->status);
  im_free(v->status_message);
  im__trk_tags_free(v->tags, v->n_tags);
  for (int i = 0; i < v->n_aliases; i++) im_free(v->aliases[i]);
  im_free(v->aliases);
  memset(v, 0, sizeof *v);
}

void im_track_model_version_free(im_track_model_version_t *v) {
  if (!v) return;
  im__trk_model_version_clear(v);
  im_free(v);
}

void im_track_model_version_list_free(im_track_model_version_list_t *l) {
  if (!l) return;
  for (int64_t i = 0; i < l->n; i++) im__trk_model_version_clear(&l->items[i]);
  im_free(l->items);
  im_free(l->next_page_token);
  im_free(l);
}

void im__trk_model_clear(im_track_model_t *m) {
  if (!m) return;
  im_free(m->name);
  im_free(m->user_id);
  im_free(m->description);
  im__trk_tags_free(m->tags, m->n_tags);
  for (int i = 0; i < m->n_aliases; i++) im_free(m->aliases[i].alias);
  im_free(m->aliases);
  for (int i = 0; i < m->n_latest; i++) im__trk_model_version_clear(&m->latest_versions[i]);
  im_free(m->latest_versions);
  memset(m, 0, sizeof *m);
}

void im_track_model_free(im_track_model_t *m) {
  if (!m) return;
  im__trk_model_clear(m);
  im_free(m);
}

void im_track_model_list_free(im_track_model_list_t *l) {
  if (!l) return;
  for (int64_t i = 0; i < l->n; i++) im__trk_model_clear(&l->items[i]);
  im_free(l->items);
  im_free(l->next_page_token);
  im_free(l);
}

/* ---- validation and lookups ------------------------------------------------------------ */
static const char *canonical_stage(const char *stage) {
  static const char *const stages[] = {IM_TRACK_STAGE_NONE, IM_TRACK_STAGE_STAGING, IM_TRACK_STAGE_PRODUCTION,
                                       IM_TRACK_STAGE_ARCHIVED};
  if (!stage) return NULL;
  for (size_t i = 0; i < 4; i++)
    if (!strcasecmp(stage, stages[i])) return stages[i];
  return NULL;
}

static im_status_t check_model_name(im_track_store_t *s, const char *name) {
  if (!name || !*name) return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "Registered model name cannot be empty.");
  if (strchr(name, '/'))
    return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID,
                        "invalid registered model name '%s': it must not contain '/' (models:/<name>/<version> URIs)",
                        name);
  if (im__trk_utf8_len(name) > 256)
    return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "registered model name '%.40s...' is longer than 256", name);
  return IM_OK;
}

static im_status_t check_alias(im_track_store_t *s, const char *alias) {
  if (!alias || !*alias) return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "alias must not be empty");
  size_t n = strlen(alias);
  if (n > 255) return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "alias '%.40s...' is longer than 255", alias);
  for (const char *p = alias; *p; p++)
    if (!(isalnum((unsigned char)*p) || *p == '_' || *p == '-'))
      return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID,
                          "invalid alias '%s': aliases may only contain alphanumerics, '_' and '-'", alias);
  if (!strcasecmp(alias, "latest"))
    return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "'%s' is reserved and cannot be used as an alias", alias);
  if ((alias[0] == 'v' || alias[0] == 'V') && n > 1) {
    int digits = 1;
    for (const char *p = alias + 1; *p; p++)
      if (!isdigit((unsigned char)*p)) digits = 0;
    if (digits)
      return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID,
                          "alias '%s' looks like a version (v<number>) and cannot be used as an alias", alias);
  }
  return IM_OK;
}

static im_status_t check_registry_tag(im_track_store_t *s, const char *key, const char *value) {
  im_status_t r = im__trk_check_key(s, "tag", key);
  if (r == IM_OK) r = im__trk_check_value(s, "tag", key, value, IM_TRACK_MAX_REGISTRY_TAG_VALUE_LEN);
  return r;
}

static im_status_t model_id(im_track_store_t *s, const char *name, int64_t *id) {
  if (!name || !*name) return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "Registered model name cannot be empty.");
  int found = 0;
  im_status_t r = im__trk_query_i64(s, q_model_id, &found, id, "s", name);
  if (r == IM_OK && !found)
    r = im__trk_fail(s, IM_ERR_NOT_FOUND, NULL, "Registered Model with name=%s not found", name);
  return r;
}

static im_status_t version_exists(im_track_store_t *s, const char *name, int64_t id, int64_t version) {
  int found = 0;
  im_status_t r = im__trk_query_i64(s, q_mv_exists, &found, NULL, "ii", id, version);
  if (r == IM_OK && !found)
    r = im__trk_fail(s, IM_ERR_NOT_FOUND, NULL, "Model Version (name=%s, version=%" PRId64 ") not found", name,
                     version);
  return r;
}

/* ---- loading ----------------------------------------------------------------------------- */
/* Fills v from an MV_COLS row and loads its tags and aliases. */
static im_status_t version_row(im_track_store_t *s, sqlite3_stmt *st, im_track_model_version_t *v) {
  int oom = 0;
  v->name = im__trk_col_dup0(st, 0, &oom);
  v->version = sqlite3_column_int64(st, 1);
  v->creation_time = sqlite3_column_int64(st, 2);
  v->last_updated_time = sqlite3_column_int64(st, 3);
  v->user_id = im__trk_col_dup0(st, 4, &oom);
  v->current_stage = im__trk_col_dup0(st, 5, &oom);
  v->description = im__trk_col_dup0(st, 6, &oom);
  v->source = im__trk_col_dup0(st, 7, &oom);
  v->run_id = im__trk_col_dup0(st, 8, &oom);
  v->run_link = im__trk_col_dup0(st, 9, &oom);
  v->status = im__trk_col_dup0(st, 10, &oom);
  v->status_message = im__trk_col_dup0(st, 11, &oom);
  int64_t mid = sqlite3_column_int64(st, 12);
  if (oom) return IM__TRK_NOMEM(s);
  sqlite3_stmt *t = im__trk_stmt(s, q_mv_tags);
  if (!t) return IM_ERR_INTERNAL;
  im_status_t r = im__trk_bindv(s, t, 1, "ii", mid, v->version);
  if (r == IM_OK) r = im__trk_load_tags(s, t, &v->tags, &v->n_tags);
  if (r) return r;
  if (!(t = im__trk_stmt(s, q_mv_aliases))) return IM_ERR_INTERNAL;
  if ((r = im__trk_bindv(s, t, 1, "ii", mid, v->version))) return r;
  int row = 0, cap = 0;
  while ((r = im__trk_step(s, t, &row)) == IM_OK && row) {
    if (v->n_aliases == cap) {
      int nc = cap ? cap * 2 : 4;
      char **na = im_realloc(v->aliases, (size_t)nc * sizeof *na);
      if (!na) {
        oom = 1;
        break;
      }
      v->aliases = na;
      cap = nc;
    }
    v->aliases[v->n_aliases] = im__trk_col_dup0(t, 0, &oom);
    if (oom) break;
    v->n_aliases++;
  }
  im__trk_reset(t);
  if (r == IM_OK && oom) r = IM__TRK_NOMEM(s);
  return r;
}

static im_status_t version_load(im_track_store_t *s, int64_t mid, int64_t version, im_track_model_version_t **out) {
  sqlite3_stmt *st = im__trk_stmt(s, q_mv_get);
  if (!st) return IM_ERR_INTERNAL;
  im_status_t r = im__trk_bindv(s, st, 1, "ii", mid, version);
  int row = 0;
  if (r == IM_OK) r = im__trk_step(s, st, &row);
  im_track_model_version_t *v = NULL;
  if (r == IM_OK && !row) r = im__trk_fail(s, IM_ERR_NOT_FOUND, NULL, "Model Version %" PRId64 " not found", version);
  if (r == IM_OK && !(v = im_calloc(1, sizeof *v))) r = IM__TRK_NOMEM(s);
  if (r == IM_OK) r = version_row(s, st, v);
  im__trk_reset(st);
  if (r != IM_OK) {
    im_track_model_version_free(v);
    return r;
  }
  *out = v;
  return IM_OK;
}

/* Appends the latest version of each stage (those in want, or all) to a list. */
static im_status_t latest_versions(im_track_store_t *s, int64_t mid, const char *const *want, int n_want,
                                   im_track_model_version_t **items, int64_t *n) {
  sqlite3_stmt *st = im__trk_stmt(s, q_latest);
  if (!st) return IM_ERR_INTERNAL;
  im_status_t r = im__trk_bindv(s, st, 1, "i", mid);
  int row = 0;
  int64_t cap = 0;
  while (r == IM_OK && (r = im__trk_step(s, st, &row)) == IM_OK && row) {
    if (n_want > 0) {
      const char *stage = (const char *)sqlite3_column_text(st, 5);
      int keep = 0;
      for (int i = 0; i < n_want; i++)
        if (stage && !strcmp(stage, want[i])) keep = 1;
      if (!keep) continue;
    }
    if (*n == cap) {
      int64_t nc = cap ? cap * 2 : 4;
      im_track_model_version_t *ni = im_realloc(*items, (size_t)nc * sizeof *ni);
      if (!ni) {
        r = IM__TRK_NOMEM(s);
        break;
      }
      *items = ni;
      cap = nc;
    }
    memset(&(*items)[*n], 0, sizeof **items);
    r = version_row(s, st, &(*items)[*n]);
    (*n)++;
  }
  im__trk_reset(st);
  return r;
}

/* Fills m for the model with row id mid. */
static im_status_t model_fill(im_track_store_t *s, int64_t mid, im_track_model_t *m) {
  sqlite3_stmt *st = im__trk_stmt(s, q_model_row);
  if (!st) return IM_ERR_INTERNAL;
  im_status_t r = im__trk_bindv(s, st, 1, "i", mid);
  int row = 0, oom = 0;
  if (r == IM_OK) r = im__trk_step(s, st, &row);
  if (r == IM_OK && !row) r = im__trk_fail(s, IM_ERR_NOT_FOUND, NULL, "Registered Model not found");
  if (r == IM_OK) {
    m->name = im__trk_col_dup0(st, 0, &oom);
    m->creation_time = sqlite3_column_int64(st, 1);
    m->last_updated_time = sqlite3_column_int64(st, 2);
    m->user_id = im__trk_col_dup0(st, 3, &oom);
    m->description = im__trk_col_dup0(st, 4, &oom);
    if (oom) r = IM__TRK_NOMEM(s);
  }
  im__trk_reset(st);
  if (r) return r;
  if (!(st = im__trk_stmt(s, q_model_tags))) return IM_ERR_INTERNAL;
  if ((r = im__trk_bindv(s, st, 1, "i", mid))) return r;
  if ((r = im__trk_load_tags(s, st, &m->tags, &m->n_tags))) return r;
  if (!(st = im__trk_stmt(s, q_model_aliases))) return IM_ERR_INTERNAL;
  if ((r = im__trk_bindv(s, st, 1, "i", mid))) return r;
  int cap = 0;
  while ((r = im__trk_step(s, st, &row)) == IM_OK && row) {
    if (m->n_aliases == cap) {
      int nc = cap ? cap * 2 : 4;
      im_track_alias_t *na = im_realloc(m->aliases, (size_t)nc * sizeof *na);
      if (!na) {
        oom = 1;
        break;
      }
      m->aliases = na;
      cap = nc;
    }
    m->aliases[m->n_aliases].alias = im__trk_col_dup0(st, 0, &oom);
    m->aliases[m->n_aliases].version = sqlite3_column_int64(st, 1);
    if (oom) break;
    m->n_aliases++;
  }
  im__trk_reset(st);
  if (r == IM_OK && oom) r = IM__TRK_NOMEM(s);
  if (r) return r;
  int64_t nl = 0;
  r = latest_versions(s, mid, NULL, 0, &m->latest_versions, &nl);
  m->n_latest = (int)nl;
  return r;
}

static im_status_t model_load(im_track_store_t *s, int64_t mid, im_track_model_t **out) {
  im_track_model_t *m = im_calloc(1, sizeof *m);
  if (!m) return IM__TRK_NOMEM(s);
  im_status_t r = model_fill(s, mid, m);
  if (r != IM_OK) {
    im_track_model_free(m);
    return r;
  }
  *out = m;
  return IM_OK;
}

/* ---- registered models --------------------------------------------------------------------- */
im_status_t im_track_model_create(im_track_store_t *s, const char *name, const char *description,
                                  const im_track_kv_t *tags, int n_tags, im_track_model_t **out) {
  if (!s) return im_error(IM_ERR_ARG, "no store");
  if (out) *out = NULL;
  im_status_t r = check_model_name(s, name);
  if (r) return r;
  if (n_tags < 0 || (n_tags > 0 && !tags)) return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "bad tag list");
  for (int i = 0; i < n_tags; i++)
    if ((r = check_registry_tag(s, tags[i].key, tags[i].value))) return r;
  if ((r = im__trk_begin(s))) return r;
  int found = 0;
  r = im__trk_query_i64(s, q_model_id, &found, NULL, "s", name);
  if (r == IM_OK && found) r = im__trk_fail(s, IM_ERR_EXISTS, NULL, "Registered Model (name=%s) already exists.", name);
  int64_t now = im__trk_now();
  if (r == IM_OK) r = im__trk_exec(s, q_model_insert, NULL, "siis", name, now, now, description ? description : "");
  int64_t mid = sqlite3_last_insert_rowid(s->db);
  for (int i = 0; r == IM_OK && i < n_tags; i++)
    r = im__trk_exec(s, q_model_tag_put, NULL, "iss", mid, tags[i].key, tags[i].value);
  r = im__trk_end(s, r);
  if (r == IM_OK && out) r = model_load(s, mid, out);
  return r;
}

static im_status_t model_get_snap(im_track_store_t *s, const char *name, im_track_model_t **out) {
  if (!s || !out) return im_error(IM_ERR_ARG, "im_track_model_get: NULL argument");
  *out = NULL;
  int64_t mid = 0;
  im_status_t r = model_id(s, name, &mid);
  if (r == IM_OK) r = model_load(s, mid, out);
  return r;
}

/* im__trk_fill_fn for registered model searches (the row holds the model's key). */
static im_status_t model_fill_row(im_track_store_t *s, sqlite3_stmt *st, void *item) {
  return model_fill(s, sqlite3_column_int64(st, 0), item);
}

/* im__trk_fill_fn for model version searches. */
static im_status_t version_fill(im_track_store_t *s, sqlite3_stmt *st, void *item) { return version_row(s, st, item); }

static const im__search_spec_t model_search = {
    .dom = &im__dom_models,
    .def_results = 100,
    .max_results = 1000,
    .select = "SELECT m.id FROM registered_models m WHERE ",
    .order_tail = "m.name ASC",
    .what = "preparing the registered model search",
    .item_size = sizeof(im_track_model_t),
    .fill = model_fill_row,
};

static im_status_t model_search_snap(im_track_store_t *s, const im_track_search_t *q, im_track_model_list_t **out) {
  if (!s || !out) return im_error(IM_ERR_ARG, "im_track_model_search: NULL argument");
  *out = NULL;
  im_track_model_list_t *l = im_calloc(1, sizeof *l);
  if (!l) return IM__TRK_NOMEM(s);
  void *items = NULL;
  im_status_t r = im__trk_search(s, &model_search, q, "1", NULL, 0, &items, &l->n, &l->next_page_token);
  l->items = items;
  if (r != IM_OK) {
    im_track_model_list_free(l);
    return r;
  }
  *out = l;
  return IM_OK;
}

im_status_t im_track_model_rename(im_track_store_t *s, const char *name, const char *new_name, im_track_model_t **out) {
  if (!s) return im_error(IM_ERR_ARG, "no store");
  if (out) *out = NULL;
  im_status_t r = check_model_name(s, new_name);
  if (r) return r;
  if ((r = im__trk_begin(s))) return r;
  int64_t mid = 0, other = 0;
  int found = 0;
  r = model_id(s, name, &mid);
  if (r == IM_OK) r = im__trk_query_i64(s, q_model_id, &found, &other, "s", new_name);
  if (r == IM_OK && found && other != mid)
    r = im__trk_fail(s, IM_ERR_EXISTS, NULL, "Registered Model (name=%s) already exists.", new_name);
  if (r == IM_OK) r = im__trk_exec(s, q_model_rename, NULL, "sii", new_name, im__trk_now(), mid);
  r = im__trk_end(s, r);
  if (r == IM_OK && out) r = model_load(s, mid, out);
  return r;
}

im_status_t im_track_model_update(im_track_store_t *s, const char *name, const char *description,
                                  im_track_model_t **out) {
  if (!s) return im_error(IM_ERR_ARG, "no store");
  if (out) *out = NULL;
  im_status_t r = im__trk_begin(s);
  if (r) return r;
  int64_t mid = 0;
  r = model_id(s, name, &mid);
  if (r == IM_OK && description) r = im__trk_exec(s, q_model_desc, NULL, "sii", description, im__trk_now(), mid);
  r = im__trk_end(s, r);
  if (r == IM_OK && out) r = model_load(s, mid, out);
  return r;
}

im_status_t im_track_model_delete(im_track_store_t *s, const char *name) {
  if (!s) return im_error(IM_ERR_ARG, "no store");
  im_status_t r = im__trk_begin(s);
  if (r) return r;
  int64_t mid = 0;
  r = model_id(s, name, &mid);
  if (r == IM_OK) r = im__trk_exec(s, q_model_delete, NULL, "i", mid);
  return im__trk_end(s, r);
}

im_status_t im_track_model_set_tag(im_track_store_t *s, const char *name, const char *key, const char *value) {
  if (!s) return im_error(IM_ERR_ARG, "no store");
  im_status_t r = check_registry_tag(s, key, value);
  if (r) return r;
  if ((r = im__trk_begin(s))) return r;
  int64_t mid = 0;
  r = model_id(s, name, &mid);
  if (r == IM_OK) r = im__trk_exec(s, q_model_tag_put, NULL, "iss", mid, key, value);
  if (r == IM_OK) r = im__trk_exec(s, q_model_touch, NULL, "ii", im__trk_now(), mid);
  return im__trk_end(s, r);
}

im_status_t im_track_model_delete_tag(im_track_store_t *s, const char *name, const char *key) {
  if (!s) return im_error(IM_ERR_ARG, "no store");
  if (!key) return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "tag key is required");
  im_status_t r = im__trk_begin(s);
  if (r) return r;
  int64_t mid = 0;
  r = model_id(s, name, &mid);
  if (r == IM_OK) r = im__trk_exec(s, q_model_tag_del, NULL, "is", mid, key);
  return im__trk_end(s, r);
}

im_status_t im_track_model_set_alias(im_track_store_t *s, const char *name, const char *alias, int64_t version) {
  if (!s) return im_error(IM_ERR_ARG, "no store");
  im_status_t r = check_alias(s, alias);
  if (r) return r;
  if ((r = im__trk_begin(s))) return r;
  int64_t mid = 0;
  r = model_id(s, name, &mid);
  if (r == IM_OK) r = version_exists(s, name, mid, version);
  if (r == IM_OK) r = im__trk_exec(s, q_alias_put, NULL, "isi", mid, alias, version);
  if (r == IM_OK) r = im__trk_exec(s, q_model_touch, NULL, "ii", im__trk_now(), mid);
  return im__trk_end(s, r);
}

im_status_t im_track_model_delete_alias(im_track_store_t *s, const char *name, const char *alias) {
  if (!s) return im_error(IM_ERR_ARG, "no store");
  if (!alias || !*alias) return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "alias must not be empty");
  im_status_t r = im__trk_begin(s);
  if (r) return r;
  int64_t mid = 0;
  int changes = 0;
  r = model_id(s, name, &mid);
  if (r == IM_OK) r = im__trk_exec(s, q_alias_del, &changes, "is", mid, alias);
  if (r == IM_OK && changes) r = im__trk_exec(s, q_model_touch, NULL, "ii", im__trk_now(), mid);
  return im__trk_end(s, r);
}

/* ---- model versions ----------------------------------------------------------------------- */
im_status_t im_track_model_version_create(im_track_store_t *s, const im_track_model_version_create_t *c,
                                          im_track_model_version_t **out) {
  if (!s || !c) return im_error(IM_ERR_ARG, "im_track_model_version_create: NULL argument");
  if (out) *out = NULL;
  if (!c->source || !*c->source)
    return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "a model version needs a source (the model's artifact URI)");
  if (c->n_tags < 0 || (c->n_tags > 0 && !c->tags)) return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "bad tag list");
  im_status_t r = IM_OK;
  for (int i = 0; i < c->n_tags; i++)
    if ((r = check_registry_tag(s, c->tags[i].key, c->tags[i].value))) return r;
  if ((r = im__trk_begin(s))) return r;
  int64_t mid = 0, version = 0;
  int found = 0;
  r = model_id(s, c->name, &mid);
  if (r == IM_OK) r = im__trk_query_i64(s, q_next_version, &found, &version, "i", mid);
  int64_t now = im__trk_now();
  if (r == IM_OK) r = im__trk_exec(s, q_bump_version, NULL, "ii", now, mid);
  if (r == IM_OK)
    r = im__trk_exec(s, q_mv_insert, NULL, "iiiisssss", mid, version, now, now, c->user_id ? c->user_id : "",
                     c->description ? c->description : "", c->source, c->run_id ? c->run_id : "",
                     c->run_link ? c->run_link : "");
  for (int i = 0; r == IM_OK && i < c->n_tags; i++)
    r = im__trk_exec(s, q_mv_tag_put, NULL, "iiss", mid, version, c->tags[i].key, c->tags[i].value);
  r = im__trk_end(s, r);
  if (r == IM_OK && out) r = version_load(s, mid, version, out);
  return r;
}

static im_status_t model_version_get_snap(im_track_store_t *s, const char *name, int64_t version,
                                          im_track_model_version_t **out) {
  if (!s || !out) return im_error(IM_ERR_ARG, "im_track_model_version_get: NULL argument");
  *out = NULL;
  int64_t mid = 0;
  im_status_t r = model_id(s, name, &mid);
  if (r == IM_OK) r = version_exists(s, name, mid, version);
  if (r == IM_OK) r = version_load(s, mid, version, out);
  return r;
}

static const im__search_spec_t version_search = {
    .dom = &im__dom_versions,
    .def_results = 10000,
    .max_results = 200000,
    .select = "SELECT " MV_COLS MV_FROM " WHERE ",
    .order_tail = "m.name ASC, v.version DESC",
    .what = "preparing the model version search",
    .item_size = sizeof(im_track_model_version_t),
    .fill = version_fill,
};

static im_status_t model_version_search_snap(im_track_store_t *s, const im_track_search_t *q,
                                             im_track_model_version_list_t **out) {
  if (!s || !out) return im_error(IM_ERR_ARG, "im_track_model_version_search: NULL argument");
  *out = NULL;
  im_track_model_version_list_t *l = im_calloc(1, sizeof *l);
  if (!l) return IM__TRK_NOMEM(s);
  void *items = NULL;
  im_status_t r = im__trk_search(s, &version_search, q, "1", NULL, 0, &items, &l->n, &l->next_page_token);
  l->items = items;
  if (r != IM_OK) {
    im_track_model_version_list_free(l);
    return r;
  }
  *out = l;
  return IM_OK;
}

im_status_t im_track_model_version_update(im_track_store_t *s, const char *name, int64_t version,
                                          const char *description, im_track_model_version_t **out) {
  if (!s) return im_error(IM_ERR_ARG, "no store");
  if (out) *out = NULL;
  im_status_t r = im__trk_begin(s);
  if (r) return r;
  int64_t mid = 0;
  r = model_id(s, name, &mid);
  if (r == IM_OK) r = version_exists(s, name, mid, version);
  if (r == IM_OK && description) r = im__trk_exec(s, q_mv_desc, NULL, "siii", description, im__trk_now(), mid, version);
  r = im__trk_end(s, r);
  if (r == IM_OK && out) r = version_load(s, mid, version, out);
  return r;
}

im_status_t im_track_model_version_transition_stage(im_track_store_t *s, const char *name, int64_t version,
                                                    const char *stage, int archive_existing,
                                                    im_track_model_version_t **out) {
  if (!s) return im_error(IM_ERR_ARG, "no store");
  if (out) *out = NULL;
  const char *canon = canonical_stage(stage);
  if (!canon)
    return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID,
                        "Invalid Model Version stage: %s. Value must be one of None, Staging, Production, Archived.",
                        stage ? stage : "(null)");
  if (archive_existing && strcmp(canon, IM_TRACK_STAGE_STAGING) && strcmp(canon, IM_TRACK_STAGE_PRODUCTION))
    return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID,
                        "Model version transition cannot archive existing model versions because '%s' is not an "
                        "Active stage. Valid stages are Staging and Production.",
                        canon);
  im_status_t r = im__trk_begin(s);
  if (r) return r;
  int64_t mid = 0, now = im__trk_now();
  r = model_id(s, name, &mid);
  if (r == IM_OK) r = version_exists(s, name, mid, version);
  if (r == IM_OK && archive_existing) r = im__trk_exec(s, q_mv_archive, NULL, "iisi", now, mid, canon, version);
  if (r == IM_OK) r = im__trk_exec(s, q_mv_stage, NULL, "siii", canon, now, mid, version);
  if (r == IM_OK) r = im__trk_exec(s, q_model_touch, NULL, "ii", now, mid);
  r = im__trk_end(s, r);
  if (r == IM_OK && out) r = version_load(s, mid, version, out);
  return r;
}

im_status_t im_track_model_version_delete(im_track_store_t *s, const char *name, int64_t version) {
  if (!s) return im_error(IM_ERR_ARG, "no store");
  im_status_t r = im__trk_begin(s);
  if (r) return r;
  int64_t mid = 0;
  r = model_id(s, name, &mid);
  if (r == IM_OK) r = version_exists(s, name, mid, version);
  if (r == IM_OK) r = im__trk_exec(s, q_mv_delete, NULL, "ii", mid, version);
  if (r == IM_OK) r = im__trk_exec(s, q_model_touch, NULL, "ii", im__trk_now(), mid);
  return im__trk_end(s, r);
}

im_status_t im_track_model_version_set_tag(im_track_store_t *s, const char *name, int64_t version, const char *key,
                                           const char *value) {
  if (!s) return im_error(IM_ERR_ARG, "no store");
  im_status_t r = check_registry_tag(s, key, value);
  if (r) return r;
  if ((r = im__trk_begin(s))) return r;
  int64_t mid = 0;
  r = model_id(s, name, &mid);
  if (r == IM_OK) r = version_exists(s, name, mid, version);
  if (r == IM_OK) r = im__trk_exec(s, q_mv_tag_put, NULL, "iiss", mid, version, key, value);
  return im__trk_end(s, r);
}

im_status_t im_track_model_version_delete_tag(im_track_store_t *s, const char *name, int64_t version, const char *key) {
  if (!s) return im_error(IM_ERR_ARG, "no store");
  if (!key) return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "tag key is required");
  im_status_t r = im__trk_begin(s);
  if (r) return r;
  int64_t mid = 0;
  r = model_id(s, name, &mid);
  if (r == IM_OK) r = version_exists(s, name, mid, version);
  if (r == IM_OK) r = im__trk_exec(s, q_mv_tag_del, NULL, "iis", mid, version, key);
  return im__trk_end(s, r);
}

static im_status_t model_version_get_by_alias_snap(im_track_store_t *s, const char *name, const char *alias,
                                                   im_track_model_version_t **out) {
  if (!s || !out) return im_error(IM_ERR_ARG, "im_track_model_version_get_by_alias: NULL argument");
  *out = NULL;
  if (!alias || !*alias) return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "alias must not be empty");
  int64_t mid = 0, version = 0;
  int found = 0;
  im_status_t r = model_id(s, name, &mid);
  if (r == IM_OK) r = im__trk_query_i64(s, q_alias_get, &found, &version, "is", mid, alias);
  if (r == IM_OK && !found)
    r = im__trk_fail(s, IM_ERR_NOT_FOUND, NULL, "Registered model alias %s not found for model %s", alias, name);
  if (r == IM_OK) r = version_load(s, mid, version, out);
  return r;
}

static im_status_t model_latest_versions_snap(im_track_store_t *s, const char *name, const char *const *stages,
                                              int n_stages, im_track_model_version_list_t **out) {
  if (!s || !out) return im_error(IM_ERR_ARG, "im_track_model_latest_versions: NULL argument");
  *out = NULL;
  if (n_stages < 0 || n_stages > 16 || (n_stages > 0 && !stages))
    return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "bad stage list");
  const char *want[16];
  for (int i = 0; i < n_stages; i++) {
    want[i] = canonical_stage(stages[i]);
    if (!want[i])
      return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID,
                          "Invalid Model Version stage: %s. Value must be one of None, Staging, Production, Archived.",
                          stages[i] ? stages[i] : "(null)");
  }
  int64_t mid = 0;
  im_status_t r = model_id(s, name, &mid);
  if (r) return r;
  im_track_model_version_list_t *l = im_calloc(1, sizeof *l);
  if (!l) return IM__TRK_NOMEM(s);
  r = latest_versions(s, mid, want, n_stages, &l->items, &l->n);
  if (r != IM_OK) {
    im_track_model_version_list_free(l);
    return r;
  }
  *out = l;
  return IM_OK;
}

/* ---- public reads: each in one snapshot (a read transaction) ------------------------ */

im_status_t im_track_model_get(im_track_store_t *s, const char *name, im_track_model_t **out) {
  IM__TRK_READ_SNAPSHOT(s, model_get_snap(s, name, out));
}

im_status_t im_track_model_search(im_track_store_t *s, const im_track_search_t *q, im_track_model_list_t **out) {
  IM__TRK_READ_SNAPSHOT(s, model_search_snap(s, q, out));
}

im_status_t im_track_model_version_get(im_track_store_t *s, const char *name, int64_t version,
                                       im_track_model_version_t **out) {
  IM__TRK_READ_SNAPSHOT(s, model_version_get_snap(s, name, version, out));
}

im_status_t im_track_model_version_search(im_track_store_t *s, const im_track_search_t *q,
                                          im_track_model_version_list_t **out) {
  IM__TRK_READ_SNAPSHOT(s, model_version_search_snap(s, q, out));
}

im_status_t im_track_model_version_get_by_alias(im_track_store_t *s, const char *name, const char *alias,
                                                im_track_model_version_t **out) {
  IM__TRK_READ_SNAPSHOT(s, model_version_get_by_alias_snap(s, name, alias, out));
}

im_status_t im_track_model_latest_versions(im_track_store_t *s, const char *name, const char *const *stages,
                                           int n_stages, im_track_model_version_list_t **out) {
  IM__TRK_READ_SNAPSHOT(s, model_latest_versions_snap(s, name, stages, n_stages, out));
}
