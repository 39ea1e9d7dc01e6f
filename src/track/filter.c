/* MLflow search syntax: a parser of filter strings (outside input: bounded,
 * precise error messages, fuzzed by tests/fuzz/fuzz_track_filter.c) and of
 * order_by entries, and their compilation to parameterized SQL (values are
 * always bound, never pasted) for a search domain (runs, experiments,
 * registered models, model versions), and im__trk_search, which runs a whole
 * search of one of those domains and collects a page.
 *
 *   filter  := clause (AND clause)*
 *   clause  := key op value
 *   key     := entity "." name | name | `name` | "name"
 *   entity  := metric(s) | param(s) | parameter(s) | tag(s) | attribute(s) | attr | run | dataset(s)
 *   name    := [A-Za-z0-9_.:/-]+ | `...` | "..."
 *   op      := = | == | != | <> | > | >= | < | <= | LIKE | ILIKE | IN | NOT IN   (keywords any case)
 *   value   := number | '...' | "..." | ( string (, string)* )     ('' or "" inside for a quote)
 */
#include <ctype.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "track/track_impl.h"

#define IM__MAX_CLAUSES 100
#define IM__MAX_IN_LIST 1000
#define IM__MAX_FILTER_LEN 65536

typedef struct {
  const char *s;
  size_t n, i;
  char *err;
  size_t errlen;
} parser_t;

static im_status_t perr(parser_t *p, const char *fmt, ...) IM_PRINTF(2, 3);
static im_status_t perr(parser_t *p, const char *fmt, ...) {
  char what[256];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(what, sizeof what, fmt, ap);
  va_end(ap);
  if (p->err && p->errlen) {
    /* show up to 20 printable characters of where it went wrong */
    char near[24];
    size_t k = 0;
    for (size_t j = p->i; j < p->n && k < 20; j++) near[k++] = (p->s[j] >= 32 && p->s[j] < 127) ? p->s[j] : '?';
    near[k] = '\0';
    if (p->i >= p->n)
      snprintf(p->err, p->errlen, "%s at the end of the filter", what);
    else
      snprintf(p->err, p->errlen, "%s at position %zu (near '%s')", what, p->i, near);
  }
  return IM_ERR_ARG;
}

