/* Small SVG charts logged as run artifacts (MLflow's artifact viewer shows
 * SVG): the training curves per epoch and the confusion matrix. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "train/train_impl.h"

static im_status_t xml_text(im_buf_t *b, const char *s) {
  im_status_t st = IM_OK;
  for (const char *p = s; *p && st == IM_OK; p++) {
    switch (*p) {
      case '<': st = im_buf_append(b, "&lt;", 4); break;
      case '>': st = im_buf_append(b, "&gt;", 4); break;
      case '&': st = im_buf_append(b, "&amp;", 5); break;
      case '"': st = im_buf_append(b, "&quot;", 6); break;
      default: st = im_buf_append(b, p, 1);
    }
  }
  return st;
}

static im_status_t finish(im_buf_t *b, im_status_t st, const char *path) {
  if (st == IM_OK) st = im_buf_printf(b, "</svg>\n");
  if (st == IM_OK) st = im_file_write_atomic(path, b->data, b->len);
  im_buf_free(b);
  return st;
}

/* One panel: series a (train) and b (val, may be all NaN) against epochs. */
static im_status_t panel(im_buf_t *b, double x0, double y0, double w, double h, const char *title, const double *a,
                         const double *v, size_t n, const int64_t *epochs) {
  double lo = INFINITY, hi = -INFINITY;
  for (size_t i = 0; i < n; i++) {
    if (isfinite(a[i])) lo = fmin(lo, a[i]), hi = fmax(hi, a[i]);
    if (isfinite(v[i])) lo = fmin(lo, v[i]), hi = fmax(hi, v[i]);
  }
  if (!isfinite(lo)) lo = 0, hi = 1;
  if (hi - lo < 1e-9) lo -= 0.5, hi += 0.5;
  double pad = (hi - lo) * 0.08;
  lo -= pad, hi += pad;
  const double L = x0 + 55, R = x0 + w - 15, T = y0 + 30, B = y0 + h - 35;
  im_status_t st = im_buf_printf(b,
                                 "<text x=\"%.1f\" y=\"%.1f\" font-size=\"14\" text-anchor=\"middle\">%s</text>\n"
                                 "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"none\" stroke=\"#999\"/>\n",
                                 (L + R) / 2, y0 + 18, title, L, T, R - L, B - T);
  for (int t = 0; t <= 4 && st == IM_OK; t++) {
    double val = lo + (hi - lo) * t / 4, y = B - (B - T) * t / 4;
    st = im_buf_printf(b,
                       "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#eee\"/>"
                       "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" text-anchor=\"end\">%.4g</text>\n",
                       L, y, R, y, L - 4, y + 3, val);
  }
  double e0 = n ? (double)epochs[0] : 1, e1 = n ? (double)epochs[n - 1] : 1;
  if (e1 <= e0) e1 = e0 + 1;
  if (st == IM_OK)
    st = im_buf_printf(b,
                       "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" text-anchor=\"middle\">%lld</text>"
                       "<text x=\"%.1f\" y=\"%.1f\" font-size=\"10\" text-anchor=\"middle\">%lld</text>"
                       "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"middle\">epoch</text>\n",
                       L, B + 14, (long long)e0, R, B + 14, (long long)e1, (L + R) / 2, B + 28);
  const double *series[2] = {a, v};
  const char *colour[2] = {"#1f77b4", "#ff7f0e"}, *name[2] = {"train", "val"};
  for (int s = 0; s < 2 && st == IM_OK; s++) {
    int any = 0;
    for (size_t i = 0; i < n; i++) any |= isfinite(series[s][i]);
    if (!any) continue;
    st = im_buf_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"2\" points=\"", colour[s]);
    for (size_t i = 0; i < n && st == IM_OK; i++) {
      if (!isfinite(series[s][i])) continue;
      double x = L + (R - L) * ((double)epochs[i] - e0) / (e1 - e0), y = B - (B - T) * (series[s][i] - lo) / (hi - lo);
      st = im_buf_printf(b, "%.1f,%.1f ", x, y);
    }
    if (st == IM_OK) st = im_buf_printf(b, "\"/>\n");
    for (size_t i = 0; i < n && st == IM_OK; i++) {
      if (!isfinite(series[s][i])) continue;
      double x = L + (R - L) * ((double)epochs[i] - e0) / (e1 - e0), y = B - (B - T) * (series[s][i] - lo) / (hi - lo);
      st = im_buf_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%s\"/>\n", x, y, colour[s]);
    }
    if (st == IM_OK)
      st = im_buf_printf(b,
                         "<rect x=\"%.1f\" y=\"%.1f\" width=\"10\" height=\"10\" fill=\"%s\"/>"
                         "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\">%s</text>\n",
                         R - 60, T + 6 + 16 * s, colour[s], R - 46, T + 15 + 16 * s, name[s]);
  }
  return st;
}

