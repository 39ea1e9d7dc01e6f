/* The split: per class, the usable files are shuffled with the seed and cut
 * into train/val/test by the ratios, so every class keeps the ratios within
 * one image (stratified), and the same seed always gives the same split. */
#include <math.h>
#include <string.h>

#include "data_impl.h"

const char *im_split_name(int split) {
  switch (split) {
    case IM_SPLIT_TRAIN: return "train";
    case IM_SPLIT_VAL: return "val";
    case IM_SPLIT_TEST: return "test";
    default: return "none";
  }
}

void im__split_counts(int64_t n, const double r[3], int64_t out[3]) {
  int64_t tr = (int64_t)floor((double)n * r[0] + 0.5);
  int64_t va = (int64_t)floor((double)n * r[1] + 0.5);
  if (tr > n) tr = n;
  if (va > n - tr) va = n - tr;
  if (r[2] <= 0) va = n - tr; /* no test split asked for: the rest is validation */
  out[0] = tr;
  out[1] = va;
  out[2] = n - tr - va;
}

im_status_t im__split_assign(const im__folder_t *f, const uint8_t *usable, const double ratios[3], uint64_t seed,
                             uint8_t *split) {
  for (int64_t i = 0; i < f->n_files; i++) split[i] = IM__SPLIT_NONE;
  int64_t *idx = im_malloc((size_t)(f->n_files ? f->n_files : 1) * sizeof *idx);
  if (!idx) return im_error(IM_ERR_NOMEM, "out of memory splitting");
  im_rng_t rng;
  im_rng_seed(&rng, seed);
  /* Files of a class are contiguous in scan order. */
  int64_t i = 0;
  while (i < f->n_files) {
    int label = f->files[i].label;
    int64_t m = 0;
    for (; i < f->n_files && f->files[i].label == label; i++)
      if (usable[i]) idx[m++] = i;
    im_rng_shuffle(&rng, idx, (size_t)m, sizeof *idx);
    int64_t c[3];
    im__split_counts(m, ratios, c);
    for (int64_t j = 0; j < m; j++) split[idx[j]] = (uint8_t)(j < c[0] ? IM_SPLIT_TRAIN : j < c[0] + c[1] ? IM_SPLIT_VAL : IM_SPLIT_TEST);
  }
  im_free(idx);
  return IM_OK;
}
