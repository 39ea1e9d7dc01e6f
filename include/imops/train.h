/* Training, evaluation and local inference: the train loop over the loader
 * (src/data) and the model (src/nn), learning-rate schedules per epoch or per
 * step, checkpoints that survive kill -9 and resume bit for bit, the final
 * model bundle, evaluation metrics (confusion matrix, precision / recall / F1,
 * ROC AUC) and prediction on image files. Runs are tracked in the workspace
 * store (src/track) unless told not to. The library never prints: progress
 * and per-epoch results come through callbacks.
 *
 *   im_train_opts_t o = im_train_defaults();
 *   o.data_dir = "data/surface"; o.model = "surfacenet"; o.img_size = 64; o.epochs = 3;
 *   im_train_result_t *r;
 *   if (im_train_run(&o, &r) != IM_OK) { ... im_last_error() ... }
 *   printf("%s %.4f\n", r->model_dir, r->best_val_accuracy);
 *   im_train_result_free(r);
 *
 * The output directory (opts.output):
 *   last/    the latest checkpoint: written at the end of every epoch, every
 *            checkpoint_every steps / checkpoint_seconds, and on cancel
 *   best/    the checkpoint of the epoch with the best validation accuracy
 *   model/   the final model bundle (model.json, model.safetensors, MLmodel)
 * A checkpoint directory holds state-N.safetensors (the model's state_dict),
 * optim-N.safetensors (the optimizer's buffers), trainer-N.json (epoch, step,
 * the loader position, metric history, best so far, options, run id) and
 * manifest.json, written LAST and atomically, naming those files with their
 * sizes and hashes. The previous checkpoint stays beside it (manifest-prev.json)
 * until the next one is whole, so a reader always finds a whole checkpoint: the
 * current one, or the one before if the current is damaged.
 *
 * Determinism: the same options, seed, backend and thread count give bitwise
 * identical weights, and a run resumed from any checkpoint ends with the same
 * weights as an uninterrupted one (the loader restarts at the exact batch; the
 * optimizer, BN statistics, schedule and running sums are restored), also
 * with dropout / stochastic depth: the state of the model's random stream
 * (im_nn_rng_get) is part of the trainer state.
 *
 * Accuracies are fractions in [0, 1] everywhere in this API and in the store;
 * the CLI shows percentages.
 */
#ifndef IMOPS_TRAIN_H
#define IMOPS_TRAIN_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "imops/data.h"
#include "imops/image.h"
#include "imops/nn.h"
#include "imops/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- devices ----------------------------------------------------------------- */
/** Makes the backend for a --device string: "cpu" (the oneDNN backend; the
 * reference one if it cannot start, with a warning through im_log), "ref"
 * (the reference kernels). GPU ids ("0", "0,1,2,3", "cuda", "cuda:0", "gpu")
 * are IM_ERR_UNSUPPORTED with a message that says no GPU backend exists yet;
 * anything else is IM_ERR_ARG. NULL or "" mean "cpu". */
IM_NODISCARD im_status_t im_train_backend_new(const char *device, im_backend_t **out);

/* ---- options ------------------------------------------------------------------ */
typedef enum {
  IM_TRAIN_SCHED_NONE = 0,        /* constant learning rate */
  IM_TRAIN_SCHED_COSINE = 1,      /* cosine per epoch from lr to eta_min over t_max epochs (the seed's) */
  IM_TRAIN_SCHED_COSINE_STEP = 2, /* cosine per step from lr to eta_min over every step of the run */
  IM_TRAIN_SCHED_STEP = 3,        /* lr * gamma^floor(epoch / step_size) */
} im_train_sched_kind_t;

/** "none", "cosine", "cosine-step", "step"; parse gives -1 for an unknown name. */
const char *im_train_sched_name(im_train_sched_kind_t k);
int im_train_sched_parse(const char *s);
/** "sgd", "adam", "adamw"; parse gives -1 for an unknown name. */
const char *im_train_optim_name(im_nn_optim_kind_t k);
int im_train_optim_parse(const char *s);

/** What a progress callback is told, once per batch of a pass. */
typedef struct {
  const char *stage;   /* "train" or "val" */
  int64_t epoch;       /* 1-based */
  int64_t epochs;
  int64_t step, steps; /* batches done in this pass (1..steps), batches in the pass */
  int64_t global_step; /* optimizer steps taken in the whole run */
  double loss;         /* running mean loss of the pass so far */
  double accuracy;     /* running accuracy of the pass so far (fraction) */
  double lr;           /* the learning rate of the last step (train) */
} im_train_progress_t;
typedef void (*im_train_progress_fn)(void *user, const im_train_progress_t *p);

