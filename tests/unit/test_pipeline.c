/* Unit tests of src/pipeline: the pipeline file (the surface example, every
 * validation error with its file:line:col), parameter values, condition
 * expressions (parse errors with columns, evaluation, CEL), dependency order,
 * cache keys and input hashes, reading outputs, the Kubeflow compile, and the
 * runner itself with /bin/sh as the step program (outputs between steps,
 * parallel steps, retries, failure propagation with logs kept, caching,
 * cancellation). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imops/core.h"
#include "imops/pipeline.h"
#include "imops/track.h"
#include "imops/yaml.h"
#include "testutil.h"

static im_pipeline_t *parse_ok(const char *text) {
  im_pipeline_t *p = NULL;
  im_status_t st = im_pipeline_parse(text, strlen(text), "t.yaml", &p);
  if (st) fprintf(stderr, "unexpected failure: %s\n", im_last_error());
  assert_int_equal(st, IM_OK);
  return p;
}

static void parse_bad(const char *text, const char *needle) {
  im_pipeline_t *p = NULL;
  im_status_t st = im_pipeline_parse(text, strlen(text), "t.yaml", &p);
  if (st != IM_ERR_FORMAT) fprintf(stderr, "expected a format error for:\n%s\n", text);
  assert_int_equal(st, IM_ERR_FORMAT);
  assert_null(p);
  if (!strstr(im_last_error(), needle)) {
    fprintf(stderr, "message '%s' lacks '%s'\n", im_last_error(), needle);
    fail();
  }
}

static void test_surface_example(void **state) {
  (void)state;
  im_pipeline_t *p = NULL;
  assert_int_equal(im_pipeline_load_file(IM_SOURCE_DIR "/examples/surface/pipeline.yaml", &p), IM_OK);
  assert_string_equal(im_pipeline_name(p), "surface");
  assert_int_equal(im_pipeline_n_steps(p), 7);
  const int *order = im_pipeline_order(p);
  assert_string_equal(im_pipeline_step_name(p, order[0]), "preprocess");
  const int *deps;
  int n = im_pipeline_step_deps(p, im_pipeline_step_index(p, "alias"), &deps);
  assert_int_equal(n, 1);
  assert_string_equal(im_pipeline_step_name(p, deps[0]), "register");
  /* hyp mode hands the sweep to a final training run: train-best follows hyp */
  n = im_pipeline_step_deps(p, im_pipeline_step_index(p, "train-best"), &deps);
  int after_hyp = 0;
  for (int i = 0; i < n; i++) after_hyp |= !strcmp(im_pipeline_step_name(p, deps[i]), "hyp");
  assert_true(after_hyp);
  char *pj = NULL;
  const char *a[] = {"mode_hyp_train_test=test", "preprocess_yes_no=no", "epochs=3"};
  assert_int_equal(im_pipeline_resolve_params(p, a, 3, &pj), IM_OK);
  assert_non_null(strstr(pj, "\"epochs\":3"));
  int holds = -1;
  assert_int_equal(im_pipeline_step_when(p, im_pipeline_step_index(p, "test"), pj, "{}", &holds), IM_OK);
  assert_int_equal(holds, 1);
  assert_int_equal(im_pipeline_step_when(p, im_pipeline_step_index(p, "preprocess"), pj, "{}", &holds), IM_OK);
  assert_int_equal(holds, 0);
  char **argv = NULL;
  assert_int_equal(im_pipeline_step_argv(p, im_pipeline_step_index(p, "test"), pj, "{}", &argv, &n), IM_OK);
  assert_string_equal(argv[0], "test");
  assert_string_equal(argv[2], "models:/surface@champion");
  im_pipeline_argv_free(argv);
  /* register needs train's output, which a test-mode run does not have */
  assert_int_equal(im_pipeline_step_argv(p, im_pipeline_step_index(p, "register"), pj, "{}", &argv, &n),
                   IM_ERR_NOT_FOUND);
  im_free(pj);
  im_pipeline_free(p);
}

