/* Tracking and model registry: the store on SQLite in the workspace
 * (IMOPS_HOME/imops.db), with MLflow's entities and semantics, so that the
 * MLflow REST server (src/server) is a thin JSON layer over these calls.
 *
 *   im_track_store_t *s;
 *   if (im_track_open(NULL, &s) != IM_OK) { ... im_last_error() ... }
 *   im_track_run_t *run;
 *   im_track_run_create_t rc = {.experiment_id = "0", .run_name = "baseline"};
 *   im_track_run_create(s, &rc, &run);
 *   im_track_log_param(s, run->run_id, "lr", "0.01");
 *   im_track_log_metric(s, run->run_id, "val_accuracy", 0.93, im_time_wall_ms(), 3);
 *   im_track_run_free(run);
 *   im_track_close(s);
 *
 * Conventions
 * - IDs are strings as in MLflow: experiment "0" is "Default" (created on the
 *   first open), run ids are 32 lowercase hex digits, model versions "1", "2", ...
 * - Times are Unix epoch milliseconds. IM_TRACK_NO_TIME marks "unset".
 * - Results come back through out-parameters, allocated with im_malloc; each
 *   type has a _free, and freeing NULL does nothing.
 * - Every failing call sets im_last_error() (thread-local) and the handle's
 *   im_track_errmsg(); im_track_error_code() gives the MLflow error code name
 *   (RESOURCE_DOES_NOT_EXIST, RESOURCE_ALREADY_EXISTS, INVALID_PARAMETER_VALUE,
 *   INVALID_STATE, INTERNAL_ERROR) for the REST layer. Both keep the last failure.
 * - Several processes (and several handles) may write at once: WAL mode, a
 *   busy handler and BEGIN IMMEDIATE retries, every multi-row change in one
 *   transaction. One handle is used by one thread at a time; open one per thread.
 */
#ifndef IMOPS_TRACK_H
#define IMOPS_TRACK_H

#include <stddef.h>
#include <stdint.h>

#include "imops/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/** The schema version this build creates and migrates to. */
#define IM_TRACK_SCHEMA_VERSION 4
/** "No time given" / "not set" (e.g. end_time of a running run). */
#define IM_TRACK_NO_TIME INT64_MIN

/* MLflow's validation limits (mlflow/utils/validation.py). */
#define IM_TRACK_MAX_BATCH_METRICS 1000
#define IM_TRACK_MAX_BATCH_PARAMS 100
#define IM_TRACK_MAX_BATCH_TAGS 100
#define IM_TRACK_MAX_BATCH_TOTAL 1000
#define IM_TRACK_MAX_KEY_LEN 250 /* metric, param and tag keys (characters) */
#define IM_TRACK_MAX_PARAM_VALUE_LEN 6000
#define IM_TRACK_MAX_TAG_VALUE_LEN 8000 /* run and experiment tags */
#define IM_TRACK_MAX_REGISTRY_TAG_VALUE_LEN 5000
#define IM_TRACK_MAX_EXPERIMENT_NAME_LEN 500
#define IM_TRACK_MAX_SEARCH_RESULTS 50000 /* runs and experiments */

typedef struct im_track_store im_track_store_t;

/* ---- the store ------------------------------------------------------------ */
/** Opens (creating and migrating as needed) the store. home_or_db_path: a
 * workspace directory (the database is <dir>/imops.db; the directory is
 * created), or a path ending in ".db" / an existing file (its directory is the
 * workspace). NULL: $IMOPS_HOME, else ./imops-workspace. The default artifact
 * root is file://<absolute workspace>/artifacts ($IMOPS_ARTIFACT_ROOT overrides). */
im_status_t im_track_open(const char *home_or_db_path, im_track_store_t **out);
void im_track_close(im_track_store_t *s);
/** The detailed text of this handle's last failure ("" when none). */
const char *im_track_errmsg(const im_track_store_t *s);
/** The MLflow error code name of this handle's last failure (NULL when none). */
const char *im_track_error_code(const im_track_store_t *s);
/** The MLflow error code name a status maps to when no specific one was set. */
const char *im_track_status_to_error_code(im_status_t st);
/** The absolute workspace directory and database path. */
const char *im_track_home(const im_track_store_t *s);
const char *im_track_db_path(const im_track_store_t *s);
/** Artifact root for experiments created from now on (an URI such as
 * file:///abs/dir, s3://bucket/prefix or mlflow-artifacts:/); copied. */
