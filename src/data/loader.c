/* The loader: NCHW float32 batches from one split of the memory-mapped cache,
 * shuffled per epoch, augmented and normalized, prepared by a background
 * thread into a small ring of buffers. Every random choice comes from
 * (seed, epoch, position), so batches never depend on timing. */
#include <pthread.h>
#include <string.h>

#include "data_impl.h"

typedef struct {
  float *x;
  int32_t *y;
  int n;
  int64_t index; /* batch number within the epoch */
} slot_t;

struct im_loader {
  im_loader_opts_t o;
  im_cache_t *cache;
  int size, channels, n_classes;
  int64_t n;         /* images in the split */
  int64_t *members;  /* their cache indices */
  int64_t *order;    /* this epoch's order */
  int64_t epoch, batches, next_fill, next_take;
  int nslots;
  slot_t *slots;
  pthread_t thread;
  int thread_started;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int stop;          /* the producer must stop */
  int busy;          /* the producer is filling a slot (outside the lock) */
  int generation;    /* bumped by every start: a fill from before it is discarded */
};

int64_t im_loader_size(const im_loader_t *l) { return l->n; }
int64_t im_loader_batches(const im_loader_t *l) { return l->batches; }

void im_loader_geometry(const im_loader_t *l, int *c, int *h, int *w, int *k) {
  if (c) *c = l->channels;
  if (h) *h = l->size;
  if (w) *w = l->size;
  if (k) *k = l->n_classes;
}

/* Fills one batch: images order[b*B .. ) of the epoch. */
static void fill(im_loader_t *l, slot_t *s, int64_t b) {
  const int S = l->size, C = l->channels, B = l->o.batch_size, pad = l->o.crop_pad;
  const int64_t start = b * B;
  int n = (int)(l->n - start < B ? l->n - start : B);
  const size_t plane = (size_t)S * S;
  float scale[3], shift[3];
  for (int c = 0; c < C; c++) {
    float sd = l->o.std[c] > 0 ? l->o.std[c] : 1.0f;
    scale[c] = 1.0f / (255.0f * sd);
    shift[c] = -l->o.mean[c] / sd;
  }
  for (int i = 0; i < n; i++) {
    int64_t idx = l->order[start + i];
    const uint8_t *px = im_cache_pixels(l->cache, idx);
    s->y[i] = im_cache_label(l->cache, idx);
    im_rng_t r;
    im_rng_seed(&r, im_rng_derive(im_rng_derive(l->o.seed, (uint64_t)l->epoch), (uint64_t)(start + i)));
    int flip = l->o.hflip && (im_rng_next(&r) >> 63);
    int dx = 0, dy = 0;
    if (pad > 0) {
      dx = (int)im_rng_below(&r, (uint32_t)(2 * pad + 1)) - pad;
      dy = (int)im_rng_below(&r, (uint32_t)(2 * pad + 1)) - pad;
    }
    float *out = s->x + (size_t)i * C * plane;
    for (int c = 0; c < C; c++) {
      float *o = out + (size_t)c * plane;
      const float zero = shift[c]; /* a padded (zero) pixel, normalized */
      for (int y = 0; y < S; y++) {
        int sy = y + dy;
        if (sy < 0 || sy >= S) {
          for (int x = 0; x < S; x++) o[(size_t)y * S + x] = zero;
          continue;
        }
        const uint8_t *row = px + (size_t)sy * S * C + c;
        for (int x = 0; x < S; x++) {
          int sx = (flip ? S - 1 - x : x) + dx;
          o[(size_t)y * S + x] = (sx < 0 || sx >= S) ? zero : (float)row[(size_t)sx * C] * scale[c] + shift[c];
        }
      }
    }
  }
  s->n = n;
  s->index = b;
}

static void *producer(void *p) {
  im_loader_t *l = p;
  pthread_mutex_lock(&l->mu);
  for (;;) {
    /* The slot of the batch last handed out (next_take - 1) is still in use. */
    while (!l->stop && (l->next_fill >= l->batches || l->next_fill - l->next_take >= l->nslots - 1))
      pthread_cond_wait(&l->cv, &l->mu);
    if (l->stop) break;
    int64_t b = l->next_fill;
    int gen = l->generation;
    slot_t *s = &l->slots[b % l->nslots];
    l->busy = 1;
    pthread_mutex_unlock(&l->mu);
    fill(l, s, b);
    pthread_mutex_lock(&l->mu);
    l->busy = 0;
    if (gen == l->generation && b == l->next_fill) l->next_fill = b + 1;
    pthread_cond_broadcast(&l->cv);
  }
  pthread_mutex_unlock(&l->mu);
  return NULL;
}

