/* Shared CLI helpers: error lines and option value parsing. */
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "cli.h"
#include "imops/core.h"

int cli_usage_error(const char *cmd, const char *fmt, ...) {
  va_list ap;
  fprintf(stderr, "imops %s: ", cmd);
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fprintf(stderr, " (see 'imops %s --help')\n", cmd);
  return CLI_USAGE;
}

int cli_fail(const char *cmd, im_status_t st, const char *what) {
  const char *detail = im_last_error();
  if (detail && *detail)
    fprintf(stderr, "imops %s: %s: %s\n", cmd, what, detail);
  else
    fprintf(stderr, "imops %s: %s: %s\n", cmd, what, im_strerror(st));
  return CLI_FAIL;
}

int cli_parse_i64(const char *cmd, const char *opt, const char *s, int64_t lo, int64_t hi, int64_t *out) {
  char *end;
  errno = 0;
  long long v = strtoll(s, &end, 10);
  if (errno || end == s || *end || v < lo || v > hi) {
    cli_usage_error(cmd, "%s takes a whole number from %lld to %lld, not '%s'", opt, (long long)lo, (long long)hi, s);
    return -1;
  }
  *out = v;
  return 0;
}

int cli_parse_u64(const char *cmd, const char *opt, const char *s, uint64_t *out) {
  char *end;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno || end == s || *end || *s == '-') {
    cli_usage_error(cmd, "%s takes a non-negative whole number, not '%s'", opt, s);
    return -1;
  }
  *out = v;
  return 0;
}

int cli_parse_double(const char *cmd, const char *opt, const char *s, double *out) {
  char *end;
  errno = 0;
  double v = strtod(s, &end);
  if (errno || end == s || *end || !isfinite(v)) {
    cli_usage_error(cmd, "%s takes a number, not '%s'", opt, s);
    return -1;
  }
  *out = v;
  return 0;
}

const char *cli_fmt_time(int64_t ms, char *buf, size_t n) {
  if (ms <= 0 || ms == INT64_MIN) {
    snprintf(buf, n, "%s", "");
    return buf;
  }
  time_t t = (time_t)(ms / 1000);
  struct tm tm;
  localtime_r(&t, &tm);
  strftime(buf, n, "%Y-%m-%d %H:%M:%S", &tm);
  return buf;
}
