/* Unit tests of the src/http form parsers: multipart/form-data bodies as
 * python-requests, curl and browsers send them (one file, several files,
 * fields and files, binary data with CRLF and boundary-like bytes, quoting,
 * preamble and epilogue), strict rejection of malformed bodies with clear
 * messages, limits, urlencoded forms and query strings, percent-encoding, and
 * a seeded round trip of random bodies. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>

#include "imops/core.h"
#include "imops/http.h"

#define CT "multipart/form-data; boundary=b3f1c9"

static im_http_form_t *parse_ok(const char *ct, const void *body, size_t len, const im_http_form_limits_t *lim) {
  im_http_form_t *f = NULL;
  im_status_t st = im_http_form_parse(ct, body, len, lim, &f);
  if (st != IM_OK) fprintf(stderr, "unexpected failure: %s\n", im_last_error());
  assert_int_equal(st, IM_OK);
  assert_non_null(f);
  return f;
}

/* Fails with want, and the message mentions needle. */
static void parse_bad(const char *ct, const void *body, size_t len, const im_http_form_limits_t *lim,
                      im_status_t want, const char *needle) {
  im_http_form_t *f = (im_http_form_t *)1;
  im_status_t st = im_http_form_parse(ct, body, len, lim, &f);
  if (st != want || !strstr(im_last_error(), needle))
    fprintf(stderr, "got %s \"%s\", wanted %s with \"%s\"\n", im_status_name(st), im_last_error(),
            im_status_name(want), needle);
  assert_int_equal(st, want);
  assert_null(f);
  assert_non_null(strstr(im_last_error(), needle));
}

static void assert_part(const im_http_part_t *p, const char *name, const char *filename, const char *ct,
                        const void *data, size_t len) {
  assert_non_null(p);
  assert_string_equal(p->name, name);
  if (filename) assert_string_equal(p->filename, filename);
  else assert_null(p->filename);
  if (ct) assert_string_equal(p->content_type, ct);
  else assert_null(p->content_type);
  assert_int_equal(p->len, len);
  if (len) assert_memory_equal(p->data, data, len);
}

/* What requests.post(url, files={"file": open("cat.jpg", "rb")}) sends. */
static void test_one_file(void **state) {
  static const char body[] =
      "--b3f1c9\r\n"
      "Content-Disposition: form-data; name=\"file\"; filename=\"cat.jpg\"\r\n"
      "Content-Type: image/jpeg\r\n"
      "\r\n"
      "\xff\xd8\xff\xe0JFIF\r\n"
      "--b3f1c9--\r\n";
  im_http_form_t *f = parse_ok(CT, body, sizeof body - 1, NULL);
  assert_int_equal(im_http_form_size(f), 1);
  assert_part(im_http_form_at(f, 0), "file", "cat.jpg", "image/jpeg", "\xff\xd8\xff\xe0JFIF", 8);
  assert_ptr_equal(im_http_form_find(f, "file", 0), im_http_form_at(f, 0));
  assert_null(im_http_form_find(f, "file", 1));
  assert_null(im_http_form_at(f, 1));
  /* multipart data points into the body: no copy */
  assert_true(im_http_form_at(f, 0)->data > (const uint8_t *)body &&
              im_http_form_at(f, 0)->data < (const uint8_t *)body + sizeof body);
  im_http_form_free(f);
}

