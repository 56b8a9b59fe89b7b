/* SPDX-License-Identifier: MIT
 * The Python frames of the calling thread, for a sampled allocation of a CPython 3.11 process: read
 * straight from the interpreter's memory, as a debugger would, without calling into it. At start-up
 * (pa_py_init, from the library's constructor, outside malloc) the loaded objects' dynamic symbol
 * tables are searched for _PyRuntime and Py_Version; a version other than 3.11 is refused (its
 * layout is not known here: pyframes.h has 3.11's). At a sample, the thread's PyThreadState comes
 * from the interpreter's own thread-specific key (pthread_getspecific: no lock, no allocation),
 * and its _PyInterpreterFrame chain gives each frame's code object: file, qualified name, and the
 * line, decoded from the code's location table at the frame's last instruction. Only the calling
 * thread's own frames are read, whether or not it holds the GIL: no other thread changes them, and
 * each frame holds a reference to its code object, so nothing read can be freed meanwhile.
 * Exports pa_py_init, pa_py_capture, pa_py_frame_info, pa_py_str, pa_py_line, pa_py_finalizing and
 * pa_py_status. */
#include "internal.h"
#include "pyframes.h"

#include <elf.h>
#include <link.h>
#include <string.h>

static struct {
    int status;              /* PA_PY_NONE, PA_PY_ON, PA_PY_OTHER */
    uint64_t version;        /* Py_Version: 0xMMmmppRS */
    const uint8_t *runtime;  /* &_PyRuntime */
    uintptr_t code_type, str_type, bytes_type;
} py;

int pa_py_status(uint64_t *version) {
    if (version) *version = py.version;
    return py.status;
}

/* ---- start-up: the interpreter's symbols, from its object's dynamic symbol table ---- */

typedef struct py_dynsym {
    const Elf64_Sym *symtab;
    const char *strtab;
    const uint32_t *gnu_hash, *sysv_hash;
    uintptr_t base;
} py_dynsym;

static uintptr_t py_dyn_ptr(uintptr_t v, uintptr_t base) {
    return v < base ? v + base : v; /* ld.so relocates these entries in place, but not the vDSO's */
}

static const Elf64_Sym *py_lookup(const py_dynsym *d, const char *name) {
    if (d->gnu_hash) {
        const uint32_t *gh = d->gnu_hash;
        uint32_t nbuckets = gh[0], symoffset = gh[1], bloom_size = gh[2];
        if (nbuckets == 0 || bloom_size == 0) return NULL;
        const uint64_t *bloom = (const uint64_t *)(const void *)&gh[4];
        const uint32_t *buckets = (const uint32_t *)(const void *)&bloom[bloom_size];
        const uint32_t *chain = &buckets[nbuckets];
        uint32_t h = 5381;
        for (const char *s = name; *s; s++) h = h * 33 + (uint8_t)*s;
        uint32_t i = buckets[h % nbuckets];
        if (i < symoffset) return NULL;
        for (;; i++) {
            uint32_t h2 = chain[i - symoffset];
            const Elf64_Sym *sym = &d->symtab[i];
            if ((h | 1) == (h2 | 1) && sym->st_shndx != SHN_UNDEF && strcmp(name, d->strtab + sym->st_name) == 0)
                return sym;
            if (h2 & 1) return NULL;
        }
    }
    if (d->sysv_hash) {
        uint32_t nbucket = d->sysv_hash[0];
        const uint32_t *bucket = &d->sysv_hash[2], *chain = &bucket[nbucket];
        uint32_t h = 0;
        for (const char *s = name; *s; s++) {
            h = (h << 4) + (uint8_t)*s;
            uint32_t g = h & 0xf0000000u;
            if (g) h ^= g >> 24;
            h &= ~g;
        }
        for (uint32_t i = nbucket ? bucket[h % nbucket] : 0; i; i = chain[i]) {
            const Elf64_Sym *sym = &d->symtab[i];
            if (sym->st_shndx != SHN_UNDEF && strcmp(name, d->strtab + sym->st_name) == 0) return sym;
        }
    }
    return NULL;
}

