/* Internal contracts of the track module: the store handle, error and
 * transaction helpers, the statement cache, validation, and the search filter
 * (parser and SQL compiler). Only src/track (and its tests and fuzzers)
 * include this; only src/track includes sqlite3.h. */
#ifndef IMOPS_TRACK_IMPL_H
#define IMOPS_TRACK_IMPL_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>

#include "imops/core.h"
#include "imops/track.h"

/* MLflow error code names. */
#define IM__TRK_NOT_FOUND "RESOURCE_DOES_NOT_EXIST"
#define IM__TRK_EXISTS "RESOURCE_ALREADY_EXISTS"
#define IM__TRK_INVALID "INVALID_PARAMETER_VALUE"
#define IM__TRK_STATE "INVALID_STATE"
#define IM__TRK_INTERNAL "INTERNAL_ERROR"

#define IM__TRK_NCACHE 160 /* above the number of distinct SQL texts in src/track (about 75) */

struct im_track_store {
  sqlite3 *db;
  char *home; /* absolute workspace directory */
  char *db_path;
  char *artifact_root; /* URI, no trailing slash */
  int schema_version;
  int in_tx;
  char errmsg[1024];
  const char *errcode; /* static string, NULL when no failure yet */
  struct {
    const char *sql; /* the (static) SQL text: the cache key is its address */
    sqlite3_stmt *st;
  } cache[IM__TRK_NCACHE];
  int ncache;
};

/* ---- errors ---------------------------------------------------------------- */
/** Records a failure on the handle and the thread (im_last_error); code NULL =
 * derived from st. Returns st. */
im_status_t im__trk_fail(im_track_store_t *s, im_status_t st, const char *code, const char *fmt, ...) IM_PRINTF(4, 5);
/** A SQLite failure: IM_ERR_IO or IM_ERR_INTERNAL with sqlite's message. */
im_status_t im__trk_sqlfail(im_track_store_t *s, int rc, const char *what);
#define IM__TRK_NOMEM(s) im__trk_fail((s), IM_ERR_NOMEM, NULL, "out of memory")

/* ---- transactions ---------------------------------------------------------- */
/** BEGIN IMMEDIATE, retried while the database is busy (up to a long deadline). */
im_status_t im__trk_begin(im_track_store_t *s);
/** COMMIT (retried while busy); on failure rolls back. */
im_status_t im__trk_commit(im_track_store_t *s);
/** ROLLBACK if a transaction is open. Never fails. */
void im__trk_rollback(im_track_store_t *s);
/** Commits when st is IM_OK, otherwise rolls back; returns the final status. */
im_status_t im__trk_end(im_track_store_t *s, im_status_t st);

/* ---- statements -------------------------------------------------------------- */
/** A cached prepared statement for a static SQL text (reset and cleared). */
sqlite3_stmt *im__trk_stmt(im_track_store_t *s, const char *sql);
/** Binds by a format: 's' text (NULL binds NULL), 'i' int64, 'd' double, 'n' NULL.
 * Parameters are numbered from first. */
im_status_t im__trk_bindv(im_track_store_t *s, sqlite3_stmt *st, int first, const char *fmt, ...);
/** Steps: *row = 1 on SQLITE_ROW, 0 on SQLITE_DONE. */
im_status_t im__trk_step(im_track_store_t *s, sqlite3_stmt *st, int *row);
/** Resets a statement and clears its bindings. */
void im__trk_reset(sqlite3_stmt *st);
/** Runs a cached statement with bound values to completion; *changes (may be NULL). */
im_status_t im__trk_exec(im_track_store_t *s, const char *sql, int *changes, const char *fmt, ...);
/** Runs a cached single-column query: *found = 0 when no row; *i64 / *str (im_strdup'd, may be NULL). */
im_status_t im__trk_query_i64(im_track_store_t *s, const char *sql, int *found, int64_t *out, const char *fmt, ...);
im_status_t im__trk_query_str(im_track_store_t *s, const char *sql, int *found, char **out, const char *fmt, ...);
/** A text column, im_strdup'd (NULL for SQL NULL; sets *oom on allocation failure). */
char *im__trk_col_dup(sqlite3_stmt *st, int col, int *oom);
/** As im__trk_col_dup but "" for SQL NULL. */
char *im__trk_col_dup0(sqlite3_stmt *st, int col, int *oom);
/** An integer time column: IM_TRACK_NO_TIME for SQL NULL. */
int64_t im__trk_col_time(sqlite3_stmt *st, int col);

