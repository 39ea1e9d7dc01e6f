/* A growable byte buffer, always NUL-terminated after its contents. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "imops/core.h"

static im_status_t reserve(im_buf_t *b, size_t extra) {
  if (b->len + extra + 1 <= b->cap) return IM_OK;
  size_t cap = b->cap ? b->cap : 64;
  while (cap < b->len + extra + 1) {
    if (cap > SIZE_MAX / 2) return im_error(IM_ERR_NOMEM, "buffer too large");
    cap *= 2;
  }
  char *d = im_realloc(b->data, cap);
  if (!d) return im_error(IM_ERR_NOMEM, "out of memory growing a buffer to %zu bytes", cap);
  b->data = d;
  b->cap = cap;
  return IM_OK;
}

im_status_t im_buf_append(im_buf_t *b, const void *data, size_t len) {
  im_status_t st = reserve(b, len);
  if (st) return st;
  if (len) memcpy(b->data + b->len, data, len);
  b->len += len;
  b->data[b->len] = '\0';
  return IM_OK;
}

im_status_t im_buf_printf(im_buf_t *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0) return im_error(IM_ERR_ARG, "bad format string");
  im_status_t st = reserve(b, (size_t)n);
  if (st) return st;
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
  return IM_OK;
}

void im_buf_free(im_buf_t *b) {
  im_free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}