static void test_params(void **state) {
  (void)state;
  im_pipeline_t *p = parse_ok("name: p\nparameters:\n  mode: {type: string, enum: [a, b], default: a}\n"
                              "  n: {type: int}\n  lr: {type: float, default: 0.1}\n  flag: {type: bool, default: false}\n"
                              "steps:\n  s: {args: [x, '{{params.n}}', '{{params.lr}}', '{{ params.flag }}']}\n");
  char *pj = NULL;
  const char *ok[] = {"n=3", "lr=1e-3", "flag=true", "mode=b"};
  assert_int_equal(im_pipeline_resolve_params(p, ok, 4, &pj), IM_OK);
  char **argv;
  int n;
  assert_int_equal(im_pipeline_step_argv(p, 0, pj, NULL, &argv, &n), IM_OK);
  assert_int_equal(n, 4);
  assert_string_equal(argv[1], "3");
  assert_string_equal(argv[2], "0.001");
  assert_string_equal(argv[3], "true");
  im_pipeline_argv_free(argv);
  im_free(pj);
  struct {
    const char *assign, *needle;
  } bad[] = {{"n=x", "parameter 'n' is a int, not 'x' (declared at t.yaml:4:3)"},
             {"mode=c", "must be one of a, b, not 'c'"},
             {"nope=1", "unknown parameter 'nope'"},
             {"flag=maybe", "is a bool"},
             {"lr=inf", "is a float"},
             {"=1", "NAME=VALUE"}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    const char *a[] = {"n=1", bad[i].assign};
    assert_int_equal(im_pipeline_resolve_params(p, a, 2, &pj), IM_ERR_ARG);
    if (!strstr(im_last_error(), bad[i].needle)) {
      fprintf(stderr, "'%s' lacks '%s'\n", im_last_error(), bad[i].needle);
      fail();
    }
  }
  assert_int_equal(im_pipeline_resolve_params(p, NULL, 0, &pj), IM_ERR_ARG);
  assert_non_null(strstr(im_last_error(), "parameter 'n' is required"));
  im_pipeline_free(p);
}

