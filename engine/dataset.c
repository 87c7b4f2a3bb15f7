#define _POSIX_C_SOURCE 200809L /* strdup, strcasecmp, dirent, stat */

#include "vapo/dataset.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <zlib.h>

#include "vapo/error.h"
#include "vapo/image.h"

#define IDX_MAX_SIDE 4096

void vapo_dataset_free(vapo_dataset *ds)
{
    if (!ds)
        return;
    free(ds->pixels);
    free(ds->labels);
    free(ds);
}

/* A dataset with room for n images of c x h x w (and labels if asked). */
static int dataset_new(int n, int c, int h, int w, int with_labels, const char *source,
                       vapo_dataset **out)
{
    *out = NULL;
    size_t per = (size_t)c * h * w;
    if (n <= 0 || per == 0 || (size_t)n > SIZE_MAX / per)
        return vapo_fail("%s: bad dataset size %d x %d x %d x %d", source, n, c, h, w);
    vapo_dataset *ds = calloc(1, sizeof *ds);
    if (!ds)
        return vapo_fail("%s: out of memory", source);
    ds->n = n;
    ds->c = c;
    ds->h = h;
    ds->w = w;
    snprintf(ds->source, sizeof ds->source, "%s", source);
    ds->pixels = malloc(per * n);
    if (with_labels)
        ds->labels = malloc(sizeof(int) * n);
    if (!ds->pixels || (with_labels && !ds->labels)) {
        vapo_dataset_free(ds);
        return vapo_fail("%s: out of memory for %d images of %dx%dx%d", source, n, c, h, w);
    }
    *out = ds;
    return 0;
}

