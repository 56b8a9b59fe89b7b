/* SPDX-License-Identifier: MIT
 * Libraries opened with RTLD_DEEPBIND use pyalloc's malloc family. Such a library, and every object
 * its dlopen loads with it, looks symbols up in its own scope (itself and its dependencies, libc.so.6
 * among them) before the global one, so its malloc, free, ... bind to glibc's while the program's
 * bind to pyalloc: glibc is handed pyalloc's blocks and aborts (php's extensions). After each such
 * dlopen, and once at start-up, the relocated slots of the loaded objects that hold libc.so.6's (or
 * the C++ runtime's) definition of a name whose global definition is pyalloc's are rewritten to
 * pyalloc's; every other slot keeps its deep binding. Exports dlopen and dlmopen, which jump straight
 * to glibc's unless the call asks for RTLD_DEEPBIND in the base namespace. Built into libpyalloc.so
 * and .a only, like override.c. The design and its limits: docs/design.md, "RTLD_DEEPBIND". */
#include "internal.h"

#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <limits.h>
#include <link.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <unistd.h>

/* The names repaired: every one pyalloc defines that a deep-bound object could reach glibc's (or the
 * C++ runtime's) definition of. reallocarray, strdup and the rest are glibc's own and call malloc
 * through libc's PLT, which binds in the global scope, so they need nothing. dlopen and dlmopen are
 * here so that a repaired object's own DEEPBIND loads come back through pyalloc's. */
static const char *const db_names[] = {
    "malloc", "free", "calloc", "realloc", "posix_memalign", "aligned_alloc", "memalign", "valloc",
    "pvalloc", "malloc_usable_size", "malloc_trim", "cfree", "free_sized", "free_aligned_sized",
    "dlopen", "dlmopen",
    "_Znwm", "_Znam", "_ZnwmRKSt9nothrow_t", "_ZnamRKSt9nothrow_t", "_ZnwmSt11align_val_t",
    "_ZnamSt11align_val_t", "_ZnwmSt11align_val_tRKSt9nothrow_t", "_ZnamSt11align_val_tRKSt9nothrow_t",
    "_ZdlPv", "_ZdaPv", "_ZdlPvm", "_ZdaPvm", "_ZdlPvRKSt9nothrow_t", "_ZdaPvRKSt9nothrow_t",
    "_ZdlPvSt11align_val_t", "_ZdaPvSt11align_val_t", "_ZdlPvmSt11align_val_t", "_ZdaPvmSt11align_val_t",
    "_ZdlPvSt11align_val_tRKSt9nothrow_t", "_ZdaPvSt11align_val_tRKSt9nothrow_t",
};
#define DB_N (sizeof db_names / sizeof db_names[0])
#define DB_FIRST_CXX 16 /* db_names[16..] are the C++ operators */
#define DB_SYS 2        /* system definitions per name: libc.so.6's, the C++ runtime's */

/* glibc's dlopen and dlmopen, found once (the asm entry points jump through these). */
void *pa_db_real_dlopen;
void *pa_db_real_dlmopen;

/* Objects checked since the count of unloads last changed: an object stays at its address until it
 * is unloaded, so while dlpi_subs is unchanged a checked object need not be looked at again; once an
 * object is unloaded, another may be loaded at the same address, so everything is checked again. */
#define DB_CACHE 1024
static pthread_mutex_t db_lock = PTHREAD_MUTEX_INITIALIZER;
static const void *db_checked[DB_CACHE]; /* dlpi_phdr of each (db_lock) */
static size_t db_nchecked;
static unsigned long long db_checked_subs;

/* ---- the entry points: jump to glibc's dlopen unless the call needs a repair ----
 * glibc's dlopen reads its return address to find the calling object, whose RPATH/RUNPATH, $ORIGIN
 * and namespace it uses: a wrapper that called it would make libpyalloc the caller. So every call that
 * needs nothing from pyalloc is a tail jump with the caller's return address still on the stack, and
 * the DEEPBIND path passes that address on (pa_db_dlopen_deep resolves the name as the caller would).
 * Written in assembly because only assembly guarantees the tail jump in every build type. */
#define DB_STR2(x) #x
#define DB_STR(x) DB_STR2(x)
void *pa_db_resolve(int which);
void *pa_db_dlopen_deep(const char *file, int mode, void *caller);
void *pa_db_dlmopen_deep(Lmid_t lmid, const char *file, int mode, void *caller);

