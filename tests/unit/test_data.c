/* Unit tests of src/data: ImageFolder scanning, the split (determinism and
 * stratification), mean/std against an independent computation, the cache
 * (reuse, invalidation, corruption), bad input, and IDX import. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "imops/core.h"
#include "imops/data.h"
#include "imops/image.h"
#include "testutil.h"

/* Writes an RGB (c=3) or grey PNG of w x h whose pixels depend on (seed, x, y). */
static void write_png(const char *path, int w, int h, int c, int seed) {
  im_image_t img;
  assert_int_equal(im_image_alloc(&img, w, h, c), IM_OK);
  for (int i = 0; i < w * h * c; i++) img.data[i] = (uint8_t)((i * 7 + seed * 53 + (i / (w * c)) * 11) & 0xff);
  uint8_t *png;
  size_t len;
  assert_int_equal(im_image_encode_png(&img, &png, &len), IM_OK);
  assert_int_equal(tu_write_file(path, png, len), 0);
  im_free(png);
  im_image_free(&img);
}

static void write_jpeg(const char *path, int w, int h, int seed) {
  im_image_t img;
  assert_int_equal(im_image_alloc(&img, w, h, 3), IM_OK);
  for (int i = 0; i < w * h * 3; i++) img.data[i] = (uint8_t)((i * 3 + seed * 17) & 0xff);
  uint8_t *jpg;
  size_t len;
  assert_int_equal(im_image_encode_jpeg(&img, 90, &jpg, &len), IM_OK);
  assert_int_equal(tu_write_file(path, jpg, len), 0);
  im_free(jpg);
  im_image_free(&img);
}

/* A folder with classes "a" (na images) and "b" (nb images) of size x size RGB PNGs. */
static const char *make_folder(int na, int nb, int size) {
  const char *root = tu_tmpdir();
  const char *a = tu_path(root, "a"), *b = tu_path(root, "b");
  mkdir(a, 0755);
  mkdir(b, 0755);
  char name[64];
  for (int i = 0; i < na; i++) {
    snprintf(name, sizeof name, "%03d.png", i);
    write_png(tu_path(a, name), size, size, 3, i);
  }
  for (int i = 0; i < nb; i++) {
    snprintf(name, sizeof name, "%03d.png", i);
    write_png(tu_path(b, name), size, size, 3, 1000 + i);
  }
  return root;
}

static im_status_t run(const char *root, int size, uint64_t seed, im_preprocess_result_t **r) {
  im_preprocess_opts_t o = {.data_dir = root, .img_size = size, .ratios = {0.7, 0.15, 0.15}, .seed = seed, .threads = 2};
  return im_data_preprocess(&o, r);
}

static char *read_text(const char *path) {
  uint8_t *d;
  size_t n;
  if (im_file_read(path, 0, &d, &n) != IM_OK) return NULL;
  return (char *)d;
}

static void test_split_deterministic_and_stratified(void **state) {
  const char *root = make_folder(37, 23, 8);
  im_preprocess_result_t *r;
  assert_int_equal(run(root, 8, 42, &r), IM_OK);
  assert_int_equal(r->n_classes, 2);
  assert_string_equal(r->classes[0], "a");
  assert_int_equal(r->total, 60);
  int64_t na[3] = {r->counts[0][0], r->counts[0][1], r->counts[0][2]};
  int64_t nb[3] = {r->counts[1][0], r->counts[1][1], r->counts[1][2]};
  const double ratio[3] = {0.7, 0.15, 0.15};
  for (int s = 0; s < 3; s++) {
    assert_true(fabs((double)na[s] - 37 * ratio[s]) <= 1.0);
    assert_true(fabs((double)nb[s] - 23 * ratio[s]) <= 1.0);
  }
  char *s1 = read_text(r->split_path);
  assert_non_null(s1);
  im_preprocess_result_free(r);
  /* the same seed again (forced rebuild): the same split */
  im_preprocess_opts_t o = {.data_dir = root, .img_size = 8, .ratios = {0.7, 0.15, 0.15}, .seed = 42, .force = 1};
  assert_int_equal(im_data_preprocess(&o, &r), IM_OK);
  char *s2 = read_text(r->split_path);
  assert_string_equal(s1, s2);
  im_preprocess_result_free(r);
  /* another seed: another split, same counts */
  assert_int_equal(run(root, 8, 43, &r), IM_OK);
  assert_int_equal(r->cache_reused, 0);
  char *s3 = read_text(r->split_path);
  assert_true(strcmp(s1, s3) != 0);
  assert_true(r->counts[0][0] == na[0] && r->counts[1][0] == nb[0]);
  im_preprocess_result_free(r);
  im_free(s1);
  im_free(s2);
  im_free(s3);
  tu_rmtree(root);
}

