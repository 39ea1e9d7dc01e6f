/* Unit tests of the loader: every image of the split once per epoch, the
 * same batches for the same seed, normalization, flip and crop, resume. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "imops/core.h"
#include "imops/data.h"
#include "imops/image.h"
#include "testutil.h"

enum { S = 8, NA = 23, NB = 17 };

/* Class a: image i has every pixel of channel c equal to (i*8 + c) (distinct
 * per image); class b likewise from 128. One pixel marks the top-left corner. */
static const char *make_data(const char **cache) {
  const char *root = tu_tmpdir();
  mkdir(tu_path(root, "a"), 0755);
  mkdir(tu_path(root, "b"), 0755);
  for (int k = 0; k < NA + NB; k++) {
    im_image_t img;
    assert_int_equal(im_image_alloc(&img, S, S, 3), IM_OK);
    int base = k < NA ? k * 4 : 128 + (k - NA) * 4;
    for (int p = 0; p < S * S; p++)
      for (int c = 0; c < 3; c++) img.data[3 * p + c] = (uint8_t)(base + c);
    img.data[0] = 255; /* corner mark (channel 0 of pixel (0,0)) */
    char name[64];
    snprintf(name, sizeof name, "%s/%03d.png", k < NA ? "a" : "b", k);
    assert_int_equal(im_image_save(tu_path(root, name), &img, 0), IM_OK);
    im_image_free(&img);
  }
  im_preprocess_opts_t o = {.data_dir = root, .img_size = S, .ratios = {0.6, 0.2, 0.2}, .seed = 1};
  im_preprocess_result_t *r;
  assert_int_equal(im_data_preprocess(&o, &r), IM_OK);
  *cache = tu_path(root, ".imops/cache-8.bin");
  im_preprocess_result_free(r);
  return root;
}

/* The identity of an image in a batch: its channel-1 value (base + 1). */
static int ident(const float *x, int i) { return (int)lroundf(x[(size_t)i * 3 * S * S + S * S + 5] * 255.0f); }

static void collect(im_loader_t *l, int64_t epoch, int *ids, int *labels, int *count) {
  assert_int_equal(im_loader_start(l, epoch, 0), IM_OK);
  *count = 0;
  const float *x;
  const int32_t *y;
  int n;
  for (;;) {
    assert_int_equal(im_loader_next(l, &x, &y, &n), IM_OK);
    if (!n) break;
    for (int i = 0; i < n; i++) {
      ids[*count] = ident(x, i);
      labels[*count] = y[i];
      (*count)++;
    }
  }
}

static void test_epochs_cover_the_split(void **state) {
  const char *cache;
  const char *root = make_data(&cache);
  im_loader_opts_t o = {.cache_path = cache, .split = IM_SPLIT_TRAIN, .batch_size = 5, .shuffle = 1, .seed = 3};
  im_loader_t *l;
  assert_int_equal(im_loader_open(&o, &l), IM_OK);
  int64_t n = im_loader_size(l);
  assert_int_equal(n, 14 + 10); /* 60% of 23 and of 17 */
  assert_int_equal(im_loader_batches(l), 5);
  int ids[64], lab[64], cnt, ids2[64], lab2[64], cnt2;
  collect(l, 0, ids, lab, &cnt);
  assert_int_equal(cnt, n);
  for (int i = 0; i < cnt; i++) {
    for (int j = i + 1; j < cnt; j++) assert_int_not_equal(ids[i], ids[j]); /* each once */
    assert_int_equal(lab[i], ids[i] >= 128);                               /* labels follow images */
  }
  collect(l, 1, ids2, lab2, &cnt2);
  assert_int_equal(cnt2, n);
  assert_true(memcmp(ids, ids2, sizeof(int) * (size_t)cnt) != 0); /* reshuffled */
  /* the same seed and epoch: the same order, in another loader */
  im_loader_t *l2;
  assert_int_equal(im_loader_open(&o, &l2), IM_OK);
  collect(l2, 1, ids, lab, &cnt);
  assert_memory_equal(ids, ids2, sizeof(int) * (size_t)cnt);
  im_loader_close(l2);
  /* resume: start epoch 1 at batch 2 gives batches 2.. of the same epoch */
  assert_int_equal(im_loader_start(l, 1, 2), IM_OK);
  const float *x;
  const int32_t *y;
  int nb;
  assert_int_equal(im_loader_next(l, &x, &y, &nb), IM_OK);
  assert_int_equal(nb, 5);
  for (int i = 0; i < nb; i++) assert_int_equal(ident(x, i), ids2[10 + i]);
  /* close in the middle of an epoch: the thread stops cleanly */
  im_loader_close(l);
  /* drop_last, the val split, and errors */
  o.split = IM_SPLIT_VAL;
  o.drop_last = 1;
  o.batch_size = 3;
  assert_int_equal(im_loader_open(&o, &l), IM_OK);
  assert_int_equal(im_loader_size(l), 8);
  assert_int_equal(im_loader_batches(l), 2);
  im_loader_close(l);
  o.batch_size = 100;
  assert_int_equal(im_loader_open(&o, &l), IM_ERR_EMPTY);
  o.batch_size = 0;
  assert_int_equal(im_loader_open(&o, &l), IM_ERR_ARG);
  tu_rmtree(root);
}

