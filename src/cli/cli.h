/* The imops command-line front end: shared helpers for the command files.
 * Only cli/ prints to stdout or exits. Each command is `int cli_<name>(int argc,
 * char **argv)` returning the process exit status (CLI_OK / CLI_FAIL / CLI_USAGE),
 * with argv[0] being the command name. */
#ifndef IMOPS_CLI_H
#define IMOPS_CLI_H

#include <stdint.h>
#include <stdio.h>

#include "imops/status.h"

enum { CLI_OK = 0, CLI_FAIL = 1, CLI_USAGE = 2 };

typedef struct {
  const char *name;
  const char *summary;
  int (*run)(int argc, char **argv);
} cli_command_t;

/** Prints "imops <cmd>: <msg>" to stderr, one line, and returns CLI_USAGE. */
int cli_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/** Prints "imops <cmd>: <what>: <strerror>: <im_last_error>" and returns CLI_FAIL. */
int cli_fail(const char *cmd, im_status_t st, const char *what);

/** Parsers for option values; return 0 on success, -1 (after printing a usage error) otherwise. */
int cli_parse_i64(const char *cmd, const char *opt, const char *s, int64_t lo, int64_t hi, int64_t *out);
int cli_parse_u64(const char *cmd, const char *opt, const char *s, uint64_t *out);
int cli_parse_double(const char *cmd, const char *opt, const char *s, double *out);

/* ---- progress bar ------------------------------------------------------------
 * tqdm-like on a terminal: "desc:  42%|████▏     | 420/1000 [00:03<00:04, 131.20it/s]".
 * When stderr is not a terminal: a plain line at most every few seconds and at the end. */
typedef struct cli_progress cli_progress_t;
cli_progress_t *cli_progress_new(const char *desc, int64_t total);
void cli_progress_set_desc(cli_progress_t *p, const char *desc);
void cli_progress_update(cli_progress_t *p, int64_t done);
void cli_progress_set_total(cli_progress_t *p, int64_t total);
/** Final draw (with a newline) and free. NULL is a no-op. */
void cli_progress_finish(cli_progress_t *p);
/** An im_progress_fn that drives a progress bar per stage (user: cli_progress_t **). */
void cli_progress_cb(void *user, const char *stage, int64_t done, int64_t total);

/* ---- tables ------------------------------------------------------------------ */
typedef struct cli_table cli_table_t;
cli_table_t *cli_table_new(int ncols, const char *const *headers);
/** Adds a row of ncols cells (copied; NULL prints as empty). 0 on success. */
int cli_table_row(cli_table_t *t, const char *const *cells);
/** Prints the table; cells wider than max_width are cut. */
void cli_table_print(cli_table_t *t, int max_width);
void cli_table_free(cli_table_t *t);

/** Formats epoch milliseconds as local "YYYY-MM-DD HH:MM:SS" ("" for unset). */
const char *cli_fmt_time(int64_t ms, char *buf, size_t n);

/* Commands. */
int cli_version(int argc, char **argv);
int cli_datagen(int argc, char **argv);
int cli_dataset(int argc, char **argv);
int cli_preprocess(int argc, char **argv);
int cli_train(int argc, char **argv);
int cli_test(int argc, char **argv);
int cli_predict(int argc, char **argv);
int cli_experiments(int argc, char **argv);
int cli_runs(int argc, char **argv);
int cli_models(int argc, char **argv);
int cli_server(int argc, char **argv);
int cli_sweep(int argc, char **argv);
/** imops train --params-from-sweep ID: sets *opts (an im_train_opts_t *) from the
 * sweep's best trial and prints which parameters were taken; 0, or an exit status. */
int cli_sweep_train_params(const char *cmd, int argc, char **argv, void *opts);
int cli_artifacts(int argc, char **argv);
int cli_pipeline(int argc, char **argv);
int cli_serve(int argc, char **argv);
int cli_export(int argc, char **argv);

#endif
