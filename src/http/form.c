/* Parsers of outside input for forms: multipart/form-data (RFC 7578 over the
 * RFC 2046 delimiter rules), application/x-www-form-urlencoded and query
 * strings, plus percent-encoding. The multipart parser works on the whole
 * buffered body and is strict: a delimiter is "\r\n--boundary" followed by
 * "--" or optional blanks and CRLF, anything else is data; every part needs a
 * Content-Disposition: form-data with a name; a body must end with the close
 * delimiter. Part data points into the body (no copy). Fuzzed by
 * tests/fuzz/fuzz_http_multipart.c. */
#include <string.h>

#include "http_impl.h"

#define FORM_MAX_PARTS_DEFAULT 256
#define QUERY_MAX_PARTS_DEFAULT 1024
#define PART_HEADER_BYTES_DEFAULT (16 << 10)
#define BOUNDARY_MAX 70

/* A field plus the storage it owns; pub comes first so &parts[i].pub is the public view. */
typedef struct {
  im_http_part_t pub;
  char *name, *filename, *content_type;
  uint8_t *data; /* owned decoded value (urlencoded), NULL for multipart */
} part_t;

struct im_http_form {
  part_t *parts;
  size_t n, cap;
};

/* ---- small helpers ------------------------------------------------------ */

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

size_t im__http_pct_decode(char *dst, const char *src, size_t len, int plus_space) {
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    char c = src[i];
    if (c == '%' && i + 2 < len) {
      int h = hexval((unsigned char)src[i + 1]), l = hexval((unsigned char)src[i + 2]);
      if (h >= 0 && l >= 0) {
        dst[o++] = (char)(h * 16 + l);
        i += 2;
        continue;
      }
    }
    dst[o++] = (plus_space && c == '+') ? ' ' : c;
  }
  dst[o] = '\0';
  return o;
}

