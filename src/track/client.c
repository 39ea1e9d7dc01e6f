/* Tracking clients: the interface imops train / test log through, and its
 * embedded implementation straight over the workspace store (the REST one is
 * in rest.c). Artifacts go wherever the run's artifact URI points: the
 * workspace's folder, any local directory, or S3. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "track/client_impl.h"

int im_track_uri_is_server(const char *u) {
  return u && (!strncasecmp(u, "http://", 7) || !strncasecmp(u, "https://", 8));
}

/* ---- embedded ------------------------------------------------------------------------------ */

static im_status_t emb_experiment_id(im_track_client_t *c, const char *name, char **id) {
  im_track_store_t *s = c->store;
  im_track_experiment_t *e = NULL;
  im_status_t st = im_track_experiment_get_by_name(s, name, &e);
  if (st == IM_ERR_NOT_FOUND) {
    st = im_track_experiment_create(s, name, NULL, NULL, 0, id);
    if (st == IM_ERR_EXISTS) st = im_track_experiment_get_by_name(s, name, &e); /* created meanwhile */
    if (st == IM_OK && *id) return IM_OK;
  }
  if (st) return st;
  st = im__trk_client_check_active(name, e->lifecycle_stage);
  if (!st && !(*id = im_strdup(e->experiment_id))) st = im_error(IM_ERR_NOMEM, "out of memory");
  im_track_experiment_free(e);
  return st;
}

static im_status_t emb_run_create(im_track_client_t *c, const im_track_run_create_t *rc, im_track_run_t **out) {
  return im_track_run_create(c->store, rc, out);
}
static im_status_t emb_run_get(im_track_client_t *c, const char *run_id, im_track_run_t **out) {
  return im_track_run_get(c->store, run_id, out);
}
static im_status_t emb_run_update(im_track_client_t *c, const char *run_id, const im_track_run_update_t *u) {
  return im_track_run_update(c->store, run_id, u, NULL);
}
static im_status_t emb_set_tag(im_track_client_t *c, const char *run_id, const char *key, const char *value) {
  return im_track_run_set_tag(c->store, run_id, key, value);
}
static im_status_t emb_log_batch(im_track_client_t *c, const char *run_id, const im_track_metric_in_t *m, int nm,
                                 const im_track_kv_t *p, int np, const im_track_kv_t *t, int nt) {
  return im_track_log_batch(c->store, run_id, m, nm, p, np, t, nt);
}
static im_status_t emb_history(im_track_client_t *c, const char *run_id, const char *key, im_track_metric_list_t **out) {
  return im_track_get_metric_history(c->store, run_id, key, 0, NULL, out);
}

/* The artifact store of a location the embedded store hands out (mlflow-artifacts:/
 * of this workspace maps to its folder). */
static im_status_t emb_open_location(im_track_client_t *c, const char *uri, im_track_artifacts_t **out) {
  *out = NULL;
  if (!strncasecmp(uri, "s3://", 5)) return im_track_artifacts_open(uri, out);
  im_track_uri_t *u = NULL;
  im_status_t st = im_track_resolve_uri(c->store, uri, &u);
  if (!st && (!u->is_local || !u->location))
    st = im_error(IM_ERR_UNSUPPORTED, "artifact location %s is neither local nor s3://", uri);
  if (!st) st = im_track_artifacts_open(u->location, out);
  im_track_uri_free(u);
  return st;
}

static im_status_t emb_log_artifacts(im_track_client_t *c, const char *artifact_uri, const char *local_path,
                                     const char *artifact_path) {
  im_track_artifacts_t *a = NULL;
  im_status_t st = emb_open_location(c, artifact_uri, &a);
  if (!st) st = im__trk_client_put(a, local_path, artifact_path);
  im_track_artifacts_free(a);
  return st;
}

static im_status_t emb_fetch_model(im_track_client_t *c, const char *uri, const char *cache_dir, char **local_dir,
                                   char **run_id) {
  im_track_uri_t *u = NULL;
  im_status_t st = im_track_resolve_uri(c->store, uri, &u);
  if (st) return st;
  if (run_id && u->run_id && *u->run_id && !(*run_id = im_strdup(u->run_id))) st = im_error(IM_ERR_NOMEM, "out of memory");
  if (!st) {
    if (u->is_local) *local_dir = im_strdup(u->location);
    else st = im_track_artifacts_fetch(u->location, cache_dir, local_dir);
    if (!st && !*local_dir) st = im_error(IM_ERR_NOMEM, "out of memory");
  }
  im_track_uri_free(u);
  return st;
}

