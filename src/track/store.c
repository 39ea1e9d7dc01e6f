/* The store: opening the workspace database (WAL, busy handling), the schema
 * and its versioned migrations (schema_version; one function per step N->N+1,
 * all steps in one transaction), the Default experiment, and closing. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "track/track_impl.h"

#define IM__TRK_DEFAULT_HOME "./imops-workspace"
#define IM__TRK_DB_NAME "imops.db"
#define IM__TRK_BUSY_HANDLER_MS 60000

/* ---- schema ------------------------------------------------------------------
 * Never edit a migration that has shipped: add a new one. The unit test
 * builds a version-1 database by hand and migrates it. */

/* v1: tracking (experiments, runs, params, tags, metric history, latest metrics). */
static const char mig_1[] =
    "CREATE TABLE schema_version (version INTEGER NOT NULL);"
    "CREATE TABLE experiments ("
    "  experiment_id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  artifact_location TEXT NOT NULL,"
    "  lifecycle_stage TEXT NOT NULL DEFAULT 'active' CHECK (lifecycle_stage IN ('active', 'deleted')),"
    "  creation_time INTEGER NOT NULL,"
    "  last_update_time INTEGER NOT NULL);"
    "CREATE TABLE experiment_tags ("
    "  experiment_id INTEGER NOT NULL REFERENCES experiments(experiment_id) ON DELETE CASCADE,"
    "  key TEXT NOT NULL,"
    "  value TEXT NOT NULL,"
    "  PRIMARY KEY (experiment_id, key)) WITHOUT ROWID;"
    "CREATE TABLE runs ("
    "  id INTEGER PRIMARY KEY,"
    "  run_uuid TEXT NOT NULL UNIQUE,"
    "  name TEXT NOT NULL DEFAULT '',"
    "  experiment_id INTEGER NOT NULL REFERENCES experiments(experiment_id),"
    "  user_id TEXT NOT NULL DEFAULT '',"
    "  status TEXT NOT NULL DEFAULT 'RUNNING'"
    "    CHECK (status IN ('RUNNING', 'SCHEDULED', 'FINISHED', 'FAILED', 'KILLED')),"
    "  start_time INTEGER NOT NULL,"
    "  end_time INTEGER,"
    "  artifact_uri TEXT NOT NULL,"
    "  lifecycle_stage TEXT NOT NULL DEFAULT 'active' CHECK (lifecycle_stage IN ('active', 'deleted')),"
    "  deleted_time INTEGER);"
    "CREATE INDEX runs_by_experiment ON runs(experiment_id, start_time);"
    "CREATE TABLE tags ("
    "  run_pk INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    "  key TEXT NOT NULL,"
    "  value TEXT NOT NULL,"
    "  PRIMARY KEY (run_pk, key)) WITHOUT ROWID;"
    "CREATE TABLE params ("
    "  run_pk INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    "  key TEXT NOT NULL,"
    "  value TEXT NOT NULL,"
    "  PRIMARY KEY (run_pk, key)) WITHOUT ROWID;"
    /* value is 0 when is_nan: SQLite stores a NaN double as NULL */
    "CREATE TABLE metrics ("
    "  id INTEGER PRIMARY KEY,"
    "  run_pk INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    "  key TEXT NOT NULL,"
    "  value REAL NOT NULL,"
    "  is_nan INTEGER NOT NULL DEFAULT 0,"
    "  timestamp INTEGER NOT NULL,"
    "  step INTEGER NOT NULL DEFAULT 0);"
    "CREATE UNIQUE INDEX metrics_unique ON metrics(run_pk, key, timestamp, step, value, is_nan);"
    "CREATE TABLE latest_metrics ("
    "  run_pk INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,"
    "  key TEXT NOT NULL,"
    "  value REAL NOT NULL,"
    "  is_nan INTEGER NOT NULL DEFAULT 0,"
    "  timestamp INTEGER NOT NULL,"
    "  step INTEGER NOT NULL DEFAULT 0,"
    "  PRIMARY KEY (run_pk, key)) WITHOUT ROWID;"
    "CREATE INDEX latest_metrics_by_key ON latest_metrics(key, value);"
    "INSERT INTO schema_version (version) VALUES (1);";

