/* SPDX-License-Identifier: MIT
 * The native stack of the calling thread, for a sampled allocation (sample.c): an x86-64 DWARF
 * call-frame-information unwinder of its own. Each frame's object is found with glibc's
 * _dl_find_object (glibc 2.35: lock-free, allocation-free, async-signal-safe, kept up to date by
 * dlopen and dlclose themselves), its FDE through the object's .eh_frame_hdr binary search table,
 * and the CFA program of CIE and FDE is run up to the frame's address. Nothing here allocates, takes
 * a lock or calls anything that may; every byte of CFI read is checked against the object's
 * readable PT_LOAD segments first, every stack word against the thread's stack (the mapping that
 * holds the stack pointer, read once per thread from /proc/self/maps with raw system calls). An
 * opcode, encoding or expression it does not know ends the walk there. Exports pa_unwind,
 * pa_unwind_object, pa_unwind_init and pa_unwind_find_mapping. */
#include "internal.h"

#include <dlfcn.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <link.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* ---- registers ----
 * DWARF numbers for x86-64: 0 rax, 1 rdx, 2 rcx, 3 rbx, 4 rsi, 5 rdi, 6 rbp, 7 rsp, 8-15 r8-r15,
 * 16 the return address (rip). */
#define UNW_NREG 17
#define UNW_RBP 6
#define UNW_RSP 7
#define UNW_RA 16

/* The caller's callee-saved registers, its stack pointer and its return address, as they are when
 * pa_unwind_regs returns: regs[r] for the DWARF number r (caller-saved ones are not stored). */
void pa_unwind_regs(uint64_t regs[UNW_NREG]);
__asm__(".text\n"
        ".p2align 4\n"
        ".type pa_unwind_regs, @function\n"
        "pa_unwind_regs:\n"
        "  .cfi_startproc\n"
        "  movq %rbx, 24(%rdi)\n"
        "  movq %rbp, 48(%rdi)\n"
        "  leaq 8(%rsp), %rax\n" /* the caller's stack pointer once this returns */
        "  movq %rax, 56(%rdi)\n"
        "  movq %r12, 96(%rdi)\n"
        "  movq %r13, 104(%rdi)\n"
        "  movq %r14, 112(%rdi)\n"
        "  movq %r15, 120(%rdi)\n"
        "  movq (%rsp), %rax\n"
        "  movq %rax, 128(%rdi)\n"
        "  ret\n"
        "  .cfi_endproc\n"
        ".size pa_unwind_regs, .-pa_unwind_regs\n");
#define UNW_CAPTURED ((1u << 3) | (1u << 6) | (1u << 7) | (0xfu << 12) | (1u << 16))

/* ---- the thread's stack ---- */

/* The mapping that holds this thread's stack pointer, read from /proc/self/maps at its first
 * sample (and again if the stack pointer is ever outside it: a coroutine's stack, or the main
 * thread's stack grown since). Every stack word the unwinder reads lies in [sp, hi). */
static __thread uintptr_t unw_stack_lo, unw_stack_hi;

/* The raw system calls: syscall(2) is not a cancellation point (open and read are), and a failure
 * leaves errno as the program had it. */
static long unw_sys(long nr, long a, long b, long c) {
    int saved = errno;
    long r = syscall(nr, a, b, c);
    errno = saved;
    return r;
}

static uintptr_t unw_hex(const char **s, const char *end) {
    uintptr_t v = 0;
    for (; *s < end; (*s)++) {
        char c = **s;
        unsigned d = c >= '0' && c <= '9' ? (unsigned)(c - '0') : c >= 'a' && c <= 'f' ? (unsigned)(c - 'a' + 10) : 16u;
        if (d > 15) break;
        v = v << 4 | d;
    }
    return v;
}

/* [*lo, *hi) of the readable mapping that holds addr, from /proc/self/maps; false if none. */
bool pa_unwind_find_mapping(uintptr_t addr, uintptr_t *lo, uintptr_t *hi) {
    int fd = (int)unw_sys(SYS_openat, AT_FDCWD, (long)"/proc/self/maps", O_RDONLY | O_CLOEXEC);
    if (fd < 0) return false;
    char buf[1024];
    size_t have = 0;
    bool found = false, eof = false;
    while (!found && !(eof && have == 0)) {
        if (!eof && have < sizeof buf) {
            long k = unw_sys(SYS_read, fd, (long)(buf + have), (long)(sizeof buf - have));
            if (k <= 0) eof = true;
            else have += (size_t)k;
        }
        char *nl = memchr(buf, '\n', have);
        if (!nl) {
            if (have == sizeof buf || eof) have = 0; /* a line longer than the buffer: skip what we have */
            continue;
        }
        const char *s = buf, *end = nl;
        uintptr_t a = unw_hex(&s, end);
        if (s < end && *s == '-') {
            s++;
            uintptr_t b = unw_hex(&s, end);
            if (addr >= a && addr < b && s + 1 < end && s[1] == 'r') {
                *lo = a;
                *hi = b;
                found = true;
            }
        }
        size_t used = (size_t)(nl + 1 - buf);
        memmove(buf, nl + 1, have - used);
        have -= used;
    }
    unw_sys(SYS_close, fd, 0, 0);
    return found;
}

static bool unw_stack_bounds(uintptr_t sp, uintptr_t *hi) {
    if (sp < unw_stack_lo || sp >= unw_stack_hi) {
        uintptr_t lo, h;
        if (!pa_unwind_find_mapping(sp, &lo, &h)) return false;
        unw_stack_lo = lo;
        unw_stack_hi = h;
    }
    *hi = unw_stack_hi;
    return true;
}

/* ---- an object's readable memory ---- */

#define UNW_MAXSEG 8
typedef struct unw_obj {
    uintptr_t map_start, map_end;      /* as _dl_find_object gives them */
    uintptr_t l_addr;                  /* load bias */
    const void *link_map;
    const uint8_t *hdr;                /* .eh_frame_hdr */
    uintptr_t seg_lo[UNW_MAXSEG], seg_hi[UNW_MAXSEG]; /* readable PT_LOAD segments */
    unsigned nseg;
} unw_obj;

