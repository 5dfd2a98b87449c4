// CPtr<Free>: a unique_ptr for C library objects that are released by a free
// function (libnftnl, libnl), so every such object has exactly one owner.
#pragma once

#include <memory>

namespace forkd {

template <auto Free>
struct CFree {
  template <typename T>
  void operator()(T* p) const {
    Free(p);
  }
};

template <typename T, auto Free>
using CPtr = std::unique_ptr<T, CFree<Free>>;

}  // namespace forkd
