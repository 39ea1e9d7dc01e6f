/* Unit tests of src/tensor: tensors (shapes, views, copies), arenas (alignment,
 * limits, rewind, measure-then-reserve planning), and safetensors files (round
 * trips through file and memory, and strict rejection of malformed input:
 * header lengths, offsets out of range, overlaps, gaps, size mismatches,
 * truncation, bad JSON), plus allocation-failure injection on the parser. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imops/core.h"
#include "imops/tensor.h"
#include "testutil.h"

static void test_tensor_basics(void **state) {
  assert_int_equal(im_dtype_size(IM_F32), 4);
  assert_int_equal(im_dtype_size(IM_U8), 1);
  assert_int_equal(im_dtype_size(IM_I32), 4);
  assert_int_equal(im_dtype_size((im_dtype_t)99), 0);
  assert_string_equal(im_dtype_name(IM_I32), "I32");

  im_tensor_t t;
  assert_int_equal(im_tensor_alloc(&t, IM_F32, 4, (int64_t[]){2, 3, 5, 7}), IM_OK);
  assert_int_equal(im_tensor_numel(&t), 210);
  assert_int_equal(im_tensor_nbytes(&t), 840);
  assert_int_equal((uintptr_t)t.data % IM_TENSOR_ALIGN, 0);
  assert_non_null(t.owned);
  float *p = im_tensor_f32(&t);
  for (int i = 0; i < 210; i++) assert_true(p[i] == 0.0f); /* zeroed */
  im_tensor_fill_f32(&t, 2.5f);
  assert_true(p[209] == 2.5f);

  im_tensor_t v;
  assert_int_equal(im_tensor_reshape(&t, 2, (int64_t[]){6, 35}, &v), IM_OK);
  assert_ptr_equal(v.data, t.data);
  assert_null(v.owned);
  assert_int_equal(im_tensor_reshape(&t, 2, (int64_t[]){6, 36}, &v), IM_ERR_ARG);
  assert_false(im_tensor_same_shape(&t, &v));

  im_tensor_t c;
  assert_int_equal(im_tensor_alloc(&c, IM_F32, 1, (int64_t[]){210}), IM_OK);
  assert_int_equal(im_tensor_copy(&c, &t), IM_OK);
  assert_true(im_tensor_f32(&c)[100] == 2.5f);
  im_tensor_zero(&c);
  assert_true(im_tensor_f32(&c)[100] == 0.0f);
  im_tensor_t u8;
  assert_int_equal(im_tensor_alloc(&u8, IM_U8, 1, (int64_t[]){210}), IM_OK);
  assert_int_equal(im_tensor_copy(&u8, &t), IM_ERR_ARG); /* dtype differs */
  im_tensor_free(&u8);
  im_tensor_free(&c);
  im_tensor_free(&t);
  assert_null(t.data);
  im_tensor_free(NULL);

  /* scalars, empty tensors, bad shapes */
  assert_int_equal(im_tensor_alloc(&t, IM_F32, 0, NULL), IM_OK);
  assert_int_equal(im_tensor_numel(&t), 1);
  im_tensor_free(&t);
  assert_int_equal(im_tensor_alloc(&t, IM_I32, 2, (int64_t[]){0, 5}), IM_OK);
  assert_int_equal(im_tensor_nbytes(&t), 0);
  im_tensor_free(&t);
  assert_int_equal(im_tensor_alloc(&t, IM_F32, 2, (int64_t[]){-1, 5}), IM_ERR_ARG);
  assert_null(t.data);
  assert_int_equal(im_tensor_alloc(&t, IM_F32, 7, (int64_t[]){1, 1, 1, 1, 1, 1, 1}), IM_ERR_ARG);
  assert_int_equal(im_tensor_check_shape(IM_F32, 3, (int64_t[]){1 << 30, 1 << 30, 1 << 30}), IM_ERR_ARG);
  assert_int_equal(im_tensor_check_shape((im_dtype_t)7, 1, (int64_t[]){1}), IM_ERR_ARG);
  int64_t before = im_alloc_live_bytes();
  im_alloc_fail_after(1);
  assert_int_equal(im_tensor_alloc(&t, IM_F32, 1, (int64_t[]){16}), IM_ERR_NOMEM);
  im_alloc_fail_after(0);
  assert_null(t.data);
  assert_int_equal(im_alloc_live_bytes(), before);
}