static int lower(int c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

static int ieq_n(const char *a, const char *b, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (lower((unsigned char)a[i]) != lower((unsigned char)b[i])) return 0;
  return 1;
}

int im__http_ieq(const char *a, size_t alen, const char *b) {
  size_t i = 0;
  for (; i < alen && b[i]; i++)
    if (lower((unsigned char)a[i]) != lower((unsigned char)b[i])) return 0;
  return i == alen && b[i] == '\0';
}

/* RFC 7230 tchar */
static int is_tchar(int c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return 1;
  return c && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

/* Control characters other than HT are not allowed in header lines. */
static int is_ctl(int c) { return (c < 0x20 && c != '\t') || c == 0x7f; }

static int is_ows(int c) { return c == ' ' || c == '\t'; }

/* RFC 2046 bchars: DIGIT / ALPHA / "'()+_,-./:=? " */
static int is_bchar(int c) {
  if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')) return 1;
  return c && strchr("'()+_,-./:=? ", c) != NULL;
}

static const uint8_t *find(const uint8_t *hay, size_t n, const void *needle, size_t m) {
  if (m == 0 || n < m) return NULL;
  return memmem(hay, n, needle, m);
}

/* ---- the form container ---------------------------------------------------- */

static im_http_form_t *form_new(void) {
  im_http_form_t *f = im_calloc(1, sizeof *f);
  if (!f) im_error(IM_ERR_NOMEM, "out of memory parsing a form");
  return f;
}

void im_http_form_free(im_http_form_t *f) {
  if (!f) return;
  for (size_t i = 0; i < f->n; i++) {
    im_free(f->parts[i].name);
    im_free(f->parts[i].filename);
    im_free(f->parts[i].content_type);
    im_free(f->parts[i].data);
  }
  im_free(f->parts);
  im_free(f);
}

/* Appends an empty part (all NULL); NULL on out of memory. */
static part_t *form_add(im_http_form_t *f) {
  if (f->n == f->cap) {
    size_t cap = f->cap ? f->cap * 2 : 8;
    part_t *p = im_realloc(f->parts, cap * sizeof *p);
    if (!p) {
      im_error(IM_ERR_NOMEM, "out of memory parsing a form");
      return NULL;
    }
    f->parts = p;
    f->cap = cap;
  }
  part_t *p = &f->parts[f->n++];
  memset(p, 0, sizeof *p);
  return p;
}

size_t im_http_form_size(const im_http_form_t *f) { return f ? f->n : 0; }

const im_http_part_t *im_http_form_at(const im_http_form_t *f, size_t i) {
  return (f && i < f->n) ? &f->parts[i].pub : NULL;
}

/* "name", "name[]" or "name[<digits>]" */
static int name_matches(const char *field, const char *want) {
  size_t n = strlen(want);
  if (strncmp(field, want, n) != 0) return 0;
  const char *r = field + n;
  if (*r == '\0') return 1;
  if (*r != '[') return 0;
  r++;
  while (*r >= '0' && *r <= '9') r++;
  return r[0] == ']' && r[1] == '\0';
}

const im_http_part_t *im_http_form_find(const im_http_form_t *f, const char *name, size_t nth) {
  if (!f || !name) return NULL;
  for (size_t i = 0; i < f->n; i++)
    if (name_matches(f->parts[i].pub.name, name) && nth-- == 0) return &f->parts[i].pub;
  return NULL;
}

size_t im_http_form_count(const im_http_form_t *f, const char *name) {
  size_t c = 0;
  if (!f || !name) return 0;
  for (size_t i = 0; i < f->n; i++)
    if (name_matches(f->parts[i].pub.name, name)) c++;
  return c;
}

/* ---- urlencoded --------------------------------------------------------------- */

static im_status_t parse_urlencoded(const char *s, size_t len, size_t max_parts, size_t max_part_bytes,
                                    const char *what, im_http_form_t **out) {
  *out = NULL;
  im_http_form_t *f = form_new();
  if (!f) return IM_ERR_NOMEM;
  size_t i = 0;
  while (i < len) {
    const char *amp = memchr(s + i, '&', len - i);
    size_t end = amp ? (size_t)(amp - s) : len;
    if (end > i) {
      if (f->n >= max_parts) {
        im_http_form_free(f);
        return im_error(IM_ERR_LIMIT, "%s has more than %zu fields", what, max_parts);
      }
      const char *eq = memchr(s + i, '=', end - i);
      size_t klen = eq ? (size_t)(eq - (s + i)) : end - i;
      const char *v = eq ? eq + 1 : s + end;
      size_t vlen = (size_t)(s + end - v);
      part_t *p = form_add(f);
      if (!p) {
        im_http_form_free(f);
        return IM_ERR_NOMEM;
      }
      p->name = im_malloc(klen + 1);
      p->data = im_malloc(vlen + 1);
      if (!p->name || !p->data) {
        im_http_form_free(f);
        return im_error(IM_ERR_NOMEM, "out of memory parsing %s", what);
      }
      im__http_pct_decode(p->name, s + i, klen, 1);
      size_t dl = im__http_pct_decode((char *)p->data, v, vlen, 1);
      if (max_part_bytes && dl > max_part_bytes) {
        im_status_t st = im_error(IM_ERR_LIMIT, "%s field \"%s\" is %zu bytes, over the limit of %zu", what,
                                  p->name, dl, max_part_bytes);
        im_http_form_free(f);
        return st;
      }
      p->pub.name = p->name;
      p->pub.data = p->data;
      p->pub.len = dl;
    }
    i = end + 1;
  }
  *out = f;
  return IM_OK;
}

im_status_t im_http_query_parse(const char *qs, size_t len, const im_http_form_limits_t *lim, im_http_form_t **out) {
  size_t maxp = (lim && lim->max_parts) ? lim->max_parts : QUERY_MAX_PARTS_DEFAULT;
  size_t maxb = lim ? lim->max_part_bytes : 0;
  if (!qs) len = 0;
  return parse_urlencoded(qs ? qs : "", len, maxp, maxb, "query string", out);
}

/* ---- header parameters (Content-Type, Content-Disposition) -------------------- */

typedef struct {
  const char *name;
  size_t name_len;
  char *value; /* decoded, owned */
  size_t value_len;
} param_t;

#define MAX_PARAMS 16

static void params_free(param_t *ps, int n) {
  for (int i = 0; i < n; i++) im_free(ps[i].value);
}

/* Parses "; a=b; c=\"d\"" from s[*pos..len) after the media/disposition type.
 * Quoted strings take \" and \\ as escapes and keep any other backslash (browsers do not
 * escape backslashes in file names). Duplicate names are an error. */
static im_status_t parse_params(const char *s, size_t len, size_t pos, const char *what, param_t *ps, int *np) {
  *np = 0;
  for (;;) {
    while (pos < len && is_ows(s[pos])) pos++;
    if (pos == len) return IM_OK;
    if (s[pos] != ';') {
      params_free(ps, *np);
      return im_error(IM_ERR_FORMAT, "%s: expected ';' before \"%.*s\"", what, (int)(len - pos > 20 ? 20 : len - pos),
                      s + pos);
    }
    pos++;
    while (pos < len && is_ows(s[pos])) pos++;
    if (pos == len) return IM_OK; /* a trailing ';' is tolerated */
    size_t n0 = pos;
    while (pos < len && is_tchar((unsigned char)s[pos])) pos++;
    size_t nlen = pos - n0;
    if (nlen == 0 || pos == len || s[pos] != '=') {
      params_free(ps, *np);
      return im_error(IM_ERR_FORMAT, "%s: malformed parameter", what);
    }
    pos++;
    char *val;
    size_t vlen = 0;
    if (pos < len && s[pos] == '"') {
      pos++;
      val = im_malloc(len - pos + 1);
      if (!val) {
        params_free(ps, *np);
        return im_error(IM_ERR_NOMEM, "out of memory");
      }
      int closed = 0;
      while (pos < len) {
        char c = s[pos];
        if (c == '"') {
          closed = 1;
          pos++;
          break;
        }
        if (c == '\\' && pos + 1 < len && (s[pos + 1] == '"' || s[pos + 1] == '\\')) {
          val[vlen++] = s[pos + 1];
          pos += 2;
          continue;
        }
        val[vlen++] = c;
        pos++;
      }
      val[vlen] = '\0';
      if (!closed) {
        im_free(val);
        params_free(ps, *np);
        return im_error(IM_ERR_FORMAT, "%s: unterminated quoted string", what);
      }
    } else {
      size_t v0 = pos;
      while (pos < len && is_tchar((unsigned char)s[pos])) pos++;
      vlen = pos - v0;
      if (vlen == 0) {
        params_free(ps, *np);
        return im_error(IM_ERR_FORMAT, "%s: parameter %.*s has no value", what, (int)nlen, s + n0);
      }
      val = im_strndup(s + v0, vlen);
      if (!val) {
        params_free(ps, *np);
        return im_error(IM_ERR_NOMEM, "out of memory");
      }
    }
    for (int i = 0; i < *np; i++) {
      if (ps[i].name_len == nlen && ieq_n(ps[i].name, s + n0, nlen)) {
        im_free(val);
        params_free(ps, *np);
        return im_error(IM_ERR_FORMAT, "%s: parameter %.*s given twice", what, (int)nlen, s + n0);
      }
    }
    if (*np == MAX_PARAMS) {
      im_free(val);
      params_free(ps, *np);
      return im_error(IM_ERR_FORMAT, "%s: too many parameters", what);
    }
    ps[*np] = (param_t){s + n0, nlen, val, vlen};
    (*np)++;
  }
}

static const param_t *param_get(const param_t *ps, int n, const char *name) {
  for (int i = 0; i < n; i++)
    if (im__http_ieq(ps[i].name, ps[i].name_len, name)) return &ps[i];
  return NULL;
}

/* Length of the media type (or disposition type) token at the start of s after blanks;
 * *start gets its offset. */
static size_t type_token(const char *s, size_t len, size_t *start) {
  size_t i = 0;
  while (i < len && is_ows(s[i])) i++;
  *start = i;
  while (i < len && (is_tchar((unsigned char)s[i]) || s[i] == '/')) i++;
  return i - *start;
}

/* ---- multipart/form-data ------------------------------------------------------ */

/* The boundary parameter of a multipart Content-Type, checked against RFC 2046. */
static im_status_t get_boundary(const char *ct, size_t ctlen, size_t after_type, char *out, size_t *blen) {
  param_t ps[MAX_PARAMS];
  int np;
  im_status_t st = parse_params(ct, ctlen, after_type, "multipart Content-Type", ps, &np);
  if (st) return st;
  const param_t *b = param_get(ps, np, "boundary");
  if (!b) {
    params_free(ps, np);
    return im_error(IM_ERR_FORMAT, "multipart Content-Type has no boundary parameter");
  }
  if (b->value_len < 1 || b->value_len > BOUNDARY_MAX) {
    size_t n = b->value_len;
    params_free(ps, np);
    return im_error(IM_ERR_FORMAT, "multipart boundary is %zu characters; it must be 1 to %d", n, BOUNDARY_MAX);
  }
  for (size_t i = 0; i < b->value_len; i++) {
    if (!is_bchar((unsigned char)b->value[i]) || (i + 1 == b->value_len && b->value[i] == ' ')) {
      params_free(ps, np);
      return im_error(IM_ERR_FORMAT, "multipart boundary contains a character RFC 2046 does not allow");
    }
  }
  memcpy(out, b->value, b->value_len);
  *blen = b->value_len;
  params_free(ps, np);
  return IM_OK;
}

/* Is body[pos..] (just after "--boundary") the end of a delimiter line? Sets *close for
 * the close delimiter and *next to the first byte after the line (part headers). */
static int delimiter_tail(const uint8_t *b, size_t n, size_t pos, int *close, size_t *next) {
  if (pos + 2 <= n && b[pos] == '-' && b[pos + 1] == '-') {
    *close = 1;
    *next = pos + 2;
    return 1;
  }
  while (pos < n && is_ows(b[pos])) pos++; /* transport padding */
  if (pos + 2 <= n && b[pos] == '\r' && b[pos + 1] == '\n') {
    *close = 0;
    *next = pos + 2;
    return 1;
  }
  return 0;
}

/* Finds the next delimiter "\r\n--boundary" + valid tail at or after from. Returns the
 * offset of its "\r\n" or (size_t)-1. */
static size_t next_delimiter(const uint8_t *b, size_t n, size_t from, const char *dl, size_t dlen, int *close,
                             size_t *next) {
  while (from < n) {
    const uint8_t *hit = find(b + from, n - from, dl, dlen);
    if (!hit) return (size_t)-1;
    size_t k = (size_t)(hit - b);
    if (delimiter_tail(b, n, k + dlen, close, next)) return k;
    from = k + 1;
  }
  return (size_t)-1;
}

static char *dup_value(const param_t *p) { return im_strndup(p->value, p->value_len); }

/* filename*=UTF-8''%e2%82%ac.txt (RFC 5987): only UTF-8 and US-ASCII are accepted. */
static im_status_t ext_value(const param_t *p, char **out) {
  const char *v = p->value;
  const char *q1 = memchr(v, '\'', p->value_len);
  const char *q2 = q1 ? memchr(q1 + 1, '\'', p->value_len - (size_t)(q1 + 1 - v)) : NULL;
  if (!q1 || !q2) return im_error(IM_ERR_FORMAT, "multipart: malformed filename* parameter");
  if (!im__http_ieq(v, (size_t)(q1 - v), "utf-8") && !im__http_ieq(v, (size_t)(q1 - v), "us-ascii"))
    return im_error(IM_ERR_FORMAT, "multipart: filename* charset %.*s is not supported", (int)(q1 - v), v);
  size_t rest = p->value_len - (size_t)(q2 + 1 - v);
  char *d = im_malloc(rest + 1);
  if (!d) return im_error(IM_ERR_NOMEM, "out of memory");
  im__http_pct_decode(d, q2 + 1, rest, 0);
  *out = d;
  return IM_OK;
}

static im_status_t parse_disposition(const char *v, size_t vlen, size_t idx, part_t *p) {
  size_t t0;
  size_t tl = type_token(v, vlen, &t0);
  if (!im__http_ieq(v + t0, tl, "form-data"))
    return im_error(IM_ERR_FORMAT, "multipart part %zu: Content-Disposition is \"%.*s\", not form-data", idx,
                    (int)(tl > 40 ? 40 : tl), v + t0);
  param_t ps[MAX_PARAMS];
  int np;
  im_status_t st = parse_params(v, vlen, t0 + tl, "multipart Content-Disposition", ps, &np);
  if (st) return st;
  const param_t *nm = param_get(ps, np, "name");
  const param_t *fn = param_get(ps, np, "filename");
  const param_t *fx = param_get(ps, np, "filename*");
  if (!nm) {
    params_free(ps, np);
    return im_error(IM_ERR_FORMAT, "multipart part %zu: Content-Disposition has no name", idx);
  }
  p->name = dup_value(nm);
  if (!p->name) st = im_error(IM_ERR_NOMEM, "out of memory");
  if (!st && fx) st = ext_value(fx, &p->filename);
  if (!st && !fx && fn && !(p->filename = dup_value(fn))) st = im_error(IM_ERR_NOMEM, "out of memory");
  params_free(ps, np);
  return st;
}

/* Parses the header block b[h..hend) (lines ending in CRLF, hend just past the last
 * line's CRLF, before the empty line) into p. */
static im_status_t parse_part_headers(const uint8_t *b, size_t h, size_t hend, size_t idx, part_t *p) {
  int have_cd = 0;
  while (h < hend) {
    const uint8_t *cr = find(b + h, hend - h, "\r\n", 2);
    size_t eol = cr ? (size_t)(cr - b) : hend;
    const char *line = (const char *)b + h;
    size_t llen = eol - h;
    if ((llen && is_ows(line[0])) || (eol + 2 < hend && is_ows(b[eol + 2])))
      return im_error(IM_ERR_FORMAT, "multipart part %zu: folded header lines are not allowed", idx);
    for (size_t i = 0; i < llen; i++)
      if (is_ctl((unsigned char)line[i]))
        return im_error(IM_ERR_FORMAT, "multipart part %zu: control character in a header line", idx);
    size_t c = 0;
    while (c < llen && is_tchar((unsigned char)line[c])) c++;
    if (c == 0 || c == llen || line[c] != ':')
      return im_error(IM_ERR_FORMAT, "multipart part %zu: malformed header line \"%.*s\"", idx,
                      (int)(llen > 40 ? 40 : llen), line);
    size_t v0 = c + 1, v1 = llen;
    while (v0 < v1 && is_ows(line[v0])) v0++;
    while (v1 > v0 && is_ows(line[v1 - 1])) v1--;
    if (im__http_ieq(line, c, "content-disposition")) {
      if (have_cd) return im_error(IM_ERR_FORMAT, "multipart part %zu: two Content-Disposition headers", idx);
      have_cd = 1;
      im_status_t st = parse_disposition(line + v0, v1 - v0, idx, p);
      if (st) return st;
    } else if (im__http_ieq(line, c, "content-type")) {
      if (p->content_type) return im_error(IM_ERR_FORMAT, "multipart part %zu: two Content-Type headers", idx);
      if (!(p->content_type = im_strndup(line + v0, v1 - v0))) return im_error(IM_ERR_NOMEM, "out of memory");
    } /* other headers (Content-Transfer-Encoding, ...) are ignored, as RFC 7578 allows */
    h = eol + 2;
  }
  if (!have_cd) return im_error(IM_ERR_FORMAT, "multipart part %zu has no Content-Disposition header", idx);
  return IM_OK;
}

static im_status_t parse_multipart(const char *ct, size_t ctlen, size_t after_type, const uint8_t *b, size_t n,
                                   const im_http_form_limits_t *lim, im_http_form_t **out) {
  size_t max_parts = (lim && lim->max_parts) ? lim->max_parts : FORM_MAX_PARTS_DEFAULT;
  size_t max_part = lim ? lim->max_part_bytes : 0;
  size_t max_hdr = (lim && lim->max_header_bytes) ? lim->max_header_bytes : PART_HEADER_BYTES_DEFAULT;
  char dl[BOUNDARY_MAX + 4];
  size_t blen = 0;
  im_status_t st = get_boundary(ct, ctlen, after_type, dl + 4, &blen);
  if (st) return st;
  memcpy(dl, "\r\n--", 4);
  size_t dlen = blen + 4;

  /* The first delimiter may open the body (no CRLF before it) or follow a preamble. */
  int close = 0;
  size_t pos; /* first byte of the current part's headers */
  if (n >= dlen - 2 && memcmp(b, dl + 2, dlen - 2) == 0 && delimiter_tail(b, n, dlen - 2, &close, &pos)) {
    /* at the start */
  } else if (next_delimiter(b, n, 0, dl, dlen, &close, &pos) == (size_t)-1) {
    return im_error(IM_ERR_FORMAT, "multipart body does not contain the boundary given in Content-Type");
  }
  im_http_form_t *f = form_new();
  if (!f) return IM_ERR_NOMEM;
  while (!close) {
    size_t idx = f->n;
    if (f->n >= max_parts) {
      st = im_error(IM_ERR_LIMIT, "multipart body has more than %zu parts", max_parts);
      goto fail;
    }
    /* headers end at an empty line; a part without headers starts with CRLF */
    size_t hend, dstart;
    if (pos + 2 <= n && b[pos] == '\r' && b[pos + 1] == '\n') {
      hend = pos;
      dstart = pos + 2;
    } else {
      size_t avail = n - pos;
      size_t window = (max_hdr >= avail || avail - max_hdr <= 4) ? avail : max_hdr + 4;
      const uint8_t *e = find(b + pos, window, "\r\n\r\n", 4);
      if (!e) {
        st = (window < avail) ? im_error(IM_ERR_LIMIT, "multipart part %zu: headers over %zu bytes", idx, max_hdr)
                                : im_error(IM_ERR_FORMAT, "multipart part %zu: headers are not terminated", idx);
        goto fail;
      }
      hend = (size_t)(e - b) + 2;
      dstart = hend + 2;
    }
    part_t *p = form_add(f);
    if (!p) {
      st = IM_ERR_NOMEM;
      goto fail;
    }
    st = parse_part_headers(b, pos, hend, idx, p);
    if (st) goto fail;
    /* The search starts at the blank line's CRLF: a part may end right after its headers
     * ("...\r\n\r\n--b", no blank line, no data), which RFC 2046 allows. */
    size_t next;
    size_t k = next_delimiter(b, n, dstart - 2, dl, dlen, &close, &next);
    if (k == (size_t)-1) {
      st = im_error(IM_ERR_FORMAT, "multipart part %zu (\"%s\") is not terminated by a boundary", idx, p->name);
      goto fail;
    }
    size_t plen = k < dstart ? 0 : k - dstart;
    if (max_part && plen > max_part) {
      st = im_error(IM_ERR_LIMIT, "multipart part %zu (\"%s\") is %zu bytes, over the limit of %zu", idx, p->name,
                    plen, max_part);
      goto fail;
    }
    p->pub.name = p->name;
    p->pub.filename = p->filename;
    p->pub.content_type = p->content_type;
    p->pub.data = b + dstart;
    p->pub.len = plen;
    pos = next;
  }
  *out = f;
  return IM_OK; /* anything after the close delimiter is the epilogue, ignored */
fail:
  im_http_form_free(f);
  return st;
}

im_status_t im_http_form_parse(const char *content_type, const void *body, size_t len,
                               const im_http_form_limits_t *lim, im_http_form_t **out) {
  *out = NULL;
  if (!content_type) return im_error(IM_ERR_FORMAT, "the request has no Content-Type");
  if (!body) len = 0;
  const uint8_t *b = body ? body : (const uint8_t *)"";
  size_t ctlen = strlen(content_type), t0;
  size_t tl = type_token(content_type, ctlen, &t0);
  if (im__http_ieq(content_type + t0, tl, "multipart/form-data"))
    return parse_multipart(content_type, ctlen, t0 + tl, b, len, lim, out);
  if (im__http_ieq(content_type + t0, tl, "application/x-www-form-urlencoded")) {
    size_t maxp = (lim && lim->max_parts) ? lim->max_parts : FORM_MAX_PARTS_DEFAULT;
    return parse_urlencoded((const char *)b, len, maxp, lim ? lim->max_part_bytes : 0, "form", out);
  }
  return im_error(IM_ERR_UNSUPPORTED,
                  "Content-Type %.*s is not multipart/form-data or application/x-www-form-urlencoded",
                  (int)(tl > 60 ? 60 : tl), content_type + t0);
}

/* ---- percent-encoding ---------------------------------------------------------- */

im_status_t im_http_url_encode(im_buf_t *out, const char *s, size_t len, const char *keep) {
  static const char hex[] = "0123456789ABCDEF";
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    int plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                c == '.' || c == '_' || c == '~' || (c && keep && strchr(keep, c));
    char e[3] = {'%', hex[c >> 4], hex[c & 15]};
    im_status_t st = plain ? im_buf_append(out, &s[i], 1) : im_buf_append(out, e, 3);
    if (st) return st;
  }
  if (!out->data) return im_buf_append(out, "", 0); /* an empty string is still a string */
  return IM_OK;
}

int im_http_status_for(im_status_t st, const char **code) {
  const char *c;
  int s;
  switch (st) {
    case IM_OK: s = 200, c = "OK"; break;
    case IM_ERR_NOT_FOUND: s = 404, c = "RESOURCE_DOES_NOT_EXIST"; break;
    case IM_ERR_ARG:
    case IM_ERR_FORMAT:
    case IM_ERR_LIMIT:
    case IM_ERR_EMPTY: s = 400, c = "INVALID_PARAMETER_VALUE"; break;
    case IM_ERR_EXISTS: s = 409, c = "RESOURCE_ALREADY_EXISTS"; break;
    case IM_ERR_STATE: s = 409, c = "INVALID_STATE"; break;
    case IM_ERR_UNSUPPORTED: s = 501, c = "NOT_IMPLEMENTED"; break;
    case IM_ERR_CANCELLED: s = 503, c = "TEMPORARILY_UNAVAILABLE"; break;
    default: s = 500, c = "INTERNAL_ERROR"; break;
  }
  if (code) *code = c;
  return s;
}
