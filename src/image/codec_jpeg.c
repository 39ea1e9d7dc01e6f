/* JPEG through libjpeg-turbo's TurboJPEG API (2.x, the tj* functions): header
 * probe, decode with DCT-domain downscaling, encode. Warnings from the decoder
 * (truncated or corrupt data) are errors: a damaged file never comes back as
 * a half-grey image. */
#include <limits.h>
#include <string.h>

#include <turbojpeg.h>

#include "image/image_internal.h"
#include "imops/core.h"

/* Decoder flags: stop at the first warning (it is an error for us anyway, and
 * this keeps corrupt inputs cheap) and refuse progressive files with absurd
 * scan counts (a known denial-of-service pattern). Accurate (islow) DCT is the
 * default. */
#define JPEG_DECODE_FLAGS (TJFLAG_STOPONWARNING | TJFLAG_LIMITSCANS)

static im_status_t tj_fail(tjhandle h, const char *what) {
  int warn = tjGetErrorCode(h) == TJERR_WARNING;
  const char *msg = tjGetErrorStr2(h);
  return im_error(IM_ERR_FORMAT, "jpeg: %s%s (%s)", warn ? "corrupt or truncated data: " : "", msg ? msg : "unknown error",
                  what);
}

static im_status_t read_header(tjhandle h, const uint8_t *data, size_t len, int *w, int *hh, int *cs) {
  if (len > ULONG_MAX) return im_error(IM_ERR_LIMIT, "jpeg: input too large");
  int subsamp = 0;
  if (tjDecompressHeader3(h, data, (unsigned long)len, w, hh, &subsamp, cs) != 0) return tj_fail(h, "reading header");
  if (*w <= 0 || *hh <= 0) return im_error(IM_ERR_FORMAT, "jpeg: invalid dimensions %dx%d", *w, *hh);
  return IM_OK;
}

im_status_t im_image__jpeg_probe(const uint8_t *data, size_t len, im_image_info_t *info) {
  tjhandle h = tjInitDecompress();
  if (!h) return im_error(IM_ERR_NOMEM, "jpeg: cannot create decoder");
  int w = 0, hh = 0, cs = 0;
  im_status_t st = read_header(h, data, len, &w, &hh, &cs);
  tjDestroy(h);
  if (st != IM_OK) return st;
  info->format = IM_FORMAT_JPEG;
  info->w = w;
  info->h = hh;
  info->channels = cs == TJCS_GRAY ? 1 : 3;
  return IM_OK;
}

/* The smallest of the scales 1, 1/2, 1/4, 1/8 (those the library offers) that
 * keeps the result at least min_w x min_h; 1/1 when no minimum is set. */
static tjscalingfactor choose_scale(int w, int h, int min_w, int min_h) {
  tjscalingfactor best = {1, 1};
  if (min_w <= 0 && min_h <= 0) return best;
  int n = 0;
  const tjscalingfactor *sf = tjGetScalingFactors(&n);
  if (!sf) return best;
  int64_t best_px = (int64_t)w * h;
  for (int i = 0; i < n; i++) {
    if (sf[i].num != 1 || (sf[i].denom != 2 && sf[i].denom != 4 && sf[i].denom != 8)) continue;
    int sw = TJSCALED(w, sf[i]), sh = TJSCALED(h, sf[i]);
    if (sw < min_w || sh < min_h) continue;
    if ((int64_t)sw * sh < best_px) {
      best_px = (int64_t)sw * sh;
      best = sf[i];
    }
  }
  return best;
}

/* Adobe-style CMYK (stored inverted, as PIL assumes with "CMYK;I") to RGB with
 * PIL's cmyk2rgb arithmetic. In place: 4 bytes in, 3 out, forward. */
static void cmyk_to_rgb(uint8_t *p, size_t npix) {
  for (size_t i = 0; i < npix; i++) {
    int c = 255 - p[4 * i], m = 255 - p[4 * i + 1], y = 255 - p[4 * i + 2], nk = p[4 * i + 3];
    int t;
    t = c * nk + 128;
    int r = nk - (((t >> 8) + t) >> 8);
    t = m * nk + 128;
    int g = nk - (((t >> 8) + t) >> 8);
    t = y * nk + 128;
    int b = nk - (((t >> 8) + t) >> 8);
    p[3 * i] = (uint8_t)(r < 0 ? 0 : r);
    p[3 * i + 1] = (uint8_t)(g < 0 ? 0 : g);
    p[3 * i + 2] = (uint8_t)(b < 0 ? 0 : b);
  }
}

