/* Synthetic concrete-surface crack data set: an ImageFolder of
 * <out>/Negative/NNNNN.jpg and <out>/Positive/NNNNN.jpg, like the public
 * "Surface Crack Detection" set (reference/surface-dataset.md).
 *
 * Each image is rendered from its own RNG stream, derived from (seed, class,
 * index) and never from the thread, so the same seed gives byte-identical
 * files whatever the thread count. An image is built as one luminance plane
 * (multi-octave value noise, grain, aggregate speckle, pores, stains,
 * lighting, cracks or distractors, slight blur), then coloured with a per-image
 * grey tint and a faint chroma field, given sensor noise and JPEG-encoded.
 * Positives carry one or more random-walk cracks with branches and a varying
 * width; negatives carry plain concrete and often crack-like distractors
 * (formwork joints and saw cuts, short straight scratches, stain edges,
 * soft shadows), so a model must learn the crack shape rather than the mere
 * presence of a dark line. */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "imops/core.h"
#include "imops/data.h"
#include "imops/image.h"

enum { CLS_NEG = 0, CLS_POS = 1 };
static const char *const class_dir[2] = {"Negative", "Positive"};

#define CHUNK 64          /* images per parallel batch; progress is reported between batches */
#define MAX_SIZE 4096
#define MIN_SIZE 16
#define MAX_COUNT 100000000LL

/* ======================================================================== */
/* random helpers                                                           */
/* ======================================================================== */

static inline float frand(im_rng_t *r) { return (float)(im_rng_next(r) >> 40) * (1.0f / 16777216.0f); }
static inline float urange(im_rng_t *r, float a, float b) { return a + (b - a) * frand(r); }
static inline float lurange(im_rng_t *r, float a, float b) { return a * expf(logf(b / a) * frand(r)); }
static inline int chance(im_rng_t *r, float p) { return frand(r) < p; }
static inline float nrand(im_rng_t *r) { return (float)im_rng_normal(r); }
/* A cheap approximately normal value from one 64-bit draw (sum of four 16-bit uniforms). */
static inline float fast_normal(uint64_t u) {
  uint32_t s = (uint32_t)(u & 0xFFFF) + (uint32_t)((u >> 16) & 0xFFFF) + (uint32_t)((u >> 32) & 0xFFFF) +
               (uint32_t)(u >> 48);
  return ((float)s - 131070.0f) * (1.0f / 37837.0f);
}
/* splitmix64 for per-pixel noise: inlined, seeded from the image's stream. */
static inline uint64_t px_next(uint64_t *st) {
  uint64_t z = (*st += 0x9E3779B97F4A7C15ULL);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
  return z ^ (z >> 31);
}
static inline float clampf(float v, float lo, float hi) { return v < lo ? lo : (v > hi ? hi : v); }
static inline float smooth01(float t) {
  t = clampf(t, 0.0f, 1.0f);
  return t * t * (3.0f - 2.0f * t);
}

/* ======================================================================== */
/* workspace and raster primitives                                          */
/* ======================================================================== */

typedef struct {
  int S;
  float *L;     /* luminance factor, around 1.0 */
  float *D;     /* darkness of cracks and dark lines, 0..1, max-combined */
  float *B;     /* brightness of light scratches and rims, 0..1, max-combined */
  float *T;     /* scratch plane (stain masks, blur) */
  float *C;     /* chroma offset (warm/cool), small */
  float *lat;   /* lattice of value noise, (S+3)^2 */
  int *xi;      /* per-column lattice index */
  float *xt;    /* per-column smoothed fraction */
  float *row;   /* one lattice row interpolated in y, S+3 */
} ws_t;

static void ws_free(ws_t *w) {
  im_free(w->L);
  im_free(w->lat);
  im_free(w->xi);
  im_free(w->xt);
  im_free(w->row);
  memset(w, 0, sizeof *w);
}

static im_status_t ws_init(ws_t *w, int S) {
  memset(w, 0, sizeof *w);
  size_t n = (size_t)S * S;
  w->S = S;
  w->L = im_malloc(sizeof(float) * n * 5);
  w->lat = im_malloc(sizeof(float) * (size_t)(S + 3) * (S + 3));
  w->xi = im_malloc(sizeof(int) * (size_t)S);
  w->xt = im_malloc(sizeof(float) * (size_t)S);
  w->row = im_malloc(sizeof(float) * (size_t)(S + 3));
  if (!w->L || !w->lat || !w->xi || !w->xt || !w->row) {
    ws_free(w);
    return im_error(IM_ERR_NOMEM, "surface: out of memory for a %dx%d image", S, S);
  }
  w->D = w->L + n;
  w->B = w->D + n;
  w->T = w->B + n;
  w->C = w->T + n;
  return IM_OK;
}

/* Adds amp * value noise with `cells` lattice cells across the image
 * (smoothstep interpolation, random lattice offset) to dst. */