static void test_validation_errors(void **state) {
  (void)state;
  const char *head = "name: p\nparameters:\n  m: {type: string, enum: [a, b], default: a}\nsteps:\n";
  struct {
    const char *steps, *needle;
  } cases[] = {
      {"  a: {args: [x], after: [b]}\n  b: {args: [y], after: [a]}\n", "t.yaml:5:3: dependency cycle: a -> b -> a"},
      {"  a: {args: [x], after: [zz]}\n", "t.yaml:5:26: after: unknown step 'zz'"},
      {"  a: {args: ['{{params.q}}']}\n", "t.yaml:5:14: args: unknown parameter 'q'"},
      {"  a: {args: ['{{steps.b.outputs.o}}']}\n  b: {args: [y]}\n", "step 'b' declares no output 'o'"},
      {"  a: {args: ['{{steps.c.outputs.o}}']}\n", "unknown step 'c'"},
      {"  a: {args: [x], when: \"params.m = 'a'\"}\n", "t.yaml:5:24: when: column 10: unknown operator"},
      {"  a: {args: [x], when: \"params.m == 'a' and\"}\n", "expected a value, found the end"},
      {"  a: {args: [x], when: \"params.m == 1\"}\n", "compares a string with a number"},
      {"  a: {args: [x], when: \"params.zz == 1\"}\n", "when: unknown parameter 'zz'"},
      {"  a: {args: [x], when: \"params.m\"}\n", "a bare value must be a bool parameter"},
      {"  a: {args: [x], colour: red}\n", "t.yaml:5:18: unknown key 'colour' in a step"},
      {"  a: {args: [x], retries: -1}\n", "retries must be an integer 0..100"},
      {"  a: {args: [x], resources: {memory: lots}}\n", "memory must be a size"},
      {"  a: {args: [x], resources: {gpus: 1.5}}\n", "gpus must be an integer"},
      {"  a: {args: [x], cache: maybe}\n", "cache must be true or false"},
      {"  A_b: {args: [x]}\n", "step name 'A_b' must be lowercase"},
      {"  a: {args: []}\n", "args must be a non-empty list"},
      {"  a: {after: [b]}\n", "step 'a' needs args:"},
      {"  a: {args: ['{{nope}}']}\n", "is not a reference"},
      {"  a: {args: ['{{params.m']}\n", "is not closed"},
      {"  a: {args: [x], outputs: {o: {}}}\n", "needs json: KEY"},
      {"  a: {args: [x], after: a}\n", "cannot run after itself"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    char text[1024];
    snprintf(text, sizeof text, "%s%s", head, cases[i].steps);
    parse_bad(text, cases[i].needle);
  }
  parse_bad("name: p\nparameters:\n  m: {type: string, enum: [a, b], default: c}\nsteps:\n  a: {args: [x]}\n",
            "t.yaml:3:44: default of parameter 'm' is not one of its allowed values (a, b)");
  parse_bad("name: p\nparameters:\n  m: {type: int, default: x}\nsteps:\n  a: {args: [x]}\n", "is not a int");
  parse_bad("name: p\nparameters:\n  m: {type: complex}\nsteps:\n  a: {args: [x]}\n", "unknown parameter type");
  parse_bad("name: p\nsteps: {}\n", "steps must be a non-empty mapping");
  parse_bad("name: p\nstep:\n  a: {args: [x]}\n", "t.yaml:2:1: unknown key 'step' in the pipeline");
  parse_bad("steps:\n  a: {args: [x]}\n", "needs a name");
  parse_bad("name: p\nsteps:\n  a: {args: [x]}\n  a: {args: [y]}\n", "t.yaml:4:3");
  parse_bad("- a\n", "a pipeline file is a mapping");
  /* A longer cycle is reported with its path. */
  parse_bad("name: p\nsteps:\n  a: {args: [x]}\n  b: {args: [x], after: [d]}\n  c: {args: [x], after: [b]}\n"
            "  d: {args: [x], after: [c, a]}\n",
            "dependency cycle: b -> d -> c -> b");
}

static void test_order_valid(void **state) {
  (void)state;
  im_pipeline_t *p = parse_ok("name: p\nsteps:\n  d: {args: [x], after: [b, c], outputs: {o: {json: k}}}\n"
                              "  c: {args: [x], after: [a]}\n  b: {args: [x], after: [a]}\n  a: {args: [x]}\n"
                              "  e: {args: ['{{steps.d.outputs.o}}']}\n  f: {args: [x]}\n");
  const int *o = im_pipeline_order(p);
  const char *want[] = {"a", "c", "b", "d", "e", "f"};
  for (int i = 0; i < 6; i++) assert_string_equal(im_pipeline_step_name(p, o[i]), want[i]);
  const int *deps;
  assert_int_equal(im_pipeline_step_deps(p, im_pipeline_step_index(p, "e"), &deps), 1); /* implied by the reference */
  im_pipeline_free(p);
}

static int eval(const char *expr, const char *params, const char *outputs) {
  im_pipeline_expr_t *e = NULL;
  if (im_pipeline_expr_parse(expr, &e)) {
    fprintf(stderr, "%s: %s\n", expr, im_last_error());
    fail();
  }
  int r = -1;
  im_status_t st = im_pipeline_expr_eval(e, params, outputs, &r);
  im_pipeline_expr_free(e);
  return st ? -(int)st - 10 : r;
}

static void test_expressions(void **state) {
  (void)state;
  const char *P = "{\"m\": \"train\", \"n\": 3, \"x\": 0.5, \"b\": true, \"s\": \"it's\"}";
  const char *O = "{\"t\": {\"uri\": \"runs:/1/model\"}}";
  assert_int_equal(eval("params.m == 'train'", P, O), 1);
  assert_int_equal(eval("params.m != \"train\"", P, O), 0);
  assert_int_equal(eval("params.m in ['hyp', 'train']", P, O), 1);
  assert_int_equal(eval("params.m not in ['hyp', 'train']", P, O), 0);
  assert_int_equal(eval("params.n == 3 and params.x == 0.5", P, O), 1);
  assert_int_equal(eval("params.n == 3.0", P, O), 1);
  assert_int_equal(eval("params.n in [1, 2] or params.b", P, O), 1);
  assert_int_equal(eval("not params.b", P, O), 0);
  assert_int_equal(eval("not (params.m == 'x' or params.n == 4) and params.b == true", P, O), 1);
  assert_int_equal(eval("params.s == 'it\\'s'", P, O), 1);
  assert_int_equal(eval("steps.t.outputs.uri == 'runs:/1/model'", P, O), 1);
  /* precedence: and binds tighter than or */
  assert_int_equal(eval("params.b or params.n == 1 and params.n == 2", P, O), 1);
  assert_int_equal(eval("(params.b or params.n == 1) and params.n == 2", P, O), 0);
  /* missing values and mismatched kinds */
  assert_int_equal(eval("steps.u.outputs.uri == 'x'", P, O), -(int)IM_ERR_NOT_FOUND - 10);
  assert_int_equal(eval("params.m == 1", P, O), -(int)IM_ERR_ARG - 10);
  struct {
    const char *text, *needle;
  } bad[] = {{"", "empty"},
             {"params.m ==", "column 12: expected a value"},
             {"params.m === 'a'", "column 12"},
             {"params.m == 'a", "column 13: unterminated string"},
             {"(params.m == 'a'", "expected ')'"},
             {"params.m in 'a'", "expected '['"},
             {"params.m in [params.n]", "list items must be constants"},
             {"params.m == 'a' params.n", "column 17: unexpected text"},
             {"foo == 1", "column 1: unknown name"},
             {"params.m < 3", "column 10: unknown operator"},
             {"params.m not 3", "expected 'not in'"},
             {"params.n == 1e999", "not a number"}};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
    im_pipeline_expr_t *e = NULL;
    assert_int_equal(im_pipeline_expr_parse(bad[i].text, &e), IM_ERR_FORMAT);
    assert_null(e);
    if (!strstr(im_last_error(), bad[i].needle)) {
      fprintf(stderr, "'%s': '%s' lacks '%s'\n", bad[i].text, im_last_error(), bad[i].needle);
      fail();
    }
  }
  /* deep nesting is refused, not a stack overflow */
  char deep[600];
  memset(deep, '(', 300);
  strcpy(deep + 300, "params.b");
  im_pipeline_expr_t *e = NULL;
  assert_int_equal(im_pipeline_expr_parse(deep, &e), IM_ERR_FORMAT);
  char nots[1200] = "";
  for (int i = 0; i < 200; i++) strcat(nots, "not ");
  strcat(nots, "params.b");
  assert_int_equal(im_pipeline_expr_parse(nots, &e), IM_ERR_FORMAT);
}

