/* The training objective of a sweep: a trial's parameters mapped onto the
 * trainer's options, training in-process (im_train_run) as a child run of the
 * sweep's parent run, the metric reported every epoch so that hyperband can
 * stop the trial after an epoch. Agents in several processes share the data
 * directory, whose preprocessing state (DATA/.imops/dataset.json) is for one
 * image size at a time: a lock file there (DATA/.imops/sweep-data.lock)
 * serializes each trial's data preparation until its first training batch.
 * With a tracking server the trial's run goes there through the REST client. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <sys/file.h>
#include <unistd.h>
#include <stdio.h>
#include <string.h>

#include "imops/train.h"
#include "sweep/sweep_impl.h"

static const char *const names[] = {"batch_size", "img_size", "lr", "learning_rate", "optimizer", "epochs",
                                    "momentum", "weight_decay", "model", "scheduler", "width", "label_smoothing",
                                    "grad_clip", "warmup_epochs", "warmup_start", "seed", "hflip", "crop_pad",
                                    "nesterov", "eta_min", "gamma", "step_size", "t_max", "early_stopping", NULL};
static const char *const metrics[] = {"val_loss", "val_accuracy", "train_loss", "train_accuracy", NULL};

const char *const *im_sweep_train_param_names(void) { return names; }

/* "optimizer.lr" -> "lr", "optimizer.name" -> "optimizer"; other names unchanged. */
static const char *train_key(const char *name) {
  if (!strncmp(name, "optimizer.", 10)) return !strcmp(name + 10, "name") ? "optimizer" : name + 10;
  if (!strncmp(name, "scheduler.", 10)) return !strcmp(name + 10, "name") ? "scheduler" : name + 10;
  return name;
}

static int known(const char *k, const char *const *list) {
  for (; *list; list++)
    if (!strcmp(k, *list)) return 1;
  return 0;
}

im_status_t im_sweep_check_train(const im_sweep_config_t *c) {
  for (size_t i = 0; i < c->n_params; i++) {
    const im_sweep_param_t *p = &c->params[i];
    if (!known(train_key(p->name), names)) {
      char list[600] = "";
      for (const char *const *n = names; *n; n++) {
        strncat(list, *n, sizeof list - strlen(list) - 1);
        if (n[1]) strncat(list, ", ", sizeof list - strlen(list) - 1);
      }
      return im_error(IM_ERR_ARG, "%s:%d:%d: parameters.%s: training has no parameter '%s' (it knows %s)", c->source,
                      p->line, p->col, p->name, p->name, list);
    }
  }
  if (c->metric_name && !known(c->metric_name, metrics))
    return im_error(IM_ERR_ARG, "%s: metric.name: training reports val_loss, val_accuracy, train_loss and "
                    "train_accuracy, not '%s'", c->source, c->metric_name);
  return IM_OK;
}