/* v2: the model registry. Versions count per model (next_version, never
 * reused); aliases and version tags go with their version. */
static const char mig_2[] =
    "CREATE TABLE registered_models ("
    "  id INTEGER PRIMARY KEY,"
    "  name TEXT NOT NULL UNIQUE,"
    "  creation_time INTEGER NOT NULL,"
    "  last_updated_time INTEGER NOT NULL,"
    "  description TEXT NOT NULL DEFAULT '',"
    "  user_id TEXT NOT NULL DEFAULT '',"
    "  next_version INTEGER NOT NULL DEFAULT 1);"
    "CREATE TABLE registered_model_tags ("
    "  model_id INTEGER NOT NULL REFERENCES registered_models(id) ON DELETE CASCADE,"
    "  key TEXT NOT NULL,"
    "  value TEXT NOT NULL,"
    "  PRIMARY KEY (model_id, key)) WITHOUT ROWID;"
    "CREATE TABLE model_versions ("
    "  model_id INTEGER NOT NULL REFERENCES registered_models(id) ON DELETE CASCADE,"
    "  version INTEGER NOT NULL,"
    "  creation_time INTEGER NOT NULL,"
    "  last_updated_time INTEGER NOT NULL,"
    "  user_id TEXT NOT NULL DEFAULT '',"
    "  current_stage TEXT NOT NULL DEFAULT 'None'"
    "    CHECK (current_stage IN ('None', 'Staging', 'Production', 'Archived')),"
    "  description TEXT NOT NULL DEFAULT '',"
    "  source TEXT NOT NULL,"
    "  run_id TEXT NOT NULL DEFAULT '',"
    "  run_link TEXT NOT NULL DEFAULT '',"
    "  status TEXT NOT NULL DEFAULT 'READY'"
    "    CHECK (status IN ('PENDING_REGISTRATION', 'FAILED_REGISTRATION', 'READY')),"
    "  status_message TEXT NOT NULL DEFAULT '',"
    "  PRIMARY KEY (model_id, version));"
    "CREATE INDEX model_versions_by_run ON model_versions(run_id);"
    "CREATE TABLE model_version_tags ("
    "  model_id INTEGER NOT NULL,"
    "  version INTEGER NOT NULL,"
    "  key TEXT NOT NULL,"
    "  value TEXT NOT NULL,"
    "  PRIMARY KEY (model_id, version, key),"
    "  FOREIGN KEY (model_id, version) REFERENCES model_versions(model_id, version) ON DELETE CASCADE"
    ") WITHOUT ROWID;"
    "CREATE TABLE registered_model_aliases ("
    "  model_id INTEGER NOT NULL,"
    "  alias TEXT NOT NULL,"
    "  version INTEGER NOT NULL,"
    "  PRIMARY KEY (model_id, alias),"
    "  FOREIGN KEY (model_id, version) REFERENCES model_versions(model_id, version) ON DELETE CASCADE"
    ") WITHOUT ROWID;"
    "UPDATE schema_version SET version = 2;";

/* v3: sweeps (config JSON, state, trials that agents claim atomically with
 * "UPDATE ... WHERE state = 'PENDING'" inside BEGIN IMMEDIATE) and pipeline
 * runs (steps with statuses, parameters, cache keys). */
