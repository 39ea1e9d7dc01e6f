/* Internals of src/train shared by its files: the prepared data set, the
 * checkpoint writer, tracking helpers and SVG plots. Not public API. */
#ifndef IMOPS_TRAIN_IMPL_H
#define IMOPS_TRAIN_IMPL_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "imops/core.h"
#include "imops/data.h"
#include "imops/nn.h"
#include "imops/track.h"
#include "imops/train.h"

/* ---- the data set (dataset.c) ---- */
typedef struct {
  char *dir;        /* absolute */
  char *cache_path; /* DATA/.imops/cache-S.bin */
  int img_size, channels, n_classes;
  char **classes;
  float mean[3], std[3];
  char hash[17];        /* content hash, hex */
  int64_t counts[3];    /* images per split */
  int preprocessed;     /* 1 when this call had to preprocess */
} im__train_data_t;

/** Finds DATA's cache at img_size (0: the size of the last preprocess) and its
 * statistics; preprocesses DATA (with the seed and ratios it had, else the
 * defaults) when there is none at that size. */
im_status_t im__train_data_open(const char *dir, int img_size, im_progress_fn progress, void *user,
                                im__train_data_t *out);
void im__train_data_free(im__train_data_t *d);

/* ---- checkpoints (checkpoint.c) ---- */
/** Writes a checkpoint into dir (created): the model state, the optimizer
 * (may be NULL) and the trainer JSON, then the manifest; keeps the previous
 * checkpoint as manifest-prev.json and removes older files. */
im_status_t im__train_ckpt_write(const char *dir, const im_nn_model_t *m, const im_nn_optim_t *opt,
                                 const char *trainer_json, int64_t epoch, int64_t batch, int64_t global_step,
                                 const char *run_id);

/** A checkpoint's trainer state (its trainer JSON), parsed and checked. The
 * strings, and the string options set by im__train_state_parse, point into
 * root. */
typedef struct {
  json_t *root;
  int64_t epoch, batch, global_step, steps_per_epoch;
  double epoch_loss_sum, epoch_seconds, log_loss_sum;
  int64_t epoch_correct, epoch_count, log_correct, log_count;
  double best_val; /* NaN before the first validation */
  int64_t best_epoch, bad_epochs;
  int finished;
  int has_rng; /* model_rng present (older checkpoints have none) */
  im_rng_t rng;
  im_train_epoch_t *hist;
  size_t n_hist;
  const char *data_hash, *run_id, *run_name; /* NULL when absent (data_hash is required) */
} im__train_state_t;

/** Parses the trainer JSON of a checkpoint (len bytes): format and version,
 * counters, history and the model's random stream, and sets the options
 * found in it over *o. Anything missing, of the wrong type or out of range is
 * IM_ERR_FORMAT with a message naming it. Free with im__train_state_free
 * (also after a failure). */
im_status_t im__train_state_parse(const void *data, size_t len, im_train_opts_t *o, im__train_state_t *s);
void im__train_state_free(im__train_state_t *s);

/* ---- tracking (track.c) ---- */
/** Opens the tracking client (im_track_client_open: the workspace store, or REST for http(s)://). */
im_status_t im__train_store_open(const char *uri, im_track_client_t **out);
/** The current user for mlflow.user. */
const char *im__train_user(char *buf, size_t n);
/** Logs bytes as the run's artifact artifact_path ("plots/x.svg"). */
im_status_t im__train_log_bytes(im_track_client_t *c, const char *run_id, const char *artifact_path,
                                const void *data, size_t len);
/** Metric key characters MLflow accepts (others become '_'), into buf. */
const char *im__train_metric_key(char *buf, size_t n, const char *prefix, const char *name);

/* ---- plots (plot.c): small SVG charts ---- */
/** Loss and accuracy per epoch (train and val). */
im_status_t im__train_plot_history(const char *path, const im_train_epoch_t *h, size_t n);
/** A confusion matrix heat map with counts. */
im_status_t im__train_plot_confusion(const char *path, int k, const char *const *classes, const int64_t *cm);

/* ---- evaluation passes (model.c) ---- */
typedef struct {
  double loss_sum;    /* sum over images of the cross-entropy */
  int64_t correct, n;
  int32_t *labels;    /* when collecting (cap > 0): every label and probability row */
  float *probs;
  int64_t cap;
} im__train_eval_acc_t;

/** Runs m in eval mode over one epoch of l (started at batch 0 here),
 * accumulating into acc; progress (may be NULL) gets stage, epoch and
 * steps offset by step0 out of steps_total. */
im_status_t im__train_eval_pass(im_nn_model_t *m, im_loader_t *l, im__train_eval_acc_t *acc, im_train_progress_fn progress,
                                void *user, const char *stage, int64_t epoch, int64_t epochs, int64_t step0,
                                int64_t steps_total, const volatile sig_atomic_t *cancel);

/* ---- options (opts.c) ---- */
/** The options as a JSON object (every field the run depends on). */
json_t *im__train_opts_json(const im_train_opts_t *o);
/** Sets the fields of o found in j (strings point into j, which must outlive o). */
im_status_t im__train_opts_from_json(const json_t *j, im_train_opts_t *o);
/** The options as MLflow params (name/value strings into buf, at most max). */
int im__train_opts_params(const im_train_opts_t *o, im_track_kv_t *kv, char (*buf)[64], int max);

/* ---- misc ---- */
/** "%016llx" of v into hex[17]. */
const char *im__train_hex64(uint64_t v, char hex[17]);
/** Absolute version of a path (it need not exist); im_free. */
char *im__train_abspath(const char *path);

#endif