static void test_arena(void **state) {
  im_arena_t *a;
  assert_int_equal(im_arena_new(1000, &a), IM_OK);
  assert_int_equal(im_arena_capacity(a), 1024); /* rounded up to 64 */
  assert_false(im_arena_is_measuring(a));
  void *p1, *p2, *p3;
  assert_int_equal(im_arena_alloc(a, 1, &p1), IM_OK);
  assert_int_equal(im_arena_alloc(a, 100, &p2), IM_OK);
  assert_int_equal((uintptr_t)p1 % 64, 0);
  assert_int_equal((uintptr_t)p2 % 64, 0);
  assert_int_equal((char *)p2 - (char *)p1, 64);
  assert_int_equal(im_arena_used(a), 64 + 128);
  size_t mark = im_arena_mark(a);
  assert_int_equal(im_arena_alloc(a, 800, &p3), IM_OK);
  assert_int_equal(im_arena_used(a), 1024);
  void *p4 = (void *)&a;
  assert_int_equal(im_arena_alloc(a, 1, &p4), IM_ERR_LIMIT); /* full */
  assert_null(p4);
  im_arena_rewind(a, mark);
  assert_int_equal(im_arena_alloc(a, 64, &p4), IM_OK);
  assert_ptr_equal(p4, p3);
  memset(p4, 0xab, 64); /* the memory is usable (ASan would object otherwise) */
  assert_int_equal(im_arena_peak(a), 1024);
  im_arena_reset(a);
  assert_int_equal(im_arena_used(a), 0);
  assert_int_equal(im_arena_peak(a), 1024);
  im_tensor_t t;
  assert_int_equal(im_tensor_arena(a, &t, IM_F32, 2, (int64_t[]){16, 16}), IM_OK);
  assert_ptr_equal(t.data, p1);
  assert_null(t.owned);
  im_tensor_free(&t); /* a view: nothing freed */
  assert_int_equal(im_tensor_arena(a, &t, IM_F32, 2, (int64_t[]){16, 16}), IM_ERR_LIMIT);
  assert_int_equal(im_tensor_arena(a, &t, IM_F32, 1, (int64_t[]){-3}), IM_ERR_ARG);
  im_arena_free(a);
  im_arena_free(NULL);
}

/* A stand-in for one training step's allocation sequence. */
static im_status_t plan_step(im_arena_t *a, im_tensor_t *ts, int batch) {
  static const int64_t chans[5] = {3, 32, 32, 64, 10};
  for (int i = 0; i < 5; i++) {
    im_status_t st = im_tensor_arena(a, &ts[i], IM_F32, 4, (int64_t[]){batch, chans[i], 7 + i, 5});
    if (st != IM_OK) return st;
  }
  /* scratch that is released again before the step ends */
  size_t m = im_arena_mark(a);
  void *scratch;
  im_status_t st = im_arena_alloc(a, 10000, &scratch);
  im_arena_rewind(a, m);
  if (st != IM_OK) return st;
  return im_tensor_arena(a, &ts[5], IM_I32, 1, (int64_t[]){batch});
}

static void test_arena_planning(void **state) {
  im_arena_t *a;
  im_tensor_t ts[6];
  assert_int_equal(im_arena_new(0, &a), IM_OK);
  assert_true(im_arena_is_measuring(a));
  assert_int_equal(plan_step(a, ts, 3), IM_OK);
  for (int i = 0; i < 6; i++) assert_null(ts[i].data); /* measured only */
  size_t need = im_arena_peak(a);
  assert_true(need >= im_arena_used(a) - 64 + 10000); /* the rewound scratch counts in the peak */
  int64_t live = im_alloc_live_bytes();
  assert_int_equal(im_arena_reserve(a, need), IM_OK);
  assert_false(im_arena_is_measuring(a));
  assert_true(im_alloc_live_bytes() - live >= (int64_t)need);
  for (int step = 0; step < 3; step++) {
    im_arena_reset(a);
    live = im_alloc_live_bytes();
    assert_int_equal(plan_step(a, ts, 3), IM_OK);
    assert_int_equal(im_alloc_live_bytes(), live); /* no malloc in the step */
    for (int i = 0; i < 6; i++) {
      assert_non_null(ts[i].data);
      memset(ts[i].data, 1, im_tensor_nbytes(&ts[i]));
    }
  }
  assert_int_equal(im_arena_peak(a), need);
  /* a bigger batch does not fit the plan */
  im_arena_reset(a);
  assert_int_equal(plan_step(a, ts, 4), IM_ERR_LIMIT);
  /* reserve(0): a plan that allocated nothing still gives a valid arena */
  assert_int_equal(im_arena_reserve(a, 0), IM_OK);
  assert_int_equal(im_arena_capacity(a), 64);
  im_arena_free(a);
}

