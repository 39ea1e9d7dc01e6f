/* Unit tests of src/core: status names, allocation funnel, RNG, hashing,
 * parallel_for, buffers and atomic files. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <dirent.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imops/core.h"
#include "testutil.h"

static void test_status_names(void **state) {
  assert_string_equal(im_status_name(IM_OK), "IM_OK");
  assert_string_equal(im_status_name(IM_ERR_FORMAT), "IM_ERR_FORMAT");
  assert_string_equal(im_strerror(IM_ERR_IO), "input/output error");
  assert_int_equal(im_error(IM_ERR_LIMIT, "too big: %d", 7), IM_ERR_LIMIT);
  assert_string_equal(im_last_error(), "too big: 7");
}

static void test_alloc_funnel(void **state) {
  int64_t before = im_alloc_live_bytes();
  char *p = im_malloc(1000);
  assert_non_null(p);
  assert_int_equal(im_alloc_live_bytes() - before, 1000);
  p = im_realloc(p, 3000);
  assert_non_null(p);
  assert_int_equal(im_alloc_live_bytes() - before, 3000);
  im_free(p);
  assert_int_equal(im_alloc_live_bytes(), before);
  im_free(NULL);
  im_alloc_fail_after(2);
  void *a = im_malloc(8);
  void *b = im_malloc(8);
  void *c = im_malloc(8);
  assert_non_null(a);
  assert_null(b);
  assert_non_null(c);
  im_free(a);
  im_free(c);
  assert_null(im_calloc(SIZE_MAX / 2, 4)); /* overflow is refused */
}

static void test_rng(void **state) {
  im_rng_t a, b;
  im_rng_seed(&a, 42);
  im_rng_seed(&b, 42);
  for (int i = 0; i < 100; i++) assert_true(im_rng_next(&a) == im_rng_next(&b));
  im_rng_seed(&b, 43);
  assert_true(im_rng_next(&a) != im_rng_next(&b));
  assert_true(im_rng_derive(1, 2) != im_rng_derive(1, 3));
  /* below(n) is uniform: chi-square over 10 bins */
  int bins[10] = {0};
  im_rng_seed(&a, 7);
  for (int i = 0; i < 100000; i++) bins[im_rng_below(&a, 10)]++;
  double chi = 0;
  for (int i = 0; i < 10; i++) chi += (bins[i] - 10000.0) * (bins[i] - 10000.0) / 10000.0;
  assert_true(chi < 27.9); /* p = 0.001 for 9 degrees of freedom */
  double s = 0, q = 0;
  for (int i = 0; i < 100000; i++) {
    double x = im_rng_normal(&a);
    s += x;
    q += x * x;
  }
  assert_true(s / 1e5 > -0.02 && s / 1e5 < 0.02);
  assert_true(q / 1e5 > 0.97 && q / 1e5 < 1.03);
  int v[50], seen[50] = {0};
  for (int i = 0; i < 50; i++) v[i] = i;
  im_rng_shuffle(&a, v, 50, sizeof v[0]);
  int moved = 0;
  for (int i = 0; i < 50; i++) {
    seen[v[i]]++;
    moved += v[i] != i;
  }
  for (int i = 0; i < 50; i++) assert_int_equal(seen[i], 1);
  assert_true(moved > 30);
}

static void test_hash(void **state) {
  uint8_t data[1000];
  for (int i = 0; i < 1000; i++) data[i] = (uint8_t)(i * 31 + 7);
  uint64_t one = im_hash64(data, sizeof data, 0);
  /* streaming in odd pieces gives the same value */
  for (size_t step = 1; step < 70; step += 7) {
    im_hash_t h;
    im_hash_init(&h, 0);
    for (size_t i = 0; i < sizeof data; i += step) im_hash_update(&h, data + i, i + step > sizeof data ? sizeof data - i : step);
    assert_true(im_hash_final(&h) == one);
  }
  data[500] ^= 1;
  assert_true(im_hash64(data, sizeof data, 0) != one);
  assert_true(im_hash64(data, 0, 0) != im_hash64(data, 1, 0));
  assert_true(im_hash64("", 0, 1) != im_hash64("", 0, 2));
}