static void noise_add(ws_t *w, float *dst, float cells, float amp, im_rng_t *r) {
  int S = w->S;
  if (cells < 1.0f) cells = 1.0f;
  if (cells > (float)S) cells = (float)S;
  int n = (int)ceilf(cells) + 2;
  float *lat = w->lat;
  uint64_t ps = im_rng_next(r);
  for (int i = 0; i < n * n; i++) lat[i] = (float)(px_next(&ps) >> 40) * (2.0f / 16777216.0f) - 1.0f;
  float scale = cells / (float)S, ox = frand(r), oy = frand(r);
  for (int x = 0; x < S; x++) {
    float f = (float)x * scale + ox;
    int i0 = (int)f;
    if (i0 > n - 2) i0 = n - 2;
    w->xi[x] = i0;
    float t = f - (float)i0;
    w->xt[x] = t * t * (3.0f - 2.0f * t);
  }
  for (int y = 0; y < S; y++) {
    float f = (float)y * scale + oy;
    int j0 = (int)f;
    if (j0 > n - 2) j0 = n - 2;
    float t = f - (float)j0;
    float ty = t * t * (3.0f - 2.0f * t);
    const float *a = lat + (size_t)j0 * n, *b = a + n;
    float *lr = w->row, *out = dst + (size_t)y * S;
    for (int i = 0; i < n; i++) lr[i] = amp * (a[i] + (b[i] - a[i]) * ty);
    for (int x = 0; x < S; x++) {
      int i = w->xi[x];
      out[x] += lr[i] + (lr[i + 1] - lr[i]) * w->xt[x];
    }
  }
}

/* Soft elliptical spot: L *= 1 - amount * coverage, with an optional
 * brighter rim just outside (rim > 0). Anti-aliased edge. */
static void spot(ws_t *w, float cx, float cy, float rx, float ry, float ang, float amount, float rim) {
  int S = w->S;
  float rr = (rx > ry ? rx : ry) + 1.5f;
  int x0 = (int)floorf(cx - rr), x1 = (int)ceilf(cx + rr), y0 = (int)floorf(cy - rr), y1 = (int)ceilf(cy + rr);
  if (x0 < 0) x0 = 0;
  if (y0 < 0) y0 = 0;
  if (x1 > S - 1) x1 = S - 1;
  if (y1 > S - 1) y1 = S - 1;
  float ca = cosf(ang), sa = sinf(ang), rmin = rx < ry ? rx : ry;
  for (int y = y0; y <= y1; y++) {
    for (int x = x0; x <= x1; x++) {
      float dx = (float)x - cx, dy = (float)y - cy;
      float u = (dx * ca + dy * sa) / rx, v = (-dx * sa + dy * ca) / ry;
      float q = sqrtf(u * u + v * v);
      float edge = (1.0f - q) * rmin; /* signed distance to the edge, roughly in pixels */
      float cov = clampf(edge + 0.5f, 0.0f, 1.0f);
      /* a deeper centre for pores: darkness grows towards the middle */
      float depth = cov * (0.65f + 0.35f * clampf(1.0f - q, 0.0f, 1.0f));
      size_t k = (size_t)y * S + x;
      w->L[k] *= 1.0f - amount * depth;
      if (rim > 0.0f && edge < 0.5f) {
        float rc = clampf(1.0f - fabsf(edge + 0.6f) / 0.9f, 0.0f, 1.0f);
        w->L[k] *= 1.0f + rim * rc;
      }
    }
  }
}

/* Anti-aliased capsule from a to b, half-width varying from h0 to h1 and
 * strength from s0 to s1, max-combined into plane P. halo: a soft shadow
 * of width halo_w and relative strength halo_s around the core. */
static void segment(ws_t *w, float *P, float ax, float ay, float bx, float by, float h0, float h1, float s0, float s1,
                    float halo_w, float halo_s) {
  int S = w->S;
  float hm = (h0 > h1 ? h0 : h1) + halo_w + 1.5f;
  float mnx = (ax < bx ? ax : bx) - hm, mxx = (ax > bx ? ax : bx) + hm;
  float mny = (ay < by ? ay : by) - hm, mxy = (ay > by ? ay : by) + hm;
  if (mxx < 0 || mxy < 0 || mnx > (float)(S - 1) || mny > (float)(S - 1)) return;
  int x0 = (int)floorf(mnx), x1 = (int)ceilf(mxx), y0 = (int)floorf(mny), y1 = (int)ceilf(mxy);
  if (x0 < 0) x0 = 0;
  if (y0 < 0) y0 = 0;
  if (x1 > S - 1) x1 = S - 1;
  if (y1 > S - 1) y1 = S - 1;
  float vx = bx - ax, vy = by - ay, vv = vx * vx + vy * vy;
  float inv = vv > 1e-9f ? 1.0f / vv : 0.0f;
  float inv_halo = halo_w > 0.0f ? 1.0f / halo_w : 0.0f;
  for (int y = y0; y <= y1; y++) {
    float py = (float)y - ay;
    for (int x = x0; x <= x1; x++) {
      float px = (float)x - ax;
      float t = clampf((px * vx + py * vy) * inv, 0.0f, 1.0f);
      float dx = px - t * vx, dy = py - t * vy;
      float d = sqrtf(dx * dx + dy * dy);
      float hw = h0 + (h1 - h0) * t;
      float cov;
      if (hw < 0.5f)
        cov = 2.0f * hw * clampf(1.0f - d, 0.0f, 1.0f); /* hairline: a tent of total weight 2*hw */
      else
        cov = clampf(hw + 0.5f - d, 0.0f, 1.0f);
      float v = cov;
      if (halo_s > 0.0f && d > hw) {
        float h = clampf(1.0f - (d - hw) * inv_halo, 0.0f, 1.0f);
        h = h * h * halo_s;
        if (h > v) v = h;
      }
      v *= s0 + (s1 - s0) * t;
      size_t k = (size_t)y * S + x;
      if (v > P[k]) P[k] = v;
    }
  }
}

