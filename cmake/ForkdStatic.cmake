# forkd_link_static(<executable> <our static library>...): links <executable>
# fully static (glibc, libstdc++, absl, protobuf-lite, libcrypto archives).
#
# Why: forkd-vmm runs once per fork and the guest agent runs as /init. A
# dynamic forkd-vmm loads ~30 shared objects (mostly absl) at every exec,
# which cost ~5 ms per spawn here (bench/vmm_spawn_bench measures it) and
# leaves relocated pages private to every fork process.
#
# Imported absl/protobuf/OpenSSL targets name shared objects, so the link
# names the archives directly (Debian's libabsl-dev, libprotobuf-dev and
# libssl-dev ship them); the libraries given are linked by their archive
# files, in one group with the third-party archives (absl's archives depend
# on each other in cycles). FORKD_STATIC_OK tells whether the archives exist.
get_target_property(_forkd_absl_so absl::base IMPORTED_LOCATION_NONE)
get_filename_component(_forkd_absl_libdir "${_forkd_absl_so}" DIRECTORY)
file(GLOB FORKD_ABSL_ARCHIVES "${_forkd_absl_libdir}/libabsl_*.a")
find_library(FORKD_PROTOBUF_LITE_ARCHIVE NAMES libprotobuf-lite.a)
find_library(FORKD_CRYPTO_ARCHIVE NAMES libcrypto.a)
# FORKD_STATIC=OFF links forkd-vmm dynamically and leaves the guest agent out:
# the sanitizer build (scripts/sanitize) needs it, as ASan cannot be linked
# into a static executable.
option(FORKD_STATIC "Link forkd-vmm and the guest agent statically" ON)
if(NOT FORKD_STATIC)
  set(FORKD_STATIC_OK OFF)
elseif(FORKD_ABSL_ARCHIVES AND FORKD_PROTOBUF_LITE_ARCHIVE AND FORKD_CRYPTO_ARCHIVE)
  set(FORKD_STATIC_OK ON)
else()
  set(FORKD_STATIC_OK OFF)
  message(WARNING "static absl, protobuf-lite or libcrypto archives not found (libabsl-dev, "
                  "libprotobuf-dev, libssl-dev): forkd-vmm links dynamically and the guest "
                  "agent is not built")
endif()

function(forkd_link_static target)
  set(_files)
  foreach(_lib IN LISTS ARGN)
    list(APPEND _files $<TARGET_FILE:${_lib}>)
    add_dependencies(${target} ${_lib})
  endforeach()
  target_include_directories(${target} PRIVATE ${PROJECT_SOURCE_DIR})
  target_include_directories(${target} SYSTEM PRIVATE ${PROJECT_BINARY_DIR})
  target_link_options(${target} PRIVATE -static)
  target_link_libraries(${target} PRIVATE
    -Wl,--start-group ${_files} ${FORKD_PROTOBUF_LITE_ARCHIVE} ${FORKD_ABSL_ARCHIVES}
    ${FORKD_CRYPTO_ARCHIVE} -Wl,--end-group -pthread)
endfunction()
