/* Tests for engine/dataset.c: idx / CIFAR-10 / PNG-folder readers (files
 * written here, plus corrupt variants), vapo_dataset_open, shuffling, flips,
 * resumable batches, and the real Fashion-MNIST test split when installed. */
#define _GNU_SOURCE
#include <ftw.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "vapo/dataset.h"
#include "vapo/error.h"
#include "vapo/image.h"
#include "testutil.h"


/* An operation expected to fail with a message containing every given word. */
#define CHECK_FAILS(call, ...)                                                                \
    do {                                                                                      \
        vapo_dataset *ds_ = NULL;                                                             \
        int rc_ = (call);                                                                     \
        CHECK(rc_ < 0, "%s succeeded", #call);                                                \
        if (rc_ >= 0)                                                                         \
            vapo_dataset_free(ds_);                                                           \
        const char *words_[] = {__VA_ARGS__, NULL};                                           \
        for (int w_ = 0; words_[w_]; w_++)                                                    \
            CHECK(strstr(vapo_last_error(), words_[w_]), "message \"%s\" lacks \"%s\"",        \
                  vapo_last_error(), words_[w_]);                                             \
    } while (0)

static char tmp[64];

static const char *tpath(const char *name)
{
    static char buf[8][256];
    static int k;
    char *p = buf[k++ % 8];
    snprintf(p, 256, "%s/%s", tmp, name);
    return p;
}

static void write_file(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, n, f) != n || fclose(f)) {
        printf("cannot write %s\n", path);
        exit(2);
    }
}

static void write_gz(const char *path, const void *data, size_t n)
{
    gzFile f = gzopen(path, "wb");
    if (!f || gzwrite(f, data, (unsigned)n) != (int)n || gzclose(f) != Z_OK) {
        printf("cannot write %s\n", path);
        exit(2);
    }
}

static void put_be32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* idx3 images: n x h x w, pixel (i, y, x) = (7i + 3y + x) mod 256; *len set. */
static unsigned char *make_idx3(uint32_t n, uint32_t h, uint32_t w, size_t *len)
{
    *len = 16 + (size_t)n * h * w;
    unsigned char *b = malloc(*len);
    put_be32(b, 0x803);
    put_be32(b + 4, n);
    put_be32(b + 8, h);
    put_be32(b + 12, w);
    for (uint32_t i = 0; i < n; i++)
        for (uint32_t p = 0; p < h * w; p++)
            b[16 + i * h * w + p] = (unsigned char)(7 * i + 3 * (p / w) + p % w);
    return b;
}

static unsigned char *make_idx1(uint32_t n, size_t *len)
{
    *len = 8 + n;
    unsigned char *b = malloc(*len);
    put_be32(b, 0x801);
    put_be32(b + 4, n);
    for (uint32_t i = 0; i < n; i++)
        b[8 + i] = (unsigned char)(i % 10);
    return b;
}

/* ---- idx -------------------------------------------------------------------------------- */

static void check_idx_content(const vapo_dataset *ds, int n, int h, int w, int labels)
{
    CHECK(ds->n == n && ds->c == 1 && ds->h == h && ds->w == w, "shape %d %d %d %d", ds->n,
          ds->c, ds->h, ds->w);
    int bad = 0;
    for (int i = 0; i < n; i++)
        for (int p = 0; p < h * w; p++)
            bad += ds->pixels[(size_t)i * h * w + p] != (unsigned char)(7 * i + 3 * (p / w) + p % w);
    CHECK(bad == 0, "%d pixels differ", bad);
    if (labels) {
        CHECK(ds->labels != NULL, "labels missing");
        for (int i = 0; ds->labels && i < n; i++)
            CHECK(ds->labels[i] == i % 10, "label %d = %d", i, ds->labels[i]);
    } else {
        CHECK(ds->labels == NULL, "labels without a labels file");
    }
}

