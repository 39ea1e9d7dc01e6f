/* The pipeline file: YAML (through src/yaml, with positions) into the parsed
 * pipeline, with every check done before anything runs (keys, types, names,
 * references, conditions, dependencies and cycles), each error naming
 * file:line:col; parameter values; reference templates and their rendering. */
#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "imops/yaml.h"
#include "pipeline/pipeline_impl.h"

#define MAX_STEPS 500
#define MAX_PARAMS 500
#define MAX_NAME 63

typedef struct {
  const char *file;
  im_pipeline_t *p;
  im_status_t st;
} ctx_t;

static im_status_t err_at(ctx_t *c, const im_yaml_node_t *n, const char *fmt, ...) IM_PRINTF(3, 4);
static im_status_t err_at(ctx_t *c, const im_yaml_node_t *n, const char *fmt, ...) {
  char msg[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  c->st = im_error(IM_ERR_FORMAT, "%s:%d:%d: %s", c->file, n ? n->line : 1, n ? n->col : 1, msg);
  return c->st;
}

static im_status_t nomem(ctx_t *c) { return c->st = im_error(IM_ERR_NOMEM, "out of memory"); }

const char *im__ptype_name(im__ptype_t t) {
  static const char *names[] = {"string", "int", "float", "bool"};
  return names[t];
}

int im__pipeline_param_index(const im_pipeline_t *p, const char *name) {
  for (int i = 0; i < p->n_params; i++)
    if (!strcmp(p->params[i].name, name)) return i;
  return -1;
}

int im_pipeline_step_index(const im_pipeline_t *p, const char *name) {
  for (int i = 0; i < p->n_steps; i++)
    if (!strcmp(p->steps[i].name, name)) return i;
  return -1;
}

/* ---- small checks ------------------------------------------------------------------- */
static im_status_t check_keys(ctx_t *c, const im_yaml_node_t *m, const char *what, const char *const *allowed) {
  if (m->kind != IM_YAML_MAP) return err_at(c, m, "%s must be a mapping", what);
  for (size_t i = 0; i < m->n; i++) {
    int ok = 0;
    for (const char *const *a = allowed; *a && !ok; a++) ok = !strcmp(m->keys[i]->str, *a);
    if (!ok) {
      char list[512] = "";
      for (const char *const *a = allowed; *a; a++)
        snprintf(list + strlen(list), sizeof list - strlen(list), "%s%s", a == allowed ? "" : ", ", *a);
      return err_at(c, m->keys[i], "unknown key '%s' in %s (allowed: %s)", m->keys[i]->str, what, list);
    }
  }
  return IM_OK;
}

static int valid_name(const char *s, int step) {
  size_t n = strlen(s);
  if (!n || n > MAX_NAME) return 0;
  if (step ? !islower((unsigned char)s[0]) : !(isalpha((unsigned char)s[0]) || s[0] == '_')) return 0;
  for (size_t i = 1; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (step ? !(islower(ch) || isdigit(ch) || ch == '-') : !(isalnum(ch) || ch == '_')) return 0;
  }
  return step ? s[n - 1] != '-' : 1;
}

static const char *str_of(ctx_t *c, const im_yaml_node_t *n, const char *what) {
  if (n->kind != IM_YAML_SCALAR || n->type == IM_YAML_NULL) {
    err_at(c, n, "%s must be a string", what);
    return NULL;
  }
  if (strlen(n->str) != n->len) {
    err_at(c, n, "%s contains a NUL byte", what);
    return NULL;
  }
  return n->str;
}

static char *dup_str(ctx_t *c, const im_yaml_node_t *n, const char *what) {
  const char *s = str_of(c, n, what);
  if (!s) return NULL;
  char *d = im_strdup(s);
  if (!d) nomem(c);
  return d;
}

/* ---- templates ------------------------------------------------------------------------ */
static void tmpl_clear(im__tmpl_t *t) {
  for (int i = 0; i < t->n; i++) {
    im_free(t->parts[i].text);
    im_free(t->parts[i].output);
  }
  im_free(t->parts);
  t->parts = NULL;
  t->n = 0;
}

static im_status_t tmpl_add(ctx_t *c, im__tmpl_t *t, int kind, const char *text, size_t len, const char *output) {
  im__tpart_t *parts = im_realloc(t->parts, sizeof *parts * (size_t)(t->n + 1));
  if (!parts) return nomem(c);
  t->parts = parts;
  im__tpart_t *pt = &t->parts[t->n++];
  memset(pt, 0, sizeof *pt);
  pt->kind = kind;
  pt->text = im_strndup(text, len);
  if (output) pt->output = im_strdup(output);
  if (!pt->text || (output && !pt->output)) return nomem(c);
  return IM_OK;
}

/* Parses "text {{ params.x }} text {{steps.s.outputs.o}}" and checks the references. */
static im_status_t tmpl_parse(ctx_t *c, const im_yaml_node_t *n, const char *what, im__tmpl_t *t) {
  const char *s;
  if (n->kind == IM_YAML_SCALAR && n->type != IM_YAML_NULL && n->type != IM_YAML_STR) s = n->str; /* numbers, bools */
  else if (!(s = str_of(c, n, what))) return c->st;
  const char *p = s;
  while (*p) {
    const char *open = strstr(p, "{{");
    if (!open) return tmpl_add(c, t, 0, p, strlen(p), NULL);
    if (open > p && tmpl_add(c, t, 0, p, (size_t)(open - p), NULL)) return c->st;
    const char *close = strstr(open + 2, "}}");
    if (!close) return err_at(c, n, "%s: '{{' at offset %d is not closed with '}}'", what, (int)(open - s));
    const char *b = open + 2, *e = close;
    while (b < e && isspace((unsigned char)*b)) b++;
    while (e > b && isspace((unsigned char)e[-1])) e--;
    char ref[256];
    if ((size_t)(e - b) >= sizeof ref) return err_at(c, n, "%s: reference too long", what);
    snprintf(ref, sizeof ref, "%.*s", (int)(e - b), b);
    im_pipeline_expr_t *y = NULL;
    if (im_pipeline_expr_parse(ref, &y) != IM_OK || y->k != IM__E_TRUTH || y->a->k == IM__E_CONST) {
      im_pipeline_expr_free(y);
      return err_at(c, n, "%s: '{{%s}}' is not a reference (use {{params.NAME}} or {{steps.STEP.outputs.NAME}})", what,
                    ref);
    }
    const im_pipeline_expr_t *x = y->a;
    im_status_t st = x->k == IM__E_PARAM ? tmpl_add(c, t, 1, x->name, strlen(x->name), NULL)
                                         : tmpl_add(c, t, 2, x->name, strlen(x->name), x->output);
    im_pipeline_expr_free(y);
    if (st) return st;
    p = close + 2;
  }
  return IM_OK;
}

char *im__pipeline_value_str(const json_t *v) {
  char buf[64];
  if (json_is_string(v)) return im_strdup(json_string_value(v));
  if (json_is_integer(v)) snprintf(buf, sizeof buf, "%lld", (long long)json_integer_value(v));
  else if (json_is_real(v)) {
    double d = json_real_value(v);
    snprintf(buf, sizeof buf, "%.15g", d);
    if (strtod(buf, NULL) != d) snprintf(buf, sizeof buf, "%.17g", d);
  } else if (json_is_boolean(v)) snprintf(buf, sizeof buf, "%s", json_is_true(v) ? "true" : "false");
  else snprintf(buf, sizeof buf, "%s", "");
  return im_strdup(buf);
}

im_status_t im__tmpl_render(const im__tmpl_t *t, const json_t *params, const json_t *outputs, char **out) {
  *out = NULL;
  im_buf_t b = {0};
  im_status_t st = IM_OK;
  for (int i = 0; i < t->n && !st; i++) {
    const im__tpart_t *pt = &t->parts[i];
    if (pt->kind == 0) {
      st = im_buf_append(&b, pt->text, strlen(pt->text));
      continue;
    }
    const json_t *v = pt->kind == 1 ? json_object_get(params, pt->text)
                                    : json_object_get(json_object_get(outputs, pt->text), pt->output);
    if (!v) {
      st = pt->kind == 1 ? im_error(IM_ERR_NOT_FOUND, "parameter '%s' has no value", pt->text)
                         : im_error(IM_ERR_NOT_FOUND, "step '%s' produced no output '%s' (it did not run)", pt->text,
                                    pt->output);
      break;
    }
    char *s = im__pipeline_value_str(v);
    st = s ? im_buf_append(&b, s, strlen(s)) : IM_ERR_NOMEM;
    im_free(s);
  }
  if (!st) st = im_buf_append(&b, "", 1);
  if (st) {
    im_buf_free(&b);
    return st;
  }
  *out = b.data;
  return IM_OK;
}

char *im__tmpl_kfp(const im__tmpl_t *t) {
  im_buf_t b = {0};
  for (int i = 0; i < t->n; i++) {
    const im__tpart_t *pt = &t->parts[i];
    if (pt->kind == 0) im_buf_append(&b, pt->text, strlen(pt->text));
    else if (pt->kind == 1) im_buf_printf(&b, "{{$.inputs.parameters['%s']}}", pt->text);
    else im_buf_printf(&b, "{{$.inputs.parameters['%s-%s']}}", pt->text, pt->output);
  }
  if (im_buf_append(&b, "", 1)) {
    im_buf_free(&b);
    return NULL;
  }
  return b.data;
}

/* ---- parameters --------------------------------------------------------------------- */
/* A YAML scalar as a value of type t (NULL when it is not one). */
static json_t *typed_from_node(const im_yaml_node_t *n, im__ptype_t t) {
  if (n->kind != IM_YAML_SCALAR) return NULL;
  switch (t) {
    case IM__PT_STRING:
      if (n->type == IM_YAML_NULL || strlen(n->str) != n->len) return NULL;
      return json_string(n->str);
    case IM__PT_INT: return n->type == IM_YAML_INT ? json_integer(n->i) : NULL;
    case IM__PT_FLOAT:
      return (n->type == IM_YAML_INT || n->type == IM_YAML_FLOAT) && isfinite(n->d) ? json_real(n->d) : NULL;
    case IM__PT_BOOL: return n->type == IM_YAML_BOOL ? json_boolean(n->i) : NULL;
  }
  return NULL;
}

/* A command-line string as a value of type t (NULL when it is not one). */
static json_t *typed_from_text(const char *s, im__ptype_t t) {
  char *end;
  switch (t) {
    case IM__PT_STRING: return json_string(s);
    case IM__PT_INT: {
      errno = 0;
      long long v = strtoll(s, &end, 10);
      return *s && !*end && !errno ? json_integer(v) : NULL;
    }
    case IM__PT_FLOAT: {
      double d = strtod(s, &end);
      return *s && !*end && isfinite(d) ? json_real(d) : NULL;
    }
    case IM__PT_BOOL:
      if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "1")) return json_true();
      if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "0")) return json_false();
      return NULL;
  }
  return NULL;
}

