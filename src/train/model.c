/* Models outside training: the backend for a --device, opening a bundle by
 * path or model URI (through the tracking store), evaluation passes over a
 * loader (shared with the train loop's validation), evaluation of a data
 * split with full metrics, prediction on image files with exactly the
 * preprocessing the training data had, and logging an evaluation to a run. */
#include <ctype.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "train/train_impl.h"

/* ---- devices ---- */

static int gpu_like(const char *d) {
  if (!strncasecmp(d, "cuda", 4) || !strncasecmp(d, "gpu", 3) || !strcasecmp(d, "mps") || !strncasecmp(d, "rocm", 4))
    return 1;
  if (!isdigit((unsigned char)*d)) return 0;
  for (const char *p = d; *p; p++)
    if (!isdigit((unsigned char)*p) && *p != ',') return 0;
  return 1;
}

im_status_t im_train_backend_new(const char *device, im_backend_t **out) {
  *out = NULL;
  if (!device || !*device || !strcasecmp(device, "cpu")) {
    im_status_t st = im_backend_cpu_new(out);
    if (st == IM_OK) return IM_OK;
    im_log(IM_LOG_WARN, "the cpu backend did not start (%s); using the reference kernels", im_last_error());
    return im_backend_ref_new(out);
  }
  if (!strcasecmp(device, "ref")) return im_backend_ref_new(out);
  if (gpu_like(device))
    return im_error(IM_ERR_UNSUPPORTED,
                    "--device %s asks for a GPU, but this build has no GPU backend yet; use --device cpu", device);
  return im_error(IM_ERR_ARG, "unknown device '%s': use cpu, ref, or GPU ids like 0 or 0,1", device);
}

/* ---- evaluation passes ---- */

im_status_t im__train_eval_pass(im_nn_model_t *m, im_loader_t *l, im__train_eval_acc_t *acc,
                                im_train_progress_fn progress, void *user, const char *stage, int64_t epoch,
                                int64_t epochs, int64_t step0, int64_t steps_total, const volatile sig_atomic_t *cancel) {
  im_status_t st = im_loader_start(l, 0, 0);
  if (st) return st;
  int c, h, w, k0;
  im_loader_geometry(l, &c, &h, &w, &k0);
  const int k = im_nn_model_num_classes(m);
  int64_t step = step0;
  for (;;) {
    const float *x;
    const int32_t *y;
    int n;
    if ((st = im_loader_next(l, &x, &y, &n))) return st;
    if (n == 0) break;
    if (cancel && *cancel) return im_error(IM_ERR_CANCELLED, "cancelled");
    im_tensor_t xt, logits;
    int64_t shape[4] = {n, c, h, w};
    if ((st = im_tensor_view(&xt, IM_F32, 4, shape, (void *)(uintptr_t)x))) return st;
    if ((st = im_nn_forward(m, &xt, 0, &logits))) return st;
    float loss;
    if ((st = im_nn_loss(m, y, 0.0f, &loss))) return st;
    acc->loss_sum += (double)loss * n;
    const float *z = im_tensor_f32(&logits);
    for (int i = 0; i < n; i++) {
      const float *zi = z + (size_t)i * (size_t)k;
      int best = 0;
      for (int j = 1; j < k; j++)
        if (zi[j] > zi[best]) best = j;
      acc->correct += best == y[i];
      if (acc->cap > 0 && acc->n + i < acc->cap) {
        float *p = acc->probs + (size_t)(acc->n + i) * (size_t)k;
        double mx = zi[best], sum = 0;
        for (int j = 0; j < k; j++) sum += exp((double)zi[j] - mx);
        for (int j = 0; j < k; j++) p[j] = (float)(exp((double)zi[j] - mx) / sum);
        acc->labels[acc->n + i] = y[i];
      }
    }
    acc->n += n;
    step++;
    if (progress) {
      im_train_progress_t p = {.stage = stage, .epoch = epoch, .epochs = epochs, .step = step, .steps = steps_total,
                               .loss = acc->loss_sum / (double)acc->n,
                               .accuracy = (double)acc->correct / (double)acc->n, .lr = NAN};
      progress(user, &p);
    }
  }
  return IM_OK;
}

