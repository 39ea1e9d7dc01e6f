/* imops dataset: data set importers (import-idx: MNIST / Fashion-MNIST). */
#include <getopt.h>
#include <jansson.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "imops/core.h"
#include "imops/data.h"

static const char usage_text[] =
    "usage: imops dataset import-idx --images FILE --labels FILE --out DIR [options]\n"
    "\n"
    "Converts IDX files (MNIST, Fashion-MNIST; gzip'd or not) into an ImageFolder of\n"
    "PNGs: DIR/<n>_<class>/NNNNN.png. Class folders start with the label number so that\n"
    "sorting them by name keeps the label order. Fashion-MNIST's ten class names are used\n"
    "when there are ten classes (plain MNIST paths get digit names), or give --classes.\n"
    "The real Fashion-MNIST is in Debian's dataset-fashion-mnist package:\n"
    "  /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz (and train-labels-idx1-ubyte.gz)\n"
    "\n"
    "options:\n"
    "  --images FILE     idx3-ubyte images\n"
    "  --labels FILE     idx1-ubyte labels\n"
    "  --out DIR         ImageFolder to write\n"
    "  --classes A,B,..  class names in label order\n"
    "  --limit N         import only the first N images\n"
    "  --json            print the result as JSON on stdout\n"
    "  -h, --help        show this help\n";

int cli_dataset(int argc, char **argv) {
  if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
    fputs(usage_text, argc < 2 ? stderr : stdout);
    return argc < 2 ? CLI_USAGE : CLI_OK;
  }
  if (strcmp(argv[1], "import-idx") != 0)
    return cli_usage_error("dataset", "unknown subcommand '%s'; the one there is: import-idx", argv[1]);
  static const struct option longopts[] = {{"images", required_argument, 0, 'i'}, {"labels", required_argument, 0, 'l'},
                                           {"out", required_argument, 0, 'o'},    {"classes", required_argument, 0, 'c'},
                                           {"limit", required_argument, 0, 'n'},  {"help", no_argument, 0, 'h'},
                                           {"json", no_argument, 0, 'j'},
                                           {0, 0, 0, 0}};
  im_idx_import_opts_t o = {0};
  char *names_buf = NULL;
  const char *names[1024];
  int64_t v;
  int json = 0;
  optind = 1;
  opterr = 0;
  int ch;
  argc--, argv++;
  while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    switch (ch) {
      case 'i': o.images_path = optarg; break;
      case 'l': o.labels_path = optarg; break;
      case 'o': o.out_dir = optarg; break;
      case 'c': {
        im_free(names_buf);
        names_buf = im_strdup(optarg);
        if (!names_buf) return cli_fail("dataset", IM_ERR_NOMEM, "out of memory");
        o.n_class_names = 0;
        for (char *s = strtok(names_buf, ","); s; s = strtok(NULL, ",")) {
          if (o.n_class_names == 1024) {
            im_free(names_buf);
            return cli_usage_error("dataset", "--classes takes at most 1024 names");
          }
          names[o.n_class_names++] = s;
        }
        o.class_names = names;
        break;
      }
      case 'n':
        if (cli_parse_i64("dataset", "--limit", optarg, 1, INT64_MAX, &v)) return CLI_USAGE;
        o.limit = v;
        break;
      case 'j': json = 1; break;
      case 'h': fputs(usage_text, stdout); im_free(names_buf); return CLI_OK;
      case ':': im_free(names_buf); return cli_usage_error("dataset", "%s needs a value", argv[optind - 1]);
      default: im_free(names_buf); return cli_usage_error("dataset", "unknown option '%s'", argv[optind - 1]);
    }
  }
  if (!o.images_path || !o.labels_path || !o.out_dir) {
    im_free(names_buf);
    return cli_usage_error("dataset", "import-idx needs --images, --labels and --out");
  }
  cli_progress_t *bar = NULL;
  o.progress = cli_progress_cb;
  o.progress_user = &bar;
  im_idx_import_result_t res;
  double t0 = im_time_now();
  im_status_t st = im_data_idx_import(&o, &res);
  cli_progress_finish(bar);
  im_free(names_buf);
  if (st) return cli_fail("dataset", st, "import-idx");
  if (json) {
    json_t *j = json_pack("{s:s, s:I, s:i, s:i, s:i, s:f}", "out", o.out_dir, "count", (json_int_t)res.count, "classes",
                          res.n_classes, "width", res.cols, "height", res.rows, "seconds", im_time_now() - t0);
    char *text = j ? json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    if (text) puts(text);
    free(text);
    json_decref(j);
    return CLI_OK;
  }
  printf("imported %lld images of %dx%d in %d classes to %s in %.1f s\n", (long long)res.count, res.cols, res.rows,
         res.n_classes, o.out_dir, im_time_now() - t0);
  return CLI_OK;
}
