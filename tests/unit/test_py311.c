/* SPDX-License-Identifier: MIT
 * src/pyframes.h's CPython 3.11 layout against CPython's own headers (python3.11-dev, internal ones
 * included): every offset pyframes.c reads the interpreter's memory at, and the bits of a str's
 * state word. A mismatch names the field. */
#define Py_BUILD_CORE 1
#include <Python.h>
#include <internal/pycore_frame.h>
#include <internal/pycore_runtime.h>

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <string.h>

#include "pyframes.h"

#define SAME(ours, type, field)                                                                        \
    do {                                                                                               \
        if ((size_t)(ours) != offsetof(type, field))                                                  \
            fail_msg("%s is %zu in pyframes.h, offsetof(%s, %s) is %zu", #ours, (size_t)(ours), #type, \
                     #field, offsetof(type, field));                                                   \
    } while (0)

static void test_version(void **state) {
    (void)state;
    assert_int_equal(PY_VERSION_HEX >> 16, PA_PY_SUPPORTED);
}

static void test_offsets(void **state) {
    (void)state;
    SAME(PA_PY311_RT_FINALIZING, _PyRuntimeState, _finalizing);
    SAME(PA_PY311_RT_TSS, _PyRuntimeState, gilstate.autoTSSkey);
    SAME(PA_PY311_TSS_KEY, Py_tss_t, _key);
    assert_int_equal(sizeof(((Py_tss_t *)0)->_key), 4);
    SAME(PA_PY311_TS_CFRAME, PyThreadState, cframe);
    SAME(PA_PY311_CF_CURRENT, _PyCFrame, current_frame);
    SAME(PA_PY311_FR_CODE, _PyInterpreterFrame, f_code);
    SAME(PA_PY311_FR_PREVIOUS, _PyInterpreterFrame, previous);
    SAME(PA_PY311_FR_PREV_INSTR, _PyInterpreterFrame, prev_instr);
    SAME(PA_PY311_FR_IS_ENTRY, _PyInterpreterFrame, is_entry);
    SAME(PA_PY311_FR_OWNER, _PyInterpreterFrame, owner);
    assert_int_equal(PA_PY311_OWNED_BY_GENERATOR, FRAME_OWNED_BY_GENERATOR);
    assert_int_equal(sizeof(_Py_CODEUNIT), 2);
    SAME(PA_PY311_CO_FIRSTLINENO, PyCodeObject, co_firstlineno);
    SAME(PA_PY311_CO_FILENAME, PyCodeObject, co_filename);
    SAME(PA_PY311_CO_QUALNAME, PyCodeObject, co_qualname);
    SAME(PA_PY311_CO_LINETABLE, PyCodeObject, co_linetable);
    SAME(PA_PY311_CO_FIRSTTRACEABLE, PyCodeObject, _co_firsttraceable);
    SAME(PA_PY311_CO_CODE, PyCodeObject, co_code_adaptive);
    SAME(PA_PY_OB_TYPE, PyObject, ob_type);
    SAME(PA_PY_OB_SIZE, PyVarObject, ob_size);
    SAME(PA_PY311_BYTES_SVAL, PyBytesObject, ob_sval);
    SAME(PA_PY311_STR_LENGTH, PyASCIIObject, length);
    SAME(PA_PY311_STR_STATE, PyASCIIObject, state);
    SAME(PA_PY311_STR_UTF8_LENGTH, PyCompactUnicodeObject, utf8_length);
    SAME(PA_PY311_STR_UTF8, PyCompactUnicodeObject, utf8);
    assert_int_equal(PA_PY311_STR_ASCII_DATA, sizeof(PyASCIIObject));
    assert_int_equal(PA_PY311_STR_DATA, sizeof(PyCompactUnicodeObject));
}

/* pyframes.c reads the state word as interned:2 kind:3 compact:1 ascii:1 ready:1 from bit 0. */
static void test_str_state_bits(void **state) {
    (void)state;
    PyASCIIObject o;
    uint32_t word;
    memset(&o, 0, sizeof o);
    o.state.kind = 4;
    memcpy(&word, (char *)&o + PA_PY311_STR_STATE, 4);
    assert_int_equal((word >> 2) & 7, 4);
    memset(&o, 0, sizeof o);
    o.state.compact = 1;
    memcpy(&word, (char *)&o + PA_PY311_STR_STATE, 4);
    assert_int_equal(word, 1u << 5);
    memset(&o, 0, sizeof o);
    o.state.ascii = 1;
    memcpy(&word, (char *)&o + PA_PY311_STR_STATE, 4);
    assert_int_equal(word, 1u << 6);
    memset(&o, 0, sizeof o);
    o.state.ready = 1;
    memcpy(&word, (char *)&o + PA_PY311_STR_STATE, 4);
    assert_int_equal(word, 1u << 7);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_version),
        cmocka_unit_test(test_offsets),
        cmocka_unit_test(test_str_state_bits),
    };
    return cmocka_run_group_tests_name("CPython 3.11 layout", tests, NULL, NULL);
}
