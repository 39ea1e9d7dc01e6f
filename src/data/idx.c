/* IDX import: MNIST-style idx3-ubyte images and idx1-ubyte labels (gzip or
 * plain; zlib reads both) to an ImageFolder of PNGs, one folder per class.
 * Folder names carry the label number first ("0_T-shirt_top") so that sorting
 * by name, as ImageFolder does, keeps the original label order. */
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <zlib.h>

#include "imops/core.h"
#include "imops/data.h"
#include "imops/image.h"

#define IDX_MAX_BYTES (1ULL << 31) /* 2 GiB decompressed */

static const char *const fashion_names[10] = {"T-shirt_top", "Trouser", "Pullover", "Dress", "Coat",
                                              "Sandal",      "Shirt",   "Sneaker",  "Bag",   "Ankle_boot"};

/* Reads a whole (possibly gzip'd) file; at most IDX_MAX_BYTES after decompression. */
static im_status_t read_gz(const char *path, uint8_t **out, size_t *len) {
  *out = NULL;
  *len = 0;
  gzFile g = gzopen(path, "rb");
  if (!g) return im_error(IM_ERR_NOT_FOUND, "cannot open %s", path);
  size_t cap = 1 << 20, n = 0;
  uint8_t *buf = im_malloc(cap);
  if (!buf) {
    gzclose(g);
    return im_error(IM_ERR_NOMEM, "out of memory reading %s", path);
  }
  for (;;) {
    if (n == cap) {
      if (cap >= IDX_MAX_BYTES) {
        im_free(buf);
        gzclose(g);
        return im_error(IM_ERR_LIMIT, "%s: more than %llu bytes of data", path, IDX_MAX_BYTES);
      }
      uint8_t *nb = im_realloc(buf, cap * 2);
      if (!nb) {
        im_free(buf);
        gzclose(g);
        return im_error(IM_ERR_NOMEM, "out of memory reading %s", path);
      }
      buf = nb;
      cap *= 2;
    }
    size_t want = cap - n;
    if (want > (1u << 30)) want = 1u << 30;
    int r = gzread(g, buf + n, (unsigned)want);
    if (r < 0) {
      int errnum;
      const char *msg = gzerror(g, &errnum);
      im_status_t st = im_error(IM_ERR_FORMAT, "%s: %s", path, msg);
      im_free(buf);
      gzclose(g);
      return st;
    }
    if (r == 0) break;
    n += (size_t)r;
  }
  int errnum = Z_OK;
  gzerror(g, &errnum);
  gzclose(g);
  if (errnum != Z_OK && errnum != Z_STREAM_END) {
    im_free(buf);
    return im_error(IM_ERR_FORMAT, "%s: truncated or corrupt gzip data", path);
  }
  *out = buf;
  *len = n;
  return IM_OK;
}

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Parses an IDX header of unsigned bytes with ndim dimensions; returns the
 * element count in *count and the dimensions in dims. */
static im_status_t idx_header(const char *path, const uint8_t *d, size_t len, int ndim, uint32_t *dims,
                              size_t *count) {
  if (len < 4 + 4 * (size_t)ndim) return im_error(IM_ERR_FORMAT, "%s: too short for an IDX header", path);
  if (d[0] != 0 || d[1] != 0) return im_error(IM_ERR_FORMAT, "%s: not an IDX file (bad magic)", path);
  if (d[2] != 0x08) return im_error(IM_ERR_UNSUPPORTED, "%s: IDX element type 0x%02x; only unsigned bytes (0x08)", path, d[2]);
  if (d[3] != ndim)
    return im_error(IM_ERR_FORMAT, "%s: IDX has %d dimensions, expected %d", path, d[3], ndim);
  size_t n = 1;
  for (int i = 0; i < ndim; i++) {
    dims[i] = be32(d + 4 + 4 * i);
    if (dims[i] == 0) return im_error(IM_ERR_FORMAT, "%s: dimension %d is zero", path, i);
    if (n > IDX_MAX_BYTES / dims[i]) return im_error(IM_ERR_LIMIT, "%s: dimensions too large", path);
    n *= dims[i];
  }
  size_t hdr = 4 + 4 * (size_t)ndim;
  if (len - hdr < n)
    return im_error(IM_ERR_FORMAT, "%s: truncated: header says %zu bytes of data, file has %zu", path, n, len - hdr);
  *count = n;
  return IM_OK;
}

