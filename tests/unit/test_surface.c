/* Unit tests of the synthetic concrete-crack generator (src/data/surface.c):
 * layout and decodability, determinism across thread counts, seeds, argument
 * checks, progress reporting, a weak statistical check that positives carry
 * darker thin structures, and the contact sheet. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <dirent.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imops/core.h"
#include "imops/data.h"
#include "imops/image.h"
#include "testutil.h"

static int count_jpgs(const char *dir) {
  DIR *d = opendir(dir);
  if (!d) return -1;
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    size_t l = strlen(e->d_name);
    if (l > 4 && !strcmp(e->d_name + l - 4, ".jpg")) n++;
  }
  closedir(d);
  return n;
}

static const char *img_path(const char *root, const char *cls, int i) {
  char name[64];
  snprintf(name, sizeof name, "%s/%05d.jpg", cls, i);
  return tu_path(root, name);
}

static im_status_t gen(const char *out, int64_t count, int size, uint64_t seed, int threads, const char *sheet) {
  im_surface_opts_t o = {0};
  o.out_dir = out;
  o.count = count;
  o.size = size;
  o.seed = seed;
  o.threads = threads;
  o.sheet_path = sheet;
  return im_data_surface_generate(&o);
}

/* 1 when the two files have the same bytes. */
static int same_file(const char *a, const char *b) {
  uint8_t *da = NULL, *db = NULL;
  size_t la = 0, lb = 0;
  assert_int_equal(im_file_read(a, 0, &da, &la), IM_OK);
  assert_int_equal(im_file_read(b, 0, &db, &lb), IM_OK);
  int same = la == lb && memcmp(da, db, la) == 0;
  im_free(da);
  im_free(db);
  return same;
}

static void test_layout_and_decode(void **state) {
  const char *tmp = tu_tmpdir();
  const char *root = tu_path(tmp, "ds");
  const char *sheet = tu_path(root, "sheet.png");
  assert_int_equal(gen(root, 20, 64, 7, 1, sheet), IM_OK);
  assert_int_equal(count_jpgs(tu_path(root, "Negative")), 10);
  assert_int_equal(count_jpgs(tu_path(root, "Positive")), 10);
  const char *classes[2] = {"Negative", "Positive"};
  for (int c = 0; c < 2; c++) {
    for (int i = 1; i <= 10; i++) {
      im_image_t img = {0};
      assert_int_equal(im_image_load(img_path(root, classes[c], i), NULL, &img), IM_OK);
      assert_int_equal(img.w, 64);
      assert_int_equal(img.h, 64);
      assert_int_equal(img.c, 3);
      im_image_free(&img);
    }
  }
  /* the contact sheet: a PNG holding two rows of 64x64 tiles */
  im_image_t s = {0};
  assert_int_equal(im_image_load(sheet, NULL, &s), IM_OK);
  assert_true(s.w >= 4 * 64);
  assert_true(s.h >= 2 * 64);
  assert_int_equal(s.c, 3);
  im_image_free(&s);
  tu_rmtree(tmp);
}

static void test_odd_count(void **state) {
  const char *tmp = tu_tmpdir();
  const char *root = tu_path(tmp, "odd");
  assert_int_equal(gen(root, 5, 32, 1, 2, NULL), IM_OK);
  assert_int_equal(count_jpgs(tu_path(root, "Negative")), 3);
  assert_int_equal(count_jpgs(tu_path(root, "Positive")), 2);
  tu_rmtree(tmp);
}

static void test_determinism(void **state) {
  const char *tmp = tu_tmpdir();
  const char *a = tu_path(tmp, "a"), *b = tu_path(tmp, "b"), *c = tu_path(tmp, "c");
  assert_int_equal(gen(a, 20, 64, 7, 1, NULL), IM_OK);
  assert_int_equal(gen(b, 20, 64, 7, 3, NULL), IM_OK);
  assert_int_equal(gen(c, 20, 64, 8, 2, NULL), IM_OK);
  const char *classes[2] = {"Negative", "Positive"};
  int differing = 0;
  for (int k = 0; k < 2; k++) {
    for (int i = 1; i <= 10; i++) {
      assert_true(same_file(img_path(a, classes[k], i), img_path(b, classes[k], i)));
      differing += !same_file(img_path(a, classes[k], i), img_path(c, classes[k], i));
    }
  }
  assert_int_equal(differing, 20);
  /* images within one data set differ from each other too */
  assert_false(same_file(img_path(a, "Negative", 1), img_path(a, "Negative", 2)));
  assert_false(same_file(img_path(a, "Negative", 1), img_path(a, "Positive", 1)));
  tu_rmtree(tmp);
}

