/* Internal contracts of the tracking server (src/server): the server handle,
 * the per-request context every handler gets, request-argument accessors that
 * read a JSON body and a query string alike, MLflow-style error answers, the
 * store-handle pool, artifact URI and path mapping, and the route
 * registration each endpoint family (experiments.c, runs.c, registry.c,
 * artifacts.c) uses. */
#ifndef IMOPS_SERVER_IMPL_H
#define IMOPS_SERVER_IMPL_H

#include <jansson.h>
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include "imops/core.h"
#include "imops/http.h"
#include "imops/server.h"
#include "imops/track.h"

/* MLflow error codes used here (mlflow/protos/databricks.proto). */
#define SRV_INVALID "INVALID_PARAMETER_VALUE"
#define SRV_NOT_FOUND "RESOURCE_DOES_NOT_EXIST"
#define SRV_EXISTS "RESOURCE_ALREADY_EXISTS"
#define SRV_INTERNAL "INTERNAL_ERROR"
#define SRV_UNAUTHENTICATED "UNAUTHENTICATED"
#define SRV_NOT_IMPLEMENTED "NOT_IMPLEMENTED"

/* The largest JSON body a non-artifact endpoint parses, and MLflow's log-batch limit. */
#define SRV_MAX_JSON_BODY ((size_t)16 << 20)
#define SRV_MAX_BATCH_BODY ((size_t)1000000)

struct im_server {
  im_http_server_t *http;
  char *home;          /* absolute workspace directory (from the store) */
  char *artifact_dir;  /* absolute artifacts destination, no trailing slash */
  char *artifact_real; /* its realpath, for containment checks */
  char *local_root;    /* <home>/artifacts: the local store's file:// root (may equal artifact_dir) */
  char *token;         /* NULL: no auth */
  char *dest_s3;       /* s3://bucket/prefix when the artifacts destination is S3 (else NULL) */
  char *default_root;  /* artifact root of new experiments ("mlflow-artifacts:/" by default) */
  char *spool_dir;     /* <workspace>/tmp/uploads: upload bodies on their way in */
  /* route bindings (user data of the http routes), each with its pool of store handles */
  struct srv_binding *bindings;
  int nbind, capbind;
};

/* What a handler sees. args is the request's arguments as a JSON object whose
 * scalars are all strings (numbers and booleans converted, nulls dropped):
 * the JSON body for POST/PATCH/DELETE, the query string for GET (repeated keys
 * become arrays; "k[]" and "k[0]" answer to "k"). */
typedef struct {
  im_server_t *srv;
  im_http_req_t *req;
  im_http_resp_t *resp;
  im_track_store_t *st; /* a pooled handle (only for routes that want the store) */
  json_t *args;
} srv_ctx_t;

typedef im_status_t (*srv_fn)(srv_ctx_t *c);

/* Route flags. */
enum {
  SRV_STORE = 1, /* needs a store handle */
  SRV_RAW = 2,   /* no JSON arguments, no Content-Type check (artifact bytes) */
  SRV_SPOOL = 4, /* the body is spooled to a file in spool_dir, not kept in memory (uploads) */
};

/* A route's handler and its pool of store handles. A handle serves one request
 * at a time; the pool grows to the route's concurrency. Pools are per route
 * because a store handle caches a bounded number of prepared statements, and
 * one handle serving every kind of request would outgrow that cache, while
 * one route's calls use a few statements only. */
typedef struct srv_binding {
  im_server_t *srv;
  srv_fn fn;
  int flags;
  pthread_mutex_t mu;
  im_track_store_t **pool;
  int npool, cappool;
} srv_binding_t;

/** Registers fn at "/api/2.0/<path>" and "/ajax-api/2.0/<path>". */
im_status_t im__srv_add(im_server_t *s, const char *method, const char *path, srv_fn fn, int flags);
/** One route of a family's table. */
typedef struct {
  const char *method, *path;
  srv_fn fn;
} srv_route_t;
/** im__srv_add for each of the n routes of r, all with flags. */
im_status_t im__srv_add_routes(im_server_t *s, const srv_route_t *r, size_t n, int flags);
/* The families. */
im_status_t im__srv_routes_experiments(im_server_t *s);
im_status_t im__srv_routes_runs(im_server_t *s);
im_status_t im__srv_routes_registry(im_server_t *s);
im_status_t im__srv_routes_artifacts(im_server_t *s);
im_status_t im__srv_routes_sweeps(im_server_t *s);