__asm__(".text\n"
        ".globl dlopen\n"
        ".type dlopen, @function\n"
        ".p2align 4\n"
        "dlopen:\n"
        "  .cfi_startproc\n"
        "  endbr64\n"
        "  movq pa_db_real_dlopen(%rip), %rax\n"
        "  testq %rax, %rax\n"
        "  jz 2f\n"
        "1:testl $" DB_STR(RTLD_DEEPBIND) ", %esi\n"
        "  jnz 3f\n"
        "  jmp *%rax\n"
        "2:pushq %rdi\n"
        "  .cfi_adjust_cfa_offset 8\n"
        "  pushq %rsi\n"
        "  .cfi_adjust_cfa_offset 8\n"
        "  subq $8, %rsp\n" /* 16-byte aligned at the call */
        "  .cfi_adjust_cfa_offset 8\n"
        "  xorl %edi, %edi\n"
        "  call pa_db_resolve\n"
        "  addq $8, %rsp\n"
        "  .cfi_adjust_cfa_offset -8\n"
        "  popq %rsi\n"
        "  .cfi_adjust_cfa_offset -8\n"
        "  popq %rdi\n"
        "  .cfi_adjust_cfa_offset -8\n"
        "  testq %rax, %rax\n"
        "  jnz 1b\n"
        "  ret\n" /* no dlopen after us in the search order: NULL */
        "3:movq (%rsp), %rdx\n"
        "  jmp pa_db_dlopen_deep\n"
        "  .cfi_endproc\n"
        ".size dlopen, .-dlopen\n"

        ".globl dlmopen\n"
        ".type dlmopen, @function\n"
        ".p2align 4\n"
        "dlmopen:\n"
        "  .cfi_startproc\n"
        "  endbr64\n"
        "  movq pa_db_real_dlmopen(%rip), %rax\n"
        "  testq %rax, %rax\n"
        "  jz 2f\n"
        "1:testq %rdi, %rdi\n" /* LM_ID_BASE; a new namespace has its own libc: left alone */
        "  jnz 4f\n"
        "  testl $" DB_STR(RTLD_DEEPBIND) ", %edx\n"
        "  jnz 3f\n"
        "4:jmp *%rax\n"
        "2:pushq %rdi\n"
        "  .cfi_adjust_cfa_offset 8\n"
        "  pushq %rsi\n"
        "  .cfi_adjust_cfa_offset 8\n"
        "  pushq %rdx\n"
        "  .cfi_adjust_cfa_offset 8\n"
        "  movl $1, %edi\n"
        "  call pa_db_resolve\n"
        "  popq %rdx\n"
        "  .cfi_adjust_cfa_offset -8\n"
        "  popq %rsi\n"
        "  .cfi_adjust_cfa_offset -8\n"
        "  popq %rdi\n"
        "  .cfi_adjust_cfa_offset -8\n"
        "  testq %rax, %rax\n"
        "  jnz 1b\n"
        "  ret\n"
        "3:movq (%rsp), %rcx\n"
        "  jmp pa_db_dlmopen_deep\n"
        "  .cfi_endproc\n"
        ".size dlmopen, .-dlmopen\n");

typedef void *(*dlopen_fn)(const char *, int);
typedef void *(*dlmopen_fn)(Lmid_t, const char *, int);

/* The next definition after libpyalloc (libc.so.6's, the GLIBC_2.34 default version); called at the
 * first dlopen or dlmopen, never from inside malloc. */
void *pa_db_resolve(int which) {
    void **slot = which ? &pa_db_real_dlmopen : &pa_db_real_dlopen;
    void *f = __atomic_load_n(slot, __ATOMIC_ACQUIRE);
    if (f) return f;
    f = dlsym(RTLD_NEXT, which ? "dlmopen" : "dlopen");
    __atomic_store_n(slot, f, __ATOMIC_RELEASE);
    return f;
}

/* ---- reading a loaded object ---- */

/* The addresses an object's PT_LOAD segments cover. */
typedef struct db_range {
    uintptr_t lo, hi;
} db_range;

static bool db_in(db_range r, uintptr_t v) { return v - r.lo < r.hi - r.lo; }

static db_range db_range_of(const struct dl_phdr_info *info) {
    db_range r = {UINTPTR_MAX, 0};
    for (size_t i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD) continue;
        if (info->dlpi_addr + ph->p_vaddr < r.lo) r.lo = info->dlpi_addr + ph->p_vaddr;
        if (info->dlpi_addr + ph->p_vaddr + ph->p_memsz > r.hi) r.hi = info->dlpi_addr + ph->p_vaddr + ph->p_memsz;
    }
    if (r.hi < r.lo) r.lo = r.hi = 0;
    return r;
}