const char *im_track_artifact_root(const im_track_store_t *s);
im_status_t im_track_set_artifact_root(im_track_store_t *s, const char *root);
/** The schema version of the open database (IM_TRACK_SCHEMA_VERSION). */
int im_track_schema_version(const im_track_store_t *s);

/* ---- common types ----------------------------------------------------------- */
/** A key/value pair owned by a result (tags, params). */
typedef struct {
  char *key;
  char *value;
} im_track_tag_t;

/** A key/value pair passed in by the caller. */
typedef struct {
  const char *key;
  const char *value;
} im_track_kv_t;

/** Which entities a search or list sees (MLflow's ViewType; 0 means ACTIVE_ONLY). */
typedef enum { IM_TRACK_ACTIVE_ONLY = 1, IM_TRACK_DELETED_ONLY = 2, IM_TRACK_ALL = 3 } im_track_view_t;

/** Paging and ordering shared by the searches. */
typedef struct {
  const char *filter;          /* MLflow search syntax; NULL or "" = everything */
  const char *const *order_by; /* e.g. "metrics.val_accuracy DESC", "name ASC" */
  int n_order_by;
  int64_t max_results;    /* 0: the search's default */
  const char *page_token; /* from a previous page's next_page_token, or NULL */
} im_track_search_t;

/* ---- experiments ------------------------------------------------------------ */
typedef struct {
  char *experiment_id;
  char *name;
  char *artifact_location;
  char *lifecycle_stage; /* "active" or "deleted" */
  int64_t creation_time, last_update_time;
  int n_tags;
  im_track_tag_t *tags;
} im_track_experiment_t;

typedef struct {
  int64_t n;
  im_track_experiment_t *items;
  char *next_page_token; /* NULL on the last page */
} im_track_experiment_list_t;

void im_track_experiment_free(im_track_experiment_t *e);
void im_track_experiment_list_free(im_track_experiment_list_t *l);

/** Creates an experiment; artifact_location NULL = <artifact root>/<id>.
 * A taken name (active or deleted) is IM_ERR_EXISTS (RESOURCE_ALREADY_EXISTS).
 * id_out (may be NULL) receives the new id, e.g. "1" (free with im_free). */
im_status_t im_track_experiment_create(im_track_store_t *s, const char *name, const char *artifact_location,
                                       const im_track_kv_t *tags, int n_tags, char **id_out);
im_status_t im_track_experiment_get(im_track_store_t *s, const char *experiment_id, im_track_experiment_t **out);
im_status_t im_track_experiment_get_by_name(im_track_store_t *s, const char *name, im_track_experiment_t **out);
/** Filter keys: name, creation_time, last_update_time, tags.<k>; order by
 * name, experiment_id, creation_time, last_update_time (default creation_time
 * DESC, experiment_id ASC); max_results default 1000. */
im_status_t im_track_experiment_search(im_track_store_t *s, im_track_view_t view, const im_track_search_t *q,
                                       im_track_experiment_list_t **out);
/** Soft delete: the experiment and its active runs become "deleted"; restore
 * brings back the runs deleted with it. Experiment "0" cannot be deleted. */
im_status_t im_track_experiment_delete(im_track_store_t *s, const char *experiment_id);
im_status_t im_track_experiment_restore(im_track_store_t *s, const char *experiment_id);
im_status_t im_track_experiment_rename(im_track_store_t *s, const char *experiment_id, const char *new_name);
im_status_t im_track_experiment_set_tag(im_track_store_t *s, const char *experiment_id, const char *key,
                                        const char *value);

/* ---- runs ------------------------------------------------------------------------ */
typedef enum {
  IM_TRACK_RUN_RUNNING = 1,
  IM_TRACK_RUN_SCHEDULED = 2,
  IM_TRACK_RUN_FINISHED = 3,
  IM_TRACK_RUN_FAILED = 4,
  IM_TRACK_RUN_KILLED = 5
} im_track_run_status_t;
/** "RUNNING", ...; NULL for an unknown value. */
const char *im_track_run_status_name(int status);
/** Parses a status name (any case) or its number; 0 when unknown. */
int im_track_run_status_parse(const char *s);