static const char *tmp_file(const char *dir, const char *name, const char *text) {
  const char *p = tu_path(dir, name);
  assert_int_equal(tu_write_file(p, text, strlen(text)), 0);
  return p;
}

static void test_cache_keys(void **state) {
  (void)state;
  const char *dir = tu_tmpdir();
  const char *data = tu_path(dir, "data");
  assert_int_equal(im_mkdir_p(tu_path(data, "A")), IM_OK);
  assert_int_equal(im_mkdir_p(tu_path(data, ".imops")), IM_OK);
  tmp_file(data, "A/1.jpg", "one");
  tmp_file(data, "A/2.jpg", "two");
  tmp_file(data, "mean-std.txt", "0.5");
  tmp_file(data, ".imops/cache.bin", "cache");
  char h1[33], h2[33], h3[33];
  const char *excl[] = {"mean-std.txt"};
  assert_int_equal(im_pipeline_hash_path(data, NULL, 0, excl, 1, h1), IM_OK);
  assert_int_equal(strlen(h1), 32);
  tmp_file(data, "mean-std.txt", "0.6");       /* excluded */
  tmp_file(data, ".imops/cache.bin", "other"); /* hidden */
  assert_int_equal(im_pipeline_hash_path(data, NULL, 0, excl, 1, h2), IM_OK);
  assert_string_equal(h1, h2);
  tmp_file(data, "A/2.jpg", "TWO");
  assert_int_equal(im_pipeline_hash_path(data, NULL, 0, excl, 1, h3), IM_OK);
  assert_string_not_equal(h1, h3);
  const char *incl[] = {"*.png"};
  assert_int_equal(im_pipeline_hash_path(data, incl, 1, NULL, 0, h2), IM_OK); /* nothing included */
  assert_string_not_equal(h2, h3);
  assert_int_equal(im_pipeline_hash_path(tu_path(dir, "missing"), NULL, 0, NULL, 0, h2), IM_ERR_NOT_FOUND);

  char text[1024];
  snprintf(text, sizeof text,
           "name: p\nparameters:\n  d: {default: '%s'}\n  n: {type: int, default: 1}\n  other: {default: x}\n"
           "steps:\n  a: {args: [x, '{{params.n}}'], inputs: [{path: '{{params.d}}', exclude: [mean-std.txt]}]}\n",
           data);
  im_pipeline_t *p = parse_ok(text);
  char *pj = NULL, k1[33], k2[33], *details = NULL;
  assert_int_equal(im_pipeline_resolve_params(p, NULL, 0, &pj), IM_OK);
  assert_int_equal(im_pipeline_step_cache_key(p, 0, pj, "{}", NULL, k1, &details), IM_OK);
  assert_non_null(strstr(details, h3));
  assert_non_null(strstr(details, "\"argv\":[\"x\",\"1\"]"));
  im_free(details);
  assert_int_equal(im_pipeline_step_cache_key(p, 0, pj, "{}", NULL, k2, NULL), IM_OK);
  assert_string_equal(k1, k2); /* stable */
  im_free(pj);
  const char *other[] = {"other=y"}; /* not referenced by the step */
  assert_int_equal(im_pipeline_resolve_params(p, other, 1, &pj), IM_OK);
  assert_int_equal(im_pipeline_step_cache_key(p, 0, pj, "{}", NULL, k2, NULL), IM_OK);
  assert_string_equal(k1, k2);
  im_free(pj);
  const char *n2[] = {"n=2"};
  assert_int_equal(im_pipeline_resolve_params(p, n2, 1, &pj), IM_OK);
  assert_int_equal(im_pipeline_step_cache_key(p, 0, pj, "{}", NULL, k2, NULL), IM_OK);
  assert_string_not_equal(k1, k2);
  im_free(pj);
  assert_int_equal(im_pipeline_resolve_params(p, NULL, 0, &pj), IM_OK);
  tmp_file(data, "A/3.jpg", "three");
  assert_int_equal(im_pipeline_step_cache_key(p, 0, pj, "{}", NULL, k2, NULL), IM_OK);
  assert_string_not_equal(k1, k2);
  im_free(pj);
  im_pipeline_free(p);

  /* upstream keys enter the key */
  p = parse_ok("name: p\nsteps:\n  a: {args: [x]}\n  b: {args: [y], after: [a]}\n");
  const char *d1[] = {"0123"}, *d2[] = {"4567"};
  assert_int_equal(im_pipeline_step_cache_key(p, 1, "{}", "{}", d1, k1, NULL), IM_OK);
  assert_int_equal(im_pipeline_step_cache_key(p, 1, "{}", "{}", d2, k2, NULL), IM_OK);
  assert_string_not_equal(k1, k2);
  im_pipeline_free(p);
}