/* Separable [1 2 1]/4 blur of plane P, mixed in with weight amount. */
static void blur121(ws_t *w, float *P, float amount) {
  int S = w->S;
  float *T = w->T;
  for (int y = 0; y < S; y++) {
    const float *p = P + (size_t)y * S;
    float *t = T + (size_t)y * S;
    t[0] = (3.0f * p[0] + p[1]) * 0.25f;
    for (int x = 1; x < S - 1; x++) t[x] = (p[x - 1] + 2.0f * p[x] + p[x + 1]) * 0.25f;
    t[S - 1] = (p[S - 2] + 3.0f * p[S - 1]) * 0.25f;
  }
  for (int y = 0; y < S; y++) {
    const float *a = T + (size_t)(y > 0 ? y - 1 : 0) * S, *b = T + (size_t)y * S,
                *c = T + (size_t)(y < S - 1 ? y + 1 : S - 1) * S;
    float *p = P + (size_t)y * S;
    for (int x = 0; x < S; x++) {
      float v = (a[x] + 2.0f * b[x] + c[x]) * 0.25f;
      p[x] += amount * (v - p[x]);
    }
  }
}

/* ======================================================================== */
/* scene elements                                                           */
/* ======================================================================== */

/* A stain: a blotch cut from low-frequency noise by a soft threshold.
 * amount < 0 darkens, > 0 lightens; soft sets the edge width (in noise units). */
static void stain(ws_t *w, im_rng_t *r, float amount, float soft, int ragged) {
  int S = w->S;
  size_t n = (size_t)S * S;
  memset(w->T, 0, sizeof(float) * n);
  float cells = urange(r, 1.5f, 4.5f);
  noise_add(w, w->T, cells, 1.0f, r);
  noise_add(w, w->T, cells * 2.3f, 0.45f, r);
  noise_add(w, w->T, cells * 5.1f, 0.18f, r);
  if (ragged) noise_add(w, w->T, cells * 12.0f, 0.08f, r);
  float th = urange(r, 0.05f, 0.55f);
  float lo = th - soft, inv = 1.0f / (2.0f * soft);
  for (size_t k = 0; k < n; k++) {
    float m = smooth01((w->T[k] - lo) * inv);
    w->L[k] *= 1.0f + amount * m;
  }
}

/* A soft shadow: one half-plane (or a band) darkened with a wide soft edge. */
static void shadow(ws_t *w, im_rng_t *r, float amount, float softness) {
  int S = w->S;
  float ang = urange(r, 0.0f, 6.2831853f), nx = cosf(ang), ny = sinf(ang);
  float c = urange(r, -0.3f, 0.3f) * (float)S;
  float band = chance(r, 0.4f) ? urange(r, 0.15f, 0.5f) * (float)S : 0.0f;
  float inv = 1.0f / softness, h = 0.5f * (float)S;
  for (int y = 0; y < S; y++) {
    for (int x = 0; x < S; x++) {
      float d = ((float)x - h) * nx + ((float)y - h) * ny - c;
      float m = smooth01(d * inv * 0.5f + 0.5f);
      if (band > 0.0f) m *= 1.0f - smooth01((d - band) * inv * 0.5f + 0.5f);
      w->L[(size_t)y * S + x] *= 1.0f - amount * m;
    }
  }
}

/* The ends of a straight line at angle ang through a random inner point,
 * both well outside the image. */
static void line_across(ws_t *w, im_rng_t *r, float ang, float *ax, float *ay, float *bx, float *by) {
  float S = (float)w->S, m = 4.0f;
  float cx = urange(r, 0.1f, 0.9f) * S, cy = urange(r, 0.1f, 0.9f) * S;
  float dx = cosf(ang), dy = sinf(ang), L = 2.0f * S + m;
  *ax = cx - dx * L;
  *ay = cy - dy * L;
  *bx = cx + dx * L;
  *by = cy + dy * L;
}