static void test_idx(void)
{
    size_t li, ll;
    unsigned char *img = make_idx3(13, 5, 4, &li), *lab = make_idx1(13, &ll);
    write_file(tpath("img.idx"), img, li);
    write_gz(tpath("img.idx.gz"), img, li);
    write_file(tpath("lab.idx"), lab, ll);
    write_gz(tpath("lab.idx.gz"), lab, ll);

    const char *imgs[] = {"img.idx", "img.idx.gz"}, *labs[] = {"lab.idx", "lab.idx.gz"};
    for (int a = 0; a < 2; a++)
        for (int b = 0; b < 2; b++) {
            vapo_dataset *ds;
            int rc = vapo_dataset_load_idx(tpath(imgs[a]), tpath(labs[b]), &ds);
            CHECK(rc == 0, "%s + %s: %s", imgs[a], labs[b], vapo_last_error());
            if (!rc) {
                check_idx_content(ds, 13, 5, 4, 1);
                vapo_dataset_free(ds);
            }
        }
    vapo_dataset *ds;
    CHECK(vapo_dataset_load_idx(tpath("img.idx.gz"), NULL, &ds) == 0, "%s", vapo_last_error());
    if (ds)
        check_idx_content(ds, 13, 5, 4, 0);
    vapo_dataset_free(ds);

    /* missing file */
    CHECK_FAILS(vapo_dataset_load_idx(tpath("nope.idx"), NULL, &ds_), "nope.idx", "cannot open");

    /* wrong magic: a labels file given as images, and vice versa */
    CHECK_FAILS(vapo_dataset_load_idx(tpath("lab.idx"), NULL, &ds_), "lab.idx", "magic");
    CHECK_FAILS(vapo_dataset_load_idx(tpath("img.idx"), tpath("img.idx"), &ds_), "magic");

    /* truncated at several lengths, plain and gzip */
    size_t cuts[] = {0, 3, 9, 15, 16, 17, 100, li - 1};
    for (size_t k = 0; k < sizeof cuts / sizeof *cuts; k++) {
        write_file(tpath("cut.idx"), img, cuts[k]);
        CHECK_FAILS(vapo_dataset_load_idx(tpath("cut.idx"), NULL, &ds_), "cut.idx", "truncated");
        write_gz(tpath("cut.idx.gz"), img, cuts[k]);
        CHECK_FAILS(vapo_dataset_load_idx(tpath("cut.idx.gz"), NULL, &ds_), "cut.idx.gz",
                    "truncated");
    }
    /* a gzip stream cut short (the compressed bytes, not the content) */
    FILE *f = fopen(tpath("img.idx.gz"), "rb");
    unsigned char gz[4096];
    size_t gzlen = fread(gz, 1, sizeof gz, f);
    fclose(f);
    write_file(tpath("cutz.idx.gz"), gz, gzlen / 2);
    CHECK_FAILS(vapo_dataset_load_idx(tpath("cutz.idx.gz"), NULL, &ds_), "cutz.idx.gz");

    /* wrong dims: zero images, zero width, too large, more data than declared */
    unsigned char hdr[16 + 13 * 20];
    memcpy(hdr, img, sizeof hdr);
    put_be32(hdr + 4, 0);
    write_file(tpath("dims.idx"), hdr, sizeof hdr);
    CHECK_FAILS(vapo_dataset_load_idx(tpath("dims.idx"), NULL, &ds_), "dims.idx", "dimensions");
    memcpy(hdr, img, 16);
    put_be32(hdr + 12, 0);
    write_file(tpath("dims.idx"), hdr, sizeof hdr);
    CHECK_FAILS(vapo_dataset_load_idx(tpath("dims.idx"), NULL, &ds_), "dimensions");
    memcpy(hdr, img, 16);
    put_be32(hdr + 8, 100000);
    write_file(tpath("dims.idx"), hdr, sizeof hdr);
    CHECK_FAILS(vapo_dataset_load_idx(tpath("dims.idx"), NULL, &ds_), "dimensions");
    memcpy(hdr, img, 16);
    put_be32(hdr + 4, 12); /* 13 images of data, 12 declared */
    write_file(tpath("dims.idx"), hdr, sizeof hdr);
    CHECK_FAILS(vapo_dataset_load_idx(tpath("dims.idx"), NULL, &ds_), "dims.idx",
                "wrong dimensions");
    /* a header declaring 2^31-1 images costs no giant allocation: truncated */
    memcpy(hdr, img, 16);
    put_be32(hdr + 4, 0x7fffffff);
    put_be32(hdr + 8, 4096);
    put_be32(hdr + 12, 4096);
    write_file(tpath("huge.idx"), hdr, sizeof hdr);
    CHECK_FAILS(vapo_dataset_load_idx(tpath("huge.idx"), NULL, &ds_), "huge.idx", "truncated");

    /* image count mismatch between the two files */
    size_t l12;
    unsigned char *lab12 = make_idx1(12, &l12);
    write_gz(tpath("lab12.idx.gz"), lab12, l12);
    CHECK_FAILS(vapo_dataset_load_idx(tpath("img.idx"), tpath("lab12.idx.gz"), &ds_),
                "lab12.idx.gz", "12 labels", "13 images");
    free(lab12);

    /* vapo_dataset_open on a folder of idx files (type detected, gz preferred) */
    mkdir(tpath("fm"), 0700);
    write_gz(tpath("fm/train-images-idx3-ubyte.gz"), img, li);
    write_gz(tpath("fm/train-labels-idx1-ubyte.gz"), lab, ll);
    write_file(tpath("fm/t10k-images-idx3-ubyte"), img, li); /* plain, no labels */
    CHECK(vapo_dataset_open(tpath("fm"), "train", 0, 0, 0, &ds) == 0, "%s", vapo_last_error());
    if (ds)
        check_idx_content(ds, 13, 5, 4, 1);
    vapo_dataset_free(ds);
    char spec[300];
    snprintf(spec, sizeof spec, "fashion-mnist:%s", tpath("fm"));
    CHECK(vapo_dataset_open(spec, "test", 3, 5, 4, &ds) == 0, "%s", vapo_last_error());
    if (ds) {
        CHECK(ds->c == 3 && ds->labels == NULL, "c=%d", ds->c);
        CHECK(memcmp(ds->pixels, ds->pixels + 20, 20) == 0, "gray not replicated");
    }
    vapo_dataset_free(ds);
    CHECK_FAILS(vapo_dataset_open(spec, "test", 1, 28, 28, &ds_), "4x5", "28x28");
    CHECK_FAILS(vapo_dataset_open(spec, "valid", 0, 0, 0, &ds_), "split");
    free(img);
    free(lab);
}