/* ---- opening models ---- */

struct im_train_model {
  im_nn_model_t *nn;
  im_backend_t *be;
  im_nn_bundle_meta_t meta;
  char *dir, *run_id;
  char **names; /* class names when the bundle has none */
  int64_t planned;
  int c, h, w, k;
};

void im_train_model_close(im_train_model_t *m) {
  if (!m) return;
  im_nn_model_free(m->nn);
  im_backend_free(m->be);
  im_nn_bundle_meta_free(&m->meta);
  for (int i = 0; m->names && i < m->k; i++) im_free(m->names[i]);
  im_free(m->names);
  im_free(m->dir);
  im_free(m->run_id);
  im_free(m);
}

const im_nn_bundle_meta_t *im_train_model_meta(const im_train_model_t *m) { return &m->meta; }
im_nn_model_t *im_train_model_nn(im_train_model_t *m) { return m->nn; }
const char *im_train_model_dir(const im_train_model_t *m) { return m->dir; }
const char *im_train_model_run_id(const im_train_model_t *m) { return m->run_id; }
int im_train_model_num_classes(const im_train_model_t *m) { return m->k; }
const char *im_train_model_class(const im_train_model_t *m, int k) {
  if (k < 0 || k >= m->k) return "?";
  return m->meta.classes ? m->meta.classes[k] : m->names[k];
}

/* The run_id line of dir/MLmodel, if any. */
static char *mlmodel_run_id(const char *dir) {
  char *p = im_path_join(dir, "MLmodel");
  uint8_t *data = NULL;
  size_t len = 0;
  char *out = NULL;
  if (p && im_file_read(p, 1 << 20, &data, &len) == IM_OK) {
    const char *s = (const char *)data;
    for (const char *line = s; line && *line;) {
      if (!strncmp(line, "run_id:", 7)) {
        const char *v = line + 7;
        while (*v == ' ' || *v == '\'' || *v == '"') v++;
        size_t n = 0;
        while (isxdigit((unsigned char)v[n])) n++;
        if (n >= 8) out = im_strndup(v, n);
        break;
      }
      line = strchr(line, '\n');
      if (line) line++;
    }
  }
  im_free(data);
  im_free(p);
  return out;
}

im_status_t im_train_model_open(const char *uri, const char *device, const char *tracking_home,
                                im_train_model_t **out) {
  *out = NULL;
  if (!uri || !*uri) return im_error(IM_ERR_ARG, "no model given");
  im_train_model_t *m = im_calloc(1, sizeof *m);
  if (!m) return im_error(IM_ERR_NOMEM, "out of memory");
  im_status_t st = IM_OK;
  im_track_uri_t *u = NULL;
  char *local = NULL;
  if (!strncasecmp(uri, "runs:", 5) || !strncasecmp(uri, "models:", 7) || !strncasecmp(uri, "mlflow-artifacts:", 17)) {
    /* through the tracking client: the embedded store or a server; remote artifacts land in the cache */
    im_track_client_t *tc = NULL;
    if ((st = im__train_store_open(tracking_home, &tc))) goto out;
    st = im_track_client_fetch_model(tc, uri, NULL, &local, &m->run_id);
    im_track_client_close(tc);
  } else if (!strncasecmp(uri, "s3:", 3)) {
    st = im_track_artifacts_fetch(uri, NULL, &local);
  } else if (!(st = im_track_uri_parse(uri, &u)) && (!u->location || !u->is_local)) {
    st = im_error(IM_ERR_UNSUPPORTED, "model %s: only local paths, file://, s3://, runs:/ and models:/ URIs are "
                                      "supported", uri);
  } else if (!st && !(local = im_strdup(u->location))) {
    st = im_error(IM_ERR_NOMEM, "out of memory");
  }
  if (st) goto out;
  m->dir = im__train_abspath(local);
  im_free(local);
  if (!m->dir) {
    st = im_error(IM_ERR_NOMEM, "out of memory");
    goto out;
  }
  if ((st = im_train_backend_new(device, &m->be))) goto out;
  if ((st = im_nn_bundle_load(m->dir, m->be, &m->nn, &m->meta))) goto out;
  {
    /* Inference runs the folded graph (batch norm folded, ReLU fused, planned once per batch size). */
    im_nn_model_t *folded = NULL;
    if ((st = im_nn_model_fold(m->nn, &folded))) goto out;
    im_nn_model_free(m->nn);
    m->nn = folded;
  }
  if (!m->run_id) m->run_id = mlmodel_run_id(m->dir);
  m->k = im_nn_model_num_classes(m->nn);
  m->c = im_nn_model_in_channels(m->nn);
  m->h = m->meta.img_h;
  m->w = m->meta.img_w;
  if (!m->meta.classes) {
    if (!(m->names = im_calloc((size_t)m->k, sizeof *m->names))) {
      st = im_error(IM_ERR_NOMEM, "out of memory");
      goto out;
    }
    for (int i = 0; i < m->k; i++) {
      char num[16];
      snprintf(num, sizeof num, "%d", i);
      if (!(m->names[i] = im_strdup(num))) {
        st = im_error(IM_ERR_NOMEM, "out of memory");
        goto out;
      }
    }
  }
out:
  im_track_uri_free(u);
  if (st) {
    im_train_model_close(m);
    return st;
  }
  *out = m;
  return IM_OK;
}

