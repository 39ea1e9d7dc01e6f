/* Checkpoints that survive kill -9: the model state, the optimizer state and
 * the trainer state go to new files named by a sequence number, each written
 * atomically; then the previous manifest is kept as manifest-prev.json and the
 * new manifest.json (sizes and hashes of the three files) is written last,
 * atomically. Files of older checkpoints are removed afterwards. A reader
 * verifies every file against the manifest and falls back to the previous
 * checkpoint when the current one is damaged. The trainer state's JSON is
 * parsed and checked here too (im__train_state_parse). */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "train/train_impl.h"

#define CKPT_FORMAT "imops-checkpoint"
#define CKPT_VERSION 1
#define MAX_MANIFEST (1u << 20)
#define TRAINER_FORMAT "imops-trainer-state"
#define TRAINER_VERSION 1
#define MAX_HISTORY 1000000

static const char *const roles[3] = {"state", "optim", "trainer"};
static const char *const exts[3] = {"safetensors", "safetensors", "json"};

/* Size and hash of a file's bytes. */
static im_status_t file_digest(const char *path, uint64_t *size, uint64_t *hash) {
  uint8_t *data = NULL;
  size_t len = 0;
  im_status_t st = im_file_read(path, 0, &data, &len);
  if (st) return st;
  *size = len;
  *hash = im_hash64(data, len, 0xC4EC4);
  im_free(data);
  return IM_OK;
}

/* The seq of the manifest in dir (0 when none or unreadable), and its bytes. */
static int64_t current_seq(const char *dir, uint8_t **bytes, size_t *len) {
  *bytes = NULL;
  *len = 0;
  char *p = im_path_join(dir, "manifest.json");
  if (!p) return 0;
  int64_t seq = 0;
  if (im_file_read(p, MAX_MANIFEST, bytes, len) == IM_OK) {
    json_error_t err;
    json_t *j = json_loadb((const char *)*bytes, *len, 0, &err);
    if (j) seq = json_integer_value(json_object_get(j, "seq"));
    json_decref(j);
    if (!j) {
      im_free(*bytes);
      *bytes = NULL;
      *len = 0;
    }
  }
  im_free(p);
  return seq;
}

/* The largest sequence number in the names of checkpoint files in dir. */
static int64_t max_file_seq(const char *dir) {
  int64_t best = 0;
  DIR *d = opendir(dir);
  if (!d) return 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    for (int r = 0; r < 3; r++) {
      size_t rl = strlen(roles[r]);
      if (strncmp(e->d_name, roles[r], rl) != 0 || e->d_name[rl] != '-') continue;
      long long s = strtoll(e->d_name + rl + 1, NULL, 10);
      if (s > best) best = s;
    }
  }
  closedir(d);
  return best;
}

/* Removes checkpoint files of other seqs and temporary files of dead processes. */
static void cleanup(const char *dir, int64_t keep1, int64_t keep2) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d))) {
    const char *n = e->d_name;
    int remove_it = 0;
    const char *t = strstr(n, ".tmp-");
    if (n[0] == '.' && t) {
      long pid = strtol(t + 5, NULL, 10);
      remove_it = pid > 0 && pid != (long)getpid() && kill((pid_t)pid, 0) != 0 && errno == ESRCH;
    } else {
      for (int r = 0; r < 3; r++) {
        size_t rl = strlen(roles[r]);
        if (strncmp(n, roles[r], rl) != 0 || n[rl] != '-') continue;
        char *end;
        long long s = strtoll(n + rl + 1, &end, 10);
        if (end != n + rl + 1 && *end == '.' && s != keep1 && s != keep2) remove_it = 1;
      }
    }
    if (remove_it) {
      char *p = im_path_join(dir, n);
      if (p) unlink(p);
      im_free(p);
    }
  }
  closedir(d);
}

