/* The metrics registry: families of counters, gauges and histograms with
 * label sets, lock-free updates of a series (atomic CAS on the value's bits),
 * and rendering in the Prometheus text exposition format 0.0.4. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imops/monitor.h"
#include "monitor/monitor_impl.h"

#define MAX_COLLECTORS 16

struct im_monitor_series {
  im_monitor_family_t *fam;
  char **values;              /* the family's n_labels label values */
  _Atomic uint64_t bits;      /* counter / gauge value, or a histogram's sum, as double bits */
  _Atomic uint64_t *buckets;  /* histogram: n_bounds + 1 counts (the last is +Inf), not cumulative */
  int exposed;                /* 0 after im_monitor_family_clear */
  im_monitor_series_t *next;
};

struct im_monitor_family {
  char *name, *help;
  im_monitor_type_t type;
  int n_labels;
  char *labels[IM_MONITOR_MAX_LABELS];
  int n_bounds;
  double *bounds;
  pthread_mutex_t mu;
  im_monitor_series_t *head, *tail;
  im_monitor_family_t *next;
};

struct im_monitor {
  pthread_mutex_t mu;
  im_monitor_family_t *head, *tail;
  struct {
    im_monitor_collect_fn fn;
    void *user;
  } coll[MAX_COLLECTORS];
  int n_coll;
  void *kept[MAX_COLLECTORS];
  int n_kept;
};

static uint64_t dbits(double v) {
  uint64_t u;
  memcpy(&u, &v, sizeof u);
  return u;
}
static double bitsd(uint64_t u) {
  double v;
  memcpy(&v, &u, sizeof v);
  return v;
}

static void atomic_add_double(_Atomic uint64_t *p, double v) {
  uint64_t old = atomic_load_explicit(p, memory_order_relaxed);
  while (!atomic_compare_exchange_weak_explicit(p, &old, dbits(bitsd(old) + v), memory_order_relaxed,
                                                memory_order_relaxed)) {
  }
}

im_status_t im_monitor_new(im_monitor_t **out) {
  *out = NULL;
  im_monitor_t *r = im_calloc(1, sizeof *r);
  if (!r) return im_error(IM_ERR_NOMEM, "out of memory");
  pthread_mutex_init(&r->mu, NULL);
  *out = r;
  return IM_OK;
}

static void series_free(im_monitor_series_t *s, int n_labels) {
  for (int i = 0; s->values && i < n_labels; i++) im_free(s->values[i]);
  im_free(s->values);
  im_free((void *)(uintptr_t)s->buckets);
  im_free(s);
}

static void family_free(im_monitor_family_t *f) {
  for (im_monitor_series_t *s = f->head, *n; s; s = n) {
    n = s->next;
    series_free(s, f->n_labels);
  }
  for (int i = 0; i < f->n_labels; i++) im_free(f->labels[i]);
  im_free(f->bounds);
  im_free(f->name);
  im_free(f->help);
  pthread_mutex_destroy(&f->mu);
  im_free(f);
}

void im_monitor_free(im_monitor_t *reg) {
  if (!reg) return;
  for (im_monitor_family_t *f = reg->head, *n; f; f = n) {
    n = f->next;
    family_free(f);
  }
  for (int i = 0; i < reg->n_kept; i++) im_free(reg->kept[i]);
  pthread_mutex_destroy(&reg->mu);
  im_free(reg);
}

static int name_ok(const char *s, int metric) {
  if (!s || !*s) return 0;
  for (const char *p = s; *p; p++) {
    int alpha = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || *p == '_' || (metric && *p == ':');
    int digit = *p >= '0' && *p <= '9';
    if (!alpha && !(digit && p != s)) return 0;
  }
  return 1;
}