static void test_read_output(void **state) {
  (void)state;
  const char *out = "progress line\n{\n  \"a\": {\"b\": [10, {\"c\": \"x\"}]},\n  \"n\": 2.5,\n  \"t\": true\n}\n";
  char *v = NULL;
  assert_int_equal(im_pipeline_read_output(out, strlen(out), "a.b.1.c", NULL, &v), IM_OK);
  assert_string_equal(v, "x");
  im_free(v);
  assert_int_equal(im_pipeline_read_output(out, strlen(out), "n", NULL, &v), IM_OK);
  assert_string_equal(v, "2.5");
  im_free(v);
  assert_int_equal(im_pipeline_read_output(out, strlen(out), "t", NULL, &v), IM_OK);
  assert_string_equal(v, "true");
  im_free(v);
  assert_int_equal(im_pipeline_read_output(out, strlen(out), "a.z", NULL, &v), IM_ERR_NOT_FOUND);
  assert_int_equal(im_pipeline_read_output("no json", 7, "a", NULL, &v), IM_ERR_FORMAT);
  const char *dir = tu_tmpdir();
  const char *f = tmp_file(dir, "v.txt", "hello\n");
  assert_int_equal(im_pipeline_read_output(NULL, 0, NULL, f, &v), IM_OK);
  assert_string_equal(v, "hello");
  im_free(v);
  f = tmp_file(dir, "v.json", "{\"k\": 7}");
  assert_int_equal(im_pipeline_read_output(NULL, 0, "k", f, &v), IM_OK);
  assert_string_equal(v, "7");
  im_free(v);
}

