/* Statistics for drift monitoring: running mean/variance (Welford's update,
 * merged with Chan et al.'s formula) and the population stability index. */
#include <math.h>

#include "imops/monitor.h"

void im_monitor_welford_add(im_monitor_welford_t *w, double x) {
  w->n += 1;
  double d = x - w->mean;
  w->mean += d / w->n;
  w->m2 += d * (x - w->mean);
}

void im_monitor_welford_merge(im_monitor_welford_t *a, const im_monitor_welford_t *b) {
  if (b->n <= 0) return;
  if (a->n <= 0) {
    *a = *b;
    return;
  }
  double n = a->n + b->n, d = b->mean - a->mean;
  a->mean += d * b->n / n;
  a->m2 += b->m2 + d * d * a->n * b->n / n;
  a->n = n;
}

im_monitor_welford_t im_monitor_welford_from_sums(double n, double sum, double sum_sq) {
  im_monitor_welford_t w = {0, 0, 0};
  if (n <= 0) return w;
  w.n = n;
  w.mean = sum / n;
  w.m2 = sum_sq - sum * w.mean;
  if (w.m2 < 0) w.m2 = 0;
  return w;
}

double im_monitor_welford_var(const im_monitor_welford_t *w) { return w->n > 0 ? w->m2 / w->n : 0.0; }
double im_monitor_welford_std(const im_monitor_welford_t *w) { return sqrt(im_monitor_welford_var(w)); }

double im_monitor_psi(int k, const double *expected, const double *actual, double eps) {
  if (eps <= 0) eps = 1e-4;
  double se = 0, sa = 0;
  for (int i = 0; i < k; i++) {
    se += expected[i] > 0 ? expected[i] : 0;
    sa += actual[i] > 0 ? actual[i] : 0;
  }
  if (se <= 0 || sa <= 0) return 0.0;
  double psi = 0;
  for (int i = 0; i < k; i++) {
    double pe = (expected[i] > 0 ? expected[i] : 0) / se, pa = (actual[i] > 0 ? actual[i] : 0) / sa;
    if (pe < eps) pe = eps;
    if (pa < eps) pa = eps;
    psi += (pa - pe) * log(pa / pe);
  }
  return psi;
}
