/*
 * kvx_internal.h - what the core and every backend share: error reporting, argument checks,
 * versioned structs, the CPU thread pool, and (backend.h) the backend interface. Never
 * installed.
 */
#ifndef KVX_INTERNAL_H
#define KVX_INTERNAL_H

#include <stdarg.h>

#include "kvx.h"

#ifdef __cplusplus
extern "C" { /* the GPU backend's .cu files are C++ */
#endif

#if defined(__GNUC__)
#define KVX_PRINTF(fmt_index, first_arg) __attribute__((format(printf, fmt_index, first_arg)))
#else
#define KVX_PRINTF(fmt_index, first_arg)
#endif

/* torch's name of a kvx_dtype ("bfloat16"), or "unknown dtype". */
const char *kvx_dtype_name(int32_t dtype);

/* Records a formatted message as this thread's last error and returns `status`, so that a
 * failing check reads `return kvx_fail(KVX_ERR_INVALID_ARGUMENT, "...", ...);`. */
int32_t kvx_fail(int32_t status, const char *fmt, ...) KVX_PRINTF(2, 3);
int32_t kvx_vfail(int32_t status, const char *fmt, va_list args) KVX_PRINTF(2, 0);

/* Clears this thread's last error; every public entry point calls it first. */
void kvx_clear_error(void);

/* Writes "kvx: <message>" as one line on stderr: for a setting the library refuses (an
 * environment variable), saying what it does instead. Callers make sure it is said once. */
void kvx_warn(const char *fmt, ...) KVX_PRINTF(1, 2);

/* The failure of most argument checks. */
#define FAIL_ARG(...) kvx_fail(KVX_ERR_INVALID_ARGUMENT, __VA_ARGS__)

/* ---------------------------------------------------------------- shared argument checks */

/* Each returns KVX_OK, or fails with KVX_ERR_INVALID_ARGUMENT naming what it checks: `name`,
 * or `owner->field` for a struct's field. The messages are part of the API (tests match them). */
/* lo <= value <= hi, else "<name>: expected <lo>..<hi>, got <value>". */
int32_t kvx_check_range(const char *name, int64_t value, int64_t lo, int64_t hi);
/* The same for a struct's field, named "<owner>-><field>". */
int32_t kvx_check_field(const char *owner, const char *field, int64_t value, int64_t lo,
                        int64_t hi);
/* ptr may be NULL only when the call touches none of its `count` elements, else
 * "<name>: expected a pointer to <count> elements, got NULL". */
int32_t kvx_check_pointer(const char *name, const void *ptr, int64_t count);
/* The same check for arrays whose message says what they hold: "<name>: expected <count>
 * <what>, got NULL" (rope's positions: "entries", transfer's slot_mapping: "int64 entries"). */
int32_t kvx_check_array(const char *name, const void *ptr, int64_t count, const char *what);
/* Adds stride * (count - 1) to *max_offset; a negative stride or an overflow fails. */
int32_t kvx_check_extent(const char *owner, const char *field, int64_t stride, int64_t count,
                         int64_t *max_offset);
/* The largest element offset a view can address must fit in int64 bytes. */
int32_t kvx_check_bytes_fit(const char *owner, int64_t max_offset, int64_t elem_size);

/* Device kernels load elements with the width of their type, and a GPU faults on a misaligned
 * load (an error that ends the whole CUDA context), so every backend gets element-aligned
 * arrays; strides count elements, so an aligned base aligns every element. `size` is a power of
 * two (1 always holds). */
static inline int kvx_is_aligned(const void *ptr, int32_t size)
{
    return (uintptr_t)ptr % (uintptr_t)size == 0;
}
/* Fails unless the call touches none of ptr's `count` elements or kvx_is_aligned(ptr, size):
 * "<name>: expected an address aligned to <size> bytes (<type>), got 0x<address>". */
int32_t kvx_check_aligned(const char *name, const void *ptr, int64_t count, int32_t size,
                          const char *type);
/* The same for elements of a kvx_dtype (one of at least 2 bytes, or the check always holds). */
int32_t kvx_check_dtype_aligned(const char *name, const void *ptr, int64_t count, int32_t dtype);

/* ---------------------------------------------------------------- versioned structs */

/* Public structs start with `uint32_t struct_size` so they can grow. kvx_read_struct copies the
 * caller's struct `name` (of C type `type`) into *copy, this library's `size` bytes: a smaller
 * struct (built against an older kvx.h) is read as far as it goes and the fields it lacks read
 * as zero; a larger one (a newer kvx.h than this library) is refused, since fields this library
 * does not know could change what the call means. The copy is what gets checked and used, so it
 * cannot change during the call. NULL is refused, naming `name`. */
int32_t kvx_read_struct(const char *name, const char *type, const void *user, void *copy,
                        size_t size);
/* The output side: writes this library's struct `value` (`size` bytes) into the caller's
 * `user`, as many bytes as its struct_size declares (larger is refused, as above); the caller's
 * struct_size is kept. */
int32_t kvx_write_struct(const char *name, const char *type, void *user, const void *value,
                         size_t size);
/* The check both make, alone: *declared = the caller's struct_size if it is 4 .. size. */
int32_t kvx_struct_size(const char *name, const char *type, const void *user, size_t size,
                        uint32_t *declared);

/* ---------------------------------------------------------------- caller arrays read once */

/* One element of an array in caller memory that another thread may change during the call
 * (Python releases the GIL around it): a volatile load, which the compiler may neither repeat nor
 * drop, so a value that was checked is the value used. Check the copy, and use only the copy. */
static inline int64_t kvx_read_once_i64(const int64_t *array, int64_t index)
{
    return ((const volatile int64_t *)array)[index];
}

static inline int32_t kvx_read_once_i32(const int32_t *array, int64_t index)
{
    return ((const volatile int32_t *)array)[index];
}

/* ---------------------------------------------------------------- thread pool */

/* Runs fn(ctx, begin, end) over [0, count) split into contiguous ranges of at least `grain`
 * items, on the pool's threads and the caller's. Returns when every range is done. When the pool
 * is busy serving another caller, the whole range runs on the calling thread instead. */
typedef void (*kvx_range_fn)(void *ctx, int64_t begin, int64_t end);
void kvx_parallel_for(int64_t count, int64_t grain, kvx_range_fn fn, void *ctx);

#ifdef __cplusplus
}
#endif

/* The backend interface: every op's arguments struct and slot, the registry (backend.h). */
#include "backend.h"

#endif /* KVX_INTERNAL_H */
