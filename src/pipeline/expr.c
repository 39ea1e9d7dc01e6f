/* Pipeline condition expressions (when:): a recursive-descent parser with
 * column-precise errors, evaluation against parameter and output values, and
 * translation to the CEL that Kubeflow's triggerPolicy.condition takes. */
#include <ctype.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/pipeline_impl.h"

#define EXPR_MAX_DEPTH 64
#define EXPR_MAX_LEN 4096

typedef struct {
  const char *s;
  size_t pos, len;
  int depth;
  char err[200];
} lex_t;

typedef im_pipeline_expr_t expr_t;

void im_pipeline_expr_free(expr_t *e) {
  if (!e) return;
  im_pipeline_expr_free(e->a);
  im_pipeline_expr_free(e->b);
  for (int i = 0; i < e->n; i++) im_pipeline_expr_free(e->items[i]);
  im_free(e->items);
  im_free(e->name);
  im_free(e->output);
  if (e->val) json_decref(e->val);
  im_free(e);
}

static expr_t *node(im__ekind_t k, int col) {
  expr_t *e = im_calloc(1, sizeof *e);
  if (e) e->k = k, e->col = col;
  return e;
}

static void skip_ws(lex_t *l) {
  while (l->pos < l->len && isspace((unsigned char)l->s[l->pos])) l->pos++;
}

static int fail(lex_t *l, size_t at, const char *what) {
  if (!l->err[0]) snprintf(l->err, sizeof l->err, "column %zu: %s", at + 1, what);
  return -1;
}

/* Is the word at the current position kw (followed by a non-identifier character)? */
static int at_word(lex_t *l, const char *kw) {
  skip_ws(l);
  size_t n = strlen(kw);
  if (l->len - l->pos < n || strncmp(l->s + l->pos, kw, n)) return 0;
  char c = l->pos + n < l->len ? l->s[l->pos + n] : ' ';
  return !(isalnum((unsigned char)c) || c == '_' || c == '.');
}

static int at_op(lex_t *l, const char *op) {
  skip_ws(l);
  size_t n = strlen(op);
  return l->len - l->pos >= n && !strncmp(l->s + l->pos, op, n);
}

static int is_ident_start(char c) { return isalpha((unsigned char)c) || c == '_'; }
static int is_ident(char c) { return isalnum((unsigned char)c) || c == '_' || c == '-'; }

static expr_t *parse_or(lex_t *l);

/* params.NAME | steps.STEP.outputs.NAME */
static expr_t *parse_ref(lex_t *l) {
  size_t start = l->pos;
  char *parts[4] = {0};
  int np = 0;
  expr_t *e = NULL;
  for (;;) {
    size_t b = l->pos;
    if (b >= l->len || !is_ident_start(l->s[b])) {
      fail(l, b, "expected a name");
      goto out;
    }
    while (l->pos < l->len && is_ident(l->s[l->pos])) l->pos++;
    if (np == 4) {
      fail(l, b, "a reference is params.NAME or steps.STEP.outputs.NAME");
      goto out;
    }
    parts[np++] = im_strndup(l->s + b, l->pos - b);
    if (l->pos < l->len && l->s[l->pos] == '.') {
      l->pos++;
      continue;
    }
    break;
  }
  for (int i = 0; i < np; i++)
    if (!parts[i]) goto out;
  if (np == 2 && !strcmp(parts[0], "params")) {
    if ((e = node(IM__E_PARAM, (int)start + 1))) e->name = parts[1], parts[1] = NULL;
  } else if (np == 4 && !strcmp(parts[0], "steps") && !strcmp(parts[2], "outputs")) {
    if ((e = node(IM__E_OUTPUT, (int)start + 1))) e->name = parts[1], e->output = parts[3], parts[1] = parts[3] = NULL;
  } else {
    fail(l, start, "unknown name: a reference is params.NAME or steps.STEP.outputs.NAME, strings are quoted");
  }
out:
  for (int i = 0; i < np; i++) im_free(parts[i]);
  return e;
}