static int is_dir(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

static int is_file(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int join(char *dst, size_t cap, const char *dir, const char *name)
{
    int k = snprintf(dst, cap, "%s/%s", dir, name);
    if (k < 0 || (size_t)k >= cap)
        return vapo_fail("%s/%s: path too long", dir, name);
    return 0;
}

/* ---- idx ------------------------------------------------------------------------------ */

static uint32_t be32(const unsigned char *b)
{
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | b[3];
}

/* Reads exactly `want` bytes from f into a new buffer. The buffer grows as
 * data arrives, so a hostile header claiming terabytes costs nothing before
 * the file runs out. Then checks that nothing follows. */
static int gz_read_body(gzFile f, const char *path, size_t want, const char *what,
                        unsigned char **out)
{
    *out = NULL;
    size_t cap = want < ((size_t)64 << 20) ? want : ((size_t)64 << 20), got = 0;
    unsigned char *buf = malloc(cap ? cap : 1);
    if (!buf)
        return vapo_fail("%s: out of memory", path);
    while (got < want) {
        if (got == cap) {
            size_t ncap = cap > want / 2 ? want : cap * 2;
            unsigned char *nb = realloc(buf, ncap);
            if (!nb) {
                free(buf);
                return vapo_fail("%s: out of memory for %zu bytes", path, want);
            }
            buf = nb;
            cap = ncap;
        }
        size_t chunk = cap - got < ((size_t)1 << 30) ? cap - got : ((size_t)1 << 30);
        int r = gzread(f, buf + got, (unsigned)chunk);
        if (r < 0) {
            int zerr;
            const char *m = gzerror(f, &zerr);
            free(buf);
            return vapo_fail("%s: corrupt data (%s)", path, m);
        }
        if (r == 0) {
            free(buf);
            return vapo_fail("%s: truncated: %zu of %zu bytes of %s", path, got, want, what);
        }
        got += (size_t)r;
    }
    unsigned char extra[256];
    int r = gzread(f, extra, sizeof extra);
    if (r != 0) {
        free(buf);
        if (r < 0)
            return vapo_fail("%s: corrupt data after the %s", path, what);
        return vapo_fail("%s: unexpected bytes after the %zu bytes of %s "
                         "(wrong dimensions in the header?)", path, want, what);
    }
    *out = buf;
    return 0;
}

/* Opens an idx file, checks magic (unsigned bytes, `ndims` dimensions) and
 * returns the dimensions. */
static int idx_open(const char *path, int ndims, gzFile *f, uint32_t *dims)
{
    errno = 0;
    *f = gzopen(path, "rb");
    if (!*f)
        return vapo_fail("%s: cannot open: %s", path, errno ? strerror(errno) : "gzopen failed");
    unsigned char hdr[16];
    size_t need = 4 + 4 * (size_t)ndims;
    int r = gzread(*f, hdr, (unsigned)need);
    if (r < 0 || (size_t)r < need) {
        gzclose(*f);
        *f = NULL;
        return vapo_fail("%s: truncated or unreadable idx header (%d of %zu bytes)", path,
                         r < 0 ? 0 : r, need);
    }
    uint32_t magic = be32(hdr), want = 0x0800u | (uint32_t)ndims;
    if (magic != want) {
        gzclose(*f);
        *f = NULL;
        return vapo_fail("%s: wrong magic 0x%08x (want 0x%08x, an idx%d-ubyte %s file)", path,
                         magic, want, ndims, ndims == 3 ? "image" : "label");
    }
    for (int i = 0; i < ndims; i++)
        dims[i] = be32(hdr + 4 + 4 * i);
    return 0;
}

int vapo_dataset_load_idx(const char *images_path, const char *labels_path, vapo_dataset **out)
{
    *out = NULL;
    gzFile f;
    uint32_t d[3];
    if (idx_open(images_path, 3, &f, d))
        return -1;
    if (d[0] == 0 || d[0] > INT32_MAX || d[1] == 0 || d[2] == 0 || d[1] > IDX_MAX_SIDE ||
        d[2] > IDX_MAX_SIDE) {
        gzclose(f);
        return vapo_fail("%s: wrong dimensions %u x %u x %u (want n > 0 images of "
                         "1..%d pixels a side)", images_path, d[0], d[1], d[2], IDX_MAX_SIDE);
    }
    unsigned char *pix;
    int rc = gz_read_body(f, images_path, (size_t)d[0] * d[1] * d[2], "pixel data", &pix);
    gzclose(f);
    if (rc)
        return -1;

    unsigned char *lab = NULL;
    if (labels_path) {
        uint32_t nl = 0;
        if (idx_open(labels_path, 1, &f, &nl)) {
            free(pix);
            return -1;
        }
        if (nl != d[0]) {
            gzclose(f);
            free(pix);
            return vapo_fail("%s: %u labels, but %s has %u images", labels_path, nl,
                             images_path, d[0]);
        }
        rc = gz_read_body(f, labels_path, nl, "labels", &lab);
        gzclose(f);
        if (rc) {
            free(pix);
            return -1;
        }
    }

    vapo_dataset *ds = calloc(1, sizeof *ds);
    int *labels = lab ? malloc(sizeof(int) * d[0]) : NULL;
    if (!ds || (lab && !labels)) {
        free(ds);
        free(labels);
        free(pix);
        free(lab);
        return vapo_fail("%s: out of memory", images_path);
    }
    for (uint32_t i = 0; lab && i < d[0]; i++)
        labels[i] = lab[i];
    free(lab);
    ds->n = (int)d[0];
    ds->c = 1;
    ds->h = (int)d[1];
    ds->w = (int)d[2];
    ds->pixels = pix;
    ds->labels = labels;
    snprintf(ds->source, sizeof ds->source, "%s", images_path);
    *out = ds;
    return 0;
}

/* ---- CIFAR-10 ---------------------------------------------------------------------------- */

#define CIFAR_PIX 3072
#define CIFAR_REC (1 + CIFAR_PIX)

int vapo_dataset_load_cifar10(const char *dir, const char *split, vapo_dataset **out)
{
    *out = NULL;
    char base[4096], paths[5][4096];
    int nfiles;
    if (join(base, sizeof base, dir, "cifar-10-batches-bin"))
        return -1;
    if (!is_dir(base))
        snprintf(base, sizeof base, "%s", dir);
    if (!is_dir(base))
        return vapo_fail("%s: not a folder", dir);
    if (!strcmp(split, "train")) {
        nfiles = 5;
        for (int i = 0; i < 5; i++) {
            char name[32];
            snprintf(name, sizeof name, "data_batch_%d.bin", i + 1);
            if (join(paths[i], sizeof paths[i], base, name))
                return -1;
        }
    } else if (!strcmp(split, "test")) {
        nfiles = 1;
        if (join(paths[0], sizeof paths[0], base, "test_batch.bin"))
            return -1;
    } else {
        return vapo_fail("CIFAR-10: unknown split \"%s\" (want train or test)", split);
    }

    /* Sizes first, so that the store is allocated once and a bad file is
     * reported before any large read. */
    long records[5], total = 0;
    for (int i = 0; i < nfiles; i++) {
        struct stat st;
        if (stat(paths[i], &st) != 0)
            return vapo_fail("%s: missing CIFAR-10 batch: %s", paths[i], strerror(errno));
        if (st.st_size == 0 || st.st_size % CIFAR_REC != 0)
            return vapo_fail("%s: size %lld is not a positive multiple of %d bytes "
                             "(truncated, or not a CIFAR-10 binary batch)",
                             paths[i], (long long)st.st_size, CIFAR_REC);
        records[i] = (long)(st.st_size / CIFAR_REC);
        total += records[i];
        if (total > INT32_MAX / 2)
            return vapo_fail("%s: too many records", paths[i]);
    }

    vapo_dataset *ds;
    if (dataset_new((int)total, 3, 32, 32, 1, base, &ds))
        return -1;
    long k = 0;
    for (int i = 0; i < nfiles; i++) {
        FILE *f = fopen(paths[i], "rb");
        if (!f) {
            vapo_dataset_free(ds);
            return vapo_fail("%s: cannot open: %s", paths[i], strerror(errno));
        }
        unsigned char rec[CIFAR_REC];
        for (long r = 0; r < records[i]; r++, k++) {
            if (fread(rec, 1, CIFAR_REC, f) != CIFAR_REC) {
                fclose(f);
                vapo_dataset_free(ds);
                return vapo_fail("%s: truncated at record %ld", paths[i], r);
            }
            /* There is no magic number; a label outside 0..9 is the sign of a wrong file. */
            if (rec[0] > 9) {
                fclose(f);
                vapo_dataset_free(ds);
                return vapo_fail("%s: record %ld has label %d (want 0..9): not a CIFAR-10 "
                                 "binary batch?", paths[i], r, rec[0]);
            }
            ds->labels[k] = rec[0];
            /* Records are already R, G, B planes of 32x32: the store's CHW layout. */
            memcpy(ds->pixels + (size_t)k * CIFAR_PIX, rec + 1, CIFAR_PIX);
        }
        fclose(f);
    }
    *out = ds;
    return 0;
}

/* ---- PNG folder ----------------------------------------------------------------------------- */

static int has_png_suffix(const char *name)
{
    size_t n = strlen(name);
    return n > 4 && !strcasecmp(name + n - 4, ".png");
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void free_names(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

/* Sorted full paths of the folder's PNG files. */
static int list_pngs(const char *dir, char ***out, size_t *count)
{
    *out = NULL;
    *count = 0;
    DIR *d = opendir(dir);
    if (!d)
        return vapo_fail("%s: cannot open folder: %s", dir, strerror(errno));
    char **names = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.' || !has_png_suffix(e->d_name))
            continue;
        char path[4096];
        if (join(path, sizeof path, dir, e->d_name)) {
            rc = -1;
            break;
        }
        if (!is_file(path))
            continue;
        if (n == cap) {
            size_t ncap = cap ? cap * 2 : 256;
            char **nn = realloc(names, sizeof(char *) * ncap);
            if (!nn) {
                rc = vapo_fail("%s: out of memory listing files", dir);
                break;
            }
            names = nn;
            cap = ncap;
        }
        if (!(names[n] = strdup(path))) {
            rc = vapo_fail("%s: out of memory listing files", dir);
            break;
        }
        n++;
    }
    closedir(d);
    if (rc) {
        free_names(names, n);
        return -1;
    }
    if (n == 0) {
        free(names);
        return vapo_fail("%s: no PNG files in this folder", dir);
    }
    qsort(names, n, sizeof(char *), cmp_str);
    *out = names;
    *count = n;
    return 0;
}

/* One file: decode, centre crop, channel conversion, resize into `dst`
 * (c x h x w). With resize == 0 the cropped size must equal h x w. */
static int folder_load_one(const char *path, const vapo_folder_opts *o, int c, int h, int w,
                           int resize, unsigned char *dst)
{
    vapo_image img;
    if (vapo_png_read_file_limited(path, o->max_pixels, &img))
        return -1;
    int side = o->crop ? o->crop : (img.h < img.w ? img.h : img.w);
    if (side > img.h || side > img.w) {
        int rc = vapo_fail("%s: image is %dx%d, smaller than the %dx%d crop", path, img.w,
                           img.h, side, side);
        vapo_image_free(&img);
        return rc;
    }
    if (!resize && (side != h || side != w)) {
        int rc = vapo_fail("%s: wrong image size: %dx%d after cropping, the folder's first "
                           "image gives %dx%d (ask for a size to resize)", path, side, side, w, h);
        vapo_image_free(&img);
        return rc;
    }
    size_t sq = (size_t)side * side;
    unsigned char *crop = malloc(sq * img.c), *conv = malloc(sq * c);
    int rc = -1;
    if (!crop || !conv)
        vapo_fail("%s: out of memory", path);
    else if (!vapo_center_crop_u8(img.data, img.c, img.h, img.w, side, crop) &&
             !vapo_u8_convert_channels(crop, img.c, side, side, c, conv)) {
        if (side == h && side == w) {
            memcpy(dst, conv, sq * c);
            rc = 0;
        } else {
            rc = vapo_resize_u8(conv, c, side, side, h, w, dst);
        }
    }
    free(crop);
    free(conv);
    vapo_image_free(&img);
    return rc;
}

int vapo_dataset_load_folder(const char *dir, const vapo_folder_opts *opts, vapo_dataset **out)
{
    *out = NULL;
    vapo_folder_opts o = opts ? *opts : (vapo_folder_opts){0};
    if (!o.max_pixels)
        o.max_pixels = VAPO_PNG_MAX_PIXELS_DEFAULT;
    if (o.crop < 0 || (o.c != 0 && o.c != 1 && o.c != 3) || o.h < 0 || o.w < 0 ||
        (o.h == 0) != (o.w == 0))
        return vapo_fail("%s: bad folder options (crop %d, %d channels, %dx%d)", dir, o.crop,
                         o.c, o.w, o.h);
    char **names;
    size_t n;
    if (list_pngs(dir, &names, &n))
        return -1;
    if (n > INT32_MAX) {
        free_names(names, n);
        return vapo_fail("%s: too many files", dir);
    }

    /* The first image fixes whatever the options leave open. */
    int c = o.c, h = o.h, w = o.w, resize = o.h > 0;
    if (!c || !h) {
        vapo_image first;
        if (vapo_png_read_file_limited(names[0], o.max_pixels, &first)) {
            free_names(names, n);
            return -1;
        }
        int side = o.crop ? o.crop : (first.h < first.w ? first.h : first.w);
        if (!c)
            c = first.c;
        if (!h)
            h = w = side;
        vapo_image_free(&first);
    }

    vapo_dataset *ds;
    if (dataset_new((int)n, c, h, w, 0, dir, &ds)) {
        free_names(names, n);
        return -1;
    }
    /* Decoding dominates (CelebA: 200k files), so files are spread over
     * threads. The error reported is the one of the first bad file in sort
     * order: files after a known bad one are skipped, files before it are
     * still tried, so the report does not depend on thread timing. */
    size_t per = (size_t)c * h * w;
    long bad = -1;
    char msg[512] = "";
#pragma omp parallel for schedule(dynamic, 8)
    for (long i = 0; i < (long)n; i++) {
        long b;
#pragma omp atomic read
        b = bad;
        if (b >= 0 && i > b)
            continue;
        if (folder_load_one(names[i], &o, c, h, w, resize, ds->pixels + (size_t)i * per)) {
#pragma omp critical(vapo_folder_error)
            {
                if (bad < 0 || i < bad) {
                    snprintf(msg, sizeof msg, "%s", vapo_last_error());
#pragma omp atomic write
                    bad = i;
                }
            }
        }
    }
    free_names(names, n);
    if (bad >= 0) {
        vapo_dataset_free(ds);
        return vapo_fail("%s", msg);
    }
    *out = ds;
    return 0;
}

/* ---- open by name --------------------------------------------------------------------------- */

/* idx pair for a split in `dir`, preferring .gz; labels optional. */
static int open_idx_dir(const char *dir, const char *split, vapo_dataset **out)
{
    const char *pre = !strcmp(split, "train") ? "train" : !strcmp(split, "test") ? "t10k" : NULL;
    if (!pre)
        return vapo_fail("%s: unknown split \"%s\" (want train or test)", dir, split);
    char img[4096], lab[4096], name[64];
    snprintf(name, sizeof name, "%s-images-idx3-ubyte.gz", pre);
    if (join(img, sizeof img, dir, name))
        return -1;
    if (!is_file(img))
        img[strlen(img) - 3] = '\0';
    if (!is_file(img))
        return vapo_fail("%s: missing %s-images-idx3-ubyte[.gz]", dir, pre);
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte.gz", pre);
    if (join(lab, sizeof lab, dir, name))
        return -1;
    if (!is_file(lab))
        lab[strlen(lab) - 3] = '\0';
    return vapo_dataset_load_idx(img, is_file(lab) ? lab : NULL, out);
}

static int has_idx(const char *dir)
{
    char p[4096];
    const char *names[] = {"train-images-idx3-ubyte", "train-images-idx3-ubyte.gz",
                           "t10k-images-idx3-ubyte", "t10k-images-idx3-ubyte.gz"};
    for (int i = 0; i < 4; i++)
        if (!join(p, sizeof p, dir, names[i]) && is_file(p))
            return 1;
    return 0;
}

static int has_cifar(const char *dir)
{
    char p[4096], q[4096];
    if (join(p, sizeof p, dir, "cifar-10-batches-bin"))
        return 0;
    if (is_dir(p))
        return 1;
    return (!join(p, sizeof p, dir, "data_batch_1.bin") && is_file(p)) ||
           (!join(q, sizeof q, dir, "test_batch.bin") && is_file(q));
}

static int open_folder(const char *dir, const char *split, int crop, int want_c, int want_h,
                       int want_w, vapo_dataset **out)
{
    char sub[4096];
    if (join(sub, sizeof sub, dir, split))
        return -1;
    const char *use = dir;
    if (is_dir(sub))
        use = sub;
    else if (strcmp(split, "train"))
        return vapo_fail("%s: no %s/ subfolder for the \"%s\" split", dir, split, split);
    vapo_folder_opts o = {.crop = crop, .c = want_c, .h = want_h, .w = want_w};
    return vapo_dataset_load_folder(use, &o, out);
}

/* Channel conversion in place of the store (gray <-> RGB). */
static int dataset_set_channels(vapo_dataset *ds, int c)
{
    if (c == 0 || c == ds->c)
        return 0;
    if (c != 1 && c != 3)
        return vapo_fail("%s: cannot convert to %d channels (want 1 or 3)", ds->source, c);
    size_t plane = (size_t)ds->h * ds->w;
    unsigned char *p = malloc(plane * c * ds->n);
    if (!p)
        return vapo_fail("%s: out of memory converting to %d channels", ds->source, c);
    for (int i = 0; i < ds->n; i++)
        vapo_u8_convert_channels(ds->pixels + i * plane * ds->c, ds->c, ds->h, ds->w, c,
                                 p + i * plane * c);
    free(ds->pixels);
    ds->pixels = p;
    ds->c = c;
    return 0;
}

int vapo_dataset_open(const char *spec, const char *split, int want_c, int want_h, int want_w,
                      vapo_dataset **out)
{
    *out = NULL;
    if (!spec || !*spec)
        return vapo_fail("dataset: empty name");
    if (!split || (strcmp(split, "train") && strcmp(split, "test")))
        return vapo_fail("dataset %s: unknown split \"%s\" (want train or test)", spec,
                         split ? split : "(null)");
    if (want_c != 0 && want_c != 1 && want_c != 3)
        return vapo_fail("dataset %s: %d channels requested (want 0, 1 or 3)", spec, want_c);
    if (want_h < 0 || want_w < 0 || (want_h == 0) != (want_w == 0))
        return vapo_fail("dataset %s: bad size %dx%d requested", spec, want_w, want_h);

    const char *colon = strchr(spec, ':');
    size_t kind_len = colon ? (size_t)(colon - spec) : strlen(spec);
    const char *path = colon ? colon + 1 : NULL;
#define KIND(s) (kind_len == strlen(s) && !strncmp(spec, s, kind_len))
    int rc;
    if (KIND("fashion-mnist") || KIND("mnist")) {
        const char *dir = path ? path : KIND("mnist") ? "/usr/share/datasets/mnist"
                                                      : "/usr/share/datasets/fashion-mnist";
        if (!path && !is_dir(dir))
            return vapo_fail("%s: not found at %s (%sgive %s:FOLDER with the idx files)", spec,
                             dir, KIND("mnist") ? "" : "install the Debian package "
                             "dataset-fashion-mnist, or ", spec);
        rc = open_idx_dir(dir, split, out);
    } else if (KIND("cifar10") && path) {
        rc = vapo_dataset_load_cifar10(path, split, out);
    } else if (KIND("folder") && path) {
        return open_folder(path, split, 0, want_c, want_h, want_w, out);
    } else if (KIND("celeba") && path) {
        return open_folder(path, split, 140, want_c, want_h, want_w, out);
    } else if (is_dir(spec)) {
        if (has_idx(spec))
            rc = open_idx_dir(spec, split, out);
        else if (has_cifar(spec))
            rc = vapo_dataset_load_cifar10(spec, split, out);
        else
            return open_folder(spec, split, 0, want_c, want_h, want_w, out);
    } else {
        return vapo_fail("dataset %s: not a folder, and not one of fashion-mnist, mnist, "
                         "cifar10:DIR, folder:DIR, celeba:DIR", spec);
    }
#undef KIND
    if (rc)
        return -1;
    vapo_dataset *ds = *out;
    if (want_h && (ds->h != want_h || ds->w != want_w)) {
        rc = vapo_fail("%s: images are %dx%d, the model wants %dx%d", ds->source, ds->w, ds->h,
                       want_w, want_h);
    } else {
        rc = dataset_set_channels(ds, want_c);
    }
    if (rc) {
        vapo_dataset_free(ds);
        *out = NULL;
    }
    return rc;
}

/* ---- float views -------------------------------------------------------------------------- */

/* One stored image as float [-1, 1], optionally mirrored left-right. */
static void image_to_float(const vapo_dataset *ds, uint32_t idx, int flip, float *out)
{
    const unsigned char *src = ds->pixels + (size_t)idx * ds->c * ds->h * ds->w;
    for (int r = 0; r < ds->c * ds->h; r++) {
        const unsigned char *s = src + (size_t)r * ds->w;
        float *d = out + (size_t)r * ds->w;
        if (flip)
            for (int x = 0; x < ds->w; x++)
                d[x] = s[ds->w - 1 - x] / 127.5f - 1.0f;
        else
            for (int x = 0; x < ds->w; x++)
                d[x] = s[x] / 127.5f - 1.0f;
    }
}

int vapo_dataset_get(const vapo_dataset *ds, int first, int count, float *out, int *labels)
{
    if (first < 0 || count < 0 || first > ds->n - count)
        return vapo_fail("%s: images %d..%d requested, the dataset has %d", ds->source, first,
                         first + count - 1, ds->n);
    size_t per = (size_t)ds->c * ds->h * ds->w;
    for (int i = 0; i < count; i++) {
        image_to_float(ds, (uint32_t)(first + i), 0, out + i * per);
        if (labels)
            labels[i] = ds->labels ? ds->labels[first + i] : -1;
    }
    return 0;
}

int vapo_dataset_permutation(uint32_t n, uint64_t seed, uint64_t epoch, uint32_t *perm)
{
    if (n == 0)
        return vapo_fail("permutation of 0 elements");
    for (uint32_t i = 0; i < n; i++)
        perm[i] = i;
    /* Fisher-Yates from the top: swap i with a uniform j in [0, i]. */
    for (uint32_t i = n - 1; i > 0; i--) {
        uint32_t j = (uint32_t)vapo_rng_below(seed, VAPO_STREAM_DATA_SHUFFLE,
                                              epoch << 32 | i, (uint64_t)i + 1);
        uint32_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
    }
    return 0;
}

/* ---- loader ---------------------------------------------------------------------------------- */

struct vapo_loader {
    const vapo_dataset *ds;
    uint64_t seed;
    int batch, flip;
    uint32_t *perm[2];   /* cached permutations ... */
    uint64_t epoch[2];   /* ... of these epochs (UINT64_MAX: empty) */
    int recent;          /* slot used last; the other is replaced on a miss */
};

int vapo_loader_create(const vapo_dataset *ds, uint64_t seed, int batch, int flip,
                       vapo_loader **out)
{
    *out = NULL;
    if (!ds || ds->n <= 0)
        return vapo_fail("loader: empty dataset");
    if (batch <= 0)
        return vapo_fail("loader: batch size %d", batch);
    vapo_loader *ld = calloc(1, sizeof *ld);
    if (!ld)
        return vapo_fail("loader: out of memory");
    ld->ds = ds;
    ld->seed = seed;
    ld->batch = batch;
    ld->flip = flip != 0;
    for (int k = 0; k < 2; k++) {
        ld->perm[k] = malloc(sizeof(uint32_t) * ds->n);
        ld->epoch[k] = UINT64_MAX;
    }
    if (!ld->perm[0] || !ld->perm[1]) {
        vapo_loader_free(ld);
        return vapo_fail("loader: out of memory for a permutation of %d", ds->n);
    }
    *out = ld;
    return 0;
}

void vapo_loader_free(vapo_loader *ld)
{
    if (!ld)
        return;
    free(ld->perm[0]);
    free(ld->perm[1]);
    free(ld);
}

static const uint32_t *loader_perm(vapo_loader *ld, uint64_t epoch)
{
    for (int k = 0; k < 2; k++)
        if (ld->epoch[k] == epoch) {
            ld->recent = k;
            return ld->perm[k];
        }
    int k = 1 - ld->recent;
    vapo_dataset_permutation((uint32_t)ld->ds->n, ld->seed, epoch, ld->perm[k]);
    ld->epoch[k] = epoch;
    ld->recent = k;
    return ld->perm[k];
}

int vapo_loader_sample(vapo_loader *ld, uint64_t step, int row, uint32_t *image, int *flipped)
{
    if (row < 0 || row >= ld->batch)
        return vapo_fail("loader: row %d outside a batch of %d", row, ld->batch);
    uint64_t g = step * (uint64_t)ld->batch + (uint64_t)row; /* global sample counter */
    uint64_t n = (uint64_t)ld->ds->n;
    *image = loader_perm(ld, g / n)[g % n];
    *flipped = ld->flip && vapo_rng_below(ld->seed, VAPO_STREAM_DATA_FLIP, g, 2) == 1;
    return 0;
}

int vapo_loader_rows(vapo_loader *ld, uint64_t step, int row0, int nrows, float *out,
                     int *labels)
{
    if (row0 < 0 || nrows < 0 || row0 > ld->batch - nrows)
        return vapo_fail("loader: rows %d..%d outside a batch of %d", row0, row0 + nrows - 1,
                         ld->batch);
    const vapo_dataset *ds = ld->ds;
    size_t per = (size_t)ds->c * ds->h * ds->w;
    for (int r = 0; r < nrows; r++) {
        uint32_t img;
        int fl;
        vapo_loader_sample(ld, step, row0 + r, &img, &fl);
        image_to_float(ds, img, fl, out + r * per);
        if (labels)
            labels[r] = ds->labels ? ds->labels[img] : -1;
    }
    return 0;
}

int vapo_loader_batch(vapo_loader *ld, uint64_t step, float *out, int *labels)
{
    return vapo_loader_rows(ld, step, 0, ld->batch, out, labels);
}
