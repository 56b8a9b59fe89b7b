/* SPDX-License-Identifier: MIT
 * The layout of the CPython 3.11 structures pyframes.c reads (offsets in bytes, x86-64), from
 * CPython's own headers (Include/internal/pycore_runtime.h, pycore_frame.h, Include/cpython/code.h,
 * unicodeobject.h, bytesobject.h of 3.11). tests/unit/test_py311.c compiles against python3.11-dev's
 * headers and checks every value here against offsetof() there. Included by pyframes.c only. */
#ifndef PA_PYFRAMES_H
#define PA_PYFRAMES_H

#define PA_PY_SUPPORTED 0x030B /* Py_Version >> 16: the one version whose layout is known: 3.11 */

/* _PyRuntimeState (the _PyRuntime symbol) */
#define PA_PY311_RT_FINALIZING 24  /* _finalizing: the thread state finalizing the runtime, or NULL */
#define PA_PY311_RT_TSS 592        /* gilstate.autoTSSkey: Py_tss_t {int _is_initialized; pthread_key_t _key} */
#define PA_PY311_TSS_KEY 4         /* ... _key within it */
/* PyThreadState, _PyCFrame */
#define PA_PY311_TS_CFRAME 56      /* PyThreadState.cframe */
#define PA_PY311_CF_CURRENT 8      /* _PyCFrame.current_frame */
/* _PyInterpreterFrame */
#define PA_PY311_FR_CODE 32        /* f_code */
#define PA_PY311_FR_PREVIOUS 48    /* previous */
#define PA_PY311_FR_PREV_INSTR 56  /* prev_instr (_Py_CODEUNIT *, 2 bytes each) */
#define PA_PY311_FR_IS_ENTRY 68    /* is_entry (bool): first frame of its _PyEval_EvalFrameDefault call */
#define PA_PY311_FR_OWNER 69       /* owner (char): 1 FRAME_OWNED_BY_GENERATOR */
#define PA_PY311_OWNED_BY_GENERATOR 1
/* PyCodeObject */
#define PA_PY311_CO_FIRSTLINENO 72 /* co_firstlineno (int) */
#define PA_PY311_CO_FILENAME 112   /* co_filename (str) */
#define PA_PY311_CO_QUALNAME 128   /* co_qualname (str) */
#define PA_PY311_CO_LINETABLE 136  /* co_linetable (bytes) */
#define PA_PY311_CO_FIRSTTRACEABLE 168 /* _co_firsttraceable (int) */
#define PA_PY311_CO_CODE 184       /* co_code_adaptive: the instructions */
/* objects */
#define PA_PY_OB_TYPE 8            /* PyObject.ob_type */
#define PA_PY_OB_SIZE 16           /* PyVarObject.ob_size */
#define PA_PY311_BYTES_SVAL 32     /* PyBytesObject.ob_sval */
#define PA_PY311_STR_LENGTH 16     /* PyASCIIObject.length (code points) */
#define PA_PY311_STR_STATE 32      /* PyASCIIObject.state: interned:2 kind:3 compact:1 ascii:1 ready:1 */
#define PA_PY311_STR_ASCII_DATA 48 /* sizeof(PyASCIIObject): a compact ASCII string's characters */
#define PA_PY311_STR_UTF8_LENGTH 48 /* PyCompactUnicodeObject.utf8_length */
#define PA_PY311_STR_UTF8 56       /* PyCompactUnicodeObject.utf8 (char *, NULL until asked for) */
#define PA_PY311_STR_DATA 72       /* sizeof(PyCompactUnicodeObject): other compact strings' data */

#endif /* PA_PYFRAMES_H */
