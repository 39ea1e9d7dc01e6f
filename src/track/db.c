/* SQLite plumbing for the store: errors recorded on the handle, transactions
 * that retry while another process holds the write lock, a cache of prepared
 * statements keyed by their static SQL text, and small bind/step helpers. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "track/track_impl.h"

/* How long a write waits for other writers before giving up (ms). Long: a
 * busy database must slow writers down, never lose their data. */
#define IM__TRK_BUSY_DEADLINE_MS 120000

const char *im_track_status_to_error_code(im_status_t st) {
  switch (st) {
    case IM_OK:
      return NULL;
    case IM_ERR_NOT_FOUND:
      return IM__TRK_NOT_FOUND;
    case IM_ERR_EXISTS:
      return IM__TRK_EXISTS;
    case IM_ERR_ARG:
    case IM_ERR_LIMIT:
    case IM_ERR_FORMAT:
    case IM_ERR_UNSUPPORTED:
      return IM__TRK_INVALID;
    case IM_ERR_STATE:
      return IM__TRK_STATE;
    default:
      return IM__TRK_INTERNAL;
  }
}

im_status_t im__trk_fail(im_track_store_t *s, im_status_t st, const char *code, const char *fmt, ...) {
  char msg[sizeof s->errmsg];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  if (s) {
    memcpy(s->errmsg, msg, sizeof msg);
    s->errcode = code ? code : im_track_status_to_error_code(st);
  }
  return im_error(st, "%s", msg);
}

im_status_t im__trk_sqlfail(im_track_store_t *s, int rc, const char *what) {
  int prim = rc & 0xff;
  im_status_t st = IM_ERR_INTERNAL;
  if (prim == SQLITE_IOERR || prim == SQLITE_FULL || prim == SQLITE_CANTOPEN || prim == SQLITE_READONLY ||
      prim == SQLITE_BUSY || prim == SQLITE_LOCKED || prim == SQLITE_PERM)
    st = IM_ERR_IO;
  else if (prim == SQLITE_NOMEM)
    st = IM_ERR_NOMEM;
  else if (prim == SQLITE_CORRUPT || prim == SQLITE_NOTADB)
    st = IM_ERR_FORMAT;
  const char *m = (s && s->db) ? sqlite3_errmsg(s->db) : sqlite3_errstr(rc);
  return im__trk_fail(s, st, IM__TRK_INTERNAL, "%s: %s (sqlite %d)", what, m, rc);
}

static int is_busy(int rc) {
  int prim = rc & 0xff;
  return prim == SQLITE_BUSY || prim == SQLITE_LOCKED;
}

static void sleep_us(long us) {
  struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
  nanosleep(&ts, NULL);
}

im_status_t im__trk_begin(im_track_store_t *s) {
  if (s->in_tx) return im__trk_fail(s, IM_ERR_INTERNAL, NULL, "nested transaction");
  int64_t t0 = im__trk_now();
  unsigned seed = (unsigned)(uintptr_t)s ^ (unsigned)t0;
  for (int attempt = 0;; attempt++) {
    int rc = sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL);
    if (rc == SQLITE_OK) {
      s->in_tx = 1;
      return IM_OK;
    }
    if (!is_busy(rc) || im__trk_now() - t0 > IM__TRK_BUSY_DEADLINE_MS)
      return im__trk_sqlfail(s, rc, "starting a write transaction");
    seed = seed * 1103515245u + 12345u;
    long cap = attempt < 10 ? 200L << (attempt / 2) : 5000L;
    sleep_us(50 + (long)(seed % (unsigned)cap));
  }
}

int im__trk_read_begin(im_track_store_t *s) {
  if (s->in_tx) return 0;
  if (sqlite3_exec(s->db, "BEGIN", NULL, NULL, NULL) != SQLITE_OK) return 0; /* reads then run one by one */
  s->in_tx = 1;
  return 1;
}

