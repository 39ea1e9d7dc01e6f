/* imops preprocess: split a data set, compute mean/std, build the decoded cache. */
#include <ctype.h>
#include <getopt.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "imops/core.h"
#include "imops/data.h"

static const char usage_text[] =
    "usage: imops preprocess --data DIR --img-size S [options]\n"
    "\n"
    "Prepares an ImageFolder (DIR/<class>/<image>.jpg|.jpeg|.png) for training:\n"
    "  - splits each class into train/val/test with a seeded shuffle (DIR/.imops/split.json)\n"
    "  - computes per-channel mean and std over the train split at S x S\n"
    "    (DIR/mean-std.txt: mean R,G,B then std R,G,B; DIR/.imops/dataset.json)\n"
    "  - decodes and resizes every image once into DIR/.imops/cache-S.bin,\n"
    "    reused while the content of DIR is unchanged.\n"
    "Bad files (corrupt, truncated, not images, too large) are skipped and listed.\n"
    "\n"
    "options:\n"
    "  --data DIR            the ImageFolder (required)\n"
    "  --img-size S          resize images to S x S (required; 8..4096)\n"
    "  --split A,B,C         train,val,test ratios, adding up to 1 (default 0.7,0.15,0.15)\n"
    "  --seed N              split seed (default 42)\n"
    "  --materialize OUT     also write OUT/{train,val,test}/<class>/ (hard links where possible)\n"
    "  --force               rebuild the cache even when the data is unchanged\n"
    "  --max-pixels N        skip images with more pixels than N (default 67108864)\n"
    "  --threads N           worker threads (default: all cores)\n"
    "  --json                print the report as JSON on stdout\n"
    "  -h, --help            show this help\n"
    "\n"
    "Exit status: 0 done (bad files may have been skipped), 1 nothing usable was left\n"
    "or a class ended up empty, 2 usage error.\n";

static int parse_split(const char *s, double r[3]) {
  char *end;
  const char *p = s;
  for (int k = 0; k < 3; k++) {
    r[k] = strtod(p, &end);
    if (end == p) return -1;
    p = end;
    if (k < 2) {
      if (*p != ',') return -1;
      p++;
    }
  }
  return *p ? -1 : 0;
}

static const char *display_name(const char *dir, char *buf, size_t n) {
  size_t len = strlen(dir);
  while (len > 1 && dir[len - 1] == '/') len--;
  const char *b = dir + len;
  while (b > dir && b[-1] != '/') b--;
  snprintf(buf, n, "%.*s", (int)(dir + len - b), b);
  if (buf[0]) buf[0] = (char)toupper((unsigned char)buf[0]);
  return buf;
}