typedef struct {
  char *key;
  double value;      /* NaN and +-Inf round-trip */
  int64_t timestamp; /* ms */
  int64_t step;
} im_track_metric_t;

/** A metric passed in by the caller (log_batch). */
typedef struct {
  const char *key;
  double value;
  int64_t timestamp;
  int64_t step;
} im_track_metric_in_t;

typedef struct {
  /* info */
  char *run_id;
  char *run_name;
  char *experiment_id;
  char *user_id;
  im_track_run_status_t status;
  int64_t start_time;
  int64_t end_time; /* IM_TRACK_NO_TIME while unset */
  char *artifact_uri;
  char *lifecycle_stage; /* "active" or "deleted" */
  /* data */
  int n_metrics; /* the latest value of each metric */
  im_track_metric_t *metrics;
  int n_params;
  im_track_tag_t *params;
  int n_tags;
  im_track_tag_t *tags; /* includes mlflow.runName, mlflow.parentRunId, ... */
} im_track_run_t;

typedef struct {
  int64_t n;
  im_track_run_t *items;
  char *next_page_token;
} im_track_run_list_t;

void im_track_run_free(im_track_run_t *r);
void im_track_run_list_free(im_track_run_list_t *l);

typedef struct {
  const char *experiment_id; /* NULL: "0" */
  const char *run_name;      /* NULL: tag mlflow.runName, else a generated "adjective-noun-NNN" */
  const char *user_id;       /* NULL: "" */
  int64_t start_time;        /* 0: now */
  const im_track_kv_t *tags;
  int n_tags;
  const char *parent_run_id; /* NULL, or sets tag mlflow.parentRunId */
} im_track_run_create_t;

/** Creates a RUNNING run. Unknown experiment: IM_ERR_NOT_FOUND; a deleted one,
 * or run_name differing from the mlflow.runName tag: IM_ERR_ARG. */
im_status_t im_track_run_create(im_track_store_t *s, const im_track_run_create_t *c, im_track_run_t **out);
im_status_t im_track_run_get(im_track_store_t *s, const char *run_id, im_track_run_t **out);

typedef struct {
  int status;           /* 0: unchanged, else im_track_run_status_t */
  int64_t end_time;     /* IM_TRACK_NO_TIME: unchanged */
  const char *run_name; /* NULL: unchanged (else also sets tag mlflow.runName) */
} im_track_run_update_t;
/** Updates an active run; out (may be NULL) receives the run as it is after. */
im_status_t im_track_run_update(im_track_store_t *s, const char *run_id, const im_track_run_update_t *u,
                                im_track_run_t **out);
im_status_t im_track_run_delete(im_track_store_t *s, const char *run_id);
im_status_t im_track_run_restore(im_track_store_t *s, const char *run_id);
im_status_t im_track_run_set_tag(im_track_store_t *s, const char *run_id, const char *key, const char *value);
/** A missing tag is IM_ERR_NOT_FOUND. */
im_status_t im_track_run_delete_tag(im_track_store_t *s, const char *run_id, const char *key);

/** Searches runs of the given experiments (n_experiment_ids 0: all). Filter
 * (MLflow syntax, clauses joined by AND):
 *   metrics.<k> (= != > >= < <=, a number), params.<k> / tags.<k> (= != LIKE
 *   ILIKE IN NOT IN, quoted strings), attributes.<a>: run_id, run_name, status,
 *   user_id, artifact_uri, lifecycle_stage (strings), start_time, end_time
 *   (numbers); a bare name is an attribute; keys may be `backticked` or "quoted".
 * order_by: "metrics.k DESC", "params.k", "tags.k", "attributes.start_time ASC"...
 *   (missing values last; ties: start_time DESC, run_id). max_results default
 * 1000, at most 50000. A bad filter is IM_ERR_ARG with a message naming the problem. */
im_status_t im_track_run_search(im_track_store_t *s, const char *const *experiment_ids, int n_experiment_ids,
                                im_track_view_t view, const im_track_search_t *q, im_track_run_list_t **out);

/* ---- params, metrics, batches -------------------------------------------------- */
/** Params are write-once: the same value again is fine, a different one is
 * IM_ERR_ARG (INVALID_PARAMETER_VALUE). */
