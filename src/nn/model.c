/* Models by name: the architecture table, option checking and defaults, the
 * parameter/gradient/buffer slabs carved from the state table, accessors for
 * parameters and the state_dict, and state_dict files (safetensors). */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "nn/nn_impl.h"

enum { FAM_SURFACE, FAM_RESNET, FAM_CONVNEXT };

typedef struct {
  const char *name;
  int family;
  int depths[4];
  int dims[4];
} arch_t;

static const arch_t archs[] = {
    {"surfacenet", FAM_SURFACE, {0}, {0}},
    {"smallcnn", FAM_SURFACE, {0}, {0}},
    {"resnet18", FAM_RESNET, {2, 2, 2, 2}, {64, 128, 256, 512}},
    {"resnet34", FAM_RESNET, {3, 4, 6, 3}, {64, 128, 256, 512}},
    {"convnext-atto", FAM_CONVNEXT, {2, 2, 6, 2}, {40, 80, 160, 320}},
    {"convnext-femto", FAM_CONVNEXT, {2, 2, 6, 2}, {48, 96, 192, 384}},
    {"convnext-pico", FAM_CONVNEXT, {2, 2, 6, 2}, {64, 128, 256, 512}},
    {"convnext-nano", FAM_CONVNEXT, {2, 2, 8, 2}, {80, 160, 320, 640}},
    {"convnext-tiny", FAM_CONVNEXT, {3, 3, 9, 3}, {96, 192, 384, 768}},
    {"convnext-small", FAM_CONVNEXT, {3, 3, 27, 3}, {96, 192, 384, 768}},
    {"convnext-base", FAM_CONVNEXT, {3, 3, 27, 3}, {128, 256, 512, 1024}},
};
#define N_ARCHS (sizeof archs / sizeof *archs)

size_t im_nn_arch_count(void) { return N_ARCHS; }
const char *im_nn_arch_name(size_t i) { return i < N_ARCHS ? archs[i].name : NULL; }

/* Exact name, or with '_' for '-' (torchvision spells convnext_tiny). */
static const arch_t *find_arch(const char *name) {
  for (size_t i = 0; i < N_ARCHS; i++) {
    const char *a = archs[i].name, *b = name;
    while (*a && (*a == *b || (*a == '-' && *b == '_'))) a++, b++;
    if (!*a && !*b) return &archs[i];
  }
  return NULL;
}

static im_status_t resolve_opts(const arch_t *a, const im_nn_model_opts_t *in, im_nn_model_opts_t *o) {
  *o = in ? *in : (im_nn_model_opts_t){0};
  if (o->num_classes == 0) o->num_classes = 2;
  if (o->num_classes < 1 || o->num_classes > 1000000)
    return im_error(IM_ERR_ARG, "%s: num_classes %d is out of range [1, 1000000]", a->name, o->num_classes);
  if (o->in_channels == 0) o->in_channels = 3;
  if (o->in_channels != 1 && o->in_channels != 3)
    return im_error(IM_ERR_ARG, "%s: in_channels must be 1 or 3, not %d", a->name, o->in_channels);
  if (o->width == 0.0f) o->width = 1.0f;
  if (!(o->width > 0.0f && o->width <= 16.0f))
    return im_error(IM_ERR_ARG, "%s: width %g is out of range (0, 16]", a->name, (double)o->width);
  if (!(o->dropout >= 0.0f && o->dropout < 1.0f))
    return im_error(IM_ERR_ARG, "%s: dropout %g is out of range [0, 1)", a->name, (double)o->dropout);
  if (a->family == FAM_SURFACE) {
    for (int i = 0; i < 4; i++)
      if (o->depths[i]) return im_error(IM_ERR_ARG, "%s has no depth option", a->name);
    if (o->stem_stride == 0) o->stem_stride = strcmp(a->name, "smallcnn") == 0 ? 1 : 2;
    if (o->stem_stride != 1 && o->stem_stride != 2)
      return im_error(IM_ERR_ARG, "%s: stem_stride must be 1 or 2, not %d", a->name, o->stem_stride);
  } else {
    if (o->stem_stride) return im_error(IM_ERR_ARG, "%s: stem_stride applies to surfacenet only", a->name);
    for (int i = 0; i < 4; i++) {
      if (o->depths[i] == 0) o->depths[i] = a->depths[i];
      if (o->depths[i] < 1 || o->depths[i] > 64)
        return im_error(IM_ERR_ARG, "%s: depths[%d] = %d is out of range [1, 64]", a->name, i, o->depths[i]);
    }
  }
  if (a->family == FAM_CONVNEXT) {
    if (!(o->drop_path >= 0.0f && o->drop_path < 1.0f))
      return im_error(IM_ERR_ARG, "%s: drop_path %g is out of range [0, 1)", a->name, (double)o->drop_path);
    if (o->layer_scale == 0.0f) o->layer_scale = 1e-6f;
    if (!(o->layer_scale > 0.0f) || isinf(o->layer_scale))
      return im_error(IM_ERR_ARG, "%s: layer_scale must be > 0", a->name);
  } else {
    if (o->drop_path != 0.0f) return im_error(IM_ERR_ARG, "%s: drop_path applies to convnext only", a->name);
    if (o->layer_scale != 0.0f) return im_error(IM_ERR_ARG, "%s: layer_scale applies to convnext only", a->name);
  }
  return IM_OK;
}