static im_status_t emb_model_location(im_track_client_t *c, const char *uri, char **loc, char **run_id) {
  im_track_uri_t *u = NULL;
  im_status_t st = im_track_resolve_uri(c->store, uri, &u);
  if (st) return st;
  const char *where = u->source && *u->source ? u->source : u->location;
  if (!(*loc = im_strdup(where ? where : ""))) st = im_error(IM_ERR_NOMEM, "out of memory");
  if (!st && u->run_id && *u->run_id && !(*run_id = im_strdup(u->run_id))) st = im_error(IM_ERR_NOMEM, "out of memory");
  im_track_uri_free(u);
  return st;
}

static void emb_close(im_track_client_t *c) { im_track_close(c->store); }

static const im__trk_client_ops_t embedded_ops = {
    emb_experiment_id, emb_run_create,  emb_run_get,        emb_run_update,  emb_set_tag, emb_log_batch,
    emb_history,       emb_log_artifacts, emb_fetch_model, emb_model_location, emb_close,
};

/* ---- shared ---------------------------------------------------------------------------------- */

im_status_t im__trk_client_check_active(const char *name, const char *lifecycle) {
  if (lifecycle && strcmp(lifecycle, "active"))
    return im_error(IM_ERR_STATE, "experiment '%s' is deleted; restore it ('imops experiments restore') or pick "
                                  "another name", name);
  return IM_OK;
}

im_status_t im__trk_client_put(im_track_artifacts_t *a, const char *local_path, const char *artifact_path) {
  if (im_is_dir(local_path)) return im_track_artifacts_put_dir(a, artifact_path ? artifact_path : "", local_path);
  const char *base = strrchr(local_path, '/');
  base = base ? base + 1 : local_path;
  return im_track_artifacts_put_file(a, artifact_path && *artifact_path ? artifact_path : base, local_path);
}

im_status_t im_track_client_open(const char *uri, im_track_client_t **out) {
  *out = NULL;
  if (!uri || !*uri) {
    const char *env = getenv("MLFLOW_TRACKING_URI");
    if (im_track_uri_is_server(env)) uri = env;
  }
  im_track_client_t *c = im_calloc(1, sizeof *c);
  if (!c) return im_error(IM_ERR_NOMEM, "out of memory");
  im_status_t st;
  if (im_track_uri_is_server(uri)) {
    c->ops = &im__trk_rest_ops;
    st = im__trk_rest_open(c, uri);
  } else if (uri && !strncasecmp(uri, "databricks", 10)) {
    st = im_error(IM_ERR_UNSUPPORTED, "tracking URI %s: Databricks is not supported; use http(s)://host:port or a "
                                      "workspace path", uri);
  } else {
    if (uri && !strncasecmp(uri, "file://", 7)) uri += 7;
    if (uri && !strncasecmp(uri, "sqlite:///", 10)) uri += 9;
    c->ops = &embedded_ops;
    st = im_track_open(uri && *uri ? uri : NULL, &c->store);
    if (!st && !(c->where = im_strdup(im_track_home(c->store)))) st = im_error(IM_ERR_NOMEM, "out of memory");
  }
  if (st) {
    im_track_client_close(c);
    return st;
  }
  *out = c;
  return IM_OK;
}

void im_track_client_close(im_track_client_t *c) {
  if (!c) return;
  if (c->ops) c->ops->close(c);
  im_free(c->where);
  im_free(c);
}

int im_track_client_is_remote(const im_track_client_t *c) { return c && c->ops == &im__trk_rest_ops; }
im_track_store_t *im_track_client_store(im_track_client_t *c) { return c ? c->store : NULL; }
const char *im_track_client_where(const im_track_client_t *c) { return c && c->where ? c->where : ""; }

im_status_t im_track_client_experiment_id(im_track_client_t *c, const char *name, char **id) {
  *id = NULL;
  return c->ops->experiment_id(c, name && *name ? name : "Default", id);
}
im_status_t im_track_client_run_create(im_track_client_t *c, const im_track_run_create_t *rc, im_track_run_t **out) {
  *out = NULL;
  return c->ops->run_create(c, rc, out);
}
im_status_t im_track_client_run_get(im_track_client_t *c, const char *run_id, im_track_run_t **out) {
  *out = NULL;
  return c->ops->run_get(c, run_id, out);
}
im_status_t im_track_client_run_update(im_track_client_t *c, const char *run_id, const im_track_run_update_t *u) {
  return c->ops->run_update(c, run_id, u);
}
im_status_t im_track_client_set_tag(im_track_client_t *c, const char *run_id, const char *key, const char *value) {
  return c->ops->set_tag(c, run_id, key, value);
}

static int imin(int a, int b) { return a < b ? a : b; }