typedef struct db_obj {
    uintptr_t base;
    const ElfW(Phdr) *phdr;
    size_t phnum;
    const ElfW(Sym) *symtab;
    const char *strtab;
    size_t strsz;
    size_t nundef;                /* symbols [1, nundef) may be undefined ones (the rest are hashed) */
    const ElfW(Rela) *rela, *jmprel;
    size_t nrela, njmprel, nrelative;
    db_range range;
} db_obj;

/* Fills o from the dynamic section; false when there is nothing to read (the vDSO, a static object). */
static bool db_obj_read(db_obj *o, const struct dl_phdr_info *info) {
    memset(o, 0, sizeof *o);
    o->base = info->dlpi_addr;
    o->phdr = info->dlpi_phdr;
    o->phnum = info->dlpi_phnum;
    o->range = db_range_of(info);
    const ElfW(Dyn) *dyn = NULL;
    bool dyn_writable = false;
    for (size_t i = 0; i < o->phnum; i++) {
        const ElfW(Phdr) *ph = &o->phdr[i];
        if (ph->p_type == PT_DYNAMIC) {
            dyn = (const ElfW(Dyn) *)(o->base + ph->p_vaddr);
            dyn_writable = (ph->p_flags & PF_W) != 0;
        }
    }
    if (!dyn) return false;
    /* ld.so adds the load address to these entries in place, unless the dynamic section is read-only
     * (glibc 2.35+: l_ld_readonly; the vDSO's is) */
    uintptr_t adjust = dyn_writable ? 0 : o->base;
    size_t relasz = 0, pltrelsz = 0, relaent = sizeof(ElfW(Rela)), syment = sizeof(ElfW(Sym));
    const uint32_t *gnu_hash = NULL, *sysv_hash = NULL;
    bool plt_rela = true;
    for (const ElfW(Dyn) *d = dyn; d->d_tag != DT_NULL; d++) {
        switch (d->d_tag) {
        case DT_SYMTAB: o->symtab = (const ElfW(Sym) *)(d->d_un.d_ptr + adjust); break;
        case DT_STRTAB: o->strtab = (const char *)(d->d_un.d_ptr + adjust); break;
        case DT_STRSZ: o->strsz = d->d_un.d_val; break;
        case DT_SYMENT: syment = d->d_un.d_val; break;
        case DT_RELA: if (d->d_un.d_ptr) o->rela = (const ElfW(Rela) *)(d->d_un.d_ptr + adjust); break;
        case DT_RELASZ: relasz = d->d_un.d_val; break;
        case DT_RELAENT: relaent = d->d_un.d_val; break;
        case DT_RELACOUNT: o->nrelative = d->d_un.d_val; break;
        case DT_JMPREL: o->jmprel = (const ElfW(Rela) *)(d->d_un.d_ptr + adjust); break;
        case DT_PLTRELSZ: pltrelsz = d->d_un.d_val; break;
        case DT_PLTREL: plt_rela = d->d_un.d_val == DT_RELA; break;
        case DT_GNU_HASH: gnu_hash = (const uint32_t *)(d->d_un.d_ptr + adjust); break;
        case DT_HASH: sysv_hash = (const uint32_t *)(d->d_un.d_ptr + adjust); break;
        default: break;
        }
    }
    if (!o->symtab || !o->strtab || syment != sizeof(ElfW(Sym)) || relaent != sizeof(ElfW(Rela)) || !plt_rela)
        return false;
    o->nrela = o->rela ? relasz / sizeof(ElfW(Rela)) : 0;
    o->njmprel = o->jmprel ? pltrelsz / sizeof(ElfW(Rela)) : 0;
    if (o->nrelative > o->nrela) o->nrelative = o->nrela;
    /* The GNU hash table covers the defined symbols from symoffset on; the undefined ones come first.
     * A System V table counts every symbol. */
    if (gnu_hash) o->nundef = gnu_hash[1];
    else if (sysv_hash) o->nundef = sysv_hash[1];
    else return false;
    return true;
}

/* Which of db_names s is, or -1. */
static int db_name_index(const char *s) {
    size_t first, last;
    if (s[0] == '_') {
        if (s[1] != 'Z' || (s[2] != 'n' && s[2] != 'd')) return -1;
        first = DB_FIRST_CXX;
        last = DB_N;
    } else {
        if (s[0] == 0 || !strchr("mfcrpavd", s[0])) return -1;
        first = 0;
        last = DB_FIRST_CXX;
    }
    for (size_t i = first; i < last; i++)
        if (strcmp(s, db_names[i]) == 0) return (int)i;
    return -1;
}

