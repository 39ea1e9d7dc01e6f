/* Unit tests of the artifact stores and tracking clients of src/track: S3
 * request building (path-style URLs, SigV4-ordered ListObjectsV2 queries,
 * s3:// URIs, configuration from the environment), the S3 XML parsers
 * (ListObjectsV2 pages, errors, multipart ids; malformed input), artifact
 * path checks, the local-directory store (put, list, get_dir, delete,
 * fetch), and the embedded tracking client (experiment by name, batches
 * beyond MLflow's limits, artifacts, model URIs). S3 against a real server is
 * tests/integration/test_s3.py. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "imops/core.h"
#include "imops/track.h"
#include "testutil.h"
#include "track/client_impl.h"

#define OK(x) assert_int_equal((x), IM_OK)

static void test_s3_split_and_url(void **state) {
  (void)state;
  char *b = NULL, *k = NULL;
  OK(im__s3_split("s3://my-bucket/a/b/", &b, &k));
  assert_string_equal(b, "my-bucket");
  assert_string_equal(k, "a/b");
  im_free(b);
  im_free(k);
  OK(im__s3_split("s3://bkt", &b, &k));
  assert_string_equal(k, "");
  im_free(b);
  im_free(k);
  assert_int_equal(im__s3_split("s3:///key", &b, &k), IM_ERR_ARG);
  assert_int_equal(im__s3_split("s3://Bad_Bucket!/k", &b, &k), IM_ERR_ARG);
  assert_int_equal(im__s3_split("http://x/y", &b, &k), IM_ERR_ARG);

  char *u = NULL;
  OK(im__s3_url("http://127.0.0.1:9000", "bkt", "exp 1/run/a+b=c.txt", NULL, &u));
  assert_string_equal(u, "http://127.0.0.1:9000/bkt/exp%201/run/a%2Bb%3Dc.txt");
  im_free(u);
  OK(im__s3_url("http://h", "bkt", "", "uploads=", &u));
  assert_string_equal(u, "http://h/bkt?uploads=");
  im_free(u);

  char *q = NULL; /* SigV4 wants the parameters sorted by name and encoded */
  OK(im__s3_list_query("a b/", "/", "tok/+=", &q));
  assert_string_equal(q, "continuation-token=tok%2F%2B%3D&delimiter=%2F&list-type=2&prefix=a%20b%2F");
  im_free(q);
  OK(im__s3_list_query("", NULL, NULL, &q));
  assert_string_equal(q, "list-type=2&prefix=");
  im_free(q);
}

static void test_s3_conf_env(void **state) {
  (void)state;
  unsetenv("AWS_ACCESS_KEY_ID");
  setenv("AWS_SECRET_ACCESS_KEY", "s", 1);
  im__s3_conf_t c;
  assert_int_equal(im__s3_conf_from_env(&c), IM_ERR_ARG);
  assert_non_null(strstr(im_last_error(), "AWS_ACCESS_KEY_ID"));
  setenv("AWS_ACCESS_KEY_ID", "AKID", 1);
  setenv("MLFLOW_S3_ENDPOINT_URL", "http://127.0.0.1:9/", 1);
  setenv("AWS_DEFAULT_REGION", "eu-west-3", 1);
  OK(im__s3_conf_from_env(&c));
  assert_string_equal(c.endpoint, "http://127.0.0.1:9");
  assert_string_equal(c.region, "eu-west-3");
  assert_string_equal(c.access_key, "AKID");
  assert_null(c.session_token);
  im__s3_conf_clear(&c);
  setenv("MLFLOW_S3_ENDPOINT_URL", "ftp://x", 1);
  assert_int_equal(im__s3_conf_from_env(&c), IM_ERR_ARG);
  unsetenv("MLFLOW_S3_ENDPOINT_URL");
  unsetenv("AWS_DEFAULT_REGION");
}