static void test_bad_args(void **state) {
  const char *tmp = tu_tmpdir();
  const char *out = tu_path(tmp, "bad");
  assert_int_equal(im_data_surface_generate(NULL), IM_ERR_ARG);
  assert_int_equal(gen(out, 1, 64, 7, 1, NULL), IM_ERR_ARG);
  assert_true(strlen(im_last_error()) > 0);
  assert_int_equal(gen(out, 0, 64, 7, 1, NULL), IM_ERR_ARG);
  assert_int_equal(gen(out, -4, 64, 7, 1, NULL), IM_ERR_ARG);
  assert_int_equal(gen(out, 20, 8, 7, 1, NULL), IM_ERR_ARG);
  assert_int_equal(gen(out, 20, 5000, 7, 1, NULL), IM_ERR_ARG);
  assert_int_equal(gen(NULL, 20, 64, 7, 1, NULL), IM_ERR_ARG);
  im_surface_opts_t o = {.out_dir = out, .count = 4, .size = 32, .quality = 101};
  assert_int_equal(im_data_surface_generate(&o), IM_ERR_ARG);
  /* an output directory that cannot be created: below a regular file */
  const char *file = tu_path(tmp, "plain-file");
  assert_int_equal(tu_write_file(file, "x", 1), 0);
  im_status_t st = gen(tu_path(file, "sub"), 4, 32, 7, 1, NULL);
  assert_int_equal(st, IM_ERR_IO);
  assert_true(strlen(im_last_error()) > 0);
  tu_rmtree(tmp);
}

typedef struct {
  pthread_t caller;
  int calls, bad_thread, bad_order;
  int64_t last_done, last_total;
} prog_t;

static void on_progress(void *user, const char *stage, int64_t done, int64_t total) {
  prog_t *p = user;
  if (!pthread_equal(pthread_self(), p->caller)) p->bad_thread++;
  if (done < p->last_done || strcmp(stage, "generate") != 0) p->bad_order++;
  p->calls++;
  p->last_done = done;
  p->last_total = total;
}

static void test_progress(void **state) {
  prog_t p = {.caller = pthread_self()};
  im_surface_opts_t o = {0};
  const char *tmp = tu_tmpdir();
  o.out_dir = tu_path(tmp, "prog");
  o.count = 150;
  o.size = 24;
  o.seed = 3;
  o.threads = 3;
  o.progress = on_progress;
  o.progress_user = &p;
  assert_int_equal(im_data_surface_generate(&o), IM_OK);
  assert_true(p.calls >= 2);
  assert_int_equal(p.bad_thread, 0);
  assert_int_equal(p.bad_order, 0);
  assert_int_equal(p.last_done, 150);
  assert_int_equal(p.last_total, 150);
  tu_rmtree(tmp);
}

static int cmp_u8(const void *a, const void *b) { return (int)*(const uint8_t *)a - (int)*(const uint8_t *)b; }

/* Mean grey level of the darkest 1% of pixels, relative to the median. */
static double dark_tail(const char *path) {
  im_image_t img = {0};
  im_decode_opts_t o = IM_DECODE_OPTS_DEFAULT;
  o.channels = 1;
  assert_int_equal(im_image_load(path, &o, &img), IM_OK);
  size_t n = (size_t)img.w * img.h;
  qsort(img.data, n, 1, cmp_u8);
  size_t k = n / 100 > 0 ? n / 100 : 1;
  double s = 0;
  for (size_t i = 0; i < k; i++) s += img.data[i];
  double med = img.data[n / 2] > 0 ? img.data[n / 2] : 1;
  im_image_free(&img);
  return s / (double)k / med;
}

static void test_positives_darker(void **state) {
  const char *tmp = tu_tmpdir();
  const char *root = tu_path(tmp, "stat");
  assert_int_equal(gen(root, 40, 64, 7, 0, NULL), IM_OK);
  double neg = 0, pos = 0;
  for (int i = 1; i <= 20; i++) {
    neg += dark_tail(img_path(root, "Negative", i));
    pos += dark_tail(img_path(root, "Positive", i));
  }
  neg /= 20;
  pos /= 20;
  print_message("darkest 1%% / median: negatives %.3f, positives %.3f\n", neg, pos);
  assert_true(pos < neg);
  tu_rmtree(tmp);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_layout_and_decode), cmocka_unit_test(test_odd_count),
      cmocka_unit_test(test_determinism),       cmocka_unit_test(test_bad_args),
      cmocka_unit_test(test_progress),          cmocka_unit_test(test_positives_darker),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