static const char mig_3[] =
    "CREATE TABLE sweeps ("
    "  sweep_id TEXT PRIMARY KEY,"
    "  name TEXT NOT NULL DEFAULT '',"
    "  experiment_id INTEGER REFERENCES experiments(experiment_id),"
    "  config TEXT NOT NULL CHECK (json_valid(config)),"
    "  method TEXT NOT NULL DEFAULT 'random' CHECK (method IN ('grid', 'random', 'bayes')),"
    "  metric_name TEXT,"
    "  metric_goal TEXT CHECK (metric_goal IS NULL OR metric_goal IN ('minimize', 'maximize')),"
    "  state TEXT NOT NULL DEFAULT 'PENDING'"
    "    CHECK (state IN ('PENDING', 'RUNNING', 'PAUSED', 'FINISHED', 'CANCELED', 'FAILED')),"
    "  max_trials INTEGER,"
    "  creation_time INTEGER NOT NULL,"
    "  last_update_time INTEGER NOT NULL);"
    "CREATE TABLE sweep_trials ("
    "  sweep_id TEXT NOT NULL REFERENCES sweeps(sweep_id) ON DELETE CASCADE,"
    "  trial INTEGER NOT NULL,"
    "  params TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(params)),"
    "  state TEXT NOT NULL DEFAULT 'PENDING'"
    "    CHECK (state IN ('PENDING', 'CLAIMED', 'RUNNING', 'FINISHED', 'FAILED', 'KILLED', 'PRUNED')),"
    "  agent_id TEXT,"
    "  run_uuid TEXT,"
    "  claimed_time INTEGER,"
    "  heartbeat_time INTEGER,"
    "  finished_time INTEGER,"
    "  objective REAL,"
    "  PRIMARY KEY (sweep_id, trial));"
    "CREATE INDEX sweep_trials_by_state ON sweep_trials(sweep_id, state, trial);"
    "CREATE TABLE sweep_agents ("
    "  agent_id TEXT PRIMARY KEY,"
    "  sweep_id TEXT NOT NULL REFERENCES sweeps(sweep_id) ON DELETE CASCADE,"
    "  host TEXT NOT NULL DEFAULT '',"
    "  pid INTEGER,"
    "  state TEXT NOT NULL DEFAULT 'RUNNING' CHECK (state IN ('RUNNING', 'FINISHED', 'FAILED', 'LOST')),"
    "  start_time INTEGER NOT NULL,"
    "  heartbeat_time INTEGER);"
    "CREATE TABLE pipeline_runs ("
    "  pipeline_run_id TEXT PRIMARY KEY,"
    "  pipeline_name TEXT NOT NULL,"
    "  spec TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(spec)),"
    "  params TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(params)),"
    "  status TEXT NOT NULL DEFAULT 'PENDING'"
    "    CHECK (status IN ('PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'CANCELED')),"
    "  experiment_id INTEGER REFERENCES experiments(experiment_id),"
    "  run_uuid TEXT,"
    "  creation_time INTEGER NOT NULL,"
    "  start_time INTEGER,"
    "  end_time INTEGER);"
    "CREATE TABLE pipeline_steps ("
    "  pipeline_run_id TEXT NOT NULL REFERENCES pipeline_runs(pipeline_run_id) ON DELETE CASCADE,"
    "  step_name TEXT NOT NULL,"
    "  status TEXT NOT NULL DEFAULT 'PENDING'"
    "    CHECK (status IN ('PENDING', 'RUNNING', 'SUCCEEDED', 'FAILED', 'SKIPPED', 'CACHED', 'CANCELED')),"
    "  run_uuid TEXT,"
    "  attempt INTEGER NOT NULL DEFAULT 0,"
    "  cache_key TEXT,"
    "  inputs TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(inputs)),"
    "  outputs TEXT NOT NULL DEFAULT '{}' CHECK (json_valid(outputs)),"
    "  message TEXT NOT NULL DEFAULT '',"
    "  start_time INTEGER,"
    "  end_time INTEGER,"
    "  PRIMARY KEY (pipeline_run_id, step_name));"
    "CREATE INDEX pipeline_steps_by_cache_key ON pipeline_steps(cache_key);"
    "UPDATE schema_version SET version = 3;";

/* migrations[v] takes a database at version v to v + 1. */
/* v4: the intermediate values trials report (per-epoch metric), for the
 * sweeps' hyperband early termination across agents. */
static const char mig_4[] =
    "CREATE TABLE sweep_trial_steps ("
    "  sweep_id TEXT NOT NULL,"
    "  trial INTEGER NOT NULL,"
    "  step INTEGER NOT NULL,"
    "  value REAL,"
    "  PRIMARY KEY (sweep_id, trial, step),"
    "  FOREIGN KEY (sweep_id, trial) REFERENCES sweep_trials(sweep_id, trial) ON DELETE CASCADE) WITHOUT ROWID;"
    "UPDATE schema_version SET version = 4;";

static const char *const migrations[IM_TRACK_SCHEMA_VERSION] = {mig_1, mig_2, mig_3, mig_4};

