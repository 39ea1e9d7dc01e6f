/* A fast 64-bit non-cryptographic hash for content fingerprints (cache
 * validity, pipeline caching). Four 64-bit lanes of multiply-rotate over
 * 32-byte stripes, then an avalanche; little-endian byte order throughout so
 * values are stable across platforms. Streaming and one-shot give equal results. */
#include <string.h>

#include "imops/core.h"

#define P1 0x9E3779B185EBCA87ULL
#define P2 0xC2B2AE3D27D4EB4FULL
#define P3 0x165667B19E3779F9ULL
#define P4 0x85EBCA77C2B2AE63ULL
#define P5 0x27D4EB2F165667C5ULL

static inline uint64_t rotl64(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static inline uint64_t read64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

static inline uint64_t round64(uint64_t acc, uint64_t in) {
  acc += in * P2;
  acc = rotl64(acc, 31);
  return acc * P1;
}

void im_hash_init(im_hash_t *h, uint64_t seed) {
  h->v[0] = seed + P1 + P2;
  h->v[1] = seed + P2;
  h->v[2] = seed;
  h->v[3] = seed - P1;
  h->total = 0;
  h->nbuf = 0;
}

static void stripe(im_hash_t *h, const uint8_t *p) {
  for (int i = 0; i < 4; i++) h->v[i] = round64(h->v[i], read64(p + 8 * i));
}

void im_hash_update(im_hash_t *h, const void *data, size_t len) {
  const uint8_t *p = data;
  h->total += len;
  if (h->nbuf) {
    size_t take = 32 - h->nbuf < len ? 32 - h->nbuf : len;
    memcpy(h->buf + h->nbuf, p, take);
    h->nbuf += take;
    p += take;
    len -= take;
    if (h->nbuf < 32) return;
    stripe(h, h->buf);
    h->nbuf = 0;
  }
  while (len >= 32) {
    stripe(h, p);
    p += 32;
    len -= 32;
  }
  memcpy(h->buf, p, len);
  h->nbuf = len;
}

uint64_t im_hash_final(const im_hash_t *h) {
  uint64_t acc = rotl64(h->v[0], 1) + rotl64(h->v[1], 7) + rotl64(h->v[2], 12) + rotl64(h->v[3], 18);
  for (int i = 0; i < 4; i++) acc = (acc ^ round64(0, h->v[i])) * P1 + P4;
  acc += h->total;
  size_t i = 0;
  for (; i + 8 <= h->nbuf; i += 8) acc = rotl64(acc ^ round64(0, read64(h->buf + i)), 27) * P1 + P4;
  for (; i < h->nbuf; i++) acc = rotl64(acc ^ (h->buf[i] * P5), 11) * P1;
  acc ^= acc >> 33;
  acc *= P2;
  acc ^= acc >> 29;
  acc *= P3;
  acc ^= acc >> 32;
  return acc;
}

uint64_t im_hash64(const void *data, size_t len, uint64_t seed) {
  im_hash_t h;
  im_hash_init(&h, seed);
  im_hash_update(&h, data, len);
  return im_hash_final(&h);
}
