// mlpgrad core API: losses and gradients of sigmoid MLPs for whole batches.
// Plain C++17, nothing of Python. Row-major arrays, row-vector convention:
//   h_0 = X (n, d_0);  z_l = h_{l-1} W_l + b_l (n, d_l);  h_l = sigmoid(z_l) for l < L;  logits z_L (n, k).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <vector>

namespace mlpgrad {

enum class Head { sigmoid = 0, softmax = 1, identity = 2 };
enum class Reduction { sum = 0, mean = 1 };
enum class Isa { generic = 0, avx2 = 1, avx512 = 2 };

template <typename T>
struct Network {
  std::vector<int64_t> sizes;  // d_0 .. d_L
  std::vector<const T*> W;     // W[l]: (sizes[l], sizes[l+1]) row-major, l = 0 .. L-1
  std::vector<const T*> b;     // b[l]: (sizes[l+1],)
  int64_t n_layers() const { return static_cast<int64_t>(W.size()); }
  int64_t n_inputs() const { return sizes.front(); }
  int64_t n_outputs() const { return sizes.back(); }
};

// X as compressed sparse rows (CSR), (n, d_0): row i's values are values[indptr[i] .. indptr[i + 1]), in the
// columns indices[...] of the same range, strictly increasing within a row (canonical: sorted, no duplicates).
// The engine also runs a row range of such a matrix (indptr advanced, indptr[0] > 0) in a scanned batch.
template <typename T>
struct SparseRows {
  const int64_t* indptr = nullptr;   // (n + 1,): indptr[0] = 0, non-decreasing
  const int64_t* indices = nullptr;  // (nnz,) in [0, d_0)
  const T* values = nullptr;         // (nnz,)
};

template <typename T>
struct Batch {
  int64_t n = 0;
  const T* X = nullptr;              // (n, d_0) dense, or null when Xs holds X
  SparseRows<T> Xs;                  // X as CSR when Xs.indptr is set (then X is null)
  bool sparse() const { return Xs.indptr != nullptr; }
  const int64_t* labels = nullptr;   // (n,) in [0, k): softmax head, integer labels
  const T* targets = nullptr;        // (n, k): sigmoid targets in [0, 1], or softmax target rows >= 0
  const T* sample_weight = nullptr;  // (n,) >= 0, or null for all ones
  // sum_i w_i (n without sample weights) once scan() has passed the values; the engine then trusts the
  // labels' range and reuses this sum. Negative: not scanned yet (the entry points scan).
  double total_weight = -1;
};

// The first value rule a batch breaks, if any (the Python API turns each into its message).
enum class Fault { none = 0, label_range = 1, target_range = 2, sample_weight = 3 };
struct Scan {
  Fault fault = Fault::none;
  double total_weight = 0;               // sum_i w_i in row order (n without sample weights)
  int64_t label_min = 0, label_max = 0;  // the labels' range, when there are labels and n > 0
};

// One pass over each of labels, targets and sample weights: labels in [0, k); sigmoid targets in [0, 1];
// softmax targets finite and >= 0; weights finite and >= 0.
template <typename T>
Scan scan(const Batch<T>& batch, Head head, int64_t k);

// Whether a CSR X of n rows and d0 columns is well formed (SparseRows' rules), in one pass over its indices.
template <typename T>
bool sparse_rows_valid(const SparseRows<T>& X, int64_t n, int64_t d0);

template <typename T>
struct Gradients {
  std::vector<T*> dW;  // shaped like W; overwritten
  std::vector<T*> db;  // shaped like b; overwritten
  T* dX = nullptr;     // (n, d_0), or null when dL/dX is not wanted
};

// An optional interrupt check: the calling thread calls poll(ctx) between chunks of work, at most
// every kInterruptPollMs; when it returns true the call abandons its remaining work (the outputs are
// then unspecified) and throws Interrupted.
struct Interrupt {
  bool (*poll)(void* ctx) = nullptr;
  void* ctx = nullptr;
};
struct Interrupted : std::runtime_error {
  Interrupted() : std::runtime_error("interrupted") {}
};

// probs (n, k) = sigmoid(z_L) or softmax(z_L).
template <typename T>
void forward(const Network<T>& net, Head head, int64_t n, const T* X, T* probs, int n_threads,
             const Interrupt* interrupt = nullptr);
// The same for the inputs of `inputs` (its n, X or Xs, and total_weight >= 0 when a sparse X was checked).
template <typename T>
void forward(const Network<T>& net, Head head, const Batch<T>& inputs, T* probs, int n_threads,
             const Interrupt* interrupt = nullptr);

// L = sum_i c_i l_i with c_i = w_i ("sum") or w_i / sum_j w_j ("mean"); l_i from the logits.
template <typename T>
double loss(const Network<T>& net, Head head, const Batch<T>& batch, Reduction reduction, int n_threads,
            const Interrupt* interrupt = nullptr);

// The loss and every gradient in one pass over the batch. Results do not depend on n_threads. For a sparse X
// the first layer's products run on its rows (docs/engine.md, sparse inputs); dX is dense all the same.
template <typename T>
double loss_and_grad(const Network<T>& net, Head head, const Batch<T>& batch, Reduction reduction,
                     const Gradients<T>& grads, int n_threads, const Interrupt* interrupt = nullptr);

// Throws std::invalid_argument when sizes, pointers, values (a batch not yet scanned) or the reduction's
// total weight are unusable; returns the batch's total weight. The entry points call it; the Python API
// checks first, with its messages.
template <typename T>
double check(const Network<T>& net, Head head, const Batch<T>* batch, Reduction reduction, bool need_targets);

// Instruction-set level: the best this CPU and build support, and the one in use (may be forced lower).
Isa best_isa();
Isa active_isa();
void set_active_isa(Isa isa);  // clamped to best_isa()
const char* isa_name(Isa isa);

// Which schedule the engine runs (docs/engine.md §1). automatic: chosen from the shapes alone (the
// narrow engine when every width allows it, else chunked or layered); chunked and layered force one of
// the two (never the narrow engine), for experiments and tests. Initialised once, at load, from the
// environment variable MLPGRAD_SCHEDULE (chunked, layered; any other value or none: automatic).
enum class Schedule { automatic = 0, chunked = 1, layered = 2 };
void set_schedule(Schedule s);
Schedule schedule();

bool openmp_enabled();
int default_threads();  // omp_get_max_threads(), or 1 without OpenMP
const char* compiler();

}  // namespace mlpgrad
