/* safetensors files: a strict reader (this parses outside input: every
 * length, offset, dtype and shape is checked before use) and an atomic
 * writer. Layout: u64 little-endian header length N, N bytes of JSON, data. */
#include <errno.h>
#include <jansson.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "imops/tensor.h"
#include "tensor/tensor_impl.h"

/* The reference implementation's cap on the header; also bounds jansson's work. */
#define ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)

typedef struct {
  char *name;
  im_dtype_t dtype;
  int ndim;
  int64_t shape[IM_TENSOR_MAX_DIMS];
  uint64_t begin, end; /* relative to the data start */
  void *data;          /* aligned for dtype: into buf, or into own */
  void *own;           /* a realigned copy when the file's offset was not aligned */
} st_entry;

struct im_safetensors {
  uint8_t *buf; /* the whole file */
  size_t len;
  st_entry *e;
  size_t n;
  char **meta; /* key, value, key, value, ... */
  size_t n_meta;
};

/* ---- reading ------------------------------------------------------------------ */

void im_safetensors_free(im_safetensors_t *s) {
  if (!s) return;
  for (size_t i = 0; i < s->n; i++) {
    im_free(s->e[i].name);
    im_free(s->e[i].own);
  }
  im_free(s->e);
  for (size_t i = 0; i < 2 * s->n_meta; i++) im_free(s->meta[i]);
  im_free(s->meta);
  im_free(s->buf);
  im_free(s);
}

static int dtype_from_name(const char *s, im_dtype_t *dt) {
  static const char *const other[] = {"BOOL", "I8",  "I16", "I64",  "U16",     "U32",    "U64",
                                      "F16",  "BF16", "F64", "F8_E4M3", "F8_E5M2", "C64"};
  if (!strcmp(s, "F32")) *dt = IM_F32;
  else if (!strcmp(s, "U8")) *dt = IM_U8;
  else if (!strcmp(s, "I32")) *dt = IM_I32;
  else {
    for (size_t i = 0; i < sizeof other / sizeof *other; i++)
      if (!strcmp(s, other[i])) return 1; /* valid safetensors, not ours */
    return -1;
  }
  return 0;
}

static im_status_t parse_entry(const char *name, json_t *v, uint64_t data_len, st_entry *e) {
  if (!json_is_object(v)) return im_error(IM_ERR_FORMAT, "safetensors: entry \"%s\" is not an object", name);
  json_t *jd = json_object_get(v, "dtype"), *js = json_object_get(v, "shape"), *jo = json_object_get(v, "data_offsets");
  if (!jd || !js || !jo || json_object_size(v) != 3)
    return im_error(IM_ERR_FORMAT, "safetensors: entry \"%s\" needs exactly dtype, shape and data_offsets", name);
  if (!json_is_string(jd)) return im_error(IM_ERR_FORMAT, "safetensors: dtype of \"%s\" is not a string", name);
  int r = dtype_from_name(json_string_value(jd), &e->dtype);
  if (r > 0)
    return im_error(IM_ERR_UNSUPPORTED, "safetensors: \"%s\" has dtype %s; only F32, U8 and I32 are supported", name,
                    json_string_value(jd));
  if (r < 0) return im_error(IM_ERR_FORMAT, "safetensors: \"%s\" has an unknown dtype", name);
  if (!json_is_array(js)) return im_error(IM_ERR_FORMAT, "safetensors: shape of \"%s\" is not an array", name);
  size_t nd = json_array_size(js);
  if (nd > IM_TENSOR_MAX_DIMS)
    return im_error(IM_ERR_UNSUPPORTED, "safetensors: \"%s\" has %zu dimensions (at most %d)", name, nd,
                    IM_TENSOR_MAX_DIMS);
  e->ndim = (int)nd;
  uint64_t bytes = im_dtype_size(e->dtype);
  int overflow = 0;
  for (size_t i = 0; i < nd; i++) {
    json_t *d = json_array_get(js, i);
    if (!json_is_integer(d) || json_integer_value(d) < 0)
      return im_error(IM_ERR_FORMAT, "safetensors: shape of \"%s\" has a non-integer or negative size", name);
    e->shape[i] = (int64_t)json_integer_value(d);
  }
  for (size_t i = 0; i < nd; i++) {
    uint64_t d = (uint64_t)e->shape[i];
    if (d == 0) {
      bytes = 0;
      overflow = 0;
      break;
    }
    if (overflow || d > IM__TENSOR_MAX_BYTES / (bytes ? bytes : 1)) overflow = 1;
    else bytes *= d;
  }
  if (overflow) return im_error(IM_ERR_FORMAT, "safetensors: shape of \"%s\" is too large", name);
  if (!json_is_array(jo) || json_array_size(jo) != 2)
    return im_error(IM_ERR_FORMAT, "safetensors: data_offsets of \"%s\" is not a pair", name);
  json_t *jb = json_array_get(jo, 0), *je = json_array_get(jo, 1);
  if (!json_is_integer(jb) || !json_is_integer(je) || json_integer_value(jb) < 0 || json_integer_value(je) < 0)
    return im_error(IM_ERR_FORMAT, "safetensors: data_offsets of \"%s\" are not non-negative integers", name);
  e->begin = (uint64_t)json_integer_value(jb);
  e->end = (uint64_t)json_integer_value(je);
  if (e->begin > e->end || e->end > data_len)
    return im_error(IM_ERR_FORMAT, "safetensors: data_offsets [%llu, %llu] of \"%s\" are outside the %llu data bytes",
                    (unsigned long long)e->begin, (unsigned long long)e->end, name, (unsigned long long)data_len);
  if (e->end - e->begin != bytes)
    return im_error(IM_ERR_FORMAT, "safetensors: \"%s\" is %s with %llu bytes of shape but %llu bytes of data", name,
                    im_dtype_name(e->dtype), (unsigned long long)bytes, (unsigned long long)(e->end - e->begin));
  e->name = im_strdup(name);
  if (!e->name) return im_error(IM_ERR_NOMEM, "out of memory");
  return IM_OK;
}