typedef struct {
  const uint8_t *pixels, *labels;
  uint32_t rows, cols;
  char **class_dirs;
  int64_t *index_in_class;
  im_status_t *status;
  char **errors;
} import_ctx_t;

static void import_one(void *p, int64_t i, int thread) {
  import_ctx_t *c = p;
  im_image_t img = {.w = (int)c->cols, .h = (int)c->rows, .c = 1,
                    .data = (uint8_t *)(uintptr_t)(c->pixels + (size_t)i * c->rows * c->cols)};
  uint8_t *png = NULL;
  size_t len = 0;
  im_status_t st = im_image_encode_png(&img, &png, &len);
  if (st == IM_OK) {
    char name[32];
    snprintf(name, sizeof name, "%05lld.png", (long long)c->index_in_class[i] + 1);
    char *path = im_path_join(c->class_dirs[c->labels[i]], name);
    if (!path)
      st = im_error(IM_ERR_NOMEM, "out of memory");
    else
      st = im_file_write_atomic_ex(path, png, len, 0);
    im_free(path);
  }
  im_free(png);
  if (st) {
    c->status[i] = st;
    c->errors[i] = im_strdup(im_last_error());
  }
}

im_status_t im_data_idx_import(const im_idx_import_opts_t *o, im_idx_import_result_t *res) {
  memset(res, 0, sizeof *res);
  if (!o->images_path || !o->labels_path || !o->out_dir) return im_error(IM_ERR_ARG, "images, labels and out are required");
  uint8_t *img = NULL, *lab = NULL;
  size_t img_len = 0, lab_len = 0;
  im_status_t st = read_gz(o->images_path, &img, &img_len);
  if (st) return st;
  st = read_gz(o->labels_path, &lab, &lab_len);
  if (st) {
    im_free(img);
    return st;
  }
  uint32_t idims[3], ldims[1];
  size_t icount, lcount;
  char **class_dirs = NULL;
  int64_t *per = NULL, *counts = NULL;
  import_ctx_t ctx = {0};
  int n_classes = 0;
  int64_t n_alloc = 0;
  if ((st = idx_header(o->images_path, img, img_len, 3, idims, &icount)) ||
      (st = idx_header(o->labels_path, lab, lab_len, 1, ldims, &lcount)))
    goto done;
  if (idims[0] != ldims[0]) {
    st = im_error(IM_ERR_FORMAT, "%s has %u images but %s has %u labels", o->images_path, idims[0], o->labels_path, ldims[0]);
    goto done;
  }
  if (idims[1] > 4096 || idims[2] > 4096) {
    st = im_error(IM_ERR_LIMIT, "%s: images of %ux%u are too large", o->images_path, idims[2], idims[1]);
    goto done;
  }
  int64_t n = idims[0];
  if (o->limit > 0 && o->limit < n) n = o->limit;
  const uint8_t *labels = lab + 8;
  int max_label = 0;
  for (int64_t i = 0; i < n; i++)
    if (labels[i] > max_label) max_label = labels[i];
  n_classes = max_label + 1;
  if (o->limit > 0) { /* the class count comes from the whole file, not the first N */
    for (uint32_t i = 0; i < idims[0]; i++)
      if (labels[i] + 1 > n_classes) n_classes = labels[i] + 1;
  }
  if (o->class_names && o->n_class_names < n_classes) {
    st = im_error(IM_ERR_ARG, "%d class names given but the labels go up to %d", o->n_class_names, n_classes - 1);
    goto done;
  }
  int fashion = !o->class_names && n_classes == 10;
  if (fashion) { /* plain MNIST digits keep numeric names */
    const char *p = o->images_path;
    int has_mnist = 0, has_fashion = 0;
    for (; *p; p++) {
      if (!strncasecmp(p, "mnist", 5)) has_mnist = 1;
      if (!strncasecmp(p, "fashion", 7)) has_fashion = 1;
    }
    if (has_mnist && !has_fashion) fashion = 0;
  }
  class_dirs = im_calloc((size_t)n_classes, sizeof *class_dirs);
  counts = im_calloc((size_t)n_classes, sizeof *counts);
  per = im_calloc((size_t)n, sizeof *per);
  ctx.status = im_calloc((size_t)n, sizeof *ctx.status);
  ctx.errors = im_calloc((size_t)n, sizeof *ctx.errors);
  n_alloc = ctx.errors ? n : 0;
  if (!class_dirs || !counts || !per || !ctx.status || !ctx.errors) {
    st = im_error(IM_ERR_NOMEM, "out of memory");
    goto done;
  }
  int width = n_classes > 10 ? (n_classes > 100 ? 3 : 2) : 1;
  for (int k = 0; k < n_classes; k++) {
    char name[256];
    if (o->class_names) {
      const char *cn = o->class_names[k];
      if (!*cn || strchr(cn, '/') || !strcmp(cn, ".") || !strcmp(cn, "..") || cn[0] == '.') {
        st = im_error(IM_ERR_ARG, "class name '%s' cannot be a folder name", cn);
        goto done;
      }
      snprintf(name, sizeof name, "%0*d_%s", width, k, cn);
    } else if (fashion)
      snprintf(name, sizeof name, "%d_%s", k, fashion_names[k]);
    else
      snprintf(name, sizeof name, "%0*d", width, k);
    class_dirs[k] = im_path_join(o->out_dir, name);
    if (!class_dirs[k]) {
      st = im_error(IM_ERR_NOMEM, "out of memory");
      goto done;
    }
    if ((st = im_mkdir_p(class_dirs[k]))) goto done;
  }
  for (int64_t i = 0; i < n; i++) per[i] = counts[labels[i]]++;
  ctx = (import_ctx_t){.pixels = img + 16, .labels = labels, .rows = idims[1], .cols = idims[2],
                       .class_dirs = class_dirs, .index_in_class = per, .status = ctx.status, .errors = ctx.errors};
  const int64_t chunk = 1024;
  for (int64_t s = 0; s < n; s += chunk) {
    int64_t m = n - s < chunk ? n - s : chunk;
    import_ctx_t sub = ctx;
    sub.pixels += (size_t)s * idims[1] * idims[2];
    sub.labels += s;
    sub.index_in_class += s;
    sub.status += s;
    sub.errors += s;
    if ((st = im_parallel_for(m, 0, import_one, &sub))) goto done;
    for (int64_t i = s; i < s + m; i++) {
      if (ctx.status[i]) {
        st = im_error(ctx.status[i], "%s", ctx.errors[i] ? ctx.errors[i] : "cannot write an image");
        goto done;
      }
    }
    if (o->progress) o->progress(o->progress_user, "import", s + m, n);
  }
  res->count = n;
  res->n_classes = n_classes;
  res->rows = (int)idims[1];
  res->cols = (int)idims[2];
done:
  if (class_dirs)
    for (int k = 0; k < n_classes; k++) im_free(class_dirs[k]);
  if (ctx.errors)
    for (int64_t i = 0; i < n_alloc; i++) im_free(ctx.errors[i]);
  im_free(class_dirs);
  im_free(counts);
  im_free(per);
  im_free(ctx.status);
  im_free(ctx.errors);
  im_free(img);
  im_free(lab);
  return st;
}