static void test_compile_kfp(void **state) {
  (void)state;
  im_pipeline_t *p = parse_ok(
      "name: every\ndescription: all features\nparameters:\n  m: {type: string, enum: [a, b], default: a}\n"
      "  n: {type: int, default: 3}\n  x: {type: float, default: 0.5}\n  f: {type: bool, default: true}\n"
      "  req: {type: string, description: needed}\n"
      "steps:\n  a: {args: [x, '{{params.req}}'], outputs: {o: {json: k}, p: {file: '/w/{{params.m}}.txt'}},\n"
      "      resources: {cpu: 2, memory: 4Gi, gpus: 1}, retries: 2}\n"
      "  b: {args: ['{{steps.a.outputs.o}}'], when: \"params.n == 3 and params.x != 1.5 or not params.f\",\n"
      "      cache: false, outputs: {q: {json: q}}}\n"
      "  c: {args: ['--v={{steps.b.outputs.q}}'], after: [a], when: \"params.m not in ['b']\"}\n"
      "  d: {args: [y], after: [c]}\n");
  im_buf_t b = {0};
  im_pipeline_kfp_opts_t o = {.image = "reg/imops:1", .pvc = "ws"};
  assert_int_equal(im_pipeline_compile_kfp(p, &o, &b), IM_OK);
  assert_int_equal(im_buf_append(&b, "", 1), IM_OK);
  const char *y = b.data;
  const char *want[] = {
      "# PIPELINE DEFINITION",
      "schemaVersion: 2.1.0",
      "image: reg/imops:1",
      "'{{$.inputs.parameters[''req'']}}'",
      "o={{$.outputs.parameters['o'].output_file}}",
      "p=/w/{{$.inputs.parameters['m']}}.txt",
      "resourceCpuLimit: \"2\"",
      "resourceMemoryLimit: 4Gi",
      "resourceType: nvidia.com/gpu",
      "maxRetryCount: 2",
      ("condition: (int(inputs.parameter_values['pipelinechannel--n']) == 3 && "
       "double(inputs.parameter_values['pipelinechannel--x']) != 1.5) || !(inputs.parameter_values['pipelinechannel--f'] == true)"),
      "condition: '!(inputs.parameter_values[''pipelinechannel--m''] in [''b''])'",
      "producerTask: condition-1",
      "outputParameterKey: pipelinechannel--b-q",
      "defaultValue: 3.0",
      "parameterType: NUMBER_DOUBLE",
      "parameterType: BOOLEAN",
      "mountPath: /workspace",
      "\n---\n",
      "pvcMount:",
  };
  for (size_t i = 0; i < sizeof want / sizeof want[0]; i++)
    if (!strstr(y, want[i])) {
      fprintf(stderr, "compiled YAML lacks: %s\n%s\n", want[i], y);
      fail();
    }
  /* Both documents read back as YAML. */
  const char *sep = strstr(y, "\n---\n");
  im_yaml_doc_t *d = NULL;
  assert_int_equal(im_yaml_parse(y, (size_t)(sep - y) + 1, "doc1", &d), IM_OK);
  const im_yaml_node_t *tasks = im_yaml_map_get(im_yaml_map_get(im_yaml_map_get(im_yaml_root(d), "root"), "dag"), "tasks");
  assert_non_null(tasks);
  assert_non_null(im_yaml_map_get(tasks, "a"));
  assert_non_null(im_yaml_map_get(tasks, "condition-1"));
  assert_non_null(im_yaml_map_get(tasks, "condition-2"));
  const im_yaml_node_t *req = im_yaml_map_get(
      im_yaml_map_get(im_yaml_map_get(im_yaml_map_get(im_yaml_root(d), "root"), "inputDefinitions"), "parameters"), "req");
  assert_null(im_yaml_map_get(req, "defaultValue"));
  im_yaml_free(d);
  assert_int_equal(im_yaml_parse(sep + 5, strlen(sep + 5), "doc2", &d), IM_OK);
  im_yaml_free(d);
  im_buf_free(&b);
  im_pipeline_free(p);
}

/* ---- the runner, with /bin/sh as the step program -------------------------------------- */
typedef struct {
  volatile sig_atomic_t *cancel;
  int lines;
  char seen[4096];
} watch_t;

static void on_line(void *user, const char *step, im_pipeline_stream_t stream, const char *line, size_t len) {
  watch_t *w = user;
  w->lines++;
  snprintf(w->seen + strlen(w->seen), sizeof w->seen - strlen(w->seen), "[%s]%.*s\n", step, (int)len, line);
}