static bool unw_obj_readable(const unw_obj *o, uintptr_t a, size_t n) {
    for (unsigned i = 0; i < o->nseg; i++)
        if (a >= o->seg_lo[i] && a <= o->seg_hi[i] && n <= o->seg_hi[i] - a) return true;
    return false;
}

/* The end of the readable segment that holds a, or 0. */
static uintptr_t unw_obj_seg_end(const unw_obj *o, uintptr_t a) {
    for (unsigned i = 0; i < o->nseg; i++)
        if (a >= o->seg_lo[i] && a < o->seg_hi[i]) return o->seg_hi[i];
    return 0;
}

/* The object that holds pc, its .eh_frame_hdr and readable segments (from the program headers,
 * which follow the ELF header in the first page of every object ld.so maps). */
static bool unw_obj_find(uintptr_t pc, unw_obj *o) {
    struct dl_find_object f;
    if (_dl_find_object((void *)pc, &f) != 0 || !f.dlfo_link_map) return false;
    o->map_start = (uintptr_t)f.dlfo_map_start;
    o->map_end = (uintptr_t)f.dlfo_map_end;
    o->link_map = f.dlfo_link_map;
    o->l_addr = f.dlfo_link_map->l_addr;
    o->hdr = f.dlfo_eh_frame;
    o->nseg = 0;
    uintptr_t first = o->map_start & ~(uintptr_t)(PA_OS_PAGE - 1);
    const Elf64_Ehdr *eh = (const Elf64_Ehdr *)first;
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) != 0 || eh->e_ident[EI_CLASS] != ELFCLASS64 ||
        eh->e_phentsize != sizeof(Elf64_Phdr) || eh->e_phoff > PA_OS_PAGE ||
        eh->e_phnum > (PA_OS_PAGE - eh->e_phoff) / sizeof(Elf64_Phdr))
        return false;
    const Elf64_Phdr *ph = (const Elf64_Phdr *)(first + eh->e_phoff);
    for (unsigned i = 0; i < eh->e_phnum && o->nseg < UNW_MAXSEG; i++) {
        if (ph[i].p_type != PT_LOAD || !(ph[i].p_flags & PF_R)) continue;
        o->seg_lo[o->nseg] = o->l_addr + ph[i].p_vaddr;
        o->seg_hi[o->nseg] = o->l_addr + ph[i].p_vaddr + ph[i].p_filesz; /* the file's bytes: CFI is there */
        o->nseg++;
    }
    return o->hdr != NULL;
}

/* The object this code is in; shared: it is a library of its own (LD_PRELOAD, -lpyalloc), not
 * linked into the program's executable (libpyalloc.a). */
static uintptr_t unw_self_lo, unw_self_hi;
static bool unw_self_shared;

void pa_unwind_init(void) {
    struct dl_find_object f;
    if (_dl_find_object((void *)(uintptr_t)&pa_unwind_init, &f) == 0 && f.dlfo_link_map) {
        unw_self_lo = (uintptr_t)f.dlfo_map_start;
        unw_self_hi = (uintptr_t)f.dlfo_map_end;
        unw_self_shared = f.dlfo_link_map->l_name && f.dlfo_link_map->l_name[0];
    }
}

/* ---- reading CFI: a cursor over an object's readable bytes ---- */

typedef struct unw_cur {
    const uint8_t *p, *end;
    bool bad;
} unw_cur;

static uint8_t cur_u8(unw_cur *c) {
    if (c->p >= c->end) {
        c->bad = true;
        return 0;
    }
    return *c->p++;
}

static uint64_t cur_fixed(unw_cur *c, unsigned n) {
    if ((size_t)(c->end - c->p) < n) {
        c->bad = true;
        c->p = c->end;
        return 0;
    }
    uint64_t v = 0;
    memcpy(&v, c->p, n); /* little-endian */
    c->p += n;
    return v;
}

static uint64_t cur_uleb(unw_cur *c) {
    uint64_t v = 0;
    unsigned shift = 0;
    for (;;) {
        uint8_t b = cur_u8(c);
        if (c->bad) return 0;
        if (shift < 64) v |= (uint64_t)(b & 0x7f) << shift;
        shift += 7;
        if (!(b & 0x80)) return v;
        if (shift > 70) {
            c->bad = true;
            return 0;
        }
    }
}

static int64_t cur_sleb(unw_cur *c) {
    uint64_t v = 0;
    unsigned shift = 0;
    uint8_t b;
    do {
        b = cur_u8(c);
        if (c->bad) return 0;
        if (shift < 64) v |= (uint64_t)(b & 0x7f) << shift;
        shift += 7;
        if (shift > 70) {
            c->bad = true;
            return 0;
        }
    } while (b & 0x80);
    if (shift < 64 && (b & 0x40)) v |= ~(uint64_t)0 << shift;
    return (int64_t)v;
}

/* A pointer in DWARF EH encoding enc (absolute, pc-relative or relative to datarel; no indirection:
 * only the personality routine's pointer is indirect, and it is skipped, never followed). */