im_status_t im_loader_open(const im_loader_opts_t *o, im_loader_t **out) {
  *out = NULL;
  if (!o->cache_path || o->batch_size <= 0 || o->split < 0 || o->split > IM_SPLIT_TEST || o->crop_pad < 0)
    return im_error(IM_ERR_ARG, "loader: a cache, a split and a batch size above 0 are required");
  im_loader_t *l = im_calloc(1, sizeof *l);
  if (!l) return im_error(IM_ERR_NOMEM, "out of memory");
  l->o = *o;
  im_status_t st = im_cache_open(o->cache_path, &l->cache);
  if (st) {
    im_free(l);
    return st;
  }
  im_cache_info_t info;
  im_cache_get_info(l->cache, &info);
  l->size = info.size;
  l->channels = info.channels;
  l->n_classes = info.n_classes;
  if (o->crop_pad >= l->size) {
    st = im_error(IM_ERR_ARG, "loader: crop padding %d is not below the image size %d", o->crop_pad, l->size);
    im_loader_close(l);
    return st;
  }
  for (int64_t i = 0; i < info.n; i++) l->n += im_cache_split(l->cache, i) == o->split;
  if (l->n == 0) {
    im_loader_close(l);
    return im_error(IM_ERR_EMPTY, "%s has no images in the %s split", o->cache_path, im_split_name(o->split));
  }
  l->members = im_malloc(sizeof *l->members * (size_t)l->n);
  l->order = im_malloc(sizeof *l->order * (size_t)l->n);
  l->nslots = (o->prefetch > 0 ? o->prefetch : 2) + 1; /* + the one the caller holds */
  l->slots = im_calloc((size_t)l->nslots, sizeof *l->slots);
  if (!l->members || !l->order || !l->slots) {
    im_loader_close(l);
    return im_error(IM_ERR_NOMEM, "out of memory");
  }
  for (int64_t i = 0, k = 0; i < info.n; i++)
    if (im_cache_split(l->cache, i) == o->split) l->members[k++] = i;
  size_t px = (size_t)o->batch_size * l->channels * l->size * l->size;
  for (int k = 0; k < l->nslots; k++) {
    l->slots[k].x = im_malloc(px * sizeof(float));
    l->slots[k].y = im_malloc((size_t)o->batch_size * sizeof(int32_t));
    if (!l->slots[k].x || !l->slots[k].y) {
      im_loader_close(l);
      return im_error(IM_ERR_NOMEM, "out of memory for batch buffers");
    }
  }
  l->batches = o->drop_last ? l->n / o->batch_size : (l->n + o->batch_size - 1) / o->batch_size;
  if (l->batches == 0) {
    st = im_error(IM_ERR_EMPTY, "the %s split has %lld images, fewer than one batch of %d", im_split_name(o->split),
                  (long long)l->n, o->batch_size);
    im_loader_close(l);
    return st;
  }
  pthread_mutex_init(&l->mu, NULL);
  pthread_cond_init(&l->cv, NULL);
  l->next_fill = l->next_take = l->batches; /* nothing to do until start */
  if (pthread_create(&l->thread, NULL, producer, l) != 0) {
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
    im_loader_close(l);
    return im_error(IM_ERR_INTERNAL, "loader: cannot start its thread");
  }
  l->thread_started = 1;
  *out = l;
  return IM_OK;
}

im_status_t im_loader_start(im_loader_t *l, int64_t epoch, int64_t first_batch) {
  if (epoch < 0 || first_batch < 0 || first_batch > l->batches)
    return im_error(IM_ERR_ARG, "loader: batch %lld is outside the epoch's %lld", (long long)first_batch,
                    (long long)l->batches);
  pthread_mutex_lock(&l->mu);
  l->generation++;
  l->next_fill = l->next_take = l->batches; /* the producer idles */
  while (l->busy) pthread_cond_wait(&l->cv, &l->mu); /* and is not reading order[] */
  memcpy(l->order, l->members, sizeof *l->order * (size_t)l->n);
  if (l->o.shuffle) {
    im_rng_t r;
    im_rng_seed(&r, im_rng_derive(l->o.seed ^ 0x5u, (uint64_t)epoch));
    im_rng_shuffle(&r, l->order, (size_t)l->n, sizeof *l->order);
  }
  l->epoch = epoch;
  l->next_fill = l->next_take = first_batch;
  pthread_cond_broadcast(&l->cv);
  pthread_mutex_unlock(&l->mu);
  return IM_OK;
}

im_status_t im_loader_next(im_loader_t *l, const float **x, const int32_t **labels, int *n) {
  *n = 0;
  pthread_mutex_lock(&l->mu);
  if (l->next_take >= l->batches) {
    pthread_mutex_unlock(&l->mu);
    return IM_OK;
  }
  while (l->next_fill <= l->next_take) pthread_cond_wait(&l->cv, &l->mu);
  slot_t *s = &l->slots[l->next_take % l->nslots];
  /* The slot handed out stays untouched until the next call: the producer
   * never fills the slot of batch next_take - 1. */
  *x = s->x;
  *labels = s->y;
  *n = s->n;
  l->next_take++;
  pthread_cond_broadcast(&l->cv);
  pthread_mutex_unlock(&l->mu);
  return IM_OK;
}

void im_loader_close(im_loader_t *l) {
  if (!l) return;
  if (l->thread_started) {
    pthread_mutex_lock(&l->mu);
    l->stop = 1;
    pthread_cond_broadcast(&l->cv);
    pthread_mutex_unlock(&l->mu);
    pthread_join(l->thread, NULL);
    pthread_mutex_destroy(&l->mu);
    pthread_cond_destroy(&l->cv);
  }
  for (int k = 0; l->slots && k < l->nslots; k++) {
    im_free(l->slots[k].x);
    im_free(l->slots[k].y);
  }
  im_free(l->slots);
  im_free(l->members);
  im_free(l->order);
  im_cache_close(l->cache);
  im_free(l);
}