im_status_t im__train_ckpt_write(const char *dir, const im_nn_model_t *m, const im_nn_optim_t *opt,
                                 const char *trainer_json, int64_t epoch, int64_t batch, int64_t global_step,
                                 const char *run_id) {
  im_status_t st = im_mkdir_p(dir);
  if (st) return st;
  uint8_t *old = NULL;
  size_t old_len = 0;
  int64_t prev = current_seq(dir, &old, &old_len), seq = prev + 1, top = max_file_seq(dir);
  if (top >= seq) seq = top + 1; /* never reuse a name a manifest may still point at */
  char names[3][64], *paths[3] = {0};
  uint64_t size[3] = {0}, hash[3] = {0};
  json_t *files = NULL, *man = NULL;
  char *mtext = NULL, *mpath = NULL, *ppath = NULL;
  for (int r = 0; r < 3; r++) {
    snprintf(names[r], sizeof names[r], "%s-%lld.%s", roles[r], (long long)seq, exts[r]);
    if (!(paths[r] = im_path_join(dir, names[r]))) {
      st = im_error(IM_ERR_NOMEM, "out of memory");
      goto out;
    }
  }
  char ep[32], gs[32];
  snprintf(ep, sizeof ep, "%lld", (long long)epoch);
  snprintf(gs, sizeof gs, "%lld", (long long)global_step);
  im_safetensors_meta_t meta[2] = {{"epoch", ep}, {"global_step", gs}};
  if ((st = im_nn_state_save(m, paths[0], meta, 2))) goto out;
  if (opt && (st = im_nn_optim_save(opt, paths[1]))) goto out;
  if ((st = im_file_write_atomic(paths[2], trainer_json, strlen(trainer_json)))) goto out;
  files = json_object();
  for (int r = 0; r < 3; r++) {
    if (r == 1 && !opt) continue;
    if ((st = file_digest(paths[r], &size[r], &hash[r]))) goto out;
    char hex[17];
    json_object_set_new(files, roles[r], json_pack("{s:s, s:I, s:s}", "file", names[r], "size", (json_int_t)size[r],
                                                   "hash", im__train_hex64(hash[r], hex)));
  }
  man = json_pack("{s:s, s:i, s:I, s:I, s:I, s:I, s:I, s:o}", "format", CKPT_FORMAT, "version", CKPT_VERSION, "seq",
                  (json_int_t)seq, "epoch", (json_int_t)epoch, "batch", (json_int_t)batch, "global_step",
                  (json_int_t)global_step, "created", (json_int_t)im_time_wall_ms(), "files", files);
  files = NULL;
  if (man && run_id) json_object_set_new(man, "run_id", json_string(run_id));
  if (!man || !(mtext = json_dumps(man, JSON_INDENT(1) | JSON_PRESERVE_ORDER))) {
    st = im_error(IM_ERR_NOMEM, "out of memory");
    goto out;
  }
  if (!(mpath = im_path_join(dir, "manifest.json")) || !(ppath = im_path_join(dir, "manifest-prev.json"))) {
    st = im_error(IM_ERR_NOMEM, "out of memory");
    goto out;
  }
  /* The previous checkpoint stays readable until the new one is complete. */
  if (old && (st = im_file_write_atomic(ppath, old, old_len))) goto out;
  if ((st = im_file_write_atomic(mpath, mtext, strlen(mtext)))) goto out;
  cleanup(dir, seq, prev);
out:
  for (int r = 0; r < 3; r++) im_free(paths[r]);
  json_decref(files);
  json_decref(man);
  free(mtext);
  im_free(mpath);
  im_free(ppath);
  im_free(old);
  return st;
}

void im_train_checkpoint_free(im_train_checkpoint_t *c) {
  if (!c) return;
  im_free(c->run_id);
  im_free(c->trainer_path);
  im_free(c->state_path);
  im_free(c->optim_path);
  im_free(c);
}