/* A formwork joint or saw cut: a straight groove of uniform width right
 * across the patch, a few millimetres wide (never a hairline: a straight
 * hairline is what a fine crack looks like once the patch is scaled down),
 * usually with a lit arris along one side. Joints and cuts follow the forms
 * and the slab edges, which the photos were taken square to, so they run
 * near the image axes (ang0 < 0: pick one; else ang0 is the first joint's
 * angle and this one is parallel or perpendicular to it). Returns the angle. */
static float joint(ws_t *w, im_rng_t *r, float ang0) {
  float ang;
  if (ang0 >= 0.0f)
    ang = ang0 + (chance(r, 0.5f) ? 1.5707963f : 0.0f) + nrand(r) * 0.02f;
  else
    ang = (float)im_rng_below(r, 4) * 1.5707963f + nrand(r) * 0.05f;
  float ax, ay, bx, by;
  line_across(w, r, ang, &ax, &ay, &bx, &by);
  float hw = lurange(r, 0.9f, 3.0f);
  float s = urange(r, 0.35f, 0.85f);
  segment(w, w->D, ax, ay, bx, by, hw, hw, s, s, urange(r, 0.8f, 3.0f), urange(r, 0.15f, 0.45f));
  if (chance(r, 0.8f)) { /* a lit arris along one side of the groove */
    float vx = bx - ax, vy = by - ay, len = sqrtf(vx * vx + vy * vy);
    float off = (hw + urange(r, 0.8f, 1.6f)) * (chance(r, 0.5f) ? 1.0f : -1.0f);
    float ox = -vy / len * off, oy = vx / len * off;
    float bs = urange(r, 0.2f, 0.6f);
    segment(w, w->B, ax + ox, ay + oy, bx + ox, by + oy, 0.6f, 0.6f, bs, bs, 0.0f, 0.0f);
  }
  return ang < 0.0f ? ang + 3.14159265f : ang;
}

/* A short straight scratch, dark or light. */
static void scratch(ws_t *w, im_rng_t *r) {
  float S = (float)w->S;
  float cx = urange(r, 0.05f, 0.95f) * S, cy = urange(r, 0.05f, 0.95f) * S;
  float len = urange(r, 0.04f, 0.2f) * S + 4.0f, ang = urange(r, 0.0f, 3.14159265f);
  float dx = cosf(ang) * len * 0.5f, dy = sinf(ang) * len * 0.5f;
  float hw = urange(r, 0.3f, 0.9f), s = urange(r, 0.3f, 0.8f);
  float *P = chance(r, 0.5f) ? w->D : w->B;
  segment(w, P, cx - dx, cy - dy, cx + dx, cy + dy, hw * 0.5f, hw, s * 0.6f, s, 0.0f, 0.0f);
}

/* ---- cracks: random walks with branching and a varying width -------------- */

typedef struct {
  float S;
  int branches_left;
} crack_ctx_t;

/* Walks from (x, y) along heading th for at most max_len pixels (stopping
 * outside the image), drawing as it goes. hw: starting half-width; taper:
 * 1 to thin the end to nothing; pbranch: chance per step to fork. */
static void crack_walk(ws_t *w, im_rng_t *r, crack_ctx_t *cc, float x, float y, float th, float hw, float depth,
                       float max_len, int taper_start, int taper_end, float pbranch, int level) {
  float S = cc->S, margin = 6.0f;
  float step = urange(r, 1.4f, 2.4f);
  float jitter = urange(r, 0.12f, 0.45f);         /* small-scale roughness of the path */
  float wander_s = urange(r, 0.01f, 0.06f);        /* slow change of direction */
  float pull = urange(r, 0.08f, 0.3f);             /* pull back towards the main heading */
  float wvar = urange(r, 0.08f, 0.35f);            /* width variation along the crack */
  float th0 = th, phi = 0.0f, lw_slow = 0.0f, lw_fast = 0.0f, dvar = 0.0f;
  float len = 0.0f, px = x, py = y, ph = hw, pd = depth;
  int steps = (int)(max_len / step) + 1;
  for (int i = 0; i < steps; i++) {
    th0 += wander_s * nrand(r) * 0.5f;
    phi = phi * (1.0f - pull) + jitter * nrand(r);
    float a = th0 + phi;
    float nx = px + cosf(a) * step, ny = py + sinf(a) * step;
    len += step;
    lw_slow = 0.96f * lw_slow + 0.28f * wvar * nrand(r);
    lw_fast = 0.5f * lw_fast + 0.4f * wvar * nrand(r);
    dvar = 0.95f * dvar + 0.3f * 0.15f * nrand(r);
    float f = 1.0f;
    float frac = len / max_len;
    if (taper_end && frac > 0.7f) f *= 1.0f - 0.85f * (frac - 0.7f) / 0.3f;
    if (taper_start && len < 12.0f) f *= 0.3f + 0.7f * len / 12.0f;
    float nh = hw * f * expf(lw_slow + lw_fast);
    if (nh > 2.0f * hw + 0.8f) nh = 2.0f * hw + 0.8f;
    if (nh < 0.25f) nh = 0.25f;
    float nd = clampf(depth * (1.0f + dvar), 0.25f, 0.97f);
    /* soft dark edges: the halo grows with the width */
    segment(w, w->D, px, py, nx, ny, ph, nh, pd, nd, 0.6f + 0.5f * nh, 0.35f);
    if (level < 2 && cc->branches_left > 0 && chance(r, pbranch)) {
      cc->branches_left--;
      float side = chance(r, 0.5f) ? 1.0f : -1.0f;
      float bth = a + side * urange(r, 0.3f, 1.1f);
      float blen = urange(r, 0.08f, 0.6f) * S;
      crack_walk(w, r, cc, nx, ny, bth, nh * urange(r, 0.45f, 0.85f), nd * urange(r, 0.8f, 1.0f), blen, 0, 1,
                 pbranch * 0.5f, level + 1);
    }
    px = nx;
    py = ny;
    ph = nh;
    pd = nd;
    if (px < -margin || py < -margin || px > S + margin || py > S + margin) break;
  }
}