static bool cur_ptr(unw_cur *c, uint8_t enc, uintptr_t datarel, uintptr_t *out) {
    if (enc == 0xff) return false; /* DW_EH_PE_omit */
    uintptr_t here = (uintptr_t)c->p;
    uint64_t v;
    switch (enc & 0x0f) {
    case 0x00: v = cur_fixed(c, 8); break;                        /* absptr */
    case 0x01: v = cur_uleb(c); break;                            /* uleb128 */
    case 0x02: v = cur_fixed(c, 2); break;                        /* udata2 */
    case 0x03: v = cur_fixed(c, 4); break;                        /* udata4 */
    case 0x04: v = cur_fixed(c, 8); break;                        /* udata8 */
    case 0x09: v = (uint64_t)cur_sleb(c); break;                  /* sleb128 */
    case 0x0a: v = (uint64_t)(int64_t)(int16_t)cur_fixed(c, 2); break; /* sdata2 */
    case 0x0b: v = (uint64_t)(int64_t)(int32_t)cur_fixed(c, 4); break; /* sdata4 */
    case 0x0c: v = cur_fixed(c, 8); break;                        /* sdata8 */
    default: return false;
    }
    switch (enc & 0x70) {
    case 0x00: break;
    case 0x10: v += here; break;    /* pcrel */
    case 0x30: v += datarel; break; /* datarel */
    default: return false;          /* textrel, funcrel, aligned: not emitted on x86-64 */
    }
    *out = (uintptr_t)v;
    return !c->bad;
}

/* ---- CIE and FDE ---- */

typedef struct unw_cie {
    uint64_t code_align;
    int64_t data_align;
    uint32_t ra_reg;
    uint8_t fde_enc;
    bool aug_z, signal;
    const uint8_t *insns, *insns_end;
} unw_cie;

typedef struct unw_fde {
    uintptr_t pc_begin, pc_end;
    const uint8_t *insns, *insns_end;
} unw_fde;

/* The entry (CIE or FDE) at p: its length field read, c spans its body; false if it does not fit. */
static bool unw_entry(const unw_obj *o, const uint8_t *p, unw_cur *c) {
    uintptr_t segend = unw_obj_seg_end(o, (uintptr_t)p);
    if (!segend) return false;
    c->p = p;
    c->end = (const uint8_t *)segend;
    c->bad = false;
    uint64_t len = cur_fixed(c, 4);
    if (len == 0xffffffffu) len = cur_fixed(c, 8);
    if (c->bad || len == 0 || len > (uint64_t)(c->end - c->p)) return false;
    c->end = c->p + len;
    return true;
}

static bool unw_parse_cie(const unw_obj *o, const uint8_t *p, unw_cie *cie) {
    unw_cur c;
    if (!unw_entry(o, p, &c)) return false;
    if (cur_fixed(&c, 4) != 0) return false; /* a CIE's id in .eh_frame */
    uint8_t version = cur_u8(&c);
    if (version != 1 && version != 3) return false;
    char aug[8];
    size_t naug = 0;
    for (;;) {
        uint8_t ch = cur_u8(&c);
        if (c.bad) return false;
        if (ch == 0) break;
        if (naug == sizeof aug) return false;
        aug[naug++] = (char)ch;
    }
    cie->code_align = cur_uleb(&c);
    cie->data_align = cur_sleb(&c);
    cie->ra_reg = version == 1 ? cur_u8(&c) : (uint32_t)cur_uleb(&c);
    cie->fde_enc = 0; /* absptr */
    cie->aug_z = naug > 0 && aug[0] == 'z';
    cie->signal = false;
    if (naug > 0 && !cie->aug_z) return false; /* "eh" and other pre-'z' forms */
    if (cie->aug_z) {
        uint64_t alen = cur_uleb(&c);
        if (c.bad || alen > (uint64_t)(c.end - c.p)) return false;
        const uint8_t *aend = c.p + alen;
        for (size_t i = 1; i < naug; i++) {
            if (aug[i] == 'R') {
                cie->fde_enc = cur_u8(&c);
            } else if (aug[i] == 'P') {
                uint8_t penc = cur_u8(&c);
                uintptr_t ignored;
                if (!cur_ptr(&c, penc & 0x7f, 0, &ignored)) return false;
            } else if (aug[i] == 'L') {
                (void)cur_u8(&c);
            } else if (aug[i] == 'S') {
                cie->signal = true;
            } else {
                break; /* the rest of the augmentation data is skipped by its length */
            }
        }
        c.p = aend;
    }
    if (c.bad || cie->code_align == 0 || cie->ra_reg >= UNW_NREG) return false;
    cie->insns = c.p;
    cie->insns_end = c.end;
    return true;
}

static bool unw_parse_fde(const unw_obj *o, const uint8_t *p, unw_cie *cie, unw_fde *fde) {
    unw_cur c;
    if (!unw_entry(o, p, &c)) return false;
    const uint8_t *idfield = c.p;
    uint32_t cie_off = (uint32_t)cur_fixed(&c, 4);
    if (c.bad || cie_off == 0 || cie_off > (uintptr_t)idfield) return false;
    if (!unw_parse_cie(o, idfield - cie_off, cie)) return false;
    uintptr_t begin, range;
    if (!cur_ptr(&c, cie->fde_enc, (uintptr_t)o->hdr, &begin)) return false;
    if (!cur_ptr(&c, cie->fde_enc & 0x0f, 0, &range)) return false;
    if (cie->aug_z) {
        uint64_t alen = cur_uleb(&c);
        if (c.bad || alen > (uint64_t)(c.end - c.p)) return false;
        c.p += alen;
    }
    fde->pc_begin = begin;
    fde->pc_end = begin + range;
    fde->insns = c.p;
    fde->insns_end = c.end;
    return true;
}

/* The FDE covering pc, by binary search of .eh_frame_hdr's table (sorted initial locations, each
 * datarel sdata4, as every linker writes it; another encoding ends the walk). */