static int db_prot_of(uint32_t flags) {
    return ((flags & PF_R) ? PROT_READ : 0) | ((flags & PF_W) ? PROT_WRITE : 0) | ((flags & PF_X) ? PROT_EXEC : 0);
}

/* The protection ld.so left on the page holding addr: its segment's, read-only where PT_GNU_RELRO
 * covers whole pages (_dl_protect_relro rounds both ends down). -1 if no segment holds it. */
static int db_page_prot(const db_obj *o, uintptr_t addr, uintptr_t pagesz) {
    int prot = -1;
    for (size_t i = 0; i < o->phnum; i++) {
        const ElfW(Phdr) *ph = &o->phdr[i];
        uintptr_t start = o->base + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && addr >= start && addr < start + ph->p_memsz) prot = db_prot_of(ph->p_flags);
    }
    for (size_t i = 0; prot >= 0 && i < o->phnum; i++) {
        const ElfW(Phdr) *ph = &o->phdr[i];
        if (ph->p_type != PT_GNU_RELRO) continue;
        uintptr_t start = (o->base + ph->p_vaddr) & ~(pagesz - 1);
        uintptr_t end = (o->base + ph->p_vaddr + ph->p_memsz) & ~(pagesz - 1);
        if (addr >= start && addr < end) prot = PROT_READ;
    }
    return prot;
}

/* One aligned 8-byte store, so a thread calling through the slot meanwhile sees the old definition
 * or the new one. A read-only page (RELRO) is made writable for the store and given its protection
 * back. False if the page cannot be written. */
static bool db_store(const db_obj *o, uintptr_t *slot, uintptr_t value) {
    uintptr_t pagesz = (uintptr_t)sysconf(_SC_PAGESIZE);
    int prot = db_page_prot(o, (uintptr_t)slot, pagesz);
    if (prot < 0) return false;
    void *page = (void *)((uintptr_t)slot & ~(pagesz - 1));
    if (!(prot & PROT_WRITE) && mprotect(page, pagesz, prot | PROT_WRITE) != 0) return false;
    __atomic_store_n(slot, value, __ATOMIC_RELEASE);
    if (!(prot & PROT_WRITE)) mprotect(page, pagesz, prot);
    return true;
}

/* ---- the pass over the loaded objects ----
 * 1. collect the objects not checked since the last unload (dl_iterate_phdr: no dl* call may be made
 *    in its callbacks, which run under ld.so's list lock);
 * 2. wait for ld.so's load lock (a dlsym): a dlopen that was in progress in another thread has then
 *    relocated the objects collected, so their slots hold what ld.so bound them to;
 * 3. scan them for slots of the names above that hold an address in libc.so.6 or the C++ runtime (or,
 *    for the objects the DEEPBIND dlopen being repaired added, an unbound lazy PLT slot); an object
 *    with a slot bound to libpyalloc binds in the global scope and is not scanned further;
 * 4. look up, for the names found only, pyalloc's definition (used only if it is the global one) and
 *    the system's (dlsym, outside any callback);
 * 5. rewrite each slot that holds exactly the system definition.
 * An unload between 1 and 5 starts it again. */

enum { DB_LIBC, DB_CXX, DB_LAZY };

typedef struct db_cand { /* a slot that may need rewriting */
    const void *phdr;    /* its object (identity, and the protections) */
    uintptr_t *slot;
    uintptr_t addend;
    uint8_t id, kind;
} db_cand;

typedef struct db_set { /* dlpi_phdr of objects, as identities */
    const void **v;
    size_t n, cap;
} db_set;

typedef struct db_pass {
    bool deep;              /* repairing after a DEEPBIND dlopen (else at start-up) */
    const db_set *before;   /* the objects loaded before that dlopen */
    db_set todo;
    db_range self, libc, cxx;
    unsigned long long subs;
    bool changed;           /* an object was unloaded meanwhile: start again */
    db_cand *cand;
    size_t ncand, capcand;
    uintptr_t ours[DB_N], sys[DB_N][DB_SYS], deep_def[DB_N]; /* step 4 */
    bool failed;
    size_t repaired;
} db_pass;

static bool db_set_has(const db_set *s, const void *p) {
    for (size_t i = 0; s && i < s->n; i++)
        if (s->v[i] == p) return true;
    return false;
}

/* The growth of these lists is the pass's only allocation; a failed one drops the entry (the object
 * is then not repaired this time). */
static void db_set_add(db_set *s, const void *p) {
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 64;
        const void **v = realloc(s->v, cap * sizeof *v);
        if (!v) return;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = p;
}

