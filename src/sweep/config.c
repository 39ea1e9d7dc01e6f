/* The W&B sweep configuration: parsing the YAML (positions kept for errors
 * such as "sweep.yaml:7:5: parameters.lr: min (0.1) must be less than max"),
 * inferring each parameter's distribution the way wandb/sweeps does, nested
 * parameters flattened with ".", and the early_terminate block. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "imops/sweep.h"
#include "imops/yaml.h"
#include "sweep/sweep_impl.h"

static const char *const dist_names[IM_SWEEP_NDIST] = {
    "constant",       "categorical",        "categorical_w_probabilities", "int_uniform",
    "uniform",        "q_uniform",          "log_uniform_values",          "q_log_uniform_values",
    "inv_log_uniform_values", "log_uniform", "q_log_uniform",              "inv_log_uniform",
    "normal",         "q_normal",           "log_normal",                  "q_log_normal",
    "beta",           "q_beta"};

const char *im_sweep_dist_name(im_sweep_dist_t d) {
  return (unsigned)d < IM_SWEEP_NDIST ? dist_names[d] : "?";
}

int im_sweep_dist_parse(const char *s) {
  for (int i = 0; s && i < IM_SWEEP_NDIST; i++)
    if (!strcmp(s, dist_names[i])) return i;
  return -1;
}

const char *im_sweep_method_name(im_sweep_method_t m) {
  return m == IM_SWEEP_GRID ? "grid" : m == IM_SWEEP_RANDOM ? "random" : m == IM_SWEEP_BAYES ? "bayes" : "?";
}

typedef struct {
  const char *src;
  im_sweep_config_t *c;
  size_t cap;
} parser_t;

static im_status_t perr(parser_t *p, const im_yaml_node_t *n, const char *key, const char *fmt, ...)
    IM_PRINTF(4, 5);
static im_status_t perr(parser_t *p, const im_yaml_node_t *n, const char *key, const char *fmt, ...) {
  char msg[512];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  return im_error(IM_ERR_ARG, "%s:%d:%d: %s%s%s", p->src, n ? n->line : 1, n ? n->col : 1, key ? key : "",
                  key ? ": " : "", msg);
}

void im_sweep_config_free(im_sweep_config_t *c) {
  if (!c) return;
  for (size_t i = 0; i < c->n_params; i++) {
    im_sweep_param_t *p = &c->params[i];
    im_free(p->name);
    for (size_t k = 0; k < p->n_values; k++) im_free(p->values[k]);
    im_free(p->values);
    im_free(p->probs);
  }
  im_free(c->params);
  im_free(c->metric_name), im_free(c->program), im_free(c->name), im_free(c->description);
  for (size_t i = 0; i < c->n_command; i++) im_free(c->command[i]);
  im_free(c->command);
  im_free(c->json);
  im_free(c->source);
  im_free(c);
}

int im_sweep_config_find(const im_sweep_config_t *c, const char *name) {
  for (size_t i = 0; c && name && i < c->n_params; i++)
    if (!strcmp(c->params[i].name, name)) return (int)i;
  return -1;
}

static int in_list(const char *k, const char *const *list) {
  for (; *list; list++)
    if (!strcmp(k, *list)) return 1;
  return 0;
}

/* A scalar's text as JSON ("adam" -> "\"adam\"", 32 -> "32"). */
static char *scalar_json(const im_yaml_node_t *n) {
  json_t *j = im_yaml_to_json(n);
  if (!j) return NULL;
  char *s = json_dumps(j, JSON_ENCODE_ANY | JSON_COMPACT);
  json_decref(j);
  if (!s) return NULL;
  char *r = im_strdup(s);
  free(s);
  return r;
}

