/* Pipelines: a YAML file of imops steps (parameters, step commands with
 * {{params.x}} / {{steps.s.outputs.o}} references, after: dependencies,
 * when: conditions, declared outputs and inputs, resources, retries,
 * caching; docs/pipelines.md), validated with file:line:col errors before
 * anything runs; a local DAG runner (child processes, parallel up to N,
 * Kubeflow-style caching, statuses in the tracking store); and a compiler to
 * Kubeflow Pipelines v2 IR YAML.
 *
 *   im_pipeline_t *p;
 *   if (im_pipeline_load_file("pipeline.yaml", &p)) { ... im_last_error(): "pipeline.yaml:12:7: ..." ... }
 *   const char *assign[] = {"mode_hyp_train_test=train"};
 *   im_pipeline_run_opts_t o = {.params = assign, .n_params = 1, .parallel = 2};
 *   im_pipeline_result_t *r;
 *   im_pipeline_run(p, &o, &r);  ... r->status "SUCCEEDED" ...
 *   im_pipeline_result_free(r);
 *   im_pipeline_free(p);
 *
 * Values (parameters, step outputs) cross this API as JSON text: parameters as
 * an object {"name": value} with typed values, outputs as {"step": {"out": "v"}}.
 */
#ifndef IMOPS_PIPELINE_H
#define IMOPS_PIPELINE_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "imops/core.h"
#include "imops/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- the pipeline file ------------------------------------------------------ */
typedef struct im_pipeline im_pipeline_t;

/** Parses and validates a pipeline (len bytes of YAML; name is the file name
 * used in messages). Every problem (unknown keys, types, unknown parameters or
 * steps, cycles, bad conditions or references, defaults outside the allowed
 * values) is IM_ERR_FORMAT with "name:line:col: what" in im_last_error(). */
IM_NODISCARD im_status_t im_pipeline_parse(const char *text, size_t len, const char *name, im_pipeline_t **out);
/** Reads and parses a file (IM_ERR_IO when it cannot be read). */
IM_NODISCARD im_status_t im_pipeline_load_file(const char *path, im_pipeline_t **out);
void im_pipeline_free(im_pipeline_t *p);

const char *im_pipeline_name(const im_pipeline_t *p);
const char *im_pipeline_file(const im_pipeline_t *p);
int im_pipeline_n_steps(const im_pipeline_t *p);
const char *im_pipeline_step_name(const im_pipeline_t *p, int i);
/** Step index by name, -1 when none. */
int im_pipeline_step_index(const im_pipeline_t *p, const char *name);
/** The steps in a dependency order (stable: file order among ready steps). */
const int *im_pipeline_order(const im_pipeline_t *p);
/** Step i's dependencies (after: plus those implied by output references). */
int im_pipeline_step_deps(const im_pipeline_t *p, int i, const int **deps);
/** The whole file as JSON text (stored with each run). */
const char *im_pipeline_spec_json(const im_pipeline_t *p);

/** Resolves the parameter values: defaults, then assignments "name=value"
 * (converted to the parameter's type). Unknown names, values of the wrong type
 * or outside enum, and missing required parameters are IM_ERR_ARG naming the
 * parameter (and where it is declared). *params_json: a JSON object (im_free). */
IM_NODISCARD im_status_t im_pipeline_resolve_params(const im_pipeline_t *p, const char *const *assign, int n,
                                                    char **params_json);

/** Whether step i's when: holds (1 also when it has none). A condition that
 * reads an output of a step that produced none (skipped) is IM_ERR_NOT_FOUND. */
IM_NODISCARD im_status_t im_pipeline_step_when(const im_pipeline_t *p, int i, const char *params_json,
                                               const char *outputs_json, int *holds);
/** Step i's command arguments with references substituted (*argv: n strings
 * and a NULL, each and the array im_free'd by im_pipeline_argv_free). A
 * reference to an output that is missing is IM_ERR_NOT_FOUND. */
IM_NODISCARD im_status_t im_pipeline_step_argv(const im_pipeline_t *p, int i, const char *params_json,
                                               const char *outputs_json, char ***argv, int *n);
void im_pipeline_argv_free(char **argv);

/** Step i's cache key (32 hex digits): a hash of the substituted command
 * line, the values of the parameters it references, the imops version, the
 * content of its declared inputs and the keys of the steps it depends on
 * (dep_keys: one per dependency in im_pipeline_step_deps order, NULL or ""
 * for a skipped one). *details_json (may be NULL): {"argv", "params",
 * "inputs": {path: hash}, "version"} (im_free). */
IM_NODISCARD im_status_t im_pipeline_step_cache_key(const im_pipeline_t *p, int i, const char *params_json,
                                                    const char *outputs_json, const char *const *dep_keys,
                                                    char key[33], char **details_json);

/** Content hash of a file or directory tree (32 hex digits): sorted relative
 * paths and bytes; names starting with '.' are left out, as are paths
 * (relative to path) matching an exclude glob, and with include globs only
 * files matching one of them count. */