static int allowed_has(const json_t *allowed, const json_t *v) {
  size_t i;
  json_t *a;
  json_array_foreach(allowed, i, a) {
    if (json_is_number(a) && json_is_number(v) ? json_number_value(a) == json_number_value(v) : json_equal(a, v))
      return 1;
  }
  return 0;
}

static char *allowed_text(const json_t *allowed) {
  im_buf_t b = {0};
  size_t i;
  json_t *a;
  json_array_foreach(allowed, i, a) {
    char *s = im__pipeline_value_str(a);
    im_buf_printf(&b, "%s%s", i ? ", " : "", s ? s : "");
    im_free(s);
  }
  im_buf_append(&b, "", 1);
  return b.data;
}

static im_status_t parse_param(ctx_t *c, const im_yaml_node_t *key, const im_yaml_node_t *n, im__pparam_t *pp) {
  static const char *const keys[] = {"type", "default", "enum", "description", NULL};
  pp->line = key->line, pp->col = key->col;
  if (!valid_name(key->str, 0))
    return err_at(c, key, "parameter name '%s' must be letters, digits and '_', starting with a letter (at most %d)",
                  key->str, MAX_NAME);
  if (!(pp->name = im_strdup(key->str))) return nomem(c);
  if (check_keys(c, n, "a parameter", keys)) return c->st;
  const im_yaml_node_t *t = im_yaml_map_get(n, "type");
  pp->type = IM__PT_STRING;
  if (t) {
    const char *ts = str_of(c, t, "type");
    if (!ts) return c->st;
    static const char *const names[] = {"string", "int", "float", "bool"};
    int found = -1;
    for (int i = 0; i < 4; i++)
      if (!strcmp(ts, names[i])) found = i;
    if (!strcmp(ts, "str")) found = 0;
    if (!strcmp(ts, "integer")) found = 1;
    if (!strcmp(ts, "boolean")) found = 3;
    if (found < 0) return err_at(c, t, "unknown parameter type '%s' (string, int, float, bool)", ts);
    pp->type = (im__ptype_t)found;
  }
  const im_yaml_node_t *d = im_yaml_map_get(n, "description");
  if (d && !(pp->description = dup_str(c, d, "description"))) return c->st;
  const im_yaml_node_t *e = im_yaml_map_get(n, "enum");
  if (e) {
    if (e->kind != IM_YAML_SEQ || !e->n) return err_at(c, e, "enum must be a non-empty list of allowed values");
    if (!(pp->allowed = json_array())) return nomem(c);
    for (size_t i = 0; i < e->n; i++) {
      json_t *v = typed_from_node(e->items[i], pp->type);
      if (!v) return err_at(c, e->items[i], "enum value is not a %s", im__ptype_name(pp->type));
      json_array_append_new(pp->allowed, v);
    }
  }
  const im_yaml_node_t *def = im_yaml_map_get(n, "default");
  if (def && !(def->kind == IM_YAML_SCALAR && def->type == IM_YAML_NULL)) {
    if (!(pp->def = typed_from_node(def, pp->type)))
      return err_at(c, def, "default of parameter '%s' is not a %s", pp->name, im__ptype_name(pp->type));
    if (pp->allowed && !allowed_has(pp->allowed, pp->def)) {
      char *a = allowed_text(pp->allowed);
      err_at(c, def, "default of parameter '%s' is not one of its allowed values (%s)", pp->name, a ? a : "");
      im_free(a);
      return c->st;
    }
  }
  return IM_OK;
}

