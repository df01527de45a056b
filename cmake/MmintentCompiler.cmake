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
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer)
  add_link_options(-fsanitize=address,undefined)
endif()

# Precompiled LibTorch header, made once and reused by every LibTorch-heavy target.
function(mmintent_use_torch_pch target)
  if(NOT MMINTENT_USE_PCH)
    return()
  endif()
  if(NOT TARGET mmintent_pch)
    add_library(mmintent_pch STATIC ${PROJECT_SOURCE_DIR}/cmake/pch.cpp)
    target_link_libraries(mmintent_pch PRIVATE torch)
    target_precompile_headers(mmintent_pch PRIVATE <torch/torch.h>)
  endif()
  target_precompile_headers(${target} REUSE_FROM mmintent_pch)
endfunction()