im_status_t im_track_log_param(im_track_store_t *s, const char *run_id, const char *key, const char *value);
/** Appends to the metric's history (an exact duplicate is ignored, so retries
 * are safe) and updates the latest value: the one with the largest step, then
 * timestamp, then value (MLflow's rule; with equal steps: latest timestamp,
 * ties to the larger value). */
im_status_t im_track_log_metric(im_track_store_t *s, const char *run_id, const char *key, double value,
                                int64_t timestamp, int64_t step);
/** Params, metrics and tags in one transaction: all or nothing. Limits: 1000
 * metrics, 100 params, 100 tags, 1000 in all (IM_ERR_LIMIT, INVALID_PARAMETER_VALUE). */
im_status_t im_track_log_batch(im_track_store_t *s, const char *run_id, const im_track_metric_in_t *metrics,
                               int n_metrics, const im_track_kv_t *params, int n_params, const im_track_kv_t *tags,
                               int n_tags);

typedef struct {
  int64_t n;
  im_track_metric_t *items;
  char *next_page_token;
} im_track_metric_list_t;
void im_track_metric_list_free(im_track_metric_list_t *l);
/** The full history of one metric, ordered by timestamp, step, then logging
 * order. max_results 0: all. */
im_status_t im_track_get_metric_history(im_track_store_t *s, const char *run_id, const char *key, int64_t max_results,
                                        const char *page_token, im_track_metric_list_t **out);

/* ---- model registry ---------------------------------------------------------------- */
/** Stages of the (deprecated but used) stage workflow. */
#define IM_TRACK_STAGE_NONE "None"
#define IM_TRACK_STAGE_STAGING "Staging"
#define IM_TRACK_STAGE_PRODUCTION "Production"
#define IM_TRACK_STAGE_ARCHIVED "Archived"

typedef struct {
  char *name;
  int64_t version;
  int64_t creation_time, last_updated_time;
  char *user_id;
  char *current_stage; /* "None", "Staging", "Production", "Archived" */
  char *description;   /* "" when unset */
  char *source;
  char *run_id;         /* "" when unset */
  char *run_link;       /* "" when unset */
  char *status;         /* "READY" */
  char *status_message; /* "" */
  int n_tags;
  im_track_tag_t *tags;
  int n_aliases;
  char **aliases;
} im_track_model_version_t;

typedef struct {
  char *alias;
  int64_t version;
} im_track_alias_t;

typedef struct {
  char *name;
  int64_t creation_time, last_updated_time;
  char *user_id;
  char *description;
  int n_tags;
  im_track_tag_t *tags;
  int n_aliases;
  im_track_alias_t *aliases;
  int n_latest; /* the latest version in each stage */
  im_track_model_version_t *latest_versions;
} im_track_model_t;

typedef struct {
  int64_t n;
  im_track_model_t *items;
  char *next_page_token;
} im_track_model_list_t;

typedef struct {
  int64_t n;
  im_track_model_version_t *items;
  char *next_page_token;
} im_track_model_version_list_t;

void im_track_model_free(im_track_model_t *m);
void im_track_model_list_free(im_track_model_list_t *l);
void im_track_model_version_free(im_track_model_version_t *v);
void im_track_model_version_list_free(im_track_model_version_list_t *l);

/** out may be NULL. A taken name: IM_ERR_EXISTS (RESOURCE_ALREADY_EXISTS). */
im_status_t im_track_model_create(im_track_store_t *s, const char *name, const char *description,
                                  const im_track_kv_t *tags, int n_tags, im_track_model_t **out);
im_status_t im_track_model_get(im_track_store_t *s, const char *name, im_track_model_t **out);
/** Filter: name (= != LIKE ILIKE), tags.<k>; order by name, creation_timestamp,
 * last_updated_timestamp (alias timestamp); default name ASC; max_results
 * default 100, at most 1000. */
im_status_t im_track_model_search(im_track_store_t *s, const im_track_search_t *q, im_track_model_list_t **out);
im_status_t im_track_model_rename(im_track_store_t *s, const char *name, const char *new_name, im_track_model_t **out);
/** Sets the description (NULL: unchanged). */
im_status_t im_track_model_update(im_track_store_t *s, const char *name, const char *description,
                                  im_track_model_t **out);
