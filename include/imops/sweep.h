/* Hyperparameter sweeps: W&B's sweep configuration (method grid / random /
 * bayes, metric, parameters with distributions and nesting, run_cap,
 * hyperband early termination), the searches (grid in order, seeded random,
 * and a multivariate tree-structured Parzen estimator for bayes), hyperband
 * brackets, agents that claim trials from the store (include/imops/track_sweep.h)
 * and run an objective (in-process training, or any callback), results
 * (importance, plots) and the Kubeflow Katib export.
 *
 *   im_sweep_config_t *c;
 *   if (im_sweep_config_load("sweep.yaml", &c)) { ... im_last_error(): "sweep.yaml:4:3: ..." ... }
 *   im_rng_t r; im_rng_seed(&r, 1);
 *   double x[c->n_params];
 *   im_sweep_suggest(c, NULL, 0, 1, x);          // the first trial's point
 *   char *json = im_sweep_point_json(c, x);      // {"lr": 0.01, "optimizer": {"name": "adam"}}
 *
 * A point x has one double per parameter (flattened order): the value for
 * numeric parameters, the index into values for categorical ones, 0 for
 * constants. Objectives are minimized internally: maximize goals are negated.
 */
#ifndef IMOPS_SWEEP_H
#define IMOPS_SWEEP_H

#include <stddef.h>
#include <stdint.h>

#include "imops/core.h"
#include "imops/status.h"
#include "imops/track.h"
#include "imops/track_sweep.h"
#include "imops/train.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum { IM_SWEEP_GRID = 0, IM_SWEEP_RANDOM = 1, IM_SWEEP_BAYES = 2 } im_sweep_method_t;
const char *im_sweep_method_name(im_sweep_method_t m);

typedef enum {
  IM_SWEEP_CONSTANT = 0,
  IM_SWEEP_CATEGORICAL,
  IM_SWEEP_CATEGORICAL_W_PROBABILITIES,
  IM_SWEEP_INT_UNIFORM,
  IM_SWEEP_UNIFORM,
  IM_SWEEP_Q_UNIFORM,
  IM_SWEEP_LOG_UNIFORM_VALUES,
  IM_SWEEP_Q_LOG_UNIFORM_VALUES,
  IM_SWEEP_INV_LOG_UNIFORM_VALUES,
  IM_SWEEP_LOG_UNIFORM,     /* v1: min/max are exponents: exp(U(min, max)) */
  IM_SWEEP_Q_LOG_UNIFORM,   /* v1 */
  IM_SWEEP_INV_LOG_UNIFORM, /* v1: exp(-U(min, max)) */
  IM_SWEEP_NORMAL,
  IM_SWEEP_Q_NORMAL,
  IM_SWEEP_LOG_NORMAL,
  IM_SWEEP_Q_LOG_NORMAL,
  IM_SWEEP_BETA,
  IM_SWEEP_Q_BETA,
  IM_SWEEP_NDIST
} im_sweep_dist_t;
/** W&B's name ("log_uniform_values"); parse gives -1 for an unknown one. */
const char *im_sweep_dist_name(im_sweep_dist_t d);
int im_sweep_dist_parse(const char *s);

typedef struct {
  char *name;          /* nested names flattened with "." ("optimizer.lr") */
  im_sweep_dist_t dist;
  double min, max;     /* bounds (exponents for the v1 log_uniform kinds) */
  double mu, sigma;    /* normal kinds */
  double a, b;         /* beta kinds */
  double q;            /* quantization (q_ kinds) */
  int int_valued;      /* int_uniform, or q kinds whose q is an integer: values are integers */
  size_t n_values;     /* categorical kinds and constant (1) */
  char **values;       /* each value as JSON text */
  double *probs;       /* categorical_w_probabilities */
  int line, col;       /* where the parameter is in the config */
} im_sweep_param_t;

typedef struct {
  im_sweep_method_t method;
  char *metric_name;   /* NULL when no metric */
  int maximize;        /* goal: maximize */
  int has_target;
  double target;       /* the sweep finishes once a trial reaches it */
  size_t n_params;
  im_sweep_param_t *params;
  int64_t run_cap;     /* 0: none */
  /* early_terminate: hyperband */
  int hyperband;
  int64_t hb_min_iter, hb_max_iter, hb_s; /* min_iter, or max_iter and s */
  double hb_eta;       /* default 3 */
  int hb_strict;       /* default 1 */
  char *program, *name, *description;
  size_t n_command;
  char **command;
  char *json;          /* the whole config as JSON text (what the store keeps) */
  char *source;        /* file name used in messages */
} im_sweep_config_t;