static void on_status(void *user, const char *step, const char *status, const char *message) {
  watch_t *w = user;
  if (w->cancel && !strcmp(step, "slow") && !strcmp(status, "RUNNING")) *w->cancel = 1;
}

static const im_pipeline_step_result_t *step_of(const im_pipeline_result_t *r, const char *name) {
  for (int i = 0; i < r->n_steps; i++)
    if (!strcmp(r->steps[i].name, name)) return &r->steps[i];
  fail();
  return NULL;
}

static void test_runner(void **state) {
  (void)state;
  const char *home = tu_tmpdir();
  const char *flag = tu_path(home, "flag");
  char text[2048];
  snprintf(text, sizeof text,
           "name: sh\nparameters:\n  word: {default: hello}\n  fail: {type: bool, default: false}\n"
           "steps:\n"
           "  a:\n    args: [-c, 'echo progress >&2; echo \"{\\\"v\\\": \\\"$0\\\"}\"', '{{params.word}}']\n"
           "    outputs: {v: {json: v}}\n"
           "  b:\n    args: [-c, 'test \"$0\" = hello && echo b-ok', '{{steps.a.outputs.v}}']\n"
           "  c:\n    args: [-c, 'echo c-ran']\n    when: params.fail\n"
           "  flaky:\n    args: [-c, 'if [ -e %s ]; then echo second; else touch %s; echo first; exit 3; fi']\n"
           "    retries: 1\n    cache: false\n"
           "  bad:\n    args: [-c, 'echo about to fail; exit 7']\n    when: params.fail\n    retries: 1\n"
           "  after-bad:\n    args: [-c, 'echo never']\n    after: [bad]\n"
           "  after-c:\n    args: [-c, 'echo fine']\n    after: [c]\n",
           flag, flag);
  im_pipeline_t *p = parse_ok(text);
  watch_t w = {0};
  im_pipeline_run_opts_t o = {.binary = "/bin/sh", .parallel = 3, .store = home, .on_line = on_line,
                              .on_status = on_status, .user = &w};
  im_pipeline_result_t *r = NULL;
  assert_int_equal(im_pipeline_run(p, &o, &r), IM_OK);
  assert_string_equal(r->status, "SUCCEEDED");
  assert_string_equal(step_of(r, "a")->status, "SUCCEEDED");
  assert_string_equal(step_of(r, "a")->outputs_json, "{\"v\":\"hello\"}");
  assert_string_equal(step_of(r, "b")->status, "SUCCEEDED");
  assert_string_equal(step_of(r, "c")->status, "SKIPPED");
  assert_string_equal(step_of(r, "after-c")->status, "SUCCEEDED"); /* a skipped dependency does not block */
  assert_string_equal(step_of(r, "flaky")->status, "SUCCEEDED");
  assert_int_equal(step_of(r, "flaky")->attempts, 2);
  assert_string_equal(step_of(r, "bad")->status, "SKIPPED");
  assert_non_null(strstr(w.seen, "[a]progress"));
  assert_non_null(strstr(w.seen, "[b]b-ok"));
  /* the log of a step holds both attempts */
  uint8_t *log = NULL;
  size_t len = 0;
  assert_int_equal(im_file_read(step_of(r, "flaky")->log_path, 0, &log, &len), IM_OK);
  log = im_realloc(log, len + 1);
  log[len] = 0;
  assert_non_null(strstr((char *)log, "first"));
  assert_non_null(strstr((char *)log, "attempt 2"));
  assert_non_null(strstr((char *)log, "second"));
  im_free(log);
  char first_run[33];
  snprintf(first_run, sizeof first_run, "%s", r->pipeline_run_id);
  im_pipeline_result_free(r);

  /* Again: cached where allowed; with fail=true, bad fails after its retry and cancels its dependant. */
  const char *params[] = {"fail=true"};
  o.params = params;
  o.n_params = 1;
  assert_int_equal(im_pipeline_run(p, &o, &r), IM_OK);
  assert_string_equal(r->status, "FAILED");
  assert_string_equal(step_of(r, "a")->status, "CACHED");
  assert_string_equal(step_of(r, "b")->status, "CACHED");
  assert_string_equal(step_of(r, "flaky")->status, "SUCCEEDED"); /* cache: false */
  assert_string_equal(step_of(r, "c")->status, "SUCCEEDED");
  assert_string_equal(step_of(r, "bad")->status, "FAILED");
  assert_int_equal(step_of(r, "bad")->attempts, 2);
  assert_int_equal(step_of(r, "bad")->exit_code, 7);
  assert_string_equal(step_of(r, "after-bad")->status, "CANCELED");
  assert_non_null(strstr(step_of(r, "after-bad")->message, "upstream step 'bad' failed"));
  assert_int_equal(im_file_read(step_of(r, "bad")->log_path, 0, &log, &len), IM_OK);
  assert_non_null(memmem(log, len, "about to fail", 13));
  im_free(log);

  /* The store has both runs, with statuses and outputs. */
  im_track_store_t *s = NULL;
  assert_int_equal(im_track_open(home, &s), IM_OK);
  im_track_pipeline_run_t *pr = NULL;
  assert_int_equal(im_track_pipeline_run_get(s, r->pipeline_run_id, &pr), IM_OK);
  assert_string_equal(pr->status, "FAILED");
  assert_int_equal(pr->n_steps, 7);
  assert_string_equal(pr->steps[0].step_name, "a");
  assert_string_equal(pr->steps[0].status, "CACHED");
  assert_string_equal(pr->steps[0].outputs, "{\"v\":\"hello\"}");
  assert_non_null(strstr(pr->params, "\"fail\":true"));
  im_track_pipeline_run_free(pr);
  assert_int_equal(im_track_pipeline_run_get(s, "", &pr), IM_ERR_ARG);
  im_track_pipeline_run_list_t *l = NULL;
  assert_int_equal(im_track_pipeline_run_list(s, "sh", 0, &l), IM_OK);
  assert_int_equal(l->n, 2);
  im_track_pipeline_run_list_free(l);
  im_track_close(s);
  im_pipeline_result_free(r);

  /* --no-cache runs everything again. */
  o.params = NULL;
  o.n_params = 0;
  o.no_cache = 1;
  assert_int_equal(im_pipeline_run(p, &o, &r), IM_OK);
  assert_string_equal(step_of(r, "a")->status, "SUCCEEDED");
  im_pipeline_result_free(r);
  im_pipeline_free(p);
}

