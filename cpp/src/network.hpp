// The network: forward and backward through every layer, in parallel, in one of three schedules chosen
// from the shapes alone (plan.hpp): the narrow engine (narrow.hpp) and the chunked schedule
// (chunked.hpp), which carry chunks of rows through the whole network, or the layered schedule
// (layered.hpp), which cuts each layer's products into tiles. All are deterministic: chunks, groups and
// the order of every sum depend on the shapes only, so results are the same bits for any thread count.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "call.hpp"
#include "chunked.hpp"
#include "engines.hpp"
#include "layered.hpp"
#include "mlpgrad/layout.hpp"
#include "mlpgrad/mlp.hpp"
#include "parallel.hpp"
#include "plan.hpp"
#include "workspace.hpp"

namespace mlpgrad::MLPGRAD_ISA {

// An empty batch: loss 0 and gradients 0 (empty sums).
template <typename T> double empty_batch(const Network<T>& net, const Gradients<T>* grads) {
  if (grads)
    for (int64_t l = 0; l < net.n_layers(); ++l) {
      std::fill(grads->dW[l], grads->dW[l] + net.sizes[l] * net.sizes[l + 1], T(0));
      std::fill(grads->db[l], grads->db[l] + net.sizes[l + 1], T(0));
    }
  return 0.0;
}

// One call: probabilities (mode probs), the loss, or the loss and every gradient.
template <typename T>
double run(const Network<T>& net, Head head, const Batch<T>& batch, Reduction reduction, const Gradients<T>* grads,
           T* probs, Mode mode, int n_threads, const Interrupt* interrupt, const ParamHook* hook) {
  if (batch.n == 0) {
    empty_batch<T>(net, grads);
    const int64_t P = Layout(net.sizes).n_params;
    for (int64_t b = 0; hook && b < ParamHook::blocks(P); ++b) hook->run_block(P, b);
    return 0.0;
  }
  PlanExtras extras;
  extras.sparse_input = batch.sparse();  // then always the chunked schedule
  const Plan<T> plan(net.sizes, batch.n, mode, grads && grads->dX, batch.sparse() ? Schedule::chunked : schedule(),
                     extras);
  const int nt = thread_count(n_threads, plan.max_tasks(mode));
  WorkspaceLease<T> lease;
  T* ws = lease.get(plan.workspace_size(nt));
  // "mean": 1 / total weight (the entry points checked it is positive)
  const double scale = mode != Mode::probs && reduction == Reduction::mean ? 1.0 / batch.total_weight : 1.0;
  std::vector<double> block_loss(plan.layered ? (batch.n + 255) / 256 : plan.n_chunks, 0.0);
  StopFlag stop(interrupt);
  const Call<T> call{net, head, batch, scale, mode, grads, probs, plan, ws, stop, block_loss, hook};
  if (plan.layered)
    run_layered<T>(call, nt);
  else
    run_chunked<T>(call, nt);
  if (stop.raised()) throw Interrupted();
  return pairwise_sum(block_loss.data(), int64_t(block_loss.size()));
}

}  // namespace mlpgrad::MLPGRAD_ISA