/* One crack through the patch: grown in both directions from an inner point. */
static void crack(ws_t *w, im_rng_t *r, crack_ctx_t *cc, int thin) {
  float S = cc->S;
  float x = urange(r, 0.2f, 0.8f) * S, y = urange(r, 0.2f, 0.8f) * S;
  float th = urange(r, 0.0f, 6.2831853f);
  float hw;
  /* The main crack is seldom a hairline (as in the real set, where most cracks are
   * plainly visible); secondary cracks often are. */
  if (thin || chance(r, 0.08f))
    hw = urange(r, 0.45f, 0.8f); /* hairline */
  else
    hw = lurange(r, 0.8f, 2.6f);
  float depth = hw < 0.8f ? urange(r, 0.7f, 0.95f) : urange(r, 0.5f, 0.85f);
  float pb = chance(r, 0.45f) ? 0.0f : urange(r, 0.004f, 0.03f);
  /* most cracks run right across the patch; some end inside it */
  int ends_a = chance(r, 0.25f), ends_b = chance(r, 0.25f);
  float la = ends_a ? urange(r, 0.15f, 0.5f) * S : 3.0f * S;
  float lb = ends_b ? urange(r, 0.15f, 0.5f) * S : 3.0f * S;
  crack_walk(w, r, cc, x, y, th, hw, depth, la, 0, ends_a, pb, 0);
  crack_walk(w, r, cc, x, y, th + 3.14159265f, hw, depth, lb, 0, ends_b, pb, 0);
}

/* ======================================================================== */
/* one image                                                                */
/* ======================================================================== */