/* ---- steps --------------------------------------------------------------------------- */
static im_status_t add_dep(ctx_t *c, im__pstep_t *s, int d) {
  for (int i = 0; i < s->n_deps; i++)
    if (s->deps[i] == d) return IM_OK;
  int *deps = im_realloc(s->deps, sizeof *deps * (size_t)(s->n_deps + 1));
  if (!deps) return nomem(c);
  s->deps = deps;
  s->deps[s->n_deps++] = d;
  return IM_OK;
}

static im_status_t add_ref_param(ctx_t *c, im__pstep_t *s, const char *name) {
  for (int i = 0; i < s->n_refs_params; i++)
    if (!strcmp(s->refs_params[i], name)) return IM_OK;
  char **r = im_realloc(s->refs_params, sizeof *r * (size_t)(s->n_refs_params + 1));
  if (!r) return nomem(c);
  s->refs_params = r;
  if (!(s->refs_params[s->n_refs_params] = im_strdup(name))) return nomem(c);
  s->n_refs_params++;
  return IM_OK;
}

/* Checks a reference (parameter, or an earlier-declared-anywhere step's output) made by step si. */
static im_status_t check_ref(ctx_t *c, const im_yaml_node_t *at, int si, int is_param, const char *name,
                             const char *output, const char *what) {
  im_pipeline_t *p = c->p;
  im__pstep_t *s = &p->steps[si];
  if (is_param) {
    if (im__pipeline_param_index(p, name) < 0) return err_at(c, at, "%s: unknown parameter '%s'", what, name);
    return add_ref_param(c, s, name);
  }
  int d = im_pipeline_step_index(p, name);
  if (d < 0) return err_at(c, at, "%s: unknown step '%s'", what, name);
  if (d == si) return err_at(c, at, "%s: step '%s' refers to its own output", what, name);
  int found = 0;
  for (int i = 0; i < p->steps[d].n_outputs; i++) found |= !strcmp(p->steps[d].outputs[i].name, output);
  if (!found) return err_at(c, at, "%s: step '%s' declares no output '%s'", what, name, output);
  return add_dep(c, s, d);
}