/* ---- helpers ---------------------------------------------------------------------- */
int64_t im__trk_now(void);
/** 32 lowercase hex digits from the OS random source (uuid4 layout). */
void im__trk_uuid_hex(char out[33]);
/** Parses a decimal experiment id ("0", "17"); -1 when not one. */
int64_t im__trk_parse_id(const char *s);
/** Number of UTF-8 characters in s. */
size_t im__trk_utf8_len(const char *s);
/** Validates a metric/param/tag key the way MLflow does; IM_OK or IM_ERR_ARG with a message. */
im_status_t im__trk_check_key(im_track_store_t *s, const char *what, const char *key);
/** Validates a value's length (in characters) against max; NULL is an error. */
im_status_t im__trk_check_value(im_track_store_t *s, const char *what, const char *key, const char *value, size_t max);
/** Case-(in)sensitive SQL LIKE ('%' any run, '_' one character, no escape). */
int im__trk_like(const char *pattern, const char *text, int ci);
/** base + "/" + tail without doubling the slash ("mlflow-artifacts:/" + "0" is
 * "mlflow-artifacts:/0"); a new string, NULL when out of memory. */
char *im__trk_join_uri(const char *base, const char *tail);
/** Opens a read snapshot for a call that reads with several queries (no-op
 * inside a transaction); returns whether it opened one, for im__trk_read_end. */
int im__trk_read_begin(im_track_store_t *s);
void im__trk_read_end(im_track_store_t *s, int began);
/** The body of a public read: IM_ERR_ARG "<function>: no store" without a store,
 * otherwise returns call (an im_status_t expression) run in one read snapshot. */
#define IM__TRK_READ_SNAPSHOT(s, call)                                \
  do {                                                                \
    if (!(s)) return im_error(IM_ERR_ARG, "%s: no store", __func__); \
    int rb_ = im__trk_read_begin(s);                                  \
    im_status_t r_ = (call);                                          \
    im__trk_read_end((s), rb_);                                       \
    return r_;                                                        \
  } while (0)
/** Frees an array of tags. */
void im__trk_tags_free(im_track_tag_t *t, int n);
/** Loads "SELECT key, value ... " rows of a cached statement into a tag array. */
im_status_t im__trk_load_tags(im_track_store_t *s, sqlite3_stmt *st, im_track_tag_t **out, int *n);
/** Page tokens: base64 of {"offset": N}. */
char *im__trk_page_token(int64_t offset);
/** Fills one zeroed list item from the current row of a search statement. */
typedef im_status_t (*im__trk_fill_fn)(im_track_store_t *s, sqlite3_stmt *st, void *item);
/** Steps a search statement bound with LIMIT limit + 1 OFFSET offset: each row
 * fills a zeroed item of item_size in the growing array *items (counted in *n
 * before it is filled, so the list's free releases a half-filled one); a row
 * beyond limit means another page, whose token goes to *next_token. */
im_status_t im__trk_collect_page(im_track_store_t *s, sqlite3_stmt *st, int64_t limit, int64_t offset,
                                 size_t item_size, im__trk_fill_fn fill, void **items, int64_t *n, char **next_token);
im_status_t im__trk_parse_page_token(im_track_store_t *s, const char *tok, int64_t *offset);

/* ---- entity internals shared between files ------------------------------------------ */
/** Looks up a run: *pk its row id, *active 1 when lifecycle_stage is active. */
im_status_t im__trk_run_lookup(im_track_store_t *s, const char *run_id, int64_t *pk, int *active);
/** As im__trk_run_lookup, failing unless the run exists and is active. */
im_status_t im__trk_run_active(im_track_store_t *s, const char *run_id, int64_t *pk);
/** Sets a run tag (inside a transaction). */
im_status_t im__trk_run_tag_put(im_track_store_t *s, int64_t pk, const char *key, const char *value);
/** Appends a metric and updates the latest value (inside a transaction). */
im_status_t im__trk_metric_put(im_track_store_t *s, int64_t pk, const char *key, double value, int64_t ts,
                               int64_t step);