/* Renders one S x S RGB image of class cls into rgb (S*S*3 bytes). */
static void render(ws_t *w, im_rng_t *r, int cls, uint8_t *rgb) {
  int S = w->S;
  size_t n = (size_t)S * S;
  float Sf = (float)S;
  float *L = w->L;

  /* ---- texture: multi-octave value noise plus fine grain ---------------- */
  for (size_t k = 0; k < n; k++) L[k] = 0.0f;
  float rough = lurange(r, 0.018f, 0.06f);        /* overall texture contrast */
  float gain = urange(r, 0.72f, 0.98f);            /* rough (high) vs trowelled (low) finish */
  float cells = urange(r, 2.0f, 5.0f) * Sf / 227.0f;
  float amp = 1.0f;
  while (cells < Sf * 0.7f) {
    noise_add(w, L, cells, amp * rough, r);
    cells *= urange(r, 1.8f, 2.2f);
    amp *= gain;
  }
  float grain = lurange(r, 0.03f, 0.10f);         /* pixel-level sand grain */
  uint64_t ps = im_rng_next(r);
  for (size_t k = 0; k < n; k++) L[k] = 1.0f + L[k] + grain * fast_normal(px_next(&ps));

  /* ---- aggregate speckle: small soft lighter/darker spots --------------- */
  int nspeck = (int)(lurange(r, 30.0f, 700.0f) * Sf * Sf / (227.0f * 227.0f));
  float speck_c = lurange(r, 0.03f, 0.12f);
  for (int i = 0; i < nspeck; i++) {
    float rad = lurange(r, 0.6f, 2.8f);
    float a = speck_c * urange(r, 0.3f, 1.0f) * (chance(r, 0.5f) ? 1.0f : -1.0f);
    spot(w, urange(r, 0, Sf), urange(r, 0, Sf), rad, rad * urange(r, 0.6f, 1.0f), urange(r, 0, 3.1416f), a, 0.0f);
  }

  /* ---- pores: dark specks and holes with a slight bright rim ------------ */
  int npore = (int)(lurange(r, 3.0f, 180.0f) * Sf * Sf / (227.0f * 227.0f));
  if (chance(r, 0.15f)) npore = 0;
  float pore_dark = urange(r, 0.3f, 0.75f);
  for (int i = 0; i < npore; i++) {
    float rad = lurange(r, 0.5f, chance(r, 0.08f) ? 6.0f : 2.5f);
    float el = urange(r, 0.55f, 1.0f);
    spot(w, urange(r, 0, Sf), urange(r, 0, Sf), rad, rad * el, urange(r, 0, 3.1416f),
         clampf(pore_dark * urange(r, 0.5f, 1.2f), 0.1f, 0.9f), urange(r, 0.0f, 0.12f));
  }

  /* ---- stains: large soft blotches ------------------------------------- */
  int nstain = (int)im_rng_below(r, 3);
  for (int i = 0; i < nstain; i++)
    stain(w, r, urange(r, 0.03f, 0.11f) * (chance(r, 0.65f) ? -1.0f : 1.0f), urange(r, 0.2f, 0.5f), 0);

  /* ---- distractors (mostly negatives) and cracks (positives) ------------ */
  memset(w->D, 0, sizeof(float) * n);
  memset(w->B, 0, sizeof(float) * n);
  float k = cls == CLS_NEG ? 1.0f : 0.35f;
  if (chance(r, 0.22f * k)) { /* stain with a sharp edge */
    stain(w, r, urange(r, 0.05f, 0.16f) * (chance(r, 0.75f) ? -1.0f : 1.0f), urange(r, 0.015f, 0.06f), 1);
  }
  if (chance(r, 0.18f * k)) shadow(w, r, urange(r, 0.12f, 0.35f), urange(r, 2.0f, 0.15f * Sf));
  if (chance(r, 0.22f * k)) {
    float a = joint(w, r, -1.0f);
    if (chance(r, 0.2f)) joint(w, r, a);
  }
  if (chance(r, 0.25f * k)) {
    int ns = 1 + (int)im_rng_below(r, 4);
    for (int i = 0; i < ns; i++) scratch(w, r);
  }
  if (cls == CLS_POS) {
    crack_ctx_t cc = {Sf, 8};
    float u = frand(r);
    int ncr = u < 0.72f ? 1 : (u < 0.93f ? 2 : 3);
    for (int i = 0; i < ncr; i++) crack(w, r, &cc, i > 0 && chance(r, 0.5f));
  }
  /* dark lines take a little of the local texture (rough interior) */
  float line_grain = urange(r, 0.1f, 0.3f);
  for (size_t i = 0; i < n; i++) {
    float d = w->D[i];
    if (d > 0.0f) L[i] *= 1.0f - clampf(d * (1.0f + line_grain * (L[i] - 1.0f) * 4.0f), 0.0f, 0.97f);
    float b = w->B[i];
    if (b > 0.0f) L[i] *= 1.0f + 0.25f * b;
  }

  /* ---- lighting: linear gradient and radial falloff ---------------------- */
  float gx = nrand(r) * 0.12f, gy = nrand(r) * 0.12f;
  float vc = chance(r, 0.5f) ? urange(r, 0.0f, 0.3f) : 0.0f;
  float vcx = urange(r, -0.5f, 1.5f) * Sf, vcy = urange(r, -0.5f, 1.5f) * Sf, vinv = 1.0f / (Sf * Sf * 2.0f);
  for (int y = 0; y < S; y++) {
    float fy = (float)y / Sf - 0.5f, dy2 = ((float)y - vcy) * ((float)y - vcy);
    for (int x = 0; x < S; x++) {
      float fx = (float)x / Sf - 0.5f, dx = (float)x - vcx;
      float v = 1.0f + gx * fx + gy * fy - vc * (dx * dx + dy2) * vinv;
      L[(size_t)y * S + x] *= v > 0.2f ? v : 0.2f;
    }
  }

  /* ---- slight blur (focus, JPEG of the source photo) --------------------- */
  float blur = urange(r, 0.2f, 1.0f);
  blur121(w, L, blur);
  if (chance(r, 0.25f)) blur121(w, L, urange(r, 0.3f, 1.0f));

  /* ---- colour: per-image grey level and tint, faint chroma mottling ------ */
  float base = urange(r, 110.0f, 210.0f);
  float tint = urange(r, -0.035f, 0.07f); /* < 0 cool (bluish) grey, > 0 warm (beige) */
  float sat = urange(r, 0.0f, 1.0f);
  float tr = 1.0f + tint * 1.0f, tg = 1.0f + tint * 0.3f * sat, tb = 1.0f - tint * 0.9f;
  memset(w->C, 0, sizeof(float) * n);
  noise_add(w, w->C, urange(r, 1.5f, 4.0f), urange(r, 0.005f, 0.025f), r);
  float noise_l = urange(r, 0.8f, 3.5f), noise_c = urange(r, 0.3f, 1.5f);
  for (size_t i = 0; i < n; i++) {
    float v = base * L[i];
    float c = w->C[i];
    uint64_t u = px_next(&ps);
    float nl = noise_l * fast_normal(u);
    uint64_t u2 = px_next(&ps);
    float nr = noise_c * fast_normal(u2), nb = noise_c * fast_normal((u2 >> 7) | (u2 << 57));
    float R = v * (tr + c) + nl + nr, G = v * tg + nl, Bc = v * (tb - c) + nl + nb;
    rgb[3 * i + 0] = (uint8_t)clampf(R + 0.5f, 0.0f, 255.0f);
    rgb[3 * i + 1] = (uint8_t)clampf(G + 0.5f, 0.0f, 255.0f);
    rgb[3 * i + 2] = (uint8_t)clampf(Bc + 0.5f, 0.0f, 255.0f);
  }
}

