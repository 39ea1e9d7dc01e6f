/* `imops datagen surface`: writes the synthetic concrete-crack data set
 * (ImageFolder: DIR/Negative, DIR/Positive) and a contact sheet of examples. */
#include <getopt.h>
#include <jansson.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "imops/core.h"
#include "imops/data.h"

#define CMD "datagen surface"

static void usage(FILE *f) {
  fprintf(f,
          "usage: imops datagen surface --out DIR [--count N] [--size S] [--seed K]\n"
          "                             [--quality Q] [--sheet PATH | --no-sheet] [--threads T]\n"
          "\n"
          "Generates realistic synthetic concrete-surface patches in the layout of the public\n"
          "\"Surface Crack Detection\" set: DIR/Negative/00001.jpg ... and DIR/Positive/00001.jpg ...\n"
          "Positives carry thin dark branching cracks; negatives are plain concrete, often with\n"
          "crack-like distractors (joints, saw cuts, scratches, stain edges, shadows).\n"
          "\n"
          "options:\n"
          "  --out DIR       output folder (created; existing files of the same name are replaced)\n"
          "  --count N       images in total, half per class, Negative gets an odd one (default 2000)\n"
          "  --size S        width = height in pixels, 16..4096 (default 227, as the real set)\n"
          "  --seed K        random seed: the same seed gives identical files (default 42)\n"
          "  --quality Q     JPEG quality 1..100 (default 90)\n"
          "  --sheet PATH    contact sheet PNG of examples of both classes\n"
          "                  (default DIR/contact-sheet.png)\n"
          "  --no-sheet      do not write a contact sheet\n"
          "  --threads T     worker threads (default: IMOPS_NUM_THREADS or all CPUs)\n"
          "  --json          print the result as JSON on stdout\n"
          "  -h, --help      show this help\n");
}

int cli_datagen(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") || !strcmp(argv[1], "help")) {
    if (argc >= 2) {
      usage(stdout);
      return CLI_OK;
    }
    return cli_usage_error("datagen", "which generator? the one available is 'surface'");
  }
  if (strcmp(argv[1], "surface") != 0)
    return cli_usage_error("datagen", "unknown generator '%s'; the one available is 'surface'", argv[1]);

  enum { OPT_NO_SHEET = 256, OPT_JSON };
  static const struct option longopts[] = {
      {"out", required_argument, NULL, 'o'},     {"count", required_argument, NULL, 'n'},
      {"size", required_argument, NULL, 's'},    {"seed", required_argument, NULL, 'k'},
      {"quality", required_argument, NULL, 'q'}, {"sheet", required_argument, NULL, 'S'},
      {"no-sheet", no_argument, NULL, OPT_NO_SHEET}, {"threads", required_argument, NULL, 't'},
      {"json", no_argument, NULL, OPT_JSON},     {"help", no_argument, NULL, 'h'},
      {NULL, 0, NULL, 0},
  };
  const char *out = NULL, *sheet = NULL;
  int no_sheet = 0, json = 0;
  int64_t count = 2000, size = 227, quality = 90, threads = 0;
  uint64_t seed = 42;

  int sub_argc = argc - 1;
  char **sub_argv = argv + 1;
  optind = 0; /* glibc: full re-initialisation, the table may be parsed more than once */
  opterr = 0;
  int c;
  while ((c = getopt_long(sub_argc, sub_argv, ":h", longopts, NULL)) != -1) {
    switch (c) {
      case 'o': out = optarg; break;
      case 'n':
        if (cli_parse_i64(CMD, "--count", optarg, 2, 100000000, &count)) return CLI_USAGE;
        break;
      case 's':
        if (cli_parse_i64(CMD, "--size", optarg, 16, 4096, &size)) return CLI_USAGE;
        break;
      case 'k':
        if (cli_parse_u64(CMD, "--seed", optarg, &seed)) return CLI_USAGE;
        break;
      case 'q':
        if (cli_parse_i64(CMD, "--quality", optarg, 1, 100, &quality)) return CLI_USAGE;
        break;
      case 'S': sheet = optarg; break;
      case OPT_NO_SHEET: no_sheet = 1; break;
      case OPT_JSON: json = 1; break;
      case 't':
        if (cli_parse_i64(CMD, "--threads", optarg, 0, 1024, &threads)) return CLI_USAGE;
        break;
      case 'h': usage(stdout); return CLI_OK;
      case ':': return cli_usage_error(CMD, "option %s needs a value", sub_argv[optind - 1]);
      default: return cli_usage_error(CMD, "unknown option '%s'", sub_argv[optind - 1]);
    }
  }
  if (optind < sub_argc) return cli_usage_error(CMD, "unexpected argument '%s'", sub_argv[optind]);
  if (!out || !*out) return cli_usage_error(CMD, "--out DIR is required");
  if (sheet && no_sheet) return cli_usage_error(CMD, "--sheet and --no-sheet contradict each other");

  char *sheet_default = NULL;
  if (!sheet && !no_sheet) {
    sheet_default = im_path_join(out, "contact-sheet.png");
    if (!sheet_default) return cli_fail(CMD, IM_ERR_NOMEM, "out of memory");
    sheet = sheet_default;
  }

  cli_progress_t *bar = NULL;
  im_surface_opts_t o = {
      .out_dir = out,
      .count = count,
      .size = (int)size,
      .seed = seed,
      .quality = (int)quality,
      .threads = (int)threads,
      .sheet_path = sheet,
      .progress = cli_progress_cb,
      .progress_user = &bar,
  };
  double t0 = im_time_now();
  im_status_t st = im_data_surface_generate(&o);
  cli_progress_finish(bar);
  if (st) {
    im_free(sheet_default);
    return cli_fail(CMD, st, "cannot generate the data set");
  }
  double secs = im_time_now() - t0;
  long long n_neg = (long long)((count + 1) / 2), n_pos = (long long)(count / 2);
  if (json) {
    json_t *j = json_pack("{s:s, s:I, s:I, s:I, s:i, s:I, s:s?, s:f}", "out", out, "count", (json_int_t)count, "negative",
                          (json_int_t)n_neg, "positive", (json_int_t)n_pos, "size", (int)size, "seed", (json_int_t)seed,
                          "contact_sheet", sheet, "seconds", secs);
    char *text = j ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    if (text) puts(text);
    free(text);
    json_decref(j);
  } else {
    printf("wrote %lld images (%lld Negative, %lld Positive) to %s in %.1f s", (long long)count, n_neg, n_pos, out,
           secs);
    if (sheet)
      printf("; contact sheet: %s\n", sheet);
    else
      printf("\n");
  }
  im_free(sheet_default);
  return CLI_OK;
}