static bool unw_find_fde(const unw_obj *o, uintptr_t pc, unw_cie *cie, unw_fde *fde) {
    const uint8_t *hdr = o->hdr;
    if (!unw_obj_readable(o, (uintptr_t)hdr, 4) || hdr[0] != 1) return false;
    uint8_t fde_count_enc = hdr[2], table_enc = hdr[3];
    if (table_enc != 0x3b) return false; /* DW_EH_PE_datarel | DW_EH_PE_sdata4 */
    unw_cur c = {hdr + 4, (const uint8_t *)unw_obj_seg_end(o, (uintptr_t)hdr), false};
    uintptr_t eh_frame, count;
    if (!cur_ptr(&c, hdr[1], (uintptr_t)hdr, &eh_frame)) return false;
    if (!cur_ptr(&c, fde_count_enc, (uintptr_t)hdr, &count)) return false;
    (void)eh_frame;
    if (count == 0 || count > (uintptr_t)(c.end - c.p) / 8) return false;
    const int32_t *table = (const int32_t *)(const void *)c.p;
    size_t lo = 0, hi = count; /* the last entry whose start <= pc */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if ((uintptr_t)hdr + (intptr_t)table[2 * mid] <= pc) lo = mid;
        else hi = mid;
    }
    if ((uintptr_t)hdr + (intptr_t)table[2 * lo] > pc) return false;
    const uint8_t *fp = hdr + table[2 * lo + 1];
    if (!unw_parse_fde(o, fp, cie, fde)) return false;
    return pc >= fde->pc_begin && pc < fde->pc_end;
}

/* ---- the CFA program ---- */

enum { R_SAME = 0, R_UNDEF, R_OFFSET, R_VAL_OFFSET, R_REG, R_EXPR, R_VAL_EXPR };

typedef struct unw_rule {
    const uint8_t *expr; /* R_EXPR, R_VAL_EXPR: the DWARF expression (its length first, uleb) */
    int64_t v;           /* R_OFFSET, R_VAL_OFFSET: CFA offset; R_REG: the register */
    uint8_t how;
} unw_rule;

typedef struct unw_row {
    uint32_t cfa_reg;
    int64_t cfa_off;
    const uint8_t *cfa_expr; /* set: the CFA is this expression's value */
    unw_rule reg[UNW_NREG];
} unw_row;

#define UNW_STATE_DEPTH 4 /* remember_state nesting compilers emit is 1 or 2 deep */

/* Runs the CFA instructions [p, end) while the location stays <= target (all of them when target
 * is UINTPTR_MAX: a CIE's initial instructions). initial: the row after the CIE's (for restore). */
static bool unw_run(const unw_obj *o, const unw_cie *cie, const uint8_t *p, const uint8_t *end,
                    uintptr_t loc, uintptr_t target, unw_row *row, const unw_row *initial) {
    unw_row saved[UNW_STATE_DEPTH];
    unsigned nsaved = 0;
    unw_cur c = {p, end, false};
    while (c.p < c.end && !c.bad) {
        uint8_t op = cur_u8(&c);
        uint64_t reg = 0, delta = 0;
        int64_t off = 0;
        switch (op >> 6) {
        case 1: /* DW_CFA_advance_loc */
            delta = (uint64_t)(op & 0x3f) * cie->code_align;
            goto advance;
        case 2: /* DW_CFA_offset */
            reg = op & 0x3f;
            off = (int64_t)cur_uleb(&c) * cie->data_align;
            goto set_offset;
        case 3: /* DW_CFA_restore */
            reg = op & 0x3f;
            goto restore;
        default: break;
        }
        switch (op) {
        case 0x00: break; /* nop */
        case 0x01: {      /* set_loc */
            uintptr_t a;
            if (!cur_ptr(&c, cie->fde_enc, (uintptr_t)o->hdr, &a)) return false;
            if (a > target) return true;
            loc = a;
            break;
        }
        case 0x02: delta = cur_fixed(&c, 1) * cie->code_align; goto advance;
        case 0x03: delta = cur_fixed(&c, 2) * cie->code_align; goto advance;
        case 0x04: delta = cur_fixed(&c, 4) * cie->code_align; goto advance;
        case 0x05: /* offset_extended */
            reg = cur_uleb(&c);
            off = (int64_t)cur_uleb(&c) * cie->data_align;
            goto set_offset;
        case 0x06: reg = cur_uleb(&c); goto restore; /* restore_extended */
        case 0x07: /* undefined */
        case 0x08: /* same_value */
            reg = cur_uleb(&c);
            if (reg < UNW_NREG) row->reg[reg] = (unw_rule){NULL, 0, op == 0x07 ? R_UNDEF : R_SAME};
            break;
        case 0x09: { /* register */
            reg = cur_uleb(&c);
            uint64_t r2 = cur_uleb(&c);
            if (reg < UNW_NREG) {
                if (r2 >= UNW_NREG) return false;
                row->reg[reg] = (unw_rule){NULL, (int64_t)r2, R_REG};
            }
            break;
        }
        case 0x0a: /* remember_state */
            if (nsaved == UNW_STATE_DEPTH) return false;
            saved[nsaved++] = *row;
            break;
        case 0x0b: /* restore_state: the CFA rule and every register's, as remembered (what
                      libgcc does: compilers bracket a mid-function epilogue with the pair) */
            if (nsaved == 0) return false;
            *row = saved[--nsaved];
            break;
        case 0x0c: /* def_cfa */
            row->cfa_reg = (uint32_t)cur_uleb(&c);
            row->cfa_off = (int64_t)cur_uleb(&c);
            row->cfa_expr = NULL;
            break;
        case 0x0d: row->cfa_reg = (uint32_t)cur_uleb(&c); row->cfa_expr = NULL; break; /* def_cfa_register */
        case 0x0e: row->cfa_off = (int64_t)cur_uleb(&c); break;                      /* def_cfa_offset */
        case 0x0f: { /* def_cfa_expression */
            row->cfa_expr = c.p;
            uint64_t n = cur_uleb(&c);
            if (c.bad || n > (uint64_t)(c.end - c.p)) return false;
            c.p += n;
            break;
        }
        case 0x10: /* expression */
        case 0x16: { /* val_expression */
            reg = cur_uleb(&c);
            const uint8_t *e = c.p;
            uint64_t n = cur_uleb(&c);
            if (c.bad || n > (uint64_t)(c.end - c.p)) return false;
            c.p += n;
            if (reg < UNW_NREG) row->reg[reg] = (unw_rule){e, 0, op == 0x10 ? R_EXPR : R_VAL_EXPR};
            break;
        }
        case 0x11: /* offset_extended_sf */
            reg = cur_uleb(&c);
            off = cur_sleb(&c) * cie->data_align;
            goto set_offset;
        case 0x12: /* def_cfa_sf */
            row->cfa_reg = (uint32_t)cur_uleb(&c);
            row->cfa_off = cur_sleb(&c) * cie->data_align;
            row->cfa_expr = NULL;
            break;
        case 0x13: row->cfa_off = cur_sleb(&c) * cie->data_align; break; /* def_cfa_offset_sf */
        case 0x14: /* val_offset */
        case 0x15: /* val_offset_sf */
            reg = cur_uleb(&c);
            off = op == 0x14 ? (int64_t)cur_uleb(&c) * cie->data_align : cur_sleb(&c) * cie->data_align;
            if (reg < UNW_NREG) row->reg[reg] = (unw_rule){NULL, off, R_VAL_OFFSET};
            break;
        case 0x2e: (void)cur_uleb(&c); break; /* GNU_args_size */
        case 0x2f: /* GNU_negative_offset_extended */
            reg = cur_uleb(&c);
            off = -(int64_t)cur_uleb(&c) * cie->data_align;
            goto set_offset;
        default: return false; /* unknown: stop cleanly */
        }
        continue;
    advance:
        if (loc + delta > target) return !c.bad;
        loc += delta;
        continue;
    set_offset:
        if (reg < UNW_NREG) row->reg[reg] = (unw_rule){NULL, off, R_OFFSET};
        continue;
    restore:
        if (reg < UNW_NREG) {
            if (!initial) return false; /* restore inside a CIE's own instructions */
            row->reg[reg] = initial->reg[reg];
        }
        continue;
    }
    return !c.bad;
}

