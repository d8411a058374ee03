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

#include "kvx_internal.h"

/* Fills the backend's function table from an open library; on failure returns 0 and writes
 * why (e.g. which required function is missing) into reason. */
typedef int (*kvx_runtime_resolve_fn)(void *handle, void *table, char *reason, size_t size);

typedef struct kvx_runtime {
    const char *backend;      /* "ascend", for messages */
    const char *library;      /* soname, e.g. "libascendcl.so" */
    const char *install_hint; /* how to make the library loadable */
    kvx_runtime_resolve_fn resolve;
    void *table; /* the backend's function table, published once fully resolved */
    pthread_mutex_t lock;
    _Atomic(void *) ready;
} kvx_runtime;

#define KVX_RUNTIME_INIT(backend, library, hint, resolve, table)                              \
    {(backend), (library), (hint), (resolve), (table), PTHREAD_MUTEX_INITIALIZER, NULL}

/* The resolved table, or NULL after kvx_fail(KVX_ERR_NOT_AVAILABLE, reason). Thread-safe. */
void *kvx_runtime_load(kvx_runtime *runtime);

/* What a backend's "make the stream's device current" step must undo afterwards: restore
 * `previous` when `restore` is set (a thread that had no current device keeps the new one). */
typedef struct kvx_device_guard {
    int32_t previous;
    int restore;
} kvx_device_guard;

#endif /* KVX_RUNTIME_LOADER_H */