/** Parses and validates a W&B sweep config (YAML or JSON text). Errors are
 * IM_ERR_ARG (IM_ERR_FORMAT for bad YAML) naming "name:line:col" and the key. */
IM_NODISCARD im_status_t im_sweep_config_parse(const char *text, size_t len, const char *name, im_sweep_config_t **out);
IM_NODISCARD im_status_t im_sweep_config_load(const char *path, im_sweep_config_t **out);
void im_sweep_config_free(im_sweep_config_t *c);
/** Index of a parameter by flattened name, -1 when absent. */
int im_sweep_config_find(const im_sweep_config_t *c, const char *name);

/* ---- distributions and points ------------------------------------------------ */
/** One draw of parameter p (its value; the index for categorical kinds). */
double im_sweep_param_sample(const im_sweep_param_t *p, im_rng_t *r);
/** 1 for parameters the search varies (not constants). */
int im_sweep_param_searchable(const im_sweep_param_t *p);
/** The point as the run config: a JSON object, nested parameters as nested
 * objects; integers printed as integers (im_free). NULL when out of memory. */
char *im_sweep_point_json(const im_sweep_config_t *c, const double *x);
/** The point back from such JSON (nested or flattened names). IM_ERR_FORMAT
 * when a parameter is missing or its value is not one of the choices. */
IM_NODISCARD im_status_t im_sweep_point_parse(const im_sweep_config_t *c, const char *json, double *x);

/** The value of parameter name (flattened, "optimizer.lr") in a run-config
 * JSON object (nested or flat), as JSON text (im_free); NULL when absent. */
char *im_sweep_params_value(const char *params_json, const char *name);

/* ---- searches --------------------------------------------------------------------- */
/** Number of grid points (product of every parameter's choices). Parameters
 * that cannot be enumerated (continuous, unquantized) are IM_ERR_ARG naming them. */
IM_NODISCARD im_status_t im_sweep_grid_count(const im_sweep_config_t *c, int64_t *count);
/** The idx-th grid point in order (the last parameter varies fastest). */
IM_NODISCARD im_status_t im_sweep_grid_point(const im_sweep_config_t *c, int64_t idx, double *x);

/** A past trial for the searches. */
typedef struct {
  const double *x;  /* its point (NULL: unknown, ignored) */
  double y;         /* objective as reported (not negated); NaN when none (running, failed) */
  int done;         /* 1 when finished (or pruned: y is its last value) */
} im_sweep_obs_t;

/** The bayes search: a Gaussian process (Matern 5/2, automatic relevance
 * determination, hyperparameters by marginal likelihood) with expected
 * improvement over the encoded space (numeric parameters through their CDF /
 * log scale into [0, 1], categoricals one-hot), or, with tpe = 1, a
 * multivariate tree-structured Parzen estimator (Optuna's algorithm). */
typedef struct {
  int tpe;           /* 1: the TPE instead of the GP */
  int n_startup;     /* random trials before the model (0: GP 4, TPE 5) */
  int n_candidates;  /* TPE: candidates drawn from l(x) (0: 64); GP: random candidates (0: 2000) */
  double prior_weight; /* 0: 1 */
  int univariate;    /* 1: independent per parameter (Optuna 4's default TPE) */
  double gamma;      /* fraction of completed trials that are "good" (0: 0.1; at most 25 trials) */
} im_sweep_bayes_opts_t;

/** The next point (trial number n+1) given n past trials: grid: the n-th grid
 * point (IM_ERR_NOT_FOUND when exhausted); random: independent draws from a
 * stream derived from (seed, n); bayes: the GP or the TPE (opts NULL: the GP
 * with defaults). The same
 * inputs always give the same point. */
IM_NODISCARD im_status_t im_sweep_suggest_ex(const im_sweep_config_t *c, const im_sweep_obs_t *hist, size_t n,
                                             uint64_t seed, const im_sweep_bayes_opts_t *opts, double *x);
IM_NODISCARD im_status_t im_sweep_suggest(const im_sweep_config_t *c, const im_sweep_obs_t *hist, size_t n,
                                          uint64_t seed, double *x);

