# Which BLAS mmintent's own programs use, without touching the system's choice.
#
# Debian's LibTorch calls whatever libblas.so.3 the loader finds. The system's pick (the
# alternatives system) is often the reference BLAS, about 20 times slower than BLIS for
# LibTorch's matrix products (docs/ARCHITECTURE.md, "Platform notes"). Rather than change it for
# every program on the machine, mmintent's executables carry BLIS's folder in an old-style
# DT_RPATH: unlike DT_RUNPATH, the loader also uses it for the libraries' own dependencies
# (libtorch_cpu.so's libblas.so.3). Other programs keep the system's BLAS.
#
#   MMINTENT_BLAS_DIR  a folder holding libblas.so.3 (default: Debian's BLIS, OpenMP build,
#                      where installed); empty: the system's libblas.so.3
set(_mmintent_blis_dirs)
foreach(variant blis-openmp blis-pthread)
  foreach(libdir "/usr/lib/${CMAKE_LIBRARY_ARCHITECTURE}" /usr/lib64 /usr/lib)
    list(APPEND _mmintent_blis_dirs "${libdir}/${variant}")
  endforeach()
endforeach()
set(_mmintent_blas_default "")
foreach(dir IN LISTS _mmintent_blis_dirs)
  if(EXISTS "${dir}/libblas.so.3")
    set(_mmintent_blas_default "${dir}")
    break()
  endif()
endforeach()
set(MMINTENT_BLAS_DIR "${_mmintent_blas_default}" CACHE PATH
    "Folder with the libblas.so.3 that mmintent's programs load (empty: the system's)")
if(MMINTENT_BLAS_DIR AND NOT EXISTS "${MMINTENT_BLAS_DIR}/libblas.so.3")
  message(FATAL_ERROR "MMINTENT_BLAS_DIR=${MMINTENT_BLAS_DIR} has no libblas.so.3")
endif()
if(MMINTENT_BLAS_DIR)
  message(STATUS "mmintent: programs load libblas.so.3 from ${MMINTENT_BLAS_DIR}")
else()
  message(STATUS "mmintent: no BLIS found (Debian: libblis4-openmp): programs use the system's "
                 "libblas.so.3, which may be the slow reference BLAS")
endif()

# Gives an executable MMINTENT_BLAS_DIR as a DT_RPATH entry, in the build tree and installed.
function(mmintent_use_blas target)
  if(NOT MMINTENT_BLAS_DIR OR NOT CMAKE_SYSTEM_NAME STREQUAL "Linux")
    return()
  endif()
  target_link_options(${target} PRIVATE LINKER:--disable-new-dtags)
  set_property(TARGET ${target} APPEND PROPERTY BUILD_RPATH "${MMINTENT_BLAS_DIR}")
  set_property(TARGET ${target} APPEND PROPERTY INSTALL_RPATH "${MMINTENT_BLAS_DIR}")
endfunction()