/* ---- DWARF expressions (CFA and register rules: the PLT's, signal frames', realigned stacks') ---- */

typedef struct unw_ctx {
    uint64_t regs[UNW_NREG];
    uint32_t known; /* bit r: regs[r] is known */
    uintptr_t stack_lo, stack_hi;
    const unw_obj *obj;
} unw_ctx;

__attribute__((no_sanitize_address)) static bool unw_read_stack(const unw_ctx *x, uintptr_t a, uint64_t *out) {
    if (a < x->stack_lo || a > x->stack_hi - 8 || (a & 7)) return false;
    *out = *(const uint64_t *)a;
    return true;
}

/* size bytes at a, little-endian: on the stack, or in the current object's readable segments. */
__attribute__((no_sanitize_address)) static bool unw_read_any(const unw_ctx *x, uintptr_t a, unsigned size,
                                                              uint64_t *out) {
    bool stack = a >= x->stack_lo && a <= x->stack_hi - size;
    if (!stack && !unw_obj_readable(x->obj, a, size)) return false;
    uint64_t v = 0;
    memcpy(&v, (const void *)a, size);
    *out = v;
    return true;
}

#define UNW_EXPR_STACK 16

/* Evaluates the expression at e (its length first), with push (if push_cfa) the CFA on the stack. */
static bool unw_eval(const unw_ctx *x, const uint8_t *e, const uint8_t *limit, bool push_cfa, uint64_t cfa,
                     uint64_t *out) {
    unw_cur c = {e, limit, false};
    uint64_t n = cur_uleb(&c);
    if (c.bad || n > (uint64_t)(c.end - c.p)) return false;
    c.end = c.p + n;
    uint64_t st[UNW_EXPR_STACK];
    unsigned sp = 0;
#define PUSH(v)                                 \
    do {                                        \
        uint64_t pushed_ = (v);                 \
        if (sp == UNW_EXPR_STACK) return false; \
        st[sp++] = pushed_;                     \
    } while (0)
#define NEED(k) \
    if (sp < (k)) return false
    if (push_cfa) PUSH(cfa);
    while (c.p < c.end) {
        uint8_t op = cur_u8(&c);
        uint64_t a;
        if (op >= 0x30 && op <= 0x4f) { /* lit0..lit31 */
            PUSH((uint64_t)(op - 0x30));
            continue;
        }
        if (op >= 0x70 && op <= 0x8f) { /* breg0..breg31 */
            unsigned r = op - 0x70;
            int64_t off = cur_sleb(&c);
            if (r >= UNW_NREG || !(x->known & (1u << r))) return false;
            PUSH(x->regs[r] + (uint64_t)off);
            continue;
        }
        switch (op) {
        case 0x06: /* deref */
            NEED(1);
            if (!unw_read_any(x, (uintptr_t)st[sp - 1], 8, &st[sp - 1])) return false;
            break;
        case 0x94: { /* deref_size */
            unsigned size = cur_u8(&c);
            NEED(1);
            if (size == 0 || size > 8 || !unw_read_any(x, (uintptr_t)st[sp - 1], size, &st[sp - 1])) return false;
            break;
        }
        case 0x08: PUSH(cur_fixed(&c, 1)); break;                                /* const1u */
        case 0x09: PUSH((uint64_t)(int64_t)(int8_t)cur_fixed(&c, 1)); break;     /* const1s */
        case 0x0a: PUSH(cur_fixed(&c, 2)); break;                                /* const2u */
        case 0x0b: PUSH((uint64_t)(int64_t)(int16_t)cur_fixed(&c, 2)); break;    /* const2s */
        case 0x0c: PUSH(cur_fixed(&c, 4)); break;                                /* const4u */
        case 0x0d: PUSH((uint64_t)(int64_t)(int32_t)cur_fixed(&c, 4)); break;    /* const4s */
        case 0x0e: case 0x0f: PUSH(cur_fixed(&c, 8)); break;                     /* const8u/s */
        case 0x10: PUSH(cur_uleb(&c)); break;                                    /* constu */
        case 0x11: PUSH((uint64_t)cur_sleb(&c)); break;                          /* consts */
        case 0x12: NEED(1); PUSH(st[sp - 1]); break;                             /* dup */
        case 0x13: NEED(1); sp--; break;                                         /* drop */
        case 0x14: NEED(2); PUSH(st[sp - 2]); break;                             /* over */
        case 0x16: NEED(2); a = st[sp - 1]; st[sp - 1] = st[sp - 2]; st[sp - 2] = a; break; /* swap */
        case 0x1a: NEED(2); sp--; st[sp - 1] &= st[sp]; break;                   /* and */
        case 0x1c: NEED(2); sp--; st[sp - 1] -= st[sp]; break;                   /* minus */
        case 0x1e: NEED(2); sp--; st[sp - 1] *= st[sp]; break;                   /* mul */
        case 0x1f: NEED(1); st[sp - 1] = (uint64_t)-(int64_t)st[sp - 1]; break;  /* neg */
        case 0x20: NEED(1); st[sp - 1] = ~st[sp - 1]; break;                     /* not */
        case 0x21: NEED(2); sp--; st[sp - 1] |= st[sp]; break;                   /* or */
        case 0x22: NEED(2); sp--; st[sp - 1] += st[sp]; break;                   /* plus */
        case 0x23: NEED(1); st[sp - 1] += cur_uleb(&c); break;                   /* plus_uconst */
        case 0x24: NEED(2); sp--; st[sp - 1] = st[sp] >= 64 ? 0 : st[sp - 1] << st[sp]; break; /* shl */
        case 0x25: NEED(2); sp--; st[sp - 1] = st[sp] >= 64 ? 0 : st[sp - 1] >> st[sp]; break; /* shr */
        case 0x27: NEED(2); sp--; st[sp - 1] ^= st[sp]; break;                   /* xor */
        case 0x29: case 0x2a: case 0x2b: case 0x2c: case 0x2d: case 0x2e: {      /* eq ge gt le lt ne */
            NEED(2);
            sp--;
            int64_t l = (int64_t)st[sp - 1], r = (int64_t)st[sp];
            bool v = op == 0x29 ? l == r : op == 0x2a ? l >= r : op == 0x2b ? l > r
                   : op == 0x2c ? l <= r : op == 0x2d ? l < r : l != r;
            st[sp - 1] = v;
            break;
        }
        case 0x92: { /* bregx */
            uint64_t r = cur_uleb(&c);
            int64_t off = cur_sleb(&c);
            if (r >= UNW_NREG || !(x->known & (1u << r))) return false;
            PUSH(x->regs[r] + (uint64_t)off);
            break;
        }
        case 0x96: break; /* nop */
        default: return false;
        }
        if (c.bad) return false;
    }
#undef PUSH
#undef NEED
    if (c.bad || sp == 0) return false;
    *out = st[sp - 1];
    return true;
}

