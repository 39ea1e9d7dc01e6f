/* Optimizers with torch.optim's update rules (SGD with momentum, dampening,
 * Nesterov and L2 weight decay; Adam with L2 weight decay; AdamW with
 * decoupled weight decay; AMSGrad), gradient clipping by global norm as
 * torch.nn.utils.clip_grad_norm_, and optimizer-state files for checkpoints.
 * The state (momentum buffers, moments) is one slab at the parameters'
 * offsets; a step allocates nothing and runs per element in float32 in
 * torch's order of operations, so results agree with torch to rounding. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/nn_impl.h"

struct im_nn_optim {
  im_nn_model_t *m;
  im_nn_optim_opts_t o;
  int64_t steps;
  int nstate;          /* state tensors per parameter */
  const char *names[3]; /* their suffixes */
  im_tensor_t slab;    /* nstate * num_params floats */
};

im_nn_optim_opts_t im_nn_optim_defaults(im_nn_optim_kind_t kind) {
  im_nn_optim_opts_t o = {.kind = kind, .lr = 1e-3, .beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8};
  if (kind == IM_NN_OPTIM_SGD) o.lr = 0.01;
  if (kind == IM_NN_OPTIM_ADAMW) o.weight_decay = 1e-2;
  return o;
}

static im_status_t check_opts(const im_nn_optim_opts_t *o) {
  if (o->kind != IM_NN_OPTIM_SGD && o->kind != IM_NN_OPTIM_ADAM && o->kind != IM_NN_OPTIM_ADAMW)
    return im_error(IM_ERR_ARG, "optimizer: unknown kind %d", (int)o->kind);
  if (!(o->lr >= 0.0) || isinf(o->lr)) return im_error(IM_ERR_ARG, "optimizer: invalid learning rate %g", o->lr);
  if (!(o->weight_decay >= 0.0) || isinf(o->weight_decay))
    return im_error(IM_ERR_ARG, "optimizer: invalid weight_decay %g", o->weight_decay);
  if (o->kind == IM_NN_OPTIM_SGD) {
    if (!(o->momentum >= 0.0) || isinf(o->momentum))
      return im_error(IM_ERR_ARG, "optimizer: invalid momentum %g", o->momentum);
    if (!(o->dampening >= 0.0 && o->dampening <= 1.0))
      return im_error(IM_ERR_ARG, "optimizer: invalid dampening %g", o->dampening);
    if (o->nesterov && (o->momentum <= 0.0 || o->dampening != 0.0))
      return im_error(IM_ERR_ARG, "optimizer: Nesterov momentum requires a momentum and zero dampening");
  } else {
    if (!(o->beta1 >= 0.0 && o->beta1 < 1.0) || !(o->beta2 >= 0.0 && o->beta2 < 1.0))
      return im_error(IM_ERR_ARG, "optimizer: betas (%g, %g) must be in [0, 1)", o->beta1, o->beta2);
    if (!(o->eps >= 0.0) || isinf(o->eps)) return im_error(IM_ERR_ARG, "optimizer: invalid eps %g", o->eps);
  }
  return IM_OK;
}

im_status_t im_nn_optim_new(im_nn_model_t *m, const im_nn_optim_opts_t *o, im_nn_optim_t **out) {
  *out = NULL;
  if (!m || !o) return im_error(IM_ERR_ARG, "im_nn_optim_new: model and options are required");
  im_status_t st = check_opts(o);
  if (st != IM_OK) return st;
  im_nn_optim_t *opt = im_calloc(1, sizeof *opt);
  if (!opt) return im_error(IM_ERR_NOMEM, "out of memory");
  opt->m = m;
  opt->o = *o;
  if (o->kind == IM_NN_OPTIM_SGD) {
    opt->nstate = o->momentum != 0.0 ? 1 : 0;
    opt->names[0] = "momentum_buffer";
  } else {
    opt->nstate = o->amsgrad ? 3 : 2;
    opt->names[0] = "exp_avg";
    opt->names[1] = "exp_avg_sq";
    opt->names[2] = "max_exp_avg_sq";
  }
  const int64_t n = (int64_t)opt->nstate * m->num_params;
  if ((st = im_tensor_alloc(&opt->slab, IM_F32, 1, (int64_t[]){n ? n : 1})) != IM_OK) {
    im_free(opt);
    return st;
  }
  *out = opt;
  return IM_OK;
}

