/* Unit tests of src/serve without a model: base64, the POST /predict body
 * parser (multipart as python-requests sends it, raw images, JSON), the Open
 * Inference Protocol v2 request parser (JSON and binary tensors, FP32 and
 * BYTES, every kind of malformed request), the latency model and dispatch
 * rule, the batcher (requests that arrive while a batch runs are merged
 * into the next one, no batching runs them alone, timeouts, stop, many
 * clients on two workers each woken for its own job) and the drift sums. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "imops/core.h"
#include "serve/serve_impl.h"

/* ---- base64 ---- */

static void test_base64(void **state) {
  const uint8_t data[] = {0xff, 0xd8, 0xff, 0x00, 0x10, 0x80, 0x7f};
  for (size_t n = 0; n <= sizeof data; n++) {
    im_buf_t b = {0};
    assert_int_equal(im__serve_b64_encode(&b, data, n), IM_OK);
    assert_int_equal(b.len, (n + 2) / 3 * 4);
    uint8_t *out;
    size_t len;
    assert_int_equal(im__serve_b64_decode(b.data ? b.data : "", b.len, &out, &len), IM_OK);
    assert_int_equal(len, n);
    if (n) assert_memory_equal(out, data, n);
    im_free(out);
    im_buf_free(&b);
  }
  uint8_t *out;
  size_t len;
  /* URL-safe alphabet, no padding, whitespace, a data URL */
  assert_int_equal(im__serve_b64_decode("_-8", 3, &out, &len), IM_OK);
  assert_int_equal(len, 2);
  assert_int_equal(out[0], 0xff);
  assert_int_equal(out[1], 0xef);
  im_free(out);
  const char *s = "data:image/png;base64,aGVs\nbG8=";
  assert_int_equal(im__serve_b64_decode(s, strlen(s), &out, &len), IM_OK);
  assert_int_equal(len, 5);
  assert_memory_equal(out, "hello", 5);
  im_free(out);
  assert_int_equal(im__serve_b64_decode("ab$d", 4, &out, &len), IM_ERR_FORMAT);
  assert_int_equal(im__serve_b64_decode("abcde", 5, &out, &len), IM_ERR_FORMAT); /* a dangling 6 bits */
  assert_int_equal(im__serve_b64_decode("ab=c", 4, &out, &len), IM_ERR_FORMAT);  /* data after padding */
  assert_int_equal(im__serve_b64_decode("data:xx", 7, &out, &len), IM_ERR_FORMAT);
}

/* ---- Content-Encoding ---- */

static void test_compression(void **state) {
  uint8_t text[5000];
  for (size_t i = 0; i < sizeof text; i++) text[i] = (uint8_t)("inference "[i % 10]);
  for (int gz = 0; gz <= 1; gz++) {
    im_buf_t z = {0}, back = {0};
    assert_int_equal(im__serve_compress(gz, text, sizeof text, &z), IM_OK);
    assert_true(z.len < sizeof text / 4);
    assert_int_equal(im__serve_inflate(gz ? "gzip" : "deflate", (const uint8_t *)z.data, z.len, 1 << 20, &back), IM_OK);
    assert_int_equal(back.len, sizeof text);
    assert_memory_equal(back.data, text, sizeof text);
    im_buf_free(&back);
    /* over the limit: a small body must not expand without bound */
    assert_int_equal(im__serve_inflate(gz ? "gzip" : "deflate", (const uint8_t *)z.data, z.len, 1000, &back),
                     IM_ERR_LIMIT);
    im_buf_free(&back);
    /* truncated */
    assert_int_equal(im__serve_inflate(gz ? "gzip" : "deflate", (const uint8_t *)z.data, z.len / 2, 1 << 20, &back),
                     IM_ERR_FORMAT);
    im_buf_free(&back);
    im_buf_free(&z);
  }
  im_buf_t b = {0};
  assert_int_equal(im__serve_inflate("gzip", (const uint8_t *)"\x1f\x8b\x08garbage", 10, 100, &b), IM_ERR_FORMAT);
  im_buf_free(&b);
  assert_int_equal(im__serve_inflate("br", (const uint8_t *)"x", 1, 100, &b), IM_ERR_UNSUPPORTED);
  im_buf_free(&b);
}

