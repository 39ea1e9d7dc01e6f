/* imops artifacts: run artifacts and artifact stores from the shell, like
 * `mlflow artifacts`: log a file or directory to a run (embedded store or a
 * tracking server), list and upload to an artifact URI (a directory or
 * s3://bucket/prefix), and download any model or artifact URI. */
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "imops/core.h"
#include "imops/track.h"

static const char usage[] =
    "usage: imops artifacts log RUN_ID LOCAL_PATH [--artifact-path P] [--tracking-uri U]\n"
    "       imops artifacts upload LOCAL_PATH URI\n"
    "       imops artifacts list URI [--recursive] [--json]\n"
    "       imops artifacts download URI [--tracking-uri U] [--json]\n"
    "\n"
    "log       a file or directory into a run's artifacts (wherever its artifact URI points:\n"
    "          the workspace, S3, or a tracking server's mlflow-artifacts proxy)\n"
    "upload    a file (to URI itself) or a directory (below URI) into an artifact store:\n"
    "          a directory, file://... or s3://bucket/prefix\n"
    "list      the entries below URI (a directory or s3://...)\n"
    "download  a model or artifact URI (runs:/, models:/, s3://, a path) into the local cache;\n"
    "          prints the local path\n"
    "\n"
    "S3: endpoint MLFLOW_S3_ENDPOINT_URL, credentials AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY\n"
    "(AWS_SESSION_TOKEN, AWS_DEFAULT_REGION). Tracking server: --tracking-uri or MLFLOW_TRACKING_URI.\n";

static void print_json(json_t *j) {
  char *s = j ? json_dumps(j, JSON_INDENT(2)) : NULL;
  if (s) puts(s);
  free(s);
  json_decref(j);
}

/* The store of uri's parent and the last name, for uploading a single file to uri. */
static im_status_t split_file_uri(const char *uri, char **root, const char **name) {
  const char *slash = strrchr(uri, '/');
  if (!slash || !slash[1] || (!strncmp(uri, "s3://", 5) && slash < uri + 5 + strcspn(uri + 5, "/")))
    return im_error(IM_ERR_ARG, "'%s' names no file to upload to (expected .../NAME)", uri);
  *root = im_strndup(uri, (size_t)(slash - uri));
  *name = slash + 1;
  return *root ? IM_OK : im_error(IM_ERR_NOMEM, "out of memory");
}

static int do_upload(const char *cmd, const char *local, const char *uri) {
  im_track_artifacts_t *a = NULL;
  im_status_t st;
  if (im_is_dir(local)) {
    if (!(st = im_track_artifacts_open(uri, &a))) st = im_track_artifacts_put_dir(a, "", local);
  } else {
    char *root = NULL;
    const char *name = NULL;
    if (!(st = split_file_uri(uri, &root, &name)) && !(st = im_track_artifacts_open(root, &a)))
      st = im_track_artifacts_put_file(a, name, local);
    im_free(root);
  }
  im_track_artifacts_free(a);
  if (st) return cli_fail(cmd, st, "upload");
  printf("uploaded %s to %s\n", local, uri);
  return CLI_OK;
}

static int do_list(const char *cmd, const char *uri, int recursive, int json) {
  im_track_artifacts_t *a = NULL;
  im_track_file_list_t *l = NULL;
  im_status_t st = im_track_artifacts_open(uri, &a);
  if (!st) st = recursive ? im_track_artifacts_list_all(a, "", &l) : im_track_artifacts_list(a, "", &l);
  im_track_artifacts_free(a);
  if (st) return cli_fail(cmd, st, "list");
  if (json) {
    json_t *arr = json_array();
    for (int64_t i = 0; i < l->n; i++) {
      json_t *f = json_pack("{s:s,s:b}", "path", l->items[i].path, "is_dir", l->items[i].is_dir);
      if (f && !l->items[i].is_dir) json_object_set_new(f, "file_size", json_integer(l->items[i].size));
      json_array_append_new(arr, f);
    }
    print_json(json_pack("{s:s,s:o}", "root_uri", uri, "files", arr));
  } else {
    for (int64_t i = 0; i < l->n; i++) {
      if (l->items[i].is_dir) printf("%12s  %s/\n", "-", l->items[i].path);
      else printf("%12lld  %s\n", (long long)l->items[i].size, l->items[i].path);
    }
  }
  im_track_file_list_free(l);
  return CLI_OK;
}

int cli_artifacts(int argc, char **argv) {
  const char *cmd = "artifacts";
  if (argc < 2) {
    fputs(usage, stderr);
    return CLI_USAGE;
  }
  const char *sub = argv[1];
  if (!strcmp(sub, "--help") || !strcmp(sub, "-h")) {
    fputs(usage, stdout);
    return CLI_OK;
  }
  static const struct option longopts[] = {{"artifact-path", required_argument, 0, 'p'},
                                           {"tracking-uri", required_argument, 0, 't'},
                                           {"recursive", no_argument, 0, 'r'},
                                           {"json", no_argument, 0, 'j'},
                                           {"help", no_argument, 0, 'h'},
                                           {0, 0, 0, 0}};
  const char *apath = NULL, *turi = NULL;
  int recursive = 0, json = 0, ch;
  optind = 1;
  opterr = 0;
  while ((ch = getopt_long(argc - 1, argv + 1, ":h", longopts, NULL)) != -1) {
    switch (ch) {
      case 'p': apath = optarg; break;
      case 't': turi = optarg; break;
      case 'r': recursive = 1; break;
      case 'j': json = 1; break;
      case 'h': fputs(usage, stdout); return CLI_OK;
      case ':': return cli_usage_error(cmd, "%s needs a value", argv[optind]); /* argv + 1 was parsed */
      default: return cli_usage_error(cmd, "unknown option '%s'", argv[optind]);
    }
  }
  char **pos = argv + 1 + optind;
  int npos = argc - 1 - optind;
  if (!strcmp(sub, "upload")) {
    if (npos != 2) return cli_usage_error(cmd, "upload takes LOCAL_PATH URI");
    return do_upload(cmd, pos[0], pos[1]);
  }
  if (!strcmp(sub, "list")) {
    if (npos != 1) return cli_usage_error(cmd, "list takes one URI");
    return do_list(cmd, pos[0], recursive, json);
  }
  if (strcmp(sub, "log") && strcmp(sub, "download"))
    return cli_usage_error(cmd, "unknown subcommand '%s' (log, upload, list, download)", sub);
  int is_log = !strcmp(sub, "log");
  if (npos != (is_log ? 2 : 1))
    return cli_usage_error(cmd, is_log ? "log takes RUN_ID LOCAL_PATH" : "download takes one URI");
  im_track_client_t *c = NULL;
  im_status_t st = im_track_client_open(turi, &c);
  char *local = NULL, *run_id = NULL;
  if (!st && is_log) st = im_track_client_log_artifacts(c, pos[0], pos[1], apath);
  else if (!st) st = im_track_client_fetch_model(c, pos[0], NULL, &local, &run_id);
  im_track_client_close(c);
  if (st) {
    im_free(local);
    im_free(run_id);
    return cli_fail(cmd, st, sub);
  }
  if (is_log) {
    printf("logged %s to run %s%s%s\n", pos[1], pos[0], apath ? " as " : "", apath ? apath : "");
  } else if (json) {
    print_json(json_pack("{s:s,s:s?}", "local_path", local, "run_id", run_id));
  } else {
    puts(local);
  }
  im_free(local);
  im_free(run_id);
  return CLI_OK;
}
