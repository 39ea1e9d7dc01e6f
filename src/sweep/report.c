/* Sweep results: parameter importance (Pearson correlation with the metric,
 * as W&B shows it, and Spearman rank correlation), the SVG plots logged to
 * the sweep's parent run (metric per trial with the best so far; parallel
 * coordinates), and the export as a Kubeflow Katib Experiment. */
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imops/yaml.h"
#include "sweep/sweep_impl.h"

/* ---- importance -------------------------------------------------------------------- */
static double pearson(const double *a, const double *b, size_t n) {
  double ma = 0, mb = 0, sab = 0, saa = 0, sbb = 0;
  for (size_t i = 0; i < n; i++) ma += a[i], mb += b[i];
  ma /= (double)n, mb /= (double)n;
  for (size_t i = 0; i < n; i++) {
    sab += (a[i] - ma) * (b[i] - mb);
    saa += (a[i] - ma) * (a[i] - ma);
    sbb += (b[i] - mb) * (b[i] - mb);
  }
  return saa > 0 && sbb > 0 ? sab / sqrt(saa * sbb) : 0;
}

typedef struct {
  double v;
  size_t i;
} iv_t;
static int by_v(const void *a, const void *b) {
  double u = ((const iv_t *)a)->v, w = ((const iv_t *)b)->v;
  return u < w ? -1 : u > w ? 1 : 0;
}

/* Average ranks (ties share their mean rank). */
static void ranks(const double *v, size_t n, double *out, iv_t *tmp) {
  for (size_t i = 0; i < n; i++) tmp[i] = (iv_t){v[i], i};
  qsort(tmp, n, sizeof *tmp, by_v);
  for (size_t i = 0; i < n;) {
    size_t j = i;
    while (j + 1 < n && tmp[j + 1].v == tmp[i].v) j++;
    for (size_t k = i; k <= j; k++) out[tmp[k].i] = 0.5 * (double)(i + j) + 1;
    i = j + 1;
  }
}

void im_sweep_importance_free(im_sweep_importance_t *v, size_t n) {
  if (!v) return;
  for (size_t i = 0; i < n; i++) im_free(v[i].name);
  im_free(v);
}

im_status_t im_sweep_importance(const im_sweep_config_t *c, const double *const *xs, const double *ys, size_t n,
                                im_sweep_importance_t **out, size_t *nout) {
  *out = NULL, *nout = 0;
  im_sweep_importance_t *v = im_calloc(c->n_params + 1, sizeof *v);
  double *a = im_calloc(n + 1, sizeof *a), *ra = im_calloc(n + 1, sizeof *ra), *ry = im_calloc(n + 1, sizeof *ry);
  iv_t *tmp = im_calloc(n + 1, sizeof *tmp);
  if (!v || !a || !ra || !ry || !tmp) {
    im_free(v), im_free(a), im_free(ra), im_free(ry), im_free(tmp);
    return im_error(IM_ERR_NOMEM, "out of memory");
  }
  ranks(ys, n, ry, tmp);
  size_t m = 0;
  double total = 0;
  for (size_t j = 0; j < c->n_params; j++) {
    const im_sweep_param_t *p = &c->params[j];
    if (!im_sweep_param_searchable(p)) continue;
    if (im__sweep_is_categorical(p->dist)) {
      /* a category's value: the mean metric rank of its trials (so the correlation is the best monotone one) */
      for (size_t i = 0; i < n; i++) {
        double s = 0, k = 0;
        for (size_t t = 0; t < n; t++)
          if (xs[t][j] == xs[i][j]) s += ry[t], k++;
        a[i] = s / k;
      }
    } else {
      for (size_t i = 0; i < n; i++) a[i] = im__sweep_encode(p, xs[i][j]);
    }
    ranks(a, n, ra, tmp);
    v[m].name = im_strdup(p->name);
    v[m].correlation = n > 1 ? pearson(a, ys, n) : 0;
    v[m].rank_correlation = n > 1 ? pearson(ra, ry, n) : 0;
    total += fabs(v[m].rank_correlation);
    m++;
  }
  for (size_t j = 0; j < m; j++) v[j].importance = total > 0 ? fabs(v[j].rank_correlation) / total : 0;
  im_free(a), im_free(ra), im_free(ry), im_free(tmp);
  for (size_t j = 0; j < m; j++)
    if (!v[j].name) {
      im_sweep_importance_free(v, m);
      return im_error(IM_ERR_NOMEM, "out of memory");
    }
  *out = v, *nout = m;
  return IM_OK;
}

