# Compiler settings shared by every target of the project.
find_program(MMINTENT_CCACHE ccache)
if(MMINTENT_CCACHE AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  # PCH and ccache: ccache needs these sloppiness settings to cache PCH users.
  set(CMAKE_CXX_COMPILER_LAUNCHER ${CMAKE_COMMAND} -E env
      "CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime"
      ${MMINTENT_CCACHE})
endif()

add_library(mmintent_warnings INTERFACE)
target_compile_options(mmintent_warnings INTERFACE
  $<$<CXX_COMPILER_ID:GNU,Clang>:-Wall -Wextra -Wno-unused-parameter>)

if(MMINTENT_SANITIZE)
  # UBSan halts on the first error (a report is a failure, not a warning); -g1 gives the
  # reports file:line. scripts/sanitize.sh builds and runs the test suite this way.
  # -O1 (after the build type's -O3, so it wins), as the sanitizers' documentation advises:
  # it compiles a third faster than -O3 with the instrumentation, and the tests' heavy
  # arithmetic runs in LibTorch, which is not instrumented.
  add_compile_options(-fsanitize=address,undefined -fno-sanitize-recover=all
                      -fno-omit-frame-pointer -g1 -O1)
  add_link_options(-fsanitize=address,undefined -fno-sanitize-recover=all)
endif()

# Precompiled LibTorch header, made once per kind of target and reused by every LibTorch-heavy
# target: shared libraries compile with -fPIC, executables with -fPIE, and GCC refuses a PCH
# made with the other flag, so each kind has its own anchor.
function(mmintent_use_torch_pch target)
  if(NOT MMINTENT_USE_PCH)
    return()
  endif()
  get_target_property(kind ${target} TYPE)
  if(kind STREQUAL "EXECUTABLE")
    set(anchor mmintent_pch_exe)
    if(NOT TARGET ${anchor})
      add_executable(${anchor} ${PROJECT_SOURCE_DIR}/cmake/pch_main.cpp)
      target_link_libraries(${anchor} PRIVATE torch)
      target_precompile_headers(${anchor} PRIVATE <torch/torch.h>)
    endif()
  else()
    set(anchor mmintent_pch)
    if(NOT TARGET ${anchor})
      add_library(${anchor} STATIC ${PROJECT_SOURCE_DIR}/cmake/pch.cpp)
      target_link_libraries(${anchor} PRIVATE torch)
      target_precompile_headers(${anchor} PRIVATE <torch/torch.h>)
    endif()
  endif()
  target_precompile_headers(${target} REUSE_FROM ${anchor})
  # The PCH only pays where a file needs LibTorch: a file that does not costs about 12 s more
  # with it (GCC reads the whole PCH) than without. Such files skip it.
  get_target_property(sources ${target} SOURCES)
  get_target_property(source_dir ${target} SOURCE_DIR)
  foreach(source IN LISTS sources)
    if(NOT source MATCHES "\\.(cpp|cc|cxx)$")
      continue()
    endif()
    get_filename_component(path "${source}" ABSOLUTE BASE_DIR "${source_dir}")
    _mmintent_uses_torch("${path}" uses)
    if(NOT uses)
      set_source_files_properties("${source}" TARGET_DIRECTORY ${target}
                                  PROPERTIES SKIP_PRECOMPILE_HEADERS ON)
    endif()
  endforeach()
endfunction()

# Sets OUT to TRUE when FILE includes a LibTorch header, directly or through the project's own
# headers (include/ and src/, or next to the file). Results are kept for the whole configure.
# A file that does not exist yet (a generated one) counts as not using LibTorch.
function(_mmintent_uses_torch file out)
  get_property(known GLOBAL PROPERTY "_mmintent_torch:${file}" SET)
  if(known)
    get_property(value GLOBAL PROPERTY "_mmintent_torch:${file}")
    set(${out} ${value} PARENT_SCOPE)
    return()
  endif()
  set_property(GLOBAL PROPERTY "_mmintent_torch:${file}" FALSE)  # cuts include cycles
  set(value FALSE)
  if(EXISTS "${file}")
    file(STRINGS "${file}" includes REGEX "^[ \t]*#[ \t]*include[ \t]*[<\"]")
    get_filename_component(dir "${file}" DIRECTORY)
    foreach(line IN LISTS includes)
      string(REGEX REPLACE "^[ \t]*#[ \t]*include[ \t]*[<\"]([^>\"]+)[>\"].*" "\\1" name "${line}")
      if(name MATCHES "^(torch|ATen|c10)/")
        set(value TRUE)
        break()
      endif()
      foreach(base "${dir}" "${PROJECT_SOURCE_DIR}/include" "${PROJECT_SOURCE_DIR}/src")
        if(EXISTS "${base}/${name}" AND NOT IS_DIRECTORY "${base}/${name}")
          _mmintent_uses_torch("${base}/${name}" nested)
          if(nested)
            set(value TRUE)
          endif()
          break()
        endif()
      endforeach()
      if(value)
        break()
      endif()
    endforeach()
  endif()
  set_property(GLOBAL PROPERTY "_mmintent_torch:${file}" ${value})
  set(${out} ${value} PARENT_SCOPE)
endfunction()