static im_status_t apply(im_train_opts_t *o, const char *key, const json_t *v, char **model) {
  double d = json_number_value(v);
  int isnum = json_is_number(v);
  const char *s = json_string_value(v);
#define NUM(field, lo, cast)                                                                                \
  do {                                                                                                      \
    if (!isnum || !(d >= (lo))) return im_error(IM_ERR_ARG, "parameter %s: %s is not a valid value", key, \
                                                 json_is_string(v) ? s : "this");                           \
    o->field = (cast)d;                                                                                     \
    return IM_OK;                                                                                           \
  } while (0)
  if (!strcmp(key, "batch_size")) NUM(batch_size, 1, int);
  if (!strcmp(key, "img_size")) NUM(img_size, 8, int);
  if (!strcmp(key, "lr") || !strcmp(key, "learning_rate")) NUM(lr, 0, double);
  if (!strcmp(key, "epochs")) NUM(epochs, 1, int64_t);
  if (!strcmp(key, "momentum")) NUM(momentum, 0, double);
  if (!strcmp(key, "weight_decay")) NUM(weight_decay, 0, double);
  if (!strcmp(key, "width")) NUM(width, 0.01, float);
  if (!strcmp(key, "label_smoothing")) NUM(label_smoothing, 0, double);
  if (!strcmp(key, "grad_clip")) NUM(grad_clip, 0, double);
  if (!strcmp(key, "warmup_epochs")) NUM(warmup_epochs, 0, double);
  if (!strcmp(key, "warmup_start")) NUM(warmup_start, 0, double);
  if (!strcmp(key, "seed")) NUM(seed, 0, uint64_t);
  if (!strcmp(key, "crop_pad")) NUM(crop_pad, 0, int);
  if (!strcmp(key, "eta_min")) NUM(eta_min, 0, double);
  if (!strcmp(key, "gamma")) NUM(gamma, 0, double);
  if (!strcmp(key, "step_size")) NUM(step_size, 1, int64_t);
  if (!strcmp(key, "t_max")) NUM(t_max, 1, int64_t);
  if (!strcmp(key, "early_stopping")) NUM(early_stopping, 0, int);
#undef NUM
  if (!strcmp(key, "hflip") || !strcmp(key, "nesterov")) {
    int b = json_is_boolean(v) ? json_is_true(v) : isnum ? d != 0 : -1;
    if (b < 0) return im_error(IM_ERR_ARG, "parameter %s must be true or false", key);
    if (!strcmp(key, "hflip")) o->hflip = b;
    else o->nesterov = b;
    return IM_OK;
  }
  if (!s) return im_error(IM_ERR_ARG, "parameter %s must be a string", key);
  if (!strcmp(key, "optimizer")) {
    int k = im_train_optim_parse(s);
    if (k < 0) return im_error(IM_ERR_ARG, "parameter optimizer: sgd, adam or adamw, not '%s'", s);
    o->optimizer = (im_nn_optim_kind_t)k;
    if (o->optimizer != IM_NN_OPTIM_SGD) o->nesterov = 0;
    return IM_OK;
  }
  if (!strcmp(key, "scheduler")) {
    int k = im_train_sched_parse(s);
    if (k < 0) return im_error(IM_ERR_ARG, "parameter scheduler: none, cosine, cosine-step or step, not '%s'", s);
    o->scheduler = (im_train_sched_kind_t)k;
    return IM_OK;
  }
  if (!strcmp(key, "model")) {
    im_free(*model);
    return (*model = im_strdup(s)) ? IM_OK : im_error(IM_ERR_NOMEM, "out of memory");
  }
  return im_error(IM_ERR_ARG, "training has no parameter '%s'", key);
}

im_status_t im_sweep_train_apply(const im_sweep_config_t *c, const char *params_json, im_train_opts_t *o,
                                 char **model) {
  json_error_t err;
  json_t *root = json_loads(params_json ? params_json : "", 0, &err);
  if (!root) return im_error(IM_ERR_FORMAT, "trial parameters: %s", err.text);
  im_status_t st = IM_OK;
  for (size_t i = 0; st == IM_OK && i < c->n_params; i++) {
    const char *name = c->params[i].name;
    const json_t *v = im__sweep_json_lookup(root, name);
    if (v) st = apply(o, train_key(name), v, model);
  }
  json_decref(root);
  return st;
}

typedef struct {
  im_sweep_trial_t *t;
  const im_sweep_train_opts_t *so;
  const char *metric;
  volatile int stop;
  double last;
  im_status_t st;
  int lock_fd; /* held from before the run until the first batch (-1: none) */
  int64_t epochs;
} epoch_ctx_t;

static void unlock(epoch_ctx_t *x) {
  if (x->lock_fd < 0) return;
  flock(x->lock_fd, LOCK_UN);
  close(x->lock_fd);
  x->lock_fd = -1;
}

static void on_progress(void *user, const im_train_progress_t *p) { unlock(user); }