/* mean/std from the train files named in split.json, decoded here, two-pass. */
static void test_mean_std_reference(void **state) {
  const char *root = make_folder(12, 9, 10);
  im_preprocess_result_t *r;
  assert_int_equal(run(root, 10, 5, &r), IM_OK); /* same size: no resampling in the way */
  json_error_t err;
  json_t *sj = json_load_file(r->split_path, 0, &err);
  assert_non_null(sj);
  json_t *files = json_object_get(sj, "files");
  double sum[3] = {0}, n = 0;
  size_t i;
  json_t *f;
  for (int pass = 0; pass < 2; pass++) {
    double sq[3] = {0};
    json_array_foreach(files, i, f) {
      if (strcmp(json_string_value(json_object_get(f, "split")), "train")) continue;
      im_image_t img = {0};
      assert_int_equal(im_image_load(tu_path(root, json_string_value(json_object_get(f, "file"))), NULL, &img), IM_OK);
      for (int k = 0; k < img.w * img.h; k++)
        for (int c = 0; c < 3; c++) {
          double v = img.data[3 * k + c] / 255.0;
          if (pass == 0) {
            sum[c] += v;
            n += c == 0;
          } else
            sq[c] += (v - sum[c] / n) * (v - sum[c] / n);
        }
      im_image_free(&img);
    }
    if (pass == 1)
      for (int c = 0; c < 3; c++) {
        assert_true(fabs(r->mean[c] - sum[c] / n) < 1e-9);
        assert_true(fabs(r->std[c] - sqrt(sq[c] / n)) < 1e-9);
      }
  }
  /* mean-std.txt: six lines, the seed's format */
  char *ms = read_text(r->mean_std_path);
  double v[6];
  assert_int_equal(sscanf(ms, "%lf\n%lf\n%lf\n%lf\n%lf\n%lf\n", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5]), 6);
  for (int c = 0; c < 3; c++) {
    assert_true(fabs(v[c] - r->mean[c]) < 1e-8);
    assert_true(fabs(v[3 + c] - r->std[c]) < 1e-8);
  }
  im_free(ms);
  json_decref(sj);
  im_preprocess_result_free(r);
  tu_rmtree(root);
}

static void test_cache_reuse_and_invalidation(void **state) {
  const char *root = make_folder(10, 10, 16);
  im_preprocess_result_t *r;
  assert_int_equal(run(root, 8, 1, &r), IM_OK);
  assert_int_equal(r->cache_reused, 0);
  uint64_t h1 = r->content_hash;
  /* the cache holds the resized images with their labels */
  im_cache_t *c;
  assert_int_equal(im_cache_open(r->cache_path, &c), IM_OK);
  im_cache_info_t info;
  im_cache_get_info(c, &info);
  assert_int_equal(info.n, 20);
  assert_int_equal(info.size, 8);
  assert_int_equal(info.channels, 3);
  assert_true(info.content_hash == h1);
  im_image_t img = {0}, small = {0};
  assert_int_equal(im_image_load(tu_path(root, "b/003.png"), NULL, &img), IM_OK);
  assert_int_equal(im_image_resize(&img, 8, 8, IM_RESIZE_BILINEAR, &small), IM_OK);
  assert_memory_equal(im_cache_pixels(c, 13), small.data, 8 * 8 * 3);
  assert_int_equal(im_cache_label(c, 13), 1);
  assert_int_equal(im_cache_label(c, 2), 0);
  assert_true(im_cache_split(c, 13) <= IM_SPLIT_TEST);
  im_image_free(&img);
  im_image_free(&small);
  im_cache_close(c);
  im_preprocess_result_free(r);
  /* unchanged: reused */
  assert_int_equal(run(root, 8, 1, &r), IM_OK);
  assert_int_equal(r->cache_reused, 1);
  assert_true(r->content_hash == h1);
  assert_int_equal(r->total, 20);
  im_preprocess_result_free(r);
  /* one image changed: rebuilt, new hash */
  write_png(tu_path(root, "a/004.png"), 16, 16, 3, 999);
  assert_int_equal(run(root, 8, 1, &r), IM_OK);
  assert_int_equal(r->cache_reused, 0);
  assert_true(r->content_hash != h1);
  uint64_t h2 = r->content_hash;
  im_preprocess_result_free(r);
  /* an image added: rebuilt */
  write_png(tu_path(root, "b/100.png"), 16, 16, 3, 5);
  assert_int_equal(run(root, 8, 1, &r), IM_OK);
  assert_int_equal(r->cache_reused, 0);
  assert_int_equal(r->total, 21);
  assert_true(r->content_hash != h2);
  /* a corrupt (truncated) cache is rebuilt, never used */
  assert_int_equal(truncate(r->cache_path, 5000), 0);
  assert_int_equal(im_cache_open(r->cache_path, &c), IM_ERR_FORMAT);
  im_preprocess_result_free(r);
  assert_int_equal(run(root, 8, 1, &r), IM_OK);
  assert_int_equal(r->cache_reused, 0);
  assert_int_equal(im_cache_open(r->cache_path, &c), IM_OK);
  im_cache_close(c);
  im_preprocess_result_free(r);
  /* another size: its own cache */
  assert_int_equal(run(root, 10, 1, &r), IM_OK);
  assert_int_equal(r->cache_reused, 0);
  assert_non_null(strstr(r->cache_path, "cache-10.bin"));
  im_preprocess_result_free(r);
  tu_rmtree(root);
}