static expr_t *parse_string(lex_t *l) {
  size_t start = l->pos;
  char q = l->s[l->pos++];
  im_buf_t b = {0};
  for (;;) {
    if (l->pos >= l->len) {
      im_buf_free(&b);
      fail(l, start, "unterminated string");
      return NULL;
    }
    char c = l->s[l->pos++];
    if (c == q) break;
    if (c == '\\' && l->pos < l->len) c = l->s[l->pos++];
    if (c == '\0') {
      im_buf_free(&b);
      fail(l, l->pos - 1, "NUL byte in a string");
      return NULL;
    }
    if (im_buf_append(&b, &c, 1)) {
      im_buf_free(&b);
      return NULL;
    }
  }
  expr_t *e = node(IM__E_CONST, (int)start + 1);
  if (e) e->val = json_stringn(b.data ? b.data : "", b.len);
  im_buf_free(&b);
  if (e && !e->val) {
    im_pipeline_expr_free(e);
    fail(l, start, "a string that is not valid UTF-8");
    return NULL;
  }
  return e;
}

static expr_t *parse_number(lex_t *l) {
  size_t start = l->pos;
  const char *p = l->s + l->pos;
  char buf[64];
  size_t n = 0;
  while (l->pos < l->len && n < sizeof buf - 1 && strchr("0123456789+-.eE", l->s[l->pos])) buf[n++] = l->s[l->pos++];
  buf[n] = '\0';
  (void)p;
  char *end;
  expr_t *e = node(IM__E_CONST, (int)start + 1);
  if (!e) return NULL;
  int is_int = !strpbrk(buf, ".eE");
  if (is_int) {
    long long v = strtoll(buf, &end, 10);
    if (*end || end == buf) goto bad;
    e->val = json_integer(v);
  } else {
    double d = strtod(buf, &end);
    if (*end || end == buf || !isfinite(d)) goto bad;
    e->val = json_real(d);
  }
  if (!e->val) {
    im_pipeline_expr_free(e);
    return NULL;
  }
  return e;
bad:
  im_pipeline_expr_free(e);
  fail(l, start, "not a number");
  return NULL;
}

static expr_t *parse_operand(lex_t *l) {
  skip_ws(l);
  if (l->pos >= l->len) {
    fail(l, l->pos, "expected a value, found the end");
    return NULL;
  }
  char c = l->s[l->pos];
  if (c == '\'' || c == '"') return parse_string(l);
  if (isdigit((unsigned char)c) || c == '-' || c == '+' || c == '.') return parse_number(l);
  if (at_word(l, "true") || at_word(l, "false")) {
    int t = l->s[l->pos] == 't';
    expr_t *e = node(IM__E_CONST, (int)l->pos + 1);
    l->pos += t ? 4 : 5;
    if (e && !(e->val = json_boolean(t))) {
      im_pipeline_expr_free(e);
      return NULL;
    }
    return e;
  }
  if (is_ident_start(c)) return parse_ref(l);
  fail(l, l->pos, "expected a value (params.X, steps.S.outputs.O, a quoted string, a number, true or false)");
  return NULL;
}

static int parse_list(lex_t *l, expr_t *e) {
  skip_ws(l);
  if (!at_op(l, "[")) return fail(l, l->pos, "expected '[' to start the list after 'in'");
  l->pos++;
  for (;;) {
    expr_t *it = parse_operand(l);
    if (!it) return -1;
    if (it->k != IM__E_CONST) {
      size_t at = (size_t)it->col - 1;
      im_pipeline_expr_free(it);
      return fail(l, at, "list items must be constants");
    }
    expr_t **items = im_realloc(e->items, sizeof *items * (size_t)(e->n + 1));
    if (!items) {
      im_pipeline_expr_free(it);
      return -1;
    }
    e->items = items;
    e->items[e->n++] = it;
    skip_ws(l);
    if (at_op(l, ",")) {
      l->pos++;
      continue;
    }
    if (at_op(l, "]")) {
      l->pos++;
      return 0;
    }
    return fail(l, l->pos, "expected ',' or ']' in the list");
  }
}