/* curl -F images=@a.png -F images=@b.png -F top_k=3 -F 'meta={"a":1};type=application/json' */
static void test_files_and_fields(void **state) {
  static const char body[] =
      "--b3f1c9\r\n"
      "Content-Disposition: form-data; name=\"images\"; filename=\"a.png\"\r\n"
      "Content-Type: image/png\r\n\r\n"
      "PNG-A\r\n"
      "--b3f1c9\r\n"
      "Content-Disposition: form-data; name=\"images\"; filename=\"b.png\"\r\n"
      "Content-Type: image/png\r\n\r\n"
      "PNG-BB\r\n"
      "--b3f1c9\r\n"
      "content-disposition: FORM-DATA; NAME=top_k\r\n\r\n"
      "3\r\n"
      "--b3f1c9\r\n"
      "Content-Disposition: form-data; name=\"meta\"\r\n"
      "Content-Type: application/json\r\n"
      "Content-Transfer-Encoding: binary\r\n\r\n"
      "{\"a\":1}\r\n"
      "--b3f1c9--";
  im_http_form_t *f = parse_ok(CT, body, sizeof body - 1, NULL);
  assert_int_equal(im_http_form_size(f), 4);
  assert_int_equal(im_http_form_count(f, "images"), 2);
  assert_part(im_http_form_find(f, "images", 0), "images", "a.png", "image/png", "PNG-A", 5);
  assert_part(im_http_form_find(f, "images", 1), "images", "b.png", "image/png", "PNG-BB", 6);
  assert_part(im_http_form_find(f, "top_k", 0), "top_k", NULL, NULL, "3", 1);
  assert_part(im_http_form_find(f, "meta", 0), "meta", NULL, "application/json", "{\"a\":1}", 7);
  assert_int_equal(im_http_form_count(f, "nope"), 0);
  im_http_form_free(f);
}

/* Data that contains CRLFs, NULs, the boundary without a CRLF before it, the
 * delimiter followed by other characters, and a prefix of the delimiter. */
static void test_binary_with_boundary_like_bytes(void **state) {
  static const char data[] =
      "\r\n\r\n\0\0--b3f1c9 in the middle\r\n--b3f1c9x not a delimiter\r\n--b3f1c\r\n--b3f1c9 \tpadding-then-text"
      "\r\n-b3f1c9\r\n\r\n--";
  const size_t dlen = sizeof data - 1;
  im_buf_t b = {0};
  assert_int_equal(im_buf_printf(&b, "--b3f1c9\r\nContent-Disposition: form-data; name=\"blob\"; filename=\"x.bin\"\r\n"
                                     "Content-Type: application/octet-stream\r\n\r\n"),
                   IM_OK);
  assert_int_equal(im_buf_append(&b, data, dlen), IM_OK);
  assert_int_equal(im_buf_printf(&b, "\r\n--b3f1c9\r\nContent-Disposition: form-data; name=\"after\"\r\n\r\nok"
                                     "\r\n--b3f1c9--\r\n"),
                   IM_OK);
  im_http_form_t *f = parse_ok(CT, b.data, b.len, NULL);
  assert_int_equal(im_http_form_size(f), 2);
  assert_part(im_http_form_at(f, 0), "blob", "x.bin", "application/octet-stream", data, dlen);
  assert_part(im_http_form_at(f, 1), "after", NULL, NULL, "ok", 2);
  im_http_form_free(f);
  im_buf_free(&b);
}

static void test_quoting_preamble_epilogue(void **state) {
  /* a quoted boundary with every special character RFC 2046 allows, other parameters around it */
  static const char ct[] = "Multipart/Form-Data ; charset=utf-8; boundary=\"a'()+_,-./:=? z\" ;";
  static const char body[] =
      "This is the preamble.\r\n--b3f1c9 is not it either\r\n"
      "--a'()+_,-./:=? z  \t\r\n" /* transport padding after the delimiter */
      "Content-Disposition: form-data; name=\"q\\\"uote\"; filename=\"C:\\dir\\a \\\"b\\\".txt\"\r\n\r\n"
      "v1\r\n"
      "--a'()+_,-./:=? z\r\n"
      "Content-Disposition: form-data; name=\"euro\"; filename=\"fallback.txt\"; "
      "filename*=UTF-8''%E2%82%AC%20rates.txt\r\n\r\n"
      "\r\n" /* data is one CRLF */
      "\r\n--a'()+_,-./:=? z\r\n"
      "Content-Disposition: form-data; name=\"empty\"\r\n\r\n"
      "\r\n--a'()+_,-./:=? z\r\n"
      "Content-Disposition: form-data; name=\"nodata\"\r\n" /* ends right after its headers */
      "\r\n--a'()+_,-./:=? z--\r\nthe epilogue\r\n--a'()+_,-./:=? z\r\nignored";
  im_http_form_t *f = parse_ok(ct, body, sizeof body - 1, NULL);
  assert_int_equal(im_http_form_size(f), 4);
  assert_part(im_http_form_at(f, 0), "q\"uote", "C:\\dir\\a \"b\".txt", NULL, "v1", 2);
  assert_part(im_http_form_at(f, 1), "euro", "\xe2\x82\xac rates.txt", NULL, "\r\n", 2);
  assert_part(im_http_form_at(f, 2), "empty", NULL, NULL, "", 0);
  assert_part(im_http_form_at(f, 3), "nodata", NULL, NULL, "", 0);
  im_http_form_free(f);

  /* no parts at all */
  f = parse_ok(CT, "--b3f1c9--\r\n", 12, NULL);
  assert_int_equal(im_http_form_size(f), 0);
  im_http_form_free(f);
}