static void db_cand_add(db_pass *p, db_cand c) {
    if (p->ncand == p->capcand) {
        size_t cap = p->capcand ? 2 * p->capcand : 32;
        db_cand *v = realloc(p->cand, cap * sizeof *v);
        if (!v) return;
        p->cand = v;
        p->capcand = cap;
    }
    p->cand[p->ncand++] = c;
}

static bool db_cached(const void *phdr) { /* db_lock held */
    for (size_t i = 0; i < db_nchecked; i++)
        if (db_checked[i] == phdr) return true;
    return false;
}

static void db_cache(const struct dl_phdr_info *info) { /* db_lock held */
    if (db_checked_subs != info->dlpi_subs) {
        db_nchecked = 0;
        db_checked_subs = info->dlpi_subs;
    }
    if (!db_cached(info->dlpi_phdr) && db_nchecked < DB_CACHE) db_checked[db_nchecked++] = info->dlpi_phdr;
}

/* The basename of an object's path is name. */
static bool db_named(const char *path, const char *name) {
    const char *slash = path ? strrchr(path, '/') : NULL;
    return slash && strcmp(slash + 1, name) == 0;
}

/* Step 1, and the ranges: libpyalloc (recognised by where its program headers are), libc.so.6 (which
 * holds __libc_malloc, the address passthrough.c calls), the C++ runtime (by name). The vDSO is
 * skipped: no relocations, and a dynamic section ld.so never adjusted. */
static int db_collect_cb(struct dl_phdr_info *info, size_t size, void *arg) {
    db_pass *p = arg;
    (void)size;
    p->subs = info->dlpi_subs;
    db_range r = db_range_of(info);
    if (db_in(r, (uintptr_t)&db_collect_cb)) {
        p->self = r;
        return 0;
    }
    if (db_in(r, (uintptr_t)&__libc_malloc)) p->libc = r;
    else if (db_named(info->dlpi_name, "libstdc++.so.6") || db_named(info->dlpi_name, "libc++.so.1")) p->cxx = r;
    uintptr_t vdso = (uintptr_t)getauxval(AT_SYSINFO_EHDR);
    if (vdso && db_in(r, vdso)) return 0;
    pthread_mutex_lock(&db_lock);
    bool seen = db_checked_subs == info->dlpi_subs && db_cached(info->dlpi_phdr);
    pthread_mutex_unlock(&db_lock);
    if (!seen) db_set_add(&p->todo, info->dlpi_phdr);
    return 0;
}

/* Step 3 for one object: its candidates into p. */
static void db_obj_scan(const db_obj *o, db_pass *p, bool lazy) {
    enum { MAXREF = 64 };
    uint32_t ref_idx[MAXREF];
    uint8_t ref_id[MAXREF];
    size_t nref = 0;
    for (size_t i = 1; i < o->nundef && nref < MAXREF; i++) {
        const ElfW(Sym) *s = &o->symtab[i];
        if (s->st_shndx != SHN_UNDEF || s->st_name >= o->strsz) continue;
        int id = db_name_index(o->strtab + s->st_name);
        if (id >= 0) {
            ref_idx[nref] = (uint32_t)i;
            ref_id[nref++] = (uint8_t)id;
        }
    }
    for (int table = 0; table < 2 && nref; table++) {
        const ElfW(Rela) *r = table ? o->rela : o->jmprel;
        size_t n = table ? o->nrela : o->njmprel;
        for (size_t i = table ? o->nrelative : 0; i < n; i++) {
            uint32_t type = (uint32_t)ELF64_R_TYPE(r[i].r_info), sym = (uint32_t)ELF64_R_SYM(r[i].r_info);
            if ((type != R_X86_64_JUMP_SLOT && type != R_X86_64_GLOB_DAT && type != R_X86_64_64) || sym == 0 ||
                sym >= o->nundef)
                continue;
            size_t k = 0;
            while (k < nref && ref_idx[k] != sym) k++;
            if (k == nref) continue;
            db_cand c = {.phdr = o->phdr, .slot = (uintptr_t *)(o->base + r[i].r_offset), .id = ref_id[k]};
            c.addend = type == R_X86_64_64 ? (uintptr_t)r[i].r_addend : 0;
            uintptr_t v = __atomic_load_n(c.slot, __ATOMIC_RELAXED) - c.addend;
            if (db_in(p->self, v)) return; /* bound in the global scope (or to a scope holding pyalloc) */
            if (db_in(p->libc, v)) c.kind = DB_LIBC;
            else if (c.id >= DB_FIRST_CXX && db_in(p->cxx, v)) c.kind = DB_CXX;
            else if (lazy && type == R_X86_64_JUMP_SLOT && db_in(o->range, v)) c.kind = DB_LAZY;
            else continue;
            db_cand_add(p, c);
        }
    }
}