static int valid_name(const char *s) {
  if (!s || !((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || *s == '_')) return 0;
  for (s++; *s; s++)
    if (!((*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') || (*s >= '0' && *s <= '9') || *s == '_' ||
          *s == '-'))
      return 0;
  return 1;
}

static im_status_t num(parser_t *p, const im_yaml_node_t *spec, const char *key, const char *pname, double *out,
                       int *is_int) {
  const im_yaml_node_t *n = im_yaml_map_get(spec, key);
  if (!n) return IM_ERR_NOT_FOUND;
  char k[300];
  snprintf(k, sizeof k, "%s.%s", pname, key);
  if (!im_yaml_is_number(n) || !isfinite(n->d)) return perr(p, n, k, "must be a finite number");
  *out = n->d;
  if (is_int) *is_int = n->type == IM_YAML_INT;
  return IM_OK;
}

static im_status_t parse_params(parser_t *p, const im_yaml_node_t *map, const char *prefix);

static im_status_t parse_param(parser_t *p, const char *full, const im_yaml_node_t *spec) {
  static const char *const keys[] = {"distribution", "value", "values", "probabilities", "min", "max", "mu",
                                     "sigma", "q", "a", "b", "parameters", NULL};
  char key[300];
  snprintf(key, sizeof key, "parameters.%s", full);
  if (spec->kind != IM_YAML_MAP) return perr(p, spec, key, "a parameter must be a mapping (value, values, distribution, ...)");
  for (size_t i = 0; i < spec->n; i++)
    if (!in_list(spec->keys[i]->str, keys))
      return perr(p, spec->keys[i], key,
                  "unknown key '%s' (expected distribution, value, values, probabilities, min, max, mu, sigma, q, a, b "
                  "or parameters)", spec->keys[i]->str);
  const im_yaml_node_t *nested = im_yaml_map_get(spec, "parameters");
  if (nested) {
    if (spec->n != 1) return perr(p, spec, key, "a nested parameter has only 'parameters'");
    return parse_params(p, nested, full);
  }
  if (p->c->n_params == p->cap) {
    size_t nc = p->cap ? 2 * p->cap : 8;
    im_sweep_param_t *np = im_realloc(p->c->params, nc * sizeof *np);
    if (!np) return im_error(IM_ERR_NOMEM, "out of memory");
    p->c->params = np;
    p->cap = nc;
  }
  im_sweep_param_t *pa = &p->c->params[p->c->n_params++];
  memset(pa, 0, sizeof *pa);
  pa->line = spec->line, pa->col = spec->col;
  if (!(pa->name = im_strdup(full))) return im_error(IM_ERR_NOMEM, "out of memory");
  const im_yaml_node_t *dn = im_yaml_map_get(spec, "distribution"), *value = im_yaml_map_get(spec, "value"),
                       *values = im_yaml_map_get(spec, "values"), *probs = im_yaml_map_get(spec, "probabilities");
  int d;
  im_status_t st;
  int min_int = 0, max_int = 0, q_int = 0;
  int has_min = (st = num(p, spec, "min", key, &pa->min, &min_int)) == IM_OK;
  if (st && st != IM_ERR_NOT_FOUND) return st;
  int has_max = (st = num(p, spec, "max", key, &pa->max, &max_int)) == IM_OK;
  if (st && st != IM_ERR_NOT_FOUND) return st;
  pa->mu = 0, pa->sigma = 1, pa->q = 1, pa->a = 1, pa->b = 1;
  q_int = 1;
  int has_mu = (st = num(p, spec, "mu", key, &pa->mu, NULL)) == IM_OK;
  if (st && st != IM_ERR_NOT_FOUND) return st;
  int has_sigma = (st = num(p, spec, "sigma", key, &pa->sigma, NULL)) == IM_OK;
  if (st && st != IM_ERR_NOT_FOUND) return st;
  if ((st = num(p, spec, "q", key, &pa->q, &q_int)) && st != IM_ERR_NOT_FOUND) return st;
  if ((st = num(p, spec, "a", key, &pa->a, NULL)) && st != IM_ERR_NOT_FOUND) return st;
  if ((st = num(p, spec, "b", key, &pa->b, NULL)) && st != IM_ERR_NOT_FOUND) return st;
  if (dn) {
    if (!im_yaml_is(dn, IM_YAML_STR) || (d = im_sweep_dist_parse(dn->str)) < 0)
      return perr(p, dn, key, "unknown distribution '%s'", dn->kind == IM_YAML_SCALAR ? dn->str : "?");
    if (d == IM_SWEEP_CATEGORICAL && probs) d = IM_SWEEP_CATEGORICAL_W_PROBABILITIES;
  } else if (value) {
    d = IM_SWEEP_CONSTANT;
  } else if (values) {
    d = probs ? IM_SWEEP_CATEGORICAL_W_PROBABILITIES : IM_SWEEP_CATEGORICAL;
  } else if (has_min && has_max) {
    d = min_int && max_int ? IM_SWEEP_INT_UNIFORM : IM_SWEEP_UNIFORM;
  } else if (has_mu || has_sigma) {
    d = IM_SWEEP_NORMAL;
  } else {
    return perr(p, spec, key, "cannot tell the distribution: give value, values, min and max, or distribution");
  }
  pa->dist = (im_sweep_dist_t)d;
  /* what each distribution needs */
  switch (pa->dist) {
    case IM_SWEEP_CONSTANT:
      if (!value) return perr(p, spec, key, "distribution constant needs 'value'");
      if (value->kind != IM_YAML_SCALAR) return perr(p, value, key, "'value' must be a scalar");
      pa->n_values = 1;
      pa->values = im_calloc(1, sizeof(char *));
      if (!pa->values || !(pa->values[0] = scalar_json(value))) return im_error(IM_ERR_NOMEM, "out of memory");
      break;
    case IM_SWEEP_CATEGORICAL:
    case IM_SWEEP_CATEGORICAL_W_PROBABILITIES:
      if (!values || values->kind != IM_YAML_SEQ || values->n == 0)
        return perr(p, values ? values : spec, key, "'values' must be a non-empty list");
      if (values->n > 100000) return perr(p, values, key, "too many values");
      pa->n_values = values->n;
      if (!(pa->values = im_calloc(values->n, sizeof(char *)))) return im_error(IM_ERR_NOMEM, "out of memory");
      for (size_t i = 0; i < values->n; i++) {
        if (values->items[i]->kind != IM_YAML_SCALAR)
          return perr(p, values->items[i], key, "values must be scalars (numbers, strings, booleans)");
        if (!(pa->values[i] = scalar_json(values->items[i]))) return im_error(IM_ERR_NOMEM, "out of memory");
        for (size_t k = 0; k < i; k++)
          if (!strcmp(pa->values[k], pa->values[i]))
            return perr(p, values->items[i], key, "value %s appears twice", pa->values[i]);
      }
      if (pa->dist == IM_SWEEP_CATEGORICAL_W_PROBABILITIES) {
        if (!probs || probs->kind != IM_YAML_SEQ || probs->n != values->n)
          return perr(p, probs ? probs : spec, key, "'probabilities' must be a list as long as 'values' (%zu)",
                      values->n);
        if (!(pa->probs = im_calloc(probs->n, sizeof(double)))) return im_error(IM_ERR_NOMEM, "out of memory");
        double sum = 0;
        for (size_t i = 0; i < probs->n; i++) {
          const im_yaml_node_t *x = probs->items[i];
          if (!im_yaml_is_number(x) || !(x->d >= 0 && x->d <= 1))
            return perr(p, x, key, "probabilities must be numbers in [0, 1]");
          sum += pa->probs[i] = x->d;
        }
        if (fabs(sum - 1) > 1e-6) return perr(p, probs, key, "probabilities must sum to 1 (they sum to %g)", sum);
      } else if (probs) {
        return perr(p, probs, key, "'probabilities' needs distribution categorical_w_probabilities or categorical");
      }
      break;
    case IM_SWEEP_INT_UNIFORM:
      if (!has_min || !has_max) return perr(p, spec, key, "int_uniform needs min and max");
      if (!min_int || !max_int) return perr(p, spec, key, "int_uniform needs integer min and max");
      pa->int_valued = 1;
      if (pa->min > pa->max) return perr(p, spec, key, "min (%g) must not be greater than max (%g)", pa->min, pa->max);
      if (pa->max - pa->min >= 4294967295.0) return perr(p, spec, key, "int_uniform range too large (more than 2^32 values)");
      break;
    case IM_SWEEP_NORMAL:
    case IM_SWEEP_Q_NORMAL:
    case IM_SWEEP_LOG_NORMAL:
    case IM_SWEEP_Q_LOG_NORMAL:
      if (!(pa->sigma >= 0)) return perr(p, spec, key, "sigma must not be negative");
      break;
    case IM_SWEEP_BETA:
    case IM_SWEEP_Q_BETA:
      if (!(pa->a > 0 && pa->b > 0)) return perr(p, spec, key, "a and b must be positive");
      break;
    default: /* the bounded continuous kinds */
      if (!has_min || !has_max) return perr(p, spec, key, "distribution %s needs min and max", dist_names[pa->dist]);
      if (pa->min >= pa->max) return perr(p, spec, key, "min (%g) must be less than max (%g)", pa->min, pa->max);
      if ((pa->dist == IM_SWEEP_LOG_UNIFORM_VALUES || pa->dist == IM_SWEEP_Q_LOG_UNIFORM_VALUES ||
           pa->dist == IM_SWEEP_INV_LOG_UNIFORM_VALUES) && pa->min <= 0)
        return perr(p, spec, key, "%s needs min > 0 (got %g)", dist_names[pa->dist], pa->min);
      if ((pa->dist == IM_SWEEP_LOG_UNIFORM || pa->dist == IM_SWEEP_Q_LOG_UNIFORM || pa->dist == IM_SWEEP_INV_LOG_UNIFORM) &&
          (fabs(pa->min) > 700 || fabs(pa->max) > 700))
        return perr(p, spec, key, "%s takes exponents: min and max must be within [-700, 700]", dist_names[pa->dist]);
      break;
  }
  if (im__sweep_is_q(pa->dist)) {
    if (!(pa->q > 0)) return perr(p, spec, key, "q must be positive");
    pa->int_valued = q_int;
  }
  /* keys that do not belong to the distribution */
  struct { const char *k; int ok; } use[] = {
      {"value", pa->dist == IM_SWEEP_CONSTANT},
      {"values", pa->dist == IM_SWEEP_CATEGORICAL || pa->dist == IM_SWEEP_CATEGORICAL_W_PROBABILITIES},
      {"probabilities", pa->dist == IM_SWEEP_CATEGORICAL_W_PROBABILITIES},
      {"min", im__sweep_is_bounded(pa->dist)},
      {"max", im__sweep_is_bounded(pa->dist)},
      {"mu", im__sweep_is_normal(pa->dist)},
      {"sigma", im__sweep_is_normal(pa->dist)},
      {"q", im__sweep_is_q(pa->dist)},
      {"a", pa->dist == IM_SWEEP_BETA || pa->dist == IM_SWEEP_Q_BETA},
      {"b", pa->dist == IM_SWEEP_BETA || pa->dist == IM_SWEEP_Q_BETA}};
  for (size_t i = 0; i < sizeof use / sizeof use[0]; i++) {
    const im_yaml_node_t *n = im_yaml_map_get(spec, use[i].k);
    if (n && !use[i].ok)
      return perr(p, n, key, "'%s' does not apply to distribution %s", use[i].k, dist_names[pa->dist]);
  }
  return IM_OK;
}

static im_status_t parse_params(parser_t *p, const im_yaml_node_t *map, const char *prefix) {
  char key[300];
  snprintf(key, sizeof key, "parameters%s%s", prefix ? "." : "", prefix ? prefix : "");
  if (map->kind != IM_YAML_MAP || map->n == 0) return perr(p, map, key, "must be a non-empty mapping of parameters");
  for (size_t i = 0; i < map->n; i++) {
    const char *nm = map->keys[i]->str;
    if (!valid_name(nm)) return perr(p, map->keys[i], key, "bad parameter name '%s' (letters, digits, _ and -)", nm);
    char full[256];
    if (snprintf(full, sizeof full, "%s%s%s", prefix ? prefix : "", prefix ? "." : "", nm) >= (int)sizeof full)
      return perr(p, map->keys[i], key, "parameter name too long");
    if (im_sweep_config_find(p->c, full) >= 0) return perr(p, map->keys[i], key, "parameter '%s' given twice", full);
    im_status_t st = parse_param(p, full, map->items[i]);
    if (st) return st;
  }
  return IM_OK;
}

static im_status_t get_str(parser_t *p, const im_yaml_node_t *root, const char *key, char **out) {
  const im_yaml_node_t *n = im_yaml_map_get(root, key);
  if (!n) return IM_OK;
  if (!im_yaml_is(n, IM_YAML_STR)) return perr(p, n, key, "must be a string");
  if (!(*out = im_strdup(n->str))) return im_error(IM_ERR_NOMEM, "out of memory");
  return IM_OK;
}

static im_status_t parse_early(parser_t *p, const im_yaml_node_t *et) {
  im_sweep_config_t *c = p->c;
  if (et->kind != IM_YAML_MAP) return perr(p, et, "early_terminate", "must be a mapping");
  static const char *const keys[] = {"type", "min_iter", "max_iter", "s", "eta", "strict", NULL};
  for (size_t i = 0; i < et->n; i++)
    if (!in_list(et->keys[i]->str, keys))
      return perr(p, et->keys[i], "early_terminate", "unknown key '%s' (type, min_iter, max_iter, s, eta, strict)",
                  et->keys[i]->str);
  const im_yaml_node_t *t = im_yaml_map_get(et, "type");
  if (!t || !im_yaml_is(t, IM_YAML_STR) || strcmp(t->str, "hyperband"))
    return perr(p, t ? t : et, "early_terminate.type", "must be hyperband");
  c->hyperband = 1;
  c->hb_eta = 3;
  c->hb_strict = 1;
  const char *ints[] = {"min_iter", "max_iter", "s"};
  int64_t *dst[] = {&c->hb_min_iter, &c->hb_max_iter, &c->hb_s};
  for (int i = 0; i < 3; i++) {
    const im_yaml_node_t *n = im_yaml_map_get(et, ints[i]);
    char k[64];
    snprintf(k, sizeof k, "early_terminate.%s", ints[i]);
    if (n && (!im_yaml_is(n, IM_YAML_INT) || n->i < 1 || n->i > 1000000000)) return perr(p, n, k, "must be a positive integer");
    if (n) *dst[i] = n->i;
  }
  const im_yaml_node_t *eta = im_yaml_map_get(et, "eta"), *strict = im_yaml_map_get(et, "strict");
  if (eta && (!im_yaml_is_number(eta) || !(eta->d > 1) || eta->d > 1e6))
    return perr(p, eta, "early_terminate.eta", "must be a number greater than 1");
  if (eta) c->hb_eta = eta->d;
  if (strict && !im_yaml_is(strict, IM_YAML_BOOL)) return perr(p, strict, "early_terminate.strict", "must be true or false");
  if (strict) c->hb_strict = (int)strict->i;
  if (!c->hb_min_iter && !c->hb_max_iter) return perr(p, et, "early_terminate", "needs min_iter, or max_iter and s");
  if (c->hb_min_iter && c->hb_max_iter) return perr(p, et, "early_terminate", "give min_iter or max_iter, not both");
  if (c->hb_max_iter && !c->hb_s) return perr(p, et, "early_terminate", "max_iter needs s");
  if (c->hb_s && !c->hb_max_iter) return perr(p, et, "early_terminate.s", "s goes with max_iter");
  return IM_OK;
}

static im_status_t parse_root(parser_t *p, const im_yaml_node_t *root) {
  static const char *const keys[] = {"method", "metric", "metrics", "parameters", "early_terminate", "run_cap",
                                     "program", "command", "name", "description", "project", "entity",
                                     "controller", "job", "image_uri", "apiVersion", "kind", NULL};
  im_sweep_config_t *c = p->c;
  if (root->kind != IM_YAML_MAP) return perr(p, root, NULL, "a sweep config must be a mapping (method, metric, parameters, ...)");
  for (size_t i = 0; i < root->n; i++)
    if (!in_list(root->keys[i]->str, keys))
      return perr(p, root->keys[i], root->keys[i]->str,
                  "unknown key (expected method, metric, parameters, early_terminate, run_cap, program, command, name, "
                  "description, project, entity, ...)");
  const im_yaml_node_t *m = im_yaml_map_get(root, "method");
  if (!m) return perr(p, root, "method", "is required (grid, random or bayes)");
  if (!im_yaml_is(m, IM_YAML_STR)) return perr(p, m, "method", "must be grid, random or bayes");
  if (!strcmp(m->str, "grid")) c->method = IM_SWEEP_GRID;
  else if (!strcmp(m->str, "random")) c->method = IM_SWEEP_RANDOM;
  else if (!strcmp(m->str, "bayes")) c->method = IM_SWEEP_BAYES;
  else if (!strcmp(m->str, "custom")) return perr(p, m, "method", "custom (an external scheduler) is not supported; use grid, random or bayes");
  else return perr(p, m, "method", "unknown method '%s' (grid, random or bayes)", m->str);
  const im_yaml_node_t *ms = im_yaml_map_get(root, "metrics");
  if (ms) return perr(p, ms, "metrics", "several metrics need method custom, which is not supported; use 'metric'");
  const im_yaml_node_t *met = im_yaml_map_get(root, "metric");
  if (met) {
    static const char *const mk[] = {"name", "goal", "target", "impute", "impute_while_running", NULL};
    if (met->kind != IM_YAML_MAP) return perr(p, met, "metric", "must be a mapping with name, goal, target");
    for (size_t i = 0; i < met->n; i++)
      if (!in_list(met->keys[i]->str, mk))
        return perr(p, met->keys[i], "metric", "unknown key '%s' (name, goal, target)", met->keys[i]->str);
    const im_yaml_node_t *nm = im_yaml_map_get(met, "name"), *g = im_yaml_map_get(met, "goal"),
                         *t = im_yaml_map_get(met, "target");
    if (!nm || !im_yaml_is(nm, IM_YAML_STR) || !*nm->str) return perr(p, nm ? nm : met, "metric.name", "is required (a string)");
    if (!(c->metric_name = im_strdup(nm->str))) return im_error(IM_ERR_NOMEM, "out of memory");
    if (g) {
      if (!im_yaml_is(g, IM_YAML_STR) || (strcmp(g->str, "minimize") && strcmp(g->str, "maximize")))
        return perr(p, g, "metric.goal", "must be minimize or maximize");
      c->maximize = !strcmp(g->str, "maximize");
    }
    if (t) {
      if (!im_yaml_is_number(t) || !isfinite(t->d)) return perr(p, t, "metric.target", "must be a number");
      c->has_target = 1, c->target = t->d;
    }
  } else if (c->method == IM_SWEEP_BAYES) {
    return perr(p, root, "metric", "method bayes needs a metric to optimize");
  }
  const im_yaml_node_t *pr = im_yaml_map_get(root, "parameters");
  if (!pr) return perr(p, root, "parameters", "is required");
  im_status_t st = parse_params(p, pr, NULL);
  if (st) return st;
  const im_yaml_node_t *rc = im_yaml_map_get(root, "run_cap");
  if (rc) {
    if (!im_yaml_is(rc, IM_YAML_INT) || rc->i < 1) return perr(p, rc, "run_cap", "must be a positive integer");
    c->run_cap = rc->i;
  }
  const im_yaml_node_t *et = im_yaml_map_get(root, "early_terminate");
  if (et && (st = parse_early(p, et))) return st;
  if ((st = get_str(p, root, "program", &c->program)) || (st = get_str(p, root, "name", &c->name)) ||
      (st = get_str(p, root, "description", &c->description)))
    return st;
  static const char *const strkeys[] = {"project", "entity", "job", "image_uri", "apiVersion", "kind"};
  for (size_t i = 0; i < 6; i++) {
    const im_yaml_node_t *n = im_yaml_map_get(root, strkeys[i]);
    if (n && !im_yaml_is(n, IM_YAML_STR)) return perr(p, n, strkeys[i], "must be a string");
  }
  const im_yaml_node_t *cmd = im_yaml_map_get(root, "command");
  if (cmd) {
    if (cmd->kind != IM_YAML_SEQ) return perr(p, cmd, "command", "must be a list of strings and macros");
    if (!(c->command = im_calloc(cmd->n + 1, sizeof(char *)))) return im_error(IM_ERR_NOMEM, "out of memory");
    for (size_t i = 0; i < cmd->n; i++) {
      if (cmd->items[i]->kind != IM_YAML_SCALAR) return perr(p, cmd->items[i], "command", "items must be strings");
      if (!(c->command[i] = im_strdup(cmd->items[i]->str))) return im_error(IM_ERR_NOMEM, "out of memory");
      c->n_command = i + 1;
    }
  }
  if (c->method == IM_SWEEP_GRID) {
    int64_t n = 0;
    if ((st = im_sweep_grid_count(c, &n))) return st;
  }
  return IM_OK;
}

im_status_t im_sweep_config_parse(const char *text, size_t len, const char *name, im_sweep_config_t **out) {
  *out = NULL;
  if (!name) name = "<sweep>";
  im_yaml_doc_t *d = NULL;
  im_status_t st = im_yaml_parse(text, len, name, &d);
  if (st) return st;
  im_sweep_config_t *c = im_calloc(1, sizeof *c);
  parser_t p = {.src = name, .c = c};
  if (!c || !(c->source = im_strdup(name))) st = im_error(IM_ERR_NOMEM, "out of memory");
  if (st == IM_OK) st = parse_root(&p, im_yaml_root(d));
  if (st == IM_OK) {
    json_t *j = im_yaml_to_json(im_yaml_root(d));
    char *s = j ? json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    json_decref(j);
    if (!s || !(c->json = im_strdup(s))) st = im_error(IM_ERR_NOMEM, "out of memory");
    free(s);
  }
  im_yaml_free(d);
  if (st) {
    im_sweep_config_free(c);
    return st;
  }
  *out = c;
  return IM_OK;
}

im_status_t im_sweep_config_load(const char *path, im_sweep_config_t **out) {
  *out = NULL;
  uint8_t *data = NULL;
  size_t len = 0;
  im_status_t st = im_file_read(path, 16u << 20, &data, &len);
  if (st) return im_error(st, "%s: %s", path, im_last_error());
  st = im_sweep_config_parse((const char *)data, len, path, out);
  im_free(data);
  return st;
}