/** One epoch's results (val_* are NaN when the data has no validation split). */
typedef struct {
  int64_t epoch; /* 1-based */
  double train_loss, train_accuracy, val_loss, val_accuracy;
  double lr;                /* the learning rate at the epoch's last step */
  double epoch_seconds;     /* the train pass, wall clock (accumulated across a resume) */
  double images_per_second; /* train images / epoch_seconds */
  double val_seconds;
} im_train_epoch_t;
typedef void (*im_train_epoch_fn)(void *user, const im_train_epoch_t *e, int improved);

typedef struct {
  /* data and model */
  const char *data_dir; /* an ImageFolder; preprocessed at img_size if it is not yet (DATA/.imops/) */
  const char *model;    /* architecture name (im_nn_arch_name); "surfacenet" by default */
  int img_size;         /* 0: the size DATA was last preprocessed at */
  float width;          /* model channel multiplier (0: 1) */
  float dropout;        /* dropout before the final Linear, in [0, 1) (0: none) */
  float drop_path;      /* convnext stochastic depth rate of the last block, in [0, 1) (0: none) */
  int init_torch;       /* 1: conv weights as PyTorch's default for a plain nn.Conv2d (kaiming_uniform_(a=sqrt 5),
                           U(+-1/sqrt(fan_in))) instead of the architecture's (torchvision ResNet's kaiming_normal_
                           fan_out); 0: the architecture's */
  int64_t epochs;       /* >= 1 */
  int batch_size;       /* >= 1 */
  /* optimizer */
  im_nn_optim_kind_t optimizer;
  double lr, momentum, weight_decay;
  int nesterov;
  /* schedule */
  im_train_sched_kind_t scheduler;
  int64_t t_max;        /* cosine: epochs of the cosine (0: epochs - warmup) */
  double eta_min;       /* cosine: the final lr (< 0: 1e-6 for cosine, 0 for cosine-step) */
  int64_t step_size;    /* step: epochs per decay (>= 1) */
  double gamma;         /* step: decay factor */
  double warmup_epochs; /* linear warm-up from lr * warmup_start (epochs; fractions with cosine-step) */
  double warmup_start;  /* start factor of the warm-up, in [0, 1] */
  /* loss, regularization, augmentation */
  double label_smoothing;
  double grad_clip;     /* clip the gradients' global L2 norm to this (0: no clipping) */
  int hflip;            /* random horizontal flip */
  int crop_pad;         /* random crop after zero padding by this many pixels (0: none) */
  uint64_t seed;        /* weights, shuffling, augmentation */
  /* run control */
  const char *device;   /* "cpu" (default), "ref"; GPU ids are IM_ERR_UNSUPPORTED for now */
  int threads;          /* > 0: sets IMOPS_NUM_THREADS for this process before the backend starts */
  const char *output;   /* checkpoint + model directory (NULL: <workspace>/checkpoints/<run name>) */
  const char *resume;   /* a checkpoint directory (or an output directory with last/) to continue: the
                           options then come from the checkpoint, except device, threads, callbacks, cancel,
                           max_steps, track, tracking_home, checkpoint_every/_seconds, and epochs when > 0
                           (im_train_defaults sets 10: set 0 to keep the checkpoint's) */
  int early_stopping;   /* stop after this many epochs without a better validation accuracy (0: off) */
  int64_t checkpoint_every;  /* also checkpoint every N steps (0: off) */
  double checkpoint_seconds; /* also checkpoint when this many seconds passed since the last (0: off) */
  int final_weights_last;    /* the bundle gets the last epoch's weights (default: the best epoch's) */
  int64_t max_steps;    /* stop (as on cancel: checkpoint, status KILLED) after this many steps in all (0: none) */
  const volatile sig_atomic_t *cancel; /* when it becomes non-zero: checkpoint, mark the run KILLED, IM_ERR_CANCELLED */
  /* tracking */
  int track;                /* log to the tracking store (default 1) */
  const char *tracking_home;/* the store: a workspace directory or .db path (NULL: $IMOPS_HOME or ./imops-workspace) */
  const char *experiment;   /* experiment name (NULL: "Default"; created when missing) */
  const char *run_name;     /* NULL: generated by the store */
  int64_t log_every;        /* per-step metrics every N steps (0: 50) */
  /* callbacks (called on the calling thread) */
  im_train_progress_fn progress;
  im_train_epoch_fn on_epoch;
  im_progress_fn prep_progress; /* preprocessing progress when DATA needs it */
  void *user;
  /* set by sweeps (zero: none) */
  const char *parent_run_id;    /* the new run gets tag mlflow.parentRunId */
  const char *const *run_tags;  /* more tags for the new run: key, value, key, value, ..., NULL (at most 16 pairs) */
  const volatile int *stop;     /* when on_epoch sets it non-zero: end after that epoch as early stopping does */
} im_train_opts_t;