static im_status_t migrate_step(im_track_store_t *s, int from) {
  char *err = NULL;
  int rc = sqlite3_exec(s->db, migrations[from], NULL, NULL, &err);
  if (rc != SQLITE_OK) {
    im_status_t st = im__trk_fail(s, IM_ERR_INTERNAL, NULL, "migrating %s from schema version %d to %d: %s", s->db_path,
                                  from, from + 1, err ? err : sqlite3_errstr(rc));
    sqlite3_free(err);
    return st;
  }
  return IM_OK;
}

static im_status_t schema_version(im_track_store_t *s, int *version) {
  int found = 0;
  int64_t v = 0;
  im_status_t st = im__trk_query_i64(s, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'",
                                     &found, NULL, "");
  if (st) return st;
  if (!found) {
    int64_t ntables = 0;
    st = im__trk_query_i64(s, "SELECT count(*) FROM sqlite_master", &found, &ntables, "");
    if (st) return st;
    if (ntables > 0)
      return im__trk_fail(s, IM_ERR_FORMAT, NULL, "%s is a SQLite database but not an imops store (no schema_version)",
                          s->db_path);
    *version = 0;
    return IM_OK;
  }
  st = im__trk_query_i64(s, "SELECT max(version) FROM schema_version", &found, &v, "");
  if (st) return st;
  *version = (int)v;
  return IM_OK;
}

static im_status_t ensure_default_experiment(im_track_store_t *s) {
  int64_t now = im__trk_now();
  char *loc = im__trk_join_uri(s->artifact_root, "0");
  if (!loc) return IM__TRK_NOMEM(s);
  im_status_t st =
      im__trk_exec(s,
                   "INSERT OR IGNORE INTO experiments (experiment_id, name, artifact_location, "
                   "lifecycle_stage, creation_time, last_update_time) VALUES (0, 'Default', ?, 'active', ?, ?)",
                   NULL, "sii", loc, now, now);
  im_free(loc);
  return st;
}

/* Creates or migrates the schema and the Default experiment, in one write
 * transaction (so concurrent first opens serialize). */
static im_status_t init_schema(im_track_store_t *s) {
  im_status_t st = im__trk_begin(s);
  if (st) return st;
  int v = 0;
  st = schema_version(s, &v);
  if (st == IM_OK && v > IM_TRACK_SCHEMA_VERSION)
    st = im__trk_fail(s, IM_ERR_UNSUPPORTED, IM__TRK_INTERNAL,
                      "%s has schema version %d, newer than this imops understands (%d): upgrade imops", s->db_path, v,
                      IM_TRACK_SCHEMA_VERSION);
  for (; st == IM_OK && v < IM_TRACK_SCHEMA_VERSION; v++) st = migrate_step(s, v);
  if (st == IM_OK) st = ensure_default_experiment(s);
  st = im__trk_end(s, st);
  if (st == IM_OK) s->schema_version = IM_TRACK_SCHEMA_VERSION;
  return st;
}

/* Busy handler: short randomized sleeps (many writers make progress faster
 * than with SQLite's default back-off), for up to a minute per lock wait. */
static int busy_handler(void *arg, int count) {
  (void)arg;
  static _Thread_local unsigned seed = 0x9e3779b9u;
  static _Thread_local double t0;
  if (count == 0) t0 = im_time_now();
  if ((im_time_now() - t0) * 1000.0 > IM__TRK_BUSY_HANDLER_MS) return 0;
  seed = seed * 1664525u + 1013904223u;
  long cap = count < 8 ? 100L << (count / 2) : 2000L;
  long us = 20 + (long)((seed >> 8) % (unsigned)cap);
  struct timespec ts = {0, us * 1000};
  nanosleep(&ts, NULL);
  return 1;
}

/* SQL function im_like(value, pattern, ci): MLflow's LIKE (case-sensitive)
 * and ILIKE (case-insensitive); SQLite's own LIKE ignores ASCII case. */
static void sql_like(sqlite3_context *ctx, int argc, sqlite3_value **argv) {
  (void)argc;
  const unsigned char *v = sqlite3_value_text(argv[0]);
  const unsigned char *p = sqlite3_value_text(argv[1]);
  if (!v || !p) {
    sqlite3_result_null(ctx);
    return;
  }
  sqlite3_result_int(ctx, im__trk_like((const char *)p, (const char *)v, sqlite3_value_int(argv[2])));
}