static im_status_t parse_metadata(im_safetensors_t *s, json_t *m) {
  if (!json_is_object(m)) return im_error(IM_ERR_FORMAT, "safetensors: __metadata__ is not an object");
  size_t n = json_object_size(m);
  s->meta = im_calloc(n ? 2 * n : 1, sizeof *s->meta);
  if (!s->meta) return im_error(IM_ERR_NOMEM, "out of memory");
  const char *k;
  json_t *v;
  json_object_foreach(m, k, v) {
    if (!json_is_string(v)) return im_error(IM_ERR_FORMAT, "safetensors: metadata \"%s\" is not a string", k);
    char *kk = im_strdup(k), *vv = im_strndup(json_string_value(v), json_string_length(v));
    s->meta[2 * s->n_meta] = kk;
    s->meta[2 * s->n_meta + 1] = vv;
    s->n_meta++;
    if (!kk || !vv) return im_error(IM_ERR_NOMEM, "out of memory");
  }
  return IM_OK;
}

static int cmp_entry(const void *a, const void *b) {
  const st_entry *x = a, *y = b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return 0;
}

static uint64_t get_le64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = v << 8 | p[i];
  return v;
}

/* Takes ownership of buf (an im_malloc'd whole file), also on failure. */
static im_status_t parse_owned(uint8_t *buf, size_t len, im_safetensors_t **out) {
  *out = NULL;
  im_safetensors_t *s = im_calloc(1, sizeof *s);
  if (!s) {
    im_free(buf);
    return im_error(IM_ERR_NOMEM, "out of memory");
  }
  s->buf = buf;
  s->len = len;
  im_status_t st = IM_OK;
  json_t *root = NULL;
  if (len < 8) {
    st = im_error(IM_ERR_FORMAT, "safetensors: %zu bytes is shorter than the 8-byte header length", len);
    goto fail;
  }
  uint64_t hlen = get_le64(buf);
  if (hlen > len - 8) {
    st = im_error(IM_ERR_FORMAT, "safetensors: header length %llu exceeds the %zu bytes that follow it",
                  (unsigned long long)hlen, len - 8);
    goto fail;
  }
  if (hlen > ST_MAX_HEADER) {
    st = im_error(IM_ERR_FORMAT, "safetensors: header length %llu is over the limit of %llu",
                  (unsigned long long)hlen, (unsigned long long)ST_MAX_HEADER);
    goto fail;
  }
  if (hlen < 2 || buf[8] != '{') {
    st = im_error(IM_ERR_FORMAT, "safetensors: the header is not a JSON object");
    goto fail;
  }
  uint64_t data_len = len - 8 - hlen;
  json_error_t jerr;
  root = json_loadb((const char *)buf + 8, (size_t)hlen, JSON_REJECT_DUPLICATES, &jerr);
  if (!root || !json_is_object(root)) {
    st = im_error(IM_ERR_FORMAT, "safetensors: bad JSON header: %s", root ? "not an object" : jerr.text);
    goto fail;
  }
  size_t cap = json_object_size(root);
  s->e = im_calloc(cap ? cap : 1, sizeof *s->e);
  if (!s->e) {
    st = im_error(IM_ERR_NOMEM, "out of memory");
    goto fail;
  }
  const char *k;
  json_t *v;
  json_object_foreach(root, k, v) {
    if (!strcmp(k, "__metadata__")) {
      st = parse_metadata(s, v);
    } else {
      st = parse_entry(k, v, data_len, &s->e[s->n]);
      if (st == IM_OK) s->n++;
    }
    if (st != IM_OK) goto fail;
  }
  if (!s->meta) {
    s->meta = im_calloc(1, sizeof *s->meta);
    if (!s->meta) {
      st = im_error(IM_ERR_NOMEM, "out of memory");
      goto fail;
    }
  }
  /* The data must be tiled exactly: no gaps, no overlaps, nothing left over. */
  qsort(s->e, s->n, sizeof *s->e, cmp_entry);
  uint64_t at = 0;
  for (size_t i = 0; i < s->n; i++) {
    if (s->e[i].begin != at) {
      st = im_error(IM_ERR_FORMAT, "safetensors: \"%s\" starts at data offset %llu, expected %llu (%s)", s->e[i].name,
                    (unsigned long long)s->e[i].begin, (unsigned long long)at,
                    s->e[i].begin < at ? "overlap" : "gap");
      goto fail;
    }
    at = s->e[i].end;
  }
  if (at != data_len) {
    st = im_error(IM_ERR_FORMAT, "safetensors: tensors cover %llu of %llu data bytes", (unsigned long long)at,
                  (unsigned long long)data_len);
    goto fail;
  }
  uint8_t *data = buf + 8 + hlen;
  for (size_t i = 0; i < s->n; i++) {
    st_entry *e = &s->e[i];
    size_t nb = (size_t)(e->end - e->begin), es = im_dtype_size(e->dtype);
    uint8_t *p = data + e->begin;
    if ((uintptr_t)p % es == 0) {
      e->data = p;
    } else {
      e->data = im__aligned_alloc(nb, &e->own);
      if (!e->data) {
        st = im_error(IM_ERR_NOMEM, "out of memory");
        goto fail;
      }
      memcpy(e->data, p, nb);
    }
  }
  json_decref(root);
  *out = s;
  return IM_OK;
fail:
  json_decref(root);
  im_safetensors_free(s);
  return st;
}