/* ---- hyperband ---------------------------------------------------------------------- */
/** W&B's bands (iteration counts where trials are compared) for the config's
 * early_terminate: min_iter * eta^k (up to max_bands), or int(max_iter / eta^k)
 * for k = 1..s while >= 1, ascending. *n gets the count (<= cap). */
void im_sweep_hyperband_bands(const im_sweep_config_t *c, int64_t *bands, size_t cap, size_t *n);
/** Whether a running trial should stop: hist[i] (len[i] values, in reporting
 * order, raw metric) for every trial including it (index self). W&B's rule:
 * at the trial's last reached band b, threshold = sorted(values at b of the
 * trials with >= b values)[floor(count / eta)] (negated when maximizing);
 * strict: compare the value at b, else the best so far. */
int im_sweep_hyperband_stop(const im_sweep_config_t *c, const double *const *hist, const size_t *len, size_t ntrials,
                            size_t self);
/** One bracket of Li et al.'s Hyperband (R, eta): s, and per rung i: n_i configs at r_i resources. */
typedef struct {
  int s;
  int rungs;
  int64_t n[16];
  double r[16];
} im_sweep_bracket_t;
/** The brackets s = s_max..0 for maximum resource R and eta (*n gets s_max + 1, at most cap). */
void im_sweep_hyperband_schedule(double R, double eta, im_sweep_bracket_t *out, size_t cap, size_t *n);

/* ---- sweeps in the store and agents -------------------------------------------- */
/** Where a sweep's state lives: the embedded store (a workspace directory or
 * .db path, NULL: $IMOPS_HOME or ./imops-workspace), or `imops server` at
 * http(s)://host:port (its /api/2.0/imops/sweeps endpoints; the runs through
 * the REST tracking client, MLFLOW_TRACKING_TOKEN for writes). The same calls
 * work on both, so agents on several machines share one sweep through a
 * server. One thread at a time per handle. */
typedef struct im_sweep_state im_sweep_state_t;
IM_NODISCARD im_status_t im_sweep_state_open(const char *where, im_sweep_state_t **out);
void im_sweep_state_close(im_sweep_state_t *s);
/** 1 when the state is a tracking server's. */
int im_sweep_state_is_remote(const im_sweep_state_t *s);
/** Every sweep, newest first. */
IM_NODISCARD im_status_t im_sweep_state_sweeps(im_sweep_state_t *s, im_track_sweep_t **items, int64_t *n);
/** The sweep's trials in trial order. */
IM_NODISCARD im_status_t im_sweep_state_trials(im_sweep_state_t *s, const char *sweep_id, im_track_sweep_trial_t **items,
                                               int64_t *n);

typedef struct {
  const char *experiment; /* NULL: "Default" */
  const char *data_dir;   /* the training data (trials of the training objective) */
  uint64_t seed;          /* search seed (0: 1) */
  int64_t max_trials;     /* 0: run_cap (or none) */
  const char *name;       /* NULL: the config's name, or "sweep" */
} im_sweep_create_opts_t;

/** Creates the sweep in the store and its parent run (tags imops.sweep_id,
 * imops.sweep_role=parent) in the experiment; *sweep_id (im_free). */
IM_NODISCARD im_status_t im_sweep_create(im_track_store_t *s, const im_sweep_config_t *c,
                                         const im_sweep_create_opts_t *o, char **sweep_id);
IM_NODISCARD im_status_t im_sweep_state_create(im_sweep_state_t *s, const im_sweep_config_t *c,
                                               const im_sweep_create_opts_t *o, char **sweep_id);

/** What the store says about a sweep, parsed. */
typedef struct {
  char *sweep_id, *name, *state, *experiment_id, *parent_run_id, *data_dir;
  uint64_t seed;
  int64_t max_trials;
  im_sweep_config_t *config;
} im_sweep_info_t;
IM_NODISCARD im_status_t im_sweep_info(im_track_store_t *s, const char *sweep_id, im_sweep_info_t **out);
IM_NODISCARD im_status_t im_sweep_state_info(im_sweep_state_t *s, const char *sweep_id, im_sweep_info_t **out);
void im_sweep_info_free(im_sweep_info_t *w);

typedef struct im_sweep_trial im_sweep_trial_t;
/** The trial's number (1-based), point, params JSON, sweep. */
int64_t im_sweep_trial_number(const im_sweep_trial_t *t);
const double *im_sweep_trial_x(const im_sweep_trial_t *t);
const char *im_sweep_trial_params(const im_sweep_trial_t *t);
const im_sweep_info_t *im_sweep_trial_sweep(const im_sweep_trial_t *t);
/** Reports the step-th (1-based) intermediate value of the metric; *stop
 * (may be NULL) is set to 1 when hyperband says the trial should end: the
 * objective then stops and calls im_sweep_trial_prune (not after its last
 * step, when there is nothing left to save). */
