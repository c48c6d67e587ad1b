// Scratch memory for one call: one aligned allocation per calling thread, reused by its next calls.
#pragma once

#include <cstdint>
#include <new>

#ifndef MLPGRAD_ISA
#error "define MLPGRAD_ISA (the per-ISA namespace) before including the kernels"
#endif

namespace mlpgrad::MLPGRAD_ISA {

// One 64-byte aligned allocation, grown when a call needs more and reused by the next call: a repeated
// call with the same shapes allocates nothing. Contents are not initialized.
template <typename T> class Workspace {
 public:
  T* get(int64_t n) {
    if (n > size_) {
      release();
      p_ = static_cast<T*>(::operator new[](sizeof(T) * n, std::align_val_t(64)));
      size_ = n;
    }
    return p_;
  }
  ~Workspace() { release(); }

 private:
  void release() {
    if (p_) ::operator delete[](p_, std::align_val_t(64));
    p_ = nullptr;
    size_ = 0;
  }
  T* p_ = nullptr;
  int64_t size_ = 0;
};

template <typename T> Workspace<T>& thread_workspace() {
  static thread_local Workspace<T> ws;
  return ws;
}

// The calling thread's workspace, or a private one for a nested call: the interrupt poll runs Python
// signal handlers on this thread in the middle of a call, and a handler may call mlpgrad again.
template <typename T> class WorkspaceLease {
 public:
  WorkspaceLease() : outer_(!busy()) { busy() = true; }
  ~WorkspaceLease() { if (outer_) busy() = false; }
  WorkspaceLease(const WorkspaceLease&) = delete;
  WorkspaceLease& operator=(const WorkspaceLease&) = delete;
  T* get(int64_t n) { return outer_ ? thread_workspace<T>().get(n) : own_.get(n); }

 private:
  static bool& busy() {
    static thread_local bool b = false;
    return b;
  }
  bool outer_;
  Workspace<T> own_;
};

}  // namespace mlpgrad::MLPGRAD_ISA
