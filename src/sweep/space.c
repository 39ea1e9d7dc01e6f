/* Distributions of sweep parameters: sampling as wandb/sweeps does, the
 * mapping of each parameter onto [0, 1] that the searches and plots use,
 * grid enumeration, random search, and points as run-config JSON. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "sweep/sweep_impl.h"

int im__sweep_is_q(im_sweep_dist_t d) {
  return d == IM_SWEEP_Q_UNIFORM || d == IM_SWEEP_Q_LOG_UNIFORM_VALUES || d == IM_SWEEP_Q_LOG_UNIFORM ||
         d == IM_SWEEP_Q_NORMAL || d == IM_SWEEP_Q_LOG_NORMAL || d == IM_SWEEP_Q_BETA;
}
int im__sweep_is_bounded(im_sweep_dist_t d) {
  return d == IM_SWEEP_INT_UNIFORM || d == IM_SWEEP_UNIFORM || d == IM_SWEEP_Q_UNIFORM ||
         d == IM_SWEEP_LOG_UNIFORM_VALUES || d == IM_SWEEP_Q_LOG_UNIFORM_VALUES || d == IM_SWEEP_INV_LOG_UNIFORM_VALUES ||
         d == IM_SWEEP_LOG_UNIFORM || d == IM_SWEEP_Q_LOG_UNIFORM || d == IM_SWEEP_INV_LOG_UNIFORM;
}
int im__sweep_is_normal(im_sweep_dist_t d) {
  return d == IM_SWEEP_NORMAL || d == IM_SWEEP_Q_NORMAL || d == IM_SWEEP_LOG_NORMAL || d == IM_SWEEP_Q_LOG_NORMAL;
}
int im__sweep_is_categorical(im_sweep_dist_t d) {
  return d == IM_SWEEP_CATEGORICAL || d == IM_SWEEP_CATEGORICAL_W_PROBABILITIES;
}
int im__sweep_is_log(im_sweep_dist_t d) {
  return d == IM_SWEEP_LOG_UNIFORM_VALUES || d == IM_SWEEP_Q_LOG_UNIFORM_VALUES || d == IM_SWEEP_INV_LOG_UNIFORM_VALUES ||
         d == IM_SWEEP_LOG_UNIFORM || d == IM_SWEEP_Q_LOG_UNIFORM || d == IM_SWEEP_INV_LOG_UNIFORM ||
         d == IM_SWEEP_LOG_NORMAL || d == IM_SWEEP_Q_LOG_NORMAL;
}
int im_sweep_param_searchable(const im_sweep_param_t *p) { return p->dist != IM_SWEEP_CONSTANT; }

double im__sweep_quantize(double x, double q) { return round(x / q) * q; }

double im__sweep_phi(double z) { return 0.5 * erfc(-z / sqrt(2.0)); }

/* Acklam's rational approximation, refined by one Halley step (|error| < 1e-13). */
double im__sweep_phi_inv(double p) {
  if (p <= 0) return -INFINITY;
  if (p >= 1) return INFINITY;
  static const double a[] = {-3.969683028665376e+01, 2.209460984245205e+02, -2.759285104469687e+02,
                             1.383577518672690e+02, -3.066479806614716e+01, 2.506628277459239e+00};
  static const double b[] = {-5.447609879822406e+01, 1.615858368580409e+02, -1.556989798598866e+02,
                             6.680131188771972e+01, -1.328068155288572e+01};
  static const double c[] = {-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e+00,
                             -2.549732539343734e+00, 4.374664141464968e+00, 2.938163982698783e+00};
  static const double d[] = {7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e+00,
                             3.754408661907416e+00};
  double x;
  if (p < 0.02425) {
    double q = sqrt(-2 * log(p));
    x = (((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  } else if (p > 1 - 0.02425) {
    double q = sqrt(-2 * log(1 - p));
    x = -(((((c[0] * q + c[1]) * q + c[2]) * q + c[3]) * q + c[4]) * q + c[5]) /
        ((((d[0] * q + d[1]) * q + d[2]) * q + d[3]) * q + 1);
  } else {
    double q = p - 0.5, r = q * q;
    x = (((((a[0] * r + a[1]) * r + a[2]) * r + a[3]) * r + a[4]) * r + a[5]) * q /
        (((((b[0] * r + b[1]) * r + b[2]) * r + b[3]) * r + b[4]) * r + 1);
  }
  double e = im__sweep_phi(x) - p, u = e * sqrt(2 * M_PI) * exp(x * x / 2);
  return x - u / (1 + x * u / 2);
}

/* Gamma(k, 1) by Marsaglia and Tsang; k < 1 through the boost U^(1/k). */
static double gamma_draw(im_rng_t *r, double k) {
  if (k < 1) {
    double u = im_rng_uniform(r);
    return gamma_draw(r, k + 1) * pow(u > 0 ? u : 1e-300, 1 / k);
  }
  double d = k - 1.0 / 3, c = 1 / sqrt(9 * d);
  for (int it = 0; it < 1000; it++) {
    double x = im_rng_normal(r), v = 1 + c * x;
    if (v <= 0) continue;
    v = v * v * v;
    double u = im_rng_uniform(r);
    if (u < 1 - 0.0331 * x * x * x * x || log(u > 0 ? u : 1e-300) < 0.5 * x * x + d * (1 - v + log(v))) return d * v;
  }
  return d;
}

double im_sweep_param_sample(const im_sweep_param_t *p, im_rng_t *r) {
  double u = im_rng_uniform(r), x;
  switch (p->dist) {
    case IM_SWEEP_CONSTANT: return 0;
    case IM_SWEEP_CATEGORICAL: return (double)im_rng_below(r, (uint32_t)p->n_values);
    case IM_SWEEP_CATEGORICAL_W_PROBABILITIES: {
      double acc = 0;
      for (size_t i = 0; i < p->n_values; i++) {
        acc += p->probs[i];
        if (u < acc) return (double)i;
      }
      for (size_t i = p->n_values; i-- > 0;)
        if (p->probs[i] > 0) return (double)i;
      return 0;
    }
    case IM_SWEEP_INT_UNIFORM: return p->min + (double)im_rng_below(r, (uint32_t)(p->max - p->min + 1));
    case IM_SWEEP_UNIFORM: return p->min + u * (p->max - p->min);
    case IM_SWEEP_Q_UNIFORM: return im__sweep_quantize(p->min + u * (p->max - p->min), p->q);
    case IM_SWEEP_LOG_UNIFORM_VALUES:
    case IM_SWEEP_INV_LOG_UNIFORM_VALUES: return exp(log(p->min) + u * (log(p->max) - log(p->min)));
    case IM_SWEEP_Q_LOG_UNIFORM_VALUES:
      return im__sweep_quantize(exp(log(p->min) + u * (log(p->max) - log(p->min))), p->q);
    case IM_SWEEP_LOG_UNIFORM: return exp(p->min + u * (p->max - p->min));
    case IM_SWEEP_Q_LOG_UNIFORM: return im__sweep_quantize(exp(p->min + u * (p->max - p->min)), p->q);
    case IM_SWEEP_INV_LOG_UNIFORM: return exp(-(p->min + u * (p->max - p->min)));
    case IM_SWEEP_NORMAL: return p->mu + p->sigma * im_rng_normal(r);
    case IM_SWEEP_Q_NORMAL: return im__sweep_quantize(p->mu + p->sigma * im_rng_normal(r), p->q);
    case IM_SWEEP_LOG_NORMAL: return exp(p->mu + p->sigma * im_rng_normal(r));
    case IM_SWEEP_Q_LOG_NORMAL: return im__sweep_quantize(exp(p->mu + p->sigma * im_rng_normal(r)), p->q);
    case IM_SWEEP_BETA:
    case IM_SWEEP_Q_BETA: {
      double g1 = gamma_draw(r, p->a), g2 = gamma_draw(r, p->b);
      x = g1 + g2 > 0 ? g1 / (g1 + g2) : 0.5;
      return p->dist == IM_SWEEP_Q_BETA ? im__sweep_quantize(x, p->q) : x;
    }
    default: return 0;
  }
}

static double clamp01(double u) { return u < 0 ? 0 : u > 1 ? 1 : u; }

double im__sweep_encode(const im_sweep_param_t *p, double x) {
  switch (p->dist) {
    case IM_SWEEP_CONSTANT: return 0.5;
    case IM_SWEEP_CATEGORICAL:
    case IM_SWEEP_CATEGORICAL_W_PROBABILITIES: return (x + 0.5) / (double)p->n_values;
    case IM_SWEEP_INT_UNIFORM: return clamp01((x - p->min + 0.5) / (p->max - p->min + 1));
    case IM_SWEEP_UNIFORM:
    case IM_SWEEP_Q_UNIFORM: return clamp01((x - p->min) / (p->max - p->min));
    case IM_SWEEP_LOG_UNIFORM_VALUES:
    case IM_SWEEP_Q_LOG_UNIFORM_VALUES:
    case IM_SWEEP_INV_LOG_UNIFORM_VALUES:
      return clamp01((log(x > 0 ? x : p->min) - log(p->min)) / (log(p->max) - log(p->min)));
    case IM_SWEEP_LOG_UNIFORM:
    case IM_SWEEP_Q_LOG_UNIFORM: return clamp01((log(x > 0 ? x : 1e-300) - p->min) / (p->max - p->min));
    case IM_SWEEP_INV_LOG_UNIFORM: return clamp01((-log(x > 0 ? x : 1e-300) - p->min) / (p->max - p->min));
    case IM_SWEEP_NORMAL:
    case IM_SWEEP_Q_NORMAL: return p->sigma > 0 ? im__sweep_phi((x - p->mu) / p->sigma) : 0.5;
    case IM_SWEEP_LOG_NORMAL:
    case IM_SWEEP_Q_LOG_NORMAL: return p->sigma > 0 && x > 0 ? im__sweep_phi((log(x) - p->mu) / p->sigma) : 0.5;
    case IM_SWEEP_BETA:
    case IM_SWEEP_Q_BETA: return clamp01(x);
    default: return 0.5;
  }
}

double im__sweep_decode(const im_sweep_param_t *p, double u) {
  u = clamp01(u);
  const double tiny = 1e-12;
  double x;
  switch (p->dist) {
    case IM_SWEEP_CONSTANT: return 0;
    case IM_SWEEP_CATEGORICAL:
    case IM_SWEEP_CATEGORICAL_W_PROBABILITIES: {
      double k = floor(u * (double)p->n_values);
      return k >= (double)p->n_values ? (double)p->n_values - 1 : k;
    }
    case IM_SWEEP_INT_UNIFORM: x = round(p->min - 0.5 + u * (p->max - p->min + 1)); return fmin(fmax(x, p->min), p->max);
    case IM_SWEEP_UNIFORM: return p->min + u * (p->max - p->min);
    case IM_SWEEP_Q_UNIFORM: return im__sweep_quantize(p->min + u * (p->max - p->min), p->q);
    case IM_SWEEP_LOG_UNIFORM_VALUES:
    case IM_SWEEP_INV_LOG_UNIFORM_VALUES: return exp(log(p->min) + u * (log(p->max) - log(p->min)));
    case IM_SWEEP_Q_LOG_UNIFORM_VALUES: return im__sweep_quantize(exp(log(p->min) + u * (log(p->max) - log(p->min))), p->q);
    case IM_SWEEP_LOG_UNIFORM: return exp(p->min + u * (p->max - p->min));
    case IM_SWEEP_Q_LOG_UNIFORM: return im__sweep_quantize(exp(p->min + u * (p->max - p->min)), p->q);
    case IM_SWEEP_INV_LOG_UNIFORM: return exp(-(p->min + u * (p->max - p->min)));
    case IM_SWEEP_NORMAL:
    case IM_SWEEP_Q_NORMAL:
      x = p->mu + p->sigma * im__sweep_phi_inv(fmin(fmax(u, tiny), 1 - tiny));
      return p->dist == IM_SWEEP_Q_NORMAL ? im__sweep_quantize(x, p->q) : x;
    case IM_SWEEP_LOG_NORMAL:
    case IM_SWEEP_Q_LOG_NORMAL:
      x = exp(p->mu + p->sigma * im__sweep_phi_inv(fmin(fmax(u, tiny), 1 - tiny)));
      return p->dist == IM_SWEEP_Q_LOG_NORMAL ? im__sweep_quantize(x, p->q) : x;
    case IM_SWEEP_BETA: return u;
    case IM_SWEEP_Q_BETA: return im__sweep_quantize(u, p->q);
    default: return 0;
  }
}

/* ---- grid ----------------------------------------------------------------------- */
static im_status_t grid_choices(const char *src, const im_sweep_param_t *p, int64_t *n) {
  switch (p->dist) {
    case IM_SWEEP_CONSTANT: *n = 1; return IM_OK;
    case IM_SWEEP_CATEGORICAL:
    case IM_SWEEP_CATEGORICAL_W_PROBABILITIES: *n = (int64_t)p->n_values; return IM_OK;
    case IM_SWEEP_INT_UNIFORM:
      if (p->max - p->min + 1 > 1e6) break;
      *n = (int64_t)(p->max - p->min + 1);
      return IM_OK;
    case IM_SWEEP_Q_UNIFORM: {
      /* numpy.arange(min, max, q): max excluded */
      double k = ceil((p->max - p->min) / p->q - 1e-9);
      if (k > 1e6) break;
      *n = k < 1 ? 1 : (int64_t)k;
      return IM_OK;
    }
    default: break;
  }
  return im_error(IM_ERR_ARG, "%s:%d:%d: parameters.%s: method grid needs values, int_uniform or q_uniform (a finite set), "
                  "not %s", src, p->line, p->col, p->name, im_sweep_dist_name(p->dist));
}

im_status_t im_sweep_grid_count(const im_sweep_config_t *c, int64_t *count) {
  int64_t total = 1;
  for (size_t i = 0; i < c->n_params; i++) {
    int64_t k = 0;
    im_status_t st = grid_choices(c->source ? c->source : "sweep", &c->params[i], &k);
    if (st) return st;
    if (total > INT64_MAX / (k ? k : 1) || total * k > 100000000)
      return im_error(IM_ERR_ARG, "%s: the grid has more than 100,000,000 points", c->source ? c->source : "sweep");
    total *= k;
  }
  *count = total;
  return IM_OK;
}

im_status_t im_sweep_grid_point(const im_sweep_config_t *c, int64_t idx, double *x) {
  int64_t total = 0;
  im_status_t st = im_sweep_grid_count(c, &total);
  if (st) return st;
  if (idx < 0 || idx >= total) return im_error(IM_ERR_NOT_FOUND, "the grid has %lld points", (long long)total);
  for (size_t i = c->n_params; i-- > 0;) {
    const im_sweep_param_t *p = &c->params[i];
    int64_t k = 1;
    (void)grid_choices("", p, &k);
    int64_t j = idx % k;
    idx /= k;
    if (p->dist == IM_SWEEP_INT_UNIFORM) x[i] = p->min + (double)j;
    else if (p->dist == IM_SWEEP_Q_UNIFORM) x[i] = im__sweep_quantize(p->min + (double)j * p->q, p->q);
    else x[i] = (double)j;
  }
  return IM_OK;
}

/* ---- suggestions --------------------------------------------------------------------- */
im_status_t im_sweep_suggest_ex(const im_sweep_config_t *c, const im_sweep_obs_t *hist, size_t n, uint64_t seed,
                                const im_sweep_bayes_opts_t *tpe, double *x) {
  if (c->method == IM_SWEEP_GRID) return im_sweep_grid_point(c, (int64_t)n, x);
  if (c->method == IM_SWEEP_BAYES)
    return tpe && tpe->tpe ? im__sweep_tpe(c, hist, n, seed, tpe, x) : im__sweep_gp(c, hist, n, seed, tpe, x);
  im_rng_t r;
  im_rng_seed(&r, im_rng_derive(seed, (uint64_t)n));
  for (size_t i = 0; i < c->n_params; i++) x[i] = im_sweep_param_sample(&c->params[i], &r);
  return IM_OK;
}

im_status_t im_sweep_suggest(const im_sweep_config_t *c, const im_sweep_obs_t *hist, size_t n, uint64_t seed,
                             double *x) {
  return im_sweep_suggest_ex(c, hist, n, seed, NULL, x);
}

/* ---- points as JSON -------------------------------------------------------------------- */
static json_t *param_value(const im_sweep_param_t *p, double x) {
  if (p->dist == IM_SWEEP_CONSTANT || im__sweep_is_categorical(p->dist)) {
    size_t k = p->dist == IM_SWEEP_CONSTANT ? 0 : (size_t)x;
    if (k >= p->n_values) k = 0;
    return json_loads(p->values[k], JSON_DECODE_ANY, NULL);
  }
  if (p->int_valued && fabs(x) < 9e15) return json_integer((json_int_t)llround(x));
  return json_real(x);
}

char *im_sweep_point_json(const im_sweep_config_t *c, const double *x) {
  json_t *root = json_object();
  int ok = root != NULL;
  for (size_t i = 0; ok && i < c->n_params; i++) {
    const char *name = c->params[i].name;
    json_t *obj = root;
    char part[256];
    for (const char *dot; ok && (dot = strchr(name, '.'));) {
      size_t l = (size_t)(dot - name);
      if (l >= sizeof part) l = sizeof part - 1;
      memcpy(part, name, l);
      part[l] = 0;
      json_t *sub = json_object_get(obj, part);
      if (!sub || !json_is_object(sub)) {
        sub = json_object();
        ok = sub && json_object_set_new(obj, part, sub) == 0;
      }
      obj = sub;
      name = dot + 1;
    }
    json_t *v = ok ? param_value(&c->params[i], x[i]) : NULL;
    ok = ok && v && json_object_set_new(obj, name, v) == 0;
  }
  char *s = ok ? json_dumps(root, JSON_COMPACT | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(17)) : NULL;
  json_decref(root);
  char *r = s ? im_strdup(s) : NULL;
  free(s);
  return r;
}

const void *im__sweep_json_lookup(const void *root_, const char *name) {
  const json_t *root = root_;
  const json_t *v = json_object_get(root, name);
  if (v) return v;
  char part[256];
  const json_t *obj = root;
  for (const char *dot; obj && (dot = strchr(name, '.'));) {
    size_t l = (size_t)(dot - name);
    if (l >= sizeof part) return NULL;
    memcpy(part, name, l);
    part[l] = 0;
    obj = json_object_get(obj, part);
    name = dot + 1;
  }
  return obj ? json_object_get(obj, name) : NULL;
}

char *im_sweep_params_value(const char *params_json, const char *name) {
  json_t *root = json_loads(params_json ? params_json : "", 0, NULL);
  const json_t *v = root ? im__sweep_json_lookup(root, name) : NULL;
  char *s = v ? json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT | JSON_REAL_PRECISION(17)) : NULL;
  char *r = s ? im_strdup(s) : NULL;
  free(s);
  json_decref(root);
  return r;
}

im_status_t im_sweep_point_parse(const im_sweep_config_t *c, const char *text, double *x) {
  json_error_t err;
  json_t *root = json_loads(text ? text : "", 0, &err);
  if (!root || !json_is_object(root)) {
    json_decref(root);
    return im_error(IM_ERR_FORMAT, "trial parameters are not a JSON object");
  }
  im_status_t st = IM_OK;
  for (size_t i = 0; st == IM_OK && i < c->n_params; i++) {
    const im_sweep_param_t *p = &c->params[i];
    const json_t *v = im__sweep_json_lookup(root, p->name);
    x[i] = 0;
    if (!v) {
      if (p->dist != IM_SWEEP_CONSTANT) st = im_error(IM_ERR_FORMAT, "trial parameters lack '%s'", p->name);
    } else if (im__sweep_is_categorical(p->dist)) {
      char *s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
      size_t k = 0;
      while (s && k < p->n_values && strcmp(p->values[k], s)) k++;
      if (!s || k == p->n_values) st = im_error(IM_ERR_FORMAT, "'%s' is not one of the choices of %s", s ? s : "?", p->name);
      x[i] = (double)k;
      free(s);
    } else if (p->dist != IM_SWEEP_CONSTANT) {
      if (!json_is_number(v)) st = im_error(IM_ERR_FORMAT, "'%s' must be a number", p->name);
      else x[i] = json_number_value(v);
    }
  }
  json_decref(root);
  return st;
}