/* Parses and verifies one manifest; on success fills c. */
static im_status_t verify(const char *dir, const char *manifest, im_train_checkpoint_t *c) {
  char *mpath = im_path_join(dir, manifest);
  if (!mpath) return im_error(IM_ERR_NOMEM, "out of memory");
  uint8_t *bytes = NULL;
  size_t len = 0;
  im_status_t st = im_file_read(mpath, MAX_MANIFEST, &bytes, &len);
  if (st) {
    st = im_error(IM_ERR_NOT_FOUND, "checkpoint manifest %s is missing or unreadable", mpath);
    im_free(mpath);
    return st;
  }
  json_error_t err;
  json_t *j = json_loadb((const char *)bytes, len, 0, &err);
  im_free(bytes);
  const char *fmt = json_string_value(json_object_get(j, "format"));
  json_t *files = json_object_get(j, "files");
  if (!j || !fmt || strcmp(fmt, CKPT_FORMAT) != 0 || json_integer_value(json_object_get(j, "version")) != CKPT_VERSION ||
      !json_is_object(files)) {
    st = im_error(IM_ERR_FORMAT, "%s is not an imops checkpoint manifest (format %s version %d)", mpath, CKPT_FORMAT,
                  CKPT_VERSION);
    goto out;
  }
  c->seq = json_integer_value(json_object_get(j, "seq"));
  c->epoch = json_integer_value(json_object_get(j, "epoch"));
  c->batch = json_integer_value(json_object_get(j, "batch"));
  c->global_step = json_integer_value(json_object_get(j, "global_step"));
  const char *rid = json_string_value(json_object_get(j, "run_id"));
  char **dst[3] = {&c->state_path, &c->optim_path, &c->trainer_path};
  for (int r = 0; r < 3; r++) {
    json_t *f = json_object_get(files, roles[r]);
    if (!f && r == 1) continue; /* a checkpoint without optimizer state */
    const char *name = json_string_value(json_object_get(f, "file"));
    const char *hash = json_string_value(json_object_get(f, "hash"));
    if (!name || !hash || strchr(name, '/') || !json_is_integer(json_object_get(f, "size"))) {
      st = im_error(IM_ERR_FORMAT, "%s: entry '%s' is incomplete", mpath, roles[r]);
      goto out;
    }
    char *p = im_path_join(dir, name);
    if (!p) {
      st = im_error(IM_ERR_NOMEM, "out of memory");
      goto out;
    }
    *dst[r] = p;
    uint64_t size, h;
    struct stat sb;
    if (stat(p, &sb) != 0) {
      st = im_error(IM_ERR_FORMAT, "checkpoint file %s named by %s is missing", p, mpath);
      goto out;
    }
    if ((uint64_t)sb.st_size != (uint64_t)json_integer_value(json_object_get(f, "size"))) {
      st = im_error(IM_ERR_FORMAT, "checkpoint file %s has %lld bytes, %s says %lld", p, (long long)sb.st_size, mpath,
                    (long long)json_integer_value(json_object_get(f, "size")));
      goto out;
    }
    if ((st = file_digest(p, &size, &h))) goto out;
    char hex[17];
    if (strcmp(im__train_hex64(h, hex), hash) != 0) {
      st = im_error(IM_ERR_FORMAT, "checkpoint file %s does not match the hash in %s (damaged)", p, mpath);
      goto out;
    }
  }
  if (rid && !(c->run_id = im_strdup(rid))) st = im_error(IM_ERR_NOMEM, "out of memory");
out:
  json_decref(j);
  im_free(mpath);
  return st;
}

static void clear_paths(im_train_checkpoint_t *c) {
  im_free(c->run_id);
  im_free(c->trainer_path);
  im_free(c->state_path);
  im_free(c->optim_path);
  memset(c, 0, sizeof *c);
}

