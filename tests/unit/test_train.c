/* Unit tests of src/train on a tiny, trivially separable data set made here
 * (two classes of 16x16 images, dark and bright, preprocessed at 8x8):
 * training reaches 100%, determinism, exact resume (from an epoch boundary,
 * with more epochs, from a mid-epoch step checkpoint, after a cancel),
 * checkpoint verification and fallback, early stopping, evaluation metrics
 * against hand-computed values (confusion matrix, precision/recall/F1, ROC
 * AUC with ties), prediction parity with the cache, GPU devices refused,
 * the trainer state's parser on a real state and damaged ones, and the
 * tracked run (metrics, status, runs:/ URI, logged evaluation). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imops/core.h"
#include "imops/data.h"
#include "imops/image.h"
#include "imops/tensor.h"
#include "imops/track.h"
#include "imops/train.h"
#include "testutil.h"
#include "train/train_impl.h"

#define OK(e) assert_int_equal((e), IM_OK)

enum { PER_CLASS = 16, SRC = 16, S = 8 };

static const char *data_dir;

/* Class "dark": pixels around 50, class "bright": around 200, with noise and
 * a few pixels of the other level so that the images are not constant. */
static int make_data(void **state) {
  const char *root = tu_tmpdir();
  data_dir = root;
  mkdir(tu_path(root, "bright"), 0755);
  mkdir(tu_path(root, "dark"), 0755);
  im_rng_t r;
  im_rng_seed(&r, 7);
  for (int cls = 0; cls < 2; cls++)
    for (int i = 0; i < PER_CLASS; i++) {
      im_image_t img;
      if (im_image_alloc(&img, SRC, SRC, 3) != IM_OK) return -1;
      int base = cls ? 50 : 200; /* class 0 is "bright" (sorted names) */
      for (int p = 0; p < SRC * SRC * 3; p++) img.data[p] = (uint8_t)(base - 30 + (int)im_rng_below(&r, 61));
      for (int k = 0; k < 6; k++) img.data[3 * im_rng_below(&r, SRC * SRC)] = (uint8_t)(250 - base);
      char name[64];
      snprintf(name, sizeof name, "%s/%03d.png", cls ? "dark" : "bright", i);
      im_status_t st = im_image_save(tu_path(root, name), &img, 0);
      im_image_free(&img);
      if (st) return -1;
    }
  im_preprocess_opts_t o = {.data_dir = root, .img_size = S, .ratios = {0.5, 0.25, 0.25}, .seed = 3};
  im_preprocess_result_t *res = NULL;
  im_status_t st = im_data_preprocess(&o, &res);
  im_preprocess_result_free(res);
  return st == IM_OK ? 0 : -1;
}

static int cleanup(void **state) {
  tu_rmtree(data_dir);
  return 0;
}

static im_train_opts_t base_opts(const char *out) {
  im_train_opts_t o = im_train_defaults();
  o.data_dir = data_dir;
  o.model = "smallcnn";
  o.epochs = 3;
  o.batch_size = 4;
  o.lr = 0.05;
  o.weight_decay = 0;
  o.device = "ref";
  o.track = 0;
  o.output = out;
  o.checkpoint_seconds = 0;
  o.final_weights_last = 1;
  return o;
}

/* 1 when the two safetensors files hold the same tensors, bit for bit. */
static int same_weights(const char *a, const char *b) {
  im_safetensors_t *x = NULL, *y = NULL;
  OK(im_safetensors_load(a, 0, &x));
  OK(im_safetensors_load(b, 0, &y));
  int same = im_safetensors_count(x) == im_safetensors_count(y);
  for (size_t i = 0; same && i < im_safetensors_count(x); i++) {
    im_tensor_t tx, ty;
    const char *name = im_safetensors_name(x, i);
    same = im_safetensors_get(x, name, &tx) == IM_OK && im_safetensors_get(y, name, &ty) == IM_OK &&
           im_tensor_same_shape(&tx, &ty) && memcmp(tx.data, ty.data, im_tensor_nbytes(&tx)) == 0;
  }
  im_safetensors_free(x);
  im_safetensors_free(y);
  return same;
}

static const char *model_file(const char *out) { return tu_path(tu_path(out, "model"), "model.safetensors"); }

static void copy_dir(const char *src, const char *dst) {
  mkdir(dst, 0755);
  DIR *d = opendir(src);
  assert_non_null(d);
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    uint8_t *data;
    size_t len;
    OK(im_file_read(tu_path(src, e->d_name), 0, &data, &len));
    assert_int_equal(tu_write_file(tu_path(dst, e->d_name), data, len), 0);
    im_free(data);
  }
  closedir(d);
}


