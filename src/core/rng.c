/* Random numbers: xoshiro256** seeded through splitmix64. Streams derived
 * from (seed, index) make parallel work reproducible whatever the threads. */
#include <math.h>
#include <string.h>

#include "imops/core.h"

static uint64_t splitmix64(uint64_t *x) {
  uint64_t z = (*x += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

void im_rng_seed(im_rng_t *r, uint64_t seed) {
  uint64_t x = seed;
  for (int i = 0; i < 4; i++) r->s[i] = splitmix64(&x);
}

uint64_t im_rng_derive(uint64_t seed, uint64_t stream) {
  uint64_t x = seed ^ (stream * 0xD1B54A32D192ED03ULL);
  splitmix64(&x);
  return splitmix64(&x);
}

uint64_t im_rng_next(im_rng_t *r) {
  uint64_t *s = r->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

uint32_t im_rng_below(im_rng_t *r, uint32_t n) {
  /* Lemire's nearly divisionless method, with rejection for exactness. */
  uint64_t m = (uint64_t)(uint32_t)(im_rng_next(r) >> 32) * n;
  uint32_t l = (uint32_t)m;
  if (l < n) {
    uint32_t t = (uint32_t)(-n) % n;
    while (l < t) {
      m = (uint64_t)(uint32_t)(im_rng_next(r) >> 32) * n;
      l = (uint32_t)m;
    }
  }
  return (uint32_t)(m >> 32);
}

double im_rng_uniform(im_rng_t *r) { return (double)(im_rng_next(r) >> 11) * 0x1.0p-53; }

double im_rng_normal(im_rng_t *r) {
  double u1 = im_rng_uniform(r), u2 = im_rng_uniform(r);
  if (u1 < 1e-300) u1 = 1e-300;
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

void im_rng_shuffle(im_rng_t *r, void *base, size_t n, size_t size) {
  unsigned char *b = base;
  for (size_t i = n > 1 ? n - 1 : 0; i > 0; i--) {
    size_t j = i < UINT32_MAX ? (size_t)im_rng_below(r, (uint32_t)(i + 1)) : (size_t)(im_rng_next(r) % (i + 1));
    if (j == i) continue;
    unsigned char *x = b + i * size, *y = b + j * size;
    for (size_t k = 0; k < size; k++) {
      unsigned char t = x[k];
      x[k] = y[k];
      y[k] = t;
    }
  }
}
