/* YAML in and out (include/imops/yaml.h): libyaml's document loader turned
 * into a positioned node tree with core-schema scalar types, limits against
 * hostile input (size, depth, alias expansion), and a JSON-to-YAML emitter. */
#include "imops/yaml.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#define YAML_MAX_BYTES (16u << 20)
#define YAML_MAX_DEPTH 64
#define YAML_MAX_EXPANDED 1000000

struct im_yaml_doc {
  char *name;
  im_yaml_node_t *nodes; /* one per libyaml node; node ids are 1-based there */
  size_t n_nodes;
  int *state;             /* build state per node: 0 new, 1 in progress, 2 done */
  int64_t *expanded;      /* nodes in the fully expanded subtree (aliases counted each time) */
  im_yaml_node_t *root;
  im_yaml_node_t empty;   /* the root of an empty document */
};

/* ---- core schema ------------------------------------------------------------ */
static int all_in(const char *s, const char *set) {
  if (!*s) return 0;
  for (; *s; s++)
    if (!strchr(set, *s)) return 0;
  return 1;
}

static void resolve_plain(im_yaml_node_t *n) {
  const char *s = n->str;
  n->type = IM_YAML_STR;
  if (n->len != strlen(s)) return; /* embedded NUL: a string */
  if (!*s || !strcmp(s, "~") || !strcmp(s, "null") || !strcmp(s, "Null") || !strcmp(s, "NULL")) {
    n->type = IM_YAML_NULL;
    return;
  }
  if (!strcmp(s, "true") || !strcmp(s, "True") || !strcmp(s, "TRUE")) {
    n->type = IM_YAML_BOOL, n->i = 1;
    return;
  }
  if (!strcmp(s, "false") || !strcmp(s, "False") || !strcmp(s, "FALSE")) {
    n->type = IM_YAML_BOOL, n->i = 0;
    return;
  }
  const char *body = s + (*s == '-' || *s == '+');
  int base = 0;
  const char *digits = NULL;
  if (body == s && s[0] == '0' && s[1] == 'o' && all_in(s + 2, "01234567")) base = 8, digits = s + 2;
  else if (body == s && s[0] == '0' && s[1] == 'x' && all_in(s + 2, "0123456789abcdefABCDEF")) base = 16, digits = s + 2;
  else if (all_in(body, "0123456789")) base = 10, digits = s;
  if (base) {
    errno = 0;
    char *end;
    long long v = strtoll(digits, &end, base);
    if (errno == 0 && *end == 0) {
      n->type = IM_YAML_INT, n->i = v, n->d = (double)v;
      return;
    }
    /* out of int64 range: a float, as YAML's int has no bound but ours does */
    n->type = IM_YAML_FLOAT, n->d = strtod(s, NULL);
    return;
  }
  if (!strcmp(body, ".inf") || !strcmp(body, ".Inf") || !strcmp(body, ".INF")) {
    n->type = IM_YAML_FLOAT, n->d = *s == '-' ? -INFINITY : INFINITY;
    return;
  }
  if (!strcmp(s, ".nan") || !strcmp(s, ".NaN") || !strcmp(s, ".NAN")) {
    n->type = IM_YAML_FLOAT, n->d = NAN;
    return;
  }
  /* [-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)? */
  const char *p = body;
  int mant = 0;
  while (*p >= '0' && *p <= '9') p++, mant++;
  if (*p == '.') {
    p++;
    int frac = 0;
    while (*p >= '0' && *p <= '9') p++, frac++;
    if (!mant && !frac) return;
    mant += frac;
  }
  if (!mant) return;
  if (*p == 'e' || *p == 'E') {
    p++;
    if (*p == '-' || *p == '+') p++;
    int ex = 0;
    while (*p >= '0' && *p <= '9') p++, ex++;
    if (!ex) return;
  }
  if (*p) return;
  n->type = IM_YAML_FLOAT, n->d = strtod(s, NULL);
}

/* ---- loading ------------------------------------------------------------------ */
static im_status_t fail_at(const im_yaml_doc_t *d, int line, int col, const char *what) {
  return im_error(IM_ERR_FORMAT, "%s:%d:%d: %s", d->name, line, col, what);
}