static expr_t *parse_cmp(lex_t *l) {
  skip_ws(l);
  if (at_op(l, "(")) {
    size_t open = l->pos++;
    expr_t *e = parse_or(l);
    if (!e) return NULL;
    skip_ws(l);
    if (!at_op(l, ")")) {
      im_pipeline_expr_free(e);
      fail(l, l->pos, open + 1 < l->len ? "expected ')'" : "expected ')'");
      return NULL;
    }
    l->pos++;
    return e;
  }
  expr_t *a = parse_operand(l);
  if (!a) return NULL;
  skip_ws(l);
  im__ekind_t k;
  size_t at = l->pos;
  if (at_op(l, "==")) k = IM__E_EQ, l->pos += 2;
  else if (at_op(l, "!=")) k = IM__E_NE, l->pos += 2;
  else if (at_word(l, "in")) k = IM__E_IN, l->pos += 2;
  else if (at_word(l, "not")) {
    size_t save = l->pos;
    l->pos += 3;
    if (!at_word(l, "in")) {
      l->pos = save;
      im_pipeline_expr_free(a);
      fail(l, save, "expected 'not in' or an operator");
      return NULL;
    }
    l->pos += 2;
    k = IM__E_NOT_IN;
  } else if (at_op(l, "=") || at_op(l, "<") || at_op(l, ">") || at_op(l, "!")) {
    im_pipeline_expr_free(a);
    fail(l, at, "unknown operator: use ==, !=, in, not in");
    return NULL;
  } else {
    expr_t *t = node(IM__E_TRUTH, a->col);
    if (!t) {
      im_pipeline_expr_free(a);
      return NULL;
    }
    t->a = a;
    return t;
  }
  expr_t *e = node(k, (int)at + 1);
  if (!e) {
    im_pipeline_expr_free(a);
    return NULL;
  }
  e->a = a;
  if (k == IM__E_IN || k == IM__E_NOT_IN) {
    if (parse_list(l, e)) {
      im_pipeline_expr_free(e);
      return NULL;
    }
  } else if (!(e->b = parse_operand(l))) {
    im_pipeline_expr_free(e);
    return NULL;
  }
  return e;
}

static expr_t *parse_not(lex_t *l) {
  if (at_word(l, "not")) {
    size_t at = l->pos;
    l->pos += 3;
    if (++l->depth > EXPR_MAX_DEPTH) {
      fail(l, at, "nested too deeply");
      return NULL;
    }
    expr_t *a = parse_not(l);
    l->depth--;
    if (!a) return NULL;
    expr_t *e = node(IM__E_NOT, (int)at + 1);
    if (!e) {
      im_pipeline_expr_free(a);
      return NULL;
    }
    e->a = a;
    return e;
  }
  if (++l->depth > EXPR_MAX_DEPTH) {
    fail(l, l->pos, "nested too deeply");
    return NULL;
  }
  expr_t *e = parse_cmp(l);
  l->depth--;
  return e;
}

static expr_t *parse_binary(lex_t *l, int is_or) {
  expr_t *a = is_or ? parse_binary(l, 0) : parse_not(l);
  while (a && at_word(l, is_or ? "or" : "and")) {
    size_t at = l->pos;
    l->pos += is_or ? 2 : 3;
    expr_t *b = is_or ? parse_binary(l, 0) : parse_not(l);
    expr_t *e = b ? node(is_or ? IM__E_OR : IM__E_AND, (int)at + 1) : NULL;
    if (!e) {
      im_pipeline_expr_free(a);
      im_pipeline_expr_free(b);
      return NULL;
    }
    e->a = a, e->b = b;
    a = e;
  }
  return a;
}

static expr_t *parse_or(lex_t *l) { return parse_binary(l, 1); }

im_status_t im_pipeline_expr_parse(const char *text, im_pipeline_expr_t **out) {
  *out = NULL;
  if (!text) return im_error(IM_ERR_ARG, "no expression");
  lex_t l = {.s = text, .len = strlen(text)};
  if (l.len > EXPR_MAX_LEN) return im_error(IM_ERR_FORMAT, "the condition is longer than %d characters", EXPR_MAX_LEN);
  skip_ws(&l);
  if (l.pos == l.len) return im_error(IM_ERR_FORMAT, "column 1: the condition is empty");
  expr_t *e = parse_or(&l);
  if (e) {
    skip_ws(&l);
    if (l.pos < l.len) {
      fail(&l, l.pos, "unexpected text after the expression (missing 'and' / 'or'?)");
      im_pipeline_expr_free(e);
      e = NULL;
    }
  }
  if (!e) return im_error(l.err[0] ? IM_ERR_FORMAT : IM_ERR_NOMEM, "%s", l.err[0] ? l.err : "out of memory");
  *out = e;
  return IM_OK;
}