static int db_scan_cb(struct dl_phdr_info *info, size_t size, void *arg) {
    db_pass *p = arg;
    (void)size;
    if (info->dlpi_subs != p->subs) {
        p->changed = true;
        return 1;
    }
    if (!db_set_has(&p->todo, info->dlpi_phdr)) return 0; /* checked, or loaded after step 2 */
    /* lazy slots: only in the objects the DEEPBIND dlopen being repaired added */
    bool lazy = p->deep && !db_set_has(p->before, info->dlpi_phdr);
    size_t before = p->ncand;
    db_obj o;
    if (db_obj_read(&o, info)) db_obj_scan(&o, p, lazy);
    if (p->ncand == before) {
        pthread_mutex_lock(&db_lock);
        db_cache(info);
        pthread_mutex_unlock(&db_lock);
    }
    return 0;
}

static int db_patch_cb(struct dl_phdr_info *info, size_t size, void *arg) {
    db_pass *p = arg;
    (void)size;
    if (info->dlpi_subs != p->subs) {
        p->changed = true;
        return 1;
    }
    db_obj o = {.base = info->dlpi_addr, .phdr = info->dlpi_phdr, .phnum = info->dlpi_phnum};
    db_range r = db_range_of(info);
    bool mine = false;
    pthread_mutex_lock(&db_lock); /* two threads repairing at once: each store is checked against the slot */
    for (size_t i = 0; i < p->ncand; i++) {
        const db_cand *c = &p->cand[i];
        if (c->phdr != info->dlpi_phdr) continue;
        mine = true;
        uintptr_t want = p->ours[c->id];
        uintptr_t v = __atomic_load_n(c->slot, __ATOMIC_RELAXED) - c->addend;
        bool fix = false;
        for (int k = 0; k < DB_SYS; k++)
            fix |= want && p->sys[c->id][k] &&
                   (v == p->sys[c->id][k] || (c->kind == DB_LAZY && p->deep_def[c->id] == p->sys[c->id][k]));
        if (c->kind == DB_LAZY && !db_in(r, v)) fix = false; /* bound since step 3 */
        if (!fix) continue;
        if (db_store(&o, c->slot, want + c->addend)) p->repaired++;
        else p->failed = true;
    }
    if (mine) db_cache(info);
    pthread_mutex_unlock(&db_lock);
    return 0;
}

/* ---- step 4: the definitions ---- */

/* pyalloc's definition of a name if it is the global one, and libc.so.6's: neither changes once the
 * name is defined (an object loaded later comes after both in the global scope), so each is looked
 * up once, by whichever thread needs it first (racing threads find the same). */
static _Atomic uintptr_t db_ours[DB_N], db_libc[DB_N];
static _Atomic uint8_t db_known[DB_N];

static void db_lookup(db_pass *p, void *handle) {
    bool need[DB_N] = {false}, lazy[DB_N] = {false}, cxx = false;
    for (size_t i = 0; i < p->ncand; i++) {
        need[p->cand[i].id] = true;
        lazy[p->cand[i].id] |= p->cand[i].kind == DB_LAZY;
        cxx |= p->cand[i].id >= DB_FIRST_CXX;
    }
    void *libc = NULL, *rt = NULL;
    for (size_t i = 0; i < DB_N; i++) {
        if (!need[i]) continue;
        if (!atomic_load_explicit(&db_known[i], memory_order_acquire)) {
            void *g = dlsym(RTLD_DEFAULT, db_names[i]);
            if (!libc) libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
            void *s = libc ? dlsym(libc, db_names[i]) : NULL;
            if (!s && libc && strcmp(db_names[i], "cfree") == 0) s = dlvsym(libc, "cfree", "GLIBC_2.2.5"); /* compat only */
            atomic_store_explicit(&db_ours[i], db_in(p->self, (uintptr_t)g) ? (uintptr_t)g : 0, memory_order_relaxed);
            atomic_store_explicit(&db_libc[i], (uintptr_t)s, memory_order_relaxed);
            atomic_store_explicit(&db_known[i], 1, memory_order_release);
        }
        p->ours[i] = atomic_load_explicit(&db_ours[i], memory_order_relaxed);
        p->sys[i][0] = atomic_load_explicit(&db_libc[i], memory_order_relaxed);
        if (lazy[i]) p->deep_def[i] = (uintptr_t)dlsym(handle, db_names[i]);
    }
    if (cxx) { /* the C++ runtime may be unloaded and loaded elsewhere: looked up each time */
        rt = dlopen("libstdc++.so.6", RTLD_LAZY | RTLD_NOLOAD);
        if (!rt) rt = dlopen("libc++.so.1", RTLD_LAZY | RTLD_NOLOAD);
        for (size_t i = DB_FIRST_CXX; rt && i < DB_N; i++)
            if (need[i]) p->sys[i][1] = (uintptr_t)dlsym(rt, db_names[i]);
    }
    if (libc) dlclose(libc);
    if (rt) dlclose(rt);
}