static im_status_t build(im_yaml_doc_t *d, yaml_document_t *yd, int id, int depth, im_yaml_node_t **out) {
  yaml_node_t *yn = yaml_document_get_node(yd, id);
  if (!yn) return im_error(IM_ERR_FORMAT, "%s: broken YAML document (node %d)", d->name, id);
  size_t k = (size_t)(id - 1);
  im_yaml_node_t *n = &d->nodes[k];
  int line = (int)yn->start_mark.line + 1, col = (int)yn->start_mark.column + 1;
  if (depth > YAML_MAX_DEPTH) return fail_at(d, line, col, "nesting deeper than 64 levels");
  if (d->state[k] == 1) return fail_at(d, line, col, "an alias refers to a node that contains it");
  if (d->state[k] == 2) {
    *out = n;
    return IM_OK;
  }
  d->state[k] = 1;
  n->line = line, n->col = col;
  int64_t expanded = 1;
  im_status_t st = IM_OK;
  switch (yn->type) {
  case YAML_SCALAR_NODE: {
    n->kind = IM_YAML_SCALAR;
    n->len = yn->data.scalar.length;
    char *s = im_malloc(n->len + 1);
    if (!s) return IM_ERR_NOMEM;
    memcpy(s, yn->data.scalar.value, n->len);
    s[n->len] = 0;
    n->str = s;
    if (yn->data.scalar.style == YAML_PLAIN_SCALAR_STYLE) resolve_plain(n);
    else n->type = IM_YAML_STR;
    break;
  }
  case YAML_SEQUENCE_NODE: {
    n->kind = IM_YAML_SEQ;
    size_t cnt = (size_t)(yn->data.sequence.items.top - yn->data.sequence.items.start);
    n->items = im_calloc(cnt ? cnt : 1, sizeof *n->items);
    if (!n->items) return IM_ERR_NOMEM;
    for (size_t i = 0; i < cnt && !st; i++) {
      st = build(d, yd, yn->data.sequence.items.start[i], depth + 1, &n->items[i]);
      if (!st) n->n = i + 1, expanded += d->expanded[n->items[i] - d->nodes];
      if (!st && expanded > YAML_MAX_EXPANDED) st = fail_at(d, line, col, "aliases expand to more than 1,000,000 nodes");
    }
    break;
  }
  case YAML_MAPPING_NODE: {
    n->kind = IM_YAML_MAP;
    size_t cnt = (size_t)(yn->data.mapping.pairs.top - yn->data.mapping.pairs.start);
    n->items = im_calloc(cnt ? cnt : 1, sizeof *n->items);
    n->keys = im_calloc(cnt ? cnt : 1, sizeof *n->keys);
    if (!n->items || !n->keys) return IM_ERR_NOMEM;
    for (size_t i = 0; i < cnt && !st; i++) {
      yaml_node_pair_t *pr = &yn->data.mapping.pairs.start[i];
      im_yaml_node_t *key = NULL, *val = NULL;
      st = build(d, yd, pr->key, depth + 1, &key);
      if (!st && key->kind != IM_YAML_SCALAR) st = fail_at(d, key->line, key->col, "a mapping key must be a scalar");
      for (size_t j = 0; !st && j < i; j++)
        if (n->keys[j]->len == key->len && !memcmp(n->keys[j]->str, key->str, key->len)) {
          char msg[160];
          snprintf(msg, sizeof msg, "duplicate key '%.100s'", key->str);
          st = fail_at(d, key->line, key->col, msg);
        }
      if (!st) st = build(d, yd, pr->value, depth + 1, &val);
      if (!st) {
        n->keys[i] = key, n->items[i] = val, n->n = i + 1;
        expanded += 1 + d->expanded[val - d->nodes];
        if (expanded > YAML_MAX_EXPANDED) st = fail_at(d, line, col, "aliases expand to more than 1,000,000 nodes");
      }
    }
    break;
  }
  default:
    return fail_at(d, line, col, "empty node");
  }
  if (st) return st;
  d->expanded[k] = expanded;
  d->state[k] = 2;
  *out = n;
  return IM_OK;
}