void im_nn_optim_free(im_nn_optim_t *opt) {
  if (!opt) return;
  im_tensor_free(&opt->slab);
  im_free(opt);
}

void im_nn_optim_set_lr(im_nn_optim_t *opt, double lr) { opt->o.lr = lr; }
double im_nn_optim_get_lr(const im_nn_optim_t *opt) { return opt->o.lr; }
int64_t im_nn_optim_steps(const im_nn_optim_t *opt) { return opt->steps; }

static float *state_ptr(const im_nn_optim_t *opt, int k, const im__nn_entry_t *e) {
  return im_tensor_f32(&opt->slab) + (size_t)k * (size_t)opt->m->num_params + e->offset;
}

/* torch.optim.SGD (_single_tensor_sgd): d = g + wd p; buf = d (first step) or
 * buf * momentum + (1 - dampening) d; d = d + momentum buf (Nesterov) or buf; p -= lr d. */
static void sgd(const im_nn_optim_t *opt, const im__nn_entry_t *e, float wd) {
  const int64_t n = im_tensor_numel(&e->value);
  float *p = im_tensor_f32(&e->value);
  const float *g = im_tensor_f32(&e->grad);
  const float mom = (float)opt->o.momentum, damp1 = (float)(1.0 - opt->o.dampening), nlr = (float)-opt->o.lr;
  float *buf = opt->nstate ? state_ptr(opt, 0, e) : NULL;
  const int first = opt->steps == 0, nesterov = opt->o.nesterov;
  for (int64_t i = 0; i < n; i++) {
    float d = g[i];
    if (wd != 0.0f) d = d + wd * p[i];
    if (buf) {
      buf[i] = first ? d : buf[i] * mom + damp1 * d;
      d = nesterov ? d + mom * buf[i] : buf[i];
    }
    p[i] = p[i] + nlr * d;
  }
}

/* torch.optim.Adam / AdamW (_single_tensor_adam[w]): Adam adds wd p to the
 * gradient, AdamW first scales p by 1 - lr wd; then m = b1 m + (1-b1) g,
 * v = b2 v + (1-b2) g^2, denom = sqrt(v) / sqrt(1 - b2^t) + eps,
 * p -= lr / (1 - b1^t) * m / denom. */
static void adam(const im_nn_optim_t *opt, const im__nn_entry_t *e, float wd, int64_t t) {
  const int64_t n = im_tensor_numel(&e->value);
  float *p = im_tensor_f32(&e->value);
  const float *g = im_tensor_f32(&e->grad);
  float *ea = state_ptr(opt, 0, e), *eq = state_ptr(opt, 1, e), *mx = opt->o.amsgrad ? state_ptr(opt, 2, e) : NULL;
  const double b1 = opt->o.beta1, b2 = opt->o.beta2, lr = opt->o.lr;
  const double bc1 = 1.0 - pow(b1, (double)t), bc2 = 1.0 - pow(b2, (double)t);
  const float fb1 = (float)b1, fb2 = (float)b2, c1 = (float)(1.0 - b1), c2 = (float)(1.0 - b2);
  const float neg_step = (float)-(lr / bc1), bc2s = (float)sqrt(bc2), eps = (float)opt->o.eps;
  const int adamw = opt->o.kind == IM_NN_OPTIM_ADAMW;
  const float decay = (float)(1.0 - lr * wd);
  for (int64_t i = 0; i < n; i++) {
    float gi = g[i];
    if (adamw) {
      if (wd != 0.0f) p[i] = p[i] * decay;
    } else if (wd != 0.0f) {
      gi = gi + wd * p[i];
    }
    ea[i] = ea[i] * fb1 + c1 * gi;
    eq[i] = eq[i] * fb2 + c2 * gi * gi;
    float v = eq[i];
    if (mx) {
      if (eq[i] > mx[i]) mx[i] = eq[i];
      v = mx[i];
    }
    const float denom = sqrtf(v) / bc2s + eps;
    p[i] = p[i] + neg_step * (ea[i] / denom);
  }
}

