/* Internal contracts of src/http shared by the server, the client and the
 * form parsers: percent-decoding and case-insensitive comparisons. */
#ifndef IMOPS_HTTP_IMPL_H
#define IMOPS_HTTP_IMPL_H

#include <stddef.h>

#include "imops/http.h"

/** Decodes src[0..len) into dst (which has room for len + 1 bytes): %XX becomes the
 * byte (an invalid escape is copied as it is), '+' becomes ' ' when plus_space.
 * NUL-terminates and returns the decoded length (embedded NULs possible). */
size_t im__http_pct_decode(char *dst, const char *src, size_t len, int plus_space);

/** 1 if a[0..alen) equals the NUL-terminated b ignoring ASCII case. */
int im__http_ieq(const char *a, size_t alen, const char *b);

#endif
