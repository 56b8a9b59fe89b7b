/* SPDX-License-Identifier: MIT
 * C++'s replaceable operator new and operator delete in every form libstdc++ exports (plain and
 * array; nothrow; sized delete; std::align_val_t, with its nothrow and sized variants), written in C
 * under their mangled names, so C++ programs reach the pools in one call. Built into libpyalloc.so /
 * .a only (like override.c), compiled with -fexceptions: a failed operator new hands the request to
 * the C++ runtime's own operator, found at that moment, which calls the new-handler, retries through
 * malloc and throws std::bad_alloc; the library itself never depends on a C++ runtime. */
#include "fastpath.h"

#include <dlfcn.h>
#include <stdlib.h>

#define CXX_API __attribute__((visibility("default")))

/* __STDCPP_DEFAULT_NEW_ALIGNMENT__ is 16 on x86-64, and compilers rely on it: clang assumes a block
 * of n bytes from operator new is aligned to the largest power of two <= min(n, 16) and stores to it
 * with movaps. Requests above 8 bytes are therefore served from a class that is a multiple of 16 in
 * PYALLOC_ALIGN=8 mode too (in the default mode that is the class they get anyway); 8 bytes or
 * fewer need no more than 8. */
static inline size_t cxx_slot(size_t n) { return n > 8 ? (n + 15) & ~(size_t)15 : n; }

/* The forms, in the order of cxx_names. */
enum { CXX_NEW, CXX_NEW_NOTHROW, CXX_NEW_AL, CXX_NEW_AL_NOTHROW, CXX_ARR, CXX_ARR_NOTHROW, CXX_ARR_AL, CXX_ARR_AL_NOTHROW };
static const char *const cxx_names[] = {
    "_Znwm", "_ZnwmRKSt9nothrow_t", "_ZnwmSt11align_val_t", "_ZnwmSt11align_val_tRKSt9nothrow_t",
    "_Znam", "_ZnamRKSt9nothrow_t", "_ZnamSt11align_val_t", "_ZnamSt11align_val_tRKSt9nothrow_t",
};

/* The C++ runtime's definition of a form: the next one after ours in the global scope, or that of a
 * libstdc++ (or libc++) loaded where the global scope does not see it (a C++ library opened with
 * RTLD_LOCAL by a C program). Looked up only when an allocation has failed, outside every lock. */
static void *cxx_runtime(int form, void *self) {
    void *f = dlsym(RTLD_NEXT, cxx_names[form]);
    static const char *const libs[] = {"libstdc++.so.6", "libc++.so.1"};
    for (size_t i = 0; (!f || f == self) && i < sizeof libs / sizeof libs[0]; i++) {
        void *h = dlopen(libs[i], RTLD_LAZY | RTLD_NOLOAD); /* kept open: f is used now */
        f = h ? dlsym(h, cxx_names[form]) : NULL;
    }
    return f == self ? NULL : f;
}

/* The block could not be had: the runtime's operator new of the same form takes over (it calls the
 * new-handler and retries, through malloc, until it gets the block, the handler throws, or there is
 * no handler: then std::bad_alloc, or NULL for a nothrow form, whose runtime version catches it). The
 * exception unwinds through this frame and the caller's: both have unwind tables. */
static PA_COLD void *cxx_new_failed(int form, size_t n, size_t al, void *self) {
    static const char nothrow_tag = 0; /* a std::nothrow_t: empty, never read */
    void *f = cxx_runtime(form, self);
    bool nothrow = form & 1;
    if (!f) {
        if (nothrow) return NULL;
        pa_warn("operator new: out of memory, and no C++ runtime loaded to throw std::bad_alloc");
        abort();
    }
    bool aligned = form & 2;
    if (aligned) {
        if (nothrow) return ((void *(*)(size_t, size_t, const void *))f)(n, al, &nothrow_tag);
        return ((void *(*)(size_t, size_t))f)(n, al);
    }
    n = cxx_slot(n);
    if (nothrow) return ((void *(*)(size_t, const void *))f)(n, &nothrow_tag);
    return ((void *(*)(size_t))f)(n);
}

/* The statistics count a request by its size, and that size's class must be the block's (a free is
 * counted by the block's class): in classic mode a rounded request is counted at its rounded size.
 * In the default mode both sizes have the same class, and the size asked for keeps the bytes the
 * rounding costs counted as wasted. */
static inline void *cxx_new(size_t n) {
    if (pa_likely(n <= PA_SMALL)) {
        size_t slot = cxx_slot(n);
        return pa_fast_malloc_small_as(slot, pa_opt.align == 8 ? slot : n);
    }
    return pa_sys_malloc(n);
}