im_status_t im_nn_optim_step(im_nn_optim_t *opt) {
  im_nn_model_t *m = opt->m;
  const int64_t t = opt->steps + 1;
  for (size_t i = 0; i < m->n_params; i++) {
    const im__nn_entry_t *e = &m->ents[m->params[i]];
    const float wd = (opt->o.decay_filter && !e->decay) ? 0.0f : (float)opt->o.weight_decay;
    if (opt->o.kind == IM_NN_OPTIM_SGD) sgd(opt, e, wd);
    else adam(opt, e, wd, t);
  }
  opt->steps = t;
  return IM_OK;
}

im_status_t im_nn_clip_grad_norm(im_nn_model_t *m, double max_norm, double *total_norm) {
  double ss = 0.0;
  for (size_t i = 0; i < m->n_params; i++) {
    const im__nn_entry_t *e = &m->ents[m->params[i]];
    const float *g = im_tensor_f32(&e->grad);
    const int64_t n = im_tensor_numel(&e->grad);
    double s = 0.0;
    for (int64_t k = 0; k < n; k++) s += (double)g[k] * g[k];
    ss += s;
  }
  const double norm = sqrt(ss);
  if (total_norm) *total_norm = norm;
  if (!(max_norm > 0.0)) return IM_OK;
  const double coef = max_norm / (norm + 1e-6);
  if (!(coef < 1.0)) return IM_OK; /* torch multiplies by the clamped 1.0: no change */
  const float c = (float)coef;
  float *g = im_tensor_f32(&m->gslab);
  for (int64_t k = 0; k < m->num_params; k++) g[k] *= c;
  return IM_OK;
}

/* ---- state files ---- */

static const char *kind_name(im_nn_optim_kind_t k) {
  return k == IM_NN_OPTIM_SGD ? "sgd" : k == IM_NN_OPTIM_ADAM ? "adam" : "adamw";
}

im_status_t im_nn_optim_save(const im_nn_optim_t *opt, const char *path) {
  const im_nn_model_t *m = opt->m;
  const size_t n = (size_t)opt->nstate * m->n_params;
  im_named_tensor_t *list = im_calloc(n ? n : 1, sizeof *list);
  im_tensor_t *views = im_calloc(n ? n : 1, sizeof *views);
  char **names = im_calloc(n ? n : 1, sizeof *names);
  im_status_t st = IM_OK;
  if (!list || !views || !names) {
    st = im_error(IM_ERR_NOMEM, "out of memory");
    goto done;
  }
  size_t c = 0;
  for (int k = 0; k < opt->nstate; k++)
    for (size_t i = 0; i < m->n_params; i++, c++) {
      const im__nn_entry_t *e = &m->ents[m->params[i]];
      size_t len = strlen(e->name) + strlen(opt->names[k]) + 2;
      if (!(names[c] = im_malloc(len))) {
        st = im_error(IM_ERR_NOMEM, "out of memory");
        goto done;
      }
      snprintf(names[c], len, "%s.%s", e->name, opt->names[k]);
      (void)im_tensor_view(&views[c], IM_F32, e->ndim, e->shape, state_ptr(opt, k, e));
      list[c] = (im_named_tensor_t){names[c], &views[c]};
    }
  char steps[32], lr[32], mom[32], damp[32], b1[32], b2[32], eps[32], wd[32], flags[64];
  snprintf(steps, sizeof steps, "%lld", (long long)opt->steps);
  snprintf(lr, sizeof lr, "%.17g", opt->o.lr);
  snprintf(mom, sizeof mom, "%.17g", opt->o.momentum);
  snprintf(damp, sizeof damp, "%.17g", opt->o.dampening);
  snprintf(b1, sizeof b1, "%.17g", opt->o.beta1);
  snprintf(b2, sizeof b2, "%.17g", opt->o.beta2);
  snprintf(eps, sizeof eps, "%.17g", opt->o.eps);
  snprintf(wd, sizeof wd, "%.17g", opt->o.weight_decay);
  snprintf(flags, sizeof flags, "nesterov=%d amsgrad=%d decay_filter=%d", opt->o.nesterov, opt->o.amsgrad,
           opt->o.decay_filter);
  const im_safetensors_meta_t md[] = {
      {"format", "imops-optim"}, {"version", "1"},   {"kind", kind_name(opt->o.kind)}, {"steps", steps},
      {"lr", lr},                {"momentum", mom},  {"dampening", damp},              {"beta1", b1},
      {"beta2", b2},             {"eps", eps},       {"weight_decay", wd},             {"flags", flags},
      {"arch", m->arch},
  };
  st = im_safetensors_write(path, list, n, md, sizeof md / sizeof *md);
done:
  if (names)
    for (size_t i = 0; i < n; i++) im_free(names[i]);
  im_free(names);
  im_free(views);
  im_free(list);
  return st;
}