IM_NODISCARD im_status_t im_pipeline_hash_path(const char *path, const char *const *include, int n_include,
                                               const char *const *exclude, int n_exclude, char hex[33]);

/** Reads one declared output from a finished step: json_key (a dotted path
 * like "model_version.version") from the JSON that ends its stdout, or from
 * the file at file (a JSON file when json_key is given, else the file's text
 * with its trailing newline removed). *value: a string (numbers and booleans
 * are written as JSON writes them). */
IM_NODISCARD im_status_t im_pipeline_read_output(const char *stdout_text, size_t len, const char *json_key,
                                                 const char *file, char **value);

/* ---- condition expressions ------------------------------------------------- */
/* when: params.mode == 'train' and not (params.n in [1, 2]) or steps.a.outputs.ok != "no"
 * Operators: == != in, not in, and, or, not, parentheses; operands: params.X,
 * steps.S.outputs.O, 'strings' / "strings", numbers, true, false, [lists]; a
 * bare operand is a test of a bool. */
typedef struct im_pipeline_expr im_pipeline_expr_t;
/** Parses an expression; IM_ERR_FORMAT with "column N: what" on a syntax error. */
IM_NODISCARD im_status_t im_pipeline_expr_parse(const char *text, im_pipeline_expr_t **out);
void im_pipeline_expr_free(im_pipeline_expr_t *e);
/** Evaluates against params_json / outputs_json (as above). Comparing values
 * of different kinds is IM_ERR_ARG; a missing value IM_ERR_NOT_FOUND. */
IM_NODISCARD im_status_t im_pipeline_expr_eval(const im_pipeline_expr_t *e, const char *params_json,
                                               const char *outputs_json, int *result);

/* ---- the local runner --------------------------------------------------------- */
typedef enum { IM_PIPELINE_STDOUT = 1, IM_PIPELINE_STDERR = 2 } im_pipeline_stream_t;

typedef struct {
  const char *binary;          /* program the steps run (NULL: /proc/self/exe, i.e. this imops) */
  const char *const *params;   /* "name=value" assignments */
  int n_params;
  int parallel;                /* steps at once (0: 1) */
  int no_cache;                /* run every step even when its cache key matches a success */
  const char *experiment;      /* experiment of the tracked run (NULL: "pipelines") */
  const char *store;           /* workspace (NULL: $IMOPS_HOME, else ./imops-workspace) */
  volatile sig_atomic_t *cancel; /* set (from a signal handler) to stop: children get SIGTERM */
  int grace_seconds;           /* after SIGTERM, SIGKILL after this long (0: 10) */
  /* Called for every line a step writes (without its newline) and for every status change. */
  void (*on_line)(void *user, const char *step, im_pipeline_stream_t stream, const char *line, size_t len);
  void (*on_status)(void *user, const char *step, const char *status, const char *message);
  void *user;
} im_pipeline_run_opts_t;

typedef struct {
  char *name;
  char *status;  /* SUCCEEDED FAILED SKIPPED CACHED CANCELED (PENDING/RUNNING never remain) */
  char *message; /* why skipped / failed / canceled, or where a cached result came from */
  char *cache_key;
  int attempts;
  int exit_code; /* of the last attempt, -1 when none ran; 128+N for signal N */
  int64_t start_time, end_time; /* ms; IM_TRACK_NO_TIME-like INT64_MIN when not run */
  char *outputs_json;           /* {"out": "value"} */
  char *log_path;               /* the step's log artifact (NULL when it did not run) */
} im_pipeline_step_result_t;

typedef struct {
  char *pipeline_run_id;
  char *tracked_run_id; /* the run in the tracking store holding params and logs */
  char *status;         /* SUCCEEDED FAILED CANCELED */
  char *params_json;
  int64_t start_time, end_time;
  int n_steps;
  im_pipeline_step_result_t *steps; /* in file order */
} im_pipeline_result_t;

/** Runs the pipeline. IM_OK when it ran (whatever the outcome: see
 * r->status); an error when it could not start (bad parameters, store). */
IM_NODISCARD im_status_t im_pipeline_run(const im_pipeline_t *p, const im_pipeline_run_opts_t *o,
                                         im_pipeline_result_t **out);
void im_pipeline_result_free(im_pipeline_result_t *r);

/* ---- Kubeflow Pipelines ------------------------------------------------------- */
typedef struct {
  const char *image;      /* container image (NULL: "imops:<version>", as deploy/Dockerfile tags it) */
  const char *binary;     /* imops inside the image (NULL: "/usr/local/bin/imops") */
  const char *pvc;        /* PVC mounted in every step (NULL: "workspace-surface"; "" none) */
  const char *mount_path; /* where (NULL: "/workspace"); it is also the steps' IMOPS_HOME */
} im_pipeline_kfp_opts_t;

/** Appends the KFP v2 IR YAML (PipelineSpec, then a PlatformSpec document
 * with the PVC mounts) to out. */
IM_NODISCARD im_status_t im_pipeline_compile_kfp(const im_pipeline_t *p, const im_pipeline_kfp_opts_t *o,
                                                 im_buf_t *out);

#ifdef __cplusplus
}
#endif
#endif
