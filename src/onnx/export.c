/* ONNX export: walks a folded model's graph (im_nn_node_get) and builds the
 * ModelProto of onnx.proto with protobuf-c's generated structs (every message
 * and array comes from one pool freed after packing; weight tensors point at
 * the model's own floats as raw_data, so nothing large is copied except the
 * transposed Linear weights of channels-last MatMuls), then packs it and
 * writes the file atomically. */
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imops/core.h"
#include "imops/onnx.h"
#include "imops/version.h"
#include "onnx.pb-c.h"

/* ---- a pool of allocations, freed at once ---- */
typedef struct {
  void **p;
  size_t n, cap;
  int oom;
} pool_t;

static void *palloc(pool_t *pl, size_t n) {
  if (pl->oom) return NULL;
  if (pl->n == pl->cap) {
    size_t cap = pl->cap ? pl->cap * 2 : 256;
    void **np = im_realloc(pl->p, cap * sizeof *np);
    if (!np) {
      pl->oom = 1;
      return NULL;
    }
    pl->p = np;
    pl->cap = cap;
  }
  void *q = im_calloc(1, n ? n : 1);
  if (!q) {
    pl->oom = 1;
    return NULL;
  }
  pl->p[pl->n++] = q;
  return q;
}

static char *pstr(pool_t *pl, const char *fmt, ...) IM_PRINTF(2, 3);
static char *pstr(pool_t *pl, const char *fmt, ...) {
  char buf[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  char *s = palloc(pl, strlen(buf) + 1);
  if (s) memcpy(s, buf, strlen(buf) + 1);
  return s;
}

static void pool_free(pool_t *pl) {
  for (size_t i = 0; i < pl->n; i++) im_free(pl->p[i]);
  im_free(pl->p);
}

/* A growable array of message pointers. */
typedef struct {
  void **v;
  size_t n, cap;
} vec_t;

static void vpush(pool_t *pl, vec_t *v, void *x) {
  if (!x) {
    pl->oom = 1;
    return;
  }
  if (v->n == v->cap) {
    size_t cap = v->cap ? v->cap * 2 : 16;
    void **nv = palloc(pl, cap * sizeof *nv);
    if (!nv) return;
    if (v->n) memcpy(nv, v->v, v->n * sizeof *nv);
    v->v = nv;
    v->cap = cap;
  }
  v->v[v->n++] = x;
}

/* ---- the builder ---- */
typedef struct {
  pool_t pool;
  vec_t nodes, inits;
  int opset;
  int counter; /* unique names */
} bld_t;

/* A new attribute of the given type (NULL when out of memory). */
static Onnx__AttributeProto *attr_new(bld_t *b, const char *name, Onnx__AttributeProto__AttributeType type) {
  Onnx__AttributeProto *a = palloc(&b->pool, sizeof *a);
  if (!a) return NULL;
  onnx__attribute_proto__init(a);
  a->name = (char *)(uintptr_t)name;
  a->has_type = 1;
  a->type = type;
  return a;
}

static Onnx__AttributeProto *attr_i(bld_t *b, const char *name, int64_t v) {
  Onnx__AttributeProto *a = attr_new(b, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INT);
  if (a) a->has_i = 1, a->i = v;
  return a;
}

static Onnx__AttributeProto *attr_f(bld_t *b, const char *name, float v) {
  Onnx__AttributeProto *a = attr_new(b, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__FLOAT);
  if (a) a->has_f = 1, a->f = v;
  return a;
}

static Onnx__AttributeProto *attr_ints(bld_t *b, const char *name, int n, const int64_t *v) {
  Onnx__AttributeProto *a = attr_new(b, name, ONNX__ATTRIBUTE_PROTO__ATTRIBUTE_TYPE__INTS);
  int64_t *vals = palloc(&b->pool, sizeof *vals * (size_t)n);
  if (!a || !vals) return NULL;
  memcpy(vals, v, sizeof *vals * (size_t)n);
  a->n_ints = (size_t)n;
  a->ints = vals;
  return a;
}

/* Adds a node op(inputs) -> output with n_attr attributes. */
static void node(bld_t *b, const char *op, int n_in, const char *const *in, const char *out, int n_attr,
                 Onnx__AttributeProto **attrs) {
  Onnx__NodeProto *nd = palloc(&b->pool, sizeof *nd);
  char **ins = palloc(&b->pool, sizeof *ins * (size_t)n_in), **outs = palloc(&b->pool, sizeof *outs);
  Onnx__AttributeProto **as = n_attr ? palloc(&b->pool, sizeof *as * (size_t)n_attr) : NULL;
  if (!nd || !ins || !outs || (n_attr && !as)) return;
  onnx__node_proto__init(nd);
  for (int i = 0; i < n_in; i++) ins[i] = (char *)(uintptr_t)in[i];
  outs[0] = (char *)(uintptr_t)out;
  for (int i = 0; i < n_attr; i++) {
    if (!attrs[i]) {
      b->pool.oom = 1;
      return;
    }
    as[i] = attrs[i];
  }
  nd->n_input = (size_t)n_in;
  nd->input = ins;
  nd->n_output = 1;
  nd->output = outs;
  nd->op_type = (char *)(uintptr_t)op;
  nd->name = pstr(&b->pool, "%s_%d", op, b->counter++);
  nd->n_attribute = (size_t)n_attr;
  nd->attribute = as;
  vpush(&b->pool, &b->nodes, nd);
}

/* A float initializer over data (not copied: it must outlive the packing). */
static const char *init_f32(bld_t *b, const char *name, int ndim, const int64_t *dims, const float *data) {
  Onnx__TensorProto *t = palloc(&b->pool, sizeof *t);
  int64_t *d = palloc(&b->pool, sizeof *d * (size_t)(ndim ? ndim : 1));
  if (!t || !d) return name;
  onnx__tensor_proto__init(t);
  size_t n = 1;
  for (int i = 0; i < ndim; i++) n *= (size_t)(d[i] = dims[i]);
  t->n_dims = (size_t)ndim;
  t->dims = d;
  t->has_data_type = 1;
  t->data_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
  t->name = (char *)(uintptr_t)name;
  t->has_raw_data = 1; /* little-endian floats, as ONNX's raw_data wants (x86, arm64) */
  t->raw_data.len = n * sizeof(float);
  t->raw_data.data = (uint8_t *)(uintptr_t)data;
  vpush(&b->pool, &b->inits, t);
  return name;
}

static const char *init_tensor(bld_t *b, const char *name, const im_tensor_t *t) {
  return init_f32(b, name, t->ndim, t->shape, im_tensor_f32(t));
}

/* A float initializer of n values copied into the pool. */
static const char *init_copy(bld_t *b, const char *name, int ndim, const int64_t *dims, const float *v, size_t n) {
  float *c = palloc(&b->pool, sizeof *c * n);
  if (!c) return name;
  memcpy(c, v, sizeof *c * n);
  return init_f32(b, name, ndim, dims, c);
}

static Onnx__ValueInfoProto *value_info(bld_t *b, const char *name, int ndim, const int64_t *dims) {
  Onnx__ValueInfoProto *vi = palloc(&b->pool, sizeof *vi);
  Onnx__TypeProto *tp = palloc(&b->pool, sizeof *tp);
  Onnx__TypeProto__Tensor *tt = palloc(&b->pool, sizeof *tt);
  Onnx__TensorShapeProto *sh = palloc(&b->pool, sizeof *sh);
  Onnx__TensorShapeProto__Dimension **dd = palloc(&b->pool, sizeof *dd * (size_t)ndim);
  if (!vi || !tp || !tt || !sh || !dd) return NULL;
  onnx__value_info_proto__init(vi);
  onnx__type_proto__init(tp);
  onnx__type_proto__tensor__init(tt);
  onnx__tensor_shape_proto__init(sh);
  for (int i = 0; i < ndim; i++) {
    Onnx__TensorShapeProto__Dimension *d = palloc(&b->pool, sizeof *d);
    if (!d) return NULL;
    onnx__tensor_shape_proto__dimension__init(d);
    if (dims[i] < 0) {
      d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_PARAM;
      d->dim_param = "N";
    } else {
      d->value_case = ONNX__TENSOR_SHAPE_PROTO__DIMENSION__VALUE_DIM_VALUE;
      d->dim_value = dims[i];
    }
    dd[i] = d;
  }
  sh->n_dim = (size_t)ndim;
  sh->dim = dd;
  tt->has_elem_type = 1;
  tt->elem_type = ONNX__TENSOR_PROTO__DATA_TYPE__FLOAT;
  tt->shape = sh;
  tp->value_case = ONNX__TYPE_PROTO__VALUE_TENSOR_TYPE;
  tp->tensor_type = tt;
  vi->name = (char *)(uintptr_t)name;
  vi->type = tp;
  return vi;
}

/* GELU, exact: Gelu (opset 20+) or x * 0.5 * (1 + erf(x / sqrt 2)). */
static void gelu(bld_t *b, const char *x, const char *y, int i) {
  if (b->opset >= 20) {
    node(b, "Gelu", 1, (const char *[]){x}, y, 0, NULL);
    return;
  }
  const float c[3] = {(float)M_SQRT2, 1.0f, 0.5f};
  const char *k_sqrt2 = init_copy(b, pstr(&b->pool, "node%d.sqrt2", i), 0, NULL, &c[0], 1);
  const char *k_one = init_copy(b, pstr(&b->pool, "node%d.one", i), 0, NULL, &c[1], 1);
  const char *k_half = init_copy(b, pstr(&b->pool, "node%d.half", i), 0, NULL, &c[2], 1);
  const char *t1 = pstr(&b->pool, "n%d_div", i), *t2 = pstr(&b->pool, "n%d_erf", i);
  const char *t3 = pstr(&b->pool, "n%d_erf1", i), *t4 = pstr(&b->pool, "n%d_xerf", i);
  node(b, "Div", 2, (const char *[]){x, k_sqrt2}, t1, 0, NULL);
  node(b, "Erf", 1, (const char *[]){t1}, t2, 0, NULL);
  node(b, "Add", 2, (const char *[]){t2, k_one}, t3, 0, NULL);
  node(b, "Mul", 2, (const char *[]){x, t3}, t4, 0, NULL);
  node(b, "Mul", 2, (const char *[]){t4, k_half}, y, 0, NULL);
}

/* One graph node -> ONNX nodes. names[i] is node i's output; ndims[i] its rank. */
static im_status_t emit(bld_t *b, const im_nn_model_t *m, size_t i, const char **names, int *ndims) {
  im_nn_node_info_t nd;
  im_status_t st = im_nn_node_get(m, i, &nd);
  if (st != IM_OK) return st;
  pool_t *pl = &b->pool;
  const char *x = nd.n_in ? names[nd.in[0]] : NULL, *y = names[i];
  const int xr = nd.n_in ? ndims[nd.in[0]] : 4;
  ndims[i] = xr;
  const int ii = (int)i;
  switch (nd.kind) {
    case IM_NN_NODE_CONV: {
      const im_conv2d_params_t *p = &nd.conv;
      const int64_t *ws = nd.weight->shape;
      const int64_t ks[2] = {ws[2], ws[3]}, strides[2] = {p->stride_h ? p->stride_h : 1, p->stride_w ? p->stride_w : 1};
      const int64_t pads[4] = {p->pad_h, p->pad_w, p->pad_h, p->pad_w};
      const int64_t dil[2] = {p->dilation_h ? p->dilation_h : 1, p->dilation_w ? p->dilation_w : 1};
      Onnx__AttributeProto *at[5] = {attr_ints(b, "kernel_shape", 2, ks), attr_ints(b, "strides", 2, strides),
                                     attr_ints(b, "pads", 4, pads), attr_ints(b, "dilations", 2, dil),
                                     attr_i(b, "group", p->groups ? p->groups : 1)};
      const char *in[3] = {x, init_tensor(b, pstr(pl, "node%d.weight", ii), nd.weight),
                           nd.bias ? init_tensor(b, pstr(pl, "node%d.bias", ii), nd.bias) : NULL};
      const char *out = nd.act == IM_ACT_RELU ? pstr(pl, "n%d_conv", ii) : y;
      node(b, "Conv", nd.bias ? 3 : 2, in, out, 5, at);
      if (nd.act == IM_ACT_RELU) node(b, "Relu", 1, (const char *[]){out}, y, 0, NULL);
      return IM_OK;
    }
    case IM_NN_NODE_BATCHNORM: {
      Onnx__AttributeProto *at[1] = {attr_f(b, "epsilon", nd.eps)};
      const char *in[5] = {x, init_tensor(b, pstr(pl, "node%d.weight", ii), nd.weight),
                           init_tensor(b, pstr(pl, "node%d.bias", ii), nd.bias),
                           init_tensor(b, pstr(pl, "node%d.running_mean", ii), nd.running_mean),
                           init_tensor(b, pstr(pl, "node%d.running_var", ii), nd.running_var)};
      if (!nd.weight || !nd.bias) return im_error(IM_ERR_UNSUPPORTED, "ONNX export: a batch norm without affine");
      node(b, "BatchNormalization", 5, in, y, 1, at);
      return IM_OK;
    }
    case IM_NN_NODE_LAYERNORM: {
      if (!nd.weight || !nd.bias) return im_error(IM_ERR_UNSUPPORTED, "ONNX export: a layer norm without affine");
      Onnx__AttributeProto *at[2] = {attr_i(b, "axis", -1), attr_f(b, "epsilon", nd.eps)};
      const char *in[3] = {x, init_tensor(b, pstr(pl, "node%d.weight", ii), nd.weight),
                           init_tensor(b, pstr(pl, "node%d.bias", ii), nd.bias)};
      node(b, "LayerNormalization", 3, in, y, 2, at);
      return IM_OK;
    }
    case IM_NN_NODE_RELU: node(b, "Relu", 1, &x, y, 0, NULL); return IM_OK;
    case IM_NN_NODE_GELU: gelu(b, x, y, ii); return IM_OK;
    case IM_NN_NODE_MAXPOOL: {
      const im_pool2d_params_t *p = &nd.pool;
      const int64_t ks[2] = {p->kernel_h, p->kernel_w};
      const int64_t strides[2] = {p->stride_h ? p->stride_h : p->kernel_h, p->stride_w ? p->stride_w : p->kernel_w};
      const int64_t pads[4] = {p->pad_h, p->pad_w, p->pad_h, p->pad_w};
      Onnx__AttributeProto *at[3] = {attr_ints(b, "kernel_shape", 2, ks), attr_ints(b, "strides", 2, strides),
                                     attr_ints(b, "pads", 4, pads)};
      node(b, "MaxPool", 1, &x, y, 3, at);
      return IM_OK;
    }
    case IM_NN_NODE_GLOBAL_AVGPOOL: {
      const char *t = pstr(pl, "n%d_gap", ii);
      node(b, "GlobalAveragePool", 1, &x, t, 0, NULL);
      Onnx__AttributeProto *at[1] = {attr_i(b, "axis", 1)};
      node(b, "Flatten", 1, (const char *[]){t}, y, 1, at);
      ndims[i] = 2;
      return IM_OK;
    }
    case IM_NN_NODE_LINEAR: {
      const int64_t out = nd.weight->shape[0], in = nd.weight->shape[1];
      if (xr == 2) {
        Onnx__AttributeProto *at[1] = {attr_i(b, "transB", 1)};
        const char *ins[3] = {x, init_tensor(b, pstr(pl, "node%d.weight", ii), nd.weight),
                              init_tensor(b, pstr(pl, "node%d.bias", ii), nd.bias)};
        node(b, "Gemm", nd.bias ? 3 : 2, ins, y, 1, at);
        return IM_OK;
      }
      /* [..., in] x W^T [in, out] (+ b): a MatMul over a transposed copy. */
      float *wt = palloc(pl, sizeof *wt * (size_t)(in * out));
      if (!wt) return im_error(IM_ERR_NOMEM, "out of memory");
      const float *w = im_tensor_f32(nd.weight);
      for (int64_t o = 0; o < out; o++)
        for (int64_t k = 0; k < in; k++) wt[k * out + o] = w[o * in + k];
      const char *wn = init_f32(b, pstr(pl, "node%d.weight_t", ii), 2, (int64_t[]){in, out}, wt);
      const char *mm = nd.bias ? pstr(pl, "n%d_mm", ii) : y;
      node(b, "MatMul", 2, (const char *[]){x, wn}, mm, 0, NULL);
      if (nd.bias)
        node(b, "Add", 2, (const char *[]){mm, init_tensor(b, pstr(pl, "node%d.bias", ii), nd.bias)}, y, 0, NULL);
      return IM_OK;
    }
    case IM_NN_NODE_DROPOUT:
    case IM_NN_NODE_DROP_PATH: names[i] = x; return IM_OK; /* identities in eval mode */
    case IM_NN_NODE_ADD: node(b, "Add", 2, (const char *[]){x, names[nd.in[1]]}, y, 0, NULL); return IM_OK;
    case IM_NN_NODE_TO_NHWC:
    case IM_NN_NODE_TO_NCHW: {
      const int64_t nhwc[4] = {0, 2, 3, 1}, nchw[4] = {0, 3, 1, 2};
      Onnx__AttributeProto *at[1] = {attr_ints(b, "perm", 4, nd.kind == IM_NN_NODE_TO_NHWC ? nhwc : nchw)};
      node(b, "Transpose", 1, &x, y, 1, at);
      return IM_OK;
    }
    case IM_NN_NODE_SCALE:
      node(b, "Mul", 2, (const char *[]){x, init_tensor(b, pstr(pl, "node%d.scale", ii), nd.weight)}, y, 0, NULL);
      return IM_OK;
    case IM_NN_NODE_INPUT: break;
  }
  return im_error(IM_ERR_UNSUPPORTED, "ONNX export: graph node %zu (kind %d) has no ONNX form", i, (int)nd.kind);
}

static Onnx__StringStringEntryProto *kv(pool_t *pl, const char *k, const char *v) {
  Onnx__StringStringEntryProto *e = palloc(pl, sizeof *e);
  char *vc = v ? palloc(pl, strlen(v) + 1) : NULL;
  if (!e || !vc) return NULL;
  onnx__string_string_entry_proto__init(e);
  memcpy(vc, v, strlen(v) + 1);
  e->key = (char *)(uintptr_t)k;
  e->value = vc;
  return e;
}

/* A JSON text (compact) into the pool. */
static const char *jtext(pool_t *pl, json_t *j) {
  char *s = j ? json_dumps(j, JSON_COMPACT | JSON_ENCODE_ANY | JSON_REAL_PRECISION(9)) : NULL;
  json_decref(j);
  if (!s) {
    pl->oom = 1;
    return NULL;
  }
  char *c = palloc(pl, strlen(s) + 1);
  if (c) memcpy(c, s, strlen(s) + 1);
  free(s);
  return c;
}

/* Floats as the shortest decimals that read back as the same floats (0.1f as 0.1). */
static json_t *jfloats(const float *v, int n) {
  json_t *a = json_array();
  for (int i = 0; i < n; i++) {
    char buf[32];
    for (int prec = 6; prec <= 9; prec++) {
      snprintf(buf, sizeof buf, "%.*g", prec, (double)v[i]);
      if (strtof(buf, NULL) == v[i]) break;
    }
    json_array_append_new(a, json_real(strtod(buf, NULL)));
  }
  return a;
}

int im_onnx_ir_version(int opset) { return opset <= 18 ? 8 : opset <= 20 ? 9 : 10; }

static im_status_t check_opts(const im_nn_model_t *m, const im_onnx_opts_t *o) {
  const int opset = o->opset ? o->opset : 17;
  if (opset < IM_ONNX_OPSET_MIN || opset > IM_ONNX_OPSET_MAX)
    return im_error(IM_ERR_ARG, "ONNX opset %d is not supported: use %d to %d (LayerNormalization needs 17)", opset,
                    IM_ONNX_OPSET_MIN, IM_ONNX_OPSET_MAX);
  if (o->img_h < 1 || o->img_w < 1 || o->img_h > 65536 || o->img_w > 65536)
    return im_error(IM_ERR_ARG, "ONNX export: image size %dx%d is out of range", o->img_w, o->img_h);
  if (o->classes && o->num_classes != (size_t)im_nn_model_num_classes(m))
    return im_error(IM_ERR_ARG, "ONNX export: %zu class names for a model with %d classes", o->num_classes,
                    im_nn_model_num_classes(m));
  if (o->n_norm < 0 || o->n_norm > 4 || (o->n_norm && o->n_norm != im_nn_model_in_channels(m)))
    return im_error(IM_ERR_ARG, "ONNX export: %d normalization values for %d channels", o->n_norm,
                    im_nn_model_in_channels(m));
  return IM_OK;
}

/* The whole ModelProto into b's pool; *mp is set on success. */
static im_status_t build(bld_t *b, const im_nn_model_t *f, const im_onnx_opts_t *o, Onnx__ModelProto **mp) {
  pool_t *pl = &b->pool;
  const size_t n = im_nn_model_num_nodes(f);
  const int C = im_nn_model_in_channels(f), K = im_nn_model_num_classes(f);
  const char **names = palloc(pl, sizeof *names * n);
  int *ndims = palloc(pl, sizeof *ndims * n);
  if (!names || !ndims) return im_error(IM_ERR_NOMEM, "out of memory");
  names[0] = "image";
  if (o->with_preprocess) {
    /* x * 1/(255 std) + (-mean/std): the loader's arithmetic on 0..255 values. */
    float sc[4], sh[4];
    for (int c = 0; c < C; c++) {
      const float mean = o->n_norm ? o->mean[c] : 0.0f, sd = o->n_norm && o->std[c] > 0 ? o->std[c] : 1.0f;
      sc[c] = 1.0f / (255.0f * sd);
      sh[c] = -mean / sd;
    }
    const int64_t d[4] = {1, C, 1, 1};
    const char *k_sc = init_copy(b, "preprocess.scale", 4, d, sc, (size_t)C);
    const char *k_sh = init_copy(b, "preprocess.shift", 4, d, sh, (size_t)C);
    node(b, "Mul", 2, (const char *[]){"image", k_sc}, "image_scaled", 0, NULL);
    node(b, "Add", 2, (const char *[]){"image_scaled", k_sh}, "image_normalized", 0, NULL);
    names[0] = "image_normalized";
  }
  ndims[0] = 4;
  for (size_t i = 1; i < n; i++) {
    names[i] = i + 1 == n ? "logits" : pstr(pl, "n%zu", i);
    im_status_t st = emit(b, f, i, names, ndims);
    if (st != IM_OK) return st;
  }
  if (strcmp(names[n - 1], "logits") != 0 || ndims[n - 1] != 2)
    return im_error(IM_ERR_UNSUPPORTED, "ONNX export: the graph does not end in [N, classes] logits");
  if (o->probabilities) {
    Onnx__AttributeProto *at[1] = {attr_i(b, "axis", 1)};
    node(b, "Softmax", 1, (const char *[]){"logits"}, "probabilities", 1, at);
  }
  if (pl->oom) return im_error(IM_ERR_NOMEM, "out of memory building the ONNX graph");

  Onnx__GraphProto *g = palloc(pl, sizeof *g);
  Onnx__ModelProto *model = palloc(pl, sizeof *model);
  Onnx__OperatorSetIdProto *ops = palloc(pl, sizeof *ops), **opsv = palloc(pl, sizeof *opsv);
  Onnx__ValueInfoProto **ins = palloc(pl, sizeof *ins), **outs = palloc(pl, 2 * sizeof *outs);
  if (!g || !model || !ops || !opsv || !ins || !outs) return im_error(IM_ERR_NOMEM, "out of memory");
  onnx__graph_proto__init(g);
  onnx__model_proto__init(model);
  onnx__operator_set_id_proto__init(ops);
  ins[0] = value_info(b, "image", 4, (int64_t[]){-1, C, o->img_h, o->img_w});
  outs[0] = value_info(b, "logits", 2, (int64_t[]){-1, K});
  outs[1] = o->probabilities ? value_info(b, "probabilities", 2, (int64_t[]){-1, K}) : NULL;
  g->name = pstr(pl, "imops_%s", im_nn_model_arch(f));
  g->n_node = b->nodes.n;
  g->node = (Onnx__NodeProto **)b->nodes.v;
  g->n_initializer = b->inits.n;
  g->initializer = (Onnx__TensorProto **)b->inits.v;
  g->n_input = 1;
  g->input = ins;
  g->n_output = o->probabilities ? 2 : 1;
  g->output = outs;
  g->doc_string = pstr(pl, "imops %s, folded for inference (batch norm in the convolutions)", im_nn_model_arch(f));

  ops->domain = "";
  ops->has_version = 1;
  ops->version = o->opset ? o->opset : 17;
  opsv[0] = ops;
  model->has_ir_version = 1;
  model->ir_version = im_onnx_ir_version((int)ops->version);
  model->n_opset_import = 1;
  model->opset_import = opsv;
  model->producer_name = "imops";
  model->producer_version = IM_VERSION_STRING;
  model->domain = "org.imops";
  model->has_model_version = 1;
  model->model_version = 1;
  model->graph = g;

  /* metadata_props */
  json_t *cls = json_array();
  for (int k = 0; k < K; k++) {
    char num[16];
    snprintf(num, sizeof num, "%d", k);
    json_array_append_new(cls, json_string(o->classes ? o->classes[k] : num));
  }
  float mean[4] = {0}, sd[4] = {1, 1, 1, 1};
  for (int c = 0; c < C && o->n_norm; c++) mean[c] = o->mean[c], sd[c] = o->std[c];
  vec_t md = {0};
  vpush(pl, &md, kv(pl, "classes", jtext(pl, cls)));
  vpush(pl, &md, kv(pl, "img_size", jtext(pl, json_pack("[i, i]", o->img_h, o->img_w))));
  vpush(pl, &md, kv(pl, "mean", jtext(pl, jfloats(mean, C))));
  vpush(pl, &md, kv(pl, "std", jtext(pl, jfloats(sd, C))));
  vpush(pl, &md, kv(pl, "arch", im_nn_model_arch(f)));
  vpush(pl, &md, kv(pl, "imops_version", IM_VERSION_STRING));
  vpush(pl, &md, kv(pl, "preprocess", o->with_preprocess ? "normalize" : "none"));
  vpush(pl, &md, kv(pl, "input_range", o->with_preprocess ? "0-255" : "normalized"));
  vpush(pl, &md, kv(pl, "input_layout", "NCHW"));
  model->n_metadata_props = md.n;
  model->metadata_props = (Onnx__StringStringEntryProto **)md.v;
  if (pl->oom || !ins[0] || !outs[0] || (o->probabilities && !outs[1]))
    return im_error(IM_ERR_NOMEM, "out of memory building the ONNX model");
  *mp = model;
  return IM_OK;
}

im_status_t im_onnx_export_mem(const im_nn_model_t *m, const im_onnx_opts_t *o, uint8_t **data, size_t *len) {
  *data = NULL;
  *len = 0;
  im_status_t st = check_opts(m, o);
  if (st != IM_OK) return st;
  im_nn_model_t *folded = NULL;
  const im_nn_model_t *f = m;
  if (!im_nn_model_is_folded(m)) {
    if ((st = im_nn_model_fold(m, &folded)) != IM_OK) return st;
    f = folded;
  }
  bld_t b = {.opset = o->opset ? o->opset : 17};
  Onnx__ModelProto *mp = NULL;
  st = build(&b, f, o, &mp);
  if (st == IM_OK) {
    const size_t n = onnx__model_proto__get_packed_size(mp);
    if (n > ((size_t)1 << 31) - 1) {
      st = im_error(IM_ERR_UNSUPPORTED, "ONNX export: the model is %zu bytes, over protobuf's 2 GiB limit", n);
    } else if (!(*data = im_malloc(n ? n : 1))) {
      st = im_error(IM_ERR_NOMEM, "out of memory for %zu bytes of ONNX", n);
    } else {
      *len = onnx__model_proto__pack(mp, *data);
      if (*len != n) {
        im_free(*data);
        *data = NULL;
        *len = 0;
        st = im_error(IM_ERR_INTERNAL, "ONNX export: packed %zu bytes of %zu", *len, n);
      }
    }
  }
  pool_free(&b.pool);
  im_nn_model_free(folded);
  return st;
}

im_status_t im_onnx_export(const im_nn_model_t *m, const im_onnx_opts_t *o, const char *path) {
  uint8_t *data = NULL;
  size_t len = 0;
  im_status_t st = im_onnx_export_mem(m, o, &data, &len);
  if (st == IM_OK) st = im_file_write_atomic(path, data, len);
  im_free(data);
  return st;
}
