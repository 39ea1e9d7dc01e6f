/* imops server: the tracking server (MLflow REST API 2.0: tracking, model
 * registry and the mlflow-artifacts proxy) on the workspace store, until
 * SIGINT or SIGTERM; then it drains the requests in flight and exits 0. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "imops/core.h"
#include "imops/server.h"

static const char usage[] =
    "usage: imops server [--host 127.0.0.1] [--port 5000] [--workspace DIR]\n"
    "                    [--artifacts-destination DIR|s3://B/P] [--default-artifact-root URI]\n"
    "                    [--token T] [--threads N]\n"
    "                    [--max-upload-mb N]\n"
    "\n"
    "Serves MLflow's REST API 2.0 (tracking, model registry, mlflow-artifacts proxy) on the\n"
    "workspace store, so that the official mlflow client works against it:\n"
    "  mlflow.set_tracking_uri(\"http://127.0.0.1:5000\")\n"
    "Runs get artifact URIs mlflow-artifacts:/<experiment>/<run>/artifacts; the files live\n"
    "under the artifacts destination (default <workspace>/artifacts), which may be S3\n"
    "(s3://bucket/prefix; MLFLOW_S3_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY).\n"
    "\n"
    "  --host H                   address to bind (default 127.0.0.1; 0.0.0.0 for all)\n"
    "  --port P                   port (default 5000; 0 picks a free one)\n"
    "  --workspace DIR            the workspace (default $IMOPS_HOME, else ./imops-workspace)\n"
    "  --artifacts-destination D  where proxied artifacts are stored: a directory or\n"
    "                             s3://bucket/prefix (alias: --artifact-root)\n"
    "  --default-artifact-root U  artifact root of new experiments (default mlflow-artifacts:/,\n"
    "                             i.e. through this server; s3://... sends clients to S3)\n"
    "  --token T                  require 'Authorization: Bearer T' for writes (default\n"
    "                             $IMOPS_TOKEN; none: no check). Clients: MLFLOW_TRACKING_TOKEN\n"
    "  --threads N                HTTP worker threads (default: max(4, CPUs))\n"
    "  --max-upload-mb N          largest request body, i.e. artifact file (default 1024)\n"
    "\n"
    "Stops on SIGINT or SIGTERM after answering the requests in flight.\n";

static int is_loopback(const char *host) {
  return !strcmp(host, "127.0.0.1") || !strcmp(host, "localhost") || !strcmp(host, "::1") ||
         !strncmp(host, "127.", 4);
}

int cli_server(int argc, char **argv) {
  const char *cmd = "server";
  static const struct option longopts[] = {{"host", required_argument, 0, 'H'},
                                           {"port", required_argument, 0, 'p'},
                                           {"workspace", required_argument, 0, 'w'},
                                           {"artifacts-destination", required_argument, 0, 'a'},
                                           {"artifact-root", required_argument, 0, 'a'},
                                           {"default-artifact-root", required_argument, 0, 'd'},
                                           {"token", required_argument, 0, 't'},
                                           {"threads", required_argument, 0, 'n'},
                                           {"max-upload-mb", required_argument, 0, 'm'},
                                           {"help", no_argument, 0, 'h'},
                                           {0, 0, 0, 0}};
  im_server_opts_t o = {.host = "127.0.0.1", .port = 5000};
  int64_t v;
  optind = 1;
  opterr = 0;
  int ch;
  while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    switch (ch) {
      case 'H': o.host = optarg; break;
      case 'p':
        if (cli_parse_i64(cmd, "--port", optarg, 0, 65535, &v)) return CLI_USAGE;
        o.port = (int)v;
        break;
      case 'w': o.workspace = optarg; break;
      case 'a': o.artifacts_destination = optarg; break;
      case 'd': o.default_artifact_root = optarg; break;
      case 't': o.token = optarg; break;
      case 'n':
        if (cli_parse_i64(cmd, "--threads", optarg, 1, 1024, &v)) return CLI_USAGE;
        o.threads = (int)v;
        break;
      case 'm':
        if (cli_parse_i64(cmd, "--max-upload-mb", optarg, 1, 1 << 20, &v)) return CLI_USAGE;
        o.max_upload_bytes = (size_t)v << 20;
        break;
      case 'h': fputs(usage, stdout); return CLI_OK;
      case ':': return cli_usage_error(cmd, "%s needs a value", argv[optind - 1]);
      default: return cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
    }
  }
  if (optind < argc) return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
  if (!*o.host) return cli_usage_error(cmd, "--host must not be empty");
  if (!o.token) o.token = getenv("IMOPS_TOKEN");
  if (o.token && !*o.token) o.token = NULL;

  /* Block the stop signals before any thread starts, so that they all inherit
   * the mask and the main thread alone receives them through sigwait. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);

  im_server_t *srv = NULL;
  im_status_t st = im_server_new(&o, &srv);
  if (st) return cli_fail(cmd, st, "cannot set up the server");
  if ((st = im_server_start(srv))) {
    im_server_free(srv);
    return cli_fail(cmd, st, "cannot start the server");
  }
  int v6 = strchr(o.host, ':') != NULL;
  printf("imops server listening on http://%s%s%s:%d (tracking, registry, artifacts; workspace %s)\n", v6 ? "[" : "",
         o.host, v6 ? "]" : "", im_server_port(srv), im_server_workspace(srv));
  fflush(stdout);
  if (!o.token && !is_loopback(o.host))
    fprintf(stderr,
            "imops server: warning: listening on %s without --token: anyone who can reach it can change the "
            "store and the artifacts\n",
            o.host);

  int sig = 0;
  sigwait(&set, &sig);
  fprintf(stderr, "imops server: %s received, answering the requests in flight and stopping\n",
          sig == SIGINT ? "SIGINT" : "SIGTERM");
  st = im_server_stop(srv, 10.0);
  if (st) fprintf(stderr, "imops server: %s\n", im_last_error());
  im_server_free(srv);
  return CLI_OK;
}