static int has_suffix(const char *s, const char *suf) {
  size_t n = strlen(s), m = strlen(suf);
  return n >= m && !strcmp(s + n - m, suf);
}

/* Splits the argument into an absolute workspace and database path. */
static im_status_t resolve_paths(im_track_store_t *s, const char *arg) {
  if (!arg || !*arg) {
    arg = getenv("IMOPS_HOME");
    if (!arg || !*arg) arg = IM__TRK_DEFAULT_HOME;
  }
  struct stat sb;
  int is_file = stat(arg, &sb) == 0 && S_ISREG(sb.st_mode);
  char *home;
  const char *dbname = IM__TRK_DB_NAME;
  if (is_file || has_suffix(arg, ".db") || has_suffix(arg, ".sqlite")) {
    const char *slash = strrchr(arg, '/');
    home = slash ? im_strndup(arg, slash == arg ? 1 : (size_t)(slash - arg)) : im_strdup(".");
    dbname = slash ? slash + 1 : arg;
  } else {
    home = im_strdup(arg);
  }
  if (!home) return IM__TRK_NOMEM(s);
  im_status_t st = im_mkdir_p(home);
  if (st) {
    st = im__trk_fail(s, st, IM__TRK_INTERNAL, "cannot create the workspace %s: %s", home, im_last_error());
    im_free(home);
    return st;
  }
  char *abs = realpath(home, NULL);
  im_free(home);
  if (!abs) return im__trk_fail(s, IM_ERR_IO, NULL, "cannot resolve the workspace path %s: %s", arg, strerror(errno));
  s->home = im_strdup(abs);
  free(abs);
  if (!s->home) return IM__TRK_NOMEM(s);
  s->db_path = im_path_join(s->home, dbname);
  if (!s->db_path) return IM__TRK_NOMEM(s);
  return IM_OK;
}

/* Percent-encodes what a file URI path cannot hold as is. */
static char *file_uri(const char *path) {
  im_buf_t b = {0};
  if (im_buf_append(&b, "file://", 7)) return NULL;
  static const char hex[] = "0123456789ABCDEF";
  for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
    int keep = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') ||
               strchr("/._~-+:@=,", *p) != NULL;
    char enc[3] = {'%', hex[*p >> 4], hex[*p & 15]};
    if (keep ? im_buf_append(&b, p, 1) : im_buf_append(&b, enc, 3)) {
      im_buf_free(&b);
      return NULL;
    }
  }
  return b.data;
}

im_status_t im_track_set_artifact_root(im_track_store_t *s, const char *root) {
  if (!s || !root || !*root) return im__trk_fail(s, IM_ERR_ARG, NULL, "artifact root must not be empty");
  size_t n = strlen(root);
  while (n > 1 && root[n - 1] == '/' && !(n >= 2 && root[n - 2] == ':')) n--; /* keep "mlflow-artifacts:/" */
  char *r = im_strndup(root, n);
  if (!r) return IM__TRK_NOMEM(s);
  im_free(s->artifact_root);
  s->artifact_root = r;
  return IM_OK;
}