/* ======================================================================== */
/* the data set                                                             */
/* ======================================================================== */

typedef struct {
  const im_surface_opts_t *o;
  int64_t n_neg, n_pos, base;    /* base: first global item of this chunk */
  int digits;
  im_status_t st[CHUNK];
  char msg[CHUNK][256];
} gen_ctx_t;

static void item_of(const gen_ctx_t *g, int64_t i, int *cls, int64_t *idx) {
  if (i < g->n_neg) {
    *cls = CLS_NEG;
    *idx = i;
  } else {
    *cls = CLS_POS;
    *idx = i - g->n_neg;
  }
}

static char *image_path(const char *out, int cls, int64_t idx, int digits) {
  char name[64];
  snprintf(name, sizeof name, "%s/%0*lld.jpg", class_dir[cls], digits, (long long)(idx + 1));
  return im_path_join(out, name);
}

static im_status_t make_one(const gen_ctx_t *g, int64_t i) {
  const im_surface_opts_t *o = g->o;
  int cls;
  int64_t idx;
  item_of(g, i, &cls, &idx);
  im_rng_t r;
  im_rng_seed(&r, im_rng_derive(o->seed, ((uint64_t)cls << 40) ^ (uint64_t)idx));
  ws_t w;
  im_status_t st = ws_init(&w, o->size);
  if (st) return st;
  im_image_t img = {0};
  st = im_image_alloc(&img, o->size, o->size, 3);
  if (st) {
    ws_free(&w);
    return st;
  }
  render(&w, &r, cls, img.data);
  ws_free(&w);
  uint8_t *jpg = NULL;
  size_t len = 0;
  st = im_image_encode_jpeg(&img, o->quality > 0 ? o->quality : 90, &jpg, &len);
  im_image_free(&img);
  if (st) return st;
  char *path = image_path(o->out_dir, cls, idx, g->digits);
  if (!path) {
    im_free(jpg);
    return im_error(IM_ERR_NOMEM, "surface: out of memory");
  }
  st = im_file_write_atomic_ex(path, jpg, len, 0);
  im_free(jpg);
  im_free(path);
  return st;
}

static void gen_item(void *ctx, int64_t j, int thread) {
  gen_ctx_t *g = ctx;
  im_status_t st = make_one(g, g->base + j);
  g->st[j] = st;
  if (st) snprintf(g->msg[j], sizeof g->msg[j], "%s", im_last_error());
}

/* ---- contact sheet -------------------------------------------------------- */

/* 5x7 glyphs for the row labels, one byte per row, bit 4 = leftmost. */
static const struct {
  char c;
  uint8_t rows[7];
} glyphs[] = {
    {'N', {0x11, 0x19, 0x15, 0x13, 0x11, 0x11, 0x11}}, {'E', {0x1F, 0x10, 0x10, 0x1E, 0x10, 0x10, 0x1F}},
    {'G', {0x0E, 0x11, 0x10, 0x17, 0x11, 0x11, 0x0F}}, {'A', {0x0E, 0x11, 0x11, 0x1F, 0x11, 0x11, 0x11}},
    {'T', {0x1F, 0x04, 0x04, 0x04, 0x04, 0x04, 0x04}}, {'I', {0x0E, 0x04, 0x04, 0x04, 0x04, 0x04, 0x0E}},
    {'V', {0x11, 0x11, 0x11, 0x11, 0x11, 0x0A, 0x04}}, {'P', {0x1E, 0x11, 0x11, 0x1E, 0x10, 0x10, 0x10}},
    {'O', {0x0E, 0x11, 0x11, 0x11, 0x11, 0x11, 0x0E}}, {'S', {0x0F, 0x10, 0x10, 0x0E, 0x01, 0x01, 0x1E}},
};

static void put_rect(im_image_t *img, int x0, int y0, int w, int h, const uint8_t col[3]) {
  for (int y = y0; y < y0 + h && y < img->h; y++)
    for (int x = x0; x < x0 + w && x < img->w; x++)
      if (x >= 0 && y >= 0) memcpy(img->data + ((size_t)y * img->w + x) * 3, col, 3);
}

static void put_text(im_image_t *img, int x, int y, int scale, const char *s, const uint8_t col[3]) {
  for (; *s; s++, x += 6 * scale) {
    for (size_t g = 0; g < sizeof glyphs / sizeof glyphs[0]; g++) {
      if (glyphs[g].c != *s) continue;
      for (int row = 0; row < 7; row++)
        for (int bit = 0; bit < 5; bit++)
          if (glyphs[g].rows[row] & (0x10 >> bit)) put_rect(img, x + bit * scale, y + row * scale, scale, scale, col);
    }
  }
}