static im_status_t ensure_plan(im_train_model_t *m, int64_t batch) {
  if (m->planned == batch) return IM_OK;
  im_status_t st = im_nn_plan(m->nn, m->be, batch, m->h, m->w, 0);
  m->planned = st == IM_OK ? batch : 0;
  return st;
}

/* ---- evaluation ---- */

static void norm_of(const im_train_model_t *m, float mean[3], float std[3]) {
  for (int c = 0; c < 3; c++) {
    mean[c] = m->meta.n_norm > c ? m->meta.mean[c] : 0.0f;
    std[c] = m->meta.n_norm > c ? m->meta.std[c] : 1.0f;
  }
}

im_status_t im_train_evaluate(im_train_model_t *m, const im_train_eval_opts_t *o, im_train_metrics_t **out) {
  *out = NULL;
  const char *split = o->split && *o->split ? o->split : "test";
  int which[3] = {0}, nsel = 0;
  if (!strcmp(split, "all")) {
    which[0] = which[1] = which[2] = 1;
  } else {
    int sp = !strcmp(split, "train") ? IM_SPLIT_TRAIN : !strcmp(split, "val") ? IM_SPLIT_VAL
                                                      : !strcmp(split, "test") ? IM_SPLIT_TEST : -1;
    if (sp < 0) return im_error(IM_ERR_ARG, "unknown split '%s': use train, val, test or all", split);
    which[sp] = 1;
  }
  if (m->h != m->w) return im_error(IM_ERR_UNSUPPORTED, "the model's input is %dx%d; data sets are square", m->w, m->h);
  double t0 = im_time_now();
  im__train_data_t d;
  im_status_t st = im__train_data_open(o->data_dir, m->h, o->prep_progress, o->user, &d);
  if (st) return st;
  im_loader_t *ld[3] = {0};
  im__train_eval_acc_t acc = {0};
  if (d.n_classes != m->k) {
    st = im_error(IM_ERR_ARG, "the data set %s has %d classes, the model %d", o->data_dir, d.n_classes, m->k);
    goto out;
  }
  for (int k = 0; m->meta.classes && k < m->k; k++)
    if (strcmp(d.classes[k], m->meta.classes[k]) != 0) {
      st = im_error(IM_ERR_ARG, "class %d of the data set %s is '%s', the model's is '%s'", k, o->data_dir,
                    d.classes[k], m->meta.classes[k]);
      goto out;
    }
  if (d.channels != m->c) {
    st = im_error(IM_ERR_ARG, "the data set %s has %d channel(s), the model takes %d", o->data_dir, d.channels, m->c);
    goto out;
  }
  const int batch = o->batch_size > 0 ? o->batch_size : 256;
  int64_t total = 0, steps = 0;
  for (int sp = 0; sp < 3; sp++) {
    if (!which[sp] || d.counts[sp] == 0) continue;
    im_loader_opts_t lo = {.cache_path = d.cache_path, .split = sp, .batch_size = batch};
    norm_of(m, lo.mean, lo.std);
    if ((st = im_loader_open(&lo, &ld[sp]))) goto out;
    total += im_loader_size(ld[sp]);
    steps += im_loader_batches(ld[sp]);
    nsel++;
  }
  if (!nsel) {
    st = im_error(IM_ERR_EMPTY, "the data set %s has no images in the %s split", o->data_dir, split);
    goto out;
  }
  if ((st = ensure_plan(m, batch))) goto out;
  acc.cap = total;
  acc.labels = im_malloc(sizeof *acc.labels * (size_t)total);
  acc.probs = im_malloc(sizeof *acc.probs * (size_t)total * (size_t)m->k);
  if (!acc.labels || !acc.probs) {
    st = im_error(IM_ERR_NOMEM, "out of memory for %lld predictions", (long long)total);
    goto out;
  }
  int64_t step0 = 0;
  for (int sp = 0; sp < 3; sp++) {
    if (!ld[sp]) continue;
    if ((st = im__train_eval_pass(m->nn, ld[sp], &acc, o->progress, o->user, "test", 1, 1, step0, steps, NULL))) goto out;
    step0 += im_loader_batches(ld[sp]);
  }
  const char *const *names = m->meta.classes ? m->meta.classes : (const char *const *)m->names;
  if ((st = im_train_metrics_compute(m->k, names, acc.n, acc.labels, acc.probs, out))) goto out;
  (*out)->loss = acc.loss_sum / (double)acc.n; /* from the logits, as training reports it */
  (*out)->seconds = im_time_now() - t0;
  snprintf((*out)->data_hash, sizeof (*out)->data_hash, "%s", d.hash);
  snprintf((*out)->split, sizeof (*out)->split, "%s", split);
out:
  for (int sp = 0; sp < 3; sp++) im_loader_close(ld[sp]);
  im_free(acc.labels);
  im_free(acc.probs);
  im__train_data_free(&d);
  return st;
}