/** Deletes the model with its versions, tags and aliases. */
im_status_t im_track_model_delete(im_track_store_t *s, const char *name);
im_status_t im_track_model_set_tag(im_track_store_t *s, const char *name, const char *key, const char *value);
im_status_t im_track_model_delete_tag(im_track_store_t *s, const char *name, const char *key);
/** Points alias at a version (moving it if it pointed elsewhere). Aliases:
 * [A-Za-z0-9_-]+, at most 255, not "latest", not v<digits>. */
im_status_t im_track_model_set_alias(im_track_store_t *s, const char *name, const char *alias, int64_t version);
im_status_t im_track_model_delete_alias(im_track_store_t *s, const char *name, const char *alias);

typedef struct {
  const char *name;        /* the registered model (must exist) */
  const char *source;      /* required: the artifact URI (runs:/..., s3://..., file://...) */
  const char *run_id;      /* optional */
  const char *run_link;    /* optional */
  const char *description; /* optional */
  const char *user_id;     /* optional */
  const im_track_kv_t *tags;
  int n_tags;
} im_track_model_version_create_t;

/** Registers a new version: numbers increase per model and are never reused. */
im_status_t im_track_model_version_create(im_track_store_t *s, const im_track_model_version_create_t *c,
                                          im_track_model_version_t **out);
im_status_t im_track_model_version_get(im_track_store_t *s, const char *name, int64_t version,
                                       im_track_model_version_t **out);
/** Filter: name, run_id (= != IN NOT IN LIKE ILIKE), source_path, version_number,
 * tags.<k>; order by name, version_number, creation_timestamp,
 * last_updated_timestamp; default name ASC, version_number DESC. */
im_status_t im_track_model_version_search(im_track_store_t *s, const im_track_search_t *q,
                                          im_track_model_version_list_t **out);
/** Sets the description (NULL: unchanged). */
im_status_t im_track_model_version_update(im_track_store_t *s, const char *name, int64_t version,
                                          const char *description, im_track_model_version_t **out);
/** stage: None/Staging/Production/Archived (any case). archive_existing: the
 * other versions in that stage (Staging or Production only) become Archived. */
im_status_t im_track_model_version_transition_stage(im_track_store_t *s, const char *name, int64_t version,
                                                    const char *stage, int archive_existing,
                                                    im_track_model_version_t **out);
/** Deletes the version and the aliases that point at it. */
im_status_t im_track_model_version_delete(im_track_store_t *s, const char *name, int64_t version);
im_status_t im_track_model_version_set_tag(im_track_store_t *s, const char *name, int64_t version, const char *key,
                                           const char *value);
im_status_t im_track_model_version_delete_tag(im_track_store_t *s, const char *name, int64_t version, const char *key);
im_status_t im_track_model_version_get_by_alias(im_track_store_t *s, const char *name, const char *alias,
                                                im_track_model_version_t **out);
/** The latest version in each of the given stages (n_stages 0: every stage),
 * ordered by stage. */
im_status_t im_track_model_latest_versions(im_track_store_t *s, const char *name, const char *const *stages,
                                           int n_stages, im_track_model_version_list_t **out);

/* ---- pipeline runs (src/track/pipelines.c; written by src/pipeline) ------------------------ */
/* Statuses: runs PENDING RUNNING SUCCEEDED FAILED CANCELED; steps also
 * SKIPPED and CACHED. inputs / outputs are JSON object texts. */
typedef struct {
  char *step_name;
  char *status;
  char *run_uuid; /* the tracked run the step made, when known (NULL) */
  int64_t attempt;
  char *cache_key; /* NULL when none */
  char *inputs;    /* {"argv": [...], "params": {...}, "inputs": {path: hash}, "log": path, ...} */
  char *outputs;   /* {"name": "value"} */
  char *message;
  int64_t start_time, end_time; /* IM_TRACK_NO_TIME when unset */
} im_track_pipeline_step_t;

typedef struct {
  char *pipeline_run_id;
  char *pipeline_name;
  char *spec;   /* the pipeline file as JSON */
  char *params; /* {"name": value} */
  char *status;
  char *experiment_id; /* NULL when none */
  char *run_uuid;      /* the tracked run holding params and logs (NULL) */
  int64_t creation_time, start_time, end_time;
  int n_steps;
  im_track_pipeline_step_t *steps; /* in the order they were first recorded */
} im_track_pipeline_run_t;