static int has_bad(const im_preprocess_result_t *r, const char *path, const char *word) {
  for (int64_t i = 0; i < r->n_bad; i++)
    if (!strcmp(r->bad[i].path, path)) return word == NULL || strstr(r->bad[i].reason, word) != NULL;
  return 0;
}

static void test_bad_files_are_skipped_and_listed(void **state) {
  const char *root = make_folder(8, 8, 16);
  const char *a = tu_path(root, "a"), *b = tu_path(root, "b");
  assert_int_equal(tu_write_file(tu_path(a, "zero.jpg"), "", 0), 0);
  assert_int_equal(tu_write_file(tu_path(a, "text.png"), "hello, I am not a PNG", 21), 0);
  write_jpeg(tu_path(b, "whole.jpg"), 32, 32, 1);
  uint8_t *d;
  size_t n;
  assert_int_equal(im_file_read(tu_path(b, "whole.jpg"), 0, &d, &n), IM_OK);
  assert_int_equal(tu_write_file(tu_path(b, "truncated.jpg"), d, n / 2), 0);
  memset(d + n / 3, 0x55, n / 3); /* corrupt the entropy-coded data */
  assert_int_equal(tu_write_file(tu_path(b, "corrupt.jpg"), d, n), 0);
  im_free(d);
  /* a PNG header claiming 100000 x 100000 */
  write_png(tu_path(a, "huge.png"), 4, 4, 3, 1);
  assert_int_equal(im_file_read(tu_path(a, "huge.png"), 0, &d, &n), IM_OK);
  d[16] = 0, d[17] = 1, d[18] = 0x86, d[19] = 0xA0; /* width 100000 */
  d[20] = 0, d[21] = 1, d[22] = 0x86, d[23] = 0xA0; /* height (CRC now wrong too) */
  assert_int_equal(tu_write_file(tu_path(a, "huge.png"), d, n), 0);
  im_free(d);
  assert_int_equal(symlink("/nonexistent/file.png", tu_path(a, "dangling.png")), 0);
  /* hidden files and non-images are not data */
  assert_int_equal(tu_write_file(tu_path(a, ".hidden.png"), "x", 1), 0);
  assert_int_equal(tu_write_file(tu_path(a, "notes.txt"), "x", 1), 0);
  im_preprocess_result_t *r;
  assert_int_equal(run(root, 8, 42, &r), IM_OK);
  assert_int_equal(r->total, 17); /* 16 good + whole.jpg */
  assert_true(has_bad(r, "a/zero.jpg", "empty"));
  assert_true(has_bad(r, "a/text.png", NULL));
  assert_true(has_bad(r, "b/truncated.jpg", NULL));
  assert_true(has_bad(r, "b/corrupt.jpg", NULL));
  assert_true(has_bad(r, "a/huge.png", NULL));
  assert_true(has_bad(r, "a/dangling.png", NULL));
  assert_int_equal(r->n_bad, 6);
  im_preprocess_result_free(r);
  /* the report survives a reuse */
  assert_int_equal(run(root, 8, 42, &r), IM_OK);
  assert_int_equal(r->cache_reused, 1);
  assert_int_equal(r->n_bad, 6);
  im_preprocess_result_free(r);
  tu_rmtree(root);
}