/* im_train_predict_files' callback in the test below: what each call saw. */
typedef struct {
  int n, order[80];
  im_status_t st[80];
  float probs[80][2];
  char err40[256];
} predict_seen_t;

static void predict_seen(void *user, int64_t i, im_status_t st, const float *logits, const float *probs) {
  predict_seen_t *s = user;
  if (s->n >= 80) return;
  s->order[s->n++] = (int)i;
  s->st[i] = st;
  if (st == IM_OK) {
    assert_non_null(logits);
    s->probs[i][0] = probs[0], s->probs[i][1] = probs[1];
  } else {
    assert_null(logits);
    if (i == 40) snprintf(s->err40, sizeof s->err40, "%s", im_last_error());
  }
}

static void test_learns_trivial_set(void **state) {
  const char *out = tu_path(tu_tmpdir(), "out");
  im_train_opts_t o = base_opts(out);
  im_train_result_t *r = NULL;
  OK(im_train_run(&o, &r));
  assert_int_equal(r->epochs_done, 3);
  assert_int_equal(r->n_train, 16);
  assert_int_equal(r->n_val, 8);
  assert_int_equal(r->n_epochs, 3);
  assert_true(r->history[2].train_loss < r->history[0].train_loss);
  assert_true(r->history[2].val_accuracy == 1.0);
  assert_true(r->best_val_accuracy == 1.0);
  assert_int_equal(r->global_step, 12);
  assert_string_equal(r->backend, "ref");
  struct stat sb;
  assert_int_equal(stat(tu_path(tu_path(out, "model"), "model.json"), &sb), 0);
  assert_int_equal(stat(tu_path(tu_path(out, "model"), "MLmodel"), &sb), 0);
  im_train_checkpoint_t *c = NULL;
  OK(im_train_checkpoint_open(out, &c)); /* finds out/last */
  assert_int_equal(c->epoch, 3);
  assert_int_equal(c->batch, 0);
  assert_int_equal(c->global_step, 12);
  assert_int_equal(c->from_previous, 0);
  im_train_checkpoint_free(c);
  OK(im_train_checkpoint_open(tu_path(out, "best"), &c));
  im_train_checkpoint_free(c);

  /* Evaluation and prediction on the trained model. */
  im_train_model_t *m = NULL;
  OK(im_train_model_open(tu_path(out, "model"), "ref", NULL, &m));
  assert_int_equal(im_train_model_num_classes(m), 2);
  assert_string_equal(im_train_model_class(m, 0), "bright");
  im_train_eval_opts_t eo = {.data_dir = data_dir, .split = "test"};
  im_train_metrics_t *mt = NULL;
  OK(im_train_evaluate(m, &eo, &mt));
  assert_int_equal(mt->n, 8);
  assert_true(mt->accuracy == 1.0);
  assert_true(mt->roc_auc == 1.0);
  assert_int_equal(mt->confusion[0] + mt->confusion[3], 8);
  im_train_metrics_free(mt);
  eo.split = "all";
  OK(im_train_evaluate(m, &eo, &mt));
  assert_int_equal(mt->n, 2 * PER_CLASS);
  im_train_metrics_free(mt);
  eo.split = "bogus";
  assert_int_equal(im_train_evaluate(m, &eo, &mt), IM_ERR_ARG);
  float probs[2];
  OK(im_train_predict_file(m, tu_path(data_dir, "dark/003.png"), probs));
  assert_true(probs[1] > 0.5f);
  assert_true(fabsf(probs[0] + probs[1] - 1.0f) < 1e-5f);
  OK(im_train_predict_file(m, tu_path(data_dir, "bright/004.png"), probs));
  assert_true(probs[0] > 0.5f);
  assert_int_not_equal(im_train_predict_file(m, tu_path(data_dir, "nope.png"), probs), IM_OK);
  assert_non_null(strstr(im_last_error(), "nope.png"));
  {
    /* Many files at once (two batches of up to 64): each answered in order, a missing one with its
     * error, the others with the probabilities a single file gets. */
    enum { NF = 70 };
    char *paths[NF];
    for (int i = 0; i < NF; i++) {
      const char *f = i == 40 ? "nope.png" : i % 2 ? "dark/003.png" : "bright/004.png";
      paths[i] = strdup(tu_path(data_dir, f));
    }
    predict_seen_t seen = {0};
    OK(im_train_predict_files(m, (const char *const *)paths, NF, predict_seen, &seen));
    assert_int_equal(seen.n, NF);
    float dark[2], bright[2];
    OK(im_train_predict_file(m, paths[1], dark));
    OK(im_train_predict_file(m, paths[0], bright));
    for (int i = 0; i < NF; i++) {
      assert_int_equal(seen.order[i], i);
      if (i == 40) {
        assert_int_equal(seen.st[i], IM_ERR_NOT_FOUND);
        continue;
      }
      OK(seen.st[i]);
      const float *want = i % 2 ? dark : bright;
      for (int c = 0; c < 2; c++) assert_true(fabsf(seen.probs[i][c] - want[c]) < 1e-5f);
    }
    assert_non_null(strstr(seen.err40, "nope.png"));
    for (int i = 0; i < NF; i++) free(paths[i]);
    assert_int_equal(im_train_predict_files(m, NULL, 3, predict_seen, &seen), IM_ERR_ARG);
    OK(im_train_predict_files(m, NULL, 0, NULL, NULL));
  }

  /* Prediction sees exactly the input training saw: the cache's pixels, normalized. */
  im_cache_t *cache;
  OK(im_cache_open(tu_path(data_dir, ".imops/cache-8.bin"), &cache));
  im_decode_opts_t dopt = IM_DECODE_OPTS_DEFAULT;
  dopt.min_w = dopt.min_h = S;
  dopt.channels = 3;
  im_image_t img = {0};
  OK(im_image_load(tu_path(data_dir, "bright/002.png"), &dopt, &img));
  float x[3 * S * S];
  OK(im_train_model_input(m, &img, x));
  im_image_free(&img);
  const im_nn_bundle_meta_t *meta = im_train_model_meta(m);
  const uint8_t *px = im_cache_pixels(cache, 2); /* files are sorted: bright/000..015 first */
  for (int c = 0; c < 3; c++)
    for (int i = 0; i < S * S; i++) {
      float sd = meta->std[c], want = (float)px[i * 3 + c] * (1.0f / (255.0f * sd)) + -meta->mean[c] / sd;
      assert_true(x[c * S * S + i] == want);
    }
  im_cache_close(cache);
  im_train_model_close(m);
  im_train_result_free(r);
}