IM_NODISCARD im_status_t im_sweep_trial_report(im_sweep_trial_t *t, int64_t step, double value, int *stop);
/** Records the trial's tracked run (also tags it with the sweep). */
IM_NODISCARD im_status_t im_sweep_trial_set_run(im_sweep_trial_t *t, const char *run_id);
/** Marks the trial pruned (its result is its last reported value). */
void im_sweep_trial_prune(im_sweep_trial_t *t);

/** Runs one trial: *value gets the metric (raw, not negated). A failure marks
 * the trial FAILED and the agent goes on. */
typedef im_status_t (*im_sweep_objective_fn)(void *user, im_sweep_trial_t *t, double *value);

/** What an agent tells its caller as trials start and end. */
typedef struct {
  const char *sweep_id;
  int64_t trial;
  const char *params;   /* JSON */
  const char *state;    /* RUNNING at the start; FINISHED, PRUNED, FAILED at the end */
  double value;         /* NaN unless ended with a value */
  const char *run_id;   /* NULL when none */
  const char *error;    /* FAILED: why */
} im_sweep_event_t;

typedef struct {
  const char *tracking_home; /* the store (NULL: default workspace), or http(s)://host:port of `imops server`:
                                the sweep state then goes through its /api/2.0/imops/sweeps endpoints
                                and the trials' runs through the REST tracking client */
  const char *sweep_id;
  const char *agent_id;      /* NULL: generated */
  int64_t count;             /* trials this agent runs at most (0: until the sweep is done) */
  int64_t limit;             /* the sweep's trial total this agent may fill to (0: the sweep's max_trials) */
  int64_t stale_ms;          /* a trial whose heartbeat is older is failed by the next claim (0: 30 minutes) */
  im_sweep_objective_fn objective; /* NULL: im_sweep_train_objective */
  void *objective_user;
  void (*on_event)(void *user, const im_sweep_event_t *e);
  void *user;
  const volatile int *cancel; /* stop claiming when it becomes non-zero */
} im_sweep_agent_opts_t;
/** Claims the sweep's next trial for agent_id in the store's write
 * transaction, the search (the sweep's method over every trial so far)
 * running inside it; stale_ms and limit as im_track_sweep_claim (stale_ms 0:
 * 30 minutes). *out NULL: the sweep is done. What `imops server`'s claim
 * endpoint and the embedded agent both call. */
IM_NODISCARD im_status_t im_sweep_claim(im_track_store_t *s, const char *sweep_id, const char *agent_id,
                                        int64_t stale_ms, int64_t limit, im_track_sweep_trial_t **out);
/** Records a trial's step-th intermediate value and agent_id's heartbeat;
 * *stop gets hyperband's verdict (1: prune the trial). */
IM_NODISCARD im_status_t im_sweep_step(im_track_store_t *s, const char *sweep_id, int64_t trial, const char *agent_id,
                                       int64_t step, double value, int *stop);
/** Claims and runs trials until count, the sweep's end (cap, grid exhausted,
 * target reached) or cancel; *ran (may be NULL) gets how many it ran. */
IM_NODISCARD im_status_t im_sweep_agent_run(const im_sweep_agent_opts_t *o, int64_t *ran);

/* ---- the training objective ------------------------------------------------------ */
/** The parameter names a training trial understands (NULL-terminated list). */
const char *const *im_sweep_train_param_names(void);
/** IM_ERR_ARG naming the first parameter training does not understand, and
 * a metric other than train/val loss/accuracy. */
IM_NODISCARD im_status_t im_sweep_check_train(const im_sweep_config_t *c);
/** Sets the trainer options that params_json (a trial's parameters) names;
 * a "model" parameter goes to *model (im_free; leave it NULL before the call).
 * IM_ERR_ARG for a value training cannot take. */
IM_NODISCARD im_status_t im_sweep_train_apply(const im_sweep_config_t *c, const char *params_json, im_train_opts_t *o,
                                              char **model);