static im_status_t check_tmpl(ctx_t *c, const im_yaml_node_t *at, int si, const im__tmpl_t *t, const char *what) {
  for (int i = 0; i < t->n; i++)
    if (t->parts[i].kind && check_ref(c, at, si, t->parts[i].kind == 1, t->parts[i].text, t->parts[i].output, what))
      return c->st;
  return IM_OK;
}

static im_status_t check_expr(ctx_t *c, const im_yaml_node_t *at, int si, const im_pipeline_expr_t *e) {
  if (!e) return IM_OK;
  if (e->k == IM__E_PARAM || e->k == IM__E_OUTPUT)
    return check_ref(c, at, si, e->k == IM__E_PARAM, e->name, e->output, "when");
  if (check_expr(c, at, si, e->a) || check_expr(c, at, si, e->b)) return c->st;
  for (int i = 0; i < e->n; i++)
    if (check_expr(c, at, si, e->items[i])) return c->st;
  return IM_OK;
}

/* The kind of value an operand has: 0 string, 1 number, 2 bool. */
static int operand_kind(const im_pipeline_t *p, const im_pipeline_expr_t *e) {
  if (e->k == IM__E_CONST) return json_is_number(e->val) ? 1 : json_is_boolean(e->val) ? 2 : 0;
  if (e->k == IM__E_OUTPUT) return 0;
  int pi = im__pipeline_param_index(p, e->name);
  im__ptype_t t = pi >= 0 ? p->params[pi].type : IM__PT_STRING;
  return t == IM__PT_INT || t == IM__PT_FLOAT ? 1 : t == IM__PT_BOOL ? 2 : 0;
}

static im_status_t check_types(ctx_t *c, const im_yaml_node_t *at, const im_pipeline_expr_t *e) {
  static const char *kn[] = {"a string", "a number", "a bool"};
  switch (e->k) {
    case IM__E_OR:
    case IM__E_AND: return check_types(c, at, e->a) ? c->st : check_types(c, at, e->b);
    case IM__E_NOT: return check_types(c, at, e->a);
    case IM__E_TRUTH:
      if (operand_kind(c->p, e->a) != 2)
        return err_at(c, at, "when: column %d: a bare value must be a bool parameter; compare it with == or in",
                      e->a->col);
      return IM_OK;
    case IM__E_EQ:
    case IM__E_NE: {
      int ka = operand_kind(c->p, e->a), kb = operand_kind(c->p, e->b);
      if (ka != kb) return err_at(c, at, "when: column %d: compares %s with %s", e->col, kn[ka], kn[kb]);
      return IM_OK;
    }
    case IM__E_IN:
    case IM__E_NOT_IN: {
      int ka = operand_kind(c->p, e->a);
      for (int i = 0; i < e->n; i++) {
        int kb = operand_kind(c->p, e->items[i]);
        if (ka != kb)
          return err_at(c, at, "when: column %d: list item is %s, the value is %s", e->items[i]->col, kn[kb], kn[ka]);
      }
      return IM_OK;
    }
    default: return err_at(c, at, "when: a condition is needed, not a value");
  }
}

static im_status_t parse_string_list(ctx_t *c, const im_yaml_node_t *n, const char *what, char ***out, int *nout) {
  if (n->kind != IM_YAML_SEQ) return err_at(c, n, "%s must be a list of strings", what);
  if (!(*out = im_calloc(n->n + 1, sizeof **out))) return nomem(c);
  for (size_t i = 0; i < n->n; i++) {
    if (!((*out)[i] = dup_str(c, n->items[i], what))) return c->st;
    *nout = (int)i + 1;
  }
  return IM_OK;
}

static im_status_t parse_output(ctx_t *c, const im_yaml_node_t *key, const im_yaml_node_t *n, im__pout_t *o) {
  static const char *const keys[] = {"json", "file", "description", NULL};
  if (!valid_name(key->str, 0))
    return err_at(c, key, "output name '%s' must be letters, digits and '_', starting with a letter", key->str);
  if (!(o->name = im_strdup(key->str))) return nomem(c);
  if (check_keys(c, n, "an output", keys)) return c->st;
  const im_yaml_node_t *j = im_yaml_map_get(n, "json"), *f = im_yaml_map_get(n, "file");
  if (!j && !f) return err_at(c, n, "output '%s' needs json: KEY (of the command's --json output) or file: PATH", o->name);
  if (j && !(o->json_key = dup_str(c, j, "json"))) return c->st;
  if (j && !*o->json_key) return err_at(c, j, "json: needs a key");
  if (f && tmpl_parse(c, f, "file", &o->file)) return c->st;
  return IM_OK;
}

static im_status_t parse_input(ctx_t *c, const im_yaml_node_t *n, im__pinput_t *in) {
  static const char *const keys[] = {"path", "include", "exclude", NULL};
  if (n->kind == IM_YAML_SCALAR) return tmpl_parse(c, n, "input path", &in->path);
  if (check_keys(c, n, "an input", keys)) return c->st;
  const im_yaml_node_t *p = im_yaml_map_get(n, "path"), *inc = im_yaml_map_get(n, "include"),
                       *exc = im_yaml_map_get(n, "exclude");
  if (!p) return err_at(c, n, "an input needs path:");
  if (tmpl_parse(c, p, "input path", &in->path)) return c->st;
  if (inc && parse_string_list(c, inc, "include", &in->include, &in->n_include)) return c->st;
  if (exc && parse_string_list(c, exc, "exclude", &in->exclude, &in->n_exclude)) return c->st;
  return IM_OK;
}