im_status_t im_safetensors_parse(const void *data, size_t len, im_safetensors_t **out) {
  *out = NULL;
  uint8_t *buf = im_malloc(len ? len : 1);
  if (!buf) return im_error(IM_ERR_NOMEM, "out of memory");
  if (len) memcpy(buf, data, len);
  return parse_owned(buf, len, out);
}

im_status_t im_safetensors_load(const char *path, size_t max_bytes, im_safetensors_t **out) {
  *out = NULL;
  uint8_t *buf;
  size_t len;
  im_status_t st = im_file_read(path, max_bytes, &buf, &len);
  if (st != IM_OK) return st;
  st = parse_owned(buf, len, out);
  if (st != IM_OK) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s", im_last_error());
    return im_error(st, "%s: %s", path, msg);
  }
  return IM_OK;
}

size_t im_safetensors_count(const im_safetensors_t *s) { return s->n; }

const char *im_safetensors_name(const im_safetensors_t *s, size_t i) { return i < s->n ? s->e[i].name : NULL; }

static const st_entry *find(const im_safetensors_t *s, const char *name) {
  for (size_t i = 0; i < s->n; i++)
    if (!strcmp(s->e[i].name, name)) return &s->e[i];
  return NULL;
}

im_status_t im_safetensors_get(const im_safetensors_t *s, const char *name, im_tensor_t *view) {
  memset(view, 0, sizeof *view);
  const st_entry *e = find(s, name);
  if (!e) return im_error(IM_ERR_NOT_FOUND, "safetensors: no tensor \"%s\"", name);
  return im_tensor_view(view, e->dtype, e->ndim, e->shape, e->data);
}

static void shape_str(char *b, size_t n, im_dtype_t dt, int ndim, const int64_t *shape) {
  size_t at = (size_t)snprintf(b, n, "%s[", im_dtype_name(dt));
  for (int i = 0; i < ndim && at < n; i++) at += (size_t)snprintf(b + at, n - at, i ? ",%lld" : "%lld", (long long)shape[i]);
  if (at < n) snprintf(b + at, n - at, "]");
}