/* ---- prediction ---- */

im_status_t im_train_model_input(const im_train_model_t *m, const im_image_t *img, float *dst) {
  im_image_t conv = {0};
  const im_image_t *src = img;
  im_status_t st;
  if (img->c != m->c) {
    if ((st = im_image_convert(img, m->c, &conv))) return st;
    src = &conv;
  }
  const size_t plane = (size_t)m->h * (size_t)m->w;
  uint8_t *buf = im_malloc(plane * (size_t)m->c);
  if (!buf) {
    im_image_free(&conv);
    return im_error(IM_ERR_NOMEM, "out of memory");
  }
  st = im_image_resize_into(src, m->w, m->h, IM_RESIZE_BILINEAR, buf);
  if (st == IM_OK) {
    float mean[3], std[3];
    norm_of(m, mean, std);
    /* The loader's arithmetic, so that an image of the training set gives the same input. */
    if (m->c == 3) { /* one pass over the pixels into the three planes (not three strided passes) */
      float sc[3], sh[3];
      for (int c = 0; c < 3; c++) {
        float sd = std[c] > 0 ? std[c] : 1.0f;
        sc[c] = 1.0f / (255.0f * sd), sh[c] = -mean[c] / sd;
      }
      float *o0 = dst, *o1 = dst + plane, *o2 = dst + 2 * plane;
      for (size_t i = 0; i < plane; i++) {
        const uint8_t *p = buf + 3 * i;
        o0[i] = (float)p[0] * sc[0] + sh[0];
        o1[i] = (float)p[1] * sc[1] + sh[1];
        o2[i] = (float)p[2] * sc[2] + sh[2];
      }
    } else {
      for (int c = 0; c < m->c; c++) {
        float sd = std[c] > 0 ? std[c] : 1.0f;
        float scale = 1.0f / (255.0f * sd), shift = -mean[c] / sd;
        float *o = dst + (size_t)c * plane;
        for (size_t i = 0; i < plane; i++) o[i] = (float)buf[i * (size_t)m->c + (size_t)c] * scale + shift;
      }
    }
  }
  im_free(buf);
  im_image_free(&conv);
  return st;
}