static im_status_t family_add(im_monitor_t *reg, const char *name, const char *help, im_monitor_type_t type,
                              int n_labels, const char *const *label_names, int n_bounds, const double *bounds,
                              im_monitor_family_t **out) {
  *out = NULL;
  if (!name_ok(name, 1)) return im_error(IM_ERR_ARG, "invalid metric name '%s'", name ? name : "(null)");
  if (n_labels < 0 || n_labels > IM_MONITOR_MAX_LABELS || (n_labels && !label_names))
    return im_error(IM_ERR_ARG, "metric %s: %d labels (0..%d allowed)", name, n_labels, IM_MONITOR_MAX_LABELS);
  for (int i = 0; i < n_labels; i++) {
    const char *l = label_names[i];
    if (!name_ok(l, 0) || !strncmp(l, "__", 2) || (type == IM_MONITOR_HISTOGRAM && !strcmp(l, "le")))
      return im_error(IM_ERR_ARG, "metric %s: invalid label name '%s'", name, l ? l : "(null)");
    for (int j = 0; j < i; j++)
      if (!strcmp(l, label_names[j])) return im_error(IM_ERR_ARG, "metric %s: label '%s' twice", name, l);
  }
  if (type == IM_MONITOR_HISTOGRAM) {
    if (n_bounds < 1 || n_bounds > IM_MONITOR_MAX_BUCKETS || !bounds)
      return im_error(IM_ERR_ARG, "histogram %s: %d buckets (1..%d allowed)", name, n_bounds, IM_MONITOR_MAX_BUCKETS);
    for (int i = 0; i < n_bounds; i++)
      if (!isfinite(bounds[i]) || (i && bounds[i] <= bounds[i - 1]))
        return im_error(IM_ERR_ARG, "histogram %s: bucket bounds must be finite and strictly increasing", name);
  }
  im_monitor_family_t *f = im_calloc(1, sizeof *f);
  if (!f) return im_error(IM_ERR_NOMEM, "out of memory");
  pthread_mutex_init(&f->mu, NULL);
  f->type = type;
  f->name = im_strdup(name);
  f->help = im_strdup(help ? help : "");
  int ok = f->name && f->help;
  f->n_labels = n_labels;
  for (int i = 0; i < n_labels; i++) ok = ok && (f->labels[i] = im_strdup(label_names[i]));
  if (type == IM_MONITOR_HISTOGRAM) {
    f->n_bounds = n_bounds;
    f->bounds = im_malloc(sizeof *f->bounds * (size_t)n_bounds);
    if (f->bounds) memcpy(f->bounds, bounds, sizeof *f->bounds * (size_t)n_bounds);
    ok = ok && f->bounds;
  }
  if (!ok) {
    family_free(f);
    return im_error(IM_ERR_NOMEM, "out of memory");
  }
  pthread_mutex_lock(&reg->mu);
  for (im_monitor_family_t *g = reg->head; g; g = g->next)
    if (!strcmp(g->name, name)) {
      pthread_mutex_unlock(&reg->mu);
      family_free(f);
      return im_error(IM_ERR_EXISTS, "metric %s is registered already", name);
    }
  if (reg->tail) reg->tail->next = f;
  else reg->head = f;
  reg->tail = f;
  pthread_mutex_unlock(&reg->mu);
  *out = f;
  return IM_OK;
}

im_status_t im_monitor_counter(im_monitor_t *reg, const char *name, const char *help, int n_labels,
                               const char *const *label_names, im_monitor_family_t **out) {
  return family_add(reg, name, help, IM_MONITOR_COUNTER, n_labels, label_names, 0, NULL, out);
}

im_status_t im_monitor_gauge(im_monitor_t *reg, const char *name, const char *help, int n_labels,
                             const char *const *label_names, im_monitor_family_t **out) {
  return family_add(reg, name, help, IM_MONITOR_GAUGE, n_labels, label_names, 0, NULL, out);
}

im_status_t im_monitor_histogram(im_monitor_t *reg, const char *name, const char *help, int n_labels,
                                 const char *const *label_names, int n_bounds, const double *bounds,
                                 im_monitor_family_t **out) {
  return family_add(reg, name, help, IM_MONITOR_HISTOGRAM, n_labels, label_names, n_bounds, bounds, out);
}