im_status_t im_train_checkpoint_open(const char *dir, im_train_checkpoint_t **out) {
  *out = NULL;
  if (!dir || !*dir) return im_error(IM_ERR_ARG, "no checkpoint directory given");
  char *d = NULL;
  char *m = im_path_join(dir, "manifest.json"), *mp = im_path_join(dir, "manifest-prev.json");
  if (!m || !mp) {
    im_free(m);
    im_free(mp);
    return im_error(IM_ERR_NOMEM, "out of memory");
  }
  struct stat sb;
  int here = stat(m, &sb) == 0 || stat(mp, &sb) == 0;
  im_free(m);
  im_free(mp);
  d = here ? im_strdup(dir) : im_path_join(dir, "last");
  if (!d) return im_error(IM_ERR_NOMEM, "out of memory");
  im_train_checkpoint_t *c = im_calloc(1, sizeof *c);
  if (!c) {
    im_free(d);
    return im_error(IM_ERR_NOMEM, "out of memory");
  }
  im_status_t st = verify(d, "manifest.json", c);
  if (st && st != IM_ERR_NOMEM) {
    char first[512];
    snprintf(first, sizeof first, "%s", im_last_error());
    int missing = st == IM_ERR_NOT_FOUND;
    clear_paths(c);
    im_status_t st2 = verify(d, "manifest-prev.json", c);
    if (st2 == IM_OK) {
      c->from_previous = 1;
      im_log(IM_LOG_WARN, "%s; using the previous checkpoint (step %lld)", first, (long long)c->global_step);
      st = IM_OK;
    } else if (missing && st2 == IM_ERR_NOT_FOUND) {
      st = im_error(IM_ERR_NOT_FOUND, "no checkpoint in %s (no manifest.json there or in its last/)", dir);
    } else {
      st = im_error(IM_ERR_FORMAT, "no whole checkpoint in %s: %s", d, first);
    }
  }
  im_free(d);
  if (st) {
    im_train_checkpoint_free(c);
    return st;
  }
  *out = c;
  return IM_OK;
}

/* ---- the trainer state ---- */

void im__train_state_free(im__train_state_t *s) {
  if (!s) return;
  json_decref(s->root);
  im_free(s->hist);
  memset(s, 0, sizeof *s);
}

/* A counter that must be an integer >= 0 (absent: IM_ERR_FORMAT). */
static im_status_t state_count(const json_t *j, const char *key, int64_t *out) {
  const json_t *v = json_object_get(j, key);
  if (!json_is_integer(v) || json_integer_value(v) < 0)
    return im_error(IM_ERR_FORMAT, "checkpoint: the trainer state's \"%s\" is %s", key,
                    v ? "not a count (an integer >= 0)" : "missing");
  *out = json_integer_value(v);
  return IM_OK;
}

/* A finite number (absent: IM_ERR_FORMAT). */
static im_status_t state_real(const json_t *j, const char *key, double *out) {
  const json_t *v = json_object_get(j, key);
  if (!json_is_number(v) || !isfinite(json_number_value(v)))
    return im_error(IM_ERR_FORMAT, "checkpoint: the trainer state's \"%s\" is %s", key,
                    v ? "not a finite number" : "missing");
  *out = json_number_value(v);
  return IM_OK;
}

/* A number, null or absent (NaN: not known). */
static double state_opt_real(const json_t *j, const char *key) {
  const json_t *v = json_object_get(j, key);
  return json_is_number(v) ? json_number_value(v) : NAN;
}

static const char *state_str(const json_t *j, const char *key) {
  const char *v = json_string_value(json_object_get(j, key));
  return v && *v ? v : NULL;
}

static im_status_t state_rng(const json_t *jr, im_rng_t *rng) {
  int ok = json_array_size(jr) == 4;
  for (int k = 0; ok && k < 4; k++) {
    const char *h = json_string_value(json_array_get(jr, (size_t)k));
    char *end = NULL;
    ok = h && strlen(h) == 16 && strspn(h, "0123456789abcdefABCDEF") == 16;
    if (ok) rng->s[k] = strtoull(h, &end, 16);
    ok = ok && end && *end == '\0';
  }
  if (!ok || !(rng->s[0] | rng->s[1] | rng->s[2] | rng->s[3]))
    return im_error(IM_ERR_FORMAT, "checkpoint: the model's random stream state is damaged");
  return IM_OK;
}

