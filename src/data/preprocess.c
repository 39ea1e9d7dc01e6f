/* Preprocessing: scan an ImageFolder, fingerprint its content, decode and
 * resize every image once (both cores), split per class with the seed,
 * compute per-channel mean/std over the train split, and write the cache,
 * split.json, dataset.json and mean-std.txt, each atomically.
 *
 * Pass 1 reads every file, hashes it and reads its header (bad headers are
 * caught here, and the data set's channel count is known before decoding).
 * When the content hash, image size and split settings match the last run,
 * everything is reused. Pass 2 decodes, resizes to S x S, sums the pixels
 * of each image exactly (integers) and writes them into their cache slots. */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <dirent.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "data_impl.h"
#include "imops/image.h"

#define READ_MAX_BYTES (256u << 20)
#define KEEP_MAX_BYTES (512ull << 20) /* file bytes kept from pass 1 for pass 2, at most */
#define CHUNK 256

typedef struct {
  uint8_t *data; /* the file's bytes, kept from pass 1 while under KEEP_MAX_BYTES */
  uint64_t size, hash;
  uint64_t sum[3], sumsq[3];
  uint8_t channels;
  uint8_t bad;
  char *reason;
} rec_t;

typedef struct {
  const char *root;
  const im__folder_t *folder;
  rec_t *recs;
  int64_t max_pixels;
  atomic_ullong *kept; /* bytes kept in recs[].data */
  /* pass 2 */
  int size, channels, fd;
  uint64_t pixels_off;
  uint8_t **scratch; /* one S*S*C buffer per thread */
} pp_ctx_t;

static void set_bad(rec_t *r, const char *reason) {
  r->bad = 1;
  im_free(r->reason);
  r->reason = im_strdup(reason);
}

static void probe_one(void *p, int64_t i, int thread) {
  pp_ctx_t *c = p;
  rec_t *r = &c->recs[i];
  char *path = im_path_join(c->root, c->folder->files[i].rel);
  uint8_t *data = NULL;
  size_t len = 0;
  im_status_t st = path ? im_file_read(path, READ_MAX_BYTES, &data, &len) : IM_ERR_NOMEM;
  im_free(path);
  if (st) {
    set_bad(r, st == IM_ERR_NOMEM ? "out of memory" : im_last_error());
    return;
  }
  r->size = len;
  r->hash = im_hash64(data, len, 0);
  im_image_info_t info;
  if (len == 0)
    set_bad(r, "empty file (0 bytes)");
  else if ((st = im_image_probe(data, len, &info)))
    set_bad(r, im_last_error());
  else if ((int64_t)info.w * info.h > c->max_pixels) {
    char msg[160];
    snprintf(msg, sizeof msg, "image of %dx%d is over the limit of %lld pixels", info.w, info.h, (long long)c->max_pixels);
    set_bad(r, msg);
  } else {
    r->channels = (uint8_t)info.channels;
    if (atomic_fetch_add(c->kept, len) + len <= KEEP_MAX_BYTES) {
      r->data = data; /* pass 2 decodes from memory instead of reading the file again */
      return;
    }
    atomic_fetch_sub(c->kept, len);
  }
  im_free(data);
}