typedef struct {
  int64_t n;
  im_track_pipeline_run_t *items;
} im_track_pipeline_run_list_t;

void im_track_pipeline_run_free(im_track_pipeline_run_t *r);
void im_track_pipeline_run_list_free(im_track_pipeline_run_list_t *l);
/** Creates a PENDING pipeline run; *id_out: 32 hex digits (im_free). */
im_status_t im_track_pipeline_run_create(im_track_store_t *s, const char *name, const char *spec_json,
                                         const char *params_json, const char *experiment_id, const char *run_uuid,
                                         char **id_out);
/** Sets the status (NULL: unchanged) and times (IM_TRACK_NO_TIME: unchanged). */
im_status_t im_track_pipeline_run_update(im_track_store_t *s, const char *id, const char *status, int64_t start_time,
                                         int64_t end_time);
/** Records a step (inserted, or replaced by name within the run). */
im_status_t im_track_pipeline_step_put(im_track_store_t *s, const char *id, const im_track_pipeline_step_t *step);
/** The outputs of the latest SUCCEEDED step with this cache key outside run
 * not_run_id (NULL: any); IM_ERR_NOT_FOUND when none. from_run_id / from_step
 * (may be NULL) say where it came from. All im_free. */
im_status_t im_track_pipeline_cache_find(im_track_store_t *s, const char *cache_key, const char *not_run_id,
                                         char **outputs_json, char **from_run_id, char **from_step);
/** A run with its steps, by id or a unique prefix of it. */
im_status_t im_track_pipeline_run_get(im_track_store_t *s, const char *id, im_track_pipeline_run_t **out);
/** The newest runs first (of one pipeline, or all when pipeline_name is NULL), with steps; max 0: 100. */
im_status_t im_track_pipeline_run_list(im_track_store_t *s, const char *pipeline_name, int64_t max,
                                       im_track_pipeline_run_list_t **out);

/* ---- model URIs ------------------------------------------------------------------------ */
typedef enum {
  IM_TRACK_URI_RUNS = 1, /* runs:/<run_id>/<path> */
  IM_TRACK_URI_MODELS,   /* models:/<name>/<version|stage|latest>, models:/<name>@<alias> */
  IM_TRACK_URI_S3,       /* s3://bucket/key */
  IM_TRACK_URI_FILE,     /* file:///path */
  IM_TRACK_URI_PATH,     /* a plain path */
  IM_TRACK_URI_OTHER     /* another scheme (mlflow-artifacts:/, http(s)://) */
} im_track_uri_kind_t;

typedef struct {
  im_track_uri_kind_t kind;
  /* what the URI says (parse) */
  char *run_id;    /* runs:/ (and filled from the registry for models:/) */
  char *path;      /* runs:/ sub-path ("model"), "" for none */
  char *name;      /* models:/ */
  int64_t version; /* models:/ explicit or resolved version; 0 when not known */
  char *alias;     /* models:/name@alias */
  char *stage;     /* models:/name/<stage>, canonical case, or "latest" */
  /* where it is (resolve) */
  char *location; /* a local path, or an URI (s3://..., mlflow-artifacts:/...) */
  int is_local;   /* 1 when location is a local path */
  char *source;   /* models:/: the version's registered source */
} im_track_uri_t;

void im_track_uri_free(im_track_uri_t *u);
/** Parses a model URI without looking anything up (location is set for
 * s3://, file:// and plain paths). Malformed: IM_ERR_ARG. */
im_status_t im_track_uri_parse(const char *uri, im_track_uri_t **out);
/** Parses and resolves: runs:/ through the run's artifact_uri, models:/
 * through the registry (a version's source may itself be a runs:/ URI).
 * Unknown run, model, version, alias or empty stage: IM_ERR_NOT_FOUND. */
im_status_t im_track_resolve_uri(im_track_store_t *s, const char *uri, im_track_uri_t **out);

