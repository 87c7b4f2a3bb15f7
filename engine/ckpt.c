/* Checkpoints as safetensors files: atomic saves, fully validated loads.
 * The format is https://github.com/huggingface/safetensors (see ckpt.h). */
#define _POSIX_C_SOURCE 200809L /* fsync, fileno, strdup, O_DIRECTORY */

#include "vapo/ckpt.h"

#include "vapo/error.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Tensor bytes are written and read as they lie in memory. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "safetensors data is little-endian; a big-endian host needs byte swapping in ckpt.c");

/* The reference reader refuses headers above 100 MB; a larger length is corruption. */
#define HEADER_MAX 100000000u

static const struct {
    const char *name;
    int size;
} dtypes[] = {
    [VAPO_DT_F32] = {"F32", 4},
    [VAPO_DT_F64] = {"F64", 8},
    [VAPO_DT_I64] = {"I64", 8},
    [VAPO_DT_U8] = {"U8", 1},
};
#define N_DTYPES ((int)(sizeof dtypes / sizeof dtypes[0]))

struct vapo_ckpt {
    char *path; /* for error messages */
    int n;
    vapo_tensor_ref *tensors;
    void **owned;        /* per tensor: an aligned copy when its bytes were misaligned, else NULL */
    unsigned char *data; /* the data section */
    json_t *header;      /* owns the tensor names */
    json_t *meta;
};

int vapo_dtype_size(vapo_dtype dt) { return (int)dt >= 0 && (int)dt < N_DTYPES ? dtypes[dt].size : 0; }

/* Bytes of a tensor, or -1 when a dimension is negative or the size overflows int64. */
static int64_t tensor_bytes(int ndim, const int64_t *shape, int elem)
{
    int64_t n = elem;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0 || (shape[d] > 0 && n > INT64_MAX / shape[d]))
            return -1;
        n *= shape[d];
    }
    return n;
}

/* "[2, 3]" for messages. */
static const char *shape_str(char *buf, size_t cap, int ndim, const int64_t *shape)
{
    size_t at = (size_t)snprintf(buf, cap, "[");
    for (int d = 0; d < ndim && at < cap; d++)
        at += (size_t)snprintf(buf + at, cap - at, "%s%" PRId64, d ? ", " : "", shape[d]);
    if (at < cap)
        snprintf(buf + at, cap - at, "]");
    return buf;
}

/* ---- save ------------------------------------------------------------------ */

/* The header object: __metadata__ first (as the Python writer does), then the
 * tensors with offsets packed in the given order. */
static json_t *build_header(const char *path, const vapo_tensor_ref *tensors, int n, const json_t *metadata)
{
    json_t *hdr = json_object();
    if (!hdr)
        goto oom;
    if (metadata && json_object_size(metadata) > 0) {
        json_t *m = json_object();
        if (!m || json_object_set_new(hdr, "__metadata__", m))
            goto oom;
        const char *key;
        json_t *val;
        /* jansson's iteration API takes non-const pointers; nothing is modified. */
        json_object_foreach((json_t *)metadata, key, val) {
            json_t *s;
            if (json_is_string(val)) {
                s = json_stringn(json_string_value(val), json_string_length(val));
            } else {
                /* safetensors metadata values must be strings: store the JSON text. */
                char *txt = json_dumps(val, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
                s = txt ? json_string(txt) : NULL;
                free(txt);
            }
            if (!s || json_object_set_new(m, key, s))
                goto oom;
        }
    }
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        const vapo_tensor_ref *t = &tensors[i];
        if (!t->name) {
            vapo_fail("%s: tensor %d has no name", path, i);
            goto fail;
        }
        if (strcmp(t->name, "__metadata__") == 0 || json_object_get(hdr, t->name)) {
            vapo_fail("%s: tensor name '%.80s' is %s", path, t->name,
                      strcmp(t->name, "__metadata__") == 0 ? "reserved" : "a duplicate");
            goto fail;
        }
        if ((int)t->dtype < 0 || (int)t->dtype >= N_DTYPES) {
            vapo_fail("%s: tensor '%.80s' has unknown dtype %d", path, t->name, (int)t->dtype);
            goto fail;
        }
        if (t->ndim < 0 || t->ndim > VAPO_CKPT_MAX_DIMS) {
            vapo_fail("%s: tensor '%.80s' has %d dimensions (0..%d allowed)", path, t->name, t->ndim,
                      VAPO_CKPT_MAX_DIMS);
            goto fail;
        }
        int64_t bytes = tensor_bytes(t->ndim, t->shape, dtypes[t->dtype].size);
        if (bytes < 0 || off > INT64_MAX - bytes) {
            vapo_fail("%s: tensor '%.80s' has a negative dimension or a size that overflows", path, t->name);
            goto fail;
        }
        if (bytes > 0 && !t->data) {
            vapo_fail("%s: tensor '%.80s' has no data", path, t->name);
            goto fail;
        }
        json_t *shape = json_array();
        for (int d = 0; shape && d < t->ndim; d++)
            if (json_array_append_new(shape, json_integer(t->shape[d]))) {
                json_decref(shape);
                shape = NULL;
            }
        json_t *entry = shape ? json_pack("{s:s, s:o, s:[I, I]}", "dtype", dtypes[t->dtype].name, "shape", shape,
                                          "data_offsets", (json_int_t)off, (json_int_t)(off + bytes))
                              : NULL;
        if (!entry)
            goto oom;
        if (json_object_set_new(hdr, t->name, entry)) {
            vapo_fail("%s: tensor name '%.80s' is not valid UTF-8", path, t->name);
            goto fail;
        }
        off += bytes;
    }
    return hdr;
oom:
    vapo_fail("%s: out of memory building the header", path);
fail:
    json_decref(hdr);
    return NULL;
}

