/* libFuzzer harness for the checkpoint loader (engine/ckpt.c, safetensors)
 * and the model loader on top of it (engine/model.c): the input is the whole
 * file, served from a memfd so the real path-based loader reads it. A file
 * that loads is read back through every accessor. */
#define _GNU_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "vapo/backend.h"
#include "vapo/ckpt.h"
#include "vapo/model.h"

static int fd = -1;
static char path[64];
static vapo_backend *be;

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "fuzz_ckpt: %s\n", what);
        abort();
    }
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    fd = memfd_create("fuzz_ckpt", 0);
    be = vapo_backend_cpu(1);
    if (fd < 0 || !be) {
        fprintf(stderr, "fuzz_ckpt: no memfd or no CPU backend\n");
        exit(1);
    }
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    return 0;
}

static void read_back(const vapo_ckpt *ck)
{
    for (int i = 0; i < vapo_ckpt_count(ck); i++) {
        const vapo_tensor_ref *t = vapo_ckpt_tensor(ck, i);
        check(t && t->name && vapo_ckpt_find(ck, t->name) != NULL, "a listed tensor cannot be found by name");
        int64_t n = 1;
        for (int k = 0; k < t->ndim; k++)
            n *= t->shape[k];
        if (n > (1 << 20))
            continue;
        float *dst = malloc(sizeof(float) * (size_t)(n ? n : 1));
        check(dst != NULL, "out of memory");
        vapo_ckpt_read_f32(ck, t->name, t->ndim, t->shape, dst); /* may refuse a dtype; must not crash */
        free(dst);
    }
    char *meta = json_dumps(vapo_ckpt_metadata(ck), JSON_ENCODE_ANY);
    check(meta != NULL, "metadata cannot be written out");
    free(meta);
}

/* A loaded model's OOD calibration in use: every score it has on a small
 * batch, its quantile lookup and metadata written out again. */
static void use_ood(vapo_model *m)
{
    const size_t d = vapo_net_input_size(m->net);
    if (d > 4096)
        return;
    float x[2 * 4096];
    for (size_t i = 0; i < 2 * d; i++)
        x[i] = (float)((i * 37) % 200) / 100.0f - 1.0f;
    for (int k = 0; k < VAPO_SCORE_KINDS; k++) {
        double v[2];
        if (!vapo_ood_available(&m->ood, (vapo_score_kind)k) || vapo_model_score(m, (vapo_score_kind)k, 2, x, 2, v))
            continue;
        for (int i = 0; i < 2; i++) {
            double s = vapo_ood_score(&m->ood, (vapo_score_kind)k, v[i]);
            check(s >= 0 && s <= 1, "ood_score outside [0, 1]");
        }
    }
    json_decref(vapo_model_metadata(m));
}

int LLVMFuzzerTestOneInput(const unsigned char *data, size_t size)
{
    check(ftruncate(fd, 0) == 0 && pwrite(fd, data, size, 0) == (ssize_t)size, "cannot write the memfd");
    vapo_ckpt *ck = vapo_ckpt_load(path);
    if (!ck)
        return 0;
    read_back(ck);
    vapo_ckpt_free(ck);
    vapo_model *m = vapo_model_load(path, be);
    if (m)
        use_ood(m);
    vapo_model_free(m);
    return 0;
}