static void test_malformed(void **state) {
  static const char ok[] = "--b3f1c9\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx\r\n--b3f1c9--\r\n";
  const size_t n = sizeof ok - 1;
  parse_bad("multipart/form-data", ok, n, NULL, IM_ERR_FORMAT, "no boundary");
  parse_bad("multipart/form-data; boundary=", ok, n, NULL, IM_ERR_FORMAT, "has no value");
  parse_bad("multipart/form-data; boundary=\"\"", ok, n, NULL, IM_ERR_FORMAT, "1 to 70");
  parse_bad("multipart/form-data; boundary=\"abc", ok, n, NULL, IM_ERR_FORMAT, "unterminated quoted");
  parse_bad("multipart/form-data; boundary=a; boundary=b", ok, n, NULL, IM_ERR_FORMAT, "twice");
  parse_bad("multipart/form-data; boundary=\"a\tb\"", ok, n, NULL, IM_ERR_FORMAT, "RFC 2046");
  parse_bad("multipart/form-data; boundary=0123456789012345678901234567890123456789012345678901234567890123456789x",
            ok, n, NULL, IM_ERR_FORMAT, "1 to 70");
  parse_bad("multipart/form-data boundary=b3f1c9", ok, n, NULL, IM_ERR_FORMAT, "expected ';'");
  parse_bad("multipart/form-data; boundary=other", ok, n, NULL, IM_ERR_FORMAT, "does not contain the boundary");
  parse_bad(CT, "", 0, NULL, IM_ERR_FORMAT, "does not contain the boundary");
  parse_bad("text/plain", ok, n, NULL, IM_ERR_UNSUPPORTED, "text/plain");
  parse_bad(NULL, ok, n, NULL, IM_ERR_FORMAT, "no Content-Type");

  /* unterminated parts */
  static const char unterminated[] = "--b3f1c9\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nxyz";
  parse_bad(CT, unterminated, sizeof unterminated - 1, NULL, IM_ERR_FORMAT, "is not terminated by a boundary");
  static const char no_close[] = "--b3f1c9\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nxyz\r\n--b3f1c9x";
  parse_bad(CT, no_close, sizeof no_close - 1, NULL, IM_ERR_FORMAT, "is not terminated by a boundary");
  static const char hdr_open[] = "--b3f1c9\r\nContent-Disposition: form-data; name=\"a\"\r\n";
  parse_bad(CT, hdr_open, sizeof hdr_open - 1, NULL, IM_ERR_FORMAT, "headers are not terminated");

  /* part headers */
  static const char no_cd[] = "--b3f1c9\r\nContent-Type: text/plain\r\n\r\nx\r\n--b3f1c9--";
  parse_bad(CT, no_cd, sizeof no_cd - 1, NULL, IM_ERR_FORMAT, "no Content-Disposition");
  static const char no_hdr[] = "--b3f1c9\r\n\r\nx\r\n--b3f1c9--";
  parse_bad(CT, no_hdr, sizeof no_hdr - 1, NULL, IM_ERR_FORMAT, "no Content-Disposition");
  static const char attach[] = "--b3f1c9\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\nx\r\n--b3f1c9--";
  parse_bad(CT, attach, sizeof attach - 1, NULL, IM_ERR_FORMAT, "not form-data");
  static const char no_name[] = "--b3f1c9\r\nContent-Disposition: form-data; filename=\"a\"\r\n\r\nx\r\n--b3f1c9--";
  parse_bad(CT, no_name, sizeof no_name - 1, NULL, IM_ERR_FORMAT, "has no name");
  static const char two_cd[] =
      "--b3f1c9\r\nContent-Disposition: form-data; name=a\r\nContent-Disposition: form-data; name=b\r\n\r\nx\r\n"
      "--b3f1c9--";
  parse_bad(CT, two_cd, sizeof two_cd - 1, NULL, IM_ERR_FORMAT, "two Content-Disposition");
  static const char folded[] = "--b3f1c9\r\nContent-Disposition: form-data;\r\n name=\"a\"\r\n\r\nx\r\n--b3f1c9--";
  parse_bad(CT, folded, sizeof folded - 1, NULL, IM_ERR_FORMAT, "folded");
  static const char colonless[] = "--b3f1c9\r\nContent-Disposition form-data\r\n\r\nx\r\n--b3f1c9--";
  parse_bad(CT, colonless, sizeof colonless - 1, NULL, IM_ERR_FORMAT, "malformed header line");
  static const char ctl[] = "--b3f1c9\r\nContent-Disposition: form-data; name=\"a\x01\"\r\n\r\nx\r\n--b3f1c9--";
  parse_bad(CT, ctl, sizeof ctl - 1, NULL, IM_ERR_FORMAT, "control character");
  static const char dup[] = "--b3f1c9\r\nContent-Disposition: form-data; name=a; NAME=b\r\n\r\nx\r\n--b3f1c9--";
  parse_bad(CT, dup, sizeof dup - 1, NULL, IM_ERR_FORMAT, "given twice");
  static const char badext[] =
      "--b3f1c9\r\nContent-Disposition: form-data; name=a; filename*=latin1''x\r\n\r\nx\r\n--b3f1c9--";
  parse_bad(CT, badext, sizeof badext - 1, NULL, IM_ERR_FORMAT, "charset");
}