static int write_all(FILE *f, const void *p, size_t n) { return n == 0 || fwrite(p, 1, n, f) == n ? 0 : -1; }

/* fsync the folder holding path, so the rename itself survives a crash. */
static int sync_parent_dir(const char *path)
{
    char *dir = strdup(path);
    if (!dir)
        return -1;
    char *slash = strrchr(dir, '/');
    const char *name = ".";
    if (slash) {
        slash[slash == dir] = '\0'; /* keep "/" for files in the root */
        name = dir;
    }
    int fd = open(name, O_RDONLY | O_DIRECTORY);
    int rc = -1;
    if (fd >= 0) {
        rc = fsync(fd);
        if (rc != 0 && errno == EINVAL) /* folder fsync unsupported here: nothing more we can do */
            rc = 0;
        close(fd);
    }
    free(dir);
    return rc;
}

int vapo_ckpt_save(const char *path, const vapo_tensor_ref *tensors, int n, const json_t *metadata)
{
    if (!path)
        return vapo_fail("ckpt save: no path");
    if (n < 0 || (n > 0 && !tensors))
        return vapo_fail("%s: bad tensor list (n = %d)", path, n);
    if (metadata && !json_is_object(metadata))
        return vapo_fail("%s: metadata must be a JSON object", path);

    /* Everything that can fail on bad input fails before the file system is touched. */
    json_t *hdr = build_header(path, tensors, n, metadata);
    if (!hdr)
        return -1;
    char *text = json_dumps(hdr, JSON_COMPACT);
    json_decref(hdr);
    size_t tmp_cap = strlen(path) + 32;
    char *tmp = malloc(tmp_cap);
    if (!text || !tmp) {
        free(text);
        free(tmp);
        return vapo_fail("%s: out of memory", path);
    }
    snprintf(tmp, tmp_cap, "%s.tmp.%ld", path, (long)getpid());

    /* Pad with spaces so the data section starts 8-byte aligned in the file. */
    size_t len = strlen(text);
    size_t padded = (len + 7) & ~(size_t)7;
    unsigned char lenb[8];
    for (int i = 0; i < 8; i++)
        lenb[i] = (unsigned char)((uint64_t)padded >> (8 * i));
    static const char spaces[8] = "        ";

    FILE *f = fopen(tmp, "wb");
    if (!f) {
        int e = errno;
        free(text);
        free(tmp);
        return vapo_fail("%s: cannot create temp file: %s", path, strerror(e));
    }
    int bad = write_all(f, lenb, 8) || write_all(f, text, len) || write_all(f, spaces, padded - len);
    for (int i = 0; i < n && !bad; i++) {
        const vapo_tensor_ref *t = &tensors[i];
        bad = write_all(f, t->data, (size_t)tensor_bytes(t->ndim, t->shape, dtypes[t->dtype].size));
    }
    /* A full disk may only show at flush or close; a crash must not leave a
     * renamed file whose bytes never reached the disk, hence fsync before rename. */
    bad = bad || fflush(f) != 0 || fsync(fileno(f)) != 0;
    int e = errno;
    if (fclose(f) != 0 && !bad) {
        bad = 1;
        e = errno;
    }
    free(text);
    if (bad) {
        unlink(tmp);
        free(tmp);
        return vapo_fail("%s: writing the temp file failed: %s", path, strerror(e));
    }
    if (rename(tmp, path) != 0) {
        e = errno;
        unlink(tmp);
        free(tmp);
        return vapo_fail("%s: cannot rename the temp file into place: %s", path, strerror(e));
    }
    free(tmp);
    if (sync_parent_dir(path) != 0)
        return vapo_fail("%s: saved, but syncing its folder failed: %s", path, strerror(errno));
    return 0;
}