static im_status_t parse_resources(ctx_t *c, const im_yaml_node_t *n, im__pstep_t *s) {
  static const char *const keys[] = {"cpu", "memory", "gpus", "gpu_type", NULL};
  if (check_keys(c, n, "resources", keys)) return c->st;
  const im_yaml_node_t *cpu = im_yaml_map_get(n, "cpu"), *mem = im_yaml_map_get(n, "memory"),
                       *g = im_yaml_map_get(n, "gpus"), *gt = im_yaml_map_get(n, "gpu_type");
  if (cpu) {
    if (cpu->kind != IM_YAML_SCALAR || !(cpu->type == IM_YAML_STR || im_yaml_is_number(cpu)) || !*cpu->str)
      return err_at(c, cpu, "cpu must be a number of cores like 2 or 500m");
    const char *q = cpu->str;
    char *end;
    double v = strtod(q, &end);
    if (end == q || !(v > 0) || (*end && strcmp(end, "m")))
      return err_at(c, cpu, "cpu must be a positive number of cores like 2, 0.5 or 500m, not '%s'", q);
    if (!(s->cpu = im_strdup(q))) return nomem(c);
  }
  if (mem) {
    const char *q = str_of(c, mem, "memory");
    if (!q) return c->st;
    char *end;
    double v = strtod(q, &end);
    static const char *const units[] = {"", "K", "M", "G", "T", "Ki", "Mi", "Gi", "Ti", NULL};
    int ok = end != q && v > 0;
    int unit = 0;
    for (const char *const *u = units; *u && ok; u++) unit |= !strcmp(end, *u);
    if (!ok || !unit) return err_at(c, mem, "memory must be a size like 8Gi, 512Mi or 4G, not '%s'", q);
    if (!(s->memory = im_strdup(q))) return nomem(c);
  }
  if (g) {
    if (!im_yaml_is(g, IM_YAML_INT) || g->i < 0 || g->i > 64) return err_at(c, g, "gpus must be an integer 0..64");
    s->gpus = g->i;
  }
  if (gt && !(s->gpu_type = dup_str(c, gt, "gpu_type"))) return c->st;
  return IM_OK;
}

static im_status_t parse_step(ctx_t *c, const im_yaml_node_t *key, const im_yaml_node_t *n, im__pstep_t *s) {
  static const char *const keys[] = {"args", "after", "when", "inputs", "outputs", "resources",
                                     "retries", "cache", "description", NULL};
  s->line = key->line, s->col = key->col;
  s->cache = 1;
  if (!valid_name(key->str, 1))
    return err_at(c, key, "step name '%s' must be lowercase letters, digits and '-', starting with a letter (at most %d)",
                  key->str, MAX_NAME);
  if (!(s->name = im_strdup(key->str))) return nomem(c);
  if (check_keys(c, n, "a step", keys)) return c->st;
  const im_yaml_node_t *a = im_yaml_map_get(n, "args");
  if (!a) return err_at(c, n, "step '%s' needs args: (the imops command, e.g. [train, --data, DIR])", s->name);
  if (a->kind != IM_YAML_SEQ || !a->n) return err_at(c, a, "args must be a non-empty list of strings");
  if (!(s->args = im_calloc(a->n, sizeof *s->args))) return nomem(c);
  for (size_t i = 0; i < a->n; i++) {
    s->n_args = (int)i + 1;
    if (a->items[i]->kind != IM_YAML_SCALAR || a->items[i]->type == IM_YAML_NULL)
      return err_at(c, a->items[i], "args items must be strings");
    if (tmpl_parse(c, a->items[i], "args", &s->args[i])) return c->st;
  }
  const im_yaml_node_t *w = im_yaml_map_get(n, "when");
  if (w) {
    const char *t = str_of(c, w, "when");
    if (!t) return c->st;
    if (!(s->when_text = im_strdup(t))) return nomem(c);
    if (im_pipeline_expr_parse(t, &s->when) != IM_OK) return err_at(c, w, "when: %s", im_last_error());
  }
  const im_yaml_node_t *o = im_yaml_map_get(n, "outputs");
  if (o) {
    if (o->kind != IM_YAML_MAP) return err_at(c, o, "outputs must be a mapping NAME: {json: KEY} or {file: PATH}");
    if (!(s->outputs = im_calloc(o->n ? o->n : 1, sizeof *s->outputs))) return nomem(c);
    for (size_t i = 0; i < o->n; i++) {
      s->n_outputs = (int)i + 1;
      if (parse_output(c, o->keys[i], o->items[i], &s->outputs[i])) return c->st;
    }
  }
  const im_yaml_node_t *in = im_yaml_map_get(n, "inputs");
  if (in) {
    if (in->kind != IM_YAML_SEQ) return err_at(c, in, "inputs must be a list of paths or {path, include, exclude}");
    if (!(s->inputs = im_calloc(in->n ? in->n : 1, sizeof *s->inputs))) return nomem(c);
    for (size_t i = 0; i < in->n; i++) {
      s->n_inputs = (int)i + 1;
      if (parse_input(c, in->items[i], &s->inputs[i])) return c->st;
    }
  }
  const im_yaml_node_t *r = im_yaml_map_get(n, "resources");
  if (r && parse_resources(c, r, s)) return c->st;
  const im_yaml_node_t *rt = im_yaml_map_get(n, "retries");
  if (rt) {
    if (!im_yaml_is(rt, IM_YAML_INT) || rt->i < 0 || rt->i > 100) return err_at(c, rt, "retries must be an integer 0..100");
    s->retries = rt->i;
  }
  const im_yaml_node_t *ca = im_yaml_map_get(n, "cache");
  if (ca) {
    if (!im_yaml_is(ca, IM_YAML_BOOL)) return err_at(c, ca, "cache must be true or false");
    s->cache = (int)ca->i;
  }
  const im_yaml_node_t *d = im_yaml_map_get(n, "description");
  if (d && !(s->description = dup_str(c, d, "description"))) return c->st;
  return IM_OK;
}

