# --- The full library: config, data, reports, inference. Adds OpenCV, yaml-cpp, spdlog and
# nlohmann-json; sentencepiece lives in its own shared object loaded with dlmopen (see
# src/spm_shim/spm_shim.cpp for why).
# The sentencepiece shim: a plain C ABI, never linked into a program that links LibTorch.
add_library(mmintent_spm MODULE spm_shim/spm_shim.cpp)
target_link_libraries(mmintent_spm PRIVATE PkgConfig::SENTENCEPIECE sentencepiece_train)
set_target_properties(mmintent_spm PROPERTIES PREFIX "lib" OUTPUT_NAME mmintent_spm)
# A sanitized module cannot be loaded with dlmopen (ASan must come first in the process), so
# the shim is always built without sanitizers; it runs in its own link namespace anyway.
if(MMINTENT_SANITIZE)
  set_property(TARGET mmintent_spm PROPERTY COMPILE_OPTIONS "")
  set_property(TARGET mmintent_spm PROPERTY LINK_OPTIONS "")
endif()

# The gzip IDX reader (Fashion-MNIST), shared by the importer in libmmintent and by
# mmintent_make_demo, which must build without LibTorch: so it is its own zlib-only library.
add_library(mmintent_idx STATIC data/idx.cpp)
target_include_directories(mmintent_idx PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(mmintent_idx PRIVATE ZLIB::ZLIB mmintent_warnings)
set_target_properties(mmintent_idx PROPERTIES POSITION_INDEPENDENT_CODE ON)  # linked into a .so

add_library(mmintent SHARED
  config/config.cpp
  config/loader.cpp
  data/manifest.cpp
  data/label_map.cpp
  data/image.cpp
  data/audio.cpp
  data/audio_features.cpp
  data/tokenizer.cpp
  data/dataset.cpp
  data/modality.cpp
  data/modalities/text.cpp
  data/modalities/image.cpp
  data/modalities/audio.cpp
  data/loader.cpp
  data/importers/common.cpp
  data/importers/parsed_json.cpp
  data/importers/clinc150.cpp
  data/importers/snips.cpp
  data/importers/espeak.cpp
  data/importers/spoken_snips.cpp
  data/importers/fashion_mnist.cpp
  data/feedback.cpp
  data/lines.cpp
  data/text_noise.cpp
  evaluation/report.cpp
  evaluation/plots.cpp
  evaluation/calibration.cpp
  evaluation/off_policy.cpp
  policy/decision.cpp
  policy/rewrite.cpp
  run/run_parts.cpp
  run/serving.cpp
  run/setup.cpp
  run/plugins.cpp
  inference/predictor.cpp
  app/logging.cpp
  app/train_run.cpp
  app/evaluate_run.cpp
  app/run_report.cpp
  app/export.cpp
  app/tune.cpp
  app/ensemble.cpp
  app/quantize.cpp
)
add_library(mmintent::mmintent ALIAS mmintent)
target_include_directories(mmintent PUBLIC
  $<BUILD_INTERFACE:${PROJECT_SOURCE_DIR}/include>
  $<INSTALL_INTERFACE:${CMAKE_INSTALL_INCLUDEDIR}>)
# The internal headers (src/data/idx.h, ...) are included as "data/...".
target_include_directories(mmintent PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(mmintent
  PUBLIC mmintent_core
  PRIVATE ${OpenCV_LIBS} PkgConfig::SNDFILE PkgConfig::FFTW3F PkgConfig::ESPEAK yaml-cpp spdlog::spdlog nlohmann_json::nlohmann_json
          Threads::Threads ${CMAKE_DL_LIBS} mmintent_idx mmintent_warnings)
# Where to look for the shim besides the directory of libmmintent.so itself.
target_compile_definitions(mmintent PRIVATE
  MMINTENT_SPM_BUILD_DIR="${CMAKE_LIBRARY_OUTPUT_DIRECTORY}"
  MMINTENT_SPM_INSTALL_DIR="${CMAKE_INSTALL_FULL_LIBDIR}"
  # `mmintent export --format onnx|torchscript` runs this script: the copy installed beside
  # the library, else the source tree's (a build tree), else this install location.
  MMINTENT_EXPORT_SCRIPT_INSTALLED="${CMAKE_INSTALL_FULL_DATADIR}/mmintent/mmintent_export.py"
  MMINTENT_EXPORT_SCRIPT_SOURCE="${PROJECT_SOURCE_DIR}/tools/export/mmintent_export.py")
add_dependencies(mmintent mmintent_spm)
mmintent_use_torch_pch(mmintent)

# The HTTP server (serve/, `mmintent serve`): cpp-httplib and OpenSSL, kept out of libmmintent
# so that applications linking the library do not need them. Not installed yet.
# The web page at `/`, served from the binary: src/serve/web/* as string constants.
set(MMINTENT_WEB_FILES ${CMAKE_CURRENT_SOURCE_DIR}/serve/web/index.html ${CMAKE_CURRENT_SOURCE_DIR}/serve/web/app.js)
set(MMINTENT_WEB_CPP ${CMAKE_CURRENT_BINARY_DIR}/generated/serve_web_files.cpp)
list(JOIN MMINTENT_WEB_FILES "|" MMINTENT_WEB_FILES_ARG)
add_custom_command(OUTPUT ${MMINTENT_WEB_CPP}
  COMMAND ${CMAKE_COMMAND} -DOUTPUT=${MMINTENT_WEB_CPP} -DNAMESPACE=mmintent::serve::web
          "-DNAMES=kIndexHtml|kAppJs" "-DFILES=${MMINTENT_WEB_FILES_ARG}"
          -P ${PROJECT_SOURCE_DIR}/cmake/EmbedFiles.cmake
  DEPENDS ${MMINTENT_WEB_FILES} ${PROJECT_SOURCE_DIR}/cmake/EmbedFiles.cmake
  COMMENT "Embedding the web page of mmintent serve"
  VERBATIM)

add_library(mmintent_serve STATIC
  ${MMINTENT_WEB_CPP}
  serve/auth.cpp
  serve/metrics.cpp
  serve/batcher.cpp
  serve/feedback_log.cpp
  serve/request.cpp
  serve/server.cpp)
target_include_directories(mmintent_serve PRIVATE ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(mmintent_serve
  PUBLIC mmintent
  PRIVATE PkgConfig::HTTPLIB OpenSSL::SSL OpenSSL::Crypto nlohmann_json::nlohmann_json Threads::Threads
          mmintent_warnings)
set_target_properties(mmintent_serve PROPERTIES POSITION_INDEPENDENT_CODE ON)
mmintent_use_torch_pch(mmintent_serve)

add_executable(mmintent_cli
  cli/main.cpp
  cli/commands/train.cpp
  cli/commands/ensemble.cpp
  cli/commands/quantize.cpp
  cli/commands/config.cpp
  cli/commands/eval.cpp
  cli/commands/predict.cpp
  cli/commands/calibrate.cpp
  cli/commands/tune.cpp
  cli/commands/merge.cpp
  cli/commands/import.cpp
  cli/commands/serve.cpp
  cli/commands/export.cpp)
target_include_directories(mmintent_cli PRIVATE cli)
target_link_libraries(mmintent_cli PRIVATE mmintent mmintent_serve CLI11::CLI11 nlohmann_json::nlohmann_json
  mmintent_warnings)
set_target_properties(mmintent_cli PROPERTIES OUTPUT_NAME mmintent)
target_compile_definitions(mmintent_cli PRIVATE MMINTENT_VERSION="${PROJECT_VERSION}")
target_link_libraries(mmintent_cli PRIVATE ${CMAKE_DL_LIBS})

# Generates the demo data set from Debian's Fashion-MNIST (no LibTorch needed).
set(mmintent_make_demo_dir ${PROJECT_SOURCE_DIR}/tools/make_demo)
add_executable(mmintent_make_demo ${mmintent_make_demo_dir}/main.cpp
  ${mmintent_make_demo_dir}/messages.cpp ${mmintent_make_demo_dir}/splits.cpp
  ${mmintent_make_demo_dir}/output.cpp)
# include/ for mmintent/core/seed.h (splitmix64 is defined in the header), src/ for data/idx.h.
target_include_directories(mmintent_make_demo PRIVATE ${PROJECT_SOURCE_DIR}/include
  ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(mmintent_make_demo PRIVATE ${OpenCV_LIBS} mmintent_idx mmintent_warnings)

# --- Installation and the CMake package: find_package(mmintent CONFIG) gives mmintent::mmintent
# (and mmintent::core, the LibTorch-only part). See examples/app and scripts/check_example.sh.
include(CMakePackageConfigHelpers)
# The public headers use C++17 (std::optional, ...): consumers get the standard with the target.
target_compile_features(mmintent_core PUBLIC cxx_std_17)
# Installed name = build-tree alias: mmintent::core.
set_target_properties(mmintent_core PROPERTIES EXPORT_NAME core)
# The libraries find each other, and libmmintent.so finds libmmintent_spm.so (by dladdr), in
# their own folder; the programs look in ../lib. System libraries (LibTorch, OpenCV, ...) need
# no RPATH.
set_target_properties(mmintent_core mmintent PROPERTIES
  INSTALL_RPATH "$ORIGIN" BUILD_WITH_INSTALL_RPATH OFF)
set_target_properties(mmintent_cli PROPERTIES INSTALL_RPATH "$ORIGIN/../${CMAKE_INSTALL_LIBDIR}")
mmintent_use_blas(mmintent_cli)  # after INSTALL_RPATH: it appends (cmake/MmintentBlas.cmake)
# mmintent_warnings is not exported: both libraries link it PRIVATE, so consumers never see it
# (an exported copy would only offer them the project's warning flags).
install(TARGETS mmintent_core mmintent EXPORT mmintentTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
# The sentencepiece shim must sit next to libmmintent.so (see src/data/tokenizer.cpp).
install(TARGETS mmintent_spm LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR})
# The CLI, and the demo data generator so an installed copy can run the README demo.
install(TARGETS mmintent_cli mmintent_make_demo RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
install(PROGRAMS ${PROJECT_SOURCE_DIR}/tools/export/mmintent_export.py DESTINATION ${CMAKE_INSTALL_DATADIR}/mmintent)
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/mmintent DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
  PATTERN serve EXCLUDE)  # mmintent_serve is not installed
install(EXPORT mmintentTargets NAMESPACE mmintent::
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/mmintent)
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/mmintentConfig.cmake.in
  ${CMAKE_BINARY_DIR}/mmintentConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/mmintent)
write_basic_package_version_file(${CMAKE_BINARY_DIR}/mmintentConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_BINARY_DIR}/mmintentConfig.cmake ${CMAKE_BINARY_DIR}/mmintentConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/mmintent)