/* ---- load ------------------------------------------------------------------ */

typedef struct {
    int64_t begin, end;
    int idx;
} span;

static int span_cmp(const void *a, const void *b)
{
    const span *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return x->idx - y->idx;
}

/* Non-negative integer or -1. */
static int64_t nonneg_int(const json_t *v) { return json_is_integer(v) && json_integer_value(v) >= 0 ? json_integer_value(v) : -1; }

/* Validates one header entry into *t and *s; dsize is the data section's size. */
static int parse_tensor(const char *path, const char *name, json_t *val, int64_t dsize, vapo_tensor_ref *t, span *s)
{
    if (!json_is_object(val))
        return vapo_fail("%s: tensor '%.80s': header entry is not an object", path, name);
    t->name = name;

    json_t *dt = json_object_get(val, "dtype");
    if (!json_is_string(dt))
        return vapo_fail("%s: tensor '%.80s': missing or non-string dtype", path, name);
    int k = 0;
    while (k < N_DTYPES && strcmp(json_string_value(dt), dtypes[k].name) != 0)
        k++;
    if (k == N_DTYPES)
        return vapo_fail("%s: tensor '%.80s': unsupported dtype '%.16s' (F32, F64, I64 and U8 are supported)",
                         path, name, json_string_value(dt));
    t->dtype = (vapo_dtype)k;

    json_t *shape = json_object_get(val, "shape");
    if (!json_is_array(shape))
        return vapo_fail("%s: tensor '%.80s': missing shape (an array of integers)", path, name);
    if (json_array_size(shape) > VAPO_CKPT_MAX_DIMS)
        return vapo_fail("%s: tensor '%.80s': shape has %zu dimensions, at most %d are supported", path, name,
                         json_array_size(shape), VAPO_CKPT_MAX_DIMS);
    t->ndim = (int)json_array_size(shape);
    for (int d = 0; d < t->ndim; d++) {
        t->shape[d] = nonneg_int(json_array_get(shape, (size_t)d));
        if (t->shape[d] < 0)
            return vapo_fail("%s: tensor '%.80s': shape[%d] is not a non-negative integer", path, name, d);
    }
    int64_t bytes = tensor_bytes(t->ndim, t->shape, dtypes[k].size);
    if (bytes < 0)
        return vapo_fail("%s: tensor '%.80s': shape size overflows", path, name);

    json_t *offs = json_object_get(val, "data_offsets");
    s->begin = json_array_size(offs) == 2 ? nonneg_int(json_array_get(offs, 0)) : -1;
    s->end = json_array_size(offs) == 2 ? nonneg_int(json_array_get(offs, 1)) : -1;
    if (s->begin < 0 || s->end < 0)
        return vapo_fail("%s: tensor '%.80s': data_offsets must be [begin, end], two non-negative integers", path,
                         name);
    if (s->begin > s->end || s->end > dsize)
        return vapo_fail("%s: tensor '%.80s': data_offsets [%" PRId64 ", %" PRId64
                         "] fall outside the data section of %" PRId64 " bytes",
                         path, name, s->begin, s->end, dsize);
    if (s->end - s->begin != bytes) {
        char sh[128];
        return vapo_fail("%s: tensor '%.80s': data_offsets span %" PRId64 " bytes but %s shape %s needs %" PRId64,
                         path, name, s->end - s->begin, dtypes[k].name,
                         shape_str(sh, sizeof sh, t->ndim, t->shape), bytes);
    }
    return 0;
}

/* __metadata__ must be an object of strings; object/array texts come back parsed. */
static int parse_metadata(vapo_ckpt *ck, json_t *val)
{
    if (!json_is_object(val))
        return vapo_fail("%s: __metadata__ is not an object", ck->path);
    const char *key;
    json_t *v;
    json_object_foreach(val, key, v) {
        if (!json_is_string(v))
            return vapo_fail("%s: __metadata__ value '%.80s' is not a string", ck->path, key);
        /* Without JSON_DECODE_ANY jansson accepts only an object or array at the top. */
        json_t *p = json_loadb(json_string_value(v), json_string_length(v), 0, NULL);
        if (!p)
            p = json_stringn(json_string_value(v), json_string_length(v));
        if (!p || json_object_set_new(ck->meta, key, p))
            return vapo_fail("%s: out of memory reading __metadata__", ck->path);
    }
    return 0;
}

