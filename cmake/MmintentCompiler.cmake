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
  add_compile_options(-fsanitize=address,undefined -fno-sanitize-recover=all
                      -fno-omit-frame-pointer -g1)
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
endfunction()