static im_status_t write_sheet(const im_surface_opts_t *o, int64_t n_neg, int64_t n_pos, int digits) {
  int S = o->size, gap = 3, label_h = 22;
  int64_t per[2] = {n_neg < 4 ? n_neg : 4, n_pos < 4 ? n_pos : 4};
  int cols = (int)(per[0] > per[1] ? per[0] : per[1]);
  int W = gap + cols * (S + gap), H = 2 * (label_h + S + gap) + gap;
  im_image_t sheet = {0};
  im_status_t st = im_image_alloc(&sheet, W, H, 3);
  if (st) return st;
  static const uint8_t bg[3] = {34, 34, 38}, white[3] = {235, 235, 235};
  static const uint8_t colour[2][3] = {{70, 160, 90}, {205, 70, 60}};
  put_rect(&sheet, 0, 0, W, H, bg);
  for (int cls = 0; cls < 2 && st == IM_OK; cls++) {
    int y0 = gap + cls * (label_h + S + gap);
    put_rect(&sheet, gap, y0 + 4, 14, 14, colour[cls]);
    put_text(&sheet, gap + 22, y0 + 4, 2, cls == CLS_NEG ? "NEGATIVE" : "POSITIVE", white);
    put_rect(&sheet, gap, y0 + label_h - 3, W - 2 * gap, 2, colour[cls]);
    for (int64_t j = 0; j < per[cls]; j++) {
      char *path = image_path(o->out_dir, cls, j, digits);
      if (!path) {
        st = im_error(IM_ERR_NOMEM, "surface: out of memory");
        break;
      }
      im_image_t tile = {0};
      im_decode_opts_t dopt = IM_DECODE_OPTS_DEFAULT;
      dopt.channels = 3;
      st = im_image_load(path, &dopt, &tile);
      im_free(path);
      if (st) break;
      int x0 = gap + (int)j * (S + gap), ty = y0 + label_h;
      for (int y = 0; y < S && y < tile.h; y++)
        memcpy(sheet.data + ((size_t)(ty + y) * W + x0) * 3, tile.data + (size_t)y * tile.w * 3,
               (size_t)(tile.w < S ? tile.w : S) * 3);
      im_image_free(&tile);
    }
  }
  if (st == IM_OK) st = im_image_save(o->sheet_path, &sheet, 90);
  im_image_free(&sheet);
  return st;
}

/* ---- entry point ------------------------------------------------------------- */

im_status_t im_data_surface_generate(const im_surface_opts_t *opts) {
  if (!opts || !opts->out_dir || !*opts->out_dir) return im_error(IM_ERR_ARG, "surface: no output directory given");
  if (opts->count < 2 || opts->count > MAX_COUNT)
    return im_error(IM_ERR_ARG, "surface: count must be from 2 to %lld (one image of each class at least), not %lld",
                    MAX_COUNT, (long long)opts->count);
  if (opts->size < MIN_SIZE || opts->size > MAX_SIZE)
    return im_error(IM_ERR_ARG, "surface: size must be from %d to %d pixels, not %d", MIN_SIZE, MAX_SIZE, opts->size);
  if (opts->quality < 0 || opts->quality > 100)
    return im_error(IM_ERR_ARG, "surface: JPEG quality must be from 1 to 100, not %d", opts->quality);
  if (opts->threads < 0) return im_error(IM_ERR_ARG, "surface: threads must be >= 0, not %d", opts->threads);

  gen_ctx_t *g = im_calloc(1, sizeof *g);
  if (!g) return im_error(IM_ERR_NOMEM, "surface: out of memory");
  g->o = opts;
  g->n_neg = (opts->count + 1) / 2;
  g->n_pos = opts->count / 2;
  g->digits = 5;
  for (int64_t m = 100000; m <= g->n_neg; m *= 10) g->digits++;

  im_status_t st = im_mkdir_p(opts->out_dir);
  for (int cls = 0; cls < 2 && st == IM_OK; cls++) {
    char *d = im_path_join(opts->out_dir, class_dir[cls]);
    st = d ? im_mkdir_p(d) : im_error(IM_ERR_NOMEM, "surface: out of memory");
    im_free(d);
  }
  if (st) {
    im_free(g);
    return st;
  }

  int64_t total = opts->count;
  if (opts->progress) opts->progress(opts->progress_user, "generate", 0, total);
  for (int64_t base = 0; base < total && st == IM_OK; base += CHUNK) {
    int64_t m = total - base < CHUNK ? total - base : CHUNK;
    g->base = base;
    st = im_parallel_for(m, opts->threads, gen_item, g);
    for (int64_t j = 0; j < m && st == IM_OK; j++)
      if (g->st[j]) st = im_error(g->st[j], "%s", g->msg[j][0] ? g->msg[j] : im_strerror(g->st[j]));
    if (st == IM_OK && opts->progress) opts->progress(opts->progress_user, "generate", base + m, total);
  }
  if (st == IM_OK && opts->sheet_path) st = write_sheet(opts, g->n_neg, g->n_pos, g->digits);
  im_free(g);
  return st;
}
