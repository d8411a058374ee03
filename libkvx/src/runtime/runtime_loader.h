/*
 * runtime_loader.h - vendor runtimes found at run time (dlopen), shared by the Ascend and
 * Cambricon backends.
 *
 * A process that already uses the device (through torch_npu, torch_mlu or the vendor's own
 * tools) has loaded and initialised the runtime; that copy owns the caller's contexts and
 * streams, so it is looked up first (RTLD_NOLOAD matches the loaded library by its soname). Only
 * if none is loaded is the library opened from the usual search path. A failed attempt is not
 * remembered: importing the vendor's torch plugin after libkvx makes the backend available.
 */
#ifndef KVX_RUNTIME_LOADER_H
#define KVX_RUNTIME_LOADER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>

#include "../core/kvx_internal.h"

/* One function a backend resolves: its name, whether the backend cannot work without it, and
 * where its pointer goes in the backend's function table (offsetof). */
typedef struct kvx_runtime_symbol {
    const char *name;
    int required;
    size_t offset;
} kvx_runtime_symbol;

/* After the symbols: derives what the table needs from them (e.g. the best of several copy
 * entry points); on failure returns 0 and writes why into reason. May be NULL. */
typedef int (*kvx_runtime_finish_fn)(void *table, char *reason, size_t size);

typedef struct kvx_runtime {
    const char *backend;      /* "ascend", for messages */
    const char *library;      /* soname, e.g. "libascendcl.so" */
    const char *install_hint; /* how to make the library loadable */
    const char *too_old_hint; /* said when a required function is missing */
    const kvx_runtime_symbol *symbols;
    size_t num_symbols;
    kvx_runtime_finish_fn finish;
    void *table; /* the backend's function table, published once fully resolved */
    pthread_mutex_t lock;
    _Atomic(void *) ready;
} kvx_runtime;

#define KVX_RUNTIME_INIT(backend, library, install_hint, too_old_hint, symbols, finish, table) \
    {(backend),       (library), (install_hint), (too_old_hint),                              \
     (symbols),       sizeof(symbols) / sizeof((symbols)[0]),                                  \
     (finish),        (table),   PTHREAD_MUTEX_INITIALIZER,                                    \
     NULL}

/* The resolved table, or NULL after kvx_fail(KVX_ERR_NOT_AVAILABLE, reason). Thread-safe. */
void *kvx_runtime_load(kvx_runtime *runtime);

#endif /* KVX_RUNTIME_LOADER_H */