static void test_limits(void **state) {
  im_buf_t b = {0};
  for (int i = 0; i < 5; i++)
    assert_int_equal(im_buf_printf(&b, "--b3f1c9\r\nContent-Disposition: form-data; name=\"f%d\"\r\n\r\n%0*d\r\n", i,
                                   10 * (i + 1), 0),
                     IM_OK);
  assert_int_equal(im_buf_printf(&b, "--b3f1c9--\r\n"), IM_OK);
  im_http_form_limits_t lim = {.max_parts = 5, .max_part_bytes = 50};
  im_http_form_t *f = parse_ok(CT, b.data, b.len, &lim);
  assert_int_equal(im_http_form_size(f), 5);
  assert_int_equal(im_http_form_at(f, 4)->len, 50);
  im_http_form_free(f);
  lim.max_parts = 4;
  parse_bad(CT, b.data, b.len, &lim, IM_ERR_LIMIT, "more than 4 parts");
  lim = (im_http_form_limits_t){.max_part_bytes = 49};
  parse_bad(CT, b.data, b.len, &lim, IM_ERR_LIMIT, "over the limit of 49");
  im_buf_free(&b);

  /* a header block over the limit */
  assert_int_equal(im_buf_printf(&b, "--b3f1c9\r\nContent-Disposition: form-data; name=\"a\"\r\nX-Pad: %0*d\r\n\r\nx\r\n"
                                     "--b3f1c9--\r\n", 200, 0),
                   IM_OK);
  lim = (im_http_form_limits_t){.max_header_bytes = 100};
  parse_bad(CT, b.data, b.len, &lim, IM_ERR_LIMIT, "headers over 100 bytes");
  lim.max_header_bytes = 1000;
  f = parse_ok(CT, b.data, b.len, &lim);
  im_http_form_free(f);
  im_buf_free(&b);

  /* the default part count limit (256) */
  for (int i = 0; i < 257; i++)
    assert_int_equal(im_buf_printf(&b, "--b3f1c9\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\nx\r\n"), IM_OK);
  assert_int_equal(im_buf_printf(&b, "--b3f1c9--\r\n"), IM_OK);
  parse_bad(CT, b.data, b.len, NULL, IM_ERR_LIMIT, "more than 256 parts");
  im_buf_free(&b);
}

