/* Unit tests of src/yaml: core-schema scalar types, positions, anchors and
 * aliases, errors that name file:line:col (bad syntax, duplicate keys,
 * non-scalar keys, self-referencing aliases, alias bombs, depth, several
 * documents), conversion to JSON, and emit-then-parse round trips. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "imops/core.h"
#include "imops/yaml.h"

static im_yaml_doc_t *parse_ok(const char *text) {
  im_yaml_doc_t *d = NULL;
  im_status_t st = im_yaml_parse(text, strlen(text), "t.yaml", &d);
  if (st) fprintf(stderr, "unexpected failure: %s\n", im_last_error());
  assert_int_equal(st, IM_OK);
  return d;
}

static void parse_bad(const char *text, const char *needle) {
  im_yaml_doc_t *d = NULL;
  im_status_t st = im_yaml_parse(text, strlen(text), "t.yaml", &d);
  assert_int_equal(st, IM_ERR_FORMAT);
  assert_null(d);
  if (!strstr(im_last_error(), needle)) {
    fprintf(stderr, "message '%s' lacks '%s'\n", im_last_error(), needle);
    fail();
  }
}

static void test_scalar_types(void **state) {
  (void)state;
  im_yaml_doc_t *d = parse_ok("a: 1\nb: 0x1F\nc: 0o17\nd: 1.5\ne: 1e-3\nf: .inf\ng: -.Inf\nh: .nan\n"
                              "i: true\nj: False\nk: ~\nl:\nm: null\nn: '1'\no: \"true\"\np: hello world\n"
                              "q: 1.2.3\nr: 99999999999999999999\ns: .5\nt: 5.\nu: yes\n");
  const im_yaml_node_t *r = im_yaml_root(d);
  assert_int_equal(r->kind, IM_YAML_MAP);
  assert_int_equal(r->n, 21);
  assert_true(im_yaml_is(im_yaml_map_get(r, "a"), IM_YAML_INT));
  assert_int_equal(im_yaml_map_get(r, "a")->i, 1);
  assert_int_equal(im_yaml_map_get(r, "b")->i, 31);
  assert_int_equal(im_yaml_map_get(r, "c")->i, 15);
  assert_true(im_yaml_is(im_yaml_map_get(r, "d"), IM_YAML_FLOAT));
  assert_true(fabs(im_yaml_map_get(r, "e")->d - 1e-3) < 1e-18);
  assert_true(isinf(im_yaml_map_get(r, "f")->d) && im_yaml_map_get(r, "f")->d > 0);
  assert_true(isinf(im_yaml_map_get(r, "g")->d) && im_yaml_map_get(r, "g")->d < 0);
  assert_true(isnan(im_yaml_map_get(r, "h")->d));
  assert_true(im_yaml_is(im_yaml_map_get(r, "i"), IM_YAML_BOOL) && im_yaml_map_get(r, "i")->i == 1);
  assert_true(im_yaml_is(im_yaml_map_get(r, "j"), IM_YAML_BOOL) && im_yaml_map_get(r, "j")->i == 0);
  assert_true(im_yaml_is(im_yaml_map_get(r, "k"), IM_YAML_NULL));
  assert_true(im_yaml_is(im_yaml_map_get(r, "l"), IM_YAML_NULL));
  assert_true(im_yaml_is(im_yaml_map_get(r, "m"), IM_YAML_NULL));
  assert_true(im_yaml_is(im_yaml_map_get(r, "n"), IM_YAML_STR));
  assert_true(im_yaml_is(im_yaml_map_get(r, "o"), IM_YAML_STR));
  assert_string_equal(im_yaml_map_get(r, "p")->str, "hello world");
  assert_true(im_yaml_is(im_yaml_map_get(r, "q"), IM_YAML_STR));
  assert_true(im_yaml_is(im_yaml_map_get(r, "r"), IM_YAML_FLOAT));
  assert_true(im_yaml_is_number(im_yaml_map_get(r, "s")));
  assert_true(im_yaml_is_number(im_yaml_map_get(r, "t")));
  assert_true(im_yaml_is(im_yaml_map_get(r, "u"), IM_YAML_STR)); /* YAML 1.2: yes is a string */
  assert_null(im_yaml_map_get(r, "zz"));
  assert_null(im_yaml_map_get(im_yaml_map_get(r, "a"), "a"));
  im_yaml_free(d);
}

