/* The data set as training and evaluation see it: DATA/.imops/dataset.json
 * (classes, mean/std, counts, content hash) and the cache at the wanted size,
 * preprocessing DATA first when there is no cache at that size. */
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "train/train_impl.h"

const char *im__train_hex64(uint64_t v, char hex[17]) {
  snprintf(hex, 17, "%016llx", (unsigned long long)v);
  return hex;
}

char *im__train_abspath(const char *path) {
  if (!path) return NULL;
  char *r = realpath(path, NULL);
  if (r) {
    char *out = im_strdup(r);
    free(r);
    return out;
  }
  if (path[0] == '/') return im_strdup(path);
  char cwd[PATH_MAX];
  if (!getcwd(cwd, sizeof cwd)) return im_strdup(path);
  return im_path_join(cwd, path);
}

void im__train_data_free(im__train_data_t *d) {
  if (!d) return;
  for (int k = 0; k < d->n_classes && d->classes; k++) im_free(d->classes[k]);
  im_free(d->classes);
  im_free(d->dir);
  im_free(d->cache_path);
  memset(d, 0, sizeof *d);
}

static char *cache_path_for(const char *dir, int size) {
  char name[64];
  snprintf(name, sizeof name, ".imops/cache-%d.bin", size);
  return im_path_join(dir, name);
}

/* Reads dataset.json into d when it describes a cache at size (0: any) that
 * exists and matches its content hash. Returns 1 when d is usable. Also
 * reports the split seed and ratios found, for a preprocess. */
static int read_dataset_json(const char *dir, int size, im__train_data_t *d, uint64_t *seed, double ratios[3],
                             int *have_split) {
  char *path = im_path_join(dir, ".imops/dataset.json");
  if (!path) return 0;
  json_error_t err;
  json_t *j = json_load_file(path, 0, &err);
  im_free(path);
  if (!j) return 0;
  int ok = 0;
  json_t *jr = json_object_get(j, "ratios");
  if (json_is_array(jr) && json_array_size(jr) == 3 && json_is_integer(json_object_get(j, "seed"))) {
    for (int k = 0; k < 3; k++) ratios[k] = json_number_value(json_array_get(jr, (size_t)k));
    *seed = (uint64_t)json_integer_value(json_object_get(j, "seed"));
    *have_split = 1;
  }
  int s = (int)json_integer_value(json_object_get(j, "img_size"));
  const char *hash = json_string_value(json_object_get(j, "content_hash"));
  json_t *classes = json_object_get(j, "classes"), *mean = json_object_get(j, "mean"), *std = json_object_get(j, "std");
  json_t *counts = json_object_get(j, "counts");
  if (s <= 0 || (size && s != size) || !hash || !json_is_array(classes) || json_array_size(classes) == 0 ||
      !json_is_array(mean) || !json_is_array(std) || json_array_size(mean) != 3 || json_array_size(std) != 3)
    goto out;
  char *cpath = cache_path_for(dir, s);
  im_cache_t *c = NULL;
  if (!cpath || im_cache_open(cpath, &c) != IM_OK) {
    im_free(cpath);
    goto out;
  }
  im_cache_info_t info;
  im_cache_get_info(c, &info);
  im_cache_close(c);
  char hex[17];
  if (strcmp(im__train_hex64(info.content_hash, hex), hash) != 0 || info.size != s ||
      (size_t)info.n_classes != json_array_size(classes)) {
    im_free(cpath);
    goto out;
  }
  d->cache_path = cpath;
  d->img_size = s;
  d->channels = info.channels;
  d->n_classes = info.n_classes;
  snprintf(d->hash, sizeof d->hash, "%s", hash);
  d->classes = im_calloc((size_t)d->n_classes, sizeof *d->classes);
  if (!d->classes) goto out;
  for (int k = 0; k < d->n_classes; k++) {
    const char *name = json_string_value(json_array_get(classes, (size_t)k));
    if (!name || !(d->classes[k] = im_strdup(name))) goto out;
    for (int sp = 0; sp < 3; sp++)
      d->counts[sp] += json_integer_value(json_object_get(json_object_get(counts, im_split_name(sp)), name));
  }
  for (int c3 = 0; c3 < 3; c3++) {
    d->mean[c3] = (float)json_number_value(json_array_get(mean, (size_t)c3));
    d->std[c3] = (float)json_number_value(json_array_get(std, (size_t)c3));
  }
  ok = 1;
out:
  json_decref(j);
  if (!ok) {
    for (int k = 0; k < d->n_classes && d->classes; k++) im_free(d->classes[k]);
    im_free(d->classes);
    im_free(d->cache_path);
    d->classes = NULL;
    d->cache_path = NULL;
    d->n_classes = 0;
    memset(d->counts, 0, sizeof d->counts);
  }
  return ok;
}

im_status_t im__train_data_open(const char *dir, int img_size, im_progress_fn progress, void *user,
                                im__train_data_t *out) {
  memset(out, 0, sizeof *out);
  if (!dir || !*dir) return im_error(IM_ERR_ARG, "a data directory is required");
  if (!im_is_dir(dir)) return im_error(IM_ERR_NOT_FOUND, "data directory %s does not exist", dir);
  if (!(out->dir = im__train_abspath(dir))) return im_error(IM_ERR_NOMEM, "out of memory");
  uint64_t seed = 42;
  double ratios[3] = {0.7, 0.15, 0.15};
  int have_split = 0;
  if (read_dataset_json(out->dir, img_size, out, &seed, ratios, &have_split)) return IM_OK;
  if (img_size <= 0) {
    im__train_data_free(out);
    return im_error(IM_ERR_ARG, "%s has not been preprocessed: give an image size (--img-size S) or run "
                    "'imops preprocess --data %s --img-size S' first", dir, dir);
  }
  im_preprocess_opts_t po = {.data_dir = out->dir, .img_size = img_size, .seed = seed, .progress = progress,
                             .progress_user = user};
  memcpy(po.ratios, ratios, sizeof po.ratios);
  im_preprocess_result_t *r = NULL;
  im_status_t st = im_data_preprocess(&po, &r);
  im_preprocess_result_free(r);
  if (st) {
    im__train_data_free(out);
    return st;
  }
  if (!read_dataset_json(out->dir, img_size, out, &seed, ratios, &have_split)) {
    im__train_data_free(out);
    return im_error(IM_ERR_FORMAT, "%s/.imops/dataset.json does not match its cache after preprocessing", dir);
  }
  out->preprocessed = 1;
  return IM_OK;
}
