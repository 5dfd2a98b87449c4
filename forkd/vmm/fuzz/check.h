// A broken promise found by a harness: print what and abort, so libFuzzer
// records the input and the corpus replay test fails.
#pragma once

#include <cstdio>
#include <cstdlib>

#define FORKD_FUZZ_CHECK(cond, what)                                                        \
  do {                                                                                      \
    if (!(cond)) {                                                                          \
      std::fprintf(stderr, "%s:%d: fuzz check failed: %s (%s)\n", __FILE__, __LINE__, what, \
                   #cond);                                                                  \
      std::abort();                                                                         \
    }                                                                                       \
  } while (0)