/* ---- CIFAR-10 --------------------------------------------------------------------------------- */

/* Record r of batch b: label (b + r) % 10, pixel p = (b*31 + r*7 + p) mod 256. */
static void write_cifar(const char *name, int b, int records)
{
    size_t n = (size_t)records * 3073;
    unsigned char *buf = malloc(n);
    for (int r = 0; r < records; r++) {
        buf[r * 3073] = (unsigned char)((b + r) % 10);
        for (int p = 0; p < 3072; p++)
            buf[r * 3073 + 1 + p] = (unsigned char)(b * 31 + r * 7 + p);
    }
    write_file(tpath(name), buf, n);
    free(buf);
}

static void test_cifar(void)
{
    mkdir(tpath("cifar"), 0700);
    mkdir(tpath("cifar/cifar-10-batches-bin"), 0700);
    int counts[6] = {2, 3, 1, 2, 2, 3};
    char name[128];
    for (int b = 0; b < 5; b++) {
        snprintf(name, sizeof name, "cifar/cifar-10-batches-bin/data_batch_%d.bin", b + 1);
        write_cifar(name, b, counts[b]);
    }
    write_cifar("cifar/cifar-10-batches-bin/test_batch.bin", 9, counts[5]);

    vapo_dataset *ds;
    CHECK(vapo_dataset_load_cifar10(tpath("cifar"), "train", &ds) == 0, "%s", vapo_last_error());
    if (ds) {
        CHECK(ds->n == 10 && ds->c == 3 && ds->h == 32 && ds->w == 32, "shape %d %d %d %d", ds->n,
              ds->c, ds->h, ds->w);
        int k = 0, bad = 0;
        for (int b = 0; b < 5; b++)
            for (int r = 0; r < counts[b]; r++, k++) {
                bad += ds->labels[k] != (b + r) % 10;
                for (int p = 0; p < 3072; p += 97)
                    bad += ds->pixels[(size_t)k * 3072 + p] != (unsigned char)(b * 31 + r * 7 + p);
            }
        CHECK(bad == 0, "CIFAR content: %d mismatches", bad);
    }
    vapo_dataset_free(ds);

    char spec[300];
    snprintf(spec, sizeof spec, "cifar10:%s", tpath("cifar/cifar-10-batches-bin"));
    CHECK(vapo_dataset_open(spec, "test", 1, 32, 32, &ds) == 0, "%s", vapo_last_error());
    if (ds)
        CHECK(ds->n == 3 && ds->c == 1 && ds->labels[0] == 9, "test split n=%d c=%d", ds->n,
              ds->c);
    vapo_dataset_free(ds);
    /* detected from the folder alone */
    CHECK(vapo_dataset_open(tpath("cifar"), "test", 0, 0, 0, &ds) == 0, "%s", vapo_last_error());
    if (ds)
        CHECK(ds->n == 3 && ds->c == 3, "detected: n=%d c=%d", ds->n, ds->c);
    vapo_dataset_free(ds);
    CHECK_FAILS(vapo_dataset_open(spec, "train", 0, 28, 28, &ds_), "32x32", "28x28");

    /* truncated at several lengths */
    const char *tb = "cifar/cifar-10-batches-bin/test_batch.bin";
    size_t cuts[] = {0, 1, 3072, 3074, 2 * 3073 + 5};
    unsigned char *buf = calloc(3 * 3073, 1);
    for (size_t k = 0; k < sizeof cuts / sizeof *cuts; k++) {
        write_file(tpath(tb), buf, cuts[k]);
        CHECK_FAILS(vapo_dataset_load_cifar10(tpath("cifar"), "test", &ds_), "test_batch.bin",
                    "multiple of 3073");
    }
    /* a label that CIFAR-10 cannot have: wrong file */
    buf[3073] = 200;
    write_file(tpath(tb), buf, 2 * 3073);
    CHECK_FAILS(vapo_dataset_load_cifar10(tpath("cifar"), "test", &ds_), "test_batch.bin",
                "record 1", "label 200");
    free(buf);
    /* a missing batch */
    remove(tpath("cifar/cifar-10-batches-bin/data_batch_4.bin"));
    CHECK_FAILS(vapo_dataset_load_cifar10(tpath("cifar"), "train", &ds_), "data_batch_4.bin",
                "missing");
}