static void test_deterministic(void **state) {
  const char *t = tu_tmpdir();
  im_train_opts_t o = base_opts(tu_path(t, "a"));
  OK(im_train_run(&o, NULL));
  o.output = tu_path(t, "b");
  OK(im_train_run(&o, NULL));
  assert_true(same_weights(model_file(tu_path(t, "a")), model_file(tu_path(t, "b"))));
  o.seed = 43;
  o.output = tu_path(t, "c");
  OK(im_train_run(&o, NULL));
  assert_false(same_weights(model_file(tu_path(t, "a")), model_file(tu_path(t, "c"))));
  /* The cpu backend too (same thread count). */
  o.seed = 42;
  o.device = "cpu";
  o.output = tu_path(t, "d");
  OK(im_train_run(&o, NULL));
  o.output = tu_path(t, "e");
  OK(im_train_run(&o, NULL));
  assert_true(same_weights(model_file(tu_path(t, "d")), model_file(tu_path(t, "e"))));
  tu_rmtree(t);
}

typedef struct {
  int64_t cancel_at;
  int64_t snapshot_at;
  const char *last_dir, *snap_dir;
  volatile sig_atomic_t flag;
} hook_t;

static void hook_progress(void *user, const im_train_progress_t *p) {
  hook_t *h = user;
  if (strcmp(p->stage, "train") != 0) return;
  if (h->cancel_at && p->global_step == h->cancel_at) h->flag = 1;
  if (h->snapshot_at && p->global_step == h->snapshot_at) copy_dir(h->last_dir, h->snap_dir);
}

/* Makes o stop (as on Ctrl-C) once step `step` has been reported: the stop is
 * seen after the next step. */
static void arm_cancel(im_train_opts_t *o, hook_t *h, int64_t step) {
  *h = (hook_t){.cancel_at = step};
  o->progress = hook_progress;
  o->user = h;
  o->cancel = &h->flag;
}