im_status_t im_nn_optim_load(im_nn_optim_t *opt, const char *path) {
  im_safetensors_t *f;
  im_status_t st = im_safetensors_load(path, 0, &f);
  if (st != IM_OK) return st;
  const im_nn_model_t *m = opt->m;
  const char *fmt = im_safetensors_metadata(f, "format"), *ver = im_safetensors_metadata(f, "version");
  const char *kind = im_safetensors_metadata(f, "kind"), *steps = im_safetensors_metadata(f, "steps");
  char *end = NULL;
  long long nsteps = steps ? strtoll(steps, &end, 10) : -1;
  if (!fmt || strcmp(fmt, "imops-optim") != 0 || !ver || strcmp(ver, "1") != 0) {
    st = im_error(IM_ERR_FORMAT, "%s: not an imops optimizer state file (format imops-optim version 1)", path);
  } else if (!kind || strcmp(kind, kind_name(opt->o.kind)) != 0) {
    st = im_error(IM_ERR_FORMAT, "%s: optimizer state of kind %s, this optimizer is %s", path, kind ? kind : "?",
                  kind_name(opt->o.kind));
  } else if (nsteps < 0 || !end || *end) {
    st = im_error(IM_ERR_FORMAT, "%s: bad step count", path);
  } else if (im_safetensors_count(f) != (size_t)opt->nstate * m->n_params) {
    st = im_error(IM_ERR_FORMAT, "%s: %zu state tensors, this optimizer has %zu", path, im_safetensors_count(f),
                  (size_t)opt->nstate * m->n_params);
  }
  /* Check every tensor, then copy. */
  for (int pass = 0; pass < 2 && st == IM_OK; pass++)
    for (int k = 0; k < opt->nstate && st == IM_OK; k++)
      for (size_t i = 0; i < m->n_params && st == IM_OK; i++) {
        const im__nn_entry_t *e = &m->ents[m->params[i]];
        char name[320];
        snprintf(name, sizeof name, "%s.%s", e->name, opt->names[k]);
        im_tensor_t dst;
        (void)im_tensor_view(&dst, IM_F32, e->ndim, e->shape, state_ptr(opt, k, e));
        im_tensor_t v;
        if (im_safetensors_get(f, name, &v) != IM_OK || !im_tensor_same_shape(&v, &dst))
          st = im_error(IM_ERR_FORMAT, "%s: tensor %s is missing or mis-shaped", path, name);
        else if (pass == 1)
          memcpy(dst.data, v.data, im_tensor_nbytes(&dst));
      }
  if (st == IM_OK) opt->steps = nsteps;
  im_safetensors_free(f);
  return st;
}