/** Options for the training objective (objective_user of the agent). */
typedef struct {
  const char *device;  /* NULL: cpu */
  int threads;         /* 0: default */
  void (*on_epoch)(void *user, int64_t trial, int64_t epoch, double value);
  void *user;
} im_sweep_train_opts_t;
/** Trains in-process (im_train_run) with the trial's parameters on the
 * sweep's data, as a child run of the sweep's parent run; reports the metric
 * per epoch and stops pruned trials after the epoch. user: im_sweep_train_opts_t* or NULL. */
im_status_t im_sweep_train_objective(void *user, im_sweep_trial_t *t, double *value);

/* ---- results ------------------------------------------------------------------------------ */
typedef struct {
  char *name;
  double correlation;      /* Pearson of the (encoded) value with the metric */
  double rank_correlation; /* Spearman */
  double importance;       /* |Spearman| normalized over parameters to sum 1 */
} im_sweep_importance_t;
/** Per searchable parameter, from the trials with a value (log-scale
 * parameters in log space, categoricals by their mean metric rank). */
IM_NODISCARD im_status_t im_sweep_importance(const im_sweep_config_t *c, const double *const *xs, const double *ys,
                                             size_t n, im_sweep_importance_t **out, size_t *nout);
void im_sweep_importance_free(im_sweep_importance_t *v, size_t n);
/** SVGs: metric per trial with the best-so-far line; parallel coordinates. */
IM_NODISCARD im_status_t im_sweep_plot_metric(const char *path, const im_sweep_config_t *c, const int64_t *trials,
                                              const double *ys, size_t n);
IM_NODISCARD im_status_t im_sweep_plot_parallel(const char *path, const im_sweep_config_t *c, const double *const *xs,
                                                const double *ys, size_t n);

/** A sweep's state and results from the store. */
typedef struct {
  im_sweep_info_t *info;
  int64_t n;                          /* trials */
  int64_t *numbers;                   /* n: trial numbers */
  char **states;                      /* n: trial states */
  char **params;                      /* n: parameters JSON */
  char **run_ids;                     /* n: run ids (NULL when none) */
  double *values;                     /* n: metric (NaN when none) */
  int64_t *steps;                     /* n: intermediate values reported (epochs trained) */
  double *xs;                         /* n x n_params points (NaN rows when unparsable) */
  int64_t best;                       /* index of the best FINISHED (or PRUNED) trial with a value, -1 when none */
  int64_t n_finished, n_pruned, n_failed, n_running;
  im_sweep_importance_t *importance;  /* from the trials with values */
  size_t n_importance;
} im_sweep_summary_t;
IM_NODISCARD im_status_t im_sweep_summary(im_track_store_t *s, const char *sweep_id, im_sweep_summary_t **out);
IM_NODISCARD im_status_t im_sweep_state_summary(im_sweep_state_t *s, const char *sweep_id, im_sweep_summary_t **out);
void im_sweep_summary_free(im_sweep_summary_t *r);
/** Writes the plots (plots/sweep_metric.svg, plots/parallel_coordinates.svg)
 * and summary.json into the parent run's artifacts, logs best_<metric> and
 * the best trial's parameters (as best.<name> tags) to it; when no trial is
 * running and the sweep cannot go on (cap reached, grid exhausted), marks the
 * sweep and its parent run FINISHED. *plots_dir (may be NULL) gets the
 * directory (im_free). */
IM_NODISCARD im_status_t im_sweep_finalize(im_track_store_t *s, const char *sweep_id, char **plots_dir);
/** The same through a sweep state: for a server's, the plots are written to a
 * temporary directory and uploaded to the parent run (*plots_dir gets their
 * artifact URI). */
IM_NODISCARD im_status_t im_sweep_state_finalize(im_sweep_state_t *s, const char *sweep_id, char **plots_dir);

/** A Kubeflow Katib Experiment (kubeflow.org/v1beta1) for the sweep as YAML into b. */
typedef struct {
  const char *name;       /* metadata.name (NULL: config name or "imops-sweep") */
  const char *namespace_; /* NULL: kubeflow */
  const char *image;      /* NULL: ghcr.io/imops/imops:latest */
  const char *data_dir;   /* --data in the trial command (NULL: /data) */
  int parallel;           /* parallelTrialCount (0: 3) */
  int64_t max_trials;     /* 0: run_cap or 12 */
} im_sweep_katib_opts_t;
IM_NODISCARD im_status_t im_sweep_katib_yaml(const im_sweep_config_t *c, const im_sweep_katib_opts_t *o, im_buf_t *b);

#ifdef __cplusplus
}
#endif
#endif