/* Carves the slabs: parameters and their gradients (same offsets), buffers. */
static im_status_t alloc_slabs(im_nn_model_t *m) {
  size_t np = 0, nb = 0, nparams = 0;
  for (size_t i = 0; i < m->n_ents; i++) {
    im__nn_entry_t *e = &m->ents[i];
    im_tensor_t v;
    im_status_t st = im_tensor_view(&v, IM_F32, e->ndim, e->shape, NULL);
    if (st != IM_OK) return st;
    size_t n = (size_t)im_tensor_numel(&v);
    if (e->kind == IM_NN_STATE_PARAM) {
      e->offset = np;
      np += n;
      nparams++;
    } else if (e->kind == IM_NN_STATE_BUFFER) {
      e->offset = nb;
      nb += n;
    }
  }
  m->params = im_malloc((nparams ? nparams : 1) * sizeof *m->params);
  if (!m->params) return im_error(IM_ERR_NOMEM, "out of memory");
  im_status_t st;
  if ((st = im_tensor_alloc(&m->pslab, IM_F32, 1, (int64_t[]){(int64_t)(np ? np : 1)})) != IM_OK) return st;
  if ((st = im_tensor_alloc(&m->gslab, IM_F32, 1, (int64_t[]){(int64_t)(np ? np : 1)})) != IM_OK) return st;
  if ((st = im_tensor_alloc(&m->bslab, IM_F32, 1, (int64_t[]){(int64_t)(nb ? nb : 1)})) != IM_OK) return st;
  float *p = im_tensor_f32(&m->pslab), *g = im_tensor_f32(&m->gslab), *b = im_tensor_f32(&m->bslab);
  for (size_t i = 0; i < m->n_ents; i++) {
    im__nn_entry_t *e = &m->ents[i];
    if (e->kind == IM_NN_STATE_PARAM) {
      (void)im_tensor_view(&e->value, IM_F32, e->ndim, e->shape, p + e->offset);
      (void)im_tensor_view(&e->grad, IM_F32, e->ndim, e->shape, g + e->offset);
      m->params[m->n_params++] = i;
    } else if (e->kind == IM_NN_STATE_BUFFER) {
      (void)im_tensor_view(&e->value, IM_F32, e->ndim, e->shape, b + e->offset);
    }
  }
  m->num_params = (int64_t)np;
  m->num_buffer_elems = nb;
  return IM_OK;
}

im_status_t im_nn_model_new(const char *arch, const im_nn_model_opts_t *o, im_nn_model_t **out) {
  return im__nn_model_build(arch, o, 1, out);
}

im_status_t im__nn_model_build(const char *arch, const im_nn_model_opts_t *o, int init, im_nn_model_t **out) {
  *out = NULL;
  if (!arch) return im_error(IM_ERR_ARG, "im_nn_model_new: arch is NULL");
  const arch_t *a = find_arch(arch);
  if (!a) {
    char known[512] = "";
    size_t len = 0;
    for (size_t i = 0; i < N_ARCHS && len < sizeof known; i++)
      len += (size_t)snprintf(known + len, sizeof known - len, "%s%s", i ? ", " : "", archs[i].name);
    return im_error(IM_ERR_NOT_FOUND, "unknown architecture '%s' (known: %s)", arch, known);
  }
  im_nn_model_opts_t ro;
  im_status_t st = resolve_opts(a, o, &ro);
  if (st != IM_OK) return st;
  im_nn_model_t *m = im_calloc(1, sizeof *m);
  if (!m) return im_error(IM_ERR_NOMEM, "out of memory");
  m->opts = ro;
  m->arch = im_strdup(a->name);
  if (!m->arch) {
    im_nn_model_free(m);
    return im_error(IM_ERR_NOMEM, "out of memory");
  }
  switch (a->family) {
    case FAM_SURFACE: st = im__nn_build_surfacenet(m); break;
    case FAM_RESNET: st = im__nn_build_resnet(m, a->depths); break;
    default: st = im__nn_build_convnext(m, a->depths, a->dims); break;
  }
  if (st == IM_OK) st = m->build_err;
  if (st == IM_OK) st = alloc_slabs(m);
  if (st == IM_OK && init) st = im__nn_init_entries(m, ro.seed);
  if (st != IM_OK) {
    im_nn_model_free(m);
    return st;
  }
  im_rng_seed(&m->rng, im_rng_derive(ro.seed, 0x5EED0D0BULL));
  *out = m;
  return IM_OK;
}