static void test_urlencoded_and_query(void **state) {
  static const char body[] = "a=1&b=x+y%20z&a=2&empty=&flag&&c=%zz%4&d=%41%e2%82%ac";
  im_http_form_t *f = parse_ok("application/x-www-form-urlencoded; charset=UTF-8", body, sizeof body - 1, NULL);
  assert_int_equal(im_http_form_size(f), 7);
  assert_int_equal(im_http_form_count(f, "a"), 2);
  assert_string_equal((const char *)im_http_form_find(f, "a", 1)->data, "2");
  assert_string_equal((const char *)im_http_form_find(f, "b", 0)->data, "x y z");
  assert_int_equal(im_http_form_find(f, "empty", 0)->len, 0);
  assert_string_equal((const char *)im_http_form_find(f, "flag", 0)->data, "");
  assert_string_equal((const char *)im_http_form_find(f, "c", 0)->data, "%zz%4"); /* invalid escapes kept */
  assert_string_equal((const char *)im_http_form_find(f, "d", 0)->data, "A\xe2\x82\xac");
  assert_null(im_http_form_find(f, "a", 0)->filename);
  im_http_form_free(f);

  /* MLflow's repeated keys: plain, key[] and key[N] */
  static const char qs[] = "experiment_ids=1&experiment_ids=2&run_ids[]=a&run_ids[]=b&x[0]=p&x[1]=q&x[y]=no"
                           "&filter=name%3D%27surface%27&z=%00nul";
  f = NULL;
  assert_int_equal(im_http_query_parse(qs, sizeof qs - 1, NULL, &f), IM_OK);
  assert_int_equal(im_http_form_count(f, "experiment_ids"), 2);
  assert_string_equal((const char *)im_http_form_find(f, "experiment_ids", 1)->data, "2");
  assert_int_equal(im_http_form_count(f, "run_ids"), 2);
  assert_string_equal((const char *)im_http_form_find(f, "run_ids", 0)->data, "a");
  assert_string_equal((const char *)im_http_form_find(f, "run_ids[]", 1)->data, "b");
  assert_int_equal(im_http_form_count(f, "x"), 2);
  assert_string_equal((const char *)im_http_form_find(f, "filter", 0)->data, "name='surface'");
  const im_http_part_t *z = im_http_form_find(f, "z", 0);
  assert_int_equal(z->len, 4);
  assert_memory_equal(z->data, "\0nul", 4);
  im_http_form_free(f);

  assert_int_equal(im_http_query_parse(NULL, 0, NULL, &f), IM_OK);
  assert_int_equal(im_http_form_size(f), 0);
  im_http_form_free(f);

  im_http_form_limits_t lim = {.max_parts = 2};
  f = (im_http_form_t *)1;
  assert_int_equal(im_http_query_parse("a=1&b=2&c=3", 11, &lim, &f), IM_ERR_LIMIT);
  assert_null(f);
  lim = (im_http_form_limits_t){.max_part_bytes = 3};
  assert_int_equal(im_http_query_parse("a=1234", 6, &lim, &f), IM_ERR_LIMIT);
  assert_int_equal(im_http_query_parse("a=%31%32%33", 11, &lim, &f), IM_OK); /* decoded length counts */
  im_http_form_free(f);

  im_buf_t b = {0};
  assert_int_equal(im_http_url_encode(&b, "a b/c~-._\xe2\x82\xac'=&", 15, "/"), IM_OK);
  assert_string_equal(b.data, "a%20b/c~-._%E2%82%AC%27%3D%26");
  im_buf_free(&b);
  assert_int_equal(im_http_url_encode(&b, "", 0, NULL), IM_OK);
  assert_string_equal(b.data, "");
  im_buf_free(&b);
}

/* Random bodies (random bytes, many CRLFs and dashes) with a boundary that is not in
 * the data: the parser must give back exactly the parts that went in. */
