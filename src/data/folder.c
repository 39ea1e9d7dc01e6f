/* ImageFolder scanning, as torchvision's ImageFolder sees a folder: classes
 * are the sub-folders sorted by name, images are the files under each with an
 * image extension, found recursively and sorted. Hidden entries are skipped. */
#include <dirent.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "data_impl.h"

int im__is_image_name(const char *name) {
  const char *dot = strrchr(name, '.');
  if (!dot) return 0;
  return !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg") || !strcasecmp(dot, ".png");
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

typedef struct {
  char **v;
  size_t n, cap;
} strvec_t;

static im_status_t strvec_push(strvec_t *s, const char *x) {
  if (s->n == s->cap) {
    size_t cap = s->cap ? s->cap * 2 : 64;
    char **nv = im_realloc(s->v, cap * sizeof *nv);
    if (!nv) return im_error(IM_ERR_NOMEM, "out of memory scanning folders");
    s->v = nv;
    s->cap = cap;
  }
  if (!(s->v[s->n] = im_strdup(x))) return im_error(IM_ERR_NOMEM, "out of memory scanning folders");
  s->n++;
  return IM_OK;
}

static void strvec_free(strvec_t *s) {
  for (size_t i = 0; i < s->n; i++) im_free(s->v[i]);
  im_free(s->v);
  memset(s, 0, sizeof *s);
}

/* Lists the non-hidden entries of dir: files with image names into files,
 * sub-folders into dirs (names only), both sorted. */
static im_status_t list_dir(const char *dir, strvec_t *files, strvec_t *dirs) {
  DIR *d = opendir(dir);
  if (!d) return im_error(errno == ENOENT ? IM_ERR_NOT_FOUND : IM_ERR_IO, "cannot open folder %s: %s", dir, strerror(errno));
  im_status_t st = IM_OK;
  struct dirent *e;
  while ((e = readdir(d))) {
    if (e->d_name[0] == '.') continue;
    int is_dir = 0, is_file = 0;
    if (e->d_type == DT_DIR)
      is_dir = 1;
    else if (e->d_type == DT_REG)
      is_file = 1;
    else if (e->d_type == DT_LNK || e->d_type == DT_UNKNOWN) { /* follow links, as os.walk(followlinks=True) */
      char *p = im_path_join(dir, e->d_name);
      struct stat sb;
      if (p && stat(p, &sb) == 0) {
        is_dir = S_ISDIR(sb.st_mode);
        is_file = S_ISREG(sb.st_mode);
      } else
        is_file = 1; /* a dangling link with an image name: reading it will report why */
      im_free(p);
    }
    if (is_dir && dirs)
      st = strvec_push(dirs, e->d_name);
    else if (is_file && files && im__is_image_name(e->d_name))
      st = strvec_push(files, e->d_name);
    if (st) break;
  }
  closedir(d);
  if (files && files->n) qsort(files->v, files->n, sizeof *files->v, cmp_str);
  if (dirs && dirs->n) qsort(dirs->v, dirs->n, sizeof *dirs->v, cmp_str);
  return st;
}

static im_status_t add_file(im__folder_t *f, size_t *cap, const char *rel, int label) {
  if ((size_t)f->n_files == *cap) {
    size_t nc = *cap ? *cap * 2 : 1024;
    im__folder_file_t *nf = im_realloc(f->files, nc * sizeof *nf);
    if (!nf) return im_error(IM_ERR_NOMEM, "out of memory scanning folders");
    f->files = nf;
    *cap = nc;
  }
  char *r = im_strdup(rel);
  if (!r) return im_error(IM_ERR_NOMEM, "out of memory scanning folders");
  f->files[f->n_files++] = (im__folder_file_t){r, label};
  return IM_OK;
}

/* Adds the images under root/rel (recursively) with the given label. */
static im_status_t scan_class(const char *root, const char *rel, int label, int depth, im__folder_t *f, size_t *cap) {
  if (depth > 32) return im_error(IM_ERR_LIMIT, "folders nested deeper than 32 levels under %s/%s", root, rel);
  char *dir = im_path_join(root, rel);
  if (!dir) return im_error(IM_ERR_NOMEM, "out of memory");
  strvec_t files = {0}, dirs = {0};
  im_status_t st = list_dir(dir, &files, &dirs);
  im_free(dir);
  for (size_t i = 0; !st && i < files.n; i++) {
    char *r = im_path_join(rel, files.v[i]);
    st = r ? add_file(f, cap, r, label) : im_error(IM_ERR_NOMEM, "out of memory");
    im_free(r);
  }
  for (size_t i = 0; !st && i < dirs.n; i++) {
    char *r = im_path_join(rel, dirs.v[i]);
    st = r ? scan_class(root, r, label, depth + 1, f, cap) : im_error(IM_ERR_NOMEM, "out of memory");
    im_free(r);
  }
  strvec_free(&files);
  strvec_free(&dirs);
  return st;
}

im_status_t im__folder_scan(const char *root, im__folder_t *out) {
  memset(out, 0, sizeof *out);
  if (!im_is_dir(root)) return im_error(IM_ERR_NOT_FOUND, "%s is not a folder", root);
  strvec_t classes = {0}, top_files = {0};
  im_status_t st = list_dir(root, &top_files, &classes);
  if (st) goto fail;
  if (classes.n == 0) {
    st = im_error(IM_ERR_FORMAT,
                  top_files.n ? "%s is not an ImageFolder: it holds images but no class sub-folders (expected %s/<class>/<image>)"
                              : "%s is not an ImageFolder: no class sub-folders (expected %s/<class>/<image>)",
                  root, root);
    goto fail;
  }
  if (classes.n > 65535) {
    st = im_error(IM_ERR_LIMIT, "%s has %zu class folders; at most 65535", root, classes.n);
    goto fail;
  }
  out->n_classes = (int)classes.n;
  out->classes = classes.v;
  classes.v = NULL;
  classes.n = classes.cap = 0;
  size_t cap = 0;
  for (int k = 0; k < out->n_classes && !st; k++) st = scan_class(root, out->classes[k], k, 0, out, &cap);
  if (st) goto fail;
  strvec_free(&top_files);
  return IM_OK;
fail:
  strvec_free(&classes);
  strvec_free(&top_files);
  im__folder_free(out);
  return st;
}

void im__folder_free(im__folder_t *f) {
  if (!f) return;
  for (int k = 0; k < f->n_classes; k++) im_free(f->classes[k]);
  im_free(f->classes);
  for (int64_t i = 0; i < f->n_files; i++) im_free(f->files[i].rel);
  im_free(f->files);
  memset(f, 0, sizeof *f);
}