/* ---- artifact stores --------------------------------------------------------------------- */
/* A tree of artifacts under a root URI: a local directory (file:///abs, a
 * plain path) or S3 (s3://bucket/prefix; endpoint from MLFLOW_S3_ENDPOINT_URL,
 * credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN,
 * region AWS_DEFAULT_REGION; path-style requests signed with SigV4). Paths
 * below the root are relative, '/'-separated, without "." or ".." ("" is the
 * root). Writes are atomic for readers: a file appears whole or not at all
 * (local: temporary file and rename; S3: one PutObject, or a multipart upload
 * that is completed only after every part arrived and aborted on failure).
 * Files of IMOPS_S3_MULTIPART_MB (default 64) MiB or more go up in parts of
 * IMOPS_S3_PART_MB (default 16, at least 5) MiB. A handle is used by one
 * thread at a time. */
typedef struct im_track_artifacts im_track_artifacts_t;

typedef struct {
  char *path; /* relative to the listed directory for im_track_artifacts_list (a basename),
                 relative to the listed prefix for the recursive listing */
  int is_dir;
  int64_t size; /* files only */
} im_track_file_info_t;

typedef struct {
  int64_t n;
  im_track_file_info_t *items;
} im_track_file_list_t;
void im_track_file_list_free(im_track_file_list_t *l);

/** Opens a store rooted at root_uri (nothing is created yet). */
im_status_t im_track_artifacts_open(const char *root_uri, im_track_artifacts_t **out);
void im_track_artifacts_free(im_track_artifacts_t *a);
/** 1 for S3, 0 for a local directory. */
int im_track_artifacts_is_remote(const im_track_artifacts_t *a);
/** Stores a local file at rel (streamed, atomic). */
im_status_t im_track_artifacts_put_file(im_track_artifacts_t *a, const char *rel, const char *local_path);
/** Stores bytes at rel (atomic). */
im_status_t im_track_artifacts_put_bytes(im_track_artifacts_t *a, const char *rel, const void *data, size_t len);
/** Stores every regular file under local_dir below rel, keeping the layout. */
im_status_t im_track_artifacts_put_dir(im_track_artifacts_t *a, const char *rel, const char *local_dir);
/** The direct children of directory rel, sorted by name (a missing directory is an empty list). */
im_status_t im_track_artifacts_list(im_track_artifacts_t *a, const char *rel, im_track_file_list_t **out);
/** Every file below rel (paths relative to rel), sorted. */
im_status_t im_track_artifacts_list_all(im_track_artifacts_t *a, const char *rel, im_track_file_list_t **out);
/** 1 when rel is a file, 2 when a directory (has files below it), 0 when absent. */
im_status_t im_track_artifacts_stat(im_track_artifacts_t *a, const char *rel, int *kind);
/** Fetches file rel to local_path (atomically). Missing: IM_ERR_NOT_FOUND. */
im_status_t im_track_artifacts_get_file(im_track_artifacts_t *a, const char *rel, const char *local_path);
/** Fetches the tree below rel into local_dir, which appears whole (a temporary
 * directory beside it, renamed into place; an existing local_dir is kept as
 * it is). Nothing below rel: IM_ERR_NOT_FOUND. */
im_status_t im_track_artifacts_get_dir(im_track_artifacts_t *a, const char *rel, const char *local_dir);
/** Removes file rel, or everything below directory rel. */
im_status_t im_track_artifacts_delete(im_track_artifacts_t *a, const char *rel);
/** A local copy of the artifact tree (or file) at uri, for reading: local URIs
 * give their path; s3:// ones are fetched once into
 * <cache_dir>/<hash of the URI>/<last name>, atomically (cache_dir NULL:
 * $IMOPS_HOME/cache/artifacts, else ./imops-workspace/cache/artifacts). */
im_status_t im_track_artifacts_fetch(const char *uri, const char *cache_dir, char **local_out);

/* ---- tracking clients ------------------------------------------------------------------------- */
/* What imops train / test log through: the embedded store, or a tracking
 * server spoken to with MLflow's REST API (imops server or mlflow server).
 *   im_track_client_open(NULL, &c)                 embedded, $IMOPS_HOME
 *   im_track_client_open("http://127.0.0.1:5000", &c)  REST
 * A NULL uri takes MLFLOW_TRACKING_URI when it is http(s)://. Bearer token:
 * MLFLOW_TRACKING_TOKEN (or IMOPS_TOKEN); basic auth: MLFLOW_TRACKING_USERNAME /
 * MLFLOW_TRACKING_PASSWORD. One thread at a time per client. */
