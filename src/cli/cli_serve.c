/* imops serve: the model server (POST /predict, Open Inference Protocol v2,
 * /metrics, /docs) for a model named by any model URI, until SIGINT or
 * SIGTERM (then it answers the requests in flight and exits 0); SIGHUP
 * reloads the model. */
#include <getopt.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cli.h"
#include "imops/core.h"
#include "imops/serve.h"

static const char usage[] =
    "usage: imops serve MODEL_URI [--host 127.0.0.1] [--port 3000] [options]\n"
    "\n"
    "Serves an image classifier over HTTP with adaptive micro-batching. MODEL_URI is a\n"
    "bundle directory, file:///dir, runs:/<run_id>/model, models:/<name>/<version|stage>\n"
    "or models:/<name>@<alias>.\n"
    "\n"
    "routes:\n"
    "  POST /predict             multipart image uploads, a raw image/jpeg or image/png body,\n"
    "                            or JSON {\"instances\": [{\"b64\": ...}]}; ?format=classes for [1]\n"
    "  /v2/...                   Open Inference Protocol v2 (KServe / Triton clients)\n"
    "  GET /healthz /livez /readyz, /metrics (Prometheus), /openapi.json, /docs\n"
    "\n"
    "options:\n"
    "  --host H               address to bind (default 127.0.0.1; 0.0.0.0 for all)\n"
    "  --port P               port (default 3000; 0 picks a free one)\n"
    "  --name NAME            the model's name in /v2 (default: the registry name, else model)\n"
    "  --max-batch-size N     images per batch (default 32)\n"
    "  --max-latency-ms M     longest a request may be held for batching (default 20)\n"
    "  --no-batching          run every request alone\n"
    "  --workers N            inference workers, each with a copy of the model and an equal\n"
    "                         share of the compute threads (default: one per thread, at most 4)\n"
    "  --watch                poll the registry and reload when the alias or stage moves\n"
    "  --watch-interval S     seconds between polls (default 2)\n"
    "  --max-body-mb N        largest request body (default 64)\n"
    "  --max-pixels N         largest image, in pixels, checked before decoding (default 40000000)\n"
    "  --max-images N         images per request (default 256)\n"
    "  --timeout-ms M         answer 503 when a request waits longer (default 30000)\n"
    "  --max-connections N    concurrent connections (default 1024)\n"
    "  --device D             cpu (default) or ref\n"
    "  --threads N            compute threads in all (default: IMOPS_NUM_THREADS, else all cores)\n"
    "  --tracking-home DIR    the store for runs:/ and models:/ (default $IMOPS_HOME)\n"
    "  -h, --help             show this help\n"
    "\n"
    "SIGHUP reloads the model; SIGINT or SIGTERM answers the requests in flight, then exits 0.\n";