im_status_t im_track_client_log_batch(im_track_client_t *c, const char *run_id, const im_track_metric_in_t *metrics,
                                      int n_metrics, const im_track_kv_t *params, int n_params,
                                      const im_track_kv_t *tags, int n_tags) {
  int im = 0, ip = 0, it = 0;
  im_status_t st = IM_OK;
  while (!st && (im < n_metrics || ip < n_params || it < n_tags || (!n_metrics && !n_params && !n_tags && !im))) {
    int np = imin(n_params - ip, IM_TRACK_MAX_BATCH_PARAMS), nt = imin(n_tags - it, IM_TRACK_MAX_BATCH_TAGS);
    int nm = imin(n_metrics - im, IM_TRACK_MAX_BATCH_TOTAL - np - nt);
    if (nm > IM_TRACK_MAX_BATCH_METRICS) nm = IM_TRACK_MAX_BATCH_METRICS;
    if (!nm && !np && !nt) break;
    st = c->ops->log_batch(c, run_id, metrics + im, nm, params + ip, np, tags + it, nt);
    im += nm;
    ip += np;
    it += nt;
  }
  return st;
}

im_status_t im_track_client_metric_history(im_track_client_t *c, const char *run_id, const char *key,
                                           im_track_metric_list_t **out) {
  *out = NULL;
  return c->ops->history(c, run_id, key, out);
}

im_status_t im_track_client_log_artifacts(im_track_client_t *c, const char *run_id, const char *local_path,
                                          const char *artifact_path) {
  im_track_run_t *r = NULL;
  im_status_t st = c->ops->run_get(c, run_id, &r);
  if (st) return st;
  char *clean = NULL;
  if (artifact_path && *artifact_path) st = im__trk_clean_rel(artifact_path, &clean);
  if (!st) st = c->ops->log_artifacts(c, r->artifact_uri, local_path, clean);
  if (st) st = im_error(st, "cannot log %s as an artifact of run %s (%s): %s", local_path, run_id, r->artifact_uri,
                        im_last_error());
  im_free(clean);
  im_track_run_free(r);
  return st;
}

im_status_t im_track_client_fetch_model(im_track_client_t *c, const char *uri, const char *cache_dir,
                                        char **local_dir, char **run_id) {
  *local_dir = NULL;
  if (run_id) *run_id = NULL;
  im_status_t st = c->ops->fetch_model(c, uri, cache_dir, local_dir, run_id);
  if (st) {
    im_free(*local_dir);
    *local_dir = NULL;
    if (run_id) {
      im_free(*run_id);
      *run_id = NULL;
    }
  }
  return st;
}

/* rel of loc below the artifact root (loc itself or root/...), or NULL. */
static const char *below_root(const char *loc, const char *root) {
  size_t n = strlen(root);
  while (n && root[n - 1] == '/') n--;
  if (!n || strncmp(loc, root, n)) return NULL;
  if (!loc[n]) return loc + n;
  return loc[n] == '/' ? loc + n + 1 : NULL;
}

im_status_t im_track_client_model_run_path(im_track_client_t *c, const char *uri, char **run_id, char **path) {
  *run_id = *path = NULL;
  im_track_uri_t *u = NULL;
  im_status_t st = im_track_uri_parse(uri, &u);
  char *loc = NULL, *rid = NULL;
  if (!st && u->kind == IM_TRACK_URI_MODELS) {
    st = c->ops->model_location(c, uri, &loc, &rid);
    if (!st && !strncasecmp(loc, "runs:", 5)) { /* the registered source names the run and path */
      im_track_uri_free(u);
      u = NULL;
      st = im_track_uri_parse(loc, &u);
    } else if (!st && !rid) {
      st = im_error(IM_ERR_NOT_FOUND, "%s: the registered version names no run", uri);
    } else if (!st) {
      im_track_run_t *r = NULL;
      const char *rel = NULL;
      if (!(st = c->ops->run_get(c, rid, &r)) && !(rel = below_root(loc, r->artifact_uri)))
        st = im_error(IM_ERR_NOT_FOUND, "%s: its files (%s) are not inside the artifacts of run %s (%s)", uri, loc, rid,
                      r->artifact_uri);
      if (!st && (!(*path = im_strdup(rel)) || !(*run_id = im_strdup(rid)))) st = im_error(IM_ERR_NOMEM, "out of memory");
      im_track_run_free(r);
    }
  } else if (!st && u->kind != IM_TRACK_URI_RUNS) {
    st = im_error(IM_ERR_ARG, "%s is not a runs:/ or models:/ URI", uri);
  }
  if (!st && !*path) { /* a runs:/ URI */
    if (!(*run_id = im_strdup(u->run_id)) || !(*path = im_strdup(u->path))) st = im_error(IM_ERR_NOMEM, "out of memory");
  }
  if (st) {
    im_free(*run_id);
    im_free(*path);
    *run_id = *path = NULL;
  }
  im_track_uri_free(u);
  im_free(loc);
  im_free(rid);
  return st;
}