/* Repairs every object not checked yet. handle: the library a DEEPBIND dlopen just opened, whose
 * scope decides the lazy slots of the objects not in before; NULL at start-up. Runs outside every
 * allocator lock and may allocate; leaves dlerror's state clear and errno as it was. */
static size_t db_repair(void *handle, const db_set *before) {
    static _Atomic int warned;
    int saved = errno;
    size_t repaired = 0;
    for (int attempt = 0; attempt < 8; attempt++) {
        db_pass *p = calloc(1, sizeof *p);
        if (!p) break;
        p->deep = handle != NULL;
        p->before = before;
        dl_iterate_phdr(db_collect_cb, p);
        unsigned long long subs = p->subs;
        if (p->todo.n) {
            (void)dlsym(RTLD_DEFAULT, "dlopen"); /* step 2: waits for ld.so's load lock */
            dl_iterate_phdr(db_scan_cb, p);
            if (!p->changed && p->subs == subs && p->ncand) {
                db_lookup(p, handle);
                dl_iterate_phdr(db_patch_cb, p);
            }
        }
        bool again = p->changed;
        repaired += p->repaired;
        if (p->failed && !atomic_exchange(&warned, 1))
            pa_warn("cannot make a RELRO page writable: a library opened with RTLD_DEEPBIND keeps glibc's malloc");
        free(p->todo.v);
        free(p->cand);
        free(p);
        if (!again) break;
    }
    dlerror();
    errno = saved;
    return repaired;
}

/* ---- opening as the caller would ---- */

static int db_snapshot_cb(struct dl_phdr_info *info, size_t size, void *arg) {
    (void)size;
    db_set_add(arg, info->dlpi_phdr);
    return 0;
}

/* A handle of the object that holds addr (the dlopen caller), or NULL. */
static void *db_caller_handle(void *caller, struct link_map **map) {
    Dl_info di;
    *map = NULL;
    if (!dladdr1(caller, &di, (void **)map, RTLD_DL_LINKMAP) || !*map) return NULL;
    return dlopen((*map)->l_name[0] ? (*map)->l_name : NULL, RTLD_LAZY | RTLD_NOLOAD);
}

static bool db_has_search_path(const struct link_map *map) {
    for (const ElfW(Dyn) *d = map->l_ld; d && d->d_tag != DT_NULL; d++)
        if (d->d_tag == DT_RPATH || d->d_tag == DT_RUNPATH) return true;
    return false;
}

/* $ORIGIN and ${ORIGIN} in file, replaced by the caller's directory as ld.so computes it: that of
 * the path it loaded the object from, or of /proc/self/exe for the program (dlinfo's RTLD_DI_ORIGIN
 * is not used: glibc 2.36 crashes on it for a program whose origin it has not needed yet). $LIB and
 * $PLATFORM do not depend on the caller and are left to ld.so, as is a secure-mode program. */
static const char *db_expand_origin(const char *file, const struct link_map *map, char *buf, size_t cap) {
    char origin[PATH_MAX];
    if (!map || getauxval(AT_SECURE)) return file;
    size_t olen;
    if (map->l_name[0]) {
        olen = strlen(map->l_name);
        if (olen >= sizeof origin) return file;
        memcpy(origin, map->l_name, olen + 1);
    } else {
        ssize_t r = readlink("/proc/self/exe", origin, sizeof origin - 1);
        if (r <= 0) return file;
        origin[r] = 0;
    }
    char *slash = strrchr(origin, '/');
    if (!slash || origin[0] != '/') return file;
    *(slash == origin ? slash + 1 : slash) = 0;
    olen = strlen(origin);
    size_t n = 0;
    for (const char *s = file; *s;) {
        size_t skip = strncmp(s, "$ORIGIN", 7) == 0 ? 7 : strncmp(s, "${ORIGIN}", 9) == 0 ? 9 : 0;
        if (skip && n + olen < cap) {
            memcpy(buf + n, origin, olen);
            n += olen;
            s += skip;
        } else if (!skip && n + 1 < cap) {
            buf[n++] = *s++;
        } else {
            return file;
        }
    }
    buf[n] = 0;
    return buf;
}