static int py_find(struct dl_phdr_info *info, size_t size, void *arg) {
    (void)size, (void)arg;
    const Elf64_Dyn *dyn = NULL;
    for (unsigned i = 0; i < info->dlpi_phnum; i++)
        if (info->dlpi_phdr[i].p_type == PT_DYNAMIC) dyn = (const Elf64_Dyn *)(info->dlpi_addr + info->dlpi_phdr[i].p_vaddr);
    if (!dyn) return 0;
    py_dynsym d = {.base = info->dlpi_addr};
    for (; dyn->d_tag != DT_NULL; dyn++) {
        uintptr_t v = py_dyn_ptr(dyn->d_un.d_ptr, info->dlpi_addr);
        if (dyn->d_tag == DT_SYMTAB) d.symtab = (const Elf64_Sym *)v;
        else if (dyn->d_tag == DT_STRTAB) d.strtab = (const char *)v;
        else if (dyn->d_tag == DT_GNU_HASH) d.gnu_hash = (const uint32_t *)v;
        else if (dyn->d_tag == DT_HASH) d.sysv_hash = (const uint32_t *)v;
    }
    if (!d.symtab || !d.strtab || (!d.gnu_hash && !d.sysv_hash)) return 0;
    const Elf64_Sym *rt = py_lookup(&d, "_PyRuntime"), *ver = py_lookup(&d, "Py_Version");
    if (!rt || !ver) return 0;
    py.version = *(const unsigned long *)(info->dlpi_addr + ver->st_value);
    if ((py.version >> 16) != PA_PY_SUPPORTED) {
        py.status = PA_PY_OTHER;
        return 1;
    }
    const Elf64_Sym *code = py_lookup(&d, "PyCode_Type"), *str = py_lookup(&d, "PyUnicode_Type"),
                    *bytes = py_lookup(&d, "PyBytes_Type");
    if (!code || !str || !bytes) {
        py.status = PA_PY_OTHER;
        return 1;
    }
    py.runtime = (const uint8_t *)(info->dlpi_addr + rt->st_value);
    py.code_type = info->dlpi_addr + code->st_value;
    py.str_type = info->dlpi_addr + str->st_value;
    py.bytes_type = info->dlpi_addr + bytes->st_value;
    py.status = PA_PY_ON;
    return 1;
}

void pa_py_init(void) {
    if (py.status == PA_PY_NONE) dl_iterate_phdr(py_find, NULL);
}

/* ---- reading the interpreter's memory ---- */

static const uint8_t *py_ptr(const uint8_t *p, size_t off) {
    const uint8_t *v;
    memcpy(&v, p + off, sizeof v);
    return v;
}
static int32_t py_i32(const uint8_t *p, size_t off) {
    int32_t v;
    memcpy(&v, p + off, sizeof v);
    return v;
}
static int64_t py_i64(const uint8_t *p, size_t off) {
    int64_t v;
    memcpy(&v, p + off, sizeof v);
    return v;
}

bool pa_py_finalizing(void) {
    if (py.status != PA_PY_ON) return false;
    return __atomic_load_n((const uintptr_t *)(const void *)(py.runtime + PA_PY311_RT_FINALIZING),
                           __ATOMIC_RELAXED) != 0;
}

/* The characters of str object s: *kind 1 (ASCII or Latin-1), 2 (UCS-2), 4 (UCS-4) or 8 (UTF-8),
 * *n code units. False for anything but a ready, compact str (every code object's names are). */
bool pa_py_str(const void *s, const void **data, size_t *n, unsigned *kind) {
    const uint8_t *o = s;
    if (!o || (uintptr_t)py_ptr(o, PA_PY_OB_TYPE) != py.str_type) return false;
    uint32_t state;
    memcpy(&state, o + PA_PY311_STR_STATE, sizeof state);
    unsigned k = (state >> 2) & 7, compact = (state >> 5) & 1, ascii = (state >> 6) & 1, ready = (state >> 7) & 1;
    int64_t len = py_i64(o, PA_PY311_STR_LENGTH);
    if (!compact || !ready || len < 0) return false;
    if (ascii) {
        *data = o + PA_PY311_STR_ASCII_DATA;
        *n = (size_t)len;
        *kind = 1;
        return true;
    }
    const uint8_t *utf8 = py_ptr(o, PA_PY311_STR_UTF8);
    if (utf8) {
        *data = utf8;
        *n = (size_t)py_i64(o, PA_PY311_STR_UTF8_LENGTH);
        *kind = 8;
        return true;
    }
    if (k != 1 && k != 2 && k != 4) return false;
    *data = o + PA_PY311_STR_DATA;
    *n = (size_t)len;
    *kind = k;
    return true;
}