/* ---- evaluation ------------------------------------------------------------------- */
static im_status_t value_of(const expr_t *e, const json_t *params, const json_t *outputs, const json_t **v) {
  if (e->k == IM__E_CONST) {
    *v = e->val;
    return IM_OK;
  }
  if (e->k == IM__E_PARAM) {
    *v = json_object_get(params, e->name);
    return *v ? IM_OK : im_error(IM_ERR_NOT_FOUND, "parameter '%s' has no value", e->name);
  }
  *v = json_object_get(json_object_get(outputs, e->name), e->output);
  return *v ? IM_OK : im_error(IM_ERR_NOT_FOUND, "step '%s' has no output '%s' (it did not run)", e->name, e->output);
}

static int kind_of(const json_t *v) {
  if (json_is_number(v)) return 1;
  if (json_is_boolean(v)) return 2;
  return 0;
}

static im_status_t equal(const json_t *a, const json_t *b, int *eq) {
  if (kind_of(a) != kind_of(b))
    return im_error(IM_ERR_ARG, "cannot compare %s with %s", json_is_number(a) ? "a number" : json_is_boolean(a) ? "a bool" : "a string",
                    json_is_number(b) ? "a number" : json_is_boolean(b) ? "a bool" : "a string");
  if (json_is_number(a)) *eq = json_number_value(a) == json_number_value(b);
  else if (json_is_boolean(a)) *eq = json_is_true(a) == json_is_true(b);
  else *eq = json_equal(a, b);
  return IM_OK;
}

im_status_t im__expr_eval(const expr_t *e, const json_t *params, const json_t *outputs, int *r) {
  im_status_t st;
  int x, y;
  const json_t *a, *b;
  switch (e->k) {
    case IM__E_OR:
    case IM__E_AND:
      if ((st = im__expr_eval(e->a, params, outputs, &x))) return st;
      if ((e->k == IM__E_OR) == (x != 0)) {
        *r = x;
        return IM_OK;
      }
      return im__expr_eval(e->b, params, outputs, r);
    case IM__E_NOT:
      if ((st = im__expr_eval(e->a, params, outputs, &x))) return st;
      *r = !x;
      return IM_OK;
    case IM__E_TRUTH:
      if ((st = value_of(e->a, params, outputs, &a))) return st;
      if (!json_is_boolean(a)) return im_error(IM_ERR_ARG, "a bare value in a condition must be a bool");
      *r = json_is_true(a);
      return IM_OK;
    case IM__E_EQ:
    case IM__E_NE:
      if ((st = value_of(e->a, params, outputs, &a)) || (st = value_of(e->b, params, outputs, &b))) return st;
      if ((st = equal(a, b, &x))) return st;
      *r = e->k == IM__E_EQ ? x : !x;
      return IM_OK;
    case IM__E_IN:
    case IM__E_NOT_IN:
      if ((st = value_of(e->a, params, outputs, &a))) return st;
      x = 0;
      for (int i = 0; i < e->n && !x; i++) {
        if ((st = equal(a, e->items[i]->val, &y))) return st;
        x = y;
      }
      *r = e->k == IM__E_IN ? x : !x;
      return IM_OK;
    default: return im_error(IM_ERR_ARG, "a value is not a condition");
  }
}

json_t *im__json_obj(const char *text) {
  if (!text || !*text) return json_object();
  json_error_t je;
  json_t *j = json_loads(text, 0, &je);
  if (!j || !json_is_object(j)) {
    json_decref(j);
    im_error(IM_ERR_ARG, "values must be a JSON object%s%s", j ? "" : ": ", j ? "" : je.text);
    return NULL;
  }
  return j;
}

im_status_t im_pipeline_expr_eval(const expr_t *e, const char *params_json, const char *outputs_json, int *result) {
  *result = 0;
  json_t *p = im__json_obj(params_json), *o = p ? im__json_obj(outputs_json) : NULL;
  im_status_t st = p && o ? im__expr_eval(e, p, o, result) : IM_ERR_ARG;
  json_decref(p);
  json_decref(o);
  return st;
}