static void test_resume_is_exact(void **state) {
  const char *t = tu_tmpdir();
  /* The reference: 3 uninterrupted epochs of a cosine over 3 epochs. */
  im_train_opts_t o = base_opts(tu_path(t, "ref"));
  o.t_max = 3;
  OK(im_train_run(&o, NULL));
  const char *want = model_file(tu_path(t, "ref"));

  /* 1 epoch (finished), then resumed with --epochs 3. */
  o.output = tu_path(t, "ext");
  o.epochs = 1;
  im_train_result_t *r = NULL;
  OK(im_train_run(&o, &r));
  assert_int_equal(r->epochs_done, 1);
  im_train_result_free(r);
  im_train_opts_t ro = im_train_defaults();
  ro.resume = tu_path(t, "ext");
  ro.epochs = 3;
  ro.device = "ref";
  ro.track = 0;
  OK(im_train_run(&ro, &r));
  assert_int_equal(r->epochs_done, 3);
  assert_int_equal(r->n_epochs, 3);
  assert_true(r->resumed);
  im_train_result_free(r);
  assert_true(same_weights(want, model_file(tu_path(t, "ext"))));

  /* Cancelled mid-epoch (checkpoint at the exact step), then resumed. */
  o.epochs = 3;
  o.output = tu_path(t, "cancel");
  hook_t h;
  arm_cancel(&o, &h, 6);
  assert_int_equal(im_train_run(&o, &r), IM_ERR_CANCELLED);
  assert_non_null(r);
  assert_int_equal(r->global_step, 7);
  assert_int_equal(r->epochs_done, 1);
  im_train_result_free(r);
  im_train_checkpoint_t *c = NULL;
  OK(im_train_checkpoint_open(tu_path(t, "cancel"), &c));
  assert_int_equal(c->global_step, 7);
  assert_int_equal(c->epoch, 1);
  assert_int_equal(c->batch, 3);
  im_train_checkpoint_free(c);
  ro.resume = tu_path(t, "cancel/last");
  ro.epochs = 0;
  OK(im_train_run(&ro, NULL));
  assert_true(same_weights(want, model_file(tu_path(t, "cancel"))));

  /* A crash: resume from the step checkpoint that was on disk at step 3
   * (written at step 2 by checkpoint_every), not from the crash point. */
  o.output = tu_path(t, "crash");
  o.checkpoint_every = 2;
  h = (hook_t){.snapshot_at = 3, .last_dir = tu_path(tu_path(t, "crash"), "last"), .snap_dir = tu_path(t, "snap")};
  o.cancel = NULL;
  OK(im_train_run(&o, NULL));
  OK(im_train_checkpoint_open(tu_path(t, "snap"), &c));
  assert_int_equal(c->global_step, 2);
  assert_int_equal(c->batch, 2);
  im_train_checkpoint_free(c);
  assert_int_equal(unlink(model_file(tu_path(t, "crash"))), 0);
  ro.resume = tu_path(t, "snap");
  OK(im_train_run(&ro, NULL));
  assert_true(same_weights(want, model_file(tu_path(t, "crash"))));

  /* max_steps stops like a cancel; resuming finishes the same way. */
  o.output = tu_path(t, "steps");
  o.checkpoint_every = 0;
  o.progress = NULL;
  o.max_steps = 4; /* the end of epoch 1, before its validation */
  assert_int_equal(im_train_run(&o, NULL), IM_ERR_CANCELLED);
  OK(im_train_checkpoint_open(tu_path(t, "steps"), &c));
  assert_int_equal(c->batch, 4);
  assert_int_equal(c->epoch, 0);
  im_train_checkpoint_free(c);
  ro.resume = tu_path(t, "steps");
  OK(im_train_run(&ro, &r));
  assert_int_equal(r->n_epochs, 3);
  assert_true(r->history[0].val_accuracy >= 0);
  im_train_result_free(r);
  assert_true(same_weights(want, model_file(tu_path(t, "steps"))));
  tu_rmtree(t);
}

/* Dropout on: the masks come from the model's random stream, which the
 * checkpoint saves, so a run cancelled mid-epoch and resumed still ends with
 * the uninterrupted run's weights. */
static void test_resume_with_dropout(void **state) {
  const char *t = tu_tmpdir();
  im_train_opts_t o = base_opts(tu_path(t, "ref"));
  o.t_max = 3;
  o.dropout = 0.5f;
  OK(im_train_run(&o, NULL));
  const char *want = model_file(tu_path(t, "ref"));
  /* The masks matter: without dropout the weights differ. */
  o.dropout = 0;
  o.output = tu_path(t, "nodrop");
  OK(im_train_run(&o, NULL));
  assert_false(same_weights(want, model_file(tu_path(t, "nodrop"))));
  o.dropout = 0.5f;
  /* Cancelled at step 6 of 12 (inside epoch 2), then resumed. */
  o.output = tu_path(t, "cancel");
  hook_t h;
  arm_cancel(&o, &h, 5);
  assert_int_equal(im_train_run(&o, NULL), IM_ERR_CANCELLED);
  im_train_checkpoint_t *c = NULL;
  OK(im_train_checkpoint_open(tu_path(t, "cancel"), &c));
  assert_int_equal(c->global_step, 6);
  assert_int_equal(c->epoch, 1);
  assert_int_equal(c->batch, 2);
  /* The trainer state carries the stream: four 64-bit words in hex. */
  uint8_t *js = NULL;
  size_t len = 0;
  OK(im_file_read(c->trainer_path, 0, &js, &len));
  assert_non_null(strstr((const char *)js, "\"model_rng\""));
  im_free(js);
  im_train_checkpoint_free(c);
  im_train_opts_t ro = im_train_defaults();
  ro.resume = tu_path(t, "cancel/last");
  ro.epochs = 0; /* the checkpoint's */
  ro.device = "ref";
  ro.track = 0;
  OK(im_train_run(&ro, NULL));
  assert_true(same_weights(want, model_file(tu_path(t, "cancel"))));
  tu_rmtree(t);
}