/* The directories ld.so searches for a bare name dlopen-ed from the object of handle h (malloc-ed;
 * NULL on failure). */
static Dl_serinfo *db_serinfo(void *h) {
    Dl_serinfo size;
    Dl_serinfo *si = NULL;
    if (!h || dlinfo(h, RTLD_DI_SERINFOSIZE, &size) != 0 || !(si = malloc(size.dls_size))) return NULL;
    si->dls_size = size.dls_size;
    si->dls_cnt = size.dls_cnt;
    if (dlinfo(h, RTLD_DI_SERINFO, si) != 0) {
        free(si);
        return NULL;
    }
    return si;
}

/* dlopen or dlmopen(LM_ID_BASE) of file, found as the calling object would find it. A bare name: ld.so
 * searches the caller's DT_RPATH, LD_LIBRARY_PATH, the caller's DT_RUNPATH, its cache, the default
 * directories, and a call from libpyalloc would search only its own (no RPATH or RUNPATH). So the
 * caller's list is tried in order up to the part it shares with libpyalloc's (the default
 * directories, or LD_LIBRARY_PATH and them), then ld.so searches as libpyalloc, which is the rest of
 * the caller's search. A name with $ORIGIN: the caller's directory. */
static void *db_open_as(const char *file, int mode, void *caller, bool m) {
    dlopen_fn real = (dlopen_fn)pa_db_real_dlopen;
    dlmopen_fn realm = (dlmopen_fn)pa_db_real_dlmopen;
#define DB_OPEN(f, md) (m ? realm(LM_ID_BASE, (f), (md)) : real((f), (md)))
    if (!file || (!strchr(file, '$') && strchr(file, '/'))) return DB_OPEN(file, mode);
    struct link_map *map;
    void *ch = db_caller_handle(caller, &map);
    void *h = NULL;
    char buf[PATH_MAX];
    if (strchr(file, '$')) {
        file = db_expand_origin(file, map, buf, sizeof buf);
    } else if (ch && map && db_has_search_path(map) && !(h = DB_OPEN(file, mode | RTLD_NOLOAD))) {
        struct link_map *self_map;
        void *self = db_caller_handle((void *)&db_open_as, &self_map);
        Dl_serinfo *theirs = db_serinfo(ch), *ours = db_serinfo(self);
        if (self) dlclose(self);
        unsigned n = theirs ? theirs->dls_cnt : 0, k = ours ? ours->dls_cnt : 0;
        while (n > 0 && k > 0 && strcmp(theirs->dls_serpath[n - 1].dls_name, ours->dls_serpath[k - 1].dls_name) == 0) {
            n--;
            k--;
        }
        size_t fl = strlen(file);
        for (unsigned i = 0; i < n && !h; i++) {
            const char *dir = theirs->dls_serpath[i].dls_name;
            size_t dl = strlen(dir);
            if (dl == 0 || dl + fl + 2 > sizeof buf) continue;
            memcpy(buf, dir, dl);
            buf[dl] = '/';
            memcpy(buf + dl + 1, file, fl + 1);
            if (access(buf, F_OK) == 0) h = DB_OPEN(buf, mode);
        }
        free(theirs);
        free(ours);
    }
    if (ch) dlclose(ch);
    return h ? h : DB_OPEN(file, mode); /* the last call leaves dlerror's state */
#undef DB_OPEN
}

static void *db_open_deep(const char *file, int mode, void *caller, bool m) {
    db_set before = {0};
    dl_iterate_phdr(db_snapshot_cb, &before);
    void *h = db_open_as(file, mode, caller, m);
    if (h) db_repair(h, &before);
    free(before.v);
    return h;
}

void *pa_db_dlopen_deep(const char *file, int mode, void *caller) { return db_open_deep(file, mode, caller, false); }

void *pa_db_dlmopen_deep(Lmid_t lmid, const char *file, int mode, void *caller) {
    (void)lmid; /* LM_ID_BASE: the entry point sends every other namespace straight to glibc */
    return db_open_deep(file, mode, caller, true);
}

/* ---- start-up ---- */

static void db_fork_prepare(void) { pthread_mutex_lock(&db_lock); }
static void db_fork_release(void) { pthread_mutex_unlock(&db_lock); }

/* Objects deep-bound before pyalloc's constructor ran, by a dlopen that did not come through ours
 * (resolved slots only: without the opening call there is no scope to decide a lazy one by). */
__attribute__((constructor)) static void db_startup(void) {
    pa_db_resolve(0);
    pa_db_resolve(1);
    pthread_atfork(db_fork_prepare, db_fork_release, db_fork_release);
    db_repair(NULL, NULL);
}