/** im__trk_fill_fn for an im_track_metric_t from a row of key, value, is_nan, timestamp, step. */
im_status_t im__trk_metric_fill(im_track_store_t *s, sqlite3_stmt *st, void *item);
/** Loads a run by its row id. */
im_status_t im__trk_run_load(im_track_store_t *s, int64_t pk, im_track_run_t **out);
void im__trk_run_clear(im_track_run_t *r);
void im__trk_experiment_clear(im_track_experiment_t *e);
void im__trk_model_clear(im_track_model_t *m);
void im__trk_model_version_clear(im_track_model_version_t *v);

/* Test hook: called inside log_batch after each metric row is written (i is
 * its index); lets a test kill the process in the middle of a batch. */
extern void (*im__trk_batch_hook)(int i);

/* ---- search filters -------------------------------------------------------------------- */
typedef enum {
  IM__ENT_ATTR = 0, /* attributes.x, bare x */
  IM__ENT_METRIC,
  IM__ENT_PARAM,
  IM__ENT_TAG,
  IM__ENT_DATASET
} im__ent_t;

typedef enum {
  IM__OP_EQ = 0,
  IM__OP_NE,
  IM__OP_GT,
  IM__OP_GE,
  IM__OP_LT,
  IM__OP_LE,
  IM__OP_LIKE,
  IM__OP_ILIKE,
  IM__OP_IN,
  IM__OP_NOT_IN
} im__op_t;

typedef struct {
  im__ent_t ent;
  char *key; /* unquoted */
  im__op_t op;
  int is_num; /* value is a number (else a string, or a list for IN) */
  double num;
  char *str;
  int n_list;
  char **list; /* IN / NOT IN */
} im__clause_t;

typedef struct {
  int n;
  im__clause_t *c;
} im__filter_t;

/** Parses a filter string (len bytes; NUL bytes are errors). NULL / empty gives
 * an empty filter. On error returns IM_ERR_ARG with a message in err. */
im_status_t im__filter_parse(const char *text, size_t len, im__filter_t **out, char *err, size_t errlen);
void im__filter_free(im__filter_t *f);
/** The comparator's text ("=", "LIKE", ...). */
const char *im__op_name(im__op_t op);

/** One order_by entry: an entity, key, and direction. */
typedef struct {
  im__ent_t ent;
  char *key;
  int desc;
} im__order_t;
im_status_t im__order_parse(const char *text, im__order_t *out, char *err, size_t errlen);
void im__order_clear(im__order_t *o);

/* What a search may filter and order on, and how it maps to SQL. */
typedef struct {
  const char *name; /* as written in filters ("run_name", "status", ...) */
  const char *sql;  /* the SQL expression ("r.name") */
  int numeric;      /* compared with numbers */
} im__attr_t;

typedef struct {
  const char *what; /* "runs", "experiments", ... for messages */
  const im__attr_t *attrs;
  int n_attrs;
  /* "EXISTS (SELECT 1 FROM x WHERE x.owner = o.id AND x.key = ? AND " + cmp("x.value") + ")":
   * the prefix up to the comparison, and the value column; NULL = not supported. */
  const char *tag_prefix, *tag_col;
  const char *param_prefix, *param_col;
  const char *metric_prefix, *metric_col;
  /* order-by expressions for a key: "(SELECT x.value FROM x WHERE x.owner = o.id AND x.key = ?)" */
  const char *tag_order, *param_order, *metric_order;
} im__domain_t;

extern const im__domain_t im__dom_runs, im__dom_experiments, im__dom_models, im__dom_versions;

/** A bind value collected while compiling. */
typedef struct {
  int is_num;
  double num;
  char *str; /* owned */
} im__bind_t;

typedef struct {
  im_buf_t sql; /* " AND ..." fragments, or ", ..." order terms */
  im__bind_t *binds;
  int n_binds, cap_binds;
} im__sql_t;

/** Appends " AND <cond>" for each clause to out (binds in order). IM_ERR_ARG
 * with a message in err for what the domain does not allow. */
im_status_t im__filter_compile(const im__filter_t *f, const im__domain_t *d, im__sql_t *out, char *err, size_t errlen);
/** Appends "<expr> IS NULL, <expr> ASC|DESC, " for an order entry. */
im_status_t im__order_compile(const im__order_t *o, const im__domain_t *d, im__sql_t *out, char *err, size_t errlen);
void im__sql_free(im__sql_t *q);
/** Binds q's values to st starting at parameter first; returns the next free index. */
im_status_t im__sql_bind(im_track_store_t *s, const im__sql_t *q, sqlite3_stmt *st, int first, int *next);

