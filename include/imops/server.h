/* The tracking server: MLflow's REST API 2.0 (tracking, model registry and the
 * mlflow-artifacts proxy) over the workspace store, so that the official
 * `mlflow` client works against `imops server` unmodified
 * (shared/reference/mlflow-rest.md is the contract).
 *
 *   im_server_opts_t o = {.host = "127.0.0.1", .port = 5000};
 *   im_server_t *srv;
 *   if (im_server_new(&o, &srv) || im_server_start(srv)) { ... im_last_error() ... }
 *   ...                                    // serves on background threads
 *   im_server_stop(srv, 10.0);             // drain in-flight requests
 *   im_server_free(srv);
 *
 * Every route is registered under /api/2.0/ and /ajax-api/2.0/ as MLflow does,
 * plus GET /health ("OK") and GET /version. New experiments get the artifact
 * location mlflow-artifacts:/<experiment_id>, so clients upload and download
 * through the server; the bytes live under the artifacts destination
 * (default <workspace>/artifacts), where <exp>/<run>/artifacts/... is the
 * same layout as the local store. Uploads are written beside their target and
 * renamed into place: a reader sees a whole artifact or none.
 *
 * With a token, every write (POST, PUT, PATCH, DELETE) needs
 * "Authorization: Bearer <token>" (401 UNAUTHENTICATED otherwise); reads stay open. */
#ifndef IMOPS_SERVER_H
#define IMOPS_SERVER_H

#include <stddef.h>

#include "imops/status.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
  const char *host;                  /* NULL: "127.0.0.1" */
  int port;                          /* 0: an ephemeral port (im_server_port) */
  const char *workspace;             /* the store's workspace (NULL: $IMOPS_HOME, else ./imops-workspace) */
  const char *artifacts_destination; /* where mlflow-artifacts:/ bytes live: a local directory (NULL:
                                        <workspace>/artifacts) or s3://bucket/prefix (MLFLOW_S3_ENDPOINT_URL,
                                        AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY on the server) */
  const char *default_artifact_root; /* artifact root of new experiments (NULL: mlflow-artifacts:/, i.e.
                                        through this server); s3://... sends clients straight to S3 */
  const char *token;                 /* bearer token required for writes (NULL or "": none) */
  int threads;                       /* HTTP worker threads (0: the http module's default) */
  size_t max_upload_bytes;           /* largest request body, i.e. artifact upload (0: 1 GiB) */
} im_server_opts_t;

typedef struct im_server im_server_t;

/** Opens the store (creating the workspace as needed), prepares the artifacts
 * destination and the routes. Free with im_server_free. */
im_status_t im_server_new(const im_server_opts_t *opts, im_server_t **out);
/** Binds and starts serving on background threads. */
im_status_t im_server_start(im_server_t *srv);
/** The bound port once started (0 before). */
int im_server_port(const im_server_t *srv);
/** The absolute workspace directory and artifacts destination. */
const char *im_server_workspace(const im_server_t *srv);
const char *im_server_artifacts_dir(const im_server_t *srv);
/** Graceful stop: refuses new connections, answers what is in flight (up to
 * drain_timeout_s); IM_ERR_CANCELLED when the timeout cut requests off. */
im_status_t im_server_stop(im_server_t *srv, double drain_timeout_s);
/** Stops (without draining) if running, closes the store handles, frees. NULL is a no-op. */
void im_server_free(im_server_t *srv);

#ifdef __cplusplus
}
#endif
#endif