static void on_epoch(void *user, const im_train_epoch_t *e, int improved) {
  epoch_ctx_t *x = user;
  const char *m = x->metric;
  double v = !strcmp(m, "val_accuracy") ? e->val_accuracy : !strcmp(m, "train_loss") ? e->train_loss
             : !strcmp(m, "train_accuracy") ? e->train_accuracy : e->val_loss;
  x->last = v;
  int stop = 0;
  im_status_t st = im_sweep_trial_report(x->t, e->epoch, v, &stop);
  if (st && !x->st) x->st = st;
  if (stop && e->epoch < x->epochs) x->stop = 1; /* after the last epoch there is nothing to save */
  if (x->so && x->so->on_epoch) x->so->on_epoch(x->so->user, im_sweep_trial_number(x->t), e->epoch, v);
}

im_status_t im_sweep_train_objective(void *user, im_sweep_trial_t *t, double *value) {
  const im_sweep_train_opts_t *so = user;
  const im_sweep_info_t *w = im_sweep_trial_sweep(t);
  if (!w->data_dir) return im_error(IM_ERR_ARG, "sweep %s has no data directory (create it with --data DIR)", w->sweep_id);
  im_train_opts_t o = im_train_defaults();
  o.data_dir = w->data_dir;
  o.epochs = 1;
  char *model = NULL;
  im_status_t st = im_sweep_train_apply(w->config, im_sweep_trial_params(t), &o, &model);
  if (st) {
    im_free(model);
    return st;
  }
  if (model) o.model = model;
  char num[32], name[96];
  snprintf(num, sizeof num, "%lld", (long long)im_sweep_trial_number(t));
  snprintf(name, sizeof name, "sweep-%s-trial-%lld", w->sweep_id, (long long)im_sweep_trial_number(t));
  const char *tags[] = {"imops.sweep_id", w->sweep_id, "imops.sweep_trial", num, NULL};
  epoch_ctx_t x = {.t = t, .so = so, .metric = w->config->metric_name ? w->config->metric_name : "val_loss",
                   .last = NAN, .lock_fd = -1};
  x.epochs = o.epochs;
  o.parent_run_id = w->parent_run_id;
  o.run_tags = tags;
  o.run_name = name;
  o.on_epoch = on_epoch;
  o.user = &x;
  o.stop = &x.stop;
  o.checkpoint_seconds = 0;
  o.tracking_home = im__sweep_trial_home(t);
  if (so && so->device) o.device = so->device;
  if (so && so->threads > 0) o.threads = so->threads;
  o.progress = on_progress;
  /* the lock sits with the data (agents of one machine may use separate
   * workspaces, or a tracking server, yet share the data directory) */
  char *meta = im_path_join(w->data_dir, ".imops");
  char *lock = meta && (im_is_dir(meta) || im_mkdir_p(meta) == IM_OK) ? im_path_join(meta, "sweep-data.lock") : NULL;
  im_free(meta);
  if (lock && (x.lock_fd = open(lock, O_CREAT | O_RDWR | O_CLOEXEC, 0644)) >= 0) {
    int rc = -1;
    for (int i = 0; i < 1000 && (rc = flock(x.lock_fd, LOCK_EX)) != 0 && errno == EINTR; i++) {
    }
    if (rc != 0) unlock(&x); /* go on without: the trial may then race another's preprocessing */
  }
  im_free(lock);
  im_train_result_t *r = NULL;
  st = im_train_run(&o, &r);
  unlock(&x);
  if (r && r->run_id) {
    im_status_t s2 = im_sweep_trial_set_run(t, r->run_id);
    if (s2 == IM_OK && x.stop) s2 = im__sweep_trial_tag(t, "imops.sweep_pruned", "true");
    (void)s2;
  }
  im_train_result_free(r);
  im_free(model);
  if (st) return st;
  if (x.st) return x.st;
  if (x.stop) im_sweep_trial_prune(t);
  *value = x.last;
  return IM_OK;
}