/** Whole-search helper: parses filter and order_by of q against d, appending
 * the WHERE fragment to where and the ORDER BY terms to order; validates and
 * resolves max_results (default def, at most max) and the page offset. */
im_status_t im__search_prepare(im_track_store_t *s, const im_track_search_t *q, const im__domain_t *d, int64_t def,
                               int64_t max, im__sql_t *where, im__sql_t *order, int64_t *limit, int64_t *offset);

/** What one kind of search is made of: its statement is
 * select + cond + filter + " ORDER BY " + order_by terms + order_tail + " LIMIT ? OFFSET ?". */
typedef struct {
  const im__domain_t *dom;
  int64_t def_results, max_results; /* max_results when the request gives none, and its cap */
  const char *select;               /* "SELECT ... FROM ... WHERE " */
  const char *order_tail;           /* the fixed ordering after the requested one ("m.name ASC") */
  const char *what;                 /* for a failed prepare ("preparing the run search") */
  size_t item_size;
  im__trk_fill_fn fill;
} im__search_spec_t;

/** A whole search: im__search_prepare against sp->dom, the statement (cond is the
 * condition after WHERE, with n_ids placeholders bound first to ids), then one
 * page collected into *items / *n / *next_token as im__trk_collect_page does. */
im_status_t im__trk_search(im_track_store_t *s, const im__search_spec_t *sp, const im_track_search_t *q,
                           const char *cond, const int64_t *ids, int n_ids, void **items, int64_t *n,
                           char **next_token);

/* ---- S3 (s3.c): configuration, request URLs, response XML ------------------------------ */
typedef struct {
  char *endpoint; /* "http://127.0.0.1:9000" (no trailing slash) */
  char *region;   /* AWS_DEFAULT_REGION / AWS_REGION, else "us-east-1" */
  char *access_key, *secret_key, *session_token;
} im__s3_conf_t;
/** From MLFLOW_S3_ENDPOINT_URL (else AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, else
 * https://s3.<region>.amazonaws.com), AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
 * AWS_SESSION_TOKEN, AWS_DEFAULT_REGION. Missing keys: IM_ERR_ARG saying which. */
im_status_t im__s3_conf_from_env(im__s3_conf_t *c);
void im__s3_conf_clear(im__s3_conf_t *c);
/** Splits s3://bucket/key: *key without leading or trailing slashes ("" for none). */
im_status_t im__s3_split(const char *uri, char **bucket, char **key);
/** The path-style URL endpoint/bucket/key (key URI-encoded, '/' kept), then
 * "?" + query when query is not NULL (already sorted and encoded). */
im_status_t im__s3_url(const char *endpoint, const char *bucket, const char *key, const char *query, char **out);
/** The ListObjectsV2 query for a prefix, delimiter (NULL: none) and continuation
 * token (NULL: first page), sorted by name and encoded as SigV4 wants. */
im_status_t im__s3_list_query(const char *prefix, const char *delimiter, const char *token, char **out);

/** One page of a ListObjectsV2 answer. */
typedef struct {
  size_t n;
  char **keys;
  int64_t *sizes;
  size_t n_prefixes;
  char **prefixes; /* CommonPrefixes, ending with the delimiter */
  int truncated;
  char *next_token; /* NextContinuationToken (NULL when none) */
} im__s3_list_t;
/** Parses a ListBucketResult (strict: the root element must be
 * ListBucketResult, sizes non-negative integers, at most 100000 entries).
 * IM_ERR_FORMAT with a message otherwise; *out is cleared first. */
im_status_t im__s3_parse_list(const char *xml, size_t len, im__s3_list_t *out);
void im__s3_list_clear(im__s3_list_t *l);
/** An <Error><Code/><Message/></Error> body: IM_OK with *code and *message
 * (each may be NULL), IM_ERR_FORMAT when xml is not an S3 error. */
im_status_t im__s3_parse_error(const char *xml, size_t len, char **code, char **message);
/** The UploadId of an InitiateMultipartUploadResult. */
im_status_t im__s3_parse_upload_id(const char *xml, size_t len, char **upload_id);

#endif
