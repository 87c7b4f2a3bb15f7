/* Datasets: readers into an in-memory 8-bit store, and reproducible,
 * augmented float batches for training.
 *
 * The store is uint8 NCHW (C = 1 or 3), optionally with integer labels.
 * Readers: idx (MNIST, Fashion-MNIST; gzip or plain), CIFAR-10 binary
 * batches, and a folder of PNG images (centre crop + antialiased resize, the
 * CelebA / LSUN preprocessing of VAPO-MATH.md section 8).
 *
 * Batches (vapo_loader) are a pure function of (dataset, seed, batch size,
 * step): training sees an endless sequence of epochs, each a seeded
 * Fisher-Yates permutation of the dataset; sample g = step*batch + row is
 * image perm_{g / n}[g % n], flipped horizontally with p = 1/2. So a run
 * resumed at step k needs only (seed, k) to see exactly the batches it would
 * have seen; the loader's permutation cache is derived state, not state.
 * A batch may straddle two epochs.
 *
 * Randomness (vapo/rng.h), on streams reserved here:
 *   shuffle of epoch e: vapo_rng_below(seed, VAPO_STREAM_DATA_SHUFFLE,
 *                                      (e << 32) | i, i + 1), i = n-1 .. 1
 *   flip of sample g:   vapo_rng_below(seed, VAPO_STREAM_DATA_FLIP, g, 2) == 1 */
#ifndef VAPO_DATASET_H
#define VAPO_DATASET_H

#include <stddef.h>
#include <stdint.h>

#include "vapo/rng.h"

enum {
    VAPO_STREAM_DATA_SHUFFLE = VAPO_STREAM_TRAIN + 64,
    VAPO_STREAM_DATA_FLIP = VAPO_STREAM_TRAIN + 65,
};

typedef struct {
    int n, c, h, w;         /* n images of c x h x w */
    unsigned char *pixels;  /* n*c*h*w bytes, NCHW */
    int *labels;            /* n labels, or NULL when the source has none */
    char source[512];       /* where it was read from, for messages and metadata */
} vapo_dataset;

void vapo_dataset_free(vapo_dataset *ds); /* NULL ok */

/* ---- readers ----------------------------------------------------------------------- */

/* idx3-ubyte images (magic 0x00000803) and, when labels_path is not NULL,
 * idx1-ubyte labels (0x00000801) with the same count. Either may be gzip'd.
 * Images are limited to 4096x4096. */
int vapo_dataset_load_idx(const char *images_path, const char *labels_path, vapo_dataset **out);

/* CIFAR-10 binary version: `dir` (or dir/cifar-10-batches-bin) holds
 * data_batch_1.bin .. data_batch_5.bin (split "train") and test_batch.bin
 * (split "test"), records of 1 label byte + 3072 bytes of 32x32 R, G, B planes. */
int vapo_dataset_load_cifar10(const char *dir, const char *split, vapo_dataset **out);

/* A folder of PNG files (names ending in .png, any case; hidden files and
 * other files skipped; sorted by name, bytewise). Each image is
 * centre-cropped to a square of side `crop` (0: its min side), converted to
 * `c` channels and resized (antialiased) to h x w. With c = 0 the first
 * image's channel count is used; with h = w = 0 no resizing is done and every
 * cropped image must have the first one's size. */
typedef struct {
    int crop;          /* 0 = min side; CelebA 64 uses 140 */
    int c, h, w;       /* target; 0 = from the first image */
    size_t max_pixels; /* per-file PNG limit; 0 = VAPO_PNG_MAX_PIXELS_DEFAULT */
} vapo_folder_opts;

int vapo_dataset_load_folder(const char *dir, const vapo_folder_opts *opts, vapo_dataset **out);

/* Opens a dataset by name. spec:
 *   "fashion-mnist"  /usr/share/datasets/fashion-mnist (Debian dataset-fashion-mnist)
 *   "mnist"          /usr/share/datasets/mnist
 *   "fashion-mnist:DIR", "mnist:DIR"  idx files in DIR: train-images-idx3-ubyte[.gz],
 *                    train-labels-idx1-ubyte[.gz] (labels optional), t10k-* for "test"
 *   "cifar10:DIR"    CIFAR-10 binary batches
 *   "folder:DIR"     PNG folder, square crop of the min side
 *   "celeba:DIR"     PNG folder, 140x140 centre crop (aligned 178x218 CelebA)
 *   "DIR"            type detected: idx files, CIFAR-10 batches, else PNG folder.
 * split is "train" or "test". For a PNG folder, DIR/<split>/ is used when it
 * exists; otherwise DIR itself serves "train" and "test" is an error.
 * want_c: 1 or 3 converts (gray -> RGB replicate, RGB -> gray luma), 0 keeps.
 * want_h, want_w: PNG folders are resized to it; idx and CIFAR-10 must
 * already have that size (0 keeps the native size). */
int vapo_dataset_open(const char *spec, const char *split, int want_c, int want_h, int want_w,
                      vapo_dataset **out);

/* Images first .. first+count-1 in store order, as float [-1, 1] NCHW, no
 * augmentation (evaluation, energy statistics). labels may be NULL; it gets
 * -1 where the dataset has none. */
int vapo_dataset_get(const vapo_dataset *ds, int first, int count, float *out, int *labels);

/* The epoch's permutation of 0..n-1 (see the top of this file). */
int vapo_dataset_permutation(uint32_t n, uint64_t seed, uint64_t epoch, uint32_t *perm);

/* ---- training batches ------------------------------------------------------------- */

/* A loader reads one dataset (which must outlive it). It caches the
 * permutations of the two most recent epochs, so one loader must not be used
 * by two threads at once; create one per thread instead. */
typedef struct vapo_loader vapo_loader;

/* flip: 1 for random horizontal flips (the training default), 0 for none. */
int vapo_loader_create(const vapo_dataset *ds, uint64_t seed, int batch, int flip,
                       vapo_loader **out);
void vapo_loader_free(vapo_loader *ld); /* NULL ok */

/* The batch of training step `step`: batch*c*h*w floats in [-1, 1], NCHW;
 * labels (may be NULL) get batch entries, -1 where the dataset has none. */
int vapo_loader_batch(vapo_loader *ld, uint64_t step, float *out, int *labels);

/* Rows row0 .. row0+nrows-1 of that batch only (data-parallel workers each
 * take their slice of one global batch). */
int vapo_loader_rows(vapo_loader *ld, uint64_t step, int row0, int nrows, float *out,
                     int *labels);

/* Which image row `row` of step `step` shows and whether it is flipped;
 * the epoch of that sample is (step*batch + row) / n. */
int vapo_loader_sample(vapo_loader *ld, uint64_t step, int row, uint32_t *image, int *flipped);

#endif