/* The tree hands out const strings that it owns. */
static void *unconst(const void *p) {
  void *q;
  memcpy(&q, &p, sizeof q);
  return q;
}

void im_yaml_free(im_yaml_doc_t *d) {
  if (!d) return;
  for (size_t i = 0; i < d->n_nodes; i++) {
    im_free(unconst(d->nodes[i].str));
    im_free(d->nodes[i].items);
    im_free(d->nodes[i].keys);
  }
  im_free(d->nodes);
  im_free(d->state);
  im_free(d->expanded);
  im_free(d->name);
  im_free(d);
}

im_status_t im_yaml_parse(const char *text, size_t len, const char *name, im_yaml_doc_t **out) {
  *out = NULL;
  im_yaml_doc_t *d = im_calloc(1, sizeof *d);
  if (!d) return IM_ERR_NOMEM;
  d->name = im_strdup(name ? name : "<yaml>");
  if (!d->name) {
    im_yaml_free(d);
    return IM_ERR_NOMEM;
  }
  if (len > YAML_MAX_BYTES) {
    im_status_t st = im_error(IM_ERR_FORMAT, "%s: %zu bytes is over the 16 MiB limit for a YAML file", d->name, len);
    im_yaml_free(d);
    return st;
  }
  yaml_parser_t p;
  yaml_document_t yd;
  if (!yaml_parser_initialize(&p)) {
    im_yaml_free(d);
    return IM_ERR_NOMEM;
  }
  yaml_parser_set_input_string(&p, (const unsigned char *)text, len);
  im_status_t st = IM_OK;
  if (!yaml_parser_load(&p, &yd)) {
    st = im_error(IM_ERR_FORMAT, "%s:%d:%d: %s%s%s", d->name, (int)p.problem_mark.line + 1,
                  (int)p.problem_mark.column + 1, p.problem ? p.problem : "invalid YAML", p.context ? " " : "",
                  p.context ? p.context : "");
    yaml_parser_delete(&p);
    im_yaml_free(d);
    return st;
  }
  yaml_node_t *root = yaml_document_get_root_node(&yd);
  if (root) {
    /* a second document in the stream is not ours to ignore */
    yaml_document_t next;
    if (!yaml_parser_load(&p, &next)) {
      st = im_error(IM_ERR_FORMAT, "%s:%d:%d: %s", d->name, (int)p.problem_mark.line + 1,
                    (int)p.problem_mark.column + 1, p.problem ? p.problem : "invalid YAML");
    } else {
      if (yaml_document_get_root_node(&next))
        st = im_error(IM_ERR_FORMAT, "%s:%d:%d: more than one YAML document; imops reads one", d->name,
                      (int)next.start_mark.line + 1, (int)next.start_mark.column + 1);
      yaml_document_delete(&next);
    }
    if (!st) {
      d->n_nodes = (size_t)(yd.nodes.top - yd.nodes.start);
      d->nodes = im_calloc(d->n_nodes, sizeof *d->nodes);
      d->state = im_calloc(d->n_nodes, sizeof *d->state);
      d->expanded = im_calloc(d->n_nodes, sizeof *d->expanded);
      if (!d->nodes || !d->state || !d->expanded) {
        if (!d->nodes) d->n_nodes = 0;
        st = IM_ERR_NOMEM;
      }
    }
    if (!st) st = build(d, &yd, 1, 0, &d->root);
  } else {
    d->empty.kind = IM_YAML_SCALAR, d->empty.str = "", d->empty.type = IM_YAML_NULL, d->empty.line = 1,
    d->empty.col = 1;
    d->root = &d->empty;
  }
  yaml_document_delete(&yd);
  yaml_parser_delete(&p);
  if (st) {
    im_yaml_free(d);
    return st;
  }
  *out = d;
  return IM_OK;
}