static void test_normalize_flip_crop(void **state) {
  const char *cache;
  const char *root = make_data(&cache);
  im_loader_opts_t o = {.cache_path = cache, .split = IM_SPLIT_TEST, .batch_size = 4, .seed = 9,
                        .mean = {0.5f, 0.25f, 0.0f}, .std = {0.5f, 0.25f, 1.0f}};
  im_loader_t *l;
  assert_int_equal(im_loader_open(&o, &l), IM_OK);
  int c, h, w, k;
  im_loader_geometry(l, &c, &h, &w, &k);
  assert_true(c == 3 && h == S && w == S && k == 2);
  assert_int_equal(im_loader_start(l, 0, 0), IM_OK);
  const float *x;
  const int32_t *y;
  int n;
  assert_int_equal(im_loader_next(l, &x, &y, &n), IM_OK);
  assert_int_equal(n, 4);
  /* channel 0 of pixel (1,1) is base/255 normalized with mean .5, std .5 */
  int base = ident(x, 0) - 1;
  (void)base;
  float v1 = x[S * S + 9] * 0.25f + 0.25f; /* channel 1 undone */
  float v0 = x[9] * 0.5f + 0.5f;
  assert_true(fabsf(v0 * 255.0f - (v1 * 255.0f - 1.0f)) < 1e-3f);
  assert_true(fabsf(x[0] * 0.5f + 0.5f - 1.0f) < 1e-6f); /* the corner mark, unflipped */
  im_loader_close(l);
  /* flips: over an epoch some images have the mark at the top-right instead */
  o.hflip = 1;
  o.batch_size = 1;
  assert_int_equal(im_loader_open(&o, &l), IM_OK);
  int flipped = 0, plain = 0;
  for (int e = 0; e < 4; e++) {
    assert_int_equal(im_loader_start(l, e, 0), IM_OK);
    while (im_loader_next(l, &x, &y, &n) == IM_OK && n) {
      float left = x[0] * 0.5f + 0.5f, right = x[S - 1] * 0.5f + 0.5f;
      if (fabsf(left - 1.0f) < 1e-6f) plain++;
      else if (fabsf(right - 1.0f) < 1e-6f) flipped++;
      else fail_msg("the mark moved somewhere a flip cannot put it");
    }
  }
  assert_true(flipped > 5 && plain > 5);
  im_loader_close(l);
  /* crop with padding: padded pixels are normalized zeros, the image shifts by at most pad */
  o.hflip = 0;
  o.crop_pad = 2;
  assert_int_equal(im_loader_open(&o, &l), IM_OK);
  int shifted = 0;
  for (int e = 0; e < 4; e++) {
    assert_int_equal(im_loader_start(l, e, 0), IM_OK);
    while (im_loader_next(l, &x, &y, &n) == IM_OK && n) {
      int found = 0;
      for (int yy = 0; yy < 3 && !found; yy++)
        for (int xx = 0; xx < 3 && !found; xx++)
          if (fabsf(x[yy * S + xx] * 0.5f + 0.5f - 1.0f) < 1e-6f) found = 1 + (yy || xx);
      int padded = 0;
      for (int i = 0; i < S * S; i++) padded += fabsf(x[i] * 0.5f + 0.5f) < 1e-6f;
      assert_true(found || padded > 0); /* the mark is near the corner, or was cropped away by a shift */
      shifted += found != 1;
    }
  }
  assert_true(shifted > 0);
  im_loader_close(l);
  o.crop_pad = S;
  assert_int_equal(im_loader_open(&o, &l), IM_ERR_ARG);
  tu_rmtree(root);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_epochs_cover_the_split),
      cmocka_unit_test(test_normalize_flip_crop),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