/* ---- plots ---------------------------------------------------------------------------- */
static im_status_t svg_end(im_buf_t *b, im_status_t st, const char *path) {
  if (st == IM_OK) st = im_buf_printf(b, "</svg>\n");
  if (st == IM_OK) st = im_file_write_atomic(path, b->data, b->len);
  im_buf_free(b);
  return st;
}

static void range(const double *v, size_t n, double *lo, double *hi) {
  *lo = INFINITY, *hi = -INFINITY;
  for (size_t i = 0; i < n; i++)
    if (isfinite(v[i])) *lo = fmin(*lo, v[i]), *hi = fmax(*hi, v[i]);
  if (!isfinite(*lo)) *lo = 0, *hi = 1;
  if (*hi - *lo < 1e-12) *lo -= 0.5, *hi += 0.5;
}

im_status_t im_sweep_plot_metric(const char *path, const im_sweep_config_t *c, const int64_t *trials, const double *ys,
                                 size_t n) {
  im_buf_t b = {0};
  const double W = 640, H = 360, L = 70, R = W - 20, T = 40, B = H - 45;
  const char *metric = c->metric_name ? c->metric_name : "metric";
  double lo, hi;
  range(ys, n, &lo, &hi);
  double t0 = n ? (double)trials[0] : 1, t1 = n ? (double)trials[n - 1] : 2;
  if (t1 <= t0) t1 = t0 + 1;
  im_status_t st = im_buf_printf(&b,
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" font-family=\"sans-serif\">\n"
      "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
      "<text x=\"%.1f\" y=\"22\" font-size=\"15\" text-anchor=\"middle\">%s per trial (%s)</text>\n"
      "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#999\"/>\n"
      "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"middle\">trial</text>\n",
      W, H, W / 2, metric, c->maximize ? "maximize" : "minimize", L, T, R - L, B - T, (L + R) / 2, H - 10);
  for (int k = 0; k <= 4 && st == IM_OK; k++) {
    double v = lo + (hi - lo) * k / 4, y = B - (B - T) * k / 4;
    st = im_buf_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/><text x=\"%.1f\" "
                       "y=\"%.1f\" font-size=\"10\" text-anchor=\"end\">%.4g</text>\n", L, y, R, y, L - 4, y + 3, v);
  }
  if (st == IM_OK) st = im_buf_printf(&b, "<polyline fill=\"none\" stroke=\"#d62728\" stroke-width=\"2\" points=\"");
  double best = NAN;
  for (size_t i = 0; i < n && st == IM_OK; i++) {
    if (isfinite(ys[i]) && (isnan(best) || (c->maximize ? ys[i] > best : ys[i] < best))) best = ys[i];
    if (isnan(best)) continue;
    double x = L + (R - L) * ((double)trials[i] - t0) / (t1 - t0), y = B - (B - T) * (best - lo) / (hi - lo);
    st = im_buf_printf(&b, "%.1f,%.1f ", x, y);
  }
  if (st == IM_OK) st = im_buf_printf(&b, "\"/>\n");
  for (size_t i = 0; i < n && st == IM_OK; i++) {
    if (!isfinite(ys[i])) continue;
    double x = L + (R - L) * ((double)trials[i] - t0) / (t1 - t0), y = B - (B - T) * (ys[i] - lo) / (hi - lo);
    st = im_buf_printf(&b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"#1f77b4\"><title>trial %lld: %g</title></circle>\n",
                       x, y, (long long)trials[i], ys[i]);
  }
  if (st == IM_OK)
    st = im_buf_printf(&b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"#d62728\">best so far</text>\n", R - 80, T + 14);
  return svg_end(&b, st, path);
}

