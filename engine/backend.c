#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "vapo/backend.h"
#include "vapo/error.h"

#ifndef VAPO_HAVE_CUDA
vapo_backend *vapo_backend_cuda(int device)
{
    (void)device;
    vapo_fail("this build of vapo has no CUDA backend (nvcc, cuBLAS or cuDNN were not found)");
    return NULL;
}
#endif

int vapo_device_parse(const char *name, int *device)
{
    if (!name || !strcmp(name, "auto")) {
        *device = VAPO_DEVICE_AUTO;
        return 0;
    }
    if (!strcmp(name, "cpu")) {
        *device = VAPO_DEVICE_CPU;
        return 0;
    }
    if (!strcmp(name, "cuda")) {
        *device = 0;
        return 0;
    }
    /* cuda:N with N plain decimal digits (no sign, space or hex) */
    const char *n = !strncmp(name, "cuda:", 5) ? name + 5 : "";
    size_t digits = strspn(n, "0123456789");
    if (digits > 0 && digits <= 4 && !n[digits]) {
        *device = atoi(n);
        return 0;
    }
    return vapo_fail("unknown device '%s' (expected cpu, cuda, cuda:N or auto)", name);
}

vapo_backend *vapo_backend_open(const char *name, int threads)
{
    int device = 0;
    if (vapo_device_parse(name, &device))
        return NULL;
    if (device == VAPO_DEVICE_CPU)
        return vapo_backend_cpu(threads);
    vapo_backend *be = vapo_backend_cuda(device == VAPO_DEVICE_AUTO ? 0 : device);
    if (be || device != VAPO_DEVICE_AUTO) {
        if (!be)
            vapo_fail("cannot open device '%s': %s", name, vapo_last_error());
        return be;
    }
    fprintf(stderr, "vapo: no usable CUDA device (%s); using the CPU backend\n", vapo_last_error());
    return vapo_backend_cpu(threads);
}