im_status_t im_train_predict_file(im_train_model_t *m, const char *path, float *probs) {
  return im_train_predict_file_logits(m, path, NULL, probs);
}

/* Files decoded side by side: slot i of a batch gets file i's input or its error. */
typedef struct {
  const im_train_model_t *m;
  const char *const *paths;
  float *x;
  size_t per;
  im_status_t *st;
  char (*err)[256];
} decode_job_t;

static void decode_one(void *ctx, int64_t i, int thread) {
  (void)thread;
  decode_job_t *j = ctx;
  const im_train_model_t *m = j->m;
  im_decode_opts_t dopt = IM_DECODE_OPTS_DEFAULT;
  dopt.channels = m->c;
  dopt.min_w = m->w;
  dopt.min_h = m->h;
  im_image_t img = {0};
  im_status_t st = im_image_load(j->paths[i], &dopt, &img);
  if (st == IM_OK) st = im_train_model_input(m, &img, j->x + (size_t)i * j->per);
  im_image_free(&img);
  j->st[i] = st;
  if (st != IM_OK) snprintf(j->err[i], sizeof j->err[i], "%s", im_last_error());
}

enum { PREDICT_BATCH = 64 };

im_status_t im_train_predict_files(im_train_model_t *m, const char *const *paths, int64_t n,
                                   im_train_predict_fn each, void *user) {
  if (n < 0 || (n > 0 && (!paths || !each))) return im_error(IM_ERR_ARG, "im_train_predict_files: bad arguments");
  if (n == 0) return IM_OK;
  const int64_t B = n < PREDICT_BATCH ? n : PREDICT_BATCH;
  const size_t per = (size_t)m->c * (size_t)m->h * (size_t)m->w, k = (size_t)m->k;
  float *x = im_malloc(sizeof *x * per * (size_t)B), *out = im_malloc(sizeof *out * 2 * k * (size_t)B);
  im_status_t *sts = im_malloc(sizeof *sts * (size_t)B);
  char(*err)[256] = im_malloc(sizeof *err * (size_t)B);
  int64_t *row = im_malloc(sizeof *row * (size_t)B);
  im_status_t st = x && out && sts && err && row ? IM_OK : im_error(IM_ERR_NOMEM, "out of memory for a batch of images");
  if (st == IM_OK && m->planned < B) st = ensure_plan(m, B); /* a larger plan serves as it is */
  for (int64_t s = 0; s < n && st == IM_OK; s += B) {
    const int64_t cnt = n - s < B ? n - s : B;
    decode_job_t j = {m, paths + s, x, per, sts, err};
    if ((st = im_parallel_for(cnt, 0, decode_one, &j)) != IM_OK) break;
    /* The decoded ones, packed in order. */
    int64_t ok = 0;
    for (int64_t i = 0; i < cnt; i++) {
      row[i] = sts[i] == IM_OK ? ok : -1;
      if (sts[i] != IM_OK) continue;
      if (ok != i) memmove(x + (size_t)ok * per, x + (size_t)i * per, sizeof *x * per);
      ok++;
    }
    float *lg = out, *pr = out + k * (size_t)B;
    if (ok > 0) {
      im_tensor_t xt, lt, pt;
      st = im_tensor_view(&xt, IM_F32, 4, (int64_t[]){ok, m->c, m->h, m->w}, x);
      if (st == IM_OK) st = im_tensor_view(&lt, IM_F32, 2, (int64_t[]){ok, m->k}, lg);
      if (st == IM_OK) st = im_tensor_view(&pt, IM_F32, 2, (int64_t[]){ok, m->k}, pr);
      if (st == IM_OK) st = im_nn_predict(m->nn, &xt, &lt, &pt);
      if (st != IM_OK) break;
    }
    for (int64_t i = 0; i < cnt; i++) {
      if (row[i] >= 0) {
        each(user, s + i, IM_OK, lg + (size_t)row[i] * k, pr + (size_t)row[i] * k);
      } else {
        (void)im_error(sts[i], "%s", err[i]);
        each(user, s + i, sts[i], NULL, NULL);
      }
    }
  }
  im_free(x);
  im_free(out);
  im_free(sts);
  im_free(err);
  im_free(row);
  return st;
}

