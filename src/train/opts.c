/* Training options: defaults, the names of optimizers and schedules, and one
 * table of fields that turns options into JSON (stored in checkpoints, so a
 * resumed run has the same options) and into MLflow params. */
#include <float.h>
#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "train/train_impl.h"

im_train_opts_t im_train_defaults(void) {
  im_train_opts_t o;
  memset(&o, 0, sizeof o);
  o.model = "surfacenet";
  o.epochs = 10;
  o.batch_size = 64;
  o.optimizer = IM_NN_OPTIM_SGD;
  o.lr = 0.05;
  o.momentum = 0.9;
  o.weight_decay = 5e-4;
  o.scheduler = IM_TRAIN_SCHED_COSINE;
  o.eta_min = -1;
  o.gamma = 0.1;
  o.warmup_start = 0.1;
  o.hflip = 1;
  o.seed = 42;
  o.device = "cpu";
  o.checkpoint_seconds = 60;
  o.track = 1;
  o.log_every = 50;
  return o;
}

static const char *const sched_names[] = {"none", "cosine", "cosine-step", "step"};
static const char *const optim_names[] = {"sgd", "adam", "adamw"};

const char *im_train_sched_name(im_train_sched_kind_t k) {
  return (unsigned)k < 4 ? sched_names[k] : "?";
}
int im_train_sched_parse(const char *s) {
  for (int i = 0; s && i < 4; i++)
    if (!strcasecmp(s, sched_names[i])) return i;
  if (s && (!strcasecmp(s, "constant") || !strcasecmp(s, "off"))) return IM_TRAIN_SCHED_NONE;
  return -1;
}
const char *im_train_optim_name(im_nn_optim_kind_t k) { return (unsigned)k < 3 ? optim_names[k] : "?"; }
int im_train_optim_parse(const char *s) {
  for (int i = 0; s && i < 3; i++)
    if (!strcasecmp(s, optim_names[i])) return i;
  return -1;
}

typedef enum { F_STR, F_INT, F_I64, F_DBL, F_FLT, F_U64, F_OPTIM, F_SCHED } ftype_t;
typedef struct {
  const char *name;
  ftype_t type;
  size_t off;
} field_t;

#define F(n, t, m) {n, t, offsetof(im_train_opts_t, m)}
static const field_t fields[] = {
    F("data", F_STR, data_dir),
    F("model", F_STR, model),
    F("img_size", F_INT, img_size),
    F("width", F_FLT, width),
    F("dropout", F_FLT, dropout),
    F("drop_path", F_FLT, drop_path),
    F("init_torch", F_INT, init_torch),
    F("epochs", F_I64, epochs),
    F("batch_size", F_INT, batch_size),
    F("optimizer", F_OPTIM, optimizer),
    F("lr", F_DBL, lr),
    F("momentum", F_DBL, momentum),
    F("weight_decay", F_DBL, weight_decay),
    F("nesterov", F_INT, nesterov),
    F("scheduler", F_SCHED, scheduler),
    F("t_max", F_I64, t_max),
    F("eta_min", F_DBL, eta_min),
    F("step_size", F_I64, step_size),
    F("gamma", F_DBL, gamma),
    F("warmup_epochs", F_DBL, warmup_epochs),
    F("warmup_start", F_DBL, warmup_start),
    F("label_smoothing", F_DBL, label_smoothing),
    F("grad_clip", F_DBL, grad_clip),
    F("hflip", F_INT, hflip),
    F("crop_pad", F_INT, crop_pad),
    F("seed", F_U64, seed),
    F("output", F_STR, output),
    F("early_stopping", F_INT, early_stopping),
    F("checkpoint_every", F_I64, checkpoint_every),
    F("checkpoint_seconds", F_DBL, checkpoint_seconds),
    F("final_weights_last", F_INT, final_weights_last),
    F("experiment", F_STR, experiment),
    F("run_name", F_STR, run_name),
    F("log_every", F_I64, log_every),
};
#undef F
#define NFIELDS (sizeof fields / sizeof fields[0])