im_status_t im_sweep_plot_parallel(const char *path, const im_sweep_config_t *c, const double *const *xs,
                                   const double *ys, size_t n) {
  im_buf_t b = {0};
  size_t axes = 1;
  for (size_t j = 0; j < c->n_params; j++) axes += im_sweep_param_searchable(&c->params[j]) ? 1 : 0;
  const double W = 140.0 * (double)axes + 80, H = 380, T = 50, B = H - 40, L = 60;
  double lo, hi;
  range(ys, n, &lo, &hi);
  im_status_t st = im_buf_printf(&b,
      "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%.0f\" height=\"%.0f\" font-family=\"sans-serif\">\n"
      "<rect width=\"100%%\" height=\"100%%\" fill=\"white\"/>\n"
      "<text x=\"%.1f\" y=\"20\" font-size=\"15\" text-anchor=\"middle\">parallel coordinates</text>\n", W, H, W / 2);
  size_t a = 0;
  for (size_t j = 0; j <= c->n_params && st == IM_OK; j++) {
    if (j < c->n_params && !im_sweep_param_searchable(&c->params[j])) continue;
    double x = L + 140.0 * (double)a++;
    const char *label = j < c->n_params ? c->params[j].name : (c->metric_name ? c->metric_name : "metric");
    st = im_buf_printf(&b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#555\"/>"
                       "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"middle\">", x, T, x, B, x, T - 10);
    for (const char *p = label; st == IM_OK && *p; p++)
      st = strchr("<>&\"", *p) ? im_buf_printf(&b, "&#%d;", *p) : im_buf_append(&b, p, 1);
    if (st == IM_OK) st = im_buf_printf(&b, "</text>\n");
  }
  for (size_t i = 0; i < n && st == IM_OK; i++) {
    double q = isfinite(ys[i]) ? (ys[i] - lo) / (hi - lo) : 0;
    if (!c->maximize) q = 1 - q; /* good = warm */
    int red = (int)(40 + 200 * q), blue = (int)(240 - 200 * q);
    st = im_buf_printf(&b, "<polyline fill=\"none\" stroke=\"rgb(%d,80,%d)\" stroke-opacity=\"0.8\" points=\"", red, blue);
    a = 0;
    for (size_t j = 0; j <= c->n_params && st == IM_OK; j++) {
      if (j < c->n_params && !im_sweep_param_searchable(&c->params[j])) continue;
      double u = j < c->n_params ? im__sweep_encode(&c->params[j], xs[i][j]) : (isfinite(ys[i]) ? (ys[i] - lo) / (hi - lo) : 0);
      st = im_buf_printf(&b, "%.1f,%.1f ", L + 140.0 * (double)a++, B - (B - T) * u);
    }
    if (st == IM_OK) st = im_buf_printf(&b, "\"/>\n");
  }
  return svg_end(&b, st, path);
}

/* ---- Katib ------------------------------------------------------------------------------- */
static json_t *str_num(double v) {
  char s[64];
  snprintf(s, sizeof s, "%.10g", v);
  return json_string(s);
}

/* "optimizer.lr" -> "optimizer_lr": Katib trial parameter names are plain words. */
static void plain(const char *name, char *out, size_t n) {
  snprintf(out, n, "%s", name);
  for (char *p = out; *p; p++)
    if (*p == '.' || *p == '-') *p = '_';
}

