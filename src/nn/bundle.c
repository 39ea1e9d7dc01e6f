/* The model bundle: a directory with model.safetensors (the state_dict under
 * PyTorch's names), model.json (architecture, options, classes, input size,
 * normalization, metrics; format "imops-model" version 1) and MLmodel (YAML
 * in MLflow's format, with an "imops" flavor and a tensor signature), each
 * written atomically. Loading validates every piece and says which file and
 * which field is wrong. */
#include <errno.h>
#include <jansson.h>
#include <stdatomic.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imops/version.h"
#include "nn/nn_impl.h"

#define MAX_JSON_BYTES (16u << 20)

/* ---- saving ---- */

static void utc_strings(char iso[32], char mlflow[40]) {
  const int64_t ms = im_time_wall_ms();
  time_t s = (time_t)(ms / 1000);
  struct tm tm;
  gmtime_r(&s, &tm);
  strftime(iso, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
  char base[24];
  strftime(base, sizeof base, "%Y-%m-%d %H:%M:%S", &tm);
  snprintf(mlflow, 40, "%s.%06d", base, (int)(ms % 1000) * 1000); /* str(datetime.utcnow()) */
}

/* A random-looking UUID (version 4 layout, 32 hex digits as uuid4().hex). */
static void make_uuid(char out[33], const im_nn_model_t *m) {
  static _Atomic unsigned counter;
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  uint64_t seed[4] = {(uint64_t)ts.tv_sec, (uint64_t)ts.tv_nsec, (uint64_t)getpid() << 20 | counter++,
                      (uint64_t)(uintptr_t)m};
  uint64_t a = im_hash64(seed, sizeof seed, 0x1A2B3C4D), b = im_hash64(seed, sizeof seed, a);
  b = im_hash64(m->pslab.data, im_tensor_nbytes(&m->pslab) < 4096 ? im_tensor_nbytes(&m->pslab) : 4096, b);
  a = (a & ~0xF000ULL) | 0x4000ULL;                 /* version 4 */
  b = (b & ~(3ULL << 62)) | (2ULL << 62);           /* variant 10 */
  snprintf(out, 33, "%016llx%016llx", (unsigned long long)a, (unsigned long long)b);
}

/* A YAML scalar: plain when it is a simple word that YAML reads as a string, else single-quoted. */
static im_status_t yaml_scalar(im_buf_t *b, const char *s) {
  int plain = *s && strchr("0123456789-.+", *s) == NULL;
  for (const char *p = s; *p && plain; p++)
    plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || *p == '_' ||
            *p == '-' || *p == '.' || *p == '/';
  static const char *const reserved[] = {"true", "false", "yes", "no", "on", "off", "null", "True", "False",
                                         "Yes",  "No",    "On",  "Off", "Null", "NULL", "TRUE", "FALSE", "y", "n"};
  for (size_t i = 0; plain && i < sizeof reserved / sizeof *reserved; i++)
    if (strcmp(s, reserved[i]) == 0) plain = 0;
  if (plain) return im_buf_append(b, s, strlen(s));
  im_status_t st = im_buf_append(b, "'", 1);
  for (const char *p = s; *p && st == IM_OK; p++) st = *p == '\'' ? im_buf_append(b, "''", 2) : im_buf_append(b, p, 1);
  return st == IM_OK ? im_buf_append(b, "'", 1) : st;
}

static im_status_t write_mlmodel(const im_nn_model_t *m, const char *dir, const im_nn_bundle_meta_t *meta,
                                 const char *uuid, const char *created, size_t weights_bytes) {
  im_buf_t b = {0};
  const int c = m->opts.in_channels;
  im_status_t st = im_buf_printf(&b, "artifact_path: ");
  if (st == IM_OK) st = yaml_scalar(&b, meta->artifact_path ? meta->artifact_path : "model");
  /* Flavors: imops reads model.json; an onnx flavor joins when the model is exported. */
  if (st == IM_OK)
    st = im_buf_printf(&b,
                       "\nflavors:\n"
                       "  imops:\n"
                       "    arch: %s\n"
                       "    data: model.json\n"
                       "    format: %s\n"
                       "    format_version: %d\n"
                       "    imops_version: %s\n"
                       "    weights: model.safetensors\n"
                       "model_size_bytes: %zu\n"
                       "model_uuid: %s\n",
                       m->arch, IM_NN_BUNDLE_FORMAT, IM_NN_BUNDLE_VERSION, IM_VERSION_STRING, weights_bytes, uuid);
  if (st == IM_OK && meta->run_id) {
    st = im_buf_printf(&b, "run_id: ");
    if (st == IM_OK) st = yaml_scalar(&b, meta->run_id);
    if (st == IM_OK) st = im_buf_printf(&b, "\n");
  }
  if (st == IM_OK)
    st = im_buf_printf(&b,
                       "signature:\n"
                       "  inputs: '[{\"type\": \"tensor\", \"tensor-spec\": {\"dtype\": \"float32\", \"shape\": "
                       "[-1, %d, %d, %d]}}]'\n"
                       "  outputs: '[{\"type\": \"tensor\", \"tensor-spec\": {\"dtype\": \"float32\", \"shape\": "
                       "[-1, %d]}}]'\n"
                       "  params: null\n"
                       "utc_time_created: '%s'\n",
                       c, meta->img_h, meta->img_w, m->opts.num_classes, created);
  if (st == IM_OK) {
    char *path = im_path_join(dir, "MLmodel");
    st = path ? im_file_write_atomic(path, b.data, b.len) : im_error(IM_ERR_NOMEM, "out of memory");
    im_free(path);
  }
  im_buf_free(&b);
  return st;
}

/* A float as the shortest decimal that reads back as the same float (0.1f
 * is written 0.1, not 0.100000001), for a JSON dump with 15 digits. */
static json_t *jfloat(float f) {
  char buf[32];
  for (int prec = 6; prec <= 9; prec++) {
    snprintf(buf, sizeof buf, "%.*g", prec, (double)f);
    if (strtof(buf, NULL) == f) break;
  }
  return json_real(strtod(buf, NULL));
}

static json_t *float_array(const float *v, int n) {
  json_t *a = json_array();
  for (int i = 0; a && i < n; i++) json_array_append_new(a, jfloat(v[i]));
  return a;
}

static json_t *opts_json(const im_nn_model_t *m) {
  const im_nn_model_opts_t *o = &m->opts;
  json_t *j = json_object(), *d = json_array();
  if (!j || !d) {
    json_decref(j);
    json_decref(d);
    return NULL;
  }
  for (int i = 0; i < 4; i++) json_array_append_new(d, json_integer(o->depths[i]));
  json_object_set_new(j, "num_classes", json_integer(o->num_classes));
  json_object_set_new(j, "in_channels", json_integer(o->in_channels));
  json_object_set_new(j, "width", jfloat(o->width));
  json_object_set_new(j, "depths", d);
  json_object_set_new(j, "stem_stride", json_integer(o->stem_stride));
  json_object_set_new(j, "dropout", jfloat(o->dropout));
  json_object_set_new(j, "drop_path", jfloat(o->drop_path));
  json_object_set_new(j, "layer_scale", jfloat(o->layer_scale));
  if (o->seed <= (uint64_t)INT64_MAX) json_object_set_new(j, "seed", json_integer((json_int_t)o->seed));
  else {
    char s[32];
    snprintf(s, sizeof s, "%llu", (unsigned long long)o->seed);
    json_object_set_new(j, "seed", json_string(s));
  }
  return j;
}

static im_status_t check_meta(const im_nn_model_t *m, const im_nn_bundle_meta_t *meta) {
  if (!meta) return im_error(IM_ERR_ARG, "im_nn_bundle_save: meta is required (img_h, img_w at least)");
  if (meta->img_h < 1 || meta->img_w < 1)
    return im_error(IM_ERR_ARG, "im_nn_bundle_save: img_h and img_w must be > 0");
  if (meta->classes && meta->num_classes != (size_t)m->opts.num_classes)
    return im_error(IM_ERR_ARG, "im_nn_bundle_save: %zu class names for a model with %d classes", meta->num_classes,
                    m->opts.num_classes);
  for (size_t i = 0; meta->classes && i < meta->num_classes; i++)
    if (!meta->classes[i]) return im_error(IM_ERR_ARG, "im_nn_bundle_save: class name %zu is NULL", i);
  if (meta->n_norm != 0 && meta->n_norm != m->opts.in_channels)
    return im_error(IM_ERR_ARG, "im_nn_bundle_save: %d mean/std values for %d input channels", meta->n_norm,
                    m->opts.in_channels);
  for (int i = 0; i < meta->n_norm; i++)
    if (!isfinite(meta->mean[i]) || !(meta->std[i] > 0.0f) || isinf(meta->std[i]))
      return im_error(IM_ERR_ARG, "im_nn_bundle_save: mean must be finite and std > 0 (channel %d)", i);
  if (meta->n_metrics && (!meta->metric_names || !meta->metric_values))
    return im_error(IM_ERR_ARG, "im_nn_bundle_save: %zu metrics without names or values", meta->n_metrics);
  for (size_t i = 0; i < meta->n_metrics; i++) {
    if (!meta->metric_names[i] || !*meta->metric_names[i])
      return im_error(IM_ERR_ARG, "im_nn_bundle_save: metric %zu has no name", i);
    for (size_t k = 0; k < i; k++)
      if (strcmp(meta->metric_names[i], meta->metric_names[k]) == 0)
        return im_error(IM_ERR_ARG, "im_nn_bundle_save: metric '%s' appears twice", meta->metric_names[i]);
  }
  return IM_OK;
}

im_status_t im_nn_bundle_save(const im_nn_model_t *m, const char *dir, const im_nn_bundle_meta_t *meta) {
  im_status_t st = check_meta(m, meta);
  if (st != IM_OK) return st;
  if ((st = im_mkdir_p(dir)) != IM_OK) return st;
  char iso[32], mlt[40], uuid[33];
  utc_strings(iso, mlt);
  make_uuid(uuid, m);

  char *wpath = im_path_join(dir, "model.safetensors"), *jpath = im_path_join(dir, "model.json");
  json_t *root = json_object();
  char *text = NULL;
  if (!wpath || !jpath || !root) {
    st = im_error(IM_ERR_NOMEM, "out of memory");
    goto done;
  }
  const im_safetensors_meta_t smeta[] = {{"imops_version", IM_VERSION_STRING}, {"model_uuid", uuid}};
  if ((st = im_nn_state_save(m, wpath, smeta, 2)) != IM_OK) goto done;

  json_t *classes = json_array(), *metrics = json_object(), *input = json_object(), *output = json_object();
  json_t *img = json_array(), *ishape = json_array(), *oshape = json_array();
  const float zero[4] = {0, 0, 0, 0}, one[4] = {1, 1, 1, 1};
  json_object_set_new(root, "format", json_string(IM_NN_BUNDLE_FORMAT));
  json_object_set_new(root, "format_version", json_integer(IM_NN_BUNDLE_VERSION));
  json_object_set_new(root, "arch", json_string(m->arch));
  json_object_set_new(root, "options", opts_json(m));
  json_object_set_new(root, "num_classes", json_integer(m->opts.num_classes));
  for (int i = 0; classes && i < m->opts.num_classes; i++) {
    char num[24];
    snprintf(num, sizeof num, "%d", i);
    json_array_append_new(classes, json_string(meta->classes ? meta->classes[i] : num));
  }
  json_object_set_new(root, "classes", classes);
  json_object_set_new(root, "in_channels", json_integer(m->opts.in_channels));
  json_array_append_new(img, json_integer(meta->img_h));
  json_array_append_new(img, json_integer(meta->img_w));
  json_object_set_new(root, "img_size", img);
  json_object_set_new(root, "mean", float_array(meta->n_norm ? meta->mean : zero, m->opts.in_channels));
  json_object_set_new(root, "std", float_array(meta->n_norm ? meta->std : one, m->opts.in_channels));
  for (size_t i = 0; metrics && i < meta->n_metrics; i++)
    json_object_set_new(metrics, meta->metric_names[i], json_real(meta->metric_values[i]));
  json_object_set_new(root, "metrics", metrics);
  json_object_set_new(root, "num_params", json_integer(m->num_params));
  json_object_set_new(root, "weights", json_string("model.safetensors"));
  const int64_t is[4] = {-1, m->opts.in_channels, meta->img_h, meta->img_w};
  for (int i = 0; ishape && i < 4; i++) json_array_append_new(ishape, json_integer(is[i]));
  json_object_set_new(input, "layout", json_string("NCHW"));
  json_object_set_new(input, "dtype", json_string("float32"));
  json_object_set_new(input, "shape", ishape);
  json_object_set_new(root, "input", input);
  json_array_append_new(oshape, json_integer(-1));
  json_array_append_new(oshape, json_integer(m->opts.num_classes));
  json_object_set_new(output, "kind", json_string("logits"));
  json_object_set_new(output, "dtype", json_string("float32"));
  json_object_set_new(output, "shape", oshape);
  json_object_set_new(root, "output", output);
  json_object_set_new(root, "imops_version", json_string(IM_VERSION_STRING));
  json_object_set_new(root, "created", json_string(iso));
  json_object_set_new(root, "model_uuid", json_string(uuid));
  text = json_dumps(root, JSON_INDENT(2) | JSON_REAL_PRECISION(15) | JSON_PRESERVE_ORDER);
  if (!text) {
    st = im_error(IM_ERR_NOMEM, "out of memory writing model.json");
    goto done;
  }
  size_t tlen = strlen(text);
  {
    im_buf_t jb = {0};
    st = im_buf_append(&jb, text, tlen);
    if (st == IM_OK) st = im_buf_append(&jb, "\n", 1); /* json_dumps ends without one */
    if (st == IM_OK) st = im_file_write_atomic(jpath, jb.data, jb.len);
    im_buf_free(&jb);
    if (st != IM_OK) goto done;
  }
  /* The weights' size for MLmodel's model_size_bytes. */
  struct stat sb;
  const size_t wbytes = stat(wpath, &sb) == 0 ? (size_t)sb.st_size : 0;
  st = write_mlmodel(m, dir, meta, uuid, mlt, wbytes + tlen + 1);
done:
  free(text);
  json_decref(root);
  im_free(wpath);
  im_free(jpath);
  return st;
}

/* ---- loading ---- */

typedef struct {
  char **classes;
  size_t ncls;
  char **mnames;
  double *mvalues;
  size_t nmet;
  char *version, *created, *uuid;
} meta_store_t;

void im_nn_bundle_meta_free(im_nn_bundle_meta_t *meta) {
  if (!meta) return;
  meta_store_t *s = meta->priv_;
  if (s) {
    for (size_t i = 0; i < s->ncls; i++) im_free(s->classes[i]);
    for (size_t i = 0; i < s->nmet; i++) im_free(s->mnames[i]);
    im_free(s->classes);
    im_free(s->mnames);
    im_free(s->mvalues);
    im_free(s->version);
    im_free(s->created);
    im_free(s->uuid);
    im_free(s);
  }
  memset(meta, 0, sizeof *meta);
}

/* Prefixes the current last-error text with the file it concerns. */
static im_status_t prefixed(im_status_t st, const char *path) {
  char msg[512];
  snprintf(msg, sizeof msg, "%s", im_last_error());
  if (strstr(msg, path)) return im_error(st, "%s", msg);
  return im_error(st, "%s: %s", path, msg);
}

static im_status_t jerr(const char *path, const char *what) {
  return im_error(IM_ERR_FORMAT, "%s: %s", path, what);
}

static int get_int(json_t *o, const char *key, json_int_t *v) {
  json_t *j = json_object_get(o, key);
  if (!json_is_integer(j)) return 0;
  *v = json_integer_value(j);
  return 1;
}

static im_status_t parse_opts(const char *path, json_t *jo, im_nn_model_opts_t *o) {
  memset(o, 0, sizeof *o);
  if (!json_is_object(jo)) return jerr(path, "\"options\" must be an object");
  json_int_t v;
  const char *key;
  json_t *val;
  json_object_foreach(jo, key, val) {
    if (strcmp(key, "depths") == 0) {
      if (!json_is_array(val) || json_array_size(val) != 4) return jerr(path, "options.depths must be 4 integers");
      for (int i = 0; i < 4; i++) {
        json_t *d = json_array_get(val, (size_t)i);
        if (!json_is_integer(d) || json_integer_value(d) < 0 || json_integer_value(d) > 64)
          return jerr(path, "options.depths must be 4 integers in [0, 64]");
        o->depths[i] = (int)json_integer_value(d);
      }
    } else if (strcmp(key, "seed") == 0) {
      if (json_is_integer(val)) o->seed = (uint64_t)json_integer_value(val);
      else if (json_is_string(val)) {
        char *end;
        errno = 0;
        o->seed = strtoull(json_string_value(val), &end, 10);
        if (errno || *end) return jerr(path, "options.seed is not a number");
      } else return jerr(path, "options.seed is not a number");
    } else if (strcmp(key, "width") == 0 || strcmp(key, "dropout") == 0 || strcmp(key, "drop_path") == 0 ||
               strcmp(key, "layer_scale") == 0) {
      if (!json_is_number(val)) return im_error(IM_ERR_FORMAT, "%s: options.%s must be a number", path, key);
      const float f = (float)json_number_value(val);
      if (strcmp(key, "width") == 0) o->width = f;
      else if (strcmp(key, "layer_scale") == 0) o->layer_scale = f;
      else if (strcmp(key, "dropout") == 0) o->dropout = f;
      else o->drop_path = f;
    } else if (strcmp(key, "num_classes") == 0 || strcmp(key, "in_channels") == 0 ||
               strcmp(key, "stem_stride") == 0) {
      if (!get_int(jo, key, &v) || v < 0 || v > 1000000)
        return im_error(IM_ERR_FORMAT, "%s: options.%s must be a small non-negative integer", path, key);
      if (strcmp(key, "num_classes") == 0) o->num_classes = (int)v;
      else if (strcmp(key, "in_channels") == 0) o->in_channels = (int)v;
      else o->stem_stride = (int)v;
    }
    /* Unknown keys are ignored: options a later minor version adds default to off. */
  }
  return IM_OK;
}

static char *dup_str(json_t *j) { return json_is_string(j) ? im_strdup(json_string_value(j)) : NULL; }

static im_status_t parse_meta(const char *path, json_t *root, const im_nn_model_t *m, im_nn_bundle_meta_t *meta) {
  memset(meta, 0, sizeof *meta);
  meta_store_t *s = im_calloc(1, sizeof *s);
  if (!s) return im_error(IM_ERR_NOMEM, "out of memory");
  meta->priv_ = s;
  json_t *cl = json_object_get(root, "classes");
  if (!json_is_array(cl) || json_array_size(cl) != (size_t)m->opts.num_classes)
    return im_error(IM_ERR_FORMAT, "%s: \"classes\" must list %d names", path, m->opts.num_classes);
  if (!(s->classes = im_calloc(json_array_size(cl) + 1, sizeof *s->classes))) return im_error(IM_ERR_NOMEM, "out of memory");
  for (size_t i = 0; i < json_array_size(cl); i++) {
    if (!json_is_string(json_array_get(cl, i))) return jerr(path, "\"classes\" must be strings");
    if (!(s->classes[i] = dup_str(json_array_get(cl, i)))) return im_error(IM_ERR_NOMEM, "out of memory");
    s->ncls = i + 1;
  }
  meta->classes = (const char *const *)s->classes;
  meta->num_classes = s->ncls;
  json_t *img = json_object_get(root, "img_size");
  if (!json_is_array(img) || json_array_size(img) != 2 || !json_is_integer(json_array_get(img, 0)) ||
      !json_is_integer(json_array_get(img, 1)) || json_integer_value(json_array_get(img, 0)) < 1 ||
      json_integer_value(json_array_get(img, 1)) < 1 || json_integer_value(json_array_get(img, 0)) > 65536 ||
      json_integer_value(json_array_get(img, 1)) > 65536)
    return jerr(path, "\"img_size\" must be [height, width]");
  meta->img_h = (int)json_integer_value(json_array_get(img, 0));
  meta->img_w = (int)json_integer_value(json_array_get(img, 1));
  json_t *mean = json_object_get(root, "mean"), *std = json_object_get(root, "std");
  const size_t c = (size_t)m->opts.in_channels;
  if (!json_is_array(mean) || !json_is_array(std) || json_array_size(mean) != c || json_array_size(std) != c)
    return im_error(IM_ERR_FORMAT, "%s: \"mean\" and \"std\" must have %zu values", path, c);
  for (size_t i = 0; i < c; i++) {
    json_t *a = json_array_get(mean, i), *b = json_array_get(std, i);
    if (!json_is_number(a) || !json_is_number(b) || !(json_number_value(b) > 0.0))
      return jerr(path, "\"mean\" must be numbers and \"std\" positive numbers");
    meta->mean[i] = (float)json_number_value(a);
    meta->std[i] = (float)json_number_value(b);
  }
  meta->n_norm = (int)c;
  json_t *met = json_object_get(root, "metrics");
  if (met && !json_is_object(met)) return jerr(path, "\"metrics\" must be an object");
  const size_t nm = met ? json_object_size(met) : 0;
  s->mnames = im_calloc(nm + 1, sizeof *s->mnames);
  s->mvalues = im_calloc(nm + 1, sizeof *s->mvalues);
  if (!s->mnames || !s->mvalues) return im_error(IM_ERR_NOMEM, "out of memory");
  const char *key;
  json_t *val;
  if (met) json_object_foreach(met, key, val) {
      if (!json_is_number(val)) return im_error(IM_ERR_FORMAT, "%s: metric '%s' is not a number", path, key);
      if (!(s->mnames[s->nmet] = im_strdup(key))) return im_error(IM_ERR_NOMEM, "out of memory");
      s->mvalues[s->nmet++] = json_number_value(val);
    }
  meta->metric_names = (const char *const *)s->mnames;
  meta->metric_values = s->mvalues;
  meta->n_metrics = s->nmet;
  s->version = dup_str(json_object_get(root, "imops_version"));
  s->created = dup_str(json_object_get(root, "created"));
  s->uuid = dup_str(json_object_get(root, "model_uuid"));
  meta->imops_version = s->version;
  meta->created = s->created;
  meta->model_uuid = s->uuid;
  return IM_OK;
}

im_status_t im_nn_bundle_load(const char *dir, im_backend_t *backend, im_nn_model_t **out,
                              im_nn_bundle_meta_t *meta) {
  *out = NULL;
  if (meta) memset(meta, 0, sizeof *meta);
  char *jpath = im_path_join(dir, "model.json"), *wpath = im_path_join(dir, "model.safetensors");
  uint8_t *text = NULL;
  size_t len = 0;
  json_t *root = NULL;
  im_nn_model_t *m = NULL;
  im_safetensors_t *w = NULL;
  im_status_t st;
  if (!jpath || !wpath) {
    st = im_error(IM_ERR_NOMEM, "out of memory");
    goto done;
  }
  if ((st = im_file_read(jpath, MAX_JSON_BYTES, &text, &len)) != IM_OK) {
    if (st == IM_ERR_NOT_FOUND)
      st = im_error(st, "%s: no such file (is %s an imops model bundle?)", jpath, dir);
    goto done;
  }
  json_error_t je;
  root = json_loadb((const char *)text, len, JSON_REJECT_DUPLICATES, &je);
  if (!root || !json_is_object(root)) {
    st = root ? jerr(jpath, "not a JSON object")
              : im_error(IM_ERR_FORMAT, "%s: invalid JSON at line %d: %s", jpath, je.line, je.text);
    goto done;
  }
  json_t *fmt = json_object_get(root, "format");
  json_int_t ver = 0;
  if (!json_is_string(fmt) || strcmp(json_string_value(fmt), IM_NN_BUNDLE_FORMAT) != 0) {
    st = im_error(IM_ERR_FORMAT, "%s: \"format\" is not \"%s\": not an imops model bundle", jpath,
                  IM_NN_BUNDLE_FORMAT);
    goto done;
  }
  if (!get_int(root, "format_version", &ver) || ver != IM_NN_BUNDLE_VERSION) {
    st = im_error(IM_ERR_FORMAT,
                  "%s: format_version %lld is not supported (this imops %s reads version %d); "
                  "HINT: load it with the imops that wrote it, or re-export the model",
                  jpath, (long long)ver, IM_VERSION_STRING, IM_NN_BUNDLE_VERSION);
    goto done;
  }
  json_t *arch = json_object_get(root, "arch");
  if (!json_is_string(arch)) {
    st = jerr(jpath, "\"arch\" is missing");
    goto done;
  }
  im_nn_model_opts_t o;
  if ((st = parse_opts(jpath, json_object_get(root, "options"), &o)) != IM_OK) goto done;
  if ((st = im_nn_model_new(json_string_value(arch), &o, &m)) != IM_OK) {
    st = prefixed(st, jpath);
    goto done;
  }
  json_int_t k = 0, c = 0;
  if (!get_int(root, "num_classes", &k) || k != m->opts.num_classes || !get_int(root, "in_channels", &c) ||
      c != m->opts.in_channels) {
    st = jerr(jpath, "\"num_classes\" / \"in_channels\" disagree with \"options\"");
    goto done;
  }
  if ((st = im_safetensors_load(wpath, 0, &w)) != IM_OK) {
    st = prefixed(st, wpath);
    goto done;
  }
  if ((st = im_nn_state_load(m, w)) != IM_OK) {
    st = prefixed(st, wpath);
    goto done;
  }
  {
    /* The metadata is validated whether or not the caller wants it. */
    im_nn_bundle_meta_t local;
    im_nn_bundle_meta_t *md = meta ? meta : &local;
    st = parse_meta(jpath, root, m, md);
    if (st != IM_OK || !meta) im_nn_bundle_meta_free(md);
    if (st != IM_OK) goto done;
  }
  m->be = backend;
  *out = m;
  m = NULL;
done:
  im_safetensors_free(w);
  im_nn_model_free(m);
  json_decref(root);
  im_free(text);
  im_free(jpath);
  im_free(wpath);
  return st;
}