typedef struct im_track_client im_track_client_t;

/** uri: NULL, a workspace path, file://..., sqlite:///x.db: embedded; http(s)://: REST. */
im_status_t im_track_client_open(const char *uri, im_track_client_t **out);
void im_track_client_close(im_track_client_t *c);
/** 1 for a REST client. */
int im_track_client_is_remote(const im_track_client_t *c);
/** 1 when uri names a tracking server (http:// or https://, any case): what im_track_client_open
 * talks REST to. NULL is 0 (MLFLOW_TRACKING_URI is the caller's to consult). */
int im_track_uri_is_server(const char *uri);
/** The embedded store (NULL for a REST client). */
im_track_store_t *im_track_client_store(im_track_client_t *c);
/** A text naming where runs go ("http://...", or the workspace directory). */
const char *im_track_client_where(const im_track_client_t *c);
/** The id of the experiment called name (NULL or "": "Default"), created when
 * missing; a deleted one is IM_ERR_STATE. *id is im_malloc'd. */
im_status_t im_track_client_experiment_id(im_track_client_t *c, const char *name, char **id);
im_status_t im_track_client_run_create(im_track_client_t *c, const im_track_run_create_t *rc, im_track_run_t **out);
im_status_t im_track_client_run_get(im_track_client_t *c, const char *run_id, im_track_run_t **out);
im_status_t im_track_client_run_update(im_track_client_t *c, const char *run_id, const im_track_run_update_t *u);
im_status_t im_track_client_set_tag(im_track_client_t *c, const char *run_id, const char *key, const char *value);
/** Any number of entries: sent in batches within MLflow's limits (metrics
 * keep their order). */
im_status_t im_track_client_log_batch(im_track_client_t *c, const char *run_id, const im_track_metric_in_t *metrics,
                                      int n_metrics, const im_track_kv_t *params, int n_params,
                                      const im_track_kv_t *tags, int n_tags);
im_status_t im_track_client_metric_history(im_track_client_t *c, const char *run_id, const char *key,
                                           im_track_metric_list_t **out);
/** Uploads a local file or directory as the run's artifact artifact_path
 * (for a directory: its files below artifact_path; for a file: artifact_path
 * is the file's artifact path). The run's artifact_uri decides where:
 * mlflow-artifacts:/ through the server's proxy, s3:// straight to S3,
 * file:// or a path on this machine. */
im_status_t im_track_client_log_artifacts(im_track_client_t *c, const char *run_id, const char *local_path,
                                          const char *artifact_path);
/** A REST client's call of any endpoint of the server's API 2.0 (path
 * "imops/sweeps/claim" is /api/2.0/imops/sweeps/claim) with a JSON body (req
 * stolen; NULL for none, GET) and the same auth and retries as the rest; a
 * non-200 answer is an error carrying MLflow's error_code and message
 * (404: IM_ERR_NOT_FOUND, 409: IM_ERR_STATE). *out (may be NULL) gets the
 * answer. An embedded client is IM_ERR_UNSUPPORTED. */
struct json_t;
im_status_t im_track_client_call(im_track_client_t *c, const char *method, const char *path, struct json_t *req,
                                 struct json_t **out);
/** Resolves a model URI (runs:/, models:/, s3://, file://, a path, mlflow-artifacts:/)
 * and makes it local: remote artifacts are fetched into cache_dir (NULL: the
 * default cache, see im_track_artifacts_fetch). *local_dir is im_malloc'd;
 * *run_id (may be NULL) receives the run behind the model when known. */
im_status_t im_track_client_fetch_model(im_track_client_t *c, const char *uri, const char *cache_dir,
                                        char **local_dir, char **run_id);
/** The run a runs:/ or models:/ URI belongs to and the model's artifact path
 * within that run ("model" for runs:/<id>/model; "" for the run's root), so
 * that files can be logged next to it with im_track_client_log_artifacts.
 * *run_id and *path are im_malloc'd. IM_ERR_NOT_FOUND when a registered
 * version has no run or its files are outside the run's artifacts;
 * IM_ERR_ARG for other URIs. */
im_status_t im_track_client_model_run_path(im_track_client_t *c, const char *uri, char **run_id, char **path);

#ifdef __cplusplus
}
#endif
#endif