im_status_t im_monitor_series(im_monitor_family_t *f, const char *const *label_values, im_monitor_series_t **out) {
  *out = NULL;
  if (f->n_labels && !label_values) return im_error(IM_ERR_ARG, "metric %s needs %d label values", f->name, f->n_labels);
  for (int i = 0; i < f->n_labels; i++)
    if (!label_values[i]) return im_error(IM_ERR_ARG, "metric %s: label %s has no value", f->name, f->labels[i]);
  pthread_mutex_lock(&f->mu);
  for (im_monitor_series_t *s = f->head; s; s = s->next) {
    if (!s->exposed) continue;
    int same = 1;
    for (int i = 0; i < f->n_labels && same; i++) same = !strcmp(s->values[i], label_values[i]);
    if (same) {
      pthread_mutex_unlock(&f->mu);
      *out = s;
      return IM_OK;
    }
  }
  im_monitor_series_t *s = im_calloc(1, sizeof *s);
  int ok = s != NULL;
  if (ok && f->n_labels) {
    s->values = im_calloc((size_t)f->n_labels, sizeof *s->values);
    ok = s->values != NULL;
    for (int i = 0; ok && i < f->n_labels; i++) ok = (s->values[i] = im_strdup(label_values[i])) != NULL;
  }
  if (ok && f->type == IM_MONITOR_HISTOGRAM) {
    s->buckets = im_calloc((size_t)f->n_bounds + 1, sizeof *s->buckets);
    ok = s->buckets != NULL;
  }
  if (!ok) {
    pthread_mutex_unlock(&f->mu);
    if (s) series_free(s, f->n_labels);
    return im_error(IM_ERR_NOMEM, "out of memory");
  }
  s->fam = f;
  s->exposed = 1;
  atomic_init(&s->bits, dbits(0.0));
  if (f->tail) f->tail->next = s;
  else f->head = s;
  f->tail = s;
  pthread_mutex_unlock(&f->mu);
  *out = s;
  return IM_OK;
}

void im_monitor_family_clear(im_monitor_family_t *f) {
  pthread_mutex_lock(&f->mu);
  for (im_monitor_series_t *s = f->head; s; s = s->next) s->exposed = 0;
  pthread_mutex_unlock(&f->mu);
}

void im_monitor_inc(im_monitor_series_t *s, double v) {
  if (!s || isnan(v) || (s->fam->type == IM_MONITOR_COUNTER && v < 0)) return;
  atomic_add_double(&s->bits, v);
}

void im_monitor_set(im_monitor_series_t *s, double v) {
  if (s) atomic_store_explicit(&s->bits, dbits(v), memory_order_relaxed);
}

void im_monitor_observe(im_monitor_series_t *s, double v) {
  if (!s || isnan(v) || s->fam->type != IM_MONITOR_HISTOGRAM) return;
  const im_monitor_family_t *f = s->fam;
  int lo = 0, hi = f->n_bounds; /* first bucket with v <= bound; n_bounds is +Inf */
  while (lo < hi) {
    int mid = (lo + hi) / 2;
    if (v <= f->bounds[mid]) hi = mid;
    else lo = mid + 1;
  }
  atomic_fetch_add_explicit(&s->buckets[lo], 1, memory_order_relaxed);
  atomic_add_double(&s->bits, v);
}

double im_monitor_value(const im_monitor_series_t *s) {
  return s ? bitsd(atomic_load_explicit(&((im_monitor_series_t *)(uintptr_t)s)->bits, memory_order_relaxed)) : 0.0;
}

uint64_t im_monitor_count(const im_monitor_series_t *s) {
  if (!s || s->fam->type != IM_MONITOR_HISTOGRAM) return 0;
  uint64_t n = 0;
  for (int i = 0; i <= s->fam->n_bounds; i++) n += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
  return n;
}

im_status_t im_monitor_on_collect(im_monitor_t *reg, im_monitor_collect_fn fn, void *user) {
  pthread_mutex_lock(&reg->mu);
  if (reg->n_coll >= MAX_COLLECTORS) {
    pthread_mutex_unlock(&reg->mu);
    return im_error(IM_ERR_LIMIT, "at most %d collectors", MAX_COLLECTORS);
  }
  reg->coll[reg->n_coll].fn = fn;
  reg->coll[reg->n_coll].user = user;
  reg->n_coll++;
  pthread_mutex_unlock(&reg->mu);
  return IM_OK;
}

im_status_t im__monitor_keep(im_monitor_t *reg, void *p) {
  pthread_mutex_lock(&reg->mu);
  if (reg->n_kept >= MAX_COLLECTORS) {
    pthread_mutex_unlock(&reg->mu);
    im_free(p);
    return im_error(IM_ERR_LIMIT, "too many blocks kept by the registry");
  }
  reg->kept[reg->n_kept++] = p;
  pthread_mutex_unlock(&reg->mu);
  return IM_OK;
}

/* ---- exposition ---- */