/* ---- POST /predict bodies ---- */

#define CT_MP "multipart/form-data; boundary=xyz"

static void test_predict_multipart(void **state) {
  static const char body[] = "--xyz\r\n"
                             "Content-Disposition: form-data; name=\"note\"\r\n\r\n"
                             "hello\r\n"
                             "--xyz\r\n"
                             "Content-Disposition: form-data; name=\"file\"; filename=\"a.jpg\"\r\n"
                             "Content-Type: image/jpeg\r\n\r\n"
                             "\xff\xd8\xff\xe0JPEG\r\n"
                             "--xyz\r\n"
                             "Content-Disposition: form-data; name=\"blob\"\r\n"
                             "Content-Type: image/png\r\n\r\n"
                             "\x89PNG\r\n"
                             "--xyz--\r\n";
  im__serve_blobs_t b = {0};
  assert_int_equal(im__serve_parse_predict(CT_MP, (const uint8_t *)body, sizeof body - 1, 16, &b), IM_OK);
  assert_int_equal(b.n, 2);
  assert_string_equal(b.v[0].name, "a.jpg");
  assert_int_equal(b.v[0].len, 8);
  assert_memory_equal(b.v[0].data, "\xff\xd8\xff\xe0JPEG", 8);
  assert_string_equal(b.v[1].name, "blob");
  assert_int_equal(b.v[1].len, 4);
  im__serve_blobs_free(&b);
  /* the image limit */
  assert_int_equal(im__serve_parse_predict(CT_MP, (const uint8_t *)body, sizeof body - 1, 1, &b), IM_ERR_LIMIT);
  im__serve_blobs_free(&b);
  /* only a plain field: nothing to classify */
  static const char fields[] = "--xyz\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n--xyz--\r\n";
  assert_int_equal(im__serve_parse_predict(CT_MP, (const uint8_t *)fields, sizeof fields - 1, 16, &b), IM_ERR_EMPTY);
  im__serve_blobs_free(&b);
  /* an empty upload */
  static const char empty[] =
      "--xyz\r\nContent-Disposition: form-data; name=\"f\"; filename=\"e.jpg\"\r\n\r\n\r\n--xyz--\r\n";
  assert_int_equal(im__serve_parse_predict(CT_MP, (const uint8_t *)empty, sizeof empty - 1, 16, &b), IM_ERR_EMPTY);
  im__serve_blobs_free(&b);
  /* truncated: no closing delimiter */
  assert_int_equal(im__serve_parse_predict(CT_MP, (const uint8_t *)body, 60, 16, &b), IM_ERR_FORMAT);
  im__serve_blobs_free(&b);
  /* multipart without a boundary */
  assert_int_equal(im__serve_parse_predict("multipart/form-data", (const uint8_t *)body, sizeof body - 1, 16, &b),
                   IM_ERR_FORMAT);
  im__serve_blobs_free(&b);
}