static im_status_t state_history(const json_t *a, im__train_state_t *s) {
  if (a && !json_is_array(a)) return im_error(IM_ERR_FORMAT, "checkpoint: the trainer state's \"history\" is not a list");
  size_t n = json_array_size(a);
  if (n > MAX_HISTORY) return im_error(IM_ERR_FORMAT, "checkpoint: the trainer state has %zu epochs of history", n);
  if (n && !(s->hist = im_calloc(n, sizeof *s->hist))) return im_error(IM_ERR_NOMEM, "out of memory");
  for (size_t i = 0; i < n; i++) {
    const json_t *h = json_array_get(a, i);
    int64_t epoch;
    if (!json_is_object(h) || state_count(h, "epoch", &epoch))
      return im_error(IM_ERR_FORMAT, "checkpoint: history entry %zu of the trainer state is damaged", i);
    s->hist[s->n_hist++] = (im_train_epoch_t){.epoch = epoch,
                                             .train_loss = state_opt_real(h, "train_loss"),
                                             .train_accuracy = state_opt_real(h, "train_accuracy"),
                                             .val_loss = state_opt_real(h, "val_loss"),
                                             .val_accuracy = state_opt_real(h, "val_accuracy"),
                                             .lr = state_opt_real(h, "lr"),
                                             .epoch_seconds = state_opt_real(h, "epoch_seconds"),
                                             .images_per_second = state_opt_real(h, "images_per_second"),
                                             .val_seconds = state_opt_real(h, "val_seconds")};
  }
  return IM_OK;
}

im_status_t im__train_state_parse(const void *data, size_t len, im_train_opts_t *o, im__train_state_t *s) {
  memset(s, 0, sizeof *s);
  json_error_t err;
  json_t *j = s->root = json_loadb((const char *)data, len, JSON_REJECT_DUPLICATES, &err);
  if (!j) return im_error(IM_ERR_FORMAT, "checkpoint: the trainer state is not JSON (line %d: %s)", err.line, err.text);
  const char *fmt = json_string_value(json_object_get(j, "format"));
  if (!json_is_object(j) || !fmt || strcmp(fmt, TRAINER_FORMAT) != 0)
    return im_error(IM_ERR_FORMAT, "checkpoint: not an imops trainer state (format %s)", TRAINER_FORMAT);
  if (json_integer_value(json_object_get(j, "version")) != TRAINER_VERSION)
    return im_error(IM_ERR_FORMAT, "checkpoint: trainer state version %lld; this imops reads version %d",
                    (long long)json_integer_value(json_object_get(j, "version")), TRAINER_VERSION);
  im_status_t st;
  if ((st = im__train_opts_from_json(json_object_get(j, "options"), o))) return st;
  struct {
    const char *key;
    int64_t *v;
  } counts[] = {{"epoch", &s->epoch},           {"batch", &s->batch},           {"global_step", &s->global_step},
                {"steps_per_epoch", &s->steps_per_epoch}, {"epoch_correct", &s->epoch_correct},
                {"epoch_count", &s->epoch_count}, {"log_correct", &s->log_correct}, {"log_count", &s->log_count},
                {"best_epoch", &s->best_epoch}, {"bad_epochs", &s->bad_epochs}};
  for (size_t i = 0; i < sizeof counts / sizeof *counts; i++)
    if ((st = state_count(j, counts[i].key, counts[i].v))) return st;
  if (s->batch > s->steps_per_epoch || s->epoch_correct > s->epoch_count || s->log_correct > s->log_count)
    return im_error(IM_ERR_FORMAT, "checkpoint: the trainer state's counters do not fit together");
  if ((st = state_real(j, "epoch_loss_sum", &s->epoch_loss_sum)) || (st = state_real(j, "epoch_seconds", &s->epoch_seconds)) ||
      (st = state_real(j, "log_loss_sum", &s->log_loss_sum)))
    return st;
  s->best_val = state_opt_real(j, "best_val_accuracy");
  s->finished = json_is_true(json_object_get(j, "finished"));
  if (!(s->data_hash = state_str(j, "data_hash")))
    return im_error(IM_ERR_FORMAT, "checkpoint: the trainer state names no data (\"data_hash\")");
  s->run_id = state_str(j, "run_id");
  s->run_name = state_str(j, "run_name");
  const json_t *jr = json_object_get(j, "model_rng");
  if (jr) { /* absent in checkpoints of older versions: the stream restarts from the seed */
    if ((st = state_rng(jr, &s->rng))) return st;
    s->has_rng = 1;
  }
  return state_history(json_object_get(j, "history"), s);
}
