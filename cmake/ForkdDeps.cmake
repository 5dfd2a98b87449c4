# Every dependency comes from a Debian package (see .ci/run for the list).
find_package(PkgConfig REQUIRED)
pkg_check_modules(NFTNL REQUIRED IMPORTED_TARGET libnftnl)
pkg_check_modules(MNL REQUIRED IMPORTED_TARGET libmnl)
pkg_check_modules(NL3 REQUIRED IMPORTED_TARGET libnl-3.0 libnl-route-3.0)
pkg_check_modules(LDNS REQUIRED IMPORTED_TARGET ldns)
find_package(absl REQUIRED)
find_package(GTest REQUIRED)
find_package(Threads REQUIRED)
if(FORKD_BUILD_BENCH)
  find_package(benchmark REQUIRED)
endif()
# The daemon (forkd/daemon, forkd/api, forkd/forkctl): gRPC + protobuf (full
# runtime, for server reflection), spdlog, prometheus-cpp, libsystemd
# (sd_notify), CLI11, nlohmann-json (the journal).
find_package(gRPC CONFIG REQUIRED)
find_package(spdlog REQUIRED)
find_package(prometheus-cpp CONFIG REQUIRED)
find_package(nlohmann_json REQUIRED)
find_package(CLI11 CONFIG REQUIRED)
pkg_check_modules(SYSTEMD REQUIRED IMPORTED_TARGET libsystemd)
