/* cpu_backend.h - what the CPU backend's files share. The operations' entries are declared
 * where they are gathered into the backend table (backend.c). */
#ifndef KVX_CPU_BACKEND_H
#define KVX_CPU_BACKEND_H

#include "../core/kvx_internal.h"

/* Whether KVX_CPU_ISA asks for "baseline": every kernel then runs its portable variant. isa.c. */
int kvx_cpu_baseline_wanted(void);
/* Whether AVX2 variants may run: the CPU has AVX2 and KVX_CPU_ISA does not ask for
 * "baseline" (the tests set it to run the baseline variants on any machine). isa.c. */
int kvx_cpu_avx2_allowed(void);
/* Whether NEON variants may run: on 64-bit ARM unless KVX_CPU_ISA asks for "baseline"; never
 * elsewhere. isa.c. */
int kvx_cpu_neon_allowed(void);
/* Name of the RoPE variant this process runs (rope.c). */
const char *kvx_cpu_rope_variant(void);
/* Says once per process, on stderr, when KVX_CPU_ISA names no variant or one this CPU cannot
 * run, and which variants run instead. Both choices above call it once they are made. isa.c. */
void kvx_cpu_check_isa_setting(void);

#endif /* KVX_CPU_BACKEND_H */