static void decode_one(void *p, int64_t i, int thread) {
  pp_ctx_t *c = p;
  rec_t *r = &c->recs[i];
  if (r->bad) return;
  im_decode_opts_t o = IM_DECODE_OPTS_DEFAULT;
  o.channels = c->channels;
  o.min_w = o.min_h = c->size;
  o.max_pixels = c->max_pixels;
  im_image_t img = {0};
  im_status_t st;
  if (r->data) {
    st = im_image_decode(r->data, r->size, &o, &img);
    im_free(r->data);
    r->data = NULL;
  } else {
    char *path = im_path_join(c->root, c->folder->files[i].rel);
    st = path ? im_image_load(path, &o, &img) : im_error(IM_ERR_NOMEM, "out of memory");
    im_free(path);
  }
  if (st) {
    set_bad(r, im_last_error());
    return;
  }
  uint8_t *buf = c->scratch[thread];
  st = im_image_resize_into(&img, c->size, c->size, IM_RESIZE_BILINEAR, buf);
  im_image_free(&img);
  if (st) {
    set_bad(r, im_last_error());
    return;
  }
  size_t npx = (size_t)c->size * c->size, stride = npx * (size_t)c->channels;
  uint64_t s[3] = {0}, q[3] = {0};
  if (c->channels == 3) {
    for (size_t k = 0; k < npx; k++) {
      uint32_t a = buf[3 * k], b = buf[3 * k + 1], d = buf[3 * k + 2];
      s[0] += a, s[1] += b, s[2] += d;
      q[0] += a * a, q[1] += b * b, q[2] += d * d;
    }
  } else {
    for (size_t k = 0; k < npx; k++) {
      uint32_t a = buf[k];
      s[0] += a;
      q[0] += a * a;
    }
  }
  memcpy(r->sum, s, sizeof s);
  memcpy(r->sumsq, q, sizeof q);
  off_t off = (off_t)(c->pixels_off + (uint64_t)i * stride);
  size_t done = 0;
  while (done < stride) {
    ssize_t w = pwrite(c->fd, buf + done, stride - done, off + (off_t)done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) {
      set_bad(r, "cannot write the cache file");
      r->bad = 2; /* a write failure fails the whole run, not just this file */
      return;
    }
    done += (size_t)w;
  }
}

/* Runs fn over all files in chunks, reporting progress between chunks. */
static im_status_t run_chunked(const im_preprocess_opts_t *o, const char *stage, int64_t n, im_parallel_fn fn,
                               pp_ctx_t *ctx) {
  for (int64_t s = 0; s < n; s += CHUNK) {
    int64_t m = n - s < CHUNK ? n - s : CHUNK;
    pp_ctx_t sub = *ctx;
    sub.recs = ctx->recs + s;
    im__folder_t fsub = *ctx->folder;
    fsub.files = ctx->folder->files + s;
    sub.folder = &fsub;
    sub.pixels_off = ctx->pixels_off + (uint64_t)s * ctx->size * ctx->size * ctx->channels;
    im_status_t st = im_parallel_for(m, o->threads, fn, &sub);
    if (st) return st;
    if (ctx->fd >= 0) { /* start writing this chunk's pixels to disk now, so the final fsync waits less */
      size_t stride = (size_t)ctx->size * ctx->size * ctx->channels;
      sync_file_range(ctx->fd, (off_t)sub.pixels_off, (off_t)(stride * (size_t)m), SYNC_FILE_RANGE_WRITE);
    }
    if (o->progress) o->progress(o->progress_user, stage, s + m, n);
  }
  return IM_OK;
}

static uint64_t split_hash(const im_preprocess_opts_t *o) {
  im_hash_t h;
  im_hash_init(&h, 0x5EED);
  im_hash_update(&h, &o->seed, sizeof o->seed);
  im_hash_update(&h, o->ratios, sizeof o->ratios);
  return im_hash_final(&h);
}

/* Removes temporary files left in dir by processes that no longer run. */
static void remove_stale_temps(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return;
  struct dirent *e;
  while ((e = readdir(d))) {
    const char *t = strstr(e->d_name, ".tmp-");
    if (e->d_name[0] != '.' || !t) continue;
    long pid = strtol(t + 5, NULL, 10);
    if (pid <= 0 || (kill((pid_t)pid, 0) == 0 || errno != ESRCH)) continue;
    char *p = im_path_join(dir, e->d_name);
    if (p) unlink(p);
    im_free(p);
  }
  closedir(d);
}

static im_status_t write_json(const char *path, json_t *j) {
  char *s = json_dumps(j, JSON_INDENT(1) | JSON_PRESERVE_ORDER);
  if (!s) return im_error(IM_ERR_NOMEM, "out of memory serializing %s", path);
  size_t len = strlen(s);
  char *t = malloc(len + 2);
  im_status_t st;
  if (!t)
    st = im_error(IM_ERR_NOMEM, "out of memory");
  else {
    memcpy(t, s, len);
    t[len] = '\n';
    st = im_file_write_atomic(path, t, len + 1);
  }
  free(t);
  free(s);
  return st;
}

