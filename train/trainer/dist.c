/* dist.h over MPI, or a world of one without it. */
#include "trainer/dist.h"

#include <limits.h>
#include <stdlib.h>

#include "vapo/error.h"

/* Started by a launcher (Open MPI's mpirun, or a PMI/PMIx one such as srun)?
 * A plain process stays out of MPI: no singleton start-up, no MPI at all. */
static int launched(void)
{
    return getenv("OMPI_COMM_WORLD_SIZE") || getenv("PMIX_RANK") || getenv("PMI_SIZE");
}

#ifdef VAPO_HAVE_MPI
#include <mpi.h>

int dist_init(int *argc, char ***argv, dist_world *w)
{
    *w = (dist_world){.size = 1};
    if (!launched())
        return 0;
    if (MPI_Init(argc, argv) != MPI_SUCCESS)
        return vapo_fail("MPI_Init failed");
    MPI_Comm local;
    MPI_Comm_rank(MPI_COMM_WORLD, &w->rank);
    MPI_Comm_size(MPI_COMM_WORLD, &w->size);
    MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, w->rank, MPI_INFO_NULL, &local);
    MPI_Comm_rank(local, &w->local_rank);
    MPI_Comm_free(&local);
    return 0;
}

static int mpi_active(void)
{
    int up = 0, down = 0;
    MPI_Initialized(&up);
    MPI_Finalized(&down);
    return up && !down;
}

void dist_finalize(dist_world *w)
{
    free(w->scratch);
    w->scratch = NULL, w->scratch_n = 0;
    if (mpi_active())
        MPI_Finalize();
}

void dist_abort(dist_world *w, int code)
{
    if (w->size > 1 && mpi_active())
        MPI_Abort(MPI_COMM_WORLD, code);
}

/* Rank r's chunk of n elements: [first(r), first(r + 1)). */
static size_t chunk_first(size_t n, int size, int r)
{
    return n / size * r + (size_t)(r < (int)(n % size) ? r : (int)(n % size));
}

/* A reduce-scatter that fixes the order of the additions (MPI_Allreduce and
 * MPI_Reduce_scatter leave it to the library, which may pick its algorithm
 * by message size and process layout): every rank sends each rank r its
 * chunk r (MPI_Alltoallv), adds the R copies of its own chunk in rank order,
 * and MPI_Allgatherv hands the summed chunks to all. */
int dist_sum(dist_world *w, float *buf, size_t n)
{
    const int R = w->size, me = w->rank;
    if (R == 1)
        return 0;
    if (n / R + 1 > (size_t)INT_MAX / R)
        return vapo_fail("dist_sum: %zu floats is too many for MPI's int counts over %d ranks", n, R);
    const int own = (int)(chunk_first(n, R, me + 1) - chunk_first(n, R, me));
    int count[R], first[R], recv_count[R], recv_first[R];
    for (int r = 0; r < R; r++) {
        first[r] = (int)chunk_first(n, R, r), count[r] = (int)(chunk_first(n, R, r + 1) - first[r]);
        recv_count[r] = own, recv_first[r] = r * own;
    }
    if ((size_t)R * own > w->scratch_n) {
        float *grown = realloc(w->scratch, sizeof(float) * R * own);
        if (!grown)
            return vapo_fail("out of memory for the gradient exchange");
        w->scratch = grown, w->scratch_n = (size_t)R * own;
    }
    if (MPI_Alltoallv(buf, count, first, MPI_FLOAT, w->scratch, recv_count, recv_first, MPI_FLOAT, MPI_COMM_WORLD))
        return vapo_fail("MPI_Alltoallv failed");
    float *sum = buf + first[me];
#pragma omp parallel for schedule(static) if (own > (1 << 16))
    for (int j = 0; j < own; j++) {
        double s = 0;
        for (int r = 0; r < R; r++) /* rank order */
            s += w->scratch[(size_t)r * own + j];
        sum[j] = (float)s;
    }
    if (MPI_Allgatherv(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, buf, count, first, MPI_FLOAT, MPI_COMM_WORLD))
        return vapo_fail("MPI_Allgatherv failed");
    return 0;
}

#else /* a world of one */

int dist_init(int *argc, char ***argv, dist_world *w)
{
    (void)argc, (void)argv;
    *w = (dist_world){.size = 1};
    /* R copies of a single-process trainer would each train the whole batch into one --out */
    const char *size = getenv("OMPI_COMM_WORLD_SIZE") ? getenv("OMPI_COMM_WORLD_SIZE") : getenv("PMI_SIZE");
    if (launched() && (!size || atoi(size) != 1))
        return vapo_fail("started by mpirun, but this build has no MPI (install libopenmpi-dev and rebuild)");
    return 0;
}

void dist_finalize(dist_world *w) { (void)w; }
void dist_abort(dist_world *w, int code) { (void)w, (void)code; }
int dist_sum(dist_world *w, float *buf, size_t n) { return (void)w, (void)buf, (void)n, 0; }

#endif

int dist_gather(dist_world *w, double *all, int count)
{
#ifdef VAPO_HAVE_MPI
    if (w->size > 1 &&
        MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, all, count, MPI_DOUBLE, MPI_COMM_WORLD))
        return vapo_fail("MPI_Allgather failed");
#else
    (void)w, (void)all, (void)count;
#endif
    return 0;
}

int dist_any(dist_world *w, int flag)
{
    int any = flag != 0;
#ifdef VAPO_HAVE_MPI
    if (w->size > 1)
        MPI_Allreduce(MPI_IN_PLACE, &any, 1, MPI_INT, MPI_LOR, MPI_COMM_WORLD);
#else
    (void)w;
#endif
    return any;
}