/* ---- PNG folder ------------------------------------------------------------------------------ */

/* A c x h x w image of one colour (8-bit values v[k]) written as PNG. */
static void write_png_const(const char *name, int c, int h, int w, const int *v)
{
    size_t plane = (size_t)h * w;
    float *f = malloc(sizeof(float) * plane * c);
    for (int k = 0; k < c; k++)
        for (size_t i = 0; i < plane; i++)
            f[k * plane + i] = v[k] / 127.5f - 1.0f;
    if (vapo_png_write_file(tpath(name), f, c, h, w)) {
        printf("cannot write %s: %s\n", name, vapo_last_error());
        exit(2);
    }
    free(f);
}

static void test_folder(void)
{
    mkdir(tpath("pngs"), 0700);
    int red[3] = {200, 10, 30}, gray[1] = {90}, blue[3] = {0, 50, 250};
    write_png_const("pngs/b.png", 3, 30, 20, red);   /* tall RGB */
    write_png_const("pngs/a.PNG", 1, 16, 16, gray);  /* square gray, upper-case suffix */
    write_png_const("pngs/c.png", 3, 24, 40, blue);  /* wide RGB */
    write_file(tpath("pngs/notes.txt"), "not an image", 12);
    write_file(tpath("pngs/.hidden.png"), "junk", 4);
    mkdir(tpath("pngs/sub.png"), 0700); /* a folder with a PNG-like name is skipped */

    vapo_folder_opts o = {.c = 3, .h = 8, .w = 8};
    vapo_dataset *ds;
    CHECK(vapo_dataset_load_folder(tpath("pngs"), &o, &ds) == 0, "%s", vapo_last_error());
    if (ds) {
        CHECK(ds->n == 3 && ds->c == 3 && ds->h == 8 && ds->w == 8 && !ds->labels,
              "shape %d %d %d %d", ds->n, ds->c, ds->h, ds->w);
        /* sorted: a.PNG (gray replicated), b.png, c.png; constant colours survive */
        const int *want[3] = {(int[3]){90, 90, 90}, red, blue};
        int bad = 0;
        for (int i = 0; i < 3; i++)
            for (int k = 0; k < 3; k++)
                for (int p = 0; p < 64; p++)
                    bad += ds->pixels[(i * 3 + k) * 64 + p] != want[i][k];
        CHECK(bad == 0, "folder content: %d samples differ", bad);
    }
    vapo_dataset_free(ds);

    /* gray target: RGB converted by luma */
    o = (vapo_folder_opts){.c = 1, .h = 4, .w = 6};
    CHECK(vapo_dataset_load_folder(tpath("pngs"), &o, &ds) == 0, "%s", vapo_last_error());
    if (ds)
        CHECK(ds->c == 1 && ds->h == 4 && ds->w == 6 &&
                  ds->pixels[24] == (19595 * 200 + 38470 * 10 + 7471 * 30 + 32768) >> 16,
              "gray: c=%d value %d", ds->c, ds->pixels[24]);
    vapo_dataset_free(ds);

    /* no target size: the min-side crops differ (16, 20, 24): wrong image size */
    CHECK_FAILS(vapo_dataset_load_folder(tpath("pngs"), NULL, &ds_), "b.png",
                "wrong image size");
    /* an explicit crop larger than an image */
    o = (vapo_folder_opts){.crop = 18, .h = 8, .w = 8};
    CHECK_FAILS(vapo_dataset_load_folder(tpath("pngs"), &o, &ds_), "a.PNG", "crop");
    /* an explicit crop that fits all: same size, no resize needed */
    o = (vapo_folder_opts){.crop = 12};
    CHECK(vapo_dataset_load_folder(tpath("pngs"), &o, &ds) == 0, "%s", vapo_last_error());
    if (ds)
        CHECK(ds->n == 3 && ds->c == 1 && ds->h == 12, "crop 12: n=%d c=%d h=%d", ds->n, ds->c,
              ds->h);
    vapo_dataset_free(ds);

    /* through vapo_dataset_open: a test/ subfolder serves the test split */
    CHECK_FAILS(vapo_dataset_open(tpath("pngs"), "test", 3, 8, 8, &ds_), "test/");
    mkdir(tpath("pngs/test"), 0700);
    write_png_const("pngs/test/x.png", 3, 10, 10, blue);
    char spec[300];
    snprintf(spec, sizeof spec, "folder:%s", tpath("pngs"));
    CHECK(vapo_dataset_open(spec, "test", 3, 8, 8, &ds) == 0, "%s", vapo_last_error());
    if (ds)
        CHECK(ds->n == 1 && ds->pixels[64 * 2] == 250, "test split n=%d", ds->n);
    vapo_dataset_free(ds);
    CHECK(vapo_dataset_open(spec, "train", 3, 8, 8, &ds) == 0 && ds->n == 3, "%s",
          vapo_last_error());
    vapo_dataset_free(ds);

    /* an unreadable PNG is named */
    write_file(tpath("pngs/d.png"), "\x89PNG\r\n\x1a\n garbage", 17);
    o = (vapo_folder_opts){.c = 3, .h = 8, .w = 8};
    CHECK_FAILS(vapo_dataset_load_folder(tpath("pngs"), &o, &ds_), "d.png");
    /* an empty folder */
    mkdir(tpath("empty"), 0700);
    write_file(tpath("empty/readme.txt"), "x", 1);
    CHECK_FAILS(vapo_dataset_load_folder(tpath("empty"), &o, &ds_), "empty", "no PNG");
    CHECK_FAILS(vapo_dataset_load_folder(tpath("absent"), &o, &ds_), "absent", "cannot open");
    CHECK_FAILS(vapo_dataset_open("nosuchkind", "train", 0, 0, 0, &ds_), "nosuchkind");
}