static void test_random_round_trip(void **state) {
  im_rng_t r;
  im_rng_seed(&r, 1234);
  static const char alphabet[] = "\r\n-b3f1c9x\0\xff ";
  for (int iter = 0; iter < 300; iter++) {
    int nparts = (int)im_rng_below(&r, 6);
    uint8_t *datas[6];
    size_t lens[6];
    im_buf_t b = {0};
    if (im_rng_below(&r, 2)) assert_int_equal(im_buf_printf(&b, "preamble\r\n"), IM_OK);
    for (int i = 0; i < nparts; i++) {
      lens[i] = im_rng_below(&r, 300);
      datas[i] = im_malloc(lens[i] + 1);
      for (size_t k = 0; k < lens[i]; k++)
        datas[i][k] = im_rng_below(&r, 3) ? (uint8_t)alphabet[im_rng_below(&r, sizeof alphabet - 1)]
                                           : (uint8_t)im_rng_below(&r, 256);
      /* no delimiter inside the data: break every "\r\n--b3f1c9" */
      for (size_t k = 0; k + 10 <= lens[i]; k++)
        if (memcmp(datas[i] + k, "\r\n--b3f1c9", 10) == 0) datas[i][k + 3] = 'Y';
      assert_int_equal(im_buf_printf(&b, "--b3f1c9Z\r\nContent-Disposition: form-data; name=\"p%d\"\r\n\r\n", i), IM_OK);
      assert_int_equal(im_buf_append(&b, datas[i], lens[i]), IM_OK);
      assert_int_equal(im_buf_printf(&b, "\r\n"), IM_OK);
    }
    assert_int_equal(im_buf_printf(&b, "--b3f1c9Z--\r\n"), IM_OK);
    /* a body without parts needs its close delimiter at the start or after a CRLF */
    im_http_form_t *f = parse_ok("multipart/form-data; boundary=b3f1c9Z", b.data, b.len, NULL);
    assert_int_equal(im_http_form_size(f), (size_t)nparts);
    for (int i = 0; i < nparts; i++) {
      char name[16];
      snprintf(name, sizeof name, "p%d", i);
      assert_part(im_http_form_at(f, (size_t)i), name, NULL, NULL, datas[i], lens[i]);
      im_free(datas[i]);
    }
    im_http_form_free(f);
    im_buf_free(&b);
  }
}

/* Mutations of a valid body never crash, and whatever parses stays inside the body. */
static void test_mutations_do_not_crash(void **state) {
  static const char base[] =
      "--b3f1c9\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.bin\"\r\nContent-Type: x/y\r\n\r\n"
      "abc\r\n--b3f1c9\r\nContent-Disposition: form-data; name=k\r\n\r\nv\r\n--b3f1c9--\r\n";
  im_rng_t r;
  im_rng_seed(&r, 99);
  uint8_t buf[sizeof base + 8];
  for (int iter = 0; iter < 5000; iter++) {
    size_t n = sizeof base - 1;
    memcpy(buf, base, n);
    int edits = 1 + (int)im_rng_below(&r, 4);
    for (int e = 0; e < edits; e++) {
      size_t at = im_rng_below(&r, (uint32_t)n);
      switch (im_rng_below(&r, 3)) {
        case 0: buf[at] = (uint8_t)im_rng_below(&r, 256); break;
        case 1: memmove(buf + at, buf + at + 1, n - at - 1), n--; break;
        default: n = at; break; /* truncate */
      }
      if (n == 0) break;
    }
    im_http_form_t *f = NULL;
    if (im_http_form_parse(CT, buf, n, NULL, &f) == IM_OK) {
      for (size_t i = 0; i < im_http_form_size(f); i++) {
        const im_http_part_t *p = im_http_form_at(f, i);
        assert_true(p->data >= buf && p->data + p->len <= buf + n);
      }
      im_http_form_free(f);
    } else {
      assert_null(f);
      assert_true(im_last_error()[0] != '\0');
    }
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_one_file),
      cmocka_unit_test(test_files_and_fields),
      cmocka_unit_test(test_binary_with_boundary_like_bytes),
      cmocka_unit_test(test_quoting_preamble_epilogue),
      cmocka_unit_test(test_malformed),
      cmocka_unit_test(test_limits),
      cmocka_unit_test(test_urlencoded_and_query),
      cmocka_unit_test(test_random_round_trip),
      cmocka_unit_test(test_mutations_do_not_crash),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