static void test_structural_errors(void **state) {
  im_preprocess_result_t *r;
  /* a class whose images are all bad */
  const char *root = make_folder(5, 0, 8);
  assert_int_equal(tu_write_file(tu_path(root, "b/bad.jpg"), "nope", 4), 0);
  assert_int_equal(run(root, 8, 1, &r), IM_ERR_EMPTY);
  assert_non_null(strstr(im_last_error(), "'b'"));
  assert_int_equal(r->n_bad, 1);
  im_preprocess_result_free(r);
  /* an empty class folder */
  assert_int_equal(unlink(tu_path(root, "b/bad.jpg")), 0);
  assert_int_equal(run(root, 8, 1, &r), IM_ERR_EMPTY);
  im_preprocess_result_free(r);
  tu_rmtree(root);
  /* a single class */
  root = make_folder(5, 0, 8);
  tu_rmtree(tu_path(root, "b"));
  assert_int_equal(run(root, 8, 1, &r), IM_ERR_FORMAT);
  assert_non_null(strstr(im_last_error(), "single class"));
  im_preprocess_result_free(r);
  tu_rmtree(root);
  /* not an ImageFolder: images at the top */
  root = tu_tmpdir();
  write_png(tu_path(root, "x.png"), 4, 4, 3, 1);
  assert_int_equal(run(root, 8, 1, &r), IM_ERR_FORMAT);
  assert_non_null(strstr(im_last_error(), "not an ImageFolder"));
  im_preprocess_result_free(r);
  tu_rmtree(root);
  /* no such folder; bad options */
  assert_int_equal(run("/nonexistent/imops", 8, 1, &r), IM_ERR_NOT_FOUND);
  im_preprocess_result_free(r);
  im_preprocess_opts_t o = {.data_dir = "/tmp", .img_size = 8, .ratios = {0.5, 0.5, 0.5}};
  assert_int_equal(im_data_preprocess(&o, &r), IM_ERR_ARG);
  o.ratios[2] = 0;
  o.img_size = 2;
  assert_int_equal(im_data_preprocess(&o, &r), IM_ERR_ARG);
}

static void test_grey_dataset_and_stale_temps(void **state) {
  const char *root = tu_tmpdir();
  mkdir(tu_path(root, "x"), 0755);
  mkdir(tu_path(root, "y"), 0755);
  for (int i = 0; i < 6; i++) {
    char name[32];
    snprintf(name, sizeof name, "x/%d.png", i);
    write_png(tu_path(root, name), 9, 9, 1, i);
    snprintf(name, sizeof name, "y/%d.png", i);
    write_png(tu_path(root, name), 9, 9, 1, 50 + i);
  }
  /* a temporary left by a killed writer (no such pid) */
  mkdir(tu_path(root, ".imops"), 0755);
  const char *stale = tu_path(root, ".imops/.cache-9.bin.tmp-999999999-0");
  assert_int_equal(tu_write_file(stale, "half", 4), 0);
  im_preprocess_result_t *r;
  assert_int_equal(run(root, 9, 3, &r), IM_OK);
  assert_int_equal(r->channels, 1);
  assert_true(r->mean[0] == r->mean[1] && r->mean[1] == r->mean[2]);
  assert_int_equal(access(stale, F_OK), -1);
  im_preprocess_result_free(r);
  tu_rmtree(root);
}

/* ---- IDX import ---------------------------------------------------------- */
static void write_idx(const char *path, int gz, const uint8_t *hdr, size_t hl, const uint8_t *data, size_t dl) {
  if (gz) {
    gzFile g = gzopen(path, "wb");
    assert_non_null(g);
    gzwrite(g, hdr, (unsigned)hl);
    if (dl) gzwrite(g, data, (unsigned)dl);
    gzclose(g);
  } else {
    FILE *f = fopen(path, "wb");
    fwrite(hdr, 1, hl, f);
    if (dl) fwrite(data, 1, dl, f);
    fclose(f);
  }
}