static void add_one(void *ctx, int64_t i, int thread) {
  atomic_llong *sum = ctx;
  atomic_fetch_add(&sum[i % 4], i);
}

static void test_parallel_for(void **state) {
  atomic_llong sum[4];
  for (int i = 0; i < 4; i++) atomic_init(&sum[i], 0);
  assert_int_equal(im_parallel_for(10001, 3, add_one, sum), IM_OK);
  long long total = 0;
  for (int i = 0; i < 4; i++) total += atomic_load(&sum[i]);
  assert_true(total == 10001LL * 10000 / 2);
  assert_int_equal(im_parallel_for(0, 2, add_one, sum), IM_OK);
  assert_true(im_num_threads() >= 1);
}

static void test_buf(void **state) {
  im_buf_t b = {0};
  for (int i = 0; i < 1000; i++) assert_int_equal(im_buf_printf(&b, "%d,", i), IM_OK);
  assert_int_equal(strncmp(b.data, "0,1,2,", 6), 0);
  assert_int_equal(b.data[b.len], '\0');
  im_buf_free(&b);
  assert_null(b.data);
}

static int count_entries(const char *dir) {
  DIR *d = opendir(dir);
  int n = 0;
  struct dirent *e;
  while ((e = readdir(d)))
    if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
  closedir(d);
  return n;
}

static void test_atomic_files(void **state) {
  const char *dir = tu_tmpdir();
  const char *p = tu_path(dir, "a/b/c");
  assert_int_equal(im_mkdir_p(p), IM_OK);
  assert_int_equal(im_mkdir_p(p), IM_OK);
  assert_true(im_is_dir(p));
  const char *f = tu_path(p, "x.txt");
  assert_int_equal(im_file_write_atomic(f, "hello", 5), IM_OK);
  assert_int_equal(im_file_write_atomic_ex(f, "hello world", 11, 0), IM_OK);
  uint8_t *d;
  size_t n;
  assert_int_equal(im_file_read(f, 0, &d, &n), IM_OK);
  assert_int_equal(n, 11);
  assert_memory_equal(d, "hello world", 11);
  im_free(d);
  assert_int_equal(im_file_read(f, 5, &d, &n), IM_ERR_LIMIT);
  assert_int_equal(im_file_read(tu_path(p, "missing"), 0, &d, &n), IM_ERR_NOT_FOUND);
  assert_int_equal(im_file_read(p, 0, &d, &n), IM_ERR_IO); /* a directory */
  assert_int_equal(count_entries(p), 1);                  /* no temporary left behind */
  /* an aborted write leaves the old file untouched */
  im_atomic_file_t *af;
  assert_int_equal(im_atomic_file_open(f, &af), IM_OK);
  assert_true(write(im_atomic_file_fd(af), "partial", 7) == 7);
  im_atomic_file_abort(af);
  assert_int_equal(im_file_read(f, 0, &d, &n), IM_OK);
  assert_memory_equal(d, "hello world", 11);
  im_free(d);
  assert_int_equal(count_entries(p), 1);
  assert_int_equal(im_file_write_atomic(tu_path(dir, "no/such/dir/x"), "x", 1), IM_ERR_IO);
  char *j = im_path_join("a/", "b");
  assert_string_equal(j, "a/b");
  im_free(j);
  tu_rmtree(dir);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_status_names), cmocka_unit_test(test_alloc_funnel), cmocka_unit_test(test_rng),
      cmocka_unit_test(test_hash),         cmocka_unit_test(test_parallel_for), cmocka_unit_test(test_buf),
      cmocka_unit_test(test_atomic_files),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
