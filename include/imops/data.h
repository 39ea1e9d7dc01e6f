/* Data sets: ImageFolder scanning, the seeded split, per-channel statistics,
 * the decoded-image cache, preprocessing as a whole, generators (synthetic
 * concrete surfaces) and importers (IDX: MNIST / Fashion-MNIST).
 *
 * Files written next to a data set DATA (DESIGN.md):
 *   DATA/.imops/split.json      the split (file, label, split), seed, ratios
 *   DATA/.imops/dataset.json    classes, counts per split, mean, std, img_size, content hash
 *   DATA/.imops/cache-S.bin     decoded, resized uint8 images + labels (memory-mappable)
 *   DATA/mean-std.txt           mean R,G,B then std R,G,B, one per line
 */
#ifndef IMOPS_DATA_H
#define IMOPS_DATA_H

#include <stddef.h>
#include <stdint.h>

#include "imops/status.h"

#ifdef __cplusplus
extern "C" {
#endif

/** Progress of long work: stage names what is being done. Called from the
 * thread that drives the work, never concurrently. */
typedef void (*im_progress_fn)(void *user, const char *stage, int64_t done, int64_t total);

/* ---- synthetic concrete surfaces ---------------------------------------- */
typedef struct {
  const char *out_dir;   /* ImageFolder root: Negative/ and Positive/ are created */
  int64_t count;         /* images in total, split evenly between the two classes */
  int size;              /* width = height in pixels (227 like the real set) */
  uint64_t seed;         /* same seed, same images, whatever the thread count */
  int quality;           /* JPEG quality (0: 90) */
  int threads;           /* 0: im_num_threads() */
  const char *sheet_path;/* contact sheet PNG of examples of both classes (NULL: none) */
  im_progress_fn progress;
  void *progress_user;
} im_surface_opts_t;

/** Generates the data set as <out_dir>/{Negative,Positive}/NNNNN.jpg. */
im_status_t im_data_surface_generate(const im_surface_opts_t *opts);


/* ---- IDX import (MNIST / Fashion-MNIST) -------------------------------- */
typedef struct {
  const char *images_path;   /* idx3-ubyte, gzip or not */
  const char *labels_path;   /* idx1-ubyte, gzip or not */
  const char *out_dir;       /* ImageFolder root; one folder per class */
  const char *const *class_names; /* NULL: Fashion-MNIST's ten names when there are ten classes, else "0".."9" */
  int n_class_names;
  int64_t limit;             /* import only the first N (0: all) */
  im_progress_fn progress;
  void *progress_user;
} im_idx_import_opts_t;

typedef struct {
  int64_t count;       /* images written */
  int n_classes;
  int rows, cols;
} im_idx_import_result_t;

im_status_t im_data_idx_import(const im_idx_import_opts_t *opts, im_idx_import_result_t *res);

/* ---- preprocessing -------------------------------------------------------- */
enum { IM_SPLIT_TRAIN = 0, IM_SPLIT_VAL = 1, IM_SPLIT_TEST = 2, IM_SPLIT_COUNT = 3, IM_SPLIT_NONE = 255 };
/** "train", "val", "test". */
const char *im_split_name(int split);

typedef struct {
  const char *data_dir;
  int img_size;              /* S: images are resized to S x S */
  double ratios[3];          /* train, val, test; must sum to 1 */
  uint64_t seed;             /* split shuffle seed (the seed's 42) */
  const char *materialize_dir; /* NULL, or write train/ val/ test/ class folders there (hard links when possible) */
  int force;                 /* rebuild the cache even when the content hash matches */
  int threads;               /* 0: im_num_threads() */
  int64_t max_pixels;        /* per-image decode cap (0: IM_IMAGE_MAX_PIXELS_DEFAULT) */
  im_progress_fn progress;
  void *progress_user;
} im_preprocess_opts_t;

typedef struct {
  char *path;          /* relative to data_dir */
  char *reason;        /* why it was skipped */
} im_bad_file_t;

typedef struct {
  int n_classes;
  char **classes;              /* sorted class names */
  int channels;                /* 1 when every image is grey, else 3 */
  int64_t (*counts)[3];        /* counts[class][split] */
  int64_t total;               /* usable images */
  double mean[3], std[3];      /* over the train split, pixels scaled to [0,1] */
  uint64_t content_hash;
  int cache_reused;            /* 1 when the existing cache matched and was kept */
  int64_t n_bad;
  im_bad_file_t *bad;          /* files that were skipped, with the reason */
  char *cache_path, *split_path, *dataset_path, *mean_std_path;
  double seconds;
} im_preprocess_result_t;

/** Scans, splits, computes statistics and builds (or reuses) the cache.
 * Bad files are skipped and listed in the result; the call fails only when
 * nothing usable is left or a class ends up empty. On failure *out may still
 * hold a partial report (bad files) for the caller to show; free it either way. */
im_status_t im_data_preprocess(const im_preprocess_opts_t *opts, im_preprocess_result_t **out);
void im_preprocess_result_free(im_preprocess_result_t *r);

/* ---- the cache (memory-mapped) -------------------------------------------- */
typedef struct im_cache im_cache_t;
typedef struct {
  int64_t n;           /* images */
  int size;            /* S */
  int channels;
  int n_classes;
  uint64_t content_hash;
} im_cache_info_t;

im_status_t im_cache_open(const char *path, im_cache_t **out);
void im_cache_close(im_cache_t *c);
void im_cache_get_info(const im_cache_t *c, im_cache_info_t *info);
/** Split of image i: IM_SPLIT_TRAIN/VAL/TEST, or IM_SPLIT_NONE for a file that could not be used. */
/** Pixels of image i: S*S*channels bytes, HWC. */
const uint8_t *im_cache_pixels(const im_cache_t *c, int64_t i);
int im_cache_label(const im_cache_t *c, int64_t i);
int im_cache_split(const im_cache_t *c, int64_t i);

/* ---- the loader: batches from the cache for training and evaluation ------ */
/* Reads one split of a cache (memory-mapped), shuffles it per epoch from the
 * seed, augments (horizontal flip, random crop with zero padding), normalizes
 * with the data set's mean/std and hands out NCHW float32 batches, prepared by
 * a background thread so the compute never waits. The order and every random
 * choice depend only on (seed, epoch, position), never on timing or threads:
 * the same seed gives the same batches, and an epoch can start at any batch
 * (resume). */
typedef struct im_loader im_loader_t;

typedef struct {
  const char *cache_path; /* DATA/.imops/cache-S.bin */
  int split;              /* IM_SPLIT_TRAIN, IM_SPLIT_VAL or IM_SPLIT_TEST */
  int batch_size;
  int shuffle;            /* reshuffle every epoch */
  int drop_last;          /* drop a last, smaller batch */
  uint64_t seed;
  int hflip;              /* flip left-right with probability 1/2 */
  int crop_pad;           /* > 0: pad by this many zero pixels, then crop back at a random place */
  float mean[3], std[3];  /* per channel, for pixels scaled to [0, 1] (std 0: 1) */
  int prefetch;           /* batches prepared ahead (0: 2) */
} im_loader_opts_t;

im_status_t im_loader_open(const im_loader_opts_t *o, im_loader_t **out);
void im_loader_close(im_loader_t *l);
/** Images in the split, batches per epoch, and the batch geometry. */
int64_t im_loader_size(const im_loader_t *l);
int64_t im_loader_batches(const im_loader_t *l);
void im_loader_geometry(const im_loader_t *l, int *channels, int *h, int *w, int *n_classes);
/** Starts epoch `epoch` (0-based) at batch `first_batch` (0 normally; resume). */
im_status_t im_loader_start(im_loader_t *l, int64_t epoch, int64_t first_batch);
/** The next batch of the epoch: x is n x C x H x W float32, labels n int32; both
 * stay valid until the next call. n = 0 at the end of the epoch. */
im_status_t im_loader_next(im_loader_t *l, const float **x, const int32_t **labels, int *n);

#ifdef __cplusplus
}
#endif
#endif