static void test_predict_raw_and_json(void **state) {
  im__serve_blobs_t b = {0};
  const uint8_t png[] = "\x89PNG\r\n\x1a\n....";
  assert_int_equal(im__serve_parse_predict("image/png", png, sizeof png - 1, 4, &b), IM_OK);
  assert_int_equal(b.n, 1);
  assert_ptr_equal(b.v[0].data, png);
  im__serve_blobs_free(&b);
  assert_int_equal(im__serve_parse_predict("IMAGE/JPEG; q=1", png, 0, 4, &b), IM_ERR_EMPTY);
  im__serve_blobs_free(&b);
  const char *j1 = "{\"instances\": [{\"b64\": \"aGVsbG8=\"}, \"d29ybGQ=\"]}";
  assert_int_equal(im__serve_parse_predict("application/json", (const uint8_t *)j1, strlen(j1), 4, &b), IM_OK);
  assert_int_equal(b.n, 2);
  assert_memory_equal(b.v[0].data, "hello", 5);
  assert_memory_equal(b.v[1].data, "world", 5);
  im__serve_blobs_free(&b);
  const char *j2 = "{\"images\": [\"aGVsbG8=\"]}";
  assert_int_equal(im__serve_parse_predict("application/json; charset=utf-8", (const uint8_t *)j2, strlen(j2), 4, &b),
                   IM_OK);
  assert_int_equal(b.n, 1);
  im__serve_blobs_free(&b);
  const struct {
    const char *body;
    im_status_t want;
  } bad[] = {
      {"{\"instances\": [", IM_ERR_FORMAT},          {"[1, 2]", IM_ERR_FORMAT},
      {"{\"instances\": 3}", IM_ERR_FORMAT},         {"{\"instances\": [{\"b64\": 5}]}", IM_ERR_FORMAT},
      {"{\"instances\": [\"!!\"]}", IM_ERR_FORMAT}, {"{\"instances\": []}", IM_ERR_EMPTY},
      {"{\"images\": [\"\"]}", IM_ERR_EMPTY},        {"{\"other\": 1}", IM_ERR_FORMAT},
      {"", IM_ERR_FORMAT},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    im_status_t st = im__serve_parse_predict("application/json", (const uint8_t *)bad[i].body, strlen(bad[i].body), 4, &b);
    if (st != bad[i].want) fprintf(stderr, "%s: got %s (%s)\n", bad[i].body, im_status_name(st), im_last_error());
    assert_int_equal(st, bad[i].want);
    im__serve_blobs_free(&b);
  }
  assert_int_equal(im__serve_parse_predict("text/plain", png, 4, 4, &b), IM_ERR_UNSUPPORTED);
  assert_int_equal(im__serve_parse_predict(NULL, png, 4, 4, &b), IM_ERR_UNSUPPORTED);
  im__serve_blobs_free(&b);
}

/* ---- v2 requests ---- */

static im_status_t v2(const char *json, const void *bin, size_t bin_len, int with_header, im__serve_v2_req_t *r) {
  size_t jl = strlen(json);
  uint8_t buf[4096];
  memcpy(buf, json, jl);
  if (bin_len) memcpy(buf + jl, bin, bin_len);
  char hl[32];
  snprintf(hl, sizeof hl, "%zu", jl);
  memset(r, 0, sizeof *r);
  return im__serve_v2_parse(buf, jl + bin_len, with_header ? hl : NULL, 1 << 20, 64, r);
}

static void test_v2_json(void **state) {
  im__serve_v2_req_t r;
  assert_int_equal(v2("{\"id\":\"7\",\"inputs\":[{\"name\":\"input\",\"shape\":[1,2,2],\"datatype\":\"FP32\","
                      "\"data\":[[[1,2],[3,4]]]}],\"outputs\":[{\"name\":\"probabilities\",\"parameters\":"
                      "{\"classification\":2,\"binary_data\":true}}, {\"name\":\"label\"}]}",
                      NULL, 0, 0, &r),
                   IM_OK);
  assert_string_equal(r.id, "7");
  assert_int_equal(r.dtype, IM__V2_FP32);
  assert_int_equal(r.ndim, 3);
  assert_int_equal(r.numel, 4);
  for (int i = 0; i < 4; i++) assert_true(r.f32[i] == (float)(i + 1));
  assert_int_equal(r.n_outputs, 2);
  assert_int_equal(r.outputs[0].classification, 2);
  assert_int_equal(r.outputs[0].binary, 1);
  assert_int_equal(r.outputs[1].binary, -1);
  im__serve_v2_req_free(&r);
  /* BYTES in JSON: base64 strings */
  assert_int_equal(v2("{\"parameters\":{\"binary_data_output\":true},\"inputs\":[{\"name\":\"image\",\"shape\":[2],"
                      "\"datatype\":\"BYTES\",\"data\":[\"aGVsbG8=\",\"d29ybGQ=\"]}]}",
                      NULL, 0, 0, &r),
                   IM_OK);
  assert_int_equal(r.bytes.n, 2);
  assert_int_equal(r.binary_output, 1);
  assert_memory_equal(r.bytes.v[1].data, "world", 5);
  im__serve_v2_req_free(&r);
}

