/*
 * loader.c - the GPU backend as libkvx sees it: a table whose entries open the GPU module
 * (plugin.h) on first use and forward to it.
 *
 * The module is looked for next to libkvx itself (found with dladdr), which is where both the
 * wheel and `meson install` put it. Any failure to load it (the module missing, the vendor
 * runtime it links missing, a module from another build) makes the backend unavailable with the
 * loader's reason; the rest of libkvx is unaffected.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>

#include "plugin.h"

#if defined(KVX_WITH_HIP)
#define GPU_NAME "hip"
#define GPU_DEVICE_TYPE KVX_DEVICE_HIP
#else
#define GPU_NAME "cuda"
#define GPU_DEVICE_TYPE KVX_DEVICE_CUDA
#endif
#define MODULE_FILE "libkvx_" GPU_NAME ".so"

static pthread_once_t load_once = PTHREAD_ONCE_INIT;
static const kvx_backend *module_backend; /* set once by load_module(), then read-only */
static char load_failure[768];

/* The folder libkvx was loaded from, with a trailing '/', or "" when unknown. */
static void own_folder(char *out, size_t size)
{
    Dl_info info;
    out[0] = '\0';
    if (!dladdr((void *)&kvx_gpu_backend, &info) || !info.dli_fname)
        return;
    const char *slash = strrchr(info.dli_fname, '/');
    if (slash && (size_t)(slash - info.dli_fname) + 1 < size)
        snprintf(out, size, "%.*s", (int)(slash - info.dli_fname) + 1, info.dli_fname);
}

static void load_module(void)
{
    char path[512];
    own_folder(path, sizeof path);
    strncat(path, MODULE_FILE, sizeof path - strlen(path) - 1);
    void *handle = dlopen(path, RTLD_NOW | RTLD_LOCAL);
    if (!handle) {
        const char *why = dlerror();
        snprintf(load_failure, sizeof load_failure, "cannot load the GPU module %s: %s", path,
                 why ? why : "unknown error");
        return;
    }
    kvx_gpu_plugin_open_fn open_fn;
    void *symbol = dlsym(handle, KVX_GPU_PLUGIN_OPEN);
    memcpy(&open_fn, &symbol, sizeof open_fn); /* POSIX: functions round-trip through void * */
    const kvx_gpu_plugin_host host = {KVX_GPU_PLUGIN_ABI, sizeof(kvx_backend),
                                      KVX_GPU_PLUGIN_VERSION, kvx_vfail};
    char reason[512] = "it has no " KVX_GPU_PLUGIN_OPEN;
    const kvx_backend *backend = open_fn ? open_fn(&host, reason, sizeof reason) : NULL;
    if (!backend) {
        snprintf(load_failure, sizeof load_failure, "the GPU module %s is unusable: %s", path,
                 reason);
        dlclose(handle);
        return;
    }
    module_backend = backend; /* the handle stays open for the life of the process */
}

static const kvx_backend *module(void)
{
    pthread_once(&load_once, load_module);
    return module_backend;
}

static int32_t gpu_available(void)
{
    if (module())
        return module_backend->available();
    kvx_fail(KVX_ERR_NOT_AVAILABLE, "%s: %s", GPU_NAME, load_failure);
    return 0;
}

/* The other entries run only after gpu_available() said yes (the front-ends dispatch through
 * kvx_backend_for), so the module is loaded; the check guards direct misuse. */
#define FORWARD(slot, args_type)                                                               \
    static int32_t gpu_##slot(const args_type *args, const kvx_stream *stream)                 \
    {                                                                                          \
        if (!module())                                                                         \
            return kvx_fail(KVX_ERR_NOT_AVAILABLE, "%s: %s", GPU_NAME, load_failure);          \
        return module_backend->slot(args, stream);                                             \
    }
FORWARD(transfer, kvx_transfer_args)
FORWARD(codec_quantize, kvx_codec_quantize_args)
FORWARD(codec_dequantize, kvx_codec_dequantize_args)
FORWARD(codec_calculate_cdf, kvx_codec_cdf_args)
FORWARD(codec_encode, kvx_codec_encode_args)
FORWARD(codec_decode, kvx_codec_decode_args)
FORWARD(codec_quantize_rotated, kvx_codec_quantize_rotated_args)
FORWARD(codec_dequantize_rotated, kvx_codec_dequantize_rotated_args)
FORWARD(rope_rerotate, kvx_rope_rerotate_args)
FORWARD(rope_apply, kvx_rope_apply_args)
FORWARD(copy_batch, kvx_copy_batch_args)
FORWARD(host_alloc, kvx_host_alloc_args)
FORWARD(host_free, kvx_host_free_args)
FORWARD(mark_record, kvx_mark_args)
FORWARD(mark_passed, kvx_mark_args)
FORWARD(mark_release, kvx_mark_args)
#undef FORWARD

static int32_t gpu_synchronize(const kvx_stream *stream)
{
    if (!module())
        return kvx_fail(KVX_ERR_NOT_AVAILABLE, "%s: %s", GPU_NAME, load_failure);
    return module_backend->synchronize(stream);
}

const kvx_backend kvx_gpu_backend = {
    .name = GPU_NAME,
    .device_type = GPU_DEVICE_TYPE,
    .available = gpu_available,
    .transfer = gpu_transfer,
    .synchronize = gpu_synchronize,
    .codec_quantize = gpu_codec_quantize,
    .codec_dequantize = gpu_codec_dequantize,
    .codec_calculate_cdf = gpu_codec_calculate_cdf,
    .codec_encode = gpu_codec_encode,
    .codec_decode = gpu_codec_decode,
    .codec_quantize_rotated = gpu_codec_quantize_rotated,
    .codec_dequantize_rotated = gpu_codec_dequantize_rotated,
    .rope_rerotate = gpu_rope_rerotate,
    .rope_apply = gpu_rope_apply,
    .copy_batch = gpu_copy_batch,
    .host_alloc = gpu_host_alloc,
    .host_free = gpu_host_free,
    .mark_record = gpu_mark_record,
    .mark_passed = gpu_mark_passed,
    .mark_release = gpu_mark_release,
};