void im_nn_model_free(im_nn_model_t *m) {
  if (!m) return;
  im__nn_plan_free(m);
  for (size_t i = 0; i < m->n_ents; i++) im_free(m->ents[i].name);
  im_free(m->ents);
  im_free(m->nodes);
  im_free(m->params);
  im_tensor_free(&m->pslab);
  im_tensor_free(&m->gslab);
  im_tensor_free(&m->bslab);
  im_free(m->arch);
  im_free(m);
}

const char *im_nn_model_arch(const im_nn_model_t *m) { return m->arch; }
void im_nn_model_get_opts(const im_nn_model_t *m, im_nn_model_opts_t *o) { *o = m->opts; }
int im_nn_model_num_classes(const im_nn_model_t *m) { return m->opts.num_classes; }
int im_nn_model_in_channels(const im_nn_model_t *m) { return m->opts.in_channels; }
int64_t im_nn_model_num_params(const im_nn_model_t *m) { return m->num_params; }
size_t im_nn_model_num_nodes(const im_nn_model_t *m) { return m->n_nodes; }

/* ---- parameters and state ---- */

size_t im_nn_param_count(const im_nn_model_t *m) { return m->n_params; }

im_status_t im_nn_param_get(const im_nn_model_t *m, size_t i, im_nn_param_t *out) {
  if (i >= m->n_params) return im_error(IM_ERR_ARG, "parameter index %zu out of range (%zu)", i, m->n_params);
  im__nn_entry_t *e = &m->ents[m->params[i]];
  *out = (im_nn_param_t){.name = e->name, .value = &e->value, .grad = &e->grad, .decay = e->decay};
  return IM_OK;
}

int64_t im_nn_param_find(const im_nn_model_t *m, const char *name) {
  for (size_t i = 0; i < m->n_params; i++)
    if (strcmp(m->ents[m->params[i]].name, name) == 0) return (int64_t)i;
  return -1;
}

size_t im_nn_state_count(const im_nn_model_t *m) { return m->n_ents; }

im_status_t im_nn_state_get(const im_nn_model_t *m, size_t i, im_nn_state_entry_t *out) {
  if (i >= m->n_ents) return im_error(IM_ERR_ARG, "state index %zu out of range (%zu)", i, m->n_ents);
  im__nn_entry_t *e = &m->ents[i];
  *out = (im_nn_state_entry_t){.name = e->name, .kind = e->kind};
  if (e->kind == IM_NN_STATE_COUNTER) out->counter = &e->counter;
  else out->tensor = &e->value;
  return IM_OK;
}

im_status_t im_nn_state_save(const im_nn_model_t *m, const char *path, const im_safetensors_meta_t *meta,
                             size_t n_meta) {
  if (m->folded)
    return im_error(IM_ERR_STATE, "%s: a folded inference model has no PyTorch state_dict to save; save the model it "
                                  "was folded from", m->arch);
  im_named_tensor_t *list = im_calloc(m->n_ents ? m->n_ents : 1, sizeof *list);
  im_tensor_t *counters = im_calloc(m->n_ents ? m->n_ents : 1, sizeof *counters);
  float *cval = im_calloc(m->n_ents ? m->n_ents : 1, sizeof *cval);
  im_safetensors_meta_t *md = im_calloc(n_meta + 3, sizeof *md);
  im_status_t st = IM_OK;
  if (!list || !counters || !cval || !md) {
    st = im_error(IM_ERR_NOMEM, "out of memory");
    goto done;
  }
  for (size_t i = 0; i < m->n_ents; i++) {
    const im__nn_entry_t *e = &m->ents[i];
    list[i].name = e->name;
    if (e->kind == IM_NN_STATE_COUNTER) {
      cval[i] = (float)e->counter;
      (void)im_tensor_view(&counters[i], IM_F32, 0, NULL, &cval[i]);
      list[i].tensor = &counters[i];
    } else {
      list[i].tensor = &e->value;
    }
  }
  md[0] = (im_safetensors_meta_t){"format", "imops-state"};
  md[1] = (im_safetensors_meta_t){"version", "1"};
  md[2] = (im_safetensors_meta_t){"arch", m->arch};
  for (size_t i = 0; i < n_meta; i++) md[3 + i] = meta[i];
  st = im_safetensors_write(path, list, m->n_ents, md, n_meta + 3);
done:
  im_free(list);
  im_free(counters);
  im_free(cval);
  im_free(md);
  return st;
}