static void test_positions_and_aliases(void **state) {
  (void)state;
  im_yaml_doc_t *d = parse_ok("# comment\nbase: &b\n  lr: 0.1\n  bs: [32, 64]\ncopy: *b\nlist:\n  - x\n  - {y: 2}\n");
  const im_yaml_node_t *r = im_yaml_root(d);
  const im_yaml_node_t *base = im_yaml_map_get(r, "base");
  assert_int_equal(base->kind, IM_YAML_MAP);
  assert_int_equal(base->line, 2); /* where its anchor stands */
  assert_ptr_equal(im_yaml_map_get(r, "copy"), base);
  const im_yaml_node_t *bs = im_yaml_map_get(base, "bs");
  assert_int_equal(bs->kind, IM_YAML_SEQ);
  assert_int_equal(bs->n, 2);
  assert_int_equal(bs->items[1]->i, 64);
  assert_int_equal(bs->items[1]->line, 4);
  assert_int_equal(bs->items[1]->col, 12);
  const im_yaml_node_t *list = im_yaml_map_get(r, "list");
  assert_int_equal(list->items[1]->kind, IM_YAML_MAP);
  assert_int_equal(list->items[1]->line, 8);
  im_yaml_free(d);

  d = parse_ok("");
  assert_true(im_yaml_is(im_yaml_root(d), IM_YAML_NULL));
  im_yaml_free(d);
}

static void test_errors(void **state) {
  (void)state;
  parse_bad("a: [1, 2\n", "t.yaml:");
  parse_bad("a: 1\nb: 2\na: 3\n", "t.yaml:3:1: duplicate key 'a'");
  parse_bad("? [1]\n: 2\n", "mapping key must be a scalar");
  parse_bad("a: &x [1, *x]\n", "alias refers to a node that contains it");
  parse_bad("a: 1\n---\nb: 2\n", "more than one YAML document");
  parse_bad("a:\tb: c\n  - d\n", "t.yaml:");
  /* an alias bomb: 10 levels of 10 references each */
  char bomb[4096];
  size_t o = (size_t)snprintf(bomb, sizeof bomb, "l0: &l0 [x, x, x, x, x, x, x, x, x, x]\n");
  for (int i = 1; i < 10; i++) {
    o += (size_t)snprintf(bomb + o, sizeof bomb - o, "l%d: &l%d [", i, i);
    for (int k = 0; k < 10; k++) o += (size_t)snprintf(bomb + o, sizeof bomb - o, "%s*l%d", k ? ", " : "", i - 1);
    o += (size_t)snprintf(bomb + o, sizeof bomb - o, "]\n");
  }
  parse_bad(bomb, "expand to more than 1,000,000 nodes");
  /* depth */
  char deep[512];
  memset(deep, '[', 100);
  memset(deep + 100, ']', 100);
  deep[200] = 0;
  parse_bad(deep, "nesting deeper than 64");
  im_yaml_doc_t *d = NULL;
  assert_int_equal(im_yaml_load_file("/nonexistent/x.yaml", &d), IM_ERR_IO);
}

static void test_json_and_emit_round_trip(void **state) {
  (void)state;
  const char *src = "name: sweep\nmethod: bayes\nmetric: {name: val_loss, goal: minimize}\n"
                    "parameters:\n  lr: {min: 0.001, max: 0.1, distribution: log_uniform_values}\n"
                    "  bs: {values: [32, 64, 128]}\n  opt: {values: [adam, sgd, 'true', '1', '']}\n"
                    "  f: {value: 2.0}\n  n: {value: null}\n  s: {value: \"a: b # c\"}\n  e: {}\n  l: []\n";
  im_yaml_doc_t *d = parse_ok(src);
  json_t *j = im_yaml_to_json(im_yaml_root(d));
  assert_non_null(j);
  assert_string_equal(json_string_value(json_object_get(json_object_get(j, "metric"), "goal")), "minimize");
  assert_true(json_is_real(json_object_get(json_object_get(json_object_get(j, "parameters"), "lr"), "min")));
  im_buf_t b = {0};
  assert_int_equal(im_yaml_emit_json(j, "generated by a test\nsecond line", &b), IM_OK);
  assert_non_null(b.data);
  assert_memory_equal(b.data, "# generated by a test\n# second line\n", 36);
  im_yaml_doc_t *d2 = parse_ok(b.data);
  json_t *j2 = im_yaml_to_json(im_yaml_root(d2));
  if (!json_equal(j, j2)) {
    fprintf(stderr, "round trip differs:\n%s\n", b.data);
    fail();
  }
  json_decref(j);
  json_decref(j2);
  im_buf_free(&b);
  im_yaml_free(d);
  im_yaml_free(d2);
}

static void test_alloc_failures(void **state) {
  (void)state;
  const char *src = "a: [1, 2, {b: c}]\nd: &x e\nf: *x\n";
  for (int64_t k = 1; k < 200; k++) {
    im_yaml_doc_t *d = NULL;
    im_alloc_fail_after(k);
    im_status_t st = im_yaml_parse(src, strlen(src), "t.yaml", &d);
    im_alloc_fail_after(0);
    if (st == IM_OK) {
      assert_non_null(d);
      im_yaml_free(d);
      break;
    }
    assert_null(d);
  }
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_scalar_types),
      cmocka_unit_test(test_positions_and_aliases),
      cmocka_unit_test(test_errors),
      cmocka_unit_test(test_json_and_emit_round_trip),
      cmocka_unit_test(test_alloc_failures),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