void im__trk_read_end(im_track_store_t *s, int began) {
  if (!began) return;
  if (sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
  s->in_tx = 0;
}

void im__trk_rollback(im_track_store_t *s) {
  if (!s->in_tx) return;
  sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
  s->in_tx = 0;
}

im_status_t im__trk_commit(im_track_store_t *s) {
  int64_t t0 = im__trk_now();
  for (;;) {
    int rc = sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
    if (rc == SQLITE_OK) {
      s->in_tx = 0;
      return IM_OK;
    }
    if (!is_busy(rc) || im__trk_now() - t0 > IM__TRK_BUSY_DEADLINE_MS) {
      im_status_t st = im__trk_sqlfail(s, rc, "committing");
      im__trk_rollback(s);
      return st;
    }
    sleep_us(500);
  }
}

im_status_t im__trk_end(im_track_store_t *s, im_status_t st) {
  if (st != IM_OK) {
    im__trk_rollback(s);
    return st;
  }
  return im__trk_commit(s);
}

sqlite3_stmt *im__trk_stmt(im_track_store_t *s, const char *sql) {
  for (int i = 0; i < s->ncache; i++) {
    if (s->cache[i].sql == sql) {
      sqlite3_reset(s->cache[i].st);
      sqlite3_clear_bindings(s->cache[i].st);
      return s->cache[i].st;
    }
  }
  if (s->ncache == IM__TRK_NCACHE) {
    im__trk_fail(s, IM_ERR_INTERNAL, NULL, "statement cache full");
    return NULL;
  }
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &st, NULL);
  if (rc != SQLITE_OK) {
    im__trk_sqlfail(s, rc, "preparing a statement");
    return NULL;
  }
  s->cache[s->ncache].sql = sql;
  s->cache[s->ncache].st = st;
  s->ncache++;
  return st;
}

static im_status_t bind_va(im_track_store_t *s, sqlite3_stmt *st, int first, const char *fmt, va_list ap) {
  int idx = first;
  for (const char *f = fmt; f && *f; f++, idx++) {
    int rc;
    switch (*f) {
      case 's': {
        const char *v = va_arg(ap, const char *);
        rc = v ? sqlite3_bind_text(st, idx, v, -1, SQLITE_TRANSIENT) : sqlite3_bind_null(st, idx);
        break;
      }
      case 'i':
        rc = sqlite3_bind_int64(st, idx, va_arg(ap, int64_t));
        break;
      case 'd':
        rc = sqlite3_bind_double(st, idx, va_arg(ap, double));
        break;
      case 'n':
        rc = sqlite3_bind_null(st, idx);
        break;
      default:
        return im__trk_fail(s, IM_ERR_INTERNAL, NULL, "bad bind format '%c'", *f);
    }
    if (rc != SQLITE_OK) return im__trk_sqlfail(s, rc, "binding a value");
  }
  return IM_OK;
}

im_status_t im__trk_bindv(im_track_store_t *s, sqlite3_stmt *st, int first, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  im_status_t r = bind_va(s, st, first, fmt, ap);
  va_end(ap);
  return r;
}

im_status_t im__trk_step(im_track_store_t *s, sqlite3_stmt *st, int *row) {
  int64_t t0 = 0;
  for (;;) {
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
      *row = 1;
      return IM_OK;
    }
    if (rc == SQLITE_DONE) {
      *row = 0;
      return IM_OK;
    }
    /* Outside a transaction a read may meet a busy database (WAL recovery,
     * checkpoint); inside one we hold the write lock, so busy is an error. */
    if (is_busy(rc) && !s->in_tx) {
      if (!t0) t0 = im__trk_now();
      if (im__trk_now() - t0 <= IM__TRK_BUSY_DEADLINE_MS) {
        sqlite3_reset(st);
        sleep_us(1000);
        continue;
      }
    }
    *row = 0;
    return im__trk_sqlfail(s, rc, "running a statement");
  }
}

void im__trk_reset(sqlite3_stmt *st) {
  if (!st) return;
  sqlite3_reset(st);
  sqlite3_clear_bindings(st);
}