static im_status_t katib_param(const im_sweep_param_t *p, const char *name, json_t *params) {
  json_t *fs = json_object(), *o = json_object();
  const char *type = "double";
  switch (p->dist) {
    case IM_SWEEP_CATEGORICAL: {
      json_t *list = json_array();
      int numeric = 1;
      for (size_t i = 0; i < p->n_values; i++) {
        json_t *v = json_loads(p->values[i], JSON_DECODE_ANY, NULL);
        numeric &= json_is_number(v);
        json_array_append_new(list, json_is_string(v) ? json_string(json_string_value(v)) : json_string(p->values[i]));
        json_decref(v);
      }
      type = numeric ? "discrete" : "categorical";
      json_object_set_new(fs, "list", list);
      break;
    }
    case IM_SWEEP_INT_UNIFORM:
      type = "int";
      json_object_set_new(fs, "min", str_num(p->min));
      json_object_set_new(fs, "max", str_num(p->max));
      break;
    case IM_SWEEP_UNIFORM:
    case IM_SWEEP_Q_UNIFORM:
      type = p->int_valued && p->dist == IM_SWEEP_Q_UNIFORM ? "int" : "double";
      json_object_set_new(fs, "min", str_num(p->min));
      json_object_set_new(fs, "max", str_num(p->max));
      if (p->dist == IM_SWEEP_Q_UNIFORM) json_object_set_new(fs, "step", str_num(p->q));
      break;
    case IM_SWEEP_LOG_UNIFORM_VALUES:
    case IM_SWEEP_Q_LOG_UNIFORM_VALUES:
      json_object_set_new(fs, "min", str_num(p->min));
      json_object_set_new(fs, "max", str_num(p->max));
      json_object_set_new(fs, "distribution", json_string("logUniform"));
      break;
    case IM_SWEEP_LOG_UNIFORM:
    case IM_SWEEP_Q_LOG_UNIFORM:
      json_object_set_new(fs, "min", str_num(exp(p->min)));
      json_object_set_new(fs, "max", str_num(exp(p->max)));
      json_object_set_new(fs, "distribution", json_string("logUniform"));
      break;
    case IM_SWEEP_NORMAL:
    case IM_SWEEP_Q_NORMAL:
      json_object_set_new(fs, "min", str_num(p->mu - 3 * p->sigma));
      json_object_set_new(fs, "max", str_num(p->mu + 3 * p->sigma));
      json_object_set_new(fs, "distribution", json_string("normal"));
      break;
    case IM_SWEEP_LOG_NORMAL:
    case IM_SWEEP_Q_LOG_NORMAL:
      json_object_set_new(fs, "min", str_num(exp(p->mu - 3 * p->sigma)));
      json_object_set_new(fs, "max", str_num(exp(p->mu + 3 * p->sigma)));
      json_object_set_new(fs, "distribution", json_string("logNormal"));
      break;
    default:
      json_decref(fs), json_decref(o);
      return im_error(IM_ERR_UNSUPPORTED, "parameters.%s: Katib has no equivalent of distribution %s", name,
                      im_sweep_dist_name(p->dist));
  }
  json_object_set_new(o, "name", json_string(name));
  json_object_set_new(o, "parameterType", json_string(type));
  json_object_set_new(o, "feasibleSpace", fs);
  json_array_append_new(params, o);
  return IM_OK;
}