static void test_runner_cancel(void **state) {
  (void)state;
  const char *home = tu_tmpdir();
  im_pipeline_t *p = parse_ok("name: c\nsteps:\n  slow: {args: [-c, 'sleep 30']}\n  next: {args: [-c, 'true'], after: [slow]}\n"
                              "  free: {args: [-c, 'sleep 30']}\n");
  volatile sig_atomic_t cancel = 0;
  watch_t w = {.cancel = &cancel};
  im_pipeline_run_opts_t o = {.binary = "/bin/sh", .parallel = 2, .store = home, .cancel = &cancel, .grace_seconds = 5,
                              .on_line = on_line, .on_status = on_status, .user = &w};
  im_pipeline_result_t *r = NULL;
  assert_int_equal(im_pipeline_run(p, &o, &r), IM_OK);
  assert_string_equal(r->status, "CANCELED");
  assert_string_equal(step_of(r, "slow")->status, "CANCELED");
  assert_int_equal(step_of(r, "slow")->exit_code, 128 + SIGTERM);
  assert_string_equal(step_of(r, "next")->status, "CANCELED");
  assert_string_equal(step_of(r, "free")->status, "CANCELED");
  im_pipeline_result_free(r);
  /* parameters are checked before anything runs */
  const char *bad[] = {"nope=1"};
  o.params = bad;
  o.n_params = 1;
  assert_int_equal(im_pipeline_run(p, &o, &r), IM_ERR_ARG);
  assert_null(r);
  im_pipeline_free(p);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_surface_example), cmocka_unit_test(test_params),    cmocka_unit_test(test_validation_errors),
      cmocka_unit_test(test_order_valid), cmocka_unit_test(test_expressions),
      cmocka_unit_test(test_cache_keys),      cmocka_unit_test(test_read_output), cmocka_unit_test(test_compile_kfp),
      cmocka_unit_test(test_runner),          cmocka_unit_test(test_runner_cancel),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