static void test_v2_binary(void **state) {
  im__serve_v2_req_t r;
  float f[6] = {0.5f, -1, 2, 3, 4, 5};
  assert_int_equal(v2("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,1,2,3],\"datatype\":\"FP32\","
                      "\"parameters\":{\"binary_data_size\":24}}]}",
                      f, sizeof f, 1, &r),
                   IM_OK);
  assert_memory_equal(r.f32, f, sizeof f);
  im__serve_v2_req_free(&r);
  const uint8_t bytes[] = {5, 0, 0, 0, 'h', 'e', 'l', 'l', 'o', 2, 0, 0, 0, 'a', 'b'};
  assert_int_equal(v2("{\"inputs\":[{\"name\":\"image\",\"shape\":[2,1],\"datatype\":\"BYTES\","
                      "\"parameters\":{\"binary_data_size\":15}}]}",
                      bytes, sizeof bytes, 1, &r),
                   IM_OK);
  assert_int_equal(r.bytes.n, 2);
  assert_int_equal(r.bytes.v[0].len, 5);
  assert_memory_equal(r.bytes.v[1].data, "ab", 2);
  im__serve_v2_req_free(&r);
  /* an element length running past the data */
  const uint8_t bad[] = {9, 0, 0, 0, 'h', 'e'};
  assert_int_equal(v2("{\"inputs\":[{\"name\":\"image\",\"shape\":[1],\"datatype\":\"BYTES\","
                      "\"parameters\":{\"binary_data_size\":6}}]}",
                      bad, sizeof bad, 1, &r),
                   IM_ERR_FORMAT);
  im__serve_v2_req_free(&r);
  /* the wrong number of FP32 bytes */
  assert_int_equal(v2("{\"inputs\":[{\"name\":\"input\",\"shape\":[1,1,2,2],\"datatype\":\"FP32\","
                      "\"parameters\":{\"binary_data_size\":24}}]}",
                      f, sizeof f, 1, &r),
                   IM_ERR_FORMAT);
  im__serve_v2_req_free(&r);
  /* a NaN */
  float nan_in[1] = {NAN};
  assert_int_equal(v2("{\"inputs\":[{\"name\":\"input\",\"shape\":[1],\"datatype\":\"FP32\","
                      "\"parameters\":{\"binary_data_size\":4}}]}",
                      nan_in, 4, 1, &r),
                   IM_ERR_FORMAT);
  im__serve_v2_req_free(&r);
  /* a header length past the body */
  memset(&r, 0, sizeof r);
  const char *j = "{\"inputs\":[]}";
  assert_int_equal(im__serve_v2_parse((const uint8_t *)j, strlen(j), "999", 100, 4, &r), IM_ERR_FORMAT);
  im__serve_v2_req_free(&r);
  assert_int_equal(im__serve_v2_parse((const uint8_t *)j, strlen(j), "x1", 100, 4, &r), IM_ERR_FORMAT);
  im__serve_v2_req_free(&r);
}