im_status_t im_sweep_katib_yaml(const im_sweep_config_t *c, const im_sweep_katib_opts_t *ko, im_buf_t *b) {
  im_sweep_katib_opts_t def = {0};
  if (!ko) ko = &def;
  const char *metric = c->metric_name ? c->metric_name : "val_loss";
  json_t *root = json_object(), *spec = json_object(), *obj = json_object(), *params = json_array(),
         *tparams = json_array(), *cmd = json_array();
  im_status_t st = IM_OK;
  char name[128];
  snprintf(name, sizeof name, "%s", ko->name ? ko->name : c->name ? c->name : "imops-sweep");
  for (char *p = name; *p; p++) /* a DNS-1123 name */
    *p = (*p >= 'A' && *p <= 'Z') ? (char)(*p + 32) : ((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')) ? *p : '-';
  json_object_set_new(root, "apiVersion", json_string("kubeflow.org/v1beta1"));
  json_object_set_new(root, "kind", json_string("Experiment"));
  json_object_set_new(root, "metadata", json_pack("{s:s,s:s}", "name", name, "namespace",
                                                  ko->namespace_ ? ko->namespace_ : "kubeflow"));
  json_object_set_new(obj, "type", json_string(c->maximize ? "maximize" : "minimize"));
  if (c->has_target) json_object_set_new(obj, "goal", json_real(c->target));
  json_object_set_new(obj, "objectiveMetricName", json_string(metric));
  const char *others[] = {"val_loss", "val_accuracy", "train_loss", "train_accuracy"};
  json_t *add = json_array();
  for (int i = 0; i < 4; i++)
    if (strcmp(others[i], metric)) json_array_append_new(add, json_string(others[i]));
  json_object_set_new(obj, "additionalMetricNames", add);
  json_object_set_new(spec, "objective", obj);
  const char *alg = c->method == IM_SWEEP_GRID ? "grid" : c->method == IM_SWEEP_RANDOM ? "random" : "tpe";
  json_object_set_new(spec, "algorithm", json_pack("{s:s}", "algorithmName", alg));
  if (c->hyperband) {
    int64_t bands[8];
    size_t nb = 0;
    im_sweep_hyperband_bands(c, bands, 8, &nb);
    char start[32];
    snprintf(start, sizeof start, "%lld", (long long)(nb ? bands[0] : 1));
    json_object_set_new(spec, "earlyStopping",
                        json_pack("{s:s,s:[{s:s,s:s},{s:s,s:s}]}", "algorithmName", "medianstop", "algorithmSettings",
                                  "name", "min_trials_required", "value", "3", "name", "start_step", "value", start));
  }
  int64_t maxt = ko->max_trials > 0 ? ko->max_trials : c->run_cap > 0 ? c->run_cap : 12;
  json_object_set_new(spec, "parallelTrialCount", json_integer(ko->parallel > 0 ? ko->parallel : 3));
  json_object_set_new(spec, "maxTrialCount", json_integer(maxt));
  json_object_set_new(spec, "maxFailedTrialCount", json_integer(maxt < 3 ? maxt : 3));
  json_array_append_new(cmd, json_string("imops"));
  json_array_append_new(cmd, json_string("train"));
  char arg[600];
  snprintf(arg, sizeof arg, "--data=%s", ko->data_dir ? ko->data_dir : "/data");
  json_array_append_new(cmd, json_string(arg));
  for (size_t i = 0; st == IM_OK && i < c->n_params; i++) {
    const im_sweep_param_t *p = &c->params[i];
    char opt[300], pn[256];
    plain(p->name, pn, sizeof pn);
    /* the training option: optimizer.lr -> --lr, batch_size -> --batch-size */
    const char *key = !strncmp(p->name, "optimizer.", 10) ? (!strcmp(p->name + 10, "name") ? "optimizer" : p->name + 10)
                                                         : p->name;
    snprintf(opt, sizeof opt, "%s", key);
    for (char *q = opt; *q; q++)
      if (*q == '_') *q = '-';
    if (p->dist == IM_SWEEP_CONSTANT) {
      json_t *v = json_loads(p->values[0], JSON_DECODE_ANY, NULL);
      snprintf(arg, sizeof arg, "--%s=%s", opt, json_is_string(v) ? json_string_value(v) : p->values[0]);
      json_decref(v);
      json_array_append_new(cmd, json_string(arg));
      continue;
    }
    st = katib_param(p, pn, params);
    json_array_append_new(tparams, json_pack("{s:s,s:s}", "name", pn, "reference", pn));
    snprintf(arg, sizeof arg, "--%s=${trialParameters.%s}", opt, pn);
    json_array_append_new(cmd, json_string(arg));
  }
  json_array_append_new(cmd, json_string("--no-track"));
  json_array_append_new(cmd, json_string("--metrics-stdout")); /* name=value lines for the StdOut collector */
  json_object_set_new(spec, "parameters", params);
  json_object_set_new(spec, "metricsCollectorSpec", json_pack("{s:{s:s}}", "collector", "kind", "StdOut"));
  json_t *container = json_pack("{s:s,s:s,s:o}", "name", "training-container", "image",
                                ko->image ? ko->image : "ghcr.io/imops/imops:latest", "command", cmd);
  json_t *tmpl = json_pack("{s:s,s:o,s:{s:s,s:s,s:{s:{s:{s:s,s:[o]}}}}}", "primaryContainerName", "training-container",
                           "trialParameters", tparams, "trialSpec", "apiVersion", "batch/v1", "kind", "Job", "spec",
                           "template", "spec", "restartPolicy", "Never", "containers", container);
  json_object_set_new(spec, "trialTemplate", tmpl);
  json_object_set_new(root, "spec", spec);
  if (st == IM_OK && !tmpl) st = im_error(IM_ERR_NOMEM, "out of memory");
  if (st == IM_OK) {
    char comment[300];
    snprintf(comment, sizeof comment, "Katib Experiment from imops sweep config %s (method %s); objective metric %s",
             c->source ? c->source : "", im_sweep_method_name(c->method), metric);
    st = im_yaml_emit_json(root, comment, b);
  }
  json_decref(root);
  return st;
}
