/* The train loop: data (cache + loader), model, optimizer and schedule; per
 * epoch a train pass and a validation pass; checkpoints (last/ every epoch,
 * every N steps or seconds and on cancel, best/ on a better validation
 * accuracy); exact resume from any checkpoint; early stopping; the final
 * bundle; and the run in the tracking store (params, per-step and per-epoch
 * metrics, tags, the bundle as artifact model/, training curves). */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "train/train_impl.h"

/* Everything one call works with. */
typedef struct {
  im_train_opts_t o;
  im__train_state_t rs; /* the checkpoint's trainer state (option strings point into it) */
  int resuming;
  im_train_checkpoint_t *ck;
  im_backend_t *be;
  im__train_data_t data;
  im_nn_model_t *m;
  im_nn_optim_t *opt;
  im_loader_t *train, *val;
  im_nn_sched_t sched;
  int per_step;        /* the schedule ticks per step (else per epoch) */
  int64_t spe;         /* steps per epoch */
  /* position and running state (all restored on resume) */
  int64_t epoch, batch, gstep;
  double ep_loss_sum, ep_seconds;
  int64_t ep_correct, ep_count;
  double log_loss_sum;
  int64_t log_correct, log_count;
  double best_val;
  int64_t best_epoch, bad_epochs;
  int finished;        /* early stopping decided: only the final steps are left */
  im_train_epoch_t *hist;
  size_t n_hist, cap_hist;
  double last_lr;
  /* tracking */
  im_track_client_t *store; /* embedded or REST (src/track) */
  char *run_id, *run_name, *exp_id;
  int64_t logged_step;     /* per-step metrics up to here are in the store (resume) */
  int run_created;         /* the run was created by this call (else continued from the checkpoint's) */
  im_track_metric_in_t *pending;
  int n_pending;
  /* paths */
  char *out_dir, *last_dir, *best_dir, *model_dir;
  double last_ckpt;
} trainer_t;

#define MAX_TRAINER_STATE (256u << 20)

static json_t *jreal(double v) { return isfinite(v) ? json_real(v) : json_null(); }

static void warn_store(trainer_t *t, const char *what) {
  im_log(IM_LOG_WARN, "tracking: %s: %s", what, im_last_error());
}

/* ---- the trainer state as JSON ---- */