im_status_t im_image__jpeg_decode(const uint8_t *data, size_t len, const im_decode_opts_t *opts, im_image_t *out) {
  int want = opts ? opts->channels : 0;
  tjhandle h = tjInitDecompress();
  if (!h) return im_error(IM_ERR_NOMEM, "jpeg: cannot create decoder");
  uint8_t *buf = NULL;
  int w = 0, hh = 0, cs = 0;
  im_status_t st = read_header(h, data, len, &w, &hh, &cs);
  if (st == IM_OK) st = im_image__check_dims("jpeg", w, hh, opts);
  if (st != IM_OK) goto done;

  tjscalingfactor sf = choose_scale(w, hh, opts ? opts->min_w : 0, opts ? opts->min_h : 0);
  int sw = TJSCALED(w, sf), sh = TJSCALED(hh, sf);
  int pf, c;
  if (cs == TJCS_GRAY) {
    pf = want == 3 ? TJPF_RGB : TJPF_GRAY;
  } else if (cs == TJCS_CMYK || cs == TJCS_YCCK) {
    pf = TJPF_CMYK;
  } else {
    pf = TJPF_RGB;
  }
  c = tjPixelSize[pf];
  size_t npix = (size_t)sw * (size_t)sh;
  buf = im_malloc(npix * (size_t)c);
  if (!buf) {
    st = im_error(IM_ERR_NOMEM, "jpeg: out of memory for %dx%dx%d", sw, sh, c);
    goto done;
  }
  if (tjDecompress2(h, data, (unsigned long)len, buf, sw, 0, sh, pf, JPEG_DECODE_FLAGS) != 0) {
    st = tj_fail(h, "decoding");
    goto done;
  }
  if (pf == TJPF_CMYK) {
    cmyk_to_rgb(buf, npix);
    uint8_t *p = im_realloc(buf, npix * 3);
    if (p) buf = p;
    c = 3;
  }
  st = im_image__fix_channels(&buf, npix, &c, want);
  if (st != IM_OK) goto done;
  out->w = sw;
  out->h = sh;
  out->c = c;
  out->data = buf;
  buf = NULL;
done:
  im_free(buf);
  tjDestroy(h);
  return st;
}

im_status_t im_image_encode_jpeg(const im_image_t *img, int quality, uint8_t **out, size_t *len) {
  if (!out || !len) return im_error(IM_ERR_ARG, "jpeg encode: NULL output");
  *out = NULL;
  *len = 0;
  if (!img || !img->data || img->w <= 0 || img->h <= 0 || img->w > IM_IMAGE__MAX_DIM || img->h > IM_IMAGE__MAX_DIM ||
      (img->c != 1 && img->c != 3))
    return im_error(IM_ERR_ARG, "jpeg encode: invalid image (need 1 or 3 channels)");
  if (quality < 1 || quality > 100) return im_error(IM_ERR_ARG, "jpeg encode: quality %d outside 1..100", quality);
  int subsamp = img->c == 1 ? TJSAMP_GRAY : TJSAMP_420;
  int pf = img->c == 1 ? TJPF_GRAY : TJPF_RGB;
  unsigned long cap = tjBufSize(img->w, img->h, subsamp);
  if (cap == (unsigned long)-1 || cap > SIZE_MAX) return im_error(IM_ERR_LIMIT, "jpeg encode: image too large");
  tjhandle h = tjInitCompress();
  if (!h) return im_error(IM_ERR_NOMEM, "jpeg: cannot create encoder");
  /* Our own worst-case buffer with NOREALLOC: what we hand out comes from the
   * allocation funnel, so callers free it with im_free. */
  unsigned char *buf = im_malloc((size_t)cap);
  im_status_t st = IM_OK;
  if (!buf) {
    st = im_error(IM_ERR_NOMEM, "jpeg encode: out of memory");
  } else {
    unsigned char *jb = buf;
    unsigned long jl = cap;
    if (tjCompress2(h, img->data, img->w, 0, img->h, pf, &jb, &jl, subsamp, quality, TJFLAG_NOREALLOC) != 0) {
      st = im_error(IM_ERR_INTERNAL, "jpeg encode: %s", tjGetErrorStr2(h));
      im_free(buf);
    } else {
      uint8_t *p = im_realloc(buf, jl ? jl : 1);
      *out = p ? p : buf;
      *len = jl;
    }
  }
  tjDestroy(h);
  return st;
}