static void skip_ws(parser_t *p) {
  while (p->i < p->n && (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r')) p->i++;
}

static int at_end(parser_t *p) { return p->i >= p->n; }
static int peek(parser_t *p) { return p->i < p->n ? (unsigned char)p->s[p->i] : -1; }
static int is_word_char(int c) { return c >= 0 && (isalnum(c) || c == '_'); }
static int is_name_char(int c) {
  return c >= 0 && (isalnum(c) || c == '_' || c == '.' || c == '-' || c == '/' || c == ':');
}

/* Matches a keyword (any case) followed by a non-word character. */
static int keyword(parser_t *p, const char *kw) {
  size_t k = strlen(kw);
  if (p->n - p->i < k || strncasecmp(p->s + p->i, kw, k)) return 0;
  if (p->i + k < p->n && is_word_char((unsigned char)p->s[p->i + k])) return 0;
  p->i += k;
  return 1;
}

/* A quoted run: q is the quote; a doubled quote stands for one. */
static im_status_t quoted(parser_t *p, char q, char **out, const char *what) {
  size_t start = p->i;
  p->i++; /* opening quote */
  im_buf_t b = {0};
  for (;;) {
    if (p->i >= p->n) {
      im_buf_free(&b);
      p->i = start;
      return perr(p, "unterminated %s (missing closing %c)", what, q);
    }
    char c = p->s[p->i];
    if (c == '\0') {
      im_buf_free(&b);
      return perr(p, "NUL byte inside a %s", what);
    }
    if (c == q) {
      if (p->i + 1 < p->n && p->s[p->i + 1] == q) {
        if (im_buf_append(&b, &c, 1)) goto oom;
        p->i += 2;
        continue;
      }
      p->i++;
      break;
    }
    if (im_buf_append(&b, &c, 1)) goto oom;
    p->i++;
  }
  if (!b.data) {
    b.data = im_strdup("");
    if (!b.data) goto oom;
  }
  *out = b.data;
  return IM_OK;
oom:
  im_buf_free(&b);
  if (p->err && p->errlen) snprintf(p->err, p->errlen, "out of memory");
  return IM_ERR_NOMEM;
}

static im_status_t oom(parser_t *p) {
  if (p->err && p->errlen) snprintf(p->err, p->errlen, "out of memory");
  return IM_ERR_NOMEM;
}

static int entity_of(const char *w, size_t n, im__ent_t *e) {
  static const struct {
    const char *name;
    im__ent_t ent;
  } names[] = {{"metric", IM__ENT_METRIC},   {"metrics", IM__ENT_METRIC},  {"param", IM__ENT_PARAM},
               {"params", IM__ENT_PARAM},    {"parameter", IM__ENT_PARAM}, {"parameters", IM__ENT_PARAM},
               {"tag", IM__ENT_TAG},         {"tags", IM__ENT_TAG},        {"attribute", IM__ENT_ATTR},
               {"attributes", IM__ENT_ATTR}, {"attr", IM__ENT_ATTR},       {"run", IM__ENT_ATTR},
               {"dataset", IM__ENT_DATASET}, {"datasets", IM__ENT_DATASET}};
  for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
    if (strlen(names[i].name) == n && !strncasecmp(w, names[i].name, n)) {
      *e = names[i].ent;
      return 1;
    }
  }
  return 0;
}

/* key := entity "." name | name | quoted name */
static im_status_t parse_key(parser_t *p, im__ent_t *ent, char **key) {
  int c = peek(p);
  *ent = IM__ENT_ATTR;
  if (c == '`' || c == '"') {
    im_status_t r = quoted(p, (char)c, key, "quoted key");
    if (r == IM_OK && !**key) {
      im_free(*key);
      *key = NULL;
      return perr(p, "empty key");
    }
    return r;
  }
  if (!is_word_char(c))
    return perr(p, "expected a key such as metrics.<name>, params.<name>, tags.<name> or attributes.<name>");
  size_t w0 = p->i;
  while (is_word_char(peek(p))) p->i++;
  size_t wn = p->i - w0;
  if (peek(p) == '.') {
    im__ent_t e;
    if (!entity_of(p->s + w0, wn, &e)) {
      p->i = w0;
      return perr(p, "unknown entity '%.*s' (use metrics., params., tags., attributes. or datasets.)",
                  (int)(wn > 40 ? 40 : wn), p->s + w0);
    }
    p->i++; /* '.' */
    *ent = e;
    c = peek(p);
    if (c == '`' || c == '"') {
      im_status_t r = quoted(p, (char)c, key, "quoted key");
      if (r == IM_OK && !**key) {
        im_free(*key);
        *key = NULL;
        return perr(p, "empty key after '%.*s.'", (int)wn, p->s + w0);
      }
      return r;
    }
    size_t k0 = p->i;
    while (is_name_char(peek(p))) p->i++;
    if (p->i == k0) return perr(p, "expected a name after '%.*s.'", (int)wn, p->s + w0);
    *key = im_strndup(p->s + k0, p->i - k0);
    return *key ? IM_OK : oom(p);
  }
  *key = im_strndup(p->s + w0, wn);
  return *key ? IM_OK : oom(p);
}

static im_status_t parse_op(parser_t *p, im__op_t *op) {
  /* longest symbols first */
  static const struct {
    const char *sym;
    im__op_t op;
  } syms[] = {{"!=", IM__OP_NE}, {"<>", IM__OP_NE}, {">=", IM__OP_GE}, {"<=", IM__OP_LE},
              {"==", IM__OP_EQ}, {"=", IM__OP_EQ},  {">", IM__OP_GT},  {"<", IM__OP_LT}};
  for (size_t i = 0; i < sizeof syms / sizeof syms[0]; i++) {
    size_t k = strlen(syms[i].sym);
    if (p->n - p->i >= k && !strncmp(p->s + p->i, syms[i].sym, k)) {
      p->i += k;
      *op = syms[i].op;
      return IM_OK;
    }
  }
  if (keyword(p, "LIKE")) {
    *op = IM__OP_LIKE;
    return IM_OK;
  }
  if (keyword(p, "ILIKE")) {
    *op = IM__OP_ILIKE;
    return IM_OK;
  }
  if (keyword(p, "IN")) {
    *op = IM__OP_IN;
    return IM_OK;
  }
  size_t save = p->i;
  if (keyword(p, "NOT")) {
    skip_ws(p);
    if (keyword(p, "IN")) {
      *op = IM__OP_NOT_IN;
      return IM_OK;
    }
    p->i = save;
    return perr(p, "only NOT IN is supported with NOT");
  }
  return perr(p, "expected a comparator (=, !=, >, >=, <, <=, LIKE, ILIKE, IN, NOT IN)");
}

static im_status_t parse_number(parser_t *p, double *out) {
  size_t n0 = p->i;
  while (p->i < p->n && (isdigit((unsigned char)p->s[p->i]) || strchr("+-.eE", p->s[p->i]) != NULL) && p->s[p->i])
    p->i++;
  size_t len = p->i - n0;
  if (!len || len > 64) {
    p->i = n0;
    return perr(p, "expected a number");
  }
  char buf[72];
  memcpy(buf, p->s + n0, len);
  buf[len] = '\0';
  char *end = NULL;
  double v = strtod(buf, &end);
  if (end != buf + len || !isfinite(v)) {
    p->i = n0;
    return perr(p, "'%s' is not a valid number", buf);
  }
  if (is_word_char(peek(p))) return perr(p, "unexpected text after the number '%s'", buf);
  *out = v;
  return IM_OK;
}

static im_status_t parse_list(parser_t *p, im__clause_t *c) {
  p->i++; /* '(' */
  int cap = 0;
  for (;;) {
    skip_ws(p);
    int q = peek(p);
    if (q != '\'' && q != '"') {
      if (q == ')' && c->n_list == 0) return perr(p, "empty list after IN");
      return perr(p, "IN takes a parenthesized list of quoted strings, e.g. IN ('a', 'b')");
    }
    if (c->n_list == IM__MAX_IN_LIST) return perr(p, "too many values in an IN list (at most %d)", IM__MAX_IN_LIST);
    if (c->n_list == cap) {
      int nc = cap ? cap * 2 : 4;
      char **nl = im_realloc(c->list, (size_t)nc * sizeof *nl);
      if (!nl) return oom(p);
      c->list = nl;
      cap = nc;
    }
    char *v = NULL;
    im_status_t r = quoted(p, (char)q, &v, "string");
    if (r) return r;
    c->list[c->n_list++] = v;
    skip_ws(p);
    if (peek(p) == ',') {
      p->i++;
      continue;
    }
    if (peek(p) == ')') {
      p->i++;
      return IM_OK;
    }
    return perr(p, "expected ',' or ')' in the IN list");
  }
}

static im_status_t parse_value(parser_t *p, im__clause_t *c) {
  int q = peek(p);
  if (c->op == IM__OP_IN || c->op == IM__OP_NOT_IN) {
    if (q != '(') return perr(p, "expected '(' after %s", im__op_name(c->op));
    return parse_list(p, c);
  }
  if (q == '\'' || q == '"') return quoted(p, (char)q, &c->str, "string");
  if (q >= 0 && (isdigit(q) || q == '-' || q == '+' || q == '.')) {
    c->is_num = 1;
    return parse_number(p, &c->num);
  }
  if (q == '(') return perr(p, "a parenthesized list needs IN or NOT IN");
  return perr(p, "expected a value (a number or a quoted string) after %s", im__op_name(c->op));
}

static void clause_clear(im__clause_t *c) {
  im_free(c->key);
  im_free(c->str);
  for (int i = 0; i < c->n_list; i++) im_free(c->list[i]);
  im_free(c->list);
  memset(c, 0, sizeof *c);
}

void im__filter_free(im__filter_t *f) {
  if (!f) return;
  for (int i = 0; i < f->n; i++) clause_clear(&f->c[i]);
  im_free(f->c);
  im_free(f);
}

const char *im__op_name(im__op_t op) {
  static const char *const names[] = {"=", "!=", ">", ">=", "<", "<=", "LIKE", "ILIKE", "IN", "NOT IN"};
  return (unsigned)op < sizeof names / sizeof names[0] ? names[op] : "?";
}

im_status_t im__filter_parse(const char *text, size_t len, im__filter_t **out, char *err, size_t errlen) {
  *out = NULL;
  if (err && errlen) err[0] = '\0';
  parser_t p = {text ? text : "", text ? len : 0, 0, err, errlen};
  if (p.n > IM__MAX_FILTER_LEN) return perr(&p, "filter longer than %d bytes", IM__MAX_FILTER_LEN);
  im__filter_t *f = im_calloc(1, sizeof *f);
  if (!f) return oom(&p);
  im_status_t r = IM_OK;
  int cap = 0;
  skip_ws(&p);
  while (r == IM_OK && !at_end(&p)) {
    if (f->n == IM__MAX_CLAUSES) {
      r = perr(&p, "too many conditions (at most %d)", IM__MAX_CLAUSES);
      break;
    }
    if (f->n == cap) {
      int nc = cap ? cap * 2 : 4;
      im__clause_t *ncl = im_realloc(f->c, (size_t)nc * sizeof *ncl);
      if (!ncl) {
        r = oom(&p);
        break;
      }
      f->c = ncl;
      cap = nc;
    }
    im__clause_t *c = &f->c[f->n++];
    memset(c, 0, sizeof *c);
    r = parse_key(&p, &c->ent, &c->key);
    if (r) break;
    skip_ws(&p);
    r = parse_op(&p, &c->op);
    if (r) break;
    skip_ws(&p);
    r = parse_value(&p, c);
    if (r) break;
    skip_ws(&p);
    if (at_end(&p)) break;
    if (keyword(&p, "AND")) {
      skip_ws(&p);
      if (at_end(&p)) r = perr(&p, "expected a condition after AND");
      continue;
    }
    size_t save = p.i;
    if (keyword(&p, "OR")) {
      p.i = save;
      r = perr(&p, "OR is not supported (conditions can only be joined with AND)");
    } else {
      r = perr(&p, "expected AND between conditions");
    }
  }
  if (r != IM_OK) {
    im__filter_free(f);
    return r;
  }
  *out = f;
  return IM_OK;
}

/* ---- order_by ---------------------------------------------------------------- */
void im__order_clear(im__order_t *o) {
  if (!o) return;
  im_free(o->key);
  o->key = NULL;
}

im_status_t im__order_parse(const char *text, im__order_t *out, char *err, size_t errlen) {
  memset(out, 0, sizeof *out);
  if (err && errlen) err[0] = '\0';
  parser_t p = {text ? text : "", text ? strlen(text) : 0, 0, err, errlen};
  skip_ws(&p);
  if (at_end(&p)) return perr(&p, "empty order_by entry");
  im_status_t r = parse_key(&p, &out->ent, &out->key);
  if (r) return r;
  skip_ws(&p);
  if (keyword(&p, "DESC"))
    out->desc = 1;
  else if (keyword(&p, "ASC"))
    out->desc = 0;
  skip_ws(&p);
  if (!at_end(&p)) {
    im__order_clear(out);
    return perr(&p, "expected ASC or DESC after the order_by key");
  }
  return IM_OK;
}

/* ---- compiling to SQL ---------------------------------------------------------- */
void im__sql_free(im__sql_t *q) {
  if (!q) return;
  im_buf_free(&q->sql);
  for (int i = 0; i < q->n_binds; i++) im_free(q->binds[i].str);
  im_free(q->binds);
  memset(q, 0, sizeof *q);
}

static im_status_t add_bind(im__sql_t *q, int is_num, double num, const char *str) {
  if (q->n_binds == q->cap_binds) {
    int nc = q->cap_binds ? q->cap_binds * 2 : 8;
    im__bind_t *nb = im_realloc(q->binds, (size_t)nc * sizeof *nb);
    if (!nb) return IM_ERR_NOMEM;
    q->binds = nb;
    q->cap_binds = nc;
  }
  im__bind_t *b = &q->binds[q->n_binds];
  b->is_num = is_num;
  b->num = num;
  b->str = NULL;
  if (!is_num) {
    b->str = im_strdup(str ? str : "");
    if (!b->str) return IM_ERR_NOMEM;
  }
  q->n_binds++;
  return IM_OK;
}

im_status_t im__sql_bind(im_track_store_t *s, const im__sql_t *q, sqlite3_stmt *st, int first, int *next) {
  int idx = first;
  for (int i = 0; i < q->n_binds; i++, idx++) {
    const im__bind_t *b = &q->binds[i];
    int rc = b->is_num ? sqlite3_bind_double(st, idx, b->num) : sqlite3_bind_text(st, idx, b->str, -1, SQLITE_STATIC);
    if (rc != SQLITE_OK) return im__trk_sqlfail(s, rc, "binding a search value");
  }
  *next = idx;
  return IM_OK;
}

static const im__attr_t *find_attr(const im__domain_t *d, const char *name) {
  for (int i = 0; i < d->n_attrs; i++)
    if (!strcmp(d->attrs[i].name, name)) return &d->attrs[i];
  return NULL;
}

static void attr_names(const im__domain_t *d, char *out, size_t n) {
  size_t o = 0;
  out[0] = '\0';
  for (int i = 0; i < d->n_attrs && o < n; i++)
    o += (size_t)snprintf(out + o, n - o, "%s%s", i ? ", " : "", d->attrs[i].name);
}

static int op_numeric(im__op_t op) { return op <= IM__OP_LE; }
static int op_string(im__op_t op) { return op == IM__OP_EQ || op == IM__OP_NE || op >= IM__OP_LIKE; }

static const char *ent_name(im__ent_t e) {
  switch (e) {
    case IM__ENT_METRIC:
      return "metrics";
    case IM__ENT_PARAM:
      return "params";
    case IM__ENT_TAG:
      return "tags";
    case IM__ENT_DATASET:
      return "datasets";
    default:
      return "attributes";
  }
}

static int err_out(char *err, size_t errlen, const char *fmt, ...) IM_PRINTF(3, 4);
static int err_out(char *err, size_t errlen, const char *fmt, ...) {
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return IM_ERR_ARG;
}

/* Appends "<col> <op> ?" (or the LIKE / IN form) and its binds. */
static im_status_t emit_cmp(im__sql_t *q, const char *col, const im__clause_t *c) {
  im_buf_t *b = &q->sql;
  im_status_t r = IM_OK;
  switch (c->op) {
    case IM__OP_LIKE:
    case IM__OP_ILIKE:
      r = im_buf_printf(b, "im_like(%s, ?, %d)", col, c->op == IM__OP_ILIKE);
      break;
    case IM__OP_IN:
    case IM__OP_NOT_IN:
      r = im_buf_printf(b, "%s %s (", col, c->op == IM__OP_IN ? "IN" : "NOT IN");
      for (int i = 0; r == IM_OK && i < c->n_list; i++) r = im_buf_printf(b, "%s?", i ? ", " : "");
      if (r == IM_OK) r = im_buf_printf(b, ")");
      for (int i = 0; r == IM_OK && i < c->n_list; i++) r = add_bind(q, 0, 0, c->list[i]);
      return r;
    default:
      r = im_buf_printf(b, "%s %s ?", col, im__op_name(c->op));
      break;
  }
  if (r == IM_OK) r = add_bind(q, c->is_num, c->num, c->str);
  return r;
}

static im_status_t compile_clause(const im__clause_t *c, const im__domain_t *d, im__sql_t *q, char *err,
                                  size_t errlen) {
  const char *prefix = NULL, *col = NULL;
  int numeric = 0;
  switch (c->ent) {
    case IM__ENT_ATTR: {
      const im__attr_t *a = find_attr(d, c->key);
      if (!a) {
        char names[256];
        attr_names(d, names, sizeof names);
        return err_out(err, errlen, "invalid attribute key '%s' for %s (valid: %s)", c->key, d->what, names);
      }
      col = a->sql;
      numeric = a->numeric;
      break;
    }
    case IM__ENT_METRIC:
      prefix = d->metric_prefix, col = d->metric_col, numeric = 1;
      break;
    case IM__ENT_PARAM:
      prefix = d->param_prefix, col = d->param_col;
      break;
    case IM__ENT_TAG:
      prefix = d->tag_prefix, col = d->tag_col;
      break;
    case IM__ENT_DATASET:
      return err_out(err, errlen, "filtering %s by datasets.%s is not supported", d->what, c->key);
  }
  if (!col) return err_out(err, errlen, "%s cannot be filtered by %s.%s", d->what, ent_name(c->ent), c->key);
  const char *label = c->ent == IM__ENT_ATTR ? "attribute" : ent_name(c->ent);
  if (numeric) {
    if (!op_numeric(c->op))
      return err_out(err, errlen, "%s '%s' is numeric: use =, !=, >, >=, < or <= (not %s)", label, c->key,
                     im__op_name(c->op));
    if (!c->is_num)
      return err_out(err, errlen, "%s '%s' is numeric: compare it with an unquoted number, not '%s'", label, c->key,
                     c->str ? c->str : "");
  } else {
    if (!op_string(c->op))
      return err_out(err, errlen, "%s '%s' is a string: use =, !=, LIKE, ILIKE, IN or NOT IN (not %s)", label, c->key,
                     im__op_name(c->op));
    if (c->is_num) return err_out(err, errlen, "%s '%s' is a string: quote the value ('%g')", label, c->key, c->num);
  }
  im_status_t r = im_buf_printf(&q->sql, " AND ");
  if (r == IM_OK && prefix) {
    r = im_buf_printf(&q->sql, "%s", prefix);
    if (r == IM_OK) r = add_bind(q, 0, 0, c->key);
  }
  if (r == IM_OK) r = emit_cmp(q, col, c);
  if (r == IM_OK && prefix) r = im_buf_printf(&q->sql, ")");
  if (r != IM_OK) return err_out(err, errlen, "out of memory"), IM_ERR_NOMEM;
  return IM_OK;
}

im_status_t im__filter_compile(const im__filter_t *f, const im__domain_t *d, im__sql_t *out, char *err, size_t errlen) {
  for (int i = 0; f && i < f->n; i++) {
    im_status_t r = compile_clause(&f->c[i], d, out, err, errlen);
    if (r) return r;
  }
  return IM_OK;
}

im_status_t im__order_compile(const im__order_t *o, const im__domain_t *d, im__sql_t *out, char *err, size_t errlen) {
  const char *expr = NULL;
  int keyed = 0;
  switch (o->ent) {
    case IM__ENT_ATTR: {
      const im__attr_t *a = find_attr(d, o->key);
      if (!a) {
        char names[256];
        attr_names(d, names, sizeof names);
        return err_out(err, errlen, "invalid order_by key '%s' for %s (valid: %s)", o->key, d->what, names);
      }
      expr = a->sql;
      break;
    }
    case IM__ENT_METRIC:
      expr = d->metric_order, keyed = 1;
      break;
    case IM__ENT_PARAM:
      expr = d->param_order, keyed = 1;
      break;
    case IM__ENT_TAG:
      expr = d->tag_order, keyed = 1;
      break;
    case IM__ENT_DATASET:
      expr = NULL;
      break;
  }
  if (!expr) return err_out(err, errlen, "%s cannot be ordered by %s.%s", d->what, ent_name(o->ent), o->key);
  /* missing values last, whatever the direction */
  im_status_t r = im_buf_printf(&out->sql, "%s IS NULL, %s %s, ", expr, expr, o->desc ? "DESC" : "ASC");
  if (r == IM_OK && keyed) r = add_bind(out, 0, 0, o->key);
  if (r == IM_OK && keyed) r = add_bind(out, 0, 0, o->key);
  if (r != IM_OK) return err_out(err, errlen, "out of memory"), IM_ERR_NOMEM;
  return IM_OK;
}

im_status_t im__search_prepare(im_track_store_t *s, const im_track_search_t *q, const im__domain_t *d, int64_t def,
                               int64_t max, im__sql_t *where, im__sql_t *order, int64_t *limit, int64_t *offset) {
  static const im_track_search_t none = {0};
  if (!q) q = &none;
  char err[512];
  im_status_t r = IM_OK;
  if (q->filter && *q->filter) {
    im__filter_t *f = NULL;
    r = im__filter_parse(q->filter, strlen(q->filter), &f, err, sizeof err);
    if (r == IM_OK) r = im__filter_compile(f, d, where, err, sizeof err);
    im__filter_free(f);
    if (r == IM_ERR_NOMEM) return IM__TRK_NOMEM(s);
    if (r) return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "invalid filter \"%.200s\": %s", q->filter, err);
  }
  if (q->n_order_by < 0 || (q->n_order_by > 0 && !q->order_by))
    return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "bad order_by list");
  for (int i = 0; i < q->n_order_by; i++) {
    im__order_t o;
    r = im__order_parse(q->order_by[i], &o, err, sizeof err);
    if (r == IM_OK) r = im__order_compile(&o, d, order, err, sizeof err);
    im__order_clear(&o);
    if (r == IM_ERR_NOMEM) return IM__TRK_NOMEM(s);
    if (r)
      return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "invalid order_by \"%.200s\": %s",
                          q->order_by[i] ? q->order_by[i] : "", err);
  }
  int64_t m = q->max_results ? q->max_results : def;
  if (m < 1 || m > max)
    return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID,
                        "invalid value %lld for max_results: it must be between 1 and %lld", (long long)q->max_results,
                        (long long)max);
  *limit = m;
  return im__trk_parse_page_token(s, q->page_token, offset);
}