/* ---- CEL ---------------------------------------------------------------------------- */
static int cel_operand(im_buf_t *b, const im_pipeline_t *p, const expr_t *e, int numeric_kind) {
  if (e->k == IM__E_CONST) {
    const json_t *v = e->val;
    if (json_is_string(v)) {
      im_buf_append(b, "'", 1);
      for (const char *s = json_string_value(v); *s; s++) {
        if (*s == '\'' || *s == '\\') im_buf_append(b, "\\", 1);
        im_buf_append(b, s, 1);
      }
      return im_buf_append(b, "'", 1);
    }
    if (json_is_boolean(v)) return im_buf_printf(b, "%s", json_is_true(v) ? "true" : "false");
    if (numeric_kind == IM__PT_FLOAT || json_is_real(v)) {
      char num[40];
      snprintf(num, sizeof num, "%.17g", json_number_value(v));
      if (!strpbrk(num, ".eEn")) strcat(num, ".0");
      return im_buf_printf(b, "%s", num);
    }
    return im_buf_printf(b, "%lld", (long long)json_integer_value(v));
  }
  char chan[300];
  int type = IM__PT_STRING;
  if (e->k == IM__E_PARAM) {
    snprintf(chan, sizeof chan, "pipelinechannel--%s", e->name);
    int pi = im__pipeline_param_index(p, e->name);
    if (pi >= 0) type = p->params[pi].type;
  } else {
    snprintf(chan, sizeof chan, "pipelinechannel--%s-%s", e->name, e->output);
  }
  if (type == IM__PT_INT && numeric_kind == IM__PT_FLOAT) type = IM__PT_FLOAT;
  const char *wrap = type == IM__PT_INT ? "int(" : type == IM__PT_FLOAT ? "double(" : "";
  return im_buf_printf(b, "%sinputs.parameter_values['%s']%s", wrap, chan, *wrap ? ")" : "");
}

/* The numeric kind a comparison uses: FLOAT when any side is a float. */
static int numeric_kind(const im_pipeline_t *p, const expr_t *e) {
  const expr_t *sides[2] = {e->a, e->b};
  int any_float = 0;
  for (int i = 0; i < 2; i++) {
    const expr_t *s = sides[i];
    if (!s) continue;
    if (s->k == IM__E_CONST && json_is_real(s->val)) any_float = 1;
    if (s->k == IM__E_PARAM) {
      int pi = im__pipeline_param_index(p, s->name);
      if (pi >= 0 && p->params[pi].type == IM__PT_FLOAT) any_float = 1;
    }
  }
  for (int i = 0; i < e->n; i++)
    if (json_is_real(e->items[i]->val)) any_float = 1;
  return any_float ? IM__PT_FLOAT : IM__PT_INT;
}

static int cel(im_buf_t *b, const im_pipeline_t *p, const expr_t *e) {
  int nk;
  switch (e->k) {
    case IM__E_OR:
    case IM__E_AND:
      im_buf_append(b, "(", 1);
      cel(b, p, e->a);
      im_buf_printf(b, " %s ", e->k == IM__E_OR ? "||" : "&&");
      cel(b, p, e->b);
      return im_buf_append(b, ")", 1);
    case IM__E_NOT:
      im_buf_append(b, "!(", 2);
      cel(b, p, e->a);
      return im_buf_append(b, ")", 1);
    case IM__E_TRUTH:
      cel_operand(b, p, e->a, IM__PT_INT);
      return im_buf_printf(b, " == true");
    case IM__E_EQ:
    case IM__E_NE:
      nk = numeric_kind(p, e);
      cel_operand(b, p, e->a, nk);
      im_buf_printf(b, " %s ", e->k == IM__E_EQ ? "==" : "!=");
      return cel_operand(b, p, e->b, nk);
    case IM__E_IN:
    case IM__E_NOT_IN:
      nk = numeric_kind(p, e);
      if (e->k == IM__E_NOT_IN) im_buf_append(b, "!(", 2);
      cel_operand(b, p, e->a, nk);
      im_buf_printf(b, " in [");
      for (int i = 0; i < e->n; i++) {
        if (i) im_buf_printf(b, ", ");
        cel_operand(b, p, e->items[i], nk);
      }
      im_buf_printf(b, "]");
      return e->k == IM__E_NOT_IN ? im_buf_append(b, ")", 1) : 0;
    default: return cel_operand(b, p, e, IM__PT_INT);
  }
}

char *im__expr_cel(const im_pipeline_t *p, const expr_t *e) {
  im_buf_t b = {0};
  cel(&b, p, e);
  if (im_buf_append(&b, "", 1)) {
    im_buf_free(&b);
    return NULL;
  }
  char *s = b.data;
  /* The outermost parentheses of an and / or are not needed. */
  size_t n = strlen(s);
  if ((e->k == IM__E_OR || e->k == IM__E_AND) && n >= 2) {
    memmove(s, s + 1, n - 2);
    s[n - 2] = '\0';
  }
  return s;
}