int cli_preprocess(int argc, char **argv) {
  static const struct option longopts[] = {
      {"data", required_argument, 0, 'd'},     {"img-size", required_argument, 0, 's'},
      {"split", required_argument, 0, 'p'},    {"seed", required_argument, 0, 'e'},
      {"materialize", required_argument, 0, 'm'}, {"force", no_argument, 0, 'f'},
      {"max-pixels", required_argument, 0, 'x'}, {"threads", required_argument, 0, 't'},
      {"json", no_argument, 0, 'j'},           {"help", no_argument, 0, 'h'},
      {0, 0, 0, 0}};
  im_preprocess_opts_t o = {.ratios = {0.7, 0.15, 0.15}, .seed = 42};
  int json = 0;
  int64_t v;
  optind = 1;
  opterr = 0;
  int ch;
  while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
    switch (ch) {
      case 'd': o.data_dir = optarg; break;
      case 's':
        if (cli_parse_i64("preprocess", "--img-size", optarg, 8, 4096, &v)) return CLI_USAGE;
        o.img_size = (int)v;
        break;
      case 'p':
        if (parse_split(optarg, o.ratios))
          return cli_usage_error("preprocess", "--split takes three ratios like 0.7,0.15,0.15, not '%s'", optarg);
        break;
      case 'e':
        if (cli_parse_u64("preprocess", "--seed", optarg, &o.seed)) return CLI_USAGE;
        break;
      case 'm': o.materialize_dir = optarg; break;
      case 'f': o.force = 1; break;
      case 'x':
        if (cli_parse_i64("preprocess", "--max-pixels", optarg, 1, INT64_MAX, &v)) return CLI_USAGE;
        o.max_pixels = v;
        break;
      case 't':
        if (cli_parse_i64("preprocess", "--threads", optarg, 1, 256, &v)) return CLI_USAGE;
        o.threads = (int)v;
        break;
      case 'j': json = 1; break;
      case 'h': fputs(usage_text, stdout); return CLI_OK;
      case ':': return cli_usage_error("preprocess", "%s needs a value", argv[optind - 1]);
      default: return cli_usage_error("preprocess", "unknown option '%s'", argv[optind - 1]);
    }
  }
  if (optind < argc) return cli_usage_error("preprocess", "unexpected argument '%s'", argv[optind]);
  if (!o.data_dir) return cli_usage_error("preprocess", "--data DIR is required");
  if (!o.img_size) return cli_usage_error("preprocess", "--img-size S is required");
  double sum = o.ratios[0] + o.ratios[1] + o.ratios[2];
  if (o.ratios[0] <= 0 || o.ratios[1] < 0 || o.ratios[2] < 0 || sum < 1 - 1e-6 || sum > 1 + 1e-6)
    return cli_usage_error("preprocess", "--split ratios must be non-negative, train above 0, adding up to 1");

  cli_progress_t *bar = NULL;
  o.progress = cli_progress_cb;
  o.progress_user = &bar;
  im_preprocess_result_t *r = NULL;
  im_status_t st = im_data_preprocess(&o, &r);
  cli_progress_finish(bar);

  if (r && r->n_bad) {
    fprintf(stderr, "skipped %lld bad file%s:\n", (long long)r->n_bad, r->n_bad == 1 ? "" : "s");
    for (int64_t i = 0; i < r->n_bad; i++) fprintf(stderr, "  %s: %s\n", r->bad[i].path, r->bad[i].reason);
  }
  if (st) {
    int rc = cli_fail("preprocess", st, o.data_dir);
    im_preprocess_result_free(r);
    return rc;
  }
  if (json) {
    json_t *classes = json_array(), *counts = json_object(), *bad = json_array();
    for (int k = 0; k < r->n_classes; k++) json_array_append_new(classes, json_string(r->classes[k]));
    for (int s = 0; s < 3; s++) {
      json_t *per = json_object();
      for (int k = 0; k < r->n_classes; k++) json_object_set_new(per, r->classes[k], json_integer(r->counts[k][s]));
      json_object_set_new(counts, im_split_name(s), per);
    }
    for (int64_t i = 0; i < r->n_bad; i++)
      json_array_append_new(bad, json_pack("{s:s,s:s}", "file", r->bad[i].path, "reason", r->bad[i].reason));
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)r->content_hash);
    json_t *j = json_pack("{s:s, s:i, s:o, s:i, s:I, s:o, s:[f,f,f], s:[f,f,f], s:s, s:b, s:o, s:s, s:s, s:s, s:s, s:f}",
                          "data", o.data_dir, "img_size", o.img_size, "classes", classes, "channels", r->channels,
                          "total", (json_int_t)r->total, "counts", counts, "mean", r->mean[0], r->mean[1], r->mean[2],
                          "std", r->std[0], r->std[1], r->std[2], "content_hash", hex, "cache_reused", r->cache_reused,
                          "bad_files", bad, "cache", r->cache_path, "split", r->split_path, "dataset", r->dataset_path,
                          "mean_std", r->mean_std_path, "seconds", r->seconds);
    char *s = json_dumps(j, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
    if (s) puts(s);
    free(s);
    json_decref(j);
  } else {
    char name[256];
    display_name(o.data_dir, name, sizeof name);
    for (int s = 0; s < 3; s++)
      for (int k = 0; k < r->n_classes; k++) {
        char lower[256];
        snprintf(lower, sizeof lower, "%s", r->classes[k]);
        for (char *c = lower; *c; c++) *c = (char)tolower((unsigned char)*c);
        printf("%s | %s | %s : %lld\n", name, im_split_name(s), lower, (long long)r->counts[k][s]);
      }
    printf("mean: %.6f %.6f %.6f\nstd:  %.6f %.6f %.6f\n", r->mean[0], r->mean[1], r->mean[2], r->std[0], r->std[1],
           r->std[2]);
    printf("%lld images in %d classes, %s at %dx%d (%s) in %.1f s\n", (long long)r->total, r->n_classes,
           r->cache_reused ? "cache reused" : "cache built", o.img_size, o.img_size,
           r->channels == 1 ? "grey" : "RGB", r->seconds);
    printf("wrote %s, %s, %s\n", r->mean_std_path, r->split_path, r->dataset_path);
  }
  im_preprocess_result_free(r);
  return CLI_OK;
}