im_status_t im__train_plot_history(const char *path, const im_train_epoch_t *h, size_t n) {
  im_buf_t b = {0};
  double *tl = im_malloc(sizeof(double) * (n ? n : 1) * 4);
  int64_t *ep = im_malloc(sizeof(int64_t) * (n ? n : 1));
  if (!tl || !ep) {
    im_free(tl);
    im_free(ep);
    return im_error(IM_ERR_NOMEM, "out of memory");
  }
  double *vl = tl + n, *ta = vl + n, *va = ta + n;
  for (size_t i = 0; i < n; i++) {
    tl[i] = h[i].train_loss, vl[i] = h[i].val_loss;
    ta[i] = h[i].train_accuracy, va[i] = h[i].val_accuracy;
    ep[i] = h[i].epoch;
  }
  im_status_t st = im_buf_printf(&b,
                                 "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"820\" height=\"320\" "
                                 "font-family=\"sans-serif\">\n<rect width=\"820\" height=\"320\" fill=\"white\"/>\n");
  if (st == IM_OK) st = panel(&b, 0, 0, 410, 320, "loss", tl, vl, n, ep);
  if (st == IM_OK) st = panel(&b, 410, 0, 410, 320, "accuracy", ta, va, n, ep);
  im_free(tl);
  im_free(ep);
  return finish(&b, st, path);
}

im_status_t im__train_plot_confusion(const char *path, int k, const char *const *classes, const int64_t *cm) {
  const int cell = k <= 4 ? 90 : k <= 10 ? 52 : 28, left = 150, top = 120;
  const int W = left + cell * k + 30, H = top + cell * k + 40;
  im_buf_t b = {0};
  im_status_t st = im_buf_printf(&b,
                                 "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"%d\" height=\"%d\" "
                                 "font-family=\"sans-serif\">\n<rect width=\"%d\" height=\"%d\" fill=\"white\"/>\n"
                                 "<text x=\"%d\" y=\"20\" font-size=\"14\" text-anchor=\"middle\">confusion matrix "
                                 "(rows: true class, columns: predicted)</text>\n",
                                 W, H, W, H, W / 2);
  for (int i = 0; i < k && st == IM_OK; i++) {
    int64_t row = 0;
    for (int j = 0; j < k; j++) row += cm[(size_t)i * (size_t)k + (size_t)j];
    st = im_buf_printf(&b, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"end\">", left - 6,
                       top + cell * i + cell / 2 + 4);
    if (st == IM_OK) st = xml_text(&b, classes[i]);
    if (st == IM_OK) st = im_buf_printf(&b, "</text>\n");
    if (st == IM_OK)
      st = im_buf_printf(&b, "<text x=\"%d\" y=\"%d\" font-size=\"10\" text-anchor=\"start\" transform=\"rotate(-45 %d %d)\">",
                         left + cell * i + cell / 2, top - 6, left + cell * i + cell / 2, top - 6);
    if (st == IM_OK) st = xml_text(&b, classes[i]);
    if (st == IM_OK) st = im_buf_printf(&b, "</text>\n");
    for (int j = 0; j < k && st == IM_OK; j++) {
      int64_t v = cm[(size_t)i * (size_t)k + (size_t)j];
      double f = row ? (double)v / (double)row : 0;
      int shade = (int)(255 - 200 * f);
      st = im_buf_printf(&b,
                         "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"rgb(%d,%d,255)\" stroke=\"#ccc\"/>"
                         "<text x=\"%d\" y=\"%d\" font-size=\"%d\" text-anchor=\"middle\" fill=\"%s\">%lld</text>\n",
                         left + cell * j, top + cell * i, cell, cell, shade, shade, left + cell * j + cell / 2,
                         top + cell * i + cell / 2 + 4, cell >= 50 ? 12 : 9, f > 0.6 ? "white" : "black", (long long)v);
    }
  }
  return finish(&b, st, path);
}