/** The defaults: surfacenet, 10 epochs, batch 64, SGD lr 0.05 momentum 0.9
 * weight decay 5e-4, cosine per epoch to 1e-6, hflip, seed 42, device cpu,
 * checkpoints every epoch and every 60 s, tracking on. */
im_train_opts_t im_train_defaults(void);

typedef struct {
  char *run_id;         /* NULL when not tracked */
  char *run_name;
  char *experiment_id;
  char *output_dir, *model_dir, *last_dir, *best_dir;
  char *data_hash;      /* the data set's content hash (hex) */
  int64_t epochs_done;  /* epochs completed (fewer than asked after early stopping or a cancel) */
  int64_t global_step;
  int stopped_early;
  int resumed;          /* 1 when continued from a checkpoint */
  int has_val;
  double best_val_accuracy; /* NaN without validation */
  int64_t best_epoch;       /* 1-based, 0 when none */
  int64_t n_train, n_val;   /* images */
  int64_t params;           /* trainable parameter elements */
  const char *backend;      /* "cpu" or "ref" (static storage) */
  int threads;
  double seconds;           /* wall clock of this call */
  size_t n_epochs;
  im_train_epoch_t *history; /* every epoch so far, including those before a resume */
} im_train_result_t;
void im_train_result_free(im_train_result_t *r);

/** Trains as opts says; *out (may be NULL) gets the result, also on
 * IM_ERR_CANCELLED (after the checkpoint was written). A failure after the
 * run was created marks it FAILED, a cancel KILLED. */
IM_NODISCARD im_status_t im_train_run(const im_train_opts_t *opts, im_train_result_t **out);

/* ---- checkpoints ----------------------------------------------------------------- */
typedef struct {
  int64_t seq;          /* the checkpoint's number in its directory */
  int64_t epoch;        /* epochs completed */
  int64_t batch;        /* batches done in the epoch in progress */
  int64_t global_step;
  char *run_id;         /* NULL when not tracked */
  char *trainer_path, *state_path, *optim_path; /* the files (absolute) */
  int from_previous;    /* 1 when the current manifest was damaged and the previous checkpoint is used */
} im_train_checkpoint_t;
/** Finds and verifies the checkpoint in dir (dir/manifest.json, or dir/last/manifest.json):
 * every file named must exist with its size and hash. Falls back to the
 * previous checkpoint (from_previous = 1) when the current is damaged; when
 * neither is whole: IM_ERR_FORMAT naming the damaged file (IM_ERR_NOT_FOUND
 * when there is no checkpoint at all). Free with im_train_checkpoint_free. */
IM_NODISCARD im_status_t im_train_checkpoint_open(const char *dir, im_train_checkpoint_t **out);
void im_train_checkpoint_free(im_train_checkpoint_t *c);

/* ---- models: open by URI, evaluate, predict ----------------------------------------- */
typedef struct im_train_model im_train_model_t;

/** Opens a model bundle named by a plain directory, file:///dir,
 * runs:/<run_id>/model, models:/<name>/<version|stage|latest> or
 * models:/<name>@<alias> (the last three through the store at tracking_home,
 * NULL: the default workspace). device as im_train_backend_new. */
IM_NODISCARD im_status_t im_train_model_open(const char *uri, const char *device, const char *tracking_home,
                                             im_train_model_t **out);
void im_train_model_close(im_train_model_t *m);
/** The bundle's metadata (classes, img size, mean/std). */
const im_nn_bundle_meta_t *im_train_model_meta(const im_train_model_t *m);
/** The model's network: the folded inference graph of the bundle (im_nn_model_fold:
 * batch norm folded, ReLU fused), ready for im_nn_plan(nn, NULL, batch, h, w, 0),
 * im_nn_forward (eval) and im_nn_predict; it cannot be trained or saved. */
im_nn_model_t *im_train_model_nn(im_train_model_t *m);
/** Decodes an image file as im_train_predict_file and writes both the logits and the
 * class probabilities (num_classes floats each; either may be NULL). */
IM_NODISCARD im_status_t im_train_predict_file_logits(im_train_model_t *m, const char *path, float *logits,
                                                      float *probs);
/** Called by im_train_predict_files for file i, in order: st IM_OK with its logits and class
 * probabilities (num_classes floats each), or the file's error (im_last_error() holds its text
 * during the call; logits and probs are NULL). */
