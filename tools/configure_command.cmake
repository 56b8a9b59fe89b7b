# SPDX-License-Identifier: MIT
# Writes a configured copy of the pyalloc command (tools/pyalloc): its @PYALLOC_CFG_*@ values filled
# in, its #! line replaced by PA_SHEBANG if set, executable. Used at configure time for the build-tree
# copy (include()) and at install time for the installed one (install(CODE) -> include()), so that
# the installed copy knows the prefix it is actually installed to (cmake --install --prefix, cpack).
#   in: PA_IN (tools/pyalloc), PA_OUT (the file to write), PA_SHEBANG (optional), PYALLOC_CFG_*
file(READ "${PA_IN}" _pa_text)
if(PA_SHEBANG)
  string(REGEX REPLACE "^#![^\n]*" "#!${PA_SHEBANG}" _pa_text "${_pa_text}")
endif()
string(CONFIGURE "${_pa_text}" _pa_text @ONLY)
if(_pa_text MATCHES "@PYALLOC_CFG_[A-Z_]*@")
  message(FATAL_ERROR "configure_command.cmake: ${PA_OUT} still has ${CMAKE_MATCH_0}")
endif()
get_filename_component(_pa_dir "${PA_OUT}" DIRECTORY)
get_filename_component(_pa_name "${PA_OUT}" NAME)
set(_pa_tmp "${_pa_dir}/.pyalloc-configure")
file(MAKE_DIRECTORY "${_pa_tmp}")
file(WRITE "${_pa_tmp}/${_pa_name}" "${_pa_text}")
# file(COPY) sets the permissions (file(CHMOD) needs CMake 3.19); it skips a file whose timestamp
# matches, so the old copy goes first.
file(REMOVE "${PA_OUT}")
file(COPY "${_pa_tmp}/${_pa_name}" DESTINATION "${_pa_dir}"
     FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
file(REMOVE_RECURSE "${_pa_tmp}")