static void test_checkpoint_damage(void **state) {
  const char *t = tu_tmpdir(), *out = tu_path(t, "out");
  im_train_opts_t o = base_opts(out);
  o.epochs = 2;
  OK(im_train_run(&o, NULL));
  const char *last = tu_path(out, "last");
  im_train_checkpoint_t *c = NULL;
  OK(im_train_checkpoint_open(last, &c));
  assert_int_equal(c->epoch, 2);
  char *state_path = im_strdup(c->state_path);
  im_train_checkpoint_free(c);
  /* Two generations are kept: the current and the previous one. */
  int n = 0;
  DIR *d = opendir(last);
  struct dirent *e;
  while ((e = readdir(d))) n += !strncmp(e->d_name, "state-", 6);
  closedir(d);
  assert_int_equal(n, 2);

  /* A short state file: the previous checkpoint (epoch 1) is used. */
  assert_int_equal(truncate(state_path, 100), 0);
  OK(im_train_checkpoint_open(last, &c));
  assert_int_equal(c->from_previous, 1);
  assert_int_equal(c->epoch, 1);
  im_train_checkpoint_free(c);
  /* Without the previous one: a clear error naming the damaged file. */
  assert_int_equal(unlink(tu_path(last, "manifest-prev.json")), 0);
  assert_int_equal(im_train_checkpoint_open(last, &c), IM_ERR_FORMAT);
  assert_non_null(strstr(im_last_error(), "state-"));
  /* A missing file, and a manifest that is not JSON. */
  assert_int_equal(unlink(state_path), 0);
  assert_int_equal(im_train_checkpoint_open(last, &c), IM_ERR_FORMAT);
  assert_non_null(strstr(im_last_error(), "missing"));
  assert_int_equal(tu_write_file(tu_path(last, "manifest.json"), "{not json", 9), 0);
  assert_int_equal(im_train_checkpoint_open(last, &c), IM_ERR_FORMAT);
  /* Resuming from a damaged checkpoint fails cleanly. */
  im_train_opts_t ro = im_train_defaults();
  ro.resume = out;
  ro.epochs = 0;
  ro.device = "ref";
  ro.track = 0;
  assert_int_equal(im_train_run(&ro, NULL), IM_ERR_FORMAT);
  assert_int_equal(im_train_checkpoint_open(tu_path(t, "nothing"), &c), IM_ERR_NOT_FOUND);
  im_free(state_path);
  tu_rmtree(t);
}

/* A copy of text with the first `from` replaced by `to` (from must occur). */
static char *replaced(const char *text, const char *from, const char *to) {
  const char *at = strstr(text, from);
  assert_non_null(at);
  size_t n = strlen(text) - strlen(from) + strlen(to) + 1, head = (size_t)(at - text);
  char *r = malloc(n);
  assert_non_null(r);
  memcpy(r, text, head);
  snprintf(r + head, n - head, "%s%s", to, at + strlen(from));
  return r;
}