/* Second pass: references, after:, conditions (everything that needs all steps). */
static im_status_t link_step(ctx_t *c, const im_yaml_node_t *n, int si) {
  im__pstep_t *s = &c->p->steps[si];
  const im_yaml_node_t *a = im_yaml_map_get(n, "args");
  for (int i = 0; i < s->n_args; i++)
    if (check_tmpl(c, a->items[i], si, &s->args[i], "args")) return c->st;
  const im_yaml_node_t *after = im_yaml_map_get(n, "after");
  if (after) {
    const im_yaml_node_t *one = after;
    size_t cnt = after->kind == IM_YAML_SEQ ? after->n : 1;
    if (after->kind == IM_YAML_MAP) return err_at(c, after, "after must be a step name or a list of step names");
    for (size_t i = 0; i < cnt; i++) {
      const im_yaml_node_t *it = after->kind == IM_YAML_SEQ ? after->items[i] : one;
      const char *name = str_of(c, it, "after");
      if (!name) return c->st;
      int d = im_pipeline_step_index(c->p, name);
      if (d < 0) return err_at(c, it, "after: unknown step '%s'", name);
      if (d == si) return err_at(c, it, "after: step '%s' cannot run after itself", name);
      if (add_dep(c, s, d)) return c->st;
    }
  }
  const im_yaml_node_t *w = im_yaml_map_get(n, "when");
  if (s->when && (check_expr(c, w, si, s->when) || check_types(c, w, s->when))) return c->st;
  const im_yaml_node_t *o = im_yaml_map_get(n, "outputs");
  for (int i = 0; i < s->n_outputs; i++)
    if (check_tmpl(c, im_yaml_map_get(o->items[i], "file"), si, &s->outputs[i].file, "output file")) return c->st;
  const im_yaml_node_t *in = im_yaml_map_get(n, "inputs");
  for (int i = 0; i < s->n_inputs; i++) {
    const im_yaml_node_t *it = in->items[i];
    if (it->kind == IM_YAML_MAP) it = im_yaml_map_get(it, "path");
    if (check_tmpl(c, it, si, &s->inputs[i].path, "inputs")) return c->st;
  }
  return IM_OK;
}

/* Kahn's algorithm, stable in file order; a leftover step is on a cycle. */
static im_status_t order_steps(ctx_t *c, const im_yaml_node_t *steps) {
  im_pipeline_t *p = c->p;
  int n = p->n_steps;
  if (!(p->order = im_calloc((size_t)n + 1, sizeof *p->order))) return nomem(c);
  char *done = im_calloc((size_t)n + 1, 1);
  if (!done) return nomem(c);
  int k = 0;
  while (k < n) {
    int pick = -1;
    for (int i = 0; i < n && pick < 0; i++) {
      if (done[i]) continue;
      int ready = 1;
      for (int j = 0; j < p->steps[i].n_deps; j++) ready &= done[p->steps[i].deps[j]];
      if (ready) pick = i;
    }
    if (pick < 0) break;
    done[pick] = 1;
    p->order[k++] = pick;
  }
  if (k < n) {
    /* Walk from an undone step along undone dependencies until one repeats: the cycle. */
    int start = -1;
    for (int i = 0; i < n && start < 0; i++)
      if (!done[i]) start = i;
    int *seen = im_calloc((size_t)n, sizeof *seen), cur = start, steps_walked = 1;
    if (!seen) {
      im_free(done);
      return nomem(c);
    }
    while (!seen[cur]) {
      seen[cur] = steps_walked++;
      int next = -1;
      for (int j = 0; j < p->steps[cur].n_deps && next < 0; j++)
        if (!done[p->steps[cur].deps[j]]) next = p->steps[cur].deps[j];
      cur = next;
    }
    char path[512] = "";
    int first = cur, x = cur;
    do {
      snprintf(path + strlen(path), sizeof path - strlen(path), "%s -> ", p->steps[x].name);
      int next = -1;
      for (int j = 0; j < p->steps[x].n_deps && next < 0; j++)
        if (!done[p->steps[x].deps[j]] && seen[p->steps[x].deps[j]]) next = p->steps[x].deps[j];
      x = next;
    } while (x >= 0 && x != first && strlen(path) < sizeof path - 80);
    snprintf(path + strlen(path), sizeof path - strlen(path), "%s", p->steps[first].name);
    im_free(seen);
    im_free(done);
    return err_at(c, steps->keys[first], "dependency cycle: %s (each waits for the next, by after: or an output reference)",
                  path);
  }
  im_free(done);
  return IM_OK;
}