im_status_t im__trk_exec(im_track_store_t *s, const char *sql, int *changes, const char *fmt, ...) {
  sqlite3_stmt *st = im__trk_stmt(s, sql);
  if (!st) return IM_ERR_INTERNAL;
  va_list ap;
  va_start(ap, fmt);
  im_status_t r = bind_va(s, st, 1, fmt, ap);
  va_end(ap);
  int row = 0;
  if (r == IM_OK) r = im__trk_step(s, st, &row);
  while (r == IM_OK && row) r = im__trk_step(s, st, &row);
  if (r == IM_OK && changes) *changes = sqlite3_changes(s->db);
  im__trk_reset(st);
  return r;
}

im_status_t im__trk_query_i64(im_track_store_t *s, const char *sql, int *found, int64_t *out, const char *fmt, ...) {
  sqlite3_stmt *st = im__trk_stmt(s, sql);
  if (!st) return IM_ERR_INTERNAL;
  va_list ap;
  va_start(ap, fmt);
  im_status_t r = bind_va(s, st, 1, fmt, ap);
  va_end(ap);
  int row = 0;
  if (r == IM_OK) r = im__trk_step(s, st, &row);
  *found = r == IM_OK && row;
  if (*found && out) *out = sqlite3_column_int64(st, 0);
  im__trk_reset(st);
  return r;
}

im_status_t im__trk_query_str(im_track_store_t *s, const char *sql, int *found, char **out, const char *fmt, ...) {
  sqlite3_stmt *st = im__trk_stmt(s, sql);
  if (!st) return IM_ERR_INTERNAL;
  va_list ap;
  va_start(ap, fmt);
  im_status_t r = bind_va(s, st, 1, fmt, ap);
  va_end(ap);
  int row = 0;
  if (r == IM_OK) r = im__trk_step(s, st, &row);
  *found = r == IM_OK && row;
  if (*found && out) {
    int oom = 0;
    *out = im__trk_col_dup(st, 0, &oom);
    if (oom) r = IM__TRK_NOMEM(s);
  }
  im__trk_reset(st);
  return r;
}

char *im__trk_col_dup(sqlite3_stmt *st, int col, int *oom) {
  const unsigned char *t = sqlite3_column_text(st, col);
  if (!t) return NULL;
  int n = sqlite3_column_bytes(st, col);
  char *p = im_strndup((const char *)t, (size_t)n);
  if (!p) *oom = 1;
  return p;
}

char *im__trk_col_dup0(sqlite3_stmt *st, int col, int *oom) {
  char *p = im__trk_col_dup(st, col, oom);
  if (!p && !*oom) {
    p = im_strdup("");
    if (!p) *oom = 1;
  }
  return p;
}

int64_t im__trk_col_time(sqlite3_stmt *st, int col) {
  return sqlite3_column_type(st, col) == SQLITE_NULL ? IM_TRACK_NO_TIME : sqlite3_column_int64(st, col);
}

void im__trk_tags_free(im_track_tag_t *t, int n) {
  if (!t) return;
  for (int i = 0; i < n; i++) {
    im_free(t[i].key);
    im_free(t[i].value);
  }
  im_free(t);
}

im_status_t im__trk_load_tags(im_track_store_t *s, sqlite3_stmt *st, im_track_tag_t **out, int *n) {
  im_track_tag_t *v = NULL;
  int cnt = 0, cap = 0, row = 0, oom = 0;
  im_status_t r;
  while ((r = im__trk_step(s, st, &row)) == IM_OK && row) {
    if (cnt == cap) {
      int nc = cap ? cap * 2 : 8;
      im_track_tag_t *nv = im_realloc(v, (size_t)nc * sizeof *nv);
      if (!nv) {
        oom = 1;
        break;
      }
      v = nv;
      cap = nc;
    }
    v[cnt].key = im__trk_col_dup0(st, 0, &oom);
    v[cnt].value = im__trk_col_dup0(st, 1, &oom);
    cnt++;
    if (oom) break;
  }
  im__trk_reset(st);
  if (r == IM_OK && oom) r = IM__TRK_NOMEM(s);
  if (r != IM_OK) {
    im__trk_tags_free(v, cnt);
    return r;
  }
  *out = v;
  *n = cnt;
  return IM_OK;
}