/* 3.11's location table (Objects/locations.md): entries of 1..8 code units, each a first byte
 * 1cccclll (code, length - 1) and the code's operands; the line of code unit lasti. */
static unsigned py_varint(const uint8_t **p, const uint8_t *end) {
    unsigned v = 0, shift = 0;
    while (*p < end) {
        uint8_t b = *(*p)++;
        v |= (unsigned)(b & 63) << shift;
        shift += 6;
        if (!(b & 64) || shift > 30) break;
    }
    return v;
}

static int py_svarint(const uint8_t **p, const uint8_t *end) {
    unsigned v = py_varint(p, end);
    return (v & 1) ? -(int)(v >> 1) : (int)(v >> 1);
}

int pa_py_line(const uint8_t *table, size_t len, int firstline, int64_t lasti) {
    if (lasti < 0) return firstline;
    const uint8_t *p = table, *end = table + len;
    int line = firstline;
    int64_t at = 0;
    while (p < end) {
        uint8_t first = *p++;
        if (!(first & 0x80)) return -1; /* not the start of an entry: damaged, or not 3.11's */
        unsigned code = (first >> 3) & 15, units = (first & 7) + 1;
        bool none = false;
        if (code == 15) {
            none = true;
        } else if (code == 14) {
            line += py_svarint(&p, end);
            (void)py_varint(&p, end), (void)py_varint(&p, end), (void)py_varint(&p, end);
        } else if (code == 13) {
            line += py_svarint(&p, end);
        } else if (code >= 10) {
            line += (int)code - 10;
            p += 2;
        } else {
            p += 1;
        }
        if (lasti < at + units) return none ? -1 : line;
        at += units;
    }
    return -1;
}

size_t pa_py_capture(pa_pyframe *out, size_t max) {
    if (py.status != PA_PY_ON) return 0;
    const uint8_t *rt = py.runtime;
    if (!py_i32(rt, PA_PY311_RT_TSS)) return 0; /* the key is not made yet: no thread state */
    uint32_t key;
    memcpy(&key, rt + PA_PY311_RT_TSS + PA_PY311_TSS_KEY, sizeof key);
    const uint8_t *ts = pthread_getspecific((pthread_key_t)key);
    if (!ts) return 0;
    const uint8_t *cf = py_ptr(ts, PA_PY311_TS_CFRAME);
    const uint8_t *fr = cf ? py_ptr(cf, PA_PY311_CF_CURRENT) : NULL;
    size_t n = 0;
    while (fr && n < max) {
        const uint8_t *code = py_ptr(fr, PA_PY311_FR_CODE);
        if (!code || (uintptr_t)py_ptr(code, PA_PY_OB_TYPE) != py.code_type) break;
        const uint8_t *insns = code + PA_PY311_CO_CODE, *prev = py_ptr(fr, PA_PY311_FR_PREV_INSTR);
        /* A frame that has not run its first instruction yet (being set up) is skipped, as CPython's
         * own tracebacks skip it (_PyFrame_IsIncomplete). */
        bool incomplete = fr[PA_PY311_FR_OWNER] != PA_PY311_OWNED_BY_GENERATOR &&
                          prev < insns + 2 * (int64_t)py_i32(code, PA_PY311_CO_FIRSTTRACEABLE);
        if (!incomplete) {
            int64_t lasti = (prev - insns) / 2;
            out[n].code = code;
            out[n].lasti = lasti < 0 ? -1 : lasti > INT32_MAX ? INT32_MAX : (int32_t)lasti;
            out[n].entry = fr[PA_PY311_FR_IS_ENTRY] != 0;
            n++;
        }
        fr = py_ptr(fr, PA_PY311_FR_PREVIOUS);
    }
    return n;
}

void pa_py_frame_info(const void *code_obj, int32_t lasti, const void **file, const void **name, int *line) {
    const uint8_t *code = code_obj, *lt = py_ptr(code, PA_PY311_CO_LINETABLE);
    *file = py_ptr(code, PA_PY311_CO_FILENAME);
    *name = py_ptr(code, PA_PY311_CO_QUALNAME);
    *line = -1;
    if (lt && (uintptr_t)py_ptr(lt, PA_PY_OB_TYPE) == py.bytes_type)
        *line = pa_py_line(lt + PA_PY311_BYTES_SVAL, (size_t)py_i64(lt, PA_PY_OB_SIZE),
                           py_i32(code, PA_PY311_CO_FIRSTLINENO), lasti);
}