/* ---- safetensors ---- */

static void fill_pattern(im_tensor_t *t, int seed) {
  uint8_t *p = t->data;
  for (size_t i = 0; i < im_tensor_nbytes(t); i++) p[i] = (uint8_t)(i * 31 + seed * 7 + (i >> 8));
}

static void test_safetensors_round_trip(void **state) {
  const char *dir = tu_tmpdir();
  const char *path = tu_path(dir, "w.safetensors");
  im_tensor_t a, b, c, s, e;
  assert_int_equal(im_tensor_alloc(&a, IM_F32, 4, (int64_t[]){4, 3, 3, 3}), IM_OK);
  assert_int_equal(im_tensor_alloc(&b, IM_U8, 1, (int64_t[]){5}), IM_OK); /* odd size: alignment matters */
  assert_int_equal(im_tensor_alloc(&c, IM_I32, 2, (int64_t[]){2, 3}), IM_OK);
  assert_int_equal(im_tensor_alloc(&s, IM_F32, 0, NULL), IM_OK);
  assert_int_equal(im_tensor_alloc(&e, IM_F32, 2, (int64_t[]){0, 4}), IM_OK);
  fill_pattern(&a, 1);
  fill_pattern(&b, 2);
  fill_pattern(&c, 3);
  im_tensor_f32(&s)[0] = 3.25f;
  /* the U8 tensor first: the writer must still keep the F32/I32 data aligned */
  im_named_tensor_t ts[] = {{"mask", &b}, {"conv.weight", &a}, {"labels", &c}, {"scale", &s}, {"empty", &e}};
  im_safetensors_meta_t meta[] = {{"format", "pt"}, {"note", "caf\xc3\xa9 \"quoted\""}};
  assert_int_equal(im_safetensors_write(path, ts, 5, meta, 2), IM_OK);

  im_safetensors_t *f;
  assert_int_equal(im_safetensors_load(path, 0, &f), IM_OK);
  assert_int_equal(im_safetensors_count(f), 5);
  assert_string_equal(im_safetensors_metadata(f, "format"), "pt");
  assert_string_equal(im_safetensors_metadata(f, "note"), "caf\xc3\xa9 \"quoted\"");
  assert_null(im_safetensors_metadata(f, "absent"));
  assert_int_equal(im_safetensors_metadata_count(f), 2);
  assert_non_null(im_safetensors_metadata(f, im_safetensors_metadata_key(f, 1)));
  assert_null(im_safetensors_metadata_key(f, 2));
  for (size_t i = 0; i < 5; i++) {
    im_tensor_t v;
    const char *name = im_safetensors_name(f, i);
    assert_int_equal(im_safetensors_get(f, name, &v), IM_OK);
    const im_tensor_t *orig = NULL;
    for (int j = 0; j < 5; j++)
      if (!strcmp(ts[j].name, name)) orig = ts[j].tensor;
    assert_non_null(orig);
    assert_true(im_tensor_same_shape(&v, orig));
    assert_int_equal((uintptr_t)v.data % im_dtype_size(v.dtype), 0);
    if (im_tensor_nbytes(&v)) assert_memory_equal(v.data, orig->data, im_tensor_nbytes(&v));
  }
  assert_null(im_safetensors_name(f, 5));
  im_tensor_t v;
  assert_int_equal(im_safetensors_get(f, "nope", &v), IM_ERR_NOT_FOUND);
  im_tensor_t dst;
  assert_int_equal(im_tensor_alloc(&dst, IM_F32, 4, (int64_t[]){4, 3, 3, 3}), IM_OK);
  assert_int_equal(im_safetensors_read_into(f, "conv.weight", &dst), IM_OK);
  assert_memory_equal(dst.data, a.data, im_tensor_nbytes(&a));
  im_tensor_free(&dst);
  assert_int_equal(im_tensor_alloc(&dst, IM_F32, 4, (int64_t[]){4, 3, 3, 2}), IM_OK);
  assert_int_equal(im_safetensors_read_into(f, "conv.weight", &dst), IM_ERR_ARG);
  assert_non_null(strstr(im_last_error(), "F32[4,3,3,3]"));
  im_tensor_free(&dst);
  assert_int_equal(im_tensor_alloc(&dst, IM_I32, 4, (int64_t[]){4, 3, 3, 3}), IM_OK);
  assert_int_equal(im_safetensors_read_into(f, "conv.weight", &dst), IM_ERR_ARG); /* dtype differs */
  im_tensor_free(&dst);
  im_safetensors_free(f);

  /* the in-memory form is the same bytes; the header is padded to 8 */
  uint8_t *mem, *file;
  size_t mlen, flen;
  assert_int_equal(im_safetensors_serialize(ts, 5, meta, 2, &mem, &mlen), IM_OK);
  assert_int_equal(im_file_read(path, 0, &file, &flen), IM_OK);
  assert_int_equal(mlen, flen);
  assert_memory_equal(mem, file, mlen);
  uint64_t hl = 0;
  for (int i = 7; i >= 0; i--) hl = hl << 8 | mem[i];
  assert_int_equal(hl % 8, 0);
  assert_int_equal(mem[8], '{');
  assert_int_equal(im_safetensors_parse(mem, mlen, &f), IM_OK);
  im_safetensors_free(f);
  im_free(file);
  im_free(mem);

  /* writer refusals */
  im_named_tensor_t dup[] = {{"x", &a}, {"x", &b}};
  assert_int_equal(im_safetensors_write(path, dup, 2, NULL, 0), IM_ERR_ARG);
  im_named_tensor_t reserved[] = {{"__metadata__", &a}};
  assert_int_equal(im_safetensors_write(path, reserved, 1, NULL, 0), IM_ERR_ARG);
  im_safetensors_meta_t dupm[] = {{"k", "1"}, {"k", "2"}};
  assert_int_equal(im_safetensors_write(path, ts, 1, dupm, 2), IM_ERR_ARG);
  im_named_tensor_t badutf[] = {{"\xff\xfe", &a}};
  assert_int_equal(im_safetensors_write(path, badutf, 1, NULL, 0), IM_ERR_ARG);
  assert_int_equal(im_safetensors_write(tu_path(dir, "no/such/dir.safetensors"), ts, 1, NULL, 0), IM_ERR_IO);
  /* the failed writes left the earlier file whole */
  assert_int_equal(im_safetensors_load(path, 0, &f), IM_OK);
  assert_int_equal(im_safetensors_count(f), 5);
  im_safetensors_free(f);
  /* no tensors at all is a valid file */
  assert_int_equal(im_safetensors_write(path, NULL, 0, NULL, 0), IM_OK);
  assert_int_equal(im_safetensors_load(path, 0, &f), IM_OK);
  assert_int_equal(im_safetensors_count(f), 0);
  im_safetensors_free(f);
  assert_int_equal(im_safetensors_load(tu_path(dir, "missing"), 0, &f), IM_ERR_NOT_FOUND);
  assert_null(f);
  assert_int_equal(im_safetensors_write(path, ts, 5, meta, 2), IM_OK);
  assert_int_equal(im_safetensors_load(path, 100, &f), IM_ERR_LIMIT);

  im_tensor_free(&a);
  im_tensor_free(&b);
  im_tensor_free(&c);
  im_tensor_free(&s);
  im_tensor_free(&e);
  tu_rmtree(dir);
}