typedef struct {
  float *logits, *probs;
  size_t k;
  im_status_t st;
} one_file_t;

static void one_file(void *user, int64_t i, im_status_t st, const float *logits, const float *probs) {
  (void)i;
  one_file_t *o = user;
  o->st = st;
  if (st != IM_OK) return;
  if (o->logits) memcpy(o->logits, logits, sizeof *logits * o->k);
  if (o->probs) memcpy(o->probs, probs, sizeof *probs * o->k);
}

im_status_t im_train_predict_file_logits(im_train_model_t *m, const char *path, float *logits, float *probs) {
  one_file_t o = {logits, probs, (size_t)m->k, IM_OK};
  im_status_t st = im_train_predict_files(m, &path, 1, one_file, &o);
  return st != IM_OK ? st : o.st; /* a file's error: its text is still the last one */
}

/* ---- logging an evaluation ---- */

static json_t *metrics_json(const im_train_metrics_t *mt) {
  json_t *per = json_object(), *cm = json_array();
  for (int k = 0; k < mt->n_classes; k++) {
    json_object_set_new(per, mt->classes[k],
                        json_pack("{s:f, s:f, s:f, s:I}", "precision", mt->precision[k], "recall", mt->recall[k], "f1",
                                  mt->f1[k], "support", (json_int_t)mt->support[k]));
    json_t *row = json_array();
    for (int j = 0; j < mt->n_classes; j++)
      json_array_append_new(row, json_integer(mt->confusion[(size_t)k * (size_t)mt->n_classes + (size_t)j]));
    json_array_append_new(cm, row);
  }
  json_t *j = json_pack("{s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:o, s:o}", "n", (json_int_t)mt->n, "loss", mt->loss,
                        "accuracy", mt->accuracy, "macro_precision", mt->macro_precision, "macro_recall",
                        mt->macro_recall, "macro_f1", mt->macro_f1, "weighted_f1", mt->weighted_f1, "per_class", per,
                        "confusion_matrix", cm);
  json_object_set_new(j, "roc_auc", isfinite(mt->roc_auc) ? json_real(mt->roc_auc) : json_null());
  return j;
}