/* Parses and checks the header; fills ck->tensors and spans (one per tensor). */
static int parse_header(vapo_ckpt *ck, const char *buf, size_t len, int64_t dsize, span **spans_out)
{
    json_error_t jerr;
    /* jansson checks UTF-8 and, with this flag, rejects duplicate tensor names. */
    ck->header = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!ck->header)
        return vapo_fail("%s: header is not valid JSON: %s (at byte %d)", ck->path, jerr.text, jerr.position);
    if (!json_is_object(ck->header))
        return vapo_fail("%s: header is not a JSON object", ck->path);

    size_t cap = json_object_size(ck->header) + 1;
    ck->tensors = calloc(cap, sizeof *ck->tensors);
    ck->owned = calloc(cap, sizeof *ck->owned);
    span *spans = *spans_out = calloc(cap, sizeof *spans);
    if (!ck->tensors || !ck->owned || !spans)
        return vapo_fail("%s: out of memory reading the header", ck->path);

    const char *key;
    json_t *val;
    json_object_foreach(ck->header, key, val) {
        if (strcmp(key, "__metadata__") == 0) {
            if (parse_metadata(ck, val) < 0)
                return -1;
            continue;
        }
        if (parse_tensor(ck->path, key, val, dsize, &ck->tensors[ck->n], &spans[ck->n]) < 0)
            return -1;
        spans[ck->n].idx = ck->n;
        ck->n++;
    }

    /* Sorted by offset, the tensors must tile the data section exactly. */
    span *sorted = malloc((size_t)ck->n * sizeof *sorted + 1);
    if (!sorted)
        return vapo_fail("%s: out of memory reading the header", ck->path);
    memcpy(sorted, spans, (size_t)ck->n * sizeof *sorted);
    qsort(sorted, (size_t)ck->n, sizeof *sorted, span_cmp);
    int64_t at = 0;
    for (int i = 0; i < ck->n; i++) {
        const span *s = &sorted[i];
        int rc = 0;
        if (s->begin < at)
            rc = vapo_fail("%s: tensors '%.80s' and '%.80s' overlap in the data section", ck->path,
                           ck->tensors[sorted[i - 1].idx].name, ck->tensors[s->idx].name);
        else if (s->begin > at)
            rc = vapo_fail("%s: gap of %" PRId64 " bytes before tensor '%.80s' in the data section", ck->path,
                           s->begin - at, ck->tensors[s->idx].name);
        if (rc) {
            free(sorted);
            return -1;
        }
        at = s->end;
    }
    free(sorted);
    if (at != dsize)
        return vapo_fail("%s: data section is %" PRId64 " bytes but the tensors end at %" PRId64, ck->path, dsize,
                         at);
    return 0;
}

static int read_exact(FILE *f, void *p, size_t n, const char *path, const char *what)
{
    if (n == 0 || fread(p, 1, n, f) == n)
        return 0;
    return vapo_fail("%s: reading the %s failed: %s", path, what,
                     ferror(f) ? strerror(errno) : "file ended early (changed while reading?)");
}