static char *hex64(uint64_t v, char out[17]) {
  snprintf(out, 17, "%016llx", (unsigned long long)v);
  return out;
}

void im_preprocess_result_free(im_preprocess_result_t *r) {
  if (!r) return;
  for (int k = 0; k < r->n_classes; k++) im_free(r->classes[k]);
  im_free(r->classes);
  im_free(r->counts);
  for (int64_t i = 0; i < r->n_bad; i++) {
    im_free(r->bad[i].path);
    im_free(r->bad[i].reason);
  }
  im_free(r->bad);
  im_free(r->cache_path);
  im_free(r->split_path);
  im_free(r->dataset_path);
  im_free(r->mean_std_path);
  im_free(r);
}

static im_status_t add_bad(im_preprocess_result_t *r, const char *path, const char *reason) {
  im_bad_file_t *nb = im_realloc(r->bad, (size_t)(r->n_bad + 1) * sizeof *nb);
  if (!nb) return im_error(IM_ERR_NOMEM, "out of memory");
  r->bad = nb;
  nb[r->n_bad].path = im_strdup(path);
  nb[r->n_bad].reason = im_strdup(reason ? reason : "unknown error");
  r->n_bad++;
  return IM_OK;
}

/* Tries to take everything from the last run: dataset.json must match the
 * content hash and settings, and the cache, split.json and mean-std.txt exist. */
static int try_reuse(const im_preprocess_opts_t *o, im_preprocess_result_t *r, uint64_t content_hash) {
  json_error_t err;
  json_t *d = json_load_file(r->dataset_path, 0, &err);
  if (!d) return 0;
  int ok = 0;
  char hex[17];
  json_t *ratios = json_object_get(d, "ratios");
  const char *hash = json_string_value(json_object_get(d, "content_hash"));
  if (!hash || strcmp(hash, hex64(content_hash, hex)) != 0) goto out;
  if (json_integer_value(json_object_get(d, "img_size")) != o->img_size) goto out;
  if ((uint64_t)json_integer_value(json_object_get(d, "seed")) != o->seed) goto out;
  if (!json_is_array(ratios) || json_array_size(ratios) != 3) goto out;
  for (int k = 0; k < 3; k++)
    if (fabs(json_real_value(json_array_get(ratios, (size_t)k)) - o->ratios[k]) > 1e-12) goto out;
  struct stat sb;
  if (stat(r->split_path, &sb) != 0 || stat(r->mean_std_path, &sb) != 0) goto out;
  im_cache_t *cache;
  if (im_cache_open(r->cache_path, &cache) != IM_OK) goto out;
  im_cache_info_t info;
  im_cache_get_info(cache, &info);
  im_cache_close(cache);
  if (info.content_hash != content_hash || info.size != o->img_size) goto out;
  json_t *classes = json_object_get(d, "classes"), *counts = json_object_get(d, "counts");
  json_t *mean = json_object_get(d, "mean"), *std = json_object_get(d, "std"), *bad = json_object_get(d, "bad_files");
  if (!json_is_array(classes) || !json_is_object(counts) || !json_is_array(mean) || !json_is_array(std)) goto out;
  size_t nc = json_array_size(classes);
  if (nc == 0 || nc > 65535 || json_array_size(mean) != 3 || json_array_size(std) != 3) goto out;
  r->classes = im_calloc(nc, sizeof *r->classes);
  r->counts = im_calloc(nc, sizeof *r->counts);
  if (!r->classes || !r->counts) goto out;
  r->n_classes = (int)nc;
  for (size_t k = 0; k < nc; k++) {
    const char *name = json_string_value(json_array_get(classes, k));
    if (!name || !(r->classes[k] = im_strdup(name))) goto out;
    for (int s = 0; s < 3; s++) {
      json_t *per = json_object_get(counts, im_split_name(s));
      r->counts[k][s] = json_integer_value(json_object_get(per, name));
      r->total += r->counts[k][s];
    }
  }
  for (int c = 0; c < 3; c++) {
    r->mean[c] = json_number_value(json_array_get(mean, (size_t)c));
    r->std[c] = json_number_value(json_array_get(std, (size_t)c));
  }
  r->channels = info.channels;
  size_t bi;
  json_t *b;
  json_array_foreach(bad, bi, b) {
    if (add_bad(r, json_string_value(json_object_get(b, "file")) ? json_string_value(json_object_get(b, "file")) : "?",
                json_string_value(json_object_get(b, "reason"))))
      goto out;
  }
  ok = 1;
out:
  json_decref(d);
  return ok;
}

