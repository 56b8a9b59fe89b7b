/* SPDX-License-Identifier: MIT
 * White-box tests of src/background.c: which return addresses count as the program's. A free may
 * start the background thread only when it returns into the program, never into libc or ld.so
 * (glibc frees with its own locks held; pthread_create would deadlock on them). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static void program_function(void) {}

static void test_program_addresses_are_the_programs(void **state) {
    (void)state;
    assert_true(pa_bg_caller_is_program((const void *)program_function));
    assert_true(pa_bg_caller_is_program((const void *)test_program_addresses_are_the_programs));
}

static void test_libc_and_ldso_are_not(void **state) {
    (void)state;
    /* libc's own functions, as libc itself defines them (a sanitizer may wrap the program's view) */
    void *libc = dlopen("libc.so.6", RTLD_LAZY | RTLD_NOLOAD);
    assert_non_null(libc);
    assert_false(pa_bg_caller_is_program(dlsym(libc, "qsort")));
    assert_false(pa_bg_caller_is_program(dlsym(libc, "fclose")));
    dlclose(libc);
    void *ldso = dlsym(RTLD_DEFAULT, "_dl_find_object"); /* it lives in ld.so */
    assert_non_null(ldso);
    assert_false(pa_bg_caller_is_program(ldso));
    assert_false(pa_bg_caller_is_program(NULL));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_program_addresses_are_the_programs),
        cmocka_unit_test(test_libc_and_ldso_are_not),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