/* ---- one step: the caller's registers from this frame's row ---- */

static bool unw_step(unw_ctx *x, const unw_row *row, uint32_t ra_reg, const uint8_t *seg_end) {
    uint64_t cfa;
    if (row->cfa_expr) {
        if (!unw_eval(x, row->cfa_expr, seg_end, false, 0, &cfa)) return false;
    } else {
        if (row->cfa_reg >= UNW_NREG || !(x->known & (1u << row->cfa_reg))) return false;
        cfa = x->regs[row->cfa_reg] + (uint64_t)row->cfa_off;
    }
    uint64_t nregs[UNW_NREG];
    uint32_t nknown = 0;
    for (unsigned r = 0; r < UNW_NREG; r++) {
        const unw_rule *u = &row->reg[r];
        uint64_t v = 0, a;
        bool ok = true;
        switch (u->how) {
        case R_SAME:
            v = x->regs[r];
            ok = (x->known >> r) & 1;
            break;
        case R_UNDEF: ok = false; break;
        case R_OFFSET: ok = unw_read_stack(x, (uintptr_t)(cfa + (uint64_t)u->v), &v); break;
        case R_VAL_OFFSET: v = cfa + (uint64_t)u->v; break;
        case R_REG:
            v = x->regs[u->v];
            ok = (x->known >> u->v) & 1;
            break;
        case R_EXPR:
            ok = unw_eval(x, u->expr, seg_end, true, cfa, &a) && unw_read_stack(x, (uintptr_t)a, &v);
            break;
        case R_VAL_EXPR: ok = unw_eval(x, u->expr, seg_end, true, cfa, &v); break;
        }
        nregs[r] = v;
        if (ok) nknown |= 1u << r;
    }
    if (row->reg[UNW_RSP].how == R_SAME) { /* the CFA is the caller's stack pointer */
        nregs[UNW_RSP] = cfa;
        nknown |= 1u << UNW_RSP;
    }
    if (!((nknown >> ra_reg) & 1)) return false; /* undefined return address: the outermost frame */
    uint64_t ra = nregs[ra_reg];
    memcpy(x->regs, nregs, sizeof nregs);
    x->regs[UNW_RA] = ra;
    x->known = nknown | (1u << UNW_RA);
    return true;
}

/* ---- the step cache ----
 * Samples return through the same call sites again and again (a Python program's through the same
 * few dozen places of its eval loop), and working out a row means running the FDE's program from
 * the function's start: thousands of instructions in a large function. So the rows of return
 * addresses met before are kept, when they are ordinary: the CFA is rsp or rbp plus an offset,
 * the return address is saved at CFA + offset, each callee-saved register (rbx, rbp, r12-r15) is
 * unchanged or saved at CFA + offset, every other register unchanged; signal frames, expressions
 * and the rest are worked out each time. A direct-mapped table shared by all threads; an entry is
 * a seqlock of its own: a writer claims it by setting its key to UNW_BUSY (a compare-and-swap, so
 * two writers never mix their fields), writes, then publishes the key. */
