/* Internal contract of the tracking clients (client.c, rest.c): the
 * operations each implementation provides and the helpers they share. */
#ifndef IMOPS_TRACK_CLIENT_IMPL_H
#define IMOPS_TRACK_CLIENT_IMPL_H

#include "imops/http.h"
#include "track/track_impl.h"

typedef struct {
  im_status_t (*experiment_id)(im_track_client_t *c, const char *name, char **id);
  im_status_t (*run_create)(im_track_client_t *c, const im_track_run_create_t *rc, im_track_run_t **out);
  im_status_t (*run_get)(im_track_client_t *c, const char *run_id, im_track_run_t **out);
  im_status_t (*run_update)(im_track_client_t *c, const char *run_id, const im_track_run_update_t *u);
  im_status_t (*set_tag)(im_track_client_t *c, const char *run_id, const char *key, const char *value);
  /* within MLflow's batch limits (the caller splits) */
  im_status_t (*log_batch)(im_track_client_t *c, const char *run_id, const im_track_metric_in_t *m, int nm,
                           const im_track_kv_t *p, int np, const im_track_kv_t *t, int nt);
  im_status_t (*history)(im_track_client_t *c, const char *run_id, const char *key, im_track_metric_list_t **out);
  /* artifact_path: checked relative path or NULL */
  im_status_t (*log_artifacts)(im_track_client_t *c, const char *artifact_uri, const char *local_path,
                               const char *artifact_path);
  im_status_t (*fetch_model)(im_track_client_t *c, const char *uri, const char *cache_dir, char **local_dir,
                             char **run_id);
  /* where a models:/ URI's files are (a runs:/ URI or an artifact URI) and its run (NULL when none) */
  im_status_t (*model_location)(im_track_client_t *c, const char *uri, char **loc, char **run_id);
  void (*close)(im_track_client_t *c);
} im__trk_client_ops_t;

struct im_track_client {
  const im__trk_client_ops_t *ops;
  char *where;
  im_track_store_t *store; /* embedded */
  char *base;              /* REST: "http://host:port[/path]" without trailing slash */
  im_http_client_t *http;  /* REST */
};

extern const im__trk_client_ops_t im__trk_rest_ops;
im_status_t im__trk_rest_open(im_track_client_t *c, const char *uri);

/** IM_ERR_STATE when an experiment's lifecycle stage is not "active". */
im_status_t im__trk_client_check_active(const char *name, const char *lifecycle);
/** Stores a local file or directory at artifact_path (NULL: the directory's
 * files at the root, or the file under its own name). */
im_status_t im__trk_client_put(im_track_artifacts_t *a, const char *local_path, const char *artifact_path);
/** The fetch cache: cache_dir, else $IMOPS_HOME/cache/artifacts, else
 * ./imops-workspace/cache/artifacts (a new string; NULL when out of memory). */
char *im__trk_cache_dir(const char *cache_dir);
/** Checks and normalizes a relative artifact path (no "." / "..", not absolute). */
im_status_t im__trk_clean_rel(const char *rel, char **out);

#endif