/* ---- answers ---------------------------------------------------------------------- */
/** The HTTP status MLflow gives an error code (reference section 6); 500 for unknown. */
int im__srv_http_status(const char *code);
/** 200 with j (stolen; NULL means {}), or 500 when j could not be built (oom). */
im_status_t im__srv_ok(srv_ctx_t *c, json_t *j);
/** An error answer {"error_code", "message"} with code's status. Returns a failing
 * status (the response is set, so the http layer sends it as it is). */
im_status_t im__srv_fail(srv_ctx_t *c, const char *code, const char *fmt, ...) IM_PRINTF(3, 4);
/** The answer for a failed store call: the handle's MLflow code and message. */
im_status_t im__srv_store_fail(srv_ctx_t *c, im_status_t st);
/** An object {key: value} with value stolen. */
json_t *im__srv_obj1(const char *key, json_t *value);
/** 200 with a list page {key: arr, "next_page_token": next_token}: arr is stolen
 * and left out when NULL (out of memory), the token when NULL. */
im_status_t im__srv_ok_list(srv_ctx_t *c, const char *key, json_t *arr, const char *next_token);

/* ---- arguments ----------------------------------------------------------------------- */
/** The string value of key (the first when repeated), or NULL when absent. */
const char *im__srv_str(srv_ctx_t *c, const char *key);
/** As im__srv_str, but the run id from run_id or run_uuid. */
const char *im__srv_run_id(srv_ctx_t *c);
/** A required string: absent answers 400 "Missing value for required parameter 'key'". */
im_status_t im__srv_req(srv_ctx_t *c, const char *key, const char **out);
/** An integer (JSON number or decimal string); absent gives def; malformed answers 400. */
im_status_t im__srv_i64(srv_ctx_t *c, const char *key, int64_t def, int64_t *out);
/** A required integer. */
im_status_t im__srv_req_i64(srv_ctx_t *c, const char *key, int64_t *out);
/** A boolean (true/false/1/0); absent gives def. */
im_status_t im__srv_bool(srv_ctx_t *c, const char *key, int def, int *out);
/** The strings of a repeated field (a single value counts as one). *out is an
 * im_malloc'd array of pointers into args (free with im_free); *n its length. */
im_status_t im__srv_strs(srv_ctx_t *c, const char *key, const char ***out, int *n);
/** A list of {"key","value"} objects (tags, params); *out im_malloc'd, pointing into args. */
im_status_t im__srv_kvs(srv_ctx_t *c, const char *key, im_track_kv_t **out, int *n);
/** The search arguments shared by the searches: filter, order_by[], max_results, page_token.
 * q->order_by is *alloc, im_malloc'd: im_free(*alloc) after the search. */
im_status_t im__srv_search_args(srv_ctx_t *c, im_track_search_t *q, const char ***alloc);
/** A view type (ACTIVE_ONLY, DELETED_ONLY, ALL or 1..3) from key; absent: ACTIVE_ONLY. */
im_status_t im__srv_view(srv_ctx_t *c, const char *key, im_track_view_t *out);
/** A model version number ("1", 1); required. */
im_status_t im__srv_version(srv_ctx_t *c, const char *key, int64_t *out);
/** Parses a double (numbers, "NaN", "Infinity", "-Infinity"); 0 on success. */
int im__srv_parse_double(const char *s, double *out);
/** Parses a whole decimal number; 0 on success. */
int im__srv_parse_i64(const char *s, int64_t *out);

/* ---- artifact locations ------------------------------------------------------------- */
/** The URI clients should see for a stored artifact URI: file:// URIs under the
 * artifacts destination become mlflow-artifacts:/<rest>; others are copied. NULL on oom. */
char *im__srv_public_uri(const im_server_t *s, const char *uri);
/** The local directory an artifact URI is stored in (mlflow-artifacts:/..., or a
 * file:// URI under the artifacts destination or the workspace's artifacts):
 * a new string. Another location is IM_ERR_UNSUPPORTED; an unsafe path IM_ERR_ARG. */
im_status_t im__srv_local_dir(const im_server_t *s, const char *uri, char **out);
/** Checks and normalizes a client's relative artifact path: refuses "..", ".",
 * absolute paths, backslashes, control characters, '#', encoded '.', '/', '\', '%'
 * and NUL (%2e %2f %5c %25 %00), over-long names; empty segments are dropped.
 * *out is a new string ("" for the root). IM_ERR_ARG with a message when unsafe. */
im_status_t im__srv_clean_relpath(const char *p, char **out);
/** 1 when path (which may not exist yet) stays inside the artifacts destination
 * once its existing part is resolved (symbolic links followed). */
int im__srv_contained(const im_server_t *s, const char *path);

#endif