im_status_t im__trk_search(im_track_store_t *s, const im__search_spec_t *sp, const im_track_search_t *q,
                           const char *cond, const int64_t *ids, int n_ids, void **items, int64_t *n,
                           char **next_token) {
  im__sql_t where = {0}, order = {0};
  int64_t limit = 0, offset = 0;
  im_status_t r =
      im__search_prepare(s, q, sp->dom, sp->def_results, sp->max_results, &where, &order, &limit, &offset);
  im_buf_t sql = {0};
  if (r == IM_OK && im_buf_printf(&sql, "%s%s%s ORDER BY %s%s LIMIT ? OFFSET ?", sp->select, cond,
                                  where.sql.data ? where.sql.data : "", order.sql.data ? order.sql.data : "",
                                  sp->order_tail))
    r = IM__TRK_NOMEM(s);
  sqlite3_stmt *st = NULL;
  if (r == IM_OK) {
    int rc = sqlite3_prepare_v2(s->db, sql.data, -1, &st, NULL);
    if (rc != SQLITE_OK) r = im__trk_sqlfail(s, rc, sp->what);
  }
  int next = 1;
  for (int i = 0; r == IM_OK && i < n_ids; i++) r = im__trk_bindv(s, st, next++, "i", ids[i]);
  if (r == IM_OK) r = im__sql_bind(s, &where, st, next, &next);
  if (r == IM_OK) r = im__sql_bind(s, &order, st, next, &next);
  if (r == IM_OK) r = im__trk_bindv(s, st, next, "ii", limit + 1, offset);
  if (r == IM_OK) r = im__trk_collect_page(s, st, limit, offset, sp->item_size, sp->fill, items, n, next_token);
  sqlite3_finalize(st);
  im_buf_free(&sql);
  im__sql_free(&where);
  im__sql_free(&order);
  return r;
}