static void test_trainer_state_parse(void **state) {
  const char *t = tu_tmpdir(), *out = tu_path(t, "out");
  im_train_opts_t o = base_opts(out);
  o.epochs = 1;
  OK(im_train_run(&o, NULL));
  im_train_checkpoint_t *c = NULL;
  OK(im_train_checkpoint_open(tu_path(out, "last"), &c));
  uint8_t *data = NULL;
  size_t len = 0;
  OK(im_file_read(c->trainer_path, 0, &data, &len));
  im_train_checkpoint_free(c);
  char *text = malloc(len + 1);
  assert_non_null(text);
  memcpy(text, data, len);
  text[len] = '\0';
  im_free(data);
  /* the real state: its counters, history, random stream and options */
  im_train_opts_t ro = im_train_defaults();
  im__train_state_t s;
  OK(im__train_state_parse(text, len, &ro, &s));
  assert_int_equal(s.epoch, 1);
  assert_int_equal(s.batch, 0);
  assert_true(s.steps_per_epoch > 0);
  assert_int_equal(s.global_step, s.steps_per_epoch);
  assert_int_equal(s.n_hist, 1);
  assert_int_equal(s.hist[0].epoch, 1);
  assert_true(s.has_rng);
  assert_non_null(s.data_hash);
  assert_int_equal(ro.epochs, 1);
  assert_int_equal(ro.batch_size, o.batch_size);
  assert_string_equal(ro.model, o.model);
  im__train_state_free(&s);
  /* damaged states: IM_ERR_FORMAT naming what is wrong */
  static const struct {
    const char *from, *to, *msg;
  } bad[] = {
      {"\"batch\": 0", "\"batch\": 99999", "do not fit together"},
      {"\"global_step\"", "\"global_step\": -3, \"x\"", "\"global_step\" is not a count"},
      {"\"format\": \"imops-trainer-state\"", "\"format\": \"other\"", "not an imops trainer state"},
      {"\"version\": 1", "\"version\": 7", "version 7"},
      {"\"epoch_loss_sum\"", "\"epoch_loss_sum\": \"x\", \"y\"", "\"epoch_loss_sum\" is not a finite number"},
      {"\"data_hash\"", "\"dat_hash\"", "data_hash"},
      {"\"model_rng\": [", "\"model_rng\": [\"zz\", ", "random stream"},
      {"\"dropout\": ", "\"dropout\": 1e300, \"x\": ", "dropout is out of range"},
      {"\"history\": [", "\"history\": [7, ", "history entry 0"},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    char *b = replaced(text, bad[i].from, bad[i].to);
    ro = im_train_defaults();
    assert_int_equal(im__train_state_parse(b, strlen(b), &ro, &s), IM_ERR_FORMAT);
    if (!strstr(im_last_error(), bad[i].msg)) fail_msg("case %zu: '%s' does not say '%s'", i, im_last_error(), bad[i].msg);
    im__train_state_free(&s);
    free(b);
  }
  assert_int_equal(im__train_state_parse("{", 1, &ro, &s), IM_ERR_FORMAT);
  im__train_state_free(&s);
  free(text);
  tu_rmtree(t);
}

static void test_early_stopping(void **state) {
  const char *t = tu_tmpdir();
  im_train_opts_t o = base_opts(tu_path(t, "out"));
  o.epochs = 6;
  o.lr = 0; /* nothing improves after the first epoch */
  o.early_stopping = 2;
  o.final_weights_last = 0;
  im_train_result_t *r = NULL;
  OK(im_train_run(&o, &r));
  assert_true(r->stopped_early);
  assert_int_equal(r->epochs_done, 3);
  assert_int_equal(r->best_epoch, 1);
  im_train_result_free(r);
  tu_rmtree(t);
}

static void test_metrics(void **state) {
  /* 3 classes, 8 samples; predictions are the argmax of these rows. */
  const int32_t y[8] = {0, 0, 0, 1, 1, 2, 2, 2};
  const int pred[8] = {0, 0, 1, 1, 2, 2, 2, 0};
  float p[8 * 3];
  for (int i = 0; i < 8; i++)
    for (int k = 0; k < 3; k++) p[i * 3 + k] = k == pred[i] ? 0.8f : 0.1f;
  im_train_metrics_t *m = NULL;
  const char *const names[3] = {"a", "b", "c"};
  OK(im_train_metrics_compute(3, names, 8, y, p, &m));
  const int64_t cm[9] = {2, 1, 0, 0, 1, 1, 1, 0, 2};
  for (int i = 0; i < 9; i++) assert_int_equal(m->confusion[i], cm[i]);
  assert_true(fabs(m->accuracy - 5.0 / 8) < 1e-12);
  /* precision: a 2/3, b 1/2, c 2/3; recall: a 2/3, b 1/2, c 2/3 */
  assert_true(fabs(m->precision[0] - 2.0 / 3) < 1e-12 && fabs(m->recall[0] - 2.0 / 3) < 1e-12);
  assert_true(fabs(m->precision[1] - 0.5) < 1e-12 && fabs(m->recall[1] - 0.5) < 1e-12);
  assert_true(fabs(m->f1[2] - 2.0 / 3) < 1e-12);
  assert_true(fabs(m->macro_f1 - (2.0 / 3 + 0.5 + 2.0 / 3) / 3) < 1e-12);
  assert_true(fabs(m->weighted_f1 - (3 * 2.0 / 3 + 2 * 0.5 + 3 * 2.0 / 3) / 8) < 1e-12);
  assert_int_equal(m->support[2], 3);
  assert_true(fabs(m->loss - (-(5 * log(0.8f) + 3 * log(0.1f)) / 8)) < 1e-6);
  assert_true(isnan(m->roc_auc));
  assert_string_equal(m->classes[1], "b");
  im_train_metrics_free(m);

  /* A class never predicted and one never present: zero, not NaN (sklearn's zero_division=0). */
  const int32_t y2[2] = {0, 0};
  const float p2[4] = {0.9f, 0.1f, 0.2f, 0.8f};
  OK(im_train_metrics_compute(2, NULL, 2, y2, p2, &m));
  assert_true(m->precision[1] == 0 && m->recall[1] == 0 && m->f1[1] == 0);
  assert_true(m->precision[0] == 1 && m->recall[0] == 0.5);
  assert_string_equal(m->classes[1], "1");
  assert_true(isnan(m->roc_auc)); /* one class only */
  im_train_metrics_free(m);
  const int32_t bad[1] = {5};
  assert_int_equal(im_train_metrics_compute(2, NULL, 1, bad, p2, &m), IM_ERR_ARG);

  /* ROC AUC by ranks. */
  const int32_t l4[4] = {0, 0, 1, 1};
  const double s4[4] = {0.1, 0.4, 0.35, 0.8};
  assert_true(fabs(im_train_roc_auc(4, l4, s4) - 0.75) < 1e-12);
  const int32_t lt[4] = {0, 1, 0, 1};
  const double st[4] = {0.5, 0.5, 0.2, 0.9}; /* a tie counts half: (0.5 + 1 + 1 + 1) / 4 */
  assert_true(fabs(im_train_roc_auc(4, lt, st) - 0.875) < 1e-12);
  const double all[4] = {0.3, 0.3, 0.3, 0.3};
  assert_true(fabs(im_train_roc_auc(4, lt, all) - 0.5) < 1e-12);
  const double perfect[4] = {0.0, 1.0, 0.1, 0.7};
  assert_true(im_train_roc_auc(4, lt, perfect) == 1.0);
  /* Two classes through compute: the score is class 1's probability. */
  const int32_t y4[4] = {0, 0, 1, 1};
  const float p4[8] = {0.9f, 0.1f, 0.6f, 0.4f, 0.65f, 0.35f, 0.2f, 0.8f};
  OK(im_train_metrics_compute(2, NULL, 4, y4, p4, &m));
  assert_true(fabs(m->roc_auc - 0.75) < 1e-6);
  im_train_metrics_free(m);
}

