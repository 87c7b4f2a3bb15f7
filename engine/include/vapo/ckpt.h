/* Checkpoints as safetensors files, so weights open in Python tools too.
 *
 * Layout: u64 little-endian header length N, N bytes of JSON header (padded
 * with spaces to a multiple of 8), then the raw little-endian tensor data.
 * The header maps each tensor name to {"dtype", "shape", "data_offsets"}
 * (offsets relative to the data section) and may hold "__metadata__", an
 * object whose values are all strings.
 *
 * Metadata rule. On save, string values are stored as they are; every other
 * value (object, array, number, boolean, null) is stored as its compact JSON
 * text with sorted keys. On load, a string value that parses as a JSON object
 * or array is returned parsed; every other value stays a string. So nested
 * objects and arrays round-trip, while a top-level number or boolean comes
 * back as its text ("1200", "true"): put scalars you want typed inside an
 * object (e.g. "train": {"step": 1200}). A plain string that happens to be
 * JSON object/array text comes back parsed.
 *
 * Errors: functions return -1 (or NULL) and record a message naming the file
 * and the problem, read with vapo_last_error(). */
#ifndef VAPO_CKPT_H
#define VAPO_CKPT_H

#include <jansson.h>
#include <stdint.h>

#define VAPO_CKPT_MAX_DIMS 8

typedef enum { VAPO_DT_F32, VAPO_DT_F64, VAPO_DT_I64, VAPO_DT_U8 } vapo_dtype;

/* One tensor in host memory, row-major. For a save, data may be NULL when the
 * tensor has no elements. In a loaded checkpoint, data is aligned for its
 * dtype and stays valid until vapo_ckpt_free. */
typedef struct {
    const char *name;
    vapo_dtype dtype;
    int ndim; /* 0 (a scalar) .. VAPO_CKPT_MAX_DIMS */
    int64_t shape[VAPO_CKPT_MAX_DIMS];
    const void *data;
} vapo_tensor_ref;

typedef struct vapo_ckpt vapo_ckpt;

/* Bytes per element of a dtype. */
int vapo_dtype_size(vapo_dtype dt);

/* Writes n tensors, packed in the given order, and metadata (an object or
 * NULL) to path atomically: a temp file in the same folder, synced, then
 * renamed over path. On failure an existing file at path is left untouched
 * and the temp file removed; the one exception is a failed fsync of the
 * folder after the rename, reported as "saved, but syncing its folder failed". */
int vapo_ckpt_save(const char *path, const vapo_tensor_ref *tensors, int n, const json_t *metadata);

/* Reads and validates a whole file. NULL on any problem. */
vapo_ckpt *vapo_ckpt_load(const char *path);

/* Tensors in header order; find returns NULL (no error recorded) when absent. */
int vapo_ckpt_count(const vapo_ckpt *ck);
const vapo_tensor_ref *vapo_ckpt_tensor(const vapo_ckpt *ck, int i);
const vapo_tensor_ref *vapo_ckpt_find(const vapo_ckpt *ck, const char *name);

/* Copies the F32 tensor `name` into dst after checking that it exists, is F32
 * and has exactly the expected shape. */
int vapo_ckpt_read_f32(const vapo_ckpt *ck, const char *name, int ndim, const int64_t *shape, float *dst);

/* The metadata object (empty when the file has none), owned by ck. */
const json_t *vapo_ckpt_metadata(const vapo_ckpt *ck);

void vapo_ckpt_free(vapo_ckpt *ck);

#endif