/* A file made of an 8-byte length (hlen_override, or the header's length), the header, and ndata data bytes. */
static uint8_t *mkfile(const char *header, uint64_t hlen_override, size_t ndata, size_t *len) {
  size_t hl = strlen(header);
  *len = 8 + hl + ndata;
  uint8_t *b = malloc(*len);
  assert_non_null(b);
  uint64_t v = hlen_override ? hlen_override : hl;
  for (int i = 0; i < 8; i++) b[i] = (uint8_t)(v >> (8 * i));
  memcpy(b + 8, header, hl);
  for (size_t i = 0; i < ndata; i++) b[8 + hl + i] = (uint8_t)i;
  return b;
}

static im_status_t parse_hdr(const char *header, uint64_t hlen_override, size_t ndata) {
  size_t len;
  uint8_t *b = mkfile(header, hlen_override, ndata, &len);
  im_safetensors_t *s = (im_safetensors_t *)b; /* must be reset to NULL on failure */
  im_status_t st = im_safetensors_parse(b, len, &s);
  if (st == IM_OK) im_safetensors_free(s);
  else assert_null(s);
  free(b);
  return st;
}

static void test_safetensors_rejects_malformed(void **state) {
  const char *ok = "{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}";
  assert_int_equal(parse_hdr(ok, 0, 24), IM_OK);
  /* too short for the length field, length past the end, absurd length */
  im_safetensors_t *s;
  assert_int_equal(im_safetensors_parse("\x02\0\0\0", 4, &s), IM_ERR_FORMAT);
  assert_int_equal(im_safetensors_parse("", 0, &s), IM_ERR_FORMAT);
  assert_int_equal(parse_hdr(ok, strlen(ok) + 25, 24), IM_ERR_FORMAT);
  assert_int_equal(parse_hdr(ok, UINT64_MAX, 24), IM_ERR_FORMAT);
  assert_int_equal(parse_hdr(ok, (uint64_t)1 << 63, 24), IM_ERR_FORMAT);
  assert_int_equal(parse_hdr("{}", 0, 0), IM_OK);
  assert_int_equal(parse_hdr("{}      ", 0, 0), IM_OK); /* padding */
  assert_int_equal(parse_hdr("", 0, 0), IM_ERR_FORMAT);
  /* not JSON, not an object, trailing garbage, header shorter than the JSON */
  assert_int_equal(parse_hdr("{\"a\":", 0, 0), IM_ERR_FORMAT);
  assert_int_equal(parse_hdr("[1,2]", 0, 0), IM_ERR_FORMAT);
  assert_int_equal(parse_hdr(" {}", 0, 0), IM_ERR_FORMAT);
  assert_int_equal(parse_hdr("{} x", 0, 0), IM_ERR_FORMAT);
  assert_int_equal(parse_hdr(ok, strlen(ok) - 1, 25), IM_ERR_FORMAT);
  /* offsets out of range, reversed */
  assert_int_equal(parse_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,24]}}", 0, 23),
                   IM_ERR_FORMAT);
  assert_int_equal(parse_hdr("{\"a\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[4,0]}}", 0, 4), IM_ERR_FORMAT);
  assert_int_equal(
      parse_hdr("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[18446744073709551615,0]}}", 0, 4),
      IM_ERR_FORMAT);
  assert_int_equal(parse_hdr("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[-1,0]}}", 0, 1), IM_ERR_FORMAT);
  /* overlapping, gap, trailing bytes, a duplicate region */
  assert_int_equal(parse_hdr("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                             "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[2,6]}}",
                             0, 6),
                   IM_ERR_FORMAT);
  assert_int_equal(parse_hdr("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                             "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[5,9]}}",
                             0, 9),
                   IM_ERR_FORMAT);
  assert_int_equal(parse_hdr("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},"
                             "\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}",
                             0, 4),
                   IM_ERR_FORMAT);
  assert_int_equal(parse_hdr("{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 0, 5), IM_ERR_FORMAT);
  /* out of order in the header but tiling the data: fine; zero-size entries too */
  assert_int_equal(parse_hdr("{\"b\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[4,8]},"
                             "\"z\":{\"dtype\":\"F32\",\"shape\":[0,3],\"data_offsets\":[4,4]},"
                             "\"a\":{\"dtype\":\"U8\",\"shape\":[2,2],\"data_offsets\":[0,4]}}",
                             0, 8),
                   IM_OK);
  /* dtype/shape vs size mismatch, unknown and unsupported dtypes, bad shapes */
  assert_int_equal(parse_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[2,3],\"data_offsets\":[0,20]}}", 0, 20),
                   IM_ERR_FORMAT);
  assert_int_equal(parse_hdr("{\"a\":{\"dtype\":\"I32\",\"shape\":[6],\"data_offsets\":[0,6]}}", 0, 6), IM_ERR_FORMAT);
  assert_int_equal(parse_hdr("{\"a\":{\"dtype\":\"F99\",\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 4), IM_ERR_FORMAT);
  assert_int_equal(parse_hdr("{\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 0, 4),
                   IM_ERR_UNSUPPORTED);
  assert_int_equal(parse_hdr("{\"a\":{\"dtype\":7,\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 4), IM_ERR_FORMAT);
  assert_int_equal(parse_hdr("{\"a\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,0]}}", 0, 0), IM_ERR_FORMAT);
  assert_int_equal(parse_hdr("{\"a\":{\"dtype\":\"U8\",\"shape\":[2.0],\"data_offsets\":[0,2]}}", 0, 2),
                   IM_ERR_FORMAT);
  assert_int_equal(parse_hdr("{\"a\":{\"dtype\":\"U8\",\"shape\":2,\"data_offsets\":[0,2]}}", 0, 2), IM_ERR_FORMAT);
  assert_int_equal(
      parse_hdr("{\"a\":{\"dtype\":\"U8\",\"shape\":[1,1,1,1,1,1,1],\"data_offsets\":[0,1]}}", 0, 1),
      IM_ERR_UNSUPPORTED);
  assert_int_equal(parse_hdr("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],"
                             "\"data_offsets\":[0,4]}}",
                             0, 4),
                   IM_ERR_FORMAT);
  /* huge sizes with a zero: an empty tensor, whose element count must not overflow */
  size_t hlen;
  uint8_t *hb = mkfile("{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,0],\"data_offsets\":[0,0]}}", 0,
                       0, &hlen);
  im_safetensors_t *hs;
  assert_int_equal(im_safetensors_parse(hb, hlen, &hs), IM_OK);
  im_tensor_t hv;
  assert_int_equal(im_safetensors_get(hs, "a", &hv), IM_OK);
  assert_int_equal(im_tensor_numel(&hv), 0);
  assert_int_equal(im_tensor_nbytes(&hv), 0);
  im_safetensors_free(hs);
  free(hb);
  assert_int_equal(parse_hdr("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}", 0, 1), IM_ERR_FORMAT);
  assert_int_equal(parse_hdr("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1,2]}}", 0, 2),
                   IM_ERR_FORMAT);
  /* missing, extra and duplicate keys; entries that are not objects */
  assert_int_equal(parse_hdr("{\"a\":{\"dtype\":\"U8\",\"shape\":[1]}}", 0, 1), IM_ERR_FORMAT);
  assert_int_equal(parse_hdr("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1],\"x\":1}}", 0, 1),
                   IM_ERR_FORMAT);
  assert_int_equal(parse_hdr("{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                             "\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,2]}}",
                             0, 2),
                   IM_ERR_FORMAT);
  assert_int_equal(parse_hdr("{\"a\":[1]}", 0, 0), IM_ERR_FORMAT);
  /* metadata: strings only */
  assert_int_equal(parse_hdr("{\"__metadata__\":{\"k\":\"v\"}}", 0, 0), IM_OK);
  assert_int_equal(parse_hdr("{\"__metadata__\":{\"k\":1}}", 0, 0), IM_ERR_FORMAT);
  assert_int_equal(parse_hdr("{\"__metadata__\":\"k\"}", 0, 0), IM_ERR_FORMAT);
  /* NUL inside the header */
  size_t len;
  uint8_t *b = mkfile("{\"a\\u0000b\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 0, 1, &len);
  assert_int_equal(im_safetensors_parse(b, len, &s), IM_ERR_FORMAT);
  free(b);
  b = mkfile("{}      ", 0, 0, &len);
  b[10] = 0;
  assert_int_equal(im_safetensors_parse(b, len, &s), IM_ERR_FORMAT);
  free(b);
}

static void test_safetensors_truncated_and_unaligned(void **state) {
  im_tensor_t a, m;
  assert_int_equal(im_tensor_alloc(&a, IM_F32, 2, (int64_t[]){3, 5}), IM_OK);
  assert_int_equal(im_tensor_alloc(&m, IM_U8, 1, (int64_t[]){3}), IM_OK);
  fill_pattern(&a, 4);
  im_named_tensor_t ts[] = {{"a", &a}, {"m", &m}};
  uint8_t *buf;
  size_t len;
  assert_int_equal(im_safetensors_serialize(ts, 2, NULL, 0, &buf, &len), IM_OK);
  /* every truncation fails cleanly */
  for (size_t cut = 0; cut < len; cut++) {
    im_safetensors_t *s;
    im_status_t st = im_safetensors_parse(buf, cut, &s);
    assert_int_equal(st, IM_ERR_FORMAT);
    assert_null(s);
  }
  /* one byte more is a gap after the last tensor */
  uint8_t *longer = malloc(len + 1);
  memcpy(longer, buf, len);
  longer[len] = 0;
  im_safetensors_t *s;
  assert_int_equal(im_safetensors_parse(longer, len + 1, &s), IM_ERR_FORMAT);
  free(longer);
  im_free(buf);

  /* A valid file (from another writer) with the U8 tensor first, so the F32 data sit at an odd offset. */
  const char *hdr = "{\"m\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]},"
                    "\"a\":{\"dtype\":\"F32\",\"shape\":[3,5],\"data_offsets\":[3,63]}}";
  uint8_t *f = mkfile(hdr, 0, 63, &len);
  memcpy(f + len - 60, a.data, 60);
  assert_int_equal(im_safetensors_parse(f, len, &s), IM_OK);
  im_tensor_t v;
  assert_int_equal(im_safetensors_get(s, "a", &v), IM_OK);
  assert_int_equal((uintptr_t)v.data % 4, 0);
  assert_memory_equal(v.data, a.data, 60);
  /* sorted by offset: m first */
  assert_string_equal(im_safetensors_name(s, 0), "m");
  im_safetensors_free(s);
  free(f);
  im_tensor_free(&a);
  im_tensor_free(&m);
}

static void test_safetensors_alloc_failures(void **state) {
  im_tensor_t a, m;
  assert_int_equal(im_tensor_alloc(&a, IM_F32, 2, (int64_t[]){3, 5}), IM_OK);
  assert_int_equal(im_tensor_alloc(&m, IM_U8, 1, (int64_t[]){3}), IM_OK);
  im_named_tensor_t ts[] = {{"m", &m}, {"a", &a}};
  im_safetensors_meta_t meta[] = {{"k", "v"}, {"k2", "v2"}};
  uint8_t *buf;
  size_t len;
  assert_int_equal(im_safetensors_serialize(ts, 2, meta, 2, &buf, &len), IM_OK);
  int64_t live = im_alloc_live_bytes();
  /* fail each allocation in turn: only success or IM_ERR_NOMEM, and nothing leaks */
  int ok = 0;
  for (int n = 1; n < 200 && !ok; n++) {
    im_safetensors_t *s;
    im_alloc_fail_after(n);
    im_status_t st = im_safetensors_parse(buf, len, &s);
    im_alloc_fail_after(0);
    if (st == IM_OK) {
      ok = 1;
      im_safetensors_free(s);
    } else {
      assert_int_equal(st, IM_ERR_NOMEM);
    }
    assert_int_equal(im_alloc_live_bytes(), live);
  }
  assert_true(ok);
  ok = 0;
  for (int n = 1; n < 200 && !ok; n++) {
    uint8_t *out;
    size_t olen;
    im_alloc_fail_after(n);
    im_status_t st = im_safetensors_serialize(ts, 2, meta, 2, &out, &olen);
    im_alloc_fail_after(0);
    if (st == IM_OK) {
      ok = 1;
      assert_memory_equal(out, buf, len);
      im_free(out);
    } else {
      assert_int_equal(st, IM_ERR_NOMEM);
    }
    assert_int_equal(im_alloc_live_bytes(), live);
  }
  assert_true(ok);
  im_free(buf);
  im_tensor_free(&a);
  im_tensor_free(&m);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_tensor_basics),
      cmocka_unit_test(test_arena),
      cmocka_unit_test(test_arena_planning),
      cmocka_unit_test(test_safetensors_round_trip),
      cmocka_unit_test(test_safetensors_rejects_malformed),
      cmocka_unit_test(test_safetensors_truncated_and_unaligned),
      cmocka_unit_test(test_safetensors_alloc_failures),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