static void test_devices(void **state) {
  im_backend_t *b = NULL;
  assert_int_equal(im_train_backend_new("0", &b), IM_ERR_UNSUPPORTED);
  assert_non_null(strstr(im_last_error(), "GPU"));
  assert_int_equal(im_train_backend_new("0,1,2,3", &b), IM_ERR_UNSUPPORTED);
  assert_int_equal(im_train_backend_new("cuda:1", &b), IM_ERR_UNSUPPORTED);
  assert_int_equal(im_train_backend_new("tpu", &b), IM_ERR_ARG);
  assert_null(b);
  OK(im_train_backend_new("ref", &b));
  assert_string_equal(im_backend_name(b), "ref");
  im_backend_free(b);
  OK(im_train_backend_new(NULL, &b));
  im_backend_free(b);
  im_train_opts_t o = base_opts(tu_path(tu_tmpdir(), "gpu"));
  o.device = "1";
  assert_int_equal(im_train_run(&o, NULL), IM_ERR_UNSUPPORTED);
  assert_non_null(strstr(im_last_error(), "GPU"));
  o.device = "ref";
  o.batch_size = 0;
  assert_int_equal(im_train_run(&o, NULL), IM_ERR_ARG);
  o.batch_size = 4;
  o.model = "no-such-net";
  assert_int_equal(im_train_run(&o, NULL), IM_ERR_NOT_FOUND);
  assert_int_equal(im_train_sched_parse("cosine-step"), IM_TRAIN_SCHED_COSINE_STEP);
  assert_int_equal(im_train_sched_parse("bogus"), -1);
  assert_int_equal(im_train_optim_parse("AdamW"), IM_NN_OPTIM_ADAMW);
}