static void test_v2_errors(void **state) {
  const struct {
    const char *json;
    im_status_t want;
  } bad[] = {
      {"", IM_ERR_FORMAT},
      {"{", IM_ERR_FORMAT},
      {"[]", IM_ERR_FORMAT},
      {"{\"inputs\":[]}", IM_ERR_FORMAT},
      {"{\"inputs\":[{\"name\":\"a\",\"shape\":[1],\"datatype\":\"FP32\",\"data\":[1]},"
       "{\"name\":\"b\",\"shape\":[1],\"datatype\":\"FP32\",\"data\":[1]}]}",
       IM_ERR_FORMAT},
      {"{\"inputs\":[{\"name\":\"a\",\"shape\":[1],\"datatype\":\"INT8\",\"data\":[1]}]}", IM_ERR_UNSUPPORTED},
      {"{\"inputs\":[{\"name\":\"a\",\"shape\":[2],\"datatype\":\"FP32\",\"data\":[1]}]}", IM_ERR_FORMAT},
      {"{\"inputs\":[{\"name\":\"a\",\"shape\":[1],\"datatype\":\"FP32\",\"data\":[1,2]}]}", IM_ERR_FORMAT},
      {"{\"inputs\":[{\"name\":\"a\",\"shape\":[1],\"datatype\":\"FP32\",\"data\":[\"x\"]}]}", IM_ERR_FORMAT},
      {"{\"inputs\":[{\"name\":\"a\",\"shape\":[-1],\"datatype\":\"FP32\",\"data\":[1]}]}", IM_ERR_FORMAT},
      {"{\"inputs\":[{\"name\":\"a\",\"shape\":[0],\"datatype\":\"FP32\",\"data\":[]}]}", IM_ERR_EMPTY},
      {"{\"inputs\":[{\"name\":\"a\",\"shape\":[1048577,2],\"datatype\":\"FP32\",\"data\":[1]}]}", IM_ERR_LIMIT},
      {"{\"inputs\":[{\"name\":\"a\",\"shape\":[1],\"datatype\":\"FP32\"}]}", IM_ERR_FORMAT},
      {"{\"inputs\":[{\"shape\":[1],\"datatype\":\"FP32\",\"data\":[1]}]}", IM_ERR_FORMAT},
      {"{\"inputs\":[{\"name\":\"a\",\"datatype\":\"FP32\",\"data\":[1]}]}", IM_ERR_FORMAT},
      {"{\"inputs\":[{\"name\":\"a\",\"shape\":[1],\"datatype\":\"BYTES\",\"data\":[\"%%\"]}]}", IM_ERR_FORMAT},
      {"{\"inputs\":[{\"name\":\"a\",\"shape\":[65],\"datatype\":\"BYTES\",\"data\":[]}]}", IM_ERR_LIMIT},
      {"{\"inputs\":[{\"name\":\"a\",\"shape\":[1],\"datatype\":\"FP32\",\"data\":[1]}],\"outputs\":[{}]}",
       IM_ERR_FORMAT},
      {"{\"id\":5,\"inputs\":[{\"name\":\"a\",\"shape\":[1],\"datatype\":\"FP32\",\"data\":[1]}]}", IM_ERR_FORMAT},
      {"{\"inputs\":[{\"name\":\"a\",\"shape\":[1],\"datatype\":\"FP32\",\"data\":[1],"
       "\"parameters\":{\"binary_data_size\":4}}]}",
       IM_ERR_FORMAT},
  };
  for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
    im__serve_v2_req_t r;
    im_status_t st = v2(bad[i].json, NULL, 0, 0, &r);
    if (st != bad[i].want) fprintf(stderr, "%s: got %s (%s)\n", bad[i].json, im_status_name(st), im_last_error());
    assert_int_equal(st, bad[i].want);
    assert_true(im_last_error()[0] != '\0');
    im__serve_v2_req_free(&r);
  }
}

/* ---- latency model and dispatch rule ---- */