/* ---- shuffling, flips, batches ---------------------------------------------------------------- */

static void test_permutation(void)
{
    enum { N = 1000 };
    static uint32_t p[N], q[N], r[N];
    static int seen[N];
    CHECK(vapo_dataset_permutation(N, 42, 0, p) == 0, "perm");
    for (int i = 0; i < N; i++)
        seen[p[i]]++;
    int bad = 0, fixed = 0;
    for (int i = 0; i < N; i++) {
        bad += seen[i] != 1;
        fixed += p[i] == (uint32_t)i;
    }
    CHECK(bad == 0, "not a permutation: %d values wrong", bad);
    CHECK(fixed < 10, "%d fixed points: not shuffled", fixed);
    vapo_dataset_permutation(N, 42, 0, q);
    CHECK(memcmp(p, q, sizeof p) == 0, "same (seed, epoch) gives another order");
    vapo_dataset_permutation(N, 42, 1, q);
    vapo_dataset_permutation(N, 43, 0, r);
    int same_e = 0, same_s = 0;
    for (int i = 0; i < N; i++) {
        same_e += p[i] == q[i];
        same_s += p[i] == r[i];
    }
    CHECK(same_e < 10 && same_s < 10, "epochs/seeds too similar: %d / %d equal places", same_e,
          same_s);
    uint32_t one;
    CHECK(vapo_dataset_permutation(1, 1, 5, &one) == 0 && one == 0, "n = 1");
}

