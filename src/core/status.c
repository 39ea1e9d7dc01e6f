/* Status codes: names, messages, and the per-thread detailed last error. */
#include <stdarg.h>
#include <stdio.h>

#include "imops/core.h"
#include "imops/version.h"

static _Thread_local char last_error[1024];

const char *im_status_name(im_status_t st) {
  switch (st) {
#define IM__STATUS_NAME(name, code, msg) \
  case IM_##name:                        \
    return "IM_" #name;
    IM_STATUS_MAP(IM__STATUS_NAME)
#undef IM__STATUS_NAME
  }
  return "IM_UNKNOWN";
}

const char *im_strerror(im_status_t st) {
  switch (st) {
#define IM__STATUS_MSG(name, code, msg) \
  case IM_##name:                       \
    return msg;
    IM_STATUS_MAP(IM__STATUS_MSG)
#undef IM__STATUS_MSG
  }
  return "unknown status";
}

const char *im_last_error(void) { return last_error; }

void im_error_clear(void) { last_error[0] = '\0'; }

im_status_t im_error(im_status_t st, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(last_error, sizeof last_error, fmt, ap);
  va_end(ap);
  return st;
}

const char *im_version(void) { return IM_VERSION_STRING; }
