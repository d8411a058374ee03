/* runtime_loader.c - see runtime_loader.h. */
#include "runtime_loader.h"

#include <dlfcn.h>
#include <stdio.h>
#include <string.h>

static void *open_runtime(const kvx_runtime *rt, char *reason, size_t size)
{
    void *handle = dlopen(rt->library, RTLD_NOW | RTLD_NOLOAD);
    if (!handle)
        handle = dlopen(rt->library, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        const char *why = dlerror();
        snprintf(reason, size, "cannot load %s (%s): %s", rt->library, why ? why : "not found",
                 rt->install_hint);
    }
    return handle;
}

/* Fills the table's function pointers; fails on a missing required one, leaves optional ones
 * NULL. */
static int resolve(const kvx_runtime *rt, void *handle, char *reason, size_t size)
{
    for (size_t i = 0; i < rt->num_symbols; i++) {
        const kvx_runtime_symbol *s = &rt->symbols[i];
        void *sym = dlsym(handle, s->name);
        if (!sym && s->required) {
            snprintf(reason, size, "%s lacks %s (%s)", rt->library, s->name, rt->too_old_hint);
            return 0;
        }
        /* POSIX: a function's address round-trips through void *; stored as the field's own
         * pointer type, which has the same representation. */
        memcpy((char *)rt->table + s->offset, &sym, sizeof sym);
    }
    return !rt->finish || rt->finish(rt->table, reason, size);
}

void *kvx_runtime_load(kvx_runtime *rt)
{
    void *ready = atomic_load_explicit(&rt->ready, memory_order_acquire);
    if (ready)
        return ready;
    char reason[512] = "";
    pthread_mutex_lock(&rt->lock);
    ready = atomic_load_explicit(&rt->ready, memory_order_relaxed);
    if (!ready) {
        void *handle = open_runtime(rt, reason, sizeof reason);
        /* The table is only published when complete, so a half-filled one is never used. */
        if (handle && resolve(rt, handle, reason, sizeof reason)) {
            ready = rt->table; /* the handle stays open for the life of the process */
            atomic_store_explicit(&rt->ready, ready, memory_order_release);
        } else if (handle) {
            dlclose(handle);
        }
    }
    pthread_mutex_unlock(&rt->lock);
    if (!ready)
        kvx_fail(KVX_ERR_NOT_AVAILABLE, "%s backend: %s", rt->backend, reason);
    return ready;
}