int cli_serve(int argc, char **argv) {
  const char *cmd = "serve";
  enum {
    O_HOST = 256, O_PORT, O_NAME, O_MAXB, O_LAT, O_NOB, O_WORKERS, O_WATCH, O_WIV, O_BODY, O_PIX, O_IMGS, O_TMO,
    O_CONN, O_DEV, O_THR, O_HOME
  };
  static const struct option longopts[] = {{"host", required_argument, 0, O_HOST},
                                           {"port", required_argument, 0, O_PORT},
                                           {"name", required_argument, 0, O_NAME},
                                           {"max-batch-size", required_argument, 0, O_MAXB},
                                           {"max-latency-ms", required_argument, 0, O_LAT},
                                           {"no-batching", no_argument, 0, O_NOB},
                                           {"workers", required_argument, 0, O_WORKERS},
                                           {"watch", no_argument, 0, O_WATCH},
                                           {"watch-interval", required_argument, 0, O_WIV},
                                           {"max-body-mb", required_argument, 0, O_BODY},
                                           {"max-pixels", required_argument, 0, O_PIX},
                                           {"max-images", required_argument, 0, O_IMGS},
                                           {"timeout-ms", required_argument, 0, O_TMO},
                                           {"max-connections", required_argument, 0, O_CONN},
                                           {"device", required_argument, 0, O_DEV},
                                           {"threads", required_argument, 0, O_THR},
                                           {"tracking-home", required_argument, 0, O_HOME},
                                           {"tracking-uri", required_argument, 0, O_HOME},
                                           {"help", no_argument, 0, 'h'},
                                           {0, 0, 0, 0}};
  im_serve_opts_t o = im_serve_defaults();
  o.host = "127.0.0.1";
  o.port = 3000;
  int64_t v;
  double d;
  int workers_given = 0;
  optind = 1;
  opterr = 0;
  int ch;
  while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    switch (ch) {
      case O_HOST: o.host = optarg; break;
      case O_PORT:
        if (cli_parse_i64(cmd, "--port", optarg, 0, 65535, &v)) return CLI_USAGE;
        o.port = (int)v;
        break;
      case O_NAME: o.name = optarg; break;
      case O_MAXB:
        if (cli_parse_i64(cmd, "--max-batch-size", optarg, 1, 4096, &v)) return CLI_USAGE;
        o.max_batch_size = (int)v;
        break;
      case O_LAT:
        if (cli_parse_double(cmd, "--max-latency-ms", optarg, &d)) return CLI_USAGE;
        if (d <= 0) return cli_usage_error(cmd, "--max-latency-ms must be > 0");
        o.max_latency_ms = d;
        break;
      case O_NOB: o.batching = 0; break;
      case O_WORKERS:
        if (cli_parse_i64(cmd, "--workers", optarg, 1, 64, &v)) return CLI_USAGE;
        o.workers = (int)v;
        workers_given = 1;
        break;
      case O_WATCH: o.watch = 1; break;
      case O_WIV:
        if (cli_parse_double(cmd, "--watch-interval", optarg, &d)) return CLI_USAGE;
        if (d <= 0) return cli_usage_error(cmd, "--watch-interval must be > 0");
        o.watch_interval_s = d;
        break;
      case O_BODY:
        if (cli_parse_i64(cmd, "--max-body-mb", optarg, 1, 1 << 16, &v)) return CLI_USAGE;
        o.max_body_bytes = (size_t)v << 20;
        break;
      case O_PIX:
        if (cli_parse_i64(cmd, "--max-pixels", optarg, 1, INT64_C(1) << 40, &v)) return CLI_USAGE;
        o.max_pixels = v;
        break;
      case O_IMGS:
        if (cli_parse_i64(cmd, "--max-images", optarg, 1, 1 << 16, &v)) return CLI_USAGE;
        o.max_images = (int)v;
        break;
      case O_TMO:
        if (cli_parse_double(cmd, "--timeout-ms", optarg, &d)) return CLI_USAGE;
        if (d <= 0) return cli_usage_error(cmd, "--timeout-ms must be > 0");
        o.timeout_ms = d;
        break;
      case O_CONN:
        if (cli_parse_i64(cmd, "--max-connections", optarg, 1, 1 << 20, &v)) return CLI_USAGE;
        o.max_connections = (unsigned)v;
        break;
      case O_DEV: o.device = optarg; break;
      case O_THR:
        if (cli_parse_i64(cmd, "--threads", optarg, 1, 1024, &v)) return CLI_USAGE;
        setenv("IMOPS_NUM_THREADS", optarg, 1);
        break;
      case O_HOME: o.tracking_home = optarg; break;
      case 'h': fputs(usage, stdout); return CLI_OK;
      case ':': return cli_usage_error(cmd, "%s needs a value", argv[optind - 1]);
      default: return cli_usage_error(cmd, "unknown option '%s'", argv[optind - 1]);
    }
  }
  if (optind >= argc) return cli_usage_error(cmd, "MODEL_URI is required");
  if (optind + 1 < argc) return cli_usage_error(cmd, "unexpected argument '%s'", argv[optind + 1]);
  o.model_uri = argv[optind];
  if (!*o.host) return cli_usage_error(cmd, "--host must not be empty");
  /* Workers share the compute threads: by default one worker per thread (at most 4), since
   * independent batches keep the cores busier than one batch split across them (bench/serve:
   * 1.2-1.4x the requests/s of one two-thread worker at concurrency 8 and 64 on 2 cores). */
  const int total = im_num_threads();
  if (!workers_given) o.workers = total < 4 ? total : 4;
  char per[16];
  snprintf(per, sizeof per, "%d", total / o.workers > 0 ? total / o.workers : 1);
  setenv("IMOPS_NUM_THREADS", per, 1);
  if (o.watch && strncasecmp(o.model_uri, "models:", 7) != 0)
    fprintf(stderr, "imops serve: note: --watch follows registry aliases and stages (models:/NAME@ALIAS); %s cannot "
                    "move, reload it with SIGHUP\n",
            o.model_uri);

  /* Block the signals before any thread starts, so that they all inherit the
   * mask and the main thread alone receives them through sigwait. */
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGHUP);
  pthread_sigmask(SIG_BLOCK, &set, NULL);
  signal(SIGPIPE, SIG_IGN);

  im_serve_t *srv = NULL;
  im_status_t st = im_serve_new(&o, &srv);
  if (st) return cli_fail(cmd, st, o.model_uri);
  if ((st = im_serve_start(srv))) {
    im_serve_free(srv);
    return cli_fail(cmd, st, "cannot start the server");
  }
  char name[256], version[256], run_id[256];
  im_serve_model_info(srv, name, version, run_id, sizeof name);
  int v6 = strchr(o.host, ':') != NULL;
  printf("imops serve listening on http://%s%s%s:%d (model %s%s%s; %d worker%s x %s thread%s; docs at /docs)\n",
         v6 ? "[" : "", o.host, v6 ? "]" : "", im_serve_port(srv), name, version[0] ? " version " : "", version,
         o.workers, o.workers == 1 ? "" : "s", per, strcmp(per, "1") ? "s" : "");
  fflush(stdout);

  for (;;) {
    int sig = 0;
    if (sigwait(&set, &sig) != 0) continue;
    if (sig == SIGHUP) {
      int changed = 0;
      if ((st = im_serve_reload(srv, 1, &changed)))
        fprintf(stderr, "imops serve: reload failed, still serving the old model: %s\n", im_last_error());
      else {
        im_serve_model_info(srv, name, version, run_id, sizeof name);
        fprintf(stderr, "imops serve: reloaded: model %s%s%s\n", name, version[0] ? " version " : "", version);
      }
      continue;
    }
    fprintf(stderr, "imops serve: %s received, answering the requests in flight and stopping\n",
            sig == SIGINT ? "SIGINT" : "SIGTERM");
    break;
  }
  st = im_serve_stop(srv, 30.0);
  if (st) fprintf(stderr, "imops serve: %s\n", im_last_error());
  im_serve_free(srv);
  return CLI_OK;
}
