/* Small helpers of the store: ids (uuid4 hex, decimal experiment ids), MLflow's
 * key and value validation, LIKE matching, run status names, page tokens. */
#include <ctype.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <unistd.h>

#include "track/track_impl.h"

int64_t im__trk_now(void) { return im_time_wall_ms(); }

void im__trk_uuid_hex(char out[33]) {
  uint8_t b[16];
  size_t got = 0;
  while (got < sizeof b) {
    ssize_t n = getrandom(b + got, sizeof b - got, 0);
    if (n <= 0) break;
    got += (size_t)n;
  }
  if (got < sizeof b) { /* no OS randomness: fall back to time, pid and a counter */
    static uint64_t ctr;
    im_rng_t r;
    im_rng_seed(&r, (uint64_t)im_time_wall_ms() ^ ((uint64_t)getpid() << 32) ^ (uint64_t)(im_time_now() * 1e9) ^ ++ctr);
    for (size_t i = 0; i < sizeof b; i++) b[i] = (uint8_t)im_rng_next(&r);
  }
  b[6] = (uint8_t)((b[6] & 0x0f) | 0x40);
  b[8] = (uint8_t)((b[8] & 0x3f) | 0x80);
  static const char hex[] = "0123456789abcdef";
  for (int i = 0; i < 16; i++) {
    out[2 * i] = hex[b[i] >> 4];
    out[2 * i + 1] = hex[b[i] & 15];
  }
  out[32] = '\0';
}

int64_t im__trk_parse_id(const char *s) {
  if (!s || !*s || strlen(s) > 18) return -1;
  int64_t v = 0;
  for (const char *p = s; *p; p++) {
    if (*p < '0' || *p > '9') return -1;
    v = v * 10 + (*p - '0');
  }
  if (s[0] == '0' && s[1]) return -1; /* "007" is not an id */
  return v;
}

size_t im__trk_utf8_len(const char *s) {
  size_t n = 0;
  for (const unsigned char *p = (const unsigned char *)s; *p; p++)
    if ((*p & 0xc0) != 0x80) n++;
  return n;
}

im_status_t im__trk_check_key(im_track_store_t *s, const char *what, const char *key) {
  if (!key || !*key) return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "%s name must not be empty", what);
  size_t n = strlen(key);
  if (n > IM_TRACK_MAX_KEY_LEN)
    return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "%s name '%.40s...' is %zu characters long; the limit is %d",
                        what, key, n, IM_TRACK_MAX_KEY_LEN);
  for (const char *p = key; *p; p++) {
    unsigned char c = (unsigned char)*p;
    if (!(isalnum(c) || c == '_' || c == '-' || c == '.' || c == ' ' || c == '/'))
      return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID,
                          "invalid %s name '%s': names may only contain alphanumerics, underscores (_), dashes (-), "
                          "periods (.), spaces ( ), and slashes (/)",
                          what, key);
  }
  /* It must not normalise to another path: no leading or trailing '/', no
   * "//", no "." or ".." segment. */
  int bad = key[0] == '/' || key[n - 1] == '/' || strstr(key, "//") != NULL;
  for (const char *seg = key; !bad && seg;) {
    const char *end = strchr(seg, '/');
    size_t len = end ? (size_t)(end - seg) : strlen(seg);
    if ((len == 1 && seg[0] == '.') || (len == 2 && seg[0] == '.' && seg[1] == '.')) bad = 1;
    seg = end ? end + 1 : NULL;
  }
  if (bad)
    return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID,
                        "invalid %s name '%s': it must be a normalized relative path (no leading or trailing '/', "
                        "no '//', '.' or '..' parts)",
                        what, key);
  return IM_OK;
}

im_status_t im__trk_check_value(im_track_store_t *s, const char *what, const char *key, const char *value, size_t max) {
  if (!value) return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "%s '%s' has no value", what, key);
  size_t n = im__trk_utf8_len(value);
  if (n > max)
    return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "%s '%s' has a value of %zu characters; the limit is %zu", what,
                        key, n, max);
  return IM_OK;
}

char *im__trk_join_uri(const char *base, const char *tail) {
  size_t n = strlen(base);
  while (n > 0 && base[n - 1] == '/' && !(n >= 2 && base[n - 2] == ':')) n--;
  int slash = !(n > 0 && base[n - 1] == '/');
  size_t len = n + (size_t)slash + strlen(tail) + 1;
  char *out = im_malloc(len);
  if (!out) return NULL;
  memcpy(out, base, n);
  if (slash) out[n] = '/';
  strcpy(out + n + (size_t)slash, tail);
  return out;
}

/* LIKE: '%' matches any run, '_' one UTF-8 character. Iterative with one
 * backtrack point, so patterns like "%a%a%a%b" stay linear-ish. */
static int fold(int c, int ci) { return ci && c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c; }

static const char *next_char(const char *p) {
  p++;
  while ((*p & 0xc0) == 0x80) p++;
  return p;
}