static void test_latency_model(void **state) {
  im__serve_latency_t m = {0};
  assert_true(im__serve_batch_wait(&m, 1, 0, 32, 0.05) == 0); /* nothing measured: dispatch */
  for (int r = 0; r < 20; r++)
    for (int n = 1; n <= 16; n *= 2) im__serve_latency_observe(&m, n, 0.004 + 0.001 * n);
  assert_true(fabs(m.a - 0.004) < 1e-9);
  assert_true(fabs(m.b - 0.001) < 1e-9);
  assert_true(fabs(im__serve_latency_predict(&m, 10) - 0.014) < 1e-9);
  /* one batch size only: overhead and per-image split evenly */
  im__serve_latency_t one = {0};
  im__serve_latency_observe(&one, 4, 0.008);
  assert_true(fabs(one.a - 0.004) < 1e-12 && fabs(one.b - 0.001) < 1e-12);
  /* arrivals every 0.5 ms: waiting is cheaper than the 4 ms overhead */
  for (int i = 1; i <= 10; i++) im__serve_latency_arrival(&m, 100 + i * 0.0005);
  assert_true(fabs(m.interarrival - 0.0005) < 1e-9);
  double w = im__serve_batch_wait(&m, 2, 0.001, 32, 0.05);
  assert_true(w > 0 && w <= 0.001 + 1e-12);
  assert_true(im__serve_batch_wait(&m, 32, 0.001, 32, 0.05) == 0);  /* full */
  assert_true(im__serve_batch_wait(&m, 2, 0.045, 32, 0.05) == 0);   /* the oldest's deadline */
  assert_true(im__serve_batch_wait(&m, 10, 0.001, 32, 0.05) == 0);  /* 10 x 0.5 ms > 4 ms overhead */
  /* rare arrivals: never wait */
  im__serve_latency_t slow = m;
  slow.interarrival = 0.5;
  assert_true(im__serve_batch_wait(&slow, 1, 0, 32, 10) == 0);
}

/* ---- the batcher ---- */

typedef struct {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int gate_open;     /* the first batch waits until this is set */
  int entered;       /* set when the first batch reached the gate */
  int batches;
  int sizes[64];
  int jobs_in[64];
  im__serve_batcher_t *b;
} fake_t;

/* A real computation: each image's output is [sum of its inputs, 1]. */
static im_status_t fake_run(void *user, int worker, void *gen, im__serve_job_t *const *jobs, int nj, int ni) {
  fake_t *f = user;
  pthread_mutex_lock(&f->mu);
  int first = f->batches == 0;
  if (first) {
    f->entered = 1;
    pthread_cond_broadcast(&f->cv);
  }
  while (first && !f->gate_open) pthread_cond_wait(&f->cv, &f->mu);
  if (f->batches < 64) {
    f->sizes[f->batches] = ni;
    f->jobs_in[f->batches] = nj;
  }
  f->batches++;
  pthread_mutex_unlock(&f->mu);
  for (int j = 0; j < nj; j++)
    for (int i = 0; i < jobs[j]->n; i++) {
      jobs[j]->probs[2 * i] = jobs[j]->x[2 * i] + jobs[j]->x[2 * i + 1];
      jobs[j]->probs[2 * i + 1] = 1;
    }
  return IM_OK;
}

typedef struct {
  fake_t *f;
  float x[2], y[2];
  im_status_t st;
  im__serve_job_t job;
} client_t;

static void *client(void *p) {
  client_t *c = p;
  c->job = (im__serve_job_t){.x = c->x, .probs = c->y, .n = 1, .gen = (void *)1};
  c->st = im__serve_batcher_submit(c->f->b, &c->job, 30);
  return NULL;
}

static void wait_queued(im__serve_batcher_t *b, int n) {
  for (int i = 0; i < 100000 && im__serve_batcher_queued(b) < n; i++) {
    struct timespec ts = {0, 100000};
    nanosleep(&ts, NULL);
  }
  assert_int_equal(im__serve_batcher_queued(b), n);
}