#define UNW_CACHE 4096
#define UNW_SAME8 (-128) /* a saved-register offset of UNW_SAME8: the register is unchanged */
#define UNW_BUSY 1       /* an entry's key while it is written (no address looked up is 1) */
typedef struct unw_cached {
    _Atomic uint64_t key; /* the address looked up (pc - 1, or pc after a signal frame); 0: empty,
                             UNW_BUSY: being written */
    _Atomic uint64_t w0;  /* CFA offset (int32), CFA register (bit 32: rbp, else rsp), outermost
                             (bit 33: the return address is undefined), return address offset / 8
                             (int8, bits 40-47), the saved registers of w1 (bits 48-53: bit k for
                             its k-th byte), the least of those offsets / 8 (int8, bits 56-63) */
    _Atomic uint64_t w1;  /* rbx, rbp, r12, r13, r14, r15: offset / 8 (int8 each), or UNW_SAME8 */
} unw_cached;
static unw_cached unw_cache[UNW_CACHE];
static const uint8_t unw_saved_regs[6] = {3, 6, 12, 13, 14, 15};
_Static_assert(UNW_RBP == 6, "the cached step reads rbp as w1's byte 1");

static size_t unw_cache_slot(uintptr_t look) { return (size_t)((look * 0x9e3779b97f4a7c15ull) >> 52) & (UNW_CACHE - 1); }

static bool unw_off8(int64_t off, int8_t *out) {
    if (off & 7 || off / 8 <= UNW_SAME8 || off / 8 > 127) return false;
    *out = (int8_t)(off / 8);
    return true;
}

static void unw_cache_put(uintptr_t look, const unw_row *row, uint32_t ra_reg) {
    bool outermost = row->reg[UNW_RA].how == R_UNDEF; /* _start, a thread's start routine */
    if (row->cfa_expr || (row->cfa_reg != UNW_RSP && row->cfa_reg != UNW_RBP) || row->cfa_off < 0 ||
        row->cfa_off > INT32_MAX || ra_reg != UNW_RA || (row->reg[UNW_RA].how != R_OFFSET && !outermost))
        return;
    int8_t ra8 = 0, saved[6];
    if (!outermost && !unw_off8(row->reg[UNW_RA].v, &ra8)) return;
    for (unsigned r = 0, k = 0; r < UNW_NREG; r++) {
        bool callee = k < 6 && unw_saved_regs[k] == r;
        if (r == UNW_RA) continue;
        if (callee) {
            k++;
            if (row->reg[r].how == R_SAME) saved[k - 1] = UNW_SAME8;
            else if (row->reg[r].how != R_OFFSET || !unw_off8(row->reg[r].v, &saved[k - 1])) return;
        } else if (row->reg[r].how != R_SAME) {
            return;
        }
    }
    uint64_t w0 = (uint32_t)row->cfa_off | (uint64_t)(row->cfa_reg == UNW_RBP) << 32 | (uint64_t)outermost << 33 |
                  (uint64_t)(uint8_t)ra8 << 40;
    uint64_t w1 = 0;
    int8_t least = ra8;
    for (unsigned k = 0; k < 6; k++) {
        w1 |= (uint64_t)(uint8_t)saved[k] << (8 * k);
        if (saved[k] == UNW_SAME8) continue;
        w0 |= (uint64_t)1 << (48 + k);
        if (saved[k] < least) least = saved[k];
    }
    w0 |= (uint64_t)(uint8_t)least << 56;
    unw_cached *e = &unw_cache[unw_cache_slot(look)];
    uint64_t old = atomic_load_explicit(&e->key, memory_order_relaxed);
    if (old == UNW_BUSY || !atomic_compare_exchange_strong_explicit(&e->key, &old, UNW_BUSY, memory_order_relaxed,
                                                                    memory_order_relaxed))
        return; /* another thread is writing it */
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&e->w0, w0, memory_order_relaxed);
    atomic_store_explicit(&e->w1, w1, memory_order_relaxed);
    atomic_store_explicit(&e->key, look, memory_order_release);
}

/* One step from the cached row of look: 1 done, 0 no row cached (or a read failed: the slow
 * path finds out why), -1 the outermost frame. Every offset is at most 127 words above the CFA
 * and at least the entry's least: when all of that is on the stack, the reads need no check each. */
__attribute__((no_sanitize_address)) static int unw_cache_step(unw_ctx *x, uintptr_t look) {
    unw_cached *e = &unw_cache[unw_cache_slot(look)];
    if (atomic_load_explicit(&e->key, memory_order_acquire) != look) return 0;
    uint64_t w0 = atomic_load_explicit(&e->w0, memory_order_relaxed);
    uint64_t w1 = atomic_load_explicit(&e->w1, memory_order_relaxed);
    atomic_thread_fence(memory_order_acquire);
    if (atomic_load_explicit(&e->key, memory_order_relaxed) != look) return 0;
    if ((w0 >> 33) & 1) return -1;
    unsigned base = (w0 >> 32) & 1 ? UNW_RBP : UNW_RSP;
    if (!(x->known & (1u << base))) return 0;
    uint64_t cfa = x->regs[base] + (uint32_t)w0, v;
    if (pa_likely(!(cfa & 7) && cfa + (uint64_t)((int64_t)(int8_t)(w0 >> 56) * 8) >= x->stack_lo &&
                  cfa <= x->stack_hi - 1024 && cfa >= 1024)) {
        const uint64_t *c = (const uint64_t *)cfa;
        uint64_t ra = c[(int8_t)(w0 >> 40)];
        /* Only rbp is read back: the walk needs rsp, rbp and the return address (a cached row's CFA
         * is rsp or rbp plus an offset). The other registers this frame saved become unknown to its
         * caller; a later frame worked out in full that needs one (rare: its CFA or an expression
         * uses it) ends the walk there. */
        unsigned m = (unsigned)(w0 >> 48) & 63; /* bit k: unw_saved_regs[k] is saved: rbx rbp r12-r15 */
        uint32_t known = x->known & ~((m & 1u) << 3 | (m & 0x3cu) << 10);
        if (m & 2) {
            x->regs[UNW_RBP] = c[(int8_t)(w1 >> 8)];
            known |= 1u << UNW_RBP;
        }
        x->regs[UNW_RSP] = cfa;
        x->regs[UNW_RA] = ra;
        x->known = known | (1u << UNW_RSP) | (1u << UNW_RA);
        return 1;
    }
    uint64_t ra;
    if (!unw_read_stack(x, (uintptr_t)(cfa + (uint64_t)(int64_t)(int8_t)(w0 >> 40) * 8), &ra)) return 0;
    uint64_t saved[6];
    uint32_t known = x->known;
    for (unsigned k = 0; k < 6; k++) {
        int8_t off8 = (int8_t)(w1 >> (8 * k));
        unsigned r = unw_saved_regs[k];
        saved[k] = x->regs[r];
        if (off8 == UNW_SAME8) continue;
        if (!unw_read_stack(x, (uintptr_t)(cfa + (uint64_t)((int64_t)off8 * 8)), &v)) return 0;
        saved[k] = v;
        known |= 1u << r;
    }
    for (unsigned k = 0; k < 6; k++) x->regs[unw_saved_regs[k]] = saved[k];
    x->regs[UNW_RSP] = cfa;
    x->regs[UNW_RA] = ra;
    x->known = known | (1u << UNW_RSP) | (1u << UNW_RA);
    return 1;
}