static im_status_t materialize(const im_preprocess_opts_t *o, const im__folder_t *f, const uint8_t *split) {
  for (int s = 0; s < 3; s++)
    for (int k = 0; k < f->n_classes; k++) {
      char sub[4096];
      snprintf(sub, sizeof sub, "%s/%s/%s", o->materialize_dir, im_split_name(s), f->classes[k]);
      im_status_t st = im_mkdir_p(sub);
      if (st) return st;
    }
  for (int64_t i = 0; i < f->n_files; i++) {
    if (split[i] == IM__SPLIT_NONE) continue;
    const char *rel = f->files[i].rel;
    const char *slash = strchr(rel, '/');
    char flat[2048], src[4096], dst[8192];
    snprintf(flat, sizeof flat, "%s", slash ? slash + 1 : rel);
    for (char *c = flat; *c; c++)
      if (*c == '/') *c = '_';
    snprintf(src, sizeof src, "%s/%s", o->data_dir, rel);
    snprintf(dst, sizeof dst, "%s/%s/%s/%s", o->materialize_dir, im_split_name(split[i]), f->classes[f->files[i].label], flat);
    unlink(dst);
    if (link(src, dst) == 0) continue;
    uint8_t *data;
    size_t len;
    im_status_t st = im_file_read(src, READ_MAX_BYTES, &data, &len);
    if (st) return st;
    st = im_file_write_atomic_ex(dst, data, len, 0);
    im_free(data);
    if (st) return st;
  }
  return IM_OK;
}

static im_status_t check_opts(const im_preprocess_opts_t *o) {
  if (!o->data_dir || !*o->data_dir) return im_error(IM_ERR_ARG, "a data folder is required");
  if (o->img_size < 8 || o->img_size > 4096) return im_error(IM_ERR_ARG, "image size %d is outside 8..4096", o->img_size);
  double sum = 0;
  for (int k = 0; k < 3; k++) {
    if (!(o->ratios[k] >= 0 && o->ratios[k] <= 1))
      return im_error(IM_ERR_ARG, "split ratio %g is outside 0..1", o->ratios[k]);
    sum += o->ratios[k];
  }
  if (fabs(sum - 1) > 1e-6) return im_error(IM_ERR_ARG, "split ratios add up to %g, not 1", sum);
  if (o->ratios[0] <= 0) return im_error(IM_ERR_ARG, "the train ratio must be above 0");
  return IM_OK;
}