/* Image i of this dataset is identifiable from any of its pixels and shows
 * its orientation: pixel (y, x) = 10*i + x (w = 4 < 10). */
static vapo_dataset *small_dataset(int n)
{
    vapo_dataset *ds = calloc(1, sizeof *ds);
    ds->n = n;
    ds->c = 1;
    ds->h = 2;
    ds->w = 4;
    ds->pixels = malloc((size_t)n * 8);
    ds->labels = malloc(sizeof(int) * n);
    for (int i = 0; i < n; i++) {
        ds->labels[i] = i % 10;
        for (int p = 0; p < 8; p++)
            ds->pixels[i * 8 + p] = (unsigned char)(10 * i + p % 4);
    }
    return ds;
}

static void test_loader(void)
{
    enum { N = 10, B = 4, STEPS = 25 }; /* 100 samples = 10 epochs; batches straddle epochs */
    vapo_dataset *ds = small_dataset(N);
    vapo_loader *ld;
    CHECK(vapo_loader_create(ds, 7, B, 1, &ld) == 0, "%s", vapo_last_error());
    static float seq[STEPS][B * 8];
    int lab[B], count[N] = {0}, flips = 0, bad = 0;
    for (int s = 0; s < STEPS; s++) {
        CHECK(vapo_loader_batch(ld, (uint64_t)s, seq[s], lab) == 0, "batch");
        for (int r = 0; r < B; r++) {
            uint32_t img;
            int fl;
            vapo_loader_sample(ld, (uint64_t)s, r, &img, &fl);
            uint64_t g = (uint64_t)s * B + r;
            count[img]++;
            flips += fl;
            /* pixels: image img, mirrored when flipped, in [-1, 1] */
            for (int p = 0; p < 8; p++) {
                int x = p % 4, want = 10 * (int)img + (fl ? 3 - x : x);
                bad += fabsf(seq[s][r * 8 + p] - (want / 127.5f - 1.0f)) > 1e-6f;
            }
            bad += lab[r] != (int)img % 10;
            /* each epoch is a permutation: the image is the permutation entry */
            uint32_t perm[N];
            vapo_dataset_permutation(N, 7, g / N, perm);
            bad += perm[g % N] != img;
        }
        /* at the end of each epoch every image has been seen equally often */
        if (((s + 1) * B) % N == 0)
            for (int i = 0; i < N; i++)
                bad += count[i] != (s + 1) * B / N;
    }
    CHECK(bad == 0, "%d mismatches in the batch sequence", bad);
    CHECK(flips > 30 && flips < 70, "%d of 100 flipped", flips);

    /* resumed: a fresh loader computing steps in scrambled order sees the same batches */
    vapo_loader *ld2;
    vapo_loader_create(ds, 7, B, 1, &ld2);
    float again[B * 8];
    for (int k = 0; k < STEPS; k++) {
        int s = (k * 7 + 3) % STEPS;
        vapo_loader_batch(ld2, (uint64_t)s, again, NULL);
        CHECK(memcmp(again, seq[s], sizeof again) == 0, "step %d recomputed differs", s);
    }
    /* a slice of the batch equals those rows of the whole batch */
    CHECK(vapo_loader_rows(ld2, 11, 1, 2, again, NULL) == 0, "rows");
    CHECK(memcmp(again, seq[11] + 8, sizeof(float) * 16) == 0, "slice differs");
    CHECK(vapo_loader_rows(ld2, 11, 3, 2, again, NULL) < 0, "rows past the batch accepted");
    vapo_loader_free(ld2);

    /* another seed gives another sequence; flip = 0 never flips */
    vapo_loader_create(ds, 8, B, 0, &ld2);
    int differ = 0;
    for (int s = 0; s < STEPS; s++) {
        vapo_loader_batch(ld2, (uint64_t)s, again, NULL);
        differ += memcmp(again, seq[s], sizeof again) != 0;
        for (int r = 0; r < B; r++) {
            uint32_t img;
            int fl;
            vapo_loader_sample(ld2, (uint64_t)s, r, &img, &fl);
            CHECK(!fl, "flip with flip = 0");
        }
    }
    CHECK(differ > STEPS / 2, "seed 8 repeats seed 7 (%d of %d batches differ)", differ, STEPS);
    vapo_loader_free(ld2);
    vapo_loader_free(ld);
    vapo_dataset_free(ds);

    /* the flip rate over many samples, and its determinism per (seed, step) */
    ds = small_dataset(1000);
    vapo_loader_create(ds, 99, 100, 1, &ld);
    vapo_loader_create(ds, 99, 100, 1, &ld2);
    int total = 0, mism = 0;
    for (uint64_t s = 0; s < 100; s++)
        for (int r = 0; r < 100; r++) {
            uint32_t i1, i2;
            int f1, f2;
            vapo_loader_sample(ld, s, r, &i1, &f1);
            vapo_loader_sample(ld2, 99 - s, r, &i2, &f2); /* other order, other cache */
            total += f1;
            vapo_loader_sample(ld2, s, r, &i2, &f2);
            mism += i1 != i2 || f1 != f2;
        }
    CHECK(total > 4800 && total < 5200, "%d of 10000 flipped", total);
    CHECK(mism == 0, "%d samples differ between loaders", mism);
    vapo_loader_free(ld);
    vapo_loader_free(ld2);

    /* unaugmented access */
    float two[16];
    int l2[2];
    CHECK(vapo_dataset_get(ds, 998, 2, two, l2) == 0 && l2[1] == 9, "get");
    CHECK(fabsf(two[8] - ((unsigned char)(10 * 999) / 127.5f - 1.0f)) < 1e-6f, "get value");
    CHECK(vapo_dataset_get(ds, 999, 2, two, NULL) < 0, "get past the end accepted");
    CHECK(vapo_loader_create(ds, 1, 0, 1, &ld) < 0, "batch 0 accepted");
    vapo_dataset_free(ds);
}