im_status_t im_safetensors_read_into(const im_safetensors_t *s, const char *name, im_tensor_t *dst) {
  im_tensor_t v;
  im_status_t st = im_safetensors_get(s, name, &v);
  if (st != IM_OK) return st;
  if (!im_tensor_same_shape(&v, dst)) {
    char a[160], b[160];
    shape_str(a, sizeof a, v.dtype, v.ndim, v.shape);
    shape_str(b, sizeof b, dst->dtype, dst->ndim, dst->shape);
    return im_error(IM_ERR_ARG, "safetensors: \"%s\" is %s in the file but %s is expected", name, a, b);
  }
  if (!dst->data && im_tensor_nbytes(dst)) return im_error(IM_ERR_ARG, "safetensors: no memory to read \"%s\" into", name);
  return im_tensor_copy(dst, &v);
}

const char *im_safetensors_metadata(const im_safetensors_t *s, const char *key) {
  for (size_t i = 0; i < s->n_meta; i++)
    if (!strcmp(s->meta[2 * i], key)) return s->meta[2 * i + 1];
  return NULL;
}

size_t im_safetensors_metadata_count(const im_safetensors_t *s) { return s->n_meta; }

const char *im_safetensors_metadata_key(const im_safetensors_t *s, size_t i) {
  return i < s->n_meta ? s->meta[2 * i] : NULL;
}

/* ---- writing ------------------------------------------------------------------ */

/* The header (padded) and the order in which tensor data follow it. */
typedef struct {
  char *header; /* malloc'd by jansson, then padded copy from im_malloc */
  size_t hlen;
  size_t *order;
  uint64_t data_len;
} st_plan;

static void plan_free(st_plan *p) {
  im_free(p->header);
  im_free(p->order);
}

static im_status_t plan(const im_named_tensor_t *ts, size_t n, const im_safetensors_meta_t *meta, size_t n_meta,
                        st_plan *p) {
  memset(p, 0, sizeof *p);
  if (n && !ts) return im_error(IM_ERR_ARG, "safetensors: no tensors given");
  if (n_meta && !meta) return im_error(IM_ERR_ARG, "safetensors: no metadata given");
  for (size_t i = 0; i < n; i++) {
    const im_tensor_t *t = ts[i].tensor;
    if (!ts[i].name || !t) return im_error(IM_ERR_ARG, "safetensors: tensor %zu has no name or no tensor", i);
    if (!strcmp(ts[i].name, "__metadata__")) return im_error(IM_ERR_ARG, "safetensors: \"__metadata__\" is reserved");
    im_status_t st = im_tensor_check_shape(t->dtype, t->ndim, t->shape);
    if (st != IM_OK) return st;
    if (!t->data && im_tensor_nbytes(t)) return im_error(IM_ERR_ARG, "safetensors: \"%s\" has no data", ts[i].name);
    for (size_t j = 0; j < i; j++)
      if (!strcmp(ts[i].name, ts[j].name)) return im_error(IM_ERR_ARG, "safetensors: duplicate name \"%s\"", ts[i].name);
  }
  for (size_t i = 0; i < n_meta; i++)
    if (!meta[i].key || !meta[i].value) return im_error(IM_ERR_ARG, "safetensors: metadata %zu is incomplete", i);
  p->order = im_malloc((n ? n : 1) * sizeof *p->order);
  if (!p->order) return im_error(IM_ERR_NOMEM, "out of memory");
  /* Largest elements first keeps every tensor aligned (the header is padded to 8). */
  size_t k = 0;
  for (size_t es = 4; es >= 1; es /= 2)
    for (size_t i = 0; i < n; i++)
      if (im_dtype_size(ts[i].tensor->dtype) == es) p->order[k++] = i;
  im_status_t st = IM_OK;
  json_t *root = json_object();
  if (!root) goto nomem;
  if (n_meta) {
    json_t *m = json_object();
    if (!m || json_object_set_new(root, "__metadata__", m)) goto nomem;
    for (size_t i = 0; i < n_meta; i++) {
      if (json_object_get(m, meta[i].key)) {
        st = im_error(IM_ERR_ARG, "safetensors: duplicate metadata key \"%s\"", meta[i].key);
        goto out;
      }
      json_t *v = json_string(meta[i].value);
      if (!v) {
        st = im_error(IM_ERR_ARG, "safetensors: metadata \"%s\" is not valid UTF-8", meta[i].key);
        goto out;
      }
      if (json_object_set_new(m, meta[i].key, v)) {
        st = im_error(IM_ERR_ARG, "safetensors: metadata key \"%s\" is not valid UTF-8", meta[i].key);
        goto out;
      }
    }
  }
  uint64_t off = 0;
  for (size_t j = 0; j < n; j++) {
    const im_named_tensor_t *nt = &ts[p->order[j]];
    const im_tensor_t *t = nt->tensor;
    json_t *e = json_object(), *shape = json_array(), *offs = json_array();
    if (!e || !shape || !offs) {
      json_decref(e);
      json_decref(shape);
      json_decref(offs);
      goto nomem;
    }
    int bad = json_object_set_new(e, "dtype", json_string(im_dtype_name(t->dtype)));
    for (int d = 0; d < t->ndim; d++) bad |= json_array_append_new(shape, json_integer(t->shape[d]));
    uint64_t nb = im_tensor_nbytes(t);
    bad |= json_array_append_new(offs, json_integer((json_int_t)off));
    bad |= json_array_append_new(offs, json_integer((json_int_t)(off + nb)));
    bad |= json_object_set_new(e, "shape", shape);
    bad |= json_object_set_new(e, "data_offsets", offs);
    off += nb;
    if (bad) {
      json_decref(e);
      goto nomem;
    }
    if (json_object_set_new(root, nt->name, e)) {
      st = im_error(IM_ERR_ARG, "safetensors: name \"%s\" is not valid UTF-8", nt->name);
      goto out;
    }
  }
  p->data_len = off;
  char *js = json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER);
  if (!js) goto nomem;
  size_t jl = strlen(js), hl = (jl + 7) & ~(size_t)7;
  p->header = im_malloc(hl);
  if (!p->header) {
    free(js);
    goto nomem;
  }
  memcpy(p->header, js, jl);
  memset(p->header + jl, ' ', hl - jl);
  p->hlen = hl;
  free(js);
  goto out;