static void test_idx_import(void **state) {
  const char *dir = tu_tmpdir();
  enum { N = 30, R = 5, C = 4 };
  uint8_t ih[16] = {0, 0, 8, 3, 0, 0, 0, N, 0, 0, 0, R, 0, 0, 0, C}, lh[8] = {0, 0, 8, 1, 0, 0, 0, N};
  uint8_t px[N * R * C], lab[N];
  for (int i = 0; i < N * R * C; i++) px[i] = (uint8_t)(i * 13);
  for (int i = 0; i < N; i++) lab[i] = (uint8_t)(i % 3);
  const char *ip = tu_path(dir, "imgs.gz"), *lp = tu_path(dir, "labels");
  write_idx(ip, 1, ih, 16, px, sizeof px);
  write_idx(lp, 0, lh, 8, lab, sizeof lab);
  const char *names[] = {"cat", "dog", "eel"};
  im_idx_import_opts_t o = {.images_path = ip, .labels_path = lp, .out_dir = tu_path(dir, "out"), .class_names = names,
                            .n_class_names = 3};
  im_idx_import_result_t res;
  assert_int_equal(im_data_idx_import(&o, &res), IM_OK);
  assert_int_equal(res.count, N);
  assert_int_equal(res.n_classes, 3);
  im_image_t img = {0};
  /* image 4 has label 1: the second image of class dog */
  assert_int_equal(im_image_load(tu_path(dir, "out/1_dog/00002.png"), NULL, &img), IM_OK);
  assert_int_equal(img.w, C);
  assert_int_equal(img.h, R);
  assert_int_equal(img.c, 1);
  assert_memory_equal(img.data, px + 4 * R * C, R * C);
  im_image_free(&img);
  /* the result is an ImageFolder that preprocess takes */
  im_preprocess_result_t *r;
  assert_int_equal(run(tu_path(dir, "out"), 8, 1, &r), IM_OK);
  assert_int_equal(r->total, N);
  assert_string_equal(r->classes[2], "2_eel");
  im_preprocess_result_free(r);
  /* bad input: truncated pixels, count mismatch, bad magic, too few names */
  write_idx(ip, 1, ih, 16, px, sizeof px - 1);
  assert_int_equal(im_data_idx_import(&o, &res), IM_ERR_FORMAT);
  assert_non_null(strstr(im_last_error(), "truncated"));
  write_idx(ip, 0, ih, 16, px, sizeof px);
  lh[7] = N - 1;
  write_idx(lp, 0, lh, 8, lab, N - 1);
  assert_int_equal(im_data_idx_import(&o, &res), IM_ERR_FORMAT);
  lh[7] = N;
  lh[3] = 2;
  write_idx(lp, 0, lh, 8, lab, N);
  assert_int_equal(im_data_idx_import(&o, &res), IM_ERR_FORMAT);
  lh[3] = 1;
  write_idx(lp, 0, lh, 8, lab, N);
  o.n_class_names = 2;
  assert_int_equal(im_data_idx_import(&o, &res), IM_ERR_ARG);
  o.images_path = tu_path(dir, "missing");
  assert_int_equal(im_data_idx_import(&o, &res), IM_ERR_NOT_FOUND);
  /* a corrupt gzip stream */
  write_idx(ip, 1, ih, 16, px, sizeof px);
  uint8_t *d;
  size_t n;
  assert_int_equal(im_file_read(ip, 0, &d, &n), IM_OK);
  assert_int_equal(tu_write_file(ip, d, n - 20), 0);
  im_free(d);
  o.images_path = ip;
  o.n_class_names = 3;
  assert_int_not_equal(im_data_idx_import(&o, &res), IM_OK);
  tu_rmtree(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_split_deterministic_and_stratified),
      cmocka_unit_test(test_mean_std_reference),
      cmocka_unit_test(test_cache_reuse_and_invalidation),
      cmocka_unit_test(test_bad_files_are_skipped_and_listed),
      cmocka_unit_test(test_structural_errors),
      cmocka_unit_test(test_grey_dataset_and_stale_temps),
      cmocka_unit_test(test_idx_import),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
