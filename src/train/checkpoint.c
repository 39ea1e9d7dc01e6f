/* Checkpoints that survive kill -9: the model state, the optimizer state and
 * the trainer state go to new files named by a sequence number, each written
 * atomically; then the previous manifest is kept as manifest-prev.json and the
 * new manifest.json (sizes and hashes of the three files) is written last,
 * atomically. Files of older checkpoints are removed afterwards. A reader
 * verifies every file against the manifest and falls back to the previous
 * checkpoint when the current one is damaged. */
#include <dirent.h>
#include <errno.h>
#include <jansson.h>
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