im_status_t im_train_track_eval(const im_train_model_t *m, const im_train_metrics_t *mt, const char *data_dir,
                                const char *tracking_home, const char *experiment, char **run_id_out) {
  if (run_id_out) *run_id_out = NULL;
  im_track_client_t *s = NULL;
  im_status_t st = im__train_store_open(tracking_home, &s);
  if (st) return st;
  char *run_id = NULL, *exp_id = NULL, *dir = NULL, *path = NULL, *text = NULL;
  im_track_metric_in_t *ms = NULL;
  char (*keys)[256] = NULL;
  int created = 0;
  im_track_run_t *run = NULL;
  if (m->run_id && im_track_client_run_get(s, m->run_id, &run) == IM_OK && !strcmp(run->lifecycle_stage, "active")) {
    run_id = im_strdup(m->run_id);
  } else {
    char user[128];
    im_track_kv_t tags[3] = {{"mlflow.source.name", "imops test"}, {"mlflow.source.type", "LOCAL"},
                             {"mlflow.user", im__train_user(user, sizeof user)}};
    if ((st = im_track_client_experiment_id(s, experiment, &exp_id))) goto out;
    im_track_run_t *nr = NULL;
    im_track_run_create_t rc = {.experiment_id = exp_id, .user_id = user, .tags = tags, .n_tags = 3};
    if ((st = im_track_client_run_create(s, &rc, &nr))) goto out;
    run_id = im_strdup(nr->run_id);
    im_track_run_free(nr);
    created = 1;
    im_track_kv_t param = {"model", m->dir};
    if (run_id && (st = im_track_client_log_batch(s, run_id, NULL, 0, &param, 1, NULL, 0))) goto out;
  }
  if (!run_id) {
    st = im_error(IM_ERR_NOMEM, "out of memory");
    goto out;
  }
  const int k = mt->n_classes;
  const int nm = 7 + 3 * k;
  ms = im_calloc((size_t)nm, sizeof *ms);
  keys = im_calloc((size_t)nm, sizeof *keys);
  if (!ms || !keys) {
    st = im_error(IM_ERR_NOMEM, "out of memory");
    goto out;
  }
  int64_t now = im_time_wall_ms();
  int n = 0;
  const char *names[7] = {"test_loss", "test_accuracy", "test_macro_precision", "test_macro_recall", "test_macro_f1",
                          "test_weighted_f1", "test_roc_auc"};
  const double vals[7] = {mt->loss, mt->accuracy, mt->macro_precision, mt->macro_recall, mt->macro_f1, mt->weighted_f1,
                          mt->roc_auc};
  for (int i = 0; i < 7; i++) {
    if (!isfinite(vals[i])) continue;
    ms[n++] = (im_track_metric_in_t){names[i], vals[i], now, 0};
  }
  for (int c = 0; c < k; c++) {
    const char *pre[3] = {"test_precision_", "test_recall_", "test_f1_"};
    const double v[3] = {mt->precision[c], mt->recall[c], mt->f1[c]};
    for (int q = 0; q < 3; q++) {
      im__train_metric_key(keys[n], sizeof keys[n], pre[q], mt->classes[c]);
      ms[n] = (im_track_metric_in_t){keys[n], v[q], now, 0};
      n++;
    }
  }
  if ((st = im_track_client_log_batch(s, run_id, ms, n, NULL, 0, NULL, 0))) goto out;
  im_track_kv_t tags[3] = {{"imops.test_data", data_dir ? data_dir : ""}, {"imops.test_data_hash", mt->data_hash},
                           {"imops.test_split", mt->split}};
  if ((st = im_track_client_log_batch(s, run_id, NULL, 0, NULL, 0, tags, 3))) goto out;
  /* Artifacts: the confusion matrix plot and the metrics as JSON, wherever the run's artifacts live. */
  {
    char tmpl[] = "/tmp/imops-test-XXXXXX";
    if (!mkdtemp(tmpl)) {
      st = im_error(IM_ERR_IO, "cannot make a temporary directory: %s", strerror(errno));
      goto out;
    }
    path = im_path_join(tmpl, "confusion_matrix.svg");
    if (!path) st = im_error(IM_ERR_NOMEM, "out of memory");
    if (!st) st = im__train_plot_confusion(path, k, (const char *const *)mt->classes, mt->confusion);
    if (!st) st = im_track_client_log_artifacts(s, run_id, path, "plots/confusion_matrix.svg");
    if (path) unlink(path);
    rmdir(tmpl);
    if (st) goto out;
    json_t *j = metrics_json(mt);
    text = j ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    if (!text) st = im_error(IM_ERR_NOMEM, "out of memory");
    if (!st) st = im__train_log_bytes(s, run_id, "test_metrics.json", text, strlen(text));
    if (st) goto out;
  }
  if (created) {
    im_track_run_update_t up = {.status = IM_TRACK_RUN_FINISHED, .end_time = im_time_wall_ms()};
    st = im_track_client_run_update(s, run_id, &up);
  }
out:
  if (st && created && run_id) {
    im_track_run_update_t up = {.status = IM_TRACK_RUN_FAILED, .end_time = im_time_wall_ms()};
    (void)im_track_client_run_update(s, run_id, &up);
  }
  if (st == IM_OK && run_id_out) {
    *run_id_out = run_id;
    run_id = NULL;
  }
  free(text);
  im_free(ms);
  im_free(keys);
  im_free(dir);
  im_free(path);
  im_free(run_id);
  im_free(exp_id);
  im_track_run_free(run);
  im_track_client_close(s);
  return st;
}