im_status_t im_track_open(const char *home_or_db_path, im_track_store_t **out) {
  if (!out) return im_error(IM_ERR_ARG, "im_track_open: out is NULL");
  *out = NULL;
  im_track_store_t *s = im_calloc(1, sizeof *s);
  if (!s) return im_error(IM_ERR_NOMEM, "out of memory opening the store");
  im_status_t st = resolve_paths(s, home_or_db_path);
  if (st == IM_OK) {
    const char *env = getenv("IMOPS_ARTIFACT_ROOT");
    if (env && *env) {
      st = im_track_set_artifact_root(s, env);
    } else {
      char *dir = im_path_join(s->home, "artifacts");
      char *uri = dir ? file_uri(dir) : NULL;
      if (!uri)
        st = IM__TRK_NOMEM(s);
      else
        st = im_track_set_artifact_root(s, uri);
      im_free(dir);
      im_free(uri); /* file_uri allocates through the funnel (im_buf_t) */
    }
  }
  if (st == IM_OK) {
    int rc =
        sqlite3_open_v2(s->db_path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) st = im__trk_sqlfail(s, rc, "opening the database");
  }
  if (st == IM_OK) {
    sqlite3_extended_result_codes(s->db, 1);
    sqlite3_busy_handler(s->db, busy_handler, s);
    /* Refuse a foreign or newer database before changing anything in it. */
    int v = 0;
    st = schema_version(s, &v);
    if (st == IM_OK && v > IM_TRACK_SCHEMA_VERSION)
      st = im__trk_fail(s, IM_ERR_UNSUPPORTED, IM__TRK_INTERNAL,
                        "%s has schema version %d, newer than this imops understands (%d): upgrade imops", s->db_path,
                        v, IM_TRACK_SCHEMA_VERSION);
  }
  if (st == IM_OK) {
    /* WAL needs a moment of exclusive access when first switched on; other
     * processes opening at the same time make that busy: retry. */
    int64_t t0 = im__trk_now();
    for (;;) {
      sqlite3_stmt *q = NULL;
      int rc = sqlite3_prepare_v2(s->db, "PRAGMA journal_mode = WAL", -1, &q, NULL);
      if (rc == SQLITE_OK) rc = sqlite3_step(q);
      int wal = rc == SQLITE_ROW && !strcmp((const char *)sqlite3_column_text(q, 0), "wal");
      sqlite3_finalize(q);
      if (rc == SQLITE_ROW && wal) break;
      if (rc == SQLITE_ROW) {
        st = im__trk_fail(s, IM_ERR_IO, IM__TRK_INTERNAL, "cannot put %s in WAL mode", s->db_path);
        break;
      }
      if ((((rc & 0xff) != SQLITE_BUSY) && ((rc & 0xff) != SQLITE_LOCKED)) || im__trk_now() - t0 > 60000) {
        st = im__trk_sqlfail(s, rc, "switching the database to WAL mode");
        break;
      }
      struct timespec ts = {0, 2000000};
      nanosleep(&ts, NULL);
    }
  }
  if (st == IM_OK) {
    char *err = NULL;
    int rc = sqlite3_exec(s->db, "PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;", NULL, NULL, &err);
    if (rc != SQLITE_OK) st = im__trk_fail(s, IM_ERR_IO, IM__TRK_INTERNAL, "configuring %s: %s", s->db_path, err);
    sqlite3_free(err);
  }
  if (st == IM_OK) {
    int rc = sqlite3_create_function(s->db, "im_like", 3, SQLITE_UTF8 | SQLITE_DETERMINISTIC | SQLITE_INNOCUOUS, NULL,
                                     sql_like, NULL, NULL);
    if (rc != SQLITE_OK) st = im__trk_sqlfail(s, rc, "registering im_like");
  }
  if (st == IM_OK) st = init_schema(s);
  if (st != IM_OK) {
    char msg[sizeof s->errmsg];
    snprintf(msg, sizeof msg, "%s", im_last_error());
    im_track_close(s);
    return im_error(st, "%s", msg);
  }
  *out = s;
  return IM_OK;
}

void im_track_close(im_track_store_t *s) {
  if (!s) return;
  if (s->db) {
    im__trk_rollback(s);
    for (int i = 0; i < s->ncache; i++) sqlite3_finalize(s->cache[i].st);
    sqlite3_close(s->db);
  }
  im_free(s->home);
  im_free(s->db_path);
  im_free(s->artifact_root);
  im_free(s);
}

const char *im_track_errmsg(const im_track_store_t *s) { return s ? s->errmsg : im_last_error(); }
const char *im_track_error_code(const im_track_store_t *s) { return s ? s->errcode : NULL; }
const char *im_track_home(const im_track_store_t *s) { return s ? s->home : NULL; }
const char *im_track_db_path(const im_track_store_t *s) { return s ? s->db_path : NULL; }
const char *im_track_artifact_root(const im_track_store_t *s) { return s ? s->artifact_root : NULL; }
int im_track_schema_version(const im_track_store_t *s) { return s ? s->schema_version : 0; }
