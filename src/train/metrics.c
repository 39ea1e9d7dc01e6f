/* Classification metrics: accuracy, mean cross-entropy, the confusion
 * matrix, per-class precision / recall / F1 (sklearn's definitions with
 * zero_division=0), their macro and weighted means, and the rank-based ROC
 * AUC for two classes with ties counted half. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "train/train_impl.h"

void im_train_metrics_free(im_train_metrics_t *m) {
  if (!m) return;
  for (int k = 0; m->classes && k < m->n_classes; k++) im_free(m->classes[k]);
  im_free(m->classes);
  im_free(m->precision);
  im_free(m->recall);
  im_free(m->f1);
  im_free(m->support);
  im_free(m->confusion);
  im_free(m);
}

typedef struct {
  double score;
  int32_t label;
} scored_t;

static int cmp_scored(const void *a, const void *b) {
  double x = ((const scored_t *)a)->score, y = ((const scored_t *)b)->score;
  return x < y ? -1 : x > y ? 1 : 0;
}

double im_train_roc_auc(int64_t n, const int32_t *labels, const double *scores) {
  int64_t pos = 0;
  for (int64_t i = 0; i < n; i++) pos += labels[i] != 0;
  int64_t neg = n - pos;
  if (pos == 0 || neg == 0) return NAN;
  scored_t *v = im_malloc(sizeof *v * (size_t)n);
  if (!v) return NAN;
  for (int64_t i = 0; i < n; i++) v[i] = (scored_t){scores[i], labels[i] != 0};
  qsort(v, (size_t)n, sizeof *v, cmp_scored);
  /* Sum of the positives' ranks, tied scores sharing their average rank. */
  double rank_sum = 0;
  for (int64_t i = 0; i < n;) {
    int64_t j = i;
    while (j + 1 < n && v[j + 1].score == v[i].score) j++;
    double avg = (double)(i + 1 + j + 1) / 2.0;
    for (int64_t k = i; k <= j; k++)
      if (v[k].label) rank_sum += avg;
    i = j + 1;
  }
  im_free(v);
  return (rank_sum - (double)pos * (double)(pos + 1) / 2.0) / ((double)pos * (double)neg);
}

im_status_t im_train_metrics_compute(int k, const char *const *classes, int64_t n, const int32_t *labels,
                                     const float *probs, im_train_metrics_t **out) {
  *out = NULL;
  if (k < 1 || n < 0 || (n > 0 && (!labels || !probs))) return im_error(IM_ERR_ARG, "metrics: bad arguments");
  im_train_metrics_t *m = im_calloc(1, sizeof *m);
  if (!m) return im_error(IM_ERR_NOMEM, "out of memory");
  m->n_classes = k;
  m->n = n;
  m->classes = im_calloc((size_t)k, sizeof *m->classes);
  m->precision = im_calloc((size_t)k, sizeof *m->precision);
  m->recall = im_calloc((size_t)k, sizeof *m->recall);
  m->f1 = im_calloc((size_t)k, sizeof *m->f1);
  m->support = im_calloc((size_t)k, sizeof *m->support);
  m->confusion = im_calloc((size_t)k * (size_t)k, sizeof *m->confusion);
  int64_t *predicted = im_calloc((size_t)k, sizeof *predicted);
  double *scores = k == 2 ? im_malloc(sizeof *scores * (size_t)(n ? n : 1)) : NULL;
  im_status_t st = IM_OK;
  if (!m->classes || !m->precision || !m->recall || !m->f1 || !m->support || !m->confusion || !predicted ||
      (k == 2 && !scores)) {
    st = im_error(IM_ERR_NOMEM, "out of memory");
    goto out;
  }
  for (int c = 0; c < k; c++) {
    char num[16];
    snprintf(num, sizeof num, "%d", c);
    if (!(m->classes[c] = im_strdup(classes && classes[c] ? classes[c] : num))) {
      st = im_error(IM_ERR_NOMEM, "out of memory");
      goto out;
    }
  }
  double loss = 0;
  int64_t correct = 0;
  for (int64_t i = 0; i < n; i++) {
    const float *p = probs + (size_t)i * (size_t)k;
    int32_t y = labels[i];
    if (y < 0 || y >= k) {
      st = im_error(IM_ERR_ARG, "metrics: label %d of sample %lld is outside [0, %d)", y, (long long)i, k);
      goto out;
    }
    int best = 0;
    for (int c = 1; c < k; c++)
      if (p[c] > p[best]) best = c;
    m->confusion[(size_t)y * (size_t)k + (size_t)best]++;
    m->support[y]++;
    predicted[best]++;
    correct += best == y;
    loss -= log(p[y] > 1e-30f ? (double)p[y] : 1e-30);
    if (scores) scores[i] = p[1];
  }
  m->accuracy = n ? (double)correct / (double)n : NAN;
  m->loss = n ? loss / (double)n : NAN;
  double wf1 = 0;
  for (int c = 0; c < k; c++) {
    int64_t tp = m->confusion[(size_t)c * (size_t)k + (size_t)c];
    m->precision[c] = predicted[c] ? (double)tp / (double)predicted[c] : 0;
    m->recall[c] = m->support[c] ? (double)tp / (double)m->support[c] : 0;
    double pr = m->precision[c] + m->recall[c];
    m->f1[c] = pr > 0 ? 2 * m->precision[c] * m->recall[c] / pr : 0;
    m->macro_precision += m->precision[c] / k;
    m->macro_recall += m->recall[c] / k;
    m->macro_f1 += m->f1[c] / k;
    wf1 += m->f1[c] * (double)m->support[c];
  }
  m->weighted_f1 = n ? wf1 / (double)n : 0;
  m->roc_auc = k == 2 ? im_train_roc_auc(n, labels, scores) : NAN;
out:
  im_free(predicted);
  im_free(scores);
  if (st) {
    im_train_metrics_free(m);
    return st;
  }
  *out = m;
  return IM_OK;
}