static int find_entry(const im_nn_model_t *m, const char *name) {
  for (size_t i = 0; i < m->n_ents; i++)
    if (strcmp(m->ents[i].name, name) == 0) return (int)i;
  return -1;
}

static void shape_str(char *buf, size_t n, int ndim, const int64_t *shape) {
  size_t len = (size_t)snprintf(buf, n, "[");
  for (int i = 0; i < ndim && len < n; i++)
    len += (size_t)snprintf(buf + len, n - len, "%s%lld", i ? ", " : "", (long long)shape[i]);
  if (len < n) snprintf(buf + len, n - len, "]");
}

im_status_t im_nn_state_load(im_nn_model_t *m, const im_safetensors_t *stf) {
  /* Validate everything first, so that a bad file changes nothing. */
  const size_t nt = im_safetensors_count(stf);
  for (size_t i = 0; i < nt; i++) {
    const char *name = im_safetensors_name(stf, i);
    if (find_entry(m, name) < 0)
      return im_error(IM_ERR_FORMAT, "unexpected tensor '%s' (not in %s's state_dict)", name, m->arch);
  }
  for (size_t i = 0; i < m->n_ents; i++) {
    const im__nn_entry_t *e = &m->ents[i];
    im_tensor_t v;
    if (im_safetensors_get(stf, e->name, &v) != IM_OK)
      return im_error(IM_ERR_FORMAT, "missing tensor '%s' (%s has %zu state entries)", e->name, m->arch, m->n_ents);
    if (e->kind == IM_NN_STATE_COUNTER) {
      double c = -1.0;
      if (im_tensor_numel(&v) == 1 && v.dtype == IM_F32) c = im_tensor_f32(&v)[0];
      else if (im_tensor_numel(&v) == 1 && v.dtype == IM_I32) c = ((const int32_t *)v.data)[0];
      if (!(c >= 0.0 && c <= 9.0e15 && c == floor(c)))
        return im_error(IM_ERR_FORMAT, "tensor '%s' must be one non-negative integer count (F32 or I32)", e->name);
      continue;
    }
    int same = v.dtype == IM_F32 && v.ndim == e->ndim;
    for (int d = 0; same && d < e->ndim; d++) same = v.shape[d] == e->shape[d];
    if (!same) {
      char want[96], got[96];
      shape_str(want, sizeof want, e->ndim, e->shape);
      shape_str(got, sizeof got, v.ndim, v.shape);
      return im_error(IM_ERR_FORMAT, "tensor '%s' is %s %s, the model needs F32 %s", e->name, im_dtype_name(v.dtype),
                      got, want);
    }
  }
  for (size_t i = 0; i < m->n_ents; i++) {
    im__nn_entry_t *e = &m->ents[i];
    im_tensor_t v;
    (void)im_safetensors_get(stf, e->name, &v);
    if (e->kind == IM_NN_STATE_COUNTER)
      e->counter = v.dtype == IM_F32 ? (int64_t)im_tensor_f32(&v)[0] : (int64_t)((const int32_t *)v.data)[0];
    else
      memcpy(e->value.data, v.data, im_tensor_nbytes(&e->value));
  }
  im__nn_restamp(m);
  return IM_OK;
}

void im__nn_restamp(im_nn_model_t *m) {
  for (size_t i = 0; i < m->n_ents; i++) m->ents[i].value.stamp = m->folded ? im_tensor_stamp_new() : 0;
}

void im_nn_rng_get(const im_nn_model_t *m, im_rng_t *out) { *out = m->rng; }
void im_nn_rng_set(im_nn_model_t *m, const im_rng_t *in) { m->rng = *in; }