int im__trk_like(const char *pat, const char *txt, int ci) {
  const char *p = pat, *t = txt, *star_p = NULL, *star_t = NULL;
  while (*t) {
    if (*p == '%') {
      while (*p == '%') p++;
      if (!*p) return 1;
      star_p = p;
      star_t = t;
    } else if (*p == '_') {
      p++;
      t = next_char(t);
    } else if (*p && fold((unsigned char)*p, ci) == fold((unsigned char)*t, ci)) {
      p++;
      t++;
    } else if (star_p) {
      p = star_p;
      t = star_t = next_char(star_t);
    } else {
      return 0;
    }
  }
  while (*p == '%') p++;
  return *p == '\0';
}

static const char *const run_status_names[] = {NULL, "RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"};

const char *im_track_run_status_name(int status) {
  return status >= 1 && status <= 5 ? run_status_names[status] : NULL;
}

int im_track_run_status_parse(const char *s) {
  if (!s) return 0;
  if (s[0] >= '1' && s[0] <= '5' && !s[1]) return s[0] - '0';
  for (int i = 1; i <= 5; i++)
    if (!strcasecmp(s, run_status_names[i])) return i;
  return 0;
}

/* ---- page tokens: base64 of {"offset": N}, as MLflow's own ------------------ */
static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

char *im__trk_page_token(int64_t offset) {
  char json[64];
  int n = snprintf(json, sizeof json, "{\"offset\": %" PRId64 "}", offset);
  char *out = im_malloc((size_t)(n + 2) / 3 * 4 + 1);
  if (!out) return NULL;
  char *o = out;
  for (int i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)(unsigned char)json[i] << 16;
    if (i + 1 < n) v |= (uint32_t)(unsigned char)json[i + 1] << 8;
    if (i + 2 < n) v |= (unsigned char)json[i + 2];
    *o++ = b64[(v >> 18) & 63];
    *o++ = b64[(v >> 12) & 63];
    *o++ = i + 1 < n ? b64[(v >> 6) & 63] : '=';
    *o++ = i + 2 < n ? b64[v & 63] : '=';
  }
  *o = '\0';
  return out;
}

static int b64val(char c) {
  const char *p = c ? strchr(b64, c) : NULL;
  if (p) return (int)(p - b64);
  if (c == '-') return 62; /* url-safe alphabet too */
  if (c == '_') return 63;
  return -1;
}

im_status_t im__trk_parse_page_token(im_track_store_t *s, const char *tok, int64_t *offset) {
  *offset = 0;
  if (!tok || !*tok) return IM_OK;
  char json[96];
  size_t n = strlen(tok), o = 0;
  if (n > 120) goto bad;
  uint32_t acc = 0;
  int bits = 0;
  for (size_t i = 0; i < n; i++) {
    if (tok[i] == '=') break;
    int v = b64val(tok[i]);
    if (v < 0) goto bad;
    acc = (acc << 6) | (uint32_t)v;
    bits += 6;
    if (bits >= 8) {
      bits -= 8;
      if (o + 1 >= sizeof json) goto bad;
      json[o++] = (char)((acc >> bits) & 0xff);
    }
  }
  json[o] = '\0';
  if (strlen(json) != o) goto bad;
  const char *p = strstr(json, "\"offset\"");
  if (!p) goto bad;
  p += 8;
  while (*p == ' ') p++;
  if (*p++ != ':') goto bad;
  while (*p == ' ') p++;
  int64_t v = 0;
  int digits = 0;
  while (*p >= '0' && *p <= '9' && digits < 15) {
    v = v * 10 + (*p++ - '0');
    digits++;
  }
  while (*p == ' ') p++;
  if (!digits || *p != '}') goto bad;
  *offset = v;
  return IM_OK;
bad:
  return im__trk_fail(s, IM_ERR_ARG, IM__TRK_INVALID, "invalid page token '%.60s'", tok);
}

im_status_t im__trk_collect_page(im_track_store_t *s, sqlite3_stmt *st, int64_t limit, int64_t offset,
                                 size_t item_size, im__trk_fill_fn fill, void **items, int64_t *n, char **next_token) {
  im_status_t r = IM_OK;
  int64_t cap = 0;
  int row = 0;
  while ((r = im__trk_step(s, st, &row)) == IM_OK && row) {
    if (*n == limit) {
      if (!(*next_token = im__trk_page_token(offset + limit))) r = IM__TRK_NOMEM(s);
      break;
    }
    if (*n == cap) {
      int64_t nc = cap ? cap * 2 : 16;
      char *ni = im_realloc(*items, (size_t)nc * item_size);
      if (!ni) return IM__TRK_NOMEM(s);
      *items = ni;
      cap = nc;
    }
    void *item = (char *)*items + (size_t)(*n)++ * item_size;
    memset(item, 0, item_size);
    if ((r = fill(s, st, item)) != IM_OK) break;
  }
  return r;
}