static const char page1[] =
    "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
    "<ListBucketResult xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Name>bkt</Name><Prefix>p/</Prefix>"
    "<KeyCount>3</KeyCount><MaxKeys>1000</MaxKeys><Delimiter>/</Delimiter><IsTruncated>true</IsTruncated>"
    "<Contents><Key>p/a.txt</Key><LastModified>2024-01-01T00:00:00.000Z</LastModified><ETag>&quot;x&quot;</ETag>"
    "<Size>12</Size><StorageClass>STANDARD</StorageClass></Contents>"
    "<Contents><Key>p/b &amp; c.bin</Key><Size>0</Size></Contents>"
    "<CommonPrefixes><Prefix>p/model/</Prefix></CommonPrefixes>"
    "<NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>"
    "</ListBucketResult>";

static void test_s3_parse_list(void **state) {
  (void)state;
  im__s3_list_t l;
  OK(im__s3_parse_list(page1, sizeof page1 - 1, &l));
  assert_int_equal(l.n, 2);
  assert_string_equal(l.keys[0], "p/a.txt");
  assert_int_equal(l.sizes[0], 12);
  assert_string_equal(l.keys[1], "p/b & c.bin");
  assert_int_equal(l.sizes[1], 0);
  assert_int_equal(l.n_prefixes, 1);
  assert_string_equal(l.prefixes[0], "p/model/");
  assert_true(l.truncated);
  assert_string_equal(l.next_token, "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=");
  im__s3_list_clear(&l);

  static const char last[] = "<ListBucketResult><IsTruncated>false</IsTruncated></ListBucketResult>";
  OK(im__s3_parse_list(last, sizeof last - 1, &l));
  assert_int_equal(l.n, 0);
  assert_false(l.truncated);
  assert_null(l.next_token);
  im__s3_list_clear(&l);

  static const char *const bad[] = {
      "",
      "<ListBucketResult>",                                                          /* unclosed */
      "<Error><Code>AccessDenied</Code></Error>",                                    /* another root */
      "<ListBucketResult><Contents><Size>1</Size></Contents></ListBucketResult>",    /* no key */
      "<ListBucketResult><Contents><Key>k</Key><Size>-1</Size></Contents></ListBucketResult>",
      "<ListBucketResult><Contents><Key>k</Key><Size>12x</Size></Contents></ListBucketResult>",
      "<ListBucketResult><Contents><Key>k</Key></Contents></ListBucketResult>",      /* no size */
      "<ListBucketResult><IsTruncated>true</IsTruncated></ListBucketResult>",        /* no token */
      "<ListBucketResult><IsTruncated>maybe</IsTruncated></ListBucketResult>",
      "<ListBucketResult><CommonPrefixes></CommonPrefixes></ListBucketResult>",
      "<!DOCTYPE x [<!ENTITY e SYSTEM \"file:///etc/passwd\">]><ListBucketResult><Contents><Key>&e;</Key>"
      "<Size>1</Size></Contents></ListBucketResult>",
  };
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    im_status_t st = im__s3_parse_list(bad[i], strlen(bad[i]), &l);
    if (i == sizeof bad / sizeof bad[0] - 1 && st == IM_OK) {
      /* an external entity is never loaded: the key stays empty, never the file's text */
      assert_true(l.n == 1 && strstr(l.keys[0], "root") == NULL);
      im__s3_list_clear(&l);
      continue;
    }
    assert_int_not_equal(st, IM_OK);
    assert_int_equal(l.n, 0);
  }
}

static void test_s3_parse_error_and_upload(void **state) {
  (void)state;
  static const char err[] = "<?xml version=\"1.0\"?><Error><Code>SignatureDoesNotMatch</Code><Message>The request "
                            "signature we calculated does not match</Message><RequestId>1</RequestId></Error>";
  char *code = NULL, *msg = NULL;
  OK(im__s3_parse_error(err, sizeof err - 1, &code, &msg));
  assert_string_equal(code, "SignatureDoesNotMatch");
  assert_non_null(strstr(msg, "does not match"));
  im_free(code);
  im_free(msg);
  assert_int_equal(im__s3_parse_error("<ListBucketResult/>", 19, &code, &msg), IM_ERR_FORMAT);
  assert_null(code);
  static const char up[] = "<InitiateMultipartUploadResult><Bucket>b</Bucket><Key>k</Key><UploadId>abc-123</UploadId>"
                           "</InitiateMultipartUploadResult>";
  char *id = NULL;
  OK(im__s3_parse_upload_id(up, sizeof up - 1, &id));
  assert_string_equal(id, "abc-123");
  im_free(id);
  static const char noid[] = "<InitiateMultipartUploadResult><UploadId></UploadId></InitiateMultipartUploadResult>";
  assert_int_equal(im__s3_parse_upload_id(noid, sizeof noid - 1, &id), IM_ERR_FORMAT);
  assert_null(id);
}