static void wait_entered(fake_t *f) {
  pthread_mutex_lock(&f->mu);
  while (!f->entered) pthread_cond_wait(&f->cv, &f->mu);
  pthread_mutex_unlock(&f->mu);
}

static void run_clients(int max_batch, int expect_merged) {
  fake_t f = {.gate_open = 0};
  pthread_mutex_init(&f.mu, NULL);
  pthread_cond_init(&f.cv, NULL);
  im__serve_batcher_opts_t o = {.workers = 1, .max_batch = max_batch, .max_latency_s = 0.05, .run = fake_run, .user = &f};
  assert_int_equal(im__serve_batcher_new(&o, &f.b), IM_OK);
  client_t c[8];
  pthread_t t[8];
  for (int i = 0; i < 8; i++) {
    c[i].f = &f;
    c[i].x[0] = (float)i;
    c[i].x[1] = 0.5f;
  }
  /* the first request occupies the worker (held at the gate); seven more queue up behind it */
  pthread_create(&t[0], NULL, client, &c[0]);
  wait_entered(&f);
  for (int i = 1; i < 8; i++) pthread_create(&t[i], NULL, client, &c[i]);
  wait_queued(f.b, 7);
  pthread_mutex_lock(&f.mu);
  f.gate_open = 1;
  pthread_cond_broadcast(&f.cv);
  pthread_mutex_unlock(&f.mu);
  for (int i = 0; i < 8; i++) pthread_join(t[i], NULL);
  for (int i = 0; i < 8; i++) {
    assert_int_equal(c[i].st, IM_OK);
    assert_int_equal(c[i].job.st, IM_OK);
    assert_true(c[i].y[0] == (float)i + 0.5f);
    assert_true(c[i].y[1] == 1);
  }
  assert_int_equal(f.sizes[0], 1);
  if (expect_merged) {
    assert_int_equal(f.batches, 2);
    assert_int_equal(f.sizes[1], 7);
    assert_int_equal(f.jobs_in[1], 7);
  } else {
    assert_int_equal(f.batches, 8);
    for (int i = 0; i < 8; i++) assert_int_equal(f.sizes[i], 1);
  }
  im__serve_batcher_free(f.b);
  pthread_mutex_destroy(&f.mu);
  pthread_cond_destroy(&f.cv);
}

static void test_batcher_merges(void **state) { run_clients(8, 1); }
static void test_batcher_no_batching(void **state) { run_clients(1, 0); }

static void test_batcher_timeout_and_stop(void **state) {
  fake_t f = {.gate_open = 0};
  pthread_mutex_init(&f.mu, NULL);
  pthread_cond_init(&f.cv, NULL);
  im__serve_batcher_opts_t o = {.workers = 1, .max_batch = 4, .max_latency_s = 0.01, .run = fake_run, .user = &f};
  assert_int_equal(im__serve_batcher_new(&o, &f.b), IM_OK);
  client_t first = {.f = &f};
  pthread_t t;
  pthread_create(&t, NULL, client, &first);
  wait_entered(&f); /* the worker holds the first job at the gate */
  /* a second request cannot be taken while the worker is busy: it times out */
  float x[2] = {1, 2}, y[2];
  im__serve_job_t j = {.x = x, .probs = y, .n = 1, .gen = (void *)1};
  assert_int_equal(im__serve_batcher_submit(f.b, &j, 0.02), IM_ERR_CANCELLED);
  assert_int_equal(im__serve_batcher_queued(f.b), 0);
  pthread_mutex_lock(&f.mu);
  f.gate_open = 1;
  pthread_cond_broadcast(&f.cv);
  pthread_mutex_unlock(&f.mu);
  pthread_join(t, NULL);
  assert_int_equal(first.st, IM_OK);
  im__serve_batcher_stop(f.b);
  assert_int_equal(im__serve_batcher_submit(f.b, &j, 1), IM_ERR_CANCELLED);
  im__serve_batcher_free(f.b);
  pthread_mutex_destroy(&f.mu);
  pthread_cond_destroy(&f.cv);
}

