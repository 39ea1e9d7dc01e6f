/* Internal contracts of the sweep module: distribution families, the encoded
 * search space the TPE works in, and helpers shared between files. */
#ifndef IMOPS_SWEEP_IMPL_H
#define IMOPS_SWEEP_IMPL_H

#include "imops/sweep.h"
#include "imops/track_sweep.h"

int im__sweep_is_q(im_sweep_dist_t d);
int im__sweep_is_bounded(im_sweep_dist_t d);
int im__sweep_is_normal(im_sweep_dist_t d);
int im__sweep_is_categorical(im_sweep_dist_t d);
/** 1 when the parameter is searched on a log scale. */
int im__sweep_is_log(im_sweep_dist_t d);
/** The parameter's value mapped into [0, 1] (the search space of the TPE and
 * the plots); categoricals give (index + 0.5) / n. */
double im__sweep_encode(const im_sweep_param_t *p, double x);
/** The inverse of encode, with rounding / quantization / clamping applied. */
double im__sweep_decode(const im_sweep_param_t *p, double u);
/** Quantizes as W&B does: round(x / q) * q. */
double im__sweep_quantize(double x, double q);
/** Standard normal CDF and its inverse. */
double im__sweep_phi(double z);
double im__sweep_phi_inv(double p);
/** The value of a flattened name in a JSON object (json_t *), nested or flat; NULL when absent. */
const void *im__sweep_json_lookup(const void *root, const char *name);
/** The GP-EI step (bayes, the default). */
im_status_t im__sweep_gp(const im_sweep_config_t *c, const im_sweep_obs_t *hist, size_t n, uint64_t seed,
                         const im_sweep_bayes_opts_t *o, double *x);
/** The TPE step (bayes with opts.tpe). */
im_status_t im__sweep_tpe(const im_sweep_config_t *c, const im_sweep_obs_t *hist, size_t n, uint64_t seed,
                          const im_sweep_bayes_opts_t *o, double *x);

/* ---- the sweep state (state.c): the embedded store or imops server's endpoints ---- */
struct im_sweep_state {
  im_track_store_t *store; /* embedded: the store (NULL for a server) */
  int own_store;           /* 1: closed with the state */
  im_track_client_t *tc;   /* a server: the REST tracking client (NULL when embedded) */
};
/** An embedded state over a borrowed store (nothing to close). */
static inline im_sweep_state_t im__sweep_state_of(im_track_store_t *s) {
  im_sweep_state_t w = {.store = s, .own_store = 0, .tc = NULL};
  return w;
}
/** Where the trials' runs go: the server's URI or the workspace directory. */
const char *im__sweep_state_where(im_sweep_state_t *s);
IM_NODISCARD im_status_t im__sweep_st_get(im_sweep_state_t *s, const char *sweep_id, im_track_sweep_t **out);
IM_NODISCARD im_status_t im__sweep_st_steps(im_sweep_state_t *s, const char *sweep_id, im_track_sweep_step_t **items,
                                            int64_t *n);
IM_NODISCARD im_status_t im__sweep_st_create(im_sweep_state_t *s, const im_track_sweep_t *in, char **id_out);
IM_NODISCARD im_status_t im__sweep_st_set_state(im_sweep_state_t *s, const char *sweep_id, const char *state);
IM_NODISCARD im_status_t im__sweep_st_claim(im_sweep_state_t *s, const char *sweep_id, const char *agent_id,
                                            int64_t stale_ms, int64_t limit, im_track_sweep_trial_t **out);
IM_NODISCARD im_status_t im__sweep_st_update(im_sweep_state_t *s, const char *sweep_id, int64_t trial,
                                             const char *agent_id, const char *state, const char *run_id,
                                             double objective);
IM_NODISCARD im_status_t im__sweep_st_report(im_sweep_state_t *s, const char *sweep_id, int64_t trial,
                                             const char *agent_id, int64_t step, double value, int *stop);
IM_NODISCARD im_status_t im__sweep_st_agent_start(im_sweep_state_t *s, const char *sweep_id, const char *agent_id,
                                                  const char *host, int64_t pid);
IM_NODISCARD im_status_t im__sweep_st_agent_end(im_sweep_state_t *s, const char *agent_id, const char *state);
/* runs */
IM_NODISCARD im_status_t im__sweep_st_experiment_id(im_sweep_state_t *s, const char *name, char **id);
IM_NODISCARD im_status_t im__sweep_st_run_create(im_sweep_state_t *s, const im_track_run_create_t *rc,
                                                 im_track_run_t **out);
IM_NODISCARD im_status_t im__sweep_st_run_get(im_sweep_state_t *s, const char *run_id, im_track_run_t **out);
IM_NODISCARD im_status_t im__sweep_st_set_tag(im_sweep_state_t *s, const char *run_id, const char *key,
                                              const char *value);
IM_NODISCARD im_status_t im__sweep_st_log_metric(im_sweep_state_t *s, const char *run_id, const char *key, double v,
                                                 int64_t step);
IM_NODISCARD im_status_t im__sweep_st_run_finish(im_sweep_state_t *s, const char *run_id);

/** Where the trial's runs go (for the trainer's own tracking client). */
const char *im__sweep_trial_home(const im_sweep_trial_t *t);
/** Sets a tag on the trial's run (after im_sweep_trial_set_run). */
im_status_t im__sweep_trial_tag(im_sweep_trial_t *t, const char *key, const char *value);

#endif