typedef void (*im_train_predict_fn)(void *user, int64_t i, im_status_t st, const float *logits, const float *probs);
/** Classifies n image files as im_train_predict_file_logits does, in batches of up to 64: each
 * batch's files are decoded and preprocessed on all threads, then go through one forward (on a
 * network that takes batch lanes, src/nn/lanes.c, an image's logits are those of a single-image
 * plan on one thread). each() sees every file in order. Returns IM_OK once every file has been
 * seen (a file that fails to decode is that file's error), or the error that stopped the whole
 * (out of memory, the forward), after which no file is reported. */
IM_NODISCARD im_status_t im_train_predict_files(im_train_model_t *m, const char *const *paths, int64_t n,
                                                im_train_predict_fn each, void *user);
/** The bundle directory, and the run it came from (runs:/, models:/ or the
 * MLmodel's run_id; NULL when unknown). */
const char *im_train_model_dir(const im_train_model_t *m);
const char *im_train_model_run_id(const im_train_model_t *m);
int im_train_model_num_classes(const im_train_model_t *m);
/** The class name (or its number as text when the bundle has none); static per model. */
const char *im_train_model_class(const im_train_model_t *m, int k);

/** Evaluation results. Per-class arrays have n_classes entries; confusion is
 * n_classes x n_classes, row = true class, column = predicted. */
typedef struct {
  int n_classes;
  char **classes;
  int64_t n;
  double loss;      /* mean cross-entropy (no label smoothing) */
  double accuracy;
  double *precision, *recall, *f1; /* 0 where undefined (no predictions / no samples), as sklearn's zero_division=0 */
  int64_t *support;                /* true samples per class */
  double macro_precision, macro_recall, macro_f1, weighted_f1;
  int64_t *confusion;
  double roc_auc;   /* two classes: AUC of class 1's probability; NaN otherwise */
  double seconds;
  char data_hash[17]; /* im_train_evaluate: the data set's content hash (hex) */
  char split[8];      /* im_train_evaluate: the split evaluated */
} im_train_metrics_t;
void im_train_metrics_free(im_train_metrics_t *m);

/** Metrics of n predictions: labels (n values in [0, k)) against probs
 * (n x k, each row a distribution). classes may be NULL. */
IM_NODISCARD im_status_t im_train_metrics_compute(int k, const char *const *classes, int64_t n,
                                                  const int32_t *labels, const float *probs,
                                                  im_train_metrics_t **out);
/** Area under the ROC curve for binary labels (0/1) and scores, by ranks
 * (Mann-Whitney U), ties counted half. NaN when one class is absent. */
double im_train_roc_auc(int64_t n, const int32_t *labels, const double *scores);

typedef struct {
  const char *data_dir; /* an ImageFolder; preprocessed at the model's size when needed */
  const char *split;    /* "test" (NULL), "val", "train", or "all" (every usable image) */
  int batch_size;       /* 0: 256 */
  im_train_progress_fn progress; /* stage "test" */
  im_progress_fn prep_progress;
  void *user;
} im_train_eval_opts_t;

/** Evaluates m on a split of data_dir: the data must have the model's classes
 * (same names in the same order) and channels. Images are normalized with the
 * model's mean/std. */
IM_NODISCARD im_status_t im_train_evaluate(im_train_model_t *m, const im_train_eval_opts_t *o,
                                           im_train_metrics_t **out);

/** Turns a decoded image into the model's input, exactly as training saw it:
 * channels converted, resized to the model's size with preprocess's bilinear
 * resize, normalized; dst holds C x H x W floats. */
IM_NODISCARD im_status_t im_train_model_input(const im_train_model_t *m, const im_image_t *img, float *dst);
/** Decodes an image file (with preprocess's DCT scaling), and writes the class
 * probabilities (num_classes floats) to probs. */
IM_NODISCARD im_status_t im_train_predict_file(im_train_model_t *m, const char *path, float *probs);

/** Logs an evaluation to the tracking store (tracking_home NULL: the default
 * workspace): to the model's run when it came from one (metrics
 * test_loss, test_accuracy, test_macro_f1, test_roc_auc, per class
 * test_precision_<class> / test_recall_<class> / test_f1_<class>, tags
 * imops.test_data and imops.test_data_hash), else to a new FINISHED run
 * "imops test" of experiment (NULL: "Default"). The confusion matrix goes to
 * the run's artifacts as plots/confusion_matrix.svg and test_metrics.json.
 * *run_id_out (may be NULL) gets the run's id (im_free). */
IM_NODISCARD im_status_t im_train_track_eval(const im_train_model_t *m, const im_train_metrics_t *metrics,
                                             const char *data_dir, const char *tracking_home,
                                             const char *experiment, char **run_id_out);

#ifdef __cplusplus
}
#endif
#endif