/* Many clients on two workers with small batches: each client returns only
 * once its own job ran (a waiter woken for another job would come back with
 * its output unwritten). */
static void test_batcher_many_clients(void **state) {
  fake_t f = {.gate_open = 1};
  pthread_mutex_init(&f.mu, NULL);
  pthread_cond_init(&f.cv, NULL);
  im__serve_batcher_opts_t o = {.workers = 2, .max_batch = 3, .max_latency_s = 0.002, .run = fake_run, .user = &f};
  assert_int_equal(im__serve_batcher_new(&o, &f.b), IM_OK);
  enum { N = 48 };
  client_t c[N];
  pthread_t t[N];
  for (int i = 0; i < N; i++) {
    c[i] = (client_t){.f = &f, .x = {(float)i, 0.25f}, .y = {-1, -1}};
    assert_int_equal(pthread_create(&t[i], NULL, client, &c[i]), 0);
  }
  for (int i = 0; i < N; i++) pthread_join(t[i], NULL);
  for (int i = 0; i < N; i++) {
    assert_int_equal(c[i].st, IM_OK);
    assert_int_equal(c[i].job.st, IM_OK);
    assert_int_equal(c[i].job.state, 2);
    assert_true(c[i].y[0] == (float)i + 0.25f);
    assert_true(c[i].y[1] == 1);
  }
  assert_int_equal(im__serve_batcher_queued(f.b), 0);
  im__serve_batcher_free(f.b);
  pthread_mutex_destroy(&f.mu);
  pthread_cond_destroy(&f.cv);
}

/* ---- drift statistics ---- */

static void test_plane_sums(void **state) {
  static float p[1000];
  uint32_t r = 12345;
  for (size_t i = 0; i < 1000; i++) {
    r = r * 1103515245u + 12345u;
    p[i] = (float)((r >> 8) & 0xffff) / 65536.0f * 4.0f - 2.0f;
  }
  const size_t ns[] = {0, 1, 7, 8, 9, 15, 16, 17, 999, 1000};
  for (size_t k = 0; k < sizeof ns / sizeof *ns; k++) {
    double want = 0, want_sq = 0, sum = -1, sq = -1;
    for (size_t i = 0; i < ns[k]; i++) {
      double v = (double)p[i] * 0.229 + 0.485;
      want += v;
      want_sq += v * v;
    }
    im__serve_plane_sums(p, ns[k], 0.229, 0.485, &sum, &sq);
    assert_true(fabs(sum - want) <= 1e-12 * (1 + fabs(want)));
    assert_true(fabs(sq - want_sq) <= 1e-12 * (1 + want_sq));
  }
  /* small integers: every partial sum is exact, so the result is too */
  float ints[21];
  for (int i = 0; i < 21; i++) ints[i] = (float)(i - 10);
  double sum, sq;
  im__serve_plane_sums(ints, 21, 2.0, 1.0, &sum, &sq); /* v = 2x + 1 for x in -10..10 */
  assert_true(sum == 21.0);
  assert_true(sq == 4.0 * 770 + 21.0); /* sum (2x+1)^2 = 4 sum x^2 + 4 sum x + 21 */
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_base64),           cmocka_unit_test(test_compression),
      cmocka_unit_test(test_predict_multipart),
      cmocka_unit_test(test_predict_raw_and_json), cmocka_unit_test(test_v2_json),
      cmocka_unit_test(test_v2_binary),        cmocka_unit_test(test_v2_errors),
      cmocka_unit_test(test_latency_model),    cmocka_unit_test(test_batcher_merges),
      cmocka_unit_test(test_batcher_no_batching), cmocka_unit_test(test_batcher_timeout_and_stop),
      cmocka_unit_test(test_batcher_many_clients), cmocka_unit_test(test_plane_sums),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