/* ---- the walk ---- */

bool pa_unwind_object(uintptr_t pc, pa_unwind_object_info *o) {
    struct dl_find_object f;
    if (_dl_find_object((void *)(pc - 1), &f) != 0 || !f.dlfo_link_map) return false;
    o->map_start = (uintptr_t)f.dlfo_map_start;
    o->map_end = (uintptr_t)f.dlfo_map_end;
    o->l_addr = f.dlfo_link_map->l_addr;
    o->link_map = f.dlfo_link_map;
    return true;
}

/* The last two objects the walk met: most frames are in the same one as the last. */
typedef struct unw_objs {
    unw_obj o[2];
    unsigned n, last;
} unw_objs;

/* One step worked out in full from look's FDE (the row is then cached, unless it is a signal
 * frame's): 1 done, 0 the walk ends; *signal: the frame was a signal frame. Out of line, so that
 * the walk's loop over cached rows keeps its few variables in registers. */
static __attribute__((noinline)) int unw_full_step(unw_ctx *x, uintptr_t look, unw_objs *objs, bool *signal) {
    unw_obj *o = NULL;
    for (unsigned i = 0; i < objs->n; i++)
        if (look >= objs->o[i].map_start && look < objs->o[i].map_end) o = &objs->o[i];
    if (!o) {
        unsigned slot = objs->n < 2 ? objs->n : (objs->last + 1) % 2;
        o = &objs->o[slot];
        if (!unw_obj_find(look, o)) return 0;
        objs->last = slot;
        if (objs->n < 2) objs->n++;
    }
    x->obj = o;
    unw_cie cie;
    unw_fde fde;
    if (!unw_find_fde(o, look, &cie, &fde)) return 0;
    unw_row initial, row;
    memset(&initial, 0, sizeof initial);
    initial.cfa_reg = UNW_RSP;
    if (!unw_run(o, &cie, cie.insns, cie.insns_end, fde.pc_begin, UINTPTR_MAX, &initial, NULL)) return 0;
    row = initial;
    if (!unw_run(o, &cie, fde.insns, fde.insns_end, fde.pc_begin, look, &row, &initial)) return 0;
    const uint8_t *seg_end = (const uint8_t *)unw_obj_seg_end(o, (uintptr_t)fde.insns);
    *signal = cie.signal;
    if (!cie.signal) unw_cache_put(look, &row, cie.ra_reg);
    return unw_step(x, &row, cie.ra_reg, seg_end) ? 1 : 0;
}

size_t pa_unwind(uintptr_t *out, size_t max, uintptr_t keep_from) {
    unw_ctx x;
    x.obj = NULL;
    pa_unwind_regs(x.regs); /* the caller-saved ones are not known: never read */
    x.known = UNW_CAPTURED;
    uintptr_t hi;
    if (!unw_stack_bounds(x.regs[UNW_RSP], &hi)) return 0;
    x.stack_lo = x.regs[UNW_RSP];
    x.stack_hi = hi;
    unw_objs objs;
    objs.n = objs.last = 0;
    size_t n = 0, skip = 0;
    bool exact = false, kept = false;
    uint64_t prev_cfa = 0;
    while (n < max) {
        uintptr_t pc = x.regs[UNW_RA];
        if (pc == 0) break;
        uintptr_t look = exact ? pc : pc - 1; /* a return address may be past the end of its function */
        if (pc == keep_from && !kept) skip = n, kept = true;
        out[n++] = pc;
        bool signal = false;
        int cached = unw_cache_step(&x, look);
        if (cached < 0) break;
        if (cached == 0 && !unw_full_step(&x, look, &objs, &signal)) break;
        uint64_t cfa = x.regs[UNW_RSP];
        /* Frames are ever further up the stack; a signal frame may switch stacks, and ends the
         * walk if it leaves this one. */
        if (!signal && cfa <= prev_cfa) break;
        if (cfa < x.stack_lo || cfa > x.stack_hi) break;
        prev_cfa = cfa;
        exact = signal; /* the frame a signal interrupted resumes at its pc exactly */
    }
    /* The allocator's own frames are not the program's: every frame before the one the sampler
     * returns to (keep_from: in malloc, calloc, ..., or in the program itself when malloc jumped
     * to the sampler), and, when the library is a shared object of its own, the frames in it
     * after that (malloc's own, realloc's around its helper). */
    if (unw_self_shared)
        while (skip < n && out[skip] - 1 >= unw_self_lo && out[skip] - 1 < unw_self_hi) skip++;
    memmove(out, out + skip, (n - skip) * sizeof *out);
    return n - skip;
}
