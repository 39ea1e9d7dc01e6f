/* Helpers shared by the C unit tests. */
#ifndef IMOPS_TESTUTIL_H
#define IMOPS_TESTUTIL_H
#include <stddef.h>
#include <stdint.h>

/** A fresh, empty, unique directory under $IM_TEST_TMP (or /tmp); static storage
 * is not used: the string lives until the process ends. */
const char *tu_tmpdir(void);
/** Writes bytes to a file (not atomically; tests build fixtures with it). Returns 0 on success. */
int tu_write_file(const char *path, const void *data, size_t len);
/** Joins a and b with '/' into a string that lives until the process ends. */
const char *tu_path(const char *a, const char *b);
/** Removes a directory tree (used to clean up on success). */
void tu_rmtree(const char *path);
#endif
