# forkd_test(NAME <name> LABEL <unit|netns|kvm|linux> SOURCES ... [LIBS ...])
#
# Every tier is one ctest label, so `ctest -L unit` selects the pure tests and
# `ctest -L netns` the privileged ones. A test that cannot run here (no root,
# no /dev/kvm, no hardware virtualization) exits 77 after printing why; ctest
# reports it as skipped, never as passed.
function(forkd_test)
  cmake_parse_arguments(T "" "NAME;LABEL" "SOURCES;LIBS" ${ARGN})
  add_executable(${T_NAME} ${T_SOURCES})
  target_link_libraries(${T_NAME} PRIVATE ${T_LIBS} forkd_test_main GTest::gtest GTest::gmock)
  add_test(NAME ${T_NAME} COMMAND ${T_NAME})
  set_tests_properties(${T_NAME} PROPERTIES LABELS ${T_LABEL} SKIP_RETURN_CODE 77)
  # The emulated-SVM tier (tests/svm) re-runs the kvm and linux tests inside its L1 guest.
  set_property(GLOBAL APPEND PROPERTY FORKD_TESTS_${T_LABEL} ${T_NAME})
  if(NOT T_LABEL STREQUAL "unit")
    # Privileged tiers touch shared kernel state (netns, KVM): never run two at once.
    set_tests_properties(${T_NAME} PROPERTIES RESOURCE_LOCK kernel)
  endif()
endfunction()