static im_status_t build(ctx_t *c, const im_yaml_doc_t *doc) {
  static const char *const keys[] = {"name", "description", "parameters", "steps", NULL};
  const im_yaml_node_t *root = im_yaml_root(doc);
  if (root->kind != IM_YAML_MAP) return err_at(c, root, "a pipeline file is a mapping with name, parameters and steps");
  if (check_keys(c, root, "the pipeline", keys)) return c->st;
  im_pipeline_t *p = c->p;
  const im_yaml_node_t *name = im_yaml_map_get(root, "name");
  if (!name) return err_at(c, root, "the pipeline needs a name:");
  if (!(p->name = dup_str(c, name, "name"))) return c->st;
  if (!valid_name(p->name, 1))
    return err_at(c, name, "pipeline name '%s' must be lowercase letters, digits and '-' (a Kubeflow name)", p->name);
  const im_yaml_node_t *d = im_yaml_map_get(root, "description");
  if (d && !(p->description = dup_str(c, d, "description"))) return c->st;
  const im_yaml_node_t *params = im_yaml_map_get(root, "parameters");
  if (params && !(params->kind == IM_YAML_SCALAR && params->type == IM_YAML_NULL)) {
    if (params->kind != IM_YAML_MAP) return err_at(c, params, "parameters must be a mapping NAME: {type, default, enum}");
    if (params->n > MAX_PARAMS) return err_at(c, params, "more than %d parameters", MAX_PARAMS);
    if (!(p->params = im_calloc(params->n ? params->n : 1, sizeof *p->params))) return nomem(c);
    for (size_t i = 0; i < params->n; i++) {
      p->n_params = (int)i + 1;
      if (parse_param(c, params->keys[i], params->items[i], &p->params[i])) return c->st;
    }
  }
  const im_yaml_node_t *steps = im_yaml_map_get(root, "steps");
  if (!steps) return err_at(c, root, "the pipeline needs steps:");
  if (steps->kind != IM_YAML_MAP || !steps->n) return err_at(c, steps, "steps must be a non-empty mapping NAME: {args: [...]}");
  if (steps->n > MAX_STEPS) return err_at(c, steps, "more than %d steps", MAX_STEPS);
  if (!(p->steps = im_calloc(steps->n, sizeof *p->steps))) return nomem(c);
  for (size_t i = 0; i < steps->n; i++) {
    p->n_steps = (int)i + 1;
    if (parse_step(c, steps->keys[i], steps->items[i], &p->steps[i])) return c->st;
  }
  for (int i = 0; i < p->n_steps; i++)
    if (link_step(c, steps->items[i], i)) return c->st;
  if (order_steps(c, steps)) return c->st;
  json_t *j = im_yaml_to_json(root);
  if (!j) return nomem(c);
  p->spec_json = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
  json_decref(j);
  if (!p->spec_json) return nomem(c);
  /* json_dumps allocates with malloc; keep it in the im_ allocator's world. */
  char *copy = im_strdup(p->spec_json);
  free(p->spec_json);
  p->spec_json = copy;
  return copy ? IM_OK : nomem(c);
}

im_status_t im_pipeline_parse(const char *text, size_t len, const char *name, im_pipeline_t **out) {
  *out = NULL;
  if (!name) name = "<pipeline>";
  im_yaml_doc_t *doc = NULL;
  im_status_t st = im_yaml_parse(text, len, name, &doc);
  if (st) return st;
  im_pipeline_t *p = im_calloc(1, sizeof *p);
  if (!p || !(p->file = im_strdup(name))) {
    im_free(p);
    im_yaml_free(doc);
    return im_error(IM_ERR_NOMEM, "out of memory");
  }
  ctx_t c = {.file = name, .p = p};
  st = build(&c, doc);
  im_yaml_free(doc);
  if (st) {
    im_pipeline_free(p);
    return st;
  }
  *out = p;
  return IM_OK;
}

im_status_t im_pipeline_load_file(const char *path, im_pipeline_t **out) {
  *out = NULL;
  uint8_t *data = NULL;
  size_t len = 0;
  im_status_t st = im_file_read(path, 16u << 20, &data, &len);
  if (st) return st;
  st = im_pipeline_parse((const char *)data, len, path, out);
  im_free(data);
  return st;
}

void im_pipeline_free(im_pipeline_t *p) {
  if (!p) return;
  for (int i = 0; i < p->n_params; i++) {
    im__pparam_t *pp = &p->params[i];
    im_free(pp->name);
    im_free(pp->description);
    json_decref(pp->def);
    json_decref(pp->allowed);
  }
  im_free(p->params);
  for (int i = 0; i < p->n_steps; i++) {
    im__pstep_t *s = &p->steps[i];
    im_free(s->name);
    for (int k = 0; k < s->n_args; k++) tmpl_clear(&s->args[k]);
    im_free(s->args);
    im_free(s->when_text);
    im_pipeline_expr_free(s->when);
    for (int k = 0; k < s->n_outputs; k++) {
      im_free(s->outputs[k].name);
      im_free(s->outputs[k].json_key);
      tmpl_clear(&s->outputs[k].file);
    }
    im_free(s->outputs);
    for (int k = 0; k < s->n_inputs; k++) {
      im__pinput_t *in = &s->inputs[k];
      tmpl_clear(&in->path);
      for (int q = 0; q < in->n_include; q++) im_free(in->include[q]);
      for (int q = 0; q < in->n_exclude; q++) im_free(in->exclude[q]);
      im_free(in->include);
      im_free(in->exclude);
    }
    im_free(s->inputs);
    im_free(s->cpu);
    im_free(s->memory);
    im_free(s->gpu_type);
    im_free(s->description);
    im_free(s->deps);
    for (int k = 0; k < s->n_refs_params; k++) im_free(s->refs_params[k]);
    im_free(s->refs_params);
  }
  im_free(p->steps);
  im_free(p->order);
  im_free(p->name);
  im_free(p->description);
  im_free(p->file);
  im_free(p->spec_json);
  im_free(p);
}