static void test_tracked_run(void **state) {
  const char *t = tu_tmpdir(), *home = tu_path(t, "ws");
  im_train_opts_t o = base_opts(tu_path(t, "out"));
  o.epochs = 2;
  o.track = 1;
  o.tracking_home = home;
  o.experiment = "unit";
  o.run_name = "tiny";
  o.log_every = 1;
  im_train_result_t *r = NULL;
  OK(im_train_run(&o, &r));
  assert_non_null(r->run_id);
  assert_string_equal(r->run_name, "tiny");
  char *run_id = im_strdup(r->run_id);
  im_train_result_free(r);

  im_track_store_t *s = NULL;
  OK(im_track_open(home, &s));
  im_track_run_t *run = NULL;
  OK(im_track_run_get(s, run_id, &run));
  assert_int_equal(run->status, IM_TRACK_RUN_FINISHED);
  int found = 0;
  for (int i = 0; i < run->n_metrics; i++) {
    if (!strcmp(run->metrics[i].key, "val_accuracy")) {
      found++;
      assert_int_equal(run->metrics[i].step, 2);
      assert_true(run->metrics[i].value == 1.0);
    }
    found += !strcmp(run->metrics[i].key, "images_per_second");
  }
  assert_int_equal(found, 2);
  int params = 0;
  for (int i = 0; i < run->n_params; i++) params += !strcmp(run->params[i].key, "lr") || !strcmp(run->params[i].key, "model");
  assert_int_equal(params, 2);
  int tags = 0;
  for (int i = 0; i < run->n_tags; i++) {
    if (!strcmp(run->tags[i].key, "mlflow.source.name")) tags += !strcmp(run->tags[i].value, "imops train");
    tags += !strcmp(run->tags[i].key, "imops.data_hash") && strlen(run->tags[i].value) == 16;
  }
  assert_int_equal(tags, 2);
  im_track_run_free(run);
  im_track_metric_list_t *h = NULL;
  OK(im_track_get_metric_history(s, run_id, "train_loss_step", 0, NULL, &h));
  assert_int_equal(h->n, 8); /* log_every 1: every step of 2 epochs */
  im_track_metric_list_free(h);

  /* runs:/<id>/model opens, and the evaluation goes to the same run. */
  char uri[128];
  snprintf(uri, sizeof uri, "runs:/%s/model", run_id);
  im_train_model_t *m = NULL;
  OK(im_train_model_open(uri, "ref", home, &m));
  assert_string_equal(im_train_model_run_id(m), run_id);
  im_train_eval_opts_t eo = {.data_dir = data_dir};
  im_train_metrics_t *mt = NULL;
  OK(im_train_evaluate(m, &eo, &mt));
  char *logged = NULL;
  OK(im_train_track_eval(m, mt, data_dir, home, NULL, &logged));
  assert_string_equal(logged, run_id);
  im_free(logged);
  OK(im_track_run_get(s, run_id, &run));
  found = 0;
  for (int i = 0; i < run->n_metrics; i++) found += !strcmp(run->metrics[i].key, "test_accuracy");
  assert_int_equal(found, 1);
  im_track_run_free(run);
  im_train_metrics_free(mt);
  im_train_model_close(m);

  /* A model from a path without a known run: a new run. */
  OK(im_train_model_open(tu_path(tu_path(t, "out"), "model"), "ref", home, &m));
  assert_string_equal(im_train_model_run_id(m), run_id); /* the bundle's MLmodel names its run */
  im_train_model_close(m);

  /* A cancelled run is KILLED; resuming continues the same run to FINISHED. */
  o.output = tu_path(t, "out2");
  o.run_name = NULL;
  o.max_steps = 3;
  OK(im_train_run(&o, &r) == IM_ERR_CANCELLED ? IM_OK : IM_ERR_INTERNAL);
  char *id2 = im_strdup(r->run_id);
  im_train_result_free(r);
  OK(im_track_run_get(s, id2, &run));
  assert_int_equal(run->status, IM_TRACK_RUN_KILLED);
  im_track_run_free(run);
  im_train_opts_t ro = im_train_defaults();
  ro.resume = tu_path(t, "out2");
  ro.epochs = 0; /* keep the checkpoint's */
  ro.device = "ref";
  ro.tracking_home = home;
  OK(im_train_run(&ro, &r));
  assert_string_equal(r->run_id, id2);
  im_train_result_free(r);
  OK(im_track_run_get(s, id2, &run));
  assert_int_equal(run->status, IM_TRACK_RUN_FINISHED);
  im_track_run_free(run);
  OK(im_track_get_metric_history(s, id2, "train_loss_step", 0, NULL, &h));
  assert_int_equal(h->n, 8); /* no step logged twice */
  im_track_metric_list_free(h);
  OK(im_track_get_metric_history(s, id2, "val_accuracy", 0, NULL, &h));
  assert_int_equal(h->n, 2);
  im_track_metric_list_free(h);

  /* A tracking server that cannot be reached fails the run up front, with its address
   * (port 1 on loopback: nothing listens there). */
  o.tracking_home = "http://127.0.0.1:1";
  o.max_steps = 0;
  assert_int_not_equal(im_train_run(&o, NULL), IM_OK);
  assert_non_null(strstr(im_last_error(), "127.0.0.1:1"));
  im_free(run_id);
  im_free(id2);
  im_track_close(s);
  tu_rmtree(t);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_metrics),
      cmocka_unit_test(test_devices),
      cmocka_unit_test(test_learns_trivial_set),
      cmocka_unit_test(test_deterministic),
      cmocka_unit_test(test_resume_is_exact),
      cmocka_unit_test(test_resume_with_dropout),
      cmocka_unit_test(test_checkpoint_damage),
      cmocka_unit_test(test_trainer_state_parse),
      cmocka_unit_test(test_early_stopping),
      cmocka_unit_test(test_tracked_run),
  };
  return cmocka_run_group_tests(tests, make_data, cleanup);
}