/* ---- the real Fashion-MNIST ---------------------------------------------------------------- */

static void test_fashion_mnist(void)
{
    const char *dir = "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz";
    if (access(dir, R_OK) != 0) {
        printf("SKIP Fashion-MNIST: %s absent (Debian package dataset-fashion-mnist)\n", dir);
        return;
    }
    vapo_dataset *ds;
    int rc = vapo_dataset_open("fashion-mnist", "test", 1, 28, 28, &ds);
    CHECK(rc == 0, "%s", vapo_last_error());
    if (rc)
        return;
    CHECK(ds->n == 10000 && ds->c == 1 && ds->h == 28 && ds->w == 28 && ds->labels,
          "shape %d x %d x %d x %d", ds->n, ds->c, ds->h, ds->w);
    size_t total = (size_t)ds->n * 784;
    float *f = malloc(sizeof(float) * total);
    int *lab = malloc(sizeof(int) * ds->n);
    CHECK(vapo_dataset_get(ds, 0, ds->n, f, lab) == 0, "get");
    double sum = 0;
    float lo = 1, hi = -1;
    int hist[10] = {0};
    for (size_t i = 0; i < total; i++) {
        sum += f[i];
        lo = f[i] < lo ? f[i] : lo;
        hi = f[i] > hi ? f[i] : hi;
    }
    for (int i = 0; i < ds->n; i++)
        if (lab[i] >= 0 && lab[i] < 10)
            hist[lab[i]]++;
    double mean = sum / total; /* Fashion-MNIST's mean pixel is ~0.286 in [0, 1] */
    CHECK(lo == -1.0f && hi == 1.0f, "range %g..%g", lo, hi);
    CHECK(mean > -0.5 && mean < -0.35, "mean pixel %g, expected ~ -0.43", mean);
    for (int k = 0; k < 10; k++)
        CHECK(hist[k] == 1000, "class %d has %d test images", k, hist[k]);
    printf("Fashion-MNIST test: 10000 x 1 x 28 x 28, mean pixel %.4f\n", mean);
    free(f);
    free(lab);
    vapo_dataset_free(ds);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    return remove(path);
}

int main(void)
{
    snprintf(tmp, sizeof tmp, "/tmp/vapo_test_dataset_XXXXXX");
    if (!mkdtemp(tmp)) {
        perror("mkdtemp");
        return 2;
    }
    test_idx();
    test_cifar();
    test_folder();
    test_permutation();
    test_loader();
    test_fashion_mnist();
    nftw(tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
    return test_finish("test_dataset");
}
