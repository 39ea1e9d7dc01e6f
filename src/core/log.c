/* The logging callback: the library never prints; it hands messages here. */
#include <stdarg.h>
#include <stdio.h>

#include "imops/core.h"

static im_log_fn log_fn;
static void *log_user;
static im_log_level_t log_min = IM_LOG_INFO;

void im_log_set(im_log_fn fn, void *user, im_log_level_t min_level) {
  log_fn = fn;
  log_user = user;
  log_min = min_level;
}

void im_log(im_log_level_t level, const char *fmt, ...) {
  if (!log_fn || level < log_min) return;
  char msg[1024];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  log_fn(level, msg, log_user);
}