im_status_t im_yaml_load_file(const char *path, im_yaml_doc_t **out) {
  *out = NULL;
  FILE *f = fopen(path, "rb");
  if (!f) return im_error(IM_ERR_IO, "cannot open %s: %s", path, strerror(errno));
  im_buf_t b = {0};
  char chunk[65536];
  size_t got;
  im_status_t st = IM_OK;
  while (!st && (got = fread(chunk, 1, sizeof chunk, f)) > 0) {
    st = im_buf_append(&b, chunk, got);
    if (!st && b.len > YAML_MAX_BYTES) st = im_error(IM_ERR_FORMAT, "%s: over the 16 MiB limit for a YAML file", path);
  }
  if (!st && ferror(f)) st = im_error(IM_ERR_IO, "reading %s: %s", path, strerror(errno));
  fclose(f);
  if (!st) st = im_yaml_parse(b.data ? b.data : "", b.len, path, out);
  im_buf_free(&b);
  return st;
}

const im_yaml_node_t *im_yaml_root(const im_yaml_doc_t *d) { return d ? d->root : NULL; }
const char *im_yaml_name(const im_yaml_doc_t *d) { return d ? d->name : "<yaml>"; }

const im_yaml_node_t *im_yaml_map_get(const im_yaml_node_t *m, const char *key) {
  if (!m || m->kind != IM_YAML_MAP) return NULL;
  size_t kl = strlen(key);
  for (size_t i = 0; i < m->n; i++)
    if (m->keys[i]->len == kl && !memcmp(m->keys[i]->str, key, kl)) return m->items[i];
  return NULL;
}

int im_yaml_is(const im_yaml_node_t *node, im_yaml_type_t type) {
  return node && node->kind == IM_YAML_SCALAR && node->type == type;
}

int im_yaml_is_number(const im_yaml_node_t *node) {
  return im_yaml_is(node, IM_YAML_INT) || im_yaml_is(node, IM_YAML_FLOAT);
}

void *im_yaml_to_json(const im_yaml_node_t *n) {
  json_t *j = NULL;
  switch (n->kind) {
  case IM_YAML_SCALAR:
    switch (n->type) {
    case IM_YAML_NULL: return json_null();
    case IM_YAML_BOOL: return json_boolean(n->i);
    case IM_YAML_INT: return json_integer(n->i);
    case IM_YAML_FLOAT:
      if (isnan(n->d)) return json_string("nan");
      if (isinf(n->d)) return json_string(n->d > 0 ? "inf" : "-inf");
      return json_real(n->d);
    default: return json_stringn(n->str, n->len);
    }
  case IM_YAML_SEQ:
    j = json_array();
    for (size_t i = 0; j && i < n->n; i++) {
      json_t *c = im_yaml_to_json(n->items[i]);
      if (!c || json_array_append_new(j, c)) {
        json_decref(j);
        return NULL;
      }
    }
    return j;
  case IM_YAML_MAP:
    j = json_object();
    for (size_t i = 0; j && i < n->n; i++) {
      json_t *c = im_yaml_to_json(n->items[i]);
      if (!c || json_object_setn_new(j, n->keys[i]->str, n->keys[i]->len, c)) {
        json_decref(j);
        return NULL;
      }
    }
    return j;
  }
  return NULL;
}

/* ---- emitting ------------------------------------------------------------------ */
static int write_buf(void *data, unsigned char *buffer, size_t size) {
  return im_buf_append(data, buffer, size) == IM_OK;
}

static int emit_scalar(yaml_emitter_t *e, const char *s, size_t len, int quote) {
  yaml_event_t ev;
  if (!yaml_scalar_event_initialize(&ev, NULL, NULL, unconst(s), (int)len, !quote, 1,
                                    quote ? YAML_DOUBLE_QUOTED_SCALAR_STYLE : YAML_ANY_SCALAR_STYLE))
    return 0;
  return yaml_emitter_emit(e, &ev);
}

