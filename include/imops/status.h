/* One status enum for the whole library: 0 is success, negatives are errors.
 * Append-only: never renumber a code. The X-macro keeps the enum, the names
 * and the messages from drifting apart. */
#ifndef IMOPS_STATUS_H
#define IMOPS_STATUS_H

#ifdef __cplusplus
extern "C" {
#endif

#define IM_STATUS_MAP(XX)                                                        \
  XX(OK, 0, "success")                                                           \
  XX(ERR_NOMEM, -1, "out of memory")                                             \
  XX(ERR_ARG, -2, "invalid argument")                                            \
  XX(ERR_IO, -3, "input/output error")                                           \
  XX(ERR_NOT_FOUND, -4, "not found")                                             \
  XX(ERR_FORMAT, -5, "malformed or unsupported data")                            \
  XX(ERR_LIMIT, -6, "limit exceeded")                                            \
  XX(ERR_UNSUPPORTED, -7, "unsupported")                                         \
  XX(ERR_EXISTS, -8, "already exists")                                           \
  XX(ERR_EMPTY, -9, "nothing usable")                                            \
  XX(ERR_STATE, -10, "invalid state")                                            \
  XX(ERR_CANCELLED, -11, "cancelled")                                            \
  XX(ERR_INTERNAL, -12, "internal error")

typedef enum {
#define IM__STATUS_ENUM(name, code, msg) IM_##name = code,
  IM_STATUS_MAP(IM__STATUS_ENUM)
#undef IM__STATUS_ENUM
} im_status_t;

/** The code's symbolic name, e.g. "IM_ERR_IO"; static storage. */
const char *im_status_name(im_status_t st);
/** A short message for the code, e.g. "input/output error"; static storage. */
const char *im_strerror(im_status_t st);

/** The detailed text of the last error set on this thread (never NULL; "" when
 * none). Library calls that fail set it; it stays until the next failure. */
const char *im_last_error(void);

#ifdef __cplusplus
}
#endif
#endif
