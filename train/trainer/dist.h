/* Data-parallel training over MPI: R processes (ranks), started by mpirun,
 * each compute the gradient of their share of one global batch; the shares
 * are summed here, identically on every rank, so every rank takes the same
 * optimiser step. A process not started by mpirun (or a build without MPI)
 * is the one rank of a world of one and never calls MPI. Buffers are host
 * memory: a GPU rank stages its gradient through the host (docs/DESIGN.md,
 * "Data-parallel training"). */
#ifndef VAPO_TRAIN_DIST_H
#define VAPO_TRAIN_DIST_H

#include <stddef.h>

typedef struct {
    int rank, size;   /* this process and the number of ranks */
    int local_rank;   /* this process among the ranks on its machine: its GPU */
    float *scratch;   /* dist_sum's, grown as needed */
    size_t scratch_n;
} dist_world;

/* Joins the world mpirun started (MPI_Init), or makes a world of one.
 * Returns 0, or -1 with the error message set. */
int dist_init(int *argc, char ***argv, dist_world *w);

/* Leaves the world (MPI_Finalize after an orderly run). */
void dist_finalize(dist_world *w);

/* After an error on this rank: ends every rank (MPI_Abort), since the others
 * would wait for it forever in the next collective. Returns in a world of one. */
void dist_abort(dist_world *w, int code);

/* buf (n floats, every rank's) becomes the sum over the ranks, bit-identical
 * on every rank, each element added in rank order 0, 1, ..., R-1 (in double)
 * whatever the MPI library's reduction algorithms: a rerun with the same R
 * gives the same bits. Cost per rank: 2 (R-1)/R n floats sent and received,
 * as for a ring all-reduce. Returns 0 or -1 (message set). */
int dist_sum(dist_world *w, float *buf, size_t n);

/* all: R blocks of count doubles, this rank's filled in (block `rank`);
 * afterwards every block holds its rank's values, on every rank. */
int dist_gather(dist_world *w, double *all, int count);

/* 1 on every rank if flag is nonzero on any rank. */
int dist_any(dist_world *w, int flag);

#endif