vapo_ckpt *vapo_ckpt_load(const char *path)
{
    if (!path) {
        vapo_fail("ckpt load: no path");
        return NULL;
    }
    vapo_ckpt *ck = calloc(1, sizeof *ck);
    char *hbuf = NULL;
    span *spans = NULL;
    FILE *f = NULL;
    if (!ck || !(ck->path = strdup(path)) || !(ck->meta = json_object())) {
        vapo_fail("%s: out of memory", path);
        goto fail;
    }
    f = fopen(path, "rb");
    if (!f) {
        vapo_fail("%s: cannot open: %s", path, strerror(errno));
        goto fail;
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || !S_ISREG(st.st_mode)) {
        vapo_fail("%s: not a regular file", path);
        goto fail;
    }
    uint64_t size = (uint64_t)st.st_size;
    if (size < 8) {
        vapo_fail("%s: file is %" PRIu64 " bytes, shorter than the 8-byte header length", path, size);
        goto fail;
    }
    unsigned char lenb[8];
    if (read_exact(f, lenb, 8, path, "header length") < 0)
        goto fail;
    uint64_t hlen = 0;
    for (int i = 0; i < 8; i++)
        hlen |= (uint64_t)lenb[i] << (8 * i);
    if (hlen == 0) {
        vapo_fail("%s: header length is 0", path);
        goto fail;
    }
    if (hlen > HEADER_MAX) {
        vapo_fail("%s: header length %" PRIu64 " is over the 100 MB limit (corrupt file?)", path, hlen);
        goto fail;
    }
    if (hlen > size - 8) {
        vapo_fail("%s: header length %" PRIu64 " is larger than the %" PRIu64 " bytes after it (truncated file?)",
                  path, hlen, size - 8);
        goto fail;
    }
    if (!(hbuf = malloc(hlen))) {
        vapo_fail("%s: out of memory for a %" PRIu64 "-byte header", path, hlen);
        goto fail;
    }
    if (read_exact(f, hbuf, hlen, path, "header") < 0)
        goto fail;
    int64_t dsize = (int64_t)(size - 8 - hlen);
    if (parse_header(ck, hbuf, hlen, dsize, &spans) < 0)
        goto fail;
    free(hbuf);
    hbuf = NULL;

    /* +1: malloc(0) may return NULL. Fresh malloc memory is aligned for any dtype. */
    if (!(ck->data = malloc((size_t)dsize + 1))) {
        vapo_fail("%s: out of memory for %" PRId64 " bytes of tensor data", path, dsize);
        goto fail;
    }
    if (read_exact(f, ck->data, (size_t)dsize, path, "tensor data") < 0)
        goto fail;
    fclose(f);
    f = NULL;

    /* Other writers may place a tensor at an offset that is not a multiple of
     * its element size; give such tensors an aligned copy so callers can read
     * them through typed pointers. */
    for (int i = 0; i < ck->n; i++) {
        vapo_tensor_ref *t = &ck->tensors[i];
        size_t bytes = (size_t)(spans[i].end - spans[i].begin);
        unsigned char *src = ck->data + spans[i].begin;
        if (bytes == 0)
            t->data = ck->data;
        else if (spans[i].begin % dtypes[t->dtype].size == 0)
            t->data = src;
        else if ((ck->owned[i] = malloc(bytes)))
            t->data = memcpy(ck->owned[i], src, bytes);
        else {
            vapo_fail("%s: out of memory", path);
            goto fail;
        }
    }
    free(spans);
    return ck;
fail:
    if (f)
        fclose(f);
    free(hbuf);
    free(spans);
    vapo_ckpt_free(ck);
    return NULL;
}

/* ---- access ------------------------------------------------------------------ */

int vapo_ckpt_count(const vapo_ckpt *ck) { return ck ? ck->n : 0; }

const vapo_tensor_ref *vapo_ckpt_tensor(const vapo_ckpt *ck, int i)
{
    return ck && i >= 0 && i < ck->n ? &ck->tensors[i] : NULL;
}

const vapo_tensor_ref *vapo_ckpt_find(const vapo_ckpt *ck, const char *name)
{
    for (int i = 0; ck && name && i < ck->n; i++)
        if (strcmp(ck->tensors[i].name, name) == 0)
            return &ck->tensors[i];
    return NULL;
}

int vapo_ckpt_read_f32(const vapo_ckpt *ck, const char *name, int ndim, const int64_t *shape, float *dst)
{
    if (!ck || !name)
        return vapo_fail("ckpt read: no checkpoint or name");
    const vapo_tensor_ref *t = vapo_ckpt_find(ck, name);
    if (!t)
        return vapo_fail("%s: no tensor '%.80s'", ck->path, name);
    if (t->dtype != VAPO_DT_F32)
        return vapo_fail("%s: tensor '%.80s' is %s, expected F32", ck->path, name, dtypes[t->dtype].name);
    int same = t->ndim == ndim && (ndim == 0 || (shape && memcmp(t->shape, shape, (size_t)ndim * sizeof *shape) == 0));
    if (!same) {
        char got[128], want[128];
        return vapo_fail("%s: tensor '%.80s' has shape %s, expected %s", ck->path, name,
                         shape_str(got, sizeof got, t->ndim, t->shape),
                         ndim >= 0 && ndim <= VAPO_CKPT_MAX_DIMS && shape ? shape_str(want, sizeof want, ndim, shape)
                                                                          : "(invalid)");
    }
    size_t bytes = (size_t)tensor_bytes(t->ndim, t->shape, 4);
    if (bytes > 0)
        memcpy(dst, t->data, bytes);
    return 0;
}

const json_t *vapo_ckpt_metadata(const vapo_ckpt *ck) { return ck ? ck->meta : NULL; }

void vapo_ckpt_free(vapo_ckpt *ck)
{
    if (!ck)
        return;
    for (int i = 0; ck->owned && i < ck->n; i++)
        free(ck->owned[i]);
    free(ck->owned);
    free(ck->tensors);
    free(ck->data);
    json_decref(ck->header);
    json_decref(ck->meta);
    free(ck->path);
    free(ck);
}
