/* Sample quality for checkpoint selection (vapo-train --select fd): the
 * independent Fashion-MNIST judge of bench/judge.py (its committed weights,
 * models/fmnist-judge.safetensors) run on the host, and the Frechet distance
 * between two sets of its features. The same network and distance as
 * bench/eval.py, so the numbers compare (tests/test_quality.c checks the
 * features against PyTorch's). */
#ifndef VAPO_TRAIN_QUALITY_H
#define VAPO_TRAIN_QUALITY_H

#define JUDGE_FEATURES 64

typedef struct judge judge;

/* NULL with a message (vapo_last_error) when the file is missing or not the judge. */
judge *judge_load(const char *path);
void judge_free(judge *j);

/* Features (n x JUDGE_FEATURES) of n 1x28x28 images in [-1, 1]; 0 or -1. */
int judge_features(const judge *j, int n, const float *x, double *features);
/* Class probabilities (10) of one image's features. */
void judge_classes(const judge *j, const double *features, double *p);

/* The Frechet distance between Gaussians fitted to two feature sets:
 * |m1 - m2|^2 + Tr(C1 + C2 - 2 (C1^1/2 C2 C1^1/2)^1/2). NAN when out of memory. */
double frechet_distance(const double *f1, int n1, const double *f2, int n2, int dim);

#endif