static char *state_json(const trainer_t *t) {
  json_t *hist = json_array();
  for (size_t i = 0; i < t->n_hist; i++) {
    const im_train_epoch_t *e = &t->hist[i];
    json_t *h = json_object();
    json_object_set_new(h, "epoch", json_integer(e->epoch));
    json_object_set_new(h, "train_loss", jreal(e->train_loss));
    json_object_set_new(h, "train_accuracy", jreal(e->train_accuracy));
    json_object_set_new(h, "val_loss", jreal(e->val_loss));
    json_object_set_new(h, "val_accuracy", jreal(e->val_accuracy));
    json_object_set_new(h, "lr", jreal(e->lr));
    json_object_set_new(h, "epoch_seconds", jreal(e->epoch_seconds));
    json_object_set_new(h, "images_per_second", jreal(e->images_per_second));
    json_object_set_new(h, "val_seconds", jreal(e->val_seconds));
    json_array_append_new(hist, h);
  }
  json_t *j = json_object();
  json_object_set_new(j, "format", json_string("imops-trainer-state"));
  json_object_set_new(j, "version", json_integer(1));
  json_object_set_new(j, "options", im__train_opts_json(&t->o));
  json_object_set_new(j, "epoch", json_integer(t->epoch));
  json_object_set_new(j, "batch", json_integer(t->batch));
  json_object_set_new(j, "global_step", json_integer(t->gstep));
  json_object_set_new(j, "steps_per_epoch", json_integer(t->spe));
  json_object_set_new(j, "epoch_loss_sum", json_real(t->ep_loss_sum));
  json_object_set_new(j, "epoch_correct", json_integer(t->ep_correct));
  json_object_set_new(j, "epoch_count", json_integer(t->ep_count));
  json_object_set_new(j, "epoch_seconds", json_real(t->ep_seconds));
  json_object_set_new(j, "log_loss_sum", json_real(t->log_loss_sum));
  json_object_set_new(j, "log_correct", json_integer(t->log_correct));
  json_object_set_new(j, "log_count", json_integer(t->log_count));
  json_object_set_new(j, "best_val_accuracy", jreal(t->best_val));
  json_object_set_new(j, "best_epoch", json_integer(t->best_epoch));
  json_object_set_new(j, "bad_epochs", json_integer(t->bad_epochs));
  json_object_set_new(j, "finished", json_boolean(t->finished));
  json_object_set_new(j, "data_hash", json_string(t->data.hash));
  json_object_set_new(j, "arch", json_string(t->o.model));
  if (t->run_id) json_object_set_new(j, "run_id", json_string(t->run_id));
  if (t->run_name) json_object_set_new(j, "run_name", json_string(t->run_name));
  if (t->exp_id) json_object_set_new(j, "experiment_id", json_string(t->exp_id));
  json_object_set_new(j, "history", hist);
  /* The model's random stream (dropout, stochastic depth), as 4 hex words. */
  im_rng_t rng;
  im_nn_rng_get(t->m, &rng);
  json_t *jr = json_array();
  for (int k = 0; k < 4; k++) {
    char hex[17];
    json_array_append_new(jr, json_string(im__train_hex64(rng.s[k], hex)));
  }
  json_object_set_new(j, "model_rng", jr);
  char *s = json_dumps(j, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
  json_decref(j);
  return s;
}

static im_status_t hist_push(trainer_t *t, const im_train_epoch_t *e) {
  if (t->n_hist == t->cap_hist) {
    size_t cap = t->cap_hist ? t->cap_hist * 2 : 16;
    im_train_epoch_t *h = im_realloc(t->hist, cap * sizeof *h);
    if (!h) return im_error(IM_ERR_NOMEM, "out of memory");
    t->hist = h;
    t->cap_hist = cap;
  }
  t->hist[t->n_hist++] = *e;
  return IM_OK;
}

/* Restores the counters, history and random stream from the checkpoint's trainer state. */
static void restore_state(trainer_t *t) {
  im__train_state_t *r = &t->rs;
  t->epoch = r->epoch;
  t->batch = r->batch;
  t->gstep = r->global_step;
  t->ep_loss_sum = r->epoch_loss_sum;
  t->ep_correct = r->epoch_correct;
  t->ep_count = r->epoch_count;
  t->ep_seconds = r->epoch_seconds;
  t->log_loss_sum = r->log_loss_sum;
  t->log_correct = r->log_correct;
  t->log_count = r->log_count;
  t->best_val = r->best_val;
  t->best_epoch = r->best_epoch;
  t->bad_epochs = r->bad_epochs;
  t->finished = r->finished;
  if (r->has_rng) im_nn_rng_set(t->m, &r->rng);
  im_free(t->hist); /* the history moves over */
  t->hist = r->hist;
  t->n_hist = t->cap_hist = r->n_hist;
  r->hist = NULL;
  r->n_hist = 0;
}

/* ---- checkpoints ---- */

static im_status_t save_ckpt(trainer_t *t, const char *dir) {
  char *s = state_json(t);
  if (!s) return im_error(IM_ERR_NOMEM, "out of memory");
  im_status_t st = im__train_ckpt_write(dir, t->m, t->opt, s, t->epoch, t->batch, t->gstep, t->run_id);
  free(s);
  if (dir == t->last_dir) t->last_ckpt = im_time_now();
  return st;
}

static im_status_t load_state_file(im_nn_model_t *m, const char *path) {
  im_safetensors_t *st = NULL;
  im_status_t r = im_safetensors_load(path, 0, &st);
  if (r == IM_OK) r = im_nn_state_load(m, st);
  im_safetensors_free(st);
  return r;
}

/* ---- tracking ---- */

static void flush_pending(trainer_t *t) {
  if (!t->store || !t->n_pending) return;
  if (im_track_client_log_batch(t->store, t->run_id, t->pending, t->n_pending, NULL, 0, NULL, 0) != IM_OK)
    warn_store(t, "cannot log per-step metrics");
  t->n_pending = 0;
}

static const char *const step_keys[3] = {"train_loss_step", "train_accuracy_step", "lr_step"};

static void log_step(trainer_t *t, double loss, double acc, double lr) {
  if (!t->store || t->gstep <= t->logged_step) return;
  if (t->n_pending + 3 > IM_TRACK_MAX_BATCH_METRICS) flush_pending(t);
  int64_t now = im_time_wall_ms();
  const double v[3] = {loss, acc, lr};
  for (int i = 0; i < 3; i++) t->pending[t->n_pending++] = (im_track_metric_in_t){step_keys[i], v[i], now, t->gstep};
}

static void log_epoch(trainer_t *t, const im_train_epoch_t *e) {
  if (!t->store) return;
  int64_t now = im_time_wall_ms();
  im_track_metric_in_t ms[7];
  int n = 0;
  const char *names[7] = {"train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "epoch_seconds",
                          "images_per_second"};
  const double v[7] = {e->train_loss, e->train_accuracy, e->val_loss, e->val_accuracy, e->lr, e->epoch_seconds,
                       e->images_per_second};
  for (int i = 0; i < 7; i++)
    if (isfinite(v[i])) ms[n++] = (im_track_metric_in_t){names[i], v[i], now, e->epoch};
  if (im_track_client_log_batch(t->store, t->run_id, ms, n, NULL, 0, NULL, 0) != IM_OK) warn_store(t, "cannot log epoch metrics");
}

/* After a resume: epochs in the history whose metrics never reached the
 * store (a kill between the checkpoint and the logging), and where the
 * per-step metrics stopped. */
static void resync_store(trainer_t *t) {
  im_track_metric_list_t *l = NULL;
  if (im_track_client_metric_history(t->store, t->run_id, "train_loss", &l) == IM_OK) {
    for (size_t i = 0; i < t->n_hist; i++) {
      int found = 0;
      for (int64_t k = 0; k < l->n && !found; k++) found = l->items[k].step == t->hist[i].epoch;
      if (!found) log_epoch(t, &t->hist[i]);
    }
  }
  im_track_metric_list_free(l);
  l = NULL;
  if (im_track_client_metric_history(t->store, t->run_id, step_keys[0], &l) == IM_OK)
    for (int64_t k = 0; k < l->n; k++)
      if (l->items[k].step > t->logged_step) t->logged_step = l->items[k].step;
  im_track_metric_list_free(l);
}

static void end_run(trainer_t *t, im_track_run_status_t status) {
  if (!t->store || !t->run_id) return;
  flush_pending(t);
  im_track_run_update_t up = {.status = status, .end_time = im_time_wall_ms()};
  if (im_track_client_run_update(t->store, t->run_id, &up) != IM_OK) warn_store(t, "cannot set the run's status");
}

static im_status_t start_run(trainer_t *t, const char *resume_run_id) {
  im_status_t st;
  if (resume_run_id) {
    im_track_run_t *r = NULL;
    if ((st = im_track_client_run_get(t->store, resume_run_id, &r)))
      return im_error(st, "the checkpoint's run %s is not in the store: %s", resume_run_id, im_last_error());
    t->run_id = im_strdup(r->run_id);
    t->run_name = im_strdup(r->run_name);
    t->exp_id = im_strdup(r->experiment_id);
    im_track_run_free(r);
    if (!t->run_id || !t->run_name || !t->exp_id) return im_error(IM_ERR_NOMEM, "out of memory");
    im_track_run_update_t up = {.status = IM_TRACK_RUN_RUNNING, .end_time = IM_TRACK_NO_TIME};
    if (im_track_client_run_update(t->store, t->run_id, &up) != IM_OK) warn_store(t, "cannot mark the run RUNNING");
    char step[32];
    snprintf(step, sizeof step, "%lld", (long long)t->gstep);
    if (im_track_client_set_tag(t->store, t->run_id, "imops.resumed_at_step", step) != IM_OK)
      warn_store(t, "cannot tag the run");
    resync_store(t);
    return IM_OK;
  }
  if ((st = im_track_client_experiment_id(t->store, t->o.experiment, &t->exp_id))) return st;
  char user[128];
  im__train_user(user, sizeof user);
  im_track_kv_t tags[5 + 16] = {{"mlflow.source.name", "imops train"},
                                {"mlflow.source.type", "LOCAL"},
                                {"mlflow.user", user},
                                {"imops.data_hash", t->data.hash},
                                {"imops.data_dir", t->data.dir}};
  int n_tags = 5;
  for (const char *const *kv = t->o.run_tags; kv && kv[0] && kv[1] && n_tags < 5 + 16; kv += 2)
    tags[n_tags++] = (im_track_kv_t){kv[0], kv[1]};
  im_track_run_create_t rc = {.experiment_id = t->exp_id, .run_name = t->o.run_name, .user_id = user, .tags = tags,
                              .n_tags = n_tags, .parent_run_id = t->o.parent_run_id};
  im_track_run_t *r = NULL;
  if ((st = im_track_client_run_create(t->store, &rc, &r))) return st;
  t->run_id = im_strdup(r->run_id);
  t->run_name = im_strdup(r->run_name);
  im_track_run_free(r);
  if (!t->run_id || !t->run_name) return im_error(IM_ERR_NOMEM, "out of memory");
  t->run_created = 1;
  if (t->ck) resync_store(t); /* a checkpoint of an untracked run: its epochs so far */
  return IM_OK;
}

static void log_params(trainer_t *t) {
  im_track_kv_t kv[IM_TRACK_MAX_BATCH_PARAMS];
  char buf[IM_TRACK_MAX_BATCH_PARAMS][64];
  int n = im__train_opts_params(&t->o, kv, buf, IM_TRACK_MAX_BATCH_PARAMS - 8);
  kv[n++] = (im_track_kv_t){"device", t->o.device ? t->o.device : "cpu"};
  kv[n++] = (im_track_kv_t){"backend", im_backend_name(t->be)};
  snprintf(buf[n], 64, "%d", im_num_threads());
  kv[n] = (im_track_kv_t){"threads", buf[n]};
  n++;
  snprintf(buf[n], 64, "%lld", (long long)im_nn_model_num_params(t->m));
  kv[n] = (im_track_kv_t){"num_params", buf[n]};
  n++;
  snprintf(buf[n], 64, "%lld", (long long)im_loader_size(t->train));
  kv[n] = (im_track_kv_t){"n_train", buf[n]};
  n++;
  snprintf(buf[n], 64, "%lld", (long long)(t->val ? im_loader_size(t->val) : 0));
  kv[n] = (im_track_kv_t){"n_val", buf[n]};
  n++;
  snprintf(buf[n], 64, "%d", t->data.n_classes);
  kv[n] = (im_track_kv_t){"num_classes", buf[n]};
  n++;
  if (im_track_client_log_batch(t->store, t->run_id, NULL, 0, kv, n, NULL, 0) != IM_OK) warn_store(t, "cannot log params");
}

/* The bundle into the run's artifacts (model/) and the training curves (plots/),
 * wherever the run's artifact URI points (local, S3, or a server's proxy). */
static void log_artifacts(trainer_t *t) {
  if (im_track_client_log_artifacts(t->store, t->run_id, t->model_dir, "model") != IM_OK)
    im_log(IM_LOG_WARN, "tracking: cannot log the model as an artifact: %s", im_last_error());
  char *plots = im_path_join(t->out_dir, "plots");
  char *path = plots ? im_path_join(plots, "training_curves.svg") : NULL;
  if (path && (im_mkdir_p(plots) != IM_OK || im__train_plot_history(path, t->hist, t->n_hist) != IM_OK ||
               im_track_client_log_artifacts(t->store, t->run_id, path, "plots/training_curves.svg") != IM_OK))
    im_log(IM_LOG_WARN, "tracking: cannot log the training curves: %s", im_last_error());
  im_free(path);
  im_free(plots);
}

/* ---- setup ---- */

static im_status_t check_opts(const im_train_opts_t *o) {
  if (!o->data_dir) return im_error(IM_ERR_ARG, "a data directory is required (--data DIR)");
  if (!o->model || !*o->model) return im_error(IM_ERR_ARG, "a model architecture is required (--model NAME)");
  if (o->epochs < 1) return im_error(IM_ERR_ARG, "epochs must be at least 1");
  if (o->batch_size < 1) return im_error(IM_ERR_ARG, "the batch size must be at least 1");
  if (!(o->lr >= 0)) return im_error(IM_ERR_ARG, "the learning rate must be >= 0");
  if (!(o->momentum >= 0) || !(o->weight_decay >= 0)) return im_error(IM_ERR_ARG, "momentum and weight decay must be >= 0");
  if (!(o->label_smoothing >= 0 && o->label_smoothing <= 1)) return im_error(IM_ERR_ARG, "label smoothing must be in [0, 1]");
  if (!(o->grad_clip >= 0)) return im_error(IM_ERR_ARG, "the gradient clipping norm must be >= 0");
  if (!(o->warmup_epochs >= 0) || !(o->warmup_start >= 0 && o->warmup_start <= 1))
    return im_error(IM_ERR_ARG, "warm-up epochs must be >= 0 and the warm-up start factor in [0, 1]");
  if (o->crop_pad < 0 || o->early_stopping < 0 || o->checkpoint_every < 0 || o->checkpoint_seconds < 0 ||
      o->max_steps < 0 || o->log_every < 0 || o->t_max < 0 || o->step_size < 0)
    return im_error(IM_ERR_ARG, "counts and periods must not be negative");
  if ((unsigned)o->scheduler > IM_TRAIN_SCHED_STEP) return im_error(IM_ERR_ARG, "unknown scheduler");
  if ((unsigned)o->optimizer > IM_NN_OPTIM_ADAMW) return im_error(IM_ERR_ARG, "unknown optimizer");
  if (o->nesterov && (o->optimizer != IM_NN_OPTIM_SGD || o->momentum <= 0))
    return im_error(IM_ERR_ARG, "Nesterov momentum needs SGD with momentum > 0");
  return IM_OK;
}

static im_status_t make_sched(trainer_t *t) {
  const im_train_opts_t *o = &t->o;
  im_nn_sched_t *s = &t->sched;
  memset(s, 0, sizeof *s);
  s->base_lr = o->lr;
  s->warmup_start = o->warmup_start;
  t->per_step = o->scheduler == IM_TRAIN_SCHED_COSINE_STEP;
  int64_t warm = t->per_step ? (int64_t)llround(o->warmup_epochs * (double)t->spe) : (int64_t)llround(o->warmup_epochs);
  s->warmup = warm;
  switch (o->scheduler) {
    case IM_TRAIN_SCHED_NONE: s->kind = IM_NN_SCHED_CONSTANT; break;
    case IM_TRAIN_SCHED_COSINE:
      s->kind = IM_NN_SCHED_COSINE;
      s->t_max = (o->t_max > 0 ? o->t_max : o->epochs) - warm;
      s->eta_min = o->eta_min >= 0 ? o->eta_min : 1e-6;
      break;
    case IM_TRAIN_SCHED_COSINE_STEP:
      s->kind = IM_NN_SCHED_COSINE;
      s->t_max = (o->t_max > 0 ? o->t_max : o->epochs) * t->spe - warm;
      s->eta_min = o->eta_min >= 0 ? o->eta_min : 0.0;
      break;
    case IM_TRAIN_SCHED_STEP:
      s->kind = IM_NN_SCHED_STEP;
      s->step_size = o->step_size > 0 ? o->step_size : (o->epochs / 3 > 0 ? o->epochs / 3 : 1);
      s->gamma = o->gamma;
      break;
  }
  if (s->kind == IM_NN_SCHED_COSINE && s->t_max < 1) s->t_max = 1;
  return im_nn_sched_check(s);
}

static char *default_output(const trainer_t *t) {
  char *home = NULL;
  if (t->store && im_track_client_store(t->store)) {
    home = im_strdup(im_track_home(im_track_client_store(t->store)));
  } else {
    const char *e = getenv("IMOPS_HOME");
    home = im__train_abspath(e && *e ? e : "imops-workspace");
  }
  char name[160];
  if (t->run_name) {
    snprintf(name, sizeof name, "checkpoints/%s", t->run_name);
  } else {
    int64_t ms = im_time_wall_ms();
    snprintf(name, sizeof name, "checkpoints/train-%lld", (long long)ms);
  }
  char *out = home ? im_path_join(home, name) : NULL;
  im_free(home);
  return out;
}

static void trainer_free(trainer_t *t) {
  im_loader_close(t->train);
  im_loader_close(t->val);
  im_nn_optim_free(t->opt);
  im_nn_model_free(t->m);
  im_backend_free(t->be);
  im__train_data_free(&t->data);
  im_train_checkpoint_free(t->ck);
  im__train_state_free(&t->rs);
  im_track_client_close(t->store);
  im_free(t->pending);
  im_free(t->hist);
  im_free(t->run_id);
  im_free(t->run_name);
  im_free(t->exp_id);
  im_free(t->out_dir);
  im_free(t->last_dir);
  im_free(t->best_dir);
  im_free(t->model_dir);
}

void im_train_result_free(im_train_result_t *r) {
  if (!r) return;
  im_free(r->run_id);
  im_free(r->run_name);
  im_free(r->experiment_id);
  im_free(r->output_dir);
  im_free(r->model_dir);
  im_free(r->last_dir);
  im_free(r->best_dir);
  im_free(r->data_hash);
  im_free(r->history);
  im_free(r);
}

static im_train_result_t *make_result(const trainer_t *t, double t0) {
  im_train_result_t *r = im_calloc(1, sizeof *r);
  if (!r) return NULL;
  r->run_id = t->run_id ? im_strdup(t->run_id) : NULL;
  r->run_name = t->run_name ? im_strdup(t->run_name) : NULL;
  r->experiment_id = t->exp_id ? im_strdup(t->exp_id) : NULL;
  r->output_dir = t->out_dir ? im_strdup(t->out_dir) : NULL;
  r->model_dir = t->model_dir ? im_strdup(t->model_dir) : NULL;
  r->last_dir = t->last_dir ? im_strdup(t->last_dir) : NULL;
  r->best_dir = t->best_dir ? im_strdup(t->best_dir) : NULL;
  r->data_hash = im_strdup(t->data.hash);
  r->epochs_done = t->epoch;
  r->global_step = t->gstep;
  r->resumed = t->ck != NULL;
  r->has_val = t->val != NULL;
  r->best_val_accuracy = t->val ? t->best_val : NAN;
  r->best_epoch = t->best_epoch;
  r->n_train = t->train ? im_loader_size(t->train) : 0;
  r->n_val = t->val ? im_loader_size(t->val) : 0;
  r->params = t->m ? im_nn_model_num_params(t->m) : 0;
  r->backend = t->be ? im_backend_name(t->be) : "";
  r->threads = im_num_threads();
  r->seconds = im_time_now() - t0;
  if (t->n_hist && (r->history = im_malloc(t->n_hist * sizeof *r->history))) {
    memcpy(r->history, t->hist, t->n_hist * sizeof *r->history);
    r->n_epochs = t->n_hist;
  }
  return r;
}

/* ---- the loop ---- */

static int argmax_correct(const float *z, int k, const int32_t *y, int n) {
  int correct = 0;
  for (int i = 0; i < n; i++) {
    const float *zi = z + (size_t)i * (size_t)k;
    int best = 0;
    for (int j = 1; j < k; j++)
      if (zi[j] > zi[best]) best = j;
    correct += best == y[i];
  }
  return correct;
}

/* One train pass from (t->epoch, t->batch). Returns IM_ERR_CANCELLED after
 * checkpointing when cancelled or at max_steps. */
static im_status_t train_pass(trainer_t *t) {
  im_status_t st = im_loader_start(t->train, t->epoch, t->batch);
  if (st) return st;
  const im_train_opts_t *o = &t->o;
  int c, h, w, k0;
  im_loader_geometry(t->train, &c, &h, &w, &k0);
  const int k = im_nn_model_num_classes(t->m);
  const int64_t log_every = o->log_every > 0 ? o->log_every : 50;
  double seg = im_time_now();
  for (;;) {
    const float *x;
    const int32_t *y;
    int n;
    if ((st = im_loader_next(t->train, &x, &y, &n))) return st;
    if (n == 0) break;
    double lr = im_nn_sched_lr(&t->sched, t->per_step ? t->gstep : t->epoch);
    im_nn_optim_set_lr(t->opt, lr);
    t->last_lr = lr;
    im_tensor_t xt, logits;
    int64_t shape[4] = {n, c, h, w};
    float loss;
    im_nn_zero_grad(t->m);
    if ((st = im_tensor_view(&xt, IM_F32, 4, shape, (void *)(uintptr_t)x))) return st;
    if ((st = im_nn_forward(t->m, &xt, 1, &logits))) return st;
    if ((st = im_nn_loss(t->m, y, (float)o->label_smoothing, &loss))) return st;
    if (!isfinite(loss))
      return im_error(IM_ERR_STATE, "the loss became %g at epoch %lld step %lld; lower the learning rate", (double)loss,
                      (long long)t->epoch + 1, (long long)t->batch + 1);
    int correct = argmax_correct(im_tensor_f32(&logits), k, y, n);
    if ((st = im_nn_backward(t->m))) return st;
    if (o->grad_clip > 0 && (st = im_nn_clip_grad_norm(t->m, o->grad_clip, NULL))) return st;
    if ((st = im_nn_optim_step(t->opt))) return st;
    t->ep_loss_sum += (double)loss * n;
    t->ep_correct += correct;
    t->ep_count += n;
    t->log_loss_sum += (double)loss * n;
    t->log_correct += correct;
    t->log_count += n;
    t->gstep++;
    t->batch++;
    if (t->gstep % log_every == 0) {
      log_step(t, t->log_loss_sum / (double)t->log_count, (double)t->log_correct / (double)t->log_count, lr);
      t->log_loss_sum = 0;
      t->log_correct = t->log_count = 0;
    }
    double now = im_time_now();
    t->ep_seconds += now - seg;
    seg = now;
    int stop = (o->cancel && *o->cancel) || (o->max_steps > 0 && t->gstep >= o->max_steps);
    int due = (o->checkpoint_every > 0 && t->gstep % o->checkpoint_every == 0) ||
              (o->checkpoint_seconds > 0 && now - t->last_ckpt >= o->checkpoint_seconds);
    if ((stop || due) && t->batch < t->spe) {
      if ((st = save_ckpt(t, t->last_dir))) return st;
      flush_pending(t);
    }
    if (o->progress) {
      im_train_progress_t p = {.stage = "train", .epoch = t->epoch + 1, .epochs = o->epochs, .step = t->batch,
                               .steps = t->spe, .global_step = t->gstep, .loss = t->ep_loss_sum / (double)t->ep_count,
                               .accuracy = (double)t->ep_correct / (double)t->ep_count, .lr = lr};
      o->progress(o->user, &p);
    }
    seg = im_time_now(); /* callbacks and checkpoints do not count as training time */
    if (stop) {
      if (t->batch >= t->spe && (st = save_ckpt(t, t->last_dir))) return st;
      return im_error(IM_ERR_CANCELLED, "training stopped at epoch %lld step %lld (checkpoint in %s)",
                      (long long)t->epoch + 1, (long long)t->batch, t->last_dir);
    }
  }
  return IM_OK;
}

static im_status_t run_epochs(trainer_t *t) {
  const im_train_opts_t *o = &t->o;
  im_status_t st;
  while (!t->finished && t->epoch < o->epochs) {
    if ((st = train_pass(t))) return st;
    im_train_epoch_t e = {.epoch = t->epoch + 1,
                          .train_loss = t->ep_count ? t->ep_loss_sum / (double)t->ep_count : NAN,
                          .train_accuracy = t->ep_count ? (double)t->ep_correct / (double)t->ep_count : NAN,
                          .val_loss = NAN, .val_accuracy = NAN,
                          .lr = t->last_lr,
                          .epoch_seconds = t->ep_seconds,
                          .images_per_second = t->ep_seconds > 0 ? (double)t->ep_count / t->ep_seconds : NAN};
    if (t->val) {
      double v0 = im_time_now();
      im__train_eval_acc_t acc = {0};
      st = im__train_eval_pass(t->m, t->val, &acc, o->progress, o->user, "val", t->epoch + 1, o->epochs, 0,
                               im_loader_batches(t->val), o->cancel);
      if (st == IM_ERR_CANCELLED) {
        im_status_t s2 = save_ckpt(t, t->last_dir); /* at the end of the train pass */
        if (s2) return s2;
        return im_error(IM_ERR_CANCELLED, "training stopped during validation of epoch %lld (checkpoint in %s)",
                        (long long)t->epoch + 1, t->last_dir);
      }
      if (st) return st;
      e.val_loss = acc.loss_sum / (double)acc.n;
      e.val_accuracy = (double)acc.correct / (double)acc.n;
      e.val_seconds = im_time_now() - v0;
    }
    if ((st = hist_push(t, &e))) return st;
    int improved = t->val ? (t->best_epoch == 0 || e.val_accuracy > t->best_val) : 1;
    if (improved) {
      t->best_val = t->val ? e.val_accuracy : NAN;
      t->best_epoch = e.epoch;
      t->bad_epochs = 0;
    } else {
      t->bad_epochs++;
    }
    t->epoch++;
    t->batch = 0;
    t->ep_loss_sum = 0;
    t->ep_correct = t->ep_count = 0;
    t->ep_seconds = 0;
    if (o->early_stopping > 0 && t->val && t->bad_epochs >= o->early_stopping && t->epoch < o->epochs)
      t->finished = 1;
    if (improved && (st = save_ckpt(t, t->best_dir))) return st;
    if ((st = save_ckpt(t, t->last_dir))) return st;
    log_epoch(t, &e);
    flush_pending(t);
    if (o->on_epoch) o->on_epoch(o->user, &e, improved);
    if (o->stop && *o->stop && t->epoch < o->epochs) t->finished = 1;
  }
  return IM_OK;
}

/* The final bundle: the best epoch's weights unless asked for the last. */
static im_status_t save_bundle(trainer_t *t) {
  im_status_t st;
  const im_train_epoch_t *pick = t->n_hist ? &t->hist[t->n_hist - 1] : NULL;
  if (!t->o.final_weights_last && t->val && t->best_epoch > 0 && t->n_hist &&
      t->best_epoch != t->hist[t->n_hist - 1].epoch) {
    im_train_checkpoint_t *b = NULL;
    if ((st = im_train_checkpoint_open(t->best_dir, &b))) return st;
    st = load_state_file(t->m, b->state_path);
    im_train_checkpoint_free(b);
    if (st) return st;
    for (size_t i = 0; i < t->n_hist; i++)
      if (t->hist[i].epoch == t->best_epoch) pick = &t->hist[i];
  }
  const char *names[8];
  double vals[8];
  size_t nm = 0;
  if (pick) {
    names[nm] = "epoch", vals[nm++] = (double)pick->epoch;
    names[nm] = "train_loss", vals[nm++] = pick->train_loss;
    names[nm] = "train_accuracy", vals[nm++] = pick->train_accuracy;
    if (t->val) {
      names[nm] = "val_loss", vals[nm++] = pick->val_loss;
      names[nm] = "val_accuracy", vals[nm++] = pick->val_accuracy;
    }
  }
  im_nn_bundle_meta_t meta = {.classes = (const char *const *)t->data.classes,
                              .num_classes = (size_t)t->data.n_classes,
                              .img_h = t->data.img_size,
                              .img_w = t->data.img_size,
                              .n_norm = t->data.channels,
                              .metric_names = names,
                              .metric_values = vals,
                              .n_metrics = nm,
                              .run_id = t->run_id};
  for (int c = 0; c < 3; c++) {
    meta.mean[c] = t->data.mean[c];
    meta.std[c] = t->data.std[c];
  }
  return im_nn_bundle_save(t->m, t->model_dir, &meta);
}

/* PyTorch's default initialization of a plain nn.Conv2d weight:
 * kaiming_uniform_(a=sqrt 5), i.e. U(+-1/sqrt(fan_in)); one stream per tensor. */
static void torch_conv_init(im_nn_model_t *m, uint64_t seed) {
  for (size_t i = 0; i < im_nn_param_count(m); i++) {
    im_nn_param_t p;
    if (im_nn_param_get(m, i, &p) != IM_OK || p.value->ndim != 4) continue;
    int64_t fan_in = p.value->shape[1] * p.value->shape[2] * p.value->shape[3], n = im_tensor_numel(p.value);
    double bound = 1.0 / sqrt((double)fan_in);
    im_rng_t r;
    im_rng_seed(&r, im_rng_derive(seed ^ 0x70C4D3FA17ULL, (uint64_t)i));
    float *v = im_tensor_f32(p.value);
    for (int64_t k = 0; k < n; k++) v[k] = (float)((2.0 * im_rng_uniform(&r) - 1.0) * bound);
  }
}

static im_status_t setup(trainer_t *t, const im_train_opts_t *in) {
  im_status_t st;
  t->o = *in;
  im_train_opts_t *o = &t->o;
  if (in->resume) {
    if ((st = im_train_checkpoint_open(in->resume, &t->ck))) return st;
    uint8_t *bytes = NULL;
    size_t len = 0;
    if ((st = im_file_read(t->ck->trainer_path, MAX_TRAINER_STATE, &bytes, &len))) return st;
    t->resuming = 1;
    st = im__train_state_parse(bytes, len, o, &t->rs);
    im_free(bytes);
    if (st) return im_error(st, "%s: %s", t->ck->trainer_path, im_last_error());
    if (in->epochs > 0) o->epochs = in->epochs;
    o->resume = in->resume;
    o->device = in->device;
    o->threads = in->threads;
    o->max_steps = in->max_steps;
    o->cancel = in->cancel;
    o->track = in->track;
    o->tracking_home = in->tracking_home;
    o->checkpoint_every = in->checkpoint_every;
    o->checkpoint_seconds = in->checkpoint_seconds;
    o->progress = in->progress;
    o->on_epoch = in->on_epoch;
    o->prep_progress = in->prep_progress;
    o->user = in->user;
  }
  if ((st = check_opts(o))) return st;
  if (o->track && (st = im__train_store_open(o->tracking_home, &t->store))) return st;
  if (o->threads > 0) {
    char n[16];
    snprintf(n, sizeof n, "%d", o->threads);
    setenv("IMOPS_NUM_THREADS", n, 1);
  }
  if ((st = im_train_backend_new(o->device, &t->be))) return st;
  if ((st = im__train_data_open(o->data_dir, o->img_size, o->prep_progress, o->user, &t->data))) return st;
  o->data_dir = t->data.dir;
  o->img_size = t->data.img_size;
  if (t->resuming) {
    const char *h = t->rs.data_hash;
    if (strcmp(h, t->data.hash) != 0)
      return im_error(IM_ERR_STATE, "the data in %s changed since the checkpoint (content hash %s, was %s); resume "
                      "needs the same data",
                      t->data.dir, t->data.hash, h);
  }
  im_nn_model_opts_t mo = {.num_classes = t->data.n_classes, .in_channels = t->data.channels, .width = o->width,
                           .dropout = o->dropout, .drop_path = o->drop_path, .seed = o->seed};
  if ((st = im_nn_model_new(o->model, &mo, &t->m))) return st;
  if (o->init_torch) torch_conv_init(t->m, o->seed);
  if ((st = im_nn_plan(t->m, t->be, o->batch_size, t->data.img_size, t->data.img_size, 1))) return st;
  im_nn_optim_opts_t oo = im_nn_optim_defaults(o->optimizer);
  oo.lr = o->lr;
  oo.weight_decay = o->weight_decay;
  if (o->optimizer == IM_NN_OPTIM_SGD) {
    oo.momentum = o->momentum;
    oo.nesterov = o->nesterov;
  }
  if ((st = im_nn_optim_new(t->m, &oo, &t->opt))) return st;
  im_loader_opts_t lo = {.cache_path = t->data.cache_path, .split = IM_SPLIT_TRAIN, .batch_size = o->batch_size,
                         .shuffle = 1, .seed = o->seed, .hflip = o->hflip, .crop_pad = o->crop_pad};
  memcpy(lo.mean, t->data.mean, sizeof lo.mean);
  memcpy(lo.std, t->data.std, sizeof lo.std);
  if ((st = im_loader_open(&lo, &t->train))) return st;
  if (t->data.counts[IM_SPLIT_VAL] > 0) {
    im_loader_opts_t vo = lo;
    vo.split = IM_SPLIT_VAL;
    vo.shuffle = vo.hflip = vo.crop_pad = 0;
    if ((st = im_loader_open(&vo, &t->val))) return st;
  }
  t->spe = im_loader_batches(t->train);
  if ((st = make_sched(t))) return st;
  t->best_val = NAN;
  if (t->resuming) {
    restore_state(t);
    if (t->rs.steps_per_epoch != t->spe)
      return im_error(IM_ERR_STATE, "the checkpoint has another number of steps per epoch; resume needs the same data "
                      "and batch size");
    if ((st = load_state_file(t->m, t->ck->state_path))) return st;
    if (!t->ck->optim_path) return im_error(IM_ERR_FORMAT, "the checkpoint in %s has no optimizer state", in->resume);
    if ((st = im_nn_optim_load(t->opt, t->ck->optim_path))) return st;
  }
  /* Tracking. */
  if (t->store) {
    if (!(t->pending = im_malloc(sizeof *t->pending * IM_TRACK_MAX_BATCH_METRICS)))
      return im_error(IM_ERR_NOMEM, "out of memory");
    const char *rid = t->resuming ? t->rs.run_id : NULL;
    if ((st = start_run(t, rid))) return st;
  } else if (t->resuming) {
    const char *rn = t->rs.run_name;
    if (rn && !(t->run_name = im_strdup(rn))) return im_error(IM_ERR_NOMEM, "out of memory");
  }
  /* Directories: the output keeps its place across resumes. */
  t->out_dir = o->output ? im__train_abspath(o->output) : default_output(t);
  if (!t->out_dir || !(t->last_dir = im_path_join(t->out_dir, "last")) ||
      !(t->best_dir = im_path_join(t->out_dir, "best")) || !(t->model_dir = im_path_join(t->out_dir, "model")))
    return im_error(IM_ERR_NOMEM, "out of memory");
  o->output = t->out_dir;
  if (!o->run_name) o->run_name = t->run_name;
  if ((st = im_mkdir_p(t->out_dir))) return st;
  if (t->store && t->run_created) {
    log_params(t);
    if (im_track_client_set_tag(t->store, t->run_id, "imops.checkpoint_dir", t->out_dir) != IM_OK)
      warn_store(t, "cannot tag the run");
  }
  t->last_ckpt = im_time_now();
  return IM_OK;
}

im_status_t im_train_run(const im_train_opts_t *opts, im_train_result_t **out) {
  if (out) *out = NULL;
  if (!opts) return im_error(IM_ERR_ARG, "no options");
  double t0 = im_time_now();
  trainer_t t;
  memset(&t, 0, sizeof t);
  im_status_t st = setup(&t, opts);
  if (st == IM_OK) st = run_epochs(&t);
  if (st == IM_OK) st = save_bundle(&t);
  if (st == IM_OK && t.store) {
    log_artifacts(&t);
    if (isfinite(t.best_val)) {
      im_track_metric_in_t best = {"best_val_accuracy", t.best_val, im_time_wall_ms(), t.best_epoch};
      if (im_track_client_log_batch(t.store, t.run_id, &best, 1, NULL, 0, NULL, 0) != IM_OK)
        warn_store(&t, "cannot log best_val_accuracy");
    }
    char be[32];
    snprintf(be, sizeof be, "%lld", (long long)t.best_epoch);
    if (im_track_client_set_tag(t.store, t.run_id, "imops.best_epoch", be) != IM_OK) warn_store(&t, "cannot tag the run");
    if (t.finished && im_track_client_set_tag(t.store, t.run_id, "imops.early_stopped", "true") != IM_OK)
      warn_store(&t, "cannot tag the run");
  }
  if (t.store && t.run_id) {
    char msg[1024];
    snprintf(msg, sizeof msg, "%s", im_last_error());
    end_run(&t, st == IM_OK ? IM_TRACK_RUN_FINISHED : st == IM_ERR_CANCELLED ? IM_TRACK_RUN_KILLED : IM_TRACK_RUN_FAILED);
    if (st) im_error(st, "%s", msg); /* keep the training error as the last one */
  }
  if (out && (st == IM_OK || st == IM_ERR_CANCELLED)) {
    *out = make_result(&t, t0);
    if (*out) (*out)->stopped_early = t.finished;
  }
  trainer_free(&t);
  return st;
}
