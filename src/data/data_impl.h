/* Internal contracts of the data module (not part of the public API). */
#ifndef IMOPS_DATA_IMPL_H
#define IMOPS_DATA_IMPL_H

#include <stdint.h>

#include "imops/core.h"
#include "imops/data.h"

/* An ImageFolder scan: classes are sub-folders sorted by name (hidden ones
 * skipped); files with an image extension under each, recursively, sorted. */
typedef struct {
  char *rel;    /* path relative to the root, e.g. "Negative/00001.jpg" */
  int label;
} im__folder_file_t;

typedef struct {
  int n_classes;
  char **classes;
  int64_t n_files;
  im__folder_file_t *files;
} im__folder_t;

im_status_t im__folder_scan(const char *root, im__folder_t *out);
void im__folder_free(im__folder_t *f);
/** 1 when name ends in .jpg, .jpeg or .png (any case). */
int im__is_image_name(const char *name);

/* The split: per class, shuffled with the seed, cut by the ratios. usable[i]
 * says which files take part; split[i] receives IM_SPLIT_* or IM__SPLIT_NONE. */
#define IM__SPLIT_NONE IM_SPLIT_NONE
im_status_t im__split_assign(const im__folder_t *f, const uint8_t *usable, const double ratios[3], uint64_t seed,
                             uint8_t *split);
/** The number of a class's n images that go to train, val and test. */
void im__split_counts(int64_t n, const double ratios[3], int64_t out[3]);

/* The cache file (little-endian, memory-mappable):
 *   header (4096 bytes): magic "IMOPSCAC", u32 version, u32 header size, u64 n, u32 size, u32 channels,
 *   u32 n_classes, u32 reserved, u64 content hash, u64 split hash, f64 mean[3], f64 std[3],
 *   u64 labels offset, u64 split offset, u64 pixels offset
 *   labels: u16 x n; split: u8 x n (255 = not usable); pixels (4096-aligned): n x size x size x channels, HWC */
#define IM__CACHE_MAGIC "IMOPSCAC"
#define IM__CACHE_VERSION 1u
#define IM__CACHE_HEADER 4096u

typedef struct {
  uint64_t n;
  uint32_t size, channels, n_classes;
  uint64_t content_hash, split_hash;
  double mean[3], std[3];
  uint64_t labels_off, split_off, pixels_off;
} im__cache_header_t;

/** Fills the offsets of h from n, size and channels; returns the file size. */
uint64_t im__cache_layout(im__cache_header_t *h);
/** Serializes the header into a 4096-byte block. */
void im__cache_header_write(const im__cache_header_t *h, uint8_t *block);
/** Parses and checks a header block against the file size. */
im_status_t im__cache_header_read(const uint8_t *block, uint64_t file_size, const char *path, im__cache_header_t *h);

#endif