json_t *im__train_opts_json(const im_train_opts_t *o) {
  json_t *j = json_object();
  if (!j) return NULL;
  const char *base = (const char *)o;
  for (size_t i = 0; i < NFIELDS; i++) {
    const void *p = base + fields[i].off;
    json_t *v = NULL;
    switch (fields[i].type) {
      case F_STR: {
        const char *s = *(const char *const *)p;
        v = s ? json_string(s) : json_null();
        break;
      }
      case F_INT: v = json_integer(*(const int *)p); break;
      case F_I64: v = json_integer(*(const int64_t *)p); break;
      case F_DBL: v = json_real(*(const double *)p); break;
      case F_FLT: v = json_real(*(const float *)p); break;
      case F_U64: v = json_integer((json_int_t) * (const uint64_t *)p); break;
      case F_OPTIM: v = json_string(im_train_optim_name(*(const im_nn_optim_kind_t *)p)); break;
      case F_SCHED: v = json_string(im_train_sched_name(*(const im_train_sched_kind_t *)p)); break;
    }
    if (!v) v = json_null();
    json_object_set_new(j, fields[i].name, v);
  }
  return j;
}

im_status_t im__train_opts_from_json(const json_t *j, im_train_opts_t *o) {
  if (!json_is_object(j)) return im_error(IM_ERR_FORMAT, "checkpoint: the options are missing");
  char *base = (char *)o;
  for (size_t i = 0; i < NFIELDS; i++) {
    json_t *v = json_object_get(j, fields[i].name);
    if (!v) continue;
    void *p = base + fields[i].off;
    const double num = json_number_value(v);
    const int64_t iv = json_integer_value(v);
    if ((fields[i].type == F_INT && (iv < INT_MIN || iv > INT_MAX)) ||
        (fields[i].type == F_FLT && !(fabs(num) <= FLT_MAX)))
      return im_error(IM_ERR_FORMAT, "checkpoint: option %s is out of range", fields[i].name);
    switch (fields[i].type) {
      case F_STR: *(const char **)p = json_string_value(v); break;
      case F_INT: *(int *)p = (int)iv; break;
      case F_I64: *(int64_t *)p = iv; break;
      case F_DBL: *(double *)p = num; break;
      case F_FLT: *(float *)p = (float)num; break;
      case F_U64: *(uint64_t *)p = (uint64_t)json_integer_value(v); break;
      case F_OPTIM: {
        int k = im_train_optim_parse(json_string_value(v));
        if (k < 0) return im_error(IM_ERR_FORMAT, "checkpoint: unknown optimizer");
        *(im_nn_optim_kind_t *)p = (im_nn_optim_kind_t)k;
        break;
      }
      case F_SCHED: {
        int k = im_train_sched_parse(json_string_value(v));
        if (k < 0) return im_error(IM_ERR_FORMAT, "checkpoint: unknown scheduler");
        *(im_train_sched_kind_t *)p = (im_train_sched_kind_t)k;
        break;
      }
    }
  }
  return IM_OK;
}

int im__train_opts_params(const im_train_opts_t *o, im_track_kv_t *kv, char (*buf)[64], int max) {
  const char *base = (const char *)o;
  int n = 0;
  for (size_t i = 0; i < NFIELDS && n < max; i++) {
    const void *p = base + fields[i].off;
    const char *val = buf[n];
    switch (fields[i].type) {
      case F_STR:
        val = *(const char *const *)p;
        if (!val) continue;
        break;
      case F_INT: snprintf(buf[n], 64, "%d", *(const int *)p); break;
      case F_I64: snprintf(buf[n], 64, "%lld", (long long)*(const int64_t *)p); break;
      case F_DBL: snprintf(buf[n], 64, "%.10g", *(const double *)p); break;
      case F_FLT: snprintf(buf[n], 64, "%.7g", (double)*(const float *)p); break;
      case F_U64: snprintf(buf[n], 64, "%llu", (unsigned long long)*(const uint64_t *)p); break;
      case F_OPTIM: val = im_train_optim_name(*(const im_nn_optim_kind_t *)p); break;
      case F_SCHED: val = im_train_sched_name(*(const im_train_sched_kind_t *)p); break;
    }
    kv[n].key = fields[i].name;
    kv[n].value = val;
    n++;
  }
  return n;
}