static int emit_json(yaml_emitter_t *e, json_t *j, int depth) {
  yaml_event_t ev;
  char num[64];
  if (depth > YAML_MAX_DEPTH) return 0;
  switch (json_typeof(j)) {
  case JSON_OBJECT: {
    if (!yaml_mapping_start_event_initialize(&ev, NULL, NULL, 1,
                                             json_object_size(j) ? YAML_BLOCK_MAPPING_STYLE : YAML_FLOW_MAPPING_STYLE) ||
        !yaml_emitter_emit(e, &ev))
      return 0;
    const char *k;
    json_t *v;
    json_object_foreach(j, k, v) {
      im_yaml_node_t probe = {.str = k, .len = strlen(k)};
      resolve_plain(&probe);
      if (!emit_scalar(e, k, probe.len, probe.type != IM_YAML_STR) || !emit_json(e, v, depth + 1)) return 0;
    }
    return yaml_mapping_end_event_initialize(&ev) && yaml_emitter_emit(e, &ev);
  }
  case JSON_ARRAY: {
    if (!yaml_sequence_start_event_initialize(&ev, NULL, NULL, 1,
                                              json_array_size(j) ? YAML_BLOCK_SEQUENCE_STYLE : YAML_FLOW_SEQUENCE_STYLE) ||
        !yaml_emitter_emit(e, &ev))
      return 0;
    size_t i;
    json_t *v;
    json_array_foreach(j, i, v) if (!emit_json(e, v, depth + 1)) return 0;
    return yaml_sequence_end_event_initialize(&ev) && yaml_emitter_emit(e, &ev);
  }
  case JSON_STRING: {
    im_yaml_node_t probe = {.str = json_string_value(j), .len = json_string_length(j)};
    resolve_plain(&probe);
    return emit_scalar(e, probe.str, probe.len, probe.type != IM_YAML_STR || probe.len != strlen(probe.str));
  }
  case JSON_INTEGER:
    snprintf(num, sizeof num, "%" JSON_INTEGER_FORMAT, json_integer_value(j));
    return emit_scalar(e, num, strlen(num), 0);
  case JSON_REAL: {
    snprintf(num, sizeof num, "%.17g", json_real_value(j));
    /* shortest form that reads back the same double */
    for (int prec = 1; prec <= 17; prec++) {
      char t[64];
      snprintf(t, sizeof t, "%.*g", prec, json_real_value(j));
      if (strtod(t, NULL) == json_real_value(j)) {
        memcpy(num, t, sizeof t);
        break;
      }
    }
    if (!strpbrk(num, ".eEn")) strcat(num, ".0"); /* stays a float when read back */
    return emit_scalar(e, num, strlen(num), 0);
  }
  case JSON_TRUE: return emit_scalar(e, "true", 4, 0);
  case JSON_FALSE: return emit_scalar(e, "false", 5, 0);
  case JSON_NULL: return emit_scalar(e, "null", 4, 0);
  }
  return 0;
}

im_status_t im_yaml_emit_json(const void *json, const char *comment, im_buf_t *b) {
  if (!json) return im_error(IM_ERR_ARG, "im_yaml_emit_json: no document");
  if (comment) {
    const char *p = comment;
    while (*p) {
      const char *nl = strchr(p, '\n');
      size_t l = nl ? (size_t)(nl - p) : strlen(p);
      if (im_buf_printf(b, "# %.*s\n", (int)l, p)) return IM_ERR_NOMEM;
      p += l + (nl != NULL);
    }
  }
  yaml_emitter_t e;
  yaml_event_t ev;
  if (!yaml_emitter_initialize(&e)) return IM_ERR_NOMEM;
  yaml_emitter_set_output(&e, write_buf, b);
  yaml_emitter_set_unicode(&e, 1);
  yaml_emitter_set_width(&e, -1);
  yaml_emitter_set_indent(&e, 2);
  int ok = yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING) && yaml_emitter_emit(&e, &ev) &&
           yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, 1) && yaml_emitter_emit(&e, &ev) &&
           emit_json(&e, unconst(json), 0) && yaml_document_end_event_initialize(&ev, 1) && yaml_emitter_emit(&e, &ev) &&
           yaml_stream_end_event_initialize(&ev) && yaml_emitter_emit(&e, &ev) && yaml_emitter_flush(&e);
  im_status_t st = ok ? IM_OK
                      : im_error(IM_ERR_INTERNAL, "writing YAML: %s",
                                 e.problem ? e.problem : "a value cannot be written (too deep or not UTF-8)");
  yaml_emitter_delete(&e);
  return st;
}