im_status_t im_data_preprocess(const im_preprocess_opts_t *o, im_preprocess_result_t **out) {
  *out = NULL;
  im_status_t st = check_opts(o);
  if (st) return st;
  double t0 = im_time_now();
  im_preprocess_result_t *r = im_calloc(1, sizeof *r);
  if (!r) return im_error(IM_ERR_NOMEM, "out of memory");
  *out = r;
  im__folder_t f = {0};
  rec_t *recs = NULL;
  uint8_t *split = NULL, *usable = NULL;
  uint8_t **scratch = NULL;
  int nthreads = o->threads > 0 ? o->threads : im_num_threads();
  im_atomic_file_t *af = NULL;
  char *meta = im_path_join(o->data_dir, ".imops");
  char name[64];
  snprintf(name, sizeof name, "cache-%d.bin", o->img_size);
  if (!meta || !(r->cache_path = im_path_join(meta, name)) || !(r->split_path = im_path_join(meta, "split.json")) ||
      !(r->dataset_path = im_path_join(meta, "dataset.json")) ||
      !(r->mean_std_path = im_path_join(o->data_dir, "mean-std.txt"))) {
    st = im_error(IM_ERR_NOMEM, "out of memory");
    goto done;
  }

  if ((st = im__folder_scan(o->data_dir, &f))) goto done;
  if (f.n_classes < 2) {
    st = im_error(IM_ERR_FORMAT, "%s has a single class folder (%s); a classifier needs at least two", o->data_dir,
                  f.classes[0]);
    goto done;
  }
  if (f.n_files == 0) {
    st = im_error(IM_ERR_EMPTY, "%s has class folders but no .jpg, .jpeg or .png files in them", o->data_dir);
    goto done;
  }
  recs = im_calloc((size_t)f.n_files, sizeof *recs);
  split = im_calloc((size_t)f.n_files, 1);
  usable = im_calloc((size_t)f.n_files, 1);
  scratch = im_calloc((size_t)nthreads, sizeof *scratch);
  if (!recs || !split || !usable || !scratch) {
    st = im_error(IM_ERR_NOMEM, "out of memory for %lld files", (long long)f.n_files);
    goto done;
  }
  atomic_ullong kept;
  atomic_init(&kept, 0);
  pp_ctx_t ctx = {.root = o->data_dir, .folder = &f, .recs = recs, .kept = &kept, .fd = -1,
                  .max_pixels = o->max_pixels > 0 ? o->max_pixels : IM_IMAGE_MAX_PIXELS_DEFAULT};

  /* Pass 1: read, fingerprint, probe. */
  if ((st = run_chunked(o, "read", f.n_files, probe_one, &ctx))) goto done;
  im_hash_t h;
  im_hash_init(&h, 0xDA7A);
  int channels = 1;
  for (int64_t i = 0; i < f.n_files; i++) {
    im_hash_update(&h, f.files[i].rel, strlen(f.files[i].rel) + 1);
    im_hash_update(&h, &recs[i].size, sizeof recs[i].size);
    im_hash_update(&h, &recs[i].hash, sizeof recs[i].hash);
    if (!recs[i].bad && recs[i].channels == 3) channels = 3;
  }
  r->content_hash = im_hash_final(&h);
  r->channels = channels;

  if ((st = im_mkdir_p(meta))) goto done;
  remove_stale_temps(meta);
  remove_stale_temps(o->data_dir);
  if (!o->force && try_reuse(o, r, r->content_hash)) {
    r->cache_reused = 1;
    goto finish;
  }
  /* try_reuse may have filled parts of r before it gave up: start clean. */
  for (int k = 0; k < r->n_classes; k++) im_free(r->classes[k]);
  im_free(r->classes);
  im_free(r->counts);
  r->classes = NULL;
  r->counts = NULL;
  r->n_classes = 0;
  r->total = 0;
  for (int64_t i = 0; i < r->n_bad; i++) {
    im_free(r->bad[i].path);
    im_free(r->bad[i].reason);
  }
  im_free(r->bad);
  r->bad = NULL;
  r->n_bad = 0;

  /* Pass 2: decode, resize, sum, write into the cache's slots. */
  im__cache_header_t ch = {.n = (uint64_t)f.n_files, .size = (uint32_t)o->img_size, .channels = (uint32_t)channels,
                           .n_classes = (uint32_t)f.n_classes, .content_hash = r->content_hash, .split_hash = split_hash(o)};
  uint64_t file_size = im__cache_layout(&ch);
  if ((st = im_atomic_file_open(r->cache_path, &af))) goto done;
  if (ftruncate(im_atomic_file_fd(af), (off_t)file_size) != 0) {
    st = im_error(IM_ERR_IO, "cannot size the cache file to %llu bytes: %s", (unsigned long long)file_size, strerror(errno));
    goto done;
  }
  for (int t = 0; t < nthreads; t++)
    if (!(scratch[t] = im_malloc((size_t)o->img_size * o->img_size * channels))) {
      st = im_error(IM_ERR_NOMEM, "out of memory");
      goto done;
    }
  ctx.size = o->img_size;
  ctx.channels = channels;
  ctx.fd = im_atomic_file_fd(af);
  ctx.pixels_off = ch.pixels_off;
  ctx.scratch = scratch;
  if ((st = run_chunked(o, "decode", f.n_files, decode_one, &ctx))) goto done;
  for (int64_t i = 0; i < f.n_files; i++) {
    if (recs[i].bad == 2) {
      st = im_error(IM_ERR_IO, "cannot write the cache file %s (disk full?)", r->cache_path);
      goto done;
    }
    usable[i] = !recs[i].bad;
  }

  /* The split, and the statistics over its train part. */
  if ((st = im__split_assign(&f, usable, o->ratios, o->seed, split))) goto done;
  r->n_classes = f.n_classes;
  r->classes = im_calloc((size_t)f.n_classes, sizeof *r->classes);
  r->counts = im_calloc((size_t)f.n_classes, sizeof *r->counts);
  if (!r->classes || !r->counts) {
    st = im_error(IM_ERR_NOMEM, "out of memory");
    goto done;
  }
  for (int k = 0; k < f.n_classes; k++)
    if (!(r->classes[k] = im_strdup(f.classes[k]))) {
      st = im_error(IM_ERR_NOMEM, "out of memory");
      goto done;
    }
  uint64_t sum[3] = {0}, sumsq[3] = {0};
  int64_t ntrain = 0;
  for (int64_t i = 0; i < f.n_files; i++) {
    if (recs[i].bad) {
      if ((st = add_bad(r, f.files[i].rel, recs[i].reason))) goto done;
      continue;
    }
    r->counts[f.files[i].label][split[i]]++;
    r->total++;
    if (split[i] != IM_SPLIT_TRAIN) continue;
    ntrain++;
    for (int c = 0; c < channels; c++) {
      sum[c] += recs[i].sum[c];
      sumsq[c] += recs[i].sumsq[c];
    }
  }
  if (r->total == 0) {
    st = im_error(IM_ERR_EMPTY, "none of the %lld images in %s could be used", (long long)f.n_files, o->data_dir);
    goto done;
  }
  for (int k = 0; k < f.n_classes; k++) {
    int64_t n = r->counts[k][0] + r->counts[k][1] + r->counts[k][2];
    if (n == 0) {
      st = im_error(IM_ERR_EMPTY, "class '%s' has no usable images", f.classes[k]);
      goto done;
    }
  }
  double npx = (double)ntrain * o->img_size * o->img_size;
  for (int c = 0; c < 3; c++) {
    int cc = channels == 3 ? c : 0;
    double m = (double)sum[cc] / npx, q = (double)sumsq[cc] / npx;
    double var = q - m * m;
    r->mean[c] = m / 255.0;
    r->std[c] = sqrt(var > 0 ? var : 0) / 255.0;
    ch.mean[c] = r->mean[c];
    ch.std[c] = r->std[c];
  }

  /* Labels, split and header; then the cache appears whole. */
  {
    uint8_t *block = im_malloc(IM__CACHE_HEADER + 2 * (size_t)f.n_files);
    if (!block) {
      st = im_error(IM_ERR_NOMEM, "out of memory");
      goto done;
    }
    im__cache_header_write(&ch, block);
    uint8_t *lab = block + IM__CACHE_HEADER;
    for (int64_t i = 0; i < f.n_files; i++) {
      lab[2 * i] = (uint8_t)(f.files[i].label & 0xff);
      lab[2 * i + 1] = (uint8_t)(f.files[i].label >> 8);
    }
    int fd = im_atomic_file_fd(af);
    size_t n1 = IM__CACHE_HEADER + 2 * (size_t)f.n_files;
    int ok = pwrite(fd, block, n1, 0) == (ssize_t)n1 &&
             pwrite(fd, split, (size_t)f.n_files, (off_t)ch.split_off) == (ssize_t)f.n_files;
    im_free(block);
    if (!ok) {
      st = im_error(IM_ERR_IO, "cannot write the cache file %s: %s", r->cache_path, strerror(errno));
      goto done;
    }
    st = im_atomic_file_commit(af);
    af = NULL;
    if (st) goto done;
  }

  /* split.json, dataset.json, mean-std.txt. */
  {
    char hex[17];
    json_t *files = json_array();
    for (int64_t i = 0; i < f.n_files; i++) {
      if (split[i] == IM__SPLIT_NONE) continue;
      json_array_append_new(files, json_pack("{s:s, s:i, s:s}", "file", f.files[i].rel, "label", f.files[i].label,
                                             "split", im_split_name(split[i])));
    }
    json_t *classes = json_array();
    for (int k = 0; k < f.n_classes; k++) json_array_append_new(classes, json_string(f.classes[k]));
    json_t *sj = json_pack("{s:s, s:i, s:I, s:[f,f,f], s:O, s:o}", "format", "imops-split", "version", 1, "seed",
                           (json_int_t)o->seed, "ratios", o->ratios[0], o->ratios[1], o->ratios[2], "classes", classes,
                           "files", files);
    st = sj ? write_json(r->split_path, sj) : im_error(IM_ERR_NOMEM, "out of memory");
    json_decref(sj);
    if (st) {
      json_decref(classes);
      goto done;
    }
    json_t *counts = json_object();
    for (int s = 0; s < 3; s++) {
      json_t *per = json_object();
      for (int k = 0; k < f.n_classes; k++) json_object_set_new(per, f.classes[k], json_integer(r->counts[k][s]));
      json_object_set_new(counts, im_split_name(s), per);
    }
    json_t *bad = json_array();
    for (int64_t i = 0; i < r->n_bad; i++)
      json_array_append_new(bad, json_pack("{s:s, s:s}", "file", r->bad[i].path ? r->bad[i].path : "?", "reason",
                                           r->bad[i].reason ? r->bad[i].reason : "?"));
    json_t *dj = json_pack("{s:s, s:i, s:o, s:i, s:i, s:I, s:o, s:[f,f,f], s:[f,f,f], s:s, s:I, s:[f,f,f], s:s, s:o}",
                           "format", "imops-dataset", "version", 1, "classes", classes, "channels", channels,
                           "img_size", o->img_size, "total", (json_int_t)r->total, "counts", counts, "mean", r->mean[0],
                           r->mean[1], r->mean[2], "std", r->std[0], r->std[1], r->std[2], "content_hash",
                           hex64(r->content_hash, hex), "seed", (json_int_t)o->seed, "ratios", o->ratios[0],
                           o->ratios[1], o->ratios[2], "cache", name, "bad_files", bad);
    st = dj ? write_json(r->dataset_path, dj) : im_error(IM_ERR_NOMEM, "out of memory");
    json_decref(dj);
    if (st) goto done;
    char ms[512];
    int len = snprintf(ms, sizeof ms, "%.9f\n%.9f\n%.9f\n%.9f\n%.9f\n%.9f\n", r->mean[0], r->mean[1], r->mean[2],
                       r->std[0], r->std[1], r->std[2]);
    if ((st = im_file_write_atomic(r->mean_std_path, ms, (size_t)len))) goto done;
  }

finish:
  if (o->materialize_dir) {
    if (r->cache_reused) { /* the split comes from the cache */
      im_cache_t *c;
      if ((st = im_cache_open(r->cache_path, &c))) goto done;
      for (int64_t i = 0; i < f.n_files; i++) split[i] = (uint8_t)im_cache_split(c, i);
      im_cache_close(c);
    }
    if ((st = materialize(o, &f, split))) goto done;
  }
  st = IM_OK;
done:
  im_atomic_file_abort(af);
  if (scratch)
    for (int t = 0; t < nthreads; t++) im_free(scratch[t]);
  im_free(scratch);
  if (st && recs && r->n_bad == 0) /* report bad files even when the run failed */
    for (int64_t i = 0; i < f.n_files; i++)
      if (recs[i].bad && add_bad(r, f.files[i].rel, recs[i].reason)) break;
  if (recs)
    for (int64_t i = 0; i < f.n_files; i++) {
      im_free(recs[i].reason);
      im_free(recs[i].data);
    }
  im_free(recs);
  im_free(split);
  im_free(usable);
  im_free(meta);
  im__folder_free(&f);
  r->seconds = im_time_now() - t0;
  return st;
}
