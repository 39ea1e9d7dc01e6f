/* Internal contracts of the sweep module: distribution families, the encoded
 * search space the TPE works in, and helpers shared between files. */
#ifndef IMOPS_SWEEP_IMPL_H
#define IMOPS_SWEEP_IMPL_H

#include "imops/sweep.h"

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

/** The trial's store workspace (for the trainer's own handle). */
const char *im__sweep_trial_home(const im_sweep_trial_t *t);
/** Sets a tag on the trial's run (after im_sweep_trial_set_run). */
im_status_t im__sweep_trial_tag(im_sweep_trial_t *t, const char *key, const char *value);

#endif