const char *im_monitor_format_value(double v, char *buf, size_t n) {
  if (isnan(v)) snprintf(buf, n, "NaN");
  else if (isinf(v)) snprintf(buf, n, v > 0 ? "+Inf" : "-Inf");
  else if (v == floor(v) && fabs(v) < 1e15) snprintf(buf, n, "%.0f", v);
  else {
    for (int prec = 6; prec <= 17; prec++) {
      snprintf(buf, n, "%.*g", prec, v);
      if (strtod(buf, NULL) == v) break;
    }
  }
  return buf;
}

/* text with \ and newline escaped; in label values also " */
static im_status_t append_escaped(im_buf_t *b, const char *s, int quote) {
  im_status_t st = IM_OK;
  const char *run = s;
  for (const char *p = s;; p++) {
    const char *rep = NULL;
    if (*p == '\\') rep = "\\\\";
    else if (*p == '\n') rep = "\\n";
    else if (quote && *p == '"') rep = "\\\"";
    if (!rep && *p) continue;
    if (p > run && (st = im_buf_append(b, run, (size_t)(p - run)))) return st;
    if (!*p) return IM_OK;
    if ((st = im_buf_append(b, rep, strlen(rep)))) return st;
    run = p + 1;
  }
}

/* name{l1="v1",...[,le="x"]} value\n */
static im_status_t sample(im_buf_t *b, const im_monitor_family_t *f, const char *suffix, const im_monitor_series_t *s,
                          const char *le, double v) {
  im_status_t st;
  char num[40];
  if ((st = im_buf_printf(b, "%s%s", f->name, suffix))) return st;
  if (f->n_labels || le) {
    if ((st = im_buf_append(b, "{", 1))) return st;
    for (int i = 0; i < f->n_labels; i++) {
      if ((st = im_buf_printf(b, "%s%s=\"", i ? "," : "", f->labels[i]))) return st;
      if ((st = append_escaped(b, s->values[i], 1))) return st;
      if ((st = im_buf_append(b, "\"", 1))) return st;
    }
    if (le && (st = im_buf_printf(b, "%sle=\"%s\"", f->n_labels ? "," : "", le))) return st;
    if ((st = im_buf_append(b, "}", 1))) return st;
  }
  return im_buf_printf(b, " %s\n", im_monitor_format_value(v, num, sizeof num));
}

static im_status_t expose_family(im_monitor_family_t *f, im_buf_t *b) {
  static const char *types[] = {"counter", "gauge", "histogram"};
  im_status_t st;
  if ((st = im_buf_printf(b, "# HELP %s ", f->name))) return st;
  if ((st = append_escaped(b, f->help, 0))) return st;
  if ((st = im_buf_printf(b, "\n# TYPE %s %s\n", f->name, types[f->type]))) return st;
  pthread_mutex_lock(&f->mu);
  for (im_monitor_series_t *s = f->head; s && st == IM_OK; s = s->next) {
    if (!s->exposed) continue;
    double v = im_monitor_value(s);
    if (f->type != IM_MONITOR_HISTOGRAM) {
      st = sample(b, f, "", s, NULL, v);
      continue;
    }
    uint64_t cum = 0;
    char le[40];
    for (int i = 0; i <= f->n_bounds && st == IM_OK; i++) {
      cum += atomic_load_explicit(&s->buckets[i], memory_order_relaxed);
      if (i < f->n_bounds) im_monitor_format_value(f->bounds[i], le, sizeof le);
      else snprintf(le, sizeof le, "+Inf");
      st = sample(b, f, "_bucket", s, le, (double)cum);
    }
    if (st == IM_OK) st = sample(b, f, "_sum", s, NULL, v);
    if (st == IM_OK) st = sample(b, f, "_count", s, NULL, (double)cum);
  }
  pthread_mutex_unlock(&f->mu);
  return st;
}

im_status_t im_monitor_expose(im_monitor_t *reg, im_buf_t *out) {
  pthread_mutex_lock(&reg->mu);
  for (int i = 0; i < reg->n_coll; i++) reg->coll[i].fn(reg, reg->coll[i].user);
  im_status_t st = IM_OK;
  for (im_monitor_family_t *f = reg->head; f && st == IM_OK; f = f->next) st = expose_family(f, out);
  pthread_mutex_unlock(&reg->mu);
  return st;
}