static void test_rel_paths(void **state) {
  (void)state;
  char *c = NULL;
  assert_int_equal(im__trk_clean_rel("a//b/./", &c), IM_ERR_ARG); /* "." is refused */
  OK(im__trk_clean_rel("a//b/", &c));
  assert_string_equal(c, "a/b");
  im_free(c);
  OK(im__trk_clean_rel("", &c));
  assert_string_equal(c, "");
  im_free(c);
  assert_int_equal(im__trk_clean_rel("../x", &c), IM_ERR_ARG);
  assert_int_equal(im__trk_clean_rel("a/../../x", &c), IM_ERR_ARG);
  assert_int_equal(im__trk_clean_rel("/etc/passwd", &c), IM_ERR_ARG);
  assert_int_equal(im__trk_clean_rel("a\\..\\b", &c), IM_ERR_ARG);
}

static int count_files(const im_track_file_list_t *l, int dirs) {
  int n = 0;
  for (int64_t i = 0; i < l->n; i++) n += l->items[i].is_dir == dirs;
  return n;
}

static void test_local_store(void **state) {
  (void)state;
  const char *tmp = tu_tmpdir();
  const char *src = tu_path(tmp, "src");
  assert_int_equal(im_mkdir_p(tu_path(src, "sub/deeper")), IM_OK);
  assert_int_equal(tu_write_file(tu_path(src, "a.txt"), "hello", 5), 0);
  assert_int_equal(tu_write_file(tu_path(src, "sub/deeper/b.bin"), "12345678", 8), 0);
  const char *root = tu_path(tmp, "store");
  char uri[1024];
  snprintf(uri, sizeof uri, "file://%s", root);
  im_track_artifacts_t *a = NULL;
  OK(im_track_artifacts_open(uri, &a));
  assert_false(im_track_artifacts_is_remote(a));
  OK(im_track_artifacts_put_dir(a, "run/model", src));
  OK(im_track_artifacts_put_bytes(a, "run/notes.txt", "n", 1));
  assert_int_equal(im_track_artifacts_put_bytes(a, "../escape", "x", 1), IM_ERR_ARG);
  assert_int_equal(im_track_artifacts_put_file(a, "run/x", tu_path(src, "missing")), IM_ERR_NOT_FOUND);

  im_track_file_list_t *l = NULL;
  OK(im_track_artifacts_list(a, "run", &l));
  assert_int_equal(l->n, 2);
  assert_string_equal(l->items[0].path, "model");
  assert_true(l->items[0].is_dir);
  assert_string_equal(l->items[1].path, "notes.txt");
  assert_int_equal(l->items[1].size, 1);
  im_track_file_list_free(l);
  OK(im_track_artifacts_list_all(a, "run/model", &l));
  assert_int_equal(l->n, 2);
  assert_int_equal(count_files(l, 0), 2);
  assert_string_equal(l->items[0].path, "a.txt");
  assert_string_equal(l->items[1].path, "sub/deeper/b.bin");
  im_track_file_list_free(l);
  OK(im_track_artifacts_list(a, "nothing/here", &l));
  assert_int_equal(l->n, 0);
  im_track_file_list_free(l);

  int kind = -1;
  OK(im_track_artifacts_stat(a, "run/model", &kind));
  assert_int_equal(kind, 2);
  OK(im_track_artifacts_stat(a, "run/notes.txt", &kind));
  assert_int_equal(kind, 1);
  OK(im_track_artifacts_stat(a, "run/none", &kind));
  assert_int_equal(kind, 0);

  const char *copy = tu_path(tmp, "copy");
  OK(im_track_artifacts_get_dir(a, "run/model", copy));
  uint8_t *data = NULL;
  size_t len = 0;
  OK(im_file_read(tu_path(copy, "sub/deeper/b.bin"), 0, &data, &len));
  assert_int_equal(len, 8);
  assert_memory_equal(data, "12345678", 8);
  im_free(data);
  assert_int_equal(im_track_artifacts_get_dir(a, "run/none", tu_path(tmp, "copy2")), IM_ERR_NOT_FOUND);
  assert_false(im_is_dir(tu_path(tmp, "copy2")));
  assert_int_equal(im_track_artifacts_get_file(a, "run/none.txt", tu_path(tmp, "none.txt")), IM_ERR_NOT_FOUND);

  char *local = NULL; /* local URIs are their own cache */
  OK(im_track_artifacts_fetch(uri, NULL, &local));
  assert_string_equal(local, root);
  im_free(local);

  OK(im_track_artifacts_delete(a, "run/model"));
  OK(im_track_artifacts_stat(a, "run/model", &kind));
  assert_int_equal(kind, 0);
  assert_int_equal(im_track_artifacts_delete(a, ""), IM_ERR_ARG);
  im_track_artifacts_free(a);
  tu_rmtree(tmp);
}