const char *im_pipeline_name(const im_pipeline_t *p) { return p->name; }
const char *im_pipeline_file(const im_pipeline_t *p) { return p->file; }
int im_pipeline_n_steps(const im_pipeline_t *p) { return p->n_steps; }
const char *im_pipeline_step_name(const im_pipeline_t *p, int i) { return i >= 0 && i < p->n_steps ? p->steps[i].name : NULL; }
const int *im_pipeline_order(const im_pipeline_t *p) { return p->order; }
const char *im_pipeline_spec_json(const im_pipeline_t *p) { return p->spec_json; }

int im_pipeline_step_deps(const im_pipeline_t *p, int i, const int **deps) {
  *deps = p->steps[i].deps;
  return p->steps[i].n_deps;
}

/* ---- values ---------------------------------------------------------------------------- */
im_status_t im_pipeline_resolve_params(const im_pipeline_t *p, const char *const *assign, int n, char **params_json) {
  *params_json = NULL;
  json_t *v = json_object();
  if (!v) return im_error(IM_ERR_NOMEM, "out of memory");
  im_status_t st = IM_OK;
  for (int i = 0; i < p->n_params; i++)
    if (p->params[i].def) json_object_set(v, p->params[i].name, p->params[i].def);
  for (int i = 0; i < n && !st; i++) {
    const char *eq = strchr(assign[i], '=');
    if (!eq || eq == assign[i]) {
      st = im_error(IM_ERR_ARG, "parameter assignment '%s' must be NAME=VALUE", assign[i]);
      break;
    }
    char name[128];
    snprintf(name, sizeof name, "%.*s", (int)(eq - assign[i]), assign[i]);
    int pi = im__pipeline_param_index(p, name);
    if (pi < 0) {
      im_buf_t b = {0};
      for (int k = 0; k < p->n_params; k++) im_buf_printf(&b, "%s%s", k ? ", " : "", p->params[k].name);
      st = im_error(IM_ERR_ARG, "unknown parameter '%s' (the pipeline %s has: %s)", name, p->name,
                    b.data ? b.data : "none");
      im_buf_free(&b);
      break;
    }
    const im__pparam_t *pp = &p->params[pi];
    json_t *val = typed_from_text(eq + 1, pp->type);
    if (!val) {
      st = im_error(IM_ERR_ARG, "parameter '%s' is a %s, not '%s' (declared at %s:%d:%d)", name,
                    im__ptype_name(pp->type), eq + 1, p->file, pp->line, pp->col);
      break;
    }
    if (pp->allowed && !allowed_has(pp->allowed, val)) {
      char *a = allowed_text(pp->allowed);
      st = im_error(IM_ERR_ARG, "parameter '%s' must be one of %s, not '%s' (declared at %s:%d:%d)", name, a ? a : "",
                    eq + 1, p->file, pp->line, pp->col);
      im_free(a);
      json_decref(val);
      break;
    }
    json_object_set_new(v, name, val);
  }
  for (int i = 0; i < p->n_params && !st; i++)
    if (!json_object_get(v, p->params[i].name))
      st = im_error(IM_ERR_ARG, "parameter '%s' is required (no default; declared at %s:%d:%d): pass -p %s=VALUE",
                    p->params[i].name, p->file, p->params[i].line, p->params[i].col, p->params[i].name);
  if (!st) {
    char *s = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
    *params_json = s ? im_strdup(s) : NULL;
    free(s);
    if (!*params_json) st = im_error(IM_ERR_NOMEM, "out of memory");
  }
  json_decref(v);
  return st;
}

im_status_t im_pipeline_step_when(const im_pipeline_t *p, int i, const char *params_json, const char *outputs_json,
                                  int *holds) {
  *holds = 1;
  if (!p->steps[i].when) return IM_OK;
  return im_pipeline_expr_eval(p->steps[i].when, params_json, outputs_json, holds);
}

void im_pipeline_argv_free(char **argv) {
  if (!argv) return;
  for (char **a = argv; *a; a++) im_free(*a);
  im_free(argv);
}

im_status_t im_pipeline_step_argv(const im_pipeline_t *p, int i, const char *params_json, const char *outputs_json,
                                  char ***argv, int *n) {
  *argv = NULL;
  *n = 0;
  const im__pstep_t *s = &p->steps[i];
  json_t *pj = im__json_obj(params_json), *oj = pj ? im__json_obj(outputs_json) : NULL;
  im_status_t st = pj && oj ? IM_OK : IM_ERR_ARG;
  char **a = st ? NULL : im_calloc((size_t)s->n_args + 1, sizeof *a);
  if (!st && !a) st = im_error(IM_ERR_NOMEM, "out of memory");
  for (int k = 0; k < s->n_args && !st; k++) st = im__tmpl_render(&s->args[k], pj, oj, &a[k]);
  json_decref(pj);
  json_decref(oj);
  if (st) {
    im_pipeline_argv_free(a);
    return st;
  }
  *argv = a;
  *n = s->n_args;
  return IM_OK;
}