nomem:
  st = im_error(IM_ERR_NOMEM, "out of memory");
out:
  json_decref(root);
  if (st != IM_OK) plan_free(p);
  return st;
}

static void put_le64(uint8_t *b, uint64_t v) {
  for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
}

im_status_t im_safetensors_serialize(const im_named_tensor_t *ts, size_t n, const im_safetensors_meta_t *meta,
                                     size_t n_meta, uint8_t **data, size_t *len) {
  *data = NULL;
  *len = 0;
  st_plan p;
  im_status_t st = plan(ts, n, meta, n_meta, &p);
  if (st != IM_OK) return st;
  size_t total = 8 + p.hlen + (size_t)p.data_len;
  uint8_t *b = im_malloc(total);
  if (!b) {
    plan_free(&p);
    return im_error(IM_ERR_NOMEM, "out of memory for a %zu-byte safetensors buffer", total);
  }
  put_le64(b, p.hlen);
  memcpy(b + 8, p.header, p.hlen);
  size_t at = 8 + p.hlen;
  for (size_t j = 0; j < n; j++) {
    const im_tensor_t *t = ts[p.order[j]].tensor;
    size_t nb = im_tensor_nbytes(t);
    if (nb) memcpy(b + at, t->data, nb);
    at += nb;
  }
  plan_free(&p);
  *data = b;
  *len = total;
  return IM_OK;
}

static int write_all(int fd, const void *data, size_t len) {
  const char *c = data;
  while (len) {
    ssize_t w = write(fd, c, len);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    c += w;
    len -= (size_t)w;
  }
  return 0;
}

im_status_t im_safetensors_write(const char *path, const im_named_tensor_t *ts, size_t n,
                                 const im_safetensors_meta_t *meta, size_t n_meta) {
  st_plan p;
  im_status_t st = plan(ts, n, meta, n_meta, &p);
  if (st != IM_OK) return st;
  im_atomic_file_t *f;
  st = im_atomic_file_open(path, &f);
  if (st != IM_OK) {
    plan_free(&p);
    return st;
  }
  int fd = im_atomic_file_fd(f);
  uint8_t len8[8];
  put_le64(len8, p.hlen);
  int bad = write_all(fd, len8, 8) || write_all(fd, p.header, p.hlen);
  for (size_t j = 0; j < n && !bad; j++) {
    const im_tensor_t *t = ts[p.order[j]].tensor;
    bad = write_all(fd, t->data, im_tensor_nbytes(t));
  }
  plan_free(&p);
  if (bad) {
    st = im_error(IM_ERR_IO, "cannot write %s: %s", path, strerror(errno));
    im_atomic_file_abort(f);
    return st;
  }
  return im_atomic_file_commit(f);
}