static inline void *cxx_new_aligned(size_t n, size_t al) {
    if (pa_unlikely(al & (al - 1))) return NULL; /* not a power of two: undefined, refused */
    return pa_alloc_aligned_h(al, n);
}

/* One definition per form, each under its mangled name. */
#define CXX_NEW_FORMS(name, form)                                                                      \
    CXX_API void *name(size_t n) __asm__(#name);                                                       \
    CXX_API void *name(size_t n) {                                                                     \
        void *p = cxx_new(n);                                                                          \
        return pa_likely(p != NULL) ? p : cxx_new_failed(form, n, 0, (void *)&name);                  \
    }
#define CXX_NEW_NOTHROW_FORMS(name, form)                                                              \
    CXX_API void *name(size_t n, const void *tag) __asm__(#name);                                      \
    CXX_API void *name(size_t n, const void *tag) {                                                    \
        (void)tag;                                                                                     \
        void *p = cxx_new(n);                                                                          \
        return pa_likely(p != NULL) ? p : cxx_new_failed(form, n, 0, (void *)&name);                  \
    }
#define CXX_NEW_AL_FORMS(name, form)                                                                   \
    CXX_API void *name(size_t n, size_t al) __asm__(#name);                                            \
    CXX_API void *name(size_t n, size_t al) {                                                          \
        void *p = cxx_new_aligned(n, al);                                                              \
        return pa_likely(p != NULL) ? p : cxx_new_failed(form, n, al, (void *)&name);                 \
    }
#define CXX_NEW_AL_NOTHROW_FORMS(name, form)                                                           \
    CXX_API void *name(size_t n, size_t al, const void *tag) __asm__(#name);                           \
    CXX_API void *name(size_t n, size_t al, const void *tag) {                                         \
        (void)tag;                                                                                     \
        void *p = cxx_new_aligned(n, al);                                                              \
        return pa_likely(p != NULL) ? p : cxx_new_failed(form, n, al, (void *)&name);                 \
    }

CXX_NEW_FORMS(_Znwm, CXX_NEW)
CXX_NEW_FORMS(_Znam, CXX_ARR)
CXX_NEW_NOTHROW_FORMS(_ZnwmRKSt9nothrow_t, CXX_NEW_NOTHROW)
CXX_NEW_NOTHROW_FORMS(_ZnamRKSt9nothrow_t, CXX_ARR_NOTHROW)
CXX_NEW_AL_FORMS(_ZnwmSt11align_val_t, CXX_NEW_AL)
CXX_NEW_AL_FORMS(_ZnamSt11align_val_t, CXX_ARR_AL)
CXX_NEW_AL_NOTHROW_FORMS(_ZnwmSt11align_val_tRKSt9nothrow_t, CXX_NEW_AL_NOTHROW)
CXX_NEW_AL_NOTHROW_FORMS(_ZnamSt11align_val_tRKSt9nothrow_t, CXX_ARR_AL_NOTHROW)

/* operator delete, every form: free's checks (not ours -> glibc; an interior pointer or a double free
 * -> message and abort). The size and alignment that sized and aligned delete pass save nothing:
 * free finds the page from the address by a shift and never needs the block's size, and the checks
 * must stay; a size that does not match the block is undefined behaviour, and is ignored. */
#define CXX_DELETE(name, params)                                                                       \
    CXX_API void name params __asm__(#name);                                                           \
    CXX_API void name params { pa_fast_free(p); }

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wunused-parameter" /* the sizes, alignments and tags delete ignores */

CXX_DELETE(_ZdlPv, (void *p))
CXX_DELETE(_ZdaPv, (void *p))
CXX_DELETE(_ZdlPvm, (void *p, size_t n))
CXX_DELETE(_ZdaPvm, (void *p, size_t n))
CXX_DELETE(_ZdlPvRKSt9nothrow_t, (void *p, const void *tag))
CXX_DELETE(_ZdaPvRKSt9nothrow_t, (void *p, const void *tag))
CXX_DELETE(_ZdlPvSt11align_val_t, (void *p, size_t al))
CXX_DELETE(_ZdaPvSt11align_val_t, (void *p, size_t al))
CXX_DELETE(_ZdlPvmSt11align_val_t, (void *p, size_t n, size_t al))
CXX_DELETE(_ZdaPvmSt11align_val_t, (void *p, size_t n, size_t al))
CXX_DELETE(_ZdlPvSt11align_val_tRKSt9nothrow_t, (void *p, size_t al, const void *tag))
CXX_DELETE(_ZdaPvSt11align_val_tRKSt9nothrow_t, (void *p, size_t al, const void *tag))
#pragma GCC diagnostic pop