static void test_embedded_client(void **state) {
  (void)state;
  const char *tmp = tu_tmpdir();
  const char *ws = tu_path(tmp, "ws");
  unsetenv("MLFLOW_TRACKING_URI");
  im_track_client_t *c = NULL;
  OK(im_track_client_open(ws, &c));
  assert_false(im_track_client_is_remote(c));
  assert_non_null(im_track_client_store(c));
  char *e1 = NULL, *e2 = NULL;
  OK(im_track_client_experiment_id(c, "cnn", &e1));
  OK(im_track_client_experiment_id(c, "cnn", &e2)); /* found, not created twice */
  assert_string_equal(e1, e2);
  im_track_run_create_t rc = {.experiment_id = e1, .run_name = "r1"};
  im_track_run_t *r = NULL;
  OK(im_track_client_run_create(c, &rc, &r));
  char *rid = im_strdup(r->run_id);
  im_track_run_free(r);

  /* 2500 metrics, 150 params, 120 tags: split into batches within MLflow's limits */
  enum { NM = 2500, NP = 150, NT = 120 };
  im_track_metric_in_t *ms = calloc(NM, sizeof *ms);
  im_track_kv_t *ps = calloc(NP, sizeof *ps), *ts = calloc(NT, sizeof *ts);
  char (*keys)[32] = calloc(NP + NT, sizeof *keys);
  for (int i = 0; i < NM; i++) ms[i] = (im_track_metric_in_t){"loss", 1.0 / (i + 1), 1000 + i, i};
  for (int i = 0; i < NP; i++) {
    snprintf(keys[i], 32, "p%d", i);
    ps[i] = (im_track_kv_t){keys[i], "v"};
  }
  for (int i = 0; i < NT; i++) {
    snprintf(keys[NP + i], 32, "t%d", i);
    ts[i] = (im_track_kv_t){keys[NP + i], "w"};
  }
  OK(im_track_client_log_batch(c, rid, ms, NM, ps, NP, ts, NT));
  im_track_metric_list_t *h = NULL;
  OK(im_track_client_metric_history(c, rid, "loss", &h));
  assert_int_equal(h->n, NM);
  assert_int_equal(h->items[NM - 1].step, NM - 1);
  im_track_metric_list_free(h);
  OK(im_track_client_run_get(c, rid, &r));
  assert_int_equal(r->n_params, NP);
  assert_true(r->n_tags >= NT);
  im_track_run_free(r);

  /* artifacts into the run's (local) artifact folder, and back through runs:/ */
  const char *model = tu_path(tmp, "bundle");
  assert_int_equal(im_mkdir_p(model), IM_OK);
  assert_int_equal(tu_write_file(tu_path(model, "MLmodel"), "flavors: {}\n", 12), 0);
  OK(im_track_client_log_artifacts(c, rid, model, "model"));
  assert_int_equal(im_track_client_log_artifacts(c, rid, model, "../x"), IM_ERR_ARG);
  char uri[128], *dir = NULL, *got_run = NULL;
  snprintf(uri, sizeof uri, "runs:/%s/model", rid);
  OK(im_track_client_fetch_model(c, uri, NULL, &dir, &got_run));
  assert_string_equal(got_run, rid);
  assert_true(im_is_dir(dir));
  struct stat sb;
  assert_int_equal(stat(tu_path(dir, "MLmodel"), &sb), 0);
  im_free(dir);
  im_free(got_run);
  /* the run and artifact path behind runs:/ and models:/ URIs (a runs:/ source, and
   * a source inside the run's artifact URI) */
  char *prun = NULL, *ppath = NULL;
  OK(im_track_client_model_run_path(c, uri, &prun, &ppath));
  assert_string_equal(prun, rid);
  assert_string_equal(ppath, "model");
  im_free(prun);
  im_free(ppath);
  im_track_store_t *s = im_track_client_store(c);
  OK(im_track_model_create(s, "m", NULL, NULL, 0, NULL));
  OK(im_track_client_run_get(c, rid, &r));
  char src2[600];
  snprintf(src2, sizeof src2, "%s/model", r->artifact_uri);
  im_track_run_free(r);
  im_track_model_version_create_t vc1 = {.name = "m", .source = uri, .run_id = rid};
  im_track_model_version_create_t vc2 = {.name = "m", .source = src2, .run_id = rid};
  im_track_model_version_t *v = NULL;
  OK(im_track_model_version_create(s, &vc1, &v));
  im_track_model_version_free(v);
  OK(im_track_model_version_create(s, &vc2, &v));
  im_track_model_version_free(v);
  for (int k = 1; k <= 2; k++) {
    char muri[64];
    snprintf(muri, sizeof muri, "models:/m/%d", k);
    OK(im_track_client_model_run_path(c, muri, &prun, &ppath));
    assert_string_equal(prun, rid);
    assert_string_equal(ppath, "model");
    im_free(prun);
    im_free(ppath);
  }
  assert_int_equal(im_track_client_model_run_path(c, "s3://b/k", &prun, &ppath), IM_ERR_ARG);
  assert_null(prun);
  assert_int_equal(im_track_client_model_run_path(c, "models:/m/9", &prun, &ppath), IM_ERR_NOT_FOUND);
  im_track_run_update_t up = {.status = IM_TRACK_RUN_FINISHED, .end_time = 5};
  OK(im_track_client_run_update(c, rid, &up));
  OK(im_track_client_run_get(c, rid, &r));
  assert_int_equal(r->status, IM_TRACK_RUN_FINISHED);
  im_track_run_free(r);

  OK(im_track_experiment_delete(im_track_client_store(c), e1));
  im_free(e2);
  e2 = NULL;
  assert_int_equal(im_track_client_experiment_id(c, "cnn", &e2), IM_ERR_STATE);
  im_track_client_close(c);
  free(ms);
  free(ps);
  free(ts);
  free(keys);
  im_free(e1);
  im_free(rid);
  tu_rmtree(tmp);
}

static void test_rest_client_unreachable(void **state) {
  (void)state;
  im_track_client_t *c = NULL; /* nothing listens on port 9 of loopback: a clear transport error */
  OK(im_track_client_open("http://127.0.0.1:9", &c));
  assert_true(im_track_client_is_remote(c));
  assert_null(im_track_client_store(c));
  assert_string_equal(im_track_client_where(c), "http://127.0.0.1:9");
  char *id = NULL;
  assert_int_not_equal(im_track_client_experiment_id(c, "x", &id), IM_OK);
  assert_null(id);
  assert_non_null(strstr(im_last_error(), "127.0.0.1:9"));
  im_track_client_close(c);
  assert_int_equal(im_track_client_open("databricks://x", &c), IM_ERR_UNSUPPORTED);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_s3_split_and_url),  cmocka_unit_test(test_s3_conf_env),
      cmocka_unit_test(test_s3_parse_list),     cmocka_unit_test(test_s3_parse_error_and_upload),
      cmocka_unit_test(test_rel_paths),         cmocka_unit_test(test_local_store),
      cmocka_unit_test(test_embedded_client),   cmocka_unit_test(test_rest_client_unreachable),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
