#include <stdio.h>
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

vapo_backend *vapo_backend_open(const char *name, int threads)
{
    if (!name || !strcmp(name, "auto")) {
        vapo_backend *be = vapo_backend_cuda(0);
        if (be)
            return be;
        fprintf(stderr, "vapo: no usable CUDA device (%s); using the CPU backend\n", vapo_last_error());
        return vapo_backend_cpu(threads);
    }
    if (!strcmp(name, "cpu"))
        return vapo_backend_cpu(threads);
    if (!strcmp(name, "cuda"))
        return vapo_backend_cuda(0);
    int device, end = 0;
    if (sscanf(name, "cuda:%d%n", &device, &end) == 1 && !name[end] && device >= 0)
        return vapo_backend_cuda(device);
    vapo_fail("unknown device '%s' (expected cpu, cuda, cuda:N or auto)", name);
    return NULL;
}
